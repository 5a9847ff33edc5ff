"""Cross-validation predictions of one model folder: each fold's network on that fold's validation cases,
as softmax probabilities in the stored order of the raw image (what ensembling averages).

Probabilities are cached as ``CACHE/<model name>/CASE.npz`` (float16, key ``probabilities``, shape
(C, z, y, x)), written atomically, and reused on the next run when they come from the same source:
``CACHE/<model name>/source.json`` records the model folder, the sha256 of each fold's checkpoint and the
prediction settings (checkpoint kind, mirroring, step, precision), and per case the fold that predicts it and its
raw image files (name, size, modification time), with those of its other phase for a model that reads it. A cache
made by anything else (a retrained fold, another model of the same folder name, ``--no-mirror``) is deleted and
predicted again; so is a case that another splits file moved to another fold, or whose image (or other phase's
image) was replaced (a re-converted dataset).
Predicting reads only the raw images and the fold's checkpoint, never writes into the model folder.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from autocmr.dataset.raw import hash_file_stats, load_metadata
from autocmr.documents.layout import checkpoint_relpath
from autocmr.documents.manifest import sha256_of
from autocmr.errors import ConfigurationError, DatasetError
from autocmr.inference.predictor import PredictorOptions
from autocmr.io.atomic import atomic_path, write_json_atomic
from autocmr.models.folder import ModelFolder
from autocmr.preprocessing.loading import load_case
from autocmr.preprocessing.other_phase import case_phases, subject_pairs
from autocmr.trainers.splits import SPLITS_FILE, read_splits

logger = logging.getLogger(__name__)
PROBABILITIES_KEY = "probabilities"
CACHE_SOURCE = "source.json"


@dataclass(frozen=True)
class CvModel:
    """A model folder with the folds used and the validation cases of each (case id -> fold)."""

    name: str
    path: Path
    folds: tuple[str, ...]
    case_fold: dict[str, str]
    labels: dict[str, int]
    file_ending: str
    partners: dict[str, str] = field(default_factory=dict)  # other-phase models: case id -> its other phase


def open_cv_model(path: str | Path, folds: Sequence[str] | None = None, checkpoint: str = "final",
                  name: str | None = None) -> CvModel:
    """Folds (default: every fold with ``checkpoint``) and their validation cases from ``splits.json``."""
    model = ModelFolder.open(path)
    available = model.available_folds(checkpoint)
    wanted = [str(f) for f in folds] if folds else [f for f in available if f != "all"]
    missing = [f for f in wanted if f not in available]
    if not wanted:  # fold 'all' alone: it validated on no case, so there is nothing to choose by
        raise ConfigurationError(f"{model.path}: no cross-validation fold has a checkpoint_{checkpoint}.pth "
                                 f"(trained folds: {available or 'none'}); choosing needs the folds' validation "
                                 "predictions: train folds 0-4 (fold 'all' has no validation cases)")
    if missing:
        raise ConfigurationError(f"{model.path}: folds {missing} have no checkpoint_{checkpoint}.pth "
                                 f"(trained folds: {available or 'none'})")
    splits = read_splits(model.path / SPLITS_FILE)
    case_fold: dict[str, str] = {}
    for fold in wanted:
        if not fold.isdigit() or int(fold) >= len(splits):
            raise ConfigurationError(f"{model.path}: fold {fold!r} is not a cross-validation fold of "
                                     f"{model.path / SPLITS_FILE} (0..{len(splits) - 1})")
        case_fold.update({case: fold for case in splits[int(fold)]["val"]})
    partners = _other_phases(model, case_fold) if model.configuration.other_phase else {}
    return CvModel(name or model.path.name, model.path, tuple(wanted), case_fold, dict(model.plans.labels),
                   model.dataset_json.file_ending, partners)


def _other_phases(model: ModelFolder, case_fold: dict[str, str]) -> dict[str, str]:
    """For a model trained with the other cardiac phase: each validation case's partner, found as training
    found it (``cases.csv`` of the model folder, or ``_ED``/``_ES`` names; the same fold holds both, since folds
    split subjects), so the cross-validation scores the model as it is used, not on lone volumes."""
    metadata = load_metadata(model.path, sorted(case_fold))
    partners = subject_pairs(case_phases(metadata))
    if not partners:
        logger.warning("%s: a model with the other phase, but none of its validation cases has one (cases.csv); "
                       "each is predicted with itself in the other phase's place", model.path)
    return partners


def image_files(raw_dir: Path, case_id: str, file_ending: str) -> list[Path]:
    """``imagesTr/CASE_XXXX<ending>`` of one case, channel order; raises DatasetError when none exist."""
    files = sorted((raw_dir / "imagesTr").glob(f"{case_id}_[0-9][0-9][0-9][0-9]{file_ending}"))
    if not files:
        raise DatasetError(f"{raw_dir / 'imagesTr'}: no image {case_id}_0000{file_ending} for validation case "
                           f"{case_id}")
    return files


def probabilities_path(cache_dir: Path, model: CvModel, case_id: str) -> Path:
    return cache_dir / model.name / f"{case_id}.npz"


def read_probabilities(path: Path) -> np.ndarray:
    with np.load(path) as data:
        return data[PROBABILITIES_KEY].astype(np.float32)


def cache_source(model: CvModel, options: PredictorOptions) -> dict[str, Any]:
    """What made a model's cached probabilities (see the module doc)."""
    return {"model": str(model.path.resolve()), "checkpoint": options.checkpoint, "mirror": options.mirror,
            "step": options.step, "precision": options.precision, "harmonise": options.harmonise,
            "other_phase": dict(sorted(model.partners.items())),
            "weights": {fold: sha256_of(model.path / checkpoint_relpath(fold, options.checkpoint))
                        for fold in model.folds}}


def scored_weights(source: dict[str, Any], folds: Sequence[str]) -> dict[str, str]:
    """The sha256 of each fold's checkpoint from a :func:`cache_source`, keyed by its path in the model folder
    (as a manifest keys them): the weights whose predictions were scored."""
    return {checkpoint_relpath(fold, source["checkpoint"]): source["weights"][fold] for fold in folds}


def case_sources(model: CvModel, cases: Sequence[str], raw_dir: Path) -> dict[str, str]:
    """Per case, what its cached probabilities depend on beyond the model: the fold that predicts it (another
    splits file moves it) and its raw image files (name, size, modification time: a re-converted dataset), with
    its other phase's for a model that reads that phase as input (its probabilities depend on both images)."""
    sources = {}
    for case_id in cases:
        digest = hashlib.sha256(str(raw_dir.resolve()).encode())
        hash_file_stats(digest, image_files(raw_dir, case_id, model.file_ending))
        partner_id = model.partners.get(case_id)
        if partner_id is not None:
            digest.update(f"other phase {partner_id};".encode())
            hash_file_stats(digest, image_files(raw_dir, partner_id, model.file_ending))
        sources[case_id] = f"fold {model.case_fold[case_id]}, images {digest.hexdigest()[:16]}"
    return sources


def _use_cache_of(folder: Path, source: dict[str, Any], cases: dict[str, str] | None = None) -> None:
    """Keep ``folder``'s cached probabilities only if ``source`` made them, and of ``cases`` (case: its
    :func:`case_sources` entry) only those made from the same fold and images; then record what is kept."""
    record = folder / CACHE_SOURCE
    cached = sorted(folder.glob("*.npz")) if folder.is_dir() else []
    stored = None
    if record.is_file():
        try:
            stored = json.loads(record.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            stored = None
    same = stored is not None and all(stored.get(k) == v for k, v in source.items() if k != "weights") and all(
        stored.get("weights", {}).get(fold) == digest for fold, digest in source["weights"].items())
    stored_cases = dict(stored.get("cases") or {}) if same and isinstance(stored, dict) else {}
    changed = [p for p in cached if not same or (cases is not None and p.stem in cases
                                                 and stored_cases.get(p.stem) != cases[p.stem])]
    if changed:
        why = ("another model or other settings" if not same else
               "another fold's network or other image files (another splits file, a re-converted dataset)")
        logger.warning("%s: %d cached prediction(s) were made by %s; predicted again", folder, len(changed), why)
        for path in changed:
            path.unlink(missing_ok=True)
    write_json_atomic(record, {**source, "cases": {**stored_cases, **(cases or {})}})


def ensure_probabilities(model: CvModel, cases: Sequence[str], raw_dir: Path, cache_dir: Path,
                         options: PredictorOptions, source: dict[str, Any] | None = None) -> dict[str, Path]:
    """Predict the cached-missing ``cases`` fold by fold (each with its own fold's network); their paths.
    ``source``: the model's :func:`cache_source` when the caller computed it already (it hashes every checkpoint
    and records the digests the cross-validation was scored with)."""
    paths = {c: probabilities_path(cache_dir, model, c) for c in cases}
    unknown = sorted(set(cases) - set(model.case_fold))
    if unknown:
        raise ConfigurationError(f"{model.path}: cases {unknown[:5]} are in no validation fold used")
    _use_cache_of(cache_dir / model.name, source if source is not None else cache_source(model, options),
                  case_sources(model, cases, raw_dir))
    todo = [c for c in cases if not paths[c].is_file()]
    logger.info("%s: %d validation case(s) cached, %d to predict", model.name, len(cases) - len(todo), len(todo))
    for fold in model.folds:
        fold_cases = [c for c in todo if model.case_fold[c] == fold]
        if not fold_cases:
            continue
        predictor = replace(options, folds=(fold,), postprocess="off").build(model.path)
        for case_id in fold_cases:
            start = time.perf_counter()
            case = load_case(image_files(raw_dir, case_id, model.file_ending))
            prediction = predictor.predict_canonical(case.data, case.spacing, case.reorientation,
                                                     return_probabilities=True,
                                                     partner=_partner_data(model, case_id, case, raw_dir))
            paths[case_id].parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(paths[case_id]) as tmp, open(tmp, "wb") as fh:
                np.savez_compressed(fh, **{PROBABILITIES_KEY: prediction.probabilities.astype(np.float16)})
            logger.info("%s fold %s: %s predicted in %.1f s", model.name, fold, case_id, time.perf_counter() - start)
    return paths


def _partner_data(model: CvModel, case_id: str, case: Any, raw_dir: Path) -> np.ndarray | None:
    """The other phase's image on ``case``'s grid, or None (the predictor then pairs the image with itself)."""
    partner_id = model.partners.get(case_id)
    if partner_id is None:
        return None
    partner = load_case(image_files(raw_dir, partner_id, model.file_ending))
    if partner.data.shape != case.data.shape or not np.allclose(partner.spacing, case.spacing, rtol=1e-4):
        logger.warning("%s: its other phase %s has shape %s and spacing %s, it %s and %s; predicted with itself in "
                       "its place", case_id, partner_id, partner.data.shape, tuple(partner.spacing),
                       case.data.shape, tuple(case.spacing))
        return None
    return partner.data


__all__ = ["CvModel", "cache_source", "ensure_probabilities", "image_files", "open_cv_model", "probabilities_path",
           "read_probabilities", "scored_weights"]
