"""Linear algebra: `matmul` (np.dot / @ for 1-D and 2-D operands, BLAS in Numba) and `outer`."""
import numpy as np

from ..errors import ShapeError
from .core import Primitive, result_dtype


def _matmul_rule(a, b):
    if a.ndim not in (1, 2) or b.ndim not in (1, 2):
        raise ShapeError(f"matmul supports 1-D and 2-D operands, got shapes {a.shape} and {b.shape}")
    if a.shape[-1] != b.shape[0]:
        raise ShapeError(f"matmul: inner dimensions differ: shapes {a.shape} and {b.shape} "
                         f"({a.shape[-1]} != {b.shape[0]})")
    return result_dtype(a, b, floating=True), a.shape[:-1] + b.shape[1:]


def _matmul_vjp(b, g, out, x, y):
    # out = x @ y.  x_bar = g @ y.T and y_bar = x.T @ g, with 1-D operands as vectors.
    if x.ndim == 1 and y.ndim == 1:
        return b.mul(y, g), b.mul(x, g)
    if y.ndim == 1:                                   # (m,n) @ (n,) -> (m,)
        return b.outer(g, y), b.matmul(b.transpose(x, axes=(1, 0)), g)
    if x.ndim == 1:                                   # (n,) @ (n,k) -> (k,)
        return b.matmul(y, g), b.outer(x, g)
    return (b.matmul(g, b.transpose(y, axes=(1, 0))),
            b.matmul(b.transpose(x, axes=(1, 0)), g))


def _bilinear_jvp(name):
    """d(x*y) = dx*y + x*dy for a primitive bilinear in its two operands."""
    def jvp(b, out, operands, tangents):
        (x, y), (dx, dy) = operands, tangents
        prim = b.registry[name]
        terms = [b.bind(prim, dx, y) if dx is not None else None,
                 b.bind(prim, x, dy) if dy is not None else None]
        terms = [t for t in terms if t is not None]
        return terms[0] if len(terms) == 1 else b.add(*terms)
    return jvp


def _outer_rule(a, b):
    if a.ndim != 1 or b.ndim != 1:
        raise ShapeError(f"outer takes 1-D operands, got shapes {a.shape} and {b.shape}")
    return result_dtype(a, b, floating=True), (a.shape[0], b.shape[0])


def _outer_vjp(b, g, out, x, y):
    return b.matmul(g, y), b.matmul(b.transpose(g, axes=(1, 0)), x)


def build():
    """The linear-algebra records (called once by the registry)."""
    return [
        Primitive("matmul", "np.dot({0}, {1})", _matmul_rule, _matmul_vjp, _bilinear_jvp("matmul"),
                  traces=(np.matmul,), domain=((-2.0, 2.0), (-2.0, 2.0))),
        Primitive("outer", "np.outer({0}, {1})", _outer_rule, _outer_vjp, _bilinear_jvp("outer"),
                  domain=((-2.0, 2.0), (-2.0, 2.0))),
    ]
