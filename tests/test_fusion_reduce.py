"""Fusion across broadcast-reduce: an elementwise chain ending in reductions over some axes
is one loop nest with accumulators, forward and adjoint, at any rank (codegen.fusion_group).

Fused results are checked against NumPy (the plain function), against the same list printed
without fusion, and gradients against central differences; all as plain Python runs of the
generated source (no Numba).
"""
import numpy as np
import pytest

import jitad
from jitad import codegen
from jitad.api import build_source
from jitad.compile import load_python

from conftest import assert_close, check_grads_python, python_value_and_grad, traced


def batched_matvec(A, B):
    """Q_k x_nk for every n, k, written as a broadcast product reduced over the last axis."""
    return np.sum(np.sin(np.sum(A[None] * B[:, :, None], axis=3)))


def reduce_keepdims(x, y):
    s = np.sum(np.exp(x) * y, axis=1, keepdims=True)           # (3, 1, 4)
    return np.sum(np.log(s) * x[:, :1, :]) + np.sum(np.mean(x * x, axis=(0, 2)))


def reduce_middle_axes(x, w):
    return np.sum(np.tanh(np.sum(x * w, axis=(1, 2))) ** 2)    # x (2, 3, 4, 5), w (4, 5)


def mean_then_broadcast(x):
    centered = x - np.mean(x, axis=0)
    return np.sum(np.mean(centered ** 2, axis=0))


RNG = np.random.default_rng(0)
CASES = [
    (batched_matvec, (RNG.standard_normal((3, 4, 4)), RNG.standard_normal((5, 3, 4))), (0, 1)),
    (reduce_keepdims, (RNG.standard_normal((3, 2, 4)), RNG.uniform(0.5, 1.5, (3, 2, 4))), (0, 1)),
    (reduce_middle_axes, (RNG.standard_normal((2, 3, 4, 5)), RNG.standard_normal((4, 5))), (0, 1)),
    (mean_then_broadcast, (RNG.standard_normal((6, 3)),), (0,)),
]


def _unfused(monkeypatch):
    monkeypatch.setattr(codegen, "fusion_group", lambda entries, start, users, limit=None: None)


@pytest.mark.parametrize("fun,args,argnums", CASES, ids=lambda c: getattr(c, "__name__", ""))
def test_fused_reductions_match_numpy_unfused_and_differences(fun, args, argnums, monkeypatch):
    f = check_grads_python(fun, args, argnums=argnums)      # NumPy value, central differences
    value, grads = python_value_and_grad(f, args)
    _unfused(monkeypatch)
    want_value, want = python_value_and_grad(jitad.jit_grad(fun, argnums=argnums), args)
    assert_close(value, want_value, 1e-12, 1e-12, "fused vs unfused value")
    for g, w in zip(grads, want):
        assert_close(g, w, 1e-12, 1e-12, "fused vs unfused gradient")


def _source(fun, args, argnums):
    f = jitad.jit_grad(fun, argnums=argnums)
    variant, _ = traced(f, args)
    source, name, _ = build_source(variant, "value_and_grad", variant.wrt, f.__name__)
    return source, load_python(source, name)


def test_batched_matvec_is_one_loop_nest_each_way_without_the_4d_temporary():
    source, _ = _source(*CASES[0])
    assert "np.sum(" not in source                      # every reduction is accumulated
    assert source.count("# fused:") == 3                # forward, sin/cos, adjoint
    assert "[i0, i1, i2] += " in source                 # forward accumulator (n, K, d)
    assert "[i1, i2, i3] += " in source and "[i0, i1, i3] += " in source    # both adjoints
    # the 4-D product is allocated for its shape only: no element is stored into it
    product = [line.split("=")[0].strip() for line in source.splitlines()
               if "np.empty((" in line and line.count(".shape[") == 4]
    assert product and not any(f"{name}[i0, i1, i2, i3] =" in source for name in product)


def test_per_axis_bounds_are_checked_at_run_time():
    source, run = _source(*CASES[0])
    A, B = CASES[0][1]
    assert "check_broadcast((" in source
    with pytest.raises(ValueError):
        run(np.ones((3, 4, 4)), np.ones((5, 2, 4)))      # K disagrees
    with pytest.raises(ValueError):
        run(np.ones((3, 4, 4)), np.ones((5, 3, 6)))      # d disagrees
    value, grads = run(A, B)
    assert_close(value, batched_matvec(A, B), 1e-12, 1e-12, "value")


def test_a_wrong_accumulator_index_is_caught():
    """The value check above notices a fused reduction that accumulates into the wrong
    place (here every kept column into column 0)."""
    fun, args, argnums = CASES[2]
    f = jitad.jit_grad(fun, argnums=argnums)
    variant, runtime = traced(f, args)
    source, name, _ = build_source(variant, "value_and_grad", variant.wrt, f.__name__)
    assert "[i0, i3] += " in source                 # x (2, 3, 4, 5) summed over axes 1, 2
    broken = source.replace("[i0, i3] += ", "[i0, 0] += ", 1)
    module = {}
    exec(compile(broken, "<broken>", "exec"), module)
    value, _ = module[name](*runtime)
    assert abs(value - fun(*args)) > 1e-6
