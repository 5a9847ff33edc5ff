"""When two runs into one output folder are one batch (autocmr.inference.batch_settings)."""
from __future__ import annotations

from autocmr.inference.batch_settings import input_listing, setting_differences

A = {"model": "/nodeA/models/m", "configuration": "2d", "folds": ["all"], "device": "cpu", "mirror_axes": [0, 1],
     "step": 0.5, "precision": "fp32", "postprocessing": {}, "weights": {"fold_all/checkpoint_final.pth": "a" * 64}}


def test_the_device_never_counts_and_the_weights_decide_over_the_path():
    assert setting_differences(A, dict(A, device="cuda:0")) == []
    moved = dict(A, model="/nodeB/m")
    assert setting_differences(A, moved) == []  # the same weights at another path: the same model
    retrained = dict(A, weights={"fold_all/checkpoint_final.pth": "b" * 64})
    assert [d.split(":")[0] for d in setting_differences(A, retrained)] == ["weights"]
    assert "aaaaaaaaaaaa" in setting_differences(A, retrained)[0]  # sha256s shown short


def test_without_weights_the_path_decides_within_a_part_and_not_across_parts():
    old = {k: v for k, v in A.items() if k != "weights"}  # a record written before weights were recorded
    assert setting_differences(old, A) == []  # nothing to compare the weights with: the path is the same
    assert [d.split(":")[0] for d in setting_differences(old, dict(A, model="/nodeB/m"))] == ["model"]
    assert setting_differences(old, dict(old, model="/nodeB/m"), same_part=False) == []  # parts may differ in mounts


def test_precision_and_every_other_setting_count():
    assert [d.split(":")[0] for d in setting_differences(A, dict(A, precision="bf16"))] == ["precision"]
    assert [d.split(":")[0] for d in setting_differences(A, dict(A, step=1.0, cine={"fast": True}),
                                                         same_part=False)] == ["cine", "step"]


def test_harmonisation_counts_and_a_record_without_it_reads_as_off(tiny_model_dir):
    from autocmr.inference.predictor import PredictorOptions

    on = PredictorOptions(device="cpu", harmonise=True).build(tiny_model_dir).describe()
    off = PredictorOptions(device="cpu").build(tiny_model_dir).describe()
    assert on["harmonise"] is True and off["harmonise"] is False
    assert [d.split(":")[0] for d in setting_differences(off, on)] == ["harmonise"]
    older = {k: v for k, v in off.items() if k != "harmonise"}  # a record written before it was recorded
    assert setting_differences(older, off) == [] and setting_differences(older, on) != []


def test_the_input_listing_ignores_order_and_tells_other_inputs_apart():
    assert input_listing(["b", "a"]) == input_listing(["a", "b", "a"])
    assert input_listing(["a", "b"])["cases"] == 2
    assert input_listing(["a", "b"])["digest"] != input_listing(["a", "b", "c"])["digest"]
