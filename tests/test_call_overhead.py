"""The per-call path of compiled objects: how much Python runs per call (counted, never
timed), and that its cheaper checks still send every other argument where it belongs."""
import os
import sys
import threading

import numpy as np
import pytest

import jitad

SCALE = 3.0


def cubes(x):
    return np.sum(x ** 3)


def rosen_loop(x):
    s = 0.0
    for i in range(len(x) - 1):
        s += 100.0 * (x[i + 1] - x[i] ** 2) ** 2 + (1.0 - x[i]) ** 2
    return s


def scaled(x):
    return SCALE * np.sum(x * x)


JITAD = os.path.dirname(os.path.abspath(jitad.__file__))


def python_calls(call):
    """The result of `call()` and the Python functions (by name) of jitad's package it ran
    (generated entries count as jitad's; the compiled kernel does not)."""
    names = []

    def profile(frame, event, arg):
        if event == "call" and frame.f_code.co_filename.startswith(JITAD):
            names.append(frame.f_code.co_name)

    sys.setprofile(profile)
    try:
        result = call()
    finally:
        sys.setprofile(None)
    return result, names


@pytest.fixture(scope="module")
def rosen():
    f = jitad.jit_grad(rosen_loop)
    value_and_grad = f.value_and_grad           # taken before the first call, as minimize does
    x = np.linspace(-1.0, 1.5, 12)
    value_and_grad(x)
    return f, value_and_grad, x


def test_a_compiled_call_runs_one_python_function(rosen):
    f, value_and_grad, x = rosen
    for call in (lambda: value_and_grad(x), lambda: f.value_and_grad(x), lambda: f(x)):
        _, names = python_calls(call)
        assert len(names) == 1 and names[0].endswith("entry"), names


def test_derivative_objects_run_one_python_function():
    x, v = np.linspace(-1.0, 1.5, 12), np.linspace(0.5, 1.0, 12)
    for derivative in (jitad.hvp(rosen_loop), jitad.jvp(rosen_loop)):
        derivative(x, v)
        _, names = python_calls(lambda: derivative(x, v))
        assert len(names) == 1 and names[0].endswith("entry"), (derivative, names)


def test_the_entry_s_code_runs_in_references_taken_before_the_compile(rosen):
    f, value_and_grad, x = rosen
    (value, grad), names = python_calls(lambda: value_and_grad(x))
    assert value == pytest.approx(rosen_loop(x), rel=1e-14)
    r = x[1:] - x[:-1] ** 2
    expected = np.zeros_like(x)
    expected[:-1] = -400.0 * r * x[:-1] - 2.0 * (1.0 - x[:-1])
    expected[1:] += 200.0 * r
    np.testing.assert_allclose(grad, expected, rtol=1e-13)


@pytest.mark.parametrize("code_shape", ["straight", "tape"])
def test_one_axis_arrays_of_the_same_size_and_another_rank_or_layout(code_shape):
    """The entry compares a one-axis array's size only: the kernel refuses other ranks and
    layouts, and such calls go to their own signature's entry, not the full path."""
    f = jitad.jit_grad(cubes, code_shape=code_shape)
    runs = []
    full_path = f._run
    f._run = lambda *a: runs.append(a) or full_path(*a)
    flat, square = np.linspace(0.5, 3.0, 6), np.linspace(0.5, 3.0, 6).reshape(2, 3)
    for x in (flat, square, flat, square):
        np.testing.assert_allclose(f(x), 3.0 * x ** 2, rtol=1e-14)
    assert len(runs) == 2                       # the first call of each signature only
    strided = np.linspace(0.5, 3.0, 12)[::2]   # size 6, not contiguous
    np.testing.assert_allclose(f(strided), 3.0 * strided ** 2, rtol=1e-14)
    assert f(np.array(2.0)) == 12.0             # a 0-d array is a float
    single = jitad.jit_grad(cubes, code_shape=code_shape)
    assert single(np.array([2.0])) == pytest.approx([12.0])
    assert single(np.array(2.0)) == 12.0        # size 1 too, but rank 0
    with pytest.raises(jitad.ArgumentError):
        single(np.array([2], dtype=np.float32))


def test_a_rebound_global_reaches_a_reference_taken_before():
    global SCALE
    f = jitad.jit_grad(scaled)
    value_and_grad, x = f.value_and_grad, np.array([1.0, 2.0])
    assert value_and_grad(x)[0] == 15.0
    try:
        SCALE = 2.0
        assert value_and_grad(x)[0] == 10.0 and f(x).tolist() == [4.0, 8.0]
    finally:
        SCALE = 3.0
    assert value_and_grad(x)[0] == 15.0


def test_threads_calling_with_shapes_being_installed():
    f = jitad.jit_grad(cubes)
    inputs = [np.linspace(0.5, 2.0, n) for n in (3, 4, 5, 6)]
    wrong = []

    def work(offset):
        for k in range(200):
            x = inputs[(k + offset) % len(inputs)]
            if not np.allclose(f(x), 3.0 * x ** 2, rtol=1e-14):
                wrong.append(x)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not wrong


def test_the_benchmark_rosenbrock_loop_tapes_nothing():
    """`benchmarks/cases.py`'s loop at its default code shape: each iteration's adjoint runs
    right after it, in one loop reading x once per iteration (fuse.adjoints_early); the
    only array the kernel allocates is the gradient."""
    x = np.linspace(-1.0, 1.5, 300)
    source = jitad.jit_grad(rosen_loop).source(x)
    assert source.count("for k") == 1 and "_tape" not in source
    assert source.split("for k in")[1].split("\n    v")[0].count("x[") == 1
    assert sum(source.count(f"np.{alloc}(") for alloc in ("full", "empty", "zeros")) == 1


def test_entries_past_the_shared_globals_bound(monkeypatch):
    """Once the shared globals are full, entries are the methods themselves, and references
    taken before still reach them."""
    monkeypatch.setattr(jitad.api, "_SHARED_GLOBALS", 0)
    f = jitad.jit_grad(cubes)
    value_and_grad = f.value_and_grad
    for n in (3, 4, 3):
        x = np.linspace(0.5, 2.0, n)
        value, grad = value_and_grad(x)
        assert value == pytest.approx(np.sum(x ** 3)) and np.allclose(grad, 3.0 * x ** 2)
        np.testing.assert_allclose(f(x), 3.0 * x ** 2)
    _, names = python_calls(lambda: f.value_and_grad(np.linspace(0.5, 2.0, 4)))
    assert len(names) == 1      # the method is the latest signature's entry
