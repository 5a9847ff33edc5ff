"""Print the README's results tables (markdown) from benchmarks/results/*.json.

    python benchmarks/report.py > /tmp/tables.md
"""
from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def latest_budget_run() -> dict | None:
    """The most recent `nnunet_budget.py` run on autocmr's CPU network (whichever epochs variant it used)."""
    runs = [json.loads(p.read_text()) for p in RESULTS.glob("nnunet_budget_*_2d_autocmr_cpu.json")]
    return max(runs, key=lambda r: r["machine"]["date"]) if runs else None


def plan_table(d: dict) -> list[str]:
    a, n = d["median"]["autocmr"], d["median"]["nnunet"]
    runs = len(d["runs"]["autocmr"])
    return [
        f"**Planning and preprocessing** (issue #2; 80 ACDC patients = 160 volumes, `2d` + `3d_fullres`, 2 worker "
        f"processes each, median of {runs} alternating runs, {d['machine']['date'][:10]}):", "",
        "| | autocmr (convert + plan + preprocess) | nnU-Net v2 (`nnUNetv2_plan_and_preprocess`) | ratio |",
        "|---|---|---|---|",
        f"| wall time | {a['wall_s']:.1f} s (convert {a['convert_s']:.1f} s) | {n['wall_s']:.1f} s | "
        f"**{d['ratio_time']:.2f}×** |",
        f"| CPU time | {a['cpu_s']:.0f} s | {n['cpu_s']:.0f} s | {a['cpu_s'] / n['cpu_s']:.2f}× |",
        f"| peak memory (PSS, process tree) | {a['peak_pss_mb']:.0f} MiB | {n['peak_pss_mb']:.0f} MiB | "
        f"{d['ratio_memory']:.2f}× |", "",
        "Both check the dataset's integrity first. autocmr's run also writes the CPU-target plans. Plans for ACDC: "
        + "; ".join(f"{tool} 2d patch {p['2d']['patch_size']} batch {p['2d']['batch_size']}, 3d_fullres spacing "
                    f"{[round(s, 2) for s in p['3d_fullres']['spacing']]} patch {p['3d_fullres']['patch_size']} batch "
                    f"{p['3d_fullres']['batch_size']}" for tool, p in d["plans"].items()) + ".", ""]


def e2e_table(d: dict) -> list[str]:
    ev = d["evaluation"]
    lines = [f"**Real-data run** (issues #3 and #6; `benchmarks/acdc_end_to_end.py`, {d['machine']['date'][:10]}): ACDC "
             f"fold 0 = {d['n_validation_cases']} validation volumes of 16 patients never seen in training; CPU "
             f"plans (features 16–256, patch 128×128, batch 7); `--time-budget {d['args']['budget']}`.", "",
             "| step | wall time | peak memory (PSS) |", "|---|---|---|"]
    for s in d["steps"].values():
        command = Path(s["cmd"].split()[0]).name
        wall = f"{s['wall_s'] / 60:.1f} min" if s["wall_s"] > 120 else f"{s['wall_s']:.1f} s"
        lines.append(f"| `{command}` | {wall} | {s['peak_pss_mb']} MiB |")
    lines += ["", "| class | Dice | HD95 (mm) | mean contour distance (mm) |", "|---|---|---|---|"]
    for c, v in ev["classes"].items():
        lines.append(f"| {c} | {v['dice']['mean']:.3f} ± {v['dice']['sd']:.3f} | {v['hd95']['mean']:.2f} | "
                     f"{v['assd']['mean']:.2f} |")
    lines.append(f"| **mean** | **{ev['mean_over_classes']['dice']:.3f}** | {ev['mean_over_classes']['hd95']:.2f} | "
                 f"{ev['mean_over_classes']['assd']:.2f} |")
    lines += ["", "| clinical measure | reference mean | bias (pred − ref) | 95% limits of agreement | mean abs. diff. | Spearman r |",
              "|---|---|---|---|---|---|"]
    units = ev["clinical"]["units"]
    for k, v in ev["clinical"]["agreement"].items():
        if k in ("LVEDV", "LVESV", "LVEF", "LVM", "RVEDV", "RVEF"):
            lines.append(f"| {k} ({units[k]}) | {v['reference_mean']:.1f} | {v['bias']:+.1f} | "
                         f"[{v['loa_lower']:.1f}, {v['loa_upper']:.1f}] | {v['mean_abs_diff']:.1f} | {v['spearman_r']:.2f} |")
    lines.append("")
    return lines


def train_table(d: dict) -> list[str]:
    def runs(key: str) -> str:
        return " / ".join(", ".join(f"{t:.0f}" for t in run) for run in d[key])

    return [f"**Training throughput on the CPU** (issue #3; `benchmarks/train_benchmark.py`, {d['machine']['date'][:10]}): "
            f"{d['network']}, fold 0, {d['epochs']} epochs of {d['iterations_per_epoch']} training + "
            f"{d['val_iterations_per_epoch']} validation iterations each, {d['repeats']} runs of each tool taking turns; median epoch time, first epoch of "
            "each run excluded.", "",
            "| | autocmr_train | nnU-Net v2 `nnUNetTrainer` (same network, checked layer by layer) |", "|---|---|---|",
            f"| epoch times (s), per run | {runs('autocmr_epoch_s')} | {runs('nnunet_epoch_s')} |",
            f"| training iterations/s | **{d['autocmr_it_per_s']:.2f}** | {d['nnunet_it_per_s']:.2f} |",
            f"| speed-up | **{d['speedup']:.2f}×** | 1 |", ""]


def predict_table(d: dict) -> list[str]:
    lines = [f"**Inference on the CPU** (issue #4; `benchmarks/predict_benchmark.py`, {d['machine']['date'][:10]}): the ED "
             "frames of fold 0's 16 validation patients, the **same weights** in both tools (autocmr's trained CPU "
             "model copied into an nnU-Net checkpoint of the identical network), whole command timed, start-up "
             "included; no postprocessing in either.", "",
             "| mirroring | autocmr_predict | nnUNetv2_predict | ratio | peak memory autocmr / nnU-Net | Dice LV/MYO/RV autocmr | Dice nnU-Net |",
             "|---|---|---|---|---|---|---|"]
    for r in d["rows"]:
        a, n = r["autocmr_dice"], r["nnunet_dice"]
        lines.append(f"| {'on' if r['mirroring'] else 'off'} | {r['autocmr_s_per_volume']:.1f} s/volume | "
                     f"{r['nnunet_s_per_volume']:.1f} s/volume | **{r['ratio']:.2f}×** | "
                     f"{r['autocmr_peak_pss_mb']:.0f} / {r['nnunet_peak_pss_mb']:.0f} MiB | "
                     f"{a['LV']:.3f} / {a['MYO']:.3f} / {a['RV']:.3f} | {n['LV']:.3f} / {n['MYO']:.3f} / {n['RV']:.3f} |")
    c = d.get("sunnybrook_cine")
    if c:
        lines += ["", f"4D cine: the Sunnybrook DICOM study (12 slices × 20 phases, 256×256) read from DICOM and "
                      f"segmented frame by frame into one 4D mask: {c['frames']} frames in {c['wall_s']:.0f} s "
                      f"(**{c['frames_per_s']:.2f} frames/s**, mirroring on), peak {c['peak_pss_mb']:.0f} MiB. "
                      "nnU-Net reads neither DICOM nor 4D files."]
    return lines + [""]


NNUNET_EPOCH_VARIANTS = (1, 5, 10, 20, 50, 100, 250, 500, 750, 2000, 4000, 8000)  # nnUNetTrainer_<N>epochs


def autocmr_final_validation(e2e: dict | None) -> dict[str, float] | None:
    """autocmr's own final validation of the fold (no postprocessing), from the end-to-end run's log tail."""
    for line in (e2e or {}).get("training_log_tail", []):
        if "final validation:" in line:
            found = dict(re.findall(r"(\w+) Dice ([0-9.]+)", line.split("final validation:", 1)[1]))
            dice = {k: float(v) for k, v in found.items()}
            return {**dice, "mean": statistics.mean(dice.values())} if dice else None
    return None


def budget_lines(probe: dict | None, budget: dict | None, e2e: dict | None) -> list[str]:
    lines = []
    if probe:
        lines.append(f"**nnU-Net within the same 60-minute budget**: its own 2d plans (patch {probe['patch_size']}, batch "
                     f"{probe['batch_size']}) take {probe['s_per_iteration']:.0f} s per iteration on this machine, so "
                     f"its shortest variant (`nnUNetTrainer_1epoch`, 250 iterations) would need more than "
                     f"{probe['projected_1_epoch_min'] / 60:.1f} h: nothing of its default schedule fits.")
    if budget:
        dice = budget["validation_dice"]
        epoch_s = statistics.median(budget["epoch_s"])
        larger = [n for n in NNUNET_EPOCH_VARIANTS if n > budget["epochs_done"]]
        pace = (f"; at its median {epoch_s:.0f} s per epoch the next variant, {larger[0]} epochs, would need "
                f"{larger[0] * epoch_s / 60:.0f} min") if larger else ""
        lines.append(f"With autocmr's CPU network instead (same plans, same fold), the longest of nnU-Net's epochs "
                     f"variants that fits is `{budget['trainer']}`: {budget['epochs_done']} epochs in "
                     f"{budget['training_s'] / 60:.1f} min, {budget['total_s'] / 60:.1f} min with its final "
                     f"validation{pace}. Each tool's own final validation of fold 0 (32 volumes, no postprocessing):")
        lines += ["", "| 60-minute CPU budget | LV | MYO | RV | mean |", "|---|---|---|---|---|"]
        ours = autocmr_final_validation(e2e)
        if ours:
            lines.append(f"| autocmr_train `--time-budget 60m` (run above) | {ours['LV']:.3f} | {ours['MYO']:.3f} | "
                         f"{ours['RV']:.3f} | {ours['mean']:.3f} |")
        lines.append(f"| nnU-Net `{budget['trainer']}` | {dice.get('LV', float('nan')):.3f} | "
                     f"{dice.get('MYO', float('nan')):.3f} | {dice.get('RV', float('nan')):.3f} | "
                     f"{dice.get('mean', float('nan')):.3f} |")
    return lines + [""] if lines else []


def finetune_schedule_text(d: dict) -> str:
    its = d["finetune_iterations"]
    by_subjects: dict[str, set[int]] = {}
    for name, n in its.items():  # finetune<subjects>_<augmentation>
        by_subjects.setdefault(name.split("_")[0].removeprefix("finetune"), set()).add(n["trained"])
    listed = ", ".join(f"{'/'.join(map(str, sorted(v)))} iterations for {k} subject{'s' if k != '1' else ''}"
                       for k, v in sorted(by_subjects.items()))
    capped = any(n["trained"] < n["scheduled"] for n in its.values())
    return (f" with autocmr's default fine-tuning schedule, which grows with the number of subjects ({listed}, "
            f"batch 7; {d['args']['finetune_budget']} cap {'reached' if capped else 'not reached'})")


def cross_domain_table(d: dict) -> list[str]:
    reused = " (source models trained in the same script's previous run and reused)" if d.get(
        "source_models_reused") else ""
    lines = [f"**Across domains** (issue #7; `benchmarks/cross_domain.py`, {d['machine']['date'][:10]}): source "
             f"site = {d['source_subjects']} ACDC patients of the NOR, MINF and DCM groups; target site = HCM and RV "
             "patients with a simulated scanner change (gamma 1.7 and a smooth bias field on their images). "
             f"Source training {d['args']['source_budget']}{reused}; fine-tuning on 1 or 3 target-site patients "
             f"(decoder frozen, lr 0.001){finetune_schedule_text(d)}; tested on "
             f"{d['target_test_subjects']} other target patients ({2 * d['target_test_subjects']} volumes); "
             f"mirroring {'on' if d['args'].get('mirror') else 'off'} in this experiment. Dice:", "",
             "| model | test images | harmonise | LV | MYO | RV | mean |", "|---|---|---|---|---|---|---|"]
    for r in d["rows"]:
        lines.append(f"| {r['model']} | {r['test']} | {'yes' if r['harmonise'] else 'no'} | {r['LV']:.3f} | "
                     f"{r['MYO']:.3f} | {r['RV']:.3f} | {r['mean']:.3f} |")
    if d.get("sunnybrook"):
        lines += ["", "Cross-vendor LV/MYO check on the Sunnybrook study (GE, 9 annotated slices; predicted RV ignored):",
                  "", "| model | harmonise | LV | MYO |", "|---|---|---|---|"]
        for r in d["sunnybrook"]:
            lines.append(f"| {r['model']} | {'yes' if r['harmonise'] else 'no'} | {r['LV']:.3f} | {r['MYO']:.3f} |")
    return lines + [""]


def main() -> int:
    out: list[str] = []
    for name, fn in (("plan_benchmark", plan_table), ("train_benchmark", train_table),
                     ("acdc_end_to_end", e2e_table)):
        d = load(name)
        if d:
            out += fn(d)
    out += budget_lines(load("nnunet_probe_2d"), latest_budget_run(), load("acdc_end_to_end"))
    for name, fn in (("predict_benchmark", predict_table), ("cross_domain", cross_domain_table)):
        d = load(name)
        if d:
            out += fn(d)
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
