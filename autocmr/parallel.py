"""Run a function over many items in worker processes, with a progress bar and per-item failures.

Workers are started with ``spawn`` (forking a process that already runs torch threads can deadlock) and
use one torch thread each, so N workers use N cores. With ``num_workers <= 1`` everything runs inline,
which keeps tests and small jobs free of process start-up costs.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from typing import Any, Callable, Iterable, TypeVar

from tqdm import tqdm

logger = logging.getLogger(__name__)
T = TypeVar("T")


def default_workers() -> int:
    """Worker processes to use by default: the cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def make_pool(num_workers: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(max_workers=num_workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker)


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
                failures[key] = _describe(exc)
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
                failures[key] = _describe(exc)
            bar.update()
    finally:
        bar.close()
        if own_pool:
            pool.shutdown(wait=True, cancel_futures=True)
    return results, failures


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
