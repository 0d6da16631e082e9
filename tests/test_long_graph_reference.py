"""The long-traces benchmark's references (benchmarks/long_graph.py): the generic
interpreter's gradient against central differences of the user function, and its forward
sweep alone (the benchmark's floor per call) against the user function's loss."""
import sys
from pathlib import Path

import numpy as np

from conftest import assert_close, numeric_grad

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import long_graph  # noqa: E402


def test_interpreter_and_its_forward_sweep_compute_the_users_graph():
    n_ops = 60                          # every kind of node, reads reaching the inputs
    x, = long_graph.make_args(n_ops, np.random.default_rng(5))
    fun = long_graph.loss(n_ops)
    value, grad = long_graph.interpreter(n_ops)(x)
    assert value == fun(x) == long_graph.loss_only(n_ops)(x)
    assert_close(grad, numeric_grad(fun, [x])[0], 1e-6, 1e-8, "interpreter gradient")
