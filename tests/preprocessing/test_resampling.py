"""Resampling: shapes, round trips, and label maps that never gain a class."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from autocmr.preprocessing.cropping import crop, nonzero_bbox, uncrop
from autocmr.preprocessing.normalization import normalize
from autocmr.preprocessing.resampling import (argmax_resampled, resample_image, resample_label,
                                              resample_probabilities, target_shape)
from autocmr.testing.phantoms import make_phantom_case


def test_target_shape_follows_spacing_ratio():
    assert target_shape((10, 200, 180), (10.0, 1.25, 1.25), (5.0, 1.5625, 1.5625)) == (20, 160, 144)
    assert target_shape((1, 3, 3), (1.0, 1.0, 1.0), (10.0, 10.0, 10.0)) == (1, 1, 1)


@pytest.mark.parametrize("new_spacing", [(None, 1.0, 1.0), (None, 2.2, 2.2), (None, 1.3, 1.7), (5.0, 1.4, 1.4)])
def test_label_round_trip_keeps_classes_and_most_voxels(new_spacing):
    case = make_phantom_case(4, fov_mm=160)
    sp = case.geometry.spacing_zyx
    in_plane_only = new_spacing[0] is None
    new_spacing = (sp[0] if in_plane_only else new_spacing[0],) + new_spacing[1:]
    shape = target_shape(case.label.shape, sp, new_spacing)
    there = resample_label(case.label, shape, anisotropic=True)
    assert set(np.unique(there)) <= set(np.unique(case.label))
    back = resample_label(there, case.label.shape, anisotropic=True)
    assert set(np.unique(back)) <= set(np.unique(case.label))
    assert (back == case.label).mean() > 0.97
    # in-plane resampling preserves every class' volume to a few percent (through-plane nearest
    # neighbour duplicates or drops whole slices, so its volumes are only checked by the round trip)
    for cls in (1, 2, 3) if in_plane_only else ():
        v_ref = (case.label == cls).sum() * np.prod(sp)
        v_new = (there == cls).sum() * np.prod(new_spacing)
        assert abs(v_new - v_ref) / v_ref < 0.06


def test_label_never_gains_a_class_absent_from_the_input():
    label = np.zeros((4, 30, 30), np.int16)
    label[:, 5:15, 5:15] = 1
    label[:, 15:25, 15:25] = 3  # no class 2 anywhere
    out = resample_label(label, (7, 47, 51), anisotropic=False)
    assert set(np.unique(out)) == {0, 1, 3}


def test_label_ties_at_a_2x_reduction_do_not_erode_structures():
    # At exactly 2x every output voxel averages a 2x2 block: a block half inside a structure is a tie between
    # it and its neighbour. Ties went to the lowest class (background), shrinking every structure.
    rng = np.random.default_rng(0)
    ratios = {2: [], 3: []}
    yy, xx = np.mgrid[:128, :128]
    for _ in range(10):
        cy, cx = rng.uniform(55, 73, 2)
        r = np.hypot(yy - cy, xx - cx)
        seg = np.zeros((1, 128, 128), np.int16)
        seg[0][r < 30] = 2
        seg[0][r < 20] = 3  # cavity inside a myocardium ring
        out = resample_label(seg, (1, 64, 64), anisotropic=True)
        for cls in ratios:
            ratios[cls].append((out == cls).sum() * 4 / (seg == cls).sum())
    for cls, values in ratios.items():
        assert abs(np.mean(values) - 1) < 0.005, (cls, np.mean(values))
    line = np.zeros((1, 40, 40), np.int16)
    line[0, 20, 5:35] = 2  # one voxel thick
    assert (resample_label(line, (1, 25, 25), anisotropic=True) == 2).sum() > 0


def test_through_plane_is_nearest_for_anisotropic_data():
    image = np.zeros((1, 4, 8, 8), np.float32)
    for z in range(4):
        image[0, z] = z * 10.0
    out = resample_image(image, (8, 8, 8), anisotropic=True)
    assert set(np.unique(out)) == {0.0, 10.0, 20.0, 30.0}  # no values between slices
    linear = resample_image(image, (8, 8, 8), anisotropic=False)
    assert len(np.unique(linear)) > 4


def test_image_in_plane_cubic_round_trip_is_close():
    case = make_phantom_case(1, fov_mm=160)
    data = normalize(case.image[None], ("zscore",), (False,), None)
    up = resample_image(data, (data.shape[1], data.shape[2] * 2, data.shape[3] * 2), anisotropic=True)
    down = resample_image(up, data.shape[1:], anisotropic=True)
    assert np.abs(down - data).mean() < 0.05


def test_argmax_resampled_equals_full_resampling_then_argmax():
    probs = torch.softmax(torch.randn(4, 5, 20, 24), dim=0)
    direct = resample_probabilities(probs, (9, 33, 41), anisotropic=True).argmax(0).numpy()
    chunked = argmax_resampled(probs, (9, 33, 41), anisotropic=True, chunk_slices=2)
    assert np.array_equal(direct.astype(np.uint8), chunked)


def test_crop_uncrop_round_trip_and_all_zero_image():
    data = np.zeros((1, 5, 20, 20), np.float32)
    data[0, 1:4, 3:17, 5:9] = 1
    box = nonzero_bbox(data)
    assert box == ((1, 4), (3, 17), (5, 9))
    assert np.array_equal(uncrop(crop(data, box), box, data.shape[1:]), data)
    assert nonzero_bbox(np.zeros((1, 2, 3, 4))) == ((0, 2), (0, 3), (0, 4))


def test_zscore_with_mask_leaves_padding_at_zero():
    data = np.zeros((1, 2, 10, 10), np.float32)
    data[0, :, 2:8, 2:8] = np.random.default_rng(0).normal(100, 20, (2, 6, 6))
    out = normalize(data, ("zscore",), (True,), None)
    inside = out[0, :, 2:8, 2:8]
    assert abs(inside.mean()) < 1e-4 and abs(inside.std() - 1) < 1e-3
    assert (out[0, :, :2] == 0).all()


@pytest.mark.parametrize("scale", [1e33, 1e20, 1e-30, 1e-42])
def test_zscore_is_the_same_at_any_stored_intensity_scale(scale):
    """Images exported at extreme float scales normalise like the original (float32 statistics overflowed
    above ~1e19 and vanished below ~1e-23)."""
    image = np.random.default_rng(1).gamma(2.0, 50.0, (1, 3, 12, 12)).astype(np.float32)
    expected = normalize(image, ("zscore",), (False,), None)
    scaled = (image.astype(np.float64) * scale).astype(np.float32)
    np.testing.assert_allclose(normalize(scaled, ("zscore",), (False,), None), expected,
                               atol=2e-2 if scale < 1e-38 else 1e-4)  # 1e-42 is a float32 denormal: 3 digits


@pytest.mark.parametrize("use_mask", [False, True])
def test_zscore_needs_no_float64_copies_of_the_image(use_mask):
    import tracemalloc

    image = np.random.default_rng(2).normal(300, 50, (1, 8, 256, 256)).astype(np.float32)
    image[0, :, :20] = 0  # something outside the mask
    tracemalloc.start()
    try:
        normalize(image, ("zscore",), (use_mask,), None)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # the float64 deviation inside std (2x), the output (1x), the mask and its values; was 4-5x the image
    assert peak < 3.5 * image.nbytes, peak / image.nbytes


def test_masked_zscore_keeps_zeros_inside_the_field_of_view():
    # an integer image: tissue at ~300, air at the noise floor (0 to 3), zero padding around the acquisition
    rng = np.random.default_rng(3)
    data = np.zeros((1, 2, 40, 40), np.float32)
    data[0, :, 5:35, 5:35] = rng.choice([0, 1, 2, 3], size=(2, 30, 30), p=[0.2, 0.3, 0.3, 0.2])
    data[0, :, 12:28, 12:28] = rng.normal(300, 20, (2, 16, 16))
    air = np.zeros(data.shape[1:], bool)
    air[:, 9:31, 9:31] = True  # away from the acquisition's edge, where a chain of zeros reaches the padding
    air[:, 12:28, 12:28] = False
    out = normalize(data, ("zscore",), (True,), None)[0]
    zero_air, one_air = out[air & (data[0] == 0)], out[air & (data[0] == 1)]
    # air zeros normalise like the air around them (they were all set to 0, the tissue mean)
    assert zero_air.size > 20 and (zero_air == 0).mean() < 0.1, (zero_air == 0).mean()
    assert zero_air.mean() < one_air.mean() < -0.3
    assert (out[:, :5] == 0).all() and (out[:, :, 35:] == 0).all()  # padding stays 0
