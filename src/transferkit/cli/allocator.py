"""CPU allocator tuning for training on glibc systems.

PyTorch frees and re-allocates the same multi-megabyte activation buffers every step. glibc serves blocks
above its mmap threshold with fresh `mmap` calls and returns freed heap tops to the OS, so every step pays
for page faults and zeroing: on the 2-core CI machine a third of training time was kernel time. Raising the
mmap and trim thresholds keeps those buffers in the heap for reuse (benchmarks/cpu_allocator.py measures the
gain; see benchmarks/RESULTS.md). The cost is that up to `limit` bytes of freed memory stay with the process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_freed_memory(limit: int = 1 << 30) -> bool:
    """Ask glibc to reuse freed blocks up to `limit` bytes instead of unmapping them. Returns whether it took
    effect (False off Linux/glibc, where nothing is changed)."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, limit)) and bool(mallopt(_M_TRIM_THRESHOLD, limit))
