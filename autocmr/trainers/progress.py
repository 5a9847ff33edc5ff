"""Run log (``log.txt``), per-epoch metrics and the ``progress.png`` figure."""
from __future__ import annotations

import datetime as _dt
import logging
from pathlib import Path
from typing import Any

from autocmr.io.atomic import atomic_path

logger = logging.getLogger(__name__)


class RunLog:
    """Appends timestamped lines to ``log.txt`` and mirrors them to the logger."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, message: str) -> None:
        stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(f"{stamp}: {message}\n")
        logger.info(message)


def plot_progress(history: dict[str, list[Any]], path: Path) -> None:
    """Losses and pseudo-Dice, learning rate, and epoch duration per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = list(range(len(history.get("train_loss", []))))
    if not epochs:
        return
    fig, axes = plt.subplots(3, 1, figsize=(10, 11), sharex=True)
    ax = axes[0]
    ax.plot(epochs, history["train_loss"], label="train loss", color="tab:blue")
    ax.plot(epochs, history["val_loss"], label="val loss", color="tab:red")
    ax.set_ylabel("loss")
    twin = ax.twinx()
    twin.plot(epochs, history["pseudo_dice"], label="pseudo Dice", color="tab:green", linestyle=":")
    twin.plot(epochs, history["ema_dice"], label="pseudo Dice (EMA)", color="tab:green")
    twin.set_ylabel("pseudo Dice")
    twin.set_ylim(0, 1)
    ax.legend(loc="upper left")
    twin.legend(loc="lower right")
    axes[1].plot(epochs, history["lr"], color="tab:purple")
    axes[1].set_ylabel("learning rate")
    axes[2].plot(epochs, history["epoch_time"], color="tab:orange")
    axes[2].set_ylabel("epoch time (s)")
    axes[2].set_xlabel("epoch")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
