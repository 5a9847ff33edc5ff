"""Inference with one worker process per device: each device predicts a part, the tables are merged."""
from __future__ import annotations

import json

import pytest

from autocmr.errors import ConfigurationError
from autocmr.inference.multi_device import predict_on_devices
from autocmr.inference.predictor import PredictorOptions
from autocmr.io.image import read_header, write_image
from tests.helpers import small_case


def test_two_device_processes_predict_every_case_once_and_merge(tmp_path, tiny_model_dir):
    names = ["p", "q", "r"]
    for seed, name in enumerate(names):
        case = small_case(40 + seed)
        write_image(case.image, case.geometry, tmp_path / "in" / f"{name}.nii.gz")
    out = tmp_path / "out"
    report = predict_on_devices(tmp_path / "in", out, tiny_model_dir, ["cpu", "cpu"],
                                options=PredictorOptions(mirror=False), num_workers=0)
    assert report.ok and report.merge is not None and report.merge.done == 3, report.summary()
    for name in names:
        assert read_header(out / f"{name}.nii.gz").size == read_header(tmp_path / "in" / f"{name}.nii.gz").size
    merged = json.loads((out / "predictions.json").read_text())
    assert merged["done"] == names and merged["num_parts"] == 2
    assert sorted(json.loads((out / f"predictions_part{k}.json").read_text())["part_id"] for k in (0, 1)) == [0, 1]


def test_bad_part_or_no_device_is_refused(tmp_path):
    with pytest.raises(ConfigurationError, match="part_id"):
        predict_on_devices(tmp_path, tmp_path / "out", tmp_path, ["cpu"], num_parts=2, part_id=2)
    with pytest.raises(ConfigurationError, match="at least one device"):
        predict_on_devices(tmp_path, tmp_path / "out", tmp_path, [])


def test_a_device_process_that_fails_is_reported_not_a_crash(tmp_path):
    """A process that crashes is reported (exit status 1); every device refusing its part (a bad -m, exit
    status 2 in each child) refuses the run, as one run on one device does (exit status 2)."""
    case = small_case(40)
    write_image(case.image, case.geometry, tmp_path / "in" / "p.nii.gz")
    with pytest.raises(ConfigurationError, match="cpu: refused to predict .the reason is printed above"):
        predict_on_devices(tmp_path / "in", tmp_path / "out", tmp_path / "no_such_model", ["cpu"],
                           num_workers=0)  # the child fails at loading the model, before it can report
    report = predict_on_devices(tmp_path / "in", tmp_path / "out", tmp_path / "no_such_model", ["cpu"],
                                num_workers=0, no_such_option=True)  # the child crashes (a TypeError)
    assert not report.ok and "cpu" in report.failed_devices and report.exit_codes == {"cpu": 1}
    assert "ended with code 1" in report.failed_devices["cpu"]


def test_one_device_is_the_whole_run_its_plain_tables_are_not_merged(tmp_path, tiny_model_dir):
    """--devices cpu alone writes predictions.json itself: nothing to merge, and the part records an earlier
    2-device run left in the folder are not merged over this run's."""
    import os

    for seed, name in enumerate(["p", "q"]):
        case = small_case(40 + seed)
        write_image(case.image, case.geometry, tmp_path / "in" / f"{name}.nii.gz")
    out = tmp_path / "out"
    out.mkdir()
    for k in range(2):  # an earlier --devices cpu cpu run's records
        old = {"predictor": {"configuration": "2d"}, "num_parts": 2, "part_id": k, "complete": True,
               "done": [f"old{k}"], "skipped": [], "failed": [], "cases": {f"old{k}": {}}, "wall_s": 1.0}
        (out / f"predictions_part{k}.json").write_text(json.dumps(old))
        os.utime(out / f"predictions_part{k}.json", (1_000_000_000, 1_000_000_000))
    report = predict_on_devices(tmp_path / "in", out, tiny_model_dir, ["cpu"],
                                options=PredictorOptions(mirror=False), num_workers=0)
    assert report.ok and report.merge is None, report.summary()
    record = json.loads((out / "predictions.json").read_text())
    assert sorted(record["cases"]) == ["p", "q"] and record["num_parts"] == 1 and "merged_from" not in record
    with pytest.raises(ConfigurationError, match="written by a run without parts"):  # nor by a merge later
        from autocmr.inference.parts import merge_parts

        merge_parts(out)
