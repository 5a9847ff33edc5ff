"""Cross-validation folds at the subject level (ED and ES of one patient always in the same fold)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from autocmr.documents.layout import SPLITS
from autocmr.errors import ConfigurationError
from autocmr.io.atomic import write_json_atomic

SPLITS_FILE = SPLITS  # its name in dataset and model folders (autocmr.documents.layout)
DEFAULT_FOLDS = 5


def subject_folds(subjects: Mapping[str, Sequence[str]], *, n_folds: int = DEFAULT_FOLDS,
                  seed: int = 12345) -> list[dict[str, list[str]]]:
    """Shuffle subjects (seeded) and deal them into ``n_folds`` folds; each fold lists train/val case ids."""
    names = sorted(subjects)
    if len(names) < n_folds:
        raise ConfigurationError(f"{len(names)} subjects cannot be split into {n_folds} folds; "
                                 "train fold 'all' (every subject, no validation), give your own folds with "
                                 "--splits FILE, or add subjects")
    order = np.random.default_rng(seed).permutation(len(names))
    groups = [[names[i] for i in order[k::n_folds]] for k in range(n_folds)]
    folds = []
    for k in range(n_folds):
        val_subjects = set(groups[k])
        val = sorted(c for s in val_subjects for c in subjects[s])
        train = sorted(c for s in names if s not in val_subjects for c in subjects[s])
        folds.append({"train": train, "val": val})
    return folds


def load_or_create_splits(path: Path, subjects: Mapping[str, Sequence[str]], *, n_folds: int = DEFAULT_FOLDS,
                          seed: int = 12345) -> list[dict[str, list[str]]]:
    """Reuse the saved splits (so every fold of a run sees the same partition) or create and save them. Saved
    splits of another set of cases (the dataset was converted again with cases added or removed) are refused:
    added cases would be in no fold, removed ones named by folds that no longer have them."""
    if path.is_file():
        folds = read_splits(path)
        listed = {c for f in folds for c in f["train"] + f["val"]}
        cases = {c for members in subjects.values() for c in members}
        if listed != cases:
            added, removed = sorted(cases - listed), sorted(listed - cases)
            raise ConfigurationError(
                f"{path}: made for another set of cases (now {len(added)} more: {added[:3]}, {len(removed)} fewer: "
                f"{removed[:3]}); the dataset changed since its folds were dealt. Delete it to deal new folds "
                "(folds trained on the old ones are then not comparable), or train with --splits FILE")
        return folds
    folds = subject_folds(subjects, n_folds=n_folds, seed=seed)
    write_json_atomic(path, folds)
    return folds


def read_splits(path: Path) -> list[dict[str, list[str]]]:
    try:
        folds = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigurationError(f"{path}: cannot read splits ({exc})") from exc
    if not isinstance(folds, list) or not all(isinstance(f, dict) and "train" in f and "val" in f for f in folds):
        raise ConfigurationError(f"{path}: splits must be a list of {{'train': [...], 'val': [...]}} objects")
    return folds


def select_fold(folds: list[dict[str, list[str]]], fold: str | int, all_cases: Sequence[str],
                source: str = "splits", subject_of: Mapping[str, str] | None = None) -> tuple[list[str], list[str]]:
    """Train and validation case ids for ``fold`` (an index, or 'all': train on everything, no validation).

    ``subject_of`` (case -> subject): a subject with cases on both sides (a split made per case, e.g. an
    nnU-Net ``splits_final.json``, puts one patient's ED in training and its ES in validation) is refused, so
    is a case on both sides: the validation would score cases the network trained on.
    """
    if str(fold) == "all":
        return sorted(all_cases), []
    try:
        k = int(fold)
        if k < 0:
            raise IndexError(k)  # folds[-1] would quietly be the last fold
        entry = folds[k]
    except (ValueError, IndexError):
        raise ConfigurationError(f"fold {fold!r} not in {source}: "
                                 f"valid folds are 0..{len(folds) - 1} or 'all'") from None
    unknown = sorted(set(entry["train"] + entry["val"]) - set(all_cases))
    if unknown:
        raise ConfigurationError(f"{source}: fold {k} names cases that are not preprocessed: {unknown[:5]}")
    if not entry["val"]:
        raise ConfigurationError(f"{source}: fold {k} has no validation subjects; "
                                 "use fold 'all' to train without validation")
    both = sorted(set(entry["train"]) & set(entry["val"]))
    if both:
        raise ConfigurationError(f"{source}: fold {k} has cases in training and validation: {both[:5]}")
    if subject_of is not None:
        trained = {subject_of.get(c, c) for c in entry["train"]}
        shared = sorted({subject_of.get(c, c) for c in entry["val"]} & trained)
        if shared:
            raise ConfigurationError(f"{source}: fold {k} puts cases of subject(s) {shared[:5]} in training and "
                                     "validation (a split per case, not per patient?); make the splits per subject")
    return list(entry["train"]), list(entry["val"])


def check_fold_names(folds: Sequence[str], preprocessed_dataset: Path | None, splits_file: str | Path | None) -> None:
    """Refuse a fold the splits do not have before any fold trains (``0 7`` must not train fold 0 for an hour
    and then fail): the folds of ``splits_file``, else of the dataset's ``splits.json`` when it exists, else
    the :data:`DEFAULT_FOLDS` a new one will have."""
    source = (Path(splits_file) if splits_file
              else preprocessed_dataset / SPLITS_FILE if preprocessed_dataset is not None else None)
    n_folds = len(read_splits(source)) if source is not None and source.is_file() else DEFAULT_FOLDS
    for fold in folds:
        if str(fold) != "all" and not (str(fold).isdigit() and int(fold) < n_folds):
            raise ConfigurationError(f"fold {fold!r} does not exist: valid folds are 0..{n_folds - 1} or 'all'"
                                     + (f" ({source})" if source is not None and source.is_file() else ""))
