"""Codegen: Wengert list -> Python source text (one primitive per line).

The text is plain Python + NumPy (no Numba, no data): it runs as ordinary Python
and the compile step hands it to Numba. Array buffers that are owned and dead
afterwards are updated in place (`x_bar += …`, `x_bar[3] += …`) instead of
copied; scalar adjoint accumulations reuse their name (`x_bar = x_bar + x_bar_v2`).
"""
from __future__ import annotations

import bisect
import builtins
import itertools
import keyword
import re

from . import fuse, llvm, reroll, runtime, tape
from .primitives.core import VECTORIZED, add_into, operand_text
from .primitives.custom import KERNELS, user_kernels
from .wengert import Literal, Var, WengertList

RESERVED = {"np", "math", "GuardFailed", "ShapeChanged", *runtime.__all__, *llvm.WRAPPER_NAMES}
# Names codegen makes up (loop indices and counters, per-element, view, carried, tape, row and
# copied values, llvm adjoint buffers): printed value names never take this form.
GENERATED = re.compile(r"^([ijk]\d*|adjoint\d+)$|_(e|view|prev|tape|row|rows|out)$")
COMMENT_COLUMN = 44


def identifier(name: str) -> str:
    """A name usable in generated source (user names that clash get a trailing `_`)."""
    if not (name.isascii() and name.isidentifier()):     # (else the same name)
        name = "".join(c if c.isalnum() or c == "_" else "_" for c in name) or "f"
    if name[0].isdigit() or keyword.iskeyword(name) or name in RESERVED or name in KERNELS:
        name += "_"
    return name


def labels(wengert: WengertList) -> dict:
    """The printed name of every value of the list: an identifier, distinct from the others,
    from builtins and from every name codegen makes up (`GENERATED`), so that a parameter
    called `i0`, `x_e` or `range` is never shadowed by generated code. The inputs' names
    are chosen first, the others when first looked up (most values of a re-rolled list are
    never printed)."""
    return _Labels(v.name for v in wengert.inputs)


class _Labels(dict):
    """name -> printed name, chosen at the first lookup (see `labels`)."""

    def __init__(self, first):
        super().__init__()
        self.used: set = set()
        for name in first:
            self[name]      # noqa: B018 (chosen now)

    def __missing__(self, name):
        label, builtin = identifier(name), vars(builtins)
        while label in self.used or label in builtin or \
                (label.startswith("__") and hasattr(builtins, label)) or GENERATED.search(label):
            label += "_"
        self[name] = label
        self.used.add(label)
        return label


def docstring_text(text: str) -> str:
    """`text` escaped to sit between triple quotes (function names may hold quotes)."""
    return text.replace("\\", "\\\\").replace('"', '\\"')


def last_uses(wengert: WengertList) -> dict:
    """Value name -> index of the last entry reading it (the list's length for outputs)."""
    last_use = {a.name: i for i, e in enumerate(wengert.entries) for a in e.ins
                if type(a) is Var}
    last_use.update((a.name, len(wengert.entries)) for a in wengert.outputs
                    if isinstance(a, Var))
    return last_use


class _Storage:
    """Liveness and buffer ownership, to decide which updates may happen in place."""

    def __init__(self, wengert: WengertList):
        self.last_use = last_uses(wengert)
        self.root: dict = {v.name: v.name for v in wengert.inputs}
        self.owned: dict = {v.name: False for v in wengert.inputs}
        # per root: the last entry reading any value stored in it (a running maximum, so
        # a chain of n updates of one buffer is checked in O(n), not O(n^2))
        self.live_until: dict = {v.name: self.last_use.get(v.name, -1) for v in wengert.inputs}
        self.views: set = set()

    def record(self, entry, in_place: bool) -> None:
        out, ins = entry.out.name, entry.ins
        # (a 0-d "view", an element read, prints as a scalar copy)
        if (in_place or (entry.prim.view and entry.out.shape)) and ins and type(ins[0]) is Var:
            root = self.root[ins[0].name]
            if not in_place:
                self.views.add(out)
            live = self.live_until[root]
        else:
            root, live = out, -1
            self.owned[root] = len(entry.out.shape) > 0
        self.root[out] = root
        last = self.last_use.get(out, -1)
        self.live_until[root] = last if last > live else live

    def may_update_in_place(self, entry, index: int) -> bool:
        target = entry.ins[0] if entry.ins else None
        if entry.prim.inplace is None or not isinstance(target, Var) or target.ndim == 0:
            return False
        if target.shape != entry.out.shape or target.dtype != entry.out.dtype:
            return False
        root = self.root[target.name]
        if not self.owned.get(root) or target.name in self.views:
            return False
        others = [a for a in entry.ins[1:] if isinstance(a, Var) and self.root.get(a.name) == root]
        return not others and self.live_until[root] <= index

    def owns(self, name: str) -> bool:
        return self.owned.get(self.root.get(name), False) and name not in self.views


def _comment(line: str, text: str | None) -> str:
    """`line` with `# text` aligned after its first physical line."""
    if not text:
        return line
    first, newline, rest = line.partition("\n")
    return f"{first.ljust(COMMENT_COLUMN)}  # {text}{newline}{rest}"


class LoopIndex(int):
    """An integer parameter that varies in a loop: prints as `first + stride*k`."""

    def __new__(cls, first: int, stride: int, counter: str):
        value = super().__new__(cls, first)
        value.text = affine_text(first, stride, counter)
        return value

    def __str__(self) -> str:
        return self.text

    __repr__ = __str__

    def __format__(self, spec) -> str:
        return self.text


def affine_text(first: int, stride: int, counter: str) -> str:
    if stride == 0:
        return str(first)
    term = counter if stride == 1 else f"-{counter}" if stride == -1 else f"{stride}*{counter}"
    if first == 0:
        return term
    if stride == -1:
        return f"{first} - {counter}"
    return f"{term} + {first}" if first > 0 else f"{term} - {-first}"


def print_function(wengert: WengertList, fn_name: str, docstring: str, runs=(),
                   needs_tape=None) -> str:
    """Print the list as one function; entries inside `runs` are printed as loops.

    `needs_tape` is `reroll.escaping(...)` for those runs.
    """
    storage = _Storage(wengert)
    label = labels(wengert)
    printed = {v.name: label[v.name] for v in wengert.inputs}
    entries = wengert.entries
    counters = (f"k{n}" if n else "k" for n in itertools.count())

    def text(a):
        return printed[a.name] if isinstance(a, Var) else operand_text(a)

    body, sweep, adjoint_names = [], None, set()
    # Element reads at fixed positions were traced for exact shapes: checked once per call.
    read = {e.ins[0].name for e in entries if e.prim.name == "getitem"
            and any(isinstance(item, int) for item in e.params["index"])}
    body += [line for v in wengert.inputs if v.name in read
             for line in runtime.shape_check_lines(v.name, label[v.name], v.shape)]
    runs_at = {r.start: r for r in runs}
    starts = sorted(runs_at)
    producer = {e.out.name: e for e in entries}
    stable = {v.name for v in wengert.inputs} | {
        e.out.name for e in entries if e.sweep != "reverse" and e.out.ndim == 0}
    recomputed = {r.start: reroll.recomputable(entries, r, stable, producer) for r in runs}
    users: dict = {}
    for index, e in enumerate(entries):
        for a in e.ins:
            if isinstance(a, Var):
                users.setdefault(a.name, []).append(index)
    has_reverse = any(x.sweep == "reverse" for x in entries)
    returned = {a.name for a in wengert.outputs if isinstance(a, Var)}
    looped = bytearray(len(entries))        # 1 for the entries printed inside loops
    for r in runs:
        looped[r.start:r.stop] = b"\x01" * (r.stop - r.start)
    i = 0
    while i < len(entries):
        e = entries[i]
        if e.sweep != sweep and has_reverse:
            body.append(f"# {e.sweep} sweep")
            sweep = e.sweep
        run = runs_at.get(i)
        if run is not None:
            body += _print_loop(run, entries, storage, printed, label, text, next(counters),
                                needs_tape[id(run)], runs_at, recomputed,
                                lambda name: name in returned or any(
                                    not looped[u] for u in users.get(name, ())))
            i = run.stop
            continue
        later = bisect.bisect_right(starts, i)
        group = None if VECTORIZED.get() else \
            fusion_group(entries, i, users, starts[later] if later < len(starts) else None)
        if group is not None and not (group[1] == i + 1 and storage.may_update_in_place(e, i)):
            body += _print_fused(group, entries, wengert.outputs, storage, printed, label, text,
                                 users)
            i = group[1]
            sweep = entries[i - 1].sweep
            continue
        in_place = storage.may_update_in_place(e, i)
        storage.record(e, in_place)
        target = e.ins[0] if e.ins else None
        reuse = in_place or (e.accumulate and isinstance(target, Var) and e.out.ndim == 0
                             and target.name in adjoint_names
                             and storage.last_use.get(target.name, -1) <= i)
        if e.sweep == "reverse":
            adjoint_names.add(e.out.name)
        out_name = printed[target.name] if reuse else label[e.out.name]
        printed[e.out.name] = out_name
        operands = [Var(text(a), a.dtype, a.shape) if isinstance(a, Var) else a for a in e.ins]
        lines = e.prim.lines(out_name, operands, e.params, in_place=in_place)
        body.append(_comment(lines[0], e.loc))
        body.extend(lines[1:])
        if e.prim.name == "getitem" and e.out.ndim and any(
                isinstance(item, tuple) for item in e.params["index"]):
            body.append(f"check_sizes({out_name}.shape, {e.out.shape})")
        i += 1
    if all(v.name in read for v in wengert.inputs if v.ndim > 0):
        body = _without_shape_checks(body)
    params = ", ".join(printed[v.name] for v in wengert.inputs)   # before outputs rename
    results, returned = [], set()
    for a in wengert.outputs:
        if isinstance(a, Var) and a.ndim > 0:
            if a.name in returned:          # one value returned twice: two arrays
                results.append(f"np.copy({text(a)})")
                continue
            returned.add(a.name)
            if not storage.owns(a.name):    # never return a view or input
                body.append(f"{text(a)}_out = np.copy({text(a)})")
                printed[a.name] = f"{text(a)}_out"
        results.append(text(a))
    body.append(f"return {wengert.returned_text(results)}")
    lines = [f"def {fn_name}({params}):", f'    """{docstring_text(docstring)}"""']
    lines += ["    " + line.replace("\n", "\n    ") for line in body]
    return "\n".join(lines) + "\n"


# The per-operation checks of size-generic code (shapes the specialization does not fix).
SHAPE_CHECKS = ("check_broadcast(", "check_sizes(", "check_slice(")


def _without_shape_checks(body: list) -> list:
    """`body` without its SHAPE_CHECKS lines, for a function whose every array argument's
    exact shape is checked on entry: every value's shape is then the traced one (shape
    rules are functions of shapes and parameters), so those checks cannot fail, and each
    costs Numba a call to type and lower. (Each check is a statement before the loop it
    guards: no block is left empty.)"""
    kept = []
    for item in body:
        lines = [line for line in item.split("\n") if not line.lstrip().startswith(SHAPE_CHECKS)]
        if lines:
            kept.append("\n".join(lines))
    return kept


FUSABLE = {"add", "sub", "mul", "div", "neg", "integer_pow", "pow", "abs", "exp", "log", "log1p",
           "expm1", "sqrt", "square", "reciprocal", "sin", "cos", "tan", "tanh", "sinh", "cosh",
           "arcsin", "arccos", "arctan", "arctan2", "hypot", "maximum", "minimum", "logaddexp",
           "sign", "lt", "gt", "le", "ge", "eq", "ne", "select", "full_like"}
AFTER_THE_LOOP = {"reshape", "expand_dims", "reshape_like"}
# (primitive, operand position) read for its shape only: such a fused value is allocated
# (untouched memory costs nothing) but its elements are not stored.
SHAPE_ONLY = {("broadcast_like", 1), ("full_like", 0), ("reshape_like", 1), ("count", 0)}
_NUMPY_DTYPE = {"float64": "np.float64", "int64": "np.int64", "bool": "np.bool_"}


def _fusable(e, shape) -> bool:
    if e.prim.name in FUSABLE:
        return e.out.shape == shape and (e.prim.name != "full_like" or e.ins[1].ndim == 0)
    if e.prim.name == "broadcast_like":         # read with broadcasting, element by element
        return e.out.shape == shape and e.ins[0].ndim <= len(shape)
    return e.prim.name in ("sum", "mean") and e.ins[0].shape == shape and (
        e.out.ndim == 0 or e.ins[0].dtype == "float64")    # accumulators are float64


def _group_shape(first) -> tuple:
    """The loop nest's shape of a fused group starting with `first`."""
    return first.ins[0].shape if first.prim.name in ("sum", "mean") else first.out.shape


def _after_the_loop(e, inside) -> bool:
    """A reshape of a fused reduction's result (printed after the loop)."""
    return e.prim.name in AFTER_THE_LOOP and e.ins[0].name in inside


def _reduces_to_array(e) -> bool:
    """A fused sum/mean that keeps some axes (or keepdims): an accumulator array."""
    return e.prim.name in ("sum", "mean") and e.out.ndim > 0


def _zeros_to_scatter_into(e, shape, inside) -> bool:
    """Zeros of another shape, allocated before the loop for fused slice updates."""
    return e.prim.name == "full_like" and e.ins[1] == Literal(0.0) and e.out.shape != shape \
        and e.out.ndim == 1 and e.ins[0].name not in inside


def _fused_slice_update(e, shape, inside, chains) -> bool:
    """`acc[a:] += g` (1-D, unit step) with g computed in the loop: `acc[a + i] += g_i`."""
    if e.prim.name != "index_add" or len(shape) != 1 or e.ins[0].name not in chains:
        return False
    g, index = e.ins[1], e.params["index"]
    return isinstance(g, Var) and g.name in inside and g.shape == shape and len(index) == 1 \
        and isinstance(index[0], tuple) and index[0][3] in (None, 1)


def fusion_group(entries, start, users, limit=None):
    """(start, stop, bounds) of a fusable run of elementwise entries at `start` (stopping
    at `limit`, where a re-rolled loop starts): same
    output shape, at least one array operation, ending in reductions (full, or over some
    axes: accumulated), and the loop bounds: an operand from before the run whose run-time
    shape gives them, else per axis (operand, its axis) or None for a size-1 axis. None if
    there is none. (`users`: name -> indices of the entries reading it.)"""
    first = entries[start]
    shape = _group_shape(first)
    if not shape or (first.prim.name not in FUSABLE and first.prim.name not in
                     ("broadcast_like", "sum", "mean")) or not _fusable(first, shape):
        return None
    stop, reduced, inside, chains = start, set(), set(), set()
    while stop < (len(entries) if limit is None else limit):
        e = entries[stop]
        if any(isinstance(a, Var) and a.name in reduced for a in e.ins):
            if e.prim.name in AFTER_THE_LOOP and isinstance(e.ins[0], Var) and \
                    e.ins[0].name in reduced and not any(
                    isinstance(a, Var) and a.name in inside for a in e.ins[1:]):
                reduced.add(e.out.name)     # a reshape of an accumulator: printed after it
                inside.add(e.out.name)
                stop += 1
                continue
            break                           # a reduction is complete only after the loop
        if _fusable(e, shape):
            if e.out.ndim == 0 or _reduces_to_array(e):
                reduced.add(e.out.name)
        elif _zeros_to_scatter_into(e, shape, inside) or \
                _fused_slice_update(e, shape, inside, chains):
            chains.add(e.out.name)
        else:
            break
        inside.add(e.out.name)
        stop += 1
    # Slice updates run in place: every link of a chain but the last is read once, by the next.
    consumed = [e.ins[0].name for e in entries[start:stop] if e.prim.name == "index_add"]
    if len(consumed) != len(set(consumed)) or any(
            u >= stop for name in consumed for u in users.get(name, ())):
        return None
    # (a reduction over some axes alone is a loop too: cheaper for Numba than np.sum(axis=);
    # so is one elementwise operation that broadcasts or has rank >= 2 -- a ufunc costs ~2 s
    # to compile per array type there -- but not a lone 1-D one, whose ufunc is compiled
    # once per process and called more cheaply than a loop is inlined)
    operation = any(e.out.ndim > 0 and e.prim.name in FUSABLE and e.prim.name != "full_like"
                    for e in entries[start:stop])
    lone_1d = stop == start + 1 and len(shape) == 1 and all(
        a.ndim == 0 or a.shape == shape for a in first.ins if isinstance(a, Var))
    if not any(_reduces_to_array(e) for e in entries[start:stop]) and (
            not operation or lone_1d):
        return None
    operands = [a for e in entries[start:stop] if e.out.name not in chains
                and not _after_the_loop(e, inside) for a in e.ins
                if isinstance(a, Var) and a.ndim > 0 and a.name not in inside]
    for a in operands:
        if a.shape == shape:
            return start, stop, a
    # No operand has the whole shape (`A[None] * B[:, :, None]`): each axis's bound comes
    # from an operand that is not broadcast along it.
    bounds = []
    for k, size in enumerate(shape):
        source = next(((a, k - len(shape) + a.ndim) for a in operands
                       if a.ndim >= len(shape) - k and a.shape[k - len(shape) + a.ndim] == size),
                      None)
        if source is None and size != 1:
            return None
        bounds.append(source)
    return start, stop, tuple(bounds)


def _print_fused(group, entries, outputs, storage, printed, label, text, users) -> list:
    """One loop nest computing a fused group element by element (no array temporaries);
    reductions accumulate (`s += x_e`, `s[i0, i2] += x_e`).

    The loop bounds come from the reference operand, or per axis from the operands (see
    `fusion_group`); every array operand is checked (once, before the loop) to broadcast
    to them, since the specialization fixes sizes 0 and 1 only."""
    start, stop, bounds = group
    shape = _group_shape(entries[start])
    index = [f"i{k}" for k in range(len(shape))]
    if isinstance(bounds, Var):
        ref = text(bounds)
        dims = [f"{ref}.shape[{k}]" for k in range(len(shape))]
        whole = f"{ref}.shape"
    else:
        ref = None
        dims = ["1" if b is None else f"{text(b[0])}.shape[{b[1]}]" for b in bounds]
        whole = f"({', '.join(dims)},)"
    returned = {a.name for a in outputs if isinstance(a, Var)}
    inside = {e.out.name for e in entries[start:stop]}
    chains = {e.out.name for e in entries[start:stop] if e.prim.name == "index_add" or (
        e.prim.name == "full_like" and e.out.ndim > 0 and e.out.shape != shape)}
    kept = {e.out.name for e in entries[start:stop]
            if e.out.ndim > 0 and e.out.name not in chains and not _reduces_to_array(e) and (
                e.out.name in returned or any(u >= stop for u in users.get(e.out.name, ())))}
    shape_only = {name for name in kept if name not in returned and all(
        (entries[u].prim.name, k) in SHAPE_ONLY
        for u in users[name] if u >= stop
        for k, a in enumerate(entries[u].ins) if isinstance(a, Var) and a.name == name)}

    def element(a):
        if isinstance(a, Var) and a.name in inside:
            return f"{label[a.name]}_e"
        if not isinstance(a, Var) or a.ndim == 0:
            return text(a)
        lead = len(shape) - a.ndim       # broadcasting: size-1 axes read element 0
        picks = ["0" if d == 1 and shape[lead + k] != 1 else index[lead + k]
                 for k, d in enumerate(a.shape)]
        return f"{text(a)}[{', '.join(picks)}]"

    def count(axes):
        return " * ".join(dims[k] for k in axes) or "1"

    sweeps = " and ".join(dict.fromkeys(e.sweep for e in entries[start:stop]))
    head = [f"# fused: {stop - start} elementwise entries ({sweeps}) in one loop"]
    operands = dict.fromkeys(text(a) for e in entries[start:stop] if e.out.name not in chains
                             and not _after_the_loop(e, inside) for a in e.ins
                             if isinstance(a, Var) and a.ndim > 0 and a.name not in inside)
    head += [f"check_broadcast({whole}, {a}.shape)" for a in operands if a != ref]
    body, after = [], []
    for e in entries[start:stop]:
        if e.out.name in chains:
            storage.record(e, in_place=e.prim.name == "index_add")
            if e.prim.name == "index_add":
                acc = printed[e.ins[0].name]
                _, first, last, _ = e.params["index"][0]
                head.append(f"check_slice({acc}.shape[0], {first or 0}, "
                            f"{acc + '.shape[0]' if last is None else last}, {dims[0]})")
                first = first or 0
                offset = f" + {first}" if first > 0 else f" + {acc}.shape[0] - {-first}" \
                    if first < 0 else ""
                body.append(_comment(f"{acc}[{index[0]}{offset}] += {element(e.ins[1])}", e.loc))
                printed[e.out.name] = acc
            else:
                name = label[e.out.name]
                head.append(_comment(e.prim.lines(name, [Var(text(e.ins[0]), e.ins[0].dtype,
                                                             e.ins[0].shape), e.ins[1]],
                                                  e.params)[0], e.loc))
                printed[e.out.name] = name
            continue
        storage.record(e, False)
        name = label[e.out.name]
        if _after_the_loop(e, inside):
            operands = [Var(text(a), a.dtype, a.shape) for a in e.ins]
            after += [_comment(line, e.loc) if k == 0 else line for k, line in
                      enumerate(e.prim.lines(name, operands, e.params))]
            printed[e.out.name] = name
            continue
        if e.prim.name in ("sum", "mean"):      # accumulated over the loop
            axes = e.params["axis"]
            printed[e.out.name] = name
            if e.out.ndim == 0:
                head.append(_comment(f"{name} = 0.0", e.loc))
                body.append(f"{name} += {element(e.ins[0])}")
            else:
                keep = e.params["keepdims"]
                sizes = ["1" if k in axes else dims[k] for k in range(len(shape))
                         if keep or k not in axes]
                at = ["0" if k in axes else index[k] for k in range(len(shape))
                      if keep or k not in axes]
                head.append(_comment(f"{name} = np.zeros(({', '.join(sizes)},))", e.loc))
                body.append(f"{name}[{', '.join(at)}] += {element(e.ins[0])}")
            if e.prim.name == "mean":
                after.append(f"{name} = {name} / ({count(axes)})")
            continue
        if e.prim.name in ("full_like", "broadcast_like"):
            line = f"{name}_e = {element(e.ins[1] if e.prim.name == 'full_like' else e.ins[0])}"
        else:
            elements = [Var(element(a), a.dtype, ()) if isinstance(a, Var) else a for a in e.ins]
            line = e.prim.lines(f"{name}_e", elements, e.params)[0]
        body.append(_comment(line, e.loc))
        if e.out.name in kept:
            head.append(f"{name} = np.empty({whole}, dtype={_NUMPY_DTYPE[e.out.dtype]})")
            if e.out.name not in shape_only:
                body.append(f"{name}[{', '.join(index)}] = {name}_e")
            printed[e.out.name] = name
    lines = list(head)
    for depth, i in enumerate(index):
        lines.append("    " * depth + f"for {i} in range({dims[depth]}):")
    lines += ["    " * len(index) + line for line in body]
    return lines + after


def _tape_dtype(var) -> str:
    """The dtype argument of a tape's np.empty: none for float64 (the default), else the
    value's own (an index array or an integer taped as floats could not index)."""
    return "" if var.dtype == "float64" else f", dtype={_NUMPY_DTYPE[var.dtype]}"


def _recomputed(run, j, first, stride, counter, entries, text) -> str:
    """Source text recomputing offset `j` of `run` at iteration `first + stride*counter`
    (see `reroll.recomputable`)."""
    e = entries[run.start + j]
    operands = []
    for a, d in zip(e.ins, run.operands[j]):
        if d[0] in ("local", "carried"):
            step = 1 if d[0] == "carried" else 0
            t = _recomputed(run, d[1], first - step, stride, counter, entries, text)
            operands.append(Var(t, a.dtype, a.shape))
        else:
            operands.append(Var(text(a), a.dtype, a.shape) if isinstance(a, Var) else a)
    params0, leaves = run.params[j]
    varying = iter([LoopIndex(leaf + step * first, step * stride, counter)
                    if step * stride else leaf + step * first for leaf, step in leaves])
    params = {k: reroll.replace_int_leaves(v, varying) for k, v in params0.items()}
    line = e.prim.lines("_", operands, params)[0]
    return f"({line[len('_ = '):]})"


def _print_loop(run, entries, storage, printed, label, text, counter, taped, runs_at,
                recomputed, read_outside) -> list:
    """A re-rolled run as a `for` loop (see reroll.py); updates `printed` for later readers.

    Offsets read outside the run (`taped`) are taped per iteration unless `recomputed`
    (per run start) says they can be recomputed where they are read (`read_outside`:
    value name -> is it read by straight-line code or returned?)."""
    needed, taped = taped, set(taped) - recomputed[run.start]
    period, iterations = run.period, run.iterations
    names = {}
    for j in range(period):
        e = entries[run.start + j]
        if j not in run.chains:
            names[j] = label[e.out.name]
        else:   # an in-place chain: the storage of its initial array
            kind, source = run.operands[j][0][:2]
            names[j] = text(run.inits[(j, 0)]) if kind == "carried" else names[source]
    carried = {d[1] for ds in run.operands for d in ds if d[0] == "carried"} - run.chains
    head = [f"# loop: {iterations} iterations of {period} entries, re-rolled from the trace"]
    for (j, p), init in sorted(run.inits.items()):
        line = f"{names[run.operands[j][p][1]]}_prev = {text(init)}"
        # (chains update their buffer in place; operands reading one carried value share it)
        if run.operands[j][p][1] not in run.chains and line not in head:
            head.append(line)
    head += [f"{names[j]}_tape = np.empty({iterations}"
             f"{_tape_dtype(entries[run.start + j].out)})" for j in sorted(taped)
             if entries[run.start + j].out.ndim == 0]
    loop = [f"for {counter} in range({iterations}):"]

    def operands_of(j):
        e = entries[run.start + j]
        operands = []
        for p, (a, d) in enumerate(zip(e.ins, run.operands[j])):
            if d[0] == "local":
                t = names[d[1]]
            elif d[0] == "carried":
                t = names[d[1]] if d[1] in run.chains else f"{names[d[1]]}_prev"
            elif d[0] == "tape" and d[2] in recomputed[d[1]]:
                t = _recomputed(runs_at[d[1]], d[2], d[3], d[4], counter, entries, text)
            elif d[0] == "tape":
                t = f"{label[entries[d[1] + d[2]].out.name]}_tape" \
                    f"[{affine_text(d[3], d[4], counter)}]"
            else:
                t = text(a)
            operands.append(Var(t, a.dtype, a.shape) if isinstance(a, Var) else a)
        return operands

    segments = {} if VECTORIZED.get() else \
        _loop_segments(run, entries, taped, needed, read_outside)
    j = 0
    while j < period:
        if j in segments:
            loop += ["    " + line for line in _print_loop_segment(
                run, j, segments[j], entries, names, label, operands_of, counter, taped, head)]
            j = segments[j][0]
            continue
        e = entries[run.start + j]
        lines = e.prim.lines(names[j], operands_of(j), _loop_params(run, j, counter),
                             in_place=j in run.chains)
        loop.append("    " + _comment(lines[0], e.loc).replace("\n", "\n    "))
        loop += ["    " + line for line in lines[1:]]
        if j in taped and e.out.ndim:       # an (iterations, *shape) array, sized at run time,
            row = f"{names[j]}_tape_row"    # filled element by element (see core.add_into)
            loop += [f"    if {counter} == 0:",
                     f"        {names[j]}_tape = np.empty(({iterations},) + {names[j]}.shape"
                     f"{_tape_dtype(e.out)})",
                     f"    {row} = {names[j]}_tape[{counter}]"] + [
                "    " + line for line in add_into(row, names[j], e.out, e.out.ndim,
                                                   "=").splitlines()]
        elif j in taped:
            loop.append(f"    {names[j]}_tape[{counter}] = {names[j]}")
        j += 1
    loop += [f"    {names[r]}_prev = {names[r]}" for r in sorted(carried)]
    record, recomputable = storage.record, recomputed[run.start]
    in_chain = [j in run.chains for j in range(period)]
    for block in range(iterations):
        start = run.start + block * period
        for j, e in enumerate(entries[start:start + period]):
            record(e, in_chain[j])
            if j in taped:
                printed[e.out.name] = f"{names[j]}_tape[{block}]"
            elif j in recomputable and block != iterations - 1:
                if j in needed and read_outside(e.out.name):
                    printed[e.out.name] = _recomputed(run, j, block, 0, None, entries, text)
            elif block == iterations - 1 or in_chain[j]:
                printed[e.out.name] = names[j]
    return head + loop


ROWS = 2    # buffers of a value stored by a loop body: this iteration's and the previous one's


def _loop_fusable(e, shape) -> bool:
    """An elementwise entry of a loop body computable element by element over `shape`
    (array operands of exactly that shape: no broadcasting inside loop bodies)."""
    if e.prim.name not in FUSABLE or e.out.shape != shape or e.out.dtype not in _NUMPY_DTYPE:
        return False
    if e.prim.name == "full_like":
        return e.ins[1].ndim == 0
    return all(a.ndim == 0 or a.shape == shape for a in e.ins if isinstance(a, Var))


def _loop_segments(run, entries, taped, needed, read_outside) -> dict:
    """The runs of offsets of a re-rolled loop body printed as one loop over elements:
    first offset -> (stop, offsets stored to arrays). A segment is two or more elementwise
    entries of one shape, possibly ending in full sums (accumulated as scalars); an entry
    reading such a sum ends it. Only values read after the segment (by later offsets, the
    next iteration, a tape, code after the loop) or updated in place are stored; the
    others stay per-element scalars, so the body allocates no temporaries for them."""
    readers: dict = {}
    for j, descriptors in enumerate(run.operands):
        for d in descriptors:
            if d[0] in ("local", "carried"):
                readers.setdefault(d[1], []).append((j, d[0]))
    segments, j = {}, 0
    while j < run.period:
        first = entries[run.start + j]
        shape = first.out.shape
        if not shape or not _loop_fusable(first, shape):
            j += 1
            continue
        stop, reduced, hoisted = j, set(), set()
        while stop < run.period:
            e = entries[run.start + stop]
            local = [d[1] for d in run.operands[stop] if d[0] == "local" and d[1] >= j]
            if reduced.intersection(local):
                break
            if e.prim.name == "sum" and e.out.ndim == 0 and e.ins[0].shape == shape \
                    and e.ins[0].dtype == "float64":
                reduced.add(stop)
            elif e.prim.name == "getitem" and e.prim.view and e.out.ndim and not local \
                    and stop not in taped and stop not in needed:
                hoisted.add(stop)       # a view of an array from before: taken first
            elif not _loop_fusable(e, shape):
                break
            stop += 1
        while stop - 1 in hoisted:
            hoisted.discard(stop - 1)
            stop -= 1
        if stop - j - len(hoisted) < 2:
            j = max(stop, j + 1)
            continue
        kept = set()
        for s in set(range(j, stop)) - hoisted - reduced:
            last = entries[run.stop - run.period + s].out.name
            if s in taped or s in needed or read_outside(last) or any(
                    kind == "carried" or not j <= r < stop for r, kind in readers.get(s, ())):
                kept.add(s)
        # In-place links store into their buffer; a buffer made in the segment is stored
        # only when some link of it is read after the segment.
        links: dict = {}
        for s in sorted(run.chains.intersection(range(j, stop))):
            root = s
            while root in run.chains and run.operands[root][0][0] == "local":
                root = run.operands[root][0][1]
            if root in run.chains or not j <= root < stop:
                kept.add(s)             # an accumulator from before the segment
            else:
                links.setdefault(root, []).append(s)
        for root, chain in links.items():
            if kept.intersection(chain):
                kept.update([root, *chain])
        segments[j] = (stop, kept, hoisted)
        j = stop
    return segments


def _loop_params(run, j, counter) -> dict:
    """The parameters of offset `j` of `run` at iteration `counter` (indices affine in it)."""
    params0, leaves = run.params[j]
    varying = iter([LoopIndex(first, stride, counter) if stride else first
                    for first, stride in leaves])
    return {k: reroll.replace_int_leaves(v, varying) for k, v in params0.items()}


def _print_loop_segment(run, j0, segment, entries, names, label, operands_of, counter,
                        taped, before) -> list:
    """One segment of a loop body (see `_loop_segments`) as a loop nest over its elements.
    Stored values are written straight into their tape row when taped, else into one of
    two rows allocated at the first iteration (a carried value is read while the next is
    computed), so the body allocates nothing after its first iteration. Shape checks of
    operands defined before the loop go to `before` (printed before it)."""
    stop, kept, hoisted = segment
    shape = entries[run.start + j0].out.shape
    index = ", ".join(f"i{k}" for k in range(len(shape)))
    inside = [s for s in range(j0, stop) if s not in hoisted]
    element_name = {s: f"{label[entries[run.start + s].out.name]}_e" for s in inside}
    operands = {s: operands_of(s) for s in inside}
    head = [f"# fused: {len(inside)} elementwise entries of the loop body in one loop"]
    for s in sorted(hoisted):
        e = entries[run.start + s]
        lines = e.prim.lines(names[s], operands_of(s), _loop_params(run, s, counter))
        head += [_comment(lines[0], e.loc)] + lines[1:]
    outside = {}            # array operands from outside the segment: loop-invariant?
    for s in inside:
        for a, d in zip(operands[s], run.operands[s]):
            if isinstance(a, Var) and a.ndim and not (d[0] == "local" and d[1] in element_name):
                outside[a.name] = outside.get(a.name, True) and d[0] == "outside"
    ref = next((name for name, invariant in outside.items() if invariant), next(iter(outside)))
    for name, invariant in outside.items():     # invariant pairs are checked once
        if name != ref:
            (before if invariant and outside[ref] else head).append(
                f"check_broadcast({ref}.shape, {name}.shape)")
    body, after = [], []
    for s in inside:
        e = entries[run.start + s]
        elements = []
        for a, d in zip(operands[s], run.operands[s]):
            if not isinstance(a, Var):
                elements.append(a)
            elif d[0] == "local" and d[1] in element_name:
                elements.append(Var(element_name[d[1]], a.dtype, ()))
            elif d[0] == "tape" and a.ndim and a.name.endswith("]"):    # a row of a tape
                elements.append(Var(f"{a.name[:-1]}, {index}]", a.dtype, ()))
            else:
                elements.append(Var(f"{a.name}[{index}]" if a.ndim else a.name, a.dtype, ()))
        if e.prim.name == "sum":
            head.append(_comment(f"{names[s]} = 0.0", e.loc))
            body.append(f"{names[s]} += {elements[0].name}")
            if s in taped:
                after.append(f"{names[s]}_tape[{counter}] = {names[s]}")
            continue
        if e.prim.name == "full_like":
            line = f"{element_name[s]} = {operand_text(elements[1])}"
        else:
            line = e.prim.lines(element_name[s], elements, _loop_params(run, s, counter))[0]
        body.append(_comment(line, e.loc))
        if s in kept:
            body.append(f"{names[s]}[{index}] = {element_name[s]}")
        if s in run.chains:
            continue
        if s in kept:       # a tape row, or rows used in turn (the previous value stays)
            buffer, count, row = (f"{names[s]}_tape", run.iterations, counter) if s in taped \
                else (f"{names[s]}_rows", ROWS, f"{counter} % {ROWS}")
            head += [f"if {counter} == 0:",
                     f"    {buffer} = np.empty(({count},) + {ref}.shape, "
                     f"dtype={_NUMPY_DTYPE[e.out.dtype]})",
                     f"{names[s]} = {buffer}[{row}]"]
    lines = list(head)
    for depth in range(len(shape)):
        lines.append("    " * depth + f"for i{depth} in range({ref}.shape[{depth}]):")
    lines += ["    " * len(shape) + line for line in body]
    return lines + after


def printable_runs(wengert: WengertList, runs=None) -> tuple:
    """The runs reroll finds (or `runs` it found) and `reroll.escaping` for them. A chain
    link whose buffer would need a tape, be read after the loop, or is not owned here
    updates a copy instead (an accumulation) or drops its run (index updates)."""
    entries = wengert.entries
    runs = reroll.find_runs(entries) if runs is None else runs
    if not runs:
        return [], {}
    needs_tape = reroll.escaping(entries, wengert.outputs, runs)
    last_use = last_uses(wengert)
    producer = {e.out.name: e.prim for e in entries}
    kept, kept_starts = [], set()
    for r in runs:
        for j in sorted(r.chains):
            if not _may_update_in_place(r, j, entries, needs_tape[id(r)], last_use, producer):
                r.chains.discard(j)
        reads_dropped = any(d[0] == "tape" and d[1] not in kept_starts
                            for ds in r.operands for d in ds)
        if reroll.settle_chains(entries, r) and not reads_dropped:
            kept.append(r)
            kept_starts.add(r.start)
    if len(kept) == len(runs):
        return kept, needs_tape
    return kept, reroll.escaping(entries, wengert.outputs, kept)


def _may_update_in_place(run, j, entries, taped, last_use, producer) -> bool:
    """Chain link `j` of `run` may update its buffer in place: neither it nor the buffer
    is read outside the loop but at the last iteration, the initial buffer of a carried
    chain is owned and read only here, and a buffer made in the same iteration is not
    read after the loop."""
    kind, source = run.operands[j][0][:2]
    if taped.intersection((j, source)):
        return False
    if kind == "carried":
        init = run.inits[(j, 0)]
        return isinstance(init, Var) and init.name in producer and \
            not producer[init.name].view and \
            last_use.get(init.name, -1) <= run.start + j
    last = entries[run.stop - run.period + source].out.name
    return last_use.get(last, -1) < run.stop


LOOPS_FROM_ENTRIES = 200
# Numba compiles straight-line source at ~1-3 ms per line; LLVM takes ~0.1 ms per entry,
# the tape only the encoding (measured with benchmarks/run.py --only synthetic). On the
# long-traces graph at 10,000 ops (208,000 entries) llvm runs twice as fast as the tape
# (393 vs 806 µs per call), compiling in ~20 s, linear in the entries.
STRAIGHT_LINES_LIMIT = 300
LLVM_ENTRIES_LIMIT = 500_000


def choose_shape(wengert: WengertList, requested: str = "auto") -> tuple:
    """(code shape, runs) for a list: "straight" for short lists, "loops" where re-rolling
    leaves few straight lines, "llvm" for scalar lists that do not repeat, and "tape" (the
    interpreter) for those too long even for LLVM.

    `requested` other than "auto" is honored ("llvm" and "tape" only where the list is
    encodable).
    """
    if requested == "straight" or (requested == "auto" and
                                   len(wengert.entries) < LOOPS_FROM_ENTRIES):
        return "straight", None
    if requested in ("tape", "llvm"):
        encodable = tape.encodable if requested == "tape" else llvm.encodable
        return (requested if encodable(wengert) else "loops"), None
    compiled = "llvm" if len(wengert.entries) <= LLVM_ENTRIES_LIMIT else "tape"
    found = None
    if requested == "auto" and (llvm.encodable if compiled == "llvm" else tape.encodable)(wengert):
        # the search stops as soon as more lines than that would stay straight
        found = reroll.find_runs(wengert.entries, max_straight=STRAIGHT_LINES_LIMIT)
        if found is None:
            return compiled, None
    runs = printable_runs(wengert, found)
    covered = sum(r.stop - r.start for r in runs[0])
    if found is not None and len(wengert.entries) - covered > STRAIGHT_LINES_LIMIT:
        return compiled, None
    return "loops", runs


def fused_loops(wengert: WengertList, runs: tuple) -> tuple:
    """(list, printable runs): `wengert` with its forward loop and the reverse sweep's loop
    fused into one (see fuse.py) where the re-roller finds the fused loop, else as given:
    each iteration's adjoint right after it (`fuse.adjoints_early`) where that leaves fewer
    loops, else the loops interleaved block by block (`fuse.fuse_loops`)."""
    early = fuse.adjoints_early(wengert) if len(runs[0]) > 1 else None
    if early is not None:
        early_runs = printable_runs(early)
        if len(early_runs[0]) < len(runs[0]) and \
                _straight(early, early_runs[0]) <= _straight(wengert, runs[0]) + FUSION_SLACK:
            return early, early_runs
    fused = fuse.fuse_loops(wengert, runs[0])
    if fused is None:
        return wengert, runs
    fused_runs = printable_runs(fused)
    if len(fused_runs[0]) > len(runs[0]) or \
            _straight(fused, fused_runs[0]) > _straight(wengert, runs[0]) + FUSION_SLACK:
        return wengert, runs
    return fused, fused_runs


FUSION_SLACK = 200      # straight entries a fusion may add (copies, iterations not shared)


def _straight(wengert, runs) -> int:
    return len(wengert.entries) - sum(r.stop - r.start for r in runs)


def generate(wengert: WengertList, fn_name: str, docstring: str, shape: str = "auto",
             runs=None, vectorized: bool = False) -> str:
    """Module source for `wengert`: imports (only those used) and the function.

    `shape` is a code shape ("straight", "loops"; "tape" prints straight-line source for
    reading) or "auto" (see `choose_shape`); `runs` are loops' precomputed runs.
    `vectorized` prints for NumPy rather than Numba (see numpy_tier.py): one NumPy
    statement per array entry, no element loops (loops over re-rolled iterations stay).
    """
    token = VECTORIZED.set(vectorized)
    try:
        return _generate(wengert, fn_name, docstring, shape, runs)
    finally:
        VECTORIZED.reset(token)


def _generate(wengert, fn_name, docstring, shape, runs) -> str:
    if shape == "auto":
        shape, runs = choose_shape(wengert)
    if shape == "llvm":
        return llvm.print_module(wengert, fn_name, docstring_text(docstring), labels(wengert))
    if shape == "loops":
        wengert, runs = fused_loops(wengert, runs or printable_runs(wengert))
        function = print_function(wengert, fn_name, docstring, *runs)
    else:
        function = print_function(wengert, fn_name, docstring)
    imports = []
    if "math." in function:
        imports.append("import math")
    if "np." in function:
        imports.append("import numpy as np")
    helpers = [h for h in (*runtime.__all__, "ShapeChanged") if f"{h}(" in function]
    if helpers:
        imports.append(f"from jitad.runtime import {', '.join(helpers)}")
    if "GuardFailed" in function:
        imports.append("from jitad.errors import GuardFailed")
    kernels = user_kernels(wengert)
    if kernels:     # the user's @numba.njit kernels, by their process-unique names
        imports.append("from jitad.custom import user_kernel")
        imports += [f"{k.printed} = user_kernel({k.printed!r})" for k in kernels]
    header = '"""Generated by jitad: edits are overwritten."""\n'
    return header + "\n".join(imports) + ("\n\n\n" if imports else "\n\n") + function
