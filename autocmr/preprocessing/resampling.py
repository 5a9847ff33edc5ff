"""Resampling of images, label maps and class probabilities (numpy order (c, z, y, x)).

Axis 0 is through-plane. In-plane resampling uses torch's separable interpolation (bicubic for images,
bilinear for labels/probabilities, ``align_corners=False`` so image extents are preserved). Through-plane:
nearest neighbour for anisotropic data (interpolating across thick slices would invent anatomy), linear
otherwise. Label maps are resampled as one-hot masks with a running argmax, so they never gain a class that
was not in the input, and memory stays at one class at a time.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

Shape3 = tuple[int, int, int]
ANISOTROPY_THRESHOLD = 3.0  # slice spacing / finest in-plane spacing above which slices are "thick"
TIE_BREAK = 1e-4  # added to the nearest label's score when resampling labels: far below any interpolation step


def through_plane_nearest(plan_anisotropic: bool, spacing: Sequence[float]) -> bool:
    """Whether a case is resampled across its slices with nearest neighbour: when the plan's target grid is
    anisotropic, or when this case's own slices are thick (its axis-0 spacing above ``ANISOTROPY_THRESHOLD``
    times its finest in-plane spacing). The second matters for a dataset whose target is near-isotropic but
    which holds some thick-slice cases: interpolating between slices 10 mm apart invents anatomy whatever
    the grid they go to (the rule nnU-Net applies per case too)."""
    return bool(plan_anisotropic or float(spacing[0]) > ANISOTROPY_THRESHOLD * min(float(v) for v in spacing[1:]))


def target_shape(shape: Sequence[int], spacing: Sequence[float], new_spacing: Sequence[float]) -> Shape3:
    """Shape after resampling ``shape`` (spacing ``spacing``) to ``new_spacing``; at least 1 per axis."""
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, new_spacing))  # type: ignore


def _in_plane(t: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """``t``: (c, z, y, x) -> (c, z, *size)."""
    if tuple(t.shape[2:]) == tuple(size):
        return t
    c, z = t.shape[:2]
    flat = t.reshape(c * z, 1, *t.shape[2:])
    out = F.interpolate(flat, size=size, mode=mode, align_corners=False)
    return out.reshape(c, z, *size)


def _through_plane(t: torch.Tensor, nz: int, nearest: bool) -> torch.Tensor:
    """``t``: (c, z, y, x) -> (c, nz, y, x)."""
    z = t.shape[1]
    if z == nz:
        return t
    if nearest:
        # Voxel-centre mapping (same convention as align_corners=False).
        idx = np.minimum(((np.arange(nz) + 0.5) * z / nz).astype(np.int64), z - 1)
        return t[:, torch.from_numpy(idx)]
    out = F.interpolate(t[None], size=(nz,) + tuple(t.shape[2:]), mode="trilinear", align_corners=False)
    return out[0]


def resample_image(data: np.ndarray, new_shape: Sequence[int], *, anisotropic: bool, order: int = 3) -> np.ndarray:
    """Resample image channels ``data`` (c, z, y, x) to ``new_shape`` (z, y, x). Order 3 = bicubic in-plane,
    1 = bilinear."""
    new_shape = tuple(int(n) for n in new_shape)
    if tuple(data.shape[1:]) == new_shape:
        return data.astype(np.float32, copy=False)
    mode = "bicubic" if order >= 3 else "bilinear"
    with torch.no_grad():
        t = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))
        t = _through_plane(_in_plane(t, new_shape[1:], mode), new_shape[0], nearest=anisotropic)
    return t.numpy()


def resample_label(seg: np.ndarray, new_shape: Sequence[int], *, anisotropic: bool) -> np.ndarray:
    """Resample an integer label map (z, y, x) to ``new_shape``; output classes are a subset of the input's.

    Each class's mask is interpolated and the highest score wins. Exact ties are common (at a 2x reduction
    every output voxel averages a 2x2 block, and a block half inside a structure scores 0.5 for both): they go
    to the nearest-neighbour label rather than to the lowest class, which would be background and would erode
    every structure (a myocardium ring lost ~5 % of its area at 2x, a one-voxel line vanished)."""
    new_shape = tuple(int(n) for n in new_shape)
    if tuple(seg.shape) == new_shape:
        return seg
    classes = np.unique(seg)
    if classes.size == 1:
        return np.full(new_shape, classes[0], dtype=seg.dtype)
    nearest = _nearest_label(seg, new_shape, anisotropic)
    best_score = None
    best = np.zeros(new_shape, dtype=seg.dtype)
    with torch.no_grad():
        for cls in classes:
            mask = torch.from_numpy((seg == cls).astype(np.float32))[None]
            score = _through_plane(_in_plane(mask, new_shape[1:], "bilinear"), new_shape[0], anisotropic)[0]
            # smaller than any step of the interpolation weights: it decides ties only
            score = score + TIE_BREAK * torch.from_numpy(nearest == cls)
            if best_score is None:
                best_score = score
                best[...] = cls
            else:
                better = (score > best_score).numpy()
                best[better] = cls
                best_score = torch.maximum(best_score, score)
    return best


def _nearest_label(seg: np.ndarray, new_shape: Shape3, anisotropic: bool) -> np.ndarray:
    """``seg`` resampled by nearest neighbour, voxel centres aligned as in the interpolation (nearest-exact)."""
    with torch.no_grad():
        t = torch.from_numpy(seg.astype(np.float32))[:, None]  # label values are small integers: exact in float32
        if tuple(t.shape[2:]) != tuple(new_shape[1:]):
            t = F.interpolate(t, size=new_shape[1:], mode="nearest-exact")
        t = _through_plane(t[:, 0][None], new_shape[0], nearest=True)[0]
    return t.numpy().astype(seg.dtype)


def resample_probabilities(probs: torch.Tensor, new_shape: Sequence[int], *, anisotropic: bool) -> torch.Tensor:
    """Resample class probabilities (C, z, y, x) to ``new_shape``: bilinear in-plane, nearest (anisotropic)
    or linear through-plane."""
    new_shape = tuple(int(n) for n in new_shape)
    if tuple(probs.shape[1:]) == new_shape:
        return probs
    with torch.no_grad():
        return _through_plane(_in_plane(probs.float(), new_shape[1:], "bilinear"), new_shape[0], anisotropic)


def class_argmax(probabilities: torch.Tensor | np.ndarray) -> np.ndarray:
    """Index of the largest value along the first (class) axis, as numpy (first index on ties, as torch).

    numpy's reduction over the leading axis runs ~5x faster than torch's on a CPU (16 against 80 ms for
    4 x 12 x 193 x 192 values), and a cine's fast path takes several per frame."""
    array = probabilities.numpy() if isinstance(probabilities, torch.Tensor) else np.asarray(probabilities)
    return array.argmax(axis=0)


def argmax_resampled(probs: torch.Tensor, new_shape: Sequence[int], *, anisotropic: bool,
                     chunk_slices: int = 16) -> np.ndarray:
    """Label map (uint8) of probabilities resampled to ``new_shape``, computed slab by slab so that the full
    resolution probabilities never exist at once (large native images stay cheap)."""
    new_shape = tuple(int(n) for n in new_shape)
    z_in = probs.shape[1]
    out = np.empty(new_shape, np.uint8)
    if anisotropic or z_in == new_shape[0]:
        idx = (np.arange(new_shape[0]) if z_in == new_shape[0]
               else np.minimum(((np.arange(new_shape[0]) + 0.5) * z_in / new_shape[0]).astype(np.int64), z_in - 1))
        for start in range(0, new_shape[0], chunk_slices):
            sel = idx[start:start + chunk_slices]
            part = _in_plane(probs[:, torch.from_numpy(sel)].float(), new_shape[1:], "bilinear")
            out[start:start + len(sel)] = class_argmax(part).astype(np.uint8)
        return out
    return class_argmax(resample_probabilities(probs, new_shape, anisotropic=False)).astype(np.uint8)
