"""Helpers shared by several test files (small phantom cases, synthetic DICOM series)."""
from __future__ import annotations

from pathlib import Path

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


def write_dicom_series(folder: Path, frames: np.ndarray, *, series_number: int = 5, description: str = "sax cine",
                       pixel_spacing: tuple[float, float] = (1.8, 1.8), slice_gap: float = 10.0,
                       origin: tuple[float, float, float] = (-50.0, -60.0, 20.0), time_step: float = 40.0) -> str:
    """Write ``frames`` (t, z, y, x), int16, as one single-frame DICOM file per image; returns the series UID.

    Rows run along patient y, columns along x, slices along z (an axial-like stack; enough to place it).
    """
    uid = generate_uid()
    n_t, n_z, rows, cols = frames.shape
    folder.mkdir(parents=True, exist_ok=True)
    for z in range(n_z):
        for t in range(n_t):
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MRImageStorage, generate_uid()
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds = Dataset()
            ds.file_meta = meta
            ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
            ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber = "MR", uid, series_number
            ds.SeriesDescription = description
            ds.InstanceNumber = z * n_t + t + 1
            ds.ImagePositionPatient = [f"{v:.6g}" for v in (origin[0], origin[1], origin[2] + z * slice_gap)]
            ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
            ds.PixelSpacing = [f"{v:.6g}" for v in pixel_spacing]
            ds.SliceThickness = f"{slice_gap:.6g}"
            ds.TriggerTime = f"{t * time_step:.6g}"
            ds.Rows, ds.Columns = rows, cols
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
            ds.PixelData = np.ascontiguousarray(frames[t, z], dtype="<i2").tobytes()
            ds.save_as(folder / f"IM_{series_number}_{z * n_t + t:04d}.dcm", enforce_file_format=True)
    return uid


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.startswith(".tmp_")]
