"""glibc's malloc, tuned so that training reuses freed tensor memory instead of mapping it anew every step.

glibc serves each allocation above its mmap threshold (128 KiB at start) with a fresh `mmap` and gives it back
with `munmap` when freed. A CPU training step allocates and frees the same activation and gradient buffers
(0.1-10 MiB each) every time, so the kernel zeroes new pages for all of them, step after step: a one-epoch
Fashion-MNIST run spent 2.8 s of its 9 s in the kernel (0.5 s with the thresholds set). glibc raises the threshold
by itself after a large free, which is why a run that had just decoded the raw files (and freed the bytes) was
~14% faster than one that loaded the cached tensors. Fixing both thresholds makes that the rule
(benchmarks/README.md, "glibc malloc thresholds").
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's own ceiling for its dynamic threshold (64-bit)
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD  # what glibc pairs with it: free memory kept at the heap's top


def tune_malloc() -> bool:
    """Keep blocks up to 32 MiB in the heap after they are freed (glibc only); True if it took effect."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own libc
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
