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

logger = logging.getLogger(__name__)
COMPACT_DTYPE = torch.float16  # halves the size; predictions agree with float32 weights (tested)


OLD_PREFIX = ".tmp_old_"
# An old model already replaced, renamed here before it is deleted: a deletion cut short leaves a trash folder,
# never a half-deleted ``.tmp_old_`` one that :func:`recover_swapped_out` would put back in place.
TRASH_PREFIX = ".tmp_trash_"
_STAGING = re.compile(r"\.tmp_[0-9a-f]{8}_.+")  # :func:`staging_folder`'s names
STALE_STAGING_S = 3600.0  # a staging folder untouched this long belongs to an import that was killed
MODELS_LOCK = ".autocmr_models.lock"
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
    return [p for p in dest.parent.glob(f"{OLD_PREFIX}*") if p.is_dir() and p.name.split("_", 3)[-1] == dest.name
            and len(p.name.split("_", 3)) == 4]


def recover_swapped_out(dest: Path) -> bool:
    """A process killed between the two renames of :func:`swap_in_folder` left ``dest`` missing and the model it
    was replacing under ``.tmp_old_<hex>_NAME``: put that back (the newest, if several). True if it did. Trash
    folders (``.tmp_trash_``: a replaced model being deleted) are never put back. Callers sharing ``dest``'s
    folder with other processes hold :func:`models_lock` (or use :func:`restore_interrupted_swap`)."""
    if dest.exists() or not dest.parent.is_dir():
        return False
    left = _swapped_out(dest)
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
    if dest.exists() or not dest.parent.is_dir() or not _swapped_out(dest):
        return False
    with models_lock(dest.parent):
        return recover_swapped_out(dest)


def remove_leftovers(folder: Path) -> list[str]:
    """Delete what interrupted imports and replacements left in ``folder`` (call it under :func:`models_lock`):
    trash folders, and staging folders untouched for :data:`STALE_STAGING_S` (a younger one may be an import
    still extracting). Returns the names removed."""
    now, removed = time.time(), []
    for item in sorted(folder.glob(".tmp_*")) if folder.is_dir() else ():
        if not item.is_dir() or item.is_symlink():
            continue
        stale = _STAGING.fullmatch(item.name) and now - _newest_mtime(item) > STALE_STAGING_S
        if item.name.startswith(TRASH_PREFIX) or stale:
            shutil.rmtree(item, ignore_errors=True)
            removed.append(item.name)
    if removed:
        logger.info("%s: removed %s, left by interrupted imports", folder, removed)
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
    """Replace ``dest`` by the complete folder ``staging`` (same parent): readers see the old or the new one
    (or, for the instant between two renames, none: :func:`recover_swapped_out` repairs a kill there). Without
    ``replace`` an existing ``dest`` is never replaced: PlansError."""
    recover_swapped_out(dest)
    if dest.exists() and not replace:
        raise PlansError(f"{dest}: exists (written meanwhile by another process?); not replaced")
    old = dest.with_name(f"{OLD_PREFIX}{uuid.uuid4().hex[:8]}_{dest.name}")
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
