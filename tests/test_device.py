"""autocmr.device.resolve_device: clear errors for devices that do not exist here."""
from __future__ import annotations

import pytest
import torch

from autocmr.device import resolve_device
from autocmr.errors import ConfigurationError


def test_cpu_and_auto_resolve() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("CPU") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else None
    assert resolve_device("auto").type in ({expected} if expected else {"cpu", "mps"})
    assert resolve_device("").type == resolve_device("auto").type  # empty means auto


def test_unknown_device_names_the_value_and_the_valid_ones() -> None:
    with pytest.raises(ConfigurationError, match=r"unknown device 'tpu'; use auto, cpu, cuda, cuda:N or mps"):
        resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available on this machine")
def test_cuda_without_cuda_says_so_and_suggests_the_cpu() -> None:
    with pytest.raises(ConfigurationError, match=r"'cuda:1' requested but CUDA is not available.*--device cpu"):
        resolve_device("cuda:1")


def test_mps_without_mps_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ConfigurationError, match="Apple MPS is not available"):
        resolve_device("mps")
