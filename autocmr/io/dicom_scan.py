"""Find DICOM series in a folder tree from headers only (fast): which files belong to which series.

Files are grouped by SeriesInstanceUID; non-DICOM files are skipped silently, while files that look like
DICOM (a "DICM" preamble or a DICOM file ending) but cannot be read are reported. pydicom's value
validation is relaxed while reading, because real exports often carry slightly invalid values (UIDs).
"""
from __future__ import annotations

import logging
import struct
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pydicom
from pydicom.errors import BytesLengthException, InvalidDicomError

from autocmr.errors import InputFileError
from autocmr.io.dicom_multiframe import frame_headers, is_enhanced
from autocmr.io.dicom_values import image_type, numeric_tuple, numeric_value

logger = logging.getLogger(__name__)

# What pydicom raises on a corrupt or truncated file, while reading it or while decoding one of its values (it
# decodes a value when it is first used): beyond the usual, struct.error and BytesLengthException for a value
# cut short, zlib.error inside a deflated file, NotImplementedError for a garbled value representation.
DICOM_READ_ERRORS = (InvalidDicomError, BytesLengthException, struct.error, zlib.error, NotImplementedError, OSError,
                     EOFError, ValueError, KeyError, TypeError, AttributeError, IndexError)
# The attributes a DicomHeader is built from (and what tells an image from other DICOM objects): decoded while
# the file is read, so that a garbled value fails there, naming the file, not wherever it is first used.
HEADER_KEYWORDS = ("SOPClassUID", "Modality", "SamplesPerPixel", "SeriesInstanceUID", "SeriesDescription",
                   "SeriesNumber", "InstanceNumber", "StudyInstanceUID", "PatientID", "SOPInstanceUID", "Rows",
                   "Columns", "NumberOfFrames", "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing",
                   "SpacingBetweenSlices", "SliceThickness", "TriggerTime", "EchoTime", "InversionTime", "ImageType",
                   "PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence")
# File name endings that mark a file as DICOM even without the "DICM" preamble (old or anonymised exports).
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
# DICOM objects in a study export that are not images to segment: skipped with a note, never a failure.
NON_IMAGE_MODALITIES = {"SEG": "a DICOM segmentation", "RTSTRUCT": "an RT structure set", "SR": "a structured report",
                        "PR": "a presentation state", "KO": "a key object selection", "REG": "a registration",
                        "DOC": "a document", "RTDOSE": "an RT dose", "RTPLAN": "an RT plan"}
SEGMENTATION_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
SECONDARY_CAPTURE_SOP_CLASSES = "1.2.840.10008.5.1.4.1.1.7"  # prefix of the (multi-frame) secondary captures
MEDIA_DIRECTORY_SOP_CLASS = "1.2.840.10008.1.3.10"  # DICOMDIR
# Two images whose IPPs are closer than this (mm) share a slice location (IPP is written with ~4 decimals).
SAME_POSITION_TOLERANCE_MM = 0.01
# Direction cosines (unitless) and pixel spacings (mm) closer than these are the same (a series' images, the
# slices of a stack); scanners write IOP with ~6 decimals, so 1e-3 absorbs rounding but not a change of plane.
ORIENTATION_TOLERANCE = 1e-3
PIXEL_SPACING_TOLERANCE_MM = 1e-3
# Images of one series whose direction cosines differ by more than this (~6 degrees) lie in different planes:
# a localizer or survey, not a volume (a volume with a slightly tilted image is refused when read instead).
DISTINCT_PLANE_COSINE = 0.1
# ImageOrientationPatient's two directions must be unit vectors at right angles to this (cosines written with
# a few decimals pass; zeros, equal or unscaled directions do not: no plane can be built from them)
ORTHONORMAL_TOLERANCE = 1e-2


def orientation_problem(orientation: Sequence[float]) -> str | None:
    """Why ImageOrientationPatient's six values are not two orthonormal directions, or None when they are."""
    row, col = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    if not (np.isfinite(row).all() and np.isfinite(col).all()):
        return "holds values that are not numbers"
    lengths = (float(np.linalg.norm(row)), float(np.linalg.norm(col)))
    if max(abs(length - 1.0) for length in lengths) > ORTHONORMAL_TOLERANCE:
        return f"directions of length {lengths[0]:.3g} and {lengths[1]:.3g}, not unit vectors"
    if abs(float(row @ col)) > ORTHONORMAL_TOLERANCE:
        return f"directions not at right angles (cosine {float(row @ col):.3g})"
    return None


def orthonormal_axes(orientation: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row and column directions made exactly orthonormal (Gram-Schmidt, the row kept), and the slice normal:
    what the volume's direction matrix is built from, so that every writer stores the same directions."""
    row = np.asarray(orientation[:3], float)
    row = row / np.linalg.norm(row)
    col = np.asarray(orientation[3:], float)
    col = col - (col @ row) * row
    col = col / np.linalg.norm(col)
    return row, col, np.cross(row, col)


@dataclass(frozen=True)
class DicomSeriesInfo:
    """One series found in a folder (from headers only)."""

    series_instance_uid: str
    description: str
    modality: str
    files: tuple[Path, ...]  # each file once (an enhanced file holds many images)
    n_locations: int  # distinct ImagePositionPatient values (0 when the tag is missing)
    n_phases: int  # images per location (the largest count if they differ)
    series_number: int | None = None
    member_series: tuple[str, ...] = ()  # SeriesInstanceUIDs of a stack joined from single-slice series
    multiframe: bool = False  # images are frames of enhanced multi-frame files
    n_planes: int = 1  # distinct image orientations (a localizer or survey has several)
    # the largest angle between the planes of its images, degrees: ~90 for a localizer's orthogonal planes, a few
    # for a stack with one re-angled slice (0 for one plane, or for planes that differ only by an in-plane turn)
    plane_tilt_deg: float = 0.0


@dataclass(frozen=True)
class SkippedObject:
    """A DICOM file that holds no image to segment (a DICOMDIR, a report, a segmentation, a screenshot)."""

    path: Path
    what: str  # e.g. "a structured report"


@dataclass(frozen=True)
class FolderScan:
    headers: list[DicomHeader]
    unreadable: list[InputFileError]  # files that look like DICOM but cannot be read
    skipped: list[SkippedObject]  # DICOM files that are not images to segment


@dataclass(frozen=True)
class DicomHeader:
    """The header fields needed to place one image."""

    path: Path
    series_uid: str
    description: str
    modality: str
    series_number: int | None
    instance_number: int | None
    position: tuple[float, ...] | None
    orientation: tuple[float, ...] | None
    pixel_spacing: tuple[float, ...] | None
    shape: tuple[int, int] | None
    trigger_time: float | None
    n_frames: int
    slice_gap_hint: float | None  # SpacingBetweenSlices or SliceThickness (single-location series)
    study_uid: str = ""
    patient_id: str = ""
    frame: int | None = None  # the frame of an enhanced multi-frame file (autocmr.io.dicom_multiframe)
    rescale: tuple[float, float] | None = None  # (slope, intercept) of that frame; None: the file's own
    sop_uid: str = ""  # SOPInstanceUID: the same image copied into two files of the input has it twice
    # what else may tell images at one slice position apart besides the cardiac phase (then they are no cine)
    echo_time: float | None = None  # EchoTime, ms (several: a multi-echo series)
    inversion_time: float | None = None  # InversionTime, ms (several: e.g. T1 mapping)
    image_type: tuple[str, ...] = ()  # ImageType, e.g. ORIGINAL\PRIMARY\M (magnitude) or ...\P (phase)

    @property
    def label(self) -> str:
        """The file's name (and frame) for messages."""
        return self.located(None)

    def located(self, root: Path | None) -> str:
        """The file (and frame) for messages: its path relative to ``root`` (the input folder: two copies of
        a file share their names), the full path outside it, its bare name without a ``root``."""
        if root is None:
            shown = self.path.name
        else:
            try:
                shown = str(self.path.relative_to(root))
            except ValueError:
                shown = str(self.path)
        return shown if self.frame is None else f"{shown} (frame {self.frame + 1})"


# ---------------------------------------------------------------------------------------------- scanning


def scan_folder(folder: Path) -> FolderScan:
    """Headers of the DICOM images under ``folder``, the problems of DICOM-looking unreadable files, and the
    DICOM files that are no images to segment."""
    if not folder.is_dir():
        raise InputFileError(folder, "DICOM folder does not exist")
    scan = FolderScan([], [], [])
    for path in sorted(_iter_files(folder)):
        try:
            found = classify_dicom_file(path)
        except InputFileError as exc:
            scan.unreadable.append(exc)
            continue
        if isinstance(found, SkippedObject):
            scan.skipped.append(found)
        else:
            scan.headers.extend(found)
    return scan


def _iter_files(folder: Path) -> Iterator[Path]:
    for path in folder.rglob("*"):
        # Hidden files (.DS_Store, our own temporaries) are never images.
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(folder).parts):
            yield path


def _looks_like_dicom(path: Path) -> bool:
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with path.open("rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


@contextmanager
def lenient_pydicom() -> Iterator[None]:
    """Do not validate values while reading (restored afterwards); also usable as a decorator.

    pydicom warns and logs about every non-conformant value (e.g. UIDs with leading zeros, common in
    anonymised data) when an element is first accessed; they do not affect geometry or pixels and would
    flood the output with one message per file.
    """
    previous = pydicom.config.settings.reading_validation_mode
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    try:
        yield
    finally:
        pydicom.config.settings.reading_validation_mode = previous


@lenient_pydicom()
def classify_dicom_file(path: Path) -> list[DicomHeader] | SkippedObject:
    """The images of ``path``: one header for a single-frame file, one per frame of an enhanced multi-frame
    file (:mod:`autocmr.io.dicom_multiframe`), none for a non-DICOM file; a :class:`SkippedObject` for a DICOM
    file that is no image to segment; InputFileError for a broken DICOM-looking one."""
    found = _read_header_and_dataset(path)
    if found is None:
        return []
    if isinstance(found, SkippedObject):
        return found
    header, ds = found
    return frame_headers(header, ds) if is_enhanced(ds) else [header]


def read_dicom_headers(path: Path) -> list[DicomHeader]:
    """As :func:`classify_dicom_file`, with no headers for a DICOM file that is no image to segment."""
    found = classify_dicom_file(path)
    return [] if isinstance(found, SkippedObject) else found


def _not_an_image(path: Path, ds: pydicom.Dataset) -> SkippedObject | None:
    """Why the DICOM object ``ds`` is no image to segment, or None when it is one."""
    sop = ds.get("SOPClassUID") or getattr(ds.get("file_meta"), "MediaStorageSOPClassUID", None)
    sop_uid = str(sop or "")
    modality = str(ds.get("Modality", "")).upper()
    if sop_uid == MEDIA_DIRECTORY_SOP_CLASS:
        return SkippedObject(path, "a DICOMDIR (the export's index)")
    if modality in NON_IMAGE_MODALITIES:
        return SkippedObject(path, NON_IMAGE_MODALITIES[modality])
    if sop_uid == SEGMENTATION_SOP_CLASS:
        return SkippedObject(path, NON_IMAGE_MODALITIES["SEG"])
    if sop_uid.startswith(SECONDARY_CAPTURE_SOP_CLASSES):
        return SkippedObject(path, "a secondary capture (a screenshot or scanned page)")
    samples = numeric_value(path, "SamplesPerPixel", ds.get("SamplesPerPixel"))
    if samples is not None and samples > 1:
        return SkippedObject(path, "a colour image")
    return None


def decode_values(ds: pydicom.Dataset, keywords: Sequence[str]) -> None:
    """Decode the file meta and the values of ``keywords`` now (every value inside a sequence among them):
    pydicom decodes a value when it is first used, and a garbled one would otherwise raise wherever that is,
    outside the read of its file. Raises one of :data:`DICOM_READ_ERRORS`."""
    for _ in ds.get("file_meta") or ():
        pass
    for keyword in keywords:
        value = ds.get(keyword)
        if isinstance(value, pydicom.Sequence):
            for item in value:
                for _ in item.iterall():
                    pass


def error_text(exc: BaseException) -> str:
    """``Type: message`` for messages; a bare ``error`` (struct's, zlib's) is named with its module."""
    name = type(exc).__name__
    if name == "error":
        name = f"{type(exc).__module__}.{name}"
    return f"{name}: {exc}"


@lenient_pydicom()
def _read_header_and_dataset(path: Path) -> tuple[DicomHeader, pydicom.Dataset] | SkippedObject | None:
    looks_dicom = _looks_like_dicom(path)
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=looks_dicom)
        decode_values(ds, HEADER_KEYWORDS)
    except InvalidDicomError as exc:
        if looks_dicom:
            raise InputFileError(path, f"looks like DICOM but cannot be parsed ({exc})") from exc
        return None
    except DICOM_READ_ERRORS as exc:
        if looks_dicom:
            raise InputFileError(path, f"looks like DICOM but cannot be read ({error_text(exc)})") from exc
        return None
    skipped = _not_an_image(path, ds)
    # an empty value is as good as none: a header cut short may end in one
    missing = [k for k in ("SeriesInstanceUID", "Rows", "Columns") if ds.get(k) in (None, "")]
    if missing:
        # pydicom stops quietly at the end of a truncated file, so an image whose header lacks these tags is
        # broken; other objects (DICOMDIR, structured reports, presentation states) are not images: skip.
        sop = ds.get("SOPClassUID") or getattr(ds.get("file_meta"), "MediaStorageSOPClassUID", None)
        if sop is None and looks_dicom:
            raise InputFileError(path, "looks like DICOM but has no SOP class (corrupt or truncated?)")
        if sop is not None and "Image Storage" in getattr(sop, "name", "") and skipped is None:
            raise InputFileError(path, f"DICOM image without {', '.join(missing)} (truncated header?)")
        if sop is None:
            return None
        return skipped or SkippedObject(path, f"a DICOM object of class {getattr(sop, 'name', sop)}")
    return skipped if skipped is not None else (_header_from_dataset(path, ds), ds)


def _header_from_dataset(path: Path, ds: pydicom.Dataset) -> DicomHeader:
    def floats(keyword: str, n: int) -> tuple[float, ...] | None:
        return numeric_tuple(path, keyword, ds.get(keyword), n)

    def number(keyword: str, optional: bool = True) -> float | None:
        return numeric_value(path, keyword, ds.get(keyword), optional=optional)

    gaps = (number("SpacingBetweenSlices"), number("SliceThickness"))

    rows, cols = number("Rows", optional=False), number("Columns", optional=False)
    instance = number("InstanceNumber")
    series_number = number("SeriesNumber")
    return DicomHeader(
        path=path, series_uid=str(ds.SeriesInstanceUID), description=str(ds.get("SeriesDescription", "")),
        modality=str(ds.get("Modality", "")),
        series_number=None if series_number is None else int(series_number),
        instance_number=None if instance is None else int(instance),
        position=floats("ImagePositionPatient", 3), orientation=floats("ImageOrientationPatient", 6),
        pixel_spacing=floats("PixelSpacing", 2),
        shape=None if rows is None or cols is None else (int(rows), int(cols)),
        trigger_time=number("TriggerTime"), n_frames=int(number("NumberOfFrames", optional=False) or 1),
        slice_gap_hint=next((g for g in gaps if g is not None and g > 0), None),
        study_uid=str(ds.get("StudyInstanceUID", "")), patient_id=str(ds.get("PatientID", "")),
        sop_uid=str(ds.get("SOPInstanceUID", "")),
        echo_time=number("EchoTime"), inversion_time=number("InversionTime"),
        image_type=image_type(ds.get("ImageType")),
    )


def group_by_series(headers: Sequence[DicomHeader]) -> dict[str, list[DicomHeader]]:
    groups: dict[str, list[DicomHeader]] = {}
    for h in headers:
        groups.setdefault(h.series_uid, []).append(h)
    order = sorted(groups, key=lambda uid: (groups[uid][0].series_number is None,
                                            groups[uid][0].series_number or 0, uid))
    return {uid: groups[uid] for uid in order}


def series_info(uid: str, members: Sequence[DicomHeader]) -> DicomSeriesInfo:
    counts: dict[tuple[float, ...], int] = {}
    for h in members:
        if h.position is not None:
            key = tuple(np.round(np.asarray(h.position) / SAME_POSITION_TOLERANCE_MM).astype(int).tolist())
            counts[key] = counts.get(key, 0) + 1
    planes: list[np.ndarray] = []  # one orientation per distinct plane (a localizer's are ~orthogonal)
    for h in members:
        if h.orientation is not None and all(np.abs(np.subtract(h.orientation, p)).max() > DISTINCT_PLANE_COSINE
                                             for p in planes):
            planes.append(np.asarray(h.orientation))
    first = members[0]
    uids = tuple(dict.fromkeys(h.series_uid for h in members))
    return DicomSeriesInfo(uid, first.description, first.modality, tuple(dict.fromkeys(h.path for h in members)),
                           len(counts), max(counts.values(), default=0), first.series_number,
                           uids if len(uids) > 1 else (), any(h.frame is not None for h in members),
                           max(1, len(planes)), _largest_tilt(planes))


def _largest_tilt(planes: Sequence[np.ndarray]) -> float:
    """The largest angle (degrees) between the normals of ``planes`` (orientations that cannot make a plane
    are left out: reading the series refuses them, naming the file)."""
    normals = [orthonormal_axes(p)[2] for p in planes if orientation_problem(p) is None]
    cosines = [abs(float(a @ b)) for i, a in enumerate(normals) for b in normals[i + 1:]]
    return float(np.degrees(np.arccos(min(1.0, min(cosines))))) if cosines else 0.0


def warn_unreadable(unreadable: Sequence[InputFileError]) -> None:
    for item in unreadable:
        logger.warning("skipping %s: %s", item.path, item.reason)


def describe_series(info: DicomSeriesInfo) -> str:
    joined = f"stack of {len(info.member_series)} single-slice series, " if info.member_series else ""
    return (f"{info.series_instance_uid} ({joined}series {info.series_number}, "
            f"{info.description or 'no description'}, "
            f"{info.modality}, {len(info.files)} files, {info.n_locations} locations x {info.n_phases} phases)")
