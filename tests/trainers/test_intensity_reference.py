"""The intensity reference (``--harmonise``) describes the whole training set, not its first cases in id order."""
from __future__ import annotations

import json

import numpy as np

from autocmr.trainers import run


def test_reference_is_built_from_cases_spread_over_the_whole_training_set(tmp_path, monkeypatch):
    # ACDC numbers its patients by pathology: the first 50 of 100 ids are two or three of its five groups
    cases = [f"patient{i:03d}" for i in range(1, 101)]
    loaded: list[str] = []

    def load_arrays(data_dir, case_id):
        loaded.append(case_id)
        return np.full((1, 2, 4, 4), float(int(case_id[-3:])), np.float32), None

    monkeypatch.setattr(run.storage, "load_arrays", load_arrays)
    run._write_intensity_reference(tmp_path, tmp_path, cases)
    assert len(loaded) == 50 == len(set(loaded))
    groups = {(int(c[-3:]) - 1) // 20 for c in loaded}
    assert groups == {0, 1, 2, 3, 4}  # every group of 20 patients contributes
    assert sum(int(c[-3:]) > 50 for c in loaded) == 25  # as many from the second half as from the first
    assert run.reference_cases(list(reversed(cases))) == loaded  # the same cases whatever order they come in
    assert json.loads((tmp_path / "intensity_reference.json").read_text())["quantiles"]


def test_reference_uses_every_case_of_a_small_training_set():
    assert run.reference_cases(["b", "a", "c"]) == ["a", "b", "c"]
