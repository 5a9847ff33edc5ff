"""The trainer's data pipeline: patch sampling, augmentation and loader processes, built from the plans'
configuration and the training options. Resuming at epoch ``e`` starts the streams at the iteration they had
reached, so a resumed run draws the same batches as an uninterrupted one."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch

from autocmr.parallel import default_workers
from autocmr.planners.plans import Configuration
from autocmr.trainers.augmentation import (ELASTIC_PROBABILITY, build_transforms, in_plane_only, preset,
                                           sampling_patch_size, with_overrides)
from autocmr.trainers.data import CaseCache, PatchSampler
from autocmr.trainers.distributed import BatchShare, DistributedContext
from autocmr.trainers.loader import BatchStream, make_loader
from autocmr.trainers.options import TrainOptions

# Training already keeps every core busy; on small machines a background augmentation process only competes
# with it (measured on 2 cores: 0.62 vs 0.57 s per iteration), so CPU batches are made in-process up to this
SMALL_MACHINE_CORES = 4


def loader_workers(device: torch.device, cores: int) -> int:
    """Background augmentation processes for a training on ``device`` that has ``cores`` cores to itself."""
    if device.type == "cpu":
        return 0 if cores <= SMALL_MACHINE_CORES else 2
    return max(1, min(8, cores - 1))


@dataclass(frozen=True)
class DataPipeline:
    """How one rank's training and pseudo-Dice batches are made.

    Args:
        data_folder: the configuration's preprocessed cases.
        config: the plans' configuration (patch size, dimension, oversampling, resampling).
        foreground_labels: the label values oversampling centres patches on.
        options: augmentation preset, seed, iterations per epoch, workers.
        device: where training runs (decides workers and pinned memory).
        share: this rank's part of the global batch.
        ds_scales: scale of each deep-supervision target relative to the patch.
        distributed: this process's rank (each rank draws its own batches).
        partners: each case's other cardiac phase, for a configuration with ``other_phase``.
    """

    data_folder: Path
    config: Configuration
    foreground_labels: Sequence[int]
    options: TrainOptions
    device: torch.device
    share: BatchShare
    ds_scales: Sequence[Sequence[float]]
    distributed: DistributedContext
    partners: Mapping[str, str] = field(default_factory=dict)

    def stream(self, cases: Sequence[str], *, augment: bool, seed: int, start: int) -> BatchStream:
        params = preset(self.options.augmentation if augment else "none")
        if augment and self.options.elastic:
            params = with_overrides(params, p_elastic=ELASTIC_PROBABILITY)
        config = self.config
        anisotropic = config.resampling.anisotropic
        in_plane = in_plane_only(config.dim, anisotropic)
        size = sampling_patch_size(config.patch_size, params, in_plane=in_plane) if augment else config.patch_size
        sampler = PatchSampler(CaseCache(self.data_folder), cases, dim=config.dim, sample_size=size,
                               batch_size=self.share.batch_size, oversampling=config.foreground_oversampling,
                               foreground_labels=self.foreground_labels, forced=self.share.forced,
                               context_slices=config.context_slices,
                               end_slices=self.share.end_slices if augment else 0,  # pseudo-Dice: as drawn
                               other_phase=config.other_phase, partners=self.partners,
                               partner_dropout=self.options.other_phase_dropout if augment else 0.0,
                               final_patch=config.patch_size if self.options.patch_placement == "inside" else None)
        # neighbouring slices and the other phase are one acquisition: one intensity mapping for all channels
        transforms = build_transforms(params, config.patch_size, anisotropic=anisotropic, ds_scales=self.ds_scales,
                                      synchronize_channels=config.context_slices > 0 or config.other_phase)
        return BatchStream(sampler, transforms, seed=seed, start_iteration=start, rank=self.distributed.rank)

    def workers(self) -> int:
        """Background augmentation processes of the training loader (``--num-workers`` wins)."""
        if self.options.num_workers is not None:
            return self.options.num_workers
        # ranks on this machine share its cores
        return loader_workers(self.device, max(1, default_workers() // self.distributed.local_world_size))

    def iterators(self, train_cases: Sequence[str], val_cases: Sequence[str], *,
                  epoch: int) -> tuple[Iterator[dict[str, Any]], Iterator[dict[str, Any]]]:
        """Training and pseudo-Dice batches from ``epoch`` on (without validation cases, the training cases
        give the pseudo-Dice, unaugmented)."""
        options, workers = self.options, self.workers()
        train = make_loader(self.stream(train_cases, augment=True, seed=options.seed,
                                        start=epoch * options.iterations_per_epoch),
                            num_workers=workers, pin_memory=self.device.type == "cuda")
        val = make_loader(self.stream(val_cases or train_cases, augment=False, seed=options.seed + 1,
                                      start=epoch * options.val_iterations),
                          num_workers=1 if workers > 0 else 0)
        return iter(train), iter(val)
