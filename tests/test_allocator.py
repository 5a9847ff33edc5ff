"""keep_freed_memory: re-allocating a large tensor no longer costs fresh pages from the OS."""
from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from autocmr.allocator import keep_freed_memory

# A training step in miniature: allocate a 64 MB tensor, write it, free it; twenty times. Prints the
# minor page faults of the loop, after ten warm-up rounds (glibc settles on reusing the block after a few).
LOOP = """
import resource, sys, torch
from autocmr.allocator import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
for _ in range(10):
    torch.ones(16 * 1024**2)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    x = torch.ones(16 * 1024**2)
    del x
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""

glibc_only = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="mallopt thresholds are a glibc feature")


def _faults(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", LOOP, mode], capture_output=True, text=True, check=True).stdout.split()
    return out[0], int(out[1])


@glibc_only
def test_freed_memory_is_reused_instead_of_faulted_in_again():
    _, default_faults = _faults("default")
    kept, kept_faults = _faults("keep")
    assert kept == "True"
    # 20 x 64 MB = 20 x 16384 pages faulted in without it; nearly none with it
    assert default_faults > 20 * 8000
    assert kept_faults < default_faults / 20


def test_reports_whether_it_applied():
    applied = keep_freed_memory()
    assert applied == (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc")
