"""Issue #15 check: where do the ACDC annotators start the RV and the LV at the base, at ED and at ES?

The 2d network's RV excess sits on the basal slices at end-systole ("Where the errors come from"). If the
annotators leave the right atrium out, and the base descends towards the apex in systole, the reference RV
should start further from the base at ES than at ED, and further than the LV does. This counts it, on the
reference label maps alone (no network): per patient, the first slice (from the base) with RV and with LV
(cavity or myocardium) at ED and at ES. Which end of the stack is the base is decided per patient from the
anatomy, the way ``autocmr_evaluate --by slice_position`` decides it (the summed area-centroid score of both
phases' reference foreground; positive = the base is the first slice).

    python benchmarks/reference_extents.py            # -> results/reference_extents_acdc.json
"""
from __future__ import annotations

import argparse
from collections import Counter

import numpy as np

from common import ACDC, machine, save_results

from autocmr.dataset.converters.acdc import read_info_cfg
from autocmr.dataset.labels import ACDC_TO_AUTOCMR, LV, MYO, RV
from autocmr.evaluation.slice_position import anatomy_score
from autocmr.io.image import read_image


def first_slices(seg: np.ndarray, base_first: bool) -> dict[str, int]:
    """Index (0 = the basal end) of the first slice with RV and with LV cavity or myocardium."""
    seg = seg if base_first else seg[::-1]
    out = {}
    for name, present in (("RV", (seg == RV).any(axis=(1, 2))), ("LV", np.isin(seg, (LV, MYO)).any(axis=(1, 2)))):
        slices = np.flatnonzero(present)
        out[name] = int(slices[0]) if slices.size else -1
    return out


def patient_row(folder) -> dict:
    info = read_info_cfg(folder / "Info.cfg")
    mapping = np.arange(256, dtype=np.uint8)
    for source, target in ACDC_TO_AUTOCMR.items():
        mapping[source] = target
    segs, score = {}, 0.0
    for phase in ("ED", "ES"):
        array, _ = read_image(folder / f"{folder.name}_frame{int(info[phase]):02d}_gt.nii.gz")
        seg = mapping[np.rint(array).astype(np.uint8)]
        area = (seg > 0).sum(axis=(1, 2))
        extent = np.flatnonzero(np.isin(seg, (LV, MYO)).any(axis=(1, 2)))
        score += anatomy_score(area, (int(extent[0]), int(extent[-1]))) or 0.0
        segs[phase] = seg
    base_first = score >= 0
    row = {"patient": folder.name, "group": info.get("Group", ""), "base_first": base_first,
           "anatomy_score": round(score, 3)}
    for phase, seg in segs.items():
        for name, index in first_slices(seg, base_first).items():
            row[f"first_{name}_{phase}"] = index
    return row


def counts(rows: list[dict], a: str, b: str) -> dict[str, int]:
    """How many patients have slice index a - b = k, per k (as strings, for JSON)."""
    c = Counter(r[a] - r[b] for r in rows)
    return {str(k): c[k] for k in sorted(c)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.parse_args(argv)
    rows = [patient_row(p) for p in sorted(ACDC.glob("patient*")) if (p / "Info.cfg").exists()]
    if not rows:
        raise SystemExit(f"no ACDC patients under {ACDC}")
    summary = {
        "patients": len(rows),
        "base_is_first_slice": sum(r["base_first"] for r in rows),
        "RV_ES_minus_RV_ED": counts(rows, "first_RV_ES", "first_RV_ED"),
        "LV_ES_minus_LV_ED": counts(rows, "first_LV_ES", "first_LV_ED"),
        "RV_ED_minus_LV_ED": counts(rows, "first_RV_ED", "first_LV_ED"),
        "RV_ES_minus_LV_ES": counts(rows, "first_RV_ES", "first_LV_ES"),
    }
    by_group: dict[str, dict[str, int]] = {}
    for group in sorted({r["group"] for r in rows}):
        by_group[group] = counts([r for r in rows if r["group"] == group], "first_RV_ES", "first_RV_ED")
    summary["RV_ES_minus_RV_ED_by_group"] = by_group
    for key, value in summary.items():
        print(f"{key}: {value}")
    print("results:", save_results("reference_extents_acdc", {"machine": machine(), "summary": summary,
                                                              "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
