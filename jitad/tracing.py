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
import builtins
import functools
import inspect
import linecache
import math
import operator
import os
import sys
import threading
import types
from dataclasses import dataclass, field

import numpy as np

from . import collector
from .errors import NonScalarOutputError, ShapeError, TraceError
from .primitives import REGISTRY
from .primitives.core import normalize_axes
from .reads import underlying_function, user_code
from .watch import Compiled, Type, Watch, Watched, plain, plain_all
from .wengert import Builder, Literal, Var, WengertList

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_TRACE_LOCK = threading.RLock()


# ---------------------------------------------------------------- user source locations

def user_frame(depth: int = 1):
    """The innermost stack frame outside jitad (and outside NumPy's dispatch machinery),
    from the caller's (`depth` 1) outwards. A larger `depth` skips frames known to be
    jitad's, without making Python frame objects for them."""
    frame = sys._getframe(depth)
    internal = _INTERNAL
    while frame is not None:
        code = frame.f_code
        known = internal.get(id(code))     # (hashing a code object hashes its constants)
        if known is None or known[0] is not code:
            filename = code.co_filename
            known = internal[id(code)] = (code, filename.startswith(_PACKAGE_DIR) or
                                          "numpy" in filename.split(os.sep)[-3:-1])
        if not known[1]:
            return frame
        frame = frame.f_back
    return None


_INTERNAL: dict = {}        # id(code) -> (code, whether its frames are jitad's or NumPy's)


def describe_frame(frame) -> tuple[str, str]:
    """(`file:line (fn)`, the source line text) for error messages and list comments."""
    if frame is None:
        return "<unknown>", ""
    code = frame.f_code
    key = (id(code), frame.f_lasti)        # the instruction determines the line
    described = _DESCRIBED.get(key)
    if described is None or described[0] is not code:
        line = _line_number(frame)
        where = f"{os.path.basename(code.co_filename)}:{line} ({code.co_name})"
        described = _DESCRIBED[key] = (
            code, (where, linecache.getline(code.co_filename, line).strip()))
    return described[1]


_DESCRIBED: dict = {}       # (id(code), instruction offset) -> (code, description)
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
    aux: object = None          # has_aux: the aux structure, AuxSlot(k) for output 1 + k
    read: frozenset = frozenset()   # ids of arrays it read values of besides passing them


class _TraceState:
    def __init__(self, input_names):
        self.builder = Builder(REGISTRY, used_names=set(input_names))
        self.guards: list = []
        self.reads_sizes = False
        self.consts: list = []        # (Var, ndarray) for arrays captured from the user's code
        self.const_ids: dict = {}
        self.internal_consts: dict = {}   # value -> array: see numpy_functions._internal
        self.scalars: dict = {}       # (prim, operands, params) -> (Var, value): see `_bind`
        self.read: set = set()        # ids of arrays it and traces nested in it read values of


_STATE = threading.local()


def _state() -> _TraceState:
    state = getattr(_STATE, "current", None)
    if state is None:
        raise TraceError("a jitad tracer was used outside of tracing (did a traced value escape "
                         "the function, e.g. into a global or a closure?)")
    return state


def bind(prim, *args, **params):
    """Apply a primitive to tracers/constants: record an entry and compute its value."""
    return _bind(prim, args, params, False)


def _bind(prim, args, params, in_place):
    """`bind`; with `in_place`, the value of an update is computed into args[0]'s array.
    (Called by this module's functions only: the user's frame is past the caller's.)"""
    state = getattr(_STATE, "current", None) or _state()
    if prim in _SCALAR_PRIMITIVES:
        out = _bind_scalars(state, prim, args, params)
        if out is not None:
            return out
    if prim is _ADD and _all_bool(args):
        # NumPy adds bools as a logical or (True + True is True); printed as `+`, compiled
        # element code would add them as integers (2). A select says what NumPy does.
        return _bind(_SELECT, (args[0], True, args[1]), {}, in_place)
    operands, values = [], []
    for a in args:
        if isinstance(a, Tracer):
            operands.append(a.node)
            values.append(a.value)
        else:
            operand, value = _constant_operand(state, a)
            operands.append(operand)
            values.append(value)
    key = None
    if not prim.effect and "rule" not in params and not (
            getattr(prim.shape_rule, "elementwise", False) and any(a.shape for a in operands)):
        # A scalar computed again from the same operands (`p[0]` in every iteration of a
        # loop) is the same value: recorded once (simplify would share it anyway). (Not
        # looked up for elementwise operations of arrays: their results are arrays.)
        try:
            key = (prim.name, _params_key(params) if params else "()",  # (reprs tell 0.0 from
                   *[a if type(a) is Var else repr(a.value) for a in operands])  # -0.0, 1 from True)
            known = state.scalars.get(key)
        except TypeError:       # (unhashable parameters)
            key = known = None
        if known is not None:
            return Tracer(*known)
    frame = user_frame(3)       # (past `_bind` and its caller, both jitad's)
    builder = state.builder
    builder.loc = describe_frame(frame)[0]
    try:
        var = builder.bind(prim, *operands, **params)
    except ShapeError as error:
        raise type(error)(located(f"{prim.name}: {error}", frame)) from None
    except IndexError as error:
        raise IndexError(located(f"{prim.name}: {error}", frame)) from None
    entry = builder.entries[-1]
    try:
        value = (prim.impl_in_place if in_place else prim.impl)(  # IEEE float64: log(-1) is
            *values, **entry.params)                                # NaN, as compiled
    except (IndexError, ValueError) as error:     # NumPy's, e.g. an index out of bounds
        raise _numpy_error_kind(error)(located(f"{prim.name}: {error}", frame)) from None
    out = Tracer(var, value)
    if key is not None and not var.shape and not isinstance(value, np.ndarray):
        state.scalars[key] = var, value       # (immutable: a NumPy or Python scalar)
    if prim.view and var.shape and isinstance(args[0], Tracer):
        _note_view(args[0], out, entry.params.get("index") if prim.name == "getitem" else None)
    return out


_ADD, _SELECT = REGISTRY["add"], REGISTRY["select"]


def _all_bool(args) -> bool:
    """Are all operands bool (traced, Python, NumPy scalars or arrays)?"""
    for a in args:
        if isinstance(a, Tracer):
            if a.node.dtype != "bool":
                return False
        elif not isinstance(a, (bool, np.bool_)) and not (
                isinstance(a, np.ndarray) and a.dtype == np.bool_):
            return False
    return True


def _params_key(params):
    """`params` in the key of a known scalar: the repr of the sorted items (reprs tell 0.0
    from -0.0, 1 from True), or the items themselves where each value is an int or a tuple
    of ints (`n=2`, `index=(3,)`: equal items have equal reprs). TypeError: unhashable."""
    frozen = tuple(sorted(params.items()))
    for _, value in frozen:
        if type(value) is tuple:
            for item in value:
                if type(item) is not int:
                    break
            else:
                continue
        elif type(value) is int:
            continue
        hash(frozen)            # (TypeError: unhashable parameters, such as arrays)
        return repr(frozen)
    return frozen


def _numpy_error_kind(error) -> type:
    """The class NumPy's error is known by (`except np.linalg.LinAlgError` keeps working;
    jitad's own check classes are plain ValueErrors and IndexErrors)."""
    for kind in (np.linalg.LinAlgError, IndexError):
        if isinstance(error, kind):
            return kind
    return ValueError


def _bind_scalars(state, prim, args, params):
    """`_bind` of an elementwise primitive on one or two float64 scalars (tracers, Python
    floats and ints; one tracer at least) with integer parameters if any: the common case of
    scalar code, without the generic steps. The same entry, name, location, value and reuse
    of a known scalar as `_bind`; None (take `_bind`'s way) for other operands."""
    builder = state.builder
    if type(builder) is not Builder:
        return None
    params_key = "()"
    if params:                  # (`x ** 2`'s n=2: integers, the key's part a tuple)
        try:
            params_key = _params_key(params)
        except TypeError:       # (unhashable parameters)
            return None
        if type(params_key) is not tuple or "index" in params:
            return None
    if len(args) == 2:
        x, y = _scalar_operand(args[0]), _scalar_operand(args[1])
        if x is None or y is None or x[2] is None and y[2] is None:
            return None
        operands, values = (x[0], y[0]), (x[1], y[1])
        key = (prim.name, params_key, x[2] or repr(x[0].value), y[2] or repr(y[0].value))
    elif len(args) == 1:
        x = _scalar_operand(args[0])
        if x is None or x[2] is None:
            return None
        operands, values, key = (x[0],), (x[1],), (prim.name, params_key, x[2])
    else:
        return None
    known = state.scalars.get(key)
    if known is not None:
        return Tracer(*known)
    frame = user_frame(4)       # (past this function, `_bind` and its caller, all jitad's)
    builder.loc = describe_frame(frame)[0]
    var = builder.append(prim, operands, dict(params) if params else {},  # (the elementwise
                         "float64", ())                  # rule's result for such operands)
    operation = None if params else _FLOAT_OPERATIONS.get(prim)
    try:
        if operation is not None and type(values[0]) is np.float64 and \
                type(values[1]) is np.float64:
            try:
                value = np.float64(operation(*values))
            except ZeroDivisionError:   # (NumPy's is inf or NaN)
                value = prim.evaluator(_SCALAR_RANKS[2])(*values)
        else:
            value = prim.evaluator(_SCALAR_RANKS[len(values)], params)(*values)
    except (IndexError, ValueError) as error:
        raise _numpy_error_kind(error)(located(f"{prim.name}: {error}", frame)) from None
    if not isinstance(value, np.ndarray):
        state.scalars[key] = var, value
    return Tracer(var, value)


def _scalar_operand(a):
    """(operand, value as `impl` computes with it, the Var or None for a literal) of a
    float64 scalar tracer or a Python float or int (as `_constant_operand` makes it); None
    for other values."""
    if type(a) is Tracer:
        node, value = a.node, a.value
        if type(node) is Var and not node.shape and node.dtype == "float64":
            if type(value) is np.float64:
                return node, value, node
            if type(value) is float:
                return node, np.float64(value), node
        return None
    if type(a) is float:
        return Literal(a), np.float64(a), None
    if type(a) is int and -2 ** 63 <= a < 2 ** 63:
        return Literal(a), a, None
    return None


# Primitives whose shape rule is `core.elementwise_rule` (float64 scalars make a float64
# scalar, whatever the parameters), without their normalization, effects or views: see
# `_bind_scalars`.
_SCALAR_PRIMITIVES = frozenset(
    prim for prim in REGISTRY.values() if getattr(prim.shape_rule, "elementwise", False)
    and prim.normalize is None and not prim.effect and not prim.view)
_SCALAR_RANKS = [(0,) * n for n in range(8)]
# The value of these on two float64 scalars is Python's float operation's (IEEE float64, as
# NumPy's: the same bits, without NumPy's error state; x / 0.0 raises: NumPy's evaluator).
_FLOAT_OPERATIONS = {REGISTRY["add"]: float.__add__, REGISTRY["sub"]: float.__sub__,
                     REGISTRY["mul"]: float.__mul__, REGISTRY["div"]: float.__truediv__}


def _constant_operand(state, value):
    """A Python scalar becomes a Literal; an array becomes a hidden constant input."""
    value = plain(value)
    if isinstance(value, (bool, int, float, np.bool_, np.integer, np.floating)):
        literal = value.item() if isinstance(value, np.generic) else value
        if type(literal) is int and not -2 ** 63 <= literal < 2 ** 63:
            literal = value = float(literal)   # as NumPy computes with it (no int64 literal)
        return Literal(literal), value
    if isinstance(value, (list, tuple)):
        value = np.asarray(value)
    if isinstance(value, np.ndarray) and type(value) is not np.ndarray:
        raise TraceError(located(
            f"a {type(value).__module__}.{type(value).__name__} (an ndarray subclass) is used "
            "with traced values: jitad computes with plain ndarrays only (its masks, matrix "
            "products or other overrides would be lost); convert it with np.asarray(...) "
            "(or use explicit masks with np.where)"))
    if isinstance(value, np.ndarray):
        if value.ndim == 0:
            return Literal(value.item()), value.item()
        if value.dtype.kind not in "fiub" or not value.dtype.isnative or \
                value.dtype.kind == "f" and value.dtype.itemsize not in (4, 8):
            raise TraceError(located(   # (float16, byte-swapped: the compiled code cannot read it)
                f"unsupported constant array of dtype {value.dtype.str}: convert it outside the "
                "function (e.g. c = c.astype(np.float64)) or pass it as an argument"))
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
        if not isinstance(other, _OPERAND_TYPES):       # (`_is_operand`, inline)
            return _not_operand(other, prim_name)
        return _bind(prim, (other, self) if swap else (self, other), {}, False)  # (`bind`)
    return method


def _bool_checked(add):
    """`a + b`, refusing two scalar bools: NumPy's add as a logical or (True), Python's as
    integers (2), and a traced scalar cannot tell which it stands for."""
    def method(self, other):
        if self.node.dtype == "bool" and self.node.shape == () and \
                getattr(other, "shape", ()) == () and _all_bool((other,)):
            raise TraceError(located(
                "adding two traced bools: NumPy's add as a logical or (True + True is True), "
                "Python's as integers (2); write np.logical_or(a, b), or count with "
                "jitad.where(a, 1.0, 0.0) + jitad.where(b, 1.0, 0.0)"))
        return add(self, other)
    return method


def guard_outcome(value, where) -> bool:
    """The outcome of a branch on the traced scalar `value`, recorded as a guard that
    `where` ((location, source text) of the branch) names in errors."""
    cond = value if value.node.dtype == "bool" else bind(REGISTRY["ne"], value, 0)
    outcome = bool(cond.value)
    state = _state()
    state.builder.loc = where[0]
    state.builder.bind(REGISTRY["guard"], cond.node, expected=outcome, id=len(state.guards))
    state.guards.append(where)
    return outcome


def _is_operand(value) -> bool:
    return isinstance(value, _OPERAND_TYPES)


def _not_operand(value, operation):
    """NotImplemented (Python then tries the other operand), or a clear error for values
    no traced operation takes (complex numbers, strings); `==` with them is False."""
    if isinstance(value, (complex, str, bytes)) and operation not in ("eq", "ne"):
        raise TraceError(located(f"{operation} of a traced value and a {type(value).__name__} "
                                 "is not supported (jitad computes in float64)"))
    return NotImplemented


def _unsupported_operator(symbol):
    def method(self, *other):
        raise TraceError(located(f"the {symbol} operator on a traced value is not supported "
                                 "(it has no derivative jitad knows; np.where selects without "
                                 "branching)"))
    return method


def _logical(symbol):
    """`&`, `|`, `^` of bools (masks such as `(x > 0) & (x < 1)`): selects, as NumPy's
    logical and/or/xor; of other dtypes (bitwise on integers) a TraceError."""
    def method(self, other):
        if not isinstance(other, _OPERAND_TYPES):
            return _not_operand(other, symbol)
        if not _all_bool((self, other)):
            raise TraceError(located(f"the {symbol} operator on traced values is supported for "
                                     "bools (masks) only: jitad computes integers as int64 and "
                                     "floats as float64"))
        if symbol == "&":
            return _bind(_SELECT, (self, other, False), {}, False)
        if symbol == "|":
            return _bind(_SELECT, (self, True, other), {}, False)
        return _bind(REGISTRY["ne"], (self, other), {}, False)
    return method


def _power(base, exponent):
    """`base ** exponent`: integral exponents become `integer_pow` (cheaper, exact at x <= 0)."""
    if isinstance(exponent, (int, np.integer, float, np.floating)) and not isinstance(exponent, bool) \
            and float(exponent).is_integer() and abs(exponent) <= 64:
        n = int(exponent)
        if n == 1:
            return Tracer(base.node, base.value)
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

    # base: None for an array the function made (writable in place), a description for an
    # argument or constant, (root, index) for a view of a made array (see `_note_view`);
    # views: the live views of a made array (marked stale when it is updated).
    __slots__ = ("node", "value", "base", "views")
    __array_priority__ = 1000

    def __init__(self, node: Var, value, base=None):
        self.node = node
        self.value = value
        self.base = base
        self.views = None

    def __repr__(self) -> str:
        return f"Tracer({self.node.name}: {self.node.type_text()})"

    # arithmetic
    __add__, __radd__ = _bool_checked(_binary("add")), _bool_checked(_binary("add", swap=True))
    __sub__, __rsub__ = _binary("sub"), _binary("sub", swap=True)
    __mul__, __rmul__ = _binary("mul"), _binary("mul", swap=True)
    __truediv__, __rtruediv__ = _binary("div"), _binary("div", swap=True)

    def __matmul__(self, other):
        return numpy_functions.matmul(self, other) if _is_operand(other) else NotImplemented

    def __rmatmul__(self, other):
        return numpy_functions.matmul(other, self) if _is_operand(other) else NotImplemented

    __lt__, __le__, __gt__, __ge__ = _binary("lt"), _binary("le"), _binary("gt"), _binary("ge")
    __eq__, __ne__ = _binary("eq"), _binary("ne")
    __hash__ = object.__hash__

    def __pow__(self, exponent, modulo=None):
        if modulo is not None:
            _unsupported_operator("pow(x, y, modulo)")(self)
        return _power(self, exponent) if _is_operand(exponent) else _not_operand(exponent, "pow")

    def __rpow__(self, base):
        return bind(REGISTRY["pow"], base, self) if _is_operand(base) else _not_operand(base, "pow")

    __mod__, __rmod__ = _binary("remainder"), _binary("remainder", swap=True)

    __floordiv__ = _binary("floor_divide")
    __rfloordiv__ = _binary("floor_divide", swap=True)

    __divmod__ = __rdivmod__ = _unsupported_operator("divmod()")
    __and__ = __rand__ = _logical("&")
    __or__ = __ror__ = _logical("|")
    __xor__ = __rxor__ = _logical("^")
    __lshift__ = __rlshift__ = _unsupported_operator("<<")
    __rshift__ = __rrshift__ = _unsupported_operator(">>")

    def __invert__(self):
        if self.node.dtype == "bool" and self.node.shape == ():
            raise TraceError(located(
                "~ of a traced scalar bool: NumPy's is a logical not (False), Python's bool "
                "gives -2, and a traced scalar cannot tell which it stands for; write "
                "np.logical_not(a)"))
        return _logical_not(self)

    def __neg__(self):
        return bind(REGISTRY["neg"], self)

    def __pos__(self):
        return Tracer(self.node, self.value)     # a new array, as NumPy's

    def __abs__(self):
        return bind(REGISTRY["abs"], self)

    # branching and conversion
    def __bool__(self):
        if self.node.shape != ():
            raise TraceError(located(f"the truth value of a traced array of shape {self.node.shape} "
                                     "is ambiguous; use jitad.where / np.where, or .any()/.all() "
                                     "outside the traced function"))
        return guard_outcome(self, describe_frame(user_frame()))

    def _concretize(self, what):
        raise TraceError(located(
            f"{what} of a traced value: jitad cannot turn a traced value into a Python number "
            "(float()/int(), and functions written in C that jitad does not trace, do this). "
            "Keep the value traced: use arithmetic, np.* or math.* functions jitad supports "
            "(math functions are traced in your function and the Python functions it calls, "
            "not inside methods of objects or functions held in containers)"))

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

    def __complex__(self):
        self._concretize("complex()")

    def item(self, *index):
        """The single element of a size-1 traced value, itself traced (as NumPy's
        `.item()` returns a Python scalar)."""
        if len(index) == 1:         # a flat index, as in NumPy
            return (self if self.ndim == 1 else _reshape(self, (-1,)))[index[0]]
        if index:
            return self[index]
        if self.node.shape == ():
            return self
        if int(np.prod(self.node.shape)) != 1:
            raise ValueError(located(f"can only convert an array of size 1 to a scalar: "
                                     f".item() of a traced array of shape {self.node.shape}"))
        return self[(0,) * self.ndim]

    def tolist(self):
        """Nested lists of traced elements (a traced scalar for a 0-d value), like NumPy's."""
        if self.node.shape == ():
            return self
        return [element.tolist() for element in self]

    @property
    def real(self):
        return self

    @property
    def imag(self):
        return _full_like(self, 0.0)

    def conj(self):
        return self

    conjugate = conj

    def __getattr__(self, name):
        # Only called for attributes Tracer lacks: name NumPy's array methods clearly.
        if not name.startswith("__") and hasattr(np.ndarray, name):
            raise TraceError(located(f"the array attribute .{name} is not supported on traced "
                                     "values (see the README for what jitad traces)"))
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __array__(self, dtype=None, copy=None):
        raise TraceError(located(
            "a traced value was converted to a NumPy array (np.array/np.asarray/np.float64 of "
            "traced values, or a NumPy function jitad does not support); build arrays of traced "
            "values with np.stack([...])"))

    # shapes
    @property
    def shape(self):
        _read_sizes()
        return self.node.shape

    @property
    def size(self):
        _read_sizes()
        return int(np.prod(self.node.shape))

    @property
    def ndim(self):
        return self.node.ndim

    @property
    def dtype(self):
        return np.dtype(self.node.dtype)

    def __len__(self):
        if not self.node.shape:
            raise TraceError(located("len() of a traced scalar"))
        _read_sizes()
        return self.node.shape[0]

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    @property
    def T(self):
        return self.transpose()

    # indexing
    def __getitem__(self, index):
        return _getitem(self, index)

    def __setitem__(self, index, value):
        _setitem(self, index, value)       # (and `r += v`: `_augmented` below)

    # methods that mirror NumPy functions
    sum, mean, max, min, prod = (_reduction(name) for name in _REDUCTIONS)

    def dot(self, other):
        return bind(REGISTRY["matmul"], self, other)

    def transpose(self, *axes):
        axes = axes[0] if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else axes
        return _transpose(self, axes or None)

    def reshape(self, *shape, order="C"):
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        return _reshape(self, shape, order)

    def ravel(self, order="C"):
        return _reshape(self, (-1,), order)

    def flatten(self, order="C"):
        flat = _reshape(self, (-1,), order)
        return Tracer(flat.node, flat.value)     # a copy, as NumPy's (ravel is a view)

    def squeeze(self, axis=None):
        return _squeeze(self, axis)

    def clip(self, a_min=None, a_max=None):
        return _clip(self, a_min, a_max)

    def copy(self):
        return Tracer(self.node, self.value)     # updates of the copy do not show in self

    def astype(self, dtype, copy=True):
        if np.dtype(dtype).kind != "f" or self.node.dtype != "float64":
            raise TraceError(located(f"astype({np.dtype(dtype)}) of a traced {self.node.dtype} "
                                     "value is not supported (jitad computes in float64)"))
        return Tracer(self.node, self.value) if copy else self

    # NumPy dispatch
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        prim = _PLAIN_UFUNCS.get(ufunc)
        if prim is not None and method == "__call__" and not kwargs:   # (as below)
            return _bind(prim, inputs, {}, False)
        if method == "at":                  # np.add.at(r, idx, v): accumulates repeats
            return numpy_functions.ufunc_at(ufunc, *inputs, **kwargs)
        adapter = numpy_functions.ufunc_adapter(ufunc) if method == "__call__" else None
        if adapter is not None and not kwargs:
            return adapter(*inputs)
        prim = _UFUNCS.get(ufunc)
        if ufunc in _LOGICAL_UFUNCS and method == "__call__" and not kwargs:
            return _logical_ufunc(ufunc, inputs)
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


_OPERAND_TYPES = (Tracer, bool, int, float, np.ndarray, np.generic)

# Logical ufuncs of masks: (operator symbol, whether operands are truth values as in
# np.logical_*, where nonzero is True; np.bitwise_* and np.invert take bools only).
_LOGICAL_UFUNCS = {np.bitwise_and: ("&", False), np.bitwise_or: ("|", False),
                   np.bitwise_xor: ("^", False), np.invert: ("~", False),
                   np.logical_and: ("&", True), np.logical_or: ("|", True),
                   np.logical_xor: ("^", True), np.logical_not: ("~", True)}


def _logical_not(a):
    """NumPy's `~` of a traced bool (a mask): a select; of other dtypes a TraceError."""
    if a.node.dtype != "bool":
        raise TraceError(located(f"the ~ operator on a traced {a.node.dtype} value is not "
                                 "supported (on bools, masks, it is a logical not)"))
    return _bind(_SELECT, (a, False, True), {}, False)


def _logical_ufunc(ufunc, inputs):
    """`np.logical_and(a, b)` and the other `_LOGICAL_UFUNCS` of a traced value, also `M &
    traced` with a constant mask `M` (whose ndarray.__and__ calls np.bitwise_and)."""
    symbol, truth = _LOGICAL_UFUNCS[ufunc]
    if truth:
        inputs = [a if _all_bool((a,)) else
                  _bind(REGISTRY["ne"], (a, 0), {}, False) if isinstance(a, Tracer) else
                  np.asarray(a) != 0 for a in inputs]
    if symbol == "~":
        return _logical_not(inputs[0])
    a, b = inputs
    operator = {"&": Tracer.__and__, "|": Tracer.__or__, "^": Tracer.__xor__}[symbol]
    return operator(a, b) if isinstance(a, Tracer) else operator(b, a)


# ---------------------------------------------------------------- lowering NumPy calls

def _as_tracer(value):
    operand, concrete = _constant_operand(_state(), value)
    return Tracer(operand, concrete, _CONSTANT) if isinstance(operand, Var) else value


_CONSTANT = "a constant array (captured from outside the function)"


def _axis_index(axis, ndim: int) -> int:
    """NumPy's normalize_axis_index: `axis` in [-ndim, ndim) as a non-negative int, else a
    located AxisError (a ValueError and an IndexError, as NumPy raises), never a wrap."""
    axis = operator.index(axis)
    if not -ndim <= axis < ndim:
        raise np.exceptions.AxisError(located(
            f"axis {axis} is out of bounds for array of dimension {ndim}"))
    return axis % ndim


def _axis_tuple(axis, ndim: int) -> tuple:
    """NumPy's normalize_axis_tuple: each axis checked, repeats a ValueError."""
    axes = (axis,) if not isinstance(axis, (tuple, list)) else tuple(axis)
    out = tuple(_axis_index(a, ndim) for a in axes)
    if len(set(out)) != len(out):
        raise ValueError(located(f"repeated axis in {axis!r}"))
    return out


def _transpose(x, axes=None):
    axes = tuple(reversed(range(x.ndim))) if axes is None \
        else tuple(_axis_index(a, x.ndim) for a in axes)
    if axes == tuple(range(x.ndim)):
        return x
    return bind(REGISTRY["transpose"], x, axes=axes)


def _reshape(x, shape, order="C"):
    """NumPy's reshape in C or Fortran index order (order 'A' and 'K' follow the memory
    layout, which a trace does not fix: they are a TraceError beyond one axis)."""
    shape = (shape,) if isinstance(shape, int) else tuple(int(d) for d in shape)
    if order not in ("C", "F", "A", "K"):
        raise TraceError(located(f"reshape: order must be 'C', 'F', 'A' or 'K', got {order!r}"))
    if order == "C" or x.ndim <= 1 and len(shape) <= 1:
        return bind(REGISTRY["reshape"], x, shape=shape)
    if order != "F":
        raise TraceError(located(f"reshape/ravel with order={order!r} depends on the memory "
                                 "layout, which jitad does not trace: use order='C' or 'F'"))
    reversed_x = _transpose(x, tuple(range(x.ndim))[::-1])      # F order is C order of x.T
    flat = bind(REGISTRY["reshape"], reversed_x, shape=shape[::-1])
    return _transpose(flat, tuple(range(len(shape)))[::-1])


def _expand_dims(x, axis):
    _axis_tuple(axis, x.ndim + (len(axis) if isinstance(axis, (tuple, list)) else 1))
    return bind(REGISTRY["expand_dims"], x, axis=axis)


def _squeeze(x, axis=None):
    shape = x.node.shape
    axes = tuple(i for i, d in enumerate(shape) if d == 1) if axis is None \
        else normalize_axes(axis, x.ndim)
    if any(shape[a] != 1 for a in axes):
        raise ShapeError(located(f"cannot squeeze axis {axis} of shape {shape}: size is not 1"))
    _read_sizes()        # which axes have size 1 depends on the concrete shape
    return bind(REGISTRY["reshape"], x, shape=tuple(d for i, d in enumerate(shape) if i not in axes))


def _clip(x, a_min=None, a_max=None, out=None, *, min=None, max=None, **kwargs):
    unsupported = sorted(kwargs) + (["out"] if out is not None else [])
    if unsupported:
        raise TraceError(located(f"np.clip: unsupported arguments {unsupported} on traced values"))
    a_min = min if a_min is None else a_min         # (NumPy 2.1's names)
    a_max = max if a_max is None else a_max
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
    if axis is None:        # NumPy flattens each array first
        arrays, axis = [_reshape(a, (-1,)) for a in arrays], 0
    ndim = arrays[0].ndim
    if ndim == 0:
        raise ShapeError(located("np.concatenate: zero-dimensional arrays cannot be "
                                 "concatenated (np.stack makes an array of scalars)"))
    return bind(REGISTRY["concatenate"], *arrays, axis=_axis_index(axis, ndim))


def _stack(arrays, axis=0):
    arrays = [a if isinstance(a, Tracer) else _as_tracer(np.asarray(a)) for a in arrays]
    ndim = np.ndim(arrays[0].value) + 1
    axis = _axis_index(axis, ndim)
    return _concatenate([_expand_dims(a, axis) for a in arrays], axis=axis)


def _full_like(x, fill_value, dtype=None):
    return bind(REGISTRY["full_like"], x, fill_value)


def _getitem(x, index):
    if type(index) is int:      # `t[i]`: the common case, as the loop below does it
        _read_sizes()
        return bind(REGISTRY["getitem"], x, index=(index,))
    items = index if isinstance(index, tuple) else (index,)
    if numpy_functions.is_advanced(items):
        return numpy_functions.advanced_getitem(x, items)
    if len(items) == 1 and isinstance(items[0], (Tracer, np.ndarray, list)):
        idx = items[0]
        idx = idx if isinstance(idx, Tracer) else _as_tracer(np.asarray(idx))
        if idx.node.dtype not in ("int64",):
            raise TraceError(located(f"indexing with a traced {idx.node.dtype} value: indices must "
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


def _ndim(x) -> int:
    return x.node.ndim if isinstance(x, Tracer) else np.ndim(x)


def _flat(x):
    """`x` raveled unless it is 1-D (np.outer ravels its operands)."""
    if _ndim(x) == 1:
        return x
    return _reshape(x, (-1,)) if isinstance(x, Tracer) else np.ravel(x)


_FUNCTIONS = {
    **{getattr(np, name): getattr(Tracer, name) for name in _REDUCTIONS},
    np.dot: lambda a, b: bind(REGISTRY["matmul"], a, b),
    np.outer: lambda a, b: bind(REGISTRY["outer"], _flat(a), _flat(b)),
    np.transpose: lambda x, axes=None: _transpose(x, axes),
    np.reshape: _reshape,
    np.ravel: lambda x, order="C": _reshape(x, (-1,), order),
    np.expand_dims: _expand_dims,
    np.squeeze: _squeeze,
    np.concatenate: _concatenate,
    np.stack: _stack,
    np.where: _where,
    np.clip: _clip,
    np.zeros_like: lambda x, dtype=None: _full_like(x, 0.0),
    np.ones_like: lambda x, dtype=None: _full_like(x, 1.0),
    np.full_like: _full_like,
    np.copy: lambda x: Tracer(x.node, x.value),
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


# ---------------------------------------------------------------- arrays built in place
#
# `r = np.zeros(n)` inside traced code makes a traced array (a `full` entry): the cloned
# code sees a copy of the `numpy` module whose array-creation functions trace (every
# other attribute is NumPy's own object; nothing process-wide changes). `r[i] = v`,
# `r[a:b] += v`, `r *= 2` then record functional updates (`index_update`, `scatter`) and
# rebind the tracer to the new value, so every name bound to `r` sees the update.
# Aliasing: a view of a made array (`v = r[1:]`) is recorded with its root; updating the
# root marks live views stale (using one then raises), updating through a view is an error
# except `v += ...` on a plain slice of the root (and `r[a:b] += ...`, which goes through
# one). Arguments and captured constants are never updated (the caller's data).

def _note_view(source, view, index):
    """Record that `view` (an array) shares memory with `source` (made by `index` from it)."""
    base = source.base
    if base is None:
        root = source
    elif type(base) is tuple:
        root, index = base[0], None
    else:                       # a view of an argument or a constant: never writable
        view.base = base
        return
    view.base = (root, index)
    if root.views is None:
        root.views = []
    root.views.append(view)


class _StaleTracer(Tracer):
    """A view taken before its array was updated in place: NumPy would show the update
    through it, the trace would not, so any use is an error (`base` says where)."""

    __slots__ = ()

    @property
    def var(self):
        raise TraceError(located(
            "this array is a view (a slice, reshape or transpose) of an array that was "
            f"updated in place after the view was taken (at {self.base}): NumPy would show the "
            "update through the view, jitad does not; take the view after the update, or "
            "copy it (v = r[1:].copy()) before"))

    value = var

    def __repr__(self) -> str:
        return "Tracer(stale view)"


def _write(target, prim_name, *operands, **params):
    """`target` becomes `prim(target, *operands)`: its live views go stale. The value of an
    `index_update` is computed in place when nothing else holds target's array (so a loop
    of n updates copies no array; a copy (`r.copy()`) or a view holds it, and then it is
    copied first, as `index_update`'s impl does)."""
    in_place = prim_name == "index_update" and _sole_holder(target)
    _rebind(target, _bind(REGISTRY[prim_name], (target, *operands), params, in_place))


def _sole_holder(target) -> bool:
    """Whether `target.value` is an array that owns its memory and that nothing but `target`
    refers to (a NumPy view of it refers to it as its base; CPython counts references)."""
    value = target.value
    return type(value) is np.ndarray and value.base is None and value.flags.writeable and \
        sys.getrefcount(value) == 3     # target's slot, `value` and getrefcount's argument


def _rebind(target, new):
    target.node, target.value = new.node, new.value
    if target.views:
        where = describe_frame(user_frame())[0]
        for view in target.views:
            view.__class__ = _StaleTracer
            view.base = where
        target.views = None


def _check_writable(target, what):
    base = target.base
    if base is None:
        return
    if isinstance(base, str):
        raise TraceError(located(
            f"in-place assignment to {base} ({what}) is not supported: it would change the "
            "caller's data. Copy it first (y = x.copy()) or build a new array (np.where, "
            "np.concatenate); arrays the function makes (np.zeros, np.empty...) update freely"))
    raise TraceError(located(
        f"in-place assignment through a view of an array (a slice, reshape or transpose; "
        f"{what}) is not supported: update the array itself (r[1:][0] = v is r[1] = v)"))


def _refuse_write(what: str):
    raise TraceError(located(
        f"writing into an array the function reads besides its arguments ({what}; a global, "
        "closure variable, default, attribute or dict item) is not supported: the write "
        "would happen once, while tracing, and never at compiled calls. Copy it first "
        "(y = G.copy()) or pass it as an argument"))


def _setitem(target, index, value):
    """`target[index] = value`, recorded as a functional update."""
    _check_writable(target, "x[...] = ...")
    if not isinstance(value, Tracer):
        value = value if _is_operand(value) else np.asarray(value, dtype=float)
    items = index if isinstance(index, tuple) else (index,)
    advanced = type(index) is not int and numpy_functions.is_advanced(items)    # (r[i]: not)
    if advanced or (    # index arrays among others, masks, Ellipsis,
            len(items) == 1 and isinstance(items[0], (np.ndarray, list))) or (  # constant indices
            len(items) == 1 and isinstance(items[0], Tracer) and items[0].ndim == 0):  # r[k]
        numpy_functions.advanced_setitem(target, items, value)
        return
    if len(items) == 1 and isinstance(items[0], (Tracer, np.ndarray, list)):
        idx = items[0] if isinstance(items[0], Tracer) else _as_tracer(np.asarray(items[0]))
        if idx.node.dtype != "int64" or idx.ndim != 1:
            raise TraceError(located(f"in-place update with a {idx.node.dtype} index of shape "
                                     f"{idx.node.shape}: use a 1-D integer array (or ints/slices)"))
        # (shaped at run time like the index array: a compiled call takes any length)
        like = idx if target.ndim == 1 else bind(REGISTRY["gather"], target, idx)
        value = _broadcast_into(value, idx.node.shape + target.node.shape[1:], exact=True,
                                like=like)
        _write(target, "scatter", value, idx)
        return
    static = []
    for item in items:
        if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            static.append(int(item))
        elif isinstance(item, slice) and all(v is None or isinstance(v, (int, np.integer))
                                             for v in (item.start, item.stop, item.step)):
            static.append(("slice", item.start, item.stop, item.step))
        else:
            raise TraceError(located(f"unsupported index {item!r} in an in-place update: use "
                                     "static ints and slices, or one 1-D integer array"))
    _read_sizes()               # the updated positions are valid for these sizes only
    static = tuple(static)
    value = _broadcast_into(value, _indexed_region(target, static), exact=False)
    if isinstance(value, Tracer) and type(value.base) is tuple and value.base[0] is target:
        view_index = value.base[1]
        if view_index is not None and tuple(view_index) == _canonical_index(target, static):
            return              # `r[a:b] += v`: the view's own update already wrote r[a:b]
    _write(target, "index_update", value, index=static)


def _broadcast_into(value, region, exact, like=None):
    """`value` broadcast to the updated region (a scalar stays one unless `exact`); `like`, an
    array shaped like the region at run time, gives the broadcast its shape there."""
    shape = value.node.shape if isinstance(value, Tracer) else np.shape(value)
    if shape == region or (shape == () and not exact):
        return value
    try:
        fits = np.broadcast_shapes(shape, region) == region
    except ValueError:
        fits = False
    if not fits:
        raise ShapeError(located(f"could not broadcast input array from shape {shape} into "
                                 f"shape {region}"))
    if like is not None:
        return bind(REGISTRY["full_like"], like, 0.0) + value
    return bind(REGISTRY["full"], 0.0, shape=region) + value


def _indexed_region(target, static):
    shape = target.node.shape
    if len(static) == len(shape) and all(type(i) is int and -d <= i < d
                                         for i, d in zip(static, shape)):
        return ()               # (an element: the common case, without NumPy)
    try:
        return np.broadcast_to(np.empty(()), target.node.shape)[
            tuple(i if isinstance(i, int) else slice(*i[1:]) for i in static)].shape
    except IndexError as error:
        raise IndexError(located(f"in-place update: {error}")) from None


def _canonical_index(target, static):
    return REGISTRY["getitem"].canonical_params((target.node,), {"index": static})["index"]


def _augmented(prim_name, symbol):
    """`r += v`-style operators: arrays update in place (as NumPy's), scalars rebind."""
    def method(self, other):
        if self.node.shape == () or not _is_operand(other):
            return NotImplemented           # a scalar rebinds, as Python numbers do
        new = _power(self, other) if prim_name == "pow" else bind(REGISTRY[prim_name], self, other)
        if new.node.shape != self.node.shape:
            raise ValueError(located(f"non-broadcastable output operand with shape "
                                     f"{self.node.shape} doesn't match the broadcast shape "
                                     f"{new.node.shape} ({symbol})"))
        base = self.base
        if type(base) is tuple and base[1] is not None:     # a plain slice of a made array
            root, index = base
            _write(root, "index_update", new, index=index)
            self.__class__ = Tracer          # still a view of root, now showing the update
            self.node, self.value, self.base = new.node, new.value, base
            root.views = [self]
            return self
        _check_writable(self, f"x {symbol} ...")
        _rebind(self, new)
        return self
    return method


Tracer.__iadd__, Tracer.__isub__ = _augmented("add", "+="), _augmented("sub", "-=")
Tracer.__imul__, Tracer.__itruediv__ = _augmented("mul", "*="), _augmented("div", "/=")
Tracer.__ipow__ = _augmented("pow", "**=")


def _floating(dtype) -> bool:
    return dtype is None or dtype is float or np.dtype(dtype).kind == "f"


def _made(shape, fill):
    """A float array of `shape` filled with `fill` (a number or a traced scalar)."""
    shape = (operator.index(shape),) if np.ndim(shape) == 0 else \
        tuple(operator.index(d) for d in shape)
    if isinstance(fill, Tracer) and fill.ndim:
        return bind(REGISTRY["full"], 0.0, shape=shape) + fill
    if not isinstance(fill, Tracer) and np.ndim(fill):
        return bind(REGISTRY["full"], 0.0, shape=shape) + np.asarray(fill, dtype=float)
    return bind(REGISTRY["full"], fill, shape=shape)


def _tracing() -> bool:
    return getattr(_STATE, "current", None) is not None


def _creation(original, fill):
    """np.zeros / ones / empty while tracing: a traced float array (NumPy's else)."""
    def traced(shape, dtype=float, order="C", **kwargs):
        if not _tracing() or kwargs or order != "C" or not _floating(dtype):
            return original(shape, dtype=dtype, order=order, **kwargs)
        return _made(shape, fill)
    traced.__name__, traced.__wrapped__ = original.__name__, original
    return traced


def _traced_full(shape, fill_value, dtype=None, order="C", **kwargs):
    if not _tracing() or kwargs or order != "C" or not (
            _floating(dtype) if dtype is not None else
            isinstance(fill_value, Tracer) or np.asarray(fill_value).dtype.kind == "f"):
        return np.full(shape, fill_value, dtype=dtype, order=order, **kwargs)
    return _made(shape, fill_value)


def _like(original, fill):
    """np.zeros_like-style: a traced float array shaped like `a` (NumPy's else)."""
    def traced(a, *args, dtype=None, order="K", subok=True, shape=None, **kwargs):
        fill_value = args[0] if fill is None and args else kwargs.pop("fill_value", fill)
        if fill is None and len(args) > 1:
            dtype = args[1]
        elif fill is not None and args:
            dtype = args[0]
        floating = _floating(dtype) if dtype is not None else (
            isinstance(a, Tracer) or np.asarray(a).dtype.kind == "f")
        if not _tracing() or kwargs or not floating:
            extra = (fill_value,) if fill is None else ()
            return original(a, *extra, dtype=dtype, order=order, subok=subok, shape=shape,
                            **kwargs)
        if isinstance(a, Tracer) and shape is None:
            return _full_like(a, fill_value)        # as through NumPy's dispatch
        return _made(np.shape(a) if shape is None else shape, fill_value)
    traced.__name__, traced.__wrapped__ = original.__name__, original
    return traced


def _traced_eye(N, M=None, k=0, dtype=float, order="C", **kwargs):
    """np.eye while tracing: a traced float array (zeros plus the constant identity), so
    `A = np.eye(n); A[0] = x` updates it (NumPy's else)."""
    if not _tracing() or kwargs or order != "C" or not _floating(dtype) or \
            any(isinstance(v, Tracer) for v in (N, M, k)):
        return np.eye(N, M, k, dtype=dtype, order=order, **kwargs)
    ones = np.eye(N, M, k)
    return _made(ones.shape, ones)


def _traced_identity(n, dtype=None, **kwargs):
    if not _tracing() or kwargs or (dtype is not None and not _floating(dtype)) or \
            isinstance(n, Tracer):
        return np.identity(n, dtype=dtype, **kwargs)
    return _traced_eye(n)


_traced_eye.__name__, _traced_eye.__wrapped__ = "eye", np.eye
_traced_identity.__name__, _traced_identity.__wrapped__ = "identity", np.identity
_DISPATCHER = type(np.zeros_like)
_NUMPY_CREATION = {
    np.eye: _traced_eye, np.identity: _traced_identity,
    np.zeros: _creation(np.zeros, 0.0), np.ones: _creation(np.ones, 1.0),
    np.empty: _creation(np.empty, 0.0), np.full: _traced_full,
    np.zeros_like: _like(np.zeros_like, 0.0), np.ones_like: _like(np.ones_like, 1.0),
    np.empty_like: _like(np.empty_like, 0.0), np.full_like: _like(np.full_like, None),
}
_traced_full.__name__, _traced_full.__wrapped__ = "full", np.full




# ---------------------------------------------------------------- linear algebra

def _linalg(name):
    def adapter(a):
        return bind(REGISTRY[name], a)
    adapter.__name__ = name
    return adapter


def _solve(a, b):
    return bind(REGISTRY["solve"], a, b)


def _solve_triangular(a, b, trans=0, lower=False, unit_diagonal=False, overwrite_b=False,
                      check_finite=True):
    """scipy.linalg.solve_triangular on traced values (trans=0, no unit diagonal)."""
    if trans not in (0, "N") or unit_diagonal:
        raise TraceError(located("scipy.linalg.solve_triangular: only trans=0 and "
                                 "unit_diagonal=False are supported on traced values"))
    return bind(REGISTRY["solve_triangular"], a, b, lower=bool(lower))


def _slogdet(a):
    return bind(REGISTRY["slogdet_sign"], a), bind(REGISTRY["logabsdet"], a)


def _check_uplo(name, UPLO):
    if UPLO != "L":
        raise TraceError(located(f"np.linalg.{name}: only UPLO='L' is supported on traced values"))


def _eigh(a, UPLO="L"):
    _check_uplo("eigh", UPLO)
    return bind(REGISTRY["eigvalsh"], a), bind(REGISTRY["eigh_vectors"], a)


def _eigvalsh(a, UPLO="L"):
    _check_uplo("eigvalsh", UPLO)
    return bind(REGISTRY["eigvalsh"], a)


def _cholesky(a, upper=False):
    if upper:
        raise TraceError(located("np.linalg.cholesky(upper=True) is not supported on traced "
                                 "values (use the lower factor's transpose, L.T)"))
    return bind(REGISTRY["cholesky"], a)


def _norm(x, ord=None, axis=None, keepdims=False):
    """np.linalg.norm: vector norms (ord None, 2, 1, inf, -inf, p > 0) along an axis or of a
    1-D array; matrix norms ('fro', 1, inf, -1, -inf) of a 2-D array or along two axes."""
    x = x if isinstance(x, Tracer) else _as_tracer(np.asarray(x, dtype=float))
    ndim = x.ndim
    if axis is None:
        if ord is None or (ord == "fro" and ndim == 2):
            return _root_sum_squares(x, None, keepdims)
        if ndim == 1:
            axis = 0
        elif ndim != 2:
            raise TraceError(located(f"np.linalg.norm: ord={ord!r} of a {ndim}-D array needs axis"))
    axes = normalize_axes(axis, ndim)
    if len(axes) == 1:
        return _vector_norm(x, ord, axes[0], keepdims)
    if len(axes) != 2:
        raise TraceError(located(f"np.linalg.norm: axis={axis!r} names {len(axes)} axes (1 or 2)"))
    if ord in (None, "fro"):
        return _root_sum_squares(x, axes, keepdims)
    rows, cols = (0, 1) if axis is None else (axis[0] % ndim, axis[1] % ndim)
    sums = {1: rows, -1: rows, np.inf: cols, -np.inf: cols}
    if ord not in sums:
        raise TraceError(located(f"np.linalg.norm: the matrix norm ord={ord!r} is not supported "
                                 "(spectral and nuclear norms have no rule here; 'fro', 1, inf, "
                                 "-1 and -inf are)"))
    total = bind(REGISTRY["sum"], bind(REGISTRY["abs"], x), axis=sums[ord], keepdims=True)
    other = cols if sums[ord] == rows else rows
    out = bind(REGISTRY[_largest_or_smallest(ord, x.node.shape[other])], total, axis=other,
               keepdims=True)
    return out if keepdims else _reshape(out, tuple(d for i, d in enumerate(x.node.shape)
                                                    if i not in axes))


def _largest_or_smallest(ord, size: int) -> str:
    """The reduction picking a norm's entry along an axis of `size`: max of none is 0 in
    NumPy's norms (min of none raises, as np.min does: the sum of none is 0)."""
    return "min" if ord < 0 else "max" if size else "sum"


def _root_sum_squares(x, axis, keepdims):
    return bind(REGISTRY["sqrt"], bind(REGISTRY["sum"], x * x, axis=axis, keepdims=keepdims))


def _vector_norm(x, ord, axis, keepdims):
    if ord is None or ord == 2:
        return _root_sum_squares(x, axis, keepdims)
    if isinstance(ord, str) or ord == 0:
        raise TraceError(located(f"np.linalg.norm: the vector norm ord={ord!r} is not supported "
                                 "(ord=0 counts nonzeros and has no derivative)"))
    magnitude = bind(REGISTRY["abs"], x)
    if ord == 1:
        return bind(REGISTRY["sum"], magnitude, axis=axis, keepdims=keepdims)
    if ord in (np.inf, -np.inf):
        return bind(REGISTRY[_largest_or_smallest(ord, x.node.shape[axis])], magnitude,
                    axis=axis, keepdims=keepdims)
    return _power(bind(REGISTRY["sum"], _power(magnitude, float(ord)), axis=axis,
                       keepdims=keepdims), 1.0 / float(ord))


_FUNCTIONS.update({
    np.linalg.solve: _solve, np.linalg.inv: _linalg("inv"), np.linalg.det: _linalg("det"),
    np.linalg.slogdet: _slogdet, np.linalg.cholesky: _cholesky, np.linalg.eigh: _eigh,
    np.linalg.eigvalsh: _eigvalsh, np.linalg.norm: _norm,
})


def _is_scipy_solve_triangular(value) -> bool:
    return getattr(value, "__name__", None) == "solve_triangular" and \
        (getattr(value, "__module__", None) or "").startswith("scipy.linalg")


def _scipy_proxy(module):
    """scipy or scipy.linalg as traced code sees it: solve_triangular traces (and, in
    scipy, the special functions numpy_functions traces)."""
    proxy = types.ModuleType(module.__name__, module.__doc__)
    proxy.__dict__.update({name: value if name.startswith("_") else _untraced(value)
                           for name, value in
                           vars(numpy_functions.traced_module(module) or module).items()})
    if module.__name__ == "scipy":
        proxy.linalg = _scipy_proxy(sys.modules.get("scipy.linalg") or module.linalg)
    else:
        proxy.solve_triangular = _traced_scipy_solve_triangular(module.solve_triangular)
    return proxy


def _untraced(fun):
    """A library function or Numba dispatcher as traced code sees it: the watched arrays
    passed to it are read (it may convert them to plain arrays first, or read their memory,
    unseen); jitad's own functions and other values as they are."""
    if type(fun).__module__ == _NUMBA_DISPATCHERS:
        return Compiled(fun)
    module = getattr(fun, "__module__", None) or ""
    return fun if module.partition(".")[0] == "jitad" or type(fun) is not types.FunctionType \
        else Compiled(fun)


_NUMBA_DISPATCHERS = "numba.core.registry"      # (the module of @numba.njit's dispatchers)


def _traced_scipy_solve_triangular(original):
    def solve_triangular(a, b, *args, **kwargs):
        if isinstance(a, Tracer) or isinstance(b, Tracer):
            return _solve_triangular(a, b, *args, **kwargs)
        return original(a, b, *args, **kwargs)
    solve_triangular.__wrapped__ = original
    return solve_triangular


# ---------------------------------------------------------------- math and helper interception
#
# Tracing changes no process-wide state (other threads keep the real `math` module, and
# Numba compiling there resolves `math.sin` as usual). Instead the user's function runs as
# a clone whose globals translate what its code reads: the `math` module becomes a module
# of traced functions, `from math import sin` the traced `sin`, a user function a clone of
# itself (made lazily, memoized per trace), a user module a proxy translating its
# attributes. Closure cells and default values holding such things get translated copies.
# So `math.f(tracer)` works in the function and in the Python helpers it calls at any depth.

def _math_function(original, prim):
    """`math.<name>` while tracing: a registry primitive on traced values, `original` else."""
    arity = len(prim.domain)

    def traced(*args):
        if arity == 1 and len(args) == 1 and type(args[0]) is Tracer and \
                args[0].node.shape == ():      # (the common case, as below)
            return _bind(prim, args, {}, False)
        if any(isinstance(a, Tracer) for a in args):
            if any(isinstance(a, Tracer) and a.node.shape != () for a in args):
                raise TraceError(located(f"math.{original.__name__} of a traced array: math "
                                         f"functions take scalars; use np.{prim.name}"))
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


def _math_unsupported(original):
    """`math.<name>` with no primitive (floor, isnan, fsum...): a clear error on traced values."""
    def untraced(*args, **kwargs):
        if any(isinstance(a, Tracer) for a in args):
            raise TraceError(located(
                f"math.{original.__name__} of a traced value is not supported (jitad traces "
                "math.sin, cos, exp, log...: see the README; np.where selects without branching)"))
        return original(*args, **kwargs)
    untraced.__name__ = original.__name__
    untraced.__wrapped__ = original
    return untraced


def _traced_math_module():
    """A module like `math` whose functions trace (or raise clearly on traced values)."""
    primitives = {f.__name__: prim for prim in REGISTRY.values() for f in prim.traces
                  if isinstance(f, types.BuiltinFunctionType) and getattr(math, f.__name__, None) is f}
    module = types.ModuleType("math", math.__doc__)
    for name, value in vars(math).items():
        if isinstance(value, types.BuiltinFunctionType):
            value = _math_function(value, primitives[name]) if name in primitives \
                else _math_unsupported(value)
        setattr(module, name, value)
    return module


_TRACED_MATH = _traced_math_module()
_UNTRACED = {id(_TRACED_MATH): math, **{id(f): f.__wrapped__ for f in vars(_TRACED_MATH).values()
                                        if hasattr(f, "__wrapped__")},
             **{id(f): f.__wrapped__ for f in _NUMPY_CREATION.values()}}

class _Globals(dict):
    """A clone's globals. Reads go to the real module globals, translated; writes
    (`global n; n += 1`: CPython stores into the dict directly) stay here until the trace
    ends, when `_Interceptor.write_back` copies them into the real globals."""

    __slots__ = ("real", "interceptor", "seen")

    def __missing__(self, name):
        # CPython's LOAD_GLOBAL uses PyObject_GetItem when globals is not an exact dict.
        value = self.real.get(name, _MISSING)
        if value is _MISSING:
            value = self.interceptor.builtins[name]     # KeyError: CPython raises NameError
        seen = self.seen.get(name)      # (a loop reads `math` or `np` at every iteration)
        if seen is not None and seen[0] is value:
            return seen[1]
        translation = self.interceptor.translate(value)
        if type(value) is not functools.partial and type(value) is not types.MethodType:
            self.seen[name] = value, translation    # (those translate anew at every read)
        return translation


_MISSING = object()


class _ModuleProxy:
    """A module as cloned code sees it: attributes translated, assignments passed on."""

    __slots__ = ("_jitad_module", "_jitad_interceptor")

    def __init__(self, module, interceptor):
        object.__setattr__(self, "_jitad_module", module)
        object.__setattr__(self, "_jitad_interceptor", interceptor)

    def __getattr__(self, name):
        return self._jitad_interceptor.translate(getattr(self._jitad_module, name))

    def __setattr__(self, name, value):
        setattr(self._jitad_module, name, self._jitad_interceptor.original(value))

    def __delattr__(self, name):
        delattr(self._jitad_module, name)

    def __repr__(self) -> str:
        return repr(self._jitad_module)


class _Interceptor:
    """The translation for one trace: clones, globals and module proxies, memoized."""

    def __init__(self, fun):
        self.package = (getattr(fun, "__module__", None) or "").partition(".")[0]
        self.translated: dict = {}      # id(original) -> (original, translation)
        self.originals: dict = {}       # id(translation) -> original
        self.namespaces: dict = {}      # id(real globals) -> _Globals
        self.builtins = dict(vars(builtins), __import__=self._import, type=Type)
        self.watch = Watch(Tracer, _refuse_write)   # the arrays cloned code reads
        self.cells: list = []           # (fresh cell, the user's, its translated contents)

    def _user(self, filename: str, module_name) -> bool:
        return user_code(filename, module_name, self.package)

    def translate(self, value):
        """What cloned code sees in place of `value`."""
        kind = type(value)
        if kind is np.ndarray:
            return self.watch.wrap(value)
        if kind is not types.ModuleType:
            replaced = numpy_functions.replacement(value)
            if replaced is not None:        # np.array, scipy.special.logsumexp...
                return replaced
        if kind is types.BuiltinFunctionType:
            if value.__self__ is math:
                return getattr(_TRACED_MATH, value.__name__)
            return _NUMPY_CREATION.get(value, value)
        if kind is _DISPATCHER:                    # np.zeros_like-style NumPy functions
            return _NUMPY_CREATION.get(value, value)
        if kind is types.FunctionType or kind is types.ModuleType or \
                kind.__module__ == _NUMBA_DISPATCHERS:         # (@numba.njit: untraced)
            done = self.translated.get(id(value))
            return done[1] if done is not None else self._translate(value)
        if kind is functools.partial:
            return functools.partial(self.translate(value.func), *value.args, **value.keywords)
        if kind is types.MethodType:
            return types.MethodType(self.translate(value.__func__), value.__self__)
        return value

    def entry(self, fun):
        """The user's `fun` to run for the trace: its Python function cloned, also inside a
        `functools.partial`, a bound method or a callable object."""
        if isinstance(fun, types.FunctionType):
            return self.clone(fun)
        if isinstance(fun, functools.partial):
            return functools.partial(self.entry(fun.func), *fun.args, **fun.keywords)
        if isinstance(fun, types.MethodType):
            return types.MethodType(self.entry(fun.__func__), fun.__self__)
        call = getattr(type(fun), "__call__", None)
        if isinstance(call, types.FunctionType) and not isinstance(
                inspect.getattr_static(type(fun), "__call__", None), staticmethod):
            return types.MethodType(self.clone(call), fun)
        return fun              # (jitad's own objects: called on tracers, they inline)

    def original(self, value):
        """The inverse of `translate` (for values cloned code writes into user modules)."""
        if isinstance(value, Watched):
            return plain(value)
        return self.originals.get(id(value)) or _UNTRACED.get(id(value), value)

    def _translate(self, value):
        if value is math:
            return _TRACED_MATH
        if value is np or value in _NUMPY_CREATION:     # np.array, arrays made in the function
            translation = _TRACED_NUMPY if value is np else _NUMPY_CREATION[value]
            self._remember(value, translation)
            return translation
        if getattr(value, "__name__", None) in ("scipy", "scipy.linalg") or \
                _is_scipy_solve_triangular(value):
            translation = _scipy_proxy(value) if type(value) is types.ModuleType \
                else _traced_scipy_solve_triangular(value)
            self._remember(value, translation)
            return translation
        traced_module = numpy_functions.traced_module(value)
        if traced_module is not None:        # scipy.special: logsumexp, softmax...
            self._remember(value, traced_module)
            return traced_module
        if type(value) is types.ModuleType:     # (a library's: its functions untraced)
            translation = value if value.__name__.partition(".")[0] == "jitad" else \
                _ModuleProxy(value, self)
        elif type(value) is types.FunctionType and \
                self._user(value.__code__.co_filename, value.__module__):
            return self.clone(value)
        else:
            translation = _untraced(value)
        self._remember(value, translation)
        return translation

    def _remember(self, value, translation):
        self.translated[id(value)] = (value, translation)
        self.originals[id(translation)] = value

    def clone(self, fun):
        """`fun` running with translated globals, closure cells and defaults."""
        cells = fun.__closure__ or ()
        fresh = tuple(types.CellType() if _intercepted(_cell_value(c)) else c for c in cells)
        clone = types.FunctionType(fun.__code__, self._namespace(fun.__globals__), fun.__name__,
                                   None, fresh or None)
        self._remember(fun, clone)           # before translating cells: helpers may recurse
        for new, old in zip(fresh, cells):
            if new is not old:
                new.cell_contents = self.translate(old.cell_contents)
                self.cells.append((new, old, new.cell_contents))
        if fun.__defaults__:
            clone.__defaults__ = tuple(self.translate(v) for v in fun.__defaults__)
        if fun.__kwdefaults__:
            clone.__kwdefaults__ = {k: self.translate(v) for k, v in fun.__kwdefaults__.items()}
        clone.__qualname__, clone.__module__, clone.__doc__ = \
            fun.__qualname__, fun.__module__, fun.__doc__
        clone.__dict__ = fun.__dict__        # function attributes stay shared
        return clone

    def _namespace(self, real):
        if isinstance(real, _Globals):      # a clone made by an outer trace (nested calls)
            real = real.real
        namespace = self.namespaces.get(id(real))
        if namespace is None:
            namespace = self.namespaces[id(real)] = _Globals(__builtins__=self.builtins)
            namespace.real, namespace.interceptor, namespace.seen = real, self, {}
        return namespace

    def _import(self, name, globals=None, locals=None, fromlist=(), level=0):
        """`import` inside cloned code (`import math` in a function body)."""
        if isinstance(globals, _Globals):
            globals = globals.real          # the package context of relative imports
        return self.translate(builtins.__import__(name, globals, locals, fromlist, level))

    def write_back(self):
        """Copy the globals and closure variables that traced code assigned into the user's
        module globals and closure cells."""
        for namespace in self.namespaces.values():
            for name, value in dict.items(namespace):
                if name != "__builtins__":
                    namespace.real[name] = self.original(value)
        for fresh, cell, translated in self.cells:
            value = _cell_value(fresh)
            if value is not translated:             # (`nonlocal v; v = ...` in traced code)
                cell.cell_contents = self.original(value)


def _intercepted(value) -> bool:
    """Whether a closure cell's value may translate (the translation decides the rest)."""
    return value is math or type(value) in (types.FunctionType, types.ModuleType,
                                            functools.partial, types.MethodType,
                                            np.ndarray) or (
        type(value) is types.BuiltinFunctionType and value.__self__ is math)


def _cell_value(cell):
    try:
        return cell.cell_contents
    except ValueError:          # an empty cell
        return None


# ---------------------------------------------------------------- entry point

@dataclass(frozen=True)
class AuxSlot:
    """Where an auxiliary output goes in the aux structure: output `1 + index`."""

    index: int


def function_location(fun) -> tuple:
    """(name, "file:line") of the Python function `fun` runs; for a function without Python
    code (a NumPy ufunc such as `np.sin`, `math.sin`: traced by calling it on tracers), its
    name and "<built-in>"."""
    underlying = underlying_function(fun)
    code = getattr(underlying, "__code__", None)
    if code is None:
        return getattr(underlying, "__name__", type(underlying).__name__), "<built-in>"
    return code.co_name, f"{os.path.basename(code.co_filename)}:{code.co_firstlineno}"


def split_aux(result, fun_name: str):
    """`(loss, aux)` -> (loss, aux structure with AuxSlots, aux output operands). Traced
    leaves of aux (in nested tuples/lists) become outputs; other leaves stay as they are."""
    if not (isinstance(result, tuple) and len(result) == 2):
        what = f"a {type(result).__name__} of {len(result)} values" \
            if isinstance(result, (tuple, list)) else f"a {type(result).__name__}"
        raise NonScalarOutputError(f"{fun_name} is differentiated with has_aux=True, so it must "
                                   f"return a pair (loss, aux), but it returned {what}")
    outputs = []

    def walk(tree):
        if isinstance(tree, (tuple, list)):
            return type(tree)(walk(t) for t in tree)
        if isinstance(tree, Tracer):
            outputs.append(tree.node)
            return AuxSlot(len(outputs) - 1)
        return plain_all(tree)      # (no watched arrays: their views live for the trace)
    return result[0], walk(result[1]), outputs


@collector.paused
def trace(fun, args: list, runtime: list, names: list, has_aux: bool = False,
          held: tuple = ()) -> Trace:
    """Trace `fun(*args)`.

    Args:
        fun: the user's function.
        args: argument values, positional.
        runtime: per argument, whether it is a runtime input (becomes a Wengert input).
        names: per argument, its name in the Wengert list.
        held: (dict, key) pairs holding arrays the trace may read as attributes or dict
            items (`Reads.held`): they hold watched views while it runs.

    Raises:
        TraceError, ShapeError, NonScalarOutputError (from the caller's output check).
    """
    with _TRACE_LOCK:
        state = _TraceState([n for n, r in zip(names, runtime) if r])
        interceptor = _Interceptor(fun)
        inputs, traced_args = [], []
        for value, is_runtime, name in zip(args, runtime, names):
            if is_runtime:
                var = Var(name, _dtype_name(np.asarray(value).dtype), np.shape(value))
                inputs.append(var)
                traced_args.append(Tracer(var, value, f"the argument {name!r}"))
            else:                   # (a static function argument runs as the user's code)
                traced_args.append(interceptor.translate(value))
        previous, _STATE.current = getattr(_STATE, "current", None), state
        swapped = interceptor.watch.swap(held)
        try:
            result = interceptor.entry(fun)(*traced_args)
        finally:
            _STATE.current = previous
            interceptor.watch.restore(swapped)
            interceptor.watch.close()
            interceptor.write_back()
            state.read |= interceptor.watch.read
            if previous is not None:    # (a nested trace: its reads are the outer one's too)
                previous.read |= state.read
        name, loc = function_location(fun)
        aux, aux_outputs = None, []
        if has_aux:
            result, aux, aux_outputs = split_aux(result, name)
        if isinstance(result, Tracer):
            outputs = [result.node]
        elif isinstance(result, (int, float, np.integer, np.floating)) and \
                not isinstance(result, (bool, np.bool_)) or \
                type(result) is np.ndarray and result.ndim == 0 and result.dtype.kind in "fiu":
            outputs = [Literal(float(result))]    # a constant: its gradient is zero
        else:
            outputs = [result]
        wengert = WengertList(getattr(fun, "__name__", name),
                              inputs + [v for v, _ in state.consts],
                              state.builder.entries, outputs + aux_outputs, loc=loc)
        return Trace(wengert, state.guards, state.reads_sizes, [c for _, c in state.consts],
                     aux, frozenset(state.read))


# ---------------------------------------------------------------- more NumPy (numpy_functions.py)

from . import numpy_functions  # noqa: E402  (it builds on the tracer defined above)

# The numpy module traced code sees: np.array/np.asarray of traced values stack them, and
# arrays made with np.zeros/ones/empty/full(_like) are traced, so they can be updated in place.
_TRACED_NUMPY = numpy_functions.traced_module(np)
for _original, _traced in _NUMPY_CREATION.items():
    setattr(_TRACED_NUMPY, _original.__name__, _traced)
_UNTRACED[id(_TRACED_NUMPY)] = np

_FUNCTIONS.update(numpy_functions.FUNCTIONS)
# Ufuncs that `Tracer.__array_ufunc__` binds as they are (no adapter, not `pow`).
_PLAIN_UFUNCS = {ufunc: prim for ufunc, prim in _UFUNCS.items()
                 if ufunc not in numpy_functions.UFUNCS and prim.name != "pow"}
for _name, _method in numpy_functions.METHODS.items():
    setattr(Tracer, _name, _method)
