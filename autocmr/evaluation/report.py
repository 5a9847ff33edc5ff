"""Summaries of an evaluation (per class, per metadata group, clinical agreement), files and terminal text.

``summary.json`` layout (schema version :data:`SUMMARY_SCHEMA_VERSION`)::

    {"schema_version", "n_cases", "n_volumes" (4D frames count one each), "n_failed", "n_missing", "labels",
     "definitions",
     "classes": {class: {metric: {"mean", "sd", "median", "min", "max", "n", "n_defined", "n_undefined"}}},
     "mean_over_classes": {metric: mean of the class means},
     "empty": {class: {"both": n, "reference_only": n, "prediction_only": n}},
     "clinical": {"n_subjects", "n_complete" (every measure scored), "units", "agreement": {measure:
                  agreement_stats}, "skipped_subjects": {subject: note}, "subjects_with_notes": {subject: note}},
     "breakdowns": {column: {value: {class: {metric: description}}}},
     "failures": [{"case_id", "file", "reason"}], "unmatched_predictions": [file names], ...}

Undefined statistics are written as ``null``.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from autocmr.evaluation.agreement import agreement_stats, describe
from autocmr.evaluation.cases import CaseFailure
from autocmr.evaluation.clinical import MEASURE_UNITS, MEASURES
from autocmr.evaluation.metrics import ASSD, DICE, HD, HD95, IOU, METRICS, VOL_PRED, VOL_REF
from autocmr.io.atomic import write_json_atomic, write_text_atomic

SUMMARY_SCHEMA_VERSION = 1
SUMMARY_JSON = "summary.json"
CASES_CSV = "cases.csv"
CLINICAL_CSV = "clinical.csv"
BREAKDOWNS_CSV = "breakdowns.csv"
# Metrics described per breakdown group (volumes are case properties, not quality measures).
BREAKDOWN_METRICS = (DICE, IOU, HD, HD95, ASSD)
# Value shown for cases whose metadata lacks the breakdown column.
UNKNOWN_GROUP = "unknown"
DEFINITIONS = {
    "surface": "boundary voxels: foreground voxels with a face-connected background neighbour; outside the "
               "image counts as background",
    "hd": "max of the two directed maxima of voxel-centre surface distances (mm)",
    "hd95": "max of the two directed 95th percentiles of surface distances (mm)",
    "assd": "mean of the surface distances of both directions pooled (mm), the mean contour distance",
    "empty": "both masks empty: Dice 1, IoU 1, distances 0; one empty: Dice 0, IoU 0, distances undefined "
             "(excluded from means, counted in n_undefined)",
    "agreement": "differences are predicted - reference; limits of agreement = bias +- 1.96 SD",
}


def json_safe(value: Any) -> Any:
    """Nested structure with NaN/inf as None and numpy scalars as Python numbers (strict JSON)."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if value is pd.NA:
        return None
    return value


def class_statistics(cases: pd.DataFrame, classes: Sequence[str], metrics: Sequence[str] = METRICS) -> dict[str, Any]:
    """class -> metric -> :func:`describe` over the rows of that class."""
    out: dict[str, Any] = {}
    for name in classes:
        rows = cases[cases["class"] == name]
        out[name] = {m: describe(rows[m].to_numpy(dtype=float)) for m in metrics}
    return out


def mean_over_classes(stats: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> dict[str, float | None]:
    """For each quality metric, the mean of the per-class means (classes with no defined value skipped)."""
    out: dict[str, float | None] = {}
    for metric in BREAKDOWN_METRICS:
        means = [s[metric]["mean"] for s in stats.values() if s[metric]["mean"] is not None]
        out[metric] = float(np.mean(means)) if means else None
    return out


def empty_counts(cases: pd.DataFrame, classes: Sequence[str]) -> dict[str, dict[str, int]]:
    out = {}
    for name in classes:
        rows = cases[cases["class"] == name]
        ref_empty, pred_empty = rows[VOL_REF] == 0, rows[VOL_PRED] == 0
        out[name] = {"both": int((ref_empty & pred_empty).sum()),
                     "reference_only": int((ref_empty & ~pred_empty).sum()),
                     "prediction_only": int((~ref_empty & pred_empty).sum())}
    return out


def group_values(cases: pd.DataFrame, column: str) -> pd.Series:
    """The breakdown value of each row as text (missing -> ``unknown``)."""
    values = cases[column] if column in cases.columns else pd.Series(pd.NA, index=cases.index)
    return values.astype(object).where(values.notna(), UNKNOWN_GROUP).astype(str)


def breakdowns(cases: pd.DataFrame, by: Sequence[str], classes: Sequence[str]) -> tuple[dict[str, Any], pd.DataFrame]:
    """Per-class statistics for each value of each metadata column; as nested dict and as a long table."""
    nested: dict[str, Any] = {}
    rows = []
    for column in by:
        values = group_values(cases, column)
        nested[column] = {}
        for value in sorted(values.unique()):
            stats = class_statistics(cases[values == value], classes, BREAKDOWN_METRICS)
            nested[column][value] = stats
            rows += [{"by": column, "value": value, "class": c, "metric": m, **d}
                     for c, per in stats.items() for m, d in per.items()]
    columns = ["by", "value", "class", "metric", "mean", "sd", "median", "min", "max", "n", "n_defined", "n_undefined"]
    return nested, pd.DataFrame(rows, columns=columns)


def clinical_summary(clinical: pd.DataFrame | None) -> dict[str, Any]:
    """Agreement of predicted with reference measures over subjects (empty when no subject qualifies)."""
    if clinical is None or clinical.empty:
        return {"n_subjects": 0, "n_complete": 0, "units": MEASURE_UNITS, "agreement": {},
                "note": "no subject with both ED and ES (metadata 'subject'/'phase', CASE_ED/CASE_ES ids, or 4D)"}
    # complete: every measure scored, reference and prediction (a note may still warn, e.g. a reference on two
    # slices, whose volumes are scored all the same). Measures no reference has (no RV in an LV/MYO-only
    # dataset such as Sunnybrook's) are not asked of anyone
    scored = [m for m in MEASURES if np.isfinite(clinical[f"ref_{m}"].to_numpy(dtype=float)).any()]
    values = clinical[[f"{side}_{m}" for side in ("ref", "pred") for m in scored]].to_numpy(dtype=float)
    complete = np.isfinite(values).all(axis=1) if scored else np.zeros(len(clinical), bool)
    agreement = {m: agreement_stats(clinical[f"ref_{m}"].to_numpy(dtype=float),
                                    clinical[f"pred_{m}"].to_numpy(dtype=float)) for m in MEASURES}
    notes = clinical["note"].fillna("").astype(str)
    skipped = {str(s): n or "some measures undefined" for s, n, ok in zip(clinical["subject"], notes, complete)
               if not ok}
    noted = {str(s): n for s, n, ok in zip(clinical["subject"], notes, complete) if ok and n}
    return {"n_subjects": int(len(clinical)), "n_complete": int(complete.sum()), "units": MEASURE_UNITS,
            "agreement": agreement, "skipped_subjects": skipped, "subjects_with_notes": noted}


def build_summary(cases: pd.DataFrame, classes: Sequence[str], *, labels: Mapping[str, int],
                  failures: Sequence[CaseFailure], clinical: pd.DataFrame | None, by: Sequence[str],
                  extra: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], pd.DataFrame]:
    """The summary dict (see module docstring) and the long breakdown table."""
    stats = class_statistics(cases, classes)
    nested, table = breakdowns(cases, by, classes)
    summary: dict[str, Any] = {
        "schema_version": SUMMARY_SCHEMA_VERSION,
        **(dict(extra) if extra else {}),
        "n_cases": int(cases["source_case"].nunique()),
        "n_volumes": int(cases["case_id"].nunique()),
        "n_failed": sum(not f.missing for f in failures),  # could not be evaluated
        "n_missing": sum(f.missing for f in failures),  # reference cases without a prediction (a subset predicted)
        "labels": dict(labels),
        "definitions": DEFINITIONS,
        "classes": stats,
        "mean_over_classes": mean_over_classes(stats),
        "empty": empty_counts(cases, classes),
        "clinical": clinical_summary(clinical),
        "breakdowns": nested,
        "failures": [f.to_dict() for f in failures],
    }
    return json_safe(summary), table


def write_tables(output_dir: Path, summary: Mapping[str, Any], cases: pd.DataFrame,
                 clinical: pd.DataFrame | None, breakdown_table: pd.DataFrame) -> list[Path]:
    """Write summary.json, cases.csv, clinical.csv and breakdowns.csv atomically; returns the paths."""
    output_dir.mkdir(parents=True, exist_ok=True)
    written = [output_dir / SUMMARY_JSON, output_dir / CASES_CSV]
    write_json_atomic(written[0], json_safe(summary))
    write_text_atomic(written[1], cases.to_csv(index=False))
    if clinical is not None and not clinical.empty:
        written.append(output_dir / CLINICAL_CSV)
        write_text_atomic(written[-1], clinical.to_csv(index=False))
    if not breakdown_table.empty:
        written.append(output_dir / BREAKDOWNS_CSV)
        write_text_atomic(written[-1], breakdown_table.to_csv(index=False))
    return written


def _pm(d: Mapping[str, Any], fmt: str) -> str:
    if d["mean"] is None:
        return "n/a"
    text = format(d["mean"], fmt) + ("±" + format(d["sd"], fmt) if d["sd"] is not None else "")
    return text + (f" ({d['n_undefined']} undef.)" if d["n_undefined"] else "")


def format_summary(summary: Mapping[str, Any], *, max_failures: int = 20) -> str:
    """Concise terminal text: per-class mean±SD of Dice, IoU, HD95, ASSD; clinical agreement; failures."""
    missing = summary.get("n_missing", 0)
    lines = [f"Evaluated {summary['n_cases']} cases ({summary['n_volumes']} volumes), "
             f"{summary['n_failed']} failed" + (f", {missing} reference case(s) not predicted." if missing else ".")]
    lines.append(f"{'class':<8}{'n':>5}  {'Dice':<20}{'IoU':<20}{'HD95 (mm)':<24}{'ASSD (mm)':<24}")
    for name, per in summary["classes"].items():
        lines.append(f"{name:<8}{per[DICE]['n']:>5}  {_pm(per[DICE], '.3f'):<20}{_pm(per[IOU], '.3f'):<20}"
                     f"{_pm(per[HD95], '.2f'):<24}{_pm(per[ASSD], '.2f'):<24}")
    clinical = summary.get("clinical", {})
    if clinical.get("agreement"):
        lines.append(f"\nClinical agreement, predicted - reference ({clinical['n_complete']} subjects):")
        lines.append(f"{'measure':<8}{'unit':<6}{'n':>4}{'ref mean':>10}{'pred mean':>11}{'bias':>9}"
                     f"{'95% LoA':>22}{'MAD':>8}{'Spearman':>10}")
        for m, a in clinical["agreement"].items():
            lines.append(f"{m:<8}{clinical['units'][m]:<6}{a['n']:>4}{_num(a['reference_mean'], 10)}"
                         f"{_num(a['predicted_mean'], 11)}"
                         f"{_num(a['bias'], 9)}{_loa(a):>22}{_num(a['mean_abs_diff'], 8)}"
                         f"{_num(a['spearman_r'], 10, '.3f')}")
    elif clinical.get("note"):
        lines.append(f"\nNo clinical measures: {clinical['note']}")
    skipped = clinical.get("skipped_subjects", {})
    if skipped:
        lines.append(f"Subjects with measures left out ({len(skipped)}):")
        lines += [f"  {subject}: {note}" for subject, note in list(skipped.items())[:5]]
    noted = clinical.get("subjects_with_notes", {})
    if noted:
        lines.append(f"Subjects scored with a note ({len(noted)}):")
        lines += [f"  {subject}: {note}" for subject, note in list(noted.items())[:5]]
    every = summary.get("failures", [])
    failures = [f for f in every if not f.get("missing")]
    not_predicted = [str(f["case_id"]) for f in every if f.get("missing")]
    if not_predicted:
        lines.append(f"\nReference cases without a prediction, not evaluated ({len(not_predicted)}): "
                     f"{', '.join(not_predicted[:10])}{' ...' if len(not_predicted) > 10 else ''}")
    if failures:
        lines.append(f"\nFailed cases ({len(failures)}):")
        lines += [f"  {f['case_id']}: {f['reason']}" + (f" [{f['file']}]" if f.get("file") else "")
                  for f in failures[:max_failures]]
        if len(failures) > max_failures:
            lines.append(f"  ... and {len(failures) - max_failures} more (see summary.json)")
    unmatched = summary.get("unmatched_predictions", [])
    if unmatched:
        lines.append(f"\nPredictions without reference, ignored ({len(unmatched)}): {', '.join(unmatched[:10])}"
                     + (" ..." if len(unmatched) > 10 else ""))
    return "\n".join(lines)


def _num(value: float | None, width: int, fmt: str = ".1f") -> str:
    return f"{'n/a' if value is None else format(value, fmt):>{width}}"


def _loa(a: Mapping[str, Any]) -> str:
    if a["loa_lower"] is None:
        return "n/a"
    return f"[{a['loa_lower']:.1f}, {a['loa_upper']:.1f}]"


__all__ = ["SUMMARY_JSON", "build_summary", "breakdowns", "class_statistics", "clinical_summary",
           "format_summary", "json_safe", "write_tables"]
