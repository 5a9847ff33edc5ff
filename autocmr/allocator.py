"""Keep freed heap memory in the process during CPU training and inference instead of returning it to the OS.

glibc serves large allocations with ``mmap`` above a threshold and unmaps them again on ``free``; a U-Net
step on the CPU allocates and frees the same few hundred MB of activations and gradients every iteration, so
each step pays tens of thousands of page faults to get fresh zeroed pages. Measured on the 2-core CI-class
machine with the CPU 2d plans (batch 7, 128x128): 40 000 minor faults and 0.1 s of kernel time per step,
389 -> 327 ms per training step once the memory is kept (``benchmarks/train_benchmark.py`` holds the
end-to-end figure); predicting 6 ACDC volumes took 40 -> 34 s (4.4 M -> 0.14 M page faults, peak RSS
632 -> 689 MB). PyTorch's CPU performance guide reaches the same effect by preloading jemalloc or
tcmalloc; ``mallopt`` gets it from the allocator already loaded, without changing how autocmr is started.

The process keeps its high-water mark of heap memory instead of shrinking between steps, which is the
behaviour of a caching allocator (and of torch's own CUDA allocator).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform

logger = logging.getLogger(__name__)

# mallopt parameter numbers from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Blocks up to this size come from the heap and are reused; larger ones (rare: whole 3D volumes) still use
# mmap so a single huge temporary is given back at once. Also the most that stays unreturned at the heap top.
KEEP_BYTES = 512 * 1024**2


def keep_freed_memory(keep_bytes: int = KEEP_BYTES) -> bool:
    """Raise glibc's mmap and trim thresholds to ``keep_bytes``; returns whether it took effect (False on
    other C libraries, e.g. macOS or musl, where nothing is changed)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, int(keep_bytes)) == 1
        ok = libc.mallopt(_M_TRIM_THRESHOLD, int(keep_bytes)) == 1 and ok
    except (OSError, AttributeError) as exc:  # no usable libc: keep the default behaviour
        logger.debug("mallopt unavailable: %s", exc)
        return False
    return ok
