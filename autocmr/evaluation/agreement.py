"""Summary statistics: per-metric descriptions, Bland-Altman agreement, paired comparison of two methods.

Undefined values (NaN, e.g. a surface distance when one mask is empty) are never averaged silently: they are
left out of means and counted in ``n_undefined``. A statistic that cannot be computed (no defined value, or a
standard deviation from one value) is ``None``, which ``summary.json`` writes as ``null``.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from scipy import stats

# 95 % limits of agreement = bias +- 1.96 SD of the differences (Bland & Altman, Lancet 1986).
LOA_Z = 1.96


def _finite_or_none(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def describe(values: Sequence[float] | np.ndarray) -> dict[str, Any]:
    """Mean, SD (sample, ddof=1), median, min, max over the defined values; NaNs counted, not used.

    Returns ``{"mean", "sd", "median", "min", "max", "n", "n_defined", "n_undefined"}``; statistics are
    ``None`` when they cannot be computed.
    """
    arr = np.asarray(values, dtype=float).ravel()
    defined = arr[np.isfinite(arr)]
    out: dict[str, Any] = {"mean": None, "sd": None, "median": None, "min": None, "max": None,
                           "n": int(arr.size), "n_defined": int(defined.size),
                           "n_undefined": int(arr.size - defined.size)}
    if defined.size:
        out.update(mean=float(defined.mean()), median=float(np.median(defined)),
                   min=float(defined.min()), max=float(defined.max()))
    if defined.size >= 2:
        out["sd"] = float(defined.std(ddof=1))
    return out


def agreement_stats(reference: Sequence[float] | np.ndarray, predicted: Sequence[float] | np.ndarray) -> dict[str, Any]:
    """Agreement of ``predicted`` with ``reference`` (paired values of one measure).

    Differences are predicted - reference. Pairs with an undefined value on either side are dropped and
    counted (``n_excluded``).

    Returns ``{"n", "n_excluded", "bias", "sd_diff", "loa_lower", "loa_upper", "mean_abs_diff",
    "spearman_r", "spearman_p", "reference_mean", "predicted_mean"}``.
    """
    ref = np.asarray(reference, dtype=float).ravel()
    pred = np.asarray(predicted, dtype=float).ravel()
    if ref.shape != pred.shape:
        raise ValueError(f"agreement needs paired values: {ref.size} reference vs {pred.size} predicted")
    keep = np.isfinite(ref) & np.isfinite(pred)
    ref, pred = ref[keep], pred[keep]
    out: dict[str, Any] = {"n": int(ref.size), "n_excluded": int((~keep).sum()), "bias": None, "sd_diff": None,
                           "loa_lower": None, "loa_upper": None, "mean_abs_diff": None, "spearman_r": None,
                           "spearman_p": None, "reference_mean": None, "predicted_mean": None}
    if ref.size == 0:
        return out
    diff = pred - ref
    bias = float(diff.mean())
    out.update(bias=bias, mean_abs_diff=float(np.abs(diff).mean()), reference_mean=float(ref.mean()),
               predicted_mean=float(pred.mean()))
    if ref.size >= 2:
        sd = float(diff.std(ddof=1))
        out.update(sd_diff=sd, loa_lower=bias - LOA_Z * sd, loa_upper=bias + LOA_Z * sd)
    # Spearman is undefined for fewer than 3 pairs or a constant side; say so with None, no warning spam.
    if ref.size >= 3 and np.ptp(ref) > 0 and np.ptp(pred) > 0:
        result = stats.spearmanr(ref, pred)
        out.update(spearman_r=_finite_or_none(result.statistic), spearman_p=_finite_or_none(result.pvalue))
    return out


def paired_comparison(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> dict[str, Any]:
    """Compare paired per-case values of method A and B: means, mean difference (B - A), Wilcoxon p-value.

    Pairs with an undefined value on either side are dropped and counted. The two-sided Wilcoxon
    signed-rank test (scipy) needs at least one non-zero difference; if all differences are zero the
    methods are identical on these cases and ``wilcoxon_p`` is 1.0.
    """
    va = np.asarray(a, dtype=float).ravel()
    vb = np.asarray(b, dtype=float).ravel()
    if va.shape != vb.shape:
        raise ValueError(f"paired comparison needs paired values: {va.size} vs {vb.size}")
    keep = np.isfinite(va) & np.isfinite(vb)
    va, vb = va[keep], vb[keep]
    out: dict[str, Any] = {"n": int(va.size), "n_excluded": int((~keep).sum()), "mean_a": None, "mean_b": None,
                           "mean_diff": None, "sd_diff": None, "wilcoxon_p": None}
    if va.size == 0:
        return out
    diff = vb - va
    out.update(mean_a=float(va.mean()), mean_b=float(vb.mean()), mean_diff=float(diff.mean()))
    if va.size >= 2:
        out["sd_diff"] = float(diff.std(ddof=1))
    if not np.any(diff != 0):
        out["wilcoxon_p"] = 1.0
    else:
        out["wilcoxon_p"] = _finite_or_none(stats.wilcoxon(va, vb).pvalue)
    return out


__all__ = ["LOA_Z", "agreement_stats", "describe", "paired_comparison"]
