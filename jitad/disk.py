"""The cache directory: private, authenticated, bounded; memory only when it cannot be trusted.

Step: the storage under store.py (traces and builds) and compile.py (generated source
and Numba's cache files). Nothing is read back that this module did not write and
verify:

* The directory is created private (0700). It is used only when it is a directory
  owned by the user and not writable by group or others (a symlink must be the user's
  too); otherwise jitad runs from memory and warns once, as ssh and pip do.
* A secret key (`secret.key`, 0600) lives inside it. Every file is written as
  `MAGIC + HMAC-SHA256(secret, context + payload) + payload`, where the context names
  what the file is (its kind and full key, or its path): a planted, swapped, truncated
  or foreign file fails verification and is ignored (and deleted).
* Any disk error (read-only, full, not a directory, no writable location) switches
  the process to memory only with one `CacheWarning`; it never raises.
* The total size is bounded (`JITAD_CACHE_SIZE`, default 1 GiB): the least recently
  used files (by modification time, refreshed on every verified read) are evicted.
* `lock(name)` serializes work on one key across processes (POSIX `flock`).
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import os
import re
import secrets
import shutil
import stat
import tempfile
import time
import warnings
from pathlib import Path

from . import __version__
from .errors import CacheWarning

try:
    import fcntl
except ImportError:         # Windows: no inter-process lock (work may be done twice)
    fcntl = None

MAGIC = b"jitad-cache-1\n"
_TAG = 32                                   # bytes of HMAC-SHA256
SECRET = "secret.key"
LOCKS = "locks"
DEFAULT_SIZE = 1 << 30
LOCK_TIMEOUT = 300.0                        # seconds a waiter waits before doing the work itself
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def cache_dir() -> Path:
    """`$JITAD_CACHE_DIR`, else `$XDG_CACHE_HOME/jitad`, else `~/.cache/jitad`; absolute (a
    relative path names a directory of the current one: after a `chdir`, another one, which
    is checked as the first was), with `~` expanded."""
    override = os.environ.get("JITAD_CACHE_DIR")
    if override:
        return Path(os.path.abspath(os.path.expanduser(override)))
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(os.path.abspath(os.path.expanduser(base))) / "jitad"


@functools.cache
def code_digest() -> str:
    """A hash of jitad's own source: a changed jitad never reads older entries."""
    digest = hashlib.sha256(__version__.encode())
    for path in sorted(Path(__file__).parent.rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def size_limit() -> int:
    """`$JITAD_CACHE_SIZE` in bytes (suffixes K, M, G, T; e.g. "500M"), default 1 GiB."""
    text = os.environ.get("JITAD_CACHE_SIZE", "").strip()
    match = re.fullmatch(r"(\d+(?:\.\d*)?)\s*([kmgt]?)(?:i?b)?", text.lower())
    if not match:
        if text:
            _warn_once(("size", text), f"JITAD_CACHE_SIZE={text!r} is not a size such as "
                                       f"'500M' or '2G'; using {DEFAULT_SIZE >> 30} GiB")
        return DEFAULT_SIZE
    return int(float(match[1]) * _UNITS[match[2]])


class _Root:
    """One cache directory as this process sees it: its secret, or why it is not used."""

    def __init__(self, path: Path):
        self.path = path
        self.secret: bytes | None = None
        self.problem: str | None = None
        self.size: int | None = None        # running estimate of the total size, once scanned
        try:
            self.problem = _unsafe(path) or self._load_secret()
        except OSError as error:
            self.problem = f"cannot be used ({_describe(error)})"
        if self.problem:
            self.secret = None
            _warn_once(path, f"the cache directory {path} {self.problem}; jitad runs from "
                             "memory (set JITAD_CACHE_DIR to a private directory of yours)")

    @property
    def usable(self) -> bool:
        return self.secret is not None

    def _load_secret(self) -> str | None:
        path = self.path / SECRET
        if not path.exists():
            _new_secret(path, replace=False)
        secret = _read_private(path)
        if secret is not None and len(secret) != 32:    # damaged (a crash): nothing verifies
            _new_secret(path, replace=True)
            secret = _read_private(path)
        if secret is None:
            return f"has a key file {SECRET} that is not private to this user"
        self.secret = secret
        return None

    def fail(self, error: OSError) -> None:
        """A disk error: memory only from now on, with one warning."""
        if self.usable:
            self.secret = None
            self.problem = f"failed ({_describe(error)})"
            _warn_once(self.path, f"writing to the cache directory {self.path} failed "
                                  f"({_describe(error)}); jitad runs from memory for the rest "
                                  "of this process")


def _new_secret(path: Path, replace: bool) -> None:
    """Write a new random key (0600); concurrent creators of a missing key agree on one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")        # created 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_bytes(32))
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)                  # atomic, and fails if another process won
    except FileExistsError:
        pass
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _read_private(path: Path) -> bytes | None:
    """The contents of `path` if it is a regular file of this user's that only they can
    read, else None."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode) or \
                _posix() and (info.st_uid != os.getuid() or info.st_mode & 0o077):
            return None
        return handle.read()


def _posix() -> bool:
    return hasattr(os, "getuid")


def _describe(error: OSError) -> str:
    return f"{type(error).__name__}: {error.strerror or error}"


def _unsafe(path: Path) -> str | None:
    """Why `path` must not be trusted, or None (creating it private if missing)."""
    if not path.exists() and not path.is_symlink():
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o700)
    link = os.lstat(path)
    info = os.stat(path)
    if not stat.S_ISDIR(info.st_mode):
        return "is not a directory"
    if not _posix():
        return None
    uid = os.getuid()
    if stat.S_ISLNK(link.st_mode) and link.st_uid != uid:
        return f"is a symbolic link owned by user id {link.st_uid}, not by you ({uid})"
    if info.st_uid != uid:
        return f"is owned by user id {info.st_uid}, not by you ({uid})"
    if info.st_mode & 0o022:
        return f"is writable by others (mode {stat.S_IMODE(info.st_mode):o}; chmod 700 it)"
    if not os.access(path, os.W_OK | os.X_OK):
        return "is not writable"
    return None


_WARNED: set = set()
_ROOTS: dict = {}


def _warn_once(key, message: str) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(f"jitad: {message}", CacheWarning, stacklevel=3)


def root() -> _Root:
    """The current cache directory (checked once per process and path)."""
    path = cache_dir()
    found = _ROOTS.get(path)
    if found is None:
        found = _ROOTS[path] = _Root(path)
    return found


def usable() -> bool:
    """Whether this process reads and writes the disk cache (else: memory only)."""
    return root().usable


def _tag(secret: bytes, context: str, payload: bytes) -> bytes:
    context = context.encode()
    return hmac.new(secret, b"%d:%s" % (len(context), context) + payload, hashlib.sha256).digest()


def read(path: Path, context: str) -> bytes | None:
    """The payload of `path` if jitad wrote it for `context` (verified), else None. A file
    that fails verification is deleted; a verified one becomes the most recently used."""
    where = root()
    if not where.usable:
        return None
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    head = len(MAGIC) + _TAG
    payload = data[head:]
    if data[:len(MAGIC)] != MAGIC or \
            not hmac.compare_digest(data[len(MAGIC):head], _tag(where.secret, context, payload)):
        with contextlib.suppress(OSError):
            path.unlink()
        return None
    with contextlib.suppress(OSError):
        os.utime(path)
    return payload


def write(path: Path, context: str, payload: bytes) -> bool:
    """Store `payload` for `context` at `path` (atomically); False in memory-only mode."""
    where = root()
    if not where.usable:
        return False
    data = MAGIC + _tag(where.secret, context, payload) + payload
    return write_plain(path, data)


def write_plain(path: Path, data: bytes) -> bool:
    """Write an unauthenticated file that is never read back as code or data (e.g. the
    generated source, for tracebacks and readers). False in memory-only mode."""
    where = root()
    if not where.usable:
        return False
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError as error:
        where.fail(error)
        return False
    _grew(where, len(data))
    return True


def _files(path: Path):
    """Every cache file under `path` (not the key, the locks or files being written)."""
    for dirpath, dirnames, filenames in os.walk(path):
        if dirpath == str(path):
            dirnames[:] = [d for d in dirnames if d != LOCKS]
        for name in filenames:
            if (dirpath, name) != (str(path), SECRET) and not name.endswith(".tmp") \
                    and ".tmp." not in name:
                yield os.path.join(dirpath, name)


def _scan(path: Path) -> list:
    """[(mtime, size, file)] of the cache's files, least recently used first."""
    found = []
    for name in _files(path):
        with contextlib.suppress(OSError):
            info = os.stat(name)
            found.append((info.st_mtime_ns, info.st_size, name))
    return sorted(found)


def _grew(where: _Root, added: int) -> None:
    """Account for a written file; evict least recently used files past the limit."""
    if where.size is None:
        where.size = sum(size for _, size, _ in _scan(where.path))
    else:
        where.size += added
    limit = size_limit()
    if where.size > limit:
        where.size = evict(where.path, limit * 9 // 10)


def evict(path: Path, target: int) -> int:
    """Delete least recently used files until the cache holds at most `target` bytes;
    returns the size left."""
    files = _scan(path)
    total = sum(size for _, size, _ in files)
    for _, size, name in files:
        if total <= target:
            break
        with contextlib.suppress(OSError):
            os.unlink(name)
            total -= size
    return total


# The lock files open in this process. A forked child closes its copies: an `flock` lock
# belongs to the open file, which a child's copy of the descriptor would keep locked after
# the parent's thread closed its own (other processes, and the parent, would wait for the
# child to end, up to LOCK_TIMEOUT). Closing a copy leaves the parent's lock as it is.
_OPEN_LOCKS: set = set()


def _after_fork_in_child() -> None:
    for handle in list(_OPEN_LOCKS):
        with contextlib.suppress(OSError):
            handle.close()
    _OPEN_LOCKS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


@contextlib.contextmanager
def lock(name: str):
    """Hold the inter-process lock for `name` (a key) while the block runs: processes
    that first-call the same function compile it once, the others wait and then load.
    Without a usable cache (or after LOCK_TIMEOUT seconds) the block runs unlocked."""
    where = root()
    handle = None
    if where.usable and fcntl is not None:
        digest = hashlib.sha256(name.encode()).hexdigest()[:32]
        try:
            (where.path / LOCKS).mkdir(mode=0o700, exist_ok=True)
            handle = open(where.path / LOCKS / f"{digest}.lock", "a+b")
            _OPEN_LOCKS.add(handle)
            deadline = time.monotonic() + LOCK_TIMEOUT
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        _OPEN_LOCKS.discard(handle)
                        handle.close()
                        handle = None
                        break
                    time.sleep(0.02)
        except OSError:
            if handle is not None:
                _OPEN_LOCKS.discard(handle)
                handle.close()
            handle = None
    try:
        yield
    finally:
        if handle is not None:
            _OPEN_LOCKS.discard(handle)
            handle.close()              # closing releases the lock


def info() -> dict:
    """The cache's location, safety, file count, size and limit (for `python -m jitad`)."""
    where = root()
    files = _scan(where.path) if where.usable else []
    return {"location": str(where.path), "status": "in use" if where.usable else
            f"not used ({where.problem}); jitad runs from memory",
            "files": len(files), "size": sum(size for _, size, _ in files),
            "limit": size_limit()}


def clear() -> int:
    """Delete every cache file, the key and the locks; returns the count of files deleted.
    Only a directory that passes the safety checks is emptied."""
    where = root()
    if not where.usable:
        return 0
    count = sum(len(files) for _, _, files in os.walk(where.path))
    for entry in os.scandir(where.path):
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
    _ROOTS.pop(where.path, None)            # the next use starts a new key
    return count
