"""How much code Numba is handed (issue 13's first calls), counted, never timed:

* reshapes that only drop or insert size-1 axes (expand_dims, keepdims sums and their
  adjoints) print as basic-indexing views (`x[:, None]`), with a per-call check of the
  other sizes where they are not fixed by construction;
* a function whose every array argument's exact shape is checked on entry prints no
  per-operation shape checks (they could not fail).

Values and gradients are checked against NumPy and central differences, including calls
with other sizes than traced (the API must retrace where a view would be wrong).
"""
import numba
import numpy as np
import pytest

import jitad
from jitad import compile as compiler
from jitad.api import build_source
from jitad.compile import load_python
from jitad.primitives.shape import unit_axes_view

from conftest import assert_close, check_grads_python, numeric_grad, traced

RNG = np.random.default_rng(131)


def source_of(fun, args, argnums=0):
    f = jitad.jit_grad(fun, argnums=argnums)
    variant, _ = traced(f, args)
    return build_source(variant, "value_and_grad", variant.wrt, f.__name__)[0]


@pytest.mark.parametrize("shape, target, want", [
    ((5, 2), (5, 2, 1), "x[:, :, None]"),
    ((5, 1), (5,), "x[:, 0]"),
    ((1, 5, 2), (5, 2), "x[0, :, :]"),
    ((4, 1, 3), (1, 4, 3, 1), "x[None, :, 0, :, None]"),
    ((1, 1), (1,), "x[None, 0, 0]"),
])
def test_unit_axes_view_is_numpy_reshape(shape, target, want):
    text = unit_axes_view("x", shape, target, [str(n) for n in target])
    assert text.split("\n")[0] == want
    x = RNG.standard_normal(shape)
    namespace = {"x": x}
    exec(f"out = {text}", namespace)
    assert namespace["out"].shape == target
    assert_close(namespace["out"], x.reshape(target))
    assert np.shares_memory(namespace["out"], x)


@pytest.mark.parametrize("shape, target", [((2, 3), (3, 2)), ((2, 3), (6,)), ((2, 3), (2, 3)),
                                           ((0, 3), (0, 3, 1)), ((), (1,))])
def test_unit_axes_view_declines_other_reshapes(shape, target):
    # (same shape: a reshape that makes a transposed view contiguous; zeros: the
    # placeholder shapes printers see while tracing)
    assert unit_axes_view("x", shape, target, [str(n) for n in target]) is None


def keepdims_chain(x, y):
    m = np.sum(x * x, axis=1, keepdims=True)            # (n, 1)
    z = x[:, :, None] * y[None, :, :]                   # expand_dims both ways
    return np.sum(np.exp(x - m) * np.sum(z, axis=2)) + np.sum(m.reshape(-1) ** 2)


def test_unit_reshapes_print_as_views():
    x, y = RNG.standard_normal((4, 3)), RNG.standard_normal((3, 2))
    check_grads_python(keepdims_chain, (x, y), argnums=(0, 1))
    source = source_of(keepdims_chain, (x, y), (0, 1))
    assert "reshape(" not in source and "None]" in source


def row_extrema(x):
    return np.sum(np.max(x, axis=1, keepdims=True) * np.min(x, axis=1)[:, None] - x)


def test_row_reductions_print_without_reshapes():
    x = RNG.standard_normal((4, 3))
    check_grads_python(row_extrema, (x,))
    source = source_of(row_extrema, (x,))
    assert "max_rows(x)[:, None]" in source and "min_rows(x)" in source
    assert "reshape(" not in source


def literal_reshape(x):
    return np.sum(np.sin(x.reshape(2, 6, 1))[0] ** 2)      # the first 6 elements of x


def test_literal_unit_reshape_view_checks_sizes():
    """Traced for (2, 6), `x.reshape(2, 6, 1)` prints as `x[:, :, None]` and a check: run
    on a (3, 4) argument (which NumPy reshapes), the view would sum x[0], 4 elements."""
    f = jitad.jit_grad(literal_reshape)
    for shape in [(2, 6), (3, 4), (4, 3), (2, 6)]:
        x = RNG.standard_normal(shape)
        value, grad = f.value_and_grad(x)
        assert_close(value, literal_reshape(x))
        assert_close(grad, numeric_grad(literal_reshape, (x,))[0], rtol=1e-5, atol=1e-7,
                     what="gradient")
    variant, _ = traced(f, (RNG.standard_normal((2, 6)),))
    source, name, _ = build_source(variant, "value_and_grad", variant.wrt, f.__name__)
    assert "x[:, :, None]" in source
    with pytest.raises(ValueError, match="reshape printed as a view"):
        load_python(source, name)(RNG.standard_normal((3, 4)))


def cell(w, state, xs):
    """An LSTM-like step over rows: every argument's elements are read at fixed positions."""
    total, h = 0.0, state[0]
    for t in range(xs.shape[0]):
        g = 1.0 / (1.0 + np.exp(-(w[0][:3] * xs[t] + w[1][:3] * h)))
        h = np.tanh(g * h + w[1][3:])
        total = total + np.sum(h * h)
    return total


def test_pinned_shapes_print_no_shape_checks():
    args = (RNG.standard_normal((2, 6)), RNG.standard_normal((1, 3)),
            RNG.standard_normal((4, 3)))
    check_grads_python(cell, args, argnums=(0, 1))
    source = source_of(cell, args, (0, 1))
    assert "raise ShapeChanged('w'" in source and "raise ShapeChanged('xs'" in source
    for check in ("check_broadcast(", "check_sizes(", "check_slice("):
        assert check not in source
    # One argument not pinned (h is read whole): the size-generic checks stay.
    def unpinned(w, h):
        return np.sum(np.exp(w[0][:3] * h) + w[1][3:])
    source = source_of(unpinned, (args[0], args[1][0]), (0, 1))
    assert "check_sizes(" in source and "check_broadcast(" in source


def test_pinned_shapes_still_checked_per_call():
    f = jitad.jit_grad(cell, argnums=(0, 1))
    w, state = RNG.standard_normal((2, 6)), RNG.standard_normal((1, 3))
    for xs in (RNG.standard_normal((4, 3)), RNG.standard_normal((5, 3))):
        value, (gw, gs) = f.value_and_grad(w, state, xs)
        assert_close(value, cell(w, state, xs))
        assert_close(gw, numeric_grad(cell, (w, state, xs), argnums=0)[0], rtol=1e-5,
                     atol=1e-7, what="gradient")
    with pytest.raises(ValueError):     # w[1][3:] has 4 elements, h 3: as NumPy
        f.value_and_grad(RNG.standard_normal((2, 7)), state, xs)


def _instructions(dispatcher) -> int:
    """LLVM instructions of the generated function itself (not the helpers it calls)."""
    count, inside = 0, False
    for line in next(iter(dispatcher.inspect_llvm().values())).splitlines():
        if line.startswith("define"):
            inside = "jitad_generated" in line and "cpython" not in line and "cfunc" not in line
        elif line.startswith("}"):
            inside = False
        elif inside and line.startswith("  "):
            count += 1
    return count


def test_compile_work_of_a_broadcasting_function_is_bounded():
    """keepdims_chain's generated function: about 2,600 LLVM instructions with reshapes
    printed as views (3,935 when they were `np.ascontiguousarray(...).reshape(...)`)."""
    x, y = RNG.standard_normal((4, 3)), RNG.standard_normal((3, 2))
    f = jitad.jit_grad(keepdims_chain, argnums=(0, 1))
    variant, runtime_args = traced(f, (x, y))
    source, name, _ = build_source(variant, "value_and_grad", variant.wrt, f.__name__)
    kernel = compiler.compile_source(source, name, runtime_args, "test")
    assert isinstance(kernel, numba.core.registry.CPUDispatcher)
    assert _instructions(kernel) < 3000
