"""Background batch production: sample, augment and collate in worker processes.

Batch ``i`` is produced from generators seeded with (run seed, i), so the stream is identical whatever the
number of workers and after a resume. A data-parallel rank other than 0 adds its rank to that seed: ranks
never draw the same batch or the same augmentation, and rank 0 draws what a single process would. Workers are
torch DataLoader workers: a crashed worker raises a clear error in the trainer and a stalled one times out
instead of hanging.
"""
from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from autocmr.trainers.data import PatchSampler

BATCH_TIMEOUT_S = 300  # a worker that produces nothing for this long is considered stalled


class BatchStream(IterableDataset):
    def __init__(self, sampler: PatchSampler, transforms: Any, *, seed: int, start_iteration: int = 0,
                 rank: int = 0) -> None:
        super().__init__()
        self.sampler = sampler
        self.transforms = transforms
        self.seed = seed
        self.start_iteration = start_iteration
        self.rank = rank

    def batch(self, iteration: int) -> dict[str, Any]:
        # rank 0 keeps the single-process entropy, so a 1-process run is unchanged by data parallelism
        seed_seq = np.random.SeedSequence([self.seed, iteration] + ([self.rank] if self.rank else []))
        np_seed, torch_seed = seed_seq.generate_state(2)
        np.random.seed(int(np_seed))  # batchgeneratorsv2 samples from the global generators
        torch.manual_seed(int(torch_seed))
        images, segs = self.sampler.sample(np.random.default_rng(seed_seq.spawn(1)[0]))
        if self.transforms is None:
            return {"image": torch.from_numpy(images), "target": [torch.from_numpy(segs.astype(np.int64))]}
        out_images, out_targets = [], []
        for img, seg in zip(images, segs):
            d = self.transforms(image=torch.from_numpy(img), segmentation=torch.from_numpy(seg.astype(np.int16)))
            out_images.append(d["image"])
            target = d["segmentation"]
            out_targets.append(target if isinstance(target, list) else [target])
        targets = [torch.stack([t[k] for t in out_targets]).long() for k in range(len(out_targets[0]))]
        return {"image": torch.stack(out_images).float(), "target": targets}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        iteration = self.start_iteration + worker
        while True:
            yield self.batch(iteration)
            iteration += n_workers


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def make_loader(stream: BatchStream, *, num_workers: int, pin_memory: bool = False) -> DataLoader:
    if num_workers <= 0:
        return DataLoader(stream, batch_size=None, num_workers=0)
    return DataLoader(stream, batch_size=None, num_workers=num_workers, persistent_workers=True, prefetch_factor=4,
                      pin_memory=pin_memory, worker_init_fn=_worker_init, timeout=BATCH_TIMEOUT_S,
                      multiprocessing_context="spawn")


def deep_supervision_scales(strides: Sequence[Sequence[int]], n_outputs: int) -> list[list[float]]:
    """Scale of each deep-supervision output relative to the patch (full resolution first)."""
    scales, current = [], [1.0] * len(strides[0])
    for k in range(n_outputs):
        if k > 0:
            current = [c / s for c, s in zip(current, strides[k])]
        scales.append(list(current))
    return scales
