"""CPU precision benchmark: float32 vs bfloat16 autocast (``--precision fp32|bf16``) in training and inference.

Training: ``autocmr_train 101 2d 0`` on an existing preprocessed ACDC dataset (``--home``, an AUTOCMR_HOME
with autocmrPlans_cpu), a few epochs of 250 iterations + 50 validation iterations in each precision, the
precisions taking turns (fp32, bf16, fp32, bf16, ...) so that a slow spell of the shared machine does not fall
on one of them only; the median steady-state epoch time (first epoch of each run excluded) gives
iterations/s, and the training loss after the last epoch shows whether bf16 learns alike (same seed, so the
runs see the same initial weights and samples). Inference: ``autocmr_predict`` (mirroring on, the default) on
the validation cases of fold 0 of a trained CV model, in turns again; seconds per volume (whole command,
start-up included), peak memory, and how far bf16's masks are from fp32's: voxel agreement, Dice between
them, Dice of each against the reference labels, relative LV/MYO/RV volume differences.

    python benchmarks/precision_benchmark.py --home /root/autocmr_data/cv_edge \\
        --model /root/autocmr_data/cv_edge/results/Dataset101_ACDC/autocmrPlans_cpu__2d [--epochs 3] [--repeats 2]

Training outputs and prediction folders go to ``work/<out-name>/``; nothing is written into ``--home``.
"""
from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from common import WORK, autocmr_env, fresh, machine, save_results, script
from measure import run_measured, tail

DATASET_ID, DATASET = "101", "Dataset101_ACDC"
PLANS = "autocmrPlans_cpu"
PRECISIONS = ("fp32", "bf16")  # the order of each turn
CLASSES = {"LV": 1, "MYO": 2, "RV": 3}  # autocmr's label convention (raw dataset.json of ACDC)
ITERATIONS, VAL_ITERATIONS = 250, 50
DEFAULT_LIMIT = 8
IMAGE_SUFFIX = "_0000.nii.gz"


# ----- training --------------------------------------------------------------------------------------
def train_cmd(precision: str, out: Path, *, epochs: int, iterations: int, val_iterations: int) -> list[str]:
    return [script("autocmr_train"), DATASET_ID, "2d", "0", "--device", "cpu", "-p", PLANS, "--epochs", str(epochs),
            "--iterations", str(iterations), "--val-iterations", str(val_iterations), "--no-final-validation",
            "--precision", precision, "-o", str(out)]


def train_run(precision: str, out: Path, env: dict, log: Path, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    cmd = train_cmd(precision, fresh(out), epochs=args.epochs, iterations=args.iterations,
                    val_iterations=args.val_iterations)
    m = run_measured(cmd, env=env, log_path=log, interval_s=1.0)
    if m.returncode != 0:
        raise SystemExit(f"autocmr_train --precision {precision} failed ({m.returncode}):\n{tail(log)}")
    ckpt = torch.load(out / "fold_0" / "checkpoint_final.pth", weights_only=True)
    history = ckpt["state"]["history"]
    stored = ckpt.get("options", {}).get("precision")
    if stored is not None and stored != precision:
        raise SystemExit(f"{out}: checkpoint says precision {stored!r}, asked for {precision!r}")
    return {"precision": precision, "epoch_s": [float(t) for t in history["epoch_time"]],
            "train_loss": [float(v) for v in history["train_loss"]],
            "val_loss": [float(v) for v in history["val_loss"]],
            "pseudo_dice": [float(v) for v in history["pseudo_dice"]],
            "measurement": m.to_dict()}


def steady_epochs(runs: Sequence[dict[str, Any]]) -> tuple[list[float], bool]:
    """Epoch times without the first epoch of each run (start-up, cold caches); all epochs when the runs had
    only one each (then flagged False: not a steady-state figure)."""
    steady = [t for run in runs for t in run["epoch_s"][1:]]
    return (steady, True) if steady else ([t for run in runs for t in run["epoch_s"]], False)


def summarise_training(runs: Sequence[dict[str, Any]], iterations: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p in PRECISIONS:
        mine = [r for r in runs if r["precision"] == p]
        times, steady = steady_epochs(mine)
        median = statistics.median(times)
        out[p] = {"median_epoch_s": median, "it_per_s": iterations / median, "steady_state": steady,
                  "epochs_counted": len(times),
                  "last_train_loss": [r["train_loss"][-1] for r in mine],
                  "last_val_loss": [r["val_loss"][-1] for r in mine],
                  "last_pseudo_dice": [r["pseudo_dice"][-1] for r in mine],
                  "peak_pss_mb": max(r["measurement"]["peak_pss_mb"] or 0.0 for r in mine),
                  "wall_s": [r["measurement"]["wall_s"] for r in mine]}
    out["bf16_speedup"] = out["fp32"]["median_epoch_s"] / out["bf16"]["median_epoch_s"]  # >1: bf16 faster
    return out


# ----- inference -------------------------------------------------------------------------------------
def validation_cases(model: Path, limit: int) -> list[str]:
    splits = json.loads((model / "splits.json").read_text())
    return sorted(splits[0]["val"])[:limit]


def link_inputs(images: Path, cases: Sequence[str], folder: Path) -> Path:
    fresh(folder)
    for c in cases:
        src = images / f"{c}{IMAGE_SUFFIX}"
        if not src.is_file():
            raise SystemExit(f"no image for validation case {c}: {src}")
        (folder / src.name).symlink_to(src)
    return folder


def predict_cmd(inputs: Path, out: Path, model: Path, precision: str) -> list[str]:
    return [script("autocmr_predict"), "-i", str(inputs), "-o", str(out), "-m", str(model), "-f", "0",
            "--device", "cpu", "--no-analysis", "--precision", precision]


def _dice(a: np.ndarray, b: np.ndarray) -> float | None:
    total = int(a.sum()) + int(b.sum())
    return None if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total  # None: absent in both


def compare_masks(fp32: np.ndarray, bf16: np.ndarray, voxel_ml: float,
                  reference: np.ndarray | None = None) -> dict[str, Any]:
    """One volume: fp32 mask vs bf16 mask (and each vs the reference labels, when given)."""
    if fp32.shape != bf16.shape:
        raise ValueError(f"mask shapes differ: {fp32.shape} vs {bf16.shape}")
    foreground = (fp32 > 0) | (bf16 > 0)
    row: dict[str, Any] = {
        "voxel_agreement": float((fp32 == bf16).mean()),
        "foreground_agreement": float((fp32 == bf16)[foreground].mean()) if foreground.any() else 1.0,
        "changed_voxels": int((fp32 != bf16).sum()),
        "dice_fp32_bf16": {}, "volume_ml": {}, "volume_diff_pct": {}}
    if reference is not None:
        row["dice_ref"] = {"fp32": {}, "bf16": {}}
    for name, label in CLASSES.items():
        a, b = fp32 == label, bf16 == label
        row["dice_fp32_bf16"][name] = _dice(a, b)
        va, vb = a.sum() * voxel_ml, b.sum() * voxel_ml
        row["volume_ml"][name] = {"fp32": float(va), "bf16": float(vb)}
        row["volume_diff_pct"][name] = None if va == 0 else float(100.0 * abs(vb - va) / va)
        if reference is not None:
            r = reference == label
            row["dice_ref"]["fp32"][name] = _dice(r, a)
            row["dice_ref"]["bf16"][name] = _dice(r, b)
    return row


def _defined(values) -> list[float]:
    return [v for v in values if v is not None]


def summarise_agreement(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    def stats(values) -> dict[str, float | None]:
        v = _defined(values)
        return {"mean": float(np.mean(v)) if v else None, "median": float(np.median(v)) if v else None,
                "min": min(v) if v else None, "max": max(v) if v else None}

    out: dict[str, Any] = {
        "volumes": len(rows),
        "voxel_agreement": stats(r["voxel_agreement"] for r in rows),
        "foreground_agreement": stats(r["foreground_agreement"] for r in rows),
        "dice_fp32_bf16": {n: stats(r["dice_fp32_bf16"][n] for r in rows) for n in CLASSES},
        "volume_diff_pct": {n: stats(r["volume_diff_pct"][n] for r in rows) for n in CLASSES}}
    if rows and "dice_ref" in rows[0]:
        out["dice_ref"] = {p: {n: stats(r["dice_ref"][p][n] for r in rows) for n in CLASSES} for p in PRECISIONS}
    return out


def read_mask(path: Path) -> tuple[np.ndarray, float]:
    """Label array and the volume of one voxel in mL (autocmr's reader: no ITK sform warnings)."""
    from autocmr.io.image import read_image

    array, geometry = read_image(path)
    return array, float(np.prod(geometry.spacing)) / 1000.0


def predictor_record(out: Path, cases: Sequence[str]) -> dict[str, Any]:
    """What autocmr_predict wrote about the run (predictions.json): the precision it used and its own per-case
    network time (sliding window, without start-up and model loading)."""
    record = json.loads((out / "predictions.json").read_text())
    seconds = [record["cases"][c]["seconds"].get("predict_s") for c in cases]
    return {"precision": record["predictor"].get("precision"), "predictor_wall_s": record.get("wall_s"),
            "predict_s": seconds}


def same_masks(dir_a: Path, dir_b: Path, cases: Sequence[str]) -> bool:
    return all(np.array_equal(read_mask(dir_a / f"{c}.nii.gz")[0], read_mask(dir_b / f"{c}.nii.gz")[0])
               for c in cases)


def compare_folders(fp32_dir: Path, bf16_dir: Path, labels: Path | None, cases: Sequence[str]) -> list[dict[str, Any]]:
    rows = []
    for c in cases:
        a, voxel_ml = read_mask(fp32_dir / f"{c}.nii.gz")
        b, _ = read_mask(bf16_dir / f"{c}.nii.gz")
        ref_path = None if labels is None else labels / f"{c}.nii.gz"
        ref = read_mask(ref_path)[0] if ref_path is not None and ref_path.is_file() else None
        rows.append({"case": c, **compare_masks(a, b, voxel_ml, ref)})
    return rows


def _network_s_per_volume(runs: Sequence[dict[str, Any]], n_volumes: int) -> float | None:
    """Median over runs of autocmr_predict's own per-case predict_s, per volume (None when not recorded)."""
    per_run = [r.get("predict_s") for r in runs]
    if not per_run or any(not v or None in v for v in per_run):
        return None
    return statistics.median(sum(v) / n_volumes for v in per_run)


def summarise_inference(runs: Sequence[dict[str, Any]], n_volumes: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p in PRECISIONS:
        mine = [r for r in runs if r["precision"] == p]
        walls = [r["measurement"]["wall_s"] for r in mine]
        out[p] = {"s_per_volume": statistics.median(walls) / n_volumes, "wall_s": walls,
                  "network_s_per_volume": _network_s_per_volume(mine, n_volumes),
                  "cpu_s": [r["measurement"]["cpu_s"] for r in mine],
                  "peak_pss_mb": max(r["measurement"]["peak_pss_mb"] or 0.0 for r in mine),
                  "peak_rss_mb": max(r["measurement"]["peak_rss_mb"] for r in mine)}
    out["bf16_time_ratio"] = out["bf16"]["s_per_volume"] / out["fp32"]["s_per_volume"]  # <1: bf16 faster
    a, b = out["fp32"]["network_s_per_volume"], out["bf16"]["network_s_per_volume"]
    out["bf16_network_time_ratio"] = b / a if a and b is not None else None
    return out


# ----- tables ----------------------------------------------------------------------------------------
def _f(value, fmt: str = ".3f") -> str:
    return "-" if value is None else format(value, fmt)


def training_table(summary: dict[str, Any], iterations: int, val_iterations: int) -> str:
    lines = [f"| precision | epoch s (median, {iterations} + {val_iterations} val it) | it/s | speed vs fp32 | "
             "train loss after last epoch (per run) | val loss (per run) | pseudo Dice (per run) | peak PSS MiB |",
             "|---|---|---|---|---|---|---|---|"]
    for p in PRECISIONS:
        s = summary[p]
        speed = "1.00" if p == "fp32" else f"{summary['bf16_speedup']:.2f}x"
        note = "" if s["steady_state"] else " (all epochs: 1 per run)"
        lines.append(f"| {p} | {s['median_epoch_s']:.1f}{note} | {s['it_per_s']:.2f} | {speed} | "
                     f"{', '.join(_f(v, '.4f') for v in s['last_train_loss'])} | "
                     f"{', '.join(_f(v, '.4f') for v in s['last_val_loss'])} | "
                     f"{', '.join(_f(v, '.3f') for v in s['last_pseudo_dice'])} | {s['peak_pss_mb']:.0f} |")
    return "\n".join(lines)


def inference_tables(summary: dict[str, Any], agreement: dict[str, Any]) -> str:
    names = "/".join(CLASSES)
    lines = [f"| precision | s / volume | time vs fp32 | network s / volume (vs fp32) | peak PSS MiB | "
             f"Dice vs reference {names} (mean) |", "|---|---|---|---|---|---|"]
    for p in PRECISIONS:
        s = summary[p]
        ratio = "1.00" if p == "fp32" else f"{summary['bf16_time_ratio']:.2f}"
        net = _f(s["network_s_per_volume"], ".2f")
        if p == "bf16" and summary.get("bf16_network_time_ratio") is not None:
            net += f" ({summary['bf16_network_time_ratio']:.2f})"
        dice = "/".join(_f(agreement.get("dice_ref", {}).get(p, {}).get(n, {}).get("mean")) for n in CLASSES)
        lines.append(f"| {p} | {s['s_per_volume']:.2f} | {ratio} | {net} | "
                     f"{s['peak_pss_mb']:.0f} | {dice} |")
    lines += ["", f"| bf16 vs fp32 masks ({agreement['volumes']} volumes) | value |", "|---|---|",
              f"| voxel agreement, mean (min) | {_f(agreement['voxel_agreement']['mean'], '.5f')} "
              f"({_f(agreement['voxel_agreement']['min'], '.5f')}) |",
              f"| foreground voxel agreement, mean (min) | {_f(agreement['foreground_agreement']['mean'], '.4f')} "
              f"({_f(agreement['foreground_agreement']['min'], '.4f')}) |"]
    for n in CLASSES:
        d, v = agreement["dice_fp32_bf16"][n], agreement["volume_diff_pct"][n]
        lines.append(f"| {n}: Dice fp32-bf16 mean (min); volume difference max / median % | "
                     f"{_f(d['mean'], '.4f')} ({_f(d['min'], '.4f')}); "
                     f"{_f(v['max'], '.2f')} / {_f(v['median'], '.2f')} |")
    return "\n".join(lines)


# ----- main ------------------------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--home", required=True, type=Path,
                    help="AUTOCMR_HOME with raw/ and preprocessed/ of Dataset101_ACDC (autocmrPlans_cpu); read only")
    ap.add_argument("--model", type=Path, default=None,
                    help="trained CV model folder with fold_0 and splits.json "
                         "(default: HOME/results/Dataset101_ACDC/autocmrPlans_cpu__2d)")
    ap.add_argument("--epochs", type=int, default=3, help="training epochs per run (default 3)")
    ap.add_argument("--repeats", type=int, default=2, help="runs of each precision, taking turns (default 2)")
    ap.add_argument("--limit", type=int, default=DEFAULT_LIMIT,
                    help=f"validation volumes of fold 0 to predict (default {DEFAULT_LIMIT})")
    ap.add_argument("--threads", type=int, default=None,
                    help="OMP_NUM_THREADS / MKL_NUM_THREADS of the commands (default: unset)")
    ap.add_argument("--skip-training", action="store_true")
    ap.add_argument("--skip-inference", action="store_true")
    ap.add_argument("--out-name", default="precision_benchmark", help="results/<name>.json and work/<name>/")
    # debugging the script itself: fewer iterations per epoch (results then not comparable with the default)
    ap.add_argument("--iterations", type=int, default=ITERATIONS, help=argparse.SUPPRESS)
    ap.add_argument("--val-iterations", type=int, default=VAL_ITERATIONS, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.model is None:
        args.model = args.home / "results" / DATASET / f"{PLANS}__2d"
    if args.skip_training and args.skip_inference:
        ap.error("nothing to do: both --skip-training and --skip-inference")
    if min(args.epochs, args.repeats, args.limit, args.iterations) < 1 or args.val_iterations < 0:
        ap.error("--epochs, --repeats, --limit and --iterations must be >= 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    from autocmr.precision import cpu_has_fast_bf16

    home, work = args.home.resolve(), WORK / args.out_name
    raw = home / "raw" / DATASET
    if not (home / "preprocessed" / DATASET / f"{PLANS}.json").is_file():
        raise SystemExit(f"{home}: no preprocessed/{DATASET}/{PLANS}.json; --home must be a planned AUTOCMR_HOME")
    if not args.skip_inference and not (args.model / "fold_0" / "checkpoint_final.pth").is_file():
        raise SystemExit(f"{args.model}: no fold_0/checkpoint_final.pth")
    if work.resolve().is_relative_to(home):
        raise SystemExit(f"the work folder {work} lies inside --home")
    work.mkdir(parents=True, exist_ok=True)
    logs = fresh(work / "logs")
    env = autocmr_env(home, **({"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
                               if args.threads else {}))
    fast = cpu_has_fast_bf16()
    if not fast:
        print("WARNING: this CPU has no AMX: bf16 is slower than fp32 here (README, CPU precision)", flush=True)
    result: dict[str, Any] = {
        "machine": machine(), "cpu_has_fast_bf16": fast, "command": shlex.join([sys.executable] + sys.argv),
        "home": str(home), "model": str(args.model), "repeats": args.repeats, "threads": args.threads,
        "order": "precisions take turns: " + ", ".join(p for _ in range(args.repeats) for p in PRECISIONS)}
    tables = []

    if not args.skip_training:
        runs = []
        for r in range(args.repeats):
            for p in PRECISIONS:
                run = train_run(p, work / f"train_{p}_run{r}", env, logs / f"train_{p}_run{r}.log", args)
                run["repeat"] = r
                print(f"train run {r} {p}: epoch s {[round(t, 1) for t in run['epoch_s']]}, "
                      f"train loss {[round(v, 4) for v in run['train_loss']]}", flush=True)
                runs.append(run)
        summary = summarise_training(runs, args.iterations)
        result["training"] = {
            "command": shlex.join(train_cmd("P", Path("OUT"), epochs=args.epochs, iterations=args.iterations,
                                            val_iterations=args.val_iterations)),
            "epochs": args.epochs, "iterations_per_epoch": args.iterations,
            "val_iterations_per_epoch": args.val_iterations, "runs": runs, "summary": summary,
            "note": "epoch time = training + validation iterations, as the trainer records it (history epoch_time); "
                    "median over the runs' epochs, first epoch of each run excluded; it/s = iterations per epoch / "
                    "that median; bf16_speedup = fp32 epoch time / bf16 epoch time; same seed (0) in every run"}
        tables.append("Training\n\n" + training_table(summary, args.iterations, args.val_iterations))

    if not args.skip_inference:
        cases = validation_cases(args.model, args.limit)
        inputs = link_inputs(raw / "imagesTr", cases, work / "predict_inputs")
        runs, outs = [], {p: [] for p in PRECISIONS}
        for r in range(args.repeats):
            for p in PRECISIONS:
                out = fresh(work / f"pred_{p}_run{r}")
                log = logs / f"predict_{p}_run{r}.log"
                m = run_measured(predict_cmd(inputs, out, args.model, p), env=env, log_path=log)
                missing = [c for c in cases if not (out / f"{c}.nii.gz").is_file()]
                if m.returncode != 0 or missing:
                    raise SystemExit(f"autocmr_predict --precision {p} failed ({m.returncode}; missing {missing}):\n"
                                     f"{tail(log)}")
                print(f"predict run {r} {p}: {m.wall_s:.1f} s for {len(cases)} volumes, "
                      f"peak PSS {m.peak_pss_mb or 0:.0f} MiB", flush=True)
                record = predictor_record(out, cases)
                if record["precision"] != p:
                    raise SystemExit(f"{out}/predictions.json says precision {record['precision']!r}, asked for {p!r}")
                runs.append({"precision": p, "repeat": r, "measurement": m.to_dict(), **record})
                outs[p].append(out)
        rows = compare_folders(outs["fp32"][-1], outs["bf16"][-1], raw / "labelsTr", cases)
        agreement = summarise_agreement(rows)
        summary = summarise_inference(runs, len(cases))
        result["inference"] = {
            "command": shlex.join(predict_cmd(Path("IMAGES"), Path("OUT"), args.model, "P")),
            "cases": cases, "limit": args.limit, "runs": runs, "summary": summary, "agreement": agreement,
            "per_volume": rows,
            "repeats_identical": ({p: all(same_masks(outs[p][0], o, cases) for o in outs[p][1:]) for p in PRECISIONS}
                                  if args.repeats > 1 else None),
            "note": "s/volume = median whole-command wall time (start-up and model loading included) / volumes; "
                    "network_s_per_volume = autocmr_predict's own predict_s per case (predictions.json), without "
                    "start-up; bf16_time_ratio = bf16 / fp32 (whole command); mirroring on, postprocessing as "
                    "chosen at training (auto); "
                    "masks of each precision's last run compared; Dice None where a class is in neither mask; "
                    "volume difference = |bf16 - fp32| / fp32"}
        tables.append("Inference\n\n" + inference_tables(summary, agreement))

    if args.iterations != ITERATIONS or args.val_iterations != VAL_ITERATIONS or args.limit < DEFAULT_LIMIT \
            or args.epochs < 2:
        result["note"] = "reduced settings (a check of the script, not a full benchmark run)"
    print("\n\n".join(tables))
    print(f"\nresults: {save_results(args.out_name, result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
