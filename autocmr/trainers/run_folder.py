"""What a training run records in its model folder besides the checkpoints: the manifest's entries for the
fold (forgotten when the fold starts training, recorded with their sha256 when it ends) and the run options,
which ``--continue`` compares with the requested ones before it resumes."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from autocmr.documents.layout import CHECKPOINT_KINDS, RUN_OPTIONS, checkpoint_relpath, fold_dir_name
from autocmr.documents.manifest import ModelManifest, update_weights
from autocmr.documents.run_options import RunOptionsDocument
from autocmr.errors import ConfigurationError
from autocmr.trainers.options import TrainOptions

ALLOW_CHANGES_FLAG = "--allow-changed-options"


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


def write_run_options(fold_dir: Path, options: TrainOptions, device: str, changes: list[str], *,
                      resuming: bool) -> None:
    """Store the resolved options; changes accepted on resume are appended to those of earlier resumes."""
    path = fold_dir / RUN_OPTIONS
    earlier = RunOptionsDocument.load(path).changes_on_resume if resuming and path.is_file() else []
    RunOptionsDocument(options.to_dict(), options.digest(), device, earlier + changes).save(path)
