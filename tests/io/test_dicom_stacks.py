"""A short-axis stack stored as one DICOM series per slice reads as one volume, equal to the same images
stored as one series; what is not a stack (long-axis views, shifted slices, other studies) stays apart."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid
from scipy.spatial.transform import Rotation

from autocmr.io.dicom import find_dicom_series, read_dicom_series
from autocmr.io.dicom_stacks import MIN_STACK_SERIES
from tests.io.test_dicom import COLS, INTERCEPT, ORIGIN, ROTATION, ROWS, SLICE_GAP, SLOPE, \
    _write_image, _write_series

STUDY = "1.2.826.0.1.3680043.8.498.1"
# the Sunnybrook files carry UIDs with leading zeros (anonymisation): pydicom warns on each access
pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR UI")


def _restamp(path: Path, **tags) -> None:
    ds = pydicom.dcmread(path)
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    ds.save_as(path, enforce_file_format=True)


def _write_split_stack(folder: Path, stored: np.ndarray, *, first_number: int = 10, study: str = STUDY,
                       shift_mm: dict[int, np.ndarray] | None = None) -> dict[int, str]:
    """``stored`` (t, z, y, x) as one series per slice in its own subfolder (series number first_number + z,
    slices in reverse series order so that only the positions give the anatomical order)."""
    n_t, n_z = stored.shape[:2]
    uids = {}
    for z in range(n_z):
        uid = generate_uid()
        uids[z] = uid
        position = ORIGIN + z * SLICE_GAP * ROTATION[:, 2] + (shift_mm or {}).get(z, 0.0)
        for t in range(n_t):
            path = folder / f"slice_{z}" / f"IM{t:03d}.dcm"
            _write_image(path, stored[t, z], series_uid=uid, position=position, instance=t + 1,
                         trigger_time=15.0 + 40.0 * t)
            _restamp(path, SeriesNumber=first_number + n_z - 1 - z, StudyInstanceUID=study)
    return uids


@pytest.fixture
def stored() -> np.ndarray:
    """4 locations x 3 phases of 5x6 images with distinct values."""
    return np.random.default_rng(3).integers(-200, 2000, size=(3, 4, ROWS, COLS)).astype(np.int16)


def test_split_stack_reads_as_the_same_volume_as_one_series(tmp_path, stored):
    _write_split_stack(tmp_path / "split", stored)
    _write_series(tmp_path / "single", stored)
    (info,) = find_dicom_series(tmp_path / "split")
    assert (info.n_locations, info.n_phases, len(info.files), len(info.member_series)) == (4, 3, 12, 4)
    assert info.series_number == 10  # the stack is named after its first series
    split, single = read_dicom_series(tmp_path / "split"), read_dicom_series(tmp_path / "single")
    np.testing.assert_allclose(split.array, stored * SLOPE + INTERCEPT)
    np.testing.assert_allclose(split.array, single.array)
    np.testing.assert_allclose(split.geometry.spacing[:3], single.geometry.spacing[:3], atol=1e-6)
    np.testing.assert_allclose(split.geometry.origin[:3], single.geometry.origin[:3], atol=1e-6)
    np.testing.assert_allclose(split.geometry.direction_matrix(), single.geometry.direction_matrix(), atol=1e-6)
    # reading by the stack's UID, or from its file list, gives the same volume
    by_uid = read_dicom_series(tmp_path / "split", series_uid=info.series_instance_uid)
    np.testing.assert_array_equal(by_uid.array, split.array)
    np.testing.assert_array_equal(read_dicom_series(list(info.files)).array, split.array)


def test_long_axis_views_other_studies_and_too_few_slices_stay_apart(tmp_path, stored):
    _write_split_stack(tmp_path / "sax", stored)
    four_chamber = Rotation.from_euler("xyz", [80.0, 10.0, -30.0], degrees=True).as_matrix()
    for view, rotation in (("lax_4ch", four_chamber), ("lax_2ch", ROTATION[:, [2, 0, 1]])):
        uid = generate_uid()
        for t in range(3):
            path = tmp_path / view / f"IM{t}.dcm"
            _write_image(path, stored[t, 0], series_uid=uid, position=ORIGIN, instance=t + 1,
                         trigger_time=15.0 + 40.0 * t, orientation=rotation)
            _restamp(path, StudyInstanceUID=STUDY, SeriesNumber=30 if view == "lax_4ch" else 31)
    _write_split_stack(tmp_path / "other_study", stored, first_number=50, study=STUDY + ".2")
    _write_split_stack(tmp_path / "two", stored[:, :MIN_STACK_SERIES - 1], first_number=70, study=STUDY + ".3")
    series = find_dicom_series(tmp_path)
    shapes = sorted((s.series_number, s.n_locations, len(s.member_series)) for s in series)
    assert shapes == [(10, 4, 4), (30, 1, 0), (31, 1, 0), (50, 4, 4), (70, 1, 0), (71, 1, 0)]


def test_a_repeated_slice_replaces_the_earlier_one(tmp_path, stored, caplog):
    _write_split_stack(tmp_path, stored)  # series 10-13; slice z has series number 13 - z
    repeat = (stored[:, 1] + 7).astype(np.int16)
    uid = generate_uid()
    for t in range(3):
        path = tmp_path / "slice_1_repeat" / f"IM{t:03d}.dcm"
        _write_image(path, repeat[t], series_uid=uid, position=ORIGIN + SLICE_GAP * ROTATION[:, 2], instance=t + 1,
                     trigger_time=15.0 + 40.0 * t)
        _restamp(path, SeriesNumber=20, StudyInstanceUID=STUDY)
    with caplog.at_level(logging.WARNING):
        (info,) = find_dicom_series(tmp_path)
    assert "the later one (20) is used" in caplog.text and "12 is left out" in caplog.text
    assert len(info.member_series) == 4 and len(info.files) == 12
    volume = read_dicom_series(tmp_path)
    np.testing.assert_allclose(volume.array[:, 1], repeat * SLOPE + INTERCEPT)
    np.testing.assert_allclose(volume.array[:, 2], stored[:, 2] * SLOPE + INTERCEPT)


def test_slices_shifted_in_plane_are_not_joined(tmp_path, stored, caplog):
    shift = {2: 3.0 * ROTATION[:, 0]}  # 3 mm along the rows: more than half a pixel
    _write_split_stack(tmp_path, stored, shift_mm=shift)
    with caplog.at_level(logging.WARNING):
        series = find_dicom_series(tmp_path)
    assert len(series) == 4 and all(s.n_locations == 1 for s in series)
    assert "shifted in-plane" in caplog.text
    # a shift well below half a pixel (rounding of IPP) is still one stack
    _write_split_stack(tmp_path / "rounded", stored, shift_mm={2: 0.01 * ROTATION[:, 0]}, study=STUDY + ".9")
    assert [len(s.member_series) for s in find_dicom_series(tmp_path / "rounded")] == [4]


def test_sunnybrook_split_into_one_series_per_slice_reads_the_same(sunnybrook_root, tmp_path):
    # the real GE cine study, re-stored the way Siemens exports a short-axis cine: one series per slice
    whole = read_dicom_series(sunnybrook_root)
    uids: dict[int, str] = {}
    for (z, t), source in whole.files.items():
        ds = pydicom.dcmread(source)
        ds.SeriesInstanceUID = uids.setdefault(z, generate_uid())
        ds.SeriesNumber = 100 + z
        out = tmp_path / f"sax_{z}" / source.name
        out.parent.mkdir(exist_ok=True)
        ds.save_as(out)
    (info,) = find_dicom_series(tmp_path)
    assert len(info.member_series) == whole.array.shape[1]
    split = read_dicom_series(tmp_path)
    np.testing.assert_array_equal(split.array, whole.array)
    assert split.geometry.size == whole.geometry.size
    np.testing.assert_allclose(split.geometry.spacing, whole.geometry.spacing)
    np.testing.assert_allclose(split.geometry.origin, whole.geometry.origin)
    np.testing.assert_allclose(split.geometry.direction, whole.geometry.direction)


def test_a_slice_with_another_number_of_phases_is_named(tmp_path, stored, caplog):
    _write_split_stack(tmp_path, stored)  # slices 0-3 with 3 phases, series 13-10
    uid = generate_uid()
    for t in range(2):  # a fifth slice above the stack with 2 phases only
        path = tmp_path / "slice_4" / f"IM{t:03d}.dcm"
        _write_image(path, stored[t, 0], series_uid=uid, position=ORIGIN + 4 * SLICE_GAP * ROTATION[:, 2],
                     instance=t + 1, trigger_time=15.0 + 40.0 * t)
        _restamp(path, SeriesNumber=30, StudyInstanceUID=STUDY)
    with caplog.at_level(logging.WARNING):
        series = find_dicom_series(tmp_path)
    assert sorted((s.series_number, s.n_locations) for s in series) == [(10, 4), (30, 1)]
    assert "series 30 lies in the plane of the stack of series 10 but has 2 image(s)" in caplog.text


def test_a_slice_tilted_a_few_degrees_from_the_stack_is_named(tmp_path, stored, caplog):
    """The basal slice re-planned 3 degrees off: it cannot join the grid, and the stack would lose it without a
    word (it is the last slice, so no gap shows); a long-axis view in the same study is not named."""
    stack = np.concatenate([stored, stored[:, :1]], axis=1)  # 5 slices, series 14-10 (slice 4 is series 10)
    _write_split_stack(tmp_path, stack)
    tilted = ROTATION @ Rotation.from_euler("x", 3, degrees=True).as_matrix()
    for path in (tmp_path / "slice_4").iterdir():
        _restamp(path, ImageOrientationPatient=[f"{v:.10g}" for v in np.concatenate([tilted[:, 0], tilted[:, 1]])])
    lax = ROTATION @ Rotation.from_euler("x", 80, degrees=True).as_matrix()
    lax_uid = generate_uid()
    for t in range(3):
        path = tmp_path / "lax" / f"IM{t:03d}.dcm"
        _write_image(path, stored[t, 0], series_uid=lax_uid, position=ORIGIN,
                     instance=t + 1, trigger_time=15.0 + 40.0 * t)
        _restamp(path, SeriesNumber=40, StudyInstanceUID=STUDY,
                 ImageOrientationPatient=[f"{v:.10g}" for v in np.concatenate([lax[:, 0], lax[:, 1]])])
    with caplog.at_level(logging.WARNING):
        series = find_dicom_series(tmp_path)
    assert sorted((s.series_number, s.n_locations) for s in series) == [(10, 1), (11, 4), (40, 1)]
    assert "series 10 is a single slice tilted 3.0 degrees from the stack of series 11" in caplog.text
    assert "series 40" not in caplog.text


def test_single_slice_series_of_two_patients_are_never_joined(tmp_path, stored):
    for patient in ("A", "B"):  # exports without a StudyInstanceUID: the patient keeps them apart
        _write_split_stack(tmp_path / patient, stored[:, :3], study="")
        for path in (tmp_path / patient).rglob("*.dcm"):
            _restamp(path, PatientID=patient)
    series = find_dicom_series(tmp_path)
    assert sorted((s.n_locations, len(s.member_series)) for s in series) == [(3, 3), (3, 3)]
    for info in series:
        assert len({pydicom.dcmread(f).PatientID for f in info.files}) == 1


def test_two_interleaved_acquisitions_of_a_stack_are_warned_about(tmp_path, stored, caplog):
    # a stack acquired twice, the second shifted by half a slice gap (re-planned): 8 slices 3.75 mm apart, 7.5 thick
    _write_split_stack(tmp_path / "first", stored[:, :4], first_number=20)
    _write_split_stack(tmp_path / "second", stored[:, :4], first_number=40,
                       shift_mm={z: 0.5 * SLICE_GAP * ROTATION[:, 2] for z in range(4)})
    with caplog.at_level(logging.WARNING):
        (info,) = find_dicom_series(tmp_path)
    assert info.n_locations == 8 and "two acquisitions of one stack interleaved" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        find_dicom_series(tmp_path / "first")
    assert "interleaved" not in caplog.text
