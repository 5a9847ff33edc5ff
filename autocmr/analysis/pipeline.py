"""From predicted masks to ``measures.csv``, ``volumes.csv``, ``qc.csv``, one PNG per subject and
``report.html``, written next to the masks.

:func:`analyse_batch` runs after ``autocmr_predict``'s batch (with ``--num-parts`` the files get the part's
suffix, ``measures_part0.csv`` ...); :func:`analyse_cases` does the same for any list of mask files, and
:func:`analyse_masks` works on in-memory masks. A subject whose analysis fails is reported with its reason
(``status = failed``) and the others go on; every file is written atomically.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import pandas as pd

from autocmr.analysis.figures import subject_figure
from autocmr.analysis.measures import FULL_ACCURACY, FrameMask, measure_cine, measure_phases, volumes_only
from autocmr.analysis.provenance import ModelProvenance, model_provenance, one_path, segmented_structures
from autocmr.analysis.qc import QcResult, QcThresholds, check_subject
from autocmr.analysis.report import write_report
from autocmr.analysis.subjects import (CaseRecord, Subject, find_metadata, frame_predictions, group_subjects,
                                      read_metadata)
from autocmr.analysis.tables import (FAILED, FIGURES_DIR, MEASURES_CSV, QC_CSV, REPORT_HTML, VOLUMES_CSV,
                                     SubjectReport, write_tables)
from autocmr.documents import layout
from autocmr.evaluation.clinical import ED, ES, STRUCTURES
from autocmr.errors import InputFileError
from autocmr.inference.inputs import CaseFailure, PredictionJob, sanitise_name
from autocmr.inference.parts import part_suffix, with_suffix
from autocmr.io.atomic import TEMP_PREFIX, temporary_target
from autocmr.io.cine import read_cine
from autocmr.io.dicom_seg import seg_output_exists
from autocmr.io.image import Geometry, read_header
from autocmr.io.orientation import through_plane_axis, to_canonical

if TYPE_CHECKING:
    from autocmr.inference.batch_report import BatchReport

logger = logging.getLogger(__name__)
MS_PER_MINUTE = 60000.0
MAX_HEART_RATE_FILES = 2000  # headers read for the heart rate: every slice of a cine, in well under a second
# Fewer slices cannot cover a ventricle (a long-axis cine, a lone slice): their "volumes" would be read as
# LVEDV or LVEF beside the patient's real short-axis stack, so they get no clinical measures.
MIN_SLICES_FOR_MEASURES = 3
SEG_ONLY_REASON = "not analysed: --output-format dicom-seg writes no NIfTI mask to measure (use --output-format both)"


@dataclass(frozen=True)
class AnalysisOutputs:
    reports: list[SubjectReport]
    files: dict[str, Path]  # table / report name -> path written


def analyse_batch(report: BatchReport, jobs: Sequence[PredictionJob], input_path: str | Path, *,
                  metadata: str | Path | None = None, part: tuple[int, int] = (1, 0),
                  thresholds: QcThresholds | None = None) -> AnalysisOutputs:
    """Analyse the masks of a :func:`~autocmr.inference.batch.predict_folder` run (predicted or, with
    ``continue_``, already there); its failed cases appear in the report with their reason.

    Passed to ``predict_folder`` as its ``after_batch`` hook (with ``functools.partial`` for the keywords)."""
    suffix = part_suffix(*part)
    recorded = _batch_record(report.output_dir / with_suffix(layout.BATCH_PREDICTIONS, suffix))
    stored = _stored_cases(recorded)
    finished = set(report.done) | set(report.skipped)
    found = [(job, report.uncertainty.get(job.name) or stored.get(job.name, {}).get("uncertainty") or [],
              report.cine.get(job.name) or stored.get(job.name, {}).get("cine"),
              report.blank_frames.get(job.name) or stored.get(job.name, {}).get("blank_frames") or [])
             for job in jobs if job.name in finished and job.output.is_file()]
    cases, unreadable = _records(found)
    # --output-format dicom-seg writes no NIfTI mask to measure: said in the report, not left out silently
    seg_only = [CaseFailure(job.name, str(job.source), SEG_ONLY_REASON)
                for job in jobs if job.name in finished and not job.output.is_file()]
    metadata_path = Path(metadata) if metadata is not None else find_metadata(input_path)
    table = _metadata_table(metadata_path, given=metadata is not None)
    return analyse_cases(cases, report.output_dir, metadata=table, failures=list(report.failures) + unreadable,
                         suffix=suffix, thresholds=thresholds, model=model_provenance(recorded.get("predictor")),
                         not_analysed=seg_only, structures=segmented_structures(recorded.get("predictor")))


def _metadata_table(path: Path | None, *, given: bool):
    """The subjects and phases of ``path`` (a cases.csv). One found beside the input rather than given with
    --metadata may be another tool's file: unreadable, it is left out with a warning instead of costing the
    tables and report of a batch whose masks are all written."""
    if path is None:
        return None
    try:
        table = read_metadata(path)
    except InputFileError as exc:
        if given:
            raise
        logger.warning("%s: not used for subjects and phases (%s); subjects come from the file names", path,
                       exc.reason)
        return None
    logger.info("subjects and phases from %s", path)
    return table


def analyse_output_folder(output_dir: str | Path, *, metadata: str | Path | None = None,
                          thresholds: QcThresholds | None = None) -> AnalysisOutputs:
    """Analyse a finished output folder again from its ``predictions.json`` and ``failures.json``, e.g. after
    ``autocmr_merge_parts``: subjects whose ED and ES were predicted by different parts are paired here.

    Raises:
        InputFileError: the folder has no readable ``predictions.json``.
    """
    out = Path(output_dir)
    predictions_path, failures_path = out / layout.BATCH_PREDICTIONS, out / layout.BATCH_FAILURES
    try:
        recorded = json.loads(predictions_path.read_text())
        failures_found = json.loads(failures_path.read_text()) if failures_path.is_file() else []
    except (OSError, ValueError) as exc:
        raise InputFileError(predictions_path, f"cannot read the batch record ({exc})") from exc
    found, not_analysed = [], []
    for name, entry in sorted(recorded.get("cases", {}).items()):
        job = PredictionJob(name, entry["kind"], tuple(Path(s) for s in entry["sources"]), Path(entry["output"]))
        beside = out / job.output.name  # recorded relative to another working folder, or on another machine
        if not job.output.is_file() and beside.is_file():
            job = replace(job, output=beside)
        if job.output.is_file():
            found.append((job, entry.get("uncertainty") or [], entry.get("cine"), entry.get("blank_frames") or []))
        else:  # recorded but its mask is not there: said in the report, never left out silently
            not_analysed.append(_mask_not_found(job))
    cases, unreadable = _records(found)
    failures = [CaseFailure(f["name"], f["file"], f["reason"]) for f in failures_found] + unreadable
    metadata_path = Path(metadata) if metadata is not None else find_metadata(one_path(recorded.get("input")) or out)
    table = _metadata_table(metadata_path, given=metadata is not None)
    return analyse_cases(cases, out, metadata=table, failures=failures, thresholds=thresholds,
                         model=model_provenance(recorded.get("predictor")), not_analysed=not_analysed,
                         structures=segmented_structures(recorded.get("predictor")))


def _mask_not_found(job: PredictionJob) -> CaseFailure:
    """Why a recorded case has no NIfTI mask to measure: DICOM-SEG only, or the mask was moved or deleted."""
    if seg_output_exists(job.output):
        return CaseFailure(job.name, str(job.source), SEG_ONLY_REASON)
    return CaseFailure(job.name, str(job.output), "not analysed: the mask recorded in predictions.json is not "
                                                  "there (moved or deleted?); predict the case again")


def _records(found: Sequence[tuple[PredictionJob, Sequence[float | None], Mapping[str, Any] | None, Sequence[int]]]
             ) -> tuple[list[CaseRecord], list[CaseFailure]]:
    """Records of the jobs whose mask can be read; the others become failures naming the mask."""
    cases, unreadable = [], []
    for job, uncertainty, cine, blank in found:
        try:
            cases.append(case_record(job, uncertainty, cine, blank))
        except InputFileError as exc:
            unreadable.append(CaseFailure(job.name, str(exc.path), f"mask unreadable: {exc.reason}"))
    return cases, unreadable


def case_record(job: PredictionJob, uncertainty: Sequence[float | None] = (),
                cine: Mapping[str, Any] | None = None, blank_frames: Sequence[int] = ()) -> CaseRecord:
    """What the analysis needs to know about one predicted job (``cine``: its fast cine path record;
    ``blank_frames``: a cine's frames without image content)."""
    geometry = read_header(job.output)
    n_frames = geometry.size[3] if geometry.dim == 4 else 1
    image = job.image_copy if job.kind == "dicom" else job.sources[0]
    values = tuple(math.nan if u is None else float(u) for u in uncertainty)
    return CaseRecord(job.name, job.output, image, job.sources, n_frames, values, job.kind,
                      frame_predictions(cine, n_frames), tuple(int(t) for t in blank_frames))


def _batch_record(predictions_json: Path) -> dict[str, Any]:
    """The batch's ``predictions.json``; empty when it is missing or unreadable (the analysis goes on)."""
    try:
        recorded = json.loads(predictions_json.read_text()) if predictions_json.is_file() else {}
    except (ValueError, OSError):
        return {}
    return recorded if isinstance(recorded, dict) else {}


def _stored_cases(recorded: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The case records (``cases.NAME``: uncertainty, fast cine path record...) of a ``predictions.json``;
    records that are not mappings are left out."""
    cases = recorded.get("cases")
    if not isinstance(cases, dict):
        return {}
    return {name: entry for name, entry in cases.items() if isinstance(entry, dict)}


def analyse_cases(cases: Sequence[CaseRecord], output_dir: str | Path, *, metadata: pd.DataFrame | None = None,
                  failures: Sequence[CaseFailure] = (), suffix: str = "", thresholds: QcThresholds | None = None,
                  figures: bool = True, model: ModelProvenance | None = None,
                  not_analysed: Sequence[CaseFailure] = (), structures: Sequence[str] = STRUCTURES
                  ) -> AnalysisOutputs:
    """Group ``cases`` into subjects, analyse each and write the tables, figures and ``report.html`` (with
    ``model``'s settings, cross-validated accuracy and limits when given). ``failures``: cases that could not
    be predicted; ``not_analysed``: cases predicted but not measurable here (each with its reason);
    ``structures``: those of LV, MYO, RV the model segments (the others' measures are NaN, not 0 mL, and QC
    expects only these)."""
    out = Path(output_dir)
    subjects = group_subjects(cases, metadata)
    _remove_stale_temporaries(out, suffix, subjects)
    reports = []
    for subject in subjects:
        try:
            reports.append(_analyse_subject_files(subject, out, thresholds, figures, structures))
        except Exception as exc:  # noqa: BLE001 - one subject's problem is reported, the others go on
            logger.warning("analysis of %s failed: %s", subject.name, exc)
            logger.debug("analysis of %s failed", subject.name, exc_info=exc)
            reports.append(_failed(subject.name, [str(c.mask) for c in subject.cases],
                                   f"analysis failed: {type(exc).__name__}: {exc}"))
    reports += [_failed(f.name, [f.file], f"prediction failed: {f.reason}") for f in failures]
    reports += [_failed(f.name, [f.file], f.reason) for f in not_analysed]
    files = write_tables(reports, out, suffix=suffix)
    files[REPORT_HTML] = write_report(reports, out / with_suffix(REPORT_HTML, suffix), thresholds=thresholds,
                                      model=model)
    flagged = sum(r.review for r in reports)
    logger.info("analysis: %d subject(s), %d to review; see %s", len(reports), flagged, files[REPORT_HTML])
    return AnalysisOutputs(reports, files)


def _remove_stale_temporaries(out: Path, suffix: str, subjects: Sequence[Subject]) -> None:
    """Temporaries a killed run left for *these* files (another part may be writing its own right now)."""
    targets = {with_suffix(n, suffix) for n in (MEASURES_CSV, VOLUMES_CSV, QC_CSV, REPORT_HTML)}
    targets |= {figure_file_name(s.name) for s in subjects}
    for folder in (out, out / FIGURES_DIR):
        for item in folder.glob(f"{TEMP_PREFIX}*") if folder.is_dir() else ():
            if temporary_target(item.name) in targets:
                item.unlink(missing_ok=True)


def figure_file_name(subject: str) -> str:
    """The subject's figure file. A name that is not file-safe as it is, or not lower-case ASCII, gets a short
    hash of itself added, so that two subjects such as ``P 1`` and ``P/1``, or ``P1`` and ``p1``, never share
    a figure, even when parts of a batch on different machines draw them into the same folder."""
    safe = sanitise_name(subject)
    # ``P1`` and ``p1`` (or two Unicode spellings of one name) are one file on macOS and Windows: names with
    # upper case or non-ASCII letters get the hash too
    if safe != subject or safe != safe.lower() or not safe.isascii():
        safe += "_" + hashlib.sha1(subject.encode("utf-8")).hexdigest()[:8]
    return f"{safe}.png"


def _failed(name: str, sources: list[str], reason: str) -> SubjectReport:
    return SubjectReport(name, FAILED, qc=QcResult(["analysis_failed"]), sources=sources, notes=[reason])


def analyse_masks(subject: str, frames: Sequence[FrameMask], *, thresholds: QcThresholds | None = None,
                  cine: bool | None = None, structures: Sequence[str] = STRUCTURES) -> SubjectReport:
    """Measures and QC of in-memory masks: a cine (several frames without a phase, in frame order) or the
    ED and/or ES masks (``phase`` set); anything else gives volumes only. ``cine`` False: frames without a
    phase are separate masks, not a cine's frames (None: several frames without a phase are a cine).

    Raises:
        ValueError: no frames.
    """
    if not frames:
        raise ValueError(f"{subject}: no masks to analyse")
    notes: list[str] = []
    if tuple(structures) != STRUCTURES:  # ``structures``: what the model segments; the others are not measured
        frames = [replace(f, structures=tuple(structures)) for f in frames]
        unsegmented = [name for name in STRUCTURES if name not in structures]
        notes.append(f"the model does not segment {', '.join(unsegmented)}: those measures are not computed")
    phased = {f.phase: f for f in frames if f.phase in (ED, ES)}
    n_slices = min(int(f.label.shape[0]) for f in frames)  # a lone slice paired with a stack decides too
    if n_slices < MIN_SLICES_FOR_MEASURES:
        measures = volumes_only(subject, frames)
        notes.append(f"{n_slices} slice(s): not a short-axis stack (a long-axis view or a lone slice?); volumes "
                     "per frame only (area x slice thickness), no clinical measures")
    elif phased and len(phased) == len(frames):
        measures = measure_phases(subject, phased.get(ED), phased.get(ES))
    elif phased and cine is False:  # beside them, masks of no single phase (two ED files): their volumes too
        measures = measure_phases(subject, phased.get(ED), phased.get(ES))
        measures.volume_rows += volumes_only(subject, [f for f in frames if f.phase not in (ED, ES)]).volume_rows
    elif len(frames) >= 2 and not phased and cine is not False:
        measures = measure_cine(subject, frames)
    else:
        measures = volumes_only(subject, frames)
        notes.append("no ED/ES: volumes only, no measures; QC of the mask's anatomy only")
    checked = measures if measures.ed is not None or measures.es is not None else replace(measures, ed=frames[0])
    qc = check_subject(checked, thresholds)
    return SubjectReport(subject, measures=measures, qc=qc, n_slices=n_slices, notes=measures.notes + notes)


def _analyse_subject_files(subject: Subject, out: Path, thresholds: QcThresholds | None,
                           figures: bool, structures: Sequence[str] = STRUCTURES) -> SubjectReport:
    frames = _load_frames(subject)
    report = analyse_masks(subject.name, frames, thresholds=thresholds, cine=subject.cine is not None,
                           structures=structures)
    report.notes = subject.notes + report.notes
    if subject.ambiguous_phases:  # an input problem, not the masks': still a result a person has to look at
        report.qc.add("ambiguous_phase")
    report.grouped_by = subject.grouped_by
    report.sources = sorted({str(s) for c in subject.cases for s in _source_names(c)})
    if subject.cine is not None and subject.cine.kind == "dicom":
        report.heart_rate_bpm = dicom_heart_rate(subject.cine.sources)
    elif subject.cine is None:  # separate ED and ES DICOM series carry the rate of their acquisition too
        series = [c for c in subject.cases if c.kind == "dicom"]
        report.heart_rate_bpm = next((rate for c in series if (rate := dicom_heart_rate(c.sources)) is not None),
                                     None)
    if figures and report.measures is not None and frames:
        relative = f"{FIGURES_DIR}/{figure_file_name(subject.name)}"
        try:
            _figure(subject, report, out / relative, frames)
            report.figure = relative
        except Exception as exc:  # noqa: BLE001 - a figure that cannot be drawn must not cost the measures
            logger.warning("%s: figure not drawn (%s: %s)", subject.name, type(exc).__name__, exc)
            report.notes.append(f"figure not drawn ({type(exc).__name__}: {exc})")
    return report


def _source_names(case: CaseRecord) -> list[Path]:
    if case.kind == "dicom":  # hundreds of files: name the folder
        return [case.sources[0].parent]
    return list(case.sources)


def _load_frames(subject: Subject) -> list[FrameMask]:
    if subject.cine is not None:
        masks, geometry = read_cine(subject.cine.mask)
        spatial = geometry.spatial()
        out = []
        for t, mask in enumerate(masks):
            label, spacing = _slices_first(*to_canonical(mask, spatial)[:2])
            predicted = subject.cine.predicted[t] if t < len(subject.cine.predicted) else FULL_ACCURACY
            out.append(FrameMask(label, spacing, subject.cine.name, t, None, _uncertainty(subject.cine, t),
                                 predicted, blank=t in subject.cine.blank_frames))
        return out
    single = {p: cases[0] for p, cases in subject.phases.items() if len(cases) == 1}
    # without one unambiguous phase (two ED files, no ES), the volumes of each file and no measures; beside an
    # unambiguous one (two ED files, one ES), its measures and every file's volumes
    ambiguous = [(c, None) for p in subject.ambiguous_phases for c in subject.phases[p]]
    records = ([(single[p], p) for p in (ED, ES) if p in single] + ambiguous
               if single else [(c, None) for c in subject.cases])
    out = []
    for case, phase in records:
        masks, geometry = read_cine(case.mask)  # a 3D mask reads as one frame
        label, spacing = _slices_first(*to_canonical(masks[0], geometry.spatial())[:2])
        out.append(FrameMask(label, spacing, case.name, subject.frame_numbers.get(phase or ""), phase,
                             _uncertainty(case, 0)))
    return out


def _slices_first(array: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, tuple[float, float, float]]:
    """``array`` with its slice axis first, as the QC rules and figures read it. Canonical order puts it first
    for stacks of thick slices; a stack of thin slices (under twice the pixel size) is in patient-axis order
    there, which for an oblique stack may put an in-plane axis first: the slice axis is then the largest
    spacing (:func:`autocmr.io.orientation.through_plane_axis`)."""
    axis = through_plane_axis(array.shape, spacing)
    if axis == 0:
        return array, tuple(spacing)  # type: ignore[return-value]
    spacing_first = (float(spacing[axis]),) + tuple(float(s) for a, s in enumerate(spacing) if a != axis)
    return np.ascontiguousarray(np.moveaxis(array, axis, 0)), spacing_first  # type: ignore[return-value]


def _uncertainty(case: CaseRecord, frame: int) -> float:
    return case.uncertainty[frame] if frame < len(case.uncertainty) else math.nan


def _figure(subject: Subject, report: SubjectReport, path: Path, frames: Sequence[FrameMask]) -> None:
    """The subject's PNG: its ED and ES masks, or, without either (phase unknown, no ventricle found), its
    first mask, so that a reader sees what was segmented."""
    measures = report.measures
    assert measures is not None
    shown = [(p, f) for p, f in ((ED, measures.ed), (ES, measures.es)) if f is not None]
    if shown:
        values = measures.measures
        shown_values = "   ".join(f"{m} {_rounded(values[m])} {unit}" for m, unit in
                                   (("LVEDV", "mL"), ("LVEF", "%"), ("LVM", "g"), ("RVEDV", "mL"), ("RVEF", "%")))
    else:  # no measures to show: the first mask and its volumes (the first volume row)
        first, volumes = frames[0], measures.volume_rows[0]
        shown = [(f"frame {first.frame}" if first.frame is not None else "mask", first)]
        shown_values = "   ".join(f"{s} {_rounded(float(volumes[s]))} mL" for s in ("LV", "MYO", "RV"))  # type: ignore[arg-type]
    read: dict[Path, tuple[np.ndarray, Geometry]] = {}  # a cine's file is read once for both phases
    phases = [(p, _image_for(subject, f, read), f.label) for p, f in shown]
    curve = {s: [float(row[s]) for row in measures.volume_rows] for s in ("LV", "RV", "MYO")}  # type: ignore[arg-type]
    x = [row["frame"] if row["frame"] is not None else (row["phase"] or "unknown") for row in measures.volume_rows]
    markers = {str(row["phase"]): i for i, row in enumerate(measures.volume_rows) if row["phase"] in (ED, ES)}
    exact = [row["prediction"] == FULL_ACCURACY for row in measures.volume_rows]
    title = f"{subject.name}   {shown_values}"
    if report.qc.flags:
        title += "\nQC: " + ", ".join(report.qc.flags)
    subject_figure(path, title, phases, shown[0][1].spacing, curve, x, markers, exact,
                   spacings=[f.spacing for _, f in shown])


def _rounded(value: float) -> str:
    return f"{value:.0f}" if math.isfinite(value) else "n/a"


def _image_for(subject: Subject, frame: FrameMask,
               read: dict[Path, tuple[np.ndarray, Geometry]]) -> np.ndarray | None:
    """The image under ``frame``'s mask, canonical; None when it cannot be read (the contours still show).
    ``read`` keeps the files read so far."""
    case = subject.cine or next((c for c in subject.cases if c.name == frame.case), None)
    if case is None or case.image is None or not case.image.is_file():
        return None
    try:
        if case.image not in read:
            read[case.image] = read_cine(case.image)
        images, geometry = read[case.image]
        index = frame.frame if subject.cine is not None and frame.frame is not None else 0
        image, _ = _slices_first(*to_canonical(images[index], geometry.spatial())[:2])
    except Exception as exc:  # noqa: BLE001 - a figure without its image beats no figure
        logger.warning("%s: image not shown in the figure (%s)", case.image, exc)
        return None
    return image if image.shape == frame.label.shape else None


def dicom_heart_rate(files: Sequence[Path]) -> float | None:
    """Heart rate (bpm) from a DICOM series: HeartRate, else 60000 / NominalInterval (R-R interval, ms), else
    60000 / CardiacRRIntervalSpecified (Enhanced MR); in an enhanced multi-frame file also where converters
    keep HeartRate and NominalInterval (the unassigned converted attributes of the functional groups)."""
    import pydicom

    # a multi-breath-hold cine records each slice's own heart rate (Sunnybrook: 75-82 bpm): the median over the
    # slices, read from one file per slice position, not whichever file sorts first
    rates: dict[Any, float] = {}
    for path in files[:MAX_HEART_RATE_FILES]:
        try:
            ds = pydicom.dcmread(str(path), stop_before_pixels=True, force=True)
            position = tuple(round(float(v), 1) for v in ds.get("ImagePositionPatient") or ()) or str(path)
        except Exception:  # noqa: BLE001 - an unreadable header just means no heart rate
            continue
        if position in rates:
            continue
        rate = _rate_of(ds)
        if rate is not None:
            rates[position] = rate
    return float(np.median(list(rates.values()))) if rates else None


def _rate_of(ds: Any) -> float | None:
    for source in _heart_rate_sources(ds):
        rate = _positive(source.get("HeartRate"))
        if rate is not None:
            return rate
        interval = _positive(source.get("NominalInterval")) or _positive(source.get("CardiacRRIntervalSpecified"))
        if interval is not None:
            return MS_PER_MINUTE / interval
    return None


def _heart_rate_sources(ds: Any) -> list[Any]:
    """The data set, then in its shared and first per-frame functional groups the cardiac synchronisation
    (where Enhanced MR keeps CardiacRRIntervalSpecified) and the converted attributes."""
    sources = [ds]
    for groups, converted in (("SharedFunctionalGroupsSequence", "UnassignedSharedConvertedAttributesSequence"),
                              ("PerFrameFunctionalGroupsSequence", "UnassignedPerFrameConvertedAttributesSequence")):
        items = ds.get(groups)
        if not items:
            continue
        for keyword in ("CardiacSynchronizationSequence", converted):
            if keyword in items[0] and len(items[0][keyword].value):
                sources.append(items[0][keyword].value[0])
    return sources


def _positive(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


__all__ = ["AnalysisOutputs", "analyse_batch", "analyse_cases", "analyse_masks", "analyse_output_folder", "case_record",
           "dicom_heart_rate"]
