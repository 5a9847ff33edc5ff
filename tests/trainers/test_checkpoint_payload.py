"""A training run <-> checkpoint payload (autocmr.trainers.checkpoint): what is saved comes back into a fresh
network and optimizer, with the run's state and random states, and a checkpoint of other plans is refused."""
from __future__ import annotations

import pytest
import torch

from autocmr.errors import ConfigurationError
from autocmr.trainers.checkpoint import (check_resumable, load_checkpoint, restore_training, save_checkpoint,
                                        trained_precision, training_payload)
from autocmr.trainers.options import TrainOptions
from autocmr.trainers.state import HISTORY_KEYS, TrainState

TOPOLOGY = {"dim": 2, "features": (4, 8), "strides": ((1, 1), (2, 2))}


def _run(seed: int) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    net = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    net(torch.randn(5, 3)).sum().backward()
    optimizer.step()  # momentum buffers exist, so the optimizer state is not empty
    return net, optimizer


def test_a_run_round_trips_through_its_checkpoint(tmp_path) -> None:
    net, optimizer = _run(0)
    state = TrainState(epoch=3, train_seconds=12.5, wall_seconds=20.0, best_ema=0.7, ema=0.65, reserve_s=4.0,
                       reserve_device="cuda")
    for key in HISTORY_KEYS:
        state.history[key] += [1.0, 2.0, 3.0]
    cases = {"train": ["a_ED", "a_ES"], "val": ["b_ED"]}
    payload = training_payload(network=net, optimizer=optimizer, scaler=None, state=state, epochs=10,
                               options=TrainOptions(epochs=10), plans_name="autocmrPlans_cpu", configuration="2d",
                               topology=TOPOLOGY, precision="fp32", cases=cases)
    expected_draw = torch.rand(1)
    save_checkpoint(tmp_path / "checkpoint_latest.pth", payload)
    back = load_checkpoint(tmp_path / "checkpoint_latest.pth")
    assert back["epochs"] == 10 and back["options"]["epochs"] == 10 and back["plans_name"] == "autocmrPlans_cpu"
    assert back["precision"] == "fp32" and back["cases"] == cases

    fresh, fresh_optimizer = _run(1)
    assert not torch.equal(fresh.weight, net.weight)
    restored = restore_training(back, network=fresh, optimizer=fresh_optimizer, scaler=None,
                                plans_name="autocmrPlans_cpu", configuration="2d")
    assert restored == state
    assert torch.equal(fresh.weight, net.weight) and torch.equal(fresh.bias, net.bias)
    momentum = fresh_optimizer.state_dict()["state"][0]["momentum_buffer"]
    assert torch.equal(momentum, optimizer.state_dict()["state"][0]["momentum_buffer"])
    assert torch.equal(torch.rand(1), expected_draw)  # the random states are those of the save


def test_a_checkpoint_of_other_plans_or_configuration_is_refused(tmp_path) -> None:
    net, optimizer = _run(0)
    payload = training_payload(network=net, optimizer=optimizer, scaler=None, state=TrainState(), epochs=None,
                               options=TrainOptions(), plans_name="autocmrPlans", configuration="3d_fullres",
                               topology=TOPOLOGY)
    with pytest.raises(ConfigurationError, match="autocmrPlans/3d_fullres, not autocmrPlans_cpu/2d"):
        restore_training(payload, network=net, optimizer=optimizer, scaler=None, plans_name="autocmrPlans_cpu",
                         configuration="2d")


def test_a_state_written_before_wall_time_was_recorded_counts_training_time() -> None:
    old = {"epoch": 2, "train_seconds": 30.0, "best_ema": 0.5, "ema": 0.4, "reserve_s": None,
           "history": {k: [] for k in HISTORY_KEYS}}
    assert TrainState.from_dict(old).wall_seconds == 30.0


def test_the_precision_of_a_checkpoint_saved_before_it_was_recorded_follows_from_its_options() -> None:
    assert trained_precision({"precision": "bf16", "options": {"precision": "auto"}}) == "bf16"
    assert trained_precision({"options": {"precision": "bf16"}, "scaler": None}) == "bf16"
    # --precision auto trained in fp16 with a gradient scaler on CUDA, in fp32 without one elsewhere
    assert trained_precision({"options": {"precision": "auto"}, "scaler": {"scale": 1024.0}}) == "fp16"
    assert trained_precision({"options": {"precision": "auto"}, "scaler": None}) == "fp32"
    assert trained_precision({"options": {}}) == "fp32"


def test_a_header_without_training_keys_is_saved_without_them(tmp_path) -> None:
    """An exported model's checkpoint has no precision or cases: none are written as null."""
    save_checkpoint(tmp_path / "c.pth", {"network": {}, "plans_name": "p", "configuration": "2d", "topology": {},
                                         "epochs": 1, "options": {}})
    assert not {"precision", "cases"} & set(torch.load(tmp_path / "c.pth", weights_only=True))


def test_a_resume_whose_optimizer_trained_other_parameters_is_refused() -> None:
    net, optimizer = _run(0)
    payload = training_payload(network=net, optimizer=optimizer, scaler=None, state=TrainState(), epochs=1,
                               options=TrainOptions(), plans_name="p", configuration="2d", topology=TOPOLOGY)
    check_resumable(payload, network=net, plans_name="p", configuration="2d", path="c.pth")
    with pytest.raises(ConfigurationError, match=r"c\.pth: its optimizer trained other parameters \(2 tensors\) "
                                                 r"than this run would \(1\): --freeze"):
        check_resumable(payload, network=net, plans_name="p", configuration="2d", path="c.pth",
                        parameters=[net.weight])
    with pytest.raises(ConfigurationError, match="its optimizer trained other parameters"):  # as many, other shapes
        check_resumable(payload, network=net, plans_name="p", configuration="2d", path="c.pth",
                        parameters=[net.bias, net.weight])
