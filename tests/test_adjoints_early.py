"""Each iteration's adjoint right after it (jitad/fuse.py `adjoints_early`).

Where a loop's iterations meet only in sums, the reverse sweep of an iteration needs nothing
from later ones: moved up, it reads the iteration's forward values themselves and the
re-roller finds one loop, in the forward order, as a hand-written gradient is. Generated
source runs as plain Python (no Numba). The move only reorders entries, so results are
bitwise those of the list as given; they are checked against hand-derived gradients and
central differences as well.
"""
import re

import numpy as np
import pytest

import jitad
from jitad import codegen, fuse
from jitad.compile import load_python

from conftest import adjoint_list, assert_close, check_grads_python, python_value_and_grad, \
    traced
from test_fuse import exp_chain, rosen_case
from test_loop_fusion import loop_bodies
from test_reroll_arrays import rosenbrock_hand_gradient, rosenbrock_loop, source_of


def straight(wengert, name, args):
    """`wengert` printed straight (no loops, no reordering) and run as plain Python."""
    return load_python(codegen.generate(wengert, name, name, shape="straight"), name)(*args)


def element_spellings(x):
    """Element (i + 2, 0) read as x[i, 0], x[i + 1 - n, 0] and x[i + 2, -2] in three
    iterations: three updates of one adjoint element, whose order must stay."""
    s = 0.0
    n = x.shape[0]
    for i in range(n - 2):
        s += x[i, 0] * x[i + 1 - n, 0] * x[i + 2, -2] + x[i, 1] ** 2
    return s


def decaying(x):
    """A carried value read by every later iteration: the adjoints wait for the end."""
    s = 0.0
    for i in range(len(x)):
        s = s * 0.5 + np.sin(x[i]) * s + x[i] ** 2
    return s


@pytest.fixture
def rosen():
    return rosen_case()


def test_rosenbrock_is_one_loop_reading_each_element_once(rosen, monkeypatch):
    f, x = rosen
    source = source_of(f, x)
    (body,) = loop_bodies(source)
    assert "_tape" not in source and not re.search(r"_r\d", source)   # no tape, no copies
    # per iteration: one read of x, the 9 forward and 10 reverse entries of the trace
    # (interleaved block by block, the loop read x three times in 24 entries)
    assert "".join(body).count("x[") == 1
    assert len([line for line in body if "_prev = " not in line]) == 19
    value, (grad,) = python_value_and_grad(f, [x])
    assert value == pytest.approx(rosenbrock_loop(x), rel=1e-13)
    assert_close(grad, rosenbrock_hand_gradient(x), 1e-12, 1e-12, "gradient")
    check_grads_python(f, [x])
    monkeypatch.setattr(fuse, "adjoints_early", lambda wengert: None)
    value0, (grad0,) = python_value_and_grad(f, [x])
    assert value == value0 and np.array_equal(grad, grad0)     # bitwise


def test_the_moved_list_keeps_every_entry(rosen):
    f, x = rosen
    wengert = adjoint_list(f, [x])
    moved = fuse.adjoints_early(wengert)
    moved.validate()
    assert moved.outputs == wengert.outputs
    assert sorted(e.out.name for e in moved.entries) == \
        sorted(e.out.name for e in wengert.entries)
    assert sorted(str(e) for e in moved.entries if e.prim.name != "index_add") == \
        sorted(str(e) for e in wengert.entries if e.prim.name != "index_add")
    links = [e for e in moved.entries if e.prim.name == "index_add"]
    assert sorted(e.params["index"] for e in links) == [(i,) for i in range(len(x))]
    # in the forward order (the last iteration ends with x[n - 1] before x[n - 2])
    assert [e.params["index"] for e in links][:-2] == [(i,) for i in range(len(x) - 2)]
    assert len(codegen.printable_runs(moved)[0]) == 1
    value, grad = straight(moved, "moved", [x])
    value0, grad0 = straight(wengert, "given", [x])
    assert value == value0 and np.array_equal(grad[0], grad0[0])


def test_a_loop_the_block_fusion_tapes_is_one_loop(monkeypatch):
    x = np.random.default_rng(1).uniform(-1.0, 1.0, 50)
    f = jitad.jit_grad(exp_chain, code_shape="loops")
    source = source_of(f, x)
    assert source.count("for k") == 1 and "_tape" not in source
    check_grads_python(f, [x])
    want = np.zeros_like(x)
    e = np.exp(x[:-1] * x[1:])
    want[:-1] += e * x[1:]
    want[1:] += e * x[:-1]
    assert_close(python_value_and_grad(f, [x])[1][0], want, 1e-12, 1e-12, "gradient")


def test_updates_of_one_element_keep_their_order():
    f = jitad.jit_grad(element_spellings, code_shape="loops")
    x = np.random.default_rng(2).uniform(-1.0, 1.0, (30, 2))
    wengert = adjoint_list(f, [x])
    moved = fuse.adjoints_early(wengert)
    value, grad = straight(moved, "moved", [x])
    value0, grad0 = straight(wengert, "given", [x])
    assert value == value0 and np.array_equal(grad[0], grad0[0])   # bitwise: same order
    check_grads_python(f, [x])


def rosenbrock_hand_hvp(x, v):
    """The tridiagonal Rosenbrock Hessian times v."""
    hv = np.zeros_like(x)
    hv[:-1] += (1200.0 * x[:-1] ** 2 - 400.0 * x[1:] + 2.0) * v[:-1] - 400.0 * x[:-1] * v[1:]
    hv[1:] += -400.0 * x[:-1] * v[:-1] + 200.0 * v[1:]
    return hv


def test_a_hessian_vector_product_loop_is_one_loop(monkeypatch):
    """Forward over reverse: the tangents of the adjoints are forward entries after the first
    reverse one; they move with it, and the product's loop needs no tape."""
    x, v = np.random.default_rng(4).uniform(-1.2, 1.2, (2, 60))
    hvp = jitad.hvp(rosenbrock_loop, tiers=False)
    variant, _ = traced(hvp, (x, v))
    source, name, kernel = hvp._build(variant)[:3]
    assert source.count("for k") == 1 and "_tape" not in source
    got = load_python(source, name)(x, v)
    assert_close(got, rosenbrock_hand_hvp(x, v), 1e-11, 1e-11, "H v")
    eps = 1e-6        # central differences of the (hand-checked) gradient along v
    f = jitad.jit_grad(rosenbrock_loop, code_shape="loops")
    numeric = (python_value_and_grad(f, [x + eps * v])[1][0] -
               python_value_and_grad(f, [x - eps * v])[1][0]) / (2 * eps)
    assert_close(got, numeric, 1e-6, 1e-6, "H v by central differences")
    assert np.array_equal(got, straight(kernel, "hvp_given", [x, v]))   # bitwise


def test_a_carried_value_keeps_the_reverse_loop():
    f = jitad.jit_grad(decaying, code_shape="loops")
    x = np.random.default_rng(3).uniform(-1.0, 1.0, 40)
    wengert = adjoint_list(f, [x])
    moved = fuse.adjoints_early(wengert)
    if moved is not None:       # whatever moved, the loops do not merge
        assert len(codegen.printable_runs(moved)[0]) >= 2
    assert source_of(f, x).count("for k") == 2
    check_grads_python(f, [x])
