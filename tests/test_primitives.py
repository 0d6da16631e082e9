"""Every primitive of the registry: rules present, gradients vs central differences, kinks.

Breadth runs through the plain-Python path (`check_grads_python`: no Numba); a few
bundles of primitives go through the compiled path (`jitad.testing.check_grads`).
Functions are written at user level (`np.arctan2(x, y)`, `x[1:]`, `A @ b`), so NumPy
dispatch and the `math` interception are tested along with the rules.
"""
import math
import operator

import numba
import numpy as np
import pytest
import scipy.special

import jitad
from jitad.primitives import REGISTRY
from jitad.testing import check_grads
from conftest import (adjoint_list, as_jit, assert_close, check_grads_python, prim_names, python_value_and_grad,
                      rng_for, sample)

SHAPES = [(), (3,), (2, 3), (1, 3), (2, 1)]
BROADCAST_PAIRS = [((3, 1), (1, 4)), ((), (2, 3)), ((2, 3), ()), ((3,), (2, 3)), ((2, 3), (3,)),
                   ((1, 3), (2, 3)), ((2, 1), (2, 3)), ((2, 3), (2, 1))]

# ---------------------------------------------------------------- user-level spellings per primitive

UNARY = {
    "neg": operator.neg, "abs": np.abs, "exp": np.exp, "log": np.log, "log1p": np.log1p,
    "expm1": np.expm1, "sqrt": np.sqrt, "square": np.square, "reciprocal": np.reciprocal,
    "sin": np.sin, "cos": np.cos, "tan": np.tan, "tanh": np.tanh, "sinh": np.sinh,
    "cosh": np.cosh, "arcsin": np.arcsin, "arccos": np.arccos, "arctan": np.arctan,
    "integer_pow": lambda x: x ** 3,
}
BINARY = {
    "add": operator.add, "sub": operator.sub, "mul": operator.mul, "div": operator.truediv,
    "pow": operator.pow, "arctan2": np.arctan2, "hypot": np.hypot, "maximum": np.maximum,
    "minimum": np.minimum, "logaddexp": np.logaddexp,
}
REDUCTIONS = {"sum": np.sum, "mean": np.mean, "max": np.max, "min": np.min, "prod": np.prod}

# Primitives only the transformations emit; where each one is exercised is checked below.
INTERNAL = {"index_add", "scatter_add", "broadcast_like", "reshape_like", "full_like", "count",
            "guard"}
NONDIFFERENTIABLE = {"sign", "lt", "gt", "le", "ge", "eq", "ne", "count", "guard"}
INTERNAL |= {"tril", "triu", "adjugate"}                # linear algebra adjoints
NONDIFFERENTIABLE |= {"slogdet_sign", "eye_like"}

# jitad/primitives/numeric.py (more ufuncs, special functions, scans, sorting, batches)
UNARY.update({
    "log2": np.log2, "log10": np.log10, "exp2": np.exp2, "cbrt": np.cbrt, "arcsinh": np.arcsinh,
    "arccosh": np.arccosh, "arctanh": np.arctanh, "sinc": np.sinc, "expit": scipy.special.expit,
    "erf": scipy.special.erf, "erfc": scipy.special.erfc, "lgamma": scipy.special.gammaln,
    "gamma": scipy.special.gamma, "polygamma": scipy.special.digamma,
    "logit": scipy.special.logit,
})
BINARY.update({"fmax": np.fmax, "fmin": np.fmin, "logaddexp2": np.logaddexp2,
               "remainder": operator.mod, "fmod": np.fmod, "xlogy": scipy.special.xlogy,
               "xlog1py": scipy.special.xlog1py})
NONDIFFERENTIABLE |= {"floor", "ceil", "trunc", "rint", "floor_divide", "sort_permutation",
                      "checked_axis_index",
                      "stop_gradient"}   # (central differences see through it: test_custom.py)


def weighted(op):
    """sum(op(x) * c): a scalar whose gradient is op'(x) * c, elementwise."""
    return lambda x, c: np.sum(op(x) * c)


def weighted2(op):
    return lambda x, y, c: np.sum(op(x, y) * c)


# ---------------------------------------------------------------- the registry itself

@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_primitive_has_its_rules_and_a_domain(name):
    prim = REGISTRY[name]
    assert prim.name == name
    assert prim.shape_rule is not None, f"{name} has no shape rule"
    assert prim.source is not None or prim.inplace is not None or prim.statement is not None, \
        f"{name} has no way to print itself"
    if not (prim.nondifferentiable or prim.effect):
        assert callable(prim.vjp), f"{name} lacks a VJP rule and is not flagged nondifferentiable"
        assert callable(prim.jvp), f"{name} lacks a JVP rule and is not flagged nondifferentiable"
    assert prim.domain, f"{name} has no test domain"
    for low, high in prim.domain:
        assert low < high, f"{name}: empty domain ({low}, {high})"
    assert prim.test_params, f"{name} has no test parameter sets"


def test_every_primitive_is_covered_by_this_test_module():
    covered = (set(UNARY) | set(BINARY) | set(REDUCTIONS) | INTERNAL | NONDIFFERENTIABLE
               | {c[0] for c in STRUCTURAL_CASES})
    missing = set(REGISTRY) - covered
    assert not missing, f"primitives without tests: {sorted(missing)} (add them to a table here)"
    assert INTERNAL <= {c[0] for c in INTERNAL_EMITTERS} | {"guard"}, \
        "every internal primitive needs a user function whose reverse-mode list emits it"


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_nondifferentiable_flag_matches_the_table(name):
    assert REGISTRY[name].nondifferentiable == (name in NONDIFFERENTIABLE)


COMPARISONS = {"lt": np.less, "gt": np.greater, "le": np.less_equal, "ge": np.greater_equal,
               "eq": np.equal, "ne": np.not_equal}


def _traced_functions():
    """Functions of the differentiable elementwise primitives and `sign` (comparisons and
    matmul: `test_comparison_and_matmul_ufuncs_dispatch_to_their_primitives`)."""
    for name, prim in sorted(REGISTRY.items()):
        if name in COMPARISONS or name == "matmul":
            continue
        for fn in prim.traces:
            yield pytest.param(name, fn, id=f"{name}-{getattr(fn, '__module__', None) or 'np'}."
                                            f"{fn.__name__}")


@pytest.mark.parametrize("name, fn", list(_traced_functions()))
def test_each_traced_numpy_and_math_function_dispatches_to_its_primitive(name, fn):
    prim = REGISTRY[name]
    arity = len(prim.domain)
    rng = rng_for(name, fn.__name__)
    args = tuple(sample(rng, (), *prim.domain[k]) for k in range(arity))
    if isinstance(fn, np.ufunc):
        fun = lambda *a: fn(*a)  # noqa: E731
    else:                          # math.<name>(...) looked up at call time, as users write it
        fun = lambda *a: getattr(math, fn.__name__)(*a)  # noqa: E731
    f = check_grads_python(fun, args, argnums=tuple(range(arity)), context=f"{fn.__name__} -> {name}")
    assert name in prim_names(f.wengert(*args))
    if isinstance(fn, np.ufunc):          # arrays go through __array_ufunc__ as well
        arrays = tuple(sample(rng, (3,), *prim.domain[k]) for k in range(arity))
        g = check_grads_python(lambda *a: np.sum(fn(*a)), arrays, argnums=tuple(range(arity)))
        assert name in prim_names(g.wengert(*arrays))


@pytest.mark.parametrize("name", sorted(COMPARISONS))
def test_comparison_and_matmul_ufuncs_dispatch_to_their_primitives(name):
    x, y = np.array([0.5, -1.0, 2.0]), np.array([0.5, 1.0, -2.0])
    f = as_jit(lambda a, b: np.sum(np.where(COMPARISONS[name](a, b), a * b, a)), (0, 1))
    assert name in prim_names(f.wengert(x, y))
    grads = python_value_and_grad(f, (x, y))[1]
    mask = COMPARISONS[name](x, y)
    assert_close(grads[0], np.where(mask, y, 1.0), 1e-12, 1e-12, f"{name}: d/da")
    assert_close(grads[1], np.where(mask, x, 0.0), 1e-12, 1e-12, f"{name}: d/db")
    A = np.arange(6.0).reshape(2, 3)
    g = as_jit(lambda a, v: np.sum(np.matmul(a, v)), (0, 1))
    assert "matmul" in prim_names(g.wengert(A, x))


# ---------------------------------------------------------------- elementwise

@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_gradient_matches_central_differences(name, shape):
    low, high = REGISTRY[name].domain[0]
    rng = rng_for(name, shape)
    x, c = sample(rng, shape, low, high), sample(rng, shape, 0.5, 1.5)
    f = check_grads_python(weighted(UNARY[name]), (x, c), order=2, context=f"{name} {shape}")
    assert name in prim_names(f.wengert(x, c))


@pytest.mark.parametrize("n", [2, 3, 4, -1, -2, -3])
def test_integer_powers_match_n_x_to_the_n_minus_1(n):
    x = np.array([0.4, 1.3, 1.9])
    f = check_grads_python(lambda x: np.sum(x ** n), (x,), order=2)
    assert_close(python_value_and_grad(f, (x,))[1][0], n * x ** (n - 1), 1e-12, 0)
    assert "pow" not in prim_names(f.wengert(x))     # integral exponents use integer_pow


def test_abs_gradient_on_negative_side_is_minus_one():
    x = np.array([-1.7, -0.3, -0.1])
    check_grads_python(lambda x: np.sum(np.abs(x) * np.abs(x) * x), (x,))
    _, (g,) = python_value_and_grad(jitad.jit_grad(lambda x: np.sum(np.abs(x))), (x,))
    assert_close(g, -np.ones(3), 0, 0)


@pytest.mark.parametrize("xshape, yshape", [(s, s) for s in SHAPES] + BROADCAST_PAIRS, ids=str)
@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_gradient_matches_central_differences(name, xshape, yshape):
    (xlow, xhigh), (ylow, yhigh) = REGISTRY[name].domain
    rng = rng_for(name, xshape, yshape)
    x, y = sample(rng, xshape, xlow, xhigh), sample(rng, yshape, ylow, yhigh)
    c = sample(rng, np.broadcast_shapes(xshape, yshape), 0.5, 1.5)
    order = 2 if xshape != yshape or xshape == (2, 3) else 1
    f = check_grads_python(weighted2(BINARY[name]), (x, y, c), argnums=(0, 1), order=order,
                           context=f"{name} {xshape} with {yshape}")
    assert name in prim_names(f.wengert(x, y, c))


@pytest.mark.parametrize("shape", [(), (2, 3)], ids=str)
@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_with_a_python_literal_operand(name, side, shape):
    domain = REGISTRY[name].domain
    rng = rng_for(name, side, shape)
    op = BINARY[name]
    if side == "left":          # op(x, literal)
        literal = round(sum(domain[1]) / 2 + 0.1, 2)
        x = sample(rng, shape, *domain[0])
        fun = lambda x: np.sum(op(x, literal) * np.cos(x))  # noqa: E731
    else:                       # op(literal, x)
        literal = round(sum(domain[0]) / 2 + 0.1, 2)
        x = sample(rng, shape, *domain[1])
        fun = lambda x: np.sum(op(literal, x) * np.cos(x))  # noqa: E731
    check_grads_python(fun, (x,), order=2, context=f"{name} {side} literal {literal}")


def test_float_power_of_a_literal_base_and_of_a_traced_exponent():
    x = np.array([0.3, 1.1, -0.7])
    check_grads_python(lambda x: np.sum(2.0 ** x + np.abs(x) ** 0.5), (x,), order=2)
    check_grads_python(lambda x: math.pow(x, 1.5) + math.pow(1.5, x), (0.8,), order=2)


# ---------------------------------------------------------------- reductions

def _reduction_params():
    for name in sorted(REDUCTIONS):
        for shape, axis, keepdims in REDUCTION_CASES:
            yield pytest.param(name, shape, axis, keepdims,
                               id=f"{name}-{shape}-axis={axis}-keepdims={keepdims}")


REDUCTION_CASES = (
    [((), None, False)]
    + [((3,), axis, keep) for axis in (None, 0, -1) for keep in (False, True)]
    + [((2, 3), axis, keep) for axis in (None, 0, 1, -1, (0, 1)) for keep in (False, True)]
    + [(shape, axis, False) for shape in ((1, 3), (2, 1)) for axis in (None, 0, -1)]
    + [((2, 3, 4), axis, keep) for axis in ((0, 2), 1) for keep in (False, True)]
)


@pytest.mark.parametrize("name, shape, axis, keepdims", list(_reduction_params()))
def test_reduction_gradient_matches_central_differences(name, shape, axis, keepdims):
    rng = rng_for(name, shape, axis, keepdims)
    low, high = (0.4, 1.6) if name == "prod" else REGISTRY[name].domain[0]
    x = sample(rng, shape, low, high)
    reduce = REDUCTIONS[name]
    out_shape = np.shape(reduce(x, axis=axis, keepdims=keepdims))
    c = sample(rng, out_shape, 0.5, 1.5)
    fun = lambda x, c: np.sum(np.sin(reduce(x, axis=axis, keepdims=keepdims)) * c)  # noqa: E731
    f = check_grads_python(fun, (x, c), order=2, context=f"{name} axis={axis} keepdims={keepdims}")
    assert name in prim_names(f.wengert(x, c))


@pytest.mark.parametrize("method", ["sum", "mean", "max", "min", "prod"])
def test_reduction_methods_on_traced_arrays(method):
    x = rng_for(method).uniform(0.5, 1.5, size=(2, 3))
    fun = lambda x: np.sum(getattr(x, method)(axis=0) ** 2) + getattr(x, method)()  # noqa: E731
    f = check_grads_python(fun, (x,), order=2)
    assert method in prim_names(f.wengert(x))


def test_reductions_over_a_float_argument_are_identities():
    check_grads_python(lambda x: np.sum(x) * np.mean(x) + np.max(x) * np.min(x) + np.prod(x), (0.7,))


# ---------------------------------------------------------------- indexing, shapes, select, linalg

def _ints(*values):
    return np.array(values, dtype=np.int64)


# A captured constant: it becomes a hidden runtime input of the list, never data in the source.
CONSTANT = np.array([[1.0, 2.0, -3.0], [0.5, -1.0, 2.0]])


# The primitives whose rules a user gives (tests/test_custom.py has the rest).
@jitad.custom_vjp
def _tanh_vjp(x):
    return np.tanh(x)


_tanh_vjp.defvjp(lambda x: (np.tanh(x), np.tanh(x)), lambda t, g: (g * (1.0 - t * t),))
_tanh_jvp = jitad.custom_jvp(np.tanh)
_tanh_jvp.defjvp(lambda p, t: (np.tanh(p[0]), t[0] * (1.0 - np.tanh(p[0]) ** 2)))


@numba.njit
def _tanh_kernel(x):
    return np.tanh(x)


_tanh_primitive = jitad.primitive(_tanh_kernel, shape=lambda shape: shape,
                                  jvp=lambda p, t: t[0] * (1.0 - np.tanh(p[0]) ** 2))

# (primitive it exercises, id, function, args, argnums)
STRUCTURAL_CASES = [
    ("custom_vjp_call", "custom_vjp", lambda x: np.sum(_tanh_vjp(x) * x), ((2, 3),), 0),
    ("custom_jvp_call", "custom_jvp", lambda x: np.sum(_tanh_jvp(x) * x), ((2, 3),), 0),
    ("kernel_call", "jitad.primitive", lambda x: np.sum(_tanh_primitive(x) * x), ((3,),), 0),
    # static indexing: getitem (adjoint: index_add into zeros)
    ("getitem", "x[1:]", lambda x: np.sum(np.sin(x[1:]) * x[:-1]), ((5,),), 0),
    ("getitem", "x[:, 0]", lambda x: np.sum(x[:, 0] ** 3) + np.sum(x[:, 1] * x[:, 0]), ((3, 4),), 0),
    ("getitem", "x[::2]", lambda x: np.sum(np.exp(x[::2]) * x[1::2][0]), ((5,),), 0),
    ("getitem", "x[::-1]", lambda x: np.sum(x[::-1] * x ** 2), ((4,),), 0),
    ("getitem", "x[-1]*x[0]", lambda x: x[-1] * x[0] + x[1] ** 2, ((3,),), 0),
    ("getitem", "x[1, 2]", lambda x: x[1, 2] * np.sum(x ** 2), ((2, 3),), 0),
    ("getitem", "x[1:, :2]", lambda x: np.sum(np.cos(x[1:, :2]) * x[:2, 1:]), ((3, 3),), 0),
    ("getitem", "x[None]", lambda x: np.sum(np.sin(x[None, :] * x[:, None])), ((3,),), 0),
    ("getitem", "x[i] loop", lambda x: sum(x[i] * x[i + 1] for i in range(len(x) - 1)), ((4,),), 0),
    ("getitem", "X[i] rows loop",
     lambda X: sum(np.sum(np.tanh(X[i])) * (i + 1.0) for i in range(X.shape[0])), ((3, 2),), 0),
    # gather with an integer array (adjoint: scatter_add, repeated indices accumulate)
    ("gather", "x[idx] repeated", lambda x, idx: np.sum(np.sin(x[idx]) * x[idx]),
     ((4,), _ints(0, 2, 2, 1, 2, 0)), 0),
    ("gather", "X[idx] rows", lambda X, idx: np.sum(X[idx] ** 3), ((3, 2), _ints(2, 0, 2)), 0),
    ("gather", "x[list]", lambda x: np.sum(x[[1, 1, 0]] ** 3), ((3,),), 0),
    # transpose
    ("transpose", "x.T", lambda x, c: np.sum(np.sin(x.T) * c), ((2, 3), (3, 2)), 0),
    ("transpose", "np.transpose 3-D", lambda x, c: np.sum(np.sin(np.transpose(x, (1, 0, 2))) * c),
     ((2, 3, 4), (3, 2, 4)), 0),
    ("transpose", "x.transpose()", lambda x: np.sum(x.transpose() @ x), ((2, 3),), 0),
    # reshape, ravel, squeeze
    ("reshape", "x.reshape(3, 2)", lambda x, c: np.sum(np.sin(x.reshape(3, 2)) * c),
     ((2, 3), (3, 2)), 0),
    ("reshape", "np.reshape(-1, 2)", lambda x, c: np.sum(np.sin(np.reshape(x, (-1, 2))) * c),
     ((2, 3), (3, 2)), 0),
    ("reshape", "ravel", lambda x, c: np.sum(np.ravel(x) ** 2 * c) + np.sum(x.ravel()),
     ((2, 3), (6,)), 0),
    ("reshape", "flatten", lambda x, c: np.sum(np.tanh(x.flatten()) * c), ((3, 2), (6,)), 0),
    ("reshape", "squeeze (1,3)", lambda x, c: np.sum(np.squeeze(x) ** 2 * c), ((1, 3), (3,)), 0),
    ("reshape", "squeeze axis=1", lambda x, c: np.sum(np.sin(x.squeeze(axis=1)) * c),
     ((2, 1), (2,)), 0),
    # expand_dims
    ("expand_dims", "expand_dims 0", lambda x, c: np.sum(np.expand_dims(x, 0) * c),
     ((3,), (2, 3)), 0),
    ("expand_dims", "expand_dims -1", lambda x, c: np.sum(np.sin(np.expand_dims(x, -1) * c)),
     ((3,), (3, 2)), 0),
    # concatenate and stack
    ("concatenate", "concatenate axis 0", lambda x, y, c: np.sum(np.concatenate([x, y]) ** 2 * c),
     ((2,), (3,), (5,)), (0, 1)),
    ("concatenate", "concatenate axis 1",
     lambda x, y, c: np.sum(np.sin(np.concatenate((x, y), axis=1)) * c),
     ((2, 1), (2, 3), (2, 4)), (0, 1)),
    ("concatenate", "concatenate with constant",
     lambda x: np.sum(np.concatenate([x, np.array([1.0, 2.0]), x * x]) ** 2), ((3,),), 0),
    ("concatenate", "stack", lambda x, y, c: np.sum(np.stack([x, y]) ** 3 * c),
     ((3,), (3,), (2, 3)), (0, 1)),
    ("concatenate", "stack axis=1", lambda x, y, c: np.sum(np.sin(np.stack([x, y], axis=1)) * c),
     ((3,), (3,), (3, 2)), (0, 1)),
    ("concatenate", "stack axis=-1 of 2-D",
     lambda x, y: np.sum(np.sin(np.stack([x, y, x * y], axis=-1))), ((2, 3), (2, 3)), (0, 1)),
    # select: np.where, jitad.where, np.clip (maximum/minimum)
    ("select", "np.where(x > y)", lambda x, y: np.sum(np.where(x > y, x * y, x - y ** 2)),
     ((6,), (6,)), (0, 1)),
    ("select", "np.where broadcast", lambda x, y: np.sum(np.where(x > 0, np.sin(x), y) ** 2),
     ((2, 3), (3,)), (0, 1)),
    ("select", "np.where scalar", lambda x: np.where(x > 0.3, x ** 3, -x), ((),), 0),
    ("select", "jitad.where", lambda x: np.sum(jitad.where(x > 0, x, 0.01 * x) ** 2), ((2, 3),), 0),
    ("select", "where literal branch", lambda x: np.sum(np.where(x < 0.5, 2.0, x) * x), ((5,),), 0),
    ("maximum", "np.clip", lambda x: np.sum(np.clip(x, -0.5, 0.5) * x), ((2, 3),), 0),
    ("maximum", "x.clip lower only", lambda x: np.sum(x.clip(0.0, None) ** 2), ((5,),), 0),
    ("minimum", "np.clip upper only", lambda x: np.sum(np.clip(x, None, 0.25) * x), ((5,),), 0),
    # full_like (zeros_like, ones_like, full_like with a constant and with a traced fill value)
    ("full_like", "ones_like", lambda x: np.sum((x + np.ones_like(x)) ** 2), ((2, 3),), 0),
    ("full_like", "zeros_like", lambda x: np.sum(np.zeros_like(x) + x ** 3), ((3,),), 0),
    ("full_like", "full_like const", lambda x: np.sum(np.full_like(x, 2.5) * np.sin(x)), ((3,),), 0),
    ("full_like", "full_like traced fill", lambda x, y: np.sum(np.full_like(x, y) * x ** 2),
     ((2, 3), ()), (0, 1)),
    # matmul for 1-D / 2-D combinations, outer, norm
    ("matmul", "1-D @ 1-D", lambda a, b: np.sin(a @ b), ((3,), (3,)), (0, 1)),
    ("matmul", "np.dot 1-D", lambda a, b: np.dot(a, b) ** 2, ((3,), (3,)), (0, 1)),
    ("matmul", "2-D @ 1-D", lambda A, b: np.sum(np.tanh(A @ b)), ((2, 3), (3,)), (0, 1)),
    ("matmul", "1-D @ 2-D", lambda a, B: np.sum(np.tanh(a @ B)), ((2,), (2, 3)), (0, 1)),
    ("matmul", "2-D @ 2-D", lambda A, B: np.sum(np.tanh(A @ B)), ((2, 3), (3, 4)), (0, 1)),
    ("matmul", "np.matmul", lambda A, B: np.sum(np.sin(np.matmul(A, B))), ((3, 2), (2, 2)), (0, 1)),
    ("matmul", "A.dot(b)", lambda A, b: np.sum(A.dot(b) ** 2), ((2, 3), (3,)), (0, 1)),
    ("matmul", "A @ A.T", lambda A: np.sum(np.sin(A @ A.T)), ((2, 3),), 0),
    ("matmul", "(1,3) @ (3,1)", lambda A, B: np.sum(np.exp(A @ B)), ((1, 3), (3, 1)), (0, 1)),
    ("matmul", "constant @ x", lambda x: np.sum(np.sin(CONSTANT @ x)), ((3,),), 0),
    ("matmul", "np.dot(x, constant.T)", lambda x: np.sum(np.sin(np.dot(x, CONSTANT.T))), ((3,),), 0),
    ("mul", "constant * x", lambda x: np.sum(np.cos(CONSTANT * x)), ((3,),), 0),
    ("sub", "constant - x", lambda x: np.sum((CONSTANT - x) ** 2), ((2, 1),), 0),
    ("getitem", "for row in X", lambda X: sum(np.sum(np.sin(row) * row) for row in X), ((3, 2),), 0),
    ("div", "x / x.size", lambda x: np.sum(x ** 2) / x.size + np.sum(x) / np.size(x), ((2, 3),), 0),
    ("outer", "np.outer", lambda a, b: np.sum(np.sin(np.outer(a, b))), ((3,), (2,)), (0, 1)),
    ("mul", "np.linalg.norm 1-D", lambda x: np.linalg.norm(x) ** 3, ((3,),), 0),
    ("sqrt", "np.linalg.norm 2-D", lambda x: np.linalg.norm(x), ((2, 3),), 0),
]

# Arrays built in place, and matrix functions (well-conditioned and SPD matrices).
_WELL = np.array([[2.0, 0.3, -0.4], [0.1, 1.5, 0.2], [-0.3, 0.4, 1.8]])
_SPD = _WELL @ _WELL.T + np.eye(3)
STRUCTURAL_CASES += [
    ("full", "np.full traced fill", lambda x: np.sum(np.full(3, x) * np.arange(3.0)) ** 2, ((),), 0),
    ("full", "np.zeros filled", lambda x: np.sum(np.sin(_filled(x))), ((3,),), 0),
    ("index_update", "r[i] = v", lambda x: np.sum(np.sin(_filled(x)) * _filled(x)), ((3,),), 0),
    ("scatter", "r[idx] = v", lambda x, idx: np.sum(_scattered(x, idx) ** 3), ((2,), _ints(2, 0)),
     0),
    ("solve", "np.linalg.solve", lambda a, b: np.sum(np.sin(np.linalg.solve(a, b))),
     (_WELL, (3,)), (0, 1)),
    ("solve_triangular", "scipy solve_triangular",
     lambda a, b: np.sum(np.sin(__import__("scipy.linalg").linalg.solve_triangular(a, b, lower=True))),
     (_WELL, (3, 2)), (0, 1)),
    ("inv", "np.linalg.inv", lambda a: np.sum(np.sin(np.linalg.inv(a))), (_WELL,), 0),
    ("det", "np.linalg.det", lambda a: np.linalg.det(a) ** 2, (_WELL,), 0),
    ("logabsdet", "np.linalg.slogdet", lambda a: np.linalg.slogdet(a)[0] * np.linalg.slogdet(a)[1] ** 2, (_WELL,), 0),
    ("cholesky", "np.linalg.cholesky", lambda a: np.sum(np.sin(np.linalg.cholesky(a))), (_SPD,), 0),
    ("eigvalsh", "np.linalg.eigvalsh", lambda a: np.sum(np.linalg.eigvalsh(a) ** 3), (_SPD,), 0),
    ("eigh_vectors", "np.linalg.eigh vectors",
     lambda a: np.sum(np.linalg.eigh(a)[1] ** 2 * _WELL), (_SPD,), 0),
]


def _filled(x):
    r = np.zeros(4)
    for i in range(3):
        r[i + 1] = x[i] * (i + 1.0)
    return r


def _scattered(x, idx):
    r = np.ones(3)
    r[idx] = x
    return r


# jitad/primitives/numeric.py
STRUCTURAL_CASES += [
    ("cumsum", "np.cumsum", lambda x, c: np.sum(np.sin(np.cumsum(x, axis=0)) * c),
     ((3, 2), (3, 2)), 0),
    ("cumprod", "np.cumprod", lambda x, c: np.sum(np.cumprod(x + 2.0, axis=-1) * c),
     ((2, 3), (2, 3)), 0),
    ("batch_matmul", "3-D @ 3-D", lambda a, b: np.sum(np.tanh(a @ b)), ((2, 2, 3), (2, 3, 2)),
     (0, 1)),
    ("sort_permutation", "np.sort", lambda x, c: np.sum(np.sort(x, axis=0) ** 3 * c),
     ((3, 2), (3, 2)), 0),
    ("checked_axis_index", "A[i, j]",
     lambda A, i, j: np.sum(np.sin(A[i, j])), ((2, 3), _ints(1, 0, -1), _ints(2, 2, 0)), 0),
    ("stop_gradient", "logsumexp", lambda x: scipy.special.logsumexp(x * x), ((2, 3),), 0),
    ("floor", "np.floor", lambda x: np.sum(np.floor(x) * x ** 2), ((5,),), 0),
    ("floor_divide", "x // y", lambda x, y: np.sum((x // y) * x ** 2 + (2.5 // y) * y),
     ((5,), ()), (0, 1)),
    ("ceil", "np.ceil", lambda x: np.sum(np.ceil(x) * x ** 2), ((5,),), 0),
    ("trunc", "np.trunc", lambda x: np.sum(np.trunc(x) * x ** 2), ((5,),), 0),
    ("rint", "np.round", lambda x: np.sum(np.round(x) * x ** 2), ((5,),), 0),
]


def _structural_args(specs, rng):
    return tuple(spec if isinstance(spec, np.ndarray) else sample(rng, spec, -1.5, 1.5)
                 for spec in specs)


@pytest.mark.parametrize("prim, case_id, fun, specs, argnums", STRUCTURAL_CASES,
                         ids=[c[1] for c in STRUCTURAL_CASES])
def test_structural_gradient_matches_central_differences(prim, case_id, fun, specs, argnums):
    args = _structural_args(specs, rng_for(case_id))
    f = check_grads_python(fun, args, argnums=argnums, order=2, context=case_id)
    assert prim in prim_names(f.wengert(*args)), f"{case_id} did not record {prim}"


def test_gather_with_repeated_indices_accumulates_by_hand():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    idx = _ints(0, 2, 2, 1, 2, 0)
    f = jitad.jit_grad(lambda x, idx: np.sum(x[idx] ** 2))
    _, (g,) = python_value_and_grad(f, (x, idx))
    # d/dx_k sum_j x[idx_j]^2 = 2 x_k * (number of times k occurs in idx)
    assert_close(g, 2 * x * np.array([2.0, 1.0, 3.0, 0.0]), 1e-12, 0)


def test_gather_index_array_is_a_runtime_input_not_a_constant():
    f = jitad.jit_grad(lambda x, idx: np.sum(x[idx] ** 2))
    x = np.array([1.0, 2.0, 3.0])
    _, (g1,) = python_value_and_grad(f, (x, _ints(0, 0)))
    _, (g2,) = python_value_and_grad(f, (x, _ints(2, 1)))
    assert_close(g1, [4.0, 0.0, 0.0], 0, 0)
    assert_close(g2, [0.0, 4.0, 6.0], 0, 0)
    assert f.trace_count == 1


# ---------------------------------------------------------------- internal primitives

# Where each internal primitive shows up: a user function whose reverse-mode list emits it.
INTERNAL_EMITTERS = [
    ("index_add", lambda x: np.sum(x[1:] ** 2), ((4,),)),
    ("scatter_add", lambda x, idx: np.sum(x[idx] ** 2), ((3,), _ints(0, 2, 0))),
    ("full_like", lambda x: np.sum(x[:2] ** 3), ((4,),)),
    ("broadcast_like", lambda x: np.sum(np.sin(np.sum(x, axis=0)) * x), ((2, 3),)),
    ("reshape_like", lambda x, y: np.sum(np.sin(x * y)), ((1, 3), (2, 3))),
    ("count", lambda x: np.sum(np.mean(x, axis=1) ** 2), ((2, 3),)),
    ("tril", lambda a: np.sum(np.sin(np.linalg.cholesky(a @ a.T + 3.0 * np.eye(3)))), ((3, 3),)),
    ("triu", lambda a, b: np.sum(np.sin(__import__("scipy.linalg").linalg.solve_triangular(
        a + 3.0 * np.eye(3), b))), ((3, 3), (3,))),
    ("adjugate", lambda a: np.linalg.det(a + 3.0 * np.eye(3)) ** 2, ((3, 3),)),
]


@pytest.mark.parametrize("prim, fun, specs", INTERNAL_EMITTERS, ids=[c[0] for c in INTERNAL_EMITTERS])
def test_internal_primitive_is_emitted_and_its_rules_pass_second_order_checks(prim, fun, specs):
    args = _structural_args(specs, rng_for(prim))
    f = check_grads_python(fun, args, order=2, context=f"emits {prim}")
    assert prim in prim_names(adjoint_list(f, args)), f"expected {prim} in the reverse-mode list"


def test_guard_is_an_effect_that_survives_simplification():
    def f(x):
        if x > 0:          # a guard whose outcome the value does not use
            pass
        return x * 2.0
    g = jitad.jit_grad(f)
    assert "guard" in prim_names(adjoint_list(g, (1.0,)))


# ---------------------------------------------------------------- nondifferentiable primitives

@pytest.mark.parametrize("name, fun, want", [
    ("sign", lambda x: np.sum(np.sign(x) * x ** 2), lambda x: 2 * np.abs(x)),
    ("lt", lambda x: np.sum(np.where(x < 0.0, x, 0.0)), lambda x: (x < 0).astype(float)),
    ("le", lambda x: np.sum(np.where(x <= 0.0, 2 * x, 0.0)), lambda x: 2 * (x <= 0)),
    ("gt", lambda x: np.sum(np.where(x > 0.0, 3 * x, 0.0)), lambda x: 3 * (x > 0)),
    ("ge", lambda x: np.sum(np.where(x >= 0.0, x * x, 0.0)), lambda x: 2 * x * (x >= 0)),
    ("eq", lambda x: np.sum(np.where(x == x, x, 0.0)), lambda x: np.ones_like(x)),
    ("ne", lambda x: np.sum(np.where(x != 0.5, x, 0.0)), lambda x: np.ones_like(x)),
])
def test_nondifferentiable_primitives_pass_no_gradient(name, fun, want):
    x = np.array([-1.5, -0.2, 0.3, 1.1])
    f = check_grads_python(fun, (x,))
    assert name in prim_names(f.wengert(x))
    assert_close(python_value_and_grad(f, (x,))[1][0], want(x), 1e-12, 0)


# ---------------------------------------------------------------- kinks and special values

def test_abs_at_zero_has_gradient_zero_by_sign_convention():
    f = jitad.jit_grad(lambda x: abs(x))
    assert f(0.0) == 0.0
    g = jitad.jit_grad(lambda x: np.sum(np.abs(x)))
    _, (grad,) = python_value_and_grad(g, (np.array([0.0, 2.0, -3.0]),))
    assert_close(grad, [0.0, 1.0, -1.0], 0, 0)


@pytest.mark.parametrize("op", [np.maximum, np.minimum], ids=lambda f: f.__name__)
def test_maximum_and_minimum_ties_split_the_gradient_equally(op):
    f = jitad.jit_grad(lambda x, y: op(x, y), argnums=(0, 1))
    assert f(1.5, 1.5) == (0.5, 0.5)
    winner = (1.0, 0.0) if op is np.maximum else (0.0, 1.0)
    assert f(2.0, 1.0) == winner
    g = jitad.jit_grad(lambda x, y: np.sum(op(x, y)), argnums=(0, 1))
    x, y = np.array([1.0, 2.0, 3.0]), np.array([1.0, 0.0, 3.0])
    _, (gx, gy) = python_value_and_grad(g, (x, y))
    assert_close(gx, [0.5, winner[0], 0.5], 0, 0)
    assert_close(gy, [0.5, winner[1], 0.5], 0, 0)


@pytest.mark.parametrize("reduce", [np.max, np.min], ids=lambda f: f.__name__)
def test_max_and_min_reduction_ties_share_the_gradient(reduce):
    extreme = 3.0 if reduce is np.max else -3.0
    x = np.array([1.0, extreme, 0.5, extreme, extreme])
    f = jitad.jit_grad(lambda x: reduce(x))
    _, (g,) = python_value_and_grad(f, (x,))
    assert_close(g, [0.0, 1 / 3, 0.0, 1 / 3, 1 / 3], 1e-15, 0)
    X = np.array([[2.0, 2.0, 1.0], [0.0, 5.0, 5.0]]) * (1 if reduce is np.max else -1)
    h = jitad.jit_grad(lambda X: np.sum(reduce(X, axis=1) * np.array([1.0, 4.0])))
    _, (gX,) = python_value_and_grad(h, (X,))
    assert_close(gX, [[0.5, 0.5, 0.0], [0.0, 2.0, 2.0]], 1e-15, 0)


def test_max_reduction_ties_in_compiled_code():
    f = jitad.jit_grad(lambda x: np.max(x))
    assert_close(f(np.array([1.0, 3.0, 3.0, 2.0])), [0.0, 0.5, 0.5, 0.0], 1e-15, 0)


def test_sqrt_at_zero_has_infinite_gradient():
    f = jitad.jit_grad(lambda x: math.sqrt(x))
    value, grad = f.value_and_grad(0.0)
    assert value == 0.0
    assert grad == math.inf
    g = jitad.jit_grad(lambda x: np.sum(np.sqrt(x)))
    with np.errstate(divide="ignore"):
        _, (grad,) = python_value_and_grad(g, (np.array([0.0, 4.0]),))
    assert grad[0] == np.inf and grad[1] == pytest.approx(0.25, rel=1e-15)


# ---------------------------------------------------------------- compiled bundles (Numba)
#
# A handful of compiled checks (value, gradient, forward mode, plain Python vs compiled,
# Hessian-vector products), each covering a family of primitives at once: Numba costs
# about a second per array line, so the per-primitive breadth above stays uncompiled.

def _unary_bundle(x):
    total = 0.0
    for k, name in enumerate(sorted(UNARY)):
        low, high = REGISTRY[name].domain[0]       # x in (0.55, 0.85) mapped into the domain
        total = total + (k + 1.0) * np.sum(UNARY[name](low + (high - low) * (x - 0.5) * 2.0))
    return total


@pytest.mark.parametrize("shape", [(), (3,)], ids=str)
def test_compiled_unary_primitives(shape):
    x = sample(rng_for("unary bundle", shape), shape, 0.55, 0.85)   # inside every domain
    check_grads(_unary_bundle, (x,), order=2, context=f"unary bundle {shape}")


def _binary_bundle(x, y):
    total = 0.0
    for k, name in enumerate(sorted(BINARY)):
        total = total + np.sum(BINARY[name](x, y) * (k + 1.0))
    return total


@pytest.mark.parametrize("shape", [(), (3,)], ids=str)
def test_compiled_binary_primitives(shape):
    rng = rng_for("binary bundle", shape)
    x, y = sample(rng, shape, 0.5, 1.9), sample(rng, shape, 0.5, 1.9)
    check_grads(_binary_bundle, (x, y), argnums=(0, 1), order=2, context=f"binary bundle {shape}")


def test_compiled_broadcasting_sums_adjoints_over_broadcast_axes():
    rng = rng_for("broadcast bundle")
    x, y, s = sample(rng, (3, 1), 0.5, 1.9), sample(rng, (1, 2), 0.5, 1.9), 0.7
    row, M = sample(rng, (2,), 0.5, 1.9), sample(rng, (3, 2), 0.5, 1.9)
    check_grads(lambda x, y, s, row, M: np.sum(x * y + x / y - s * y) + np.sum(row * M - M / row),
                (x, y, s, row, M), argnums=(0, 1, 2, 3, 4), order=2,
                context="broadcasting (3,1) with (1,2), a scalar, and a row with a matrix")


def _reduction_bundle(x):
    total = 0.0
    for k, name in enumerate(sorted(REDUCTIONS)):      # full reductions
        total = total + REDUCTIONS[name](x) * (k + 1.0)
    total = total + np.sum(np.sin(np.max(x, axis=0))) + np.sum(np.prod(x, axis=1) ** 2)
    return total + np.sum(np.sum(x, axis=-1, keepdims=True) * x) + np.sum(np.mean(x, axis=0) ** 3)


def test_compiled_reductions():
    x = sample(rng_for("reductions"), (2, 3), 0.5, 1.5)
    check_grads(_reduction_bundle, (x,), order=2, context="reduction bundle")


def _indexing_bundle(x, M, idx):
    rows = sum(np.sum(np.tanh(M[i])) * (i + 1.0) for i in range(2))
    picked = np.sum(np.sin(x[idx]) * x[idx]) + np.sum(x[1:] * x[:-1]) + x[0] * x[-1]
    shaped = np.sum(np.sin(M.T) @ x[:2]) + np.sum(M.reshape(3, 2) ** 2) + np.sum(M[:, 1] ** 3)
    joined = np.sum(np.concatenate([x, M.ravel()]) ** 2) + np.sum(np.stack([x, x * x], axis=1))
    return rows + picked + shaped + joined


def test_compiled_indexing_and_shape_primitives():
    rng = rng_for("indexing bundle")
    x, M = sample(rng, (3,), -1.5, 1.5), sample(rng, (2, 3), -1.5, 1.5)
    check_grads(_indexing_bundle, (x, M, _ints(2, 0, 2, 1)), argnums=(0, 1), order=2,
                context="indexing bundle")


def _select_and_linalg_bundle(x, M):
    selected = np.sum(np.where(x > 0, x, 0.1 * x) ** 2) + np.sum(np.clip(M, -0.5, 0.5) * M)
    filled = np.sum(np.full_like(x, 2.0) * x) + np.sum(np.expand_dims(x, 0) * M)
    algebra = np.sum(np.tanh(M @ x)) + np.sin(x @ x) + np.sum(np.outer(x, x[:2]) ** 2) \
        + np.linalg.norm(M) + np.sum(np.tanh(M @ M.T))
    return selected + filled + algebra


def test_compiled_select_and_linalg_primitives():
    rng = rng_for("select and linalg bundle")
    x, M = sample(rng, (3,), -1.5, 1.5), sample(rng, (2, 3), -1.5, 1.5)
    check_grads(_select_and_linalg_bundle, (x, M), argnums=(0, 1), order=2,
                context="select and linalg bundle")


# ---------------------------------------------------------------- test the tester

def _wrong_sin_vjp(b, g, out, x):
    return (b.mul(g, b.sin(x)),)          # should be cos(x)


def _wrong_sin_jvp(b, out, operands, tangents):
    return b.mul(tangents[0], b.mul(b.cos(operands[0]), 1.5))


def test_check_grads_fails_for_a_wrong_vjp_rule(monkeypatch):
    monkeypatch.setattr(REGISTRY["sin"], "vjp", _wrong_sin_vjp)
    with pytest.raises(AssertionError, match="central differences"):
        check_grads(lambda x: np.sin(x) * 2.0, (0.7,))
    with pytest.raises(AssertionError):
        check_grads_python(lambda x: np.sum(np.sin(x)), (np.array([0.1, 0.7]),))


def test_check_grads_fails_for_a_wrong_jvp_rule(monkeypatch):
    monkeypatch.setattr(REGISTRY["sin"], "jvp", _wrong_sin_jvp)
    with pytest.raises(AssertionError, match="forward mode vs reverse mode"):
        check_grads(lambda x: np.sin(x) * 3.0, (0.4,))
    with pytest.raises(AssertionError, match="forward mode vs reverse mode"):
        check_grads_python(lambda x: np.sum(np.sin(x)), (np.array([0.1, 0.7]),))


def test_second_order_check_fails_for_a_wrong_rule_used_only_by_the_adjoint(monkeypatch):
    # cos only appears in sin's adjoint; a wrong cos VJP/JVP spoils the Hessian, not the gradient.
    monkeypatch.setattr(REGISTRY["cos"], "jvp",
                        lambda b, out, ops, tans: b.mul(tans[0], b.sin(ops[0])))
    monkeypatch.setattr(REGISTRY["cos"], "vjp", lambda b, g, out, x: (b.mul(g, b.sin(x)),))
    check_grads_python(lambda x: np.sin(x) * 2.0, (0.7,), order=1)
    with pytest.raises(AssertionError, match="Hessian-vector product"):
        check_grads_python(lambda x: np.sin(x) * 2.0, (0.7,), order=2)


def test_the_wrong_rule_is_restored_after_monkeypatching():
    check_grads_python(lambda x: np.sin(x) * np.cos(x), (0.7,), order=2)
