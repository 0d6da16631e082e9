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

Array values in a run are either fresh per iteration (`h = np.tanh(W @ h_prev + b)`:
carried by reference, taped by copying a row of an (iterations, *shape) array) or links
of in-place update chains (`x_bar[k+1] += …`, `r[k] = …`), recorded in `Run.chains`.

The search takes time linear in the list's length on any list — periodic, nearly periodic
with shifting offsets, random (see `_Search`). `WORK` counts its steps, by kind: candidate
periods tried, positions compared, entries checked; tests/test_linear_time.py reads it to
check the growth without timing anything (reset it before measuring; under threads the
counts are approximate).
"""
from __future__ import annotations

import bisect
import collections
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
    chains: set = field(default_factory=set)       # offsets updated in place (chain links)

    @property
    def stop(self) -> int:
        return self.start + self.period * self.iterations

    def block_of(self, index: int) -> tuple:
        return divmod(index - self.start, self.period)


def int_leaves(params: dict) -> list:
    """The integer leaves of an entry's parameter values (bools excluded), in order."""
    out: list = []
    for value in params.values():
        if type(value) is tuple and all(type(v) is int for v in value):
            out += value            # (an index of ints: the common case)
        else:
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


def _open(value):
    """A parameter value with its integer leaves left open ("#")."""
    if type(value) is tuple and all(type(v) is int for v in value):
        return ("#",) * len(value)      # (an index of ints: the common case)
    return replace_int_leaves(value, iter(lambda: "#", None))


def _token(entry) -> tuple:
    """What must agree between blocks, with integers in parameters left open."""
    params = tuple(sorted((k, _open(v)) for k, v in entry.params.items())) \
        if entry.params else ()
    operands = tuple(["V" if type(a) is Var else ("L", repr(a.value)) for a in entry.ins])
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
        self.leaves = [int_leaves(e.params) if e.params else [] for e in entries]
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
        good = run.iterations
        for column in columns:      # (the first block some offset does not repeat)
            good = column.repeats_until(need, good)
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

    def repeats_until(self, first, stop) -> int:
        """The first block from `first` (>= 2, blocks before it matched) up to `stop` whose
        entry at this offset differs from the template, or `stop`: `matches`, with each
        operand's descriptor turned into what it implies once blocks 0 and 1 matched — the
        same name (outside), or a defining site affine in the block (local, carried, tape;
        a tape read only while its iteration stays inside the earlier run)."""
        search, run = self.search, self.run
        period, defined = run.period, search.defined
        checks = []         # (operand position, name, None) or (position, site at 0, step)
        for p, d in enumerate(self.template):
            if d[0] == "outside":
                checks.append((p, d[1], None))
            elif d[0] == "local":
                checks.append((p, run.start + d[1], period))
            elif d[0] == "carried":
                checks.append((p, run.start - period + d[1], period))
            elif d[0] == "tape":
                earlier = search.found[bisect.bisect_right(search.starts, d[1]) - 1]
                it0 = self.tape[p][0]
                step = self.tape[p][1] - it0
                checks.append((p, d[1] + d[2] + earlier.period * it0, earlier.period * step))
                if step:            # blocks whose iteration it0 + step*block is inside
                    last = (earlier.iterations - 1 - it0) // step if step > 0 else it0 // -step
                    stop = min(stop, last + 1)
        tokens, leaves, entries = search.tokens, search.leaves, search.entries
        token, leaves0, strides = tokens[self.start1], self.leaves0, self.strides
        index = run.start + first * period + self.j
        block = first
        while block < stop:
            if tokens[index] != token or leaves0 and leaves[index] != [
                    leaf0 + stride * block for leaf0, stride in zip(leaves0, strides)]:
                break
            ins = entries[index].ins
            for p, want, step in checks:
                name = ins[p].name
                if name != want if step is None else defined.get(name) != want + step * block:
                    break
            else:
                block += 1
                index += period
                continue
            break
        WORK["checked"] += block - first + 1
        return block

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
    """Find the in-place update chains of the run's array values (`run.chains`): each link
    updates its operand 0 (the previous link, or an array made in the same iteration that
    is not a view), which that link reads once and other entries read only for scalar
    results (element reads) before it. Links are index_add/scatter_add/index_update/
    scatter entries (False if one of them cannot be a link) and, where they qualify,
    same-shape accumulations (`acc = acc + g`: `acc += g`). Other array values are fresh
    per iteration. (A chain entry updating an outside array prints as a copy.)"""
    readers: dict = {}
    for j, descriptors in enumerate(run.operands):
        for p, d in enumerate(descriptors):
            if d[0] in ("local", "carried"):    # position in the order of execution
                position = j if d[0] == "local" else j + run.period
                readers.setdefault(d[1], []).append((position, p, entries[run.start + j]))
    run.chains = set()
    for j in range(run.period):
        e = entries[run.start + j]
        if not e.out.ndim or not isinstance(e.ins[0], Var) \
                or run.operands[j][0][0] not in ("local", "carried"):
            continue
        required = e.prim.name in CHAIN_PRIMITIVES
        if not required and (e.prim.inplace is None or e.ins[0].shape != e.out.shape
                             or e.ins[0].dtype != e.out.dtype):
            continue
        if _may_link(entries, run, j, readers):
            run.chains.add(j)
        elif required:
            return False
    return settle_chains(entries, run)


def settle_chains(entries, run) -> bool:
    """Keep the links whose buffer is one storage through the loop: a link reading the
    previous iteration must be the head of a chain that leads back to it within the
    iteration (the buffer is then the run's initial array), and a link updating an array
    made in the iteration is not read by the next one. False if an index update (a link
    that cannot be printed as a copy) is left out."""
    read_carried = {d[1] for ds in run.operands for d in ds if d[0] == "carried"}
    changed = True
    while changed:
        changed = False
        for j in sorted(run.chains):
            kind, source = run.operands[j][0][:2]
            if (kind == "carried" and not _leads_back(run, source, j)) or \
                    (j in read_carried and _fresh_buffer(run, j)):
                run.chains.discard(j)
                changed = True
    return all(j in run.chains for j in range(run.period)
               if entries[run.start + j].out.ndim
               and entries[run.start + j].prim.name in CHAIN_PRIMITIVES
               and run.operands[j][0][0] in ("local", "carried"))


def _fresh_buffer(run, j) -> bool:
    """Does link `j` update an array made in the same iteration (rebound by the next one,
    so the previous iteration's value is gone)?"""
    while j in run.chains and run.operands[j][0][0] == "local":
        j = run.operands[j][0][1]
    return j not in run.chains


def _leads_back(run, k, j) -> bool:
    """Does link `k` update, through links within the iteration, the buffer of link `j`?"""
    while k != j:
        if k not in run.chains or run.operands[k][0][0] != "local":
            return False
        k = run.operands[k][0][1]       # offsets decrease: this ends
    return True


def _may_link(entries, run, j, readers) -> bool:
    """May entry `j` update its operand 0's buffer in place (see `_arrays_chain`)?"""
    source = run.operands[j][0][1]
    if entries[run.start + source].prim.view:
        return False
    links = [(position, p) for position, p, r in readers.get(source, []) if r.out.ndim]
    reads = [position for position, p, r in readers.get(source, []) if not r.out.ndim]
    if len(links) > 1 or any(p != 0 for _, p in links):
        return False
    return not (reads and max(reads) > links[0][0])


def escaping(entries, outputs, runs) -> dict:
    """Per run (by id): the offsets read outside the run at a block other than the last,
    which need a tape (after the loop, the loop variables hold the last block's values).
    Inside runs, the reads of other runs' values are their tape operands (every block reads
    alike, block 0 included, see `_Column.matches`): only straight entries are scanned."""
    needs_tape: dict = {id(r): set() for r in runs}
    if not runs:
        return needs_tape
    ordered = sorted(runs, key=lambda r: r.start)
    at_start = {r.start: r for r in ordered}
    for r in ordered:
        for descriptors in r.operands:
            for d in descriptors:
                if d[0] == "tape":
                    needs_tape[id(at_start[d[1]])].add(d[2])
    site: dict = {}             # name of a value defined in a run -> its index
    for r in ordered:
        site.update(zip([e.out.name for e in entries[r.start:r.stop]], range(r.start, r.stop)))
    starts = [r.start for r in ordered]

    def read(a):
        at = site[a.name]
        r = ordered[bisect.bisect_right(starts, at) - 1]
        block, offset = r.block_of(at)
        if block != r.iterations - 1:
            needs_tape[id(r)].add(offset)

    bounds = [0] + [i for r in ordered for i in (r.start, r.stop)] + [len(entries)]
    for start, stop in zip(bounds[::2], bounds[1::2]):     # the straight entries
        for e in entries[start:stop]:
            for a in e.ins:
                if type(a) is Var and a.name in site:
                    read(a)
    for a in outputs:
        if isinstance(a, Var) and a.name in site:
            read(a)
    return needs_tape


RECOMPUTED = ("add", "sub", "mul", "neg", "integer_pow", "square")
RECOMPUTE_LIMIT = 6     # operations and element reads in one recomputed value


def recomputable(entries, run, stable, producer) -> set:
    """Offsets of `run` whose value at any iteration can be recomputed where it is read
    (the reverse sweep) instead of taped: a read `x[affine]` (an element or a view) of an
    array in `stable` (the function's inputs, never updated in place), or a few cheap scalar
    operations (`RECOMPUTED`) on literals, scalars in `stable` and such values of the same
    or the previous iteration. A value carried from the previous iteration is recomputable
    when the run's initial value is the same read one step earlier (`x[i]` carried into
    the iteration reading `x[i + 1]`), so iteration -1 needs no special case.
    (`producer`: value name -> the entry defining it.)"""
    cost: dict = {}
    for j in range(run.period):
        e = entries[run.start + j]
        if e.prim.name == "getitem":        # an element, or a view (`x[t]` of a 2-D x)
            a, d = e.ins[0], run.operands[j][0]
            if d[0] == "outside" and a.name in stable and all(
                    isinstance(item, int) for item in e.params["index"]):
                cost[j] = 1
            continue
        if e.out.ndim or e.out.dtype != "float64":
            continue
        if e.prim.name not in RECOMPUTED:
            continue
        total = 1
        for p, (a, d) in enumerate(zip(e.ins, run.operands[j])):
            if d[0] == "literal" or (d[0] == "outside" and a.ndim == 0 and a.name in stable):
                continue
            if d[0] == "local" and d[1] in cost:
                total += cost[d[1]]
            elif d[0] == "carried" and d[1] in cost \
                    and _init_is_previous(entries, run, j, p, producer):
                total += cost[d[1]]
            else:
                total = None
                break
        if total is not None and total <= RECOMPUTE_LIMIT:
            cost[j] = total
    return set(cost)


def _init_is_previous(entries, run, j, p, producer) -> bool:
    """Is the initial value of carried operand (j, p) the element read that the carried
    offset would make at iteration -1?"""
    k = run.operands[j][p][1]
    read, init = entries[run.start + k], run.inits[(j, p)]
    earlier_read = producer.get(init.name) if isinstance(init, Var) else None
    if earlier_read is None or read.prim.name != "getitem" \
            or earlier_read.prim.name != "getitem" \
            or earlier_read.ins[0].name != read.ins[0].name:
        return False
    params0, leaves = run.params[k]
    earlier = iter([first - stride for first, stride in leaves])
    params = {key: replace_int_leaves(v, earlier) for key, v in params0.items()}
    return params == earlier_read.params
