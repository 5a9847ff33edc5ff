"""What a training run records in its model folder besides the checkpoints: the manifest's entries for the
fold (forgotten when the fold starts training, recorded with their sha256 when it ends) and the run options,
which ``--continue`` compares with the requested ones before it resumes, as it compares the fold's cases and
resolved precision with the checkpoint's; and the check that a fold does not replace the folder's plans under
folds trained with others."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, Callable

from autocmr.documents.layout import (CHECKPOINT_KINDS, FOLD_PREFIX, PLANS, RUN_OPTIONS, checkpoint_name,
                                      checkpoint_relpath, fold_dir_name)
from autocmr.documents.manifest import ModelManifest, update_weights
from autocmr.documents.plans import Plans
from autocmr.documents.run_options import RunOptionsDocument
from autocmr.errors import AutocmrError, ConfigurationError
from autocmr.trainers.checkpoint import trained_precision
from autocmr.trainers.options import TrainOptions

ALLOW_CHANGES_FLAG = "--allow-changed-options"
# Configuration fields that only steer training (how batches are drawn), not what a network expects as input:
# folds that differ in them still predict together.
TRAINING_ONLY_FIELDS = frozenset({"batch_size", "median_shape", "foreground_oversampling", "data_identifier"})


def check_plans_of_trained_folds(model_dir: Path, plans: Plans, configuration: str, fold: str | int) -> None:
    """Refuse to train ``fold`` into ``model_dir`` with plans whose network input or preprocessing differ from
    those the folder's other trained folds were trained with (re-planned with ``--context-slices``,
    ``--other-phase``, another spacing...): the folder keeps one plans.json, so those folds would then load
    with a network of another shape, or be fed data preprocessed another way, and ensembling would mix them."""
    stored_path = model_dir / PLANS
    if not stored_path.is_file():
        return
    try:
        stored = Plans.load(stored_path)
        old = stored.configuration(configuration)
    except AutocmrError:
        return  # unreadable or without this configuration: nothing trained with it to protect
    new = plans.configuration(configuration)
    differences = [f"{name}: {getattr(old, name)} -> {getattr(new, name)}"
                   for name in (f.name for f in dataclasses.fields(new)) if name not in TRAINING_ONLY_FIELDS
                   and getattr(old, name) != getattr(new, name)]
    differences += [f"{name}: {getattr(stored, name)} -> {getattr(plans, name)}"
                    for name in ("labels", "channel_names", "transpose_forward")
                    if getattr(stored, name) != getattr(plans, name)]
    if not differences:
        return
    trained = other_trained_folds(model_dir, fold)
    if trained:
        raise ConfigurationError(
            f"{model_dir}: {', '.join(trained)} were trained with other plans than this run's "
            f"({'; '.join(differences)}); training {fold_dir_name(fold)} here would replace the folder's plans "
            f"under them. Train into another folder (autocmr_train ... -o FOLDER), or remove those folds to retrain "
            f"them with the new plans")


def other_trained_folds(model_dir: Path, fold: str | int) -> list[str]:
    """The folder names of ``model_dir``'s folds besides ``fold`` that have a checkpoint of any kind."""
    this = fold_dir_name(fold)
    return sorted(d.name for d in model_dir.glob(f"{FOLD_PREFIX}*") if d.name != this
                  and any((d / checkpoint_name(kind)).is_file() for kind in CHECKPOINT_KINDS))


def start_fold(model_dir: Path, identity: ModelManifest, fold: str | int) -> None:
    """The fold's checkpoints are about to be rewritten: drop their checksums from the manifest."""
    update_weights(model_dir, identity, forget_prefix=f"{fold_dir_name(fold)}/")


def finish_fold(model_dir: Path, identity: ModelManifest, fold: str | int) -> ModelManifest:
    """Record the sha256 of the fold's checkpoints in the manifest (other folds' entries are kept)."""
    written = [checkpoint_relpath(fold, kind) for kind in CHECKPOINT_KINDS
               if (model_dir / checkpoint_relpath(fold, kind)).is_file()]
    return update_weights(model_dir, identity, record=written)


def check_resume_options(fold_dir: Path, requested: TrainOptions, *, allow_changes: bool,
                         log: Callable[[str], None], checkpoint_options: dict[str, Any] | None = None) -> list[str]:
    """Differences between the run's stored result-changing options and ``requested``; refuses to resume on
    any unless ``allow_changes``. The options inside the checkpoint to resume (``checkpoint_options``) are the
    ones it was trained with and come first: ``options.json`` is rewritten by a new run that may have stopped
    before saving a checkpoint of its own, leaving an older run's behind. A run without stored options resumes
    as requested."""
    path = fold_dir / RUN_OPTIONS
    if checkpoint_options is not None:
        stored = checkpoint_options
    elif path.is_file():
        stored = RunOptionsDocument.load(path).options
    else:
        log(f"--continue: {path} not found, the stored options cannot be compared; resuming with the requested ones")
        return []
    changes = requested.differences_from(stored)
    if changes and not allow_changes:
        raise ConfigurationError(
            f"{fold_dir}: --continue would change options that change the run's result: {'; '.join(changes)}. "
            f"Resume with the options the run was started with, start a new run (without --continue, or another "
            f"output folder), or pass {ALLOW_CHANGES_FLAG} to resume with the new values")
    if changes:
        log(f"resuming with changed options ({ALLOW_CHANGES_FLAG}): {'; '.join(changes)}")
    return changes


def check_resumed_run(path: Path, checkpoint: dict[str, Any], *, cases: dict[str, list[str]], precision: str,
                      requested: TrainOptions, device_type: str, allow_changes: bool,
                      log: Callable[[str], None], data: dict[str, Any] | None = None) -> list[str]:
    """What resuming ``checkpoint`` (read from ``path``) would change besides its options: the fold's cases
    (:func:`~autocmr.trainers.checkpoint.fold_cases`; another ``--splits``, a splits.json dealt again) and the
    precision the requested one resolves to on this ``device_type`` (``auto``: fp16 on CUDA, fp32 elsewhere).
    Refused, naming the checkpoint, unless ``allow_changes``; returns the changes accepted. A checkpoint written
    before it recorded its cases resumes without that comparison; so does one without ``data_settings`` for
    ``data`` (:func:`~autocmr.trainers.checkpoint.data_settings` of the plans now: the dataset planned again)."""
    changes = []
    stored_data = checkpoint.get("data_settings")
    replanned = [f"{key}: {stored_data.get(key)} -> {value}" for key, value in (data or {}).items()
                 if stored_data is not None and key in stored_data and stored_data[key] != value]
    if replanned and not allow_changes:
        raise ConfigurationError(
            f"{path}: the plans changed since this run started ({'; '.join(replanned)}: autocmr_plan was run again, "
            "or another autocmr planned differently), so --continue would train its remaining epochs on other "
            f"data. Train the fold again without --continue, or pass {ALLOW_CHANGES_FLAG} to resume on these plans")
    changes += [f"plans {change}" for change in replanned]
    stored_cases = checkpoint.get("cases")
    moved = case_changes(stored_cases, cases) if stored_cases is not None else None
    if stored_cases is None:
        log(f"--continue: {path.name} does not record its fold's cases (saved by an earlier autocmr), so they are "
            "not compared with this run's")
    elif moved and not allow_changes:
        raise ConfigurationError(
            f"{path}: --continue would resume on other cases than the checkpoint was trained and validated on "
            f"({moved}): the fold's partition changed (another --splits, splits.json dealt again, or cases added to "
            "or removed from the dataset), so the final validation could score cases the network trained on and the "
            "best checkpoint would compare two validation sets. Resume with the splits it was trained with, train "
            f"the fold again without --continue, or pass {ALLOW_CHANGES_FLAG} to resume on the new cases")
    if moved:
        changes.append(moved)
    trained = trained_precision(checkpoint)
    literal = str((checkpoint.get("options") or {}).get("precision") or "auto")
    if literal == requested.precision and trained != precision:  # a changed literal is an option change already
        change = f"precision: {trained!r} -> {precision!r} (--precision {literal} on {device_type})"
        if not allow_changes:
            raise ConfigurationError(
                f"{path}: the run trained in {trained} and would resume in {precision} (--precision {literal} "
                f"resolves per device type, and this one is {device_type}); precision changes what is learnt. "
                f"Resume on the kind of device it was trained on, or pass {ALLOW_CHANGES_FLAG} to resume in "
                f"{precision}")
        changes.append(change)
    if changes:
        log(f"resuming with changes ({ALLOW_CHANGES_FLAG}): {'; '.join(changes)}")
    return changes


def case_changes(stored: dict[str, list[str]], cases: dict[str, list[str]]) -> str | None:
    """``"cases: training 2 of 32 removed, 2 added; ..."`` where the fold's cases differ from the ``stored`` ones."""
    parts = []
    for key, name in (("train", "training"), ("val", "validation")):
        before, now = set(stored[key]), set(cases[key])
        if before != now:
            parts.append(f"{name} {len(before - now)} of {len(before)} removed, {len(now - before)} added")
    return f"cases: {'; '.join(parts)}" if parts else None


def write_run_options(fold_dir: Path, options: TrainOptions, device: str, changes: list[str], *,
                      resuming: bool, precision: str = "", cases: dict[str, list[str]] | None = None,
                      resumed_after: int | None = None) -> None:
    """Store the resolved options, the ``precision`` they resolved to and a record of the fold's ``cases``;
    changes accepted on resume (after ``resumed_after`` finished epochs) are appended to earlier resumes'."""
    path = fold_dir / RUN_OPTIONS
    earlier = RunOptionsDocument.load(path).changes_on_resume if resuming and path.is_file() else []
    if resumed_after is not None:
        changes = [f"{change} (resumed after {resumed_after} finished epoch(s))" for change in changes]
    record = None if cases is None else {
        "train": len(cases["train"]), "val": len(cases["val"]),
        "sha256": hashlib.sha256(json.dumps(cases, sort_keys=True).encode()).hexdigest()}
    RunOptionsDocument(options.to_dict(), options.digest(), device, earlier + changes, precision=precision,
                       cases=record).save(path)
