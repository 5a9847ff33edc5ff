"""The voxel policy's label-map test: label maps at any scale are refused, images with few grey levels are not."""
from __future__ import annotations

import numpy as np
import pytest

from autocmr.errors import InputFileError
from autocmr.io.validity import check_voxels


def _labels() -> np.ndarray:
    labels = np.zeros((4, 40, 36), np.int16)
    labels[:, 10:20, 10:20], labels[:, 20:25, 10:20], labels[:, 25:30, 5:15] = 1, 2, 3
    return labels


@pytest.mark.parametrize("scaled, shown", [
    (_labels(), "0, 1, 2, 3"),  # as written by the annotation tool
    ((_labels() > 0).astype(np.uint8) * 255, "0, 255"),  # a binary mask exported for viewing
    (_labels() * 100, "0, 100, 200, 300"),  # labels scaled by a converter
    (_labels().astype(np.float32) * 1000.0, "0, 1000, 2000, 3000")])
def test_label_maps_at_any_scale_are_refused(scaled, shown):
    with pytest.raises(InputFileError, match=f"mask.nii.gz.*label map.*values {shown} only"):
        check_voxels(scaled, "mask.nii.gz")


def test_images_with_many_or_fractional_values_pass():
    rng = np.random.default_rng(0)
    image = rng.gamma(2.0, 60.0, (4, 40, 36)).round().astype(np.int16)  # hundreds of grey levels
    assert check_voxels(image, "image.nii.gz") == []
    few_fractional = (_labels().astype(np.float32) * 100.0 + 0.5)  # four values, not whole numbers
    assert check_voxels(few_fractional, "image.nii.gz") == []
    steps = (100 * np.arange(4)[:, None, None] + np.zeros((4, 40, 36))).astype(np.int16)  # a synthetic test image:
    assert check_voxels(steps, "steps.nii.gz") == []  # few values, but no background under most voxels
    cine = np.stack([image, image, np.zeros_like(image)])  # a zero-padded frame: named, not refused
    assert "frame(s) [2] of 3 are constant" in check_voxels(cine, "cine.nii.gz", frame_axis=0)[0]


def test_a_cine_with_a_nan_frame_is_refused_naming_the_frame():
    cine = np.random.default_rng(0).normal(size=(20, 2, 8, 8)).astype(np.float32)
    cine[7] = np.nan
    with pytest.raises(InputFileError, match=r"are NaN or infinite \(of 2560\) in frame\(s\) \[7\] of 20"):
        check_voxels(cine, "cine.nii.gz", frame_axis=0)
