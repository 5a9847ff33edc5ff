"""``--continue`` compares the stored result-changing options with the requested ones (issue 13, point 2)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from autocmr.documents.run_options import RunOptionsDocument
from autocmr.errors import ConfigurationError
from autocmr.testing.tiny_model import TINY_DATASET_ID
from autocmr.trainers.options import TrainOptions
from autocmr.trainers.run import train


def _options(**kw):
    base = dict(epochs=1, iterations_per_epoch=2, val_iterations=1, num_workers=0, batch_size=2, device="cpu",
                final_validation=False, augmentation="none", save_every=1)
    return TrainOptions(**{**base, **kw})


def test_digest_ignores_options_that_do_not_change_the_result():
    a = _options()
    assert a.digest() == _options(device="auto", num_workers=2, save_every=7).digest()
    # how the finished weights are validated is no part of what is learnt: a run may be resumed to get its
    # final validation after all
    assert a.digest() == _options(final_validation=True, mirror_validation=False).digest()
    assert _options(final_validation=True).differences_from(a.to_dict()) == []
    assert a.digest() != _options(seed=1).digest()
    assert _options(epochs=2).differences_from(a.to_dict()) == ["epochs: 1 -> 2"]
    retired = a.differences_from({**a.to_dict(), "retired_option": 3})
    assert retired == ["retired_option: 3 -> (unknown to this autocmr)"]
    stored_before_a_new_option = {k: v for k, v in a.to_dict().items() if k != "elastic"}
    assert a.differences_from(stored_before_a_new_option) == []  # a missing option counts as its default
    with pytest.raises(ConfigurationError, match=r"unknown training option\(s\) \['retired_option'\]"):
        TrainOptions.from_dict({**a.to_dict(), "retired_option": 3})


def test_continue_refuses_changed_options_unless_allowed(tiny_model, tmp_path):
    _, roots = tiny_model
    out = tmp_path / "run"
    train(TINY_DATASET_ID, "2d", 0, roots, options=_options(), output_dir=out, continue_training=True)
    log = (out / "fold_0" / "log.txt").read_text()
    notes = [line for line in log.splitlines() if "--continue" in line or "starting from scratch" in line]
    assert len(notes) == 1 and "--continue: no checkpoint_latest.pth" in notes[0]  # says it starts anew, once
    refused = r"epochs: 1 -> 2; learning_rate: 0.01 -> 0.02.*--allow-changed-options"
    with pytest.raises(ConfigurationError, match=refused):
        train(TINY_DATASET_ID, "2d", 0, roots, options=_options(epochs=2, learning_rate=0.02), output_dir=out,
              continue_training=True)
    # options that do not change the result may differ
    same = train(TINY_DATASET_ID, "2d", 0, roots, options=_options(save_every=3), output_dir=out,
                 continue_training=True)
    assert same.epochs == 1
    longer = train(TINY_DATASET_ID, "2d", 0, roots, options=_options(epochs=2), output_dir=out,
                   continue_training=True, allow_changed_options=True)
    assert longer.epochs == 2  # the requested schedule wins over the checkpoint's, and says so
    assert torch.load(out / "fold_0" / "checkpoint_final.pth", weights_only=True)["epochs"] == 2
    stored = RunOptionsDocument.load(out / "fold_0" / "options.json")
    # when in the run the change came (the epoch lines count from 0: the first resumed one was "epoch 1")
    assert stored.options["epochs"] == 2
    assert stored.changes_on_resume == ["epochs: 1 -> 2 (resumed after 1 finished epoch(s))"]
    assert "resuming with changed options" in (out / "fold_0" / "log.txt").read_text()


def test_continue_compares_with_the_checkpoints_own_options(tiny_model, tmp_path):
    """A new run rewrites options.json and may stop before its first checkpoint: the older run's checkpoint
    left behind must not be resumed as if it were the new run's."""
    from autocmr.trainers.run_folder import write_run_options

    _, roots = tiny_model
    out = tmp_path / "run"
    train(TINY_DATASET_ID, "2d", 0, roots, options=_options(), output_dir=out)  # the old run, lr 0.01
    newer = _options(learning_rate=0.02)
    write_run_options(out / "fold_0", newer, "cpu", [], resuming=False)  # a new run, stopped before saving
    with pytest.raises(ConfigurationError, match=r"learning_rate: 0.01 -> 0.02"):
        train(TINY_DATASET_ID, "2d", 0, roots, options=newer, output_dir=out, continue_training=True)


def _trained_fold_0(roots, out: Path) -> tuple[Path, dict]:
    """Fold 0 trained into ``out``: its latest checkpoint's path and payload (for a test to alter)."""
    train(TINY_DATASET_ID, "2d", 0, roots, options=_options(), output_dir=out)
    latest = out / "fold_0" / "checkpoint_latest.pth"
    return latest, torch.load(latest, weights_only=True)


def _refused_then_allowed(roots, out: Path, latest: Path, payload: dict, refusal: str) -> list[str]:
    """Save the altered ``payload`` as the run's latest checkpoint; --continue must refuse it (``refusal``, a
    pattern) and resume with --allow-changed-options; returns the changes the resumed run recorded."""
    torch.save(payload, latest)
    with pytest.raises(ConfigurationError, match=refusal):
        train(TINY_DATASET_ID, "2d", 0, roots, options=_options(), output_dir=out, continue_training=True)
    train(TINY_DATASET_ID, "2d", 0, roots, options=_options(), output_dir=out, continue_training=True,
          allow_changed_options=True)
    return RunOptionsDocument.load(out / "fold_0" / "options.json").changes_on_resume


def test_a_run_written_before_the_documents_resumes(tiny_model, tmp_path):
    """Version-1 checkpoint (numpy RNG state pickled) and options.json (digest over every option)."""
    import json
    import random

    import numpy as np

    _, roots = tiny_model
    out = tmp_path / "old_run"
    latest, payload = _trained_fold_0(roots, out)
    payload.pop("schema_version"), payload.pop("format")
    payload["rng"] = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    torch.save(payload, latest)
    options_json = out / "fold_0" / "options.json"
    stored = RunOptionsDocument.load(options_json)
    options_json.write_text(json.dumps({"options": stored.options, "digest": "0ld", "device": "cpu"}))
    resumed = train(TINY_DATASET_ID, "2d", 0, roots, options=_options(num_workers=0), output_dir=out,
                    continue_training=True)
    assert resumed.epochs == 1 and "resumed from" in (out / "fold_0" / "log.txt").read_text()
    assert RunOptionsDocument.load(options_json).schema_version == 2


def test_a_fold_may_not_replace_the_plans_other_trained_folds_depend_on(tiny_model):
    """Re-planned with another network input (here the other phase) or preprocessing: training another fold
    into the same folder is refused, naming the folds and the differences; training-only changes pass."""
    import dataclasses

    from autocmr.documents.plans import Plans
    from autocmr.trainers.run_folder import check_plans_of_trained_folds

    model_dir, _ = tiny_model
    plans = Plans.load(model_dir / "plans.json")
    config = plans.configuration("2d")

    def with_config(**changes):
        return dataclasses.replace(plans, configurations={**plans.configurations,
                                                          "2d": dataclasses.replace(config, **changes)})

    check_plans_of_trained_folds(model_dir, plans, "2d", 1)  # the same plans
    check_plans_of_trained_folds(model_dir, with_config(batch_size=config.batch_size + 1), "2d", 1)
    check_plans_of_trained_folds(model_dir, with_config(other_phase=True), "2d", 0)  # retraining fold 0 itself
    with pytest.raises(ConfigurationError, match=r"fold_0 were trained with other plans.*other_phase: False -> True"):
        check_plans_of_trained_folds(model_dir, with_config(other_phase=True), "2d", 1)
    with pytest.raises(ConfigurationError, match=r"spacing: .* -> .*-o FOLDER"):
        check_plans_of_trained_folds(model_dir, with_config(spacing=(5.0, 1.0, 1.0)), "2d", "all")
    with pytest.raises(ConfigurationError, match="labels"):
        check_plans_of_trained_folds(model_dir, dataclasses.replace(plans, labels={**plans.labels, "extra": 9}),
                                     "2d", 1)


def test_a_pretrained_folder_is_stored_resolved_and_compared_as_a_folder(tmp_path, monkeypatch):
    """--pretrained models/acdc from one working directory is the same folder as its absolute path: stored
    resolved (a resume from elsewhere means the same folder), and a run stored with the relative name is not
    refused for it; a model name such as 'default' stays a name."""
    (tmp_path / "models" / "acdc").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    relative = _options(pretrained="models/acdc")
    assert relative.pretrained == str((tmp_path / "models" / "acdc").resolve())
    stored_relatively = {**relative.to_dict(), "pretrained": "models/acdc"}
    assert relative.differences_from(stored_relatively) == []
    other = {**relative.to_dict(), "pretrained": "models/other"}
    assert [d.split(":")[0] for d in relative.differences_from(other)] == ["pretrained"]
    assert _options(pretrained="default").pretrained == "default"


def _splits_files(roots, tmp_path):
    """The tiny dataset's fold 0 as a --splits file, and the same with one subject moved each way."""
    pre = next(roots.preprocessed.glob(f"Dataset{TINY_DATASET_ID}_*"))
    fold = json.loads((pre / "splits.json").read_text())[0]

    def subject(case):
        return case.rsplit("_", 1)[0]

    to_train, to_val = subject(fold["val"][0]), subject(fold["train"][0])
    moved = {"train": sorted([c for c in fold["train"] if subject(c) != to_val]
                             + [c for c in fold["val"] if subject(c) == to_train]),
             "val": sorted([c for c in fold["val"] if subject(c) != to_train]
                           + [c for c in fold["train"] if subject(c) == to_val])}
    (tmp_path / "first.json").write_text(json.dumps([fold]))
    (tmp_path / "moved.json").write_text(json.dumps([moved]))
    return tmp_path / "first.json", tmp_path / "moved.json"


def test_continue_refuses_a_fold_whose_cases_changed_unless_allowed(tiny_model, tmp_path):
    """Another --splits (or a re-dealt splits.json) must not resume a fold on other cases: its final validation
    would score cases the network trained on. Checkpoints saved before the cases were recorded still resume."""
    _, roots = tiny_model
    first, moved = _splits_files(roots, tmp_path)
    out = tmp_path / "run"
    train(TINY_DATASET_ID, "2d", 0, roots, options=_options(), output_dir=out, splits_file=first)
    latest = out / "fold_0" / "checkpoint_latest.pth"
    recorded = torch.load(latest, weights_only=True)["cases"]
    assert recorded == {k: sorted(v) for k, v in json.loads(first.read_text())[0].items()}
    stored = RunOptionsDocument.load(out / "fold_0" / "options.json")
    assert (stored.cases["train"], stored.cases["val"]) == (len(recorded["train"]), len(recorded["val"]))
    splits = (out / "splits.json").read_text()
    counts = r"cases: training 2 of \d+ removed, 2 added; validation 2 of \d+ removed, 2 added"
    with pytest.raises(ConfigurationError, match=rf"checkpoint_latest\.pth: --continue would resume on other cases "
                                                 rf".*\({counts}\).*--allow-changed-options"):
        train(TINY_DATASET_ID, "2d", 0, roots, options=_options(), output_dir=out, splits_file=moved,
              continue_training=True)
    assert (out / "splits.json").read_text() == splits  # refused before the folder's splits were replaced
    train(TINY_DATASET_ID, "2d", 0, roots, options=_options(), output_dir=out, splits_file=moved,
          continue_training=True, allow_changed_options=True)
    changes = RunOptionsDocument.load(out / "fold_0" / "options.json").changes_on_resume
    assert len(changes) == 1 and re.fullmatch(counts + r" \(resumed after 1 finished epoch\(s\)\)", changes[0])
    payload = torch.load(latest, weights_only=True)
    del payload["cases"]  # saved by an autocmr that did not record them
    torch.save(payload, latest)
    assert train(TINY_DATASET_ID, "2d", 0, roots, options=_options(), output_dir=out, splits_file=first,
                 continue_training=True).epochs == 1
    assert "does not record its fold's cases" in (out / "fold_0" / "log.txt").read_text()


def test_continue_compares_the_precision_the_run_trained_in(tiny_model, tmp_path):
    """--precision auto is fp16 on CUDA and fp32 on a CPU: the precision it resolved to is what is compared."""
    _, roots = tiny_model
    out = tmp_path / "run"
    latest, payload = _trained_fold_0(roots, out)
    assert payload["precision"] == "fp32" and payload["options"]["precision"] == "auto"
    assert RunOptionsDocument.load(out / "fold_0" / "options.json").precision == "fp32"
    payload["precision"] = "fp16"  # as if trained with --precision auto on a GPU
    changes = _refused_then_allowed(roots, out, latest, payload,
                                    r"checkpoint_latest\.pth: the run trained in fp16 and would resume "
                                    r"in fp32 \(--precision auto .* cpu\).*--allow-changed-options")
    assert changes == ["precision: 'fp16' -> 'fp32' (--precision auto on cpu) (resumed after 1 finished epoch(s))"]


def test_a_resume_with_another_freeze_is_refused_before_the_model_folder_changes(tiny_model, tmp_path):
    """Even with --allow-changed-options: the checkpoint's optimizer state trained other parameters."""
    from autocmr.testing.phantoms import write_phantom_dataset

    model_dir, roots = tiny_model
    write_phantom_dataset(roots.raw, n_subjects=2, seed=11, dataset_id=995, short_name="FreezeSite", fov_mm=140)
    out = tmp_path / "tuned"
    tuned = dict(pretrained=str(model_dir), freeze="decoder")
    train(995, "2d", "all", roots, options=_options(**tuned), output_dir=out)
    before = {name: (out / name).read_bytes() for name in ("fold_all/options.json", "model.json")}
    with pytest.raises(ConfigurationError, match=r"fold_all/checkpoint_latest\.pth: its optimizer trained other "
                                                 r"parameters .*--freeze"):
        train(995, "2d", "all", roots, options=_options(**{**tuned, "freeze": "encoder"}), output_dir=out,
              continue_training=True, allow_changed_options=True)
    assert {name: (out / name).read_bytes() for name in before} == before  # options and checksums as they were
    assert train(995, "2d", "all", roots, options=_options(**tuned), output_dir=out, continue_training=True).epochs == 1


def test_continue_on_a_finished_fold_without_its_latest_checkpoint_deletes_nothing(tiny_model, tmp_path):
    """An exported model keeps checkpoint_final.pth only: --continue finds no run to resume there, and must
    not start over (which would delete the final and best weights) but say so."""
    _, roots = tiny_model
    out = tmp_path / "run"
    train(TINY_DATASET_ID, "2d", 0, roots, options=_options(), output_dir=out)
    (out / "fold_0" / "checkpoint_latest.pth").unlink()
    final = (out / "fold_0" / "checkpoint_final.pth").read_bytes()
    with pytest.raises(ConfigurationError, match=r"checkpoint_final.pth .*but no checkpoint_latest.pth.*without "
                                                 r"--continue"):
        train(TINY_DATASET_ID, "2d", 0, roots, options=_options(), output_dir=out, continue_training=True)
    assert (out / "fold_0" / "checkpoint_final.pth").read_bytes() == final


def test_continue_refuses_plans_changed_since_the_run_started(tiny_model, tmp_path):
    """autocmr_plan run again between a stop and --continue may keep the network and change the patch size,
    batch size or spacing: the rest of the run would train on other data under the same weights."""
    _, roots = tiny_model
    latest, payload = _trained_fold_0(roots, tmp_path / "run")
    out = tmp_path / "run"
    now = payload["data_settings"]
    assert now["patch_size"] and now["data_identifier"]
    payload["data_settings"] = {**now, "patch_size": [8, 8], "batch_size": 99}  # as an earlier plan had them
    changes = _refused_then_allowed(roots, out, latest, payload,
                                    r"plans changed since this run started \(patch_size: \[8, 8\] -> "
                                    r"\[\d+, \d+\]; batch_size: 99 -> \d+")
    assert any(c.startswith("plans patch_size: [8, 8] ->") for c in changes), changes
    payload.pop("data_settings")  # a checkpoint of an earlier autocmr: nothing to compare, resumed as before
    torch.save(payload, latest)
    train(TINY_DATASET_ID, "2d", 0, roots, options=_options(), output_dir=out, continue_training=True)
