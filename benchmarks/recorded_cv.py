"""Issue #16: pack a fold-`all` model when its recipe's five cross-validation folds are no longer on this machine.

benchmarks/results/acdc_cv_RUN.json (acdc_cv_report.py) records what the packed model needs from its
cross-validation: the largest-component postprocessing decided on the five folds' validation, and the pooled
figures of the validation masks with it applied. This writes both where default_model_recipe.sh looks for them
when it runs with CV=recorded, so that a fold `all` retrained on another machine carries the decision and the
card figures of the cross-validation that was run, not new ones:

    python benchmarks/recorded_cv.py results/acdc_cv_edge_bf16_e96.json MODEL_FOLDER SUMMARY_OUT

* MODEL_FOLDER/postprocessing.json, unless one is there (a model folder with its own folds keeps its decision);
* SUMMARY_OUT: the pooled postprocessed figures in the layout of an autocmr_evaluate summary.json, which is
  what `autocmr_models pack --cv-summary` reads (per-class Dice and HD95 means, clinical agreement).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from autocmr.inference.postprocessing import PostprocessingDecision


def decision_from_results(results: dict, source: str) -> PostprocessingDecision:
    recorded = results.get("postprocessing")
    if not isinstance(recorded, dict):
        raise SystemExit(f"{source}: no 'postprocessing' decision recorded")
    evidence = {"source": f"{source}: decided on the validation of folds {results.get('folds')} (the fold models "
                          "are not in this folder)",
                "pooled_as_predicted": results["as_predicted"]["classes"],
                "pooled_postprocessed": results["postprocessed"]["classes"]}
    return PostprocessingDecision(bool(recorded.get("foreground_lcc", False)),
                                  tuple(int(v) for v in recorded.get("per_label_lcc", ())), evidence)


def summary_from_results(results: dict, source: str) -> dict:
    """The pooled postprocessed figures as an evaluation summary (only the fields the model card reads)."""
    pooled = results.get("postprocessed")
    if not isinstance(pooled, dict) or "classes" not in pooled or "clinical" not in pooled:
        raise SystemExit(f"{source}: no pooled 'postprocessed' figures recorded")
    if sorted(results.get("folds") or []) != [0, 1, 2, 3, 4]:
        raise SystemExit(f"{source}: figures of folds {results.get('folds')}, not of all five")
    return {"source": source, "n_volumes": pooled["n_volumes"],
            "classes": {name: {metric: {"mean": value} for metric, value in c.items()}
                        for name, c in pooled["classes"].items()},
            "mean_over_classes": {"dice": pooled["mean_dice"]},
            "clinical": {"agreement": pooled["clinical"]}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path, help="benchmarks/results/acdc_cv_RUN.json")
    ap.add_argument("model", type=Path, help="the model folder holding fold_all")
    ap.add_argument("summary", type=Path, help="where to write the summary for autocmr_models pack --cv-summary")
    args = ap.parse_args(argv)
    results = json.loads(args.results.read_text())
    source = args.results.name
    summary = summary_from_results(results, source)
    args.model.mkdir(parents=True, exist_ok=True)
    target = args.model / "postprocessing.json"
    if target.is_file():
        print(f"{target} kept (already there)")
    else:
        decision_from_results(results, source).save(target)
        print(f"{target} written from {source}")
    args.summary.parent.mkdir(parents=True, exist_ok=True)
    args.summary.write_text(json.dumps(summary, indent=1) + "\n")
    print(f"{args.summary} written from {source}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
