"""The commands' common wrapper: errors and Ctrl-C become a message and an exit status."""
from __future__ import annotations

import pytest

from autocmr.cli.common import INTERNAL_ERROR, RERUN_WITH_CONTINUE, apply_device_settings, run_command
from autocmr.errors import ConfigurationError


def _interrupted() -> int:
    raise KeyboardInterrupt


def _failing() -> int:
    raise ConfigurationError("bad option")


def test_errors_and_interrupts_become_a_message_and_an_exit_status(capsys):
    assert run_command(_failing) == 2 and "error: bad option" in capsys.readouterr().err
    assert run_command(_interrupted) == 130
    assert "rerun the same command to continue" in capsys.readouterr().err
    # a command that starts over without --continue (training, prediction) says to give it
    assert run_command(_interrupted, on_interrupt=RERUN_WITH_CONTINUE) == 130
    assert "with --continue" in capsys.readouterr().err


@pytest.mark.parametrize("device, kept, current", [("cpu", 1, []), ("cuda:1", 0, ["cuda:1"])])
def test_a_command_s_device_settings_keep_cpu_memory_or_make_its_gpu_current(monkeypatch, device, kept, current):
    """autocmr_train/predict/find_best/demo: one resolution of --device, then the allocator setting on the CPU,
    or the GPU made current (otherwise CUDA's context and pinned memory also land on GPU 0)."""
    import torch

    from autocmr import allocator
    import autocmr.device

    calls, made_current = [], []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append(1))
    monkeypatch.setattr(autocmr.device, "resolve_device", torch.device)  # no GPU needed to name one
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: made_current.append(str(d)))
    apply_device_settings(device)
    assert (len(calls), made_current) == (kept, current)


def test_an_unexpected_exception_has_its_own_exit_status_and_a_traceback(caplog):
    def _bug() -> int:
        raise ValueError("not autocmr's error")

    # 1 means "the command ran and some cases failed": a bug must not look like that
    assert run_command(_bug) == INTERNAL_ERROR == 3
    assert "unexpected error" in caplog.text and "ValueError: not autocmr's error" in caplog.text
