"""Fine-tuning from a trained model: load its weights, adapt the segmentation heads to a new label set,
and freeze parts of the network.

Heads are matched by label name: a label the pretrained model knew (e.g. LV, MYO) keeps its output
channel's weights; new labels start from He initialisation (each unmatched label is logged as a warning).
Background, value 0, keeps the pretrained background channel whatever its name. With ``freeze='decoder'``
the encoder adapts to the new scanner's images while the decoder's shape knowledge is kept (the few-case
recipe of the cross-site research); ``freeze='encoder'`` does the opposite, optionally unfreezing the first
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
    """The checkpoint to start from: fold 'all' if trained, else the first fold's final checkpoint (logged,
    naming the fold: one of several cross-validation models is used, trained on part of the cases only)."""
    folds = model.available_folds("final")
    if not folds:
        raise ConfigurationError(f"{model.path}: no fold has a checkpoint_final.pth to fine-tune from")
    if "all" in folds:
        fold = "all"
        logger.info("fine-tuning from %s fold all's weights", model.path)
    else:
        fold = folds[0]
        logger.warning("fine-tuning from %s fold %s's weights: the model has no fold 'all', and of its "
                       "cross-validation folds (%s) the first is used", model.path, fold, ", ".join(folds))
    return model.checkpoint_path(fold, "final")


def _foreground(labels: dict[str, int]) -> dict[str, int]:
    return {name: value for name, value in labels.items() if value != 0}


def head_channel_map(old_labels: dict[str, int], new_labels: dict[str, int]) -> dict[int, int]:
    """New output channel -> old output channel: background (value 0) to background whatever either side calls
    it ("bg", "background": channel 0 is background by convention), foreground labels by name."""
    old_by_name = _foreground(old_labels)
    shared = {value: old_by_name[name] for name, value in _foreground(new_labels).items() if name in old_by_name}
    if not shared:
        raise ConfigurationError(f"label sets do not map: the pretrained model knows {sorted(old_labels)}, the new "
                                 f"dataset has {sorted(new_labels)}; at least one foreground label name must match")
    return {0: 0, **shared}


def unmatched_labels(old_labels: dict[str, int], new_labels: dict[str, int]) -> tuple[list[str], list[str]]:
    """(the new dataset's foreground labels the pretrained model does not know, the pretrained model's
    foreground labels the new dataset lacks), by name as :func:`head_channel_map` matches them."""
    old_names, new_names = set(_foreground(old_labels)), set(_foreground(new_labels))
    return sorted(new_names - old_names), sorted(old_names - new_names)


def _warn_unmatched(model: ModelFolder, new_labels: dict[str, int]) -> None:
    """A label name spelt differently on the two sides ("LV" and "lv", "MYO" and "Myo") starts from scratch
    without failing: name each such label, so that a renaming mistake is seen before the run is judged."""
    new_only, old_only = unmatched_labels(model.plans.labels, new_labels)
    for name in new_only:
        logger.warning("fine-tuning: label %r of the new dataset is not one %s knows (%s); its output channel "
                       "starts untrained", name, model.path, sorted(_foreground(model.plans.labels)))
    for name in old_only:
        logger.warning("fine-tuning: label %r of %s has no label of that name in the new dataset (%s); its output "
                       "channel's weights are dropped", name, model.path, sorted(_foreground(new_labels)))


def load_pretrained(network: GenericUNet, model: ModelFolder, new_labels: dict[str, int]) -> dict[str, int]:
    """Copy weights from ``model`` into ``network``; heads adapted by label name. Returns counts for the log."""
    state = model.load_checkpoint(pretrained_checkpoint(model))["network"]  # verified, weights_only
    expected = model.configuration.input_channels(len(model.plans.channel_names))  # context slices included
    if expected != network.encoder[0][0][0].in_channels:
        raise ConfigurationError(f"{model.path}: pretrained model takes {expected} input channel(s), the new "
                                 f"dataset's network has {network.encoder[0][0][0].in_channels}")
    mapping = head_channel_map(model.plans.labels, new_labels)
    _warn_unmatched(model, new_labels)
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
