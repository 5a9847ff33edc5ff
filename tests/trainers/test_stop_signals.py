"""Stop signals during training: the payload copy is independent of later steps; handlers come back after."""
from __future__ import annotations

import os
import signal
import threading

import pytest
import torch

from autocmr.trainers.stop_signals import cpu_copy, saving_on_stop


def test_the_copy_does_not_follow_later_training_steps():
    weights = torch.ones(3, requires_grad=True)
    payload = {"network": {"w": weights}, "state": {"epoch": 2, "history": [1.0, 2.0]}, "rng": (3, (1, 2), None)}
    copied = cpu_copy(payload)
    with torch.no_grad():
        weights.add_(1.0)
    payload["state"]["history"].append(3.0)
    assert torch.equal(copied["network"]["w"], torch.ones(3)) and not copied["network"]["w"].requires_grad
    assert copied["state"]["history"] == [1.0, 2.0] and copied["rng"] == (3, (1, 2), None)


def test_a_stop_signal_calls_back_once_stops_and_leaves_the_old_handler_in_place():
    before = signal.getsignal(signal.SIGTERM)
    seen = []
    with pytest.raises(SystemExit) as stopped:
        with saving_on_stop(seen.append):
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):  # the handler runs between bytecodes of this thread
                pass
    assert stopped.value.code == 128 + signal.SIGTERM and seen == ["SIGTERM"]
    with pytest.raises(KeyboardInterrupt):
        with saving_on_stop(seen.append):
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):
                pass
    assert seen == ["SIGTERM", "SIGINT"] and signal.getsignal(signal.SIGTERM) is before


def test_outside_the_main_thread_nothing_is_installed():
    result = []

    def worker():
        with saving_on_stop(result.append):
            result.append(signal.getsignal(signal.SIGTERM))

    before = signal.getsignal(signal.SIGTERM)
    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert result == [before]


def test_a_save_in_the_handler_imports_nothing_the_main_thread_could_be_half_way_through():
    """torch.save imports modules on first use; a handler interrupting the main thread in that import found
    one half initialised (CI, 2026-11-29). In a fresh process, saving inside the context imports nothing new."""
    import subprocess
    import sys

    code = ("import io, sys, torch\n"
            "from autocmr.trainers.stop_signals import saving_on_stop\n"
            "with saving_on_stop(lambda name: None):\n"
            "    before = set(sys.modules)\n"
            "    torch.save({'w': torch.ones(2)}, io.BytesIO())\n"
            "    print(sorted(set(sys.modules) - before))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.strip() == "[]", out.stdout
