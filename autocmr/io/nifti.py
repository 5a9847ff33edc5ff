"""NIfTI-1 and NIfTI-2 through nibabel: geometry by ITK's rule, a reader for what ITK refuses, masks that keep
the input's own header.

Which transform gives direction and origin (the rule of ITK 5.4's NIfTI reader, so a file both can read
gets the same geometry from both):

* spacing always comes from ``pixdim`` (scaled to mm and seconds by ``xyzt_units``); the sform of some
  files (all of ACDC: 1 mm columns, pixdim 1.5625 mm) carries wrong scales, pixdim carries the right ones;
* the sform (``sform_code > 0``) wins when its normalised columns are orthonormal and either the qform is
  absent, or ``sform_code`` is 1 (scanner), or both describe the same grid; otherwise the qform
  (``qform_code > 0``) is used; with neither, the image sits at the origin with identity direction;
* ITK refuses an sform whose columns are not orthonormal to 1e-4 when there is no qform. Scanners' exports
  (M&Ms vendor C) carry sforms off by ~1e-4 from rounding; autocmr replaces such a direction by its nearest
  rotation (polar decomposition) when the correction is at most :data:`SFORM_ORTHONORMAL_TOLERANCE`, and
  logs the correction (a warning that batch prediction records for the case).

NIfTI stores RAS+ coordinates, ITK and autocmr LPS: the first two rows of the matrix change sign.
"""
from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autocmr.errors import InputFileError
from autocmr.io.atomic import atomic_path
from autocmr.io.image import DEFAULT_GEOMETRY_TOLERANCE, Geometry

logger = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii", ".nii.gz")
# Largest change of a direction cosine autocmr accepts when it orthonormalises an sform (unitless). Rounding
# in scanner exports stays near 1e-4; a real shear (an affine registration output) is far larger.
SFORM_ORTHONORMAL_TOLERANCE = 1e-3
# ITK's own test (itkNiftiImageIO.cxx): R R^T equal to the identity within 1e-4; 1e-4 when comparing forms.
ITK_ORTHONORMAL_TOLERANCE = 1e-4
_SCANNER_ANAT = 1
# xyzt_units codes (nifti1.h) -> factor to millimetres / seconds, as ITK converts them.
_SPACE_UNITS = {1: 1000.0, 2: 1.0, 3: 0.001}
_TIME_UNITS = {8: 1.0, 16: 0.001, 24: 1e-6}
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


@dataclass(frozen=True)
class NiftiGeometry:
    """The geometry of a NIfTI file and where it came from (``qform``, ``sform`` or ``pixdim``)."""

    geometry: Geometry
    source: str
    correction: float = 0.0  # largest change made to a direction cosine when orthonormalising the sform

    def note(self, path: str | Path) -> str | None:
        if not self.correction:
            return None
        return (f"{path}: sform direction is not orthonormal (ITK refuses it); replaced by the nearest rotation, "
                f"largest change of a direction cosine {self.correction:.1e}")


def is_nifti(path: str | Path) -> bool:
    return Path(path).name.lower().endswith(NIFTI_SUFFIXES)


def _load(path: Path):
    import nibabel as nib

    try:
        image = nib.load(str(path))
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types for broken files; all mean "unreadable"
        raise InputFileError(path, f"cannot read NIfTI header ({type(exc).__name__}: {exc})") from exc
    if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InputFileError(path, f"not a NIfTI-1 or NIfTI-2 file (nibabel sees {type(image).__name__})")
    return image


def check_voxel_size(header, path: str | Path) -> None:
    """Refuse a spatial ``pixdim`` of 0 or not a number along an axis of more than one voxel: readers then
    take 1 mm (ITK and nibabel both), so every volume would be off by the true voxel size, silently. An axis
    of one voxel (a single slice) may carry any value: nothing is measured along it."""
    dims = [int(d) for d in header["dim"][1:4]]
    for axis, (n, value) in enumerate(zip(dims, header["pixdim"][1:4])):
        value = float(value)
        if n > 1 and not (np.isfinite(value) and value != 0):
            hint = ""
            if int(header["sform_code"]) > 0:
                norms = np.linalg.norm(np.asarray(header.get_sform(), float)[:3, :3], axis=0)
                hint = f" (its sform's axis measures {norms[axis]:.4g})" if np.isfinite(norms[axis]) else ""
            raise InputFileError(path, f"pixdim[{axis + 1}], the voxel size along {'xyz'[axis]} ({n} voxels), is "
                                       f"{value}{hint}: the voxel size is unknown, so no volume can be measured; "
                                       "write the voxel size into the header")
        if n > 1 and value < 0:
            # the standard has voxel sizes positive; ITK then mirrors that axis against the sform nibabel, FSL
            # and viewers follow: the image and its mask would lie mirrored in one of them
            raise InputFileError(path, f"pixdim[{axis + 1}] is negative ({value}): tools disagree on which way "
                                       f"this image's {'xyz'[axis]} axis runs (ITK mirrors it, the sform does not); "
                                       "rewrite the header with positive voxel sizes (nibabel does so on saving)")


def load_header(path: str | Path):
    """The NIfTI-1/2 header of a file as stored (voxels are not read): nibabel's loader "fixes" a pixdim of 0
    to 1, which :func:`check_voxel_size` must see. InputFileError when the file is not a readable NIfTI."""
    import io
    import struct

    import nibabel as nib
    from nibabel.openers import ImageOpener

    try:
        with ImageOpener(str(path)) as f:
            raw = f.read(nib.Nifti2Header.sizeof_hdr)
        size = {struct.unpack("<i", raw[:4])[0], struct.unpack(">i", raw[:4])[0]} if len(raw) >= 4 else set()
        klass = nib.Nifti1Header if nib.Nifti1Header.sizeof_hdr in size else nib.Nifti2Header
        if klass.sizeof_hdr not in size:
            raise ValueError(f"header size {sorted(size)} is neither NIfTI-1's 348 nor NIfTI-2's 540")
        return klass.from_fileobj(io.BytesIO(raw[:klass.sizeof_hdr]), check=False)
    except Exception as exc:  # noqa: BLE001 - gzip, struct and nibabel errors all mean "unreadable header"
        raise InputFileError(path, f"cannot read NIfTI header ({type(exc).__name__}: {exc})") from exc


def nifti_geometry(header, path: str | Path) -> NiftiGeometry:
    """Geometry of a nibabel NIfTI header by the rule in the module docstring."""
    dims = [int(d) for d in header["dim"][1:int(header["dim"][0]) + 1]]
    while len(dims) > 3 and dims[-1] == 1:
        dims.pop()  # trailing singleton dimensions carry nothing; ITK reads (x, y, z, 1) as 3D too
    if len(dims) > 4:
        raise InputFileError(path, f"has {len(dims)} dimensions {dims}; expected 3D or 4D (x, y, z[, t])")
    dims += [1] * (3 - len(dims))
    space_unit, time_unit = int(header["xyzt_units"]) & 0x07, int(header["xyzt_units"]) & 0x38
    pixdim = [abs(float(v)) or 1.0 for v in header["pixdim"][1:len(dims) + 1]]
    spacing = [v * _SPACE_UNITS.get(space_unit, 1.0) for v in pixdim[:3]]
    matrix, source, correction = _choose_transform(header, path)
    direction = _RAS_TO_LPS @ matrix[:3, :3]
    direction /= _column_norms(direction, path)
    origin = _RAS_TO_LPS @ matrix[:3, 3] * _SPACE_UNITS.get(space_unit, 1.0)
    if len(dims) == 4:
        spacing.append(pixdim[3] * _TIME_UNITS.get(time_unit, 1.0))
        d4 = np.eye(4)
        d4[:3, :3] = direction
        direction, origin = d4, np.append(origin, 0.0)
    geometry = Geometry(tuple(dims), tuple(float(v) for v in spacing), tuple(float(v) for v in origin),
                        tuple(float(v) for v in direction.ravel()))
    return NiftiGeometry(geometry, source, correction)


def _choose_transform(header, path: str | Path) -> tuple[np.ndarray, str, float]:
    qcode, scode = int(header["qform_code"]), int(header["sform_code"])
    if qcode <= 0 and scode <= 0:
        return np.diag([-1.0, -1.0, 1.0, 1.0]), "pixdim", 0.0  # ITK: origin 0, identity direction in LPS
    sform = np.asarray(header.get_sform(), float) if scode > 0 else None
    qform = np.asarray(header.get_qform(), float) if qcode > 0 else None
    if sform is not None and np.isfinite(sform).all() and (qform is None or _column_norms(sform[:3, :3]) is not None):
        rotation = sform[:3, :3] / _column_norms(sform[:3, :3], path)
        orthonormal = np.abs(rotation @ rotation.T - np.eye(3)).max() <= ITK_ORTHONORMAL_TOLERANCE
        if orthonormal and (qform is None or scode == _SCANNER_ANAT or _same_grid(sform, qform)):
            return sform, "sform", 0.0
        if qform is None:
            return _orthonormalised(sform, rotation, path)
    if qform is not None:
        return qform, "qform", 0.0
    raise InputFileError(path, "has an sform with non-finite values and no qform: cannot place the image in space")


def _column_norms(matrix: np.ndarray, path: str | Path | None = None) -> np.ndarray | None:
    """The lengths of the columns of a transform; a zero or non-finite one (an axis that goes nowhere) cannot
    give a direction: InputFileError naming the file, or None when no ``path`` is given (to fall back)."""
    norms = np.linalg.norm(matrix, axis=0)
    if np.isfinite(norms).all() and (norms > 0).all():
        return norms
    if path is None:
        return None
    raise InputFileError(path, f"its transform has an axis of length {norms.tolist()}: a zero or non-finite "
                               "column cannot place the image in space")


def _same_grid(sform: np.ndarray, qform: np.ndarray) -> bool:
    s_u, s_w, _ = np.linalg.svd(sform[:3, :3])
    q_u, q_w, _ = np.linalg.svd(qform[:3, :3])
    tol = ITK_ORTHONORMAL_TOLERANCE
    return bool(np.allclose(s_u @ np.linalg.inv(q_u), np.eye(3), atol=tol) and np.allclose(s_w, q_w, atol=tol)
                and np.allclose(sform[:3, 3], qform[:3, 3], atol=tol))


def _orthonormalised(sform: np.ndarray, rotation: np.ndarray, path: str | Path) -> tuple[np.ndarray, str, float]:
    u, _, vt = np.linalg.svd(rotation)
    nearest = u @ vt
    correction = float(np.abs(nearest - rotation).max())
    if correction > SFORM_ORTHONORMAL_TOLERANCE:
        raise InputFileError(path, f"sform is not a rotation and scaling (a direction cosine is {correction:.1e} "
                                   f"from the nearest rotation, more than {SFORM_ORTHONORMAL_TOLERANCE}) and there "
                                   "is no qform: the file holds an affine (sheared) grid, resample it first")
    matrix = sform.copy()
    matrix[:3, :3] = nearest
    return matrix, "sform", max(correction, np.finfo(float).tiny)


def read_nifti_header(path: str | Path) -> NiftiGeometry:
    """Geometry of a NIfTI-1/2 file without reading its voxels."""
    check_voxel_size(load_header(path), path)  # the header as stored: nibabel's loader turns a 0 into 1
    return nifti_geometry(_load(Path(path)).header, path)


def read_nifti(path: str | Path) -> tuple[np.ndarray, NiftiGeometry]:
    """Voxels (numpy order, scl_slope/inter applied as ITK does) and geometry of a NIfTI-1/2 file."""
    path = Path(path)
    check_voxel_size(load_header(path), path)
    image = _load(path)
    found = nifti_geometry(image.header, path)
    array = _voxels(image, path).T  # nibabel (x, y, z[, t]) -> numpy (t, z, y, x)
    shape = found.geometry.shape
    if array.size != int(np.prod(shape)):
        raise InputFileError(path, f"voxel array of shape {array.shape} does not fit the header's {shape}")
    return np.ascontiguousarray(array.reshape(shape)), found


def _voxels(image, path: Path) -> np.ndarray:
    if image.get_data_dtype().names is not None or image.get_data_dtype().kind == "c":
        raise InputFileError(path, f"voxel type {image.get_data_dtype()} is not a scalar (RGB or complex image)")
    # nibabel moves scl_slope/scl_inter from the header to the array proxy when it loads a file.
    slope, inter = float(image.dataobj.slope), float(image.dataobj.inter)
    scaled = slope != 1.0 or inter != 0.0
    try:
        raw = np.asanyarray(image.dataobj) if scaled else image.dataobj.get_unscaled()
    except (OSError, EOFError, ValueError, zlib.error) as exc:
        raise InputFileError(path, f"cannot read voxel data ({type(exc).__name__}: {exc})") from exc
    array = np.asarray(raw, np.float32) if scaled else np.asarray(raw)
    # the file's byte order: SimpleITK takes native arrays only (a big-endian '>i2' raised a bare TypeError)
    return array if array.dtype.isnative else array.astype(array.dtype.newbyteorder("="))


def itk_nonfinite_stand_in(path: str | Path) -> float:
    """The value ITK's NIfTI reader leaves where the file stores NaN or inf: niftilib writes 0 there and ITK
    then applies ``scl_slope``/``scl_inter`` to it, so ``scl_inter`` when the file is scaled (else 0)."""
    inter = float(_load(Path(path)).dataobj.inter)  # nibabel moves the scaling to the proxy on loading
    return inter if np.isfinite(inter) else 0.0


def stored_voxels_if_nonfinite(path: str | Path) -> np.ndarray | None:
    """The stored voxels (numpy order) of a floating-point NIfTI file that holds NaN or inf, else None.

    ITK's NIfTI reader (niftilib) silently replaces NaN by 0, which would hide bad input; readers call this
    to give the true values back.
    """
    image = _load(Path(path))
    if image.get_data_dtype().kind != "f":
        return None
    data = np.asarray(image.dataobj.get_unscaled())
    if np.isfinite(data).all():
        return None
    return read_nifti(path)[0]


def write_mask_like(array: np.ndarray, geometry: Geometry, path: str | Path, template: str | Path) -> bool:
    """Write a uint8 mask with ``template``'s own NIfTI header (dims, qform, sform, codes), atomically.

    Returns False (nothing written) when the template cannot be read by nibabel or its geometry is not
    ``geometry`` within :data:`~autocmr.io.image.DEFAULT_GEOMETRY_TOLERANCE` (the caller then writes from
    ``geometry``).
    """
    import nibabel as nib

    try:
        source = _load(Path(template))
        template_geometry = nifti_geometry(source.header, template).geometry
    except InputFileError as exc:
        logger.warning("%s: mask written from the geometry, not the input's header (%s)", path, exc.reason)
        return False
    # space and the number of frames decide; the time axis's origin (toffset) and sign (a negative pixdim[4],
    # which ITK reads as a reversed axis) are kept from the template as they are
    differences = template_geometry.spatial().differences(geometry.spatial(), DEFAULT_GEOMETRY_TOLERANCE)
    if template_geometry.size != geometry.size:
        differences.append(f"size {template_geometry.size} vs {geometry.size}")
    if differences:
        logger.warning("%s: mask written from the geometry, not the header of %s (%s)", path, template,
                       "; ".join(differences))
        return False
    data = np.asarray(array, np.uint8).T.reshape(source.shape)
    header = source.header.copy()
    header.set_data_dtype(np.uint8)
    header.set_slope_inter(1.0, 0.0)
    header["cal_min"], header["cal_max"] = 0, 0
    mask = type(source)(data, None, header=header)  # affine None: the header's qform and sform stay as they are
    with atomic_path(path) as tmp:
        nib.save(mask, str(tmp))
    return True


__all__ = ["NIFTI_SUFFIXES", "NiftiGeometry", "SFORM_ORTHONORMAL_TOLERANCE", "is_nifti", "nifti_geometry",
           "read_nifti", "read_nifti_header", "stored_voxels_if_nonfinite", "write_mask_like"]
