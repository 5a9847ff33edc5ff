"""Training checkpoints: everything needed to resume a run exactly, in the checkpoint document's format
(:mod:`autocmr.documents.checkpoint`: tensors and plain values only, read with ``weights_only=True``)."""
from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from autocmr.documents.checkpoint import load_checkpoint, numpy_rng_from_plain, numpy_rng_to_plain, save_checkpoint

__all__ = ["load_checkpoint", "restore_rng_state", "rng_state", "save_checkpoint"]


def rng_state() -> dict[str, Any]:
    """The process's random states as tensors and plain values (python's is a tuple of ints)."""
    state = {"python": random.getstate(), "numpy": numpy_rng_to_plain(np.random.get_state()),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    np.random.set_state(numpy_rng_from_plain(state["numpy"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
