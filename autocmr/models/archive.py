"""One-file archives of a model folder, to move models between machines without internet.

``export_model`` writes ``NAME.tar.gz`` holding the small documents, the chosen checkpoints and a manifest
that lists exactly those weight files with their sha256 (each is verified against the source's manifest
first). ``import_model`` reads the archive without trusting it: only regular files under one top folder, no
absolute paths, links or ``..``; contents are written by autocmr itself (never ``extractall``) into a staging
folder, every weight file is checked against the manifest, and only then is the model moved into place.
"""
from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import tarfile
from pathlib import Path, PurePosixPath
from typing import Sequence

from autocmr.documents import layout
from autocmr.documents.manifest import ModelManifest, sha256_of, verify_documents, verify_listed_weight_file
from autocmr.errors import AutocmrError, InputFileError, OutputPathError, PlansError
from autocmr.io.atomic import atomic_path
from autocmr.models.folder import ModelFolder
from autocmr.models.registry import DEFAULT_MODEL_NAME, resolve_models_dir
from autocmr.models.store import staging_folder, swap_in_folder

logger = logging.getLogger(__name__)
ARCHIVE_SUFFIX = ".tar.gz"
_VALID_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _check_name(name: str) -> str:
    if not _VALID_NAME.fullmatch(name) or name == DEFAULT_MODEL_NAME:
        raise PlansError(f"model name {name!r} is not allowed: use letters, digits, '.', '_' or '-', and not "
                         f"{DEFAULT_MODEL_NAME!r} (the packaged model)")
    return name


ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")


def export_model(reference: str | Path, archive: str | Path, *, checkpoints: Sequence[str] = ("final",),
                 name: str | None = None, replace: bool = False) -> Path:
    """Write ``reference`` (a folder or model name) with the ``checkpoints`` of each fold to ``archive`` (a
    gzipped tar, named ``.tar.gz`` or ``.tgz``); an existing archive is replaced only with ``replace``."""
    target = Path(archive).expanduser()
    if not target.name.lower().endswith(ARCHIVE_SUFFIXES):
        raise OutputPathError(target, f"the archive is a gzipped tar: name it {' or '.join(ARCHIVE_SUFFIXES)}")
    if target.exists() and not replace:
        raise OutputPathError(target, "exists; pass --replace to overwrite it, or choose another name")
    model = ModelFolder.open(reference)
    name = _check_name(name or (model.manifest.name if model.manifest and model.manifest.name else model.path.name))
    weights = {}
    for fold_dir in sorted(model.path.glob(f"{layout.FOLD_PREFIX}*")):
        for kind in checkpoints:
            rel = layout.checkpoint_relpath(fold_dir.name[len(layout.FOLD_PREFIX):], kind)
            if (model.path / rel).is_file():
                verify_listed_weight_file(model.path, model.manifest, rel)  # never pass a corrupt file on
                weights[rel] = sha256_of(model.path / rel)
    if not weights:
        raise PlansError(f"{model.path}: no fold has a checkpoint of kind {list(checkpoints)} to export")
    identity = model.manifest or ModelManifest(model.plans.dataset_name, model.plans.plans_name,
                                               model.configuration.name)
    manifest = ModelManifest(identity.dataset, identity.plans_name, model.configuration.name, weights,
                             name=name).with_documents_of(model.path)  # the importer checks them all
    archive = Path(archive).expanduser()
    with atomic_path(archive) as tmp, tarfile.open(tmp, "w:gz") as tar:
        for rel in sorted(manifest.documents) + sorted(weights):
            tar.add(model.path / rel, arcname=f"{name}/{rel}", recursive=False)
        data = json.dumps(manifest.to_dict(), indent=2).encode()
        info = tarfile.TarInfo(f"{name}/{layout.MODEL_MANIFEST}")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    logger.info("exported %s (%d weight file(s)) to %s", model.path, len(weights), archive)
    return archive


def _safe_members(tar: tarfile.TarFile, archive: Path) -> tuple[str, list[tuple[tarfile.TarInfo, str]]]:
    """(top folder, [(member, path inside it)]) after checking every member is a plain file or folder."""
    tops, files = set(), []
    for member in tar.getmembers():
        parts = PurePosixPath(member.name).parts
        if member.name.startswith("/") or ".." in parts:
            raise InputFileError(archive, f"unsafe path {member.name!r} in the archive; refusing to import it")
        if not (member.isfile() or member.isdir()):
            raise InputFileError(archive, f"{member.name!r} is a link or special file; refusing to import it")
        if not parts or (member.isfile() and len(parts) == 1):  # "." or model.json at the top: no model folder
            raise InputFileError(archive, f"{member.name!r} lies at the archive's top level, but a model archive "
                                          "holds one model folder (made with `tar -C FOLDER .`?); export it with "
                                          "`autocmr_models export FOLDER`, or tar the folder itself")
        tops.add(parts[0])
        if member.isfile():
            files.append((member, "/".join(parts[1:])))
    if len(tops) != 1:
        raise InputFileError(archive, f"expected one model folder in the archive, found {sorted(tops) or 'none'}")
    return tops.pop(), files


def import_model(archive: str | Path, *, name: str | None = None, models_dir: str | Path | None = None,
                 replace: bool = False) -> Path:
    """Install the model in ``archive`` under the models folder; returns its folder. Refuses to overwrite an
    installed model of the same name unless ``replace``."""
    archive = Path(archive).expanduser()
    try:
        tar = tarfile.open(archive, "r:*")
    except (OSError, tarfile.TarError) as exc:
        raise InputFileError(archive, f"not a readable model archive ({exc})") from exc
    root = resolve_models_dir(models_dir)
    with tar:
        top, files = _safe_members(tar, archive)
        dest = root / _check_name(name or top)
        if dest.exists() and not replace:
            raise PlansError(f"{dest}: a model named {dest.name!r} is already installed; pass --replace to "
                             "replace it or --name to install this one under another name")
        staging = staging_folder(dest)
        try:
            for member, rel in files:
                (staging / rel).parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as src, open(staging / rel, "wb") as out:  # type: ignore[union-attr]
                    shutil.copyfileobj(src, out)
            _verify_imported(staging, archive)
            swap_in_folder(staging, dest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    logger.info("installed %s as %s", archive, dest)
    return dest


def _verify_imported(folder: Path, archive: Path) -> None:
    manifest = ModelManifest.load(folder)
    if manifest is None or manifest.is_legacy or not manifest.weights:
        raise InputFileError(archive, f"the archive has no {layout.MODEL_MANIFEST} with weight checksums; export "
                                      "the model again with `autocmr_models export`")
    unlisted = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.pth")
                      if p.relative_to(folder).as_posix() not in manifest.weights)
    if unlisted:
        raise InputFileError(archive, f"weight files not listed in the manifest: {unlisted}")
    try:
        for rel in manifest.weights:
            if not (folder / rel).is_file():
                raise InputFileError(archive, f"{rel} is listed in the manifest but missing from the archive")
            verify_listed_weight_file(folder, manifest, rel)
        verify_documents(folder, manifest)  # archives exported before documents had checksums list none
        ModelFolder.open(folder)  # plans, dataset.json and configuration readable
    except AutocmrError as exc:  # named after the archive: the staging folder they point into is gone by now
        if isinstance(exc, InputFileError) and Path(exc.path) == archive:
            raise
        raise InputFileError(archive, str(exc).replace(f"{folder}{os.sep}", "").replace(str(folder), "the archive")
                             ) from exc
