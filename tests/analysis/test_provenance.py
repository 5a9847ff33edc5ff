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
    caplog.clear()
    (tmp_path / MODEL_CARD).write_text(json.dumps({"schema_version": 1, "task": "x"}))  # no name: TypeError before
    with caplog.at_level(logging.WARNING):
        nameless = model_provenance({**PREDICTOR, "model": str(tmp_path)})
    assert nameless is not None and "malformed model card" in caplog.text
    assert "Model and the accuracy" not in write_report([], tmp_path / "plain.html").read_text()


def test_a_selection_shows_its_members_and_the_figures_it_was_chosen_on(tmp_path, caplog):
    figures = {"clinical": {"LVEF": {"bias": -1.5, "mean_abs_diff": 3.2, "spearman_r": 0.9, "n": 10}}}
    members = [{"name": "a", "folds": ["0"]}, {"name": "b", "folds": ["0", "1"]}]
    (tmp_path / "selection.json").write_text(json.dumps({
        "kind": "autocmr_selection", "schema_version": 1, "folds": ["0", "1"], "n_cases": 20,
        "chosen": {"name": "a+b", "members": members, "cv": {"clinical": {}}, "cv_postprocessed": figures}}))
    predictor = {**PREDICTOR, "selection": str(tmp_path), "name": "a+b", "members": members}
    p = model_provenance(predictor)
    assert p.name == "selection a+b" and dict(p.settings)["members"] == "a (folds 0), b (folds 0, 1)"
    assert p.agreement["LVEF"].loa_lower is None and p.agreement_source == "autocmr_find_best, folds 0, 1, 20 cases"
    page = write_report([], tmp_path / "report.html", model=p).read_text()
    assert "<td class='text'>LVEF (%)</td><td>-1.5</td><td>&ndash;</td><td>3.2</td>" in page
    with caplog.at_level(logging.WARNING):
        gone = model_provenance({**predictor, "selection": str(tmp_path / "moved.json")})
    assert not gone.agreement and "selection" in caplog.text


def test_a_selection_made_again_since_the_masks_does_not_lend_them_its_figures(tmp_path, caplog):
    """autocmr_find_best ran again into the same folder after the batch: the figures now in selection.json
    describe another selection (or the same one measured again), not these masks: left out, with a note."""
    figures = {"clinical": {"LVEF": {"bias": -1.5, "mean_abs_diff": 3.2, "spearman_r": 0.9, "n": 10}}}
    members = [{"name": "a", "folds": ["0"]}, {"name": "b", "folds": ["0"]}]

    def write(name, chosen_members, created):
        (tmp_path / "selection.json").write_text(json.dumps({
            "kind": "autocmr_selection", "schema_version": 1, "folds": ["0"], "n_cases": 20, "created": created,
            "chosen": {"name": name, "members": chosen_members, "cv": figures, "cv_postprocessed": figures}}))

    predictor = {**PREDICTOR, "selection": str(tmp_path / "selection.json"), "name": "a+b", "members": members,
                 "selection_created": "2026-01-01T00:00:00+00:00"}
    write("a+b", members, "2026-01-01T00:00:00+00:00")
    assert set(model_provenance(predictor).agreement) == {"LVEF"}  # the very selection that made the masks
    for name, chosen_members, created in (("a", members[:1], "2026-02-01T00:00:00+00:00"),
                                          ("a+b", [members[0], {"name": "b", "folds": ["0", "1"]}], None),
                                          ("a+b", members, "2026-02-01T00:00:00+00:00")):
        write(name, chosen_members, created)
        with caplog.at_level(logging.WARNING):
            p = model_provenance(predictor)
        assert not p.agreement and p.agreement_source == ""
        assert dict(p.settings)["cross-validation figures"].startswith(f"not shown: {tmp_path / 'selection.json'}")
        page = write_report([], tmp_path / "report.html", model=p).read_text()
        assert "not shown:" in page and "<td>3.2</td>" not in page
    assert "not shown in the report" in caplog.text
    # a batch recorded before the selection's time was: the name and members decide
    write("a+b", members, "2026-03-01T00:00:00+00:00")
    assert set(model_provenance({**predictor, "selection_created": None}).agreement) == {"LVEF"}


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
