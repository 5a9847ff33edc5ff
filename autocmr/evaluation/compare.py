"""Compare two prediction folders against the same references: paired per-case differences and tests.

Writes into the output folder: ``A/`` and ``B/`` (the full evaluation of each), ``comparison.json``,
``comparison_cases.csv`` (per case x class: metric of A, of B, and B - A), ``comparison_breakdowns.csv`` and
``comparison.png``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from autocmr.evaluation import plots
from autocmr.evaluation.agreement import paired_comparison
from autocmr.evaluation.evaluate import EvaluationResult, LabelsSpec, MetadataSpec, evaluate_folders
from autocmr.evaluation.metrics import ASSD, DICE, HD, HD95, IOU, METRICS
from autocmr.evaluation.position_report import SLICE_POSITION
from autocmr.evaluation.report import SUMMARY_SCHEMA_VERSION, group_values, json_safe
from autocmr.errors import ConfigurationError, DatasetError, no_folder
from autocmr.io.atomic import write_json_atomic, write_text_atomic

PAIRED_METRICS = (DICE, IOU, HD, HD95, ASSD)
COMPARISON_JSON = "comparison.json"
# Metrics shown on the terminal (all of PAIRED_METRICS are in comparison.json).
TERMINAL_METRICS = (DICE, HD95)


@dataclass
class ComparisonResult:
    """Paired comparison of predictions A and B; ``a`` and ``b`` are their own evaluations."""

    summary: dict[str, Any]
    paired: pd.DataFrame
    a: EvaluationResult
    b: EvaluationResult
    output_dir: Path | None = None

    def report(self) -> str:
        return format_comparison(self.summary)


def paired_cases(a_cases: pd.DataFrame, b_cases: pd.DataFrame) -> pd.DataFrame:
    """Rows evaluated in both A and B (same case and class): ``<metric>_a``, ``<metric>_b``, ``<metric>_diff``."""
    keys = ["case_id", "class"]
    info = [c for c in a_cases.columns if c not in METRICS]
    left = a_cases[info + list(PAIRED_METRICS)].rename(columns={m: f"{m}_a" for m in PAIRED_METRICS})
    right = b_cases[keys + list(PAIRED_METRICS)].rename(columns={m: f"{m}_b" for m in PAIRED_METRICS})
    merged = left.merge(right, on=keys, how="inner")
    for m in PAIRED_METRICS:
        merged[f"{m}_diff"] = merged[f"{m}_b"] - merged[f"{m}_a"]
    return merged


def _per_class(paired: pd.DataFrame, classes: Sequence[str]) -> dict[str, Any]:
    return {c: {m: paired_comparison(paired.loc[paired["class"] == c, f"{m}_a"].to_numpy(float),
                                     paired.loc[paired["class"] == c, f"{m}_b"].to_numpy(float))
                for m in PAIRED_METRICS} for c in classes}


def comparison_summary(paired: pd.DataFrame, a: EvaluationResult, b: EvaluationResult, classes: Sequence[str],
                       by: Sequence[str]) -> tuple[dict[str, Any], pd.DataFrame]:
    """The comparison dict (per class and per breakdown group) and the long breakdown table."""
    nested: dict[str, Any] = {}
    rows = []
    for column in by:
        groups = group_values(paired, column)
        nested[column] = {}
        for value in sorted(groups.unique()):
            per = _per_class(paired[groups == value], classes)
            nested[column][value] = per
            rows += [{"by": column, "value": value, "class": c, "metric": m, **d}
                     for c, metrics in per.items() for m, d in metrics.items()]
    ids_a, ids_b = set(a.cases["case_id"]), set(b.cases["case_id"])
    summary = {
        "schema_version": SUMMARY_SCHEMA_VERSION,
        "n_paired_cases": int(paired["case_id"].nunique()),
        "only_in_a": sorted(ids_a - ids_b), "only_in_b": sorted(ids_b - ids_a),
        "difference": "B - A; Wilcoxon signed-rank test (two-sided) on the paired per-case values",
        "classes": _per_class(paired, classes),
        "breakdowns": nested,
        "failures_a": [f.to_dict() for f in a.failures], "failures_b": [f.to_dict() for f in b.failures],
    }
    return json_safe(summary), pd.DataFrame(rows)


def compare_predictions(reference_dir: str | Path, prediction_a: str | Path, prediction_b: str | Path,
                        output_dir: str | Path | None, *, labels: LabelsSpec = None, metadata: MetadataSpec = None,
                        by: Sequence[str] | None = None, file_ending: str = ".nii.gz",
                        num_workers: int = 1, make_plots: bool = True, ignore_labels: Sequence[int] = (),
                        base_end: str = "auto") -> ComparisonResult:
    """Evaluate predictions A and B against the same references and compare them case by case.

    Arguments as :func:`autocmr.evaluation.evaluate.evaluate_folders` (``ignore_labels`` and ``base_end`` apply
    to both); ``output_dir`` None writes nothing (not even the evaluations of A and B).
    """
    for folder in (prediction_a, prediction_b):  # both before A is scored: a typo in B must not cost A's work
        if not Path(folder).is_dir():
            raise DatasetError(f"{folder}: prediction folder {no_folder(folder)}")
    out = Path(output_dir) if output_dir is not None else None
    options: dict[str, Any] = dict(labels=labels, metadata=metadata, by=by, file_ending=file_ending,
                                   num_workers=num_workers, make_plots=make_plots, ignore_labels=ignore_labels,
                                   base_end=base_end)
    options["write_outputs"] = out is not None
    a = evaluate_folders(reference_dir, prediction_a, out / "A" if out else None, **options)
    b = evaluate_folders(reference_dir, prediction_b, out / "B" if out else None, **options)
    classes = list(a.summary["labels"])
    paired = paired_cases(a.cases, b.cases)
    if paired.empty:  # an all-"n/a" comparison would read as a tie
        raise ConfigurationError(f"{prediction_a} and {prediction_b} have no evaluated case in common: nothing to "
                                 "compare (are they predictions of the same reference cases?)")
    # the slice-position breakdown is in A/ and B/; paired groups are per-case metadata columns only
    summary, table = comparison_summary(paired, a, b, classes, [c for c in by or [] if c != SLICE_POSITION])
    summary = {"reference_dir": str(reference_dir), "prediction_a": str(prediction_a),
               "prediction_b": str(prediction_b), **summary}
    if out is not None:
        write_json_atomic(out / COMPARISON_JSON, summary)
        write_text_atomic(out / "comparison_cases.csv", paired.to_csv(index=False))
        if not table.empty:
            write_text_atomic(out / "comparison_breakdowns.csv", table.to_csv(index=False))
        if make_plots:
            names = (f"A: {Path(prediction_a).name}", f"B: {Path(prediction_b).name}")
            plots.plot_comparison(paired, classes, out / "comparison.png", names=names)
    return ComparisonResult(summary, paired, a, b, out)


def _fmt(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def format_comparison(summary: Mapping[str, Any]) -> str:
    """Terminal text: per class, mean Dice and HD95 of A and B, mean difference and Wilcoxon p."""
    lines = [f"A = {summary.get('prediction_a', 'A')}", f"B = {summary.get('prediction_b', 'B')}",
             f"{summary['n_paired_cases']} cases evaluated in both"
             + (f" ({len(summary.get('only_in_a') or [])} only in A, {len(summary.get('only_in_b') or [])} only in B)."
                if summary.get("only_in_a") or summary.get("only_in_b") else "."),
             f"{'class':<8}{'metric':<8}{'n':>5}{'mean A':>10}{'mean B':>10}{'B - A':>10}{'Wilcoxon p':>12}"]
    for name, per in summary["classes"].items():
        for m in TERMINAL_METRICS:
            d = per[m]
            fmt = ".3f" if m == DICE else ".2f"
            lines.append(f"{name:<8}{m:<8}{d['n']:>5}{_fmt(d['mean_a'], fmt):>10}{_fmt(d['mean_b'], fmt):>10}"
                         f"{_fmt(d['mean_diff'], fmt):>10}{_fmt(d['wilcoxon_p'], '.3g'):>12}")
    for side in ("a", "b"):
        failures = summary.get(f"failures_{side}", [])
        if failures:
            lines.append(f"Failed in {side.upper()} ({len(failures)}): "
                         + "; ".join(f"{f['case_id']}: {f['reason']}" for f in failures[:10]))
    return "\n".join(lines)


__all__ = ["ComparisonResult", "compare_predictions", "format_comparison", "paired_cases"]
