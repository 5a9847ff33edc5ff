"""autocmr.parallel: one failing job never stops the others, and a dead worker is retried once, then reported."""
from __future__ import annotations

import os

import pytest

from autocmr.parallel import WORKER_ATTEMPTS, ResilientPool, TaskTimeout, default_workers, run_all


def _square(x: int) -> int:
    if x < 0:
        raise ValueError(f"negative input {x}\nsecond line of the message")
    return x * x


def _hang(seconds: float) -> None:
    import time

    time.sleep(seconds)  # a read stuck on a network file system looks like this from outside


def _die(_: int) -> int:
    os._exit(3)  # a worker killed by the OOM killer or a crash in a C library looks like this


def test_default_workers_counts_the_usable_cores() -> None:
    assert 1 <= default_workers() <= (os.cpu_count() or 1)


def test_run_all_inline_reports_each_failure_and_goes_on() -> None:
    results, failures = run_all(_square, [("a", (2,)), ("bad", (-1,)), ("c", (3,))], num_workers=1)
    assert results == {"a": 4, "c": 9}
    assert failures == {"bad": "ValueError: negative input -1\nsecond line of the message"}


@pytest.mark.slow  # spawned workers import torch: ~30 s on a busy 2-core machine
def test_run_all_in_worker_processes_gives_the_same_answer() -> None:
    jobs = [(str(i), (i,)) for i in (-2, 1, 2, 3)]
    assert run_all(_square, jobs, num_workers=2) == run_all(_square, jobs, num_workers=1)


def test_resilient_pool_without_workers_runs_inline_and_delivers_errors() -> None:
    pool = ResilientPool(0)
    ok, bad = pool.submit(_square, 4), pool.submit(_square, -4)
    assert pool.result(ok) == 16
    with pytest.raises(ValueError, match="negative input -4"):
        pool.result(bad)
    pool.close()


@pytest.mark.slow  # two pools of spawned workers: ~30 s on a busy 2-core machine
def test_resilient_pool_retries_a_dead_worker_once_then_reports_it() -> None:
    pool = ResilientPool(1)
    try:
        dying = pool.submit(_die, 0)
        with pytest.raises(RuntimeError, match="worker process died"):
            pool.result(dying)
        assert dying.attempts == WORKER_ATTEMPTS
        assert pool.result(pool.submit(_square, 5)) == 25  # the replacement pool works
    finally:
        pool.close()


def test_a_worker_that_hangs_fails_its_task_after_the_timeout_and_the_pool_goes_on() -> None:
    import time

    pool = ResilientPool(1, task_timeout_s=600)
    try:
        assert pool.result(pool.submit(_square, 3)) == 9  # the worker has started: the deadline is the task's own
        pool.task_timeout_s = 2.0
        hung, queued = pool.submit(_hang, 600), pool.submit(_square, 6)  # the second waits behind the first
        t0 = time.monotonic()
        pool.wait_any([hung])  # returns at the deadline, not after 600 s
        assert pool.overdue(hung) and time.monotonic() - t0 < 30
        with pytest.raises(TaskTimeout, match="no result within 2 s"):
            pool.result(hung)
        pool.task_timeout_s = 600
        assert pool.result(queued) == 36  # retried in the fresh pool
        assert pool.result(pool.submit(_square, 7)) == 49
    finally:
        pool.close()
    with pytest.raises(ValueError, match="positive"):
        ResilientPool(0, task_timeout_s=0)
