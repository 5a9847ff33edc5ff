"""Sliding-window prediction with Gaussian importance weighting and mirroring test-time augmentation.

Tiles overlap by (1 - step) of the patch; each tile's logits are weighted by a Gaussian centred on the
tile (sigma = patch/8) because predictions near a patch border see less context. 2D models run over all
slices with tiles of several slices batched together.
"""
from __future__ import annotations

import itertools
import math
from functools import lru_cache
from typing import Sequence

import numpy as np
import torch
from torch import nn

GAUSSIAN_SIGMA_SCALE = 1.0 / 8  # sigma of the importance map as a fraction of the patch size
DEFAULT_STEP = 0.5


@lru_cache(maxsize=8)
def _gaussian_np(patch_size: tuple[int, ...], sigma_scale: float) -> np.ndarray:
    grids = np.meshgrid(*[np.arange(n) - (n - 1) / 2 for n in patch_size], indexing="ij")
    g = np.exp(-sum((x / (sigma_scale * n)) ** 2 for x, n in zip(grids, patch_size)) / 2)
    g /= g.max()
    g[g == 0] = g[g > 0].min()  # never divide by zero where tiles overlap little
    return g.astype(np.float32)


def gaussian_importance(patch_size: Sequence[int], sigma_scale: float = GAUSSIAN_SIGMA_SCALE) -> torch.Tensor:
    return torch.from_numpy(_gaussian_np(tuple(int(p) for p in patch_size), sigma_scale))


def tile_starts(image_size: int, patch: int, step: float = DEFAULT_STEP) -> list[int]:
    """Evenly spaced tile starts covering ``image_size`` with tiles of ``patch`` overlapping by (1-step)."""
    if image_size <= patch:
        return [0]
    n = int(math.ceil((image_size - patch) / (patch * step))) + 1
    span = image_size - patch
    return [int(round(i * span / (n - 1))) for i in range(n)]


def mirror_combinations(axes: Sequence[int]) -> list[tuple[int, ...]]:
    """All subsets of the spatial axes to flip (the empty one first)."""
    return [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]


def _pad_to(t: torch.Tensor, size: Sequence[int]) -> tuple[torch.Tensor, list[slice]]:
    """Zero-pad the trailing axes of ``t`` to at least ``size`` (centred); returns the crop to undo it."""
    pads, crops = [], []
    for n, p in zip(t.shape[-len(size):], size):
        total = max(p - n, 0)
        before = total // 2
        pads.append((before, total - before))
        crops.append(slice(before, before + n))
    flat = [v for pair in reversed(pads) for v in pair]
    return (torch.nn.functional.pad(t, flat) if any(flat) else t), crops


@torch.no_grad()
def predict_logits(network: nn.Module, data: torch.Tensor, *, patch_size: Sequence[int], num_classes: int,
                   step: float = DEFAULT_STEP, mirror_axes: Sequence[int] = (), tile_batch: int = 8,
                   device: torch.device | str = "cpu", use_gaussian: bool = True) -> torch.Tensor:
    """Logits (num_classes, z, y, x) for preprocessed ``data`` (c, z, y, x), float32 on the CPU.

    ``patch_size`` has 2 entries for a 2D network (applied slice by slice) or 3 for a 3D one.
    ``mirror_axes`` are spatial axes of the patch (0-based) to flip for test-time augmentation.
    """
    device = torch.device(device)
    dim = len(patch_size)
    volume = data[None] if dim == 3 else data.permute(1, 0, 2, 3)  # 2D: slices become the batch
    volume, crops = _pad_to(volume, patch_size)
    spatial = volume.shape[-dim:]
    starts = [tile_starts(n, p, step) for n, p in zip(spatial, patch_size)]
    weight = gaussian_importance(patch_size) if use_gaussian else torch.ones(tuple(patch_size))
    lead = volume.shape[0]
    out = torch.zeros((lead, num_classes) + tuple(spatial), dtype=torch.float32)
    norm = torch.zeros(tuple(spatial), dtype=torch.float32)
    tiles = [(s, corner) for s in range(lead) for corner in itertools.product(*starts)]
    for corner in itertools.product(*starts):
        norm[_region(corner, patch_size)] += weight
    flips = mirror_combinations([a + 2 for a in mirror_axes])
    weight_dev = weight.to(device)
    for i in range(0, len(tiles), tile_batch):
        chunk = tiles[i:i + tile_batch]
        x = torch.stack([volume[(s, slice(None)) + _region(corner, patch_size)] for s, corner in chunk]).to(device)
        logits = None
        for f in flips:
            y = network(torch.flip(x, f) if f else x)
            y = torch.flip(y, f) if f else y
            logits = y if logits is None else logits + y
        logits = (logits / len(flips)) * weight_dev
        logits = logits.float().cpu()
        for (s, corner), tile in zip(chunk, logits):
            out[(s, slice(None)) + _region(corner, patch_size)] += tile
    out /= norm
    out = out[(slice(None), slice(None)) + tuple(crops)]
    return out.permute(1, 0, 2, 3).contiguous() if dim == 2 else out[0]


def _region(corner: Sequence[int], patch: Sequence[int]) -> tuple[slice, ...]:
    return tuple(slice(c, c + p) for c, p in zip(corner, patch))
