"""Stored preprocessed cases: a case is listed only when all its files were written together."""
from __future__ import annotations

import numpy as np
import pytest

from autocmr.preprocessing import storage


def _save(folder, value: float, seg: np.ndarray | None) -> None:
    storage.save_case(folder, "c1", np.full((1, 2, 4, 4), value, np.float32), seg,
                      {1: np.zeros((1, 3), np.int32)}, {"signature": f"s{value}"})


def test_a_replacement_killed_midway_leaves_no_listed_mixture(tmp_path, monkeypatch):
    _save(tmp_path, 1.0, np.ones((2, 4, 4), np.int8))
    assert storage.list_cases(tmp_path) == ["c1"]
    real = storage._write_array

    def killed_after_the_image(path, array):
        real(path, array)
        if not path.name.endswith(f"{storage.SEG_SUFFIX}.b2nd"):
            raise KeyboardInterrupt  # the process died between the image and the label

    monkeypatch.setattr(storage, "_write_array", killed_after_the_image)
    with pytest.raises(KeyboardInterrupt):
        _save(tmp_path, 2.0, np.zeros((2, 4, 4), np.int8))
    # new image beside the old label: training must not see it, preprocessing must redo it
    assert storage.list_cases(tmp_path) == []
    assert not storage.is_current(tmp_path, "c1", "s1.0")
    monkeypatch.setattr(storage, "_write_array", real)
    _save(tmp_path, 2.0, np.zeros((2, 4, 4), np.int8))
    data, seg = storage.load_arrays(tmp_path, "c1")
    assert storage.list_cases(tmp_path) == ["c1"] and data.max() == 2.0 and seg.max() == 0


def test_an_unlabelled_replacement_removes_the_earlier_label(tmp_path):
    _save(tmp_path, 1.0, np.ones((2, 4, 4), np.int8))
    _save(tmp_path, 2.0, None)
    assert storage.load_arrays(tmp_path, "c1")[1] is None
