"""More of NumPy's ufuncs, `math`'s special functions, scans, sorting and stacked matrix
products (the primitives `numpy_functions` lowers NumPy calls to when no composition of
other primitives compiles as well).

Elementwise records use `elementwise.elementwise` (one chain rule serves VJP and JVP).
Rounding (`floor ceil trunc rint`) is nondifferentiable: its derivative is zero wherever it
exists. `cumsum`, `cumprod` and `sort_permutation` work along one axis through row
helpers of `runtime`, as the max/min/prod reductions do. None has an `ir` template: the
tape and llvm code shapes do not encode them, so lists using them print as Python.
"""
import math

import numpy as np

from .core import Primitive, elementwise_rule, shape_text
from .elementwise import POSITIVE, UNIT, elementwise
from .shape import transpose_text

LN2, LN10 = math.log(2.0), math.log(10.0)
TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)


# ---------------------------------------------------------------- chain rules (g * partials)

def _extremum_chain(compare):
    # As np.maximum: ties split the gradient equally between the operands.
    def chain(b, g, out, x, y):
        weight_x = b.select(b.bind(b.registry[compare], x, y), 1.0,
                            b.select(b.eq(x, y), 0.5, 0.0))
        return b.mul(g, weight_x), b.mul(g, b.sub(1.0, weight_x))
    return chain


def _sinc_chain(b, g, out, x):
    # sinc(x) = sin(pi x) / (pi x);  sinc'(x) = (cos(pi x) - sinc(x)) / x, 0 at x = 0.
    zero = b.eq(x, 0.0)
    safe = b.select(zero, 1.0, x)
    slope = b.div(b.sub(b.cos(b.mul(safe, math.pi)), b.sinc(safe)), safe)
    return (b.mul(g, b.select(zero, 0.0, slope)),)


def _remainder_chain(b, g, out, x, y):
    # out = x - q * y for an integer q: d/dx = 1, d/dy = -q (autograd's and JAX's rule), q
    # from the exact remainder: rint((x - out) / y). (floor(x / y) is 10 at 1.0, 0.1,
    # where 1.0 // 0.1 and q are 9.)
    return g, b.neg(b.mul(g, b.rint(b.div(b.sub(x, out), y))))


def _special_source(scalar):
    """`scalar(x)` for a float operand; elementwise through a list for arrays (the scalar
    function is a `math` or `runtime` function Numba compiles)."""
    def source(texts, operands, params):
        args = "".join(f"{params[k]}, " for k in sorted(params))
        if operands[0].ndim == 0:
            return f"{scalar}({args}{texts[0]})"
        return (f"np.array([{scalar}({args}v) for v in np.ascontiguousarray({texts[0]}).ravel()])"
                f".reshape({texts[0]}.shape)")
    return source


def _xlogy_source(log):
    """`x * log(y)`, 0 where x == 0 (scipy.special.xlogy / xlog1py)."""
    def source(texts, operands, params):
        x, y = texts
        if all(a.shape == () for a in operands):
            return f"(0.0 if {x} == 0 else {x} * np.{log}({y}))"
        return f"np.where({x} == 0, 0.0, {x} * np.{log}({y}))"
    return source


def _xlogy_chain(log, shift):
    # d/dx = log(y) everywhere (x * log(y) is linear in x: JAX's rule); d/dy = x / y, which
    # is 0 at x = 0 (the function is 0 for every y there), also at y = 0, where the
    # denominator is taken as 1 (0 / 0 is not formed; d/dx of x / y stays 1 / y at x = 0).
    def chain(b, g, out, x, y):
        inner = y if shift is None else b.add(y, shift)
        den = b.select(b.eq(x, 0.0), b.select(b.eq(inner, 0.0), 1.0, inner), inner)
        return b.mul(g, b.bind(b.registry[log], y)), b.mul(b.div(g, den), x)
    return chain


def _rounding(name, traces):
    return Primitive(name, f"np.{name}({{0}})", elementwise_rule(floating=True),
                     nondifferentiable=True, traces=traces, domain=((-2.0, 2.0),))


# ---------------------------------------------------------------- scans along one axis

def _normalize_axis(operands, params):
    return {"axis": params["axis"] % operands[0].ndim}


def _scan_source(helper):
    """The scan of each row along `axis`: move it last, run the row helper, move it back."""
    def source(texts, operands, params):
        (x_text,), (x,), axis = texts, operands, params["axis"]
        if x.ndim == 1:
            return f"{helper}(np.ascontiguousarray({x_text}).reshape((1, -1)))[0]"
        order = tuple(k for k in range(x.ndim) if k != axis) + (axis,)
        moved = f"np.ascontiguousarray({transpose_text(x_text, x.ndim, order)})"
        # (the row count spelled out: -1 is ambiguous when the scanned axis has length 0)
        count = " * ".join(f"{x_text}.shape[{k}]" for k in order[:-1])
        rows = f"{helper}({moved}.reshape(({count}, {x_text}.shape[{axis}])))"
        back = tuple(int(k) for k in np.argsort(order))
        rows = f"{rows}.reshape({shape_text(x_text, [('dim', k) for k in order])})"
        return transpose_text(rows, x.ndim, back)
    return source


def _reverse_cumsum(b, g, axis):
    """sum over j >= i along `axis` (the transpose of cumsum)."""
    flip = tuple(("slice", None, None, None) for _ in range(axis)) + (("slice", None, None, -1),)
    return b.getitem(b.cumsum(b.getitem(g, index=flip), axis=axis), index=flip)


def _cumsum_vjp(b, g, out, x, axis):
    return (_reverse_cumsum(b, g, axis),)


def _cumsum_jvp(b, out, operands, tangents, axis):
    return b.cumsum(tangents[0], axis=axis)


def _cumprod_vjp(b, g, out, x, axis):
    # d out_j / d x_i = out_j / x_i for j >= i: NaN where an element is exactly 0 (as prod).
    return (b.div(_reverse_cumsum(b, b.mul(g, out), axis), x),)


def _cumprod_jvp(b, out, operands, tangents, axis):
    return b.mul(out, b.cumsum(b.div(tangents[0], operands[0]), axis=axis))


def _sort_permutation_source(texts, operands, params):
    x = texts[0]
    # (the row count spelled out: -1 is ambiguous when the last axis has length 0)
    count = " * ".join(f"{x}.shape[{k}]" for k in range(operands[0].ndim - 1)) or "1"
    return (f"sort_permutation(np.ascontiguousarray({x}).reshape(({count}, {x}.shape[-1])))"
            f".reshape({x}.shape)")


# ---------------------------------------------------------------- stacked matrix products

def _batch_matmul_rule(a, b):
    from ..errors import ShapeError
    if a.ndim != 3 or b.ndim != 3 or a.shape[0] != b.shape[0] or a.shape[2] != b.shape[1]:
        raise ShapeError(f"batch_matmul takes (k, m, n) and (k, n, p) operands, got shapes "
                         f"{a.shape} and {b.shape}")
    return "float64", (a.shape[0], a.shape[1], b.shape[2])


def _batch_matmul_vjp(b, g, out, x, y):
    swap = (0, 2, 1)
    return (b.batch_matmul(g, b.transpose(y, axes=swap)),
            b.batch_matmul(b.transpose(x, axes=swap), g))


def _batch_matmul_jvp(b, out, operands, tangents):
    (x, y), (dx, dy) = operands, tangents
    terms = [b.batch_matmul(dx, y) if dx is not None else None,
             b.batch_matmul(x, dy) if dy is not None else None]
    terms = [t for t in terms if t is not None]
    return terms[0] if len(terms) == 1 else b.add(*terms)


def _checked_axis_index_source(texts, operands, params):
    helper = "checked_indices" if operands[0].ndim else "checked_index"
    return f"{helper}({texts[0]}, {params['size']}, {params['axis']})"


def build():
    """The records of this family (called once by the registry)."""
    chain1 = lambda f: (lambda b, g, o, x, **p: (f(b, g, o, x, **p),))  # noqa: E731
    return [
        elementwise("log2", "np.log2({0})", chain1(lambda b, g, o, x: b.div(g, b.mul(x, LN2))),
                    1, domain=POSITIVE, traces=(np.log2, math.log2)),
        elementwise("log10", "np.log10({0})",
                    chain1(lambda b, g, o, x: b.div(g, b.mul(x, LN10))), 1, domain=POSITIVE,
                    traces=(np.log10, math.log10)),
        elementwise("exp2", "np.exp2({0})", chain1(lambda b, g, o, x: b.mul(g, b.mul(o, LN2))),
                    1, traces=(np.exp2,)),
        elementwise("cbrt", "np.cbrt({0})",
                    chain1(lambda b, g, o, x: b.div(g, b.mul(b.mul(o, o), 3.0))), 1,
                    domain=POSITIVE, traces=(np.cbrt,) + ((math.cbrt,) if hasattr(math, "cbrt") else ())),
        elementwise("arcsinh", "np.arcsinh({0})",
                    chain1(lambda b, g, o, x: b.div(g, b.sqrt(b.add(b.mul(x, x), 1.0)))), 1,
                    traces=(np.arcsinh, math.asinh)),
        elementwise("arccosh", "np.arccosh({0})",
                    chain1(lambda b, g, o, x: b.div(g, b.sqrt(b.sub(b.mul(x, x), 1.0)))), 1,
                    domain=((1.2, 3.0),), traces=(np.arccosh, math.acosh)),
        elementwise("arctanh", "np.arctanh({0})",
                    chain1(lambda b, g, o, x: b.div(g, b.sub(1.0, b.mul(x, x)))), 1,
                    domain=UNIT, traces=(np.arctanh, math.atanh)),
        elementwise("sinc", "np.sinc({0})", _sinc_chain, 1),
        elementwise("fmax", "np.fmax({0}, {1})", _extremum_chain("gt"), 2, floating=False,
                    traces=(np.fmax,)),
        elementwise("fmin", "np.fmin({0}, {1})", _extremum_chain("lt"), 2, floating=False,
                    traces=(np.fmin,)),
        elementwise("logaddexp2", "np.logaddexp2({0}, {1})",
                    lambda b, g, o, x, y: (b.mul(g, b.exp2(b.sub(x, o))),
                                           b.mul(g, b.exp2(b.sub(y, o)))), 2,
                    traces=(np.logaddexp2,)),
        elementwise("remainder", "np.remainder({0}, {1})", _remainder_chain, 2,
                    floating=False, domain=((-2.0, 2.0), (0.3, 0.7)),
                    traces=(np.remainder, np.mod)),
        elementwise("fmod", "np.fmod({0}, {1})", _remainder_chain, 2, floating=False,
                    domain=((-2.0, 2.0), (0.3, 0.7)), traces=(np.fmod, math.fmod)),
        elementwise("expit", "1.0 / (1.0 + np.exp(-{0}))",
                    chain1(lambda b, g, o, x: b.mul(g, b.mul(o, b.sub(1.0, o)))), 1),
        # SciPy's logit(x) = log(x / (1 - x)); its derivative 1 / (x (1 - x)) as one rule
        # (JAX's): through the division, reverse mode formed 0 * inf = NaN at x = 0 and 1
        elementwise("logit", "np.log({0} / (1.0 - {0}))",
                    chain1(lambda b, g, o, x: b.div(g, b.mul(x, b.sub(1.0, x)))), 1,
                    domain=((0.1, 0.9),)),
        elementwise("xlogy", _xlogy_source("log"), _xlogy_chain("log", None), 2,
                    domain=((-2.0, 2.0), (0.3, 2.0))),
        elementwise("xlog1py", _xlogy_source("log1p"), _xlogy_chain("log1p", 1.0), 2,
                    domain=((-2.0, 2.0), (-0.5, 2.0))),
        elementwise("erf", _special_source("math.erf"),
                    chain1(lambda b, g, o, x: b.mul(g, b.mul(b.exp(b.neg(b.mul(x, x))),
                                                             TWO_OVER_SQRT_PI))), 1,
                    traces=(math.erf,)),
        elementwise("erfc", _special_source("math.erfc"),
                    chain1(lambda b, g, o, x: b.mul(g, b.mul(b.exp(b.neg(b.mul(x, x))),
                                                             -TWO_OVER_SQRT_PI))), 1,
                    traces=(math.erfc,)),
        elementwise("lgamma", _special_source("math.lgamma"),
                    chain1(lambda b, g, o, x: b.mul(g, b.polygamma(x, n=0))), 1,
                    domain=((0.3, 4.0),), traces=(math.lgamma,)),
        elementwise("gamma", _special_source("math.gamma"),
                    chain1(lambda b, g, o, x: b.mul(g, b.mul(o, b.polygamma(x, n=0)))), 1,
                    domain=((0.3, 4.0),), traces=(math.gamma,)),
        elementwise("polygamma", _special_source("polygamma"),
                    chain1(lambda b, g, o, x, n: b.mul(g, b.polygamma(x, n=n + 1))), 1,
                    domain=((0.3, 4.0),), test_params=({"n": 0}, {"n": 1})),
        # Python's and NumPy's `//` (1.0 // 0.1 is 9.0; floor(1.0 / 0.1) is 10.0), printed as
        # the operator: Numba's np.floor_divide of floats computes floor(x / y).
        Primitive("floor_divide", "{0} // {1}", elementwise_rule(floating=False),
                  nondifferentiable=True, traces=(np.floor_divide,),
                  domain=((-2.0, 2.0), (0.3, 0.7))),
        _rounding("floor", (np.floor, math.floor)),
        _rounding("ceil", (np.ceil, math.ceil)),
        _rounding("trunc", (np.trunc, math.trunc)),
        _rounding("rint", (np.rint,)),
        Primitive("cumsum", _scan_source("cumsum_rows"), lambda x, axis: ("float64", x.shape),
                  _cumsum_vjp, _cumsum_jvp, linear=True, normalize=_normalize_axis,
                  domain=((-2.0, 2.0),), test_params=({"axis": 0}, {"axis": -1})),
        Primitive("cumprod", _scan_source("cumprod_rows"), lambda x, axis: ("float64", x.shape),
                  _cumprod_vjp, _cumprod_jvp, normalize=_normalize_axis,
                  domain=((0.4, 1.6),), test_params=({"axis": 0}, {"axis": -1})),
        Primitive("sort_permutation", _sort_permutation_source, lambda x: ("int64", x.shape),
                  nondifferentiable=True, domain=((-2.0, 2.0),)),
        Primitive("batch_matmul", "batch_matmul({0}, {1})", _batch_matmul_rule,
                  _batch_matmul_vjp, _batch_matmul_jvp, domain=((-2.0, 2.0), (-2.0, 2.0))),
        Primitive("checked_axis_index", _checked_axis_index_source,
                  lambda i, size, axis: ("int64", i.shape), nondifferentiable=True,
                  domain=((0.0, 2.0),), test_params=({"size": 3, "axis": 1},)),
    ]
