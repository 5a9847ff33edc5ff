"""autocmr.device: clear errors for devices that do not exist here; the current GPU of a process."""
from __future__ import annotations

import pytest
import torch

from autocmr.device import ChildSettings, make_current, resolve_device
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


def test_a_gpu_index_beyond_the_machine_names_how_many_there_are(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(ConfigurationError, match=r"'cuda:4' requested but this machine has 2 GPU\(s\) "
                                                 r"\(cuda:0 to cuda:1"):
        resolve_device("cuda:4")


def test_an_indexed_gpu_becomes_the_current_one_in_a_device_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """The settings a --devices process applies make its GPU the current one; otherwise the loader's pinned
    memory and CUDA's context land on GPU 0 from every such process."""
    current = []
    monkeypatch.setattr(torch.cuda, "set_device", current.append)
    ChildSettings(threads=torch.get_num_threads()).apply(torch.device("cuda:1"))
    make_current(torch.device("cuda"))  # no index: CUDA's own current device stays
    make_current(torch.device("cpu"))
    assert current == [torch.device("cuda:1")]


@pytest.mark.parametrize("name", ["xpu", "meta", "hpu"])
def test_devices_torch_knows_but_autocmr_does_not_run_on_are_refused(name):
    from autocmr.device import resolve_device
    from autocmr.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="not supported; use auto, cpu"):
        resolve_device(name)
