"""The ADBench workloads of examples/ (GMM, LSTM, bundle adjustment) at small sizes.

Each is checked three ways, all without compiling jitad's output (plain-Python runs of
the generated source): jitad's gradient against central differences and forward mode
(`check_grads_python`), against the hand-written gradient of benchmarks/adbench.py, and
that hand-written gradient itself against central differences (so neither is trusted
alone).
"""
import sys
from pathlib import Path

import numpy as np
import pytest

from jitad.compile import load_python

from conftest import check_grads_python, numeric_grad, python_value_and_grad, traced

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "examples"), str(ROOT / "benchmarks")]

import adbench  # noqa: E402
import bundle_adjustment  # noqa: E402
import gmm  # noqa: E402
import lstm  # noqa: E402


def hand(reference):
    """A hand-written gradient run as plain Python (its helpers stay compiled)."""
    return reference.py_func


def _close(got, want, rtol, what):
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol * np.abs(w).max(), err_msg=what)


GMM_ARGS = gmm.make_data(12, 3, 4, np.random.default_rng(1))
LSTM_ARGS = lstm.make_data(2, 4, 6, np.random.default_rng(2))
BA_ARGS = bundle_adjustment.make_data(3, 5, 12, np.random.default_rng(3))


def test_hand_written_gradients_match_central_differences():
    for fun, reference, args, wrt in [
            (gmm.gmm_objective, hand(adbench.gmm), GMM_ARGS, (0, 1, 2)),
            (lstm.lstm_objective, hand(adbench.lstm), LSTM_ARGS, (0, 1)),
            (bundle_adjustment.ba_objective, hand(adbench.ba), BA_ARGS, (0, 1, 2))]:
        value, grads = reference(*args)
        assert value == pytest.approx(fun(*args), rel=1e-12)
        _close(grads, numeric_grad(fun, list(args), wrt, 1e-6), 1e-6, fun.__name__)


def test_gmm_formulas():
    """The packed lower triangle is ADBench's column-by-column order; the prior's
    constant is scipy's multivariate log-gamma."""
    np.testing.assert_array_equal(gmm.packed_lower(3), [[0, 0, 0], [1, 0, 0], [2, 3, 0]])
    assert adbench._multigammaln(2.5, 3) == pytest.approx(
        __import__("scipy.special").special.multigammaln(2.5, 3), rel=1e-14)


@pytest.mark.parametrize("objective", [gmm.gmm_objective, gmm.gmm_objective_loop])
def test_gmm(objective):
    assert objective(*GMM_ARGS) == pytest.approx(gmm.gmm_objective(*GMM_ARGS), rel=1e-12)
    f = check_grads_python(objective, GMM_ARGS, argnums=(0, 1, 2))
    value, grads = python_value_and_grad(f, GMM_ARGS)
    want_value, want = hand(adbench.gmm)(*GMM_ARGS)
    assert value == pytest.approx(want_value, rel=1e-12)
    _close(grads, want, 1e-10, objective.__name__)


def test_lstm():
    f = check_grads_python(lstm.lstm_objective, LSTM_ARGS, argnums=(0, 1))
    value, grads = python_value_and_grad(f, LSTM_ARGS)
    want_value, want = hand(adbench.lstm)(*LSTM_ARGS)
    assert value == pytest.approx(want_value, rel=1e-12)
    _close(grads, want, 1e-10, "lstm")


def test_lstm_over_more_steps_is_the_same_loops_and_matches_the_hand_gradient():
    """The time loop re-rolls (a fusion group before a loop must not swallow its start):
    the source has the same length at 9 and 17 steps, and its gradient is the hand one."""
    sizes = []
    for steps in (9, 17):
        args = lstm.make_data(2, 4, steps, np.random.default_rng(steps))
        f = check_grads_python(lstm.lstm_objective, args, argnums=(0, 1))
        source = f.source(*args)
        assert source.count("# loop:") == 2
        sizes.append(len(source.splitlines()))
        value, grads = python_value_and_grad(f, args)
        want_value, want = hand(adbench.lstm)(*args)
        assert value == pytest.approx(want_value, rel=1e-12)
        _close(grads, want, 1e-10, "lstm")
    assert sizes[0] == sizes[1]


def test_bundle_adjustment_gradient():
    f = check_grads_python(bundle_adjustment.ba_objective, BA_ARGS, argnums=(0, 1, 2))
    value, grads = python_value_and_grad(f, BA_ARGS)
    want_value, want = hand(adbench.ba)(*BA_ARGS)
    assert value == pytest.approx(want_value, rel=1e-12)
    _close(grads, want, 1e-10, "bundle adjustment")


def hand_written_jacobian(cams, X, w, obs, feats):
    """The dense Jacobian of `packed_residuals` from adbench.ba_jacobian's blocks."""
    blocks, weight_diagonal = hand(adbench.ba_jacobian)(cams, X, w, obs, feats)
    n_cams, n_points, p = len(cams), len(X), len(w)
    J = np.zeros((3 * p, 11 * n_cams + 3 * n_points + p))
    for i, (c, q) in enumerate(obs):
        columns = np.r_[11 * c:11 * c + 11, 11 * n_cams + 3 * q:11 * n_cams + 3 * q + 3,
                        11 * n_cams + 3 * n_points + i]
        J[2 * i:2 * i + 2, columns] = blocks[2 * i:2 * i + 2]
        J[2 * p + i, columns[-1]] = weight_diagonal[i]
    return J


def test_bundle_adjustment_sparse_jacobian():
    """jitad's sparse Jacobian (its colouring and products, run as plain Python) equals
    the hand-written blocks, which equal central differences."""
    cams, X, w, obs, feats = BA_ARGS
    params = np.concatenate([cams.ravel(), X.ravel(), w])
    args = (params, obs, feats, len(cams), len(X))
    want = hand_written_jacobian(*BA_ARGS)
    fd = np.stack([numeric_grad(lambda p, *rest: bundle_adjustment.packed_residuals(p, *rest)[r],
                                list(args), (0,), 1e-6)[0] for r in range(want.shape[0])])
    np.testing.assert_allclose(want, fd, rtol=1e-6, atol=1e-6)

    jacobian = bundle_adjustment.jitad.jacobian(bundle_adjustment.packed_residuals, sparse=True)
    rows, cols, colours = jacobian.plan(*args)
    assert set(zip(rows, cols)) == set(zip(*np.nonzero(want)))
    assert colours.max() + 1 <= 15 + 1        # a camera, a point and a weight per row
    variant, runtime = traced(jacobian._inner, args)
    plan = jacobian._plan(variant, list(runtime), params)
    kernels = [load_python(*jacobian._built(variant, plan, k)[:0:-1])
               for k in range(len(plan["seeds"]))]
    products = np.stack([np.concatenate([np.ravel(part) for part in kernel(*runtime, *seed)])
                         for kernel, seed in zip(kernels, plan["seeds"])])
    from jitad.sparse import decompress
    got = decompress(products, plan["layout"])
    np.testing.assert_allclose(got.toarray(), want, rtol=1e-10, atol=1e-10)
