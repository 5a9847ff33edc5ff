"""Pool a cross-validation run of `acdc_cross_validation.sh` into one evaluation (issue #15).

Takes every fold whose final validation is written, evaluates the pooled validation masks against the
references twice, as predicted and with the model folder's cross-validated postprocessing applied, each with
the slice-position breakdown (`autocmr_evaluate --by slice_position group`), and stores the figures in
benchmarks/results/acdc_cv_RUN.json. Evaluation folders go under $AUTOCMR_HOME/cv_RUN/evaluation/, outside
the work tree.

    python benchmarks/acdc_cv_report.py baseline
    python benchmarks/acdc_cv_report.py --tables baseline ctx1   # README tables from the stored results
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from common import machine, save_results
from autocmr.evaluation.evaluate import evaluate_folders
from autocmr.inference.postprocessing import PostprocessingDecision

MODEL = Path("results/Dataset101_ACDC/autocmrPlans_cpu__2d")


def finished_folds(model: Path) -> list[int]:
    return [f for f in range(5) if (model / f"fold_{f}" / "validation" / "summary.json").is_file()]


def postprocessed_copy(folds: list[int], model: Path, decision: PostprocessingDecision, out: Path) -> Path:
    """The folds' validation masks with the postprocessing applied, headers kept."""
    out.mkdir(parents=True, exist_ok=True)
    for fold in folds:
        for path in sorted((model / f"fold_{fold}" / "validation").glob("*.nii.gz")):
            image = sitk.ReadImage(str(path))
            label = decision.apply(sitk.GetArrayFromImage(image).astype(np.uint8))
            result = sitk.GetImageFromArray(label)
            result.CopyInformation(image)
            sitk.WriteImage(result, str(out / path.name), True)
    return out


def figures(summary: dict) -> dict:
    classes = {name: {m: round(c[m]["mean"], 4) for m in ("dice", "hd95") if m in c}
               for name, c in summary["classes"].items()}
    agreement = {name: {k: (round(v, 3) if isinstance(v, float) else v) for k, v in a.items()
                        if k in ("n", "bias", "loa_lower", "loa_upper", "mean_abs_diff", "spearman_r",
                                 "reference_mean")}
                 for name, a in summary["clinical"]["agreement"].items()}
    return {"n_volumes": summary["n_volumes"], "classes": classes,
            "mean_dice": round(float(np.mean([c["dice"] for c in classes.values()])), 4),
            "clinical": agreement, "slice_position_bias": summary["slice_position"].get("measure_bias_by_position"),
            # mean mL per volume each class gains from / loses to each other label, by phase (older runs lack it)
            "exchanges": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}
                          for row in summary.get("exchanges", [])]}


# issue #15's targets, printed beside the figures
TARGETS = {"LVEDV": "MAD ≤ 6 mL", "LVEF": "MAD ≤ 3.5 %", "LVM": "\\|bias\\| ≤ 4 g, MAD ≤ 8 g",
           "RVEDV": "MAD ≤ 8.5 mL", "RVEF": "\\|bias\\| ≤ 3 %, MAD ≤ 6 %, r ≥ 0.85"}
POSITIONS = ("above_base", "basal", "mid", "apical", "below_apex")


def markdown_tables(results: dict) -> str:
    """The README's tables for one run's stored figures (postprocessed, as the model folder predicts)."""
    pp, raw = results["postprocessed"], results["as_predicted"]
    lines = [f"Run `{results['run']}`, folds {results['folds']}, {pp['n_volumes']} volumes.", "",
             "| class | Dice (as predicted) | Dice (postprocessed) | HD95 mm (postprocessed) |", "|---|---|---|---|"]
    for name, c in pp["classes"].items():
        lines.append(f"| {name} | {raw['classes'][name]['dice']:.3f} | {c['dice']:.3f} | {c['hd95']:.1f} |")
    lines += [f"| **mean** | {raw['mean_dice']:.3f} | **{pp['mean_dice']:.3f}** | |", "",
              "| measure | reference mean | bias (pred − ref) | 95% limits of agreement | mean abs. diff. | "
              "Spearman r | issue #15 target |", "|---|---|---|---|---|---|---|"]
    for name, a in pp["clinical"].items():
        lines.append(f"| {name} | {a['reference_mean']:.1f} | {a['bias']:+.1f} | [{a['loa_lower']:.1f}, "
                     f"{a['loa_upper']:.1f}] | {a['mean_abs_diff']:.1f} | {a['spearman_r']:.2f} | "
                     f"{TARGETS.get(name, '')} |")
    bias = pp.get("slice_position_bias") or {}
    if bias:
        lines += ["", "| measure | above base | basal third | mid third | apical third | below apex | total bias |",
                  "|---|---|---|---|---|---|---|"]
        for name, parts in bias.items():
            cells = " | ".join(f"{parts.get(p, 0.0):+.1f}" for p in POSITIONS)
            lines.append(f"| {name} | {cells} | {sum(parts.values()):+.1f} |")
    return "\n".join(lines)


def comparison_table(runs: list[dict]) -> str:
    """Runs side by side on the figures that decide a recipe (postprocessed)."""
    head = "| figure | " + " | ".join(f"`{r['run']}` (folds {','.join(map(str, r['folds']))})" for r in runs) + " |"
    lines = [head, "|---" * (len(runs) + 1) + "|"]
    rows = [("mean Dice", lambda p: f"{p['mean_dice']:.3f}")]
    rows += [(f"{c} Dice", lambda p, c=c: f"{p['classes'][c]['dice']:.3f}") for c in ("LV", "MYO", "RV")]
    for m in ("LVEDV", "LVEF", "LVM", "RVEDV", "RVESV", "RVEF"):
        rows.append((f"{m} bias / MAD", lambda p, m=m: f"{p['clinical'][m]['bias']:+.1f} / "
                                                      f"{p['clinical'][m]['mean_abs_diff']:.1f}"))
    rows.append(("RVEF Spearman r", lambda p: f"{p['clinical']['RVEF']['spearman_r']:.2f}"))
    for label, cell in rows:
        lines.append(f"| {label} | " + " | ".join(cell(r["postprocessed"]) for r in runs) + " |")
    return "\n".join(lines)


def print_tables(runs: list[str]) -> int:
    here = Path(__file__).resolve().parent / "results"
    loaded = [json.loads((here / f"acdc_cv_{run}.json").read_text(encoding="utf-8")) for run in runs]  # RUN or RUN_foldsF
    for results in loaded:
        print(markdown_tables(results), end="\n\n")
    if len(loaded) > 1:
        print(comparison_table(loaded))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", nargs="?", help="RUN of acdc_cross_validation.sh (folder $AUTOCMR_HOME/cv_RUN)")
    ap.add_argument("--tables", nargs="+", metavar="RUN", help="print the README tables of stored results")
    ap.add_argument("--folds", nargs="+", type=int, help="only these folds (to compare runs on the folds both "
                    "have finished); results go to acdc_cv_RUN_folds<F...>.json")
    args = ap.parse_args(argv)
    if args.tables:
        return print_tables(args.tables)
    if not args.run:
        ap.error("give a RUN to evaluate, or --tables RUN [RUN ...]")
    home = Path(os.environ.get("AUTOCMR_HOME", Path.home() / "autocmr_data")).expanduser() / f"cv_{args.run}"
    model, raw = home / MODEL, home / "raw" / "Dataset101_ACDC"
    folds = finished_folds(model)
    if args.folds:
        missing = sorted(set(args.folds) - set(folds))
        if missing:
            raise SystemExit(f"{model}: fold(s) {missing} have not finished their final validation")
        folds = sorted(args.folds)
    if not folds:
        raise SystemExit(f"{model}: no fold has finished its final validation yet")
    suffix = f"_folds{''.join(map(str, folds))}" if args.folds else ""  # a fold subset keeps its own files
    result_name = f"acdc_cv_{args.run}{suffix}"
    decision = PostprocessingDecision.from_dict(json.loads((model / "postprocessing.json").read_text()))
    evaluation = home / f"evaluation{suffix}"
    pp_masks = postprocessed_copy(folds, model, decision, evaluation / "postprocessed_masks")
    val_cases = {p.name for f in folds for p in (model / f"fold_{f}" / "validation").glob("*.nii.gz")}
    refs = evaluation / "references"  # only the validated cases, so nothing is reported missing
    refs.mkdir(parents=True, exist_ok=True)
    for name in val_cases:
        if not (refs / name).exists():
            (refs / name).symlink_to(raw / "labelsTr" / name)
    results: dict = {"machine": machine(), "run": args.run, "folds": folds,
                     "options": json.loads((model / "fold_0" / "options.json").read_text()),
                     "postprocessing": {"foreground_lcc": decision.foreground_lcc,
                                        "per_label_lcc": list(decision.per_label_lcc)}}
    pred_dirs = {"as_predicted": [model / f"fold_{f}" / "validation" for f in folds], "postprocessed": [pp_masks]}
    for variant, dirs in pred_dirs.items():
        out = evaluation / variant
        report = evaluate_folders(refs, dirs, metadata=raw / "cases.csv", output_dir=out,
                                  by=["slice_position", "group"], num_workers=1)
        del report
        results[variant] = figures(json.loads((out / "summary.json").read_text()))
        print(variant, json.dumps(results[variant]["classes"]), "mean", results[variant]["mean_dice"])
    print("results:", save_results(result_name, results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
