"""Real-data run of the whole chain on the shared ACDC patients, on the CPU (issues #3 and #6).

convert -> plan (CPU target) -> train fold 0 with a wall-clock budget -> predict the fold's validation
subjects with autocmr_predict -> evaluate with clinical measures. Records Dice per class, HD95, clinical
agreement and the wall time and peak memory of each step in benchmarks/results/acdc_end_to_end.json.

    python benchmarks/acdc_end_to_end.py [--budget 60m] [--configuration 2d] [--augmentation default]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from common import ACDC, WORK, autocmr_env, fresh, machine, require, save_results, script
from measure import run_measured


def step(name: str, cmd: list[str], env: dict[str, str], logs: Path, results: dict) -> None:
    print(f"[{name}] {' '.join(cmd)}", flush=True)
    # Sample memory once a second: a 0.1 s walk of /proc costs ~20 % of a core, which a 2-core
    # training run would feel.
    m = run_measured(cmd, env=env, log_path=logs / f"{name}.log", interval_s=1.0)
    results["steps"][name] = {"wall_s": round(m.wall_s, 1), "peak_pss_mb": m.peak_pss_mb and round(m.peak_pss_mb),
                              "peak_rss_mb": round(m.peak_rss_mb), "cmd": " ".join(cmd)}
    print(f"[{name}] {m.wall_s:.1f} s, peak PSS {m.peak_pss_mb or 0:.0f} MiB, exit {m.returncode}", flush=True)
    if m.returncode != 0:
        raise SystemExit(f"step {name} failed (exit {m.returncode}); see {logs / (name + '.log')}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget", default="60m")
    ap.add_argument("--configuration", default="2d")
    ap.add_argument("--augmentation", default="default")
    ap.add_argument("--fold", default="0")
    ap.add_argument("--name", default="acdc_end_to_end")
    args = ap.parse_args(argv)
    require(ACDC / "patient001", "ACDC training data")
    home = fresh(WORK / args.name)
    logs = home / "logs"
    logs.mkdir()
    env = autocmr_env(home)
    results: dict = {"machine": machine(), "args": vars(args), "steps": {}}
    step("convert", [script("autocmr_convert"), "acdc", str(ACDC), "-d", "101"], env, logs, results)
    step("plan", [script("autocmr_plan"), "-d", "101", "--target", "cpu", "-c", args.configuration], env, logs, results)
    step("train", [script("autocmr_train"), "101", args.configuration, args.fold, "-p", "autocmrPlans_cpu",
                   "--time-budget", args.budget, "--augmentation", args.augmentation, "--device", "cpu"],
         env, logs, results)
    splits = json.loads((home / "preprocessed" / "Dataset101_ACDC" / "splits.json").read_text())
    val = splits[int(args.fold)]["val"]
    inputs, refs = home / "validation_images", home / "validation_labels"
    inputs.mkdir()
    refs.mkdir()
    raw = home / "raw" / "Dataset101_ACDC"
    for case in val:  # the fold's validation subjects only (the model never saw them)
        (inputs / f"{case}_0000.nii.gz").symlink_to(raw / "imagesTr" / f"{case}_0000.nii.gz")
        (refs / f"{case}.nii.gz").symlink_to(raw / "labelsTr" / f"{case}.nii.gz")
    pred = home / "predictions"
    model = home / "results" / "Dataset101_ACDC" / f"autocmrPlans_cpu__{args.configuration}"
    step("predict", [script("autocmr_predict"), "-i", str(inputs), "-o", str(pred), "-m", str(model),
                     "-f", args.fold, "--device", "cpu"], env, logs, results)
    step("evaluate", [script("autocmr_evaluate"), "-ref", str(refs),
                      "-pred", str(pred), "-meta", str(home / "raw" / "Dataset101_ACDC" / "cases.csv"),
                      "--by", "group", "phase", "-o", str(home / "evaluation")], env, logs, results)
    summary = json.loads((home / "evaluation" / "summary.json").read_text())
    results["n_validation_cases"] = len(val)
    results["evaluation"] = {k: summary[k] for k in ("classes", "mean_over_classes", "clinical") if k in summary}
    log = (model / f"fold_{args.fold}" / "log.txt").read_text().splitlines()
    results["training_log_tail"] = log[-4:]
    path = save_results(args.name, results)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
