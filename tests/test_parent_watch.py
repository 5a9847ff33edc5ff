"""Workers end when the process that started them is killed (SIGKILL: no Python clean-up runs in it)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")

PARENT = textwrap.dedent("""
    import multiprocessing, sys, time
    from autocmr import parallel

    if __name__ == "__main__":
        pool = getattr(parallel, sys.argv[1])(2)
        busy = [pool.submit(time.sleep, 600) for _ in range(2)]  # both workers in the middle of a task
        time.sleep(0.5)
        print(" ".join(str(p.pid) for p in multiprocessing.active_children()), flush=True)
        time.sleep(600)
""")


def _running(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for a reaper has ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.parametrize("make", ["make_pool", "make_bare_pool"])
def test_workers_of_a_killed_process_stop(tmp_path, make):
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    parent = subprocess.Popen([sys.executable, str(script), make], stdout=subprocess.PIPE, text=True)
    try:
        workers = [int(p) for p in parent.stdout.readline().split()]
        assert len(workers) == 2 and all(_running(p) for p in workers)
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 20
    while any(_running(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [p for p in workers if _running(p)]
    for pid in left:  # never leave them behind, even when the test fails
        os.kill(pid, signal.SIGKILL)
    assert not left, f"workers {left} outlived their killed parent"


CHILD_WITH_HANDLER = textwrap.dedent("""
    import multiprocessing, os, signal, sys, time
    from pathlib import Path

    def child(parent_pid, marker):
        from autocmr.parent_watch import exit_when_parent_dies

        def on_term(signum, frame):  # as a training's handler: save, then stop
            Path(marker).write_text("saved")
            sys.exit(143)

        signal.signal(signal.SIGTERM, on_term)
        exit_when_parent_dies(parent_pid, poll_s=0.1)
        Path(marker).write_text("ready")
        while True:
            time.sleep(0.05)

    if __name__ == "__main__":
        process = multiprocessing.get_context("spawn").Process(target=child, args=(os.getpid(), sys.argv[1]))
        process.start()
        print(process.pid, flush=True)
        time.sleep(600)
""")


def test_a_child_whose_parent_died_gets_sigterm_and_its_handler_runs(tmp_path):
    script, marker = tmp_path / "parent.py", tmp_path / "saved.txt"
    script.write_text(CHILD_WITH_HANDLER)
    parent = subprocess.Popen([sys.executable, str(script), str(marker)], stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        deadline = time.monotonic() + 60
        while not marker.is_file() and time.monotonic() < deadline:  # the child is in its loop
            time.sleep(0.05)
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 20
    while _running(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _running(child):
        os.kill(child, signal.SIGKILL)
    assert marker.read_text() == "saved" and not _running(child)


def test_sigterm_ends_a_command_through_its_finally_blocks():
    """finishing_on_sigterm: SIGTERM becomes SystemExit(143) in the main thread, so clean-up code (a batch
    recording the cases it finished) runs; the previous handler comes back afterwards."""
    from autocmr.parent_watch import finishing_on_sigterm

    before = signal.getsignal(signal.SIGTERM)
    cleaned = []
    try:
        with finishing_on_sigterm("test"):
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)  # the handler interrupts this
            finally:
                cleaned.append(True)
    except SystemExit as exc:
        assert exc.code == 128 + signal.SIGTERM
    else:
        raise AssertionError("SIGTERM did not end the block")
    assert cleaned == [True] and signal.getsignal(signal.SIGTERM) is before
