"""End-diastole and end-systole of a cine from its ventricular volume curves.

ED is the frame with the largest LV cavity volume, ES the one with the smallest (the definition of the SCMR
post-processing guidelines, Schulz-Menger et al., JCMR 2020, when no ECG-based frame is trusted). The RV
curve is a sanity check: both ventricles fill and empty together, so their extremes should fall within a
few frames of each other; when they do not, the choice is kept (the LV decides) and a note says why it is
doubtful. Unlike tools that assume ED is frame 0, nothing is assumed about where in the cine the cycle starts.
"""
from __future__ import annotations

from typing import Collection, NamedTuple, Sequence

import numpy as np

from autocmr.evaluation.clinical import ed_es_from_curve

# The RV extremes may lag the LV's by a frame or two (RV ejection starts and ends slightly later); beyond this
# fraction of the cycle (at least 2 frames) the two curves disagree about the phases.
MAX_RV_LAG_FRACTION = 0.15
MIN_RV_LAG_FRAMES = 2
# A curve whose range is below this fraction of its maximum has no clear ED/ES (contraction not captured,
# or the segmentation is the same in every frame).
MIN_RELATIVE_STROKE = 0.05


class EdEs(NamedTuple):
    """ED and ES frame indices (0-based) and notes on anything doubtful; unpacks as ``ed, es, notes``."""

    ed: int
    es: int
    notes: tuple[str, ...]


def find_ed_es(volume_curve_lv: Sequence[float] | np.ndarray,
               volume_curve_rv: Sequence[float] | np.ndarray | None = None, *,
               excluded: Collection[int] = (), without_lv: Collection[int] = ()) -> EdEs:
    """ED (largest LV volume) and ES (smallest) frames of a cine, checked against the RV curve.

    Args:
        volume_curve_lv: LV cavity volume per frame (any unit), at least 2 frames.
        volume_curve_rv: RV cavity volume per frame (same length), or None to skip the check.
        excluded: frames that cannot be ED or ES (frames without image content, e.g. a zero-padded frame,
            whose empty mask would otherwise be the smallest volume); a note names them.
        without_lv: frames with image content but no LV segmented where others have one (a failed
            prediction): left out as well, with a note of their own (a doubt about the choice).

    Returns:
        ``EdEs(ed, es, notes)``. Ties go to the first frame. If the LV is absent from every frame but
        the RV is present, ED/ES come from the RV curve (and a note says so).

    Raises:
        ValueError: a curve is not 1D, shorter than 2 frames, has NaN/inf or negative values, the
            lengths differ, fewer than 2 frames are left, or neither ventricle is present in any frame.
    """
    lv = _curve(volume_curve_lv, "LV")
    rv = None if volume_curve_rv is None else _curve(volume_curve_rv, "RV")
    if rv is not None and rv.size != lv.size:
        raise ValueError(f"LV and RV volume curves differ in length ({lv.size} and {rv.size} frames)")
    blank = sorted({int(t) for t in excluded if 0 <= int(t) < lv.size})
    empty = sorted({int(t) for t in without_lv if 0 <= int(t) < lv.size} - set(blank))
    left_out = sorted(blank + empty)
    keep = np.ones(lv.size, bool)
    keep[left_out] = False
    if keep.sum() < 2:
        raise ValueError(f"only {int(keep.sum())} of {lv.size} frames can be ED or ES (frames {left_out} are left "
                         "out): no ED/ES can be found")
    notes: list[str] = []
    if blank:
        notes.append(f"frame(s) {blank} have no image content: left out of the ED/ES choice")
    if empty:
        notes.append(f"frame(s) {empty} have no LV segmented while the other frames have one (a failed "
                     "prediction, or a padded frame?): left out of the ED/ES choice")
    driver, name = lv, "LV"
    if not lv[keep].any():
        if rv is None or not rv[keep].any():
            raise ValueError("neither the LV nor the RV is present in any frame: no ED/ES can be found")
        driver, name = rv, "RV"
        notes.append("no LV in any frame: ED/ES taken from the RV volume curve")
    if left_out:  # the same rule on the frames left: largest / smallest, the first on ties
        ed, es = int(np.argmax(np.where(keep, driver, -np.inf))), int(np.argmin(np.where(keep, driver, np.inf)))
    else:
        ed, es = ed_es_from_curve(driver)  # the one rule (largest / smallest volume), shared with the evaluation
    kept = driver[keep]
    if np.ptp(kept) < MIN_RELATIVE_STROKE * kept.max():
        notes.append(f"{name} volume changes by less than {MIN_RELATIVE_STROKE:.0%} over the cine: "
                     "ED/ES are not well defined")
    if rv is not None and name == "LV" and rv[keep].any():
        notes += _rv_disagreement(ed, es, rv, keep)
    return EdEs(ed, es, tuple(notes))


def _curve(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    curve = np.asarray(values, dtype=float)
    if curve.ndim != 1 or curve.size < 2:
        raise ValueError(f"{name} volume curve must be 1D with at least 2 frames, got shape {curve.shape}")
    if not np.isfinite(curve).all():
        raise ValueError(f"{name} volume curve has NaN or infinite values: {curve.tolist()}")
    if (curve < 0).any():
        raise ValueError(f"{name} volume curve has negative volumes: {curve.tolist()}")
    return curve


def cyclic_distance(a: int, b: int, n_frames: int) -> int:
    """Frames between ``a`` and ``b`` on a cardiac cycle of ``n_frames`` (the cine wraps around)."""
    d = abs(a - b) % n_frames
    return min(d, n_frames - d)


def _rv_disagreement(ed: int, es: int, rv: np.ndarray, keep: np.ndarray) -> list[str]:
    n = rv.size
    tolerance = max(MIN_RV_LAG_FRAMES, int(round(MAX_RV_LAG_FRACTION * n)))
    rv_ed, rv_es = int(np.argmax(np.where(keep, rv, -np.inf))), int(np.argmin(np.where(keep, rv, np.inf)))
    notes = []
    for phase, lv_frame, rv_frame in (("ED", ed, rv_ed), ("ES", es, rv_es)):
        if cyclic_distance(lv_frame, rv_frame, n) > tolerance:
            notes.append(f"{phase} frame {lv_frame} (LV) and {rv_frame} (RV) are more than {tolerance} frames "
                         "apart: check the phases")
    return notes


__all__ = ["EdEs", "cyclic_distance", "find_ed_es"]
