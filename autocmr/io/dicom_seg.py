"""Write predicted masks as DICOM Segmentation objects (DICOM-SEG) that reference their source series.

Clinical viewers (3D Slicer, OHIF, most PACS) show a DICOM-SEG as a segmentation overlaid on the series it
references, with named, coloured segments. Each object built here:

* is a BINARY segmentation (the type every viewer reads; the newer LABELMAP type is not yet widely read)
  with three segments: 1 LV cavity, 2 LV myocardium, 3 RV cavity, coded in SNOMED CT (below);
* has one frame per (slice, segment) that holds foreground, each frame referencing its source image by
  SOP Instance UID and carrying that image's ImagePositionPatient/ImageOrientationPatient/PixelSpacing;
* copies patient and study from the source, so it files into the same study.

A cine series (several cardiac phases per slice location) gets **one SEG instance per cardiac phase**, all
in one SEG series, each referencing that phase's images only: viewers build one 3D volume per referenced
image stack and handle a single SEG over several phases at the same positions poorly or not at all. The
instance number is the phase number (1-based), and each instance's ContentDescription says which phase it
is and, when the caller gives it, how it was predicted (e.g. ED, full accuracy).

Anonymised exports often break things a SEG must copy (dates such as ``00000000``, a new
FrameOfReferenceUID per file). Copies of the headers are repaired for the SEG
(:mod:`autocmr.io.dicom_seg_sources`); the source files are never modified.
"""
from __future__ import annotations

import os
import shutil
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from pydicom import Dataset

from autocmr.errors import InputFileError
from autocmr.io.atomic import TEMP_PREFIX, atomic_path, temporary_sibling, temporary_target
from autocmr.io.dicom_seg_sources import lenient_pydicom_writing, read_source_headers

OUTPUT_FORMATS = ("nifti", "dicom-seg", "both")
SEG_SUFFIX = "_seg"  # NAME.nii.gz -> NAME_seg.dcm (3D series) or NAME_seg/ (one file per cardiac phase)
SEG_FILE_EXTENSION = ".dcm"
# SEG series number = source series number + this offset, so it sorts right after its source in PACS lists.
SEG_SERIES_NUMBER_OFFSET = 1000
SEG_CONTENT_LABEL = "AUTOCMR"  # ContentLabel is a CS value: upper case, at most 16 characters
MAX_LO_CHARS = 64  # LO values (ContentDescription, SeriesDescription) are at most 64 characters


@dataclass(frozen=True)
class SegmentCode:
    """What a label value means: the segment's label, its SNOMED CT concept and a display colour (RGB)."""

    label: str
    sct_value: str
    sct_meaning: str
    rgb: tuple[int, int, int]


# DICOM's cardiac structure segmentation context group (CID 7152) codes the ventricles, not their cavities;
# the cavity segments use the ventricle concept and say "cavity" in their label. The myocardium has its own
# concept. Codes as listed in pydicom's SNOMED CT dictionary (codes.SCT.LeftVentricle etc.).
SEGMENTS: Mapping[int, SegmentCode] = {
    1: SegmentCode("LV cavity", "87878005", "Left ventricle", (220, 40, 40)),
    2: SegmentCode("LV myocardium", "49848007", "Left ventricle myocardium", (40, 180, 60)),
    3: SegmentCode("RV cavity", "53085002", "Right ventricle", (50, 90, 230)),
}
ANATOMICAL_STRUCTURE = ("91723000", "Anatomical Structure")  # SNOMED CT segmented property category


def seg_destination(mask_path: str | Path, *, cine: bool) -> Path:
    """Where the SEG of a mask goes: ``NAME_seg.dcm`` for a 3D series, the folder ``NAME_seg/`` for a cine."""
    mask_path = Path(mask_path)
    stem = next((mask_path.name[:-len(e)] for e in (".nii.gz", ".nii") if mask_path.name.endswith(e)), mask_path.stem)
    return mask_path.with_name(stem + SEG_SUFFIX + ("" if cine else SEG_FILE_EXTENSION))


def seg_output_exists(mask_path: str | Path) -> bool:
    """True when a finished SEG (file or per-phase folder) exists for the mask at ``mask_path``."""
    return seg_destination(mask_path, cine=False).is_file() or seg_destination(mask_path, cine=True).is_dir()


def write_dicom_seg(mask: np.ndarray, source_files: Mapping[tuple[int, int], Path], destination: str | Path, *,
                    phase_notes: Mapping[int, str] | None = None, software_version: str = "") -> list[Path]:
    """Write ``mask`` as DICOM-SEG referencing the images it was predicted from; returns the files written.

    Args:
        mask: uint8 labels (0 background, 1 LV cavity, 2 LV myocardium, 3 RV cavity) in the array order of
            :func:`autocmr.io.dicom.read_dicom_series`: ``(z, rows, columns)`` for a 3D series or
            ``(t, z, rows, columns)`` for a cine.
        source_files: ``(z, t) -> DICOM file`` as given by ``DicomVolume.files``.
        destination: a ``.dcm`` file for a 3D series, a folder for a cine (one ``phase_NN.dcm`` per phase);
            see :func:`seg_destination`. Written atomically: a folder appears complete or not at all.
        phase_notes: optional text per phase index, added to that instance's ContentDescription.
        software_version: recorded in SoftwareVersions.

    Raises:
        InputFileError: a source file cannot be read, or the mask does not match the series.
    """
    frames = mask[None] if mask.ndim == 3 else mask
    destination = Path(destination)
    _check_mask(frames, source_files, destination)
    with lenient_pydicom_writing():
        headers = read_source_headers(source_files)
        common = _series_constants(headers, software_version)
        present = sorted({z for z, _ in source_files})  # a slice missing from the series has no image to refer to
        datasets = [_phase_segmentation(frames[t][present], [headers[(z, t)] for z in present], t,
                                        frames.shape[0], (phase_notes or {}).get(t, ""), common)
                    for t in range(frames.shape[0])]
        _remove_stale_temporaries(destination)
        if mask.ndim == 3:
            with atomic_path(destination) as tmp:
                datasets[0].save_as(tmp, enforce_file_format=True)
            return [destination]
        return _write_folder(datasets, destination)


def write_seg_for_series(mask: np.ndarray, dicom_files: Sequence[Path], mask_path: str | Path, *,
                         phase_notes: Mapping[int, str] | None = None) -> list[Path]:
    """:func:`write_dicom_seg` for a mask predicted from the series made of ``dicom_files``, written beside
    ``mask_path`` (see :func:`seg_destination`). The series' headers are read again for its (slice, phase) ->
    file map (no pixel data).
    """
    from autocmr import __version__
    from autocmr.io.dicom import read_dicom_layout

    volume = read_dicom_layout(dicom_files)
    if len(set(volume.files.values())) < len(volume.files):
        folder = Path(os.path.commonpath([Path(f).parent for f in dicom_files]))
        raise InputFileError(folder, "DICOM-SEG on the frames of enhanced multi-frame files is not written yet "
                                     "(autocmr_predict writes a NIfTI mask for them)")
    if volume.shape != mask.shape:
        folder = Path(os.path.commonpath([Path(f).parent for f in dicom_files]))
        raise InputFileError(folder, f"series reads as {volume.shape} but the mask is {mask.shape} (files "
                                     "changed during the run?)")
    return write_dicom_seg(mask, volume.files, seg_destination(mask_path, cine=volume.is_cine),
                           phase_notes=phase_notes, software_version=__version__)


def _check_mask(frames: np.ndarray, source_files: Mapping[tuple[int, int], Path], destination: Path) -> None:
    n_t, n_z = frames.shape[:2]
    slices = {z for z, _ in source_files}  # a slice missing from a stack has no images (autocmr.io.dicom)
    expected = {(z, t) for z in slices for t in range(n_t)}
    # a stack's first and last slices always have images; only slices between them can be missing
    if set(source_files) != expected or not slices <= set(range(n_z)) or not {0, n_z - 1} <= slices:
        raise InputFileError(destination, f"mask of {n_z} slices x {n_t} phases does not match the source series "
                                          f"({len(source_files)} images)")
    unreferenced = sorted(set(range(n_z)) - slices)
    if unreferenced and frames[:, unreferenced].any():
        raise InputFileError(destination, f"mask holds labels on slice(s) {unreferenced}, which no image of the "
                                          "series fills (missing slices): a DICOM-SEG cannot refer to them")
    values = np.unique(frames)
    unknown = [int(v) for v in values if v != 0 and int(v) not in SEGMENTS]
    if unknown:
        raise InputFileError(destination, f"mask holds label value(s) {unknown}; DICOM-SEG output knows "
                                          f"{sorted(SEGMENTS)}")


@dataclass(frozen=True)
class _SeriesConstants:
    series_uid: str
    series_number: int
    software_version: str
    descriptions: tuple  # highdicom SegmentDescription items, shared by every phase


def _series_constants(headers: Mapping[tuple[int, int], Dataset], software_version: str) -> _SeriesConstants:
    import highdicom as hd

    first = headers[min(headers)]  # (0, 0): the first slice always has images
    source_number = first.get("SeriesNumber")
    number = (int(source_number) if source_number not in (None, "") else 0) + SEG_SERIES_NUMBER_OFFSET
    version = software_version or "unknown"
    return _SeriesConstants(str(hd.UID()), number, version, _segment_descriptions(version))


def _segment_descriptions(version: str) -> tuple:
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.sr.coding import Code

    algorithm = hd.AlgorithmIdentificationSequence(name="autocmr", family=codes.DCM.ArtificialIntelligence,
                                                   version=version)
    category = Code(ANATOMICAL_STRUCTURE[0], "SCT", ANATOMICAL_STRUCTURE[1])
    return tuple(hd.seg.SegmentDescription(
        segment_number=value, segment_label=segment.label, segmented_property_category=category,
        segmented_property_type=Code(segment.sct_value, "SCT", segment.sct_meaning),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algorithm,
        display_color=hd.color.CIELabColor.from_rgb(*segment.rgb)) for value, segment in sorted(SEGMENTS.items()))


def _phase_segmentation(labels: np.ndarray, sources: Sequence[Dataset], phase: int, n_phases: int, note: str,
                        common: _SeriesConstants) -> Dataset:
    import highdicom as hd

    text = (f"autocmr, phase {phase + 1}/{n_phases}" if n_phases > 1 else "autocmr") + (f", {note}" if note else "")
    try:
        seg = hd.seg.Segmentation(
            source_images=_as_one_series(sources), pixel_array=np.ascontiguousarray(labels, dtype=np.uint8),
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=list(common.descriptions),
            series_instance_uid=common.series_uid, series_number=common.series_number,
            sop_instance_uid=str(hd.UID()), instance_number=phase + 1, manufacturer="autocmr",
            manufacturer_model_name="autocmr", software_versions=common.software_version,
            device_serial_number="none", content_label=SEG_CONTENT_LABEL, content_description=text[:MAX_LO_CHARS],
            series_description="autocmr segmentation", omit_empty_frames=bool(labels.any()))
    except (ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:
        # highdicom checks the source headers its own way; what the repairs of autocmr.io.dicom_seg_sources do
        # not cover would otherwise surface as a bare library error naming no file
        folder = Path(os.path.commonpath([str(Path(ds.filename).parent) for ds in sources]))
        which = f"the DICOM-SEG of phase {phase + 1}" if n_phases > 1 else "the DICOM-SEG"
        raise InputFileError(folder, f"highdicom cannot build {which} from series {sources[0].SeriesInstanceUID} "
                                     f"({type(exc).__name__}: {exc})") from exc
    _reference_true_series(seg, sources)
    return seg


def _as_one_series(sources: Sequence[Dataset]) -> list[Dataset]:
    """The sources, as copies sharing the first one's SeriesInstanceUID when a stack joined from single-slice
    series (:mod:`autocmr.io.dicom_stacks`) spans several: highdicom builds a SEG from one series' images
    only, and refers to images by SOP instance everywhere except in the series list that
    :func:`_reference_true_series` rewrites afterwards."""
    uids = {str(ds.SeriesInstanceUID) for ds in sources}
    if len(uids) <= 1:
        return list(sources)
    first = str(sources[0].SeriesInstanceUID)
    copies = []
    for ds in sources:
        copy = deepcopy(ds)  # headers without pixels: small; Dataset(ds) would share the element dict
        copy.SeriesInstanceUID = first
        copies.append(copy)
    return copies


def _reference_true_series(seg: Dataset, sources: Sequence[Dataset]) -> None:
    """List every referenced image under its own series (ReferencedSeriesSequence)."""
    series_of = {str(ds.SOPInstanceUID): str(ds.SeriesInstanceUID) for ds in sources}
    if len(set(series_of.values())) <= 1:
        return
    grouped: dict[str, list[Dataset]] = {}
    for item in seg.ReferencedSeriesSequence:
        for ref in item.ReferencedInstanceSequence:
            grouped.setdefault(series_of.get(str(ref.ReferencedSOPInstanceUID), str(item.SeriesInstanceUID)),
                               []).append(ref)
    items = []
    for uid, refs in grouped.items():
        item = Dataset()
        item.SeriesInstanceUID = uid
        item.ReferencedInstanceSequence = refs
        items.append(item)
    seg.ReferencedSeriesSequence = items


def _write_folder(datasets: Sequence[Dataset], destination: Path) -> list[Path]:
    """Write one file per phase into a temporary folder, then swap it in for ``destination``."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(destination)
    tmp.mkdir()
    try:
        names = [f"phase_{t:02d}{SEG_FILE_EXTENSION}" for t in range(len(datasets))]
        for name, ds in zip(names, datasets):
            ds.save_as(tmp / name, enforce_file_format=True)
        old = temporary_sibling(destination) if destination.exists() else None
        if old is not None:
            os.replace(destination, old)  # a directory cannot replace a non-empty one: move it aside first
        os.replace(tmp, destination)
        if old is not None and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        elif old is not None:
            old.unlink()
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return [destination / name for name in names]


def _remove_stale_temporaries(destination: Path) -> None:
    """Temporaries an interrupted run left for this destination (``.tmp_<hex>_NAME_seg[.dcm]``)."""
    if not destination.parent.is_dir():
        return
    for item in destination.parent.glob(f"{TEMP_PREFIX}*"):
        if temporary_target(item.name) != destination.name:  # not another case's (A_P1_seg ends in P1_seg)
            continue
        if item.is_dir():
            shutil.rmtree(item, ignore_errors=True)
        else:
            item.unlink(missing_ok=True)


__all__ = ["OUTPUT_FORMATS", "SEGMENTS", "SegmentCode", "seg_destination", "seg_output_exists", "write_dicom_seg",
           "write_seg_for_series"]
