"""Augmentation presets, built from batchgeneratorsv2 transforms (nothing hand-written here).

``default`` follows the nnU-Net recipe; ``cross-domain`` follows the scanner-shift research (Chen et al.,
"Improving the generalizability of convolutional neural network-based segmentation on CMR images",
Front. Cardiovasc. Med. 2020): more frequent flips/rotations/scaling and much stronger intensity changes,
so a model trained at one site sees contrasts it will meet at others. ``none`` only crops (for debugging
and for measuring what augmentation buys).

Transforms sample from numpy's and torch's global generators; the data loader seeds both per batch from
(run seed, iteration), so every batch is reproducible whatever the number of workers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np
from batchgeneratorsv2.transforms.intensity.brightness import MultiplicativeBrightnessTransform
from batchgeneratorsv2.transforms.intensity.contrast import BGContrast, ContrastTransform
from batchgeneratorsv2.transforms.intensity.gamma import GammaTransform
from batchgeneratorsv2.transforms.intensity.gaussian_noise import GaussianNoiseTransform
from batchgeneratorsv2.transforms.noise.gaussian_blur import GaussianBlurTransform
from batchgeneratorsv2.transforms.spatial.low_resolution import SimulateLowResolutionTransform
from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.deep_supervision_downsampling import DownsampleSegForDSTransform
from batchgeneratorsv2.transforms.utils.random import RandomTransform

from autocmr.errors import ConfigurationError


@dataclass(frozen=True)
class AugmentationParams:
    """Probabilities (p_*) and ranges of each augmentation. Angles in degrees."""

    p_rotation: float = 0.2
    rotation_deg: float = 180.0  # in-plane; 3D isotropic data use ``rotation_deg_3d`` on every axis
    rotation_deg_3d: float = 30.0
    p_scaling: float = 0.2
    scaling: tuple[float, float] = (0.7, 1.4)
    p_elastic: float = 0.0
    p_noise: float = 0.1
    noise_variance: tuple[float, float] = (0.0, 0.1)
    p_blur: float = 0.2
    blur_sigma: tuple[float, float] = (0.5, 1.0)
    p_brightness: float = 0.15
    brightness: tuple[float, float] = (0.75, 1.25)
    p_contrast: float = 0.15
    contrast: tuple[float, float] = (0.75, 1.25)
    p_low_resolution: float = 0.25
    low_resolution_scale: tuple[float, float] = (0.5, 1.0)
    p_gamma_inverted: float = 0.1
    p_gamma: float = 0.3
    gamma: tuple[float, float] = (0.7, 1.5)
    mirror: bool = True


ELASTIC_PROBABILITY = 0.2  # per sample, when elastic deformation is switched on (--elastic)
# Largest elastic displacement, as a share of the patch side (6 px on a 128 px patch); batchgeneratorsv2's
# default magnitude, (0, 0.2), is in pixels: a fifth of a pixel, no deformation to speak of.
ELASTIC_MAX_SHARE = 0.05
# Smallest width of the elastic field's smoothing, as a share of the patch (batchgeneratorsv2's default range
# starts at 0): a field smoothed over a pixel or two with a 6 px displacement folds the image (neighbours swap
# places; 12 % of draws on a 128 px patch did). From 0.07 no draw folds.
ELASTIC_SCALE = (0.07, 0.2)

PRESETS: dict[str, AugmentationParams] = {
    "default": AugmentationParams(),
    "cross-domain": AugmentationParams(
        p_rotation=0.5, rotation_deg=30.0, rotation_deg_3d=30.0, p_scaling=0.5, scaling=(0.7, 1.4),
        p_noise=0.3, p_blur=0.3, blur_sigma=(0.5, 1.5), p_brightness=0.5, brightness=(0.5, 1.5),
        p_contrast=0.5, contrast=(0.5, 1.5), p_low_resolution=0.3, p_gamma_inverted=0.1, p_gamma=0.5,
    ),
    "none": AugmentationParams(p_rotation=0, p_scaling=0, p_noise=0, p_blur=0, p_brightness=0, p_contrast=0,
                               p_low_resolution=0, p_gamma_inverted=0, p_gamma=0, mirror=False),
}


def preset(name: str) -> AugmentationParams:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigurationError(f"unknown augmentation preset {name!r}; valid: {sorted(PRESETS)}") from None


def in_plane_only(dim: int, anisotropic: bool) -> bool:
    """3D cine stacks (few thick slices) are rotated and mirrored in-plane only."""
    return dim == 3 and anisotropic


def sampling_patch_size(patch_size: Sequence[int], params: AugmentationParams, *, in_plane: bool) -> tuple[int, ...]:
    """Size of the region to cut before spatial augmentation, so that rotating, zooming out and elastically
    deforming the final patch never reaches past it (the bounding box of the rotated, scaled patch, widened by
    the largest elastic displacement): beyond it the transform would sample zeros, a blank band at the edge."""
    size = np.asarray(patch_size, float)
    dim = len(size)
    planar = dim == 2 or in_plane
    if params.p_rotation > 0:
        limit = math.radians(params.rotation_deg if planar else params.rotation_deg_3d)
        thetas = np.linspace(0.0, min(limit, math.pi / 2), 91)
        planes = [(dim - 2, dim - 1)] if planar else [(1, 2), (0, 2), (0, 1)]
        for i, j in planes:  # rotations about the remaining axis, applied one after the other
            c, s = np.abs(np.cos(thetas)), np.abs(np.sin(thetas))
            size[i], size[j] = (size[i] * c + size[j] * s).max(), (size[j] * c + size[i] * s).max()
    if params.p_scaling > 0:
        zoom = max(params.scaling[1], 1.0)
        for a in (range(dim - 2, dim) if planar else range(dim)):
            size[a] *= zoom
    if params.p_elastic > 0:  # the deformation moves sampling points up to ELASTIC_MAX_SHARE of the side outwards
        for a in (range(dim - 2, dim) if in_plane else range(dim)):
            size[a] += 2 * ELASTIC_MAX_SHARE * float(patch_size[a]) * max(params.scaling[1], 1.0)
    return tuple(int(math.ceil(v - 1e-6)) for v in size)


@dataclass(frozen=True)
class RandomRotation:
    """Rotation angle sampler for SpatialTransform (a class, not a closure, so workers can unpickle it).

    In 3D, angle 0 rotates about axis 0 (through-plane): the only rotation used for thick-slice stacks."""

    max_radians: float
    in_plane: bool

    def __call__(self, image=None, dim=None, **_) -> float:  # noqa: ANN001 - batchgeneratorsv2 callback
        if self.in_plane and dim != 0:
            return 0.0
        return float(np.random.uniform(-self.max_radians, self.max_radians))


@dataclass(frozen=True)
class ElasticMagnitude:
    """Elastic displacement sampler for SpatialTransform: up to ``max_share`` of the patch side along each axis,
    none through-plane for thick-slice stacks (``in_plane``)."""

    max_share: float
    in_plane: bool

    def __call__(self, image=None, dim=None, patch_size=None, **_) -> float:  # noqa: ANN001 - batchgeneratorsv2
        if self.in_plane and dim == 0:
            return 0.0
        return float(np.random.uniform(0.0, self.max_share)) * float(patch_size[dim])


@dataclass
class InPlaneScaling:
    """Scale sampler for SpatialTransform on thick-slice stacks: one zoom shared by the two in-plane axes, none
    through-plane (zooming across 8-10 mm slices would blank the patch's end slices and interpolate between
    slices). SpatialTransform asks axis 0 first, then 1 and 2: the draw happens at axis 0."""

    scaling: tuple[float, float]
    _drawn: list[float] = field(default_factory=lambda: [1.0])

    def __call__(self, image=None, dim=None, **_) -> float:  # noqa: ANN001 - batchgeneratorsv2 callback
        if dim == 0:
            self._drawn[0] = float(np.random.uniform(*self.scaling))
            return 1.0
        return self._drawn[0]


def build_transforms(params: AugmentationParams, patch_size: Sequence[int], *, anisotropic: bool,
                     ds_scales: Sequence[Sequence[float]] | None,
                     synchronize_channels: bool = False) -> ComposeTransforms:
    """Per-sample transform pipeline: spatial (cropping the final patch), intensity, mirroring, DS targets.

    ``synchronize_channels``: one intensity change for all channels, for channels that are one image (the
    neighbouring slices a 2d configuration with context slices sees: at inference they share one intensity
    mapping, so training must not teach the network that they differ; with several modalities and context
    slices, the modalities are then synchronised too); otherwise each channel (modality) draws its own."""
    dim = len(patch_size)
    in_plane = in_plane_only(dim, anisotropic)
    rot = math.radians(params.rotation_deg if (dim == 2 or in_plane) else params.rotation_deg_3d)

    rotation = RandomRotation(rot, in_plane)
    transforms = [SpatialTransform(
        tuple(patch_size), 0, random_crop=False, p_elastic_deform=params.p_elastic, elastic_deform_scale=ELASTIC_SCALE,
        elastic_deform_magnitude=ElasticMagnitude(ELASTIC_MAX_SHARE, in_plane), p_rotation=params.p_rotation,
        rotation=rotation, p_scaling=params.p_scaling,
        scaling=InPlaneScaling(tuple(params.scaling)) if in_plane else params.scaling,
        p_synchronize_scaling_across_axes=0 if in_plane else 1, bg_style_seg_sampling=False, mode_seg="bilinear",
    )]
    sync = synchronize_channels
    # each channel is blurred (made low-resolution) with probability 1/2; synchronised channels all together,
    # as often as one channel alone would be
    per_channel, halved = (1, 0.5) if sync else (0.5, 1)
    intensity = [
        (params.p_noise, GaussianNoiseTransform(params.noise_variance, p_per_channel=1, synchronize_channels=True)),
        (params.p_blur * halved, GaussianBlurTransform(params.blur_sigma, synchronize_channels=sync,
                                                       synchronize_axes=False, p_per_channel=per_channel)),
        (params.p_brightness, MultiplicativeBrightnessTransform(BGContrast(params.brightness),
                                                                synchronize_channels=sync, p_per_channel=1)),
        (params.p_contrast, ContrastTransform(BGContrast(params.contrast), preserve_range=True,
                                              synchronize_channels=sync, p_per_channel=1)),
        (params.p_low_resolution * halved, SimulateLowResolutionTransform(
            params.low_resolution_scale, synchronize_channels=sync, synchronize_axes=True,
            ignore_axes=(0,) if in_plane else None, allowed_channels=None, p_per_channel=per_channel)),
        (params.p_gamma_inverted, GammaTransform(BGContrast(params.gamma), p_invert_image=1, synchronize_channels=sync,
                                                 p_per_channel=1, p_retain_stats=1)),
        (params.p_gamma, GammaTransform(BGContrast(params.gamma), p_invert_image=0, synchronize_channels=sync,
                                        p_per_channel=1, p_retain_stats=1)),
    ]
    transforms += [RandomTransform(t, apply_probability=p) for p, t in intensity if p > 0]
    if params.mirror:
        transforms.append(MirrorTransform(allowed_axes=(1, 2) if in_plane else tuple(range(dim))))
    if ds_scales is not None:
        transforms.append(DownsampleSegForDSTransform(ds_scales=[list(s) for s in ds_scales]))
    return ComposeTransforms(transforms)


def with_overrides(params: AugmentationParams, **overrides) -> AugmentationParams:
    """A preset with some fields changed (e.g. elastic deformation switched on)."""
    return replace(params, **overrides)
