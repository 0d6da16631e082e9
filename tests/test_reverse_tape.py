"""The reverse tape: a long list's first value and gradient from its traced list alone.

`run_tape_gradient` runs the forward rows as the tape does, then walks them backwards with
each opcode's VJP rule printed from the registry. Checked against central differences and hand
derivatives, and bitwise against the specialized code the background job compiles from
reverse mode (same operations in the same order). Which kernel served is counted, never
timed.
"""
from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import jitad
from jitad import api, codegen, derivatives, runtime, tape
from jitad import compile as compiler
from jitad.primitives import REGISTRY
from jitad.transforms import simplify, value_and_grad
from jitad.transforms.derivatives import hvp as hvp_list, tangent_list

from conftest import numeric_grad, run_list
from test_tape_slots import OPERATIONS, program, steps


@pytest.fixture(autouse=True)
def reverse_tape_at_once(monkeypatch):
    """The reverse tape for every trace long enough, compiled or not (these tests test it)."""
    monkeypatch.setattr(api, "REVERSE_TAPE_COMPILES_FROM_ENTRIES", 0)


def make_every_opcode(scale):
    """Every differentiable opcode of the tape (x: 3 values in (0.2, 0.8), s in (0.2, 0.8)),
    values read more than once, integer powers of every exponent the kernel has; each test
    its own `scale`, so that no test finds another's build in the disk store."""
    def every_opcode(x, s):
        return every_opcode_at(x, s) + scale
    return every_opcode


def every_opcode_at(x, s, powers=tape.REVERSE_POWERS):
    a, b, c = x[0], x[1], x[2]
    t = a + b - c * s / (b + 1.0)
    t = t + -a + np.abs(a - c) + math.exp(b) + math.log(c) + math.log1p(a) + math.expm1(s)
    t = t + math.sqrt(b) + np.square(c) + np.reciprocal(a + 1.0) + math.sin(a) + math.cos(b)
    t = t + math.tan(c) + math.tanh(s) + math.sinh(a) + math.cosh(b) + math.asin(c)
    t = t + math.acos(a) + math.atan(b) + math.atan2(c, s) + math.hypot(a, b)
    t = t + np.maximum(a, c) + np.minimum(b, s) + np.logaddexp(a, b) + a ** s
    t = t + np.where(a > b, a * b, c * s) + t * t
    for n in powers:
        t = t + (a + 0.5) ** n
    return t


def every_opcode_args():
    return np.array([0.3, 0.55, 0.7]), 0.45


def first_and_specialized(f, tiered, *args):
    """(the first result, served by the reverse tape; the specialized code's, after it)."""
    first = f.value_and_grad(*args)
    kernel = next(k for _, k in f._records if k is not None)
    assert type(kernel) is tape.ReverseTapeKernel and kernel.calls == 1
    tiered.set()
    assert f.wait(timeout=300) and f.stats()[0]["tier"] == "specialized"
    return first, f.value_and_grad(*args)


def assert_same_bits(first, second):
    """Equal values and gradients, bit for bit (a single gradient or a tuple of them)."""
    assert first[0] == second[0]
    grads = first[1] if isinstance(first[1], tuple) else (first[1],)
    others = second[1] if isinstance(second[1], tuple) else (second[1],)
    for g, h in zip(grads, others, strict=True):
        assert np.array_equal(g, h), (g, h)


def test_every_opcode_against_differences_and_the_specialized_code_bitwise(tiered):
    x, s = every_opcode_args()
    every_opcode = make_every_opcode(1.0)
    f = jitad.jit_grad(every_opcode, argnums=(0, 1), tiers=True)
    used = {e.prim.name for e in f.wengert(x, s).entries}
    differentiable = {name for name in runtime.TAPE_OPCODES[:tape.OPCODE["select"] + 1]
                      if not REGISTRY[name].nondifferentiable}
    assert differentiable <= used, differentiable - used
    first, second = first_and_specialized(f, tiered, x, s)
    assert first[0] == pytest.approx(every_opcode(x, s), rel=1e-14)
    grads = numeric_grad(every_opcode, [x, s], argnums=(0, 1))
    np.testing.assert_allclose(first[1][0], grads[0], rtol=1e-6)
    assert first[1][1] == pytest.approx(grads[1], rel=1e-6)
    assert_same_bits(first, second)


def python_kernel(wengert, wrt):
    """A ReverseTapeKernel run as plain Python (the printed `run_tape_gradient` without
    Numba): no compile, and a rule changed in the registry is printed."""
    return tape.ReverseTapeKernel(wengert, wrt, compiler.load_python(
        tape.reverse_source(), "run_tape_gradient"))


def test_the_reverse_sweep_prints_the_registry_rule_a_wrong_rule_fails(monkeypatch):
    """The kernel's rules are the registry's: a deliberately wrong `exp` rule (g * out * 2)
    gives a wrong gradient, the right one the differences'."""
    x, s = every_opcode_args()
    every_opcode = make_every_opcode(0.75)
    forward = simplify(jitad.jit_grad(every_opcode).wengert(x, s))
    grads = numeric_grad(every_opcode, [x, s], argnums=(0, 1))
    right = python_kernel(forward, (0, 1))(x, s)
    np.testing.assert_allclose(right[1][0], grads[0], rtol=1e-6)
    exp = REGISTRY["exp"]
    monkeypatch.setattr(exp, "vjp", lambda b, g, out, x: (b.mul(b.mul(g, out), 2.0),))
    wrong = python_kernel(forward, (0, 1))(x, s)
    assert not np.allclose(wrong[1][0], grads[0], rtol=1e-3)


def masked(x):
    total = 0.0
    for i in range(x.shape[0]):
        total = total + np.where(x[i] > 0.0, np.sqrt(x[i]), 0.0) + np.maximum(x[i], 0.25)
    return total


def test_masked_zeros_and_ties_as_reverse_mode(tiered):
    """A select's unchosen operand gets no adjoint (sqrt of a negative: gradient 0, not
    NaN); maximum's ties split the gradient (0.5 each)."""
    x = np.array([-1.0, 0.25, 4.0, -0.0, 0.0, 2.25])
    f = jitad.jit_grad(masked, tiers=True)
    first, second = first_and_specialized(f, tiered, x)
    want = np.array([0.0, 1.0 + 0.5, 0.25 + 1.0, 0.0, 0.0, 1.0 / 3.0 + 1.0])
    np.testing.assert_allclose(first[1], want, rtol=1e-15, atol=0)
    assert_same_bits(first, second)


def masked_twice(x):
    """sqrt(x[i]) kept by two selects that both zero it where x[i] <= 0: the gradient
    there is 0.5 (the linear term's), not 0 * inf = NaN, in reverse mode as on the tape."""
    total = 0.0
    for i in range(x.shape[0]):
        v = np.sqrt(x[i])
        total = total + np.where(x[i] > 0, v, 0.0) + np.where(x[i] > 0.5, v, 0.0) + x[i] * 0.5
    return total


def test_a_sum_of_masked_zeros_stays_zero_in_both_tiers(tiered):
    x = np.array([0.0, -1.0, 0.25, 1.0, -0.0, 4.0])
    f = jitad.jit_grad(masked_twice, tiers=True)
    first, second = first_and_specialized(f, tiered, x)
    want = np.array([0.5, 0.5, 0.5 + 1.0, 0.5 + 0.5 + 0.5, 0.5, 0.5 + 0.25 + 0.25])
    np.testing.assert_allclose(first[1], want, rtol=1e-15, atol=0)
    assert_same_bits(first, second)


def kinds(x, m, s, unused):
    """A 1-D and a 2-D array, a scalar read twice, and an argument that is never read."""
    total = s * s
    for i in range(x.shape[0]):
        for j in range(m.shape[1]):
            total = total + math.tanh(x[i] * m[i, j] + s) * m[-1 - i, j]
    return total


@pytest.mark.parametrize("argnums", [(0,), (1,), (2,), (0, 1, 2, 3)])
def test_argument_kinds_and_argnums_against_differences(tiered, argnums):
    rng = np.random.default_rng(len(argnums) * 10 + argnums[0])
    args = [rng.uniform(-1, 1, 4), rng.uniform(-1, 1, (4, 3)), 0.3, 1.5]
    f = jitad.jit_grad(kinds, argnums=argnums, tiers=True)
    first, second = first_and_specialized(f, tiered, *args)
    assert first[0] == pytest.approx(kinds(*args), rel=1e-13)
    grads = first[1]                # (a tuple: argnums is one)
    for got, want in zip(grads, numeric_grad(kinds, args, argnums=argnums), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
    assert_same_bits(first, second)
    if 3 in argnums:
        assert first[1][-1] == 0.0


def picks(x):
    """The value is an input element plus terms of other elements that cancel exactly
    (their gradients do not: 1 - 1 for x[1]) and a constant."""
    total = x[0]
    for i in range(1, x.shape[0]):
        total = total + (x[i] * 2.0 - x[i] * 2.0) * 0.0 + 0.5
    return total


def test_outputs_that_are_an_input_element_or_do_not_depend(tiered):
    x = np.linspace(0.1, 0.9, 12)
    f = jitad.jit_grad(picks, tiers=True)
    first, second = first_and_specialized(f, tiered, x)
    assert first[0] == pytest.approx(x[0] + 5.5)
    np.testing.assert_array_equal(first[1], np.eye(12)[0])
    assert_same_bits(first, second)
    constant = python_kernel(simplify(jitad.jit_grad(lambda x: 3.0 + 0.0 * x[0]).wengert(x)),
                             (0,))
    value, (grad,) = constant(x)
    assert value == 3.0 and np.array_equal(grad, np.zeros(12))


def branchy(x):
    total = 0.0
    for i in range(x.shape[0]):
        if x[0] > 0:                # a guard row: the other branch retraces
            total = total + math.exp(x[i]) * x[0]
        else:
            total = total + math.sin(x[i])
    return total


def test_a_guard_on_the_tape_retraces_for_the_other_branch(tiered):
    f = jitad.jit_grad(branchy, tiers=True)
    x = np.linspace(0.1, 1.0, 10)
    for sign in (1.0, -1.0):
        y = x * sign
        value, grad = f.value_and_grad(y)
        assert value == pytest.approx(branchy(y), rel=1e-13)
        np.testing.assert_allclose(grad, numeric_grad(branchy, [y])[0], rtol=1e-6)
    assert f.trace_count == 2
    assert all(type(k) is tape.ReverseTapeKernel for _, k in f._records)


def test_no_reverse_mode_list_before_the_first_result(tiered, monkeypatch):
    """The first call differentiates nothing: reverse mode runs in the background job."""
    threads = []
    real = api.value_and_grad

    def spy(*args):
        threads.append(threading.current_thread())
        return real(*args)

    monkeypatch.setattr(api, "value_and_grad", spy)
    x, s = every_opcode_args()
    f = jitad.jit_grad(make_every_opcode(0.875), argnums=(0, 1), tiers=True)
    f.value_and_grad(x, s)
    assert f.stats()[0]["tier"] == "tape"
    tiered.set()
    assert f.wait(timeout=300)
    assert len(threads) == 1 and threads[0] is not threading.current_thread()


def test_integer_powers_outside_the_kernel_fall_back_to_the_reversed_list(tiered):
    def high_power(x):
        return sum(x[i] ** 11 for i in range(x.shape[0]))
    x = np.linspace(0.5, 1.0, 10)
    f = jitad.jit_grad(high_power, tiers=True)
    value, grad = f.value_and_grad(x)
    kernel = next(k for _, k in f._records if k is not None)
    assert type(kernel) is tape.TapeKernel
    np.testing.assert_allclose(grad, 11 * x ** 10, rtol=1e-13)


@settings(max_examples=40, derandomize=True, deadline=None, database=None)
@given(steps, st.floats(-2.0, 2.0))
def test_random_programs_bitwise_as_the_tape_of_the_reverse_mode_list(steps, s):
    """Random programs whose operations read nodes at random distances back (values read
    from 1 to 40 times, guards, selects, ties): the reverse tape's value and gradients are
    bitwise those of the tape running reverse mode's list of the same simplified trace."""
    x = np.array([0.3, -1.2, 0.8, 1.7])
    forward = simplify(jitad.jit_grad(program(steps)).wengert(x, s))
    reverse = compiler.reverse_tape_kernel(forward, (0, 1))
    reversed_list = compiler.tape_kernel(value_and_grad(forward, [0, 1]))
    (value, (grad_x, grad_s)), (want, (want_x, want_s)) = reverse(x, s), reversed_list(x, s)
    assert np.array_equal([value, grad_s], [want, want_s], equal_nan=True)
    assert np.array_equal(grad_x, want_x, equal_nan=True)


def random_program(seed, n):
    """`program` of `n` random steps (no repeats for the re-roller to find)."""
    rng, names = np.random.default_rng(seed), sorted(OPERATIONS)
    return program([(names[k], int(a), int(b)) for k, a, b in zip(
        rng.integers(0, len(names), n), rng.integers(1, 40, n), rng.integers(1, 40, n))])


def the_tape_stayed(f, kind):
    """The first-tier kernel of `f`, of type `kind`, still serving after the background
    job (done, the shape the tape)."""
    row = f.stats()[0]
    assert row["tier"] == "tape" and row["background"] == "done" and row["shape"] == "tape"
    kernel = next(k for _, k in f._records if k is not None)
    assert type(kernel) is kind and kernel.successor is None
    return kernel


def test_a_list_too_long_for_compiled_code_stays_on_the_reverse_tape(tiered, monkeypatch):
    """Over LLVM's limit and without repeats to re-roll, the specialized code would be a
    tape too: the background job stores the trace and keeps the reverse tape, without
    differentiating (nothing compiled, no second tape encoded)."""
    monkeypatch.setattr(codegen, "LLVM_ENTRIES_LIMIT", 100)
    fun = random_program(11, 300)                  # (about 380 entries, no repeats)
    f = jitad.jit_grad(fun, argnums=(0, 1))
    built = []
    monkeypatch.setattr(api, "value_and_grad", lambda *a: built.append(a))
    monkeypatch.setattr(compiler, "tape_kernel", lambda *a: built.append(a))
    x, s = np.array([0.3, -1.2, 0.8, 1.7]), 0.4
    first = f.value_and_grad(x, s)
    tiered.set()
    assert f.wait(timeout=300) and built == []
    kernel = the_tape_stayed(f, tape.ReverseTapeKernel)
    second = f.value_and_grad(x, s)
    assert kernel.calls == 2
    assert_same_bits(first, second)
    with np.errstate(invalid="ignore"):        # (the sqrt a select does not take)
        grads = numeric_grad(fun, [x, s], argnums=(0, 1))
    np.testing.assert_allclose(first[1][0], grads[0], rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------- Hessian-vector products

def hvp_by_differences(fun, args, tangents, eps=1e-5):
    """H v of `fun` at `args` (all differentiated; floats or arrays) along `tangents`, by
    central differences of its gradient (itself checked against differences)."""
    argnums = tuple(range(len(args)))
    grad = jitad.grad(fun, argnums=argnums, tiers=False)
    for got, want in zip(grad(*args), numeric_grad(fun, list(args), argnums=argnums)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-8)
    ahead = grad(*(a + eps * t for a, t in zip(args, tangents)))
    behind = grad(*(a - eps * t for a, t in zip(args, tangents)))
    return tuple((p - m) / (2 * eps) for p, m in zip(ahead, behind))


def test_an_hvp_starts_on_the_reverse_tape_of_its_directional_derivative(tiered,
                                                                          monkeypatch):
    """Reverse over forward: the reverse tape of the jvp list's tangent, no forward-over-
    reverse list before the first result (it is built in the background); the same
    products in another order as the specialized code's (equal up to rounding)."""
    built = []
    real = derivatives.kernel_list
    monkeypatch.setattr(derivatives, "kernel_list", lambda *a: built.append(
        threading.current_thread()) or real(*a))
    (x, s), (v, w) = every_opcode_args(), (np.array([0.4, -1.1, 0.7]), -0.6)
    powers = range(tape.REVERSE_POWERS.start + 1, tape.REVERSE_POWERS.stop)  # (their jvp's too)
    fun = lambda x, s: every_opcode_at(x, s, powers)     # noqa: E731
    hv = jitad.hvp(fun, argnums=(0, 1))
    first = hv(x, v, s, w)
    kernel = next(k for _, k in hv._records if k is not None)
    assert type(kernel) is tape.HvpTapeKernel and kernel.calls == 1
    want = hvp_by_differences(fun, (x, s), (v, w))
    np.testing.assert_allclose(first[0], want[0], rtol=1e-6)
    assert isinstance(first[1], float) and first[1] == pytest.approx(want[1], rel=1e-6)
    tiered.set()
    assert hv.wait(timeout=300) and hv.stats()[0]["tier"] == "specialized"
    assert built and threading.current_thread() not in built
    second = hv(x, v, s, w)
    assert kernel.calls == 1
    np.testing.assert_allclose(first[0], second[0], rtol=1e-13)
    assert first[1] == pytest.approx(second[1], rel=1e-13)


def test_a_dense_hessian_starts_on_the_reverse_tape_once_per_direction(tiered, monkeypatch):
    """Its loop over directions runs as Python, each product by the reverse tape of the
    tangent list; blocks for a tuple of arguments, a scalar among them; the specialized
    loop (forward over reverse) agrees up to rounding."""
    built = []
    real = derivatives.kernel_list
    monkeypatch.setattr(derivatives, "kernel_list", lambda *a: built.append(
        threading.current_thread()) or real(*a))
    x, s = every_opcode_args()
    powers = range(tape.REVERSE_POWERS.start + 1, tape.REVERSE_POWERS.stop)
    fun = lambda x, s: every_opcode_at(x, s, powers) * 0.5     # noqa: E731
    h = jitad.hessian(fun, argnums=(0, 1))
    first = h(x, s)
    row = h.stats()[0]
    assert row["tier"] == "tape" and row["tier_calls"] == 1
    assert threading.current_thread() not in built
    directions = [(e, 0.0) for e in np.eye(3)] + [(np.zeros(3), 1.0)]
    columns = [hvp_by_differences(fun, (x, s), d) for d in directions]
    want_xx = np.column_stack([c[0] for c in columns[:3]])
    np.testing.assert_allclose(first[0][0], want_xx, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(first[0][1], columns[3][0], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(first[1][0], [c[1] for c in columns[:3]], rtol=1e-6, atol=1e-7)
    assert first[1][1] == pytest.approx(columns[3][1], rel=1e-6)
    tiered.set()
    assert h.wait(timeout=300) and h.stats()[0]["tier"] == "specialized"
    second = h(x, s)
    for got, want in zip(np.block([[first[0][0], first[0][1][:, None]],
                                   [first[1][0][None, :], first[1][1]]]).ravel(),
                         np.block([[second[0][0], second[0][1][:, None]],
                                   [second[1][0][None, :], second[1][1]]]).ravel()):
        assert got == pytest.approx(want, rel=1e-12, abs=1e-12)


def test_an_hvp_on_the_reverse_tape_retraces_for_the_other_branch(tiered):
    hv = jitad.hvp(branchy)
    x, v = np.linspace(0.1, 1.0, 10), np.cos(np.arange(10.0))
    for sign in (1.0, -1.0):
        np.testing.assert_allclose(hv(x * sign, v), hvp_by_differences(branchy, (x * sign,),
                                                                       (v,))[0], rtol=1e-6)
    assert hv.trace_count == 2
    assert all(type(k) is tape.HvpTapeKernel for _, k in hv._records)


def test_an_hvp_too_long_for_compiled_code_stays_on_the_reverse_tape(tiered, monkeypatch):
    """Where the hvp list would be over LLVM's limit (HVP_GROWTH times the traced list) and
    the trace does not re-roll, the background job keeps the first tier without building
    the forward-over-reverse list (2 minutes at 100,000 ops of the long-traces graph)."""
    monkeypatch.setattr(codegen, "LLVM_ENTRIES_LIMIT", 1000)
    fun = random_program(12, 500)                  # (about 500 entries, no repeats)
    hv = jitad.hvp(fun)
    built = []
    monkeypatch.setattr(derivatives, "kernel_list", lambda *a: built.append(a))
    x, v = np.array([0.3, -1.2, 0.8, 1.7]), np.array([0.5, 0.25, -1.0, 0.75])
    first = hv(x, v, 0.4)
    tiered.set()
    assert hv.wait(timeout=300) and built == []
    kernel = the_tape_stayed(hv, tape.HvpTapeKernel)
    assert np.array_equal(hv(x, v, 0.4), first) and kernel.calls == 2
    with np.errstate(invalid="ignore"):        # (the sqrt a select does not take)
        want = hvp_by_differences(lambda x: fun(x, 0.4), (x,), (v,))[0]
    np.testing.assert_allclose(first, want, rtol=1e-5, atol=1e-6)
    # Without tiers, that tape is the specialized kernel (and a dense Hessian's products).
    synchronous = jitad.hvp(fun, tiers=False)
    assert np.array_equal(synchronous(x, v, 0.4), first) and built == []
    assert type(next(k for _, k in synchronous._records)) is tape.HvpTapeKernel
    dense = jitad.hessian(fun, tiers=False)
    hessian = dense(x, 0.4)
    assert built == [] and dense.stats()[0]["shape"] == "tape"
    np.testing.assert_allclose(hessian @ v, first, rtol=1e-12, atol=1e-12)


CHILD = """
import sys
import numpy as np
import jitad
from jitad import compile as compiler, disk

def chain(x):
    total = 0.0
    for i in range(x.shape[0]):
        total = total + np.tanh(x[i] * total + 0.5)
    return total

jitad.api.REVERSE_TAPE_COMPILES_FROM_ENTRIES = 0
f = jitad.jit_grad(chain)
f.value_and_grad(np.linspace(-1.0, 1.0, int(sys.argv[1])))   # (no stored build)
assert type(next(k for _, k in f._records)).__name__ == "ReverseTapeKernel"
kernel = compiler._tape_gradient(disk.cache_dir())
print(sum(kernel.stats.cache_misses.values()), sum(kernel.stats.cache_hits.values()))
"""


def test_a_copied_cache_directory_keeps_the_reverse_tape_compiled(tmp_path):
    """The kernel's source is generated into the cache directory; its machine code is
    found again where the directory was copied to (no 2 s compile in the new place)."""
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": str(Path(jitad.__file__).resolve().parent.parent)}
    counts = []
    for cache, n in (("first", 400), ("copy", 401)):
        if cache == "copy":
            shutil.copytree(tmp_path / "first", tmp_path / "copy")
        run = subprocess.run([sys.executable, str(script), str(n)], capture_output=True,
                             text=True,
                             env={**env, "JITAD_CACHE_DIR": str(tmp_path / cache)},
                             timeout=300)
        assert run.returncode == 0, run.stderr
        counts.append(run.stdout.split())
    assert counts == [["1", "0"], ["0", "1"]]


def test_a_cold_cache_takes_the_reversed_list_for_short_traces(tiered, monkeypatch,
                                                               tmp_path):
    """Before the reverse tape's kernel is compiled in the cache directory (or in this
    process), a trace shorter than REVERSE_TAPE_COMPILES_FROM_ENTRIES is answered by the
    tape of its reverse-mode list: no 2.5 s compile where reverse mode costs less."""
    monkeypatch.setenv("JITAD_CACHE_DIR", str(tmp_path / "cold"))
    monkeypatch.setattr(api, "REVERSE_TAPE_COMPILES_FROM_ENTRIES", 100_000)
    assert not compiler.reverse_tape_compiled()
    x = np.linspace(0.1, 0.9, 12)
    f = jitad.jit_grad(masked_twice, tiers=True)
    value, grad = f.value_and_grad(x)
    assert type(next(k for _, k in f._records if k is not None)) is tape.TapeKernel
    np.testing.assert_allclose(grad, numeric_grad(masked_twice, [x])[0], rtol=1e-6)
    monkeypatch.setattr(api, "REVERSE_TAPE_COMPILES_FROM_ENTRIES", 10)
    g = jitad.jit_grad(masked_twice, tiers=True)
    g.value_and_grad(np.linspace(0.1, 0.9, 13))     # (f's job may have stored f's build)
    assert type(next(k for _, k in g._records if k is not None)) is tape.ReverseTapeKernel


@settings(max_examples=40, derandomize=True, deadline=None, database=None)
@given(steps, st.floats(-2.0, 2.0))
def test_random_programs_hvp_reverse_over_forward_as_forward_over_reverse(steps, s):
    """Random programs (values read many times, guards, selects, ties): the reverse tape of
    the tangent list gives the products of the forward-over-reverse list (its source run
    as Python), up to rounding, with the same NaNs (masked zeros stay zero either way)."""
    x, v = np.array([0.3, -1.2, 0.8, 1.7]), np.array([0.5, -0.25, 1.0, 0.75])
    forward = simplify(jitad.jit_grad(program(steps)).wengert(x, s))
    tangent = simplify(tangent_list(forward, [0, 1]))
    assume(tape.reverse_encodable(tangent))
    products = compiler.reverse_tape_kernel(tangent, (0, 1), tape.HvpTapeKernel)(x, s, v, -0.5)
    with np.errstate(all="ignore"):         # (the source run as Python: NumPy's warnings)
        wanted = run_list(simplify(hvp_list(forward, [0, 1])), "hvp",
                          [x, np.float64(s), v, np.float64(-0.5)])     # (IEEE, as compiled)
    for got, want in zip(products, wanted, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12, equal_nan=True)
