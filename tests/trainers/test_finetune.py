"""Fine-tuning: frozen weights stay fixed, heads follow label names, incompatible inputs fail clearly."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from autocmr.dataset.raw import DatasetJson
from autocmr.errors import ConfigurationError
from autocmr.models.folder import ModelFolder
from autocmr.io.image import read_image, write_image
from autocmr.networks.unet import build_network
from autocmr.testing.phantoms import write_phantom_dataset
from autocmr.trainers.finetune import freeze, head_channel_map, load_pretrained
from autocmr.trainers.loss import DeepSupervisionLoss, DiceCELoss
from autocmr.trainers.options import TrainOptions
from autocmr.trainers.run import train


def _step(network, params):
    opt = torch.optim.SGD(params, lr=0.1)
    x = torch.randn(2, 1, 64, 64)
    target = [torch.randint(0, network.num_classes, (2, 1, 64 // 2**k, 64 // 2**k)) for k in range(5)]
    network.train()
    loss = DeepSupervisionLoss(DiceCELoss(batch_dice=True), len(network.heads))(network(x), target)
    opt.zero_grad()
    loss.backward()
    opt.step()


def _snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_head_channels_follow_label_names():
    old = {"background": 0, "LV": 1, "MYO": 2, "RV": 3}
    assert head_channel_map(old, {"background": 0, "LV": 1, "MYO": 2}) == {0: 0, 1: 1, 2: 2}
    assert head_channel_map(old, {"background": 0, "RV": 1, "LV": 2}) == {0: 0, 1: 3, 2: 1}
    with pytest.raises(ConfigurationError, match="label sets do not map"):
        head_channel_map(old, {"background": 0, "aorta": 1})


def test_adapted_heads_copy_known_labels_and_frozen_parts_stay_fixed(tiny_model):
    model_dir, _ = tiny_model
    model = ModelFolder.open(model_dir)
    new_labels = {"background": 0, "MYO": 1, "LV": 2}
    net = build_network(model.configuration.topology, 1, 3)
    report = load_pretrained(net, model, new_labels)
    old = torch.load(model_dir / "fold_0" / "checkpoint_final.pth", weights_only=True)["network"]
    head = "heads.0.weight"
    assert torch.equal(net.state_dict()[head][1], old[head][2])  # MYO row
    assert torch.equal(net.state_dict()[head][2], old[head][1])  # LV row
    assert report["mapped_labels"] == 3

    trainable = freeze(net, "decoder")
    before_dec, before_enc = _snapshot(net.decoder), _snapshot(net.encoder)
    _step(net, trainable)
    assert all(torch.equal(v, net.decoder.state_dict()[k]) for k, v in before_dec.items())
    assert any(not torch.equal(v, net.encoder.state_dict()[k]) for k, v in before_enc.items())

    trainable = freeze(net, "encoder", unfreeze_blocks=1)
    first, rest = _snapshot(net.encoder[0]), _snapshot(net.encoder[1:])
    _step(net, trainable)
    assert any(not torch.equal(v, net.encoder[0].state_dict()[k]) for k, v in first.items())
    assert all(torch.equal(v, net.encoder[1:].state_dict()[k]) for k, v in rest.items())


def test_finetuning_run_uses_the_pretrained_plans_on_a_new_dataset(tiny_model, tmp_path):
    model_dir, roots = tiny_model
    folder = write_phantom_dataset(roots.raw, n_subjects=5, seed=7, dataset_id=991, short_name="NewSite", fov_mm=140)
    # the new site annotates LV and MYO only (as Sunnybrook): drop RV from labels and dataset.json
    for f in (folder / "labelsTr").iterdir():
        label, geometry = read_image(f)
        label[label == 3] = 0
        write_image(label.astype(np.uint8), geometry, f)
    dj = DatasetJson.load(folder / "dataset.json")
    DatasetJson(dj.channel_names, {"background": 0, "LV": 1, "MYO": 2}, dj.num_training, dj.file_ending).save(
        folder / "dataset.json")
    options = TrainOptions(epochs=1, iterations_per_epoch=3, val_iterations=1, num_workers=0, batch_size=2,
                           device="cpu", pretrained=str(model_dir), freeze="decoder", final_validation=True)
    result = train(991, "2d", 0, roots, options=options)
    plans = json.loads((result.fold_dir.parent / "plans.json").read_text())
    assert plans["plans_name"].startswith("autocmrPlans_cpu_from_Dataset990")
    assert tuple(plans["configurations"]["2d"]["patch_size"]) == ModelFolder.open(model_dir).configuration.patch_size
    assert plans["labels"] == {"background": 0, "LV": 1, "MYO": 2}
    assert "fine-tuning from" in (result.fold_dir / "log.txt").read_text()
    summary = json.loads((result.fold_dir / "validation" / "summary.json").read_text())
    assert set(summary["classes"]) == {"LV", "MYO"}
    with pytest.raises(ConfigurationError, match="fine-tune it with configuration '2d'"):
        train(991, "3d_fullres", 0, roots, options=options)


def test_finetuned_model_without_validation_inherits_postprocessing_by_label_name(tiny_model, tmp_path):
    import shutil

    from autocmr.inference.postprocessing import PostprocessingDecision

    model_dir, roots = tiny_model
    pretrained = tmp_path / "pretrained"
    shutil.copytree(model_dir, pretrained)
    PostprocessingDecision(True, (1, 3), {}).save(pretrained / "postprocessing.json")  # LV and RV
    folder = write_phantom_dataset(roots.raw, n_subjects=2, seed=8, dataset_id=992, short_name="AcdcLabels",
                                   fov_mm=140)
    for f in (folder / "labelsTr").iterdir():  # ACDC's convention: RV 1, MYO 2, LV 3
        label, geometry = read_image(f)
        write_image(np.choose(label, [0, 3, 2, 1]).astype(np.uint8), geometry, f)
    dj = DatasetJson.load(folder / "dataset.json")
    DatasetJson(dj.channel_names, {"background": 0, "RV": 1, "MYO": 2, "LV": 3}, dj.num_training,
                dj.file_ending).save(folder / "dataset.json")
    options = TrainOptions(epochs=1, iterations_per_epoch=2, val_iterations=1, num_workers=0, batch_size=2,
                           device="cpu", pretrained=str(pretrained), freeze="decoder")
    result = train(992, "2d", "all", roots, options=options, output_dir=tmp_path / "tuned")
    decision = json.loads((tmp_path / "tuned" / "postprocessing.json").read_text())
    assert decision["foreground_lcc"] is True
    assert sorted(decision["per_label_lcc"]) == [1, 3] and decision["per_label_lcc"] == [3, 1]  # LV is 3, RV 1 now
    assert decision["evidence"]["inherited_from"] == str(pretrained.resolve())
    assert result.fold_dir.name == "fold_all"


def test_fold_retrained_from_scratch_rewrites_the_documents_it_owns(tiny_model, tmp_path):
    """A fold retrained from epoch 0 into its folder, with no other trained fold there, writes the intensity
    reference and the inherited postprocessing again instead of keeping its earlier run's."""
    import shutil

    from autocmr.inference.postprocessing import PostprocessingDecision

    model_dir, roots = tiny_model
    first, second = tmp_path / "first", tmp_path / "second"
    for folder, per_label in ((first, (1,)), (second, (2,))):
        shutil.copytree(model_dir, folder)
        PostprocessingDecision(True, per_label, {}).save(folder / "postprocessing.json")
    write_phantom_dataset(roots.raw, n_subjects=2, seed=9, dataset_id=997, short_name="Retrained", fov_mm=140)
    options = TrainOptions(epochs=1, iterations_per_epoch=2, val_iterations=1, num_workers=0, batch_size=2,
                           device="cpu", pretrained=str(first), freeze="decoder")
    tuned = tmp_path / "tuned"
    train(997, "2d", "all", roots, options=options, output_dir=tuned)
    reference = json.loads((tuned / "intensity_reference.json").read_text())
    # an earlier run's reference (built from other cases), and another --pretrained this time
    (tuned / "intensity_reference.json").write_text(json.dumps({**reference, "quantiles": [[0.0] * 101]}))
    train(997, "2d", "all", roots, options=dataclasses.replace(options, pretrained=str(second)),
          output_dir=tuned)
    assert json.loads((tuned / "intensity_reference.json").read_text()) == reference
    decision = json.loads((tuned / "postprocessing.json").read_text())
    assert decision["evidence"]["inherited_from"] == str(second.resolve())
    assert decision["per_label_lcc"] == [2]
    assert "removed the earlier run's intensity_reference.json, postprocessing.json" in (
        tuned / "fold_all" / "log.txt").read_text()

    # another trained fold shares the documents: retraining this one keeps them
    (tuned / "fold_0").mkdir()
    shutil.copy(model_dir / "fold_0" / "checkpoint_final.pth", tuned / "fold_0")
    (tuned / "intensity_reference.json").write_text(json.dumps({**reference, "quantiles": [[0.0] * 101]}))
    train(997, "2d", "all", roots, options=options, output_dir=tuned)
    assert json.loads((tuned / "intensity_reference.json").read_text())["quantiles"] == [[0.0] * 101]
    assert json.loads((tuned / "postprocessing.json").read_text())["evidence"]["inherited_from"] == str(
        second.resolve())


def test_background_maps_to_background_whatever_its_name(tiny_model):
    model_dir, _ = tiny_model
    model = ModelFolder.open(model_dir)
    assert model.plans.labels == {"background": 0, "LV": 1, "MYO": 2, "RV": 3}
    new_labels = {"bg": 0, "LV": 1, "aorta": 2}
    assert head_channel_map(model.plans.labels, new_labels) == {0: 0, 1: 1}
    net = build_network(model.configuration.topology, 1, 3)
    load_pretrained(net, model, new_labels)
    old = torch.load(model_dir / "fold_0" / "checkpoint_final.pth", weights_only=True)["network"]
    assert torch.equal(net.state_dict()["heads.0.weight"][0], old["heads.0.weight"][0])  # background kept


def test_each_unmatched_label_is_named_in_a_warning(tiny_model, caplog):
    model_dir, _ = tiny_model
    model = ModelFolder.open(model_dir)
    net = build_network(model.configuration.topology, 1, 3)
    with caplog.at_level("WARNING", logger="autocmr.trainers.finetune"):
        load_pretrained(net, model, {"background": 0, "LV": 1, "aorta": 2})
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    for name in ("aorta", "MYO", "RV"):  # the new side's and the pretrained side's, one line each
        assert sum(f"label {name!r}" in w for w in warnings) == 1, warnings
    assert not any("label 'LV'" in w or "label 'background'" in w for w in warnings)


def test_the_fold_whose_weights_are_used_is_named(tiny_model, caplog):
    model_dir, _ = tiny_model
    model = ModelFolder.open(model_dir)
    assert model.available_folds("final") == ["0"]  # cross-validation folds only, no fold 'all'
    with caplog.at_level("INFO", logger="autocmr.trainers.finetune"):
        load_pretrained(build_network(model.configuration.topology, 1, 4), model, model.plans.labels)
    assert any(f"{model_dir} fold 0's weights" in r.getMessage() for r in caplog.records), caplog.text


def test_plans_named_with_pretrained_are_refused_not_ignored(tiny_model, tmp_path, capsys):
    from autocmr.cli.train import main

    model_dir, roots = tiny_model
    options = TrainOptions(epochs=1, iterations_per_epoch=2, val_iterations=1, num_workers=0, batch_size=2,
                           device="cpu", pretrained=str(model_dir), final_validation=False)
    with pytest.raises(ConfigurationError, match="-p/--plans autocmrPlans_cpu and --pretrained"):
        train(990, "2d", "all", roots, options=options, plans_name="autocmrPlans_cpu", output_dir=tmp_path / "a")
    assert not (tmp_path / "a").exists()
    argv = ["990", "2d", "all", "--pretrained", str(model_dir), "-p", "autocmrPlans_cpu", "-o", str(tmp_path / "b"),
            "--epochs", "1", "--iterations", "2", "--val-iterations", "1", "--num-workers", "0", "--batch-size", "2",
            "--device", "cpu", "--no-final-validation", "--raw", str(roots.raw),
            "--preprocessed", str(roots.preprocessed), "--results", str(roots.results)]
    assert main(argv) == 2
    assert "leave out -p" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
