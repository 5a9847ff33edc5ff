"""Load one case (all channels, optional label) into canonical numpy order, with its geometry."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from autocmr.errors import InputFileError
from autocmr.io.completeness import check_complete
from autocmr.io.image import Geometry, read_image
from autocmr.io.orientation import Reorientation, canonical_reorientation
from autocmr.io.validity import check_voxels


@dataclass(frozen=True)
class LoadedCase:
    data: np.ndarray  # float32 (c, z, y, x), canonical order
    seg: np.ndarray | None  # int16 (z, y, x), canonical order
    spacing: tuple[float, float, float]  # canonical numpy order
    geometry: Geometry  # of the stored files (needed to write results back)
    reorientation: Reorientation


def _read_3d(path: Path) -> tuple[np.ndarray, Geometry]:
    check_complete(path)  # ITK reads a truncated NIfTI with zeros for what is missing: never training data
    array, geometry = read_image(path)
    if geometry.dim == 4 and geometry.size[3] == 1:
        array, geometry = array[0], geometry.spatial()
    if geometry.dim == 2:
        raise InputFileError(path, "is a 2D image, but a 3D volume is expected: store a single slice as a 3D image "
                                   "of one slice (shape x, y, 1, e.g. nibabel's img.slicer or numpy's a[..., None]); "
                                   "autocmr keeps such a slice's axis first and plans it as 2D")
    if geometry.dim != 3:
        detail = f"{geometry.size[3]} frames" if geometry.dim == 4 else f"{geometry.dim}D"
        raise InputFileError(path, f"is {detail} but a 3D volume is expected here (4D cine files are accepted by "
                                   "autocmr_predict; for training, convert ED/ES frames to 3D cases)")
    return array, geometry


def load_case(image_files: Sequence[str | Path], label_file: str | Path | None = None,
              *, tolerance: float = 1e-3) -> LoadedCase:
    """Read channels (and label), check they share one geometry, and bring them to canonical order."""
    arrays, geometry = [], None
    for f in image_files:
        array, g = _read_3d(Path(f))
        check_voxels(array, f)  # NaN/inf and constant images are refused (autocmr.io.validity)
        if geometry is None:
            geometry = g
        elif problems := geometry.differences(g, tolerance):
            raise InputFileError(f, f"geometry differs from channel 0 ({'; '.join(problems)})")
        arrays.append(array.astype(np.float32, copy=False))
    if geometry is None:
        raise ValueError("load_case needs at least one image file")
    reo = canonical_reorientation(geometry)
    data = np.ascontiguousarray(reo.apply(np.stack(arrays)))
    seg = None
    if label_file is not None:
        label, lg = _read_3d(Path(label_file))
        if problems := geometry.differences(lg, tolerance):
            raise InputFileError(label_file, f"label geometry differs from the image ({'; '.join(problems)})")
        if label.dtype.kind == "f" and not np.array_equal(label, np.round(label)):
            raise InputFileError(label_file, "label map has non-integer values")
        seg = np.ascontiguousarray(reo.apply(label.astype(np.int16)))
    return LoadedCase(data, seg, reo.spacing(geometry.spacing_zyx), geometry, reo)
