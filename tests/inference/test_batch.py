"""Batch prediction: same masks as the in-memory API, probabilities, stale temporaries, crashed workers, and the
real Sunnybrook cine DICOM study. The tiny trained model comes from tests/conftest.py, the small phantom and
DICOM writers from tests/helpers.py.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

from autocmr.inference import batch_scheduler, batch_stages
from tests.helpers import small_case, temporaries
from autocmr.inference.batch import PredictorOptions, predict_folder
from autocmr.io.dicom import read_dicom_series
from autocmr.io.image import read_header, read_image, write_image
from autocmr.io.orientation import store_permuted

def test_batch_mask_equals_in_memory_prediction(tmp_path, tiny_predictor):
    case = small_case(3, oblique=True)
    # Stored with a permutation and flips, so that the batch path has to reorient like predict_array does.
    image, geometry = store_permuted(case.image, case.geometry, (2, 0, 1), (True, False, True))
    write_image(image, geometry, tmp_path / "in" / "case_0000.nii.gz")
    report = predict_folder(tmp_path / "in", tmp_path / "out", tiny_predictor, num_workers=0, save_probabilities=True)
    assert report.done == ["case"] and report.ok
    mask, mask_geometry = read_image(tmp_path / "out" / "case.nii.gz")
    assert mask.dtype == np.uint8 and not mask_geometry.differences(geometry, 1e-5)
    expected = tiny_predictor.predict_array(image, geometry.spacing_zyx, direction=geometry.direction,
                                            return_probabilities=True)
    np.testing.assert_array_equal(mask, expected.label)
    assert len(np.unique(mask)) > 1  # a real prediction, not an empty mask
    with np.load(tmp_path / "out" / "case_probabilities.npz") as npz:
        probs = npz["probabilities"]
    assert probs.dtype == np.float16 and probs.shape == (4,) + image.shape
    np.testing.assert_allclose(probs, expected.probabilities, atol=2e-3)
    assert not temporaries(tmp_path / "out")


def test_stale_temporaries_of_this_run_are_removed_others_kept(tmp_path, tiny_predictor):
    case = small_case(4)
    write_image(case.image, case.geometry, tmp_path / "in" / "mine.nii.gz")
    out = tmp_path / "out"
    out.mkdir()
    stale = out / ".tmp_0123456789ab_mine.nii.gz"  # left by an interrupted run that was writing mine.nii.gz
    stale.write_bytes(b"half a file")
    os.utime(stale, (1_000_000_000, 1_000_000_000))  # long ago: younger ones may be another run's, being written
    other = out / ".tmp_0123456789ab_other.nii.gz"  # another part of a sharded run may be writing this now
    other.write_bytes(b"in progress elsewhere")
    report = predict_folder(tmp_path / "in", out, tiny_predictor, num_workers=0)
    assert report.done == ["mine"] and not stale.exists() and other.exists()
    assert (out / "failures.json").read_text().strip() == "[]"


def _crash_on_name(job, ctx):
    """Stage 1 replacement, run in a worker process: the case named 'crash' kills its worker."""
    if job.name == "crash":
        os._exit(3)
    return batch_stages.load_job(job, ctx)  # the worker imported autocmr afresh: this is the real stage 1


def test_crashed_worker_is_reported_and_the_batch_goes_on(tmp_path, tiny_predictor, monkeypatch):
    for seed, name in ((5, "crash"), (6, "fine")):
        case = small_case(seed, slices=3)
        write_image(case.image, case.geometry, tmp_path / "in" / f"{name}.nii.gz")
    # The pool pickles the function by reference; in the spawned worker, autocmr's own load_job is unpatched.
    monkeypatch.setattr(batch_scheduler, "load_job", _crash_on_name)
    report = predict_folder(tmp_path / "in", tmp_path / "out", tiny_predictor, num_workers=1)
    assert report.done == ["fine"] and (tmp_path / "out" / "fine.nii.gz").is_file()
    assert [(f.name, f.file) for f in report.failures] == [("crash", str(tmp_path / "in" / "crash.nii.gz"))]
    assert "worker process died" in report.failures[0].reason
    assert not (tmp_path / "out" / "crash.nii.gz").exists() and not temporaries(tmp_path / "out")


@pytest.mark.slow
def test_sunnybrook_cine_dicom_gives_4d_mask_with_dicom_geometry(tmp_path, sunnybrook_root, tiny_model_dir):
    options = PredictorOptions(device="cpu", mirror=False, step=1.0)
    report = predict_folder(sunnybrook_root, tmp_path / "out", tiny_model_dir, options=options, num_workers=1)
    assert report.ok and report.done == ["dicom_s300"]
    volume = read_dicom_series(sunnybrook_root / "dicom")
    mask_geometry = read_header(tmp_path / "out" / "dicom_s300.nii.gz")
    assert mask_geometry.size == (256, 256, 12, 20)
    assert not mask_geometry.differences(volume.geometry, 1e-5)
    image_copy = tmp_path / "out" / "images_from_dicom" / "dicom_s300.nii.gz"
    assert not read_header(image_copy).differences(volume.geometry, 1e-5)
    assert report.timings["dicom_s300"]["frames"] == 20


def test_an_interrupted_batch_keeps_the_records_of_finished_cases(tmp_path, tiny_predictor, monkeypatch):
    """Cut short after its first case (as a killed job would be), the batch has already journalled that case
    (one line, predictions.json not rewritten per case) and records it in predictions.json when interrupted;
    --continue skips it and the final file has both cases."""
    import json

    journal = tmp_path / "out" / ".predictions.progress.jsonl"

    for seed, name in ((7, "first"), (8, "second")):
        case = small_case(seed, slices=3)
        write_image(case.image, case.geometry, tmp_path / "in" / f"{name}.nii.gz")
    real_update = batch_scheduler.BatchScheduler._collect

    def stop_after_first(self, *, block):
        real_update(self, block=block)
        if self.report.done:
            # constant work per case: a journal line (after the settings line), not a rewrite of predictions.json
            assert len(journal.read_text().splitlines()) == 2
            assert not (tmp_path / "out" / "predictions.json").exists()
            raise KeyboardInterrupt  # the job is killed once one case is written

    monkeypatch.setattr(batch_scheduler.BatchScheduler, "_collect", stop_after_first)
    with pytest.raises(KeyboardInterrupt):
        predict_folder(tmp_path / "in", tmp_path / "out", tiny_predictor, num_workers=0)
    record = json.loads((tmp_path / "out" / "predictions.json").read_text())
    first = record["cases"]
    assert list(first) == ["first"] and first["first"]["seconds"]["write_s"] > 0  # recorded before the interruption
    assert record["complete"] is False and record["not_attempted"] == ["second"]  # the merge knows it stopped
    assert not journal.exists()  # merged into predictions.json
    monkeypatch.undo()
    report = predict_folder(tmp_path / "in", tmp_path / "out", tiny_predictor, num_workers=0, continue_=True)
    assert report.skipped == ["first"] and report.done == ["second"]
    record = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert sorted(record["cases"]) == ["first", "second"] and record["cases"]["first"] == first["first"]
    assert record["complete"] is True and "not_attempted" not in record


def test_a_journal_left_by_a_killed_job_is_merged_by_the_next_write(tmp_path, tiny_predictor):
    """A job killed outright (no chance to write predictions.json) leaves only the journal, its last line
    perhaps half-written: --continue merges the whole lines and drops the broken one."""
    import json

    from autocmr.inference.batch_report import progress_path

    case = small_case(7, slices=3)
    write_image(case.image, case.geometry, tmp_path / "in" / "first.nii.gz")
    out = tmp_path / "out"
    out.mkdir()
    killed = {"kind": "nifti", "sources": ["x"], "output": "y", "seconds": {}, "warnings": [], "uncertainty": [0.1]}
    progress_path(out, (1, 0)).write_text(json.dumps({"name": "earlier", "record": killed}) + "\n"
                                          + '{"name": "half-writ')
    predict_folder(tmp_path / "in", out, tiny_predictor, num_workers=0, continue_=True)
    cases = json.loads((out / "predictions.json").read_text())["cases"]
    assert sorted(cases) == ["earlier", "first"] and cases["earlier"] == killed
    assert not progress_path(out, (1, 0)).exists()


def test_continue_predicts_again_a_mask_without_a_record_and_a_failed_case_loses_its_old_record(
        tmp_path, tiny_predictor):
    import json

    for seed, name in ((7, "first"), (8, "second")):
        case = small_case(seed, slices=3)
        write_image(case.image, case.geometry, tmp_path / "in" / f"{name}.nii.gz")
    out = tmp_path / "out"
    predict_folder(tmp_path / "in", out, tiny_predictor, num_workers=0)
    record = json.loads((out / "predictions.json").read_text())
    del record["cases"]["second"]  # as a job killed after writing the mask, before recording it, leaves it
    (out / "predictions.json").write_text(json.dumps(record))
    report = predict_folder(tmp_path / "in", out, tiny_predictor, num_workers=0, continue_=True)
    assert report.skipped == ["first"] and report.done == ["second"]
    assert sorted(json.loads((out / "predictions.json").read_text())["cases"]) == ["first", "second"]
    # a rerun in which a case fails: its record (of the earlier mask) goes, so nothing presents it as this run's
    (tmp_path / "in" / "second.nii.gz").write_bytes(b"not an image any more")
    report = predict_folder(tmp_path / "in", out, tiny_predictor, num_workers=0)
    assert [f.name for f in report.failures] == ["second"]
    assert sorted(json.loads((out / "predictions.json").read_text())["cases"]) == ["first"]
    # an input problem that shares a kept case's name (first.nii beside first.nii.gz) leaves its record alone;
    # the case kept is first.nii now (sorted first), another file than its record's: predicted again
    write_image(small_case(7, slices=3).image, small_case(7, slices=3).geometry, tmp_path / "in" / "first.nii")
    (tmp_path / "in" / "second.nii.gz").unlink()
    report = predict_folder(tmp_path / "in", out, tiny_predictor, num_workers=0, continue_=True)
    assert report.done == ["first"] and [f.name for f in report.failures] == ["first"]
    assert sorted(json.loads((out / "predictions.json").read_text())["cases"]) == ["first"]


def test_continue_refuses_a_folder_predicted_with_other_settings_and_a_rerun_drops_their_records(
        tmp_path, tiny_model_dir, caplog):
    """One folder, one way of predicting: --continue with another step (or model) would mix masks made two
    ways under one record; a plain rerun of other inputs lists only what it predicted."""
    import json
    import logging

    from autocmr.errors import ConfigurationError

    for seed, name in ((7, "first"), (8, "second")):
        write_image(small_case(seed, slices=3).image, small_case(seed, slices=3).geometry,
                    tmp_path / "in" / f"{name}.nii.gz")
    out = tmp_path / "out"
    coarse = PredictorOptions(device="cpu", mirror=False, step=1.0)
    predict_folder(tmp_path / "in", out, tiny_model_dir, options=coarse, num_workers=0)
    (out / "second.nii.gz").unlink()
    fine = PredictorOptions(device="cpu", mirror=False, step=0.5)
    with pytest.raises(ConfigurationError, match=r"predictions.json.*step: 1.0 -> 0.5.*--continue would mix"):
        predict_folder(tmp_path / "in", out, tiny_model_dir, options=fine, num_workers=0, continue_=True)
    assert not (out / "second.nii.gz").exists()  # refused before predicting anything
    relative = os.path.relpath(tiny_model_dir)  # the same model named another way is the same model
    report = predict_folder(tmp_path / "in", out, relative, options=coarse, num_workers=0, continue_=True)
    assert report.skipped == ["first"] and report.done == ["second"]

    (tmp_path / "other").mkdir()
    write_image(small_case(9, slices=3).image, small_case(9, slices=3).geometry, tmp_path / "other" / "third.nii.gz")
    with caplog.at_level(logging.WARNING):
        predict_folder(tmp_path / "other", out, tiny_model_dir, options=fine, num_workers=0)
    assert sorted(json.loads((out / "predictions.json").read_text())["cases"]) == ["third"]
    assert "2 case(s) recorded by an earlier run with other settings are no longer listed" in caplog.text
    assert (out / "first.nii.gz").is_file()  # left as it was


def test_stack_stored_one_series_per_slice_is_one_case_with_mask_and_seg(tmp_path, tiny_model_dir):
    # a short-axis cine exported one series per slice (autocmr.io.dicom_stacks) plus a long-axis view of the
    # same study: the stack is one case (4D mask over all slices, one SEG per phase), the view another
    from tests.helpers import write_dicom_series

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 800, size=(3, 4, 40, 36)).astype(np.int16)
    study = {"StudyInstanceUID": "1.2.826.0.1.3680043.8.498.77", "PatientID": "P1", "FrameOfReferenceUID": "1.2.3"}
    src = tmp_path / "in"
    for z in range(4):
        write_dicom_series(src / f"sax_{z}", frames[:, z:z + 1], series_number=20 + z, description="cine sax",
                           origin=(-50.0, -60.0, 20.0 + 8.0 * z), slice_gap=8.0, attributes=study)
    write_dicom_series(src / "lax", frames[:, :1], series_number=40, description="cine 4ch", attributes=study,
                       rotation=np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]]))
    options = PredictorOptions(device="cpu", mirror=False, step=1.0)
    report = predict_folder(src, tmp_path / "out", tiny_model_dir, options=options, num_workers=0,
                            output_format="both")
    assert report.ok and sorted(report.done) == ["in_s20_cine_sax", "lax_s40_cine_4ch"]
    assert read_header(tmp_path / "out" / "in_s20_cine_sax.nii.gz").size == (36, 40, 4, 3)
    segs = sorted((tmp_path / "out" / "in_s20_cine_sax_seg").iterdir())
    assert len(segs) == 3
    import highdicom as hd

    referenced = {series for _, series, _ in hd.seg.segread(segs[0]).get_source_image_uids()}
    assert len(referenced) == 4  # phase 1's images of the four slice series


def test_a_seg_that_cannot_be_built_fails_only_the_seg_and_the_nifti_mask_stays(tmp_path, tiny_model_dir):
    """--output-format both on a single-slice cine whose files lost SliceThickness (a DICOM-SEG must copy one,
    and one slice has no gap to take it from): the NIfTI mask and probabilities are written, the case is in
    failures.json with the SEG's reason, an earlier run's SEG (made for another mask) is removed, and
    --continue predicts the case again (its SEG is missing)."""
    import json

    import pydicom

    from tests.helpers import write_dicom_series

    frames = np.random.default_rng(1).integers(0, 800, size=(3, 1, 40, 36)).astype(np.int16)
    study = {"StudyInstanceUID": "1.2.826.0.1.3680043.8.498.79", "PatientID": "P3", "FrameOfReferenceUID": "1.2.5"}
    write_dicom_series(tmp_path / "in" / "lax", frames, series_number=40, description="cine 4ch", attributes=study)
    options = PredictorOptions(device="cpu", mirror=False, step=1.0)
    out = tmp_path / "out"
    first = predict_folder(tmp_path / "in", out, tiny_model_dir, options=options, num_workers=0,
                           output_format="both")
    (name,) = first.done
    assert first.ok and (out / f"{name}_seg").is_dir()
    for path in (tmp_path / "in" / "lax").iterdir():
        ds = pydicom.dcmread(path)
        del ds.SliceThickness
        ds.save_as(path)
    (out / f"{name}.nii.gz").unlink()
    for continue_ in (False, True):
        report = predict_folder(tmp_path / "in", out, tiny_model_dir, options=options, num_workers=0,
                                output_format="both", save_probabilities=True, continue_=continue_)
        assert report.done == [] and report.skipped == [] and [f.name for f in report.failures] == [name]
        failure = report.failures[0]
        assert failure.reason.startswith(f"DICOM-SEG not written (the NIfTI mask {name}.nii.gz and its "
                                         "probabilities were written): has no SliceThickness")
        assert failure.file.startswith(str(tmp_path / "in" / "lax"))
        assert (out / f"{name}.nii.gz").is_file() and (out / f"{name}_probabilities.npz").is_file()
        assert not (out / f"{name}_seg").exists() and not temporaries(out)
        assert json.loads((out / "failures.json").read_text()) == [failure.to_dict()]
        assert json.loads((out / "predictions.json").read_text())["cases"] == {}
    assert read_header(out / f"{name}.nii.gz").size == (36, 40, 1, 3)


def test_a_dicom_stack_with_a_missing_slice_gets_a_mask_on_the_true_grid_and_a_seg(tmp_path, tiny_model_dir):
    """Slice 2 of 6 lost in export: the mask has 6 slices 10 mm apart (the missing one empty), each image's
    mask slice lies at its ImagePositionPatient, and the DICOM-SEG refers to the five images there are."""
    import highdicom as hd
    import pydicom
    import SimpleITK as sitk

    from autocmr.io.image import read_image
    from tests.helpers import write_dicom_series

    case = small_case(5, slices=6)
    src = tmp_path / "in" / "series"
    study = {"StudyInstanceUID": "1.2.826.0.1.3680043.8.498.78", "PatientID": "P2", "FrameOfReferenceUID": "1.2.4"}
    write_dicom_series(src, np.rint(case.image)[None].astype(np.int16), slice_gap=10.0, attributes=study)
    lost = [f for f in src.iterdir() if abs(float(pydicom.dcmread(f).ImagePositionPatient[2]) - 40.0) < 1e-3]
    assert len(lost) == 1
    lost[0].unlink()
    options = PredictorOptions(device="cpu", mirror=False, step=1.0)
    report = predict_folder(tmp_path / "in", tmp_path / "out", tiny_model_dir, options=options, num_workers=0,
                            output_format="both")
    assert report.ok, report.failures
    (name,) = report.done
    assert any("1 slice(s) missing" in w for w in report.warnings[name])
    mask, geometry = read_image(tmp_path / "out" / f"{name}.nii.gz")
    assert mask.shape[0] == 6 and geometry.spacing[2] == pytest.approx(10.0) and not mask[2].any()
    image = sitk.Image(*geometry.size, sitk.sitkUInt8)
    geometry.apply_to(image)
    for f in src.iterdir():
        z = float(pydicom.dcmread(f).ImagePositionPatient[2])
        index = image.TransformPhysicalPointToIndex((-50.0, -60.0, z))
        assert index[2] == round((z - 20.0) / 10.0)
    (seg,) = (tmp_path / "out").glob("*_seg.dcm")
    assert len(hd.seg.segread(seg).get_source_image_uids()) == 5


def test_the_nifti_copy_of_a_dicom_series_keeps_integer_pixels_in_a_16_bit_type():
    from autocmr.inference.batch_stages import exact_integer_copy

    pixels = np.array([[0.0, 1182.0], [17.0, 3.0]], np.float32)
    assert exact_integer_copy(pixels).dtype == np.int16
    np.testing.assert_array_equal(exact_integer_copy(pixels), pixels)
    assert exact_integer_copy(pixels + 40000).dtype == np.uint16  # above int16, within uint16
    for kept in (pixels + 0.5, pixels - 40000, pixels * 100, np.array([np.nan, 1.0], np.float32)):
        assert exact_integer_copy(kept) is kept  # fractions, out of range or not finite: written as they are
    ints = np.arange(4, dtype=np.int32)
    assert exact_integer_copy(ints) is ints


def test_a_killed_batchs_journal_says_how_it_predicted_so_continue_refuses_other_settings(tmp_path, tiny_model_dir):
    """Killed before any predictions.json existed, a batch has only its journal; its first line holds the
    settings, so --continue with another step is refused as it is against a predictions.json."""
    import json

    from autocmr.errors import ConfigurationError
    from autocmr.inference.batch_report import journal_predictor, open_journal, progress_path

    write_image(small_case(7, slices=3).image, small_case(7, slices=3).geometry, tmp_path / "in" / "first.nii.gz")
    out = tmp_path / "out"
    out.mkdir()
    coarse = PredictorOptions(device="cpu", mirror=False, step=1.0).build(tiny_model_dir)
    description = {**coarse.describe(), "cine": {}}
    open_journal(out, (1, 0), description)
    journal = progress_path(out, (1, 0))
    assert journal_predictor(journal) == json.loads(json.dumps(description))
    fine = PredictorOptions(device="cpu", mirror=False, step=0.5)
    with pytest.raises(ConfigurationError, match=r"progress.jsonl.*step: 1.0 -> 0.5"):
        predict_folder(tmp_path / "in", out, tiny_model_dir, options=fine, num_workers=0, continue_=True)
    # a plain rerun with other settings drops the killed run's journal instead of listing its cases as its own
    journal.write_text(journal.read_text() + json.dumps({"name": "old", "record": {}}))  # no newline: killed
    predict_folder(tmp_path / "in", out, tiny_model_dir, options=fine, num_workers=0)
    assert sorted(json.loads((out / "predictions.json").read_text())["cases"]) == ["first"]


def test_the_model_is_known_by_its_weights_so_a_copied_folder_continues_the_batch(tmp_path, tiny_model_dir):
    """A model folder copied elsewhere (another machine's mount point) predicts the same masks: --continue
    accepts it (other weights: tests/inference/test_batch_settings.py)."""
    import json
    import shutil

    for seed, name in ((7, "first"), (8, "second")):
        write_image(small_case(seed, slices=3).image, small_case(seed, slices=3).geometry,
                    tmp_path / "in" / f"{name}.nii.gz")
    out = tmp_path / "out"
    options = PredictorOptions(device="cpu", mirror=False)
    predict_folder(tmp_path / "in", out, tiny_model_dir, options=options, num_workers=0)
    weights = json.loads((out / "predictions.json").read_text())["predictor"]["weights"]
    assert weights and all(len(sha) == 64 for sha in weights.values())
    copy = shutil.copytree(tiny_model_dir, tmp_path / "elsewhere" / "model")
    (out / "second.nii.gz").unlink()
    report = predict_folder(tmp_path / "in", out, copy, options=options, num_workers=0, continue_=True)
    assert report.done == ["second"] and report.skipped == ["first"]


def test_a_second_process_on_the_same_part_is_refused_naming_the_first(tmp_path, tiny_predictor):
    """The same command started twice (a requeued array task racing the original): the second stops at once
    instead of predicting every case again; another part of the folder is free; the hold ends with its holder."""
    from autocmr.errors import ConfigurationError
    from autocmr.inference.batch_report import holding_part

    write_image(small_case(7, slices=3).image, small_case(7, slices=3).geometry, tmp_path / "in" / "a.nii.gz")
    out = tmp_path / "out"
    out.mkdir()
    with holding_part(out, (2, 1)):
        with pytest.raises(ConfigurationError, match=rf"part 1 of 2 in this folder is being predicted by process "
                                                     rf"{os.getpid()} on "):
            predict_folder(tmp_path / "in", out, tiny_predictor, num_workers=0, num_parts=2, part_id=1)
        predict_folder(tmp_path / "in", out, tiny_predictor, num_workers=0, num_parts=2, part_id=0)  # another part
    report = predict_folder(tmp_path / "in", out, tiny_predictor, num_workers=0, num_parts=2, part_id=1)
    assert report.ok
