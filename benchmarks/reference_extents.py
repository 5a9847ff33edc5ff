"""Issue #15 check: where do the ACDC annotators start the RV and the LV at the base, at ED and at ES?

The 2d network's RV excess sits on the basal slices at end-systole ("Where the errors come from"). If the
annotators leave the right atrium out, and the base descends towards the apex in systole, the reference RV
should start further from the base at ES than at ED, and further than the LV does. This counts it, on the
reference label maps alone (no network): per patient, the first slice (from the base) with RV and with LV
(cavity or myocardium) at ED and at ES. Which end of the stack is the base is decided per patient from the
anatomy, the way ``autocmr_evaluate --by slice_position`` decides it (the summed area-centroid score of both
phases' reference foreground; positive = the base is the first slice).

    python benchmarks/reference_extents.py            # -> results/reference_extents_acdc.json

With ``--predictions OUT... --raw RAW --name NAME`` it also checks cross-validation predictions (``autocmr_predict``
output folders of validation cases) and simulates a postprocessing rule built on it: where the predicted RV
at ES starts at the same slice as at ED, drop the RV from that basal ES slice (optionally only where the
predicted LVEF is above a threshold); RVESV and RVEF bias and mean absolute difference before and after,
masks postprocessed as the shipped recipe decides (largest foreground component, then largest LV and RV).
"""
from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from common import ACDC, machine, save_results

from autocmr.dataset.converters.acdc import read_info_cfg
from autocmr.dataset.labels import ACDC_TO_AUTOCMR, LV, MYO, RV
from autocmr.evaluation.clinical import clinical_measures
from autocmr.evaluation.slice_position import anatomy_score
from autocmr.inference.postprocessing import PostprocessingDecision
from autocmr.io.image import read_image

LVEF_CONDITIONS = (None, 40.0, 50.0)  # the rule everywhere, or only where the predicted LVEF is above these


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


def first_rv_slice(seg: np.ndarray) -> int:
    """Index of the first slice with RV in stored order (-1: none); ACDC stores the base first."""
    slices = np.flatnonzero((seg == RV).any(axis=(1, 2)))
    return int(slices[0]) if slices.size else -1


def drop_basal_es_rv(ed: np.ndarray, es: np.ndarray) -> tuple[np.ndarray, bool]:
    """The rule: the ES mask without RV on its first RV slice when the ED RV starts on that same slice."""
    z = first_rv_slice(es)
    if z < 0 or z != first_rv_slice(ed):
        return es, False
    out = es.copy()
    out[z][out[z] == RV] = 0
    return out, True


def prediction_rows(raw: Path, folders: list[Path]) -> list[dict]:
    cases = pd.read_csv(raw / "cases.csv").set_index("case_id")
    decision = PostprocessingDecision(foreground_lcc=True, per_label_lcc=(LV, RV))
    rows = []
    for folder in folders:
        names = sorted(json.loads((folder / "predictions.json").read_text())["cases"])
        for subject in sorted({cases.at[n, "subject"] for n in names}):
            phases = {cases.at[n, "phase"]: n for n in names if cases.at[n, "subject"] == subject}
            if set(phases) != {"ED", "ES"}:
                continue
            pred = {k: decision.apply(read_image(folder / f"{n}.nii.gz")[0]) for k, n in phases.items()}
            ref, geometry = {}, None
            for k, n in phases.items():
                ref[k], geometry = read_image(raw / "labelsTr" / f"{n}.nii.gz")
            spacing = geometry.spacing_zyx
            truth = clinical_measures(ref["ED"], ref["ES"], spacing)
            before = clinical_measures(pred["ED"], pred["ES"], spacing)
            es_after, applies = drop_basal_es_rv(pred["ED"], pred["ES"])
            after = clinical_measures(pred["ED"], es_after, spacing)
            rows.append({"subject": subject, "group": cases.at[phases["ED"], "group"], "applies": applies,
                         "predicted_shift": first_rv_slice(pred["ES"]) - first_rv_slice(pred["ED"]),
                         "reference_shift": first_rv_slice(ref["ES"]) - first_rv_slice(ref["ED"]),
                         "predicted_LVEF": before["LVEF"],
                         **{f"{m}_error_before": before[m] - truth[m] for m in ("RVESV", "RVEF")},
                         **{f"{m}_error_after": after[m] - truth[m] for m in ("RVESV", "RVEF")}})
    return rows


def rule_summary(table: pd.DataFrame) -> list[dict]:
    out = []
    for threshold in LVEF_CONDITIONS:
        applied = table["applies"] if threshold is None else table["applies"] & (table["predicted_LVEF"] > threshold)
        entry = {"predicted_LVEF_above": threshold, "applied": int(applied.sum())}
        for m in ("RVESV", "RVEF"):
            before = table[f"{m}_error_before"]
            after = np.where(applied, table[f"{m}_error_after"], before)
            entry[m] = {"bias_before": float(before.mean()), "mad_before": float(before.abs().mean()),
                        "bias_after": float(np.mean(after)), "mad_after": float(np.abs(after).mean())}
        out.append(entry)
    return out


def check_predictions(raw: Path, folders: list[Path], name: str) -> None:
    table = pd.DataFrame(prediction_rows(raw, folders))
    shifts = pd.crosstab(table["predicted_shift"], table["reference_shift"])
    rules = rule_summary(table)
    print("predicted (rows) against reference (columns) ES - ED shift of the first RV slice:")
    print(shifts)
    for r in rules:
        print(f"rule (predicted LVEF > {r['predicted_LVEF_above']}), applied to {r['applied']}: " + "; ".join(
            f"{m} bias/MAD {r[m]['bias_before']:+.1f}/{r[m]['mad_before']:.1f} -> "
            f"{r[m]['bias_after']:+.1f}/{r[m]['mad_after']:.1f}" for m in ("RVESV", "RVEF")))
    print("results:", save_results(f"basal_rv_rule_{name}", {
        "machine": machine(), "predictions": [str(f) for f in folders],
        "shift_crosstab": {str(k): {str(c): int(v) for c, v in row.items()} for k, row in shifts.iterrows()},
        "rules": rules, "subjects": table.to_dict(orient="records")}))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--predictions", type=Path, nargs="+", help="CV prediction folders to check (see above)")
    ap.add_argument("--raw", type=Path, help="--predictions: raw dataset (labelsTr, cases.csv)")
    ap.add_argument("--name", help="--predictions: results go to results/basal_rv_rule_NAME.json")
    args = ap.parse_args(argv)
    if args.predictions:
        if args.raw is None or args.name is None:
            ap.error("--predictions needs --raw and --name")
        check_predictions(args.raw, args.predictions, args.name)
        return 0
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
