"""The disagreement score comes from the passes the prediction already makes and changes nothing else."""
import math

import numpy as np
import torch
from torch import nn

from autocmr.inference.sliding_window import (MemberSpread, disagreement_score, predict_logits,
                                              predict_logits_and_spread)


class _Asymmetric(nn.Module):
    """A fixed random conv net whose output changes under flips (so mirrored members disagree)."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, classes, kernel_size=5, padding=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ramp = torch.linspace(0, 3, x.shape[-1]).expand_as(x)  # breaks the flip symmetry
        return self.conv(x + ramp) * 3


def test_spread_leaves_the_logits_unchanged_and_measures_mirror_disagreement():
    data = torch.from_numpy(np.random.default_rng(0).normal(size=(1, 3, 40, 36)).astype(np.float32))
    kwargs = dict(patch_size=(32, 32), num_classes=4, step=0.5, tile_batch=4)
    net = _Asymmetric().eval()
    plain = predict_logits(net, data, mirror_axes=(0, 1), **kwargs)
    logits, spread = predict_logits_and_spread(net, data, mirror_axes=(0, 1), **kwargs)
    assert torch.allclose(plain, logits, atol=1e-5)
    assert spread.members == 4
    assert spread.sum_probabilities.shape == (4, 3, 40, 36) and spread.sum_squares.shape == (3, 40, 36)
    assert torch.allclose(spread.sum_probabilities.sum(dim=0), torch.full((3, 40, 36), 4.0), atol=1e-4)
    probabilities = torch.softmax(logits, dim=0)
    score = disagreement_score(spread, probabilities)
    assert 0 < score < 10
    _, single = predict_logits_and_spread(net, data, mirror_axes=(), **kwargs)
    assert math.isnan(disagreement_score(single, probabilities))  # one member: nothing to compare


def test_identical_members_score_zero_and_opposite_members_score_high():
    probs = torch.zeros(2, 1, 4, 4)
    probs[1] = 1.0  # every voxel foreground
    agree = MemberSpread(probs * 2, (probs * probs).sum(0) * 2, 2)
    assert disagreement_score(agree, probs) == 0.0
    other = torch.zeros_like(probs)
    other[0] = 1.0
    split = MemberSpread(probs + other, (probs * probs).sum(0) + (other * other).sum(0), 2)
    assert disagreement_score(split, probs) > 0.4  # variance 0.5 per voxel


def test_predictor_gives_the_same_probabilities_with_its_uncertainty(tiny_model_dir):
    from autocmr.inference.predictor import PredictorOptions
    from autocmr.io.orientation import canonical_reorientation
    from autocmr.testing.phantoms import make_phantom_case

    predictor = PredictorOptions(device="cpu", mirror=True).build(tiny_model_dir)
    case = make_phantom_case(5, fov_mm=160.0)
    pre, _ = predictor.preprocess(case.image[None], case.geometry.spacing_zyx,
                                  canonical_reorientation(case.geometry))
    probabilities, uncertainty = predictor.probabilities_and_uncertainty(pre)
    assert torch.allclose(probabilities, predictor.probabilities(pre), atol=1e-5)
    assert math.isfinite(uncertainty) and uncertainty >= 0
    prediction = predictor.predict_array(case.image, case.geometry.spacing_zyx)
    assert math.isfinite(prediction.uncertainty)
