"""Issue #16: a trained recipe's figures across domains, for the model card of the shipped default model.

Three test sets, each scored with autocmr_evaluate (Dice and HD95 per class, clinical agreement):
1. in-domain: the recipe's 5-fold cross-validation (`--cv-model`), each fold's network predicting only its own
   validation patients (splits.json), so no patient is seen in training;
2. simulated scanner change: the same validation images with cross_domain.py's transform (gamma 1.7 and a
   smooth bias field, its `shifted_copy`), predicted the same way;
3. Sunnybrook (GE scanner, LV and MYO annotated on 9 slices, predicted RV ignored), predicted by `--model`
   (default: the shipped default model), as in cross_domain.py.
Prediction goes through autocmr_predict with the model folder's cross-validated postprocessing (its default);
mirroring is off unless --mirror. Results: results/model_domains_NAME.json (a run on fewer folds or patients
goes to its work folder instead) and a markdown table for the README.

    python benchmarks/model_domains.py --cv-model ~/autocmr_data/cv_edge/results/Dataset101_ACDC/autocmrPlans_cpu__2d
    python benchmarks/model_domains.py --cv-model MODEL --folds 0 --limit 1      # checks the script (minutes)
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
import zlib
from pathlib import Path

import pandas as pd

from common import SUNNYBROOK, WORK, autocmr_env, fresh, machine, save_results, script
from cross_domain import run, shifted_copy  # the same scanner change and command runner as the cross-domain study

CLASSES = ("LV", "MYO", "RV")
MEASURES = ("LVEDV", "LVEF", "LVM", "RVEDV", "RVEF")  # the card's clinical figures (issue #15's targets)
DOMAINS = {"in_domain": "in-domain (ACDC CV)", "scanner_change": "simulated scanner change (ACDC CV)",
           "sunnybrook": "Sunnybrook, GE (LV/MYO)"}


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cv-model", type=Path,
                    help="model folder of a 5-fold cross-validation (fold_0..fold_4, splits.json, "
                         "postprocessing.json); without it only the Sunnybrook row is measured (needs --name)")
    ap.add_argument("--raw", type=Path, help="its raw dataset (imagesTr, labelsTr, cases.csv); default: "
                    "HOME/raw/DatasetXXX_NAME for a model folder HOME/results/DatasetXXX_NAME/PLANS__CONFIG")
    ap.add_argument("--model", default="default", help="model for the Sunnybrook check: a folder, 'default' (the "
                    "shipped model) or an installed model's name")
    ap.add_argument("--model-folds", nargs="+", help="folds of --model to use (e.g. 'all' for a fold-all model "
                    "trained in the CV folder before it is packed); default: all it has")
    ap.add_argument("--name", help="results file model_domains_NAME.json; default: the CV run (cv_RUN folder "
                    "above results/, as acdc_cross_validation.sh names it)")
    ap.add_argument("--folds", nargs="+", type=int, help="only these folds (default: every fold in splits.json)")
    ap.add_argument("--limit", type=int, help="only the first N validation patients of each fold (quick checks)")
    ap.add_argument("--mirror", action=argparse.BooleanOptionalAction, default=False,
                    help="test-time mirroring (off by default: 4x cheaper; the card's CV figures from training's "
                         "final validation were made with it)")
    ap.add_argument("--workers", type=int, help="-j of autocmr_predict and autocmr_evaluate (default: theirs)")
    ap.add_argument("--device", default="cpu", help="autocmr_predict --device (default cpu)")
    ap.add_argument("--work", type=Path, default=WORK,
                    help="scratch root (default benchmarks/work); the run uses and empties a model_domains_* "
                         "folder inside it")
    args = ap.parse_args(argv)
    if args.cv_model is None and not args.name:
        ap.error("--name is needed without --cv-model")
    if args.limit is not None and args.limit < 1:
        ap.error("--limit must be at least 1")
    return args


def run_name(args: argparse.Namespace, all_folds: list[int]) -> tuple[str, bool]:
    """Results name and whether the run is complete (every fold, every patient): only complete runs go to
    results/, so a quick check never stands in for the card's figures."""
    name = args.name or default_name(args.cv_model)
    name += "_mirror" if args.mirror else ""
    partial = args.limit is not None or (args.folds is not None and sorted(set(args.folds)) != all_folds)
    if partial:
        name += "_folds" + "".join(map(str, sorted(set(args.folds or all_folds))))
        name += f"_limit{args.limit}" if args.limit is not None else ""
    return name, not partial


def default_name(cv_model: Path) -> str:
    home = cv_model.resolve().parents[2].name  # HOME of HOME/results/DatasetXXX_NAME/PLANS__CONFIG
    return home[3:] if home.startswith("cv_") else cv_model.name


def default_raw(cv_model: Path) -> Path:
    model = cv_model.resolve()
    return model.parents[2] / "raw" / model.parent.name


def validation_subjects(splits: list[dict], meta: pd.DataFrame, folds: list[int], limit: int | None
                        ) -> dict[int, list[str]]:
    """Each fold's validation patients (first ``limit`` of them), after checking that none was trained on."""
    chosen = {}
    for fold in folds:
        split = splits[fold]
        subject = lambda cases: list(dict.fromkeys(meta.at[c, "subject"] for c in cases))  # noqa: E731
        seen = set(subject(split["train"])) & set(subject(split["val"]))
        if seen:  # case-level splits would put a patient's other phase in training
            raise SystemExit(f"fold {fold}: patients in both training and validation: {sorted(seen)[:5]}")
        chosen[fold] = subject(split["val"])[:limit]
    return chosen


def link_references(raw: Path, cases: list[str], meta: pd.DataFrame, out: Path) -> Path:
    """Reference labels of the tested cases only (evaluate counts every other reference as missing), with their
    cases.csv, which pairs ED and ES for the clinical measures."""
    out.mkdir(parents=True)
    for c in cases:
        (out / f"{c}.nii.gz").symlink_to(raw / "labelsTr" / f"{c}.nii.gz")
    meta.loc[cases].reset_index().to_csv(out / "cases.csv", index=False)
    return out


def fold_inputs(raw: Path, cases: list[str], plain: Path, shifted: Path) -> None:
    """The fold's validation images as they are (links) and with the simulated scanner change."""
    plain.mkdir(parents=True)
    for c in cases:
        images = sorted((raw / "imagesTr").glob(f"{c}_[0-9][0-9][0-9][0-9].nii.gz"))
        if not images:
            raise SystemExit(f"{raw / 'imagesTr'}: no image of validation case {c}")
        for image in images:
            (plain / image.name).symlink_to(image)
            # one seed per file, from its name: a case gets the same bias field in a --limit run as in the full one
            shifted_copy([image], shifted, seed=zlib.crc32(image.name.encode()))


def predict(tag: str, images: Path, out: Path, model: Path, folds: list[str] | None, args, env, logs, timings):
    run(f"predict_{tag}", [script("autocmr_predict"), "-i", str(images), "-o", str(out), "-m", str(model),
                           "--device", args.device, "--no-analysis"]  # masks only: evaluate does the measures
        + (["-f", *folds] if folds else []) + ([] if args.mirror else ["--no-mirror"])
        + (["-j", str(args.workers)] if args.workers is not None else []), env, logs, timings)


def evaluate(tag: str, refs: Path, preds: list[Path], out: Path, args, env, logs, timings, extra=()) -> dict:
    run(f"evaluate_{tag}", [script("autocmr_evaluate"), "-ref", str(refs), "-pred", *map(str, preds), "-o", str(out),
                            "--no-plots", *extra] + (["-j", str(args.workers)] if args.workers is not None else []),
        env, logs, timings)
    summary = json.loads((out / "summary.json").read_text())
    left_out = summary["n_failed"] + summary.get("n_missing", 0)
    if left_out:  # figures over fewer volumes than asked for would pass unnoticed in the table
        raise SystemExit(f"{tag}: {left_out} cases could not be evaluated or were not predicted; see "
                         f"{out / 'summary.json'}")
    return summary


def predictor_settings(folders: list[Path]) -> list[dict]:
    """What autocmr_predict recorded it did (folds, mirroring, postprocessing), one entry per distinct setting."""
    settings = [json.loads((f / "predictions.json").read_text())["predictor"] for f in folders]
    return [s for i, s in enumerate(settings) if s not in settings[:i]]


def _round(value, digits: int):
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else round(float(value), digits)


def figures(summary: dict) -> dict:
    """The card's figures from an evaluation summary: per-class Dice and HD95 means, clinical agreement."""
    clinical = (summary.get("clinical") or {}).get("agreement") or {}
    return {"n_volumes": summary["n_volumes"],
            "n_subjects": (summary.get("clinical") or {}).get("n_complete"),
            "classes": {name: {m: _round(c[m]["mean"], 4) for m in ("dice", "hd95") if m in c}
                        for name, c in summary["classes"].items()},
            "mean_dice": _round(summary["mean_over_classes"]["dice"], 4),
            "clinical": {name: {k: _round(a.get(k), 3) if k != "n" else a.get(k)
                                for k in ("n", "bias", "mean_abs_diff", "loa_lower", "loa_upper", "spearman_r",
                                          "reference_mean")}
                         for name, a in clinical.items() if a.get("n")}}  # none without ED/ES pairs (Sunnybrook)


def _cell(value, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def markdown_table(domains: dict[str, dict]) -> str:
    """One row per test set: Dice per class and mean, HD95 per class, bias / MAD of the clinical measures."""
    head = ("| test images | volumes (patients) | LV | MYO | RV | mean Dice | HD95 LV / MYO / RV mm | "
            + " | ".join(f"{m} bias / MAD" for m in MEASURES) + " |")
    lines = [head, "|---" * (7 + len(MEASURES)) + "|"]
    for key, f in domains.items():
        classes = f["classes"]
        dice = [_cell(classes.get(c, {}).get("dice"), ".3f") for c in CLASSES]
        hd95 = " / ".join(_cell(classes.get(c, {}).get("hd95"), ".1f") for c in CLASSES)
        patients = f" ({f['n_subjects']})" if f.get("n_subjects") else ""
        clinical = []
        for m in MEASURES:
            a = f["clinical"].get(m) or {}
            mad = _cell(a.get("mean_abs_diff"), ".1f")
            clinical.append("–" if a.get("bias") is None else f"{a['bias']:+.1f} / {mad}")
        lines.append(f"| {DOMAINS.get(key, key)} | {f['n_volumes']}{patients} | " + " | ".join(dice)
                     + f" | {_cell(f['mean_dice'], '.3f')} | {hd95} | " + " | ".join(clinical) + " |")
    return "\n".join(lines)


def caption(result: dict) -> str:
    cv, sb = result["cv"], result.get("sunnybrook_model")
    if cv is None:
        text = (f"Across domains (`benchmarks/model_domains.py`, {result['machine']['date'][:10]}): no "
                "cross-validation folds given, so no in-domain or simulated scanner-change rows; mirroring "
                f"{'on' if result['args']['mirror'] else 'off'}.")
    else:
        text = (f"Across domains (`benchmarks/model_domains.py`, {result['machine']['date'][:10]}): CV model "
                f"`{cv['model']}`, folds {', '.join(map(str, cv['folds']))}, {cv['n_subjects']} validation patients, "
                "each predicted by the fold that did not train on it, cross-validated postprocessing applied; "
                f"mirroring {'on' if result['args']['mirror'] else 'off'}.")
    if sb:
        folds = f" (folds {' '.join(sb['folds'])})" if sb["folds"] else ""
        text += (f" Sunnybrook: model `{sb['name']}`{folds} on the study's "
                 f"{result['domains']['sunnybrook']['n_volumes']} annotated single-slice images; mean Dice over LV "
                 "and MYO.")
    return text + " Clinical cells: bias (predicted − reference) / mean absolute difference (mL, %, g)."


def model_record(reference: str, folds: list[str] | None) -> dict:
    """The --model folder and name. Resolved here, with the caller's environment: the commands run with the work
    folder as AUTOCMR_HOME, where an installed model's name would not be found."""
    from autocmr.models.registry import resolve_model

    folder = resolve_model(reference).resolve()
    manifest = json.loads((folder / "model.json").read_text()) if (folder / "model.json").is_file() else {}
    return {"reference": reference, "folder": str(folder), "name": manifest.get("name") or folder.name,
            "folds": folds}


def sunnybrook(model: dict, home: Path, args, env, logs, timings) -> dict | None:
    if not SUNNYBROOK.is_dir():
        print(f"Sunnybrook study not found at {SUNNYBROOK}: its row is left out", flush=True)
        return None
    run("convert_sunnybrook", [script("autocmr_convert"), "sunnybrook", str(SUNNYBROOK), "-d", "130"], env, logs,
        timings)
    sb = home / "raw" / "Dataset130_Sunnybrook"
    pred = home / "predictions" / "sunnybrook"
    predict("sunnybrook", sb / "imagesTr", pred, Path(model["folder"]), model["folds"], args, env, logs, timings)
    # LV and MYO only are annotated: the predicted RV counts as background, as in cross_domain.py
    return evaluate("sunnybrook", sb / "labelsTr", [pred], home / "evaluation" / "sunnybrook", args, env, logs,
                    timings, extra=["--labels", str(sb / "dataset.json"), "--ignore-pred-labels", "3"])


def cv_setup(args: argparse.Namespace) -> dict:
    """The cross-validation folder, its raw dataset and splits, checked before anything runs."""
    cv_model = args.cv_model.expanduser().resolve()
    raw = (args.raw or default_raw(cv_model)).expanduser().resolve()
    for path, what in ((cv_model / "splits.json", "a cross-validation model folder"), (raw / "cases.csv", "--raw")):
        if not path.is_file():
            raise SystemExit(f"{path} not found: check {what}")
    splits = json.loads((cv_model / "splits.json").read_text())
    all_folds = list(range(len(splits)))
    folds = sorted(set(args.folds)) if args.folds else all_folds
    for fold in folds:
        if fold not in all_folds:
            raise SystemExit(f"fold {fold} is not in {cv_model / 'splits.json'} (folds {all_folds})")
        if not (cv_model / f"fold_{fold}" / "checkpoint_final.pth").is_file():
            raise SystemExit(f"{cv_model}: fold {fold} has not finished training (no checkpoint_final.pth)")
    return {"model": cv_model, "raw": raw, "splits": splits, "all_folds": all_folds, "folds": folds}


def cross_validation_domains(cv: dict, args, home: Path, env, logs, t: dict) -> tuple[dict, dict, dict]:
    """In-domain and simulated scanner-change rows: each fold's network on its own validation patients."""
    cv_model, raw, splits, folds = cv["model"], cv["raw"], cv["splits"], cv["folds"]
    meta = pd.read_csv(raw / "cases.csv", dtype=str).set_index("case_id")
    subjects = validation_subjects(splits, meta, folds, args.limit)
    fold_cases = {f: [c for c in splits[f]["val"] if meta.at[c, "subject"] in subjects[f]] for f in folds}
    refs = link_references(raw, [c for f in folds for c in fold_cases[f]], meta, home / "references")
    preds: dict[str, list[Path]] = {"in_domain": [], "scanner_change": []}
    for fold in folds:
        plain, shifted = (home / "images" / domain / f"fold_{fold}" for domain in ("in_domain", "scanner_change"))
        t0 = time.perf_counter()
        fold_inputs(raw, fold_cases[fold], plain, shifted)
        t[f"scanner_change_images_fold_{fold}"] = round(time.perf_counter() - t0, 1)
        for domain, images in (("in_domain", plain), ("scanner_change", shifted)):
            out = home / "predictions" / domain / f"fold_{fold}"
            predict(f"{domain}_fold_{fold}", images, out, cv_model, [str(fold)], args, env, logs, t)
            preds[domain].append(out)
    summaries = {domain: evaluate(domain, refs, dirs, home / "evaluation" / domain, args, env, logs, t)
                 for domain, dirs in preds.items()}
    record = {"model": str(cv_model), "raw": str(raw), "folds": folds,
              "n_subjects": sum(len(s) for s in subjects.values()),
              "subjects": {str(f): s for f, s in subjects.items()},
              "postprocessing": json.loads((cv_model / "postprocessing.json").read_text())
              if (cv_model / "postprocessing.json").is_file() else None}
    return summaries, preds, record


def main(argv=None) -> int:
    args = parse_args(argv)
    cv = cv_setup(args) if args.cv_model is not None else None
    name, complete = run_name(args, cv["all_folds"]) if cv else (args.name + ("_mirror" if args.mirror else ""), True)
    sb_model = model_record(args.model, args.model_folds)
    print(f"mirroring {'on' if args.mirror else 'off (--mirror to turn it on)'}; results name {name}"
          + ("" if complete else " (a partial run: results stay in the work folder)"), flush=True)

    home = fresh(args.work.expanduser().resolve() / f"model_domains_{name}")
    logs = home / "logs"
    logs.mkdir()
    env = autocmr_env(home)
    t: dict = {}
    started = time.perf_counter()
    summaries, preds, cv_record = {}, {}, None
    if cv:
        summaries, preds, cv_record = cross_validation_domains(cv, args, home, env, logs, t)
    sb = sunnybrook(sb_model, home, args, env, logs, t)
    if sb is not None:
        summaries["sunnybrook"] = sb
    if not summaries:
        raise SystemExit("nothing measured: no --cv-model and no Sunnybrook study")
    domains = {key: figures(s) for key, s in summaries.items()}
    predicted = {**preds, "sunnybrook": [home / "predictions" / "sunnybrook"]}
    for key in domains:
        domains[key]["description"] = DOMAINS.get(key, key)  # read by the model card (autocmr_models pack --domains)
        domains[key]["predictor"] = predictor_settings(predicted[key])
    t["total"] = round(time.perf_counter() - started, 1)
    result = {"machine": machine(), "command": [sys.executable, *sys.argv], "args": vars(args), "complete": complete,
              "cv": cv_record,
              "sunnybrook_model": sb_model if sb is not None else None,
              "scanner_change": "cross_domain.shifted_copy: gamma 1.7 on intensities normalised to the 0.5-99.5 "
                                "percentiles, multiplicative linear bias 1 + gx*x + gy*y, gx, gy ~ U(-0.35, 0.35), "
                                "seeded per file by crc32 of its name",
              "domains": domains, "timings_s": t}
    result["table"] = caption(result) + "\n\n" + markdown_table(domains)
    path = save_results(f"model_domains_{name}", result) if complete else home / f"model_domains_{name}.json"
    if not complete:
        path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print("\n" + result["table"] + "\n")
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
