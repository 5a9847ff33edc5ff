"""One rank of a data-parallel test run, started by ``torchrun`` from tests/trainers/test_ddp_training.py.

It trains through the launcher-detection path (:func:`run_training` sees torchrun's environment) and records,
outside the model folder, what the test needs to see: each rank's weights when training starts (after a
resume) and ends, and every file a rank other than 0 opened for writing inside the model folder.
"""
from __future__ import annotations

import argparse
import builtins
import json
import os
from pathlib import Path

import torch

from autocmr.settings import resolve_roots
from autocmr.trainers.distributed import end_rank_process, launcher_context
from autocmr.trainers.distributed_launch import TrainRequest, run_training
from autocmr.trainers.options import TrainOptions
from autocmr.trainers.trainer import Trainer


def _record_writes(model_dir: Path, sink: list[str]) -> None:
    """Note every write-mode open and rename under ``model_dir`` (Python-level: torch.save, JSON, plots)."""
    real_open, real_replace = builtins.open, os.replace

    def inside(path) -> bool:
        try:
            return Path(path).resolve().is_relative_to(model_dir)
        except TypeError:
            return False  # a file descriptor

    def recording_open(file, mode="r", *args, **kwargs):
        if any(m in mode for m in "wax+") and inside(file):
            sink.append(str(file))
        return real_open(file, mode, *args, **kwargs)

    def recording_replace(src, dst, *args, **kwargs):
        if inside(dst):
            sink.append(str(dst))
        return real_replace(src, dst, *args, **kwargs)

    builtins.open, os.replace = recording_open, recording_replace


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True, help="folder holding raw/ pre/ (the planned phantom dataset)")
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--output", required=True)
    ap.add_argument("--dumps", required=True)
    ap.add_argument("--options", required=True, help="TrainOptions as JSON")
    ap.add_argument("--stop-after", type=int, default=None, help="end the run after this many epochs")
    ap.add_argument("--continue", dest="continue_training", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    context = launcher_context(os.environ)
    assert context is not None and context.enabled, "start this script with torchrun"
    dumps, model_dir = Path(args.dumps), Path(args.output).resolve()
    dumps.mkdir(parents=True, exist_ok=True)
    writes: list[str] = []
    if not context.is_main:
        _record_writes(model_dir, writes)

    def dump(name: str):
        def hook(trainer: Trainer, *rest):
            torch.save(trainer.network.state_dict(), dumps / f"rank{context.rank}_{name}.pt")
            return original[name](trainer, *rest)
        return hook

    original = {"start": Trainer.on_train_start, "end": Trainer.on_train_end}
    Trainer.on_train_start, Trainer.on_train_end = dump("start"), dump("end")
    if args.stop_after is not None:
        original_finished = Trainer.finished
        Trainer.finished = lambda self: self.state.epoch >= args.stop_after or original_finished(self)
    roots = resolve_roots(raw=Path(args.base) / "raw", preprocessed=Path(args.base) / "pre",
                          results=Path(args.base) / "res")
    request = TrainRequest(args.dataset, "2d", "0", roots, TrainOptions(**json.loads(args.options)),
                           continue_training=args.continue_training, output_dir=args.output)
    run_training(request, ["0"], timeout_s=120)
    (dumps / f"rank{context.rank}_writes.json").write_text(json.dumps(writes))
    end_rank_process(0)  # as autocmr_train ends a launched rank


if __name__ == "__main__":
    main()
