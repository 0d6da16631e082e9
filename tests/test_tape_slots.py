"""The tape's slots (jitad/tape.py, `runtime.number_slots`): a value's slot is reused once
the value is read for the last time.

Checked two ways on random programs (Hypothesis) whose operations read nodes at random
distances back, so values live for every length of time: run with names for values, every
row reads the slots that hold its operands; and run by the interpreter, the results are
bitwise those of the same rows with a slot per value (the numbering before reuse).
"""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jitad
from jitad import compile as compiler, disk, tape
from jitad.runtime import TAPE_OPCODES
from jitad.wengert import Var

from conftest import adjoint_list

OPERATIONS = {                       # name -> (text over nodes a and b, reads b)
    "add": ("a + b", True), "sub": ("a - b", True), "mul": ("a * b", True),
    "div": ("a / (1.5 + b * b)", True), "sin": ("math.sin(a)", False),
    "tanh": ("math.tanh(a * b)", True), "exp": ("math.exp(-a * a)", False),
    "maximum": ("np.maximum(a, b)", True), "minimum": ("np.minimum(a, b) * s", True),
    "where": ("jitad.where(a > b, a * s, b)", True), "abs": ("abs(a) - b", True),
    "square": ("a ** 2", False), "cube": ("a ** 3 * 0.5", False),
    "hypot": ("np.hypot(a, b)", True), "arctan2": ("np.arctan2(a, b)", True),
    "logaddexp": ("np.logaddexp(a, b)", True), "guarded": ("(a if a > 0.0 else -b)", True),
    "masked": ("jitad.where(a > b, np.sqrt(a - b), s)", True),   # (NaN where not taken)
}


def assert_rows_read_their_operands(kernel, wengert):
    """Run `kernel`'s rows with names for values: each row is the opcode of its entry and
    reads the slots that hold its operands then (literals in the constants, first; scalar
    inputs where the call writes them), and the results are read from where they are."""
    held = [repr(float(c)) for c in kernel.constants] + \
        [None] * (kernel.n_slots - len(kernel.constants))      # slot -> what it holds now
    for position, s in kernel.scalar_slots:
        held[s] = wengert.inputs[position].name

    def holds(slot, a) -> bool:
        return held[slot] == (a.name if isinstance(a, Var) else repr(float(a.value)))
    rows = [e for e in wengert.entries if e.prim.name != "full_like"]
    assert len(rows) == len(kernel.code)
    for e, (op, out, a, b, c) in zip(rows, kernel.code.tolist()):
        name = e.prim.name
        assert TAPE_OPCODES[op] == {"getitem": "load", "index_add": "store_add"}.get(name, name)
        if name == "index_add":
            assert holds(a, e.ins[1]), str(e)
        elif name == "guard":
            assert holds(a, e.ins[0]) and held[b] == repr(1.0 if e.params["expected"] else 0.0)
        elif name != "getitem":
            assert all(holds(s, v) for s, v in zip((a, b, c), e.ins)), str(e)
            assert name != "integer_pow" or c == e.params["n"]
        if name not in ("index_add", "guard"):
            held[out] = e.out.name
    assert all(holds(s, v) for (kind, s), v in zip(kernel.outputs, wengert.outputs)
               if kind == "slot")


def numbered():
    """`runtime.number_slots` compiled (as for lists of COMPILED_NUMBERING_FROM_ENTRIES)."""
    return compiler._runtime_kernel("number_slots", disk.cache_dir())


def program(steps):
    """`f(x, s)` over nodes x[0..3] and s; step k appends an operation of the nodes
    `da` and `db` back (clipped to the first node); returns the sum of a few nodes."""
    lines = ["def f(x, s):", "    v = [x[0], x[1], x[2], x[3], s]"]
    for name, da, db in steps:
        text, _ = OPERATIONS[name]
        lines.append(f"    a, b = v[max(0, len(v) - {da})], v[max(0, len(v) - {db})]")
        lines.append(f"    v.append({text})")
    lines.append("    return v[-1] + 0.5 * v[len(v) // 2] - v[len(v) // 3]")
    namespace = {"math": math, "np": np, "jitad": jitad}
    exec(compile("\n".join(lines), "<tape program>", "exec"), namespace)
    return namespace["f"]


steps = st.lists(st.tuples(st.sampled_from(sorted(OPERATIONS)), st.integers(1, 40),
                           st.integers(1, 40)), min_size=1, max_size=60)


@settings(max_examples=40, derandomize=True, deadline=None, database=None)
@given(steps, st.floats(-2.0, 2.0))
def test_reused_slots_hold_what_each_row_reads(steps, s):
    f = jitad.jit_grad(program(steps), argnums=(0, 1))
    x = np.array([0.3, -1.2, 0.8, 1.7])
    wengert = adjoint_list(f, [x, s])
    reused = compiler.tape_kernel(wengert)      # (numbered in Python: a short list)
    assert_rows_read_their_operands(reused, wengert)
    compiled = tape.TapeKernel(wengert, None, numbered())
    assert np.array_equal(compiled.code, reused.code) and compiled.n_slots == reused.n_slots
    own = tape.TapeKernel(wengert, reused.interpreter, tape.one_slot_per_value)
    assert reused.n_slots <= own.n_slots
    (value, (grad_x, grad_s)), (want, (want_x, want_s)) = reused(x, s), own(x, s)
    assert np.array_equal([value, grad_s], [want, want_s], equal_nan=True)
    assert np.array_equal(grad_x, want_x, equal_nan=True)


def test_the_slot_check_catches_a_slot_shared_by_live_values():
    """A numbering that writes a product over `s` (read again by the adjoint sweep) fails
    the check: the check can fail."""
    f = jitad.jit_grad(program([("mul", 1, 2)]), argnums=(0, 1))    # s * x[3]
    wengert = adjoint_list(f, [np.array([0.3, -1.2, 0.8, 1.7]), 0.5])
    def product_over_s(code, literal, first, kept, select):
        rows, count, slot_of = numbered()(code, literal, first, kept, select)
        product = list(rows[:, 0]).index(TAPE_OPCODES.index("mul"))
        rows[product, 1] = slot_of[first[0]]
        return rows, count, slot_of
    assert_rows_read_their_operands(tape.TapeKernel(wengert, None, numbered()), wengert)
    with pytest.raises(AssertionError):
        assert_rows_read_their_operands(tape.TapeKernel(wengert, None, product_over_s),
                                        wengert)
