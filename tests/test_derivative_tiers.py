"""The NumPy tier for the derivative objects: jvp, hvp, dense Jacobians and Hessians (the
kernel printed for NumPy, the loop over directions run as Python) and the sparse ones (one
NumPy product per colour); each object's specialized kernels compile in the background.

Which tier served a call is counted (`NumpyKernel.calls`, `stats()`), never timed; the
background compiles are held at the gate of conftest's `tiered` fixture. Results are checked
against hand formulas or central differences, and against the specialized code's.
"""
from __future__ import annotations

import numpy as np
import pytest

import jitad
from jitad import codegen, derivatives
from jitad.numpy_tier import NumpyKernel

from test_numpy_tier import numpy_tier

pytestmark = pytest.mark.usefixtures(numpy_tier.__name__)      # the NumPy tier on


def cubic_tanh(scale):
    """f(x, A) = sum(tanh(A x)) + scale/3 sum(x^3): H = A^T diag(-2 t (1 - t^2)) A +
    2 scale diag(x), t = tanh(A x) (each test its own `scale`: no stored builds shared)."""
    def f(x, A):
        return np.sum(np.tanh(A @ x)) + scale / 3.0 * np.sum(x ** 3)
    return f


def hessian_of(scale, x, A):
    t = np.tanh(A @ x)
    return A.T @ np.diag(-2 * t * (1 - t ** 2)) @ A + 2 * scale * np.diag(x)


def residuals(scale):
    """r(x, y) = tanh(A x) * y[0] + scale * x[5:0:-1] * y[-1] (an array)."""
    def r(x, y, A):
        return np.tanh(A @ x) * y[0] + scale * x[5:0:-1] * y[-1]
    return r


def central_jacobian(fun, args, i, eps=1e-6):
    """d fun / d args[i] by central differences, shaped out.shape + x.shape."""
    x = np.asarray(args[i], dtype=float)
    columns = []
    for k in np.ndindex(x.shape):
        plus, minus = [list(args) for _ in range(2)]
        plus[i], minus[i] = x.copy(), x.copy()
        plus[i][k] += eps
        minus[i][k] -= eps
        columns.append((np.asarray(fun(*plus)) - np.asarray(fun(*minus))) / (2 * eps))
    out = np.shape(columns[0])
    return np.moveaxis(np.array(columns), 0, -1).reshape(out + x.shape)


def first_tier(obj):
    kernels = [k for _, k in (obj._inner if hasattr(obj, "_inner") else obj)._records
               if k is not None]
    assert kernels and all(isinstance(k, NumpyKernel) for k in kernels)
    return kernels


@pytest.fixture
def data():
    rng = np.random.default_rng(3)
    return rng.standard_normal(6), rng.standard_normal((5, 6)) / 2, rng.standard_normal(3)


def test_hessian_numpy_tier_then_specialized(tiered, data):
    x, A, _ = data
    h = jitad.hessian(cubic_tanh(0.61))
    first = h(x, A)
    (kernel,) = first_tier(h)
    row = h.stats()[0]
    assert row["tier"] == "numpy" and row["background"] == "compiling" and kernel.calls == 1
    np.testing.assert_allclose(first, hessian_of(0.61, x, A), rtol=1e-12, atol=1e-13)
    assert h(x[::-1].copy(), A).shape == (6, 6) and kernel.calls == 2      # same signature
    tiered.set()
    assert h.wait()
    compiled = h(x, A)
    row = h.stats()[0]
    assert row["tier"] == "specialized" and row["tier_calls"] == 2
    assert kernel.successor is not None and kernel.calls == 2
    np.testing.assert_allclose(compiled, first, rtol=1e-12, atol=1e-14)
    again = jitad.hessian(h._origin)        # its build stored: Numba's cache, no tier
    again(x, A)
    assert again.stats()[0]["tier"] == "specialized" and not again._jobs


@pytest.mark.parametrize("mode", ["fwd", "rev"])
def test_jacobian_blocks_in_the_numpy_tier(tiered, data, mode):
    x, A, y = data
    r = residuals(0.3 if mode == "fwd" else 0.31)
    jac = jitad.jacobian(r, argnums=(0, 1), mode=mode)
    jx, jy = jac(x, y, A)
    first_tier(jac)
    assert jac.stats()[0]["tier"] == "numpy" and jx.shape == (5, 6) and jy.shape == (5, 3)
    np.testing.assert_allclose(jx, central_jacobian(r, (x, y, A), 0), rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(jy, central_jacobian(r, (x, y, A), 1), rtol=1e-7, atol=1e-8)


def test_jvp_hvp_and_a_batch_of_tangents_in_the_numpy_tier(tiered, data):
    x, A, y = data
    r, f = residuals(0.32), cubic_tanh(0.62)
    v = np.linspace(-1.0, 1.0, 6)
    value, tangent = jitad.jvp(r)(x, v, y, A)
    np.testing.assert_allclose(value, r(x, y, A), rtol=1e-13)
    np.testing.assert_allclose(tangent, central_jacobian(r, (x, y, A), 0) @ v, rtol=1e-7,
                               atol=1e-8)
    V = np.stack([v, np.ones(6)])
    batch = jitad.jvp(r)
    value, tangents = batch(x, V, y, A)
    assert tangents.shape == (2, 5)
    np.testing.assert_allclose(tangents, (central_jacobian(r, (x, y, A), 0) @ V.T).T,
                               rtol=1e-7, atol=1e-8)
    hvp = jitad.hvp(f)
    np.testing.assert_allclose(hvp(x, v, A), hessian_of(0.62, x, A) @ v, rtol=1e-12)
    for obj in (batch, hvp):
        assert obj.stats()[0]["tier"] == "numpy"


def test_a_coloured_jacobian_in_the_numpy_tier(tiered):
    """A tridiagonal Jacobian of 80 columns: 3 products (a colouring), run as Python."""
    def stencil(u):
        return np.tanh(u[1:-1]) * (u[2:] - 2.0 * u[1:-1] + u[:-2]) + 0.33 * u[1:-1] ** 2
    u = np.linspace(-1.0, 1.0, 80)
    jac = jitad.jacobian(stencil, mode="fwd")
    assert "COLOUR_out" in jac.source(u)
    first = jac(u)
    (kernel,) = first_tier(jac)
    assert kernel.calls == 1 and first.shape == (78, 80)
    np.testing.assert_allclose(first, central_jacobian(stencil, (u,), 0), rtol=1e-7,
                               atol=1e-8)


def test_a_loop_over_elements_in_the_numpy_tier(tiered, monkeypatch):
    """Scalar entries reading array elements (a Python loop): the kernel runs as Python
    too (Numba takes seconds over its loops). Rosenbrock's Hessian, by hand. (Where the
    reverse tape does not apply: this trace is shorter than it takes, tests aside.)"""
    monkeypatch.setattr(derivatives, "reverse_tape_applies", lambda wengert: False)
    def rosen(x):
        s = 0.0
        for i in range(11):
            s = s + 100.0 * (x[i + 1] - x[i] ** 2) ** 2 + (1.0 - x[i]) ** 2
        return s
    x = np.linspace(-1.0, 1.2, 12)
    expected = np.zeros((12, 12))
    for i in range(11):
        expected[i, i] += 1200.0 * x[i] ** 2 - 400.0 * x[i + 1] + 2.0
        expected[i + 1, i + 1] += 200.0
        expected[i, i + 1] = expected[i + 1, i] = -400.0 * x[i]
    h = jitad.hessian(rosen)
    np.testing.assert_allclose(h(x), expected, rtol=1e-12, atol=1e-10)
    (kernel,) = first_tier(h)
    assert kernel.calls == 1 and h.stats()[0]["tier"] == "numpy"


def test_strided_and_new_shaped_arguments(tiered, data):
    """A strided view runs in the tier; another shape is another specialization (the
    dense loops are sized at build), itself tiered."""
    x, A, _ = data
    h = jitad.hessian(cubic_tanh(0.63))
    wide = np.repeat(x, 2)
    np.testing.assert_allclose(h(wide[::2], A), hessian_of(0.63, x, A), rtol=1e-12,
                               atol=1e-13)
    np.testing.assert_allclose(h(x[:4], A[:, :4]), hessian_of(0.63, x[:4], A[:, :4]),
                               rtol=1e-12, atol=1e-13)
    assert [row["tier"] for row in h.stats()] == ["numpy", "numpy"]
    assert [k.calls for k in first_tier(h)] == [1, 1]


def test_tiers_off_compile_before_returning(monkeypatch, data):
    x, A, y = data
    h = jitad.hessian(cubic_tanh(0.64), tiers=False)
    h(x, A)
    sparse = jitad.jacobian(residuals(0.36), sparse=True, tiers=False)
    sparse(x, y, A)
    monkeypatch.setenv("JITAD_NUMPY_TIER", "0")
    g = jitad.jacobian(residuals(0.34))
    g(x, y, A)
    for obj in (h, g, sparse):
        assert {row["tier"] for row in obj.stats()} == {"specialized"}
    assert not h._jobs and not g._jobs and not sparse._inner._jobs
    assert derivatives._rebuild(h._factory, h._origin, h._options).tiers is False  # pickled


def test_grad_takes_the_tiers_option(tiered, data):
    """`jitad.grad` starts array code on the NumPy tier like `jit_grad`; `tiers=False`
    compiles first, and survives pickling."""
    x, A, _ = data
    hand = A.T @ (1 - np.tanh(A @ x) ** 2) + 0.62 * x ** 2
    for tiers, tier in ((True, "numpy"), (False, "specialized")):
        g = jitad.grad(cubic_tanh(0.62 + tiers), tiers=tiers)
        np.testing.assert_allclose(g(x, A), hand + tiers * x ** 2, rtol=1e-12, atol=1e-13)
        assert [row["tier"] for row in g.stats()] == [tier]
    assert derivatives._rebuild("grad", g._origin, g._recipe()).tiers is False


def test_a_result_of_the_wrong_rank_waits_for_the_compiled_code(tiered, data, monkeypatch):
    """Printing that returns the Hessian raveled: the result check hands the call to the
    specialized kernel, whose answer is returned."""
    x, A, _ = data
    real = derivatives._printed
    changed = []

    def raveled(*args, vectorized=False, **options):
        source, *rest = real(*args, vectorized=vectorized, **options)
        if vectorized:          # the loop returns the Hessian raveled
            changed.append(source.replace("    return B0_0_out\n",
                                          "    return B0_0_out.ravel()\n"))
            assert changed[-1] != source
            source = changed[-1]
        return (source, *rest)
    monkeypatch.setattr(derivatives, "_printed", raveled)
    h = jitad.hessian(cubic_tanh(0.65))
    tiered.set()
    result = h(x, A)
    (kernel,) = first_tier(h)
    assert changed and kernel.calls == 1 and result.shape == (6, 6)
    np.testing.assert_allclose(result, hessian_of(0.65, x, A), rtol=1e-12, atol=1e-13)


def test_a_wrong_vectorized_printing_fails_the_difference_check(tiered, data, monkeypatch):
    x, A, y = data
    real = codegen.generate

    def wrong(wengert, name, *args):
        source = real(wengert, name, *args)
        return source.replace("np.tanh(", "np.sinh(") if args[-1] is True else source
    monkeypatch.setattr(codegen, "generate", wrong)
    r = residuals(0.35)
    jx = jitad.jacobian(r)(x, y, A)
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(jx, central_jacobian(r, (x, y, A), 0), rtol=1e-7,
                                   atol=1e-8)


# ---------------------------------------------------------------- sparse objects

def ba_like(scale):
    """Residuals gathering per-row parameters through index arrays (bundle adjustment's
    shape): cams (3, 2), points (8, 2), packed in one vector."""
    def r(params, obs):
        cams = params[:6].reshape(3, 2)
        pts = params[6:].reshape(8, 2)
        c, p = cams[obs[:, 0]], pts[obs[:, 1]]
        u = np.tanh(c[:, 0] * p[:, 0] + c[:, 1]) + scale * p[:, 1] ** 2
        return np.concatenate([u, c[:, 1] * p[:, 0]])
    return r


def test_sparse_jacobian_products_in_the_numpy_tier(tiered):
    r = ba_like(0.4)
    params = np.random.default_rng(4).standard_normal(22)
    obs = np.stack([np.arange(12) % 3, np.arange(12) % 8], axis=1)
    jac = jitad.jacobian(r, sparse=True)
    first = jac(params, obs)
    kernels = first_tier(jac)
    assert all(k.calls == 1 for k in kernels)
    assert {row["tier"] for row in jac.stats()} == {"numpy"}
    assert {row["mode"] for row in jac.stats()} == {"sparse_jacobian_rev_0",
                                                     "sparse_jacobian_rev_1"}
    np.testing.assert_allclose(first.toarray(), central_jacobian(r, (params, obs), 0),
                               rtol=1e-7, atol=1e-8)
    other = obs[::-1].copy()        # other index values: a new plan, the same products
    np.testing.assert_allclose(jac(params, other).toarray(),
                               central_jacobian(r, (params, other), 0), rtol=1e-7, atol=1e-8)
    assert first_tier(jac) == kernels
    tiered.set()
    assert jac.wait()
    compiled = jac(params, obs)
    assert {row["tier"] for row in jac.stats()} == {"specialized"}
    assert all(row["tier_calls"] == 2 for row in jac.stats())
    np.testing.assert_allclose(compiled.toarray(), first.toarray(), rtol=1e-12, atol=1e-14)
    again = jitad.jacobian(r, sparse=True)      # the products' builds stored: no tier
    again(params, obs)
    assert {row["tier"] for row in again.stats()} == {"specialized"}


def test_sparse_hessian_products_in_the_numpy_tier(tiered, data):
    x, A, _ = data
    hess = jitad.hessian(cubic_tanh(0.66), sparse=True)
    first = hess(x, A)
    first_tier(hess)
    assert hess.stats()[0]["tier"] == "numpy"
    np.testing.assert_allclose(first.toarray(), hessian_of(0.66, x, A), rtol=1e-12,
                               atol=1e-13)



def chain_of_elements(x):
    """sum_i x[i]^3 x[i+1], scalar entries only: the NumPy tier declines its jvp."""
    s = 0.0
    for i in range(x.shape[0] - 1):
        s = s + x[i] ** 3 * x[i + 1]
    return s


def test_the_first_tier_and_the_specialized_code_share_one_analysis(tiered, data,
                                                                    monkeypatch):
    """The list differentiated and shaped for the NumPy tier is the one the specialized
    build prints: in the background job (a Hessian), or now where the tier declines the
    analysed list (a jvp of scalar code). Each analysis runs once; results by hand."""
    x, A, _ = data
    lists = []
    real = derivatives.kernel_list

    def counted(*args):
        lists.append(args[1])
        return real(*args)
    monkeypatch.setattr(derivatives, "kernel_list", counted)
    h = jitad.hessian(cubic_tanh(0.57))
    np.testing.assert_allclose(h(x, A), hessian_of(0.57, x, A), rtol=1e-12, atol=1e-12)
    tiered.set()
    assert h.wait()
    np.testing.assert_allclose(h(x, A), hessian_of(0.57, x, A), rtol=1e-12, atol=1e-12)
    assert [(row["tier_calls"], row["background"]) for row in h.stats()] == [(1, "done")]
    v = np.cos(np.arange(6.0))
    value, tangent = jitad.jvp(chain_of_elements)(x, v)
    grad = np.zeros(6)
    grad[:-1] += 3 * x[:-1] ** 2 * x[1:]
    grad[1:] += x[:-1] ** 3
    assert value == pytest.approx(np.sum(x[:-1] ** 3 * x[1:]), rel=1e-14)
    assert tangent == pytest.approx(grad @ v, rel=1e-12)
    assert lists == ["hessian", "jvp"]
