"""Reductions `sum mean max min prod` over `axis` (a normalized tuple) with `keepdims`.

Sizes are read from the operand at run time (`x.shape[k]`), so a list with
reductions is reused for new array lengths.
"""
from .core import Primitive, broadcast_to_shape_of, normalize_axes, shape_text
from .shape import transpose_text

AXIS_VARIANTS = ({"axis": None, "keepdims": False}, {"axis": 0, "keepdims": False},
                 {"axis": -1, "keepdims": True}, {"axis": (0, 1), "keepdims": False})


def _normalize_axis(operands, params):
    return {**params, "axis": normalize_axes(params.get("axis"), operands[0].ndim),
            "keepdims": bool(params.get("keepdims", False))}


def reduction_rule(x, axis, keepdims):
    shape = tuple(1 if i in axis else d for i, d in enumerate(x.shape) if keepdims or i not in axis)
    dtype = "float64" if x.dtype == "bool" else x.dtype
    return dtype, shape


def is_full(x, axis, keepdims):
    return len(axis) == x.ndim and not keepdims


def kept_shape_text(x_text, x, axis, keepdims):
    """Shape expression of the result, read from the operand's run-time shape."""
    return shape_text(x_text, [1 if i in axis else ("dim", i)
                               for i in range(x.ndim) if keepdims or i not in axis])


def count_text(x_text, axis):
    return " * ".join(f"{x_text}.shape[{i}]" for i in axis) or "1"


def _axis_arg(axis):
    return str(axis[0]) if len(axis) == 1 else str(axis)


def sum_source(texts, operands, params, numpy_name="sum"):
    (x_text,), (x,) = texts, operands
    axis, keepdims = params["axis"], params["keepdims"]
    if len(axis) == x.ndim:
        total = f"np.{numpy_name}({x_text})"
        if not keepdims or x.ndim == 0:     # (a scalar is a float in generated code)
            return total
        return f"np.full({kept_shape_text(x_text, x, axis, True)}, {total})"
    text = f"np.sum({x_text}, axis={_axis_arg(axis)})"
    if numpy_name == "mean":
        text = f"({text} / ({count_text(x_text, axis)}))"
    return _kept(text, x, axis) if keepdims else text


def _kept(text, x, axis):
    """`text`, reduced over `axis`, with those axes back as size 1: a view (`t[:, None]`),
    which Numba compiles in a few instructions where a reshape costs hundreds."""
    return f"{text}[{', '.join('None' if k in axis else ':' for k in range(x.ndim))}]"


def rows_source(helper, numpy_name):
    """max/min/prod along axes: move them last, reduce rows with a runtime helper, reshape back."""
    def source(texts, operands, params):
        (x_text,), (x,) = texts, operands
        axis, keepdims = params["axis"], params["keepdims"]
        if len(axis) == x.ndim:
            return sum_source(texts, operands, params, numpy_name)
        if x.ndim == 2 and axis == (1,):    # rows already: no transpose, no reshapes
            rows = f"{helper}({x_text})"
            return _kept(rows, x, axis) if keepdims else rows
        kept = tuple(i for i in range(x.ndim) if i not in axis)
        moved = f"np.ascontiguousarray({transpose_text(x_text, x.ndim, kept + axis)})"
        # (the row count spelled out: -1 is ambiguous when a reduced axis has length 0)
        rows = f"{helper}({moved}.reshape(({count_text(x_text, kept)}, {count_text(x_text, axis)})))"
        return f"{rows}.reshape({kept_shape_text(x_text, x, axis, keepdims)})"
    return source


def expand_back(b, g, x, axis, keepdims):
    """A cotangent of the reduced result, broadcast back over the operand's shape."""
    if not keepdims and not is_full(x, axis, keepdims):
        g = b.expand_dims(g, axis=axis)
    return broadcast_to_shape_of(b, g, x)


def _sum_vjp(b, g, out, x, axis, keepdims):
    return (expand_back(b, g, x, axis, keepdims),)


def _mean_vjp(b, g, out, x, axis, keepdims):
    return (b.div(expand_back(b, g, x, axis, keepdims), b.count(x, axis=axis)),)


def _extremum_weights(b, out, x, axis, keepdims):
    """1/k on the k elements equal to the extremum (ties share the gradient), else 0."""
    hits = b.select(b.eq(x, expand_back(b, out, x, axis, keepdims)), 1.0, 0.0)
    return b.div(hits, expand_back(b, b.sum(hits, axis=axis, keepdims=keepdims), x, axis, keepdims))


def _extremum_vjp(b, g, out, x, axis, keepdims):
    return (b.mul(expand_back(b, g, x, axis, keepdims), _extremum_weights(b, out, x, axis, keepdims)),)


def _extremum_jvp(b, out, operands, tangents, axis, keepdims):
    (x,), (t,) = operands, tangents
    return b.sum(b.mul(t, _extremum_weights(b, out, x, axis, keepdims)), axis=axis, keepdims=keepdims)


def _prod_vjp(b, g, out, x, axis, keepdims):
    # d(prod)/dx_i = prod / x_i: NaN where an element is exactly 0 (documented limitation).
    return (b.div(b.mul(expand_back(b, g, x, axis, keepdims), expand_back(b, out, x, axis, keepdims)), x),)


def _prod_jvp(b, out, operands, tangents, axis, keepdims):
    (x,), (t,) = operands, tangents
    return b.mul(out, b.sum(b.div(t, x), axis=axis, keepdims=keepdims))


def _linear_jvp(name):
    return lambda b, out, operands, tangents, **p: b.bind(b.registry[name], tangents[0], **p)


def _count_source(texts, operands, params):
    return f"({count_text(texts[0], params['axis'])})"


def build():
    """The reduction records (called once by the registry)."""
    def reduction(name, source, vjp, jvp, **flags):
        return Primitive(name, source, reduction_rule, vjp, jvp, domain=((-2.0, 2.0),),
                         normalize=_normalize_axis, test_params=AXIS_VARIANTS, **flags)

    return [
        reduction("sum", sum_source, _sum_vjp, _linear_jvp("sum"), linear=True),
        reduction("mean", lambda t, o, p: sum_source(t, o, p, "mean"), _mean_vjp,
                  _linear_jvp("mean"), linear=True),
        reduction("max", rows_source("max_rows", "max"), _extremum_vjp, _extremum_jvp),
        reduction("min", rows_source("min_rows", "min"), _extremum_vjp, _extremum_jvp),
        reduction("prod", rows_source("prod_rows", "prod"), _prod_vjp, _prod_jvp),
        Primitive("count", _count_source, lambda x, axis: ("int64", ()), nondifferentiable=True,
                  normalize=lambda ops, p: {"axis": normalize_axes(p.get("axis"), ops[0].ndim)},
                  domain=((-2.0, 2.0),)),
    ]

