"""Index arrays anywhere and boolean masks: reads and in-place updates against NumPy,
gradients against central differences, bounds and mask checks at call time."""
import numpy as np
import pytest

import jitad
from jitad import numpy_functions
from jitad.errors import GuardFailed, TraceError
from jitad.api import build_source
from jitad.compile import load_python

from conftest import check_grads_python, traced

rng = np.random.default_rng(11)
A = rng.normal(size=(4, 5))
Q = rng.normal(size=(3, 4, 5))
X = rng.normal(size=6)
ROWS, COLS = np.array([0, 2, 3, 2]), np.array([1, 4, 0, 1])
IDX = np.array([0, 3, 5, 1])
W = np.arange(1.0, 61.0)         # weights: every element of a result counts differently


def weighted(y):
    return np.sum(np.ravel(y) ** 2 * W[:np.size(y)])


READS = {     # name: (function of (array, rows, cols), array)
    "A[r, c]": (lambda a, r, c: a[r, c], A),
    "A[:, r]": (lambda a, r, c: a[:, r], A),
    "A[r, 1:3]": (lambda a, r, c: a[r, 1:3], A),
    "A[1:3, c]": (lambda a, r, c: a[1:3, c], A),
    "A[r[:, None], c]": (lambda a, r, c: a[r[:, None], c], A),
    "Q[:, r, c]": (lambda q, r, c: q[:, r, c], Q),
    "Q[:, r, 1]": (lambda q, r, c: q[:, r, 1], Q),
    "Q[c % 3, :, r] (apart: in front)": (lambda q, r, c: q[c[:3] % 3, :, r[:3]], Q),
    "Q[..., c]": (lambda q, r, c: q[..., c], Q),
    "Q[1, :, c]": (lambda q, r, c: q[1, :, c], Q),
    "Q[None, :, r, c]": (lambda q, r, c: q[None, :, r, c], Q),
}


@pytest.mark.parametrize("name", list(READS))
@pytest.mark.parametrize("where", ["argument", "constant"])
def test_reads_with_index_arrays_match_numpy_and_differentiate(name, where):
    pick, a = READS[name]
    rows, cols = (ROWS, COLS) if "c %" not in name else (ROWS, COLS)
    if where == "argument":
        check_grads_python(lambda a, r, c: weighted(pick(a, r, c)), (a, rows, cols),
                           context=name)
    else:
        check_grads_python(lambda a: weighted(pick(a, rows, cols)), (a,), context=name)


def _filled(a, assign):
    r = np.zeros(a.shape) + a
    assign(r)
    return weighted(r)


UPDATES = {   # name: (assignment of (r, v, rows, cols), array, value)
    "Q[:, r, c] = v": (lambda q, v, r, c: q.__setitem__((slice(None), r, c), v), Q,
                       rng.normal(size=(3, 4))),
    "A[r, c] = v": (lambda q, v, r, c: q.__setitem__((r, c), v), A, rng.normal(size=4)),
    "A[1:3, c] = v (broadcast)": (lambda q, v, r, c: q.__setitem__((slice(1, 3), c), v), A,
                                  rng.normal(size=4)),
    "A[r, :] += v": (lambda q, v, r, c: q.__setitem__((r, slice(None)), q[r, :] + v), A,
                     rng.normal(size=5)),
}


@pytest.mark.parametrize("name", list(UPDATES))
def test_updates_with_constant_index_arrays_keep_numpys_last_write(name):
    assign, a, v = UPDATES[name]         # ROWS repeats 2 and (2, 1): NumPy's last write wins
    check_grads_python(lambda a, v: _filled(a, lambda r: assign(r, v, ROWS, COLS)), (a, v),
                       argnums=(0, 1), context=name)


def test_augmented_update_with_repeated_constant_indices_does_not_accumulate():
    def f(x, v):
        r = np.zeros(6) + x
        r[IDX[[0, 1, 1, 3]]] += v         # index 3 twice: NumPy adds the last v only
        return weighted(r)
    check_grads_python(f, (X, rng.normal(size=4)), argnums=(0, 1))


def _columns_scaled(a, v, idx):
    r = np.zeros(a.shape) + a
    r[:, idx] *= v[0]               # reads a copy (NumPy's fancy indexing), scales it,
    r[:, idx] += 1.0                # writes it back
    r[..., idx[:1]] -= v[1]
    return weighted(r)


@pytest.mark.parametrize("array", ["A", "Q"])
def test_augmented_updates_of_columns_picked_by_a_traced_index_array(array):
    # `M[:, idx] *= v` with idx an argument was a TraceError ("through a view"): the read
    # M[:, idx] is a copy in NumPy, updated and written back.
    a = A if array == "A" else Q
    check_grads_python(_columns_scaled, (a, rng.normal(size=2), np.array([3, 1])),
                       argnums=(0, 1), context=array)


def test_updates_with_traced_distinct_index_arrays():
    assign, a, v = UPDATES["Q[:, r, c] = v"]
    rows, cols = np.array([0, 2, 3, 1]), np.array([1, 4, 0, 1])
    check_grads_python(lambda a, v, r, c: _filled(a, lambda q: assign(q, v, r, c)),
                       (a, v, rows, cols), argnums=(0, 1))


def test_traced_repeated_update_indices_raise_rather_than_guess():
    def f(x, v, i):
        r = np.zeros(6) + x
        r[i] += v
        return np.sum(r)
    with pytest.raises(ValueError, match="repeats index"):
        check_grads_python(f, (X, np.ones(4), IDX[[0, 1, 1, 3]]))


def _value_source(f, args):
    variant, runtime = traced(jitad.jit_grad(f), args)
    source, name, _ = build_source(variant, "value", variant.wrt, "f")
    return load_python(source, name), runtime


def test_out_of_bounds_index_arrays_raise_index_error_at_trace_and_call_time():
    f = lambda a, r, c: np.sum(a[:, r, c])       # noqa: E731
    with pytest.raises(IndexError):
        check_grads_python(f, (Q, ROWS, COLS + 1))
    run, runtime = _value_source(f, (Q, ROWS, COLS))
    assert run(*runtime) == pytest.approx(np.sum(Q[:, ROWS, COLS]))
    bad = list(runtime)                            # the arguments, then captured constants
    bad[2] = COLS + 1                              # 5 is outside axis 2 (size 5)
    with pytest.raises(IndexError):
        run(*bad)
    bad[2] = COLS - 5                              # negative indices wrap, as NumPy's
    assert run(*bad) == pytest.approx(np.sum(Q[:, ROWS, COLS - 5]))


@pytest.mark.parametrize("spelling", ["A[r, c]", "A[r, c] = v"])
def test_index_arrays_that_do_not_broadcast_together_are_numpys_index_error(spelling):
    def read(a, r, c):
        return np.sum(a[r, c])

    def update(a, r, c):
        b = a.copy()
        b[r, c] = 1.0
        return np.sum(b * b)
    fun = read if spelling == "A[r, c]" else update
    with pytest.raises(IndexError):
        fun(A, ROWS[:3], COLS)
    f = jitad.jit_grad(fun, tiers=False)
    f(A, ROWS, COLS)                    # compiled for rows and columns of one length
    with pytest.raises(IndexError, match=r"(?s)could not be broadcast together.*\(read|update\)"):
        f(A, ROWS[:3], COLS)


@pytest.mark.parametrize("kind", ["argument", "constant", "computed"])
def test_masks_read_and_update(kind):
    mask = X > 0
    if kind == "argument":
        check_grads_python(lambda x, m: weighted(x[m]), (X, mask))
        check_grads_python(lambda x, m: _filled(x, lambda r: r.__setitem__(m, 2.0 * x[m])),
                           (X, mask))
    elif kind == "constant":
        check_grads_python(lambda x: weighted(x[mask]) + weighted(A[A > 0]), (X,))
    else:
        check_grads_python(lambda x: weighted(x[x > 0]), (X,))
        check_grads_python(lambda a: weighted(a[a[:, 0] > 0, 1:]), (A,))


def test_a_mask_with_another_count_fails_the_guard_never_reads_wrong_data():
    run, runtime = _value_source(lambda x, m: np.sum(x[m] ** 2), (X, X > 0))
    assert run(*runtime) == pytest.approx(np.sum(X[X > 0] ** 2))
    fewer, same_count = X > 0, np.roll(X > 0, 1)
    fewer[np.argmax(fewer)] = False
    assert same_count.sum() == (X > 0).sum() and (same_count != (X > 0)).any()
    for other in (fewer, same_count, np.ones(6, bool), ~(X > 0)):
        with pytest.raises(GuardFailed):
            run(X, other, *runtime[2:])


def test_compiled_masks_retrace_when_the_mask_changes():
    f = jitad.jit_grad(lambda x: np.sum(x[x > 0] ** 3))
    for x in (X, -X, X + 0.3):
        value, grad = f.value_and_grad(x)
        assert value == pytest.approx(np.sum(x[x > 0] ** 3))
        np.testing.assert_allclose(grad, np.where(x > 0, 3 * x ** 2, 0.0), rtol=1e-12)


def test_a_wrong_position_rule_fails_the_checks(monkeypatch):
    right = numpy_functions._flat_index
    monkeypatch.setattr(numpy_functions, "_flat_index", lambda base, terms: right(base, terms[:1]))
    with pytest.raises(AssertionError):
        check_grads_python(lambda a, r, c: weighted(a[:, r, c]), (Q, ROWS, COLS))


def test_var_and_std_methods_are_numpys_by_hand():
    f = jitad.jit_grad(lambda x: x.var() + x.std(ddof=1))
    x = np.array([1.5, 2.7, 3.1, -0.4])
    n, d = x.size, x - x.mean()
    std1 = np.sqrt(np.sum(d ** 2) / (n - 1))
    value, grad = f.value_and_grad(x)
    assert value == pytest.approx(np.mean(d ** 2) + std1, rel=1e-14)
    np.testing.assert_allclose(grad, 2 * d / n + d / ((n - 1) * std1), rtol=1e-13)
    check_grads_python(lambda a: np.sum(a.var(axis=0, keepdims=True) * a), (A,))


def test_negative_runtime_indices_on_inner_axes_wrap_within_their_axis():
    # a flat position r * 5 + c with c < 0 would read the previous row: each index wraps alone
    run, runtime = _value_source(lambda a, r, c: np.sum(a[r, c] * np.arange(4.0)),
                                 (A, ROWS, COLS))
    bad = list(runtime)
    bad[2] = COLS - 5
    assert run(*bad) == pytest.approx(np.sum(A[ROWS, COLS - 5] * np.arange(4.0)))


def test_in_place_methods_sort_partition_fill_on_made_arrays():
    def f(x):
        r = np.zeros(6) + x
        r.sort()
        s = np.zeros(6) + x
        s.partition(2)
        t = np.empty(3)
        t.fill(x[0])
        return weighted(r) + np.sum(s ** 2) + weighted(t)
    check_grads_python(f, (X,))
    with pytest.raises(TraceError, match="caller's data"):
        check_grads_python(lambda x: x.sort(), (X,))


def test_gmm_lower_triangles_filled_as_numpy_code_writes_them():
    # ADBench GMM's Q: the packed lower triangle of each component, written in place
    d, k = 3, 2
    icf = rng.normal(size=(k, d + d * (d - 1) // 2))

    def q_matrices(icf):
        q = np.zeros((k, d, d))
        rows, cols = np.tril_indices(d, -1)
        q[:, rows, cols] = icf[:, d:]
        q[:, np.arange(d), np.arange(d)] = np.exp(icf[:, :d])
        return weighted(q @ np.ones(d))
    check_grads_python(q_matrices, (icf,))


@pytest.mark.parametrize("where", ["argument", "constant"])
def test_add_at_accumulates_repeated_indices(where):
    def f(x, v, i):
        r = np.zeros(6) + x
        np.add.at(r, i, v)
        np.subtract.at(r, (i[:2],), 0.5 * v[:2])
        return weighted(r)
    rep = IDX[[0, 1, 1, 3]]
    if where == "argument":
        check_grads_python(f, (X, rng.normal(size=4), rep), argnums=(0, 1))
    else:
        check_grads_python(lambda x, v: f(x, v, rep), (X, rng.normal(size=4)), argnums=(0, 1))
    with pytest.raises(TraceError, match="caller's data"):
        check_grads_python(lambda x: np.add.at(x, [0], 1.0), (X,))
