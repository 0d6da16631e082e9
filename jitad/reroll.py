"""Re-rolling: find the repeated segments of a long Wengert list, to print them as loops.

Step: part of codegen (list -> loop plan). A Python loop with static bounds unrolls
into a trace that repeats the same entries with shifted indices; printed straight,
Numba compiles it at a few milliseconds per line. A `Run` is K >= 4 consecutive
blocks of P entries with the same primitives and literals, whose integer
parameters (indices) are affine in the block number `b`, and whose operands are:

* local    — defined earlier in the same block (same offset in every block),
* carried  — defined in the previous block (block 0 reads an outside initial value),
* outside  — the same value for every block (defined before the run),
* tape     — a value of an earlier run at an iteration affine in `b` (the reverse
             sweep reading forward values).

Array values in a run must form in-place update chains (`x_bar[k+1] += …`).

The search takes time linear in the list's length on any list — periodic, nearly periodic
with shifting offsets, random (see `_Search`). `WORK` counts its steps, by kind: candidate
periods tried, positions compared, entries checked; tests/test_linear_time.py reads it to
check the growth without timing anything (reset it before measuring; under threads the
counts are approximate).
"""
from __future__ import annotations

import bisect
import collections
import itertools
from dataclasses import dataclass, field

from .wengert import Literal, Var

MIN_ITERATIONS = 4
MIN_RUN_ENTRIES = 24
CANDIDATE_PERIODS = 8
MAX_PERIOD = 4000        # longer loop bodies stay straight (keeps the search linear)
CHAIN_PRIMITIVES = ("index_add", "scatter_add", "index_update", "scatter")
BEFORE = ("outside", "tape")    # descriptors of values defined before a run
WORK: collections.Counter = collections.Counter()


@dataclass
class Run:
    """Entries `start … start + period*iterations - 1` as `iterations` blocks of `period`."""

    start: int
    period: int
    iterations: int
    operands: list = field(default_factory=list)   # per offset: per operand, a descriptor
    params: list = field(default_factory=list)     # per offset: (params of block 0,
    #                                                 [(int leaf in block 0, stride)…])
    inits: dict = field(default_factory=dict)      # carried offset -> operand read by block 0

    @property
    def stop(self) -> int:
        return self.start + self.period * self.iterations

    def block_of(self, index: int) -> tuple:
        return divmod(index - self.start, self.period)


def int_leaves(params: dict) -> list:
    """The integer leaves of an entry's parameter values (bools excluded), in order."""
    out: list = []
    for value in params.values():
        _collect_int_leaves(value, out)
    return out


def _collect_int_leaves(value, out):
    """The integer leaves of a parameter value (bools excluded), in order."""
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        out.append(value)
    elif isinstance(value, tuple):
        for v in value:
            _collect_int_leaves(v, out)


def replace_int_leaves(value, leaves):
    """`value` with its integer leaves taken, in order, from the iterator `leaves`."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return next(leaves)
    if isinstance(value, tuple):
        return tuple(replace_int_leaves(v, leaves) for v in value)
    return value


def _token(entry) -> tuple:
    """What must agree between blocks, with integers in parameters left open."""
    params = tuple(sorted((k, replace_int_leaves(v, iter(lambda: "#", None)))
                          for k, v in entry.params.items()))
    operands = tuple(("L", repr(a.value)) if isinstance(a, Literal) else "V" for a in entry.ins)
    return entry.prim.name, params, operands, entry.out.dtype, entry.out.shape


def find_runs(entries: list, max_straight: int | None = None) -> list | None:
    """Maximal runs of repeated blocks, left to right, non-overlapping; None as soon as more
    than `max_straight` entries (if given) are left outside runs."""
    return _Search(entries).runs(max_straight)


class _Search:
    """The left-to-right search of `find_runs`, with what keeps it linear: per candidate
    period, a memo of how far the tokens of consecutive blocks agree (each position is
    compared once per period, however often the search restarts near it); verification
    offset by offset, failing as soon as an offset fails; and per period the witness of the
    last failed verification, rechecked in O(1) at the next start before verifying again."""

    def __init__(self, entries):
        self.entries = entries
        ids: dict = {}
        self.tokens = [ids.setdefault(_token(e), len(ids)) for e in entries]
        self.defined = {e.out.name: i for i, e in enumerate(entries)}
        self.leaves = [int_leaves(e.params) for e in entries]
        # how many entries before each position are arrays outside update chains (a run
        # holding one fails `_arrays_chain`: counted here, it is skipped in O(1))
        self.unchained = list(itertools.accumulate(
            (e.out.ndim > 0 and e.prim.name not in CHAIN_PRIMITIVES for e in entries), initial=0))
        self.found: list = []
        self.starts: list = []          # of `found`, for bisection
        self.agree: dict = {}           # period -> [lo, hi]: tokens repeat on [lo, hi)
        self.witness: dict = {}         # period -> index of the entry that broke a verification
        self.dead: dict = {}            # period -> last start known to fail (see `_failed`)

    def runs(self, max_straight) -> list | None:
        n, straight = len(self.entries), 0
        positions: dict = {}
        for i, t in enumerate(self.tokens):
            positions.setdefault(t, []).append(i)
        i = 0
        while i < n:
            best = None
            where = positions[self.tokens[i]]
            first = bisect.bisect_right(where, i)
            for j in where[first:first + CANDIDATE_PERIODS]:
                period = j - i
                if period > MAX_PERIOD or period * MIN_ITERATIONS > n - i:
                    break
                WORK["candidates"] += 1
                need = max(MIN_ITERATIONS, -(-MIN_RUN_ENTRIES // period))
                if self.unchained[j] > self.unchained[i]:
                    continue
                if self._repeat_until(period, i + period, i + need * period) < i + need * period:
                    continue
                best = self._verified(Run(i, period, (n - i) // period), need)
                if best is not None:        # the shortest period that repeats: take it
                    break
            if best is not None:
                self.found.append(best)
                self.starts.append(best.start)
                i = best.stop
            else:
                i += 1
                straight += 1
                if max_straight is not None and straight > max_straight:
                    return None
        return self.found

    def _repeat_until(self, period, index, limit) -> int:
        """The first position from `index` on whose token differs from the one `period`
        before, or `limit` if none before it. Memoized: a search restarting inside a
        stretch already compared continues from its end."""
        memo = self.agree.get(period)
        if memo is None or not memo[0] <= index <= memo[1]:
            memo = self.agree[period] = [index, index]
        tokens, y = self.tokens, memo[1]
        limit, resumed = min(limit, len(tokens)), y
        while y < limit and tokens[y] == tokens[y - period]:
            y += 1
        WORK["compared"] += y - resumed + 1
        memo[1] = y
        return min(y, limit)

    def _verified(self, run, need):
        """`run` cut to the longest prefix of blocks that truly repeat (None if shorter than
        `need`). The first `need` blocks are checked offset by offset, stopping at the first
        offset that fails (whose entry becomes the period's witness); later blocks one by one
        until one fails."""
        period = run.period
        if self.dead.get(period, -1) >= run.start:
            return None
        witness = self.witness.get(period)
        if witness is not None and run.start <= witness < run.stop:
            block, j = run.block_of(witness)
            column = _Column(self, run, j)
            bad = column.first_mismatch(sorted({0, 1, block}))
            if bad is not None:
                if bad < need:
                    self._failed(column, bad)
                    return None
                run.iterations = bad
        columns = []
        for j in range(period):
            column = _Column(self, run, j)
            bad = column.first_mismatch(range(need))
            if bad is not None:
                self._failed(column, bad)
                return None
            columns.append(column)
        run.operands = [column.template for column in columns]
        if not _arrays_chain(self.entries, run):
            return None
        good = next((block for block in range(need, run.iterations)
                     if not all(column.matches(block) for column in columns)), run.iterations)
        run.iterations = good
        for j, column in enumerate(columns):
            e0 = self.entries[run.start + j]
            run.params.append((e0.params, list(zip(column.leaves0, column.strides))))
            for p, d in enumerate(column.template):
                if d[0] == "carried":
                    run.inits[(j, p)] = e0.ins[p]
                elif d[0] == "tape":
                    first, second = column.tape[p][0], column.tape[p][1]
                    run.operands[j][p] = ("tape", d[1], d[2], first, second - first)
        return run

    def _failed(self, column, block) -> None:
        """Keep the entry that failed as the period's witness. Where block 0 read another
        value from before the run than block 1 (outside, or another tape), every start up to
        that block-0 entry fails too (both values stay before the run, with the same
        descriptors): the period is skipped until then."""
        run = column.run
        self.witness[run.period] = run.start + max(block, 1) * run.period + column.j
        if column.reads_other_before:
            self.dead[run.period] = run.start + column.j

    def describe(self, operand, run, block):
        """The descriptor of an operand read by entry (block, offset) of `run`."""
        if isinstance(operand, Literal):
            return ("literal", repr(operand.value))
        site = self.defined.get(operand.name)
        base = run.start + block * run.period
        if site is None or site < run.start:
            if site is not None:
                k = bisect.bisect_right(self.starts, site) - 1
                if k >= 0 and site < self.found[k].stop:
                    earlier = self.found[k]
                    it, offset = earlier.block_of(site)
                    return ("tape", earlier.start, offset, it)
            return ("outside", operand.name)
        if base <= site < base + run.period:
            return ("local", site - base)
        if block >= 1 and base - run.period <= site < base:
            return ("carried", site - (base - run.period))
        return None


class _Column:
    """Offset `j` of a candidate run: the operand descriptors of block 1 (the template),
    the integer parameters of block 0 and their strides, and the tape iterations read."""

    def __init__(self, search, run, j):
        self.search, self.run, self.j = search, run, j
        start1 = self.start1 = run.start + run.period + j
        self.template = [search.describe(a, run, 1) for a in search.entries[start1].ins]
        self.leaves0 = search.leaves[run.start + j]
        self.strides = [b - a for a, b in zip(self.leaves0, search.leaves[start1])]
        self.tape: dict = {}            # operand position -> iteration read, per block
        self.reads_other_before = False     # block 0 failed reading another value from
        #                                     before the run than block 1 (see `_failed`)

    def first_mismatch(self, blocks):
        """The first of `blocks` (increasing; blocks 0 and 1 first) whose entry at this
        offset differs from the template, or None."""
        for block in blocks:
            if not self.matches(block):
                return block
        return None

    def matches(self, block) -> bool:
        """Does this offset's entry in `block` repeat the template?"""
        search, run = self.search, self.run
        index = run.start + block * run.period + self.j
        WORK["checked"] += 1
        if search.tokens[index] != search.tokens[self.start1]:
            return False
        leaves = search.leaves[index]
        if leaves and any(leaf != leaf0 + stride * block for leaf, leaf0, stride in
                          zip(leaves, self.leaves0, self.strides)):
            return False
        for p, operand in enumerate(search.entries[index].ins):
            want = self.template[p]
            got = search.describe(operand, run, block)
            if want is None or got is None:
                return False
            if want[0] == "carried" and block == 0:
                if got[0] not in ("outside", "literal"):
                    return False
            elif want[0] == "tape":
                if got[0] != "tape" or got[1:3] != want[1:3]:
                    self.reads_other_before = block == 0 and got[0] in BEFORE
                    return False
                iterations = self.tape.setdefault(p, [])
                if block >= 2 and got[3] != iterations[0] + (iterations[1] - iterations[0]) * block:
                    return False
                iterations.append(got[3])
            elif got != want:
                self.reads_other_before = block == 0 and got[0] in BEFORE and want[0] in BEFORE
                return False
        return True


def _arrays_chain(entries, run) -> bool:
    """Array values in the run form in-place update chains only (no per-block copies):
    each is an index_add/scatter_add/index_update/scatter whose operand 0 is the previous
    link, read by it once, and otherwise only by entries with scalar results (element
    reads) that come before that link."""
    readers: dict = {}
    for j, descriptors in enumerate(run.operands):
        for p, d in enumerate(descriptors):
            if d[0] in ("local", "carried"):    # position in the order of execution
                position = j if d[0] == "local" else j + run.period
                readers.setdefault(d[1], []).append((position, p, entries[run.start + j]))
    for j in range(run.period):
        e = entries[run.start + j]
        if e.out.ndim == 0:
            continue
        if e.prim.name not in CHAIN_PRIMITIVES or run.operands[j][0][0] not in ("local", "carried"):
            return False
        links = [(position, p) for position, p, r in readers.get(j, []) if r.out.ndim]
        reads = [position for position, p, r in readers.get(j, []) if not r.out.ndim]
        if len(links) > 1 or any(p != 0 for _, p in links):
            return False
        if reads and links and max(reads) > links[0][0]:
            return False
    return True


def escaping(entries, outputs, runs) -> dict:
    """Per run (by id): the offsets read outside the run at a block other than the last,
    which need a tape (after the loop, the loop variables hold the last block's values)."""
    needs_tape: dict = {id(r): set() for r in runs}
    if not runs:
        return needs_tape
    owner = {}
    for r in runs:
        for i in range(r.start, r.stop):
            owner[entries[i].out.name] = (r, i)
    ordered = sorted(runs, key=lambda r: r.start)
    starts = [r.start for r in ordered]
    reads = ((index, a) for index, e in enumerate(entries) for a in e.ins)
    for index, a in itertools.chain(reads, ((len(entries), a) for a in outputs)):
        if isinstance(a, Var) and a.name in owner:
            r, site = owner[a.name]
            if r.start <= index < r.stop:
                continue
            block, offset = r.block_of(site)
            if block != r.iterations - 1 or _inside_a_run(index, ordered, starts):
                needs_tape[id(r)].add(offset)
    return needs_tape


def _inside_a_run(index, ordered, starts) -> bool:
    """Is entry `index` inside one of the runs `ordered` by their `starts`?"""
    k = bisect.bisect_right(starts, index) - 1
    return k >= 0 and index < ordered[k].stop
