"""Patch placement "inside" (nnU-Net's rule): the final patch lies within the image where it fits and is centred
where it does not; "anywhere" (the default so far) may centre a patch on the image's edge."""
from __future__ import annotations

import numpy as np
import pytest

from autocmr.errors import ConfigurationError
from autocmr.trainers.data import PatchSampler
from autocmr.trainers.options import TrainOptions


class _Cache:
    """One case of ones (padding is 0), foreground label 1 on one corner voxel of every slice."""

    def __init__(self, shape):
        data = np.ones((1,) + shape, np.float32)
        seg = np.zeros((1,) + shape, np.int8)
        seg[0, :, 0, 0] = 1
        self.item = (data, seg, {1: np.argwhere(seg[0] == 1)})

    def get(self, case_id):
        return self.item


def _centre_crop(samples: np.ndarray, patch) -> np.ndarray:
    """What the spatial augmentation keeps of each sample: its centre, ``patch`` large."""
    spatial = samples.shape[2:]
    index = tuple(slice((n - p) // 2, (n - p) // 2 + p) for n, p in zip(spatial, patch))
    return samples[(slice(None), slice(None)) + index]


@pytest.mark.parametrize("dim, shape, sample, patch", [(2, (3, 40, 36), (24, 24), (16, 16)),
                                                       (3, (5, 40, 36), (3, 24, 24), (2, 16, 16))])
def test_inside_keeps_every_final_patch_in_the_image_and_anywhere_does_not(dim, shape, sample, patch):
    cache = _Cache(shape)
    kwargs = dict(dim=dim, sample_size=sample, batch_size=60, oversampling=0.0, foreground_labels=[1])
    inside = PatchSampler(cache, ["a"], final_patch=patch, **kwargs).sample(np.random.default_rng(0))[0]
    assert _centre_crop(inside, patch).min() == 1.0  # no padding in any final patch
    anywhere = PatchSampler(cache, ["a"], **kwargs).sample(np.random.default_rng(0))[0]
    assert _centre_crop(anywhere, patch).min() == 0.0  # some final patch reaches past the edge


def test_an_image_smaller_than_the_patch_is_centred_and_forced_samples_keep_their_voxel():
    cache = _Cache((3, 10, 40))  # y: 10 < 16
    sampler = PatchSampler(cache, ["a"], dim=2, sample_size=(16, 16), batch_size=20, oversampling=1.0,
                           foreground_labels=[1], final_patch=(16, 16))
    images, segs = sampler.sample(np.random.default_rng(1))
    rows = images[:, 0, :, 8] if images.ndim == 4 else images[:, 0, 0, :, 8]
    assert all(np.array_equal(np.flatnonzero(r), np.arange(3, 13)) for r in rows)  # 3 padded rows above, 3 below
    assert all(s.any() for s in segs)  # forced onto the corner voxel: moved inside, the voxel still in the patch


def test_patch_placement_is_checked():
    with pytest.raises(ConfigurationError, match="--patch-placement"):
        TrainOptions(patch_placement="edge")
    assert TrainOptions().patch_placement == "anywhere"
