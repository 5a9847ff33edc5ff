"""Crop to the bounding box of non-zero voxels (zero padding added by scanners or converters)."""
from __future__ import annotations

import numpy as np

BBox = tuple[tuple[int, int], ...]  # per axis [start, stop)


def nonzero_bbox(data: np.ndarray) -> BBox:
    """Bounding box of voxels that are non-zero in any channel of ``data`` (c, z, y, x).

    An all-zero image keeps its full extent, so nothing downstream sees an empty array.
    """
    mask = np.any(data != 0, axis=0)
    if not mask.any():
        return tuple((0, n) for n in mask.shape)
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        box.append((int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


def crop(array: np.ndarray, bbox: BBox) -> np.ndarray:
    """Crop the trailing ``len(bbox)`` axes of ``array``."""
    lead = (slice(None),) * (array.ndim - len(bbox))
    return array[lead + tuple(slice(a, b) for a, b in bbox)]


def uncrop(array: np.ndarray, bbox: BBox, full_shape: tuple[int, ...], fill: float = 0) -> np.ndarray:
    """Place ``array`` back into an array of ``full_shape`` (trailing axes) filled with ``fill``."""
    lead_shape = array.shape[: array.ndim - len(bbox)]
    out = np.full(lead_shape + tuple(full_shape), fill, dtype=array.dtype)
    lead = (slice(None),) * len(lead_shape)
    out[lead + tuple(slice(a, b) for a, b in bbox)] = array
    return out
