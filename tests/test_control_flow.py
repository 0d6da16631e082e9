"""Control flow: branches on traced values record guards; failed guards retrace; the
number of specializations is bounded; jitad.where selects without a guard.
"""
import inspect
import math
import warnings
from pathlib import Path

import numpy as np
import pytest

import jitad
from jitad.cache import MAX_SPECIALIZATIONS, SHAPES_WARNING
from jitad.errors import GuardFailed
from conftest import assert_close, check_grads_python, prim_names, python_value_and_grad


def piecewise(x):
    if x > 0:
        return x * x
    return -3.0 * x


def test_branch_on_a_traced_value_records_a_visible_guard():
    f = jitad.jit_grad(piecewise)
    wl = f.wengert(2.0)
    assert "guard" in prim_names(wl)
    guard_line = inspect.getsourcelines(piecewise)[1] + 1
    assert any("guard" in line and f"test_control_flow.py:{guard_line}" in line
               for line in str(wl).splitlines())
    # the path not taken is not in the list
    assert "mul" in prim_names(wl) or "integer_pow" in prim_names(wl)


def test_failed_guard_retraces_then_both_branches_run_without_retracing():
    f = jitad.jit_grad(piecewise)
    assert f(2.0) == pytest.approx(4.0)              # d/dx x² = 2x
    assert f.trace_count == 1
    assert f(-1.0) == pytest.approx(-3.0)            # the guard fails: retrace, other branch
    assert f.trace_count == 2
    for x, want in ((3.0, 6.0), (-5.0, -3.0), (0.5, 1.0), (-0.25, -3.0), (0.0, -3.0)):
        assert f(x) == pytest.approx(want, rel=1e-12)
        assert f.value(x) == pytest.approx(piecewise(x), rel=1e-12)
    assert f.trace_count == 2


def test_guards_in_array_code_retrace_on_the_reduced_condition():
    def f(x):
        if np.sum(x) > 0:
            return np.sum(x ** 2)
        return np.sum(np.sin(x))
    g = jitad.jit_grad(f)
    x = np.array([1.0, 2.0, -0.5])
    assert_close(g(x), 2 * x, 1e-14, 0)
    assert_close(g(-x), np.cos(-x), 1e-14, 0)
    assert_close(g(x * 3), 6 * x, 1e-14, 0)
    assert g.trace_count == 2


def test_while_loop_on_a_traced_value_gets_one_guard_per_test():
    def newton_sqrt(a):
        y = 1.0
        while abs(y * y - a) > 1e-6:
            y = 0.5 * (y + a / y)
        return y
    f = jitad.jit_grad(newton_sqrt)
    wl = f.wengert(2.0)
    steps = prim_names(wl).count("guard")
    assert steps >= 3
    # the traced iterations are exact functions of a: d/da of the unrolled iteration ~ 1/(2 sqrt a)
    assert f(2.0) == pytest.approx(1 / (2 * math.sqrt(2.0)), rel=1e-5)
    check_grads_python(newton_sqrt, (2.0,), order=2)


def staircase(x):
    steps = x
    for threshold in (-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0):
        if x > threshold:                   # the guard line named in the error
            steps = steps + x
    return steps


def test_too_many_specializations_raise_guard_limit_error_naming_the_line():
    f = jitad.jit_grad(staircase)
    points = [-3.5, -2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5, 4.5, 5.5]
    for k, x in enumerate(points[:MAX_SPECIALIZATIONS], start=1):
        assert f(x) == pytest.approx(1.0 + sum(1.0 for t in range(-3, 6) if x > t))
        assert f.trace_count == k
    guard_line = inspect.getsourcelines(staircase)[1] + 3
    with pytest.raises(jitad.GuardLimitError) as info:
        f(points[MAX_SPECIALIZATIONS])
    message = str(info.value)
    assert f"test_control_flow.py:{guard_line}" in message
    assert "x > threshold" in message
    assert "jitad.where" in message
    assert str(MAX_SPECIALIZATIONS) in message
    # the specializations already made keep working
    assert f(points[0]) == pytest.approx(1.0) and f(points[3]) == pytest.approx(4.0)


def test_a_nested_derivative_s_guard_limit_names_the_inner_branch():
    """jacobian(grad(staircase)): the inner gradient's guards, replayed into the outer
    trace, name staircase's branch (they named the outer call's line)."""
    f = jitad.jacobian(jitad.grad(staircase, tiers=False), tiers=False)
    points = [-3.5, -2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5, 4.5, 5.5]
    for x in points[:MAX_SPECIALIZATIONS]:
        assert f(x) == 0.0                  # piecewise linear: no second derivative
    with pytest.raises(jitad.GuardLimitError) as info:
        f(points[MAX_SPECIALIZATIONS])
    guard_line = inspect.getsourcelines(staircase)[1] + 3
    assert f"test_control_flow.py:{guard_line}" in str(info.value)
    assert "x > threshold" in str(info.value)


def neighbours(x):
    """Reads sizes (slices): keyed by exact shape. Branches on its first element."""
    s = np.sum(np.tanh(x[1:]) * x[:-1])
    if x[0] > 0.5:
        s = s + x[0] ** 3
    return s


def neighbours_grad(x):
    grad = np.zeros_like(x)
    grad[1:] += (1.0 - np.tanh(x[1:]) ** 2) * x[:-1]
    grad[:-1] += np.tanh(x[1:])
    grad[0] += 3.0 * x[0] ** 2 if x[0] > 0.5 else 0.0
    return grad


def test_each_shape_has_its_own_limit_of_specializations():
    """A list keyed by exact shapes: every new length is a new specialization, with no
    limit (one RetraceWarning at the SHAPES_WARNING-th shape, at the caller's line); the
    guard limit counts the outcomes traced for one shape."""
    f = jitad.jit_grad(neighbours)
    lengths = range(2, 2 + SHAPES_WARNING + 2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for n in lengths:
            x = np.linspace(-0.9, 0.4, n)
            value, grad = f.value_and_grad(x)          # the line the warning names
            assert value == pytest.approx(neighbours(x), rel=1e-13)
            assert_close(grad, neighbours_grad(x), 1e-12, 1e-14, f"length {n}")
    source, first = inspect.getsourcelines(test_each_shape_has_its_own_limit_of_specializations)
    line = first + next(k for k, text in enumerate(source) if "the line the warning" in text)
    retraces = [w for w in caught if issubclass(w.category, jitad.RetraceWarning)]
    assert len(retraces) == 1 and f"{SHAPES_WARNING} different argument shapes" in \
        str(retraces[0].message)
    assert (Path(retraces[0].filename).name, retraces[0].lineno) == ("test_control_flow.py",
                                                                      line)
    assert f.trace_count == len(lengths)
    x = np.full(5, 0.8)                                 # the guard's other outcome at length 5
    assert f(x) == pytest.approx(neighbours_grad(x), rel=1e-12)
    assert f.trace_count == len(lengths) + 1
    entry = next(iter(f._cache.values()))
    assert len(entry.candidates([x])) == 2 and MAX_SPECIALIZATIONS > 2


def leaky_relu_sum(x):
    return np.sum(jitad.where(x > 0, x, 0.01 * x))


def test_jitad_where_selects_without_a_guard_and_differentiates_both_sides():
    f = jitad.jit_grad(leaky_relu_sum)
    x = np.array([-2.0, -0.5, 0.3, 1.5])
    assert "guard" not in prim_names(f.wengert(x))
    assert_close(f(x), [0.01, 0.01, 1.0, 1.0], 1e-15, 0)
    assert_close(f(-x), [1.0, 1.0, 0.01, 0.01], 1e-15, 0)
    assert f.trace_count == 1


def test_jitad_where_on_scalars():
    f = jitad.jit_grad(lambda x: jitad.where(x > 0, x * x, 0.01 * x))
    assert f(3.0) == pytest.approx(6.0) and f(-3.0) == pytest.approx(0.01)
    assert f.trace_count == 1
    assert "guard" not in prim_names(f.wengert(3.0))


def test_jitad_where_outside_tracing_is_numpy_where():
    x = np.array([-1.0, 2.0])
    assert_close(jitad.where(x > 0, x, 0.0), np.where(x > 0, x, 0.0), 0, 0)


def test_truth_value_of_a_traced_array_is_an_error_pointing_to_where():
    def f(x):
        if x > 0:
            return np.sum(x)
        return 0.0
    with pytest.raises(jitad.TraceError, match=r"(?s)ambiguous.*where.*test_control_flow\.py"):
        jitad.jit_grad(f).wengert(np.ones(3))


def test_guarded_function_plain_python_source_raises_on_the_other_branch():
    f = jitad.jit_grad(piecewise)
    value, (g,) = python_value_and_grad(f, (2.0,))
    assert (value, g) == (4.0, 4.0)
    with pytest.raises(GuardFailed):
        python_value_and_grad(f, (-2.0,))      # same trace, guard x > 0 fails
