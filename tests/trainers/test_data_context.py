"""The 2D patch sampler with through-plane context (2.5D)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from autocmr.trainers.augmentation import build_transforms, preset, with_overrides
from autocmr.trainers.data import PatchSampler
from autocmr.trainers.loader import BatchStream


class _PlaneCache:
    """One case whose slice z is the constant z + 1 (so a channel tells which slice it came from)."""

    def __init__(self, slices=6):
        data = np.broadcast_to((np.arange(slices, dtype=np.float32) + 1)[None, :, None, None],
                               (1, slices, 40, 40)).copy()
        seg = np.zeros((1, slices, 40, 40), np.int8)
        seg[0, 0, 30:35, 30:35] = 1
        seg[0, slices - 1, 5:10, 5:10] = 1
        self.item = (data, seg, {1: np.argwhere(seg[0] == 1)})

    def get(self, case_id):
        return self.item


def _sampler(k, batch_size=8):
    return PatchSampler(_PlaneCache(), ["a"], dim=2, sample_size=(16, 16), batch_size=batch_size, oversampling=0.5,
                        foreground_labels=[1], context_slices=k)


def test_context_draw_has_three_times_the_channels_and_its_middle_is_the_plain_draw():
    plain_images, plain_segs = _sampler(0).sample(np.random.default_rng(4))
    images, segs = _sampler(1).sample(np.random.default_rng(4))
    assert plain_images.shape == (8, 1, 16, 16) and images.shape == (8, 3, 16, 16)
    np.testing.assert_array_equal(images[:, 1], plain_images[:, 0])
    np.testing.assert_array_equal(segs, plain_segs)  # the label stays the centre slice's


def test_context_channels_hold_the_neighbouring_slices_or_zeros_at_the_stack_ends():
    images, _ = _sampler(1, batch_size=16).sample(np.random.default_rng(1))
    slices = 6
    seen_edge = False
    for sample in images:
        inside = sample[1] != 0  # in-plane voxels of the image (not crop padding)
        z = int(sample[1][inside][0]) - 1
        below, above = (z if z > 0 else 0), (z + 2 if z < slices - 1 else 0)
        assert (sample[0][inside] == below).all() and (sample[2][inside] == above).all()
        seen_edge |= z in (0, slices - 1)
    assert seen_edge  # forced foreground sits on the first and last slices, so the edges are exercised


def test_augmentation_deforms_all_context_channels_alike():
    params = with_overrides(preset("none"), p_rotation=1.0, p_scaling=1.0, mirror=True)
    transforms = build_transforms(params, (16, 16), anisotropic=False, ds_scales=[[1, 1]])
    sampler = PatchSampler(_PlaneCache(), ["a"], dim=2, sample_size=(24, 24), batch_size=4, oversampling=0.5,
                           foreground_labels=[1], context_slices=1)
    image = BatchStream(sampler, transforms, seed=3).batch(0)["image"]
    assert image.shape == (4, 3, 16, 16)
    # channel j is (plane value) x (the deformed footprint of the image); interpolation is linear in the input, so
    # one deformation for all channels keeps them proportional, voxel by voxel, at the planes' values
    for sample in image:
        plane = sample[1][sample[1] > 0.5]
        z = round(float(plane.max()))  # the centre slice's value (z + 1 in the case)
        assert (sample[1] > 0.5).any()
        footprint = sample[1] / z
        for j, value in ((0, z - 1), (2, z + 1 if z < 6 else 0)):
            torch.testing.assert_close(sample[j], footprint * value, atol=1e-4, rtol=1e-4)


def test_context_needs_a_2d_sampler():
    with pytest.raises(ValueError, match="dim 2"):
        PatchSampler(_PlaneCache(), ["a"], dim=3, sample_size=(2, 16, 16), batch_size=2, oversampling=0.5,
                     foreground_labels=[1], context_slices=1)
