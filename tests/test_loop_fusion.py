"""Elementwise runs inside re-rolled loop bodies print as one loop over elements.

A loop over array code (an LSTM over time steps) would otherwise allocate a temporary
per NumPy operation per iteration. Checked as plain Python (no Numba) on the printed
source: the body's elementwise entries are fused, it allocates only at its first
iteration, and values and gradients match the plain function, central differences
(`check_grads_python`) and hand-derived gradients.
"""
import re
import sys
from pathlib import Path

import numpy as np
import pytest

import jitad
from jitad import codegen

from conftest import (assert_close, check_grads_python, python_value, python_value_and_grad,
                      traced)
from jitad.api import build_source


def source_of(f, *args):
    variant, _ = traced(f, args)
    return build_source(variant, "value_and_grad", variant.wrt, f.__name__, f.code_shape)[0]


def loop_bodies(source) -> list:
    """The text of each re-rolled loop (`for k…` up to the next line at its indentation)."""
    lines, bodies = source.splitlines(), []
    for n, line in enumerate(lines):
        if line.lstrip().startswith("for k"):
            depth = len(line) - len(line.lstrip())
            body = []
            for inner in lines[n + 1:]:
                if len(inner) - len(inner.lstrip()) <= depth:
                    break
                body.append(inner)
            bodies.append(body)
    return bodies


def allocations_after_first_iteration(body) -> int:
    """`np.…(` array constructors and NumPy ufunc calls on arrays outside `if k == 0:`."""
    count, guarded = 0, False
    for line in body:
        text = line.strip()
        if text.startswith("if k") and text.endswith("== 0:"):
            guarded = True
            continue
        if guarded:             # the guarded line
            guarded = False
            continue
        count += sum(text.count(f"np.{name}(") for name in ("empty", "zeros", "full", "copy"))
    return count


def whole_array_calls(body) -> list:
    """Lines applying a NumPy function to an array (one indexed elsewhere in the body)."""
    text = "\n".join(body)
    calls = [re.match(r"\s*(\w+) = np\.\w+\((\w+)", line) for line in body]
    return [m.group(0) for m in calls if m and f"{m.group(2)}[" in text]


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def gated(w, b, x):
    """An LSTM-like cell over the rows of x: gates act elementwise, state carried."""
    n = w.shape[0] // 2
    h, c = np.zeros(n), np.zeros(n)
    total = 0.0
    for t in range(x.shape[0]):
        f = sigmoid(x[t] * w[:n] + b[:n])
        g = np.tanh(h * w[n:] + b[n:])
        c = c * f + (1.0 - f) * g
        h = np.tanh(c)
        total += np.sum(h * x[t])
    return total + np.sum(c * c)


def gated_hand_gradient(w, b, x):
    """Backpropagation through time for `gated`, written out."""
    n = w.shape[0] // 2
    hs, cs, fs, gs = [np.zeros(n)], [np.zeros(n)], [], []
    for t in range(x.shape[0]):
        fs.append(sigmoid(x[t] * w[:n] + b[:n]))
        gs.append(np.tanh(hs[-1] * w[n:] + b[n:]))
        cs.append(cs[-1] * fs[-1] + (1.0 - fs[-1]) * gs[-1])
        hs.append(np.tanh(cs[-1]))
    gw, gb = np.zeros_like(w), np.zeros_like(b)
    h_bar, c_bar = np.zeros(n), 2.0 * cs[-1]
    for t in reversed(range(x.shape[0])):
        h_bar = h_bar + x[t]
        c_bar = c_bar + h_bar * (1.0 - hs[t + 1] ** 2)
        f_bar = c_bar * (cs[t] - gs[t])
        g_bar = c_bar * (1.0 - fs[t])
        zf = f_bar * fs[t] * (1.0 - fs[t])
        zg = g_bar * (1.0 - gs[t] ** 2)
        gw[:n] += zf * x[t]
        gb[:n] += zf
        gw[n:] += zg * hs[t]
        gb[n:] += zg
        h_bar = zg * w[n:]
        c_bar = c_bar * fs[t]
    return gw, gb


def gated_args(T, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.uniform(-1.0, 1.0, 8), rng.uniform(-1.0, 1.0, 8), rng.uniform(-1.0, 1.0, (T, 4))]


@pytest.fixture(scope="module")
def gated_fn():
    return jitad.jit_grad(gated, argnums=(0, 1), code_shape="loops")


def test_loop_bodies_fuse_and_allocate_only_at_their_first_iteration(gated_fn):
    source = source_of(gated_fn, *gated_args(12))
    bodies = loop_bodies(source)
    assert len(bodies) == 2                                 # forward and reverse sweeps
    for body in bodies:
        text = "\n".join(body)
        assert "elementwise entries of the loop body in one loop" in text
        assert allocations_after_first_iteration(body) == 0, text
        assert not whole_array_calls(body), text


def test_fused_loop_gradient_matches_differences_and_hand_formula(gated_fn):
    args = gated_args(12, seed=1)
    check_grads_python(gated_fn, args, argnums=(0, 1))
    value, grads = python_value_and_grad(gated_fn, args)
    assert value == pytest.approx(gated(*args), rel=1e-13)
    for got, want in zip(grads, gated_hand_gradient(*args)):
        assert_close(got, want, 1e-12, 1e-12, "gated gradient")


def test_compiled_fused_loop_matches_the_hand_formula(gated_fn):
    args = gated_args(30, seed=2)
    value, grads = gated_fn.value_and_grad(*args)
    assert value == pytest.approx(gated(*args), rel=1e-12)
    for got, want in zip(grads, gated_hand_gradient(*args)):
        assert_close(got, want, 1e-11, 1e-12, "compiled gated gradient")


def overlapping(W, x):
    """The previous state is read after the next one is computed (across a matmul)."""
    h, total = np.zeros(W.shape[0]), 0.0
    for t in range(x.shape[0]):
        new = np.tanh(h * x[t] + 0.5)
        total += np.sum((W @ new) * h)
        h = new
    return total


def overlapping_args():
    rng = np.random.default_rng(5)
    return [rng.uniform(-1.0, 1.0, (5, 5)), rng.uniform(-1.0, 1.0, (10, 5))]


def test_previous_state_read_after_the_next_is_computed():
    f = jitad.jit_grad(overlapping, code_shape="loops")
    assert python_value(f, overlapping_args()) == pytest.approx(overlapping(*overlapping_args()),
                                                                rel=1e-13)
    check_grads_python(f, overlapping_args())


def test_one_row_for_a_carried_value_fails(monkeypatch):
    """A carried value needs two rows (the previous one may be read after the next one is
    written): with one, the value must come out wrong."""
    monkeypatch.setattr(codegen, "ROWS", 1)
    f = jitad.jit_grad(overlapping, code_shape="loops")
    assert python_value(f, overlapping_args()) != pytest.approx(
        overlapping(*overlapping_args()), rel=1e-6)


def softmax_steps(w, x):
    """Per step a log-sum-exp (a full sum ends a fused run; the step's row is a view)."""
    total = 0.0
    s = np.zeros(w.shape[0])
    for t in range(x.shape[0] - 1):
        s = np.tanh(s * w + x[t])
        z = s - np.log(np.sum(np.exp(s)) + 1.0)
        total += np.sum(x[t + 1] * z)
    return total


def accumulated(w, x):
    """An array accumulated across iterations (`acc += …`, an in-place chain)."""
    acc = np.zeros(w.shape[0])
    for t in range(x.shape[0]):
        acc = acc + np.sin(x[t] * w) * w
    return np.sum(acc * acc)


@pytest.mark.parametrize("fun", [softmax_steps, accumulated])
def test_sums_views_and_accumulations_in_fused_loop_bodies(fun):
    rng = np.random.default_rng(3)
    args = [rng.uniform(-1.0, 1.0, 5), rng.uniform(-1.0, 1.0, (10, 5))]
    f = jitad.jit_grad(fun, code_shape="loops")
    source = source_of(f, *args)
    assert "elementwise entries of the loop body in one loop" in source
    check_grads_python(f, args)
    value, grad = f.value_and_grad(*args)
    want_value, (want,) = python_value_and_grad(f, args)
    assert value == pytest.approx(want_value, rel=1e-13)
    assert_close(grad, want, 1e-12, 1e-12, f"{fun.__name__}: compiled gradient")


def test_accumulated_gradient_matches_hand_formula():
    rng = np.random.default_rng(4)
    w, x = rng.uniform(-1.0, 1.0, 5), rng.uniform(-1.0, 1.0, (10, 5))
    f = jitad.jit_grad(accumulated, code_shape="loops")
    acc = np.sum(np.sin(x * w) * w, axis=0)
    want = 2.0 * acc * np.sum(np.cos(x * w) * x * w + np.sin(x * w), axis=0)
    value, (grad,) = python_value_and_grad(f, [w, x])
    assert value == pytest.approx(accumulated(w, x), rel=1e-13)
    assert_close(grad, want, 1e-12, 1e-12, "accumulated gradient")


def test_lstm_example_loop_bodies_allocate_only_at_their_first_iteration():
    """ADBench's LSTM (examples/lstm.py): per time step, forward and reverse, no temporary
    arrays and no whole-array NumPy calls (its gradient is checked in test_workloads)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
    import lstm

    args = lstm.make_data(2, 4, 9, np.random.default_rng(0))
    f = jitad.jit_grad(lstm.lstm_objective, argnums=(0, 1))
    bodies = loop_bodies(f.source(*args))
    assert len(bodies) == 2
    for body in bodies:
        assert allocations_after_first_iteration(body) == 0, "\n".join(body)
        assert not whole_array_calls(body), "\n".join(body)


def matrix_state(A, B):
    """A 2-D state: the fused body loops over both axes."""
    H, total = np.zeros(A.shape), 0.0
    for t in range(B.shape[0]):
        H = np.tanh(H * A + B[t])
        total += np.sum(H * H)
    return total + np.sum(H)


def leaky(w, x):
    """Comparisons, maximum and where inside the body."""
    h, total = np.zeros(w.shape[0]), 0.0
    for t in range(x.shape[0]):
        h = np.maximum(h * w + x[t], 0.1 * (h * w + x[t]))
        total += np.sum(np.where(h > 0.2, h, -h) ** 2)
    return total


def normalized(w, x):
    """Powers, roots, and a sum the rest of the body divides by."""
    h = np.ones(w.shape[0]) * 0.5
    for t in range(x.shape[0]):
        h = 0.3 * (h * w + x[t]) ** 2 + np.sqrt(np.abs(h) + 1.0)
        h = h / (1.0 + np.sum(h * h))
    return np.sum(h * w)


@pytest.mark.parametrize("fun, shapes", [(matrix_state, ((3, 4), (9, 3, 4))),
                                         (leaky, ((5,), (9, 5))), (normalized, ((5,), (9, 5)))],
                         ids=["matrix_state", "leaky", "normalized"])
def test_more_bodies_fuse_and_differentiate(fun, shapes):
    rng = np.random.default_rng(7)
    args = [rng.uniform(-1.0, 1.0, shape) for shape in shapes]
    f = jitad.jit_grad(fun, code_shape="loops")
    source = source_of(f, *args)
    assert source.count("# loop:") == 2 and "of the loop body in one loop" in source
    check_grads_python(f, args)
