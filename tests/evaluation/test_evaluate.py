"""End-to-end evaluation: folders of phantom masks with broken and missing files, the CLI, comparisons."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from autocmr.cli.evaluate import main
from autocmr.dataset.labels import RV
from autocmr.errors import ConfigurationError, DatasetError
from autocmr.evaluation import compare_predictions, evaluate_cases, evaluate_folders
from autocmr.evaluation.cases import resolve_labels
from autocmr.io.image import Geometry, read_image, write_image
from autocmr.testing.phantoms import make_phantom_cine, write_phantom_dataset

BROKEN = {"subject003_ED": "geometry", "subject003_ES": "label values", "subject004_ES": "cannot read"}
MISSING = "subject004_ED"


def _strict_json(path: Path):
    def reject(token):
        raise ValueError(f"{path} contains {token}, which is not JSON")
    return json.loads(path.read_text(), parse_constant=reject)


def _write_predictions(labels_dir: Path, out: Path, shift: int, *, broken: bool) -> None:
    out.mkdir(parents=True)
    for f in sorted(labels_dir.glob("*.nii.gz")):
        case = f.name[: -len(".nii.gz")]
        array, geometry = read_image(f)
        pred = np.roll(array, shift, axis=2)
        if broken and case == "subject001_ED":
            pred[pred == RV] = 0  # a missed structure: distances undefined for this case
        if broken and case == MISSING:
            continue
        if broken and case == "subject004_ES":
            (out / f.name).write_bytes(b"not an image")
            continue
        if broken and case == "subject003_ES":
            pred[0, 0, :3] = 7
        if broken and case == "subject003_ED":
            geometry = Geometry(geometry.size, (geometry.spacing[0] * 1.5,) + geometry.spacing[1:],
                                geometry.origin, geometry.direction)
        write_image(pred, geometry, out / f.name)
    if broken:
        shutil.copy(out / "subject000_ED.nii.gz", out / "stray_case.nii.gz")


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("evaluation")
    dataset = write_phantom_dataset(root / "raw", n_subjects=5, seed=4, fov_mm=160.0)
    meta = pd.read_csv(dataset / "cases.csv")
    meta["vendor"] = ["X" if int(s[-1]) % 2 == 0 else "Y" for s in meta["subject"]]
    meta.to_csv(dataset / "cases.csv", index=False)
    labels = dataset / "labelsTr"
    _write_predictions(labels, root / "pred_a", 1, broken=True)
    _write_predictions(labels, root / "pred_b", 3, broken=False)
    return {"ref": labels, "a": root / "pred_a", "b": root / "pred_b", "root": root}


def test_cli_writes_outputs_lists_failures_and_prints_table(folders, capsys):
    out = folders["root"] / "cli_out"
    rc = main(["-ref", str(folders["ref"]), "-pred", str(folders["a"]), "-o", str(out),
               "--by", "phase", "vendor", "-j", "2"])
    assert rc == 1  # it ran, and some cases could not be evaluated (exit 1, as every command)
    summary = _strict_json(out / "summary.json")
    failures = {f["case_id"]: f for f in summary["failures"]}
    assert set(failures) == set(BROKEN) | {MISSING}
    for case, reason in BROKEN.items():
        assert reason in failures[case]["reason"] and failures[case]["file"].endswith(f"{case}.nii.gz")
    assert "no prediction" in failures[MISSING]["reason"] and failures[MISSING]["missing"] is True
    assert not any(failures[case]["missing"] for case in BROKEN)  # these count for the exit status
    assert summary["unmatched_predictions"] == ["stray_case.nii.gz"]
    assert summary["n_cases"] == 6 and summary["n_failed"] == 3 and summary["n_missing"] == 1
    for name, per in summary["classes"].items():
        for metric in ("dice", "iou", "hd95", "assd"):
            assert math.isfinite(per[metric]["mean"]), (name, metric)
    assert summary["classes"]["RV"]["hd95"]["n_undefined"] == 1  # the missed RV, counted not averaged
    assert summary["empty"]["RV"]["prediction_only"] == 1
    assert set(summary["breakdowns"]["vendor"]) == {"X", "Y"}
    cases = pd.read_csv(out / "cases.csv")
    assert len(cases) == 6 * 3 and {"vendor", "phase", "subject", "dice", "hd95"} <= set(cases.columns)
    clinical = pd.read_csv(out / "clinical.csv")
    assert sorted(clinical["subject"]) == ["subject000", "subject001", "subject002"]
    assert summary["clinical"]["agreement"]["RVEF"]["n_excluded"] == 1  # no predicted RV at ED
    assert summary["clinical"]["agreement"]["LVEDV"]["bias"] == pytest.approx(0.0, abs=1e-9)  # a shift keeps volumes
    for png in ("metrics.png", "breakdown_vendor.png", "breakdown_phase.png", "clinical_bland_altman.png",
                "clinical_scatter.png"):
        assert (out / png).stat().st_size > 1000, png
    assert not list(out.glob(".tmp_*"))
    text = capsys.readouterr().out
    assert "Dice" in text and "LVEF" in text and MISSING in text and "subject003_ES" in text


def test_library_call_defaults_and_breakdown_values(folders):
    result = evaluate_folders(folders["ref"], folders["b"], by=["vendor"], make_plots=False)
    assert result.output_dir == folders["b"] / "evaluation"
    assert (result.output_dir / "summary.json").is_file() and (result.output_dir / "breakdowns.csv").is_file()
    assert result.failures == [] and len(result.cases) == 10 * 3
    by_vendor = result.summary["breakdowns"]["vendor"]
    assert by_vendor["X"]["LV"]["dice"]["n"] == 6 and by_vendor["Y"]["LV"]["dice"]["n"] == 4
    lv = result.cases[result.cases["class"] == "LV"]
    assert by_vendor["Y"]["LV"]["dice"]["mean"] == pytest.approx(lv.loc[lv["vendor"] == "Y", "dice"].mean())
    table = pd.read_csv(result.output_dir / "breakdowns.csv")
    assert set(table["value"]) == {"X", "Y"}


def test_compare_two_prediction_folders(folders, capsys):
    out = folders["root"] / "compare"
    assert main(["-ref", str(folders["ref"]), "-pred", str(folders["a"]), "--compare", str(folders["b"]),
                 "-o", str(out), "--by", "vendor", "--no-plots"]) == 1  # folder a has failed cases
    summary = _strict_json(out / "comparison.json")
    assert summary["n_paired_cases"] == 6
    lv = summary["classes"]["LV"]["dice"]
    assert lv["mean_diff"] < 0 and lv["mean_b"] < lv["mean_a"]  # a 3-voxel shift is worse than 1
    assert 0 < lv["wilcoxon_p"] < 0.05
    assert summary["classes"]["LV"]["hd95"]["mean_diff"] > 0
    assert set(summary["only_in_b"]) == set(BROKEN) | {MISSING}
    assert set(summary["breakdowns"]["vendor"]) == {"X", "Y"}
    assert (out / "A" / "summary.json").is_file() and (out / "B" / "cases.csv").is_file()
    paired = pd.read_csv(out / "comparison_cases.csv")
    assert np.allclose(paired["dice_diff"], paired["dice_b"] - paired["dice_a"])
    assert "Wilcoxon" in capsys.readouterr().out


def test_an_ignored_class_is_not_scored_alone_or_in_a_comparison(tmp_path):
    _, labels, geometry, ed, _ = make_phantom_cine(7, n_frames=3, fov_mm=150.0)
    spacing = geometry.spatial().spacing_zyx
    prediction = labels[ed]
    reference = np.where(prediction == RV, 0, prediction)  # an LV-only study: no RV drawn
    result = evaluate_cases([("lv_only", reference, prediction, spacing)], ignore_labels=[RV], make_plots=False)
    assert list(result.summary["labels"]) == ["LV", "MYO"] and set(result.cases["class"]) == {"LV", "MYO"}
    assert (result.cases["dice"] == 1.0).all()
    with pytest.raises(ConfigurationError, match="nothing to score"):
        evaluate_cases([("x", reference, prediction, spacing)], labels={"RV": 3}, ignore_labels=[RV])
    for folder in ("ref", "a", "b"):
        write_image(reference if folder == "ref" else prediction, Geometry(
            tuple(reversed(reference.shape)), tuple(reversed(spacing)), (0.0, 0.0, 0.0),
            tuple(np.eye(3).ravel().tolist())), tmp_path / folder / "lv_only.nii.gz")
    compared = compare_predictions(tmp_path / "ref", tmp_path / "a", tmp_path / "b", None, ignore_labels=[RV],
                                   make_plots=False)
    assert set(compared.summary["classes"]) == {"LV", "MYO"}


def test_comparison_plot(folders, tmp_path):
    result = compare_predictions(folders["ref"], folders["b"], folders["b"], None)
    assert result.summary["classes"]["MYO"]["dice"]["wilcoxon_p"] == 1.0  # identical folders
    from autocmr.evaluation.plots import plot_comparison

    path = plot_comparison(result.paired, ["LV", "MYO", "RV"], tmp_path / "c.png")
    assert path.stat().st_size > 1000


def test_folder_without_evaluable_case_and_bad_options(folders, tmp_path):
    pred = tmp_path / "pred"
    pred.mkdir()
    (pred / "subject000_ED.nii.gz").write_bytes(b"junk")
    with pytest.raises(DatasetError, match="no case could be evaluated"):
        evaluate_folders(folders["ref"], pred, tmp_path / "out")
    with pytest.raises(ConfigurationError, match="scanner"):
        evaluate_folders(folders["ref"], folders["b"], by=["scanner"], write_outputs=False)
    assert main(["-ref", str(tmp_path / "nowhere"), "-pred", str(pred)]) == 2
    with pytest.raises(DatasetError, match="no reference files"):
        evaluate_folders(pred.parent, pred, write_outputs=False)


def test_reference_named_like_acdc_ground_truth(tmp_path):
    geometry = Geometry((8, 8, 4), (1.5, 1.5, 10.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))
    label = np.zeros((4, 8, 8), np.uint8)
    label[1:3, 2:6, 2:6] = 1
    for folder, names in (("ref", ["p1_frame01_gt", "p2_frame01_gt"]), ("pred", ["p1_frame01", "p2_frame01_gt"])):
        for name in names:
            write_image(label, geometry, tmp_path / folder / f"{name}.nii.gz")
    result = evaluate_folders(tmp_path / "ref", tmp_path / "pred", write_outputs=False)
    assert sorted(result.cases["case_id"].unique()) == ["p1_frame01", "p2_frame01"]
    assert result.summary["unmatched_predictions"] == [] and (result.cases["dice"] == 1.0).all()


def test_in_memory_cases_with_a_cine_and_a_bad_case(tmp_path):
    _, labels, geometry, ed, es = make_phantom_cine(2, n_frames=5, fov_mm=150.0)
    spacing = geometry.spatial().spacing_zyx
    pred = np.roll(labels, 1, axis=3)
    bad = np.zeros((2, 3, 3), np.uint8)
    result = evaluate_cases([("cine", labels, pred, spacing), ("bad", bad, bad[:1], (1.0, 1.0, 1.0))],
                            labels={"background": 0, "LV": 1, "MYO": 2, "RV": 3})
    assert result.output_dir is None and result.files == []
    assert [f.case_id for f in result.failures] == ["bad"] and "shape" in result.failures[0].reason
    assert sorted(result.cases["case_id"].unique()) == [f"cine@t{t:02d}" for t in range(5)]
    row = result.clinical.set_index("subject").loc["cine"]
    assert (row["ref_ED"], row["ref_ES"]) == (ed, es)
    assert row["pred_LVEF"] == pytest.approx(row["ref_LVEF"])
    assert result.summary["clinical"]["n_complete"] == 1


def test_cine_files_are_evaluated_per_frame(tmp_path):
    _, labels, geometry, ed, es = make_phantom_cine(5, n_frames=4, fov_mm=150.0)
    write_image(labels, geometry, tmp_path / "ref" / "cine01.nii.gz")
    write_image(np.roll(labels, 1, axis=2), geometry, tmp_path / "pred" / "cine01.nii.gz")
    result = evaluate_folders(tmp_path / "ref", tmp_path / "pred", write_outputs=False)
    assert sorted(result.cases["case_id"].unique()) == [f"cine01@t{t:02d}" for t in range(4)]
    assert (result.cases["frame"].dropna().astype(int) < 4).all() and result.summary["n_cases"] == 1
    lv = result.cases[(result.cases["class"] == "LV") & (result.cases["frame"] == 0)]
    # Volumes in mL from the spatial spacing of the 4D header (the time step must not enter).
    expected = (labels[0] == 1).sum() * np.prod(geometry.spacing[:3]) / 1000
    assert lv["vol_ref_ml"].iloc[0] == pytest.approx(expected)
    assert tuple(result.clinical.loc[0, ["ref_ED", "ref_ES"]]) == (ed, es)


def test_a_cine_annotated_only_at_ed_and_es_is_scored_there(tmp_path):
    _, labels, geometry, ed, es = make_phantom_cine(6, n_frames=6, fov_mm=150.0)
    reference = np.zeros_like(labels)
    reference[[ed, es]] = labels[[ed, es]]  # as M&Ms ships its 4D references
    write_image(reference, geometry, tmp_path / "ref" / "cine02.nii.gz")
    write_image(labels, geometry, tmp_path / "pred" / "cine02.nii.gz")
    result = evaluate_folders(tmp_path / "ref", tmp_path / "pred", write_outputs=False)
    assert sorted(result.cases["frame"].dropna().astype(int).unique()) == sorted([ed, es])
    assert (result.cases["dice"] == 1.0).all()  # no frame scored against an empty reference
    row = result.clinical.iloc[0]
    assert (row["ref_ED"], row["ref_ES"]) == (ed, es) and row["ref_LVESV"] > 0
    assert row["pred_LVEF"] == pytest.approx(row["ref_LVEF"])


def test_labels_from_json_text_and_dataset_json(tmp_path):
    assert resolve_labels('{"background": 0, "LV": 1}') == {"LV": 1}
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "RV": 3, "LV": 1}}))
    assert resolve_labels(tmp_path / "dataset.json") == {"RV": 3, "LV": 1}
    with pytest.raises(ConfigurationError, match="same value"):
        resolve_labels({"LV": 1, "RV": 1})
    with pytest.raises(ConfigurationError, match="neither JSON"):
        resolve_labels("missing.json")


def test_exchanges_of_a_case_of_unknown_phase_are_printed():
    from autocmr.evaluation.exchanges import format_exchanges

    table = pd.DataFrame({"class": ["LV", "LV"], "phase": ["ED", None], "other": ["MYO", "MYO"],
                          "gain_ml": [1.0, 2.0], "loss_ml": [0.5, 0.0], "net_ml": [0.5, 2.0]})
    text = format_exchanges(table)
    assert "LV ED" in text and "LV unknown" in text


def test_a_comparison_without_a_common_case_is_an_error(folders, tmp_path):
    import shutil

    from autocmr.errors import ConfigurationError
    from autocmr.evaluation.compare import compare_predictions

    first, second = tmp_path / "first", tmp_path / "second"
    for folder, subject in ((first, "subject000"), (second, "subject001")):  # predictions of other cases
        folder.mkdir()
        for f in folders["b"].glob(f"{subject}_*.nii.gz"):
            shutil.copy(f, folder / f.name)
    with pytest.raises(ConfigurationError, match="no evaluated case in common"):
        compare_predictions(folders["ref"], first, second, None)


def test_a_subject_scored_with_a_warning_note_counts_as_complete():
    from autocmr.evaluation.clinical import MEASURES
    from autocmr.evaluation.report import clinical_summary

    rows = []
    for subject, note, rv in (("A", "reference LV on 2 slice(s) at ED: ...", 100.0), ("B", "", float("nan")),
                              ("C", "", 100.0)):
        row = {"subject": subject, "note": note}
        row.update({f"{side}_{m}": (rv if m.startswith("RV") else 50.0) for side in ("ref", "pred") for m in MEASURES})
        rows.append(row)
    summary = clinical_summary(pd.DataFrame(rows))
    assert summary["n_complete"] == 2  # A (scored, with its warning) and C
    assert summary["skipped_subjects"] == {"B": "some measures undefined"}
    assert list(summary["subjects_with_notes"]) == ["A"]


def test_without_any_rv_in_the_references_subjects_are_complete_on_the_lv_measures():
    """An LV/MYO-only dataset (Sunnybrook's labels): the RV measures are nobody's, so they do not make every
    subject 'incomplete' (the summary said 0 subjects and listed all as left out)."""
    from autocmr.evaluation.clinical import MEASURES
    from autocmr.evaluation.report import clinical_summary

    rows = []
    for subject in ("A", "B", "C"):
        row = {"subject": subject, "note": ""}
        row.update({f"{side}_{m}": (float("nan") if m.startswith("RV") else 50.0)
                    for side in ("ref", "pred") for m in MEASURES})
        rows.append(row)
    rows[2]["pred_LVM"] = float("nan")  # a prediction without myocardium: that one is incomplete
    summary = clinical_summary(pd.DataFrame(rows))
    assert summary["n_complete"] == 2 and list(summary["skipped_subjects"]) == ["C"]


def test_a_2d_cine_array_has_no_slice_positions():
    """(t, y, x) with its two in-plane spacings: frames of one slice, whose rows are no slices."""
    rng = np.random.default_rng(0)
    masks = (rng.random((3, 20, 24)) > 0.5).astype(np.uint8)
    result = evaluate_cases([("lax", masks, masks, (1.5, 1.5))], by=["slice_position"], make_plots=False)
    entry = result.summary["slice_position"]
    assert entry["n_cases_with_breakdown"] == 0 and "no slice positions" in entry["cases_without_breakdown"]["lax"]
    (row,) = result.clinical.to_dict("records")  # areas, not volumes: no measures, and the note says why
    assert row["note"].startswith("2D images: no volumes") and np.isnan(row["ref_LVEDV"])
