"""NIfTI (and any SimpleITK-readable) image I/O that keeps the exact geometry of each file.

Arrays are in numpy order: ``(z, y, x)`` for 3D and ``(t, z, y, x)`` for 4D cine. :class:`Geometry`
stores spacing, origin and direction in SimpleITK (x, y, z[, t]) order so a mask can be written back with
the input's exact header.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from autocmr.errors import InputFileError
from autocmr.io.atomic import atomic_path

logger = logging.getLogger(__name__)

# Geometry comparisons: values closer than this are considered equal (mm and direction cosines).
DEFAULT_GEOMETRY_TOLERANCE = 1e-3
# A direction matrix D passes as a rotation when D D^T is the identity within this (MHA/NRRD headers written
# with three decimals pass, up to 1.5e-3; a shear of a few percent does not)
DIRECTION_ORTHONORMAL_TOLERANCE = 2e-3
# File endings of the image files autocmr reads besides DICOM (SimpleITK reads them all)
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".mha", ".nrrd")


@dataclass(frozen=True)
class Geometry:
    """Physical geometry of an image in SimpleITK order (x, y, z[, t])."""

    size: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]  # row-major, dim*dim values

    @property
    def dim(self) -> int:
        return len(self.size)

    @property
    def shape(self) -> tuple[int, ...]:
        """Array shape in numpy order."""
        return tuple(reversed(self.size))

    @property
    def spacing_zyx(self) -> tuple[float, ...]:
        """Spacing in numpy order (matches :attr:`shape`)."""
        return tuple(reversed(self.spacing))

    def direction_matrix(self) -> np.ndarray:
        return np.asarray(self.direction, dtype=float).reshape(self.dim, self.dim)

    @classmethod
    def of(cls, image: sitk.Image) -> "Geometry":
        return cls(
            size=tuple(int(v) for v in image.GetSize()),
            spacing=tuple(float(v) for v in image.GetSpacing()),
            origin=tuple(float(v) for v in image.GetOrigin()),
            direction=tuple(float(v) for v in image.GetDirection()),
        )

    def apply_to(self, image: sitk.Image) -> sitk.Image:
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    def spatial(self) -> "Geometry":
        """The 3D part of a 4D geometry (time axis dropped); a 3D geometry is returned unchanged."""
        if self.dim == 3:
            return self
        if self.dim != 4:
            raise ValueError(f"spatial() expects a 3D or 4D geometry, got {self.dim}D")
        d = self.direction_matrix()[:3, :3]
        return Geometry(self.size[:3], self.spacing[:3], self.origin[:3], tuple(d.ravel().tolist()))

    def differences(self, other: "Geometry", tol: float = DEFAULT_GEOMETRY_TOLERANCE) -> list[str]:
        """Human-readable list of what differs between two geometries (empty when they match)."""
        problems: list[str] = []
        if self.size != other.size:
            problems.append(f"size {self.size} vs {other.size}")
            return problems
        for name in ("spacing", "origin", "direction"):
            a, b = np.asarray(getattr(self, name)), np.asarray(getattr(other, name))
            scale = 1.0 if name == "direction" else max(1.0, float(np.abs(a).max(initial=0.0)))
            if a.shape != b.shape or not np.allclose(a, b, atol=tol * scale, rtol=0):
                problems.append(f"{name} {tuple(np.round(a, 4).tolist())} vs {tuple(np.round(b, 4).tolist())}")
        return problems

    def to_dict(self) -> dict[str, Any]:
        return {"size": list(self.size), "spacing": list(self.spacing), "origin": list(self.origin),
                "direction": list(self.direction)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Geometry":
        return cls(tuple(int(v) for v in d["size"]), tuple(float(v) for v in d["spacing"]),
                   tuple(float(v) for v in d["origin"]), tuple(float(v) for v in d["direction"]))


def _reader(path: Path) -> sitk.ImageFileReader:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    # ITK prints warnings such as "unexpected scales in sform" for many clinical NIfTI files (all of
    # ACDC); they are harmless for us and would drown the logs. Errors still raise.
    reader.SetGlobalWarningDisplay(False)
    return reader


def read_header(path: str | Path) -> Geometry:
    """Read only the geometry of an image file (fast: no pixel data)."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, "file does not exist")
    _check_nifti_voxel_size(path)
    reader = _reader(path)
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        return _nifti_fallback(path, exc, header_only=True)[1]  # type: ignore[index]
    geometry = _as_read(Geometry(
        size=tuple(int(v) for v in reader.GetSize()),
        spacing=tuple(float(v) for v in reader.GetSpacing()),
        origin=tuple(float(v) for v in reader.GetOrigin()),
        direction=tuple(float(v) for v in reader.GetDirection()),
    ))
    _check_spacing(path, geometry)
    _check_direction(path, geometry)
    return geometry


def _check_direction(path: Path, geometry: Geometry) -> None:
    """Refuse a direction matrix that is not a rotation (MHA and NRRD store any matrix): a sheared grid would be
    written back on another, orthogonal one (the NIfTI writer coerces it), a singular one places nothing. NIfTI
    headers are checked by their own rules (:mod:`autocmr.io.nifti`), which ITK's reader applies too."""
    d = geometry.direction_matrix()
    spatial = d[:3, :3] if geometry.dim >= 3 else d
    if not np.isfinite(d).all() or np.abs(spatial @ spatial.T - np.eye(len(spatial))).max() > \
            DIRECTION_ORTHONORMAL_TOLERANCE:
        shown = " ".join(f"{v:.4g}" for v in spatial.ravel())
        raise InputFileError(path, f"its direction matrix ({shown}) is not a rotation (columns not unit vectors "
                                   "at right angles: a sheared or singular grid); a mask could not be written "
                                   "on the same grid. Resample the image to an orthogonal grid first")
    if geometry.dim == 4 and not (np.allclose(d[3, :3], 0.0) and np.allclose(d[:3, 3], 0.0)):
        raise InputFileError(path, "its direction couples the time axis with space; a cine's 4th axis must be "
                                   "time alone")


def _as_read(header: Geometry) -> Geometry:
    """The geometry ITK's full read gives for a header: a negative spacing (MetaImage allows one) becomes
    positive with that axis's direction column negated, so the header-only and the full read agree."""
    negative = [i for i, v in enumerate(header.spacing) if v < 0]
    if not negative:
        return header
    dim = header.dim
    direction = np.asarray(header.direction, float).reshape(dim, dim)
    direction[:, negative] *= -1
    return Geometry(header.size, tuple(abs(v) for v in header.spacing), header.origin,
                    tuple(float(v) for v in direction.ravel()))


def _check_spacing(path: Path, geometry: Geometry) -> None:
    """Refuse a voxel size of 0 or not a number along an axis of more than one voxel (MHA, NRRD): no volume
    could be measured. (NIfTI is checked on its raw header before ITK, which reads such a pixdim as 1 mm.)"""
    # spatial axes only: a cine's time step is not a voxel size, and a 4th axis of 0 s measures nothing
    for axis, (n, value) in enumerate(zip(geometry.size[:3], geometry.spacing[:3])):
        if n > 1 and not (np.isfinite(value) and value > 0):
            raise InputFileError(path, f"the voxel size along {'xyz'[axis]} ({n} voxels) reads {value} (missing, "
                                       "0 or not a number in the header): the voxel size is unknown, so no volume "
                                       "can be measured; write the voxel size into the header")


def read_sitk(path: str | Path) -> sitk.Image:
    """Read an image with SimpleITK; NIfTI files ITK refuses are read with nibabel (:mod:`autocmr.io.nifti`).

    NaN and inf stored in a floating-point NIfTI file are kept (ITK's reader turns them into 0, which would
    hide bad input from every check downstream).
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, "file does not exist")
    _check_nifti_voxel_size(path)
    try:
        image = _reader(path).Execute()
    except RuntimeError as exc:
        if not _is_nifti(path):
            raise _read_failure(path, exc) from exc
        array, geometry = _nifti_fallback(path, exc, header_only=False)
        return to_sitk(array, geometry)  # type: ignore[arg-type]
    if image.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64) and _is_nifti(path):
        image = _restore_nonfinite(image, path)
    if not _is_nifti(path):
        _check_direction(path, Geometry.of(image))
    return image


# header keys that give the voxel size: MetaImage (.mha/.mhd) and NRRD (.nrrd/.nhdr); without any, ITK reads 1 mm
_VOXEL_SIZE_KEYS = {".mha": ("ElementSpacing", "ElementSize"), ".mhd": ("ElementSpacing", "ElementSize"),
                    ".nrrd": ("spacings", "space directions"), ".nhdr": ("spacings", "space directions")}
_TEXT_HEADER_BYTES = 65536


def _check_declared_voxel_size(path: Path) -> None:
    """Refuse an MHA/NRRD file whose header gives no voxel size: ITK reads it as 1 mm without a word, and every
    volume and the resampling to the model's spacing would be wrong."""
    keys = _VOXEL_SIZE_KEYS.get(path.suffix.lower())
    if keys is None:
        return
    with path.open("rb") as fh:
        text = fh.read(_TEXT_HEADER_BYTES).decode("latin-1")
    found = set()
    for line in text.splitlines():
        if path.suffix.lower() in (".nrrd", ".nhdr") and not line.strip():
            break  # NRRD: a blank line ends the header
        key = line.split("=" if ":" not in line.split("=")[0] else ":", 1)[0].strip()
        found.add(key)
        if key == "ElementDataFile":
            break  # MetaImage: the last header line
    recognised = "NDims" in found or "DimSize" in found or text.startswith("NRRD")
    if recognised and not found.intersection(keys):  # else not a header ITK can read: its reader says why
        raise InputFileError(path, f"the header gives no voxel size (no {' or '.join(keys)}): ITK would take 1 mm, "
                                   "so no volume could be trusted; write the voxel size into the header")


def _check_nifti_voxel_size(path: Path) -> None:
    """ITK reads a NIfTI voxel size of 0 as 1 mm without a word; refuse it first (:mod:`autocmr.io.nifti`).
    A header nibabel cannot read is left to ITK's reader and its fallback, which say why. MHA/NRRD headers
    without a voxel size are refused here too."""
    if not _is_nifti(path):
        _check_declared_voxel_size(path)
        return
    from autocmr.io import nifti

    try:
        header = nifti.load_header(path)
    except InputFileError:
        return
    nifti.check_voxel_size(header, path)


def _read_failure(path: Path, exc: RuntimeError) -> InputFileError:
    """Why ITK could not read a (non-NIfTI) image, as precisely as its header tells: a bad voxel size names
    the axis; a readable header with unreadable voxels is a truncated or corrupt file (ITK then reports
    the last system error, often a misleading "No such file or directory")."""
    try:
        geometry = read_header(path)
    except InputFileError as header_exc:
        return header_exc
    except RuntimeError:
        return InputFileError(path, f"cannot read image ({_first_line(exc)})")
    reason = _first_line(exc)
    itk = "" if "No such file or directory" in reason else f"; ITK: {reason}"
    size = "x".join(str(v) for v in geometry.size)
    return InputFileError(path, f"the voxel data cannot be read: the file is truncated or corrupt (its header "
                                f"describes {size} voxels, {path.stat().st_size} bytes on disk{itk})")


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith((".nii", ".nii.gz"))


def _nifti_fallback(path: Path, exc: RuntimeError, *, header_only: bool) -> tuple[np.ndarray | None, Geometry]:
    """Read a NIfTI file that ITK refused (NIfTI-2, sform a little off orthonormal) with nibabel."""
    what = "image header" if header_only else "image"
    if not _is_nifti(path):
        raise InputFileError(path, f"cannot read {what} ({_first_line(exc)})") from exc
    from autocmr.io import nifti

    try:
        if header_only:
            found, array = nifti.read_nifti_header(path), None
        else:
            array, found = nifti.read_nifti(path)
    except InputFileError as fallback_exc:
        raise InputFileError(path, f"cannot read {what} (ITK: {_first_line(exc)}; nibabel: "
                                   f"{fallback_exc.reason})") from exc
    if note := found.note(path):
        logger.warning("%s", note)
    else:
        logger.info("%s: read with nibabel (ITK: %s)", path, _first_line(exc))
    return array, found.geometry


def _restore_nonfinite(image: sitk.Image, path: Path) -> sitk.Image:
    from autocmr.io import nifti

    array = sitk.GetArrayViewFromImage(image)
    try:
        stand_in = nifti.itk_nonfinite_stand_in(path)  # 0, or scl_inter for a scaled file
        if not np.any(array == stand_in):  # no voxel holds what ITK puts where NaN was stored: nothing hidden
            return image
        stored = nifti.stored_voxels_if_nonfinite(path)
    except (InputFileError, OSError, EOFError, ValueError):  # nibabel cannot read what ITK could: keep ITK's
        return image
    if stored is None or stored.shape != array.shape:
        return image
    restored = sitk.GetImageFromArray(stored.astype(array.dtype, copy=False), isVector=False)
    restored.CopyInformation(image)
    return restored


def read_image(path: str | Path, dtype: Any = None) -> tuple[np.ndarray, Geometry]:
    """Read an image as a numpy array (numpy axis order) and its geometry.

    Multi-component (vector) images are rejected: autocmr expects one channel per file.
    """
    image = read_sitk(path)
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputFileError(path, f"has {image.GetNumberOfComponentsPerPixel()} components per voxel; "
                                   "expected a scalar image (one channel per file)")
    array = sitk.GetArrayFromImage(image)
    if dtype is not None:
        array = array.astype(dtype, copy=False)
    return array, Geometry.of(image)


def to_sitk(array: np.ndarray, geometry: Geometry) -> sitk.Image:
    if tuple(array.shape) != geometry.shape:
        raise ValueError(f"array shape {array.shape} does not match geometry shape {geometry.shape}")
    image = sitk.GetImageFromArray(array, isVector=False)
    return geometry.apply_to(image)


def write_image(array: np.ndarray, geometry: Geometry, path: str | Path, *, compress: bool = True) -> None:
    """Write ``array`` with ``geometry`` to ``path`` atomically (temporary name, then rename)."""
    write_sitk(to_sitk(np.ascontiguousarray(array), geometry), path, compress=compress)


def write_sitk(image: sitk.Image, path: str | Path, *, compress: bool = True) -> None:
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), compress)


def _first_line(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    # ITK's messages start with file/line noise; its "ITK ERROR:" line, else the last one, carries the reason
    # (a message may end with a matrix printed after the reason)
    flagged = [ln.split("ITK ERROR:", 1)[1].strip() for ln in lines if "ITK ERROR:" in ln]
    if flagged and flagged[-1]:
        return flagged[-1]
    return lines[-1] if lines else type(exc).__name__
