"""Custom derivative rules (custom_vjp, custom_jvp), user Numba kernels as primitives,
stop_gradient, and the conventions where a function is locally constant.

Derivatives are checked against central differences and hand formulas; most checks run
the generated source as plain Python (`check_grads_python`), a few compile.
"""
import math

import numba
import numpy as np
import pytest

import jitad
from jitad.testing import check_grads
from conftest import (adjoint_list, assert_close, check_grads_python, prim_names,
                      python_jvp, python_value_and_grad)

X = np.array([0.3, -1.2, 0.8])
Y = np.array([2.0, -1.0, 0.5])


# ---------------------------------------------------------------- custom_vjp

@jitad.custom_vjp
def sin_times(x, y):
    return np.sin(x) * y


def _sin_times_fwd(x, y):
    return np.sin(x) * y, (np.cos(x), np.sin(x), y)


def _sin_times_bwd(residuals, g):
    cos_x, sin_x, y = residuals
    return cos_x * y * g, sin_x * g


sin_times.defvjp(_sin_times_fwd, _sin_times_bwd)


@jitad.custom_vjp
def clip_gradient(x):
    return x


clip_gradient.defvjp(lambda x: (x, ()), lambda residuals, g: (np.clip(g, -1.0, 1.0),))


def test_custom_vjp_gradient_matches_central_differences():
    f = check_grads_python(lambda x, y: np.sum(sin_times(x, y) ** 2), (X, Y), argnums=(0, 1))
    assert "custom_vjp_call" in prim_names(f.wengert(X, Y))


def test_custom_vjp_rule_is_used_not_the_functions_own_derivative():
    # d/dx sum(clip_gradient(3 x)) is clip(1, -1, 1) * 3 = 3 by the rule (the identity's
    # derivative would also be 3); with x**2 inside, the clipped cotangent shows.
    f = jitad.jit_grad(lambda x: np.sum(clip_gradient(x) ** 2))
    _, (g,) = python_value_and_grad(f, (X,))
    assert_close(g, np.clip(2 * X, -1.0, 1.0), 1e-15, 0)


def test_custom_vjp_outside_a_trace_calls_the_plain_function():
    assert_close(sin_times(X, Y), np.sin(X) * Y, 0, 0)


def test_custom_vjp_prints_readably_and_keeps_residuals_from_the_forward_sweep():
    f = jitad.jit_grad(lambda x, y: np.sum(sin_times(x, y)), argnums=(0, 1))
    text = str(f.wengert(X, Y))
    assert "custom_vjp_call[rule=sin_times]" in text
    assert "cos" in f.source(X, Y)


def _wrong_bwd(residuals, g):
    cos_x, sin_x, y = residuals
    return sin_x * y * g, sin_x * g         # deliberately wrong: sin where cos belongs


def test_a_wrong_custom_vjp_rule_makes_check_grads_fail():
    wrong = jitad.custom_vjp(lambda x, y: np.sin(x) * y)
    wrong.defvjp(_sin_times_fwd, _wrong_bwd)
    with pytest.raises(AssertionError, match="central differences"):
        check_grads(lambda x, y: np.sum(wrong(x, y)), (X, Y), argnums=(0, 1))


def test_forward_mode_of_a_custom_vjp_function_is_a_clear_error():
    f = jitad.jit_grad(lambda x: np.sum(clip_gradient(x)))
    with pytest.raises(jitad.TraceError, match=r"forward mode .*custom_vjp"):
        python_jvp(f, (X,), (X,))


def test_custom_vjp_rules_must_not_branch_or_capture_traced_values():
    branching = jitad.custom_vjp(lambda x: x)
    branching.defvjp(lambda x: (x, x), lambda x, g: (g if x > 0 else -g,))
    with pytest.raises(jitad.TraceError, match="branches on a traced value"):
        jitad.jit_grad(lambda x: branching(x) * 2.0).wengert(1.0)

    def outer(x, y):
        capturing = jitad.custom_vjp(lambda x: x)
        capturing.defvjp(lambda x: (x, ()), lambda r, g: (g * y,))
        return capturing(x) * y
    with pytest.raises(jitad.TraceError, match="uses a traced value it was not given"):
        jitad.jit_grad(outer).wengert(1.0, 2.0)


def test_custom_vjp_cotangent_shapes_are_checked():
    bad = jitad.custom_vjp(lambda x: x * 2.0)
    bad.defvjp(lambda x: (x * 2.0, ()), lambda r, g: (np.sum(g),))
    with pytest.raises(jitad.TraceError, match=r"cotangent of argument 0 has shape \(\)"):
        jitad.jit_grad(lambda x: np.sum(bad(x))).wengert(X)


# ---------------------------------------------------------------- custom_jvp

@jitad.custom_jvp
def softplus(x):
    return np.log1p(np.exp(x))


@softplus.defjvp
def _softplus_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    return softplus(x), t / (1.0 + np.exp(-x))      # calls itself: the plain function


@jitad.custom_jvp
def scaled(x, y):
    return x * np.exp(y)


@scaled.defjvp
def _scaled_jvp(primals, tangents):
    (x, y), (tx, ty) = primals, tangents
    e = np.exp(y)
    return x * e, tx * e + x * e * ty


def test_custom_jvp_gives_forward_reverse_and_hessians():
    f = check_grads_python(lambda x: np.sum(softplus(x) * x), (X,), order=2)
    assert "custom_jvp_call" in prim_names(f.wengert(X))
    check_grads_python(lambda x, y: np.sum(scaled(x, y) ** 2), (X, Y), argnums=(0, 1),
                       order=2)


def test_custom_jvp_with_a_non_traced_argument_gets_a_zero_tangent():
    check_grads_python(lambda x: np.sum(scaled(x, Y)), (X,))
    check_grads_python(lambda y: np.sum(scaled(1.5, y)), (Y,))


def test_custom_jvp_rule_is_used_in_both_modes():
    half = jitad.custom_jvp(lambda x: np.sin(x))
    half.defjvp(lambda p, t: (np.sin(p[0]), 0.5 * t[0]))       # deliberately not cos
    f = jitad.jit_grad(lambda x: np.sum(half(x)))
    assert_close(python_value_and_grad(f, (X,))[1][0], np.full(3, 0.5), 1e-15, 0)
    assert_close(python_jvp(f, (X,), (np.ones(3),))[1], 1.5, 1e-15, 0)


def test_a_wrong_custom_jvp_rule_makes_check_grads_fail():
    wrong = jitad.custom_jvp(lambda x: np.sin(x))
    wrong.defjvp(lambda p, t: (np.sin(p[0]), np.sin(p[0]) * t[0]))
    with pytest.raises(AssertionError, match="central differences"):
        check_grads_python(lambda x: np.sum(wrong(x)), (X,))


# ---------------------------------------------------------------- user kernels

@numba.njit
def cube_kernel(x):
    return x * x * x


@numba.njit
def cube_slope_kernel(x):
    return 3.0 * x * x


cube_slope = jitad.primitive(cube_slope_kernel)
cube = jitad.primitive(cube_kernel, vjp=lambda p, out, g: (g * cube_slope(p[0]),))
cube_by_jvp = jitad.primitive(cube_kernel, jvp=lambda p, t: cube_slope(p[0]) * t[0],
                              name="cube_jvp")


@numba.njit
def scaled_norm_kernel(v, s):
    total = 0.0
    for i in range(v.shape[0]):
        total += v[i] * v[i]
    return s * math.sqrt(total)


scaled_norm = jitad.primitive(
    scaled_norm_kernel,
    vjp=lambda p, out, g: (g * p[1] * p[0] / np.sqrt(np.sum(p[0] ** 2)), g * out / p[1]))


def _kernel_loss(a):
    return cube(a) * math.sin(a) + cube_by_jvp(a)


def test_a_kernel_is_called_by_name_in_the_list_and_the_generated_source():
    f = jitad.jit_grad(_kernel_loss)
    assert "kernel_call[rule=cube_kernel]" in str(f.wengert(0.7))
    source = f.source(0.7)
    assert "cube_kernel = user_kernel('cube_kernel')" in source
    assert "cube_kernel(a)" in source and "cube_slope_kernel(a)" in source


def test_kernel_rules_by_vjp_and_by_transposed_jvp():
    check_grads_python(_kernel_loss, (0.7,), order=2,
                       hessian_modes=("reverse over reverse",))
    check_grads_python(lambda v, s: scaled_norm(v, s) ** 2, (X, 1.5), argnums=(0, 1))


# One compiled gradient serves the two compiled checks below.
kernel_grad = jitad.jit_grad(_kernel_loss)


def test_a_kernel_inside_a_compiled_gradient():
    a = 0.7
    want = 3 * a * a * math.sin(a) + a ** 3 * math.cos(a) + 3 * a * a
    value, grad = kernel_grad.value_and_grad(a)
    assert_close(value, _kernel_loss(a), 1e-15, 0)
    assert_close(grad, want, 1e-14, 0)


def test_a_kernel_inside_a_users_njit_loop():
    step = kernel_grad.njit_value_and_grad(0.7)

    @numba.njit
    def descend(a, n):
        for _ in range(n):
            _, (g,) = step(a)
            a = a - 0.01 * g
        return a

    a = 0.7
    for _ in range(20):
        a -= 0.01 * (3 * a * a * math.sin(a) + a ** 3 * math.cos(a) + 3 * a * a)
    assert_close(descend(0.7, 20), a, 1e-13, 0)



@numba.njit
def sigmoid_kernel(x):
    return 1.0 / (1.0 + math.exp(-x))


# Rules that call the kernel itself, as derivatives of sigmoid and exp are written: the call
# inside the rule is the kernel's own call (tracing its rule there again recursed forever).
sigmoid = jitad.primitive(sigmoid_kernel,
                          jvp=lambda p, t: sigmoid(p[0]) * (1.0 - sigmoid(p[0])) * t[0])
exp_by_vjp = jitad.primitive(numba.njit(lambda x: math.exp(x)), name="exp_by_vjp",
                             vjp=lambda p, out, g: (g * exp_by_vjp(p[0]),))


def test_a_kernel_whose_rule_calls_the_kernel_itself_differentiates_to_any_order():
    a, s = 0.4, 1 / (1 + math.exp(-0.4))
    assert_close(jitad.jvp(lambda t: sigmoid(t))(a, 2.0)[1], 2 * s * (1 - s), 1e-15, 0)
    assert_close(jitad.grad(lambda t: sigmoid(t))(a), s * (1 - s), 1e-15, 0)
    assert_close(jitad.hessian(lambda t: sigmoid(t) * t)(a),
                 2 * s * (1 - s) + a * s * (1 - s) * (1 - 2 * s), 1e-14, 0)
    assert_close(jitad.grad(jitad.grad(jitad.grad(lambda t: sigmoid(t))))(a),
                 s * (1 - s) * (1 - 6 * s + 6 * s * s), 1e-13, 0)
    assert_close(jitad.grad(jitad.grad(lambda t: exp_by_vjp(t)))(a), math.exp(a), 1e-15, 0)

def test_a_kernel_without_rules_cannot_be_differentiated_but_can_stop_gradient():
    plain = jitad.primitive(cube_kernel, name="plain_cube")
    with pytest.raises(jitad.TraceError, match="no vjp= or jvp= rule"):
        adjoint_list(jitad.jit_grad(lambda a: plain(a) * a), (0.5,))
    f = jitad.jit_grad(lambda a: jitad.stop_gradient(plain(a)) * a)
    assert_close(python_value_and_grad(f, (0.5,))[1][0], 0.125, 1e-15, 0)


def test_a_kernel_returning_an_array_needs_a_shape_rule():
    doubled = jitad.primitive(numba.njit(lambda v: 2.0 * v), name="doubled")
    with pytest.raises(jitad.TraceError, match=r"returned shape \(3,\).*pass shape="):
        jitad.jit_grad(lambda x: np.sum(doubled(x))).wengert(X)


def test_kernels_are_named_apart_and_must_be_njit_functions():
    again = jitad.primitive(cube_kernel)
    assert again.printed != cube.printed
    with pytest.raises(jitad.ArgumentError, match="needs a @numba.njit function"):
        jitad.primitive(lambda x: x)


def test_a_parameter_named_like_a_kernel_is_not_shadowed():
    f = jitad.jit_grad(lambda cube_kernel: cube(cube_kernel))
    check_grads_python(f, (0.4,))


# ---------------------------------------------------------------- stop_gradient

def test_stop_gradient_has_zero_derivative_and_keeps_the_value():
    f = jitad.jit_grad(lambda x: np.sum(x * jitad.stop_gradient(x ** 2)))
    value, (g,) = python_value_and_grad(f, (X,))
    assert_close(value, np.sum(X ** 3), 1e-15, 0)
    assert_close(g, X ** 2, 1e-15, 0)                # not 3 x**2
    assert_close(python_jvp(f, (X,), (np.ones(3),))[1], np.sum(X ** 2), 1e-15, 0)
    assert "stop_gradient" in prim_names(f.wengert(X))
    assert jitad.stop_gradient(2.5) == 2.5


# ---------------------------------------------------------------- conventions (locally constant)

def test_pow_derivative_in_the_exponent_at_base_zero_is_zero():
    f = jitad.jit_grad(lambda y: 0.0 ** y)
    assert python_value_and_grad(f, (1.5,))[1][0] == 0.0
    g = jitad.jit_grad(lambda x, y: x ** y, argnums=(0, 1))
    _, (dx, dy) = python_value_and_grad(g, (0.0, 1.5))
    assert (dx, dy) == (0.0, 0.0)                   # 0**y = 0 near y = 1.5; 1.5 * 0**0.5 = 0
    check_grads_python(lambda x, y: x ** y, (0.7, 1.3), argnums=(0, 1), order=2)


def test_pow_derivative_in_the_base_at_exponent_zero_is_zero():
    # (arrays: the plain-Python run of 0.0 ** -1.0 on Python floats raises; NumPy gives inf)
    g = jitad.jit_grad(lambda x, y: np.sum(x ** y), argnums=(0, 1))
    with np.errstate(all="ignore"):                  # 0 * 0**-1 computed, then selected away
        _, (dx, dy) = python_value_and_grad(g, (np.zeros(2), np.zeros(2)))
    assert_close(dx, [0.0, 0.0], 0, 0)              # x**0 = 1 for all x


def test_where_gives_zero_derivative_where_the_unselected_branch_is_nan():
    # JAX's "double where" issue: jitad's adjoint keeps the zero a select gives the branch
    # it does not take (0 * inf is not formed), in reverse and in forward mode.
    f = jitad.jit_grad(lambda x: np.sum(np.where(x > 0, np.sqrt(x), 0.0) + x * 0.0))
    x = np.array([-1.0, 4.0, 0.0])
    with np.errstate(all="ignore"):
        value, (grad,) = python_value_and_grad(f, (x,))
        _, forward = python_jvp(f, (x,), (np.array([1.0, 0.0, 1.0]),))
    assert_close(grad, [0.0, 0.25, 0.0], 0, 0)
    assert forward == 0.0
    with np.errstate(all="ignore"):
        check_grads_python(lambda x: np.sum(np.where(x > 0, np.log(x) * x, 0.0)),
                           (np.array([-1.0, 0.5, 2.0]),), order=2)


def test_masked_zeros_follow_chains_and_leave_the_forward_values_alone():
    f = jitad.jit_grad(lambda x: np.sum(np.where(x > -1, np.sqrt(np.log(x + 1)), 0.0)))
    g = jitad.jit_grad(lambda x: np.sum(np.where(x > 0, 1.0, 0.0) * np.log(x)))
    with np.errstate(all="ignore"):
        grad = python_value_and_grad(f, (np.array([-2.0, 1.0]),))[1][0]
        value = python_value_and_grad(g, (np.array([-2.0, 1.0]),))[0]
    assert_close(grad, [0.0, 0.5 / (2.0 * np.sqrt(np.log(2.0)))], 1e-15, 0)
    assert np.isnan(value)                          # NumPy's value: 0 * log(-2) = NaN



def test_masked_zeros_survive_nested_selects_and_nan_to_num():
    # v = 1/(x - 2) is inf at x = 2, where the outer select replaces it by a constant: the
    # function is locally constant in that element, so its derivative is 0 (d/dx of 1/(x - 2)
    # at x = 3 is -1). The inner select's cotangent is zeroed by the outer one as well.
    x = np.array([2.0, 3.0])
    nested = jitad.jit_grad(lambda x: np.sum(np.where(x == 2.0, 5.0, np.where(
        x > 100.0, 0.0, 1.0 / (x - 2.0)))))
    nan_to_num = jitad.jit_grad(lambda x: np.sum(np.nan_to_num(1.0 / (x - 2.0), posinf=5.0)))
    for f in (nested, nan_to_num):
        with np.errstate(all="ignore"):
            value, (grad,) = python_value_and_grad(f, (x,))
            _, forward = python_jvp(f, (x,), (np.array([1.0, 0.0]),))
        assert value == 6.0
        assert_close(grad, [0.0, -1.0], 0, 0)
        assert forward == 0.0
    with np.errstate(all="ignore"):
        check_grads_python(lambda x: np.sum(np.nan_to_num(x / (x - x[0]), posinf=5.0)),
                           (np.array([0.3, -1.2, 2.5, 0.7]),))

# ---------------------------------------------------------------- has_aux

@jitad.jit_grad(has_aux=True)
def _least_squares_with_aux(w, A):
    residual = A @ w - 1.0
    return np.sum(residual ** 2), (residual, np.sum(w), "label")


def test_has_aux_returns_aux_beside_the_value_and_the_gradient():
    A = np.array([[1.0, 0.5], [0.0, 2.0], [1.0, 1.0]])
    w = np.array([0.5, -0.25])
    residual = A @ w - 1.0
    (value, aux), grad = _least_squares_with_aux.value_and_grad(w, A)
    assert_close(value, np.sum(residual ** 2), 1e-15, 0)
    assert_close(grad, 2 * A.T @ residual, 1e-14, 0)
    assert_close(aux[0], residual, 0, 0)
    assert aux[1:] == (0.25, "label")
    grad2, aux2 = _least_squares_with_aux(w, A)
    assert_close(grad2, grad, 0, 0)
    assert_close(aux2[0], residual, 0, 0)
    value3, aux3 = _least_squares_with_aux.value(w, A)
    assert value3 == value and aux3[1] == 0.25
    w2 = np.array([1.0, 1.0])                       # new values: aux is recomputed
    for _ in range(2):                              # the full path, then the generated entries
        assert_close(_least_squares_with_aux(w2, A)[1][0], A @ w2 - 1.0, 0, 0)
        (value4, aux4), grad4 = _least_squares_with_aux.value_and_grad(w2, A)
        assert_close(grad4, 2 * A.T @ (A @ w2 - 1.0), 1e-14, 0)
        assert aux4[1:] == (2.0, "label") and _least_squares_with_aux.value(w2, A)[1][1] == 2.0


def test_has_aux_in_the_printed_source_and_its_output_checks():
    f = jitad.jit_grad(lambda x: (x * x, (2.0 * x,)), has_aux=True)
    assert "return (v1, (v2,)), (x_bar,)" in f.source(3.0).replace("x_bar_2", "x_bar")
    with pytest.raises(jitad.NonScalarOutputError, match=r"pair \(loss, aux\)"):
        jitad.jit_grad(lambda x: x * x, has_aux=True).wengert(1.0)
    with pytest.raises(jitad.NonScalarOutputError, match="must return a scalar"):
        jitad.jit_grad(lambda x: (x * np.ones(2), 1.0), has_aux=True).wengert(1.0)


def test_rules_may_use_math_functions_on_traced_scalars():
    f = jitad.custom_jvp(lambda x: math.log1p(math.exp(x)))
    f.defjvp(lambda p, t: (f(p[0]), t[0] / (1.0 + math.exp(-p[0]))))
    check_grads_python(lambda x: f(x) * x, (0.3,), order=2)


W = np.array([1.0, -2.0, 0.5])


def test_rules_may_read_captured_arrays():
    weighted = jitad.custom_jvp(lambda x: np.sum(W * np.sin(x)))
    weighted.defjvp(lambda p, t: (weighted(p[0]), np.sum(W * np.cos(p[0]) * t[0])))
    check_grads_python(lambda x: weighted(x) ** 2, (X,), order=2)
    scaled_back = jitad.custom_vjp(lambda x: W * x)
    scaled_back.defvjp(lambda x: (W * x, ()), lambda r, g: (W * g,))
    check_grads_python(lambda x: np.sum(np.sin(scaled_back(x))), (X,))


@pytest.mark.parametrize("tangent_out, why", [
    (lambda x, t: t * t, "mul of tangents"),
    (lambda x, t: np.exp(t), "exp of a tangent"),
    (lambda x, t: math.cos(x) * t + 1.0, "add of a tangent and a value that is not 0"),
    (lambda x, t: math.cos(x), "does not depend on the tangents"),
    (lambda x, t: 1.0 / t, "div of a tangent")])
def test_a_jvp_rule_that_is_not_linear_in_the_tangents_is_a_trace_error(tangent_out, why):
    @jitad.custom_jvp
    def sine(x):
        return math.sin(x)
    sine.defjvp(lambda primals, tangents: (sine(primals[0]),
                                           tangent_out(primals[0], tangents[0])))
    with pytest.raises(jitad.TraceError, match=f"not linear in the tangents .*{why}"):
        jitad.jit_grad(lambda x: sine(x) * 2.0)(0.3)
    kernel = jitad.primitive(numba.njit(lambda x: math.sin(x)),
                             jvp=lambda primals, tangents: tangent_out(primals[0], tangents[0]))
    with pytest.raises(jitad.TraceError, match="not linear in the tangents"):
        jitad.jit_grad(lambda x: kernel(x) * 2.0)(0.3)


def test_linear_jvp_rules_pass_the_check_and_differentiate_by_hand():
    a = np.array([[2.0, 0.5], [0.3, 1.5]])

    @jitad.custom_jvp
    def solved(x):
        return np.linalg.solve(a, x) + np.floor(x)
    solved.defjvp(lambda p, t: (solved(p[0]), np.linalg.solve(a, t[0]) + np.zeros_like(p[0])
                                + np.where(p[0] > 0, t[0], 0.0) * 0.0))
    x = np.array([0.4, -0.7])
    grad = jitad.jit_grad(lambda x: np.sum(solved(x) * np.array([1.0, 3.0])))(x)
    assert_close(grad, np.linalg.solve(a.T, np.array([1.0, 3.0])), 1e-14, 0.0, "gradient")
