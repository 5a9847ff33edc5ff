"""The trainer's data pipeline (autocmr.trainers.pipeline): loader workers per device, and streams that start
where a resumed run left off."""
from __future__ import annotations

import pytest
import torch

from autocmr.documents.plans import Plans
from autocmr.preprocessing import storage
from autocmr.trainers import pipeline
from autocmr.trainers.distributed import DistributedContext, batch_share
from autocmr.trainers.loader import deep_supervision_scales
from autocmr.trainers.options import TrainOptions
from autocmr.trainers.pipeline import DataPipeline


def _pipeline(tiny_model, options: TrainOptions, device: str = "cpu",
              distributed: DistributedContext = DistributedContext()) -> tuple[DataPipeline, list[str]]:
    model_dir, roots = tiny_model
    plans = Plans.load(model_dir / "plans.json")
    config = plans.configuration("2d")
    data = roots.preprocessed / plans.dataset_name / config.data_identifier
    pipe = DataPipeline(data, config, plans.foreground_labels, options, torch.device(device),
                        batch_share(8, 2, distributed), deep_supervision_scales(config.topology.strides, 2),
                        distributed)
    return pipe, storage.list_cases(data)


@pytest.mark.parametrize("asked,device,cores,ranks,expected", [
    (3, "cpu", 16, 1, 3),  # --num-workers wins
    (None, "cpu", 2, 1, 0),  # a small CPU machine makes its batches in-process
    (None, "cpu", 16, 1, 2),
    (None, "cuda", 16, 1, 8),
    (None, "cuda", 16, 4, 3),  # four ranks share the machine's cores
])
def test_loader_workers_suit_the_device_and_the_ranks_sharing_the_machine(tiny_model, monkeypatch, asked, device,
                                                                           cores, ranks, expected) -> None:
    monkeypatch.setattr(pipeline, "default_workers", lambda: cores)
    pipe, _ = _pipeline(tiny_model, TrainOptions(num_workers=asked), device, DistributedContext(0, ranks, 0, ranks))
    assert pipe.workers() == expected


def test_a_resumed_run_draws_the_batches_of_an_uninterrupted_one(tiny_model) -> None:
    options = TrainOptions(iterations_per_epoch=3, val_iterations=2, num_workers=0, seed=4)
    pipe, cases = _pipeline(tiny_model, options)
    train_it, val_it = pipe.iterators(cases[:4], cases[4:], epoch=0)
    for _ in range(3):
        next(train_it)
    for _ in range(2):
        next(val_it)
    resumed_train, resumed_val = pipe.iterators(cases[:4], cases[4:], epoch=1)
    for uninterrupted, resumed in ((train_it, resumed_train), (val_it, resumed_val)):
        a, b = next(uninterrupted), next(resumed)
        assert torch.equal(a["image"], b["image"])
        assert all(torch.equal(x, y) for x, y in zip(a["target"], b["target"]))
    assert len(next(resumed_train)["target"]) == 2  # deep-supervision targets at two scales


def test_device_processes_share_the_cores_among_their_loaders(monkeypatch) -> None:
    """``--devices cuda:0 cuda:1`` on 16 cores: each device's training gets the workers of 8 cores, not 16."""
    from autocmr.trainers import distributed_launch
    from autocmr.trainers.distributed_launch import TrainRequest, _with_share_of_cores

    monkeypatch.setattr(distributed_launch, "default_workers", lambda: 16)
    monkeypatch.setattr(distributed_launch, "_resolve", torch.device)  # no GPU needed to name one
    request = TrainRequest("101", "2d", "0", None, TrainOptions())
    assert _with_share_of_cores(request, "cuda:1", 2).options.num_workers == 7
    assert _with_share_of_cores(request, "cuda:1", 1).options.num_workers == 8
    asked = TrainRequest("101", "2d", "0", None, TrainOptions(num_workers=3))
    assert _with_share_of_cores(asked, "cuda:1", 2).options.num_workers == 3  # --num-workers wins
