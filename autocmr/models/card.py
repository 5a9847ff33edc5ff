"""Building a model card from what a trained model folder holds: labels, training subjects and pathology
groups (``cases.csv``), configuration and options (``fold_N/options.json``), and cross-validation figures,
from an evaluation summary of the pooled cross-validation when given, else from the folds' own
final validations."""
from __future__ import annotations

import csv
import dataclasses
import json
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from autocmr.documents import layout
from autocmr.documents.model_card import ModelCard
from autocmr.documents.run_options import RunOptionsDocument
from autocmr.documents.versioning import read_json_document
from autocmr.errors import ConfigurationError
from autocmr.models.folder import ModelFolder

SHORT_AXIS_LIMITS = [
    "short-axis cine MR (bSSFP) only: not LGE, T1/T2 maps, perfusion or long-axis views",
    "trained on the scanners of its training data; check it on a few of your own cases first "
    "(autocmr_evaluate) and fine-tune if needed (autocmr_train --pretrained)",
    "research use; not a medical device",
]
# Agreement a clinical measure needs before the card stops warning about it: bias and mean absolute difference
# (pred - ref) of the pooled cross-validation. From published inter-reader and automated-method agreement
# (Bai et al. 2018 on UK Biobank; Suinesiaputra et al. 2015), the targets of issue #15 (README).
CLINICAL_TOLERANCES: dict[str, tuple[float | None, float, str]] = {  # measure: (|bias|, MAD, unit)
    "LVEDV": (None, 6.0, "mL"), "LVEF": (None, 3.5, "%"), "LVM": (4.0, 8.0, "g"),
    "RVEDV": (None, 8.5, "mL"), "RVEF": (3.0, 6.0, "%"),
}
OPTIONS_SHOWN = ("augmentation", "time_budget_s", "epochs", "iterations_per_epoch", "learning_rate", "seed",
                 "end_slice_oversampling", "precision")


def _cases_table(folder: Path) -> list[dict[str, str]]:
    path = folder / layout.CASES
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _training_data(model: ModelFolder) -> dict[str, Any]:
    rows = _cases_table(model.path)
    data: dict[str, Any] = {"dataset": model.plans.dataset_name, "cases": len(rows) or None}
    if rows and "subject" in rows[0]:
        subjects = {r["subject"]: r.get("group", "") for r in rows}
        data["subjects"] = len(subjects)
        groups = Counter(g for g in subjects.values() if g)
        if groups:
            data["groups (subjects)"] = dict(sorted(groups.items()))
    return data


def _training(model: ModelFolder, folds: Sequence[str] | None) -> dict[str, Any]:
    info: dict[str, Any] = {"configuration": model.configuration.name, "plans": model.plans.plans_name,
                            "folds": [str(f) for f in folds] if folds else model.available_folds("final")}
    per_fold = {}
    for fold in info["folds"]:
        path = model.path / layout.fold_dir_name(fold) / layout.RUN_OPTIONS
        if path.is_file():
            per_fold[fold] = RunOptionsDocument.load(path).options
    for key in OPTIONS_SHOWN:
        values = {fold: options.get(key) for fold, options in per_fold.items()}
        if len({json.dumps(v) for v in values.values()}) > 1:  # an ensemble of folds trained differently says so
            info[key] = {f"fold {fold}": value for fold, value in values.items()}
        elif values and (value := next(iter(values.values()))) is not None:
            info[key] = value
    return info


def figures_from_summary(summary: dict[str, Any], source: str) -> dict[str, Any]:
    """Per-class Dice/HD95 means and clinical agreement from an evaluation ``summary.json``."""
    classes = {name: {"dice": s.get("dice", {}).get("mean"), "hd95": s.get("hd95", {}).get("mean")}
               for name, s in (summary.get("classes") or {}).items()}
    clinical = {m: {"bias": a.get("bias"), "loa": [a.get("loa_lower"), a.get("loa_upper")],
                    "mad": a.get("mean_abs_diff")}
                for m, a in ((summary.get("clinical") or {}).get("agreement") or {}).items()}
    return {"source": source, "classes": classes, "clinical": clinical}


def accuracy_limits(figures: dict[str, Any]) -> list[str]:
    """One limit per clinical measure whose cross-validated agreement is outside :data:`CLINICAL_TOLERANCES`,
    with its figures, so that a card never claims more than its cross-validation showed."""
    clinical = figures.get("clinical") or {}
    limits = []
    for measure, (max_bias, max_mad, unit) in CLINICAL_TOLERANCES.items():
        agreement = clinical.get(measure) or {}
        bias, mad = agreement.get("bias"), agreement.get("mad")
        if bias is None or mad is None:
            continue
        if mad > max_mad or (max_bias is not None and abs(bias) > max_bias):
            wanted = f"|bias| <= {max_bias:g} {unit} and " if max_bias is not None else ""
            limits.append(f"{measure}: bias {bias:+.1f} {unit}, mean absolute difference {mad:.1f} {unit} on the "
                          f"cross-validation, outside human-reader agreement ({wanted}MAD <= {max_mad:g} {unit}); "
                          f"check it by eye before use")
    return limits


def _figures_from_folds(model: ModelFolder) -> dict[str, Any]:
    paths = sorted(model.path.glob(f"{layout.FOLD_PREFIX}*/{layout.VALIDATION_DIR}/{layout.VALIDATION_SUMMARY}"))
    if not paths:
        return {}
    per_fold = [figures_from_summary(read_json_document(p, kind="validation summary", what_to_rerun="retrain the "
                                                        "fold"), "") for p in paths]
    classes: dict[str, Any] = {}
    for name in per_fold[0]["classes"]:
        classes[name] = {metric: _mean([f["classes"].get(name, {}).get(metric) for f in per_fold])
                         for metric in ("dice", "hd95")}
    return {"source": f"mean of {len(paths)} fold validation(s), per-fold clinical agreement not pooled",
            "classes": classes, "clinical": {}}


def _mean(values: list[Any]) -> float | None:
    kept = [float(v) for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def domain_figures(document: dict[str, Any], source: str) -> dict[str, Any]:
    """The card's ``domains`` from a results document of ``benchmarks/model_domains.py``: per test set (in-domain
    cross-validation, simulated scanner change, another vendor's study) its description, size, per-class Dice
    and HD95, mean Dice and each clinical measure's bias and mean absolute difference."""
    test_sets = document.get("domains")
    if not isinstance(test_sets, dict) or not test_sets:
        raise ConfigurationError(f"{source}: no 'domains' object; expected the results of benchmarks/model_domains.py")
    if document.get("complete") is False:
        raise ConfigurationError(f"{source}: the model_domains run is incomplete (fewer folds or patients)")
    figures = {}
    for key, t in test_sets.items():
        if not isinstance(t, dict) or "classes" not in t:
            raise ConfigurationError(f"{source}: test set {key!r} has no per-class figures")
        figures[key] = {
            "description": t.get("description", key), "volumes": t.get("n_volumes"), "subjects": t.get("n_subjects"),
            "classes": {name: {"dice": c.get("dice"), "hd95": c.get("hd95")} for name, c in t["classes"].items()},
            "mean_dice": t.get("mean_dice"),
            "clinical": {m: {"bias": c.get("bias"), "mad": c.get("mean_abs_diff")}
                         for m, c in (t.get("clinical") or {}).items() if c.get("bias") is not None},
        }
    mirroring = "with" if (document.get("args") or {}).get("mirror") else "without"
    return {"source": f"{source}; {mirroring} test-time mirroring", "test_sets": figures}


def build_model_card(folder: str | Path, *, name: str, cv_summary: Path | None = None,
                     extra: dict[str, Any] | None = None, folds: Sequence[str] | None = None,
                     domains: Path | None = None) -> ModelCard:
    """A card for the model in ``folder``. ``cv_summary``: evaluation summary of the pooled cross-validation;
    ``extra``: card fields given by the author (intended use, licence, recipe and commit...), which win;
    ``folds``: the folds the card's model holds (a packed selection), default every trained one;
    ``domains``: results of ``benchmarks/model_domains.py`` (figures on other scanners and vendors)."""
    model = ModelFolder.open(folder)
    across = (domain_figures(read_json_document(domains, kind="model_domains results",
                                                what_to_rerun="run benchmarks/model_domains.py"), domains.name)
              if domains else {})
    figures = (figures_from_summary(read_json_document(cv_summary, kind="evaluation summary", what_to_rerun=
                                                       "run autocmr_evaluate"), str(cv_summary))
               if cv_summary else _figures_from_folds(model))
    fields: dict[str, Any] = {
        "name": name, "labels": dict(model.plans.labels), "training_data": _training_data(model),
        "training": _training(model, folds), "cross_validation": figures,
        "domains": across,
        "limits": list(SHORT_AXIS_LIMITS) + accuracy_limits(figures),
        "intended_use": "segmentation of LV cavity, LV myocardium and RV cavity in short-axis cine MR for "
                        "research: volumes, ejection fractions and LV mass",
    }
    if extra is not None and not isinstance(extra, dict):
        raise ConfigurationError(f"the card fields must be a JSON object, got {type(extra).__name__}")
    unknown = sorted(set(extra or {}) - {f.name for f in dataclasses.fields(ModelCard)})
    if unknown:
        raise ConfigurationError(f"unknown model card field(s) {unknown}; known: "
                                 f"{sorted(f.name for f in dataclasses.fields(ModelCard))}")
    for key, value in (extra or {}).items():
        if isinstance(value, dict) and isinstance(fields.get(key), dict):
            fields[key] = {**fields[key], **value}
        else:
            fields[key] = value
    return ModelCard(**fields)
