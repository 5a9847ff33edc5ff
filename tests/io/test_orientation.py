"""autocmr.io.orientation: any stored axis order and flip of one scan maps to the identical canonical array."""
from __future__ import annotations

from itertools import permutations, product

import numpy as np
import pytest

from autocmr.io.image import Geometry
from autocmr.io.orientation import Reorientation, canonical_reorientation, store_permuted, to_canonical

# A cine-like stack: 8 slices of 10 mm, 1.5 mm pixels, slightly rotated (oblique short axis).
ANGLE = np.deg2rad(20)
ROTATION = np.array([[np.cos(ANGLE), -np.sin(ANGLE), 0], [np.sin(ANGLE), np.cos(ANGLE), 0], [0, 0, 1]])


def _stack(spacing_xyz: tuple[float, float, float] = (1.5, 1.5, 10.0)) -> tuple[np.ndarray, Geometry]:
    array = np.arange(8 * 12 * 10, dtype=np.float32).reshape(8, 12, 10)  # (z, y, x), every voxel distinct
    geometry = Geometry(size=(10, 12, 8), spacing=spacing_xyz, origin=(-5.0, 20.0, 3.0),
                        direction=tuple(ROTATION.ravel()))
    return array, geometry


def test_apply_and_invert_are_inverse_and_keep_channel_axes() -> None:
    array = np.random.default_rng(0).random((2, 4, 5, 6))
    reo = Reorientation((2, 0, 1), (True, False, True))
    moved = reo.apply(array)
    assert moved.shape == (2, 6, 4, 5)
    np.testing.assert_array_equal(reo.invert(moved), array)


def test_spacing_and_dict_round_trip() -> None:
    reo = Reorientation((1, 2, 0), (False, True, False))
    assert reo.spacing((10.0, 1.5, 1.25)) == (1.5, 1.25, 10.0)
    assert Reorientation.from_dict(reo.to_dict()) == reo


@pytest.mark.parametrize("axes,flips", [(a, f) for a in permutations(range(3))
                                        for f in product([False, True], repeat=3)][::5])
def test_every_stored_orientation_gives_the_same_canonical_array(axes, flips) -> None:
    array, geometry = _stack()
    reference, spacing, _ = to_canonical(array, geometry)
    stored, stored_geometry = store_permuted(array, geometry, axes, flips)
    canonical, stored_spacing, reo = to_canonical(stored, stored_geometry)
    np.testing.assert_array_equal(canonical, reference)
    assert stored_spacing == pytest.approx(spacing)
    np.testing.assert_array_equal(reo.invert(canonical), stored)  # back to the file's own order, exactly


def test_anisotropic_stack_puts_the_thick_axis_first() -> None:
    array, geometry = _stack()
    stored, stored_geometry = store_permuted(array, geometry, (2, 0, 1), (False, True, False))
    _, spacing, _ = to_canonical(stored, stored_geometry)
    assert spacing[0] == pytest.approx(10.0)  # 2D models always see in-plane slices


def test_a_single_slice_keeps_its_slice_axis_first_whatever_its_spacing() -> None:
    # a coronal 2D export: one slice, its slice spacing written as 1 mm (not thicker than the pixels)
    coronal = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])  # ITK z (the slice) along world y
    geometry = Geometry(size=(192, 160, 1), spacing=(1.5, 1.5, 1.0), origin=(0.0, 0.0, 0.0),
                        direction=tuple(coronal.ravel()))
    array = np.random.default_rng(0).random(geometry.shape).astype(np.float32)
    canonical, spacing, _ = to_canonical(array, geometry)
    assert canonical.shape[0] == 1 and sorted(canonical.shape[1:]) == [160, 192]
    assert spacing[0] == pytest.approx(1.0)


def test_canonical_axes_point_in_the_positive_direction() -> None:
    flipped = Geometry(size=(4, 4, 4), spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0),
                       direction=(-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0))
    reo = canonical_reorientation(flipped)
    assert reo.axes == (0, 1, 2)
    assert reo.flips == (True, False, True)  # numpy axis 0 is ITK z, axis 2 is ITK x


def test_store_permuted_rejects_a_shape_that_does_not_match_the_geometry() -> None:
    array, geometry = _stack()
    with pytest.raises(ValueError, match="does not match geometry"):
        store_permuted(array[:-1], geometry, (0, 1, 2), (False, False, False))


@pytest.mark.parametrize("shape, spacing, axis", [
    ((10, 256, 216), (10.0, 1.5, 1.5), 0),  # a short-axis stack
    ((256, 216, 10), (1.5, 1.5, 8.0), 2),  # stored slice-last
    ((1, 256, 216), (1.0, 1.5, 1.5), 0),  # one slice whose export wrote 1 mm: still its slice axis
    ((1, 1, 216), (1.0, 1.5, 1.5), 1),  # two axes of size 1: the spacing decides
    ((8, 8, 8), (1.0, 1.0, 1.0), 0)])  # isotropic: the first
def test_through_plane_axis_without_a_header(shape, spacing, axis):
    from autocmr.io.orientation import through_plane_axis

    assert through_plane_axis(shape, spacing) == axis


def test_a_thin_slice_oblique_stack_a_2d_model_would_cut_across_is_named():
    """3.3 mm slices of 1.7 mm pixels (under the 2x that puts slices first) with the slice normal closest to the
    patient's x axis: canonical order follows the patient axes and puts an in-plane axis first."""
    from autocmr.io.orientation import slices_cut_across

    tilt = np.deg2rad(20)
    normal = np.array([np.cos(tilt), np.sin(tilt), 0.0])  # mostly patient x (left)
    u = np.array([-np.sin(tilt), np.cos(tilt), 0.0])
    v = np.cross(normal, u)
    direction = tuple(np.stack([u, v, normal], axis=1).ravel())  # ITK columns: x, y, z (slice) axes
    thin = Geometry((64, 64, 12), (1.7, 1.7, 3.3), (0.0, 0.0, 0.0), direction)
    assert "cuts across the slices" in slices_cut_across(thin)
    # thick slices go first whatever the orientation; slices along the patient's z axis come first by that axis
    assert slices_cut_across(Geometry((64, 64, 12), (1.7, 1.7, 8.0), (0.0, 0.0, 0.0), direction)) is None
    assert slices_cut_across(Geometry((64, 64, 12), (1.7, 1.7, 3.3), (0.0, 0.0, 0.0),
                                      tuple(np.eye(3).ravel()))) is None
    # an isotropic volume has no slices to cut across
    assert slices_cut_across(Geometry((64, 64, 64), (1.2, 1.2, 1.2), (0.0, 0.0, 0.0), direction)) is None
