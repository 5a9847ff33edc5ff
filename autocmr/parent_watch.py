"""Worker processes end when the process that started them is gone.

A batch killed by SIGTERM (a cluster job's time limit, ``kill``, an ended session) or SIGKILL (out of memory)
dies without running any Python clean-up, so nothing tells its spawned workers to stop: they would go on
computing a case nobody will collect, or wait on their task queue for ever, holding cores, memory and a
GPU. Each worker therefore watches its parent from a daemon thread and exits when the parent changes.
Polling the parent's pid works for any thread layout and signal; Linux's ``PR_SET_PDEATHSIG`` would fire when
the *thread* that started the worker ends, which a process pool does not guarantee to be the main thread.
"""
from __future__ import annotations

import os
import threading
import time

ORPHANED_EXIT_CODE = 143  # as if SIGTERM had reached the worker too
POLL_SECONDS = 1.0


def exit_when_parent_dies(parent_pid: int, poll_s: float = POLL_SECONDS) -> threading.Thread:
    """Start a daemon thread that ends this process (``os._exit``) once its parent is no longer ``parent_pid``
    (the parent died: the process was re-parented to init or a subreaper). Call it first thing in a worker,
    with the pid the parent passed down (``os.getpid()`` there), so that a parent that died before the call is
    noticed too. Returns the thread."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(poll_s)
        os._exit(ORPHANED_EXIT_CODE)  # nothing to clean up: the results have no one to go to

    thread = threading.Thread(target=watch, name="autocmr-parent-watch", daemon=True)
    thread.start()
    return thread


__all__ = ["ORPHANED_EXIT_CODE", "exit_when_parent_dies"]
