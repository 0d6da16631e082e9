"""Shape and indexing primitives: transpose, reshape, broadcast, concatenate, static
indexing, gather with an integer array, and their adjoints (index_add, scatter_add).
"""
import functools
import re

import numpy as np

from ..errors import ShapeError
from .core import Primitive, add_into, broadcast_shapes, shape_text, sum_to_shape


def index_text(index: tuple) -> str:
    """Python text for a static index: ints and ('slice', start, stop, step) items."""
    def item(i):
        if isinstance(i, int):
            return str(i)
        _, start, stop, step = i
        text = f"{'' if start is None else start}:{'' if stop is None else stop}"
        return text + (f":{step}" if step is not None else "")
    return ", ".join(map(item, index))


def as_python_index(index: tuple) -> tuple:
    return tuple(i if isinstance(i, int) else slice(*i[1:]) for i in index)


def _indexed_shape(shape, index):
    if len(index) == len(shape):        # an element read, within bounds: a scalar
        for i, d in zip(index, shape):
            if type(i) is not int or not -d <= i < d:
                break
        else:
            return ()
    return _sliced_shape(shape, index)


@functools.lru_cache(maxsize=4096)      # (a loop reads `x[t]`, `w[:b]` with a few indices)
def _sliced_shape(shape, index):
    try:
        return np.broadcast_to(np.empty(()), shape)[as_python_index(index)].shape
    except IndexError as error:        # NumPy's class: an index is out of bounds
        raise IndexError(f"index [{index_text(index)}] does not fit shape {shape}: {error}") \
            from None


# ---------------------------------------------------------------- VJP / JVP rules

def _transpose_vjp(b, g, out, x, axes):
    return (b.transpose(g, axes=tuple(int(i) for i in np.argsort(axes))),)


def _reshape_vjp(b, g, out, x, **params):
    return (b.reshape_like(g, x),)


def _getitem_vjp(b, g, out, x, index):
    return (b.index_add(b.full_like(x, 0.0), g, index=index),)


def _gather_vjp(b, g, out, x, idx, **params):
    return b.scatter_add(b.full_like(x, 0.0), g, idx), None


def _concatenate_vjp(b, g, out, *xs, axis):
    start, parts = 0, []
    for x in xs:
        stop = start + x.shape[axis]
        index = tuple(("slice", None, None, None) if k != axis else ("slice", start, stop, None)
                      for k in range(axis + 1))
        parts.append(b.getitem(g, index=index))
        start = stop
    return tuple(parts)


def _broadcast_like_vjp(b, g, out, x, target):
    return sum_to_shape(b, g, x), None


def _full_like_vjp(b, g, out, target, value):
    return None, (b.sum(g, axis=None) if g.shape else g)


def _linear(name, nonlinear_operands=0):
    """JVP of a primitive linear in operand 0: apply it to the tangent (other operands kept)."""
    def jvp(b, out, operands, tangents, **params):
        if tangents[0] is None:
            return None
        return b.bind(b.registry[name], tangents[0], *operands[1:], **params)
    return jvp


def _index_add_jvp(b, out, operands, tangents, **params):
    base, update = tangents[0], tangents[1]
    base = base if base is not None else b.full_like(operands[0], 0.0)
    if update is None:
        return base
    return b.bind(b.registry["index_add"], base, update, **params)


def _scatter_add_jvp(b, out, operands, tangents):
    base, update = tangents[0], tangents[1]
    base = base if base is not None else b.full_like(operands[0], 0.0)
    return base if update is None else b.scatter_add(base, update, operands[2])


def _concatenate_jvp(b, out, operands, tangents, axis):
    parts = [t if t is not None else b.full_like(x, 0.0) for x, t in zip(operands, tangents)]
    return b.concatenate(*parts, axis=axis)


def _index_add_inplace(texts, operands, params):
    target = f"{texts[0]}[{index_text(params['index'])}]"
    update = operands[1]
    if update.ndim == 0:
        return f"{target} += {texts[1]}"
    # An explicit loop over a view of the updated region (see core.add_into).
    return f"{texts[0]}_view = {target}\n" + add_into(f"{texts[0]}_view", texts[1], update,
                                                       update.ndim)


def _gather_source(texts, operands, params):
    # Numba does not bounds-check: the helpers raise NumPy's IndexError (negatives wrap),
    # naming the user's `axis` (the gather reads axis 0 of a view with that axis moved first).
    helper = "checked_indices" if operands[1].ndim else "checked_index"
    axis = f", {params['axis']}" if params.get("axis") else ""
    return f"{texts[0]}[{helper}({texts[1]}, {texts[0]}.shape[0]{axis})]"


def _scatter_add_inplace(texts, operands, params):
    acc, update, index = texts
    if operands[2].ndim == 1:
        return f"scatter_add({acc}, {index}, {update})"
    if operands[2].ndim:        # the helper walks a flat index and the matching rows
        return (f"scatter_add({acc}, {index}.ravel(), np.ascontiguousarray({update})"
                f".reshape(({index}.size,) + {acc}.shape[1:]))")
    row = f"{acc}[checked_index({index}, {acc}.shape[0])]"
    if operands[1].ndim == 0:
        return f"{row} += {update}"
    return f"{acc}_view = {row}\n" + add_into(f"{acc}_view", update, operands[1],
                                               operands[1].ndim)


def _full_like_jvp(b, out, operands, tangents):
    return None if tangents[1] is None else b.full_like(operands[0], tangents[1])


# ---------------------------------------------------------------- shape rules and printers

def _transpose_rule(x, axes):
    return x.dtype, tuple(x.shape[i] for i in axes)


def _reshape_rule(x, shape):
    try:
        return x.dtype, np.broadcast_to(np.empty(()), x.shape).reshape(shape).shape
    except ValueError:
        raise ShapeError(f"cannot reshape an array of shape {x.shape} into shape {shape}") from None


def _expand_dims_rule(x, axis):
    shape = list(x.shape)
    for a in axis:
        shape.insert(a, 1)
    return x.dtype, tuple(shape)


def unit_axes_view(text, shape, target, target_dims) -> str | None:
    """`text[...]` turning an array of `shape` into one of `target` by dropping and inserting
    size-1 axes only (`x[:, 0]`, `x[:, None]`), with a check that the other sizes still
    agree; None when they differ or are the same (a reshape to the same shape makes a
    transposed view contiguous). `target_dims[j]`: the text of target's size j (None: the
    size NumPy infers from the others, a `-1`).

    Basic indexing is a view Numba compiles in a few instructions; a printed `.reshape`
    costs 100-400 at every site. Sizes 0, 1 and more are separate specializations, so
    size-1 axes stay size 1; the others are compared per call (a ValueError makes the API
    retrace for exact shapes). Printers run with placeholder shapes of zeros while
    tracing: those reshape."""
    if not shape or not target or 0 in shape or 0 in target or tuple(shape) == tuple(target) \
            or [n for n in shape if n != 1] != [n for n in target if n != 1]:
        return None
    items, pairs, k = [], [], 0
    for j, n in enumerate(target):
        if n == 1:
            items.append("None")
            continue
        while shape[k] == 1:
            items.append("0")
            k += 1
        items.append(":")
        if target_dims[j] is not None:
            pairs.append(f"{text}.shape[{k}] != {target_dims[j]}")
        k += 1
    items += ["0"] * (len(shape) - k)
    view = f"{text}[{', '.join(items)}]"
    if not pairs:
        return view
    return (f"{view}\nif {' or '.join(pairs)}:\n"
            f"    raise ValueError('a reshape printed as a view met sizes other than traced')")


def _expand_dims_source(texts, operands, params):
    x, axis = operands[0], params["axis"]
    dims, k = [], 0
    for i in range(x.ndim + len(axis)):
        if i in axis:
            dims.append(1)
        else:
            dims.append(("dim", k))
            k += 1
    if x.ndim == 0:             # a scalar is a float in generated code: it has no .reshape
        return f"np.full({shape_text(texts[0], dims)}, {texts[0]})" if dims else texts[0]
    return texts[0] + "[" + ", ".join("None" if d == 1 else ":" for d in dims) + "]"


def _reshape_source(texts, operands, params):
    x, shape = operands[0], params["shape"]
    if x.ndim == 0:             # (a scalar stays a float: not a 0-d array)
        return f"np.full({tuple(1 for _ in shape)}, {texts[0]})" if shape else texts[0]
    if shape == ():             # the single element, as a float
        return _element(texts[0], x)
    if 0 not in x.shape:        # (not the placeholder shapes of tracing)
        target = _reshape_rule(x, shape)[1]
        view = unit_axes_view(texts[0], x.shape, target, [None if n < 0 else n for n in shape])
        if view is not None:
            return view
    return f"np.ascontiguousarray({texts[0]}).reshape({shape})"


def _reshape_like_source(texts, operands, params):
    x, target = operands
    if target.ndim == 0:
        return _element(texts[0], x)
    if x.ndim == 0:
        return f"np.full({texts[1]}.shape, {texts[0]})"
    view = unit_axes_view(texts[0], x.shape, target.shape,
                          [f"{texts[1]}.shape[{j}]" for j in range(target.ndim)])
    if view is not None:
        return view
    return f"np.ascontiguousarray({texts[0]}).reshape({texts[1]}.shape)"


def _element(text, x):
    return f"{text}[{', '.join('0' for _ in range(x.ndim))}]" if x.ndim else text


def _full_like_source(texts, operands, params):
    if operands[0].ndim == 0:
        return f"float({texts[1]})"
    return f"np.full({texts[0]}.shape, {texts[1]})"


def _transpose_source(texts, operands, params):
    return transpose_text(texts[0], operands[0].ndim, params["axes"])


def transpose_text(x_text: str, ndim: int, axes) -> str:
    """Source of `np.transpose(x, axes)` (a view) that Numba compiles quickly: `.T` for
    reversed axes (it keeps Numba's layout information, so BLAS gets a fast path), the
    strided-view helpers for ranks 3 and 4 (np.transpose with an axes tuple costs ~20 s of
    compile time per array type)."""
    axes = tuple(int(a) for a in axes)
    if axes == tuple(range(ndim)):
        return x_text
    if axes == tuple(reversed(range(ndim))):
        return f"{x_text}.T"
    if ndim in (3, 4):
        return f"transpose{ndim}({x_text}, {', '.join(map(str, axes))})"
    return f"np.transpose({x_text}, {axes})"


def _getitem_rule(x, index):
    return x.dtype, _indexed_shape(x.shape, index)


def _gather_rule(x, idx, axis=0):
    if not np.issubdtype(np.dtype(idx.dtype), np.integer):
        raise ShapeError(f"an index array must hold integers, got {idx.dtype}")
    return x.dtype, idx.shape + x.shape[1:]


def _concatenate_rule(*xs, axis):
    shapes = [x.shape for x in xs]
    try:
        shape = np.concatenate([np.broadcast_to(np.empty(()), s) for s in shapes], axis=axis).shape
    except (ValueError, np.exceptions.AxisError) as error:
        raise ShapeError(f"cannot concatenate shapes {shapes} along axis {axis}: {error}") from None
    dtypes = [np.dtype(x.dtype) for x in xs]
    return np.result_type(*dtypes).name, shape


_ROW = re.compile(r"([A-Za-z_]\w*)\[(\d+)\]")       # `name[i]`: a row of an array


def _concatenate_source(texts, operands, params):
    """`np.concatenate` of the operands; consecutive rows of one array (`t[0], t[1], ...`:
    the rows of a re-rolled loop's tape) as one transposed copy of the rows' slice. Numba
    compiles a concatenation of n operands in time growing with n (minutes at n = 100)."""
    axis = params["axis"] % operands[0].ndim
    parts, k = [], 0
    while k < len(texts):
        row = _ROW.fullmatch(texts[k])
        end = k + 1
        while row and end < len(texts) and operands[end].shape == operands[k].shape and \
                texts[end] == f"{row[1]}[{int(row[2]) + end - k}]":
            end += 1
        parts.append(_rows_text(row[1], int(row[2]), end - k, operands[k].ndim, axis)
                     if end - k > 1 else texts[k])
        k = end
    if len(parts) == 1:
        return parts[0]
    return f"np.concatenate(({', '.join(parts)},), axis={axis})"


def _rows_text(name: str, first: int, count: int, ndim: int, axis: int) -> str:
    """`np.concatenate((name[first], ..., name[first + count - 1]), axis)` as a copy of
    `name[first:first + count]` with its first axis moved next to `axis` and merged."""
    axes = tuple(range(1, axis + 1)) + (0,) + tuple(range(axis + 1, ndim + 1))
    shape = ", ".join(f"{name}.shape[{d + 1}]" + (f" * {count}" if d == axis else "")
                      for d in range(ndim))
    return f"np.transpose({name}[{first}:{first + count}], {axes}).copy().reshape(({shape},))"


def _full_like_rule(target, value):
    return "float64", target.shape


def _normalize_expand_axis(operands, params):
    axis = params["axis"]
    axis = (axis,) if isinstance(axis, int) else tuple(axis)
    ndim = operands[0].ndim + len(axis)
    return {"axis": tuple(sorted(a % ndim for a in axis))}


def build():
    """The shape and indexing records (called once by the registry)."""
    def shape_prim(name, source, rule, vjp, jvp, **flags):
        flags.setdefault("linear", True)
        return Primitive(name, source, rule, vjp, jvp, **flags)

    return [
        shape_prim("transpose", _transpose_source, _transpose_rule, _transpose_vjp,
                   _linear("transpose"), view=True, domain=((-2.0, 2.0),),
                   test_params=({"axes": (1, 0)},)),
        shape_prim("reshape", _reshape_source, _reshape_rule,
                   _reshape_vjp, _linear("reshape"), view=True, domain=((-2.0, 2.0),),
                   test_params=({"shape": (-1,)},)),
        shape_prim("reshape_like", _reshape_like_source,
                   lambda x, target: (x.dtype, target.shape),
                   lambda b, g, out, x, target: (b.reshape_like(g, x), None),
                   _linear("reshape_like"), view=True),
        shape_prim("expand_dims", _expand_dims_source, _expand_dims_rule, _reshape_vjp,
                   _linear("expand_dims"), view=True, normalize=_normalize_expand_axis,
                   domain=((-2.0, 2.0),), test_params=({"axis": 0},)),
        shape_prim("broadcast_like", "np.broadcast_to({0}, {1}.shape)",
                   lambda x, target: (x.dtype, broadcast_shapes(x, target)),
                   _broadcast_like_vjp, _linear("broadcast_like"), view=True),
        shape_prim("full_like", _full_like_source, _full_like_rule, _full_like_vjp,
                   _full_like_jvp),
        shape_prim("getitem", lambda t, o, p: f"{t[0]}[{index_text(p['index'])}]", _getitem_rule,
                   _getitem_vjp, _linear("getitem"), view=True, domain=((-2.0, 2.0),),
                   test_params=({"index": (("slice", 1, None, None),)},)),
        shape_prim("gather", _gather_source, _gather_rule, _gather_vjp, _linear("gather")),
        shape_prim("index_add", None, lambda acc, g, index: (acc.dtype, acc.shape),
                   lambda b, g, out, acc, update, index: (g, b.getitem(g, index=index)),
                   _index_add_jvp, inplace=_index_add_inplace),
        shape_prim("scatter_add", None, lambda acc, g, idx: (acc.dtype, acc.shape),
                   lambda b, g, out, acc, update, idx: (g, b.gather(g, idx), None),
                   _scatter_add_jvp, inplace=_scatter_add_inplace),
        shape_prim("concatenate", _concatenate_source, _concatenate_rule, _concatenate_vjp,
                   _concatenate_jvp),
    ]
