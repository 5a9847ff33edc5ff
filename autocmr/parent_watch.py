"""Child processes stop when the process that started them is gone.

A command killed by SIGTERM (a cluster job's time limit, ``kill``, an ended session) or SIGKILL (out of
memory) dies without running any Python clean-up, so nothing tells its spawned children to stop: a
prediction worker would go on computing a case nobody will collect, or wait on its task queue for ever,
and a training rank would go on training, holding cores, memory and a GPU. Each child therefore watches its
parent from a daemon thread and, once the parent is gone, sends itself SIGTERM, as if the signal had reached
it too: a training saves its last finished epoch (:mod:`autocmr.trainers.stop_signals`), anything else ends.
Polling the parent's pid works for any thread layout and signal; Linux's ``PR_SET_PDEATHSIG`` would fire when
the *thread* that started the child ends, which a process pool does not guarantee to be the main thread.
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from typing import Any, Iterator

logger = logging.getLogger(__name__)

ORPHANED_EXIT_CODE = 128 + signal.SIGTERM
POLL_SECONDS = 1.0
GRACE_SECONDS = 120.0  # for a SIGTERM handler to finish (a training writing its checkpoint), then it is ended


def exit_when_parent_dies(parent_pid: int, poll_s: float = POLL_SECONDS, grace_s: float = GRACE_SECONDS,
                          delay_s: float = 0.0) -> threading.Thread:
    """Start a daemon thread that stops this process once its parent is no longer ``parent_pid`` (it died:
    the process was re-parented to init or a subreaper): SIGTERM to itself ``delay_s`` later, then
    ``os._exit`` if it still runs ``grace_s`` after that. Call it first thing in a child, with the pid the
    parent passed down (``os.getpid()`` there), so that a parent that died before the call is noticed too.
    Returns the thread."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(poll_s)
        time.sleep(delay_s)
        os.kill(os.getpid(), signal.SIGTERM)  # the main thread's handler runs, or the default action ends us
        time.sleep(grace_s)
        os._exit(ORPHANED_EXIT_CODE)  # a handler that did not end the process: nothing left to wait for

    thread = threading.Thread(target=watch, name="autocmr-parent-watch", daemon=True)
    thread.start()
    return thread


@contextlib.contextmanager
def finishing_on_sigterm(what: str = "stopped") -> Iterator[None]:
    """While inside, SIGTERM ends the process as Ctrl-C ends a command: by an exception from the main thread
    (``SystemExit(143)``), so that ``finally`` blocks run. Python's default ends the process at once, and a
    batch prediction stopped by a cluster's time limit would then lose the records of the cases it finished.
    The previous handler comes back on exit; elsewhere than in the main thread this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the clean-up short
        logger.warning("SIGTERM: %s", what)
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


__all__ = ["ORPHANED_EXIT_CODE", "exit_when_parent_dies", "finishing_on_sigterm"]
