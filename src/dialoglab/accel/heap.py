"""Keep freed CPU memory in the process heap, so large tensors stop costing page faults each step.

glibc's malloc serves large blocks (from 128 KiB, a threshold that adapts up to 32 MiB) with
`mmap` and hands them back to the OS when freed. A training step's large temporaries (logits,
gate buffers, gradients, Adam's scratch) are allocated and freed every step, so each step gets
fresh pages and pays a page fault per 4 KiB. `keep_freed_memory` sets malloc's mmap threshold to its 32 MiB maximum and its trim threshold
to 1 GiB (`mallopt`), so those blocks come from the heap and are reused: what preloading
tcmalloc or jemalloc does for PyTorch CPU training, without the preload. The price: up to
1 GiB of freed memory may stay mapped to the process instead of going back to the OS.

Only glibc has `mallopt`; elsewhere (macOS, musl) this does nothing and says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's upper limit on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX)
GLIBC_DEFAULT = 128 * 1024  # both thresholds' starting values


def _mallopt():
    """glibc's mallopt, or None when this C library has none."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):
        return None


def keep_freed_memory(enabled: bool = True, trim_threshold: int = 1 << 30) -> bool:
    """Serve large blocks from the heap and keep up to `trim_threshold` bytes of freed memory
    (`accel.keep_freed_memory`; when it is off, nothing calls this and glibc's adaptive defaults
    stay). enabled=False pins both thresholds at glibc's starting 128 KiB, for comparison.
    Returns whether the setting took effect."""
    mallopt = _mallopt()
    if mallopt is None:
        log.debug("no glibc mallopt here: freed CPU memory follows the C library's defaults")
        return False
    mmap_threshold = MMAP_THRESHOLD_MAX if enabled else GLIBC_DEFAULT
    trim = trim_threshold if enabled else GLIBC_DEFAULT
    return bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(M_TRIM_THRESHOLD, trim))
