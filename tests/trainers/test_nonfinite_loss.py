"""A loss that is not finite: fatal in float32 and bfloat16; under float16 the loss scaler skips such steps, and
only a long run of skipped steps ends the training."""
from __future__ import annotations

import pytest
import torch

from autocmr.documents.plans import Plans
from autocmr.errors import AutocmrError
from autocmr.networks.unet import build_network
from autocmr.preprocessing import storage
from autocmr.trainers.options import TrainOptions
from autocmr.trainers.trainer import MAX_SKIPPED_FP16_STEPS, Trainer


def _trainer(tiny_model, tmp_path) -> tuple[Trainer, dict]:
    model_dir, roots = tiny_model
    plans = Plans.load(model_dir / "plans.json")
    config = plans.configuration("2d")
    data = roots.preprocessed / plans.dataset_name / config.data_identifier
    cases = storage.list_cases(data)
    network = build_network(config.topology, config.input_channels(len(plans.channel_names)), len(plans.labels))
    trainer = Trainer(network=network, plans=plans, config=config, data_folder=data, train_cases=cases[:4],
                      val_cases=cases[4:], output_dir=tmp_path, options=TrainOptions(num_workers=0, batch_size=2),
                      device=torch.device("cpu"), log=lambda message: None)
    train_it, _ = trainer.pipeline.iterators(cases[:4], cases[4:], epoch=0)
    return trainer, next(train_it)


class SkippingScaler:
    """What torch.amp.GradScaler does on CUDA (it disables itself without CUDA): a step whose gradients are not
    finite is skipped, so the weights stay as they were, and the scale is halved."""

    def __init__(self) -> None:
        self.scale_value, self.found_inf = 65536.0, False

    def get_scale(self) -> float:
        return self.scale_value

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        return loss * self.scale_value

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        self.found_inf = not all(torch.isfinite(g).all() for g in grads)
        for g in grads:
            g.div_(self.scale_value)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if not self.found_inf:
            optimizer.step()

    def update(self) -> None:
        if self.found_inf:
            self.scale_value /= 2


def _overflowing(trainer: Trainer, steps: list[bool]) -> None:
    """Make the loss infinite at the steps marked True (the network and the backward pass still run)."""
    loss, plan = trainer.loss, iter(steps)

    def patched(outputs, targets):
        value = loss(outputs, targets)
        return value * float("inf") if next(plan) else value
    trainer.loss = patched


def test_float32_stops_at_the_first_non_finite_loss(tiny_model, tmp_path) -> None:
    trainer, batch = _trainer(tiny_model, tmp_path)
    assert trainer.scaler is None
    _overflowing(trainer, [True])
    with pytest.raises(AutocmrError, match="training loss became inf at epoch 0; lower the learning rate"):
        trainer.train_step(batch)


def test_float16_skips_overflowing_steps_until_too_many_come_in_a_row(tiny_model, tmp_path) -> None:
    trainer, batch = _trainer(tiny_model, tmp_path)
    trainer.scaler = SkippingScaler()
    limit = MAX_SKIPPED_FP16_STEPS
    _overflowing(trainer, [True] * limit + [False] + [True] * (limit + 1))
    for _ in range(limit + 1):  # a run of overflows, then a finite step resets the count
        trainer.train_step(batch)
    for _ in range(limit):
        trainer.train_step(batch)
    with pytest.raises(AutocmrError, match=rf"float16 training: {limit + 1} steps in a row overflowed \(loss inf\)"):
        trainer.train_step(batch)
