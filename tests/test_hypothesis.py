"""Random scalar programs (Hypothesis): gradients vs finite differences, plain Python vs
compiled, and simplification preserving values.

Expression trees over three variables use + - * /, sin, cos, tanh, exp, log, sqrt
and integer powers, with the `math` or the NumPy spelling. Points where a
finite-difference comparison is ill-conditioned (a small divisor, a large exponent,
a huge intermediate) are rejected with `assume`, and log/sqrt only see positive
arguments. Deterministic profile: derandomize=True, no deadline; 60 uncompiled examples per
property and 8 compiled ones.
"""
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st

import jitad
from jitad.primitives import REGISTRY
from jitad.transforms import simplify, value_and_grad
from conftest import assert_close, numeric_grad, python_value_and_grad, run_list, traced

VARIABLES = ("x", "y", "z")
UNARY = ("sin", "cos", "tanh", "exp", "log", "sqrt", "neg")
BINARY = ("add", "sub", "mul", "div")
POWERS = (2, 3, 4, -1, -2)

SETTINGS = dict(derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])

leaves = st.one_of(st.sampled_from(VARIABLES).map(lambda name: ("var", name)),
                   st.sampled_from(VARIABLES).map(lambda name: ("var", name)),
                   st.sampled_from((0.5, 2.0, -1.5, 3.0)).map(lambda c: ("const", c)))


def _extend(children):
    return st.one_of(
        st.tuples(st.sampled_from(BINARY), children, children),
        st.tuples(st.sampled_from(UNARY), st.sampled_from(("math", "np")), children),
        st.tuples(st.just("pow"), children, st.sampled_from(POWERS)),
    )


expressions = st.recursive(leaves, _extend, max_leaves=12)
# Shifted off Hypothesis' favourite values (0, ±2), where many derivatives vanish.
points = st.tuples(*[st.floats(-2.0, 2.0, allow_nan=False).map(lambda v: 0.9 * v + 0.0371)
                     for _ in VARIABLES])


class IllConditioned(Exception):
    """The point is too close to a singularity for a finite-difference comparison."""


def evaluate(tree, env, check=False):
    """The value of `tree`; works on floats and on jitad tracers alike.

    With `check=True` (floats only) raise IllConditioned near singular points.
    """
    kind = tree[0]
    if kind == "var":
        return env[tree[1]]
    if kind == "const":
        return tree[1]
    if kind == "pow":
        base = evaluate(tree[1], env, check)
        if check and (tree[2] < 0 and abs(base) < 0.3):
            raise IllConditioned
        result = base ** tree[2]
    elif kind in BINARY:
        a, b = evaluate(tree[1], env, check), evaluate(tree[2], env, check)
        if kind == "div" and check and abs(b) < 0.3:
            raise IllConditioned
        result = {"add": lambda: a + b, "sub": lambda: a - b, "mul": lambda: a * b,
                  "div": lambda: a / b}[kind]()
    else:
        flavor, a = tree[1], evaluate(tree[2], env, check)
        lib = math if flavor == "math" else np
        if kind == "neg":
            result = -a
        elif kind == "exp":
            if check and abs(a) > 5.0:
                raise IllConditioned
            result = lib.exp(a)
        elif kind in ("log", "sqrt"):                 # positive arguments only
            result = getattr(lib, kind)(1.0 + a * a)
        else:
            result = getattr(lib, kind)(a)
    if check and not abs(result) < 1e3:
        raise IllConditioned
    return result


def program(tree):
    """A user-level function of (x, y, z) computing `tree`, named for the test output."""
    def f(x, y, z):
        return evaluate(tree, {"x": x, "y": y, "z": z}) + 0.0 * x
    return f


def well_conditioned(tree, point):
    try:
        evaluate(tree, dict(zip(VARIABLES, point)), check=True)
    except (IllConditioned, OverflowError, ZeroDivisionError):
        return False
    return True


def gradient_property(tree, point):
    """jitad's gradient of the program `tree` at `point` equals central differences."""
    assume(well_conditioned(tree, point))
    f = jitad.jit_grad(program(tree), argnums=(0, 1, 2))
    value, grads = python_value_and_grad(f, point)
    assert value == pytest.approx(float(f.fun(*point)), rel=1e-12, abs=1e-12)
    fd = numeric_grad(lambda *p: float(f.fun(*p)), point, (0, 1, 2))
    for g, d in zip(grads, fd):
        assert g == pytest.approx(d, rel=1e-5, abs=1e-5), f"{tree} at {point}"


@settings(max_examples=60, **SETTINGS)
@given(expressions, points)
def test_random_program_gradient_matches_finite_differences(tree, point):
    gradient_property(tree, point)


@settings(max_examples=8, **SETTINGS)
@given(expressions, points)
def test_random_program_compiled_equals_plain_python(tree, point):
    assume(well_conditioned(tree, point))
    f = jitad.jit_grad(program(tree), argnums=(0, 1, 2))
    value, grads = f.value_and_grad(*point)
    py_value, py_grads = python_value_and_grad(f, point)
    assert value == pytest.approx(float(py_value), rel=1e-12, abs=1e-14)
    assert grads == pytest.approx(tuple(float(g) for g in py_grads), rel=1e-12, abs=1e-14)


@settings(max_examples=60, **SETTINGS)
@given(expressions, points)
def test_simplification_preserves_values_and_gradients(tree, point):
    assume(well_conditioned(tree, point))
    f = jitad.jit_grad(program(tree), argnums=(0, 1, 2))
    variant, runtime_args = traced(f, point)
    raw = variant.trace.wengert
    simplified = simplify(raw)
    assert len(simplified) <= len(raw)
    assert_close(run_list(simplified, "simplified", runtime_args),
                 run_list(raw, "raw", runtime_args), 1e-13, 1e-300, "value after simplify")
    raw_adjoint = value_and_grad(raw, [0, 1, 2])
    simplified_adjoint = simplify(value_and_grad(simplify(raw), [0, 1, 2]))
    assert len(simplified_adjoint) <= len(raw_adjoint)
    raw_value, raw_grads = run_list(raw_adjoint, "raw_adjoint", runtime_args)
    value, grads = run_list(simplified_adjoint, "simplified_adjoint", runtime_args)
    assert_close(value, raw_value, 1e-13, 1e-300, "value after simplify (adjoint list)")
    assert_close(np.array(grads, dtype=float), np.array(raw_grads, dtype=float), 1e-11, 1e-13,
                 "gradient after simplify")


def test_the_strategy_reaches_every_operation():
    # A guard against a strategy that silently stops producing some operations.
    seen = set()

    @settings(max_examples=200, derandomize=True, deadline=None, database=None)
    @given(expressions)
    def collect(tree):
        stack = [tree]
        while stack:
            node = stack.pop()
            seen.add(node[0])
            stack.extend(child for child in node[1:] if isinstance(child, tuple))

    collect()
    assert set(UNARY) | set(BINARY) | {"pow", "var", "const"} <= seen


def test_the_gradient_property_catches_a_wrong_rule(monkeypatch):
    # d(x*y) = y dx + x dy; the wrong rule swaps the partials
    monkeypatch.setattr(REGISTRY["mul"], "vjp", lambda b, g, out, x, y: (b.mul(g, x), b.mul(g, y)))
    property_without_shrinking = settings(max_examples=60, phases=[Phase.generate], **SETTINGS)(
        given(expressions, points)(gradient_property))
    with pytest.raises(AssertionError):
        property_without_shrinking()
