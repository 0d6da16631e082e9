"""The disk cache of traces and builds, so that a new process skips tracing and codegen.

Step: beside compile's content-addressed sources (which Numba's own cache keys). A
trace is stored under a hash of everything it can depend on: the function's code,
the values of the globals, closure cells and defaults it reads (recursively through
the Python functions it calls), the argument key and shapes, and the versions of
jitad and NumPy. A function that reads anything this cannot hash (a mutable object,
an array, a module outside the trusted libraries) is simply traced each time. A
build (the generated source for a trace, mode and code shape) is stored under the
trace's hash. Writes are atomic; an unreadable entry is ignored and rewritten.
"""
from __future__ import annotations

import builtins
import functools
import hashlib
import marshal
import os
import pickle
import tempfile
import types
from pathlib import Path

import numpy as np

from . import __version__

# Modules whose contents do not change between a user's processes (their versions are
# part of every key or they are jitad's own dependencies).
TRUSTED_MODULES = {"numpy", "math", "cmath", "operator", "functools", "itertools", "builtins",
                   "jitad", "scipy", "numba"}
_PLAIN = (bool, int, float, complex, str, bytes, type(None), np.generic)


def cache_dir() -> Path:
    """`$JITAD_CACHE_DIR`, else `$XDG_CACHE_HOME/jitad`, else `~/.cache/jitad`."""
    override = os.environ.get("JITAD_CACHE_DIR")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "jitad"


def write_atomically(path: Path, data: bytes) -> None:
    """Replace `path` by `data` in one step (concurrent writers of equal data agree)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


class _Unhashable(Exception):
    """The function reads something whose changes a hash could not see."""


def _trusted(module_name: str) -> bool:
    return module_name.split(".")[0] in TRUSTED_MODULES


def _names(code) -> set:
    """Global and attribute names a code object (and the code nested in it) reads."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names(const)
    return names


def _feed(value, digest, seen: set) -> None:
    """Add `value` to `digest`; raises _Unhashable where its meaning could change unseen."""
    if isinstance(value, _PLAIN):
        digest.update(f"{type(value).__name__}:{value!r};".encode())
    elif isinstance(value, (tuple, frozenset)):
        digest.update(f"{type(value).__name__}{len(value)}(".encode())
        for item in (sorted(value, key=repr) if isinstance(value, frozenset) else value):
            _feed(item, digest, seen)
        digest.update(b")")
    elif isinstance(value, types.ModuleType):
        if not _trusted(value.__name__):
            raise _Unhashable(value.__name__)
        digest.update(f"module:{value.__name__};".encode())
    elif isinstance(value, types.FunctionType) and not _trusted(value.__module__ or ""):
        _feed_function(value, digest, seen)
    elif type(value).__module__ == "jitad.api":
        _feed_function(value.fun, digest, seen)                  # a jit_grad function
    elif callable(value) and hasattr(value, "__qualname__"):    # functions, ufuncs, classes
        module = getattr(value, "__module__", None) or type(value).__module__
        if not _trusted(module):
            raise _Unhashable(repr(value))
        digest.update(f"callable:{module}.{value.__qualname__};".encode())
    else:
        raise _Unhashable(type(value).__name__)


def _feed_function(fun, digest, seen: set) -> None:
    if id(fun) in seen:
        digest.update(f"again:{fun.__qualname__};".encode())
        return
    seen.add(id(fun))
    digest.update(f"function:{fun.__module__}.{fun.__qualname__};".encode())
    digest.update(marshal.dumps(fun.__code__))
    _feed(fun.__defaults__, digest, seen)
    for cell in fun.__closure__ or ():
        _feed(cell.cell_contents, digest, seen)
    for name in sorted(_names(fun.__code__)):
        if name in fun.__globals__:
            digest.update(f"global:{name}=".encode())
            _feed(fun.__globals__[name], digest, seen)
        elif hasattr(builtins, name):
            digest.update(f"builtin:{name};".encode())


def trace_digest(fun, key: tuple, shapes: tuple) -> str | None:
    """The hash a trace of `fun` for argument `key` and `shapes` is stored under, or None
    where the function reads something that cannot be hashed."""
    digest = hashlib.sha256(f"numpy {np.__version__};".encode())
    try:
        _feed_function(fun, digest, set())
        _feed((key, shapes), digest, set())
    except (_Unhashable, ValueError, AttributeError):
        return None
    return digest.hexdigest()[:32]


@functools.cache
def _jitad_digest() -> str:
    """A hash of jitad's own source: a changed jitad never reads older entries."""
    digest = hashlib.sha256(__version__.encode())
    for path in sorted(Path(__file__).parent.rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _path(kind: str, key: str) -> Path:
    name = hashlib.sha256(f"{_jitad_digest()}\n{key}".encode()).hexdigest()[:32]
    return cache_dir() / kind / f"{name}.pickle"


def load(kind: str, key: str):
    """The object stored under `key` in `kind` ("traces" or "builds"), or None."""
    try:
        with open(_path(kind, key), "rb") as handle:
            return pickle.load(handle)
    except Exception:           # missing, truncated or unreadable: trace or build again
        return None


def save(kind: str, key: str, value) -> None:
    write_atomically(_path(kind, key), pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
