"""The screen of the fast cine path (:mod:`autocmr.inference.fast_cine`, steps 3-5): slice-by-slice bounds on
a fast-pass frame's full-accuracy volume, and ruling a frame out on its uncertain slices alone.

A 2D network's fast pass and its full-accuracy prediction part mostly on one or two slices (the base), by
amounts that change from frame to frame, so the ratio of whole volumes seen on the refined frames cannot
bound a fast-pass frame; each slice's own ratios and differences can (:func:`slice_bounds`). A near tie whose
bounds still reach past ED or ES is screened: the slices on which the refined frames showed disagreement are
predicted at full accuracy for it alone, each with the context slices the network sees in the whole stack,
and its bounds are taken again with those slices exact. All areas are counted in the network's grid, before
postprocessing, from the argmax of the class probabilities (:func:`slice_areas`).
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Collection, Mapping, Sequence

import numpy as np
import torch

from autocmr.inference.predictor import Predictor
from autocmr.preprocessing.resampling import class_argmax

if TYPE_CHECKING:  # only for annotations: fast_cine imports this module
    from autocmr.inference.fast_cine import CineOptions

logger = logging.getLogger(__name__)

# The screen predicts at full accuracy the slices on which the fast pass and full accuracy parted by more than
# this share of the frame's volume on a refined frame; the other slices are bounded by their ratios.
SCREEN_SLICE_SHARE = 0.005
# A near tie is screened on at most this share of its slices (with a 2D model's context slices) predicted at
# full accuracy; more, and refining the whole frame costs little more.
MAX_SCREEN_SHARE = 1 / 3

Unit = tuple[np.ndarray, dict[str, Any]]  # a preprocessed frame and its properties (as Predictor.export takes)


def slice_areas(probabilities: torch.Tensor) -> np.ndarray:
    """Voxels of each label per slice of the argmax of ``probabilities`` (C, z, y, x): array (C, z)."""
    n_classes, n_slices = probabilities.shape[0], probabilities.shape[1]
    label = class_argmax(probabilities).reshape(n_slices, -1)
    pairs = label + n_classes * np.arange(n_slices)[:, None]  # one bincount over (slice, label) pairs
    return np.bincount(pairs.ravel(), minlength=n_slices * n_classes).reshape(n_slices, n_classes).T.astype(float)


def uncertain_slices(fast: np.ndarray, full: np.ndarray, share: float = SCREEN_SLICE_SHARE) -> list[int]:
    """Slices on which the fast pass and full accuracy part by more than ``share`` of the frame's full-accuracy
    volume, on any of the refined frames; ``fast``, ``full``: (frames, z) areas of one label."""
    volume = np.maximum(full.sum(axis=1, keepdims=True), 1.0)
    worst = (np.abs(full - fast) / volume).max(axis=0)
    return np.nonzero(worst > share)[0].tolist()


def slice_bounds(candidate: np.ndarray, fast: np.ndarray, full: np.ndarray, margin: float,
                 exact: Mapping[int, float] | None = None) -> tuple[float, float]:
    """Lowest and highest full-accuracy volume (voxels) a frame can have, slice by slice.

    ``candidate``: the frame's fast-pass areas per slice; ``fast``, ``full``: (frames, z) areas of the
    refined frames. Each slice's full-accuracy area is taken to lie within the candidate's fast area times
    the range of that slice's full/fast ratios on the refined frames, or plus the range of its differences,
    whichever interval is wider (a basal slice the fast pass draws and full accuracy leaves empty has ratio
    0 on one frame and a large difference on another), widened by ``margin``. Slices in ``exact`` (slice ->
    area predicted at full accuracy) count as they are.
    """
    ratio = np.divide(full, fast, out=np.full(fast.shape, np.nan), where=fast > 0)
    r_low = np.nan_to_num(np.fmin.reduce(ratio, axis=0), nan=1.0)  # no ratio on a slice: no evidence of one
    r_high = np.nan_to_num(np.fmax.reduce(ratio, axis=0), nan=1.0)
    difference = full - fast
    low = np.maximum(np.minimum(candidate * r_low, candidate + difference.min(axis=0)), 0.0) * (1 - margin)
    high = np.maximum(candidate * r_high, candidate + difference.max(axis=0)) * (1 + margin)
    for z, area in (exact or {}).items():
        low[z] = high[z] = area
    return float(low.sum()), float(high.sum())


def slice_runs(slices: Sequence[int], context: int, n_slices: int) -> list[tuple[int, int]]:
    """Contiguous ranges ``[lo, hi)`` covering ``slices`` with ``context`` neighbours on each side (as a 2D
    model with context slices sees them in the whole stack), overlapping or touching ranges merged."""
    runs: list[tuple[int, int]] = []
    for z in sorted(slices):
        lo, hi = max(0, z - context), min(n_slices, z + context + 1)
        if runs and lo <= runs[-1][1]:
            runs[-1] = (runs[-1][0], max(runs[-1][1], hi))
        else:
            runs.append((lo, hi))
    return runs


class SliceScreen:
    """Steps 3-5 of :mod:`autocmr.inference.fast_cine` for 2D models: the slice-aware bounds that pick near
    ties, and the screen that rules a candidate out on its uncertain slices predicted at full accuracy.

    ``fast`` and ``full`` hold each frame's :func:`slice_areas` (network grid, before postprocessing) from the
    fast pass and from full accuracy; the caller fills them as frames are predicted."""

    def __init__(self, predictor: Predictor, units: Sequence[Unit], options: CineOptions,
                 blank: Collection[int] = ()) -> None:
        self.predictor, self.units, self.options = predictor, units, options
        self.fast: dict[int, np.ndarray] = {}
        self.full: dict[int, np.ndarray] = {}
        self.screened: set[int] = set()
        self.bounds: dict[int, tuple[float, float]] = {}  # of each screened frame, for the log and tests
        # the full-accuracy probabilities (C, y, x) of each screened frame's uncertain slices, by slice
        self.exact: dict[int, dict[int, torch.Tensor]] = {}
        self.seconds = 0.0
        # slice k must be the same slice in every frame: frames cropped alike (as for the heart window). A blank
        # frame (no content, never a candidate) keeps the full extent where the others lose a zero border
        content = [unit for t, unit in enumerate(units) if t not in set(blank)] or list(units)
        same_crop = (len({pre.shape for pre, _ in content}) <= 1
                     and len({repr(props.get("bbox")) for _, props in content}) <= 1)
        self.enabled = options.screen and predictor.config.dim == 2 and same_crop

    def _refined(self, label: int) -> tuple[np.ndarray, np.ndarray]:
        refined = sorted(self.full)
        return (np.stack([self.fast[t][label] for t in refined]), np.stack([self.full[t][label] for t in refined]))

    def near_ties(self, ed: int, es: int, label: int, excluded: Collection[int] = ()) -> list[tuple[int, str]] | None:
        """The fast-pass frame whose slice-aware bounds (:func:`slice_bounds`) reach furthest beyond ED's
        full-accuracy volume, and the one for ES, if any could beat them by more than the tolerance; None when
        the screen is off (the caller then uses the whole-volume ratios,
        :func:`autocmr.inference.fast_cine._near_ties`)."""
        if not self.enabled or not self.full or any(t not in self.fast for t in self.full):
            return None
        fast, full = self._refined(label)
        tolerance = self.options.tie_tolerance
        ed_volume, es_volume = self.full[ed][label].sum(), self.full[es][label].sum()
        bounds = {t: slice_bounds(areas[label], fast, full, self.options.tie_margin)
                  for t, areas in self.fast.items() if t not in self.full and t not in excluded}
        above = sorted((t for t, (_, high) in bounds.items() if high > ed_volume * (1 + tolerance)),
                       key=lambda t: -bounds[t][1])
        below = sorted((t for t, (low, _) in bounds.items() if low < es_volume * (1 - tolerance)),
                       key=lambda t: bounds[t][0])
        picked = [(t, "ED") for t in above[:1]] + [(t, "ES") for t in below[:1] if t not in above[:1]]
        logger.debug("near ties of ED %d (%.0f voxels) and ES %d (%.0f): %s", ed, ed_volume, es, es_volume,
                     [(t, side, [round(b) for b in bounds[t]]) for t, side in picked])
        return picked

    def __call__(self, frame: int, side: str, ed: int, es: int, label: int) -> bool:
        if not self.enabled or frame not in self.fast or not self.full:
            return False
        fast, full = self._refined(label)
        slices = uncertain_slices(fast, full)
        n_slices = fast.shape[1]
        runs = slice_runs(slices, self.predictor.config.context_slices, n_slices)
        if sum(hi - lo for lo, hi in runs) > max(1, int(n_slices * MAX_SCREEN_SHARE)):
            return False
        start = time.perf_counter()
        pre = self.units[frame][0]
        exact: dict[int, torch.Tensor] = {}
        for lo, hi in runs:  # each run with its context neighbours, as the full stack has them
            probabilities = self.predictor.probabilities(np.ascontiguousarray(pre[:, lo:hi]))
            exact.update({z: probabilities[:, z - lo].clone() for z in slices if lo <= z < hi})
        self.seconds += time.perf_counter() - start
        areas = {z: float(slice_areas(p[:, None])[label, 0]) for z, p in exact.items()}
        low, high = self.bounds[frame] = slice_bounds(self.fast[frame][label], fast, full, self.options.tie_margin,
                                                      areas)
        tolerance = self.options.tie_tolerance
        ruled_out = (high <= self.full[ed][label].sum() * (1 + tolerance) if side == "ED"
                     else low >= self.full[es][label].sum() * (1 - tolerance))
        logger.debug("screened frame %d against %s (%.0f voxels) on slices %s: %.0f-%.0f voxels, %s", frame, side,
                     self.full[ed if side == "ED" else es][label].sum(), slices, low, high,
                     "ruled out" if ruled_out else "refined")
        if ruled_out:
            self.screened.add(frame)
            self.exact[frame] = exact
        return ruled_out

    def patched(self, frame: int, fast: torch.Tensor) -> torch.Tensor:
        """A screened frame's fast-pass probabilities (C, z, y, x) with its screened slices at full accuracy."""
        out = fast.clone()
        for z, probabilities in self.exact.get(frame, {}).items():
            out[:, z] = probabilities.to(out.dtype)
        return out

    def slices(self) -> dict[int, list[int]]:
        """The slices of each screened frame that its written mask has at full accuracy."""
        return {t: sorted(self.exact[t]) for t in sorted(self.screened)}
