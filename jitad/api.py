"""The decorator and the compiled-function object.

Step: the pipeline's front door. A call classifies its arguments into a key,
finds a compiled variant (or traces -> simplifies -> differentiates -> prints ->
compiles one) and runs it; a failed guard retraces.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import itertools
import os
import re
import sys
import threading
import time
import types
import warnings
import weakref

import numpy as np

from . import codegen, collector, compile as compiler, disk, stats, store, tape
from .numpy_tier import NumpyKernel
from .primitives.linalg import RAISE_LINALG_ERRORS
from .cache import (MAX_SPECIALIZATIONS, SHAPES_WARNING, KeyEntry, Variant, classify,
                    consts_digest, shapes_of, static_key)
from .errors import (ArgumentError, GuardFailed, GuardLimitError, JitadError,
                     NonScalarOutputError, RetraceWarning)
from .reads import held_source, reads, underlying_function
from .tracing import _TRACE_LOCK, AuxSlot, Tracer, trace, user_frame
from .transforms import simplify, value_and_grad
from .wengert import Literal, Var

MODES = ("value_and_grad", "value")
CODE_SHAPES = ("auto", "straight", "loops", "llvm", "tape")


def build_source(variant: Variant, mode: str, wrt: tuple, fn_name: str,
                 code_shape: str = "auto") -> tuple:
    """(source, function name, final list) for a traced variant (see `build`)."""
    return build(variant, mode, wrt, fn_name, code_shape)[:3]


def build(variant: Variant, mode: str, wrt: tuple, fn_name: str, code_shape: str = "auto",
          for_reading: bool = True):
    """The pipeline after tracing: simplify, differentiate, simplify, choose a code shape,
    print. Returns (source, function name, final list, code shape); the source is None for
    the tape shape unless `for_reading`. Other modes (Jacobians, Hessians...): see
    `derivatives.build`."""
    if mode not in MODES:
        from .derivatives import build as build_derivative
        return build_derivative(variant, mode, wrt, fn_name, code_shape, for_reading)
    with stats.stage("analysis"):
        wengert = differentiated(variant, mode, wrt)
    return build_from(variant, mode, wrt, fn_name, code_shape, for_reading, wengert)


def differentiated(variant: Variant, mode: str, wrt: tuple):
    """The simplified (and, for "value_and_grad", differentiated and simplified again) list."""
    if mode == "value_and_grad":
        return simplify(reversed_unsimplified(variant, wrt))
    return simplify(variant.trace.wengert)


def reversed_unsimplified(variant: Variant, wrt: tuple):
    """The "value_and_grad" list of `differentiated` before its last simplify (which takes
    a third of the reverse pass's time and removes ~2% of the entries): what the tape
    answers first calls from while the background job simplifies and compiles."""
    return value_and_grad(simplify(variant.trace.wengert), list(wrt))


def build_from(variant: Variant, mode: str, wrt: tuple, fn_name: str, code_shape: str,
               for_reading: bool, wengert, chosen=None, vectorized=False):
    """`build` for the `differentiated` list `wengert`: choose a code shape (unless `chosen`
    already: `codegen.choose_shape`'s answer), print (`vectorized`: for NumPy)."""
    with stats.stage("analysis"):
        shape, runs = chosen or codegen.choose_shape(wengert, code_shape)
        if variant.trace.aux is not None and shape in ("llvm", "tape"):   # they return no aux
            shape, runs = codegen.choose_shape(wengert, "loops")
    kind = "value and gradient" if mode == "value_and_grad" else "value"
    inputs = ", ".join(f"{v.name}: {v.type_text()}" for v in variant.trace.wengert.inputs)
    wrt_names = ", ".join(variant.trace.wengert.inputs[i].name for i in wrt)
    doc = f"{kind.capitalize()} of {variant.trace.wengert.name} ({wengert.loc}), specialized " \
          f"for {inputs}" + (f"; d/d({wrt_names})." if mode == "value_and_grad" else ".")
    if shape == "tape":
        doc += " Runs on jitad's tape interpreter (too long to compile as source)."
    name = f"{codegen.identifier(fn_name)}_{mode}"
    if shape == "tape" and not for_reading:
        return None, name, wengert, shape
    with stats.stage("codegen"):
        source = codegen.generate(wengert, name, doc, shape, runs, vectorized)
    return source, name, wengert, shape


# Tiered execution: a first call whose differentiated list has at least this many entries
# (and that the tape can run) is answered by the tape interpreter while the specialized
# code compiles in a background thread. Shorter lists compile in about a second or less
# (straight-line source at ~1-3 ms a line is chosen below 200 entries; loops and LLVM
# take ~0.1-1 ms an entry), which is not worth a second tier.
TIERS_FROM_ENTRIES = 1000
# Array code takes Numba seconds from a few entries on (type inference and LLVM over each
# loop nest; a matmul, a tanh and two sums, 21 entries differentiated: 2-5 s): from this
# many entries, first calls are answered by the NumPy tier.
NUMPY_TIER_FROM_ENTRIES = 10
# Kernels that serve first calls while the specialized code compiles.
FIRST_TIERS = (tape.TapeKernel, NumpyKernel)


def tape_tier_applies(wengert) -> bool:
    """Is the list `wengert` long enough for the tape tier (TIERS_FROM_ENTRIES), and can the
    tape run it?"""
    return len(wengert.entries) >= TIERS_FROM_ENTRIES and tape.encodable(wengert, True)


# A traced list's reverse-mode list is at least about this many times longer (forward,
# adjoint products and sums: 2.1 times for the Rosenbrock loop, 3.3 for the long-traces
# graph): the reverse tape takes traces of TIERS_FROM_ENTRIES / REVERSE_GROWTH entries on.
REVERSE_GROWTH = 2
# Until the reverse tape's kernel is compiled (`compile.reverse_tape_compiled`: once per
# cache directory, ~1.5 s more than the tape's), shorter traces take the tape of their
# reverse-mode list, longer ones compile it (the 5,000-iteration Rosenbrock loop, 45,000
# entries, in an empty cache: 4.3 s to a first result by compiling it, 4.9 s without).
REVERSE_TAPE_COMPILES_FROM_ENTRIES = 30_000


def reverse_tape_applies(wengert) -> bool:
    """Is the traced list `wengert` long enough for the tape tier (its reverse-mode list of
    about TIERS_FROM_ENTRIES entries) and the reverse tape's kernel compiled or worth
    compiling, and can the reverse tape run it?"""
    n = len(wengert.entries)
    return n * REVERSE_GROWTH >= TIERS_FROM_ENTRIES and tape.reverse_encodable(wengert) and \
        (n >= REVERSE_TAPE_COMPILES_FROM_ENTRIES or compiler.reverse_tape_compiled())


def tape_only(forward, growth: int = 1) -> bool:
    """Would the differentiated list of the traced list `forward` take the tape shape? Its
    reverse-mode list is longer still, so where `forward` is over LLVM's limit and does
    not re-roll, the background job would reverse, simplify and encode (31, 10 and 6 s at
    100,000 ops of the long-traces graph) a tape slower than the reverse tape. A derivative
    list at least `growth` times longer than `forward` is over the limit from a `forward`
    that many times shorter."""
    return len(forward.entries) * growth > codegen.LLVM_ENTRIES_LIMIT and \
        codegen.choose_shape(forward)[0] in ("llvm", "tape")


def numpy_tier_applies(wengert) -> bool:
    """Is the NumPy tier on (JITAD_NUMPY_TIER) and worth it for the list `wengert` (array
    code of at least NUMPY_TIER_FROM_ENTRIES entries)?"""
    return len(wengert.entries) >= NUMPY_TIER_FROM_ENTRIES and \
        tiers_enabled("JITAD_NUMPY_TIER") and any(e.out.ndim for e in wengert.entries)


def _specialized_of(job, variant, mode, first):
    """A callable running the kernel serving `variant`'s `mode` once `job` (compiling it)
    is done (compiling it for a new layout, as every call does: `compile.call_compiling`),
    or None if the compile failed (calls then stay on the first tier `first`)."""
    _Background.start_new([job])
    job.done.wait()
    kernel = variant.kernels.get(mode)
    return None if kernel is first else lambda *args: compiler.call_compiling(kernel, args)


def _retrace_warning(message: str) -> None:
    """A RetraceWarning at the user's call (the innermost frame outside jitad)."""
    frame = user_frame()
    if frame is None:
        warnings.warn(message, RetraceWarning)
        return
    warnings.warn_explicit(message, RetraceWarning, frame.f_code.co_filename, frame.f_lineno,
                           frame.f_globals.get("__name__"),
                           frame.f_globals.setdefault("__warningregistry__", {}))


def tiers_enabled(variable: str = "JITAD_TIERS") -> bool:
    """False when the environment variable `variable` (JITAD_TIERS: every tier;
    JITAD_NUMPY_TIER: the NumPy tier) turns tiers off (0, false, no, off)."""
    return os.environ.get(variable, "1").strip().lower() not in ("0", "false", "no", "off")


class JitGrad:
    """A function compiled together with its gradient. Create it with `jit_grad`."""

    _trampolines_ok = True      # subclasses with other call modes keep the plain methods

    def __init__(self, fun, argnums=0, code_shape="auto", has_aux=False, tiers=True):
        if not callable(fun):
            raise ArgumentError(f"jit_grad needs a function, got {type(fun).__name__} {fun!r:.60}")
        functools.update_wrapper(self, fun)
        if not hasattr(self, "__name__"):       # functools.partial, callable objects
            self.__name__ = getattr(underlying_function(fun), "__name__", type(fun).__name__)
            self.__qualname__ = self.__name__
        self.fun = fun
        self.argnums = argnums
        self.has_aux = has_aux
        self.tiers = tiers
        self._records: list = []            # (stats.Record, its tape kernel or None)
        self._jobs: list = []               # background compiles (_Background)
        if code_shape not in CODE_SHAPES:
            raise ArgumentError(f"code_shape must be one of {', '.join(map(repr, CODE_SHAPES))}, "
                                f"got {code_shape!r}")
        self.code_shape = code_shape
        if isinstance(argnums, int) and not isinstance(argnums, bool):
            self._wrt = (argnums,)
        elif isinstance(argnums, tuple) and argnums and all(
                isinstance(i, int) and not isinstance(i, bool) for i in argnums):
            self._wrt = argnums
        else:
            raise ArgumentError(f"argnums must be an int or a non-empty tuple of ints, "
                                f"got {argnums!r}")
        self._signature = inspect.signature(fun)
        params = list(self._signature.parameters.values())
        # Keyword-only parameters with defaults (also those a functools.partial binds) keep
        # their defaults: they are read like globals, not passed.
        unsupported = [p.name for p in params if p.kind == p.VAR_KEYWORD or (
            p.kind == p.KEYWORD_ONLY and p.default is p.empty)]
        if unsupported:
            raise ArgumentError(f"{self.__name__}: keyword-only parameters without a default "
                                f"and **kwargs are not supported ({', '.join(unsupported)}); "
                                "make them positional")
        params = [p for p in params if p.kind != p.KEYWORD_ONLY]
        self._varargs = any(p.kind == p.VAR_POSITIONAL for p in params)
        self._names = [p.name for p in params if p.kind != p.VAR_POSITIONAL]
        self._names_of_count: dict = {}     # argument count -> identifiers (`_names_for`)
        self._cache: dict = {}
        self._fast: dict = {mode: {} for mode in MODES}    # _fast_key(args) -> entry(*args)
        self._single = isinstance(argnums, int)
        # A class of its own, so that `__call__` can become a generated entry too (Python
        # looks special methods up on the type, not the instance).
        self.__class__ = type(type(self).__name__, (type(self),), {"__slots__": ()})
        self._own_methods = self._trampolines_ok and not self._varargs and \
            not any(n.startswith("_jitad") for n in self._names)
        self._defaults = [p.default for p in params if p.default is not p.empty]
        if self._own_methods:
            self._install_trampolines()
        self.trace_count = 0
        self.compile_count = 0
        self.stale_retraces = 0
        self._lock = threading.RLock()          # one trace and one compile per first call
        _OBJECTS.add(self)
        self._bound: dict | None = None        # id(instance) -> its object (no __dict__)
        self._instance = None                   # on a method's object: its instance
        self._attribute = self.__name__         # its name in the class (`__set_name__`)

    def __repr__(self) -> str:
        return f"<jitad.jit_grad of {self.__qualname__}, argnums={self.argnums!r}>"

    def __reduce__(self):
        # Pickle by reference: workers import the decorated function from its module.
        return self.__qualname__

    def __set_name__(self, owner, name) -> None:
        self._attribute = name

    def __get__(self, instance, owner=None):
        """On a method: a jit_grad of the method bound to `instance`; `argnums` counts the
        arguments after `self`. It is made once per instance and kept in the instance's
        `__dict__` (as `functools.cached_property` keeps values), so it lives as long as
        the instance; a kept object serves only the instance it was made for (a
        `copy.copy` gets its own). Instances without a `__dict__` have theirs kept here, by
        identity (never `==`: instances that compare equal may hold different values),
        which keeps them alive."""
        if instance is None:
            return self
        attributes = getattr(instance, "__dict__", None)
        if type(attributes) is dict:
            key = f"__jitad_{self._attribute}"
            kept = attributes.get(key)
            if kept is None or kept._instance is not instance:
                kept = attributes[key] = self._bind_to(instance)
            return kept
        if self._bound is None:
            self._bound = {}
        kept = self._bound.get(id(instance))
        if kept is None:        # (kept objects hold their instances: ids stay unique)
            kept = self._bound[id(instance)] = self._bind_to(instance)
        return kept

    def _bind_to(self, instance):
        bound = self._bind(instance)
        bound._instance = instance
        bound._attribute = self._attribute
        return bound

    def _bind(self, instance):
        """A new object like this one for the method bound to `instance`."""
        return JitGrad(types.MethodType(self.fun, instance), self.argnums, self.code_shape,
                       self.has_aux, self.tiers)

    def __reduce_ex__(self, protocol):
        if self._instance is not None:     # a method's object: the instance's attribute
            return getattr, (self._instance, self._attribute)
        return self.__reduce__()

    # ------------------------------------------------------------ public calls

    # For functions without *args, these three are replaced on the object by generated
    # functions with the user's parameters (see `_install_trampolines` and `_entry`).

    def __call__(self, *args, **kwargs):
        """The gradient: a float, an ndarray shaped like the argument, or a tuple of those
        (`(gradient, aux)` with has_aux)."""
        value, grad = self._call("value_and_grad", args, kwargs)
        return (grad, value[1]) if self.has_aux else grad

    def value_and_grad(self, *args, **kwargs):
        """`(value, gradient)` from one compiled call (scipy's `jac=True` convention);
        `((value, aux), gradient)` with has_aux, as JAX returns."""
        return self._call("value_and_grad", args, kwargs)

    def value(self, *args, **kwargs):
        """The function's value, from the compiled forward code only."""
        return self._call("value", args, kwargs)

    def wengert(self, *args, grad: bool = False, **kwargs):
        """The traced Wengert list for these argument kinds (`grad=True`: the differentiated one)."""
        variant, _ = self._variant(args, kwargs)
        if not grad:
            return variant.trace.wengert
        return build_source(variant, "value_and_grad", variant.wrt, self.__name__,
                            self.code_shape)[2]

    def source(self, *args, mode: str = "value_and_grad", **kwargs) -> str:
        """The generated Python source (forward and adjoint sweeps) for these argument kinds."""
        variant, _ = self._variant(args, kwargs)
        return build_source(variant, mode, variant.wrt, self.__name__, self.code_shape)[0]

    def njit_value_and_grad(self, *args, **kwargs):
        """The compiled Numba dispatcher, callable from a user's own `@numba.njit` code.

        It takes the runtime arguments only (static ones are baked in), in order, and
        returns `(value, (grad, …))`. Not available for lists run by the tape interpreter.
        """
        return self._standalone("value_and_grad", args, kwargs)

    def _standalone(self, mode: str, args, kwargs):
        """A standalone Numba dispatcher of `mode`'s specialized kernel for these arguments
        (waiting for it where a first tier serves), or a JitadError for the tape shape."""
        variant, runtime_args = self._variant(args, kwargs)
        kernel = self._kernel(variant, mode, runtime_args)
        if isinstance(kernel, FIRST_TIERS):             # the specialized code may be compiling
            self.wait()
            kernel = variant.kernels[mode]
        if isinstance(kernel, tape.TapeKernel):
            raise JitadError(f"{self.__name__}: this specialization runs on the tape interpreter "
                             "(its list is too long to compile); pass code_shape='loops' for "
                             "a Numba dispatcher")
        return compiler.standalone_dispatcher(kernel)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every specialized compile running in the background for this function
        is in (or has failed; calls then stay on the tape). False if `timeout` seconds
        passed first."""
        _Background.start_new(self._jobs)
        return _Background.wait_all(self._jobs, timeout)

    def stats(self) -> list:
        """Per compiled specialization, a dict: function, signature, mode, code shape, tier
        ("specialized", "tape" or "numpy"), seconds of trace/analysis/codegen/compile, calls
        the first tier served, and the background compile's state (None, "compiling",
        "done", "failed"). The same figures go to the `jitad` logger (INFO)."""
        for record, kernel in self._records:
            if kernel is not None:
                record.tier_calls = kernel.calls
        return [record.as_dict() for record, _ in self._records]

    @property
    def hessp(self):
        """`(x, p, *args) -> H p` (Hessian-vector product, H never formed), ready for
        `scipy.optimize.minimize(hessp=...)`: `jitad.hvp` of this function."""
        from .derivatives import hvp
        if "_hessp" not in self.__dict__:
            self.__dict__["_hessp"] = hvp(self, argnums=self.argnums)
        return self.__dict__["_hessp"]

    @property
    def hess(self):
        """`(x, *args) -> H`, the dense Hessian (for `scipy.optimize.minimize(hess=...)`)."""
        from .derivatives import hessian
        if "_hess" not in self.__dict__:
            self.__dict__["_hess"] = hessian(self, argnums=self.argnums)
        return self.__dict__["_hess"]

    # ------------------------------------------------------------ machinery

    def _arguments(self, args, kwargs) -> list:
        if kwargs or self._varargs or len(args) != len(self._names):
            try:
                bound = self._signature.bind(*args, **kwargs)
            except TypeError as error:
                raise ArgumentError(f"{self.__name__}{self._signature}: {error}") from None
            keyword_only = [k for k in kwargs if self._signature.parameters[k].kind ==
                            inspect.Parameter.KEYWORD_ONLY]
            if keyword_only:        # their defaults are read like globals, never passed
                raise ArgumentError(
                    f"{self.__name__}: keyword-only parameter(s) {', '.join(keyword_only)} "
                    "cannot be passed to a jitad function (their defaults are compiled in); "
                    "make them positional, or bind them with functools.partial")
            bound.apply_defaults()
            args = bound.args
        return list(args)

    def _names_for(self, count: int) -> list:
        names = self._names_of_count.get(count)
        if names is None:
            names = list(self._names)
            varargs = next((p.name for p in self._signature.parameters.values()
                            if p.kind == p.VAR_POSITIONAL), "arg")
            names += [f"{varargs}{i}" for i in range(count - len(names))]
            names = self._names_of_count[count] = [codegen.identifier(n) for n in names]
        return names

    def _classify(self, args):
        names = self._names_for(len(args))
        keys, runtime = [], []
        for value, name in zip(args, names):
            key, runtime_value = classify(value, name)
            keys.append(key)
            runtime.append(runtime_value)
        for i in self._wrt:
            if not -len(args) <= i < len(args):
                raise ArgumentError(f"argnums={self.argnums!r} but {self.__name__} got "
                                    f"{len(args)} argument(s)")
            i %= len(args)
            if runtime[i] is None or keys[i] not in ("f",) and keys[i][0] != "f8":
                raise ArgumentError(
                    f"argument '{names[i]}' (argnums {i}) is {type(args[i]).__name__} "
                    f"{args[i]!r:.40}: only floats and float64 arrays can be differentiated"
                    + (f"; pass {float(args[i])!r}" if isinstance(args[i], int) else ""))
        return tuple(keys), runtime, names

    def _lookup(self, args, kwargs):
        """(arguments, key, per-argument runtime values or None, names, runtime values,
        cached candidate variants) for a call."""
        args = self._arguments(args, kwargs)
        key, runtime, names = self._classify(args)
        values = [v for v in runtime if v is not None]
        entry = self._cache.get(key)
        if entry is None:
            return args, key, runtime, names, values, []
        stale = entry.drop_stale()
        if stale:
            self._forget_entries(stale)
        return args, key, runtime, names, values, entry.candidates(values)

    def _forget_entries(self, stale: set) -> None:
        """Drop every generated entry (their variants may have read the rebound `stale`
        bindings): calls take the full path, which retraces what is stale."""
        for entries in self._fast.values():
            entries.clear()
        if self._own_methods:
            self._reset_trampolines()
        self.stale_retraces += 1
        if self.stale_retraces == MAX_SPECIALIZATIONS:
            _retrace_warning(
                f"{self.__name__} was traced again {self.stale_retraces} times because values "
                f"it reads were rebound between calls ({', '.join(sorted(stale))}); pass such "
                "values as arguments to avoid tracing and compiling at every change")

    def _variant(self, args, kwargs):
        """The cached (or newly traced) variant for these arguments, ignoring guards."""
        args, key, runtime, names, values, candidates = self._lookup(args, kwargs)
        variant = candidates[0] if candidates else self._trace(args, key, runtime, names,
                                                               load=False)
        return variant, values + variant.trace.consts

    def _trace(self, args, key, runtime, names, exact=False, load=True) -> Variant:
        """Trace (or, with `load`, read from the disk store a trace whose guards may not
        hold for these values) and add the variant to the cache."""
        entry = self._cache.setdefault(key, KeyEntry())
        values = [v for v in runtime if v is not None]
        guarded = entry.candidates(values)         # (for these shapes, where keyed by them)
        if len(guarded) >= MAX_SPECIALIZATIONS:
            raise GuardLimitError(self._guard_limit_message(guarded))
        read = reads(self.fun, (key, exact, shapes_of(values)))
        digest = None if self.has_aux else read.digest  # the store keeps no aux structure
        timer, unsaved = stats.Timer(), None
        with collector.pause():
            traced = store.load("traces", digest) if digest and load else None
            if traced is None:
                with stats.stage("trace") as timer:
                    traced = trace(self.fun, args, [v is not None for v in runtime], names,
                                   has_aux=self.has_aux, held=read.held)
                traced.reads_sizes = traced.reads_sizes or exact
                self._check_output(traced)
                if digest and not traced.consts:
                    unsaved = functools.partial(store.save, "traces", digest, traced)
        self.trace_count += 1
        runtime_index = {p: k for k, p in enumerate(i for i, v in enumerate(runtime)
                                                    if v is not None)}
        if digest:      # traces under one digest differ by their guards' outcomes
            digest += repr([e.params["expected"] for e in traced.wengert.entries
                            if e.prim.name == "guard"])
            if traced.consts:   # and by the constants they froze (a mask's positions)
                digest += consts_digest(traced.consts)
        variant = Variant(traced, wrt=tuple(runtime_index[i % len(args)] for i in self._wrt),
                          digest=digest, reads=read.with_arrays(
                              {id(value) for value in traced.consts} - traced.read),
                          unsaved=unsaved)
        variant.trace_s = timer.seconds                 # for its records (stats)
        if entry.add(variant, values) and entry.exact_shapes and \
                len(entry.variants) == SHAPES_WARNING:
            _retrace_warning(
                f"{self.__name__} was traced for {SHAPES_WARNING} different argument shapes: it "
                "reads sizes (slicing, len, .shape, element reads), so each shape gets its own "
                "trace and compiled code; pad or bucket inputs to a few sizes if these "
                "compiles add up")
        return variant

    def _check_output(self, traced) -> None:
        out = traced.wengert.outputs[0]     # (then the aux outputs, with has_aux)
        if isinstance(out, (Var, Literal)) and out.shape == () and out.dtype != "bool":
            return
        what = (f"an array of shape {out.shape}" if out.shape else "a bool (a comparison)") \
            if isinstance(out, (Var, Literal)) else returned(out)
        raise NonScalarOutputError(
            f"{self.__name__} must return a scalar (a float or 0-d array) to be differentiated "
            f"by jit_grad, but it returned {what}.\n  Reduce it (e.g. np.sum(...)) or "
            "use jitad.jacobian(...) for the Jacobian of a vector-valued function."
            f"\n  at {self._output_line(traced, out)}")

    def _output_line(self, traced, out) -> str:
        """Where the traced function computed its output `out` (else its own line)."""
        where = next((e.loc for e in reversed(traced.wengert.entries) if e.out is out), None)
        return where or f"{traced.wengert.loc} (the function {self.__name__})"

    def _guard_limit_message(self, variants) -> str:
        lines = {g for v in variants for g in v.trace.guards}
        where = "; ".join(f"{w}: {t}" for w, t in sorted(lines)) or "unknown"
        return (f"{self.__name__}: more than {MAX_SPECIALIZATIONS} specializations for the same "
                f"argument kinds, because branches on traced values keep changing outcome "
                f"(guards at {where}).\n  Select without branching: use jitad.where(cond, a, b) "
                "or np.where, which differentiate correctly.")

    def _kernel(self, variant: Variant, mode: str, runtime_args, compiled=None):
        """The kernel of `variant`'s `mode`, made (and its stats recorded) on first use by
        `compiled(variant, mode, runtime_args)` (by default `_compiled`)."""
        kernel = variant.kernels.get(mode)
        if kernel is None:
            inputs = variant.trace.wengert.inputs
            record = stats.Record(self.__name__, ", ".join(f"{v.name}: {v.type_text()}"
                                                           for v in inputs), mode,
                                  trace_s=getattr(variant, "trace_s", 0.0))
            with stats.recording(record):
                kernel = variant.kernels[mode] = (compiled or self._compiled)(variant, mode,
                                                                             runtime_args)
            tiered = isinstance(kernel, FIRST_TIERS)
            record.tier = kernel.tier if tiered else "specialized"
            self._records.append((record, kernel if tiered else None))
            self.compile_count += 1
            stats.finished(record)
        return kernel

    def _compiled(self, variant: Variant, mode: str, runtime_args):
        """The specialized kernel (see `_specialized`), or, for lists that take Numba seconds
        (long lists the tape can run, array code), a first-tier kernel (tape or NumPy)
        while the specialized one compiles in the background."""
        key = self._build_key(variant, mode)
        plain = mode in MODES and variant.trace.aux is None     # what the tiers can return
        forced_tape = plain and self.code_shape == "tape"
        tiered = plain and self._first_tier_wanted(variant, key)
        if forced_tape or not tiered:       # (a first tier's job stores it after the result)
            variant.store_trace()
        if not (forced_tape or tiered):
            return self._specialized(variant, mode, runtime_args, key)
        raw = None
        if tiered and not forced_tape and mode == "value_and_grad":
            first = self._reverse_tape(variant, mode, runtime_args, key)
            if first is not None:
                return first
            first, raw = self._unsimplified_tape(variant, mode, runtime_args, key)
            if first is not None:
                return first
        with collector.pause(), stats.stage("analysis"):
            wengert = differentiated(variant, mode, variant.wrt) if raw is None else \
                simplify(raw)
        if forced_tape and tape.encodable(wengert, True):     # (inputs of any rank)
            stats.current().shape = "tape"
            with stats.stage("codegen"):
                return compiler.tape_kernel(wengert)
        chosen = None
        if forced_tape:
            first = None
        elif tape_tier_applies(wengert):
            with stats.stage("codegen"):            # (the tape's encoding)
                first = compiler.tape_kernel(wengert)
        else:
            first, chosen = self._numpy_tier(variant, mode, wengert, runtime_args)
        if first is None:
            variant.store_trace()
            return self._specialized(variant, mode, runtime_args, key, wengert, chosen=chosen)
        return self._in_background(variant, mode, first, functools.partial(
            self._stored_and_specialized, variant, mode, runtime_args, key, wengert, chosen))

    def _reverse_tape(self, variant: Variant, mode: str, runtime_args, key: str):
        """The first tier from the simplified traced list alone (`tape.ReverseTapeKernel`:
        no reverse-mode list before the first result; the same operations in the same order
        as the reverse-mode list of `_unsimplified_tape`), or None where
        `reverse_tape_applies` does not; the background job differentiates, simplifies and
        compiles."""
        with collector.pause(), stats.stage("analysis"):
            ok = reverse_tape_applies(variant.trace.wengert)
            forward = simplify(variant.trace.wengert) if ok else None
        if not ok or not tape.reverse_encodable(forward):
            return None
        with collector.pause(), stats.stage("codegen"):         # (the tape's encoding)
            first = compiler.reverse_tape_kernel(forward, variant.wrt)
        return self._in_background(variant, mode, first, functools.partial(
            self._reversed_and_specialized, variant, mode, runtime_args, key, forward))

    def _reversed_and_specialized(self, variant, mode, runtime_args, key, forward):
        """(A background job's work) reverse mode on the simplified traced list `forward`,
        then `_simplified_and_specialized`; None (the reverse tape stays) where
        `tape_only(forward)`."""
        with collector.pause(), stats.stage("analysis"):
            if tape_only(forward):
                return self._tape_stays(variant)
            raw = value_and_grad(forward, list(variant.wrt))
        return self._simplified_and_specialized(variant, mode, runtime_args, key, raw)

    def _unsimplified_tape(self, variant: Variant, mode: str, runtime_args, key: str):
        """(the first tier or None, the reversed list before its last simplify): the tape of
        that list (`_compiled`'s tape tier a simplify sooner: the background job simplifies
        before compiling), or None where the list is short or the tape cannot run it
        (`_compiled` then simplifies it and decides on the simplified list, as before). The
        simplify it skips folds constants, removes identities (`x*1`, `--x`), shares common
        subexpressions and drops dead code: the same operations on the same values, bitwise,
        except a zero's sign (`-0.0 + 0` is 0.0) and constants folded by NumPy's `impl` of
        a transcendental function (the tape computes them with the kernel's libm)."""
        with collector.pause(), stats.stage("analysis"):
            raw = reversed_unsimplified(variant, variant.wrt)
            ok = tape_tier_applies(raw)
        if not ok:
            return None, raw
        with stats.stage("codegen"):                # (the tape's encoding)
            first = compiler.tape_kernel(raw)
        return self._in_background(variant, mode, first, functools.partial(
            self._simplified_and_specialized, variant, mode, runtime_args, key, raw)), raw

    def _simplified_and_specialized(self, variant, mode, runtime_args, key, raw):
        """(A background job's work) simplify the reversed list `raw`, then
        `_stored_and_specialized` from it."""
        with collector.pause(), stats.stage("analysis"):
            wengert = simplify(raw)
        return self._stored_and_specialized(variant, mode, runtime_args, key, wengert)

    def _build_key(self, variant: Variant, mode: str) -> str:
        """The key of `variant`'s `mode` build in the store."""
        return f"{variant.digest}-{mode}-{variant.wrt}-{self.code_shape}-{self.__name__}"

    def _first_tier_wanted(self, variant: Variant, key: str) -> bool:
        """Tiers on, and no stored build of `key` small enough to load at once (whose
        compile Numba's cache skips; a larger one loads in the background, as a compile)."""
        if not (self.tiers and tiers_enabled()):
            return False
        size = store.stored_bytes("builds", key) if variant.digest else None
        return size is None or size > LOADED_AT_ONCE

    @staticmethod
    def _tape_stays(variant) -> None:
        """Where the specialized code would be a tape no faster than the first tier's: store
        the trace, record the tape shape; None (a background job's "the first tier stays")."""
        variant.store_trace()
        stats.current().shape = "tape"

    def _stored_and_specialized(self, variant, mode, runtime_args, key, wengert=None,
                                chosen=None):
        """(A background job's work) store the trace, then `_specialized` in the background."""
        variant.store_trace()
        return self._specialized(variant, mode, runtime_args, key, wengert, background=True,
                                 chosen=chosen)

    def _in_background(self, variant: Variant, mode: str, first, specialized):
        """`first` (a first-tier kernel of `variant`'s `mode`), serving calls while a
        background job (started once the first call has run: `_finish`) makes the
        specialized kernel by `specialized()` and switches calls to it."""
        record = stats.current()
        record.background = "compiling"
        job = _Background(functools.partial(self._compile_later, variant, mode, first, record,
                                            specialized))
        if isinstance(first, NumpyKernel):     # (it hands calls it cannot answer over)
            first.specialized = functools.partial(_specialized_of, job, variant, mode, first)
        self._jobs = [j for j in self._jobs if not j.done.is_set()] + [job]
        return first

    def _numpy_tier(self, variant: Variant, mode: str, wengert, runtime_args) -> tuple:
        """(a NumpyKernel or None, the code shape chosen or None): the NumPy tier for array
        code of at least NUMPY_TIER_FROM_ENTRIES entries printed as source."""
        if not numpy_tier_applies(wengert):
            return None, None
        with collector.pause():
            with stats.stage("analysis"):
                chosen = codegen.choose_shape(wengert, self.code_shape)
            if chosen[0] not in ("straight", "loops"):
                return None, chosen
            stats.current().shape = chosen[0]
            source, name, _, _ = build_from(variant, mode, variant.wrt, self.__name__,
                                            self.code_shape, True, wengert, chosen,
                                            vectorized=True)
        with stats.stage("codegen"):
            return compiler.numpy_kernel(source, name, tuple(runtime_args), wengert), chosen

    def _compile_later(self, variant, mode, first, record, specialized):
        """(In a background thread) make the specialized kernel (`specialized()`) and make
        calls use it instead of the first-tier kernel `first`; on failure, log it and keep
        the first tier."""
        try:
            with stats.recording(record):
                kernel = specialized()
        except Exception as error:      # noqa: BLE001 -- the first tier keeps serving
            record.background = "failed"
            stats.failed(record, error)
            return
        record.background = "done"
        if kernel is None:              # too long for anything but the tape
            return
        self._switch(variant, mode, first, kernel)
        first_tier = record.tier
        record.tier, record.tier_calls = "specialized", first.calls
        stats.switched(record, first_tier)

    def _switch(self, variant, mode, first, kernel) -> bool:
        """Serve calls with `kernel` instead of the tape kernel `first`: in the variant, and by
        dropping the generated entries that call `first` (calls reinstall them). Without the
        object's lock (a fork must never find it held): an entry a racing first call still
        installs with `first` forwards to `kernel` (`TapeKernel.successor`). True if
        entries were dropped."""
        first.successor = kernel
        variant.kernels[mode] = kernel
        stale = False
        for entries in self._fast.values():
            for fast_key, entry in list(entries.items()):
                if entry.kernel is first:
                    stale = True
                    if entries.get(fast_key) is entry:
                        entries.pop(fast_key, None)
        if stale and self._own_methods:
            self._reset_trampolines()
        return stale

    def _specialized(self, variant: Variant, mode: str, runtime_args, key: str, wengert=None,
                     background: bool = False, chosen=None):
        """A kernel from the stored build of this variant, else from building (and storing)
        one (from its `differentiated` list `wengert` when given); Numba's own cache then
        skips compiling source it has seen. None in the `background` where the list is too
        long for anything but the tape (the first tier, a tape, stays)."""
        record = stats.current()
        # Processes first-calling the same function build it once: the others wait, then load.
        # (Not in the background, where a fork could leave the lock to a child.)
        with disk.lock(f"build\n{key}") if variant.digest and not background \
                else contextlib.nullcontext():
            built = store.load("builds", key) if variant.digest else None
            if built is None:
                with collector.pause():
                    if wengert is None:
                        source, name, wengert, shape = build(
                            variant, mode, variant.wrt, self.__name__, self.code_shape,
                            for_reading=False)
                    else:
                        source, name, wengert, shape = build_from(
                            variant, mode, variant.wrt, self.__name__, self.code_shape,
                            False, wengert, chosen)
                built = source, name, shape
                if variant.digest and shape != "tape":      # (the tape has no source)
                    store.save("builds", key, built)
        source, name, shape = built
        if record is not None:
            record.shape = shape
        if shape == "tape":             # (only just built: a stored build has source)
            if background:              # (the first tier is a tape already: it stays)
                return None
            with collector.pause():
                return compiler.tape_kernel(wengert)
        with stats.stage("compile"):
            return compiler.compile_source(source, name, tuple(runtime_args),
                                           variant.trace.wengert.loc, background=background)

    def _call(self, mode: str, args, kwargs):
        """An exact-key lookup of the signature's generated entry, else the full path."""
        if not kwargs:
            try:
                entry = self._fast[mode].get(_fast_key(args))
            except TypeError:           # an unhashable argument: the full path explains it
                entry = None
            if entry is not None:
                return entry(*args)
        return self._run(mode, args, kwargs)

    def _entry_missed(self, mode: str, args: tuple, failed):
        """Where a generated entry sends the calls it does not cover: calls its checks refuse
        (`failed` False) to `_call`; calls its kernel refused (`failed` is the entry: another
        dtype, rank, layout or branch outcome) to the entry of their own signature if that is
        another one, else to `_run`."""
        if not failed:
            return self._call(mode, args, {})
        try:
            entry = self._fast[mode].get(_fast_key(args))
        except TypeError:
            entry = None
        if entry is None or entry is failed:
            return self._run(mode, args, {})
        return entry(*args)

    def _run(self, mode: str, args, kwargs):
        """The full path: classify, find or trace a variant, run it, and remember a fast path.
        Under the object's lock (`first_call_lock`): threads first-calling together trace
        and compile once."""
        if any(isinstance(a, Tracer) for a in args) or \
                any(isinstance(a, Tracer) for a in kwargs.values()):
            from .derivatives import inline     # called inside another trace: replay the list
            return inline(self, mode, args, kwargs)
        with self.first_call_lock(), stats.progress(self.__name__):
            return self._run_locked(mode, args, kwargs)

    @contextlib.contextmanager
    def first_call_lock(self):
        """Hold tracing's lock, then this object's: in the order a trace takes them when the
        traced code calls this object with plain values (the other order could deadlock
        with such a trace)."""
        with _TRACE_LOCK, self._lock:
            yield

    def _run_locked(self, mode: str, args, kwargs):
        args, key, runtime, names, values, candidates = self._lookup(args, kwargs)
        for variant in candidates:
            try:
                return self._finish(variant, mode, args, values, kwargs)
            except GuardFailed:
                continue
            except (ValueError, IndexError):
                # A size-generic variant met sizes that do not fit (e.g. mismatched lengths):
                # retrace these arguments as Python would run them, for a located error.
                return self._finish(self._trace(args, key, runtime, names, exact=True),
                                    mode, args, values, kwargs)
        variant = self._trace(args, key, runtime, names, load=not candidates)
        try:
            return self._finish(variant, mode, args, values, kwargs)
        except GuardFailed:
            if candidates:
                raise
            # A stored trace took other branches: trace these arguments.
            variant = self._trace(args, key, runtime, names, load=False)
            return self._finish(variant, mode, args, values, kwargs)

    def _finish(self, variant, mode, args, values, kwargs):
        kernel = self._kernel(variant, mode, values + variant.trace.consts)
        try:
            result = _shaped_result(compiler.call_compiling(kernel, values + variant.trace.consts),
                                    mode, self._single, variant.trace.aux)
        except np.linalg.LinAlgError as error:      # (the trace ran the function's own: this
            raise np.linalg.LinAlgError(            # is the derivative's linear algebra)
                f"{error}\n  in the derivative code of {self.__name__}, from the linear "
                f"algebra at {_linalg_lines(variant)}") from None
        finally:        # a background compile starts after the tape's first result
            _Background.start_new(self._jobs)
        if not kwargs and len(self._fast[mode]) < _FAST_PATH_ENTRIES and \
                _fast_path_applies(args, variant):
            self._install_entry(kernel, mode, args, variant)
        return result

    def _call_positional(self, mode: str, *args):
        return self._call(mode, args, {})

    def _install_trampolines(self) -> None:
        """`value_and_grad`, `value` and `__call__` as functions with the user's parameters,
        the object's methods for good: they call the full path until a signature is compiled,
        then run the code of its entry (`_install_entry` swaps their `__code__`), so that
        references taken before a compile (`minimize(f.value_and_grad, ...)`) cost no more
        than the entry itself."""
        self._current = {}
        signature, packed = _parameters_source(self._names, len(self._defaults))
        namespace = {"_jitad_current": self._current,
                     **{f"_jitad_default{i}": d for i, d in enumerate(self._defaults)}}
        exec(compile(f"def value_and_grad({signature}):\n"
             f"    return _jitad_current['value_and_grad']({packed})\n"
             f"def value({signature}):\n    return _jitad_current['value']({packed})\n"
             f"def grad({signature}):\n"
             f"    value, grad = _jitad_current['value_and_grad']({packed})\n"
             f"    return {'(grad, value[1])' if self.has_aux else 'grad'}\n", _GENERATED, "exec"),
             namespace)
        self._namespace = namespace             # the entries' globals too (see `_entry`)
        self._trampolines = {"value_and_grad": _as_method(namespace["value_and_grad"], self,
                                                          JitGrad.value_and_grad),
                             "value": _as_method(namespace["value"], self, JitGrad.value),
                             "__call__": _as_method(namespace["grad"], self, JitGrad.__call__)}
        self._plain_code = {name: f.__code__ for name, f in self._trampolines.items()}
        self._reset_trampolines()

    def _reset_trampolines(self) -> None:
        """Point the trampolines (and the methods) at the full path again."""
        for mode in MODES:
            self._current[mode] = functools.partial(self._call_positional, mode)
            setattr(self, mode, self._trampolines[mode])
        for name, function in self._trampolines.items():
            function.__code__ = self._plain_code[name]
        type(self).__call__ = staticmethod(self._trampolines["__call__"])

    def _install_entry(self, kernel, mode: str, args, variant) -> None:
        """Generate the entry for this exact signature; make the methods run it (not for
        *args functions, whose entries must take any count: they stay in `_fast`)."""
        params = self._names if self._own_methods else [f"a{i}" for i in range(len(args))]
        defaults = self._defaults if self._own_methods else []
        # Entries share the trampolines' globals (under names of their own), a bounded number.
        shared = self._own_methods and len(self._namespace) < _SHARED_GLOBALS
        entry, grad_entry = _entry(kernel, mode, args, params, defaults, variant.trace.consts,
                                   variant.reads, self._single,
                                   functools.partial(self._entry_missed, mode),
                                   variant.trace.aux, self._namespace if shared else None)
        self._fast[mode][_fast_key(args)] = entry
        if self._own_methods:
            self._current[mode] = entry
            if shared:
                self._trampolines[mode].__code__ = entry.__code__
                if grad_entry is not None:
                    self._trampolines["__call__"].__code__ = grad_entry.__code__
                return
            for name in (mode, "__call__") if grad_entry is not None else (mode,):
                self._trampolines[name].__code__ = self._plain_code[name]   # via `_current`
            setattr(self, mode, _as_method(entry, self, getattr(JitGrad, mode)))
            if grad_entry is not None:
                type(self).__call__ = staticmethod(_as_method(grad_entry, self,
                                                              JitGrad.__call__))


class _Background:
    """A specialized compile running in a daemon thread. A forked child has no such thread:
    it starts its own for the compiles that had not finished (see `_after_fork_in_child`)."""

    running: set = set()        # jobs not finished, of every JitGrad
    lock = threading.Lock()     # (guards `running` and the switch interval with it)

    def __init__(self, work):
        self.work = work
        self.started = False
        self.done = threading.Event()

    @staticmethod
    def start_new(jobs) -> None:
        for job in jobs:
            if not job.started:
                job.start()

    def start(self) -> None:
        self.started = True
        with _Background.lock:
            if not _Background.running:
                _fast_switching(True)
            _Background.running.add(self)
        threading.Thread(target=self._run, name="jitad-compile", daemon=True).start()

    def _run(self) -> None:
        try:
            self.work()
        finally:
            with _Background.lock:
                _Background.running.discard(self)
                if not _Background.running:
                    _fast_switching(False)
            self.done.set()

    @staticmethod
    def wait_all(jobs, timeout=None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        for job in list(jobs):
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            if not job.done.wait(left):
                return False
        return True


# While background compiles run, the interpreter's switch interval (how long a thread that
# waits for the GIL waits before asking its holder to drop it; 5 ms by default) is lowered
# to this: a first-tier call runs its kernel without the GIL, then waits for the GIL while
# the compile runs Python (codegen, Numba's type inference), a whole interval per call
# (at 10,000 ops: ~12 ms a call instead of the tape's 0.9). Process-wide, but only while a
# compile runs (and it matters only while a thread waits for the GIL: a few µs a switch);
# the interval before is restored when the last compile ends, unless changed meanwhile.
BACKGROUND_SWITCH_INTERVAL_S = 0.0005
_switching: list = [None, None]      # (the interval to restore, the one set), while lowered


def _fast_switching(on: bool) -> None:
    """Lower the switch interval (`on`) or restore it (under `_Background.lock`)."""
    if on:
        before = sys.getswitchinterval()
        if before > BACKGROUND_SWITCH_INTERVAL_S:
            sys.setswitchinterval(BACKGROUND_SWITCH_INTERVAL_S)
            _switching[:] = [before, sys.getswitchinterval()]
        return
    (before, lowered), _switching[:] = _switching, [None, None]
    if before is not None and sys.getswitchinterval() == lowered:
        sys.setswitchinterval(before)


def returned(out) -> str:
    """What a function returned that is not a traced value, for an error message."""
    if isinstance(out, (tuple, list)):
        return f"a {type(out).__name__} of {len(out)} values"
    return "None (is a return statement missing?)" if out is None else \
        f"a {type(out).__name__}"


def _linalg_lines(variant) -> str:
    """Where the traced function calls the linear algebra whose code may raise LinAlgError."""
    lines = dict.fromkeys(f"{e.prim.name} at {e.loc}" for e in variant.trace.wengert.entries
                          if e.prim.name in RAISE_LINALG_ERRORS and e.loc)
    return ", ".join(lines) or variant.trace.wengert.loc


# Every jitad object: a forked child gives each a new lock (`_after_fork_in_child`).
_OBJECTS: weakref.WeakSet = weakref.WeakSet()


def _before_fork() -> None:
    """A fork waits until no other thread traces or compiles: a child has only the forking
    thread, and a lock another thread held (a trace's, Numba's compiler lock) would stay
    held there for good, its state half-changed (a trace swaps watched views into the
    user's attributes until it ends). In the order a thread takes them."""
    _TRACE_LOCK.acquire()
    compiler.BACKGROUND_COMPILE.acquire()
    compiler.NUMBA_COMPILER_LOCK.acquire()


def _after_fork_in_parent() -> None:
    compiler.NUMBA_COMPILER_LOCK.release()
    compiler.BACKGROUND_COMPILE.release()
    _TRACE_LOCK.release()


def _after_fork_in_child() -> None:
    """Release what the fork held; give every object a new lock (a first call of another
    thread, between its trace and its compile, held one: its thread is gone); restart the
    background compiles the parent was running (their threads are gone too)."""
    _after_fork_in_parent()
    for obj in list(_OBJECTS):
        obj._lock = threading.RLock()
    _Background.lock = threading.Lock()     # (a thread of the parent may have held it)
    for job in list(_Background.running):
        job.start()


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                    after_in_child=_after_fork_in_child)

# Stored builds larger than this (bytes on disk, compressed: about 1 MB of source) load in
# the background while a first tier answers: Numba takes about as long to load such a kernel
# from its cache as the tape takes to start (the long graph of 1,000 operations: 2.3 MB of
# source, 0.39 MB stored, 0.45 s to load).
LOADED_AT_ONCE = 192 << 10

_FAST_PATH_ENTRIES = 64
_SHARED_GLOBALS = 4096     # (about 10 an entry)
_ENTRY_SERIALS = itertools.count()
# The prefix of the globals an entry names (`_entry`).
_ENTRY_GLOBAL = re.compile(r"\b_jitad_(?=(kernel|ndarray|missed|failed|static_key|float|fill|"
                           r"entry|grad_entry|[ksbvc]\d+|default\d+)\b)")
# The file name of generated entries: inside jitad's package, so that error locations skip them.
_GENERATED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "<generated entry>")
_NDARRAY = np.ndarray
_FAST_ARRAY_DTYPES = (np.dtype(np.float64), np.dtype(np.int64), np.dtype(np.bool_))


# Kernels that reject arrays of another rank than their specialization's: a sealed Numba
# dispatcher and the NumPy tier (TypeError), the tape (ShapeChanged).
_RANK_CHECKING = (compiler.numba.core.registry.CPUDispatcher, *FIRST_TIERS)


def _is_runtime(value) -> bool:
    return isinstance(value, (float, np.floating, np.ndarray))


def _fast_key(args, ndarray=_NDARRAY) -> tuple:
    """A cheap exact key: float type, array shape, static values with their types. (Dtypes,
    ranks and layouts are checked by the compiled dispatcher itself, which raises TypeError.)"""
    return tuple([a.shape if a.__class__ is ndarray else a.__class__ if a.__class__ is float
                  else (a.__class__, a) if a.__class__ is not tuple else static_key(a)
                  for a in args])


def _fast_path_applies(args, variant) -> bool:
    """Arguments need no conversion and the kernel's results are already Python floats/arrays."""
    plain = all(a.__class__ is float or (a.__class__ is _NDARRAY and a.ndim > 0 and
                                         a.dtype in _FAST_ARRAY_DTYPES)
                or not _is_runtime(a) for a in args)
    output = variant.trace.wengert.outputs[0]
    return plain and output.dtype == "float64"


def _shaped_result(result, mode, single, aux=None):
    """Python floats for scalars; the gradient alone for an int `argnums`; with an aux
    structure (has_aux), the value is `(value, aux)`."""
    if mode == "value":
        if aux is None:
            return float(result)
        values = result if isinstance(result, tuple) else (result,)    # value, aux outputs…
        return float(values[0]), _filled(aux, values[1:])
    if mode not in MODES:       # derivative kernels return the user's structure already
        return result
    value, grads = result
    grads = tuple(float(g) if np.ndim(g) == 0 else g for g in grads)
    if aux is not None:         # `(value, (aux outputs…))`, or the value alone if none
        value, outputs = value if isinstance(value, tuple) else (value, ())
        value = (float(value), _filled(aux, outputs))
    else:
        value = float(value)
    return value, (grads[0] if single else grads)


def _filled(aux, values):
    """The aux structure with each AuxSlot replaced by its output (floats for scalars)."""
    if isinstance(aux, (tuple, list)):
        return type(aux)(_filled(a, values) for a in aux)
    if isinstance(aux, AuxSlot):
        v = values[aux.index]
        return float(v) if v.__class__ is not float and np.ndim(v) == 0 else v
    return aux


def _as_method(function, owner, method):
    """`function`, named for the JitGrad `method` of `owner` it stands for
    (`f.value_and_grad`; `f` for `__call__`: Python's arity errors name it, and pickle finds
    it by that name) and documented like it."""
    attribute = method.__name__
    function.__module__ = owner.__module__
    function.__qualname__ = owner.__qualname__ if attribute == "__call__" else \
        f"{owner.__qualname__}.{attribute}"
    function.__doc__ = method.__doc__
    return function


def _parameters_source(params, n_defaults: int) -> tuple:
    """(`x, y=_jitad_default0` for a def, `x, y` for a call): the user's parameters."""
    first_default = len(params) - n_defaults
    signature = ", ".join(p if i < first_default else f"{p}=_jitad_default{i - first_default}"
                          for i, p in enumerate(params))
    return signature, ", ".join(params)


def _entry(kernel, mode, args, params, defaults, consts, read, single, missed, aux=None,
           namespace=None):
    """`(entry, grad_entry)`: Python source generated for exactly this argument signature.

    `entry(*params)` checks float classes, array shapes (the size of one-axis arrays, where
    the kernel checks ranks) and static values inline (dtypes, ranks and layouts are checked
    by the dispatcher, which raises TypeError) and that the bindings the trace read (`read`,
    a `Reads`) still hold, runs the kernel and returns what the `mode` method returns;
    `grad_entry` returns the gradient only. Other arguments go to `missed(args, False)`;
    calls whose bindings were rebound (or arrays changed) or whose kernel raises to
    `missed(args, entry)` (the full path retraces, or raises with the user's line). The
    parameters are the user's, with their defaults, and no *args/**kwargs: such functions are the
    cheapest Python calls (wrong counts raise Python's own TypeError). Numba already returns
    Python floats and arrays: no conversion is needed.

    With `namespace` (the trampolines' globals), the entries are defined there, their
    globals named `_jitad<serial>_...` (so that a trampoline can run their code).
    """
    globals_ = {"_jitad_kernel": kernel, "_jitad_ndarray": _NDARRAY, "_jitad_missed": missed,
                 "_jitad_failed": (TypeError, ValueError, IndexError, KeyError, GuardFailed),
                 "_jitad_static_key": static_key, "_jitad_float": float}
    checks = []
    ranks_checked = isinstance(kernel, _RANK_CHECKING)
    for i, (name, a) in enumerate(zip(params, args)):
        globals_[f"_jitad_k{i}"] = a.__class__
        globals_[f"_jitad_s{i}"] = a.shape if a.__class__ is _NDARRAY else a
        if a.__class__ is _NDARRAY and a.ndim == 1 and ranks_checked:
            # The kernel refuses other ranks (TypeError, ShapeChanged): for one axis, the size
            # is the shape, and `.size` builds no tuple.
            globals_[f"_jitad_s{i}"] = a.size
            checks.append(f"{name}.__class__ is not _jitad_ndarray or "
                          f"{name}.size != _jitad_s{i}")
        elif a.__class__ is _NDARRAY:
            checks.append(f"{name}.__class__ is not _jitad_ndarray or "
                          f"{name}.shape != _jitad_s{i}")
        elif a.__class__ is float:
            checks.append(f"{name}.__class__ is not _jitad_float")
        elif a.__class__ is tuple:      # (1, True) == (1, 1): compare with the item types
            globals_[f"_jitad_s{i}"] = static_key(a)
            checks.append(f"{name}.__class__ is not _jitad_k{i} or "
                          f"_jitad_static_key({name}) != _jitad_s{i}")
        else:
            checks.append(f"{name}.__class__ is not _jitad_k{i} or {name} != _jitad_s{i}")
    held = []
    for i, (container, key, value) in enumerate(read.bindings):
        globals_[f"_jitad_b{i}"], globals_[f"_jitad_v{i}"] = container, value
        held.append(held_source(container, key, value, f"_jitad_b{i}", f"_jitad_v{i}"))
    for j, (i, shape, contents) in enumerate(read.arrays):  # (`Reads.stale`'s checks)
        globals_[f"_jitad_shape{j}"], globals_[f"_jitad_bytes{j}"] = shape, contents
        held.append(f"_jitad_v{i}.shape == _jitad_shape{j}")
        if contents is not None:
            held.append(f"_jitad_v{i}.tobytes() == _jitad_bytes{j}")
    globals_.update({f"_jitad_c{i}": c for i, c in enumerate(consts)})
    globals_.update({f"_jitad_default{i}": d for i, d in enumerate(defaults)})
    call_args = ", ".join([p for p, a in zip(params, args) if _is_runtime(a)] +
                          [f"_jitad_c{i}" for i in range(len(consts))])
    signature, packed = _parameters_source(params, len(defaults))
    packed = f"({packed},)"
    kernel_call = f"_jitad_kernel({call_args})"
    bodies = {"entry": f"return {kernel_call}"}
    if aux is not None:     # has_aux: `(value, aux)` as `_shaped_result` makes it (no grad_entry)
        globals_["_jitad_fill"] = functools.partial(_filled, aux)
        outputs = "value[1:]" if mode == "value" else "value[1]"
        regroup = f"((value[0], _jitad_fill({outputs})) if value.__class__ is tuple " \
                  "else (value, _jitad_fill(())))"
        body = f"value = {kernel_call}" if mode == "value" else \
            f"value, grads = {kernel_call}\n        regrouped = {regroup}"
        bodies = {"entry": f"{body}\n        return {regroup}" if mode == "value" else
                  f"{body}\n        return regrouped, grads{'[0]' if single else ''}"}
    elif mode == "value_and_grad":
        grad = "[0]" if single else ""
        bodies = {"entry": f"value, grads = {kernel_call}\n        return value, grads{grad}"
                  if single else f"return {kernel_call}",
                  "grad_entry": f"return {kernel_call}[1]{grad}"}
    source = ""
    for fn, body in bodies.items():
        pick = "[1]" if fn == "grad_entry" else ""
        if held:        # the globals, closure cells and defaults the trace read
            body = f"if {' and '.join(held)}:\n            " + body.replace("\n", "\n    ")
        source += (
            f"def _jitad_{fn}({signature}):\n"
            f"    if {' or '.join(checks) or 'False'}:\n"
            f"        return _jitad_missed({packed}, False){pick}\n"
            f"    try:\n        {body}\n"
            f"    except _jitad_failed:  # another dtype, layout or branch; a kernel's error\n"
            f"        pass\n"
            f"    return _jitad_missed({packed}, _jitad_entry){pick}\n")
    if namespace is not None:
        prefix = f"_jitad{next(_ENTRY_SERIALS)}_"
        source = _ENTRY_GLOBAL.sub(prefix, source)
        globals_ = {_ENTRY_GLOBAL.sub(prefix, name): value for name, value in globals_.items()}
    else:
        namespace, prefix = {}, "_jitad_"
    namespace.update(globals_)
    exec(compile(source, _GENERATED, "exec"), namespace)
    entry, grad_entry = namespace[f"{prefix}entry"], namespace.get(f"{prefix}grad_entry")
    entry.kernel = kernel           # (see `_switch`)
    return entry, grad_entry


def jit_grad(fun=None, *, argnums=0, code_shape="auto", has_aux=False, tiers=True):
    """Compile `fun` together with its gradient.

    Args:
        fun: a Python function of floats and NumPy arrays returning a scalar.
        argnums: which positional argument(s) to differentiate: an int, or a tuple of ints
            (the gradient is then a tuple).
        code_shape: "auto" (default), or force "straight" (one line per entry), "loops"
            (re-roll repeated segments) or "tape" (the interpreter, for huge scalar lists).
        has_aux: `fun` returns `(loss, aux)`: only `loss` is differentiated; `aux` (floats,
            arrays, nested tuples of them) is computed by the same compiled code and returned
            as `((loss, aux), grad)` by `value_and_grad`, `(grad, aux)` by a call.
        tiers: long lists (TIERS_FROM_ENTRIES entries or more, differentiated) that the tape
            interpreter can run, and array code (NUMPY_TIER_FROM_ENTRIES entries or more),
            answer their first calls on the tape or NumPy while the specialized code compiles
            in a background thread (`.wait()` blocks until it is in); False compiles before
            the first call returns. JITAD_TIERS=0 turns tiers off everywhere,
            JITAD_NUMPY_TIER=0 the NumPy tier.

    Returns:
        A `JitGrad`: call it for the gradient; `.value_and_grad`, `.value`, `.wengert`,
        `.source`, `.njit_value_and_grad`, `.wait` and `.stats` give the rest.

    Example:
        >>> @jitad.jit_grad(argnums=(0, 1))
        ... def f(x1, x2):
        ...     return math.log(x1) + x1 * x2 - math.sin(x2)
        >>> f(2.0, 5.0)
        (5.5, 1.7163378145367738)
    """
    if fun is None:
        return lambda f: JitGrad(f, argnums, code_shape, has_aux, tiers)
    return JitGrad(fun, argnums, code_shape, has_aux, tiers)

