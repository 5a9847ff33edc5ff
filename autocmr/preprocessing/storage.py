"""On-disk format of preprocessed cases, in ``<preprocessed>/<dataset>/<data_identifier>/``:

* ``CASE.b2nd``        image channels, float32 (c, z, y, x), blosc2-compressed (fast to decompress)
* ``CASE_seg.b2nd``    label map, int8 (1, z, y, x)
* ``CASE_locs.npz``    sampled voxel coordinates of each foreground class (for foreground oversampling)
* ``CASE.json``        properties (geometry, crop box, spacings, signatures); written last, so a case
                       counts as done only when its JSON exists and its signatures match.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import blosc2
import numpy as np

from autocmr.dataset.naming import LOCATIONS_SUFFIX, SEG_SUFFIX  # the names the case-id collision rule knows
from autocmr.errors import InputFileError, exception_text
from autocmr.io.atomic import atomic_path, write_json_atomic

# LZ4 at a moderate level: normalised float images compress little, so decompression speed matters more.
_CPARAMS = {"codec": blosc2.Codec.LZ4HC, "clevel": 4, "nthreads": 1}


def _write_array(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        blosc2.asarray(np.ascontiguousarray(array), urlpath=str(tmp), mode="w", cparams=_CPARAMS)


def _read_array(path: Path) -> np.ndarray:
    try:
        return blosc2.open(str(path), mode="r")[:]
    except Exception as exc:  # noqa: BLE001 - blosc2 raises several types for corrupt files
        raise InputFileError(path, f"cannot read preprocessed array ({exception_text(exc)}); "
                                   "delete it and re-run autocmr_plan") from exc


def save_case(folder: Path, case_id: str, data: np.ndarray, seg: np.ndarray | None,
              locations: dict[int, np.ndarray], properties: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    # The record goes first and comes back last: a case listed (list_cases) is one whose files were all
    # written together. Replacing a stored case in place, a run killed between its files left the old record
    # beside a new image and an old label, and training listed it.
    (folder / f"{case_id}.json").unlink(missing_ok=True)
    _write_array(folder / f"{case_id}.b2nd", data.astype(np.float32, copy=False))
    if seg is not None:
        _write_array(label_path(folder, case_id), seg.astype(np.int8, copy=False)[None])
    else:
        label_path(folder, case_id).unlink(missing_ok=True)  # an earlier, labelled version's
    with atomic_path(folder / f"{case_id}{LOCATIONS_SUFFIX}.npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **{str(k): v.astype(np.int32) for k, v in locations.items()})
    write_json_atomic(folder / f"{case_id}.json", properties)


def load_properties(folder: Path, case_id: str) -> dict[str, Any]:
    path = folder / f"{case_id}.json"
    if not path.is_file():
        raise InputFileError(path, "preprocessed case not found; run autocmr_plan for this dataset first")
    return json.loads(path.read_text(encoding="utf-8"))


def label_path(folder: Path, case_id: str) -> Path:
    """Where a case's stored label map lives (absent for an unlabelled case)."""
    return folder / f"{case_id}{SEG_SUFFIX}.b2nd"


def load_arrays(folder: Path, case_id: str) -> tuple[np.ndarray, np.ndarray | None]:
    data = _read_array(folder / f"{case_id}.b2nd")
    seg_path = label_path(folder, case_id)
    return data, (_read_array(seg_path) if seg_path.is_file() else None)


def load_locations(folder: Path, case_id: str) -> dict[int, np.ndarray]:
    with np.load(folder / f"{case_id}{LOCATIONS_SUFFIX}.npz") as f:
        return {int(k): f[k] for k in f.files}


def is_current(folder: Path, case_id: str, signature: str) -> bool:
    """True when the case was fully written with the same inputs and preprocessing settings."""
    path = folder / f"{case_id}.json"
    if not path.is_file():
        return False
    try:
        props = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, OSError):
        return False
    needed = [folder / f"{case_id}.b2nd", folder / f"{case_id}{LOCATIONS_SUFFIX}.npz"]
    return props.get("signature") == signature and all(os.path.exists(p) for p in needed)


def remove_case(folder: Path, case_id: str) -> None:
    """Delete a case's stored files (its record first, so it stops being listed at once)."""
    for name in (f"{case_id}.json", f"{case_id}.b2nd", f"{case_id}{SEG_SUFFIX}.b2nd",
                 f"{case_id}{LOCATIONS_SUFFIX}.npz"):
        (folder / name).unlink(missing_ok=True)


def list_cases(folder: Path) -> list[str]:
    """Case ids whose properties and image array both exist (the folder also holds configuration.json)."""
    return sorted(p.name[:-5] for p in folder.glob("*.json")
                  if not p.name.startswith(".") and (folder / f"{p.name[:-5]}.b2nd").is_file())
