"""Short-axis stacks stored as one DICOM series per slice, put back together.

Many scanners acquire a short-axis cine one breath-hold per slice and store each slice as a series of its
own (Siemens exports typically do; so does the Kaggle Data Science Bowl cardiac set). Taken series by series,
such a study is a dozen single-slice cines and no ventricular volume. :func:`group_into_volumes` therefore
joins single-location series into one stack when they:

* come from the same patient and study (PatientID, StudyInstanceUID) and modality;
* have parallel image planes (ImageOrientationPatient), the same pixel spacing and matrix, and the same
  number of images (cardiac phases);
* are aligned in-plane: each IPP lies on the first one's normal line within half a pixel, so the slices
  form one regular grid (a stack whose slices were shifted in-plane cannot be one volume);
* number at least :data:`MIN_STACK_SERIES` distinct positions.

Single-location series that do not fit (long-axis views, localizers, a lone slice) stay on their own. When
two series lie at the same position (a slice acquired again after a failed breath-hold), the later one (higher
SeriesNumber, then later in the folder's series order) is used and a warning names the one left out (it is
not predicted on its own either): the repeat is what the operator kept. Series with several locations are
never merged with anything.
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from autocmr.io.dicom_scan import (ORIENTATION_TOLERANCE, PIXEL_SPACING_TOLERANCE_MM, SAME_POSITION_TOLERANCE_MM,
                                   DicomHeader, group_by_series, orientation_problem, orthonormal_axes)

logger = logging.getLogger(__name__)

MIN_STACK_SERIES = 3  # fewer single-slice series than this are not a short-axis stack worth joining
IN_PLANE_TOLERANCE_PIXELS = 0.5  # slices further apart than this within the plane do not form one grid
# a single-slice series tilted up to this from a stack it did not join is named (another view is tilted more)
MAX_TILT_LEFT_ASIDE_DEG = 15.0
INTERLEAVED_GAP_SHARE = 0.75  # joined slices closer than this share of their thickness: warned about


def group_into_volumes(headers: Sequence[DicomHeader]) -> dict[str, list[DicomHeader]]:
    """Headers grouped into volumes: one per series, except that single-location series forming a stack (see
    the module docstring) become one group, keyed by its first series' UID (series order) and listing that
    series' images first. Order: as :func:`group_by_series`, a joined stack where its first series was."""
    series = group_by_series(headers)
    candidates = [uid for uid, members in series.items() if _single_location(members)]
    joined: dict[str, list[str]] = {}  # first series uid -> series uids of the stack
    absorbed: set[str] = set()  # series inside a stack other than its first, and repeats left out
    for bucket in _compatible_buckets(candidates, series):
        stack = _stack_of(bucket, series)
        if stack is not None:
            joined[stack[0]] = stack
            absorbed.update(u for u in bucket if u != stack[0])
            _warn_left_aside(stack, [u for u in candidates if u not in bucket], series)
    volumes: dict[str, list[DicomHeader]] = {}
    for uid, members in series.items():
        if uid in absorbed:
            continue
        if uid in joined:
            volumes[uid] = [h for member in joined[uid] for h in series[member]]
            logger.info("joined %d single-slice series into one stack (series %s)", len(joined[uid]),
                        ", ".join(str(series[u][0].series_number) for u in joined[uid]))
        else:
            volumes[uid] = members
    return volumes


def _warn_left_aside(stack: Sequence[str], others: Sequence[str], series: dict[str, list[DicomHeader]]) -> None:
    """Name single-slice series in the stack's study, in its plane or tilted a few degrees from it (a slice
    re-planned on its own), that could not join it (tilted, another number of phases, matrix or pixel
    spacing): the stack then misses that slice, which its volume would not show (no gap when it is the first or
    last slice)."""
    first = series[stack[0]]
    stack_normal = _normal(first[0])
    for uid in others:
        members = series[uid]
        h = members[0]
        if h.study_uid != first[0].study_uid or h.patient_id != first[0].patient_id:
            continue
        tilt = float(np.degrees(np.arccos(min(1.0, abs(float(_normal(h) @ stack_normal))))))
        if _parallel(h, first[0]):
            logger.warning("series %s lies in the plane of the stack of series %s but has %d image(s) of %s pixels "
                           "(the stack's slices: %d of %s): not joined, the stack misses that slice",
                           h.series_number, first[0].series_number, len(members), h.shape, len(first), first[0].shape)
        elif tilt <= MAX_TILT_LEFT_ASIDE_DEG:
            logger.warning("series %s is a single slice tilted %.1f degrees from the stack of series %s (a slice "
                           "planned on its own?): it cannot join that stack's grid, so the stack misses that slice "
                           "and the series is segmented on its own", h.series_number, tilt, first[0].series_number)


def _normal(h: DicomHeader) -> np.ndarray:
    return orthonormal_axes(h.orientation)[2]


def _single_location(members: Sequence[DicomHeader]) -> bool:
    first = members[0]
    if any(h.position is None or h.orientation is None or h.pixel_spacing is None or h.shape is None
           or h.n_frames > 1 or orientation_problem(h.orientation) for h in members):
        return False  # read on its own, where a broken orientation is refused naming the file
    return all(np.linalg.norm(np.subtract(h.position, first.position)) < SAME_POSITION_TOLERANCE_MM
               and _parallel(h, first) for h in members)  # a localizer's planes may share one position


def _parallel(x: DicomHeader, y: DicomHeader) -> bool:
    return bool(np.abs(np.subtract(x.orientation, y.orientation)).max() <= ORIENTATION_TOLERANCE)


def _compatible(a: Sequence[DicomHeader], b: Sequence[DicomHeader]) -> bool:
    x, y = a[0], b[0]
    return (x.study_uid == y.study_uid and x.patient_id == y.patient_id and x.modality == y.modality
            and x.shape == y.shape
            and len(a) == len(b)
            and _parallel(x, y)
            and np.abs(np.subtract(x.pixel_spacing, y.pixel_spacing)).max() <= PIXEL_SPACING_TOLERANCE_MM)


def _compatible_buckets(candidates: Sequence[str], series: dict[str, list[DicomHeader]]) -> list[list[str]]:
    buckets: list[list[str]] = []
    for uid in candidates:
        for bucket in buckets:
            if _compatible(series[bucket[0]], series[uid]):
                bucket.append(uid)
                break
        else:
            buckets.append([uid])
    return buckets


def _stack_of(bucket: Sequence[str], series: dict[str, list[DicomHeader]]) -> list[str] | None:
    """The series of ``bucket`` that make one stack (one per position, the latest where several share it),
    in series order; None when they do not make one."""
    if len(bucket) < MIN_STACK_SERIES:
        return None
    first = series[bucket[0]][0]
    normal = _normal(first)
    origin = np.asarray(first.position)
    tolerance = IN_PLANE_TOLERANCE_PIXELS * min(first.pixel_spacing)
    positions: list[tuple[float, list[str]]] = []  # depth along the normal, the series lying there
    for uid in bucket:
        d = np.asarray(series[uid][0].position) - origin
        along = float(d @ normal)
        if np.linalg.norm(d - along * normal) > tolerance:
            names = ", ".join(str(series[u][0].series_number) for u in bucket)
            logger.warning("single-slice series %s look like one stack but are shifted in-plane (series %s by "
                           "%.1f mm): kept as separate series", names, series[uid][0].series_number,
                           float(np.linalg.norm(d - along * normal)))
            return None
        for depth, there in positions:
            if abs(depth - along) < SAME_POSITION_TOLERANCE_MM:
                there.append(uid)
                break
        else:
            positions.append((along, [uid]))
    if len(positions) < MIN_STACK_SERIES:
        return None
    order = {uid: i for i, uid in enumerate(series)}
    chosen = []
    for _, uids in positions:
        latest = max(uids, key=lambda u: (series[u][0].series_number or 0, order[u]))
        for left_out in (u for u in uids if u != latest):
            logger.warning("series %s and %s lie at the same slice position: the later one (%s) is used in the "
                           "stack, %s is left out", series[left_out][0].series_number, series[latest][0].series_number,
                           series[latest][0].series_number, series[left_out][0].series_number)
        chosen.append(latest)
    _warn_if_interleaved(sorted(depth for depth, _ in positions), first, [series[u][0] for u in chosen])
    return sorted(chosen, key=order.__getitem__)


def _warn_if_interleaved(depths: Sequence[float], first: DicomHeader, heads: Sequence[DicomHeader]) -> None:
    """Slices much closer together than they are thick: most likely two acquisitions of the stack (a re-planned
    one shifted by half a gap) joined into one; the volume is then sampled twice as densely as it was acquired."""
    gaps = np.diff(depths)
    thickness = first.slice_gap_hint
    if len(gaps) and thickness and float(np.median(gaps)) < INTERLEAVED_GAP_SHARE * thickness:
        logger.warning("the joined single-slice series %s lie %.1f mm apart but are %.1f mm thick: two acquisitions "
                       "of one stack interleaved? Check the stack (or give the series of one acquisition only)",
                       ", ".join(str(h.series_number) for h in heads), float(np.median(gaps)), thickness)


__all__ = ["MIN_STACK_SERIES", "group_into_volumes"]
