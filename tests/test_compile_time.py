"""Array code printed so that Numba compiles little (issue 13): transposes of 3-D and 4-D
arrays as strided views (runtime.transpose3/4), stacked matrix products as loops
(runtime.batch_matmul_loops), single elementwise operations as loop nests.

The helpers are checked against NumPy, compiled and as plain Python; gradients of code
using them against central differences. No test measures time.
"""
import re

import numba
import numpy as np
import pytest

import jitad
from jitad import compile as compiler, disk, runtime

from conftest import adjoint_list, assert_close, check_grads_python, numeric_grad

RNG = np.random.default_rng(13)


def _compiled(name):
    return compiler._runtime_kernel(name, disk.cache_dir())


@pytest.mark.parametrize("axes", [(1, 2, 0), (2, 0, 1), (0, 2, 1), (1, 0, 2)])
def test_transpose3_is_numpy_transpose_view(axes):
    x = RNG.standard_normal((2, 3, 4))
    for helper in (runtime.transpose3, _compiled("transpose3")):
        for operand in (x, x[:, ::2, 1:]):      # contiguous and strided
            got = helper(operand, *axes)
            assert got.shape == np.transpose(operand, axes).shape
            assert_close(got, np.transpose(operand, axes))
            assert np.shares_memory(got, operand)


def test_transpose4_is_numpy_transpose():
    x = RNG.standard_normal((2, 3, 4, 5))
    for helper in (runtime.transpose4, _compiled("transpose4")):
        assert_close(helper(x, 3, 1, 0, 2), np.transpose(x, (3, 1, 0, 2)))


def test_batch_matmul_loops_is_matmul():
    a, b = RNG.standard_normal((3, 4, 5)), RNG.standard_normal((3, 5, 2))
    for helper in (runtime.batch_matmul, runtime.batch_matmul_loops, _compiled("batch_matmul")):
        assert_close(helper(a, b), np.matmul(a, b))
        bt = np.transpose(RNG.standard_normal((3, 2, 5)), (0, 2, 1))     # strided operand
        assert_close(helper(a, bt), np.matmul(a, bt))


def permuted_product(x, y):
    z = np.transpose(x, (1, 2, 0)) - y[None]            # (3, 4, 2) - (1, 4, 2)
    return np.sum(np.einsum("kij,kjl->kil", np.transpose(z, (0, 2, 1)), z) ** 2)


def test_transposes_and_single_operations_print_cheap_code():
    x, y = RNG.standard_normal((2, 3, 4)), RNG.standard_normal((4, 2))
    check_grads_python(permuted_product, (x, y), argnums=(0, 1))
    f = jitad.jit_grad(permuted_product, argnums=(0, 1))
    source = f.source(x, y)
    assert "np.transpose(" not in source and "transpose3(" in source
    assert "fused: 1 elementwise entries" in source         # z, a broadcasting subtraction
    value, grads = f.value_and_grad(x, y)
    assert_close(value, permuted_product(x, y))
    for k, got in enumerate(grads):
        assert_close(got, numeric_grad(permuted_product, (x, y), argnums=k)[0], rtol=1e-5,
                     atol=1e-6, what="gradient")


@pytest.mark.parametrize("name, reduce", [("max_rows", np.max), ("min_rows", np.min)])
def test_extremum_rows_loops_are_numpy(name, reduce):
    x = RNG.standard_normal((4, 5))
    x[1, 2], x[2, 0], x[3, 4] = np.nan, np.nan, np.inf
    for helper in (getattr(runtime, name), _compiled(name)):
        assert_close(helper(x), reduce(x, axis=1))
        assert np.isnan(helper(x)[1:3]).all()
        with pytest.raises(ValueError):
            helper(np.empty((2, 0)))
        assert helper(np.empty((0, 3))).shape == (0,)


@pytest.mark.parametrize("rows", [(), (2,), (2, 3), (2, 1, 2)])
def test_scatter_add_loops_accumulate_like_numpy(rows):
    index = np.array([1, -1, 1, 0])
    values = RNG.standard_normal((4,) + rows)
    want = np.zeros((5,) + rows)
    np.add.at(want, index, values)
    for helper in (runtime.scatter_add, _compiled("scatter_add")):
        assert_close(helper(np.zeros((5,) + rows), index, values), want)
        with pytest.raises(IndexError):
            helper(np.zeros((5,) + rows), np.array([5]), values[:1])
    if rows:        # rows shaped unlike the accumulator's: NumPy's ValueError
        with pytest.raises(ValueError):
            _compiled("scatter_add")(np.zeros((5,) + rows), index, values[..., :1])


def rows_filled_in_place(x):
    m = np.zeros((3, 4))
    m[1, :] = x * 2.0
    m[2] = np.sin(x)
    m[0, 1:3] = x[:2]
    return np.sum(m * m)


def test_arrays_stored_into_slices_print_element_loops():
    """`m[i] = row` with an array on the right makes Numba compile its shape-mismatch
    error path (several seconds per distinct type): updates print element loops."""
    x = np.array([0.1, 0.5, 0.9, 1.3])
    check_grads_python(rows_filled_in_place, (x,))
    source = jitad.jit_grad(rows_filled_in_place).source(x)
    # (every update here stores an array: a fixed index with a name on the right is one)
    stores = re.findall(r"^\s*(\w+\[[^\]]*\]) = ([A-Za-z_]\w*)\s*(?:#|$)", source, re.M)
    assert [s for s in stores if not re.search(r"\b[ij]\d\b", s[0])] == []
    assert source.count("_view[j0] = ") >= 3       # the updates and their adjoints


def sine_recurrence(w, xs):
    h = np.zeros(w.shape[0])
    total = 0.0
    for t in range(xs.shape[0]):
        h = np.sin(w @ h) + xs[t]       # w @ h is taped: its cosine is needed backwards
        total = total + np.sum(h * h)
    return total


def test_array_tapes_of_re_rolled_loops_are_filled_element_by_element():
    w, xs = RNG.standard_normal((3, 3)) * 0.5, RNG.standard_normal((9, 3))
    f = jitad.jit_grad(sine_recurrence, code_shape="loops")
    source = f.source(w, xs)
    assert "_tape_row[j0] = " in source
    assert re.search(r"_tape\[k\d*\] = ", source) is None
    value, grad = f.value_and_grad(w, xs)
    assert_close(value, sine_recurrence(w, xs))
    assert_close(grad, numeric_grad(sine_recurrence, (w, xs))[0], rtol=1e-5, atol=1e-7,
                 what="gradient")


# ---------------------------------------------------------------- fewer specializations

def _literal_signatures(dispatcher):
    return [s for s in dispatcher.signatures if "Literal" in str(s)]


def columns(x, y):
    return np.sum(np.exp(x[:, 1:]) * y[:, :-1])


def test_runtime_helpers_compile_per_type_not_per_traced_constant():
    """Generated code passes traced shapes and axes as constants (Numba types them as
    literals): the helpers are compiled once per argument type, so the disk cache serves
    every traced shape."""
    helper = _compiled("check_sizes")
    for n in (3, 4, 6):                     # three traced shapes of the same types
        x, y = RNG.standard_normal((2, n)), RNG.standard_normal((2, n))
        value, (gx, gy) = jitad.jit_grad(columns, argnums=(0, 1)).value_and_grad(x, y)
        for got, want in zip((gx, gy), numeric_grad(columns, (x, y), (0, 1))):
            assert_close(got, want)
    assert "check_sizes(" in jitad.jit_grad(columns).source(x, y)
    assert helper.signatures and not _literal_signatures(helper)
    two_d = [s for s in helper.signatures if str(s) == "(UniTuple(int64, 2), UniTuple(int64, 2))"]
    assert len(two_d) == 1


def test_a_plain_dispatcher_would_compile_per_traced_constant():
    """The check above can fail: Numba's own dispatcher compiles one version per value."""
    plain = numba.njit(runtime.check_sizes)

    @numba.njit
    def calls(a, b):
        plain(a.shape, (2, 3))
        plain(b.shape, (2, 4))

    calls(np.ones((2, 3)), np.ones((2, 4)))
    assert len(_literal_signatures(plain)) == 2


def centered(x, means):
    """As the GMM writes it: whole-array slices with new axes."""
    return np.sum(np.exp(x[:, None, :] - means[None, :, :]) * means[None])


def test_whole_slices_are_the_array_itself():
    x, means = RNG.standard_normal((4, 3)), RNG.standard_normal((2, 3))
    check_grads_python(centered, (x, means), argnums=(0, 1))
    f = jitad.jit_grad(centered, argnums=(0, 1))
    assert "getitem" not in [e.prim.name for e in adjoint_list(f, (x, means)).entries]
    source = f.source(x, means)
    assert "[:, :]" not in source and "check_sizes" not in source
    value, (gx, gm) = f.value_and_grad(x, means)
    assert_close(value, centered(x, means))
    for got, want in zip((gx, gm), numeric_grad(centered, (x, means), (0, 1))):
        assert_close(got, want)


def softplus_total(x, w):
    return np.sum(np.log1p(np.exp(x * w[None, :])) * x)


def test_long_generated_functions_are_optimized_once_and_right(monkeypatch):
    """Long generated functions skip Numba's first round of LLVM function passes (the
    module passes optimize them): forced here on a short one, whose gradient stays right."""
    calls = []
    patched = compiler._LIBRARY._optimize_functions

    def spy(library, ll_module):
        calls.append(library.name in compiler._LONG)
        return patched(library, ll_module)

    monkeypatch.setattr(compiler, "LONG_SOURCE_LINES", 1)
    monkeypatch.setattr(compiler._LIBRARY, "_optimize_functions", spy)
    x, w = RNG.standard_normal((3, 4)), RNG.standard_normal(4)
    value, (gx, gw) = jitad.jit_grad(softplus_total, argnums=(0, 1)).value_and_grad(x, w)
    assert any(calls) and not compiler._LONG
    assert_close(value, softplus_total(x, w))
    for got, want in zip((gx, gw), numeric_grad(softplus_total, (x, w), (0, 1))):
        assert_close(got, want)
