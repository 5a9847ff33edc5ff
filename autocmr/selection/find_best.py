"""Pick the best single configuration or softmax-average ensemble by cross-validation.

Every candidate (each model alone, and each combination of up to ``max_members`` models) is scored on the
validation cases common to all models, with :func:`autocmr.evaluation.evaluate_cases` (Dice, HD95, clinical
agreement, and the breakdown by slice position), written under ``OUT/candidates/<name>/``. The best by
``rank_by`` wins; ties go to the candidate with fewer members (cheaper to run). A clinical measure ranks by the
number of subjects on which it is undefined for the candidate first (a predicted end-diastolic volume of 0 leaves
an EF undefined: a candidate that fails a subject completely must not win on the others), then by its mean
absolute difference; a measure undefined for every candidate is an error. Its largest-component
postprocessing is then decided on the same predictions (as :mod:`autocmr.inference.postprocessing` does
for one model) and its figures are given with and without it. The result is ``OUT/selection.json``.
"""
from __future__ import annotations

import datetime
import itertools
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from autocmr.errors import ConfigurationError
from autocmr.evaluation import evaluate_cases
from autocmr.evaluation.cases import safe_name
from autocmr.evaluation.clinical import MEASURES
from autocmr.evaluation.evaluate import EvaluationResult
from autocmr.inference.postprocessing import decide_postprocessing
from autocmr.inference.predictor import PredictorOptions
from autocmr.io.atomic import write_text_atomic
from autocmr.io.image import read_image
from autocmr.selection.cv_probabilities import (CvModel, cache_source, ensure_probabilities, open_cv_model,
                                                read_probabilities, scored_weights)
from autocmr.selection.document import SELECTION_JSON, Member, Selection, prediction_settings

logger = logging.getLogger(__name__)

DEFAULT_RANK_BY = "dice"
CANDIDATES_DIR = "candidates"
CANDIDATES_CSV = "candidates.csv"
PROBABILITIES_DIR = "probabilities"
# rank_by names: mean foreground Dice (higher is better) or a clinical measure's mean absolute difference.
RANK_BY_NAMES = (DEFAULT_RANK_BY, *MEASURES)


@dataclass
class SelectionResult:
    """The chosen selection, every candidate's figures (best first), and where ``selection.json`` went."""

    selection: Selection
    candidates: pd.DataFrame
    path: Path

    def report(self) -> str:
        lines = [f"{'rank':<5}{'candidate':<60}{'Dice':>7}{'LVM MAD':>9}{'RVEF MAD':>9}{'LVEF MAD':>9}"]
        for r in self.candidates.itertuples(index=False):
            lines.append(f"{r.rank:<5}{r.name[:59]:<60}{r.dice_mean:>7.3f}{r.LVM_mad:>9.1f}{r.RVEF_mad:>9.1f}"
                         f"{r.LVEF_mad:>9.1f}")
        lines.append(f"\nChosen (by {self.selection.rank_by}): {self.selection.name}; postprocessing: "
                     f"foreground LCC {self.selection.postprocessing.foreground_lcc}, per label "
                     f"{list(self.selection.postprocessing.per_label_lcc)}\nWritten to {self.path}")
        return "\n".join(lines)


def figures(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The CV figures of one candidate from its evaluation summary."""
    agreement = summary.get("clinical", {}).get("agreement", {})
    return {"dice_mean": summary["mean_over_classes"]["dice"],
            "dice": {c: s["dice"]["mean"] for c, s in summary["classes"].items()},
            "hd95": {c: s["hd95"]["mean"] for c, s in summary["classes"].items()},
            "clinical": {m: {k: a.get(k) for k in ("bias", "mean_abs_diff", "spearman_r", "n", "n_excluded")}
                         for m, a in agreement.items()}}


def rank_key(rank_by: str) -> Callable[[Mapping[str, Any]], tuple[int, float]]:
    """Smaller is better: (0, -Dice), or (subjects on which the measure is undefined, its mean absolute
    difference). The count comes first: the mean absolute difference leaves those subjects out, so a candidate
    that fails a subject completely (no LV at ED: an undefined EF) would otherwise win on the remaining ones.
    An undefined value ranks last."""
    if rank_by not in RANK_BY_NAMES:
        raise ConfigurationError(f"rank_by {rank_by!r} unknown; valid: {list(RANK_BY_NAMES)}")

    def key(fig: Mapping[str, Any]) -> tuple[int, float]:
        if rank_by == DEFAULT_RANK_BY:
            excluded, value = 0, (-fig["dice_mean"] if fig["dice_mean"] is not None else None)
        else:
            agreement = fig["clinical"].get(rank_by, {})
            excluded, value = int(agreement.get("n_excluded") or 0), agreement.get("mean_abs_diff")
        return excluded, float("inf") if value is None else float(value)
    return key


def _undefined_reason(rank_by: str, evaluation: EvaluationResult, metadata: Any) -> str:
    """Why ``rank_by`` is undefined for a candidate (said once every candidate has it undefined: the references
    and the subjects are the same for all, so the first candidate's evaluation tells)."""
    if rank_by == DEFAULT_RANK_BY:
        return "no foreground class was scored on any validation case"
    clinical = evaluation.summary.get("clinical", {})
    if not clinical.get("n_subjects") or evaluation.clinical is None or evaluation.clinical.empty:
        where = metadata if isinstance(metadata, (str, Path)) else "the cases' metadata"
        return (f"no validation subject has both its ED and its ES case known: give 'subject' and 'phase' in "
                f"{where}, or name the cases CASE_ED and CASE_ES")
    n = int(clinical["n_subjects"])
    reference = evaluation.clinical[f"ref_{rank_by}"].to_numpy(dtype=float)
    if not np.isfinite(reference).any():
        return f"the manual references define it for none of the {n} validation subjects (structure not labelled?)"
    return (f"every candidate's predictions leave it undefined on all {n} validation subjects (e.g. a predicted "
            "end-diastolic volume of 0)")


def _unique_names(paths: Sequence[Path]) -> list[str]:
    """Each model's short name (its folder's; ``-m .`` names the current folder), numbered where two share one
    and the numbered name is not taken (the names key the cache, candidate and member folders)."""
    names = [p.expanduser().resolve().name or "model" for p in paths]
    taken: set[str] = set()
    unique = []
    for i, name in enumerate(names):
        candidate, k = name, i
        while candidate in taken or (names.count(name) > 1 and candidate == name):
            candidate, k = f"{name}_{k}", k + 1
        taken.add(candidate)
        unique.append(candidate)
    return unique


def _check_same_classes(models: Sequence[CvModel]) -> None:
    """Members of one ensemble average their class probabilities channel by channel: refuse, before any
    prediction, models whose labels (or file endings) differ, naming them."""
    first = models[0]
    for other in models[1:]:
        if other.labels != first.labels or other.file_ending != first.file_ending:
            raise ConfigurationError(f"{other.path} has labels {other.labels} ({other.file_ending}), {first.path} "
                                     f"{first.labels} ({first.file_ending}): models compared or ensembled must "
                                     "segment the same classes with the same label values")


def _common_cases(models: Sequence[CvModel]) -> list[str]:
    common = set(models[0].case_fold)
    for m in models[1:]:
        if set(m.case_fold) != common:
            logger.warning("%s and %s validate different cases; only the %d common ones are compared",
                           models[0].name, m.name, len(common & set(m.case_fold)))
        common &= set(m.case_fold)
    if not common:
        raise ConfigurationError("the models share no validation case: were they trained on the same splits?")
    return sorted(common)


def _scored_folds(model: CvModel, cases: Sequence[str]) -> list[str]:
    """The folds whose validation cases were scored: with models trained on different folds only the
    common ones are, and each member's own folds are recorded with the member."""
    return sorted({model.case_fold[c] for c in cases})


def _candidate_labels(models: Sequence[CvModel], combos: Sequence[tuple[int, ...]], cases: Sequence[str],
                      paths: Sequence[Mapping[str, Path]], raw_dir: Path
                      ) -> tuple[dict[tuple[int, ...], list], list[tuple[str, np.ndarray, tuple[float, ...]]]]:
    """Predicted label map of every candidate for every case (probabilities read once per case)."""
    labels: dict[tuple[int, ...], list] = {c: [] for c in combos}
    references = []
    for case_id in cases:
        reference, geometry = read_image(raw_dir / "labelsTr" / f"{case_id}{models[0].file_ending}")
        references.append((case_id, reference.astype(np.uint8), geometry.spacing_zyx))
        probs = [read_probabilities(p[case_id]) for p in paths]
        for combo in combos:
            mean = probs[combo[0]] if len(combo) == 1 else np.mean([probs[i] for i in combo], axis=0)
            labels[combo].append(np.argmax(mean, axis=0).astype(np.uint8))
    return labels, references


def find_best_configuration(model_dirs: Sequence[str | Path], raw_dir: str | Path, output_dir: str | Path, *,
                            folds: Sequence[str] | None = None, options: PredictorOptions | None = None,
                            rank_by: str = DEFAULT_RANK_BY, max_members: int = 2, metadata: Any = None,
                            cache_dir: str | Path | None = None, by: Sequence[str] = ("slice_position",),
                            make_plots: bool = False) -> SelectionResult:
    """Score every model and ensemble by cross-validation; write ``selection.json`` in ``output_dir``.

    Args:
        model_dirs: trained model folders (configurations) whose folds share one split (same ``splits.json``).
        raw_dir: the raw dataset (``imagesTr``, ``labelsTr``, ``cases.csv``) they were trained on.
        output_dir: receives ``selection.json``, ``candidates/<name>/`` evaluations and, by default, the
            probability cache ``probabilities/``.
        folds: folds to use (default: every trained fold of each model).
        options: prediction options (device, mirroring, step, checkpoint); postprocessing is always off here.
        rank_by: ``dice`` (mean foreground Dice) or a clinical measure (its mean absolute difference).
        max_members: largest ensemble tried (1: single configurations only).
        metadata: cases.csv table or path (default: the raw dataset's).
        by: breakdowns of each candidate's evaluation (default the slice-position breakdown).
        make_plots: also write each candidate's evaluation plots (about a second each).

    Raises:
        ConfigurationError: bad options, folds without checkpoints, models without common validation cases.
    """
    rank = rank_key(rank_by)
    if not model_dirs or max_members < 1:
        raise ConfigurationError("give at least one model folder and max_members >= 1")
    raw_dir, out = Path(raw_dir), Path(output_dir)
    options = options or PredictorOptions()
    paths_in = [Path(p) for p in model_dirs]
    models = [open_cv_model(p, folds, options.checkpoint, name) for p, name in zip(paths_in, _unique_names(paths_in))]
    _check_same_classes(models)
    cases = _common_cases(models)
    cache = Path(cache_dir) if cache_dir is not None else out / PROBABILITIES_DIR
    # the checkpoints hashed once: they key the cache, and selection.json records them as the weights scored
    sources = [cache_source(m, options) for m in models]
    paths = [ensure_probabilities(m, cases, raw_dir, cache, options, source=s) for m, s in zip(models, sources)]
    combos = [c for k in range(1, min(max_members, len(models)) + 1)
              for c in itertools.combinations(range(len(models)), k)]
    labels, references = _candidate_labels(models, combos, cases, paths, raw_dir)
    meta = metadata if metadata is not None else (raw_dir / "cases.csv" if (raw_dir / "cases.csv").is_file() else None)

    def score(name: str, predictions: Sequence[np.ndarray]) -> EvaluationResult:
        evaluation = evaluate_cases([(c, ref, lab, sp) for (c, ref, sp), lab in zip(references, predictions)],
                                    out / CANDIDATES_DIR / safe_name(name), labels=models[0].labels, metadata=meta,
                                    by=list(by), make_plots=make_plots)
        logger.info("candidate %s: mean Dice %s", name, evaluation.summary["mean_over_classes"]["dice"])
        return evaluation

    evaluations = {combo: score("+".join(models[i].name for i in combo), labels[combo]) for combo in combos}
    scored = [_Scored("+".join(models[i].name for i in combo), combo, figures(evaluations[combo].summary))
              for combo in combos]
    if all(math.isinf(rank(c.figures)[1]) for c in scored):  # the first candidate would win on nothing
        raise ConfigurationError(f"rank_by {rank_by!r} is undefined for every candidate, so none can be chosen by "
                                 f"it: {_undefined_reason(rank_by, evaluations[combos[0]], meta)}; rank by "
                                 "another measure or by dice")
    scored.sort(key=lambda c: (rank(c.figures), len(c.members)))  # ties: the cheaper candidate
    best = scored[0]
    pairs = [(ref, lab) for (_, ref, _), lab in zip(references, labels[best.members])]
    decision = decide_postprocessing(pairs, sorted(v for v in models[0].labels.values() if v != 0))
    post = figures(score(best.name + "_postprocessed", [decision.apply(lab) for lab in labels[best.members]]).summary)
    candidates = [{"rank": k + 1, "name": c.name, "members": [models[i].name for i in c.members], "cv": c.figures}
                  for k, c in enumerate(scored)]
    record = {"created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "folds": _scored_folds(models[0], cases), "n_cases": len(cases),
              "chosen": {"cv": best.figures, "cv_postprocessed": post}, "candidates": candidates,
              "prediction": prediction_settings(options)}
    # the sha256 of the checkpoints whose predictions were scored: applying the selection checks the files
    members = tuple(Member(models[i].name, models[i].path, models[i].folds,
                           scored_weights(sources[i], models[i].folds)) for i in best.members)
    selection = Selection(members, decision, rank_by, options.checkpoint, record)
    out.mkdir(parents=True, exist_ok=True)
    selection.save(out / SELECTION_JSON)
    table = _candidate_table(candidates, rank_by)
    write_text_atomic(out / CANDIDATES_CSV, table.to_csv(index=False))
    return SelectionResult(selection, table, out / SELECTION_JSON)


@dataclass(frozen=True)
class _Scored:
    name: str
    members: tuple[int, ...]  # indices into the models
    figures: dict[str, Any]


def _nan_if_none(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def _candidate_table(candidates: Sequence[Mapping[str, Any]], rank_by: str = DEFAULT_RANK_BY) -> pd.DataFrame:
    rows = []
    for c in candidates:
        clinical = c["cv"]["clinical"]
        mad = {f"{m}_mad": _nan_if_none(clinical.get(m, {}).get("mean_abs_diff")) for m in MEASURES}
        # ranked by a measure: the subjects it is undefined on come first in the ranking, so they are shown
        excluded = ({f"{rank_by}_n_excluded": clinical.get(rank_by, {}).get("n_excluded")}
                    if rank_by != DEFAULT_RANK_BY else {})
        rows.append({"rank": c["rank"], "name": c["name"], "dice_mean": _nan_if_none(c["cv"]["dice_mean"]), **mad,
                     **excluded})
    return pd.DataFrame(rows)


__all__ = ["RANK_BY_NAMES", "SelectionResult", "figures", "find_best_configuration", "rank_key"]
