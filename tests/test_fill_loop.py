"""An array made in the function and filled element by element (issue 11's fill loop):
tracing it does work linear in the iterations. Nothing here is timed: the tests count the
array elements that updates copy, the evaluators tracing compiles and the Python calls a
trace makes (cProfile's call count, as tests/test_linear_time.py does).
"""
from __future__ import annotations

import cProfile
import pstats

import numpy as np
import pytest

import jitad
from conftest import python_value
from jitad.primitives import REGISTRY
from jitad.primitives.core import Primitive
from jitad.tracing import trace
from test_inplace import residuals      # the fill loop: r[i] = model(t[i]) - y[i]


def fill_args(n):
    t = np.linspace(0.0, 5.0, n)
    return [np.array([1.5, 0.5]), t, 2.0 * np.exp(-0.7 * t) + 0.01 * np.sin(7.0 * t)]


def traced(fun, args):
    return trace(fun, args, [True] * len(args), [f"a{k}" for k in range(len(args))])


@pytest.fixture
def copies(monkeypatch):
    """Elements of arrays that `index_update` copies while tracing, and in-place updates."""
    counts = {"copied": 0, "in place": 0}
    impl, impl_in_place = Primitive.impl, Primitive.impl_in_place

    def counting_impl(self, *values, **params):
        if self.name == "index_update":
            counts["copied"] += np.size(values[0])
        return impl(self, *values, **params)

    def counting_in_place(self, *values, **params):
        counts["in place"] += 1
        return impl_in_place(self, *values, **params)
    monkeypatch.setattr(Primitive, "impl", counting_impl)
    monkeypatch.setattr(Primitive, "impl_in_place", counting_in_place)
    return counts


@pytest.mark.parametrize("n", [50, 400])
def test_fill_loop_updates_copy_no_array(copies, n):
    # (it was n copies of the whole array: n^2 elements, quadratic in the iterations)
    traced(residuals, fill_args(n))
    assert copies == {"copied": 0, "in place": n}


def test_an_array_held_elsewhere_is_copied_before_its_update(copies):
    def f(x):
        r = np.zeros(3)
        s = r.copy()            # shares r's concrete array until one of them is updated
        v = r[1:]               # a NumPy view of it, too (stale after the update)
        r[0] = x[0]
        s[1] = x[1]
        if s[0] > 0.5:          # (s[0] is 0: a branch on the value tracing computed)
            return 1e6 * x[0]
        return r[0] + 10.0 * s[0] + 100.0 * s[1] + 1000.0 * r[1] + 0.0 * v.size
    x = np.array([2.0, 3.0])
    assert traced(f, [x]).wengert.entries
    assert copies == {"copied": 6, "in place": 0}   # r's and s's updates each copied 3
    g = jitad.jit_grad(f, code_shape="straight")
    value, grad = g.value_and_grad(x)
    assert value == pytest.approx(2.0 + 300.0)
    np.testing.assert_allclose(grad, [1.0, 100.0])


def test_updates_in_place_keep_earlier_reads():
    def f(x):
        r = np.zeros(4)
        r[0] = x[0]
        first = r[0]            # an element read is a copy: later updates do not change it
        r[0] = 5.0 * x[1]
        block = r[:2] * 1.0     # a computed array: its own memory
        r[1] = x[1]
        return first + 10.0 * r[0] + 100.0 * block[1] + 1000.0 * r[1]
    x = np.array([2.0, 3.0])
    want = 2.0 + 150.0 + 0.0 + 3000.0
    g = jitad.jit_grad(f, code_shape="straight")
    value, grad = g.value_and_grad(x)
    assert value == pytest.approx(want)
    np.testing.assert_allclose(grad, [1.0, 1050.0])
    assert f(x) == pytest.approx(want)      # (the same on plain NumPy)


def test_one_evaluator_per_index_structure():
    getitem, update = REGISTRY["getitem"], REGISTRY["index_update"]
    traced(residuals, fill_args(30))
    before = len(getitem._impl_cache), len(update._impl_cache)
    traced(residuals, fill_args(300))
    assert (len(getitem._impl_cache), len(update._impl_cache)) == before


def calls(fun, args):
    profile = cProfile.Profile()
    traced_ = profile.runcall(traced, fun, args)
    return traced_, pstats.Stats(profile).total_calls


def test_trace_calls_per_iteration_are_bounded():
    # 10 operations an iteration, 3 of them (p[0], p[1], -p[1]) recorded once for all
    small, small_calls = calls(residuals, fill_args(200))
    large, large_calls = calls(residuals, fill_args(800))
    assert len(large.wengert.entries) == 7 * 800 + 7
    per_iteration = large_calls / 800
    assert per_iteration < 500, f"{per_iteration:.0f} Python calls per iteration"
    assert large_calls / small_calls < 4 * 1.05


def test_fill_loop_gradient_matches_hand_formula():
    p, t, y = fill_args(500)
    e = np.exp(-p[1] * t)
    r = p[0] * e - y
    g = jitad.jit_grad(residuals)
    value, grad = g.value_and_grad(p, t, y)
    assert g.stats()[-1]["shape"] == "loops"
    assert value == pytest.approx(0.5 * np.sum(r ** 2), rel=1e-12)
    np.testing.assert_allclose(grad, [np.sum(r * e), -np.sum(r * p[0] * t * e)], rtol=1e-10)


def test_a_scalar_is_recorded_once_only_for_equal_operands():
    # p[0] twice is one entry; x * 0.0 and x * -0.0 (or x * 1 and x * True) are not
    def f(x):
        a = x[0] * 0.0
        b = x[0] * -0.0
        return 1.0 / a - 1.0 / b + (x[1] * 1 + x[1] * True) + x[0] * x[0]
    x = np.array([2.0, 3.0])
    entries = traced(f, [x]).wengert.entries
    assert [e.prim.name for e in entries].count("getitem") == 2
    assert sum(e.prim.name == "mul" for e in entries) == 5
    with np.errstate(all="ignore"):
        assert python_value(jitad.jit_grad(f), [x]) == f(x) == np.inf
