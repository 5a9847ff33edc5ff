"""benchmarks/acdc_cv_report.py: per-case rows in the results, and pooling folds evaluated separately (as on
two machines) into the same figures as evaluating them together."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
report = pytest.importorskip("acdc_cv_report")
common = pytest.importorskip("common")

from autocmr.testing.phantoms import write_phantom_dataset  # noqa: E402

N_SUBJECTS = 6


def _fake_run(home: Path) -> None:
    """A finished two-fold run: phantom references, and predictions that miss or add voxels per subject."""
    raw = write_phantom_dataset(home / "raw", n_subjects=N_SUBJECTS, seed=3, dataset_id=101, short_name="ACDC")
    model = home / report.MODEL
    rng = np.random.default_rng(0)
    for i, label_path in enumerate(sorted((raw / "labelsTr").glob("*.nii.gz"))):
        fold = 0 if i < N_SUBJECTS else 1  # ED and ES of the first three subjects, then the others
        image = sitk.ReadImage(str(label_path))
        label = sitk.GetArrayFromImage(image)
        pred = label.copy()
        z = rng.integers(0, label.shape[0])
        pred[z][pred[z] == 3] = 0  # RV missed on one slice
        pred = np.where((pred == 0) & (np.roll(label, 1, axis=-1) == 2), 2, pred)  # myocardium a voxel thicker
        out = sitk.GetImageFromArray(pred.astype(np.uint8))
        out.CopyInformation(image)
        (model / f"fold_{fold}" / "validation").mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(out, str(model / f"fold_{fold}" / "validation" / label_path.name))
    for fold in (0, 1):
        (model / f"fold_{fold}" / "validation" / "summary.json").write_text("{}")
        (model / f"fold_{fold}" / "options.json").write_text(json.dumps({"digest": "recipe-1"}))
    # per-label only: the phantoms' RV does not touch the myocardium, so a largest-foreground rule would drop it
    (model / "postprocessing.json").write_text(json.dumps({"foreground_lcc": False, "per_label_lcc": [1, 3]}))


@pytest.fixture
def results(tmp_path, monkeypatch):
    _fake_run(tmp_path / "cv_run")
    out = tmp_path / "results"
    monkeypatch.setenv("AUTOCMR_HOME", str(tmp_path))
    monkeypatch.setattr(common, "RESULTS", out)
    monkeypatch.setattr(report, "RESULTS", out)
    assert report.main(["run"]) == 0
    assert report.main(["run", "--folds", "0"]) == 0
    assert report.main(["run", "--folds", "1"]) == 0
    return out


def _load(folder: Path, name: str) -> dict:
    return json.loads((folder / f"acdc_cv_{name}.json").read_text())


def test_pooling_separately_evaluated_folds_gives_the_figures_of_evaluating_them_together(results):
    assert report.main(["--pool", "pooled", "run_folds0", "run_folds1"]) == 0
    whole, pooled = _load(results, "run"), _load(results, "pooled")
    assert pooled["folds"] == whole["folds"] == [0, 1] and pooled["pooled_from"] == ["run_folds0", "run_folds1"]
    for variant in ("as_predicted", "postprocessed"):
        w, p = whole[variant], pooled[variant]
        assert p["n_volumes"] == w["n_volumes"] == 2 * N_SUBJECTS
        assert len(w["rows"]["subjects"]) == N_SUBJECTS and len(w["rows"]["volumes"]) == 3 * 2 * N_SUBJECTS
        assert {r["fold"] for r in w["rows"]["volumes"]} == {0, 1}
        for name, c in w["classes"].items():
            assert p["classes"][name] == pytest.approx(c, abs=2e-4)
        assert p["mean_dice"] == pytest.approx(w["mean_dice"], abs=1e-4)
        for measure, a in w["clinical"].items():
            for key, value in a.items():
                assert p["clinical"][measure][key] == pytest.approx(value, abs=2e-3), (variant, measure, key)
        for measure, parts in w["slice_position_bias"].items():
            assert p["slice_position_bias"][measure] == pytest.approx(parts, abs=1e-6), measure
        exchanges = {(r["class"], r["phase"], r["other"]): r for r in p["exchanges"]}
        for row in w["exchanges"]:
            got = exchanges[(row["class"], row["phase"], row["other"])]
            assert got["n"] == row["n"] and got["net_ml"] == pytest.approx(row["net_ml"], abs=2e-3)
    # the errors made on purpose show: myocardium too large, RV too small
    assert whole["postprocessed"]["clinical"]["LVM"]["bias"] > 0 > whole["postprocessed"]["clinical"]["RVEDV"]["bias"]


def test_pooling_refuses_overlapping_folds_mixed_recipes_or_postprocessing_and_files_without_rows(results):
    with pytest.raises(SystemExit, match="more than one part"):
        report.main(["--pool", "bad", "run", "run_folds1"])
    mixed = _load(results, "run_folds1")
    mixed["options"]["digest"] = "recipe-2"
    (results / "acdc_cv_other_folds1.json").write_text(json.dumps(mixed))
    with pytest.raises(SystemExit, match="different options"):
        report.main(["--pool", "bad", "run_folds0", "other_folds1"])
    assert report.main(["--pool", "mixed", "run_folds0", "other_folds1", "--allow-mixed"]) == 0
    other_rule = _load(results, "run_folds1")
    other_rule["postprocessing"] = {"foreground_lcc": True, "per_label_lcc": [1, 3]}
    (results / "acdc_cv_rule_folds1.json").write_text(json.dumps(other_rule))
    with pytest.raises(SystemExit, match="different postprocessing"):
        report.main(["--pool", "bad", "run_folds0", "rule_folds1"])
    old = _load(results, "run_folds1")
    for variant in ("as_predicted", "postprocessed"):
        del old[variant]["rows"]
    (results / "acdc_cv_old_folds1.json").write_text(json.dumps(old))
    with pytest.raises(SystemExit, match="no per-case rows"):
        report.main(["--pool", "bad", "run_folds0", "old_folds1"])


def test_the_bias_figure_draws_stored_runs_and_refuses_runs_without_a_breakdown(results, tmp_path):
    png = tmp_path / "figures" / "bias.png"
    assert report.main(["--figure", str(png), "run", "run_folds0", "--labels", "all folds", "fold 0"]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    with pytest.raises(SystemExit, match="label"):
        report.main(["--figure", str(png), "run", "run_folds0", "--labels", "only one"])
    stored = _load(results, "run")
    stored["postprocessed"]["slice_position_bias"] = {}
    (results / "acdc_cv_empty.json").write_text(json.dumps(stored))
    with pytest.raises(SystemExit, match="no slice-position bias"):
        report.main(["--figure", str(png), "empty"])
