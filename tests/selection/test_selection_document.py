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
