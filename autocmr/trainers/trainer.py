"""The training loop, organised as lifecycle hooks (start, epoch start, train step, validation step,
epoch end, end). Hyper-parameters come from :class:`TrainOptions`; nothing is changed by subclassing.

Data-parallel (``distributed`` with several ranks): every rank draws its own share of the global batch, the
network is wrapped in DistributedDataParallel for the training step only (gradients averaged), and the
per-epoch numbers that decide anything (losses, pseudo-Dice counts, epoch and wall time) are reduced or taken
from rank 0, so every rank keeps the same state and stops at the same epoch. Rank 0 alone writes.

What the loop uses lives beside it: the data pipeline in :mod:`autocmr.trainers.pipeline`, the schedule
arithmetic (progress, stop, learning rate) in :mod:`autocmr.trainers.schedule`, the checkpoint payload in
:mod:`autocmr.trainers.checkpoint`, the final validation in :mod:`autocmr.trainers.validation`."""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from tqdm import tqdm

from autocmr.documents.layout import checkpoint_name
from autocmr.errors import AutocmrError
from autocmr.networks.unet import GenericUNet
from autocmr.planners.plans import Configuration, Plans
from autocmr.precision import autocast, cpu_has_fast_bf16, resolve_precision
from autocmr.trainers import validation
from autocmr.trainers.augmentation import preset
from autocmr.trainers.checkpoint import (data_settings, fold_cases, restore_training, save_checkpoint,
                                         training_payload)
from autocmr.trainers.data import end_slice_samples, forced_samples
from autocmr.trainers.distributed import DistributedContext, batch_share, data_parallel
from autocmr.trainers.loader import deep_supervision_scales
from autocmr.trainers.loss import DeepSupervisionLoss, DiceCELoss
from autocmr.trainers.options import TrainOptions
from autocmr.trainers.pipeline import DataPipeline
from autocmr.trainers.progress import RunLog, plot_progress
from autocmr.trainers.schedule import (dice_weight, poly_learning_rate, schedule_finished, schedule_progress,
                                      training_budget)
from autocmr.trainers.state import HISTORY_KEYS, TrainState
from autocmr.trainers.stop_signals import cpu_copy, saving_on_stop

__all__ = ["HISTORY_KEYS", "TrainState", "Trainer", "VALIDATION_MARGIN"]
logger = logging.getLogger(__name__)
# The final validation was measured 20 % slower than its one-case estimate on ACDC; 1.3 (30 %) keeps 10 points
# of safety on top so a --time-budget run still ends inside its budget.
VALIDATION_MARGIN = 1.3
# float16 training: how many steps in a row the loss scaler may skip (each halves its scale: 20 take 65536 below
# 1) before the run is declared diverged
MAX_SKIPPED_FP16_STEPS = 20


class Trainer:
    def __init__(self, *, network: GenericUNet, plans: Plans, config: Configuration, data_folder: Path,
                 train_cases: Sequence[str], val_cases: Sequence[str], output_dir: Path, options: TrainOptions,
                 device: torch.device, log: RunLog | Callable[[str], None],
                 parameters: Sequence[torch.nn.Parameter] | None = None, start_time: float | None = None,
                 distributed: DistributedContext | None = None, partners: Mapping[str, str] | None = None) -> None:
        self.network, self.plans, self.config = network.to(device), plans, config
        self.train_cases, self.val_cases = list(train_cases), list(val_cases)
        self.output_dir, self.options, self.device, self.log = output_dir, options, device, log
        self.data_folder = data_folder
        self.partners = dict(partners or {})  # other cardiac phase of each case (configurations with other_phase)
        self.state = TrainState()
        params = list(parameters) if parameters is not None else [p for p in network.parameters() if p.requires_grad]
        self.optimizer = torch.optim.SGD(params, lr=options.learning_rate, momentum=options.momentum,
                                         nesterov=True, weight_decay=options.weight_decay)
        self.precision = resolve_precision(options.precision, device, training=True)
        # float16 needs loss scaling against underflowing gradients; bfloat16 has float32's range and does not
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
        n_outputs = config.topology.n_stages - 1 if options.deep_supervision else 1
        self.distributed = distributed or DistributedContext()
        # batch Dice of a data-parallel run: sums over every process's share (the global batch's Dice)
        sum_across = self.distributed.sum_with_gradients if self.distributed.enabled else None
        # the Dice weight is set again at each epoch's start (run_epoch), as the learning rate is
        self.loss = DeepSupervisionLoss(DiceCELoss(batch_dice=config.batch_dice, weight_dice=dice_weight(options, 0.0),
                                                   sum_across=sum_across), n_outputs)
        self.batch_size = options.batch_size or config.batch_size  # the global batch
        forced = forced_samples(self.batch_size, config.foreground_oversampling)
        self.share = batch_share(self.batch_size, forced, self.distributed,
                                 end_slice_samples(self.batch_size, options.end_slice_oversampling, forced))
        self.pipeline = DataPipeline(data_folder, config, plans.foreground_labels, options, device, self.share,
                                     deep_supervision_scales(config.topology.strides, n_outputs), self.distributed,
                                     self.partners)
        # what the training step runs: the network, or its DDP wrapper; checkpoints save the plain network
        self.model = data_parallel(self.network, device, self.distributed)
        self.epochs = options.epochs
        self.start_time = time.monotonic() if start_time is None else start_time
        self._wall_before = 0.0  # wall time of earlier sessions of a resumed run
        self._epoch_end_payload: dict[str, Any] | None = None  # the checkpoint as of the last finished epoch
        self._skipped_steps = 0  # float16 steps in a row the loss scaler skipped (gradients not finite)

    # ----- schedule (autocmr.trainers.schedule) -------------------------------------------------------
    def training_budget(self) -> float | None:
        return training_budget(self.options.time_budget_s, self.state.reserve_s)

    def progress(self) -> float:
        """Fraction of the schedule done (epochs and/or time budget, whichever is further along)."""
        return schedule_progress(self.state, self.epochs, self.training_budget())

    def finished(self) -> bool:
        budget = self.training_budget()
        # the wall time now, not at the last epoch's end: a resumed session's set-up and the checkpoints written
        # since count too, or a nearly spent budget would start one more whole epoch
        return schedule_finished(self.state, self.epochs, budget, wall_seconds=self.wall_seconds() if budget else None)

    def wall_seconds(self) -> float:
        """The run's wall time so far (earlier sessions', and this one's since it started); rank 0's on every
        rank, so that the ranks of a data-parallel run stop at the same epoch."""
        now = self._wall_before + (time.monotonic() - self.start_time)
        return float(self.distributed.broadcast([now])[0])

    def current_lr(self) -> float:
        return poly_learning_rate(self.options, self.progress())

    # ----- steps --------------------------------------------------------------------------------------
    def _autocast(self):
        return autocast(self.precision, self.device)

    def train_step(self, batch: dict[str, Any]) -> float:
        x = batch["image"].to(self.device, non_blocking=True)
        targets = [t.to(self.device, non_blocking=True) for t in batch["target"]]
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            loss = self.loss(self.model(x), targets)
        if self.scaler is not None:
            # float16 overflows now and then: the scaler then skips the step and halves its scale. Every rank sees
            # the same exchanged gradients, so every rank skips together: counted from the scale, the verdict is
            # the same on all of them. Only a long run of skipped steps means training diverged.
            scale = self.scaler.get_scale()
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), self.options.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self._skipped_steps = self._skipped_steps + 1 if self.scaler.get_scale() < scale else 0
            if self._skipped_steps > MAX_SKIPPED_FP16_STEPS:
                raise AutocmrError(f"float16 training: {self._skipped_steps} steps in a row overflowed (loss "
                                   f"{loss.item()}) at epoch {self.state.epoch}; lower the learning rate (--lr), "
                                   "train with --precision bf16 or fp32, or check the preprocessed data")
        else:
            if not torch.isfinite(loss):
                raise AutocmrError(f"training loss became {loss.item()} at epoch {self.state.epoch}; lower the "
                                   "learning rate (--lr) or check the preprocessed data for extreme values")
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), self.options.grad_clip)
            self.optimizer.step()
        return float(loss.detach())

    @torch.no_grad()
    def validation_step(self, batch: dict[str, Any]) -> tuple[float, np.ndarray]:
        """Loss and per-class (tp, fp, fn) counts at full resolution."""
        x = batch["image"].to(self.device)
        targets = [t.to(self.device) for t in batch["target"]]
        with self._autocast():
            out = self.network(x)
            loss = self.loss(out, targets)
        logits = out[0] if isinstance(out, list) else out
        pred, ref = logits.argmax(1), targets[0][:, 0]
        counts = []
        for c in range(1, logits.shape[1]):
            p, r = pred == c, ref == c
            counts.append([(p & r).sum().item(), (p & ~r).sum().item(), (~p & r).sum().item()])
        return float(loss), np.asarray(counts, float)

    # ----- lifecycle ----------------------------------------------------------------------------------
    def on_train_start(self) -> None:
        self.log(f"training {self.plans.dataset_name} {self.config.name} ({self.plans.plans_name}) on {self.device}: "
                 f"{len(self.train_cases)} train / {len(self.val_cases)} val cases, patch {self.config.patch_size}, "
                 f"batch {self.batch_size}, augmentation '{self.options.augmentation}', precision {self.precision}, "
                 f"options {self.options.digest()}")
        if self.device.type == "cpu" and self.precision == "fp32" and cpu_has_fast_bf16():
            self.log("this CPU runs bfloat16 fast (AMX, or AVX512-BF16 on AMD): --precision bf16 trains faster here "
                     "(README, CPU precision)")
        if self.device.type == "cpu" and self.precision == "bf16" and not cpu_has_fast_bf16():
            self.log("note: this CPU has no fast bfloat16 (no AMX), so bfloat16 may run slower than float32 here "
                     "(about 0.8x on an AVX512-BF16 Xeon; README, CPU precision); it still trains what "
                     "--precision bf16 trains elsewhere")
        if self.distributed.enabled:
            d = self.distributed
            self.log(f"data-parallel on {d.world_size} processes ({d.backend}); this rank's share of the global batch: "
                     f"{self.share.batch_size} samples, {self.share.forced} forced onto foreground")

    def run_epoch(self, train_it, val_it) -> None:
        t0 = time.monotonic()
        lr = self.current_lr()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        # the validation loss of an epoch uses the same weight, so with a schedule it is comparable within the
        # epoch only (the pseudo-Dice, which picks the best checkpoint, does not depend on it)
        self.loss.loss.weight_dice = dice_weight(self.options, self.progress())
        self.network.train()
        losses = []
        bar = tqdm(range(self.options.iterations_per_epoch), desc=f"epoch {self.state.epoch}", unit="it",
                   disable=None if self.distributed.is_main else True, leave=False)
        for _ in bar:
            losses.append(self.train_step(_next(train_it)))
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        self.network.eval()
        val_losses, counts = [], 0.0
        for _ in range(self.options.val_iterations):
            loss, c = self.validation_step(_next(val_it))
            val_losses.append(loss)
            counts = counts + c
        self.network.train()
        d = self.distributed
        finite = [v for v in losses if math.isfinite(v)]  # steps the float16 scaler skipped left out
        train_loss, val_loss = d.reduce([np.mean(finite) if finite else math.nan,
                                         np.mean(val_losses) if val_losses else math.nan], "mean")
        counts = d.reduce(counts, "sum") if val_losses else counts
        # every rank must see the same times, or one could stop a budgeted run an epoch before the others
        seconds, wall = d.broadcast([time.monotonic() - t0, self._wall_before + (time.monotonic() - self.start_time)])
        self.on_epoch_end(float(train_loss), float(val_loss), counts, lr, float(seconds), wall_seconds=float(wall))

    def on_epoch_end(self, train_loss: float, val_loss: float, counts: Any, lr: float, seconds: float, *,
                     wall_seconds: float | None = None) -> None:
        s = self.state
        dice = [float(2 * tp / (2 * tp + fp + fn)) if (2 * tp + fp + fn) > 0 else math.nan
                for tp, fp, fn in np.atleast_2d(counts)]
        pseudo = float(np.nanmean(dice)) if np.isfinite(dice).any() else 0.0
        s.ema = pseudo if s.ema is None else self.options.ema_decay * s.ema + (1 - self.options.ema_decay) * pseudo
        s.epoch += 1
        s.train_seconds += seconds
        s.wall_seconds = (self._wall_before + (time.monotonic() - self.start_time) if wall_seconds is None
                          else wall_seconds)
        for key, value in zip(HISTORY_KEYS, (train_loss, val_loss, pseudo, s.ema, lr, seconds, dice)):
            s.history[key].append(value)
        if self._needs_reserve():
            # measured before the epoch's payload is copied and saved: a run resumed from it keeps this reserve,
            # so its budget (and learning rate) are those of the run never stopped
            self._measure_reserve()
        improved = s.ema > s.best_ema
        if improved:
            s.best_ema = s.ema
        if self.distributed.is_main:  # what a stop signal saves from now on: this epoch, finished
            self._epoch_end_payload = cpu_copy(self.checkpoint_payload())
            # a stop before save("best") below writes best from the payload too: the payload's best_ema already
            # counts this epoch, so a resumed run would never rewrite checkpoint_best for it
            self._best_pending = improved
        scheduled = (f", Dice weight {self.loss.loss.weight_dice:.3f}" if self.options.dice_weight_end is not None
                     else "")
        self.log(f"epoch {s.epoch - 1}: train loss {train_loss:.4f}, val loss {val_loss:.4f}, pseudo Dice "
                 f"{[round(d, 4) for d in dice]}, EMA {s.ema:.4f}, lr {lr:.5f}, {seconds:.1f} s{scheduled}")
        if improved:
            self.save("best")
            self._best_pending = False
        if s.epoch % self.options.save_every == 0 or self.finished():
            self.save("latest")
        if self.distributed.is_main:
            plot_progress(s.history, self.output_dir / "progress.png")

    def run(self) -> None:
        self.on_train_start()
        if self.finished():
            # the final checkpoint is rewritten from the resumed state, which is exact: one left on disk may be
            # an earlier run's (a run extended with more epochs, killed between its last epoch and its final save)
            self.log("schedule already complete; nothing to train")
            self.on_train_end()
            return
        train_it, val_it = self.pipeline.iterators(self.train_cases, self.val_cases, epoch=self.state.epoch)
        try:
            with saving_on_stop(self._save_on_stop):
                if self.state.epoch and self._needs_reserve():
                    # resumed without a reserve (the one saved was measured on another device type, or the
                    # checkpoint was saved before it was measured): measured now, before the next epoch's lr
                    self._measure_reserve()
                while not self.finished():
                    self.run_epoch(train_it, val_it)
                self.on_train_end()
        finally:
            del train_it, val_it  # stops the worker processes

    def _save_on_stop(self, signal_name: str) -> None:
        """A stop signal (:mod:`autocmr.trainers.stop_signals`): the last finished epoch becomes the latest
        checkpoint, unless nothing finished since this session started (the latest one on disk is then newest)."""
        payload = self._epoch_end_payload
        if not self.distributed.is_main:
            return
        if payload is None:
            self.log(f"stopped by {signal_name} before an epoch finished in this session; checkpoint_latest.pth "
                     "is unchanged")
            return
        if self._best_pending:
            save_checkpoint(self.output_dir / checkpoint_name("best"), payload)
        save_checkpoint(self.output_dir / checkpoint_name("latest"), payload)
        done = payload["state"]["epoch"]
        self.log(f"stopped by {signal_name}: checkpoint_latest.pth holds the {done} finished epoch(s); resume with "
                 "--continue")

    def on_train_end(self) -> None:
        if self.distributed.enabled:
            spread = self.distributed.replica_spread(self.network)
            self.log(f"weights identical on all {self.distributed.world_size} data-parallel processes" if spread == 0
                     else f"WARNING: the data-parallel replicas' weights differ (by up to {spread:.3g} in a tensor "
                     "sum); rank 0's are saved")
        self.save("final")
        self.save("latest")
        self.log(f"training done after {self.state.epoch} epochs ({self.state.train_seconds / 60:.1f} min of "
                 f"training); best EMA pseudo Dice {self.state.best_ema:.4f}")

    def _needs_reserve(self) -> bool:
        return self.state.reserve_s is None and bool(self.options.time_budget_s)

    def _measure_reserve(self) -> None:
        """Keep the final validation's time (rank 0's estimate, on every rank) out of the budget."""
        self.state.reserve_s = float(self.distributed.broadcast([self.estimate_final_validation()])[0])
        self.state.reserve_device = self.device.type

    def estimate_final_validation(self) -> float:
        """Seconds the final validation will take (one validation case timed, scaled, x VALIDATION_MARGIN)."""
        if not self.val_cases or not self.options.final_validation:
            return 0.0
        seconds = validation.time_one_case(self.validation_settings())
        per_rank = math.ceil(len(self.val_cases) / self.distributed.world_size)  # the ranks share the cases
        reserve = VALIDATION_MARGIN * seconds * per_rank + 10.0
        self.log(f"final validation estimated at {reserve:.0f} s ({seconds:.1f} s per case); kept out of the budget")
        return reserve

    def validation_settings(self) -> validation.ValidationSettings:
        """What the final validation needs of this run (:mod:`autocmr.trainers.validation`)."""
        return validation.ValidationSettings(
            network=self.network, plans=self.plans, config=self.config, data_folder=self.data_folder,
            device=self.device, mirror=self.options.mirror_validation and preset(self.options.augmentation).mirror,
            output_dir=self.output_dir,
            cases=tuple(self.val_cases), distributed=self.distributed, log=self.log, partners=self.partners)

    # ----- checkpoints (autocmr.trainers.checkpoint) --------------------------------------------------
    def checkpoint_payload(self) -> dict[str, Any]:
        return training_payload(network=self.network, optimizer=self.optimizer, scaler=self.scaler, state=self.state,
                                epochs=self.epochs, options=self.options, plans_name=self.plans.plans_name,
                                configuration=self.config.name, topology=self.config.topology.__dict__,
                                precision=self.precision, cases=fold_cases(self.train_cases, self.val_cases),
                                data=data_settings(self.config))

    def save(self, which: str) -> None:
        if not self.distributed.is_main:
            return  # the replicas are identical; one writer keeps files whole
        save_checkpoint(self.output_dir / checkpoint_name(which), self.checkpoint_payload())

    def restore(self, payload: dict[str, Any]) -> None:
        self.state = restore_training(payload, network=self.network, optimizer=self.optimizer, scaler=self.scaler,
                                      plans_name=self.plans.plans_name, configuration=self.config.name)
        self._wall_before = self.state.wall_seconds  # this session's set-up (since start_time) counts on top
        measured_on = self.state.reserve_device
        if self.state.reserve_s is not None and measured_on not in (None, self.device.type):
            # a validation timed on a GPU says nothing of its time on a CPU (nor the reverse)
            self.log(f"the final validation's time reserve ({self.state.reserve_s:.0f} s) was measured on "
                     f"{measured_on}; this session runs on {self.device.type}, so it is measured again")
            self.state.reserve_s = None
        # self.epochs stays the requested one: run.py compared it with the stored options before resuming


def _next(iterator) -> dict[str, Any]:
    try:
        return next(iterator)
    except RuntimeError as exc:
        raise AutocmrError(f"the data loader failed ({exc}); rerun with --num-workers 0 to see the error in the "
                           "main process") from exc
