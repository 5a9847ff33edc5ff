"""Pick the compute device: ``auto`` prefers CUDA, then Apple MPS, then the CPU."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from autocmr.errors import ConfigurationError


def resolve_device(name: str = "auto") -> torch.device:
    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigurationError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from exc
    if device.type not in ("cpu", "cuda", "mps"):  # torch knows xpu, hpu, meta...: autocmr runs on none of them
        raise ConfigurationError(f"device {name!r} is not supported; use auto, cpu, cuda, cuda:N or mps")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigurationError(f"device {name!r} requested but CUDA is not available here (torch "
                                 f"{torch.__version__}); use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise ConfigurationError(f"device {name!r} requested but this machine has {count} GPU(s) "
                                 f"(cuda:0 to cuda:{count - 1}; CUDA_VISIBLE_DEVICES can hide some)")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigurationError(f"device {name!r} requested but Apple MPS is not available here; use --device cpu")
    return device


def make_current(device: torch.device) -> None:
    """Make ``cuda:N`` the process's current GPU. Without it, what allocates on "the current device" (the
    loader's pinned memory, CUDA's context) lands on GPU 0 as well, in every process of ``--devices``."""
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)


@dataclass(frozen=True)
class ChildSettings:
    """Process-wide settings of a worker process a command spawns (training's ``--num-gpus``/``--devices``,
    prediction's ``--devices``). Such settings belong to entry points (STYLE 15); a spawned process is one,
    and applies what its parent chose.

    Args:
        threads: torch threads (the processes share the machine's cores).
        keep_freed_memory: apply :func:`autocmr.allocator.keep_freed_memory` when the process works on the CPU.
            ``autocmr_train`` and ``autocmr_predict`` ask for it, as for their own process; Python callers only
            when they choose to.
        parent_pid: when set, the process ends once this parent is gone (:mod:`autocmr.parent_watch`), so that
            a killed command leaves nothing computing.
    """

    threads: int
    keep_freed_memory: bool = False
    parent_pid: int | None = None

    def apply(self, device: torch.device, *, stop_delay_s: float = 0.0) -> None:
        """Apply the settings; ``stop_delay_s``: how long after its parent died this process stops (see
        :func:`autocmr.parent_watch.exit_when_parent_dies`)."""
        if self.parent_pid is not None:
            from autocmr.parent_watch import exit_when_parent_dies

            exit_when_parent_dies(self.parent_pid, delay_s=stop_delay_s)
        torch.set_num_threads(self.threads)
        make_current(device)
        if self.keep_freed_memory and device.type == "cpu":
            from autocmr import allocator

            allocator.keep_freed_memory()  # ~15 % faster CPU training steps (README)
