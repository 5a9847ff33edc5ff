"""Evaluation of predicted label maps: overlap and surface-distance metrics, clinical measures (volumes,
ejection fractions, LV mass) and their agreement with a reference, breakdowns by metadata, comparisons.

Public entry points::

    case_metrics(reference, prediction, spacing, labels)           # one case, per class
    clinical_measures(ed_mask, es_mask, spacing)                   # one subject
    evaluate_cases(cases, output_dir=None, ...)                    # in memory (trainer validation)
    evaluate_folders(reference_dir, prediction_dir, ...)           # files -> summary.json, cases.csv, plots
    evaluate_folders(..., by=["slice_position", "group"])          # + errors by basal/mid/apical position
    compare_predictions(reference_dir, prediction_a, prediction_b, output_dir, ...)

Submodules import matplotlib only when plotting and pandas/scipy when used through these functions.
"""
from __future__ import annotations

from typing import Any

_EXPORTS = {
    "case_metrics": "autocmr.evaluation.metrics",
    "agreement_stats": "autocmr.evaluation.agreement",
    "describe": "autocmr.evaluation.agreement",
    "paired_comparison": "autocmr.evaluation.agreement",
    "clinical_measures": "autocmr.evaluation.clinical",
    "clinical_table": "autocmr.evaluation.clinical",
    "clinical_table_from_masks": "autocmr.evaluation.clinical",
    "ed_es_from_curve": "autocmr.evaluation.clinical",
    "EdEs": "autocmr.evaluation.phases",
    "find_ed_es": "autocmr.evaluation.phases",
    "CaseFailure": "autocmr.evaluation.cases",
    "EvaluationResult": "autocmr.evaluation.evaluate",
    "evaluate_cases": "autocmr.evaluation.evaluate",
    "evaluate_folders": "autocmr.evaluation.evaluate",
    "ComparisonResult": "autocmr.evaluation.compare",
    "compare_predictions": "autocmr.evaluation.compare",
}


def __getattr__(name: str) -> Any:
    # Lazy: ``import autocmr.evaluation`` stays cheap for the trainer and the CLI's --help.
    if name in _EXPORTS:
        from importlib import import_module

        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'autocmr.evaluation' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
