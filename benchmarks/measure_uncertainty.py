"""Issue #17 study: does a per-measure uncertainty from the softmax tell which clinical measures are off?

The QC's review flag finds segmentation failures, but not the plausible masks whose volumes are off by more
than 10 % (README, "Does the review flag find the bad segmentations?"): its uncertainty score is one number
per case. This measures a per-measure one, computed from the probabilities every prediction already has
(``autocmr_predict --save-probabilities``, the mean over folds and mirrorings): for each class and phase the
*soft uncertain volume* ``sum(min(p, 1 - p)) * voxel volume`` (mL; voxels the network gives near 0 or 1 add
nothing), turned into an uncertainty of each measure (volumes: that class's soft volume; LV mass: the
myocardium's x 1.05 g/mL; ejection fractions: the two volumes' uncertainties propagated), and compared with
the measure's true error against the references: Spearman correlation per measure, and how well the largest
relative uncertainty of a subject separates the subjects with a measure off by more than 10 % (the issue's
"bad") from the others (ROC AUC, and the share of each flagged over a threshold sweep).

    python benchmarks/measure_uncertainty.py --raw RAW --predictions OUT0 OUT1 --name e96_ep40_folds01

``OUT*`` are ``autocmr_predict`` output folders of cross-validation validation cases (masks, ``*_probabilities.npz``,
``predictions.json``); the masks get the postprocessing given by ``--postprocessing`` (default: largest foreground
component, then the largest LV and RV component, the decision of the shipped recipe).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from common import machine, save_results

from autocmr.dataset.labels import LV, MYO, RV
from autocmr.evaluation.clinical import MYOCARDIAL_DENSITY_G_PER_ML, clinical_measures
from autocmr.inference.postprocessing import PostprocessingDecision
from autocmr.io.image import read_image

VOLUMES = {"LVEDV": (LV, "ED"), "LVESV": (LV, "ES"), "RVEDV": (RV, "ED"), "RVESV": (RV, "ES")}
CHECKED = ("LVEDV", "LVESV", "LVEF", "LVM", "RVEDV", "RVESV", "RVEF")
MEASURE_BAD = 0.10  # the "off by more than 10 %"


def soft_uncertain_ml(probabilities: np.ndarray, voxel_ml: float) -> dict[int, float]:
    """Per class, ``sum(min(p, 1 - p))`` over the voxels, in mL: the volume the network is unsure of."""
    p = probabilities.astype(np.float32)
    return {c: float(np.minimum(p[c], 1.0 - p[c]).sum() * voxel_ml) for c in (LV, MYO, RV)}


def measure_uncertainties(soft: dict[str, dict[int, float]], measures: dict[str, float]) -> dict[str, float]:
    """Each measure's uncertainty in its unit from the soft uncertain volumes of the ED and ES masks."""
    u = {name: soft[phase][label] for name, (label, phase) in VOLUMES.items()}
    u["LVM"] = soft["ED"][MYO] * MYOCARDIAL_DENSITY_G_PER_ML
    for side in ("LV", "RV"):
        edv, esv = measures[f"{side}EDV"], measures[f"{side}ESV"]
        if edv > 0:  # EF = 100 (EDV - ESV) / EDV: dEF/dEDV = 100 ESV / EDV^2, dEF/dESV = -100 / EDV
            u[f"{side}EF"] = 100.0 * float(np.hypot(esv / edv ** 2 * u[f"{side}EDV"], u[f"{side}ESV"] / edv))
        else:
            u[f"{side}EF"] = float("nan")
    return u


def subject_rows(raw: Path, folders: list[Path], decision: PostprocessingDecision) -> list[dict]:
    cases = pd.read_csv(raw / "cases.csv").set_index("case_id")
    rows = []
    for folder in folders:
        recorded = json.loads((folder / "predictions.json").read_text())["cases"]
        names = sorted(recorded)
        for subject in sorted({cases.at[n, "subject"] for n in names}):
            phases = {cases.at[n, "phase"]: n for n in names if cases.at[n, "subject"] == subject}
            if set(phases) != {"ED", "ES"}:
                continue
            pred, ref, soft, disagreement = {}, {}, {}, []
            for phase, name in phases.items():
                mask, geometry = read_image(folder / f"{name}.nii.gz")
                pred[phase] = decision.apply(mask)
                ref[phase], _ = read_image(raw / "labelsTr" / f"{name}.nii.gz")
                voxel_ml = float(np.prod(geometry.spacing_zyx)) / 1000.0
                with np.load(folder / f"{name}_probabilities.npz") as data:
                    soft[phase] = soft_uncertain_ml(data["probabilities"], voxel_ml)
                disagreement += [u for u in recorded[name].get("uncertainty") or [] if u is not None]
            spacing = geometry.spacing_zyx
            predicted = clinical_measures(pred["ED"], pred["ES"], spacing)
            truth = clinical_measures(ref["ED"], ref["ES"], spacing)
            unc = measure_uncertainties(soft, predicted)
            row = {"subject": subject, "group": cases.at[phases["ED"], "group"],
                   "disagreement": max(disagreement) if disagreement else float("nan")}
            for m in CHECKED:
                row[f"{m}_error"] = predicted[m] - truth[m]
                row[f"{m}_rel_error"] = abs(predicted[m] - truth[m]) / abs(truth[m]) if truth[m] else float("nan")
                row[f"{m}_uncertainty"] = unc[m]
                row[f"{m}_rel_uncertainty"] = unc[m] / abs(predicted[m]) if predicted[m] else float("nan")
            rows.append(row)
    return rows


def _auc(score: pd.Series, positive: pd.Series) -> float | None:
    """ROC AUC of ``score`` for ``positive`` (the Mann-Whitney U over both groups' sizes); None without both."""
    keep = score.notna()
    score, positive = score[keep], positive[keep]
    if not positive.any() or positive.all():
        return None
    u = stats.mannwhitneyu(score[positive], score[~positive]).statistic
    return float(u / (positive.sum() * (~positive).sum()))


def summarise(table: pd.DataFrame) -> dict:
    summary: dict = {"subjects": len(table), "per_measure": {}}
    for m in CHECKED:
        rho, p = stats.spearmanr(table[f"{m}_rel_uncertainty"], table[f"{m}_rel_error"], nan_policy="omit")
        abs_rho, _ = stats.spearmanr(table[f"{m}_uncertainty"], table[f"{m}_error"].abs(), nan_policy="omit")
        off = table[f"{m}_rel_error"] > MEASURE_BAD
        summary["per_measure"][m] = {"spearman_rel": float(rho), "p": float(p), "spearman_abs": float(abs_rho),
                                     "off_by_10_percent": int(off.sum()),
                                     "roc_auc_off_by_10_percent": _auc(table[f"{m}_rel_uncertainty"], off),
                                     "median_uncertainty": float(table[f"{m}_uncertainty"].median())}
    bad = (table[[f"{m}_rel_error" for m in CHECKED]] > MEASURE_BAD).any(axis=1)
    scores = {"max_relative_uncertainty": table[[f"{m}_rel_uncertainty" for m in CHECKED]].max(axis=1),
              "disagreement": table["disagreement"]}
    summary["bad"], summary["good"] = int(bad.sum()), int((~bad).sum())
    for name, score in scores.items():
        entry = {"roc_auc": _auc(score, bad)}
        entry["sweep"] = [{"threshold": float(t), "bad_flagged": float((score[bad] > t).mean()) if bad.any() else None,
                           "good_flagged": float((score[~bad] > t).mean()) if (~bad).any() else None}
                          for t in np.quantile(score.dropna(), np.linspace(0.0, 0.9, 10))]
        summary[name] = entry
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--raw", type=Path, required=True, help="raw dataset: labelsTr/ and cases.csv")
    ap.add_argument("--predictions", type=Path, nargs="+", required=True, help="autocmr_predict output folders")
    ap.add_argument("--postprocessing", type=Path, help="postprocessing.json to apply (default: see above)")
    ap.add_argument("--name", required=True, help="results go to benchmarks/results/measure_uncertainty_NAME.json")
    args = ap.parse_args(argv)
    decision = (PostprocessingDecision.from_dict(json.loads(args.postprocessing.read_text())) if args.postprocessing
                else PostprocessingDecision(foreground_lcc=True, per_label_lcc=(LV, RV)))
    table = pd.DataFrame(subject_rows(args.raw, args.predictions, decision))
    summary = summarise(table)
    print(json.dumps({k: v for k, v in summary.items() if k != "per_measure"}, indent=1)[:3000])
    for m, s in summary["per_measure"].items():
        auc = s["roc_auc_off_by_10_percent"]
        print(f"{m:6s} Spearman(rel unc, rel err) {s['spearman_rel']:+.2f} (p {s['p']:.3f}), "
              f"abs {s['spearman_abs']:+.2f}, off >10 %: {s['off_by_10_percent']} "
              f"(AUC {'n/a' if auc is None else f'{auc:.2f}'}), "
              f"median uncertainty {s['median_uncertainty']:.1f}")
    print("results:", save_results(f"measure_uncertainty_{args.name}", {
        "machine": machine(), "predictions": [str(p) for p in args.predictions], "raw": str(args.raw),
        "postprocessing": {"foreground_lcc": decision.foreground_lcc, "per_label_lcc": list(decision.per_label_lcc)},
        "summary": summary, "subjects": table.to_dict(orient="records")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
