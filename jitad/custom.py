"""Custom derivative rules, user Numba kernels as primitives, and `stop_gradient`.

Step: beside tracing. Called on traced values, these record one entry of a primitive of
`primitives/custom.py` whose parameter holds the user's rules, each traced once (here,
with concrete values) into a small list that reverse and forward mode replay. Called on
plain values, they run the user's function (or kernel) directly.
"""
from __future__ import annotations

import contextlib
import functools

import numpy as np

from .errors import ArgumentError, TraceError
from .primitives import REGISTRY
from .primitives.custom import KERNELS, CustomRule, RuleList, user_kernel
from .tracing import Tracer, _constant_operand, _Interceptor, _state, bind, located
from .wengert import Builder, Literal, Var

__all__ = ["custom_jvp", "custom_vjp", "primitive", "stop_gradient", "user_kernel"]


def stop_gradient(x):
    """`x`, with a zero derivative: values computed from it are constants to jitad.

    Example:
        >>> target = jitad.stop_gradient(2.0 * y)     # no gradient flows into y here
    """
    return bind(REGISTRY["stop_gradient"], x) if isinstance(x, Tracer) else x


# ---------------------------------------------------------------- tracing user rules

def _traced(args) -> bool:
    return any(isinstance(a, Tracer) for a in args)


def _call_user(fn, *args):
    """`fn(*args)` with `math.*` traced inside it too (as in the traced function itself)."""
    interceptor = _Interceptor(fn)
    try:
        return interceptor.entry(fn)(*args)
    finally:
        interceptor.write_back()


def _is_value(x) -> bool:
    """A leaf that is a runtime value (differentiable or not), not a static parameter."""
    return isinstance(x, (Tracer, float, np.floating, np.ndarray))


def _spec(x):
    """(dtype, shape, concrete value) of a value leaf."""
    if isinstance(x, Tracer):
        return x.node.dtype, x.node.shape, x.value
    value = np.asarray(x)
    return ("float64" if value.dtype.kind == "f" else "int64"), value.shape, x


def _flatten(tree):
    """(value leaves, rebuild(leaves)) for nested tuples/lists; other leaves stay static."""
    if isinstance(tree, (tuple, list)):
        parts = [_flatten(t) for t in tree]
        leaves = [leaf for p in parts for leaf in p[0]]

        def rebuild(values):
            out, k = [], 0
            for p in parts:
                n = len(p[0])
                out.append(p[1](values[k:k + n]))
                k += n
            return type(tree)(out)
        return leaves, rebuild
    if _is_value(tree):
        return [tree], lambda values: values[0]
    return [], lambda values: tree


def _subtrace(run, specs, what: str) -> RuleList:
    """Trace `run(tracers)` (returning output leaves) into a RuleList over fresh inputs."""
    state = _state()
    outer = state.builder
    sub = Builder(REGISTRY, used_names=outer.used)
    sub.counter = outer.counter         # (names are shared: start after the outer ones)
    inputs = [Var(sub.fresh("r"), dtype, shape) for dtype, shape, _ in specs]
    state.builder = sub
    try:
        leaves = run([Tracer(v, value) for v, (_, _, value) in zip(inputs, specs)])
    finally:
        state.builder = outer
    if any(e.prim.name == "guard" for e in sub.entries):
        raise TraceError(located(f"{what} branches on a traced value (if, while, and, or): a "
                                 "rule is traced once and replayed; select without branching "
                                 "(jitad.where / np.where)"))
    outputs = [None if leaf is None else leaf.node if isinstance(leaf, Tracer)
               else _constant_operand(state, leaf)[0] for leaf in leaves]
    defined = {v.name for v in inputs} | {e.out.name for e in sub.entries} | \
        {v.name for v, _ in state.consts}
    for operand in [a for e in sub.entries for a in e.ins] + outputs:
        if isinstance(operand, Var) and operand.name not in defined:
            raise TraceError(located(
                f"{what} uses a traced value it was not given ({operand.name}): a rule sees "
                "only its arguments; pass such values through the residuals (custom_vjp) or "
                "the arguments"))
    return RuleList(inputs, sub.entries, outputs)


def _cotangents(result, args, what: str) -> list:
    """The rule's cotangents for the traced `args`, checked against their shapes."""
    if not isinstance(result, (tuple, list)) or len(result) != len(args):
        raise TraceError(located(f"{what} must return a tuple with one cotangent per argument "
                                 f"({len(args)}), got {type(result).__name__} "
                                 f"{_describe(result)}"))
    out = []
    for k, (c, a) in enumerate(zip(result, args)):
        if not isinstance(a, Tracer):
            continue
        if c is None or (not isinstance(c, Tracer) and np.ndim(c) == 0 and c == 0):
            out.append(None)
            continue
        shape = c.node.shape if isinstance(c, Tracer) else np.shape(c)
        if shape != a.node.shape:
            raise TraceError(located(f"{what}: the cotangent of argument {k} has shape {shape}, "
                                     f"the argument {a.node.shape} (they must be equal)"))
        out.append(c)
    return out


def _describe(x) -> str:
    if isinstance(x, (tuple, list)):
        return f"of {len(x)} values"
    return f"of shape {np.shape(x.value if isinstance(x, Tracer) else x)}"


def _tangent_leaf(t, out: Tracer, what: str):
    if t is None or (not isinstance(t, Tracer) and np.ndim(t) == 0 and t == 0):
        return Literal(0.0) if out.node.shape == () else None
    shape = t.node.shape if isinstance(t, Tracer) else np.shape(t)
    if shape != out.node.shape:
        raise TraceError(located(f"{what}: the output tangent has shape {shape}, the output "
                                 f"{out.node.shape} (they must be equal)"))
    return t


def _unit(tracer: Tracer):
    """A concrete seed shaped like `tracer` (the value a rule's cotangent is traced with)."""
    return ("float64", tracer.node.shape,
            np.ones(tracer.node.shape) if tracer.node.shape else 1.0)


def _jvp_list(primals, tangents_fn, what):
    """Trace `rule(primals, tangents) -> tangent_out` over (traced primals…, tangents…)."""
    positions = [i for i, a in enumerate(primals) if isinstance(a, Tracer)]
    specs = [_spec(primals[i]) for i in positions]
    specs += [(d, s, np.ones(s) if s else 1.0) for d, s, _ in specs]
    n = len(positions)

    def run(tracers):
        ps, ts = list(primals), [_zero_like(a) for a in primals]
        for k, i in enumerate(positions):
            ps[i], ts[i] = tracers[k], tracers[n + k]
        return [tangents_fn(tuple(ps), tuple(ts))]
    rule = _subtrace(run, specs, what)
    _check_linear(rule, n, what)
    return rule, [primals[i] for i in positions]


# How a rule's tangent computation may use tangents (JAX transposes such rules, so does
# jitad): through linear primitives, in one factor of a product, as the numerator of a
# division or the right-hand side of a solve, and as the branches of a select.
_ONE_FACTOR = {"mul", "matmul", "batch_matmul", "outer"}
_LINEAR_IN = {"div": (0,), "solve": (1,), "solve_triangular": (1,), "select": (1, 2)}


def _check_linear(rule: RuleList, n: int, what: str) -> None:
    """A TraceError unless the rule's output is linear in its last `n` inputs (the tangents):
    a nonlinear (or affine) tangent rule has no transpose, and would give wrong gradients."""
    tangent = {v.name for v in rule.inputs[-n:]} if n else set()
    # Values that are zeros: np.zeros_like(x), the zero tangents of untraced arguments
    # (constant arrays), and what linear operations and products make of them.
    zero = {v.name for v, value in _state().consts
            if isinstance(value, np.ndarray) and value.dtype.kind == "f" and not value.any()}

    def fail(why):
        raise TraceError(located(f"{what} is not linear in the tangents ({why}): its tangent "
                                 "output must be a linear function of them, such as "
                                 "g(primals) * t (it is transposed for reverse mode)"))

    def fixed(a):               # an operand neither tangent nor zero
        return not (isinstance(a, Var) and (a.name in tangent or a.name in zero)
                    or isinstance(a, Literal) and a.value == 0)
    for e in rule.entries:
        name = e.prim.name
        moving = [k for k, a in enumerate(e.ins) if isinstance(a, Var) and a.name in tangent]
        if not moving:
            if name in ("full", "full_like") and e.ins[-1] == Literal(0.0) or \
                    name in _ONE_FACTOR and not all(fixed(a) for a in e.ins) or \
                    name in ("add", "sub", "neg") and not any(fixed(a) for a in e.ins):
                zero.add(e.out.name)
            continue
        if name in _ONE_FACTOR:
            ok = len(moving) == 1
        elif name in _LINEAR_IN:
            ok = set(moving) <= set(_LINEAR_IN[name])
        else:
            ok = e.prim.linear or name == "stop_gradient"
        if ok and name in ("add", "sub"):
            ok = not any(fixed(a) for a in e.ins)
            if not ok:
                fail(f"{name} of a tangent and a value that is not 0")
        if not ok:
            fail(f"{name} of {'tangents' if len(moving) > 1 else 'a tangent'}")
        tangent.add(e.out.name)
    for out in rule.outputs:
        if out is not None and fixed(out):
            fail("an output that does not depend on the tangents and is not 0")


def _zero_like(a):
    if isinstance(a, (float, np.floating)):
        return 0.0
    if isinstance(a, np.ndarray) and a.dtype.kind == "f":
        return np.zeros_like(a)
    return None


@contextlib.contextmanager
def _busy(custom):
    """While a custom function's rules are traced, calls of it inside them (`return f(x),
    ...` in a JVP rule) run the plain function instead of tracing the rule again."""
    custom._busy = True
    try:
        yield
    finally:
        custom._busy = False


# ---------------------------------------------------------------- custom_vjp

class custom_vjp:
    """A function whose reverse-mode derivative is given by the user (JAX's API).

    Example:
        >>> @jitad.custom_vjp
        ... def clip_gradient(x):
        ...     return x
        >>> def fwd(x):
        ...     return x, ()                   # (output, residuals for bwd)
        >>> def bwd(residuals, g):
        ...     return (np.clip(g, -1.0, 1.0),)   # one cotangent per argument
        >>> clip_gradient.defvjp(fwd, bwd)

    `fwd(*args) -> (out, residuals)` and `bwd(residuals, g) -> cotangents` are written with
    NumPy/math on traced values (they are traced and compiled); `out` is one float or array.
    Outside a traced function, calling it calls the plain function. Forward mode (and so
    Hessians) of a custom_vjp function is an error, as in JAX.
    """

    def __init__(self, fun):
        functools.update_wrapper(self, fun)
        self.fun = fun
        self.fwd = self.bwd = None
        self._busy = False

    def defvjp(self, fwd, bwd):
        """Set the rule; returns the function, so it can be used as a statement or not."""
        self.fwd, self.bwd = fwd, bwd
        return self

    def __repr__(self) -> str:
        return f"<jitad.custom_vjp {self.__name__}>"

    def __call__(self, *args):
        if not _traced(args):
            return self.fun(*args)
        if self._busy:                          # inside its own rules: the plain function
            return _call_user(self.fun, *args)
        if self.fwd is None:
            raise TraceError(located(f"{self.__name__} is a jitad.custom_vjp function without "
                                     f"a rule: call {self.__name__}.defvjp(fwd, bwd) first"))
        with _busy(self):
            return self._trace(args)

    def _trace(self, args):
        result = _call_user(self.fwd, *args)
        if not (isinstance(result, tuple) and len(result) == 2):
            raise TraceError(located(f"{self.__name__}: fwd must return (output, residuals), "
                                     f"got {type(result).__name__} {_describe(result)}"))
        out, residuals = result
        if not isinstance(out, Tracer):
            return out              # a constant: nothing to differentiate
        leaves, rebuild = _flatten(residuals)
        what = f"the bwd rule of {self.__name__}"
        traced_args = [a for a in args if isinstance(a, Tracer)]
        rule = CustomRule(self.__name__, len(traced_args))
        rule.vjp = _subtrace(
            lambda ts: _cotangents(_call_user(self.bwd, rebuild(ts[:-1]), ts[-1]), args, what),
            [_spec(x) for x in leaves] + [_unit(out)], what)
        return bind(REGISTRY["custom_vjp_call"], out, *traced_args, *leaves, rule=rule)


# ---------------------------------------------------------------- custom_jvp

class custom_jvp:
    """A function whose derivative is given by a JVP rule (JAX's API); reverse mode uses
    the rule's transpose (the tangent computation is linear in the tangents).

    Example:
        >>> @jitad.custom_jvp
        ... def log1pexp(x):
        ...     return np.log1p(np.exp(x))
        >>> def rule(primals, tangents):
        ...     (x,), (t,) = primals, tangents
        ...     return log1pexp(x), t / (1.0 + np.exp(-x))
        >>> log1pexp.defjvp(rule)

    `rule(primals, tangents) -> (out, tangent_out)` is written with NumPy/math on traced
    values; tangents of arguments that are not traced are zeros. The value is computed by
    the function itself.
    """

    def __init__(self, fun):
        functools.update_wrapper(self, fun)
        self.fun = fun
        self.rule = None
        self._busy = False

    def defjvp(self, rule):
        """Set the rule; returns it (so it can be used as a decorator)."""
        self.rule = rule
        return rule

    def __repr__(self) -> str:
        return f"<jitad.custom_jvp {self.__name__}>"

    def __call__(self, *args):
        if not _traced(args):
            return self.fun(*args)
        if self._busy:                          # inside its own rule: the plain function
            return _call_user(self.fun, *args)
        if self.rule is None:
            raise TraceError(located(f"{self.__name__} is a jitad.custom_jvp function without "
                                     f"a rule: call {self.__name__}.defjvp(rule) first"))
        out = _call_user(self.fun, *args)
        if not isinstance(out, Tracer):
            return out
        with _busy(self):
            return self._trace(args, out)

    def _trace(self, args, out):
        what = f"the jvp rule of {self.__name__}"

        def tangent_out(primals, tangents):
            result = _call_user(self.rule, primals, tangents)
            if not (isinstance(result, tuple) and len(result) == 2):
                raise TraceError(located(f"{what} must return (output, output tangent), got "
                                         f"{type(result).__name__} {_describe(result)}"))
            return _tangent_leaf(result[1], out, what)
        jvp, traced_args = _jvp_list(args, tangent_out, what)
        rule = CustomRule(self.__name__, len(traced_args), jvp=jvp)
        return bind(REGISTRY["custom_jvp_call"], out, *traced_args, rule=rule)


# ---------------------------------------------------------------- user kernels

class UserKernel:
    """A user's `@numba.njit` function as a jitad primitive (see `primitive`)."""

    def __init__(self, dispatcher, vjp, jvp, shape, name):
        self.dispatcher = dispatcher
        self.vjp, self.jvp, self.shape = vjp, jvp, shape
        self.__name__ = name
        self.__doc__ = getattr(dispatcher, "__doc__", None)
        self.printed = _register(self, name)

    def __repr__(self) -> str:
        return f"<jitad.primitive {self.printed}>"

    def __call__(self, *args):
        if not _traced(args):
            return self.dispatcher(*args)
        kinds = tuple(_spec(a)[:2] if _is_value(a) else ("static", type(a), a) for a in args)
        building = self.__dict__.setdefault("_building", {})
        rule = building.get(kinds)
        if rule is not None:        # called in its own rule (`sigmoid'` = sigmoid (1 - sigmoid)):
            return bind(REGISTRY["kernel_call"], *args, rule=rule)  # the rule being traced
        rule = CustomRule(self.printed, len(args), kernel=self)
        building[kinds] = rule
        try:
            return self._traced_call(args, rule)
        finally:
            del building[kinds]

    def _traced_call(self, args, rule):
        try:
            out = bind(REGISTRY["kernel_call"], *args, rule=rule)
        except Exception as error:
            if not type(error).__module__.startswith("numba"):
                raise
            kinds = ", ".join(f"{a.node.dtype}[{','.join(map(str, a.node.shape))}]"
                              if isinstance(a, Tracer) else type(a).__name__ for a in args)
            raise TraceError(located(
                f"jitad.primitive {self.printed} cannot be called with ({kinds}): Numba "
                f"could not compile the kernel for these arguments (its {type(error).__name__} "
                "is shown above); pass arguments the kernel accepts (a scalar kernel takes "
                "floats: call it per element, or write an array kernel with shape=...)")
            ) from error
        if np.shape(out.value) != out.node.shape:
            raise TraceError(located(
                f"jitad.primitive {self.printed} returned shape {np.shape(out.value)}, but its "
                f"shape rule gives {out.node.shape}: pass shape=lambda *shapes: ... to "
                "jitad.primitive (the default is a scalar)"))
        specs = [_spec(a) if _is_value(a) else ("int64", (), a) for a in args]
        if self.vjp is not None:
            what = f"the vjp rule of jitad.primitive {self.printed}"

            def run(ts):
                primals = tuple(t if isinstance(a, Tracer) else a
                                for t, a in zip(ts[:len(args)], args))
                result = _call_user(self.vjp, primals, ts[-2], ts[-1])
                return [c if isinstance(a, Tracer) else None for c, a in zip(
                    _cotangents_all(result, args, what), args)]
            rule.vjp = _subtrace(run, specs + [_spec(out), _unit(out)], what)
        if self.jvp is not None:
            what = f"the jvp rule of jitad.primitive {self.printed}"
            rule.jvp = _kernel_jvp_list(self.jvp, args, specs, out, what)
        return out


def _cotangents_all(result, args, what):
    """Cotangents aligned with all `args` (None where an argument is not traced)."""
    traced = iter(_cotangents(result, args, what))
    return [next(traced) if isinstance(a, Tracer) else None for a in args]


def _kernel_jvp_list(jvp, args, specs, out, what) -> RuleList:
    """`jvp(primals, tangents) -> tangent_out` over (all operands…, their tangents…)."""
    n = len(args)

    def run(ts):
        primals = tuple(t if _is_value(a) else a for t, a in zip(ts[:n], args))
        tangents = tuple(ts[n + k] if _is_value(a) else None for k, a in enumerate(args))
        return [_tangent_leaf(_call_user(jvp, primals, tangents), out, what)]
    tangent_specs = [(d, s, np.ones(s) if s else 1.0) for d, s, _ in specs]
    rule = _subtrace(run, specs + tangent_specs, what)
    _check_linear(rule, n, what)
    return rule


def _register(kernel, name: str) -> str:
    """A process-unique printed name for `kernel` (generated modules bind it by this name;
    a redefined kernel gets a new name, so compiled code never calls an old one)."""
    from .codegen import identifier
    base = identifier(name)
    printed, k = base, 1
    while printed in KERNELS:
        k += 1
        printed = f"{base}_{k}"
    KERNELS[printed] = kernel
    return printed


def primitive(kernel, vjp=None, jvp=None, shape=None, name=None):
    """A user's `@numba.njit` kernel as a jitad primitive: compiled code calls the kernel.

    Args:
        kernel: a Numba dispatcher taking floats/arrays, returning a float64 scalar or array.
        vjp: `vjp(primals, out, g) -> cotangents` (one per argument; None or 0.0 for zero).
        jvp: `jvp(primals, tangents) -> tangent_out`; gives reverse mode too (transposed)
            when `vjp` is not given. Both are written with NumPy/math on traced values and
            may call other jitad primitives.
        shape: `shape(*argument_shapes) -> output shape`; default: a scalar output.
        name: its name in lists and generated code (default: the kernel's).

    Returns:
        A callable: the kernel on plain values; a `kernel_call` entry on traced values.

    Example:
        >>> @numba.njit
        ... def softplus(x):
        ...     return math.log1p(math.exp(x))
        >>> softplus = jitad.primitive(softplus, jvp=lambda p, t: t / (1.0 + np.exp(-p[0])))
    """
    if not hasattr(kernel, "py_func"):
        raise ArgumentError(f"jitad.primitive needs a @numba.njit function, got "
                            f"{type(kernel).__name__} {kernel!r:.60}")
    return UserKernel(kernel, vjp, jvp, shape, name or kernel.py_func.__name__)
