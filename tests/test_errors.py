"""Errors, tested by their text: what failed, what was observed, where (file:line and the
source text) and how to fix it. Values outside a function's domain are not errors.
"""
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import jitad

HERE = r"test_errors\.py:\d+"


def test_non_scalar_output_names_the_shape_and_points_to_reducing_or_jacobians():
    f = jitad.jit_grad(lambda x: x * 2.0)
    with pytest.raises(jitad.NonScalarOutputError, match=r"(?s)shape \(3,\).*np\.sum.*Jacobian"):
        f(np.ones(3))
    g = jitad.jit_grad(lambda x: x[None, :] * 2.0)
    with pytest.raises(jitad.NonScalarOutputError, match=r"shape \(1, 2\)"):
        g(np.ones(2))


def test_returning_a_tuple_is_a_non_scalar_output_error():
    f = jitad.jit_grad(lambda x: (x, x))
    with pytest.raises(jitad.NonScalarOutputError, match="must return a scalar"):
        f(1.0)


def test_returning_a_comparison_is_a_non_scalar_output_error():
    f = jitad.jit_grad(lambda x: x > 1.0)
    with pytest.raises(jitad.NonScalarOutputError, match="must return a scalar"):
        f.wengert(2.0)


def test_constant_output_has_zero_gradient():
    f = jitad.jit_grad(lambda x: 1.0)
    assert f.value_and_grad(2.0) == (1.0, 0.0)


def test_unknown_numpy_function_names_the_function_and_the_users_line():
    def f(x):
        return np.sum(np.median(x))
    with pytest.raises(jitad.TraceError,
                       match=rf"(?s)np\.median.*{HERE} \(f\): return np\.sum\(np\.median\(x\)\)"):
        jitad.jit_grad(f)(np.ones(3))


def test_unknown_numpy_submodule_function_is_named_too():
    def spectrum(x):
        return np.sum(np.abs(np.fft.fft(x)))
    with pytest.raises(jitad.TraceError, match=rf"(?s)fft.*{HERE} \(spectrum\): .*np\.fft\.fft\(x\)"):
        jitad.jit_grad(spectrum)(np.ones(4))


def test_math_log_with_a_base():
    f = jitad.jit_grad(lambda x: math.log(x, 2.0))
    assert f(8.0) == pytest.approx(1 / (8.0 * math.log(2.0)), rel=1e-12)


def test_unsupported_ufunc_method_is_a_trace_error():
    def f(x):
        return np.add.reduce(x)
    with pytest.raises(jitad.TraceError, match=rf"(?s)np\.add\.reduce.*{HERE}"):
        jitad.jit_grad(f)(np.ones(3))


def test_indexing_with_a_traced_float_is_a_trace_error():
    def f(x, i):
        return x[i]
    pattern = rf"(?s)indexing with a traced float64.*{HERE} \(f\): return x\[i\]"
    with pytest.raises(jitad.TraceError, match=pattern):
        jitad.jit_grad(f)(np.ones(3), 1.0)


def test_int_of_a_traced_value_used_as_index_is_a_trace_error():
    def f(x, i):
        return x[int(i)]
    with pytest.raises(jitad.TraceError, match=rf"(?s)int\(\) of a traced value.*{HERE} \(f\)"):
        jitad.jit_grad(f)(np.ones(3), 1.0)


def test_in_place_mutation_of_a_traced_array_is_a_trace_error():
    def f(x):
        x[0] = 1.0
        return np.sum(x)
    with pytest.raises(jitad.TraceError,
                       match=rf"(?s)in-place assignment.*np\.where.*{HERE} \(f\): x\[0\] = 1\.0"):
        jitad.jit_grad(f)(np.ones(3))


def test_float_of_a_traced_value_is_a_trace_error():
    def f(x):
        return float(x) * 2.0
    pattern = rf"(?s)float\(\) of a traced value.*{HERE} \(f\): return float\(x\)"
    with pytest.raises(jitad.TraceError, match=pattern):
        jitad.jit_grad(f)(1.0)


def test_round_of_a_traced_value_is_a_trace_error():
    def f(x):
        return round(x) * x
    with pytest.raises(jitad.TraceError, match=rf"(?s)round.*{HERE} \(f\)"):
        jitad.jit_grad(f)(1.4)


_CONVERTERS = (np.asarray,)     # held in a container: the traced numpy does not reach it


def test_np_asarray_of_a_traced_value_is_a_trace_error():
    def f(x):
        return np.sum(_CONVERTERS[0]([x, x]))
    with pytest.raises(jitad.TraceError, match=rf"(?s)converted to a NumPy array.*{HERE}"):
        jitad.jit_grad(f)(1.0)




@pytest.mark.parametrize("bad, pattern", [
    ([1.0, 2.0], r"argument 'x' is a list: pass a NumPy array"),
    ({"a": 1.0}, r"argument 'x' has unsupported type dict"),
    (1 + 2j, r"argument 'x' has unsupported type complex"),
    (np.array(["a"]), r"argument 'x' is an array of dtype <U1"),
])
def test_unsupported_argument_types_are_argument_errors(bad, pattern):
    f = jitad.jit_grad(lambda x, y: y * 2.0, argnums=1)
    with pytest.raises(jitad.ArgumentError, match=pattern):
        f(bad, 1.0)


def test_float32_array_is_rejected_with_the_fix():
    f = jitad.jit_grad(lambda x: np.sum(x))
    pattern = r"argument 'x' is a float32 array.*x\.astype\(np\.float64\)"
    with pytest.raises(jitad.ArgumentError, match=pattern):
        f(np.ones(3, dtype=np.float32))


@pytest.mark.parametrize("args, pattern", [
    ((1.0,), r"f(\.value_and_grad|\.value)?\(\) missing 1 required positional argument: 'y'"),
    ((1.0, 2.0, 3.0), r"f(\.value_and_grad|\.value)?\(\) takes 2 positional arguments but 3 "
                      "were given"),
])
@pytest.mark.parametrize("method", ["__call__", "value_and_grad", "value"])
def test_wrong_number_of_arguments_is_pythons_type_error_naming_the_function(args, pattern,
                                                                               method):
    # The same message as calling the plain function, before and after a compile.
    def f(x, y):
        return x * y
    compiled = jitad.jit_grad(f)
    for _ in range(2):
        with pytest.raises(TypeError, match=pattern):
            getattr(compiled, method)(*args)
        compiled(1.0, 2.0)


def test_wrong_count_for_a_varargs_function_is_an_argument_error():
    def f(x, *rest):
        return x
    with pytest.raises(jitad.ArgumentError, match=r"f\(x, \*rest\): missing a required"):
        jitad.jit_grad(f)()


def test_unexpected_keyword_is_a_type_error():
    def f(x, y):
        return x * y
    with pytest.raises(TypeError, match="f\\(\\) got an unexpected keyword argument 'z'"):
        jitad.jit_grad(f)(1.0, 2.0, z=3.0)


def test_keyword_only_parameters_are_rejected_at_decoration():
    def f(x, *, scale):
        return x * scale
    with pytest.raises(jitad.ArgumentError, match=r"keyword-only.*scale"):
        jitad.jit_grad(f)


def test_matmul_shape_mismatch_names_both_shapes_and_the_users_line():
    def predict(w, X):
        return np.sum(X @ w)
    with pytest.raises(jitad.ShapeError,
                       match=rf"(?s)\(5, 3\).*\(4,\).*{HERE} \(predict\): return np\.sum\(X @ w\)"):
        jitad.jit_grad(predict)(np.ones(4), np.ones((5, 3)))


def test_broadcast_mismatch_names_both_shapes_and_the_users_line():
    def f(x, y):
        return np.sum(x * y)
    pattern = rf"(?s)\(3,\).*\(4,\).*{HERE} \(f\): return np\.sum\(x \* y\)"
    with pytest.raises(jitad.ShapeError, match=pattern):
        jitad.jit_grad(f)(np.ones(3), np.ones(4))


def test_bad_reshape_is_a_shape_error():
    def f(x):
        return np.sum(x.reshape(4, 2))
    with pytest.raises(jitad.ShapeError, match=rf"(?s)\(2, 3\).*\(4, 2\).*{HERE}"):
        jitad.jit_grad(f)(np.ones((2, 3)))


def test_axis_out_of_bounds_is_a_shape_error():
    def f(x):
        return np.sum(np.sum(x, axis=2))
    with pytest.raises(jitad.ShapeError, match=rf"(?s)axis 2 is out of bounds.*{HERE}"):
        jitad.jit_grad(f)(np.ones((2, 3)))


def test_errors_are_jitad_errors_and_standard_python_errors():
    assert issubclass(jitad.TraceError, (jitad.JitadError, TypeError))
    assert issubclass(jitad.ShapeError, (jitad.JitadError, ValueError))
    assert issubclass(jitad.ArgumentError, (jitad.JitadError, TypeError))


def test_a_failed_trace_leaves_the_function_usable():
    def f(x, bad):
        if bad:
            return np.sum(np.median(x))
        return np.sum(x * x)
    g = jitad.jit_grad(f)
    with pytest.raises(jitad.TraceError):
        g(np.ones(3), True)
    np.testing.assert_allclose(g(np.array([1.0, 2.0]), False), [2.0, 4.0])
    np.testing.assert_allclose(np.sin(np.ones(2)), np.sin(np.ones(2)))     # math/np restored
    assert math.sin(0.5) == pytest.approx(0.479425538604203)


# ---------------------------------------------------------------- outside the domain: NaN, not an error

def test_log_of_a_negative_number_is_nan_not_an_error():
    f = jitad.jit_grad(lambda x: math.log(x))
    value, grad = f.value_and_grad(-1.0)
    assert math.isnan(value)
    assert grad == pytest.approx(-1.0)        # the rule d log x = dx / x, evaluated at -1


@pytest.mark.parametrize("fun", [lambda x: math.log(x) * x, lambda x: np.log(x) ** 2,
                                 lambda x: math.sqrt(x)], ids=["x log x", "log² x", "sqrt x"])
def test_nan_outside_the_domain_propagates_into_the_gradient(fun):
    value, grad = jitad.jit_grad(fun).value_and_grad(-1.0)
    assert math.isnan(value) and math.isnan(grad)


def test_nan_outside_the_domain_in_array_code():
    f = jitad.jit_grad(lambda x: np.sum(np.log(x) * x))
    value, grad = f.value_and_grad(np.array([-1.0, 1.0]))
    assert math.isnan(value)
    assert math.isnan(grad[0]) and grad[1] == pytest.approx(1.0)     # d(x log x) = log x + 1


def test_numba_performance_hints_about_generated_code_are_not_shown(tmp_path):
    """In a fresh process (pytest resets warning filters a module installs at import)."""
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent("""
        import numba, numpy as np, jitad
        a, x = np.arange(24.0).reshape(4, 6), np.ones(3)
        jitad.jit_grad(lambda a, x: np.sum((a[:, ::2] @ x) ** 2), argnums=1)(a, x)
        numba.njit(lambda a, x: a @ x)(a[:, ::2], x)      # the user's own code still warns
    """))
    env = {**os.environ, "JITAD_CACHE_DIR": str(tmp_path / "cache"),
           "PYTHONPATH": str(Path(jitad.__file__).resolve().parent.parent)}   # this checkout
    run = subprocess.run([sys.executable, "-W", "default", str(script)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    hints = [line for line in run.stderr.splitlines() if "NumbaPerformanceWarning" in line]
    assert len(hints) == 1 and hints[0].startswith(str(script)), run.stderr
