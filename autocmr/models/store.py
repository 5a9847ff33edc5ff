"""Writing model folders for others: the compact shipped form (weights only, float16, manifest with sha256)
and the upgrade of folders written before manifests and versioned checkpoints."""
from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import Iterator, Sequence

import torch

from autocmr.documents import layout
from autocmr.documents.checkpoint import (CHECKPOINT_SCHEMA_VERSION, HEADER_KEYS, load_checkpoint, save_checkpoint,
                                          upgrade_payload)
from autocmr.documents.manifest import ModelManifest, sha256_of, verify_listed_weight_file, verify_weight_file
from autocmr.documents.model_card import ModelCard
from autocmr.errors import PlansError
from autocmr.io.locks import held
from autocmr.models.folder import ModelFolder
from autocmr.models.registry import MODELS_LOCK

logger = logging.getLogger(__name__)
COMPACT_DTYPE = torch.float16  # halves the size; predictions agree with float32 weights (tested)


# The model a replacement moves aside, ``.tmp_old_<tag>_NAME``, <tag> being that of the staging folder
# ``.tmp_<tag>_NAME`` replacing it: while that staging folder is there, the new model is not in place yet and
# the old one is the model to keep; once it is gone (renamed to NAME), the old one is garbage.
OLD_PREFIX = ".tmp_old_"
# An old model already replaced, renamed here before it is deleted: a deletion cut short leaves a trash folder,
# never a half-deleted ``.tmp_old_`` one that :func:`recover_swapped_out` would put back in place.
TRASH_PREFIX = ".tmp_trash_"
_STAGING = re.compile(r"\.tmp_([0-9a-f]{8})_(.+)")  # :func:`staging_folder`'s names: tag, model name
STALE_STAGING_S = 3600.0  # a staging folder untouched this long belongs to an import that was killed
LOCK_WAIT_S = 120.0  # the lock is held for renames and deletions only, never for a whole extraction


class _Busy(Exception):
    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder


@contextlib.contextmanager
def models_lock(folder: Path) -> Iterator[None]:
    """Hold the lock of the models folder ``folder`` (:mod:`autocmr.io.locks`), waiting up to
    :data:`LOCK_WAIT_S` for another process: whoever holds it is alone to check whether a model is installed,
    swap one in, or put back or delete what an interrupted one left."""
    lock_file = folder / MODELS_LOCK
    deadline = time.monotonic() + LOCK_WAIT_S
    with contextlib.ExitStack() as stack:
        while True:
            try:
                stack.enter_context(held(lock_file, _Busy))
                break
            except _Busy as busy:  # held() refuses at once; its holders only rename and delete folders
                if time.monotonic() >= deadline:
                    raise PlansError(f"{lock_file}: held by {busy.holder} for over {LOCK_WAIT_S:.0f} s (another "
                                     "import or replacement of a model); retry when it has finished") from None
                time.sleep(0.1)
        yield


def _swapped_out(dest: Path) -> list[Path]:
    """The ``.tmp_old_<tag>_NAME`` folders replacements of ``dest`` (NAME) moved aside."""
    return [p for p in _all_swapped_out(dest.parent) if _model_name(p) == dest.name]


def _all_swapped_out(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob(f"{OLD_PREFIX}*") if p.is_dir() and not p.is_symlink()
                  and len(p.name.split("_", 3)) == 4)


def _model_name(old: Path) -> str:
    return old.name.split("_", 3)[-1]


def _replacement_of(old: Path) -> Path:
    """The staging folder whose swap moved ``old`` aside (same tag and name): present only while a killed swap
    had not yet put the new model in place."""
    tag, name = old.name.split("_", 3)[2:]
    return old.with_name(f".tmp_{tag}_{name}")


def _interrupted(dest: Path) -> list[Path]:
    """The moved-aside models of ``dest`` to put back: those whose replacement is still staged, i.e. a swap
    killed between its first two renames. One whose replacement is gone was replaced: if ``dest`` is missing,
    it was deleted after that (uninstalled by hand), and bringing the replaced model back would be wrong."""
    return [old for old in _swapped_out(dest) if _replacement_of(old).is_dir()]


def recover_swapped_out(dest: Path) -> bool:
    """A process killed between the first two renames of :func:`swap_in_folder` left ``dest`` missing, the model
    it was replacing under ``.tmp_old_<tag>_NAME`` and the new one still in its staging folder: put the old one
    back (the newest, if several), the replacement having not been made. True if it did. A ``.tmp_old_`` folder
    without its staging folder beside it (the new model was swapped in) and trash folders (``.tmp_trash_``: a
    replaced model being deleted) are never put back. Callers sharing ``dest``'s folder with other processes
    hold :func:`models_lock` (or use :func:`restore_interrupted_swap`)."""
    if dest.exists() or not dest.parent.is_dir():
        return False
    left = _interrupted(dest)
    if not left:
        return False
    newest = max(left, key=lambda p: p.stat().st_mtime)
    newest.rename(dest)
    logger.warning("%s: restored from %s, left by an interrupted replacement", dest, newest.name)
    return True


def restore_interrupted_swap(dest: Path) -> bool:
    """:func:`recover_swapped_out` for a model of the models folder, under its lock (a replacement that is not
    interrupted but in progress is left to finish). The lock is only taken when there is something to put back,
    so a read-only models folder stays usable."""
    if dest.exists() or not dest.parent.is_dir() or not _interrupted(dest):
        return False
    with models_lock(dest.parent):
        return recover_swapped_out(dest)


def remove_leftovers(folder: Path) -> list[str]:
    """Delete what interrupted imports and replacements left in ``folder`` (call it under :func:`models_lock`):
    trash folders, models moved aside by a replacement that was made (the model is in place, or its staging
    folder is gone: swapped in, and deleted since), and staging folders untouched for :data:`STALE_STAGING_S`
    (a younger one may be an import still extracting). A replacement killed before its new model was in place
    is undone first (:func:`recover_swapped_out`), while the staging folder that tells it apart is still there.
    Returns the names removed."""
    if not folder.is_dir():
        return []
    for old in _all_swapped_out(folder):
        recover_swapped_out(folder / _model_name(old))
    now, removed = time.time(), []
    replaced = [old for old in _all_swapped_out(folder)
                if (folder / _model_name(old)).exists() or not _replacement_of(old).is_dir()]
    for item in sorted(folder.glob(".tmp_*")):
        if not item.is_dir() or item.is_symlink():
            continue
        stale = _STAGING.fullmatch(item.name) and now - _newest_mtime(item) > STALE_STAGING_S
        if item.name.startswith(TRASH_PREFIX) or stale or item in replaced:
            shutil.rmtree(item, ignore_errors=True)
            removed.append(item.name)
    if removed:
        logger.info("%s: removed %s, left by interrupted imports or replacements", folder, removed)
    return removed


def _newest_mtime(folder: Path) -> float:
    """The last time anything was written in ``folder`` (an extraction writes into subfolders)."""
    newest = folder.stat().st_mtime
    for root, dirs, files in os.walk(folder):
        for entry in dirs + files:
            with contextlib.suppress(OSError):
                newest = max(newest, os.lstat(os.path.join(root, entry)).st_mtime)
    return newest


def swap_in_folder(staging: Path, dest: Path, *, replace: bool = True) -> None:
    """Replace ``dest`` by the complete folder ``staging`` (made by :func:`staging_folder` for ``dest``): readers
    see the old or the new one (or, for the instant between two renames, none: :func:`recover_swapped_out`
    repairs a kill there, and :func:`remove_leftovers` a kill after the new one is in). Without ``replace`` an
    existing ``dest`` is never replaced: PlansError."""
    recover_swapped_out(dest)
    if dest.exists() and not replace:
        raise PlansError(f"{dest}: exists (written meanwhile by another process?); not replaced")
    staged = _STAGING.fullmatch(staging.name)
    if staged is None or staged.group(2) != dest.name or staging.parent != dest.parent:
        raise ValueError(f"{staging}: not a staging folder of {dest} (make it with staging_folder)")
    old = dest.with_name(f"{OLD_PREFIX}{staged.group(1)}_{dest.name}")  # its staging folder's tag: see OLD_PREFIX
    if dest.exists():
        dest.rename(old)
    try:
        staging.rename(dest)  # onto a folder that is not empty this fails: never a silent replacement
    except OSError as exc:
        if old.exists():
            old.rename(dest)
        elif not replace and dest.exists():
            raise PlansError(f"{dest}: exists (written meanwhile by another process?); not replaced") from exc
        raise
    if old.exists():
        trash = dest.with_name(f"{TRASH_PREFIX}{uuid.uuid4().hex[:8]}_{dest.name}")
        old.rename(trash)
        shutil.rmtree(trash, ignore_errors=True)


def _check_pack_destination(source: Path, dest: Path) -> None:
    """``dest`` is replaced as a whole: refuse anything but a new folder or an earlier model folder (a folder of
    other files, say ``~/models`` meant as 'into this folder', would be deleted), and the source or a folder
    holding it."""
    if dest == source or dest in source.parents:
        raise PlansError(f"{dest}: the destination is the model being packed or holds it; choose a new folder")
    if dest.exists() and not (dest.is_dir() and ((dest / layout.MODEL_MANIFEST).is_file()
                                                  or not any(dest.iterdir()))):
        raise PlansError(f"{dest}: exists and is not a model folder; it would be replaced as a whole. Give the "
                         f"new model's own folder, e.g. {dest / source.name}")


def staging_folder(dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = dest.with_name(f".tmp_{uuid.uuid4().hex[:8]}_{dest.name}")
    staging.mkdir()
    return staging


def pack_model(source: str | Path, dest: str | Path, *, folds: Sequence[str] | None = None, checkpoint: str = "final",
               half: bool = True, name: str | None = None, card: ModelCard | None = None) -> ModelManifest:
    """Write the compact form of ``source`` to ``dest`` (replaced as a whole): each fold's network weights only
    (float16 unless ``half`` is False) as ``fold_N/checkpoint_final.pth``, the documents inference needs
    (:data:`~autocmr.documents.layout.INFERENCE_DOCUMENTS`), the model card and a manifest with the sha256 of
    every weight file. Returns the manifest."""
    model = ModelFolder.open(source)
    folds = [str(f) for f in folds] if folds else model.available_folds(checkpoint)
    if not folds:
        raise PlansError(f"{model.path}: no fold has a {layout.checkpoint_name(checkpoint)} to pack")
    dest = Path(dest).expanduser().resolve()
    _check_pack_destination(model.path.resolve(), dest)
    staging = staging_folder(dest)
    try:
        for doc in layout.INFERENCE_DOCUMENTS:
            if (model.path / doc).is_file():
                shutil.copyfile(model.path / doc, staging / doc)
        weights = {}
        for fold in folds:
            verify_listed_weight_file(model.path, model.manifest, layout.checkpoint_relpath(fold, checkpoint))
            payload = model.load_checkpoint(model.checkpoint_path(fold, checkpoint))
            network = {k: v.to(COMPACT_DTYPE) if half and v.is_floating_point() else v
                       for k, v in payload["network"].items()}
            rel = layout.checkpoint_relpath(fold, "final")
            save_checkpoint(staging / rel, {**{k: payload[k] for k in HEADER_KEYS}, "network": network,
                                            "weights_dtype": str(COMPACT_DTYPE if half else torch.float32)[6:]})
            weights[rel] = sha256_of(staging / rel)
        if card is not None:
            card.save(staging)
        identity = model.manifest or ModelManifest(model.plans.dataset_name, model.plans.plans_name,
                                                   model.configuration.name)
        manifest = ModelManifest(identity.dataset, identity.plans_name, model.configuration.name, weights,
                                 name=name or identity.name).with_documents_of(staging)
        manifest.save(staging)
        swap_in_folder(staging, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("packed %d fold(s) of %s into %s (%.1f MB of weights)", len(folds), model.path, dest,
                sum((dest / rel).stat().st_size for rel in weights) / 1e6)
    return manifest


def upgrade_model_folder(folder: str | Path) -> ModelManifest:
    """Bring a model folder written before manifests up to date in place: version-1 checkpoints rewritten in the
    current format (same tensors), and a manifest with the sha256 of every checkpoint."""
    model = ModelFolder.open(folder)
    if model.manifest is not None and not model.manifest.is_legacy:
        for rel in model.manifest.weights:  # a current manifest's checksums hold first: upgrade re-blesses nothing
            if (model.path / rel).is_file():
                verify_weight_file(model.path, model.manifest, rel)
    rewritten, weights = 0, {}
    for path in sorted(model.path.glob(f"{layout.FOLD_PREFIX}*/checkpoint_*.pth")):
        payload = load_checkpoint(path)  # weights_only; version 1 allows numpy's array constructor only
        if payload.get("schema_version") != CHECKPOINT_SCHEMA_VERSION:
            save_checkpoint(path, upgrade_payload(payload))
            rewritten += 1
        weights[path.relative_to(model.path).as_posix()] = sha256_of(path)
    identity = model.manifest or ModelManifest(model.plans.dataset_name, model.plans.plans_name,
                                               model.configuration.name)
    manifest = identity.with_weights(weights)
    manifest.save(model.path)
    logger.info("%s: %d checkpoint(s) rewritten in the current format, %d recorded in %s", model.path, rewritten,
                len(weights), layout.MODEL_MANIFEST)
    return manifest
