"""Shared helpers of the benchmark scripts: paths, running autocmr's console scripts, result files."""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shutil
import sys
from pathlib import Path
from typing import Any

import torch

from autocmr.precision import cpu_info

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
SHARED = Path(os.environ.get("AUTOCMR_SHARED_DATA", PROJECT.parent / "shared" / "data"))
ACDC = SHARED / "acdc" / "training"
SUNNYBROOK = SHARED / "sunnybrook" / "SC-HF-I-1"
RESULTS = HERE / "results"
WORK = HERE / "work"  # git-ignored scratch space

sys.path.insert(0, str(HERE))


def script(name: str) -> str:
    """Path of one of autocmr's console scripts in the running interpreter's environment."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else shutil.which(name) or name


def autocmr_env(home: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"AUTOCMR_HOME": str(home), "AUTOCMR_RAW": str(home / "raw"),
                "AUTOCMR_PREPROCESSED": str(home / "preprocessed"), "AUTOCMR_RESULTS": str(home / "results")})
    env.update(extra)
    return env


def machine() -> dict[str, Any]:
    cpu = cpu_info().model or "unknown"
    return {"date": _dt.datetime.now().isoformat(timespec="seconds"), "python": platform.python_version(),
            "torch": torch.__version__, "cpu": cpu, "cores": len(os.sched_getaffinity(0)),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def require(path: Path, what: str) -> None:
    if not path.exists():
        raise SystemExit(f"{what} not found at {path} (set AUTOCMR_SHARED_DATA); this benchmark needs it")


def save_results(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path


def fresh(folder: Path) -> Path:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder
