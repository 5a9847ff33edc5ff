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
    case = small_case(40)
    write_image(case.image, case.geometry, tmp_path / "in" / "p.nii.gz")
    report = predict_on_devices(tmp_path / "in", tmp_path / "out", tmp_path / "no_such_model", ["cpu"],
                                num_workers=0)  # the child fails at loading the model, before it can report
    assert not report.ok and "cpu" in report.failed_devices
    assert "ended with code" in report.failed_devices["cpu"]
