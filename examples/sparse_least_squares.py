"""Bundle-adjustment-like least squares with a sparse Jacobian (scipy.optimize.least_squares).

Planar "cameras" (an angle and a translation each) observe planar points; each residual
touches one camera and one point, so the Jacobian has 4 nonzeros per row. jitad finds that
pattern on the traced list, cuts the list at the gathers of each residual's camera and
point, colours the rows of what is left (rows of one colour share no gathered element) and
evaluates the Jacobian with one reverse-mode product per colour: a handful (here 2),
whatever the number of cameras and points.
"""
import time

import numpy as np
from scipy.optimize import least_squares

import jitad


def residuals(params, cam_idx, pt_idx, observed, n_cams):
    cams = params[:3 * n_cams].reshape((n_cams, 3))         # angle, tx, ty
    points = params[3 * n_cams:].reshape((-1, 2))
    c = cams[cam_idx]
    p = points[pt_idx]
    cos, sin = np.cos(c[:, 0]), np.sin(c[:, 0])
    u = cos * p[:, 0] - sin * p[:, 1] + c[:, 1] - observed[:, 0]
    v = sin * p[:, 0] + cos * p[:, 1] + c[:, 2] - observed[:, 1]
    return np.concatenate((u, v))


jacobian = jitad.jacobian(residuals, sparse=True)


def problem(n_cams=20, n_points=300, n_obs=2000, seed=0):
    rng = np.random.default_rng(seed)
    cam_idx = rng.integers(0, n_cams, n_obs)
    pt_idx = rng.integers(0, n_points, n_obs)
    truth = np.concatenate((rng.uniform(-0.5, 0.5, 3 * n_cams), rng.uniform(-5, 5, 2 * n_points)))
    observed = residuals(truth, cam_idx, pt_idx, np.zeros((n_obs, 2)), n_cams)
    observed = observed.reshape((2, n_obs)).T + 0.01 * rng.standard_normal((n_obs, 2))
    start = truth + 0.1 * rng.standard_normal(truth.size)
    return start, (cam_idx, pt_idx, observed, n_cams)


def main():
    x0, args = problem()
    t = time.perf_counter()
    j = jacobian(x0, *args)
    rows, cols, colours = jacobian.plan(x0, *args)
    print(f"Jacobian {j.shape}, {j.nnz} nonzeros, {colours.max() + 1} colours; first call "
          f"(trace, pattern, colouring, compile) {time.perf_counter() - t:.2f} s")
    t = time.perf_counter()
    result = least_squares(residuals, x0, jac=jacobian, args=args, method="trf",
                           tr_solver="lsmr", x_scale="jac")
    print(f"least_squares: cost {result.cost:.4g} after {result.nfev} evaluations and "
          f"{result.njev} Jacobians, {time.perf_counter() - t:.2f} s ({result.message})")
    return result


if __name__ == "__main__":
    main()
