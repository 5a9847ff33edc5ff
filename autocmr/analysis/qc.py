"""Quality control of one subject's segmentation: anatomical rules, plausible measures, ensemble uncertainty.

Each rule that fails adds a flag (a name from :data:`QC_FLAGS`, whose text is what the README and the report
say it means); a subject with any flag gets ``review = True``. Rules look at the ED and ES masks, in
canonical order (through-plane axis first), and, for a cine, at the LV volume curve. Thresholds are the
fields of :class:`QcThresholds`, so a site can tune them; the defaults were chosen so that the manual
segmentations of the 80 ACDC training patients raise no anatomical flag (tested) and are reported against
deliberately broken cases in ``benchmarks/qc_benchmark.py``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy import ndimage

from autocmr.analysis.measures import SubjectMeasures
from autocmr.dataset.labels import LV, MYO, RV
from autocmr.evaluation.clinical import STRUCTURES
from autocmr.evaluation.phases import MAX_RV_LAG_FRACTION, MIN_RELATIVE_STROKE, MIN_RV_LAG_FRAMES

QC_FLAGS: dict[str, str] = {
    "missing_structure": "LV cavity, myocardium or RV cavity absent from the ED or ES mask",
    "too_few_slices": "a structure spans fewer contiguous slices than a heart can (LV/MYO < min_lv_length_mm, "
                      "RV < min_rv_length_mm through-plane)",
    "lv_slice_gap": "a slice without LV cavity lies between slices with LV cavity",
    "irregular_lv_profile": "the LV cavity area does not rise to one peak and fall again from base to apex "
                            "(slices out of order, or parts of the LV missed)",
    "myocardium_open": "on mid-ventricular slices the myocardium does not enclose the LV cavity",
    "rv_not_beside_lv": "the RV cavity does not touch the LV myocardium anywhere (wrong structure or wrong place)",
    "fragmented": "a structure is split into several sizeable 3D pieces",
    "ef_out_of_range": "LVEF or RVEF outside the physiological range",
    "esv_not_below_edv": "end-systolic volume not smaller than end-diastolic volume (LV or RV)",
    "implausible_size": "LVEDV, RVEDV or LV mass outside the range seen in adult hearts",
    "rough_volume_curve": "the LV volume curve of the cine jumps from frame to frame",
    "ed_es_doubtful": "ED/ES from the LV curve disagree with the RV curve, the LV volume hardly changes, or a "
                      "frame without LV was left out",
    "high_uncertainty": "the ensemble members and mirrorings disagree on the segmentation",
    "ambiguous_phase": "several cases of the subject claim the same phase (ED or ES): the measures needing it "
                       "are not computed",
    "analysis_failed": "the case could not be predicted or analysed (reason in notes)",
}


# A volume curve of fewer frames cannot be judged smooth or rough (see _check_curve).
MIN_FRAMES_FOR_ROUGHNESS = 5


@dataclass(frozen=True)
class QcThresholds:
    """Limits of the QC rules (units in the names)."""

    min_lv_length_mm: float = 25.0  # LV cavity at ES in a small adult heart: ~4 cm long axis
    min_rv_length_mm: float = 15.0
    max_profile_dip: float = 0.5  # LV area may dip by this share of its peak between rise and fall (ACDC ES: 0.36)
    mid_slices_fraction: float = 1 / 3  # the middle third of the LV slices counts as mid-ventricular
    min_myocardial_enclosure: float = 0.85  # fraction of the LV cavity's border that is myocardium (mid)
    max_rv_myocardium_gap_mm: float = 5.0  # septum: RV cavity and LV myocardium touch
    min_component_fraction: float = 0.05  # pieces smaller than this share of a structure are ignored
    ef_range_percent: tuple[float, float] = (5.0, 90.0)
    edv_range_ml: tuple[float, float] = (20.0, 500.0)  # LVEDV and RVEDV (ACDC: 43-470 mL LV)
    lvm_range_g: tuple[float, float] = (20.0, 400.0)
    max_curve_roughness: float = 0.35  # largest deviation from neighbours' mean, as a fraction of the LV SV
    max_uncertainty: float = 0.14  # disagreement score above which a case is sent for review (QC benchmark, README)


def describe_flags(t: QcThresholds | None = None) -> dict[str, str]:
    """What each flag means with the limits in force (for the report a person reads); :data:`QC_FLAGS` says
    the same without numbers."""
    t = t or QcThresholds()

    def _percent(fraction: float) -> str:
        return f"{fraction * 100:.0f} %"

    texts = dict(QC_FLAGS)
    texts.update({
        "too_few_slices": f"the longest run of contiguous slices with LV cavity, or with myocardium, spans less "
                          f"than {t.min_lv_length_mm:g} mm, or with RV less than {t.min_rv_length_mm:g} mm",
        "irregular_lv_profile": f"the LV cavity area along the slices dips by more than {_percent(t.max_profile_dip)} "
                                "of its peak between its rise and fall (slices out of order, or parts of the LV "
                                "missed)",
        "myocardium_open": f"on the middle {_percent(t.mid_slices_fraction)} of the LV slices, less than "
                           f"{_percent(t.min_myocardial_enclosure)} of the LV cavity's outer border is myocardium",
        "rv_not_beside_lv": f"the RV cavity is more than {t.max_rv_myocardium_gap_mm:g} mm from the LV myocardium "
                            "everywhere (it should touch the septum)",
        "fragmented": f"a structure has several 3D pieces of at least {_percent(t.min_component_fraction)} of its "
                      "volume",
        "ef_out_of_range": f"LVEF or RVEF outside {t.ef_range_percent[0]:g}-{t.ef_range_percent[1]:g} %",
        "implausible_size": f"LVEDV or RVEDV outside {t.edv_range_ml[0]:g}-{t.edv_range_ml[1]:g} mL, or LV mass "
                            f"outside {t.lvm_range_g[0]:g}-{t.lvm_range_g[1]:g} g",
        "rough_volume_curve": f"a frame of the cine's LV curve differs from the mean of its neighbours by more "
                              f"than {_percent(t.max_curve_roughness)} of the stroke volume",
        "high_uncertainty": f"the ensemble members and mirrorings disagree: uncertainty score above "
                            f"{t.max_uncertainty:g}",
        "ed_es_doubtful": f"the RV curve's ED or ES is more than max({MIN_RV_LAG_FRAMES} frames, "
                          f"{_percent(MAX_RV_LAG_FRACTION)} of the cycle) from the LV's, or the LV volume changes by "
                          f"less than {_percent(MIN_RELATIVE_STROKE)} of its largest volume, or a frame with image "
                          "content but no LV (a failed prediction?) was left out of the choice",
    })
    return texts


@dataclass
class QcResult:
    flags: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def review(self) -> bool:
        return bool(self.flags)

    def add(self, flag: str) -> None:
        if flag not in QC_FLAGS:
            raise ValueError(f"unknown QC flag {flag!r}; valid: {sorted(QC_FLAGS)}")
        if flag not in self.flags:
            self.flags.append(flag)


def check_subject(result: SubjectMeasures, thresholds: QcThresholds | None = None) -> QcResult:
    """Every QC rule on one subject's measures, ED/ES masks and volume curve."""
    t = thresholds or QcThresholds()
    qc = QcResult()
    for phase, frame in (("ED", result.ed), ("ES", result.es)):
        if frame is not None:
            _check_mask(frame.label, frame.spacing, t, qc, phase, frame.structures)
    _check_measures(result.measures, t, qc)
    if result.is_cine:
        _check_curve(result, t, qc)
    uncertainty = result.uncertainty
    qc.metrics["uncertainty"] = uncertainty
    if math.isfinite(uncertainty) and uncertainty > t.max_uncertainty:
        qc.add("high_uncertainty")
    return qc


def _check_mask(label: np.ndarray, spacing: Sequence[float], t: QcThresholds, qc: QcResult, phase: str,
                structures: Sequence[str] = STRUCTURES) -> None:
    # only what the model segments is expected (a model fine-tuned on LV and myocardium draws no RV)
    present = {name: label == value for name, value in zip(STRUCTURES, (LV, MYO, RV)) if name in structures}
    if not all(mask.any() for mask in present.values()):
        qc.add("missing_structure")
    for name, mask in present.items():
        if not mask.any():
            continue
        run_mm = _longest_run(mask.any(axis=(1, 2))) * float(spacing[0])
        qc.metrics[f"{name}_length_mm_{phase}"] = run_mm
        if run_mm < (t.min_rv_length_mm if name == "RV" else t.min_lv_length_mm):
            qc.add("too_few_slices")
        if _sizeable_components(mask, t.min_component_fraction) > 1:
            qc.add("fragmented")
    lv = present.get("LV")
    if lv is None or not lv.any():
        return
    areas = lv.sum(axis=(1, 2)).astype(float)
    occupied = np.flatnonzero(areas)
    if occupied.size != occupied[-1] - occupied[0] + 1:
        qc.add("lv_slice_gap")
    qc.metrics[f"lv_profile_dip_{phase}"] = dip = _profile_dip(areas[occupied[0]:occupied[-1] + 1])
    if dip > t.max_profile_dip:
        qc.add("irregular_lv_profile")
    if "MYO" in present:
        enclosure = _myocardial_enclosure(label, occupied, t.mid_slices_fraction)
        qc.metrics[f"myocardial_enclosure_{phase}"] = enclosure
        if enclosure < t.min_myocardial_enclosure:
            qc.add("myocardium_open")
    if "RV" in present and "MYO" in present and present["RV"].any() and present["MYO"].any():
        gap = _gap_mm(present["RV"], present["MYO"], spacing)
        qc.metrics[f"rv_myocardium_gap_mm_{phase}"] = gap
        if gap > t.max_rv_myocardium_gap_mm:
            qc.add("rv_not_beside_lv")


def _longest_run(flags: np.ndarray) -> int:
    best = run = 0
    for value in flags:
        run = run + 1 if value else 0
        best = max(best, run)
    return best


def _sizeable_components(mask: np.ndarray, min_fraction: float) -> int:
    components, n = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    if n <= 1:
        return n
    sizes = np.bincount(components.ravel())[1:]
    return int((sizes >= min_fraction * sizes.sum()).sum())


def _profile_dip(areas: np.ndarray) -> float:
    """Largest drop below the running maximum that is followed by a rise again, as a fraction of the peak:
    a base-to-apex (or apex-to-base) profile rises to one peak and falls, so it has none."""
    peak = areas.max()
    if peak <= 0:
        return 0.0
    # a slice's dip: how far it lies below the lower of the highest slices on its two sides
    from_start = np.maximum.accumulate(areas)
    from_end = np.maximum.accumulate(areas[::-1])[::-1]
    return float((np.minimum(from_start, from_end) - areas).max()) / peak


def _myocardial_enclosure(label: np.ndarray, lv_slices: np.ndarray, mid_fraction: float) -> float:
    """Mean over mid-ventricular slices of the share of the LV cavity's outer border that is myocardium."""
    n = lv_slices.size
    skip = int(round(n * (1 - mid_fraction) / 2))
    mid = lv_slices[skip:n - skip] if n - 2 * skip >= 1 else lv_slices[n // 2:n // 2 + 1]
    shares = []
    for k in mid:
        cavity = label[k] == LV
        border = ndimage.binary_dilation(cavity) & ~cavity
        if border.any():
            shares.append(float((label[k][border] == MYO).mean()))
    return float(np.mean(shares)) if shares else 0.0


def _gap_mm(a: np.ndarray, b: np.ndarray, spacing: Sequence[float]) -> float:
    """Smallest distance (mm) from a voxel of ``a`` to a voxel of ``b``, within their joint bounding box."""
    box = ndimage.find_objects((a | b).astype(np.uint8))[0]
    distance = ndimage.distance_transform_edt(~b[box], sampling=spacing)
    return float(distance[a[box]].min())


def _check_measures(measures: dict[str, float], t: QcThresholds, qc: QcResult) -> None:
    def outside(value: float, limits: tuple[float, float]) -> bool:
        return math.isfinite(value) and not limits[0] <= value <= limits[1]

    if outside(measures["LVEF"], t.ef_range_percent) or outside(measures["RVEF"], t.ef_range_percent):
        qc.add("ef_out_of_range")
    for side in ("LV", "RV"):
        edv, esv = measures[f"{side}EDV"], measures[f"{side}ESV"]
        if math.isfinite(edv) and math.isfinite(esv) and edv > 0 and esv >= edv:  # both 0: missing_structure
            qc.add("esv_not_below_edv")
    if any(outside(measures[m], t.edv_range_ml) for m in ("LVEDV", "RVEDV")) or outside(measures["LVM"],
                                                                                          t.lvm_range_g):
        qc.add("implausible_size")


def _check_curve(result: SubjectMeasures, t: QcThresholds, qc: QcResult) -> None:
    if result.ed_es_notes:
        qc.add("ed_es_doubtful")
    blank = set(result.blank_frames)  # frames without image content: their empty masks are no roughness
    curve = np.array([float(row["LV"]) for i, row in enumerate(result.volume_rows)  # type: ignore[arg-type]
                      if i not in blank])
    if curve.size < MIN_FRAMES_FOR_ROUGHNESS:
        return  # with 4 frames or fewer any curve is 'rough': each frame is at least half a stroke from the mean
    stroke = max(float(np.ptp(curve)), 1e-6)
    neighbours = (np.roll(curve, 1) + np.roll(curve, -1)) / 2  # the cine is a cycle: frames wrap around
    roughness = float(np.abs(curve - neighbours).max() / stroke)
    qc.metrics["lv_curve_roughness"] = roughness
    if roughness > t.max_curve_roughness:
        qc.add("rough_volume_curve")


__all__ = ["QC_FLAGS", "QcResult", "QcThresholds", "check_subject", "describe_flags"]
