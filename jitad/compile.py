"""Compile: generated source text -> a Numba dispatcher, with a verified on-disk cache.

With llvm.py's intrinsic, the only code that uses Numba. The generated source is
compiled from the string in memory (the content-addressed file in the cache directory
is written for tracebacks and readers, never read back). Numba's cache files for
generated and runtime kernels live under the private cache directory and pass through
disk.py, which authenticates them before Numba unpickles them. Numba's errors are
translated into a JitadError that points at the user's function.
"""
from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import linecache
import os
import pickle
import sys
import threading
import types
import warnings
from pathlib import Path

import numba
import numba.core.codegen
import numba.core.compiler_lock
from numba.core import caching

from . import __version__, disk, memory, runtime, tape
from .errors import JitadError
from .numpy_tier import NumpyKernel


class _Locator(caching._CacheLocator):
    """Numba's cache files for a jitad kernel: under `<cache>/numba`, stamped with jitad's
    code digest and the file name (generated files are named by their source's hash)."""

    def __init__(self, py_func, py_file):
        self._py_file = py_file
        self._lineno = py_func.__code__.co_firstlineno
        # Generated files (in the cache directory, named by their content's hash) share one
        # subdirectory, whatever the cache directory's path: a copied or moved cache keeps
        # their machine code (the reverse tape's kernel is one).
        generated = Path(py_file).parent == disk.cache_dir()
        self._cache_path = str(disk.cache_dir() / "numba" / (
            "generated" if generated else self.get_suitable_cache_subpath(py_file)))

    def ensure_cache_path(self):
        os.makedirs(self._cache_path, mode=0o700, exist_ok=True)

    def get_cache_path(self):
        return self._cache_path

    def get_source_stamp(self):
        return f"{disk.code_digest()}:{os.path.basename(self._py_file)}"

    def get_disambiguator(self):
        return str(self._lineno)


class _Impl(caching.CompileResultCacheImpl):
    def __init__(self, py_func):
        # Not Numba's locator search (NUMBA_CACHE_DIR, __pycache__, ...): jitad's only.
        self._lineno = py_func.__code__.co_firstlineno
        self._locator = _Locator(py_func, py_func.__code__.co_filename)
        module = Path(py_func.__code__.co_filename).stem
        self._filename_base = self.get_filename_base(f"{module}.{py_func.__qualname__}",
                                                     getattr(sys, "abiflags", ""))


class _VerifiedFile(caching.IndexDataCacheFile):
    """Numba's index (.nbi) and data (.nbc) files, written and verified by disk.py: an
    unverified file is never unpickled (it counts as missing and is recompiled)."""

    def _context(self, path: str) -> str:
        path = Path(path)
        return f"numba\n{path.parent.name}/{path.name}"

    def _load_index(self):
        payload = disk.read(Path(self._index_path), self._context(self._index_path))
        if payload is None:
            return {}
        version, stamp, overloads = pickle.loads(payload)
        return overloads if (version, stamp) == (self._version, self._source_stamp) else {}

    def _save_index(self, overloads):
        payload = self._dump((self._version, self._source_stamp, overloads))
        disk.write(Path(self._index_path), self._context(self._index_path), payload)

    def _load_data(self, name):
        path = self._data_path(name)
        payload = disk.read(Path(path), self._context(path))
        if payload is None:
            raise FileNotFoundError(path)           # IndexDataCacheFile.load: a miss
        return pickle.loads(payload)

    def _save_data(self, name, data):
        path = self._data_path(name)
        disk.write(Path(path), self._context(path), self._dump(data))


class _VerifiedCache(caching.FunctionCache):
    _impl_class = _Impl

    def __init__(self, py_func):
        super().__init__(py_func)
        self._cache_file = _VerifiedFile(self._cache_path, self._impl.filename_base,
                                         self._impl.locator.get_source_stamp())

    def load_overload(self, sig, target_context):
        try:
            return super().load_overload(sig, target_context)
        except Exception:   # noqa: BLE001 -- a verified entry Numba cannot rebuild: compile
            return None

    def save_overload(self, sig, data):
        try:
            super().save_overload(sig, data)
        except OSError as error:
            disk.root().fail(error)


class _TypesNotValues(numba.core.registry.CPUDispatcher):
    """A runtime helper's dispatcher, compiled per argument *type*: generated code passes
    traced constants (a shape `(5, 2)`, axes `1, 2, 0`), which Numba types as literals and
    would compile (and cache) one version per value."""

    def get_call_template(self, args, kws):
        return super().get_call_template(
            tuple(numba.types.unliteral(a) for a in args),
            {k: numba.types.unliteral(a) for k, a in kws.items()})


def _njit(function, types_not_values=False, **options):
    """`numba.njit(**options)(function)`, cached on disk (verified) when the cache is usable;
    `types_not_values`: compiled per argument type only (see `_TypesNotValues`)."""
    if types_not_values:
        dispatcher = _TypesNotValues(py_func=function, locals={},
                                     targetoptions={"nopython": True, **options})
    else:
        dispatcher = numba.njit(**options)(function)
    # Code calling a user's kernel is not cached on disk: its source names the kernel, not
    # the kernel's code, so a cached copy could call an older version of it.
    if disk.usable() and "user_kernel" not in function.__globals__:
        dispatcher._cache = _VerifiedCache(function)       # what cache=True would install
    return dispatcher


@functools.cache
def _runtime_kernel(name: str, cache: Path, **options):
    """jitad's runtime function `name` as a dispatcher (one per cache directory)."""
    return _njit(runtime.COMPILED.get(name) or getattr(runtime, name), types_not_values=True,
                 **options)


def numpy_kernel(source: str, fn_name: str, example_args: tuple, wengert, expected=None,
                 helpers=None):
    """A NumpyKernel for `source` printed for NumPy (see numpy_tier.py), in a namespace of its
    own (compiling other source never rebinds its helpers to Numba's); `expected`: the
    results' (dtype, rank) structure where `fn_name` returns other than `wengert`'s outputs;
    `helpers`: names the source calls, bound in its namespace."""
    filename = source_file(source, fn_name)
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    return NumpyKernel(source, fn_name, filename, example_args, wengert.outputs,
                       wengert.returned_text, expected, helpers)


# Lists from this many entries number the tape's slots with `runtime.number_slots`
# compiled (about 1 s to compile into a new cache directory, then ~5 ms at 200,000 rows);
# shorter ones run it as Python (about 4 µs a row: 0.4 s at this size).
COMPILED_NUMBERING_FROM_ENTRIES = 100_000


def tape_kernel(wengert):
    """A TapeKernel for `wengert`, run by the (once compiled, disk-cached) interpreter,
    without the GIL: the specialized code compiling in the background (Python, mostly)
    runs on another core while calls run the tape, not in the gaps between calls."""
    numbering = _runtime_kernel("number_slots", disk.cache_dir()) \
        if len(wengert.entries) >= COMPILED_NUMBERING_FROM_ENTRIES else runtime.number_slots
    return tape.TapeKernel(wengert, _runtime_kernel("run_tape", disk.cache_dir(),
                                                    error_model="numpy", nogil=True),
                           numbering)


def reverse_tape_kernel(wengert, wrt, kind=tape.ReverseTapeKernel):
    """A ReverseTapeKernel (or `kind`: an HvpTapeKernel of a `tangent_list`) for the forward
    list `wengert` and the inputs `wrt`, run by `run_tape_gradient` (printed from the
    registry's rules by tape.reverse_source, compiled once and cached on disk) without the
    GIL, as `tape_kernel`."""
    return kind(wengert, wrt, _tape_gradient(disk.cache_dir()))


def reverse_tape_compiled() -> bool:
    """Is `run_tape_gradient` compiled already: in this process, or in the disk cache (its
    index file)? Compiling it takes ~2.5 s once per cache directory, the tape's ~1 s."""
    kernel = _tape_gradient(disk.cache_dir())
    if kernel.signatures:
        return True
    stem = Path(kernel.py_func.__code__.co_filename).stem
    return any((disk.cache_dir() / "numba" / "generated").glob(f"{stem}.*.nbi"))


@functools.cache
def _tape_gradient(cache: Path):
    """`run_tape_gradient` as a dispatcher (one per cache directory)."""
    function = load_python(tape.reverse_source(), "run_tape_gradient")
    function.__globals__["run_tape"] = _runtime_kernel("run_tape", cache, error_model="numpy",
                                                       nogil=True)
    return _njit(function, types_not_values=True, error_model="numpy", nogil=True)


def _stem(source: str, fn_name: str) -> str:
    digest = hashlib.sha256(f"{__version__}\n{source}".encode()).hexdigest()[:20]
    return f"{fn_name}_{digest}"


# Numba's performance hints about generated code ("np.dot() is faster on contiguous
# arrays") point at jitad's lines, not the user's, who can do nothing about them. Generated
# files are named `<function>_<20 hex digits>.py` (warnings match their path without .py)
# or `<jitad ...>` in memory.
warnings.filterwarnings("ignore", category=numba.NumbaPerformanceWarning,
                        module=r"(.*_[0-9a-f]{20}|<jitad .*>)$")


def source_file(source: str, fn_name: str) -> str:
    """The file name of the generated source: a content-addressed file in the cache
    directory (written for tracebacks and readers), or a `<jitad ...>` name in memory."""
    path = disk.cache_dir() / f"{_stem(source, fn_name)}.py"
    if not disk.usable():
        return f"<jitad {path.name}>"
    try:
        current = path.read_text()
    except (OSError, UnicodeDecodeError):
        current = None
    if current != source and not disk.write_plain(path, source.encode()):
        return f"<jitad {path.name}>"
    return str(path)


def call_compiling(kernel, args):
    """Call a kernel, letting a Numba dispatcher compile for new layouts (e.g. a strided view)."""
    if not isinstance(kernel, numba.core.registry.CPUDispatcher):
        return kernel(*args)
    try:
        return kernel(*args)
    except TypeError:
        kernel.disable_compile(False)
        try:
            return kernel(*args)
        finally:
            kernel.disable_compile()


def standalone_dispatcher(kernel):
    """A separate dispatcher of the same compiled function, free to specialize further
    (for users' own @numba.njit code); a generated function run as Python (a loop around
    compiled kernels) is compiled here."""
    return _njit(getattr(kernel, "py_func", kernel), error_model="numpy")


def load_python(source: str, fn_name: str):
    """The generated function as plain Python (no Numba), compiled from `source` itself
    (the file of the same name only serves tracebacks; linecache holds this text)."""
    module_name = f"jitad_generated.{_stem(source, fn_name)}"
    module = sys.modules.get(module_name)
    if module is None:
        filename = source_file(source, fn_name)
        module = types.ModuleType(module_name)
        module.__file__ = filename
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        exec(compile(source, filename, "exec"), module.__dict__)
        sys.modules[module_name] = module
    return getattr(module, fn_name)


# ---------------------------------------------------------------- long generated functions
# Numba runs LLVM's function passes on each new function, then the module passes, whose
# pipeline runs the same function passes again. Their time grows faster than linearly with
# a function's size (the LSTM's 1,400 lines: 40 s in the first round of 84 s), so for long
# generated functions the first round is skipped: the module passes optimize them as fully.
LONG_SOURCE_LINES = 1000
_LONG: set = set()      # names of the long generated functions being compiled


def _optimize_functions_once(original):
    @functools.wraps(original)
    def optimize_functions(library, ll_module):
        if library.name in _LONG and any("jitad_generated" in f.name
                                         for f in ll_module.functions):
            ll_module.data_layout = library._codegen._data_layout
            return None
        return original(library, ll_module)
    return optimize_functions


_LIBRARY = numba.core.codegen.CPUCodeLibrary
if hasattr(_LIBRARY, "_optimize_functions"):        # (else: Numba's default)
    _LIBRARY._optimize_functions = _optimize_functions_once(_LIBRARY._optimize_functions)


def _compiled(function, signature):
    """A dispatcher compiled for `signature` (or loaded from the verified disk cache)."""
    dispatcher = _njit(function, error_model="numpy")
    name = function.__code__.co_name
    long = len(linecache.getlines(function.__code__.co_filename)) >= LONG_SOURCE_LINES
    if long:
        _LONG.add(name)
    try:
        dispatcher.compile(signature)
    finally:
        if long:
            _LONG.discard(name)
    # Later calls with other argument types raise TypeError (the API's fast path falls
    # back to its full path then) instead of silently compiling a new version.
    dispatcher.disable_compile()
    return dispatcher


def compile_source(source: str, fn_name: str, example_args: tuple, user_loc: str,
                   background: bool = False):
    """A Numba dispatcher for the generated function, compiled for `example_args`' types.
    Processes compiling the same source take turns (`disk.lock`): the first compiles and
    saves, the others load its verified cache files. `background` compiles (in a thread of
    jitad's tiers) hold `BACKGROUND_COMPILE`, which a fork waits for.

    Raises:
        JitadError: Numba rejected the generated code (its message is kept as __cause__).
    """
    memory.keep_freed_memory()      # compiled array code reuses freed memory (see memory.py)
    function = load_python(source, fn_name)
    for name in runtime.__all__:
        if name in function.__globals__:
            function.__globals__[name] = _runtime_kernel(name, disk.cache_dir())
    for name in function.__code__.co_names:     # kernels a generated loop calls (Hessians)
        helper = function.__globals__.get(name)
        if isinstance(helper, types.FunctionType) and helper.__globals__ is function.__globals__:
            function.__globals__[name] = _njit(helper, error_model="numpy")
    python_loop = function.__globals__.get("_jitad_python_loop")
    signature = tuple(numba.typeof(a) for a in example_args)
    compiled = _COMPILED.get((function, signature))
    if compiled is not None:    # another object with the same source (a lambda per call)
        return compiled
    try:
        if python_loop:     # Python around compiled kernels (see derivatives): one run
            function(*example_args)         # compiles them now, in this stage
            dispatcher = function
        else:
            with BACKGROUND_COMPILE if background else contextlib.nullcontext(), \
                    disk.lock(f"compile\n{function.__code__.co_filename}\n{signature}"):
                dispatcher = _compiled(function, signature)
    except numba.core.errors.NumbaError as error:
        first_line = str(error).strip().splitlines()[0]
        raise JitadError(
            f"Numba could not compile the code jitad generated for {user_loc}: {first_line}\n"
            f"  generated source: {source_file(source, fn_name)}\n"
            "  This is a jitad limitation or bug; please report it with the source above."
        ) from error
    _COMPILED[function, signature] = dispatcher
    return dispatcher


# (generated function, signature) -> its dispatcher, for this process. Generated functions
# are kept once per source (load_python), so this grows with distinct sources only.
_COMPILED: dict = {}


# Held by background compiles, and by a fork while it happens (api.py's fork handlers, with
# Numba's own compiler lock, which every compile holds, foreground ones and Numba's lazy
# ones included): a child never inherits Numba's compiler (its locks, LLVM's state) or a
# file lock in the middle of a compile. (A fork thus waits for the compile of one function
# to finish.) At exit it is taken for good: no background compile runs in LLVM while the
# process tears down.
BACKGROUND_COMPILE = threading.Lock()
NUMBA_COMPILER_LOCK = numba.core.compiler_lock.global_compiler_lock
atexit.register(BACKGROUND_COMPILE.acquire)      # (never released: the process ends)
