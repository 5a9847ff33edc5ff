"""Data-parallel training on ``torch.distributed``: who this process is, and the few collectives the trainer
needs. With one process every method is a no-op, so the trainer runs the same code with and without it.

The global batch of the plans is split across ranks: each gets ``batch // world_size`` samples and the
first ``batch % world_size`` ranks one more, so the global batch (and the learning rate that goes with it)
is that of a single process. The samples the global batch forces onto foreground (its last ones) go to the
ranks holding those positions. Gradients are averaged by :class:`~torch.nn.parallel.DistributedDataParallel`.

Collectives time out after ``timeout_s`` (:data:`DEFAULT_TIMEOUT_S`): a rank that stops answering makes the
others fail with an error instead of waiting for ever; the launcher then stops the whole job.
"""
from __future__ import annotations

import atexit
import logging
import math
import os
import sys
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, Callable, Iterator, Mapping, NoReturn, Sequence, TypeVar

import numpy as np
import torch
import torch.distributed as dist

from autocmr.device import make_current
from autocmr.errors import ConfigurationError

logger = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")
# torch's own default for gloo; long enough for rank 0 to write a checkpoint, plot and (at the start) the
# intensity reference while the others wait, short enough that a stuck job ends within the hour
DEFAULT_TIMEOUT_S = 1800.0


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in a data-parallel job.

    Args:
        rank: global rank, 0..world_size-1; rank 0 alone writes files.
        world_size: number of processes training together.
        local_rank: rank on this machine; selects the GPU ``cuda:local_rank``.
        local_world_size: processes on this machine (shares the CPU cores between them).
        backend: ``gloo`` or ``nccl`` once the process group is initialised, else ``None``.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    backend: str | None = None

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ConfigurationError(f"rank {self.rank} is not in a world of {self.world_size} process(es)")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def _tensor(self, values: Any) -> torch.Tensor:
        device = torch.device("cuda", torch.cuda.current_device()) if self.backend == "nccl" else torch.device("cpu")
        return torch.as_tensor(np.asarray(values, dtype=np.float64), device=device)

    def reduce(self, values: Sequence[float] | np.ndarray, op: str = "sum") -> np.ndarray:
        """Element-wise ``sum``, ``mean`` or ``max`` of ``values`` over the ranks (every rank gets it)."""
        array = np.asarray(values, dtype=np.float64)
        if not self.enabled:
            return array
        tensor = self._tensor(array)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
        out = tensor.cpu().numpy()
        return out / self.world_size if op == "mean" else out

    @staticmethod
    def sum_with_gradients(tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` summed over the ranks, differentiable: each rank's gradient flows back to its own share
        (the loss of a global-batch statistic then has the gradient one process would compute)."""
        return _SumOverRanks.apply(tensor)

    def broadcast(self, values: Sequence[float] | np.ndarray) -> np.ndarray:
        """Rank 0's ``values`` on every rank: decisions that must agree (stop now?) are made from them."""
        array = np.asarray(values, dtype=np.float64)
        if not self.enabled:
            return array
        tensor = self._tensor(array)
        dist.broadcast(tensor, src=0)
        return tensor.cpu().numpy()

    def barrier(self) -> None:
        if self.enabled:
            # nccl: name this rank's GPU (torch < 2.5 guessed rank % GPU count, wrong where a node runs fewer
            # ranks than it has GPUs); the current device is it (init_process_group set it)
            nccl = self.backend == "nccl"
            dist.barrier(device_ids=[torch.cuda.current_device()] if nccl else None)

    def wait_for_main(self) -> None:
        """Ranks other than 0 wait here until rank 0 calls :meth:`main_done`: rank 0 creates shared files
        (splits, fine-tuning data) first, the others then find them instead of racing to write them."""
        if not self.is_main:
            self.barrier()

    def main_done(self) -> None:
        if self.is_main:
            self.barrier()

    def map_gathered(self, fn: Callable[[T], R], items: Sequence[T]) -> Iterator[R]:
        """``fn`` over ``items``, each rank taking every ``world_size``-th item; yields the results in item
        order on rank 0 (nothing elsewhere). Gathered round by round, so rank 0 holds one round at a time."""
        items = list(items)
        if not self.enabled:
            yield from (fn(item) for item in items)
            return
        for start in range(0, len(items), self.world_size):
            index = start + self.rank
            mine = [fn(items[index])] if index < len(items) else []
            gathered: list[Any] | None = [None] * self.world_size if self.is_main else None
            dist.gather_object(mine, gathered, dst=0)
            if gathered is not None:
                for result in gathered:
                    yield from result

    def replica_spread(self, module: torch.nn.Module) -> float:
        """Largest difference between the ranks of any parameter tensor's sum: 0 when the replicas agree
        (DDP keeps them bit-identical; anything else means the ranks ran different code or data)."""
        if not self.enabled:
            return 0.0
        with torch.no_grad():
            sums = [float(p.double().sum()) for p in module.parameters()]
        spread = self.reduce(sums, "max") + self.reduce([-s for s in sums], "max")
        return float(spread.max()) if len(sums) else 0.0


class _SumOverRanks(torch.autograd.Function):
    """Sum over the ranks of the default group, in forward and (for the gradient) in backward.

    Not ``torch.distributed.nn.functional.all_reduce``: its ``group`` default is the world group as of its
    module's first import, which here comes after the group exists, so the module keeps that group (and its
    gloo threads) alive after :func:`leave_process_group`, until the interpreter tears down; a rank that
    exits first can then abort there (SIGABRT). This one refers to no group and holds nothing.
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # noqa: D102 (autograd protocol)
        total = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: D102
        # d(sum over ranks)/d(this rank's share) is the sum of every rank's upstream gradient
        total = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total)
        return total


@dataclass(frozen=True)
class BatchShare:
    """One rank's part of the global batch: its size, how many of its samples are forced foreground and how
    many are drawn from the end slices of the labelled extent (see :class:`autocmr.trainers.data.PatchSampler`)."""

    batch_size: int
    forced: int
    end_slices: int = 0


def batch_share(global_batch: int, global_forced: int, context: DistributedContext,
                global_end_slices: int = 0) -> BatchShare:
    """Split a global batch of ``global_batch`` samples, the last ``global_forced`` of them forced onto
    foreground and the first ``global_end_slices`` drawn from end slices, into this rank's share (the first
    ``global_batch % world_size`` ranks get one more)."""
    world, rank = context.world_size, context.rank
    if global_batch < world:
        raise ConfigurationError(f"batch size {global_batch} is smaller than the {world} data-parallel processes; "
                                 f"each needs at least one sample (use --batch-size {world} or more, "
                                 "or fewer processes)")
    base, extra = divmod(global_batch, world)
    start = rank * base + min(rank, extra)
    size = base + (1 if rank < extra else 0)
    forced_from = global_batch - global_forced
    forced = max(0, min(start + size, global_batch) - max(start, forced_from))
    end_slices = max(0, min(start + size, global_end_slices) - start)
    return BatchShare(size, forced, end_slices)


def data_parallel(network: torch.nn.Module, device: torch.device, context: DistributedContext) -> torch.nn.Module:
    """``network`` wrapped in DistributedDataParallel (gradients averaged over the ranks), or itself alone.
    Keep using ``network`` for checkpoints and inference: its state dict is the same with and without DDP."""
    if not context.enabled:
        return network
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    # the coarsest deep-supervision head (loss weight 0) never gets a gradient; DDP must be told to look for
    # such parameters (a walk over the autograd graph per step, small beside the convolutions)
    return DistributedDataParallel(network, device_ids=ids, find_unused_parameters=True)


def launcher_context(environ: Mapping[str, str]) -> DistributedContext | None:
    """The context a launcher describes in the environment, or ``None`` when not started by one.

    ``torchrun`` sets RANK/WORLD_SIZE/LOCAL_RANK/LOCAL_WORLD_SIZE (and MASTER_ADDR/MASTER_PORT); SLURM's
    ``srun`` sets SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID, used when the job script exported MASTER_ADDR and
    MASTER_PORT and started more than one task. These are a launcher's protocol, read here and nowhere else.
    """
    def number(name: str, default: int | None = None) -> int | None:
        text = environ.get(name)
        try:
            return int(text) if text not in (None, "") else default
        except ValueError:
            raise ConfigurationError(f"environment variable {name}={text!r} is not an integer") from None

    world = number("WORLD_SIZE")
    if world is not None and environ.get("RANK") not in (None, ""):
        local_world = number("LOCAL_WORLD_SIZE", world)
        return DistributedContext(number("RANK"), world, number("LOCAL_RANK", 0), local_world)  # type: ignore[arg-type]
    tasks = number("SLURM_NTASKS")
    if tasks is not None and tasks > 1 and environ.get("MASTER_ADDR") and environ.get("MASTER_PORT"):
        per_node = environ.get("SLURM_NTASKS_PER_NODE", "")  # "4", or "4(x2)" on uneven allocations
        local_world = int(per_node) if per_node.isdigit() else tasks
        return DistributedContext(number("SLURM_PROCID", 0), tasks, number("SLURM_LOCALID", 0),  # type: ignore[arg-type]
                                  local_world)
    return None


def rank_device(device: torch.device, context: DistributedContext) -> torch.device:
    """The device of this rank: ``cuda:local_rank`` for a data-parallel CUDA job (``cuda:0`` when the process
    sees a single GPU), else ``device``."""
    if not context.enabled:
        return device
    if device.type == "cuda":
        visible = torch.cuda.device_count()
        if visible == 1:
            return torch.device("cuda", 0)  # the launcher gave each process its own GPU (srun --gpus-per-task 1)
        if context.local_rank >= visible:
            raise ConfigurationError(f"rank {context.rank} needs GPU cuda:{context.local_rank} but this process sees "
                                     f"{visible}; start at most one process per GPU")
        return torch.device("cuda", context.local_rank)
    if device.type != "cpu":
        raise ConfigurationError(f"data-parallel training runs on CUDA (nccl) or the CPU (gloo), not {device.type}")
    return device


def init_process_group(context: DistributedContext, device: torch.device, *, timeout_s: float = DEFAULT_TIMEOUT_S,
                       store: Any = None) -> DistributedContext:
    """Join the process group (nccl on CUDA, gloo on the CPU); returns the context with its backend.

    ``store`` is a ``torch.distributed`` store to meet the other ranks at; without it, MASTER_ADDR and
    MASTER_PORT from the launcher are used (``env://``).
    """
    if not context.enabled:
        return context
    backend = "nccl" if device.type == "cuda" else "gloo"
    where: dict[str, Any] = {"store": store} if store is not None else {"init_method": "env://"}
    if device.type == "cuda":
        make_current(device)
        where["device_id"] = device  # binds the group to this GPU from the start (torch >= 2.3)
    dist.init_process_group(backend=backend, rank=context.rank, world_size=context.world_size,
                            timeout=timedelta(seconds=timeout_s), **where)
    logger.debug("rank %d of %d joined the %s process group", context.rank, context.world_size, backend)
    return replace(context, backend=backend)


def leave_process_group(context: DistributedContext) -> None:
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()


def end_rank_process(code: int) -> NoReturn:
    """End a data-parallel rank whose work is done (its group left, its files written) without the
    interpreter's teardown.

    DistributedDataParallel keeps its gloo process group, and so the group's worker threads, alive after
    :func:`leave_process_group` (torch 2.13: the threads outlive ``destroy_process_group``). Tearing the
    interpreter down under threads that may still release a finished collective's tensors is where a rank that
    finished first aborted in CI (SIGABRT, "terminate called without an active exception"; not reproduced
    here), and the launcher then fails a job whose results are all written. So: flush what Python buffers and
    leave at once. DataLoader workers notice their parent is gone and end themselves.
    """
    # what a normal exit runs before the teardown, while the interpreter is whole: the atexit handlers (logging's
    # flush, multiprocessing's finalizers that give semaphores back to its resource tracker, ...)
    run_exit_handlers = getattr(atexit, "_run_exitfuncs", None)
    if run_exit_handlers is not None:
        run_exit_handlers()
    else:  # not CPython
        logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or broken pipe: nothing more can reach it anyway
            pass
    os._exit(code)


def threads_per_process(cores: int, processes: int) -> int:
    """Torch threads for each of ``processes`` sharing ``cores``: more would only make them compete."""
    return max(1, math.floor(cores / max(1, processes)))


def quiet_log(message: str) -> None:
    """The run log of ranks other than 0: their messages go to debug logging only, never to a file."""
    logger.debug("%s", message)
