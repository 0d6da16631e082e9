"""The tape code shape: a long scalar Wengert list encoded as opcode arrays.

Step: list -> `TapeKernel` (the alternative to printing source, for lists too long
for Numba to compile in seconds and without repeated segments to re-roll). The
interpreter `runtime.run_tape` is compiled once and cached on disk, so a list of
any length costs only its encoding; it runs a few times slower than compiled
straight-line code. A value's slot is reused once the value is read for the last
time (`runtime.number_slots`, compiled for long lists): the slots a call touches stay
few and cache-resident, where a slot per value (200,000 at 10,000 ops of the
long-traces graph) made every call stream megabytes.

Step: traced list -> `ReverseTapeKernel` (a long list's first value and gradient): the
forward rows with a slot per value, run forward and then backwards by a kernel whose
rules are printed from the registry, so the first result needs no reverse-mode list.
Run on a jvp list's directional derivative (`HvpTapeKernel`), the same kernel gives
Hessian-vector products without a forward-over-reverse list.
"""
from __future__ import annotations

import collections
import itertools

import numpy as np

from . import collector
from . import runtime
from .runtime import TAPE_OPCODES, ShapeChanged
from .primitives import REGISTRY
from .primitives.core import operand_text
from .transforms.reverse import value_and_grad
from .wengert import Builder, Literal, Var, WengertList

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
        self.offsets = offset
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
        return self._run(*self._slots_and_inputs(args))

    def _run(self, slots, inputs):
        """The results of a call whose slots and input buffer are set."""
        outputs = np.zeros(self.buffer_size)
        self.interpreter(self.code, slots, inputs, outputs)
        results = [float(slots[where]) if kind == "slot" else _array_at(outputs, *where)
                   for kind, where in self.outputs]
        if self.out_tree is None:
            return results[0] if len(results) == 1 else tuple(results)
        return results[0], tuple(results[1:1 + self.out_tree])

    def _slots_and_inputs(self, args):
        """The slots (constants and scalar arguments in place) and the flat input buffer
        of a call with `args`, whose array shapes must be the encoded ones."""
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
        return slots, inputs


def _array_at(buffer, first: int, shape: tuple):
    """A copy of the array of `shape` whose C-order elements start at `buffer[first]`."""
    return buffer[first:first + int(np.prod(shape))].reshape(shape).copy()


def one_slot_per_value(code, literal, first, kept, select):
    """`runtime.number_slots` without reuse: every value its own slot, constants first
    (what the reverse sweep of `ReverseTapeKernel` needs: every forward value, at its end)."""
    order = np.concatenate([np.flatnonzero(literal), np.flatnonzero(~literal)])
    slot_of = np.empty(len(literal), dtype=np.int64)
    slot_of[order] = np.arange(len(literal))
    rows = code.copy()
    for k in (1, 2, 3):
        rows[:, k] = np.where(code[:, k] >= 0, slot_of[code[:, k]], -1)
    selects = code[:, 0] == select
    rows[selects, 4] = slot_of[code[selects, 4]]
    return rows, len(literal), slot_of


# ---------------------------------------------------------------- the reverse tape
# The first tier of a long list's value and gradient: its forward (traced) list is encoded
# as above, and `run_tape_gradient` runs the rows, then walks them backwards applying each
# opcode's VJP rule — the registry's, printed into the kernel (`reverse_source`). No
# reverse-mode list is built or encoded before the first result; the row count is the
# forward list's.

# integer_pow exponents the reverse kernel has a branch for (a rule per exponent).
REVERSE_POWERS = range(-4, 9)
FORWARD_OPERATIONS = ELEMENTWISE | {"getitem", "guard"}


def reverse_encodable(wengert) -> bool:
    """Can `ReverseTapeKernel` run the value and gradient of this forward list? `encodable`
    lists without updates, whose integer powers are REVERSE_POWERS and whose `pow` has no
    literal 0 operand (its rule is a literal's there), returning one float64 scalar."""
    out = wengert.outputs
    if len(out) != 1 or out[0].shape != () or out[0].dtype != "float64":
        return False
    for e in wengert.entries:
        name = e.prim.name
        if name not in FORWARD_OPERATIONS or \
                name == "integer_pow" and e.params["n"] not in REVERSE_POWERS or \
                name == "pow" and any(type(a) is Literal and a.value == 0 for a in e.ins):
            return False
    return encodable(wengert, True)


class ReverseTapeKernel(TapeKernel):
    """`(value, (grad, …))` of a forward list, by `run_tape_gradient`: a value's adjoint
    accumulates in reverse row order as reverse mode's sums do, and a row whose output's
    adjoint nothing touched is skipped: reverse mode's activity (a value that does not
    reach the output) and masked zeros (the zero a select gives its unchosen operand stays
    0 through any product). Values that do not depend on `wrt` (positions of the inputs
    differentiated) get adjoints too, which reach only values that do not either.
    """

    def __init__(self, wengert, wrt, interpreter):
        super().__init__(wengert, interpreter, one_slot_per_value)
        self.value = self.outputs[0][1]
        slot_of = dict(self.scalar_slots)       # input position -> its slot
        # Where each gradient is: a scalar input's slot, or an array's (first, shape) in
        # the input adjoints' buffer.
        self.gradients = [(slot_of[i], None) if wengert.inputs[i].ndim == 0 else
                          self.offsets[wengert.inputs[i].name] for i in wrt]

    def _run(self, slots, inputs):
        adjoints = np.empty(self.n_slots)
        touched = np.zeros(self.n_slots, dtype=np.bool_)
        input_adjoints = np.zeros(self.buffer_size)
        if self.value >= len(self.constants):       # (a constant has no adjoint)
            adjoints[self.value], touched[self.value] = 1.0, True
        self.interpreter(self.code, slots, inputs, adjoints, touched, len(self.constants),
                         input_adjoints)
        grads = tuple((float(adjoints[where]) if touched[where] else 0.0) if shape is None
                      else _array_at(input_adjoints, where, shape)
                      for where, shape in self.gradients)
        return float(slots[self.value]), grads


class HvpTapeKernel(ReverseTapeKernel):
    """`H v` (a tuple of blocks for several `wrt`) of a scalar function, reverse over
    forward: the gradient of its `tangent_list` (`<grad f, v>`) by `run_tape_gradient`.
    Equal to forward over reverse up to rounding (the same products, in another order)."""

    def _run(self, slots, inputs):
        _, grads = super()._run(slots, inputs)
        return grads[0] if len(grads) == 1 else grads


_REVERSE_HEAD = '''"""The tape's value and gradient (printed by jitad/tape.py `reverse_source`)."""
import math

import numpy as np

from jitad.runtime import run_tape


def run_tape_gradient(code, slots, inputs, adjoints, touched, constants, input_adjoints):
    """Run the rows of `code` (runtime.run_tape), then walk them backwards: a row whose
    output's adjoint is `touched` adds its operands' cotangents d0, d1 into their
    adjoints (not the first `constants` slots; an unused operand is -1), a load into
    `input_adjoints`."""
    run_tape(code, slots, inputs, inputs)             # (no store_add rows: nothing written)
    for t in range(code.shape[0] - 1, -1, -1):
        o = code[t, 1]
        if o < 0 or not touched[o]:
            continue
        op, a, b, c = code[t, 0], code[t, 2], code[t, 3], code[t, 4]
        g = adjoints[o]
        if op == LOAD:
            input_adjoints[c] += g
            continue
        if op == SELECT:
            a = b if slots[a] != 0.0 else c
            b = -1
            d0 = g
        else:
            x0, out = slots[a], slots[o]
            x1 = slots[b] if b >= 0 else 0.0
            d0 = d1 = 0.0
'''


def _accumulated(slot: str, cotangent: str) -> str:
    """Add `cotangent` into the adjoint of `slot` unless a constant's or unused (the first
    contribution is the adjoint, as reverse mode's sums start)."""
    return f'''
        if {slot} >= constants:
            if touched[{slot}]:
                adjoints[{slot}] += {cotangent}
            else:
                adjoints[{slot}] = {cotangent}
                touched[{slot}] = True'''


def reverse_source() -> str:
    """The source of `run_tape_gradient`: a branch per differentiable opcode printing the
    registry's VJP rule (reverse mode of `out = op(x0, x1)` scaled by a cotangent `g`,
    masked zeros kept), for integer_pow a branch per exponent of REVERSE_POWERS; a load
    adds into the input's adjoint, a select into its chosen operand's only."""
    branches = []
    for name in TAPE_OPCODES[:OPCODE["select"]]:
        prim = REGISTRY[name]
        if prim.nondifferentiable:
            continue
        if name == "integer_pow":
            lines = []
            for n in REVERSE_POWERS:
                lines += [f"{'if' if n == REVERSE_POWERS[0] else 'elif'} c == {n}:"] + \
                    ["    " + line for line in _rule_lines(prim, 1, {"n": n})]
        else:
            lines = _rule_lines(prim, len(prim.domain), {})
        branches.append((OPCODE[name], lines))
    head = _REVERSE_HEAD.replace("LOAD", str(OPCODE["load"])).replace(
        "SELECT", str(OPCODE["select"]))
    return head + "\n".join(_dispatch(branches, " " * 12)) + _accumulated("a", "d0") + \
        _accumulated("b", "d1") + "\n"


def _rule_lines(prim, arity, params) -> list:
    """`prim`'s VJP rule printed: lines computing the cotangents d0 (and d1) of x0 (and
    x1) from the output `out` and its cotangent `g` (reverse mode's, masked zeros kept)."""
    operands = [Var(f"x{k}", "float64", ()) for k in range(arity)]
    cotangent = Var("g", "float64", ())
    b = Builder(REGISTRY, {"g"} | {v.name for v in operands}, prefix="r")
    out = b.bind(prim, *operands, name="out", **params)
    wengert = WengertList("rule", operands + [cotangent], b.entries, [b.mul(out, cotangent)])
    grad = value_and_grad(wengert, list(range(arity)))
    lines = []
    for e in grad.entries[2:]:                   # (after `out` and the product)
        lines += e.prim.lines(e.out.name, e.ins, e.params)
    return lines + [f"d{k} = {operand_text(d)}" for k, d in enumerate(grad.outputs[1:])]


def _dispatch(branches, indent) -> list:
    """Nested `if op < k` tests down to `if op == k` over `(opcode, lines)` branches."""
    if len(branches) <= 3:
        lines = []
        for i, (opcode, body) in enumerate(branches):
            lines.append(f"{indent}{'if' if i == 0 else 'elif'} op == {opcode}:")
            lines += [f"{indent}    {line}" for line in body]
        return lines
    middle = len(branches) // 2
    return [f"{indent}if op < {branches[middle][0]}:"] + \
        _dispatch(branches[:middle], indent + "    ") + \
        [f"{indent}else:"] + _dispatch(branches[middle:], indent + "    ")
