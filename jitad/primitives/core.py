"""The `Primitive` record and the rules shared by the primitive families.

A primitive is defined once: its shape/dtype rule, how it prints as Python
source (the same text also computes its value while tracing), its VJP and JVP
rules written with other primitives through a `wengert.Builder`, its flags and
its test domain.
"""
from __future__ import annotations

import contextvars
import functools
import math
import types
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .. import runtime
from ..errors import ShapeError
from ..wengert import Literal, Var

def _quiet_errors() -> dict:
    """The names the evaluators of `Primitive.impl` use to run under
    `np.errstate(all="ignore")` at the cost of setting NumPy's context variable (the
    `errstate` decorator builds its state at every call: ~6% of a trace's time); through
    `np.errstate` itself on NumPy versions without that variable."""
    try:
        from numpy._core._ufunc_config import _extobj_contextvar, _make_extobj
        return {"_quiet_set": _extobj_contextvar.set, "_quiet_reset": _extobj_contextvar.reset,
                "_quiet": _make_extobj(all="ignore")}
    except (ImportError, TypeError):
        def enter(_):
            state = np.errstate(all="ignore")
            state.__enter__()
            return state
        return {"_quiet_set": enter, "_quiet_reset": lambda state: state.__exit__(None, None, None),
                "_quiet": None}


_QUIET = _quiet_errors()


def _lgamma(x):
    """math.lgamma with C's (and compiled code's) results where Python's raises: inf at the
    poles (0 and the negative integers) and on overflow."""
    try:
        return math.lgamma(x)
    except (ValueError, OverflowError):
        return math.inf


def _gamma(x):
    """math.gamma with C's (and compiled code's) results where Python's raises: ±inf at ±0,
    NaN at the negative integers and -inf, inf on overflow."""
    try:
        return math.gamma(x)
    except OverflowError:
        return math.inf
    except ValueError:
        return math.copysign(math.inf, x) if x == 0 else math.nan


# Traced values are computed with IEEE results, as the compiled code computes them (a
# first call must not raise where later calls return inf): `math` with these two replaced.
_IEEE_MATH = types.SimpleNamespace(**{n: getattr(math, n) for n in dir(math)
                                      if not n.startswith("__")})
_IEEE_MATH.lgamma, _IEEE_MATH.gamma = _lgamma, _gamma

# Names the printed source may use; also the namespace in which traced values are computed.
SOURCE_NAMESPACE = {"np": np, "math": _IEEE_MATH,
                    **{n: getattr(runtime, n) for n in runtime.__all__}}


# True while source is printed for NumPy (the first-call tier runs it as plain Python, see
# numpy_tier.py): array updates print as one NumPy statement, not as an element loop nest.
VECTORIZED = contextvars.ContextVar("jitad_vectorized", default=False)


def operand_text(a) -> str:
    """How an operand appears in generated source."""
    if isinstance(a, Var):
        return a.name
    v = a.value
    if isinstance(v, float):
        if math.isnan(v):
            return "np.nan"
        if math.isinf(v):
            return "np.inf" if v > 0 else "(-np.inf)"
    text = repr(v)
    return f"({text})" if text.startswith("-") else text


def _registered(name: str):
    from . import REGISTRY
    return REGISTRY[name]


@dataclass(eq=False)
class Primitive:
    """One operation of the IR.

    Args:
        name: printed name (`mul`, `sin`, `sum`).
        source: a format string over `{0}`, `{1}`… and the params (`"np.sin({0})"`), or a
            callable `(operand_texts, entry_operands, params) -> str` for shape-aware printing.
        shape_rule: `(*operands, **params) -> (dtype, shape)`; raises ShapeError on misuse.
        vjp: `(b, g, out, *operands, **params) -> contributions`, one per operand (None: zero).
        jvp: `(b, out, operands, tangents, **params) -> tangent` (tangents: Var or None).
        nondifferentiable: outputs carry no derivative (comparisons, sign, shape queries).
        linear: the primitive is linear in every operand (used by simplification).
        effect: the entry must be kept even if its output is unused (guards).
        view: the output may share memory with operand 0 (it is never updated in place).
        inplace: a statement (format string over operands and params, or a callable
            `(operand_texts, operands, params) -> str`) that updates operand 0
            in place; codegen uses it when operand 0 is an owned buffer that is dead afterwards.
            Primitives with `source=None` are only defined by it (on a copy otherwise).
        statement: `(operand_texts, params) -> str`, for effect-only primitives (guards).
        normalize: `(operands, params) -> params`, canonical parameters (e.g. `axis` tuples).
        traces: the user-facing functions it implements directly (NumPy ufuncs, `math`
            functions): tracing builds its dispatch tables from them.
        ir: the LLVM IR instruction computing it on float64 scalars (format string over
            operand registers `{0}`… and params), for the llvm code shape; an `fcmp` result
            is widened to 0.0/1.0. None: not available there.
        domain: per-operand (low, high) sampling ranges for the registry-wide tests.
        test_params: parameter sets the registry-wide tests try.
    """

    name: str
    source: object
    shape_rule: Callable
    vjp: Callable | None = None
    jvp: Callable | None = None
    nondifferentiable: bool = False
    linear: bool = False
    effect: bool = False
    view: bool = False
    inplace: str | None = None
    statement: Callable | None = None
    normalize: Callable | None = None
    traces: tuple = ()
    ir: str | None = None
    domain: tuple = ((-2.0, 2.0), (-2.0, 2.0))
    test_params: tuple = ({},)
    _impl_cache: dict = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:
        return f"{self.name}_p"

    def __reduce__(self):
        # Stored traces refer to the registry's record by name.
        return _registered, (self.name,)

    def canonical_params(self, operands, params) -> dict:
        return self.normalize(operands, params) if self.normalize else params

    def lines(self, out_name: str, operands, params, in_place: bool = False) -> list:
        """Source lines computing `out_name` (in place on operand 0 when `in_place`)."""
        texts = [operand_text(a) for a in operands]
        if self.statement is not None:
            return [self.statement(texts, params)]
        if in_place:
            return [self.inplace_statement(texts, operands, params)]
        if self.source is None:
            copy = [out_name] + texts[1:]
            return [f"{out_name} = {texts[0]}.copy()",
                    self.inplace_statement(copy, operands, params)]
        if callable(self.source):
            return [f"{out_name} = {self.source(texts, operands, params)}"]
        return [f"{out_name} = {self.source.format(*texts, **params)}"]

    def inplace_statement(self, texts, operands, params) -> str:
        if callable(self.inplace):
            return self.inplace(texts, operands, params)
        return self.inplace.format(*texts, **params)

    def impl(self, *values, **params):
        """Compute concretely (while tracing) by running the printed source lines.

        Python floats become np.float64 first, so the values follow the compiled code's
        IEEE float64 semantics (`1.0 / 0.0` is inf, overflow is inf, `(-8.0) ** (1/3)` is
        NaN) rather than Python's exceptions and complex results, without warnings (or
        errors under `np.seterr(all="raise")`). Printers depend on operand ranks and parameters only,
        so the compiled evaluator is cached by those; the integers of an `index` parameter
        are arguments of it (as in re-rolled loops), so `t[i]` for every i shares one.
        """
        return self._evaluate(values, params, False)

    def impl_in_place(self, *values, **params):
        """`impl` of an update primitive, writing into (and returning) the array values[0]:
        for the tracer, when nothing else holds that array."""
        return self._evaluate(values, params, True)

    def _evaluate(self, values, params, in_place):
        values = [np.float64(v) if type(v) is float else v for v in values]
        ndims = tuple([0 if type(v) is np.float64 else getattr(v, "ndim", 0) for v in values])
        leaves = []
        if "index" in params:
            index = params["index"]
            if all(type(i) is int for i in index):     # (the common case: t[i], M[i, j])
                leaves, slotted = index, _SLOTS[:len(index)]
            else:
                leaves, slotted = _slotted(index)
            params = dict(params, index=slotted)
        return self.evaluator(ndims, params, in_place, len(leaves))(*values, *leaves)

    def evaluator(self, ndims: tuple, params: dict | None = None, in_place: bool = False,
                  n_leaves: int = 0):
        """The function `impl` runs on operands of ranks `ndims` (and then the `n_leaves`
        integers of an `index`): the printed source lines, compiled once per ranks and
        parameters."""
        try:
            # (n_leaves: an index's NumPy integers stay constants, and np.int64(1) equals
            # the slot k1, so `x[np.int64(0):np.int64(1)]` and `x[0:1]` differ only there)
            key = (ndims, in_place, n_leaves, tuple(sorted(params.items()))) \
                if params or in_place else ndims
            fn = self._impl_cache.get(key)
        except TypeError:           # unhashable parameters: no caching
            key, fn = None, None
        if fn is None:
            names = [f"a{i}" for i in range(len(ndims))]
            operands = [Var(n, "float64", (0,) * nd) for n, nd in zip(names, ndims)]
            body = "\n        ".join(line.replace("\n", "\n        ")  # multi-line statements
                                       for line in self.lines("out", operands, params or {},
                                                              in_place))
            arguments = ", ".join(names + [f"k{i}" for i in range(n_leaves)])
            namespace = dict(SOURCE_NAMESPACE, **_QUIET)
            exec(f"def impl({arguments}):\n    _token = _quiet_set(_quiet)\n    try:\n"
                 f"        {body}\n    finally:\n        _quiet_reset(_token)\n"
                 f"    return {'a0' if in_place else 'out'}", namespace)
            fn = namespace["impl"]
            if key is not None:
                self._impl_cache[key] = fn
        return fn


def _slotted(index) -> tuple:
    """(integer leaves, `index` with them as slots) of an index with slices."""
    try:
        return _slotted_hashable(index)
    except TypeError:       # (an unhashable index)
        return _slotted_hashable.__wrapped__(index)


@functools.lru_cache(maxsize=4096)     # (a loop slices `w[:b]`, `x[t, :]` with a few indices)
def _slotted_hashable(index) -> tuple:
    leaves: list = []
    _int_leaves(index, leaves)
    return tuple(leaves), _with_slots(index, iter(range(len(leaves))))


class _Slot(int):
    """An integer of an `index` parameter, printed as the evaluator's argument `k<n>`."""

    def __str__(self) -> str:
        return f"k{int(self)}"

    __repr__ = __str__

    def __format__(self, spec) -> str:
        return str(self)

    def __eq__(self, other):
        return type(other) is _Slot and int(self) == int(other)

    __hash__ = int.__hash__


_SLOTS = tuple(_Slot(i) for i in range(32))


def _int_leaves(value, out):
    if type(value) is int:
        out.append(value)
    elif type(value) is tuple:
        for v in value:
            _int_leaves(v, out)


def _with_slots(value, slots):
    if type(value) is int:
        return _Slot(next(slots))
    if type(value) is tuple:
        return tuple(_with_slots(v, slots) for v in value)
    return value


# ---------------------------------------------------------------- dtype and shape rules

def result_dtype(*operands, floating=False) -> str:
    """NumPy's promotion, with Python scalars weak (as NumPy 2 does)."""
    if _float64_operands(operands):
        return "float64"            # the common case, without NumPy's promotion machinery
    parts = [a.value if isinstance(a, Literal) else np.dtype(a.dtype) for a in operands]
    dtype = np.result_type(*parts)
    if floating and not np.issubdtype(dtype, np.floating):
        dtype = np.dtype("float64")
    return dtype.name


def _float64_operands(operands) -> bool:
    """Are the operands float64 Vars and Literals, with at least one Var?"""
    var = False
    for a in operands:
        if type(a) is Var:
            if a.dtype != "float64":
                return False
            var = True
        elif not isinstance(a, Literal):
            return any(a.dtype == "float64" and isinstance(a, Var) for a in operands) and all(
                isinstance(a, Literal) or a.dtype == "float64" for a in operands)
    return var


def broadcast_shapes(*operands) -> tuple:
    first = operands[0].shape
    for a in operands:
        if a.shape != first:
            break
    else:
        return first
    try:
        return np.broadcast_shapes(*(a.shape for a in operands))
    except ValueError:
        shapes = " and ".join(str(a.shape) for a in operands)
        raise ShapeError(f"operands could not be broadcast together: shapes {shapes}") from None


def elementwise_rule(floating: bool):
    def rule(*operands, **params):
        if len(operands) == 2:          # float64 scalars (Vars or Literals): the common case
            a, b = operands
            if (type(a) is Var and a.dtype == "float64" and a.shape == () and
                    (type(b) is Literal or type(b) is Var and b.dtype == "float64" and
                     b.shape == ())) or (type(b) is Var and b.dtype == "float64" and
                                         b.shape == () and type(a) is Literal):
                return "float64", ()
        elif len(operands) == 1:        # a float64 scalar Var: the common unary case
            a = operands[0]
            if type(a) is Var and a.dtype == "float64" and a.shape == ():
                return "float64", ()
        return result_dtype(*operands, floating=floating), broadcast_shapes(*operands)
    rule.elementwise = True     # (an array operand makes an array: see tracing._bind)
    return rule


def normalize_axes(axis, ndim: int) -> tuple:
    """`axis` (None, int or tuple) as a sorted tuple of non-negative ints."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    out = []
    for a in axes:
        if not -ndim <= a < ndim:
            raise ShapeError(f"axis {a} is out of bounds for an array of {ndim} dimension(s)")
        out.append(a % ndim)
    return tuple(sorted(set(out)))


# ---------------------------------------------------------------- shared rule helpers

def sum_to_shape(b, g, target):
    """Sum `g` over the axes along which an operand shaped like `target` was broadcast.

    Emits nothing when the shapes already agree (decided at trace time).
    """
    if g is None or g.shape == target.shape:
        return g
    lead = g.ndim - target.ndim
    axes = tuple(range(lead)) + tuple(
        lead + i for i, d in enumerate(target.shape) if d == 1 and g.shape[lead + i] != 1)
    if axes:
        g = b.sum(g, axis=axes, keepdims=False)
    if g.shape != target.shape:
        g = b.reshape_like(g, target)
    return g


def broadcast_to_shape_of(b, g, target):
    """`g` broadcast up to the shape of `target` (no entry when the shapes already agree)."""
    if g is None or g.shape == target.shape:
        return g
    if g.shape == ():
        return b.full_like(target, g)
    return b.broadcast_like(g, target)


def add_tangents(b, *terms):
    """Sum of the non-None tangent terms (None when all are zero)."""
    terms = [t for t in terms if t is not None]
    if not terms:
        return None
    total = terms[0]
    for t in terms[1:]:
        total = b.add(total, t)
    return total


def scale(b, factor, t):
    """`factor * t` for a tangent/cotangent that may be None (zero)."""
    return None if t is None else b.mul(t, factor)


def add_into(target: str, update: str, update_operand, target_ndim: int,
             operator: str = "+=") -> str:
    """`target += update` (or another `operator`, such as `=`) for arrays as an explicit
    loop nest (Numba compiles an in-place array operator through its ufunc machinery, and
    an array assigned to a slice through its shape-mismatch error path: seconds each);
    `update` may broadcast (size-1 and missing leading axes). One NumPy statement when
    printing for NumPy (`VECTORIZED`)."""
    if update_operand.ndim == 0 and not isinstance(update_operand, Var):
        update_operand = None
    index = [f"j{k}" for k in range(target_ndim)]
    lines = []
    if VECTORIZED.get():
        if update_operand is not None and update_operand.ndim:
            lines.append(f"check_broadcast({target}.shape, {update}.shape)")
        return "\n".join(lines + [f"{target}[...] {operator} {update}"])
    if update_operand is None or update_operand.ndim == 0:
        element = update
    else:
        lead = target_ndim - update_operand.ndim
        picks = [("0" if d == 1 else index[lead + k]) for k, d in enumerate(update_operand.shape)]
        element = f"{update}[{', '.join(picks)}]"
        # The loop bounds are the target's: the update's sizes must fit (checked per call).
        lines.append(f"check_broadcast({target}.shape, {update}.shape)")
    lines += [("    " * k) + f"for {i} in range({target}.shape[{k}]):"
              for k, i in enumerate(index)]
    lines.append("    " * target_ndim + f"{target}[{', '.join(index)}] {operator} {element}")
    return "\n".join(lines)


def shape_text(var_text: str, shape_source: list) -> str:
    """A tuple expression for a shape: ints stay, ('dim', k) reads `var.shape[k]` at run time."""
    parts = [str(d) if isinstance(d, int) else f"{var_text}.shape[{d[1]}]" for d in shape_source]
    return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"
