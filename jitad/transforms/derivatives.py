"""Derivatives built from forward and reverse mode: Wengert list -> Wengert list.

Hessian-vector products are forward mode applied to the reverse-mode list (forward over
reverse), or reverse mode of the directional derivative (reverse over forward: the tape
tier's); vector-Jacobian products are reverse mode of `sum(out * cotangent)`. Dense
Jacobians and Hessians call these lists once per direction (see `api.build`).
"""
from ..primitives import REGISTRY
from ..wengert import Builder, Var, WengertList
from .forward import jvp
from .reverse import value_and_grad
from .simplify import simplify


def jvp_list(wengert: WengertList, wrt: list, tangent_inputs: list | None = None) -> WengertList:
    """`(inputs…) -> (value, directional derivative)` (tangents added as inputs unless given)."""
    forward = jvp(wengert, wrt, tangent_inputs)
    return _with_outputs(forward, forward.outputs, "_jvp")


def hvp(wengert: WengertList, wrt: list, tangent_inputs: list | None = None) -> WengertList:
    """`(inputs…, tangents…) -> (H v, …)`, one product per `wrt`: forward over reverse."""
    adjoint = simplify(value_and_grad(wengert, wrt))
    forward = jvp(adjoint, wrt, tangent_inputs)
    k = len(wrt)
    return _with_outputs(forward, forward.outputs[k + 2:], "_hvp")


def tangent_list(wengert: WengertList, wrt: list,
                 tangent_inputs: list | None = None) -> WengertList:
    """`(inputs…, tangents…) -> <grad f, v>` of a scalar list `f` (tangents added as inputs
    unless given): the directional derivative alone, whose gradient wrt `wrt` is H v
    (reverse over forward: the hvp's reverse tape)."""
    forward = jvp(wengert, wrt, tangent_inputs)
    return _with_outputs(forward, forward.outputs[1:], "_tangent")


def vjp(wengert: WengertList, wrt: list) -> WengertList:
    """`(inputs…, cotangent) -> (value of sum(out * cotangent), (cotangent^T J, …))`."""
    (out,) = wengert.outputs
    used = {v.name for v in wengert.inputs} | {e.out.name for e in wengert.entries}
    b = Builder(REGISTRY, used_names=used, prefix="t")
    b.entries = list(wengert.entries)
    cotangent = Var(b.fresh(f"{getattr(out, 'name', 'out')}_ct"), "float64", out.shape)
    weighted = b.mul(out, cotangent)
    if out.shape != ():
        weighted = b.sum(weighted, axis=None, keepdims=False)
    seeded = WengertList(wengert.name, list(wengert.inputs) + [cotangent], b.entries,
                         [weighted], loc=wengert.loc)
    return value_and_grad(seeded, wrt)


def _with_outputs(wengert: WengertList, outputs: list, suffix: str) -> WengertList:
    name = wengert.name.removesuffix("_jvp").removesuffix("_value_and_grad") + suffix
    return WengertList(name, wengert.inputs, wengert.entries, list(outputs), wengert.loc)
