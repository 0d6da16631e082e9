"""The re-roller's fast paths give what their definitions give, with counted work.

`_Column.repeats_until` extends a verified run block by block from what blocks 0 and 1
imply (the same name, or a defining site affine in the block) instead of describing every
operand again (`_Column.matches`, the definition); `escaping` takes the reads inside runs
from their tape operands and scans only the straight entries. Both are compared with their
definitions (every read of every entry) on lists with local, carried, outside and tape
operands (a recurrent network, the ADBench LSTM, the long-graph pattern, a Rosenbrock
loop). Nothing is timed or compiled.
"""
import sys
from pathlib import Path

import numpy as np
import pytest

import jitad
from jitad import reroll
from jitad.transforms import simplify, value_and_grad
from jitad.wengert import Var

from conftest import traced
from test_linear_time import nearly_periodic
from test_reroll_arrays import recurrent, recurrent_args, rosenbrock_loop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
import lstm  # noqa: E402


def _lists():
    rng = np.random.default_rng(0)
    cases = {
        "recurrent": (recurrent, (0, 1, 2), recurrent_args(12)),
        "lstm": (lstm.lstm_objective, (0, 1), lstm.make_data(2, 3, 9, rng)),
        "rosenbrock": (rosenbrock_loop, 0, [np.linspace(-1.0, 1.0, 40)]),
    }
    out = {}
    for name, (fun, argnums, args) in cases.items():
        variant, _ = traced(jitad.jit_grad(fun, argnums=argnums), args)
        forward = simplify(variant.trace.wengert)
        out[name] = simplify(value_and_grad(forward, list(variant.wrt)))
    graph, x = nearly_periodic(1200)
    variant, _ = traced(jitad.jit_grad(graph), [x])
    out["long graph"] = simplify(value_and_grad(simplify(variant.trace.wengert), [0]))
    return out


LISTS = _lists()


def by_definition(self, first, stop):
    """`repeats_until` as its definition: `matches` block after block."""
    return next((block for block in range(first, stop) if not self.matches(block)), stop)


def plain(runs):
    return [(r.start, r.period, r.iterations, r.operands, r.params, r.inits, r.chains)
            for r in runs]


def escaping_by_definition(entries, outputs, runs):
    """A read of a run's value from outside the run needs a tape unless it reads the last
    block from straight code."""
    needs = {id(r): set() for r in runs}
    owner = {entries[i].out.name: (r, i) for r in runs for i in range(r.start, r.stop)}
    reads = [(index, a) for index, e in enumerate(entries) for a in e.ins] + \
        [(len(entries), a) for a in outputs]
    for index, a in reads:
        if isinstance(a, Var) and a.name in owner:
            r, site = owner[a.name]
            if r.start <= index < r.stop:
                continue
            block, offset = r.block_of(site)
            inside = any(q.start <= index < q.stop for q in runs)
            if block != r.iterations - 1 or inside:
                needs[id(r)].add(offset)
    return needs


@pytest.mark.parametrize("name", sorted(LISTS))
def test_runs_and_escaping_match_their_definitions(name, monkeypatch):
    entries, outputs = LISTS[name].entries, LISTS[name].outputs
    fast = reroll.find_runs(entries)
    assert fast
    assert reroll.escaping(entries, outputs, fast) == \
        escaping_by_definition(entries, outputs, fast)
    monkeypatch.setattr(reroll._Column, "repeats_until", by_definition)
    assert plain(reroll.find_runs(entries)) == plain(fast)


def test_a_wrong_affine_site_fails(monkeypatch):
    """A fast path that accepts one block too many (a broken bound) differs from the
    definition: the comparison above catches it."""
    entries = LISTS["recurrent"].entries
    fast = plain(reroll.find_runs(entries))
    original = reroll._Column.repeats_until
    monkeypatch.setattr(reroll._Column, "repeats_until",
                        lambda self, first, stop: min(stop, original(self, first, stop) + 1))
    assert plain(reroll.find_runs(entries)) != fast


@pytest.mark.parametrize("name", sorted(LISTS))
def test_extending_runs_checks_each_entry_about_once(name):
    """Entries checked while re-rolling: at most a few per entry (the first blocks of a
    candidate run are checked again when a longer run's start fails), not one per entry
    and candidate."""
    entries = LISTS[name].entries
    reroll.WORK.clear()
    reroll.find_runs(entries)
    assert reroll.WORK["checked"] <= 3 * len(entries) + 100, dict(reroll.WORK)
