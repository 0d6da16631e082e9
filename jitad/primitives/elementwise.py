"""Elementwise primitives (arithmetic, math functions, comparisons, select), with broadcasting.

Each differentiable op gives one `chain(b, g, out, *operands)` rule returning
`g * d(out)/d(operand_i)` for every operand. Elementwise Jacobians are diagonal,
so the same rule serves the VJP (followed by `sum_to_shape` over broadcast axes)
and the JVP (summed over operands).
"""
import math

import numpy as np

from ..wengert import Literal
from .core import (Primitive, add_into, add_tangents, broadcast_shapes, broadcast_to_shape_of,
                   elementwise_rule, result_dtype, sum_to_shape)

POSITIVE = ((0.2, 3.0),)
UNIT = ((-0.9, 0.9),)


def elementwise(name, source, chain, arity, floating=True, domain=None, **flags):
    """A differentiable elementwise primitive built from its chain rule."""

    def vjp(b, g, out, *operands, **params):
        terms = chain(b, g, out, *operands, **params)
        return tuple([None if isinstance(x, Literal) else
                      t if t is None or t.shape == x.shape else sum_to_shape(b, t, x)
                      for t, x in zip(terms, operands)])

    def jvp(b, out, operands, tangents, **params):
        terms = [chain(b, t, out, *operands, **params)[i]
                 for i, t in enumerate(tangents) if t is not None]
        return broadcast_to_shape_of(b, add_tangents(b, *terms), out)

    rule = flags.pop("shape_rule", None) or elementwise_rule(floating)
    return Primitive(name, source, rule, vjp, jvp, domain=domain or ((-2.0, 2.0),) * arity,
                     **flags)


def comparison(name, source, ufunc, predicate):
    """A comparison: bool output, no derivative. `predicate`: LLVM's fcmp condition."""
    return Primitive(name, source, lambda x, y: ("bool", broadcast_shapes(x, y)),
                     nondifferentiable=True, traces=(ufunc,), domain=((-2.0, 2.0),) * 2,
                     ir=f"fcmp {predicate} double {{0}}, {{1}}")


def _call(function, arity):
    """IR template calling a double -> double function (libm's or a prelude helper)."""
    return f"call double @{function}(" + ", ".join(f"double {{{i}}}" for i in range(arity)) + ")"


# ---------------------------------------------------------------- chain rules (g * partials)

def _add_inplace(texts, operands, params):
    return add_into(texts[0], texts[1], operands[1], operands[0].ndim)


def _div_chain(b, g, out, x, y):
    return b.div(g, y), b.neg(b.div(b.mul(g, out), y))


def _pow_chain(b, g, out, x, y):
    # d(x**y)/dx = y * x**(y-1);  d(x**y)/dy = log(x) * x**y. Where the function is locally
    # constant the derivative is 0, not 0 * inf = NaN (JAX's convention): x**0 = 1 for all
    # x, so d/dx is 0 at y = 0 (also at x = 0); 0**y = 0 for all y > 0, so d/dy is 0 at
    # x = 0 (log is taken of 1 there). Decided at trace time for literal operands.
    dx = b.mul(y, b.pow(x, b.sub(y, 1.0)))
    if not isinstance(y, Literal):
        dx = b.select(b.eq(y, 0.0), 0.0, dx)
    if isinstance(x, Literal):
        log_x = b.log(x) if x.value != 0 else Literal(0.0)
    else:
        log_x = b.log(b.select(b.eq(x, 0.0), 1.0, x))
    return b.mul(g, dx), b.mul(g, b.mul(log_x, out))


def _pow_source(texts, operands, params):
    # Integer operands as floats, as NumPy computes float ** int (Numba's float ** int raises
    # ZeroDivisionError at 0 for a negative exponent, whatever its error model)
    texts = [t if a.dtype == "float64" else
             f"{t}.astype(np.float64)" if a.ndim else f"float({t})"
             for t, a in zip(texts, operands)]
    return f"{texts[0]} ** {texts[1]}"


def _integer_pow_chain(b, g, out, x, n):
    if n == 1:
        return (g,)
    lower = x if n == 2 else b.integer_pow(x, n=n - 1)
    return (b.mul(g, b.mul(lower, float(n))),)


def _integer_pow_source(texts, operands, params):
    n, x = params["n"], texts[0]
    if n == 2:
        return f"{x} * {x}"
    return f"{x} ** {n}" if n >= 0 else f"1.0 / {x} ** {-n}"


def _arctan2_chain(b, g, out, y, x):
    denominator = b.add(b.mul(x, x), b.mul(y, y))
    return b.div(b.mul(g, x), denominator), b.neg(b.div(b.mul(g, y), denominator))


def _extremum_chain(compare):
    # Ties split the gradient equally between the two operands (JAX's convention).
    def chain(b, g, out, x, y):
        weight_x = b.select(b.bind(compare, x, y), 1.0, b.select(b.eq(x, y), 0.5, 0.0))
        return b.mul(g, weight_x), b.mul(g, b.sub(1.0, weight_x))
    return chain


def _select_source(texts, operands, params):
    if all(a.shape == () for a in operands):
        return f"({texts[1]} if {texts[0]} else {texts[2]})"
    return f"np.where({texts[0]}, {texts[1]}, {texts[2]})"


def _select_chain(b, g, out, cond, x, y):
    return None, b.select(cond, g, 0.0), b.select(cond, 0.0, g)


def _select_rule(cond, x, y):
    return result_dtype(x, y), broadcast_shapes(cond, x, y)


def build():
    """The elementwise records (called once by the registry)."""
    lt = comparison("lt", "{0} < {1}", np.less, "olt")
    gt = comparison("gt", "{0} > {1}", np.greater, "ogt")
    prims = [
        elementwise("add", "{0} + {1}", lambda b, g, o, x, y: (g, g), 2, floating=False,
                    linear=True, inplace=_add_inplace, traces=(np.add,),
                    ir="fadd double {0}, {1}"),
        elementwise("sub", "{0} - {1}", lambda b, g, o, x, y: (g, b.neg(g)), 2, floating=False,
                    linear=True, traces=(np.subtract,),
                    ir="fsub double {0}, {1}"),
        elementwise("mul", "{0} * {1}", lambda b, g, o, x, y: (b.mul(g, y), b.mul(g, x)), 2,
                    floating=False, traces=(np.multiply,),
                    ir="fmul double {0}, {1}"),
        elementwise("div", "{0} / {1}", _div_chain, 2, domain=((-2.0, 2.0), (0.5, 2.0)),
                    traces=(np.divide, np.true_divide),
                    ir="fdiv double {0}, {1}"),
        elementwise("neg", "-{0}", lambda b, g, o, x: (b.neg(g),), 1, floating=False,
                    linear=True, traces=(np.negative,),
                    ir="fneg double {0}"),
        elementwise("pow", _pow_source, _pow_chain, 2, domain=((0.3, 2.0), (-2.0, 2.0)),
                    traces=(np.power, math.pow),
                    ir=_call("pow", 2)),
        elementwise("integer_pow", _integer_pow_source, _integer_pow_chain, 1, floating=False,
                    domain=((0.3, 2.0),),
                    ir="call double @llvm.powi.f64.i32(double {0}, i32 {n})"),
        elementwise("abs", "np.abs({0})", lambda b, g, o, x: (b.mul(g, b.sign(x)),), 1,
                    floating=False, domain=((0.1, 2.0),), traces=(np.abs, np.absolute, math.fabs),
                    ir=_call("llvm.fabs.f64", 1)),
        elementwise("exp", "np.exp({0})", lambda b, g, o, x: (b.mul(g, o),), 1,
                    traces=(np.exp, math.exp),
                    ir=_call("exp", 1)),
        elementwise("log", "np.log({0})", lambda b, g, o, x: (b.div(g, x),), 1, domain=POSITIVE,
                    traces=(np.log, math.log),
                    ir=_call("log", 1)),
        elementwise("log1p", "np.log1p({0})", lambda b, g, o, x: (b.div(g, b.add(x, 1.0)),), 1,
                    domain=((-0.5, 2.0),), traces=(np.log1p, math.log1p),
                    ir=_call("log1p", 1)),
        elementwise("expm1", "np.expm1({0})", lambda b, g, o, x: (b.mul(g, b.add(o, 1.0)),), 1,
                    traces=(np.expm1, math.expm1),
                    ir=_call("expm1", 1)),
        elementwise("sqrt", "np.sqrt({0})", lambda b, g, o, x: (b.div(g, b.mul(o, 2.0)),), 1,
                    domain=POSITIVE, traces=(np.sqrt, math.sqrt),
                    ir=_call("llvm.sqrt.f64", 1)),
        elementwise("square", "np.square({0})", lambda b, g, o, x: (b.mul(g, b.mul(x, 2.0)),), 1,
                    traces=(np.square,),
                    ir="fmul double {0}, {0}"),
        elementwise("reciprocal", "1.0 / {0}", lambda b, g, o, x: (b.neg(b.mul(g, b.mul(o, o))),),
                    1, domain=((0.5, 2.0),), traces=(np.reciprocal,),
                    ir="fdiv double 1.0, {0}"),
        elementwise("sin", "np.sin({0})", lambda b, g, o, x: (b.mul(g, b.cos(x)),), 1,
                    traces=(np.sin, math.sin),
                    ir=_call("sin", 1)),
        elementwise("cos", "np.cos({0})", lambda b, g, o, x: (b.neg(b.mul(g, b.sin(x))),), 1,
                    traces=(np.cos, math.cos),
                    ir=_call("cos", 1)),
        elementwise("tan", "np.tan({0})",
                    lambda b, g, o, x: (b.mul(g, b.add(b.mul(o, o), 1.0)),), 1,
                    domain=((-1.2, 1.2),), traces=(np.tan, math.tan),
                    ir=_call("tan", 1)),
        elementwise("tanh", "np.tanh({0})",
                    lambda b, g, o, x: (b.mul(g, b.sub(1.0, b.mul(o, o))),), 1,
                    traces=(np.tanh, math.tanh),
                    ir=_call("tanh", 1)),
        elementwise("sinh", "np.sinh({0})", lambda b, g, o, x: (b.mul(g, b.cosh(x)),), 1,
                    traces=(np.sinh, math.sinh),
                    ir=_call("sinh", 1)),
        elementwise("cosh", "np.cosh({0})", lambda b, g, o, x: (b.mul(g, b.sinh(x)),), 1,
                    traces=(np.cosh, math.cosh),
                    ir=_call("cosh", 1)),
        elementwise("arcsin", "np.arcsin({0})",
                    lambda b, g, o, x: (b.div(g, b.sqrt(b.sub(1.0, b.mul(x, x)))),), 1,
                    domain=UNIT, traces=(np.arcsin, math.asin),
                    ir=_call("asin", 1)),
        elementwise("arccos", "np.arccos({0})",
                    lambda b, g, o, x: (b.neg(b.div(g, b.sqrt(b.sub(1.0, b.mul(x, x))))),), 1,
                    domain=UNIT, traces=(np.arccos, math.acos),
                    ir=_call("acos", 1)),
        elementwise("arctan", "np.arctan({0})",
                    lambda b, g, o, x: (b.div(g, b.add(b.mul(x, x), 1.0)),), 1,
                    traces=(np.arctan, math.atan),
                    ir=_call("atan", 1)),
        elementwise("arctan2", "np.arctan2({0}, {1})", _arctan2_chain, 2,
                    domain=((0.3, 2.0), (0.3, 2.0)), traces=(np.arctan2, math.atan2),
                    ir=_call("atan2", 2)),
        elementwise("hypot", "np.hypot({0}, {1})",
                    lambda b, g, o, x, y: (b.div(b.mul(g, x), o), b.div(b.mul(g, y), o)), 2,
                    domain=((0.3, 2.0), (0.3, 2.0)), traces=(np.hypot, math.hypot),
                    ir=_call("hypot", 2)),
        elementwise("maximum", "np.maximum({0}, {1})", _extremum_chain(gt), 2, floating=False,
                    traces=(np.maximum,),
                    ir=_call("jitad_maximum", 2)),
        elementwise("minimum", "np.minimum({0}, {1})", _extremum_chain(lt), 2, floating=False,
                    traces=(np.minimum,),
                    ir=_call("jitad_minimum", 2)),
        elementwise("logaddexp", "np.logaddexp({0}, {1})",
                    lambda b, g, o, x, y: (b.mul(g, b.exp(b.sub(x, o))),
                                           b.mul(g, b.exp(b.sub(y, o)))), 2,
                    traces=(np.logaddexp,),
                    ir=_call("jitad_logaddexp", 2)),
        elementwise("select", _select_source, _select_chain, 3, shape_rule=_select_rule,
                    domain=((-1.0, 1.0), (-2.0, 2.0), (-2.0, 2.0)),
                    ir=_call("jitad_select", 3)),
        Primitive("sign", "np.sign({0})", elementwise_rule(floating=False),
                  nondifferentiable=True, traces=(np.sign,), domain=((-2.0, 2.0),),
                    ir=_call("jitad_sign", 1)),
        lt, gt,
        comparison("le", "{0} <= {1}", np.less_equal, "ole"),
        comparison("ge", "{0} >= {1}", np.greater_equal, "oge"),
        comparison("eq", "{0} == {1}", np.equal, "oeq"),
        comparison("ne", "{0} != {1}", np.not_equal, "une"),
    ]
    return prims
