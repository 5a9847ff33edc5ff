"""Data-parallel pieces that need no second process: batch shares, launcher detection, per-rank streams,
failure messages."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from autocmr.errors import ConfigurationError
from autocmr.trainers.data import PatchSampler, forced_samples
from autocmr.trainers.distributed import (DistributedContext, batch_share, launcher_context, rank_device,
                                          threads_per_process)
from autocmr.trainers.distributed_launch import _failure_message
from autocmr.trainers.loader import BatchStream


@pytest.mark.parametrize("batch, world", [(7, 2), (7, 3), (8, 4), (41, 8), (3, 3), (12, 5)])
def test_batch_shares_add_up_to_the_global_batch_and_its_forced_samples(batch, world):
    forced = forced_samples(batch, 0.33)
    shares = [batch_share(batch, forced, DistributedContext(rank, world)) for rank in range(world)]
    assert sum(s.batch_size for s in shares) == batch
    assert sum(s.forced for s in shares) == forced
    assert max(s.batch_size for s in shares) - min(s.batch_size for s in shares) <= 1
    assert all(0 <= s.forced <= s.batch_size for s in shares)
    # the forced samples are the last of the global batch: they sit with the last ranks
    assert shares[-1].forced == min(forced, shares[-1].batch_size)


def test_single_process_share_is_the_whole_batch():
    assert batch_share(7, 2, DistributedContext()) == batch_share(7, 2, DistributedContext(0, 1))
    assert batch_share(7, 2, DistributedContext()).batch_size == 7


def test_batch_smaller_than_the_world_is_refused_with_the_fix():
    with pytest.raises(ConfigurationError, match="--batch-size 4"):
        batch_share(3, 1, DistributedContext(0, 4))


def test_bad_rank_is_refused():
    with pytest.raises(ConfigurationError, match="rank 2"):
        DistributedContext(2, 2)


def test_launcher_context_from_torchrun_slurm_or_nothing():
    torchrun = {"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2",
                "MASTER_ADDR": "node1", "MASTER_PORT": "29500"}
    assert launcher_context(torchrun) == DistributedContext(3, 8, 1, 2)
    slurm = {"SLURM_NTASKS": "4", "SLURM_PROCID": "2", "SLURM_LOCALID": "0", "SLURM_NTASKS_PER_NODE": "2",
             "MASTER_ADDR": "node1", "MASTER_PORT": "29500"}
    assert launcher_context(slurm) == DistributedContext(2, 4, 0, 2)
    # an ordinary batch job (one task, or no rendezvous address) is not a data-parallel run
    assert launcher_context({"SLURM_NTASKS": "4", "SLURM_PROCID": "2"}) is None
    assert launcher_context({"SLURM_NTASKS": "1", "MASTER_ADDR": "x", "MASTER_PORT": "1"}) is None
    assert launcher_context({}) is None
    with pytest.raises(ConfigurationError, match="WORLD_SIZE"):
        launcher_context({"RANK": "0", "WORLD_SIZE": "two"})


def test_rank_device_and_threads():
    assert rank_device(torch.device("cpu"), DistributedContext(1, 2, 1, 2)) == torch.device("cpu")
    with pytest.raises(ConfigurationError, match="mps"):
        rank_device(torch.device("mps"), DistributedContext(1, 2, 1, 2))
    assert threads_per_process(16, 4) == 4 and threads_per_process(2, 4) == 1


def test_one_process_context_makes_collectives_no_ops():
    single = DistributedContext()
    assert single.reduce([1.0, 2.0], "mean").tolist() == [1.0, 2.0]
    assert single.broadcast([3.0]).tolist() == [3.0]
    assert list(single.map_gathered(lambda x: x * 2, [1, 2, 3])) == [2, 4, 6]
    assert single.replica_spread(torch.nn.Linear(2, 2)) == 0.0


class _FakeCache:
    def get(self, case_id):
        seg = np.zeros((1, 4, 32, 32), np.int16)
        seg[0, :, 10:20, 10:20] = 1
        data = np.random.default_rng(0).normal(size=(1, 4, 32, 32)).astype(np.float32)
        return data, seg, {1: np.argwhere(seg[0] == 1)}


def _stream(rank: int, *, forced: int | None = None) -> BatchStream:
    sampler = PatchSampler(_FakeCache(), ["a"], dim=2, sample_size=(16, 16), batch_size=3, oversampling=0.33,
                           foreground_labels=[1], forced=forced)
    return BatchStream(sampler, None, seed=5, rank=rank)


def test_ranks_draw_different_batches_and_rank_0_draws_the_single_process_batch():
    single = BatchStream(PatchSampler(_FakeCache(), ["a"], dim=2, sample_size=(16, 16), batch_size=3,
                                      oversampling=0.33, foreground_labels=[1]), None, seed=5)
    rank0, rank1 = _stream(0), _stream(1)
    for iteration in range(3):
        assert torch.equal(single.batch(iteration)["image"], rank0.batch(iteration)["image"])
        assert not torch.equal(rank0.batch(iteration)["image"], rank1.batch(iteration)["image"])


def test_forced_override_puts_every_sample_on_foreground():
    stream = _stream(1, forced=3)
    assert stream.sampler.n_forced == 3
    for iteration in range(4):
        assert (stream.batch(iteration)["target"][0].flatten(1) == 1).any(1).all()
    with pytest.raises(ValueError, match="forced samples"):
        _stream(0, forced=4)


def test_failure_message_names_each_rank_and_how_it_ended():
    text = _failure_message("data-parallel training", {0: 1, 1: -signal.SIGKILL, 2: -signal.SIGTERM}, {2}, 60)
    assert "rank 1 was killed by SIGKILL" in text and "rank 0 exited with code 1" in text
    assert "rank(s) 2 stopped by autocmr" in text and "60 s (--ddp-timeout)" in text


def test_cli_takes_several_folds_and_the_parallel_options():
    from autocmr.cli.train import build_parser

    args = build_parser().parse_args(["101", "2d", "0", "1", "2", "--devices", "cuda:0", "cuda:1",
                                      "--ddp-timeout", "5m"])
    assert args.fold == ["0", "1", "2"] and args.devices == ["cuda:0", "cuda:1"] and args.num_processes == 1
    assert build_parser().parse_args(["101", "2d", "0", "--num-gpus", "4"]).num_processes == 4
    assert build_parser().parse_args(["101", "2d", "all", "--num-processes", "2"]).num_processes == 2


def test_conflicting_parallel_options_are_refused(tmp_path):
    from autocmr.settings import resolve_roots
    from autocmr.trainers.distributed_launch import TrainRequest, run_training
    from autocmr.trainers.options import TrainOptions

    request = TrainRequest("101", "2d", "0", resolve_roots(raw=tmp_path, preprocessed=tmp_path, results=tmp_path),
                           TrainOptions(device="cpu"))
    with pytest.raises(ConfigurationError, match="use one of them"):
        run_training(request, ["0"], num_processes=2, devices=["cpu"], environ={})
    torchrun = {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}
    with pytest.raises(ConfigurationError, match="torchrun/srun"):
        run_training(request, ["0"], num_processes=2, environ=torchrun)


def _dice_gradient_rank(rank: int, store_path: str, logits: torch.Tensor, target: torch.Tensor, out: str) -> None:
    import torch.distributed as dist

    from autocmr.trainers.distributed import DistributedContext
    from autocmr.trainers.loss import SoftDiceLoss

    dist.init_process_group("gloo", store=dist.FileStore(store_path, 2), rank=rank, world_size=2)
    try:
        share = slice(0, 3) if rank == 0 else slice(3, 5)  # unequal shares, as batch 5 on 2 processes
        mine = logits[share].clone().requires_grad_(True)
        loss = SoftDiceLoss(batch_dice=True, sum_across=DistributedContext.sum_with_gradients)(mine, target[share])
        loss.backward()
        torch.save({"loss": loss.detach(), "grad": mine.grad}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()
    # the group is gone with its threads: none may live on into the interpreter's teardown (where a rank that
    # exits before the others can abort)
    Path(f"{out}/rank{rank}_threads.txt").write_text("\n".join(_thread_names()))


def _thread_names() -> list[str]:
    return [Path(f"/proc/self/task/{task}/comm").read_text().strip() for task in os.listdir("/proc/self/task")]


def test_batch_dice_of_a_data_parallel_run_is_the_global_batchs(tmp_path):
    """Each process holds a share of the batch: summed across processes, the Dice and, once DDP averages the
    gradients over the 2 processes, its gradient are those of one process with the whole batch."""
    import torch.multiprocessing as mp

    from autocmr.trainers.loss import SoftDiceLoss

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 4, 12, 12, generator=generator)
    target = torch.randint(0, 4, (5, 1, 12, 12), generator=generator)
    target[3:] = 0  # the second share has no foreground: its own Dice would be a different loss
    mp.spawn(_dice_gradient_rank, args=(str(tmp_path / "store"), logits, target, str(tmp_path)), nprocs=2)
    whole = logits.clone().requires_grad_(True)
    expected = SoftDiceLoss(batch_dice=True)(whole, target)
    expected.backward()
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    for r, share in ((0, slice(0, 3)), (1, slice(3, 5))):
        assert torch.allclose(results[r]["loss"], expected.detach(), atol=1e-6)
        assert torch.allclose(results[r]["grad"] / 2, whole.grad[share], atol=1e-7)  # DDP's mean over 2 ranks
        if Path("/proc/self/task").is_dir():
            left = (tmp_path / f"rank{r}_threads.txt").read_text().split()
            assert not [name for name in left if "gloo" in name], left
