"""Sliding-window prediction with Gaussian importance weighting and mirroring test-time augmentation.

Tiles overlap by (1 - step) of the patch; each tile's logits are weighted by a Gaussian centred on the
tile (sigma = patch/8) because predictions near a patch border see less context. 2D models run over all
slices with tiles of several slices batched together; a 2D model trained with through-plane context sees each
slice with its neighbours as channels (``context_slices``, :mod:`autocmr.preprocessing.context`).

Optionally (:func:`predict_logits_and_spread`) the pass also accumulates how much its members (the
mirrorings) disagree: the softmax of each mirrored pass and the sum of its squares, blended with the same
Gaussian weights. Together with other networks' sums this gives the ensemble's per-voxel variance without
any extra network pass (see :func:`disagreement_score`).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np
import torch
from torch import nn

from autocmr.precision import autocast
from autocmr.preprocessing.context import slices_with_context
from autocmr.preprocessing.resampling import class_argmax

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


Window = tuple[tuple[int, int], tuple[int, int]]  # (y0, y1), (x0, x1) in-plane, in the network input's grid


def crop_to_window(data: torch.Tensor, window: Window | None) -> torch.Tensor:
    """The in-plane ``window`` of ``data`` (..., y, x); all of it when ``window`` is None."""
    if window is None:
        return data
    (y0, y1), (x0, x1) = window
    return data[..., y0:y1, x0:x1]


def embed_in_background(probabilities: torch.Tensor, shape: Sequence[int], window: Window | None) -> torch.Tensor:
    """Probabilities (C, z, y, x) predicted inside ``window`` placed in a map of spatial ``shape`` that is
    background (class 0, probability 1) outside it; unchanged when ``window`` is None."""
    if window is None:
        return probabilities
    (y0, y1), (x0, x1) = window
    out = torch.zeros((probabilities.shape[0],) + tuple(shape), dtype=probabilities.dtype)
    out[0] = 1.0
    out[:, :, y0:y1, x0:x1] = probabilities
    return out


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


@dataclass
class MemberSpread:
    """Running sums over ensemble members of softmax probabilities, for the disagreement score.

    ``sum_probabilities`` (C, z, y, x) and ``sum_squares`` (z, y, x, summed over classes) are sums over
    ``members`` passes (each blended over tiles with the Gaussian weights); add networks with :meth:`add`.
    """

    sum_probabilities: torch.Tensor
    sum_squares: torch.Tensor
    members: int

    def add(self, other: "MemberSpread") -> "MemberSpread":
        return MemberSpread(self.sum_probabilities + other.sum_probabilities, self.sum_squares + other.sum_squares,
                            self.members + other.members)


@torch.no_grad()
def predict_logits(network: nn.Module, data: torch.Tensor, *, patch_size: Sequence[int], num_classes: int,
                   step: float = DEFAULT_STEP, mirror_axes: Sequence[int] = (), tile_batch: int = 8,
                   device: torch.device | str = "cpu", use_gaussian: bool = True,
                   context_slices: int = 0, precision: str = "fp32") -> torch.Tensor:
    """Logits (num_classes, z, y, x) for preprocessed ``data`` (c, z, y, x), float32 on the CPU.

    ``patch_size`` has 2 entries for a 2D network (applied slice by slice) or 3 for a 3D one.
    ``mirror_axes`` are spatial axes of the patch (0-based) to flip for test-time augmentation.
    ``context_slices`` (2D only) is the configuration's through-plane context k: each slice's input is the
    image channels of slices z-k..z+k (zeros outside the stack).
    ``precision`` is a resolved :mod:`autocmr.precision` name: the network runs under its autocast; tiles are
    blended in float32 whatever it is.
    """
    return _sliding_window(network, data, patch_size=patch_size, num_classes=num_classes, step=step,
                           mirror_axes=mirror_axes, tile_batch=tile_batch, device=device, use_gaussian=use_gaussian,
                           with_spread=False, context_slices=context_slices, precision=precision)[0]


@torch.no_grad()
def predict_logits_and_spread(network: nn.Module, data: torch.Tensor, *, patch_size: Sequence[int],
                              num_classes: int, step: float = DEFAULT_STEP, mirror_axes: Sequence[int] = (),
                              tile_batch: int = 8, device: torch.device | str = "cpu",
                              use_gaussian: bool = True, context_slices: int = 0,
                              precision: str = "fp32") -> tuple[torch.Tensor, MemberSpread]:
    """:func:`predict_logits` plus the :class:`MemberSpread` of its mirrored passes (identical logits)."""
    logits, spread = _sliding_window(network, data, patch_size=patch_size, num_classes=num_classes, step=step,
                                     mirror_axes=mirror_axes, tile_batch=tile_batch, device=device,
                                     use_gaussian=use_gaussian, with_spread=True, context_slices=context_slices,
                                     precision=precision)
    assert spread is not None
    return logits, spread


def _sliding_window(network: nn.Module, data: torch.Tensor, *, patch_size: Sequence[int], num_classes: int,
                    step: float, mirror_axes: Sequence[int], tile_batch: int, device: torch.device | str,
                    use_gaussian: bool, with_spread: bool, context_slices: int = 0,
                    precision: str = "fp32") -> tuple[torch.Tensor, MemberSpread | None]:
    device = torch.device(device)
    dim = len(patch_size)
    if context_slices and dim != 2:
        raise ValueError(f"context_slices={context_slices} needs a 2D patch size, got {tuple(patch_size)}")
    # 2D: slices (each with its context slices as channels) become the batch
    volume = data[None] if dim == 3 else slices_with_context(data, context_slices)
    volume, crops = _pad_to(volume, patch_size)
    spatial = volume.shape[-dim:]
    starts = [tile_starts(n, p, step) for n, p in zip(spatial, patch_size)]
    weight = gaussian_importance(patch_size) if use_gaussian else torch.ones(tuple(patch_size))
    lead = volume.shape[0]
    out = torch.zeros((lead, num_classes) + tuple(spatial), dtype=torch.float32)
    # spread: channels 0..C-1 sum the members' probabilities, channel C their summed squares
    spread = torch.zeros((lead, num_classes + 1) + tuple(spatial), dtype=torch.float32) if with_spread else None
    norm = torch.zeros(tuple(spatial), dtype=torch.float32)
    tiles = [(s, corner) for s in range(lead) for corner in itertools.product(*starts)]
    for corner in itertools.product(*starts):
        norm[_region(corner, patch_size)] += weight
    flips = mirror_combinations([a + 2 for a in mirror_axes])
    weight_dev = weight.to(device)
    for i in range(0, len(tiles), tile_batch):
        chunk = tiles[i:i + tile_batch]
        x = torch.stack([volume[(s, slice(None)) + _region(corner, patch_size)] for s, corner in chunk]).to(device)
        logits, moments = None, None
        for f in flips:
            with autocast(precision, device):
                y = network(torch.flip(x, f) if f else x)
            y = y.float()  # mirrorings are summed in float32 whatever the network's precision
            y = torch.flip(y, f) if f else y
            logits = y if logits is None else logits + y
            if spread is not None:
                p = torch.softmax(y.float(), dim=1)
                m = torch.cat([p, (p * p).sum(dim=1, keepdim=True)], dim=1)
                moments = m if moments is None else moments + m
        logits = ((logits / len(flips)) * weight_dev).float().cpu()
        moments = (moments * weight_dev).cpu() if moments is not None else None
        for j, (s, corner) in enumerate(chunk):
            out[(s, slice(None)) + _region(corner, patch_size)] += logits[j]
            if spread is not None and moments is not None:
                spread[(s, slice(None)) + _region(corner, patch_size)] += moments[j]
    out /= norm
    out = out[(slice(None), slice(None)) + tuple(crops)]
    out = out.permute(1, 0, 2, 3).contiguous() if dim == 2 else out[0]
    if spread is None:
        return out, None
    spread /= norm
    spread = spread[(slice(None), slice(None)) + tuple(crops)]
    spread = spread.permute(1, 0, 2, 3).contiguous() if dim == 2 else spread[0]
    return out, MemberSpread(spread[:num_classes], spread[num_classes], len(flips))


def disagreement_score(spread: MemberSpread, probabilities: torch.Tensor) -> float:
    """How much the ensemble's members disagree on a case: the per-voxel variance of the members' softmax
    probabilities (summed over classes), summed over the image and divided by the number of voxels the
    ensemble calls foreground. Boundary-only disagreement gives a small score; members that disagree about
    whole structures give a large one. NaN for a single member (no mirroring, one network): nothing to
    compare.
    """
    if spread.members < 2:
        return float("nan")
    mean = spread.sum_probabilities / spread.members
    variance = (spread.sum_squares / spread.members - (mean * mean).sum(dim=0)).clamp_min(0)
    foreground = int((class_argmax(probabilities) != 0).sum())
    return float(variance.sum()) / max(foreground, 1)


def _region(corner: Sequence[int], patch: Sequence[int]) -> tuple[slice, ...]:
    return tuple(slice(c, c + p) for c, p in zip(corner, patch))
