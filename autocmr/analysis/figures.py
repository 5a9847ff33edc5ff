"""One PNG per subject: basal, mid and apical short-axis slices at ED and ES with the predicted contours,
and the volume curve with ED and ES marked.

Drawn with matplotlib's object API on the Agg canvas (no pyplot: no global backend change for the caller)
and written atomically. Images are shown in millimetres (true aspect ratio) and cropped around the heart.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from autocmr.dataset.labels import LV, MYO, RV
from autocmr.io.atomic import atomic_path

logger = logging.getLogger(__name__)

DPI = 100
FIGURE_SIZE_IN = (12.0, 5.6)
CROP_HALF_WIDTH_MM = 75.0  # square field of view around the LV: an adult heart with its RV fits in 15 cm
# Where along the LV (fraction from the base to the apex) the three displayed slices sit.
SLICE_POSITIONS = {"basal": 0.15, "mid": 0.5, "apical": 0.85}
CONTOUR_COLOURS = {LV: ("LV cavity (endocardium)", "#e4572e"), MYO: ("myocardium (epicardium)", "#29bf12"),
                   RV: ("RV cavity", "#2e86de")}
WINDOW_PERCENTILES = (1.0, 99.5)


def choose_slices(label: np.ndarray) -> dict[str, int]:
    """Basal, mid and apical slice indices (axis 0) from the extent of the LV (or of any structure).

    The base is the end of the LV with the larger cross-sections; without any structure, evenly spaced.
    """
    areas = (label == LV).sum(axis=(1, 2)) + (label == MYO).sum(axis=(1, 2))
    if not areas.any():
        areas = (label > 0).sum(axis=(1, 2))
    if not areas.any():
        first, last, base_first = 0, label.shape[0] - 1, True
    else:
        occupied = np.flatnonzero(areas)
        first, last = int(occupied[0]), int(occupied[-1])
        half = max(1, (last - first + 1) // 2)
        base_first = areas[first:first + half].sum() >= areas[last - half + 1:last + 1].sum()
    span = last - first
    return {name: int(round(first + f * span)) if base_first else int(round(last - f * span))
            for name, f in SLICE_POSITIONS.items()}


def subject_figure(path: str | Path, title: str, phases: Sequence[tuple[str, np.ndarray | None, np.ndarray]],
                   spacing: Sequence[float], curve: dict[str, Sequence[float]], curve_x: Sequence[object],
                   markers: dict[str, int], exact: Sequence[bool] | None = None,
                   spacings: Sequence[Sequence[float]] | None = None) -> Path:
    """Write the subject's PNG.

    Args:
        path: the PNG to write.
        title: figure title (subject name and key measures).
        phases: ``(name, image or None, label)`` per phase to show (ED, ES; or one mask of unknown phase),
            canonical (z, y, x).
        spacing: voxel size in mm (z, y, x).
        curve: structure name -> volume per frame (mL).
        curve_x: the frame (or phase) of each curve value.
        markers: ``ED``/``ES`` -> index into the curve to mark.
        exact: per curve value, whether its frame was predicted at full accuracy (filled markers) or only by
            a cine's fast pass (hollow); None: all at full accuracy.
        spacings: each phase's own voxel size, where ED and ES come from separate stacks (else ``spacing``).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGURE_SIZE_IN)
    FigureCanvasAgg(fig)
    images = fig.add_gridspec(2, 3, left=0.01, right=0.64, top=0.86, bottom=0.09, wspace=0.04, hspace=0.14)
    own = list(spacings) if spacings is not None else [spacing] * len(phases)
    for row, (phase, image, label) in enumerate(phases[:2]):
        # the same slices for ED and ES (a reader compares them), unless their stacks differ (separate files)
        if row == 0 or label.shape != phases[0][2].shape or tuple(own[row]) != tuple(own[0]):
            slices, crop = choose_slices(label), _crop_box(label, own[row])
        for col, (position, k) in enumerate(slices.items()):
            ax = fig.add_subplot(images[row, col])
            _draw_slice(ax, None if image is None else image[k], label[k], own[row], crop)
            ax.set_title(f"{phase} {position} (slice {k})", fontsize=9)
    if len(phases) == 1:
        shown = phases[0][0]
        text = (f"no {'ES' if shown == 'ED' else 'ED'} mask for this subject" if shown in ("ED", "ES")
                else "no ED or ES for this subject: volumes only, no measures")
        ax = fig.add_subplot(images[1, :])
        ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=11, color="0.4")
        ax.set_axis_off()
    plot = fig.add_gridspec(1, 1, left=0.71, right=0.98, top=0.86, bottom=0.12)
    _draw_curve(fig.add_subplot(plot[0, 0]), curve, curve_x, markers, exact)
    handles = [_legend_patch(colour, name) for name, colour in CONTOUR_COLOURS.values()]
    fig.legend(handles=handles, loc="lower left", ncol=3, fontsize=8, frameon=False, bbox_to_anchor=(0.02, 0.0))
    fig.suptitle(title, fontsize=11, parse_math=False)  # a '$' in a subject's name is text, not math
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return path


def _legend_patch(colour: str, name: str):
    from matplotlib.lines import Line2D

    return Line2D([0], [0], color=colour, lw=2, label=name)


def _crop_box(label: np.ndarray, spacing: Sequence[float]) -> tuple[slice, slice]:
    """A square in-plane box (mm) centred on the LV (on any structure without LV; whole image if empty)."""
    heart = (label == LV) | (label == MYO)
    heart = heart if heart.any() else label > 0
    if not heart.any():
        return slice(None), slice(None)
    _, ys, xs = np.nonzero(heart)
    cy, cx = int(np.median(ys)), int(np.median(xs))  # the median ignores stray islands
    hy, hx = int(CROP_HALF_WIDTH_MM / spacing[1]), int(CROP_HALF_WIDTH_MM / spacing[2])
    return slice(max(0, cy - hy), cy + hy + 1), slice(max(0, cx - hx), cx + hx + 1)


def _draw_slice(ax, image: np.ndarray | None, label: np.ndarray, spacing: Sequence[float],
                crop: tuple[slice, slice]) -> None:
    label = label[crop]
    background = image[crop].astype(np.float32) if image is not None else np.zeros(label.shape, np.float32)
    low, high = np.percentile(background, WINDOW_PERCENTILES) if background.size else (0.0, 1.0)
    extent = (0, label.shape[1] * spacing[2], label.shape[0] * spacing[1], 0)  # mm, image rows downwards
    ax.imshow(background, cmap="gray", vmin=low, vmax=max(high, low + 1e-6), extent=extent,
              interpolation="nearest")
    # as clinical viewers draw them: the epicardium (outline of myocardium and cavity) and the endocardium (the
    # cavity's outline, drawn last so that it is not hidden under the myocardium's inner edge), then the RV
    myocardium, cavity = label == MYO, label == LV
    outlines = {MYO: myocardium | cavity if myocardium.any() else None, LV: cavity, RV: label == RV}
    for value, mask in outlines.items():
        if mask is not None and mask.any():
            ax.contour(mask.astype(np.float32), levels=[0.5], colors=[CONTOUR_COLOURS[value][1]], linewidths=1.2,
                       extent=extent, origin="upper")
    ax.set_xticks([])
    ax.set_yticks([])


def _draw_curve(ax, curve: dict[str, Sequence[float]], curve_x: Sequence[object], markers: dict[str, int],
                exact: Sequence[bool] | None = None) -> None:
    positions = np.arange(len(curve_x))
    full = np.ones(len(curve_x), bool) if exact is None else np.asarray(exact, bool)
    for name, colour in (("LV", CONTOUR_COLOURS[LV][1]), ("RV", CONTOUR_COLOURS[RV][1]),
                         ("MYO", CONTOUR_COLOURS[MYO][1])):
        if name in curve:
            values = np.asarray(curve[name], float)
            ax.plot(positions, values, color=colour, label=f"{name} (mL)", linestyle="--" if name == "MYO" else "-")
            ax.plot(positions[full], values[full], "o", ms=3, color=colour)
            ax.plot(positions[~full], values[~full], "o", ms=3, mfc="white", color=colour)
    if not full.all():  # a cine on the fast path: say which points are the cheap pass
        ax.text(0.02, 0.02, "hollow: fast pass, not full accuracy", transform=ax.transAxes, fontsize=7, color="0.35")
    for phase, index in markers.items():
        ax.axvline(index, color="0.3", linestyle=":", linewidth=1)
        ax.annotate(phase, (index, 1.0), xycoords=("data", "axes fraction"), ha="center", va="bottom", fontsize=9)
    ax.set_xticks(positions if len(positions) <= 12 else positions[:: max(1, len(positions) // 10)])
    ax.set_xticklabels([str(curve_x[i]) for i in ax.get_xticks().astype(int)], fontsize=8)
    ax.set_xlabel("frame" if all(isinstance(x, (int, np.integer)) for x in curve_x) else "phase", fontsize=9)
    ax.set_ylabel("volume (mL)", fontsize=9)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")


__all__ = ["choose_slices", "subject_figure"]
