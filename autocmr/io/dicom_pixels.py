"""Decode the pixels of one single-frame DICOM image, for :func:`autocmr.io.dicom.read_dicom_series`.

Headers are read separately and fast (:mod:`autocmr.io.dicom_scan`); the pixel data of each image is decoded
here, once the series is known to be consistent. Files of old exports without file meta are decoded too.
"""
from __future__ import annotations

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from autocmr.errors import InputFileError
from autocmr.io.dicom_scan import DicomHeader, lenient_pydicom


@lenient_pydicom()
def read_pixels(header: DicomHeader) -> np.ndarray:
    """The image of one single-frame DICOM file as float32 (rows, columns), rescale slope/intercept applied.

    Raises:
        InputFileError: the file cannot be read, has no pixel data, or its pixels cannot be decoded or have
            another shape than the header's Rows x Columns.
    """
    path = header.path
    try:
        ds = pydicom.dcmread(path, force=True)
    except (InvalidDicomError, OSError, EOFError, ValueError, KeyError, TypeError) as exc:
        raise InputFileError(path, f"cannot read DICOM file ({type(exc).__name__}: {exc})") from exc
    if not any(tag in ds for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise InputFileError(path, "has no pixel data")
    _infer_transfer_syntax(ds)
    try:
        pixels = ds.pixel_array
    except (ValueError, RuntimeError, NotImplementedError, AttributeError, TypeError, OSError, EOFError) as exc:
        raise InputFileError(path, f"cannot decode pixel data ({type(exc).__name__}: {exc})") from exc
    if pixels.shape != header.shape:
        raise InputFileError(path, f"pixel data has shape {pixels.shape}, expected (Rows, Columns) = {header.shape}"
                                   " (colour or multi-frame images are not supported)")
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    return pixels.astype(np.float32) * np.float32(slope) + np.float32(intercept)


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
