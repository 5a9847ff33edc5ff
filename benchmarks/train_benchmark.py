"""Issue #3 benchmark: CPU training throughput of autocmr_train vs nnU-Net's trainer with the same network,
patch and batch (autocmr's CPU-target 2d plans, rebuilt in nnU-Net and checked layer by layer), same folds,
one benchmark run. Each tool trains fold 0 for a few epochs of 250 iterations + 50 validation iterations
with its default data-loading set-up; the median steady-state epoch time (first epoch of each run
excluded) gives iterations/s. The tools take turns (autocmr, nnU-Net, autocmr, nnU-Net, ...) so that a slow
spell of the shared machine does not fall on one tool only.

    python benchmarks/train_benchmark.py [--epochs 3] [--repeats 2]
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys

import peer
from acdc_pair import CONFIG, prepare, run_until_epochs
from common import ACDC, WORK, fresh, machine, require, save_results, script
from measure import run_measured

ITERATIONS, VAL_ITERATIONS = 250, 50


def autocmr_epoch_times(pair, epochs: int, logs) -> list[float]:
    out = pair.base / "autocmr_throughput_model"
    cmd = [script("autocmr_train"), "101", "2d", "0", "-p", "autocmrPlans_cpu", "--epochs", str(epochs),
           "--iterations", str(ITERATIONS), "--val-iterations", str(VAL_ITERATIONS), "--no-final-validation",
           "--device", "cpu", "-o", str(out)]
    m = run_measured(cmd, env=pair.autocmr_env, log_path=logs / "autocmr_train.log", interval_s=1.0)
    assert m.returncode == 0, "autocmr_train failed"
    import torch

    state = torch.load(out / "fold_0" / "checkpoint_final.pth", weights_only=True)["state"]
    return [float(t) for t in state["history"]["epoch_time"]], m


def nnunet_epoch_times(pair, epochs: int, logs) -> list[float]:
    trainers = pair.base / "nnunet_trainers"
    name = peer.write_trainer_variant(trainers, num_epochs=epochs, iterations_per_epoch=ITERATIONS,
                                      val_iterations_per_epoch=VAL_ITERATIONS)
    env = pair.nnunet_env(ext_trainer_dir=trainers)
    fold_dir = peer.nnunet_roots(pair.nnunet_root).results / "Dataset101_ACDC" / f"{name}__nnUNetPlans__{CONFIG}" / "fold_0"
    cmd = peer.train_cmd(101, CONFIG, 0, trainer=name, device="cpu")
    shutil.rmtree(fold_dir, ignore_errors=True)  # else the previous run's log is read as this one's
    return run_until_epochs(cmd, env, lambda: list(fold_dir.glob("training_log_*.txt")), epochs, logs / "nnunet_train.log")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2, help="runs of each tool, taking turns")
    args = ap.parse_args(argv)
    require(ACDC / "patient001", "ACDC training data")
    base = WORK / "acdc_pair"
    base.mkdir(parents=True, exist_ok=True)
    logs = fresh(base / "logs_train")
    pair = prepare(base, logs)
    ours_runs, theirs_runs, peaks = [], [], []
    for r in range(args.repeats):
        (logs / f"run{r}").mkdir()
        ours, m = autocmr_epoch_times(pair, args.epochs, logs / f"run{r}")
        print(f"run {r}: autocmr epoch times", ours, flush=True)
        theirs = nnunet_epoch_times(pair, args.epochs, logs / f"run{r}")
        print(f"run {r}: nnU-Net epoch times", theirs, flush=True)
        if len(theirs) < 2:
            raise SystemExit("nnU-Net did not finish two epochs; see logs")
        ours_runs.append(ours)
        theirs_runs.append(theirs)
        peaks.append(m.peak_pss_mb)
    ours_s = statistics.median(t for run in ours_runs for t in run[1:])
    theirs_s = statistics.median(t for run in theirs_runs for t in run[1:])
    result = {"machine": machine(), "epochs": args.epochs, "repeats": args.repeats,
              "iterations_per_epoch": ITERATIONS, "val_iterations_per_epoch": VAL_ITERATIONS,
              "autocmr_epoch_s": ours_runs, "nnunet_epoch_s": theirs_runs,
              "autocmr_it_per_s": ITERATIONS / ours_s, "nnunet_it_per_s": ITERATIONS / theirs_s,
              "speedup": theirs_s / ours_s, "autocmr_peak_pss_mb": max(peaks),
              "network": "autocmr CPU-target 2d plans (features 16-256, patch 128x128, batch 7), same in both",
              "note": "epoch time = 250 training + 50 validation iterations, as both trainers log it; median over "
                      "the runs' epochs, first epoch of each run excluded; each tool with its default data loading "
                      "on this machine; the tools took turns"}
    print({k: result[k] for k in ("autocmr_it_per_s", "nnunet_it_per_s", "speedup")})
    print(f"results: {save_results('train_benchmark', result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
