"""Minimize the 100-dimensional Rosenbrock function, written as a Python loop, with SciPy.

`f.value_and_grad` returns `(value, gradient)`, which is SciPy's `jac=True` convention.
"""
import time

import numpy as np
from scipy.optimize import minimize

import jitad


@jitad.jit_grad
def rosenbrock(x):
    total = 0.0
    for i in range(len(x) - 1):
        total = total + 100.0 * (x[i + 1] - x[i] ** 2) ** 2 + (1.0 - x[i]) ** 2
    return total


def main(n=100):
    x0 = np.full(n, -1.0)
    x0[::2] = 1.2
    start = time.perf_counter()
    rosenbrock.value_and_grad(x0)
    print(f"first call (trace + compile), n = {n}: {time.perf_counter() - start:.2f} s")
    start = time.perf_counter()
    result = minimize(rosenbrock.value_and_grad, x0, jac=True, method="L-BFGS-B",
                      options={"maxiter": 5000})
    elapsed = time.perf_counter() - start
    print(f"L-BFGS-B: {result.message}")
    print(f"  f = {result.fun:.3e} after {result.nit} iterations, {result.nfev} gradient calls "
          f"in {elapsed * 1e3:.1f} ms")
    print(f"  max |x - 1| = {np.max(np.abs(result.x - 1.0)):.2e}")


if __name__ == "__main__":
    main()
