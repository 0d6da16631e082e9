"""Newton's method with a trust region on the 10,000-dimensional Rosenbrock function.

SciPy's `trust-ncg` needs Hessian-vector products: `rosenbrock.hessp` computes H p by
forward mode over the reverse-mode list (the Hessian is never formed), compiled like the
gradient. `jac=True` takes `(value, gradient)` from `rosenbrock.value_and_grad`.
"""
import time

import numpy as np
from scipy.optimize import minimize

import jitad


@jitad.jit_grad
def rosenbrock(x):
    return np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def main(n=10_000):
    # From the classic start (-1.2, 1, -1.2, ...) every method here needs about 4n
    # iterations (the coupling moves the solution one coordinate per step); from 0.5, ~70.
    x0 = np.full(n, 0.5)
    start = time.perf_counter()
    rosenbrock.value_and_grad(x0)
    rosenbrock.hessp(x0, x0)
    print(f"first calls (trace + compile), n = {n:,}: {time.perf_counter() - start:.2f} s")
    start = time.perf_counter()
    result = minimize(rosenbrock.value_and_grad, x0, jac=True, hessp=rosenbrock.hessp,
                      method="trust-ncg", options={"gtol": 1e-8})
    elapsed = time.perf_counter() - start
    print(f"trust-ncg: {result.message}")
    print(f"  f = {result.fun:.3e} after {result.nit} iterations, {result.nfev} gradient and "
          f"{result.nhev} Hessian-vector calls in {elapsed:.2f} s")
    print(f"  max |x - 1| = {np.max(np.abs(result.x - 1.0)):.2e}")
    return result


if __name__ == "__main__":
    main()
