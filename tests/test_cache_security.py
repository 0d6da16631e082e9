"""A disk cache you can trust: nothing planted, swapped, truncated or malformed in the cache
directory is ever run or believed; an unsafe or failing directory means memory only with one
warning; the cache is bounded and has a command line; processes compile a function once.

Results are checked against hand formulas; "did it trace" is seen from the user's function's
own output; "did it compile" from Numba's dispatcher statistics.
"""
import ast
import os
import pickle
import stat
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest

import jitad
from jitad import disk, store
from jitad.errors import CacheWarning

from conftest import assert_close

X = np.array([0.3, -1.2, 2.0])
REPO = str(Path(jitad.__file__).resolve().parent.parent)


def child_env(cache, **extra) -> dict:
    """The environment of a child process that imports this checkout's jitad."""
    env = {**os.environ, "PYTHONPATH": REPO, "JITAD_CACHE_DIR": str(cache), **extra}
    return {k: v for k, v in env.items() if v is not None}


def run_child(tmp_path, source: str, env: dict) -> subprocess.CompletedProcess:
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(source))
    return subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    """A fresh cache directory for this test (this process and its children)."""
    path = tmp_path / "cache"
    monkeypatch.setenv("JITAD_CACHE_DIR", str(path))
    return path


def fresh(name: str, body=lambda x: np.sum(x ** 3)):
    """A new function of its own name (own store keys and Numba cache files) that prints
    when it is traced; its gradient is 3 x**2 for the default body."""
    def fun(x):
        print(f"tracing {name}")
        return body(x)
    fun.__name__ = fun.__qualname__ = name
    return fun


def gradient_and_traces(capsys, fun, x=X):
    grad = jitad.jit_grad(fun)(x)
    return grad, capsys.readouterr().out.count("tracing")


# ---------------------------------------------------------------- planted files never run

CUBE_CHILD = """
import sys
import numpy as np
import jitad

def cube_sum(x):
    return np.sum(x ** 3)

f = jitad.jit_grad(cube_sum)
value, grad = f.value_and_grad(np.array([0.5, -1.0, 2.0]))
(kernel,) = [k for e in f._cache.values() for vs in e.variants.values() for v in vs
             for k in v.kernels.values()]
print(repr(value), repr(grad.tolist()), sum(kernel.stats.cache_misses.values()), sep="|")
"""
CUBE_X = np.array([0.5, -1.0, 2.0])


class _Marker:
    """Unpickling this creates the marker file (a harmless stand-in for any code)."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return Path.touch, (Path(self.path),)


def test_planted_pickles_sources_and_numba_files_never_run(tmp_path):
    cache = tmp_path / "cache"
    first = run_child(tmp_path, CUBE_CHILD, child_env(cache))
    assert first.returncode == 0, first.stderr
    marker = tmp_path / "marker"
    planted = 0
    for path in cache.rglob("*"):
        if not path.is_file() or path.name == disk.SECRET or path.parent.name == disk.LOCKS:
            continue
        if path.suffix == ".py":            # generated source: code that runs on import
            path.write_text(f"open({str(marker)!r}, 'w').close()\n"
                            "def cube_sum_value_and_grad(x):\n    return 0.0, (x * 0.0,)\n")
        else:       # store entries and Numba's .nbi/.nbc files, in jitad's format, forged tag
            path.write_bytes(disk.MAGIC + bytes(32) + pickle.dumps(_Marker(marker)))
        planted += 1
    assert planted >= 5, "traces, builds, source, Numba index and data were all planted"
    second = run_child(tmp_path, CUBE_CHILD, child_env(cache))
    assert second.returncode == 0, second.stderr
    assert not marker.exists(), "a planted file ran code"
    value, grad, compiled = second.stdout.split("|")
    assert float(value) == pytest.approx(np.sum(CUBE_X ** 3), rel=1e-14)
    assert_close(ast.literal_eval(grad), 3.0 * CUBE_X ** 2, 1e-14, 0.0, "gradient")
    assert compiled.strip() == "1", "the planted Numba files were ignored and recompiled"
    third = run_child(tmp_path, CUBE_CHILD, child_env(cache))
    assert third.stdout == second.stdout.replace("|1\n", "|0\n"), \
        "the rewritten, verified cache is used again"


def test_a_forged_entry_without_the_key_is_ignored(capsys, own_cache):
    fun = fresh("forged")
    gradient_and_traces(capsys, fun)
    for kind in ("traces", "builds"):
        (path,) = (own_cache / kind).glob("*.json")
        data = path.read_bytes()
        head = len(disk.MAGIC) + 32
        path.write_bytes(data[:len(disk.MAGIC)] + bytes(32) + data[head:])     # a wrong tag
    grad, traces = gradient_and_traces(capsys, fun)
    assert traces == 1
    assert_close(grad, 3.0 * X ** 2, 1e-14, 0.0, "gradient")


# ---------------------------------------------------------------- swapped, truncated, wrong type

def test_swapped_entries_are_ignored(capsys, own_cache):
    square = fresh("swap_square", lambda x: np.sum(x ** 2))
    cube = fresh("swap_cube")
    gradient_and_traces(capsys, square)
    before = {kind: set((own_cache / kind).glob("*.json")) for kind in ("traces", "builds")}
    gradient_and_traces(capsys, cube)
    for kind in ("traces", "builds"):
        (square_file,) = before[kind]
        (cube_file,) = set((own_cache / kind).glob("*.json")) - before[kind]
        a, b = square_file.read_bytes(), cube_file.read_bytes()
        square_file.write_bytes(b)
        cube_file.write_bytes(a)
    square_numba = sorted((own_cache / "numba").rglob("swap_square_*.nb[ic]"))
    cube_numba = sorted((own_cache / "numba").rglob("swap_cube_*.nb[ic]"))
    assert len(square_numba) == len(cube_numba) == 2
    for p, q in zip(square_numba, cube_numba):
        a, b = p.read_bytes(), q.read_bytes()
        p.write_bytes(b)
        q.write_bytes(a)
    for fun, want in ((square, 2.0 * X), (cube, 3.0 * X ** 2)):
        grad, traces = gradient_and_traces(capsys, fun)
        assert traces == 1, "a swapped trace was believed"
        assert_close(grad, want, 1e-14, 0.0, f"gradient of {fun.__name__}")


def test_truncated_entries_are_ignored(capsys, own_cache):
    fun = fresh("truncated")
    gradient_and_traces(capsys, fun)
    damaged = [p for p in own_cache.rglob("*") if p.is_file() and p.suffix in (".json", ".nbi",
                                                                                ".nbc")]
    assert len(damaged) == 4
    for path in damaged:
        path.write_bytes(path.read_bytes()[:len(disk.MAGIC) + 40])
    grad, traces = gradient_and_traces(capsys, fun)
    assert traces == 1
    assert_close(grad, 3.0 * X ** 2, 1e-14, 0.0, "gradient")


@pytest.mark.parametrize("kind, value", [
    ("traces", ["source", "name"]), ("traces", {"vars": 3}), ("traces", None),
    ("builds", ["x = 1", "not a name", "loops"]), ("builds", ["x = 1", "f"]),
    ("builds", [1, 2, 3]), ("builds", {"dict": {}})])
def test_an_authenticated_entry_of_the_wrong_type_is_ignored(capsys, own_cache, monkeypatch,
                                                             kind, value):
    saved = {}
    save = store.save
    monkeypatch.setattr(store, "save", lambda k, key, v: (saved.setdefault(k, key),
                                                          save(k, key, v)))
    fun = fresh("wrong_type")
    gradient_and_traces(capsys, fun)
    key = saved[kind]
    full_key = store._full_key(kind, key)
    assert disk.write(store._path(kind, key), full_key, store._pack(full_key, value))
    assert store.load(kind, key) is None
    grad, traces = gradient_and_traces(capsys, fun)
    assert traces == (kind == "traces")
    assert_close(grad, 3.0 * X ** 2, 1e-14, 0.0, "gradient")


# ---------------------------------------------------------------- unsafe or failing directories

def _memory_only(capsys, cache: Path, name: str, match: str):
    """A function runs right, with exactly one CacheWarning matching `match`, writing nothing."""
    before = sorted(p.name for p in cache.iterdir()) if cache.is_dir() else None
    with pytest.warns(CacheWarning, match=match) as caught:
        for _ in range(2):
            grad, traces = gradient_and_traces(capsys, fresh(name))
            assert traces == 1, "memory only: every new jit_grad traces"
            assert_close(grad, 3.0 * X ** 2, 1e-14, 0.0, "gradient")
    assert len([w for w in caught if issubclass(w.category, CacheWarning)]) == 1
    after = sorted(p.name for p in cache.iterdir()) if cache.is_dir() else None
    assert after == before, "nothing was written"


def test_a_new_cache_directory_is_private(capsys, own_cache):
    gradient_and_traces(capsys, fresh("private"))
    assert stat.S_IMODE(own_cache.stat().st_mode) == 0o700
    assert stat.S_IMODE((own_cache / disk.SECRET).stat().st_mode) == 0o600


def test_a_directory_others_can_write_is_not_used(capsys, own_cache):
    own_cache.mkdir()
    own_cache.chmod(0o777)
    _memory_only(capsys, own_cache, "world_writable", "writable by others")


def test_a_directory_of_another_user_is_not_used(capsys, own_cache, monkeypatch):
    own_cache.mkdir(mode=0o700)
    monkeypatch.setattr(os, "getuid", lambda: os.stat(own_cache).st_uid + 1)
    _memory_only(capsys, own_cache, "foreign", "owned by user id")


def test_a_key_file_others_can_read_is_not_used(capsys, own_cache):
    own_cache.mkdir(mode=0o700)
    (own_cache / disk.SECRET).write_bytes(bytes(32))
    (own_cache / disk.SECRET).chmod(0o644)
    _memory_only(capsys, own_cache, "readable_key", "not private")


def test_a_damaged_key_file_is_replaced(own_cache):
    own_cache.mkdir(mode=0o700)
    (own_cache / disk.SECRET).write_bytes(b"short")
    (own_cache / disk.SECRET).chmod(0o600)
    assert disk.usable()
    assert len((own_cache / disk.SECRET).read_bytes()) == 32


def test_a_relative_cache_path_is_checked_in_each_directory_it_names(capsys, tmp_path,
                                                                     monkeypatch):
    """JITAD_CACHE_DIR=cache names ./cache: after a chdir into a directory whose ./cache
    others can write, that one is refused (not written into with the first one's key)."""
    (tmp_path / "first").mkdir()
    shared = tmp_path / "second" / "cache"
    shared.mkdir(parents=True)
    shared.chmod(0o777)
    monkeypatch.setenv("JITAD_CACHE_DIR", "cache")
    monkeypatch.chdir(tmp_path / "first")
    grad, _ = gradient_and_traces(capsys, fresh("relative_first"))
    assert_close(grad, 3.0 * X ** 2, 1e-14, 0.0, "gradient")
    assert (tmp_path / "first" / "cache" / disk.SECRET).exists()
    monkeypatch.chdir(tmp_path / "second")
    with pytest.warns(CacheWarning, match="writable by others"):
        grad, _ = gradient_and_traces(capsys, fresh("relative_second"))
    assert_close(grad, 3.0 * X ** 2, 1e-14, 0.0, "gradient")
    assert not any(shared.iterdir()), "nothing is written into a directory others can write"


def test_a_cache_path_that_is_a_file_is_not_used(capsys, own_cache):
    own_cache.write_text("a file")
    with pytest.warns(CacheWarning, match="is not a directory"):
        grad, _ = gradient_and_traces(capsys, fresh("file_cache"))
    assert_close(grad, 3.0 * X ** 2, 1e-14, 0.0, "gradient")
    assert own_cache.read_text() == "a file"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_read_only_directory_is_not_used(capsys, own_cache):
    own_cache.mkdir(mode=0o500)
    try:
        _memory_only(capsys, own_cache, "read_only", "not writable")
    finally:
        own_cache.chmod(0o700)


def test_a_disk_error_while_saving_means_memory_only(capsys, own_cache, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")
    own_cache.mkdir(mode=0o700)
    disk.root()                                     # the key is written before the disk fills
    monkeypatch.setattr(disk, "tempfile", types.SimpleNamespace(mkstemp=full))
    with pytest.warns(CacheWarning, match="No space left") as caught:
        for name in ("disk_full_a", "disk_full_b"):
            grad, _ = gradient_and_traces(capsys, fresh(name))
            assert_close(grad, 3.0 * X ** 2, 1e-14, 0.0, "gradient")
    assert len([w for w in caught if issubclass(w.category, CacheWarning)]) == 1
    assert not disk.usable()


NOTHING_WRITABLE = """
import warnings
import numpy as np
warnings.simplefilter("always")
import jitad
print(jitad.jit_grad(lambda x: np.sum(x ** 3))(np.array([1.0, 2.0])).tolist())
"""


def test_import_and_use_with_no_writable_cache_location(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    for cache in (blocker, None):       # JITAD_CACHE_DIR a file; or unset and HOME a file
        env = child_env(blocker, HOME=str(blocker), NUMBA_CACHE_DIR=str(blocker),
                        XDG_CACHE_HOME=None, JITAD_CACHE_DIR=cache and str(cache))
        run = run_child(tmp_path, NOTHING_WRITABLE, env)
        assert run.returncode == 0, run.stderr
        assert run.stdout.strip() == "[3.0, 12.0]"
        assert run.stderr.count("CacheWarning") == 1, run.stderr
        assert "jitad runs from memory" in run.stderr


# ---------------------------------------------------------------- size bound and command line

def test_the_least_recently_used_files_are_evicted_past_the_size_limit(own_cache, monkeypatch):
    monkeypatch.setenv("JITAD_CACHE_SIZE", "1M")
    files = {name: own_cache / "traces" / f"{name}.json" for name in "abcde"}
    for old, name in enumerate("abcd", start=1):
        assert disk.write(files[name], name, bytes(1000))
        os.utime(files[name], (old * 1000, old * 1000))     # a is the oldest, d the newest
    assert disk.read(files["a"], "a") == bytes(1000)       # a verified read makes a recent
    monkeypatch.setenv("JITAD_CACHE_SIZE", "2500")
    assert disk.write(files["e"], "e", bytes(1000))
    assert sorted(p.stem for p in (own_cache / "traces").iterdir()) == ["a", "e"]
    assert disk.info()["files"] == 2


def test_the_size_limit_accepts_units(monkeypatch):
    for text, size in (("2G", 2 << 30), ("500M", 500 << 20), ("64k", 64 << 10), ("1000", 1000)):
        monkeypatch.setenv("JITAD_CACHE_SIZE", text)
        assert disk.size_limit() == size
    monkeypatch.setenv("JITAD_CACHE_SIZE", "lots")
    with pytest.warns(CacheWarning, match="JITAD_CACHE_SIZE"):
        assert disk.size_limit() == disk.DEFAULT_SIZE


def test_cache_info_and_clear_on_the_command_line(tmp_path, capsys, own_cache):
    gradient_and_traces(capsys, fresh("cli"))
    files = [p for p in own_cache.rglob("*") if p.is_file() and p.name != disk.SECRET
             and p.parent.name != disk.LOCKS]
    cli = [sys.executable, "-m", "jitad", "cache"]
    env = child_env(own_cache)
    info = subprocess.run(cli + ["info"], env=env, capture_output=True, text=True, timeout=120)
    assert info.returncode == 0, info.stderr
    assert f"location: {own_cache}" in info.stdout and "status:   in use" in info.stdout
    assert f"files:    {len(files)}\n" in info.stdout
    cleared = subprocess.run(cli + ["clear"], env=env, capture_output=True, text=True,
                             timeout=120)
    assert cleared.returncode == 0 and "removed" in cleared.stdout, cleared.stderr
    assert not any(p.exists() for p in files)
    info = subprocess.run(cli + ["info"], env=env, capture_output=True, text=True, timeout=120)
    assert "files:    0\n" in info.stdout
    own_cache.chmod(0o777)
    refused = subprocess.run(cli + ["clear"], env=env, capture_output=True, text=True,
                             timeout=120)
    assert refused.returncode == 1 and "writable by others" in refused.stderr
    assert (own_cache / disk.SECRET).exists(), "an unsafe directory is never emptied"


# ---------------------------------------------------------------- several processes

RACE_CHILD = """
import sys, time
from pathlib import Path
import numpy as np
import jitad

def racing(x):
    return np.sum(np.sin(x) * x)

f = jitad.jit_grad(racing)
me, count, barrier = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
f.wengert(np.zeros(3))                           # traced and imported before the start line
(barrier / me).touch()
while len(list(barrier.iterdir())) < count:     # start together
    time.sleep(0.005)
value, grad = f.value_and_grad(np.array([0.5, -1.0, 2.0]))
(kernel,) = [k for e in f._cache.values() for vs in e.variants.values() for v in vs
             for k in v.kernels.values()]
print(sum(kernel.stats.cache_misses.values()), repr(grad.tolist()))
"""


def test_processes_first_calling_a_function_compile_it_once(tmp_path):
    count, barrier = 3, tmp_path / "barrier"
    barrier.mkdir()
    script = tmp_path / "race.py"
    script.write_text(textwrap.dedent(RACE_CHILD))
    env = child_env(tmp_path / "cache")
    children = [subprocess.Popen([sys.executable, str(script), str(i), str(count), str(barrier)],
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True) for i in range(count)]
    outputs = [child.communicate(timeout=300) for child in children]
    x = np.array([0.5, -1.0, 2.0])
    compiles = 0
    for child, (out, err) in zip(children, outputs):
        assert child.returncode == 0, err
        misses, grad = out.split(" ", 1)
        compiles += int(misses)
        assert_close(ast.literal_eval(grad), np.sin(x) + x * np.cos(x), 1e-14, 1e-15, "gradient")
    assert compiles == 1, f"{compiles} processes compiled the same function"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_keep_a_lock_file_locked(own_cache):
    """A child forked while a build's lock is held (by another thread, say) and living on
    (a worker) does not keep it: once the parent lets go, other processes take it at once."""
    import fcntl
    import time

    done_read, done_write = os.pipe()
    ready_read, ready_write = os.pipe()
    with disk.lock("build\nsome key"):
        pid = os.fork()
        if pid == 0:                        # a long-lived worker: until the parent says so
            try:
                os.close(done_write)
                os.write(ready_write, b"r")
                os.read(done_read, 1)
            finally:
                os._exit(0)
    os.close(done_read)
    try:
        assert os.read(ready_read, 1) == b"r"         # (the child's fork handlers have run)
        (path,) = (own_cache / disk.LOCKS).iterdir()
        with open(path, "a+b") as other:    # another process's turn: free without waiting
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        start = time.monotonic()
        with disk.lock("build\nsome key"):
            pass
        assert time.monotonic() - start < 1.0
    finally:
        os.close(done_write)
        os.waitpid(pid, 0)
        os.close(ready_read)
        os.close(ready_write)
