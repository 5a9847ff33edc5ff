"""``autocmr_predict`` killed with SIGKILL in the middle of a batch, then run again with ``--continue``: the
masks are byte-identical to an uninterrupted run's, and no half-written or temporary file is ever visible
under a final name or left behind."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from autocmr.io.image import write_image
from tests.helpers import small_case, temporaries

N_CASES = 4
# Seconds to wait for the first mask before giving up (start-up imports torch and loads the model).
FIRST_MASK_TIMEOUT_S = 300
POLL_S = 0.02


def _command(src: Path, out: Path, model: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "autocmr.cli.predict", "-i", str(src), "-o", str(out), "-m", str(model),
            "-j", "0", "--no-mirror", "--device", "cpu", *extra]


def _masks(out: Path) -> list[Path]:
    return sorted(p for p in out.glob("case*.nii.gz") if not p.name.startswith("."))


def test_kill_then_continue_gives_the_uninterrupted_masks(tmp_path, tiny_model_dir):
    src = tmp_path / "in"
    for seed in range(N_CASES):
        case = small_case(60 + seed, slices=3)
        write_image(case.image, case.geometry, src / f"case{seed}.nii.gz")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    reference, out = tmp_path / "reference", tmp_path / "out"
    subprocess.run(_command(src, reference, tiny_model_dir), check=True, env=env, capture_output=True, timeout=900)
    assert len(_masks(reference)) == N_CASES

    process = subprocess.Popen(_command(src, out, tiny_model_dir), env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + FIRST_MASK_TIMEOUT_S
    while not _masks(out) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(POLL_S)
    process.kill()  # SIGKILL: no cleanup handler runs
    process.wait()
    written = _masks(out)
    assert 1 <= len(written) < N_CASES, "the kill must land in the middle of the batch"
    for mask in written:  # whatever carries a final name is complete
        assert mask.read_bytes() == (reference / mask.name).read_bytes(), mask.name

    subprocess.run(_command(src, out, tiny_model_dir, "--continue"), check=True, env=env, capture_output=True,
                   timeout=900)
    assert [m.name for m in _masks(out)] == [m.name for m in _masks(reference)]
    for mask in _masks(out):
        assert mask.read_bytes() == (reference / mask.name).read_bytes(), mask.name
    assert not temporaries(out)
