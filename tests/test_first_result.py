"""The first result of a long list: the tape runs the reversed list before its last
simplify, and the background job simplifies it before compiling; a list the tape cannot
run unsimplified falls back to the simplified one. Which list each tier got is counted
(entries of the lists handed to `compile.tape_kernel`), never timed.
"""
from __future__ import annotations

import numpy as np

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


def expected_lists(f, x) -> tuple:
    """(the reversed list, simplified once before and not after; the same simplified after)
    made here from the traced list, independently of the API's tiers."""
    raw = value_and_grad(simplify(f.wengert(x)), [0])
    return raw, simplify(raw)


def test_the_tape_answers_from_the_unsimplified_list_and_agrees_bitwise(tiered, monkeypatch):
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


def test_a_list_the_tape_cannot_run_unsimplified_falls_back(tiered, monkeypatch):
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
