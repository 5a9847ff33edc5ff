"""Agreement and summary statistics on synthetic values with known answers."""
from __future__ import annotations

import numpy as np
import pytest

from autocmr.evaluation.agreement import LOA_Z, agreement_stats, describe, paired_comparison


def test_constant_bias_gives_that_bias_and_zero_width_limits():
    ref = np.array([100.0, 120.0, 80.0, 150.0, 95.0])
    a = agreement_stats(ref, ref + 7.5)
    assert a["bias"] == pytest.approx(7.5) and a["mean_abs_diff"] == pytest.approx(7.5)
    assert a["sd_diff"] == pytest.approx(0.0, abs=1e-12)
    assert a["loa_lower"] == pytest.approx(7.5) and a["loa_upper"] == pytest.approx(7.5)
    assert a["spearman_r"] == pytest.approx(1.0) and a["n"] == 5


def test_known_differences_and_excluded_pairs():
    ref = np.array([10.0, 20.0, 30.0, 32.0, np.nan])
    pred = np.array([12.0, 18.0, 34.0, 28.0, 50.0])  # differences +2 -2 +4 -4
    a = agreement_stats(ref, pred)
    assert (a["n"], a["n_excluded"]) == (4, 1)
    assert a["bias"] == pytest.approx(0.0) and a["mean_abs_diff"] == pytest.approx(3.0)
    sd = np.std([2, -2, 4, -4], ddof=1)
    assert a["sd_diff"] == pytest.approx(sd) and a["loa_upper"] == pytest.approx(LOA_Z * sd)
    assert a["spearman_r"] == pytest.approx(0.8)  # ranks 1 2 3 4 vs 1 2 4 3


def test_reversed_order_gives_negative_spearman_and_constant_side_gives_none():
    assert agreement_stats([1, 2, 3, 4], [8, 6, 4, 2])["spearman_r"] == pytest.approx(-1.0)
    assert agreement_stats([1, 2, 3], [5, 5, 5])["spearman_r"] is None
    empty = agreement_stats([np.nan], [1.0])
    assert empty["n"] == 0 and empty["bias"] is None


def test_describe_counts_undefined_values_instead_of_averaging_them():
    d = describe([1.0, np.nan, 3.0, np.nan])
    assert (d["mean"], d["median"], d["n"], d["n_defined"], d["n_undefined"]) == (2.0, 2.0, 4, 2, 2)
    assert d["sd"] == pytest.approx(np.sqrt(2.0))
    none = describe([np.nan])
    assert none["mean"] is None and none["n_undefined"] == 1
    assert describe([5.0])["sd"] is None


def test_paired_comparison_detects_a_consistent_difference():
    rng = np.random.default_rng(0)
    a = rng.uniform(0.8, 0.9, 20)
    b = a - rng.uniform(0.01, 0.03, 20)  # B always worse
    c = paired_comparison(a, b)
    assert c["mean_diff"] < 0 and c["wilcoxon_p"] < 0.001 and c["n"] == 20
    same = paired_comparison(a, a)
    assert same["wilcoxon_p"] == 1.0 and same["mean_diff"] == 0.0
