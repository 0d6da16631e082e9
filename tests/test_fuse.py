"""Loop fusion (jitad/fuse.py): the forward loop and the reverse sweep's loop as one.

Generated source is run as plain Python (no Numba). Fusion only reorders the list and
copies recomputed element reads, so results are bitwise those of the unfused source; they
are checked against a hand-derived gradient and central differences as well.
"""
import re

import numpy as np
import pytest

import jitad
from jitad import codegen, fuse

from conftest import adjoint_list, assert_close, check_grads_python, python_value_and_grad
from test_reroll_arrays import carried_from_elsewhere, rosenbrock_hand_gradient, \
    rosenbrock_loop, source_of


def unfused(monkeypatch):
    monkeypatch.setattr(fuse, "fuse_loops", lambda wengert, runs: None)
    monkeypatch.setattr(fuse, "adjoints_early", lambda wengert: None)


def block_fusion_only(monkeypatch):
    """Only `fuse_loops` (the adjoint of each iteration right after it is tested in
    test_adjoints_early.py)."""
    monkeypatch.setattr(fuse, "adjoints_early", lambda wengert: None)


def exp_chain(x):
    total = 0.0
    for i in range(len(x) - 1):
        total += np.exp(x[i] * x[i + 1])
    return total


def rosen_case():
    """The Rosenbrock loop printed as loops, and a point (test_adjoints_early's too)."""
    return jitad.jit_grad(rosenbrock_loop, code_shape="loops"), \
        np.random.default_rng(0).uniform(-1.2, 1.2, 60)


@pytest.fixture
def rosen():
    return rosen_case()


def test_forward_and_reverse_loops_fuse_into_one(rosen, monkeypatch):
    f, x = rosen
    block_fusion_only(monkeypatch)
    source = source_of(f, x)
    assert source.count("for k") == 1 and "_tape" not in source
    loop = source.split("for k in range(")[1]
    assert "x_bar[" in loop and re.search(r"_bar\w*_prev", loop) and "v9_prev +" in loop
    value, (grad,) = python_value_and_grad(f, [x])
    assert value == pytest.approx(rosenbrock_loop(x), rel=1e-13)
    assert_close(grad, rosenbrock_hand_gradient(x), 1e-12, 1e-12, "fused gradient")
    unfused(monkeypatch)
    assert source_of(f, x).count("for k") == 2
    value0, (grad0,) = python_value_and_grad(f, [x])
    assert value == value0 and np.array_equal(grad, grad0)     # bitwise


def test_fused_list_keeps_every_entry_and_its_dependencies(rosen):
    f, x = rosen
    wengert = adjoint_list(f, [x])
    runs = codegen.printable_runs(wengert)[0]
    fused = fuse.fuse_loops(wengert, runs)
    fused.validate()
    assert fused.outputs == wengert.outputs
    names = [e.out.name for e in fused.entries]
    assert set(names) >= {e.out.name for e in wengert.entries}
    copies = len(names) - len(wengert.entries)
    # the reverse loop's per-iteration copies of x[i], x[i+1] and the values made from them
    assert 0 < copies <= 6 * len(x)
    assert len(codegen.printable_runs(fused)[0]) == len(runs) - 1


def test_a_loop_reading_a_tape_is_not_fused(monkeypatch):
    block_fusion_only(monkeypatch)
    f = jitad.jit_grad(exp_chain, code_shape="loops")
    x = np.random.default_rng(1).uniform(-1.0, 1.0, 50)
    source = source_of(f, x)
    assert source.count("for k") == 2 and "_tape" in source
    check_grads_python(f, [x])


def test_a_carried_value_from_elsewhere_is_taped_not_fused(monkeypatch):
    """y[0] carried into the first iteration is not a read of x one step earlier."""
    block_fusion_only(monkeypatch)
    f = jitad.jit_grad(carried_from_elsewhere, argnums=(0, 1), code_shape="loops")
    x, y = np.random.default_rng(1).uniform(-1.0, 1.0, (2, 40))
    assert source_of(f, x, y).count("for k") == 2
    check_grads_python(f, [x, y], argnums=(0, 1))


def test_a_copy_of_the_wrong_iteration_fails(rosen, monkeypatch):
    """Copies made one iteration early read neighbouring elements: the checks must fail."""
    f, x = rosen
    block_fusion_only(monkeypatch)
    copy = fuse._Fusion._copy
    monkeypatch.setattr(fuse._Fusion, "_copy", lambda self, j, block, *rest:
                        copy(self, j, block - 1, *rest))
    with pytest.raises(AssertionError):
        check_grads_python(f, [x])
