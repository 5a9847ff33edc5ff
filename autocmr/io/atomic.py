"""Write files under a temporary name in the target folder, then rename: readers never see half a file."""
from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

TEMP_PREFIX = ".tmp_"
# A temporary untouched this long belongs to no live writer (one case, plan or table is written in seconds).
SHARED_FOLDER_STALE_S = 3600.0


def check_output_folder(path: str | Path) -> Path:
    """``path`` as a folder that can be written to, checked before any work is spent on it: an existing file
    in its place, a parent that is a file, or a folder without write permission is an
    :class:`~autocmr.errors.OutputPathError` naming it. Nothing is created."""
    from autocmr.errors import OutputPathError

    if not str(path).strip():  # an unset shell variable (-o "$OUT"): never the current folder by accident
        raise OutputPathError(path, "the output folder is an empty name (an unset variable?): give a folder")
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise OutputPathError(path, "is a file, not a folder: give a folder for the outputs")
    existing = next(p for p in (path, *path.parents) if p.exists())  # the filesystem root always exists
    if not existing.is_dir():
        raise OutputPathError(path, f"cannot be created: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputPathError(path, f"cannot be written: no write permission in {existing}")
    return path


def temporary_sibling(path: str | Path) -> Path:
    """A unique temporary path beside ``path`` that keeps its full suffix (e.g. ``.nii.gz``)."""
    path = Path(path)
    return path.with_name(f"{TEMP_PREFIX}{uuid.uuid4().hex[:12]}_{path.name}")


def temporary_target(name: str) -> str | None:
    """The file name a temporary of :func:`temporary_sibling` stands for (``.tmp_<hex>_NAME`` -> ``NAME``);
    None for any other name. Cleanups compare it exactly: a pattern such as ``.tmp_*_P1_seg`` also matches
    the live temporary of ``A_P1_seg``."""
    if not name.startswith(TEMP_PREFIX):
        return None
    parts = name.split("_", 2)  # ".tmp", random hex, target name
    return parts[2] if len(parts) == 3 and parts[2] else None


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path; on success rename it to ``path``, on failure delete it.

    Example::

        with atomic_path(out) as tmp:
            sitk.WriteImage(image, str(tmp))
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    try:
        yield tmp
        _flush_to_disk(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _flush_to_disk(path: Path) -> None:
    """Make the file's data durable before its rename: after a machine crash (not merely a killed process)
    a file system may otherwise show the new name with no data in it (an empty mask or record). Folders are
    left to their files."""
    if not path.is_file():
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text_atomic(path: str | Path, text: str) -> None:
    """``text`` as UTF-8 under ``path``, atomically, its line endings as given: no translation, which on Windows
    made pandas' CSV rows (already ``\r\n`` there) end in ``\r\r\n``, a blank row between rows in Excel."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)


def write_json_atomic(path: str | Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def copy_file_atomic(src: str | Path, dst: str | Path) -> None:
    """Copy ``src`` to ``dst`` under a temporary name, then rename: another process reading ``dst`` (two folds
    of one model folder started together) sees the old file or the whole new one."""
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def _json_default(value: Any) -> Any:
    # numpy scalars/arrays and paths appear in metadata; convert them instead of failing mid-write.
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__} to JSON: {value!r}")


def remove_stale_temporaries(folder: str | Path, *, older_than_s: float = 0.0) -> int:
    """Delete temporary files left by an interrupted run in ``folder``; returns how many were removed.

    ``older_than_s``: only those not written to for that long. A folder that several processes may write at
    once (a preprocessed dataset that two fine-tuning folds bring up to date together) needs it, or one
    process would delete the file another is still writing."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    removed = 0
    now = time.time()
    for item in folder.iterdir():
        if not (item.name.startswith(TEMP_PREFIX) and item.is_file()):
            continue
        try:
            if older_than_s > 0 and now - item.stat().st_mtime < older_than_s:
                continue
            item.unlink()
        except FileNotFoundError:  # its writer renamed or removed it meanwhile
            continue
        removed += 1
    return removed
