"""Arrays the traced function makes and fills in place (`r = np.zeros(n); r[i] = ...`).

Each function is compared with itself run on plain NumPy (values) and with central
differences (gradients, forward mode, Hessian-vector products), in the straight and the
re-rolled (loop) code shapes. Updates of arguments are errors; views either behave as
NumPy's or raise.
"""
import numpy as np
import pytest
from numpy import zeros as imported_zeros

import jitad
from conftest import adjoint_list, assert_close, check_grads_python, numeric_grad, \
    prim_names, python_value_and_grad

HERE = "test_inplace.py"
RNG = np.random.default_rng(11)
T = np.linspace(0.0, 1.0, 8)
Y = np.cos(3.0 * T)
X = RNG.uniform(0.5, 1.5, 8)


def residuals(p, t, y):
    r = np.zeros(len(t))
    for i in range(len(t)):
        r[i] = p[0] * np.exp(-p[1] * t[i]) - y[i]
    return 0.5 * np.sum(r ** 2)


def recurrence(x):
    r = np.empty(len(x))
    r[0] = x[0]
    for i in range(1, len(x)):
        r[i] = 0.5 * r[i - 1] + np.sin(x[i])
    return np.sum(r * x)


def accumulate(x):
    r = np.ones(len(x))
    for i in range(1, len(x)):
        r[i] += x[i] * x[i - 1]
        r[i - 1] *= 1.5
    r /= 2.0
    r -= x
    return np.sum(np.tanh(r))


def slices(x):
    r = np.zeros(len(x) + 2)
    r[1:3] = x[:2] * 2.0
    r[4:] = np.sin(x[2:])
    r[::3] += 1.0
    r[-1] = r[0] * x[1]
    return np.sum(r ** 2) + r[4] * r[1]


def rows(x):
    M = np.zeros((4, len(x)))
    for i in range(4):
        M[i, :] = np.sin(x * (i + 1.0))
    M[:, 0] = 2.0                  # a broadcast scalar
    M[1:3] = x[:2, None] * x[None, :]     # a 2-D region
    return np.sum(M @ M.T)


def nested(x):
    n = len(x)
    M = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            M[i, j] = x[i] * x[j] + (i - j)
    return np.sum(np.tanh(M))


def branches(x):
    r = np.zeros_like(x)
    for i in range(len(x)):
        if x[i] > 1.0:
            r[i] = x[i] ** 2
        else:
            r[i] = -2.0 * x[i]
    return np.sum(r * x)


def index_arrays(x, idx):
    r = np.zeros(len(x))
    r[idx] = x[:3] ** 2
    r[[1, 3]] += np.sin(x[4:6])
    r[np.array([5, 7])] = 3.0
    return np.sum(r * x)


def made_by_many_spellings(x):
    a = np.full(3, x[0])                   # a traced fill value
    b = np.zeros_like(x)                   # like a traced array
    c = np.ones((2, 3))
    d = imported_zeros(3)                  # from numpy import zeros
    e = np.full_like(x, 2.0)
    k = np.zeros(2, dtype=int)             # integers stay NumPy's
    a[1] = x[1]
    b[2] = x[3] * a[0]
    c[1, 2] = x[2]
    d[k[0]] = x[4]
    e[0] = 0.0
    return np.sum(a) + np.sum(b * x) + np.sum(c) + np.sum(d) + np.sum(e * x)


CASES = [
    ("residuals", residuals, (np.array([1.0, 0.5]), T, Y), 0),
    ("recurrence", recurrence, (X,), 0),
    ("augmented", accumulate, (X,), 0),
    ("slices", slices, (X,), 0),
    ("rows", rows, (X,), 0),
    ("nested loops", nested, (X[:5],), 0),
    ("branches", branches, (X,), 0),
    ("index arrays", index_arrays, (X, np.array([6, 0, 2])), 0),
    ("spellings", made_by_many_spellings, (X,), 0),
]


@pytest.mark.parametrize("code_shape", ["straight", "loops"])
@pytest.mark.parametrize("case, fun, args, argnums", CASES, ids=[c[0] for c in CASES])
def test_values_and_gradients_match_numpy_and_central_differences(case, fun, args, argnums,
                                                                  code_shape):
    f = jitad.jit_grad(fun, argnums=argnums, code_shape=code_shape)
    check_grads_python(f, args, order=2, context=f"{case} ({code_shape})")


@pytest.mark.parametrize("fun, args", [(residuals, (np.array([1.0, 0.5]), T, Y)),
                                       (recurrence, (X,)), (accumulate, (X,))])
def test_fill_loops_re_roll_in_both_sweeps(fun, args):
    f = jitad.jit_grad(fun, code_shape="loops")
    source = f.source(*args)
    assert source.count("for k") >= 2, source         # the forward and the reverse loop
    assert ".copy()" not in source, "updates must happen in place"


def test_compiled_residuals_match_numpy():
    p = np.array([1.2, 0.7])
    value, grad = jitad.jit_grad(residuals).value_and_grad(p, T, Y)
    assert value == pytest.approx(residuals(p, T, Y), rel=1e-12)
    e = np.exp(-p[1] * T)
    r = p[0] * e - Y
    assert_close(grad, np.array([np.sum(r * e), -np.sum(r * p[0] * T * e)]), 1e-12, 1e-12)


def test_a_long_fill_loop_becomes_short_source():
    t = np.linspace(0.0, 1.0, 400)
    f = jitad.jit_grad(residuals)
    source = f.source(np.array([1.0, 0.5]), t, np.cos(t))
    assert len(source.splitlines()) < 120 and "for k" in source


def test_the_adjoint_zeroes_the_overwritten_region():
    def overwrite(x):
        r = np.zeros(2)
        r[0] = x * 3.0
        r[0] = x * x            # the first value no longer reaches the output
        return np.sum(r)
    f = check_grads_python(overwrite, (1.5,), order=2)
    assert python_value_and_grad(f, (1.5,))[1][0] == pytest.approx(3.0)
    assert "index_update" in prim_names(adjoint_list(f, (1.5,)))


# ---------------------------------------------------------------- aliasing

def test_names_bound_to_the_same_array_see_the_update():
    def alias(x):
        r = np.zeros(3)
        s = r
        r[1] = x[0]
        r += x
        return np.sum(s * x)
    check_grads_python(alias, (X[:3],))


def test_copies_and_arguments_keep_their_values():
    def copies(x):
        r = x.copy()
        r[0] = 0.0
        q = +r
        q[1] = 5.0
        return np.sum(r * x) + np.sum(q)
    check_grads_python(copies, (X[:3],))


def test_a_slice_view_updated_with_an_augmented_operator_writes_through():
    def through(x):
        r = np.zeros(4)
        v = r[1:]
        v += x[1:]
        v *= x[0]
        return np.sum(r ** 2) + np.sum(v)
    check_grads_python(through, (X[:4],), order=2)


def test_using_a_view_taken_before_an_update_is_an_error():
    def stale(x):
        r = np.zeros(3)
        v = r[1:]
        r[2] = x[0]
        return np.sum(v)
    with pytest.raises(jitad.TraceError, match=rf"(?s)view.*updated in place.*{HERE}:\d+ \(stale\)"):
        jitad.jit_grad(stale).wengert(X[:3])


def test_item_assignment_through_a_view_is_an_error():
    def through_view(x):
        r = np.zeros(3)
        v = r[1:]
        v[0] = x[0]
        return np.sum(r)
    with pytest.raises(jitad.TraceError, match=rf"(?s)through a view.*{HERE}:\d+ \(through_view\)"):
        jitad.jit_grad(through_view).wengert(X[:3])


@pytest.mark.parametrize("body, pattern", [
    ("x[0] = 1.0", r"in-place assignment to the argument 'x'.*caller's data"),
    ("x += 1.0", r"in-place assignment to the argument 'x' \(x \+= \.\.\.\)"),
    ("x[1:][0] = 1.0", r"in-place assignment to the argument 'x'"),
])
def test_updating_an_argument_is_an_error_naming_it_and_the_line(body, pattern):
    namespace = {"np": np}
    exec(f"def g(x):\n    {body}\n    return np.sum(x)\n", namespace)
    with pytest.raises(jitad.TraceError, match=rf"(?s){pattern}.*\(g\)"):
        jitad.jit_grad(namespace["g"]).wengert(X[:3])


def test_repeated_indices_in_an_update_are_an_error():
    def repeated(x, idx):
        r = np.zeros(3)
        r[idx] = x
        return np.sum(r)
    with pytest.raises(ValueError, match="repeats index 1"):
        jitad.jit_grad(repeated).wengert(X[:2], np.array([1, 1]))


def negated_at(x, idx):
    r = x.copy()
    r[idx] = -2.0 * r[idx]         # the adjoint zeroes r's cotangent at idx
    return np.sum(np.tanh(r) * r)


def filled_at(x, idx):
    r = x.copy()
    r[idx] = 0.5                   # a scalar broadcast to idx's length
    return np.sum(np.tanh(r) * r)


def rows_filled_at(x, idx):
    M = np.outer(x, x[:3])
    M[idx] = x[1:4]                # a row broadcast to (len(idx), 3)
    return np.sum(np.tanh(M) * M)


@pytest.mark.parametrize("tiers", [True, False])
@pytest.mark.parametrize("fun", [negated_at, filled_at, rows_filled_at])
def test_an_index_array_argument_of_another_length_reuses_the_code_correctly(fun, tiers):
    # Nothing reads a size, so one specialization serves every length of idx: the broadcast
    # value and the adjoint's zeros must take idx's length at run time, not the traced one.
    f = jitad.jit_grad(fun, tiers=tiers)
    v = RNG.normal(size=6)
    for _ in range(2):
        for idx in (np.array([0, 3]), np.array([5, 1, 2]), np.array([4]), np.array([1, 2, 3, 4])):
            value, grad = f.value_and_grad(X[:6], idx)
            assert_close(value, fun(X[:6], idx), what=f"value at idx={idx}")
            assert_close(grad, numeric_grad(fun, (X[:6], idx))[0], rtol=1e-5, atol=1e-7,
                         what=f"gradient at idx={idx}")
            _, tangent = jitad.jvp(fun)(X[:6], v, idx)
            want = (fun(X[:6] + 1e-6 * v, idx) - fun(X[:6] - 1e-6 * v, idx)) / 2e-6
            assert_close(tangent, want, rtol=1e-5, atol=1e-7, what=f"J v at idx={idx}")
        f.wait()


def test_a_constant_value_of_another_length_than_the_index_array_is_numpys_error():
    def constant(x, idx):
        r = x.copy()
        r[idx] = np.array([1.0, 2.0])
        return np.sum(r * r)
    f = jitad.jit_grad(constant, tiers=False)
    assert_close(f.value(X[:4], np.array([0, 3])), constant(X[:4], np.array([0, 3])))
    with pytest.raises(ValueError):
        constant(X[:4], np.array([0, 1, 3]))
    with pytest.raises(ValueError, match="could not broadcast"):
        f.value(X[:4], np.array([0, 1, 3]))


def histogram(w, idx, k):
    r = np.zeros(4)
    for j in range(len(idx)):
        r[idx[j]] += w[j] ** 2     # an element of an index array argument
    r[k] *= w[0]                   # a 0-d integer argument
    return np.sum(np.sin(r) * np.arange(1.0, 5.0))


@pytest.mark.parametrize("tiers", [True, False])
def test_an_update_at_a_traced_integer_scalar_matches_numpy_at_every_call(tiers):
    f = jitad.jit_grad(histogram, tiers=tiers)
    for idx, k in ((np.array([0, 1, 1, 3, 0, 2]), np.array(1)),
                   (np.array([3, 3, 3, 3, 3, 3]), np.array(3)),
                   (np.array([-1, 1, 2, 2, 0, -4]), np.array(-1))):
        value, grad = f.value_and_grad(X[:6], idx, k)
        assert_close(value, histogram(X[:6], idx, k), what=f"value at idx={idx}, k={k}")
        assert_close(grad, numeric_grad(histogram, (X[:6], idx, k))[0], rtol=1e-5, atol=1e-7,
                     what=f"gradient at idx={idx}, k={k}")
    for idx, k in ((np.array([0, 1, 1, 4, 0, 2]), np.array(1)),
                   (np.array([0, 1, 1, 3, 0, 2]), np.array(-5))):
        with pytest.raises(IndexError):
            histogram(X[:6], idx, k)
        with pytest.raises(IndexError, match="out of bounds"):
            f.value_and_grad(X[:6], idx, k)


@pytest.mark.parametrize("tiers", [True, False])
def test_an_index_out_of_bounds_is_numpys_index_error_also_after_a_repeated_one(tiers):
    def repeated(x, idx):
        r = np.zeros(5)
        r[idx] = x
        return np.sum(r * r)
    f = jitad.jit_grad(repeated, tiers=tiers)
    f(X[:3], np.array([0, 2, 4]))
    with pytest.raises(IndexError):
        repeated(X[:3], np.array([1, 1, 7]))
    with pytest.raises(IndexError, match="out of bounds"):   # (not the repeat's ValueError)
        f(X[:3], np.array([1, 1, 7]))
    with pytest.raises(IndexError, match="out of bounds"):
        jitad.jit_grad(repeated, tiers=tiers)(X[:3], np.array([-1, 4, -6]))


def from_identities(x):
    A = np.eye(3)
    A[0] = x[:3]
    A[:, 2] += x[3:6]
    B = np.identity(2)
    B[1, 0] = x[0] * x[1]
    C = np.eye(2, 3, k=1)                   # rectangular, off the diagonal
    C[1] *= x[2]
    k = np.eye(3, dtype=int)                # integers stay NumPy's
    return np.linalg.det(A) + np.sum(B @ C) + np.sum(np.sin(A) * k)


def test_np_eye_and_identity_make_arrays_that_update_in_place():
    check_grads_python(from_identities, (X[:6],), order=2)
    f = jitad.jit_grad(from_identities, tiers=False)
    assert_close(f.value_and_grad(X[:6])[1], numeric_grad(from_identities, (X[:6],))[0],
                 rtol=1e-5, atol=1e-7)


def test_a_scalar_accumulator_still_rebinds():
    def scalar(x):
        s = x[0]
        t = s
        s += x[1]               # Python numbers rebind: t keeps x[0]
        return s * t
    check_grads_python(scalar, (X[:2],))


def test_shape_mismatch_is_numpys_error():
    def mismatch(x):
        r = np.zeros(3)
        r[:2] = x
        return np.sum(r)
    with pytest.raises(jitad.ShapeError, match=r"could not broadcast input array from shape \(3,\)"):
        jitad.jit_grad(mismatch).wengert(X[:3])


def test_a_wrong_update_rule_fails_the_check(monkeypatch):
    from jitad.primitives import REGISTRY
    prim = REGISTRY["index_update"]
    right = prim.vjp

    def forgets_to_zero(b, g, out, acc, value, index):       # the overwritten value leaks
        return g, right(b, g, out, acc, value, index)[1]
    monkeypatch.setattr(prim, "vjp", forgets_to_zero)

    def overwrite(x):
        r = np.zeros(2)
        r[0] = x * 3.0
        r[0] = x * x
        return np.sum(r)
    with pytest.raises(AssertionError, match="central differences"):
        check_grads_python(overwrite, (1.5,))
