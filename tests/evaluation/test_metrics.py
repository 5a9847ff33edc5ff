"""Per-case metrics: known answers on hand-built masks, a brute-force check, and SimpleITK on real ACDC masks."""
from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage
from scipy.spatial.distance import cdist

from autocmr.dataset.labels import ACDC_TO_AUTOCMR, AUTOCMR_LABELS, remap_labels
from autocmr.evaluation.metrics import case_metrics, directed_surface_distances, surface
from autocmr.io.image import read_image

FOREGROUND = {k: v for k, v in AUTOCMR_LABELS.items() if v}
ONE = {"X": 1}


def _sphere(shape, spacing, centre_mm, radius_mm):
    grids = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij")
    return (sum((g - c) ** 2 for g, c in zip(grids, centre_mm)) <= radius_mm**2).astype(np.uint8)


def test_slabs_offset_through_plane_have_every_distance_equal_to_the_offset():
    # One-voxel-thick slabs are all surface; each voxel's nearest counterpart is k slices away.
    spacing, k = (3.0, 0.8, 1.7), 2
    ref = np.zeros((8, 6, 7), np.uint8)
    pred = np.zeros_like(ref)
    ref[2, 1:5, 1:6] = 1
    pred[2 + k, 1:5, 1:6] = 1
    m = case_metrics(ref, pred, spacing, ONE)["X"]
    assert m["dice"] == 0.0 and m["iou"] == 0.0
    for name in ("hd", "hd95", "assd"):
        assert m[name] == pytest.approx(k * spacing[0])
    assert m["vol_ref_ml"] == pytest.approx(20 * 3.0 * 0.8 * 1.7 / 1000)


def test_boxes_offset_in_plane_give_known_overlap_and_hausdorff():
    spacing, k = (3.0, 1.0, 2.0), 2
    ref = np.zeros((8, 9, 12), np.uint8)
    ref[2:6, 2:7, 2:8] = 1  # 4 x 5 x 6 voxels
    pred = np.roll(ref, k, axis=2)
    m = case_metrics(ref, pred, spacing, ONE)["X"]
    assert m["dice"] == pytest.approx(2 * 4 / 12)  # 4 of 6 columns overlap
    assert m["iou"] == pytest.approx(4 / 8)
    assert m["hd"] == pytest.approx(k * spacing[2])  # the trailing face to the leading face of the other box
    assert 0 < m["assd"] < m["hd95"] <= m["hd"]


def test_identical_masks_score_perfectly():
    ref = _sphere((12, 20, 20), (2.0, 1.0, 1.0), (12, 10, 10), 7)
    m = case_metrics(ref, ref.copy(), (2.0, 1.0, 1.0), ONE)["X"]
    assert (m["dice"], m["iou"], m["hd"], m["hd95"], m["assd"]) == (1.0, 1.0, 0.0, 0.0, 0.0)


@pytest.mark.parametrize("spacing, axis, shift", [((1.0, 1.0, 1.0), 2, 3), ((2.0, 1.0, 1.0), 0, 2)])
def test_shifted_sphere_matches_geometry(spacing, axis, shift):
    shape, radius = (30, 30, 30), 10.0
    centre = [n * s / 2 for n, s in zip(shape, spacing)]
    ref = _sphere(shape, spacing, centre, radius)
    pred = np.roll(ref, shift, axis=axis)
    m = case_metrics(ref, pred, spacing, ONE)["X"]
    d = shift * spacing[axis]
    # Two spheres of radius r at distance d overlap by pi (4r + d)(2r - d)^2 / 12 (continuous geometry).
    expected_dice = math.pi * (4 * radius + d) * (2 * radius - d) ** 2 / 12 / (4 / 3 * math.pi * radius**3)
    assert m["dice"] == pytest.approx(expected_dice, abs=0.02)
    assert m["hd"] == pytest.approx(d)  # an exact translate: the poles are d apart, nothing farther
    assert m["hd95"] <= d and m["assd"] < d
    assert m["vol_ref_ml"] == pytest.approx(4 / 3 * math.pi * radius**3 / 1000, rel=0.03)


def test_empty_classes_have_documented_values():
    ref = np.zeros((4, 6, 6), np.uint8)
    pred = np.zeros_like(ref)
    ref[1:3, 1:4, 1:4] = 1  # LV only in the reference (a miss)
    pred[1:3, 2:5, 2:5] = 2  # MYO only in the prediction (a false positive); RV absent from both
    m = case_metrics(ref, pred, (5.0, 1.5, 1.5), FOREGROUND)
    for name in ("LV", "MYO"):
        assert (m[name]["dice"], m[name]["iou"]) == (0.0, 0.0)
        assert all(math.isnan(m[name][k]) for k in ("hd", "hd95", "assd"))
    assert m["RV"] == {"dice": 1.0, "iou": 1.0, "hd": 0.0, "hd95": 0.0, "assd": 0.0,
                       "vol_ref_ml": 0.0, "vol_pred_ml": 0.0}
    assert m["LV"]["vol_ref_ml"] == pytest.approx(18 * 5.0 * 1.5 * 1.5 / 1000)
    assert m["LV"]["vol_pred_ml"] == 0.0


def test_background_entry_is_skipped_and_bad_input_rejected():
    ref = np.zeros((3, 4, 4), np.uint8)
    assert set(case_metrics(ref, ref, (1, 1, 1), AUTOCMR_LABELS)) == {"LV", "MYO", "RV"}
    with pytest.raises(ValueError, match="shape"):
        case_metrics(ref, ref[:2], (1, 1, 1), ONE)
    with pytest.raises(ValueError, match="spacing"):
        case_metrics(ref, ref, (1, 1), ONE)


def _brute_surface(mask):
    # Independent of scipy's erosion: a voxel is interior when all six face neighbours are foreground.
    padded = np.pad(mask.astype(bool), 1)
    interior = np.ones(mask.shape, bool)
    core = tuple(slice(1, -1) for _ in range(mask.ndim))
    for axis in range(mask.ndim):
        for step in (-1, 1):
            interior &= np.roll(padded, step, axis=axis)[core]
    return mask.astype(bool) & ~interior


def _brute_metrics(ref, pred, spacing):
    pa = np.argwhere(_brute_surface(ref)) * spacing
    pb = np.argwhere(_brute_surface(pred)) * spacing
    d = cdist(pa, pb)
    dab, dba = d.min(axis=1), d.min(axis=0)
    return {"hd": max(dab.max(), dba.max()), "hd95": max(np.percentile(dab, 95), np.percentile(dba, 95)),
            "assd": (dab.sum() + dba.sum()) / (dab.size + dba.size)}


def test_distances_match_brute_force_including_masks_touching_the_border():
    rng = np.random.default_rng(3)
    spacing = np.array([4.0, 1.3, 0.9])
    for _ in range(3):
        ref = ndimage.binary_opening(rng.random((6, 14, 15)) > 0.45).astype(np.uint8)
        pred = ndimage.binary_dilation(np.roll(ref, 1, axis=1)).astype(np.uint8)
        assert ref[0].any() or ref[-1].any() or ref[:, 0].any()  # the border case is exercised
        np.testing.assert_array_equal(surface(ref), _brute_surface(ref))
        got = case_metrics(ref, pred, spacing, ONE)["X"]
        for name, value in _brute_metrics(ref, pred, spacing).items():
            assert got[name] == pytest.approx(value, rel=1e-9), name


def _sitk_reference(ref, pred, spacing_xyz):
    """Independent metrics with SimpleITK for one binary class (contours of the one-voxel-padded masks)."""
    def image(array):
        img = sitk.GetImageFromArray(array.astype(np.uint8))
        img.SetSpacing(spacing_xyz)
        return img

    overlap = sitk.LabelOverlapMeasuresImageFilter()
    overlap.Execute(image(ref), image(pred))
    contour = sitk.BinaryContourImageFilter()
    contour.SetFullyConnected(False)  # face connectivity, as autocmr's surface
    contour.SetForegroundValue(1)
    ca, cb = contour.Execute(image(np.pad(ref, 1))), contour.Execute(image(np.pad(pred, 1)))
    hausdorff = sitk.HausdorffDistanceImageFilter()
    hausdorff.Execute(ca, cb)

    def distance_to(c):
        return np.abs(sitk.GetArrayFromImage(sitk.SignedMaurerDistanceMap(
            c, insideIsPositive=False, squaredDistance=False, useImageSpacing=True)))

    sa, sb = sitk.GetArrayFromImage(ca).astype(bool), sitk.GetArrayFromImage(cb).astype(bool)
    dab, dba = distance_to(cb)[sa], distance_to(ca)[sb]
    return {"dice": overlap.GetDiceCoefficient(1), "iou": overlap.GetJaccardCoefficient(1),
            "hd": hausdorff.GetHausdorffDistance(),
            "hd95": max(np.percentile(dab, 95), np.percentile(dba, 95)),
            "assd": (dab.sum() + dba.sum()) / (dab.size + dba.size)}


def _perturb(ref):
    """Shift in-plane, erode the myocardium in-plane and drop the RV from the most apical slice with RV."""
    pred = np.roll(ref, (1, 2), axis=(1, 2)).copy()
    myo = pred == AUTOCMR_LABELS["MYO"]
    pred[myo & ~ndimage.binary_erosion(myo, structure=np.ones((1, 3, 3), bool))] = 0
    rv_slices = np.flatnonzero((pred == AUTOCMR_LABELS["RV"]).any(axis=(1, 2)))
    pred[rv_slices[-1]][pred[rv_slices[-1]] == AUTOCMR_LABELS["RV"]] = 0
    return pred


@pytest.mark.parametrize("patient", ["patient001", "patient061", "patient085"])
def test_agrees_with_simpleitk_on_real_acdc_masks(acdc_root, patient):
    path = sorted((acdc_root / patient).glob(f"{patient}_frame*_gt.nii.gz"))[0]
    array, geometry = read_image(path)
    ref = remap_labels(array, ACDC_TO_AUTOCMR, source=str(path))
    pred = _perturb(ref)
    got = case_metrics(ref, pred, geometry.spacing_zyx, FOREGROUND)
    for name, value in FOREGROUND.items():
        expected = _sitk_reference(ref == value, pred == value, geometry.spacing)
        assert 0.3 < got[name]["dice"] < 1.0  # a real, imperfect overlap
        for metric, v in expected.items():
            # ITK's Maurer map works in float32: agree to ~1e-4 mm.
            assert got[name][metric] == pytest.approx(v, rel=1e-5, abs=1e-4), (name, metric)


def test_a_single_slice_is_scored_by_its_contours_like_the_2d_image():
    yy, xx = np.mgrid[:64, :64]
    a = (yy - 30) ** 2 + (xx - 30) ** 2 <= 15 ** 2
    b = (yy - 30) ** 2 + (xx - 33) ** 2 <= 15 ** 2  # shifted by 3 pixels
    flat = directed_surface_distances(a, b, (1.5, 1.5))
    stacked = directed_surface_distances(a[None], b[None], (8.0, 1.5, 1.5))
    for d_flat, d_stacked in zip(flat, stacked):
        np.testing.assert_allclose(np.sort(d_stacked), np.sort(d_flat))
    assert flat[0].max() == pytest.approx(3 * 1.5)  # the contour moved by 3 pixels
