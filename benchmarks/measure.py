"""Wall time, CPU time and peak memory of a command, or of a Python call, including all its descendants.

nnU-Net and autocmr both start worker processes (data augmentation, preprocessing pools), so the memory
that matters is the *sum* over the whole process tree at one moment. A sampler thread walks the tree
every :data:`SAMPLE_INTERVAL_S` by reading ``/proc`` (Linux only; psutil is not a dependency) and keeps
the largest sums seen:

* ``peak_rss_mb``: sum of ``VmRSS``. Shared pages (libtorch, copy-on-write memory of forked workers) are
  counted once per process, so this over-states what the machine really needs for many-process trees.
* ``peak_pss_mb``: sum of ``Pss`` (proportional set size, shared pages split between their users), from
  ``/proc/<pid>/smaps_rollup``. This is the fairer number to compare a 1-process and a 4-process tool.
* ``max_process_hwm_mb``: the largest ``VmHWM`` (kernel-kept per-process peak RSS) of any single process
  seen; it catches spikes shorter than the sampling interval, which the sums can miss.

CPU time (user + system) comes from ``wait4``/``getrusage``, which count every descendant that has
exited and been waited for: on a busy shared machine it is steadier than wall time.

Usage as a script (prints the measurement as JSON)::

    python benchmarks/measure.py [--log run.log] [--timeout 600] -- COMMAND ARG...
"""
from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

SAMPLE_INTERVAL_S = 0.1  # sampling period of the process-tree walk (brief: ~0.1 s)
KIB_PER_MB = 1024  # /proc reports kB (KiB); all "mb" values here are MiB
KILL_GRACE_S = 5.0  # after SIGTERM on timeout, wait this long before SIGKILL
_PROC = Path("/proc")


@dataclass(frozen=True)
class Measurement:
    """What one measured run cost. Memory in MiB, times in seconds."""

    wall_s: float
    peak_rss_mb: float  # max over samples of the summed VmRSS of the tree
    returncode: int | None  # exit status (negative: killed by that signal); None for measure_call
    peak_pss_mb: float | None = None  # max over samples of the summed Pss (None: smaps_rollup unreadable)
    max_process_hwm_mb: float = 0.0  # largest per-process VmHWM seen (exact peak of the biggest process)
    cpu_s: float | None = None  # user + system CPU of the tree (waited-for descendants only)
    max_processes: int = 0  # most processes alive in the tree at one sample
    n_samples: int = 0
    timed_out: bool = False
    log_path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ----- /proc readers ---------------------------------------------------------------------------------
def _read_kib(path: Path, keys: Sequence[str]) -> dict[str, int]:
    """Values in kB of ``Key:  123 kB`` lines; missing file (process gone) gives an empty dict."""
    out: dict[str, int] = {}
    try:
        with open(path, "rb") as f:
            for line in f:
                key, _, rest = line.partition(b":")
                name = key.decode()
                if name in keys:
                    out[name] = int(rest.split()[0])
                    if len(out) == len(keys):
                        break
    except (FileNotFoundError, ProcessLookupError, PermissionError, ValueError, IndexError):
        pass
    return out


def _ppid(pid: int) -> int | None:
    try:
        with open(_PROC / str(pid) / "stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may contain spaces and ')': fields after the last ')' are fixed.
    fields = data[data.rfind(b")") + 2:].split()
    return int(fields[1]) if len(fields) > 1 else None


def _children_via_task_files(pid: int) -> list[int] | None:
    """Children from /proc/<pid>/task/*/children (needs CONFIG_PROC_CHILDREN); None when unsupported."""
    out: list[int] = []
    try:
        tasks = os.listdir(_PROC / str(pid) / "task")
    except (FileNotFoundError, ProcessLookupError):
        return []
    for tid in tasks:
        try:
            with open(_PROC / str(pid) / "task" / tid / "children", "rb") as f:
                out.extend(int(c) for c in f.read().split())
        except FileNotFoundError:
            if not (_PROC / str(pid) / "task" / tid).exists():
                continue  # that thread just ended
            return None  # kernel without the children file
        except ProcessLookupError:
            continue
    return out


_TASK_CHILDREN_SUPPORTED = _children_via_task_files(os.getpid()) is not None


def process_tree(root: int) -> list[int]:
    """``root`` and all its live descendants (empty when ``root`` is gone)."""
    if not (_PROC / str(root)).exists():
        return []
    if _TASK_CHILDREN_SUPPORTED:
        tree, todo = [root], [root]
        while todo:
            kids = _children_via_task_files(todo.pop()) or []
            tree.extend(kids)
            todo.extend(kids)
        return tree
    # Fallback: one scan of /proc/*/stat for parent ids, then a walk from the root.
    children: dict[int, list[int]] = {}
    for entry in os.scandir(_PROC):
        if entry.name.isdigit():
            parent = _ppid(int(entry.name))
            if parent is not None:
                children.setdefault(parent, []).append(int(entry.name))
    tree, todo = [root], [root]
    while todo:
        kids = children.get(todo.pop(), [])
        tree.extend(kids)
        todo.extend(kids)
    return tree


# ----- sampler -------------------------------------------------------------------------------------
class TreeSampler:
    """Background thread sampling the memory of ``root``'s process tree until :meth:`stop`."""

    def __init__(self, root: int, *, interval_s: float = SAMPLE_INTERVAL_S, pss: bool = True) -> None:
        self.root = root
        self.interval_s = interval_s
        self.pss = pss
        self.peak_rss_kib = 0
        self.peak_pss_kib: int | None = 0 if pss else None
        self.max_hwm_kib = 0
        self.max_processes = 0
        self.n_samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"tree-sampler-{root}", daemon=True)

    def start(self) -> "TreeSampler":
        self.sample()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def sample(self) -> None:
        rss = pss = alive = 0
        pss_ok = self.pss
        for pid in process_tree(self.root):
            status = _read_kib(_PROC / str(pid) / "status", ("VmRSS", "VmHWM"))
            if "VmRSS" not in status:
                continue  # gone, or a zombie (no memory left)
            alive += 1
            rss += status["VmRSS"]
            self.max_hwm_kib = max(self.max_hwm_kib, status.get("VmHWM", 0))
            if pss_ok:
                value = _read_kib(_PROC / str(pid) / "smaps_rollup", ("Pss",)).get("Pss")
                if value is None:
                    pss_ok = False
                else:
                    pss += value
        self.n_samples += 1
        self.peak_rss_kib = max(self.peak_rss_kib, rss)
        self.max_processes = max(self.max_processes, alive)
        if self.peak_pss_kib is not None:
            if pss_ok:
                self.peak_pss_kib = max(self.peak_pss_kib, pss)
            elif alive:
                self.peak_pss_kib = None  # smaps_rollup unreadable here: report no PSS rather than a wrong one

    def measurement(self, *, wall_s: float, returncode: int | None, cpu_s: float | None, timed_out: bool = False,
                    log_path: str | None = None) -> Measurement:
        return Measurement(
            wall_s=wall_s, peak_rss_mb=self.peak_rss_kib / KIB_PER_MB, returncode=returncode,
            peak_pss_mb=None if self.peak_pss_kib is None else self.peak_pss_kib / KIB_PER_MB,
            max_process_hwm_mb=self.max_hwm_kib / KIB_PER_MB, cpu_s=cpu_s, max_processes=self.max_processes,
            n_samples=self.n_samples, timed_out=timed_out, log_path=log_path)


# ----- public API ----------------------------------------------------------------------------------
def run_measured(cmd: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: str | Path | None = None,
                 timeout: float | None = None, log_path: str | Path | None = None,
                 interval_s: float = SAMPLE_INTERVAL_S) -> Measurement:
    """Run ``cmd`` (stdin closed, stdout and stderr both to ``log_path``) and measure its process tree.

    Without ``log_path`` the output goes to a kept temporary file, named in the result. On ``timeout``
    (seconds) the command's process group and any remaining descendants get SIGTERM, then SIGKILL after
    :data:`KILL_GRACE_S`; the result then has ``timed_out=True``. A non-zero exit is reported in
    ``returncode``, not raised.
    """
    if log_path is None:
        fd, name = tempfile.mkstemp(prefix="measured_", suffix=".log")
        os.close(fd)
        log_path = name
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        start = time.perf_counter()
        proc = subprocess.Popen(list(cmd), env=None if env is None else dict(env), cwd=cwd, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        sampler = TreeSampler(proc.pid, interval_s=interval_s).start()
        try:
            status, usage, timed_out = _wait(proc, sampler, start, timeout)
        except BaseException:  # e.g. Ctrl-C: the command runs in its own session and would not see it
            _kill_tree(proc.pid, sampler)
            os.wait4(proc.pid, 0)
            proc.returncode = -signal.SIGKILL
            raise
        finally:
            sampler.stop()
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4 here, so tell Popen
    return sampler.measurement(wall_s=wall, returncode=proc.returncode, cpu_s=usage.ru_utime + usage.ru_stime,
                               timed_out=timed_out, log_path=str(log_path))


def _wait(proc: subprocess.Popen, sampler: TreeSampler, start: float,
          timeout: float | None) -> tuple[int, resource.struct_rusage, bool]:
    """Reap ``proc`` with wait4 (for the tree's CPU time), enforcing ``timeout``."""
    timed_out = False
    deadline = None if timeout is None else start + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            return status, usage, timed_out
        if deadline is not None and time.perf_counter() > deadline and not timed_out:
            timed_out = True
            _kill_tree(proc.pid, sampler)
        time.sleep(0.02)  # short: the wall time is read right after the exit is seen


def _kill_tree(root: int, sampler: TreeSampler) -> None:
    """SIGTERM the command's process group and stray descendants, SIGKILL what is left after a grace."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = process_tree(root)
        try:
            os.killpg(root, sig)  # the group the command was started in (start_new_session)
        except (ProcessLookupError, PermissionError):
            pass
        for pid in pids:  # descendants that left the group
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        if sig == signal.SIGTERM:
            end = time.perf_counter() + KILL_GRACE_S
            while time.perf_counter() < end and not all(_exited(p) for p in pids):
                time.sleep(0.1)
            if all(_exited(p) for p in process_tree(root)):
                return


def _exited(pid: int) -> bool:
    """Gone or a zombie (exited, not yet reaped); never reaps, so the caller's wait4 still sees it."""
    try:
        with open(_PROC / str(pid) / "stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return data[data.rfind(b")") + 2:][:1] in (b"Z", b"X")


def measure_call(fn: Callable[..., Any], *args: Any, interval_s: float = SAMPLE_INTERVAL_S,
                 **kwargs: Any) -> tuple[Any, Measurement]:
    """Call ``fn(*args, **kwargs)`` in this process and measure it: wall time, peak memory of this process
    plus its children (worker pools), CPU time of this process (all threads) plus children reaped meanwhile.

    The peak includes what this process already held before the call (the interpreter, imported
    modules); measure from a fresh process, or subtract a baseline, when that matters. Exceptions from
    ``fn`` propagate after the sampler is stopped. Returns ``(result, measurement)``.
    """
    sampler = TreeSampler(os.getpid(), interval_s=interval_s)
    self0 = resource.getrusage(resource.RUSAGE_SELF)
    kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    sampler.start()
    try:
        result = fn(*args, **kwargs)
    finally:
        wall = time.perf_counter() - start
        sampler.sample()
        sampler.stop()
    self1 = resource.getrusage(resource.RUSAGE_SELF)
    kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = sum(b.ru_utime + b.ru_stime - a.ru_utime - a.ru_stime for a, b in ((self0, self1), (kids0, kids1)))
    return result, sampler.measurement(wall_s=wall, returncode=None, cpu_s=cpu)


def tail(path: str | Path, n_lines: int = 30) -> str:
    """Last lines of a log (for error messages)."""
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return f"(no log at {path})"
    return "\n".join(lines[-n_lines:])


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Measure a command's wall time, CPU time and peak memory "
                                                 "(whole process tree); prints JSON.")
    parser.add_argument("--log", default=None, help="file for the command's stdout+stderr (default: a temp file)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds before the tree is killed")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ARG...")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command after --")
    m = run_measured(command, timeout=args.timeout, log_path=args.log)
    print(json.dumps(m.to_dict(), indent=2))
    return 0 if m.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
