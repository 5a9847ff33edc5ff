"""Run a function over many items in worker processes, with a progress bar and per-item failures.

Workers are started with ``spawn`` (forking a process that already runs torch threads can deadlock) and
use one torch thread each, so N workers use N cores. With ``num_workers <= 1`` everything runs inline,
which keeps tests and small jobs free of process start-up costs.
"""
from __future__ import annotations

import logging
import math
import multiprocessing
import os
import signal
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, as_completed, wait
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterable, Sequence, TypeVar

from tqdm import tqdm

from autocmr.errors import exception_text
from autocmr.parent_watch import exit_when_parent_dies

logger = logging.getLogger(__name__)
T = TypeVar("T")
WORKER_ATTEMPTS = 2  # a task whose worker process died is retried once in a fresh pool, then reported


def default_workers() -> int:
    """Worker processes to use by default: the cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _init_bare_worker(parent_pid: int) -> None:
    exit_when_parent_dies(parent_pid)
    # Ctrl-C reaches the whole process group: the parent handles it (it stops the batch and says how to
    # resume) and ends its pool; a worker that also raised KeyboardInterrupt would print a traceback of its own
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _init_worker(parent_pid: int) -> None:
    _init_bare_worker(parent_pid)
    import torch

    torch.set_num_threads(1)


def make_pool(num_workers: int) -> ProcessPoolExecutor:
    """A spawn pool of one-thread torch workers that end when this process dies (:mod:`autocmr.parent_watch`)."""
    return ProcessPoolExecutor(max_workers=num_workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker, initargs=(os.getpid(),))


def make_bare_pool(num_workers: int) -> ProcessPoolExecutor:
    """A spawn pool whose workers import no torch (they start much faster); they too end with this process."""
    return ProcessPoolExecutor(max_workers=num_workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_bare_worker, initargs=(os.getpid(),))


def run_all(fn: Callable[..., T], jobs: Iterable[tuple[str, tuple[Any, ...]]], *, num_workers: int = 1,
            desc: str = "", pool: ProcessPoolExecutor | None = None) -> tuple[dict[str, T], dict[str, str]]:
    """Run ``fn(*args)`` for each ``(key, args)`` job. Returns (results by key, error message by key).

    One failing job never stops the others; its error (type and message) is returned for reporting.
    """
    jobs = list(jobs)
    results: dict[str, T] = {}
    failures: dict[str, str] = {}
    bar = tqdm(total=len(jobs), desc=desc, unit="case", disable=None, leave=False)
    if num_workers <= 1 and pool is None:
        for key, args in jobs:
            try:
                results[key] = fn(*args)
            except Exception as exc:  # noqa: BLE001 - reported per job, the batch goes on
                failures[key] = exception_text(exc, whole_message=True)
            bar.update()
        bar.close()
        return results, failures
    own_pool = pool is None
    pool = pool or make_pool(min(num_workers, max(1, len(jobs))))
    try:
        futures: dict[Future, str] = {pool.submit(fn, *args): key for key, args in jobs}
        for future in as_completed(futures):
            key = futures[future]
            try:
                results[key] = future.result()
            except Exception as exc:  # noqa: BLE001 - includes a crashed worker (BrokenProcessPool)
                failures[key] = exception_text(exc, whole_message=True)
            bar.update()
    finally:
        bar.close()
        if own_pool:
            pool.shutdown(wait=True, cancel_futures=True)
    return results, failures


def _seconds_left(deadline: float) -> float | None:
    """A ``timeout`` for concurrent.futures until ``deadline`` (time.monotonic()); None for no deadline."""
    return None if math.isinf(deadline) else max(0.0, deadline - time.monotonic())


class PoolTask:
    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.fn, self.args = fn, args
        self.future: Future = Future()
        self.attempts = 0
        self.generation = 0
        self.deadline = math.inf  # time.monotonic() by which its result is due (ResilientPool's task_timeout_s)
        self.timeout_s = math.inf


class TaskTimeout(RuntimeError):
    """A worker gave no result within the pool's ``task_timeout_s`` and was stopped."""


class ResilientPool:
    """A spawn process pool (or inline execution with 0 workers) that survives a crashed worker process:
    a task whose worker died is retried once in a fresh pool, then reported as failed. ``task_timeout_s``: a
    task without a result this long after it was submitted (a read stuck on a network file system, a library
    deadlocked on a damaged file) fails with :class:`TaskTimeout`; its workers are stopped and replaced, the
    other tasks they held retried (inline execution cannot be timed out)."""

    def __init__(self, num_workers: int, task_timeout_s: float | None = None) -> None:
        if task_timeout_s is not None and not task_timeout_s > 0:
            raise ValueError(f"task_timeout_s must be positive, got {task_timeout_s}")
        self.num_workers = num_workers
        self.pool = make_pool(num_workers) if num_workers > 0 else None
        self.generation = 0
        self.task_timeout_s = task_timeout_s

    def submit(self, fn: Callable[..., Any], *args: Any) -> PoolTask:
        task = PoolTask(fn, args)
        self._start(task)
        return task

    def _start(self, task: PoolTask) -> None:
        task.attempts += 1
        if self.pool is None:
            task.future = Future()
            try:
                task.future.set_result(task.fn(*task.args))
            except Exception as exc:  # noqa: BLE001 - delivered through result() like a worker's error
                task.future.set_exception(exc)
            return
        if self.task_timeout_s is not None:
            task.timeout_s, task.deadline = self.task_timeout_s, time.monotonic() + self.task_timeout_s
        try:
            task.generation, task.future = self.generation, self.pool.submit(task.fn, *task.args)
        except BrokenProcessPool:
            self._restart(self.generation)
            task.generation, task.future = self.generation, self.pool.submit(task.fn, *task.args)

    def overdue(self, task: PoolTask) -> bool:
        """Whether ``task`` is past its deadline without a result (:meth:`result` then raises at once)."""
        return not task.future.done() and time.monotonic() >= task.deadline

    def result(self, task: PoolTask) -> Any:
        while True:
            try:
                return task.future.result(timeout=_seconds_left(task.deadline))
            except FutureTimeout:
                if task.generation != self.generation:  # its pool was stopped for another task's hang: not its fault
                    self._start(task)
                    continue
                self._stop_workers(task.generation)
                raise TaskTimeout(f"no result within {task.timeout_s:g} s (a read stuck on a network file "
                                  "system, or a library hung on this input?); its worker was stopped") from None
            except BrokenProcessPool as exc:
                if task.attempts >= WORKER_ATTEMPTS:
                    raise RuntimeError("the worker process died while handling this case (killed, out of memory "
                                       "or a crash in a library)") from exc
                self._restart(task.generation)
                self._start(task)

    def _stop_workers(self, generation: int) -> None:
        """End the pool whose worker hangs (a hung worker cannot be stopped alone) and start a fresh one: the
        other tasks it held see a broken pool and are retried there."""
        if generation != self.generation or self.pool is None:
            return
        logger.warning("a worker gave no result within %g s: stopping the workers and retrying their other cases",
                       self.task_timeout_s)
        for process in list(getattr(self.pool, "_processes", {}).values()):  # no public way before Python 3.14
            process.kill()
        self._restart(generation, quiet=True)

    def _restart(self, generation: int, *, quiet: bool = False) -> None:
        if generation != self.generation or self.pool is None:
            return  # already replaced since that task was submitted
        if not quiet:
            logger.warning("a worker process died; starting new workers and retrying the affected cases once")
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.pool = make_pool(self.num_workers)
        self.generation += 1

    @staticmethod
    def wait_any(tasks: Sequence[PoolTask]) -> None:
        """Until one of ``tasks`` has its result or passes its deadline (see :meth:`overdue`)."""
        deadline = min((t.deadline for t in tasks), default=math.inf)
        wait([t.future for t in tasks], timeout=_seconds_left(deadline), return_when=FIRST_COMPLETED)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
