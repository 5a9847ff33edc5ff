"""benchmarks/measure_uncertainty.py: soft uncertain volumes and their propagation to the clinical measures."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
study = pytest.importorskip("measure_uncertainty")

from autocmr.dataset.labels import LV, MYO, RV  # noqa: E402


def test_confident_voxels_add_nothing_and_a_coin_flip_adds_half_a_voxel():
    p = np.zeros((4, 2, 3, 3), dtype=np.float16)
    p[0] = 1.0
    assert study.soft_uncertain_ml(p, 0.5) == {LV: 0.0, MYO: 0.0, RV: 0.0}
    p[0, 0, 0, :] = 0.5
    p[RV, 0, 0, :] = 0.5  # three voxels torn between background and RV
    assert study.soft_uncertain_ml(p, 0.5) == {LV: 0.0, MYO: 0.0, RV: pytest.approx(3 * 0.5 * 0.5)}


def test_measure_uncertainties_propagate_to_mass_and_ejection_fractions():
    soft = {"ED": {LV: 0.0, MYO: 10.0, RV: 4.0}, "ES": {LV: 5.0, MYO: 9.0, RV: 3.0}}
    measures = {"LVEDV": 100.0, "LVESV": 50.0, "RVEDV": 80.0, "RVESV": 40.0}
    u = study.measure_uncertainties(soft, measures)
    assert (u["LVEDV"], u["LVESV"], u["RVEDV"], u["RVESV"]) == (0.0, 5.0, 4.0, 3.0)
    assert u["LVM"] == pytest.approx(10.5)  # myocardium at ED x 1.05 g/mL
    assert u["LVEF"] == pytest.approx(5.0)  # only ESV uncertain: 100 x 5 / 100 points
    assert u["RVEF"] == pytest.approx(100 * np.hypot(40 / 80 ** 2 * 4, 3 / 80))
    assert np.isnan(study.measure_uncertainties(soft, {**measures, "RVEDV": 0.0})["RVEF"])


def test_auc_of_a_score_that_ranks_the_positives_first():
    import pandas as pd

    score = pd.Series([0.9, 0.8, 0.1, 0.2, float("nan")])
    positive = pd.Series([True, True, False, False, True])
    assert study._auc(score, positive) == 1.0  # the NaN score is left out, not counted
    assert study._auc(score, ~positive) == 0.0
    assert study._auc(score, pd.Series([True] * 5)) is None
