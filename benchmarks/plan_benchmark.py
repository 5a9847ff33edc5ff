"""Issue #2 benchmark: convert + plan + preprocess the shared ACDC patients (2d and 3d_fullres) with autocmr,
and nnUNetv2_plan_and_preprocess on the same data, alternately in one run. Wall time and peak memory
(PSS summed over the process tree) of both; both use 2 worker processes and check dataset integrity.

    python benchmarks/plan_benchmark.py [--repeats 2]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys

from common import ACDC, WORK, autocmr_env, fresh, machine, require, save_results, script
from measure import run_measured
import peer


def run_autocmr(home, logs, k):
    env = autocmr_env(fresh(home))
    convert = run_measured([script("autocmr_convert"), "acdc", str(ACDC), "-d", "101", "-j", "2"], env=env,
                           log_path=logs / f"autocmr_convert_{k}.log")
    plan = run_measured([script("autocmr_plan"), "-d", "101", "-j", "2"], env=env, log_path=logs / f"autocmr_plan_{k}.log")
    assert convert.returncode == 0 and plan.returncode == 0, f"autocmr failed, see {logs}"
    return {"convert_s": convert.wall_s, "plan_s": plan.wall_s, "wall_s": convert.wall_s + plan.wall_s,
            "peak_pss_mb": max(convert.peak_pss_mb or 0, plan.peak_pss_mb or 0),
            "cpu_s": (convert.cpu_s or 0) + (plan.cpu_s or 0)}


def run_nnunet(autocmr_raw_dataset, root, logs, k):
    fresh(root)
    env = peer.peer_env(root)
    peer.link_raw_dataset(autocmr_raw_dataset, peer.nnunet_roots(root).raw)
    m = run_measured(peer.plan_and_preprocess_cmd(101, ("2d", "3d_fullres"), num_processes=2), env=env,
                     log_path=logs / f"nnunet_{k}.log")
    assert m.returncode == 0, f"nnU-Net failed, see {logs / f'nnunet_{k}.log'}"
    return {"wall_s": m.wall_s, "peak_pss_mb": m.peak_pss_mb, "cpu_s": m.cpu_s}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)
    require(ACDC / "patient001", "ACDC training data")
    base = fresh(WORK / "plan_benchmark")
    logs = base / "logs"
    logs.mkdir()
    runs = {"autocmr": [], "nnunet": []}
    for k in range(args.repeats):
        runs["autocmr"].append(run_autocmr(base / "autocmr", logs, k))
        print("autocmr", runs["autocmr"][-1], flush=True)
        raw = base / "autocmr" / "raw" / "Dataset101_ACDC"
        runs["nnunet"].append(run_nnunet(raw, base / "nnunet", logs, k))
        print("nnU-Net", runs["nnunet"][-1], flush=True)
    med = {tool: {key: statistics.median(r[key] for r in rs) for key in rs[0]} for tool, rs in runs.items()}
    ours = json.loads((base / "autocmr" / "preprocessed" / "Dataset101_ACDC" / "autocmrPlans.json").read_text())
    theirs = json.loads((base / "nnunet" / "nnUNet_preprocessed" / "Dataset101_ACDC" / "nnUNetPlans.json").read_text())
    plans = {tool: {c: {"spacing": p["configurations"][c]["spacing"], "patch_size": p["configurations"][c]["patch_size"],
                        "batch_size": p["configurations"][c]["batch_size"]} for c in ("2d", "3d_fullres")}
             for tool, p in (("autocmr", ours), ("nnunet", theirs))}
    result = {"machine": machine(), "runs": runs, "median": med,
              "ratio_time": med["autocmr"]["wall_s"] / med["nnunet"]["wall_s"],
              "ratio_memory": med["autocmr"]["peak_pss_mb"] / med["nnunet"]["peak_pss_mb"], "plans": plans,
              "note": "autocmr = autocmr_convert + autocmr_plan (integrity check, fingerprint, GPU and CPU plans, "
                      "2d and 3d_fullres preprocessing); nnU-Net = nnUNetv2_plan_and_preprocess -c 2d 3d_fullres "
                      "-np 2 -npfp 2 --verify_dataset_integrity on the dataset autocmr converted"}
    print(json.dumps({k: result[k] for k in ("median", "ratio_time", "ratio_memory", "plans")}, indent=2))
    print(f"results: {save_results('plan_benchmark', result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
