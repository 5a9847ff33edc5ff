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


def test_a_selection_refuses_a_member_whose_weights_changed_since(tmp_path):
    import json

    import pytest

    from autocmr.documents.manifest import ModelManifest
    from autocmr.errors import DocumentError
    from autocmr.inference.postprocessing import PostprocessingDecision
    from autocmr.selection.document import Member, Selection

    model = tmp_path / "results" / "m"
    model.mkdir(parents=True)
    ModelManifest("D", "P", "2d", {"fold_0/checkpoint_final.pth": "a" * 64}).save(model)
    path = tmp_path / "results" / "selection.json"
    Selection((Member("m", model, ("0",)),), PostprocessingDecision(), "dice").save(path)
    assert json.loads(path.read_text())["chosen"]["members"][0]["weights"] == {"fold_0/checkpoint_final.pth": "a" * 64}
    assert Selection.load(path).members[0].model == model.resolve()
    ModelManifest("D", "P", "2d", {"fold_0/checkpoint_final.pth": "b" * 64}).save(model)  # retrained since
    with pytest.raises(DocumentError, match="no longer has the weights the selection was made with"):
        Selection.load(path)
