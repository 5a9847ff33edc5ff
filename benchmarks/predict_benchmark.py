"""Issue #4 benchmark: CPU inference of autocmr_predict vs nnUNetv2_predict on the same model.

Both tools predict the ED frames of fold 0's validation subjects with the *same weights* (autocmr's trained
CPU-target 2d model, copied into an nnU-Net checkpoint of the identical network), with mirroring on and
off, one after the other in one run; seconds per volume (whole command, start-up included), peak memory
(PSS of the process tree) and Dice of both against the references. Also autocmr's 4D cine throughput
(frames/s) on the Sunnybrook DICOM study, which nnU-Net cannot read.

    python benchmarks/predict_benchmark.py --model benchmarks/work/acdc_end_to_end/results/Dataset101_ACDC/autocmrPlans_cpu__2d
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import pandas as pd

import peer
from acdc_pair import CONFIG, autocmr_weights_into_nnunet, prepare
from common import ACDC, SUNNYBROOK, WORK, fresh, machine, require, save_results, script
from measure import run_measured


def nnunet_checkpoint_template(pair, logs) -> tuple[str, Path]:
    """A one-iteration nnU-Net training of the same configuration, stopped once its checkpoint exists."""
    import subprocess
    import os
    import signal

    trainers = pair.base / "nnunet_trainers"
    name = peer.write_trainer_variant(trainers, num_epochs=1, iterations_per_epoch=1, val_iterations_per_epoch=1)
    fold = peer.nnunet_roots(pair.nnunet_root).results / "Dataset101_ACDC" / f"{name}__nnUNetPlans__{CONFIG}" / "fold_0"
    ckpt = fold / "checkpoint_final.pth"
    if not ckpt.is_file():
        with open(logs / "nnunet_template.log", "w") as out:
            proc = subprocess.Popen(peer.train_cmd(101, CONFIG, 0, trainer=name), stdout=out, stderr=subprocess.STDOUT,
                                    env=pair.nnunet_env(ext_trainer_dir=trainers), start_new_session=True)
            while proc.poll() is None and not ckpt.is_file():
                time.sleep(2)
            time.sleep(3)  # let the checkpoint write finish
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=60)
    return name, fold


def dice_of(pred_dir: Path, pair, cases: list[str]) -> dict:
    from autocmr.evaluation import evaluate_folders

    ref = pred_dir.parent / f"{pred_dir.name}_ref"
    ref.mkdir(exist_ok=True)
    for c in cases:
        link = ref / f"{c}.nii.gz"
        if not link.exists():
            link.symlink_to(pair.raw / "labelsTr" / f"{c}.nii.gz")
    result = evaluate_folders(ref, pred_dir, pred_dir.parent / f"{pred_dir.name}_eval", make_plots=False)
    return {name: round(stats["dice"]["mean"], 4) for name, stats in result.summary["classes"].items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, type=Path, help="autocmr model folder (CPU 2d plans, fold 0 trained)")
    args = ap.parse_args(argv)
    require(ACDC / "patient001", "ACDC training data")
    base = WORK / "acdc_pair"
    base.mkdir(parents=True, exist_ok=True)
    logs = fresh(base / "logs_predict")
    pair = prepare(base, logs)
    import json

    splits = json.loads((pair.preprocessed / "splits.json").read_text())
    meta = pd.read_csv(pair.raw / "cases.csv", dtype=str).set_index("case_id")
    ed = [c for c in splits[0]["val"] if meta.loc[c, "phase"] == "ED"]
    inputs = peer.link_cases(pair.raw, ed, fresh(base / "predict_inputs"))
    trainer, fold = nnunet_checkpoint_template(pair, logs)
    autocmr_weights_into_nnunet(args.model / "fold_0" / "checkpoint_final.pth", fold / "checkpoint_final.pth",
                                fold / "checkpoint_final.pth")
    rows = []
    for mirror in (True, False):
        tag = "mirror" if mirror else "nomirror"
        out_a, out_n = fresh(base / f"pred_autocmr_{tag}"), fresh(base / f"pred_nnunet_{tag}")
        cmd_a = [script("autocmr_predict"), "-i", str(inputs), "-o", str(out_a), "-m", str(args.model), "-f", "0",
                 "--device", "cpu", "--postprocess", "off"] + ([] if mirror else ["--no-mirror"])
        ma = run_measured(cmd_a, env=pair.autocmr_env, log_path=logs / f"autocmr_{tag}.log")
        cmd_n = peer.predict_cmd(inputs, out_n, 101, CONFIG, [0], trainer=trainer, disable_tta=not mirror)
        mn = run_measured(cmd_n, env=pair.nnunet_env(ext_trainer_dir=base / "nnunet_trainers"),
                          log_path=logs / f"nnunet_{tag}.log")
        assert ma.returncode == 0 and mn.returncode == 0, f"a prediction failed, see {logs}"
        row = {"mirroring": mirror, "volumes": len(ed),
               "autocmr_s_per_volume": ma.wall_s / len(ed), "nnunet_s_per_volume": mn.wall_s / len(ed),
               "ratio": ma.wall_s / mn.wall_s, "autocmr_peak_pss_mb": ma.peak_pss_mb, "nnunet_peak_pss_mb": mn.peak_pss_mb,
               "autocmr_dice": dice_of(out_a, pair, ed), "nnunet_dice": dice_of(out_n, pair, ed)}
        print(row, flush=True)
        rows.append(row)
    cine = {}
    if SUNNYBROOK.is_dir():
        out_c = fresh(base / "pred_sunnybrook")
        dicom = fresh(base / "sunnybrook_input") / "SC-HF-I-1"
        shutil.copytree(SUNNYBROOK / "dicom", dicom)
        mc = run_measured([script("autocmr_predict"), "-i", str(dicom.parent), "-o", str(out_c), "-m", str(args.model),
                           "-f", "0", "--device", "cpu"], env=pair.autocmr_env, log_path=logs / "autocmr_cine.log")
        assert mc.returncode == 0, "cine prediction failed"
        from autocmr.io.image import read_header

        masks = [p for p in out_c.glob("*.nii.gz")]
        frames = read_header(masks[0]).size[3] if masks else 0
        cine = {"frames": frames, "wall_s": mc.wall_s, "frames_per_s": frames / mc.wall_s, "peak_pss_mb": mc.peak_pss_mb}
        print("cine", cine)
    result = {"machine": machine(), "model": str(args.model), "rows": rows, "sunnybrook_cine": cine,
              "note": "same weights in both tools; whole-command wall time / volumes (start-up included); "
                      "autocmr --postprocess off to match nnUNetv2_predict, which does not postprocess"}
    print(f"results: {save_results('predict_benchmark', result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
