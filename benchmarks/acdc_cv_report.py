"""Pool a cross-validation run of `acdc_cross_validation.sh` into one evaluation (issue #15).

Takes every fold whose final validation is written, evaluates the pooled validation masks against the
references twice, as predicted and with the model folder's cross-validated postprocessing applied, each with
the slice-position breakdown (`autocmr_evaluate --by slice_position group`), and stores the figures in
benchmarks/results/acdc_cv_RUN.json. Evaluation folders go under $AUTOCMR_HOME/cv_RUN/evaluation/, outside
the work tree.

    python benchmarks/acdc_cv_report.py baseline
    python benchmarks/acdc_cv_report.py --tables baseline ctx1   # README tables from the stored results
    python benchmarks/acdc_cv_report.py --pool e96 e96_folds01 e96_folds234   # folds evaluated on two machines
    python benchmarks/acdc_cv_report.py --figure docs/figures/bias_by_slice_position.png baseline edge_bf16_e48

Each results file keeps, beside the pooled figures, the per-subject reference and predicted measures and the
per-volume Dice and HD95 (numbers, no images). That is what ``--pool`` needs: folds trained and evaluated on
different machines (a machine, and what it held under $AUTOCMR_HOME, can be replaced between sessions) are
pooled from their results files into one table, the clinical agreement and Dice recomputed exactly from the
per-case rows; the slice-position and exchange breakdowns, stored as means only, are pooled as means weighted
by their case counts.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from common import RESULTS, machine, save_results
from autocmr.evaluation.agreement import agreement_stats, describe
from autocmr.evaluation.clinical import MEASURES
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


AGREEMENT_KEYS = ("n", "bias", "loa_lower", "loa_upper", "mean_abs_diff", "spearman_r", "reference_mean")
CLASS_METRICS = ("dice", "hd95")


def _rounded(values: dict, digits: int = 3) -> dict:
    return {k: (round(v, digits) if isinstance(v, float) else v) for k, v in values.items()}


def _round(value: float | None, digits: int = 4) -> float | None:
    """None (a statistic with no defined value, e.g. HD95 where every mask is empty) stays None."""
    return None if value is None else round(value, digits)


def figures(summary: dict) -> dict:
    classes = {name: {m: _round(c[m]["mean"]) for m in CLASS_METRICS if m in c}
               for name, c in summary["classes"].items()}
    agreement = {name: _rounded({k: v for k, v in a.items() if k in AGREEMENT_KEYS})
                 for name, a in summary["clinical"]["agreement"].items()}
    return {"n_volumes": summary["n_volumes"], "classes": classes,
            "mean_dice": round(float(np.mean([c["dice"] for c in classes.values()])), 4),
            "clinical": agreement, "slice_position_bias": summary["slice_position"].get("measure_bias_by_position"),
            "n_cases_with_breakdown": summary["slice_position"].get("n_cases_with_breakdown"),
            # mean mL per volume each class gains from / loses to each other label, by phase (older runs lack it)
            "exchanges": [_rounded(row) for row in summary.get("exchanges", [])]}


def per_case_rows(evaluation: Path, fold_of: dict[str, int]) -> dict:
    """Per subject the reference and predicted measures, per volume and class Dice and HD95, with the fold
    that validated them: the numbers behind the figures, so that folds can be pooled later (``--pool``)."""
    clinical = pd.read_csv(evaluation / "clinical.csv")
    cases = pd.read_csv(evaluation / "cases.csv")
    subjects = []
    for row in clinical.to_dict("records"):
        entry = {"subject": str(row["subject"])}
        entry.update({f"{side}_{m}": (round(float(row[f"{side}_{m}"]), 4) if pd.notna(row[f"{side}_{m}"]) else None)
                      for m in MEASURES for side in ("ref", "pred")})
        subjects.append(entry)
    volumes = [{"case": str(row["case_id"]), "fold": fold_of.get(str(row["case_id"])), "class": str(row["class"]),
                **{m: (round(float(row[m]), 6) if pd.notna(row[m]) else None) for m in CLASS_METRICS}}
               for row in cases.to_dict("records")]
    return {"subjects": subjects, "volumes": volumes}


def _weighted_mean(parts: list[tuple[float, float]]) -> float:
    total = sum(w for _, w in parts)
    return sum(v * w for v, w in parts) / total if total else float("nan")


def pool_variant(parts: list[dict]) -> dict:
    """One variant's figures over several results files' folds, from their per-case rows."""
    subjects = [row for part in parts for row in part["rows"]["subjects"]]
    volumes = [row for part in parts for row in part["rows"]["volumes"]]
    twice = sorted(n for n, count in Counter(row["subject"] for row in subjects).items() if count > 1)
    if twice:
        raise SystemExit(f"subjects validated in more than one part: {twice[:5]}{' ...' if len(twice) > 5 else ''}")
    class_names = list(dict.fromkeys(row["class"] for row in volumes))
    classes = {c: {m: _round(describe([np.nan if r[m] is None else r[m] for r in volumes if r["class"] == c])["mean"])
                   for m in CLASS_METRICS} for c in class_names}
    clinical = {}
    for m in MEASURES:
        ref = [np.nan if r[f"ref_{m}"] is None else r[f"ref_{m}"] for r in subjects]
        pred = [np.nan if r[f"pred_{m}"] is None else r[f"pred_{m}"] for r in subjects]
        clinical[m] = _rounded({k: v for k, v in agreement_stats(ref, pred).items() if k in AGREEMENT_KEYS})
    bias: dict = {}
    for measure in dict.fromkeys(k for part in parts for k in (part["slice_position_bias"] or {})):
        weighted = [(part["slice_position_bias"][measure], part["n_cases_with_breakdown"]) for part in parts
                    if measure in (part["slice_position_bias"] or {})]
        bias[measure] = {pos: _weighted_mean([(b.get(pos, 0.0), w) for b, w in weighted]) for pos in POSITIONS}
    exchanges = []
    for key in dict.fromkeys((r["class"], r["phase"], r["other"]) for part in parts for r in part["exchanges"]):
        rows = [r for part in parts for r in part["exchanges"] if (r["class"], r["phase"], r["other"]) == key]
        n = sum(r["n"] for r in rows)
        exchanges.append(_rounded({"class": key[0], "phase": key[1], "other": key[2], "n": n,
                                   **{k: _weighted_mean([(r[k], r["n"]) for r in rows])
                                      for k in ("gain_ml", "loss_ml", "net_ml")}}))
    return {"n_volumes": len({r["case"] for r in volumes}), "classes": classes,
            "mean_dice": round(float(np.mean([c["dice"] for c in classes.values()])), 4), "clinical": clinical,
            "slice_position_bias": bias, "n_cases_with_breakdown": sum(p["n_cases_with_breakdown"] or 0 for p in parts),
            "exchanges": exchanges, "rows": {"subjects": subjects, "volumes": volumes}}


def pool(name: str, part_names: list[str], allow_mixed: bool = False) -> Path:
    """``acdc_cv_<name>.json`` from the results files ``acdc_cv_<part>.json`` (disjoint folds of one recipe)."""
    parts = [json.loads((RESULTS / f"acdc_cv_{p}.json").read_text(encoding="utf-8")) for p in part_names]
    for part_name, part in zip(part_names, parts):
        if "rows" not in part["postprocessed"]:
            raise SystemExit(f"acdc_cv_{part_name}.json has no per-case rows (written before they were kept): "
                             f"evaluate its folds again with `acdc_cv_report.py RUN --folds ...`")
    digests = {part["options"].get("digest") for part in parts}
    if len(digests) > 1 and not allow_mixed:
        raise SystemExit(f"the parts were trained with different options (digests {sorted(map(str, digests))}); "
                         "pool them anyway with --allow-mixed")
    # a part evaluated before the run's postprocessing was decided on all folds may have applied another rule
    decisions = {json.dumps(part["postprocessing"], sort_keys=True) for part in parts}
    if len(decisions) > 1 and not allow_mixed:
        raise SystemExit(f"the parts applied different postprocessing ({sorted(decisions)}): evaluate them again "
                         "with the run's final postprocessing.json, or pool them anyway with --allow-mixed")
    folds = [f for part in parts for f in part["folds"]]
    if len(set(folds)) != len(folds):
        raise SystemExit(f"a fold appears in more than one part: {sorted(folds)}")
    pooled = {"machine": machine(), "run": name, "folds": sorted(folds), "pooled_from": part_names,
              "part_machines": [part["machine"] for part in parts], "options": parts[0]["options"],
              "postprocessing": parts[0]["postprocessing"]}
    for variant in ("as_predicted", "postprocessed"):
        pooled[variant] = pool_variant([part[variant] for part in parts])
    return save_results(f"acdc_cv_{name}", pooled)


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


def restricted_to_folds(results: dict, folds: list[int]) -> dict:
    """A stored run's figures recomputed from its per-case rows for some of its folds (to compare a run of
    one fold with the same fold of a finished one). The slice-position and exchange breakdowns, stored as
    means over all folds, cannot be split and are left out."""
    missing = sorted(set(folds) - set(results["folds"]))
    if missing:
        raise SystemExit(f"run {results['run']} has no fold(s) {missing} (folds {results['folds']})")
    out = {**results, "folds": sorted(folds)}
    for variant in ("as_predicted", "postprocessed"):
        rows = results[variant].get("rows")
        if rows is None:
            raise SystemExit(f"run {results['run']} has no per-case rows to restrict to folds {folds}")
        volumes = [r for r in rows["volumes"] if r["fold"] in folds]
        cases = {r["case"] for r in volumes}
        subjects = [r for r in rows["subjects"] if any(c.startswith(f"{r['subject']}_") for c in cases)]
        part = {"rows": {"subjects": subjects, "volumes": volumes}, "slice_position_bias": None,
                "n_cases_with_breakdown": 0, "exchanges": []}
        out[variant] = pool_variant([part])
    return out


def paired_table(first: dict, second: dict) -> str:
    """Two runs on the subjects both validated: per measure the mean absolute difference of each, how many
    subjects the second run measured closer to the reference, and Wilcoxon's signed-rank p of the paired
    absolute errors (postprocessed). One fold's 16 subjects rarely decide a recipe; this says how far they do."""
    from scipy.stats import wilcoxon

    def errors(results: dict, measure: str) -> dict[str, float]:
        return {r["subject"]: abs(r[f"pred_{measure}"] - r[f"ref_{measure}"])
                for r in results["postprocessed"]["rows"]["subjects"]
                if r[f"pred_{measure}"] is not None and r[f"ref_{measure}"] is not None}

    lines = [f"Paired, `{first['run']}` against `{second['run']}` (postprocessed, subjects in both):", "",
             "| measure | subjects | MAD first | MAD second | second closer | Wilcoxon p |",
             "|---|---|---|---|---|---|"]
    for measure in ("LVEDV", "LVEF", "LVM", "RVEDV", "RVESV", "RVEF"):
        a, b = errors(first, measure), errors(second, measure)
        common = sorted(set(a) & set(b))
        if len(common) < 2:
            continue
        x, y = np.array([a[s] for s in common]), np.array([b[s] for s in common])
        p = wilcoxon(x, y).pvalue if np.any(x != y) else 1.0
        lines.append(f"| {measure} | {len(common)} | {x.mean():.1f} | {y.mean():.1f} | {int((y < x).sum())} of "
                     f"{len(common)} | {p:.2f} |")
    return "\n".join(lines)


def print_tables(runs: list[str], folds: list[int] | None = None) -> int:
    loaded = [json.loads((RESULTS / f"acdc_cv_{run}.json").read_text(encoding="utf-8")) for run in runs]  # RUN_folds...
    if folds:
        loaded = [restricted_to_folds(results, folds) for results in loaded]
    for results in loaded:
        print(markdown_tables(results), end="\n\n")
    if len(loaded) > 1:
        print(comparison_table(loaded))
    if len(loaded) == 2 and all("rows" in r["postprocessed"] for r in loaded):
        print("", paired_table(*loaded), sep="\n")
    return 0


POSITION_NAMES = {"above_base": "above\nbase", "basal": "basal\nthird", "mid": "mid\nthird",
                  "apical": "apical\nthird", "below_apex": "below\napex"}


def bias_figure(runs: list[str], path: Path, labels: list[str] | None = None) -> Path:
    """Bar chart of each measure's bias (postprocessed) split over the slice positions, one panel per measure,
    one bar per run: where along the ventricle each run's volume and mass errors sit."""
    from autocmr.evaluation.plots import _figure, _save  # the evaluation's own figure style and atomic write

    loaded = [json.loads((RESULTS / f"acdc_cv_{run}.json").read_text(encoding="utf-8")) for run in runs]
    labels = labels or runs
    if len(labels) != len(runs):
        raise SystemExit(f"--labels: {len(labels)} label(s) for {len(runs)} run(s)")
    biases = [r["postprocessed"].get("slice_position_bias") or {} for r in loaded]
    measures = [m for m in biases[0] if all(m in b for b in biases)]
    if not measures:
        raise SystemExit(f"{runs}: no slice-position bias stored in common")
    rows, cols = (len(measures) + 1 + 2) // 3, 3  # one panel per measure and one for the legend
    fig, axes = _figure(rows, cols)
    panels = list(axes.flat)
    x = np.arange(len(POSITIONS))
    width = 0.8 / len(runs)
    for ax, measure in zip(panels, measures):
        for i, bias in enumerate(biases):
            ax.bar(x + (i - (len(runs) - 1) / 2) * width, [bias[measure].get(p, 0.0) for p in POSITIONS], width,
                   color=f"C{i}")
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_xticks(x, [POSITION_NAMES[p] for p in POSITIONS], fontsize=7)
        totals = " / ".join(f"{sum(b[measure].values()):+.1f}" for b in biases)
        ax.set_title(f"{measure} ({'g' if measure == 'LVM' else 'mL'}); total {totals}", fontsize=8)
    for ax in panels[len(measures):]:
        ax.axis("off")
    legend = panels[len(measures)]
    for i, label in enumerate(labels):
        legend.bar([0], [0], color=f"C{i}", label=label)
    legend.legend(loc="center", fontsize=7, title="bias (prediction - reference)\nsplit over the slice positions",
                  title_fontsize=7, frameon=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    return _save(fig, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", nargs="?", help="RUN of acdc_cross_validation.sh (folder $AUTOCMR_HOME/cv_RUN)")
    ap.add_argument("--tables", nargs="+", metavar="RUN", help="print the README tables of stored results")
    ap.add_argument("--folds", nargs="+", type=int, help="only these folds (to compare runs on the folds both "
                    "have finished); results go to acdc_cv_RUN_folds<F...>.json; with --tables, the stored runs' "
                    "figures recomputed for these folds")
    ap.add_argument("--pool", nargs="+", metavar=("NAME", "PART"), help="write acdc_cv_NAME.json pooling the stored "
                    "results acdc_cv_PART.json of disjoint folds (e.g. evaluated on different machines)")
    ap.add_argument("--allow-mixed", action="store_true",
                    help="report (or --pool) folds trained with different options")
    ap.add_argument("--figure", nargs="+", metavar=("PNG", "RUN"), help="bar chart of the stored runs' bias by "
                    "slice position, one panel per measure (the README's figure)")
    ap.add_argument("--labels", nargs="+", help="--figure: a legend label per RUN (default: the run names)")
    args = ap.parse_args(argv)
    if args.figure:
        if len(args.figure) < 2:
            ap.error("--figure needs a PNG path and at least one RUN")
        print("figure:", bias_figure(args.figure[1:], Path(args.figure[0]), args.labels))
        return 0
    if args.tables:
        return print_tables(args.tables, args.folds)
    if args.pool:
        if len(args.pool) < 3:
            ap.error("--pool needs a NAME and at least two PARTs")
        print("results:", pool(args.pool[0], args.pool[1:], args.allow_mixed))
        return 0
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
    # one recipe per report: a fold resumed or trained with other options would be pooled under the first's
    digests = {f: json.loads((model / f"fold_{f}" / "options.json").read_text()).get("digest") for f in folds}
    if len(set(digests.values())) > 1 and not args.allow_mixed:
        raise SystemExit(f"{model}: the folds were trained with different options (digests {digests}); "
                         "pass --allow-mixed to report them together")
    if folds != [0, 1, 2, 3, 4]:  # the results file says which; a five-fold figure must not be read from it
        print(f"note: folds {folds} only, not the five-fold cross-validation", file=sys.stderr)
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
                     "options": json.loads((model / f"fold_{folds[0]}" / "options.json").read_text()),
                     "postprocessing": {"foreground_lcc": decision.foreground_lcc,
                                        "per_label_lcc": list(decision.per_label_lcc)}}
    pred_dirs = {"as_predicted": [model / f"fold_{f}" / "validation" for f in folds], "postprocessed": [pp_masks]}
    fold_of = {p.name.removesuffix(".nii.gz"): f for f in folds
               for p in (model / f"fold_{f}" / "validation").glob("*.nii.gz")}
    for variant, dirs in pred_dirs.items():
        out = evaluation / variant
        report = evaluate_folders(refs, dirs, metadata=raw / "cases.csv", output_dir=out,
                                  by=["slice_position", "group"], num_workers=1)
        del report
        results[variant] = figures(json.loads((out / "summary.json").read_text()))
        results[variant]["rows"] = per_case_rows(out, fold_of)
        print(variant, json.dumps(results[variant]["classes"]), "mean", results[variant]["mean_dice"])
    print("results:", save_results(result_name, results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
