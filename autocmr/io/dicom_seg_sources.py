"""The source images' headers as a DICOM-SEG copies them (:mod:`autocmr.io.dicom_seg`), repaired in memory.

Anonymised exports often break things a SEG must copy: dates such as ``00000000``, type-2 patient/study
attributes dropped, a new FrameOfReferenceUID per file. The copies read here get invalid dates left empty,
missing type-2 attributes back empty and one frame of reference (the most common, with a warning); the source
files are never modified.
"""
from __future__ import annotations

import logging
import warnings
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping

import pydicom
from pydicom import Dataset

from autocmr.errors import InputFileError
from autocmr.io.dicom_scan import lenient_pydicom

logger = logging.getLogger(__name__)

# A SEG belongs to its source's study and frame of reference and references each image by class and UID.
REQUIRED_SOURCE_ATTRIBUTES = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID",
                              "FrameOfReferenceUID")
# Patient/study attributes of DICOM type 2 (present, possibly empty) that the SEG copies; exports that drop
# them get them back empty in the SEG's copy.
TYPE2_PATIENT_STUDY_ATTRIBUTES = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber",
                                  "StudyID", "StudyDate", "StudyTime", "ReferringPhysicianName")


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
        InputFileError: a file cannot be read or lacks an attribute the SEG must copy.
    """
    headers = {}
    for key, path in source_files.items():
        try:
            headers[key] = _repair_header(pydicom.dcmread(path, stop_before_pixels=True, force=True))
        except (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InputFileError(path, f"cannot read DICOM header for the SEG ({type(exc).__name__}: {exc})") from exc
    for key, ds in headers.items():
        missing = [k for k in REQUIRED_SOURCE_ATTRIBUTES if not ds.get(k)]
        if missing:
            raise InputFileError(source_files[key], f"has no {', '.join(missing)}, which a DICOM-SEG must copy "
                                                    "from its source images")
    _unify_frame_of_reference(headers)
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


__all__ = ["REQUIRED_SOURCE_ATTRIBUTES", "TYPE2_PATIENT_STUDY_ATTRIBUTES", "lenient_pydicom_writing",
           "read_source_headers"]
