"""Re-rolled loops: values recomputed instead of taped, and loops over array code.

Generated source is checked as plain Python (no Numba): it is a loop (a few lines for
many iterations), and its value and gradient match the plain function and central
differences (`check_grads_python`) or a hand-derived gradient.
"""
import numpy as np
import pytest

import jitad
from jitad import fuse, reroll

from conftest import assert_close, check_grads_python, python_value_and_grad, traced
from jitad.api import build_source


def source_of(f, *args):
    variant, _ = traced(f, args)
    return build_source(variant, "value_and_grad", variant.wrt, f.__name__, f.code_shape)[0]


def rosenbrock_loop(x):
    total = 0.0
    for i in range(len(x) - 1):
        total += 100.0 * (x[i + 1] - x[i] * x[i]) ** 2 + (1.0 - x[i]) ** 2
    return total


def rosenbrock_hand_gradient(x):
    g = np.zeros_like(x)
    g[:-1] = -400.0 * x[:-1] * (x[1:] - x[:-1] ** 2) - 2.0 * (1.0 - x[:-1])
    g[1:] += 200.0 * (x[1:] - x[:-1] ** 2)
    return g


def carried_from_elsewhere(x, y):
    """The value carried into the first iteration is y[0], not the previous element x[0]."""
    previous, total = y[0], y[1]
    for i in range(1, len(x)):
        d = x[i] - previous * previous
        total += d * d + (0.5 - previous) ** 2
        previous = x[i]
    return total


# ---------------------------------------------------------------- recomputed, not taped

def recomputing(monkeypatch):
    """The reverse sweep in a loop of its own (not each iteration's adjoint right after it,
    which reads the forward values themselves, see test_adjoints_early.py)."""
    monkeypatch.setattr(fuse, "adjoints_early", lambda wengert: None)


def test_reverse_loop_rereads_inputs_instead_of_taping(monkeypatch):
    recomputing(monkeypatch)
    f = jitad.jit_grad(rosenbrock_loop, code_shape="loops")
    x = np.random.default_rng(0).uniform(-1.2, 1.2, 60)
    source = source_of(f, x)
    # one loop (forward and reverse fused, see test_fuse.py) that reads x again
    assert source.count("for k") == 1 and "_tape" not in source
    assert "- k]" in source.split("for k")[1]
    value, (grad,) = python_value_and_grad(f, [x])
    assert value == pytest.approx(rosenbrock_loop(x), rel=1e-13)
    assert_close(grad, rosenbrock_hand_gradient(x), 1e-12, 1e-12, "recomputed gradient")


def test_carried_value_from_elsewhere_is_not_recomputed_as_a_read():
    f = jitad.jit_grad(carried_from_elsewhere, argnums=(0, 1), code_shape="loops")
    x, y = np.random.default_rng(1).uniform(-1.0, 1.0, (2, 40))
    assert "for k" in source_of(f, x, y)
    check_grads_python(f, [x, y], argnums=(0, 1))


def test_a_wrong_recomputation_rule_fails(monkeypatch):
    """Treating every carried initial value as the previous read recomputes x[0] where the
    function used y[0]: the gradient check must catch it."""
    recomputing(monkeypatch)
    monkeypatch.setattr(reroll, "_init_is_previous", lambda *args: True)
    f = jitad.jit_grad(carried_from_elsewhere, argnums=(0, 1), code_shape="loops")
    x, y = np.random.default_rng(1).uniform(-1.0, 1.0, (2, 40))
    with pytest.raises(AssertionError):
        check_grads_python(f, [x, y], argnums=(0, 1))


# ---------------------------------------------------------------- loops over array code

def recurrent(W, U, b, x):
    """h = tanh(W h + U x_t + b) over the rows of x: a vector state carried across steps."""
    h = np.zeros(W.shape[0])
    total = 0.0
    for t in range(x.shape[0]):
        h = np.tanh(W @ h + U @ x[t] + b)
        total = total + np.sum(h * h)
    return total + np.sum(h)


def mixture(means, log_weights, X):
    """A log-sum-exp over K components, each a vector expression over the points."""
    total = np.zeros(X.shape[0])
    for k in range(means.shape[0]):
        d = X - means[k]
        total = total + np.exp(log_weights[k] - 0.5 * np.sum(d * d, axis=1))
    return np.sum(np.log(total))


def filled(p, t, y):
    """An array made in the function and filled in place inside the loop."""
    r = np.zeros(len(t))
    for i in range(len(t)):
        r[i] = p[0] * np.exp(-p[1] * t[i]) - y[i]
    return 0.5 * np.sum(r ** 2)


def rows_updated(A, x):
    """A matrix state: each step updates a row in place and carries the whole matrix."""
    M = np.zeros((x.shape[0], A.shape[1]))
    s = np.zeros(A.shape[1])
    for t in range(x.shape[0]):
        s = np.tanh(A.T @ x[t] + 0.5 * s)
        M[t, :] = s
    return np.sum(M * M)


def recurrent_args(T, seed=0):
    rng = np.random.default_rng(seed)
    H, D = 4, 3
    return [0.5 * rng.standard_normal((H, H)), rng.standard_normal((H, D)),
            rng.standard_normal(H), rng.standard_normal((T, D))]


def loop_lines(source) -> int:
    return source.count("\n")


@pytest.mark.parametrize("T", [8, 16])
def test_recurrent_loop_is_one_loop_with_array_tapes(T):
    f = jitad.jit_grad(recurrent, argnums=(0, 1, 2), code_shape="loops")
    args = recurrent_args(T)
    source = source_of(f, *args)
    assert "for k in range(" in source and "for k1 in range(" in source
    assert "_tape = np.empty(" in source
    check_grads_python(f, args, argnums=(0, 1, 2))
    if T == 16:     # the source does not grow with the trip count
        assert loop_lines(source) == loop_lines(source_of(f, *recurrent_args(8)))


def test_recurrent_gradient_matches_plain_numpy_adjoint():
    """The hand-written adjoint of the recurrence (backpropagation through time)."""
    W, U, b, x = recurrent_args(10, seed=2)
    f = jitad.jit_grad(recurrent, argnums=(0, 1, 2), code_shape="loops")
    value, (gW, gU, gb) = python_value_and_grad(f, [W, U, b, x])
    hs = [np.zeros(4)]
    for t in range(len(x)):
        hs.append(np.tanh(W @ hs[-1] + U @ x[t] + b))
    want = [np.zeros_like(W), np.zeros_like(U), np.zeros_like(b)]
    h_bar = np.ones(4) + 2.0 * hs[-1]
    for t in reversed(range(len(x))):
        z_bar = h_bar * (1.0 - hs[t + 1] ** 2)
        want[0] += np.outer(z_bar, hs[t])
        want[1] += np.outer(z_bar, x[t])
        want[2] += z_bar
        h_bar = W.T @ z_bar + (2.0 * hs[t] if t else 0.0)
    assert value == pytest.approx(recurrent(W, U, b, x), rel=1e-13)
    for got, w in zip((gW, gU, gb), want):
        assert_close(got, w, 1e-12, 1e-12, "recurrent gradient")


def test_mixture_loop_over_components():
    rng = np.random.default_rng(5)
    args = [rng.standard_normal((8, 2)), 0.3 * rng.standard_normal(8),
            rng.standard_normal((20, 2))]
    f = jitad.jit_grad(mixture, argnums=(0, 1), code_shape="loops")
    assert "for k in range(" in source_of(f, *args)
    check_grads_python(f, args, argnums=(0, 1))


def stacked_terms(A, x, axis):
    """A Python list of one array per iteration, stacked (`np.stack`: a concatenation of
    the iterations' values, which the re-rolled loop keeps on its tape)."""
    terms = []
    for k in range(A.shape[0]):
        terms.append(np.tanh(x * A[k]) + A[k, 0])
    stacked = np.stack(terms, axis=axis)
    return np.sum(np.sin(stacked) * np.arange(stacked.size).reshape(stacked.shape))


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_a_stack_of_loop_values_is_one_copy_of_the_tape(axis):
    """30 iterations stacked along each axis: the printed concatenation reads the loop's tape
    as one slice (Numba took minutes over a concatenation of 100 operands), and value and
    gradient match the plain function and central differences."""
    rng = np.random.default_rng(8)
    args = [rng.standard_normal((30, 3, 2)), rng.standard_normal((3, 2))]
    f = jitad.jit_grad(stacked_terms, argnums=(0, 1), code_shape="loops")
    source = source_of(f, *args, axis)
    assert "for k in range(" in source
    lines = source.splitlines()
    assert any("_tape[0:30]" in line for line in lines)
    assert all(line.count("_tape[") <= 2 for line in lines if "np.concatenate((" in line)
    check_grads_python(f, args + [axis], argnums=(0, 1))
    if axis == 2:       # Numba compiles the transposed copy too (once: a few seconds)
        value, grads = f.value_and_grad(*args, axis)
        want_value, want = python_value_and_grad(f, args + [axis])
        assert value == pytest.approx(want_value, rel=1e-13)
        for got, w in zip(grads, want):
            assert_close(got, w, 1e-12, 1e-12, "compiled stack gradient")


def test_fill_loop_updates_in_place_and_differentiates():
    t = np.linspace(0.0, 1.0, 40)
    args = [np.array([1.2, 0.7]), t, np.exp(-t)]
    f = jitad.jit_grad(filled, code_shape="loops")
    source = source_of(f, *args)
    assert "for k in range(40)" in source and loop_lines(source) < 80
    check_grads_python(f, args)


def test_rows_updated_in_place_inside_a_loop_with_a_carried_vector():
    rng = np.random.default_rng(6)
    args = [rng.standard_normal((3, 4)), rng.standard_normal((10, 3))]
    f = jitad.jit_grad(rows_updated, code_shape="loops")
    assert "for k in range(" in source_of(f, *args)
    check_grads_python(f, args)


def test_compiled_recurrent_loop_matches_the_plain_source():
    args = recurrent_args(20, seed=3)
    f = jitad.jit_grad(recurrent, argnums=(0, 1, 2), code_shape="loops")
    value, grads = f.value_and_grad(*args)
    want_value, want_grads = python_value_and_grad(f, args)
    assert value == pytest.approx(want_value, rel=1e-13)
    for got, want in zip(grads, want_grads):
        assert_close(got, want, 1e-12, 1e-12, "compiled recurrent gradient")


def test_a_wrong_tape_descriptor_fails(monkeypatch):
    """The reverse loop reading the forward tapes one iteration off (a broken descriptor)
    must fail the gradient check."""
    verified = reroll._Search._verified

    def broken(self, run, need):
        run = verified(self, run, need)
        if run is not None:
            run.operands = [[d[:3] + (d[3] - 1,) + d[4:] if d[0] == "tape" else d for d in ds]
                            for ds in run.operands]
        return run

    args = recurrent_args(16)
    f = jitad.jit_grad(recurrent, argnums=(0, 1, 2), code_shape="loops")
    check_grads_python(f, args, argnums=(0, 1, 2))
    monkeypatch.setattr(reroll._Search, "_verified", broken)
    f = jitad.jit_grad(recurrent, argnums=(0, 1, 2), code_shape="loops")
    with pytest.raises(AssertionError):
        check_grads_python(f, args, argnums=(0, 1, 2))


def computed_positions(x, idx):
    s = 0.0
    for j in range(60):
        k = (idx[j] * 3) % 10              # an integer the adjoint reads back from a tape
        s = s + x[k] ** 2 * x[j % 10]
    return s


def histogram(w, idx):
    r = np.zeros(10)
    for j in range(60):
        r[idx[j]] += w[j] ** 2             # a taped (1,) index array per iteration
    return np.sum(np.sin(r) * np.arange(1.0, 11.0))


@pytest.mark.parametrize("fun", [computed_positions, histogram])
def test_integer_values_taped_by_a_loop_keep_their_dtype(fun):
    # The tapes were float arrays, so a taped index could not index again (NumPy's
    # IndexError in the plain source, a Numba compile error in the compiled one).
    rng = np.random.default_rng(3)
    args = (rng.normal(size=60), rng.integers(-10, 10, 60))
    if fun is computed_positions:
        args = (args[0][:10], args[1])
    f = jitad.jit_grad(fun, code_shape="loops")
    source = source_of(f, *args)
    assert "for k in range(" in source and "_tape = np.empty(" in source
    assert "dtype=np.int64)" in source      # the taped integers
    check_grads_python(f, args)
    value, grad = jitad.jit_grad(fun, code_shape="loops", tiers=False).value_and_grad(*args)
    assert_close(value, fun(*args))
    assert_close(grad, python_value_and_grad(f, args)[1][0], 1e-10, 1e-12)
