"""Clinical measures of cardiac function from label maps: ventricular volumes, ejection fractions, LV mass.

Structures are found by class name: ``LV`` (LV cavity), ``MYO`` (LV myocardium), ``RV`` (RV cavity), the
autocmr convention (:data:`autocmr.dataset.labels.AUTOCMR_LABELS`). Volumes are voxel counts x voxel volume
(summation of discs, no interpolation between slices), in mL; EF in %; mass in g.

End-diastole (ED) and end-systole (ES) come from metadata (a ``cases.csv`` table with ``case_id``,
``subject`` and ``phase`` in {ED, ES}; without one, case ids ending in ``_ED`` / ``_ES`` are recognised), or,
for a 4D cine mask, from the LV cavity volume curve: ED = largest, ES = smallest volume. The predicted
curve chooses the predicted ED/ES frames, as a fully automatic analysis would.
"""
from __future__ import annotations

import functools
import logging
import re
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from autocmr.dataset.labels import AUTOCMR_LABELS
from autocmr.dataset.naming import FRAME_IN_NAME, PHASE_IN_NAME
from autocmr.evaluation.metrics import VOL_PRED, VOL_REF, voxel_volume_ml
from autocmr.io.orientation import through_plane_axis

logger = logging.getLogger(__name__)

# Myocardial tissue density, g/mL (Vinnakota & Bassingthwaighte 2004; the value used by SCMR guidelines).
MYOCARDIAL_DENSITY_G_PER_ML = 1.05
STRUCTURES = ("LV", "MYO", "RV")
MEASURE_UNITS: dict[str, str] = {
    "LVEDV": "mL", "LVESV": "mL", "LVSV": "mL", "LVEF": "%", "LVM": "g",
    "RVEDV": "mL", "RVESV": "mL", "RVSV": "mL", "RVEF": "%",
}
MEASURES = tuple(MEASURE_UNITS)
ED, ES = "ED", "ES"
# Case ids such as ``patient001_ED`` or ``subject003-es`` carry subject and phase when no metadata is given.
_PHASE_IN_ID = PHASE_IN_NAME  # one naming rule with the dataset's default subjects
# Phase names in case tables besides ED/ES (any case, "-", "_" or spaces between words).
_PHASE_SYNONYMS = {ED: ("ED", "END DIASTOLE", "END DIASTOLIC", "DIASTOLE", "DIASTOLIC"),
                   ES: ("ES", "END SYSTOLE", "END SYSTOLIC", "SYSTOLE", "SYSTOLIC")}
# A reference structure on fewer slices than this is no whole ventricle (a single-slice image, a study
# annotated on a few slices only): its volumes are scored but the subject's note says so.
MIN_REFERENCE_SLICES = 3
# Column of the per-case x class rows: slices of the stack on which the reference holds the class.
REF_SLICES = "ref_slices"
# The reference measures that a structure empty at ED or ES leaves undefined.
_MEASURES_OF = {"LV": ("LVEDV", "LVESV", "LVSV", "LVEF"), "MYO": ("LVM",), "RV": ("RVEDV", "RVESV", "RVSV", "RVEF")}


def normalise_phase(value: Any) -> Any:
    """``ED``/``ES`` for the usual ways of writing them (``ed``, ``End-Diastole``, ``systole``...); any other
    value is returned stripped, unchanged otherwise (NaN stays NaN)."""
    if not isinstance(value, str):
        return value
    words = " ".join(re.sub(r"[_\-]+", " ", value).upper().split())
    return next((phase for phase, names in _PHASE_SYNONYMS.items() if words in names), value.strip())


def warn_unknown_phases(table: pd.DataFrame, source: object) -> None:
    """Log the rows of a case table (indexed by case id) whose ``phase`` is neither ED nor ES in any usual
    spelling: their cases are paired by name alone, or not at all, so a typo would silently cost an EF."""
    if "phase" not in table.columns:
        return
    unknown = [(str(case), str(value).strip()) for case, value in table["phase"].items()
               if isinstance(value, str) and value.strip() and normalise_phase(value) not in (ED, ES)]
    if unknown:
        shown = ", ".join(f"{case}: {value!r}" for case, value in unknown[:5])
        logger.warning("%s: %d row(s) give a phase that is neither ED nor ES (%s%s): those cases are not paired "
                       "as ED/ES by the table (their names may still pair them)", source, len(unknown), shown,
                       ", ..." if len(unknown) > 5 else "")


# ACDC's frame naming, ``patient001_frame12``: the subject, and a frame number that Info.cfg makes ED or ES.
FRAME_IN_ID = FRAME_IN_NAME


def _ejection_fraction(edv: float, esv: float) -> float:
    # An empty (or missing) diastolic cavity has no defined ejection fraction.
    return 100.0 * (edv - esv) / edv if edv > 0 else float("nan")


def _stroke_volume(edv: float, esv: float) -> float:
    # Nor a stroke volume: 0 mL at ED minus the systolic cavity would report a negative one (QC flags the mask).
    return edv - esv if edv > 0 else float("nan")


def measures_from_volumes(ed: Mapping[str, float], es: Mapping[str, float]) -> dict[str, float]:
    """Clinical measures from structure volumes (mL) at ED and ES (keys ``LV``, ``MYO``, ``RV``).

    A structure missing from the mappings gives NaN for the measures that need it.
    """
    nan = float("nan")
    lv_ed, lv_es = float(ed.get("LV", nan)), float(es.get("LV", nan))
    rv_ed, rv_es = float(ed.get("RV", nan)), float(es.get("RV", nan))
    return {
        "LVEDV": lv_ed, "LVESV": lv_es,
        "LVSV": _stroke_volume(lv_ed, lv_es), "LVEF": _ejection_fraction(lv_ed, lv_es),
        "LVM": float(ed.get("MYO", nan)) * MYOCARDIAL_DENSITY_G_PER_ML,
        "RVEDV": rv_ed, "RVESV": rv_es,
        "RVSV": _stroke_volume(rv_ed, rv_es), "RVEF": _ejection_fraction(rv_ed, rv_es),
    }


def structure_volumes(mask: np.ndarray, spacing: Sequence[float], *,
                      labels: Mapping[str, int] | None = None) -> dict[str, float]:
    """Volumes (mL) of LV, MYO and RV in a 3D label map (``labels`` defaults to the autocmr convention)."""
    labels = AUTOCMR_LABELS if labels is None else labels
    mask = np.asarray(mask)
    if len(spacing) != mask.ndim:
        raise ValueError(f"spacing {tuple(spacing)} has {len(spacing)} values for a {mask.ndim}D mask")
    vv = voxel_volume_ml(spacing)
    return {name: float(np.count_nonzero(mask == labels[name])) * vv for name in STRUCTURES if name in labels}


def slices_with(mask: np.ndarray, spacing: Sequence[float]) -> int:
    """Slices holding ``mask`` along the through-plane axis (:func:`autocmr.io.orientation.through_plane_axis`:
    a single slice's axis, else the largest spacing); a 2D image is one slice."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim < 3:
        return int(mask.any())
    axis = through_plane_axis(mask.shape, spacing)
    others = tuple(a for a in range(mask.ndim) if a != axis)
    return int(np.count_nonzero(mask.any(axis=others)))


def clinical_measures(ed_mask: np.ndarray, es_mask: np.ndarray, spacing: Sequence[float], *,
                      labels: Mapping[str, int] | None = None) -> dict[str, float]:
    """LVEDV, LVESV, LVSV (mL), LVEF (%), LVM (g), RVEDV, RVESV, RVSV (mL), RVEF (%) of one subject.

    Args:
        ed_mask, es_mask: label maps (z, y, x) at end-diastole and end-systole.
        spacing: voxel size in mm, (z, y, x).
        labels: class name -> value; defaults to autocmr (1 LV, 2 MYO, 3 RV).
    """
    return measures_from_volumes(structure_volumes(ed_mask, spacing, labels=labels),
                                 structure_volumes(es_mask, spacing, labels=labels))


def ed_es_from_curve(lv_volumes: Sequence[float] | np.ndarray) -> tuple[int, int]:
    """Frame indices of ED (largest LV cavity volume) and ES (smallest); ties go to the first frame."""
    curve = np.asarray(lv_volumes, dtype=float)
    if curve.ndim != 1 or curve.size == 0:
        raise ValueError(f"LV volume curve must be a non-empty 1D sequence, got shape {curve.shape}")
    if not np.isfinite(curve).all():
        raise ValueError(f"LV volume curve has undefined values: {curve.tolist()}")
    return int(np.argmax(curve)), int(np.argmin(curve))


def subject_and_phase(case_id: str, metadata: pd.DataFrame | None) -> tuple[str | None, str | None]:
    """Subject and phase (``ED``/``ES``/other or None) of a case from metadata or, failing that, its id."""
    if metadata is not None and case_id in metadata.index and {"subject", "phase"} <= set(metadata.columns):
        subject, phase = metadata.at[case_id, "subject"], metadata.at[case_id, "phase"]
        if isinstance(phase, str) and phase.strip() and not pd.isna(subject) and str(subject).strip():
            return str(subject).strip(), normalise_phase(phase)  # "P1 " and "P1" are one patient
    match = _PHASE_IN_ID.match(case_id)
    if match:
        return match.group("subject"), match.group("phase").upper()
    return None, None


def _volume_lookup(volumes: pd.DataFrame) -> dict[str, dict[str, dict[str, float]]]:
    """case id -> {"ref": {structure: mL}, "pred": {...}, "slices": {structure: reference slices}} from
    per-case x class rows (``slices`` stays empty without a :data:`REF_SLICES` column)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    slices = volumes[REF_SLICES] if REF_SLICES in volumes.columns else pd.Series(pd.NA, index=volumes.index)
    columns = volumes[["case_id", "class", VOL_REF, VOL_PRED]].assign(slices=slices)
    for case_id, name, v_ref, v_pred, n in columns.itertuples(index=False):
        entry = out.setdefault(str(case_id), {"ref": {}, "pred": {}, "slices": {}})
        if name in STRUCTURES:
            entry["ref"][name], entry["pred"][name] = float(v_ref), float(v_pred)
            if not pd.isna(n):
                entry["slices"][name] = int(n)
    return out


FLAT_NOTE = "2D images: no volumes, so no measures (a pixel has an area, and a 2D file no slice thickness)"


def _few_slices_note(ed: Mapping[str, int], es: Mapping[str, int]) -> str:
    """The note for reference structures present on fewer than :data:`MIN_REFERENCE_SLICES` slices."""
    said = []
    for structure in STRUCTURES:
        phases = [ED] if structure == "MYO" else [ED, ES]
        few = [f"{counts[structure]} slice(s) at {p}" for p, counts in zip((ED, ES), (ed, es))
               if p in phases and 0 < counts.get(structure, MIN_REFERENCE_SLICES) < MIN_REFERENCE_SLICES]
        if few:
            said.append(f"{structure} on {' and '.join(few)}")
    if not said:
        return ""
    return (f"reference {'; '.join(said)}: fewer than {MIN_REFERENCE_SLICES} slices, so its volumes are those "
            "slices', not a whole ventricle's")


def _undefined_in_reference(ed: Mapping[str, float], es: Mapping[str, float]) -> tuple[list[str], str]:
    """Reference measures a structure empty at ED or ES leaves undefined (an EF of 100 % from an empty ES
    mask is no reference value), and the note saying so."""
    undefined, said = [], []
    for structure, measures in _MEASURES_OF.items():
        phases = [ED] if structure == "MYO" else [ED, ES]
        empty = [p for p, volumes in zip((ED, ES), (ed, es)) if p in phases and volumes.get(structure) == 0]
        if empty:
            undefined += measures
            said.append(f"{structure} at {'/'.join(empty)}")
    note = f"reference empty ({', '.join(said)}): its measures are not scored" if said else ""
    return undefined, note


def _row(subject: str, ref: tuple[Any, Any, dict], pred: tuple[Any, Any, dict], note: str = "",
         ref_volumes: tuple[Mapping[str, float], Mapping[str, float]] | None = None,
         ref_slices: tuple[Mapping[str, int], Mapping[str, int]] | None = None) -> dict[str, Any]:
    if ref_volumes is not None:
        undefined, empty_note = _undefined_in_reference(*ref_volumes)
        ref = (ref[0], ref[1], {m: (float("nan") if m in undefined else v) for m, v in ref[2].items()})
        note = "; ".join(n for n in (note, empty_note) if n)
    flat = ref_volumes is not None and any(pd.isna(v) for volumes in ref_volumes for v in volumes.values())
    if flat:  # voxel_volume_ml: a 2D image's pixels have areas, not volumes
        note = "; ".join(n for n in (note, FLAT_NOTE) if n)
    elif ref_slices is not None:
        note = "; ".join(n for n in (note, _few_slices_note(*ref_slices)) if n)
    row: dict[str, Any] = {"subject": subject, "ref_ED": ref[0], "ref_ES": ref[1],
                           "pred_ED": pred[0], "pred_ES": pred[1]}
    row.update({f"ref_{m}": ref[2].get(m, float("nan")) for m in MEASURES})
    row.update({f"pred_{m}": pred[2].get(m, float("nan")) for m in MEASURES})
    row["note"] = note
    return row


def _cine_rows(volumes: pd.DataFrame, lookup: dict, metadata: pd.DataFrame | None) -> list[dict[str, Any]]:
    rows = []
    cine = volumes[volumes["frame"].notna()]
    for source, frames in cine.groupby("source_case", sort=True):
        order = frames.drop_duplicates("case_id").sort_values("frame")
        ids, frame_no = order["case_id"].astype(str).tolist(), order["frame"].astype(int).tolist()
        subject = str(source)
        if metadata is not None and source in metadata.index and "subject" in metadata.columns:
            subject = str(metadata.at[source, "subject"]) if pd.notna(metadata.at[source, "subject"]) else subject
        if len(ids) < 2 or "LV" not in lookup[ids[0]]["ref"]:
            note = "a cine needs at least two frames and an LV class to find ED and ES"
            rows.append(_row(subject, (None, None, {}), (None, None, {}), note))
            continue
        if not all(np.isfinite(lookup[c]["ref"]["LV"]) for c in ids):  # voxel_volume_ml: a 2D cine has no volumes
            rows.append(_row(subject, (None, None, {}), (None, None, {}), FLAT_NOTE))
            continue
        sides, extremes = [], []
        for side in ("ref", "pred"):
            ed, es = ed_es_from_curve([lookup[c][side]["LV"] for c in ids])
            extremes.append((lookup[ids[ed]][side], lookup[ids[es]][side]))
            sides.append((frame_no[ed], frame_no[es], measures_from_volumes(*extremes[-1])))
            if side == "ref":
                ref_slices = (lookup[ids[ed]]["slices"], lookup[ids[es]]["slices"])
        rows.append(_row(subject, sides[0], sides[1], ref_volumes=extremes[0], ref_slices=ref_slices))
    return rows


def _side_of(lookup: dict, case: str | None, side: str) -> dict:
    """``lookup``'s ``side`` (ref, pred, slices) of ``case``; empty for a phase the subject has no case of."""
    return lookup[case][side] if case else {}


def _phase_rows(case_ids: Iterable[str], lookup: dict, metadata: pd.DataFrame | None) -> list[dict[str, Any]]:
    by_subject: dict[str, dict[str, list[str]]] = {}
    other_phases: dict[str, list[str]] = {}
    for case_id in case_ids:
        subject, phase = subject_and_phase(case_id, metadata)
        if subject is not None and phase in (ED, ES):
            by_subject.setdefault(subject, {ED: [], ES: []})[phase].append(case_id)
        elif subject is not None:
            other_phases.setdefault(str(phase), []).append(case_id)
    for phase, cases in sorted(other_phases.items()):
        logger.warning("%d case(s) of phase %r are left out of the clinical measures (ED or ES needed), e.g. %s",
                       len(cases), phase, cases[0])
    rows = []
    volumes = functools.partial(_side_of, lookup)
    for subject, phases in sorted(by_subject.items()):
        eds, ess = phases[ED], phases[ES]
        if len(eds) > 1 or len(ess) > 1:
            note = f"needs one ED and one ES case, found ED {eds} and ES {ess}"
            logger.warning("clinical measures skipped for subject %s: %s", subject, note)
            rows.append(_row(subject, (None, None, {}), (None, None, {}), note))
            continue
        ed, es = (eds or [None])[0], (ess or [None])[0]
        # one phase alone still has its own measures (ED: LVEDV, RVEDV, LVM), as the cine analysis reports them
        note = "" if ed and es else f"no {ES if ed else ED} case: only the {ED if ed else ES} measures are scored"
        if note:
            logger.warning("subject %s: %s", subject, note)
        rows.append(_row(subject, (ed, es, measures_from_volumes(volumes(ed, "ref"), volumes(es, "ref"))),
                         (ed, es, measures_from_volumes(volumes(ed, "pred"), volumes(es, "pred"))), note,
                         ref_volumes=(volumes(ed, "ref"), volumes(es, "ref")),
                         ref_slices=(volumes(ed, "slices"), volumes(es, "slices"))))
    return rows


def clinical_table(volumes: pd.DataFrame, metadata: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per-subject reference and predicted clinical measures from per-case x class volume rows.

    Args:
        volumes: rows with ``case_id``, ``class``, ``vol_ref_ml``, ``vol_pred_ml`` and optionally
            ``source_case`` and ``frame`` (frames of a 4D cine: ED/ES from the LV volume curve).
        metadata: indexed by case id, with ``subject`` and ``phase`` columns (3D cases).

    Returns:
        One row per subject: ``subject``, ``ref_ED``/``ref_ES``/``pred_ED``/``pred_ES`` (case ids, or frame
        numbers for a cine), ``ref_<M>`` and ``pred_<M>`` for each measure in :data:`MEASURES`, and ``note``
        (why a subject's measures are missing; empty when computed). Cases without a known subject/phase are
        left out.
    """
    missing = {"case_id", "class", VOL_REF, VOL_PRED} - set(volumes.columns)
    if missing:
        raise ValueError(f"volume table lacks columns {sorted(missing)}")
    if "frame" not in volumes.columns:
        volumes = volumes.assign(frame=pd.NA)
    if "source_case" not in volumes.columns:
        volumes = volumes.assign(source_case=volumes["case_id"])
    lookup = _volume_lookup(volumes)
    rows = _cine_rows(volumes, lookup, metadata)
    still = volumes.loc[volumes["frame"].isna(), "case_id"].astype(str).unique()
    rows += _phase_rows(still, lookup, metadata)
    columns = list(_row("", (None, None, {}), (None, None, {})))
    return pd.DataFrame(rows, columns=columns)


def clinical_table_from_masks(cases: Iterable[tuple[str, np.ndarray, np.ndarray, Sequence[float]]],
                              metadata: pd.DataFrame | None = None, *,
                              labels: Mapping[str, int] | None = None) -> pd.DataFrame:
    """:func:`clinical_table` from ``(case_id, reference, prediction, spacing)`` masks (3D, or 4D cine)."""
    rows = []
    values = AUTOCMR_LABELS if labels is None else labels
    for case_id, ref, pred, spacing in cases:
        ref, pred = np.asarray(ref), np.asarray(pred)
        frames = ([(None, ref, pred)] if ref.ndim == len(spacing)
                  else [(t, ref[t], pred[t]) for t in annotated_frames(ref)])
        for t, r, p in frames:
            vr, vp = structure_volumes(r, spacing, labels=labels), structure_volumes(p, spacing, labels=labels)
            cid = case_id if t is None else frame_case_id(case_id, t)
            rows += [{"case_id": cid, "class": s, VOL_REF: vr[s], VOL_PRED: vp[s], "source_case": case_id,
                      "frame": pd.NA if t is None else t, REF_SLICES: slices_with(r == values[s], spacing)}
                     for s in vr]
    return clinical_table(pd.DataFrame(rows), metadata)


def annotated_frames(reference: np.ndarray) -> list[int]:
    """The frames of a 4D reference that hold any label: a cine annotated only at some frames (M&Ms: ED and
    ES) is scored there, not against empty hearts elsewhere (whose ES would be a volume of 0 mL). A reference
    empty at every frame keeps them all, so that the prediction's false positives still count."""
    annotated = [t for t in range(reference.shape[0]) if reference[t].any()]
    if annotated and len(annotated) < reference.shape[0]:
        logger.info("reference annotated at frames %s of %d: only those are scored", annotated, reference.shape[0])
    return annotated or list(range(reference.shape[0]))


def frame_case_id(case_id: str, frame: int) -> str:
    """Case id of one frame of a 4D mask: ``CASE@tNN``."""
    return f"{case_id}@t{int(frame):02d}"


__all__ = ["MEASURES", "MEASURE_UNITS", "MIN_REFERENCE_SLICES", "MYOCARDIAL_DENSITY_G_PER_ML", "REF_SLICES",
           "annotated_frames", "clinical_measures", "clinical_table", "clinical_table_from_masks", "ed_es_from_curve",
           "frame_case_id", "measures_from_volumes", "slices_with", "structure_volumes", "subject_and_phase"]
