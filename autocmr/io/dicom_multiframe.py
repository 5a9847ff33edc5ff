"""Enhanced (multi-frame) DICOM: one file holding every slice and phase of a series, as Philips scanners and
many archives export cines (Enhanced MR Image, and the Legacy Converted Enhanced MR Image that converters
write).

Such a file describes each frame in functional groups instead of top-level attributes: the frame's entry of
the PerFrameFunctionalGroupsSequence, or else the SharedFunctionalGroupsSequence, holds

* PlanePositionSequence > ImagePositionPatient and PlaneOrientationSequence > ImageOrientationPatient;
* PixelMeasuresSequence > PixelSpacing (and SpacingBetweenSlices / SliceThickness);
* PixelValueTransformationSequence > RescaleSlope / RescaleIntercept;
* the cardiac phase: CardiacSynchronizationSequence > NominalCardiacTriggerDelayTime (Enhanced MR), or the
  TriggerTime a converter kept in UnassignedPerFrameConvertedAttributesSequence;
* what must not differ between the phases of a cine: MREchoSequence > EffectiveEchoTime, MRModifierSequence >
  InversionTimes, MRImageFrameTypeSequence > FrameType (or the EchoTime / InversionTime a converter kept
  there); without them, the file's own.

:func:`frame_headers` turns the file into one :class:`DicomHeader` per frame (``frame`` set, its number in
the file), so that :func:`autocmr.io.dicom.read_dicom_series` places frames exactly as it places single-frame
files; the frame order in the file stands in for InstanceNumber when trigger times are missing.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pydicom

from autocmr.errors import InputFileError
from autocmr.io.dicom_values import image_type, numeric_tuple, numeric_value

if TYPE_CHECKING:  # autocmr.io.dicom_scan builds headers and calls this module
    from autocmr.io.dicom_scan import DicomHeader


def is_enhanced(ds: pydicom.Dataset) -> bool:
    """An image whose frames are described by functional groups (Enhanced MR and the like): several frames, or
    one whose position is only there (some single-frame files also carry the sequence, beside a top-level
    ImagePositionPatient that places them)."""
    if not ds.get("PerFrameFunctionalGroupsSequence"):
        return False
    frames = numeric_value(Path(str(ds.filename or "")), "NumberOfFrames", ds.get("NumberOfFrames")) or 1
    return frames > 1 or "ImagePositionPatient" not in ds


def frame_headers(base: DicomHeader, ds: pydicom.Dataset) -> list[DicomHeader]:
    """One header per frame of the enhanced image ``ds``, filled from its functional groups; ``base`` gives
    what all frames share (file, series, study, matrix)."""
    per_frame = ds.PerFrameFunctionalGroupsSequence
    n = int(numeric_value(base.path, "NumberOfFrames", ds.get("NumberOfFrames")) or 1)
    if len(per_frame) != n:
        raise InputFileError(base.path, f"NumberOfFrames is {n} but the per-frame functional groups describe "
                                        f"{len(per_frame)} frames")
    shared = ds.get("SharedFunctionalGroupsSequence")
    shared_item = shared[0] if shared else None
    headers = []
    for index, item in enumerate(per_frame):
        def get(sequence: str, keyword: str) -> Any:
            return _lookup(item, shared_item, sequence, keyword)

        def floats(sequence: str, keyword: str, n: int) -> tuple[float, ...] | None:
            return numeric_tuple(base.path, f"frame {index + 1}: {keyword}", get(sequence, keyword), n)

        slope, intercept = get("PixelValueTransformationSequence", "RescaleSlope"), \
            get("PixelValueTransformationSequence", "RescaleIntercept")
        trigger = get("CardiacSynchronizationSequence", "NominalCardiacTriggerDelayTime")
        if trigger is None:
            trigger = get("UnassignedPerFrameConvertedAttributesSequence", "TriggerTime")
        gaps = [numeric_value(base.path, f"frame {index + 1}: {k}", get("PixelMeasuresSequence", k), optional=True)
                for k in ("SpacingBetweenSlices", "SliceThickness")]
        echo = get("MREchoSequence", "EffectiveEchoTime")
        if echo is None:
            echo = get("UnassignedPerFrameConvertedAttributesSequence", "EchoTime")
        inversion = _first(get("MRModifierSequence", "InversionTimes"))
        if inversion is None:
            inversion = get("UnassignedPerFrameConvertedAttributesSequence", "InversionTime")
        frame_type = get("MRImageFrameTypeSequence", "FrameType")
        slope = numeric_value(base.path, f"frame {index + 1}: RescaleSlope", slope)
        intercept = numeric_value(base.path, f"frame {index + 1}: RescaleIntercept", intercept)
        headers.append(replace(
            base, position=floats("PlanePositionSequence", "ImagePositionPatient", 3),
            orientation=floats("PlaneOrientationSequence", "ImageOrientationPatient", 6),
            pixel_spacing=floats("PixelMeasuresSequence", "PixelSpacing", 2),
            trigger_time=numeric_value(base.path, f"frame {index + 1}: trigger time", trigger, optional=True),
            instance_number=index + 1, n_frames=1, frame=index,
            slice_gap_hint=next((g for g in gaps if g is not None and g > 0), None),
            rescale=(1.0 if slope is None else slope, 0.0 if intercept is None else intercept),
            echo_time=_frame_value(base.path, f"frame {index + 1}: echo time", echo, base.echo_time),
            inversion_time=_frame_value(base.path, f"frame {index + 1}: inversion time", inversion,
                                        base.inversion_time),
            image_type=base.image_type if frame_type is None else image_type(frame_type)))
    return headers


def _first(value: Any) -> Any:
    """The first of several values (InversionTimes lists one per inversion pulse), a single value as it is."""
    if value is None or isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
        return value
    return value[0] if len(value) else None


def _frame_value(path: Path, what: str, value: Any, default: float | None) -> float | None:
    """A frame's own value of an attribute the reader can do without, else the file's (``default``)."""
    found = numeric_value(path, what, value, optional=True)
    return default if found is None else found


def functional_group_rescale(ds: pydicom.Dataset, intercept: Any = None) -> tuple[Any, Any]:
    """RescaleSlope and RescaleIntercept (raw values) of the first frame's functional groups, else the shared
    ones; ``(None, intercept)`` when they hold no slope. A single-frame file that carries functional groups
    beside a top-level ImagePositionPatient is read as a classic image (:func:`is_enhanced`), and some keep
    their rescale only in the groups."""
    per_frame, shared = ds.get("PerFrameFunctionalGroupsSequence"), ds.get("SharedFunctionalGroupsSequence")
    item, shared_item = (per_frame[0] if per_frame else None), (shared[0] if shared else None)
    slope = _lookup(item, shared_item, "PixelValueTransformationSequence", "RescaleSlope")
    if slope is None:
        return None, intercept
    return slope, _lookup(item, shared_item, "PixelValueTransformationSequence", "RescaleIntercept")


def _lookup(item: pydicom.Dataset | None, shared: pydicom.Dataset | None, sequence: str, keyword: str) -> Any:
    """``keyword`` of the first entry of ``sequence`` in the frame's functional groups, else the shared ones."""
    for groups in (item, shared):
        if groups is None or sequence not in groups or not len(groups[sequence].value):
            continue
        value = groups[sequence].value[0].get(keyword)
        if value is not None:
            return value
    return None


__all__ = ["frame_headers", "functional_group_rescale", "is_enhanced"]
