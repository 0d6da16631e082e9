"""Python's cyclic garbage collector, paused while a stage builds or rewrites a long list.

Tracing, the list transformations and the tape encoding create a few objects per entry
(values, entries, tuples) that form no reference cycles, so the collector's passes over
them find nothing (on 100,000-op traces they grow quadratic; on the 5,000-iteration
Rosenbrock loop, 45,000 traced entries and 120,000 differentiated, they took about a sixth
of the first result). Within `pause()` (or a stage decorated with `paused`) the collector
is off; it is turned back on when the last pause (of any thread) ends, unless it was off
before (the user's choice is kept). An explicit `gc.collect()` still collects.
"""
from __future__ import annotations

import contextlib
import functools
import gc
import os
import threading

_LOCK = threading.Lock()
_depth = 0
_resume = False


@contextlib.contextmanager
def pause():
    """The collector off while the block runs (see the module)."""
    global _depth, _resume
    with _LOCK:
        if _depth == 0:
            _resume = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _LOCK:
            _depth -= 1
            if _depth == 0 and _resume:
                gc.enable()


def paused(stage):
    """`stage` run within `pause()`."""
    @functools.wraps(stage)
    def run(*args, **kwargs):
        with pause():
            return stage(*args, **kwargs)
    return run


def _after_fork_in_child() -> None:
    """A child has only the forking thread: pauses of other threads never end there."""
    global _depth, _LOCK
    _LOCK = threading.Lock()
    if _depth and _resume:
        gc.enable()
    _depth = 0


os.register_at_fork(after_in_child=_after_fork_in_child)
