"""The tape code shape: a long scalar Wengert list encoded as opcode arrays.

Step: list -> `TapeKernel` (the alternative to printing source, for lists too long
for Numba to compile in seconds and without repeated segments to re-roll). The
interpreter `runtime.run_tape` is compiled once and cached on disk, so a list of
any length costs only its encoding; it runs a few times slower than compiled
straight-line code.
"""
from __future__ import annotations

import numpy as np

from .runtime import TAPE_OPCODES, check_shape
from .wengert import Literal, Var

OPCODE = {name: i for i, name in enumerate(TAPE_OPCODES)}
ELEMENTWISE = set(TAPE_OPCODES[:OPCODE["select"] + 1])


def encodable(wengert) -> bool:
    """Can the tape run this list? Scalars, element reads of 1-D float inputs, and
    element updates of adjoint arrays that start as zeros shaped like such an input."""
    arrays = {v.name for v in wengert.inputs if v.ndim == 1 and v.dtype == "float64"}
    if any(v.ndim > 1 or (v.ndim == 1 and v.name not in arrays) for v in wengert.inputs):
        return False
    adjoints = set()
    for e in wengert.entries:
        name = e.prim.name
        if name == "getitem":
            ok = e.ins[0].name in arrays and len(e.params["index"]) == 1 \
                and isinstance(e.params["index"][0], int)
        elif name == "full_like":
            ok = isinstance(e.ins[0], Var) and e.ins[0].name in arrays and e.ins[1] == Literal(0.0)
            adjoints.add(e.out.name)
        elif name == "index_add":
            ok = isinstance(e.ins[0], Var) and e.ins[0].name in adjoints and e.ins[1].ndim == 0 \
                and len(e.params["index"]) == 1 and isinstance(e.params["index"][0], int)
            adjoints.add(e.out.name)
        else:
            ok = (name in ELEMENTWISE or name == "guard") and e.out.ndim == 0
        if not ok:
            return False
    return all(not isinstance(a, Var) or a.ndim == 0 or a.name in adjoints
               for a in wengert.outputs)


class TapeKernel:
    """A callable like a compiled kernel: `kernel(*runtime_args) -> results`.

    Element reads make a variant keyed by exact shapes, so the offsets of the input
    arrays in the flat input buffer are fixed when the list is encoded.
    """

    def __init__(self, wengert, interpreter):
        self.interpreter = interpreter
        self.out_tree = wengert.out_tree
        slot_of: dict = {}
        constants: list = []

        def slot(a):
            key = a.name if isinstance(a, Var) else ("literal", repr(a.value))
            if key not in slot_of:
                slot_of[key] = len(constants)
                constants.append(float(a.value) if isinstance(a, Literal) else 0.0)
            return slot_of[key]

        self.scalar_slots = [(p, slot(v)) for p, v in enumerate(wengert.inputs) if v.ndim == 0]
        self.array_positions = [p for p, v in enumerate(wengert.inputs) if v.ndim == 1]
        offset, start = {}, 0
        for p in self.array_positions:
            v = wengert.inputs[p]
            offset[v.name] = (start, v.shape[0])
            start += v.shape[0]
        self.buffer_size = start
        region: dict = {}                 # adjoint array -> the input array it is shaped like
        rows = []
        for e in wengert.entries:
            name = e.prim.name
            if name == "full_like":
                region[e.out.name] = e.ins[0].name
                continue
            if name == "getitem":
                first, length = offset[e.ins[0].name]
                rows.append((OPCODE["load"], slot(e.out), 0, 0,
                             first + e.params["index"][0] % length))
            elif name == "index_add":
                region[e.out.name] = region[e.ins[0].name]
                first, length = offset[region[e.out.name]]
                rows.append((OPCODE["store_add"], 0, slot(e.ins[1]), 0,
                             first + e.params["index"][0] % length))
            elif name == "guard":
                rows.append((OPCODE["guard"], 0, slot(e.ins[0]),
                             slot(Literal(1.0 if e.params["expected"] else 0.0)), e.params["id"]))
            else:
                ops = [slot(a) for a in e.ins] + [0, 0, 0]
                c = e.params["n"] if name == "integer_pow" else ops[2]
                rows.append((OPCODE[name], slot(e.out), ops[0], ops[1], c))
        self.outputs = [("slot", slot(a)) if a.ndim == 0 else ("array", offset[region[a.name]])
                        for a in wengert.outputs]         # literal outputs take slots too
        self.code = np.array(rows, dtype=np.int64).reshape(-1, 5)
        self.constants = np.array(constants, dtype=np.float64)
        self.shapes = [(p, wengert.inputs[p].name, wengert.inputs[p].shape)
                       for p in self.array_positions]

    def __call__(self, *args):
        for position, name, shape in self.shapes:     # the offsets above assume them
            check_shape(name, args[position].shape, shape)
        slots = self.constants.copy()
        for position, s in self.scalar_slots:
            slots[s] = args[position]
        arrays = [args[p] for p in self.array_positions]
        inputs = np.concatenate(arrays) if arrays else np.empty(0)
        outputs = np.zeros(self.buffer_size)
        self.interpreter(self.code, slots, inputs, outputs)
        results = [float(slots[where]) if kind == "slot" else
                   outputs[where[0]:where[0] + where[1]].copy() for kind, where in self.outputs]
        if self.out_tree is None:
            return results[0] if len(results) == 1 else tuple(results)
        return results[0], tuple(results[1:1 + self.out_tree])
