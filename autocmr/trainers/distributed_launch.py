"""Start training in several processes and watch them.

Three ways, all ending in :func:`autocmr.trainers.run.train`:

- started by a launcher (``torchrun``, or SLURM's ``srun`` with MASTER_ADDR/MASTER_PORT exported): this
  process joins the group the environment describes (:func:`train_under_launcher`);
- ``--num-gpus N``: one fold, N data-parallel processes spawned here, meeting at a store this process
  holds (:func:`launch_data_parallel`);
- ``--devices D1 D2 ...``: several independent folds at once, one process per device, each training its
  folds one after another (:func:`train_folds_on_devices`), as nnU-Net recommends over DDP for
  cross-validation.

The watcher never waits silently: when a process exits with an error or is killed, the others get
:data:`STOP_GRACE_S` to end on their own, are then stopped, and the job fails with a message naming each
rank and how it ended. A rank that hangs without dying is caught by the collectives' timeout
(:data:`~autocmr.trainers.distributed.DEFAULT_TIMEOUT_S`, ``--ddp-timeout``) in the ranks waiting for it.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
import time
from dataclasses import dataclass, field, replace
from datetime import timedelta
from multiprocessing.connection import Connection, wait
from typing import Any, Mapping, Sequence

import torch

from autocmr.device import ChildSettings
from autocmr.errors import AutocmrError, ConfigurationError
from autocmr.parallel import default_workers
from autocmr.settings import Roots
from autocmr.trainers.distributed import (DEFAULT_TIMEOUT_S, DistributedContext, end_rank_process, init_process_group,
                                          launcher_context, leave_process_group, rank_device, threads_per_process)
from autocmr.trainers.options import TrainOptions
from autocmr.trainers.pipeline import loader_workers
from autocmr.trainers.run import TrainResult, train

logger = logging.getLogger(__name__)
LOCALHOST = "127.0.0.1"
STOP_GRACE_S = 10.0  # after one process failed, time the others get to notice and exit before being stopped
ERROR_EXIT_CODE = 2  # a rank's autocmr error (its message is printed by the rank)
ORPHANED_RANK_STOP_DELAY_S = 10.0  # launcher killed: the other ranks stop this long after rank 0 (it saves)


@dataclass(frozen=True)
class TrainRequest:
    """The arguments of :func:`autocmr.trainers.run.train` for one fold; picklable, sent to the processes."""

    dataset: str
    configuration: str
    fold: str
    roots: Roots
    options: TrainOptions
    plans_name: str | None = None
    continue_training: bool = False
    splits_file: str | None = None
    output_dir: str | None = None
    allow_changed_options: bool = False

    def run(self, distributed: DistributedContext | None = None) -> TrainResult:
        return train(self.dataset, self.configuration, self.fold, self.roots, options=self.options,
                     plans_name=self.plans_name, continue_training=self.continue_training,
                     splits_file=self.splits_file, output_dir=self.output_dir, distributed=distributed,
                     allow_changed_options=self.allow_changed_options)


@dataclass
class FoldsReport:
    """What a multi-fold command did: the folds trained, and the error of each fold that failed."""

    results: dict[str, TrainResult] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)


def run_training(request: TrainRequest, folds: Sequence[str], *, num_processes: int = 1,
                 devices: Sequence[str] = (), timeout_s: float = DEFAULT_TIMEOUT_S,
                 environ: Mapping[str, str] | None = None, keep_freed_memory: bool = False) -> FoldsReport:
    """Train ``folds`` the way the options ask (see the module doc). With one fold its error is raised; with
    several, each fold's error is reported in the result and the other folds go on. ``keep_freed_memory``:
    the processes spawned here apply the allocator setting for CPU work (:class:`ChildSettings`); this
    process is its caller's to set."""
    folds = [str(f) for f in folds]
    context = launcher_context(os.environ if environ is None else environ)
    if context is not None and context.enabled and (num_processes > 1 or devices):
        raise ConfigurationError("started by torchrun/srun: the launcher already chose the processes; leave out "
                                 "--num-gpus and --devices")
    if devices and num_processes > 1:
        raise ConfigurationError("--devices trains several folds at once, one process per device; --num-gpus trains "
                                 "one fold on several GPUs: use one of them")
    if devices:
        return train_folds_on_devices(request, folds, devices, keep_freed_memory=keep_freed_memory)
    report = FoldsReport()
    for fold in folds:
        one = replace(request, fold=fold)
        try:
            if context is not None and context.enabled:
                report.results[fold] = train_under_launcher(one, context, timeout_s=timeout_s)
            elif num_processes > 1:
                report.results[fold] = launch_data_parallel(one, num_processes, timeout_s=timeout_s,
                                                            keep_freed_memory=keep_freed_memory)
            else:
                report.results[fold] = one.run()
        except AutocmrError as exc:
            if len(folds) == 1:
                raise
            logger.error("fold %s failed: %s", fold, exc)
            report.failures[fold] = str(exc)
    return report


def train_under_launcher(request: TrainRequest, context: DistributedContext, *,
                         timeout_s: float = DEFAULT_TIMEOUT_S) -> TrainResult:
    """Join the process group a launcher set up (``env://``), train, leave."""
    device = rank_device(_resolve(request.options.device), context)
    joined = init_process_group(context, device, timeout_s=timeout_s)
    try:
        return request.run(joined)
    finally:
        leave_process_group(joined)


def launch_data_parallel(request: TrainRequest, num_processes: int, *, timeout_s: float = DEFAULT_TIMEOUT_S,
                         threads: int | None = None, keep_freed_memory: bool = False) -> TrainResult:
    """Train one fold in ``num_processes`` spawned data-parallel processes on this machine.

    CUDA: one process per GPU (``cuda:0`` ... ``cuda:N-1``, nccl). CPU: N processes sharing the cores (gloo);
    useful for tests, rarely faster. Raises :class:`AutocmrError` naming the ranks when any of them fails.
    """
    device = _resolve(request.options.device)
    if device.type == "cuda" and num_processes > torch.cuda.device_count():
        raise ConfigurationError(f"--num-gpus {num_processes} but this machine has {torch.cuda.device_count()} GPU(s)")
    settings = ChildSettings(threads_per_process(default_workers(), num_processes) if threads is None else threads,
                             keep_freed_memory, parent_pid=os.getpid())
    from torch.distributed import TCPStore

    # the ranks meet at a store this process holds on a port the system picks: no port can clash
    store = TCPStore(LOCALHOST, 0, None, True, timedelta(seconds=timeout_s), wait_for_workers=False)
    mp = multiprocessing.get_context("spawn")
    reader, writer = mp.Pipe(duplex=False)
    processes = [mp.Process(target=_rank_main, name=f"autocmr-rank{rank}",
                            args=(rank, num_processes, store.port, request, timeout_s, settings,
                                  writer if rank == 0 else None)) for rank in range(num_processes)]
    for process in processes:
        process.start()
    writer.close()
    messages, exits, stopped = _watch(processes, [reader])
    if any(code != 0 for code in exits.values()):
        raise AutocmrError(_failure_message("data-parallel training", exits, stopped, timeout_s))
    if not messages:
        raise AutocmrError("data-parallel training: rank 0 ended without reporting a result")
    return messages[0]


def _rank_main(rank: int, world: int, port: int, request: TrainRequest, timeout_s: float, settings: ChildSettings,
               result_pipe: Connection | None) -> None:
    """Entry point of one spawned rank: process-wide settings, join the group, train, report to the parent."""
    from torch.distributed import TCPStore

    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, stream=sys.stderr,
                        format="%(message)s" if rank == 0 else f"[rank {rank}] %(message)s")
    context = DistributedContext(rank, world, rank, world)
    try:
        device = rank_device(_resolve(request.options.device), context)
        # process-wide settings belong to entry points: this is one. Orphaned, rank 0 stops first: it writes the
        # checkpoint, and a rank that left early could break the collective rank 0 is waiting in (NCCL).
        settings.apply(device, stop_delay_s=0.0 if rank == 0 else ORPHANED_RANK_STOP_DELAY_S)
        store = TCPStore(LOCALHOST, port, None, False, timedelta(seconds=timeout_s))
        context = init_process_group(context, device, timeout_s=timeout_s, store=store)
        result = request.run(context)
    except AutocmrError as exc:
        print(f"error: rank {rank}: {exc}", file=sys.stderr)
        leave_process_group(context)
        end_rank_process(ERROR_EXIT_CODE)
    except BaseException:
        leave_process_group(context)
        raise  # a bug or a signal: multiprocessing prints the traceback and sets the exit code
    leave_process_group(context)
    if result_pipe is not None:
        result_pipe.send(result)
        result_pipe.close()
    end_rank_process(0)


def train_folds_on_devices(request: TrainRequest, folds: Sequence[str], devices: Sequence[str], *,
                           keep_freed_memory: bool = False) -> FoldsReport:
    """Train independent folds at once, one process per device (folds dealt out in turn). A failing fold
    is reported and the device goes on with its next fold; a process that dies fails its remaining folds."""
    for name in devices:
        _resolve(name)  # a bad device fails now, not in a child
    started = min(len(devices), len(folds))  # a device with no fold starts no process and takes no core
    settings = ChildSettings(threads_per_process(default_workers(), started), keep_freed_memory,
                             parent_pid=os.getpid())
    mp = multiprocessing.get_context("spawn")
    processes, readers, owned = [], [], {}
    for index, device in enumerate(devices):
        mine = list(folds[index::len(devices)])
        if not mine:
            continue
        reader, writer = mp.Pipe(duplex=False)
        process = mp.Process(target=_device_main, name=f"autocmr-{device}",
                             args=(device, mine, _with_share_of_cores(request, device, started), settings,
                                   writer))
        process.start()
        writer.close()
        processes.append(process)
        readers.append(reader)
        owned[len(processes) - 1] = (device, mine)
    messages, exits, _ = _watch(processes, readers, stop_on_failure=False)
    report = FoldsReport()
    for fold, result, error in messages:
        if error is None:
            report.results[fold] = result
        else:
            report.failures[fold] = error
    for index, (device, mine) in owned.items():
        for fold in mine:
            if fold not in report.results and fold not in report.failures:
                report.failures[fold] = (f"the process training on {device} {_exit_text(exits[index])} "
                                         "before this fold ended")
    return report


def _with_share_of_cores(request: TrainRequest, device: str, processes: int) -> TrainRequest:
    """The request with as many loader workers as this device's share of the cores allows (each device
    process would otherwise count every core of the machine as its own)."""
    if request.options.num_workers is not None:
        return request
    workers = loader_workers(_resolve(device), max(1, default_workers() // processes))
    return replace(request, options=request.options.updated(num_workers=workers))


def _device_main(device: str, folds: Sequence[str], request: TrainRequest, settings: ChildSettings,
                 pipe: Connection) -> None:
    """Entry point of one device's process: its folds one after another, each reported as it ends."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format=f"[{device}] %(message)s")
    settings.apply(_resolve(device))
    for fold in folds:
        one = replace(request, fold=fold, options=request.options.updated(device=device))
        try:
            pipe.send((fold, one.run(), None))
        except Exception as exc:  # noqa: BLE001 - one fold's failure is reported; the next fold still runs
            logging.getLogger(__name__).error("fold %s on %s failed: %s", fold, device, exc)
            pipe.send((fold, None, f"{type(exc).__name__}: {exc}"))


def _watch(processes: Sequence[Any], readers: Sequence[Connection], *, stop_on_failure: bool = True,
           grace_s: float = STOP_GRACE_S) -> tuple[list[Any], dict[int, int], set[int]]:
    """Wait for the processes, collecting what they send. After the first failure (with ``stop_on_failure``)
    the others get ``grace_s`` seconds, then are stopped. Returns (messages, exit code by index, stopped)."""
    messages: list[Any] = []
    running = {p.sentinel: i for i, p in enumerate(processes)}
    listening = list(readers)
    deadline: float | None = None
    try:
        while running or listening:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready = wait(list(running) + listening, timeout)
            if not ready:
                break  # grace period over
            for item in ready:
                if item in listening:
                    try:
                        messages.append(item.recv())  # type: ignore[union-attr]
                    except (EOFError, OSError):
                        listening.remove(item)  # the sender has exited
                    continue
                index = running.pop(item)
                processes[index].join()
                if processes[index].exitcode != 0 and stop_on_failure and deadline is None:
                    deadline = time.monotonic() + grace_s
    finally:
        stopped = _stop([i for i in running.values()], processes)
    return messages, {i: p.exitcode for i, p in enumerate(processes)}, stopped


def _stop(indices: Sequence[int], processes: Sequence[Any]) -> set[int]:
    for i in indices:
        processes[i].terminate()
    for i in indices:
        processes[i].join(5.0)
        if processes[i].is_alive():
            processes[i].kill()
            processes[i].join()
    return set(indices)


def _exit_text(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (out of memory, or killed by a user or the scheduler)" if name == "SIGKILL" else ""
        return f"was killed by {name}{hint}"
    if code == ERROR_EXIT_CODE:
        return "stopped with an error (printed above)"
    return f"exited with code {code} (its error is printed above)"


def _failure_message(what: str, exits: dict[int, int], stopped: set[int], timeout_s: float) -> str:
    parts = [f"rank {i} {_exit_text(code)}" for i, code in sorted(exits.items()) if code != 0 and i not in stopped]
    if stopped:
        parts.append(f"rank(s) {', '.join(map(str, sorted(stopped)))} stopped by autocmr after that")
    return (f"{what} failed: {'; '.join(parts)}. A rank that stops answering makes the others fail after "
            f"{timeout_s:.0f} s (--ddp-timeout). Fix the first error printed above (the others follow from it); "
            "a run stopped after its first checkpoint resumes with --continue")


def _resolve(name: str) -> torch.device:
    from autocmr.device import resolve_device

    return resolve_device(name)
