"""Shared set-up of the training and inference benchmarks: the shared ACDC data prepared for both tools,
with the same folds and nnU-Net configured to build exactly autocmr's CPU network, patch and batch."""
from __future__ import annotations

import json
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import torch

import peer
from common import ACDC, autocmr_env, script
from measure import run_measured

CONFIG = "2d_autocmr_cpu"  # nnU-Net configuration holding autocmr's CPU-target 2d network


@dataclass(frozen=True)
class Pair:
    base: Path
    autocmr_env: dict
    nnunet_root: Path

    @property
    def raw(self) -> Path:
        return self.base / "autocmr" / "raw" / "Dataset101_ACDC"

    @property
    def preprocessed(self) -> Path:
        return self.base / "autocmr" / "preprocessed" / "Dataset101_ACDC"

    def nnunet_env(self, **kw) -> dict:
        return peer.peer_env(self.nnunet_root, **kw)


def prepare(base: Path, logs: Path) -> Pair:
    """Convert + plan with autocmr (CPU target, 2d); nnU-Net plans/preprocesses 2d on the same raw data,
    gets autocmr's folds and a configuration with autocmr's network (checked layer by layer)."""
    home = base / "autocmr"
    env = autocmr_env(home)
    pair = Pair(base, env, base / "nnunet")
    if not (pair.preprocessed / "autocmrPlans_cpu.json").is_file():
        for name, cmd in (("convert", [script("autocmr_convert"), "acdc", str(ACDC), "-d", "101"]),
                          ("plan", [script("autocmr_plan"), "-d", "101", "--target", "cpu", "-c", "2d"])):
            assert run_measured(cmd, env=env, log_path=logs / f"setup_{name}.log").returncode == 0, name
    # the folds autocmr_train would create, written now so nnU-Net gets the same ones
    from autocmr.dataset.raw import load_raw_dataset
    from autocmr.trainers.splits import load_or_create_splits

    folds = load_or_create_splits(pair.preprocessed / "splits.json", load_raw_dataset(pair.raw).subjects())
    nn = peer.nnunet_roots(pair.nnunet_root)
    plans_file = nn.preprocessed / "Dataset101_ACDC" / "nnUNetPlans.json"
    if not plans_file.is_file():
        peer.link_raw_dataset(pair.raw, nn.raw)
        m = run_measured(peer.plan_and_preprocess_cmd(101, ("2d",)), env=pair.nnunet_env(), log_path=logs / "setup_nnunet.log")
        assert m.returncode == 0, "nnU-Net plan_and_preprocess failed"
    peer.write_custom_plans_from_autocmr(plans_file, pair.preprocessed / "autocmrPlans_cpu.json", "2d",
                                         configuration_name=CONFIG)
    peer.write_splits(nn.preprocessed / "Dataset101_ACDC", folds)
    check = peer.check_network(plans_file, CONFIG, autocmr_plans_file=pair.preprocessed / "autocmrPlans_cpu.json")
    if not check["equal"]:
        raise SystemExit(f"nnU-Net does not build autocmr's network: {check['differences']}")
    return pair


def run_until_epochs(cmd: list[str], env: dict, log_dir_glob, n_epochs: int, log_path: Path,
                     timeout_s: float = 7200) -> list[float]:
    """Run nnU-Net training until its log shows ``n_epochs`` epoch times, then stop it (its final validation
    of the fold is not part of a throughput measurement). Returns the epoch times."""
    with open(log_path, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        start = time.monotonic()
        times: list[float] = []
        try:
            while proc.poll() is None and time.monotonic() - start < timeout_s:
                time.sleep(5)
                logs = sorted(log_dir_glob(), key=lambda p: p.stat().st_mtime)
                if logs:
                    times = peer.parse_epoch_times(logs[-1])
                    if len(times) >= n_epochs:
                        break
        finally:
            if proc.poll() is None:
                import os
                import signal

                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=60)
    return times


_NN_TO_OURS = [
    (re.compile(r"^(?:decoder\.)?encoder\.stages\.(\d+)\.0\.convs\.(\d+)\.(conv|norm|all_modules\.[01])\.(weight|bias)$"),
     lambda m: f"encoder.{m[1]}.{m[2]}.{0 if m[3] in ('conv', 'all_modules.0') else 1}.{m[4]}"),
    (re.compile(r"^decoder\.stages\.(\d+)\.convs\.(\d+)\.(conv|norm|all_modules\.[01])\.(weight|bias)$"),
     lambda m: f"decoder.{m[1]}.{m[2]}.{0 if m[3] in ('conv', 'all_modules.0') else 1}.{m[4]}"),
    (re.compile(r"^decoder\.transpconvs\.(\d+)\.(weight|bias)$"), lambda m: f"upsample.{m[1]}.{m[2]}"),
    (re.compile(r"^decoder\.seg_layers\.(\d+)\.(weight|bias)$"), lambda m: f"heads.{m[1]}.{m[2]}"),
]


def autocmr_weights_into_nnunet(autocmr_checkpoint: Path, nnunet_checkpoint: Path, out: Path) -> None:
    """Write an nnU-Net checkpoint carrying autocmr's trained weights (identical architecture), so both
    tools' inference pipelines can be timed on the very same model."""
    from autocmr.documents.checkpoint import load_checkpoint  # weights_only; reads older autocmr checkpoints too

    ours = load_checkpoint(autocmr_checkpoint)["network"]
    ckpt = torch.load(nnunet_checkpoint, map_location="cpu", weights_only=False)
    new = {}
    for key, value in ckpt["network_weights"].items():
        for pattern, to_ours in _NN_TO_OURS:
            if m := pattern.match(key):
                src = ours[to_ours(m)]
                if src.shape != value.shape:
                    raise SystemExit(f"{key}: shape {tuple(value.shape)} vs autocmr {to_ours(m)} {tuple(src.shape)}")
                new[key] = src.clone()
                break
        else:
            raise SystemExit(f"no autocmr weight for nnU-Net key {key}")
    ckpt["network_weights"] = new
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, out)


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, default=str))
