"""The work of a long loop's first result (tracing, analysis, tape encoding), counted.

Nothing here is timed: the tests count the garbage collector's passes during the stages
(`gc.callbacks`) and the entries reverse mode makes, and check the tape encoding against
an independent reading of the list.
"""
import gc
import threading

import numpy as np
import pytest

import jitad
from jitad import collector, tape
from jitad.runtime import TAPE_OPCODES
from jitad.transforms import reverse
from jitad.transforms.reverse import value_and_grad
from jitad.transforms.simplify import simplify
from jitad.wengert import Literal, Var

from conftest import adjoint_list, check_grads_python, traced
from test_reroll_arrays import rosenbrock_loop
from test_tape_slots import assert_rows_read_their_operands


def rosen_loop(x):
    """benchmarks/cases.py's rosen_loop."""
    s = 0.0
    for i in range(len(x) - 1):
        s += 100.0 * (x[i + 1] - x[i] ** 2) ** 2 + (1.0 - x[i]) ** 2
    return s


@pytest.fixture
def collections():
    """Collections started while a paused stage runs, and in all."""
    counts = {"during a stage": 0, "all": 0}

    def count(phase, info):
        if phase == "start":
            counts["all"] += 1
            counts["during a stage"] += collector._depth > 0
    gc.callbacks.append(count)
    yield counts
    gc.callbacks.remove(count)


def test_no_collection_during_tracing_and_analysis(collections):
    f = jitad.jit_grad(rosenbrock_loop)
    x = np.random.default_rng(0).uniform(-1.0, 1.0, 2000)
    wengert = adjoint_list(f, [x])          # traces, simplifies, differentiates
    tape.TapeKernel(wengert, None)
    assert len(wengert.entries) > 30_000
    assert collections["during a stage"] == 0
    assert gc.isenabled()


def test_the_users_choice_is_kept():
    gc.disable()
    try:
        collector.paused(lambda: None)()
        assert not gc.isenabled()
    finally:
        gc.enable()
    with pytest.raises(ZeroDivisionError):
        collector.paused(lambda: 1 / 0)()
    assert gc.isenabled()


def test_overlapping_stages_on_threads_resume_once_the_last_ends():
    inside, release = threading.Event(), threading.Event()

    def long_stage():
        inside.set()
        release.wait(10)
    thread = threading.Thread(target=collector.paused(long_stage))
    thread.start()
    inside.wait(10)
    collector.paused(lambda: None)()        # ends while the other stage runs
    assert not gc.isenabled()
    release.set()
    thread.join()
    assert gc.isenabled()


def test_tape_encoding_reads_the_list():
    """Each row is (opcode, out slot, operand slots or the power, element position), int32;
    run with names for values, every row reads the slots that hold its operands
    (`assert_rows_read_their_operands`), and slots are reused once a value is read for the
    last time."""
    f = jitad.jit_grad(rosenbrock_loop)
    x = np.random.default_rng(0).uniform(-1.0, 1.0, 30)
    wengert = adjoint_list(f, [x])
    kernel = tape.TapeKernel(wengert, None)
    assert kernel.code.dtype == np.int32
    assert_rows_read_their_operands(kernel, wengert)
    rows = [e for e in wengert.entries if e.prim.name != "full_like"]
    for e, row in zip(rows, kernel.code.tolist()):
        if e.prim.name in ("getitem", "index_add"):
            assert row[4] == e.params["index"][0] % 30, str(e)
    values = {e.out.name for e in rows if e.prim.name != "index_add"}
    assert kernel.n_slots - len(kernel.constants) < len(values) / 4


def test_tape_rows_stay_64_bit_where_a_number_does_not_fit_32():
    """(An element position past 2**31 in int32 rows would read the wrong element.)"""
    x = np.broadcast_to(np.ones(1), (2**31 + 10,))         # (a view: no memory)
    f = jitad.jit_grad(lambda x: x[2**31 + 5] * 2.0 + x[3])
    kernel = tape.TapeKernel(f.wengert(x, grad=True), None)
    assert kernel.code.dtype == np.int64
    assert sorted(row[4] for row in kernel.code.tolist()
                  if TAPE_OPCODES[row[0]] == "load") == [3, 2**31 + 5]


def test_reverse_mode_makes_nothing_simplify_removes():
    """No product with the cotangent 1.0 of a sum's terms, and no update of zeros that a
    redirected update replaces: the adjoint list of the benchmark's loop is already
    simplified."""
    f = jitad.jit_grad(rosen_loop)
    x = np.random.default_rng(0).uniform(-1.0, 1.0, 200)
    variant, _ = traced(f, [x])
    forward = simplify(variant.trace.wengert)
    adjoint = value_and_grad(forward, [0])
    assert len(simplify(adjoint).entries) == len(adjoint.entries)
    assert not any(e.prim.name == "mul" and Literal(1.0) in e.ins for e in adjoint.entries)
    assert len(adjoint.entries) < 2.2 * len(forward.entries)


def test_a_wrong_fold_in_reverse_mode_fails(monkeypatch):
    """Folding every product with a literal (not only with 1) drops factors: caught."""
    bind = reverse._AdjointBuilder.bind

    def wrong(self, prim, *operands, name=None, **params):
        if prim is reverse._MUL and type(operands[0]) is Literal and type(operands[1]) is Var:
            return operands[1]
        return bind(self, prim, *operands, name=name, **params)
    monkeypatch.setattr(reverse._AdjointBuilder, "bind", wrong)
    f = jitad.jit_grad(rosenbrock_loop)
    with pytest.raises(AssertionError):
        check_grads_python(f, [np.random.default_rng(0).uniform(-1.0, 1.0, 8)])
