"""The llvm code shape: a long scalar Wengert list printed as LLVM IR.

Step: list -> module source, the alternative to printing straight-line Python for
lists that Numba would need minutes to compile (about 3 ms per line). The IR goes
straight to LLVM, split into chunk functions of `CHUNK_ENTRIES` entries so that
optimization and code generation stay linear in the list's length; values that
cross chunks live in a `slots` work array. A small generated Python wrapper
allocates the arrays and calls the IR through a Numba intrinsic, so the kernel is
an ordinary (disk-cached, njit-callable) Numba dispatcher.

Each primitive's instruction is its registry record's `ir` template; values are
doubles (comparisons give 0.0/1.0, as on the tape). Input arrays of float64, of any
rank, are read through their strides; adjoint arrays are fresh C-contiguous zeros.

Chunks are compiled without optimization (`optnone`): on the long-traces graph
(benchmarks/long_graph.py) optimizing them made compilation 2-4x slower and calls no
faster, as calls are bound by the libm calls and by fetching the straight-line code.
"""
from __future__ import annotations

import hashlib
import itertools
import struct

from llvmlite import binding, ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .primitives.core import operand_text
from .runtime import shape_check_lines
from .wengert import Literal, Var, WengertList

CHUNK_ENTRIES = 500
WRAPPER_NAMES = ("IR", "ir_function", "run_ir", "slots", "status")   # user names avoid them

# Helpers and declarations every module carries (unused ones cost nothing).
PRELUDE = """\
declare double @llvm.fabs.f64(double)
declare double @llvm.sqrt.f64(double)
declare double @llvm.powi.f64.i32(double, i32)
declare double @pow(double, double)
declare double @exp(double)
declare double @log(double)
declare double @log1p(double)
declare double @expm1(double)
declare double @sin(double)
declare double @cos(double)
declare double @tan(double)
declare double @tanh(double)
declare double @sinh(double)
declare double @cosh(double)
declare double @asin(double)
declare double @acos(double)
declare double @atan(double)
declare double @atan2(double, double)
declare double @hypot(double, double)

define internal double @jitad_maximum(double %a, double %b) alwaysinline {
  %ge = fcmp oge double %a, %b
  %nan = fcmp uno double %a, 0.0
  %keep = or i1 %ge, %nan
  %r = select i1 %keep, double %a, double %b
  ret double %r
}

define internal double @jitad_minimum(double %a, double %b) alwaysinline {
  %le = fcmp ole double %a, %b
  %nan = fcmp uno double %a, 0.0
  %keep = or i1 %le, %nan
  %r = select i1 %keep, double %a, double %b
  ret double %r
}

define internal double @jitad_select(double %c, double %a, double %b) alwaysinline {
  %t = fcmp une double %c, 0.0
  %r = select i1 %t, double %a, double %b
  ret double %r
}

define internal double @jitad_sign(double %x) alwaysinline {
  %gt = fcmp ogt double %x, 0.0
  %lt = fcmp olt double %x, 0.0
  %eq = fcmp oeq double %x, 0.0
  %zero = select i1 %eq, double 0.0, double %x
  %neg = select i1 %lt, double -1.0, double %zero
  %r = select i1 %gt, double 1.0, double %neg
  ret double %r
}

define internal double @jitad_logaddexp(double %x, double %y) alwaysinline {
entry:
  %same = fcmp oeq double %x, %y
  br i1 %same, label %equal, label %apart
equal:
  %twice = fadd double %x, 0x3FE62E42FEFA39EF
  ret double %twice
apart:
  %d = fsub double %x, %y
  %pos = fcmp ogt double %d, 0.0
  br i1 %pos, label %xbig, label %notpos
xbig:
  %nd = fneg double %d
  %e1 = call double @exp(double %nd)
  %l1 = call double @log1p(double %e1)
  %r1 = fadd double %x, %l1
  ret double %r1
notpos:
  %le = fcmp ole double %d, 0.0
  br i1 %le, label %ybig, label %nan
ybig:
  %e2 = call double @exp(double %d)
  %l2 = call double @log1p(double %e2)
  %r2 = fadd double %y, %l2
  ret double %r2
nan:
  ret double %d
}
"""


def register(name: str) -> str:
    """A value's IR register (prefixed: user names never clash with the IR's own; a
    non-ASCII letter, valid in Python names but not in bare IR names, is written `$hex`)."""
    if name.isascii():
        return "%v." + name
    return "%v." + "".join(c if c.isascii() else f"${ord(c):x}" for c in name)


def constant(value) -> str:
    """An IR double constant, exact (hexadecimal bits)."""
    return "0x%016X" % struct.unpack("<Q", struct.pack("<d", float(value)))[0]


class _Layout:
    """Where every value lives: `slots` indices for scalar inputs, for values used in a
    later chunk and for scalar outputs; input/adjoint array numbers for the arrays."""

    def __init__(self, wengert: WengertList):
        self.arrays = [v for v in wengert.inputs if v.ndim > 0]
        self.array_number = {v.name: j for j, v in enumerate(self.arrays)}
        self.region: dict = {}          # adjoint array name -> input array it is shaped like
        self.slot: dict = {}
        defined = {v.name: -1 for v in wengert.inputs if v.ndim == 0}
        for v in wengert.inputs:
            if v.ndim == 0:
                self._add_slot(v.name)
        for i, e in enumerate(wengert.entries):
            if e.prim.name in ("full_like", "index_add"):
                self.region[e.out.name] = e.ins[0].name if e.prim.name == "full_like" \
                    else self.region[e.ins[0].name]
            chunk = i // CHUNK_ENTRIES
            for a in e.ins:
                if isinstance(a, Var) and a.ndim == 0 and defined[a.name] != chunk:
                    self._add_slot(a.name)
            defined[e.out.name] = chunk
        for a in wengert.outputs:
            if isinstance(a, Var) and a.ndim == 0:
                self._add_slot(a.name)
        self.adjoint_inputs = sorted({self.array_number[r] for r in self.region.values()})
        self.adjoint_number = {j: k for k, j in enumerate(self.adjoint_inputs)}

    def _add_slot(self, name: str) -> None:
        self.slot.setdefault(name, len(self.slot))

    def strides(self, j: int) -> str:
        """Array j's byte strides, one parameter (or argument) per axis."""
        return "".join(f", i64 %s{j}.{d}" for d in range(self.arrays[j].ndim))

    def parameters(self) -> str:
        arrays = "".join(f", i8* noalias nocapture readonly %a{j}{self.strides(j)}"
                         for j in range(len(self.arrays)))
        adjoints = "".join(f", double* noalias nocapture %o{k}"
                           for k in range(len(self.adjoint_inputs)))
        return f"double* noalias nocapture %slots{arrays}{adjoints}"

    def arguments(self) -> str:
        arrays = "".join(f", i8* %a{j}{self.strides(j)}" for j in range(len(self.arrays)))
        adjoints = "".join(f", double* %o{k}" for k in range(len(self.adjoint_inputs)))
        return f"double* %slots{arrays}{adjoints}"


def _chunk(entries, layout: _Layout, symbol: str) -> list:
    """One chunk function: loads what earlier chunks left in slots, computes in registers,
    stores what later chunks or the wrapper read; a failed guard returns its id + 1."""
    body: list = []
    loaded: set = set()
    defined: dict = {}          # values computed here, in order
    counter = itertools.count()

    def operand(a) -> str:
        if isinstance(a, Literal):
            return constant(a.value)
        r = register(a.name)
        if a.name not in loaded and a.name not in defined:
            body.append(f"  {r}.p = getelementptr double, double* %slots, "
                        f"i64 {layout.slot[a.name]}")
            body.append(f"  {r} = load double, double* {r}.p")
            loaded.add(a.name)
        return r

    for e in entries:
        name, out = e.prim.name, register(e.out.name)
        if name == "full_like":
            continue
        if name == "getitem":
            j = layout.array_number[e.ins[0].name]
            offset = "0"
            for d, (i, n) in enumerate(zip(e.params["index"], e.ins[0].shape)):
                body += [f"  {out}.o{d} = mul i64 %s{j}.{d}, {i % n}",
                         f"  {out}.t{d} = add i64 {offset}, {out}.o{d}"]
                offset = f"{out}.t{d}"
            body += [f"  {out}.b = getelementptr i8, i8* %a{j}, i64 {offset}",
                     f"  {out}.p = bitcast i8* {out}.b to double*",
                     f"  {out} = load double, double* {out}.p"]
        elif name == "index_add":
            array = layout.array_number[layout.region[e.out.name]]
            k = layout.adjoint_number[array]
            index = _flat_index(e.params["index"], layout.arrays[array].shape)
            update = operand(e.ins[1])
            t = next(counter)
            body += [f"  %acc{t}.p = getelementptr double, double* %o{k}, i64 {index}",
                     f"  %acc{t} = load double, double* %acc{t}.p",
                     f"  %acc{t}.new = fadd double %acc{t}, {update}",
                     f"  store double %acc{t}.new, double* %acc{t}.p"]
        elif name == "guard":
            t = next(counter)
            expected = constant(1.0 if e.params["expected"] else 0.0)
            body += [f"  %guard{t} = fcmp une double {operand(e.ins[0])}, {expected}",
                     f"  br i1 %guard{t}, label %failed{t}, label %held{t}",
                     f"failed{t}:", f"  ret i64 {e.params['id'] + 1}", f"held{t}:"]
        else:
            operands = [operand(a) for a in e.ins]
            instruction = e.prim.ir.format(*operands, **e.params)
            if instruction.startswith("fcmp"):
                body += [f"  {out}.c = {instruction}",
                         f"  {out} = uitofp i1 {out}.c to double"]
            else:
                body.append(f"  {out} = {instruction}")
        if name not in ("index_add", "guard"):
            defined[e.out.name] = True
    for name in defined:
        if name in layout.slot:
            r = register(name)
            body += [f"  {r}.s = getelementptr double, double* %slots, i64 {layout.slot[name]}",
                     f"  store double {r}, double* {r}.s"]
    return [f"define internal i64 @{symbol}({layout.parameters()}) noinline optnone nounwind {{",
            "entry:", *body, "  ret i64 0", "}", ""]


def _flat_index(index: tuple, shape: tuple) -> int:
    """The position of element `index` (negative entries count from the end) in a
    C-contiguous array of `shape`."""
    flat = 0
    for i, n in zip(index, shape):
        flat = flat * n + i % n
    return flat


def _element(index: tuple, shape: tuple) -> bool:
    """Does `index` pick one element of an array of `shape` (an int per axis)?"""
    return len(index) == len(shape) and all(type(i) is int for i in index)


def encodable(wengert: WengertList) -> bool:
    """Lists this shape can print: scalars, element reads of float64 input arrays of any
    rank, element updates of adjoint arrays that start as zeros shaped like such an
    input, and scalar primitives with an `ir` template (and guards)."""
    arrays = {v.name for v in wengert.inputs if v.ndim > 0 and v.dtype == "float64"}
    if any(v.ndim > 0 and v.name not in arrays for v in wengert.inputs):
        return False
    adjoints = set()
    for e in wengert.entries:
        name = e.prim.name
        if name == "getitem":
            ok = e.ins[0].name in arrays and _element(e.params["index"], e.ins[0].shape)
        elif name == "full_like":
            ok = isinstance(e.ins[0], Var) and e.ins[0].name in arrays and e.ins[1] == Literal(0.0)
            adjoints.add(e.out.name)
        elif name == "index_add":
            ok = isinstance(e.ins[0], Var) and e.ins[0].name in adjoints and e.ins[1].ndim == 0 \
                and _element(e.params["index"], e.ins[0].shape)
            adjoints.add(e.out.name)
        else:
            ok = (name == "guard" or e.prim.ir is not None) and e.out.shape == () \
                and all([a.shape == () for a in e.ins])
        if not ok:
            return False
    return all(not isinstance(a, Var) or a.ndim == 0 or a.name in adjoints
               for a in wengert.outputs)


def print_ir(wengert: WengertList, symbol: str) -> tuple:
    """(IR module text whose entry point is `@symbol`, layout)."""
    layout = _Layout(wengert)
    entries = wengert.entries
    chunks = [entries[i:i + CHUNK_ENTRIES] for i in range(0, len(entries), CHUNK_ENTRIES)]
    lines = [PRELUDE]
    calls = []
    for k, chunk in enumerate(chunks):
        lines += _chunk(chunk, layout, f"{symbol}_{k}")
        calls += [f"  %status{k} = call i64 @{symbol}_{k}({layout.arguments()})",
                  f"  %failed{k} = icmp ne i64 %status{k}, 0",
                  f"  br i1 %failed{k}, label %exit{k}, label %next{k}",
                  f"exit{k}:", f"  ret i64 %status{k}", f"next{k}:"]
    lines += [f"define i64 @{symbol}({layout.parameters()}) {{", "entry:", *calls,
              "  ret i64 0", "}"]
    return "\n".join(lines) + "\n", layout


def print_module(wengert: WengertList, fn_name: str, docstring: str, label: dict) -> str:
    """The module source: the IR text, the intrinsic calling it, and the Python wrapper
    that checks the input arrays' lengths (the IR reads elements at offsets fixed by the
    trace), allocates slots and adjoint arrays and returns like every other kernel. The
    IR's entry point is named by a hash of the IR (linked symbols must never collide).
    `label`: the printed name of each value (codegen.labels)."""
    text, layout = print_ir(wengert, "jitad_kernel")
    symbol = "jitad_" + hashlib.sha256(text.encode()).hexdigest()[:24]
    text = text.replace("@jitad_kernel", f"@{symbol}")
    params = [label[v.name] for v in wengert.inputs]
    arrays = [label[v.name] for v in layout.arrays]
    indexed = {e.ins[0].name for e in wengert.entries if e.prim.name == "getitem"} | {
        layout.region[e.out.name] for e in wengert.entries if e.prim.name == "index_add"}
    body = [line for a, v in zip(arrays, layout.arrays) if v.name in indexed
            for line in shape_check_lines(v.name, a, v.shape)]
    body += [f"slots = np.empty({max(len(layout.slot), 1)})"]
    body += [f"slots[{layout.slot[v.name]}] = {label[v.name]}" for v in wengert.inputs
             if v.ndim == 0]
    adjoint_of = {layout.array_number[layout.region[a.name]]: label[a.name]
                  for a in wengert.outputs if isinstance(a, Var) and a.ndim == 1}
    adjoints = [adjoint_of.get(j, f"adjoint{j}") for j in layout.adjoint_inputs]
    body += [f"{a} = np.zeros({arrays[j]}.shape)"
             for a, j in zip(adjoints, layout.adjoint_inputs)]
    body += [f"status = run_ir({', '.join(['slots'] + arrays + adjoints)})",
             "if status != 0:", "    raise GuardFailed(status - 1)"]
    results = []
    for a in wengert.outputs:
        if isinstance(a, Literal):
            results.append(operand_text(Literal(float(a.value))))
        elif a.ndim == 0:
            results.append(f"slots[{layout.slot[a.name]}]")
        else:
            results.append(adjoints[layout.adjoint_number[
                layout.array_number[layout.region[a.name]]]])
    body.append(f"return {wengert.returned_text(results)}")
    return "\n".join([
        '"""Generated by jitad: edits are overwritten."""',
        "import numpy as np",
        "from jitad.errors import GuardFailed",
        "from jitad.runtime import ShapeChanged",
        "from jitad.llvm import ir_function",
        "",
        f"IR = r'''\n{text}'''",
        "",
        f"run_ir = ir_function(IR, {symbol!r}, {len(layout.arrays)})",
        "",
        "",
        f"def {fn_name}({', '.join(params)}):",
        f'    """{docstring}"""',
        *("    " + line.replace("\n", "\n    ") for line in body), ""])


def ir_function(text: str, symbol: str, n_arrays: int):
    """A Numba intrinsic `run_ir(slots, *input_arrays, *adjoint_arrays) -> status` that
    calls `@symbol` of the IR module `text` (parsed when Numba compiles a caller)."""

    @intrinsic
    def run_ir(typingctx, *arrays):
        signature = types.int64(types.StarArgTuple.from_types(arrays))

        def codegen(context, builder, sig, args):
            # Linked into the function being compiled: optimized and compiled to machine
            # code once, together with it (a separate library would be compiled twice).
            module = binding.parse_assembly(text)
            module.verify()
            context.active_code_library.add_llvm_module(module)
            values = cgutils.unpack_tuple(builder, args[0])
            views = [context.make_array(t)(context, builder, v)
                     for t, v in zip(sig.args[0].types, values)]
            byte_pointer = ir.IntType(8).as_pointer()
            call_args = [views[0].data]
            for t, view in zip(sig.args[0].types[1:1 + n_arrays], views[1:1 + n_arrays]):
                call_args += [builder.bitcast(view.data, byte_pointer)]
                call_args += [builder.extract_value(view.strides, d) for d in range(t.ndim)]
            call_args += [view.data for view in views[1 + n_arrays:]]
            function_type = ir.FunctionType(ir.IntType(64), [a.type for a in call_args])
            function = cgutils.get_or_insert_function(builder.module, function_type, symbol)
            return builder.call(function, call_args)

        return signature, codegen

    return run_ir
