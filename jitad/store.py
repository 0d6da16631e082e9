"""The disk cache of traces and builds, so that a new process skips tracing and codegen.

Step: beside compile's content-addressed sources (which Numba's own cache keys). A
trace is stored under the digest `reads.reads` computes from everything it can depend
on (and the version of jitad); a function that reads anything that digest cannot cover
is simply traced each time. A
build (the generated source for a trace, mode and code shape) is stored under the
trace's hash. Writes are atomic; an unreadable entry is ignored and rewritten.
"""
from __future__ import annotations

import functools
import hashlib
import os
import pickle
import tempfile
from pathlib import Path

from . import __version__


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
