"""Freed memory kept for the next call: compiled array code without page faults per call.

Generated array code allocates its temporaries (the forward values the reverse sweep
reads, the adjoints) on every call, through Numba's runtime and the C library's
`malloc`. glibc hands freed memory back to the kernel in two ways: a block of at least
M_MMAP_THRESHOLD (128 KiB to 32 MiB, adjusted as the program runs) is mapped for itself
and unmapped when freed, and free space at the top of the heap beyond M_TRIM_THRESHOLD
(a few MB) is trimmed. Either way the next call's first write to each page faults it in
again (~3 us per 4 KB page). On the ADBench GMM that is ~2,100 faults per call at
n = 1000, d = 2, K = 100 and ~87,500 at d = 64 (51 MB temporaries), a third to a half of
the call's time, while a hand-written loop that allocates nothing large has none.

`keep_freed_memory` sets, once per process (when jitad first compiles code):

* M_MMAP_MAX to 0: every block comes from the heap, whatever its size (M_MMAP_THRESHOLD
  cannot pass 32 MiB through `mallopt`, glibc's environment variables aside);
* M_TRIM_THRESHOLD to `KEEP_BYTES`: up to that much freed heap stays mapped for the next
  call (more is trimmed).

Process-wide, for the user's own arrays too: a large block freed below a live one stays
mapped (glibc reuses it for later blocks but does not return it), so the resident size
stays near the process's peak. Threads other than the main one allocate from arenas of
64 MiB heaps that glibc unmaps once empty: their calls still fault in blocks that fill a
heap of their own. Only on glibc; left alone where the user tuned malloc (`MALLOC_*_` or
`GLIBC_TUNABLES` in the environment) or set `JITAD_KEEP_FREED_MEMORY=0`.
"""
from __future__ import annotations

import ctypes
import os
import threading

KEEP_BYTES = 1024 * 2 ** 20         # freed heap kept mapped (M_TRIM_THRESHOLD)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4             # <malloc.h>
_USER_SETTINGS = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_",
                  "MALLOC_MMAP_MAX_", "GLIBC_TUNABLES")
_lock = threading.Lock()
applied: bool | None = None     # None: not tried yet; then whether the options were set


def keep_freed_memory() -> bool:
    """Set glibc's malloc options as described above (once); True if they are set."""
    global applied
    if applied is not None:
        return applied
    with _lock:
        if applied is None:
            applied = _set_options()
    return applied


def _set_options() -> bool:
    if os.environ.get("JITAD_KEEP_FREED_MEMORY", "1") == "0" or \
            any(name in os.environ for name in _USER_SETTINGS):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version                   # (glibc only)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):     # not glibc (macOS, Windows, musl)
        return False
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, KEEP_BYTES))
