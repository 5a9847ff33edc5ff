"""The whole chain through the console scripts on phantoms: plan -> train -> predict -> evaluate."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from autocmr.testing.phantoms import write_phantom_dataset

BIN = Path(sys.executable).parent


def run(cmd: list[str], env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(BIN / cmd[0])] + cmd[1:], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{cmd[0]} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc


def test_console_scripts_chain(tmp_path):
    env = dict(os.environ, AUTOCMR_HOME=str(tmp_path / "home"))
    raw = tmp_path / "home" / "raw"
    folder = write_phantom_dataset(raw, n_subjects=6, dataset_id=970, fov_mm=120, reorient=True)
    run(["autocmr_plan", "-d", "970", "--target", "cpu", "-c", "2d", "-j", "1"], env)
    run(["autocmr_train", "970", "2d", "0", "--epochs", "2", "--iterations", "4", "--val-iterations", "2",
         "--batch-size", "2", "--device", "cpu"], env)
    model = tmp_path / "home" / "results" / "Dataset970_Phantom" / "autocmrPlans_cpu__2d"
    fold = model / "fold_0"
    for name in ("checkpoint_final.pth", "checkpoint_best.pth", "checkpoint_latest.pth", "log.txt", "progress.png",
                 "validation/summary.json"):
        assert (fold / name).is_file(), name
    for name in ("plans.json", "dataset.json", "postprocessing.json", "intensity_reference.json", "splits.json"):
        assert (model / name).is_file(), name
    val = json.loads((model / "splits.json").read_text())[0]["val"]
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for case in val:
        (inputs / f"{case}_0000.nii.gz").symlink_to(folder / "imagesTr" / f"{case}_0000.nii.gz")
    out = tmp_path / "predictions"
    run(["autocmr_predict", "-i", str(inputs), "-o", str(out), "-d", "970", "-c", "2d", "--device", "cpu"], env)
    assert sorted(p.name for p in out.glob("*.nii.gz")) == sorted(f"{c}.nii.gz" for c in val)
    assert json.loads((out / "failures.json").read_text()) == []
    run(["autocmr_evaluate", "-ref", str(folder / "labelsTr"), "-pred", str(out), "-meta", str(folder / "cases.csv"),
         "-o", str(tmp_path / "evaluation"), "--by", "phase"], env)
    summary = json.loads((tmp_path / "evaluation" / "summary.json").read_text())
    for cls in ("LV", "MYO", "RV"):
        assert math.isfinite(summary["classes"][cls]["dice"]["mean"])
    cases = pd.read_csv(tmp_path / "evaluation" / "cases.csv")
    assert len(cases) >= len(val)
    assert (tmp_path / "evaluation" / "clinical.csv").is_file()
    assert list((tmp_path / "evaluation").glob("*.png"))
