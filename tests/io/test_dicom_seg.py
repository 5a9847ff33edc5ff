"""DICOM-SEG output, checked by reading the objects back with highdicom/pydicom: segment labels and codes,
referenced source instances, and each frame's geometry against its source image; atomic writing; bad input;
the real Sunnybrook series (anonymised: invalid dates, one frame of reference per file)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from scipy.spatial.transform import Rotation

from autocmr.errors import InputFileError
from autocmr.io.dicom import read_dicom_series
from autocmr.io.dicom_seg import (SEGMENTS, seg_destination, seg_output_exists, write_dicom_seg,
                                  write_seg_for_series)
from tests.helpers import temporaries, write_dicom_series

ROTATION = Rotation.from_euler("xyz", [20.0, -35.0, 10.0], degrees=True).as_matrix()  # oblique, like a SAX stack
PIXEL_SPACING = (1.25, 1.5)  # (row spacing, column spacing) in mm: unequal so that a swap shows
SLICE_GAP = 8.0
ROWS, COLS = 12, 10


def write_series(folder: Path, n_phases: int, n_slices: int, *, study_date: str = "20240102",
                 frame_of_reference: str | None = None) -> None:
    """One single-frame MR file per (slice, phase) of an oblique stack, under shuffled names, with
    study/patient attributes; image (z, t) holds the value 100 z + t."""
    values = 100 * np.arange(n_slices)[None, :] + np.arange(n_phases)[:, None]
    frames = np.broadcast_to(values[:, :, None, None], (n_phases, n_slices, ROWS, COLS)).astype(np.int16)
    attributes = {"StudyInstanceUID": generate_uid(), "FrameOfReferenceUID": frame_of_reference or generate_uid(),
                  "PatientID": "P001", "PatientName": "Test^Patient", "StudyDate": study_date, "StudyTime": "101500"}
    write_dicom_series(folder, frames, series_number=4, description=None, pixel_spacing=PIXEL_SPACING,
                       slice_gap=SLICE_GAP, origin=(-20.0, 15.0, 40.0), time_step=30.0, rotation=ROTATION,
                       attributes=attributes, shuffle_names=0)


def random_mask(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 4, size=shape).astype(np.uint8)


def check_against_source(seg_path: Path, sources: list[Path], expected: np.ndarray) -> Dataset:
    """Read one SEG back and compare it with its source images (one phase: sources in slice order)."""
    seg = hd.seg.segread(seg_path)
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in sources]
    # segments: labels and SNOMED CT codes, in label-value order
    assert [s.SegmentLabel for s in seg.SegmentSequence] == [SEGMENTS[v].label for v in (1, 2, 3)]
    assert [s.SegmentedPropertyTypeCodeSequence[0].CodeValue for s in seg.SegmentSequence] == \
        [SEGMENTS[v].sct_value for v in (1, 2, 3)]
    assert all(s.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator == "SCT" for s in seg.SegmentSequence)
    # references: exactly the source instances, in their study and frame of reference
    assert seg.StudyInstanceUID == headers[0].StudyInstanceUID and seg.PatientID == headers[0].PatientID
    assert seg.FrameOfReferenceUID == headers[0].FrameOfReferenceUID
    referenced = {(s, i) for _, s, i in seg.get_source_image_uids()}
    assert referenced == {(h.SeriesInstanceUID, h.SOPInstanceUID) for h in headers}
    # geometry: every frame sits where the image it references sits
    by_uid = {h.SOPInstanceUID: h for h in headers}
    shared = seg.SharedFunctionalGroupsSequence[0]
    for frame in seg.PerFrameFunctionalGroupsSequence:
        uid = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        np.testing.assert_allclose([float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient],
                                   [float(v) for v in by_uid[uid].ImagePositionPatient], atol=1e-4)
    np.testing.assert_allclose([float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient],
                               [float(v) for v in headers[0].ImageOrientationPatient], atol=1e-6)
    np.testing.assert_allclose([float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing], PIXEL_SPACING)
    # pixels: the mask, slice by slice, per source instance
    pixels = seg.get_pixels_by_source_instance([h.SOPInstanceUID for h in headers], combine_segments=True)
    np.testing.assert_array_equal(pixels, expected)
    return seg


def test_cine_gets_one_seg_per_phase_referencing_that_phase(tmp_path):
    write_series(tmp_path / "cine", n_phases=3, n_slices=4)
    volume = read_dicom_series(tmp_path / "cine")
    mask = random_mask(volume.array.shape)
    destination = seg_destination(tmp_path / "out" / "case.nii.gz", cine=True)
    written = write_dicom_seg(mask, volume.files, destination, phase_notes={1: "ED, full accuracy"})
    assert destination == tmp_path / "out" / "case_seg" and written == sorted(destination.iterdir())
    assert len(written) == 3 and seg_output_exists(tmp_path / "out" / "case.nii.gz")
    seriess = set()
    for t, path in enumerate(written):
        seg = check_against_source(path, [volume.files[(z, t)] for z in range(4)], mask[t])
        assert seg.InstanceNumber == t + 1 and seg.SeriesNumber == 1004
        seriess.add(seg.SeriesInstanceUID)
    assert len(seriess) == 1  # one SEG series holding one instance per phase
    assert hd.seg.segread(written[1]).ContentDescription == "autocmr, phase 2/3, ED, full accuracy"
    assert not temporaries(tmp_path / "out")


def test_3d_series_gives_one_file_and_rewrites_atomically(tmp_path):
    write_series(tmp_path / "stack", n_phases=1, n_slices=3)
    volume = read_dicom_series(tmp_path / "stack")
    destination = seg_destination(tmp_path / "out" / "stack.nii.gz", cine=False)
    assert destination.name == "stack_seg.dcm"
    mask = random_mask(volume.array.shape, seed=1)
    assert write_dicom_seg(mask, volume.files, destination) == [destination]
    check_against_source(destination, [volume.files[(z, 0)] for z in range(3)], mask)
    # an empty prediction is still a valid SEG (every frame kept, all zero)
    write_dicom_seg(np.zeros_like(mask), volume.files, destination)
    check_against_source(destination, [volume.files[(z, 0)] for z in range(3)], np.zeros_like(mask))
    assert not temporaries(tmp_path / "out")


def test_write_seg_for_series_reads_the_layout_and_replaces_a_previous_folder(tmp_path):
    write_series(tmp_path / "cine", n_phases=2, n_slices=2)
    files = sorted((tmp_path / "cine").iterdir())
    volume = read_dicom_series(files)
    stale = tmp_path / "out" / ".tmp_0123456789ab_case_seg"  # an interrupted earlier run's folder
    stale.mkdir(parents=True)
    (stale / "phase_00.dcm").write_bytes(b"half")
    first = write_seg_for_series(random_mask(volume.array.shape, 2), files, tmp_path / "out" / "case.nii.gz")
    mask = random_mask(volume.array.shape, 3)
    second = write_seg_for_series(mask, files, tmp_path / "out" / "case.nii.gz")
    assert first == second and not stale.exists() and not temporaries(tmp_path / "out")
    for t in range(2):
        check_against_source(second[t], [volume.files[(z, t)] for z in range(2)], mask[t])


def _one_series_per_slice(folder: Path, edit: Callable[[pydicom.Dataset, int], None] | None = None) -> None:
    """A 2-phase, 3-slice cine stored as one series per slice (autocmr.io.dicom_stacks joins them);
    ``edit(dataset, slice)`` changes each file further."""
    write_series(folder, n_phases=2, n_slices=3)
    for z, files in enumerate(_files_by_slice(read_dicom_series(folder))):
        uid = generate_uid()
        for path in files:
            ds = pydicom.dcmread(path)
            ds.SeriesInstanceUID, ds.SeriesNumber = uid, 20 + z
            if edit is not None:
                edit(ds, z)
            ds.save_as(path)


def test_stack_of_single_slice_series_gets_segs_referencing_every_series(tmp_path):
    # a short-axis cine stored as one series per slice (autocmr.io.dicom_stacks): each phase's SEG references
    # the images of all the slice series, in their own series
    _one_series_per_slice(tmp_path / "cine")
    files = sorted((tmp_path / "cine").iterdir())
    volume = read_dicom_series(files)
    mask = random_mask(volume.array.shape, 4)
    written = write_seg_for_series(mask, files, tmp_path / "out" / "case.nii.gz")
    assert len(written) == 2
    for t in range(2):
        seg = check_against_source(written[t], [volume.files[(z, t)] for z in range(3)], mask[t])
        assert len({s for _, s, _ in seg.get_source_image_uids()}) == 3


def _files_by_slice(volume) -> list[list[Path]]:
    n_z = 1 + max(z for z, _ in volume.files)
    return [[p for (z, _), p in volume.files.items() if z == zz] for zz in range(n_z)]


def test_bad_input_names_the_problem_and_writes_nothing(tmp_path):
    write_series(tmp_path / "cine", n_phases=2, n_slices=2)
    volume = read_dicom_series(tmp_path / "cine")
    out = tmp_path / "out" / "case_seg"
    bad_labels = random_mask(volume.array.shape)
    bad_labels[0, 0, 0, 0] = 7
    with pytest.raises(InputFileError, match=r"label value\(s\) \[7\]"):
        write_dicom_seg(bad_labels, volume.files, out)
    with pytest.raises(InputFileError, match="3 slices x 2 phases does not match"):
        write_dicom_seg(random_mask((2, 3, ROWS, COLS)), volume.files, out)
    # a slice missing from the series (no images between two that have them): no labels may sit there
    gapped = {(2 * z, t): path for (z, t), path in volume.files.items()}  # slices 0 and 2 of 3
    labels = random_mask((2, 3, ROWS, COLS))
    labels[:, 1] = 0
    labels[0, 1, 0, 0] = 1
    with pytest.raises(InputFileError, match=r"labels on slice\(s\) \[1\], which no image of the series fills"):
        write_dicom_seg(labels, gapped, out)
    with pytest.raises(InputFileError, match="reads as .* but the mask is"):
        write_seg_for_series(random_mask((2, 3, ROWS, COLS)), sorted((tmp_path / "cine").iterdir()),
                             tmp_path / "out" / "case.nii.gz")
    source = volume.files[(1, 0)]
    ds = pydicom.dcmread(source)
    del ds.StudyInstanceUID
    ds.save_as(source)
    with pytest.raises(InputFileError, match="has no StudyInstanceUID") as info:
        write_dicom_seg(random_mask(volume.array.shape), volume.files, out)
    assert info.value.path == source
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.filterwarnings("ignore:Invalid value for VR DA")  # the test writes an anonymised date
def test_anonymised_headers_are_repaired_in_the_seg_only(tmp_path, caplog):
    write_series(tmp_path / "cine", n_phases=2, n_slices=2, study_date="00000000")
    volume = read_dicom_series(tmp_path / "cine")
    first = pydicom.dcmread(volume.files[(0, 0)])
    moved = pydicom.dcmread(volume.files[(1, 1)])
    moved.FrameOfReferenceUID = generate_uid()  # per-file anonymisation
    moved.save_as(volume.files[(1, 1)])
    with caplog.at_level(logging.WARNING):
        written = write_dicom_seg(random_mask(volume.array.shape), volume.files, tmp_path / "seg")
    assert "2 different FrameOfReferenceUIDs" in caplog.text
    seg = hd.seg.segread(written[1])
    assert seg.FrameOfReferenceUID == first.FrameOfReferenceUID and seg.get("StudyDate", "") == ""
    assert pydicom.dcmread(volume.files[(1, 1)]).FrameOfReferenceUID == moved.FrameOfReferenceUID  # untouched


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")  # the study's UIDs have leading zeros
def test_sunnybrook_cine_seg_references_every_image(tmp_path, sunnybrook_root):
    volume = read_dicom_series(sunnybrook_root / "dicom")
    mask = np.zeros(volume.array.shape, np.uint8)
    mask[:, 4:8, 100:130, 110:140] = 1  # a block in the LV region is enough to check placement
    mask[:, 4:8, 95:100, 110:140] = 2
    mask[:, 5:7, 120:140, 150:170] = 3
    written = write_seg_for_series(mask, list(volume.files.values()), tmp_path / "sb.nii.gz",
                                   phase_notes={0: "ED"})
    assert len(written) == volume.array.shape[0] == 20
    for t in (0, 13):
        headers = [pydicom.dcmread(volume.files[(z, t)], stop_before_pixels=True) for z in range(12)]
        seg = hd.seg.segread(written[t])
        assert {i for _, _, i in seg.get_source_image_uids()} == {h.SOPInstanceUID for h in headers}
        pixels = seg.get_pixels_by_source_instance([h.SOPInstanceUID for h in headers], combine_segments=True)
        np.testing.assert_array_equal(pixels, mask[t])
        frame = seg.PerFrameFunctionalGroupsSequence[0]
        uid = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        source = next(h for h in headers if h.SOPInstanceUID == uid)
        np.testing.assert_allclose([float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient],
                                   [float(v) for v in source.ImagePositionPatient], atol=1e-4)


def test_a_seg_write_removes_its_own_stale_temporaries_not_another_cases(tmp_path):
    """Case P1's clean-up must not delete the live temporary of case A_P1 (its name ends in P1_seg too)."""
    from autocmr.io.dicom_seg import _remove_stale_temporaries

    mine, other = tmp_path / ".tmp_0123456789ab_P1_seg.dcm", tmp_path / ".tmp_ba9876543210_A_P1_seg.dcm"
    other_cine = tmp_path / ".tmp_ba9876543210_A_P1_seg"
    for path in (mine, other):
        path.write_bytes(b"x")
    other_cine.mkdir()
    _remove_stale_temporaries(tmp_path / "P1_seg.dcm")
    _remove_stale_temporaries(tmp_path / "P1_seg")
    assert not mine.exists() and other.exists() and other_cine.is_dir()


def test_orientation_rounding_noise_between_slice_series_gives_one_orientation(tmp_path):
    # a stack stored one series per slice whose ImageOrientationPatient differs at the 6th decimal: the reader
    # joins it (within its tolerance), and highdicom, which wants one orientation exactly, gets the first one
    def tilt(ds: pydicom.Dataset, z: int) -> None:
        ds.ImageOrientationPatient = [f"{float(v) + 2e-6 * z * (-1) ** i:.7f}"
                                      for i, v in enumerate(ds.ImageOrientationPatient)]

    _one_series_per_slice(tmp_path / "cine", edit=tilt)
    files = sorted((tmp_path / "cine").iterdir())
    volume = read_dicom_series(files)
    mask = random_mask(volume.array.shape, 5)
    written = write_seg_for_series(mask, files, tmp_path / "out" / "case.nii.gz")
    for t in range(2):
        sources = [volume.files[(z, t)] for z in range(3)]
        seg = check_against_source(written[t], sources, mask[t])  # the first slice's orientation, 1e-6
        first = pydicom.dcmread(sources[0], stop_before_pixels=True).ImageOrientationPatient
        assert list(seg.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient) \
            == [float(v) for v in first]


def test_decimal_commas_and_a_missing_slice_thickness_are_repaired_in_the_seg(tmp_path, caplog):
    from tests.io.test_dicom import _set_raw

    write_series(tmp_path / "cine", n_phases=2, n_slices=3)
    volume = read_dicom_series(tmp_path / "cine")
    for path in volume.files.values():  # as some European exports write them; the reader reads them
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        position = "\\".join(str(v).replace(".", ",") for v in ds.ImagePositionPatient).encode()
        _set_raw(path, "ImagePositionPatient", "DS", position + b" " * (len(position) % 2))
        _set_raw(path, "PixelSpacing", "DS", b"1,25\\1,5 ")
        _set_raw(path, "SpacingBetweenSlices", "DS", b"8,0 ")
        ds = pydicom.dcmread(path)
        del ds.SliceThickness
        ds.save_as(path)
    assert read_dicom_series(tmp_path / "cine").geometry.spacing == pytest.approx((1.5, 1.25, SLICE_GAP, 0.03))
    mask = random_mask(volume.array.shape, 6)
    with caplog.at_level(logging.WARNING):
        written = write_dicom_seg(mask, volume.files, tmp_path / "seg")
    assert "6 image(s) have no SliceThickness; the DICOM-SEG gives them the slice gap, 8 mm" in caplog.text
    seg = hd.seg.segread(written[1])
    measures = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert [float(v) for v in measures.PixelSpacing] == [1.25, 1.5] and float(measures.SliceThickness) == SLICE_GAP
    by_uid = {pydicom.dcmread(volume.files[(z, 1)]).SOPInstanceUID: z for z in range(3)}
    for frame in seg.PerFrameFunctionalGroupsSequence:
        z = by_uid[frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID]
        expected = (-20.0, 15.0, 40.0) + z * SLICE_GAP * ROTATION[:, 2]
        np.testing.assert_allclose([float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient],
                                   expected, atol=1e-4)
    assert b"1,25" in volume.files[(0, 0)].read_bytes()  # the sources are left as they are


def test_a_single_slice_without_thickness_and_other_highdicom_errors_name_the_source(tmp_path, monkeypatch):
    write_series(tmp_path / "one", n_phases=2, n_slices=1)
    volume = read_dicom_series(tmp_path / "one")
    for path in volume.files.values():
        ds = pydicom.dcmread(path)
        del ds.SliceThickness
        ds.save_as(path)
    with pytest.raises(InputFileError, match="no SliceThickness .*a single slice has no slice gap") as info:
        write_dicom_seg(random_mask(volume.array.shape), volume.files, tmp_path / "seg")
    assert info.value.path in volume.files.values()

    def refuse(*args, **kwargs):
        raise ValueError("Source images must have a shared orientation.")

    write_series(tmp_path / "stack", n_phases=1, n_slices=2)
    volume = read_dicom_series(tmp_path / "stack")
    monkeypatch.setattr(hd.seg, "Segmentation", refuse)
    with pytest.raises(InputFileError, match=r"highdicom cannot build the DICOM-SEG from series [0-9.]+ "
                                             r"\(ValueError: Source images must have a shared orientation") as info:
        write_dicom_seg(random_mask(volume.array.shape), volume.files, tmp_path / "seg.dcm")
    assert info.value.path == tmp_path / "stack" and not (tmp_path / "seg.dcm").exists()
