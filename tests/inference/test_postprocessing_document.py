"""The stored postprocessing decision read back: a malformed one is a document error naming the file and field."""
from __future__ import annotations

import pytest

from autocmr.errors import DocumentError
from autocmr.inference.postprocessing import PostprocessingDecision


def test_a_stored_decision_reads_back_as_saved(tmp_path):
    import json

    decision = PostprocessingDecision(True, (1, 3), {"note": "validated"})
    decision.save(tmp_path / "postprocessing.json")
    stored = json.loads((tmp_path / "postprocessing.json").read_text())
    assert PostprocessingDecision.from_dict(stored, source=tmp_path / "postprocessing.json") == decision
    assert PostprocessingDecision.from_dict({}) == PostprocessingDecision()


@pytest.mark.parametrize("stored, message", [
    ({"per_label_lcc": "ab"}, r"'per_label_lcc' must be a list of label values \(integers\), not 'ab'"),
    ({"per_label_lcc": [1, "2"]}, r"'per_label_lcc' must be a list of label values"),
    ({"per_label_lcc": [True]}, r"'per_label_lcc' must be a list of label values"),
    ({"foreground_lcc": "false"}, r"'foreground_lcc' must be true or false, not 'false'"),
    ({"evidence": [1]}, r"'evidence' must be a JSON object, not list"),
    ([1, 3], r"the postprocessing decision must be a JSON object, not list"),
])
def test_a_malformed_decision_is_a_document_error_naming_the_file_and_field(tmp_path, stored, message):
    path = tmp_path / "model" / "postprocessing.json"
    with pytest.raises(DocumentError, match=rf"model.postprocessing.json: {message}"):
        PostprocessingDecision.from_dict(stored, source=path)
    with pytest.raises(DocumentError, match=rf"^postprocessing.json: {message}"):  # the file's name at least
        PostprocessingDecision.from_dict(stored)
