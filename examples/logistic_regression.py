"""Train L2-regularized logistic regression on 100,000 x 50 synthetic data with SciPy.

The data arrays are ordinary (non-differentiated) runtime arguments: new data never
recompiles, and a different number of rows reuses the same compiled code.
"""
import time

import numpy as np
from scipy.optimize import minimize

import jitad


@jitad.jit_grad
def logreg(w, X, y, lam):
    z = X @ w
    return np.mean(np.logaddexp(0.0, -y * z)) + 0.5 * lam * np.dot(w, w)


def make_data(rows, features, rng):
    X = rng.standard_normal((rows, features))
    w_true = rng.standard_normal(features)
    y = np.where(X @ w_true + 0.5 * rng.standard_normal(rows) > 0, 1.0, -1.0)
    return X, y


def main(rows=100_000, features=50):
    rng = np.random.default_rng(0)
    X, y = make_data(rows, features, rng)
    w0 = np.zeros(features)
    lam = 1e-3
    start = time.perf_counter()
    logreg.value_and_grad(w0, X, y, lam)
    print(f"first call (trace + compile): {time.perf_counter() - start:.2f} s")
    start = time.perf_counter()
    result = minimize(logreg.value_and_grad, w0, args=(X, y, lam), jac=True, method="L-BFGS-B")
    elapsed = time.perf_counter() - start
    accuracy = np.mean(np.sign(X @ result.x) == y)
    print(f"L-BFGS-B: loss {result.fun:.4f}, {result.nit} iterations, {result.nfev} gradient "
          f"calls, {elapsed / result.nfev * 1e3:.2f} ms per value-and-gradient")
    print(f"training accuracy: {accuracy:.3f}")
    X_small, y_small = make_data(1000, features, rng)
    logreg.value_and_grad(result.x, X_small, y_small, lam)
    print(f"traces so far: {logreg.trace_count} (1000 rows reused the 100,000-row compile)")


if __name__ == "__main__":
    main()
