"""Arrays the traced function builds itself: `full` (np.zeros/ones/full inside the
function) and the functional updates that `r[i] = v` records on them: `index_update`
(static ints and slices) and `scatter` (a 1-D integer index array).

An update is a new value in the Wengert list; codegen prints it in place when the old
array is dead afterwards (always, for a chain of updates of the same array).
"""
import numpy as np

from ..errors import ShapeError
from .core import Primitive, add_into, sum_to_shape
from .shape import _indexed_shape, index_text
from ..wengert import Var


# ---------------------------------------------------------------- full

def _full_rule(value, shape):
    if value.ndim:
        raise ShapeError(f"full takes a scalar fill value, got shape {value.shape}")
    return "float64", shape


def _full_vjp(b, g, out, value, shape):
    return (b.sum(g, axis=None) if g.shape else g,)


def _full_jvp(b, out, operands, tangents, shape):
    return None if tangents[0] is None else b.full(tangents[0], shape=shape)


def _normalize_shape(operands, params):
    shape = params["shape"]
    return {"shape": (int(shape),) if np.ndim(shape) == 0 else tuple(int(d) for d in shape)}


# ---------------------------------------------------------------- index_update: acc[index] = value

def _region(acc, index):
    return _indexed_shape(acc.shape, index)


def _index_update_rule(acc, value, index):
    # A value that broadcasts is broadcast by tracing first (an explicit entry).
    region = _region(acc, index)
    if value.ndim and value.shape != region:
        raise ShapeError(f"could not broadcast input array from shape {value.shape} into "
                         f"shape {region}")
    return acc.dtype, acc.shape


def _index_update_inplace(texts, operands, params):
    target = f"{texts[0]}[{index_text(params['index'])}]"
    if operands[1].ndim == 0:
        return f"{target} = {texts[1]}"
    return f"{texts[0]}_view = {target}\n" + add_into(f"{texts[0]}_view", texts[1], operands[1],
                                                       operands[1].ndim, "=")


def _index_update_vjp(b, g, out, acc, value, index):
    # The value's cotangent is read before the region of g is zeroed, so that the zeroing
    # can happen in place; an array region is copied out (a view would keep g alive).
    value_bar = None
    if _is_var(value):
        value_bar = sum_to_shape(b, b.getitem(g, index=index), value)
        if value_bar.ndim:
            everything = (("slice", None, None, None),) * value_bar.ndim
            value_bar = b.index_update(b.full(0.0, shape=value_bar.shape), value_bar,
                                       index=everything)
    return b.index_update(g, 0.0, index=index), value_bar


def _index_update_jvp(b, out, operands, tangents, index):
    acc, value = operands
    d_acc, d_value = tangents
    if d_acc is None and d_value is None:
        return None
    d_acc = d_acc if d_acc is not None else b.full_like(acc, 0.0)
    return b.index_update(d_acc, d_value if d_value is not None else 0.0, index=index)


# ---------------------------------------------------------------- scatter: acc[idx] = value

def _scatter_rule(acc, value, idx):
    if idx.ndim != 1 or not np.issubdtype(np.dtype(idx.dtype), np.integer):
        raise ShapeError(f"an in-place update takes a 1-D integer index array, got "
                         f"{idx.dtype}{list(idx.shape)}")
    region = idx.shape + acc.shape[1:]
    if value.shape != region:
        raise ShapeError(f"could not broadcast input array from shape {value.shape} into "
                         f"shape {region}")
    return acc.dtype, acc.shape


def _scatter_vjp(b, g, out, acc, value, idx):
    value_bar = b.gather(g, idx) if _is_var(value) else None
    return b.scatter(g, _zeros_like(b, value), idx), value_bar, None


def _scatter_jvp(b, out, operands, tangents):
    acc, value, idx = operands
    d_acc, d_value = tangents[:2]
    if d_acc is None and d_value is None:
        return None
    d_acc = d_acc if d_acc is not None else b.full_like(acc, 0.0)
    d_value = d_value if d_value is not None else _zeros_like(b, value)
    return b.scatter(d_acc, d_value, idx)


def _is_var(a) -> bool:
    return isinstance(a, Var)


def _zeros_like(b, value):
    """Zeros shaped like the scatter's `value` at run time: its length is the index array's,
    which a compiled specialization does not fix (a traced-time shape would leave the
    positions past it unzeroed)."""
    return b.full_like(value, 0.0) if _is_var(value) else b.full(0.0, shape=value.shape)


def build():
    """The records of arrays built in place (called once by the registry)."""
    return [
        Primitive("full", lambda t, o, p: f"np.full({p['shape']!r}, {t[0]})", _full_rule,
                  _full_vjp, _full_jvp, linear=True, normalize=_normalize_shape,
                  domain=((-2.0, 2.0),), test_params=({"shape": (3,)},)),
        Primitive("index_update", None, _index_update_rule, _index_update_vjp,
                  _index_update_jvp, linear=True, inplace=_index_update_inplace,
                  test_params=({"index": (1,)},)),
        Primitive("scatter", None, _scatter_rule, _scatter_vjp, _scatter_jvp, linear=True,
                  inplace="scatter_set({0}, {2}, {1})"),
    ]
