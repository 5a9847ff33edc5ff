"""The fast cine path: a cheap pass over every frame for the volume curve, full accuracy only where it counts.

The clinical measures of a cine (volumes, ejection fractions, LV mass) come from two of its frames, end-
diastole (ED) and end-systole (ES). Predicting all 20-30 frames at full accuracy (every fold, test-time
mirroring, overlapping tiles) spends most of the time on frames that only feed the volume curve. So:

1. **fast pass** over every frame: the first fold only, no mirroring, in bfloat16 where the CPU runs it fast (AMX,
   or AVX512-BF16 on AMD: network passes 1.4-2x as fast; README "CPU precision"), and only over a **window around
   the heart**: a pass with touching tiles (``step`` 1) over the whole of two frames (the first and the middle
   one) finds the heart (largest foreground component), and every frame is then predicted in a window of one patch
   (wider if the heart is) centred on it, with background outside. One tile per slice instead of four or more, and
   no tile seam through the heart: on 32 ACDC volumes the fast pass's LV volumes moved from a median /
   90th-percentile difference of 1.2 / 11 % from the full path (touching tiles over the whole slice, whose seams
   run through the image centre) to 0.5 / 3.2 % (``benchmarks/fast_pass_agreement.py``). Its masks give the LV/RV
   volume curves;
2. ED and ES are found on the curves (:func:`autocmr.evaluation.phases.find_ed_es`) and those frames are
   predicted again at **full accuracy** (the predictor's own folds, mirroring and step);
3. the full-accuracy volumes replace the fast ones in the curve and ED/ES are found again; if another frame
   now wins, it is predicted at full accuracy too. Then near ties: a fast-pass frame whose full-accuracy
   volume could exceed ED's (or fall below ES's) by more than ``tie_tolerance`` (1 %) is predicted at full
   accuracy as well. For 2D models the bounds are **slice by slice** (:mod:`autocmr.inference.cine_screen`):
   each slice's full-accuracy area within the candidate's fast area times that slice's full/fast ratios on the frames
   refined so far, or plus their differences (whichever is wider, widened by ``tie_margin``): the fast pass
   errs mostly on the basal slice, by amounts that differ from frame to frame (a basal LV of 65, 236 and 276
   voxels in three frames where full accuracy draws none), which ratios of whole volumes cannot bound. For 3D
   models, or with the screen off, the whole-volume ratios seen on the refined frames do (:func:`_near_ties`).
   A frame that could beat ED or ES by less than the tolerance cannot move the end-diastolic or
   end-systolic LV volume by more than that, so it is not refined (about 2 s a frame on 2 CPU cores in
   bfloat16, 4 s in float32); which of two such frames is called ED (or ES) may then differ from the full
   path, and so may measures read at that frame from another structure (the RV). ``tie_tolerance`` 0 asks
   for the full path's frames whenever the bounds cannot rule a frame out, at the cost of more refined frames.
   This repeats until ED and ES are full-accuracy frames with no near tie left, or ``max_extra_frames``
   frames beyond ED and ES have been refined (a note then says which near ties stayed fast-pass only). The cap
   never leaves ED or ES themselves to the fast pass: a fast-pass frame that is ED or ES in the curve is
   refined whatever the count (the measures are read there), at worst every frame, as the full path does.
4. **screening a near tie** (2D models) before refining all of it: the slices where the frames refined so
   far show a disagreement of more than 0.5 % of their volume are predicted at full accuracy for the
   candidate alone, each with its context slices (a third of its slices at most); its other slices keep
   their slice-by-slice bounds. A candidate that cannot beat ED or ES by more than the tolerance even then is
   left to the fast pass (``screened_frames``), and the next candidate is considered. Volumes in the screen
   are counted in the network's grid, before postprocessing. A screened frame's mask keeps what the screen
   computed: its fast-pass probabilities with the screened slices at full accuracy (``screened_slices``),
   and its volumes in the curve are those of that mask.
5. **a fast-pass frame that beats the refined ED or ES outright** (its volume in the curve is larger than
   ED's or smaller than ES's) is screened the same way before it is refined: if its full-accuracy volume
   cannot beat ED or ES by more than the tolerance, its mask gets the screened slices at full accuracy and
   the curve is looked at again; only if that mask still beats ED or ES is the frame refined. ED and ES read
   from the written mask are therefore always full-accuracy frames.

Every frame of the 4D mask is written; the frames listed in ``full_accuracy_frames`` (ED and ES at least)
are exactly what the full path gives, screened frames are the fast pass with their screened slices at full
accuracy, the others come from the fast pass. The volume curve is computed from
the exported masks (native voxels), as the measures are, so the ED/ES found here and from the written mask
agree. If the fast pass finds no ventricle in any frame, every frame is predicted at full accuracy.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Iterator, Sequence

import numpy as np
import torch

from autocmr.dataset.labels import LV, RV
from autocmr.errors import ConfigurationError
from autocmr.evaluation.phases import cyclic_distance, find_ed_es
from autocmr.inference.cine_screen import SliceScreen, Unit, slice_areas
from autocmr.inference.postprocessing import largest_component
from autocmr.inference.predictor import Prediction, Predictor, clear_slices
from autocmr.inference.sliding_window import Window, crop_to_window, embed_in_background, predict_logits
from autocmr.precision import PRECISIONS, fast_precision, resolve_precision
from autocmr.preprocessing.other_phase import pair_aligned
from autocmr.preprocessing.resampling import class_argmax

logger = logging.getLogger(__name__)

CINE_MODES = ("fast", "full")
# Tiles that touch (step 1) instead of overlapping by half: a 224 x 224 slice with 128 x 128 patches takes
# 2 x 2 tiles instead of 3 x 3; the Gaussian weighting still blends the seams.
FAST_STEP = 1.0
FAST_FOLDS = 1  # networks of the ensemble used by the fast pass (the first ones)
# Near-tied frames can make the full-accuracy curve pick another frame than the fast pass's ED/ES; each such
# frame is predicted at full accuracy too, up to this many beyond ED and ES (then a note says it stopped).
# 6 since full-accuracy frames run in bfloat16 on CPUs with fast bfloat16 (~1.8 s with AMX instead of ~3 s a
# frame): the same time as 4 before, and the 48-epoch default model needs 6 on the Sunnybrook study to find
# the full path's ES (README "Fast cine path").
MAX_EXTRA_FULL_FRAMES = 6
FAST_REGIONS = ("heart", "whole")  # the fast pass over a window around the heart, or over whole slices
# The heart window's margin around the largest foreground component of the two locating frames: the heart
# moves and changes size over the cycle (the window is at least one patch, ~200 mm on the CPU plans, anyway).
HEART_MARGIN_MM = 10.0
# Near ties: the range of full/fast volume ratios seen on refined frames is widened by this fraction (two
# refined frames say little about the spread over 20-30).
MIN_TIE_MARGIN = 0.005
# Near ties that could beat ED's (ES's) full-accuracy volume by less than this fraction are left to the fast
# pass. It bounds the end-diastolic and end-systolic LV volumes, not every measure: the other frame of such a
# tie can have a different RV (RVESV 16 % apart on two frames 0.5 % apart in LV volume, README "Fast cine
# path"). 0 asks for the full path's frames whenever the bounds cannot rule a frame out: on the Sunnybrook
# study 5-8 full-accuracy frames instead of 2-3, because end-systolic plateaus hold frames within 0.5 %.
TIE_TOLERANCE = 0.01


@dataclass(frozen=True)
class CineOptions:
    """How 4D cines are predicted: ``mode`` "fast" (this module) or "full" (every frame at full accuracy)."""

    mode: str = "fast"
    fast_folds: int = FAST_FOLDS
    fast_step: float = FAST_STEP
    max_extra_frames: int = MAX_EXTRA_FULL_FRAMES
    tie_margin: float = MIN_TIE_MARGIN
    tie_tolerance: float = TIE_TOLERANCE
    fast_precision: str = "auto"  # of the fast pass: auto = autocmr.precision.fast_precision(device)
    fast_region: str = "heart"  # "whole": the fast pass tiles whole slices (as before 2026-11-28)
    screen: bool = True  # screen near ties on their uncertain slices before refining them (module doc, step 4)

    def __post_init__(self) -> None:
        if self.mode not in CINE_MODES:
            raise ConfigurationError(f"cine mode must be one of {CINE_MODES}, got {self.mode!r}")
        if self.fast_folds < 1:
            raise ConfigurationError(f"fast_folds must be at least 1, got {self.fast_folds}")
        if not 0 < self.fast_step <= 1:
            raise ConfigurationError(f"fast_step must be in (0, 1], got {self.fast_step}")
        if self.max_extra_frames < 0:
            raise ConfigurationError(f"max_extra_frames must be >= 0, got {self.max_extra_frames}")
        if not 0 <= self.tie_margin < 1:
            raise ConfigurationError(f"tie_margin must be in [0, 1), got {self.tie_margin}")
        if not 0 <= self.tie_tolerance < 1:
            raise ConfigurationError(f"tie_tolerance must be in [0, 1), got {self.tie_tolerance}")
        if self.fast_region not in FAST_REGIONS:
            raise ConfigurationError(f"fast_region must be one of {FAST_REGIONS}, got {self.fast_region!r}")
        if self.fast_precision not in PRECISIONS:
            raise ConfigurationError(f"fast_precision must be one of {PRECISIONS}, got {self.fast_precision!r}")

    def describe(self) -> dict[str, Any]:
        """What goes into ``predictions.json`` (``predictor.cine``): how 4D cines of the batch were predicted."""
        return {"mode": self.mode, "fast_region": self.fast_region, "screen": self.screen,
                "tie_tolerance": self.tie_tolerance, "max_extra_frames": self.max_extra_frames,
                "fast_precision": self.fast_precision}

    def resolved_fast_precision(self, device: torch.device) -> str:
        if self.fast_precision == "auto":
            return fast_precision(device)
        return resolve_precision(self.fast_precision, device, training=False)


@dataclass
class CinePrediction:
    """Masks of every frame (stored order of the input) and how each was obtained."""

    labels: list[np.ndarray]
    probabilities: list[np.ndarray | None]
    ed: int | None
    es: int | None
    full_accuracy_frames: list[int]
    lv_ml: list[float]  # volume curves of the returned masks (full accuracy where listed above)
    rv_ml: list[float]
    fast_lv_ml: list[float]  # the fast pass's LV curve, before refinement (empty when there was none)
    uncertainty: list[float]  # per frame, as Predictor.probabilities_and_uncertainty; NaN for fast-pass frames
    notes: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    fast_window: list[list[int]] | None = None  # [[y0, y1], [x0, x1]] of the network input; None = whole slices
    screened_frames: list[int] = field(default_factory=list)  # near ties ruled out on their uncertain slices
    # the slices (network grid) of each screened frame that its mask has at full accuracy (module doc, step 4)
    screened_slices: dict[int, list[int]] = field(default_factory=dict)

    def phase_notes(self) -> dict[int, str]:
        """How each frame was predicted, in words (for the DICOM-SEG ContentDescription)."""
        full = set(self.full_accuracy_frames)
        names = {self.es: "ES", self.ed: "ED"}
        return {t: ", ".join(([names[t]] if t in names else []) + [self._how(t, full)])
                for t in range(len(self.labels))}

    def _how(self, frame: int, full: set[int]) -> str:
        if frame in full:
            return "full accuracy"
        slices = self.screened_slices.get(frame)
        return f"fast pass, {len(slices)} slice(s) at full accuracy" if slices else "fast pass"


    def describe(self) -> dict[str, Any]:
        """What goes into ``predictions.json`` for this case."""
        return {"mode": "fast", "ed_frame": self.ed, "es_frame": self.es,
                "full_accuracy_frames": sorted(self.full_accuracy_frames),
                "lv_ml": [round(v, 3) for v in self.lv_ml], "rv_ml": [round(v, 3) for v in self.rv_ml],
                "fast_lv_ml": [round(v, 3) for v in self.fast_lv_ml], "fast_window": self.fast_window,
                "screened_frames": sorted(self.screened_frames),
                "screened_slices": {str(t): z for t, z in sorted(self.screened_slices.items())},
                "notes": list(self.notes),
                "seconds": {k: round(v, 3) for k, v in self.seconds.items()}}


def predict_cine_fast(predictor: Predictor, units: Sequence[Unit], voxel_ml: float, *,
                      options: CineOptions = CineOptions(), with_probabilities: bool = False,
                      blank_frames: Collection[int] = (), missing_slices: Collection[int] = ()) -> CinePrediction:
    """Predict the frames of one cine the fast way (see the module docstring).

    Args:
        predictor: the model; its folds, mirroring and step define "full accuracy".
        units: preprocessed frames ``(network input, properties)``, as for :meth:`Predictor.export`.
        voxel_ml: volume of one voxel of the exported masks, in mL.
        options: fast-pass settings.
        with_probabilities: also return each frame's class probabilities (float16, stored order).
        blank_frames: frames without image content (a zero-padded frame): predicted, but never ED or ES.
        missing_slices: slices no image fills (a gap in a DICOM stack): background in every mask, before the
            volume curves are measured, so the curves, ED/ES and the written masks agree.
    """
    start = time.perf_counter()
    blank = sorted({int(t) for t in blank_frames if 0 <= int(t) < len(units)})
    n = len(units)
    content = [t for t in range(n) if t not in blank]  # the frames that can be ED or ES
    uncertainty = [float("nan")] * n
    notes: list[str] = []
    full: list[int] = []
    same = _fast_pass_is_full_accuracy(predictor, options)
    window: Window | None = None
    screen = SliceScreen(predictor, units, options, blank)
    if same:  # nothing to gain: predict every frame once, at full accuracy
        notes.append("the predictor is already as fast as the fast pass: every frame at full accuracy")
        masks: list[Prediction | None] = [None] * n
    else:
        if options.fast_region == "heart":
            window = _locate_heart(predictor, units, options, blank)
        masks = []
        for t, (pre, props) in enumerate(units):
            probabilities = _fast_probabilities(predictor, pre, options, window)
            screen.fast[t] = slice_areas(probabilities)
            masks.append(_export(predictor, probabilities, props, with_probabilities, missing_slices))
    fast_pass_s = time.perf_counter() - start
    lv, rv = _curves(masks, voxel_ml)
    fast_lv = [] if same else lv.tolist()
    full_units = units  # the full-accuracy inputs: with the other phase for a model that takes it
    if predictor.config.other_phase:
        if same or not _ed_es_findable(lv, rv, content):
            notes.append("other phase: no ED/ES known before the frames are predicted, so each frame sees itself "
                         "in the other phase's place")
        else:
            full_units = _with_other_phase(units, lv, rv, notes, blank)
            screen.units = full_units

    def screen_and_patch(frame: int, side: str, ed: int, es: int, label: int) -> bool:
        """The screen; a frame it rules out gets its screened slices at full accuracy in the written mask."""
        if not screen(frame, side, ed, es, label):
            return False
        fast = _fast_probabilities(predictor, units[frame][0], options, window)
        masks[frame] = _export(predictor, screen.patched(frame, fast), units[frame][1], with_probabilities,
                               missing_slices)
        lv[frame], rv[frame] = _volumes(masks[frame].label, voxel_ml)
        return True

    refine = range(n) if same else _frames_to_refine(lv, rv, full, options, notes, screen_and_patch,
                                                     screen.near_ties, blank)
    for frame in refine:
        pre, props = full_units[frame]
        probabilities, uncertainty[frame] = predictor.probabilities_and_uncertainty(pre)
        screen.full[frame] = slice_areas(probabilities)
        logger.debug("refined frame %d: %.0f voxels LV at full accuracy, %.0f in the fast pass", frame,
                     screen.full[frame][LV].sum(), screen.fast[frame][LV].sum() if frame in screen.fast else -1)
        prediction = _export(predictor, probabilities, props, with_probabilities, missing_slices)
        masks[frame] = prediction
        lv[frame], rv[frame] = _volumes(prediction.label, voxel_ml)
        full.append(frame)
        # a frame the screen ruled out whose patched volume still beat ED or ES is refined all the same: the
        # record names it once, as full accuracy (its screened slices no longer describe its mask)
        screen.screened.discard(frame)
        screen.exact.pop(frame, None)
    ed, es = find_ed_es(lv, rv, excluded=blank)[:2] if _ed_es_findable(lv, rv, content) else (None, None)
    if blank:
        notes.append(f"frame(s) {blank} have no image content: not taken for ED or ES")
    done = [m for m in masks if m is not None]
    result = CinePrediction([m.label.astype(np.uint8, copy=False) for m in done], [m.probabilities for m in done],
                            ed, es, full, lv.tolist(), rv.tolist(), fast_lv, uncertainty, notes,
                            {"fast_pass_s": fast_pass_s, "screen_s": screen.seconds,
                             "total_s": time.perf_counter() - start},
                            [list(w) for w in window] if window is not None else None, sorted(screen.screened),
                            screen.slices())
    logger.info("fast cine path: %d frames, ED %s, ES %s, full accuracy on frame(s) %s in %.1f s", n, ed, es,
                sorted(full), result.seconds["total_s"])
    return result


def _ed_es_findable(lv: np.ndarray, rv: np.ndarray, content: Sequence[int]) -> bool:
    """Whether :func:`find_ed_es` can choose among the ``content`` frames: two or more, a ventricle in one."""
    return len(content) >= 2 and bool(lv[content].any() or rv[content].any())


def _with_other_phase(units: Sequence[Unit], lv: np.ndarray, rv: np.ndarray, notes: list[str],
                      blank: Collection[int] = ()) -> "_PairedFrames":
    """For a model that takes the other cardiac phase (:mod:`autocmr.preprocessing.other_phase`): each frame's
    input with the fast pass's ES frame in the other phase's channels when the frame lies nearer (around the
    cycle) to the fast pass's ED frame than to its ES frame, and with the ED frame otherwise. The fast pass
    itself runs without (each frame sees itself), since ED and ES are not known before it."""
    ed, es = find_ed_es(lv, rv, excluded=blank)[:2]
    notes.append(f"other phase: full-accuracy frames see the fast pass's ES frame {es} when nearer its ED frame "
                 f"{ed}, its ED frame otherwise")
    return _PairedFrames(units, ed, es, notes)


class _PairedFrames(Sequence[Unit]):
    """The frames with their partner phase, paired when first asked for: only the few frames predicted at full
    accuracy (and those the screen re-predicts) are, so a 30-frame cine does not hold 30 doubled inputs. A
    partner that does not lie on the frame's voxel grid (frames are cropped each to its own bounding box) is
    replaced by the frame itself, and ``notes`` says so."""

    def __init__(self, units: Sequence[Unit], ed: int, es: int, notes: list[str]) -> None:
        self.units, self.ed, self.es, self.notes = units, ed, es, notes
        self._paired: dict[int, Unit] = {}

    def partner_of(self, frame: int) -> int:
        n = len(self.units)
        return self.es if cyclic_distance(frame, self.ed, n) <= cyclic_distance(frame, self.es, n) else self.ed

    def __len__(self) -> int:
        return len(self.units)

    def __getitem__(self, frame):  # type: ignore[override]  # int frames only
        frame = range(len(self.units))[frame]  # negative indices and bounds as a list's
        if frame not in self._paired:
            pre, props = self.units[frame]
            partner = self.partner_of(frame)
            paired, problem = pair_aligned(pre, props, *self.units[partner])
            if problem:
                self.notes.append(f"other phase: frame {frame} predicted with itself in the place of frame "
                                  f"{partner}: {problem}")
            self._paired[frame] = (paired, props)
        return self._paired[frame]


def _fast_pass_is_full_accuracy(predictor: Predictor, options: CineOptions) -> bool:
    """True when the predictor itself runs no more networks, mirrorings or tiles than the fast pass, in the
    same precision."""
    return (not predictor.mirror_axes and len(predictor.networks) <= options.fast_folds
            and predictor.step >= options.fast_step
            and predictor.precision == options.resolved_fast_precision(predictor.device))


Screen = Callable[[int, str, int, int, int], bool]  # (frame, "ED"/"ES", ed, es, curve label) -> ruled out


Ties = Callable[[int, int, int, Collection[int]], "list[tuple[int, str]] | None"]  # (ed, es, label, excluded)


def _frames_to_refine(lv: np.ndarray, rv: np.ndarray, full: list[int], options: CineOptions,
                      notes: list[str], screen: Screen | None = None, ties: Ties | None = None,
                      blank: Collection[int] = ()) -> Iterator[int]:
    """Yield frames to predict at full accuracy until ED and ES are settled (see the module docstring).

    ``lv``, ``rv`` and ``full`` are updated by the caller between two frames (a generator keeps the loop
    readable: each decision sees the volumes of the frames refined so far). ``screen`` (steps 4 and 5 of the
    module doc) says whether a near tie, or a fast-pass frame that beats the refined ED or ES, is ruled out
    without refining it; ruled-out frames are not candidates again, and no frame is screened twice. ``ties``
    picks the near ties from slice-aware bounds (:meth:`SliceScreen.near_ties`); without it, or when it returns
    None, the whole-volume ratios do (:func:`_near_ties`). ``blank`` frames (no image content) are never ED,
    ES or a near tie.
    """
    content = np.ones(lv.size, bool)
    content[list(blank)] = False
    if content.sum() < 2:
        notes.append("fewer than 2 frames with image content: every frame predicted at full accuracy")
        yield from range(lv.size)
        return
    if not (lv[content].any() or rv[content].any()):
        notes.append("the fast pass found no ventricle in any frame: every frame predicted at full accuracy")
        yield from range(lv.size)
        return
    label = LV if lv[content].any() else RV
    fast = (lv if label == LV else rv).copy()  # the curve find_ed_es decides on, as the fast pass saw it
    driver = lv if label == LV else rv  # the same array, updated by the caller
    limit = 2 + options.max_extra_frames
    ruled_out: set[int] = set(blank)
    challenged: set[int] = set()  # frames screened at step 5 (each once)
    while True:
        if not driver[content].any():  # full accuracy erased all the fast pass saw (noise, not a heart): the full path
            notes.append(f"full accuracy found no {'LV' if label == LV else 'RV'} where the fast pass did: every "
                         "frame predicted at full accuracy")
            yield from [t for t in range(driver.size) if t not in full]
            return
        ed, es, _ = find_ed_es(lv, rv, excluded=blank)
        todo = [f for f in dict.fromkeys((ed, es)) if f not in full]
        if todo and full and screen is not None:
            # a fast-pass frame beats the refined ED or ES (step 5): screened like a near tie first; one it
            # rules out now has its screened slices at full accuracy in the curve, which is looked at again
            refined_ed, refined_es = max(full, key=lambda t: driver[t]), min(full, key=lambda t: driver[t])
            challengers = [t for t in todo if t not in ruled_out | challenged]
            challenged.update(challengers)
            out = {t for t in challengers
                   if screen(t, "ED" if t == ed else "ES", refined_ed, refined_es, label)}
            ruled_out |= out
            if out:
                continue
        if not todo:
            candidates = ties(ed, es, label, ruled_out) if ties is not None else None
            if candidates is not None:
                candidates = [(t, side) for t, side in candidates if t not in full]
            else:
                candidates = _near_ties(fast, driver, full, ed, es, options.tie_margin, options.tie_tolerance,
                                        ruled_out)
            if screen is not None and candidates:
                out = {t for t, side in candidates if screen(t, side, ed, es, label)}
                ruled_out |= out
                candidates = [(t, side) for t, side in candidates if t not in out]
                if out and not candidates:
                    continue  # the next candidates, if any
            todo = [t for t, _ in candidates]
        if not todo:
            return
        if len(full) + len(todo) > limit and ed in full and es in full:  # near ties only: they may stay fast
            notes.append(f"ED/ES not settled after {len(full)} full-accuracy frames: frames {todo} stay fast-pass "
                         "only although they are within the fast pass's error of ED or ES")
            return
        for frame in todo:
            yield frame


def _near_ties(fast: np.ndarray, curve: np.ndarray, full: list[int], ed: int, es: int, margin: float,
               tolerance: float, excluded: Collection[int] = ()) -> list[tuple[int, str]]:
    """The fast-pass frame most likely to beat ED at full accuracy, and the one for ES, if they could do so
    by more than ``tolerance`` (a fraction of ED's or ES's volume), each with the phase it could take.
    Neither refined frames (``full``) nor ``excluded`` ones are candidates.

    A frame's full-accuracy volume is taken to be its fast volume times a ratio full/fast within the range
    seen on the frames refined so far, widened by ``margin``. A shared bias of the fast pass (its masks a few
    percent smaller everywhere) moves that range, not its width, so it adds no frames; disagreement that
    differs from frame to frame widens it.
    """
    ratios = [curve[f] / fast[f] for f in full if fast[f] > 0]
    low, high = (min(ratios), max(ratios)) if ratios else (1.0, 1.0)
    low, high = low * (1 - margin), high * (1 + margin)
    fast_only = [t for t in range(curve.size) if t not in full and t not in excluded]
    above = sorted((t for t in fast_only if fast[t] * high > curve[ed] * (1 + tolerance)), key=lambda t: -fast[t])
    below = sorted((t for t in fast_only if fast[t] * low < curve[es] * (1 - tolerance)), key=lambda t: fast[t])
    picked = [(t, "ED") for t in above[:1]] + [(t, "ES") for t in below[:1] if t not in above[:1]]
    return picked


def heart_window(labels: Sequence[np.ndarray], patch: Sequence[int], margin: Sequence[int]) -> Window | None:
    """The in-plane window (y and x ranges) the fast pass predicts: the bounding box of the largest connected
    foreground component of each label map (z, y, x), joined over the maps, widened by ``margin`` voxels per
    side, at least ``patch`` wide, centred on the box and moved inside the image. None when no map has
    foreground. A window as wide as the image on an axis spans all of it."""
    boxes = []
    for label in labels:
        heart = largest_component(label > 0)
        if not heart.any():
            continue
        ys, xs = np.nonzero(heart.any(axis=0))
        boxes.append((ys.min(), ys.max() + 1, xs.min(), xs.max() + 1))
    if not boxes:
        return None
    b = np.array(boxes)
    extents = ((int(b[:, 0].min()), int(b[:, 1].max())), (int(b[:, 2].min()), int(b[:, 3].max())))
    window = []
    for (lo, hi), size, p, m in zip(extents, labels[0].shape[-2:], patch[-2:], margin[-2:]):
        width = min(max(hi - lo + 2 * m, p), size)
        start = int(round((lo + hi - width) / 2))
        start = max(0, min(start, size - width))
        window.append((start, start + width))
    return window[0], window[1]


def _locate_heart(predictor: Predictor, units: Sequence[Unit], options: CineOptions,
                  blank: Collection[int] = ()) -> Window | None:
    """:func:`heart_window` of a whole-slice fast pass over the first and the middle frame with image content
    (None: no heart)."""
    content = [t for t in range(len(units)) if t not in set(blank)] or list(range(len(units)))
    frames = sorted({content[0], content[len(content) // 2]})
    shape = units[content[0]][0].shape  # a blank frame keeps its whole size (nothing to crop): not compared
    if any(units[t][0].shape != shape for t in content):
        return None  # frames cropped differently: one window cannot serve them all
    labels = [class_argmax(_fast_probabilities(predictor, units[t][0], options, None)) for t in frames]
    margin = [int(np.ceil(HEART_MARGIN_MM / s)) for s in predictor.config.spacing[-2:]]
    return heart_window(labels, predictor.config.patch_size, margin)


def _fast_probabilities(predictor: Predictor, data: np.ndarray, options: CineOptions,
                        window: Window | None = None) -> torch.Tensor:
    """Softmax probabilities (C, z, y, x) of the first ``fast_folds`` networks, no mirroring; with a
    ``window``, predicted inside it only and background (probability 1) outside."""
    x = crop_to_window(torch.from_numpy(np.ascontiguousarray(predictor.network_input(data), dtype=np.float32)), window)
    networks = predictor.networks[:options.fast_folds]
    precision = options.resolved_fast_precision(predictor.device)
    total = None
    for network in networks:
        logits = predict_logits(network, x, patch_size=predictor.config.patch_size,
                                num_classes=predictor.model.num_classes(), step=options.fast_step, mirror_axes=(),
                                tile_batch=predictor.tile_batch, device=predictor.device,
                                context_slices=predictor.config.context_slices, precision=precision)
        probs = torch.softmax(logits, dim=0)
        total = probs if total is None else total + probs
    return embed_in_background(total / len(networks), data.shape[1:], window)


def _export(predictor: Predictor, probabilities: torch.Tensor, props: dict[str, Any],
            with_probabilities: bool, missing_slices: Collection[int] = ()) -> Prediction:
    prediction = predictor.export(probabilities.float().cpu(), props, return_probabilities=with_probabilities)
    probs = None if prediction.probabilities is None else prediction.probabilities.astype(np.float16)  # as stored
    clear_slices(prediction.label, probs, missing_slices)
    return Prediction(prediction.label, probs)


def _curves(masks: Sequence[Prediction | None], voxel_ml: float) -> tuple[np.ndarray, np.ndarray]:
    """LV and RV volume curves (mL); frames not predicted yet count 0."""
    volumes = np.array([_volumes(m.label, voxel_ml) if m is not None else (0.0, 0.0) for m in masks], dtype=float)
    return volumes[:, 0].copy(), volumes[:, 1].copy()


def _volumes(label: np.ndarray, voxel_ml: float) -> tuple[float, float]:
    counts = np.bincount(label.ravel(), minlength=max(LV, RV) + 1)
    return float(counts[LV]) * voxel_ml, float(counts[RV]) * voxel_ml


__all__ = ["CINE_MODES", "FAST_REGIONS", "CineOptions", "CinePrediction", "heart_window", "predict_cine_fast"]
