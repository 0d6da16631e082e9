"""The llvm code shape: every primitive's IR template, special values, strides, chunking,
the automatic choice, and Numba interop (guards: test_code_shapes).

Values are checked against the user's Python function run by NumPy, gradients against
central differences or hand-derived formulas.
"""
import math

import numba
import numpy as np
import pytest

import jitad
from jitad import codegen, llvm
from jitad.api import build
from jitad.primitives import REGISTRY

from conftest import assert_close, numeric_grad, rng_for, traced
from test_code_shapes import rosenbrock_hand_gradient, rosenbrock_loop, straight_line_program

# NumPy spellings: ufuncs dispatch on traced values wherever they are stored (jitad
# intercepts `math.*` only where the function's code names them).
UNARY = {"neg": np.negative, "abs": abs, "exp": np.exp, "log": np.log, "log1p": np.log1p,
         "expm1": np.expm1, "sqrt": np.sqrt, "square": np.square, "reciprocal": np.reciprocal,
         "sin": np.sin, "cos": np.cos, "tan": np.tan, "tanh": np.tanh, "sinh": np.sinh,
         "cosh": np.cosh, "arcsin": np.arcsin, "arccos": np.arccos, "arctan": np.arctan,
         "integer_pow": lambda a: a ** 3}
BINARY = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide,
          "pow": np.power, "arctan2": np.arctan2, "hypot": np.hypot, "maximum": np.maximum,
          "minimum": np.minimum, "logaddexp": np.logaddexp}
# Primitives with no derivative, each spelled as the user would.
OTHERS = {"select": lambda a, b, c: jitad.where(a > 0.0, b, c),
          "sign": lambda a, b, c: np.sign(a) * b,
          "lt": lambda a, b, c: jitad.where(a < b, c, 0.0),
          "gt": lambda a, b, c: jitad.where(a > b, c, 0.0),
          "le": lambda a, b, c: jitad.where(a <= b, c, 0.0),
          "ge": lambda a, b, c: jitad.where(a >= b, c, 0.0),
          "eq": lambda a, b, c: jitad.where(a == b, c, 0.0),
          "ne": lambda a, b, c: jitad.where(a != b, c, 0.0)}


def all_primitives_program():
    """`(f, x)`: f(x) sums every IR primitive applied to its own elements of x, each
    sampled inside the primitive's test domain."""
    rng = rng_for("llvm", "all")
    terms, values = [], []
    for name, op in {**UNARY, **BINARY, **OTHERS}.items():
        arity = 1 if name in UNARY else 2 if name in BINARY else 3
        domain = REGISTRY[name].domain
        first = len(values)
        for k in range(arity):
            low, high = domain[min(k, len(domain) - 1)]
            values.append(rng.uniform(low, high))
        terms.append((op, list(range(first, first + arity))))

    def every_primitive(x):
        total = 0.0
        for k, (op, positions) in enumerate(terms):
            total = total + (k + 1.0) * op(*[x[i] for i in positions])
        return total
    return every_primitive, np.array(values)


@pytest.fixture(scope="module")
def every_primitive():
    fun, x = all_primitives_program()
    return fun, x, jitad.jit_grad(fun, code_shape="llvm")


def test_every_ir_template_is_covered():
    with_ir = {name for name, prim in REGISTRY.items() if prim.ir is not None}
    assert with_ir == set(UNARY) | set(BINARY) | set(OTHERS)


def test_every_primitive_matches_numpy_and_differences(every_primitive):
    fun, x, f = every_primitive
    assert "define i64 @jitad_" in f.source(x)
    value, grad = f.value_and_grad(x)
    assert value == pytest.approx(fun(x), rel=1e-13)
    assert_close(grad, numeric_grad(fun, [x])[0], 1e-6, 1e-8, "llvm gradient vs differences")


def test_a_wrong_ir_template_is_caught(monkeypatch):
    fun, x = all_primitives_program()
    monkeypatch.setattr(REGISTRY["sin"], "ir", REGISTRY["cos"].ir)
    value = jitad.jit_grad(fun, code_shape="llvm").value(x)
    assert value != pytest.approx(fun(x), rel=1e-6)


SPECIAL = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -2.5]


@pytest.mark.parametrize("name, op", [
    ("maximum", np.maximum), ("minimum", np.minimum), ("logaddexp", np.logaddexp),
    ("sign", lambda a, b: np.sign(a)), ("select", lambda a, b: np.where(a, b, -1.0)),
    ("lt", lambda a, b: np.where(a < b, 1.0, 0.0)), ("ne", lambda a, b: np.where(a != b, 1.0, 0.0)),
])
def test_special_values_follow_numpy(name, op):
    f = jitad.jit_grad(lambda x: op(x[0], x[1]), code_shape="llvm")
    for a in SPECIAL:
        for b in SPECIAL:
            x = np.array([a, b])
            with np.errstate(all="ignore"):
                want = float(op(a, b))
            got = f.value(x)
            assert got == want or (math.isnan(got) and math.isnan(want)), \
                f"{name}({a}, {b}): llvm gives {got}, NumPy {want}"


@pytest.mark.parametrize("view", ["contiguous", "every_second", "reversed"])
def test_strided_inputs_are_read_through_their_strides(view):
    base = rng_for("llvm", "strided").uniform(-1.5, 1.5, 60)
    x = {"contiguous": base[:30], "every_second": base[::2], "reversed": base[::-1][:30]}[view]
    f = jitad.jit_grad(rosenbrock_loop, code_shape="llvm")
    value, grad = f.value_and_grad(x)
    assert value == pytest.approx(rosenbrock_loop(x), rel=1e-12)
    assert_close(grad, rosenbrock_hand_gradient(x), 1e-12, 1e-12, f"{view} gradient")


def test_values_cross_chunks_through_slots(monkeypatch):
    monkeypatch.setattr(llvm, "CHUNK_ENTRIES", 7)
    x = rng_for("llvm", "chunks").uniform(-1.5, 1.5, 12)
    f = jitad.jit_grad(rosenbrock_loop, code_shape="llvm")
    assert f.source(x).count("noinline optnone") > 20
    assert_close(f(x), rosenbrock_hand_gradient(x), 1e-12, 1e-12, "chunked gradient")


def test_scalar_and_array_arguments_together():
    def f(x, s, n):
        total = 0.0
        for i in range(n):
            total = total + math.sin(s * x[i]) * x[i + 1]
        return total
    g = jitad.jit_grad(f, argnums=(0, 1), code_shape="llvm")
    x, s = rng_for("llvm", "mixed").uniform(-1.0, 1.0, 6), 0.7
    got = g(x, s, 5)
    for part, want in zip(got, numeric_grad(f, [x, s, 5], (0, 1))):
        assert_close(part, want, 1e-6, 1e-8, "mixed gradient")


def test_kernel_is_callable_from_a_users_numba_loop():
    f = jitad.jit_grad(rosenbrock_loop, code_shape="llvm")
    x0 = np.full(8, 0.5)
    kernel = f.njit_value_and_grad(x0)

    @numba.njit
    def descend(x, steps, rate):
        for _ in range(steps):
            value, (grad,) = kernel(x)
            x = x - rate * grad
        return x
    x = descend(x0.copy(), 3, 1e-4)
    expected = x0.copy()
    for _ in range(3):
        expected = expected - 1e-4 * rosenbrock_hand_gradient(expected)
    assert_close(x, expected, 1e-12, 1e-14, "three descent steps")


def test_long_program_without_repeats_goes_to_llvm_and_the_longest_to_the_tape(monkeypatch):
    program = straight_line_program(2500)
    f = jitad.jit_grad(program)
    x = rng_for("llvm", "auto").uniform(-1.0, 1.0, 4)
    variant, _ = traced(f, (x,))
    assert build(variant, "value_and_grad", variant.wrt, "program", for_reading=False)[3] == "llvm"
    assert_close(f(x), numeric_grad(program, [x])[0], 1e-6, 1e-8, "llvm gradient vs differences")
    monkeypatch.setattr(codegen, "LLVM_ENTRIES_LIMIT", 1000)
    assert build(variant, "value_and_grad", variant.wrt, "program", for_reading=False)[3] == "tape"


def test_two_functions_with_the_same_ir_live_side_by_side():
    x = rng_for("llvm", "twins").uniform(-1.5, 1.5, 9)
    first = jitad.jit_grad(rosenbrock_loop, code_shape="llvm")
    second = jitad.jit_grad(rosenbrock_loop, code_shape="llvm")
    for f in (first, second, first):
        assert_close(f(x), rosenbrock_hand_gradient(x), 1e-12, 1e-12, "twin gradient")


def test_parameter_names_of_the_wrapper_are_renamed():
    def clash(slots, status):
        return np.sin(slots[0]) * slots[1] + status
    f = jitad.jit_grad(clash, argnums=(0, 1), code_shape="llvm")
    x = np.array([0.3, 2.0])
    got = f(x, 0.5)
    assert_close(got[0], [math.cos(0.3) * 2.0, math.sin(0.3)], 1e-12, 1e-14, "array gradient")
    assert got[1] == 1.0


def grid_energy(X):
    """A scalar walk over a 2-D array's elements (neighbours across both axes)."""
    total = 0.0
    for i in range(X.shape[0] - 1):
        for j in range(X.shape[1] - 1):
            total = total + math.sin(X[i, j]) * X[i + 1, j] + X[i, j + 1] ** 2 * X[-1, -1]
    return total


def grid_energy_gradient(X):
    """By hand: d/dX of grid_energy."""
    g = np.zeros_like(X)
    for i in range(X.shape[0] - 1):
        for j in range(X.shape[1] - 1):
            g[i, j] += math.cos(X[i, j]) * X[i + 1, j]
            g[i + 1, j] += math.sin(X[i, j])
            g[i, j + 1] += 2.0 * X[i, j + 1] * X[-1, -1]
            g[-1, -1] += X[i, j + 1] ** 2
    return g


@pytest.mark.parametrize("view", ["contiguous", "transposed", "every_second_reversed"])
def test_multidimensional_inputs_are_read_through_their_strides(view):
    base = rng_for("llvm", "grid").uniform(-1.5, 1.5, (8, 10))
    X = {"contiguous": base[:4, :5], "transposed": base[:5, :4].T,
         "every_second_reversed": base[::2, ::-2]}[view]
    f = jitad.jit_grad(grid_energy, code_shape="llvm")
    assert "define i64 @jitad_" in f.source(X)
    value, grad = f.value_and_grad(X)
    assert value == pytest.approx(grid_energy(X), rel=1e-12)
    assert grad.shape == X.shape
    assert_close(grad, grid_energy_gradient(X), 1e-12, 1e-12, f"{view} gradient")


def test_a_multidimensional_input_of_another_shape_never_gives_a_wrong_answer():
    f = jitad.jit_grad(grid_energy, code_shape="llvm")
    rng = rng_for("llvm", "reshape")
    for shape in [(4, 5), (5, 4), (3, 6), (4, 5)]:
        X = rng.uniform(-1.0, 1.0, shape)
        assert_close(f(X), grid_energy_gradient(X), 1e-12, 1e-12, f"gradient for {shape}")
    variant, _ = traced(f, (X,))
    source = build(variant, "value_and_grad", variant.wrt, "grid")[0]
    assert "if X.shape != (4, 5):\n        raise ShapeChanged('X', None, (4, 5))" in source


def test_three_dimensional_and_integer_arrays():
    def f(T, x):
        return T[1, 0, 2] * T[-1, -1, -1] + math.exp(T[0, 1, 0]) * x[0]
    T = rng_for("llvm", "cube").uniform(-1.0, 1.0, (2, 3, 4))[:, :, ::-1]
    g = jitad.jit_grad(f, argnums=(0, 1), code_shape="llvm")
    gT, gx = g(T, np.array([0.5]))
    want = np.zeros_like(T)
    want[1, 0, 2], want[-1, -1, -1] = T[-1, -1, -1], T[1, 0, 2]
    want[0, 1, 0] = math.exp(T[0, 1, 0]) * 0.5
    assert_close(gT, want, 1e-14, 1e-14, "3-D gradient")
    assert_close(gx, [math.exp(T[0, 1, 0])], 1e-14, 1e-14, "1-D gradient")
    with_integers = jitad.jit_grad(lambda x, n: x[0] * n[0, 1], code_shape="llvm")
    args = (np.array([1.5]), np.arange(4).reshape(2, 2))
    variant, _ = traced(with_integers, args)
    assert not llvm.encodable(variant.trace.wengert)        # printed as loops instead
    assert with_integers(*args)[0] == 1.0
