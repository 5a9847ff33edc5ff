"""Issue #15 check: do preprocessing and export change volumes by themselves?

Each reference label map is resampled to the plans' in-plane spacing the way preprocessing does it
(``resample_label``) and back to its native grid the way prediction export does it (one-hot probabilities,
``argmax_resampled``); the volume of each class before and after gives the bias the pipeline alone would
add to LV, MYO (hence LV mass) and RV, with no network involved.

    python benchmarks/label_roundtrip.py [--labels RAW/labelsTr] [--spacing 1.5625]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from common import ACDC, machine, save_results

from autocmr.dataset.labels import ACDC_TO_AUTOCMR
from autocmr.io.image import read_image
from autocmr.preprocessing.resampling import argmax_resampled, resample_label, target_shape

CLASSES = {1: "LV", 2: "MYO", 3: "RV"}


def round_trip(seg: np.ndarray, spacing_zyx, in_plane: float) -> np.ndarray:
    """``seg`` resampled to ``in_plane`` mm in-plane (slices kept) and back to its own grid."""
    shape = target_shape(seg.shape, spacing_zyx, (spacing_zyx[0], in_plane, in_plane))
    down = resample_label(seg, shape, anisotropic=True)
    onehot = torch.from_numpy(np.stack([down == c for c in range(4)]).astype(np.float32))
    return argmax_resampled(onehot, seg.shape, anisotropic=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--labels", type=Path, default=None,
                    help="reference label maps in autocmr's convention (default: the ACDC ground truth, mapped)")
    ap.add_argument("--spacing", type=float, default=1.5625, help="in-plane spacing of the plans (mm)")
    args = ap.parse_args(argv)
    if args.labels:
        files = sorted(args.labels.glob("*.nii.gz"))
    else:  # the ACDC ground truth files, mapped to autocmr's labels below
        files = sorted(ACDC.glob("patient*/patient*_frame??_gt.nii.gz"))
    mapping = np.arange(256, dtype=np.uint8)
    if not args.labels:
        for source, target in ACDC_TO_AUTOCMR.items():
            mapping[source] = target
    rows = []
    for f in files:
        array, geometry = read_image(f)
        seg = mapping[np.rint(array).astype(np.uint8)]
        spacing = geometry.spacing_zyx
        voxel_ml = float(np.prod(spacing)) / 1000.0
        back = round_trip(seg, spacing, args.spacing)
        rows.append({"case": f.name, "in_plane_mm": float(spacing[1]),
                     **{f"{n}_ref_ml": float((seg == c).sum() * voxel_ml) for c, n in CLASSES.items()},
                     **{f"{n}_change_ml": float(((back == c).sum() - (seg == c).sum()) * voxel_ml)
                        for c, n in CLASSES.items()}})
    summary = {}
    for group, keep in (("all", lambda r: True), ("finer than the plans", lambda r: r["in_plane_mm"] < args.spacing - 1e-3),
                        ("coarser than the plans", lambda r: r["in_plane_mm"] > args.spacing + 1e-3)):
        sel = [r for r in rows if keep(r)]
        summary[group] = {"volumes": len(sel), **{
            n: {"mean_change_ml": round(float(np.mean([r[f"{n}_change_ml"] for r in sel])), 3) if sel else None,
                "change_percent": round(100 * sum(r[f"{n}_change_ml"] for r in sel)
                                        / max(sum(r[f"{n}_ref_ml"] for r in sel), 1e-9), 3) if sel else None}
            for n in CLASSES.values()}}
        print(group, summary[group])
    path = save_results("label_roundtrip_acdc", {"machine": machine(), "spacing_mm": args.spacing,
                                                 "summary": summary, "cases": rows})
    print("results:", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
