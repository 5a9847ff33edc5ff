"""Issue #18 benchmark: data-parallel training with 1 vs N processes (`autocmr_train --num-gpus N`).

Every run trains fold 0 with the same global batch, the same number of iterations and the same seed, so each
sees the same number of samples; only how many processes share them changes. Reported per process count:
training iterations/s (iterations per epoch / median epoch time, first epoch excluded; an epoch is the
training iterations plus the validation iterations, as in train_benchmark.py), samples/s, the final
validation's mean foreground Dice, wall time and peak memory (PSS of the whole process tree). The process
counts take turns (1, 2, 1, 2, ...) so that a slow spell of a shared machine does not fall on one of them.

    python benchmarks/ddp_benchmark.py                                   # ACDC, CPU plans, 1 vs 2 CPU processes
    python benchmarks/ddp_benchmark.py --device cuda --processes 1 2 4   # GPU plans on 1, 2 and 4 GPUs
    python benchmarks/ddp_benchmark.py --tiny                            # phantoms, seconds: checks the script

On the CPU the processes share the cores (torch threads = cores / processes), so 2 processes can only
gain from overlapping the parts of a step that do not use every core (data sampling, augmentation, Python).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from common import ACDC, WORK, autocmr_env, fresh, machine, require, save_results, script
from measure import run_measured

DATASET_ACDC, DATASET_PHANTOM = "101", "964"


def prepare(home: Path, *, tiny: bool, device: str) -> str:
    """The planned dataset to train on (made once, reused by later runs)."""
    env = autocmr_env(home)
    if tiny:
        if not (home / "preprocessed" / f"Dataset{DATASET_PHANTOM}_Phantom").is_dir():
            from autocmr.planners.plan_dataset import plan_dataset
            from autocmr.settings import resolve_roots
            from autocmr.testing.phantoms import write_phantom_dataset

            roots = resolve_roots(raw=home / "raw", preprocessed=home / "preprocessed", results=home / "results")
            write_phantom_dataset(roots.raw, n_subjects=5, dataset_id=int(DATASET_PHANTOM), fov_mm=120)
            plan_dataset(int(DATASET_PHANTOM), roots, targets=("cpu",), configurations=("2d",), num_workers=1,
                         check=False)
        return DATASET_PHANTOM
    require(ACDC / "patient001", "ACDC training data")
    if not (home / "preprocessed" / "Dataset101_ACDC").is_dir():
        for cmd in ([script("autocmr_convert"), "acdc", str(ACDC), "-d", DATASET_ACDC],
                    [script("autocmr_plan"), "-d", DATASET_ACDC, "-c", "2d", "--target", "cpu" if device == "cpu" else "gpu"]):
            m = run_measured(cmd, env=env, log_path=home / "prepare.log")
            if m.returncode != 0:
                raise SystemExit(f"{cmd[0]} failed; see {home / 'prepare.log'}")
    return DATASET_ACDC


def one_run(home: Path, dataset: str, processes: int, args: argparse.Namespace, logs: Path) -> dict:
    out = WORK / "ddp" / f"model_{processes}"
    fresh(out)
    cmd = [script("autocmr_train"), dataset, "2d", "0", "--epochs", str(args.epochs), "--iterations",
           str(args.iterations), "--val-iterations", str(args.val_iterations), "--device", args.device,
           "--num-gpus", str(processes), "--seed", "0", "-o", str(out)]
    if args.batch_size:
        cmd += ["--batch-size", str(args.batch_size)]
    if args.tiny:
        cmd += ["--augmentation", "none", "--num-workers", "0"]
    m = run_measured(cmd, env=autocmr_env(home), log_path=logs / f"train_{processes}.log", interval_s=1.0)
    if m.returncode != 0:
        raise SystemExit(f"autocmr_train --num-gpus {processes} failed; see {logs / f'train_{processes}.log'}")
    from autocmr.trainers.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(out / "fold_0" / "checkpoint_final.pth")
    epoch_s = [float(t) for t in checkpoint["state"]["history"]["epoch_time"]]
    steady = epoch_s[1:] or epoch_s
    summary = json.loads((out / "fold_0" / "validation" / "summary.json").read_text())
    dice = {c: summary["classes"][c]["dice"]["mean"] for c in summary["classes"]}
    batch = checkpoint["options"].get("batch_size") or _plans_batch(out)
    return {"processes": processes, "epoch_s": epoch_s, "it_per_s": args.iterations / statistics.median(steady),
            "samples_per_s": args.iterations * batch / statistics.median(steady), "global_batch": batch,
            "dice": dice, "mean_dice": statistics.mean(dice.values()), "wall_s": m.wall_s, "cpu_s": m.cpu_s,
            "peak_pss_mb": m.peak_pss_mb}


def _plans_batch(model_dir: Path) -> int:
    plans = json.loads((model_dir / "plans.json").read_text())
    return int(plans["configurations"]["2d"]["batch_size"])


def table(result: dict) -> list[str]:
    lines = ["| processes | training iterations/s | samples/s | speed-up | mean Dice (final validation) | "
             "wall time | peak memory (PSS) |", "|---|---|---|---|---|---|---|"]
    base = statistics.median(r["it_per_s"] for r in result["runs"] if r["processes"] == result["processes"][0])
    for n in result["processes"]:
        runs = [r for r in result["runs"] if r["processes"] == n]
        it = statistics.median(r["it_per_s"] for r in runs)
        samples = statistics.median(r["samples_per_s"] for r in runs)
        dice = ", ".join(f"{r['mean_dice']:.3f}" for r in runs)
        walls = ", ".join(f"{r['wall_s']:.0f} s" for r in runs)
        lines.append(f"| {n} | {it:.2f} | {samples:.1f} | {it / base:.2f}x | {dice} | {walls} | "
                     f"{max(r['peak_pss_mb'] for r in runs):.0f} MiB |")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (nccl, one process per GPU)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--iterations", type=int, default=250)
    ap.add_argument("--val-iterations", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=None, help="global batch (default: the plans')")
    ap.add_argument("--repeats", type=int, default=2, help="runs of each process count, taking turns")
    ap.add_argument("--tiny", action="store_true", help="phantoms, 2 epochs of 4 iterations: checks the script only; "
                    "results go to work/, never to results/")
    args = ap.parse_args(argv)
    if args.tiny:
        args.epochs, args.iterations, args.val_iterations, args.repeats = 2, 4, 1, 1
        args.batch_size = args.batch_size or 4
    home = WORK / "ddp" / ("home_tiny" if args.tiny else f"home_{args.device}")
    home.mkdir(parents=True, exist_ok=True)
    dataset = prepare(home, tiny=args.tiny, device=args.device)
    logs = fresh(WORK / "ddp" / "logs")
    runs = []
    for repeat in range(args.repeats):
        for n in args.processes:
            runs.append(one_run(home, dataset, n, args, logs))
            print(f"repeat {repeat}, {n} process(es): {runs[-1]['it_per_s']:.2f} it/s, mean Dice "
                  f"{runs[-1]['mean_dice']:.3f}", flush=True)
    result = {"machine": machine(), "device": args.device, "dataset": "phantoms" if args.tiny else "ACDC fold 0",
              "processes": args.processes, "epochs": args.epochs, "iterations_per_epoch": args.iterations,
              "val_iterations_per_epoch": args.val_iterations, "repeats": args.repeats, "runs": runs,
              "note": "same global batch, iterations and seed in every run: the same number of samples; "
                      "it/s from the median epoch time, first epoch excluded"}
    if args.tiny:
        path = WORK / "ddp" / "ddp_benchmark_tiny.json"
        path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    else:
        path = save_results(f"ddp_benchmark_{args.device}", result)
    print("\n".join(table(result)))
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
