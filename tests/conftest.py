"""Shared fixtures and gradient-checking helpers for the jitad test suite.

Two oracles are used throughout:

* central finite differences of the *plain* Python function (NumPy/math on floats),
  per coordinate, so a gradient is checked element by element;
* hand-derived formulas, in the test that needs them.

Compiling with Numba costs about a second per function, so breadth tests go
through `check_grads_python`, which runs the generated source as plain Python
(`jitad.api.build_source` + `jitad.compile.load_python`) and performs the same
checks as `jitad.testing.check_grads` without compiling: value, gradient shape,
gradient vs central differences, forward mode vs reverse mode, and (order=2)
Hessian-vector products both forward-over-reverse and reverse-over-reverse. A
smaller number of tests call the compiled path (`check_grads` or the JitGrad).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import zlib

import numpy as np
import pytest

import jitad
from jitad import api, codegen
from jitad import compile as compiler
from jitad.api import build_from, build_source, differentiated
from jitad.compile import load_python, numpy_kernel
from jitad.primitives import REGISTRY
from jitad.primitives.custom import has_forward_mode
from jitad.transforms import jvp, simplify, value_and_grad
from jitad.wengert import Builder, Var, WengertList

# ---------------------------------------------------------------- the cache directory

_PREVIOUS_CACHE_DIR = None
_SESSION_CACHE_DIR = None


def pytest_configure(config):
    """Point jitad's on-disk cache at a fresh temporary directory for the whole session.

    Set before any test module runs, so no test ever writes into the user's cache.
    """
    global _PREVIOUS_CACHE_DIR, _SESSION_CACHE_DIR
    _PREVIOUS_CACHE_DIR = os.environ.get("JITAD_CACHE_DIR")
    _SESSION_CACHE_DIR = tempfile.mkdtemp(prefix="jitad-test-cache-")
    os.environ["JITAD_CACHE_DIR"] = _SESSION_CACHE_DIR
    # First calls run the compiled code, which the tests are about (child processes too);
    # tests/test_numpy_tier.py turns the NumPy tier on where it tests it. JITAD_TEST_NUMPY_TIER=1
    # keeps it on, as users have it (`make test` runs the value and gradient checks so too).
    if os.environ.get("JITAD_TEST_NUMPY_TIER") != "1":
        os.environ["JITAD_NUMPY_TIER"] = "0"


def pytest_unconfigure(config):
    if _PREVIOUS_CACHE_DIR is None:
        os.environ.pop("JITAD_CACHE_DIR", None)
    else:
        os.environ["JITAD_CACHE_DIR"] = _PREVIOUS_CACHE_DIR
    if _SESSION_CACHE_DIR is not None:
        shutil.rmtree(_SESSION_CACHE_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def jitad_cache_dir():
    """The session's temporary jitad cache directory."""
    return _SESSION_CACHE_DIR


@pytest.fixture
def tiered(monkeypatch):
    """Tiers from 20 entries on, and a gate that holds background compiles until opened."""
    monkeypatch.setattr(api, "TIERS_FROM_ENTRIES", 20)
    monkeypatch.delenv("JITAD_TIERS", raising=False)
    gate = threading.Event()
    real = compiler.compile_source

    def gated(*args, **kwargs):
        if kwargs.get("background"):
            gate.wait()
        return real(*args, **kwargs)

    monkeypatch.setattr(compiler, "compile_source", gated)
    return gate


# ---------------------------------------------------------------- small utilities

def rng_for(*key) -> np.random.Generator:
    """A generator seeded by a stable hash of `key` (test ids stay reproducible)."""
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def sample(rng, shape, low=-2.0, high=2.0):
    """A float (shape ()) or a float64 array drawn uniformly from [low, high]."""
    if shape == ():
        return float(rng.uniform(low, high))
    return rng.uniform(low, high, size=shape)


def as_tuple(argnums):
    return (argnums,) if isinstance(argnums, int) else tuple(argnums)


def assert_close(got, want, rtol=1e-6, atol=1e-8, what="value"):
    """Like np.testing.assert_allclose, but also demands equal shapes and says what differs.

    NaNs are compared as equal (never masked away with nan_to_num).
    """
    got_a, want_a = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    assert got_a.shape == want_a.shape, \
        f"{what}: shape {got_a.shape} != expected shape {want_a.shape}\n got {got!r}\n want {want!r}"
    np.testing.assert_allclose(got_a, want_a, rtol=rtol, atol=atol, equal_nan=True,
                               err_msg=f"{what} mismatch")


def numeric_grad(fun, args, argnums=0, eps=1e-6):
    """Central differences of `fun(*args)`, coordinate by coordinate, for each of `argnums`.

    Returns a tuple with one entry per differentiated argument: a float for a float
    argument, an array of the argument's shape otherwise.
    """
    grads = []
    for i in as_tuple(argnums):
        x = args[i]
        if np.ndim(x) == 0:
            plus, minus = list(args), list(args)
            plus[i], minus[i] = x + eps, x - eps
            grads.append((fun(*plus) - fun(*minus)) / (2 * eps))
            continue
        g = np.zeros(np.shape(x))
        for k in np.ndindex(np.shape(x)):
            xp, xm = np.array(x, dtype=float), np.array(x, dtype=float)
            xp[k] += eps
            xm[k] -= eps
            plus, minus = list(args), list(args)
            plus[i], minus[i] = xp, xm
            g[k] = (fun(*plus) - fun(*minus)) / (2 * eps)
        grads.append(g)
    return tuple(grads)


def random_directions(args, argnums, rng):
    return [float(rng.standard_normal()) if np.ndim(args[i]) == 0
            else rng.standard_normal(np.shape(args[i])) for i in as_tuple(argnums)]


def moved(args, argnums, directions, step):
    out = list(args)
    for i, d in zip(as_tuple(argnums), directions):
        out[i] = args[i] + step * d
    return out


def directional(grads, directions) -> float:
    return float(sum(np.sum(np.asarray(g) * d) for g, d in zip(grads, directions)))


# ---------------------------------------------------------------- the plain-Python path

def as_jit(fun, argnums=0) -> jitad.JitGrad:
    return fun if isinstance(fun, jitad.JitGrad) else jitad.jit_grad(fun, argnums=argnums)


def traced(f: jitad.JitGrad, args):
    """(variant, runtime arguments) for `args`: traces once, compiles nothing."""
    return f._variant(tuple(args), {})


def run_list(wengert: WengertList, name: str, runtime_args):
    """Print `wengert` as source and run it as plain Python (no Numba)."""
    name = codegen.identifier(name)
    return load_python(codegen.generate(wengert, name, f"{name} (test run)"), name)(*runtime_args)


def _code_shape(f: jitad.JitGrad) -> dict:
    """The JitGrad's code shape option (straight-line or re-rolled loops), where it has one."""
    return {"code_shape": f.code_shape} if hasattr(f, "code_shape") else {}


def python_value_and_grad(f: jitad.JitGrad, args):
    """(value, grads tuple) from jitad's generated value-and-grad source, run as plain Python."""
    variant, runtime_args = traced(f, args)
    source, name, _ = build_source(variant, "value_and_grad", variant.wrt, f.__name__, **_code_shape(f))
    with unchanged(runtime_args, "the generated source"):
        value, grads = load_python(source, name)(*runtime_args)
    return value, tuple(grads)


def numpy_tier_value_and_grad(f: jitad.JitGrad, args):
    """(value, grads tuple) from the NumPy tier's kernel (source printed for NumPy, run as
    plain Python), or None where the tier never serves (scalar lists: llvm and tape)."""
    variant, runtime_args = traced(f, args)
    wengert = differentiated(variant, "value_and_grad", variant.wrt)
    chosen = codegen.choose_shape(wengert, getattr(f, "code_shape", "auto"))
    if chosen[0] not in ("straight", "loops") or all(e.out.ndim == 0 for e in wengert.entries):
        return None
    source, name, _, _ = build_from(variant, "value_and_grad", variant.wrt, f.__name__,
                                    "auto", True, wengert, chosen, vectorized=True)
    with unchanged(runtime_args, "the NumPy tier"):
        value, grads = numpy_kernel(source, name, tuple(runtime_args), wengert)(*runtime_args)
    return value, tuple(grads)


@contextlib.contextmanager
def unchanged(arrays, runner: str):
    """Assert that `runner` leaves the argument arrays it was given as they were."""
    before = [a.copy() if isinstance(a, np.ndarray) else None for a in arrays]
    yield
    for k, (a, b) in enumerate(zip(arrays, before)):
        assert b is None or np.array_equal(a, b, equal_nan=True), \
            f"{runner} wrote into argument {k}"


def python_value(f: jitad.JitGrad, args):
    variant, runtime_args = traced(f, args)
    source, name, _ = build_source(variant, "value", variant.wrt, f.__name__, **_code_shape(f))
    return load_python(source, name)(*runtime_args)


def python_jvp(f: jitad.JitGrad, args, tangents):
    """(value, directional derivative) from jitad's forward mode, run as plain Python."""
    variant, runtime_args = traced(f, args)
    forward = simplify(jvp(simplify(variant.trace.wengert), list(variant.wrt)))
    tangent_args = [np.asarray(t, dtype=float) if np.ndim(t) else float(t) for t in tangents]
    outputs = run_list(forward, f"{f.__name__}_jvp", list(runtime_args) + tangent_args)
    return outputs[0], outputs[1]


def adjoint_list(f: jitad.JitGrad, args) -> WengertList:
    variant, _ = traced(f, args)
    return simplify(value_and_grad(simplify(variant.trace.wengert), list(variant.wrt)))


def python_hvp_forward_over_reverse(f: jitad.JitGrad, args, tangents):
    """H·v by forward mode applied to the reverse-mode list."""
    variant, runtime_args = traced(f, args)
    adjoint = adjoint_list(f, args)
    hvp_list = simplify(jvp(adjoint, list(variant.wrt)))
    tangent_args = [np.asarray(t, dtype=float) if np.ndim(t) else float(t) for t in tangents]
    outputs = run_list(hvp_list, f"{f.__name__}_hvp_fwd", list(runtime_args) + tangent_args)
    return outputs[len(adjoint.outputs) + 1:]


def python_hvp_reverse_over_reverse(f: jitad.JitGrad, args, tangents):
    """H·v by reverse mode applied to `<grad, v>` built onto the reverse-mode list.

    This runs the VJP rules of the primitives the first reverse sweep emitted
    (index_add, scatter_add, broadcast_like, reshape_like, full_like, count, …).
    """
    variant, runtime_args = traced(f, args)
    adjoint = adjoint_list(f, args)
    used = {v.name for v in adjoint.inputs} | {e.out.name for e in adjoint.entries}
    b = Builder(REGISTRY, used_names=used, prefix="h")
    b.entries = list(adjoint.entries)
    direction_inputs, total = [], None
    for k, (g, t) in enumerate(zip(adjoint.outputs[1:], tangents)):
        v = Var(b.fresh(f"dir{k}"), "float64", np.shape(t))
        direction_inputs.append(v)
        term = b.mul(g, v)
        if term.shape != ():
            term = b.sum(term, axis=None)
        total = term if total is None else b.add(total, term)
    inner = WengertList(f"{adjoint.name}_dot", list(adjoint.inputs) + direction_inputs,
                        b.entries, [total], loc=adjoint.loc)
    inner.validate()
    outer = simplify(value_and_grad(inner, list(variant.wrt)))
    tangent_args = [np.asarray(t, dtype=float) if np.ndim(t) else float(t) for t in tangents]
    _, hv = run_list(outer, f"{f.__name__}_hvp_rev", list(runtime_args) + tangent_args)
    return tuple(hv)


HESSIAN_MODES = {"forward over reverse": python_hvp_forward_over_reverse,
                 "reverse over reverse": python_hvp_reverse_over_reverse}


def check_grads_python(fun, args, argnums=0, order=1, rtol=1e-6, atol=1e-8, eps=1e-6, seed=0,
                       context="", hessian_modes=tuple(HESSIAN_MODES)):
    """`jitad.testing.check_grads`' checks through the plain-Python path only (no Numba).

    * value of the generated source == the plain function (1e-12);
    * each gradient has its argument's shape (float for a float argument);
    * gradient == central differences, coordinate by coordinate;
    * forward mode == reverse mode along a random direction;
    * order=2: H·v (`hessian_modes`: forward over reverse and reverse over reverse) ==
      differences of gradients.

    Returns the JitGrad used.
    """
    f = as_jit(fun, argnums)
    wrt = f._wrt
    args = list(args)
    what = f"{context or f.__name__}"
    value, grads = python_value_and_grad(f, args)
    with np.errstate(all="ignore"):
        want_value = f.fun(*args)
    assert_close(value, want_value, 1e-12, 1e-12, f"{what}: value")
    vectorized = numpy_tier_value_and_grad(f, args)
    if vectorized is not None:      # the same list printed for NumPy: equal to rounding
        assert_close(vectorized[0], value, 1e-12, 1e-12, f"{what}: NumPy tier value")
        for i, g, h in zip(wrt, vectorized[1], grads):
            assert_close(g, h, 1e-10, 1e-12, f"{what}: NumPy tier gradient of argument {i}")
    for i, g in zip(wrt, grads):
        if np.ndim(args[i]) == 0:
            assert np.ndim(g) == 0, f"{what}: gradient of float argument {i} is not a scalar: {g!r}"
        else:
            assert np.shape(g) == np.shape(args[i]), \
                f"{what}: gradient {i} has shape {np.shape(g)}, argument {np.shape(args[i])}"
            assert np.asarray(g).dtype == np.float64, f"{what}: gradient {i} dtype {g.dtype}"
    with np.errstate(all="ignore"):
        fd = numeric_grad(f.fun, args, wrt, eps)
    for i, g, d in zip(wrt, grads, fd):
        assert_close(g, d, rtol, atol, f"{what}: gradient of argument {i} vs central differences")

    if not has_forward_mode(traced(f, args)[0].trace.wengert):   # a custom_vjp: reverse only
        return f
    rng = np.random.default_rng(seed)
    directions = random_directions(args, wrt, rng)
    _, forward = python_jvp(f, args, directions)
    assert_close(forward, directional(grads, directions), 1e-9, 1e-12,
                 f"{what}: forward mode vs reverse mode")

    if order >= 2:
        plus = python_value_and_grad(f, moved(args, wrt, directions, eps))[1]
        minus = python_value_and_grad(f, moved(args, wrt, directions, -eps))[1]
        want = [(np.asarray(p) - np.asarray(m)) / (2 * eps) for p, m in zip(plus, minus)]
        for kind in hessian_modes:
            got = HESSIAN_MODES[kind](f, args, directions)
            assert len(got) == len(want), f"{what}: {kind} returned {len(got)} parts"
            for k, (h, w) in enumerate(zip(got, want)):
                assert_close(np.asarray(h, dtype=float) * np.ones(np.shape(w)), w,
                             max(rtol, 1e-5), max(atol, 1e-6),
                             f"{what}: Hessian-vector product ({kind}), argument {wrt[k]}")
    return f


def prim_names(wengert) -> list:
    """The primitive names of a Wengert list's entries, in order."""
    return [e.prim.name for e in wengert]


__all__ = ["REGISTRY", "adjoint_list", "as_jit", "as_tuple", "assert_close",
           "check_grads_python", "directional", "moved", "numeric_grad", "prim_names",
           "python_hvp_forward_over_reverse", "python_hvp_reverse_over_reverse", "python_jvp",
           "python_value", "python_value_and_grad", "random_directions", "rng_for", "run_list",
           "sample", "traced"]
