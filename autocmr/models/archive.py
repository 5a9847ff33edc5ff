"""One-file archives of a model folder, to move models between machines without internet.

``export_model`` writes ``NAME.tar.gz`` holding the small documents, the chosen checkpoints and a manifest
that lists exactly those weight files with their sha256 (each is verified against the source's manifest
first; links are stored as the files they point to). ``import_model`` reads the archive without trusting it:
only regular files under one top folder, no absolute paths, links, sparse files, ``..``, names unsafe on Windows
(backslash, colon) or duplicate names (letter case aside), and limits on size checked as each header is read
(before a bomb is decompressed; no header is read whole past :data:`MAX_HEADER_READ`) and before anything is
written; contents are written by autocmr itself (never ``extractall``) into a staging folder, every weight file
is checked against the manifest, and only then is the model moved into place, under the models folder's lock.
"""
from __future__ import annotations

import contextlib
import gzip
import importlib
import io
import json
import logging
import os
import re
import shutil
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterator, Sequence

from autocmr.documents import layout
from autocmr.documents.manifest import ModelManifest, sha256_of, verify_documents, verify_listed_weight_file
from autocmr.errors import AutocmrError, InputFileError, OutputPathError, PlansError
from autocmr.io.atomic import atomic_path
from autocmr.models.folder import ModelFolder
from autocmr.models.registry import DEFAULT_MODEL_NAME, resolve_models_dir
from autocmr.models.store import (models_lock, recover_swapped_out, remove_leftovers, staging_folder,
                                  swap_in_folder)

logger = logging.getLogger(__name__)
ARCHIVE_SUFFIX = ".tar.gz"
_VALID_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _check_name(name: str) -> str:
    if not _VALID_NAME.fullmatch(name) or name == DEFAULT_MODEL_NAME:
        raise PlansError(f"model name {name!r} is not allowed: use letters, digits, '.', '_' or '-', and not "
                         f"{DEFAULT_MODEL_NAME!r} (the packaged model)")
    return name


ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")
GIB = 1 << 30
MAX_IMPORT_BYTES = 16 * GIB  # the files of one archive; a model of five folds weighs well under 1 GiB
FREE_SPACE_MARGIN = GIB  # left free on the models folder's filesystem after an import
MAX_MEMBERS = 10_000
MAX_EXPANSION = 50  # unpacked size / archive size: model weights barely compress, a bomb does a thousandfold
# one read of the unpacked stream: a pax or GNU long-name header is read whole (tarfile reads the size it declares
# into memory before any member is seen); real ones are under a kilobyte, file data is read in 64-KiB pieces
MAX_HEADER_READ = 1 << 20
_FILE_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE)  # not CONTTYPE or GNU sparse, which isfile() also accepts


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
    # dereference: a symlinked or hard-linked file is stored as the regular file it points to, the only kind of
    # member import accepts (tarfile would store a link, or a second name of one inode as a hard link)
    with atomic_path(archive) as tmp, tarfile.open(tmp, "w:gz", dereference=True) as tar:
        for rel in sorted(manifest.documents) + sorted(weights):
            with open(model.path / rel, "rb") as src:  # the file a link points to, and the size of what is read
                tar.addfile(tar.gettarinfo(fileobj=src, arcname=f"{name}/{rel}"), src)
        data = json.dumps(manifest.to_dict(), indent=2).encode()
        info = tarfile.TarInfo(f"{name}/{layout.MODEL_MANIFEST}")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    logger.info("exported %s (%d weight file(s)) to %s", model.path, len(weights), archive)
    return archive


def _safe_members(tar: tarfile.TarFile, archive: Path, limits: _Limits
                  ) -> tuple[str, list[tuple[tarfile.TarInfo, str]]]:
    """(top folder, [(member, path inside it)]) after checking every member is a plain file or folder, each
    named once (letter case aside) with a name safe on every system, with no file standing where another member
    needs a folder, and the files' sizes within ``limits``."""
    tops, files, file_names, declared = set(), [], set(), 0
    names: dict[str, str] = {}  # case-folded name -> the name as given
    for count, member in enumerate(tar, start=1):  # not getmembers(): stop reading headers past the limit
        if count > MAX_MEMBERS:
            raise InputFileError(archive, f"holds more than {MAX_MEMBERS} members; a model archive holds a few dozen "
                                          "files, refusing to import it")
        parts = PurePosixPath(member.name).parts
        if member.name.startswith("/") or ".." in parts:
            raise InputFileError(archive, f"unsafe path {member.name!r} in the archive; refusing to import it")
        if "\\" in member.name or ":" in member.name:  # '..\\x' and 'C:\\x' are paths on Windows, not names
            raise InputFileError(archive, f"unsafe path {member.name!r} in the archive: a backslash or a colon is a "
                                          "folder separator or a drive on Windows; refusing to import it")
        if member.issparse():  # expands to more than it declares: its size could not be checked
            raise InputFileError(archive, f"{member.name!r} is a sparse file; refusing to import it (export the "
                                          "model with `autocmr_models export`)")
        if member.type not in _FILE_TYPES and not member.isdir():
            raise InputFileError(archive, f"{member.name!r} is a link or special file; refusing to import it")
        if not parts or (member.isfile() and len(parts) == 1):  # "." or model.json at the top: no model folder
            raise InputFileError(archive, f"{member.name!r} lies at the archive's top level, but a model archive "
                                          "holds one model folder (made with `tar -C FOLDER .`?); export it with "
                                          "`autocmr_models export FOLDER`, or tar the folder itself")
        normalized = "/".join(parts)
        first = names.get(normalized.casefold())
        if first is not None:  # the second copy would silently replace the first
            if first == normalized:
                raise InputFileError(archive, f"{member.name!r} appears twice in the archive; refusing to import it")
            raise InputFileError(archive, f"{member.name!r} and {first!r} differ only by letter case in the archive: "
                                          "on a case-insensitive disk (Windows, macOS) one would replace the other; "
                                          "refusing to import it")
        names[normalized.casefold()] = normalized
        tops.add(parts[0])
        if member.isfile():
            file_names.add(normalized.casefold())
            files.append((member, "/".join(parts[1:])))
            declared += member.size
            limits.check(declared)  # before the next header is read: gzip decompresses this member to reach it
    for name in names:
        clash = next((parent for parent in _parents(name) if parent in file_names), None)
        if clash is not None:
            raise InputFileError(archive, f"{names[clash]!r} is a file and also the folder of {names[name]!r} in the "
                                          "archive; refusing to import it")
    if len(tops) != 1:
        raise InputFileError(archive, f"expected one model folder in the archive, found {sorted(tops) or 'none'}")
    return tops.pop(), files


def _parents(name: str) -> list[str]:
    parts = name.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def _free_bytes(folder: Path) -> int:
    """Free space of the filesystem ``folder`` is (or will be) on."""
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    return shutil.disk_usage(existing).free


def _size(size: float) -> str:
    return f"{size / GIB:.2f} GiB" if abs(size) >= GIB else f"{size / (1 << 20):.1f} MiB"


@dataclass(frozen=True)
class _Limits:
    """What the files of ``archive`` may add up to: a forged archive or a decompression bomb must not fill the
    disk the models folder ``root`` is on, nor keep the CPU decompressing what will be refused."""

    archive: Path
    root: Path
    max_bytes: int
    free: int  # of the models folder's filesystem, less FREE_SPACE_MARGIN
    packed: int  # the archive's own size

    @classmethod
    def of(cls, archive: Path, root: Path, max_bytes: int) -> "_Limits":
        return cls(archive, root, max_bytes, _free_bytes(root) - FREE_SPACE_MARGIN, archive.stat().st_size)

    def check(self, declared: int) -> None:
        """Refuse once the sizes the headers read so far declare add up to more than a limit: reading the next
        header would decompress the data before it (all of it, for a bomb)."""
        if declared > min(self.max_bytes, self.free):
            why = (f"the import limit of {_size(self.max_bytes)} (raise it with --max-gib)"
                   if self.max_bytes <= self.free else f"the free space of {self.root} less a "
                   f"{_size(FREE_SPACE_MARGIN)} margin ({_size(max(self.free, 0))})")
            raise InputFileError(self.archive, f"its files add up to at least {_size(declared)}, more than {why}; "
                                               "refusing to import it")
        if declared > MAX_EXPANSION * self.packed:
            raise InputFileError(self.archive, f"its files add up to at least {_size(declared)}, over "
                                               f"{MAX_EXPANSION} times the archive's {_size(self.packed)} (model "
                                               "weights barely compress): a corrupt archive or a decompression bomb; "
                                               "refusing to import it")


def import_model(archive: str | Path, *, name: str | None = None, models_dir: str | Path | None = None,
                 replace: bool = False, max_bytes: int = MAX_IMPORT_BYTES) -> Path:
    """Install the model in ``archive`` under the models folder; returns its folder. Refuses to overwrite an
    installed model of the same name unless ``replace``.

    Limits, checked before anything is written: at most :data:`MAX_MEMBERS` members, only regular files and
    folders (no links, sparse or special files), files adding up to at most ``max_bytes`` (default
    :data:`MAX_IMPORT_BYTES`, 16 GiB), to at most the free space of the models folder's filesystem less
    :data:`FREE_SPACE_MARGIN` (1 GiB), and to at most :data:`MAX_EXPANSION` times the archive's size.
    A truncated or corrupt archive is an InputFileError naming it; nothing is installed then. Imports into one
    models folder check and install under its lock (:func:`~autocmr.models.store.models_lock`): of two imports
    of one name, the second fails unless ``replace``. Folders interrupted imports left are removed."""
    archive = Path(archive).expanduser()
    root = resolve_models_dir(models_dir)
    with _open_archive(archive) as tar:
        with _reading(archive):
            top, files = _safe_members(tar, archive, _Limits.of(archive, root, max_bytes))
        dest = root / _check_name(name or top)
        with models_lock(root):
            remove_leftovers(root)
            recover_swapped_out(dest)
            _refuse_installed(dest, replace)
            staging = staging_folder(dest)
        try:
            with _reading(archive):
                for member, rel in files:
                    (staging / rel).parent.mkdir(parents=True, exist_ok=True)
                    with tar.extractfile(member) as src, open(staging / rel, "wb") as out:  # type: ignore[union-attr]
                        shutil.copyfileobj(src, out)
            _verify_imported(staging, archive)
            with models_lock(root):  # the check again: another import may have installed this name meanwhile
                recover_swapped_out(dest)
                _refuse_installed(dest, replace, meanwhile=True)
                swap_in_folder(staging, dest, replace=replace)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    logger.info("installed %s as %s", archive, dest)
    return dest


# how the tar stream is packed, by its first bytes (what tarfile.open(..., "r:*") tries in turn): the module
# whose open() unpacks it, imported when needed (bz2 and lzma are optional parts of a Python build)
_UNPACKERS = ((b"\x1f\x8b", "gzip"), (b"BZh", "bz2"), (b"\xfd7zXZ\x00", "lzma"))


@contextlib.contextmanager
def _open_archive(archive: Path) -> Iterator[tarfile.TarFile]:
    """``archive`` (a tar file, plain or gzip, bzip2 or xz compressed) opened for reading through
    :class:`_BoundedReads`: tarfile reads the first member's headers while it opens, so the bound is in place
    before then."""
    try:
        with open(archive, "rb") as probe:
            start = probe.read(6)
        module = next((name for magic, name in _UNPACKERS if start.startswith(magic)), None)
        stream = importlib.import_module(module).open(archive, "rb") if module else open(archive, "rb")
    except OSError as exc:
        raise InputFileError(archive, f"not a readable model archive ({exc})") from exc
    with stream:
        try:
            tar = tarfile.open(fileobj=_BoundedReads(stream, archive), mode="r:")
        except (*_CORRUPT, OSError) as exc:
            raise InputFileError(archive, f"not a readable model archive ({str(exc) or type(exc).__name__})"
                                 ) from exc
        with tar:
            yield tar


class _BoundedReads:
    """The unpacked tar stream, refusing any single read over :data:`MAX_HEADER_READ`: tarfile reads a pax or
    GNU long-name header whole, at the size the header declares, before the member it describes is seen, so
    without this a forged header (a few bytes packed, gigabytes unpacked) would be held in memory before any
    of :func:`_safe_members`' checks could run."""

    def __init__(self, stream: io.BufferedIOBase, archive: Path) -> None:
        self.stream, self.archive = stream, archive

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0 or size > MAX_HEADER_READ:
            what = "the whole rest of the stream" if size is None or size < 0 else _size(size)
            raise InputFileError(self.archive, f"holds a header that reads {what} at once (a model archive's "
                                               f"headers are under {_size(MAX_HEADER_READ)}): a corrupt archive or "
                                               "a decompression bomb; refusing to import it")
        return self.stream.read(size)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.stream.seek(offset, whence)

    def tell(self) -> int:
        return self.stream.tell()


def _refuse_installed(dest: Path, replace: bool, *, meanwhile: bool = False) -> None:
    if dest.exists() and not replace:
        when = " (by another import, while this one was unpacking)" if meanwhile else ""
        raise PlansError(f"{dest}: a model named {dest.name!r} is already installed{when}; pass --replace to "
                         "replace it or --name to install this one under another name")


try:  # xz is an optional part of a Python build
    from lzma import LZMAError
except ImportError:  # pragma: no cover - then no xz archive opens at all
    LZMAError = zlib.error  # type: ignore[misc, assignment]

# what a truncated download or a damaged copy raises while the archive is read (gzip.BadGzipFile: a bad CRC)
_CORRUPT = (EOFError, tarfile.TarError, zlib.error, gzip.BadGzipFile, LZMAError)


@contextlib.contextmanager
def _reading(archive: Path) -> Iterator[None]:
    try:
        yield
    except _CORRUPT as exc:
        raise InputFileError(archive, f"truncated or corrupt archive ({str(exc) or type(exc).__name__}); copy it again "
                                      "from its source") from exc


def _verify_imported(folder: Path, archive: Path) -> None:
    try:
        manifest = ModelManifest.load(folder)  # its keys are checked here, before any file they name is read
        if manifest is None or manifest.is_legacy or not manifest.weights:
            raise InputFileError(archive, f"the archive has no {layout.MODEL_MANIFEST} with weight checksums; "
                                          "export the model again with `autocmr_models export`")
        unlisted = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.pth")
                          if p.relative_to(folder).as_posix() not in manifest.weights)
        if unlisted:
            raise InputFileError(archive, f"weight files not listed in the manifest: {unlisted}")
        for rel in manifest.weights:
            if not (folder / rel).is_file():
                raise InputFileError(archive, f"{rel} is listed in the manifest but missing from the archive")
            verify_listed_weight_file(folder, manifest, rel)
        checked = verify_documents(folder, manifest)  # archives exported before documents had checksums list none
        ModelFolder.open(folder)  # plans, dataset.json and configuration readable
        if not checked:
            _warn_unchecked_documents(folder, archive)
    except AutocmrError as exc:  # named after the archive: the staging folder they point into is gone by now
        if isinstance(exc, InputFileError) and Path(exc.path) == archive:
            raise
        raise InputFileError(archive, str(exc).replace(f"{folder}{os.sep}", "").replace(str(folder), "the archive")
                             ) from exc


def _warn_unchecked_documents(folder: Path, archive: Path) -> None:
    """Such an archive is still installed (it was made by an earlier autocmr), but nothing says its plans.json
    or postprocessing.json are the exporter's: an edit would change every mask unnoticed."""
    present = [name for name in layout.MODEL_DOCUMENTS if name != layout.MODEL_MANIFEST and (folder / name).is_file()]
    logger.warning("%s: its %s has no checksums of the model's documents (exported by an autocmr before they were "
                   "recorded): %s are installed UNCHECKED, only the weight files were verified. Ask for an archive "
                   "exported by a current autocmr to have them checked", archive, layout.MODEL_MANIFEST, present)
