"""Job discovery for autocmr_predict: naming styles, channels, 3D/cine, DICOM series, files to ignore or report."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from autocmr.errors import ConfigurationError, InputFileError
from autocmr.inference.inputs import PredictionJob, discover_jobs, sanitise_name
from autocmr.io.cine import write_cine
from autocmr.io.image import Geometry, write_image

GEOMETRY = Geometry((5, 4, 3), (1.5, 1.5, 8.0), (1.0, 2.0, 3.0), tuple(np.eye(3).ravel().tolist()))


def _image(path: Path, geometry: Geometry = GEOMETRY) -> Path:
    write_image(np.zeros(geometry.shape, np.float32), geometry, path)
    return path


def _cine(path: Path, frames: int) -> Path:
    d4 = np.eye(4)
    g4 = Geometry(GEOMETRY.size + (frames,), GEOMETRY.spacing + (40.0,), GEOMETRY.origin + (0.0,),
                  tuple(d4.ravel().tolist()))
    write_cine(np.zeros(g4.shape, np.float32), g4, path)
    return path


def _by_name(jobs: tuple[PredictionJob, ...]) -> dict[str, PredictionJob]:
    return {j.name: j for j in jobs}


def test_naming_styles_channels_and_kinds(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    _image(src / "two_0000.nii.gz")
    _image(src / "two_0001.nii.gz")
    _image(src / "plain.nii.gz")
    _image(src / "scan_0003.nii")  # _NNNN without a _0000 sibling: part of a plain name
    _image(src / "other.mha")
    _cine(src / "cine.nii.gz", frames=4)
    _cine(src / "oneframe.nii.gz", frames=1)
    found = discover_jobs(src, out)
    jobs = _by_name(found.jobs)
    assert not found.problems
    assert list(jobs) == sorted(jobs)
    assert jobs["two"].sources == (src / "two_0000.nii.gz", src / "two_0001.nii.gz")
    assert jobs["plain"].sources == (src / "plain.nii.gz",) and jobs["plain"].kind == "3d"
    assert jobs["scan_0003"].kind == "3d" and jobs["other"].kind == "3d"
    assert jobs["cine"].kind == "cine"
    assert jobs["oneframe"].kind == "3d"  # a 4D file with one frame is a 3D image
    assert jobs["two"].output == out / "two.nii.gz" and jobs["other"].output == out / "other.nii.gz"


def test_channel_count_gaps_and_clashes_are_problems(tmp_path):
    src = tmp_path / "in"
    _image(src / "two_0000.nii.gz")
    _image(src / "two_0001.nii.gz")
    _image(src / "gap_0000.nii.gz")
    _image(src / "gap_0002.nii.gz")
    _image(src / "dup.nii.gz")
    _image(src / "dup_0000.nii.gz")
    _image(src / "ok.nii.gz")
    found = discover_jobs(src, tmp_path / "out", num_channels=1)
    problems = {p.name: p for p in found.problems}
    assert "expects 1" in problems["two"].reason and "two_0001.nii.gz" in problems["two"].reason
    assert "without gaps" in problems["gap"].reason and "_0002" in problems["gap"].reason
    assert "already used" in problems["dup"].reason
    assert [j.name for j in found.jobs] == ["dup", "ok"]  # the first of two clashing inputs is kept


def test_broken_and_foreign_files(tmp_path):
    src, out = tmp_path / "in", tmp_path / "in" / "predictions"
    _image(src / "good.nii.gz")
    (src / "scan.jpg").write_bytes(b"\xff\xd8\xff\xe0 a format autocmr does not read")
    for side_file in ("Info.cfg", "cases.csv", "notes.txt", "README.md", "meta.JSON", "list.tsv"):
        (src / side_file).write_text("text that travels with the images")  # skipped: not images, not failures
    (src / "fake.nii.gz").write_text("this is text, not NIfTI")
    (src / ".DS_Store").write_text("hidden")
    (src / ".tmp_0123456789ab_good.nii.gz").write_text("temporary of an interrupted run")
    _image(out / "good.nii.gz")  # our own output folder inside the input is not read as input
    found = discover_jobs(src, out)
    assert [j.name for j in found.jobs] == ["good"]
    problems = {p.name: p for p in found.problems}
    assert set(problems) == {"scan.jpg", "fake"}
    assert problems["scan.jpg"].reason.startswith("not an image")
    assert problems["scan.jpg"].file == str(src / "scan.jpg")
    assert problems["fake"].reason.startswith("not an image") and problems["fake"].file.endswith("fake.nii.gz")


def test_bad_arguments(tmp_path):
    with pytest.raises(InputFileError, match="does not exist"):
        discover_jobs(tmp_path / "missing", tmp_path / "out")
    (tmp_path / "in").mkdir()
    with pytest.raises(ConfigurationError, match="input folder"):
        discover_jobs(tmp_path / "in", tmp_path / "in")


def test_single_file_input_gathers_its_channels(tmp_path):
    _image(tmp_path / "a_0000.nii.gz")
    _image(tmp_path / "a_0001.nii.gz")
    _image(tmp_path / "b.nii.gz")
    found = discover_jobs(tmp_path / "a_0001.nii.gz", tmp_path / "out")
    assert [(j.name, len(j.sources)) for j in found.jobs] == [("a", 2)]
    found = discover_jobs(tmp_path / "b.nii.gz", tmp_path / "out")
    assert [j.name for j in found.jobs] == ["b"]
    (tmp_path / "c.txt").write_text("x")
    assert discover_jobs(tmp_path / "c.txt", tmp_path / "out").problems[0].reason.startswith("not an image")


def test_dicom_series_in_subfolders(tmp_path):
    from tests.helpers import write_dicom_series

    src = tmp_path / "in"
    frames = np.arange(2 * 3 * 4 * 5, dtype=np.int16).reshape(2, 3, 4, 5)
    write_dicom_series(src / "patient 1" / "cine", frames, series_number=7, description="SAX cine/bh")
    write_dicom_series(src / "patient 1" / "cine", frames[:1], series_number=8, description="")
    write_dicom_series(src, frames[:1], series_number=2, description="")  # DICOM at the top level too
    (src / "patient 1" / "cine" / "DICOMDIR.txt").write_text("side file")  # ignored in sub-folders
    found = discover_jobs(src, tmp_path / "out")
    assert not found.problems
    jobs = _by_name(found.jobs)
    assert set(jobs) == {"patient_1_cine_s7_SAX_cine_bh", "patient_1_cine_s8", "in_s2"}
    job = jobs["patient_1_cine_s7_SAX_cine_bh"]
    assert job.kind == "dicom" and len(job.sources) == 6 and job.series_uid
    assert job.source == src / "patient 1" / "cine"
    assert job.image_copy == tmp_path / "out" / "images_from_dicom" / f"{job.name}.nii.gz"
    assert "expects 2" in discover_jobs(src, tmp_path / "out", num_channels=2).problems[0].reason


def test_an_output_that_would_overwrite_its_input_is_refused(tmp_path):
    image = _image(tmp_path / "scans" / "case.nii.gz")
    found = discover_jobs(image, tmp_path / "scans")  # the mask would be scans/case.nii.gz: the input itself
    assert not found.jobs and found.problems[0].file == str(image)
    assert "overwrite this input" in found.problems[0].reason
    assert [j.name for j in discover_jobs(image, tmp_path / "masks").jobs] == ["case"]


def test_an_output_folder_above_the_input_keeps_every_dicom_series(tmp_path):
    from tests.helpers import write_dicom_series

    study = tmp_path / "study"
    write_dicom_series(study / "dicom", np.zeros((1, 3, 4, 5), np.int16), series_number=3, description="")
    found = discover_jobs(study / "dicom", study)  # masks go beside the DICOM folder, not inside it
    assert [j.kind for j in found.jobs] == ["dicom"] and not found.problems


def test_sanitise_name():
    assert sanitise_name("a b/c:d__e") == "a_b_c_d_e"
    assert sanitise_name("..//") == "series"
    assert sanitise_name("张三/s5 CINE") == "张三_s5_CINE" != sanitise_name("李四/s5 CINE")  # no clash by script


def test_the_same_channel_twice_is_reported_not_dropped(tmp_path):
    src = tmp_path / "in"
    _image(src / "c_0000.nii")
    _image(src / "c_0000.nii.gz")
    found = discover_jobs(src, tmp_path / "out")
    assert [j.sources for j in found.jobs] == [(src / "c_0000.nii",)]
    (problem,) = found.problems
    assert problem.file == str(src / "c_0000.nii.gz") and "same case and channel as c_0000.nii" in problem.reason


def test_sunnybrook_study_is_one_cine_series(sunnybrook_root):
    found = discover_jobs(sunnybrook_root, Path("/nonexistent/out"))
    assert not found.problems  # contour text files in sub-folders are not reported
    assert [(j.name, j.kind, len(j.sources)) for j in found.jobs] == [("dicom_s300", "dicom", 240)]


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_truncated_nifti_is_detected(tmp_path, suffix):
    from autocmr.inference.inputs import check_complete

    path = _image(tmp_path / f"a{suffix}", Geometry((40, 30, 3), (1.5, 1.5, 8.0), (0.0,) * 3, GEOMETRY.direction))
    check_complete(path)  # intact: no error
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 20])
    with pytest.raises(InputFileError, match="truncated"):
        check_complete(path)


def test_reference_segmentations_beside_their_images_are_recognised_by_name():
    from autocmr.inference.inputs import reference_label_files

    names = ["p1_frame01.nii.gz", "p1_frame01_gt.nii.gz", "case_0000.nii.gz", "case_SEG.nii.gz",
             "lonely_gt.nii.gz", "scan_mask.mha", "scan.nii"]
    found = reference_label_files([Path(n) for n in names])
    # lonely_gt has no image of its own: it stays (and is refused as a label map if it is one)
    assert [p.name for p in found] == ["p1_frame01_gt.nii.gz", "case_SEG.nii.gz", "scan_mask.mha"]


def _dicom_object(path: Path, sop_class: str, modality: str | None, *, image: bool = False) -> None:
    """A non-image DICOM object (a DICOMDIR, a report...) or, with ``image``, a tiny image of that class."""
    from pydicom.uid import generate_uid

    from tests.helpers import dicom_dataset

    ds = dicom_dataset(sop_class)
    if modality is not None:
        ds.Modality, ds.SeriesInstanceUID = modality, generate_uid()
    if image:
        ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 4, 5, 3, "RGB"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.PixelData = bytes(4 * 5 * 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def test_a_study_export_segments_its_stacks_and_skips_what_is_no_image(tmp_path, caplog):
    from pydicom.uid import (BasicTextSRStorage, GrayscaleSoftcopyPresentationStateStorage,
                             MediaStorageDirectoryStorage, SecondaryCaptureImageStorage, SegmentationStorage)

    from tests.helpers import write_dicom_series

    src = tmp_path / "cd"
    frames = np.arange(2 * 3 * 4 * 5, dtype=np.int16).reshape(2, 3, 4, 5)
    write_dicom_series(src / "PT0" / "SE2", frames, series_number=2, description="sax cine")
    localizer = "1.2.826.0.1.3680043.8.498.77"
    for k, rotation in enumerate((np.eye(3), np.eye(3)[:, [1, 2, 0]], np.eye(3)[:, [2, 0, 1]])):
        write_dicom_series(src / "PT0" / "SE1" / f"plane{k}", frames[:1, :1], series_number=1, rotation=rotation,
                           description="localizer", attributes={"SeriesInstanceUID": localizer})
    write_dicom_series(src / "PT0" / "SE9", frames[:1], series_number=9, description="old mask",
                       attributes={"Modality": "SEG", "SOPClassUID": SegmentationStorage})
    _dicom_object(src / "DICOMDIR", MediaStorageDirectoryStorage, None)
    _dicom_object(src / "SR0001", BasicTextSRStorage, "SR")
    _dicom_object(src / "PR0001", GrayscaleSoftcopyPresentationStateStorage, "PR")
    _dicom_object(src / "PT0" / "SC" / "I1", SecondaryCaptureImageStorage, "OT", image=True)
    for side in ("AUTORUN.INF", "index.htm", "README"):
        (src / side).write_text("viewer of the CD")
    with caplog.at_level("INFO"):
        found = discover_jobs(src, tmp_path / "out")
    assert [j.name for j in found.jobs] == ["PT0_SE2_s2_sax_cine"] and not found.problems
    for note in ("a DICOMDIR", "a structured report", "a presentation state", "a DICOM segmentation",
                 "a secondary capture", "images in 3 planes (a localizer or survey)"):
        assert note in caplog.text, note
    assert [j.name for j in discover_jobs(src / "DICOMDIR", tmp_path / "out").jobs] == ["PT0_SE2_s2_sax_cine"]
    from autocmr.io.dicom import read_dicom_series

    with pytest.raises(InputFileError, match="not an image to segment: a structured report"):
        read_dicom_series([src / "SR0001"])


def test_two_patients_scanned_with_one_protocol_get_a_mask_each(tmp_path):
    from tests.helpers import write_dicom_series

    frames = np.arange(2 * 3 * 4 * 5, dtype=np.int16).reshape(2, 3, 4, 5)
    uids = [write_dicom_series(tmp_path / f"p{k}", frames + k, series_number=10, description="sax cine",
                               attributes={"PatientID": f"P{k}"}) for k in range(2)]
    (tmp_path / "export").mkdir()
    for k in range(2):  # one folder, as a PACS export of a day's patients
        for path in (tmp_path / f"p{k}").iterdir():
            path.rename(tmp_path / "export" / f"P{k}_{path.name}")
    found = discover_jobs(tmp_path / "export", tmp_path / "out")
    assert not found.problems and len(found.jobs) == 2
    assert {j.series_uid for j in found.jobs} == set(uids)
    assert all(j.name.startswith("export_s10_sax_cine_") and j.output.name == f"{j.name}.nii.gz"
               for j in found.jobs)
    assert found.jobs[0].name != found.jobs[1].name
    assert [j.name for j in discover_jobs(tmp_path / "export", tmp_path / "out").jobs] == \
        [j.name for j in found.jobs]  # the same names on every run (--continue, parts)


def test_a_broken_link_in_the_input_folder_is_a_failed_case_not_silence(tmp_path):
    folder = tmp_path / "in"
    _image(folder / "good.nii.gz")
    (folder / "moved.nii.gz").symlink_to(tmp_path / "elsewhere" / "moved.nii.gz")
    found = discover_jobs(folder, tmp_path / "out")
    assert [j.name for j in found.jobs] == ["good"]
    (problem,) = found.problems
    assert problem.name == "moved.nii.gz" and "broken link" in problem.reason and "elsewhere" in problem.reason


def test_names_that_differ_only_in_case_clash_as_one_output_file(tmp_path):
    """Case1.nii.gz and case1.nii.gz would write one mask on a case-insensitive output folder (macOS, Windows,
    some shares): the first is kept and the other reported, as for equal names; two DICOM series so named get
    their series UID's hash, as series of equal names do."""
    from tests.helpers import write_dicom_series

    src = tmp_path / "in"
    _image(src / "Case1.nii.gz")
    _image(src / "case1.nii.gz")
    _image(src / "other.nii.gz")
    found = discover_jobs(src, tmp_path / "out")
    assert [j.name for j in found.jobs] == ["Case1", "other"]
    (problem,) = found.problems
    assert problem.name == "case1" and problem.file == str(src / "case1.nii.gz")
    assert "differs only in case from Case1" in problem.reason and "Case1.nii.gz" in problem.reason

    frames = np.arange(2 * 3 * 4 * 5, dtype=np.int16).reshape(2, 3, 4, 5)
    for k, description in enumerate(["sax cine", "SAX cine"]):
        write_dicom_series(tmp_path / f"p{k}", frames + k, series_number=10, description=description,
                           attributes={"PatientID": f"P{k}"})
    (tmp_path / "export").mkdir()
    for k in range(2):
        for path in (tmp_path / f"p{k}").iterdir():
            path.rename(tmp_path / "export" / f"P{k}_{path.name}")
    found = discover_jobs(tmp_path / "export", tmp_path / "out")
    names = sorted(j.name for j in found.jobs)
    assert not found.problems and len(names) == 2 and names[0].casefold() != names[1].casefold()
    assert names[0].startswith("export_s10_SAX_cine_") and names[1].startswith("export_s10_sax_cine_")
