"""Sparse Jacobians and Hessians: patterns from the Wengert list, colourings, compressed sweeps.

Step: a front door beside `api.JitGrad` (whose tracing and cache it reuses). For each traced
specialization it finds the sparsity pattern by propagating dependency sets through the list
(`jacobian_pattern`, `hessian_pattern`), colours the columns (`column_colouring`: distance-1
on the column intersection graph; `star_colouring` for symmetric Hessians), compiles one
forward-mode (Jacobian) or forward-over-reverse (Hessian-vector) kernel, runs it once per
colour with the colour's seed vector, and decompresses the products into scipy.sparse CSR.
Jacobians may instead run reverse mode over the colours of the rows of the list cut at the
gathers that read the differentiated inputs (`cut_pattern`, `reverse_plan`): residuals
that gather per-row parameters (bundle adjustment) colour into a few rows there.

Dependency sets are sparse 0/1 matrices `D[v]` (elements of value `v` x elements of the
differentiated input); scalar values carry Python sets instead (lazy unions along sums), so
loop-form code costs a few microseconds per entry. They are exact for elementwise
primitives (with broadcasting), static indexing, gathers and scatters (the index values are
read from the arguments), updates of arrays made in the function (`r[i] = v`), shape
primitives, reductions and `matmul`/`outer` (per element triple); unknown primitives and
`prod` are treated conservatively (every output element depends on every operand element,
and nonlinear ones couple all of them). `select`,
`maximum`, `minimum` and `abs` depend on both branches (the pattern holds for every branch).
"""
from __future__ import annotations

import functools
import hashlib

import numpy as np
import scipy.sparse as sp

from . import codegen, collector, compile as compiler, stats, store
from .api import JitGrad, _Background, numpy_tier_applies
from .derivatives import repeated
from .errors import ArgumentError, GuardFailed, NonScalarOutputError
from .primitives.shape import as_python_index
from .transforms import jvp, simplify, value_and_grad
from .transforms.cut import gathers_to_cut, local_list, output_parts, reverse_products
from .transforms.simplify import eliminate_dead_code
from .primitives import REGISTRY
from .wengert import Builder, Literal, Var, WengertList

# ---------------------------------------------------------------- dependency propagation

# Second derivative zero almost everywhere: first-order dependencies only.
_PIECEWISE_LINEAR = {"maximum", "minimum", "abs", "select"}
_UNARY_NONLINEAR = {"exp", "log", "log1p", "expm1", "sqrt", "square", "reciprocal", "sin",
                    "cos", "tan", "tanh", "sinh", "cosh", "arcsin", "arccos", "arctan"}
_BINARY_NONLINEAR = {"pow", "arctan2", "hypot", "logaddexp"}
_REDUCTIONS = {"sum", "mean", "max", "min", "prod"}
_VIEWS = {"reshape", "reshape_like", "expand_dims"}     # same elements, same order


# How scalar entries couple their operands: "square" (S x S), "bilinear" (S_a x S_b; div
# also S_b x S_b), "all" ((S_a | S_b)^2) or "linear" (not at all).
_SCALAR_RULES = {**{n: "linear" for n in ("add", "sub", "neg", *_PIECEWISE_LINEAR)},
                 **{n: "square" for n in (*_UNARY_NONLINEAR, "integer_pow")},
                 "mul": "bilinear", "div": "bilinear",
                 **{n: "all" for n in _BINARY_NONLINEAR}}


class _Union:
    """The dependency set of a scalar as a lazy union of its operands' sets: sums of many
    terms (`s += ...` in a loop) cost O(1) per term until a nonlinear entry reads them."""

    __slots__ = ("parts", "value")

    def __init__(self, parts):
        self.parts, self.value = parts, None


def _elements(d) -> frozenset:
    """The set of a scalar's dependency (a frozenset or a `_Union`, evaluated once)."""
    if isinstance(d, frozenset):
        return d
    if d.value is None:
        found, stack, seen = set(), [d], set()
        while stack:
            node = stack.pop()
            if isinstance(node, frozenset) or node.value is not None:
                found.update(node if isinstance(node, frozenset) else node.value)
            elif id(node) not in seen:
                seen.add(id(node))
                stack.extend(node.parts)
        d.value = frozenset(found)
    return d.value


def _size(shape) -> int:
    return int(np.prod(shape, dtype=np.int64))


def _grid(shape):
    return np.arange(_size(shape)).reshape(shape)


def _binary(m):
    """The pattern of a sparse matrix: CSR with every stored entry 1."""
    m = sp.csr_matrix(m)
    m.sum_duplicates()
    m.data = np.ones_like(m.data, dtype=np.float64)
    return m


def _select(matrix, index):
    """Rows of `matrix` picked by the flat integer array `index` (None stays None)."""
    return None if matrix is None else matrix[np.asarray(index, dtype=np.int64).ravel()]


def _spread(matrix, shape, out_shape):
    """Dependencies of an operand broadcast to `out_shape`."""
    if matrix is None or tuple(shape) == tuple(out_shape):
        return matrix
    return _select(matrix, np.broadcast_to(_grid(shape), out_shape))


def _union(*matrices):
    present = [m for m in matrices if m is not None]
    if not present:
        return None
    return present[0] if len(present) == 1 else _binary(sum(present[1:], present[0]))


def _routed(out_index, in_index, out_size, in_size, matrix):
    """Dependencies of an output built by routing input elements `in_index` to `out_index`."""
    if matrix is None:
        return None
    route = sp.csr_matrix((np.ones(len(out_index)), (out_index, in_index)),
                          shape=(out_size, in_size))
    return _binary(route @ matrix)


class TooDense(Exception):
    """A Hessian analysis recorded more coupled pairs than it was allowed."""


class _Analysis:
    """One walk over a list: dependency matrices per value and, for Hessians, the coupled
    input pairs recorded at each nonlinear entry (at most `max_pairs`, with repeats, when
    given: more raise TooDense)."""

    def __init__(self, wengert: WengertList, wrt, values: dict, second_order: bool,
                 max_pairs=None):
        xs = [wengert.inputs[i] for i in ([wrt] if isinstance(wrt, int) else wrt)]
        self.n = sum(_size(x.shape) for x in xs)      # the inputs' elements, one after another
        self.deps, offset = {}, 0
        for x in xs:
            size = _size(x.shape)
            self.deps[x.name] = frozenset({offset}) if x.shape == () else sp.csr_matrix(
                (np.ones(size), (np.arange(size), np.arange(offset, offset + size))),
                shape=(size, self.n))
            offset += size
        self.values = values            # name -> concrete value (integer index operands)
        self.second = second_order
        self.pairs_rows, self.pairs_cols = [], []
        self.scalar_pairs = []          # (i, j) coupled by scalar entries
        self.live = _differentiably_reaching(wengert) if second_order else None
        self.pairs_left = max_pairs

    def _record(self, count: int) -> None:
        """Count `count` more coupled pairs against `max_pairs`."""
        if self.pairs_left is not None:
            self.pairs_left -= count
            if self.pairs_left < 0:
                raise TooDense

    def of(self, a):
        """The dependency matrix of operand `a` (None: depends on nothing)."""
        d = self.deps.get(a.name) if isinstance(a, Var) else None
        if d is None or sp.issparse(d):
            return d
        columns = sorted(_elements(d))
        return sp.csr_matrix((np.ones(len(columns)), (np.zeros(len(columns), np.int64), columns)),
                             shape=(1, self.n))

    def scalar_of(self, a):
        return self.deps.get(a.name) if isinstance(a, Var) else None

    def couple(self, left, right):
        """Record that the input elements in each row of `left` interact with those in the
        same row of `right` (both: (elements, n) pattern matrices)."""
        if left is None or right is None:
            return
        product = (left.T @ right).tocoo()
        self._record(2 * product.nnz)
        self.pairs_rows += [product.row, product.col]
        self.pairs_cols += [product.col, product.row]

    def couple_elements(self, left, right):
        """`couple` for two scalars' dependency sets."""
        if left is None or right is None:
            return
        left, right = _elements(left), _elements(right)
        self._record(2 * len(left) * len(right))
        self.scalar_pairs += [(i, j) for i in left for j in right]

    def run(self, entries):
        for e in entries:
            if e.prim.nondifferentiable:
                continue
            scalar = e.out.shape == () and all(a.shape == () for a in e.ins)
            if scalar and e.prim.name in _SCALAR_RULES:
                deps = self.scalar_entry(e)
            elif e.out.shape == () and e.prim.name == "getitem":
                deps = self.element(e)
            else:
                deps = self.entry(e)
                if deps is not None and e.out.shape == ():
                    deps = frozenset(_binary(deps).indices.tolist())
            if deps is not None:
                self.deps[e.out.name] = deps

    def element(self, e):
        """`x[i, j]` of an array: one row of its matrix, as a set."""
        x = e.ins[0]
        d = self.of(x)
        if d is None:
            return None
        flat = int(np.ravel_multi_index(tuple(i % n for i, n in zip(e.params["index"], x.shape)),
                                        x.shape)) if x.shape else 0
        return frozenset(d.indices[d.indptr[flat]:d.indptr[flat + 1]].tolist())

    def scalar_entry(self, e):
        """The elementwise rules on scalars, with sets (linear ones build lazy unions)."""
        name, ins = e.prim.name, e.ins
        ds = [self.scalar_of(a) for a in ins]
        if name == "select":
            ds = ds[1:]
        present = [d for d in ds if d is not None]
        if not present:
            return None
        if self.second and e.out.name in self.live and _SCALAR_RULES[name] != "linear":
            rule = _SCALAR_RULES[name]
            if rule == "square" and (name != "integer_pow" or e.params["n"] not in (0, 1)):
                self.couple_elements(present[0], present[0])
            elif rule == "bilinear":
                self.couple_elements(ds[0], ds[1])
                if name == "div":
                    self.couple_elements(ds[1], ds[1])
            elif rule == "all":
                both = _Union(present)
                self.couple_elements(both, both)
        return present[0] if len(present) == 1 else _Union(present)

    def entry(self, e):
        name, ins, out = e.prim.name, e.ins, e.out
        ds = [self.of(a) for a in ins]
        if all(d is None for d in ds):
            return None
        nonlinear = self.second and e.out.name in self.live
        if name in ("add", "sub", "neg") or name in _PIECEWISE_LINEAR:
            operands = ins[1:] if name == "select" else ins
            return _union(*(_spread(self.of(a), a.shape, out.shape) for a in operands))
        if name in _UNARY_NONLINEAR or name == "integer_pow":
            d = _spread(ds[0], ins[0].shape, out.shape)
            if nonlinear and (name != "integer_pow" or e.params["n"] not in (0, 1)):
                self.couple(d, d)
            return d
        if name in ("mul", "div") or name in _BINARY_NONLINEAR:
            a, b = (_spread(d, x.shape, out.shape) for d, x in zip(ds, ins))
            if nonlinear:
                if name == "mul":
                    self.couple(a, b)
                elif name == "div":
                    self.couple(a, b)
                    self.couple(b, b)
                else:
                    both = _union(a, b)
                    self.couple(both, both)
            return _union(a, b)
        if name in _REDUCTIONS:
            x = ins[0]
            kept = tuple(1 if i in e.params["axis"] else n for i, n in enumerate(x.shape))
            out_index = np.broadcast_to(_grid(kept), x.shape).ravel()
            d = _routed(out_index, np.arange(_size(x.shape)), _size(out.shape), _size(x.shape),
                        ds[0])
            if nonlinear and name == "prod":        # conservative: all factors coupled
                self.couple(d, d)
            return d
        if name in _VIEWS:
            return ds[0]
        if name == "transpose":
            return _select(ds[0], _grid(ins[0].shape).transpose(e.params["axes"]))
        if name == "broadcast_like":
            return _spread(ds[0], ins[0].shape, out.shape)
        if name == "full_like":
            return _spread(ds[1], ins[1].shape, out.shape)
        if name == "getitem":
            return _select(ds[0], _grid(ins[0].shape)[as_python_index(e.params["index"])])
        if name == "gather":
            return _select(ds[0], _grid(ins[0].shape)[self.values[ins[1].name]])
        if name in ("index_add", "scatter_add", "index_update"):
            acc, update = ins[0], ins[1]
            where = self.values[ins[2].name] if name == "scatter_add" else \
                as_python_index(e.params["index"])
            positions = _grid(acc.shape)[where]
            source = np.broadcast_to(_grid(update.shape), positions.shape)
            routed = _routed(positions.ravel(), source.ravel(), _size(acc.shape),
                             _size(update.shape), ds[1])
            kept = ds[0]
            if name == "index_update" and kept is not None:     # overwritten: forgotten
                keep = np.ones(_size(acc.shape))
                keep[positions.ravel()] = 0.0
                kept = _binary(sp.diags(keep) @ kept)
            return _union(kept, routed)
        if name == "concatenate":
            axis, offset, grids = e.params["axis"], 0, []
            for x in ins:
                grids.append(_grid(x.shape) + offset)
                offset += _size(x.shape)
            stacked = sp.vstack([d if d is not None else sp.csr_matrix((_size(x.shape), self.n))
                                 for d, x in zip(ds, ins)], format="csr")
            return _select(stacked, np.concatenate(grids, axis=axis))
        if name in ("matmul", "outer"):
            return self.bilinear_product(e, ds, nonlinear)
        # Any other primitive: every output element depends on every operand element.
        everything = _union(*(_binary(d.sum(axis=0)) for d in ds if d is not None))
        d = _select(everything, np.zeros(_size(out.shape), dtype=np.int64))
        if nonlinear and not e.prim.linear:
            self.couple(everything, everything)
        return d

    def bilinear_product(self, e, ds, nonlinear):
        """`matmul` and `outer`, element triple by element triple."""
        a, b = e.ins
        if e.prim.name == "outer":
            m, p, k = a.shape[0], b.shape[0], 1
            i, j = np.meshgrid(np.arange(m), np.arange(p), indexing="ij")
            ai, bi, oi = i.ravel(), j.ravel(), (i * p + j).ravel()
        else:
            m = a.shape[0] if a.ndim == 2 else 1
            k = a.shape[-1]
            p = b.shape[1] if b.ndim == 2 else 1
            i, j, q = np.meshgrid(np.arange(m), np.arange(p), np.arange(k), indexing="ij")
            ai, bi, oi = (i * k + q).ravel(), (q * p + j).ravel(), (i * p + j).ravel()
        size = _size(e.out.shape)
        left = _routed(oi, ai, size, _size(a.shape), ds[0])
        right = _routed(oi, bi, size, _size(b.shape), ds[1])
        if nonlinear and ds[0] is not None and ds[1] is not None:
            self.couple(_select(ds[0], ai), _select(ds[1], bi))
        return _union(left, right)

    def hessian(self):
        if self.scalar_pairs:
            pairs = np.array(self.scalar_pairs, dtype=np.int64)
            self.pairs_rows += [pairs[:, 0], pairs[:, 1]]
            self.pairs_cols += [pairs[:, 1], pairs[:, 0]]
        if not self.pairs_rows:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        rows, cols = np.concatenate(self.pairs_rows), np.concatenate(self.pairs_cols)
        pattern = _binary(sp.coo_matrix((np.ones(len(rows)), (rows, cols)),
                                        shape=(self.n, self.n)))
        pattern.sort_indices()
        coo = pattern.tocoo()
        return coo.row.astype(np.int64), coo.col.astype(np.int64)


def _differentiably_reaching(wengert: WengertList) -> set:
    """Names of values whose change can change the output (not only through comparisons,
    guards or a select's condition)."""
    live = {a.name for a in wengert.outputs if isinstance(a, Var)}
    for e in reversed(wengert.entries):
        if e.out.name in live and not e.prim.nondifferentiable:
            operands = e.ins[1:] if e.prim.name == "select" else e.ins
            live.update(a.name for a in operands if isinstance(a, Var))
    return live


def _index_operands(wengert: WengertList) -> set:
    """Names of the integer operands of gathers and scatters (whose values decide patterns)."""
    return {e.ins[-1].name for e in wengert.entries
            if e.prim.name in ("gather", "scatter_add") and isinstance(e.ins[-1], Var)}


def index_values(wengert: WengertList, args: list) -> dict:
    """Concrete values of the integer operands of gathers and scatters, computed from the
    runtime arguments `args` (in the order of `wengert.inputs`) with NumPy."""
    needed = _index_operands(wengert)
    if not needed:
        return {}
    for e in reversed(wengert.entries):
        if e.out.name in needed:
            needed.update(a.name for a in e.ins if isinstance(a, Var))
    values = {v.name: a for v, a in zip(wengert.inputs, args)}
    for e in wengert.entries:
        if e.out.name in needed:
            operands = [values[a.name] if isinstance(a, Var) else a.value for a in e.ins]
            values[e.out.name] = e.prim.impl(*operands, **e.params)
    return values


def jacobian_pattern(wengert: WengertList, wrt, args=()) -> tuple:
    """(rows, cols): the structurally nonzero elements of d(output, raveled) / d(input `wrt`,
    raveled; for a list of inputs, their raveled elements one after another); `args` are the
    runtime arguments (needed where gathers read index arrays)."""
    analysis = _Analysis(wengert, wrt, index_values(wengert, list(args)), False)
    analysis.run(wengert.entries)
    (out,) = wengert.outputs
    d = analysis.of(out)
    if d is None:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    coo = _binary(d).tocoo()
    order = np.lexsort((coo.col, coo.row))
    return coo.row[order].astype(np.int64), coo.col[order].astype(np.int64)


def hessian_pattern(wengert: WengertList, wrt, args=(), max_pairs=None) -> tuple:
    """(rows, cols), symmetric: the input pairs coupled by some nonlinear entry that reaches
    the scalar output (Walther's dependency-set propagation). Raises TooDense after
    `max_pairs` coupled pairs (counted with repeats), when given."""
    analysis = _Analysis(wengert, wrt, index_values(wengert, list(args)), True, max_pairs)
    analysis.run(wengert.entries)
    return analysis.hessian()


def fixed_colouring(wengert: WengertList, wrt, kind: str, max_pairs: int):
    """(rows, cols, colours): the pattern of the Hessian (`kind` "hessian", star colouring)
    or of the Jacobian (colouring its "columns" or its "rows"), the same for every call of a
    specialization; None where the pattern depends on index arrays among the arguments, or
    is denser than `max_pairs` (Hessians: coupled pairs, counted with repeats; Jacobians:
    nonzeros, and pairs of nonzeros sharing a row (column), which the colouring's graph
    costs)."""
    if _index_operands(wengert):
        return None
    n = sum(_size(wengert.inputs[i].shape) for i in wrt)
    if kind == "hessian":
        try:
            rows, cols = hessian_pattern(wengert, wrt, (), max_pairs)
        except TooDense:
            return None
        return rows, cols, star_colouring(rows, cols, n)
    rows, cols = jacobian_pattern(wengert, wrt)
    m = _size(wengert.outputs[0].shape)
    shared = rows if kind == "columns" else cols    # the colouring's graph: pairs sharing one
    if len(rows) > max_pairs or np.sum(np.bincount(shared) ** 2) > max_pairs:
        return None
    if kind == "columns":
        return rows, cols, column_colouring(rows, cols, (m, n))
    return rows, cols, column_colouring(cols, rows, (n, m))


# ---------------------------------------------------------------- colourings

def _adjacency(rows, cols, n):
    """Neighbour lists (no self loops) of the symmetric pattern (rows, cols) on n vertices."""
    off = rows != cols
    graph = _binary(sp.coo_matrix((np.ones(off.sum()), (rows[off], cols[off])), shape=(n, n)))
    graph = _binary(graph + graph.T)
    indptr, indices = graph.indptr.tolist(), graph.indices.tolist()
    return [indices[indptr[v]:indptr[v + 1]] for v in range(n)]


def _largest_first(adj):
    return sorted(range(len(adj)), key=lambda v: -len(adj[v]))


def _greedy(adj):
    colours = [-1] * len(adj)
    for v in _largest_first(adj):
        taken = {colours[w] for w in adj[v]}
        c = 0
        while c in taken:
            c += 1
        colours[v] = c
    return np.array(colours, dtype=np.int64)


def column_colouring(rows, cols, shape) -> np.ndarray:
    """Greedy distance-1 colouring of the column intersection graph: columns of one colour
    share no row, so one JVP per colour gives all of them."""
    m, n = shape
    j = _binary(sp.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(m, n)))
    inter = (j.T @ j).tocoo()
    return _greedy(_adjacency(inter.row, inter.col, n))


def star_colouring(rows, cols, n) -> np.ndarray:
    """Greedy star colouring of the adjacency graph of a symmetric pattern (Gebremedhin,
    Manne and Pothen 2005, algorithm 4.1): adjacent vertices differ and every path on four
    vertices has at least three colours, so each H[i, j] is read off H S directly.

    Vertex v may not take the colour of a neighbour w, nor that of a coloured x two steps
    away through an uncoloured w, nor through a coloured w when x has another neighbour of
    w's colour (the path v-w-x-y would have two colours). The colours each w forbids are
    kept up to date as vertices are coloured (`count[x][c]`: neighbours of x with colour c;
    `through[w]`: colours of the x that w forbids), so a vertex costs its neighbours' colour
    counts, not a walk over their neighbourhoods (an arrowhead's hub has n of them).
    """
    adj = _adjacency(rows, cols, n)
    colours = [-1] * n
    count = [{} for _ in range(n)]
    through = [set() for _ in range(n)]
    for v in _largest_first(adj):
        forbidden = set()
        for w in adj[v]:
            if colours[w] >= 0:
                forbidden.add(colours[w])
                forbidden |= through[w]
            else:
                forbidden.update(count[w])
        c = 0
        while c in forbidden:
            c += 1
        colours[v] = c
        for z in adj[v]:
            k = count[z][c] = count[z].get(c, 0) + 1
            if colours[z] >= 0:
                if k == 2:      # z now has two neighbours of colour c: each of them sees z
                    for w in adj[z]:
                        if colours[w] == c:
                            through[w].add(colours[z])
                elif k > 2:
                    through[v].add(colours[z])
        for w in adj[v]:        # v, now coloured, seen from its coloured neighbours
            if colours[w] >= 0 and count[v].get(colours[w], 0) >= 2:
                through[w].add(c)
    return np.array(colours, dtype=np.int64)


def seeds(colours, shapes) -> list:
    """Per colour, one seed array per differentiated input (of these `shapes`): 1.0 on that
    colour's elements (the inputs' raveled elements one after another)."""
    count = int(colours.max()) + 1 if len(colours) else 0
    ends = np.cumsum([0] + [_size(s) for s in shapes])
    return [[(colours[a:b] == c).astype(np.float64).reshape(s)
             for a, b, s in zip(ends, ends[1:], shapes)] for c in range(count)]


def jacobian_sources(rows, cols, colours) -> tuple:
    """(row, colour) of the compressed product J S holding each nonzero (rows, cols)."""
    return rows, colours[cols]


def hessian_sources(rows, cols, colours) -> tuple:
    """(row, colour) of H S holding each nonzero of a symmetric pattern: H[i, j] is
    (H S)[i, colour j] where j is the only column of its colour in row i, else
    (H S)[j, colour i]. Raises ValueError where neither holds (not a star colouring)."""
    if len(rows) == 0:
        return rows, rows
    n_colours = int(colours.max()) + 1
    counts = np.bincount(rows * n_colours + colours[cols], minlength=0)
    direct = counts[rows * n_colours + colours[cols]] == 1
    mirrored_key = cols * n_colours + colours[rows]
    mirrored = np.zeros(len(rows), dtype=bool)
    inside = mirrored_key < len(counts)
    mirrored[inside] = counts[mirrored_key[inside]] == 1
    if not np.all(direct | mirrored):
        bad = np.flatnonzero(~(direct | mirrored))[0]
        raise ValueError(f"colouring cannot recover H[{rows[bad]}, {cols[bad]}]")
    source_row = np.where(direct, rows, cols)
    source_colour = np.where(direct, colours[cols], colours[rows])
    # Both triangles read the upper one's source: the result is exactly symmetric.
    position = sp.csr_matrix((np.arange(1, len(rows) + 1), (rows, cols)),
                             shape=(len(colours),) * 2)
    upper = np.where(rows <= cols, np.arange(len(rows)),
                     np.asarray(position[cols, rows]).ravel() - 1)
    return source_row[upper], source_colour[upper]


def layout(rows, cols, sources, shape) -> dict:
    """Where each nonzero (rows, cols) is read from the compressed products (an array with
    one row per colour, raveled): a pattern sorted by row, then column, as the pattern
    functions return it, becomes CSR index arrays and a gather index into the products."""
    return csr_layout(rows, cols, sources[1] * shape[0] + sources[0], shape)


def csr_layout(rows, cols, gather, shape, sum_at=None) -> dict:
    """A `layout` from the products' positions `gather` of each nonzero (rows, cols), sorted
    by row, then column; with `sum_at`, the products read are summed into the nonzeros
    `sum_at` (several may add into one)."""
    index_type = np.int32 if max(shape) < 2 ** 31 - 1 else np.int64
    indptr = np.zeros(shape[0] + 1, dtype=index_type)
    np.cumsum(np.bincount(rows, minlength=shape[0]), out=indptr[1:])
    where = {"gather": gather, "indices": cols.astype(index_type), "indptr": indptr,
             "shape": shape}
    if sum_at is not None:
        where["sum_at"] = sum_at
    return where


def decompress(products, where: dict):
    """The CSR matrix from `products` (a row per colour) and a `layout`."""
    data = products.ravel().take(where["gather"])
    if "sum_at" in where:
        data = np.bincount(where["sum_at"], weights=data, minlength=len(where["indices"]))
    return sp.csr_matrix((data, where["indices"].copy(), where["indptr"].copy()),
                         shape=where["shape"], copy=False)


# ---------------------------------------------------------------- the callable objects

_MAX_PLANS = 32        # patterns kept per object (index arrays with new values add one)


class _Sparse:
    """Shared machinery: a `JitGrad` traces and caches specializations; per specialization
    (and per index-array values) a pattern, a colouring and one compiled product kernel."""

    kind = ""

    def __init__(self, fun, argnums=0, tiers=True):
        if isinstance(argnums, tuple) and len(set(argnums)) != len(argnums):
            raise ArgumentError(f"sparse {self.kind}: argnums has a repeated index: {argnums!r}")
        self._inner = JitGrad(fun, argnums, tiers=tiers)
        self._single = isinstance(argnums, int)
        self.fun, self.argnums = fun, argnums
        self.__name__ = self._inner.__name__
        self._plans: dict = {}          # (id(variant), index digest) -> plan
        self._variants: dict = {}       # id(variant) -> variant (keeps ids valid)

    def __repr__(self) -> str:
        return f"<jitad sparse {self.kind} of {self.__name__}, argnums={self.argnums}>"

    def _resolve(self, args, kwargs):
        inner = self._inner
        args, key, runtime, names, values, candidates = inner._lookup(args, kwargs)
        repeated(inner._wrt, len(args), f"sparse {self.kind} of {self.__name__}")
        xs = [args[i] for i in inner._wrt]
        for x in xs:
            if not isinstance(x, np.ndarray):
                raise ArgumentError(f"sparse {self.kind} of {self.__name__}: a differentiated "
                                    f"argument must be a float64 array, got {type(x).__name__}")
        return args, key, runtime, names, values, candidates, xs

    def __call__(self, *args, **kwargs):
        """The sparse derivative at these arguments: a scipy.sparse CSR matrix (for a tuple
        `argnums`, a tuple of blocks; for a Hessian, a tuple of rows of blocks)."""
        with self._inner.first_call_lock():
            args, key, runtime, names, values, candidates, x = self._resolve(args, kwargs)
            for variant in candidates:
                try:
                    return self._evaluate(variant, values, x)
                except GuardFailed:
                    continue
            return self._evaluate(self._traced(args, key, runtime, names), values, x)

    def plan(self, *args, **kwargs):
        """(rows, cols, colours) used for these arguments: the pattern and its colouring
        (for a tuple `argnums`, of all differentiated elements one after another; for a
        Jacobian in reverse mode, the colours of the rows of the list cut at its gathers,
        see `reverse_plan`)."""
        args, key, runtime, names, values, candidates, x = self._resolve(args, kwargs)
        variant = candidates[0] if candidates else self._traced(args, key, runtime, names)
        p = self._plan(variant, values + variant.trace.consts, x)
        return p["rows"], p["cols"], p["colours"]

    def _traced(self, args, key, runtime, names):
        """A new trace, kept for these exact shapes: a pattern is only valid at its sizes
        (a size-generic list would otherwise be reused for other lengths)."""
        return self._inner._trace(args, key, runtime, names, exact=True, load=False)

    def _plan(self, variant, runtime_args, x):
        """The pattern, colouring and layout for this variant and these index values."""
        wengert = variant.trace.wengert
        digest = hashlib.sha256()
        for a in runtime_args:      # gathers' patterns depend on the index arrays' values
            if isinstance(a, (np.integer, np.bool_)):      # a 0-d index array's value
                a = np.asarray(a)
            if isinstance(a, np.ndarray) and a.dtype.kind in "iub":
                digest.update(f"{a.dtype.str}{a.shape}".encode())
                digest.update(np.ascontiguousarray(a))      # (a buffer: not copied)
        key = (id(variant), digest.digest())
        plan = self._plans.get(key)
        if plan is None:
            with collector.pause():
                plan = self._make_plan(simplify(wengert), list(variant.wrt), runtime_args, x)
            if len(self._plans) >= _MAX_PLANS:
                self._plans.clear()
            self._plans[key] = plan
            self._variants[id(variant)] = variant
        return plan

    def _evaluate(self, variant, values, x):
        runtime_args = values + variant.trace.consts
        plan = self._plan(variant, runtime_args, x)
        products = np.empty((len(plan["seeds"]), plan.get("width", plan["layout"]["shape"][0])))
        try:
            for k, seed in enumerate(plan["seeds"]):    # a constant product is a float
                product = compiler.call_compiling(self._kernel(variant, plan, k, runtime_args),
                                                  runtime_args + seed)
                if isinstance(product, tuple):
                    np.concatenate([np.ravel(p) for p in product], out=products[k])
                else:
                    products[k] = np.ravel(product)
        finally:        # background compiles start after the first tier's first result
            _Background.start_new(self._inner._jobs)
        return self._split(decompress(products, plan["layout"]), x)

    def _kernel(self, variant, plan, k, runtime_args):
        """The product kernel that seed `k` of `plan` is run with (made on first use, see
        `_compile`)."""
        mode = plan["kernels"][k] if "kernels" in plan else self.mode
        kernel = variant.kernels.get(mode)
        if kernel is None:
            kernel = self._inner._kernel(variant, mode, runtime_args + plan["seeds"][k],
                                         functools.partial(self._compile, plan, k))
        return kernel

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the product kernels compiling in the background are in (see
        `JitGrad.wait`)."""
        return self._inner.wait(timeout)

    def stats(self) -> list:
        """Per product kernel, a dict (see `JitGrad.stats`); its mode names the product."""
        return self._inner.stats()

    def _split(self, matrix, xs):
        """The matrix, or for a tuple `argnums` its blocks (column blocks of a Jacobian,
        rows of blocks of a Hessian)."""
        if self._single:
            return matrix
        ends = np.cumsum([0] + [x.size for x in xs])
        columns = [matrix[:, a:b] for a, b in zip(ends, ends[1:])]
        if self.kind == "jacobian":
            return tuple(columns)
        return tuple(tuple(c[a:b] for c in columns) for a, b in zip(ends, ends[1:]))

    def _compile(self, plan, k, variant, mode, runtime_args):
        """The product kernel of seed `k` of `plan` for `runtime_args` (seeds last): compiled
        now, or for array code with tiers on the NumPy tier while it compiles in the
        background (`JitGrad._in_background`)."""
        inner, loc = self._inner, variant.trace.wengert.loc
        key = inner._build_key(variant, mode)
        with collector.pause():
            product, _, name, chosen = self._product_of(variant, plan, k)
            if chosen[0] == "tape":
                return compiler.tape_kernel(product)
            printed = functools.partial(self._printed, variant, product, mode, name, chosen)
            tiered = chosen[0] in ("straight", "loops") and numpy_tier_applies(product) and \
                inner._first_tier_wanted(variant, key)
            source = printed(vectorized=tiered)
        stats.current().shape = chosen[0]
        if not tiered:
            with stats.stage("compile"):
                return compiler.compile_source(source, name, tuple(runtime_args), loc)
        with stats.stage("codegen"):
            first = compiler.numpy_kernel(source, name, tuple(runtime_args), product)
        return inner._in_background(variant, mode, first, functools.partial(
            _compiled_in_background, printed, name, tuple(runtime_args), loc,
            key if variant.digest else None, chosen[0]))

    def _built(self, variant, plan=None, k=0, for_reading=True):
        """(product list, function name, generated source; None for the tape interpreter
        unless `for_reading`) of the product seed `k` of `plan` is run with (by default:
        forward mode)."""
        product, mode, name, chosen = self._product_of(variant, plan, k)
        if chosen[0] == "tape" and not for_reading:
            return product, name, None
        return product, name, self._printed(variant, product, mode, name, chosen)

    def _product_of(self, variant, plan, k):
        """(product list, mode, function name, `codegen.choose_shape`'s answer) of seed `k`
        of `plan` (see `_built`)."""
        mode = plan["kernels"][k] if plan is not None and "kernels" in plan else self.mode
        with stats.stage("analysis"):
            wengert = simplify(variant.trace.wengert)
            product = one_output(self._product(wengert, list(variant.wrt), plan, k,
                                               f"{wengert.name}_{mode}"))
            chosen = codegen.choose_shape(product)
        return product, mode, f"{codegen.identifier(self.__name__)}_{mode}", chosen

    def _printed(self, variant, product, mode, name, chosen, vectorized=False) -> str:
        """The source of a product list (`chosen`: `codegen.choose_shape`'s answer;
        `vectorized`: printed for NumPy)."""
        shape, runs = chosen
        what = self.doc if mode == self.mode else REVERSE_DOC
        doc = f"{what} of {variant.trace.wengert.name} " \
              f"({product.loc}): one compressed {'column' if mode == self.mode else 'row'} " \
              "of a sparse derivative per seed."
        with stats.stage("codegen"):
            return codegen.generate(product, name, doc, shape, runs, vectorized)

    def _product(self, wengert, wrt, plan, k, name):
        base, picks = self._base(wengert, wrt)
        return product_list(base, wrt, picks, name)

    def source(self, *args, **kwargs) -> str:
        """The generated source of the products run once per colour (seeds: the last
        inputs), those these arguments' plan uses."""
        args, key, runtime, names, values, candidates, x = self._resolve(args, kwargs)
        variant = candidates[0] if candidates else self._traced(args, key, runtime, names)
        plan = self._plan(variant, values + variant.trace.consts, x)
        first = {mode: k for k, mode in reversed(list(enumerate(plan.get("kernels", [None]))))}
        return "\n\n".join(self._built(variant, plan, k)[2] for k in sorted(first.values()))


def _compiled_in_background(printed, name, example_args, loc, key, shape):
    """(A background job's work) the product kernel printed (`printed()`) and compiled by
    Numba; its build stored under `key` (when given) once compiled: later processes find
    Numba's cache warm and skip the NumPy tier (`JitGrad._first_tier_wanted`)."""
    with collector.pause():
        source = printed()
    with stats.stage("compile"):
        kernel = compiler.compile_source(source, name, example_args, loc, background=True)
    if key is not None:
        store.save("builds", key, (source, name, shape))
    return kernel


def product_list(base: WengertList, wrt: list, picks: list, name: str) -> WengertList:
    """The list `(inputs…, seeds…) -> (d output[pick] . seeds for each pick)`: forward mode
    on `base` (one seed per differentiated input).

    One seed per call: several tangents in one list share the primal, but their interleaved
    entries defeat the loop re-roller (a 300-term loop-form Rosenbrock prints 12 kB of
    source with one seed, 1.3 MB with three), and compile time dominates.
    """
    forward = jvp(base, wrt)
    tangents = [forward.outputs[len(base.outputs) + pick] for pick in picks]
    return simplify(eliminate_dead_code(WengertList(name, forward.inputs, forward.entries,
                                                    tangents, loc=base.loc)))


def one_output(product: WengertList) -> WengertList:
    """The list returning its outputs raveled into one vector, a row of the compressed
    products at once (a NumPy concatenation per call cost about as much as a small kernel);
    unchanged with one output or a constant one."""
    outputs = product.outputs
    if len(outputs) < 2 or not all(isinstance(o, Var) for o in outputs):
        return product
    used = {v.name for v in product.inputs} | {e.out.name for e in product.entries}
    b = Builder(REGISTRY, used_names=used, prefix="t")
    b.entries = list(product.entries)
    raveled = [o if o.ndim == 1 else b.reshape(o, shape=(int(np.prod(o.shape)),))
               for o in outputs]
    return WengertList(product.name, product.inputs, b.entries,
                       [b.concatenate(*raveled, axis=0)], loc=product.loc)


class SparseJacobian(_Sparse):
    """`sparse_jacobian(fun)(*args)`: d fun / d args[argnums] as a scipy.sparse CSR matrix of
    shape (output size, input size), from one forward-mode product per column colour."""

    kind, mode, doc = "jacobian", "sparse_jacobian", "Jacobian-vector product"

    def __init__(self, fun, argnums=0, tiers=True):
        super().__init__(fun, argnums, tiers)
        self._inner._check_output = self._check_output

    def _check_output(self, traced):
        (out,) = traced.wengert.outputs
        if not isinstance(out, (Var, Literal)) or out.dtype == "bool":
            raise NonScalarOutputError(
                f"{self.__name__} must return one float array (or scalar) for a Jacobian, "
                f"got {type(out).__name__}")

    def _make_plan(self, wengert, wrt, runtime_args, xs):
        """Forward mode over column colours, or reverse mode over the row colours of the
        list cut at its gathers (`cut_pattern`), whichever runs fewer products (a reverse
        one counting REVERSE_COST forward ones). The row colouring is skipped where its
        graph (pairs of local nonzeros sharing a column) would be much larger than the
        column colouring's (pairs sharing a row), e.g. a few columns read by every row."""
        (out,) = wengert.outputs
        shape = (_size(out.shape), sum(x.size for x in xs))
        values = index_values(wengert, runtime_args)
        arrays = out.shape != () and all(x.ndim for x in xs)
        cut = cut_pattern(wengert, wrt, values, shape) if arrays else None
        reverse = None
        if cut is None:
            rows, cols = jacobian_pattern(wengert, wrt, runtime_args)
        else:
            rows, cols = cut["rows"], cut["cols"]
            graph = np.sum(np.bincount(rows, minlength=1) ** 2)     # the colourings' graphs
            if np.sum(np.bincount(cut["local_cols"], minlength=1) ** 2) <= \
                    4 * graph + 64 * sum(shape):
                reverse = reverse_plan(cut, output_parts(wengert))
                if REVERSE_COST * len(reverse["seeds"]) <= np.bincount(rows, minlength=1).max():
                    return reverse      # fewer than any column colouring can have
        colours = column_colouring(rows, cols, shape)
        if reverse is not None and \
                REVERSE_COST * len(reverse["seeds"]) < int(colours.max(initial=-1)) + 1:
            return reverse
        return {"rows": rows, "cols": cols, "colours": colours,
                "seeds": seeds(colours, [x.shape for x in xs]),
                "layout": layout(rows, cols, jacobian_sources(rows, cols, colours), shape)}

    def _base(self, wengert, wrt):
        return wengert, [0]

    def _product(self, wengert, wrt, plan, k, name):
        if plan is None or "kernels" not in plan:
            return super()._product(wengert, wrt, plan, k, name)
        parts = output_parts(wengert)
        return reverse_products(wengert, wrt, gathers_to_cut(wengert, wrt),
                                [parts[i][0] for i in plan["parts"][k]], name)


REVERSE_MODE = "sparse_jacobian_rev"
REVERSE_DOC = "Vector-Jacobian product (reverse mode, the gathers of differentiated inputs cut)"
# Forward products one reverse product is counted as: on bundle adjustment (240
# observations) one vector-Jacobian product of the cut list took 1.1-1.3 times one
# Jacobian-vector product of the whole list; kept above that for lists whose reverse
# sweep stores more.
REVERSE_COST = 1.5


def cut_pattern(wengert: WengertList, wrt, values: dict, shape) -> dict | None:
    """The Jacobian's pattern through the list cut at its gathers (`transforms.cut`):
    `local_rows`, `local_cols`, the pattern of the local Jacobian, whose `width` columns
    are the inputs' elements, then each cut gather's elements; `rows`, `cols`, the
    Jacobian's pattern (sorted by row, then column), and `at`, the nonzero of it each local
    nonzero adds into (the gathers' index values route the columns). None where a
    gathered element is not one input element."""
    cuts = gathers_to_cut(wengert, wrt)
    sources = _cut_sources(wengert, wrt, cuts, values)
    if sources is None:
        return None
    local, local_wrt = local_list(wengert, wrt, cuts)
    analysis = _Analysis(local, local_wrt, values, False)
    analysis.run(local.entries)
    d = analysis.of(local.outputs[0])
    coo = _binary(d).tocoo() if d is not None else sp.coo_matrix((shape[0], len(sources)))
    target = sources[coo.col]
    kept = target >= 0          # gathered constants: no column
    local_rows, local_cols = coo.row[kept].astype(np.int64), coo.col[kept].astype(np.int64)
    keys, at = np.unique(local_rows * shape[1] + target[kept], return_inverse=True)
    return {"rows": keys // shape[1], "cols": keys % shape[1], "local_rows": local_rows,
            "local_cols": local_cols, "at": at.ravel(), "width": len(sources), "shape": shape}


def _cut_sources(wengert, wrt, cuts, values):
    """Per local column, the input element (raveled, inputs one after another) it is, or -1
    for a constant: the inputs' elements themselves, then each cut gather's elements, read
    from its dependency matrix; None where an element depends on several."""
    needed = {e.out.name for e in cuts}
    prefix = []
    for e in reversed(wengert.entries):
        if e.out.name in needed:
            prefix.append(e)
            needed.update(a.name for a in e.ins if isinstance(a, Var))
    analysis = _Analysis(wengert, wrt, values, False)
    analysis.run(prefix[::-1])
    parts = [np.arange(analysis.n)]
    for e in cuts:
        source = np.full(_size(e.out.shape), -1, dtype=np.int64)
        d = analysis.of(e.out)
        if d is not None:
            d = sp.csr_matrix(d)
            counts = np.diff(d.indptr)
            if counts.max(initial=0) > 1:
                return None
            source[counts == 1] = d.indices
        parts.append(source)
    return np.concatenate(parts)


def reverse_plan(cut: dict, parts: list) -> dict:
    """One vector-Jacobian product of the cut list per colour of its local rows (rows of
    one colour share no local column: the product's local column j is the one row's
    J_local[i, j]), and the layout summing them into the Jacobian's nonzeros. Each product
    seeds only the output parts (`transforms.cut.output_parts`) holding its rows: its
    kernel is the reverse sweep from those parts."""
    rows, cols, local_rows, local_cols = cut["rows"], cut["cols"], cut["local_rows"], \
        cut["local_cols"]
    (m, n), width = cut["shape"], cut["width"]
    colours = column_colouring(local_cols, local_rows, (width, m))
    read_from = colours[local_rows] * width + local_cols
    if len(rows) == len(read_from):     # one local nonzero per nonzero: a gather
        gather = np.empty_like(read_from)
        gather[cut["at"]] = read_from
        where = csr_layout(rows, cols, gather, (m, n))
    else:                               # a row reads an element twice: sums
        where = csr_layout(rows, cols, read_from, (m, n), sum_at=cut["at"])
    starts = [start for _, start in parts] + [m]
    used = np.zeros(m, dtype=bool)
    used[local_rows] = True
    part_of = np.searchsorted(starts, np.arange(m), side="right") - 1
    seeds, seeded = [], []
    for c in range(int(colours.max(initial=-1)) + 1):
        full = ((colours == c) & used).astype(np.float64)
        seeded.append(tuple(np.unique(part_of[full > 0]).tolist()))
        seeds.append([full[starts[k]:starts[k + 1]].reshape(parts[k][0].shape)
                      for k in seeded[-1]])
    return {"mode": REVERSE_MODE, "rows": rows, "cols": cols, "colours": colours,
            "seeds": seeds, "parts": seeded, "width": width, "layout": where,
            "kernels": [REVERSE_MODE + "".join(f"_{k}" for k in p) for p in seeded],
            "local": (local_rows, local_cols)}


class SparseHessian(_Sparse):
    """`sparse_hessian(fun)(*args)`: the Hessian of a scalar `fun` wrt args[argnums] as a
    symmetric scipy.sparse CSR matrix, from one Hessian-vector product (forward over
    reverse) per star colour."""

    kind, mode, doc = "hessian", "sparse_hessian", "Hessian-vector product"

    def _make_plan(self, wengert, wrt, runtime_args, xs):
        n = sum(x.size for x in xs)
        rows, cols = hessian_pattern(wengert, wrt, runtime_args)
        colours = star_colouring(rows, cols, n)
        try:
            sources = hessian_sources(rows, cols, colours)
        except ValueError:      # never expected; distance-2 colouring always decompresses
            colours = column_colouring(rows, cols, (n, n))
            sources = hessian_sources(rows, cols, colours)
        return {"rows": rows, "cols": cols, "colours": colours,
                "seeds": seeds(colours, [x.shape for x in xs]),
                "layout": layout(rows, cols, sources, (n, n))}

    def _base(self, wengert, wrt):
        return simplify(value_and_grad(wengert, wrt)), list(range(1, 1 + len(wrt)))


def sparse_jacobian(fun, argnums=0, tiers=True) -> SparseJacobian:
    """A callable returning d fun / d args[argnums] as a scipy.sparse CSR matrix (for a
    tuple `argnums`, a tuple of them: one block of columns per argument).

    The pattern (found on the traced list) and its column colouring are computed once per
    argument signature; each call runs one compiled forward-mode product per colour.
    """
    return SparseJacobian(fun, argnums, tiers)


def sparse_hessian(fun, argnums=0, tiers=True) -> SparseHessian:
    """A callable returning the Hessian of scalar `fun` wrt args[argnums] as a symmetric
    scipy.sparse CSR matrix, from one Hessian-vector product per star colour (for a tuple
    `argnums`, the blocks `H[i][j]` of shape (args[i].size, args[j].size) as a tuple of
    tuples; one colouring covers all the arguments)."""
    return SparseHessian(fun, argnums, tiers)
