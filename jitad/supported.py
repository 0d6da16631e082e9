"""The supported-functions table, generated from the registry and the NumPy adapters.

Step: registry + dispatch tables -> Markdown rows (`python -m jitad supported`), so the
README's list is the set of things that trace, never a hand-kept copy.
"""
from __future__ import annotations

import math
import types


from . import numpy_functions, tracing
from .primitives import REGISTRY

# Notes for entries whose behaviour needs a word (conventions, limits).
NOTES = {
    "np.partition": "a full sort (a valid partition for every kth)",
    "np.sort": "stable; gradient follows the permutation (ties: to one element)",
    "np.fmax": "ties split the gradient; NaN operands are not special-cased in the derivative",
    "np.fmin": "ties split the gradient; NaN operands are not special-cased in the derivative",
    "np.maximum": "ties split the gradient equally",
    "np.minimum": "ties split the gradient equally",
    "np.remainder": "d/dx = 1, d/dy = -floor(x/y) (autograd's and JAX's rule); also `%`",
    "np.fmod": "d/dx = 1, d/dy = -trunc(x/y)",
    "np.floor": "derivative 0", "np.ceil": "derivative 0", "np.trunc": "derivative 0",
    "np.rint": "derivative 0", "np.round": "derivative 0; `decimals` supported",
    "np.cumprod": "gradient NaN where an element is exactly 0 (as np.prod)",
    "np.prod": "gradient NaN where an element is exactly 0",
    "np.einsum": "explicit subscripts without '...'; pairwise contractions as matrix products",
    "np.linalg.norm": "vector norms (ord None, 1, 2, ±inf, p), matrix norms (fro, ±1, ±inf); axis, keepdims",
    "np.pad": "modes that copy elements (constant, edge, reflect, symmetric, wrap)",
    "np.gradient": "scalar spacings, edge_order=1",
    "np.linspace": "traced start/stop (scalars or arrays)",
    "np.var": "`ddof`, `axis`, `keepdims`", "np.std": "`ddof`, `axis`, `keepdims`",
    "np.matmul": "any ranks: 3-D and more as a loop of BLAS products over broadcast batches",
    "np.array": "of (nested) lists of traced values; also np.asarray",
    "np.linalg.cholesky": "reads the lower triangle (as NumPy)",
    "np.linalg.eigh": "reads the lower triangle; eigenvector gradients for distinct eigenvalues",
    "np.linalg.eigvalsh": "reads the lower triangle",
    "scipy.linalg.solve_triangular": "`lower`; trans=0, unit_diagonal=False",
    "scipy.special.logsumexp": "`axis`, `b`, `keepdims` (not `return_sign`)",
    "scipy.special.xlogy": "d/dx = log(y), also at x = 0 (JAX's rule); d/dy = 0 at x = 0",
    "scipy.special.xlog1py": "d/dx = log1p(y), also at x = 0 (JAX's rule); d/dy = 0 at x = 0",
}


# Indexing forms and in-place methods (not functions: listed by how they are written).
INDEXING = {
    "x[i, j], x[:, i, j], x[i, 1:3] (index arrays)": (
        "one gather (flat positions)",
        "int64 arrays (arguments: checked at call time, negatives wrap) or constants, among "
        "ints, slices, None, `...`; NumPy's placement of the indexed dimensions"),
    "x[mask]": ("one gather", "mask argument, constant or computed (`x[x > 0]`): the code is for "
                "that mask, guarded (another mask retraces)"),
    "r[index] = v, r[index] += v (index arrays, masks)": (
        "scatter", "arrays the function made; repeated constant indices keep NumPy's last write "
        "(no accumulation: np.add.at-style sums are r = r + ...); repeated traced indices raise"),
    "np.add.at(r, index, v), np.subtract.at": (
        "scatter_add", "arrays the function made; repeated indices accumulate (as NumPy)"),
    "x.sort(), x.partition(k), x.fill(v)": ("in place", "arrays the function made"),
}


def _name(fn) -> str:
    if isinstance(fn, types.BuiltinFunctionType) and getattr(math, fn.__name__, None) is fn:
        return f"math.{fn.__name__}"
    module = getattr(fn, "__module__", None) or "numpy"
    if module.startswith("numpy"):
        module = "np" + module[len("numpy"):]
    return f"{module}.{fn.__name__}"


def rows() -> list:
    """(function, how it traces, note) for everything jitad traces, sorted by name."""
    found = {}
    for prim in REGISTRY.values():
        for fn in prim.traces:
            found[_name(fn)] = f"primitive `{prim.name}`"
    moves = {f for f, a in numpy_functions.FUNCTIONS.items()
             if getattr(a, "__qualname__", "").startswith("_mover")}
    for fn, adapter in {**tracing._FUNCTIONS, **numpy_functions.UFUNCS}.items():
        name = _name(fn)
        if name not in found:
            found[name] = "one gather (element moves)" if fn in moves else "composition"
    for name in numpy_functions._NUMPY_REPLACEMENTS:
        found[f"np.{name}"] = "composition (traced code's np.array)"
    for fn in tracing._NUMPY_CREATION:
        found[_name(fn)] = "a traced array (may be updated in place)"
    found["scipy.linalg.solve_triangular"] = "primitive `solve_triangular`"
    for name, (prim, _) in numpy_functions.SCIPY_PRIMITIVES.items():
        found[f"scipy.special.{name}"] = f"primitive `{prim}`"
    for name in (*numpy_functions.SCIPY_COMPOSITIONS, *numpy_functions.SCIPY_FUNCTIONS):
        found[f"scipy.special.{name}"] = "composition"
    return [(name, how, NOTES.get(name, "")) for name, how in sorted(found.items())] + \
        [(name, how, note) for name, (how, note) in INDEXING.items()]


def table() -> str:
    """The Markdown table of `rows()`."""
    lines = ["| function | traces as | note |", "|---|---|---|"]
    lines += [f"| `{name}` | {how} | {note} |" for name, how, note in rows()]
    return "\n".join(lines)
