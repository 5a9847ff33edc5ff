"""One process at a time on a piece of shared work (a part of a prediction folder, a fold of a model folder).

The hold is the kernel's advisory lock (``flock``) on a small hidden file beside the work, so it ends with its
process however that ends (a crash or ``kill -9`` leaves no stale lock to clean up); the file says who holds
it, for the refusal's message. Network file systems map ``flock`` onto their own locks (NFSv4) or may not
lock at all; there the hold is a courtesy, not a guarantee: where the file system refuses ``flock`` outright
(Lustre mounted without ``flock``, some NFS setups: ENOSYS, ENOLCK, EOPNOTSUPP) the work goes on without the
hold, with one warning per file system and process.
"""
from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import socket
import time
from pathlib import Path
from typing import Callable, Iterator

logger = logging.getLogger(__name__)

# flock errors that say "this file system does not lock", not "another process holds it"
NO_LOCKING = frozenset({errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)})


@contextlib.contextmanager
def held(lock_file: Path, refuse: Callable[[str], Exception], *, shared: bool = False) -> Iterator[None]:
    """Hold ``lock_file`` (created if needed) for this process; when another process holds it, raise
    ``refuse(holder)`` at once, ``holder`` naming that process and machine. ``shared``: a hold several
    processes may have at once (it waits out a :func:`is_held` check, which holds the file for an instant);
    it excludes only an exclusive one and does not name its holders."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no cluster jobs there
        yield
        return
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        locked = True
        try:
            fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 300, 0).decode("utf-8", "replace").strip() or "another process"
            raise refuse(holder) from None
        except OSError as exc:
            if exc.errno not in NO_LOCKING:
                raise
            _warn_no_locking(lock_file, exc)
            locked = False
        if locked and not shared:  # several hold a shared lock: none of them is "the" holder
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"process {os.getpid()} on {socket.gethostname()} since "
                          f"{time.strftime('%Y-%m-%d %H:%M:%S')}".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def is_held(lock_file: Path) -> bool:
    """Whether some process (this one included, through another :func:`held`) holds ``lock_file`` now; False
    for a missing file and where the file system does not lock."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return False
    try:
        fd = os.open(lock_file, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released by the close below
    except BlockingIOError:
        return True
    except OSError as exc:
        if exc.errno not in NO_LOCKING:
            raise
        _warn_no_locking(lock_file, exc)
        return False
    finally:
        os.close(fd)
    return False


def _warn_no_locking(lock_file: Path, exc: OSError) -> None:
    _warn_no_locking_under(str(_mount_point(lock_file.parent)), os.strerror(exc.errno or 0))


def _mount_point(folder: Path) -> Path:
    """The top folder of the file system ``folder`` is on (the folder itself where it cannot be stat'ed)."""
    try:
        top = folder.resolve()
        device = os.stat(top).st_dev
        while top.parent != top and os.stat(top.parent).st_dev == device:
            top = top.parent
    except OSError:
        return folder
    return top


@functools.lru_cache(maxsize=None)
def _warn_no_locking_under(mount_point: str, reason: str) -> None:
    """Warns once per file system (the cache remembers): a batch takes many locks on the same one, and a
    cluster log need not repeat it."""
    logger.warning("files under %s: this file system does not lock files (%s); going on without the lock, so "
                   "nothing stops a second process on the same work there", mount_point, reason)


__all__ = ["NO_LOCKING", "held", "is_held"]
