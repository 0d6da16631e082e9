"""Primitives whose rules the user gives: custom derivative rules, user Numba kernels, and
`stop_gradient`.

A user's rule (a `custom_vjp` bwd, a `custom_jvp` rule, a kernel's vjp/jvp) is traced once,
where the call is traced, into a `RuleList`: a small Wengert list over fresh input Vars. The
primitive's VJP/JVP rule *replays* it through the transformation's builder, with its
inputs bound to the entry's operands, so reverse and forward mode stay generic. A JVP rule
alone also gives the VJP: the tangent list is linear in the tangents, so reverse mode of
`<g, tangent_out>` with respect to the tangents is its transpose.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import TraceError
from ..wengert import Builder, Literal, Var, WengertList
from .core import Primitive, broadcast_to_shape_of

# Printed name -> UserKernel, for this process (names are never reused: see jitad.custom).
KERNELS: dict = {}


def user_kernel(printed: str):
    """The dispatcher of the user kernel printed as `printed` (generated modules bind it)."""
    return KERNELS[printed].dispatcher


@dataclass(eq=False)
class RuleList:
    """A traced rule: `outputs` (operands or None for zero) computed from `inputs` by
    `entries`. Operands not among `inputs` and not made by `entries` are the trace's
    captured constants (inputs of the enclosing list, never renamed)."""

    inputs: list
    entries: list
    outputs: list

    def replay(self, b: Builder, operands) -> list:
        """The outputs, recomputed in `b` with `inputs` bound to `operands`."""
        env = {v.name: a for v, a in zip(self.inputs, operands)}
        for e in self.entries:
            ins = [env.get(a.name, a) if isinstance(a, Var) else a for a in e.ins]
            env[e.out.name] = b.bind(e.prim, *ins, **e.params)
        return [env.get(a.name, a) if isinstance(a, Var) else a for a in self.outputs]


@dataclass(eq=False)
class CustomRule:
    """The parameter of a custom call: which function, and its traced rules.

    `vjp`'s inputs are (residuals or operands…, [out,] g), one output per argument;
    `jvp`'s inputs are (primals…, tangents…), its last output the output tangent.
    """

    name: str
    n_args: int
    vjp: RuleList | None = None
    jvp: RuleList | None = None
    transposed: RuleList | None = None
    kernel: object = None           # a UserKernel (kernel_call only)

    def __repr__(self) -> str:          # printed in lists: deterministic, no addresses
        return self.name


def zero_tangent(b, like):
    return Literal(0.0) if like.shape == () else b.full_like(like, 0.0)


def transpose_jvp(rule: CustomRule) -> RuleList:
    """The VJP list `(primals…, g) -> cotangents…` of a JVP list (linear in the tangents):
    reverse mode of `sum(tangent_out * g)` with respect to the tangents, at zero tangents."""
    from ..transforms.reverse import value_and_grad      # transforms import the registry
    from . import REGISTRY
    jvp, n = rule.jvp, rule.n_args
    out_dot = jvp.outputs[-1]
    if not isinstance(out_dot, Var):          # a zero tangent: zero cotangents
        return RuleList(list(jvp.inputs) + [Var("g", "float64", ())], [], [None] * n)
    used = {v.name for v in jvp.inputs} | {e.out.name for e in jvp.entries}
    b = Builder(REGISTRY, used_names=used, prefix="l")
    b.entries = list(jvp.entries)
    g = Var(b.fresh("g"), "float64", out_dot.shape)
    total = b.mul(out_dot, g)
    if total.shape != ():
        total = b.sum(total, axis=None)
    inputs = list(jvp.inputs)
    constants = {a.name: a for e in jvp.entries for a in e.ins      # captured arrays
                 if isinstance(a, Var) and a.name not in used}
    linear = WengertList(f"{rule.name}_linear", inputs + [g] + list(constants.values()),
                         b.entries, [total])
    grads = value_and_grad(linear, list(range(n, 2 * n)))
    return RuleList(inputs + [g], grads.entries, grads.outputs[1:])


def _vjp_from_jvp(b, rule, primals, g):
    """Cotangents of the primals from the transposed JVP list (tangents bound to zeros)."""
    if rule.transposed is None:
        rule.transposed = transpose_jvp(rule)
    zeros = [zero_tangent(b, x) for x in primals]
    return rule.transposed.replay(b, list(primals) + zeros + [g])


def _jvp_by_rule(b, out, rule, primals, tangents):
    if all(t is None for t in tangents):
        return None
    dots = [t if t is not None else zero_tangent(b, x) for x, t in zip(primals, tangents)]
    return broadcast_to_shape_of(b, rule.jvp.replay(b, list(primals) + dots)[-1], out)


# ---------------------------------------------------------------- custom_vjp: out, args…, residuals

def _custom_vjp_vjp(b, g, out, value, *operands, rule):
    contributions = rule.vjp.replay(b, list(operands[rule.n_args:]) + [g])
    return [None] + contributions + [None] * (len(operands) - rule.n_args)


def _custom_vjp_jvp(b, out, operands, tangents, rule):
    raise TraceError(f"forward mode (jvp, Hessians) of {rule.name}, a jitad.custom_vjp "
                     "function, is not defined: its derivative is given in reverse mode only "
                     "(as in JAX). Use jitad.custom_jvp, whose rule gives both modes")


# ---------------------------------------------------------------- custom_jvp: out, args…

def _custom_jvp_vjp(b, g, out, value, *primals, rule):
    return [None] + _vjp_from_jvp(b, rule, primals, g)


def _custom_jvp_jvp(b, out, operands, tangents, rule):
    return _jvp_by_rule(b, out, rule, operands[1:], tangents[1:])


# ---------------------------------------------------------------- kernel_call: args…

def _kernel_source(texts, operands, params):
    return f"{params['rule'].kernel.printed}({', '.join(texts)})"


def _kernel_shape(*operands, rule):
    shapes = [a.shape for a in operands]
    shape = rule.kernel.shape(*shapes) if rule.kernel.shape is not None else ()
    return "float64", tuple(shape)


def _kernel_vjp(b, g, out, *operands, rule):
    if rule.vjp is not None:
        return rule.vjp.replay(b, list(operands) + [out, g])
    if rule.jvp is not None:
        return _vjp_from_jvp(b, rule, operands, g)
    raise TraceError(f"jitad.primitive {rule.name} has no vjp= or jvp= rule: it cannot be "
                     "differentiated (give one to jitad.primitive, or wrap the call in "
                     "jitad.stop_gradient)")


def _kernel_jvp(b, out, operands, tangents, rule):
    if rule.jvp is None:
        raise TraceError(f"forward mode (jvp, Hessians) of jitad.primitive {rule.name} needs "
                         "its jvp= rule (it has none)")
    return _jvp_by_rule(b, out, rule, operands, tangents)


class _Custom(Primitive):
    """A record whose traced value is computed by Python, not by running its printed line
    (the printed line names the user's kernel, or copies operand 0)."""

    def impl(self, *values, **params):
        rule = params.get("rule")
        if self.name == "kernel_call":
            return rule.kernel.dispatcher(*values)
        return values[0]


def _identity_rule(*operands, **params):
    return operands[0].dtype, operands[0].shape


def has_forward_mode(wengert) -> bool:
    """Whether forward mode is defined on every entry of the list."""
    return all(e.prim.name != "custom_vjp_call" and not (
        e.prim.name == "kernel_call" and e.params["rule"].jvp is None) for e in wengert)


def user_kernels(wengert) -> list:
    """The user kernels a list calls (to bind their names in generated modules)."""
    kernels = {e.params["rule"].kernel.printed: e.params["rule"].kernel
               for e in wengert if e.prim.name == "kernel_call"}
    return [kernels[k] for k in sorted(kernels)]


def build():
    """The custom records (called once by the registry)."""
    return [
        # Identity value, no derivative: values computed from it are constants.
        Primitive("stop_gradient", "{0}", _identity_rule, nondifferentiable=True, view=True,
                  domain=((-2.0, 2.0),)),
        # `custom_vjp[rule] out args… residuals…`: the value is `out` (computed by the
        # user's fwd); the derivative comes from the rule's bwd, none flows through `out`.
        _Custom("custom_vjp_call", "{0}", _identity_rule, _custom_vjp_vjp, _custom_vjp_jvp,
                view=True, domain=((-2.0, 2.0),)),
        # `custom_jvp[rule] out args…`: the value is `out` (the user's function); the
        # derivative comes from the rule's JVP list (transposed for reverse mode).
        _Custom("custom_jvp_call", "{0}", _identity_rule, _custom_jvp_vjp, _custom_jvp_jvp,
                view=True, domain=((-2.0, 2.0),)),
        # `kernel_call[rule] args…`: a call of the user's @numba.njit kernel.
        _Custom("kernel_call", _kernel_source, _kernel_shape, _kernel_vjp, _kernel_jvp,
                domain=((-2.0, 2.0),)),
    ]
