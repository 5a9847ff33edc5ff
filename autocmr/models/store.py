"""Writing model folders for others: the compact shipped form (weights only, float16, manifest with sha256)
and the upgrade of folders written before manifests and versioned checkpoints."""
from __future__ import annotations

import logging
import shutil
import uuid
from pathlib import Path
from typing import Sequence

import torch

from autocmr.documents import layout
from autocmr.documents.checkpoint import (CHECKPOINT_SCHEMA_VERSION, HEADER_KEYS, load_checkpoint, save_checkpoint,
                                          upgrade_payload)
from autocmr.documents.manifest import ModelManifest, sha256_of, verify_listed_weight_file, verify_weight_file
from autocmr.documents.model_card import ModelCard
from autocmr.errors import PlansError
from autocmr.models.folder import ModelFolder

logger = logging.getLogger(__name__)
COMPACT_DTYPE = torch.float16  # halves the size; predictions agree with float32 weights (tested)


OLD_PREFIX = ".tmp_old_"


def recover_swapped_out(dest: Path) -> bool:
    """A process killed between the two renames of :func:`swap_in_folder` left ``dest`` missing and the model it
    was replacing under ``.tmp_old_<hex>_NAME``: put that back (the newest, if several). True if it did."""
    if dest.exists() or not dest.parent.is_dir():
        return False
    left = [p for p in dest.parent.glob(f"{OLD_PREFIX}*") if p.is_dir() and p.name.split("_", 3)[-1] == dest.name
            and len(p.name.split("_", 3)) == 4]
    if not left:
        return False
    newest = max(left, key=lambda p: p.stat().st_mtime)
    newest.rename(dest)
    logger.warning("%s: restored from %s, left by an interrupted replacement", dest, newest.name)
    return True


def swap_in_folder(staging: Path, dest: Path) -> None:
    """Replace ``dest`` by the complete folder ``staging`` (same parent): readers see the old or the new one
    (or, for the instant between two renames, none: :func:`recover_swapped_out` repairs a kill there)."""
    recover_swapped_out(dest)
    old = dest.with_name(f"{OLD_PREFIX}{uuid.uuid4().hex[:8]}_{dest.name}")
    if dest.exists():
        dest.rename(old)
    try:
        staging.rename(dest)
    except OSError:
        if old.exists():
            old.rename(dest)
        raise
    shutil.rmtree(old, ignore_errors=True)


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
