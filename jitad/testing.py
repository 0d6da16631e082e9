"""Gradient checking for jitad functions and primitives (used by the test suite).

`check_grads` compares, along seeded random directions: the compiled reverse-mode
gradient with central finite differences of the plain Python function, forward
mode with reverse mode (the dot-product test), the generated source run as plain
Python with the compiled result, and, with `order=2`, Hessian-vector products
(forward over reverse) with finite differences of the gradient.
"""
from __future__ import annotations

import numpy as np

from . import codegen
from .api import JitGrad, build_source
from .compile import load_python
from .primitives.custom import has_forward_mode
from .transforms import jvp, simplify


def _perturbed(args, wrt, directions, step):
    moved = list(args)
    for i, d in zip(wrt, directions):
        moved[i] = args[i] + step * d
    return moved


def _directions(args, wrt, rng):
    return [rng.standard_normal(np.shape(args[i])) if np.ndim(args[i]) else
            float(rng.standard_normal()) for i in wrt]


def _dot(grads, directions) -> float:
    return float(sum(np.sum(np.asarray(g) * d) for g, d in zip(grads, directions)))


def _close(name, got, want, rtol, atol, context):
    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    if got.shape != want.shape or not np.allclose(got, want, rtol=rtol, atol=atol):
        raise AssertionError(f"{context}: {name} mismatch\n  got  {got!r} (shape {got.shape})"
                             f"\n  want {want!r} (shape {want.shape})")


def _python_kernel(f: JitGrad, wengert, name: str):
    doc = f"{name} (plain Python check)"
    return load_python(codegen.generate(wengert, name, doc), name)


def check_grads(fun, args, argnums=0, order=1, rtol=1e-6, atol=1e-8, eps=1e-6, seed=0,
                context=None):
    """Check jitad's derivatives of `fun` at `args`; raise AssertionError naming the mismatch.

    Args:
        fun: a plain Python function (or a JitGrad) returning a scalar.
        args: the point, positional arguments.
        argnums: as in `jit_grad`.
        order: 1 checks gradients; 2 also checks Hessian-vector products.
        context: text naming what is checked (e.g. the primitive), shown on failure.

    Returns:
        The JitGrad used, so callers can inspect trace/compile counts.
    """
    f = fun if isinstance(fun, JitGrad) else JitGrad(fun, argnums)
    plain = f.fun
    wrt = f._wrt
    context = context or f.__name__
    rng = np.random.default_rng(seed)
    value, grads = f.value_and_grad(*args)
    grads = grads if isinstance(f.argnums, tuple) else (grads,)
    _close("value", value, plain(*args), 1e-12, 1e-12, context)
    for i, g in zip(wrt, grads):
        if np.shape(g) != np.shape(args[i]):
            raise AssertionError(f"{context}: gradient for argument {i} has shape "
                                 f"{np.shape(g)}, argument has shape {np.shape(args[i])}")
    directions = _directions(args, wrt, rng)
    with np.errstate(all="ignore"):
        fd = (plain(*_perturbed(args, wrt, directions, eps))
              - plain(*_perturbed(args, wrt, directions, -eps))) / (2 * eps)
    _close("directional derivative (reverse mode vs central differences)",
           _dot(grads, directions), fd, rtol, atol, context)

    variant, runtime_args = f._variant(args, {})
    source, name, adjoint_list = build_source(variant, "value_and_grad", variant.wrt, f.__name__)
    py_value, py_grads = load_python(source, name)(*runtime_args)
    _close("value (plain Python run of the generated source)", py_value, value, 1e-12, 0, context)
    for g_py, g in zip(py_grads, grads):
        _close("gradient (plain Python run of the generated source)", g_py, g, 1e-12, 1e-300,
               context)

    if not has_forward_mode(variant.trace.wengert):     # a custom_vjp: reverse mode only
        return f
    forward = simplify(jvp(simplify(variant.trace.wengert), list(variant.wrt)))
    tangent_args = [np.asarray(d, dtype=float) if np.ndim(d) else float(d) for d in directions]
    outputs = _python_kernel(f, forward, f"{codegen.identifier(f.__name__)}_jvp")(
        *runtime_args, *tangent_args)
    _close("directional derivative (forward mode vs reverse mode)", outputs[1],
           _dot(grads, directions), 1e-9, 1e-12, context)

    if order >= 2:
        hvp_list = simplify(jvp(adjoint_list, list(variant.wrt)))
        outputs = _python_kernel(f, hvp_list, f"{codegen.identifier(f.__name__)}_hvp")(
            *runtime_args, *tangent_args)
        hvp = outputs[len(adjoint_list.outputs) + 1:]
        plus = f.value_and_grad(*_perturbed(args, wrt, directions, eps))[1]
        minus = f.value_and_grad(*_perturbed(args, wrt, directions, -eps))[1]
        plus, minus = ((plus, minus) if isinstance(f.argnums, tuple) else ((plus,), (minus,)))
        for h, p, m in zip(hvp, plus, minus):
            fd_h = (np.asarray(p) - np.asarray(m)) / (2 * eps)
            _close("Hessian-vector product (forward over reverse vs differences of gradients)",
                   h, fd_h, max(rtol, 1e-5), max(atol, 1e-6), context)
    return f
