"""Through-plane context for 2D networks ("2.5D"): neighbouring slices stacked as input channels.

A 2D network that sees one short-axis slice cannot tell the atrioventricular level from a mid-ventricular
one; given the slices above and below it can. With ``k`` context slices the input for slice ``z`` of a case
(C, Z, Y, X) has ``C * (2k + 1)`` channels ordered channel-major: for image channel 0 the slices
``z-k .. z+k``, then for channel 1 the same slices, and so on. Slices outside the stack are zeros, so the
network also learns where the stack ends. ``k = 0`` is the plain slice. The network's channel count is
:meth:`autocmr.documents.plans.Configuration.input_channels`.

The context is built on the fly (training sampler, sliding window), so the preprocessed data do not change.
"""
from __future__ import annotations

from typing import Sequence, TypeVar

import numpy as np
import torch

Array = TypeVar("Array", np.ndarray, torch.Tensor)


def slices_with_context(data: Array, context_slices: int, positions: Sequence[int] | None = None) -> Array:
    """The network inputs (P, C * (2k + 1), Y, X) of slices ``positions`` (default: all) of ``data``
    (C, Z, Y, X), a numpy array or a torch tensor; see the module doc for the channel order.

    With ``k = 0`` and all positions this is a view of ``data`` (no copy).
    """
    if context_slices < 0:
        raise ValueError(f"context_slices must be >= 0, got {context_slices}")
    n_channels, n_slices = data.shape[0], data.shape[1]
    z = np.arange(n_slices) if positions is None else np.asarray(positions, dtype=np.int64)
    if context_slices == 0 and positions is None:
        return data.swapaxes(0, 1)
    width = 2 * context_slices + 1
    wanted = z[:, None] + np.arange(-context_slices, context_slices + 1)[None, :]  # (P, 2k+1)
    inside = (wanted >= 0) & (wanted < n_slices)
    picked = data[:, np.clip(wanted, 0, n_slices - 1)]  # (C, P, 2k+1, Y, X), a copy
    picked[:, ~inside] = 0
    return picked.swapaxes(0, 1).reshape((len(z), n_channels * width) + tuple(data.shape[2:]))
