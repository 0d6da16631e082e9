"""Generated straight-line programs for the ``synthetic`` benchmark.

``program(n_ops)`` builds, deterministically, the Python source of a function
``f(x)`` of a float64 array of length ``N_INPUTS`` that performs ``n_ops``
scalar operations (+ - * sin cos exp tanh) on randomly chosen earlier
intermediates and inputs, and alongside it the hand-written-style reverse-mode source:
an ``@numba.njit`` function that replays the forward sweep and then walks the
operations backwards accumulating adjoints. The sources are written to real
files so tracebacks and ``inspect`` can show them.

Every intermediate stays bounded for any ``x`` in [-1, 1]: the generator
tracks an interval bound per value and replaces an operation whose result
could exceed ``BOUND_LIMIT`` (or an ``exp`` of a value that is not small) by
``sin``/``cos``/``tanh`` of its first operand.
"""

import functools
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np

N_INPUTS = 16
WINDOW = 64          # operands are drawn from the last WINDOW values
INPUT_SHARE = 0.25   # chance that a second operand is an input x[i]
BOUND_LIMIT = 4.0    # largest |value| an operation may produce
EXP_ARG_LIMIT = 1.0  # exp is applied only to values bounded by this
SOURCE_DIR = Path(tempfile.gettempdir()) / "jitad-bench-synthetic"

BINARY = {"add": "{a} + {b}", "sub": "{a} - {b}", "mul": "{a} * {b}"}
UNARY = {"sin": "math.sin({a})", "cos": "math.cos({a})",
         "exp": "math.exp({a})", "tanh": "math.tanh({a})"}
SQUASHING = ("sin", "cos", "tanh")


@dataclass(frozen=True)
class Program:
    """Sources of one generated function and of its reverse-mode gradient."""

    name: str
    user_source: str
    reference_source: str


def _result_bound(kind, bound_a, bound_b):
    if kind in ("add", "sub"):
        return bound_a + bound_b
    if kind == "mul":
        return bound_a * bound_b
    if kind == "exp":
        return math.exp(bound_a) if bound_a <= EXP_ARG_LIMIT else math.inf
    return 1.0


def _generate_ops(n_ops, seed):
    """Return ``(ops, outputs)``: ops are ``(kind, out, a, b)`` over value indices."""
    rng = np.random.default_rng(seed)
    kinds = list(BINARY) + list(UNARY)
    bounds = [1.0] * N_INPUTS
    unused = set(range(N_INPUTS))
    ops = []
    for out in range(N_INPUTS, N_INPUTS + n_ops):
        low = max(0, out - WINDOW)
        # Prefer a not-yet-used value as first operand so (almost) every
        # intermediate feeds the output.
        fresh = [v for v in range(low, out) if v in unused]
        a = int(rng.choice(fresh)) if fresh else int(rng.integers(low, out))
        if rng.random() < INPUT_SHARE:  # keeps the output sensitive to x
            b = int(rng.integers(N_INPUTS))
        else:
            b = int(rng.integers(low, out))
        kind = kinds[rng.integers(len(kinds))]
        bound = _result_bound(kind, bounds[a], bounds[b])
        if bound > BOUND_LIMIT:
            kind = SQUASHING[rng.integers(len(SQUASHING))]
            bound = 1.0
        if kind in UNARY:
            b = None
        ops.append((kind, out, a, b))
        bounds.append(bound)
        unused.difference_update((a, b))
        unused.add(out)
    outputs = sorted(v for v in unused if v >= N_INPUTS)
    return ops, outputs


def _forward_lines(ops, outputs):
    lines = [f"    v{i} = x[{i}]" for i in range(N_INPUTS)]
    for kind, out, a, b in ops:
        template = BINARY.get(kind) or UNARY[kind]
        lines.append(f"    v{out} = " + template.format(a=f"v{a}", b=f"v{b}"))
    lines.append("    value = " + " + ".join(f"v{v}" for v in outputs))
    return lines


def _adjoint_lines(ops, outputs):
    """Reverse sweep: ``b_vK`` is d value / d vK, created at its first contribution."""
    lines = [f"    b_v{v} = 1.0" for v in outputs]
    has_adjoint = set(outputs)

    def accumulate(target, term):
        name = f"b_v{target}"
        if target in has_adjoint:
            lines.append(f"    {name} += {term}")
        else:
            has_adjoint.add(target)
            lines.append(f"    {name} = {term}")

    for kind, out, a, b in reversed(ops):
        w, bar = f"v{out}", f"b_v{out}"
        if kind == "add":
            accumulate(a, bar)
            accumulate(b, bar)
        elif kind == "sub":
            accumulate(a, bar)
            accumulate(b, f"-{bar}")
        elif kind == "mul":
            accumulate(a, f"{bar} * v{b}")
            accumulate(b, f"{bar} * v{a}")
        elif kind == "sin":
            accumulate(a, f"{bar} * math.cos(v{a})")
        elif kind == "cos":
            accumulate(a, f"-{bar} * math.sin(v{a})")
        elif kind == "exp":
            accumulate(a, f"{bar} * {w}")
        else:  # tanh
            accumulate(a, f"{bar} * (1.0 - {w} * {w})")
    lines.append(f"    grad = np.zeros({N_INPUTS})")
    lines += [f"    grad[{i}] = b_v{i}" for i in range(N_INPUTS) if i in has_adjoint]
    return lines


@functools.lru_cache(maxsize=None)
def program(n_ops, seed=0):
    """The generated :class:`Program` with ``n_ops`` operations (cached)."""
    name = f"synthetic_{n_ops}"
    ops, outputs = _generate_ops(n_ops, seed)
    forward = _forward_lines(ops, outputs)
    user = [f"def {name}(x):", *forward, "    return value", ""]
    reference = [
        "@numba.njit",
        f"def {name}_value_and_grad(x):",
        *forward,
        *_adjoint_lines(ops, outputs),
        "    return value, grad",
        "",
    ]
    return Program(name, "\n".join(user), "\n".join(reference))


def _load(source, filename, function_name, namespace):
    path = SOURCE_DIR / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != source:
        path.write_text(source)
    exec(compile(source, str(path), "exec"), namespace)
    return namespace[function_name]


def user_function(n_ops, math_module=math):
    """The plain generated function; ``math_module`` stands in for ``math``.

    Peers pass ``jax.numpy`` or ``autograd.numpy``, whose ``sin``/``cos``/
    ``exp``/``tanh`` accept their tracers.
    """
    prog = program(n_ops)
    return _load(prog.user_source, f"{prog.name}.py", prog.name,
                 {"math": math_module})


def reference_function(n_ops):
    """The generated ``@numba.njit`` value-and-gradient (compiled on first call)."""
    prog = program(n_ops)
    return _load(prog.reference_source, f"{prog.name}_reference.py",
                 f"{prog.name}_value_and_grad",
                 {"math": math, "np": np, "numba": numba})
