"""Runtime safety of compiled code: a kernel serves every shape of its key (dtype, rank,
size class), so generated code checks what it relies on per call.

* operands of fused loops and in-place accumulations must broadcast to the loop bounds
  (ValueError, NumPy's text), gather/scatter indices must be in bounds (IndexError;
  negative ones wrap), the llvm wrapper and the tape check the lengths their offsets
  assume;
* through the API a violation becomes the error NumPy raises, located at the user's
  line, or a new specialization where the shapes are valid;
* generated names never shadow the user's (any parameter name, any function name);
* the tape and llvm shapes follow NumPy where they used to differ (NaN in maximum,
  constant outputs).

Breadth goes through the plain-Python path (the generated source without Numba); a
few shared compiled functions check the compiled path, and a Hypothesis test calls
them after a different first call with random shapes, strides and indices.
"""
import math
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

import jitad
from jitad import compile as compiler
from jitad import runtime
from jitad.api import build, build_source
from jitad.compile import load_python
from conftest import assert_close, check_grads_python, numeric_grad, traced


def generated(fun, args, code_shape="auto", argnums=0):
    """(source, the generated value-and-gradient function as plain Python) for `args`."""
    f = jitad.jit_grad(fun, argnums=argnums, code_shape=code_shape)
    variant, _ = traced(f, args)
    source, name, _ = build_source(variant, "value_and_grad", variant.wrt, f.__name__,
                                   code_shape)
    return source, load_python(source, name)


def mul_add(x, y):
    return np.sum(x * y + x)


def gather_square(x, i):
    return np.sum(x[i] * x[i])


def two_elements(x, idx):
    return x[idx[0]] * 2.0 + x[idx[1]] ** 2


# ---------------------------------------------------------------- compiled, shared

@pytest.fixture(scope="module")
def compiled_mul_add():
    f = jitad.jit_grad(mul_add, argnums=(0, 1))
    f(np.ones(3), np.ones(3))
    return f


@pytest.fixture(scope="module")
def compiled_gather():
    g = jitad.jit_grad(gather_square)
    g(np.array([1.0, 2.0, 3.0]), np.array([0, 2]))
    return g


@pytest.fixture(scope="module")
def compiled_two_elements():
    return jitad.jit_grad(two_elements)


def test_mismatched_lengths_raise_numpy_value_error_at_the_users_line(compiled_mul_add):
    f = compiled_mul_add
    for x, y in [(np.arange(1.0, 6.0), np.arange(1.0, 3.0)), (np.ones(40), np.ones(3))]:
        with pytest.raises(ValueError) as info:
            np.sum(x * y + x)
        with pytest.raises(ValueError, match=rf"\({x.size},\) and \({y.size},\)"
                                             r"(.|\n)*test_runtime_safety.py:\d+ \(mul_add\)"):
            f.value_and_grad(x, y)
        assert "broadcast" in str(info.value)


def test_other_lengths_of_the_same_key_are_right(compiled_mul_add):
    x, y = np.arange(1.0, 5.0), np.array([0.5, -1.0, 2.0, 3.0])
    value, (gx, gy) = compiled_mul_add.value_and_grad(x, y)
    assert_close(value, mul_add(x, y), 1e-12, 1e-12)
    assert_close(gx, y + 1.0, 1e-12, 1e-12)
    assert_close(gy, x, 1e-12, 1e-12)


def test_gather_indices_are_checked_and_wrap(compiled_gather):
    g, x = compiled_gather, np.array([1.0, 2.0, 3.0])
    value, grad = g.value_and_grad(x, np.array([0, -1]))
    assert value == 10.0
    assert_close(grad, [2.0, 0.0, 6.0], 0, 0)
    for bad in ([0, 3], [-4, 1]):       # same shape as the first call: the entry's kernel
        with pytest.raises(IndexError, match=f"index {bad[0] if bad[0] < 0 else 3} is out "
                                             "of bounds for axis 0 with size 3"):
            g.value_and_grad(x, np.array(bad))
    with pytest.raises(IndexError, match=r"index 5 is out of bounds for axis 0 with size 3"
                                         r"(.|\n)*test_runtime_safety.py:\d+"):
        g.value_and_grad(x, np.array([0, 1, 5]))      # the full path: retraced, located
    assert g(x, np.array([2, 2, -3])).tolist() == [2.0, 0.0, 12.0]   # repeats add up


def test_a_static_index_out_of_bounds_is_numpys_index_error_at_the_users_line():
    def fifth(x):
        return x[5] * 2.0

    with pytest.raises(IndexError, match=r"(?s)getitem: .*index 5 is out of bounds for axis 0 "
                                         r"with size 3.*test_runtime_safety.py:\d+ \(fifth\)"):
        jitad.jit_grad(fifth)(np.ones(3))


def test_scalar_gather_from_an_index_array(compiled_two_elements):
    g, x = compiled_two_elements, np.array([1.0, 2.0, 3.0])
    value, grad = g.value_and_grad(x, np.array([1, -1]))
    assert value == two_elements(x, np.array([1, -1]))
    assert grad.tolist() == [0.0, 2.0, 6.0]
    with pytest.raises(IndexError, match="index 7 is out of bounds"):
        g.value_and_grad(x, np.array([7, 0]))


def test_a_parameter_named_like_a_loop_index():
    h = jitad.jit_grad(lambda x, i0: np.sum(x * i0 + x * x), argnums=(0, 1))
    value, (gx, gi) = h.value_and_grad(np.arange(1.0, 4.0), 2.5)
    assert value == 29.0
    assert gx.tolist() == [4.5, 6.5, 8.5] and gi == 6.0


@pytest.mark.parametrize("shape", ["tape", "llvm"])
def test_tape_and_llvm_constant_outputs_and_nan(shape):
    f = jitad.jit_grad(lambda x, y: 2.0 * x + math.inf * y + np.maximum(x, y),
                       argnums=(0, 1), code_shape=shape)
    value, grads = f.value_and_grad(1.5, -2.0)
    assert value == -math.inf and grads == (3.0, math.inf)
    value, _ = f.value_and_grad(1.0, math.nan)
    assert math.isnan(value)
    unused = jitad.jit_grad(lambda x, y: 2.0 * x, argnums=(0, 1), code_shape=shape)
    assert unused.value_and_grad(1.5, 2.0) == (3.0, (2.0, 0.0))


def test_tape_maximum_and_minimum_propagate_nan():
    def both(x, y):
        return np.maximum(x, y) + np.minimum(x, y) * 2.0

    f = jitad.jit_grad(both, code_shape="tape")
    assert f.value_and_grad(1.0, 3.0) == (5.0, 2.0)
    for x, y in [(1.0, math.nan), (math.nan, 1.0)]:
        assert math.isnan(f.value_and_grad(x, y)[0])


def test_llvm_and_tape_check_the_lengths_they_were_encoded_for():
    def reads(x, y):
        return x[1] * y[0] + x[0]

    f = jitad.jit_grad(reads, argnums=(0, 1), code_shape="llvm")
    x, y = np.array([1.0, 2.0, 3.0]), np.array([4.0])
    assert f.value_and_grad(x, y)[0] == 9.0
    with pytest.raises(ValueError, match=r"x has another shape, but .* shape \(3,\)"):
        f.njit_value_and_grad(x, y)(x[:2], y)
    variant, _ = traced(f, [x, y])
    _, _, wengert, _ = build(variant, "value_and_grad", variant.wrt, "reads", "tape",
                             for_reading=False)
    kernel = compiler.tape_kernel(wengert)
    assert kernel(x, y)[0] == 9.0
    with pytest.raises(ValueError, match=r"x has shape \(4,\), but .* shape \(3,\)"):
        kernel(np.ones(4), y)


def test_function_names_with_quotes_and_backslashes():
    def fn(x):
        return x * x

    fn.__name__ = 'a"""b\\c"'
    f = jitad.jit_grad(fn)
    assert f(3.0) == 6.0
    assert 'a\\"\\"\\"b\\\\c\\"' in f.source(3.0)


# ---------------------------------------------------------------- the checks, uncompiled

def test_fused_loop_checks_each_operand_against_its_bounds():
    source, run = generated(mul_add, [np.ones(3), np.ones(3)])
    assert "check_broadcast(x.shape, y.shape)" in source
    with pytest.raises(ValueError, match=r"shapes \(5,\) \(2,\)"):
        run(np.ones(5), np.ones(2))
    with pytest.raises(ValueError, match=r"shapes \(2,\) \(5,\)"):
        run(np.ones(2), np.ones(5))
    x, y = np.arange(4.0), np.arange(4.0) - 1.0
    value, (gx,) = run(x, y)
    assert_close(value, mul_add(x, y), 1e-12, 1e-12)
    assert_close(gx, y + 1.0, 1e-12, 1e-12)


def test_fused_loop_broadcasting_axes():
    source, run = generated(mul_add, [np.ones((2, 3)), np.ones((2, 1))])
    x, y = np.arange(8.0).reshape(2, 4), np.array([[2.0], [-1.0]])
    assert_close(run(x, y)[0], mul_add(x, y), 1e-12, 1e-12)
    with pytest.raises(ValueError, match=r"shapes \(2,3\) \(3,1\)"):
        run(np.ones((2, 3)), np.ones((3, 1)))


def test_element_reads_check_the_exact_shape_they_were_traced_for():
    def reads(x):
        return x[0] * x[2] + x[-1]

    source, run = generated(reads, [np.arange(1.0, 4.0)])
    assert run(np.array([2.0, 0.0, 5.0]))[0] == 15.0
    for bad in (np.ones(2), np.ones(4)):
        with pytest.raises(ValueError, match=r"x has another shape, but this "
                                             r"specialization .* shape \(3,\)"):
            run(bad)


def test_a_slice_that_changes_size_class_gets_its_own_specialization():
    def sliced(x, y):
        return np.sum(x[1:] * y)

    source, run = generated(sliced, [np.ones(2), np.ones(3)])      # x[1:] has size 1
    with pytest.raises(ValueError, match="a slice has size 3 on axis 0 where this "
                                         "specialization was traced with size 1"):
        run(np.arange(4.0), np.ones(3))
    f = jitad.jit_grad(sliced, argnums=(0, 1))
    f(np.ones(2), np.ones(3))
    x, y = np.arange(4.0), np.array([1.0, -2.0, 0.5])
    value, (gx, gy) = f.value_and_grad(x, y)
    assert value == sliced(x, y)
    assert gx.tolist() == [0.0, 1.0, -2.0, 0.5] and gy.tolist() == [1.0, 2.0, 3.0]


def test_slice_update_and_accumulation_checks():
    def shifted(x, y):
        return np.sum(x[1:] * y) + np.sum(x[:-1] * y)

    source, run = generated(shifted, [np.ones(4), np.ones(3)])
    x, y = np.arange(6.0), np.arange(5.0) + 1.0
    value, (gx,) = run(x, y)
    assert_close(value, shifted(x, y), 1e-12, 1e-12)
    assert_close(gx, numeric_grad(shifted, [x, y])[0], 1e-6, 1e-8)
    with pytest.raises(ValueError, match="broadcast"):
        run(np.ones(6), np.ones(4))
    with pytest.raises(ValueError, match=r"shapes \(4,\) \(3,\)"):
        runtime.check_slice(5, 1, 5, 3)
    runtime.check_slice(5, -2, 5, 2)
    runtime.check_broadcast((2, 3), (3,))
    with pytest.raises(ValueError, match=r"shapes \(2,3\) \(4,\)"):
        runtime.check_broadcast((2, 3), (4,))


def test_in_place_accumulation_checks_its_update():
    def twice(x, y):
        return np.sum(np.sin(x) * y) + np.sum(np.cos(x + y))

    source, run = generated(twice, [np.ones((2, 3)), np.ones((1, 3))], code_shape="straight")
    assert "check_broadcast(" in source
    x, y = np.arange(6.0).reshape(2, 3) / 5, np.array([[0.5, -1.0, 2.0]])
    assert_close(run(x, y)[1][0], numeric_grad(twice, [x, y])[0], 1e-6, 1e-8)
    with pytest.raises(ValueError, match="broadcast"):
        run(np.ones((2, 3)), np.ones((1, 4)))


@pytest.mark.parametrize("shape", ["straight", "loops"])
def test_gather_and_scatter_checks_uncompiled(shape):
    source, run = generated(gather_square, [np.ones(3), np.array([0, 2])], code_shape=shape)
    x = np.array([1.0, 2.0, 3.0, 4.0])
    value, (grad,) = run(x, np.array([-1, 0, -1]))
    assert value == 33.0 and grad.tolist() == [2.0, 0.0, 0.0, 16.0]
    for bad in (4, -5):
        with pytest.raises(IndexError, match=f"index {bad} is out of bounds"):
            run(x, np.array([0, bad]))
    with pytest.raises(IndexError, match="index 3 is out of bounds"):
        runtime.scatter_add(np.zeros(3), np.array([0, 3]), np.ones(2))


def test_gather_with_index_arrays_of_two_dimensions():
    def rows(x, idx):
        return np.sum(x[idx] ** 2)

    X, idx = np.arange(6.0).reshape(3, 2), np.array([[0, 1], [1, -1]])
    for x in (X, X[:, 0]):
        _, run = generated(rows, [x, idx])
        value, (grad,) = run(x, idx)
        assert_close(value, rows(x, idx), 1e-12, 1e-12)
        assert_close(grad, numeric_grad(rows, [x, idx])[0], 1e-6, 1e-8)
        with pytest.raises(IndexError, match="index 3 is out of bounds"):
            run(x, np.array([[0, 1], [3, 0]]))


def test_runtime_index_errors_name_numpys_axis():
    a = np.arange(12.0).reshape(3, 4)
    cases = [(lambda a, i, j: np.sum(a[i, j]), (np.array([0, 1]), np.array([1, 4]))),
             (lambda a, i, j: np.sum(a[i, j]), (np.array([0, 3]), np.array([1, 2]))),
             (lambda a, j: np.sum(a[:, j]), (np.array([5]),)),
             (lambda a, j: np.sum(np.take(a, j, axis=-1)), (np.array([-5]),))]
    for fun, indices in cases:
        with pytest.raises(IndexError) as numpy_error:
            fun(a, *indices)
        good = tuple(np.zeros_like(i) for i in indices)
        f = jitad.jit_grad(fun)
        f(a, *good)                             # compiled for these index arguments
        with pytest.raises(IndexError, match=re.escape(str(numpy_error.value))):
            f(a, *indices)


NASTY_NAMES = ["i0", "i1", "j0", "k", "k0", "n", "np", "math", "v1", "v1_bar", "x_bar",
               "x_view", "v2_e", "x_e", "out", "x_out", "v1_prev", "v1_tape", "slots",
               "GuardFailed", "scatter_add", "checked_index", "check_broadcast", "tape",
               "counters", "IR", "run_ir", "status", "adjoint0", "range", "abs", "a0", "c",
               "x_dot", "é"]


def _with_parameter(name: str, body: str):
    """`def f(x, <name>): return <body>` with `N` in `body` standing for the parameter."""
    namespace = {"numpy": np}
    exec(f"def f(x, {name}):\n    return {body.replace('N', name)}\n", namespace)
    return namespace["f"]


@pytest.mark.parametrize("name", NASTY_NAMES)
def test_any_parameter_name_works(name):
    arrays = _with_parameter(name, "numpy.sum(x * N + x * x) + numpy.sum(x[1:] * N[:-1]) "
                                   "+ numpy.maximum(N[0], x[1])")
    rng = np.random.default_rng(len(name))
    check_grads_python(arrays, [rng.standard_normal(4), rng.standard_normal(4)],
                       argnums=(0, 1), context=name)
    scalar = _with_parameter(name, "numpy.sum(x * N + x * x)")
    check_grads_python(scalar, [rng.standard_normal(3), 2.5], argnums=(0, 1), context=name)


def test_any_parameter_name_works_in_loops_shape():
    def rolled(x, k):
        s = 0.0
        for t in range(40):
            s = s * 0.5 + math.sin(x[t]) * k
        return s

    f = jitad.jit_grad(rolled, argnums=(0, 1), code_shape="loops")
    args = [np.linspace(-1.0, 1.0, 40), 1.5]
    assert "for k in range" in f.source(*args)
    check_grads_python(f, args, argnums=(0, 1))


def test_any_parameter_name_works_in_llvm_and_tape():
    def wrapper_names(IR, slots, status, run_ir, adjoint0, i0, k, é):
        return IR * slots + status[1] * run_ir - adjoint0[0] * i0 + k * status[0] + é[0] * é[1]

    args = [1.5, -0.5, np.array([2.0, 3.0]), 0.25, np.array([4.0]), 2.0, 0.75,
            np.array([0.5, -1.5])]
    want_value = wrapper_names(*args)
    want = numeric_grad(wrapper_names, args, tuple(range(8)))
    for shape in ("llvm", "tape"):
        f = jitad.jit_grad(wrapper_names, argnums=tuple(range(8)), code_shape=shape)
        value, grads = f.value_and_grad(*args)
        assert_close(value, want_value, 1e-12, 1e-12, shape)
        for g, w in zip(grads, want):
            assert_close(g, w, 1e-6, 1e-8, shape)


# ---------------------------------------------------------------- random calls (Hypothesis)

SETTINGS = dict(derandomize=True, deadline=None, database=None, max_examples=40,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                       HealthCheck.function_scoped_fixture])

def mixed(x, y):
    return np.sum(x * y + np.sin(x))


PROGRAMS = {     # name: (function, kind of the second argument, first call)
    "mul_add": (mul_add, "vector", [np.ones(3), np.ones(3)]),
    "gather": (gather_square, "index", [np.ones(3), np.array([0, 2])]),
    "shifted": (lambda x, y: np.sum(np.tanh(x[1:]) * y), "vector", [np.ones(4), np.ones(3)]),
    "mixed": (mixed, "broadcast", [np.ones((3, 3)), np.ones((3, 3))]),
}


@pytest.fixture(scope="module")
def programs():
    """The programs compiled once, each after a first call with shapes the draws avoid."""
    out = {}
    for name, (fun, kind, first) in PROGRAMS.items():
        f = jitad.jit_grad(fun)
        f(*first)
        out[name] = (f, fun, kind)
    return out


def _strided(values, layout):
    """`values` contiguous, as every other element of a larger array, or reversed (a view
    with negative strides); 2-D arrays may also come transposed (Fortran order)."""
    if layout == "every other":
        base = np.zeros((2 * values.shape[0],) + values.shape[1:], dtype=values.dtype)
        base[::2] = values
        return base[::2]
    if layout == "reversed":
        return values[::-1].copy()[::-1]
    if layout == "transposed" and values.ndim == 2:
        return values.T.copy().T
    return values


def _floats(data, shape):
    return np.array(data.draw(st.lists(st.floats(-2.0, 2.0), min_size=int(np.prod(shape)),
                                       max_size=int(np.prod(shape))))).reshape(shape)


LAYOUTS = st.sampled_from(["contiguous", "every other", "reversed", "transposed"])


@settings(**SETTINGS)
@given(data=st.data())
def test_random_shapes_strides_and_indices_match_numpy(programs, data):
    name = data.draw(st.sampled_from(sorted(PROGRAMS)))
    f, fun, kind = programs[name]
    n = data.draw(st.integers(2, 6))
    if kind == "broadcast":
        m = data.draw(st.integers(2, 4))
        x = _strided(_floats(data, (m, n)), data.draw(LAYOUTS))
        shape = data.draw(st.sampled_from([(m, n), (n,), (1, n), (m, 1), (m + 1, n), ()]))
        second = float(_floats(data, (1,))[0]) if shape == () else _floats(data, shape)
    else:
        x = _strided(_floats(data, (n,)), data.draw(LAYOUTS))
        if kind == "index":
            second = np.array(data.draw(st.lists(st.integers(-n - 2, n + 1), min_size=2,
                                                 max_size=5)), dtype=np.int64)
        else:
            second = _floats(data, (data.draw(st.integers(2, 6)),))
        second = _strided(second, data.draw(LAYOUTS))
    args = [x, second]
    try:
        with np.errstate(all="ignore"):
            want = fun(*args)
    except (ValueError, IndexError) as error:
        event(f"{name}: NumPy raises {type(error).__name__}")
        with pytest.raises(type(error)):
            f.value_and_grad(*args)
        return
    event(f"{name}: a value")
    assume(np.isfinite(want))
    value, grad = f.value_and_grad(*args)
    assert_close(value, want, 1e-12, 1e-12, f"{name} value")
    assert_close(grad, numeric_grad(fun, args, 0)[0], 1e-6, 1e-7, f"{name} gradient")
