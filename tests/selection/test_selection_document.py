"""Reading ``selection.json``: a malformed field is a document error naming the file and the field, before any
model folder it names is opened."""
from __future__ import annotations

import json

import pytest

from autocmr.errors import DocumentError
from autocmr.selection.document import KIND, SCHEMA_VERSION, Selection


def _selection(tmp_path, *, member=None, **fields):
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    entry = {"name": "2d", "model": str(model), "relative_model": "model", "folds": ["0", "1"], **(member or {})}
    document = {"schema_version": SCHEMA_VERSION, "kind": KIND, "rank_by": "dice", "checkpoint": "final",
                "chosen": {"name": "2d", "members": [entry],
                           "postprocessing": {"foreground_lcc": True, "per_label_lcc": [1]}}, **fields}
    path = tmp_path / "selection.json"
    path.write_text(json.dumps(document))
    return path


def test_a_well_formed_selection_loads(tmp_path):
    selection = Selection.load(_selection(tmp_path, member={"folds": [0, "all"]}))
    assert selection.members[0].folds == ("0", "all") and selection.checkpoint == "final"
    assert selection.postprocessing.per_label_lcc == (1,)


@pytest.mark.parametrize("member, fields, message", [
    ({"folds": "01"}, {}, r"'folds' of model '2d' must be a list of folds .*not '01'"),
    ({"folds": []}, {}, r"'folds' of model '2d' must be a list of folds"),
    ({"folds": ["../x"]}, {}, r"'folds' of model '2d' must be a list of folds"),
    ({"folds": [True]}, {}, r"'folds' of model '2d' must be a list of folds"),
    ({"name": 3}, {}, r"a member's 'name', 'model' and 'relative_model' must be strings"),
    ({"relative_model": 3}, {}, r"a member's 'name', 'model' and 'relative_model' must be strings"),
    ({}, {"checkpoint": "../x"}, r"'checkpoint' is '../x', not one of \['final', 'best', 'latest'\]"),
    ({}, {"chosen": {"members": {"name": "2d"}}}, r"'chosen' must be an object with a list of 'members'"),
    ({}, {"chosen": {"members": ["2d"]}}, r"a member is '2d', not an object"),
    ({}, {"chosen": {"members": [{"name": "2d"}]}}, r"missing 'folds'"),
])
def test_a_malformed_selection_is_a_document_error_naming_file_and_field(tmp_path, member, fields, message):
    path = _selection(tmp_path, member=member, **fields)
    with pytest.raises(DocumentError, match=rf"selection.json: malformed selection, {message}"):
        Selection.load(path)


def test_a_malformed_chosen_postprocessing_names_the_selection(tmp_path):
    path = _selection(tmp_path)
    document = json.loads(path.read_text())
    document["chosen"]["postprocessing"]["per_label_lcc"] = "ab"
    path.write_text(json.dumps(document))
    with pytest.raises(DocumentError, match=r"selection.json: chosen postprocessing: 'per_label_lcc' must be"):
        Selection.load(path)


def test_choosing_on_a_model_with_fold_all_only_says_that_folds_are_needed(tiny_model_dir, tmp_path):
    """Fold 'all' validated on no case: there is nothing to choose by, and the message says what is needed."""
    import shutil

    from autocmr.errors import ConfigurationError
    from autocmr.selection.cv_probabilities import open_cv_model

    model = tmp_path / tiny_model_dir.name  # PLANS__CONFIGURATION: the configuration without a manifest
    shutil.copytree(tiny_model_dir, model)
    for fold in model.glob("fold_*"):
        if fold.name != "fold_all":
            shutil.rmtree(fold)
    (model / "fold_all").mkdir(exist_ok=True)
    shutil.copy(next(tiny_model_dir.glob("fold_*/checkpoint_final.pth")), model / "fold_all" / "checkpoint_final.pth")
    (model / "model.json").unlink(missing_ok=True)
    with pytest.raises(ConfigurationError, match=r"no cross-validation fold has a checkpoint_final.pth \(trained "
                                                 r"folds: \['all'\]\).*train folds 0-4"):
        open_cv_model(model)
