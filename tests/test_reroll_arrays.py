"""Re-rolled loops: values recomputed instead of taped, and loops over array code.

Generated source is checked as plain Python (no Numba): it is a loop (a few lines for
many iterations), and its value and gradient match the plain function and central
differences (`check_grads_python`) or a hand-derived gradient.
"""
import numpy as np
import pytest

import jitad
from jitad import reroll

from conftest import assert_close, check_grads_python, python_value_and_grad, traced
from jitad.api import build_source


def source_of(f, *args):
    variant, _ = traced(f, args)
    return build_source(variant, "value_and_grad", variant.wrt, f.__name__, f.code_shape)[0]


def rosenbrock_loop(x):
    total = 0.0
    for i in range(len(x) - 1):
        total += 100.0 * (x[i + 1] - x[i] * x[i]) ** 2 + (1.0 - x[i]) ** 2
    return total


def rosenbrock_hand_gradient(x):
    g = np.zeros_like(x)
    g[:-1] = -400.0 * x[:-1] * (x[1:] - x[:-1] ** 2) - 2.0 * (1.0 - x[:-1])
    g[1:] += 200.0 * (x[1:] - x[:-1] ** 2)
    return g


def carried_from_elsewhere(x, y):
    """The value carried into the first iteration is y[0], not the previous element x[0]."""
    previous, total = y[0], y[1]
    for i in range(1, len(x)):
        d = x[i] - previous * previous
        total += d * d + (0.5 - previous) ** 2
        previous = x[i]
    return total


# ---------------------------------------------------------------- recomputed, not taped

def test_reverse_loop_rereads_inputs_instead_of_taping():
    f = jitad.jit_grad(rosenbrock_loop, code_shape="loops")
    x = np.random.default_rng(0).uniform(-1.2, 1.2, 60)
    source = source_of(f, x)
    assert source.count("for k") == 2 and "_tape" not in source
    reverse = source[source.index("# reverse sweep"):]
    assert "x[" in reverse.split("for k1")[1]       # the reverse loop reads x again
    value, (grad,) = python_value_and_grad(f, [x])
    assert value == pytest.approx(rosenbrock_loop(x), rel=1e-13)
    assert_close(grad, rosenbrock_hand_gradient(x), 1e-12, 1e-12, "recomputed gradient")


def test_carried_value_from_elsewhere_is_not_recomputed_as_a_read():
    f = jitad.jit_grad(carried_from_elsewhere, argnums=(0, 1), code_shape="loops")
    x, y = np.random.default_rng(1).uniform(-1.0, 1.0, (2, 40))
    assert "for k" in source_of(f, x, y)
    check_grads_python(f, [x, y], argnums=(0, 1))


def test_a_wrong_recomputation_rule_fails(monkeypatch):
    """Treating every carried initial value as the previous read recomputes x[0] where the
    function used y[0]: the gradient check must catch it."""
    monkeypatch.setattr(reroll, "_init_is_previous", lambda *args: True)
    f = jitad.jit_grad(carried_from_elsewhere, argnums=(0, 1), code_shape="loops")
    x, y = np.random.default_rng(1).uniform(-1.0, 1.0, (2, 40))
    with pytest.raises(AssertionError):
        check_grads_python(f, [x, y], argnums=(0, 1))
