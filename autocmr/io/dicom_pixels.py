"""Decode the pixels of one DICOM image (a single-frame file, or a frame of an enhanced multi-frame file), for
:func:`autocmr.io.dicom.read_dicom_series`.

Headers are read separately and fast (:mod:`autocmr.io.dicom_scan`); the pixel data of each image is decoded
here, once the series is known to be consistent. Files of old exports without file meta are decoded too.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from autocmr.errors import InputFileError
from autocmr.io.dicom_scan import DicomHeader, lenient_pydicom
from autocmr.io.dicom_values import numeric_value


@lenient_pydicom()
def read_pixels(header: DicomHeader, decoded: dict[Path, np.ndarray] | None = None) -> np.ndarray:
    """The image of one single-frame DICOM file, or one frame of an enhanced multi-frame file, as float32
    (rows, columns), rescale slope/intercept applied. ``decoded`` keeps multi-frame files' decoded frames
    (stored values) between calls, so that a file is decoded once for all its frames.

    Raises:
        InputFileError: the file cannot be read, has no pixel data, or its pixels cannot be decoded or have
            another shape than the header's Rows x Columns.
    """
    if header.frame is not None:
        return _frame(header, decoded if decoded is not None else {})
    ds, pixels = _decode(header.path)
    if pixels.shape != header.shape:
        raise InputFileError(header.path, f"pixel data has shape {pixels.shape}, expected (Rows, Columns) = "
                                          f"{header.shape} (colour images are not supported)")
    slope = numeric_value(header.path, "RescaleSlope", ds.get("RescaleSlope")) or 1.0
    intercept = numeric_value(header.path, "RescaleIntercept", ds.get("RescaleIntercept")) or 0.0
    return pixels.astype(np.float32) * np.float32(slope) + np.float32(intercept)


def _frame(header: DicomHeader, decoded: dict[Path, np.ndarray]) -> np.ndarray:
    """One frame of an enhanced multi-frame file, rescaled with that frame's slope and intercept."""
    frames = decoded.get(header.path)
    if frames is None:
        frames = _decode(header.path)[1]
        if frames.ndim == 2:  # an enhanced file of one frame: pydicom gives (rows, columns)
            frames = frames[None]
        if frames.ndim != 3 or frames.shape[1:] != header.shape:
            raise InputFileError(header.path, f"multi-frame pixel data has shape {frames.shape}, expected "
                                              f"(frames, {header.shape[0]}, {header.shape[1]})")
        decoded[header.path] = frames
    if header.frame >= frames.shape[0]:
        raise InputFileError(header.path, f"frame {header.frame + 1} missing: the pixel data holds "
                                          f"{frames.shape[0]} frames")
    slope, intercept = header.rescale or (1.0, 0.0)
    return frames[header.frame].astype(np.float32) * np.float32(slope) + np.float32(intercept)


def _decode(path: Path) -> tuple[pydicom.Dataset, np.ndarray]:
    """The data set of ``path`` and its pixels as stored ((frames,) rows, columns)."""
    try:
        ds = pydicom.dcmread(path, force=True)
    except (InvalidDicomError, OSError, EOFError, ValueError, KeyError, TypeError) as exc:
        raise InputFileError(path, f"cannot read DICOM file ({type(exc).__name__}: {exc})") from exc
    if not any(tag in ds for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise InputFileError(path, "has no pixel data")
    _infer_transfer_syntax(ds)
    try:
        return ds, ds.pixel_array
    except (ValueError, RuntimeError, NotImplementedError, AttributeError, TypeError, OSError, EOFError) as exc:
        raise InputFileError(path, f"cannot decode pixel data ({type(exc).__name__}: {exc})") from exc


def _infer_transfer_syntax(ds: pydicom.Dataset) -> None:
    """Files without file meta (old exports, a bare data set) do not name their transfer syntax, and pydicom
    will not decode their pixels; the encoding it parsed them with (always uncompressed) says which it is."""
    meta = ds.get("file_meta")
    if meta is not None and "TransferSyntaxUID" in meta:
        return
    implicit, little = getattr(ds, "original_encoding", (None, None))
    if implicit is None:
        return
    syntax = (ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian) if little else ExplicitVRBigEndian
    if meta is None:
        ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax


__all__ = ["read_pixels"]
