"""What a traced function reads: the bindings its trace depends on besides its arguments.

Step: user function -> `Reads`, beside tracing. One walk over the function's code, the
globals, closure cells and defaults it reads, recursively through the Python functions it
calls (and through bound methods, `functools.partial` and callable objects) and the
attributes, methods and properties of the objects it reads, gives:

* `bindings`: (container, key, value) triples that a compiled call checks by identity, so
  that rebinding a global, a closure cell, a default or an attribute of an object or user
  module the code reads retraces instead of returning the old answer;
* `digest`: the hash under which the disk store keeps the trace for later processes, or
  None where a value's meaning could change unseen (a mutable object, a module outside the
  trusted libraries) or the code may be impure (files, the environment, clocks, random
  numbers): such traces are never stored.

Dicts are walked under the keys the code names (its string constants), lists of up to
`LIST_ITEMS` items item by item (and their length), arrays in tuples too. In-place mutation
of longer lists, and of dict items under keys the code computes, is not seen. Arrays used
with traced values are passed to compiled code at each call, so their current contents are
used; the contents of the others (frozen into the trace, as by `np.sum(G) * x`, and of
those `watch` saw read both ways) and every array's shape are checked at each call
(`Reads.with_arrays`).
"""
from __future__ import annotations

import builtins
import functools
import hashlib
import itertools
import marshal
import os
import site
import sys
import sysconfig
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
# Types whose repr tells every value and the type apart (1, 1.0, True, '1').
_EXACT_REPR = {bool, int, float, str, bytes, type(None)}
_SEQUENCES = {tuple, list}
# Code under these directories is library code (the standard library, installed packages,
# jitad): tracing does not clone its functions and `reads` does not walk its classes. User
# code is everything else, and the traced function's own package wherever it is installed.
LIBRARY_DIRS = tuple(sorted({
    os.path.join(path, "") for path in (
        *(sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")),
        site.getusersitepackages(), os.path.dirname(os.path.abspath(__file__)))} | {"<frozen "}))
# Lists up to this long are checked item by item at each call (an item is about 40 ns).
LIST_ITEMS = 16
# How many objects deep attribute reads are followed (`self.layer.cell.W` is three):
# deeper ones, like in-place changes to containers, are not seen.
ATTRIBUTE_DEPTH = 4
# Methods that ran before the trace for an object it reads (a class's run when the trace
# makes an instance: they are walked for classes).
_MADE = {"__init__", "__new__", "__init_subclass__", "__set_name__", "__del__"}


@dataclass
class Reads:
    """The bindings a trace read (checked by identity at each call) and the store digest;
    after the trace (`with_arrays`), per binding holding an array: (its index in
    `bindings`, its shape, and its C-order bytes unless the compiled code is passed the
    array at each call), checked at each call too. `held`: the (dict or list, key) bindings
    of arrays held by objects' attributes, dicts and lists, which tracing watches in
    place."""

    bindings: tuple
    digest: str | None
    arrays: tuple = ()
    held: tuple = ()

    def with_arrays(self, passed) -> Reads:
        """These reads with a snapshot of each array they hold: its shape, and its contents
        unless its id is in `passed` (hidden inputs of the trace that it read no values of
        otherwise, see `watch`: the compiled code reads their current contents itself). A
        trace freezes what it computes from an array without traced values (`np.sum(G) * x`,
        `G[1] * x`, a loop over `G`): an in-place change to such an array, or any array's
        reshaping in place, retraces."""
        arrays = tuple((i, v.shape, None if id(v) in passed else v.tobytes())
                       for i, (_, _, v) in enumerate(self.bindings) if type(v) is np.ndarray)
        return Reads(self.bindings, self.digest, arrays, self.held)

    def stale(self) -> list:
        """The names of bindings rebound, or of arrays changed in place, since they were read
        (empty when all hold)."""
        names = [_binding_name(c, k) for c, k, v in self.bindings if bound_value(c, k) is not v]
        for i, shape, contents in self.arrays:
            container, key, array = self.bindings[i]
            if array.shape != shape or contents is not None and array.tobytes() != contents:
                names.append(f"the contents of {_binding_name(container, key)}")
        return names


_MISSING = object()
_MAPPINGS = (dict, types.MappingProxyType)      # globals, an object's or a class's __dict__


def bound_value(container, key):
    """What binding (container, key) holds now: a closure cell's contents (key None), a
    mapping's, tuple's or list's item, an attribute; _MISSING where there is none."""
    if key is None:
        try:
            return container.cell_contents
        except ValueError:          # an emptied cell
            return _MISSING
    if isinstance(container, _MAPPINGS):
        return container.get(key, _MISSING)
    if type(container) is tuple:    # (for the arrays it holds)
        return container[key]
    if type(container) is list:
        return container[key] if key < len(container) else _MISSING
    return getattr(container, key, _MISSING)


def held_source(container, key, value, name: str, value_name: str) -> str:
    """Python source that is True while binding (container, key) still holds `value`, where
    the container is the global `name` and the value `value_name` (a generated entry's
    check; `Reads.stale` checks the same)."""
    if key is None:
        return f"{name}.cell_contents is {value_name}"
    if type(container) is tuple:
        return f"{name}[{key!r}] is {value_name}"
    if type(container) is list:     # (and an item past its end: the length holds)
        return f"len({name}) <= {key}" if value is _MISSING else \
            f"len({name}) > {key} and {name}[{key}] is {value_name}"
    if not isinstance(container, _MAPPINGS):
        return f"{name}.{key} is {value_name}"
    if value is _MISSING:       # an attribute the class defines, not (yet) the instance
        return f"{key!r} not in {name}"
    return f"{name}[{key!r}] is {value_name}"


def _binding_name(container, key) -> str:
    if key is None:
        return "a closure variable"
    if type(container) is tuple:
        return f"item {key} of a tuple"
    if type(container) is list:
        return f"item {key} of a list"
    if isinstance(container, _MAPPINGS):
        return f"global or attribute '{key}'"
    return f"{getattr(container, '__qualname__', type(container).__name__)}.{key}"


def user_code(filename: str, module_name, package: str) -> bool:
    """Whether code from `filename` (module `module_name`) is the user's, `package` being the
    traced function's top-level package."""
    return not filename.startswith(LIBRARY_DIRS) or (
        bool(package) and isinstance(module_name, str)
        and module_name.partition(".")[0] == package)


def _user_class(cls, package: str) -> bool:
    module = sys.modules.get(getattr(cls, "__module__", None) or "")
    return module is not None and not _trusted(module.__name__) and \
        user_code(getattr(module, "__file__", None) or "<frozen", module.__name__, package)


def _trusted(module_name: str) -> bool:
    return (module_name or "").split(".")[0] in TRUSTED_MODULES


def _names(code) -> tuple:
    """(global and attribute names a code object and the code nested in it reads, those and
    its string constants: the keys it may read from dicts, `CONFIG["scale"]`)."""
    names, keys = set(code.co_names), set()
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            inner_names, inner_keys = _names(const)
            names |= inner_names
            keys |= inner_keys
        elif type(const) is str:
            keys.add(const)
    return names, names | keys


def _exact_repr(sequence) -> bool:
    """Whether `sequence` (a list or tuple) holds only values of `_EXACT_REPR` types, or lists
    and tuples of them: its repr then tells it apart exactly."""
    kinds = set(map(type, sequence))
    if not kinds <= _EXACT_REPR | _SEQUENCES:
        return False
    inner = itertools.chain.from_iterable(v for v in sequence if type(v) in _SEQUENCES)
    return set(map(type, inner)) <= _EXACT_REPR


class _Walker:
    def __init__(self, package: str):
        self.package = package      # the traced function's top-level package
        self.hash = hashlib.sha256(f"numpy {np.__version__};".encode())
        self.storable = True
        self.bindings: list = []
        self.seen: dict = {}        # id -> the callable walked (kept alive: ids stay unique)
        self.named: dict = {}       # id(object) -> (it, the attribute names walked on it)
        self.held: set = set()      # ids of the dicts (not modules') and lists bound

    def text(self, text: str) -> None:
        self.hash.update(text.encode())

    def bind(self, container, key, value) -> None:
        """A binding to check at each call (trusted modules are taken as never rebound)."""
        if not (isinstance(value, types.ModuleType) and _trusted(value.__name__)):
            self.bindings.append((container, key, value))

    def value(self, value, names=frozenset(), depth: int = 0) -> None:
        """Add `value` to the hash (where its meaning cannot change unseen) and walk the
        functions and objects it leads to; `names` are the global and attribute names of
        the code that reads it, `depth` how many attributes deep it was reached."""
        if isinstance(value, _PLAIN):
            self.text(f"{type(value).__name__}:{value!r};")
        elif type(value) in _SEQUENCES and _exact_repr(value):
            self.text(f"{value!r};")        # (one repr: long lists of numbers hash fast)
            self.items(value)
            if len(value) <= LIST_ITEMS:
                for item in value:
                    if type(item) is list:
                        self.items(item)
        elif isinstance(value, (tuple, frozenset)) or type(value) is list:
            self.text(f"{type(value).__name__}{len(value)}(")
            items = sorted(value, key=repr) if isinstance(value, frozenset) else value
            for item in items:
                self.value(item, names, depth)
            self.text(")")
            self.items(value)
        elif type(value) is dict:
            self.storable = False
            if depth < ATTRIBUTE_DEPTH:      # the items under keys the code names
                for key in sorted(key for key in names if key in value):
                    self.bind(value, key, value[key])
                    self.held.add(id(value))
                    self.value(value[key], names, depth + 1)
        elif isinstance(value, types.ModuleType):
            self.text(f"module:{value.__name__};")
            if not _trusted(value.__name__):
                self.instance(value, names, depth)  # attributes of a user module it reads
        elif type(value).__module__ == "jitad.api":    # a jit_grad or derivative object:
            self.text(f"jitad:{type(value).__qualname__}:{value.argnums!r}:"   # what it
                      f"{value.has_aux!r}:{getattr(value, '_mode', None)!r};")  # computes
            self.callable(value.fun)
        elif type(value).__module__ == "jitad.custom":  # custom_vjp/custom_jvp, jitad.primitive
            self.storable = False                     # (traces reading them are not stored)
            attributes = getattr(value, "__dict__", {})
            for key in ("fun", "fwd", "bwd", "rule", "vjp", "jvp", "shape"):
                if key in attributes:       # their rules: defvjp/defjvp again, what they read
                    self.bind(attributes, key, attributes[key])
                    if attributes[key] is not None:
                        self.value(attributes[key])
        elif isinstance(value, functools.partial) or \
                isinstance(value, (types.FunctionType, types.MethodType)) and \
                not _trusted(getattr(value, "__module__", "")):   # (a partial's is functools)
            self.callable(value)
        elif callable(value) and hasattr(value, "__qualname__"):   # builtins, ufuncs, classes
            module = getattr(value, "__module__", None) or type(value).__module__
            self.text(f"callable:{module}.{value.__qualname__};")
            if not _trusted(module):
                self.storable = False
                if isinstance(value, type) and _user_class(value, self.package):
                    self.instance(value, names, depth)      # its attributes and methods
        else:
            self.storable = False               # an object whose state could change unseen
            if not _trusted(type(value).__module__):
                self.instance(value, names, depth)

    def items(self, sequence) -> None:
        """Bind the items of a short list (and its length) and the arrays in a tuple."""
        if type(sequence) is list and len(sequence) <= LIST_ITEMS:
            for i, item in enumerate(sequence):
                self.bind(sequence, i, item)
            self.bind(sequence, len(sequence), _MISSING)
            self.held.add(id(sequence))
        elif type(sequence) is tuple:
            for i, item in enumerate(sequence):
                if type(item) is np.ndarray:
                    self.bind(sequence, i, item)

    def callable(self, fun) -> None:
        """Walk a Python function, bound method, partial or callable object."""
        key = (id(fun.__func__), id(fun.__self__)) if isinstance(fun, types.MethodType) \
            else id(fun)            # (bound methods are made anew at each attribute read)
        if key in self.seen:
            self.text(f"again:{getattr(fun, '__qualname__', '?')};")
            return
        self.seen[key] = fun
        if isinstance(fun, functools.partial):
            self.text("partial(")
            self.value(fun.args)
            self.value(tuple(sorted(fun.keywords.items())))
            if hasattr(fun.func, "__qualname__") or isinstance(fun.func, functools.partial):
                self.value(fun.func)        # (not walked where trusted: np.sum's code)
            else:
                self.callable(fun.func)     # an object with __call__
            self.text(")")
        elif isinstance(fun, types.MethodType):
            self.text("method(")
            self.instance(fun.__self__, _names(fun.__func__.__code__)[1]
                          if isinstance(fun.__func__, types.FunctionType) else set())
            self.callable(fun.__func__)
            self.text(")")
        elif isinstance(fun, types.FunctionType):
            self.function(fun)
        elif callable(fun):                      # an object with __call__
            self.callable(types.MethodType(type(fun).__call__, fun))
        else:
            self.storable = False

    def instance(self, obj, names, depth: int = 0) -> None:
        """What code reading `names` may read through `obj` (a method's self, a user module,
        class or object it reads): the attributes it names, followed `ATTRIBUTE_DEPTH`
        objects deep, and, for classes of user code, the methods and properties of `obj`'s
        class it names or calls implicitly (operators, construction), with what they read."""
        self.storable = False                    # such state is not stored across processes
        if depth >= ATTRIBUTE_DEPTH:
            return
        done = self.named.setdefault(id(obj), (obj, set()))[1]   # (kept: ids stay unique)
        new = set(names) - done
        done |= new
        attributes = getattr(obj, "__dict__", None)
        if not isinstance(attributes, dict) or isinstance(obj, type):
            attributes = None
        cls = obj if isinstance(obj, type) else type(obj)
        for name in sorted(new):
            if attributes is not None and name in attributes:
                self.bind(attributes, name, attributes[name])
                if not isinstance(obj, types.ModuleType):
                    self.held.add(id(attributes))
                self.value(attributes[name], names, depth + 1)
                continue
            owner = next((c for c in cls.__mro__ if name in vars(c)), None)
            if owner is None or isinstance(obj, types.ModuleType) or \
                    not _user_class(owner, self.package):
                continue
            if attributes is not None:      # an instance attribute would hide the class's
                self.bind(attributes, name, _MISSING)
            self.bind(vars(owner), name, vars(owner)[name])
            self.member(obj, vars(owner)[name], names, depth)
        if not isinstance(obj, types.ModuleType) and not done - new:   # implicit calls
            for c in cls.__mro__:
                if _user_class(c, self.package):
                    for name, member in vars(c).items():
                        if name.startswith("__") and isinstance(member, types.FunctionType) \
                                and (isinstance(obj, type) or name not in _MADE):
                            self.member(obj, member, names, depth)

    def member(self, obj, member, names, depth: int) -> None:
        """Walk what a class attribute `member` of `obj`'s class reads, read through `obj`."""
        if isinstance(member, (classmethod, staticmethod)):
            self.callable(member.__func__)
        elif isinstance(member, property):
            if member.fget is not None:
                self.member(obj, member.fget, names, depth)
        elif isinstance(member, types.FunctionType):
            self.callable(member if isinstance(obj, type) else types.MethodType(member, obj))
        elif isinstance(member, types.MemberDescriptorType):     # a __slots__ attribute
            if not isinstance(obj, type):
                value = getattr(obj, member.__name__, _MISSING)
                self.bind(obj, member.__name__, value)
                if value is not _MISSING:
                    self.value(value, names, depth + 1)
        else:
            self.value(member, names, depth + 1)

    def function(self, fun: types.FunctionType) -> None:
        self.text(f"function:{fun.__module__}.{fun.__qualname__};")
        # (version 2: no back-references, whose flags depend on reference counts)
        self.hash.update(marshal.dumps(fun.__code__, 2))
        code_names, names = _names(fun.__code__)
        for key in ("__defaults__", "__kwdefaults__"):
            current = getattr(fun, key)
            if current is not None:         # code that passes every argument needs no check
                self.bind(fun, key, current)
                if isinstance(current, dict):   # arrays: their contents are checked too
                    for name, value in current.items():     # (a tuple's: `items`)
                        if type(value) is np.ndarray:
                            self.bind(current, name, value)
            self.text(f"{key}=")
            self.value(tuple(sorted(current.items())) if isinstance(current, dict) else current,
                       names)
        for cell in fun.__closure__ or ():
            contents = bound_value(cell, None)
            self.bind(cell, None, contents)
            if contents is _MISSING:
                self.text("empty cell;")
            else:
                self.value(contents, names)
        if code_names & IMPURE_NAMES:
            self.storable = False
        for name in sorted(names):
            if name in fun.__globals__:
                value = fun.__globals__[name]
                self.bind(fun.__globals__, name, value)
                self.text(f"global:{name}=")
                self.value(value, names)
            elif hasattr(builtins, name):
                self.bind(fun.__globals__, name, _MISSING)    # (a global defined later hides it)
                self.text(f"builtin:{name};")


def reads(fun, key) -> Reads:
    """What `fun` reads, and the store digest of a trace of it for argument `key`."""
    walker = _Walker((getattr(underlying_function(fun), "__module__", None) or "")
                     .partition(".")[0])
    try:
        walker.callable(fun)
        walker.value(key)
    except (ValueError, TypeError, AttributeError, RecursionError):
        walker.storable = False
    digest = walker.hash.hexdigest()[:32] if walker.storable else None
    held = tuple((c, k) for c, k, v in walker.bindings
                 if type(v) is np.ndarray and type(c) in (dict, list) and id(c) in walker.held)
    return Reads(tuple(walker.bindings), digest, held=held)


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
