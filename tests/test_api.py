"""The public API: argnums, value_and_grad with SciPy, value, caching and static arguments,
inspecting the Wengert list and the generated source, Numba interop, pickling.
"""
import functools
import inspect
import math
import os
import pickle
import sys
from pathlib import Path

import numba
import numpy as np
import pytest

import jitad
from conftest import assert_close, numeric_grad


def seed_f(x1, x2):
    return math.log(x1) + x1 * x2 - math.sin(x2)


def seed_grad(x1, x2):
    return 1.0 / x1 + x2, x1 - math.cos(x2)


# A module-level function: shared compiled object and the pickling target.
@jitad.jit_grad(argnums=(0, 1))
def seed_both(x1, x2):
    return math.log(x1) + x1 * x2 - math.sin(x2)


@jitad.jit_grad
def rosenbrock(x):
    return np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


# ---------------------------------------------------------------- argnums

def test_decorator_without_arguments_differentiates_the_first_argument():
    f = jitad.jit_grad(seed_f)
    g = f(2.0, 5.0)
    assert isinstance(g, float) and g == pytest.approx(5.5, rel=1e-12)


def test_argnums_int_selects_one_argument():
    f = jitad.jit_grad(seed_f, argnums=1)
    assert f(2.0, 5.0) == pytest.approx(seed_grad(2.0, 5.0)[1], rel=1e-12)


def test_argnums_tuple_returns_a_tuple_in_that_order():
    f = jitad.jit_grad(argnums=(1, 0))(seed_f)
    g = f(2.0, 5.0)
    assert isinstance(g, tuple) and len(g) == 2
    assert g == pytest.approx(seed_grad(2.0, 5.0)[::-1], rel=1e-12)


def test_argnums_one_element_tuple_returns_a_one_element_tuple():
    f = jitad.jit_grad(seed_f, argnums=(0,))
    g = f(2.0, 5.0)
    assert isinstance(g, tuple) and g == pytest.approx((5.5,), rel=1e-12)


def test_argnums_out_of_range_is_an_argument_error():
    f = jitad.jit_grad(seed_f, argnums=2)
    with pytest.raises(jitad.ArgumentError, match=r"argnums=2.*2 argument"):
        f(2.0, 5.0)


@pytest.mark.parametrize("argnums", [(), "0", (0, "1"), (0, 1.0)])
def test_invalid_argnums_is_an_argument_error(argnums):
    with pytest.raises(jitad.ArgumentError, match="argnums"):
        jitad.jit_grad(seed_f, argnums=argnums)


def test_float_argnums_is_an_argument_error():
    with pytest.raises(jitad.ArgumentError, match="argnums"):
        jitad.jit_grad(seed_f, argnums=1.0)


def test_differentiating_an_int_argument_suggests_passing_a_float():
    f = jitad.jit_grad(seed_f, argnums=(0, 1))
    with pytest.raises(jitad.ArgumentError, match=r"x2.*only floats.*pass 5\.0"):
        f(2.0, 5)


def test_argnums_after_a_static_argument():
    def power(n, x):
        return x ** n
    f = jitad.jit_grad(power, argnums=1)
    assert f(3, 2.0) == pytest.approx(12.0, rel=1e-12)          # d/dx x³ = 3x²


CONSTANT = np.array([1.0, 2.0, 3.0])


def test_negative_argnums_with_a_captured_constant_array():
    def f(x, y):
        return np.sum(x * CONSTANT) * y
    g = jitad.jit_grad(f, argnums=-1)(np.ones(3), 2.0)
    assert g == pytest.approx(6.0, rel=1e-12)                   # d/dy = sum(x * CONSTANT)


def test_negative_argnums_counts_from_the_end():
    f = jitad.jit_grad(seed_f, argnums=-1)
    assert f(2.0, 5.0) == pytest.approx(seed_grad(2.0, 5.0)[1], rel=1e-12)


def test_gradient_of_an_unused_argument_is_zero_with_its_shape():
    f = jitad.jit_grad(lambda x, y, s: np.sum(x ** 2), argnums=(0, 1, 2))
    gx, gy, gs = f(np.array([1.0, -2.0]), np.ones((2, 3)), 4.0)
    assert_close(gx, [2.0, -4.0], 0, 0)
    assert isinstance(gy, np.ndarray) and gy.shape == (2, 3) and not gy.any()
    assert type(gs) is float and gs == 0.0


def test_returning_an_input_unchanged_has_unit_gradient():
    f = jitad.jit_grad(lambda x, y: x, argnums=(0, 1))
    assert f(1.5, 2.0) == (1.0, 0.0)


def test_keyword_arguments_and_defaults_bind_like_python():
    def scaled(x, y, scale=2.0):
        return scale * x * y
    f = jitad.jit_grad(scaled, argnums=(0, 1))
    assert f(3.0, y=4.0) == pytest.approx((8.0, 6.0), rel=1e-12)
    assert f(3.0, 4.0, scale=0.5) == pytest.approx((2.0, 1.5), rel=1e-12)


def test_keywords_defaults_and_other_signatures_after_compiling():
    # After the first compile, calls go through an entry generated for that signature;
    # everything else must still bind like Python and reach the right specialization.
    def scaled(x, y, scale=2.0):
        return scale * np.sum(x * y)
    f = jitad.jit_grad(scaled, argnums=(0, 1))
    x, y = np.array([1.0, 2.0]), np.array([3.0, 4.0])
    expected = (2.0 * y, 2.0 * x)
    for call in (lambda: f(x, y), lambda: f(x, y=y), lambda: f(y=y, x=x),
                 lambda: f(x, y, 2.0), lambda: f.value_and_grad(x, y)[1]):
        assert_close(call(), expected, rtol=1e-12)
    assert_close(f(x, y, scale=0.5), (0.5 * y, 0.5 * x), rtol=1e-12)
    assert_close(f(x[:1], y[:1]), (2.0 * y[:1], 2.0 * x[:1]), rtol=1e-12)   # another shape
    assert_close(f(x, y), expected, rtol=1e-12)                             # and back
    assert f.value(x, y) == pytest.approx(22.0, rel=1e-12)
    assert f.value(x, y=y, scale=1.0) == pytest.approx(11.0, rel=1e-12)
    with pytest.raises(TypeError, match=r"scaled\(\) takes from 2 to 3 positional"):
        f(x, y, 2.0, 1.0)
    with pytest.raises(TypeError, match=r"scaled(\.value_and_grad)?\(\) got an unexpected keyword argument 'z'"):
        f.value_and_grad(x, y, z=1.0)


def test_references_taken_before_compiling_reach_every_specialization():
    f = jitad.jit_grad(lambda x, y: np.sum(x * y), argnums=(0, 1))
    value_and_grad, value = f.value_and_grad, f.value          # as minimize(f.value_and_grad)
    for n in (3, 1, 3):
        x, y = np.arange(1.0, n + 1.0), np.full(n, 2.0)
        got_value, (gx, gy) = value_and_grad(x, y)
        assert got_value == pytest.approx(2.0 * x.sum()) and value(x, y) == got_value
        assert_close(gx, y, rtol=1e-15)
        assert_close(gy, x, rtol=1e-15)
    assert f.trace_count == 2


def test_varargs_functions_take_any_count_after_compiling():
    f = jitad.jit_grad(lambda *xs: sum(x * x for x in xs), argnums=(0, 1))
    assert f(1.0, 2.0) == pytest.approx((2.0, 4.0), rel=1e-12)
    assert f(1.0, 2.0, 3.0) == pytest.approx((2.0, 4.0), rel=1e-12)
    value, grad = f.value_and_grad(1.0, 2.0)
    assert value == pytest.approx(5.0, rel=1e-12) and grad == pytest.approx((2.0, 4.0))


# ---------------------------------------------------------------- value_and_grad, value, caching

def test_value_and_grad_drives_scipy_lbfgsb_to_the_rosenbrock_minimum():
    scipy_optimize = pytest.importorskip("scipy.optimize")
    x0 = np.array([-1.2, 1.0, -0.5, 0.8])
    result = scipy_optimize.minimize(rosenbrock.value_and_grad, x0, jac=True, method="L-BFGS-B",
                                     options={"maxiter": 500, "gtol": 1e-10})
    assert result.success, result.message
    assert_close(result.x, np.ones(4), rtol=0, atol=1e-5, what="minimizer")
    assert rosenbrock.trace_count == 1 and rosenbrock.compile_count == 1


def test_value_and_grad_returns_a_float_and_the_gradient():
    value, grads = seed_both.value_and_grad(2.0, 5.0)
    assert type(value) is float and value == pytest.approx(seed_f(2.0, 5.0), rel=1e-12)
    assert grads == pytest.approx(seed_grad(2.0, 5.0), rel=1e-12)


@pytest.mark.parametrize("x1, x2", [(2.0, 5.0), (0.5, -1.0), (3.0, 0.0)])
def test_value_equals_the_python_function(x1, x2):
    v = seed_both.value(x1, x2)
    assert type(v) is float and v == pytest.approx(seed_f(x1, x2), rel=1e-12, abs=1e-15)


def test_array_value_equals_the_python_function():
    x = np.array([0.3, -1.0, 2.0])
    assert rosenbrock.value(x) == pytest.approx(float(np.sum(
        100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)), rel=1e-12)


def test_new_float_values_do_not_retrace():
    f = jitad.jit_grad(seed_f, argnums=(0, 1))
    for x1, x2 in ((2.0, 5.0), (1.5, -3.0), (np.float64(4.0), 0.25), (np.array(0.7), 1.0)):
        assert f(x1, x2) == pytest.approx(seed_grad(float(x1), x2), rel=1e-12)
    assert f.trace_count == 1 and f.compile_count == 1


def test_value_mode_compiles_separately_but_does_not_retrace():
    f = jitad.jit_grad(seed_f)
    f(2.0, 5.0)
    assert f.value(1.0, 1.0) == pytest.approx(seed_f(1.0, 1.0), rel=1e-12)
    assert f.trace_count == 1
    assert f.compile_count == 2        # value_and_grad, then value


def configured(x, n, mode, shift, powers):
    """Static arguments: int n, str mode, None-or-int shift, tuple powers."""
    y = x ** n if mode == "power" else n * x
    if shift is not None:
        y = y + shift * x
    for p in powers:
        y = y + x ** p
    return y


def configured_grad(x, n, mode, shift, powers):
    g = n * x ** (n - 1) if mode == "power" else float(n)
    if shift is not None:
        g += shift
    return g + sum(p * x ** (p - 1) for p in powers)


def test_static_arguments_are_part_of_the_cache_key():
    f = jitad.jit_grad(configured)
    calls = [(1.5, 3, "power", None, ()), (1.5, 2, "power", None, ()),
             (1.5, 2, "scale", None, ()), (1.5, 2, "scale", 4, ()), (1.5, 2, "scale", 4, (2, 3))]
    for traces, call in enumerate(calls, start=1):
        assert f(*call) == pytest.approx(configured_grad(*call), rel=1e-12)
        assert f.trace_count == traces, f"a new static value must retrace: {call}"
    for call in calls:                      # all cached now
        assert f(*call) == pytest.approx(configured_grad(*call), rel=1e-12)
    assert f(-0.5, 2, "scale", 4, (2, 3)) == pytest.approx(configured_grad(-0.5, 2, "scale", 4, (2, 3)))
    assert f.trace_count == len(calls)


STEEPNESS = 2.0


def steep_softplus(v):
    return math.log1p(math.exp(STEEPNESS * v))      # math.* and a global: traced as user code


def activated(x, act=np.tanh):
    return sum(act(x[i]) for i in range(x.shape[0]))


def test_functions_are_static_arguments_keyed_by_identity(monkeypatch):
    """An activation passed as an argument or default: NumPy ufuncs, the user's own Python
    functions (traced like a helper they call, globals they read checked), partials, jitad's
    derivative objects."""
    x = np.array([0.5, -1.0, 2.0])
    f = jitad.jit_grad(activated)

    def sigmoid(t):
        return 1.0 / (1.0 + np.exp(-t))
    gradients = [
        ((), lambda: 1.0 - np.tanh(x) ** 2),
        ((np.sin,), lambda: np.cos(x)),
        ((steep_softplus,), lambda: STEEPNESS * sigmoid(STEEPNESS * x)),
        ((functools.partial(math.pow, 3.0),), lambda: np.log(3.0) * 3.0 ** x),
        ((jitad.grad(lambda t: t ** 3),), lambda: 6.0 * x),      # a derivative object
    ]
    for _ in range(2):                       # full path, then the generated entries
        for extra, gradient in gradients:
            assert_close(f(x, *extra), gradient(), 1e-12, 0, repr(extra))
    assert f.trace_count == 5
    monkeypatch.setattr(sys.modules[__name__], "STEEPNESS", 5.0)
    assert_close(f(x, steep_softplus), 5.0 * sigmoid(5.0 * x), 1e-12, 0, "STEEPNESS = 5")


def product_of(x, y):
    return np.sum(x * x * y)


def via_derivative(x, y, g):
    return np.sum(g(x, y) * x)


def test_derivative_objects_passed_as_static_arguments_differ_by_their_options():
    # (the store digest walked only such an object's function: grad(.., argnums=1) was served
    # the trace of grad(.., argnums=0), stored by the first call)
    x, y = np.array([0.5, -1.0, 2.0]), np.array([1.5, 2.0, -0.5])
    f = jitad.jit_grad(via_derivative)
    for _ in range(2):
        d_dx = jitad.grad(product_of, argnums=0)        # 2 x y: sum(2 x^2 y), gradient 4 x y
        assert f.value(x, y, d_dx) == pytest.approx(np.sum(2.0 * x * x * y), rel=1e-12)
        assert_close(f(x, y, d_dx), 4.0 * x * y, 1e-12, 0, "argnums=0")
        d_dy = jitad.grad(product_of, argnums=1)        # x^2: sum(x^3), gradient 3 x^2
        assert f.value(x, y, d_dy) == pytest.approx(np.sum(x ** 3), rel=1e-12)
        assert_close(f(x, y, d_dy), 3.0 * x * x, 1e-12, 0, "argnums=1")


def test_bool_static_argument_selects_a_branch_without_a_guard():
    def f(x, squared):
        return x * x if squared else 3.0 * x
    g = jitad.jit_grad(f)
    assert g(2.0, True) == pytest.approx(4.0) and g(2.0, False) == pytest.approx(3.0)
    assert "guard" not in [e.prim.name for e in g.wengert(2.0, True)]


# ---------------------------------------------------------------- inspecting: the Wengert list

def test_wengert_list_is_iterable_with_out_prim_ins_params():
    wl = seed_both.wengert(2.0, 5.0)
    entries = list(wl)
    assert len(entries) == len(wl) == 5
    assert [e.prim.name for e in entries] == ["log", "mul", "add", "sin", "sub"]
    x1, x2 = wl.inputs
    assert entries[1].ins == (x1, x2)
    assert entries[2].ins == (entries[0].out, entries[1].out)
    assert all(e.params == {} for e in entries)
    assert all(e.out.dtype == "float64" and e.out.shape == () for e in entries)
    assert wl.outputs == [entries[-1].out]


def test_wengert_params_hold_static_parameters():
    f = jitad.jit_grad(lambda x: np.sum(np.sum(x, axis=0) ** 3))
    sums = [e for e in f.wengert(np.ones((2, 3))) if e.prim.name == "sum"]
    assert [e.params["axis"] for e in sums] == [(0,), (0,)]
    powers = [e for e in f.wengert(np.ones((2, 3))) if e.prim.name == "integer_pow"]
    assert powers[0].params == {"n": 3}


def test_wengert_list_prints_one_primitive_per_line_with_types_and_user_lines():
    text = str(seed_both.wengert(2.0, 5.0))
    body_line = inspect.getsourcelines(seed_both.fun)[1] + 2          # the `return` line
    lines = text.splitlines()
    assert "x1: f64[]" in lines[0] and "x2: f64[]" in lines[0]
    entry_lines = [line for line in lines if " = " in line]
    assert len(entry_lines) == 5
    for line, prim in zip(entry_lines, ["log", "mul", "add", "sin", "sub"]):
        assert f":f64[] = {prim} " in line
        assert f"test_api.py:{body_line}" in line
    assert "v1:f64[] = log x1" in text
    assert "0x" not in text                                             # no memory addresses


def test_wengert_array_binders_show_dtype_and_shape():
    text = str(rosenbrock.wengert(np.ones(4)))
    assert "x:f64[4]" in text
    assert "f64[3]" in text                                             # x[1:] and x[:-1]


def test_wengert_to_dot_is_a_digraph_with_value_and_op_nodes():
    dot = seed_both.wengert(2.0, 5.0).to_dot()
    assert dot.lstrip().startswith("digraph")
    assert dot.rstrip().endswith("}")
    assert '"x1"' in dot and '"x2"' in dot
    assert dot.count("->") >= 10          # 8 operand edges + 5 result edges + output
    for prim in ("log", "mul", "add", "sin", "sub"):
        assert f'label="{prim}"' in dot


def test_wengert_grad_true_is_the_differentiated_list():
    wl = seed_both.wengert(2.0, 5.0, grad=True)
    names = [e.prim.name for e in wl]
    assert "cos" in names                  # d sin = cos
    assert len(wl.outputs) == 3            # value, d/dx1, d/dx2


# ---------------------------------------------------------------- inspecting: the generated source

def test_source_is_readable_forward_and_reverse_python_without_numba():
    source = seed_both.source(2.0, 5.0)
    assert "def seed_both_value_and_grad(x1, x2):" in source
    assert "# forward sweep" in source and "# reverse sweep" in source
    assert source.index("# forward sweep") < source.index("# reverse sweep")
    assert "x1_bar" in source and "x2_bar" in source
    assert "numba" not in source and "njit" not in source
    assert "test_api.py:" in source                  # comments point to the user's lines


def test_source_runs_as_plain_python_and_gives_the_same_numbers():
    source = seed_both.source(2.0, 5.0)
    namespace = {}
    exec(compile(source, "<generated>", "exec"), namespace)
    value, (g1, g2) = namespace["seed_both_value_and_grad"](2.0, 5.0)
    assert value == pytest.approx(seed_f(2.0, 5.0), rel=1e-12)
    assert (g1, g2) == pytest.approx(seed_grad(2.0, 5.0), rel=1e-12)
    assert (g1, g2) == pytest.approx(seed_both(2.0, 5.0), rel=1e-12)


def test_array_source_takes_arrays_as_arguments_never_as_data():
    x = np.array([0.123456789, 2.0, 3.0, 4.0])
    source = rosenbrock.source(x)
    assert "0.123456789" not in source
    namespace = {}
    exec(compile(source, "<generated>", "exec"), namespace)
    value, (g,) = namespace["rosenbrock_value_and_grad"](x)
    assert_close(g, numeric_grad(rosenbrock.fun, (x,))[0], 1e-6, 1e-6)
    assert_close(g, rosenbrock(x), 1e-12, 1e-12)


def test_value_mode_source_has_no_reverse_sweep():
    source = seed_both.source(2.0, 5.0, mode="value")
    assert "def seed_both_value(" in source
    assert "_bar" not in source and "# reverse sweep" not in source


# ---------------------------------------------------------------- Numba interop and pickling

def test_njit_kernel_is_callable_from_a_users_numba_function():
    kernel = rosenbrock.njit_value_and_grad(np.zeros(3))

    @numba.njit
    def descend(x, steps, rate):
        for _ in range(steps):
            value, grads = kernel(x)
            x = x - rate * grads[0]
        return x, value

    x0 = np.array([0.5, 0.4, 0.1])
    x, value = descend(x0, 3, 1e-4)
    # the same three steps in Python with the jitad gradient
    want = x0.copy()
    for _ in range(3):
        last = want
        want = want - 1e-4 * rosenbrock(want)
    assert_close(x, want, 1e-12, 1e-15)
    assert value == pytest.approx(rosenbrock.fun(last), rel=1e-12)      # value before the last step


def test_pickling_a_module_level_jit_grad_round_trips_to_the_same_object():
    assert pickle.loads(pickle.dumps(seed_both)) is seed_both
    assert pickle.loads(pickle.dumps(rosenbrock, protocol=pickle.HIGHEST_PROTOCOL)) is rosenbrock


def test_repr_names_the_function_and_argnums():
    assert "seed_both" in repr(seed_both) and "(0, 1)" in repr(seed_both)


# ---------------------------------------------------------------- the on-disk cache

def test_generated_code_is_written_to_the_session_cache_directory(jitad_cache_dir):
    assert os.environ["JITAD_CACHE_DIR"] == jitad_cache_dir
    seed_both(2.0, 5.0)
    files = [p.name for p in Path(jitad_cache_dir).glob("seed_both_value_and_grad_*.py")]
    assert files, "the generated source goes to a content-addressed file"
    text = (Path(jitad_cache_dir) / files[0]).read_text()
    assert "def seed_both_value_and_grad(" in text
    numba_index = list(Path(jitad_cache_dir).rglob("*seed_both_value_and_grad*.nbi"))
    assert numba_index, "Numba's on-disk cache (cache=True) sits next to the generated file"


def test_int_for_a_differentiated_float_is_rejected_also_after_compiling():
    f = jitad.jit_grad(lambda a, b: a * b + math.sin(a), argnums=(0, 1))
    assert f(2.0, 5.0) == pytest.approx((5.0 + math.cos(2.0), 2.0), rel=1e-12)
    with pytest.raises(jitad.ArgumentError, match=r"argument 'a'.*is int 2.*pass 2\.0"):
        f(2, 5)
