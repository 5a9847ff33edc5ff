"""Issue #17: how far the fast cine pass's volumes are from the full-accuracy prediction, per fast-pass region.

For ACDC volumes (ED and ES of ``--patients`` patients spread over all pathology groups), the LV and RV
volumes of the exported, postprocessed masks of three passes of the same network:

- ``full``: what ``autocmr_predict`` does for ED/ES (every fold, mirroring, overlapping tiles, ``--step``);
- ``whole``: the fast pass over whole slices (first fold, no mirroring, tiles that touch);
- ``heart``: the fast pass in a window around the heart (the default since 2026-11-28), located on the volume
  itself by a ``whole`` pass as the cine path locates it on two frames;
- ``heart_full``: the full-accuracy prediction (every fold, mirroring) inside that window only;
- ``tiles``: the full path's own tiles (``--step``, whole slices) and folds without mirroring, a quarter of
  its network passes in 2D: how much of the difference is the mirroring and how much where the tiles sit.

Reported: per pass and structure the median, 90th percentile and maximum of |fast - full| / full (%), and
seconds per volume (``heart`` includes locating the heart on the volume itself, which the cine path does
on two frames only). The fast path refines near ties at full accuracy; the smaller and steadier these
differences, the fewer frames it has to refine. A model trained on these patients (the shipped default) sees
them in-sample: the figures then say how the passes agree, not how accurate they are.

    python benchmarks/fast_pass_agreement.py [--model autocmr/pretrained/default] [-f all] [--patients 16]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from common import ACDC, PROJECT, machine, require, save_results

PASSES = ("full", "whole", "heart", "heart_full", "tiles")


def acdc_volumes(patients: int) -> list[Path]:
    """ED and ES images (Info.cfg frames) of ``patients`` patients evenly spaced over the sorted list (ACDC
    numbers its patients in blocks of one pathology group, so the first ones would all be DCM)."""
    folders = sorted(p for p in ACDC.iterdir() if p.is_dir())
    picks = np.unique(np.linspace(0, len(folders) - 1, min(patients, len(folders))).round().astype(int))
    out = []
    for folder in [folders[i] for i in picks]:
        info = dict(line.split(":", 1) for line in (folder / "Info.cfg").read_text().splitlines() if ":" in line)
        for phase in ("ED", "ES"):
            out.append(folder / f"{folder.name}_frame{int(info[phase]):02d}.nii.gz")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=PROJECT / "autocmr" / "pretrained" / "default")
    ap.add_argument("-f", "--folds", nargs="+", default=None)
    ap.add_argument("--patients", type=int, default=16)
    ap.add_argument("--name", default="fast_pass_agreement")
    ap.add_argument("--note", default="")
    args = ap.parse_args(argv)
    require(ACDC, "the shared ACDC training data")

    from autocmr.inference.batch_stages import ModelContext, load_job
    from autocmr.inference.fast_cine import CineOptions, _export, _fast_probabilities, _locate_heart, _volumes
    from autocmr.inference.inputs import discover_jobs
    from autocmr.inference.predictor import Predictor

    predictor = Predictor(args.model, folds=args.folds)
    ctx, options = ModelContext.of(predictor), CineOptions()
    rows = []
    for image in acdc_volumes(args.patients):
        job = discover_jobs(image, Path("/nonexistent-output")).jobs[0]
        loaded = load_job(job, ctx)
        pre, props = loaded.units[0]
        voxel_ml = float(np.prod(loaded.geometry.spatial().spacing)) / 1000.0
        row: dict = {"case": image.name.replace(".nii.gz", ""), "window": None}
        for name in PASSES:
            start = time.perf_counter()
            window = _locate_heart(predictor, [(pre, props)], options) if name.startswith("heart") else None
            if window is not None:
                row["window"] = [list(w) for w in window]
            if name == "full":
                probabilities = predictor.probabilities(pre)
            elif name == "heart_full":
                probabilities = predictor.probabilities(pre, window)
            elif name == "tiles":
                same_tiles = CineOptions(fast_step=predictor.step, fast_folds=len(predictor.networks),
                                         fast_precision=predictor.precision)
                probabilities = _fast_probabilities(predictor, pre, same_tiles, None)
            else:
                probabilities = _fast_probabilities(predictor, pre, options, window)
            lv, rv = _volumes(_export(predictor, probabilities, props, False).label, voxel_ml)
            row[name] = {"LV_ml": round(lv, 3), "RV_ml": round(rv, 3), "seconds": round(time.perf_counter() - start, 3)}
        rows.append(row)
        print(row["case"], " ".join(f"{n} LV {row[n]['LV_ml']:.1f} RV {row[n]['RV_ml']:.1f} ({row[n]['seconds']:.1f} s)"
                                    for n in PASSES), flush=True)

    summary: dict = {}
    for name in PASSES[1:]:
        summary[name] = {"seconds_per_volume": round(float(np.mean([r[name]["seconds"] for r in rows])), 3)}
        for structure in ("LV", "RV"):
            diffs = [abs(r[name][f"{structure}_ml"] / r["full"][f"{structure}_ml"] - 1) * 100
                     for r in rows if r["full"][f"{structure}_ml"] > 0]
            summary[name][structure] = {"median": round(float(np.median(diffs)), 2),
                                        "p90": round(float(np.percentile(diffs, 90)), 2),
                                        "max": round(float(np.max(diffs)), 2), "volumes": len(diffs)}
    summary["full"] = {"seconds_per_volume": round(float(np.mean([r["full"]["seconds"] for r in rows])), 3)}
    print("| fast pass | s/volume | LV |diff| median / p90 / max (%) | RV |diff| median / p90 / max (%) |")
    print("|---|---|---|---|")
    for name in PASSES[1:]:
        s = summary[name]
        print(f"| {name} | {s['seconds_per_volume']:.2f} | {s['LV']['median']} / {s['LV']['p90']} / {s['LV']['max']} | "
              f"{s['RV']['median']} / {s['RV']['p90']} / {s['RV']['max']} |")
    print(f"| full (reference) | {summary['full']['seconds_per_volume']:.2f} | | |")
    save_results(args.name, {"machine": machine(), "note": args.note, "model": str(args.model), "folds": args.folds,
                             "precision": predictor.precision, "command": " ".join([sys.executable] + sys.argv),
                             "summary": summary, "volumes": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
