"""Short real trainings on phantoms: the loss goes down, an interrupted run resumes exactly, outputs exist."""
from __future__ import annotations

import json
import time

import pytest
import torch

from autocmr.errors import ConfigurationError, DatasetError, PlansError
from autocmr.planners.plan_dataset import plan_dataset
from autocmr.settings import resolve_roots
from autocmr.testing.phantoms import write_phantom_dataset
from autocmr.trainers.options import TrainOptions
from autocmr.trainers.run import train
from autocmr.trainers.trainer import Trainer

DATASET = 960


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("train")
    roots = resolve_roots(raw=base / "raw", preprocessed=base / "pre", results=base / "res")
    write_phantom_dataset(roots.raw, n_subjects=5, dataset_id=DATASET, fov_mm=120)
    plan_dataset(DATASET, roots, targets=("cpu",), configurations=("2d",), num_workers=1, check=False)
    return roots


def options(**kw):
    base = dict(epochs=3, iterations_per_epoch=6, val_iterations=2, num_workers=0, batch_size=2, device="cpu",
                final_validation=False, save_every=1, augmentation="none")
    base.update(kw)
    return TrainOptions(**base)


def test_training_lowers_the_loss_and_writes_outputs(roots, tmp_path):
    out = tmp_path / "model"
    result = train(DATASET, "2d", 0, roots, options=options(epochs=4, iterations_per_epoch=8), output_dir=out)
    history = torch.load(result.fold_dir / "checkpoint_final.pth", weights_only=True)["state"]["history"]
    assert history["train_loss"][-1] < 0.8 * history["train_loss"][0]
    for name in ("checkpoint_final.pth", "checkpoint_best.pth", "checkpoint_latest.pth", "log.txt",
                 "progress.png", "options.json"):
        assert (result.fold_dir / name).is_file(), name
    for name in ("plans.json", "dataset.json", "fingerprint.json", "splits.json", "model.json",
                 "intensity_reference.json"):
        assert (out / name).is_file(), name
    splits = json.loads((out / "splits.json").read_text())
    val = splits[0]["val"]
    assert {c.rsplit("_", 1)[0] for c in val}.isdisjoint({c.rsplit("_", 1)[0] for c in splits[0]["train"]})


def test_interrupted_run_resumes_exactly(roots, tmp_path, monkeypatch):
    reference = train(DATASET, "2d", 0, roots, options=options(), output_dir=tmp_path / "a")
    expected = torch.load(reference.fold_dir / "checkpoint_final.pth", weights_only=True)["network"]

    original = Trainer.run_epoch

    def crash_after_two(self, *args):
        if self.state.epoch == 2:
            raise KeyboardInterrupt("simulated kill")
        return original(self, *args)

    monkeypatch.setattr(Trainer, "run_epoch", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        train(DATASET, "2d", 0, roots, options=options(), output_dir=tmp_path / "b")
    monkeypatch.setattr(Trainer, "run_epoch", original)
    resumed = train(DATASET, "2d", 0, roots, options=options(), output_dir=tmp_path / "b", continue_training=True)
    assert resumed.epochs == 3
    log = (resumed.fold_dir / "log.txt").read_text()
    # the epoch lines count from 0: "epoch 2" comes next, not a second "epoch 2"
    assert f"resumed from {resumed.fold_dir / 'checkpoint_latest.pth'} after 2 finished epoch(s)" in log
    assert "epoch 2: train loss" in log.split("resumed from", 1)[1]
    got = torch.load(resumed.fold_dir / "checkpoint_final.pth", weights_only=True)["network"]
    for key in expected:
        assert torch.allclose(expected[key], got[key], atol=1e-6), key


class _SteppingClock:
    """``time`` for the trainer with a monotonic clock that advances 1 s per reading, so how many epochs fit in
    a budget depends on the code, not on how busy the machine is; everything else is the real module."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        self.now += 1.0
        return self.now

    def __getattr__(self, name: str):
        return getattr(time, name)


def test_time_budget_stops_the_run(roots, tmp_path, monkeypatch):
    from autocmr.trainers import run as run_module, trainer as trainer_module

    clock = _SteppingClock()
    monkeypatch.setattr(trainer_module, "time", clock)
    monkeypatch.setattr(run_module, "time", clock)
    result = train(DATASET, "2d", 0, roots, options=options(epochs=None, time_budget_s=12, iterations_per_epoch=3),
                   output_dir=tmp_path / "budget")
    state = torch.load(result.fold_dir / "checkpoint_final.pth", weights_only=True)["state"]
    assert 2 <= result.epochs < 12  # several epochs fit, the budget (not a schedule) ended the run
    assert state["wall_seconds"] <= 12 + max(state["history"]["epoch_time"])
    lrs = state["history"]["lr"]
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] < lrs[0]  # the learning rate follows the budget


def _stop_before_epoch(monkeypatch, epoch: int, stop):
    """Trainer.run_epoch calls ``stop(trainer)`` instead of training epoch ``epoch`` (0-based); returns the
    original, to put back."""
    original = Trainer.run_epoch

    def run_epoch(self, *args):
        if self.state.epoch == epoch:
            stop(self)
        return original(self, *args)

    monkeypatch.setattr(Trainer, "run_epoch", run_epoch)
    return original


def _killed(trainer) -> None:
    raise KeyboardInterrupt("simulated kill")


def test_a_resumed_budget_run_counts_the_set_up_time_before_starting_another_epoch(roots, tmp_path, monkeypatch):
    """The stop check uses the wall time so far: a session whose set-up (or checkpoint writing) spent what was
    left of the budget starts no other epoch, though the last epoch's end left room for one."""
    from autocmr.trainers import run as run_module, trainer as trainer_module

    clock = _SteppingClock()
    monkeypatch.setattr(trainer_module, "time", clock)
    monkeypatch.setattr(run_module, "time", clock)
    budget = options(epochs=None, time_budget_s=1000, iterations_per_epoch=2)
    out = tmp_path / "budget"
    original = _stop_before_epoch(monkeypatch, 2, _killed)
    with pytest.raises(KeyboardInterrupt):
        train(DATASET, "2d", 0, roots, options=budget, output_dir=out)
    monkeypatch.setattr(Trainer, "run_epoch", original)
    saved = torch.load(out / "fold_0" / "checkpoint_latest.pth", weights_only=True)["state"]
    assert saved["epoch"] == 2 and saved["wall_seconds"] + max(saved["history"]["epoch_time"]) < 900
    restore = Trainer.restore

    def slow_set_up(self, payload):  # the next session's set-up takes all but a second of what is left
        restore(self, payload)
        clock.now += 1000 - saved["wall_seconds"] - 1

    monkeypatch.setattr(Trainer, "restore", slow_set_up)
    result = train(DATASET, "2d", 0, roots, options=budget, output_dir=out, continue_training=True)
    assert result.epochs == 2
    assert "schedule already complete" in (out / "fold_0" / "log.txt").read_text()


def test_the_first_epochs_checkpoints_hold_the_validation_time_reserve(roots, tmp_path, monkeypatch):
    """A --time-budget run measures its final validation's time after the first epoch: that epoch's best
    checkpoint and the copy a stop signal saves as the latest must hold it, or a run resumed from them keeps
    no reserve and its learning rate follows another budget than the run never stopped."""
    def stopped_by_sigterm(trainer):
        trainer._save_on_stop("SIGTERM")  # what the signal handler does, then the process ends
        raise SystemExit(143)

    _stop_before_epoch(monkeypatch, 1, stopped_by_sigterm)
    out = tmp_path / "run"
    with pytest.raises(SystemExit):
        train(DATASET, "2d", 0, roots, options=options(time_budget_s=3600, save_every=100, final_validation=True),
              output_dir=out)
    latest = torch.load(out / "fold_0" / "checkpoint_latest.pth", weights_only=True)["state"]
    best = torch.load(out / "fold_0" / "checkpoint_best.pth", weights_only=True)["state"]
    assert latest["epoch"] == best["epoch"] == 1
    assert latest["reserve_s"] and latest["reserve_s"] > 10 and best["reserve_s"] == latest["reserve_s"]
    assert latest["reserve_device"] == "cpu"


def test_a_budget_run_resumed_on_another_device_type_measures_its_validation_reserve_again(roots, tmp_path,
                                                                                          monkeypatch):
    out = tmp_path / "run"
    budget = options(time_budget_s=3600)  # three epochs end it; no final validation: a reserve of 0 s
    original = _stop_before_epoch(monkeypatch, 1, _killed)
    with pytest.raises(KeyboardInterrupt):
        train(DATASET, "2d", 0, roots, options=budget, output_dir=out)
    monkeypatch.setattr(Trainer, "run_epoch", original)
    latest = out / "fold_0" / "checkpoint_latest.pth"
    payload = torch.load(latest, weights_only=True)
    payload["state"].update(reserve_s=500.0, reserve_device="cuda")  # as if timed on a GPU before a move here
    torch.save(payload, latest)
    result = train(DATASET, "2d", 0, roots, options=budget, output_dir=out, continue_training=True)
    final = torch.load(result.fold_dir / "checkpoint_final.pth", weights_only=True)["state"]
    assert result.epochs == 3 and final["reserve_s"] == 0.0 and final["reserve_device"] == "cpu"
    assert "(500 s) was measured on cuda; this session runs on cpu" in (result.fold_dir / "log.txt").read_text()


def test_clear_errors_for_missing_data_and_bad_fold(roots, tmp_path):
    empty = resolve_roots(raw=tmp_path / "r", preprocessed=tmp_path / "p", results=tmp_path / "o")
    with pytest.raises(DatasetError, match="no dataset with id 961"):
        train(961, "2d", 0, empty, options=options())
    write_phantom_dataset(empty.raw, n_subjects=1, dataset_id=961, fov_mm=100)
    with pytest.raises(DatasetError, match="autocmr_plan -d 961"):
        train(961, "2d", 0, empty, options=options())
    with pytest.raises(ConfigurationError, match="valid folds"):
        train(DATASET, "2d", 9, roots, options=options(), output_dir=tmp_path / "x")
    with pytest.raises(PlansError, match="valid names"):
        train(DATASET, "3d_lowres", 0, roots, options=options(), output_dir=tmp_path / "y")


def test_3d_fullres_trains_and_predicts(tmp_path):
    """The 3D path: anisotropic 3D patches, in-plane-only rotation, 3D deep supervision, 3D sliding window."""
    from autocmr.inference.predictor import Predictor
    from autocmr.testing.phantoms import make_phantom_case

    roots3 = resolve_roots(raw=tmp_path / "raw", preprocessed=tmp_path / "pre", results=tmp_path / "res")
    write_phantom_dataset(roots3.raw, n_subjects=5, dataset_id=962, fov_mm=120)
    plan_dataset(962, roots3, targets=("cpu",), configurations=("3d_fullres",), num_workers=1, check=False)
    result = train(962, "3d_fullres", 0, roots3, options=options(epochs=1, iterations_per_epoch=3, elastic=True,
                                                                  augmentation="default"))
    assert (result.fold_dir / "checkpoint_final.pth").is_file()
    predictor = Predictor(result.fold_dir.parent, device="cpu")
    assert predictor.config.dim == 3 and predictor.mirror_axes == (1, 2)
    case = make_phantom_case(11, fov_mm=120, oblique=True)
    label = predictor.predict_array(case.image, case.geometry.spacing_zyx, direction=case.geometry.direction).label
    assert label.shape == case.image.shape and label.dtype.name == "uint8"


def test_kill_9_then_continue_loses_at_most_the_epochs_since_the_last_checkpoint(roots, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    out = tmp_path / "killed"
    cmd = [str(Path(sys.executable).parent / "autocmr_train"), str(DATASET), "2d", "0", "--epochs", "6",
           "--iterations", "4", "--val-iterations", "1", "--batch-size", "2", "--num-workers", "0", "--device", "cpu",
           "--save-every", "1", "--augmentation", "none", "--no-final-validation", "-o", str(out),
           "--raw", str(roots.raw), "--preprocessed", str(roots.preprocessed), "--results", str(roots.results)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = out / "fold_0" / "checkpoint_latest.pth"
    deadline = time.monotonic() + 300
    while not latest.is_file() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert latest.is_file(), "no checkpoint was written before the kill"
    saved_epoch = torch.load(latest, weights_only=True)["state"]["epoch"]
    done = subprocess.run(cmd + ["--continue"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    log = (out / "fold_0" / "log.txt").read_text()
    assert f"resumed from {latest} after {saved_epoch} finished epoch(s)" in log
    final = torch.load(out / "fold_0" / "checkpoint_final.pth", weights_only=True)["state"]
    assert final["epoch"] == 6 and len(final["history"]["train_loss"]) == 6
    assert not list((out / "fold_0").glob(".tmp_*"))  # a kill during a checkpoint write leaves none behind


def test_bf16_training_learns_without_a_loss_scaler(roots, tmp_path):
    out = tmp_path / "model_bf16"
    result = train(DATASET, "2d", 0, roots, options=options(epochs=4, iterations_per_epoch=8, precision="bf16"),
                   output_dir=out)
    payload = torch.load(result.fold_dir / "checkpoint_final.pth", weights_only=True)
    history = payload["state"]["history"]
    assert history["train_loss"][-1] < 0.8 * history["train_loss"][0]
    assert json.loads((result.fold_dir / "options.json").read_text())["options"]["precision"] == "bf16"
    # bfloat16 has float32's exponent range: no gradient scaler, and float32 master weights
    assert payload["scaler"] is None
    assert all(t.dtype == torch.float32 for t in payload["network"].values())
    # where bfloat16 is not measured fast the log says so (on an AMX or AMD AVX512-BF16 CPU it does not)
    from autocmr.precision import cpu_has_fast_bf16

    assert ("this CPU has no fast bfloat16" in (result.fold_dir / "log.txt").read_text()) == (not cpu_has_fast_bf16())


def test_dice_weight_schedule_is_applied_per_epoch(roots, tmp_path):
    result = train(DATASET, "2d", 0, roots, options=options(epochs=3, iterations_per_epoch=3, dice_weight_end=0.0),
                   output_dir=tmp_path / "model_ramp")
    log = (result.fold_dir / "log.txt").read_text()
    weights = [line.rsplit("Dice weight ", 1)[1].strip() for line in log.splitlines() if "Dice weight" in line]
    assert weights == ["1.000", "0.667", "0.333"]  # linear in the schedule's progress at each epoch's start


def test_sigterm_saves_the_last_finished_epoch_and_continue_resumes_exactly(roots, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    def command(out: Path) -> list[str]:
        return [str(Path(sys.executable).parent / "autocmr_train"), str(DATASET), "2d", "0", "--epochs", "4",
                "--iterations", "4", "--val-iterations", "1", "--batch-size", "2", "--num-workers", "0",
                "--device", "cpu", "--save-every", "100", "--augmentation", "none", "--no-final-validation",
                "-o", str(out), "--raw", str(roots.raw), "--preprocessed", str(roots.preprocessed),
                "--results", str(roots.results)]

    reference = subprocess.run(command(tmp_path / "ref"), capture_output=True, text=True, timeout=600)
    assert reference.returncode == 0, reference.stderr[-2000:]
    out = tmp_path / "stopped"
    proc = subprocess.Popen(command(out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    log = out / "fold_0" / "log.txt"
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline and "epoch 0:" not in (
            log.read_text() if log.is_file() else ""):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGTERM)  # mid-epoch 1 (or later): no checkpoint would exist without the handler
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    latest = out / "fold_0" / "checkpoint_latest.pth"
    saved = torch.load(latest, weights_only=True)["state"]["epoch"]
    assert 1 <= saved < 4 and not (out / "fold_0" / "checkpoint_final.pth").exists()
    assert f"stopped by SIGTERM: checkpoint_latest.pth holds the {saved} finished epoch(s)" in log.read_text()
    done = subprocess.run(command(out) + ["--continue"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"resumed from {latest} after {saved} finished epoch(s)" in log.read_text()
    expected = torch.load(tmp_path / "ref" / "fold_0" / "checkpoint_final.pth", weights_only=True)["network"]
    got = torch.load(out / "fold_0" / "checkpoint_final.pth", weights_only=True)["network"]
    for key in expected:  # the copy taken at the epoch's end is what an ordinary save there would have written
        assert torch.equal(expected[key], got[key]), key


def test_a_run_stopped_after_its_last_epoch_gets_its_final_checkpoint_on_continue(roots, tmp_path):
    first = train(DATASET, "2d", 0, roots, options=options(), output_dir=tmp_path / "run")
    final = first.fold_dir / "checkpoint_final.pth"
    expected = torch.load(final, weights_only=True)["network"]
    final.unlink()  # stopped between the last epoch's save and the final one
    again = train(DATASET, "2d", 0, roots, options=options(), output_dir=tmp_path / "run", continue_training=True)
    assert again.epochs == 3 and "schedule already complete" in (again.fold_dir / "log.txt").read_text()
    got = torch.load(final, weights_only=True)["network"]
    assert all(torch.equal(expected[k], got[k]) for k in expected)


def test_an_extended_run_stopped_before_its_final_save_does_not_keep_the_earlier_final(roots, tmp_path):
    """Trained to 2 epochs, extended to 3 and killed after the last epoch's save but before the final one: the
    2-epoch checkpoint_final must not pass for the 3-epoch model (the validation and manifest follow it)."""
    out = tmp_path / "run"
    first = train(DATASET, "2d", 0, roots, options=options(epochs=2), output_dir=out)
    final = first.fold_dir / "checkpoint_final.pth"
    old_final = final.read_bytes()
    train(DATASET, "2d", 0, roots, options=options(epochs=3), output_dir=out, continue_training=True,
          allow_changed_options=True)
    latest = torch.load(first.fold_dir / "checkpoint_latest.pth", weights_only=True)
    final.write_bytes(old_final)  # as if killed between the 3rd epoch's latest save and the final save
    train(DATASET, "2d", 0, roots, options=options(epochs=3), output_dir=out, continue_training=True)
    got = torch.load(final, weights_only=True)
    assert got["state"]["epoch"] == 3
    assert all(torch.equal(latest["network"][k], got["network"][k]) for k in latest["network"])


def test_continue_of_a_finished_fold_keeps_its_final_validation_unless_the_weights_changed(roots, tmp_path):
    out = tmp_path / "run"
    first = train(DATASET, "2d", 0, roots, options=options(epochs=1, final_validation=True), output_dir=out)
    validation = first.fold_dir / "validation"
    masks = {p: p.stat().st_mtime_ns for p in validation.glob("*.nii.gz")}
    assert masks and (validation / "validated.json").is_file() and first.validation
    again = train(DATASET, "2d", 0, roots, options=options(epochs=1, final_validation=True), output_dir=out,
                  continue_training=True)
    assert "final validation of these weights already in" in (first.fold_dir / "log.txt").read_text()
    assert again.validation == first.validation
    assert {p: p.stat().st_mtime_ns for p in validation.glob("*.nii.gz")} == masks  # not predicted again
    # extended by an epoch: other weights, so the validation runs again
    train(DATASET, "2d", 0, roots, options=options(epochs=2, final_validation=True), output_dir=out,
          continue_training=True, allow_changed_options=True)
    assert all(p.stat().st_mtime_ns != t for p, t in masks.items())


def test_continue_with_fewer_epochs_than_the_run_has_trained_is_refused(roots, tmp_path):
    out = tmp_path / "run"
    first = train(DATASET, "2d", 0, roots, options=options(epochs=2), output_dir=out)
    final = (first.fold_dir / "checkpoint_final.pth").read_bytes()
    with pytest.raises(ConfigurationError, match="has trained 2 epochs already, more than --epochs 1"):
        train(DATASET, "2d", 0, roots, options=options(epochs=1), output_dir=out, continue_training=True,
              allow_changed_options=True)
    assert (first.fold_dir / "checkpoint_final.pth").read_bytes() == final


def test_a_fresh_run_removes_the_earlier_runs_checkpoints_so_a_requeued_continue_cannot_resume_them(roots, tmp_path):
    out = tmp_path / "run"
    first = train(DATASET, "2d", 0, roots, options=options(epochs=2), output_dir=out)
    (first.fold_dir / "validation").mkdir()
    (first.fold_dir / "validation" / "old_case.nii.gz").write_bytes(b"x")
    original = Trainer.run_epoch

    def killed_at_once(self, *args):
        raise KeyboardInterrupt  # killed before this fresh run saved anything

    Trainer.run_epoch = killed_at_once
    try:
        with pytest.raises(KeyboardInterrupt):
            train(DATASET, "2d", 0, roots, options=options(epochs=2), output_dir=out)
    finally:
        Trainer.run_epoch = original
    assert not any(first.fold_dir.glob("checkpoint_*.pth")) and not (first.fold_dir / "validation").exists()
    assert "removed the earlier run's checkpoint_latest.pth, checkpoint_final.pth, checkpoint_best.pth, validation/" \
        in (first.fold_dir / "log.txt").read_text()


def test_a_resume_into_a_replanned_network_is_refused_before_the_model_folder_changes(roots, tmp_path):
    from autocmr.networks.unet import build_network
    from autocmr.trainers.checkpoint import check_resumable, load_checkpoint

    first = train(DATASET, "2d", 0, roots, options=options(epochs=1), output_dir=tmp_path / "run")
    payload = load_checkpoint(first.fold_dir / "checkpoint_latest.pth")
    plans = json.loads((tmp_path / "run" / "plans.json").read_text())
    from autocmr.documents.plans import Plans

    loaded = Plans.load(tmp_path / "run" / "plans.json")
    config = loaded.configuration("2d")
    wider = build_network(config.topology, config.input_channels(1) + 2, len(loaded.labels))  # context slices
    with pytest.raises(ConfigurationError, match=r"checkpoint_latest.pth: its network does not match the current "
                                                 r"plans \(.*in the checkpoint.*now"):
        check_resumable(payload, network=wider, plans_name=plans["plans_name"], configuration="2d",
                        path=first.fold_dir / "checkpoint_latest.pth")
    with pytest.raises(ConfigurationError, match="checkpoint is from .*/2d, not other/2d"):
        check_resumable(payload, network=wider, plans_name="other", configuration="2d", path="x")
    same = build_network(config.topology, config.input_channels(1), len(loaded.labels))
    check_resumable(payload, network=same, plans_name=plans["plans_name"], configuration="2d", path="x")


def test_a_stop_while_the_best_checkpoint_is_written_still_leaves_the_best_epoch(roots, tmp_path, monkeypatch):
    """The epoch's payload already counts its EMA as the best; a stop signal arriving before checkpoint_best is
    written saves it from the payload too, or no later epoch (needing a strictly higher EMA) would."""
    original = Trainer.save

    def stopped_during_best(self, which):
        if which == "best" and self.state.epoch == 2:
            self._save_on_stop("SIGTERM")  # what the signal handler does, then the process ends
            raise SystemExit(143)
        original(self, which)

    monkeypatch.setattr(Trainer, "save", stopped_during_best)
    out = tmp_path / "run"
    with pytest.raises(SystemExit):
        train(DATASET, "2d", 0, roots, options=options(epochs=3), output_dir=out)
    fold = out / "fold_0"
    latest = torch.load(fold / "checkpoint_latest.pth", weights_only=True)
    best = torch.load(fold / "checkpoint_best.pth", weights_only=True)
    # the stop came from save("best") at epoch 2, so epoch 2 improved the EMA: best holds epoch 2
    assert latest["state"]["epoch"] == 2 and latest["state"]["best_ema"] == latest["state"]["ema"]
    assert best["state"]["epoch"] == 2


def test_a_fold_being_trained_is_not_trained_a_second_time_at_once(roots, tmp_path):
    import os

    from autocmr.io.locks import held
    from autocmr.trainers.run import TRAINING_LOCK

    fold_dir = tmp_path / "run" / "fold_0"
    with held(fold_dir / TRAINING_LOCK, lambda holder: RuntimeError(holder)):  # as another process would
        with pytest.raises(ConfigurationError, match=rf"fold 0 is being trained by process {os.getpid()} on "):
            train(DATASET, "2d", 0, roots, options=options(epochs=1), output_dir=tmp_path / "run")
        assert not any(fold_dir.glob("checkpoint_*.pth"))
    assert train(DATASET, "2d", 0, roots, options=options(epochs=1), output_dir=tmp_path / "run").epochs == 1


def test_options_the_trainer_would_refuse_are_refused_before_the_earlier_run_is_removed(roots, tmp_path):
    first = train(DATASET, "2d", 0, roots, options=options(epochs=1), output_dir=tmp_path / "run")
    before = sorted(p.name for p in first.fold_dir.glob("checkpoint_*.pth"))
    with pytest.raises(ConfigurationError, match="fp16"):
        train(DATASET, "2d", 0, roots, options=options(epochs=1, precision="fp16"), output_dir=tmp_path / "run")
    with pytest.raises(ConfigurationError, match="is the folder this run trains into"):
        train(DATASET, "2d", 0, roots, options=options(epochs=1, pretrained=str(tmp_path / "run")),
              output_dir=tmp_path / "run")
    assert sorted(p.name for p in first.fold_dir.glob("checkpoint_*.pth")) == before


def test_a_model_trained_without_mirroring_is_predicted_and_validated_without_it(roots, tmp_path, tiny_model_dir):
    from autocmr.documents.checkpoint import PRESETS_WITHOUT_MIRRORING
    from autocmr.inference.predictor import Predictor
    from autocmr.trainers.augmentation import PRESETS

    # the documents layer's list agrees with the presets' own parameters
    assert {name for name, params in PRESETS.items() if not params.mirror} == set(PRESETS_WITHOUT_MIRRORING)
    result = train(DATASET, "2d", 0, roots, options=options(epochs=1, augmentation="none"), output_dir=tmp_path / "m")
    assert Predictor(result.fold_dir.parent, device="cpu", mirror=True).mirror_axes == ()
    assert Predictor(tiny_model_dir, device="cpu", mirror=True).mirror_axes == (0, 1)  # default augmentation
    trainer_options = options(epochs=1, augmentation="none", final_validation=True)
    assert train(DATASET, "2d", 0, roots, options=trainer_options, output_dir=tmp_path / "v").validation
    record = json.loads((tmp_path / "v" / "fold_0" / "validation" / "validated.json").read_text())
    assert record["mirror_axes"] == []
