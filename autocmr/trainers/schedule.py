"""How long a run trains when the user does not say: epochs on a GPU, a wall-clock budget on a CPU, and for
fine-tuning a number of iterations scaled to how much target data there is.

Fine-tuning on a handful of cases overfits quickly, and the fewer the subjects the sooner: one patient's
anatomy is memorised long before three patients' is. On the cross-domain benchmark (a model from one ACDC
site fine-tuned on another site's patients, decoder frozen, lr 0.001, batch 7) one subject (18 slices) gave
its best target-site Dice after ~23 passes over its slices, less after ~45 and worse than no fine-tuning
after ~90, while three subjects (52 slices) were better after ~100 passes than after ~40. So the default is
a number of passes over the training samples that grows with the number of subjects, not a time. It is a
heuristic calibrated on that one experiment; --epochs/--iterations override it.

During the run, the same module says how far along the schedule is (epochs and/or time budget), whether it
is finished and the learning rate that goes with it (poly decay).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from autocmr.trainers.options import TrainOptions
from autocmr.trainers.state import TrainState

DEFAULT_CPU_BUDGET_S = 3600.0  # CPU runs without --epochs/--time-budget train for an hour
DEFAULT_GPU_EPOCHS = 1000
FINETUNE_PASSES_PER_SUBJECT = 25  # times each training sample (2D slice or 3D volume) is seen, per subject
FINETUNE_MIN_ITERATIONS = 50
FINETUNE_MAX_ITERATIONS = 5000  # beyond this the "few cases" are many: train with --epochs instead
FINETUNE_MIN_EPOCHS = 5  # so the log, the progress plot and the checkpoints have a few points
RECENT_EPOCHS = 3  # epochs whose mean duration predicts the next one's (stop before overrunning a budget)


@dataclass(frozen=True)
class FinetuneSchedule:
    epochs: int
    iterations_per_epoch: int

    @property
    def iterations(self) -> int:
        return self.epochs * self.iterations_per_epoch


def finetune_passes(subjects: int) -> float:
    return FINETUNE_PASSES_PER_SUBJECT * subjects


def finetune_schedule(samples: int, subjects: int, batch_size: int, *,
                      max_iterations_per_epoch: int) -> FinetuneSchedule:
    """Epochs and iterations per epoch that show each of ``samples`` training samples (from ``subjects``
    subjects) about ``finetune_passes(subjects)`` times in batches of ``batch_size``; epochs are no longer
    than ``max_iterations_per_epoch``."""
    if samples < 1 or subjects < 1 or batch_size < 1:
        raise ValueError(f"need at least one sample, subject and batch item, got {samples}, {subjects}, {batch_size}")
    total = math.ceil(finetune_passes(subjects) * samples / batch_size)
    total = min(max(total, FINETUNE_MIN_ITERATIONS), FINETUNE_MAX_ITERATIONS)
    per_epoch = min(max_iterations_per_epoch, math.ceil(total / FINETUNE_MIN_EPOCHS))
    return FinetuneSchedule(math.ceil(total / per_epoch), per_epoch)


def resolve_schedule(options: TrainOptions, device: torch.device, log: Callable[[str], None], *,
                     training_samples: int, training_subjects: int, batch_size: int) -> TrainOptions:
    """Fill in the schedule the user left open. ``--epochs`` always wins; a ``--time-budget`` stays an upper
    limit (on fine-tuning too, where the case-scaled schedule usually ends first)."""
    if options.epochs is not None:
        return options
    if options.pretrained:
        s = finetune_schedule(training_samples, training_subjects, batch_size,
                              max_iterations_per_epoch=options.iterations_per_epoch)
        log(f"fine-tuning schedule: {s.iterations} iterations ({s.epochs} epochs of {s.iterations_per_epoch}), "
            f"about {finetune_passes(training_subjects):.0f} passes over the {training_samples} training samples "
            f"of {training_subjects} subject(s) in batches of {batch_size}; set --epochs to choose another "
            "(--iterations alone only shortens the epochs, the total stays)")
        return options.updated(epochs=s.epochs, iterations_per_epoch=s.iterations_per_epoch,
                               val_iterations=min(options.val_iterations, s.iterations_per_epoch))
    if options.time_budget_s is not None:
        return options
    if device.type == "cpu":
        log(f"no --epochs or --time-budget given: training on the CPU for {DEFAULT_CPU_BUDGET_S / 60:.0f} min")
        return options.updated(time_budget_s=DEFAULT_CPU_BUDGET_S)
    return options.updated(epochs=DEFAULT_GPU_EPOCHS)


def training_budget(time_budget_s: float | None, reserve_s: float | None) -> float | None:
    """Seconds left for training in a ``time_budget_s`` run once ``reserve_s`` is kept for the final validation."""
    if time_budget_s is None:
        return None
    # a reserve as large as the budget leaves nothing after the first epoch (which always runs); the
    # floor only keeps progress() finite
    return max(time_budget_s - (reserve_s or 0.0), 1e-3)


def schedule_progress(state: TrainState, epochs: int | None, budget: float | None) -> float:
    """Fraction of the schedule done (epochs and/or time budget, whichever is further along)."""
    p = 0.0
    if epochs:
        p = state.epoch / epochs
    if budget:
        p = max(p, state.wall_seconds / budget)
    return min(p, 1.0)


def schedule_finished(state: TrainState, epochs: int | None, budget: float | None, *,
                      wall_seconds: float | None = None) -> bool:
    """Whether the run is over: its epochs done, or another epoch would overrun the training budget.
    ``wall_seconds``: the run's wall time now (default: as of its last epoch's end, ``state.wall_seconds``)."""
    if epochs and state.epoch >= epochs:
        return True
    if budget and state.history["epoch_time"]:
        recent = float(np.mean(state.history["epoch_time"][-RECENT_EPOCHS:]))
        # the first epoch always runs; wall time counts set-up, checkpoints and plots too, so the whole
        # command keeps to the budget
        now = state.wall_seconds if wall_seconds is None else wall_seconds
        return now + recent > budget
    return False


def dice_weight(options: TrainOptions, progress: float) -> float:
    """Weight of the soft-Dice loss term at ``progress`` (0 to 1) of the schedule: constant, or linear from
    ``options.dice_weight`` to ``options.dice_weight_end``."""
    if options.dice_weight_end is None:
        return options.dice_weight
    progress = min(max(progress, 0.0), 1.0)
    return options.dice_weight + (options.dice_weight_end - options.dice_weight) * progress


def poly_learning_rate(options: TrainOptions, progress: float) -> float:
    return options.learning_rate * (1.0 - progress) ** options.poly_exponent
