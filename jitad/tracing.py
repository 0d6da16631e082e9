"""Tracing: run the user's function on tracers and record a Wengert list.

Step: user function + argument values -> `Trace` (a WengertList plus what the
cache needs: guards, whether sizes were read, constant arrays).
Tracers carry concrete values, so Python control flow runs normally; a branch
on a traced value records a guard. Anything not in the registry (or in the
NumPy adapters below, which lower to registry primitives) fails here, naming
the operation and the user's source line.
"""
from __future__ import annotations

import bisect
import contextlib
import linecache
import math
import os
import sys
import threading
import types
from dataclasses import dataclass, field

import numpy as np

from .errors import JitadError, ShapeError, TraceError
from .primitives import REGISTRY
from .primitives.core import normalize_axes
from .wengert import Builder, Literal, Var, WengertList

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_TRACE_LOCK = threading.RLock()


# ---------------------------------------------------------------- user source locations

def user_frame():
    """The innermost stack frame outside jitad (and outside NumPy's dispatch machinery)."""
    frame = sys._getframe(1)
    while frame is not None:
        filename = frame.f_code.co_filename
        if not filename.startswith(_PACKAGE_DIR) and "numpy" not in filename.split(os.sep)[-3:-1]:
            return frame
        frame = frame.f_back
    return None


def describe_frame(frame) -> tuple[str, str]:
    """(`file:line (fn)`, the source line text) for error messages and list comments."""
    if frame is None:
        return "<unknown>", ""
    code = frame.f_code
    line = _line_number(frame)
    key = (id(code), line)                 # hashing a code object hashes all its constants
    described = _DESCRIBED.get(key)
    if described is None or described[0] is not code:
        where = f"{os.path.basename(code.co_filename)}:{line} ({code.co_name})"
        described = _DESCRIBED[key] = (
            code, (where, linecache.getline(code.co_filename, line).strip()))
    return described[1]


_DESCRIBED: dict = {}       # (id(code), line) -> (code, description)
_LINE_TABLES: dict = {}     # id(code) -> (code, instruction offsets, line numbers)


def _line_number(frame) -> int:
    """`frame.f_lineno`, by bisection in the code's line table (built once per code object):
    CPython computes f_lineno by a linear scan, quadratic over a 100,000-line function."""
    code = frame.f_code
    table = _LINE_TABLES.get(id(code))
    if table is None or table[0] is not code:
        starts, lines = [], []
        for start, _, line in code.co_lines():
            starts.append(start)
            lines.append(line)
        table = _LINE_TABLES[id(code)] = (code, starts, lines)
    line = table[2][bisect.bisect_right(table[1], frame.f_lasti) - 1]
    return line if line is not None else frame.f_lineno


def located(message: str, frame=None) -> str:
    """`message`, followed by the user's file, line and source text."""
    where, text = describe_frame(frame if frame is not None else user_frame())
    return f"{message}\n  at {where}: {text}" if text else f"{message}\n  at {where}"


# ---------------------------------------------------------------- the trace state

@dataclass
class Trace:
    """A traced function: its Wengert list and what specializing it depends on."""

    wengert: WengertList
    guards: list = field(default_factory=list)
    reads_sizes: bool = False
    consts: list = field(default_factory=list)


class _TraceState:
    def __init__(self, input_names):
        self.builder = Builder(REGISTRY, used_names=set(input_names))
        self.guards: list = []
        self.reads_sizes = False
        self.consts: list = []        # (Var, ndarray) for arrays captured from the user's code
        self.const_ids: dict = {}


_STATE = threading.local()


def _state() -> _TraceState:
    state = getattr(_STATE, "current", None)
    if state is None:
        raise TraceError("a jitad tracer was used outside of tracing (did a traced value escape "
                         "the function, e.g. into a global or a closure?)")
    return state


def bind(prim, *args, **params):
    """Apply a primitive to tracers/constants: record an entry and compute its value."""
    state = _state()
    operands, values = [], []
    for a in args:
        if isinstance(a, Tracer):
            operands.append(a.var)
            values.append(a.value)
        else:
            operand, value = _constant_operand(state, a)
            operands.append(operand)
            values.append(value)
    frame = user_frame()
    state.builder.loc = describe_frame(frame)[0]
    try:
        var = state.builder.bind(prim, *operands, **params)
    except ShapeError as error:
        raise ShapeError(located(f"{prim.name}: {error}", frame)) from None
    except IndexError as error:
        raise IndexError(located(f"{prim.name}: {error}", frame)) from None
    entry = state.builder.entries[-1]
    try:
        with np.errstate(all="ignore"):   # log(-1) is NaN, as in compiled code (documented)
            value = prim.impl(*values, **entry.params)
    except (IndexError, ValueError) as error:     # NumPy's, e.g. an index out of bounds
        kind = IndexError if isinstance(error, IndexError) else ValueError
        raise kind(located(f"{prim.name}: {error}", frame)) from None
    return Tracer(var, value)


def _constant_operand(state, value):
    """A Python scalar becomes a Literal; an array becomes a hidden constant input."""
    if isinstance(value, (bool, int, float, np.bool_, np.integer, np.floating)):
        return Literal(value.item() if isinstance(value, np.generic) else value), value
    if isinstance(value, (list, tuple)):
        value = np.asarray(value)
    if isinstance(value, np.ndarray):
        if value.ndim == 0:
            return Literal(value.item()), value.item()
        if value.dtype.kind not in "fiub":
            raise TraceError(located(f"unsupported constant array of dtype {value.dtype}"))
        key = id(value)
        if key not in state.const_ids:
            var = Var(state.builder.fresh("c"), _dtype_name(value.dtype), value.shape)
            state.const_ids[key] = var
            state.consts.append((var, value))
        return state.const_ids[key], value
    raise TraceError(located(f"cannot use a value of type {type(value).__name__} in a traced "
                             "computation"))


def _dtype_name(dtype) -> str:
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return "float64"
    if dtype.kind in "iu":
        return "int64"
    return dtype.name


def _read_sizes():
    _state().reads_sizes = True


# ---------------------------------------------------------------- the tracer

def _binary(prim_name, swap=False):
    prim = REGISTRY[prim_name]

    def method(self, other):
        if not _is_operand(other):
            return NotImplemented
        return bind(prim, other, self) if swap else bind(prim, self, other)
    return method


def _is_operand(value) -> bool:
    return isinstance(value, (Tracer, bool, int, float, np.ndarray, np.generic))


def _power(base, exponent):
    """`base ** exponent`: integral exponents become `integer_pow` (cheaper, exact at x <= 0)."""
    if isinstance(exponent, (int, np.integer, float, np.floating)) and not isinstance(exponent, bool) \
            and float(exponent).is_integer() and abs(exponent) <= 64:
        n = int(exponent)
        if n == 1:
            return base
        if n == 0:
            return bind(REGISTRY["full_like"], base, 1.0) if np.ndim(base.value) else 1.0
        return bind(REGISTRY["integer_pow"], base, n=n)
    return bind(REGISTRY["pow"], base, exponent)


_REDUCTIONS = ("sum", "mean", "max", "min", "prod")


def _reduction(name):
    """`x.sum(axis, keepdims)`-style method, also serving as the adapter of `np.sum` etc."""
    def reduce(x, axis=None, keepdims=False, **unsupported):
        if unsupported:
            raise TraceError(located(f"np.{name}: unsupported arguments {sorted(unsupported)}"))
        if not isinstance(x, Tracer):
            x = _as_tracer(x)
        return bind(REGISTRY[name], x, axis=axis, keepdims=keepdims)
    reduce.__name__ = name
    return reduce


class Tracer:
    """A traced value: a Wengert variable plus the concrete value computed while tracing."""

    __slots__ = ("var", "value")
    __array_priority__ = 1000

    def __init__(self, var: Var, value):
        self.var = var
        self.value = value

    def __repr__(self) -> str:
        return f"Tracer({self.var.name}: {self.var.type_text()})"

    # arithmetic
    __add__, __radd__ = _binary("add"), _binary("add", swap=True)
    __sub__, __rsub__ = _binary("sub"), _binary("sub", swap=True)
    __mul__, __rmul__ = _binary("mul"), _binary("mul", swap=True)
    __truediv__, __rtruediv__ = _binary("div"), _binary("div", swap=True)
    __matmul__, __rmatmul__ = _binary("matmul"), _binary("matmul", swap=True)
    __lt__, __le__, __gt__, __ge__ = _binary("lt"), _binary("le"), _binary("gt"), _binary("ge")
    __eq__, __ne__ = _binary("eq"), _binary("ne")
    __hash__ = object.__hash__

    def __pow__(self, exponent):
        return _power(self, exponent) if _is_operand(exponent) else NotImplemented

    def __rpow__(self, base):
        return bind(REGISTRY["pow"], base, self) if _is_operand(base) else NotImplemented

    def __neg__(self):
        return bind(REGISTRY["neg"], self)

    def __pos__(self):
        return self

    def __abs__(self):
        return bind(REGISTRY["abs"], self)

    # branching and conversion
    def __bool__(self):
        if self.var.shape != ():
            raise TraceError(located(f"the truth value of a traced array of shape {self.var.shape} "
                                     "is ambiguous; use jitad.where / np.where, or .any()/.all() "
                                     "outside the traced function"))
        cond = self if self.var.dtype == "bool" else bind(REGISTRY["ne"], self, 0)
        outcome = bool(cond.value)
        state = _state()
        frame = user_frame()
        guard_id = len(state.guards)
        state.builder.loc = describe_frame(frame)[0]
        state.builder.bind(REGISTRY["guard"], cond.var, expected=outcome, id=guard_id)
        state.guards.append(describe_frame(frame))
        return outcome

    def _concretize(self, what):
        raise TraceError(located(
            f"{what} of a traced value: jitad cannot turn a traced value into a Python number "
            "(math functions jitad does not know and float()/int() do this). Keep the value "
            "traced: use arithmetic, np.* or math.* functions jitad supports"))

    def __float__(self):
        self._concretize("float()")

    def __int__(self):
        self._concretize("int()")

    def __index__(self):
        self._concretize("use as an index")

    def __round__(self, ndigits=None):
        self._concretize("round()")

    def __floor__(self):
        self._concretize("math.floor()")

    def __ceil__(self):
        self._concretize("math.ceil()")

    def __trunc__(self):
        self._concretize("math.trunc()")

    def __array__(self, dtype=None, copy=None):
        raise TraceError(located(
            "a traced value was converted to a NumPy array (np.array/np.asarray of traced values, "
            "or a NumPy function jitad does not support)"))

    # shapes
    @property
    def shape(self):
        _read_sizes()
        return self.var.shape

    @property
    def size(self):
        _read_sizes()
        return int(np.prod(self.var.shape))

    @property
    def ndim(self):
        return self.var.ndim

    @property
    def dtype(self):
        return np.dtype(self.var.dtype)

    def __len__(self):
        if not self.var.shape:
            raise TraceError(located("len() of a traced scalar"))
        _read_sizes()
        return self.var.shape[0]

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    @property
    def T(self):
        return self.transpose()

    # indexing
    def __getitem__(self, index):
        return _getitem(self, index)

    def __setitem__(self, index, value):
        raise TraceError(located("in-place assignment to a traced array (x[...] = ...) is not "
                                 "supported: build a new array instead (np.where, np.concatenate)"))

    # methods that mirror NumPy functions
    sum, mean, max, min, prod = (_reduction(name) for name in _REDUCTIONS)

    def dot(self, other):
        return bind(REGISTRY["matmul"], self, other)

    def transpose(self, *axes):
        axes = axes[0] if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else axes
        return _transpose(self, axes or None)

    def reshape(self, *shape):
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        return _reshape(self, shape)

    def ravel(self):
        return _reshape(self, (-1,))

    flatten = ravel

    def squeeze(self, axis=None):
        return _squeeze(self, axis)

    def clip(self, a_min=None, a_max=None):
        return _clip(self, a_min, a_max)

    def copy(self):
        return self

    def astype(self, dtype):
        if np.dtype(dtype).kind != "f" or self.var.dtype != "float64":
            raise TraceError(located(f"astype({np.dtype(dtype)}) of a traced {self.var.dtype} "
                                     "value is not supported (jitad computes in float64)"))
        return self

    # NumPy dispatch
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        prim = _UFUNCS.get(ufunc)
        if method != "__call__" or kwargs or prim is None:
            what = f"np.{ufunc.__name__}" + (f".{method}" if method != "__call__" else "")
            extra = f" with {sorted(kwargs)}" if kwargs else ""
            raise TraceError(located(f"unsupported operation on a traced value: {what}{extra}"))
        if prim.name == "pow":
            return _power(*inputs) if isinstance(inputs[0], Tracer) else bind(prim, *inputs)
        return bind(prim, *inputs)

    def __array_function__(self, func, types, args, kwargs):
        adapter = _FUNCTIONS.get(func)
        if adapter is None:
            name = getattr(func, "__qualname__", repr(func))
            module = getattr(func, "__module__", "numpy") or "numpy"
            raise TraceError(located(f"unsupported function on a traced value: "
                                     f"{module.replace('numpy', 'np')}.{name}"))
        return adapter(*args, **kwargs)


# ---------------------------------------------------------------- lowering NumPy calls

def _as_tracer(value):
    operand, concrete = _constant_operand(_state(), value)
    return Tracer(operand, concrete) if isinstance(operand, Var) else value


def _transpose(x, axes=None):
    axes = tuple(reversed(range(x.ndim))) if axes is None else tuple(a % x.ndim for a in axes)
    if axes == tuple(range(x.ndim)):
        return x
    return bind(REGISTRY["transpose"], x, axes=axes)


def _reshape(x, shape, order="C"):
    shape = (shape,) if isinstance(shape, int) else tuple(int(d) for d in shape)
    if order != "C":
        raise TraceError(located("reshape supports order='C' only"))
    return bind(REGISTRY["reshape"], x, shape=shape)


def _expand_dims(x, axis):
    return bind(REGISTRY["expand_dims"], x, axis=axis)


def _squeeze(x, axis=None):
    shape = x.var.shape
    axes = tuple(i for i, d in enumerate(shape) if d == 1) if axis is None \
        else normalize_axes(axis, x.ndim)
    if any(shape[a] != 1 for a in axes):
        raise ShapeError(located(f"cannot squeeze axis {axis} of shape {shape}: size is not 1"))
    _read_sizes()        # which axes have size 1 depends on the concrete shape
    return bind(REGISTRY["reshape"], x, shape=tuple(d for i, d in enumerate(shape) if i not in axes))


def _clip(x, a_min=None, a_max=None):
    if a_min is not None:
        x = bind(REGISTRY["maximum"], x, a_min)
    if a_max is not None:
        x = bind(REGISTRY["minimum"], x, a_max)
    return x


def _where(cond, x=None, y=None):
    if x is None or y is None:
        raise TraceError(located("np.where(cond) with one argument (indices) is not supported"))
    return bind(REGISTRY["select"], cond, x, y)


def _concatenate(arrays, axis=0):
    arrays = [a if isinstance(a, Tracer) else _as_tracer(np.asarray(a)) for a in arrays]
    ndim = arrays[0].ndim
    return bind(REGISTRY["concatenate"], *arrays, axis=axis % ndim)


def _stack(arrays, axis=0):
    arrays = [a if isinstance(a, Tracer) else _as_tracer(np.asarray(a)) for a in arrays]
    ndim = np.ndim(arrays[0].value) + 1
    return _concatenate([_expand_dims(a, axis % ndim) for a in arrays], axis=axis % ndim)


def _full_like(x, fill_value, dtype=None):
    return bind(REGISTRY["full_like"], x, fill_value)


def _norm(x, ord=None, axis=None, keepdims=False):
    if ord not in (None, 2) or axis is not None or keepdims:
        raise TraceError(located("np.linalg.norm supports the vector 2-norm only "
                                 "(ord=None, axis=None)"))
    return bind(REGISTRY["sqrt"], bind(REGISTRY["sum"], bind(REGISTRY["mul"], x, x), axis=None))


def _getitem(x, index):
    items = index if isinstance(index, tuple) else (index,)
    if len(items) == 1 and isinstance(items[0], (Tracer, np.ndarray, list)):
        idx = items[0]
        idx = idx if isinstance(idx, Tracer) else _as_tracer(np.asarray(idx))
        if idx.var.dtype not in ("int64",):
            raise TraceError(located(f"indexing with a traced {idx.var.dtype} value: indices must "
                                     "be integers (an integer array argument or a Python int)"))
        return bind(REGISTRY["gather"], x, idx)
    static, expand = [], []
    for position, item in enumerate(items):
        if item is None:
            expand.append(position)
        elif isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            _read_sizes()               # an element read is only valid for large enough arrays
            static.append(int(item))
        elif isinstance(item, slice) and all(v is None or isinstance(v, (int, np.integer))
                                             for v in (item.start, item.stop, item.step)):
            static.append(("slice", item.start, item.stop, item.step))
        elif isinstance(item, Tracer):
            raise TraceError(located("indexing with a traced value inside a tuple index is not "
                                     "supported (static ints and slices, or one integer array)"))
        else:
            raise TraceError(located(f"unsupported index {item!r}: use static ints and slices, "
                                     "None, or one integer array"))
    out = bind(REGISTRY["getitem"], x, index=tuple(static)) if static else x
    if expand:
        out = _expand_dims(out, tuple(expand))
    return out


_UFUNCS = {f: prim for prim in REGISTRY.values() for f in prim.traces if isinstance(f, np.ufunc)}

_FUNCTIONS = {
    **{getattr(np, name): getattr(Tracer, name) for name in _REDUCTIONS},
    np.dot: lambda a, b: bind(REGISTRY["matmul"], a, b),
    np.outer: lambda a, b: bind(REGISTRY["outer"], a, b),
    np.linalg.norm: _norm,
    np.transpose: lambda x, axes=None: _transpose(x, axes),
    np.reshape: _reshape,
    np.ravel: lambda x: _reshape(x, (-1,)),
    np.expand_dims: _expand_dims,
    np.squeeze: _squeeze,
    np.concatenate: _concatenate,
    np.stack: _stack,
    np.where: _where,
    np.clip: _clip,
    np.zeros_like: lambda x, dtype=None: _full_like(x, 0.0),
    np.ones_like: lambda x, dtype=None: _full_like(x, 1.0),
    np.full_like: _full_like,
    np.copy: lambda x: x,
    np.shape: lambda x: x.shape,
    np.ndim: lambda x: x.ndim,
    np.size: lambda x: x.size,
}
for _alias, _target in ((getattr(np, "amax", None), np.max), (getattr(np, "amin", None), np.min)):
    if _alias is not None and _alias is not _target:
        _FUNCTIONS[_alias] = _FUNCTIONS[_target]


def where(cond, x, y):
    """Select `x` where `cond` holds, else `y`, without branching (differentiates both sides).

    Works on traced and concrete values alike, scalars and arrays (broadcasting).

    Example:
        >>> jitad.where(x > 0, x, 0.01 * x)   # leaky ReLU, no guard recorded
    """
    if any(isinstance(v, Tracer) for v in (cond, x, y)):
        return _where(cond, x, y)
    return np.where(cond, x, y)


# ---------------------------------------------------------------- math module interception

def _math_function(original, prim):
    arity = len(prim.domain)

    def traced(*args):
        if any(isinstance(a, Tracer) for a in args):
            if prim.name == "log" and len(args) == 2:          # math.log(x, base)
                return bind(REGISTRY["div"], bind(prim, args[0]), bind(prim, args[1]))
            if len(args) != arity:
                raise TraceError(located(f"math.{original.__name__} with {len(args)} "
                                         f"argument(s) is not supported on traced values"))
            if prim.name == "pow":
                return _power(*args) if isinstance(args[0], Tracer) else bind(prim, *args)
            return bind(prim, *args)
        return original(*args)
    traced.__name__ = original.__name__
    traced.__wrapped__ = original
    return traced


_MATH = {f: _math_function(f, prim) for prim in REGISTRY.values()
         for f in prim.traces if isinstance(f, types.BuiltinFunctionType)
         and getattr(math, f.__name__, None) is f}


@contextlib.contextmanager
def _math_intercepted():
    """Route `math.sin(tracer)`-style calls to the registry while tracing."""
    originals = {f.__name__: f for f in _MATH}
    for f, traced in _MATH.items():
        setattr(math, f.__name__, traced)
    try:
        yield
    finally:
        for name, f in originals.items():
            setattr(math, name, f)


def _traced_math(value) -> bool:
    return isinstance(value, types.BuiltinFunctionType) and value in _MATH


def _with_traced_globals(fun):
    """`fun` with math functions it holds in globals (`from math import sin`) or closure
    cells (`fn = math.sin` in an enclosing function) redirected to the traced versions."""
    if not isinstance(fun, types.FunctionType):
        return fun
    code_globals = fun.__globals__
    swaps = {name: _MATH[value] for name, value in code_globals.items() if _traced_math(value)}
    cells = fun.__closure__ or ()
    held = [c for c in cells if _cell_value(c) is not None and _traced_math(_cell_value(c))]
    if not swaps and not held:
        return fun
    new_globals = dict(code_globals)
    new_globals.update(swaps)
    closure = tuple(types.CellType(_MATH[_cell_value(c)]) if c in held else c for c in cells)
    clone = types.FunctionType(fun.__code__, new_globals, fun.__name__, fun.__defaults__,
                               closure or None)
    clone.__kwdefaults__ = fun.__kwdefaults__
    return clone


def _cell_value(cell):
    try:
        return cell.cell_contents
    except ValueError:          # an empty cell
        return None


# ---------------------------------------------------------------- entry point

def trace(fun, args: list, runtime: list, names: list) -> Trace:
    """Trace `fun(*args)`.

    Args:
        fun: the user's function.
        args: argument values, positional.
        runtime: per argument, whether it is a runtime input (becomes a Wengert input).
        names: per argument, its name in the Wengert list.

    Raises:
        TraceError, ShapeError, NonScalarOutputError (from the caller's output check).
    """
    with _TRACE_LOCK:
        state = _TraceState([n for n, r in zip(names, runtime) if r])
        inputs, traced_args = [], []
        for value, is_runtime, name in zip(args, runtime, names):
            if is_runtime:
                var = Var(name, _dtype_name(np.asarray(value).dtype), np.shape(value))
                inputs.append(var)
                traced_args.append(Tracer(var, value))
            else:
                traced_args.append(value)
        previous, _STATE.current = getattr(_STATE, "current", None), state
        try:
            with _math_intercepted():
                result = _with_traced_globals(fun)(*traced_args)
        except JitadError:
            raise
        finally:
            _STATE.current = previous
        code = fun.__code__
        loc = f"{os.path.basename(code.co_filename)}:{code.co_firstlineno}"
        if isinstance(result, Tracer):
            outputs = [result.var]
        elif isinstance(result, (int, float, np.integer, np.floating)) and \
                not isinstance(result, (bool, np.bool_)):
            outputs = [Literal(float(result))]    # a constant: its gradient is zero
        else:
            outputs = [result]
        wengert = WengertList(getattr(fun, "__name__", "f"), inputs + [v for v, _ in state.consts],
                              state.builder.entries, outputs, loc=loc)
        return Trace(wengert, state.guards, state.reads_sizes, [c for _, c in state.consts])
