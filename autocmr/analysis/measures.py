"""Clinical measures of one subject from its predicted masks: the volume curve, ED/ES, volumes, EF, mass.

The volume and mass rules are those of :mod:`autocmr.evaluation.clinical` (voxel counting, myocardium at ED
x 1.05 g/mL); this module decides which frames are ED and ES and what can be computed when a phase is
missing: a subject with only ED gets LVEDV, RVEDV and LVM, one with only ES gets LVESV and RVESV, and the
rest stays NaN with a note, never an invented number.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np

from autocmr.evaluation.clinical import ED, ES, MEASURES, STRUCTURES, measures_from_volumes, structure_volumes
from autocmr.evaluation.phases import find_ed_es

# how a frame was predicted (``volumes.csv``'s ``prediction``): a cine's fast path predicts most frames in a
# cheaper pass (autocmr.inference.fast_cine), good for the volume curve, not for per-frame measures
FULL_ACCURACY, FAST_PASS, SCREENED = "full accuracy", "fast pass", "fast pass, screened slices at full accuracy"

NAN = float("nan")
ML_PER_L = 1000.0
SECONDS_PER_MINUTE = 60.0


@dataclass(frozen=True)
class FrameMask:
    """One 3D predicted mask in canonical order (through-plane axis first), with what is known about it.

    Args:
        label: uint8 (z, y, x), autocmr labels.
        spacing: voxel size in mm, (z, y, x).
        case: the case (mask) it comes from.
        frame: frame index within a cine, or the frame number a name gave (``_frame12``); None if unknown.
        phase: ``ED``/``ES`` when known before the analysis (3D cases), else None.
        uncertainty: the ensemble disagreement score of this frame (NaN when not computed).
        prediction: how it was predicted (full accuracy, or a cine's fast pass: :func:`frame_predictions`).
    """

    label: np.ndarray
    spacing: tuple[float, float, float]
    case: str
    frame: int | None = None
    phase: str | None = None
    uncertainty: float = NAN
    prediction: str = FULL_ACCURACY
    blank: bool = False  # the frame's image has no content (a zero-padded frame): never ED or ES
    structures: tuple[str, ...] = STRUCTURES  # what the model segments: the others' volumes are NaN, not 0 mL

    def volumes(self) -> dict[str, float]:
        volumes = structure_volumes(self.label, self.spacing)
        return {name: (value if name in self.structures else NAN) for name, value in volumes.items()}


@dataclass
class SubjectMeasures:
    """Measures of one subject: ``measures`` has every key of :data:`MEASURES` (NaN when not computable)."""

    subject: str
    ed: FrameMask | None
    es: FrameMask | None
    measures: dict[str, float]
    volume_rows: list[dict[str, object]]  # one per frame: case, frame, phase, LV/MYO/RV volumes (mL)
    notes: list[str] = field(default_factory=list)
    is_cine: bool = False
    ed_es_notes: tuple[str, ...] = ()  # doubts about the ED/ES choice of a cine (see find_ed_es)
    blank_frames: tuple[int, ...] = ()  # a cine's frames without image content (left out of ED/ES and QC curves)

    @property
    def uncertainty(self) -> float:
        """The larger disagreement of the ED and ES masks (the ones the measures come from)."""
        values = [f.uncertainty for f in (self.ed, self.es) if f is not None and math.isfinite(f.uncertainty)]
        return max(values) if values else NAN


def measure_cine(subject: str, frames: Sequence[FrameMask]) -> SubjectMeasures:
    """ED/ES from the LV volume curve (checked against the RV curve), then the measures at those frames."""
    if len(frames) < 2:
        raise ValueError(f"{subject}: a cine needs at least 2 frames, got {len(frames)}")
    volumes = [f.volumes() for f in frames]
    blank = [i for i, f in enumerate(frames) if f.blank]
    content = [v for f, v in zip(frames, volumes) if not f.blank]
    if len(content) < 2:
        return replace(volumes_only(subject, frames), is_cine=True, blank_frames=tuple(blank),
                       notes=[f"frame(s) {blank} have no image content, {len(content)} frame(s) left: no ED/ES, "
                              "no measures"])
    if not any(v["LV"] > 0 or v["RV"] > 0 for v in content):  # nothing to find ED/ES on; QC says what is missing
        return replace(volumes_only(subject, frames), is_cine=True,
                       notes=["no LV or RV in any frame: no ED/ES, no measures"])
    # a structure the model does not segment has no curve: the LV's (or, without one, the RV's) decides alone
    lv_curve = [v["LV"] if math.isfinite(v["LV"]) else 0.0 for v in volumes]
    rv_curve = [v["RV"] for v in volumes] if all(math.isfinite(v["RV"]) for v in volumes) else None
    # a frame with image content but no LV where the others have one (a failed frame, or padding with noise
    # that is not exactly constant) would be ES at 0 mL and an EF of 100 %: left out, and said as a doubt
    empty = [i for i, v in enumerate(lv_curve) if v == 0 and i not in blank] if any(lv_curve) else []
    if len(frames) - len(blank) - len(empty) < 2:
        empty = []
    ed_index, es_index, notes = find_ed_es(lv_curve, rv_curve, excluded=blank, without_lv=empty)
    ed, es = frames[ed_index], frames[es_index]
    rows = [_volume_row(f, v, ED if i == ed_index else ES if i == es_index else "")
            for i, (f, v) in enumerate(zip(frames, volumes))]
    # leaving out frames without content is no doubt about the ED/ES choice (QC's ed_es_doubtful): a plain note
    doubts = tuple(n for n in notes if not (blank and n.startswith(f"frame(s) {blank} have no image content")))
    return SubjectMeasures(subject, ed, es, measures_from_volumes(volumes[ed_index], volumes[es_index]), rows,
                           list(notes), is_cine=True, ed_es_notes=doubts, blank_frames=tuple(blank))


def measure_phases(subject: str, ed: FrameMask | None, es: FrameMask | None) -> SubjectMeasures:
    """Measures from separate ED and ES masks; a missing phase leaves the measures that need it NaN."""
    if ed is None and es is None:
        raise ValueError(f"{subject}: neither an ED nor an ES mask")
    ed_volumes = ed.volumes() if ed is not None else {}
    es_volumes = es.volumes() if es is not None else {}
    measures = measures_from_volumes(ed_volumes, es_volumes)
    rows = [_volume_row(f, v, p) for f, v, p in ((ed, ed_volumes, ED), (es, es_volumes, ES)) if f is not None]
    notes = []
    if ed is None or es is None:
        have, missing = (ED, ES) if es is None else (ES, ED)
        absent = [m for m in MEASURES if math.isnan(measures[m])]
        notes.append(f"only {have} given: {', '.join(absent)} need {missing} and are not computed")
    return SubjectMeasures(subject, ed, es, measures, rows, notes)


def volumes_only(subject: str, frames: Sequence[FrameMask]) -> SubjectMeasures:
    """Masks whose phase is unknown: their volumes, no measures."""
    rows = [_volume_row(f, f.volumes(), "") for f in frames]
    return SubjectMeasures(subject, None, None, {m: NAN for m in MEASURES}, rows)


def cardiac_output_l_per_min(stroke_volume_ml: float, heart_rate_bpm: float | None) -> float:
    """Cardiac output (L/min) = stroke volume x heart rate; NaN when either is unknown."""
    if heart_rate_bpm is None or not math.isfinite(heart_rate_bpm) or not math.isfinite(stroke_volume_ml):
        return NAN
    return stroke_volume_ml * heart_rate_bpm / ML_PER_L


def _volume_row(frame: FrameMask, volumes: dict[str, float], phase: str) -> dict[str, object]:
    row: dict[str, object] = {"case": frame.case, "frame": frame.frame, "phase": phase}
    row.update({name: volumes.get(name, NAN) for name in STRUCTURES})
    row["uncertainty"] = frame.uncertainty
    row["prediction"] = frame.prediction
    return row


__all__ = ["FAST_PASS", "FULL_ACCURACY", "SCREENED", "FrameMask", "SubjectMeasures", "cardiac_output_l_per_min",
           "measure_cine", "measure_phases", "volumes_only"]
