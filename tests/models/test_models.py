"""Models users move around: compact float16 form, checksums, archives, installed names, old folders."""
from __future__ import annotations

import io
import json
import random
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from autocmr.documents import layout
from autocmr.documents.manifest import ModelManifest
from autocmr.documents.model_card import ModelCard
from autocmr.errors import ConfigurationError, DocumentError, InputFileError, PlansError
from autocmr.inference.predictor import Predictor
from autocmr.models.archive import export_model, import_model
from autocmr.models.card import build_model_card
from autocmr.models.commands import info_text, list_text, verify_text
from autocmr.models.folder import ModelFolder
from autocmr.models.store import pack_model, upgrade_model_folder
from tests.helpers import small_case

FINAL = layout.checkpoint_relpath("0", "final")


@pytest.fixture(scope="module")
def packed(tiny_model_dir, tmp_path_factory):
    dest = tmp_path_factory.mktemp("packed") / "tiny"
    card = build_model_card(tiny_model_dir, name="tiny", extra={"data_licence": "phantoms: no terms"})
    pack_model(tiny_model_dir, dest, name="tiny", card=card)
    return dest


def _labels(model_dir, case):
    # float32 arithmetic: the comparison isolates the float16 storage of the weights; bfloat16 arithmetic (the
    # default on CPUs that compute it natively) adds its own rounding, which flips near-tied voxels of this
    # barely trained phantom model
    predictor = Predictor(model_dir, device="cpu", mirror=False, precision="fp32")
    return predictor.predict_array(case.image, case.geometry.spacing_zyx, direction=case.geometry.direction).label


def test_training_writes_a_manifest_with_the_checksum_of_each_checkpoint(tiny_model_dir):
    manifest = ModelManifest.load(tiny_model_dir)
    assert not manifest.is_legacy and manifest.configuration == "2d"
    assert set(manifest.weights) == {layout.checkpoint_relpath("0", k) for k in layout.CHECKPOINT_KINDS}


def test_compact_form_is_half_the_size_verified_and_predicts_the_same(tiny_model_dir, packed):
    payload = torch.load(packed / FINAL, weights_only=True)
    assert payload["weights_dtype"] == "float16" and "optimizer" not in payload
    assert all(v.dtype == torch.float16 for v in payload["network"].values() if v.is_floating_point())
    original = torch.load(tiny_model_dir / FINAL, weights_only=True)["network"]
    assert (packed / FINAL).stat().st_size < 0.6 * sum(v.numel() * v.element_size() for v in original.values())
    assert "all match" in verify_text(str(packed))
    case = small_case(5)
    full, half = _labels(tiny_model_dir, case), _labels(packed, case)
    assert full.shape == half.shape and np.mean(full == half) > 0.99
    card = ModelCard.load(packed)
    assert card.name == "tiny" and card.labels["MYO"] == 2 and card.training_data["subjects"] >= 1
    assert not (packed / layout.CASES).exists()  # the training set's per-subject table is not redistributed
    assert "phantoms: no terms" in info_text(str(packed))


def test_a_modified_weight_file_is_refused_naming_it(packed, tmp_path):
    copy = shutil.copytree(packed, tmp_path / "copy")
    weights = torch.load(copy / FINAL, weights_only=True)
    key = next(k for k, v in weights["network"].items() if v.is_floating_point())
    weights["network"][key] = weights["network"][key] + 1
    torch.save(weights, copy / FINAL)
    with pytest.raises(DocumentError, match=r"fold_0/checkpoint_final\.pth: sha256 .* corrupt or was modified"):
        Predictor(copy, device="cpu")
    with pytest.raises(DocumentError, match="checkpoint_final.pth"):
        verify_text(str(copy))


def test_pack_refuses_a_destination_it_would_wipe(tiny_model_dir, tmp_path):
    model_dir = tiny_model_dir
    keep = tmp_path / "my_models"
    (keep / "notes.txt").parent.mkdir()
    (keep / "notes.txt").write_text("a user's files")
    with pytest.raises(PlansError, match="not a model folder"):
        pack_model(model_dir, keep)
    assert (keep / "notes.txt").read_text() == "a user's files"
    with pytest.raises(PlansError, match="is the model being packed or holds it"):
        pack_model(model_dir, model_dir.parent)


def test_unverifiable_or_modified_weights_are_not_passed_on_or_re_blessed(packed, tmp_path):
    copy = shutil.copytree(packed, tmp_path / "copy")
    shutil.copytree(copy / "fold_0", copy / "fold_1")  # a fold the manifest does not list
    with pytest.raises(DocumentError, match=r"fold_1/checkpoint_final\.pth: not listed"):
        export_model(copy, tmp_path / "x.tar.gz")
    with pytest.raises(DocumentError, match="not listed"):
        pack_model(copy, tmp_path / "packed_again", folds=["1"])
    assert not (tmp_path / "x.tar.gz").exists()
    weights = torch.load(copy / FINAL, weights_only=True)
    key = next(k for k, v in weights["network"].items() if v.is_floating_point())
    weights["network"][key] = weights["network"][key] + 1
    torch.save(weights, copy / FINAL)
    with pytest.raises(DocumentError, match="corrupt or was modified"):
        upgrade_model_folder(copy)  # would have recorded the modified file's checksum as the valid one


def test_verify_fails_on_missing_files_and_names_unlisted_ones(packed, tmp_path):
    copy = shutil.copytree(packed, tmp_path / "copy")
    shutil.copy(copy / FINAL, copy / "fold_0" / "checkpoint_latest.pth")
    # a packed model: loading refuses a weight file its manifest does not list, so verify does too
    with pytest.raises(DocumentError, match=r"checkpoint_latest\.pth: not listed"):
        verify_text(str(copy))
    manifest = json.loads((copy / "model.json").read_text())
    manifest["documents"] = {}  # as a training folder's manifest: its folds come and go, it only names them
    (copy / "model.json").write_text(json.dumps(manifest))
    assert "not covered by the manifest (not verified): ['fold_0/checkpoint_latest.pth']" in verify_text(str(copy))
    (copy / FINAL).unlink()
    with pytest.raises(DocumentError, match=r"missing: \['fold_0/checkpoint_final.pth'\]"):
        verify_text(str(copy))
    (copy / "model.json").unlink()
    with pytest.raises(DocumentError, match="no checksums recorded"):
        verify_text(str(copy))


def test_export_import_and_predict_by_name(packed, tmp_path):
    archive = export_model(packed, tmp_path / "tiny.tar.gz", name="site_x")
    models = tmp_path / "models"
    installed = import_model(archive, models_dir=models)
    assert installed == models / "site_x" and (installed / FINAL).is_file()
    assert "all match" in verify_text("site_x", models_dir=models)
    assert ModelFolder.open(installed).manifest.name == "site_x"
    assert "site_x" in list_text(models)
    shutil.copytree(installed, models / ".tmp_0123abcd_site_y")  # what a killed import leaves behind
    assert "site_y" not in list_text(models)
    shutil.rmtree(models / ".tmp_0123abcd_site_y")
    with pytest.raises(PlansError, match="already installed.*--replace"):
        import_model(archive, models_dir=models)
    assert import_model(archive, models_dir=models, replace=True) == installed
    assert not [p for p in models.iterdir() if p.name.startswith(".tmp")]


def test_name_lookup_through_the_environment(packed, tmp_path, monkeypatch):
    models = tmp_path / "models"
    import_model(export_model(packed, tmp_path / "a.tar.gz", name="site_y"), models_dir=models)
    monkeypatch.setenv("AUTOCMR_MODELS", str(models))
    assert ModelFolder.open("site_y").path == models / "site_y"
    with pytest.raises(PlansError, match=r"neither a model folder nor the name.*installed: \[.*'site_y'"):
        ModelFolder.open("site_z")


def _archive_with(tmp_path, members):
    path = tmp_path / "bad.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_unsafe_or_incomplete_archives_are_refused(packed, tmp_path):
    manifest = (packed / layout.MODEL_MANIFEST).read_bytes()
    escaping = _archive_with(tmp_path, {"m/model.json": manifest, "m/../../evil.txt": b"x"})
    with pytest.raises(InputFileError, match="unsafe path"):
        import_model(escaping, models_dir=tmp_path / "models")
    assert not (tmp_path / "evil.txt").exists()
    plans = (packed / layout.PLANS).read_bytes()
    unlisted = _archive_with(tmp_path, {"m/model.json": manifest, "m/plans.json": plans,
                                        "m/fold_0/checkpoint_final.pth": (packed / FINAL).read_bytes(),
                                        "m/fold_9/checkpoint_final.pth": b"extra"})
    with pytest.raises(InputFileError, match=r"not listed in the manifest: \['fold_9/checkpoint_final.pth'\]"):
        import_model(unlisted, models_dir=tmp_path / "models")
    assert not (tmp_path / "models" / "m").exists()


def test_folder_written_before_manifests_loads_unchanged_and_upgrades(tiny_model_dir, tmp_path):
    old = shutil.copytree(tiny_model_dir, tmp_path / "old")
    (old / layout.MODEL_MANIFEST).write_text(json.dumps({"dataset": "D", "plans_name": "autocmrPlans_cpu",
                                                         "configuration": "2d"}))
    for path in old.glob("fold_*/checkpoint_*.pth"):  # the pre-document format: numpy RNG state pickled
        payload = torch.load(path, weights_only=True)
        payload.pop("schema_version"), payload.pop("format")
        payload["rng"] = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
        torch.save(payload, path)
    case = small_case(6)
    before = _labels(old, case)
    manifest = upgrade_model_folder(old)
    assert not manifest.is_legacy and len(manifest.weights) == 3
    assert torch.load(old / FINAL, weights_only=True)["schema_version"] == 2
    assert np.array_equal(_labels(old, case), before)


def test_card_limits_name_each_clinical_measure_outside_reader_agreement():
    from autocmr.models.card import accuracy_limits

    figures = {"clinical": {"LVEDV": {"bias": -5.0, "mad": 7.2}, "LVEF": {"bias": -0.5, "mad": 3.0},
                            "LVM": {"bias": +7.3, "mad": 7.9}, "RVEF": {"bias": -2.0, "mad": 5.0},
                            "RVEDV": {"bias": None, "mad": None}}}
    limits = accuracy_limits(figures)
    assert [line.split(":")[0] for line in limits] == ["LVEDV", "LVM"]  # MAD 7.2 > 6 mL; |bias| 7.3 > 4 g
    assert "bias +7.3 g, mean absolute difference 7.9 g" in limits[1] and "|bias| <= 4 g" in limits[1]
    assert accuracy_limits({"clinical": {}}) == [] and accuracy_limits({}) == []


def _domains_document() -> dict:
    """What benchmarks/model_domains.py writes (the parts the card reads)."""
    clinical = {"LVEDV": {"n": 80, "bias": -5.6, "mean_abs_diff": 7.7, "spearman_r": 0.99}}
    return {"complete": True, "args": {"mirror": False}, "domains": {
        "in_domain": {"description": "in-domain (ACDC CV)", "n_volumes": 160, "n_subjects": 80, "mean_dice": 0.875,
                      "classes": {"LV": {"dice": 0.924, "hd95": 4.5}, "MYO": {"dice": 0.854, "hd95": 5.3}},
                      "clinical": clinical},
        "sunnybrook": {"description": "Sunnybrook, GE (LV/MYO)", "n_volumes": 9, "n_subjects": None,
                       "mean_dice": 0.855, "classes": {"LV": {"dice": 0.921, "hd95": 2.0}}, "clinical": {}}}}


def test_card_carries_the_figures_across_domains(tiny_model_dir, tmp_path):
    path = tmp_path / "model_domains_x.json"
    path.write_text(json.dumps(_domains_document()))
    card = build_model_card(tiny_model_dir, name="tiny", domains=path)
    sets = card.domains["test_sets"]
    assert list(sets) == ["in_domain", "sunnybrook"]
    assert card.domains["source"].endswith("; without test-time mirroring")
    assert sets["in_domain"]["clinical"] == {"LVEDV": {"bias": -5.6, "mad": 7.7}}
    assert sets["sunnybrook"]["classes"]["LV"] == {"dice": 0.921, "hd95": 2.0} and sets["sunnybrook"]["volumes"] == 9
    card.save(tmp_path)
    text = ModelCard.load(tmp_path).render()
    assert "across domains (model_domains_x.json" in text
    assert "Sunnybrook, GE (LV/MYO): 9 volume(s), Dice LV 0.921 (mean 0.855)" in text
    assert "LVEDV -5.6 / 7.7" in text


@pytest.mark.parametrize("broken, message", [({"domains": {}}, "no 'domains'"),
                                             ({"complete": False}, "incomplete"),
                                             ({"domains": {"in_domain": {"n_volumes": 3}}}, "per-class")])
def test_card_refuses_domain_figures_it_cannot_read(tiny_model_dir, tmp_path, broken, message):
    path = tmp_path / "domains.json"
    path.write_text(json.dumps({**_domains_document(), **broken}))
    with pytest.raises(ConfigurationError, match=message) as info:
        build_model_card(tiny_model_dir, name="tiny", domains=path)
    assert "domains.json" in str(info.value)


def test_a_card_written_before_domain_figures_still_loads(tmp_path):
    ModelCard(name="old").save(tmp_path)
    data = json.loads((tmp_path / layout.MODEL_CARD).read_text())
    del data["domains"]
    (tmp_path / layout.MODEL_CARD).write_text(json.dumps(data))
    card = ModelCard.load(tmp_path)
    assert card.domains == {} and "across domains" not in card.render()


def test_a_tampered_or_flat_archive_is_refused_naming_the_archive_not_a_staging_folder(packed, tmp_path):
    files = {f"m/{p.relative_to(packed).as_posix()}": p.read_bytes() for p in packed.rglob("*") if p.is_file()}
    files["m/fold_0/checkpoint_final.pth"] = files["m/fold_0/checkpoint_final.pth"][:-10] + b"0123456789"
    tampered = _archive_with(tmp_path, files)
    with pytest.raises(InputFileError) as info:
        import_model(tampered, models_dir=tmp_path / "models")
    assert info.value.path == tampered and ".tmp_" not in info.value.reason
    assert "fold_0/checkpoint_final.pth" in info.value.reason and "sha256" in info.value.reason
    flat = _archive_with(tmp_path, {"./model.json": files["m/model.json"]})  # tar -C FOLDER .
    with pytest.raises(InputFileError, match="top level.*one model folder.*autocmr_models export"):
        import_model(flat, models_dir=tmp_path / "models")


def test_a_bare_name_is_the_installed_model_unless_a_model_folder_of_that_name_is_here(packed, tmp_path,
                                                                                      monkeypatch):
    from autocmr.models.registry import resolve_model

    models = tmp_path / "models"
    import_model(export_model(packed, tmp_path / "a.tar.gz", name="site_x"), models_dir=models)
    work = tmp_path / "work"
    (work / "site_x").mkdir(parents=True)  # an unrelated folder of that name (no plans.json)
    monkeypatch.chdir(work)
    assert resolve_model("site_x", models_dir=models) == models / "site_x"
    with pytest.raises(PlansError, match="model folder not found"):
        resolve_model("./site_y", models_dir=models)  # a path is a path: never an installed model's name
    shutil.copytree(packed, work / "site_x", dirs_exist_ok=True)  # now a model folder here: it wins, with a word
    assert resolve_model("site_x", models_dir=models) == Path("site_x")


def test_a_packed_models_documents_are_checked_too(packed, tmp_path, tiny_model_dir):
    """An edited plans.json or postprocessing.json changes every mask without touching a weight: a packed,
    exported or imported model records their sha256 and refuses an edit, naming the file; a training folder
    records none and says that only its weights were verified."""
    manifest = ModelManifest.load(packed)
    assert {layout.PLANS, layout.DATASET} <= set(manifest.documents)
    assert f"and {len(manifest.documents)} document(s) checked against the manifest, all match" in verify_text(
        str(packed))
    copy = shutil.copytree(packed, tmp_path / "copy")
    edited = (copy / layout.PLANS).read_text().replace('"step"', '"step" ', 1) + "\n"  # any edit, even a byte
    (copy / layout.PLANS).write_text(edited)
    with pytest.raises(DocumentError, match=r"plans.json: sha256 .* does not match"):
        verify_text(str(copy))
    with pytest.raises(DocumentError, match="plans.json"):
        ModelFolder.open(copy)
    archive = export_model(packed, tmp_path / "m.tar.gz", name="site_d")
    files = {}
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            if member.isfile():
                files[member.name] = tar.extractfile(member).read()
    assert json.loads(files["site_d/model.json"])["documents"] == manifest.documents
    files["site_d/plans.json"] = edited.encode()
    with pytest.raises(InputFileError, match="plans.json: sha256"):
        import_model(_archive_with(tmp_path, files), models_dir=tmp_path / "models")
    assert "only the weights were verified" in verify_text(str(tiny_model_dir))


def test_the_shipped_models_documents_match_its_manifest():
    from autocmr.models.registry import packaged_default_model

    folder = packaged_default_model()
    assert ModelManifest.load(folder).documents  # recorded, and they match byte for byte (no line-ending change)
    assert "document(s) checked against the manifest, all match" in verify_text(str(folder))


def test_an_unreadable_postprocessing_document_is_an_error_naming_it(tiny_model_dir, tmp_path):
    copy = shutil.copytree(tiny_model_dir, tmp_path / "m")
    (copy / layout.POSTPROCESSING).write_text("{not json")
    with pytest.raises(DocumentError, match="postprocessing.json: cannot read this model document"):
        ModelFolder.open(copy).read_json(layout.POSTPROCESSING)


def test_a_replacement_killed_between_its_two_renames_is_repaired_on_next_use(packed, tmp_path):
    from autocmr.models.registry import resolve_model

    models = tmp_path / "models"
    installed = import_model(export_model(packed, tmp_path / "a.tar.gz", name="site_x"), models_dir=models)
    shutil.copytree(installed, models / ".tmp_ab12cd34_site_x")  # the new model, staged for the swap
    installed.rename(models / ".tmp_old_ab12cd34_site_x")  # the old model moved aside, the new one not yet in
    (models / ".tmp_old_ab12cd34_other_site_x").mkdir()  # another model's leftover: not this one's
    (models / ".tmp_ab12cd34_other_site_x").mkdir()
    assert resolve_model("site_x", models_dir=models) == installed and (installed / layout.PLANS).is_file()
    assert (models / ".tmp_old_ab12cd34_other_site_x").is_dir()


def test_card_shows_an_option_the_folds_were_trained_with_differently(tiny_model_dir, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    shutil.copytree(model / "fold_0", model / "fold_1")
    options = json.loads((model / "fold_1" / "options.json").read_text())
    options["options"]["epochs"] = options["options"]["epochs"] + 5
    (model / "fold_1" / "options.json").write_text(json.dumps(options))
    training = build_model_card(model, name="tiny", folds=["0", "1"]).training
    epochs = options["options"]["epochs"]
    assert training["epochs"] == {"fold 0": epochs - 5, "fold 1": epochs}  # not fold 0's value for both
    assert training["augmentation"] == options["options"]["augmentation"]  # the same everywhere: one value


def test_a_dataset_model_under_other_plans_is_found_by_configuration_or_named(tmp_path):
    """A fine-tuned model lives under its own plans (autocmrPlans_cpu_from_Dataset101__2d): -d N -c 2d finds it
    when it is the only 2d model of the dataset, and names -p when several are."""
    from autocmr.errors import PlansError
    from autocmr.models.folder import ModelSpec

    dataset = tmp_path / "results" / "Dataset130_Sunny"
    (dataset / "autocmrPlans_cpu_from_Dataset101__2d").mkdir(parents=True)
    spec = ModelSpec("Dataset130_Sunny", "2d", None, tmp_path / "results")
    assert spec.resolve("cpu") == dataset / "autocmrPlans_cpu_from_Dataset101__2d"
    (dataset / "autocmrPlans_from_Dataset101__2d").mkdir()
    with pytest.raises(PlansError, match=r"give its plans with -p \(-p autocmrPlans_cpu_from_Dataset101\)"):
        spec.resolve("cpu")
    with pytest.raises(PlansError, match="train one with autocmr_train"):
        ModelSpec("Dataset130_Sunny", "3d_fullres", None, tmp_path / "results").resolve("cpu")


def test_the_weights_loaded_are_the_bytes_that_were_checked(packed, tmp_path, monkeypatch):
    """A checkpoint replaced between its sha256 check and its load (another process's ``--replace``) was loaded
    unchecked: the file was read twice. Now it is read once and those bytes are both checked and loaded."""
    from autocmr.models import folder as folder_module

    model_dir = shutil.copytree(packed, tmp_path / "model")
    model = ModelFolder.open(model_dir)
    path = model.checkpoint_path(model.available_folds()[0])
    verified = torch.load(path, map_location="cpu", weights_only=True)["network"]
    other = torch.load(path, map_location="cpu", weights_only=True)
    other["network"] = {k: v + 1 if v.is_floating_point() else v for k, v in other["network"].items()}
    check = folder_module.verify_weight_file

    def replaced_right_after_the_check(*args, **kwargs):
        result = check(*args, **kwargs)
        torch.save(other, path)  # a valid checkpoint, but not the one the manifest lists
        return result
    monkeypatch.setattr(folder_module, "verify_weight_file", replaced_right_after_the_check)
    loaded = model.load_checkpoint(path)["network"]
    assert all(torch.equal(loaded[k], verified[k]) for k in verified)
