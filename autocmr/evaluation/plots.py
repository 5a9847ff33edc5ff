"""PNG figures of an evaluation: metric boxes, breakdowns, Bland-Altman and scatter plots, comparisons.

Figures are built with matplotlib's object API on the Agg canvas (no pyplot, so no global backend change in
the caller's session) and written atomically.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from autocmr.evaluation.agreement import LOA_Z, agreement_stats
from autocmr.evaluation.clinical import MEASURE_UNITS, MEASURES
from autocmr.evaluation.metrics import DICE, HD95
from autocmr.io.atomic import atomic_path

logger = logging.getLogger(__name__)

DPI = 110
PANEL_SIZE = (3.6, 3.0)  # inches per subplot
BOX_METRICS = ((DICE, "Dice"), (HD95, "HD95 (mm)"))


def _figure(n_rows: int, n_cols: int):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    width, height = PANEL_SIZE[0] * n_cols, PANEL_SIZE[1] * n_rows
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    # Fixed margins (in inches) instead of constrained layout: the layout solver tripled the drawing time.
    fig.subplots_adjust(left=0.7 / width, right=1 - 0.15 / width, bottom=0.6 / height, top=1 - 0.35 / height,
                        wspace=0.4, hspace=0.55)
    axes = np.atleast_2d(fig.subplots(n_rows, n_cols, squeeze=False))
    return fig, axes


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    logger.debug("wrote %s", path)
    return path


def _grid(n: int) -> tuple[int, int]:
    cols = min(n, 3)
    return math.ceil(n / cols), cols


def _finite(values: pd.Series) -> np.ndarray:
    arr = values.to_numpy(dtype=float)
    return arr[np.isfinite(arr)]


def _boxes(ax, data: list[np.ndarray], names: Sequence[str]) -> None:
    # Empty groups get a NaN placeholder so positions stay aligned with their names; ticks are set
    # separately because the boxplot label keyword changed name in matplotlib 3.9.
    ax.boxplot([d if d.size else [np.nan] for d in data])
    ax.set_xticks(range(1, len(names) + 1), [str(n) for n in names])


def plot_metric_boxes(cases: pd.DataFrame, classes: Sequence[str], path: Path) -> Path:
    """Box plots of Dice and HD95 per class over all cases."""
    fig, axes = _figure(1, len(BOX_METRICS))
    for ax, (metric, title) in zip(axes[0], BOX_METRICS):
        data = [_finite(cases.loc[cases["class"] == c, metric]) for c in classes]
        _boxes(ax, data, classes)
        ax.set_title(title)
    return _save(fig, path)


def plot_breakdown(cases: pd.DataFrame, groups: pd.Series, column: str, classes: Sequence[str], path: Path) -> Path:
    """Box plots of Dice (top row) and HD95 (bottom row) per value of ``column``, one panel per class."""
    values = sorted(groups.unique())
    fig, axes = _figure(len(BOX_METRICS), len(classes))
    for row, (metric, title) in enumerate(BOX_METRICS):
        for col, name in enumerate(classes):
            ax = axes[row, col]
            data = [_finite(cases.loc[(cases["class"] == name) & (groups == v), metric]) for v in values]
            _boxes(ax, data, values)
            ax.set_title(f"{name}: {title} by {column}", fontsize=9)
            ax.tick_params(axis="x", labelrotation=45, labelsize=8)
    return _save(fig, path)


# (summary column, axis title) of the slice-position figure's rows.
POSITION_PANELS = (("vol_error_ml_mean", "volume error pred - ref (mL)"), ("dice_mean", "Dice"))


def plot_slice_positions(summary: pd.DataFrame, classes: Sequence[str], positions: Sequence[str],
                         path: Path) -> Path | None:
    """Mean volume error (top row, bars with +-1 SD) and mean Dice (bottom row) by slice position, one panel
    per class, one bar colour per phase (ED, ES). ``summary`` is the ``by == "all"`` part of
    :func:`autocmr.evaluation.position_report.position_summary`."""
    rows = summary[summary["by"] == "all"]
    classes = [c for c in classes if c in set(rows["class"])]
    if not classes:
        return None
    phases = sorted(rows["phase"].unique())
    fig, axes = _figure(len(POSITION_PANELS), len(classes))
    x = np.arange(len(positions))
    width = 0.8 / len(phases)
    for row, (column, title) in enumerate(POSITION_PANELS):
        for col, name in enumerate(classes):
            ax = axes[row, col]
            for k, phase in enumerate(phases):
                part = rows[(rows["class"] == name) & (rows["phase"] == phase)].set_index("position")
                values = [float(part[column].get(p, np.nan)) if p in part.index else np.nan for p in positions]
                errors = None
                if column == "vol_error_ml_mean":
                    errors = [float(part["vol_error_ml_sd"].get(p, np.nan)) if p in part.index else np.nan
                              for p in positions]
                ax.bar(x + (k - (len(phases) - 1) / 2) * width, values, width, yerr=errors, capsize=2, label=phase)
            if column == "vol_error_ml_mean":
                ax.axhline(0.0, color="k", lw=0.8)
            ax.set_xticks(x, [p.replace("_", " ") for p in positions])
            ax.tick_params(axis="x", labelrotation=45, labelsize=7)
            ax.set_title(f"{name}: {title}", fontsize=9)
            if row == 0 and col == 0:
                ax.legend(fontsize=7)
    return _save(fig, path)

def _plottable_measures(clinical: pd.DataFrame) -> list[str]:
    return [m for m in MEASURES
            if (np.isfinite(clinical[f"ref_{m}"].to_numpy(float))
                & np.isfinite(clinical[f"pred_{m}"].to_numpy(float))).any()]


def plot_bland_altman(clinical: pd.DataFrame, path: Path) -> Path | None:
    """Bland-Altman grid: difference (pred - ref) against the mean, with bias and 95 % limits of agreement."""
    measures = _plottable_measures(clinical)
    if not measures:
        return None
    fig, axes = _figure(*_grid(len(measures)))
    for ax, m in zip(axes.ravel(), measures):
        ref, pred = clinical[f"ref_{m}"].to_numpy(float), clinical[f"pred_{m}"].to_numpy(float)
        keep = np.isfinite(ref) & np.isfinite(pred)
        ax.scatter((ref[keep] + pred[keep]) / 2, pred[keep] - ref[keep], s=14, alpha=0.8)
        stats = agreement_stats(ref, pred)
        ax.axhline(stats["bias"], color="k", lw=1)
        if stats["sd_diff"] is not None:
            for bound in (stats["loa_lower"], stats["loa_upper"]):
                ax.axhline(bound, color="k", lw=0.8, ls="--")
        unit = MEASURE_UNITS[m]
        ax.set_title(f"{m}: bias {stats['bias']:.1f} {unit}", fontsize=9)
        ax.set_xlabel(f"mean of ref and pred ({unit})", fontsize=8)
        ax.set_ylabel(f"pred - ref ({unit}); LoA ±{LOA_Z} SD", fontsize=8)
    for ax in axes.ravel()[len(measures):]:
        ax.set_visible(False)
    return _save(fig, path)


def plot_clinical_scatter(clinical: pd.DataFrame, path: Path) -> Path | None:
    """Predicted against reference measure, with the identity line."""
    measures = _plottable_measures(clinical)
    if not measures:
        return None
    fig, axes = _figure(*_grid(len(measures)))
    for ax, m in zip(axes.ravel(), measures):
        ref, pred = clinical[f"ref_{m}"].to_numpy(float), clinical[f"pred_{m}"].to_numpy(float)
        keep = np.isfinite(ref) & np.isfinite(pred)
        ax.scatter(ref[keep], pred[keep], s=14, alpha=0.8)
        low, high = float(min(ref[keep].min(), pred[keep].min())), float(max(ref[keep].max(), pred[keep].max()))
        ax.plot([low, high], [low, high], color="k", lw=0.8)
        unit = MEASURE_UNITS[m]
        ax.set_title(m, fontsize=9)
        ax.set_xlabel(f"reference ({unit})", fontsize=8)
        ax.set_ylabel(f"predicted ({unit})", fontsize=8)
    for ax in axes.ravel()[len(measures):]:
        ax.set_visible(False)
    return _save(fig, path)


def plot_comparison(paired: pd.DataFrame, classes: Sequence[str], path: Path, *,
                    names: tuple[str, str] = ("A", "B")) -> Path:
    """Per-case Dice and HD95 of method B against method A, one panel per class, identity line."""
    fig, axes = _figure(len(BOX_METRICS), len(classes))
    for row, (metric, title) in enumerate(BOX_METRICS):
        for col, name in enumerate(classes):
            ax = axes[row, col]
            rows = paired[paired["class"] == name]
            a, b = rows[f"{metric}_a"].to_numpy(float), rows[f"{metric}_b"].to_numpy(float)
            keep = np.isfinite(a) & np.isfinite(b)
            ax.scatter(a[keep], b[keep], s=12, alpha=0.8)
            if keep.any():
                low, high = float(min(a[keep].min(), b[keep].min())), float(max(a[keep].max(), b[keep].max()))
                ax.plot([low, high], [low, high], color="k", lw=0.8)
            ax.set_title(f"{name}: {title}", fontsize=9)
            ax.set_xlabel(names[0], fontsize=8)
            ax.set_ylabel(names[1], fontsize=8)
    return _save(fig, path)


__all__ = ["plot_bland_altman", "plot_breakdown", "plot_clinical_scatter", "plot_comparison", "plot_metric_boxes",
           "plot_slice_positions"]
