"""The NumPy tier: first calls of array code answered by the generated source run as plain
Python (printed for NumPy) while Numba compiles it in the background; its checks of
argument kinds and of its own results, and its fall back to the compiled code.

Which tier served a call is counted (`NumpyKernel.calls`), never timed; the background
compile is held at the gate of conftest's `tiered` fixture where the order matters.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import jitad
from jitad import api, runtime, store
from jitad import compile as compiler
from jitad.numpy_tier import NumpyKernel, _checked

from conftest import numeric_grad


def make_model(scale):
    """Array code over 2-D arguments: a matmul, a gather of rows, broadcasting, reductions
    (each test its own `scale`, so that no test finds another's build on disk)."""
    def model(W, b, x, rows):
        h = np.tanh(x @ W + b)
        g = h[rows]
        s = np.sum(np.exp(-scale * g ** 2), axis=1)
        return np.sum(np.log1p(s)) + 0.5 * np.sum(W ** 2) + np.sum(h[:, :1] * b[:1])
    return model


@pytest.fixture
def args():
    rng = np.random.default_rng(5)
    return (rng.standard_normal((3, 4)), rng.standard_normal(4), rng.standard_normal((6, 3)),
            np.array([0, 5, 2, 2, -1]))


@pytest.fixture
def numpy_tier(monkeypatch):
    """The NumPy tier on (the suite turns it off), from 10 entries."""
    monkeypatch.delenv("JITAD_NUMPY_TIER")
    monkeypatch.setattr(api, "NUMPY_TIER_FROM_ENTRIES", 10)


def first_tier_of(f):
    return next(k for _, k in f._records if k is not None)


def test_the_numpy_tier_answers_until_the_specialized_kernel_is_in(numpy_tier, tiered, args):
    model = make_model(0.7)
    f = jitad.jit_grad(model, argnums=(0, 1))
    value, grads = f.value_and_grad(*args)
    kernel = first_tier_of(f)
    assert isinstance(kernel, NumpyKernel) and kernel.calls == 1
    assert f.stats()[0]["tier"] == "numpy" and f.stats()[0]["background"] == "compiling"
    assert type(value) is float and value == pytest.approx(model(*args), rel=1e-13)
    for g, d in zip(grads, numeric_grad(model, list(args), (0, 1))):
        np.testing.assert_allclose(g, d, rtol=1e-6, atol=1e-8)
    tiered.set()
    assert f.wait()
    compiled_value, compiled_grads = f.value_and_grad(*args)
    assert kernel.calls == 1 and kernel.successor is not None
    row = f.stats()[0]
    assert row["tier"] == "specialized" and row["tier_calls"] == 1
    # NumPy sums pairwise and multiplies through BLAS, compiled loops in order: to rounding.
    assert compiled_value == pytest.approx(value, rel=1e-13)
    for g, h in zip(grads, compiled_grads):
        np.testing.assert_allclose(g, h, rtol=1e-12, atol=1e-14)


def test_the_trace_is_stored_on_disk_after_the_first_result(numpy_tier, tiered, args,
                                                            monkeypatch):
    """Storing a long trace takes seconds (the LSTM's: 2-4 s): a tiered first call leaves it
    to the background job; the next process finds it all the same."""
    stored_at_start = []
    real_start = api._Background.start

    def start(job):
        stored_at_start.append(store.load("traces", variant.reads.digest) is not None)
        real_start(job)

    monkeypatch.setattr(api._Background, "start", start)
    f = jitad.jit_grad(make_model(0.76), argnums=(0, 1))
    variant, _ = f._variant(args, {})
    f(*args)
    assert stored_at_start == [False]
    tiered.set()
    assert f.wait() and store.load("traces", variant.reads.digest) is not None


def test_source_printed_for_numpy_has_no_element_loops(args):
    f = jitad.jit_grad(make_model(0.71), argnums=(0, 1))
    variant, _ = f._variant(args, {})
    wengert = api.differentiated(variant, "value_and_grad", variant.wrt)
    sources = [api.build_from(variant, "value_and_grad", variant.wrt, "model", "auto", True,
                              wengert, vectorized=vectorized)[0] for vectorized in (False, True)]
    assert "for j0 in" in sources[0] or "# fused" in sources[0]      # (what Numba gets)
    assert "for j0 in" not in sources[1] and "# fused" not in sources[1]
    assert "for i0 in" not in sources[1]


def test_the_numpy_tier_is_only_for_array_code_long_enough(numpy_tier, monkeypatch, args):
    monkeypatch.setattr(api, "NUMPY_TIER_FROM_ENTRIES", 10 ** 6)
    f = jitad.jit_grad(make_model(0.72), argnums=(0, 1))
    f(*args)
    assert f.stats()[0]["tier"] == "specialized" and not f._jobs


def test_jitad_numpy_tier_0_turns_it_off(numpy_tier, monkeypatch, args):
    monkeypatch.setenv("JITAD_NUMPY_TIER", "off")
    f = jitad.jit_grad(make_model(0.75), argnums=(0, 1))
    f(*args)
    assert f.stats()[0]["tier"] == "specialized" and not f._jobs


def test_tiers_false_compiles_array_code_before_returning(numpy_tier, args):
    f = jitad.jit_grad(make_model(0.7), argnums=(0, 1), tiers=False)
    f(*args)
    assert f.stats()[0]["tier"] == "specialized" and not f._jobs


def test_a_call_the_tier_hands_over_may_have_another_layout(numpy_tier):
    """Sizes the tier's code does not fit (a concatenation's adjoint split at the traced
    sizes) go to the specialized kernel, compiled for the first call's Fortran layout: it
    compiles for this call's C layout as well (as every call does, `call_compiling`) and
    raises the size error, and the call is traced again for its own shapes."""
    def joined(x):
        return np.sum(np.concatenate([x, x ** 2], axis=-1) *
                      np.concatenate([x.T, x.T], axis=0).T)
    f = jitad.jit_grad(joined)
    f.value_and_grad(np.asfortranarray(np.linspace(-1.0, 1.0, 8).reshape(4, 2)))
    assert isinstance(first_tier_of(f), NumpyKernel)
    x = np.linspace(-0.9, 0.8, 9).reshape(3, 3)
    value, grad = f.value_and_grad(x)
    assert value == pytest.approx(joined(x), rel=1e-13)
    np.testing.assert_allclose(grad, numeric_grad(joined, [x])[0], rtol=1e-7, atol=1e-9)
    assert f.trace_count == 2


def kernel_for(fun, args, argnums=0):
    """The NumpyKernel of `fun`'s value and gradient at `args`, built without Numba."""
    f = jitad.jit_grad(fun, argnums=argnums)
    variant, runtime_args = f._variant(tuple(args), {})
    wengert = api.differentiated(variant, "value_and_grad", variant.wrt)
    source, name, _, _ = api.build_from(variant, "value_and_grad", variant.wrt, "k", "auto",
                                        True, wengert, vectorized=True)
    return compiler.numpy_kernel(source, name, tuple(runtime_args), wengert), runtime_args


def test_arguments_of_another_dtype_or_rank_are_refused_like_a_sealed_dispatcher(args):
    kernel, runtime_args = kernel_for(make_model(0.73), args, (0, 1))
    kernel(*runtime_args)
    for position, other in ((0, args[0].astype(np.float32)), (0, args[0].ravel()),
                            (3, args[3].astype(np.int32)), (1, args[1][None])):
        changed = list(runtime_args)
        changed[position] = other
        with pytest.raises(TypeError):
            kernel(*changed)
    with pytest.raises(TypeError):
        kernel(*runtime_args[:-1])


def test_errors_of_python_arithmetic_are_answered_by_the_compiled_code():
    """`math.gamma` at a pole raises in Python but not compiled: the tier hands such calls to
    the specialized kernel (here a stand-in), or re-raises without one."""
    def poles(x, y):
        return np.sum(np.exp(x) * x) * math.gamma(y)
    x = np.array([0.5, 1.0, 2.0])
    kernel, _ = kernel_for(poles, [x, 2.5])
    assert kernel(x, 2.5)[0] == pytest.approx(poles(x, 2.5), rel=1e-13)
    kernel.specialized = lambda: (lambda x, y: ("compiled", y))
    assert kernel(x, -1.0) == ("compiled", -1.0) and kernel.calls == 2
    kernel.specialized = lambda: None          # the compile failed: the tier's own error
    with pytest.raises(ValueError, match="math domain"):
        kernel(x, -1.0)


def test_float_arguments_compute_as_numpy_floats():
    """Python would raise at `y / 0.0` and make `y ** 0.5` complex for y < 0; Numba gives
    inf and nan, and so does the tier, by itself."""
    def powers(x, y):
        return np.sum(x * y ** 0.5) + np.sum(x) / (y + 4.0)
    x = np.array([0.5, 1.0, 2.0])
    kernel, _ = kernel_for(powers, [x, 4.0], (0, 1))
    kernel.specialized = lambda: pytest.fail("the compiled code was asked")
    value, (grad_x, grad_y) = kernel(x, -4.0)
    assert math.isnan(value) and type(value) is float and type(grad_y) is float
    assert np.isnan(grad_x).all() and kernel.calls == 1


def test_jitad_errors_come_from_the_tier_itself(args):
    kernel, runtime_args = kernel_for(make_model(0.74), args, (0, 1))
    kernel.specialized = lambda: pytest.fail("the compiled code was asked")
    bad = list(runtime_args)
    bad[3] = np.array([0, 6, 2, 2, -1])
    with pytest.raises(IndexError, match="index 6 is out of bounds for axis 0 with size 6"):
        kernel(*bad)


def test_results_of_other_dtypes_or_ranks_are_not_returned():
    f64, i64, flag = np.dtype("float64"), np.dtype("int64"), np.dtype("bool")
    expected = ((f64, 0), ((f64, 2), (i64, 1)))
    good = (np.float64(1.5), (np.ones((2, 2)), np.arange(3)))
    assert _checked(good, expected)[0] == 1.5 and type(_checked(good, expected)[0]) is float
    for bad in ((1.5 + 0j, good[1]), (1.5, (np.ones(4), np.arange(3))),
                (1.5, (np.ones((2, 2)), np.arange(3.0))), (1.5, (np.ones((2, 2)),)),
                (np.ones(1), good[1])):
        assert _checked(bad, expected) is None
    assert _checked(np.int64(3), (i64, 0)) == 3 and _checked(2.5, (i64, 0)) is None
    assert _checked(np.True_, (flag, 0)) is True and _checked(1, (flag, 0)) is None


def test_plain_runtime_helpers_agree_with_their_compiled_loops():
    """The plain-Python helpers the NumPy tier (and tracing) runs are vectorized; Numba
    compiles the loops. Both accumulate in index order and name the first bad index."""
    rng = np.random.default_rng(6)
    index = np.array([3, -1, 3, 0, 3])
    values = rng.standard_normal((5, 2))
    loops = np.zeros((4, 2))
    for k, i in enumerate(index):
        loops[i] += values[k]
    assert np.array_equal(runtime.scatter_add(np.zeros((4, 2)), index, values), loops)
    for helper in (runtime.checked_indices, runtime.checked_indices_loops):
        assert helper(index, 4) is index
        with pytest.raises(IndexError, match="index -5 is out of bounds for axis 1 with size 4"):
            helper(np.array([[1, -5], [7, 0]]), 4, 1)
    a, b = rng.standard_normal((3, 2, 4)), rng.standard_normal((3, 5, 4)).transpose(0, 2, 1)
    np.testing.assert_allclose(runtime.batch_matmul(a, b), runtime.batch_matmul_loops(a, b),
                               rtol=1e-13, atol=1e-14)
