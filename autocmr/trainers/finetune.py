"""Fine-tuning from a trained model: load its weights, adapt the segmentation heads to a new label set,
and freeze parts of the network.

Heads are matched by label name: a label the pretrained model knew (e.g. LV, MYO) keeps its output
channel's weights; new labels start from He initialisation. With ``freeze='decoder'`` the encoder adapts to
the new scanner's images while the decoder's shape knowledge is kept (the few-case recipe of the
cross-site research); ``freeze='encoder'`` does the opposite, optionally unfreezing the first
``unfreeze_blocks`` encoder stages (those that see raw intensities).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

from torch import nn

from autocmr.errors import ConfigurationError
from autocmr.models.folder import ModelFolder
from autocmr.networks.unet import GenericUNet

logger = logging.getLogger(__name__)


def pretrained_checkpoint(model: ModelFolder) -> Path:
    """The checkpoint to start from: fold 'all' if trained, else the first fold's final checkpoint."""
    folds = model.available_folds("final")
    if not folds:
        raise ConfigurationError(f"{model.path}: no fold has a checkpoint_final.pth to fine-tune from")
    fold = "all" if "all" in folds else folds[0]
    return model.checkpoint_path(fold, "final")


def head_channel_map(old_labels: dict[str, int], new_labels: dict[str, int]) -> dict[int, int]:
    """New output channel -> old output channel, by label name (background always maps)."""
    old_by_name = {name: value for name, value in old_labels.items()}
    mapping = {new_value: old_by_name[name] for name, new_value in new_labels.items() if name in old_by_name}
    shared = [n for n in new_labels if n in old_by_name and new_labels[n] != 0]
    if not shared:
        raise ConfigurationError(f"label sets do not map: the pretrained model knows {sorted(old_labels)}, the new "
                                 f"dataset has {sorted(new_labels)}; at least one foreground label name must match")
    return mapping


def load_pretrained(network: GenericUNet, model: ModelFolder, new_labels: dict[str, int]) -> dict[str, int]:
    """Copy weights from ``model`` into ``network``; heads adapted by label name. Returns counts for the log."""
    state = model.load_checkpoint(pretrained_checkpoint(model))["network"]  # verified, weights_only
    expected = model.configuration.input_channels(len(model.plans.channel_names))  # context slices included
    if expected != network.encoder[0][0][0].in_channels:
        raise ConfigurationError(f"{model.path}: pretrained model takes {expected} input channel(s), the new "
                                 f"dataset's network has {network.encoder[0][0][0].in_channels}")
    mapping = head_channel_map(model.plans.labels, new_labels)
    own = network.state_dict()
    copied, adapted = 0, 0
    for key, value in state.items():
        if key not in own:
            raise ConfigurationError(f"{model.path}: pretrained weights do not fit this network ({key} unknown)")
        if key.startswith("heads."):  # output channels follow label names; new labels keep He init
            target = own[key].clone()
            for new_c, old_c in mapping.items():
                target[new_c] = value[old_c]
            own[key] = target
            adapted += 1
        elif own[key].shape != value.shape:
            raise ConfigurationError(f"{model.path}: pretrained tensor {key} has shape {tuple(value.shape)}, "
                                     f"network expects {tuple(own[key].shape)}")
        else:
            own[key] = value
            copied += 1
    network.load_state_dict(own)
    return {"copied": copied, "adapted_heads": adapted, "mapped_labels": len(mapping)}


def freeze(network: GenericUNet, mode: str, unfreeze_blocks: int = 0) -> list[nn.Parameter]:
    """Set ``requires_grad`` per the freeze mode; returns the trainable parameters."""
    for p in network.parameters():
        p.requires_grad_(True)
    frozen: Sequence[nn.Module] = []
    if mode == "encoder":
        if not 0 <= unfreeze_blocks <= len(network.encoder):
            raise ConfigurationError(f"--unfreeze-blocks must be 0..{len(network.encoder)}, got {unfreeze_blocks}")
        frozen = list(network.encoder)[unfreeze_blocks:]
    elif mode == "decoder":
        frozen = [network.upsample, network.decoder]
    elif mode != "none":
        raise ConfigurationError(f"unknown freeze mode {mode!r}; valid: none, encoder, decoder")
    for module in frozen:
        for p in module.parameters():
            p.requires_grad_(False)
    return [p for p in network.parameters() if p.requires_grad]
