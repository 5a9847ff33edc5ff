"""Issue #7 experiment: train on one domain, test on another; cross-domain augmentation, fine-tuning on 1 and
3 target subjects, and test-time histogram matching. CPU only.

Domains come from the shared ACDC data (no second site is available). Source site: the NOR, MINF and DCM
patients as acquired. Target site: the HCM and RV patients (thick walls, dilated right ventricles) with a
simulated scanner change (gamma 1.7 contrast and a smooth bias field) applied to their images; the models
are also tested on the target patients without the scanner change, to separate the two shifts. Fine-tuning
uses 1 or 3 target-site patients (their changed images), never the test patients. The Sunnybrook study (GE
scanner, LV and MYO annotated on 9 slices) is a cross-vendor LV/MYO check.

    python benchmarks/cross_domain.py [--source-budget 15m] [--finetune-budget 5m] [--test-subjects 12]
    python benchmarks/cross_domain.py --reuse-source   # keep the trained source models of the last run
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from common import ACDC, RESULTS, SUNNYBROOK, WORK, autocmr_env, fresh, machine, require, save_results, script
from measure import run_measured

SOURCE_GROUPS, TARGET_GROUPS = ("NOR", "MINF", "DCM"), ("HCM", "RV")


def run(name, cmd, env, logs, timings):
    m = run_measured(cmd, env=env, log_path=logs / f"{name}.log", interval_s=1.0)
    timings[name] = round(m.wall_s, 1)
    print(f"[{name}] {m.wall_s:.0f} s exit {m.returncode}", flush=True)
    if m.returncode not in (0,):
        raise SystemExit(f"{name} failed; see {logs / (name + '.log')}")


def subset_dataset(raw: Path, src: Path, dataset_id: int, name: str, cases: list[str], meta: pd.DataFrame,
                   images: Path | None = None) -> Path:
    """A raw dataset made of links to some cases of ``src`` (images from ``images`` when given)."""
    out = raw / f"Dataset{dataset_id:03d}_{name}"
    for sub in ("imagesTr", "labelsTr"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for c in cases:
        (out / "imagesTr" / f"{c}_0000.nii.gz").symlink_to((images or src / "imagesTr") / f"{c}_0000.nii.gz")
        (out / "labelsTr" / f"{c}.nii.gz").symlink_to(src / "labelsTr" / f"{c}.nii.gz")
    dj = json.loads((src / "dataset.json").read_text())
    dj["numTraining"] = len(cases)
    (out / "dataset.json").write_text(json.dumps(dj, indent=2))
    meta.loc[cases].reset_index().to_csv(out / "cases.csv", index=False)
    return out


def shifted_copy(images: list[Path], out: Path, seed: int = 0) -> Path:
    """Simulated scanner change: gamma 1.7 on normalised intensities and a smooth multiplicative bias."""
    from autocmr.io.image import read_image, write_image

    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for f in images:
        img, geometry = read_image(f, dtype=np.float32)
        lo, hi = np.percentile(img, [0.5, 99.5])
        x = np.clip((img - lo) / (hi - lo), 0, 1) ** 1.7
        zz, yy, xx = np.meshgrid(*[np.linspace(-1, 1, n) for n in img.shape], indexing="ij")
        gx, gy = rng.uniform(-0.35, 0.35, 2)
        write_image((x * (1 + gx * xx + gy * yy) * 1000).astype(np.float32), geometry, out / f.name)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source-budget", default="15m")
    ap.add_argument("--finetune-budget", default="5m", help="upper limit for each fine-tuning run; autocmr's "
                    "default schedule (scaled to the number of fine-tuning subjects) usually ends first")
    ap.add_argument("--test-subjects", type=int, default=12)
    ap.add_argument("--mirror", action="store_true", help="test-time mirroring (off by default here: 4x faster, and "
                                                        "the comparisons are between models, all predicted alike)")
    ap.add_argument("--reuse-source", action="store_true",
                    help="keep the converted data and the two trained source models of the previous run (same "
                         "budgets); fine-tuning, prediction and evaluation are redone")
    args = ap.parse_args(argv)
    require(ACDC / "patient001", "ACDC training data")
    home = WORK / "cross_domain"
    t: dict = {}
    reused = args.reuse_source and all((home / "models" / f"source_{a}" / "fold_0" / "checkpoint_final.pth").is_file()
                                       for a in ("default", "cross-domain"))
    if reused:
        previous = RESULTS / "cross_domain.json"
        if previous.is_file():
            t = {k: v for k, v in json.loads(previous.read_text())["timings_s"].items()
                 if k.startswith(("convert", "plan_source", "train_source"))}
        for stale in ("predictions", "evaluation", "test_images", "test_images_shifted", "test_labels",
                      "target_site_images", "logs"):
            shutil.rmtree(home / stale, ignore_errors=True)
        for stale in [*(home / "models").glob("finetune*"), *(home / "raw").glob("Dataset1[13][230]_*"),
                      *(home / "preprocessed").glob("Dataset11[23]_*")]:
            shutil.rmtree(stale)
    else:
        fresh(home)
    logs = home / "logs"
    logs.mkdir()
    env = autocmr_env(home)
    if not reused:
        run("convert", [script("autocmr_convert"), "acdc", str(ACDC), "-d", "101"], env, logs, t)
    acdc = home / "raw" / "Dataset101_ACDC"
    meta = pd.read_csv(acdc / "cases.csv", dtype=str).set_index("case_id")
    by_subject = meta.groupby("subject")
    subjects = {g: sorted(meta[meta.group == g].subject.unique()) for g in SOURCE_GROUPS + TARGET_GROUPS}
    source = [s for g in SOURCE_GROUPS for s in subjects[g]]
    target = [s for g in TARGET_GROUPS for s in subjects[g]]
    rng = np.random.default_rng(0)
    target = list(rng.permutation(target))
    finetune_pool, test = target[:3], target[3:3 + args.test_subjects]
    cases = lambda subs: sorted(c for s in subs for c in by_subject.get_group(s).index)  # noqa: E731
    source_val = list(rng.permutation(source))[:4]
    # the target site: every target patient's images with the simulated scanner change
    site = shifted_copy([acdc / "imagesTr" / f"{c}_0000.nii.gz" for c in cases(finetune_pool + test)],
                        home / "target_site_images")
    if not reused:
        subset_dataset(home / "raw", acdc, 111, "ACDCsource", cases(source), meta)
    subset_dataset(home / "raw", acdc, 112, "ACDCtarget1", cases(finetune_pool[:1]), meta, images=site)
    subset_dataset(home / "raw", acdc, 113, "ACDCtarget3", cases(finetune_pool), meta, images=site)
    splits = home / "source_splits.json"
    splits.write_text(json.dumps([{"train": cases([s for s in source if s not in source_val]), "val": cases(source_val)}]))
    if not reused:
        run("plan_source", [script("autocmr_plan"), "-d", "111", "--target", "cpu", "-c", "2d"], env, logs, t)
    models = {}
    finetune_iterations: dict[str, dict[str, int]] = {}  # the schedule autocmr chose (the budget is only an upper limit)
    for aug in ("default", "cross-domain"):
        out = home / "models" / f"source_{aug}"
        if not reused:
            run(f"train_source_{aug}", [script("autocmr_train"), "111", "2d", "0", "-p", "autocmrPlans_cpu",
                                        "--splits", str(splits), "--time-budget", args.source_budget,
                                        "--augmentation", aug, "--device", "cpu", "-o", str(out)], env, logs, t)
        models[f"source ({aug} aug)"] = out
        for n, ds in ((1, 112), (3, 113)):
            ft = home / "models" / f"finetune{n}_{aug}"
            run(f"finetune{n}_{aug}", [script("autocmr_train"), str(ds), "2d", "all", "--pretrained", str(out),
                                       "--freeze", "decoder", "--time-budget", args.finetune_budget,
                                       "--augmentation", aug, "--device", "cpu", "-o", str(ft)], env, logs, t)
            models[f"+ fine-tune {n} subject{'s' if n > 1 else ''} ({aug} aug)"] = ft
            chosen = json.loads((ft / "fold_all" / "options.json").read_text())["options"]
            trained = re.search(r"training done after (\d+) epochs", (ft / "fold_all" / "log.txt").read_text())
            finetune_iterations[ft.name] = {"scheduled": chosen["epochs"] * chosen["iterations_per_epoch"],
                                            "trained": int(trained.group(1)) * chosen["iterations_per_epoch"]}
    test_cases = cases(test)
    inputs = home / "test_images"
    inputs.mkdir()
    for c in test_cases:
        (inputs / f"{c}_0000.nii.gz").symlink_to(acdc / "imagesTr" / f"{c}_0000.nii.gz")
    shifted = home / "test_images_shifted"
    shifted.mkdir()
    for c in test_cases:
        (shifted / f"{c}_0000.nii.gz").symlink_to(site / f"{c}_0000.nii.gz")
    refs = home / "test_labels"
    refs.mkdir()
    for c in test_cases:
        (refs / f"{c}.nii.gz").symlink_to(acdc / "labelsTr" / f"{c}.nii.gz")
    meta.loc[test_cases].reset_index().to_csv(refs / "cases.csv", index=False)
    rows = []
    for label, model in models.items():
        # fine-tuned models belong to the target site: tested there (with and without harmonisation)
        conditions = [("target site", shifted, False), ("target site", shifted, True)]
        if "fine-tune" not in label:
            conditions += [("target patients, source scanner", inputs, False),
                           ("target patients, source scanner", inputs, True)]
        for cond, images, harmonise in conditions:
            tag = f"{model.name}_{'shift' if images == shifted else 'plain'}{'_hm' if harmonise else ''}"
            pred = home / "predictions" / tag
            run(f"predict_{tag}", [script("autocmr_predict"), "-i", str(images), "-o", str(pred), "-m", str(model),
                                   "--device", "cpu"] + (["--harmonise"] if harmonise else [])
                + ([] if args.mirror else ["--no-mirror"]), env, logs, t)
            ev = home / "evaluation" / tag
            run(f"evaluate_{tag}", [script("autocmr_evaluate"), "-ref", str(refs), "-pred", str(pred), "-o", str(ev),
                                    "--no-plots", "--by", "group"], env, logs, t)
            s = json.loads((ev / "summary.json").read_text())
            rows.append({"model": label, "test": cond, "harmonise": harmonise,
                         **{c: round(s["classes"][c]["dice"]["mean"], 4) for c in ("LV", "MYO", "RV")},
                         "mean": round(s["mean_over_classes"]["dice"], 4)})
            print(rows[-1], flush=True)
    sunny = []
    if SUNNYBROOK.is_dir():
        run("convert_sunnybrook", [script("autocmr_convert"), "sunnybrook", str(SUNNYBROOK), "-d", "130"], env, logs, t)
        sb = home / "raw" / "Dataset130_Sunnybrook"
        for label in ("source (default aug)", "source (cross-domain aug)"):
            for harmonise in (False, True):
                tag = f"sunnybrook_{models[label].name}{'_hm' if harmonise else ''}"
                pred = home / "predictions" / tag
                run(f"predict_{tag}", [script("autocmr_predict"), "-i", str(sb / "imagesTr"), "-o", str(pred), "-m",
                                       str(models[label]), "--device", "cpu"] + (["--harmonise"] if harmonise else [])
                    + ([] if args.mirror else ["--no-mirror"]), env, logs, t)
                ev = home / "evaluation" / tag
                run(f"evaluate_{tag}", [script("autocmr_evaluate"), "-ref", str(sb / "labelsTr"), "-pred", str(pred),
                                        "-o", str(ev), "--no-plots", "--labels", str(sb / "dataset.json"),
                                        "--ignore-pred-labels", "3"], env, logs, t)
                s = json.loads((ev / "summary.json").read_text())
                sunny.append({"model": label, "harmonise": harmonise,
                              **{c: round(s["classes"][c]["dice"]["mean"], 4) for c in ("LV", "MYO")}})
                print(sunny[-1], flush=True)
    result = {"machine": machine(), "args": vars(args), "source_models_reused": reused,
              "source_subjects": len(source), "target_test_subjects": len(test),
              "finetune_subjects": finetune_pool, "finetune_iterations": finetune_iterations, "rows": rows,
              "sunnybrook": sunny, "timings_s": t}
    print(f"results: {save_results('cross_domain', result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
