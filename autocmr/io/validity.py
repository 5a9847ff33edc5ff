"""One policy for bad voxel values, applied the same way to every input path.

3D NIfTI, 4D cine, DICOM series (``autocmr_predict``) and training data (``autocmr_convert check``) all call
:func:`check_voxels`:

* NaN or infinite voxels: the image is refused (:class:`InputFileError` "N voxels are NaN or infinite").
  Any value put in their place would be a guess that also shifts the intensity normalisation, and they
  usually mean a broken export or computation;
* an image whose voxels all have one value (all zero, or constant): refused ("empty image: ..."), because
  there is nothing to segment and a network fed a constant image returns noise;
* in a cine, some (not all) frames constant, e.g. zero-padded frames: the cine is segmented and a warning
  names those frames (their masks carry no information);
* a label map given as an image (whole numbers spanning at most :data:`LABEL_MAP_MAX_RANGE`, e.g. an ACDC
  ``_gt`` file; or at most :data:`LABEL_MAP_MAX_VALUES` distinct values whatever their range, most voxels at the
  lowest (a background), e.g. a 0/255 mask or labels times 100): refused ("looks like a label map"). An MR
  image's intensities span hundreds of values or are not whole numbers, so this costs nothing on real images
  (the integer test runs only on so narrow a range, and the count of values stops at a sample of the voxels that
  already holds more).

The readers keep NaN as stored (ITK's NIfTI reader would turn it into 0, see :func:`autocmr.io.image.read_sitk`).
"""
from __future__ import annotations

import logging
import math
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from autocmr.errors import InputFileError


LABEL_MAP_MAX_RANGE = 10  # max - min of a label map's values (autocmr's have 0-3; other tools' a few more)
LABEL_MAP_MAX_VALUES = 8  # distinct values of a label map at any scale (a 0/255 mask, labels x 100)


def nonfinite_count(array: np.ndarray) -> int:
    """Number of NaN or infinite voxels (0 for integer arrays)."""
    if array.dtype.kind not in "fc":
        return 0
    return int(array.size - np.count_nonzero(np.isfinite(array)))


def check_voxels(array: np.ndarray, path: str | Path, *, frame_axis: int | None = None) -> list[str]:
    """Apply the policy above to one image; returns warnings, raises :class:`InputFileError` when refused.

    Args:
        array: the voxels (any dtype, any order).
        path: the file (or DICOM folder) to name in messages.
        frame_axis: for a cine, the time axis: constant frames are warned about instead of refused.
    """
    bad = nonfinite_count(array)
    if bad:
        where = ""
        if frame_axis is not None and array.ndim > 1:  # which frames: a cine of 30 has one to look at, not 30
            per_frame = ~np.isfinite(np.moveaxis(array, frame_axis, 0).reshape(array.shape[frame_axis], -1))
            frames = [int(t) for t in np.flatnonzero(per_frame.any(axis=1))]
            where = f" in frame(s) {frames[:10]}{' ...' if len(frames) > 10 else ''} of {array.shape[frame_axis]}"
        raise InputFileError(path, f"{bad} voxels are NaN or infinite (of {array.size}){where}")
    if array.size == 0:
        raise InputFileError(path, f"empty image: no voxels (shape {array.shape})")
    low, high = array.min(), array.max()
    if low == high:
        what = "all zero" if low == 0 else f"constant (every voxel is {low.item()})"
        raise InputFileError(path, f"empty image: {what}")
    narrow = float(high) - float(low) <= LABEL_MAP_MAX_RANGE
    values = _few_values(array, LABEL_MAP_MAX_VALUES)
    # few values at any scale look like a mask only on a background: most voxels at the lowest value
    masklike = values is not None and np.count_nonzero(array == low) > array.size / 2
    if (narrow or masklike) and (array.dtype.kind in "iub" or np.array_equal(array, np.round(array))):
        values = np.unique(array) if values is None else values
        shown = ", ".join(f"{v:g}" for v in values.tolist())
        raise InputFileError(path, f"looks like a label map, not an image: whole-number values {shown} only "
                                   "(a segmentation given as input?)")
    if frame_axis is None or array.shape[frame_axis] < 2:
        return []
    constant = constant_frames(array, frame_axis)
    if not constant:
        return []
    return [f"{path}: frame(s) {constant} of {array.shape[frame_axis]} are constant (no image content); their "
            "masks carry no information and they are not taken for ED or ES"]


def check_spacing(spacing: Sequence[float], path: str | Path, dims: int = 3) -> None:
    """Refuse a voxel spacing that is not ``dims`` positive, finite millimetre values (:class:`InputFileError`):
    resampling to the model's spacing would squash the image to a single row or divide by zero."""
    values = [float(s) for s in spacing]
    if len(values) != dims or not all(math.isfinite(s) and s > 0 for s in values):
        raise InputFileError(path, f"voxel spacing {tuple(values)} is not {dims} positive, finite values (mm)")


def constant_frames(array: np.ndarray, frame_axis: int = 0) -> list[int]:
    """The frames (along ``frame_axis``) whose voxels all have one value: no image content."""
    frames = np.moveaxis(array, frame_axis, 0).reshape(array.shape[frame_axis], -1)
    return [int(t) for t in np.flatnonzero(frames.min(axis=1) == frames.max(axis=1))]


def _few_values(array: np.ndarray, limit: int) -> np.ndarray | None:
    """The distinct values of ``array`` when there are at most ``limit``, else None; a strided sample of
    about 10,000 voxels rules out an image first, so a 4D cine costs no sort of all its voxels."""
    flat = array.reshape(-1)
    if np.unique(flat[::max(1, flat.size // 10_000)]).size > limit:
        return None
    values = np.unique(flat)
    return values if values.size <= limit else None


class _Collector(logging.Handler):
    def __init__(self, into: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record.getMessage())


@contextmanager
def captured_input_warnings(logger_name: str = "autocmr.io") -> Iterator[list[str]]:
    """Collect the warnings the readers log while a case is read (a corrected sform, irregular DICOM slice gaps,
    a missing TriggerTime...) so that batch jobs can record them with the case's outputs.

    Example::

        with captured_input_warnings() as notes:
            array, geometry = read_image(path)
    """
    notes: list[str] = []
    handler = _Collector(notes)
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    try:
        yield notes
    finally:
        logger.removeHandler(handler)


__all__ = ["captured_input_warnings", "check_voxels", "nonfinite_count"]
