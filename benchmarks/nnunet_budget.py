"""Issue #3: nnU-Net under the same wall-clock budget as autocmr's 60-minute CPU training.

nnU-Net has no time budget; the fairest equivalent is its fastest epochs variant that fits. This script
trains fold 0 (the same patient-level folds as autocmr) with a given trainer variant and configuration,
lets nnU-Net run its own final validation, and records the training time, the total time and nnU-Net's
validation Dice per class.

    python benchmarks/nnunet_budget.py --trainer nnUNetTrainer_1epoch --configuration 2d            # its own plans
    python benchmarks/nnunet_budget.py --trainer nnUNetTrainer_20epochs --configuration 2d_autocmr_cpu
"""
from __future__ import annotations

import argparse
import json
import sys

import peer
from acdc_pair import prepare
from common import ACDC, WORK, fresh, machine, require, save_results
from measure import run_measured

LABEL_NAMES = {"1": "LV", "2": "MYO", "3": "RV"}


def probe(pair, args, logs) -> int:
    """Time a few iterations of a configuration (its own batch and patch) and project a full epoch."""
    from acdc_pair import run_until_epochs

    trainers = pair.base / "nnunet_trainers"
    name = peer.write_trainer_variant(trainers, num_epochs=1, iterations_per_epoch=args.probe_iterations,
                                      val_iterations_per_epoch=1)
    fold = peer.training_folder(peer.nnunet_roots(pair.nnunet_root).results, 101, args.configuration, 0, trainer=name)
    times = run_until_epochs(peer.train_cmd(101, args.configuration, 0, trainer=name),
                             pair.nnunet_env(ext_trainer_dir=trainers), lambda: list(fold.glob("training_log_*.txt")),
                             1, logs / "probe.log", timeout_s=args.limit_min * 60)
    if not times:
        raise SystemExit(f"nnU-Net logged no epoch; see {logs / 'probe.log'}")
    plans = json.loads((peer.nnunet_roots(pair.nnunet_root).preprocessed / "Dataset101_ACDC" / "nnUNetPlans.json").read_text())
    cfg = plans["configurations"][args.configuration]
    # the validation iteration is counted as a full one, so both figures are lower bounds
    per_iteration = times[0] / (args.probe_iterations + 1)
    result = {"machine": machine(), "configuration": args.configuration, "patch_size": cfg.get("patch_size"),
              "batch_size": cfg.get("batch_size"), "probe_iterations": args.probe_iterations, "epoch_s": times[0],
              "s_per_iteration": per_iteration, "projected_1_epoch_min": per_iteration * 300 / 60,
              "note": "one epoch = 250 training + 50 validation iterations (nnUNetTrainer_1epoch); the validation "
                      "iteration of the probe is counted as a training one, so both figures are lower bounds"}
    print(json.dumps(result, indent=2))
    print(f"results: {save_results(f'nnunet_probe_{args.configuration}', result)}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trainer", default="nnUNetTrainer_1epoch")
    ap.add_argument("--configuration", default="2d")
    ap.add_argument("--limit-min", type=float, default=240, help="kill nnU-Net after this many minutes")
    ap.add_argument("--probe-iterations", type=int, default=0,
                    help="only time this many training iterations (plus one validation iteration) and project "
                         "the time of one 250-iteration epoch; for configurations too slow to train in the budget")
    args = ap.parse_args(argv)
    require(ACDC / "patient001", "ACDC training data")
    base = WORK / "acdc_pair"
    base.mkdir(parents=True, exist_ok=True)
    logs = fresh(base / f"logs_budget_{args.trainer}_{args.configuration}")
    pair = prepare(base, logs)
    if args.configuration != "2d_autocmr_cpu" and args.configuration not in ("2d",):
        raise SystemExit("this benchmark is set up for 2d configurations")
    if args.probe_iterations:
        return probe(pair, args, logs)
    fold = peer.training_folder(peer.nnunet_roots(pair.nnunet_root).results, 101, args.configuration, 0,
                                trainer=args.trainer)
    m = run_measured(peer.train_cmd(101, args.configuration, 0, trainer=args.trainer), env=pair.nnunet_env(),
                     log_path=logs / "train.log", timeout=args.limit_min * 60, interval_s=1.0)
    epochs = peer.parse_epoch_times(peer.latest_training_log(fold))
    summary_file = fold / "validation" / "summary.json"
    dice = {}
    if summary_file.is_file():
        s = json.loads(summary_file.read_text())
        dice = {LABEL_NAMES.get(k, k): round(v["Dice"], 4) for k, v in s["mean"].items()}
        dice["mean"] = round(s["foreground_mean"]["Dice"], 4)
    plans = json.loads((peer.nnunet_roots(pair.nnunet_root).preprocessed / "Dataset101_ACDC" / "nnUNetPlans.json").read_text())
    cfg = plans["configurations"][args.configuration]
    result = {"machine": machine(), "trainer": args.trainer, "configuration": args.configuration,
              "patch_size": cfg.get("patch_size"), "batch_size": cfg.get("batch_size"),
              "epochs_done": len(epochs), "epoch_s": epochs, "training_s": sum(epochs), "total_s": m.wall_s, "timed_out": m.timed_out,
              "returncode": m.returncode, "validation_dice": dice, "peak_pss_mb": m.peak_pss_mb}
    print(json.dumps(result, indent=2))
    print(f"results: {save_results(f'nnunet_budget_{args.trainer}_{args.configuration}', result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
