"""Process settings for training on the CPU: keep freed memory for reuse instead of handing it back.

A training step allocates and frees the same activations every step. glibc's malloc hands a large freed
block back to the kernel (blocks over its mmap threshold are unmapped; a free top of the heap over the trim
threshold is trimmed), so the next step's allocation of the same size is page-faulted in again, a page at a
time. Measured on the toy U-Net's training step (`scripts/bench/train_step.py`, docs/benchmarks.md): about
8,400 page faults per step with glibc's defaults, about 40 with the settings below, the time of those faults
being pure overhead. The settings fix the mmap threshold at its ceiling (32 MiB: only larger blocks are
mmapped, and the threshold no longer moves) and keep up to 1 GiB of free heap before trimming; memory a step
has freed is reused by the next one. Peak memory does not change, only what is returned between steps.

No effect outside glibc (macOS, musl, Windows): `keep_freed_memory` then returns False and changes nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

# mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 << 20  # glibc's ceiling for the mmap threshold on 64-bit hosts
TRIM_THRESHOLD_BYTES = 1 << 30

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds for a training process (once); True if they are in effect."""
    global _applied
    if _applied is None:
        _applied = _mallopt({M_MMAP_THRESHOLD: MMAP_THRESHOLD_BYTES, M_TRIM_THRESHOLD: TRIM_THRESHOLD_BYTES})
    return _applied


def _mallopt(settings: dict[int, int]) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = all(mallopt(param, value) == 1 for param, value in settings.items())
    if not ok:
        log.warning("glibc mallopt refused %s; training runs with the allocator's defaults", settings)
    return ok
