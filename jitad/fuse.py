"""Loop fusion: a forward loop and the reverse sweep's loop as one loop, two ways.

`adjoints_early` (tried first, see its docstring): each iteration's adjoint right after
the iteration, where iterations meet only in sums; it reads the forward values themselves.
`fuse_loops`, below: the two loops interleaved block by block, the reverse loop recomputing
what it reads.

Step: part of codegen (list -> list, before printing loops). Reverse mode turns a
re-rolled forward loop into a second loop over the same iterations. Printed apart, each
loop is bound by its own chain: the forward one by its carried value (`s = s + term`),
whose additions wait for each other, while the adjoint loop's work would fit beside it.
Where the reverse loop reads the forward loop's values only through values it can
recompute (element reads of inputs and a few cheap operations on them, see
`reroll.recomputable`), it depends on the forward loop for nothing: the list is
reordered so that block t of the forward loop is followed by block t of the reverse loop
(each copy of a recomputed value placed just before its first reader in the block), and
the re-roller then finds one loop. The straight code between the loops moves before the
fused loop where the reverse loop reads it (copying the recomputed values it reads), after
it otherwise.

Every entry keeps its operation and the values of its operands (a recomputed copy computes
the same operations on the same elements), and a list's meaning does not depend on its
order beyond its dependencies (in-place updates are a printing decision made on the new
list): the results are bitwise those of the unfused list.
"""
from __future__ import annotations

import dataclasses

from . import reroll
from .wengert import Entry, Var, WengertList


def fuse_loops(wengert: WengertList, runs: list) -> WengertList | None:
    """`wengert` with the last forward loop among `runs` and the reverse loop right after
    it interleaved block by block, or None when there is no such pair (see the module)."""
    ordered = sorted(runs, key=lambda r: r.start)
    entries = wengert.entries
    for f, r in zip(ordered, ordered[1:]):
        if _sweep(entries, f) == "forward" and _sweep(entries, r) == "reverse":
            return _Fusion(wengert, f, r).fused() if _scalar_loops(entries, f, r) else None
    return None


def _sweep(entries, run):
    """The sweep of every entry of `run`, or None where it has both."""
    sweeps = {entries[i].sweep for i in range(run.start, run.stop)}
    return sweeps.pop() if len(sweeps) == 1 else None


def _scalar_loops(entries, f, r) -> bool:
    """Both loops compute scalars (the reverse one may update array elements in place),
    with iterations to share."""
    if f.chains or any(entries[i].out.ndim for i in range(f.start, f.stop)):
        return False
    return min(f.iterations, r.iterations) >= reroll.MIN_ITERATIONS and all(
        not entries[r.start + j].out.ndim or (j in r.chains and all(
            type(item) is int for item in entries[r.start + j].params.get("index", (None,))))
        for j in range(r.period))


class _Fusion:
    """The reordering of one (forward run `f`, reverse run `r`) pair."""

    def __init__(self, wengert, f, r):
        self.wengert, self.entries, self.f, self.r = wengert, wengert.entries, f, r
        self.site = {e.out.name: i for i, e in enumerate(self.entries)}
        producer = {e.out.name: e for e in self.entries}
        stable = {v.name for v in wengert.inputs} | {
            e.out.name for e in self.entries if e.sweep != "reverse" and e.out.ndim == 0}
        self.recomputable = reroll.recomputable(self.entries, f, stable, producer)
        self.used = set(self.site) | {v.name for v in wengert.inputs}
        self.serial = 0

    def fused(self) -> WengertList | None:
        """The reordered list: entries before the forward loop, the straight entries the
        reverse loop reads, both loops block by block, the iterations only one loop has,
        the other straight entries, the rest. None if the pair does not qualify."""
        f, r, entries = self.f, self.r, self.entries
        before = self._moved_before()
        if before is None:
            return None
        out = list(entries[:f.start])
        memo: dict = {}
        for i in range(f.stop, r.start):
            if i in before:
                out += self._with_copies(entries[i], [None] * len(entries[i].ins), memo)
        both = min(f.iterations, r.iterations)
        for t in range(both):
            out += entries[f.start + t * f.period:f.start + (t + 1) * f.period]
            memo = {}
            for j in range(r.period):
                e = entries[r.start + t * r.period + j]
                out += self._with_copies(e, [d if d[0] == "tape" else None
                                             for d in r.operands[j]], memo, t)
        out += entries[f.start + both * f.period:f.stop]
        out += entries[r.start + both * r.period:r.stop]
        out += [entries[i] for i in range(f.stop, r.start) if i not in before]
        out += entries[r.stop:]
        return dataclasses.replace(self.wengert, entries=out)

    def _moved_before(self) -> set | None:
        """Indices of the straight entries between the loops that the reverse loop reads,
        directly or not (they move before the fused loop); None if one of them, or the
        reverse loop, reads a value of the forward loop that cannot be recomputed."""
        f, r, entries = self.f, self.r, self.entries
        needed, moved = set(), set()

        def reads_recomputable(e) -> bool:      # (and adds what `e` reads to `needed`)
            for a in e.ins:
                if isinstance(a, Var):
                    site = self.site.get(a.name, -1)
                    if f.start <= site < f.stop and f.block_of(site)[1] not in \
                            self.recomputable:
                        return False
                    needed.add(a.name)
            return True

        if not all(reads_recomputable(entries[i]) for i in range(r.start, r.stop)):
            return None
        for i in range(r.start - 1, f.stop - 1, -1):
            if entries[i].out.name in needed:
                moved.add(i)
                if not reads_recomputable(entries[i]):
                    return None
        return moved

    def _with_copies(self, e, tapes, memo, t=None) -> list:
        """`e` reading copies of the forward loop's values it reads (each made once per
        `memo`), preceded by the entries making the new copies. `tapes`: per operand,
        the reverse loop's descriptor of a tape read at block `t` (an iteration affine in
        it), else None (the operand's own block)."""
        made, ins = [], []
        for a, d in zip(e.ins, tapes):
            site = self.site.get(a.name, -1) if isinstance(a, Var) else -1
            if not self.f.start <= site < self.f.stop:
                ins.append(a)
                continue
            block, j = self.f.block_of(site)
            key = (j, d[3], d[4]) if d is not None else (j, block, None)
            at = d[3] + d[4] * t if d is not None else block
            ins.append(self._copy(j, at, key, memo, made, e.sweep))
        if not made and all(x is y for x, y in zip(ins, e.ins)):
            return made + [e]
        return made + [dataclasses.replace(e, ins=tuple(ins))]

    def _copy(self, j, block, key, memo, made, sweep) -> Var:
        """The value of offset `j` of the forward loop at `block`, recomputed by new entries
        appended to `made` (once per `key`: the same iteration in every fused block)."""
        if key in memo:
            return memo[key]
        f = self.f
        e = self.entries[f.start + j]
        if e.prim.name == "getitem":
            ins = e.ins
        else:
            ins = []
            for a, d in zip(e.ins, f.operands[j]):
                if d[0] in ("local", "carried"):
                    step = 1 if d[0] == "carried" else 0
                    ins.append(self._copy(d[1], block - step, (d[1], key[1] - step, key[2]),
                                          memo, made, sweep))
                else:
                    ins.append(a)
        params0, leaves = f.params[j]
        at = iter([first + stride * block for first, stride in leaves])
        params = {k: reroll.replace_int_leaves(v, at) for k, v in params0.items()}
        out = Var(self._fresh(e.out.name), e.out.dtype, e.out.shape)
        made.append(Entry(out, e.prim, tuple(ins), params, e.loc, False, sweep))
        memo[key] = out
        return out

    def _fresh(self, name) -> str:
        while True:
            self.serial += 1
            fresh = f"{name}_r{self.serial}"
            if fresh not in self.used:
                self.used.add(fresh)
                return fresh


# ------------------------------------------------- the adjoint of each iteration, right after it
def adjoints_early(wengert: WengertList) -> WengertList | None:
    """`wengert` with each entry from the first reverse-sweep entry on (the reverse sweep, and
    in a forward-over-reverse list the tangents of its values) moved up to just before its
    first reader, and no earlier than the values it reads; None where moved and unmoved
    entries do not alternate at least `reroll.MIN_ITERATIONS` times.

    Where a loop's iterations meet only in sums (`s = s + term(x[i], x[i + 1])`), the adjoint
    of an iteration needs nothing from later ones: its entries land right after the
    iteration's own forward entries, reading them directly (no tape, no recomputed copy),
    and the re-roller finds one loop doing both, in the forward order, as a hand-written
    gradient does. Entries go as late as their readers allow, so a derivative factor whose
    reader waits for later iterations' adjoints stays in the reverse sweep. Element updates
    of one adjoint buffer (`x_bar[i] += …`: index_add at integer indices, each buffer but
    the last read only by the next link) touch different elements, so they run as early as
    their values allow and the chain is re-linked in the new order (updates of one element
    keep theirs). Every entry keeps its operation and operands: results are bitwise those
    of the list as given. (Plain loops, few calls: this runs on every loop-shaped list.)
    """
    entries = wengert.entries
    site = {e.out.name: i for i, e in enumerate(entries)}
    start = next((i for i, e in enumerate(entries) if e.sweep == "reverse"), len(entries))
    moves = [i >= start for i in range(len(entries))]     # (the entries that may move)
    chains = _element_chains(entries, site, start)
    after: dict = {}        # entry -> entries it must follow without reading them
    first_buffer: dict = {}     # link -> its chain's first buffer (each link reads it)
    for first, chain, last_readers in chains:
        previous: dict = {}
        for k in chain:
            first_buffer[k] = first
            element = tuple(j % n for j, n in zip(entries[k].params["index"], first.shape))
            after[k] = [previous[element]] if element in previous else []
            previous[element] = k
        for r in last_readers:
            after.setdefault(r, []).extend(chain)
    reads: list = [()] * len(entries)
    early = list(range(len(entries)))
    for i, e in enumerate(entries):
        ins = (first_buffer[i], *e.ins[1:]) if i in first_buffer else e.ins
        mine = []
        at = -1
        for a in ins:
            if type(a) is Var and a.name in site:
                d = site[a.name]
                if d not in first_buffer:   # (a chain's last buffer: see `after`)
                    mine.append(d)
                    at = early[d] if early[d] > at else at
        for d in after.get(i, ()):
            at = early[d] if early[d] > at else at
        if moves[i]:
            reads[i] = mine
            early[i] = at
    late = list(early)
    first_read: dict = {}
    for i in range(len(entries) - 1, -1, -1):
        if moves[i]:
            if i in first_read:
                late[i] = first_read[i]
            for d in reads[i]:
                if d not in first_read or late[i] < first_read[d]:
                    first_read[d] = late[i]
    order = [i for _, _, i in sorted(zip(late, moves, range(len(entries))))]
    switches = sum(moves[a] != moves[b] for a, b in zip(order, order[1:]))
    if switches < 2 * reroll.MIN_ITERATIONS:
        return None     # no loop's iterations take their adjoints in
    return dataclasses.replace(wengert, entries=_relinked(entries, order, chains))


def _element_chains(entries, site, start) -> list:
    """(first buffer, link indices, readers of the last buffer) of each chain of index_add
    entries from `start` on at integer indices, of one length (two links update
    the same element or disjoint ones), whose buffers but the last only the next link
    reads. Two or more links."""
    links = {}          # buffer name -> the link updating it
    for i, e in enumerate(entries):
        if e.prim.name == "index_add" and i >= start and type(e.ins[0]) is Var:
            index = e.params.get("index")
            if type(index) is tuple and all(type(k) is int for k in index):
                links[e.ins[0].name] = i if e.ins[0].name not in links else -1
    readers: dict = {name: [] for name in links}
    made = {entries[i].out.name: i for i in links.values() if i >= 0}
    for i, e in enumerate(entries):
        for a in e.ins:
            if type(a) is Var and (a.name in readers or a.name in made):
                readers.setdefault(a.name, []).append(i)
    chains = []
    for name, i in links.items():
        if i < 0 or readers[name] != [i] or name in made:
            continue        # not the first link of a chain (or read elsewhere)
        chain = [i]
        while True:
            out = entries[chain[-1]].out.name
            following = links.get(out, -1)
            if following < 0 or readers.get(out) != [following]:
                break
            chain.append(following)
        lengths = {len(entries[k].params["index"]) for k in chain}
        if len(chain) >= 2 and len(lengths) == 1:
            chains.append((entries[i].ins[0], chain,
                           readers.get(entries[chain[-1]].out.name, [])))
    return chains


def _relinked(entries, order, chains) -> list:
    """The entries in `order`, each chain re-linked in its new order: the k-th link to run
    reads the buffer of the one before (the first, the chain's first buffer) and makes the
    buffer that the k-th link of the old order made (the chain's readers read the last)."""
    moved = [entries[i] for i in order]
    position = {i: p for p, i in enumerate(order)}
    for first, chain, _ in chains:
        buffer = first
        for old, new in zip(chain, sorted(chain, key=position.get)):
            e = entries[new]
            moved[position[new]] = dataclasses.replace(
                e, ins=(buffer,) + tuple(e.ins[1:]), out=entries[old].out)
            buffer = entries[old].out
    return moved
