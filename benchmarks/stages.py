"""Where a first call's seconds go: tracing, list transformations, printing, Numba.

    python benchmarks/stages.py gmm 1000 10 25      # case and size (see SIZES below)

Times the first `value_and_grad` call of a workload in this (fresh) process with tiers off
(the specialized code's first call: with tiers, the NumPy tier answers at once while this
compile runs in the background), split into stages by wrapping jitad's pipeline functions; Numba's time is split further by compiler
pass (Numba's `numba:run_pass` events: type inference, lowering, which includes LLVM).
Prints one line per stage, the list lengths and the generated source's length.
"""
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "examples"), str(ROOT / "benchmarks")]

import numba.core.event  # noqa: E402
import numpy as np  # noqa: E402

import jitad  # noqa: E402
from jitad import api, codegen, compile as compiler  # noqa: E402

seconds = defaultdict(float)
facts = {}


def timed(owner, name, stage, note=None):
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            result = original(*args, **kwargs)
        finally:
            seconds[stage] += time.perf_counter() - start
        if note:
            note(args, result)
        return result

    setattr(owner, name, wrapper)


def _note_simplified(args, result):
    facts.setdefault("entries", []).append(len(result.entries))


def _note_source(args, result):
    facts["source lines"] = result.count("\n")
    facts["code shape"] = args[3] if len(args) > 3 else "auto"


def install():
    timed(api.JitGrad, "_trace", "trace")
    timed(api, "simplify", "simplify", _note_simplified)
    timed(api, "value_and_grad", "reverse mode")
    timed(codegen, "choose_shape", "choose shape (re-rolling)")
    timed(codegen, "generate", "print source", _note_source)
    timed(compiler, "_compiled", "Numba (all)")


class PassTimes(numba.core.event.Listener):
    """Seconds per Numba compiler pass (nested compilations count in their own passes
    and again in the enclosing pass)."""

    def __init__(self):
        self.seconds, self.started = defaultdict(float), []

    def on_start(self, event):
        self.started.append(time.perf_counter())

    def on_end(self, event):
        self.seconds[event.data["name"]] += time.perf_counter() - self.started.pop()


def workload(case, size):
    """(user function, argnums, args) of a workload at `size`."""
    rng = np.random.default_rng(0)
    if case in ("gmm", "gmm_loop"):
        import gmm
        fun = gmm.gmm_objective if case == "gmm" else gmm.gmm_objective_loop
        return fun, (0, 1, 2), gmm.make_data(*size, rng)
    if case == "lstm":
        import lstm
        return lstm.lstm_objective, (0, 1), lstm.make_data(2, 14, size, rng)
    import bundle_adjustment
    return bundle_adjustment.ba_objective, (0, 1, 2), bundle_adjustment.make_data(*size, rng)


def main(argv):
    import os
    os.environ.setdefault("JITAD_CACHE_DIR", tempfile.mkdtemp())
    case, size = argv[0], tuple(int(a) for a in argv[1:])
    fun, argnums, args = workload(case, size if len(size) > 1 else size[0])
    install()
    passes = PassTimes()
    start = time.perf_counter()
    with numba.core.event.install_listener("numba:run_pass", passes):
        jitad.jit_grad(fun, argnums=argnums, tiers=False).value_and_grad(*args)
    total = time.perf_counter() - start
    print(f"{case} {size}: first result {total:.2f} s")
    for stage, value in seconds.items():
        print(f"  {stage:32s} {value:7.2f} s")
    for name, value in sorted(passes.seconds.items(), key=lambda item: -item[1])[:4]:
        print(f"    Numba pass {name:24s} {value:7.2f} s")
    print(f"  lists (simplified): {facts.get('entries')} entries; "
          f"source {facts.get('source lines')} lines")


if __name__ == "__main__":
    main(sys.argv[1:])
