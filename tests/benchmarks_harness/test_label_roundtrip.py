"""benchmarks/label_roundtrip.py: the resampling round trip of a label map (preprocessing grid and back)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
label_roundtrip = pytest.importorskip("label_roundtrip")

from autocmr.testing.phantoms import make_phantom_case  # noqa: E402


def test_a_label_map_already_on_the_grid_comes_back_unchanged():
    case = make_phantom_case(np.random.default_rng(0))
    seg = case.label.astype(np.uint8)
    spacing = case.geometry.spacing_zyx
    np.testing.assert_array_equal(label_roundtrip.round_trip(seg, spacing, spacing[1]), seg)


def test_a_finer_label_map_keeps_its_volumes_and_classes_after_the_round_trip():
    case = make_phantom_case(np.random.default_rng(1))
    seg = case.label.astype(np.uint8)
    spacing = case.geometry.spacing_zyx
    back = label_roundtrip.round_trip(seg, spacing, spacing[1] * 1.6)  # a coarser plans grid
    assert back.shape == seg.shape and set(np.unique(back)) <= set(np.unique(seg))
    for c in (1, 2, 3):
        assert abs(int((back == c).sum()) - int((seg == c).sum())) <= 0.05 * (seg == c).sum()
    assert not np.array_equal(back, seg)  # the round trip did change the map (the check is not vacuous)
