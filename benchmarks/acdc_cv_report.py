"""Pool a cross-validation run of `acdc_cross_validation.sh` into one evaluation (issue #15).

Takes every fold whose final validation is written, evaluates the pooled validation masks against the
references twice, as predicted and with the model folder's cross-validated postprocessing applied, each with
the slice-position breakdown (`autocmr_evaluate --by slice_position group`), and stores the figures in
benchmarks/results/acdc_cv_RUN.json. Evaluation folders go under $AUTOCMR_HOME/cv_RUN/evaluation/, outside
the work tree.

    python benchmarks/acdc_cv_report.py baseline
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
            "clinical": agreement, "slice_position_bias": summary["slice_position"].get("measure_bias_by_position")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="RUN of acdc_cross_validation.sh (folder $AUTOCMR_HOME/cv_RUN)")
    args = ap.parse_args(argv)
    home = Path(os.environ.get("AUTOCMR_HOME", Path.home() / "autocmr_data")).expanduser() / f"cv_{args.run}"
    model, raw = home / MODEL, home / "raw" / "Dataset101_ACDC"
    folds = finished_folds(model)
    if not folds:
        raise SystemExit(f"{model}: no fold has finished its final validation yet")
    decision = PostprocessingDecision.from_dict(json.loads((model / "postprocessing.json").read_text()))
    evaluation = home / "evaluation"
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
    print("results:", save_results(f"acdc_cv_{args.run}", results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
