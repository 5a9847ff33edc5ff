"""Default schedules: the budget on a CPU, epochs on a GPU, and fine-tuning scaled to the amount of data; and
during a run, its progress, its end and its learning rate."""
from __future__ import annotations

import json

import pytest
import torch

from autocmr.trainers.options import TrainOptions
from autocmr.trainers.schedule import (DEFAULT_CPU_BUDGET_S, DEFAULT_GPU_EPOCHS, FINETUNE_MAX_ITERATIONS,
                                       FINETUNE_MIN_ITERATIONS, finetune_passes, finetune_schedule,
                                       poly_learning_rate, resolve_schedule, schedule_finished, schedule_progress,
                                       training_budget)
from autocmr.trainers.state import TrainState


def test_finetune_schedule_grows_with_the_training_data():
    one = finetune_schedule(18, 1, 7, max_iterations_per_epoch=250)  # one ACDC subject: 2 volumes, 18 slices
    three = finetune_schedule(52, 3, 7, max_iterations_per_epoch=250)
    # more subjects: more passes over each slice, not only more slices (one subject overfits sooner)
    assert finetune_passes(1) < finetune_passes(3)
    assert one.iterations * 52 / 18 < three.iterations
    for samples, subjects, s in ((18, 1, one), (52, 3, three)):
        passes = s.iterations * 7 / samples
        assert finetune_passes(subjects) <= passes < finetune_passes(subjects) * 1.3  # rounded up to whole epochs
        assert s.epochs >= 5
    assert finetune_schedule(1, 1, 8, max_iterations_per_epoch=250).iterations >= FINETUNE_MIN_ITERATIONS
    big = finetune_schedule(100_000, 40, 2, max_iterations_per_epoch=250)
    assert big.iterations_per_epoch == 250 and big.iterations <= FINETUNE_MAX_ITERATIONS
    assert finetune_schedule(52, 3, 7, max_iterations_per_epoch=10).iterations_per_epoch == 10
    with pytest.raises(ValueError, match="at least one sample"):
        finetune_schedule(0, 1, 7, max_iterations_per_epoch=250)


def test_resolve_schedule_fills_only_what_the_user_left_open():
    logged: list[str] = []

    def resolve(options, device="cpu"):  # one ACDC subject: 18 slices, batch 7
        return resolve_schedule(options, torch.device(device), logged.append, training_samples=18,
                                training_subjects=1, batch_size=7)

    explicit = TrainOptions(epochs=3, pretrained="model")
    assert resolve(explicit) == explicit
    assert resolve(TrainOptions()).time_budget_s == DEFAULT_CPU_BUDGET_S
    assert resolve(TrainOptions(), "cuda").epochs == DEFAULT_GPU_EPOCHS
    budget_only = TrainOptions(time_budget_s=600)
    assert resolve(budget_only) == budget_only
    tuned = resolve(TrainOptions(pretrained="model", time_budget_s=300))
    expected = finetune_schedule(18, 1, 7, max_iterations_per_epoch=250)
    assert (tuned.epochs, tuned.iterations_per_epoch) == (expected.epochs, expected.iterations_per_epoch)
    assert tuned.time_budget_s == 300  # the budget still caps the run
    assert tuned.val_iterations <= tuned.iterations_per_epoch
    assert "fine-tuning schedule" in logged[-1] and "18 training samples of 1 subject" in logged[-1]


def test_finetuning_without_epochs_trains_the_case_scaled_schedule(tiny_model, tmp_path):
    from autocmr.testing.phantoms import write_phantom_dataset
    from autocmr.trainers.run import train

    model_dir, roots = tiny_model
    write_phantom_dataset(roots.raw, n_subjects=1, seed=9, dataset_id=993, short_name="OneSubject", fov_mm=140)
    # epochs of at most 3 iterations and a 1 s budget: the first epoch always runs, then the budget ends
    # the run long before the schedule would
    options = TrainOptions(time_budget_s=1, iterations_per_epoch=3, val_iterations=1, num_workers=0, batch_size=2,
                           device="cpu", pretrained=str(model_dir), freeze="decoder")
    result = train(993, "2d", "all", roots, options=options, output_dir=tmp_path / "tuned")
    stored = json.loads((result.fold_dir / "options.json").read_text())["options"]
    data_dir = next(p for p in (roots.preprocessed / "Dataset993_OneSubject").iterdir() if p.is_dir())
    slices = sum(json.loads(p.read_text())["shape_after_resampling"][0] for p in data_dir.glob("*.json")
                 if not p.name.startswith(("configuration", ".")))
    expected = finetune_schedule(slices, 1, 2, max_iterations_per_epoch=3)
    assert (stored["epochs"], stored["iterations_per_epoch"]) == (expected.epochs, expected.iterations_per_epoch)
    assert 1 <= result.epochs < expected.epochs  # the budget ended it
    assert "fine-tuning schedule" in (result.fold_dir / "log.txt").read_text()


def test_the_budget_keeps_the_validation_reserve_and_never_reaches_zero():
    assert training_budget(None, 5.0) is None
    assert training_budget(100.0, None) == 100.0
    assert training_budget(100.0, 30.0) == 70.0
    assert 0 < training_budget(100.0, 500.0) < 0.01  # a reserve beyond the budget: only the first epoch runs


def test_progress_follows_epochs_or_time_whichever_is_further_and_sets_the_learning_rate():
    state = TrainState(epoch=2, wall_seconds=50.0)
    assert schedule_progress(state, 4, None) == 0.5
    assert schedule_progress(state, 4, 70.0) == pytest.approx(50 / 70)
    assert schedule_progress(state, 100, 40.0) == 1.0  # capped
    assert schedule_progress(TrainState(), None, None) == 0.0
    options = TrainOptions(learning_rate=0.01, poly_exponent=1.0)
    assert poly_learning_rate(options, 0.0) == 0.01
    assert poly_learning_rate(options, 0.75) == pytest.approx(0.0025)
    assert poly_learning_rate(options, 1.0) == 0.0


def test_a_run_ends_after_its_epochs_or_before_an_epoch_would_overrun_the_budget():
    assert not schedule_finished(TrainState(wall_seconds=500.0), None, 60.0)  # the first epoch always runs
    state = TrainState(epoch=2, wall_seconds=50.0)
    state.history["epoch_time"] += [100.0, 10.0, 20.0, 30.0]  # the last three predict the next: 20 s
    assert schedule_finished(state, 2, None) and not schedule_finished(state, 3, None)
    assert not schedule_finished(state, None, 70.0)  # 50 + 20 fits in 70
    assert schedule_finished(state, None, 69.0)
    assert schedule_finished(state, 10, 69.0)
    # the wall time now (a resumed session's set-up, checkpoints written since the epoch's end) decides
    assert schedule_finished(state, None, 70.0, wall_seconds=55.0)
    assert not schedule_finished(state, None, 80.0, wall_seconds=55.0)


@pytest.mark.parametrize("bad", [dict(learning_rate=float("nan")), dict(learning_rate=float("inf")),
                                 dict(batch_size=0), dict(num_workers=-1), dict(augmentation="bogus"),
                                 dict(unfreeze_blocks=-1), dict(unfreeze_blocks=2, freeze="decoder"),
                                 dict(freeze="encoder"), dict(seed=-1), dict(time_budget_s=float("nan"))])
def test_impossible_options_are_refused_before_any_work(bad):
    from autocmr.errors import ConfigurationError

    with pytest.raises(ConfigurationError):
        TrainOptions(**bad)
    assert TrainOptions(unfreeze_blocks=2, freeze="encoder", pretrained="m").unfreeze_blocks == 2


def test_augmentation_names_match_the_presets():
    from autocmr.trainers.augmentation import PRESETS
    from autocmr.trainers.options import AUGMENTATION_PRESETS

    assert set(AUGMENTATION_PRESETS) == set(PRESETS)
