"""Training checkpoints: everything needed to resume a run exactly, in the checkpoint document's format
(:mod:`autocmr.documents.checkpoint`: tensors and plain values only, read with ``weights_only=True``).

This module is the one place that turns a run into a checkpoint payload and back: the document's header, the
network, and the training keys (``optimizer``, ``scaler``, ``state``, ``rng``)."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from autocmr.documents.checkpoint import (CheckpointHeader, load_checkpoint, numpy_rng_from_plain, numpy_rng_to_plain,
                                          save_checkpoint)
from autocmr.errors import ConfigurationError
from autocmr.trainers.options import TrainOptions
from autocmr.trainers.state import TrainState

__all__ = ["check_resumable", "data_settings", "fold_cases", "load_checkpoint", "restore_rng_state",
           "restore_training", "rng_state",
           "save_checkpoint", "trained_precision", "training_payload"]


def training_payload(*, network: torch.nn.Module, optimizer: torch.optim.Optimizer,
                     scaler: torch.amp.GradScaler | None, state: TrainState, epochs: int | None,
                     options: TrainOptions, plans_name: str, configuration: str,
                     topology: dict[str, Any], precision: str | None = None,
                     cases: dict[str, list[str]] | None = None,
                     data: dict[str, Any] | None = None) -> dict[str, Any]:
    """What :func:`save_checkpoint` writes for a training run (the process's random states included).
    ``precision``: the one ``options.precision`` resolved to; ``cases``: :func:`fold_cases` of the fold;
    ``data``: :func:`data_settings` of its configuration."""
    header = CheckpointHeader(plans_name, configuration, topology, epochs, options.to_dict(), precision=precision,
                              cases=cases, data_settings=data)
    return {**header.to_payload(), "network": network.state_dict(), "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler else None, "state": state.to_dict(), "rng": rng_state()}


def data_settings(config: Any) -> dict[str, Any]:
    """What a plans configuration says of the data a network trains on, beyond its tensors' shapes: another
    plan (autocmr_plan run again, a new autocmr's planner) may keep the network and change these, and a run
    resumed on them would train its last epochs on other patches or differently preprocessed images."""
    return {"data_identifier": config.data_identifier, "spacing": [float(v) for v in config.spacing],
            "patch_size": [int(v) for v in config.patch_size], "batch_size": int(config.batch_size),
            "foreground_oversampling": float(config.foreground_oversampling),
            "normalization": list(config.normalization), "context_slices": int(config.context_slices),
            "other_phase": bool(config.other_phase)}


def fold_cases(train: Sequence[str], val: Sequence[str]) -> dict[str, list[str]]:
    """The checkpoint's record of the cases its fold trains and validates on (sorted: compared as sets)."""
    return {"train": sorted(str(c) for c in train), "val": sorted(str(c) for c in val)}


def trained_precision(payload: dict[str, Any]) -> str:
    """The precision a training checkpoint's run used. Checkpoints written before the header recorded it
    stored the literal option: ``auto`` trained in fp16 (with a gradient scaler) on CUDA, in fp32 elsewhere."""
    if payload.get("precision"):
        return str(payload["precision"])
    requested = str((payload.get("options") or {}).get("precision") or "auto")
    if requested != "auto":
        return requested
    return "fp16" if payload.get("scaler") else "fp32"


def check_resumable(payload: dict[str, Any], *, network: torch.nn.Module, plans_name: str, configuration: str,
                    path: Path | str, parameters: Sequence[torch.nn.Parameter] | None = None) -> None:
    """Refuse to resume ``payload`` into ``network`` before anything of the model folder is rewritten: a
    checkpoint of other plans or another configuration, or whose network has other tensors or shapes (the
    dataset was re-planned since, e.g. with context slices), names the checkpoint and the first difference.
    ``parameters``: those the resumed optimizer will train (the network's trainable ones when not given);
    another ``--freeze`` gives other ones, which the checkpoint's optimizer state does not fit."""
    if payload.get("configuration") != configuration or payload.get("plans_name") != plans_name:
        raise ConfigurationError(f"{path}: checkpoint is from {payload.get('plans_name')}/"
                                 f"{payload.get('configuration')}, not {plans_name}/{configuration}; resume with the "
                                 "plans it was trained with (-p), or train the fold again without --continue")
    stored, expected = payload.get("network") or {}, network.state_dict()
    for name in sorted(set(stored) | set(expected)):
        old = tuple(stored[name].shape) if name in stored else None
        new = tuple(expected[name].shape) if name in expected else None
        if old != new:
            raise ConfigurationError(f"{path}: its network does not match the current plans ({name}: "
                                     f"{old or 'absent'} in the checkpoint, {new or 'absent'} now; the dataset was "
                                     "re-planned since this fold was trained); train the fold again without "
                                     "--continue, or plan it as before")
    trained = list(parameters) if parameters is not None else [p for p in network.parameters() if p.requires_grad]
    _check_optimizer_fits(payload.get("optimizer"), trained, path)


def _check_optimizer_fits(optimizer: Any, parameters: Sequence[torch.nn.Parameter], path: Path | str) -> None:
    """The optimizer a run resumes into has one parameter group of ``parameters`` (:class:`Trainer`); the
    checkpoint's must have as many tensors, of the same shapes where it kept momentum for them. Otherwise
    ``load_state_dict`` would fail only after the run options were rewritten (or, with equal counts, attach
    momentum to other tensors)."""
    if not isinstance(optimizer, dict) or not optimizer.get("param_groups"):
        return  # nothing to load into the optimizer: restore_training says so
    stored = [len(group.get("params", ())) for group in optimizer["param_groups"]]
    differs = stored != [len(parameters)]
    if not differs:
        buffers = [((optimizer.get("state") or {}).get(i) or {}).get("momentum_buffer") for i in range(len(parameters))]
        differs = any(isinstance(b, torch.Tensor) and b.shape != p.shape for b, p in zip(buffers, parameters))
    if differs:
        raise ConfigurationError(f"{path}: its optimizer trained other parameters ({' + '.join(map(str, stored))} "
                                 f"tensors) than this run would ({len(parameters)}): --freeze or --unfreeze-blocks "
                                 "differs from the run's; resume with the ones it was trained with, or train the "
                                 "fold again without --continue")


def restore_training(payload: dict[str, Any], *, network: torch.nn.Module, optimizer: torch.optim.Optimizer,
                     scaler: torch.amp.GradScaler | None, plans_name: str, configuration: str) -> TrainState:
    """Load a :func:`training_payload` into ``network``, ``optimizer`` and ``scaler`` and the process's random
    states; returns the run's state. Refuses a checkpoint of other plans or another configuration."""
    if payload.get("configuration") != configuration or payload.get("plans_name") != plans_name:
        raise ConfigurationError(f"checkpoint is from {payload.get('plans_name')}/{payload.get('configuration')}, "
                                 f"not {plans_name}/{configuration}")
    try:
        network.load_state_dict(payload["network"])
        optimizer.load_state_dict(payload["optimizer"])
    except (RuntimeError, ValueError, KeyError) as exc:  # a re-planned network, another --freeze's parameter groups
        raise ConfigurationError(f"checkpoint does not fit this run ({str(exc).splitlines()[0]}); resume with the "
                                 "plans and --freeze it was trained with, or train the fold again without "
                                 "--continue") from exc
    if scaler is not None and payload.get("scaler"):
        scaler.load_state_dict(payload["scaler"])
    restore_rng_state(payload["rng"])
    return TrainState.from_dict(payload["state"])


def rng_state() -> dict[str, Any]:
    """The process's random states as tensors and plain values (python's is a tuple of ints)."""
    state = {"python": random.getstate(), "numpy": numpy_rng_to_plain(np.random.get_state()),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    np.random.set_state(numpy_rng_from_plain(state["numpy"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        # one state per GPU the saving process saw; a resume may see fewer (another node, CUDA_VISIBLE_DEVICES)
        for index, gpu_state in enumerate(state["cuda"][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(gpu_state, index)
