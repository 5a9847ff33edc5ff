"""Evaluate predicted label maps against references: in memory or from two folders of files.

Outputs (when an output folder is given): ``summary.json``, ``cases.csv`` (one row per case x class),
``clinical.csv`` (per subject, reference and predicted measures), ``breakdowns.csv`` and PNG plots; with
``by`` containing ``slice_position`` also ``slice_positions.csv``, ``slice_position_summary.csv`` and
``slice_position.png`` (see :mod:`autocmr.evaluation.position_report`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import partial
from itertools import repeat
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from autocmr.errors import ConfigurationError, DatasetError, no_folder
from autocmr.evaluation import plots
from autocmr.evaluation import position_report
from autocmr.evaluation.cases import (CASES_CSV, REFERENCE_SUFFIX, CaseFailure, CasePair, case_info,
                                      case_slice_profiles, evaluate_arrays, evaluate_pair_detailed, load_metadata,
                                      match_files, metadata_source, resolve_labels, safe_name,
                                      scored_labels)
from autocmr.evaluation.clinical import STRUCTURES, clinical_table
from autocmr.evaluation.exchanges import exchange_table, format_exchanges
from autocmr.evaluation.metrics import METRICS
from autocmr.evaluation.position_report import SLICE_POSITION
from autocmr.evaluation.report import build_summary, format_summary, group_values, json_safe, write_tables
from autocmr.evaluation.slice_position import SliceProfile, no_slices_profile
from autocmr.io.atomic import write_text_atomic
from autocmr.parallel import make_bare_pool

logger = logging.getLogger(__name__)

DEFAULT_OUTPUT_SUBDIR = "evaluation"
SLICE_POSITIONS_CSV = "slice_positions.csv"
EXCHANGES_CSV = "exchanges.csv"
SLICE_POSITION_SUMMARY_CSV = "slice_position_summary.csv"
SLICE_POSITION_PNG = "slice_position.png"
LabelsSpec = Mapping[str, int] | str | Path | None
MetadataSpec = pd.DataFrame | str | Path | None


@dataclass
class EvaluationResult:
    """What an evaluation produced.

    Attributes:
        summary: the content of ``summary.json`` (see :mod:`autocmr.evaluation.report`).
        cases: one row per case (or 4D frame) x class: metrics and the case's metadata.
        failures: cases that could not be evaluated, with the reason.
        clinical: per-subject reference and predicted clinical measures (None without LV/MYO/RV classes).
        positions: with ``by`` containing ``slice_position``, one row per case x class x slice position.
        output_dir: where the files were written (None for an in-memory evaluation without output).
        files: the files written.
    """

    summary: dict[str, Any]
    cases: pd.DataFrame
    failures: list[CaseFailure]
    clinical: pd.DataFrame | None = None
    output_dir: Path | None = None
    files: list[Path] = field(default_factory=list)
    positions: pd.DataFrame | None = None

    def report(self) -> str:
        """Terminal text: per-class metrics, clinical agreement, failures, bias by slice position."""
        text = format_summary(self.summary)
        if self.summary.get("exchanges"):
            text += "\n" + format_exchanges(pd.DataFrame(self.summary["exchanges"]))
        if SLICE_POSITION in self.summary:
            text += "\n" + position_report.format_position_summary(self.summary[SLICE_POSITION])
        return text


# columns every result row has: a metadata column of the same name is replaced by the result's, so it cannot
# be broken down by (ACDC's cases.csv has a "frame" column: the results' is the cine frame)
RESULT_COLUMNS = ("case_id", "source_case", "frame", "class")


def _check_by(by: Sequence[str] | None, info: pd.DataFrame) -> list[str]:
    by = list(by or [])
    taken = [c for c in by if c in RESULT_COLUMNS or c in METRICS]
    if taken:
        raise ConfigurationError(f"breakdown column(s) {taken} share a name with the results' own columns; rename "
                                 "them in the case table to break down by them")
    missing = [c for c in by if c not in info.columns and c != SLICE_POSITION]
    if missing:
        raise ConfigurationError(f"breakdown columns {missing} are not in the case metadata; available: "
                                 f"{sorted(info.columns)} (give a cases.csv with -meta)")
    return by


def _check_base_end(base_end: str) -> None:
    if base_end not in position_report.BASE_END_OPTIONS:
        raise ConfigurationError(f"base_end must be one of {position_report.BASE_END_OPTIONS}, got {base_end!r}")


def _case_table(rows: list[dict[str, Any]], info: pd.DataFrame) -> pd.DataFrame:
    cases = pd.DataFrame(rows)
    cases["frame"] = cases["frame"].astype("Int64")
    meta = info.drop(columns=[c for c in info.columns if c in cases.columns], errors="ignore")
    return cases.join(meta, on="source_case")


def _slice_positions(profiles: list[SliceProfile], info: pd.DataFrame, by: Sequence[str], base_end: str
                     ) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """summary.json entry, per case x class x position table and its summary (see position_report)."""
    source_of = {p.case_id: p.source_case for p in profiles}
    subjects = {case: str(info.at[source, "subject"]) for case, source in source_of.items()
                if source in info.index and pd.notna(info.at[source, "subject"])}
    decisions = position_report.decide_base_ends([p for p in profiles if p.rows], subjects, base_end)
    table = position_report.position_table(profiles, decisions, info)
    summary_rows = position_report.position_summary(table, by) if not table.empty else pd.DataFrame()
    entry = position_report.summary_dict(table, summary_rows, profiles, decisions, base_end)
    return entry, table, summary_rows


def _write_positions(output_dir: Path, table: pd.DataFrame, summary_rows: pd.DataFrame, classes: Sequence[str],
                     make_plots: bool) -> list[Path]:
    written = [output_dir / SLICE_POSITIONS_CSV]
    write_text_atomic(written[0], table.to_csv(index=False, float_format="%.6g"))
    if summary_rows.empty:
        return written
    written.append(output_dir / SLICE_POSITION_SUMMARY_CSV)
    write_text_atomic(written[-1], summary_rows.to_csv(index=False, float_format="%.6g"))
    if make_plots:
        written.append(plots.plot_slice_positions(summary_rows, classes, position_report.POSITIONS,
                                                  output_dir / SLICE_POSITION_PNG))
    return [p for p in written if p is not None]


def _finish(rows: list[dict[str, Any]], failures: list[CaseFailure], *, labels: dict[str, int],
            metadata: pd.DataFrame | None, by: Sequence[str] | None, output_dir: Path | None,
            extra: Mapping[str, Any], make_plots: bool, profiles: list[SliceProfile] | None = None,
            base_end: str = "auto") -> EvaluationResult:
    if not rows:
        reasons = "; ".join(f"{f.case_id}: {f.reason}" for f in failures[:5])
        raise DatasetError(f"no case could be evaluated ({len(failures)} failed{': ' + reasons if reasons else ''})")
    sources = list(dict.fromkeys(r["source_case"] for r in rows))
    info = case_info(sources, metadata)
    by = _check_by(by, info)
    metadata_by = [c for c in by if c != SLICE_POSITION]
    cases = _case_table(rows, info)
    classes = list(labels)
    clinical = None
    if set(STRUCTURES) & set(classes):
        clinical = clinical_table(cases, info)
    summary, breakdown_table = build_summary(cases, classes, labels=labels, failures=failures, clinical=clinical,
                                             by=metadata_by, extra=extra)
    exchanges = exchange_table(cases)
    if not exchanges.empty:
        summary["exchanges"] = json_safe(exchanges.to_dict(orient="records"))
    positions = summary_rows = None
    if SLICE_POSITION in by:
        entry, positions, summary_rows = _slice_positions(profiles or [], info, metadata_by, base_end)
        summary[SLICE_POSITION] = json_safe(entry)
    failed = [f for f in failures if not f.missing]
    if failed:
        logger.warning("%d cases could not be evaluated (listed in the summary's 'failures'), first: %s: %s",
                       len(failed), failed[0].case_id, failed[0].reason)
    if len(failed) < len(failures):
        logger.info("%d reference case(s) have no prediction (listed in 'failures' with \"missing\": true)",
                    len(failures) - len(failed))
    result = EvaluationResult(summary, cases, list(failures), clinical, output_dir, positions=positions)
    if output_dir is not None:
        result.files = write_tables(output_dir, summary, cases, clinical, breakdown_table)
        if not exchanges.empty:
            result.files.append(output_dir / EXCHANGES_CSV)
            write_text_atomic(result.files[-1], exchanges.to_csv(index=False))
        if make_plots:
            result.files += _write_plots(output_dir, cases, clinical, metadata_by, classes)
        if positions is not None and summary_rows is not None:
            result.files += _write_positions(output_dir, positions, summary_rows, classes, make_plots)
        logger.info("evaluation written to %s", output_dir)
    return result


def _write_plots(output_dir: Path, cases: pd.DataFrame, clinical: pd.DataFrame | None, by: Sequence[str],
                 classes: Sequence[str]) -> list[Path]:
    written = [plots.plot_metric_boxes(cases, classes, output_dir / "metrics.png")]
    for column in by:
        groups = group_values(cases, column)
        written.append(plots.plot_breakdown(cases, groups, column, classes,
                                            output_dir / f"breakdown_{safe_name(column)}.png"))
    if clinical is not None and not clinical.empty:
        written += [plots.plot_bland_altman(clinical, output_dir / "clinical_bland_altman.png"),
                    plots.plot_clinical_scatter(clinical, output_dir / "clinical_scatter.png")]
    return [p for p in written if p is not None]


def evaluate_cases(cases: Iterable[tuple[str, np.ndarray, np.ndarray, Sequence[float]]],
                   output_dir: str | Path | None = None, *, labels: LabelsSpec = None,
                   metadata: MetadataSpec = None, by: Sequence[str] | None = None,
                   make_plots: bool = True, ignore_labels: Sequence[int] = (),
                   base_end: str = "auto") -> EvaluationResult:
    """Evaluate in-memory cases (no files needed, e.g. a trainer's final validation).

    Args:
        cases: ``(case_id, reference, prediction, spacing)`` with label maps in numpy order (z, y, x), or
            (t, z, y, x) for a cine, and the spatial spacing in mm (z, y, x).
        output_dir: folder for summary.json, cases.csv, plots...; None writes nothing.
        labels: classes to evaluate (mapping, JSON text or file); default autocmr LV/MYO/RV.
        metadata: per-case table (``case_id``, ``subject``, ``phase``, ...) or a CSV path.
        by: metadata columns to break the results down by; ``slice_position`` adds the breakdown by slice
            position (the slice axis is the one with the largest spacing: arrays carry no header).
        make_plots: False writes the tables only (plots take about a second each).
        base_end: which end of the slice axis is basal: ``auto`` (from the reference anatomy), ``first``,
            ``last``.

    Raises:
        DatasetError: no case could be evaluated.
        ConfigurationError: bad labels or a breakdown column the metadata lacks.
    """
    label_map = scored_labels(resolve_labels(labels), ignore_labels)
    meta = load_metadata(metadata)
    _check_by(by, case_info([], meta))  # fail before the work, not after
    _check_base_end(base_end)
    rows: list[dict[str, Any]] = []
    failures: list[CaseFailure] = []
    profiles: list[SliceProfile] = []
    for case_id, reference, prediction, spacing in cases:
        try:
            rows += evaluate_arrays(str(case_id), reference, prediction, spacing, label_map, ignore_labels)
        except ValueError as exc:
            failures.append(CaseFailure(str(case_id), None, str(exc)))
            continue
        # a 2D image, or a 2D cine (t, y, x) with its 2 spacings: its rows are no slices
        if SLICE_POSITION in (by or ()) and (np.ndim(reference) < 3 or len(spacing) < 3):
            profiles.append(no_slices_profile(str(case_id), min(int(np.ndim(reference)), len(spacing))))
        elif SLICE_POSITION in (by or ()):
            profiles += case_slice_profiles(str(case_id), reference, prediction, spacing, label_map, ignore_labels)
    out = Path(output_dir) if output_dir is not None else None
    return _finish(rows, failures, labels=label_map, metadata=meta, by=by, output_dir=out, extra={},
                   make_plots=make_plots, profiles=profiles, base_end=base_end)


def _run_pairs(pairs: list, labels: dict[str, int], num_workers: int, ignore: Sequence[int] = (),
               slice_positions: bool = False) -> list[tuple[list, list[SliceProfile], CaseFailure | None]]:
    if num_workers <= 1 or len(pairs) <= 1:
        return [evaluate_pair_detailed(p, labels, ignore, slice_positions=slice_positions) for p in pairs]
    # spawn, not fork: SimpleITK and BLAS keep thread pools that a forked child can inherit locked.
    with make_bare_pool(min(num_workers, len(pairs))) as pool:
        return list(pool.map(partial(evaluate_pair_detailed, slice_positions=slice_positions), pairs,
                             repeat(labels), repeat(tuple(ignore)), chunksize=1))


def evaluate_folders(reference_dir: str | Path, prediction_dir: str | Path | Sequence[str | Path],
                     output_dir: str | Path | None = None, *,
                     labels: LabelsSpec = None, metadata: MetadataSpec = None, by: Sequence[str] | None = None,
                     file_ending: str = ".nii.gz", num_workers: int = 1,
                     write_outputs: bool = True, make_plots: bool = True,
                     ignore_labels: Sequence[int] = (), base_end: str = "auto") -> EvaluationResult:
    """Evaluate every prediction file against its reference and write the results.

    References ``CASE<ending>`` (or ACDC-style ``CASE_gt<ending>``) are matched to predictions
    ``CASE<ending>`` or to a prediction named exactly like the reference. 3D and 4D (cine) files are read
    with :func:`autocmr.io.image.read_image`; 4D files are evaluated per frame (``CASE@tNN``).

    Args:
        reference_dir: folder of reference label maps.
        prediction_dir: folder of predicted label maps, or several folders pooled (e.g. every
            ``fold_N/validation`` of a cross-validation; a name in two of them is an error).
        output_dir: where to write; default ``<prediction_dir>/evaluation`` (required for several folders).
        labels: classes to evaluate (mapping, JSON text or file); default autocmr LV/MYO/RV.
        metadata: ``cases.csv``-style table or path; default the ``cases.csv`` in or beside ``reference_dir``.
        by: metadata columns to break results down by (e.g. ``group``, ``vendor``, ``phase``), and/or
            ``slice_position`` for volume errors, Dice and added/missed slices by position in the LV.
        file_ending: ending of the image files.
        num_workers: processes reading and evaluating cases.
        write_outputs: False computes everything but writes no file.
        make_plots: False writes the tables only (plots take about a second each).
        ignore_labels: predicted label values counted as background (e.g. 3 = RV for an LV-only reference).
        base_end: which end of the slice axis is basal: ``auto`` (from the reference anatomy, see
            :mod:`autocmr.evaluation.slice_position`), ``first`` or ``last``.

    Raises:
        DatasetError: a folder is missing, has no reference files, or no case could be evaluated.
        ConfigurationError: bad labels or a breakdown column the metadata lacks.
    """
    reference_dir = Path(reference_dir)
    prediction_dirs = ([Path(prediction_dir)] if isinstance(prediction_dir, (str, Path))
                       else [Path(p) for p in prediction_dir])
    if not prediction_dirs:
        raise ConfigurationError("no prediction folder given")
    for folder, what in ((reference_dir, "reference"), *((p, "prediction") for p in prediction_dirs)):
        if not folder.is_dir():
            raise DatasetError(f"{folder}: {what} folder {no_folder(folder)}")
    if output_dir is None and write_outputs and len(prediction_dirs) > 1:
        raise ConfigurationError("several prediction folders need an output folder (-o)")
    label_map = scored_labels(resolve_labels(labels), ignore_labels)
    meta = load_metadata(metadata, search=(reference_dir, reference_dir.parent))
    _check_by(by, case_info([], meta))
    _check_base_end(base_end)
    _refuse_overwriting_metadata(output_dir, prediction_dirs, write_outputs, metadata,
                                 search=(reference_dir, reference_dir.parent))
    pairs, failures, unmatched = match_files(reference_dir, prediction_dirs, file_ending)
    if unmatched:
        logger.warning("%d prediction files have no reference and are ignored: %s", len(unmatched), unmatched[:5])
    _warn_about_inputs(pairs, meta, labels, file_ending)
    logger.info("evaluating %d cases from %s against %s", len(pairs), ", ".join(map(str, prediction_dirs)),
                reference_dir)
    rows: list[dict[str, Any]] = []
    profiles: list[SliceProfile] = []
    for case_rows, case_profiles, failure in _run_pairs(pairs, label_map, num_workers, ignore_labels,
                                                        SLICE_POSITION in (by or ())):
        rows += case_rows
        profiles += case_profiles
        if failure is not None:
            failures.append(failure)
    failures.sort(key=lambda f: f.case_id)
    out = Path(output_dir) if output_dir is not None else prediction_dirs[0] / DEFAULT_OUTPUT_SUBDIR
    out = out if write_outputs else None
    extra = {"reference_dir": str(reference_dir),
             "prediction_dir": (str(prediction_dirs[0]) if len(prediction_dirs) == 1
                                else list(map(str, prediction_dirs))),
             "unmatched_predictions": unmatched}
    return _finish(rows, failures, labels=label_map, metadata=meta, by=by, output_dir=out, extra=extra,
                   make_plots=make_plots, profiles=profiles, base_end=base_end)


def _refuse_overwriting_metadata(output_dir: str | Path | None, prediction_dirs: Sequence[Path], write_outputs: bool,
                                metadata: MetadataSpec, *, search: Sequence[Path]) -> None:
    """The per-case results table is ``cases.csv`` too: never write it over the case table being read."""
    if not write_outputs:
        return
    out = Path(output_dir) if output_dir is not None else prediction_dirs[0] / DEFAULT_OUTPUT_SUBDIR
    read = metadata_source(metadata, search)
    if read is not None and (out / CASES_CSV).resolve() == read.resolve():
        raise ConfigurationError(f"output folder {out} would overwrite the case table {read} this evaluation reads "
                                 "(the results table is cases.csv too); choose another output folder (-o)")


def _warn_about_inputs(pairs: Sequence[CasePair], meta: pd.DataFrame | None, labels: LabelsSpec,
                       file_ending: str) -> None:
    """Say what would otherwise pass silently: ACDC-named references scored with autocmr's labels, and cases
    the case table does not know (they fall into an 'unknown' group)."""
    acdc = [p.reference.name for p in pairs if p.reference.name.endswith(REFERENCE_SUFFIX + file_ending)]
    if acdc and labels is None:
        logger.warning("references named like ACDC's (%s...) are scored with autocmr's labels (1 LV, 2 MYO, 3 RV); "
                       "ACDC's own files use 1 RV, 2 MYO, 3 LV: convert them with autocmr_convert acdc, or give "
                       "--labels", acdc[0])
    if meta is not None and pairs:
        unknown = [p.case_id for p in pairs if p.case_id not in meta.index]
        if unknown:
            logger.warning("%d of %d cases have no row in the case table (e.g. %s; its ids look like %s): their "
                           "group and phase are unknown", len(unknown), len(pairs), unknown[0],
                           ", ".join(map(str, meta.index[:3])))


__all__ = ["EvaluationResult", "evaluate_cases", "evaluate_folders"]
