"""Batch prediction into a folder other runs touch: --continue compares a case's input files, not only its
name; runs split otherwise than one running there are refused; a temporary another run may be writing is left
alone; a file system without locks does not stop a batch. The tiny model comes from tests/conftest.py."""
from __future__ import annotations

import errno
import json
import logging
import os
import time

import pytest

from autocmr.errors import ConfigurationError
from autocmr.inference.batch import predict_folder
from autocmr.io.image import read_header, write_image
from tests.helpers import small_case


def _write(path, seed, slices):
    case = small_case(seed, slices=slices)
    write_image(case.image, case.geometry, path)
    return path


def test_continue_predicts_again_a_case_recorded_from_other_input_files(tmp_path, tiny_predictor, caplog):
    """-i siteA, then -i siteB --continue (same case names), then a study re-exported in place: each time
    the case is predicted again, since its record names files of another size or time."""
    _write(tmp_path / "siteA" / "case1.nii.gz", 7, 3)
    _write(tmp_path / "siteB" / "case1.nii.gz", 8, 4)
    then = time.time() - 100
    os.utime(tmp_path / "siteB" / "case1.nii.gz", (then, then))
    out = tmp_path / "out"
    predict_folder(tmp_path / "siteA", out, tiny_predictor, num_workers=0)
    assert read_header(out / "case1.nii.gz").size[2] == 3
    with caplog.at_level(logging.INFO, logger="autocmr.inference.batch"):
        report = predict_folder(tmp_path / "siteB", out, tiny_predictor, num_workers=0, continue_=True)
    assert report.done == ["case1"] and report.skipped == []
    assert read_header(out / "case1.nii.gz").size[2] == 4  # siteB's mask, not siteA's
    assert "1 case(s) were recorded from other input files than these" in caplog.text
    report = predict_folder(tmp_path / "siteB", out, tiny_predictor, num_workers=0, continue_=True)
    assert report.skipped == ["case1"] and report.done == []  # the same files: skipped
    os.utime(tmp_path / "siteB" / "case1.nii.gz", (then + 50, then + 50))  # exported again in place
    report = predict_folder(tmp_path / "siteB", out, tiny_predictor, num_workers=0, continue_=True)
    assert report.done == ["case1"]


def test_continue_skips_by_name_a_case_recorded_before_sources_were_stamped(tmp_path, tiny_predictor):
    _write(tmp_path / "in" / "case1.nii.gz", 7, 3)
    out = tmp_path / "out"
    predict_folder(tmp_path / "in", out, tiny_predictor, num_workers=0)
    record = json.loads((out / "predictions.json").read_text())
    assert record["cases"]["case1"]["sources_stamp"]
    del record["cases"]["case1"]["sources_stamp"]  # as autocmr wrote it before
    (out / "predictions.json").write_text(json.dumps(record))
    later = time.time() + 100
    os.utime(tmp_path / "in" / "case1.nii.gz", (later, later))
    report = predict_folder(tmp_path / "in", out, tiny_predictor, num_workers=0, continue_=True)
    assert report.skipped == ["case1"] and report.done == []


def test_a_fresh_temporary_of_this_runs_outputs_is_left_to_the_run_writing_it(tmp_path, tiny_predictor):
    """A plain run beside a --num-parts run that the locks did not keep out (no flock on the file system):
    the temporary the other run is writing now must survive this run's clean-up; an old one goes."""
    _write(tmp_path / "in" / "mine.nii.gz", 4, 3)
    _write(tmp_path / "in" / "yours.nii.gz", 5, 3)
    out = tmp_path / "out"
    out.mkdir()
    live = out / ".tmp_0123456789ab_yours.nii.gz"
    live.write_bytes(b"being written by another run")
    stale = out / ".tmp_0123456789ab_mine.nii.gz"
    stale.write_bytes(b"left by a run killed hours ago")
    hours_ago = time.time() - 7200
    os.utime(stale, (hours_ago, hours_ago))
    assert predict_folder(tmp_path / "in", out, tiny_predictor, num_workers=0).done == ["mine", "yours"]
    assert live.exists() and not stale.exists()


def test_a_run_split_otherwise_than_one_running_in_the_folder_is_refused(tmp_path, tiny_predictor):
    """A plain run (or another --devices count) beside a 2-part run would predict the same cases at once,
    each into its own records; parts of the one split run side by side."""
    from autocmr.inference.batch_report import holding_part

    _write(tmp_path / "in" / "a.nii.gz", 7, 3)
    out = tmp_path / "out"
    out.mkdir()
    with holding_part(out, (2, 1)):  # part 1 of a 2-part run is predicting here
        with pytest.raises(ConfigurationError, match=r"another run \(split into 2 parts\) is predicting into this "
                                                     r"folder now and this one is not split"):
            predict_folder(tmp_path / "in", out, tiny_predictor, num_workers=0)
        with pytest.raises(ConfigurationError, match=r"split into 2 parts.*this one is split into 3 parts"):
            predict_folder(tmp_path / "in", out, tiny_predictor, num_workers=0, num_parts=3, part_id=0)
        assert predict_folder(tmp_path / "in", out, tiny_predictor, num_workers=0, num_parts=2, part_id=0).ok
    assert not (out / "predictions.json").exists()  # refused before writing anything
    assert predict_folder(tmp_path / "in", out, tiny_predictor, num_workers=0).ok  # once it has ended


def test_a_file_system_without_flock_does_not_stop_the_batch(tmp_path, tiny_predictor, monkeypatch):
    import fcntl

    from autocmr.io import locks

    def flock(fd, operation):
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))

    locks._warn_no_locking_under.cache_clear()
    monkeypatch.setattr(fcntl, "flock", flock)
    _write(tmp_path / "in" / "a.nii.gz", 7, 3)
    report = predict_folder(tmp_path / "in", tmp_path / "out", tiny_predictor, num_workers=0)
    assert report.ok and report.done == ["a"]


def test_the_stamp_of_a_case_read_with_its_other_phase_covers_that_file_too(tmp_path):
    """Models that take the other cardiac phase as input: ES re-exported in place changes the ED prediction,
    so --continue must see it; a case without a partner keeps the stamp it had."""
    from dataclasses import replace

    from autocmr.inference.batch_report import same_sources, sources_stamp
    from autocmr.inference.inputs import PredictionJob

    ed = _write(tmp_path / "in" / "p1_ED.nii.gz", 7, 3)
    es = _write(tmp_path / "in" / "p1_ES.nii.gz", 8, 3)
    alone = PredictionJob("p1_ED", "3d", (ed,), tmp_path / "out" / "p1_ED.nii.gz")
    paired = replace(alone, partner_sources=(es,))
    record = {"sources_stamp": sources_stamp(paired)}
    assert sources_stamp(alone) != sources_stamp(paired)
    assert same_sources(record, paired)
    later = time.time() + 100
    os.utime(es, (later, later))  # only the other phase changed
    assert not same_sources(record, paired)
    assert same_sources({"sources_stamp": sources_stamp(alone)}, alone)


def test_a_stack_the_2d_model_would_cut_across_its_slices_is_predicted_with_a_warning(tmp_path, tiny_predictor):
    import numpy as np

    from autocmr.io.image import Geometry

    assert tiny_predictor.config.dim == 2
    tilt = np.deg2rad(20)
    normal, u = np.array([np.cos(tilt), np.sin(tilt), 0.0]), np.array([-np.sin(tilt), np.cos(tilt), 0.0])
    direction = tuple(np.stack([u, np.cross(normal, u), normal], axis=1).ravel())
    image = np.random.default_rng(0).normal(100, 20, (6, 40, 40)).astype(np.float32)
    write_image(image, Geometry((40, 40, 6), (1.7, 1.7, 3.3), (0.0, 0.0, 0.0), direction), tmp_path / "in" / "a.nii.gz")
    report = predict_folder(tmp_path / "in", tmp_path / "out", tiny_predictor, num_workers=0)
    assert report.ok and any("cuts across the slices" in w for w in report.warnings["a"])


def test_a_study_replaced_while_its_case_runs_is_predicted_again_by_continue(tmp_path, tiny_predictor,
                                                                               monkeypatch):
    """The record's stamp is the input's as it was read: a re-export landing while the network runs leaves
    a mask of the old files, which the next --continue must not take for the new ones'."""
    source = _write(tmp_path / "in" / "case1.nii.gz", 7, 3)
    then = time.time() - 100
    os.utime(source, (then, then))
    original = type(tiny_predictor).probabilities_and_uncertainty

    def replaced_meanwhile(self, *args, **kwargs):
        os.utime(source, (then + 50, then + 50))  # the export tool writes the study again now
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(tiny_predictor), "probabilities_and_uncertainty", replaced_meanwhile)
    out = tmp_path / "out"
    assert predict_folder(tmp_path / "in", out, tiny_predictor, num_workers=0).done == ["case1"]
    monkeypatch.undo()
    report = predict_folder(tmp_path / "in", out, tiny_predictor, num_workers=0, continue_=True)
    assert report.done == ["case1"] and report.skipped == []
    report = predict_folder(tmp_path / "in", out, tiny_predictor, num_workers=0, continue_=True)
    assert report.skipped == ["case1"]  # now recorded from the files as they are


def test_continue_with_another_number_of_parts_keeps_no_outdated_copy_of_a_case(tmp_path, tiny_predictor):
    """Three parts, then two parts with --continue after one study was re-exported: the case is predicted
    again by the part it falls in now, and neither the merge nor a later --continue takes the record an
    earlier part left in a file of the same name for it."""
    from autocmr.inference.parts import merge_parts

    names = ["a", "b", "c", "d", "e"]
    then = time.time() - 100
    for seed, name in enumerate(names):
        os.utime(_write(tmp_path / "in" / f"{name}.nii.gz", 20 + seed, 3), (then, then))
    out = tmp_path / "out"
    for k in range(3):
        predict_folder(tmp_path / "in", out, tiny_predictor, num_parts=3, part_id=k, num_workers=0)
    old = {k: set(json.loads((out / f"predictions_part{k}.json").read_text())["cases"]) for k in range(3)}
    new = {k: predict_folder(tmp_path / "in", out, tiny_predictor, num_parts=2, part_id=k, num_workers=0,
                             continue_=True) for k in range(2)}
    moved = next(n for n in sorted(old[1]) if n not in set(new[1].skipped))  # in old part 1, new part 0 now
    os.utime(tmp_path / "in" / f"{moved}.nii.gz", (then + 50, then + 50))  # exported again
    reports = [predict_folder(tmp_path / "in", out, tiny_predictor, num_parts=2, part_id=k, num_workers=0,
                              continue_=True) for k in range(2)]
    assert sum(moved in r.done for r in reports) == 1
    for k in range(2):  # each part's record lists only the cases dealt to it now
        cases = json.loads((out / f"predictions_part{k}.json").read_text())["cases"]
        assert set(cases) == set(reports[k].done) | set(reports[k].skipped)
    merge_parts(out)
    merged = json.loads((out / "predictions.json").read_text())["cases"]
    from autocmr.inference.batch_report import sources_stamp
    from autocmr.inference.inputs import discover_jobs
    job = next(j for j in discover_jobs(tmp_path / "in", out).jobs if j.name == moved)
    assert merged[moved]["sources_stamp"] == sources_stamp(job)
    again = [predict_folder(tmp_path / "in", out, tiny_predictor, num_parts=2, part_id=k, num_workers=0,
                            continue_=True) for k in range(2)]
    assert all(r.done == [] for r in again) and sorted(n for r in again for n in r.skipped) == names


def test_a_case_whose_read_hangs_fails_after_the_worker_timeout_and_the_batch_goes_on(tmp_path, tiny_predictor):
    """A study on a network mount that stops answering: its read never returns. With a worker timeout the
    case fails, naming the time limit, and the case queued behind it is predicted in fresh workers."""
    from autocmr.inference.batch_report import BatchReport
    from autocmr.inference.batch_scheduler import BatchScheduler
    from autocmr.inference.inputs import PredictionJob
    from autocmr.parallel import ResilientPool

    hung = tmp_path / "in" / "hung.nii.gz"
    hung.parent.mkdir()
    os.mkfifo(hung)  # opened for reading, it blocks until a writer comes: none will
    good = _write(tmp_path / "in" / "good.nii.gz", 7, 3)
    out = tmp_path / "out"
    out.mkdir()
    jobs = [PredictionJob("hung", "3d", (hung,), out / "hung.nii.gz"),
            PredictionJob("good", "3d", (good,), out / "good.nii.gz")]
    workers = ResilientPool(1, task_timeout_s=600)
    try:
        assert workers.result(workers.submit(abs, -1)) == 1  # started: the limit below is the cases' own
        workers.task_timeout_s = 5.0
        report = BatchReport(out)
        scheduler = BatchScheduler(tiny_predictor, workers, False, report)
        scheduler.run(jobs)
        scheduler.close()
    finally:
        workers.close()
    assert report.done == ["good"] and (out / "good.nii.gz").is_file()
    assert [f.name for f in report.failures] == ["hung"] and "no result within 5 s" in report.failures[0].reason


def test_an_image_the_user_keeps_in_the_output_folder_is_never_overwritten(tmp_path, tiny_predictor):
    """-o pointed at a folder of scans by mistake: a scan named like a case is no mask (masks are uint8), so
    that case fails naming it and the scan is left as it is; the other cases are predicted."""
    _write(tmp_path / "in" / "a.nii.gz", 7, 3)
    _write(tmp_path / "in" / "b.nii.gz", 8, 3)
    scan = _write(tmp_path / "out" / "a.nii.gz", 9, 3)  # an MR image (float), not a mask
    before = scan.read_bytes()
    report = predict_folder(tmp_path / "in", tmp_path / "out", tiny_predictor, num_workers=0)
    assert report.done == ["b"] and [f.name for f in report.failures] == ["a"]
    assert "holds a file of this name that is no autocmr mask" in report.failures[0].reason
    assert scan.read_bytes() == before
    again = predict_folder(tmp_path / "in", tmp_path / "out", tiny_predictor, num_workers=0)  # masks: replaced
    assert again.done == ["b"]


def test_an_empty_input_or_output_name_is_refused_not_taken_for_the_current_folder(tmp_path, tiny_predictor,
                                                                                  monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "in" / "a.nii.gz", 7, 3)
    with pytest.raises(Exception, match="output folder is an empty name"):
        predict_folder(tmp_path / "in", "", tiny_predictor, num_workers=0)
    with pytest.raises(Exception, match="input is an empty name"):
        predict_folder("", tmp_path / "out", tiny_predictor, num_workers=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]
