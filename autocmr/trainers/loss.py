"""Dice + cross-entropy (weights chosen by the training options), summed over deep-supervision outputs with
decreasing weights."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

DICE_SMOOTH = 1e-5


class SoftDiceLoss(nn.Module):
    """1 - mean foreground soft Dice. With ``batch_dice`` the sums run over the whole batch (more stable
    for 2D slices, many of which contain only some classes). ``sum_across``: with ``batch_dice`` in a
    data-parallel run, a sum over the processes that carries gradients (``torch.distributed.nn.functional
    .all_reduce``), so the Dice is the global batch's, as one process would compute it (each process holds a
    share, and the forced-foreground samples, last in the batch, may all sit on one of them)."""

    def __init__(self, *, batch_dice: bool, include_background: bool = False, smooth: float = DICE_SMOOTH,
                 sum_across: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        super().__init__()
        self.batch_dice = batch_dice
        self.include_background = include_background
        self.smooth = smooth
        self.sum_across = sum_across if batch_dice else None

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(logits.float(), dim=1)
        onehot = torch.zeros_like(probs).scatter_(1, target.long(), 1.0)
        if not self.include_background:
            probs, onehot = probs[:, 1:], onehot[:, 1:]
        axes = tuple(range(2, probs.ndim))
        if self.batch_dice:
            axes = (0,) + axes
        intersect = (probs * onehot).sum(axes)
        denominator = probs.sum(axes) + onehot.sum(axes)
        if self.sum_across is not None:
            intersect, denominator = self.sum_across(torch.stack([intersect, denominator])).unbind(0)
        dice = (2 * intersect + self.smooth) / (denominator + self.smooth).clamp_min(1e-8)
        return 1.0 - dice.mean()


class DiceCELoss(nn.Module):
    def __init__(self, *, batch_dice: bool, weight_dice: float = 1.0, weight_ce: float = 1.0,
                 sum_across: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        super().__init__()
        self.dice = SoftDiceLoss(batch_dice=batch_dice, sum_across=sum_across)
        self.weight_dice, self.weight_ce = weight_dice, weight_ce

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``target``: (b, 1, ...) integer labels."""
        loss = self.weight_ce * F.cross_entropy(logits.float(), target[:, 0].long())
        if self.weight_dice:  # weight 0 (cross-entropy only) skips the Dice term's softmax and sums
            loss = loss + self.weight_dice * self.dice(logits, target)
        return loss


def deep_supervision_weights(n_outputs: int) -> list[float]:
    """Halving weights, full resolution first; the coarsest output gets 0 (too coarse to be useful)."""
    w = [1.0 / 2**i for i in range(n_outputs)]
    if n_outputs > 1:
        w[-1] = 0.0
    total = sum(w)
    return [x / total for x in w]


class DeepSupervisionLoss(nn.Module):
    def __init__(self, loss: nn.Module, n_outputs: int) -> None:
        super().__init__()
        self.loss = loss
        self.weights = deep_supervision_weights(n_outputs)

    def forward(self, outputs: list[torch.Tensor] | torch.Tensor, targets: list[torch.Tensor]) -> torch.Tensor:
        if isinstance(outputs, torch.Tensor):
            return self.loss(outputs, targets[0])
        total = outputs[0].new_zeros(())
        for w, out, tgt in zip(self.weights, outputs, targets):
            if w > 0:
                total = total + w * self.loss(out, tgt)
        return total
