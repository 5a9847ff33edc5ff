"""Read DICOM series (single 3D stacks and 2D+time / 3D+time cine) into numpy arrays with their geometry.

Users point inference at a folder that may hold several series, nested folders and non-DICOM files.
:func:`find_dicom_series` lists the series (headers only, fast); :func:`read_dicom_series` builds one volume:

* slices are sorted by the projection of ImagePositionPatient (IPP) on the slice normal
  ``n = row x column`` (the two triplets of ImageOrientationPatient, IOP), so ``z`` increases along ``n``;
* images sharing a slice location are cardiac phases, sorted by TriggerTime (by InstanceNumber, with a warning,
  when TriggerTime is absent or does not tell them apart); images there that differ in echo time, inversion
  time or ImageType are no cine (multi-echo, T1 mapping, magnitude beside phase images) and are refused;
* the slice gap is the median IPP distance along ``n`` (the smallest distance when every distance is a whole
  number of it but not of the median: slices missing); a gap of a whole number of slice gaps is a missing slice,
  left empty (0) so the other slices keep their places; other uneven gaps give a warning (approximate volume);
* the geometry is in SimpleITK order (x, y, z[, t]) in LPS: direction columns are IOP's row direction,
  its column direction and ``n``; spacing is (PixelSpacing[1], PixelSpacing[0], slice gap[, time step]);
  the origin is the IPP of the first slice along ``n`` (time origin 0).

This matches what ITK/GDCM produce for one phase, so a mask written with this geometry overlays the scan.
Enhanced (multi-frame) DICOM files are read frame by frame (:mod:`autocmr.io.dicom_multiframe`); a short-axis
stack stored as one series per slice is read as one volume (:mod:`autocmr.io.dicom_stacks`).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Mapping, Optional, Sequence

import numpy as np

from autocmr.errors import InputFileError
from autocmr.io.dicom_pixels import DecodedFile, read_pixels
from autocmr.io.dicom_scan import (ORIENTATION_TOLERANCE, PIXEL_SPACING_TOLERANCE_MM, SAME_POSITION_TOLERANCE_MM,
                                   DicomHeader, DicomSeriesInfo, SkippedObject, classify_dicom_file, describe_series,
                                   orientation_problem, orthonormal_axes, scan_folder, series_info, warn_unreadable)
from autocmr.io.dicom_stacks import group_into_volumes
from autocmr.io.image import Geometry

logger = logging.getLogger(__name__)

# Slice gaps deviating from the median gap by more than this fraction are reported (a missing slice or a
# stack assembled from several acquisitions); the volume then uses the median gap and is only approximate.
SLICE_GAP_WARN_FRACTION = 0.10
# A gap below this fraction of the median gap means slices overlap: two stacks interleaved in one series.
SLICE_GAP_OVERLAP_FRACTION = 0.5
# Echo or inversion times (ms) closer than this are one (scanners write them with 2-3 decimals; the echoes of a
# multi-echo series lie >= 1 ms apart, the inversion times of a T1 mapping series tens of ms).
SAME_ECHO_TIME_TOLERANCE_MS = 0.05
SAME_INVERSION_TIME_TOLERANCE_MS = 1.0
# Time step (ms) used when no image has a TriggerTime.
DEFAULT_TIME_STEP_MS = 1.0
MS_PER_S = 1000.0


@dataclass(frozen=True)
class DicomVolume:
    """A series read into an array with its geometry.

    ``array`` is float32 (rescale slope/intercept applied) in numpy order: ``(t, z, y, x)`` for cine
    (more than one phase per location), ``(z, y, x)`` otherwise. ``geometry`` is 4D or 3D accordingly.
    ``trigger_times`` gives, per phase, the median TriggerTime (ms) over locations (NaN when absent);
    ``files`` maps ``(z_index, t_index)`` to the source file (``t_index`` is 0 for a single phase).
    ``missing_slices``: slice indices no image of the series fills (a slice missing from a stack whose other
    gaps are whole multiples of the slice gap): zero there, so that every other slice keeps its true place.
    """

    array: np.ndarray
    geometry: Geometry
    trigger_times: tuple[float, ...]
    files: Mapping[tuple[int, int], Path]
    series_instance_uid: str = ""
    missing_slices: tuple[int, ...] = ()

    @property
    def is_cine(self) -> bool:
        return self.array.ndim == 4


@dataclass(frozen=True)
class DicomLayout:
    """Where each image of a series sits in the volume :func:`read_dicom_series` would build, from the
    headers alone (no pixel data decoded): ``files`` maps ``(z_index, t_index)`` to the source file, as
    :attr:`DicomVolume.files` (a missing slice has no entry); ``shape`` is the array's shape, ``(t, z, y, x)``
    for cine, else ``(z, y, x)``."""

    files: Mapping[tuple[int, int], Path]
    shape: tuple[int, ...]

    @property
    def is_cine(self) -> bool:
        return len(self.shape) == 4



# ---------------------------------------------------------------------------------------------- reading


def find_dicom_series(folder: str | Path) -> list[DicomSeriesInfo]:
    """List the DICOM series under ``folder`` (recursively), ordered by series number then UID; a short-axis
    stack stored as one series per slice is listed once (:mod:`autocmr.io.dicom_stacks`).

    Non-DICOM files are skipped silently; files that look like DICOM (``DICM`` preamble or a DICOM suffix)
    but cannot be read are logged as warnings. Raises :class:`InputFileError` if ``folder`` does not exist.
    """
    scan = scan_folder(Path(folder))
    warn_unreadable(scan.unreadable)
    return [series_info(uid, members) for uid, members in group_into_volumes(scan.headers).items()]


def read_dicom_series(files_or_folder: str | Path | Sequence[str | Path], *,
                      series_uid: str | None = None) -> DicomVolume:
    """Read one series as a volume (3D) or cine (4D); see the module docstring for conventions.

    Args:
        files_or_folder: a folder (searched recursively; it must hold exactly one series unless
            ``series_uid`` is given) or a list of DICOM files. Single-slice series that form a stack count
            as one series (:mod:`autocmr.io.dicom_stacks`).
        series_uid: the SeriesInstanceUID to read when several series are present (a joined stack's: its
            first series').

    Raises:
        InputFileError: no DICOM found, several series and none chosen, or the series cannot form a
            regular grid (mixed orientations or pixel spacings, uneven phases per location, overlapping or
            duplicated slices, missing pixel data).
    """
    return _build(_assemble, files_or_folder, series_uid)


def read_dicom_layout(files_or_folder: str | Path | Sequence[str | Path], *,
                      series_uid: str | None = None) -> DicomLayout:
    """The (slice, phase) -> file map and array shape of :func:`read_dicom_series` on the same arguments,
    with the same checks, from the headers only (what a DICOM-SEG of a predicted mask needs)."""
    return _build(_layout_only, files_or_folder, series_uid)


def _build(build, files_or_folder: str | Path | Sequence[str | Path], series_uid: str | None):
    """``build(members, source)`` on the chosen series; an error about the series as a whole names the files
    that could not be read too (one of them may be the missing slice)."""
    members, source, note = _series_members(files_or_folder, series_uid)
    try:
        return build(members, source)
    except InputFileError as exc:
        if note and exc.path == source:
            raise InputFileError(source, exc.reason + note) from exc
        raise


def _series_members(files_or_folder: str | Path | Sequence[str | Path],
                    series_uid: str | None) -> tuple[list[DicomHeader], Path, str]:
    """The headers of the one series to read (see :func:`read_dicom_series`), where they were found, and a
    note naming unreadable files for error messages."""
    headers, source, unreadable = _collect(files_or_folder)
    series = group_into_volumes(headers)
    note = _unreadable_note(unreadable)
    if not series:
        raise InputFileError(source, f"no DICOM images found{note}")
    found = "; ".join(describe_series(series_info(u, m)) for u, m in series.items())
    if series_uid is not None and series_uid not in series:
        raise InputFileError(source, f"series {series_uid} not found; available: {found}")
    if series_uid is None and len(series) > 1:
        raise InputFileError(source, f"holds {len(series)} DICOM series, choose one with series_uid: {found}")
    members = series[series_uid] if series_uid is not None else next(iter(series.values()))
    warn_unreadable(unreadable)
    return list(members), source, note


def _collect(files_or_folder: str | Path | Sequence[str | Path]
             ) -> tuple[list[DicomHeader], Path, list[InputFileError]]:
    if isinstance(files_or_folder, (str, Path)):
        folder = Path(files_or_folder)
        scan = scan_folder(folder)
        return scan.headers, folder, scan.unreadable
    paths = list(dict.fromkeys(Path(p) for p in files_or_folder))
    if not paths:
        raise InputFileError(Path("."), "empty list of DICOM files")
    headers = []
    for path in paths:
        if not path.is_file():
            raise InputFileError(path, "file does not exist")
        found = classify_dicom_file(path)
        if isinstance(found, SkippedObject):
            raise InputFileError(path, f"not an image to segment: {found.what}")
        if not found:
            raise InputFileError(path, "not a DICOM file")
        headers += found
    return headers, Path(os.path.commonpath([p.resolve().parent for p in paths])), []


def _unreadable_note(unreadable: Sequence[InputFileError]) -> str:
    if not unreadable:
        return ""
    shown = ", ".join(f"{u.path.name} ({u.reason})" for u in unreadable[:3])
    more = f" and {len(unreadable) - 3} more" if len(unreadable) > 3 else ""
    return f"; {len(unreadable)} DICOM-looking files could not be read: {shown}{more}"


# slice locations along the normal, each its images sorted by phase, None where a slice is missing
Slots = list[Optional[list[DicomHeader]]]


def _layout(members: Sequence[DicomHeader], source: Path) -> tuple[Slots, np.ndarray, float]:
    """The checked grid of images (slice locations along the normal, each sorted by phase, None for a missing
    slice: :func:`_fill_missing_slices`), the slice normal and the slice gap."""
    _check_no_copies(members, source)
    _check_consistent(members, source)
    _, _, normal = orthonormal_axes(members[0].orientation)
    grid = _arrange(members, normal, source)
    gap = _slice_gap(grid, normal, source)
    return _fill_missing_slices(grid, normal, gap, source), normal, gap


def _file_map(slots: Slots) -> Mapping[tuple[int, int], Path]:
    return MappingProxyType({(z, t): h.path for z, loc in enumerate(slots) if loc is not None
                             for t, h in enumerate(loc)})


def _layout_only(members: Sequence[DicomHeader], source: Path) -> DicomLayout:
    slots, _, _ = _layout(members, source)
    n_z, n_t = len(slots), len(slots[0])
    return DicomLayout(_file_map(slots), ((n_t,) if n_t > 1 else ()) + (n_z, *members[0].shape))


def _assemble(members: Sequence[DicomHeader], source: Path) -> DicomVolume:
    slots, normal, gap = _layout(members, source)
    grid = [loc for loc in slots if loc is not None]
    missing = tuple(z for z, loc in enumerate(slots) if loc is None)
    row, col, _ = orthonormal_axes(members[0].orientation)  # exactly orthonormal: every writer stores the same
    n_z, n_t = len(slots), len(grid[0])
    rows, cols = members[0].shape
    array = np.zeros((n_t, n_z, rows, cols), np.float32)  # a missing slice stays 0
    decoded: dict[Path, DecodedFile] = {}  # multi-frame files, decoded once for all their frames
    for z, location in enumerate(slots):
        for t, header in enumerate(location or ()):
            array[t, z] = read_pixels(header, decoded)
    dy, dx = members[0].pixel_spacing  # PixelSpacing is (row spacing, column spacing)
    direction = np.column_stack([row, col, normal])
    origin = tuple(float(v) for v in grid[0][0].position)
    times = _trigger_times(grid)
    files = _file_map(slots)
    if n_t == 1:
        geometry = Geometry((cols, rows, n_z), (dx, dy, gap), origin, tuple(direction.ravel().tolist()))
        return DicomVolume(array[0], geometry, times, files, members[0].series_uid, missing)
    d4 = np.eye(4)
    d4[:3, :3] = direction
    # the time axis in seconds, as NIfTI files carry it (a NIfTI copy of the cine is labelled seconds)
    geometry = Geometry((cols, rows, n_z, n_t), (dx, dy, gap, _time_step(grid) / MS_PER_S), origin + (0.0,),
                        tuple(d4.ravel().tolist()))
    return DicomVolume(array, geometry, times, files, members[0].series_uid, missing)


def _check_no_copies(members: Sequence[DicomHeader], source: Path) -> None:
    """One image in two files (the same SOPInstanceUID and frame) means the series was copied into the input
    twice, e.g. a study folder beside its copy: say so with both paths instead of a puzzle about phases."""
    seen: dict[tuple[str, int | None], DicomHeader] = {}
    copies = []
    for h in members:
        if not h.sop_uid:
            continue
        first = seen.setdefault((h.sop_uid, h.frame), h)
        if first is not h:
            copies.append((first, h))
    if copies:
        a, b = copies[0]
        raise InputFileError(source, f"{len(copies)} image(s) of series {a.series_uid} are in the input twice "
                                     f"(same SOPInstanceUID), e.g. {a.located(source)} and {b.located(source)}: "
                                     "the series was copied more than once; keep one copy")


def _check_consistent(members: Sequence[DicomHeader], source: Path) -> None:
    first = members[0]
    for h in members:
        missing = [name for name, value in (("ImagePositionPatient", h.position),
                                            ("ImageOrientationPatient", h.orientation),
                                            ("PixelSpacing", h.pixel_spacing), ("Rows/Columns", h.shape))
                   if value is None]
        if missing:
            raise InputFileError(h.path, f"missing {', '.join(missing)}: cannot place the image in space")
        problem = orientation_problem(h.orientation)
        if problem:
            shown = "\\".join(f"{v:g}" for v in h.orientation)
            raise InputFileError(h.path, f"ImageOrientationPatient is {shown}: {problem}, so the image plane is "
                                         "unknown")
        if not all(np.isfinite(v) and v > 0 for v in h.pixel_spacing):
            shown = "\\".join(f"{v:g}" for v in h.pixel_spacing)  # as DICOM writes a multi-valued attribute
            raise InputFileError(h.path, f"PixelSpacing is {shown}: the pixel size is unknown, so no area or "
                                         "volume can be measured")
        if h.n_frames > 1:
            raise InputFileError(h.path, f"multi-frame DICOM with {h.n_frames} frames but no per-frame "
                                         "functional groups (not an enhanced image): the frames cannot be placed; "
                                         "convert the series first (e.g. dcm2niix)")
    checks = (("orientations", "orientation", ORIENTATION_TOLERANCE),
              ("pixel spacings", "pixel_spacing", PIXEL_SPACING_TOLERANCE_MM), ("image sizes", "shape", 0.0))
    for h in members[1:]:
        for what, field, tolerance in checks:
            a, b = getattr(first, field), getattr(h, field)
            if np.abs(np.subtract(a, b)).max() > tolerance:
                raise InputFileError(source, f"mixed {what} in one series: {first.located(source)} has {a}, "
                                             f"{h.located(source)} has {b}")


def _arrange(members: Sequence[DicomHeader], normal: np.ndarray, source: Path) -> list[list[DicomHeader]]:
    """Group images into slice locations (sorted along ``normal``), each sorted by cardiac phase."""
    ordered = sorted(members, key=lambda h: float(np.dot(h.position, normal)))
    locations: list[list[DicomHeader]] = []
    for h in ordered:
        if locations and float(np.dot(np.subtract(h.position, locations[-1][0].position), normal)) \
                < SAME_POSITION_TOLERANCE_MM:
            ref = locations[-1][0]
            if np.linalg.norm(np.subtract(h.position, ref.position)) > SAME_POSITION_TOLERANCE_MM:
                raise InputFileError(source, f"slices overlap: {ref.located(source)} and {h.located(source)} lie "
                                             f"in the same plane at different positions {ref.position} / "
                                             f"{h.position}")
            locations[-1].append(h)
        else:
            locations.append([h])
    _check_only_phases_differ(locations, source)
    counts = [len(loc) for loc in locations]
    if len(set(counts)) > 1:
        detail = ", ".join(f"{loc[0].located(source)}: {len(loc)}" for loc in locations)
        raise InputFileError(source, f"uneven number of phases per slice location ({detail}); a phase is "
                                     "missing or extra images were mixed in")
    # TriggerTime orders phases only when it tells them apart (real-time cine may write 0 everywhere).
    use_trigger = all(h.trigger_time is not None for h in members) and \
        all(len({h.trigger_time for h in loc}) == len(loc) for loc in locations)
    if not use_trigger and any(h.instance_number is None for h in members):
        raise InputFileError(source, "TriggerTime does not distinguish the phases and InstanceNumber is "
                                     "missing: cannot order the cardiac phases")
    if not use_trigger and counts[0] > 1:
        logger.warning("%s: %s: TriggerTime is missing or does not tell the %d images at each slice position "
                       "apart; they are read as cardiac phases in InstanceNumber order (check that the series is "
                       "a cine)", source, _series_name(members[0]), counts[0])
    for loc in locations:
        loc.sort(key=lambda h: h.trigger_time if use_trigger else h.instance_number)
        for a, b in zip(loc, loc[1:]):
            if not use_trigger and a.instance_number == b.instance_number:
                raise InputFileError(source, f"duplicate images at one slice location with the same phase: "
                                             f"{a.located(source)} and {b.located(source)}")
    return locations


def _check_only_phases_differ(locations: Sequence[Sequence[DicomHeader]], source: Path) -> None:
    """Images sharing a slice position are read as cardiac phases; refuse a series whose images there differ in
    what a cine keeps fixed: echo time (multi-echo, e.g. T2*), inversion time (e.g. T1 mapping) or ImageType
    (magnitude beside phase or real images, e.g. PSIR). autocmr segments cine and still short-axis stacks."""
    for loc in locations:
        if len(loc) < 2:
            continue
        for what, times, tolerance, kind in (
                ("echo time", [h.echo_time for h in loc], SAME_ECHO_TIME_TOLERANCE_MS, "a multi-echo series"),
                ("inversion time", [h.inversion_time for h in loc], SAME_INVERSION_TIME_TOLERANCE_MS,
                 "a series of inversion times (e.g. T1 mapping)")):
            known = sorted(t for t in times if t is not None)
            if known and known[-1] - known[0] > tolerance:
                raise InputFileError(source, f"{_series_name(loc[0])}: images at one slice position "
                                             f"({loc[0].located(source)}) differ in {what} "
                                             f"({_listed(known)} ms): {kind}, not a cine")
        types = sorted({"\\".join(h.image_type) for h in loc if h.image_type})
        if len(types) > 1:
            raise InputFileError(source, f"{_series_name(loc[0])}: images at one slice position "
                                         f"({loc[0].located(source)}) are of different types (ImageType "
                                         f"{' and '.join(types[:3])}): e.g. magnitude beside phase or real "
                                         "images, not a cine")


def _listed(values: Sequence[float]) -> str:
    distinct = list(dict.fromkeys(f"{v:g}" for v in values))
    return ", ".join(distinct[:6]) + (", ..." if len(distinct) > 6 else "")


def _series_name(h: DicomHeader) -> str:
    """The series in messages: its number and description, as a viewer lists them."""
    return f"series {h.series_number} ({h.description or 'no description'})"


def _warn_if_sheared(grid: Sequence[Sequence[DicomHeader]], normal: np.ndarray, depths: np.ndarray,
                     source: Path) -> None:
    """Slices whose positions drift off the first slice's normal line (a sheared stack) are placed on a regular
    grid through the first one: each slice's pixels stay right, the stack's 3D shape is approximate."""
    first = np.asarray(grid[0][0].position, float)
    offsets = [np.linalg.norm(np.asarray(loc[0].position, float) - first - (depth - depths[0]) * normal)
               for loc, depth in zip(grid, depths)]
    worst = int(np.argmax(offsets))
    if offsets[worst] > 0.5 * min(grid[0][0].pixel_spacing or (1.0,)):
        logger.warning("%s: slices are shifted in-plane by up to %.2f mm off the stack's axis (%s); the volume is "
                       "placed on a regular grid through the first slice and its 3D shape is approximate", source,
                       offsets[worst], grid[worst][0].located(source))


def _slice_gap(grid: Sequence[Sequence[DicomHeader]], normal: np.ndarray, source: Path) -> float:
    if len(grid) == 1:
        hint = grid[0][0].slice_gap_hint
        return float(hint) if hint and hint > 0 else 1.0
    depths = np.array([float(np.dot(loc[0].position, normal)) for loc in grid])
    _warn_if_sheared(grid, normal, depths, source)
    gaps = np.diff(depths)
    median = float(np.median(gaps))
    small = int(np.argmin(gaps))
    if gaps[small] < SLICE_GAP_OVERLAP_FRACTION * median:
        raise InputFileError(source, f"slices overlap: {grid[small][0].located(source)} and "
                                     f"{grid[small + 1][0].located(source)} are {gaps[small]:.3f} mm apart, the "
                                     f"median gap is {median:.3f} mm")
    # With many slices missing the median gap may be none of the stack's (gaps 10 and 20 mm: 15 mm), while every
    # gap is a whole number of the smallest one: that is the slice gap (a stack of 10 mm with a slice missing).
    if not _whole_steps(gaps, median) and _whole_steps(gaps, float(gaps[small])):
        return float(gaps[small])
    return median


def _whole_steps(gaps: np.ndarray, gap: float) -> bool:
    """Every gap is a whole number (one or more) of ``gap``, within :data:`SLICE_GAP_WARN_FRACTION`."""
    steps = gaps / gap
    whole = np.rint(steps)
    return bool(whole.min() >= 1 and np.abs(steps - whole).max() <= SLICE_GAP_WARN_FRACTION)


def _fill_missing_slices(grid: list[list[DicomHeader]], normal: np.ndarray, gap: float, source: Path) -> Slots:
    """``grid`` with None where slices are missing, when every gap is a whole number of slice gaps (within
    :data:`SLICE_GAP_WARN_FRACTION`; ``gap`` from :func:`_slice_gap`): the volume then has an empty slice there
    and every image its true place. Other uneven gaps (stacks joined from several acquisitions) keep the median
    gap, with a warning that the volume is approximate."""
    if len(grid) < 2:
        return list(grid)
    depths = np.array([float(np.dot(loc[0].position, normal)) for loc in grid])
    steps = np.diff(depths) / gap
    if np.abs(steps - 1).max() <= SLICE_GAP_WARN_FRACTION:
        return list(grid)
    if _whole_steps(np.diff(depths), gap):
        slots: Slots = [grid[0]]
        for location, step in zip(grid[1:], np.rint(steps).astype(int)):
            slots += [None] * (step - 1) + [location]
        missing = [z for z, loc in enumerate(slots) if loc is None]
        logger.warning("%s: %d slice(s) missing from the stack (slice gap %.3f mm; none at slice(s) %s of %d): "
                       "those slices are left empty (image and mask 0), so every other slice keeps its place; "
                       "volumes miss what the absent slices held", source, len(missing), gap, missing, len(slots))
        return slots
    gaps = np.diff(depths)
    logger.warning("%s: slice gaps vary from %.3f to %.3f mm (median %.3f mm); the volume uses the median "
                   "and is approximate (slices from several acquisitions?)", source, gaps.min(), gaps.max(), gap)
    return list(grid)


def _trigger_times(grid: Sequence[Sequence[DicomHeader]]) -> tuple[float, ...]:
    n_t = len(grid[0])
    out = []
    for t in range(n_t):
        values = [loc[t].trigger_time for loc in grid if loc[t].trigger_time is not None]
        out.append(float(np.median(values)) if values else float("nan"))
    return tuple(out)


def _time_step(grid: Sequence[Sequence[DicomHeader]]) -> float:
    steps = [b.trigger_time - a.trigger_time for loc in grid for a, b in zip(loc, loc[1:])
             if a.trigger_time is not None and b.trigger_time is not None]
    if not steps:
        logger.warning("%s: no TriggerTime; using a time step of %.1f ms", grid[0][0].path.parent,
                       DEFAULT_TIME_STEP_MS)
        return DEFAULT_TIME_STEP_MS
    step = float(np.median(steps))
    return step if step > 0 else DEFAULT_TIME_STEP_MS


def write_dicom_as_nifti(folder: str | Path, output_path: str | Path, *, series_uid: str | None = None) -> Path:
    """Read the series in ``folder`` and write it as (3D or 4D cine) NIfTI, atomically; returns the path."""
    from autocmr.io.cine import write_cine
    from autocmr.io.image import write_image

    volume = read_dicom_series(folder, series_uid=series_uid)
    output_path = Path(output_path)
    if volume.is_cine:
        write_cine(volume.array, volume.geometry, output_path)
    else:
        write_image(volume.array, volume.geometry, output_path)
    logger.info("wrote %s (%s) from %s", output_path, "x".join(map(str, volume.array.shape)), folder)
    return output_path


__all__ = ["DicomLayout", "DicomSeriesInfo", "DicomVolume", "find_dicom_series", "read_dicom_layout",
           "read_dicom_series", "write_dicom_as_nifti"]
