"""Issue #17 benchmark: the fast cine path against the full path on the Sunnybrook cine DICOM study.

``autocmr_predict --cine fast`` (default: one fold without mirroring over all frames, full accuracy on ED and
ES) and ``--cine full`` (every frame at full accuracy) segment the same 20-phase study with the same model;
the modes take turns when repeated. Reported per mode: wall time of the whole command (start-up, DICOM
reading, analysis and writing included), peak memory (PSS of the process tree), the ED and ES frames found
on each written mask's LV volume curve (checked against the RV curve,
:func:`autocmr.evaluation.phases.find_ed_es`) and the measures at those frames (LVEDV, LVESV, LVEF, LV mass, RV
volumes). The check: same ED/ES frames, every measure within 1 % of the full path's. Also how far the fast
pass's volumes are from the full ones on the frames that only the fast pass predicted.

    python benchmarks/cine_benchmark.py --model MODEL_FOLDER [-f 0] [--repeats 1]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from common import SUNNYBROOK, WORK, fresh, machine, require, save_results, script
from measure import run_measured

TOLERANCE_PERCENT = 1.0  # the bar: measures of the fast path within 1 % of the full path's
MODES = ("fast", "full")
# modes beyond the two paths (--modes): the fast path as it was before near ties were screened (2026-11-29),
# and the fast path asked for the full path's ED/ES frames whenever it cannot rule a near tie out
MODE_FLAGS = {"fast": ["--cine", "fast"], "full": ["--cine", "full"],
              "fast_noscreen": ["--cine", "fast", "--cine-screen", "off"],
              "fast_exact": ["--cine", "fast", "--cine-tie-tolerance", "0"]}


def run_mode(mode: str, model: Path, folds: list[str], out: Path, logs: Path, repeat: int) -> dict:
    cmd = [script("autocmr_predict"), "-i", str(SUNNYBROOK / "dicom"), "-o", str(fresh(out)), "-m", str(model),
           "-f", *folds, "--device", "cpu", *MODE_FLAGS[mode]]
    m = run_measured(cmd, log_path=logs / f"{mode}_{repeat}.log")
    if m.returncode != 0:
        raise SystemExit(f"autocmr_predict --cine {mode} failed (exit {m.returncode}); see {logs}")
    return {"wall_s": round(m.wall_s, 2), "peak_pss_mb": round(m.peak_pss_mb, 1)}


def analyse_mask(out: Path) -> dict:
    """ED/ES and measures of the written 4D mask, computed here from the mask alone."""
    from autocmr.evaluation.clinical import clinical_measures, structure_volumes
    from autocmr.evaluation.phases import find_ed_es
    from autocmr.io.cine import read_cine

    masks = sorted(p for p in out.glob("*.nii.gz") if not p.name.endswith("_probabilities.npz"))
    if len(masks) != 1:
        raise SystemExit(f"expected one mask in {out}, found {[p.name for p in masks]}")
    mask, geometry = read_cine(masks[0])
    spacing_zyx = tuple(reversed(geometry.spacing[:3]))
    volumes = [structure_volumes(frame, spacing_zyx) for frame in mask]
    lv, rv = [v["LV"] for v in volumes], [v["RV"] for v in volumes]
    ed, es, notes = find_ed_es(lv, rv)
    measures = clinical_measures(mask[ed], mask[es], spacing_zyx)
    case = next(iter(json.loads((out / "predictions.json").read_text())["cases"].values()))
    return {"ed": ed, "es": es, "notes": list(notes), "measures": {k: round(v, 3) for k, v in measures.items()},
            "lv_ml": [round(v, 3) for v in lv], "rv_ml": [round(v, 3) for v in rv],
            "pipeline": case.get("cine"), "seconds": case.get("seconds")}


def compare(fast: dict, full: dict) -> dict:
    differences = {k: _percent(fast["measures"][k], full["measures"][k]) for k in full["measures"]}
    same_frames = (fast["ed"], fast["es"]) == (full["ed"], full["es"])
    pipeline = fast.get("pipeline") or {}
    fast_pass = pipeline.get("fast_lv_ml", [])
    return {"same_ed_es": same_frames, "measure_difference_percent": differences,
            "max_difference_percent": max((abs(v) for v in differences.values() if v == v), default=0.0),
            "within_tolerance": same_frames and all(abs(v) <= TOLERANCE_PERCENT for v in differences.values()
                                                    if v == v),
            "full_accuracy_frames": pipeline.get("full_accuracy_frames"),
            # how far the fast pass's LV volume is from the full path's, frame by frame
            "fast_pass_lv_difference_percent": [_percent(v, r) for v, r in zip(fast_pass, full["lv_ml"])]}


def _percent(value: float, reference: float) -> float:
    if reference == 0 or reference != reference:
        return 0.0 if value == reference else float("nan")
    return round(100.0 * (value - reference) / abs(reference), 3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, type=Path, help="trained model folder (read only)")
    parser.add_argument("-f", "--folds", nargs="+", default=["0"])
    parser.add_argument("--repeats", type=int, default=1, help="runs of each mode, taking turns (default 1)")
    parser.add_argument("--note", default="", help="recorded with the results (e.g. 'CPU shared with a training')")
    parser.add_argument("--name", default="cine_benchmark", help="results/NAME.json (default cine_benchmark)")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=sorted(MODE_FLAGS),
                        help="modes taking turns (default fast full; both are needed for the comparison); "
                             "fast_noscreen is the fast path without screening near ties, fast_exact the fast "
                             "path with --cine-tie-tolerance 0 (their comparisons too)")
    args = parser.parse_args()
    require(SUNNYBROOK / "dicom", "Sunnybrook study")
    require(args.model / "plans.json", "model folder")
    base = WORK / args.name
    logs = base / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    modes = list(dict.fromkeys(args.modes))
    if not {"fast", "full"} <= set(modes):
        parser.error("--modes needs fast and full (the comparison)")
    runs: dict[str, list[dict]] = {m: [] for m in modes}
    analysis: dict[str, dict] = {}
    for repeat in range(args.repeats):
        for mode in (modes if repeat % 2 == 0 else modes[::-1]):
            out = base / f"out_{mode}"
            runs[mode].append(run_mode(mode, args.model, args.folds, out, logs, repeat))
            analysis[mode] = analyse_mask(out)
            print(mode, runs[mode][-1], "ED/ES", analysis[mode]["ed"], analysis[mode]["es"], flush=True)
    result = {"machine": machine(), "note": args.note, "model": str(args.model), "folds": args.folds,
              "study": str(SUNNYBROOK / "dicom"), "runs": runs,
              "median_wall_s": {m: float(np.median([r["wall_s"] for r in runs[m]])) for m in modes},
              "analysis": analysis, "comparison": compare(analysis["fast"], analysis["full"])}
    for mode in modes:
        if mode not in MODES:
            result[f"comparison_{mode}"] = compare(analysis[mode], analysis["full"])
    path = save_results(args.name, result)
    print(json.dumps({"median_wall_s": result["median_wall_s"], "comparison": result["comparison"]}, indent=2))
    print(f"results in {path}")
    return 0 if result["comparison"]["within_tolerance"] else 1


if __name__ == "__main__":
    sys.exit(main())
