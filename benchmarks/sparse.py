"""Sparse Hessian of the chained Rosenbrock function: jitad vs n dense HVPs vs hand Numba.

    python benchmarks/sparse.py [--sizes 10000 100000] [--repeat 20]

For each n: the number of star colours, jitad's first call (trace, pattern, colouring,
compile), its time per call, the time of one Hessian-vector product (the same compiled
kernel, one seed) times n (the cost of a dense Hessian by HVPs), and a hand-written Numba
assembly of the tridiagonal Hessian into CSR as the reference.
"""
import argparse
import sys
import time
from pathlib import Path

import numba
import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's jitad

import jitad.sparse  # noqa: E402


def rosen(x):
    return np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


@numba.njit(cache=True)
def _rosen_hessian_data(x):
    """CSR arrays of the tridiagonal Hessian, by hand."""
    n = x.size
    indptr = np.empty(n + 1, np.int64)
    indices = np.empty(3 * n - 2, np.int64)
    data = np.empty(3 * n - 2)
    k = 0
    for i in range(n):
        indptr[i] = k
        diag = 0.0
        if i < n - 1:
            diag += 1200.0 * x[i] ** 2 - 400.0 * x[i + 1] + 2.0
        if i > 0:
            diag += 200.0
            indices[k] = i - 1
            data[k] = -400.0 * x[i - 1]
            k += 1
        indices[k] = i
        data[k] = diag
        k += 1
        if i < n - 1:
            indices[k] = i + 1
            data[k] = -400.0 * x[i]
            k += 1
    indptr[n] = k
    return data, indices, indptr


def reference(x):
    data, indices, indptr = _rosen_hessian_data(x)
    return sp.csr_matrix((data, indices, indptr), shape=(x.size, x.size))


def per_call(fn, repeat):
    fn()
    best = np.inf
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeat):
            fn()
        best = min(best, (time.perf_counter() - start) / repeat)
    return best


def measure(n, repeat):
    x = np.random.default_rng(0).uniform(-1.0, 1.0, n)
    h = jitad.sparse.sparse_hessian(rosen)
    start = time.perf_counter()
    first = h(x)
    first_call = time.perf_counter() - start
    want = reference(x)
    assert abs(first - want).max() <= 1e-9 * abs(want).max(), "sparse Hessian is wrong"
    _, _, colours = h.plan(x)
    variant = next(iter(h._variants.values()))
    kernel = variant.kernels["sparse_hessian"]
    v = np.random.default_rng(1).standard_normal(n)
    hvp = per_call(lambda: kernel(x, v), repeat)
    sparse_call = per_call(lambda: h(x), repeat)
    hand = per_call(lambda: reference(x), repeat)
    return {"n": n, "colours": int(colours.max()) + 1, "first call s": first_call,
            "per call ms": 1e3 * sparse_call, "one HVP ms": 1e3 * hvp,
            "n HVPs s": n * hvp, "hand Numba ms": 1e3 * hand,
            "vs n HVPs": n * hvp / sparse_call, "vs hand": sparse_call / hand}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    rows = [measure(n, args.repeat) for n in args.sizes]
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(f"{row[k]:.3g}" if isinstance(row[k], float) else str(row[k])
                                for k in keys) + " |")


if __name__ == "__main__":
    main()
