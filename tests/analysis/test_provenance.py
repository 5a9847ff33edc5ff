"""The report names the model that made the masks, with its card's cross-validated accuracy and limits."""
import json
import logging

from autocmr.analysis.provenance import model_provenance
from autocmr.analysis.report import write_report
from autocmr.documents.layout import MODEL_CARD
from autocmr.documents.model_card import ModelCard

PREDICTOR = {"model": "", "configuration": "2d", "folds": [0, 1], "device": "cpu", "mirror_axes": [0, 1],
             "step": 0.5, "precision": "bf16", "postprocessing": {"foreground_lcc": True, "per_label_lcc": [1, 3]}}
CLINICAL = {"LVEDV": {"bias": -3.3, "loa": [-17.8, 11.2], "mad": 5.7},
            "RVEF": {"bias": -3.5, "loa": [-22.1, 15.1], "mad": 7.9},
            "LVM": {"bias": 5.3}}  # incomplete figures: not shown


def test_provenance_from_the_recorded_predictor_and_the_model_card(tmp_path):
    ModelCard("acdc-test", cross_validation={"source": "5-fold CV", "clinical": CLINICAL},
              limits=["short-axis cine only"]).save(tmp_path)
    p = model_provenance({**PREDICTOR, "model": str(tmp_path)})
    assert p.name == "acdc-test" and p.folder == str(tmp_path) and p.agreement_source == "5-fold CV"
    assert set(p.agreement) == {"LVEDV", "RVEF"}
    assert (p.agreement["LVEDV"].bias, p.agreement["LVEDV"].loa_upper, p.agreement["RVEF"].mean_abs_diff) == \
        (-3.3, 11.2, 7.9)
    settings = dict(p.settings)
    assert settings["test-time mirroring"] == "axes 0, 1" and settings["folds"] == "0, 1"
    assert settings["postprocessing"] == "largest foreground component, largest LV component, largest RV component"
    assert p.limits == ("short-axis cine only",)
    page = write_report([], tmp_path / "report.html", model=p).read_text()
    assert "Model and the accuracy to expect" in page and "acdc-test" in page
    assert "<td class='text'>LVEDV (mL)</td><td>-3.3</td><td>-17.8 to +11.2</td><td>5.7</td>" in page
    assert "LVM (g)" not in page and "short-axis cine only" in page


def test_without_a_card_or_a_record(tmp_path, caplog):
    assert model_provenance(None) is None and model_provenance({}) is None
    bare = model_provenance({**PREDICTOR, "model": str(tmp_path), "mirror_axes": []})
    assert bare.name == tmp_path.name and not bare.agreement and not bare.limits
    assert dict(bare.settings)["test-time mirroring"] == "off" and "4D cines" not in dict(bare.settings)
    for cine, shown in (({"mode": "fast", "tie_tolerance": 0.01}, "fast path, near-tie tolerance 1 %"),
                        ({"mode": "full"}, "every frame at full accuracy")):
        assert dict(model_provenance({**PREDICTOR, "model": str(tmp_path), "cine": cine}).settings)["4D cines"] == shown
    page = write_report([], tmp_path / "report.html", model=bare).read_text()
    assert "carries no cross-validated accuracy" in page
    (tmp_path / MODEL_CARD).write_text("{not json")
    with caplog.at_level(logging.WARNING):
        broken = model_provenance({**PREDICTOR, "model": str(tmp_path)})
    assert broken is not None and not broken.agreement and "model card" in caplog.text
    assert "Model and the accuracy" not in write_report([], tmp_path / "plain.html").read_text()


def test_a_selection_shows_its_members_and_the_figures_it_was_chosen_on(tmp_path, caplog):
    figures = {"clinical": {"LVEF": {"bias": -1.5, "mean_abs_diff": 3.2, "spearman_r": 0.9, "n": 10}}}
    (tmp_path / "selection.json").write_text(json.dumps({
        "kind": "autocmr_selection", "schema_version": 1, "folds": ["0", "1"], "n_cases": 20,
        "chosen": {"cv": {"clinical": {}}, "cv_postprocessed": figures}}))
    predictor = {**PREDICTOR, "selection": str(tmp_path), "name": "a+b",
                 "members": [{"name": "a", "folds": ["0"]}, {"name": "b", "folds": ["0", "1"]}]}
    p = model_provenance(predictor)
    assert p.name == "selection a+b" and dict(p.settings)["members"] == "a (folds 0), b (folds 0, 1)"
    assert p.agreement["LVEF"].loa_lower is None and p.agreement_source == "autocmr_find_best, folds 0, 1, 20 cases"
    page = write_report([], tmp_path / "report.html", model=p).read_text()
    assert "<td class='text'>LVEF (%)</td><td>-1.5</td><td>&ndash;</td><td>3.2</td>" in page
    with caplog.at_level(logging.WARNING):
        gone = model_provenance({**predictor, "selection": str(tmp_path / "moved.json")})
    assert not gone.agreement and "selection" in caplog.text


def test_the_report_counts_each_flag_over_the_batch(tmp_path):
    from autocmr.analysis.qc import QcResult
    from autocmr.analysis.tables import FAILED, SubjectReport

    reports = [SubjectReport("a", qc=QcResult(flags=["fragmented", "high_uncertainty"])),
               SubjectReport("b", qc=QcResult(flags=["fragmented"])), SubjectReport("c"),
               SubjectReport("d", status=FAILED, notes=["prediction failed"])]
    page = write_report(reports, tmp_path / "report.html").read_text()
    counts = page[page.index("Flags raised (subjects)"):]
    assert counts.index("fragmented</span> 2") < counts.index("high_uncertainty</span> 1")
    assert "Flags raised" not in write_report(reports[2:], tmp_path / "none.html").read_text()
