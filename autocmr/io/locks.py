"""One process at a time on a piece of shared work (a part of a prediction folder, a fold of a model folder).

The hold is the kernel's advisory lock (``flock``) on a small hidden file beside the work, so it ends with its
process however that ends (a crash or ``kill -9`` leaves no stale lock to clean up); the file says who holds
it, for the refusal's message. Network file systems map ``flock`` onto their own locks (NFSv4) or may not
lock at all; there the hold is a courtesy, not a guarantee.
"""
from __future__ import annotations

import contextlib
import os
import socket
import time
from pathlib import Path
from typing import Callable, Iterator


@contextlib.contextmanager
def held(lock_file: Path, refuse: Callable[[str], Exception]) -> Iterator[None]:
    """Hold ``lock_file`` (created if needed) for this process; when another process holds it, raise
    ``refuse(holder)`` at once, ``holder`` naming that process and machine."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no cluster jobs there
        yield
        return
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 300, 0).decode("utf-8", "replace").strip() or "another process"
            raise refuse(holder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"process {os.getpid()} on {socket.gethostname()} since "
                      f"{time.strftime('%Y-%m-%d %H:%M:%S')}".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock


__all__ = ["held"]
