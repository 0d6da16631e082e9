"""The disk store of traces and builds: a new jit_grad (or a new process) of an unchanged
function skips tracing; any change the trace could depend on traces again.

Whether the user's function ran is seen from its own output (it prints while traced).
"""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import jitad

from conftest import assert_close

SCALE = 2.0
LOOKUP = [1.0]
ARRAYS = [np.ones(3)]


def helper(x):
    return x * x


def stored(x):
    print("tracing stored")
    return np.sum(np.sin(x) * x)


def scaled(x):
    print("tracing scaled")
    return SCALE * np.sum(helper(x))


def reads_a_list(x):
    print("tracing reads_a_list")
    return LOOKUP[0] * np.sum(x * x)


def reads_an_array_in_a_list(x):
    print("tracing reads_an_array_in_a_list")
    return np.sum(ARRAYS[0] * x * x)


def piecewise(x):
    print("tracing piecewise")
    if x > 0.0:
        return x * x
    return -3.0 * x


X = np.array([0.3, -1.2, 2.0])


def traces_of(capsys, f, *args):
    """(result of f(*args), how often the user's function ran)."""
    result = f(*args)
    return result, capsys.readouterr().out.count("tracing")


def test_a_second_jit_grad_of_the_same_function_does_not_trace(capsys):
    want = np.sin(X) + X * np.cos(X)
    for expected_traces in (1, 0):
        f = jitad.jit_grad(stored)
        grad, traces = traces_of(capsys, f, X)
        assert traces == expected_traces
        assert_close(grad, want, 1e-12, 1e-14, "gradient")
        assert f.stats()[0]["shape"] == "straight"     # also when the build was loaded


def test_changed_globals_and_helpers_trace_again(capsys, monkeypatch):
    _, traces = traces_of(capsys, jitad.jit_grad(scaled), X)
    assert traces == 1
    monkeypatch.setattr(sys.modules[__name__], "SCALE", 3.0)
    grad, traces = traces_of(capsys, jitad.jit_grad(scaled), X)
    assert traces == 1
    assert_close(grad, 6.0 * X, 1e-12, 1e-14, "gradient after SCALE changed")
    monkeypatch.setattr(sys.modules[__name__], "helper", lambda x: x * x * x)
    grad, traces = traces_of(capsys, jitad.jit_grad(scaled), X)
    assert traces == 1
    assert_close(grad, 9.0 * X * X, 1e-12, 1e-14, "gradient after helper changed")


def test_a_list_s_contents_are_part_of_the_store_key(capsys):
    try:
        for value, expected_traces in ((1.0, 1), (1.0, 0), (3.0, 1), (1.0, 0), (3.0, 0)):
            LOOKUP[0] = value                       # (in place: a new object reads it)
            grad, traces = traces_of(capsys, jitad.jit_grad(reads_a_list), X)
            assert traces == expected_traces, f"LOOKUP = {LOOKUP}"
            assert_close(grad, 2.0 * value * X, 1e-12, 1e-14, f"LOOKUP = {LOOKUP}")
    finally:
        LOOKUP[0] = 1.0


def test_functions_reading_mutable_objects_are_not_stored(capsys):
    for _ in range(2):
        _, traces = traces_of(capsys, jitad.jit_grad(reads_an_array_in_a_list), X)
        assert traces == 1


def test_a_stored_trace_of_the_other_branch_is_retraced(capsys):
    first = jitad.jit_grad(piecewise)
    assert first(2.0) == pytest.approx(4.0) and first(-1.0) == pytest.approx(-3.0)
    capsys.readouterr()
    grad, traces = traces_of(capsys, jitad.jit_grad(piecewise), 2.0)   # store: x <= 0
    assert grad == pytest.approx(4.0) and traces == 1


DERIVATIVE_OBJECT = """
import jitad, numpy as np

def inner(x, y):
    return np.sum(x * x * y)

G = jitad.{factory}

def outer(x, y):
    return np.sum(G(x, y) * x)
"""


@pytest.mark.parametrize("factories", [("grad(inner, argnums=0)", "grad(inner, argnums=1)"),
                                       ("jit_grad(inner, argnums=1)", "jit_grad(inner)")])
def test_the_options_of_a_jitad_object_read_are_part_of_the_store_key(factories):
    # Two versions of a module differ only in the argnums of a jitad object the traced
    # function calls: the second must not be served the first one's stored trace.
    Y = np.array([1.5, -0.5, 2.0])
    for factory in factories:
        namespace = {}
        exec(compile(DERIVATIVE_OBJECT.format(factory=factory), "<string>", "exec"), namespace)
        f = jitad.jit_grad(namespace["outer"])
        if "argnums=1" in factory:          # G = d/dy = x^2: outer = sum(x^3), gradient 3 x^2
            assert f.value(X, Y) == pytest.approx(np.sum(X ** 3), rel=1e-12), factory
            assert_close(f(X, Y), 3.0 * X * X, 1e-12, 1e-14, factory)
        else:                               # G = d/dx = 2 x y: outer = sum(2 x^2 y), 4 x y
            assert f.value(X, Y) == pytest.approx(np.sum(2.0 * X * X * Y), rel=1e-12), factory
            assert_close(f(X, Y), 4.0 * X * Y, 1e-12, 1e-14, factory)


def test_a_corrupted_store_entry_is_ignored(capsys, jitad_cache_dir):
    def corrupted(x):
        print("tracing corrupted")
        return np.sum(x ** 3)
    traces_of(capsys, jitad.jit_grad(corrupted), X)
    for path in (Path(jitad_cache_dir) / "traces").glob("*.json"):
        path.write_bytes(b"not an entry")
    for path in (Path(jitad_cache_dir) / "builds").glob("*.json"):
        path.write_bytes(path.read_bytes()[:10])                      # truncated
    grad, traces = traces_of(capsys, jitad.jit_grad(corrupted), X)
    assert traces == 1
    assert_close(grad, 3.0 * X * X, 1e-12, 1e-14, "gradient")


CHILD = """
import math, sys
import jitad

def rosen(x):
    print("tracing rosen")
    total = 0.0
    for i in range(len(x) - 1):
        total = total + 100.0 * (x[i + 1] - x[i] ** 2) ** 2 + (1.0 - x[i]) ** 2
    return total

import numpy as np
f = jitad.jit_grad(rosen)
value, grad = f.value_and_grad(np.linspace(-1.0, 1.0, 50))
(kernel,) = [k for e in f._cache.values() for vs in e.variants.values() for v in vs
             for k in v.kernels.values()]
print("numba compiled", sum(kernel.stats.cache_misses.values()))
print(repr(value), repr(float(grad.sum())))
"""


def test_a_new_process_reuses_trace_build_and_machine_code(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(CHILD))
    env = {**os.environ, "JITAD_CACHE_DIR": str(tmp_path / "cache"),
           "PYTHONPATH": str(Path(jitad.__file__).resolve().parent.parent)}   # this checkout
    runs = [subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                           text=True, timeout=300) for _ in range(2)]
    for run in runs:
        assert run.returncode == 0, run.stderr
    first, second = (run.stdout.splitlines() for run in runs)
    assert first[0] == "tracing rosen" and first[1] == "numba compiled 1"
    assert second[0] == "numba compiled 0", "the second process traced or compiled again"
    assert second[1] == first[2], "the same value and gradient"


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_unreadable_numba_cache_entries_are_recompiled(jitad_cache_dir, damage):
    def cubes(x):
        return np.sum(x ** 3)
    cubes.__name__ = cubes.__qualname__ = f"cubes_{damage}"      # its own cache files
    jitad.jit_grad(cubes)(X)
    entries = list((Path(jitad_cache_dir) / "numba").rglob(f"cubes_{damage}_*.nb[ic]"))
    assert len(entries) >= 2, "Numba wrote its index and data files"
    for path in entries:
        path.write_bytes(path.read_bytes()[:20] if damage == "truncated" else b"garbage")
    assert_close(jitad.jit_grad(cubes)(X), 3.0 * X * X, 1e-12, 1e-14, "gradient")


def test_the_store_key_does_not_depend_on_reference_counts():
    """Marshal (version 3 on) flags objects referenced more than once: a string constant's
    flag changed with who else held it, and a later process (or object) missed the trace."""
    from jitad.reads import reads
    namespace = {"np": np}
    exec("def loss(x):\n    return len('a constant only the code holds') * np.sum(x * x)\n",
         namespace)
    loss = namespace["loss"]
    before = reads(loss, ("key",)).digest
    held = [c for c in loss.__code__.co_consts if isinstance(c, str)]   # one more reference
    assert before is not None and held
    assert reads(loss, ("key",)).digest == before
