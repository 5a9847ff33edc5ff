"""Stopping a training cleanly on SIGTERM or Ctrl-C, so that ``--continue`` loses at most the epoch under way.

Cluster schedulers (SLURM at the end of a job's time limit, preemption), container stops and ended sessions
send SIGTERM and kill a few seconds later; without a handler the run loses every epoch since its last
checkpoint (``--save-every``, 5 epochs by default). The trainer keeps an in-memory copy of the
checkpoint payload as it stands at the end of each epoch (on the CPU: a few tens of MB for the CPU plans'
network and its optimiser) and writes it as ``checkpoint_latest.pth`` when a stop signal arrives. The copy is
what an ordinary save at that epoch's end would have written, random states included, so the resumed run
continues exactly as an uninterrupted one. The process then stops as it would have: ``KeyboardInterrupt``
for Ctrl-C, exit status 128 + the signal's number for SIGTERM.
"""
from __future__ import annotations

import contextlib
import copy
import io
import signal
import threading
from typing import Any, Callable, Iterator

import torch

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def cpu_copy(payload: Any) -> Any:
    """A copy of a checkpoint payload that later training steps cannot change: tensors detached and copied to
    the CPU (a GPU run keeps no second copy of its weights on the GPU), containers rebuilt, values deep-copied."""
    if isinstance(payload, torch.Tensor):
        return payload.detach().to("cpu", copy=True)
    if isinstance(payload, dict):
        return {key: cpu_copy(value) for key, value in payload.items()}
    if isinstance(payload, list):
        return [cpu_copy(value) for value in payload]
    if type(payload) is tuple:
        return tuple(cpu_copy(value) for value in payload)
    return copy.deepcopy(payload)


@contextlib.contextmanager
def saving_on_stop(on_stop: Callable[[str], None]) -> Iterator[None]:
    """While inside, a stop signal calls ``on_stop(signal name)`` once, then stops the process (see the module
    docstring); the previous handlers come back on exit. Python delivers signals to the main thread only, so
    elsewhere (a training run from a worker thread) this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stopping = False
    # torch.save imports some of its modules on first use. A signal handler runs between two bytecodes of the
    # main thread, possibly in the middle of that very import, and then found the module half initialised
    # (seen once in CI: "partially initialized module 'torch.utils.serialization.config'"); one save now
    # finishes those imports before any signal can arrive.
    torch.save({"warm_up": torch.zeros(1)}, io.BytesIO())

    def handler(signum: int, frame: Any) -> None:
        nonlocal stopping
        if stopping:  # a second signal while the checkpoint is being written: let the write finish
            return
        stopping = True
        on_stop(signal.Signals(signum).name)
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


__all__ = ["STOP_SIGNALS", "cpu_copy", "saving_on_stop"]
