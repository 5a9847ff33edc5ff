"""Convert a Sunnybrook Cardiac Data study (cine DICOM + manual LV contours) into an autocmr raw dataset.

Study layout (Radau et al., MIDAS Journal 2009; CC0)::

    STUDY/dicom/N.dcm                                       one image per file, N = instance number
    STUDY/contours/i-contours/IM-0001-NNNN-icontour-manual.txt   endocardium of image N = int(NNNN)
    STUDY/contours/o-contours/IM-0001-NNNN-ocontour-manual.txt   epicardium

Only the LV is annotated, and only on a few images (the epicardium on fewer than the endocardium), so each
image with BOTH contours becomes one case: a single-slice 3D volume (1 x H x W) in the geometry of that
slice (its IPP/IOP and pixel spacing; the slice thickness is the series' slice gap), labelled
1 = LV cavity (inside the endocardium) and 2 = myocardium (inside the epicardium, outside the endocardium).

Contour convention: each line is ``x y`` in pixel units with x = column and y = row, and integer values
at pixel centres (the DICOM/scikit-image convention). A pixel is labelled when its centre lies inside the
polygon (:func:`skimage.draw.polygon2mask`). On this study the epicardial contours lie on the strongest
image edge with no offset, while a half-pixel shift (pixel-corner convention) fits worse.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from skimage.draw import polygon2mask

from autocmr.dataset.converters.common import (
    ConversionProblem, convert_staged, finish_dataset, problems_of, settle_problems, summarize_dataset)
from autocmr.dataset.labels import LV, MYO
from autocmr.dataset.naming import make_dataset_name
from autocmr.dataset.raw import DatasetJson
from autocmr.errors import DatasetError, InputFileError
from autocmr.io.dicom import DicomVolume, read_dicom_series
from autocmr.io.image import Geometry, write_image

logger = logging.getLogger(__name__)

SUNNYBROOK_LABELS: dict[str, int] = {"background": 0, "LV": LV, "MYO": MYO}
# Acquisition facts of the Sunnybrook Cardiac Data (all studies: GE Signa 1.5 T, Sunnybrook HSC, Toronto).
VENDOR, FIELD_STRENGTH, CENTRE = "GE", "1.5T", "Sunnybrook"
CITATION = "Radau et al., Evaluation Framework for Algorithms Segmenting Short Axis Cardiac MRI, MIDAS J. 2009"
_CONTOUR_FILE = re.compile(r"^IM-\d{4}-(\d{4})-([io])contour-manual\.txt$")
# Fewer points cannot enclose an area.
MIN_CONTOUR_POINTS = 3
# Endocardium outside the epicardium beyond this fraction of its area means mismatched contour files.
MAX_ENDO_OUTSIDE_EPI_FRACTION = 0.02


@dataclass(frozen=True)
class _Annotated:
    image_number: int
    z: int
    t: int
    endo: Path
    epi: Path | None


def sunnybrook_cine(study_dir: str | Path) -> DicomVolume:
    """The study's whole cine as a 4D :class:`DicomVolume` (t, z, y, x)."""
    return read_dicom_series(Path(study_dir) / "dicom")


def read_contour(path: str | Path, image_shape: tuple[int, int]) -> np.ndarray:
    """Points of a contour file as an ``(n, 2)`` array of (row, col) pixel coordinates.

    Raises InputFileError for unparsable files, fewer than 3 points, or points outside the image.
    """
    path = Path(path)
    try:
        xy = np.loadtxt(path, dtype=float, ndmin=2)
    except ValueError as exc:
        raise InputFileError(path, f"not a list of 'x y' points ({exc})") from exc
    if xy.shape[0] < MIN_CONTOUR_POINTS or xy.shape[1] != 2:
        raise InputFileError(path, f"expected at least {MIN_CONTOUR_POINTS} lines of 'x y', got shape {xy.shape}")
    rows, cols = image_shape
    # Half a pixel beyond the outer pixel centres is still on the image.
    if xy.min() < -0.5 or xy[:, 0].max() > cols - 0.5 or xy[:, 1].max() > rows - 0.5:
        raise InputFileError(path, f"points outside the {rows}x{cols} image: x in [{xy[:, 0].min()}, "
                                   f"{xy[:, 0].max()}], y in [{xy[:, 1].min()}, {xy[:, 1].max()}]")
    return xy[:, ::-1].copy()


def contour_mask(points_rc: np.ndarray, image_shape: tuple[int, int]) -> np.ndarray:
    """Boolean mask of the pixels whose centres lie inside the polygon ``points_rc`` (row, col)."""
    return polygon2mask(image_shape, points_rc)


def convert_sunnybrook(study_dir: str | Path, raw_root: str | Path | None, dataset_id: int = 130, *,
                       short_name: str = "Sunnybrook", overwrite: bool = False, strict: bool = False) -> Path:
    """Write the study's doubly-annotated images as ``raw_root/DatasetNNN_<short_name>``; returns it.

    Args:
        study_dir: the study folder (``dicom/`` and ``contours/``); its name is the subject id.
        raw_root: the raw root (``None``: flag > $AUTOCMR_RAW > default).
        dataset_id: nnU-Net style dataset id.
        short_name: the name part of ``DatasetNNN_Name``.
        overwrite: replace an existing dataset folder (only after the new conversion succeeded).
        strict: any problem fails the whole conversion and nothing is written.

    Every case is attempted. Images whose contours are bad (unreadable files, an endocardium outside the
    epicardium) are skipped, listed in one warning and in ``conversion_skipped.json``, and the rest is
    converted; with ``strict``, or when no image converted, the problems are raised together in one
    :class:`DatasetError` and nothing is written (see converters.common).
    """
    study_dir = Path(study_dir)
    name = make_dataset_name(dataset_id, short_name)

    def build(staging_root: Path) -> Path:
        folder = staging_root / name
        rows, problems = _write_cases(study_dir, folder)
        settle_problems(f"Sunnybrook conversion of {study_dir}", problems, folder, converted=len(rows), strict=strict)
        dj = DatasetJson({"0": "cineMRI"}, dict(SUNNYBROOK_LABELS), len(rows), ".nii.gz", short_name,
                         f"Sunnybrook Cardiac Data {study_dir.name}: single short-axis slices with manual LV "
                         f"cavity and myocardium (RV not annotated). {CITATION}")
        finish_dataset(folder, dj, rows)
        return folder

    folder = convert_staged(raw_root, name, build, overwrite=overwrite, sources=[study_dir])
    logger.info("Sunnybrook: %s", summarize_dataset(folder))
    return folder


def _write_cases(study_dir: Path, folder: Path) -> tuple[list[dict[str, Any]], list[ConversionProblem]]:
    """Write every image with both contours as a case; returns the cases.csv rows and the problems."""
    subject = study_dir.name
    volume = sunnybrook_cine(study_dir)
    annotated = _find_annotations(study_dir, volume)
    complete = [a for a in annotated if a.epi is not None]
    if not complete:
        raise DatasetError(f"{study_dir / 'contours'}: no image has both an i-contour and an o-contour")
    phase_names = _ed_es_phases(annotated, volume.array.shape[-2:], volume.geometry.spacing[:2])
    rows: list[dict[str, Any]] = []
    problems: list[ConversionProblem] = []
    for item in complete:
        case_id = f"{subject}_z{item.z:02d}_t{item.t:02d}"
        try:
            _write_case(volume, item, folder, case_id)
        except InputFileError as exc:
            problems.append(problems_of(exc, item.endo))
            continue
        rows.append({"case_id": case_id, "subject": subject, "phase": phase_names.get(item.t, ""),
                     "slice_index": item.z, "phase_index": item.t, "image_number": item.image_number,
                     "trigger_time_ms": _trigger_time(volume, item),
                     "vendor": VENDOR, "field_strength": FIELD_STRENGTH, "centre": CENTRE})
    logger.info("Sunnybrook %s: %d images with both contours, %d with the endocardium only", subject,
                len(complete), len(annotated) - len(complete))
    return rows, problems


def _find_annotations(study_dir: Path, volume: DicomVolume) -> list[_Annotated]:
    contours: dict[int, dict[str, Path]] = {}
    for kind in ("i", "o"):
        folder = study_dir / "contours" / f"{kind}-contours"
        if not folder.is_dir():
            raise DatasetError(f"{folder}: contour folder not found")
        for path in sorted(folder.iterdir()):
            match = _CONTOUR_FILE.match(path.name)
            if match:
                contours.setdefault(int(match.group(1)), {})[kind] = path
    where = {path.name: zt for zt, path in volume.files.items()}
    annotated = []
    for number, found in sorted(contours.items()):
        if "i" not in found:
            logger.warning("%s: epicardial contour without an endocardial one, skipped", found["o"])
            continue
        zt = where.get(f"{number}.dcm")
        if zt is None:
            raise DatasetError(f"{found['i']}: image {number}.dcm is not part of the series in {study_dir / 'dicom'}")
        annotated.append(_Annotated(number, zt[0], zt[1], found["i"], found.get("o")))
    return annotated


def _ed_es_phases(annotated: list[_Annotated], shape: tuple[int, int],
                  pixel_spacing: tuple[float, ...]) -> dict[int, str]:
    """Phase index -> "ED"/"ES": the annotated phases with the largest/smallest endocardial volume.

    Phases are compared over the slice locations annotated in all of them; with fewer than two phases (or
    no common location) nothing is derivable and the result is empty.
    """
    areas: dict[int, dict[int, float]] = {}
    pixel_area = float(pixel_spacing[0] * pixel_spacing[1])
    for item in annotated:
        try:
            mask = contour_mask(read_contour(item.endo, shape), shape)
        except InputFileError as exc:
            logger.warning("ED/ES: ignoring %s (%s)", item.endo, exc.reason)
            continue
        areas.setdefault(item.t, {})[item.z] = float(mask.sum()) * pixel_area
    if len(areas) < 2:
        return {}
    common = set.intersection(*(set(by_z) for by_z in areas.values()))
    if not common:
        return {}
    totals = {t: sum(by_z[z] for z in common) for t, by_z in areas.items()}
    ed, es = max(totals, key=totals.get), min(totals, key=totals.get)
    return {} if totals[ed] == totals[es] else {ed: "ED", es: "ES"}


def _write_case(volume: DicomVolume, item: _Annotated, folder: Path, case_id: str) -> None:
    image = volume.array[item.t, item.z]
    shape = image.shape
    endo = contour_mask(read_contour(item.endo, shape), shape)
    epi = contour_mask(read_contour(item.epi, shape), shape)
    outside = float((endo & ~epi).sum()) / max(1, int(endo.sum()))
    if outside > MAX_ENDO_OUTSIDE_EPI_FRACTION:
        raise InputFileError(item.endo, f"{outside:.1%} of the endocardium lies outside the epicardium "
                                        f"({item.epi.name}); contours do not match")
    label = np.zeros(shape, np.uint8)
    label[epi] = MYO
    label[endo] = LV
    geometry = _slice_geometry(volume, item)
    write_image(image[None], geometry, folder / "imagesTr" / f"{case_id}_0000.nii.gz")
    write_image(label[None], geometry, folder / "labelsTr" / f"{case_id}.nii.gz")


def _slice_geometry(volume: DicomVolume, item: _Annotated) -> Geometry:
    """One slice's own geometry: its IPP as origin, the series' direction, pixel spacing and slice gap."""
    path = volume.files[(item.z, item.t)]
    header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["ImagePositionPatient"])
    spatial = volume.geometry.spatial()
    return Geometry((spatial.size[0], spatial.size[1], 1), spatial.spacing,
                    tuple(float(v) for v in header.ImagePositionPatient), spatial.direction)


def _trigger_time(volume: DicomVolume, item: _Annotated) -> float:
    path = volume.files[(item.z, item.t)]
    header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["TriggerTime"])
    return float(header.get("TriggerTime", float("nan")))


__all__ = ["SUNNYBROOK_LABELS", "contour_mask", "convert_sunnybrook", "read_contour", "sunnybrook_cine"]
