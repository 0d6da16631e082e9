"""Tiered execution on the long-trace graph: first result, per call on each tier, and when
the specialized code takes over, against the generic Numba interpreter (long_graph.py).

    python benchmarks/tiers.py 1000 [10000 ...]

Each size runs in a fresh process (warm Numba and jitad caches for the interpreter and
the tape kernel, none for the specialized code: the store and Numba's cache of generated
code are in a fresh directory). Per-call figures are the best of several rounds,
interleaved with the interpreter's.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

ROUNDS, CALLS = 5, 20


def best_per_call(fun, x, calls=CALLS):
    start = time.perf_counter()
    for _ in range(calls):
        fun(x)
    return (time.perf_counter() - start) / calls


def measure(n_ops: int, wait_s: float) -> dict:
    import numpy as np

    import jitad
    from long_graph import interpreter, loss, make_args

    x, = make_args(n_ops, np.random.default_rng(0))
    start = time.perf_counter()
    reference = interpreter(n_ops)
    expected = reference(x)
    interpreter_first = time.perf_counter() - start

    f = jitad.jit_grad(loss(n_ops))
    start = time.perf_counter()
    value, grad = f.value_and_grad(x)
    first = time.perf_counter() - start
    row = f.stats()[0]
    during = [best_per_call(f.value_and_grad, x) for _ in range(ROUNDS)] \
        if row["tier"] == "tape" else [None]
    start = time.perf_counter()
    switched = f.wait(wait_s)
    waited = time.perf_counter() - start
    interp, spec = [], []
    for _ in range(ROUNDS):            # interleaved, best of ROUNDS
        interp.append(best_per_call(reference, x))
        spec.append(best_per_call(f.value_and_grad, x))
    value2, grad2 = f.value_and_grad(x)
    row = f.stats()[0]
    tape_alone = jitad.jit_grad(loss(n_ops), code_shape="tape")
    tape_alone.value_and_grad(x)
    tape_calls = min(best_per_call(tape_alone.value_and_grad, x) for _ in range(ROUNDS))
    return {"ops": n_ops, "interpreter_first_s": interpreter_first, "first_s": first,
            "tape_per_call_during_compile_s": min(during),    # best round; mean: the
            "tape_mean_per_call_during_compile_s":            # GIL is shared with the
                None if None in during else sum(during) / len(during),   # background
            "tape_per_call_s": tape_calls, "waited_for_specialized_s": waited,
            "switched": switched, "per_call_s": min(spec), "interpreter_per_call_s": min(interp),
            "tiers_bitwise_equal": bool(value == value2 and (grad == grad2).all()),
            "max_abs_error_vs_interpreter": float(abs(grad - expected[1]).max()), "stats": row}


def main(sizes):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    if os.environ.get("_JITAD_TIERS_CHILD"):
        print(json.dumps(measure(int(sizes[0]), float(os.environ["_JITAD_TIERS_WAIT"]))))
        return
    for n in sizes:
        env = dict(os.environ, _JITAD_TIERS_CHILD="1", _JITAD_TIERS_WAIT="300",
                   JITAD_CACHE_DIR=tempfile.mkdtemp(prefix="jitad-tiers-"))
        # warm Numba's cache of the interpreter and the tape kernel in that directory first
        subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, 'benchmarks');"
                        "import numpy as np, jitad, long_graph as g; x = np.ones(100);"
                        "g.interpreter(8)(x); jitad.jit_grad(g.loss(8), code_shape='tape')(x)"],
                       env=env, check=True)
        out = subprocess.run([sys.executable, __file__, str(n)], env=env, check=True,
                             capture_output=True, text=True).stdout
        print(out.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or ["1000", "10000"])
