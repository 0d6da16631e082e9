"""The disk cache of traces and builds, so that a new process skips tracing and codegen.

Step: beside compile's content-addressed sources (which Numba's own cache keys). A
trace is stored under the digest `reads.reads` computes from everything it can depend on
(the function's code, the globals, closure cells and defaults it reads, recursively, the
argument key and shapes, NumPy's version) and jitad's own code digest; a function whose
reads that digest cannot cover is simply traced each time. A
build (the generated source for a trace, mode and code shape) is stored under the
trace's hash. Entries are plain data (JSON: a trace's variables and entries, its
primitives by registry name), stored through disk.py, which authenticates each file
with the cache directory's key and its full key: an entry that is missing, planted,
swapped, truncated or malformed is ignored and recomputed.
"""
from __future__ import annotations

import hashlib
import json
import zlib
from pathlib import Path

from . import collector, disk
from .primitives import REGISTRY
from .tracing import Trace
from .wengert import Entry, Literal, Var, WengertList


def _path(kind: str, key: str) -> Path:
    name = hashlib.sha256(f"{disk.code_digest()}\n{key}".encode()).hexdigest()[:32]
    return disk.cache_dir() / kind / f"{name}.json"


def _full_key(kind: str, key: str) -> str:
    """What an entry records and its tag covers: the kind, jitad's code digest and the key."""
    return f"{kind}\n{disk.code_digest()}\n{key}"


def _pack(full_key: str, data) -> bytes:
    return zlib.compress(json.dumps({"key": full_key, "value": data},
                                    separators=(",", ":")).encode(), 1)


def load(kind: str, key: str):
    """The object stored under `key` in `kind` ("traces" or "builds"), or None when there is
    none, or it fails verification, or it does not decode to a `kind` value."""
    full_key = _full_key(kind, key)
    payload = disk.read(_path(kind, key), full_key)
    if payload is None:
        return None
    try:
        stored = json.loads(zlib.decompress(payload))
        if stored["key"] != full_key:
            return None
        return _DECODE[kind](stored["value"])
    except Exception:   # noqa: BLE001 -- a malformed (though authenticated) entry: recompute
        return None


def stored_bytes(kind: str, key: str) -> int | None:
    """The size (compressed) of what is stored under `key` in `kind`, or None when there is
    nothing verified there: a size known without decoding the entry."""
    payload = disk.read(_path(kind, key), _full_key(kind, key))
    return None if payload is None else len(payload)


@collector.paused
def save(kind: str, key: str, value) -> None:
    """Store `value` (a Trace for "traces", (source, function name, code shape) for "builds");
    a value with parts that have no data form is not stored."""
    full_key = _full_key(kind, key)
    try:
        data = _ENCODE[kind](value)
    except _Unstorable:
        return
    disk.write(_path(kind, key), full_key, _pack(full_key, data))


# ---------------------------------------------------------------- data-only encoding
# Entries are JSON: nothing in a file can name a class or run code, even unverified.
# A trace is a table of variables ([name, dtype, shape]) and entries that refer to them
# by index, so shared Var objects stay shared; primitives are stored by registry name.

class _Unstorable(Exception):
    """A value with no data form (it is kept in memory only)."""


def _value(value):
    """Parameters and literal values: JSON scalars, and tagged tuples, lists and dicts."""
    if value is None or type(value) in (bool, int, float, str):
        return value
    if type(value) in (tuple, list):
        items = list(value)
        if not all(type(v) is int for v in items):      # (an index of ints: as it is)
            items = [_value(v) for v in items]
        return {"tuple" if type(value) is tuple else "list": items}
    if type(value) is dict and all(type(k) is str for k in value):
        return {"dict": {k: _value(v) for k, v in value.items()}}
    raise _Unstorable(type(value).__name__)


def _unvalue(data):
    if isinstance(data, dict):
        ((tag, items),) = data.items()
        if tag == "dict":
            return {k: _unvalue(v) for k, v in items.items()}
        return {"tuple": tuple, "list": list}[tag](_unvalue(v) for v in items)
    if data is None or type(data) in (bool, int, float, str):
        return data
    raise ValueError(f"not a stored value: {data!r:.40}")


def _encode_trace(traced) -> dict:
    if traced.consts:
        raise _Unstorable("arrays captured from the user's code")
    wengert = traced.wengert
    index: dict = {}            # Var (by identity) -> its row in `variables`
    variables: list = []

    def var(v):
        if v not in index:
            index[v] = len(variables)
            variables.append([v.name, v.dtype, list(v.shape)])
        return index[v]

    def operand(a):
        if type(a) is Var:
            return index[a] if a in index else var(a)
        if isinstance(a, Literal):
            return [_value(a.value)]
        raise _Unstorable(type(a).__name__)

    inputs = [var(v) for v in wengert.inputs]
    entries = [[var(e.out), e.prim.name, [operand(a) for a in e.ins],
                _value(e.params) if e.params else _NO_PARAMS, e.loc, e.accumulate, e.sweep]
               for e in wengert.entries]
    return {"name": wengert.name, "loc": wengert.loc, "out_tree": _value(wengert.out_tree),
            "vars": variables, "inputs": inputs, "entries": entries,
            "outputs": [operand(a) for a in wengert.outputs],
            "guards": _value([tuple(g) for g in traced.guards]),
            "reads_sizes": traced.reads_sizes}


_NO_PARAMS = _value({})


def _decode_trace(data: dict):
    variables = [Var(str(name), str(dtype), tuple(int(n) for n in shape))
                 for name, dtype, shape in data["vars"]]

    def operand(a):
        if type(a) is int:
            return variables[a]
        (value,) = a
        value = _unvalue(value)
        if type(value) not in (bool, int, float):
            raise ValueError("a literal must be a number")
        return Literal(value)

    entries = [Entry(variables[out], REGISTRY[prim], tuple(operand(a) for a in ins),
                     _unvalue(params), loc, bool(accumulate), str(sweep))
               for out, prim, ins, params, loc, accumulate, sweep in data["entries"]]
    wengert = WengertList(str(data["name"]), [variables[i] for i in data["inputs"]], entries,
                          [operand(a) for a in data["outputs"]], data["loc"],
                          _unvalue(data["out_tree"]))
    wengert.validate()
    return Trace(wengert, list(_unvalue(data["guards"])), bool(data["reads_sizes"]), [])


def _encode_build(built) -> list:
    source, name, shape = built
    return [str(source), str(name), str(shape)]


def _decode_build(data) -> tuple:
    source, name, shape = data
    if not (type(source) is type(name) is type(shape) is str) or not name.isidentifier():
        raise ValueError("a build is three strings")
    return source, name, shape


_ENCODE = {"traces": _encode_trace, "builds": _encode_build}
_DECODE = {"traces": _decode_trace, "builds": _decode_build}
