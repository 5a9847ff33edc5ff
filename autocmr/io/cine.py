"""4D cine NIfTI: read, split into 3D frames, join frames back, write with the exact 4D header.

Arrays are in numpy order ``(t, z, y, x)``; the 4D :class:`~autocmr.io.image.Geometry` is in SimpleITK
order (x, y, z, t). Each frame shares the spatial part of the geometry (``geometry.spatial()``).

NIfTI stores a single 3x3 direction (time is never mixed with space) and, in ITK, a 4D file with one
frame reads back as 3D: :func:`read_cine` therefore accepts a 3D file as a one-frame cine, and
:func:`is_cine` calls both of those 3D.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from autocmr.errors import InputFileError
from autocmr.io.image import Geometry, read_header, read_sitk, write_sitk

# Time spacing given to a 3D file read as a one-frame cine (NIfTI's default pixdim[4]); unitless there.
SINGLE_FRAME_TIME_SPACING = 1.0


def read_cine(path: str | Path) -> tuple[np.ndarray, Geometry]:
    """Read a cine as ``(array (t, z, y, x), 4D geometry)``; a 3D file becomes a single frame."""
    image = read_sitk(path)
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputFileError(path, f"has {image.GetNumberOfComponentsPerPixel()} components per voxel; "
                                   "expected a scalar cine")
    geometry = Geometry.of(image)
    array = sitk.GetArrayFromImage(image)
    if geometry.dim == 3:
        return array[None], _promote(geometry)
    if geometry.dim != 4:
        raise InputFileError(path, f"is {geometry.dim}D; a cine must be 3D (one frame) or 4D (x, y, z, t)")
    return array, geometry


def _promote(geometry: Geometry) -> Geometry:
    d4 = np.eye(4)
    d4[:3, :3] = geometry.direction_matrix()
    return Geometry(geometry.size + (1,), geometry.spacing + (SINGLE_FRAME_TIME_SPACING,),
                    geometry.origin + (0.0,), tuple(d4.ravel().tolist()))


def split_frames(array4d: np.ndarray, geometry4d: Geometry) -> list[tuple[np.ndarray, Geometry]]:
    """The frames of a cine as ``(array (z, y, x), 3D geometry)`` pairs (views, not copies)."""
    _check_pair(array4d, geometry4d)
    spatial = geometry4d.spatial()
    return [(array4d[t], spatial) for t in range(array4d.shape[0])]


def join_frames(frames: Sequence[np.ndarray], geometry4d: Geometry) -> np.ndarray:
    """Stack 3D frames (e.g. per-frame masks) into a ``(t, z, y, x)`` array matching ``geometry4d``."""
    if geometry4d.dim != 4:
        raise ValueError(f"join_frames needs a 4D geometry, got {geometry4d.dim}D")
    if len(frames) != geometry4d.size[3]:
        raise ValueError(f"got {len(frames)} frames, the cine geometry has {geometry4d.size[3]}")
    expected = geometry4d.spatial().shape
    for t, frame in enumerate(frames):
        if tuple(frame.shape) != expected:
            raise ValueError(f"frame {t} has shape {frame.shape}, expected {expected}")
    return np.stack(frames)


def write_cine(array4d: np.ndarray, geometry4d: Geometry, path: str | Path, *, compress: bool = True) -> None:
    """Write a ``(t, z, y, x)`` array as 4D NIfTI with exactly ``geometry4d``, atomically.

    Raises ``ValueError`` if the direction couples time and space (NIfTI cannot store that).
    """
    _check_pair(array4d, geometry4d)
    d = geometry4d.direction_matrix()
    if not (np.allclose(d[3, :3], 0.0) and np.allclose(d[:3, 3], 0.0) and np.isclose(abs(d[3, 3]), 1.0)):
        raise ValueError(f"cine direction mixes time and space, NIfTI cannot store it: {geometry4d.direction}")
    if d[3, 3] < 0:  # a negative time step (pixdim[4] < 0) reads as a reversed time axis; frames stay in order
        d[3, 3] = 1.0
        geometry4d = Geometry(geometry4d.size, geometry4d.spacing, geometry4d.origin, tuple(d.ravel().tolist()))
    # sitk.GetImageFromArray would take a 4D array for a 3D vector image; ask for a scalar 4D image.
    image = sitk.GetImageFromArray(np.ascontiguousarray(array4d), isVector=False)
    write_sitk(geometry4d.apply_to(image), path, compress=compress)


def _check_pair(array4d: np.ndarray, geometry4d: Geometry) -> None:
    if array4d.ndim != 4 or geometry4d.dim != 4:
        raise ValueError(f"expected a 4D array and a 4D geometry, got {array4d.ndim}D and {geometry4d.dim}D")
    if tuple(array4d.shape) != geometry4d.shape:
        raise ValueError(f"array shape {array4d.shape} does not match geometry shape {geometry4d.shape}")


def is_cine(path_or_geometry: str | Path | Geometry) -> bool:
    """True for a 4D image with more than one frame (reads only the header of a file)."""
    geometry = path_or_geometry if isinstance(path_or_geometry, Geometry) else read_header(path_or_geometry)
    return geometry.dim == 4 and geometry.size[3] > 1


__all__ = ["is_cine", "join_frames", "read_cine", "split_frames", "write_cine"]
