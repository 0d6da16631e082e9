"""Bundle adjustment (ADBench's ba objective) with scipy's least_squares and a sparse
Jacobian from jitad.

Cameras have 11 parameters (Rodrigues rotation 3, center 3, focal length 1, principal
point 2, radial distortion 2), points 3; every observation i sees point obs[i, 1] from
camera obs[i, 0] at feats[i] with a weight w[i]. The residuals are w·(projection -
feature) per observation and 1 - w² per weight. Written vectorized, with gathers of
the camera and point of every observation.

    python examples/bundle_adjustment.py
"""
import time

import numpy as np
import scipy.optimize

import jitad


def rotate(rot, X):
    """Rodrigues rotation of each row of X by the axis-angle vector in the same row of rot
    (rotation angles are never zero here)."""
    theta = np.sqrt(np.sum(rot ** 2, axis=1, keepdims=True))
    axis = rot / theta
    cos, sin = np.cos(theta), np.sin(theta)
    dot = np.sum(axis * X, axis=1, keepdims=True)
    return X * cos + np.cross(axis, X) * sin + axis * dot * (1.0 - cos)


def project(cams, X):
    Xcam = rotate(cams[:, :3], X - cams[:, 3:6])
    p = Xcam[:, :2] / Xcam[:, 2:]
    rsq = np.sum(p ** 2, axis=1, keepdims=True)
    distortion = 1.0 + cams[:, 9:10] * rsq + cams[:, 10:11] * rsq ** 2
    return p * distortion * cams[:, 6:7] + cams[:, 7:9]


def ba_residuals(cams, X, w, obs, feats):
    """ADBench's residuals: the reprojection errors (2 per observation, flattened
    observation by observation), then the weight errors."""
    reprojection = (project(cams[obs[:, 0]], X[obs[:, 1]]) - feats) * w[:, None]
    return np.concatenate([reprojection.ravel(), 1.0 - w ** 2])


def ba_objective(cams, X, w, obs, feats):
    """Half the sum of squared residuals (the least-squares cost)."""
    return 0.5 * np.sum(ba_residuals(cams, X, w, obs, feats) ** 2)


def make_data(n_cams, n_points, n_obs, rng):
    """Deterministic ADBench-shaped data (ADBench's ba files hold one camera, point and
    feature repeated; here they vary): camera i % n_cams sees point i % n_points."""
    cams = np.empty((n_cams, 11))
    cams[:, :3] = rng.uniform(-0.2, 0.2, (n_cams, 3)) + 0.05
    cams[:, 3:6] = rng.uniform(-1.0, 1.0, (n_cams, 3))
    cams[:, 6] = rng.uniform(0.8, 1.2, n_cams)      # focal length, normalized coordinates
    cams[:, 7:9] = rng.uniform(-1.0, 1.0, (n_cams, 2))
    cams[:, 9:11] = rng.uniform(-0.1, 0.1, (n_cams, 2))
    X = rng.uniform(-1.0, 1.0, (n_points, 3))
    X[:, 2] += 10.0                                  # in front of every camera
    w = rng.uniform(0.8, 1.2, n_obs)
    obs = np.stack([np.arange(n_obs) % n_cams, np.arange(n_obs) % n_points], axis=1)
    feats = rng.uniform(-0.2, 0.2, (n_obs, 2))
    return cams, X, w, obs, feats


def packed_residuals(params, obs, feats, n_cams, n_points):
    """ba_residuals of all parameters packed in one vector (cameras, points, weights)."""
    cams = params[:11 * n_cams].reshape(n_cams, 11)
    X = params[11 * n_cams:11 * n_cams + 3 * n_points].reshape(n_points, 3)
    return ba_residuals(cams, X, params[11 * n_cams + 3 * n_points:], obs, feats)


jacobian = jitad.jacobian(packed_residuals, sparse=True)


def main():
    rng = np.random.default_rng(0)
    n_cams, n_points, n_obs = 5, 60, 240
    cams, X, w, obs, _ = make_data(n_cams, n_points, n_obs, rng)
    feats = project(cams[obs[:, 0]], X[obs[:, 1]]) + 0.1 * rng.standard_normal((n_obs, 2))
    truth = np.concatenate([cams.ravel(), X.ravel(), w])
    start = truth.copy()
    start[11 * n_cams:11 * n_cams + 3 * n_points] += 0.02 * rng.standard_normal(3 * n_points)
    args = (obs, feats, n_cams, n_points)
    t = time.perf_counter()
    J = jacobian(start, *args)
    print(f"sparse Jacobian {J.shape}, {J.nnz} nonzeros; first result (trace, pattern, "
          f"colouring, compile) in {time.perf_counter() - t:.1f} s")
    result = scipy.optimize.least_squares(packed_residuals, start, jac=jacobian, args=args,
                                          method="trf", tr_solver="lsmr", x_scale="jac")
    print(f"least_squares: cost {0.5 * np.sum(packed_residuals(start, *args) ** 2):.3g} -> "
          f"{result.cost:.3g} after {result.nfev} evaluations, {result.njev} Jacobians")
    return result


if __name__ == "__main__":
    main()
