"""Helpers shared by several test files (small phantom cases, synthetic DICOM series)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from autocmr.io.image import Geometry
from autocmr.testing.phantoms import PhantomCase, make_phantom_case, sample_geometry

SMALL_FOV_MM = 120.0
SMALL_SLICES = 5  # fewer slices than a real stack: the network cost is per slice


def small_case(seed: int, *, oblique: bool = False, slices: int = SMALL_SLICES, phase: float = 0.0) -> PhantomCase:
    rng = np.random.default_rng(seed)
    g = sample_geometry(rng, fov_mm=SMALL_FOV_MM, oblique=oblique)
    geometry = Geometry(g.size[:2] + (slices,), g.spacing, g.origin, g.direction)
    return make_phantom_case(rng, phase=phase, geometry=geometry)


def dicom_dataset(sop_class: str) -> Dataset:
    """An empty DICOM object of ``sop_class`` with its file meta and a new instance UID."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    return ds


def write_dicom_series(folder: Path, frames: np.ndarray, *, series_number: int = 5,
                       description: str | None = "sax cine",
                       pixel_spacing: tuple[float, float] = (1.8, 1.8), slice_gap: float = 10.0,
                       origin: tuple[float, float, float] = (-50.0, -60.0, 20.0), time_step: float = 40.0,
                       rotation: np.ndarray | None = None, attributes: dict[str, Any] | None = None,
                       shuffle_names: int | None = None) -> str:
    """Write ``frames`` (t, z, y, x), int16, as one single-frame DICOM file per image; returns the series UID.

    ``rotation``'s columns are the row direction, the column direction and the slice normal (default the
    identity: rows along patient x, columns along y, slices along z, an axial-like stack). ``attributes`` are
    set on every file (study, patient, frame of reference...). ``shuffle_names`` (a seed) gives the files
    shuffled names, so that readers cannot rely on their order.
    """
    uid = generate_uid()
    n_t, n_z, rows, cols = frames.shape
    rotation = np.eye(3) if rotation is None else np.asarray(rotation, dtype=float)
    names = (np.random.default_rng(shuffle_names).permutation(n_t * n_z) if shuffle_names is not None else None)
    folder.mkdir(parents=True, exist_ok=True)
    for z in range(n_z):
        for t in range(n_t):
            ds = dicom_dataset(MRImageStorage)
            ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber = "MR", uid, series_number
            if description is not None:  # None: no SeriesDescription (outputs are then named without it)
                ds.SeriesDescription = description
            for key, value in (attributes or {}).items():
                setattr(ds, key, value)
            ds.InstanceNumber = z * n_t + t + 1
            position = np.asarray(origin, dtype=float) + z * slice_gap * rotation[:, 2]
            ds.ImagePositionPatient = [f"{v:.10g}" for v in position]
            ds.ImageOrientationPatient = [f"{v:.10g}" for v in np.concatenate([rotation[:, 0], rotation[:, 1]])]
            ds.PixelSpacing = [f"{v:.6g}" for v in pixel_spacing]
            ds.SliceThickness = f"{slice_gap:.6g}"
            ds.TriggerTime = f"{t * time_step:.6g}"
            ds.Rows, ds.Columns = rows, cols
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
            ds.PixelData = np.ascontiguousarray(frames[t, z], dtype="<i2").tobytes()
            name = (f"IM{names[z * n_t + t]:03d}.dcm" if names is not None
                    else f"IM_{series_number}_{z * n_t + t:04d}.dcm")
            ds.save_as(folder / name, enforce_file_format=True)
    return uid


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.startswith(".tmp_")]
