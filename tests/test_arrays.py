"""Array programs: logistic regression, an MLP, Rosenbrock, row loops, integer inputs.

Gradients are compared with hand-derived formulas (backprop written out by hand)
and with central differences. Shape polymorphism: a new number of rows reuses
the compiled code unless the function reads sizes.
"""
import numpy as np
import pytest
import scipy.special

import jitad
from conftest import assert_close, check_grads_python, numeric_grad, python_value_and_grad


def sigmoid(t):
    return 1.0 / (1.0 + np.exp(-t))


def logistic_data(n, d=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = np.where(rng.standard_normal(n) > 0, 1.0, -1.0)
    w = 0.3 * rng.standard_normal(d)
    return w, X, y


# ---------------------------------------------------------------- logistic regression

def logreg_plain(w, X, y, lam):
    z = X @ w
    return np.mean(np.logaddexp(0.0, -y * z)) + 0.5 * lam * (w @ w)


logreg = jitad.jit_grad(logreg_plain)


def logreg_hand_gradient(w, X, y, lam):
    z = X @ w
    return X.T @ (-y * sigmoid(-y * z)) / len(y) + lam * w


def test_logreg_gradient_matches_hand_derived_formula():
    w, X, y = logistic_data(200)
    value, g = logreg.value_and_grad(w, X, y, 0.1)
    assert value == pytest.approx(logreg_plain(w, X, y, 0.1), rel=1e-12)
    assert_close(g, logreg_hand_gradient(w, X, y, 0.1), rtol=1e-10, atol=1e-14)
    assert_close(g, numeric_grad(logreg_plain, (w, X, y, 0.1))[0], rtol=1e-6, atol=1e-9)


def test_logreg_all_derivative_checks_without_numba():
    w, X, y = logistic_data(12, d=3, seed=1)
    check_grads_python(logreg_plain, (w, X, y, 0.25), argnums=(0, 1, 3), order=2)


def test_logreg_new_row_count_does_not_retrace_or_recompile():
    w, X, y = logistic_data(100)
    logreg(w, X, y, 0.1)
    traces, compiles = logreg.trace_count, logreg.compile_count
    for n, seed in ((37, 2), (5000, 3), (100, 4)):
        w2, X2, y2 = logistic_data(n, seed=seed)
        assert_close(logreg(w2, X2, y2, 0.1), logreg_hand_gradient(w2, X2, y2, 0.1), 1e-10, 1e-14)
    assert logreg.trace_count == traces == 1
    assert logreg.compile_count == compiles == 1


def test_logreg_wengert_list_does_not_grow_with_the_number_of_rows():
    lengths = []
    for n in (100, 100_000):
        f = jitad.jit_grad(logreg_plain)       # fresh: each traces its own list
        w, X, y = logistic_data(n)
        lengths.append((len(f.wengert(w, X, y, 0.1)), len(f.wengert(w, X, y, 0.1, grad=True))))
        assert f.trace_count == 1
    assert lengths[0] == lengths[1]
    assert lengths[0][0] < 15


# ---------------------------------------------------------------- reading sizes forces exact shapes

def mean_by_len(x):
    return np.sum(x * x) / len(x)


def mean_by_shape(x):
    return np.sum(x * x) / x.shape[0]


@pytest.mark.parametrize("fun", [mean_by_len, mean_by_shape], ids=lambda f: f.__name__)
def test_function_reading_the_length_retraces_for_a_new_length(fun):
    f = jitad.jit_grad(fun)
    x3, x5 = np.arange(1.0, 4.0), np.arange(1.0, 6.0)
    assert_close(f(x3), 2 * x3 / 3, 1e-14, 0)
    assert_close(f(x5), 2 * x5 / 5, 1e-14, 0)        # a stale n=3 would give 2x/3
    assert f.trace_count == 2
    assert_close(f(x3 + 1.0), 2 * (x3 + 1.0) / 3, 1e-14, 0)
    assert_close(f(x5 * 2.0), 2 * (x5 * 2.0) / 5, 1e-14, 0)
    assert f.trace_count == 2


# ---------------------------------------------------------------- a two-layer MLP vs hand backprop

def mlp_plain(W1, b1, W2, b2, X, Y):
    H = np.tanh(X @ W1 + b1)
    P = H @ W2 + b2
    return np.mean((P - Y) ** 2)


mlp = jitad.jit_grad(mlp_plain, argnums=(0, 1, 2, 3))


def mlp_hand_backprop(W1, b1, W2, b2, X, Y):
    H = np.tanh(X @ W1 + b1)
    P = H @ W2 + b2
    dP = 2.0 * (P - Y) / P.size
    dW2, db2 = H.T @ dP, dP.sum(axis=0)
    dA = (dP @ W2.T) * (1.0 - H ** 2)
    return X.T @ dA, dA.sum(axis=0), dW2, db2


def mlp_params(n=16, d=3, h=5, k=2, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((d, h)), rng.standard_normal(h), rng.standard_normal((h, k)),
            rng.standard_normal(k), rng.standard_normal((n, d)), rng.standard_normal((n, k)))


def test_mlp_gradient_matches_hand_written_backprop():
    args = mlp_params()
    value, grads = mlp.value_and_grad(*args)
    assert value == pytest.approx(mlp_plain(*args), rel=1e-12)
    for name, got, want in zip(("W1", "b1", "W2", "b2"), grads, mlp_hand_backprop(*args)):
        assert_close(got, want, rtol=1e-10, atol=1e-13, what=f"d/d{name}")
        assert got.shape == want.shape and got.dtype == np.float64


def test_mlp_new_batch_size_reuses_the_compiled_code():
    args = mlp_params(n=16)
    mlp(*args)
    traces = mlp.trace_count
    args = mlp_params(n=3, seed=5)
    for got, want in zip(mlp(*args), mlp_hand_backprop(*args)):
        assert_close(got, want, rtol=1e-10, atol=1e-13)
    assert mlp.trace_count == traces == 1


def test_mlp_second_order_checks_without_numba():
    check_grads_python(mlp_plain, mlp_params(n=4, d=2, h=3, k=2, seed=7), argnums=(0, 1, 2, 3),
                       order=2)


# ---------------------------------------------------------------- Rosenbrock

def rosenbrock_vectorized(x):
    return np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def rosenbrock_loop(x):
    return sum(100.0 * (x[i + 1] - x[i] ** 2) ** 2 + (1.0 - x[i]) ** 2 for i in range(len(x) - 1))


def rosenbrock_hand_gradient(x):
    g = np.zeros_like(x)
    r = x[1:] - x[:-1] ** 2
    g[:-1] += -400.0 * x[:-1] * r - 2.0 * (1.0 - x[:-1])
    g[1:] += 200.0 * r
    return g


ROSEN_POINTS = [np.array([-1.2, 1.0]), np.array([-1.2, 1.0, 0.5, 2.0, -0.3, 0.7, 1.1, -0.9, 0.2])]


@pytest.mark.parametrize("x", ROSEN_POINTS, ids=lambda x: f"n={len(x)}")
def test_vectorized_rosenbrock_matches_hand_formula(x):
    f = jitad.jit_grad(rosenbrock_vectorized)
    value, g = f.value_and_grad(x)
    assert value == pytest.approx(rosenbrock_vectorized(x), rel=1e-12)
    assert_close(g, rosenbrock_hand_gradient(x), rtol=1e-12, atol=1e-12)


def test_loop_rosenbrock_matches_hand_formula_compiled_and_plain():
    # n = 9: eight unrolled iterations, long enough for codegen to print them as a loop.
    x = ROSEN_POINTS[1]
    f = jitad.jit_grad(rosenbrock_loop)
    value, g = f.value_and_grad(x)
    assert value == pytest.approx(rosenbrock_loop(x), rel=1e-12)
    assert_close(g, rosenbrock_hand_gradient(x), rtol=1e-12, atol=1e-12)
    py_value, (py_g,) = python_value_and_grad(f, (x,))
    assert py_value == pytest.approx(value, rel=1e-12)
    assert_close(py_g, g, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n", [3, 6, 12])
def test_loop_rosenbrock_all_checks_without_numba(n):
    x = np.random.default_rng(n).uniform(-1.5, 1.5, n)
    f = check_grads_python(rosenbrock_loop, (x,), order=2, hessian_modes=("forward over reverse",))
    assert_close(python_value_and_grad(f, (x,))[1][0], rosenbrock_hand_gradient(x), 1e-12, 1e-12)


@pytest.mark.parametrize("n", [3, 6, 12])
def test_loop_rosenbrock_hessian_reverse_over_reverse(n):
    x = np.random.default_rng(n).uniform(-1.5, 1.5, n)
    check_grads_python(rosenbrock_loop, (x,), order=2, hessian_modes=("reverse over reverse",))


# ---------------------------------------------------------------- loops over rows with vectorized row ops

def row_loop(W, X):
    total = 0.0
    for i in range(X.shape[0]):
        h = np.tanh(X[i] @ W)
        total = total + np.sum(h * h) * (i + 1.0)
    return total


def row_loop_hand_gradient(W, X):
    g = np.zeros_like(W)
    for i, x in enumerate(X):
        h = np.tanh(x @ W)
        g += (i + 1.0) * np.outer(x, 2.0 * h * (1.0 - h * h))
    return g


def test_loop_over_rows_with_vectorized_row_operations():
    rng = np.random.default_rng(3)
    W, X = rng.standard_normal((3, 2)), rng.standard_normal((6, 3))
    f = jitad.jit_grad(row_loop, argnums=(0, 1))
    value, (gW, gX) = f.value_and_grad(W, X)
    assert value == pytest.approx(row_loop(W, X), rel=1e-12)
    assert_close(gW, row_loop_hand_gradient(W, X), rtol=1e-11, atol=1e-13)
    assert_close(gX, numeric_grad(row_loop, (W, X), 1)[0], rtol=1e-6, atol=1e-8)


def test_loop_over_rows_second_order_without_numba():
    rng = np.random.default_rng(4)
    check_grads_python(row_loop, (rng.standard_normal((3, 2)), rng.standard_normal((5, 3))),
                       argnums=(0, 1), order=2)


# ---------------------------------------------------------------- loop patterns (unrolled; codegen re-rolls)

def recurrence(x):
    y = x[0]
    for i in range(1, len(x)):
        y = np.sin(y) * x[i] + y
    return y


def strided_pairs(x):
    return sum(x[i] * x[i + 1] ** 2 for i in range(0, len(x) - 1, 2))


def backwards_sweep(x):
    t = 0.0
    for i in range(len(x) - 1, 0, -1):
        t = t + x[i] * np.cos(x[i - 1] + t)
    return t


def row_pairs(X):
    t = 0.0
    for i in range(X.shape[0] - 1):
        t = t + np.sum(X[i] * X[i + 1]) ** 2
    return t


def running_products(x):
    p, out = 1.0, 0.0
    for i in range(len(x)):
        p = p * x[i]
        out = out + p
    return out


def runge_kutta(k):
    """12 classical RK4 steps of y' = -k y from y(0) = 1 (h = 0.1)."""
    y, h = 1.0, 0.1
    for _ in range(12):
        a = -k * y
        b = -k * (y + h / 2 * a)
        c = -k * (y + h / 2 * b)
        d = -k * (y + h * c)
        y = y + h / 6 * (a + 2 * b + 2 * c + d)
    return y


LOOP_CASES = [(recurrence, (12,)), (strided_pairs, (13,)), (backwards_sweep, (12,)),
              (row_pairs, (10, 3)), (running_products, (12,)), (runge_kutta, ())]
CODE_SHAPES = ["straight", "loops"] if "code_shape" in jitad.jit_grad.__code__.co_varnames else ["auto"]


def _loop_args(fun, shape):
    rng = np.random.default_rng(len(fun.__name__))
    return (0.7,) if shape == () else (rng.uniform(0.5, 1.2, shape),)


@pytest.mark.parametrize("code_shape", CODE_SHAPES)
@pytest.mark.parametrize("fun, shape", LOOP_CASES, ids=[c[0].__name__ for c in LOOP_CASES])
def test_loop_patterns_all_checks_without_numba(fun, shape, code_shape):
    args = _loop_args(fun, shape)
    options = {} if code_shape == "auto" else {"code_shape": code_shape}
    check_grads_python(jitad.jit_grad(fun, **options), args, order=2,
                       hessian_modes=("forward over reverse",))


@pytest.mark.parametrize("fun, shape", [pytest.param(*case, id=case[0].__name__)
                                        for case in LOOP_CASES])
def test_loop_patterns_hessian_reverse_over_reverse(fun, shape):
    check_grads_python(fun, _loop_args(fun, shape), order=2, hessian_modes=("reverse over reverse",))


def test_runge_kutta_derivative_matches_the_closed_form_of_the_scheme():
    # One RK4 step multiplies y by R(z) = 1 + z + z²/2 + z³/6 + z⁴/24 with z = -k h,
    # so y = R(z)^12 and dy/dk = 12 R^11 R'(z) (-h).
    k, h = 0.7, 0.1
    z = -k * h
    R = 1 + z + z ** 2 / 2 + z ** 3 / 6 + z ** 4 / 24
    dR = 1 + z + z ** 2 / 2 + z ** 3 / 6
    f = jitad.jit_grad(runge_kutta)
    value, g = f.value_and_grad(k)
    assert value == pytest.approx(R ** 12, rel=1e-13)
    assert g == pytest.approx(12 * R ** 11 * dR * (-h), rel=1e-12)


def test_recurrence_compiled_matches_plain_python_and_differences():
    x = _loop_args(recurrence, (12,))[0]
    f = jitad.jit_grad(recurrence)
    value, g = f.value_and_grad(x)
    py_value, (py_g,) = python_value_and_grad(f, (x,))
    assert value == pytest.approx(py_value, rel=1e-12)
    assert_close(g, py_g, 1e-12, 1e-14)
    assert_close(g, numeric_grad(recurrence, (x,))[0], 1e-6, 1e-8)


# ---------------------------------------------------------------- integer arrays: labels and indices

def cross_entropy(w, X, labels):
    signs = 2 * labels - 1
    return np.mean(np.logaddexp(0.0, -signs * (X @ w)))


def test_integer_labels_are_runtime_inputs_not_constants():
    f = jitad.jit_grad(cross_entropy)
    w, X, _ = logistic_data(30)
    rng = np.random.default_rng(9)
    for _ in range(3):
        labels = rng.integers(0, 2, size=30)            # new label values each call
        want = logreg_hand_gradient(w, X, 2.0 * labels - 1.0, 0.0)
        assert_close(f(w, X, labels), want, rtol=1e-10, atol=1e-14)
    assert f.trace_count == 1 and f.compile_count == 1


def test_integer_index_array_selects_rows_at_run_time():
    f = jitad.jit_grad(lambda x, idx: np.sum(x[idx] ** 2))
    x = np.array([1.0, -2.0, 3.0, 0.5])
    for idx, counts in (([0, 0, 3], [2, 0, 0, 1]), ([2, 1, 2], [0, 1, 2, 0])):
        assert_close(f(x, np.array(idx)), 2 * x * np.array(counts), 1e-14, 0)
    assert f.trace_count == 1


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.uint32, np.int64])
def test_index_arrays_of_any_integer_dtype(dtype):
    f = jitad.jit_grad(lambda x, idx: np.sum(x[idx] ** 3))
    x = np.array([1.0, 2.0, 3.0])
    _, (g,) = python_value_and_grad(f, (x, np.array([2, 0, 2], dtype=dtype)))
    assert_close(g, 3 * x ** 2 * np.array([1.0, 0.0, 2.0]), 1e-14, 0)


def test_bool_mask_is_a_runtime_input():
    f = jitad.jit_grad(lambda x, mask: np.sum(np.where(mask, x, 0.0) ** 2))
    x = np.array([1.0, 2.0, 3.0])
    for mask in ([True, False, True], [False, True, True]):
        mask = np.array(mask)
        _, (g,) = python_value_and_grad(f, (x, mask))
        assert_close(g, 2 * x * mask, 0, 0)
    assert f.trace_count == 1


@pytest.mark.parametrize("fun", [
    lambda x: np.sum(x * ((x > 0) + (x > 1))),
    lambda x: np.sum(x * np.add(x > 0, x < -1)),
    lambda x: np.sum(x * ((x > 0) + True)),
    lambda x: sum(np.add(x[i] > 0, x[i - 1] > 0) * x[i] for i in range(4)),
], ids=["arrays", "np.add", "literal", "scalars"])
def test_adding_bools_is_a_logical_or_as_in_numpy(fun):
    # NumPy: True + True is True; compiled element code added them as integers (2)
    f = jitad.jit_grad(fun, tiers=False)
    x = np.array([-1.5, 0.5, 1.5, 2.0])
    value, g = f.value_and_grad(x)
    assert_close(value, fun(x), 1e-14, 0)
    assert_close(g, numeric_grad(fun, (x,), 0)[0], 1e-6, 1e-8)


@pytest.mark.parametrize("fun", [
    lambda x: np.sum(np.where((x > 0) & (x < 1), x ** 2, x)),
    lambda x: np.sum(np.where((x > 1) | (x < -1), x ** 2, x)),
    lambda x: np.sum(np.where((x > 0) ^ (x > 1), x ** 2, x)),
    lambda x: np.sum(np.where(~(x > 0), x ** 2, x)),
    lambda x: np.sum(x[(x > 0) & (x < 1)] ** 2),
    lambda x: np.sum(np.where(np.array([True, False, True, True, False]) & (x > 0), x ** 3, x)),
    lambda x: np.sum(np.where(np.logical_and(x > 0, x < 1), x ** 2, x)),
    lambda x: np.sum(np.where(np.logical_not(x > 0), x ** 2, x)),
    lambda x: x[0] * ((x[1] > 0) & (x[2] > 0)) + x[1] ** 2 * np.logical_not(x[3] > 0),
], ids=["and", "or", "xor", "not", "mask", "constant", "logical_and", "logical_not", "scalars"])
def test_masks_combine_with_logical_operators(fun):
    # `&`, `|`, `^`, `~` of traced bools raised Python's TypeError ('Tracer' and 'Tracer')
    f = jitad.jit_grad(fun, tiers=False)
    x = np.array([-1.5, 0.5, 1.5, -0.2, 0.9])
    value, g = f.value_and_grad(x)
    assert_close(value, fun(x), 1e-14, 0)
    assert_close(g, numeric_grad(fun, (x,), 0)[0], 1e-6, 1e-8)


@pytest.mark.parametrize("fun, what", [
    (lambda x: ((x[0] > 0) + (x[1] > 0)) * x[2], "adding two traced bools"),
    (lambda x: ((x[0] > 0) + True) * x[2], "adding two traced bools"),
    (lambda x: (~(x[0] > 0)) * x[2], "~ of a traced scalar bool"),
], ids=["+", "+ literal", "~"])
def test_scalar_bool_operators_python_and_numpy_disagree_on_are_trace_errors(fun, what):
    # Python's True + True is 2 and ~True is -2; NumPy's are True and False: a traced
    # scalar (from a Python float or an array element) cannot tell which it stands for
    with pytest.raises(jitad.TraceError, match=what):
        jitad.jit_grad(fun, tiers=False)(np.array([0.5, 1.5, 2.0]))


def test_bitwise_operators_on_traced_integers_are_trace_errors():
    f = jitad.jit_grad(lambda x, k: np.sum(x * (k & 1)))
    with pytest.raises(jitad.TraceError, match="& operator"):
        f(np.ones(3), np.array([1, 2, 3]))


def test_differentiating_an_integer_array_is_an_argument_error():
    f = jitad.jit_grad(cross_entropy, argnums=2)
    w, X, _ = logistic_data(5)
    with pytest.raises(jitad.ArgumentError, match="labels"):
        f(w, X, np.array([0, 1, 1, 0, 1]))


# ---------------------------------------------------------------- returned gradients: shape and dtype

def shapes_fun(a, b, c, s, M):
    return np.sum(np.sin(a * b)) + np.sum(c ** 2) * s + np.sum(M @ c)


def test_gradients_have_the_shape_of_their_argument_and_dtype_float64():
    rng = np.random.default_rng(11)
    args = (rng.standard_normal((1, 3)), rng.standard_normal((2, 1)), rng.standard_normal(3), 0.5,
            rng.standard_normal((2, 3)))
    f = jitad.jit_grad(shapes_fun, argnums=(0, 1, 2, 3, 4))
    grads = f(*args)
    for arg, g, want in zip(args, grads, numeric_grad(shapes_fun, args, (0, 1, 2, 3, 4))):
        if isinstance(arg, float):
            assert type(g) is float
        else:
            assert isinstance(g, np.ndarray) and g.shape == arg.shape and g.dtype == np.float64
        assert_close(g, want, rtol=1e-6, atol=1e-8)


@pytest.mark.filterwarnings("ignore::numba.core.errors.NumbaPerformanceWarning")
def test_non_contiguous_and_fortran_ordered_inputs_give_correct_gradients():
    f = jitad.jit_grad(lambda x, M: np.sum(np.tanh(M @ x)) + np.sum(x ** 3), argnums=(0, 1))
    base = np.arange(1.0, 7.0) / 4.0
    x = base[::2]                                      # strided view
    M = np.asfortranarray(np.arange(6.0).reshape(2, 3) / 5.0)
    plain = lambda x, M: np.sum(np.tanh(M @ x)) + np.sum(x ** 3)  # noqa: E731
    gx, gM = f(x, M)
    wx, wM = numeric_grad(plain, (x, M), (0, 1))
    assert_close(gx, wx, 1e-6, 1e-8)
    assert_close(gM, wM, 1e-6, 1e-8)
    assert_close(f(np.ascontiguousarray(x), np.ascontiguousarray(M))[0], gx, 1e-13, 0)


def test_float32_input_is_rejected_with_a_clear_error():
    w, X, y = logistic_data(10)
    with pytest.raises(jitad.ArgumentError, match=r"float32.*float64|float64.*float32"):
        logreg(w.astype(np.float32), X, y, 0.1)
    with pytest.raises(jitad.ArgumentError, match="float64"):
        logreg(w, X.astype(np.float32), y, 0.1)


def _scalar_reductions_selected(x):
    kept = np.max(x, keepdims=True)                  # a reduction of a scalar: a scalar
    return np.where(x > 0.5, kept, 0.0) + np.where(x > 0.5, np.sum(x * x, keepdims=True), x) \
        + scipy.special.logsumexp(x)


def test_reductions_and_reshapes_of_scalars_stay_scalars_in_the_compiled_code():
    # np.full((), ...) made a 0-d array that a scalar select could not join with a float
    # (a Numba typing error from the generated code)
    f = jitad.jit_grad(_scalar_reductions_selected)
    for x in (0.7, np.array(0.7), 0.2):
        value, grad = f.value_and_grad(x)
        assert_close(value, _scalar_reductions_selected(float(x)), 1e-15, 0)
        h = 1e-6
        want = (_scalar_reductions_selected(float(x) + h)
                - _scalar_reductions_selected(float(x) - h)) / (2 * h)
        assert_close(grad, want, 1e-7, 0)
