"""Trace-time values follow the compiled code's float64 (IEEE) semantics, so a first call
never raises where later compiled calls return; and operations on tracers give the right
answer or a clear error naming the operation and the user's line."""
import itertools
import math
import warnings

import numpy as np
import pytest

import jitad
from jitad.primitives import REGISTRY

SPECIAL = [0.0, -0.0, 1.0, -1.0, 0.5, 710.0, 1e308, -1e308, np.inf, -np.inf, np.nan]


def _ufunc(prim):
    return next((f for f in prim.traces if isinstance(f, np.ufunc)), None)


ELEMENTWISE = sorted(p.name for p in REGISTRY.values()
                     if _ufunc(p) is not None and _ufunc(p).signature is None)


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_trace_time_values_are_numpy_float64(name):
    """`impl` on Python floats equals the NumPy ufunc on float64, warning-free, even
    under np.errstate(all="raise") (compiled code neither warns nor raises)."""
    prim, ufunc = REGISTRY[name], _ufunc(REGISTRY[name])
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        for args in itertools.product(SPECIAL, repeat=ufunc.nin):
            got = prim.impl(*args)
            with np.errstate(all="ignore"):
                if name == "pow":       # the ufunc turns ** 0.5 into sqrt: (-inf) ** 0.5 is
                    expected = np.float64(args[0]) ** np.float64(args[1])   # nan, C's pow inf
                else:
                    expected = ufunc(*(np.float64(a) for a in args))
            assert np.array_equal(got, expected, equal_nan=True), (name, args, got, expected)


@pytest.mark.parametrize("n", [2, 3, 64, -1, -3])
def test_integer_pow_values_are_numpy_float64(n):
    for x in SPECIAL:
        with np.errstate(all="ignore"):
            expected = np.power(np.float64(x), float(n))
        got = REGISTRY["integer_pow"].impl(x, n=n)
        assert np.array_equal(got, expected, equal_nan=True), (x, n, got, expected)


def _np(fn, x):
    with np.errstate(all="ignore"):
        return fn(np.float64(x))


# (function, argument, its value and d/dx as NumPy float64 evaluates them). README
# "Conventions at kinks and outside domains": values outside a domain are not errors; the
# gradient follows the derivative formula (log'(-1) = -1.0), NaN reaching it wherever the
# chain rule multiplies by a NaN value (x log x, sqrt at -1).
CASES = {
    "1/x at 0": (lambda x: 1.0 / x, 0.0, lambda x: 1.0 / x, lambda x: -1.0 / (x * x)),
    "x**64 overflows": (lambda x: x ** 64, 1e10, lambda x: x ** 64, lambda x: 64.0 * x ** 63),
    "exp overflows": (lambda x: math.exp(x), 1000.0, np.exp, np.exp),
    "nan propagates": (lambda x: x * math.nan + 1.0, 2.0, lambda x: x * np.nan + 1.0,
                       lambda x: x * np.nan),
    "log(-1)": (lambda x: math.log(x), -1.0, np.log, lambda x: 1.0 / x),
    "sqrt(-1)": (lambda x: math.sqrt(x), -1.0, np.sqrt, lambda x: 0.5 / np.sqrt(x)),
    "x log x at -1": (lambda x: x * np.log(x), -1.0, lambda x: x * np.log(x),
                      lambda x: np.log(x) + 1.0),
    "fractional power of a negative": (lambda x: x ** 0.5 + 1.0, -4.0, lambda x: x ** 0.5 + 1.0,
                                       lambda x: 0.5 * x ** -0.5),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_first_call_has_compiled_semantics(name):
    fn, x, value, derivative = CASES[name]
    f = jitad.jit_grad(fn)
    first = f.value_and_grad(x)                     # traces: must not raise
    second = f.value_and_grad(x)                    # compiled code only
    assert f.trace_count == 1
    for result in (first, second):
        assert np.array_equal(result[0], _np(value, x), equal_nan=True), result
        assert np.array_equal(result[1], _np(derivative, x), equal_nan=True), result
    if name == "log(-1)":
        assert first[1] == -1.0                     # the README's stated example


def _branch_on_inf(x):
    y = 1.0 / x
    if y > 1e300:            # guard on a trace-time value: inf at x = 0, as compiled
        return 3.0 * x
    return 2.0 * x


def _branch_on_nan(x):
    y = math.log(x)
    if y == y:               # False for NaN, at trace time and in compiled code
        return y
    return 3.0 * x


@pytest.mark.parametrize("fn, x, slope", [(_branch_on_inf, 0.0, 3.0), (_branch_on_nan, -1.0, 3.0)])
def test_guards_on_special_values_agree_with_compiled_code(fn, x, slope):
    f = jitad.jit_grad(fn)
    for _ in range(2):
        assert f(x) == slope
    assert f.trace_count == 1          # the compiled guard held: trace-time value was the same


# ---------------------------------------------------------------- conversions and operators

def _scalar_conversions(x):
    s = np.stack([x, x * x])                                   # an array of traced scalars
    return (s @ np.array([1.0, 2.0]) + x.item() + x.real + x.imag + np.ones_like(x) * x
            + x.reshape(1).sum() + np.expand_dims(x, 0)[0] + sum(s.tolist()) + abs(x))


def _array_conversions(a):
    return (a[:1].item() * 3.0 + sum(a.tolist()) + a.reshape(2, 2)[1:, :1].item() ** 2
            + a.reshape(2, 2).item(3) * 5.0 + a.reshape(2, 2).item(0, 1))


def test_conversions_of_tracers():
    f = jitad.jit_grad(_scalar_conversions)
    x, h = np.float64(-0.6), 1e-6               # the reference runs on NumPy's float64
    assert f.value(x) == pytest.approx(_scalar_conversions(x), rel=1e-12)
    assert f(x) == pytest.approx((_scalar_conversions(x + h) - _scalar_conversions(x - h)) / (2 * h),
                                 rel=1e-6)
    a = np.array([1.0, 2.0, 3.0, 4.0])
    g = jitad.jit_grad(_array_conversions)
    assert g.value(a) == pytest.approx(3.0 + 10.0 + 9.0 + 20.0 + 2.0)
    np.testing.assert_allclose(g(a), [4.0, 2.0, 7.0, 6.0])


A = np.array([1.0, 2.0, 3.0])
ERRORS = [
    ("divmod", lambda x: divmod(x, 2.0)[0], 1.5, jitad.TraceError, r"divmod\(\)"),
    ("pow modulo", lambda x: pow(x, 2, 3), 1.5, jitad.TraceError, r"pow\(x, y, modulo\)"),
    ("complex", lambda x: x * 1j, 1.5, jitad.TraceError, r"mul of a traced value and a complex"),
    ("str", lambda x: x + "a", 1.5, jitad.TraceError, r"add of a traced value and a str"),
    ("float()", lambda x: float(x), 1.5, jitad.TraceError, r"float\(\) of a traced value"),
    ("np.float64()", lambda x: np.float64(x), 1.5, jitad.TraceError, r"np.stack"),
    ("round", lambda x: round(x), 1.5, jitad.TraceError, r"round\(\) of a traced value"),
    ("range", lambda x: sum(range(x)) * x, 1.5, jitad.TraceError, r"use as an index"),
    ("len", lambda x: len(x) * x, 1.5, jitad.TraceError, r"len\(\) of a traced scalar"),
    ("math.frexp", lambda x: math.frexp(x)[0] * x, 1.5, jitad.TraceError, r"math.frexp of a traced"),
    ("math.isnan", lambda x: x * math.isnan(x), 1.5, jitad.TraceError, r"math.isnan of a traced"),
    ("math.sin of array", lambda x: math.sin(x).sum(), A, jitad.TraceError, r"use np.sin"),
    ("array method", lambda x: x[x.argmax()], A, jitad.TraceError, r"\.argmax is not supported"),
    ("item of size 3", lambda x: x.item(), A, ValueError, r"size 1 .*shape \(3,\)"),
    ("concatenate scalars", lambda x: np.concatenate([x, x]).sum(), 1.5, jitad.ShapeError,
     "zero-dimensional"),
    ("masked array", lambda x: (x * np.ma.array([1.0, 2.0, 3.0], mask=[0, 1, 0])).sum(), A,
     jitad.TraceError, r"numpy.ma.MaskedArray \(an ndarray subclass\)"),
    ("matrix", lambda x: (np.matrix([[1.0, 2.0, 3.0]]) @ x).sum(), A, jitad.TraceError,
     r"numpy.matrix \(an ndarray subclass\)"),
]


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")     # np.matrix
@pytest.mark.parametrize("name, fn, x, error, match", ERRORS, ids=[e[0] for e in ERRORS])
def test_unsupported_operations_name_the_operation_and_line(name, fn, x, error, match):
    with pytest.raises(error, match=match) as raised:
        jitad.jit_grad(fn).wengert(x)
    assert "test_trace_semantics.py:" in str(raised.value)


EDGES = [(1.0, 0.1), (-1.0, 0.1), (0.7, 0.1), (1.0, -0.3), (-0.5, 2.0), (7.0, 2.0), (3.0, 1.5)]


@pytest.mark.parametrize("x, y", EDGES)
def test_floor_division_and_remainders_are_python_s(x, y):
    """`x // y` is Python's and NumPy's (1.0 // 0.1 is 9.0, where floor(1.0 / 0.1) is 10.0),
    in the first call and compiled, scalars and arrays; the remainders' derivative in y is
    minus that integer quotient (-9 at 1.0, 0.1), fmod's the truncated one."""
    def floor_times(x, y):
        return (x // y) * x + np.sum((np.array([x, -x]) // y) * y)
    f = jitad.jit_grad(floor_times, argnums=(0, 1), tiers=False)
    for _ in range(2):                  # the first call (traced values) and a compiled one
        value, (dx, dy) = f.value_and_grad(x, y)
        assert value == floor_times(x, y)
        assert dx == x // y and dy == (x // y) + (-x // y)
    remainders = jitad.jit_grad(lambda x, y: x % y + 2.0 * np.fmod(x, y), argnums=(0, 1),
                                tiers=False)
    quotient, truncated = x // y, (x - math.fmod(x, y)) / y
    assert remainders.value(x, y) == x % y + 2.0 * math.fmod(x, y)
    assert remainders(x, y) == (3.0, pytest.approx(-quotient - 2.0 * round(truncated)))


def test_floor_division_of_integers_stays_integer():
    """`k // 2` of an int array is int64, as NumPy's: it can index."""
    f = jitad.jit_grad(lambda x, k: np.sum(x[k // 2] * (k // 3)), tiers=False)
    x, k = np.arange(1.0, 5.0), np.array([1, 5, 7, -3])
    np.testing.assert_array_equal(f(x, k), np.bincount(k // 2 % 4, weights=k // 3, minlength=4))
