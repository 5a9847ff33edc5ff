"""NIfTI through nibabel: ITK's qform/sform rule reproduced, files ITK refuses read, NaN kept, masks written
with their input's own header (nibabel affine and SimpleITK geometry both equal the image's)."""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from autocmr.errors import InputFileError
from autocmr.io.cine import read_cine
from autocmr.io.image import Geometry, read_header, read_image
from autocmr.io.nifti import read_nifti_header, write_mask_like

SHAPE_XYZ = (12, 10, 4)
ZOOMS = (1.48, 1.48, 10.0)
# ITK and our rule compute the same matrices in float32 / float64.
GEOMETRY_TOLERANCE = 1e-5


def _affine(angle: float = 0.4, origin=(-80.0, 60.0, 25.0), zooms=ZOOMS, shear: float = 0.0) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    rotation = np.array([[c, -s, 0.0], [s * 0.8, c * 0.8, -0.6], [s * 0.6, c * 0.6, 0.8]])
    skew = np.eye(3)
    skew[0, 1] = shear
    affine = np.eye(4)
    affine[:3, :3] = rotation @ skew @ np.diag(zooms)  # column y leans towards x by `shear` (cosine)
    affine[:3, 3] = origin
    return affine


def write_nifti(path: Path, *, sform: np.ndarray | None = None, scode: int = 0, qform: np.ndarray | None = None,
                qcode: int = 0, data: np.ndarray | None = None, zooms=ZOOMS, nifti2: bool = False,
                slope: tuple[float, float] | None = None, units: str = "mm") -> Path:
    """A NIfTI file with exactly the given forms and codes (nibabel would otherwise sync them to one affine)."""
    if data is None:
        data = np.random.default_rng(0).integers(0, 500, SHAPE_XYZ).astype(np.int16)
    image = (nib.Nifti2Image if nifti2 else nib.Nifti1Image)(data, None)
    header = image.header
    header.set_zooms(tuple(zooms)[:data.ndim])
    header.set_sform(sform, code=scode)
    header.set_qform(qform, code=qcode)
    header.set_xyzt_units(units, "sec")
    if slope is not None:
        header.set_slope_inter(*slope)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, str(path))
    return path


def _itk_readable_files(folder: Path) -> dict[str, Path]:
    a, b = _affine(), _affine(angle=-0.3, origin=(5.0, -7.0, 40.0))
    acdc_like = np.diag([-1.0, -1.0, 1.0, 1.0])  # ACDC: sform with 1 mm columns, pixdim 1.5625 x 1.5625 x 10
    cine = np.random.default_rng(1).random(SHAPE_XYZ + (3,)).astype(np.float32)
    return {
        "sform_only": write_nifti(folder / "sform_only.nii.gz", sform=a, scode=2),
        "sform_scanner": write_nifti(folder / "sform_scanner.nii.gz", sform=a, scode=1),
        "qform_only": write_nifti(folder / "qform_only.nii", qform=a, qcode=1),
        "both_same": write_nifti(folder / "both_same.nii.gz", sform=a, scode=2, qform=a, qcode=1),
        "both_differ": write_nifti(folder / "both_differ.nii.gz", sform=b, scode=2, qform=a, qcode=1),
        "both_differ_scanner": write_nifti(folder / "both_differ_s1.nii.gz", sform=b, scode=1, qform=a, qcode=1),
        "neither": write_nifti(folder / "neither.nii.gz"),
        "acdc_like": write_nifti(folder / "acdc_like.nii.gz", sform=acdc_like, scode=2, zooms=(1.5625, 1.5625, 10)),
        "scaled": write_nifti(folder / "scaled.nii.gz", sform=a, scode=1, slope=(2.0, -3.0)),
        "metres": write_nifti(folder / "metres.nii.gz", sform=np.diag([1e-3, 1e-3, 1e-3, 1.0]) @ a, scode=1,
                              zooms=np.divide(ZOOMS, 1000), units="meter"),
        "cine": write_nifti(folder / "cine.nii.gz", sform=a, scode=1, qform=a, qcode=1, data=cine,
                            zooms=ZOOMS + (33.0,)),
        "sheared_sform_with_qform": write_nifti(folder / "sheared_q.nii.gz", sform=_affine(shear=0.05), scode=2,
                                                qform=a, qcode=1),
        "one_frame_4d": write_nifti(folder / "one_frame.nii.gz", sform=a, scode=1, data=cine[..., :1],
                                    zooms=ZOOMS + (33.0,)),  # ITK drops the trailing singleton t: 3D
    }


def test_geometry_rule_agrees_with_itk(tmp_path):
    for name, path in _itk_readable_files(tmp_path).items():
        itk_image = sitk.ReadImage(str(path))
        ours = read_nifti_header(path).geometry
        assert not ours.differences(Geometry.of(itk_image), GEOMETRY_TOLERANCE), name
        assert not read_header(path).differences(Geometry.of(itk_image), GEOMETRY_TOLERANCE), name


def test_voxels_and_scaling_as_itk(tmp_path):
    from autocmr.io.nifti import read_nifti

    for name, path in _itk_readable_files(tmp_path).items():
        itk_array = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
        array, _ = read_nifti(path)
        assert array.dtype == itk_array.dtype and np.array_equal(array, itk_array), name


def _nearly_orthonormal(tmp_path: Path) -> Path:
    """sform only, direction columns ~1e-4 off orthonormal (as M&Ms vendor C files): ITK refuses it.

    ITK tests R R^T = I to 1e-4 in float32; a cosine of 2e-4 between two columns is the smallest round value
    it refuses (1.2e-4 still passes)."""
    return write_nifti(tmp_path / "mnms_like.nii.gz", sform=_affine(shear=2e-4), scode=1)


def test_nearly_orthonormal_sform_is_read_with_pixdim_spacing(tmp_path, caplog):
    path = _nearly_orthonormal(tmp_path)
    with pytest.raises(RuntimeError, match="orthonormal"):
        sitk.ReadImage(str(path))
    array, geometry = read_image(path)
    assert array.shape == SHAPE_XYZ[::-1]
    assert np.allclose(geometry.spacing, ZOOMS)
    direction = geometry.direction_matrix()
    assert np.allclose(direction @ direction.T, np.eye(3), atol=1e-12)  # a rotation now
    expected = np.diag([-1, -1, 1]) @ _affine()[:3, :3] / ZOOMS
    assert np.abs(direction - expected).max() < 2e-4  # within the correction
    assert np.allclose(geometry.origin, [80.0, -60.0, 25.0])  # RAS -> LPS
    assert "replaced by the nearest rotation" in caplog.text


def test_sheared_sform_without_qform_is_refused_with_reason(tmp_path):
    path = write_nifti(tmp_path / "sheared.nii.gz", sform=_affine(shear=0.05), scode=1)
    with pytest.raises(InputFileError, match=r"sheared.nii.gz.*(ITK.*orthonormal).*affine \(sheared\) grid"):
        read_image(path)


def test_an_sform_with_a_zero_axis_is_refused_naming_the_file(tmp_path):
    degenerate = _affine()
    degenerate[:3, 2] = 0.0  # the slice axis goes nowhere
    path = write_nifti(tmp_path / "flat.nii.gz", sform=degenerate, scode=2)
    with pytest.raises(InputFileError, match=r"flat.nii.gz.*zero or non-finite column"):
        read_image(path)
    # with a qform beside it, the qform places the image (ITK's rule for an unusable sform)
    path = write_nifti(tmp_path / "flat_q.nii.gz", sform=degenerate, scode=2, qform=_affine(), qcode=1)
    assert read_image(path)[0].shape == SHAPE_XYZ[::-1]


def test_a_corrupt_gzip_stream_is_an_input_error(tmp_path):
    from autocmr.io.completeness import check_complete

    path = write_nifti(tmp_path / "flipped.nii.gz")
    raw = bytearray(path.read_bytes())
    for i in range(len(raw) // 2, len(raw) // 2 + 40):  # damage the deflate stream, not the gzip header
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(InputFileError, match="flipped.nii.gz.*corrupt"):  # zlib's own error, named
        check_complete(path)


def test_nifti2_is_read(tmp_path):
    a = _affine()
    n1 = write_nifti(tmp_path / "n1.nii.gz", sform=a, scode=1, qform=a, qcode=1)
    n2 = write_nifti(tmp_path / "n2.nii", sform=a, scode=1, qform=a, qcode=1, nifti2=True)
    array1, geometry1 = read_image(n1)
    array2, geometry2 = read_image(n2)
    assert np.array_equal(array1, array2) and not geometry1.differences(geometry2, GEOMETRY_TOLERANCE)


def test_nan_stored_in_nifti_is_kept(tmp_path):
    data = np.random.default_rng(2).random(SHAPE_XYZ).astype(np.float32)
    data[0, 0, 0] = 0.0
    data[3, 4, 1] = np.nan
    path = write_nifti(tmp_path / "nan.nii.gz", sform=_affine(), scode=1, data=data)
    assert np.isnan(sitk.GetArrayFromImage(sitk.ReadImage(str(path)))).sum() == 0  # what ITK alone does
    array, _ = read_image(path)
    assert np.isnan(array).sum() == 1 and np.isnan(array[1, 4, 3])


def test_nan_stored_in_a_scaled_nifti_is_kept(tmp_path):
    """ITK turns a stored NaN into 0 and then applies scl_inter to it: the voxel reads 100, not 0, and a check
    for zeros alone let the NaN through."""
    data = 1.0 + np.random.default_rng(3).random(SHAPE_XYZ).astype(np.float32)  # no zero anywhere
    data[3, 4, 1] = np.nan
    path = write_nifti(tmp_path / "scaled_nan.nii.gz", sform=_affine(), scode=1, data=data, slope=(1.0, 100.0))
    itk = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    assert not np.isnan(itk).any() and itk[1, 4, 3] == pytest.approx(100.0)  # what ITK alone does
    array, _ = read_image(path)
    assert np.isnan(array).sum() == 1 and np.isnan(array[1, 4, 3])


def test_a_big_endian_file_itk_refuses_is_read_by_the_fallback(tmp_path):
    """The nibabel fallback gave SimpleITK voxels in the file's byte order ('>i2'), which it does not take."""
    little = _nearly_orthonormal(tmp_path)
    image = nib.load(str(little))
    big = nib.Nifti1Image(np.asarray(image.dataobj.get_unscaled()).astype(">i2"), None,
                          header=image.header.as_byteswapped(">"))
    nib.save(big, str(tmp_path / "big.nii.gz"))
    assert nib.load(str(tmp_path / "big.nii.gz")).header.endianness == ">"
    with pytest.raises(RuntimeError, match="orthonormal"):
        sitk.ReadImage(str(tmp_path / "big.nii.gz"))
    array, geometry = read_image(tmp_path / "big.nii.gz")
    expected, expected_geometry = read_image(little)
    assert np.array_equal(array, expected) and array.dtype.isnative
    assert not geometry.differences(expected_geometry, GEOMETRY_TOLERANCE)


HEADER_FIELDS = ("dim", "pixdim", "qform_code", "sform_code", "quatern_b", "quatern_c", "quatern_d", "qoffset_x",
                 "qoffset_y", "qoffset_z", "srow_x", "srow_y", "srow_z", "xyzt_units")


def assert_mask_has_image_header(mask_path: Path, image_path: Path) -> None:
    """The mask overlays its image in nibabel/FSL (same affine, forms and codes) and in ITK (same geometry)."""
    image, mask = nib.load(str(image_path)), nib.load(str(mask_path))
    assert type(mask) is type(image) and mask.get_data_dtype() == np.uint8
    assert np.array_equal(mask.affine, image.affine)
    for field in HEADER_FIELDS:
        assert np.array_equal(mask.header[field], image.header[field]), field
    assert not read_header(mask_path).differences(read_header(image_path), 1e-9)


@pytest.mark.parametrize("kind", ["sform_only", "qform_only", "cine", "nearly_orthonormal", "nifti2"])
def test_mask_written_with_the_input_header(tmp_path, kind):
    files = _itk_readable_files(tmp_path)
    files["nearly_orthonormal"] = _nearly_orthonormal(tmp_path)
    files["nifti2"] = write_nifti(tmp_path / "n2.nii.gz", sform=_affine(), scode=1, nifti2=True)
    path = files[kind]
    array, geometry = read_cine(path) if kind == "cine" else read_image(path)
    mask = (array > np.median(array)).astype(np.uint8)
    assert write_mask_like(mask, geometry, tmp_path / "mask.nii.gz", path)
    assert_mask_has_image_header(tmp_path / "mask.nii.gz", path)
    written = read_cine(tmp_path / "mask.nii.gz")[0] if kind == "cine" else read_image(tmp_path / "mask.nii.gz")[0]
    assert np.array_equal(written, mask)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp_")]


def test_mask_of_acdc_original_header(acdc_root, tmp_path):
    path = acdc_root / "patient001" / "patient001_frame01.nii.gz"
    array, geometry = read_image(path)
    assert write_mask_like((array > 100).astype(np.uint8), geometry, tmp_path / "mask.nii.gz", path)
    assert_mask_has_image_header(tmp_path / "mask.nii.gz", path)


def test_template_of_another_geometry_is_not_used(tmp_path):
    path = write_nifti(tmp_path / "a.nii.gz", sform=_affine(), scode=1)
    array, geometry = read_image(path)
    moved = Geometry(geometry.size, geometry.spacing, (0.0, 0.0, 0.0), geometry.direction)
    assert not write_mask_like(array.astype(np.uint8), moved, tmp_path / "mask.nii.gz", path)
    assert not (tmp_path / "mask.nii.gz").exists()


@pytest.mark.parametrize("bad", [0.0, float("nan")])
def test_a_voxel_size_of_zero_or_nan_is_refused_not_read_as_1_mm(tmp_path, bad):
    """ITK and nibabel read pixdim 0 as 1 mm: every volume would be off by the slice spacing, silently."""
    image = nib.Nifti1Image(np.ones(SHAPE_XYZ, np.float32), _affine())
    image.header["pixdim"][3] = bad
    path = tmp_path / "no_slice_spacing.nii.gz"
    nib.save(image, path)
    for read in (read_image, read_header, read_nifti_header, read_cine):
        with pytest.raises(InputFileError, match=r"no_slice_spacing.nii.gz.*pixdim\[3\].*sform's axis measures 10"):
            read(path)
    one_slice = nib.Nifti1Image(np.ones(SHAPE_XYZ[:2] + (1,), np.float32), _affine())
    one_slice.header["pixdim"][3] = 0.0  # a single slice: nothing is measured along it, so it is read
    nib.save(one_slice, tmp_path / "one_slice.nii.gz")
    assert read_image(tmp_path / "one_slice.nii.gz")[0].shape == (1,) + SHAPE_XYZ[:2][::-1]


def test_a_cine_mask_keeps_its_inputs_header_with_a_time_offset_or_a_negative_time_step(tmp_path):
    """The time axis's origin (toffset) and sign (pixdim[4] < 0, read by ITK as a reversed axis) do not place
    any voxel: the mask still gets the input's own header (was written from the geometry, losing its codes)."""
    import nibabel as nib

    from autocmr.io.cine import read_cine, write_cine
    from autocmr.io.nifti import write_mask_like

    affine = np.diag([-1.5, -1.5, 8.0, 1.0])
    affine[:3, 3] = [10.0, 20.0, 30.0]
    data = (np.random.default_rng(0).random((6, 8, 5, 4)) * 100).astype(np.int16)
    for name, pixdim4, toffset in (("offset", 40.0, 100.0), ("negative", -40.0, 0.0)):
        image = nib.Nifti1Image(data, affine)
        image.set_sform(affine, 2)
        image.set_qform(affine, 1)
        image.header.set_xyzt_units("mm", "msec")
        image.header["pixdim"][4], image.header["toffset"] = pixdim4, toffset
        source = tmp_path / f"{name}.nii.gz"
        nib.save(image, source)
        frames, geometry = read_cine(source)
        mask = (frames > 50).astype(np.uint8)
        assert write_mask_like(mask, geometry, tmp_path / f"{name}_mask.nii.gz", source)
        written = nib.load(tmp_path / f"{name}_mask.nii.gz").header
        assert (written["sform_code"], written["qform_code"], written["toffset"]) == (2, 1, toffset)
        write_cine(mask, geometry, tmp_path / f"{name}_plain.nii.gz")  # the writer from the geometry accepts it
        assert np.array_equal(read_cine(tmp_path / f"{name}_plain.nii.gz")[0], mask)


def test_a_plain_nifti_named_nii_gz_is_told_apart_from_a_corrupt_one(tmp_path):
    from autocmr.io.completeness import check_complete

    plain = write_nifti(tmp_path / "a.nii")
    misnamed = tmp_path / "a.nii.gz"
    misnamed.write_bytes(plain.read_bytes())
    with pytest.raises(InputFileError, match="not gzip-compressed: a plain NIfTI named .nii.gz; rename it to .nii"):
        check_complete(misnamed)


def test_a_negative_voxel_size_is_refused_naming_the_axis(tmp_path):
    """pixdim[1] < 0 with an sform: ITK mirrors x, nibabel and viewers follow the sform; the mask would lie
    mirrored in one of them."""
    import struct

    path = write_nifti(tmp_path / "neg.nii", sform=_affine(), scode=1)
    raw = bytearray(path.read_bytes())
    raw[80:84] = struct.pack("<f", -float(ZOOMS[0]))  # pixdim[1]: bytes 80-83 of a NIfTI-1 header
    path.write_bytes(bytes(raw))
    with pytest.raises(InputFileError, match=r"neg.nii: pixdim\[1\] is negative"):
        read_image(path)
