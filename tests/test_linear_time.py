"""No analysis stage grows faster than n log n in the trace length (the long-traces issue).

Nothing here is timed. The work of a stage is counted deterministically: the function calls
it makes (cProfile's call count, which includes generator steps and builtin calls) plus the
re-roller's own step counter `reroll.WORK` (its tight comparison loops make no calls). Each
stage runs on a trace and on one 4 times as long, of three kinds: periodic (an unrolled
loop), nearly periodic with shifting offsets (the long-graph of the issue: each operation
reads nodes a fixed distance back and an input whose index shifts), and random; the work
ratio must stay below the ratio of n log n, with a little slack.
"""
from __future__ import annotations

import cProfile
import math
import pstats

import numpy as np
import pytest

from jitad import codegen, reroll
from jitad.tracing import trace
from jitad.transforms import simplify, value_and_grad

SCALE = 4
SIZE = 480          # operations of the shorter trace (shorter ones are not yet periodic)
SLACK = 1.25
N_INPUTS = 24


def periodic(n_ops):
    """An unrolled loop: the Rosenbrock function of len(x) = n_ops / 6."""
    def loop(x):
        total = 0.0
        for i in range(len(x) - 1):
            total = total + 100.0 * (x[i + 1] - x[i] ** 2) ** 2 + (1.0 - x[i]) ** 2
        return total
    return loop, np.linspace(-1.0, 1.0, max(n_ops // 6, 4))


def nearly_periodic(n_ops):
    """The issue's long graph, smaller: softplus, a mean of four nodes, a product with an
    input whose index shifts, a stable 4-way softmax; each reads nodes 1, 3, 7, 20 back."""
    def graph(x):
        nodes = [x[i] for i in range(N_INPUTS)]
        for t in range(n_ops // 6):
            a, b, c, d = nodes[-1], nodes[-3], nodes[-7], nodes[-20]
            if t % 4 == 0:
                v = math.log1p(math.exp(a))
            elif t % 4 == 1:
                v = (a + b + c + d) * 0.25
            elif t % 4 == 2:
                v = a * x[(t // 4) % N_INPUTS]
            else:
                top = np.maximum(np.maximum(a, b), np.maximum(c, d))
                ea, eb, ec, ed = (math.exp(u - top) for u in (a, b, c, d))
                v = ea / (ea + eb + ec + ed)
            nodes.append(v)
        return sum(nodes[N_INPUTS:])
    return graph, np.linspace(-1.0, 1.0, N_INPUTS)


def random_program(n_ops):
    """Random operations on the previous value and a random earlier one (no repeated
    structure; every value reaches the output)."""
    rng = np.random.default_rng(n_ops)
    ops = [(int(rng.integers(4)), int(rng.integers(t + N_INPUTS))) for t in range(n_ops // 3)]

    def program(x):
        values = [x[i] for i in range(N_INPUTS)]
        for kind, i in ops:
            a, b = values[-1], values[i]
            values.append((a + b, a * b * 0.5, math.sin(a) - b, math.tanh(a - b))[kind])
        return values[-1]
    return program, np.linspace(-1.0, 1.0, N_INPUTS)


def many_loops(n_ops):
    """Short loops one after another, each with its own constant: runs in proportion to n."""
    def loops(x):
        total = 0.0
        for k in range(n_ops // 40):
            s = x[k % N_INPUTS]
            for _ in range(10):
                s = math.sin(s * 0.5 + 0.001 * (k + 1))
            total = total + s
        return total
    return loops, np.linspace(-1.0, 1.0, N_INPUTS)


# (trace, operations of the shorter list): the nearly periodic graph reaches its steady
# state (runs found, witnesses reused) only from about 500 operations
KINDS = {"periodic": (periodic, 240), "nearly periodic": (nearly_periodic, 480),
         "random": (random_program, 240), "many loops": (many_loops, 240)}


def counted(stage):
    """(result, work) of `stage()`: the calls it makes plus the re-roller's steps."""
    reroll.WORK.clear()
    profile = cProfile.Profile()
    result = profile.runcall(stage)
    return result, pstats.Stats(profile).total_calls + sum(reroll.WORK.values())


def stage_work(kind, n_ops) -> tuple:
    """(length of the differentiated list, {stage: work}) for a trace of `kind`."""
    fun, x = KINDS[kind][0](n_ops)
    work = {}
    traced, work["trace"] = counted(lambda: trace(fun, [x], [True], ["x"]))
    forward, work["simplify"] = counted(lambda: simplify(traced.wengert))
    adjoint, work["reverse"] = counted(lambda: simplify(value_and_grad(forward, [0])))
    runs, work["re-roll"] = counted(lambda: codegen.printable_runs(adjoint))
    _, work["print"] = counted(lambda: codegen.generate(adjoint, "f", "f", "loops", runs))
    return adjoint, work


def growth_bound(n, m) -> float:
    """How much n log n grows from n to m, with slack."""
    return m * math.log(m) / (n * math.log(n)) * SLACK


@pytest.fixture(scope="module", params=sorted(KINDS))
def growth(request):
    """Per stage: (work ratio, bound) from the shorter list to one SCALE times as long."""
    size = KINDS[request.param][1]
    small_list, small = stage_work(request.param, size)
    large_list, large = stage_work(request.param, size * SCALE)
    LISTS[request.param] = small_list, large_list
    bound = growth_bound(len(small_list.entries), len(large_list.entries))
    return {stage: (large[stage] / small[stage], bound) for stage in small}


LISTS: dict = {}        # kind -> (shorter, longer) differentiated list, kept for the last test


@pytest.mark.parametrize("stage", ["trace", "simplify", "reverse", "re-roll", "print"])
def test_stage_work_grows_no_faster_than_n_log_n(growth, stage):
    ratio, bound = growth[stage]
    assert ratio <= bound, f"{stage}: work grew {ratio:.1f}x for {SCALE}x the trace " \
                           f"(n log n allows {bound:.1f}x)"


def test_the_guard_catches_a_quadratic_search(monkeypatch):
    """The re-roller's search without its memo (rescanning the agreeing stretch from every
    start position, as it once did) fails the same check on the nearly periodic lists."""
    def rescanning(self, period, index, limit):
        tokens, y = self.tokens, index
        while y < len(tokens) and tokens[y] == tokens[y - period]:
            y += 1
        reroll.WORK["compared"] += y - index + 1
        return min(y, limit)
    monkeypatch.setattr(reroll._Search, "_repeat_until", rescanning)
    small, large = LISTS.get("nearly periodic") or (
        stage_work("nearly periodic", n)[0] for n in (480, 480 * SCALE))
    work = [counted(lambda: reroll.find_runs(w.entries))[1] for w in (small, large)]
    assert work[1] / work[0] > growth_bound(len(small.entries), len(large.entries))


def test_shape_choice_stops_searching_once_too_much_stays_straight():
    """On a list without repeats the automatic choice (LLVM) is made after about
    STRAIGHT_LINES_LIMIT positions: its work does not grow with the list at all."""
    work = []
    for n_ops in (960, 960 * SCALE):
        fun, x = random_program(n_ops)
        adjoint = simplify(value_and_grad(simplify(trace(fun, [x], [True], ["x"]).wengert), [0]))
        assert reroll.find_runs(adjoint.entries, max_straight=codegen.STRAIGHT_LINES_LIMIT) is None
        reroll.WORK.clear()
        assert codegen.choose_shape(adjoint)[0] == "llvm"
        work.append(sum(reroll.WORK.values()))
    assert work[1] <= 1.5 * work[0]
