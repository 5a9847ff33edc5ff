"""U-Net topology from spacing and patch size: where to pool, which kernels, how many features."""
from __future__ import annotations

import math
from typing import Sequence

from autocmr.documents.plans import Topology

# Pool an axis only while its feature map stays at least this many voxels wide (issue #2: 4-voxel minimum).
MIN_FEATURE_MAP = 4
# An axis is "coarse" while its spacing exceeds this multiple of the finest axis' spacing: it then gets
# 1-wide kernels and is not pooled (cine SAX: 8-10 mm slices against 1.5 mm pixels).
COARSE_AXIS_RATIO = 2.0


def make_topology(spacing: Sequence[float], patch_size: Sequence[int], *, base_features: int, max_features: int,
                  max_stages: int, min_feature_map: int = MIN_FEATURE_MAP, deep_supervision: bool = True) -> Topology:
    """Pool every axis whose feature map can still halve above ``min_feature_map`` and whose spacing is
    not coarse; kernels are 3 except on coarse axes (1). Features double per stage up to ``max_features``."""
    dim = len(patch_size)
    current_spacing = [float(s) for s in spacing]
    size = [int(n) for n in patch_size]
    finest = min(current_spacing)
    kernel = [3 if s <= COARSE_AXIS_RATIO * finest else 1 for s in current_spacing]
    kernels, strides = [tuple(kernel)], [(1,) * dim]
    while len(strides) < max_stages:
        poolable = [a for a in range(dim) if size[a] // 2 >= min_feature_map]
        if not poolable:
            break
        # the finest of the axes that can still pool: an axis too small to halve again (a few slices) must not
        # hold the others back (nnU-Net's rule; with all axes the bottleneck of a 6-slice patch stayed 11x9)
        finest = min(current_spacing[a] for a in poolable)
        pool = [a in poolable and current_spacing[a] <= COARSE_AXIS_RATIO * finest for a in range(dim)]
        if not any(pool):
            break
        for a in range(dim):
            if pool[a]:
                size[a] //= 2
                current_spacing[a] *= 2
        finest = min(current_spacing)
        # Once an axis gets 3-wide kernels it keeps them.
        kernel = [3 if kernel[a] == 3 or current_spacing[a] <= COARSE_AXIS_RATIO * finest else 1 for a in range(dim)]
        strides.append(tuple(2 if p else 1 for p in pool))
        kernels.append(tuple(kernel))
    features = tuple(min(base_features * 2**i, max_features) for i in range(len(strides)))
    return Topology(dim, features, tuple(kernels), tuple(strides), deep_supervision=deep_supervision)


def fit_patch(spacing: Sequence[float], patch_size: Sequence[int],
              **topology_kwargs) -> tuple[Topology, tuple[int, ...]]:
    """Topology for ``patch_size``, with the patch rounded up to a multiple of the network's total stride
    per axis (repeated until stable, since a larger patch may allow another pooling step)."""
    patch = tuple(int(n) for n in patch_size)
    for _ in range(8):
        topology = make_topology(spacing, patch, **topology_kwargs)
        total = topology.total_stride()
        rounded = tuple(int(math.ceil(n / s) * s) for n, s in zip(patch, total))
        if rounded == patch:
            return topology, patch
        patch = rounded
    return topology, patch


def shrink_patch(patch: Sequence[int], median_shape: Sequence[int], topology: Topology) -> tuple[int, ...]:
    """Reduce the axis that is largest relative to the median image shape by one total-stride step."""
    total = topology.total_stride()
    ratios = [p / max(m, 1) for p, m in zip(patch, median_shape)]
    order = sorted(range(len(patch)), key=lambda a: ratios[a], reverse=True)
    out = list(patch)
    for a in order:
        step = max(total[a], 1)
        if out[a] - step >= MIN_FEATURE_MAP:
            out[a] -= step
            return tuple(out)
    return tuple(out)
