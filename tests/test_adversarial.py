"""Adversarial inputs: programs and arguments that once gave silently wrong answers or
crashes. Each test reproduces one bug (it failed before the fix) and checks against NumPy
and central differences (through the plain-Python path where no compile is needed)."""
from __future__ import annotations

import numpy as np
import pytest

import jitad
from jitad.errors import TraceError

from conftest import check_grads_python, python_value, python_value_and_grad

X4 = np.array([1.0, 2.0, 3.0, 4.0])
WEIGHTS = np.arange(1.0, 17.0)


def _weighted(y):
    return np.sum(y * WEIGHTS[:np.size(y)].reshape(np.shape(y)))


# ---------------------------------------------------------------- views made by gathers
#
# NumPy returns views from `r[...]`, `r[..., 1:]`, `np.flip`, `np.rot90`, `np.diagonal`...,
# which jitad records as gathers: an update of `r` after taking such a view must show in
# it (NumPy) or be an error, never silently be missed.

GATHER_VIEWS = {
    "r[...]": lambda r: r[...],
    "r[..., 1:]": lambda r: r[..., 1:],
    "np.flip": np.flip,
    "M[..., 0]": lambda r: r.reshape(2, 2)[..., 0],
    "np.fliplr": lambda r: np.fliplr(r.reshape(2, 2)),
    "np.rot90": lambda r: np.rot90(r.reshape(2, 2)),
    "np.diagonal": lambda r: np.diagonal(r.reshape(2, 2)),
    "np.diag": lambda r: np.diag(r.reshape(2, 2)),
}


@pytest.mark.parametrize("name", GATHER_VIEWS)
def test_update_after_a_gathered_view_is_an_error(name):
    view = GATHER_VIEWS[name]

    def f(x):
        r = x * 1.0
        y = view(r)
        r[1] = 10.0 * x[0]
        return _weighted(y)

    with pytest.raises(TraceError, match="updated in place after the view was taken"):
        jitad.jit_grad(f).wengert(X4)


@pytest.mark.parametrize("name", ["r[...]", "np.flip", "np.diagonal"])
def test_write_through_a_gathered_view_is_an_error(name):
    view = GATHER_VIEWS[name]

    def made(x):
        r = x * 1.0
        y = view(r)
        y[0] = 7.0 * x[1]           # NumPy writes into r
        return _weighted(r)

    def argument(x):
        y = view(x)
        y[0] = 7.0                  # NumPy writes into the caller's x
        return _weighted(x)

    with pytest.raises(TraceError, match="through a view"):
        jitad.jit_grad(made).wengert(X4)
    with pytest.raises(TraceError, match="caller's data"):
        jitad.jit_grad(argument).wengert(X4)


def test_copies_by_gather_stay_independent():
    def f(x):
        r = x * 1.0
        y = np.roll(r, 1) + r[[0, 2, 1, 3]] + np.tile(r, 1)     # copies in NumPy
        r[1] = 10.0 * x[0]
        return _weighted(y) + np.sum(r)

    check_grads_python(f, [X4])


# ---------------------------------------------------------------- copies that aliased

COPIES = {
    "np.array": lambda r: np.array(r),
    "np.array(dtype=float)": lambda r: np.array(r, dtype=float),
    "np.positive": np.positive,
    "np.conjugate": np.conjugate,
    "r.flatten": lambda r: r.flatten(),
    "r.astype": lambda r: r.astype(np.float64),
}


@pytest.mark.parametrize("name", COPIES)
def test_copies_do_not_alias(name):
    copy = COPIES[name]

    def f(x):
        r = x * 1.0
        y = copy(r)
        r[1] = 10.0 * x[0]          # not seen by the copy
        y[2] = 3.0 * x[3]           # not seen by r
        return _weighted(y) + 0.5 * _weighted(r * r)

    check_grads_python(f, [X4])


def test_np_asarray_and_astype_without_copy_alias():
    def f(x):
        r = x * 1.0
        y = np.asarray(r)
        z = r.astype(np.float64, copy=False)
        r[1] = 10.0 * x[0]
        return _weighted(y) + _weighted(z * z)

    assert python_value(jitad.jit_grad(f), [X4]) == pytest.approx(f(X4.copy()))
    check_grads_python(f, [X4])


# ---------------------------------------------------------------- calls

def _loss_and_input(x):
    return np.sum(x * x), x


def test_has_aux_objects_of_one_function_share_nothing_wrong():
    """A second has_aux object of the same function found the first one's trace in the
    store, which kept no aux structure: the call crashed (float() of a tuple)."""
    x = np.array([1.0, 2.0])
    for _ in range(2):
        grad, aux = jitad.jit_grad(_loss_and_input, has_aux=True)(x)
        np.testing.assert_allclose(grad, 2 * x)
        np.testing.assert_allclose(aux, x)


def test_keyword_only_arguments_are_never_silently_ignored():
    """With *args the keyword-only `scale=5.0` was dropped: the gradient used the default."""
    def f(x, *rest, scale=3.0):
        return np.sum(x) * scale

    with pytest.raises(jitad.ArgumentError, match="keyword-only parameter.*scale"):
        jitad.jit_grad(f).wengert(X4, scale=5.0)


def test_a_user_kernel_given_arguments_it_cannot_take_is_a_trace_error():
    """A scalar kernel given an array failed with Numba's TypingError from inside jitad."""
    numba = pytest.importorskip("numba")
    import math

    @numba.njit
    def softplus_kernel(t):
        return math.log1p(math.exp(t))

    softplus = jitad.primitive(softplus_kernel, jvp=lambda p, t: t[0] / (1.0 + np.exp(-p[0])))
    with pytest.raises(TraceError, match=r"(?s)softplus_kernel.* cannot be called with "
                                         r"\(float64\[4\]\).*test_adversarial.py"):
        jitad.jit_grad(lambda x: np.sum(softplus(x))).wengert(X4)


# ---------------------------------------------------------------- numbers and dtypes

def test_python_ints_beyond_int64_compute_as_floats():
    """`np.sum(x) * n` with a static n = 10**20 printed an int literal Numba cannot type."""
    def f(x, n):
        return np.sum(x) * n + np.sum(x * (2 ** 70))

    for n in (10 ** 20, -(10 ** 20)):
        value, (grad,) = python_value_and_grad(jitad.jit_grad(f), [X4, n])
        assert value == pytest.approx(f(X4, n), rel=1e-12)
        np.testing.assert_allclose(grad, np.full(4, float(n) + 2.0 ** 70), rtol=1e-12)


HALF = np.array([1.5, 2.5, 3.5, 4.5], dtype=np.float16)
SWAPPED = np.array([1.5, 2.5, 3.5, 4.5], dtype=">f8")


@pytest.mark.parametrize("constant", ["HALF", "SWAPPED"])
def test_constant_arrays_numba_cannot_read_are_trace_errors(constant):
    """A float16 or byte-swapped global array crashed in Numba (NotImplementedError)."""
    c = globals()[constant]
    with pytest.raises(TraceError, match="unsupported constant array of dtype.*astype"):
        jitad.jit_grad(lambda x: np.sum(x * c)).wengert(X4)


def test_uint64_beyond_int64_is_an_argument_error():
    """uint64 values of 2**63 or more were converted to negative int64 values."""
    big = np.array([2 ** 63 + 1, 1, 2, 3], dtype=np.uint64)
    with pytest.raises(jitad.ArgumentError, match="uint64 array with values of 2\\*\\*63"):
        jitad.jit_grad(lambda x, y: np.sum(x * y)).wengert(X4, big)
    small = np.array([1, 2, 3, 4], dtype=np.uint64)       # fine: exactly int64
    check_grads_python(lambda x, y: np.sum(x * y), [X4, small])


def _by_mask_count(x, mask):
    s = x[mask]
    if len(s) > 2:                  # a size, not a guard: the code depends on the mask
        return np.sum(s ** 2)
    return np.sum(s ** 3)


def test_traces_of_other_masks_never_share_a_stored_build():
    """The second mask's trace found the first one's build in the store (same function,
    key and guard outcomes) and ran it: sum(s**2) where NumPy computes sum(s**3)."""
    f = jitad.jit_grad(_by_mask_count)
    for mask in ([True, True, True, False], [True, True, False, False]):
        mask = np.array(mask)
        assert f.value(X4, mask) == pytest.approx(_by_mask_count(X4, mask))


def test_a_0d_integer_array_indexes_like_an_int():
    """x[k] with k = np.array(2) generated code Numba could not compile (a 0-d array index)."""
    f = jitad.jit_grad(lambda x, k: x[k] ** 2 + np.sum(x * k))
    for k in (np.array(2), np.array(-1, dtype=np.int32)):
        value, grad = f.value_and_grad(X4, k)
        assert value == pytest.approx(X4[k] ** 2 + np.sum(X4 * k))
        want = np.full(4, float(k))
        want[k] += 2 * X4[k]
        np.testing.assert_allclose(grad, want)
    with pytest.raises(IndexError, match="index 7 is out of bounds"):
        f(X4, np.array(7))


# ---------------------------------------------------------------- outputs

def test_a_reshaped_scalar_output_prints():
    """np.sum(x).reshape(()) crashed codegen (a Literal seed read as a Var in a fused loop)."""
    check_grads_python(lambda x: np.sum(x * x).reshape(()), [X4])
    check_grads_python(lambda x: np.expand_dims(np.sum(x * x), 0)[0], [X4])


def test_a_constant_0d_array_output_is_a_scalar():
    """`return np.array(5.0)` was refused as 'not a scalar (a float or 0-d array)'."""
    value, (grad,) = python_value_and_grad(jitad.jit_grad(lambda x: np.array(5.0)), [X4])
    assert value == 5.0
    np.testing.assert_array_equal(grad, np.zeros(4))


def test_jit_grad_of_a_jitad_object_differentiates_what_it_computes():
    """jit_grad(loss) with loss a jit_grad object failed with Python's TypeError (its
    generated __call__ was bound like a method); now it is loss's gradient, an array."""
    loss = jitad.jit_grad(lambda x: np.sum(x ** 3))
    with pytest.raises(jitad.NonScalarOutputError, match="returned an array of shape \\(4,\\)"):
        jitad.jit_grad(loss).wengert(X4)
    check_grads_python(jitad.jit_grad(lambda x: np.sum(loss(x) ** 2)), [X4])


# ---------------------------------------------------------------- what custom rules read

RULE_SCALE = 2.0


@jitad.custom_vjp
def _scaled_by_rule(x):
    return x * 2.0


_scaled_by_rule.defvjp(lambda x: (x * 2.0, ()), lambda residuals, g: (g * RULE_SCALE,))


def test_rebinding_a_global_a_custom_rule_reads_retraces():
    """The bwd rule's global RULE_SCALE was rebound, and a redefined rule installed: calls
    kept the old gradient (no binding a rule read was checked)."""
    global RULE_SCALE
    f = jitad.jit_grad(lambda x: np.sum(_scaled_by_rule(x)))
    try:
        for scale in (2.0, 7.0):
            RULE_SCALE = scale
            np.testing.assert_allclose(python_value_and_grad(f, [X4])[1][0], np.full(4, scale))
        _scaled_by_rule.defvjp(lambda x: (x * 2.0, ()), lambda residuals, g: (g * 100.0,))
        np.testing.assert_allclose(python_value_and_grad(f, [X4])[1][0], np.full(4, 100.0))
    finally:
        RULE_SCALE = 2.0
        _scaled_by_rule.defvjp(lambda x: (x * 2.0, ()), lambda residuals, g: (g * RULE_SCALE,))


@pytest.mark.parametrize("shape", ["auto", "llvm", "tape"])
def test_equal_outputs_are_distinct_arrays(shape):
    """Gradients that are the same value (CSE) come back as separate arrays: updating one in
    place (gx *= 0.5) must not change the other."""
    x, y = np.ones(3), np.arange(3.0)
    f = jitad.jit_grad(lambda x, y: np.sum(x * 2.0 + y * 2.0), argnums=(0, 1), code_shape=shape)
    for gx, gy in (f(x, y), f.value_and_grad(x, y)[1]):
        assert not np.shares_memory(gx, gy)
        gx *= 0.5
        np.testing.assert_array_equal(gy, [2.0, 2.0, 2.0])
    g = jitad.jit_grad(lambda x: (np.sum(x ** 2), (x * 2.0, x * 2.0)), has_aux=True)
    _, (a, b) = g(x)
    assert not np.shares_memory(a, b)
