"""NumPy functions as people write them, lowered to registry primitives while tracing.

Step: a NumPy call on tracers -> entries of the Wengert list (the adapters that
`tracing.Tracer.__array_function__`, `__array_ufunc__` and the traced `numpy`/`scipy`
modules dispatch to). Each adapter composes existing primitives, as `jnp.var` is built
from `lax` ops, so its derivatives follow from theirs:

* statistics and products (`var`, `std`, `cross`, `kron`, `inner`, `tensordot`, `einsum`,
  `trace`, `diff`, `gradient`, `linspace`) are elementwise arithmetic, reductions, slices
  and matrix products;
* functions that only move, repeat or zero-fill elements (`roll`, `flip`, `rot90`, `tile`,
  `repeat`, `diag`, `triu`, `pad`, advanced indexing with constant indices...) are one
  `gather` from the flattened operand, whose index array NumPy itself computes by applying
  the same function to the element positions (`_moved`); zero fill reads an appended 0.
  The gather's adjoint is `scatter_add`, so repeated elements accumulate.

Adapters that depend on concrete sizes read them through `Tracer.shape` (so the
specialization is keyed on exact shapes).
"""
from __future__ import annotations

import math
import operator
import sys
import types

import numpy as np

from . import watch
from .errors import ShapeError, TraceError
from .primitives import REGISTRY
from .primitives.core import normalize_axes
from .tracing import (Tracer, _as_tracer, _axis_index, _broadcast_into, _check_writable, _concatenate,
                      _expand_dims, _full_like, _note_view, _rebind, _reshape, _stack,
                      _state, _transpose, bind, located)


def _p(name):
    return REGISTRY[name]


def _tracer(x):
    """`x` as a Tracer (constants become hidden constant inputs; scalars stay Python floats)."""
    if isinstance(x, Tracer):
        return x
    value = np.asarray(x)
    if value.dtype.kind in "iub":
        value = value.astype(np.float64)
    return _as_tracer(value) if value.ndim else float(value)


def _ndim(x) -> int:
    return x.ndim if isinstance(x, Tracer) else np.ndim(x)


def _moveaxis(x, source, destination):
    source = normalize_axes(source, x.ndim) if isinstance(source, int) else \
        tuple(s % x.ndim for s in source)
    destination = (destination,) if isinstance(destination, int) else tuple(destination)
    destination = tuple(d % x.ndim for d in destination)
    order = [n for n in range(x.ndim) if n not in source]
    for dest, src in sorted(zip(destination, source)):
        order.insert(dest, src)
    return _transpose(x, tuple(order))


def _sum(x, axis=None, keepdims=False):
    return bind(_p("sum"), x, axis=axis, keepdims=keepdims)


def _mean(x, axis=None, keepdims=False):
    return bind(_p("mean"), x, axis=axis, keepdims=keepdims)


def _slice(x, axis, start=None, stop=None, step=None):
    """`x[..., start:stop:step, ...]` on one axis (a static getitem)."""
    index = tuple(("slice", None, None, None) for _ in range(axis)) + (("slice", start, stop, step),)
    return bind(_p("getitem"), x, index=index)


def _internal(value):
    """A constant array the adapters build (positions of a gather, a zero to read) as a
    Tracer: one hidden input per distinct value in a trace, so that a loop's iterations
    read the same input and re-roll. (Only arrays jitad builds: a user's arrays may be
    updated in place between calls, so theirs stay one input per object.)"""
    value = np.asarray(value)
    memo = _state().internal_consts
    key = (value.dtype.str, value.shape, value.tobytes())
    if key not in memo:
        value.flags.writeable = False
        memo[key] = value
    return _as_tracer(memo[key])


# ---------------------------------------------------------------- element moves as one gather

def _moved(x, move):
    """`move(x)` for a NumPy function that only moves, repeats or zero-fills elements:
    one gather from the flattened `x`, at the positions `move` gives the element numbers."""
    x = _tracer(x)
    if not isinstance(x, Tracer):
        return move(np.asarray(x, dtype=float))
    shape = x.shape                                   # reads sizes: the map is for this shape
    numbers = np.arange(1, int(np.prod(shape)) + 1, dtype=np.int64).reshape(shape)
    moved = np.asarray(move(numbers))
    positions = moved.astype(np.int64) - 1           # zero fill -> -1
    flat = _reshape(x, (-1,)) if x.ndim != 1 else x
    if positions.size and positions.min() < 0:       # -1 reads the appended zero
        flat = bind(_p("concatenate"), flat, _internal(np.zeros(1)), axis=0)
    if positions.ndim == 0:
        return bind(_p("gather"), flat, int(positions))
    out = bind(_p("gather"), flat, _internal(positions))
    if np.shares_memory(moved, numbers):    # NumPy returns a view (flip, rot90, diagonal, r[...]):
        _note_view(x, out, None)            # x's later updates must show in it, writes go to x
    return out


def _mover(function, **fixed):
    """An adapter applying `function` (with its arguments) to the element positions."""
    def adapter(x, *args, **kwargs):
        return _moved(x, lambda positions: function(positions, *args, **kwargs, **fixed))
    adapter.__name__ = function.__name__
    return adapter


_PAD_MODES = ("constant", "edge", "reflect", "symmetric", "wrap")     # (element moves)


def _pad(x, pad_width, mode="constant", constant_values=0, **kwargs):
    # Modes that compute new values (mean, linear_ramp, odd reflections...) would be
    # computed on the element positions: refused
    if not isinstance(mode, str) or mode not in _PAD_MODES or \
            kwargs.get("reflect_type", "even") != "even" or set(kwargs) - {"reflect_type"}:
        extra = f" with {sorted(kwargs)}" if kwargs else ""
        raise TraceError(located(f"np.pad(mode={mode!r}){extra} is not supported on traced "
                                 f"values (modes that move elements are: "
                                 f"{', '.join(_PAD_MODES)})"))
    if mode == "constant" and np.any(np.asarray(constant_values) != 0):
        padded = _moved(x, lambda p: np.pad(p, pad_width, mode="constant"))
        fill = np.pad(np.zeros(np.shape(x.value if isinstance(x, Tracer) else x)), pad_width,
                      mode="constant", constant_values=constant_values)
        return padded + fill
    return _moved(x, lambda p: np.pad(p, pad_width, mode=mode, **kwargs))


def _triangle(function):
    def adapter(m, k=0):
        return _moved(m, lambda p: function(p, k))
    adapter.__name__ = function.__name__
    return adapter


def _trace(a, offset=0, axis1=0, axis2=1, dtype=None, out=None):
    _refuse("trace", dtype=_float_dtype(dtype), out=out)
    diagonal = _moved(a, lambda p: np.diagonal(p, offset, axis1, axis2))
    return _sum(diagonal, axis=-1)


def _take(a, indices, axis=None, out=None, mode="raise"):
    _refuse("take", out=out)
    if mode != "raise" and isinstance(indices, Tracer):
        raise TraceError(located(f"np.take(mode={mode!r}) with traced indices is not supported "
                                 "(mode='raise' is)"))
    if isinstance(indices, Tracer):
        a = _tracer(a)
        if axis is None:
            return bind(_p("gather"), _reshape(a, (-1,)), indices)
        moved = _moveaxis(a, axis, 0)
        out = bind(_p("gather"), moved, indices, **_named_axis(axis % a.ndim))
        return _moveaxis(out, tuple(range(indices.ndim)), tuple(range(axis, axis + indices.ndim))) \
            if axis % a.ndim else out
    return _moved(a, lambda p: np.take(p, indices, axis=axis, mode=mode))


def _named_axis(axis) -> dict:
    """A gather's `axis` parameter: the user's axis its IndexError names (none for 0)."""
    return {"axis": axis} if axis else {}


def advanced_getitem(x, index):
    """`x[index]` with index arrays: constant indices (integer or boolean) are one gather;
    traced integer arrays select along one axis (`A[:, idx]`), several (`A[i, j]`), or mix
    with slices and ints anywhere (`Q[:, i, j]`, `A[i, 1:3]`: one gather, `_gather_at`).
    Traced boolean masks are frozen (`_frozen_masks`)."""
    items = _frozen_masks(index if isinstance(index, tuple) else (index,))
    traced = [k for k, item in enumerate(items) if isinstance(item, Tracer)]
    if not traced:          # constant indices and masks: the positions are fixed by the trace
        return _moved(x, lambda p: p[tuple(np.asarray(i) if isinstance(i, list) else i
                                           for i in items)])
    for k in traced:
        if items[k].node.dtype != "int64":
            raise TraceError(located(
                f"indexing with a traced {items[k].node.dtype} array: a traced boolean mask "
                "selects a data-dependent number of elements; use np.where(mask, x, 0) "
                "(or index with integer arrays)"))
    full = [k for k, item in enumerate(items) if isinstance(item, slice) and item == slice(None)]
    if len(traced) == 1 and len(full) == len(items) - 1:        # A[:, idx], A[:, :, idx]
        axis = traced[0]
        moved = _moveaxis(x, axis, 0)
        out = bind(_p("gather"), moved, items[axis], **_named_axis(axis))
        depth = items[axis].ndim
        if not axis:
            return out
        out = _moveaxis(out, tuple(range(depth)), tuple(range(axis, axis + depth)))
        out.base = None         # a copy, as NumPy's (not a view of anything the code holds):
        return out              # `A[:, idx] *= 2` updates it, then writes it back into A
    if len(items) <= x.ndim and all(isinstance(item, (Tracer, int, np.integer, list, np.ndarray))
                                    and not isinstance(item, bool) for item in items):
        shape = x.shape                                       # A[i, j], A[i, 0]: a flat index
        _check_index_shapes(items)
        flat_index = None
        for k, item in enumerate(items):
            stride = int(np.prod(shape[k + 1:len(items)]))
            if not isinstance(item, Tracer):
                item = _as_tracer(np.asarray(item, dtype=np.int64)) if np.ndim(item) else \
                    int(np.arange(shape[k])[item])            # NumPy's IndexError if outside
            wrapped = item if isinstance(item, int) else _wrapped_index(item, shape[k], k)
            term = wrapped if stride == 1 else wrapped * stride
            flat_index = term if flat_index is None else flat_index + term
        rows = _reshape(x, (-1,) + tuple(shape[len(items):]))
        return bind(_p("gather"), rows, flat_index)
    return _gather_at(x, items)


def _check_index_shapes(items):
    """NumPy's IndexError for index arrays whose shapes do not broadcast together."""
    shapes = [_index_shape(item) for item in items if _is_array(item)]
    try:
        np.broadcast_shapes(*shapes)
    except ValueError:
        raise IndexError(located(
            "shape mismatch: indexing arrays could not be broadcast together with shapes " +
            " ".join(str(s).replace(" ", "") for s in shapes))) from None


def is_advanced(items) -> bool:
    """Whether an index needs `advanced_getitem` (not a plain int/slice/None index)."""
    if len(items) == 1 and isinstance(items[0], (Tracer, np.ndarray, list)):
        item = items[0]         # one index array: a gather, unless it is a mask
        return np.asarray(item.value if isinstance(item, Tracer) else item).dtype.kind == "b"
    return any(item is Ellipsis or isinstance(item, (np.ndarray, list, Tracer)) for item in items)


# ---------------------------------------------------------------- index arrays anywhere
#
# `x[items]` with integer index arrays (traced or constant) mixed with ints, slices, None
# and Ellipsis is one gather from the flattened `x` at flat positions: NumPy computes the
# constant part (every traced array replaced by zeros) and the result's shape; each traced
# array adds `checked index * stride`, placed where NumPy puts the advanced dimensions
# (in place when the array and int indices are adjacent, else in front). Updates scatter
# into the flattened array at the same positions.

def _wrapped_index(index, size, axis):
    """A traced integer index checked against `size`, the size of `axis` (IndexError at call
    time), negative entries wrapped (the generated code's check does not wrap them)."""
    checked = bind(_p("checked_axis_index"), index, size=size, axis=axis)
    return bind(_p("select"), checked < 0, checked + size, checked)


def _frozen_masks(items):
    """`items` with each traced boolean mask replaced by its value now, guarded: the code is
    for this mask only (another mask at call time fails the guard and retraces)."""
    if not any(isinstance(item, Tracer) and item.node.dtype == "bool" for item in items):
        return items
    frozen = []
    for item in items:
        if isinstance(item, Tracer) and item.node.dtype == "bool":
            now = np.asarray(item.value, dtype=bool)
            if now.ndim == 0:
                raise TraceError(located("indexing with a traced boolean scalar is not supported"))
            mismatches = _sum(bind(_p("select"), item, _as_tracer((~now).astype(np.float64)),
                                   _as_tracer(now.astype(np.float64))))
            bool(mismatches == 0.0)     # records the guard (at the user's line)
            item = now
        frozen.append(item)
    return tuple(frozen)


def _is_array(item) -> bool:
    return isinstance(item, (Tracer, np.ndarray, list)) or \
        (isinstance(item, (int, np.integer)) and not isinstance(item, bool))


def _index_shape(item):
    if isinstance(item, Tracer):
        return item.node.shape
    return (int(np.count_nonzero(item)),) if np.asarray(item).dtype == bool else np.shape(item)


def _positions(shape, items):
    """(constant flat positions, traced position terms) of `x[items]` for `x` of `shape`."""
    items = tuple(np.asarray(i) if isinstance(i, list) else i for i in items)
    if any(isinstance(i, bool) for i in items):
        raise TraceError(located("indexing with a Python bool is not supported"))
    consumed = [0 if i is None or i is Ellipsis else
                (i.ndim if isinstance(i, np.ndarray) and i.dtype == bool else 1) for i in items]
    fill = len(shape) - sum(consumed)
    placeholder = tuple(np.zeros(i.node.shape, np.int64) if isinstance(i, Tracer) else i
                        for i in items)
    numbers = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)
    _check_index_shapes(items)
    base = numbers[placeholder]                 # NumPy's IndexError for the constant parts
    advanced = [k for k, i in enumerate(items) if _is_array(i)]
    block = np.broadcast_shapes(*[_index_shape(items[k]) for k in advanced])
    if advanced and advanced == list(range(advanced[0], advanced[-1] + 1)):
        front = sum(fill if items[k] is Ellipsis else 1 for k in range(advanced[0]))
    else:
        front = 0
    if base.shape[front:front + len(block)] != block:
        raise TraceError(located(f"unsupported index on a traced array of shape {shape}"))
    terms = []
    for k, item in enumerate(items):
        if not isinstance(item, Tracer):
            continue
        if item.node.dtype != "int64":
            raise TraceError(located(f"indexing with a traced {item.node.dtype} array: "
                                     "indices must be integers"))
        axis = sum(consumed[:k]) + (fill if any(i is Ellipsis for i in items[:k]) else 0)
        stride = int(np.prod(shape[axis + 1:]))
        term = _wrapped_index(item, shape[axis], axis)
        term = term * stride if stride != 1 else term
        placed = (1,) * (front + len(block) - item.ndim) + item.node.shape + \
            (1,) * (base.ndim - front - len(block))
        terms.append(_reshape(term, placed) if placed != item.node.shape else term)
    return base, terms


def _flat_index(base, terms):
    index = _internal(base) if base.ndim else int(base)
    for term in terms:
        index = term + index
    return index


def _gather_at(x, items):
    """`x[items]` (index arrays anywhere) as one gather from the flattened `x`."""
    base, terms = _positions(x.shape, items)
    flat = _reshape(x, (-1,)) if x.ndim != 1 else x
    index = _flat_index(base, terms)
    if isinstance(index, Tracer) and index.node.shape != base.shape:
        index = index + _internal(np.zeros(base.shape, np.int64))
    return bind(_p("gather"), flat, index)


def _flat_operands(target, items, value):
    """(flat positions, flat values) of an update `target[items] (op)= value`; constant
    positions stay a NumPy array, traced ones are a Tracer (None: nothing is updated)."""
    base, terms = _positions(target.shape, _frozen_masks(items))
    value = _broadcast_into(value, base.shape, exact=True)
    size = int(base.size)
    if size == 0:
        return None, None
    value = _reshape(value, (size,)) if isinstance(value, Tracer) else \
        np.reshape(np.asarray(value, dtype=np.float64), (size,))
    if not terms:
        return base.reshape(size), value
    index = _flat_index(base, terms)
    if index.node.shape != base.shape:
        index = index + _internal(np.zeros(base.shape, np.int64))
    return (_reshape(index, (size,)) if base.ndim != 1 else index), value


def _update_flat(target, prim_name, value, index):
    """`target` becomes `prim(flat target, value, index)` in its own shape."""
    index = _internal(index) if isinstance(index, np.ndarray) else index
    flat = _reshape(target, (-1,)) if target.ndim != 1 else Tracer(target.node, target.value)
    new = bind(_p(prim_name), flat, value, index)
    _rebind(target, _reshape(new, target.node.shape) if target.ndim != 1 else new)


def advanced_setitem(target, items, value):
    """`target[items] = value` with index arrays or masks: a scatter into the flattened array.
    Repeated constant positions keep the last write (as NumPy); repeated traced positions
    raise at call time (the scatter's check)."""
    index, value = _flat_operands(target, items, value)
    if index is None:
        return
    if isinstance(index, np.ndarray):
        last = index.size - 1 - np.unique(index[::-1], return_index=True)[1]
        if last.size < index.size:                  # NumPy keeps each position's last write
            keep = np.sort(last)
            index = index[keep]
            value = bind(_p("gather"), value, _as_tracer(keep)) if isinstance(value, Tracer) \
                else value[keep]
    _update_flat(target, "scatter", value, index)


def ufunc_at(ufunc, a, indices, b=None):
    """`np.add.at(a, indices, b)` / `np.subtract.at`: unbuffered, so repeated positions
    accumulate (one scatter-add into the flattened array `a`, which the function made)."""
    if ufunc not in (np.add, np.subtract) or b is None:
        raise TraceError(located(f"unsupported operation on a traced value: np.{ufunc.__name__}"
                                 ".at (np.add.at and np.subtract.at are supported)"))
    if not isinstance(a, Tracer):
        raise TraceError(located(f"np.{ufunc.__name__}.at into an array jitad does not trace: "
                                 "make it inside the function (np.zeros...)"))
    _check_writable(a, f"np.{ufunc.__name__}.at")
    if ufunc is np.subtract:
        b = -b if isinstance(b, Tracer) else -np.asarray(b, dtype=np.float64)
    index, value = _flat_operands(a, indices if isinstance(indices, tuple) else (indices,), b)
    if index is not None:
        _update_flat(a, "scatter_add", value, index)


# ---------------------------------------------------------------- shape helpers

def _atleast(ndim):
    def shaped(x):
        x = _tracer(x)
        if not isinstance(x, Tracer) or x.ndim >= ndim:
            return x
        shape = x.node.shape
        if ndim == 1:
            new = (1,)
        elif ndim == 2:
            new = (1,) + shape if x.ndim == 1 else (1, 1)
        else:
            new = {0: (1, 1, 1), 1: (1,) + shape + (1,), 2: shape + (1,)}[x.ndim]
        return _reshape(x, new)

    def adapter(*arrays):
        out = [shaped(a) for a in arrays]
        return out[0] if len(out) == 1 else out
    adapter.__name__ = f"atleast_{ndim}d"
    return adapter


_atleast_1d, _atleast_2d, _atleast_3d = _atleast(1), _atleast(2), _atleast(3)


def _tracers(arrays):
    return [a if isinstance(a, Tracer) else _as_tracer(np.asarray(a, dtype=float)) for a in arrays]


def _vstack(tup, **kwargs):
    return _concatenate([_atleast_2d(a) for a in _tracers(tup)], axis=0)


def _hstack(tup, **kwargs):
    arrays = [_atleast_1d(a) for a in _tracers(tup)]
    return _concatenate(arrays, axis=0 if arrays[0].ndim == 1 else 1)


def _dstack(tup):
    return _concatenate([_atleast_3d(a) for a in _tracers(tup)], axis=2)


def _column_stack(tup):
    arrays = [a if a.ndim >= 2 else _reshape(_atleast_1d(a), (-1, 1)) for a in _tracers(tup)]
    return _concatenate(arrays, axis=1)


def _append(arr, values, axis=None):
    arr, values = _tracers([arr, values])
    if axis is None:
        return _concatenate([_reshape(arr, (-1,)), _reshape(values, (-1,))], axis=0)
    return _concatenate([arr, values], axis=axis)


def _swapaxes(a, axis1, axis2):
    order = list(range(a.ndim))
    axis1, axis2 = _axis_index(axis1, a.ndim), _axis_index(axis2, a.ndim)
    order[axis1], order[axis2] = order[axis2], order[axis1]
    return _transpose(a, tuple(order))


def _rollaxis(a, axis, start=0):
    axis = _axis_index(axis, a.ndim)
    if not -a.ndim <= start <= a.ndim:      # (NumPy's check: start may be ndim)
        raise np.exceptions.AxisError(located(
            f"rollaxis: start {start} is out of bounds for array of dimension {a.ndim}"))
    start = start if start >= 0 else start + a.ndim
    if axis < start:
        start -= 1
    return _moveaxis(a, axis, start) if axis != start else a


def _split_points(length, indices_or_sections, exact):
    if isinstance(indices_or_sections, (int, np.integer)):
        sections = int(indices_or_sections)
        if sections <= 0:
            raise ValueError(located("number sections must be larger than 0."))
        if exact and length % sections:
            raise ValueError(located("array split does not result in an equal division"))
        sizes = [length // sections + (1 if k < length % sections else 0) for k in range(sections)]
        return list(np.cumsum([0] + sizes))
    return [0] + [int(i) for i in indices_or_sections] + [length]


def _splitter(exact=True, fixed_axis=None):
    def adapter(ary, indices_or_sections, axis=0):
        ary = _tracer(ary)
        if fixed_axis is not None:
            axis = fixed_axis if not (fixed_axis == 1 and ary.ndim == 1) else 0
        axis = _axis_index(axis, ary.ndim)
        points = _split_points(ary.shape[axis], indices_or_sections, exact)
        return [_slice(ary, axis, start, stop) for start, stop in zip(points[:-1], points[1:])]
    return adapter


# ---------------------------------------------------------------- arithmetic compositions

def _refuse(name, **given):
    """A TraceError naming the arguments of np.<name> jitad does not compute (they would
    be ignored: a silently different result)."""
    named = sorted(k for k, v in given.items() if v is not None)
    if named:
        raise TraceError(located(f"np.{name}: unsupported arguments {named} on traced values"))


def _float_dtype(dtype):
    """None where `dtype` is None or float64 (what jitad computes in), else `dtype`."""
    return None if dtype is None or np.dtype(dtype) == np.float64 else dtype


def _var(a, axis=None, dtype=None, out=None, ddof=0, keepdims=False, *, where=None, mean=None,
         correction=None):
    return _variance("var", a, axis, dtype, out, ddof, keepdims, where, mean, correction)


def _variance(name, a, axis, dtype, out, ddof, keepdims, where, mean, correction):
    _refuse(name, dtype=_float_dtype(dtype), out=out, where=None if where is True else where,
            mean=mean)
    if correction is not None:              # (NumPy 2's name for ddof)
        if ddof:
            raise TraceError(located(f"np.{name}: ddof and correction cannot both be given"))
        ddof = correction
    a = _tracer(a)
    deviation = a - _mean(a, axis=axis, keepdims=True)
    squares = deviation * deviation
    if ddof:
        count = int(np.prod([a.shape[k] for k in normalize_axes(axis, a.ndim)]))
        # NumPy divides by max(n - ddof, 0): inf or NaN, never a negative count
        return _sum(squares, axis=axis, keepdims=keepdims) / float(max(count - ddof, 0))
    return _mean(squares, axis=axis, keepdims=keepdims)


def _std(a, axis=None, dtype=None, out=None, ddof=0, keepdims=False, *, where=None,
         mean=None, correction=None):
    # sqrt of the variance, 0 where the variance is 0: the same values, and a gradient of 0
    # there (over one element std is constant; at equal elements, a kink, like abs'(0) = 0)
    # instead of sqrt'(0) * 0 = NaN
    variance = _variance("std", a, axis, dtype, out, ddof, keepdims, where, mean, correction)
    return bind(_p("select"), bind(_p("eq"), variance, 0.0), 0.0, bind(_p("sqrt"), variance))


def _cross(a, b, axisa=-1, axisb=-1, axisc=-1, axis=None):
    if axis is not None:
        axisa = axisb = axisc = axis
    a, b = _tracers([a, b])
    a, b = _moveaxis(a, axisa, 0), _moveaxis(b, axisb, 0)
    if a.shape[0] not in (2, 3) or b.shape[0] not in (2, 3):
        raise ShapeError(located("np.cross: incompatible dimensions for cross product "
                                 "(dimension must be 2 or 3)"))
    ax = [a[k] for k in range(a.shape[0])] + ([0.0] if a.shape[0] == 2 else [])
    bx = [b[k] for k in range(b.shape[0])] + ([0.0] if b.shape[0] == 2 else [])
    z = ax[0] * bx[1] - ax[1] * bx[0]
    if a.shape[0] == 2 and b.shape[0] == 2:
        return z
    parts = [ax[1] * bx[2] - ax[2] * bx[1], ax[2] * bx[0] - ax[0] * bx[2], z]
    out = _stack(parts, axis=0)
    return _moveaxis(out, 0, axisc) if out.ndim > 1 else out


def _kron(a, b):
    a, b = _tracers([a, b])
    ndim = max(a.ndim, b.ndim)
    a = _reshape(a, (1,) * (ndim - a.ndim) + a.shape) if a.ndim < ndim else a
    b = _reshape(b, (1,) * (ndim - b.ndim) + b.shape) if b.ndim < ndim else b
    a_wide = _reshape(a, tuple(d for n in a.shape for d in (n, 1)))
    b_wide = _reshape(b, tuple(d for n in b.shape for d in (1, n)))
    return _reshape(a_wide * b_wide, tuple(m * n for m, n in zip(a.shape, b.shape)))


def _contract(a, b, axes_a, axes_b):
    """tensordot: move the summed axes together, reshape to matrices, one matrix product."""
    free_a = [k for k in range(a.ndim) if k not in axes_a]
    free_b = [k for k in range(b.ndim) if k not in axes_b]
    size = int(np.prod([a.shape[k] for k in axes_a]))
    if [a.shape[k] for k in axes_a] != [b.shape[k] for k in axes_b]:
        raise ShapeError(located("shape-mismatch for sum"))
    rows = int(np.prod([a.shape[k] for k in free_a]))   # (not -1: the sizes may be 0)
    cols = int(np.prod([b.shape[k] for k in free_b]))
    left = _reshape(_transpose(a, tuple(free_a + list(axes_a))), (rows, size))
    right = _reshape(_transpose(b, tuple(list(axes_b) + free_b)), (size, cols))
    product = bind(_p("matmul"), left, right)
    return _reshape(product, tuple(a.shape[k] for k in free_a) + tuple(b.shape[k] for k in free_b))


def _tensordot(a, b, axes=2):
    a, b = _tracers([a, b])
    if isinstance(axes, (int, np.integer)):
        axes_a, axes_b = list(range(a.ndim - axes, a.ndim)), list(range(axes))
    else:
        axes_a, axes_b = ([axes[0]] if isinstance(axes[0], int) else list(axes[0]),
                          [axes[1]] if isinstance(axes[1], int) else list(axes[1]))
    return _contract(a, b, [_axis_index(k, a.ndim) for k in axes_a],
                     [_axis_index(k, b.ndim) for k in axes_b])


def _inner(a, b):
    if _ndim(a) == 0 or _ndim(b) == 0:
        return a * b
    a, b = _tracers([a, b])
    return _contract(a, b, [a.ndim - 1], [b.ndim - 1])


def _vdot(a, b):
    a, b = _tracers([a, b])
    return bind(_p("matmul"), _reshape(a, (-1,)), _reshape(b, (-1,)))


def _einsum(subscripts, *operands, optimize=False, **kwargs):
    if not isinstance(subscripts, str) or "..." in subscripts or kwargs:
        raise TraceError(located("np.einsum on traced values takes explicit subscripts "
                                 "without '...' (e.g. 'ij,jk->ik')"))
    subscripts = subscripts.replace(" ", "")
    inputs, _, output = subscripts.partition("->")
    terms = inputs.split(",")
    if "->" not in subscripts:
        letters = "".join(terms)
        output = "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
    operands = _tracers(operands)
    if len(terms) != len(operands):
        raise ShapeError(located("np.einsum: more operands than subscripts or fewer"))
    # Repeated letters within one term (a diagonal, 'ii->i') become a gather first.
    for k, term in enumerate(terms):
        if len(set(term)) != len(term):
            operands[k], terms[k] = _einsum_diagonal(operands[k], term)
    term, operand = terms[0], operands[0]
    for k in range(1, len(terms)):
        later = "".join(terms[k + 1:]) + output
        term, operand = _einsum_pair(term, operand, terms[k], operands[k], later)
    # Sum the letters the output lacks, then order the axes as the output asks.
    gone = tuple(n for n, c in enumerate(term) if c not in output)
    if gone:
        operand = _sum(operand, axis=gone)
        term = "".join(c for c in term if c in output)
    return _transpose(operand, tuple(term.index(c) for c in output)) if len(output) > 1 else operand


def _einsum_diagonal(x, term):
    letters = "".join(dict.fromkeys(term))
    spec = f"{term}->{letters}"
    return _moved(x, lambda p: np.einsum(spec, p)), letters


def _einsum_pair(ta, a, tb, b, later):
    """Contract two einsum operands: batch letters, summed letters and free letters."""
    keep = set(later)
    # Sum letters only one side has and nothing later needs.
    for side in (0, 1):
        term, x, other = (ta, a, tb) if side == 0 else (tb, b, ta)
        gone = tuple(n for n, c in enumerate(term) if c not in keep and c not in other)
        if gone:
            x = _sum(x, axis=gone)
            term = "".join(c for c in term if c not in [term[n] for n in gone])
        ta, a = (term, x) if side == 0 else (ta, a)
        tb, b = (term, x) if side == 1 else (tb, b)
    shared = [c for c in ta if c in tb]
    batch = [c for c in shared if c in keep]
    summed = [c for c in shared if c not in keep]
    free_a = [c for c in ta if c not in shared]
    free_b = [c for c in tb if c not in shared]
    size = {c: n for t, x in ((ta, a), (tb, b)) for c, n in zip(t, x.shape)}
    for c in shared:
        if a.shape[ta.index(c)] != b.shape[tb.index(c)]:
            raise ShapeError(located(f"np.einsum: operands disagree on the size of '{c}'"))
    count = lambda letters: int(np.prod([size[c] for c in letters]))  # noqa: E731
    left = _transpose(a, tuple(ta.index(c) for c in batch + free_a + summed))
    right = _transpose(b, tuple(tb.index(c) for c in batch + summed + free_b))
    shape = (count(batch), count(free_a), count(summed))
    left = _reshape(left, shape)
    right = _reshape(right, (count(batch), count(summed), count(free_b)))
    product = _batched_matmul(left, right) if count(batch) != 1 else _reshape(
        bind(_p("matmul"), _reshape(left, shape[1:]), _reshape(right, right.shape[1:])),
        (1, shape[1], count(free_b)))
    term = "".join(batch + free_a + free_b)
    return term, _reshape(product, tuple(size[c] for c in term))


def _batched_matmul(a, b):
    return bind(_p("batch_matmul"), a, b)


def matmul(a, b):
    """`a @ b`, with operands of 3 or more dimensions as a stack of matrix products
    (batch axes broadcast); 1-D and 2-D operands are `matmul` (BLAS) directly."""
    if _ndim(a) <= 2 and _ndim(b) <= 2:
        return bind(_p("matmul"), a, b)
    a, b = _tracers([a, b])
    vector_a, vector_b = a.ndim == 1, b.ndim == 1
    if vector_a:
        a = _reshape(a, (1,) + a.shape)
    if vector_b:
        b = _reshape(b, b.shape + (1,))
    try:
        batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ValueError:
        raise ShapeError(located(f"matmul: batch dimensions of shapes {a.shape} and {b.shape} "
                                 "do not broadcast")) from None
    a = _broadcast_batch(a, batch)
    b = _broadcast_batch(b, batch)
    size = int(np.prod(batch))
    product = _batched_matmul(_reshape(a, (size,) + a.shape[-2:]), _reshape(b, (size,) + b.shape[-2:]))
    out = _reshape(product, batch + product.shape[1:])
    if vector_a:
        out = _reshape(out, out.shape[:-2] + out.shape[-1:])
    if vector_b:
        out = _reshape(out, out.shape[:-1])
    return out


def _broadcast_batch(x, batch):
    shape = batch + x.shape[-2:]
    if x.shape == shape:
        return x
    return bind(_p("broadcast_like"), x, _internal(np.zeros(shape)))


def _diff(a, n=1, axis=-1, prepend=None, append=None):
    n = operator.index(n)
    if n == 0:              # NumPy returns `a` itself: prepend and append are not added
        return a
    if n < 0:
        raise ValueError(located(f"np.diff: order must be non-negative but got {n}"))
    a = _tracer(a)
    if _ndim(a) == 0:
        raise ValueError(located("np.diff requires input that is at least one dimensional"))
    axis = _axis_index(axis, a.ndim)
    parts = [a]
    for extra, at in ((prepend, 0), (append, 1)):
        if extra is not None:
            extra = _tracer(extra)
            if _ndim(extra) == 0:
                shape = list(a.shape)
                shape[axis] = 1
                extra = _full_like(_as_tracer(np.zeros(shape)), extra) \
                    if isinstance(extra, Tracer) else _as_tracer(np.full(shape, extra))
            parts.insert(0 if at == 0 else len(parts), extra)
    if len(parts) > 1:
        a = _concatenate(_tracers(parts), axis=axis)
    for _ in range(n):
        a = _slice(a, axis, 1, None) - _slice(a, axis, None, -1)
    return a


def _gradient(f, *varargs, axis=None, edge_order=1):
    f = _tracer(f)
    if edge_order != 1:
        raise TraceError(located("np.gradient on traced values supports edge_order=1"))
    axes = normalize_axes(axis, f.ndim) if axis is not None else tuple(range(f.ndim))
    if isinstance(axis, int):
        axes = (axis % f.ndim,)
    spacings = list(varargs) if len(varargs) > 1 else [varargs[0] if varargs else 1.0] * len(axes)
    results = []
    for k, h in zip(axes, spacings):
        if np.ndim(h if not isinstance(h, Tracer) else h.value) != 0:
            raise TraceError(located("np.gradient on traced values takes scalar spacings"))
        if f.shape[k] < 2:
            raise ValueError(located("Shape of array too small to calculate a numerical "
                                     "gradient, at least (edge_order + 1) elements are required."))
        inner = (_slice(f, k, 2, None) - _slice(f, k, None, -2)) / (h * 2.0)
        first = (_slice(f, k, 1, 2) - _slice(f, k, 0, 1)) / h
        last = (_slice(f, k, -1, None) - _slice(f, k, -2, -1)) / h
        results.append(_concatenate([first, inner, last], axis=k) if f.shape[k] > 2 else
                       _concatenate([first, last], axis=k))
    return results[0] if len(results) == 1 else tuple(results)


def _linspace(start, stop, num=50, endpoint=True, retstep=False, dtype=None, axis=0):
    _refuse("linspace", dtype=_float_dtype(dtype))
    steps = np.linspace(0.0, 1.0, num, endpoint=endpoint)
    shape = np.broadcast_shapes(np.shape(_value(start)), np.shape(_value(stop)))
    steps = steps.reshape((-1,) + (1,) * len(shape))
    out = start + (stop - start) * _as_tracer(steps)
    if axis not in (0, -len(shape) - 1) and shape:
        out = _moveaxis(out, 0, axis)
    if retstep:
        return out, (stop - start) / float(num - 1 if endpoint else num)
    return out


def _value(x):
    return x.value if isinstance(x, Tracer) else x


def _nan_to_num(x, copy=True, nan=0.0, posinf=None, neginf=None):
    big = np.finfo(np.float64).max
    posinf, neginf = (big if posinf is None else posinf), (-big if neginf is None else neginf)
    x = bind(_p("select"), bind(_p("ne"), x, x), float(nan), x)
    x = bind(_p("select"), bind(_p("eq"), x, math.inf), float(posinf), x)
    return bind(_p("select"), bind(_p("eq"), x, -math.inf), float(neginf), x)


def _round(a, decimals=0, out=None):
    _refuse("round", out=out)
    if decimals == 0:
        return bind(_p("rint"), a)
    scale = 10.0 ** decimals
    return bind(_p("rint"), a * scale) / scale


def _sort(a, axis=-1, kind=None, order=None, **kwargs):
    a = _tracer(a)
    if axis is None:
        a, axis = _reshape(a, (-1,)), 0
    moved = _moveaxis(a, axis, -1)
    flat = _reshape(moved, (-1,)) if moved.ndim != 1 else moved
    permutation = bind(_p("sort_permutation"), moved)      # flat positions, row by row
    out = bind(_p("gather"), flat, permutation)
    return _moveaxis(out, -1, axis)


def _partition(a, kth, axis=-1, kind=None, order=None):
    # A full sort is a valid partition for every kth (NumPy leaves the order within
    # the two sides unspecified).
    return _sort(a, axis=axis)


def _cumulative(name):
    def adapter(a, axis=None, dtype=None, out=None):
        _refuse(name, dtype=_float_dtype(dtype), out=out)
        a = _tracer(a)
        if axis is None:
            a, axis = (_reshape(a, (-1,)) if a.ndim != 1 else a), 0
        return bind(_p(name), a, axis=_axis_index(axis, a.ndim))
    adapter.__name__ = name
    return adapter


def _xlogy(x, y):
    return bind(_p("xlogy"), x, y)


def _xlog1py(x, y):
    return bind(_p("xlog1py"), x, y)


def logsumexp(a, axis=None, b=None, keepdims=False, return_sign=False):
    """scipy.special.logsumexp: max-shifted, so large inputs do not overflow."""
    if return_sign:
        raise TraceError(located("scipy.special.logsumexp(return_sign=True) is not supported "
                                 "on traced values"))
    a = _tracer(a)
    if not isinstance(a, Tracer):
        raise TraceError(located("logsumexp of constants"))
    if 0 in [a.shape[k] for k in normalize_axes(axis, a.ndim)]:   # empty sums: log 0 = -inf
        terms = bind(_p("exp"), a) if b is None else bind(_p("exp"), a) * b
        total = bind(_p("log"), _sum(terms, axis=axis, keepdims=True))
        return total if keepdims else _squeeze_axes(total, axis, a.ndim)
    shift = bind(_p("max"), a, axis=axis, keepdims=True)
    # any finite shift gives the same value; a non-finite maximum (an inf entry, or all
    # entries -inf) shifts by 0, as SciPy does, so the value is inf / -inf, not inf - inf
    shift = bind(_p("select"), bind(_p("lt"), bind(_p("abs"), shift), math.inf), shift, 0.0)
    shift = bind(_p("stop_gradient"), shift)
    terms = bind(_p("exp"), a - shift)
    if b is not None:
        terms = terms * b
    total = bind(_p("log"), _sum(terms, axis=axis, keepdims=True)) + shift
    return total if keepdims else _squeeze_axes(total, axis, a.ndim)


def _squeeze_axes(x, axis, ndim):
    axes = normalize_axes(axis, ndim)
    return _reshape(x, tuple(d for k, d in enumerate(x.node.shape) if k not in axes))


def softmax(x, axis=None):
    """scipy.special.softmax."""
    x = _tracer(x)
    shifted = x - bind(_p("stop_gradient"), bind(_p("max"), x, axis=axis, keepdims=True))
    e = bind(_p("exp"), shifted)
    return e / _sum(e, axis=axis, keepdims=True)


def log_softmax(x, axis=None):
    """scipy.special.log_softmax."""
    x = _tracer(x)
    shifted = x - bind(_p("stop_gradient"), bind(_p("max"), x, axis=axis, keepdims=True))
    return shifted - bind(_p("log"), _sum(bind(_p("exp"), shifted), axis=axis, keepdims=True))


# ---------------------------------------------------------------- the dispatch tables

def _flip(m, axis=None):
    return _moved(m, lambda p: np.flip(p, axis))


FUNCTIONS = {
    np.var: _var,
    np.std: _std,
    np.cross: _cross,
    np.kron: _kron,
    np.einsum: _einsum,
    np.tensordot: _tensordot,
    np.inner: _inner,
    np.vdot: _vdot,
    np.matmul: matmul,
    np.repeat: _mover(np.repeat),
    np.tile: _mover(np.tile),
    np.roll: _mover(np.roll),
    np.flip: _flip,
    np.fliplr: _mover(np.fliplr),
    np.flipud: _mover(np.flipud),
    np.rot90: _mover(np.rot90),
    np.diag: _mover(np.diag),
    np.diagonal: _mover(np.diagonal),
    np.diagflat: _mover(np.diagflat),
    np.triu: _triangle(np.triu),
    np.tril: _triangle(np.tril),
    np.pad: _pad,
    np.take: _take,
    np.trace: _trace,
    np.gradient: _gradient,
    np.diff: _diff,
    np.swapaxes: _swapaxes,
    np.moveaxis: _moveaxis,
    np.rollaxis: _rollaxis,
    np.linspace: _linspace,
    np.split: _splitter(exact=True),
    np.array_split: _splitter(exact=False),
    np.hsplit: _splitter(fixed_axis=1),
    np.vsplit: _splitter(fixed_axis=0),
    np.dsplit: _splitter(fixed_axis=2),
    np.atleast_1d: _atleast_1d,
    np.atleast_2d: _atleast_2d,
    np.atleast_3d: _atleast_3d,
    np.vstack: _vstack,
    np.hstack: _hstack,
    np.dstack: _dstack,
    np.column_stack: _column_stack,
    np.append: _append,
    np.cumsum: _cumulative("cumsum"),
    np.cumprod: _cumulative("cumprod"),
    np.sort: _sort,
    np.partition: _partition,
    np.round: _round,
    np.around: _round,
    np.nan_to_num: _nan_to_num,
    np.sinc: lambda x: bind(_p("sinc"), x),
    np.dot: lambda a, b: a * b if _ndim(a) == 0 or _ndim(b) == 0 else      # (a scalar)
    matmul(a, b) if _ndim(a) <= 2 and _ndim(b) <= 2 else _tensordot(
        a, b, axes=([-1], [max(_ndim(b) - 2, 0)])),
}
if hasattr(np, "row_stack"):
    FUNCTIONS[getattr(np, "row_stack")] = _vstack

# Ufuncs with no primitive of their own: compositions (scipy.special's are ufuncs too).
UFUNCS = {
    np.fabs: lambda x: bind(_p("abs"), x),
    np.deg2rad: lambda x: x * (math.pi / 180.0),
    np.radians: lambda x: x * (math.pi / 180.0),
    np.rad2deg: lambda x: x * (180.0 / math.pi),
    np.degrees: lambda x: x * (180.0 / math.pi),
    np.positive: lambda x: Tracer(x.node, x.value),      # ufuncs return a new array
    np.matmul: lambda a, b: matmul(a, b),
    np.conjugate: lambda x: Tracer(x.node, x.value),
}

def _in_place(function, what):
    """A method that replaces a made array by `function(array, ...)` (x.sort(): NumPy's
    in-place methods, returning None); the function's arguments stay a clear error."""
    def method(x, *args, **kwargs):
        _check_writable(x, what)
        _rebind(x, function(x, *args, **kwargs))
    method.__name__ = what
    return method


def _fill(x, value):
    """`x.fill(value)`: every element of a made array becomes `value` (traced or not)."""
    x[...] = value


# Tracer methods mirroring the functions above (x.var(), x.std(), x.cumsum()...).
METHODS = {
    "sort": _in_place(_sort, "x.sort()"), "partition": _in_place(_partition, "x.partition()"),
    "fill": _fill,
    "var": _var, "std": _std, "cumsum": FUNCTIONS[np.cumsum], "cumprod": FUNCTIONS[np.cumprod],
    "round": _round, "repeat": FUNCTIONS[np.repeat], "swapaxes": _swapaxes, "trace": _trace,
    "diagonal": FUNCTIONS[np.diagonal], "take": _take,
}


# ---------------------------------------------------------------- np.array, scipy.special
#
# `np.array([x, y])` and scipy.special's Python functions are not dispatched to tracers:
# the traced function's code (see tracing._Interceptor) sees `numpy` and `scipy.special`
# as copies of the modules with these few functions replaced, and `from numpy import
# array` as the replacement itself.

def _holds_tracer(obj) -> bool:
    if isinstance(obj, Tracer):
        return True
    return isinstance(obj, (list, tuple)) and any(_holds_tracer(item) for item in obj)


def _nested(obj):
    """A (nested) list or tuple of traced and constant values as one traced array."""
    if isinstance(obj, Tracer):
        return obj
    if not _holds_tracer(obj):
        return _as_tracer(np.asarray(obj, dtype=float)) if np.ndim(obj) else float(obj)
    items = [_nested(item) for item in obj]
    rows = [_expand_dims(item, 0) if isinstance(item, Tracer)
            else _as_tracer(np.asarray(item, dtype=float)[None]) for item in items]
    return _concatenate(rows, axis=0)


def _array_function(original):
    def array(obj, *args, **kwargs):
        if _holds_tracer(obj):
            dtype = kwargs.get("dtype", args[0] if args else None)
            if dtype is not None and np.dtype(dtype).kind != "f":
                raise TraceError(located(f"np.{original.__name__} of traced values with dtype "
                                         f"{np.dtype(dtype)}: jitad computes in float64"))
            out = _nested(obj)
            if out is obj and original is np.array and kwargs.get("copy", True) is not False:
                return Tracer(obj.node, obj.value)       # np.array copies (np.asarray does not)
            return out
        return watch.call(original, (obj, *args), kwargs)    # (a watched array: a read or view)
    array.__name__ = original.__name__
    array.__wrapped__ = original
    return array


_NUMPY_REPLACEMENTS = {name: _array_function(getattr(np, name))
                       for name in ("array", "asarray", "asanyarray", "ascontiguousarray")}
REPLACED = {id(getattr(np, name)): f for name, f in _NUMPY_REPLACEMENTS.items()}


class _TracedModule(type(np)):
    """A copy of a module with some functions replaced; attributes it lacks (submodules
    loaded later) come from the module itself."""

    def __getattr__(self, name):
        return getattr(self.__dict__["__wrapped__"], name)


def _copy(module, overrides):
    copy = _TracedModule(module.__name__, module.__doc__)
    copy.__dict__.update(vars(module))
    copy.__dict__.update(overrides)
    copy.__wrapped__ = module
    return copy


_TRACED_NUMPY = _copy(np, _NUMPY_REPLACEMENTS)


def _scipy_special():
    return sys.modules.get("scipy.special")


# scipy.special's ufuncs: those that are a primitive (name -> (primitive, parameters)) and
# compositions (name -> adapter).
SCIPY_PRIMITIVES = {"expit": ("expit", {}), "erf": ("erf", {}), "erfc": ("erfc", {}),
                    "gammaln": ("lgamma", {}), "gamma": ("gamma", {}),
                    "digamma": ("polygamma", {"n": 0}), "psi": ("polygamma", {"n": 0})}
SCIPY_COMPOSITIONS = {"xlogy": _xlogy, "xlog1py": _xlog1py,
                      "logit": lambda x: bind(_p("logit"), x)}
SCIPY_FUNCTIONS = {"logsumexp": logsumexp, "softmax": softmax, "log_softmax": log_softmax}


def _primitive_adapter(name, params):
    return lambda x: bind(_p(name), x, **params)


def _scipy_ufuncs(special) -> dict:
    table = {**{k: _primitive_adapter(*v) for k, v in SCIPY_PRIMITIVES.items()},
             **SCIPY_COMPOSITIONS}
    return {getattr(special, name): f for name, f in table.items() if hasattr(special, name)}


_SCIPY: dict = {}       # id(scipy.special) -> (module copy, ufunc adapters)


def _scipy_tables(special):
    tables = _SCIPY.get(id(special))
    if tables is None:
        replacements = {k: f for k, f in SCIPY_FUNCTIONS.items() if hasattr(special, k)}
        for name, f in replacements.items():
            REPLACED[id(getattr(special, name))] = f
        tables = _SCIPY[id(special)] = (_copy(special, replacements), _scipy_ufuncs(special))
    return tables


def traced_module(module):
    """The copy of `module` traced code sees (numpy, scipy, scipy.special), or None."""
    if module is np:
        return _TRACED_NUMPY
    name = getattr(module, "__name__", "")
    if name == "scipy.special":
        return _scipy_tables(module)[0]
    if name == "scipy" and _scipy_special() is not None:
        return _copy(module, {"special": _scipy_tables(_scipy_special())[0]})
    return None


def replacement(value):
    """What traced code calls in place of the library function `value` (None: itself)."""
    found = REPLACED.get(id(value))
    if found is None and type(value) is types.FunctionType and \
            (value.__module__ or "").startswith("scipy.special"):
        _scipy_tables(_scipy_special())
        found = REPLACED.get(id(value))
    return found


def ufunc_adapter(ufunc):
    """The composition implementing `ufunc` (None: a primitive of its own, or unsupported)."""
    adapter = UFUNCS.get(ufunc)
    if adapter is None:
        special = _scipy_special()
        if special is not None:
            adapter = _scipy_tables(special)[1].get(ufunc)
    return adapter
