"""The model manifest (``model.json``): a model folder's identity and the sha256 of each weight file.

A model folder is copied between machines and received from colleagues; the manifest lets the reader check
that every weight file is the one training (or the compact export) wrote: a corrupt or modified file fails
with a message that names it. Version 1 is the ``model.json`` autocmr wrote before manifests (identity only,
no checksums): such folders still load, with a warning saying how to add checksums. The checksums detect
corruption and accidental edits, not a deliberate edit that also rewrites ``model.json``: the manifest is not
signed, so whoever can change a weight file or document can record its new checksum too.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Iterator

from autocmr.documents.layout import CHECKPOINT_KINDS, FOLD_PREFIX, MODEL_DOCUMENTS, MODEL_MANIFEST
from autocmr.documents.versioning import check_version, read_json_document
from autocmr.errors import DocumentError
from autocmr.io.atomic import write_json_atomic

logger = logging.getLogger(__name__)

MANIFEST_SCHEMA_VERSION = 2
LEGACY_SCHEMA_VERSION = 1
UPGRADE_HINT = "run `autocmr_models upgrade FOLDER` to convert it"
_HASH_CHUNK = 1 << 20
# The only keys a manifest may hold: they are joined to the model folder and read, and a manifest can come from
# an archive (an absolute path or ``..`` would make import hash, or loading open, a file outside the model)
WEIGHT_KEY = re.compile(rf"{FOLD_PREFIX}[^/\\]+/checkpoint_({'|'.join(CHECKPOINT_KINDS)})\.pth")
DOCUMENT_KEYS = tuple(name for name in MODEL_DOCUMENTS if name != MODEL_MANIFEST)


def autocmr_version() -> str:
    try:
        return metadata.version("autocmr")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelManifest:
    """Identity of a model folder and the checksums of its weight files (paths relative, '/'-separated)."""

    dataset: str
    plans_name: str
    configuration: str
    weights: dict[str, str] = field(default_factory=dict)
    name: str | None = None
    autocmr_version: str = field(default_factory=autocmr_version)
    schema_version: int = MANIFEST_SCHEMA_VERSION
    # sha256 of the model's documents (plans.json, postprocessing.json, ...) where the folder is a finished,
    # distributed model (packed, exported); empty for a training folder, whose documents change as it trains
    documents: dict[str, str] = field(default_factory=dict)

    @property
    def is_legacy(self) -> bool:
        return self.schema_version == LEGACY_SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, folder: Path) -> None:
        write_json_atomic(folder / MODEL_MANIFEST, {**self.to_dict(), "schema_version": MANIFEST_SCHEMA_VERSION})

    def with_weights(self, weights: dict[str, str]) -> "ModelManifest":
        return replace(self, weights=dict(sorted(weights.items())), schema_version=MANIFEST_SCHEMA_VERSION)

    def checksums_of(self, relpaths: Iterable[str]) -> dict[str, str]:
        """The recorded sha256 of each of ``relpaths``; empty unless the manifest lists them all (a record of
        which weights were used that holds wherever the folder is copied)."""
        wanted = list(relpaths)
        return {rel: self.weights[rel] for rel in wanted} if all(rel in self.weights for rel in wanted) else {}

    def with_documents_of(self, folder: Path) -> "ModelManifest":
        """This manifest with the sha256 of each model document present in ``folder`` (the manifest aside)."""
        present = [name for name in MODEL_DOCUMENTS if name != MODEL_MANIFEST and (folder / name).is_file()]
        return replace(self, documents={name: sha256_of(folder / name) for name in present})

    @classmethod
    def from_dict(cls, data: dict[str, Any], path: Path) -> "ModelManifest":
        version = check_version(path, data.get("schema_version", LEGACY_SCHEMA_VERSION), kind="model manifest",
                                supported=(LEGACY_SCHEMA_VERSION, MANIFEST_SCHEMA_VERSION), what_to_rerun=UPGRADE_HINT)
        manifest = cls(_text(data, "dataset", path), _text(data, "plans_name", path),
                       _text(data, "configuration", path), _checksums(data, "weights", path),
                       _optional_text(data, "name", path), str(data.get("autocmr_version", "unknown")),
                       version, _checksums(data, "documents", path))
        _check_keys(manifest, path)
        return manifest

    @classmethod
    def load(cls, folder: Path) -> "ModelManifest | None":
        """The folder's manifest, or None when it has no ``model.json`` at all."""
        path = folder / MODEL_MANIFEST
        if not path.exists():
            return None
        return cls.from_dict(read_json_document(path, kind="model manifest", what_to_rerun=UPGRADE_HINT), path)


def _text(data: dict[str, Any], key: str, path: Path) -> str:
    """The non-empty string ``data[key]``: a manifest of another shape (a hand edit, a forged archive) fails
    here, naming the field, not later in a command with a TypeError."""
    if key not in data:
        raise DocumentError(f"{path}: model manifest lacks {key!r}; {UPGRADE_HINT}")
    value = data[key]
    if not isinstance(value, str) or not value:
        raise DocumentError(f"{path}: model manifest field {key!r} must be a non-empty string, not {_shape(value)}; "
                            "the manifest is corrupt or was edited. Copy the model folder again from its source")
    return value


def _optional_text(data: dict[str, Any], key: str, path: Path) -> str | None:
    return None if data.get(key) is None else _text(data, key, path)


def _checksums(data: dict[str, Any], key: str, path: Path) -> dict[str, str]:
    """``data[key]``: a JSON object of file name -> sha256 string (empty when absent or null)."""
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise DocumentError(f"{path}: model manifest field {key!r} must map file names to sha256 strings, not "
                            f"{_shape(value)}; the manifest is corrupt or was edited. Copy the model folder again "
                            "from its source")
    return dict(value)


def _shape(value: Any) -> str:
    """A short description of ``value`` for a message (a manifest can be large)."""
    text = repr(value)
    return text if len(text) <= 60 else f"a JSON {type(value).__name__} ({text[:40]}...)"


def _check_keys(manifest: ModelManifest, path: Path) -> None:
    """Every key names a file inside the model folder that a manifest may list, checked before any is read."""
    for key in manifest.weights:
        if not WEIGHT_KEY.fullmatch(key):
            raise DocumentError(f"{path}: {key!r} is not a weight file a model manifest may list (only "
                                f"{FOLD_PREFIX}N/checkpoint_{{{','.join(CHECKPOINT_KINDS)}}}.pth); the manifest is "
                                "corrupt or was forged")
    for key in manifest.documents:
        if key not in DOCUMENT_KEYS:
            raise DocumentError(f"{path}: {key!r} is not a model document (only {list(DOCUMENT_KEYS)}); the manifest "
                                "is corrupt or was forged")


def is_distributed(manifest: ModelManifest | None) -> bool:
    """A finished model passed on as a whole (packed, exported, imported): its manifest lists the checksums of
    its documents and weights. A training folder lists no documents (and lacks the folds still training)."""
    return manifest is not None and not manifest.is_legacy and bool(manifest.weights) and bool(manifest.documents)


def verify_weight_listing(folder: Path, manifest: ModelManifest | None, *, installed: bool = False) -> None:
    """For a distributed model (:func:`is_distributed`), or an ``installed`` one (imported into a models folder,
    whose manifest may predate document checksums) whose manifest lists weights, the weight files on disk are
    exactly those the manifest lists: a listed one that is missing (an interrupted copy) or a ``.pth`` in a fold
    folder it does not list (copied in from elsewhere) would change which folds are ensembled, so it raises
    :class:`DocumentError` naming the file. A training folder is not checked (its folds come and go as they
    train): it records no document checksums and is never installed."""
    finished = is_distributed(manifest) or (installed and manifest is not None and not manifest.is_legacy
                                            and bool(manifest.weights))
    if manifest is None or not finished:
        return
    for rel in manifest.weights:
        if not (folder / rel).is_file():
            raise DocumentError(f"{folder / rel}: listed in {folder / MODEL_MANIFEST} but missing; copy the model "
                                "folder again from its source")
    for path in sorted(folder.glob(f"{FOLD_PREFIX}*/**/*.pth")):
        if path.relative_to(folder).as_posix() not in manifest.weights:
            raise DocumentError(f"{path}: not listed in {folder / MODEL_MANIFEST} (added after the model was packed "
                                "or exported); remove it or copy the model folder again from its source")


def verify_weight_file(folder: Path, manifest: ModelManifest | None, relpath: str, content: bytes | None = None
                       ) -> bool:
    """Check one weight file against the manifest. True when verified, False when the manifest does not cover
    it (a legacy folder or a fold still training: logged); a mismatch raises :class:`DocumentError`.
    ``content``: the file's bytes as already read, so that what is checked is exactly what gets loaded."""
    path = folder / relpath
    expected = manifest.weights.get(relpath) if manifest is not None else None
    if expected is None:
        why = UPGRADE_HINT if manifest is None or manifest.is_legacy else "a fold still training?"
        logger.warning("%s: not covered by %s, loaded without a checksum (%s)", path, folder / MODEL_MANIFEST, why)
        return False
    actual = sha256_of(path) if content is None else hashlib.sha256(content).hexdigest()
    if actual != expected:
        raise DocumentError(f"{path}: sha256 {actual[:16]}... does not match {expected[:16]}... recorded in "
                            f"{folder / MODEL_MANIFEST}; the file is corrupt or was modified. Copy the model folder "
                            "again from its source")
    return True


def verify_documents(folder: Path, manifest: ModelManifest | None) -> int:
    """Check the model documents the manifest lists (none for a training folder); returns how many were checked.
    A listed document that is missing or modified, or a model document the manifest does not list, raises
    :class:`DocumentError` naming it: an edited plans.json or postprocessing.json changes every mask."""
    if manifest is None or not manifest.documents:
        return 0
    for name, expected in manifest.documents.items():
        path = folder / name
        if not path.is_file():
            raise DocumentError(f"{path}: listed in {folder / MODEL_MANIFEST} but missing; copy the model folder "
                                "again from its source")
        actual = sha256_of(path)
        if actual != expected:
            raise DocumentError(f"{path}: sha256 {actual[:16]}... does not match {expected[:16]}... recorded in "
                                f"{folder / MODEL_MANIFEST}; the file was modified or is corrupt. Copy the model "
                                "folder again from its source")
    unlisted = [name for name in MODEL_DOCUMENTS if name != MODEL_MANIFEST and name not in manifest.documents
                and (folder / name).is_file()]
    if unlisted:
        raise DocumentError(f"{folder}: {unlisted} not listed in {folder / MODEL_MANIFEST} (added after the model "
                            "was packed or exported); remove them or copy the model folder again from its source")
    return len(manifest.documents)


def verify_listed_weight_file(folder: Path, manifest: ModelManifest | None, relpath: str) -> None:
    """:func:`verify_weight_file` for a file about to be passed on (exported, packed): with a current manifest,
    a weight file it does not list is refused too (it could be anything); a folder without checksums (legacy)
    is passed on with the warning, as there is nothing to check against."""
    if verify_weight_file(folder, manifest, relpath) or manifest is None or manifest.is_legacy:
        return
    raise DocumentError(f"{folder / relpath}: not listed in {folder / MODEL_MANIFEST}, so it cannot be verified "
                        "and is not passed on (a fold still training?); if you trust it, record it with "
                        f"`autocmr_models upgrade {folder}`")


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """Serialise read-modify-write of the manifest between processes training folds of one model at once."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: folds are trained one at a time there
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def update_weights(folder: Path, identity: ModelManifest, *, record: Iterable[str] = (),
                   forget_prefix: str | None = None) -> ModelManifest:
    """Record the current sha256 of the files ``record`` and drop entries under ``forget_prefix`` (a fold that
    is being retrained), keeping other folds' entries. ``identity`` is used when the folder has no
    manifest yet (or only a version-1 one)."""
    folder.mkdir(parents=True, exist_ok=True)
    with _folder_lock(folder):
        current = ModelManifest.load(folder)
        base = current if current is not None and not current.is_legacy else identity
        weights = {k: v for k, v in base.weights.items() if not (forget_prefix and k.startswith(forget_prefix))}
        weights.update({rel: sha256_of(folder / rel) for rel in record})
        # a folder trained into is a training folder again: its documents change as it trains
        updated = replace(base.with_weights(weights), documents={})
        updated.save(folder)
    return updated
