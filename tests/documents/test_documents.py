"""Versioned documents: manifest, run options, case properties, model card; old and unknown versions."""
from __future__ import annotations

import json

import pytest

from autocmr.documents import layout
from autocmr.documents.case_properties import CaseProperties
from autocmr.documents.manifest import ModelManifest, sha256_of, update_weights, verify_weight_file
from autocmr.documents.model_card import ModelCard
from autocmr.documents.run_options import RunOptionsDocument
from autocmr.errors import DocumentError

PROPS = {"spacing": [10.0, 1.5, 1.5], "target_spacing": [10.0, 1.25, 1.25], "shape_before_crop": [8, 64, 60],
         "bbox": [[0, 8], [2, 62], [0, 60]], "shape_after_crop": [8, 60, 60], "shape_after_resampling": [8, 72, 72]}


def test_manifest_records_checksums_keeps_other_folds_and_names_a_modified_file(tmp_path):
    identity = ModelManifest("Dataset1_X", "autocmrPlans_cpu", "2d")
    for fold in ("0", "1"):
        (tmp_path / f"fold_{fold}").mkdir()
        (tmp_path / layout.checkpoint_relpath(fold, "final")).write_bytes(f"weights {fold}".encode())
        update_weights(tmp_path, identity, record=[layout.checkpoint_relpath(fold, "final")])
    update_weights(tmp_path, identity, forget_prefix="fold_0/")  # fold 0 starts training again
    manifest = ModelManifest.load(tmp_path)
    assert list(manifest.weights) == ["fold_1/checkpoint_final.pth"]
    assert manifest.weights["fold_1/checkpoint_final.pth"] == sha256_of(tmp_path / "fold_1/checkpoint_final.pth")
    assert verify_weight_file(tmp_path, manifest, "fold_1/checkpoint_final.pth")
    assert not verify_weight_file(tmp_path, manifest, "fold_0/checkpoint_final.pth")  # not covered: warned
    (tmp_path / "fold_1/checkpoint_final.pth").write_bytes(b"tampered")
    with pytest.raises(DocumentError, match=r"fold_1/checkpoint_final\.pth: sha256 .* corrupt or was modified"):
        verify_weight_file(tmp_path, manifest, "fold_1/checkpoint_final.pth")


def test_manifest_versions(tmp_path):
    legacy_json = {"dataset": "D", "plans_name": "P", "configuration": "2d"}  # model.json before manifests
    (tmp_path / layout.MODEL_MANIFEST).write_text(json.dumps(legacy_json))
    legacy = ModelManifest.load(tmp_path)
    assert legacy.is_legacy and legacy.weights == {}
    (tmp_path / layout.MODEL_MANIFEST).write_text(json.dumps({"schema_version": 99, "dataset": "D"}))
    with pytest.raises(DocumentError, match="schema version 99.*newer autocmr"):
        ModelManifest.load(tmp_path)
    (tmp_path / layout.MODEL_MANIFEST).write_text("{not json")
    with pytest.raises(DocumentError, match="not valid JSON.*autocmr_models upgrade"):
        ModelManifest.load(tmp_path)


def test_case_properties_read_version_1_and_reject_incomplete_ones():
    legacy = CaseProperties.from_dict(PROPS)  # written before the document: no schema_version
    assert legacy.schema_version == 1 and legacy.bbox == [[0, 8], [2, 62], [0, 60]]
    again = CaseProperties.from_dict(legacy.to_dict())
    assert again.schema_version == 2 and again.shape_after_resampling == [8, 72, 72]
    with pytest.raises(DocumentError, match=r"lack \['bbox'\].*autocmr_plan"):
        CaseProperties.from_dict({k: v for k, v in PROPS.items() if k != "bbox"}, "case_001.json")
    with pytest.raises(DocumentError, match="case_002.json: case properties has schema version 7"):
        CaseProperties.from_dict({**PROPS, "schema_version": 7}, "case_002.json")


def test_run_options_document_keeps_resume_history(tmp_path):
    RunOptionsDocument({"epochs": 3}, "abc", "cpu", ["epochs: 2 -> 3"]).save(tmp_path / "options.json")
    doc = RunOptionsDocument.load(tmp_path / "options.json")
    assert doc.options == {"epochs": 3} and doc.changes_on_resume == ["epochs: 2 -> 3"] and doc.schema_version == 2
    (tmp_path / "old.json").write_text(json.dumps({"options": {"epochs": 1}, "digest": "x", "device": "cpu"}))
    assert RunOptionsDocument.load(tmp_path / "old.json").schema_version == 1
    (tmp_path / "bad.json").write_text(json.dumps({"digest": "x"}))
    with pytest.raises(DocumentError, match="lack the 'options'"):
        RunOptionsDocument.load(tmp_path / "bad.json")


def test_model_card_round_trip_and_text(tmp_path):
    card = ModelCard("acdc_2d", labels={"background": 0, "LV": 1, "MYO": 2, "RV": 3},
                     training_data={"subjects": 80}, cross_validation={
                         "source": "5-fold CV", "classes": {"LV": {"dice": 0.95, "hd95": 4.1}},
                         "clinical": {"LVEF": {"bias": -0.5, "loa": [-8.0, 7.0], "mad": 3.1}}},
                     limits=["short-axis cine only"], data_licence="ACDC: research use")
    card.save(tmp_path)
    back = ModelCard.load(tmp_path)
    assert back == card
    text = back.render()
    for expected in ("# acdc_2d", "1 LV", "subjects: 80", "LV     0.950", "LVEF", "[-8.0, 7.0]", "short-axis cine only",
                     "ACDC: research use"):
        assert expected in text, expected


def test_documents_sit_below_every_other_layer():
    """Importing the documents pulls in no planner, trainer, inference or model code (they all import it)."""
    import subprocess
    import sys

    code = ("import sys, autocmr.documents, autocmr.documents.checkpoint, autocmr.documents.manifest, "
            "autocmr.documents.run_options, autocmr.documents.case_properties, autocmr.documents.model_card; "
            "print(sorted(m for m in sys.modules if m.startswith('autocmr.') and m.split('.')[1] in "
            "('planners', 'trainers', 'inference', 'models', 'networks', 'preprocessing', 'evaluation', 'cli')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("edit, message", [
    ({"weights": ["fold_0/checkpoint_final.pth"]}, r"'weights' must map file names to sha256 strings, not \["),
    ({"weights": {"fold_0/checkpoint_final.pth": 12}}, r"'weights' must map file names to sha256 strings"),
    ({"documents": ["plans.json"]}, r"'documents' must map file names to sha256 strings"),
    ({"name": 7}, r"'name' must be a non-empty string, not 7"),
    ({"dataset": None}, r"'dataset' must be a non-empty string, not None"),
    ({"configuration": ["2d"]}, r"'configuration' must be a non-empty string, not \['2d'\]"),
])
def test_a_manifest_field_of_the_wrong_type_is_a_document_error_naming_file_and_field(tmp_path, edit, message):
    manifest = {"schema_version": 2, "dataset": "D", "plans_name": "P", "configuration": "2d", "weights": {},
                **edit}
    (tmp_path / layout.MODEL_MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(DocumentError, match=rf"model.json: model manifest field {message}"):
        ModelManifest.load(tmp_path)

