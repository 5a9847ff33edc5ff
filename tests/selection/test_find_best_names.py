"""Model names in a configuration selection (autocmr.selection.find_best)."""
from __future__ import annotations

from pathlib import Path

from autocmr.selection.find_best import _unique_names


def test_every_model_gets_its_own_name_even_when_folder_names_collide(tmp_path, monkeypatch):
    names = _unique_names([Path("x/a_1"), Path("y/a"), Path("z/a")])
    assert len(set(names)) == 3 and names[0] == "a_1"
    assert _unique_names([Path("p/a"), Path("q/b")]) == ["a", "b"]
    monkeypatch.chdir(tmp_path)
    assert _unique_names([Path(".")]) == [tmp_path.name]  # -m . names the folder, not ""


def test_models_of_other_classes_are_refused_before_any_prediction():
    import pytest

    from autocmr.errors import ConfigurationError
    from autocmr.selection.cv_probabilities import CvModel
    from autocmr.selection.find_best import _check_same_classes

    acdc = {"background": 0, "LV": 1, "MYO": 2, "RV": 3}
    a = CvModel("a", Path("/m/a"), ("0",), {}, acdc, ".nii.gz")
    _check_same_classes([a, CvModel("b", Path("/m/b"), ("0",), {}, dict(acdc), ".nii.gz")])
    swapped = CvModel("c", Path("/m/c"), ("0",), {}, {"background": 0, "RV": 1, "MYO": 2, "LV": 3}, ".nii.gz")
    with pytest.raises(ConfigurationError, match="/m/c has labels .*same classes with the same label values"):
        _check_same_classes([a, swapped])


def test_a_selection_refuses_a_member_whose_checkpoint_files_changed_since(tmp_path):
    """The weights are the checkpoint files' own sha256 (a model without a manifest, a --checkpoint latest it does
    not list, a fold retrained since), checked against the files when the selection is applied."""
    import hashlib
    import json

    import pytest

    from autocmr.documents.layout import checkpoint_relpath
    from autocmr.errors import DocumentError
    from autocmr.inference.postprocessing import PostprocessingDecision
    from autocmr.selection.document import Member, Selection

    model = tmp_path / "results" / "m"
    checkpoint = model / checkpoint_relpath("0", "final")
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"the weights scored")
    path = tmp_path / "results" / "selection.json"
    Selection((Member("m", model, ("0",)),), PostprocessingDecision(), "dice").save(path)  # no manifest at all
    scored = {checkpoint_relpath("0", "final"): hashlib.sha256(b"the weights scored").hexdigest()}
    assert json.loads(path.read_text())["chosen"]["members"][0]["weights"] == scored
    assert Selection.load(path).members[0].model == model.resolve()
    checkpoint.write_bytes(b"retrained since")
    with pytest.raises(DocumentError, match=r"fold_0/checkpoint_final.pth has sha256 .*run autocmr_find_best again"):
        Selection.load(path)
    checkpoint.unlink()
    with pytest.raises(DocumentError, match=r"checkpoint_final.pth is missing"):
        Selection.load(path)


def test_a_selection_records_the_weights_find_best_scored_not_those_found_when_saving(tmp_path):
    import hashlib

    import pytest

    from autocmr.documents.layout import checkpoint_relpath
    from autocmr.errors import DocumentError
    from autocmr.inference.postprocessing import PostprocessingDecision
    from autocmr.selection.document import Member, Selection

    model = tmp_path / "m"
    latest = model / checkpoint_relpath("0", "latest")
    latest.parent.mkdir(parents=True)
    latest.write_bytes(b"replaced after scoring")
    scored = {checkpoint_relpath("0", "latest"): hashlib.sha256(b"scored").hexdigest()}
    Selection((Member("m", model, ("0",), scored),), PostprocessingDecision(), "dice", "latest").save(
        tmp_path / "selection.json")
    with pytest.raises(DocumentError, match=r"'m': .*fold_0/checkpoint_latest.pth has sha256 .*autocmr_find_best"):
        Selection.load(tmp_path / "selection.json")
    latest.write_bytes(b"scored")
    assert Selection.load(tmp_path / "selection.json").members[0].weights == scored


def test_a_candidate_that_leaves_the_measure_undefined_on_a_subject_ranks_after_one_that_does_not():
    from autocmr.selection.find_best import figures, rank_key

    def candidate(mad: float, excluded: int) -> dict:
        return {"dice_mean": 0.8, "clinical": {"LVEF": {"mean_abs_diff": mad, "n": 10 - excluded,
                                                        "n_excluded": excluded}}}

    fails_one, complete = candidate(2.0, 1), candidate(3.0, 0)  # no LV at one subject's ED: its EF undefined
    assert sorted([fails_one, complete], key=rank_key("LVEF"))[0] is complete
    better = candidate(2.5, 0)
    assert sorted([complete, better], key=rank_key("LVEF"))[0] is better
    assert sorted([complete, fails_one], key=rank_key("dice"))[0] is complete  # Dice: first stays first
    summary = {"mean_over_classes": {"dice": 0.8}, "classes": {},
               "clinical": {"agreement": {"LVEF": {"bias": 1.0, "mean_abs_diff": 2.0, "spearman_r": None, "n": 9,
                                                   "n_excluded": 1, "sd_diff": 1.0}}}}
    assert figures(summary)["clinical"]["LVEF"] == {"bias": 1.0, "mean_abs_diff": 2.0, "spearman_r": None, "n": 9,
                                                    "n_excluded": 1}


def test_the_cache_key_of_an_other_phase_model_covers_the_other_phase_image(tmp_path):
    """Its probabilities depend on both images: a replaced partner image invalidates the cached case."""
    import os

    from autocmr.selection.cv_probabilities import CvModel, case_sources

    images = tmp_path / "raw" / "imagesTr"
    images.mkdir(parents=True)
    for case in ("s1_ED", "s1_ES"):
        (images / f"{case}_0000.nii.gz").write_bytes(b"image")
    labels = {"background": 0, "LV": 1}
    paired = CvModel("p", tmp_path / "p", ("0",), {"s1_ED": "0"}, labels, ".nii.gz", {"s1_ED": "s1_ES"})
    alone = CvModel("a", tmp_path / "a", ("0",), {"s1_ED": "0"}, labels, ".nii.gz")
    before = case_sources(paired, ["s1_ED"], tmp_path / "raw"), case_sources(alone, ["s1_ED"], tmp_path / "raw")
    partner = images / "s1_ES_0000.nii.gz"
    partner.write_bytes(b"re-converted image")
    os.utime(partner, ns=(1, 1))
    assert case_sources(paired, ["s1_ED"], tmp_path / "raw") != before[0]
    assert case_sources(alone, ["s1_ED"], tmp_path / "raw") == before[1]  # a model without the other phase
