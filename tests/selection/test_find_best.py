"""Configuration selection by cross-validation with two tiny phantom-trained models (two seeds)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from autocmr.cli.find_best import main
from autocmr.cli.predict import main as predict_main
from autocmr.documents.manifest import sha256_of
from autocmr.errors import ConfigurationError, DocumentError
from autocmr.evaluation.cases import safe_name
from autocmr.evaluation.metrics import case_metrics
from autocmr.inference.predictor import PredictorOptions
from autocmr.io.image import read_image
from autocmr.selection.apply import MEMBERS_DIR
from autocmr.selection.cv_probabilities import open_cv_model, probabilities_path, read_probabilities
from autocmr.selection.document import Member, Selection
from autocmr.selection.find_best import find_best_configuration
from autocmr.testing.tiny_model import TINY_DATASET_ID
from tests.helpers import small_case, write_dicom_series

OPTIONS = PredictorOptions(device="cpu", mirror=False)


@pytest.fixture(scope="module")
def two_models(tiny_model, tmp_path_factory):
    """The session's tiny model (seed 0) and a second one trained on the same data and split with seed 1."""
    from autocmr.trainers.options import TrainOptions
    from autocmr.trainers.run import train

    model_a, roots = tiny_model
    options = TrainOptions(epochs=1, iterations_per_epoch=6, val_iterations=2, num_workers=0, batch_size=2,
                           device="cpu", seed=1, final_validation=False)
    result = train(TINY_DATASET_ID, "2d", 0, roots, options=options, plans_name="autocmrPlans_cpu",
                   output_dir=tmp_path_factory.mktemp("seed1") / "autocmrPlans_cpu__2d_seed1")
    raw = next(roots.raw.glob(f"Dataset{TINY_DATASET_ID}_*"))
    return model_a, result.fold_dir.parent, raw


@pytest.fixture(scope="module")
def selection_run(two_models, tmp_path_factory):
    model_a, model_b, raw = two_models
    out = tmp_path_factory.mktemp("selection")
    assert main(["-d", raw.name, "--raw", str(raw.parent), "-m", str(model_a), str(model_b), "-o", str(out),
                 "--device", "cpu", "--no-mirror"]) == 0
    return out


def _dice_of(labels_dir, case_ids, predictions) -> float:
    scores = []
    for case_id, pred in zip(case_ids, predictions):
        ref, geometry = read_image(labels_dir / f"{case_id}.nii.gz")
        metrics = case_metrics(ref, pred, geometry.spacing_zyx, {"LV": 1, "MYO": 2, "RV": 3})
        scores += [m["dice"] for m in metrics.values()]
    return float(np.mean(scores))


def test_every_candidate_scored_and_the_best_chosen(two_models, selection_run):
    model_a, model_b, raw = two_models
    document = json.loads((selection_run / "selection.json").read_text())
    candidates = {c["name"]: c for c in document["candidates"]}
    name_a, name_b = model_a.name, model_b.name
    assert set(candidates) == {name_a, name_b, f"{name_a}+{name_b}"}
    # the ensemble's Dice, recomputed here from the cached probabilities: softmax average, then argmax
    cv_a = open_cv_model(model_a)
    cases = sorted(cv_a.case_fold)
    assert document["n_cases"] == len(cases) > 0 and document["folds"] == ["0"]
    cv_b = open_cv_model(model_b)
    cache = selection_run / "probabilities"
    ensemble = [np.argmax(read_probabilities(probabilities_path(cache, cv_a, c))
                          + read_probabilities(probabilities_path(cache, cv_b, c)), axis=0) for c in cases]
    single_a = [np.argmax(read_probabilities(probabilities_path(cache, cv_a, c)), axis=0) for c in cases]
    assert candidates[f"{name_a}+{name_b}"]["cv"]["dice_mean"] == pytest.approx(
        _dice_of(raw / "labelsTr", cases, ensemble), abs=1e-6)
    assert candidates[name_a]["cv"]["dice_mean"] == pytest.approx(_dice_of(raw / "labelsTr", cases, single_a), abs=1e-6)
    # ranked best first by Dice; the chosen one is rank 1, with its clinical figures and postprocessing
    dice = [c["cv"]["dice_mean"] for c in document["candidates"]]
    assert dice == sorted(dice, reverse=True)
    assert document["chosen"]["name"] == document["candidates"][0]["name"]
    assert "LVEF" in document["chosen"]["cv"]["clinical"] and "cv_postprocessed" in document["chosen"]
    assert document["chosen"]["cv"]["clinical"]["LVEF"]["n_excluded"] == 0  # the subjects the ranking counts
    for member in document["chosen"]["members"]:  # the weights recorded: the checkpoint files scored
        checkpoint = Path(member["model"]) / "fold_0" / "checkpoint_final.pth"
        assert member["weights"] == {"fold_0/checkpoint_final.pth": sha256_of(checkpoint)}
    assert (selection_run / "candidates" / safe_name(f"{name_a}+{name_b}") / "slice_position_summary.csv").is_file()
    selection = Selection.load(selection_run)
    assert [m.model for m in selection.members] == [p.resolve() for p in
                                                    ([model_a, model_b] if "+" in selection.name else
                                                     [model_a if selection.name == name_a else model_b])]
    # the settings the figures were measured with are recorded; predicting otherwise is named (and warned about)
    assert document["prediction"] == {"mirror": False, "step": OPTIONS.step, "precision": OPTIONS.precision,
                                      "harmonise": False}
    assert selection.settings_differences(OPTIONS) == []
    from dataclasses import replace

    assert selection.settings_differences(replace(OPTIONS, mirror=True, step=0.25)) == [
        "mirror: False -> True", f"step: {OPTIONS.step!r} -> 0.25"]


def test_cached_probabilities_are_reused_and_bad_options_rejected(two_models, selection_run, monkeypatch):
    model_a, model_b, raw = two_models

    def no_prediction(*args, **kwargs):
        raise AssertionError("a cached case was predicted again")

    monkeypatch.setattr(PredictorOptions, "build", no_prediction)
    result = find_best_configuration([model_a, model_b], raw, selection_run / "again", options=OPTIONS,
                                     cache_dir=selection_run / "probabilities", rank_by="LVEF", max_members=1)
    assert len(result.candidates) == 2 and result.selection.rank_by == "LVEF"
    assert list(result.candidates["LVEF_n_excluded"]) == [0, 0]
    with pytest.raises(ConfigurationError, match="valid"):
        find_best_configuration([model_a], raw, selection_run / "bad", rank_by="accuracy")
    with pytest.raises(ConfigurationError, match="checkpoint"):
        find_best_configuration([model_a], raw, selection_run / "bad", folds=["3"])
    (selection_run / "broken.json").write_text('{"kind": "autocmr_selection", "schema_version": 99}')
    with pytest.raises(DocumentError, match="version"):
        Selection.load(selection_run / "broken.json")


def test_a_cache_made_by_other_weights_or_settings_is_not_reused(two_models, selection_run, tmp_path):
    import shutil
    from dataclasses import replace

    from autocmr.selection.cv_probabilities import CACHE_SOURCE, _use_cache_of, cache_source

    model_a, model_b, _ = two_models
    cv_a, cv_b = open_cv_model(model_a), open_cv_model(model_b)
    folder = next(p for p in (selection_run / "probabilities").iterdir() if p.is_dir())
    recorded = json.loads((folder / CACHE_SOURCE).read_text())
    recorded_cases = recorded.pop("cases")
    assert recorded_cases and all(v.startswith("fold ") for v in recorded_cases.values())
    assert recorded == cache_source(cv_a if recorded["model"] == str(cv_a.path.resolve()) else cv_b, OPTIONS)
    for other in (cache_source(cv_b, OPTIONS) if recorded["model"] == str(cv_a.path.resolve())
                  else cache_source(cv_a, OPTIONS), {**recorded, "mirror": True},
                  {**recorded, "weights": {k: "0" * 64 for k in recorded["weights"]}}):
        copy = tmp_path / "cache"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(folder, copy)
        assert list(copy.glob("*.npz"))
        _use_cache_of(copy, other)
        assert not list(copy.glob("*.npz")) and json.loads((copy / CACHE_SOURCE).read_text()) == {**other, "cases": {}}
    _use_cache_of(copy := tmp_path / "same", recorded)  # nothing cached yet: the source is recorded
    assert json.loads((copy / CACHE_SOURCE).read_text()) == {**recorded, "cases": {}}
    # the same model and settings: a case whose fold or images changed is predicted again, the others are kept
    shutil.rmtree(copy)
    shutil.copytree(folder, copy)
    moved = sorted(recorded_cases)[0]
    _use_cache_of(copy, recorded, {**recorded_cases, moved: "fold 9, images 0"})
    assert not (copy / f"{moved}.npz").exists()
    assert {p.stem for p in copy.glob("*.npz")} == set(recorded_cases) - {moved}
    assert json.loads((copy / CACHE_SOURCE).read_text())["cases"][moved] == "fold 9, images 0"
    assert cache_source(cv_a, replace(OPTIONS, step=0.7))["step"] == 0.7


def test_autocmr_predict_with_an_ensemble_selection(two_models, selection_run, tmp_path):
    model_a, model_b, raw = two_models
    base = Selection.load(selection_run)
    ensemble = Selection((Member("a", model_a, ("0",)), Member("b", model_b, ("0",))), base.postprocessing, "dice")
    ensemble.save(tmp_path / "selection.json")
    images = tmp_path / "images"
    images.mkdir()
    case = sorted(open_cv_model(model_a).case_fold)[0]
    (images / f"{case}_0000.nii.gz").symlink_to(raw / "imagesTr" / f"{case}_0000.nii.gz")
    dicom = small_case(5)  # a DICOM series too: its NIfTI copy reaches the ensemble's folder (for the figures)
    write_dicom_series(images / "series", np.rint(dicom.image)[None].astype(np.int16), description="sax")
    out = tmp_path / "out"
    assert predict_main(["-i", str(images), "-o", str(out), "--selection", str(tmp_path / "selection.json"),
                         "--device", "cpu", "--no-mirror", "-j", "0"]) == 0
    dicom_case = next(n for n in json.loads((out / "predictions.json").read_text())["done"] if n != case)
    assert (out / "images_from_dicom" / f"{dicom_case}.nii.gz").is_file()
    assert f"{dicom_case},ok," in (out / "measures.csv").read_text()  # analysed like the NIfTI case
    mask, geometry = read_image(out / f"{case}.nii.gz")
    probs = [np.load(out / MEMBERS_DIR / m / f"{case}_probabilities.npz")["probabilities"].astype(np.float32)
             for m in ("a", "b")]
    expected = ensemble.postprocessing.apply(np.argmax(probs[0] + probs[1], axis=0).astype(np.uint8))
    assert np.array_equal(mask, expected)
    _, image_geometry = read_image(raw / "imagesTr" / f"{case}_0000.nii.gz")
    assert geometry.differences(image_geometry) == []
    # the ensemble's masks are an ordinary output folder: recorded, analysed, the report names the selection
    record = json.loads((out / "predictions.json").read_text())
    assert case in record["done"] and record["cases"][case]["output"] == str(out / f"{case}.nii.gz")
    assert record["predictor"]["selection"] == str(tmp_path / "selection.json")
    assert [m["name"] for m in record["predictor"]["members"]] == ["a", "b"]
    assert json.loads((out / "failures.json").read_text()) == []
    for name in ("measures.csv", "qc.csv", "volumes.csv", "report.html"):
        assert (out / name).is_file(), name
    page = (out / "report.html").read_text()
    assert "selection a+b" in page and "members: a (folds 0), b (folds 0)" in page
    # a single chosen model: its folder's record now names the selection, its masks are analysed too
    single = tmp_path / "single"
    assert predict_main(["-i", str(images), "-o", str(single), "--selection", str(selection_run / "selection.json"),
                         "--device", "cpu", "--no-mirror", "-j", "0"]) == 0
    record = json.loads((single / "predictions.json").read_text())
    assert record["predictor"]["name"] == base.name and case in record["done"] and len(record["done"]) == 2
    assert record["predictor"]["postprocessing"]["per_label_lcc"] == list(base.postprocessing.per_label_lcc)
    page = (single / "report.html").read_text()
    assert f"selection {base.name}" in page and "autocmr_find_best, folds" in page  # its CV figures shown


def test_a_measure_undefined_for_every_candidate_is_an_error(two_models, selection_run, monkeypatch):
    """Ranking by LVEF with no subject's ED and ES known: no candidate has a figure, none is chosen silently."""
    import pandas as pd

    model_a, model_b, raw = two_models
    monkeypatch.setattr(PredictorOptions, "build", lambda *a, **k: pytest.fail("cached cases were predicted again"))
    cases = sorted(open_cv_model(model_a).case_fold)
    no_phases = pd.DataFrame({"case_id": cases, "subject": cases, "phase": ["MID"] * len(cases)})
    with pytest.raises(ConfigurationError, match=r"rank_by 'LVEF' is undefined for every candidate.*ED and its ES"):
        find_best_configuration([model_a, model_b], raw, selection_run / "undefined", options=OPTIONS,
                                cache_dir=selection_run / "probabilities", rank_by="LVEF", metadata=no_phases)
    assert not (selection_run / "undefined" / "selection.json").exists()


def _one_case_input(model, raw, folder):
    case = sorted(open_cv_model(model).case_fold)[0]
    folder.mkdir()
    (folder / f"{case}_0000.nii.gz").symlink_to(raw / "imagesTr" / f"{case}_0000.nii.gz")
    return case


def test_continue_leaves_the_masks_it_skips_as_they_are(two_models, tmp_path):
    """A one-member selection's masks are written postprocessed; --continue does not postprocess the masks it
    skips again (not idempotent: a final mask would change)."""
    from autocmr.inference.postprocessing import PostprocessingDecision
    from autocmr.io.image import write_image
    from autocmr.selection.apply import predict_with_selection

    model_a, _, raw = two_models
    chosen = Selection((Member("a", model_a, ("0",)),), PostprocessingDecision(foreground_lcc=True), "dice")
    case = _one_case_input(model_a, raw, tmp_path / "images")
    out = tmp_path / "out"
    assert predict_with_selection(tmp_path / "images", out, chosen, options=OPTIONS, num_workers=0).done == [case]
    mask, geometry = read_image(out / f"{case}.nii.gz")
    assert np.array_equal(mask, chosen.postprocessing.apply(mask))  # postprocessed as written
    record = json.loads((out / "predictions.json").read_text())
    assert record["predictor"]["postprocessing"] == {"foreground_lcc": True, "per_label_lcc": []}
    final = mask.copy()
    final[:, :5, :5] = 0
    final[:, 2, 2] = 3  # a final mask that the postprocessing would change
    write_image(final, geometry, out / f"{case}.nii.gz")
    report = predict_with_selection(tmp_path / "images", out, chosen, options=OPTIONS, num_workers=0, continue_=True)
    assert report.skipped == [case] and not report.done
    assert np.array_equal(read_image(out / f"{case}.nii.gz")[0], final)


def test_continue_refuses_a_one_member_selection_run_with_other_settings(two_models, tmp_path):
    """As a plain -m MODEL run and an ensemble's members do: masks made with another step or cine mode are not
    mixed with new ones under one record."""
    from dataclasses import replace

    from autocmr.inference.fast_cine import CineOptions
    from autocmr.inference.postprocessing import PostprocessingDecision
    from autocmr.selection.apply import predict_with_selection

    model_a, _, raw = two_models
    chosen = Selection((Member("a", model_a, ("0",)),), PostprocessingDecision(), "dice")
    case = _one_case_input(model_a, raw, tmp_path / "images")
    out = tmp_path / "out"
    predict_with_selection(tmp_path / "images", out, chosen, options=OPTIONS, num_workers=0)
    for options, cine, changed in ((replace(OPTIONS, step=0.25), None, "step"),
                                   (OPTIONS, CineOptions(mode="full"), "cine")):
        with pytest.raises(ConfigurationError, match=rf"predicted with other settings \({changed}: .*--continue"):
            predict_with_selection(tmp_path / "images", out, chosen, options=options, num_workers=0, continue_=True,
                                   cine=cine)
    assert predict_with_selection(tmp_path / "images", out, chosen, options=OPTIONS, num_workers=0,
                                  continue_=True).skipped == [case]


def test_an_ensemble_predicts_every_cine_frame_at_full_accuracy(two_models, tmp_path):
    """Each member's fast cine path would pick its own ED/ES frames and average fast-pass with full-accuracy
    probabilities: an ensemble predicts cines frame by frame at full accuracy, and records it."""
    from autocmr.inference.postprocessing import PostprocessingDecision
    from autocmr.io.cine import read_cine, write_cine
    from autocmr.io.image import Geometry
    from autocmr.selection.apply import predict_with_selection
    from autocmr.testing.phantoms import make_phantom_cine

    model_a, model_b, _ = two_models
    image, _, g4, _, _ = make_phantom_cine(3, n_frames=4, fov_mm=120.0)
    start = (image.shape[1] - 2) // 2  # two mid-ventricular slices keep it fast
    geometry = Geometry(g4.size[:2] + (2,) + g4.size[3:], g4.spacing, g4.origin, g4.direction)
    (tmp_path / "in").mkdir()
    write_cine(image[:, start:start + 2], geometry, tmp_path / "in" / "cine.nii.gz")
    ensemble = Selection((Member("a", model_a, ("0",)), Member("b", model_b, ("0",))), PostprocessingDecision(),
                         "dice")
    out = tmp_path / "out"
    assert predict_with_selection(tmp_path / "in", out, ensemble, options=OPTIONS, num_workers=0).done == ["cine"]
    record = json.loads((out / "predictions.json").read_text())
    assert record["predictor"]["cine"]["mode"] == "full" and "cine" not in record["cases"]["cine"]
    probs = []
    for member in ("a", "b"):
        member_record = json.loads((out / MEMBERS_DIR / member / "predictions.json").read_text())
        assert member_record["predictor"]["cine"]["mode"] == "full" and "cine" not in member_record["cases"]["cine"]
        probs.append(np.load(out / MEMBERS_DIR / member / "cine_probabilities.npz")["probabilities"].astype(np.float32))
    mask = read_cine(out / "cine.nii.gz")[0]
    assert mask.shape[0] == 4 and np.array_equal(mask, np.argmax(probs[0] + probs[1], axis=1))


def test_continue_refuses_masks_another_model_or_selection_made(two_models, tmp_path):
    """--selection --continue skips existing masks: only when the folder's record says this selection (or, for
    a one-member selection killed before its record, its own member) made them."""
    from autocmr.inference.batch import predict_folder
    from autocmr.inference.postprocessing import PostprocessingDecision
    from autocmr.selection.apply import predict_with_selection

    model_a, model_b, raw = two_models
    case = sorted(open_cv_model(model_a).case_fold)[0]
    images = tmp_path / "images"
    images.mkdir()
    (images / f"{case}_0000.nii.gz").symlink_to(raw / "imagesTr" / f"{case}_0000.nii.gz")
    out = tmp_path / "out"
    predict_folder(images, out, model_b, options=OPTIONS, num_workers=0)  # another model's masks
    chosen = Selection((Member("a", model_a, ("0",)),), PostprocessingDecision(), "dice")
    with pytest.raises(ConfigurationError, match=r"made by model .*not by selection.*--continue would mix"):
        predict_with_selection(images, out, chosen, options=OPTIONS, num_workers=0, continue_=True)
    ensemble = Selection((Member("a", model_a, ("0",)), Member("b", model_b, ("0",))), PostprocessingDecision(),
                         "dice")
    predict_with_selection(images, out, ensemble, options=OPTIONS, num_workers=0)  # plain rerun: allowed
    with pytest.raises(ConfigurationError, match=r"made by selection .*not by selection"):
        predict_with_selection(images, out, chosen, options=OPTIONS, num_workers=0, continue_=True)
    assert predict_with_selection(images, out, ensemble, options=OPTIONS, num_workers=0,
                                  continue_=True).skipped == [case]


def test_a_selection_never_writes_its_masks_over_the_inputs(two_models, tmp_path):
    from autocmr.inference.postprocessing import PostprocessingDecision
    from autocmr.selection.apply import predict_with_selection

    model_a, model_b, raw = two_models
    ensemble = Selection((Member("a", model_a, ("0",)), Member("b", model_b, ("0",))), PostprocessingDecision(), "dice")
    case = sorted(open_cv_model(model_a).case_fold)[0]
    scans = tmp_path / "scans"
    scans.mkdir()
    image = scans / f"{case}.nii.gz"
    image.write_bytes((raw / "imagesTr" / f"{case}_0000.nii.gz").read_bytes())
    before = image.read_bytes()
    with pytest.raises(ConfigurationError, match="input folder"):
        predict_with_selection(scans, scans, ensemble, options=OPTIONS, num_workers=0)
    with pytest.raises(ConfigurationError, match="overwrite this input"):
        predict_with_selection(image, scans, ensemble, options=OPTIONS, num_workers=0)
    assert image.read_bytes() == before


@pytest.mark.parametrize("flags", [["--num-parts", "2"], ["--devices", "cpu", "cpu"], ["--output-format", "both"],
                                   ["--save-probabilities"]])
def test_predict_with_a_selection_refuses_what_it_does_not_do(tmp_path, capsys, flags):
    with pytest.raises(SystemExit) as exc:
        predict_main(["-i", str(tmp_path), "-o", str(tmp_path / "out"), "--selection", str(tmp_path), *flags])
    assert exc.value.code == 2 and f"--selection does not support {flags[0]}" in capsys.readouterr().err


@pytest.mark.parametrize("flags", [["-f", "0"], ["--checkpoint", "best"], ["--postprocess", "off"],
                                   ["--checkpoint", "final"], ["--postprocess", "auto"]])  # the defaults named too
def test_a_selection_fixes_folds_checkpoint_and_postprocessing(tmp_path, capsys, flags):
    with pytest.raises(SystemExit) as exc:
        predict_main(["-i", str(tmp_path), "-o", str(tmp_path / "out"), "--selection", str(tmp_path), *flags])
    assert exc.value.code == 2 and "the selection fixes its members' folds" in capsys.readouterr().err


def test_the_recorded_folds_are_those_whose_cases_were_scored(tmp_path):
    from autocmr.selection.cv_probabilities import CvModel
    from autocmr.selection.find_best import _common_cases, _scored_folds

    def model(name, folds):
        case_fold = {f"case{f}{k}": f for f in folds for k in range(2)}  # one split: fold f validates case{f}*
        return CvModel(name, tmp_path / name, tuple(folds), case_fold, {"LV": 1}, ".nii.gz")

    five, three = model("a", ["0", "1", "2", "3", "4"]), model("b", ["0", "2", "4"])
    cases = _common_cases([five, three])
    assert len(cases) == 6 and _scored_folds(five, cases) == _scored_folds(three, cases) == ["0", "2", "4"]


def test_predict_by_dataset_without_a_configuration_uses_the_recorded_selection(two_models, selection_run,
                                                                                tmp_path, capsys):
    """autocmr_find_best -d 101 records its choice under <results>/<dataset>/selection/; autocmr_predict -d 101
    (no -c) predicts with it, and says where it is missing."""
    import shutil

    _, _, raw = two_models
    results = tmp_path / "results"
    images = tmp_path / "images"
    images.mkdir()
    case = small_case(6)
    write_dicom_series(images / "series", np.rint(case.image)[None].astype(np.int16), description="sax")
    argv = ["-i", str(images), "-o", str(tmp_path / "out"), "-d", raw.name, "--results", str(results),
            "--device", "cpu", "--no-mirror", "-j", "0", "--no-analysis"]
    with pytest.raises(SystemExit) as exc:
        predict_main(argv)
    assert exc.value.code == 2 and "autocmr_find_best -d" in capsys.readouterr().err
    recorded = results / raw.name / "selection" / "selection.json"
    recorded.parent.mkdir(parents=True)
    shutil.copy(selection_run / "selection.json", recorded)
    assert predict_main(argv) == 0
    record = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert record["predictor"]["selection"] == str(recorded) and len(record["done"]) == 1
