"""Linear algebra: solve, inv, det, slogdet, cholesky, triangular solves, eigh, norm.

Each function is checked against central differences (and forward vs reverse mode, and
Hessian-vector products) on well-conditioned random matrices (SPD where the function
needs it), some against hand formulas; the Gaussian-process negative log marginal
likelihood against its hand-derived gradient (autograd is not installed here).
"""
import numpy as np
import pytest
import scipy.linalg

import jitad
from jitad.primitives import REGISTRY
from conftest import adjoint_list, assert_close, check_grads_python, prim_names, \
    python_value_and_grad

RNG = np.random.default_rng(7)
A = RNG.standard_normal((4, 4)) + 4.0 * np.eye(4)          # well conditioned
B = RNG.standard_normal((4, 2))
V = RNG.standard_normal(4)
_M = RNG.standard_normal((4, 4))
SPD = _M @ _M.T + 4.0 * np.eye(4)
C = RNG.standard_normal((4, 4))


def sym(x):
    return x + x.T


@pytest.mark.parametrize("case, fun, args, argnums", [
    ("solve vector", lambda a, v: np.sum(np.sin(np.linalg.solve(a, v))), (A, V), (0, 1)),
    ("solve matrix", lambda a, b: np.sum(np.linalg.solve(a, b) ** 2), (A, B), (0, 1)),
    ("inv", lambda a, c: np.sum(np.linalg.inv(a) * c), (A, C), 0),
    ("det", lambda a: np.linalg.det(a), (A,), 0),
    ("slogdet", lambda a: np.linalg.slogdet(a)[1] * np.linalg.slogdet(a)[0], (A,), 0),
    ("cholesky", lambda s, c: np.sum(np.linalg.cholesky(s) * c), (SPD, C), 0),
    ("cholesky of a symmetric product", lambda m: np.sum(np.tanh(np.linalg.cholesky(
        m @ m.T + 4.0 * np.eye(4)))), (_M,), 0),
    ("solve_triangular lower", lambda a, b: np.sum(np.cos(
        scipy.linalg.solve_triangular(a, b, lower=True))), (A, B), (0, 1)),
    ("solve_triangular upper", lambda a, v: np.sum(
        scipy.linalg.solve_triangular(a, v) ** 2), (A, V), (0, 1)),
    ("eigvalsh", lambda s, v: np.sum(np.linalg.eigvalsh(s) * v), (SPD, V), 0),
    ("eigh values", lambda s, v: np.sum(np.linalg.eigh(s)[0] ** 2 * v), (SPD, V), 0),
    ("eigh vectors (sign-free)", lambda s, c: np.sum((np.linalg.eigh(s)[1] ** 2) * c), (SPD, C), 0),
    ("norm vector", lambda v: np.linalg.norm(v), (V,), 0),
    ("norm ord=1 axis=0", lambda a: np.sum(np.linalg.norm(a, ord=1, axis=0) ** 2), (A,), 0),
    ("norm ord=inf axis=1", lambda a: np.sum(np.linalg.norm(a, ord=np.inf, axis=1)), (A,), 0),
    ("norm ord=3 axis=-1 keepdims", lambda a: np.sum(np.linalg.norm(a, 3, -1, True) * a), (A,), 0),
    ("norm axis=1", lambda a: np.sum(np.linalg.norm(a, axis=1) ** 3), (A,), 0),
    ("norm fro", lambda a: np.linalg.norm(a, "fro"), (A,), 0),
    ("norm matrix ord=1", lambda a: np.linalg.norm(a, 1), (A,), 0),
    ("norm matrix ord=-inf", lambda a: np.linalg.norm(a, -np.inf), (A,), 0),
], ids=lambda v: v if isinstance(v, str) else "")
def test_gradient_matches_central_differences(case, fun, args, argnums):
    check_grads_python(fun, args, argnums=argnums, order=2, rtol=1e-5, atol=1e-7, context=case)


# Singular matrices and their adjugates' transposes, the cofactor matrices (by hand: each
# entry is the signed determinant of the matrix without its row and column).
SINGULAR_BY_HAND = [
    (np.array([[1.0, 2.0], [2.0, 4.0]]), np.array([[4.0, -2.0], [-2.0, 1.0]])),
    (np.arange(1.0, 10.0).reshape(3, 3), np.array([[-3.0, 6.0, -3.0], [6.0, -12.0, 6.0],
                                                  [-3.0, 6.0, -3.0]])),
    (np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0], [0.0, 1.0, 1.0]]),     # a zero row
     np.array([[-1.0, -1.0, 1.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])),
    (np.outer([1.0, 2.0, 3.0], [1.0, -1.0, 0.5]), np.zeros((3, 3))),    # rank 1: adj = 0
    (np.zeros((2, 2)), np.zeros((2, 2))),
]


@pytest.mark.parametrize("tiers", [True, False])
@pytest.mark.parametrize("a, cofactors", SINGULAR_BY_HAND, ids=["2x2", "3x3 rank 2", "zero row",
                                                       "rank 1", "zeros"])
def test_det_at_a_singular_matrix_has_the_adjugate_as_its_derivative(a, cofactors, tiers):
    f = jitad.jit_grad(lambda a: np.linalg.det(a), tiers=tiers)
    for _ in range(2):                                      # (both tiers, where on)
        value, grad = f.value_and_grad(a)
        assert value == pytest.approx(0.0, abs=1e-12)
        assert_close(grad, cofactors, 1e-12, 1e-12, "reverse mode")
    v = np.cos(np.arange(a.size, dtype=float)).reshape(a.shape)
    assert jitad.jvp(f, argnums=0)(a, v)[1] == pytest.approx(np.sum(cofactors * v), abs=1e-12)
    h = 1e-6       # det is a polynomial: central differences hold at singular points too
    numeric = np.array([(np.linalg.det(a + h * e) - np.linalg.det(a - h * e)) / (2 * h)
                        for e in np.eye(a.size).reshape((a.size,) + a.shape)])
    assert_close(grad.ravel(), numeric, 1e-6, 1e-8, "central differences")
    g = jitad.jit_grad(lambda a: np.linalg.slogdet(a)[1], tiers=tiers)
    value, grad = g.value_and_grad(a)
    assert value == -np.inf
    assert np.all(np.isinf(grad[cofactors != 0])), "log|det| has infinite slope where det is 0"
    assert np.all(np.sign(grad[cofactors != 0]) == np.sign(cofactors[cofactors != 0]))


@pytest.mark.parametrize("tiers", [True, False])
def test_singular_matrices_raise_numpy_s_linalg_error_naming_the_line(tiers):
    singular = SINGULAR_BY_HAND[0][0]
    f = jitad.jit_grad(lambda a: np.sum(np.linalg.inv(a)), tiers=tiers)
    with pytest.raises(np.linalg.LinAlgError, match=r"(?s)inv: Singular matrix.*"
                                                    r"at test_linalg\.py:\d+"):
        f(singular)
    h = jitad.hessian(lambda a: np.linalg.det(a), tiers=tiers)   # (its second derivative
    with pytest.raises(np.linalg.LinAlgError, match=r"(?s)derivative code of <lambda>.*"  # needs
                                                    r"det at test_linalg\.py:\d+"):      # inv)
        h(singular)

    def gradient(a):                                # by hand: det(a) inv(a).T
        return np.linalg.det(a) * np.linalg.inv(a).T
    step = 1e-6                                     # (and the next call is answered)
    assert_close(h(A).reshape(16, 16) @ C.ravel(),
                 ((gradient(A + step * C) - gradient(A - step * C)) / (2 * step)).ravel(),
                 1e-6, 1e-8, "Hessian times C")


@pytest.mark.parametrize("ord, shape, axis", [
    (np.inf, (0,), None), (np.inf, (2, 0), 1), (np.inf, (0, 3), 0), (1, (0, 3), 0),
    (np.inf, (0, 2), None), (np.inf, (0, 0), None), (1, (2, 0), None), (-np.inf, (2, 0), None),
    (-np.inf, (0,), None), (-np.inf, (0, 2), None), (-1, (2, 0), None)])
def test_norms_of_empty_arrays_are_numpy_s(ord, shape, axis):
    """The largest of no entries is 0 in NumPy's norms; the smallest raises."""
    x = np.zeros(shape)

    def f(x):
        return np.sum(np.linalg.norm(x, ord, axis=axis)) + np.sum(x)
    g = jitad.jit_grad(f)
    try:
        want = f(x)
    except ValueError:
        with pytest.raises(ValueError, match="zero-size array"):
            g(x)
        return
    value, grad = g.value_and_grad(x)
    assert value == want == 0.0
    assert grad.shape == shape


def test_hand_formulas():
    ainv = np.linalg.inv(A)
    f = jitad.jit_grad(lambda a: np.linalg.det(a))
    assert_close(python_value_and_grad(f, (A,))[1][0], np.linalg.det(A) * ainv.T, 1e-10, 1e-12)
    f = jitad.jit_grad(lambda a: np.linalg.slogdet(a)[1])
    assert_close(python_value_and_grad(f, (A,))[1][0], ainv.T, 1e-10, 1e-12)
    f = jitad.jit_grad(lambda a, v, u: u @ np.linalg.solve(a, v), argnums=(0, 1))
    u = np.arange(4.0)
    x, lam = np.linalg.solve(A, V), np.linalg.solve(A.T, u)
    _, (ga, gv) = python_value_and_grad(f, (A, V, u))
    assert_close(ga, -np.outer(lam, x), 1e-10, 1e-12)
    assert_close(gv, lam, 1e-10, 1e-12)
    # d(sum of eigenvalues) = d trace: the identity, read from the lower triangle
    f = jitad.jit_grad(lambda s: np.sum(np.linalg.eigvalsh(s)))
    assert_close(python_value_and_grad(f, (SPD,))[1][0], np.eye(4), 1e-10, 1e-12)


def test_symmetric_functions_read_the_lower_triangle_only():
    # As NumPy's: the upper triangle of the argument gets a zero gradient.
    for fun in (lambda s: np.sum(np.linalg.cholesky(s)), lambda s: np.sum(np.linalg.eigvalsh(s) ** 2)):
        g = python_value_and_grad(jitad.jit_grad(fun), (SPD,))[1][0]
        assert np.all(g[np.triu_indices(4, 1)] == 0.0)


# ---------------------------------------------------------------- Gaussian process

X_GP = np.linspace(0.0, 3.0, 7)
Y_GP = np.sin(X_GP) + 0.1 * np.cos(5 * X_GP)


def gp_nlml(theta, x, y):
    """Negative log marginal likelihood of a GP with a squared-exponential kernel."""
    amplitude, length, noise = np.exp(theta[0]), np.exp(theta[1]), np.exp(theta[2])
    d = x[:, None] - x[None, :]
    K = amplitude * np.exp(-0.5 * d ** 2 / length ** 2) + noise * np.eye(len(x))
    L = np.linalg.cholesky(K)
    alpha = scipy.linalg.solve_triangular(L.T, scipy.linalg.solve_triangular(L, y, lower=True))
    log_det = 2.0 * sum(np.log(L[i, i]) for i in range(len(x)))
    return 0.5 * y @ alpha + 0.5 * log_det + 0.5 * len(x) * np.log(2 * np.pi)


def gp_nlml_hand_gradient(theta, x, y):
    """d NLML / d theta = -1/2 tr((alpha alpha^T - K^-1) dK/dtheta) (Rasmussen & Williams 5.9)."""
    amplitude, length, noise = np.exp(theta)
    d = x[:, None] - x[None, :]
    E = np.exp(-0.5 * d ** 2 / length ** 2)
    K = amplitude * E + noise * np.eye(len(x))
    Kinv = np.linalg.inv(K)
    alpha = Kinv @ y
    W = np.outer(alpha, alpha) - Kinv
    dK = [amplitude * E, amplitude * E * d ** 2 / length ** 2, noise * np.eye(len(x))]
    return np.array([-0.5 * np.sum(W * k) for k in dK])


def test_gp_negative_log_marginal_likelihood_matches_the_hand_gradient():
    theta = np.array([0.3, -0.2, np.log(0.1)])
    f = jitad.jit_grad(gp_nlml)
    value, grad = f.value_and_grad(theta, X_GP, Y_GP)          # compiled
    assert value == pytest.approx(gp_nlml(theta, X_GP, Y_GP), rel=1e-12)
    want = gp_nlml_hand_gradient(theta, X_GP, Y_GP)
    assert_close(grad, want, 1e-8, 1e-12, "GP NLML gradient vs hand formula")
    names = prim_names(adjoint_list(f, (theta, X_GP, Y_GP)))
    assert "cholesky" in names and "solve_triangular" in names
    check_grads_python(gp_nlml, (theta, X_GP, Y_GP), order=2, rtol=1e-5)
    slogdet_version = jitad.jit_grad(
        lambda t, x, y: gp_nlml(t, x, y) - 0.5 * gp_log_det(t, x) + 0.5 * np.linalg.slogdet(
            gp_kernel(t, x))[1])
    assert_close(slogdet_version.value_and_grad(theta, X_GP, Y_GP)[1], want, 1e-8, 1e-12,
                 "GP NLML with slogdet")


def gp_kernel(theta, x):
    d = x[:, None] - x[None, :]
    return np.exp(theta[0]) * np.exp(-0.5 * d ** 2 / np.exp(theta[1]) ** 2) \
        + np.exp(theta[2]) * np.eye(len(x))


def gp_log_det(theta, x):
    L = np.linalg.cholesky(gp_kernel(theta, x))
    return 2.0 * sum(np.log(L[i, i]) for i in range(len(x)))


def test_a_wrong_adjoint_rule_fails_the_check(monkeypatch):
    prim = REGISTRY["cholesky"]
    right = prim.vjp
    monkeypatch.setattr(prim, "vjp", lambda b, g, out, a: (b.mul(right(b, g, out, a)[0], 1.001),))
    with pytest.raises(AssertionError, match="central differences"):
        check_grads_python(lambda s, c: np.sum(np.linalg.cholesky(s) * c), (SPD, C), order=1)


def cofactors(a):
    """The cofactor matrix by its definition (signed minors): det's gradient."""
    n = a.shape[0]
    return np.array([[(-1) ** (i + j) * np.linalg.det(np.delete(np.delete(a, i, 0), j, 1))
                      for j in range(n)] for i in range(n)]).reshape(n, n)


SINGULAR = {
    "rank 2 of 3": np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0], [1.0, 0.0, 1.0]]),
    "rank 1 of 3": np.outer([1.0, -2.0, 0.5], [3.0, 1.0, 2.0]),
    "zero 2x2": np.zeros((2, 2)),
    "zero 1x1": np.zeros((1, 1)),
    "rank 3 of 4": np.vstack([A[:3], A[0] - 2.0 * A[2]]),
}


@pytest.mark.parametrize("tiers", [True, False])
@pytest.mark.parametrize("name", list(SINGULAR))
def test_det_of_a_singular_matrix_has_the_cofactors_as_its_gradient(name, tiers):
    # det is a polynomial: differentiable everywhere, its gradient the cofactor matrix
    # (det(a) inv(a)^T only where a is invertible; inv raised LinAlgError here).
    a = SINGULAR[name]
    f = jitad.jit_grad(lambda m: np.linalg.det(m) * 2.0, tiers=tiers)
    for _ in range(2):
        value, grad = f.value_and_grad(a)
        assert_close(value, 2.0 * np.linalg.det(a), 1e-12, 1e-12)
        assert_close(grad, 2.0 * cofactors(a), 1e-10, 1e-10, what=f"d det at {name}")
        f.wait()
    v = RNG.standard_normal(a.shape)
    _, tangent = jitad.jvp(lambda m: np.linalg.det(m))(a, v)
    assert_close(tangent, np.sum(cofactors(a) * v), 1e-10, 1e-10, what=f"J v at {name}")


@pytest.mark.parametrize("fun, singular_raises", [
    (lambda a: np.sum(np.linalg.solve(a, np.ones(a.shape[0]))), True),
    (lambda a: np.sum(np.linalg.inv(a)), True),
    (lambda a: np.linalg.det(a), False),
    (lambda a: np.linalg.slogdet(a)[1], False),
    (lambda a: np.sum(np.linalg.cholesky(a)), False),
    (lambda a: np.sum(np.linalg.eigvalsh(a)), False),
], ids=["solve", "inv", "det", "slogdet", "cholesky", "eigvalsh"])
def test_linear_algebra_errors_are_numpys_linalg_errors(fun, singular_raises):
    # NumPy raises LinAlgError for a matrix that is not square and (solve, inv) for a
    # singular one; `except np.linalg.LinAlgError` must catch jitad's too.
    f = jitad.jit_grad(fun, tiers=False)
    with pytest.raises(np.linalg.LinAlgError):
        fun(np.ones((2, 3)))
    with pytest.raises(np.linalg.LinAlgError, match="square"):
        f(np.ones((2, 3)))
    if singular_raises:
        f(np.eye(2) + 0.5)          # compiled; then a singular matrix at call time
        with pytest.raises(np.linalg.LinAlgError):
            fun(np.ones((2, 2)))
        with pytest.raises(np.linalg.LinAlgError, match="(?i)singular"):
            f(np.ones((2, 2)))
        with pytest.raises(np.linalg.LinAlgError, match="(?i)singular"):
            jitad.jit_grad(fun, tiers=False)(np.ones((2, 2)))     # at the first call


@pytest.mark.parametrize("ord, axis", [(np.inf, None), (1, None), (np.inf, -1), (np.inf, 0)])
def test_max_norms_of_empty_arrays_are_0_as_numpys(ord, axis):
    # NumPy takes these norms' max from 0 (`initial=0`): 0 over an empty axis, not an error;
    # one compiled object serves the nonempty and the empty shapes
    def norm(a):
        return np.sum(np.linalg.norm(a, ord, axis)) + np.sum(a)
    f = jitad.jit_grad(norm)
    for shape in [(3, 4), (3, 0), (0, 3), (0, 0), (2, 3)]:
        a = RNG.standard_normal(shape)
        value, grad = f.value_and_grad(a)
        assert_close(value, norm(a), 1e-12, 1e-12, what=f"norm of shape {shape}")
        assert grad.shape == shape


@pytest.mark.parametrize("fun, pattern", [
    (lambda a: np.linalg.norm(a, 2), "spectral"),
    (lambda a: np.linalg.norm(a, 0, axis=0)[0], "ord=0"),
    (lambda a: np.sum(np.linalg.eigh(a, UPLO="U")[0]), "UPLO"),
    (lambda a: np.sum(scipy.linalg.solve_triangular(a, a[0], unit_diagonal=True)), "unit_diagonal"),
])
def test_unsupported_variants_are_clear_errors(fun, pattern):
    with pytest.raises(jitad.TraceError, match=pattern):
        jitad.jit_grad(fun).wengert(A)


def test_shape_errors_name_the_operation():
    with pytest.raises(jitad.ShapeError, match="solve"):
        jitad.jit_grad(lambda a, b: np.sum(np.linalg.solve(a, b)), argnums=(0, 1)).wengert(
            A, np.ones(3))


def _with_integer_matrices(w, K, k, S):
    products = np.sum(K @ w) + np.dot(k, w) + np.sum(w @ K) + np.inner(k, k) * w[0] \
        + np.sum(K @ K) * w[1]
    factors = np.sum(np.linalg.solve(S, w)) + np.linalg.det(S) * w[0] \
        + np.linalg.slogdet(S)[1] * w[1] + np.sum(np.linalg.inv(S) @ w) \
        + np.sum(np.linalg.cholesky(S)) * w[2] + np.sum(np.linalg.eigvalsh(S) * w[:3]) \
        + np.sum(scipy.linalg.solve_triangular(S, w, lower=True))
    return products + factors


def test_integer_array_arguments_of_products_and_factorizations_compute_as_floats():
    # Integer arrays are runtime inputs (not differentiated): NumPy converts them to float64
    # in np.dot and np.linalg; Numba's versions take float arrays only (a compile error)
    K = np.array([[1, 2, 0], [3, 4, 1], [0, -1, 2]])
    S = np.array([[4, 1, 0], [1, 3, 1], [0, 1, 5]])
    from jitad.testing import check_grads
    check_grads(_with_integer_matrices, (np.array([0.5, -1.0, 2.0]), K, np.array([1, -2, 3]), S),
                context="integer matrices")
