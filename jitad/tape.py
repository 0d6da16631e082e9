"""The tape code shape: a long scalar Wengert list encoded as opcode arrays.

Step: list -> `TapeKernel` (the alternative to printing source, for lists too long
for Numba to compile in seconds and without repeated segments to re-roll). The
interpreter `runtime.run_tape` is compiled once and cached on disk, so a list of
any length costs only its encoding; it runs a few times slower than compiled
straight-line code. A value's slot is reused once the value is read for the last
time (`runtime.number_slots`, compiled for long lists): the slots a call touches stay
few and cache-resident, where a slot per value (200,000 at 10,000 ops of the
long-traces graph) made every call stream megabytes.
"""
from __future__ import annotations

import collections
import itertools

import numpy as np

from . import collector
from . import runtime
from .runtime import TAPE_OPCODES, ShapeChanged
from .wengert import Literal, Var

OPCODE = {name: i for i, name in enumerate(TAPE_OPCODES)}
ELEMENTWISE = set(TAPE_OPCODES[:OPCODE["select"] + 1])


def encodable(wengert, any_rank: bool = False) -> bool:
    """Can the tape run this list? Scalars, element reads of float64 input arrays, and
    element updates of adjoint arrays that start as zeros shaped like such an input.
    Input arrays are 1-D only unless `any_rank` (the LLVM shape reuses this test and
    lays out 1-D arrays only)."""
    arrays = {v.name: v.ndim for v in wengert.inputs if v.ndim >= 1 and v.dtype == "float64"
              and (any_rank or v.ndim == 1)}
    if any(v.ndim >= 1 and v.name not in arrays for v in wengert.inputs):
        return False
    adjoints: dict = {}                   # adjoint array -> its rank
    for e in wengert.entries:
        name = e.prim.name
        if name == "getitem":
            ok = e.ins[0].name in arrays and _element(e.params["index"], arrays[e.ins[0].name])
        elif name == "full_like":
            ok = isinstance(e.ins[0], Var) and e.ins[0].name in arrays and e.ins[1] == Literal(0.0)
            adjoints[e.out.name] = e.ins[0].ndim
        elif name == "index_add":
            ok = isinstance(e.ins[0], Var) and e.ins[0].name in adjoints and e.ins[1].ndim == 0 \
                and _element(e.params["index"], adjoints[e.ins[0].name])
            adjoints[e.out.name] = e.ins[0].ndim
        else:
            ok = (name in ELEMENTWISE or name == "guard") and e.out.ndim == 0
        if not ok:
            return False
    return all(not isinstance(a, Var) or a.ndim == 0 or a.name in adjoints
               for a in wengert.outputs)


def _element(index, ndim: int) -> bool:
    """Is `index` one element of an array of rank `ndim` (an int per axis)?"""
    return len(index) == ndim and all(type(i) is int for i in index)


def _flat(index, shape) -> int:
    """The C-order flat position of element `index` (NumPy's negative indices wrap)."""
    position = 0
    for i, size in zip(index, shape):
        position = position * size + i % size
    return position


class TapeKernel:
    """A callable like a compiled kernel: `kernel(*runtime_args) -> results`.

    Element reads make a variant keyed by exact shapes, so the offsets of the input
    arrays in the flat input buffer (their C-order elements, one after another) are fixed
    when the list is encoded. `calls` counts the calls it served; once `successor` (the
    specialized kernel of the same list) is set, calls go to it.
    """

    tier = "tape"            # (the `tier` of f.stats())
    successor = None

    @collector.paused
    def __init__(self, wengert, interpreter, number_slots=runtime.number_slots):
        self.interpreter = interpreter
        self.out_tree = wengert.out_tree
        # Values (by name) and literals (by repr) are numbered in order of first use, and
        # unused operands are -1; `number_slots` then gives them their slots. The rows go
        # into one flat list of ints (no tuple per row), one pass over the entries.
        number = collections.defaultdict(itertools.count().__next__)    # key -> its number
        literals: dict = {}                         # literal key -> value

        def slot(a):
            if type(a) is Var:
                return number[a.name]
            key = ("literal", repr(a.value))
            literals[key] = float(a.value)
            return number[key]

        scalars = [(p, slot(v)) for p, v in enumerate(wengert.inputs) if v.ndim == 0]
        self.array_positions = [p for p, v in enumerate(wengert.inputs) if v.ndim >= 1]
        offset, start = {}, 0                       # name -> (first, shape)
        for p in self.array_positions:
            v = wengert.inputs[p]
            offset[v.name] = (start, v.shape)
            start += int(np.prod(v.shape))
        self.buffer_size = start
        region: dict = {}                 # adjoint array -> the input array it is shaped like
        code: list = []
        row = code.extend
        load, store_add, guard = OPCODE["load"], OPCODE["store_add"], OPCODE["guard"]
        for e in wengert.entries:
            name = e.prim.name
            if name == "full_like":
                region[e.out.name] = e.ins[0].name
                continue
            if name == "getitem":
                first, shape = offset[e.ins[0].name]
                row((load, number[e.out.name], -1, -1, first + _flat(e.params["index"], shape)))
            elif name == "index_add":
                region[e.out.name] = region[e.ins[0].name]
                first, shape = offset[region[e.out.name]]
                row((store_add, -1, slot(e.ins[1]), -1, first + _flat(e.params["index"], shape)))
            elif name == "guard":
                row((guard, -1, slot(e.ins[0]),
                     slot(Literal(1.0 if e.params["expected"] else 0.0)), e.params["id"]))
            else:
                ins = e.ins
                arity = len(ins)
                a = slot(ins[0]) if arity else -1
                b = slot(ins[1]) if arity > 1 else -1
                c = e.params["n"] if name == "integer_pow" else slot(ins[2]) if arity > 2 else 0
                row((OPCODE[name], number[e.out.name], a, b, c))
        outputs = [("slot", slot(a)) if a.ndim == 0 else ("array", offset[region[a.name]])
                   for a in wengert.outputs]          # literal outputs take slots too
        literal = np.zeros(len(number), dtype=np.bool_)
        kept = np.zeros(len(number), dtype=np.bool_)      # read after the run
        for key in literals:
            literal[number[key]] = True
        for kind, where in outputs:
            if kind == "slot":
                kept[where] = True
        first = np.array([s for _, s in scalars], dtype=np.int64)
        code, n_slots, final = number_slots(np.array(code, dtype=np.int64).reshape(-1, 5),
                                            literal, first, kept, OPCODE["select"])
        fits = code.size == 0 or (code.min() >= -2**31 and code.max() < 2**31)
        self.code = code.astype(np.int32) if fits else code   # (element positions past 2**31)
        self.constants = np.zeros(int(literal.sum()))      # the first slots
        for key, value in literals.items():
            self.constants[final[number[key]]] = value
        self.n_slots = n_slots
        self.scalar_slots = [(p, int(final[s])) for p, s in scalars]
        self.outputs = [(kind, int(final[where]) if kind == "slot" else where)
                        for kind, where in outputs]
        self.calls = 0
        self.shapes = [(p, wengert.inputs[p].name, wengert.inputs[p].shape)
                       for p in self.array_positions]

    def __call__(self, *args):
        if self.successor is not None:
            return self.successor(*args)
        self.calls += 1
        for position, name, shape in self.shapes:     # the offsets above assume them
            if args[position].shape != shape:
                raise ShapeChanged(name, args[position].shape, shape)
        slots = np.empty(self.n_slots)
        slots[:len(self.constants)] = self.constants
        for position, s in self.scalar_slots:
            slots[s] = args[position]
        arrays = [args[p] for p in self.array_positions]
        # (ravel: C-order values of any layout, copied only where not C-contiguous)
        inputs = np.concatenate([a.ravel() for a in arrays]) if arrays else np.empty(0)
        outputs = np.zeros(self.buffer_size)
        self.interpreter(self.code, slots, inputs, outputs)
        results = [float(slots[where]) if kind == "slot" else
                   outputs[where[0]:where[0] + int(np.prod(where[1]))].reshape(where[1]).copy()
                   for kind, where in self.outputs]
        if self.out_tree is None:
            return results[0] if len(results) == 1 else tuple(results)
        return results[0], tuple(results[1:1 + self.out_tree])
