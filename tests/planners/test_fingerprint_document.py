"""The fingerprint document: versioned, and a corrupt or malformed file is recomputed (with a warning) by
planning instead of crashing it."""
from __future__ import annotations

import json
import logging

import pytest

from autocmr.errors import DocumentError, PlansError
from autocmr.planners.fingerprint import FINGERPRINT_SCHEMA_VERSION, Fingerprint
from autocmr.planners.plan_dataset import plan_dataset
from autocmr.settings import resolve_roots
from autocmr.testing.phantoms import write_phantom_dataset

DATASET = 971
NAME = "Dataset971_Phantom"


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    base = tmp_path_factory.mktemp("fingerprint")
    roots = resolve_roots(raw=base / "raw", preprocessed=base / "pre", results=base / "res")
    write_phantom_dataset(roots.raw, n_subjects=2, dataset_id=DATASET, fov_mm=100)
    plan_dataset(DATASET, roots, targets=("cpu",), num_workers=1, check=False, preprocess=False)
    return roots, roots.preprocessed / NAME / "fingerprint.json"


def test_saved_fingerprint_round_trips_and_carries_its_version(planned) -> None:
    _, path = planned
    stored = json.loads(path.read_text(encoding="utf-8"))
    assert stored["schema_version"] == FINGERPRINT_SCHEMA_VERSION
    fingerprint = Fingerprint.load(path)
    assert fingerprint.dataset_name == NAME and len(fingerprint.cases) == 4  # 2 subjects x ED/ES
    copy = path.with_name("copy.json")
    fingerprint.save(copy)
    assert Fingerprint.load(copy) == fingerprint


@pytest.mark.parametrize("version,hint", [(FINGERPRINT_SCHEMA_VERSION + 1, "upgrade autocmr"),
                                          (0, "re-run `autocmr_plan`"), ("one", "re-run `autocmr_plan`")])
def test_other_versions_fail_naming_the_file_and_what_to_do(planned, tmp_path, version, hint) -> None:
    _, path = planned
    data = json.loads(path.read_text(encoding="utf-8"))
    data["schema_version"] = version
    other = tmp_path / "fingerprint.json"
    other.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(DocumentError, match="schema version") as info:
        Fingerprint.load(other)
    assert str(other) in str(info.value) and hint in str(info.value)


@pytest.mark.parametrize("content", ['{"schema_version": 1, "cases"', "[1, 2]", '{"schema_version": 1}',
                                     '{"schema_version": 1, "dataset_name": "x", "labels": {}, "channel_names": {},'
                                     ' "cases": [{"case_id": "a"}], "intensity": [], "source_signature": "s"}'])
def test_corrupt_or_malformed_files_raise_a_plans_error_not_a_key_error(tmp_path, content) -> None:
    path = tmp_path / "fingerprint.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(PlansError, match=str(path).replace("\\", "\\\\")):
        Fingerprint.load(path)


def test_planning_recomputes_a_corrupt_fingerprint_with_a_warning(planned, caplog) -> None:
    roots, path = planned
    expected = Fingerprint.load(path)
    path.write_text('{"schema_version": 1, "dataset_na', encoding="utf-8")  # a run killed mid-write (pre-atomic)
    with caplog.at_level(logging.WARNING, logger="autocmr.planners.plan_dataset"):
        plan_dataset(DATASET, roots, targets=("cpu",), num_workers=1, check=False, preprocess=False)
    assert any("recomputing fingerprint" in r.getMessage() and "not valid JSON" in r.getMessage()
               for r in caplog.records)
    assert Fingerprint.load(path) == expected  # same data, same seed: the same fingerprint again


@pytest.mark.parametrize("scale", [1e20, 1e-30])
def test_intensity_statistics_hold_at_extreme_scales(scale):
    """Computed in float64: float32 squares overflow (std inf) at 1e20 and vanish (std 0) at 1e-30."""
    import numpy as np

    from autocmr.planners.fingerprint import intensity_stats

    values = (np.random.default_rng(0).normal(100.0, 10.0, 10_000) * scale).astype(np.float32)
    stats = intensity_stats(values)
    assert stats.std / scale == pytest.approx(10.0, rel=0.05) and stats.mean / scale == pytest.approx(100.0, rel=0.01)
