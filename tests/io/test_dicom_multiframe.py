"""Enhanced (multi-frame) DICOM reads as the same volume as the single-frame files it was made from: a
synthetic oblique cine and the real Sunnybrook study, converted with highdicom (Legacy Converted Enhanced MR),
also with the Enhanced MR placement of the cardiac phase and per-frame rescaling."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from autocmr.errors import InputFileError
from autocmr.io.dicom import find_dicom_series, read_dicom_series
from tests.helpers import write_dicom_series

hd = pytest.importorskip("highdicom")
# the Sunnybrook files carry UIDs with leading zeros (anonymisation): pydicom warns on each access
pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR UI")

DATE_KEYWORDS = ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate", "InstanceCreationDate",
                 "PatientBirthDate")


def to_enhanced(files: list[Path], out: Path, *, seed: int = 0) -> Path:
    """The single-frame images ``files`` (one series) as one multi-frame file, frames in shuffled order."""
    datasets = [pydicom.dcmread(f) for f in files]
    for ds in datasets:
        ds.FrameOfReferenceUID = datasets[0].FrameOfReferenceUID  # Sunnybrook: one per file
        for keyword in DATE_KEYWORDS:  # anonymised dates (00000000) are not valid for the converter
            setattr(ds, keyword, "20200101")
        for keyword in ("StudyTime", "SeriesTime", "AcquisitionTime", "ContentTime"):
            if not ds.get(keyword):
                setattr(ds, keyword, "101500")
    order = np.random.default_rng(seed).permutation(len(datasets))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        enhanced = hd.legacy.LegacyConvertedEnhancedMRImage(
            [datasets[i] for i in order], series_instance_uid=hd.UID(), series_number=9, sop_instance_uid=hd.UID(),
            instance_number=1)
    out.parent.mkdir(parents=True, exist_ok=True)
    enhanced.save_as(out)
    return out


def as_enhanced_mr(path: Path, *, slope: float = 1.0) -> None:
    """Move each frame's TriggerTime where Enhanced MR keeps the cardiac phase (CardiacSynchronizationSequence
    > NominalCardiacTriggerDelayTime) and give every frame its own rescale slope, stored values divided by it."""
    ds = pydicom.dcmread(path)
    frames = ds.pixel_array.astype(np.float64)
    for item in ds.PerFrameFunctionalGroupsSequence:
        unassigned = item.UnassignedPerFrameConvertedAttributesSequence[0]
        sync = Dataset()
        sync.NominalCardiacTriggerDelayTime = unassigned.TriggerTime
        item.CardiacSynchronizationSequence = [sync]
        del unassigned.TriggerTime
        transform = Dataset()
        transform.RescaleSlope, transform.RescaleIntercept, transform.RescaleType = f"{slope:g}", "0", "US"
        item.PixelValueTransformationSequence = [transform]
    del ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence
    ds.PixelData = np.round(frames / slope).astype(ds.pixel_array.dtype).tobytes()
    ds.save_as(path)


def _same_volume(a, b) -> None:
    np.testing.assert_allclose(a.array, b.array)
    assert a.geometry.size == b.geometry.size
    for field in ("spacing", "origin", "direction"):
        np.testing.assert_allclose(getattr(a.geometry, field), getattr(b.geometry, field), atol=1e-5)


@pytest.fixture
def synthetic(tmp_path) -> Path:
    rotation = np.array([[0.8, -0.36, 0.48], [0.6, 0.48, -0.64], [0.0, 0.8, 0.6]])  # columns orthonormal
    frames = np.random.default_rng(5).integers(0, 1500, size=(4, 3, 7, 9)).astype(np.int16)
    attributes = {"StudyInstanceUID": hd.UID(), "FrameOfReferenceUID": hd.UID(), "PatientID": "P7",
                  "PatientName": "Test^Enhanced", "StudyDate": "20240102", "StudyTime": "101500",
                  "PatientBirthDate": "", "PatientSex": "", "AccessionNumber": "", "ReferringPhysicianName": "",
                  "StudyID": "1", "Manufacturer": "test"}
    write_dicom_series(tmp_path / "single", frames, series_number=4, pixel_spacing=(1.25, 1.5), slice_gap=8.0,
                       rotation=rotation, attributes=attributes, shuffle_names=1)
    return tmp_path / "single"


def test_enhanced_cine_reads_as_its_single_frame_files(tmp_path, synthetic):
    single = read_dicom_series(synthetic)
    path = to_enhanced(sorted(synthetic.iterdir()), tmp_path / "enhanced" / "cine.dcm")
    (info,) = find_dicom_series(tmp_path / "enhanced")
    assert (info.n_locations, info.n_phases, info.files, info.multiframe) == (3, 4, (path,), True)
    enhanced = read_dicom_series(path.parent)
    _same_volume(enhanced, single)
    assert set(enhanced.files.values()) == {path}
    np.testing.assert_allclose(enhanced.trigger_times, single.trigger_times)


def test_enhanced_mr_phase_and_per_frame_rescale(tmp_path, synthetic):
    single = read_dicom_series(synthetic)
    path = to_enhanced(sorted(synthetic.iterdir()), tmp_path / "enhanced" / "cine.dcm", seed=3)
    as_enhanced_mr(path, slope=0.5)
    _same_volume(read_dicom_series([path]), single)


def test_enhanced_monochrome1_is_inverted_and_a_frame_slope_of_0_reads_as_1(tmp_path, synthetic, caplog):
    import logging

    single = read_dicom_series(synthetic)
    path = to_enhanced(sorted(synthetic.iterdir()), tmp_path / "enhanced" / "cine.dcm", seed=4)
    ds = pydicom.dcmread(path)
    # MONOCHROME1 as an export inverting within the stored range (16-bit signed: -32768 + 32767 - value)
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.PixelData = (-1 - ds.pixel_array.astype(np.int32)).astype(ds.pixel_array.dtype).tobytes()
    ds.save_as(path)
    _same_volume(read_dicom_series([path]), single)
    as_enhanced_mr(path, slope=1.0)  # every frame its own slope; one of them 0, which would blank the frame
    ds = pydicom.dcmread(path)
    for item in ds.PerFrameFunctionalGroupsSequence[:2]:
        item.PixelValueTransformationSequence[0].RescaleSlope = "0"
    ds.save_as(path)
    with caplog.at_level(logging.WARNING):
        _same_volume(read_dicom_series([path]), single)
    assert caplog.text.count(f"{path}: RescaleSlope is 0, which would blank the image; read as 1") == 1


def test_an_enhanced_multi_echo_series_is_refused_not_read_as_a_cine(tmp_path, synthetic):
    """Frames at one position that differ in echo time are echoes, not phases, wherever the file keeps the echo
    time: a converter's unassigned per-frame attributes or Enhanced MR's MREchoSequence."""
    for path in synthetic.iterdir():  # 4 echoes (2.5 ms apart) in place of the 4 phases, no trigger time
        ds = pydicom.dcmread(path)
        ds.EchoTime = f"{2.5 * ((int(ds.InstanceNumber) - 1) % 4 + 1):g}"
        del ds.TriggerTime
        ds.save_as(path)
    path = to_enhanced(sorted(synthetic.iterdir()), tmp_path / "enhanced" / "t2star.dcm")
    message = r"differ in echo time \(2\.5, 5, 7\.5, 10 ms\): a multi-echo series, not a cine"
    with pytest.raises(InputFileError, match=message):
        read_dicom_series([path])
    ds = pydicom.dcmread(path)
    for item in ds.PerFrameFunctionalGroupsSequence:
        unassigned = item.UnassignedPerFrameConvertedAttributesSequence[0]
        echo = Dataset()
        echo.EffectiveEchoTime = float(unassigned.EchoTime)
        item.MREchoSequence = [echo]
        del unassigned.EchoTime
    ds.save_as(path)
    with pytest.raises(InputFileError, match=message):
        read_dicom_series([path])


def test_an_enhanced_file_of_one_frame_reads_like_its_single_frame_file(tmp_path, synthetic):
    one = sorted(synthetic.iterdir())[0]
    path = to_enhanced([one], tmp_path / "enhanced" / "one.dcm")
    ds = pydicom.dcmread(path)
    assert int(ds.NumberOfFrames) == 1 and "ImagePositionPatient" not in ds
    del ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].SpacingBetweenSlices  # the converter's
    ds.save_as(path)  # placeholder (1.0) for a single frame; the slice thickness (8 mm) is the source's own
    _same_volume(read_dicom_series([path]), read_dicom_series([one]))


def test_enhanced_file_with_missing_frames_is_refused_naming_it(tmp_path, synthetic):
    path = to_enhanced(sorted(synthetic.iterdir()), tmp_path / "enhanced" / "cine.dcm")
    ds = pydicom.dcmread(path)
    ds.NumberOfFrames = 11  # one frame fewer than the functional groups describe
    ds.save_as(path)
    with pytest.raises(InputFileError, match="cine.dcm.*NumberOfFrames is 11"):
        read_dicom_series(path.parent)


def test_sunnybrook_as_one_enhanced_file_reads_the_same(sunnybrook_root, tmp_path):
    whole = read_dicom_series(sunnybrook_root / "dicom")
    path = to_enhanced(sorted((sunnybrook_root / "dicom").iterdir()), tmp_path / "enhanced.dcm")
    _same_volume(read_dicom_series([path]), whole)


def test_enhanced_cine_is_predicted_with_a_nifti_mask_instead_of_seg(tmp_path, synthetic, tiny_model_dir, caplog):
    import logging

    from autocmr.inference.batch import PredictorOptions, predict_folder
    from autocmr.io.image import read_header

    single = read_dicom_series(synthetic)
    to_enhanced(sorted(synthetic.iterdir()), tmp_path / "in" / "cine.dcm")
    options = PredictorOptions(device="cpu", mirror=False, step=1.0)
    with caplog.at_level(logging.WARNING):
        report = predict_folder(tmp_path / "in", tmp_path / "out", tiny_model_dir, options=options, num_workers=0,
                                output_format="dicom-seg")
    name = "in_s9_sax_cine_enhanced_conversion"  # highdicom names the series "<source description> enhanced conversion"
    assert report.ok and report.done == [name]
    assert "not written yet" in caplog.text
    mask = read_header(tmp_path / "out" / f"{name}.nii.gz")
    assert mask.size == single.geometry.size and not mask.differences(single.geometry, 1e-5)
    assert not list((tmp_path / "out").glob("*_seg*"))


def test_seg_for_enhanced_sources_is_refused_clearly(tmp_path, synthetic):
    from autocmr.io.dicom_seg import write_seg_for_series

    path = to_enhanced(sorted(synthetic.iterdir()), tmp_path / "enhanced" / "cine.dcm")
    shape = read_dicom_series([path]).array.shape
    with pytest.raises(InputFileError, match="enhanced multi-frame files is not written yet"):
        write_seg_for_series(np.zeros(shape, np.uint8), [path], tmp_path / "out" / "case.nii.gz")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_multiframe_file_without_functional_groups_is_refused_naming_it(tmp_path, synthetic):
    path = to_enhanced(sorted(synthetic.iterdir()), tmp_path / "enhanced" / "cine.dcm")
    ds = pydicom.dcmread(path)
    del ds.PerFrameFunctionalGroupsSequence  # frames that nothing places in space
    ds.ImagePositionPatient, ds.ImageOrientationPatient, ds.PixelSpacing = [0, 0, 0], [1, 0, 0, 0, 1, 0], [1, 1]
    ds.save_as(path)
    with pytest.raises(InputFileError, match="cine.dcm.*no per-frame functional groups"):
        read_dicom_series(path.parent)


def test_heart_rate_of_an_enhanced_file(sunnybrook_root, tmp_path):
    # converters keep HeartRate among the per-frame converted attributes; the measures' HR column finds it
    from autocmr.analysis.pipeline import dicom_heart_rate

    path = to_enhanced(sorted((sunnybrook_root / "dicom").iterdir())[:24], tmp_path / "enhanced.dcm")
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    assert "HeartRate" not in ds  # not at the top level: only in the functional groups
    assert dicom_heart_rate([path]) == 80.0
