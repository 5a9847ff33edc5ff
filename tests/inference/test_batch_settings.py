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


def test_without_weights_the_path_decides_within_a_part_and_across_parts():
    old = {k: v for k, v in A.items() if k != "weights"}  # a record written before weights were recorded
    assert setting_differences(old, A) == []  # nothing to compare the weights with: the path is the same
    assert [d.split(":")[0] for d in setting_differences(old, dict(A, model="/nodeB/m"))] == ["model"]
    # two parts of a split without checksums: only the path tells their models apart (tests/inference/test_parts.py)
    assert [d.split(":")[0] for d in setting_differences(old, dict(old, model="/nodeB/m"))] == ["model"]


def test_the_checkpoint_is_described_and_counts_but_not_against_a_record_without_it(tiny_model_dir):
    from autocmr.inference.predictor import PredictorOptions

    final = PredictorOptions(device="cpu").build(tiny_model_dir).describe()
    assert final["checkpoint"] == "final"
    unweighed = {k: v for k, v in final.items() if k != "weights"}  # a model folder without checksums
    assert setting_differences(unweighed, dict(unweighed, checkpoint="best")) == ["checkpoint: final -> best"]
    older = {k: v for k, v in final.items() if k != "checkpoint"}  # written before autocmr recorded it
    assert setting_differences(older, final) == [] and setting_differences(final, older) == []


def test_precision_and_every_other_setting_count():
    assert [d.split(":")[0] for d in setting_differences(A, dict(A, precision="bf16"))] == ["precision"]
    assert [d.split(":")[0] for d in setting_differences(A, dict(A, step=1.0, cine={"fast": True}))] == ["cine",
                                                                                                       "step"]


def test_harmonisation_counts_and_a_record_without_it_reads_as_off(tiny_model_dir):
    from autocmr.inference.predictor import PredictorOptions

    on = PredictorOptions(device="cpu", harmonise=True).build(tiny_model_dir).describe()
    off = PredictorOptions(device="cpu").build(tiny_model_dir).describe()
    assert on["harmonise"] is True and off["harmonise"] is False
    assert [d.split(":")[0] for d in setting_differences(off, on)] == ["harmonise"]
    older = {k: v for k, v in off.items() if k != "harmonise"}  # a record written before it was recorded
    assert setting_differences(older, off) == [] and setting_differences(older, on) != []


def test_the_input_listing_ignores_order_and_tells_other_inputs_apart():
    a, b, c = ("a", "a"), ("b", "b"), ("c", "c")
    assert input_listing([b, a]) == input_listing([a, b, a])
    assert input_listing([a, b])["cases"] == 2
    assert input_listing([a, b])["digest"] != input_listing([a, b, c])["digest"]


def test_the_listing_digests_what_the_split_is_dealt_over_jobs_and_subjects_apart_from_problems():
    """A study unreadable when one part looked (still being copied) is a problem there and a job in the next
    part: the same names, another deal. So is another cases.csv pairing (another subject for a case)."""
    copying = input_listing([("a", "a"), ("c", "c")], ["b"])
    copied = input_listing([("a", "a"), ("b", "b"), ("c", "c")])
    assert copying["digest"] != copied["digest"] and copying["problems"] == 1 and copied["problems"] == 0
    assert input_listing([("a", "s1"), ("b", "s1")])["digest"] != input_listing([("a", "s1"), ("b", "s2")])["digest"]
    x, y = input_listing([("a", "a")], ["x"]), input_listing([("a", "a")], ["y"])
    assert x["digest"] == y["digest"] and x["problems_digest"] != y["problems_digest"]
