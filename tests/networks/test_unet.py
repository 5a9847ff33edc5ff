"""Network shapes for several plans, deep supervision, and the planner's cost estimates."""
from __future__ import annotations

import pytest
import torch

from autocmr.networks.unet import activation_elements, build_network, stage_shapes, training_flops
from autocmr.planners.topology import fit_patch


@pytest.mark.parametrize("spacing,patch,dim", [
    ((1.5, 1.5), (64, 48), 2),
    ((1.0, 1.0), (32, 32), 2),
    ((10.0, 1.5, 1.5), (8, 48, 40), 3),
    ((1.0, 1.0, 1.0), (16, 16, 16), 3),
])
def test_output_shapes_and_deep_supervision(spacing, patch, dim):
    topology, patch = fit_patch(spacing, patch, base_features=4, max_features=16, max_stages=5)
    net = build_network(topology, in_channels=2, num_classes=4)
    x = torch.randn((2, 2) + tuple(patch))
    net.train()
    outs = net(x)
    assert isinstance(outs, list) and len(outs) == topology.n_stages - 1
    assert outs[0].shape == (2, 4) + tuple(patch)
    expected = stage_shapes(topology, patch)
    for out, shape in zip(outs, expected):
        assert tuple(out.shape[2:]) == shape
    net.eval()
    with torch.no_grad():
        single = net(x)
    assert isinstance(single, torch.Tensor) and single.shape == (2, 4) + tuple(patch)


def test_blocks_are_conv_instance_norm_leaky_relu():
    topology, _ = fit_patch((1.0, 1.0), (32, 32), base_features=4, max_features=8, max_stages=3)
    net = build_network(topology, 1, 3)
    block = net.encoder[0][0]
    conv, norm, act = block
    assert isinstance(conv, torch.nn.Conv2d) and isinstance(act, torch.nn.LeakyReLU)
    assert act.negative_slope == pytest.approx(0.01)
    # GroupNorm with one group per channel == instance norm with affine parameters
    x = torch.randn(3, 4, 9, 7)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2)
        norm.bias.uniform_(-1, 1)
        ref = torch.nn.functional.instance_norm(x, weight=norm.weight, bias=norm.bias, eps=norm.eps)
        assert torch.allclose(norm(x), ref, atol=1e-5)


def test_cost_estimates_grow_with_patch_and_features():
    small, p1 = fit_patch((1.0, 1.0), (64, 64), base_features=8, max_features=64, max_stages=5)
    big, p2 = fit_patch((1.0, 1.0), (128, 128), base_features=16, max_features=64, max_stages=5)
    assert activation_elements(big, p2) > 4 * activation_elements(small, p1)
    assert training_flops(big, p2) > 8 * training_flops(small, p1)
