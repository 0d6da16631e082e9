"""Benchmark cases as data: user function, argnums, inputs and reference.

The user functions are plain Python / NumPy / ``math`` written the way a jitad
user writes them; nothing here imports jitad. ``make_args(size, rng)`` returns
the argument tuple; arguments outside ``argnums`` are runtime data.
"""

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import adbench
import reference
import synthetic

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
import bundle_adjustment  # noqa: E402  (the ADBench workloads' user functions)
import gmm  # noqa: E402
import lstm  # noqa: E402


@dataclass(frozen=True)
class Case:
    """One benchmark problem, measured at each of its sizes."""

    name: str
    argnums: int | tuple[int, ...]
    sizes: tuple[Any, ...]
    quick_sizes: tuple[Any, ...]
    make_args: Callable[[Any, np.random.Generator], tuple]
    fun: Callable | None = None         # the user function, for every size
    reference: Callable | None = None   # its hand-written value-and-grad
    generate: Callable | None = None    # size -> (fun, reference) instead
    size_label: Callable[[Any], str] = str
    derivative: str = "value_and_grad"  # or "jvp" / "hvp" / "hessian": the object measured

    def functions(self, size):
        """``(user function, hand-written value-and-grad)`` for ``size``."""
        if self.generate is not None:
            return self.generate(size)
        return self.fun, self.reference


# --- user functions --------------------------------------------------------

def seed(x1, x2):
    return math.log(x1) + x1 * x2 - math.sin(x2)


def rosen_loop(x):
    s = 0.0
    for i in range(len(x) - 1):
        s += 100.0 * (x[i + 1] - x[i] ** 2) ** 2 + (1.0 - x[i]) ** 2
    return s


def rosen_vec(x):
    return np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def logreg(w, X, y, lam):
    z = X @ w
    return np.mean(np.logaddexp(0.0, -y * z)) + 0.5 * lam * np.dot(w, w)


def mlp(W1, b1, W2, b2, X, Y):
    H = np.tanh(X @ W1 + b1)
    P = H @ W2 + b2
    return np.mean((P - Y) ** 2)


def lotka_volterra(a, b, c, d, x, y):
    return a * x - b * x * y, d * x * y - c * y


def lotka_volterra_rk4(p, state0, dt, target):
    a, b, c, d = p[0], p[1], p[2], p[3]
    x, y = state0[0], state0[1]
    for _ in range(reference.LV_STEPS):
        k1x, k1y = lotka_volterra(a, b, c, d, x, y)
        k2x, k2y = lotka_volterra(a, b, c, d, x + 0.5 * dt * k1x, y + 0.5 * dt * k1y)
        k3x, k3y = lotka_volterra(a, b, c, d, x + 0.5 * dt * k2x, y + 0.5 * dt * k2y)
        k4x, k4y = lotka_volterra(a, b, c, d, x + dt * k3x, y + dt * k3y)
        x = x + dt / 6.0 * (k1x + 2.0 * k2x + 2.0 * k3x + k4x)
        y = y + dt / 6.0 * (k1y + 2.0 * k2y + 2.0 * k3y + k4y)
    return (x - target[0]) ** 2 + (y - target[1]) ** 2


# --- inputs ----------------------------------------------------------------

def fill_loop(p, t, y):
    """Residuals of an exponential decay fit, built in place element by element."""
    r = np.zeros(len(t))
    for i in range(len(t)):
        r[i] = p[0] * np.exp(-p[1] * t[i]) - y[i]
    return 0.5 * np.sum(r ** 2)


def seed_args(size, rng):
    return 2.0, 5.0


def rosen_args(n, rng):
    return (rng.uniform(-1.2, 1.2, n),)


def rosen_hvp_args(n, rng):
    return rng.uniform(-1.2, 1.2, n), rng.standard_normal(n)


def seed_vec(x):
    return math.log(x[0]) + x[0] * x[1] - math.sin(x[1])


def seed_vec_args(size, rng):
    return (np.array([2.0, 5.0]),)


def logreg_args(shape, rng):
    n, d = shape
    X = rng.standard_normal((n, d))
    labels = X @ rng.standard_normal(d) + 0.5 * rng.standard_normal(n)
    y = np.where(labels > 0.0, 1.0, -1.0)
    w = 0.1 * rng.standard_normal(d)
    return w, X, y, 0.1


def mlp_args(batch, rng, n_in=32, n_hidden=64, n_out=8):
    W1 = rng.standard_normal((n_in, n_hidden)) / math.sqrt(n_in)
    b1 = 0.1 * rng.standard_normal(n_hidden)
    W2 = rng.standard_normal((n_hidden, n_out)) / math.sqrt(n_hidden)
    b2 = 0.1 * rng.standard_normal(n_out)
    X = rng.standard_normal((batch, n_in))
    Y = rng.standard_normal((batch, n_out))
    return W1, b1, W2, b2, X, Y


def lotka_volterra_args(steps, rng):  # steps is fixed: reference.LV_STEPS
    p = np.array([1.5, 1.0, 3.0, 1.0]) * (1.0 + 0.05 * rng.standard_normal(4))
    state0 = np.array([10.0, 5.0])
    target = np.array([2.0, 4.0])
    return p, state0, 0.005, target


def synthetic_args(n_ops, rng):
    return (rng.uniform(-1.0, 1.0, synthetic.N_INPUTS),)


def synthetic_functions(n_ops):
    return synthetic.user_function(n_ops), synthetic.reference_function(n_ops)


def fill_loop_args(n, rng):
    t = np.linspace(0.0, 5.0, n)
    return np.array([1.5, 0.5]), t, 2.0 * np.exp(-0.7 * t) + 0.05 * rng.standard_normal(n)


def gmm_args(size, rng):
    return gmm.make_data(*size, rng)


def lstm_args(steps, rng):
    return lstm.make_data(2, 14, steps + 1, rng)


def ba_args(size, rng):
    return bundle_adjustment.make_data(*size, rng)


def ba_packed_args(size, rng):
    cams, X, w, obs, feats = bundle_adjustment.make_data(*size, rng)
    return np.concatenate([cams.ravel(), X.ravel(), w]), obs, feats, len(cams), len(X)


GMM_SIZES = tuple((1000, d, K) for d in (2, 10, 20, 64) for K in (5, 25, 50, 100))
BA1 = (49, 7776, 31843)         # ADBench ba1: cameras, points, observations


def _gmm_label(size):
    return "n={} d={} K={}".format(*size)


def _ba_label(size):
    return "{} cams, {} points, {} obs".format(*size)


def _shape_label(shape):
    return "×".join(map(str, shape))


CASES = {case.name: case for case in [
    # name, argnums, sizes, quick sizes, make_args, user function, reference
    Case("seed", (0, 1), (None,), (None,), seed_args, seed, reference.seed,
         size_label=lambda size: "(2.0, 5.0)"),
    Case("rosen_loop", 0, (10, 100, 1000), (10, 100), rosen_args,
         rosen_loop, reference.rosen, size_label=lambda n: f"n={n:,}"),
    # a long loop: the first result should cost about one run of the user's Python
    Case("rosen_loop_long", 0, (5000,), (5000,), rosen_args, rosen_loop, reference.rosen,
         size_label=lambda n: f"n={n:,}"),
    Case("rosen_vec", 0, (100, 10_000, 1_000_000), (100, 10_000, 1_000_000),
         rosen_args, rosen_vec, reference.rosen, size_label=lambda n: f"n={n:,}"),
    Case("logreg", 0, ((1000, 20), (100_000, 50)), ((1000, 20), (100_000, 50)),
         logreg_args, logreg, reference.logreg, size_label=_shape_label),
    Case("mlp", (0, 1, 2, 3), (256,), (256,), mlp_args, mlp, reference.mlp,
         size_label=lambda batch: f"batch {batch}"),
    Case("lotka_volterra_rk4", 0, (reference.LV_STEPS,), (reference.LV_STEPS,),
         lotka_volterra_args, lotka_volterra_rk4, reference.lotka_volterra_rk4,
         size_label=lambda steps: f"{steps} steps"),
    Case("synthetic", 0, (1000, 10_000, 100_000), (1000,),
         synthetic_args, generate=synthetic_functions,
         size_label=lambda n: f"{n} ops"),
    # forward mode; second derivatives: Hessian-vector products and dense Hessians
    Case("rosen_vec_jvp", 0, (10_000, 1_000_000), (10_000,), rosen_hvp_args, rosen_vec,
         reference.rosen_jvp, size_label=lambda n: f"n={n:,}", derivative="jvp"),
    Case("rosen_loop_hvp", 0, (100, 1000), (1000,), rosen_hvp_args, rosen_loop,
         reference.rosen_hvp, size_label=lambda n: f"n={n:,}", derivative="hvp"),
    Case("rosen_vec_hvp", 0, (10_000, 1_000_000), (10_000,), rosen_hvp_args, rosen_vec,
         reference.rosen_hvp, size_label=lambda n: f"n={n:,}", derivative="hvp"),
    Case("seed_hessian", 0, (None,), (None,), seed_vec_args, seed_vec,
         reference.seed_hessian, size_label=lambda size: "x=(2.0, 5.0)", derivative="hessian"),
    Case("rosen_loop_hessian", 0, (100, 1000), (1000,), rosen_args, rosen_loop,
         reference.rosen_hessian, size_label=lambda n: f"n={n:,}", derivative="hessian"),
    # an array made in the function and filled in place, one element per iteration
    Case("fill_loop", 0, (10_000,), (1_000,), fill_loop_args, fill_loop, reference.fill_loop,
         size_label=lambda n: f"{n:,} iterations"),
    # the ADBench workloads (examples/), against benchmarks/adbench.py
    Case("gmm", (0, 1, 2), GMM_SIZES, ((1000, 2, 5),), gmm_args, gmm.gmm_objective,
         adbench.gmm, size_label=_gmm_label),
    Case("gmm_loop", (0, 1, 2), ((1000, 2, 5), (1000, 10, 25), (1000, 64, 100)),
         ((1000, 2, 5),), gmm_args, gmm.gmm_objective_loop, adbench.gmm,
         size_label=_gmm_label),
    Case("lstm", (0, 1), (1023,), (10,), lstm_args, lstm.lstm_objective, adbench.lstm,
         size_label=lambda steps: f"2 layers, b=14, {steps} steps"),
    Case("ba", (0, 1, 2), (BA1,), ((5, 60, 240),), ba_args, bundle_adjustment.ba_objective,
         adbench.ba, size_label=_ba_label),
    Case("ba_sparse_jacobian", 0, (BA1,), ((5, 60, 240),), ba_packed_args,
         bundle_adjustment.packed_residuals, adbench.ba_sparse_jacobian,
         size_label=_ba_label, derivative="sparse_jacobian"),
]}
