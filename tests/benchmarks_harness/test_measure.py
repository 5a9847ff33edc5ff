"""benchmarks/measure.py: memory of a whole process tree, wall/CPU time, timeouts, in-process calls."""
from __future__ import annotations

import os
import sys
import time

import pytest

from benchmarks.measure import measure_call, process_tree, run_measured

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the sampler reads /proc (Linux)")

ALLOC_MB = 200
# A grandchild allocates and touches ALLOC_MB, holds it, exits; its parent and grandparent only wait.
GRANDCHILD = f"b = b'x' * ({ALLOC_MB} * 1024 * 1024); import time; time.sleep(1.0)"
CHILD = f"import subprocess, sys; sys.exit(subprocess.call([sys.executable, '-c', {GRANDCHILD!r}]))"
PARENT = f"import subprocess, sys; rc = subprocess.call([sys.executable, '-c', {CHILD!r}]); print('done'); sys.exit(rc)"
INTERPRETER_MB = 40  # generous resident size of one idle CPython (~10 MB measured) for the upper bound


def test_peak_memory_of_a_grandchild_is_counted(tmp_path):
    log = tmp_path / "run.log"
    m = run_measured([sys.executable, "-c", PARENT], log_path=log)
    assert m.returncode == 0
    assert m.max_processes >= 3  # parent, child and grandchild seen alive together
    assert ALLOC_MB <= m.peak_rss_mb <= ALLOC_MB + 3 * INTERPRETER_MB
    assert m.peak_pss_mb is None or ALLOC_MB * 0.95 <= m.peak_pss_mb <= ALLOC_MB + 3 * INTERPRETER_MB
    assert m.max_process_hwm_mb >= ALLOC_MB
    assert 1.0 <= m.wall_s < 30.0  # the grandchild sleeps 1 s
    assert m.cpu_s is not None and m.cpu_s > 0.0  # descendants' CPU (allocation, start-up) is included
    assert m.n_samples >= 5
    assert log.read_text().strip().endswith("done")


def test_failure_and_output_are_reported(tmp_path):
    m = run_measured([sys.executable, "-c", "import sys; print('boom', file=sys.stderr); sys.exit(3)"],
                     log_path=tmp_path / "fail.log")
    assert m.returncode == 3
    assert "boom" in (tmp_path / "fail.log").read_text()  # stderr goes to the same log


def test_timeout_kills_the_whole_tree(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    sleeper = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
    child = f"import subprocess, sys; subprocess.call([sys.executable, '-c', {sleeper!r}])"
    start = time.perf_counter()
    m = run_measured([sys.executable, "-c", child], timeout=1.5, log_path=tmp_path / "t.log")
    assert m.timed_out and m.returncode != 0
    assert time.perf_counter() - start < 15.0
    grandchild = int(pid_file.read_text())
    time.sleep(0.2)
    assert not os.path.exists(f"/proc/{grandchild}") or "Z" in _state(grandchild)


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"


def test_measure_call_sees_in_process_allocation_and_children():
    seen: dict[str, float] = {}

    def work() -> int:
        block = bytearray(b"x" * (100 * 1024 * 1024))  # 100 MiB touched in this process
        # This process' own size is read here, with the block held, not before the call: a pytest worker's
        # resident size can shrink between tests (freed heap given back), which made a baseline taken
        # earlier larger than what the sampler later saw.
        seen["with_block"] = rss_mb()
        code = "b = b'y' * (80 * 1024 * 1024); import time; time.sleep(0.6)"  # 80 MiB in a child
        import subprocess

        subprocess.run([sys.executable, "-c", code], check=True)
        return len(block)

    result, m = measure_call(work)
    assert result == 100 * 1024 * 1024
    assert m.returncode is None
    # this process with its block and the child's 80 MiB, seen at the same time
    assert m.peak_rss_mb >= seen["with_block"] + 80 * 0.9
    assert m.max_processes >= 2
    assert m.wall_s >= 0.6


def rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_process_tree_of_missing_pid_is_empty():
    assert process_tree(os.getpid())[0] == os.getpid()
    assert process_tree(2**22 + 12345) == []
