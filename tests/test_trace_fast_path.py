"""The tracer's fast path for float64 scalars (`tracing._bind_scalars`) records what the
generic path records: the same printed Wengert list (names, parameters, literals, the
user's `file:line (fn)`), the same guards and bitwise the same trace-time values (they
decide guards), for scalar code, arrays, indexing, selects and loops."""
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from jitad import tracing
from jitad.primitives import REGISTRY
from jitad.tracing import Tracer, trace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import long_graph  # noqa: E402

SPECIAL = [0.0, -0.0, 1.0, -1.0, 0.5, 3.0, 1e308, -1e308, 5e-324, np.inf, -np.inf, np.nan]

_SEEN: list = []        # tracers the functions below keep, to compare their values


def _keep(*tracers):
    _SEEN.extend(t for t in tracers if isinstance(t, Tracer))


def small(x, y):
    a = x * y + 2.0
    b = math.exp(a) - np.maximum(x, 0.5)
    c = x * y               # known: no new entry
    return b / y + c ** 2 - 3 * a


def scalar_math(x, y):
    a = math.log1p(math.exp(x)) + math.sin(y) * math.cos(x) - math.sqrt(y * y + 1.0)
    b = math.log(y * y + 2.0, 10) + math.atan2(x, y) + math.hypot(x, 2) + abs(x) - (-y)
    c = x / 0.0 + 0.0 / (x - x) + x ** 3 + y ** -2 + 2.0 ** x + x ** 0.5 + 1 / y + x % 1.5
    d = np.exp(x) + np.tanh(y) + np.deg2rad(x) + np.minimum(x, y) + np.negative(y) - 7
    _keep(a, b, c, d)
    return a * b + np.where(c > d, c, d) + (True * x) + (-0.0 + y) + (x - 0.0) * 1


def arrays(w, v):
    h = np.tanh(w @ v + 0.5)                     # (3,) + scalar
    m = h[:, None] * v[None, :2] - w[:, :2]      # broadcasting
    s = np.maximum(m, 0.0).sum() + np.mean(h ** 2) + w[1, 2] * v[0] + m[2, 1]
    _keep(h, m, s)
    return s / (1.0 + np.abs(v).max())


def loop(p):
    total = 0.0
    for i in range(len(p) - 1):
        step = 100.0 * (p[i + 1] - p[i] ** 2) ** 2 + (1.0 - p[i]) ** 2
        if step > 1.0:                          # a guard per iteration
            step = math.sqrt(step)
        total += np.where(p[i] > 0, step, -step)
        _keep(step, total)
    return total


def _recorded(fun, args, fast=True, monkeypatch=None):
    """(printed list, guards, reads_sizes, values' (type, bytes)) of `fun` traced; with
    `fast=False` only the generic path binds."""
    if not fast:
        monkeypatch.setattr(tracing, "_SCALAR_PRIMITIVES", frozenset())
        monkeypatch.setattr(tracing, "_PLAIN_UFUNCS", {})
    del _SEEN[:]
    try:
        traced = trace(fun, list(args), [True] * len(args), [f"a{i}" for i in range(len(args))])
    finally:
        if not fast:
            monkeypatch.undo()
    values = [(type(t.value).__name__, np.asarray(t.value).dtype.str,
               np.asarray(t.value).tobytes()) for t in _SEEN]
    del _SEEN[:]
    return str(traced.wengert), traced.guards, traced.reads_sizes, values


def test_a_small_function_prints_as_written_here():
    line = small.__code__.co_firstlineno
    text = _recorded(small, [np.float64(0.3), np.float64(1.5)])[0]
    expected = """\
# small, traced for a0: f64[], a1: f64[]
{ lambda a0:f64[] a1:f64[] .
  let v1:f64[] = mul a0 a1              # test_trace_fast_path.py:L1 (small)
      v2:f64[] = add v1 2.0             # test_trace_fast_path.py:L1 (small)
      v3:f64[] = exp v2                 # test_trace_fast_path.py:L2 (small)
      v4:f64[] = maximum a0 0.5         # test_trace_fast_path.py:L2 (small)
      v5:f64[] = sub v3 v4              # test_trace_fast_path.py:L2 (small)
      v6:f64[] = div v5 a1              # test_trace_fast_path.py:L4 (small)
      v7:f64[] = integer_pow[n=2] v1    # test_trace_fast_path.py:L4 (small)
      v8:f64[] = add v6 v7              # test_trace_fast_path.py:L4 (small)
      v9:f64[] = mul 3 v2               # test_trace_fast_path.py:L4 (small)
      v10:f64[] = sub v8 v9             # test_trace_fast_path.py:L4 (small)
  in (v10) }"""
    for k in (4, 2, 1):
        expected = expected.replace(f":L{k} ", f":{line + k} ")
    assert text == expected


CASES = {
    "small": (small, [np.float64(0.3), 1.5]),
    "scalar_math": (scalar_math, [np.float64(0.7), np.float64(-1.25)]),
    "arrays": (arrays, [np.arange(12.0).reshape(3, 4) / 7.0 - 0.5,
                        np.array([0.5, -1.0, 2.0, 0.25])]),
    "loop": (loop, [np.array([0.5, -1.2, 2.0, 0.9, -0.1, 1.1])]),
    "long_graph": (long_graph.loss(200), list(long_graph.make_args(200,
                                                                   np.random.default_rng(0)))),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_fast_path_records_what_the_generic_path_records(name, monkeypatch):
    fun, args = CASES[name]
    fast = _recorded(fun, args)
    generic = _recorded(fun, args, fast=False, monkeypatch=monkeypatch)
    assert fast[0] == generic[0]                    # the printed list, byte for byte
    assert fast[1:] == generic[1:]                  # guards, sizes read, values' bits
    text = fast[0]
    assert "test_trace_fast_path.py:" in text or "long_graph.py:" in text
    assert "tracing.py" not in text and "numpy_functions.py" not in text


def test_long_graph_entries_are_one_per_operation_and_name_the_users_lines():
    fun, args = CASES["long_graph"]
    text = _recorded(fun, args)[0]
    lines = [t for t in text.splitlines() if " = " in t]
    names = [t.split(" = ")[0].split()[-1].split(":")[0] for t in lines]
    assert names == [f"v{k}" for k in range(1, len(lines) + 1)]
    locations = {t.split("  # ")[1] for t in lines}
    assert {loc.split(":")[0] for loc in locations} == {"long_graph.py"}
    assert {loc.split(" ")[1] for loc in locations} == {"(graph_loss)", "(<genexpr>)",
                                                        "(<listcomp>)"}
    ops = {t.split(" = ")[1].split()[0].split("[")[0] for t in lines}
    assert {"getitem", "exp", "log1p", "add", "mul", "maximum", "sub", "div"} <= ops


@pytest.mark.parametrize("name", ["add", "sub", "mul", "div", "maximum", "exp", "log1p",
                                  "sqrt", "integer_pow"])
def test_trace_time_values_of_the_fast_path_are_numpy_float64(name):
    """On special operands (signed zeros, infinities, NaN, a denormal, division by zero)
    the value a trace computes is NumPy's float64, without warnings or errors even under
    np.errstate(all="raise")."""
    prim = REGISTRY[name]
    unary = len(prim.domain) == 1
    ufunc = next((f for f in prim.traces if isinstance(f, np.ufunc)), None)

    def fun(x, y):
        out = (x ** 3 if name == "integer_pow" else
               getattr(math, name, getattr(np, name))(x) if unary else
               {"add": x + y, "sub": x - y, "mul": x * y, "div": x / y}.get(name) if
               name != "maximum" else np.maximum(x, y))
        _keep(out)
        return out

    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        for x in SPECIAL:
            for y in (SPECIAL if not unary else [1.0]):
                values = _recorded(fun, [np.float64(x), np.float64(y)])[3]
                with np.errstate(all="ignore"):
                    expected = np.power(np.float64(x), 3.0) if name == "integer_pow" else \
                        ufunc(np.float64(x)) if unary else ufunc(np.float64(x), np.float64(y))
                assert values == [("float64", "<f8", np.asarray(expected).tobytes())], \
                    (name, x, y, values, expected)


def test_a_scalar_computed_again_is_the_known_entry():
    def twice(x, y):
        return (x * y + x * y) * (2.0 * x + 2.0 * x) + (x ** 2 - x ** 2)

    text = _recorded(twice, [np.float64(0.5), np.float64(2.0)])[0]
    body = [t.split("#")[0].strip() for t in text.splitlines() if " = " in t]
    assert body == ["let v1:f64[] = mul a0 a1", "v2:f64[] = add v1 v1", "v3:f64[] = mul 2.0 a0",
                    "v4:f64[] = add v3 v3", "v5:f64[] = mul v2 v4",
                    "v6:f64[] = integer_pow[n=2] a0", "v7:f64[] = sub v6 v6",
                    "v8:f64[] = add v5 v7"]


def test_literals_keep_their_types_and_signs():
    def literals(x):
        return ((x + 1) * True - (-0.0)) / 2 + x * 0.0 + (x - 2 ** 70) + (x < 1)

    text = _recorded(literals, [np.float64(0.5)])[0]
    body = [t.split("#")[0].strip() for t in text.splitlines() if " = " in t]
    assert body[:5] == ["let v1:f64[] = add a0 1", "v2:f64[] = mul v1 True",
                        "v3:f64[] = sub v2 -0.0", "v4:f64[] = div v3 2",
                        "v5:f64[] = mul a0 0.0"]
    assert body[6] == "v7:f64[] = sub a0 1.1805916207174113e+21"     # (beyond int64)
