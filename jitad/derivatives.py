"""Every derivative as a compiled object: forward mode, HVPs, dense Jacobians and Hessians.

Step: the API objects beside `jit_grad`. Each is a `JitGrad` (same keys, variants,
generated entries, staleness checks, disk store) whose call mode `build` dispatches on:
the traced list is transformed (transforms/derivatives.py) and printed; dense Jacobians
and Hessians add a generated loop that calls the transformed kernel once per direction,
all in one compiled call. Called on traced values, any of these objects (and `jit_grad`
objects) replay their transformed list into the outer trace, so derivatives nest.
"""
from __future__ import annotations

import functools
import inspect
import sys
import textwrap
import types

import numpy as np

from . import codegen, collector, compile as compiler, stats, tape, tracing
from .api import (JitGrad, _as_method, _entry, _fast_key, jit_grad, numpy_tier_applies,
                  returned, reverse_tape_applies, tape_only, tape_tier_applies)
from .errors import ArgumentError, NonScalarOutputError
from .tracing import Tracer, trace
from .transforms import simplify, value_and_grad
from .transforms.derivatives import hvp as hvp_list, jvp_list, tangent_list, vjp
from .wengert import Literal, Var, WengertList

COMPILED_LOOP_LINES = 2000     # kernels printed longer are looped over from Python
COLOURED_FROM = 64             # derivatives of this many columns or more may use a colouring
_JACOBIANS = ("jacobian_auto", "jacobian_fwd", "jacobian_rev")
_ARRAY_OUTPUTS = ("jvp",) + _JACOBIANS            # modes whose function may return an array
_DENSE = ("hessian",) + _JACOBIANS                 # modes looping over sizes fixed at build
_SINGLE_KERNEL = ("jvp", "hvp")                   # modes whose kernel is the whole call
# An hvp list (forward over reverse) is at least about this many times longer than the
# traced list (6.8 on the long-traces graph): where that is over LLVM's limit, the first
# tier of `_reverse_over_forward` stays (`_specialized_unless_tape`).
HVP_GROWTH = 4
_WHAT = {"jvp": "Value and directional derivative (forward mode)",
         "hvp": "Hessian-vector product (forward over reverse)",
         "hessian": "Dense Hessian (one Hessian-vector product per column)",
         "jvp_batch": "Value and directional derivatives along each row of the tangents",
         "jacobian_fwd": "Dense Jacobian (forward mode, one column per input)",
         "jacobian_rev": "Dense Jacobian (reverse mode, one row per output)"}
_WHAT_COLOURED = {
    "hessian": "Dense Hessian (one Hessian-vector product per colour of its sparsity pattern)",
    "jacobian_fwd": "Dense Jacobian (forward mode, one product per colour of its sparsity "
                    "pattern)",
    "jacobian_rev": "Dense Jacobian (reverse mode, one product per colour of its rows' "
                    "sparsity pattern)"}


# ---------------------------------------------------------------- lists

def is_batch(wengert, wrt) -> bool:
    """Does a jvp list get a batch of tangents (one per row) after its input?"""
    return len(wrt) == 1 and \
        wengert.inputs[wrt[0] + 1].ndim == wengert.inputs[wrt[0]].ndim + 1


def jacobian_mode(wengert, wrt) -> str:
    """Forward mode when the inputs have no more entries than the output, else reverse."""
    n = sum(int(np.prod(wengert.inputs[i].shape)) for i in wrt)
    m = int(np.prod(wengert.outputs[0].shape))
    return "jacobian_fwd" if n <= m else "jacobian_rev"


def kernel_list(wengert, mode: str, wrt: list):
    """The list a mode's kernel computes (for Jacobians and Hessians: per direction, the
    tangent or cotangent being the last input). `wengert` is the simplified traced list;
    for "jvp" and "hvp" each differentiated input is followed by its tangent input."""
    if mode == "value":
        return wengert
    if mode == "value_and_grad":
        return simplify(value_and_grad(wengert, wrt))
    if mode == "jvp":
        return simplify(jvp_list(wengert, wrt, [i + 1 for i in wrt]))
    if mode == "hvp":
        return simplify(hvp_list(wengert, wrt, [i + 1 for i in wrt]))
    if mode == "hessian":
        return simplify(hvp_list(wengert, wrt))
    if mode in ("jacobian_fwd", "jvp_batch"):
        return simplify(jvp_list(wengert, wrt))
    return simplify(vjp(wengert, wrt))


def split_mode(mode: str) -> tuple:
    """("hessian", True) for "hessian_blocks": a tuple `argnums` asks for a tuple of blocks."""
    base = mode.removesuffix("_blocks")
    return base, base != mode


def build(variant, mode, wrt, fn_name, code_shape="auto", for_reading=True):
    """`api.build` for the derivative modes: (source, function name, kernel list, shape);
    the source is None for the tape shape unless `for_reading`."""
    analysed = variant.analysed.pop((mode, tuple(wrt), code_shape), None) or \
        _analysed(variant, mode, wrt, code_shape)
    return _printed(analysed, variant, wrt, fn_name, for_reading=for_reading)


def first_analysis(variant, mode, wrt, code_shape="auto"):
    """`_analysed` for a first tier, kept on the variant for the specialized build to print
    (`build`, in the background or at once where no first tier applies): it runs once."""
    analysed = _analysed(variant, mode, wrt, code_shape)
    variant.analysed[(mode, tuple(wrt), code_shape)] = analysed
    return analysed


def numpy_build(analysed, variant, wrt, fn_name):
    """For the NumPy tier (see numpy_tier.py), from a `first_analysis`: (source printed for
    NumPy, function name, kernel list, code shape, the (dtype, rank) structure the function
    returns or None for the kernel list's outputs), or None where the tier does not apply
    (`api.numpy_tier_applies`, or a kernel printed other than as straight code or loops).
    The loop over directions runs as Python around the kernel; a loop over array elements
    (scalar entries, which Numba compiles in seconds too) is one here as well."""
    traced, mode, blocks, kernel, _, shape, _ = analysed
    if not numpy_tier_applies(kernel) or shape not in ("straight", "loops"):
        return None
    source, name, kernel, _ = _printed(analysed, variant, wrt, fn_name, vectorized=True)
    return source, name, kernel, shape, _returned_kinds(traced, mode, blocks, kernel, wrt)


def _analysed(variant, mode, wrt, code_shape):
    """(traced list simplified, mode resolved, blocks, kernel list, colouring plan, code
    shape, runs) of a derivative mode."""
    wrt = list(wrt)
    mode, blocks = split_mode(mode)
    with stats.stage("analysis"):
        traced = simplify(variant.trace.wengert)
        if mode == "jacobian_auto":
            mode = jacobian_mode(traced, wrt)
        if mode == "jvp" and is_batch(traced, wrt):
            mode = "jvp_batch"
        kernel = kernel_list(traced, mode, wrt)
        plan = _colouring(mode, traced, wrt)
        shape, runs = codegen.choose_shape(kernel, code_shape)
        if shape == "tape" and mode not in _SINGLE_KERNEL:     # loops call Numba kernels
            shape, runs = codegen.choose_shape(kernel, "loops")
    return traced, mode, blocks, kernel, plan, shape, runs


def _printed(analysed, variant, wrt, fn_name, vectorized=False, for_reading=True):
    """(source, function name, kernel list, shape) of an `_analysed` mode (`vectorized`:
    printed for NumPy, the loop over directions as Python; the tape shape's source is None
    unless `for_reading`)."""
    traced, mode, blocks, kernel, plan, shape, runs = analysed
    wrt = list(wrt)
    inputs = ", ".join(f"{v.name}: {v.type_text()}" for v in variant.trace.wengert.inputs)
    wrt_names = ", ".join(variant.trace.wengert.inputs[i].name for i in wrt)
    what = _WHAT[mode] if plan is None else _WHAT_COLOURED[mode]
    doc = f"{what} of {traced.name} ({traced.loc}), specialized for {inputs}; " \
          f"d/d({wrt_names})."
    base = codegen.identifier(fn_name)
    with stats.stage("codegen"):
        if mode in _SINGLE_KERNEL:
            name = f"{base}_{mode}"
            if shape == "tape" and not for_reading:
                return None, name, kernel, shape
            return codegen.generate(kernel, name, doc, shape, runs, vectorized), name, kernel, \
                shape
        inner = f"{base}_{ {'hessian': 'hvp', 'jacobian_rev': 'vjp'}.get(mode, 'jvp') }"
        source = codegen.generate(kernel, inner, f"Called by {base}_{mode} per direction.",
                                  shape, runs, vectorized)
        name = f"{base}_{mode}"
        python = vectorized or source.count("\n") > COMPILED_LOOP_LINES
        loop = _loop_source(mode, name, inner, traced, kernel, wrt, blocks, doc, python) \
            if plan is None else _coloured_source(mode, name, inner, traced, kernel, wrt,
                                                  blocks, doc, plan)
    return source + "\n\n" + loop, name, kernel, shape


def _tape_only(traced) -> bool:
    """Would an hvp list of the traced list `traced` be over LLVM's limit without re-rolling
    (`api.tape_only`, HVP_GROWTH)?"""
    return tape_only(traced, HVP_GROWTH)


def _tape_loop(traced, mode, blocks, kernel, product, wrt, fn_name, runtime_args):
    """A first tier for a dense derivative of long scalar code: its loop over directions run
    as Python (a NumpyKernel), calling `product` (a tape of the list `kernel`, whose inputs
    are the traced list's and a direction's) once per direction."""
    name = f"{codegen.identifier(fn_name)}_{mode}"
    doc = f"{_WHAT[mode]} of {traced.name}, each product on jitad's tape (a first tier)."
    loop = _loop_source(mode, name, "_jitad_tape", traced, kernel, wrt, blocks, doc, True)
    first = compiler.numpy_kernel(loop, name, tuple(runtime_args), kernel,
                                  _returned_kinds(traced, mode, blocks, kernel, wrt),
                                  helpers={"_jitad_tape": product})
    first.tier = "tape"
    return first


def _returned_kinds(traced, mode, blocks, kernel, wrt):
    """The (dtype, rank) structure a derivative mode's function returns; None for "jvp" and
    "hvp", whose function is the kernel (it returns the kernel list's outputs)."""
    if mode in ("jvp", "hvp"):
        return None
    f64 = np.dtype(np.float64)
    xs, ys = [traced.inputs[i].ndim for i in wrt], traced.outputs[0].ndim
    if mode == "jvp_batch":
        value = kernel.outputs[0]
        return (np.dtype(value.dtype), value.ndim), (f64, ys + 1)
    if mode == "hessian":
        rows = tuple(tuple((f64, xs[j] + xs[i]) for i in range(len(wrt)))
                     for j in range(len(wrt)))
        return rows if blocks else rows[0][0]
    parts = tuple((f64, ys + x) for x in xs)
    return parts if blocks else parts[0]


def _colouring(mode, traced, wrt):
    """(rows, cols, colours) of a Hessian or Jacobian worth assembling from one product per
    colour (at most half as many colours as seeded columns, or rows in reverse mode) rather
    than one per column (row), when its pattern is the same for every call (see
    `sparse.fixed_colouring`); else None. Below COLOURED_FROM seeds a compiled loop over
    all of them is quicker than Python over a few. The pattern's analysis stops early on
    dense derivatives (after k**2 / 8 pairs, or 64 k, for k seeds: pairs are counted with
    repeats)."""
    kind = {"hessian": "hessian", "jacobian_fwd": "columns", "jacobian_rev": "rows"}.get(mode)
    if kind is None or any(traced.inputs[i].shape == () for i in wrt):
        return None
    k = int(np.prod(traced.outputs[0].shape)) if kind == "rows" else \
        sum(int(np.prod(traced.inputs[i].shape)) for i in wrt)
    if k < COLOURED_FROM:
        return None
    from . import sparse
    plan = sparse.fixed_colouring(traced, wrt, kind, max(k * k // 8, 64 * k))
    if plan is None or 2 * (int(plan[2].max(initial=-1)) + 1) > k:
        return None
    return plan


def _coloured_source(mode, name, inner, traced, kernel, wrt, blocks, doc, plan) -> str:
    """A dense Hessian or Jacobian assembled from one product per colour of its sparsity
    pattern (a star colouring for Hessians, after Gebremedhin, Manne and Pothen 2005; a
    distance-1 colouring of the columns, or in reverse mode of the rows, for Jacobians):
    the products, a row per colour, hold every nonzero. Run as Python: a few calls of the
    compiled kernel, two NumPy gathers."""
    from . import sparse
    rows, cols, colours = plan
    label = codegen.labels(WengertList(kernel.name, kernel.inputs, [], []))
    params = ", ".join(label[v.name] for v in traced.inputs)
    xs = [traced.inputs[i].shape for i in wrt]
    sizes = [int(np.prod(s)) for s in xs]
    ends, n, count = np.cumsum([0] + sizes).tolist(), sum(sizes), int(colours.max()) + 1
    hessian, reverse = mode == "hessian", mode == "jacobian_rev"
    ys = traced.outputs[0].shape
    m = n if hessian else int(np.prod(ys))
    if hessian:             # products (H S)[i, c]
        width = n
        read_from = sparse.layout(rows, cols, sparse.hessian_sources(rows, cols, colours),
                           (n, n))["gather"]
    elif reverse:           # products (S^T J)[c, j]
        width, read_from = n, colours[rows] * n + cols
    else:                   # products (J S)[i, c]
        width, read_from = m, colours[cols] * m + rows
    seeded = [ys] if reverse else xs
    seed_ends = [0, m] if reverse else ends
    directions = "SEED_out[c_out]" if len(seeded) == 1 and len(seeded[0]) == 1 else \
        ", ".join(f"SEED_out[c_out, {a}:{b}].reshape({s!r})"
                  for a, b, s in zip(seed_ends, seed_ends[1:], seeded))
    # The kernel returns (value, (S^T J_1, ...)) in reverse mode, (value, J S) in forward
    # mode, H S or (H S)_1, (H S)_2, ... for Hessians: one product row, or a part per input.
    parts = [f"r_out[1][{j}]" for j in range(len(wrt))] if reverse else \
        ["r_out[1]"] if not hessian else ["r_out"] if len(wrt) == 1 else \
        [f"r_out[{j}]" for j in range(len(wrt))]
    if len(parts) == 1:
        flat = len(ys if not (hessian or reverse) else xs[0]) == 1
        fills = [f"        P_out[c_out] = {parts[0] if flat else f'np.ravel({parts[0]})'}"]
    else:
        fills = [f"        P_out[c_out, {a}:{b}] = np.ravel({part})"
                 for part, a, b in zip(parts, ends, ends[1:])]
    block = [[f"np.ascontiguousarray(D_out[{ends[j] if hessian else ''}:"
              f"{ends[j + 1] if hessian else ''}, {ends[i]}:{ends[i + 1]}])"
              f".reshape({(xs[j] if hessian else ys) + xs[i]!r})"
              for i in range(len(wrt))] for j in range(len(wrt) if hessian else 1)]
    if len(wrt) == 1 and not blocks:
        whole = (xs[0] if hessian else ys) + xs[0]
        result = "D_out" if whole == (m, n) else f"D_out.reshape({whole!r})"
    elif hessian:
        result = _tuple_text([_tuple_text(row) for row in block])
    else:
        result = _tuple_text(block[0])
    what = ("Hessian", "Hessian-vector products", "columns", "a star") if hessian else \
        ("Jacobian", "vector-Jacobian products", "rows", "a distance-1") if reverse else \
        ("Jacobian", "Jacobian-vector products", "columns", "a distance-1")
    return (
        "_jitad_python_loop = True  # run as Python: calls the compiled kernel once per "
        "colour\nimport numpy as np\n\n"
        f"# The {what[0]}'s sparsity pattern, found on the Wengert list: {len(rows)} nonzeros. "
        f"Its\n# {what[2]} take {count} colours ({what[3]} colouring); the {what[1]} "
        f"seeded with\n# each colour's {what[2]} hold them all: D.flat[AT_out] = "
        "products.flat[FROM_out].\n"
        + _int_array_text("COLOUR_out", colours)
        + _int_array_text("AT_out", rows * n + cols)
        + _int_array_text("FROM_out", read_from)
        + f"SEED_out = (COLOUR_out == np.arange({count})[:, None]).astype(np.float64)\n\n\n"
        f"def {name}({params}):\n    \"\"\"{codegen.docstring_text(doc)}\"\"\"\n"
        f"    P_out = np.empty(({count}, {width}))\n    for c_out in range({count}):\n"
        f"        r_out = {inner}({params}, {directions})\n" + "\n".join(fills) + "\n"
        f"    D_out = np.zeros({m * n})\n    D_out[AT_out] = P_out.ravel()[FROM_out]\n"
        f"    D_out = D_out.reshape(({m}, {n}))\n    return {result}\n")


def _int_array_text(name: str, values) -> str:
    """`name = np.array([...])` wrapped at 92 columns."""
    body = textwrap.fill(", ".join(map(str, np.asarray(values).tolist())), 88,
                         initial_indent=" " * 4, subsequent_indent=" " * 4)
    return f"{name} = np.array([\n{body}], dtype=np.int64)\n"


def _loop_source(mode, name, inner, traced, kernel, wrt, blocks, doc, python) -> str:
    """A function looping over unit directions, calling `inner` (the kernel) once each; run
    as Python when `python`: Numba would inline a long kernel into its loop and optimize it
    again (seconds per thousand lines), and such a kernel runs long enough for a Python
    loop to cost nothing."""
    label = codegen.labels(WengertList(kernel.name, kernel.inputs, [], []))
    params = ", ".join(label[v.name] for v in traced.inputs)
    head = ("_jitad_python_loop = True  # run as Python: calls the compiled kernel per "
            "direction\n" if python else "") + f"import numpy as np\n\n\ndef {name}({params}):\n" \
        f'    """{codegen.docstring_text(doc)}"""\n'
    if mode == "jvp_batch":             # the tangents are the rows of the input after x
        v = label[traced.inputs[wrt[0] + 1].name]
        shape = traced.outputs[0].shape
        rows = "T_out" if shape == () else f"T_out.reshape((k, {int(np.prod(shape))}))"
        copy = _copy_lines("T2_out[j_out, m_out]" if shape else "T2_out[j_out]", "t_out", shape,
                           python)
        return head + (
            f"    k = {v}.shape[0]\n    y_out, t_out = {inner}({params}, {v}[0])\n"
            f"    T_out = np.empty((k,) + {shape!r})\n    T2_out = {rows}\n"
            f"    for j_out in range(k):\n"
            f"        if j_out:\n            t_out = {inner}({params}, {v}[j_out])[1]\n"
            + "".join(f"        {line}\n" for line in copy) + "    return y_out, T_out\n")
    return head + _dense_body(mode, inner, params, traced, wrt, blocks, python)


def _dense_body(mode, inner, params, traced, wrt, blocks, python) -> str:
    """Fill a dense Jacobian or Hessian: per unit direction of each seed (the tangent of a
    differentiated input; in reverse mode the output's cotangent) one call of `inner`, whose
    results are one row (column, in forward mode) of each block `B…_out` (the raveled
    derivative). Returns the block, or with `blocks` a tuple of them (a Hessian: of rows)."""
    xs, ys, k = [traced.inputs[i].shape for i in wrt], traced.outputs[0].shape, len(wrt)
    seeds = [ys] if mode == "jacobian_rev" else xs
    size = lambda shape: int(np.prod(shape))       # noqa: E731
    arrays, fills = {}, [[] for _ in seeds]          # block -> (2-d shape, final shape)
    for j in range(k):
        for i in range(k):
            if mode == "hessian":           # seed j's product, part i: row of block (j, i)
                arrays[f"B{j}_{i}_out"] = (size(xs[j]), size(xs[i])), xs[j] + xs[i]
                picked = "r_out" if k == 1 else f"r_out[{i}]"
                fills[j] += _copy_lines(f"B{j}_{i}_out[k_out, m_out]", picked, xs[i], python)
        if mode == "jacobian_fwd":
            arrays[f"B{j}_out"] = (size(ys), size(xs[j])), ys + xs[j]
            fills[j] += _copy_lines(f"B{j}_out[m_out, k_out]", "r_out[1]", ys, python)
        elif mode == "jacobian_rev":
            arrays[f"B{j}_out"] = (size(ys), size(xs[j])), ys + xs[j]
            fills[0] += _copy_lines(f"B{j}_out[k_out, m_out]", f"r_out[1][{j}]", xs[j], python)
    lines = [f"    d{j}_out = {'0.0' if s == () else f'np.zeros({size(s)})'}"
             for j, s in enumerate(seeds)]
    lines += [f"    {a} = np.empty({dims!r})" for a, (dims, _) in arrays.items()]
    directions = ", ".join(f"d{j}_out" if len(s) <= 1 else f"d{j}_out.reshape({s!r})"
                           for j, s in enumerate(seeds))
    for j, s in enumerate(seeds):
        unit = f"d{j}_out" if s == () else f"d{j}_out[k_out]"
        lines += [f"    for k_out in range({size(s)}):", f"        {unit} = 1.0",
                  f"        r_out = {inner}({params}, {directions})",
                  *(f"        {fill}" for fill in fills[j]), f"        {unit} = 0.0"]
    final = {a: f"{a}[0, 0]" if shape == () else a if shape == dims else
             f"{a}.reshape({shape!r})" for a, (dims, shape) in arrays.items()}
    if mode == "hessian":
        rows = [_tuple_text([final[f"B{j}_{i}_out"] for i in range(k)]) for j in range(k)]
        result = _tuple_text(rows) if blocks else final["B0_0_out"]
    else:
        result = _tuple_text([final[f"B{j}_out"] for j in range(k)]) if blocks \
            else final["B0_out"]
    return "\n".join(lines) + f"\n    return {result}\n"


def _copy_lines(target: str, value: str, shape: tuple, python: bool) -> list:
    """Lines storing the elements of `value` (of `shape`, raveled) at `target`, indexed by
    `m_out`: an element loop in compiled code (a NumPy row or column assignment makes Numba
    compile its shape-mismatch error path, about ten seconds), one assignment in a loop run
    as Python (`python`)."""
    if shape == ():
        return [f"{target.replace('m_out', '0')} = {value}"]
    flat = f"np.ravel({value})" if len(shape) > 1 else value
    if python:
        return [f"{target.replace('m_out', ':')} = {flat}"]
    return [f"v_out = {flat}", f"for m_out in range({int(np.prod(shape))}):",
            f"    {target} = v_out[m_out]"]


def _tuple_text(items) -> str:
    return f"({', '.join(items)}{',' if len(items) == 1 else ''})"


# ---------------------------------------------------------------- objects

class Grad(JitGrad):
    """`jitad.grad(f)`: the gradient function of `f` (a `jit_grad` object: compiled when
    called on values, inlined when called on traced values)."""

    def __repr__(self) -> str:
        return f"<jitad.grad of {self.__qualname__}, argnums={self.argnums!r}>"

    def __reduce__(self):
        return _rebuild, ("grad", self._origin, self._recipe())

    def _recipe(self):
        return {"argnums": self.argnums, "code_shape": self.code_shape, "tiers": self.tiers}

    def _bind(self, instance):
        """The gradient of the method bound to `instance` (see `JitGrad.__get__`)."""
        return _rebuild("grad", _method(self._origin, instance), self._recipe())


class Transformed(JitGrad):
    """A derivative of a function other than its gradient (see `jvp`, `hvp`, `hessian`,
    `jacobian`): a `JitGrad` whose calls run the `mode` kernel."""

    _trampolines_ok = False

    def __init__(self, fun, argnums, mode, factory, code_shape="auto", tangents=False,
                 options=None):
        self._origin, self._factory = fun, factory
        self._options = dict(options or {}, argnums=argnums, code_shape=code_shape)
        fun = _as_function(fun)
        if tangents:
            fun, argnums = _with_tangents(fun, argnums, factory)
        elif isinstance(argnums, tuple):    # JAX's convention: a tuple of blocks
            if len(set(argnums)) != len(argnums):
                raise ArgumentError(f"jitad.{factory}: argnums has a repeated index: "
                                    f"{argnums!r}")
            mode += "_blocks"
        super().__init__(fun, argnums, code_shape, tiers=self._options.get("tiers", True))
        self._tangents, self._mode = tangents, mode
        self._fast[mode] = {}

    def __repr__(self) -> str:
        return f"<jitad.{self._factory} of {self.__qualname__}, argnums=" \
               f"{self._options['argnums']!r}>"

    def __reduce__(self):
        module = sys.modules.get(self.__module__)
        if module is not None and getattr(module, self.__qualname__, None) is self:
            return self.__qualname__            # decorated at module level
        return _rebuild, (self._factory, self._origin, self._options)

    def __call__(self, *args, **kwargs):
        return self._call(self._mode, args, kwargs)

    def _install_entry(self, kernel, mode, args, variant) -> None:
        """Make this signature's entry the object's `__call__`: generated with the function's
        own parameters where it has no *args (keywords and defaults work, and other calls
        fall through to `_call`), else behind a check of the argument count."""
        if not self._varargs and not any(n.startswith("_jitad") for n in self._names):
            entry, _ = _entry(kernel, mode, args, self._names, self._defaults,
                              variant.trace.consts, variant.reads, self._single,
                              functools.partial(self._entry_missed, mode), variant.trace.aux)
            self._fast[mode][_fast_key(args)] = entry
            type(self).__call__ = staticmethod(_as_method(entry, self, Transformed.__call__))
            return
        super()._install_entry(kernel, mode, args, variant)
        entry, count, slow = self._fast[mode][_fast_key(args)], len(args), self._call

        def call(*args, **kwargs):
            if len(args) == count and not kwargs:
                return entry(*args)
            return slow(mode, args, kwargs)
        type(self).__call__ = staticmethod(call)

    def _forget_entries(self, stale: set) -> None:
        type(self).__call__ = Transformed.__call__
        super()._forget_entries(stale)

    def wengert(self, *args, **kwargs):
        """The transformed list for these argument kinds (for Jacobians and Hessians: the
        list the generated loop calls once per direction)."""
        variant, _ = self._variant(args, kwargs)
        return self._build(variant)[2]

    def source(self, *args, **kwargs) -> str:
        """The generated Python source for these argument kinds."""
        variant, _ = self._variant(args, kwargs)
        return self._build(variant)[0]

    def njit_kernel(self, *args, **kwargs):
        """The compiled Numba dispatcher for these argument kinds, callable from a user's
        own `@numba.njit` code with the runtime arguments, in order. (Where calls loop from
        Python around the compiled product, the loop is compiled here, on first use.)"""
        return self._standalone(self._mode, args, kwargs)

    def _build(self, variant):
        return build(variant, self._mode, variant.wrt, self.__name__, self.code_shape)

    def _compiled(self, variant, mode, runtime_args):
        """A first tier (`_reverse_over_forward`, `_first_tier`) serving first calls while the
        specialized kernel compiles in the background, where tiers are on and one applies;
        else the specialized kernel now (`_reverse_over_forward`'s where the specialized code
        would be a tape, else `JitGrad._compiled`'s)."""
        key = self._build_key(variant, mode)
        first = None
        wanted = self._first_tier_wanted(variant, key)
        with collector.pause():
            kernel = self._reverse_over_forward(variant, mode, runtime_args, key, wanted)
            if kernel is not None:
                return kernel
            if wanted:
                first = self._first_tier(variant, mode, runtime_args)
        if first is None:
            return super()._compiled(variant, mode, runtime_args)
        return self._in_background(variant, mode, first, functools.partial(
            self._stored_and_specialized, variant, mode, runtime_args, key))

    def _reverse_over_forward(self, variant, mode, runtime_args, key, tiered):
        """For an hvp or a dense Hessian (not a coloured one) of long scalar code
        (`api.reverse_tape_applies`), a kernel from the traced list's `tangent_list` alone
        (`tape.HvpTapeKernel`, a Hessian calling it per direction: `_tape_loop`; no
        forward-over-reverse list: at 10,000 ops of the long-traces graph its analysis
        takes 8 s, the tangent list 2 s). `tiered`: a first tier, the background job
        building the specialized code (`_specialized_unless_tape`); else the specialized
        kernel itself where that job would keep it (`_tape_only`). Else None."""
        base, blocks = split_mode(mode)
        wrt = list(variant.wrt)
        if base not in ("hvp", "hessian") or self.code_shape != "auto":
            return None
        with stats.stage("analysis"):
            traced = simplify(variant.trace.wengert)
            if not reverse_tape_applies(traced) or not (tiered or _tape_only(traced)) or \
                    _colouring(base, traced, wrt) is not None:
                return None
            tangent = simplify(tangent_list(traced, wrt, [i + 1 for i in wrt]
                                            if base == "hvp" else None))
        if not tape.reverse_encodable(tangent):
            return None
        with stats.stage("codegen"):                # (the tape's encoding)
            kernel = compiler.reverse_tape_kernel(tangent, wrt, tape.HvpTapeKernel)
            if base == "hessian":
                kernel = _tape_loop(traced, base, blocks, tangent, kernel, wrt, self.__name__,
                                    runtime_args)
        if not tiered:
            self._tape_stays(variant)
            return kernel
        return self._in_background(variant, mode, kernel, functools.partial(
            self._specialized_unless_tape, variant, mode, runtime_args, key, traced))

    def _specialized_unless_tape(self, variant, mode, runtime_args, key, traced):
        """(A background job's work) `_stored_and_specialized`, or None (the first tier stays)
        where the hvp list would be over LLVM's limit without re-rolling (`_tape_only`): an
        hvp's specialized code would be a slower tape, after 2 minutes of analysis at
        100,000 ops; a Hessian's, loops printed from millions of entries for Numba."""
        with collector.pause(), stats.stage("analysis"):
            if _tape_only(traced):
                return self._tape_stays(variant)
        return self._stored_and_specialized(variant, mode, runtime_args, key)

    def _first_tier(self, variant, mode, runtime_args):
        """The NumPy tier (`numpy_build`) for array code; for long scalar code (where Numba
        would take seconds: `api.tape_tier_applies`) the tape, running a jvp or hvp, or each
        product of a dense derivative's loop (`_tape_loop`); else None."""
        analysed = first_analysis(variant, mode, variant.wrt, self.code_shape)
        built = numpy_build(analysed, variant, variant.wrt, self.__name__)
        record = stats.current()
        with stats.stage("codegen"):
            if built is not None:
                source, name, kernel, record.shape, expected = built
                return compiler.numpy_kernel(source, name, tuple(runtime_args), kernel,
                                             expected)
            _, resolved, _, kernel, plan, record.shape, _ = analysed
            if not tape_tier_applies(kernel):
                return None
            if resolved in _SINGLE_KERNEL:
                return compiler.tape_kernel(kernel)
            if resolved in _DENSE and plan is None:
                traced, _, blocks = analysed[:3]
                return _tape_loop(traced, resolved, blocks, kernel, compiler.tape_kernel(kernel),
                                  list(variant.wrt), self.__name__, runtime_args)
        return None

    def _switch(self, variant, mode, first, kernel) -> bool:
        stale = super()._switch(variant, mode, first, kernel)
        if stale:       # `__call__` may be an entry of `first`: back to the full path
            type(self).__call__ = Transformed.__call__
        return stale

    def _classify(self, args):
        keys, runtime, names = super()._classify(args)
        if self._mode.endswith("_blocks"):
            repeated(self._wrt, len(args), f"jitad.{self._factory}")
        for i in (self._wrt if self._tangents else ()):
            t = i % len(args) + 1
            batch = self._mode == "jvp" and len(self._wrt) == 1 and \
                np.ndim(args[t]) == np.ndim(args[i]) + 1 and np.shape(args[t])[0] > 0
            shape = np.shape(args[t])[1:] if batch else np.shape(args[t])
            if runtime[t] is None or shape != np.shape(args[i]) or \
                    not (batch or keys[t] == keys[i]):
                raise ArgumentError(
                    f"jitad.{self._factory} of {self.__name__}: the tangent '{names[t]}' must "
                    f"be a float or float64 array shaped like '{names[i]}' "
                    f"{np.shape(args[i])} (jvp also takes a batch of such rows), got "
                    f"{type(args[t]).__name__} of shape {np.shape(args[t])}")
        return keys, runtime, names

    def _bind(self, instance):
        """This derivative of the method bound to `instance` (see `JitGrad.__get__`)."""
        return _rebuild(self._factory, _method(self._origin, instance), self._options)

    def _check_output(self, traced) -> None:
        if self._tangents:      # (errors name the user's function, not `_with_tangents`)
            self._name_user_function(traced.wengert)
        (out,) = traced.wengert.outputs
        if split_mode(self._mode)[0] not in _ARRAY_OUTPUTS:
            return super()._check_output(traced)
        if isinstance(out, (Var, Literal)) and out.dtype == "float64":
            return
        what = f"{out.dtype} values" if isinstance(out, (Var, Literal)) else returned(out)
        raise NonScalarOutputError(
            f"{self.__name__} must return one float array or float for jitad.{self._factory}, "
            f"but it returned {what} (no derivative flows through comparisons or integers; "
            f"return a tuple's parts from separate functions)"
            f"\n  at {self._output_line(traced, out)}")

    def _trace(self, args, key, runtime, names, exact=False, load=True):
        # Dense Jacobians and Hessians loop over sizes known when they are built.
        exact = exact or split_mode(self._mode)[0] in _DENSE
        variant = super()._trace(args, key, runtime, names, exact, load)
        if self._tangents:          # traced through `_with_tangents`: name the user's function
            self._name_user_function(variant.trace.wengert)
        return variant

    def _name_user_function(self, wengert) -> None:
        wengert.name, wengert.loc = tracing.function_location(_user_function(self._origin))


def repeated(wrt, count: int, what: str) -> None:
    """An ArgumentError where two of `wrt` name one of `count` arguments (`(0, -2)` of two):
    the blocks of a Jacobian or Hessian are one per differentiated argument."""
    seen = {}
    for i in wrt:
        if i % count in seen:
            raise ArgumentError(f"{what}: argnums has a repeated index: {tuple(wrt)!r} "
                                f"({seen[i % count]} and {i} are both argument {i % count} of "
                                f"{count})")
        seen[i % count] = i


def _user_function(fun):
    """The user's function behind (nested) jitad objects."""
    while isinstance(fun, JitGrad):
        fun = getattr(fun, "_origin", fun.fun)
    return fun


def _rebuild(factory, origin, options):
    return globals()[factory](origin, **options)


def _method(fun, instance):
    """`fun` bound to `instance` (a jitad object binds itself, see `JitGrad.__get__`)."""
    return fun.__get__(instance) if isinstance(fun, JitGrad) else types.MethodType(fun, instance)


def _as_function(fun):
    """The function to trace: a `jit_grad` object stands for its function; gradient and
    derivative objects stand for what they compute (called, so inlined in the trace)."""
    if isinstance(fun, (Grad, Transformed)):
        obj = fun

        def call(*args):
            return obj(*args)
        functools.update_wrapper(call, obj)
        call.__signature__ = obj._signature if not getattr(obj, "_tangents", False) else \
            inspect.signature(obj.fun)
        return call
    if isinstance(fun, JitGrad):
        return fun.fun
    return fun


def _with_tangents(fun, argnums, factory):
    """`fun` taking each differentiated argument's tangent right after it (scipy's
    `hessp(x, p, *args)` order), and the new positions of the differentiated arguments."""
    wrt = (argnums,) if isinstance(argnums, int) else argnums
    params = list(inspect.signature(fun).parameters.values())
    params = [p for p in params if p.kind != p.KEYWORD_ONLY]
    if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params) or \
            not all(isinstance(i, int) and -len(params) <= i < len(params) for i in wrt):
        raise ArgumentError(f"jitad.{factory}: needs a function with named positional "
                            f"parameters and argnums among them, got argnums={argnums!r}")
    repeated(wrt, len(params), f"jitad.{factory}")
    wrt = [i % len(params) for i in wrt]        # negative ones count from the end
    new, positions = [], {}
    last = max(wrt)
    for i, p in enumerate(params):
        if i <= last:
            p = p.replace(default=p.empty, kind=p.POSITIONAL_OR_KEYWORD)
        if i in wrt:
            positions[i] = len(new)
        new.append(p)
        if i in wrt:
            new.append(inspect.Parameter(f"{p.name}_dot", p.POSITIONAL_OR_KEYWORD))
    drop = frozenset(k + 1 for k in positions.values())

    def with_tangents(*args):
        return fun(*[a for k, a in enumerate(args) if k not in drop])
    functools.update_wrapper(with_tangents, fun)
    del with_tangents.__wrapped__
    with_tangents.__signature__ = inspect.Signature(new)
    # (in argnums' order: an hvp's tuple follows it, as a gradient's does)
    return with_tangents, positions[wrt[0]] if isinstance(argnums, int) else \
        tuple(positions[i] for i in wrt)


# ---------------------------------------------------------------- nesting

def inline(obj: JitGrad, mode: str, args, kwargs):
    """`obj` called on traced values inside another trace: trace its function at the
    tracers' values, transform the list like `mode` does, and replay the entries into the
    outer trace (the inner guards become guards of the outer trace)."""
    args = obj._arguments(args, kwargs)
    concrete = [a.value if isinstance(a, Tracer) else a for a in args]
    _, runtime, names = obj._classify(concrete)
    traced = trace(obj.fun, concrete, [r is not None for r in runtime], names,
                   has_aux=getattr(obj, "has_aux", False))
    obj._check_output(traced)
    if traced.reads_sizes:
        tracing._read_sizes()
    index = {p: k for k, p in enumerate(i for i, r in enumerate(runtime) if r is not None)}
    wrt = [index[i % len(args)] for i in obj._wrt]
    wengert = simplify(traced.wengert)
    mode, blocks = split_mode(mode)
    if mode == "jacobian_auto":
        mode = jacobian_mode(wengert, wrt)
    if mode == "jvp" and is_batch(wengert, wrt):
        mode = "jvp_batch"
    kernel = kernel_list(wengert, mode, wrt)
    values = [a if isinstance(a, Tracer) else r for a, r in zip(args, runtime) if r is not None]
    values += traced.consts

    def run(*extra):
        env = {v.name: value for v, value in zip(kernel.inputs, values + list(extra))}
        return _replay(kernel, env, traced.guards)
    single = obj._single
    if mode == "value":         # (with has_aux: the aux outputs after the value)
        out = run()
        return out[0] if traced.aux is None else (out[0], _aux_filled(traced.aux, out[1:]))
    if mode == "value_and_grad":
        out, k = run(), len(wrt)
        value = out[0] if traced.aux is None else \
            (out[0], _aux_filled(traced.aux, out[1 + k:]))
        return value, (out[1] if single else tuple(out[1:1 + k]))
    if mode == "jvp_batch":
        rows = values[wrt[0] + 1]
        outs = [run(rows[j]) for j in range(np.shape(_value(rows))[0])]
        return outs[0][0], np.stack([o[1] for o in outs])
    if mode == "jvp":
        return tuple(run())
    if mode == "hvp":
        out = run()
        return out[0] if single else tuple(out)
    result = _dense_blocks(mode, wengert, wrt, run)
    if blocks:
        return result
    return result[0][0] if mode == "hessian" else result[0]


def _aux_filled(aux, values):
    """The aux structure (has_aux) with each AuxSlot replaced by its (traced) output."""
    if isinstance(aux, (tuple, list)):
        return type(aux)(_aux_filled(a, values) for a in aux)
    return values[aux.index] if isinstance(aux, tracing.AuxSlot) else aux


def _dense_blocks(mode, wengert, wrt, run):
    """The blocks of a dense Jacobian (a tuple) or Hessian (a tuple of rows of blocks) from
    `run(*directions)` per unit direction, on traced values (see `_dense_body`)."""
    xs, ys, k = [wengert.inputs[i].shape for i in wrt], wengert.outputs[0].shape, len(wrt)
    if mode == "jacobian_rev":      # run -> [value, cotangent^T J_1, ...]
        outs = [run(u) for u in _units(ys)]
        return tuple(_stacked([o[1 + i] for o in outs], ys, xs[i]) for i in range(k))
    zeros = [0.0 if s == () else np.zeros(s) for s in xs]
    along = [[run(*zeros[:j], u, *zeros[j + 1:]) for u in _units(xs[j])] for j in range(k)]
    if mode == "jacobian_fwd":      # run -> [value, J v]
        return tuple(_stacked([o[1] for o in along[j]], xs[j], ys, last=True)
                     for j in range(k))
    return tuple(tuple(_stacked([o[i] for o in along[j]], xs[j], xs[i]) for i in range(k))
                 for j in range(k))   # run -> [(H v)_1, ...]


def _stacked(parts, stacked, part_shape, last=False):
    """One part per unit direction of `stacked`, stacked in front (`last`: behind)."""
    if stacked == ():
        return parts[0]
    if last and part_shape != ():
        return np.reshape(np.stack(parts, axis=-1), part_shape + stacked)
    return np.reshape(np.stack(parts), stacked + part_shape)


def _value(a):
    return a.value if isinstance(a, Tracer) else a


def _units(shape):
    if shape == ():
        return [1.0]
    units = np.eye(int(np.prod(shape)))
    return [u.reshape(shape) for u in units]


def _replay(wengert, env, guards):
    """Run a list's entries on tracers (recording them in the current trace) and constants;
    its guards become the current trace's, at their branches (`guards`: where each is)."""
    for e in wengert.entries:
        ins = [env[a.name] if isinstance(a, Var) else a.value for a in e.ins]
        if e.prim.name == "guard":
            if isinstance(ins[0], Tracer) and tracing.guard_outcome(
                    ins[0], tuple(guards[e.params["id"]])) != e.params["expected"]:
                raise AssertionError("an inlined guard changed outcome at the same values")
            continue
        if any(isinstance(a, Tracer) for a in ins):
            env[e.out.name] = tracing.bind(e.prim, *ins, **e.params)
        else:
            env[e.out.name] = e.prim.impl(*ins, **e.params)
    return [env[o.name] if isinstance(o, Var) else o.value for o in wengert.outputs]


# ---------------------------------------------------------------- public factories

def _make(factory, fun, argnums, call_mode, code_shape, tangents=False, **options):
    if fun is None:                 # used as @jitad.hessian(argnums=1)
        return lambda f: _make(factory, f, argnums, call_mode, code_shape, tangents, **options)
    return Transformed(fun, argnums, call_mode, factory, code_shape, tangents, options)


def grad(fun=None, *, argnums=0, code_shape="auto", tiers=True):
    """The gradient of a scalar function, as a function: called on values it computes like
    a `jit_grad` object (`tiers` as there); called inside traced code it is part of the
    trace, so `jitad.jit_grad(lambda x: jitad.grad(f)(x) ** 2)` differentiates a gradient."""
    if fun is None:
        return lambda f: grad(f, argnums=argnums, code_shape=code_shape, tiers=tiers)
    g = Grad(_as_function(fun), argnums, code_shape, tiers=tiers)
    g._origin = fun
    return g


def jvp(fun=None, *, argnums=0, code_shape="auto", tiers=True):
    """Forward mode: `jitad.jvp(f)(x, v, *rest)` returns `(f(x, *rest), J v)`, compiled.

    Each differentiated argument is followed by its tangent (an int `argnums` = one tangent).
    The output may be a scalar or an array; J v has its shape.
    """
    return _make("jvp", fun, argnums, "jvp", code_shape, tangents=True, tiers=tiers)


def hvp(fun=None, *, argnums=0, code_shape="auto", tiers=True):
    """Hessian-vector product of a scalar function, forward over reverse (H never formed):
    `jitad.hvp(f)(x, v, *rest)` -> H v, the order of scipy's `hessp(x, p, *args)`."""
    return _make("hvp", fun, argnums, "hvp", code_shape, tangents=True, tiers=tiers)


def hessian(fun=None, *, argnums=0, code_shape="auto", sparse=False, tiers=True):
    """Dense Hessian of a scalar function: `jitad.hessian(f)(x, *rest)`, shape
    `x.shape + x.shape`, from one compiled loop of Hessian-vector products."""
    if sparse:
        return _sparse("sparse_hessian", fun, argnums, tiers)
    return _make("hessian", fun, argnums, "hessian", code_shape, tiers=tiers)


def jacobian(fun=None, *, argnums=0, mode="auto", code_shape="auto", sparse=False,
             tiers=True):
    """Dense Jacobian of a (vector-valued) function: shape `out.shape + x.shape`.

    `mode="auto"` uses forward mode (one column per input entry) when the input has no more
    entries than the output, else reverse mode (one row per output entry); "fwd" or "rev"
    force one. As for every derivative object, `tiers=False` compiles before the first
    call returns (else array code's first calls run on the NumPy tier, see `jit_grad`).
    """
    if sparse:
        return _sparse("sparse_jacobian", fun, argnums, tiers)
    if mode not in ("auto", "fwd", "rev"):
        raise ArgumentError(f"jitad.jacobian: mode must be 'auto', 'fwd' or 'rev', got {mode!r}")
    return _make("jacobian", fun, argnums, f"jacobian_{mode}", code_shape, mode=mode,
                 tiers=tiers)


def _sparse(name, fun, argnums, tiers=True):
    """jitad.sparse's object for `fun` (or a decorator, when `fun` is None)."""
    from . import sparse        # it builds on JitGrad: imported when first asked for
    make = getattr(sparse, name)
    return (lambda f: make(f, argnums, tiers)) if fun is None else make(fun, argnums, tiers)


__all__ = ["grad", "hessian", "hvp", "jacobian", "jit_grad", "jvp"]
