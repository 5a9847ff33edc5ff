"""Through-plane context: neighbouring slices stacked as channels, zeros outside the stack."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from autocmr.preprocessing.context import slices_with_context


def _case(channels=2, slices=4):
    # value 100*c + 10*z + in-plane index: every (channel, slice) plane is recognisable
    c, z, y, x = np.meshgrid(np.arange(channels), np.arange(slices), np.arange(2), np.arange(3), indexing="ij")
    return (100 * c + 10 * z + 3 * y + x + 1).astype(np.float32)


def test_channels_are_slices_z_minus_k_to_z_plus_k_per_image_channel_with_zero_edges():
    data = _case()
    out = slices_with_context(data, 1)
    assert out.shape == (4, 6, 2, 3)
    for z in range(4):
        for c in range(2):
            for j, neighbour in enumerate((z - 1, z, z + 1)):
                expected = data[c, neighbour] if 0 <= neighbour < 4 else np.zeros((2, 3), np.float32)
                np.testing.assert_array_equal(out[z, 3 * c + j], expected)
    assert (out[0, [0, 3]] == 0).all() and (out[3, [2, 5]] == 0).all()  # beyond the first / last slice


def test_k0_is_the_slice_itself_and_positions_pick_the_same_rows():
    data = _case()
    full = slices_with_context(data, 0)
    np.testing.assert_array_equal(full, data.transpose(1, 0, 2, 3))
    np.testing.assert_array_equal(slices_with_context(data, 0, [2])[0], data[:, 2])
    np.testing.assert_array_equal(slices_with_context(data, 2, [0, 3]), slices_with_context(data, 2)[[0, 3]])


def test_torch_and_numpy_agree_and_input_is_not_modified():
    data = _case(channels=1, slices=3)
    before = data.copy()
    out_np = slices_with_context(data, 2)
    out_t = slices_with_context(torch.from_numpy(data), 2)
    assert isinstance(out_t, torch.Tensor) and out_t.shape == (3, 5, 2, 3)
    np.testing.assert_array_equal(out_t.numpy(), out_np)
    np.testing.assert_array_equal(data, before)
    # a context wider than the stack: only the slice itself is non-zero
    assert (out_np[1, [0, 4]] == 0).all() and (out_np[1, 2] == data[0, 1]).all()


def test_negative_context_is_rejected():
    with pytest.raises(ValueError, match="context_slices"):
        slices_with_context(_case(), -1)
