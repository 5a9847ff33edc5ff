"""Volumes from the softmax instead of the argmax mask: does it remove the measure biases? (issue #15)

Soft Dice inflates the volume of structures with uncertain borders and cross-entropy's argmax deflates it;
the volume a calibrated network expects is the sum of its class probabilities (Bertels et al. 2019). This
reads the cross-validation probabilities `autocmr_find_best` cached (one folder per model; several folders
are averaged, a softmax ensemble), decides the largest-component postprocessing on them as a model folder
does, and computes every clinical measure three ways against the references:

- `mask`: voxel counts of the postprocessed argmax mask (what autocmr reports today);
- `probability`: the sum of each class's probabilities over the voxels within `--near-mm` of the
  postprocessed foreground (the heart the postprocessing kept; far-away noise stays out);
- `probability_all`: the same sum over the whole image.

    python benchmarks/probability_volumes.py --raw RAW/Dataset101_ACDC --name edge_bf16 \
        --probabilities SELECTION/probabilities/MODEL

Figures go to benchmarks/results/probability_volumes_NAME.json and are printed as a Markdown table.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from common import machine, save_results
from autocmr.dataset.labels import AUTOCMR_LABELS
from autocmr.dataset.raw import DatasetJson
from autocmr.evaluation.agreement import agreement_stats
from autocmr.evaluation.clinical import (MEASURES, STRUCTURES, measures_from_volumes, structure_volumes,
                                         subject_and_phase)
from autocmr.evaluation.metrics import voxel_volume_ml
from autocmr.inference.postprocessing import decide_postprocessing
from autocmr.io.image import read_image
from autocmr.selection.cv_probabilities import read_probabilities

METHODS = ("mask", "probability", "probability_all")


def case_volumes(probabilities: np.ndarray, label: np.ndarray, spacing: tuple[float, ...],
                 near_mm: float) -> dict[str, dict[str, float]]:
    """Structure volumes (mL) of one case by each method, from its probabilities and postprocessed label."""
    vv = voxel_volume_ml(spacing)
    heart = label > 0
    if heart.any():
        near = ndimage.distance_transform_edt(~heart, sampling=spacing) <= near_mm
    else:
        near = np.zeros_like(heart)
    out: dict[str, dict[str, float]] = {"mask": structure_volumes(label, spacing), "probability": {},
                                        "probability_all": {}}
    for name in STRUCTURES:
        p = probabilities[AUTOCMR_LABELS[name]]
        out["probability"][name] = float(p[near].sum(dtype=np.float64)) * vv
        out["probability_all"][name] = float(p.sum(dtype=np.float64)) * vv
    return out


def _number(value: float | None, form: str) -> str:
    """A statistic for the printed table; one that cannot be computed (e.g. r of one subject) is None."""
    return "–" if value is None else format(value, form)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raw", required=True, type=Path, help="raw dataset folder (labelsTr, cases.csv)")
    parser.add_argument("--probabilities", required=True, nargs="+", type=Path,
                        help="probability cache folder(s) of autocmr_find_best; several are averaged")
    parser.add_argument("--name", required=True, help="results go to probability_volumes_NAME.json")
    parser.add_argument("--near-mm", type=float, default=5.0,
                        help="sum probabilities within this distance of the postprocessed heart (default 5)")
    args = parser.parse_args(argv)

    cases = sorted(p.stem for p in args.probabilities[0].glob("*.npz"))
    cases = [c for c in cases if all((d / f"{c}.npz").is_file() for d in args.probabilities)]
    if not cases:
        raise SystemExit(f"no probabilities common to {[str(d) for d in args.probabilities]}")
    metadata = pd.read_csv(args.raw / "cases.csv", index_col="case_id")
    ending = DatasetJson.load(args.raw / "dataset.json").file_ending
    items = []
    for case_id in cases:
        reference, geometry = read_image(args.raw / "labelsTr" / f"{case_id}{ending}")
        probs = np.mean([read_probabilities(d / f"{case_id}.npz") for d in args.probabilities], axis=0)
        items.append((case_id, reference.astype(np.uint8), probs, np.argmax(probs, axis=0).astype(np.uint8),
                      geometry.spacing_zyx))
    decision = decide_postprocessing([(ref, argmax) for _, ref, _, argmax, _ in items],
                                     sorted(AUTOCMR_LABELS[name] for name in STRUCTURES))
    print(f"{len(items)} volumes; postprocessing: foreground {decision.foreground_lcc}, "
          f"per label {decision.per_label_lcc}", file=sys.stderr)

    per_subject: dict[str, dict[str, dict]] = {}
    for case_id, ref, probs, argmax, spacing in items:
        subject, phase = subject_and_phase(case_id, metadata)
        volumes = case_volumes(probs, decision.apply(argmax), spacing, args.near_mm)
        volumes["reference"] = structure_volumes(ref, spacing)
        per_subject.setdefault(subject, {})[phase] = volumes

    rows = []
    for subject, phases in sorted(per_subject.items()):
        if {"ED", "ES"} - set(phases):
            continue
        for method in ("reference", *METHODS):
            m = measures_from_volumes(phases["ED"][method], phases["ES"][method])
            rows.append({"subject": subject, "method": method, **m})
    table = pd.DataFrame(rows)
    ref = table[table.method == "reference"].set_index("subject")
    agreement = {}
    for method in METHODS:
        pred = table[table.method == method].set_index("subject").loc[ref.index]
        agreement[method] = {name: {k: (round(v, 3) if isinstance(v, float) else v)
                                    for k, v in agreement_stats(ref[name], pred[name]).items()
                                    if k in ("n", "bias", "mean_abs_diff", "spearman_r", "loa_lower", "loa_upper")}
                             for name in MEASURES}
    save_results(f"probability_volumes_{args.name}", {
        "machine": machine(), "probabilities": [str(d) for d in args.probabilities], "raw": str(args.raw),
        "near_mm": args.near_mm, "n_subjects": int(len(ref)),
        "postprocessing": {"foreground_lcc": decision.foreground_lcc, "per_label_lcc": list(decision.per_label_lcc)},
        "agreement": agreement})
    print(f"| measure | {' | '.join(f'{m}: bias / MAD (r)' for m in METHODS)} |")
    print("|---|" + "---|" * len(METHODS))
    for name in MEASURES:
        cells = [f"{_number(a[name]['bias'], '+.1f')} / {_number(a[name]['mean_abs_diff'], '.1f')} "
                 f"({_number(a[name]['spearman_r'], '.2f')})" for a in (agreement[m] for m in METHODS)]
        print(f"| {name} | {' | '.join(cells)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
