"""benchmarks/recorded_cv.py: a fold-`all` model packed from its recipe's recorded cross-validation carries the
decision and figures that cross-validation recorded, and refuses records it cannot stand on."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
recorded_cv = pytest.importorskip("recorded_cv")

from autocmr.inference.postprocessing import PostprocessingDecision  # noqa: E402
from autocmr.models.card import accuracy_limits, figures_from_summary  # noqa: E402

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


def _results(folds=(0, 1, 2, 3, 4)):
    clinical = {"LVM": {"n": 80, "bias": 4.4, "loa_lower": -18.0, "loa_upper": 26.9, "mean_abs_diff": 8.0},
                "RVEF": {"n": 80, "bias": -2.8, "loa_lower": -19.9, "loa_upper": 14.2, "mean_abs_diff": 6.8}}
    return {"folds": list(folds), "postprocessing": {"foreground_lcc": True, "per_label_lcc": [3]},
            "as_predicted": {"n_volumes": 160, "classes": {"LV": {"dice": 0.93, "hd95": 12.8}}, "mean_dice": 0.9,
                             "clinical": clinical},
            "postprocessed": {"n_volumes": 160, "classes": {"LV": {"dice": 0.94, "hd95": 3.7}}, "mean_dice": 0.91,
                              "clinical": clinical}}


def test_the_model_gets_the_recorded_decision_and_the_card_the_pooled_postprocessed_figures(tmp_path):
    path = tmp_path / "acdc_cv_run.json"
    path.write_text(json.dumps(_results()))
    model = tmp_path / "model"
    model.mkdir()
    assert recorded_cv.main([str(path), str(model), str(tmp_path / "cv" / "summary.json")]) == 0
    decision = PostprocessingDecision.from_dict(json.loads((model / "postprocessing.json").read_text()))
    assert (decision.foreground_lcc, decision.per_label_lcc) == (True, (3,))
    assert "acdc_cv_run.json" in decision.evidence["source"]
    figures = figures_from_summary(json.loads((tmp_path / "cv" / "summary.json").read_text()), "s")
    assert figures["classes"] == {"LV": {"dice": 0.94, "hd95": 3.7}}  # the postprocessed pool, not as predicted
    assert figures["clinical"]["RVEF"] == {"bias": -2.8, "loa": [-19.9, 14.2], "mad": 6.8}
    assert [limit.split(":")[0] for limit in accuracy_limits(figures)] == ["LVM", "RVEF"]


def test_a_model_folder_with_its_own_decision_keeps_it(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(_results()))
    PostprocessingDecision(False, (1,)).save(tmp_path / "postprocessing.json")
    recorded_cv.main([str(path), str(tmp_path), str(tmp_path / "summary.json")])
    assert json.loads((tmp_path / "postprocessing.json").read_text())["per_label_lcc"] == [1]


def test_figures_of_fewer_than_five_folds_or_without_a_decision_are_refused(tmp_path):
    with pytest.raises(SystemExit, match="not of all five"):
        recorded_cv.summary_from_results(_results(folds=(0, 1)), "r.json")
    with pytest.raises(SystemExit, match="no 'postprocessing'"):
        recorded_cv.decision_from_results({k: v for k, v in _results().items() if k != "postprocessing"}, "r.json")


def test_the_stored_96_epoch_record_converts():
    path = RESULTS / "acdc_cv_edge_bf16_e96.json"
    if not path.is_file():
        pytest.skip(f"{path} not in this checkout")
    results = json.loads(path.read_text())
    summary = recorded_cv.summary_from_results(results, path.name)
    figures = figures_from_summary(summary, path.name)
    assert figures["classes"]["RV"]["dice"] == results["postprocessed"]["classes"]["RV"]["dice"]
    assert recorded_cv.decision_from_results(results, path.name).foreground_lcc == \
        results["postprocessing"]["foreground_lcc"]
