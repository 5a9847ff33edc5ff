"""Where a training run stands (epochs done, time spent, pseudo-Dice history): what a checkpoint carries so
that a resumed run continues exactly, and what the schedule (:mod:`autocmr.trainers.schedule`) reads."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

HISTORY_KEYS = ("train_loss", "val_loss", "pseudo_dice", "ema_dice", "lr", "epoch_time", "class_dice")


@dataclass
class TrainState:
    epoch: int = 0  # epochs completed
    train_seconds: float = 0.0  # time spent in completed epochs (survives resumes)
    wall_seconds: float = 0.0  # wall-clock time of the run so far, set-up and checkpoints included (survives resumes)
    best_ema: float = -1.0
    ema: float | None = None
    reserve_s: float | None = None  # time kept for the final validation (measured)
    history: dict[str, list[Any]] = field(default_factory=lambda: {k: [] for k in HISTORY_KEYS})
    reserve_device: str | None = None  # the device type reserve_s was measured on (None: not recorded)

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint's ``state`` entry (plain values only)."""
        return {"epoch": self.epoch, "train_seconds": self.train_seconds, "wall_seconds": self.wall_seconds,
                "best_ema": self.best_ema, "ema": self.ema, "reserve_s": self.reserve_s, "history": self.history,
                "reserve_device": self.reserve_device}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainState":
        # checkpoints written before wall time was recorded count their training time as wall time
        return cls(d["epoch"], d["train_seconds"], d.get("wall_seconds", d["train_seconds"]), d["best_ema"],
                   d["ema"], d["reserve_s"], d["history"], d.get("reserve_device"))
