"""DICOM series reading: ordering, geometry and values on tiny synthetic series, broken inputs, and the
real Sunnybrook cine checked against SimpleITK/GDCM's own reader."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid
from scipy.spatial.transform import Rotation

from autocmr.errors import InputFileError
from autocmr.io.cine import read_cine
from autocmr.io.dicom import find_dicom_series, read_dicom_layout, read_dicom_series, write_dicom_as_nifti

# Oblique short-axis-like plane; non-square pixels and images so that row/column swaps show.
ROTATION = Rotation.from_euler("xyz", [25.0, -40.0, 15.0], degrees=True).as_matrix()
PIXEL_SPACING = (0.8, 1.1)  # DICOM order: (row spacing = y, column spacing = x), mm
SLICE_GAP = 7.5  # mm
ORIGIN = np.array([-31.5, 12.25, 80.0])
ROWS, COLS = 5, 6
SLOPE, INTERCEPT = 0.5, 3.0


def _ds(value: float) -> str:
    return f"{value:.10g}"  # DS strings are at most 16 characters


def _write_image(path: Path, pixels: np.ndarray, *, series_uid: str, position: np.ndarray, instance: int,
                 trigger_time: float | None, orientation: np.ndarray = ROTATION) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.SeriesInstanceUID, ds.SeriesDescription, ds.SeriesNumber = "MR", series_uid, "sax cine", 7
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [_ds(v) for v in position]
    ds.ImageOrientationPatient = [_ds(v) for v in np.concatenate([orientation[:, 0], orientation[:, 1]])]
    ds.PixelSpacing = [_ds(v) for v in PIXEL_SPACING]
    ds.SliceThickness = _ds(SLICE_GAP)
    if trigger_time is not None:
        ds.TriggerTime = _ds(trigger_time)
    ds.RescaleSlope, ds.RescaleIntercept = _ds(SLOPE), _ds(INTERCEPT)
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.PixelData = pixels.astype("<i2").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def _write_series(folder: Path, stored: np.ndarray, *, seed: int = 0, trigger: bool = True,
                  gaps: list[float] | None = None) -> dict[tuple[int, int], Path]:
    """Write ``stored`` (t, z, y, x) int16 as one DICOM file per image under shuffled names.

    Slice z lies at ORIGIN + offset_z * normal; files are numbered against the anatomical order and
    instance numbers run backwards in time, so only IPP and TriggerTime give the right order.
    """
    rng = np.random.default_rng(seed)
    n_t, n_z = stored.shape[:2]
    offsets = np.concatenate([[0.0], np.cumsum(gaps if gaps is not None else [SLICE_GAP] * (n_z - 1))])
    uid = generate_uid()
    names = rng.permutation(n_t * n_z)
    paths = {}
    for z in range(n_z):
        for t in range(n_t):
            path = folder / f"IM{names[z * n_t + t]:04d}"
            _write_image(path, stored[t, z], series_uid=uid, position=ORIGIN + offsets[z] * ROTATION[:, 2],
                         instance=1000 - (z * n_t + t), trigger_time=20.0 + 35.0 * t + 0.5 * z if trigger else None)
            paths[(z, t)] = path
    return paths


@pytest.fixture
def stored() -> np.ndarray:
    """2 locations x 3 phases of 5x6 images with distinct values."""
    rng = np.random.default_rng(1)
    return rng.integers(-200, 2000, size=(3, 2, ROWS, COLS)).astype(np.int16)


def test_synthetic_cine_order_geometry_and_values(tmp_path, stored):
    paths = _write_series(tmp_path / "series", stored)
    volume = read_dicom_series(tmp_path / "series")
    assert volume.is_cine and volume.array.dtype == np.float32
    np.testing.assert_allclose(volume.array, stored * SLOPE + INTERCEPT)
    assert dict(volume.files) == paths
    np.testing.assert_allclose(volume.trigger_times, [20.25, 55.25, 90.25])
    g = volume.geometry
    assert g.size == (COLS, ROWS, 2, 3)
    # the time step in seconds, as NIfTI carries it (TriggerTime is in ms)
    np.testing.assert_allclose(g.spacing, (PIXEL_SPACING[1], PIXEL_SPACING[0], SLICE_GAP, 0.035), atol=1e-6)
    np.testing.assert_allclose(g.origin, tuple(ORIGIN) + (0.0,), atol=1e-6)
    np.testing.assert_allclose(g.direction_matrix()[:3, :3], ROTATION, atol=1e-6)
    # Independent check of the voxel -> patient mapping with SimpleITK: voxel (x=4, y=3) of slice 1 lies at
    # IPP + x * column spacing * row direction + y * row spacing * column direction.
    image = g.spatial().apply_to(sitk.Image(COLS, ROWS, 2, sitk.sitkFloat32))
    expected = ORIGIN + SLICE_GAP * ROTATION[:, 2] + 4 * PIXEL_SPACING[1] * ROTATION[:, 0] \
        + 3 * PIXEL_SPACING[0] * ROTATION[:, 1]
    np.testing.assert_allclose(image.TransformIndexToPhysicalPoint((4, 3, 1)), expected, atol=1e-5)


def test_single_phase_is_3d_and_instance_number_orders_phases(tmp_path, stored):
    _write_series(tmp_path / "one", stored[:1])
    volume = read_dicom_series(tmp_path / "one")
    assert volume.array.shape == (2, ROWS, COLS) and volume.geometry.dim == 3
    assert set(volume.files) == {(0, 0), (1, 0)}
    # Without TriggerTime, InstanceNumber orders the phases (here it runs backwards in time).
    _write_series(tmp_path / "notrigger", stored, trigger=False)
    volume = read_dicom_series(tmp_path / "notrigger")
    np.testing.assert_allclose(volume.array, stored[::-1] * SLOPE + INTERCEPT)
    assert np.isnan(volume.trigger_times).all()
    # One location with several phases (e.g. a long-axis cine): the slice gap comes from SliceThickness.
    _write_series(tmp_path / "lax", stored[:, :1])
    volume = read_dicom_series(tmp_path / "lax")
    assert volume.array.shape == (3, 1, ROWS, COLS)
    assert volume.geometry.spacing[2:] == pytest.approx((SLICE_GAP, 0.035))


def test_folder_with_several_series_nested_and_junk(tmp_path, stored, caplog):
    _write_series(tmp_path / "a" / "cine", stored, seed=1)
    _write_series(tmp_path / "b" / "deeper" / "stack", stored[:1], seed=2)
    (tmp_path / "README.txt").write_text("not an image\n")
    (tmp_path / "a" / "notes.json").write_text("{}")
    (tmp_path / "a" / "broken.dcm").write_bytes(b"\x00" * 10)  # DICOM-looking name, unreadable
    with caplog.at_level(logging.WARNING):
        series = find_dicom_series(tmp_path)
    assert "broken.dcm" in caplog.text and "README" not in caplog.text
    shapes = sorted((s.n_locations, s.n_phases, len(s.files)) for s in series)
    assert shapes == [(2, 1, 2), (2, 3, 6)]
    with pytest.raises(InputFileError, match="2 DICOM series.*series_uid"):
        read_dicom_series(tmp_path)
    cine = next(s for s in series if s.n_phases == 3)
    assert read_dicom_series(tmp_path, series_uid=cine.series_instance_uid).array.shape == (3, 2, ROWS, COLS)
    # An explicit file list works too, in any order.
    files = list(reversed(cine.files))
    assert read_dicom_series(files).geometry.size == (COLS, ROWS, 2, 3)


def test_layout_from_headers_alone_matches_the_volume_read(tmp_path, stored, monkeypatch):
    paths = _write_series(tmp_path / "cine", stored)
    _write_series(tmp_path / "one", stored[:1])
    volumes = {name: read_dicom_series(tmp_path / name) for name in ("cine", "one")}
    monkeypatch.setattr("autocmr.io.dicom.read_pixels", lambda *a: pytest.fail("pixel data decoded"))
    for name, volume in volumes.items():
        layout = read_dicom_layout(sorted((tmp_path / name).iterdir()))
        assert dict(layout.files) == dict(volume.files) and layout.shape == volume.array.shape
        assert layout.is_cine == volume.is_cine == (name == "cine")
    assert dict(read_dicom_layout(tmp_path / "cine").files) == paths
    paths[(1, 2)].unlink()  # the same checks as reading the volume
    with pytest.raises(InputFileError, match="uneven number of phases"):
        read_dicom_layout(tmp_path / "cine")


def test_missing_phase_and_duplicates_are_reported(tmp_path, stored):
    paths = _write_series(tmp_path / "s", stored)
    paths[(1, 2)].unlink()
    with pytest.raises(InputFileError, match="uneven number of phases"):
        read_dicom_series(tmp_path / "s")

    paths = _write_series(tmp_path / "d", stored[:1])
    for z in range(2):  # every location gets a second image of its only phase, another SOP instance
        ds = pydicom.dcmread(paths[(z, 0)])
        ds.SOPInstanceUID = generate_uid()
        ds.save_as(tmp_path / "d" / f"other{z}")
    with pytest.raises(InputFileError, match="duplicate images at one slice location with the same phase: "
                                             r"(IM\S+ and other\d|other\d and IM\S+)$"):
        read_dicom_series(tmp_path / "d")


def test_a_series_copied_twice_into_the_input_is_named_as_such(tmp_path, stored):
    """The same files in a folder and in its copy: both paths, relative to the input, and what happened."""
    paths = _write_series(tmp_path / "study" / "sax", stored)
    shutil.copytree(tmp_path / "study" / "sax", tmp_path / "study" / "sax copy")
    with pytest.raises(InputFileError, match=rf"{len(paths)} image\(s\) of series .* are in the input twice "
                                             r"\(same SOPInstanceUID\), e\.g\. sax( copy)?/\S+ and sax( copy)?/\S+: "
                                             "the series was copied more than once"):
        read_dicom_series(tmp_path / "study")
    read_dicom_series(tmp_path / "study" / "sax")  # one copy alone reads


@pytest.mark.parametrize("keep", [150, 300, 450, -20])
def test_truncated_file_is_named(tmp_path, stored, keep):
    """Cut inside the file meta, the header or the pixel data: the error names the file."""
    paths = _write_series(tmp_path, stored)
    victim = paths[(1, 1)]
    data = victim.read_bytes()
    assert len(data) > 500  # the cuts below fall inside the header / pixel data
    victim.write_bytes(data[:keep])
    with pytest.raises(InputFileError, match=f"could not be read: {victim.name} |{victim.name}: cannot decode pixel"):
        read_dicom_series(tmp_path)


def test_inconsistent_headers_are_reported(tmp_path, stored):
    paths = _write_series(tmp_path / "o", stored)
    ds = pydicom.dcmread(paths[(1, 0)])
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.save_as(paths[(1, 0)])
    with pytest.raises(InputFileError, match="mixed orientations"):
        read_dicom_series(tmp_path / "o")

    paths = _write_series(tmp_path / "q", stored)
    ds = pydicom.dcmread(paths[(0, 1)])
    ds.PixelSpacing = ["0.8", "1.2"]
    ds.save_as(paths[(0, 1)])
    with pytest.raises(InputFileError, match="mixed pixel spacings"):
        read_dicom_series(tmp_path / "q")

    paths = _write_series(tmp_path / "p", stored)
    ds = pydicom.dcmread(paths[(0, 2)])
    del ds.PixelData
    ds.save_as(paths[(0, 2)])
    with pytest.raises(InputFileError, match="no pixel data") as info:
        read_dicom_series(tmp_path / "p")
    assert info.value.path == paths[(0, 2)]

    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("x")
    with pytest.raises(InputFileError, match="no DICOM"):
        read_dicom_series(tmp_path / "empty")


def _set_raw(path: Path, keyword: str, vr: str, raw: bytes) -> None:
    """Write a value as the bytes some exporters put there, bypassing pydicom's validation."""
    ds = pydicom.dcmread(path)
    from pydicom.datadict import tag_for_keyword
    from pydicom.dataelem import RawDataElement

    tag = tag_for_keyword(keyword)
    ds[tag] = RawDataElement(pydicom.tag.Tag(tag), vr, len(raw), raw, 0, False, True)
    ds.save_as(path)


def test_values_that_are_not_numbers(tmp_path, stored, caplog):
    from autocmr.inference.inputs import discover_jobs

    # a decimal comma (European exports) and a multi-valued trigger time: optional values, the folder still reads
    paths = _write_series(tmp_path / "comma", stored)
    for path in paths.values():
        _set_raw(path, "SliceThickness", "DS", b"7,50")
    _set_raw(paths[(0, 0)], "TriggerTime", "DS", b"20\\21")
    with caplog.at_level(logging.WARNING):
        found = discover_jobs(tmp_path / "comma", tmp_path / "out")
    assert [j.kind for j in found.jobs] == ["dicom"] and not found.problems
    assert "TriggerTime is not a number" in caplog.text and str(paths[(0, 0)]) in caplog.text
    _write_series(tmp_path / "lax", stored[:, :1])  # one location: the slice gap comes from SliceThickness
    for path in (tmp_path / "lax").iterdir():
        _set_raw(path, "SliceThickness", "DS", b"7,50")
    assert read_dicom_series(tmp_path / "lax").geometry.spacing[2] == pytest.approx(SLICE_GAP)
    # a value the intensities depend on is refused, naming the file and the attribute
    paths = _write_series(tmp_path / "slope", stored)
    _set_raw(paths[(1, 2)], "RescaleSlope", "DS", b"abc")
    with pytest.raises(InputFileError, match="RescaleSlope is not a number") as info:
        read_dicom_series(tmp_path / "slope")
    assert info.value.path == paths[(1, 2)]


def test_slice_gaps_uneven_warns_and_overlap_fails(tmp_path, stored, caplog):
    three = np.concatenate([stored, stored[:, :1]], axis=1)  # 3 locations
    _write_series(tmp_path / "uneven", three[:1], gaps=[SLICE_GAP, 1.3 * SLICE_GAP])
    with caplog.at_level(logging.WARNING):
        volume = read_dicom_series(tmp_path / "uneven")
    assert "slice gaps vary" in caplog.text  # 1.3 gaps: not a missing slice, the median gap and a warning
    assert volume.array.shape[0] == 3 and volume.missing_slices == ()
    _write_series(tmp_path / "overlap", three[:1], gaps=[SLICE_GAP, 0.2 * SLICE_GAP])
    with pytest.raises(InputFileError, match="overlap"):
        read_dicom_series(tmp_path / "overlap")


def test_a_missing_slice_is_left_empty_so_every_other_slice_keeps_its_place(tmp_path, stored, caplog):
    """Four locations with the third's files gone (gaps 7.5, 15, 7.5 mm): the volume has five slices, the
    missing one zero, and each image lies where its ImagePositionPatient says; the cine's file map and the
    header-only layout skip the missing slice."""
    from autocmr.io.dicom import read_dicom_layout

    four = np.concatenate([stored, stored], axis=1)  # 3 phases x 4 locations
    paths = _write_series(tmp_path / "gap", four, gaps=[SLICE_GAP, 2 * SLICE_GAP, SLICE_GAP])
    with caplog.at_level(logging.WARNING):
        volume = read_dicom_series(tmp_path / "gap")
    assert "1 slice(s) missing from the stack" in caplog.text and "none at slice(s) [2] of 5" in caplog.text
    assert volume.array.shape[:2] == (3, 5) and volume.missing_slices == (2,)
    assert not volume.array[:, 2].any() and volume.geometry.spacing[2] == pytest.approx(SLICE_GAP)
    image = sitk.GetImageFromArray(volume.array[0], isVector=False)
    volume.geometry.spatial().apply_to(image)
    for z_written, z_volume in ((0, 0), (1, 1), (2, 3), (3, 4)):
        ipp = pydicom.dcmread(paths[(z_written, 0)]).ImagePositionPatient
        assert np.allclose(image.TransformIndexToPhysicalPoint((0, 0, z_volume)), [float(v) for v in ipp], atol=1e-3)
        assert volume.files[(z_volume, 0)] == paths[(z_written, 0)]
    assert (2, 0) not in volume.files and len(volume.files) == 12
    layout = read_dicom_layout(tmp_path / "gap")
    assert layout.shape == volume.array.shape and dict(layout.files) == dict(volume.files)


def test_a_sheared_stack_is_read_with_a_warning(tmp_path, stored, caplog):
    paths = _write_series(tmp_path / "s", stored)
    for t in range(stored.shape[0]):  # the second slice moved 3 mm along the rows: off the first one's normal
        ds = pydicom.dcmread(paths[(1, t)])
        ds.ImagePositionPatient = [_ds(v) for v in ORIGIN + SLICE_GAP * ROTATION[:, 2] + 3.0 * ROTATION[:, 0]]
        ds.save_as(paths[(1, t)])
    with caplog.at_level(logging.WARNING):
        volume = read_dicom_series(tmp_path / "s")
    assert volume.array.shape == stored.shape
    assert "shifted in-plane by up to 3.00 mm" in caplog.text
    caplog.clear()
    _write_series(tmp_path / "straight", stored)
    with caplog.at_level(logging.WARNING):
        read_dicom_series(tmp_path / "straight")
    assert "shifted in-plane" not in caplog.text


def test_a_pixel_spacing_of_zero_is_refused_naming_the_file(tmp_path, stored):
    paths = _write_series(tmp_path / "s", stored)
    for path in paths.values():
        ds = pydicom.dcmread(path)
        ds.PixelSpacing = ["0", "0"]
        ds.save_as(path)
    with pytest.raises(InputFileError, match=r"IM\d+: PixelSpacing is 0\\0: the pixel size is unknown"):
        read_dicom_series(tmp_path / "s")


@pytest.mark.parametrize("orientation, reason", [
    (["0"] * 6, "not unit vectors"), (["1", "0", "0", "1", "0", "0"], "not at right angles"),
    (["2", "0", "0", "0", "2", "0"], "length 2 and 2")])
def test_an_orientation_that_is_not_two_orthonormal_directions_is_refused_naming_the_file(tmp_path, stored,
                                                                                         orientation, reason):
    paths = _write_series(tmp_path / "s", stored)
    for path in paths.values():
        ds = pydicom.dcmread(path)
        ds.ImageOrientationPatient = orientation
        ds.save_as(path)
    with pytest.raises(InputFileError, match=rf"ImageOrientationPatient is .*{reason}.*the image plane is unknown"):
        read_dicom_series(tmp_path / "s")


def test_an_orientation_written_with_few_decimals_gives_exactly_orthonormal_directions(tmp_path, stored):
    paths = _write_series(tmp_path / "s", stored)
    for path in paths.values():
        ds = pydicom.dcmread(path)
        ds.ImageOrientationPatient = [f"{float(v):.3f}" for v in ds.ImageOrientationPatient]
        ds.save_as(path)
    matrix = np.asarray(read_dicom_series(tmp_path / "s").geometry.spatial().direction).reshape(3, 3)
    assert np.allclose(matrix.T @ matrix, np.eye(3), atol=1e-12)
    assert np.allclose(matrix, ROTATION, atol=2e-3)


def test_write_dicom_as_nifti_keeps_geometry(tmp_path, stored):
    _write_series(tmp_path / "s", stored)
    out = write_dicom_as_nifti(tmp_path / "s", tmp_path / "out" / "cine.nii.gz")
    array, geometry = read_cine(out)
    volume = read_dicom_series(tmp_path / "s")
    np.testing.assert_allclose(array, volume.array)
    assert geometry.differences(volume.geometry, tol=1e-5) == []
    import nibabel as nib

    header = nib.load(str(out)).header  # the frame interval, 35 ms, labelled in the unit it is written in
    assert header.get_xyzt_units()[1] == "sec" and header.get_zooms()[3] == pytest.approx(0.035)


def _edit(path: Path, **attributes) -> None:
    """Set (a value) or delete (None) top-level attributes of one file."""
    ds = pydicom.dcmread(path)
    for keyword, value in attributes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    ds.save_as(path)


def test_monochrome1_reads_as_the_monochrome2_image_it_inverts(tmp_path, stored):
    from autocmr.preprocessing.normalization import zscore

    # 12-bit unsigned, as an export that inverts within the stored range writes it (4095 - value): exactly the
    # MONOCHROME2 image
    positive = np.abs(stored)
    _write_series(tmp_path / "mono2", positive)
    for (z, t), path in _write_series(tmp_path / "mono1", positive).items():
        _edit(path, PhotometricInterpretation="MONOCHROME1", BitsStored=12, HighBit=11, PixelRepresentation=0,
              PixelData=(4095 - positive[t, z]).astype("<u2").tobytes())
    np.testing.assert_allclose(read_dicom_series(tmp_path / "mono1").array, positive * SLOPE + INTERCEPT)
    # 16-bit signed, the same stored values: every image is the negated MONOCHROME2 one shifted by one constant
    # (slices and phases keep their relative brightness), so the z-scored volume is exactly the inverted one
    _write_series(tmp_path / "mono2_signed", stored)
    for path in _write_series(tmp_path / "mono1_signed", stored).values():
        _edit(path, PhotometricInterpretation="MONOCHROME1")
    mono1 = read_dicom_series(tmp_path / "mono1_signed").array
    mono2 = read_dicom_series(tmp_path / "mono2_signed").array
    np.testing.assert_allclose(mono1 + mono2, (mono1 + mono2).flat[0])
    np.testing.assert_allclose(zscore(mono1, None, None), -zscore(mono2, None, None), atol=1e-5)


def test_padding_pixels_get_the_lowest_real_value_of_their_image(tmp_path, stored):
    # PixelPaddingValue is a stored value (before the rescale); padded pixels would otherwise sit far below the
    # image (-2000 * 0.5 + 3) and weigh on the z-score
    padded = stored.copy()
    padded[:, :, 0, :] = -2000  # the first row of every image
    padded[1, 0, 1, :2] = -1990  # inside PixelPaddingRangeLimit in one image
    paths = _write_series(tmp_path / "s", padded)
    for (z, t), path in paths.items():
        ds = pydicom.dcmread(path)
        ds.add_new("PixelPaddingValue", "SS", -2000)  # US or SS: signed, as the pixels (PixelRepresentation 1)
        if (z, t) == (0, 1):
            ds.add_new("PixelPaddingRangeLimit", "SS", -1980)
        ds.save_as(path)
    volume = read_dicom_series(tmp_path / "s")
    expected = stored * SLOPE + INTERCEPT
    for t, z in np.ndindex(*stored.shape[:2]):
        image, real = volume.array[t, z], expected[t, z, 1:]
        if (t, z) == (1, 0):
            real = np.concatenate([real[0, 2:], real[1:].ravel()])
            assert (image[1, :2] == real.min()).all()
        assert (image[0] == real.min()).all()
        np.testing.assert_allclose(image[2:], expected[t, z, 2:])


def test_rescale_slope_0_reads_as_1_and_a_rescale_only_in_functional_groups_is_applied(tmp_path, stored, caplog):
    from pydicom.dataset import Dataset as Item

    paths = _write_series(tmp_path / "s", stored)
    _edit(paths[(1, 2)], RescaleSlope="0")
    # a single-frame file with functional groups beside its top-level position (read as classic) whose rescale
    # is only in the groups
    transform = Item()
    transform.RescaleSlope, transform.RescaleIntercept = _ds(SLOPE), _ds(INTERCEPT)
    group = Item()
    group.PixelValueTransformationSequence = [transform]
    _edit(paths[(0, 1)], RescaleSlope=None, RescaleIntercept=None, PerFrameFunctionalGroupsSequence=[group])
    with caplog.at_level(logging.WARNING):
        volume = read_dicom_series(tmp_path / "s")
    assert f"{paths[(1, 2)]}: RescaleSlope is 0, which would blank the image; read as 1" in caplog.text
    np.testing.assert_allclose(volume.array[2, 1], stored[2, 1] + INTERCEPT)
    np.testing.assert_allclose(volume.array[1, 0], stored[1, 0] * SLOPE + INTERCEPT)


# -------------------------------------------------------------------- what images at one position may differ in


def _per_phase(paths: dict[tuple[int, int], Path], **values: list) -> None:
    """Give every file the value of its phase: ``EchoTime=["2.1", "4.2", ...]`` (None deletes the attribute)."""
    for (_, t), path in paths.items():
        _edit(path, **{keyword: phases[t] for keyword, phases in values.items()})


@pytest.mark.parametrize("values, message", [
    # multi-echo T2*: no TriggerTime, one image per echo at each position
    ({"EchoTime": ["2.1", "4.2", "6.3"], "TriggerTime": [None] * 3},
     r"differ in echo time \(2\.1, 4\.2, 6\.3 ms\): a multi-echo series, not a cine"),
    ({"InversionTime": ["100", "180", "1100"]},
     r"differ in inversion time \(100, 180, 1100 ms\): a series of inversion times \(e\.g\. T1 mapping\), not a cine"),
    # PSIR: a magnitude and a real image of one heartbeat, with the same trigger time
    ({"ImageType": [["ORIGINAL", "PRIMARY", "M"], ["ORIGINAL", "PRIMARY", "R"], ["ORIGINAL", "PRIMARY", "R"]],
      "TriggerTime": ["300"] * 3},
     r"are of different types \(ImageType ORIGINAL\\PRIMARY\\M and ORIGINAL\\PRIMARY\\R\): e\.g\. magnitude "
     "beside phase or real images, not a cine"),
])
def test_images_at_one_position_that_are_no_cardiac_phases_are_refused(tmp_path, stored, values, message):
    """Several images per slice position are read as cardiac phases only when nothing but the phase tells them
    apart; a multi-echo, T1 mapping or magnitude + phase series is refused, naming the series and its folder,
    instead of being segmented as a cine."""
    paths = _write_series(tmp_path / "s", stored)
    _per_phase(paths, **values)
    with pytest.raises(InputFileError, match=r"series 7 \(sax cine\): images at one slice position \(IM\d+\) "
                                             + message) as info:
        read_dicom_series(tmp_path / "s")
    assert info.value.path == tmp_path / "s"
    with pytest.raises(InputFileError, match=message):  # the header-only layout (a DICOM-SEG's) checks the same
        read_dicom_layout(tmp_path / "s")


def test_a_cine_keeps_its_echo_and_inversion_time_and_image_type_at_every_phase(tmp_path, stored, caplog):
    paths = _write_series(tmp_path / "s", stored)
    _per_phase(paths, EchoTime=["1.532"] * 3, InversionTime=["0"] * 3,
               ImageType=[["ORIGINAL", "PRIMARY", "M", "RETRO"]] * 3)
    _edit(paths[(1, 2)], EchoTime="1.54")  # written with fewer decimals
    with caplog.at_level(logging.WARNING):
        volume = read_dicom_series(tmp_path / "s")
    assert volume.array.shape == stored.shape and caplog.text == ""
    np.testing.assert_allclose(volume.array, stored * SLOPE + INTERCEPT)


@pytest.mark.parametrize("trigger", [None, "0"])
def test_phases_that_trigger_time_does_not_tell_apart_are_ordered_by_instance_number_with_a_warning(
        tmp_path, stored, caplog, trigger):
    paths = _write_series(tmp_path / "s", stored)
    _per_phase(paths, TriggerTime=[trigger] * 3)
    with caplog.at_level(logging.WARNING):
        volume = read_dicom_series(tmp_path / "s")
    np.testing.assert_allclose(volume.array, stored[::-1] * SLOPE + INTERCEPT)  # instance numbers run backwards
    assert (f"{tmp_path / 's'}: series 7 (sax cine): TriggerTime is missing or does not tell the 3 images at each "
            "slice position apart; they are read as cardiac phases in InstanceNumber order") in caplog.text
    caplog.clear()
    _write_series(tmp_path / "stack", stored[:1], trigger=False)  # one image per position: nothing to order
    with caplog.at_level(logging.WARNING):
        read_dicom_series(tmp_path / "stack")
    assert caplog.text == ""


# --------------------------------------------------------------------------------------- missing slices


@pytest.mark.parametrize("gaps, missing", [
    ([1, 2], (2,)),  # positions 0, 10, 30 (x slice gap): median 15 would put the middle slice at 15
    ([2, 1, 1, 2], (1, 5)),  # 0, 20, 30, 40, 60: median 15 would give 5 slices 15 apart
    ([1, 1, 2], (3,)),  # 0, 10, 20, 40: the median is the slice gap already
])
def test_missing_slices_are_found_when_the_median_gap_is_not_the_slice_gap(tmp_path, gaps, missing, caplog):
    """When every gap is a whole number of the smallest gap, that is the slice gap, even when slices are missing
    so often that the median gap is another: every image then lies where its ImagePositionPatient says."""
    written = np.random.default_rng(4).integers(0, 900, size=(1, len(gaps) + 1, ROWS, COLS)).astype(np.int16)
    paths = _write_series(tmp_path / "s", written, gaps=[g * SLICE_GAP for g in gaps])
    with caplog.at_level(logging.WARNING):
        volume = read_dicom_series(tmp_path / "s")
    assert volume.missing_slices == missing and "slice gaps vary" not in caplog.text
    assert volume.array.shape[0] == len(gaps) + 1 + len(missing)
    assert volume.geometry.spacing[2] == pytest.approx(SLICE_GAP)
    image = sitk.GetImageFromArray(volume.array)
    volume.geometry.spatial().apply_to(image)
    for z_written, z_volume in enumerate(np.concatenate([[0], np.cumsum(gaps)]).astype(int)):
        ipp = [float(v) for v in pydicom.dcmread(paths[(z_written, 0)]).ImagePositionPatient]
        assert np.allclose(image.TransformIndexToPhysicalPoint((0, 0, int(z_volume))), ipp, atol=1e-3)
        assert volume.files[(int(z_volume), 0)] == paths[(z_written, 0)]
    assert read_dicom_layout(tmp_path / "s").shape == volume.array.shape


# ----------------------------------------------------------------------- files named where they lie


def _in_slice_folders(paths: dict[tuple[int, int], Path]) -> dict[tuple[int, int], Path]:
    """Each slice's files moved into a folder of its own (as some exports store a series): bare file names
    then repeat across the series."""
    moved = {}
    for (z, t), path in paths.items():
        moved[(z, t)] = path.parent / f"slice{z}" / f"IM{t}"
        moved[(z, t)].parent.mkdir(exist_ok=True)
        path.rename(moved[(z, t)])
    return moved


def test_messages_about_a_series_name_its_files_with_their_folders(tmp_path, stored):
    paths = _in_slice_folders(_write_series(tmp_path / "spacing", stored))
    _edit(paths[(1, 1)], PixelSpacing=["0.8", "1.2"])
    with pytest.raises(InputFileError, match=r"mixed pixel spacings in one series: slice0/IM0 has .*, "
                                             r"slice1/IM1 has"):
        read_dicom_series(tmp_path / "spacing")

    paths = _in_slice_folders(_write_series(tmp_path / "uneven", stored))
    paths[(1, 2)].unlink()
    with pytest.raises(InputFileError, match=r"uneven number of phases per slice location \(slice0/IM\d: 3, "
                                             r"slice1/IM\d: 2\)"):
        read_dicom_series(tmp_path / "uneven")

    paths = _in_slice_folders(_write_series(tmp_path / "plane", stored))
    for t in range(3):  # slice 1 moved into slice 0's plane, 3 mm along the rows
        _edit(paths[(1, t)], ImagePositionPatient=[_ds(v) for v in ORIGIN + 3.0 * ROTATION[:, 0]])
    with pytest.raises(InputFileError, match=r"slices overlap: slice\d/IM\d and slice\d/IM\d lie in the same "
                                             "plane at different positions"):
        read_dicom_series(tmp_path / "plane")

    three = np.concatenate([stored, stored[:, :1]], axis=1)
    _in_slice_folders(_write_series(tmp_path / "close", three, gaps=[SLICE_GAP, 0.2 * SLICE_GAP]))
    with pytest.raises(InputFileError, match=r"slices overlap: slice1/IM0 and slice2/IM0 are 1\.500 mm apart"):
        read_dicom_series(tmp_path / "close")


# --------------------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def sunnybrook_volume(sunnybrook_root):
    return read_dicom_series(sunnybrook_root / "dicom")


def test_sunnybrook_layout(sunnybrook_root, sunnybrook_volume):
    (info,) = find_dicom_series(sunnybrook_root)
    assert (info.n_locations, info.n_phases, len(info.files)) == (12, 20, 240)
    v = sunnybrook_volume
    assert v.array.shape == (20, 12, 256, 256)
    np.testing.assert_allclose(v.geometry.spacing[:3], (1.367188, 1.367188, 10.0), atol=1e-3)
    assert 0.030 < v.geometry.spacing[3] < 0.045  # seconds: 20 phases over a ~750 ms R-R interval
    assert np.all(np.diff(v.trigger_times) > 0)
    # The files of one location are consecutive instances in time order (the scanner's own numbering).
    for z in range(12):
        numbers = [int(v.files[(z, t)].stem) for t in range(20)]
        assert numbers == list(range(numbers[0], numbers[0] + 20))


@pytest.mark.parametrize("phase", [0, 18])
def test_sunnybrook_phase_matches_simpleitk(tmp_path, sunnybrook_volume, phase):
    v = sunnybrook_volume
    # Let GDCM sort this phase's files itself (by position), from a folder holding only them.
    for z in range(12):
        (tmp_path / v.files[(z, phase)].name).symlink_to(v.files[(z, phase)])
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(tmp_path)))
    reference = reader.Execute()
    ours = v.geometry.spatial()
    ref_geometry = ours.of(reference)
    assert ours.differences(ref_geometry, tol=1e-3) == []
    np.testing.assert_array_equal(v.array[phase], sitk.GetArrayFromImage(reference).astype(np.float32))
