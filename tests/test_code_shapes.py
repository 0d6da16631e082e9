"""Code shapes: re-rolled loops, the tape interpreter, elementwise fusion, and the automatic choice.

Each shape is checked against the hand-derived gradient or central differences, never
against another shape's output alone.
"""
import math

import numpy as np
import pytest

import jitad
from jitad import codegen
from jitad.api import build
from jitad.tape import TapeKernel, encodable

from conftest import assert_close, numeric_grad, traced


def rosenbrock_loop(x):
    total = 0.0
    for i in range(len(x) - 1):
        total = total + 100.0 * (x[i + 1] - x[i] ** 2) ** 2 + (1.0 - x[i]) ** 2
    return total


def rosenbrock_hand_gradient(x):
    g = np.zeros_like(x)
    g[:-1] = -400.0 * x[:-1] * (x[1:] - x[:-1] ** 2) - 2.0 * (1.0 - x[:-1])
    g[1:] += 200.0 * (x[1:] - x[:-1] ** 2)
    return g


def straight_line_program(n_ops, seed=0):
    """A deterministic straight-line scalar function with no repeated structure; every
    operation reads the previous result, so all of them reach the output."""
    rng = np.random.default_rng(seed)
    lines = ["def program(x):", "    v = [x[i] for i in range(4)]"]
    for k in range(n_ops):
        a, b = 3 + k, rng.integers(0, 4 + k)
        op = ["v[{a}] + v[{b}]", "v[{a}] * 0.5 - v[{b}]", "math.sin(v[{a}])",
              "math.tanh(v[{a}] * v[{b}])"][k % 4 if rng.random() < 0.5 else rng.integers(0, 4)]
        lines.append("    v.append(" + op.format(a=a, b=b) + ")")
    lines.append("    return v[-1] + v[-2]")
    namespace = {"math": math}
    exec(compile("\n".join(lines), f"<program {n_ops}>", "exec"), namespace)
    return namespace["program"]


@pytest.fixture(scope="module")
def x20():
    return np.random.default_rng(3).uniform(-1.5, 1.5, 20)


def test_long_loop_is_rerolled_and_exact(x20):
    f = jitad.jit_grad(rosenbrock_loop)
    x = np.random.default_rng(4).uniform(-1.5, 1.5, 120)
    source = f.source(x)
    # ~7,000 entries printed as one loop, each iteration's adjoint right after it (no tape)
    assert source.count("for k in range(") == 1 and "_tape" not in source
    assert source.count("\n") < 200
    assert_close(f(x), rosenbrock_hand_gradient(x), 1e-12, 1e-12, "re-rolled gradient")


@pytest.mark.parametrize("code_shape", ["straight", "loops", "llvm", "tape"])
def test_every_code_shape_gives_the_hand_gradient(x20, code_shape):
    f = jitad.jit_grad(rosenbrock_loop, code_shape=code_shape)
    value, grad = f.value_and_grad(x20)
    assert value == pytest.approx(rosenbrock_loop(x20), rel=1e-12)
    assert_close(grad, rosenbrock_hand_gradient(x20), 1e-12, 1e-12, f"{code_shape} gradient")


def test_tape_kernel_runs_the_adjoint_list(x20):
    f = jitad.jit_grad(rosenbrock_loop, code_shape="tape")
    variant, runtime_args = traced(f, (x20,))
    _, _, wengert, shape = build(variant, "value_and_grad", variant.wrt, "rosen", "tape",
                                 for_reading=False)
    assert shape == "tape" and encodable(wengert)
    f(x20)
    kernel = variant.kernels["value_and_grad"]
    assert isinstance(kernel, TapeKernel)
    value, (grad,) = kernel(*runtime_args)
    assert_close(grad, rosenbrock_hand_gradient(x20), 1e-12, 1e-12, "tape gradient")


@pytest.mark.parametrize("code_shape", ["llvm", "tape"])
def test_failed_guard_retraces(code_shape):
    def branchy(x):
        total = 0.0
        for i in range(len(x) - 1):
            total = total + math.sin(x[i] * x[i + 1])
        if x[0] > 0:
            return total * 2.0
        return total
    f = jitad.jit_grad(branchy, code_shape=code_shape)
    for x in (np.full(6, 0.5), np.full(6, -0.5), np.full(6, 0.25)):
        assert_close(f(x), numeric_grad(branchy, [x])[0], 1e-6, 1e-8, "guarded gradient")
    assert f.trace_count == 2


def test_elementwise_chain_is_fused_without_temporaries():
    def rosen(x):
        return np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)
    f = jitad.jit_grad(rosen)
    x = np.random.default_rng(6).uniform(-1.5, 1.5, 50)
    source = f.source(x)
    assert "# fused:" in source and "np.empty" not in source   # the slice updates fused too
    assert "x_bar[i0 + 1] +=" in source
    assert_close(f(x), rosenbrock_hand_gradient(x), 1e-12, 1e-12, "fused gradient")


def test_fused_loop_broadcasts_and_materializes_what_is_read_later():
    def layer(W, b, X):
        H = np.tanh(X @ W + b)                 # b (3,) broadcast over rows
        return np.sum(H * H) + np.sum(H[:, 0])
    rng = np.random.default_rng(7)
    args = [rng.normal(size=(4, 3)), rng.normal(size=3), rng.normal(size=(5, 4))]
    f = jitad.jit_grad(layer, argnums=(0, 1))
    assert "# fused:" in f.source(*args)
    for got, want in zip(f(*args), numeric_grad(layer, args, (0, 1))):
        assert_close(got, want, 1e-6, 1e-8, "fused broadcast gradient")


def test_choose_shape_keeps_short_lists_straight(x20):
    f = jitad.jit_grad(lambda a, b: a * b + math.sin(a), argnums=(0, 1))
    variant, _ = traced(f, (1.0, 2.0))
    assert codegen.choose_shape(variant.trace.wengert)[0] == "straight"


def test_unknown_code_shape_is_an_argument_error():
    with pytest.raises(jitad.ArgumentError, match="code_shape must be"):
        jitad.jit_grad(rosenbrock_loop, code_shape="fast")
