"""Compile: generated source text -> a file in the cache directory -> a Numba dispatcher.

With llvm.py's intrinsic, the only code that uses Numba. Source files are
content-addressed, so Numba's on-disk cache (`cache=True`) is reused by later
processes; Numba's errors are translated into a JitadError that points at the
user's function.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import sys
from pathlib import Path

import numba

from . import __version__, runtime, tape
from .errors import JitadError
from .store import cache_dir, write_atomically

_RUNTIME_KERNELS = {name: numba.njit(cache=True)(getattr(runtime, name)) for name in runtime.__all__}


@functools.cache
def _tape_interpreter():
    return numba.njit(cache=True, error_model="numpy")(runtime.run_tape)


def tape_kernel(wengert):
    """A TapeKernel for `wengert`, run by the (once compiled, disk-cached) interpreter."""
    return tape.TapeKernel(wengert, _tape_interpreter())


def source_file(source: str, fn_name: str) -> Path:
    """Write `source` to its content-addressed file (atomically; concurrent writers agree)."""
    digest = hashlib.sha256(f"{__version__}\n{source}".encode()).hexdigest()[:20]
    path = cache_dir() / f"{fn_name}_{digest}.py"
    if not path.exists() or path.read_text() != source:
        write_atomically(path, source.encode())
    return path


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
    (for users' own @numba.njit code)."""
    return numba.njit(cache=True, error_model="numpy")(kernel.py_func)


def load_python(source: str, fn_name: str):
    """The generated function as plain Python (no Numba), loaded from its cache file."""
    path = source_file(source, fn_name)
    module_name = f"jitad_generated.{path.stem}"
    module = sys.modules.get(module_name)
    if module is None:
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[module_name] = module
    return getattr(module, fn_name)


def _compiled(function, signature):
    """A dispatcher compiled for `signature` (or loaded from Numba's disk cache; an entry
    there that cannot be read, e.g. truncated, is deleted and the function recompiled)."""
    for attempt in range(2):
        dispatcher = numba.njit(cache=True, error_model="numpy")(function)
        try:
            dispatcher.compile(signature)
            break
        except numba.core.errors.NumbaError:
            raise
        except Exception:
            if attempt:
                raise
            stem = Path(function.__code__.co_filename).stem
            for entry in Path(dispatcher.stats.cache_path).glob(f"{stem}.*.nb[ic]"):
                entry.unlink(missing_ok=True)
    # Later calls with other argument types raise TypeError (the API's fast path falls
    # back to its full path then) instead of silently compiling a new version.
    dispatcher.disable_compile()
    return dispatcher


def compile_source(source: str, fn_name: str, example_args: tuple, user_loc: str):
    """A Numba dispatcher for the generated function, compiled for `example_args`' types.

    Raises:
        JitadError: Numba rejected the generated code (its message is kept as __cause__).
    """
    function = load_python(source, fn_name)
    for name in runtime.__all__:
        if name in function.__globals__:
            function.__globals__[name] = _RUNTIME_KERNELS[name]
    signature = tuple(numba.typeof(a) for a in example_args)
    try:
        dispatcher = _compiled(function, signature)
    except numba.core.errors.NumbaError as error:
        first_line = str(error).strip().splitlines()[0]
        raise JitadError(
            f"Numba could not compile the code jitad generated for {user_loc}: {first_line}\n"
            f"  generated source: {source_file(source, fn_name)}\n"
            "  This is a jitad limitation or bug; please report it with the source above."
        ) from error
    return dispatcher
