"""The source images' headers as a DICOM-SEG copies them (:mod:`autocmr.io.dicom_seg`), repaired in memory.

Anonymised exports often break things a SEG must copy: dates such as ``00000000``, type-2 patient/study
attributes dropped, a new FrameOfReferenceUID per file. The copies read here get invalid dates left empty,
missing type-2 attributes back empty and one frame of reference (the most common, with a warning); the source
files are never modified.

highdicom is stricter about geometry than the reader (:mod:`autocmr.io.dicom`), so the copies' geometry is
rewritten as the reader understood it: numbers written with a decimal comma ("7,50") as plain DS values, one
ImageOrientationPatient for all (the reader accepts rounding noise between slices; highdicom wants them
equal), and a missing SliceThickness taken from the slice gap.
"""
from __future__ import annotations

import logging
import os
import warnings
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np
import pydicom
from pydicom import Dataset
from pydicom.valuerep import DSfloat

from autocmr.errors import InputFileError
from autocmr.io.dicom_scan import (DICOM_READ_ERRORS, ORIENTATION_TOLERANCE, error_text, lenient_pydicom,
                                   orthonormal_axes)
from autocmr.io.dicom_values import numeric_tuple, numeric_value

logger = logging.getLogger(__name__)

# A SEG belongs to its source's study and frame of reference and references each image by class and UID.
REQUIRED_SOURCE_ATTRIBUTES = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID",
                              "FrameOfReferenceUID")
# Patient/study attributes of DICOM type 2 (present, possibly empty) that the SEG copies; exports that drop
# them get them back empty in the SEG's copy.
TYPE2_PATIENT_STUDY_ATTRIBUTES = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber",
                                  "StudyID", "StudyDate", "StudyTime", "ReferringPhysicianName")
# Geometry the SEG copies into its functional groups (keyword, number of values); highdicom formats them as DS
# strings and refuses what float() does not read (a decimal comma). The slice thickness and spacing are hints
# the reader can do without (optional), the others placed every image.
GEOMETRY_ATTRIBUTES = (("ImagePositionPatient", 3, False), ("ImageOrientationPatient", 6, False),
                       ("PixelSpacing", 2, False), ("SliceThickness", 1, True), ("SpacingBetweenSlices", 1, True))
PLACEMENT_ATTRIBUTES = tuple(keyword for keyword, _, optional in GEOMETRY_ATTRIBUTES if not optional)


@contextmanager
def lenient_pydicom_writing() -> Iterator[None]:
    """Copy source values as they are, without a warning for each: anonymised series often carry UIDs with
    leading zeros (which the SEG must reference exactly as written) and one-word patient names."""
    previous = pydicom.config.settings.writing_validation_mode
    pydicom.config.settings.writing_validation_mode = pydicom.config.IGNORE
    try:
        with lenient_pydicom(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name",
                                    category=UserWarning)
            yield
    finally:
        pydicom.config.settings.writing_validation_mode = previous


def read_source_headers(source_files: Mapping[tuple[int, int], Path]) -> dict[tuple[int, int], Dataset]:
    """Headers (no pixels) of the source images, repaired for copying into a SEG; ``(z, t)`` keys as given.

    Raises:
        InputFileError: a file cannot be read or lacks an attribute the SEG must copy, or the images lie in
            orientations the reader would not join, or a single slice has no thickness to copy.
    """
    headers = {}
    for key, path in source_files.items():
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            # repairing the copy decodes every value of the header: a garbled one fails here, naming the file
            headers[key] = _repair_geometry(_repair_header(ds), Path(path))
        except DICOM_READ_ERRORS as exc:
            raise InputFileError(path, f"cannot read DICOM header for the SEG ({error_text(exc)})") from exc
    for key, ds in headers.items():
        missing = [k for k in REQUIRED_SOURCE_ATTRIBUTES + PLACEMENT_ATTRIBUTES if not ds.get(k)]
        if missing:
            raise InputFileError(source_files[key], f"has no {', '.join(missing)}, which a DICOM-SEG must copy "
                                                    "from its source images")
    _unify_frame_of_reference(headers)
    _unify_orientation(headers, source_files)
    _fill_slice_thickness(headers, source_files)
    return headers


def _repair_header(ds: Dataset) -> Dataset:
    """Blank date/time values that are not valid (anonymisers write e.g. 00000000) and add missing type-2
    patient/study attributes empty: the SEG copies both."""
    from pydicom.valuerep import DA, DT, TM

    for keyword in TYPE2_PATIENT_STUDY_ATTRIBUTES:
        if keyword not in ds:
            setattr(ds, keyword, "")
    parsers = {"DA": DA, "DT": DT, "TM": TM}
    for element in ds:
        if element.VR in parsers and element.value not in (None, ""):
            try:
                parsers[element.VR](element.value)
            except (ValueError, TypeError, OverflowError):
                element.value = ""
    return ds


def _unify_frame_of_reference(headers: Mapping[tuple[int, int], Dataset]) -> None:
    uids = Counter(str(ds.get("FrameOfReferenceUID", "")) for ds in headers.values())
    if len(uids) <= 1:
        return
    chosen = uids.most_common(1)[0][0]
    example = next(iter(headers.values()))
    logger.warning("%s: the series has %d different FrameOfReferenceUIDs (per-file anonymisation?); the "
                   "DICOM-SEG uses %s for all of them", Path(example.filename).parent, len(uids), chosen)
    for ds in headers.values():
        ds.FrameOfReferenceUID = chosen


def _repair_geometry(ds: Dataset, path: Path) -> Dataset:
    """The geometry attributes rewritten as the numbers the reader parsed from them (a decimal comma read as a
    point), so that highdicom can format them; a slice thickness or spacing that is no number is dropped, as
    the reader ignores it (its warning names the file)."""
    for keyword, n, optional in GEOMETRY_ATTRIBUTES:
        raw = ds.get(keyword)
        if raw is None:
            continue
        if n > 1:
            values = numeric_tuple(path, keyword, raw, n)
        else:
            value = numeric_value(path, keyword, raw, optional=optional)
            values = None if value is None else (value,)
        if values is None or (optional and not values[0] > 0):  # empty, not a number, or no thickness at all
            del ds[keyword]
            continue
        formatted = [DSfloat(v, auto_format=True) for v in values]
        setattr(ds, keyword, formatted if n > 1 else formatted[0])
    return ds


def _unify_orientation(headers: Mapping[tuple[int, int], Dataset], source_files: Mapping[tuple[int, int], Path]
                       ) -> None:
    """Every copy gets the first image's ImageOrientationPatient. The reader accepts direction cosines that
    differ by up to :data:`ORIENTATION_TOLERANCE` (rounding noise, e.g. a stack stored one series per slice),
    but highdicom requires one orientation, exactly, for all source images of a SEG."""
    first_key = min(headers)
    first = np.asarray([float(v) for v in headers[first_key].ImageOrientationPatient])
    for key, ds in headers.items():
        values = np.asarray([float(v) for v in ds.ImageOrientationPatient])
        if np.abs(values - first).max() > ORIENTATION_TOLERANCE:  # the reader refuses this: a caller's mistake
            raise InputFileError(source_files[key], f"ImageOrientationPatient differs from that of "
                                                    f"{Path(source_files[first_key]).name}: the images of a "
                                                    "DICOM-SEG must lie in one plane orientation")
        ds.ImageOrientationPatient = list(headers[first_key].ImageOrientationPatient)


def _fill_slice_thickness(headers: Mapping[tuple[int, int], Dataset],
                          source_files: Mapping[tuple[int, int], Path]) -> None:
    """Give copies without a SliceThickness the slice gap (highdicom copies it into the SEG's pixel measures
    and fails without one): the distance between slice centres along the normal, as the reader's volume has
    it; SpacingBetweenSlices for a single slice. A single slice with neither is refused."""
    lacking = [key for key, ds in headers.items() if "SliceThickness" not in ds]
    if not lacking:
        return
    gap = _slice_gap(headers)
    if gap is None:
        key = lacking[0]
        raise InputFileError(source_files[key], "has no SliceThickness (nor SpacingBetweenSlices), which a "
                                                "DICOM-SEG must copy, and a single slice has no slice gap to "
                                                "take it from")
    logger.warning("%s: %d image(s) have no SliceThickness; the DICOM-SEG gives them the slice gap, %.4g mm",
                   Path(os.path.commonpath([str(Path(source_files[k]).parent) for k in lacking])), len(lacking),
                   gap)
    for key in lacking:  # rounded as IPP is written (~4 decimals): 8.0, not 8.00000000019702
        headers[key].SliceThickness = DSfloat(round(gap, 4), auto_format=True)


def _slice_gap(headers: Mapping[tuple[int, int], Dataset]) -> float | None:
    """The median distance (mm) between neighbouring slice indices along the slice normal (a missing slice's
    neighbours are two indices apart), from the first phase; a single slice's SpacingBetweenSlices or None."""
    first = headers[min(headers)]
    slices = sorted({z for z, _ in headers})
    if len(slices) < 2:
        spacing = first.get("SpacingBetweenSlices")
        return float(spacing) if spacing is not None else None
    _, _, normal = orthonormal_axes([float(v) for v in first.ImageOrientationPatient])
    phase = min(t for _, t in headers)
    depths = [float(np.dot([float(v) for v in headers[(z, phase)].ImagePositionPatient], normal)) for z in slices]
    return float(np.median(np.abs(np.diff(depths)) / np.diff(slices)))


__all__ = ["GEOMETRY_ATTRIBUTES", "PLACEMENT_ATTRIBUTES", "REQUIRED_SOURCE_ATTRIBUTES",
           "TYPE2_PATIENT_STUDY_ATTRIBUTES", "lenient_pydicom_writing", "read_source_headers"]
