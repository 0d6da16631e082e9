"""Forward mode, HVPs, dense Jacobians and Hessians, and nesting (jitad/derivatives.py).

Oracles: central differences of the plain function (or of a hand-written gradient) and
hand formulas; objects are module level so that they pickle by reference and compile once.
"""
import math
import pickle
import re

import numpy as np
import numba
import pytest
from hypothesis import given, settings, strategies as st

import jitad
from jitad.errors import ArgumentError, NonScalarOutputError


def rosen(x):
    return np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)


def rosen_grad_by_hand(x):
    g = np.zeros_like(x)
    g[:-1] = -400.0 * x[:-1] * (x[1:] - x[:-1] ** 2) - 2 * (1 - x[:-1])
    g[1:] += 200.0 * (x[1:] - x[:-1] ** 2)
    return g


def seed_001(x):        # ln(x1) + x1*x2 - sin(x2), on a 2-float array
    return np.log(x[0]) + x[0] * x[1] - np.sin(x[1])


def residuals(p, t):
    return p[0] * np.exp(-p[1] * t) - np.cos(p[2] * t)


rosen_jvp = jitad.jvp(rosen)
rosen_hvp = jitad.hvp(rosen)
rosen_hessian = jitad.hessian(rosen)
seed_hessian = jitad.hessian(seed_001)
jac_auto = jitad.jacobian(residuals)
jac_fwd = jitad.jacobian(residuals, mode="fwd")
jac_rev = jitad.jacobian(residuals, mode="rev")
rosen_jit = jitad.jit_grad(rosen)


@jitad.jit_grad
def rosen_decorated(x):
    return rosen(x)

X = np.array([1.2, 0.7, -0.3, 2.0, 0.1])
V = np.array([0.3, -1.0, 0.5, 2.0, -0.7])
EPS = 1e-6


def fd_of(fun, x, v):
    return (fun(x + EPS * v) - fun(x - EPS * v)) / (2 * EPS)


def test_jvp_is_value_and_central_difference():
    value, tangent = rosen_jvp(X, V)
    assert value == pytest.approx(rosen(X), rel=1e-14)
    assert tangent == pytest.approx(fd_of(rosen, X, V), rel=1e-7)


def test_jvp_of_a_vector_function_and_of_two_float_arguments():
    t = np.linspace(0.0, 1.0, 7)
    p, dp = np.array([2.0, 0.5, 1.5]), np.array([0.1, -0.2, 0.3])
    value, tangent = jitad.jvp(residuals)(p, dp, t)
    np.testing.assert_allclose(value, residuals(p, t), rtol=1e-14)
    np.testing.assert_allclose(tangent, fd_of(lambda q: residuals(q, t), p, dp), rtol=1e-6)
    f = jitad.jvp(lambda x1, x2: math.log(x1) + x1 * x2 - math.sin(x2), argnums=(0, 1))
    # d f = (1/x1 + x2) dx1 + (x1 - cos x2) dx2 at (2, 5): the seed's forward sweep
    assert f(2.0, 1.0, 5.0, 0.0)[1] == pytest.approx(5.5)
    assert f(2.0, 0.0, 5.0, 1.0)[1] == pytest.approx(2.0 - math.cos(5.0))


def test_hvp_matches_differences_of_the_hand_gradient():
    want = fd_of(rosen_grad_by_hand, X, V)
    np.testing.assert_allclose(rosen_hvp(X, V), want, rtol=1e-6)
    np.testing.assert_allclose(rosen_jit.hessp(X, V), want, rtol=1e-6)


def test_hessian_matches_differences_of_the_gradient_and_is_symmetric():
    H = rosen_hessian(X)
    assert H.shape == (5, 5)
    fd = np.column_stack([fd_of(rosen_grad_by_hand, X, e) for e in np.eye(5)])
    np.testing.assert_allclose(H, fd, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(H, H.T)
    np.testing.assert_allclose(rosen_jit.hess(X), H)


def test_hessian_of_seed_001_by_hand():
    x1, x2 = 2.0, 5.0
    want = [[-1 / x1 ** 2, 1.0], [1.0, math.sin(x2)]]
    np.testing.assert_allclose(seed_hessian(np.array([x1, x2])), want, rtol=1e-14)


def test_hessian_of_a_matrix_argument_has_shape_x_shape_twice():
    A = np.arange(6.0).reshape(2, 3) / 7
    H = jitad.hessian(lambda a: np.sum(np.sin(a) * a))(A)
    assert H.shape == (2, 3, 2, 3)
    want = np.diag((2 * np.cos(A) - A * np.sin(A)).ravel()).reshape(2, 3, 2, 3)
    np.testing.assert_allclose(H, want, atol=1e-14)


def test_jacobian_forward_reverse_and_differences_agree():
    t = np.linspace(0.0, 1.0, 6)
    p = np.array([2.0, 0.5, 1.5])
    fd = np.column_stack([fd_of(lambda q: residuals(q, t), p, e) for e in np.eye(3)])
    for jac in (jac_auto, jac_fwd, jac_rev):
        J = jac(p, t)
        assert J.shape == (6, 3)
        np.testing.assert_allclose(J, fd, rtol=1e-6, atol=1e-8)
    assert "jvp" in jac_auto.source(p, t)      # 3 inputs <= 6 outputs: forward mode
    assert "jacobian_rev" in jitad.jacobian(residuals).source(p, t[:2])


def test_jacobian_of_a_gradient_is_the_hessian():
    np.testing.assert_allclose(jitad.jacobian(jitad.grad(rosen))(X), rosen_hessian(X),
                               rtol=1e-12)


def test_grad_of_grad_seed_000_to_third_order():
    def f(x):
        return x ** 3 * math.sin(x)
    x = 0.7
    d2 = jitad.jit_grad(lambda x: jitad.grad(f)(x))
    d3 = jitad.grad(jitad.grad(jitad.grad(f)))
    s, c = math.sin(x), math.cos(x)
    assert d2(x) == pytest.approx(6 * x * s + 6 * x ** 2 * c - x ** 3 * s, rel=1e-13)
    assert d3(x) == pytest.approx(6 * s + 18 * x * c - 9 * x ** 2 * s - x ** 3 * c, rel=1e-13)
    assert jitad.grad(f)(x) == pytest.approx(3 * x ** 2 * s + x ** 3 * c, rel=1e-14)


def test_a_jit_grad_object_called_in_traced_code_is_inlined():
    g = jitad.jit_grad(lambda x: rosen_jit(x) @ rosen_jit(x))
    np.testing.assert_allclose(g(X), 2 * rosen_hessian(X) @ rosen_grad_by_hand(X),
                               rtol=1e-12)
    assert "call" not in str(g.wengert(X))


def test_inlined_guards_become_guards_of_the_outer_trace():
    def relu_sq(x):
        return x * x if x > 0 else 0.0 * x
    outer = jitad.jit_grad(lambda x: jitad.grad(relu_sq)(x) * x)
    assert outer(1.5) == pytest.approx(4 * 1.5)
    assert outer(-1.5) == 0.0
    assert outer.trace_count == 2


_UNARY = [np.sin, np.cos, np.exp, np.tanh, lambda x: x * x, lambda x: 1.0 / (2.0 + x * x)]


def _richardson(g, x, h=1e-4):
    """g'(x) by central differences extrapolated to O(h^4): a reference accurate to ~1e-9
    relative even where g varies fast (`sin(exp(exp(x)))`: plain differences at h = 1e-4
    are off by 1e-5)."""
    central = lambda h: (g(x + h) - g(x - h)) / (2 * h)         # noqa: E731
    return (4 * central(h / 2) - central(h)) / 3


@settings(max_examples=8, deadline=None, derandomize=True, database=None)
@given(st.lists(st.integers(0, len(_UNARY) - 1), min_size=1, max_size=3),
       st.floats(-1.5, 1.5))
def test_nested_derivatives_to_third_order_on_random_expressions(ops, x):
    def f(x):
        for k in ops:
            x = _UNARY[k](x) + 0.5 * x
        return x
    d1, d2 = jitad.grad(f), jitad.grad(jitad.grad(f))
    d3 = jitad.grad(d2)
    assert d2(x) == pytest.approx(_richardson(d1, x), rel=1e-6, abs=1e-8)
    assert d3(x) == pytest.approx(_richardson(d2, x), rel=1e-6, abs=1e-8)


def test_nested_derivatives_where_plain_differences_are_too_coarse():
    """(The case that made plain central differences at h = 1e-4 fail the test above.)"""
    def f(x):
        return np.sin(np.exp(np.exp(x) + 0.5 * x) + 0.5 * (np.exp(x) + 0.5 * x)) + \
            0.5 * (np.exp(np.exp(x) + 0.5 * x) + 0.5 * (np.exp(x) + 0.5 * x))
    d1 = jitad.grad(f)
    assert jitad.grad(d1)(1.0) == pytest.approx(_richardson(d1, 1.0), rel=1e-8)


def test_objects_pickle_by_reference_and_by_recipe():
    for obj in (rosen_hvp, rosen_hessian, jac_rev, rosen_decorated.hessp):
        again = pickle.loads(pickle.dumps(obj))
        args = (X, V) if "hvp" in repr(obj) else (X,) if obj is rosen_hessian else None
        if args is not None:
            np.testing.assert_allclose(again(*args), obj(*args))


def test_njit_hvp_kernel_in_a_users_numba_loop():
    kernel = rosen_hvp.njit_kernel(X, V)

    @numba.njit
    def conjugate_direction_norms(x, vs):
        out = np.empty(vs.shape[0])
        for i in range(vs.shape[0]):
            out[i] = np.dot(vs[i], kernel(x, vs[i]))
        return out
    vs = np.stack([V, X, V - X])
    want = [v @ rosen_hvp(X, v) for v in vs]
    np.testing.assert_allclose(conjugate_direction_norms(X, vs), want, rtol=1e-13)


def test_errors_name_the_jacobian_and_the_tangent():
    with pytest.raises(NonScalarOutputError, match="jitad.jacobian"):
        jitad.jit_grad(lambda x: x * 2.0)(X)
    with pytest.raises(ArgumentError, match="tangent"):
        rosen_hvp(X, V[:3])
    with pytest.raises(ArgumentError, match="repeated"):
        jitad.hessian(rosen, argnums=(0, 0))
    with pytest.raises(ArgumentError, match="mode"):
        jitad.jacobian(residuals, mode="sideways")


def test_scipy_trust_ncg_with_hessp():
    optimize = pytest.importorskip("scipy.optimize")
    result = optimize.minimize(rosen_jit.value_and_grad, np.full(8, -0.5), jac=True,
                               hessp=rosen_jit.hessp, method="trust-ncg")
    np.testing.assert_allclose(result.x, 1.0, atol=1e-5)


def test_a_batch_of_tangents_is_one_call_and_matches_one_at_a_time():
    Vs = np.stack([V, X, V - 2 * X])
    value, tangents = rosen_jvp(X, Vs)
    assert value == pytest.approx(rosen(X), rel=1e-14)
    np.testing.assert_allclose(tangents, [rosen_jvp(X, v)[1] for v in Vs], rtol=1e-13)
    assert "for j_out in range(k)" in rosen_jvp.source(X, Vs)
    t = np.linspace(0.0, 1.0, 4)
    p = np.array([2.0, 0.5, 1.5])
    _, columns = jitad.jvp(residuals)(p, np.eye(3), t)
    np.testing.assert_allclose(columns.T, jac_fwd(p, t), rtol=1e-14)
    inlined = jitad.jit_grad(lambda x: np.sum(rosen_jvp(x, Vs)[1] ** 2))
    want = 2 * sum(rosen_jvp(X, v)[1] * rosen_hvp(X, v) for v in Vs)
    np.testing.assert_allclose(inlined(X), want, rtol=1e-12)


def test_long_kernels_are_looped_from_python(monkeypatch):
    import jitad.derivatives
    monkeypatch.setattr(jitad.derivatives, "COMPILED_LOOP_LINES", 0)

    def cubic(x):
        return np.sum(x ** 3) + x[0] * x[1]
    hessian = jitad.hessian(cubic)
    x = np.array([0.5, -1.0, 2.0])
    want = np.diag(6 * x)
    want[0, 1] = want[1, 0] = 1.0
    np.testing.assert_allclose(hessian(x), want, rtol=1e-15)
    assert hessian.source(x).startswith('"""Generated') and "_jitad_python_loop" in \
        hessian.source(x)
    kernel = hessian.njit_kernel(x)         # the loop, compiled on demand for Numba code

    @numba.njit
    def trace_of_hessian(x):
        return np.trace(kernel(x))
    assert trace_of_hessian(x) == pytest.approx(np.sum(6 * x), rel=1e-15)


def test_jacobian_edge_shapes_scalar_input_and_scalar_output():
    t = np.linspace(0.0, 1.0, 3)
    J = jitad.jacobian(lambda a, t: np.exp(a * t))(0.5, t)
    np.testing.assert_allclose(J, t * np.exp(0.5 * t), rtol=1e-15)
    g = jitad.jacobian(lambda x: np.sum(x * x), mode="rev")(X)
    np.testing.assert_allclose(g, 2 * X, rtol=1e-15)
    assert jitad.hessian(lambda a: a ** 4)(1.5) == pytest.approx(12 * 1.5 ** 2)


def test_an_output_that_is_an_input_is_returned_as_a_copy():
    x = X[:3].copy()
    value, tangent = jitad.jvp(lambda x: x)(x, 2 * x)
    np.testing.assert_array_equal(value, x)
    np.testing.assert_array_equal(tangent, 2 * x)
    assert value is not x and not np.shares_memory(value, x)
    np.testing.assert_array_equal(jitad.jacobian(lambda x: x)(x), np.eye(3))
    np.testing.assert_array_equal(jitad.jacobian(lambda x, y: y * 2.0 + x, argnums=1)(x, x),
                                  2 * np.eye(3))
    np.testing.assert_array_equal(jitad.jacobian(lambda x: x, sparse=True)(x).toarray(),
                                  np.eye(3))


# ---------------------------------------------------------------- tuple argnums: blocks

A2 = np.array([[0.5, 1.5], [2.5, 0.1]])


def three_args(x, a, y):       # a vector, a matrix and a float, coupled in every pair
    return np.sum(x ** 2) * np.sum(a ** 3) * y + math.sin(y) * x[0] * a[1, 0]


def three_args_grad_by_hand(x, a, y):
    sx, sa = np.sum(x ** 2), np.sum(a ** 3)
    gx = 2 * x * sa * y
    gx[0] += math.sin(y) * a[1, 0]
    ga = 3 * a ** 2 * sx * y
    ga[1, 0] += math.sin(y) * x[0]
    return gx, ga, sx * sa + math.cos(y) * x[0] * a[1, 0]


def fd_blocks(grads, args):
    """d grads[i] / d args[j] by central differences, shaped args[i].shape + args[j].shape."""
    blocks = [[None] * len(args) for _ in args]
    for j, a in enumerate(args):
        columns = []
        for e in np.eye(np.size(a)):
            e = e.reshape(np.shape(a)) if np.ndim(a) else float(e[0])
            up = grads(*(b + EPS * e if k == j else b for k, b in enumerate(args)))
            down = grads(*(b - EPS * e if k == j else b for k, b in enumerate(args)))
            columns.append([(u - d) / (2 * EPS) for u, d in zip(up, down)])
        for i, a_i in enumerate(args):
            stacked = np.stack([np.asarray(c[i]) for c in columns], axis=-1)
            blocks[i][j] = stacked.reshape(np.shape(a_i) + np.shape(a))
    return blocks


three_hessian = jitad.hessian(three_args, argnums=(0, 1, 2))


def test_hessian_with_tuple_argnums_is_nested_blocks_of_differences():
    args = (X[:3], A2, 0.7)
    H = three_hessian(*args)
    want = fd_blocks(three_args_grad_by_hand, args)
    assert len(H) == 3 and all(len(row) == 3 for row in H)
    for i in range(3):
        for j in range(3):
            assert np.shape(H[i][j]) == np.shape(args[i]) + np.shape(args[j])
            np.testing.assert_allclose(H[i][j], want[i][j], rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(H[i][j], np.transpose(
                H[j][i], list(range(np.ndim(args[j]), np.ndim(args[j]) + np.ndim(args[i]))) +
                list(range(np.ndim(args[j])))))
    assert isinstance(H[2][2], float)


def test_hessian_of_seed_001_with_two_float_arguments_by_hand():
    H = jitad.hessian(lambda x1, x2: math.log(x1) + x1 * x2 - math.sin(x2), argnums=(0, 1))
    x1, x2 = 2.0, 5.0
    blocks = H(x1, x2)
    assert all(isinstance(h, float) for row in blocks for h in row)
    np.testing.assert_allclose(blocks, [[-1 / x1 ** 2, 1.0], [1.0, math.sin(x2)]], rtol=1e-14)
    single = jitad.hessian(seed_001, argnums=(0,))(np.array([x1, x2]))
    assert len(single) == 1 and len(single[0]) == 1
    np.testing.assert_allclose(single[0][0], [[-1 / x1 ** 2, 1.0], [1.0, math.sin(x2)]])


def scaled_residuals(p, t, c):
    return c * p[0] * np.exp(-p[1] * t) - np.cos(c * t)


@pytest.mark.parametrize("mode", ["fwd", "rev", "auto"])
def test_jacobian_with_tuple_argnums_is_a_tuple_of_blocks(mode):
    p, t, c = np.array([2.0, 0.5]), np.linspace(0.0, 1.0, 4), 1.3
    J = jitad.jacobian(scaled_residuals, argnums=(0, 2), mode=mode)(p, t, c)
    assert len(J) == 2 and J[0].shape == (4, 2) and J[1].shape == (4,)
    want_p = np.column_stack([fd_of(lambda q: scaled_residuals(q, t, c), p, e) for e in np.eye(2)])
    np.testing.assert_allclose(J[0], want_p, rtol=1e-7, atol=1e-9)
    # d/dc by hand: p0 exp(-p1 t) + t sin(c t)
    np.testing.assert_allclose(J[1], p[0] * np.exp(-p[1] * t) + t * np.sin(c * t), rtol=1e-14)


def test_blocks_inlined_in_traced_code_differentiate_by_hand():
    """d/dx sum(H[0][1] ** 2) where H[0][1] = d2f/dx dy = 2 x sum(a^3) + e0 cos(y) a10."""
    a, y = A2, 0.7
    hxy = jitad.hessian(three_args, argnums=(0, 2))
    outer = jitad.jit_grad(lambda x: np.sum(hxy(x, a, y)[0][1] ** 2))
    x = X[:3]
    h01 = 2 * x * np.sum(a ** 3)
    h01[0] += math.cos(y) * a[1, 0]
    np.testing.assert_allclose(hxy(x, a, y)[0][1], h01, rtol=1e-13)
    np.testing.assert_allclose(outer(x), 2 * h01 * 2 * np.sum(a ** 3), rtol=1e-13)
    jac = jitad.jit_grad(lambda p: np.sum(jitad.jacobian(scaled_residuals, argnums=(0, 2))(
        p, np.linspace(0.0, 1.0, 4), 1.3)[1]))
    t = np.linspace(0.0, 1.0, 4)
    p = np.array([2.0, 0.5])
    np.testing.assert_allclose(jac(p), [np.sum(np.exp(-p[1] * t)),
                                        -np.sum(p[0] * t * np.exp(-p[1] * t))], rtol=1e-13)


# ---------------------------------------------------------------- derivatives as methods

class Quartic:
    def __init__(self, scale):
        self.scale = scale

    @jitad.hessian
    def hessian(self, x):
        return self.scale * np.sum(x ** 4)

    @jitad.hvp
    def hvp(self, x):
        return self.scale * np.sum(x ** 4)

    @jitad.grad
    def grad(self, x):
        return self.scale * np.sum(x ** 4)

    @jitad.jacobian(argnums=(0, 1))
    def jac(self, x, s):
        return self.scale * s * x ** 3


def test_derivative_objects_bound_to_an_instance_are_that_derivative():
    q, other = Quartic(2.0), Quartic(3.0)
    x = X[:3]
    np.testing.assert_allclose(q.hessian(x), np.diag(24.0 * x ** 2), rtol=1e-14)
    np.testing.assert_allclose(other.hessian(x), np.diag(36.0 * x ** 2), rtol=1e-14)
    np.testing.assert_allclose(q.hvp(x, V[:3]), 24.0 * x ** 2 * V[:3], rtol=1e-14)
    np.testing.assert_allclose(q.grad(x), 8.0 * x ** 3, rtol=1e-14)
    jx, js = q.jac(x, 0.5)
    np.testing.assert_allclose(jx, np.diag(3.0 * x ** 2), rtol=1e-14)
    np.testing.assert_allclose(js, 2.0 * x ** 3, rtol=1e-14)
    assert q.hessian is q.hessian and "jitad.hessian" in repr(q.hessian)
    assert Quartic.hessian is Quartic.__dict__["hessian"]


def test_the_installed_entry_takes_keywords_defaults_and_other_signatures():
    def cubic(x, s=2.0):
        return s * np.sum(x ** 3)
    h = jitad.hessian(cubic)
    x = X[:3]
    np.testing.assert_allclose(h(x), np.diag(12.0 * x), rtol=1e-15)      # installs the entry
    np.testing.assert_allclose(h(x, s=3.0), np.diag(18.0 * x), rtol=1e-15)
    np.testing.assert_allclose(h(x=x), np.diag(12.0 * x), rtol=1e-15)
    np.testing.assert_allclose(h(X), np.diag(12.0 * X), rtol=1e-15)     # another shape
    np.testing.assert_allclose(h(x, 3.0), np.diag(18.0 * x), rtol=1e-15)
    with pytest.raises(TypeError):
        h(x, 1.0, 2.0)


def test_an_hvp_allocates_one_gradient_buffer_and_its_stages_are_recorded():
    """The tangent of the gradient's zero fill reads its shape from x, not from the primal
    fill: the primal gradient buffer is dead in an HVP and one array is allocated."""
    h = jitad.hessian(lambda x: np.sum(x[1:] * x[:-1] ** 2) + x[0] * x[2])
    x = X[:4]
    H = h(x)
    by_hand = np.zeros((4, 4))
    for i in range(3):          # d2/dx_i dx_{i+1} (x_{i+1} x_i^2) terms
        by_hand[i, i] += 2 * x[i + 1]
        by_hand[i, i + 1] += 2 * x[i]
        by_hand[i + 1, i] += 2 * x[i]
    by_hand[0, 2] += 1.0
    by_hand[2, 0] += 1.0
    np.testing.assert_allclose(H, by_hand, rtol=1e-14)
    hvp_source = h.source(x).split("def _lambda__hessian")[0]
    assert hvp_source.count("np.full(") == 1
    (row,) = h.stats()
    assert row["mode"] == "hessian" and row["trace_s"] > 0.0
    assert row["analysis_s"] > 0.0 and row["codegen_s"] > 0.0


def test_dense_loops_copy_rows_element_by_element():
    """A row or column assignment of an array (`B[k] = r`) makes Numba compile its
    shape-mismatch error path (about ten seconds): the loops copy elements instead."""
    x = np.array([0.3, 0.8, 1.1])
    outer = jitad.jvp(lambda x: np.outer(x, x))
    T = outer(x, np.stack([x, 2 * x]))[1]
    np.testing.assert_allclose(T[1], 2 * T[0], rtol=1e-15)
    np.testing.assert_allclose(T[0], 2 * np.outer(x, x), rtol=1e-15)
    sources = [outer.source(x, np.stack([x, x])), jitad.hessian(rosen).source(X),
               jitad.jacobian(residuals, mode="fwd").source(X[:3], np.linspace(0, 1, 4)),
               jitad.jacobian(residuals, mode="rev").source(X[:3], np.linspace(0, 1, 4))]
    for source in sources:
        loop = source.split("_out = np.empty(")[1]
        assert re.search(r"[BT]\w*_out\[(k_out|j_out)\] = ", loop) is None
        assert re.search(r"B\w*_out\[:, k_out\] = ", loop) is None


def two_args(x, y):
    return np.sum(np.sin(x)) * np.sum(y ** 2)


def test_argnums_naming_one_argument_twice_is_an_argument_error():
    """(0, -2) of two arguments is (0, 0): the blocks' loop filled H[1][0] and left H[0][0]
    zero, and the sparse objects returned empty blocks."""
    x, y = np.array([0.3, -0.7, 1.1]), np.array([0.5, 0.2])
    calls = [lambda: jitad.hessian(two_args, argnums=(0, -2))(x, y),
             lambda: jitad.jacobian(lambda a, b: a * b, argnums=(1, -1))(x, x),
             lambda: jitad.hessian(two_args, argnums=(0, -2), sparse=True)(x, y),
             lambda: jitad.jacobian(lambda a, b: a * b, argnums=(0, -2), sparse=True)(x, x),
             lambda: jitad.hvp(two_args, argnums=(1, 1))(x, x, y, y),
             lambda: jitad.jvp(two_args, argnums=(0, -2))(x, x, y)]
    for call in calls:
        with pytest.raises(ArgumentError, match=r"repeated index.*argument"):
            call()


def test_negative_argnums_in_forward_mode_and_hessian_vector_products():
    x, y, v = np.array([0.3, -0.7, 1.1]), np.array([0.5, 0.2]), np.array([1.5, -2.0])
    want = 2 * np.sum(np.sin(x)) * v                    # d²/dy² = 2 sum(sin x) I
    np.testing.assert_allclose(jitad.hvp(two_args, argnums=-1)(x, y, v), want, rtol=1e-14)
    np.testing.assert_allclose(jitad.jit_grad(two_args, argnums=-1).hessp(x, y, v), want,
                               rtol=1e-14)
    _, dot = jitad.jvp(two_args, argnums=(-1, 0))(x, x, y, v)
    assert dot == pytest.approx(np.sum(np.cos(x) * x) * np.sum(y ** 2)
                                + np.sum(np.sin(x)) * 2 * np.sum(y * v), rel=1e-14)


def test_hvp_blocks_follow_the_order_of_argnums_as_gradients_do():
    def g(a, b):
        return a ** 2 * b ** 3
    # at (2, 3): g_aa = 2 b³ = 54, g_ab = 6 a b² = 108; H (1, 0) in the order (b, a)
    assert jitad.hvp(g, argnums=(1, 0))(2.0, 1.0, 3.0, 0.0) == (108.0, 54.0)
    assert jitad.jit_grad(g, argnums=(1, 0)).hessp(2.0, 1.0, 3.0, 0.0) == (108.0, 54.0)
    assert jitad.hvp(g, argnums=(0, 1))(2.0, 1.0, 3.0, 0.0) == (54.0, 108.0)


def test_numpy_functions_themselves_are_differentiated():
    """A ufunc has no Python code: the trace names it and `<built-in>` (it was an
    AttributeError from `__code__`)."""
    x = np.array([0.3, -0.7, 1.1])
    assert jitad.jit_grad(np.tanh)(0.5) == pytest.approx(1 - math.tanh(0.5) ** 2, rel=1e-14)
    np.testing.assert_allclose(jitad.jacobian(np.sin)(x), np.diag(np.cos(x)), rtol=1e-14)
    assert jitad.hessian(np.sin)(0.7) == pytest.approx(-math.sin(0.7), rel=1e-14)
    assert jitad.grad(jitad.grad(np.cos))(0.3) == pytest.approx(-math.cos(0.3), rel=1e-14)
    assert jitad.jvp(np.exp)(1.0, 2.0) == pytest.approx((math.e, 2 * math.e), rel=1e-14)
    with pytest.raises(NonScalarOutputError, match="sin"):
        jitad.hessian(np.sin)(x)


def cube_with_aux(x):
    return np.sum(x ** 3), (2.0 * x, "tag", np.sum(x))


cube_aux = jitad.jit_grad(cube_with_aux, has_aux=True)


def test_a_has_aux_object_called_in_traced_code_returns_its_aux_too():
    """Inlined, it returned only its first output (a NonScalarOutputError about a tuple)."""
    x = np.array([0.3, -0.7, 1.1])
    # grad = 3x², aux[0] = 2x: d/dx sum(6 x³) = 18 x²
    g = jitad.jit_grad(lambda x: np.sum(cube_aux(x)[0] * cube_aux(x)[1][0]))
    np.testing.assert_allclose(g(x), 18 * x ** 2, rtol=1e-14)
    h = jitad.hessian(lambda x: np.sum(cube_aux(x)[0] * cube_aux(x)[1][0]))
    np.testing.assert_allclose(h(x), np.diag(36 * x), rtol=1e-14, atol=1e-14)

    def uses_all(x):
        (v, (a, tag, s)), g = cube_aux.value_and_grad(x)
        assert tag == "tag"                                 # static parts stay as they were
        return v * s + np.sum(g * a) + cube_aux.value(x)[1][2]
    # d/dx [sum(x³) sum(x) + sum(6 x³) + sum(x)] = 3x² sum(x) + sum(x³) + 18 x² + 1
    np.testing.assert_allclose(jitad.jit_grad(uses_all)(x),
                               3 * x ** 2 * np.sum(x) + np.sum(x ** 3) + 18 * x ** 2 + 1,
                               rtol=1e-13)


def test_a_jacobian_of_a_non_float_output_says_what_it_got_and_where():
    x = np.array([0.3, -0.7, 1.1])
    with pytest.raises(NonScalarOutputError, match=r"float array.*jitad.jacobian.*bool"):
        jitad.jacobian(lambda x: x > 0)(x)
    with pytest.raises(NonScalarOutputError, match=r"jitad.jvp.*tuple of 2"):
        jitad.jvp(lambda x: (x, x))(x, x)
    with pytest.raises(NonScalarOutputError, match=r"return statement missing"):
        jitad.jacobian(lambda x: None)(x)
    # hvp's tangent wrapper is not what the error names: the user's function and line are
    with pytest.raises(NonScalarOutputError, match=r"test_derivatives.py:\d+"):
        jitad.jit_grad(cube_with_aux, has_aux=True).hessp(x, x)
