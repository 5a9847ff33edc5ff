"""Sliding window, export to native space, postprocessing, harmonisation (no trained model needed)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from autocmr.inference.export import labels_to_native
from autocmr.inference.harmonisation import Harmoniser, build_reference, quantile_curve
from autocmr.inference.postprocessing import (decide_postprocessing, keep_largest_foreground,
                                              keep_largest_per_label)
from autocmr.inference.sliding_window import gaussian_importance, predict_logits, tile_starts
from autocmr.io.image import Geometry
from autocmr.io.orientation import store_permuted, to_canonical
from autocmr.planners.fingerprint import CaseFingerprint, Fingerprint
from autocmr.planners.planner import plan
from autocmr.planners.plans import IntensityStats
from autocmr.preprocessing.preprocessor import preprocess_arrays
from autocmr.testing.phantoms import make_phantom_case


class Echo(torch.nn.Module):
    """Returns a fixed function of the input as 'logits', so sliding-window results are predictable."""

    def forward(self, x):
        return torch.cat([x, 2 * x], dim=1)


def test_tiles_cover_the_image_with_half_overlap():
    assert tile_starts(100, 100) == [0]
    starts = tile_starts(256, 128)
    assert starts[0] == 0 and starts[-1] == 128 and len(starts) == 3
    assert all(b - a <= 64 for a, b in zip(starts, starts[1:]))
    g = gaussian_importance((32, 32))
    assert float(g.max()) == 1.0 and float(g.min()) > 0 and g[16, 16] > g[0, 0]


@pytest.mark.parametrize("dim", [2, 3])
def test_sliding_window_of_a_pointwise_network_reproduces_it_exactly(dim):
    data = torch.randn(1, 7, 45, 38)
    patch = (16, 16) if dim == 2 else (4, 16, 16)
    axes = (0, 1) if dim == 2 else (1, 2)
    out = predict_logits(Echo(), data, patch_size=patch, num_classes=2, mirror_axes=axes, tile_batch=5)
    assert out.shape == (2, 7, 45, 38)
    assert torch.allclose(out[0], data[0], atol=1e-5) and torch.allclose(out[1], 2 * data[0], atol=1e-5)


def _plans_for(case):
    sp = case.geometry.spacing_zyx
    fp = Fingerprint("Dataset900_T", {"background": 0, "LV": 1, "MYO": 2, "RV": 3}, {"0": "cineMRI"},
                     (CaseFingerprint("c", sp, case.image.shape, case.image.shape, (0, 1, 2, 3), 1.0),),
                     (IntensityStats(1, 1, 1, 0, 2, 0, 2),), "s")
    return plan(fp, target="cpu")


@pytest.mark.parametrize("axes,flips", [((0, 1, 2), (False,) * 3), ((2, 0, 1), (True, False, True)),
                                        ((1, 2, 0), (False, True, False))])
def test_export_returns_labels_to_the_stored_order_exactly(axes, flips):
    case = make_phantom_case(2, fov_mm=140, oblique=True)
    stored_img, geometry = store_permuted(case.image, case.geometry, axes, flips)
    stored_lab, _ = store_permuted(case.label, case.geometry, axes, flips)
    plans = _plans_for(case)
    for config in plans.configurations.values():
        data, spacing, reo = to_canonical(stored_img[None], geometry)
        seg = reo.apply(stored_lab)
        pre, pre_seg, props = preprocess_arrays(data, seg, spacing, plans, config)
        props["reorientation"] = reo.to_dict()
        onehot = torch.nn.functional.one_hot(torch.from_numpy(pre_seg.astype(np.int64)), 4).permute(3, 0, 1, 2).float()
        back = labels_to_native(onehot, props, plans, config)
        assert back.shape == stored_lab.shape
        assert (back == stored_lab).mean() > 0.995


def test_largest_component_steps():
    label = np.zeros((3, 20, 20), np.uint8)
    label[:, 2:10, 2:10] = 1
    label[:, 15:17, 15:17] = 1  # stray LV blob
    label[1, 2:10, 10:13] = 3  # RV touching the LV: same foreground component
    fg = keep_largest_foreground(label)
    assert (fg[:, 15:17, 15:17] == 0).all() and (fg == 3).any()
    per = keep_largest_per_label(label, [1, 3])
    assert (per[:, 15:17, 15:17] == 0).all()


def test_postprocessing_is_chosen_only_when_validation_shows_it_helps():
    ref = np.zeros((2, 20, 20), np.uint8)
    ref[:, 2:10, 2:10] = 1
    noisy = ref.copy()
    noisy[:, 15:17, 15:17] = 1
    decision = decide_postprocessing([(ref, noisy)], [1, 2, 3])
    assert decision.foreground_lcc and np.array_equal(decision.apply(noisy), ref)
    two_parts = np.zeros_like(ref)
    two_parts[:, 2:6, 2:6] = 1
    two_parts[:, 12:16, 12:16] = 1  # the reference itself has two components: LCC would hurt
    decision = decide_postprocessing([(two_parts, two_parts)], [1])
    assert not decision.foreground_lcc and decision.per_label_lcc == ()


def test_histogram_matching_undoes_a_synthetic_intensity_shift():
    rng = np.random.default_rng(0)
    train = [rng.gamma(2.0, 1.0, size=(1, 4, 30, 30)).astype(np.float32) for _ in range(5)]
    train = [(t - t.mean()) / t.std() for t in train]
    harmoniser = Harmoniser(tuple(np.asarray(c) for c in build_reference(train)))
    test = rng.gamma(2.0, 1.0, size=(1, 4, 30, 30)).astype(np.float32)
    shifted = np.sign(test) * np.abs(test) ** 1.8  # a gamma-like contrast change from another scanner
    shifted = (shifted - shifted.mean()) / shifted.std()
    matched = harmoniser.apply(shifted)
    ref_curve = np.asarray(build_reference(train)[0])
    err_before = np.abs(quantile_curve(shifted[0]) - ref_curve)[5:96].mean()
    err_after = np.abs(quantile_curve(matched[0]) - ref_curve)[5:96].mean()
    assert err_after < 0.25 * err_before
    assert np.all(np.diff(matched[0].ravel()[np.argsort(shifted[0].ravel())]) >= -1e-6)  # monotone map


def test_thick_slices_of_one_case_are_never_interpolated_across():
    from autocmr.preprocessing.resampling import through_plane_nearest

    assert through_plane_nearest(False, (10.0, 1.5, 1.4)) and not through_plane_nearest(False, (4.0, 1.5, 1.4))
    assert through_plane_nearest(True, (1.5, 1.5, 1.5))
    # A near-isotropic dataset (its 3d_fullres target is not anisotropic) with one 10 mm slice case in it.
    fp = Fingerprint("Dataset900_T", {"background": 0, "LV": 1, "MYO": 2, "RV": 3}, {"0": "cineMRI"},
                     (CaseFingerprint("c", (2.0, 1.5, 1.5), (40, 64, 64), (40, 64, 64), (0, 1, 2, 3), 1.0),),
                     (IntensityStats(1, 1, 1, 0, 2, 0, 2),), "s")
    plans = plan(fp, target="cpu")
    config = plans.configurations["3d_fullres"]
    assert not config.resampling.anisotropic and config.spacing[0] == pytest.approx(2.0)
    rng = np.random.default_rng(0)
    data = (1 + rng.random((1, 8, 1, 1)) * np.ones((1, 8, 64, 64))).astype(np.float32)  # one value per slice
    seg = np.zeros((8, 64, 64), np.uint8)
    seg[2:6, 20:40, 20:40] = 1
    geometry = Geometry((64, 64, 8), (1.5, 1.5, 10.0), (0.0, 0.0, 0.0), (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))
    data, spacing, reo = to_canonical(data, geometry)
    pre, pre_seg, props = preprocess_arrays(data, reo.apply(seg), spacing, plans, config)
    props["reorientation"] = reo.to_dict()
    assert pre.shape[1] == 40  # 8 slices of 10 mm on a 2 mm grid
    slice_values = np.unique(np.round(pre[0].mean(axis=(1, 2)), 5))
    assert len(slice_values) == 8  # copies of the 8 slices, no blend of two neighbours
    onehot = torch.nn.functional.one_hot(torch.from_numpy(pre_seg.astype(np.int64)), 4).permute(3, 0, 1, 2).float()
    assert np.array_equal(labels_to_native(onehot, props, plans, config), seg)


def test_only_data_the_per_case_through_plane_rule_may_change_are_preprocessed_again(tmp_path):
    from dataclasses import replace

    from autocmr.dataset.raw import RawCase
    from autocmr.preprocessing.preprocessor import case_signature

    (tmp_path / "c_0000.nii.gz").write_bytes(b"x")
    case = RawCase("c", (tmp_path / "c_0000.nii.gz",), None)
    fp = Fingerprint("Dataset900_T", {"background": 0, "LV": 1}, {"0": "cineMRI"},
                     (CaseFingerprint("c", (2.0, 1.5, 1.5), (40, 64, 64), (40, 64, 64), (0, 1), 1.0),),
                     (IntensityStats(1, 1, 1, 0, 2, 0, 2),), "s")
    config = plan(fp, target="cpu").configurations["3d_fullres"]
    thick = replace(config, resampling=replace(config.resampling, anisotropic=True))
    assert case_signature(case, config) != case_signature(case, replace(thick, data_identifier=config.data_identifier))


def test_predict_array_refuses_what_the_file_paths_refuse(tiny_model_dir):
    """One NaN voxel spreads through the z-score and would empty the mask without a word; a blank image would
    give a noise mask. The in-memory API applies the policy of every file path."""
    from autocmr.errors import InputFileError
    from autocmr.inference.predictor import Predictor
    from tests.helpers import small_case

    case = small_case(3, slices=3)
    predictor = Predictor(tiny_model_dir, device="cpu", mirror=False)
    image = case.image.astype(np.float32)
    image[1, 2, 3] = np.nan
    with pytest.raises(InputFileError, match="1 voxels are NaN"):
        predictor.predict_array(image, case.geometry.spacing_zyx)
    with pytest.raises(InputFileError, match="all zero"):
        predictor.predict_array(np.zeros_like(image), case.geometry.spacing_zyx)
    clean = case.image.astype(np.float32)
    z, y, x = case.geometry.spacing_zyx
    # a negative or zero spacing would squash the image to one row on resampling (or divide by zero)
    for spacing in ((z, -y, x), (-z, y, x), (0.0, y, x), (z, float("nan"), x), (z, y)):
        with pytest.raises(InputFileError, match="voxel spacing"):
            predictor.predict_array(clean, spacing)
    with pytest.raises(InputFileError, match="9 values"):
        predictor.predict_array(clean, case.geometry.spacing_zyx, direction=(1.0, 0.0, 0.0))
    # the other phase gets the image's policy too (a model that reads it would spread the NaN to every logit)
    with pytest.raises(InputFileError, match=r"other phase.*1 voxels are NaN"):
        predictor.predict_array(clean, case.geometry.spacing_zyx, partner=image)
