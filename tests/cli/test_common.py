"""The commands' common wrapper: errors and Ctrl-C become a message and an exit status."""
from __future__ import annotations

from autocmr.cli.common import RERUN_WITH_CONTINUE, run_command
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
