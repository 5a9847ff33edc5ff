"""Fingerprint -> plans: a pure function (no files), unit-testable on hand-made fingerprints.

Rules (facts from the nnU-Net method, written for autocmr):
* transpose so the axis with the largest median spacing comes first (cine SAX: the slice axis);
* ``3d_fullres`` resamples to the median spacing, except that a strongly anisotropic axis with few voxels
  uses the 10th percentile of its spacings (never finer than the in-plane target);
* ``2d`` resamples in-plane to the median in-plane spacing and keeps each case's native slices;
* anisotropic data (max/min spacing > 3: the target grid, or a case's own slices) are resampled through-plane
  with nearest neighbour;
* patch size starts at the median image shape and shrinks until the network fits the target's budget
  (GPU memory, or CPU compute per training iteration); batch size fills the rest of the budget, capped so
  one batch covers at most 5 % of the dataset's voxels.
"""
from __future__ import annotations

import dataclasses

import hashlib
import json
import logging
from dataclasses import dataclass

import numpy as np

from autocmr.documents.plans import (CPU_PLANS_NAME, DEFAULT_PLANS_NAME, Configuration, Plans, Resampling,
                                    Topology)
from autocmr.errors import ConfigurationError, PlansError
from autocmr.networks.unet import activation_elements, training_flops
from autocmr.planners.fingerprint import Fingerprint
from autocmr.planners.topology import MIN_FEATURE_MAP, fit_patch, shrink_patch
from autocmr.preprocessing.normalization import scheme_for_channel
from autocmr.preprocessing.resampling import ANISOTROPY_THRESHOLD  # also applied to each case's own spacing

logger = logging.getLogger(__name__)

MAX_BATCH_FRACTION = 0.05  # one batch sees at most this fraction of all dataset voxels
MIN_BATCH = 2


@dataclass(frozen=True)
class TargetSettings:
    """What a plan is sized for. Budgets are per training iteration."""

    name: str
    base_features: int
    max_features_2d: int
    max_features_3d: int
    max_stages_2d: int
    max_stages_3d: int
    max_batch_2d: int
    memory_budget_bytes: float | None = None  # GPU: activations (fp16) must fit in this
    flop_budget: float | None = None  # CPU: floating-point operations per training step
    max_patch_2d: int | None = None  # CPU: cap per in-plane axis (voxels)


# GPU: an 8-11 GB card with mixed precision. The activation estimate leaves room for cuDNN workspaces and
# gradients; 4.5e9 bytes of estimated activations puts ACDC at the patch sizes nnU-Net chooses for it.
GPU = TargetSettings("gpu", base_features=32, max_features_2d=512, max_features_3d=320, max_stages_2d=7,
                     max_stages_3d=6, max_batch_2d=64, memory_budget_bytes=4.5e9)
# CPU: a 2-core machine sustains ~70-90 GFLOP/s on these networks in fp32 (measured on the CI machine
# class); 40 GFLOP per step gives ~0.5 s per iteration, so an hour of training is ~6-7k iterations.
# A 128-voxel in-plane patch (200 mm at 1.56 mm) still covers both ventricles with context.
CPU = TargetSettings("cpu", base_features=16, max_features_2d=256, max_features_3d=256, max_stages_2d=6,
                     max_stages_3d=5, max_batch_2d=32, flop_budget=40e9, max_patch_2d=128)
TARGETS = {"gpu": GPU, "cpu": CPU}


def target_settings(name: str) -> TargetSettings:
    try:
        return TARGETS[name]
    except KeyError:
        raise ConfigurationError(f"unknown plan target {name!r}; valid: {sorted(TARGETS)}") from None


def transpose_order(median_spacing: np.ndarray, median_shape: np.ndarray | None = None) -> tuple[int, int, int]:
    """Axis order for the networks: the coarsest axis first (the slice axis of a cine stack). Single-slice data
    (an axis of median size 1) keep that axis first whatever its spacing: 2D exports often write a 1 mm slice
    spacing, finer than their pixels, and their rows must not become slices."""
    spacing = np.asarray(median_spacing, float).copy()
    if median_shape is not None:
        single = [a for a in range(3) if median_shape[a] <= 1]
        if len(single) == 1:
            spacing[single[0]] = np.inf
    first = int(np.argmax(spacing))
    return (first,) + tuple(a for a in range(3) if a != first)  # type: ignore[return-value]


def fullres_spacing(spacings: np.ndarray, shapes: np.ndarray) -> np.ndarray:
    """Target spacing for 3d_fullres (spacings/shapes already transposed: axis 0 is the coarsest).

    Single-slice images beside stacks say nothing about the slice spacing (2D exports often write 1 mm, finer
    than their pixels): the slice axis's statistics come from the stacks alone, else a few of them would pull
    the target down to the pixel size and every stack would be upsampled several-fold along it."""
    spacings, shapes = np.asarray(spacings, float), np.asarray(shapes, float)
    stacks = shapes[:, 0] > 1
    if not stacks.any():
        stacks = np.ones(len(shapes), bool)
    target = np.median(spacings, axis=0)
    target[0] = np.median(spacings[stacks, 0])
    median_shape = np.median(shapes, axis=0)
    worst = int(np.argmax(target))
    others = [a for a in range(3) if a != worst]
    # strongly anisotropic: coarser than every other axis by the threshold (rectangular pixels do not count)
    anisotropic = target[worst] > ANISOTROPY_THRESHOLD * target[others].max()
    few_slices = median_shape[worst] * ANISOTROPY_THRESHOLD < median_shape[others].min()
    if anisotropic and few_slices:
        finer = float(np.percentile(spacings[stacks, worst] if worst == 0 else spacings[:, worst], 10))
        target[worst] = max(finer, float(target[others].max()) + 1e-5)
    return target


def _budget_ok(settings: TargetSettings, topology: Topology, patch: tuple[int, ...], batch: int, channels: int) -> bool:
    if settings.memory_budget_bytes is not None:
        return activation_elements(topology, patch) * batch * 2 <= settings.memory_budget_bytes
    return training_flops(topology, patch, channels) * batch <= settings.flop_budget


def _per_sample_cost(settings: TargetSettings, topology: Topology, patch: tuple[int, ...], channels: int) -> float:
    if settings.memory_budget_bytes is not None:
        return settings.memory_budget_bytes / (activation_elements(topology, patch) * 2)
    return settings.flop_budget / training_flops(topology, patch, channels)


def size_network(settings: TargetSettings, spacing: np.ndarray, median_shape: np.ndarray, dim: int,
                 channels: int, dataset_voxels: float) -> tuple[Topology, tuple[int, ...], int]:
    """Patch, topology and batch size for one configuration."""
    axes = slice(1, 3) if dim == 2 else slice(0, 3)
    sp, shape = spacing[axes], median_shape[axes]
    patch = tuple(int(max(n, 1)) for n in shape)
    if dim == 2 and settings.max_patch_2d:
        patch = tuple(min(p, settings.max_patch_2d) for p in patch)
    kwargs = dict(base_features=settings.base_features,
                  max_features=settings.max_features_2d if dim == 2 else settings.max_features_3d,
                  max_stages=settings.max_stages_2d if dim == 2 else settings.max_stages_3d)
    topology, patch = fit_patch(sp, patch, **kwargs)
    while not _budget_ok(settings, topology, patch, MIN_BATCH, channels):
        smaller = shrink_patch(patch, shape, topology)
        if smaller == patch:
            break
        topology, patch = fit_patch(sp, smaller, **kwargs)
    batch = int(_per_sample_cost(settings, topology, patch, channels))
    cap = int(MAX_BATCH_FRACTION * dataset_voxels / float(np.prod(patch)))
    batch = max(MIN_BATCH, min(batch, cap, settings.max_batch_2d if dim == 2 else batch))
    return topology, patch, batch


def misplaced_slice_axes(fingerprint: Fingerprint, order: tuple[int, int, int]) -> list[tuple[str, int]]:
    """Cases whose own slice axis (a spacing ``ANISOTROPY_THRESHOLD`` times its finest, or a single slice) is
    not first in the dataset's axis order: in a dataset of mixed acquisitions the median can put another axis
    first, and the ``2d`` configuration would then cut such a case across its slices. (case id, position)."""
    misplaced = []
    for case in fingerprint.cases:
        spacing, shape = np.asarray(case.spacing, float)[list(order)], np.asarray(case.shape)[list(order)]
        single = [a for a in range(3) if shape[a] <= 1]
        thick = single[0] if len(single) == 1 else int(np.argmax(spacing))
        if thick != 0 and (single or spacing[thick] > ANISOTROPY_THRESHOLD * spacing.min()):
            misplaced.append((case.case_id, thick))
    return misplaced


def data_identifier(name: str, payload: dict) -> str:
    """Preprocessed folder name: configurations that preprocess identically share it."""
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:8]
    return f"{name}_{digest}"


def plan(fingerprint: Fingerprint, *, target: str = "gpu", plans_name: str | None = None,
         autocmr_version: str = "", context_slices: int = 0, other_phase: bool = False) -> Plans:
    """Derive plans from a fingerprint (pure function). ``context_slices`` goes to the 2d configuration only
    (neighbouring slices as input channels), ``other_phase`` to every configuration (the other cardiac phase as
    input channels); neither changes the preprocessing or the data identifier."""
    settings = target_settings(target)
    if not fingerprint.cases:
        raise PlansError(f"{fingerprint.dataset_name}: fingerprint has no cases")
    spacings, shapes = fingerprint.spacings(), fingerprint.cropped_shapes()
    order = transpose_order(np.median(spacings, axis=0), np.median(shapes, axis=0))
    spacings_t, shapes_t = spacings[:, order], shapes[:, order]
    misplaced = misplaced_slice_axes(fingerprint, order)
    if misplaced:
        logger.warning("%s: %d of %d cases have their slice axis at position %d of the dataset's axis order %s, not "
                       "first (e.g. %s): the 2d configuration cuts them across their slices; plan differently "
                       "acquired cases as a dataset of their own", fingerprint.dataset_name, len(misplaced),
                       len(fingerprint.cases), misplaced[0][1], order, misplaced[0][0])
    channels = len(fingerprint.channel_names)
    schemes = tuple(scheme_for_channel(fingerprint.channel_names[str(c)]) for c in range(channels))
    # Mask-based normalisation only helps when cropping removed much zero background (nnU-Net rule: 25 %).
    use_mask = tuple(s == "zscore" and float(np.median([c.crop_fraction for c in fingerprint.cases])) < 0.75
                     for s in schemes)
    configurations = {}
    too_small: list[str] = []
    for name, dim in (("2d", 2), ("3d_fullres", 3)):
        if dim == 2:
            target_sp = np.median(spacings_t, axis=0)  # axis 0 recorded but not resampled
        else:
            target_sp = fullres_spacing(spacings_t, shapes_t)
        resampled = shapes_t * spacings_t / target_sp
        if dim == 2:
            resampled[:, 0] = shapes_t[:, 0]
        median_shape = np.round(np.median(resampled, axis=0)).astype(int)
        if dim == 3 and median_shape[0] < 2:
            continue  # single-slice data: no 3D configuration
        anisotropic = bool(target_sp.max() > ANISOTROPY_THRESHOLD * target_sp.min())
        resampling = Resampling(resample_through_plane=dim == 3, anisotropic=anisotropic)
        voxels = float(resampled.prod(axis=1).sum())
        topology, patch, batch = size_network(settings, target_sp, median_shape.astype(float), dim, channels, voxels)
        if topology.n_stages < 2:  # nothing to pool: a U-Net without a decoder has no output
            too_small.append(f"{name} patch {patch}")
            continue
        spacing = tuple(round(float(s), 6) for s in target_sp)
        identity = {"spacing": spacing if dim == 3 else spacing[1:], "resampling": resampling.__dict__,
                    "normalization": schemes, "mask": use_mask, "transpose": order}
        if "ct" in schemes:  # ct normalises with the dataset's statistics: re-planned on more cases, they change
            identity["ct_intensity"] = [dataclasses.asdict(fingerprint.intensity[c]) for c, scheme
                                        in enumerate(schemes) if scheme == "ct"]
        ident = data_identifier(name, identity)
        configurations[name] = Configuration(
            name=name, dim=dim, data_identifier=ident, spacing=spacing, resampling=resampling,
            median_shape=tuple(int(n) for n in median_shape), patch_size=patch, batch_size=batch,
            topology=topology, normalization=schemes, use_mask_for_norm=use_mask, batch_dice=dim == 2,
            context_slices=context_slices if dim == 2 else 0, other_phase=other_phase,
        )
    if not configurations:
        size = tuple(int(v) for v in np.median(shapes, axis=0))
        raise PlansError(f"{fingerprint.dataset_name}: images of median size {size} voxels are too small for a "
                         f"U-Net ({', '.join(too_small)}: an axis needs at least "
                         f"{2 * MIN_FEATURE_MAP} voxels to be pooled once)")
    return Plans(
        dataset_name=fingerprint.dataset_name,
        plans_name=plans_name or (DEFAULT_PLANS_NAME if target == "gpu" else CPU_PLANS_NAME),
        target=target, labels=dict(fingerprint.labels), channel_names=dict(fingerprint.channel_names),
        transpose_forward=order,
        original_median_spacing=tuple(float(v) for v in np.median(spacings, axis=0)),
        original_median_shape=tuple(int(v) for v in np.median(shapes, axis=0)),
        intensity=fingerprint.intensity, configurations=configurations, autocmr_version=autocmr_version,
    )
