"""The tutorial seed examples (DESIGN.md), against hand-derived gradients and central differences.

Each example is written three ways: with the `math` module (`math.sin`), with NumPy
on scalars (`np.sin`), and with names imported by `from math import ...` at module
level (which jitad must redirect while tracing).
"""
import math
from math import cos, exp, log, sin

import numpy as np
import pytest

import jitad
from conftest import (assert_close, check_grads_python, numeric_grad, python_hvp_forward_over_reverse,
                      python_hvp_reverse_over_reverse)


# ---------------------------------------------------------------- example 1: ln(x1) + x1*x2 - sin(x2)

def evaluation_trace_math(x1, x2):
    return math.log(x1) + x1 * x2 - math.sin(x2)


def evaluation_trace_numpy(x1, x2):
    return np.log(x1) + x1 * x2 - np.sin(x2)


def evaluation_trace_imported(x1, x2):
    return log(x1) + x1 * x2 - sin(x2)


EVALUATION_TRACE = [evaluation_trace_math, evaluation_trace_numpy, evaluation_trace_imported]


@pytest.mark.parametrize("fun", EVALUATION_TRACE, ids=lambda f: f.__name__)
def test_evaluation_trace_example_matches_hand_derived_gradient(fun):
    f = jitad.jit_grad(fun, argnums=(0, 1))
    value, (g1, g2) = f.value_and_grad(2.0, 5.0)
    # d/dx1 = 1/x1 + x2 = 5.5;  d/dx2 = x1 - cos(x2) = 2 - cos 5
    assert value == pytest.approx(11.652071455223084, rel=1e-12, abs=1e-12)
    assert g1 == pytest.approx(5.5, rel=1e-12, abs=1e-12)
    assert g2 == pytest.approx(2.0 - cos(5.0), rel=1e-12, abs=1e-12)
    assert g2 == pytest.approx(1.7163378145367738, rel=1e-12, abs=1e-12)
    assert isinstance(g1, float) and isinstance(g2, float)
    fd = numeric_grad(fun, (2.0, 5.0), (0, 1))
    assert_close((g1, g2), fd, rtol=1e-7, atol=1e-7, what="gradient vs central differences")


def test_evaluation_trace_records_the_seed_primitives_in_order():
    # The seed's evaluation trace: v1 = ln x1, v2 = x1*x2, v3 = v1 + v2, v4 = sin x2, v5 = v3 - v4.
    f = jitad.jit_grad(evaluation_trace_imported, argnums=(0, 1))
    entries = list(f.wengert(2.0, 5.0))
    assert [e.prim.name for e in entries] == ["log", "mul", "add", "sin", "sub"]
    x1, x2 = f.wengert(2.0, 5.0).inputs
    assert (x1.name, x2.name) == ("x1", "x2")
    assert entries[0].ins == (x1,) and entries[1].ins == (x1, x2) and entries[3].ins == (x2,)


# ---------------------------------------------------------------- example 2: x1 * exp(-(x1² + x2²)/2)

def bump_math(x1, x2):
    return x1 * math.exp(-(x1 ** 2 + x2 ** 2) / 2)


def bump_numpy(x1, x2):
    return x1 * np.exp(-(x1 ** 2 + x2 ** 2) / 2)


def bump_imported(x1, x2):
    return x1 * exp(-(x1 * x1 + x2 * x2) / 2.0)


@pytest.mark.parametrize("fun", [bump_math, bump_numpy, bump_imported], ids=lambda f: f.__name__)
def test_gaussian_bump_example_matches_hand_derived_gradient(fun):
    x1, x2 = 2.0, 0.5
    e = math.exp(-(x1 ** 2 + x2 ** 2) / 2)
    f = jitad.jit_grad(fun, argnums=(0, 1))
    value, (g1, g2) = f.value_and_grad(x1, x2)
    assert value == pytest.approx(x1 * e, rel=1e-12)
    assert g1 == pytest.approx((1 - x1 ** 2) * e, rel=1e-12)     # d/dx1 = (1 - x1²) e
    assert g2 == pytest.approx(-x1 * x2 * e, rel=1e-12)          # d/dx2 = -x1 x2 e
    assert_close((g1, g2), numeric_grad(fun, (x1, x2), (0, 1)), rtol=1e-7, atol=1e-9)


# ---------------------------------------------------------------- example 3: two paths from x to the loss

def two_paths(x):
    y1 = x + 1
    y2 = 2 * x
    return (y1 - y2) ** 2


def two_paths_numpy(x):
    y1 = np.add(x, 1.0)
    y2 = np.multiply(2.0, x)
    return np.square(y1 - y2)


@pytest.mark.parametrize("fun", [two_paths, two_paths_numpy], ids=lambda f: f.__name__)
def test_two_path_example_accumulates_both_adjoint_contributions(fun):
    f = jitad.jit_grad(fun)
    value, grad = f.value_and_grad(3.0)
    # dloss/dx = 2 (y1 - y2) (dy1/dx - dy2/dx) = 2 (4 - 6)(1 - 2) = 4
    assert value == pytest.approx(4.0, rel=1e-12)
    assert grad == pytest.approx(2 * (3.0 + 1 - 2 * 3.0) * (1 - 2), rel=1e-12)
    assert grad == pytest.approx(4.0, rel=1e-12)
    assert grad == pytest.approx(numeric_grad(fun, (3.0,))[0], rel=1e-7)


def test_two_path_example_at_other_points_follows_the_formula():
    f = jitad.jit_grad(two_paths)
    for x in (-2.5, 0.0, 0.75, 10.0):
        # loss = (1 - x)², so dloss/dx = 2 (x - 1)
        assert f(x) == pytest.approx(2 * (x - 1), rel=1e-12, abs=1e-12)
    assert f.trace_count == 1


# ---------------------------------------------------------------- example 4: z = x² + 3xy + y²

def quadratic(x, y):
    return x ** 2 + 3 * x * y + y ** 2


@pytest.fixture(scope="module")
def quadratic_by_argnums():
    """One compiled JitGrad per argnums variant, shared by the tests below."""
    return {argnums: jitad.jit_grad(quadratic, argnums=argnums) for argnums in (0, 1, (0, 1))}


POINTS = [(2.0, 1.0), (-1.5, 0.25), (0.0, 3.0)]


@pytest.mark.parametrize("x, y", POINTS)
def test_quadratic_gradient_wrt_x_only(quadratic_by_argnums, x, y):
    g = quadratic_by_argnums[0](x, y)
    assert isinstance(g, float)
    assert g == pytest.approx(2 * x + 3 * y, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("x, y", POINTS)
def test_quadratic_gradient_wrt_y_only(quadratic_by_argnums, x, y):
    g = quadratic_by_argnums[1](x, y)
    assert isinstance(g, float)
    assert g == pytest.approx(3 * x + 2 * y, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("x, y", POINTS)
def test_quadratic_gradient_wrt_both(quadratic_by_argnums, x, y):
    value, grads = quadratic_by_argnums[(0, 1)].value_and_grad(x, y)
    assert value == pytest.approx(quadratic(x, y), rel=1e-12, abs=1e-12)
    assert isinstance(grads, tuple) and len(grads) == 2
    assert grads[0] == pytest.approx(2 * x + 3 * y, rel=1e-12, abs=1e-12)
    assert grads[1] == pytest.approx(3 * x + 2 * y, rel=1e-12, abs=1e-12)
    assert_close(grads, numeric_grad(quadratic, (x, y), (0, 1)), rtol=1e-7, atol=1e-7)


def test_quadratic_compiles_once_per_argnums(quadratic_by_argnums):
    for x, y in POINTS:
        quadratic_by_argnums[(0, 1)](x, y)
    assert quadratic_by_argnums[(0, 1)].trace_count == 1
    assert quadratic_by_argnums[(0, 1)].compile_count == 1


# ---------------------------------------------------------------- all seeds, every check, no Numba

@pytest.mark.parametrize("fun, args", [
    (evaluation_trace_math, (2.0, 5.0)), (evaluation_trace_imported, (2.0, 5.0)),
    (bump_math, (2.0, 0.5)), (bump_imported, (2.0, 0.5)),
    (two_paths, (3.0,)), (quadratic, (2.0, 1.0)),
], ids=lambda v: getattr(v, "__name__", ""))
def test_seed_examples_pass_all_derivative_checks_including_hessians(fun, args):
    argnums = tuple(range(len(args)))
    check_grads_python(fun, args, argnums=argnums, order=2)


def test_seed_hessian_of_quadratic_is_constant_matrix():
    # The Hessian of x² + 3xy + y² is [[2, 3], [3, 2]]: H·v is exact for any v.
    f = jitad.jit_grad(quadratic, argnums=(0, 1))
    v = (0.3, -1.1)
    want = (2 * v[0] + 3 * v[1], 3 * v[0] + 2 * v[1])
    for hvp in (python_hvp_forward_over_reverse, python_hvp_reverse_over_reverse):
        got = tuple(float(h) for h in hvp(f, (2.0, 1.0), v))
        assert got == pytest.approx(want, rel=1e-12)


def make_scaled(fn):
    return lambda x: fn(x) * 2.0


def test_math_function_held_in_a_closure_variable():
    f = jitad.jit_grad(make_scaled(math.sin))
    assert f(0.5) == pytest.approx(2 * math.cos(0.5), rel=1e-12)


# ---------------------------------------------------------------- beyond the gradient
# Seed 000 extends the graph with gradient nodes and differentiates again; seed 002 shows
# the forward sweep; seed 003 the dual number f(2 + ε, 3) = 10 + 4ε of f = 2y + x².

def test_seed_000_gradient_of_a_gradient_by_hand():
    d_dx1 = jitad.jit_grad(lambda x1, x2: jitad.grad(evaluation_trace_math)(x1, x2),
                           argnums=(0, 1))
    assert d_dx1(2.0, 5.0) == (pytest.approx(-1 / 4.0, rel=1e-15), pytest.approx(1.0))
    H = jitad.hessian(lambda x: evaluation_trace_math(x[0], x[1]))(np.array([2.0, 5.0]))
    assert_close(H, [[-0.25, 1.0], [1.0, sin(5.0)]], rtol=1e-14)


def test_seed_002_forward_sweep_of_the_bump():
    x1, x2 = 2.0, 0.5
    e = exp(-(x1 ** 2 + x2 ** 2) / 2)
    bump = jitad.jvp(bump_math, argnums=(0, 1))
    assert bump(x1, 1.0, x2, 0.0) == (pytest.approx(x1 * e), pytest.approx((1 - x1 ** 2) * e))
    assert bump(x1, 0.0, x2, 1.0)[1] == pytest.approx(-x1 * x2 * e)


def test_seed_003_dual_number_is_the_tangent_list():
    dual = jitad.jvp(lambda x, y: 2 * y + x ** 2)
    assert dual(2.0, 1.0, 3.0) == (10.0, 4.0)
    text = str(dual.wengert(2.0, 1.0, 3.0))
    assert "x_dot" in text and "in (v3, v2_dot)" in text
