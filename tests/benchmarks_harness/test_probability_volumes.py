"""benchmarks/probability_volumes.py: volumes from the mask and from the softmax, near the heart and overall."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
probability_volumes = pytest.importorskip("probability_volumes")

SPACING = (10.0, 1.0, 1.0)  # mm per voxel: 0.01 mL


def _probabilities(label: np.ndarray) -> np.ndarray:
    return np.stack([(label == c).astype(np.float32) for c in range(4)])


def test_one_hot_probabilities_give_the_mask_volumes():
    label = np.zeros((3, 40, 40), np.uint8)
    label[:, 10:20, 10:20] = 1
    label[:, 8:22, 8:10] = 2
    label[:, 10:20, 25:30] = 3
    volumes = probability_volumes.case_volumes(_probabilities(label), label, SPACING, near_mm=5.0)
    assert volumes["mask"] == pytest.approx({"LV": 3.0, "MYO": 0.84, "RV": 1.5})
    assert volumes["probability"] == pytest.approx(volumes["mask"])
    assert volumes["probability_all"] == pytest.approx(volumes["mask"])


def test_soft_border_counts_half_and_far_noise_only_in_the_whole_image_sum():
    label = np.zeros((1, 60, 60), np.uint8)
    label[0, 10:20, 10:20] = 1
    probs = _probabilities(label)
    # a ring of voxels just outside the LV, argmax background but LV at probability 0.4
    ring = np.zeros_like(label, bool)
    ring[0, 9:21, 9:21] = True
    ring[0, 10:20, 10:20] = False
    probs[1][ring], probs[0][ring] = 0.4, 0.6
    # far from the heart (40 voxels away) a patch of RV probability 0.3 that the argmax ignores
    probs[3][0, 50:55, 50:55], probs[0][0, 50:55, 50:55] = 0.3, 0.7
    volumes = probability_volumes.case_volumes(probs, label, SPACING, near_mm=5.0)
    assert volumes["mask"]["LV"] == pytest.approx(1.0)
    assert volumes["probability"]["LV"] == pytest.approx(1.0 + 0.4 * ring.sum() * 0.01)
    assert volumes["probability"]["RV"] == pytest.approx(0.0)
    assert volumes["probability_all"]["RV"] == pytest.approx(0.3 * 25 * 0.01)


def test_an_empty_prediction_has_no_heart_region():
    label = np.zeros((2, 10, 10), np.uint8)
    probs = _probabilities(label)
    probs[1], probs[0] = 0.2, 0.8
    volumes = probability_volumes.case_volumes(probs, label, SPACING, near_mm=5.0)
    assert volumes["probability"]["LV"] == 0.0
    assert volumes["probability_all"]["LV"] == pytest.approx(0.2 * 200 * 0.01)
