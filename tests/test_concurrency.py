"""Tracing changes no process-wide state: other threads keep the real `math` module (and
Numba, compiling there, resolves `math.sin` as usual), while `math` functions are traced in
the user's function and in the Python helpers it calls, at any depth. A fork while another
thread traces or compiles gives a child that can trace and compile (nothing it inherits
stays locked)."""
import math
import os
import sys
import threading
import time
from math import cos, sin
from math import exp as _exp

import numba
import numba.core.compiler_lock
import numpy as np
import pytest

import jitad
from jitad import compile as compiler

REAL_SIN, REAL_COS, REAL_EXP = math.sin, math.cos, math.exp


# ---------------------------------------------------------------- helpers reached from traced code

def _depth3(x):
    return sin(x) * cos(x)


def _depth2(x):
    return _depth3(x) + _exp(0.5 * x)


def _depth1(x):
    return 2.0 * _depth2(x) + math.tanh(x)


def _make_closure():
    tanh = math.tanh          # a cell holding a math function
    helper = _depth2          # a cell holding a user function that reaches `sin` below it

    def closure(x):
        return tanh(x) * helper(x)
    return closure


def _with_default(x, f=sin, g=_depth3):
    return f(x) + g(x) * x


def _local_import(x):
    import math as m
    from math import log1p
    return log1p(x * x) + m.atan(x)


_THIS_MODULE = sys.modules[__name__]


def _via_module(x):
    return _THIS_MODULE._depth3(x) + _THIS_MODULE.math.sqrt(x)


_closure = _make_closure()

HELPERS = {"depth 1": _depth3, "depth 2": _depth2, "depth 3": _depth1,
           "closure cells": _closure, "default argument": _with_default,
           "import in the body": _local_import, "module attribute": _via_module}


@pytest.mark.parametrize("name", sorted(HELPERS))
def test_math_in_helpers_is_traced(name):
    helper = HELPERS[name]        # a closure cell: functions inside containers are not traced
    wengert = jitad.jit_grad(lambda x: helper(x) * 1.5).wengert(0.7)
    assert {"sin", "tanh", "log1p", "sqrt"} & {e.prim.name for e in wengert.entries}


def _all_helpers(x):
    return (_depth3(x) + 2.0 * _depth2(x) + 3.0 * _depth1(x) + 4.0 * _closure(x)
            + 5.0 * _with_default(x) + 6.0 * _local_import(x) + 7.0 * _via_module(x))


def test_math_in_helpers_has_right_gradients():
    f = jitad.jit_grad(_all_helpers)         # one compile checks every helper's gradient
    x, h = 0.7, 1e-6
    value, grad = f.value_and_grad(x)
    assert value == pytest.approx(_all_helpers(x), rel=1e-12)
    assert grad == pytest.approx((_all_helpers(x + h) - _all_helpers(x - h)) / (2 * h), rel=1e-6)


_calls = 0


def _counted(x):
    global _calls
    _calls += 1
    constant = math.sin(0.5)            # math on a plain float inside traced code: a float
    assert type(constant) is float and constant == REAL_SIN(0.5)
    return x * constant


def test_global_writes_in_traced_code_reach_the_module():
    before = _calls
    f = jitad.jit_grad(lambda x: _counted(x) + _counted(2.0 * x))
    assert f.wengert(0.3) is not None
    assert _calls == before + 2
    assert math.sin is REAL_SIN and sin is REAL_SIN


# ---------------------------------------------------------------- other threads while tracing

def _traced_workload(entered, release):
    """Trace several functions using math.*; the first trace waits (inside `math`
    interception) until the other thread has compiled and computed."""
    def waiting(x):
        y = math.sin(x) + sin(x * x)
        entered.set()
        release.wait(timeout=120)
        return y + _depth1(y)

    results = [jitad.jit_grad(waiting).wengert(0.4)]
    for k in range(8):
        results.append(jitad.jit_grad(lambda x, k=k: _depth1(x) * k + math.exp(x)).wengert(0.1 * k))
    return results


def _numba_kernels():
    """Distinct Numba functions resolving math functions by identity."""
    @numba.njit
    def kernel_sin(x):
        return math.sin(x) + 1.0

    @numba.njit
    def kernel_imported(x):
        return cos(x) * _exp(x)

    @numba.njit
    def kernel_loop(n):
        total = 0.0
        for i in range(n):
            total += math.sqrt(i) * math.tanh(0.01 * i)
        return total
    return kernel_sin, kernel_imported, kernel_loop


def test_other_threads_keep_real_math_while_tracing():
    entered, release = threading.Event(), threading.Event()
    outcome = {}
    expected_sines = [REAL_SIN(0.01 * k) for k in range(200)]

    def tracer_thread():
        try:
            outcome["traces"] = _traced_workload(entered, release)
        except BaseException as error:      # reported by the main thread
            outcome["trace_error"] = error

    thread = threading.Thread(target=tracer_thread)
    thread.start()
    try:
        assert entered.wait(timeout=120), "the tracing thread never reached its trace"
        # The other thread is now inside a trace: this thread must see the real math module.
        assert math.sin is REAL_SIN and math.cos is REAL_COS and math.exp is REAL_EXP
        kernel_sin, kernel_imported, kernel_loop = _numba_kernels()
        assert kernel_sin(0.3) == pytest.approx(REAL_SIN(0.3) + 1.0, rel=1e-15)
        assert kernel_imported(0.3) == pytest.approx(REAL_COS(0.3) * REAL_EXP(0.3), rel=1e-15)
        expected = sum(math.sqrt(i) * math.tanh(0.01 * i) for i in range(50))
        assert kernel_loop(50) == pytest.approx(expected, rel=1e-12)
        for k in range(200):
            value = math.sin(0.01 * k)
            assert type(value) is float and value == expected_sines[k]
    finally:
        release.set()
        thread.join(timeout=120)
    assert "trace_error" not in outcome, outcome.get("trace_error")
    assert len(outcome["traces"]) == 9
    assert math.sin is REAL_SIN


# ---------------------------------------------------------------- forks while other threads work

def _child_exit_code(pid, seconds=120):
    """The forked child's exit code; a child still running after `seconds` deadlocked."""
    deadline = time.monotonic() + seconds
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child deadlocked")
        time.sleep(0.05)


def _fork_checking(check):
    """Fork; the child exits 0 if `check()` is true (it must not hang), else 1."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = 0 if check() else 1
        finally:
            os._exit(code)
    return _child_exit_code(pid)


def _cubes(x):
    return np.sum(x ** 3) + np.sum(np.sin(x))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_fork_while_another_thread_first_calls_an_object_gives_a_working_child():
    """The other thread holds the object's lock (and the trace's) when the fork comes: the
    child calls the same object, and traces a new function, without waiting for it."""
    entered, release = threading.Event(), threading.Event()

    def slow(x):
        entered.set()
        release.wait(timeout=120)           # (a trace that takes a while)
        return np.sum(np.sin(x) * x)

    f = jitad.jit_grad(slow)
    x = np.array([0.3, -1.2, 2.0])
    want = np.cos(x) * x + np.sin(x)
    thread = threading.Thread(target=f, args=(x,))
    thread.start()
    assert entered.wait(timeout=120)
    opener = threading.Timer(0.3, release.set)      # (the fork may wait for the trace)
    opener.start()
    try:
        code = _fork_checking(lambda: np.allclose(f(x), want, rtol=1e-14) and np.allclose(
            jitad.jit_grad(_cubes)(x), 3 * x ** 2 + np.cos(x), rtol=1e-14))
    finally:
        release.set()
        thread.join(timeout=120)
    assert code == 0
    assert np.allclose(f(x), want, rtol=1e-14)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_fork_while_another_thread_compiles_gives_a_child_that_compiles(monkeypatch):
    """A foreground compile (tiers=False) holds Numba's compiler lock when the fork comes:
    the child compiles code of its own."""
    inside = threading.Event()
    real = compiler._compiled

    def slow_compile(function, signature):
        with numba.core.compiler_lock.global_compiler_lock:     # (as Numba's compile does)
            inside.set()
            time.sleep(0.3)
            return real(function, signature)

    monkeypatch.setattr(compiler, "_compiled", slow_compile)

    def first(x):
        return np.sum(np.exp(x) * x)

    x = np.array([0.5, -1.0, 2.0])
    thread = threading.Thread(target=jitad.jit_grad(first, tiers=False), args=(x,))
    thread.start()
    assert inside.wait(timeout=120)
    monkeypatch.setattr(compiler, "_compiled", real)
    try:
        code = _fork_checking(lambda: np.allclose(jitad.jit_grad(_cubes, tiers=False)(x),
                                                  3 * x ** 2 + np.cos(x), rtol=1e-14))
    finally:
        thread.join(timeout=120)
    assert code == 0


@pytest.mark.parametrize("sparse", [False, True])
def test_a_trace_calling_an_object_another_thread_first_calls_does_not_deadlock(sparse):
    """Thread A traces `outer`, which calls `inner` with plain values (a constant); thread B
    first-calls `inner` meanwhile. Both take tracing's lock before the object's: in the
    other order B would hold inner's lock waiting for tracing's, and A the reverse."""
    cubes = jitad.hessian(lambda x: np.sum(x ** 3), sparse=True) if sparse else \
        jitad.jit_grad(lambda x: np.sum(x ** 3))
    lock = cubes._inner._lock if sparse else cubes._lock
    c = np.array([1.0, 2.0])
    want = np.diag(6.0 * c) if sparse else 3.0 * c ** 2
    started, results = threading.Event(), {}

    def inner(x):
        return cubes(x).toarray() if sparse else cubes(x)

    def outer(x):
        started.set()
        deadline = time.monotonic() + 1.0    # (until B holds inner's lock, if it can)
        while time.monotonic() < deadline and lock.acquire(blocking=False):
            lock.release()
            time.sleep(0.001)
        return np.sum(inner(c) * x)          # (a constant of the trace)

    def first():
        started.wait(timeout=60)
        results["inner"] = inner(c)
    a = threading.Thread(target=lambda: results.update(outer=jitad.jit_grad(outer)(c)),
                         daemon=True)
    b = threading.Thread(target=first, daemon=True)
    a.start()
    b.start()
    a.join(timeout=30)
    b.join(timeout=30)
    assert not a.is_alive() and not b.is_alive(), "deadlocked"
    assert np.allclose(results["outer"], want.sum(axis=-1) if sparse else want, rtol=1e-14)
    assert np.allclose(results["inner"], want, rtol=1e-14)
