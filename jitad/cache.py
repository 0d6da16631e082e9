"""Specialization keys and the per-function cache of compiled variants.

Step: call arguments -> the compiled variant to run (or a miss, which the API
fills by tracing and compiling). A key holds each array's dtype, ndim and
size class (0, 1 or many: broadcasting decisions depend on it), each scalar's
type and the static values; a variant whose trace read sizes (`len`, `.shape`,
element reads) is further keyed by exact shapes. Variants under one key (and, where
keyed so, one shape) differ by guard outcomes; their number is bounded.
"""
from __future__ import annotations

import functools
import hashlib
import types
from dataclasses import dataclass, field

import numpy as np

from .errors import ArgumentError
from .watch import Watched, mark_read, plain

MAX_SPECIALIZATIONS = 8     # guard outcomes traced per key (and shapes): then GuardLimitError
SHAPES_WARNING = 8          # shapes traced per key (for lists keyed by shape): a RetraceWarning
_STATIC_TYPES = (bool, int, str, type(None), np.bool_, np.integer,
                 # functions, keyed by identity (an activation passed as `act=np.tanh`)
                 types.FunctionType, types.BuiltinFunctionType, types.MethodType,
                 functools.partial, np.ufunc, type(np.sum))
_JITAD_CALLABLES = ("jitad.api", "jitad.derivatives", "jitad.custom")   # jit_grad, grad...


def _is_static(value) -> bool:
    if isinstance(value, tuple):
        return all(_is_static(v) for v in value)
    return isinstance(value, _STATIC_TYPES) or \
        callable(value) and type(value).__module__ in _JITAD_CALLABLES


def static_key(value):
    """A static value with the type of every item, so that `True`, `1` and `np.int64(1)`
    (equal in Python) are different keys, also inside tuples."""
    if isinstance(value, tuple):
        return tuple, tuple(static_key(v) for v in value)
    return value.__class__, value


# ndarray subclasses whose semantics are an ndarray's: accepted as their base array.
_PLAIN_SUBCLASSES = (np.memmap,)


def classify(value, name: str):
    """(key part, runtime value or None for static) for one argument.

    Raises:
        ArgumentError: unsupported argument type, or a float32 array.
    """
    if isinstance(value, float):
        return "f", value
    if isinstance(value, np.ndarray):
        if isinstance(value, Watched):  # (an array a trace watches, passed to a nested one:
            mark_read(value)            # without traced values, the result is frozen)
            value = plain(value)
        if value.__class__ is not np.ndarray:
            if not isinstance(value, _PLAIN_SUBCLASSES):
                raise ArgumentError(
                    f"argument '{name}' is a {type(value).__module__}.{type(value).__name__}, "
                    "an ndarray subclass whose operations may not mean what they mean on an "
                    f"ndarray (masks, matrix products, units): pass np.asarray({name}) "
                    "(after filling masked values) if plain array semantics are what you want")
            value = value.view(np.ndarray)
        kind = value.dtype.kind
        if value.ndim == 0 and kind == "f":
            return "f", float(value)
        if value.dtype == np.float64:
            return ("f8", value.ndim, tuple(min(d, 2) for d in value.shape)), value
        if kind in "iu":
            if kind == "u" and value.itemsize == 8 and value.size and value.max() >= 2 ** 63:
                raise ArgumentError(f"argument '{name}' is a uint64 array with values of 2**63 "
                                    "or more: jitad computes with int64; pass "
                                    f"{name}.astype(np.float64)")
            value = value.astype(np.int64, copy=False)
            # (a 0-d array as a scalar: Numba indexes with scalars, not 0-d arrays)
            return ("i8", value.ndim, tuple(min(d, 2) for d in value.shape)), \
                value[()] if value.ndim == 0 else value
        if kind == "b":
            return ("b1", value.ndim, tuple(min(d, 2) for d in value.shape)), \
                value[()] if value.ndim == 0 else value
        if kind == "f":
            raise ArgumentError(f"argument '{name}' is a {value.dtype} array: jitad computes in "
                                f"float64; pass {name}.astype(np.float64)")
        raise ArgumentError(f"argument '{name}' is an array of dtype {value.dtype}: jitad takes "
                            "float64, integer and bool arrays")
    if isinstance(value, np.floating):
        return "f", float(value)
    if _is_static(value):
        return ("static", static_key(value)), None
    if isinstance(value, list):
        raise ArgumentError(f"argument '{name}' is a list: pass a NumPy array "
                            f"(np.asarray({name}, dtype=float)) or a tuple of static values")
    raise ArgumentError(f"argument '{name}' has unsupported type {type(value).__name__}: jitad "
                        "takes floats, float64/integer/bool ndarrays (runtime inputs) and "
                        "int, bool, str, None, functions or tuples of them (static, part of the "
                        "cache key)")


def consts_digest(consts) -> str:
    """A digest of a trace's constant arrays: traces of one function and key that froze
    different constants (a boolean mask argument's positions) may differ in their code."""
    digest = hashlib.sha256()
    for c in consts:
        c = np.ascontiguousarray(c)
        digest.update(f"{c.dtype.str}{c.shape}".encode())
        digest.update(c.tobytes())
    return digest.hexdigest()[:16]


def shapes_of(runtime_values) -> tuple:
    return tuple(np.shape(v) for v in runtime_values)


@dataclass
class Variant:
    """One traced specialization and its compiled kernels by mode.

    `wrt` are the positions, among the traced list's inputs, of the differentiated
    arguments (static arguments are not inputs). `digest`: the key of its trace and builds
    in the disk store, guard outcomes included (None where it cannot be stored).
    """

    trace: object
    wrt: tuple = ()
    kernels: dict = field(default_factory=dict)
    digest: str | None = None
    reads: object = None            # reads.Reads: the bindings a call checks
    unsaved: object = None          # stores its trace on disk when called (`store_trace`)
    analysed: dict = field(default_factory=dict)    # a first tier's analyses (derivatives.py)

    def store_trace(self) -> None:
        """Store the trace on disk, once: deferred from tracing to its first compile (to the
        background for a tiered first call, after its first result)."""
        save, self.unsaved = self.unsaved, None
        if save is not None:
            save()


@dataclass
class KeyEntry:
    """Everything cached under one argument key."""

    exact_shapes: bool = False                   # some trace read sizes: key variants by shape
    variants: dict = field(default_factory=dict)  # shapes (or None) -> [Variant]

    def candidates(self, runtime_values) -> list:
        return self.variants.get(shapes_of(runtime_values) if self.exact_shapes else None, [])

    def drop_stale(self) -> set:
        """Remove the variants whose trace read a binding rebound since; the stale names."""
        stale: set = set()
        for slot, variants in self.variants.items():
            fresh = []
            for variant in variants:
                names = variant.reads.stale() if variant.reads is not None else ()
                stale.update(names)
                if not names:
                    fresh.append(variant)
            self.variants[slot] = fresh
        return stale

    def add(self, variant: Variant, runtime_values) -> bool:
        """Add `variant` under the shapes of `runtime_values` (where keyed by shape); whether
        those shapes are new."""
        if variant.trace.reads_sizes and not self.exact_shapes:
            self.exact_shapes = True
            self.variants = {}
        slot = shapes_of(runtime_values) if self.exact_shapes else None
        new = slot not in self.variants
        self.variants.setdefault(slot, []).insert(0, variant)
        return new
