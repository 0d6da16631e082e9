"""Constrained optimization with trust-constr and sparse Hessians of the Lagrangian.

Minimize the chained Rosenbrock function subject to x[i]^2 + x[i+1]^2 <= 1.5 for every i.
The objective's Hessian and the constraints' weighted Hessian (sum of v[i] times the
Hessian of constraint i) are tridiagonal: jitad computes each with three Hessian-vector
products, and the constraints' Jacobian (bidiagonal) with two Jacobian-vector products.
"""
import time

import numpy as np
from scipy.optimize import NonlinearConstraint, minimize

import jitad


def rosen(x):
    return np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def constraints(x):
    return x[:-1] ** 2 + x[1:] ** 2


def weighted_constraints(x, v):
    return np.dot(v, constraints(x))


objective = jitad.jit_grad(rosen)
hessian = jitad.hessian(rosen, sparse=True)
constraints_jacobian = jitad.jacobian(constraints, sparse=True)
constraints_hessian = jitad.hessian(weighted_constraints, sparse=True)


def main(n=200):
    x0 = np.full(n, 0.5)
    bound = NonlinearConstraint(constraints, -np.inf, 1.5, jac=constraints_jacobian,
                                hess=constraints_hessian)
    t = time.perf_counter()
    result = minimize(objective.value_and_grad, x0, jac=True, hess=hessian, method="trust-constr",
                      constraints=[bound], options={"maxiter": 500})
    worst = constraints(result.x).max()
    print(f"trust-constr, n = {n}: f = {result.fun:.6g}, max constraint {worst:.6f} (<= 1.5), "
          f"{result.nit} iterations, {time.perf_counter() - t:.2f} s ({result.message})")
    return result


if __name__ == "__main__":
    main()
