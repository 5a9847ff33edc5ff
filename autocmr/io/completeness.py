"""Detect NIfTI files that hold less voxel data than their header announces.

ITK reads a truncated ``.nii``/``.nii.gz`` without an error (the missing voxels come back as zeros), so an
interrupted download or copy would be segmented or trained on silently. The integrity check and batch
prediction call :func:`check_complete` before reading a file.
"""
from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

from autocmr.errors import InputFileError


def check_complete(path: str | Path) -> None:
    """Raise :class:`InputFileError` if a NIfTI file holds less data than its header announces.

    ITK reads a truncated ``.nii``/``.nii.gz`` without an error (the missing voxels come back as zeros), so
    an interrupted download or copy would be segmented silently. Other formats are left to the reader.
    """
    path = Path(path)
    name = path.name.lower()
    if not name.endswith((".nii", ".nii.gz")):
        return
    if name.endswith(".gz"):
        with path.open("rb") as raw:
            start = raw.read(_NIFTI2_HEADER_BYTES)
        if not start.startswith(b"\x1f\x8b"):
            if _nifti_expected_bytes(start) is not None:
                raise InputFileError(path, "is not gzip-compressed: a plain NIfTI named .nii.gz; rename it to .nii "
                                           "(or compress it)")
            raise InputFileError(path, f"cannot read it: not a gzip-compressed NIfTI file (it starts with "
                                       f"{start[:8]!r})")
    try:
        with (gzip.open(path, "rb") if name.endswith(".gz") else path.open("rb")) as fh:
            header = fh.read(_NIFTI2_HEADER_BYTES)
            expected = _nifti_expected_bytes(header)
            if expected is None:
                return  # not a header we understand: the image reader will judge
            total = path.stat().st_size if not name.endswith(".gz") else len(header) + _count_bytes(fh)
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as exc:  # truncated or corrupt gzip stream
        raise InputFileError(path, f"file is truncated or corrupt ({exc})") from exc
    if total < expected:
        raise InputFileError(path, f"file is truncated: it holds {total} bytes, its header announces {expected}")


_NIFTI1_HEADER_BYTES, _NIFTI2_HEADER_BYTES = 348, 540


def _count_bytes(fh) -> int:
    total = 0
    while chunk := fh.read(1 << 20):
        total += len(chunk)
    return total


def _nifti_expected_bytes(header: bytes) -> int | None:
    """Header size + voxel data size from a NIfTI-1 or NIfTI-2 header (either byte order), else None."""
    for endian in "<>":
        if len(header) < _NIFTI1_HEADER_BYTES:
            return None
        size = struct.unpack(endian + "i", header[:4])[0]
        if size == _NIFTI1_HEADER_BYTES:
            dims = struct.unpack(endian + "8h", header[40:56])
            bitpix = struct.unpack(endian + "h", header[72:74])[0]
            offset = int(struct.unpack(endian + "f", header[108:112])[0])
        elif size == _NIFTI2_HEADER_BYTES and len(header) >= _NIFTI2_HEADER_BYTES:
            dims = struct.unpack(endian + "8q", header[16:80])
            bitpix = struct.unpack(endian + "h", header[14:16])[0]
            offset = int(struct.unpack(endian + "q", header[168:176])[0])
        else:
            continue
        if not 1 <= dims[0] <= 7 or bitpix <= 0:
            return None
        return max(offset, size) + math.prod(max(1, int(d)) for d in dims[1:dims[0] + 1]) * bitpix // 8
    return None
