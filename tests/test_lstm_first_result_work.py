"""The Python work per entry of the LSTM's first result (tracing, shape choice, printing).

Nothing here is timed: each stage's calls (cProfile's count) are divided by the entries of
the list it works on, on the ADBench LSTM at 64 steps (the benchmark's 1,023 steps repeat
the same iteration). The bounds sit between the figures of the stages before and after
they were made cheaper (calls per entry: tracing 69 -> 59, shape choice 26 -> 11, shape
choice and NumPy-tier printing 47 -> 23), so an extra pass over the list or a per-operand
call coming back fails them.
"""
import cProfile
import pstats
import sys
from pathlib import Path

import numpy as np
import pytest

from jitad import codegen
from jitad.tracing import trace
from jitad.transforms import simplify, value_and_grad

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
import lstm  # noqa: E402


def calls(stage) -> int:
    profile = cProfile.Profile()
    profile.runcall(stage)
    return pstats.Stats(profile).total_calls


@pytest.fixture(scope="module")
def lstm_lists():
    """(traced list, differentiated list, calls per traced entry) at 64 steps."""
    args = list(lstm.make_data(2, 14, 65, np.random.default_rng(0)))
    run = lambda: trace(lstm.lstm_objective, args, [True] * 4, list("abcd"))  # noqa: E731
    run()       # (evaluators, translated code: made once per process)
    traced = run()
    per_entry = calls(run) / len(traced.wengert.entries)
    differentiated = simplify(value_and_grad(simplify(traced.wengert), [0, 1]))
    return traced.wengert, differentiated, per_entry


def test_tracing_calls_per_entry(lstm_lists):
    assert lstm_lists[2] < 64


def test_shape_choice_calls_per_entry(lstm_lists):
    wengert = lstm_lists[1]
    shape, runs = codegen.choose_shape(wengert)
    assert shape == "loops" and len(runs[0]) == 2     # the forward and the reverse loop
    assert calls(lambda: codegen.choose_shape(wengert)) / len(wengert.entries) < 18


def test_printing_calls_per_entry(lstm_lists):
    wengert = lstm_lists[1]
    work = calls(lambda: codegen.generate(wengert, "f", "f", *codegen.choose_shape(wengert),
                                          vectorized=True))
    assert work / len(wengert.entries) < 32


def test_traced_operations_silence_numpy_errors_through_its_context_variable():
    """The tracing evaluators set NumPy's error state through its context variable (a private
    name, `primitives.core._quiet_errors`); on the pinned NumPy that fast path is taken,
    and an evaluated division by zero stays silent and gives inf, as compiled code does."""
    from jitad.primitives import REGISTRY, core
    assert core._QUIET["_quiet"] is not None
    with np.errstate(all="raise"):
        assert REGISTRY["div"].impl(np.float64(1.0), np.float64(0.0)) == np.inf
