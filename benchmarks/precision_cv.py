"""Does bfloat16 inference change a cross-validation's figures? Every fold's final validation again, in bf16.

The trainer's final validation predicts each fold's validation patients in float32 (mirroring on). This script
predicts the same patients with the same code path (`autocmr.trainers.validation.run_final_validation`, same
preprocessed data, tiles, mirroring and export) under bfloat16 autocast, into a sibling run folder
`$AUTOCMR_HOME/cv_RUN_bf16inf/` whose checkpoints, plans and postprocessing decision are links to the
original's, so that `python benchmarks/acdc_cv_report.py RUN_bf16inf` evaluates it exactly as it evaluated
RUN. It also compares the two precisions' masks volume by volume (voxel agreement, Dice between them,
volume differences) into benchmarks/results/precision_cv_RUN.json. Nothing in cv_RUN is written.

    python benchmarks/precision_cv.py edge_bf16_e48 [--folds 0 1] [--threads 1]
    python benchmarks/acdc_cv_report.py edge_bf16_e48_bf16inf
    python benchmarks/acdc_cv_report.py --tables edge_bf16_e48 edge_bf16_e48_bf16inf
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch

from acdc_cv_report import MODEL, finished_folds
from common import machine, save_results
from precision_benchmark import compare_folders, summarise_agreement

PRE = Path("preprocessed/Dataset101_ACDC")
LINKED_FILES = ("plans.json", "dataset.json", "cases.csv", "fingerprint.json", "model.json", "splits.json",
                "intensity_reference.json", "postprocessing.json")


def link(src: Path, dst: Path) -> None:
    if not dst.exists() and src.exists():
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.symlink_to(src)


def sibling_run(home: Path, twin: Path, folds: list[int]) -> None:
    """The twin run folder: links to the original's raw data, preprocessed data and model documents;
    fresh fold folders (their checkpoints and options linked) whose validation/ this script writes."""
    link(home / "raw", twin / "raw")
    link(home / "preprocessed", twin / "preprocessed")
    for name in LINKED_FILES:
        link(home / MODEL / name, twin / MODEL / name)
    for fold in folds:
        src, dst = home / MODEL / f"fold_{fold}", twin / MODEL / f"fold_{fold}"
        if (dst / "validation").exists():
            shutil.rmtree(dst / "validation")  # a cut run's half-written folder is redone whole
        for name in ("checkpoint_final.pth", "options.json"):
            link(src / name, dst / name)


def validate_fold(home: Path, twin: Path, fold: int, precision: str) -> tuple[float, list[str]]:
    """Fold ``fold``'s final validation under ``precision`` autocast, written into the twin; returns the
    seconds it took and the validated cases."""
    from autocmr.dataset.raw import DatasetJson, load_metadata
    from autocmr.models.folder import ModelFolder
    from autocmr.precision import autocast
    from autocmr.trainers.distributed import DistributedContext
    from autocmr.trainers.validation import ValidationSettings, run_final_validation

    model = ModelFolder.open(home / MODEL)
    device = torch.device("cpu")
    network = model.load_networks([str(fold)], "final", device)[0]
    splits = json.loads((home / MODEL / "splits.json").read_text())
    cases = tuple(splits[fold]["val"])
    data_folder = home / PRE / model.configuration.data_identifier
    raw = home / "raw" / "Dataset101_ACDC"
    options = json.loads((home / MODEL / f"fold_{fold}" / "options.json").read_text())
    settings = ValidationSettings(network=network, plans=model.plans, config=model.configuration,
                                  data_folder=data_folder, device=device,
                                  mirror=bool(options.get("mirror_validation", True)),
                                  output_dir=twin / MODEL / f"fold_{fold}", cases=cases,
                                  distributed=DistributedContext(), log=print)
    file_ending = DatasetJson.load(raw / "dataset.json").file_ending
    t0 = time.monotonic()
    with torch.no_grad(), autocast(precision, device):
        run_final_validation(settings, raw, file_ending, metadata=load_metadata(raw, list(cases)))
    return time.monotonic() - t0, list(cases)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="RUN of acdc_cross_validation.sh (folder $AUTOCMR_HOME/cv_RUN)")
    ap.add_argument("--folds", nargs="+", type=int, default=None, help="folds to redo (default: all five)")
    ap.add_argument("--precision", default="bf16", choices=("bf16",), help="the precision to compare with fp32")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    base = Path(os.environ.get("AUTOCMR_HOME", Path.home() / "autocmr_data")).expanduser()
    home, twin = base / f"cv_{args.run}", base / f"cv_{args.run}_{args.precision}inf"
    folds = args.folds or list(range(5))
    missing = sorted(set(folds) - set(finished_folds(home / MODEL)))
    if missing:
        raise SystemExit(f"{home / MODEL}: fold(s) {missing} have no final validation to compare with")
    sibling_run(home, twin, folds)
    seconds, rows = {}, []
    for fold in folds:
        elapsed, fold_cases = validate_fold(home, twin, fold, args.precision)
        seconds[fold] = round(elapsed, 1)
        rows += compare_folders(home / MODEL / f"fold_{fold}" / "validation",
                                twin / MODEL / f"fold_{fold}" / "validation",
                                home / "raw" / "Dataset101_ACDC" / "labelsTr", fold_cases)
        print(f"fold {fold}: {seconds[fold]} s for {len(fold_cases)} volumes", flush=True)
    summary = summarise_agreement(rows)
    print(json.dumps({k: summary[k] for k in ("volumes", "voxel_agreement", "volume_diff_pct")}, indent=1))
    name = f"precision_cv_{args.run}" + ("" if args.folds is None else "_folds" + "".join(map(str, folds)))
    print("results:", save_results(name, {
        "machine": machine(), "run": args.run, "folds": folds, "precision": args.precision,
        "torch_threads": torch.get_num_threads(), "validation_seconds": seconds,
        "note": "fp32 = the run's own final validation; bf16 = the same code path under bfloat16 autocast",
        "summary": summary, "volumes": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
