"""2.5D inference: the sliding window feeds each slice with its neighbours; a k=1 model trains and predicts."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from autocmr.inference.fast_cine import CineOptions, _fast_probabilities
from autocmr.inference.predictor import Predictor
from autocmr.inference.sliding_window import predict_logits
from autocmr.planners.plans import Plans
from autocmr.testing.phantoms import make_phantom_case


class ChannelDifference(torch.nn.Module):
    """Pointwise 'logits' (slice above - slice below, centre slice) of a 3-channel (k=1) input."""

    def forward(self, x):
        assert x.shape[1] == 3
        return torch.stack([x[:, 2] - x[:, 0], x[:, 1]], dim=1)


def test_sliding_window_feeds_each_slice_with_its_neighbours_and_zeros_beyond_the_stack():
    data = torch.randn(1, 5, 37, 30)
    out = predict_logits(ChannelDifference(), data, patch_size=(16, 16), num_classes=2, mirror_axes=(0, 1),
                         tile_batch=7, context_slices=1)
    assert out.shape == (2, 5, 37, 30)
    padded = torch.cat([torch.zeros(1, 37, 30), data[0], torch.zeros(1, 37, 30)])
    torch.testing.assert_close(out[0], padded[2:] - padded[:-2], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[1], data[0], atol=1e-5, rtol=1e-5)


def test_sliding_window_context_needs_a_2d_patch():
    with pytest.raises(ValueError, match="2D patch"):
        predict_logits(ChannelDifference(), torch.zeros(1, 4, 16, 16), patch_size=(4, 16, 16), num_classes=2,
                       context_slices=1)


@pytest.fixture(scope="module")
def context_model(tmp_path_factory):
    from autocmr.testing.tiny_model import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("context_model"), n_subjects=5, iterations=3,
                           final_validation=True, context_slices=1)[0]


def test_predictor_of_a_k1_model_trains_validates_and_predicts_a_mask(context_model):
    plans = Plans.load(context_model / "plans.json")
    assert plans.configuration("2d").context_slices == 1
    assert list(context_model.glob("fold_0/validation/*")), "final validation (with context) wrote nothing"
    predictor = Predictor(context_model, device="cpu", mirror=False)
    assert predictor.networks[0].encoder[0][0][0].in_channels == 3 * len(plans.channel_names)
    case = make_phantom_case(7)
    prediction = predictor.predict_array(case.image, tuple(reversed(case.geometry.spacing)))
    assert prediction.label.shape == case.image.shape and prediction.label.dtype == np.uint8
    assert set(np.unique(prediction.label)) <= set(plans.labels.values())
    # the fast cine pass uses the same context
    pre, _ = predictor.preprocess(case.image[None], tuple(reversed(case.geometry.spacing)),
                                  _identity_reorientation(case))
    fast = _fast_probabilities(predictor, pre, CineOptions(fast_folds=1, fast_step=1.0))
    assert fast.shape == (len(plans.labels),) + pre.shape[1:]


def _identity_reorientation(case):
    from autocmr.io.image import Geometry
    from autocmr.io.orientation import canonical_reorientation

    g = case.geometry
    return canonical_reorientation(Geometry(g.size, g.spacing, g.origin, tuple(np.eye(3).ravel())))
