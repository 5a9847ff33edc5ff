"""The analysis tables: ``measures.csv`` (one row per subject), ``volumes.csv`` (one row per frame) and
``qc.csv`` (one row per subject, one column per QC flag). File names and columns live here only; units are
in the column names. Rows are sorted with the subjects to review first."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd

from autocmr.analysis.measures import SubjectMeasures, cardiac_output_l_per_min
from autocmr.analysis.qc import QC_FLAGS, QcResult
from autocmr.evaluation.clinical import MEASURE_UNITS, MEASURES, STRUCTURES
from autocmr.inference.parts import with_suffix
from autocmr.io.atomic import write_text_atomic

MEASURES_CSV, VOLUMES_CSV, QC_CSV, REPORT_HTML, FIGURES_DIR = ("measures.csv", "volumes.csv", "qc.csv",
                                                               "report.html", "figures")
UNIT_SUFFIX = {"mL": "mL", "%": "percent", "g": "g"}
MEASURE_COLUMNS = {m: f"{m}_{UNIT_SUFFIX[MEASURE_UNITS[m]]}" for m in MEASURES}  # LVEF -> LVEF_percent
OK, FAILED = "ok", "failed"
FLOAT_FORMAT = "%.6g"
# a text cell starting with one of these is run as a formula by spreadsheet programs (CSV injection)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@dataclass
class SubjectReport:
    """Everything the tables and the HTML report say about one subject (or one failed case)."""

    subject: str
    status: str = OK
    measures: SubjectMeasures | None = None
    qc: QcResult = field(default_factory=QcResult)
    sources: list[str] = field(default_factory=list)
    n_slices: int | None = None
    heart_rate_bpm: float | None = None
    grouped_by: str = ""
    notes: list[str] = field(default_factory=list)
    figure: str | None = None  # path relative to the output folder

    @property
    def review(self) -> bool:
        return self.status != OK or self.qc.review

    @property
    def uncertainty(self) -> float:
        """The score the QC judged: the ED/ES masks' (:attr:`SubjectMeasures.uncertainty`), or the first mask's
        when there is neither; NaN for a failed subject."""
        return self.qc.metrics.get("uncertainty", math.nan)

    def frame_of(self, phase: str) -> tuple[str, object]:
        """(case, frame) of the ED or ES mask, empty when not known."""
        frame = None if self.measures is None else (self.measures.ed if phase == "ED" else self.measures.es)
        if frame is None:
            return "", None
        return frame.case, frame.frame


def sort_for_review(reports: Sequence[SubjectReport]) -> list[SubjectReport]:
    """Failed first, then flagged (most flags first), then the rest; by subject name within each."""
    return sorted(reports, key=lambda r: (r.status == OK, not r.review, -len(r.qc.flags), r.subject))


def measures_table(reports: Sequence[SubjectReport]) -> pd.DataFrame:
    rows = []
    for r in sort_for_review(reports):
        values = r.measures.measures if r.measures is not None else {m: math.nan for m in MEASURES}
        (ed_case, ed_frame), (es_case, es_frame) = r.frame_of("ED"), r.frame_of("ES")
        row: dict[str, object] = {"subject": r.subject, "status": r.status, "review": r.review,
                                  "qc_flags": ";".join(r.qc.flags), "uncertainty": r.uncertainty,
                                  "ED_frame": ed_frame, "ES_frame": es_frame, "ED_case": ed_case, "ES_case": es_case}
        row.update({MEASURE_COLUMNS[m]: values[m] for m in MEASURES})
        row["HR_bpm"] = r.heart_rate_bpm if r.heart_rate_bpm is not None else math.nan
        row["CO_L_per_min"] = cardiac_output_l_per_min(values["LVSV"], r.heart_rate_bpm)
        row.update({"n_slices": r.n_slices, "grouped_by": r.grouped_by, "source_files": ";".join(r.sources),
                    "notes": " | ".join(r.notes)})
        rows.append(row)
    table = pd.DataFrame(rows, columns=list(_measure_columns()))
    return table.astype({"ED_frame": "Int64", "ES_frame": "Int64", "n_slices": "Int64"})


def _measure_columns() -> list[str]:
    return (["subject", "status", "review", "qc_flags", "uncertainty", "ED_frame", "ES_frame", "ED_case", "ES_case"]
            + list(MEASURE_COLUMNS.values())
            + ["HR_bpm", "CO_L_per_min", "n_slices", "grouped_by", "source_files", "notes"])


def volumes_table(reports: Sequence[SubjectReport]) -> pd.DataFrame:
    rows = []
    for r in sorted(reports, key=lambda r: r.subject):
        for v in r.measures.volume_rows if r.measures is not None else []:
            row = {"subject": r.subject, "case": v["case"], "frame": v["frame"], "phase": v["phase"]}
            row.update({f"{s}_mL": v[s] for s in STRUCTURES})
            row["uncertainty"] = v["uncertainty"]
            row["prediction"] = v["prediction"]
            rows.append(row)
    columns = ["subject", "case", "frame", "phase"] + [f"{s}_mL" for s in STRUCTURES] + ["uncertainty", "prediction"]
    return pd.DataFrame(rows, columns=columns).astype({"frame": "Int64"})


def qc_table(reports: Sequence[SubjectReport]) -> pd.DataFrame:
    metric_names = sorted({k for r in reports for k in r.qc.metrics} - {"uncertainty"})
    rows = []
    for r in sort_for_review(reports):
        row: dict[str, object] = {"subject": r.subject, "status": r.status, "review": r.review,
                                  "n_flags": len(r.qc.flags), "flags": ";".join(r.qc.flags),
                                  "uncertainty": r.uncertainty}
        row.update({flag: int(flag in r.qc.flags) for flag in QC_FLAGS})
        row.update({name: r.qc.metrics.get(name, math.nan) for name in metric_names})
        rows.append(row)
    columns = ["subject", "status", "review", "n_flags", "flags", "uncertainty"] + list(QC_FLAGS) + metric_names
    return pd.DataFrame(rows, columns=columns)


def write_tables(reports: Sequence[SubjectReport], output_dir: str | Path, *, suffix: str = "") -> dict[str, Path]:
    """Write the three tables atomically into ``output_dir`` (names get ``suffix``, e.g. ``_part0``)."""
    out = Path(output_dir)
    written = {}
    for name, table in ((MEASURES_CSV, measures_table(reports)), (VOLUMES_CSV, volumes_table(reports)),
                        (QC_CSV, qc_table(reports))):
        path = out / with_suffix(name, suffix)
        write_text_atomic(path, spreadsheet_safe(table).to_csv(index=False, float_format=FLOAT_FORMAT))
        written[name] = path
    return written


def spreadsheet_safe(table: pd.DataFrame) -> pd.DataFrame:
    """The table with a leading apostrophe on text cells a spreadsheet would run as a formula. Subject names and
    source files come from DICOM PatientIDs and file names, which anyone can set to ``=HYPERLINK(...)``; these
    tables are made to be opened in Excel by the people who review the results (OWASP's CSV-injection advice).
    Numbers are untouched: a negative volume is a number column, not text."""
    out = table.copy()
    for column in out.columns:
        if not pd.api.types.is_numeric_dtype(out[column]):
            out[column] = out[column].map(
                lambda v: f"'{v}" if isinstance(v, str) and v.startswith(FORMULA_STARTS) else v)
    return out


__all__ = ["FIGURES_DIR", "MEASURES_CSV", "MEASURE_COLUMNS", "QC_CSV", "REPORT_HTML", "SubjectReport", "VOLUMES_CSV",
           "measures_table", "qc_table", "sort_for_review", "spreadsheet_safe", "volumes_table",
           "write_tables"]
