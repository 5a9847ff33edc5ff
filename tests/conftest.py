"""Shared fixtures. Real data is read from ``../shared/data`` beside the project (or $AUTOCMR_SHARED_DATA);
tests that need it skip with a clear reason when it is absent."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]

if os.environ.get("PYTEST_XDIST_WORKER"):
    # one torch thread per test worker: `-n 2` on a 2-core machine then uses each core once
    import torch

    torch.set_num_threads(1)


def shared_data_root() -> Path:
    return Path(os.environ.get("AUTOCMR_SHARED_DATA", PROJECT_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def acdc_root() -> Path:
    root = shared_data_root() / "acdc" / "training"
    if not (root / "patient001").is_dir():
        pytest.skip(f"real ACDC data not found at {root} (set AUTOCMR_SHARED_DATA)")
    return root


@pytest.fixture(scope="session")
def sunnybrook_root() -> Path:
    root = shared_data_root() / "sunnybrook" / "SC-HF-I-1"
    if not (root / "dicom").is_dir():
        pytest.skip(f"Sunnybrook DICOM study not found at {root} (set AUTOCMR_SHARED_DATA)")
    return root


@pytest.fixture(autouse=True)
def _isolated_roots(tmp_path_factory, monkeypatch):
    """Never let a test write into the user's real data roots."""
    home = tmp_path_factory.mktemp("autocmr_home")
    monkeypatch.setenv("AUTOCMR_HOME", str(home))
    for var in ("AUTOCMR_RAW", "AUTOCMR_PREPROCESSED", "AUTOCMR_RESULTS"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """(model folder, roots) of a small model trained on phantoms once per test process (~10 s)."""
    from autocmr.testing.tiny_model import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_model) -> Path:
    """A real (poorly) trained 2D model folder; trained once per test process, whichever file asks first."""
    return tiny_model[0]


@pytest.fixture(scope="session")
def tiny_predictor(tiny_model_dir):
    """The tiny model on the CPU without mirroring (tests check plumbing, not accuracy)."""
    from autocmr.inference.predictor import PredictorOptions

    return PredictorOptions(device="cpu", mirror=False).build(tiny_model_dir)
