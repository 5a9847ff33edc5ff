"""Training options: everything that changes a run is a field here (and a CLI flag), not a subclass.

The resolved options are stored in the run folder with their hash, which identifies the experiment.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from autocmr.errors import ConfigurationError

FREEZE_CHOICES = ("none", "encoder", "decoder")
LEARNING_RATE = 1e-2
# Fine-tuning starts ten times lower: at 1e-2 (with momentum 0.99) a few cases of a new site pull the
# pretrained weights far from what they learnt, and the tuned model ends up worse than the untuned one.
FINETUNE_LEARNING_RATE = 1e-3


@dataclass(frozen=True)
class TrainOptions:
    """Options of one training run. ``None`` means: choose a sensible value for this device/plan."""

    epochs: int | None = None  # default 1000 on GPU; on CPU the time budget decides
    iterations_per_epoch: int = 250
    val_iterations: int = 50  # pseudo-Dice batches per epoch (no augmentation)
    learning_rate: float | None = None  # LEARNING_RATE, or FINETUNE_LEARNING_RATE with ``pretrained``
    weight_decay: float = 3e-5
    momentum: float = 0.99
    poly_exponent: float = 0.9
    grad_clip: float = 12.0
    augmentation: str = "default"
    elastic: bool = False  # add elastic deformation to the preset (slower; off in the nnU-Net recipe)
    time_budget_s: float | None = None  # wall-clock budget for the whole run (training + final validation)
    seed: int = 0
    device: str = "auto"
    num_workers: int | None = None  # background augmentation workers
    batch_size: int | None = None  # override the plans' batch size
    save_every: int = 5  # epochs between 'latest' checkpoints
    ema_decay: float = 0.9  # of the pseudo-Dice used to pick the best checkpoint
    deep_supervision: bool = True
    final_validation: bool = True
    mirror_validation: bool = True  # test-time mirroring in the final validation
    pretrained: str | None = None  # model folder (or checkpoint) to fine-tune from
    freeze: str = "none"
    unfreeze_blocks: int = 0  # with --freeze encoder: still train this many of the first encoder stages

    def __post_init__(self) -> None:
        if self.learning_rate is None:  # frozen dataclass: resolve the default once, so it is stored and hashed
            object.__setattr__(self, "learning_rate", FINETUNE_LEARNING_RATE if self.pretrained else LEARNING_RATE)
        if self.freeze not in FREEZE_CHOICES:
            raise ConfigurationError(f"--freeze must be one of {FREEZE_CHOICES}, got {self.freeze!r}")
        for name in ("iterations_per_epoch", "save_every"):
            if getattr(self, name) < 1:
                raise ConfigurationError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.epochs is not None and self.epochs < 1:
            raise ConfigurationError(f"epochs must be >= 1, got {self.epochs}")
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            raise ConfigurationError(f"time budget must be positive, got {self.time_budget_s} s")
        if self.learning_rate <= 0:
            raise ConfigurationError(f"learning rate must be positive, got {self.learning_rate}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]

    def updated(self, **changes: Any) -> "TrainOptions":
        return replace(self, **changes)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainOptions":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def parse_duration(text: str) -> float:
    """'60m', '1h30m', '45s', '2h' or plain seconds -> seconds."""
    text = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([hms])", text)
    if not parts or "".join(f"{n}{u}" for n, u in parts) != text.replace(" ", ""):
        raise ConfigurationError(f"cannot read duration {text!r}; use e.g. 60m, 1h30m, 90s")
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0}
    return sum(float(n) * scale[u] for n, u in parts)
