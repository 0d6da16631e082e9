"""The first result of a long list the reverse tape cannot run (tests/test_reverse_tape.py
has those it can): the tape runs the reversed list before its last simplify, and the
background job simplifies it before compiling; a list the tape cannot run unsimplified
falls back to the simplified one. Which list each tier got is counted (entries of the
lists handed to `compile.tape_kernel`), never timed.
"""
from __future__ import annotations

import math
import sys

import numpy as np
import pytest

import jitad
from jitad import api
from jitad import compile as compiler
from jitad.primitives import REGISTRY
from jitad.transforms import simplify, value_and_grad
from jitad.wengert import Builder

from conftest import numeric_grad
from test_tiers import make_chain


def spy_tapes(monkeypatch) -> list:
    """The lists `compile.tape_kernel` is called with, in order."""
    lists = []
    real = compiler.tape_kernel

    def spy(wengert):
        lists.append(wengert)
        return real(wengert)

    monkeypatch.setattr(compiler, "tape_kernel", spy)
    return lists


@pytest.fixture
def without_reverse_tape(monkeypatch):
    monkeypatch.setattr(api, "reverse_tape_applies", lambda wengert: False)


def expected_lists(f, x) -> tuple:
    """(the reversed list, simplified once before and not after; the same simplified after)
    made here from the traced list, independently of the API's tiers."""
    raw = value_and_grad(simplify(f.wengert(x)), [0])
    return raw, simplify(raw)


def test_the_tape_answers_from_the_unsimplified_list_and_agrees_bitwise(tiered, monkeypatch,
                                                                        without_reverse_tape):
    chain = make_chain(0.75)
    x = np.random.default_rng(5).uniform(-1.0, 1.0, (3, 4))
    tapes = spy_tapes(monkeypatch)
    f = jitad.jit_grad(chain, tiers=True)
    first = f.value_and_grad(x)
    raw, simplified = expected_lists(f, x)
    assert len(raw.entries) > len(simplified.entries)      # the simplify is really skipped
    assert [len(w.entries) for w in tapes] == [len(raw.entries)]
    assert [e.out.name for e in tapes[0].entries] == [e.out.name for e in raw.entries]
    assert f.stats()[0]["tier"] == "tape" and f.stats()[0]["background"] == "compiling"
    tiered.set()
    assert f.wait(timeout=300)
    row = f.stats()[0]
    assert row["tier"] == "specialized" and row["shape"] in ("straight", "loops", "llvm")
    second = f.value_and_grad(x)
    # Simplify removes `x*1`, shares and drops entries: the same operations otherwise.
    assert first[0] == second[0] and np.array_equal(first[1], second[1])
    np.testing.assert_allclose(first[1], numeric_grad(chain, [x])[0], rtol=1e-6, atol=1e-8)


def test_a_list_the_tape_cannot_run_unsimplified_falls_back(tiered, monkeypatch,
                                                            without_reverse_tape):
    """An entry the tape cannot run (an array fill of ones) that simplify removes (dead):
    the tape then runs the simplified list, reversed once."""
    chain = make_chain(0.625)
    x = np.random.default_rng(6).uniform(-1.0, 1.0, (3, 4))
    tapes = spy_tapes(monkeypatch)
    reversals = []
    real = api.reversed_unsimplified

    def with_dead_fill(variant, wrt):
        raw = real(variant, wrt)
        reversals.append(raw)
        b = Builder(REGISTRY, used_names={e.out.name for e in raw.entries})
        b.full_like(raw.inputs[0], 1.0, name="dead_fill")
        raw.entries = raw.entries + b.entries
        return raw

    monkeypatch.setattr(api, "reversed_unsimplified", with_dead_fill)
    f = jitad.jit_grad(chain, tiers=True)
    first = f.value_and_grad(x)
    raw, simplified = expected_lists(f, x)
    assert len(reversals) == 1
    assert [len(w.entries) for w in tapes] == [len(simplified.entries)]
    assert "dead_fill" not in {e.out.name for e in tapes[0].entries}
    assert f.stats()[0]["tier"] == "tape"
    tiered.set()
    assert f.wait(timeout=300) and f.stats()[0]["tier"] == "specialized"
    second = f.value_and_grad(x)
    assert first[0] == second[0] and np.array_equal(first[1], second[1])
    np.testing.assert_allclose(first[1], numeric_grad(chain, [x])[0], rtol=1e-6, atol=1e-8)


def two_paths(x, y):
    s = math.log1p(math.exp(x))
    return s * y + x * y + y * 3.0


def test_reverse_mode_names_and_entries_as_derived_by_hand():
    """Reverse mode's exact output (entries, names, accumulations, source notes), derived
    by hand from its rules: add passes its cotangent on; a product with the cotangent 1.0
    is the other factor (no entry); a rule's results are named `d<value>`, `d<value>_2`…
    and its contribution is renamed `<operand>_bar` (first) or `<operand>_bar_<via>` then
    added into `<operand>_bar`, `<operand>_bar_2`…"""
    f = jitad.jit_grad(two_paths, argnums=(0, 1))
    forward = simplify(f.wengert(1.0, 2.0))
    assert [f"{e.out.name} = {e.prim.name} {' '.join(map(repr, e.ins))}"
            for e in forward.entries] == [
        "v1 = exp x", "v2 = log1p v1", "v3 = mul v2 y", "v4 = mul x y", "v5 = add v3 v4",
        "v6 = mul y 3.0", "v7 = add v5 v6"]
    result = value_and_grad(forward, [0, 1])
    here = {e.out.name: e.loc for e in forward.entries}
    got = [(f"{e.out.name} = {e.prim.name} {' '.join(map(repr, e.ins))}", e.accumulate,
            e.sweep, e.loc) for e in result.entries[len(forward.entries):]]
    assert got == [
        ("y_bar = add 3.0 x", True, "reverse", f"v4 = mul x y  ({here['v4']})"),
        ("y_bar_2 = add y_bar v2", True, "reverse", f"v3 = mul v2 y  ({here['v3']})"),
        ("dv2 = add v1 1.0", False, "reverse", f"v2 = log1p v1  ({here['v2']})"),
        ("v1_bar = div y dv2", False, "reverse", f"v2 = log1p v1  ({here['v2']})"),
        ("x_bar_v1 = mul v1_bar v1", False, "reverse", f"v1 = exp x  ({here['v1']})"),
        ("x_bar = add y x_bar_v1", True, "reverse", f"v1 = exp x  ({here['v1']})")]
    assert result.entries[:len(forward.entries)] == forward.entries
    assert list(map(repr, result.outputs)) == ["v7", "x_bar", "y_bar_2"]
    assert result.out_tree == 2


@pytest.fixture
def switching(monkeypatch):
    """No other background jobs (earlier tests may leave gated ones), the default 5 ms."""
    monkeypatch.setattr(api._Background, "running", set())
    monkeypatch.setattr(api, "_switching", [None, None])
    before = sys.getswitchinterval()
    sys.setswitchinterval(0.005)
    yield 0.005
    sys.setswitchinterval(before)


def test_the_switch_interval_is_lowered_while_a_background_compile_runs(tiered, switching):
    """A first-tier call waits for the GIL a whole switch interval while the compile runs
    Python: the interval is lowered while compiles run, and restored after the last."""
    x = np.random.default_rng(7).uniform(-1.0, 1.0, (3, 4))
    f, g = jitad.jit_grad(make_chain(0.875)), jitad.jit_grad(make_chain(0.9375))
    assert sys.getswitchinterval() == pytest.approx(switching)
    f(x)
    g(x)
    assert len(api._Background.running) == 2
    assert sys.getswitchinterval() == pytest.approx(api.BACKGROUND_SWITCH_INTERVAL_S)
    tiered.set()
    assert f.wait(timeout=300) and g.wait(timeout=300)
    assert not api._Background.running and sys.getswitchinterval() == pytest.approx(switching)


def test_a_switch_interval_changed_meanwhile_is_kept(tiered, switching):
    f = jitad.jit_grad(make_chain(0.8125))
    f(np.random.default_rng(8).uniform(-1.0, 1.0, (3, 4)))
    assert sys.getswitchinterval() == pytest.approx(api.BACKGROUND_SWITCH_INTERVAL_S)
    sys.setswitchinterval(0.002)                # the user's own choice
    tiered.set()
    assert f.wait(timeout=300) and sys.getswitchinterval() == pytest.approx(0.002)
