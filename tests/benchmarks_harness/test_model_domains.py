"""benchmarks/model_domains.py without a network: argument handling, the choice of validation patients, the
scanner-change inputs and the README table."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
model_domains = pytest.importorskip("model_domains")
cross_domain = pytest.importorskip("cross_domain")

from autocmr.io.image import Geometry, read_image, write_image  # noqa: E402

CV = "/data/cv_edge/results/Dataset101_ACDC/autocmrPlans_cpu__2d"


def test_defaults_and_where_a_run_s_results_go():
    args = model_domains.parse_args(["--cv-model", CV])
    assert (args.mirror, args.model, args.limit, args.folds) == (False, "default", None, None)
    assert model_domains.default_raw(args.cv_model) == Path("/data/cv_edge/raw/Dataset101_ACDC")
    folds = [0, 1, 2, 3, 4]
    assert model_domains.run_name(args, folds) == ("edge", True)
    every_fold = model_domains.parse_args(["--cv-model", CV, "--folds", "4", "3", "2", "1", "0", "--mirror"])
    assert model_domains.run_name(every_fold, folds) == ("edge_mirror", True)
    quick = model_domains.parse_args(["--cv-model", CV, "--folds", "0", "--limit", "1", "--name", "x"])
    assert model_domains.run_name(quick, folds) == ("x_folds0_limit1", False)  # never results/model_domains_x.json
    with pytest.raises(SystemExit):
        model_domains.parse_args(["--cv-model", CV, "--limit", "0"])


def _meta(subjects):
    rows = [(f"{s}_frame0{i}", s, phase) for s in subjects for i, phase in ((1, "ED"), (2, "ES"))]
    return pd.DataFrame(rows, columns=["case_id", "subject", "phase"]).set_index("case_id")


def test_each_fold_takes_its_first_validation_patients_and_refuses_a_patient_seen_in_training():
    meta = _meta(["p1", "p2", "p3", "p4"])
    cases = lambda *subs: [c for c in meta.index if meta.at[c, "subject"] in subs]  # noqa: E731
    splits = [{"train": cases("p3", "p4"), "val": cases("p2", "p1")},
              {"train": cases("p1", "p2"), "val": cases("p3", "p4")}]
    assert model_domains.validation_subjects(splits, meta, [0, 1], None) == {0: ["p1", "p2"], 1: ["p3", "p4"]}
    assert model_domains.validation_subjects(splits, meta, [1], 1) == {1: ["p3"]}
    leaky = [{"train": cases("p1", "p3") + ["p2_frame01"], "val": ["p2_frame02"]}]
    with pytest.raises(SystemExit, match="p2"):
        model_domains.validation_subjects(leaky, meta, [0], None)


def test_a_case_gets_the_same_scanner_change_whatever_else_is_tested(tmp_path):
    assert model_domains.shifted_copy is cross_domain.shifted_copy  # the cross-domain study's transform itself
    raw = tmp_path / "raw"
    (raw / "imagesTr").mkdir(parents=True)
    geometry = Geometry((12, 10, 3), (1.5, 1.5, 8.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    rng = np.random.default_rng(0)
    for case in ("a", "b"):
        image = rng.uniform(0, 500, (3, 10, 12)).astype(np.float32)
        write_image(image, geometry, raw / "imagesTr" / f"{case}_0000.nii.gz")
    model_domains.fold_inputs(raw, ["a"], tmp_path / "alone" / "plain", tmp_path / "alone" / "shifted")
    model_domains.fold_inputs(raw, ["b", "a"], tmp_path / "both" / "plain", tmp_path / "both" / "shifted")
    alone, _ = read_image(tmp_path / "alone" / "shifted" / "a_0000.nii.gz")
    both, _ = read_image(tmp_path / "both" / "shifted" / "a_0000.nii.gz")
    original, _ = read_image(tmp_path / "both" / "plain" / "a_0000.nii.gz")
    np.testing.assert_array_equal(alone, both)
    assert alone.shape == original.shape and not np.allclose(alone, original)
    with pytest.raises(SystemExit, match="no image"):
        model_domains.fold_inputs(raw, ["c"], tmp_path / "c" / "plain", tmp_path / "c" / "shifted")


def _summary(classes, agreement, n_volumes, n_subjects):
    return {"n_volumes": n_volumes, "n_failed": 0,
            "classes": {c: {"dice": {"mean": d}, "hd95": {"mean": h}} for c, (d, h) in classes.items()},
            "mean_over_classes": {"dice": float(np.mean([d for d, _ in classes.values()]))},
            "clinical": {"n_complete": n_subjects, "agreement": agreement}}


def test_the_readme_table_has_one_row_per_test_set_and_dashes_where_nothing_was_measured():
    agreement = {m: {"n": 2, "bias": -1.25, "mean_abs_diff": 3.44, "spearman_r": float("nan")}
                 for m in ("LVEDV", "LVESV", "LVEF", "LVM", "RVEDV", "RVEF")}
    cv = model_domains.figures(_summary({"LV": (0.93, 4.2), "MYO": (0.86, 5.0), "RV": (0.85, 9.81)}, agreement, 4, 2))
    none = {m: {"n": 0, "bias": None} for m in agreement}
    sb = model_domains.figures(_summary({"LV": (0.922, 1.77), "MYO": (0.776, 2.62)}, none, 9, 0))
    assert cv["clinical"]["RVEF"]["spearman_r"] is None and sb["clinical"] == {}
    lines = model_domains.markdown_table({"in_domain": cv, "scanner_change": cv, "sunnybrook": sb}).splitlines()
    assert len(lines) == 5 and all(line.count("|") == 13 for line in lines)
    assert lines[2].startswith("| in-domain (ACDC CV) | 4 (2) | 0.930 | 0.860 | 0.850 | 0.880 | 4.2 / 5.0 / 9.8 |")
    assert lines[2].endswith("| -1.2 / 3.4 | -1.2 / 3.4 | -1.2 / 3.4 | -1.2 / 3.4 | -1.2 / 3.4 |")
    assert lines[4] == "| Sunnybrook, GE (LV/MYO) | 9 | 0.922 | 0.776 | – | 0.849 | 1.8 / 2.6 / – |" + " – |" * 5


def test_without_cross_validation_folds_only_the_sunnybrook_row_is_measured_and_said_so():
    with pytest.raises(SystemExit):  # the results need a name when no CV folder names them
        model_domains.parse_args(["--model", "/m"])
    args = model_domains.parse_args(["--model", "/m", "--model-folds", "all", "--name", "e96"])
    assert args.cv_model is None and args.model_folds == ["all"]
    none = {m: {"n": 0, "bias": None} for m in ("LVEDV", "LVEF")}
    sb = model_domains.figures(_summary({"LV": (0.922, 1.77), "MYO": (0.776, 2.62)}, none, 9, 0))
    result = {"machine": {"date": "2026-11-30T03:00:00"}, "args": {"mirror": False}, "cv": None,
              "sunnybrook_model": {"name": "m", "folds": ["all"]}, "domains": {"sunnybrook": sb}}
    text = model_domains.caption(result)
    assert "no in-domain or simulated scanner-change rows" in text and "model `m` (folds all)" in text
