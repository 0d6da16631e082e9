"""Freed memory kept for the next call: compiled array code without page faults per call.

Generated array code allocates its temporaries (the forward values the reverse sweep
reads, the adjoints) on every call, through Numba's runtime and the C library's
`malloc`. glibc hands a freed region back to the kernel once the free space at the top
of its heap passes a threshold (M_TRIM_THRESHOLD, by default twice the largest block
it has mapped, a few MB), and the next call's first write to each of its pages faults
it in again. On the ADBench GMM (n = 1000, K = 100) that is ~2,100 faults per call,
about half of the call's time, while a hand-written loop that allocates nothing large
has none.

`keep_freed_memory` raises both thresholds once per process (when jitad first compiles
code): blocks up to 32 MiB (glibc's largest mmap threshold) come from the heap, and up to
`KEEP_BYTES` of freed heap stay mapped for the next call. Blocks above 32 MiB are still
mapped per call. Only on glibc; left alone where the user tuned malloc (`MALLOC_*_`
or `GLIBC_TUNABLES` in the environment) or set `JITAD_KEEP_FREED_MEMORY=0`.
"""
from __future__ import annotations

import ctypes
import os
import threading

MMAP_THRESHOLD = 32 * 2 ** 20       # glibc's maximum for M_MMAP_THRESHOLD on 64-bit
KEEP_BYTES = 1024 * 2 ** 20         # freed heap kept mapped (M_TRIM_THRESHOLD)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3      # <malloc.h>
_USER_SETTINGS = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_",
                  "MALLOC_MMAP_MAX_", "GLIBC_TUNABLES")
_lock = threading.Lock()
applied: bool | None = None     # None: not tried yet; then whether the thresholds were set


def keep_freed_memory() -> bool:
    """Set glibc's malloc thresholds as described above (once); True if they are set."""
    global applied
    if applied is not None:
        return applied
    with _lock:
        if applied is None:
            applied = _set_thresholds()
    return applied


def _set_thresholds() -> bool:
    if os.environ.get("JITAD_KEEP_FREED_MEMORY", "1") == "0" or \
            any(name in os.environ for name in _USER_SETTINGS):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version                   # (glibc only)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):     # not glibc (macOS, Windows, musl)
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and \
        bool(mallopt(_M_TRIM_THRESHOLD, KEEP_BYTES))
