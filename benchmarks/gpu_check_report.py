"""Summarise a ``gpu_check.sh`` run: step times, GPU memory peaks, epoch times against nnU-Net, mask agreement.

    python benchmarks/gpu_check_report.py OUT/gpu_check.tar.gz --name h200 [--reference CPU_PREDICTIONS]

Reads the archive the check script leaves (or the folder it was unpacked into) and writes
``results/gpu_check_NAME.json``, then prints the README table. ``--reference`` compares the GPU masks with masks
predicted elsewhere (e.g. on the development machine's CPU) besides the check's own CPU prediction.
Epoch times leave out each training's first epoch (start-up, cuDNN's algorithm search).
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from common import save_results

LABELS = {1: "LV", 2: "MYO", 3: "RV"}
AUTOCMR_EPOCH = re.compile(r"(?:^|: )epoch (\d+): .*, ([\d.]+) s$")  # log.txt lines start with a time stamp
AUTOCMR_HEADER = re.compile(r"on (\S+): (\d+) train / (\d+) val cases, patch \(([\d, ]+)\), batch (\d+)"
                            r".*precision (\w+)")
NNUNET_EPOCH = re.compile(r"Epoch time: ([\d.]+) s")
PREDICT_SUMMARY = re.compile(r"^(\d+) predicted, \d+ skipped \(output exists\), (\d+) failed in ([\d.]+) s")


def read_steps(logs: Path) -> dict[str, dict[str, float]]:
    steps: dict[str, dict[str, float]] = {}
    path = logs / "steps.txt"
    for line in path.read_text().splitlines() if path.exists() else []:
        parts = line.split()
        entry = steps.setdefault(parts[0], {})
        entry[parts[1]] = float(parts[2])
        if parts[1] == "end":
            entry["rc"] = int(parts[4])
    for entry in steps.values():
        if "end" in entry:
            entry["seconds"] = round(entry["end"] - entry["start"], 1)
    return steps


def read_gpu_samples(logs: Path) -> np.ndarray:
    """Rows of (unix time, MiB used, % utilisation); empty where no sampler ran."""
    rows = []
    path = logs / "gpu.csv"
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            rows.append([float(x) for x in line.split(",")[:3]])
        except ValueError:
            continue  # a line cut short when the sampler was stopped
    return np.asarray(rows, dtype=float).reshape(-1, 3)


def gpu_during(samples: np.ndarray, step: dict[str, float]) -> dict[str, float] | None:
    if not len(samples) or "end" not in step:
        return None
    inside = samples[(samples[:, 0] >= step["start"]) & (samples[:, 0] <= step["end"])]
    if not len(inside):
        return None
    return {"peak_mib": float(inside[:, 1].max()), "mean_utilisation_pct": round(float(inside[:, 2].mean()), 1),
            "samples": int(len(inside))}


def autocmr_training(log: Path) -> dict[str, Any] | None:
    if not log.exists():
        return None
    text = log.read_text(errors="replace").splitlines()
    header = next((m for m in map(AUTOCMR_HEADER.search, text) if m), None)
    epochs = [float(m.group(2)) for m in map(AUTOCMR_EPOCH.search, text) if m]
    out: dict[str, Any] = {"epoch_seconds": epochs}
    if header:
        out.update(device=header.group(1), patch=[int(v) for v in header.group(4).split(",")],
                   batch=int(header.group(5)), precision=header.group(6))
    if len(epochs) > 1:
        out["median_epoch_s_after_first"] = round(statistics.median(epochs[1:]), 2)
    return out


def nnunet_training(log: Path, plans: Path | None) -> dict[str, Any] | None:
    if not log.exists():
        return None
    epochs = [float(m.group(1)) for m in map(NNUNET_EPOCH.search, log.read_text(errors="replace").splitlines()) if m]
    out: dict[str, Any] = {"epoch_seconds": epochs}
    if plans is not None and plans.exists():
        config = json.loads(plans.read_text())["configurations"]["2d"]
        out.update(patch=config["patch_size"], batch=config["batch_size"])
    if len(epochs) > 1:
        out["median_epoch_s_after_first"] = round(statistics.median(epochs[1:]), 2)
    return out


def prediction(log: Path) -> dict[str, Any] | None:
    if not log.exists():
        return None
    for line in log.read_text(errors="replace").splitlines():
        m = PREDICT_SUMMARY.match(line)
        if m:
            predicted = int(m.group(1))
            return {"predicted": predicted, "failed": int(m.group(2)), "seconds": float(m.group(3)),
                    "s_per_volume": round(float(m.group(3)) / max(predicted, 1), 2)}
    return None


def agreement(a_dir: Path, b_dir: Path) -> dict[str, Any] | None:
    """Per-label Dice between two folders' masks of the same names, and the share of equal voxels."""
    names = sorted(p.name for p in a_dir.glob("*.nii.gz")) if a_dir.is_dir() else []
    names = [n for n in names if (b_dir / n).exists()]
    if not names:
        return None
    dice: dict[str, list[float]] = {v: [] for v in LABELS.values()}
    equal = []
    for name in names:
        a = sitk.GetArrayFromImage(sitk.ReadImage(str(a_dir / name)))
        b = sitk.GetArrayFromImage(sitk.ReadImage(str(b_dir / name)))
        equal.append(float((a == b).mean()))
        for value, label in LABELS.items():
            total = (a == value).sum() + (b == value).sum()
            if total:
                dice[label].append(float(2 * ((a == value) & (b == value)).sum() / total))
    return {"volumes": len(names), "equal_voxels_min": round(min(equal), 6),
            "dice_min": {k: round(min(v), 4) for k, v in dice.items() if v},
            "dice_mean": {k: round(float(np.mean(v)), 4) for k, v in dice.items() if v}}


def summarise(root: Path, reference: Path | None) -> dict[str, Any]:
    logs = root / "logs"
    steps = read_steps(logs)
    samples = read_gpu_samples(logs)
    for entry in steps.values():
        gpu = gpu_during(samples, entry)
        if gpu:
            entry["gpu"] = gpu
    env = (logs / "environment.log")
    autocmr_2d_log = next(iter(sorted(root.glob("autocmr/results/*/*__2d/fold_0/log.txt"))), logs / "train_2d.log")
    autocmr_3d_log = next(iter(sorted(root.glob("autocmr/results/*/*__3d_fullres/fold_0/log.txt"))),
                          logs / "train_3d_fullres.log")
    nnunet_plans = next(iter(sorted(root.glob("nnunet/preprocessed/*/nnUNetPlans.json"))), None)
    result = {
        "environment": env.read_text().strip() if env.exists() else None,
        "steps": {name: {k: v for k, v in e.items() if k not in ("start", "end")} for name, e in steps.items()},
        "autocmr_2d": autocmr_training(autocmr_2d_log),
        "autocmr_3d_fullres": autocmr_training(autocmr_3d_log),
        "nnunet_2d": nnunet_training(logs / "nnunet_train_2d.log", nnunet_plans),
        "predict_gpu": prediction(logs / "predict_gpu.log"),
        "predict_cpu": prediction(logs / "predict_cpu.log"),
        "masks_gpu_vs_cpu_same_machine": agreement(root / "pred_gpu", root / "pred_cpu"),
    }
    if reference is not None:
        result["masks_gpu_vs_reference"] = agreement(root / "pred_gpu", reference)
    a, n = result["autocmr_2d"], result["nnunet_2d"]
    if a and n and a.get("median_epoch_s_after_first") and n.get("median_epoch_s_after_first"):
        result["epoch_time_ratio_autocmr_over_nnunet_2d"] = round(
            a["median_epoch_s_after_first"] / n["median_epoch_s_after_first"], 3)
    return result


def table(result: dict[str, Any]) -> str:
    rows = ["| step | seconds | exit | GPU peak (MiB) | mean GPU use (%) |", "|---|---|---|---|---|"]
    for name, step in result["steps"].items():
        gpu = step.get("gpu") or {}
        rows.append(f"| {name} | {step.get('seconds', '–')} | {step.get('rc', '–')} | {gpu.get('peak_mib', '–')} "
                    f"| {gpu.get('mean_utilisation_pct', '–')} |")
    rows += ["", "| training | patch | batch | median epoch (s, after the first) |", "|---|---|---|---|"]
    for key in ("autocmr_2d", "autocmr_3d_fullres", "nnunet_2d"):
        t = result.get(key) or {}
        rows.append(f"| {key} | {t.get('patch', '–')} | {t.get('batch', '–')} | "
                    f"{t.get('median_epoch_s_after_first', '–')} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="gpu_check.tar.gz, or the folder it was unpacked into")
    parser.add_argument("--name", required=True, help="results/gpu_check_NAME.json")
    parser.add_argument("--reference", type=Path, default=None, help="masks to compare the GPU masks with")
    args = parser.parse_args()
    sitk.ProcessObject_SetGlobalWarningDisplay(False)  # ITK's note on ACDC's sform scales, once per mask read
    with tempfile.TemporaryDirectory() as tmp:
        root = args.run
        if root.is_file():
            with tarfile.open(root) as archive:
                archive.extractall(tmp, filter="data")
            root = Path(tmp)
        result = summarise(root, args.reference)
    print(f"results: {save_results(f'gpu_check_{args.name}', result)}")
    print(table(result))


if __name__ == "__main__":
    main()
