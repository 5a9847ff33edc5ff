"""Decode the pixels of one DICOM image (a single-frame file, or a frame of an enhanced multi-frame file), for
:func:`autocmr.io.dicom.read_dicom_series`.

Headers are read separately and fast (:mod:`autocmr.io.dicom_scan`); the pixel data of each image is decoded
here, once the series is known to be consistent. Files of old exports without file meta are decoded too.

The image is what the stored values mean, in the orientation of grey values a MONOCHROME2 image has:

* MONOCHROME1 images (the lowest value displays white) are inverted over the range the stored values can take;
* padding (stored values equal to PixelPaddingValue, up to PixelPaddingRangeLimit) gets the lowest value of
  the image's real pixels, so that it reads as background instead of an extreme value in the statistics;
* RescaleSlope/RescaleIntercept are applied (from the functional groups when only those hold them); a slope
  of 0, which would blank the image, is read as 1 with a warning.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from autocmr.errors import InputFileError
from autocmr.io.dicom_multiframe import functional_group_rescale
from autocmr.io.dicom_scan import DICOM_READ_ERRORS, DicomHeader, decode_values, error_text, lenient_pydicom
from autocmr.io.dicom_values import numeric_value

logger = logging.getLogger(__name__)

# The attributes the pixels' meaning is read from (besides those the pixel decoder reads itself), decoded while
# the file is read so that a garbled one fails there, naming the file (see dicom_scan.decode_values).
PIXEL_KEYWORDS = ("RescaleSlope", "RescaleIntercept", "PhotometricInterpretation", "BitsStored",
                  "PixelPaddingValue", "PixelPaddingRangeLimit", "PerFrameFunctionalGroupsSequence",
                  "SharedFunctionalGroupsSequence")


@dataclass(frozen=True)
class StoredValues:
    """What a file says about its stored values, for every image or frame it holds (both are defined on stored
    values, before the rescale)."""

    inversion: float | None = None  # MONOCHROME1: the image is this minus the stored value; None: not inverted
    padding: tuple[float, float] | None = None  # stored values from .. to (inclusive) that are padding


@dataclass
class DecodedFile:
    """A multi-frame file's stored frames, decoded once for all its frames (see :func:`read_pixels`)."""

    frames: np.ndarray
    stored: StoredValues
    zero_slope_reported: bool = False  # a slope of 0 in its frames is reported once per file


@lenient_pydicom()
def read_pixels(header: DicomHeader, decoded: dict[Path, DecodedFile] | None = None) -> np.ndarray:
    """The image of one single-frame DICOM file, or one frame of an enhanced multi-frame file, as float32
    (rows, columns): MONOCHROME1 inverted, padding set to the image's lowest real value, rescale slope and
    intercept applied (see the module docstring). ``decoded`` keeps multi-frame files' decoded frames
    between calls, so that a file is decoded once for all its frames.

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
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is None:  # a single-frame file with functional groups, read as classic: its rescale may be there
        slope, intercept = functional_group_rescale(ds, intercept)
    slope = numeric_value(header.path, "RescaleSlope", slope)
    intercept = numeric_value(header.path, "RescaleIntercept", intercept)
    return _image(pixels, _stored_values(ds, pixels, header.path), _usable_slope(header.path, slope),
                  intercept or 0.0)


def _frame(header: DicomHeader, decoded: dict[Path, DecodedFile]) -> np.ndarray:
    """One frame of an enhanced multi-frame file, rescaled with that frame's slope and intercept."""
    found = decoded.get(header.path)
    if found is None:
        ds, frames = _decode(header.path)
        if frames.ndim == 2:  # an enhanced file of one frame: pydicom gives (rows, columns)
            frames = frames[None]
        if frames.ndim != 3 or frames.shape[1:] != header.shape:
            raise InputFileError(header.path, f"multi-frame pixel data has shape {frames.shape}, expected "
                                              f"(frames, {header.shape[0]}, {header.shape[1]})")
        found = decoded[header.path] = DecodedFile(frames, _stored_values(ds, frames, header.path))
    if header.frame >= found.frames.shape[0]:
        raise InputFileError(header.path, f"frame {header.frame + 1} missing: the pixel data holds "
                                          f"{found.frames.shape[0]} frames")
    slope, intercept = header.rescale or (1.0, 0.0)
    if slope == 0:
        slope = _usable_slope(header.path, slope, report=not found.zero_slope_reported)
        found.zero_slope_reported = True
    return _image(found.frames[header.frame], found.stored, slope, intercept)


def _usable_slope(path: Path, slope: float | None, *, report: bool = True) -> float:
    """A missing RescaleSlope is 1; so is a slope of 0 (with a warning), which no scanner means: it would make
    every pixel the intercept, a blank image the network segments as nothing."""
    if slope is None:
        return 1.0
    if slope == 0:
        if report:
            logger.warning("%s: RescaleSlope is 0, which would blank the image; read as 1", path)
        return 1.0
    return slope


def _image(stored: np.ndarray, meaning: StoredValues, slope: float, intercept: float) -> np.ndarray:
    """Stored values -> the image as float32 (see :func:`read_pixels`)."""
    values = stored.astype(np.float32)  # a copy: the stored frames of a multi-frame file are kept
    padding = None
    if meaning.padding is not None:
        padding = (values >= meaning.padding[0]) & (values <= meaning.padding[1])
    if meaning.inversion is not None:
        np.subtract(np.float32(meaning.inversion), values, out=values)
    values *= np.float32(slope)
    values += np.float32(intercept)
    if padding is not None and padding.any():
        real = values[~padding]
        values[padding] = real.min() if real.size else 0.0  # an image of padding only is blank
    return values


def _stored_values(ds: pydicom.Dataset, pixels: np.ndarray, path: Path) -> StoredValues:
    return StoredValues(_inversion(ds, pixels, path), _padding(ds, path))


def _inversion(ds: pydicom.Dataset, pixels: np.ndarray, path: Path) -> float | None:
    """For MONOCHROME1 (its lowest value displays white), the sum of the lowest and highest value the stored
    values can take (BitsStored, PixelRepresentation): ``low + high - stored`` inverts them within that range,
    as highdicom's presentation LUT does. That range is the same for every image of a series, so every image
    is shifted alike (a constant the z-score removes) and slices and phases keep their relative brightness;
    each image's own minimum and maximum would shift each differently. Float pixel data has no such range: it
    changes sign."""
    if str(ds.get("PhotometricInterpretation", "")).strip().upper() != "MONOCHROME1":
        return None
    if pixels.dtype.kind == "f":
        return 0.0
    bits = numeric_value(path, "BitsStored", ds.get("BitsStored"), optional=True)
    bits = int(bits) if bits and 0 < bits <= pixels.dtype.itemsize * 8 else pixels.dtype.itemsize * 8
    if pixels.dtype.kind == "i":  # pydicom decodes PixelRepresentation 1 (two's complement) as signed
        low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    else:
        low, high = 0, (1 << bits) - 1
    return float(low + high)


def _padding(ds: pydicom.Dataset, path: Path) -> tuple[float, float] | None:
    """The stored values that are padding: PixelPaddingValue, or the range from it to PixelPaddingRangeLimit.
    DICOM gives both as stored values (before the rescale), so they are compared with the stored values."""
    value = _optional_number(path, "PixelPaddingValue", ds.get("PixelPaddingValue"))
    if value is None:
        return None
    limit = _optional_number(path, "PixelPaddingRangeLimit", ds.get("PixelPaddingRangeLimit"))
    return (min(value, limit), max(value, limit)) if limit is not None else (value, value)


def _optional_number(path: Path, what: str, value: Any) -> float | None:
    if isinstance(value, bytes):  # an ambiguous US/SS value pydicom could not resolve: not worth guessing
        logger.warning("%s: %s could not be read; ignored", path, what)
        return None
    return numeric_value(path, what, value, optional=True)


def _decode(path: Path) -> tuple[pydicom.Dataset, np.ndarray]:
    """The data set of ``path`` and its pixels as stored ((frames,) rows, columns)."""
    try:
        ds = pydicom.dcmread(path, force=True)
        decode_values(ds, PIXEL_KEYWORDS)
    except DICOM_READ_ERRORS as exc:
        raise InputFileError(path, f"cannot read DICOM file ({error_text(exc)})") from exc
    if not any(tag in ds for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise InputFileError(path, "has no pixel data")
    _infer_transfer_syntax(ds)
    try:
        return ds, ds.pixel_array
    except DICOM_READ_ERRORS + (RuntimeError,) as exc:  # RuntimeError: no decoder for the transfer syntax
        raise InputFileError(path, f"cannot decode pixel data ({error_text(exc)})") from exc


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


__all__ = ["DecodedFile", "StoredValues", "read_pixels"]
