"""benchmarks/reference_extents.py: where the reference RV and LV start from the base, whichever end it is."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
extents = pytest.importorskip("reference_extents")

from autocmr.dataset.labels import LV, MYO, RV  # noqa: E402


def _stack() -> np.ndarray:
    """6 slices, base first: LV (myocardium only) from slice 1, RV from slice 3, nothing on slices 0 and 5."""
    seg = np.zeros((6, 8, 8), dtype=np.uint8)
    seg[1, 2:4, 2:4] = MYO
    seg[2:5, 2:4, 2:4] = LV
    seg[3:5, 5:7, 5:7] = RV
    return seg


def test_first_slices_count_from_the_base_at_either_end_of_the_stack():
    seg = _stack()
    assert extents.first_slices(seg, base_first=True) == {"RV": 3, "LV": 1}
    assert extents.first_slices(seg[::-1], base_first=False) == {"RV": 3, "LV": 1}
    assert extents.first_slices(np.zeros_like(seg), base_first=True) == {"RV": -1, "LV": -1}


def test_counts_of_slice_differences_per_patient():
    rows = [{"a": 3, "b": 2}, {"a": 2, "b": 2}, {"a": 4, "b": 3}]
    assert extents.counts(rows, "a", "b") == {"0": 1, "1": 2}


def test_the_basal_es_rv_rule_drops_only_a_slice_shared_with_ed():
    ed = _stack()
    es = ed.copy()
    out, applies = extents.drop_basal_es_rv(ed, es)
    assert applies and not (out[3] == RV).any() and (out[4] == RV).any() and (es[3] == RV).any()  # copy
    es[3][es[3] == RV] = 0  # the ES RV already starts a slice lower: nothing to do
    out, applies = extents.drop_basal_es_rv(ed, es)
    assert not applies and np.array_equal(out, es)
    assert extents.first_rv_slice(np.zeros_like(ed)) == -1
