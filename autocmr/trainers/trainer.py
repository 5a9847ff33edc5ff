"""The training loop, organised as lifecycle hooks (start, epoch start, train step, validation step,
epoch end, end). Hyper-parameters come from :class:`TrainOptions`; nothing is changed by subclassing.

Data-parallel (``distributed`` with several ranks): every rank draws its own share of the global batch, the
network is wrapped in DistributedDataParallel for the training step only (gradients averaged), and the
per-epoch numbers that decide anything (losses, pseudo-Dice counts, epoch and wall time) are reduced or taken
from rank 0, so every rank keeps the same state and stops at the same epoch. Rank 0 alone writes."""
from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from autocmr.errors import AutocmrError, ConfigurationError
from autocmr.networks.unet import GenericUNet
from autocmr.parallel import default_workers
from autocmr.planners.plans import Configuration, Plans
from autocmr.trainers.augmentation import (ELASTIC_PROBABILITY, build_transforms, in_plane_only, preset,
                                           sampling_patch_size, with_overrides)
from autocmr.trainers.checkpoint import restore_rng_state, rng_state, save_checkpoint
from autocmr.trainers.data import CaseCache, PatchSampler, forced_samples
from autocmr.trainers.distributed import DistributedContext, batch_share, data_parallel
from autocmr.trainers.loader import BatchStream, deep_supervision_scales, make_loader
from autocmr.trainers.loss import DeepSupervisionLoss, DiceCELoss
from autocmr.trainers.options import TrainOptions
from autocmr.trainers.progress import RunLog, plot_progress

logger = logging.getLogger(__name__)
# The final validation was measured 20 % slower than its one-case estimate on ACDC; 1.3 (30 %) keeps 10 points
# of safety on top so a --time-budget run still ends inside its budget.
VALIDATION_MARGIN = 1.3
HISTORY_KEYS = ("train_loss", "val_loss", "pseudo_dice", "ema_dice", "lr", "epoch_time", "class_dice")


@dataclass
class TrainState:
    epoch: int = 0  # epochs completed
    train_seconds: float = 0.0  # time spent in completed epochs (survives resumes)
    wall_seconds: float = 0.0  # wall-clock time of the run so far, set-up and checkpoints included (survives resumes)
    best_ema: float = -1.0
    ema: float | None = None
    reserve_s: float | None = None  # time kept for the final validation (measured)
    history: dict[str, list[Any]] = field(default_factory=lambda: {k: [] for k in HISTORY_KEYS})


class Trainer:
    def __init__(self, *, network: GenericUNet, plans: Plans, config: Configuration, data_folder: Path,
                 train_cases: Sequence[str], val_cases: Sequence[str], output_dir: Path, options: TrainOptions,
                 device: torch.device, log: RunLog | Callable[[str], None],
                 parameters: Sequence[torch.nn.Parameter] | None = None, start_time: float | None = None,
                 distributed: DistributedContext | None = None) -> None:
        self.network, self.plans, self.config = network.to(device), plans, config
        self.train_cases, self.val_cases = list(train_cases), list(val_cases)
        self.output_dir, self.options, self.device, self.log = output_dir, options, device, log
        self.data_folder = data_folder
        self.state = TrainState()
        params = list(parameters) if parameters is not None else [p for p in network.parameters() if p.requires_grad]
        self.optimizer = torch.optim.SGD(params, lr=options.learning_rate, momentum=options.momentum,
                                         nesterov=True, weight_decay=options.weight_decay)
        self.amp = device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda") if self.amp else None
        n_outputs = config.topology.n_stages - 1 if options.deep_supervision else 1
        self.loss = DeepSupervisionLoss(DiceCELoss(batch_dice=config.batch_dice), n_outputs)
        self.ds_scales = deep_supervision_scales(config.topology.strides, n_outputs)
        self.batch_size = options.batch_size or config.batch_size  # the global batch
        self.distributed = distributed or DistributedContext()
        self.share = batch_share(self.batch_size, forced_samples(self.batch_size, config.foreground_oversampling),
                                 self.distributed)
        # what the training step runs: the network, or its DDP wrapper; checkpoints save the plain network
        self.model = data_parallel(self.network, device, self.distributed)
        self.epochs = options.epochs
        self.start_time = time.monotonic() if start_time is None else start_time
        self._wall_before = 0.0  # wall time of earlier sessions of a resumed run
        self._loaders: dict[str, Any] = {}

    # ----- data ---------------------------------------------------------------------------------------
    def _stream(self, cases: Sequence[str], *, augment: bool, seed: int, start: int) -> BatchStream:
        params = preset(self.options.augmentation if augment else "none")
        if augment and self.options.elastic:
            params = with_overrides(params, p_elastic=ELASTIC_PROBABILITY)
        anisotropic = self.config.resampling.anisotropic
        in_plane = in_plane_only(self.config.dim, anisotropic)
        size = sampling_patch_size(self.config.patch_size, params, in_plane=in_plane) if augment else self.config.patch_size
        sampler = PatchSampler(CaseCache(self.data_folder), cases, dim=self.config.dim, sample_size=size,
                               batch_size=self.share.batch_size, oversampling=self.config.foreground_oversampling,
                               foreground_labels=self.plans.foreground_labels, forced=self.share.forced)
        transforms = build_transforms(params, self.config.patch_size, anisotropic=anisotropic, ds_scales=self.ds_scales)
        return BatchStream(sampler, transforms, seed=seed, start_iteration=start, rank=self.distributed.rank)

    def _workers(self) -> int:
        if self.options.num_workers is not None:
            return self.options.num_workers
        cores = max(1, default_workers() // self.distributed.local_world_size)  # ranks on this machine share it
        if self.device.type == "cpu":
            # Training already keeps every core busy; on small machines a background augmentation process
            # only competes with it (measured on 2 cores: 0.62 vs 0.57 s per iteration), so batches are
            # made in-process there.
            return 0 if cores <= 4 else 2
        return max(1, min(8, cores - 1))

    def _iterators(self) -> tuple[Any, Any]:
        start = self.state.epoch * self.options.iterations_per_epoch
        workers = self._workers()
        train = make_loader(self._stream(self.train_cases, augment=True, seed=self.options.seed, start=start),
                            num_workers=workers, pin_memory=self.device.type == "cuda")
        val_cases = self.val_cases or self.train_cases
        val = make_loader(self._stream(val_cases, augment=False, seed=self.options.seed + 1,
                                       start=self.state.epoch * self.options.val_iterations),
                          num_workers=1 if workers > 0 else 0)
        return iter(train), iter(val)

    # ----- schedule -----------------------------------------------------------------------------------
    def training_budget(self) -> float | None:
        if self.options.time_budget_s is None:
            return None
        # a reserve as large as the budget leaves nothing after the first epoch (which always runs); the
        # floor only keeps progress() finite
        return max(self.options.time_budget_s - (self.state.reserve_s or 0.0), 1e-3)

    def progress(self) -> float:
        """Fraction of the schedule done (epochs and/or time budget, whichever is further along)."""
        p = 0.0
        if self.epochs:
            p = self.state.epoch / self.epochs
        budget = self.training_budget()
        if budget:
            p = max(p, self.state.wall_seconds / budget)
        return min(p, 1.0)

    def finished(self) -> bool:
        if self.epochs and self.state.epoch >= self.epochs:
            return True
        budget = self.training_budget()
        if budget and self.state.history["epoch_time"]:
            recent = float(np.mean(self.state.history["epoch_time"][-3:]))
            # stop when another epoch would overrun the budget (the first epoch always runs); wall time
            # counts set-up, checkpoints and plots too, so the whole command keeps to the budget
            return self.state.wall_seconds + recent > budget
        return False

    def current_lr(self) -> float:
        return self.options.learning_rate * (1.0 - self.progress()) ** self.options.poly_exponent

    # ----- steps --------------------------------------------------------------------------------------
    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.float16) if self.amp else contextlib.nullcontext()

    def train_step(self, batch: dict[str, Any]) -> float:
        x = batch["image"].to(self.device, non_blocking=True)
        targets = [t.to(self.device, non_blocking=True) for t in batch["target"]]
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            loss = self.loss(self.model(x), targets)
        if not torch.isfinite(loss):
            raise AutocmrError(f"training loss became {loss.item()} at epoch {self.state.epoch}; lower the learning "
                               "rate (--lr) or check the preprocessed data for extreme values")
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), self.options.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
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
                 f"batch {self.batch_size}, augmentation '{self.options.augmentation}', options {self.options.digest()}")
        if self.distributed.enabled:
            d = self.distributed
            self.log(f"data-parallel on {d.world_size} processes ({d.backend}); this rank's share of the global batch: "
                     f"{self.share.batch_size} samples, {self.share.forced} forced onto foreground")

    def run_epoch(self, train_it, val_it) -> None:
        t0 = time.monotonic()
        lr = self.current_lr()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
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
        train_loss, val_loss = d.reduce([np.mean(losses), np.mean(val_losses) if val_losses else math.nan], "mean")
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
        s.wall_seconds = self._wall_before + (time.monotonic() - self.start_time) if wall_seconds is None else wall_seconds
        for key, value in zip(HISTORY_KEYS, (train_loss, val_loss, pseudo, s.ema, lr, seconds, dice)):
            s.history[key].append(value)
        self.log(f"epoch {s.epoch - 1}: train loss {train_loss:.4f}, val loss {val_loss:.4f}, pseudo Dice "
                 f"{[round(d, 4) for d in dice]}, EMA {s.ema:.4f}, lr {lr:.5f}, {seconds:.1f} s")
        if s.ema > s.best_ema:
            s.best_ema = s.ema
            self.save("best")
        if s.epoch % self.options.save_every == 0 or self.finished():
            self.save("latest")
        if self.distributed.is_main:
            plot_progress(s.history, self.output_dir / "progress.png")

    def run(self) -> None:
        self.on_train_start()
        if self.finished():
            self.log("schedule already complete; nothing to train")
            return
        train_it, val_it = self._iterators()
        try:
            while not self.finished():
                self.run_epoch(train_it, val_it)
                if self.state.reserve_s is None and self.options.time_budget_s:
                    self.state.reserve_s = float(self.distributed.broadcast([self.estimate_final_validation()])[0])
        finally:
            del train_it, val_it  # stops the worker processes
        self.on_train_end()

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

    def estimate_final_validation(self) -> float:
        """Seconds the final validation will take (one validation case timed, scaled, x VALIDATION_MARGIN)."""
        if not self.val_cases or not self.options.final_validation:
            return 0.0
        from autocmr.trainers.validation import time_one_case

        seconds = time_one_case(self)
        per_rank = math.ceil(len(self.val_cases) / self.distributed.world_size)  # the ranks share the cases
        reserve = VALIDATION_MARGIN * seconds * per_rank + 10.0
        self.log(f"final validation estimated at {reserve:.0f} s ({seconds:.1f} s per case); kept out of the budget")
        return reserve

    # ----- checkpoints --------------------------------------------------------------------------------
    def checkpoint_payload(self) -> dict[str, Any]:
        s = self.state
        return {
            "network": self.network.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "state": {"epoch": s.epoch, "train_seconds": s.train_seconds, "wall_seconds": s.wall_seconds,
                      "best_ema": s.best_ema, "ema": s.ema, "reserve_s": s.reserve_s, "history": s.history},
            "epochs": self.epochs, "options": self.options.to_dict(), "rng": rng_state(),
            "plans_name": self.plans.plans_name, "configuration": self.config.name,
            "topology": self.config.topology.__dict__,
        }

    def save(self, which: str) -> None:
        if not self.distributed.is_main:
            return  # the replicas are identical; one writer keeps files whole
        save_checkpoint(self.output_dir / f"checkpoint_{which}.pth", self.checkpoint_payload())

    def restore(self, payload: dict[str, Any]) -> None:
        if payload.get("configuration") != self.config.name or payload.get("plans_name") != self.plans.plans_name:
            raise ConfigurationError(f"checkpoint is from {payload.get('plans_name')}/{payload.get('configuration')}, "
                                     f"not {self.plans.plans_name}/{self.config.name}")
        self.network.load_state_dict(payload["network"])
        self.optimizer.load_state_dict(payload["optimizer"])
        if self.scaler is not None and payload.get("scaler"):
            self.scaler.load_state_dict(payload["scaler"])
        st = payload["state"]
        self.state = TrainState(st["epoch"], st["train_seconds"], st.get("wall_seconds", st["train_seconds"]),
                                st["best_ema"], st["ema"], st["reserve_s"], st["history"])
        self._wall_before = self.state.wall_seconds
        self.start_time = time.monotonic()
        # self.epochs stays the requested one: run.py compared it with the stored options before resuming
        restore_rng_state(payload["rng"])


def _next(iterator) -> dict[str, Any]:
    try:
        return next(iterator)
    except RuntimeError as exc:
        raise AutocmrError(f"the data loader failed ({exc}); rerun with --num-workers 0 to see the error in the "
                           "main process") from exc
