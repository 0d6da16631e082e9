"""What a traced function reads: the bindings its trace depends on besides its arguments.

Step: user function -> `Reads`, beside tracing. One walk over the function's code, the
globals, closure cells and defaults it reads, recursively through the Python functions it
calls (and through bound methods, `functools.partial` and callable objects), gives:

* `bindings`: (container, key, value) triples that a compiled call checks by identity, so
  that rebinding a global, a closure cell, a default or an attribute of an object or user
  module the code reads retraces instead of returning the old answer;
* `digest`: the hash under which the disk store keeps the trace for later processes, or
  None where a value's meaning could change unseen (a mutable object, a module outside the
  trusted libraries) or the code may be impure (files, the environment, clocks, random
  numbers): such traces are never stored.

In-place mutation of containers (a list or dict the function reads) is not seen. Arrays
used with traced values are passed to compiled code at each call, so their current contents
are used; the contents of the others (frozen into the trace, as by `np.sum(G) * x`) and
every array's shape are checked at each call (`Reads.with_arrays`).
"""
from __future__ import annotations

import builtins
import functools
import hashlib
import marshal
import types
from dataclasses import dataclass

import numpy as np

# Modules whose contents do not change between a user's processes (their versions are
# part of every key or they are jitad's own dependencies).
TRUSTED_MODULES = {"numpy", "math", "cmath", "operator", "functools", "itertools", "builtins",
                   "jitad", "scipy", "numba"}
# Names whose use makes a trace depend on the outside world: files, the environment, clocks,
# random numbers. Looked up among every name (global or attribute) the code reads.
IMPURE_NAMES = {"open", "input", "environ", "getenv", "random", "default_rng", "RandomState",
                "seed", "time", "perf_counter", "monotonic", "process_time", "now", "today",
                "urandom", "load", "loads", "loadtxt", "genfromtxt", "fromfile", "memmap",
                "read", "readline", "readlines", "read_text", "read_bytes", "exec", "eval",
                "globals", "locals", "vars", "id", "hash"}
_PLAIN = (bool, int, float, complex, str, bytes, type(None), np.generic)


@dataclass
class Reads:
    """The bindings a trace read (checked by identity at each call) and the store digest;
    after the trace (`with_arrays`), per binding holding an array: (its index in
    `bindings`, its shape, and its C-order bytes unless the compiled code is passed the
    array at each call), checked at each call too."""

    bindings: tuple
    digest: str | None
    arrays: tuple = ()

    def with_arrays(self, passed) -> Reads:
        """These reads with a snapshot of each array they hold: its shape, and its contents
        unless its id is in `passed` (the trace's hidden inputs: the compiled code reads
        those arrays' current contents itself). A trace freezes what it computes from an
        array without traced values (`np.sum(G) * x`, `G[1] * x`, a loop over `G`): an
        in-place change to such an array, or any array's reshaping in place, retraces."""
        arrays = tuple((i, v.shape, None if id(v) in passed else v.tobytes())
                       for i, (_, _, v) in enumerate(self.bindings) if type(v) is np.ndarray)
        return Reads(self.bindings, self.digest, arrays)

    def stale(self) -> list:
        """The names of bindings rebound, or of arrays changed in place, since they were read
        (empty when all hold)."""
        names = [_binding_name(c, k) for c, k, v in self.bindings if _current(c, k) is not v]
        for i, shape, contents in self.arrays:
            container, key, array = self.bindings[i]
            if array.shape != shape or contents is not None and array.tobytes() != contents:
                names.append(f"the contents of {_binding_name(container, key)}")
        return names


_MISSING = object()


def _current(container, key):
    if key is None:
        try:
            return container.cell_contents
        except ValueError:          # an emptied cell
            return _MISSING
    if isinstance(container, dict):
        return container.get(key, _MISSING)
    return getattr(container, key, _MISSING)


def _binding_name(container, key) -> str:
    if key is None:
        return "a closure variable"
    if isinstance(container, dict):
        return f"global or attribute '{key}'"
    return f"{getattr(container, '__qualname__', type(container).__name__)}.{key}"


def _trusted(module_name: str) -> bool:
    return (module_name or "").split(".")[0] in TRUSTED_MODULES


def _names(code) -> set:
    """Global and attribute names a code object (and the code nested in it) reads."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names(const)
    return names


class _Walker:
    def __init__(self):
        self.hash = hashlib.sha256(f"numpy {np.__version__};".encode())
        self.storable = True
        self.bindings: list = []
        self.seen: set = set()

    def text(self, text: str) -> None:
        self.hash.update(text.encode())

    def bind(self, container, key, value) -> None:
        """A binding to check at each call (trusted modules are taken as never rebound)."""
        if not (isinstance(value, types.ModuleType) and _trusted(value.__name__)):
            self.bindings.append((container, key, value))

    def value(self, value) -> None:
        """Add `value` to the hash (where its meaning cannot change unseen) and walk the
        functions and objects it leads to."""
        if isinstance(value, _PLAIN):
            self.text(f"{type(value).__name__}:{value!r};")
        elif isinstance(value, (tuple, frozenset)):
            self.text(f"{type(value).__name__}{len(value)}(")
            items = sorted(value, key=repr) if isinstance(value, frozenset) else value
            for item in items:
                self.value(item)
            self.text(")")
        elif isinstance(value, types.ModuleType):
            self.text(f"module:{value.__name__};")
            if not _trusted(value.__name__):
                self.storable = False
        elif type(value).__module__ == "jitad.api":
            self.callable(value.fun)                 # a jit_grad object
        elif type(value).__module__ == "jitad.custom":  # custom_vjp/custom_jvp, jitad.primitive
            self.storable = False                     # (traces reading them are not stored)
            attributes = getattr(value, "__dict__", {})
            for key in ("fun", "fwd", "bwd", "rule", "vjp", "jvp", "shape"):
                if key in attributes:       # their rules: defvjp/defjvp again, what they read
                    self.bind(attributes, key, attributes[key])
                    if attributes[key] is not None:
                        self.value(attributes[key])
        elif isinstance(value, (types.FunctionType, types.MethodType, functools.partial)) \
                and not _trusted(getattr(value, "__module__", "")):
            self.callable(value)
        elif callable(value) and hasattr(value, "__qualname__"):   # builtins, ufuncs, classes
            module = getattr(value, "__module__", None) or type(value).__module__
            self.text(f"callable:{module}.{value.__qualname__};")
            if not _trusted(module):
                self.storable = False
        else:
            self.storable = False               # an object whose state could change unseen

    def callable(self, fun) -> None:
        """Walk a Python function, bound method, partial or callable object."""
        if id(fun) in self.seen:
            self.text(f"again:{getattr(fun, '__qualname__', '?')};")
            return
        self.seen.add(id(fun))
        if isinstance(fun, functools.partial):
            self.text("partial(")
            self.value(fun.args)
            self.value(tuple(sorted(fun.keywords.items())))
            self.callable(fun.func)
            self.text(")")
        elif isinstance(fun, types.MethodType):
            self.text("method(")
            self.instance(fun.__self__, _names(fun.__func__.__code__)
                          if isinstance(fun.__func__, types.FunctionType) else set())
            self.callable(fun.__func__)
            self.text(")")
        elif isinstance(fun, types.FunctionType):
            self.function(fun)
        elif callable(fun):                      # an object with __call__
            self.callable(types.MethodType(type(fun).__call__, fun))
        else:
            self.storable = False

    def instance(self, obj, names: set) -> None:
        """The attributes of `obj` (a method's self) that its code may read."""
        self.storable = False                    # instance state is not stored across processes
        attributes = getattr(obj, "__dict__", None)
        if isinstance(attributes, dict):
            for name in sorted(names & attributes.keys()):
                self.bind(attributes, name, attributes[name])
                self.value(attributes[name])

    def function(self, fun: types.FunctionType) -> None:
        self.text(f"function:{fun.__module__}.{fun.__qualname__};")
        self.hash.update(marshal.dumps(fun.__code__))
        for key in ("__defaults__", "__kwdefaults__"):
            current = getattr(fun, key)
            if current is not None:         # code that passes every argument needs no check
                self.bind(fun, key, current)
            self.text(f"{key}=")
            self.value(tuple(sorted(current.items())) if isinstance(current, dict) else current)
        for cell in fun.__closure__ or ():
            contents = _current(cell, None)
            self.bind(cell, None, contents)
            if contents is _MISSING:
                self.text("empty cell;")
            else:
                self.value(contents)
        names = _names(fun.__code__)
        if names & IMPURE_NAMES:
            self.storable = False
        for name in sorted(names):
            if name in fun.__globals__:
                value = fun.__globals__[name]
                self.bind(fun.__globals__, name, value)
                self.text(f"global:{name}=")
                self.value(value)
                if isinstance(value, types.ModuleType) and not _trusted(value.__name__):
                    self.instance(value, names)  # attributes of a user module it reads
            elif hasattr(builtins, name):
                self.text(f"builtin:{name};")


def reads(fun, key) -> Reads:
    """What `fun` reads, and the store digest of a trace of it for argument `key`."""
    walker = _Walker()
    try:
        walker.callable(fun)
        walker.value(key)
    except (ValueError, TypeError, AttributeError, RecursionError):
        walker.storable = False
    digest = walker.hash.hexdigest()[:32] if walker.storable else None
    return Reads(tuple(walker.bindings), digest)


def underlying_function(fun):
    """The Python function a bound method, `functools.partial` or callable object runs
    (for names and source locations); `fun` itself when there is none."""
    for _ in range(100):
        if isinstance(fun, types.FunctionType):
            return fun
        if isinstance(fun, functools.partial):
            fun = fun.func
        elif isinstance(fun, types.MethodType):
            fun = fun.__func__
        elif callable(fun) and hasattr(type(fun), "__call__") and \
                not isinstance(fun, (type, types.BuiltinFunctionType)):
            fun = type(fun).__call__
        else:
            break
    return fun
