"""The worked examples of the tutorial articles jitad grew from (shared/seeds), end to end.

For each: the value and gradient from the compiled code, the hand-derived gradient,
the traced Wengert list and the generated forward + adjoint source.
"""
import math

import numpy as np

import jitad


@jitad.jit_grad(argnums=(0, 1))
def f(x1, x2):
    """The evaluation-trace example: ln(x1) + x1*x2 - sin(x2)."""
    return math.log(x1) + x1 * x2 - math.sin(x2)


@jitad.jit_grad(argnums=(0, 1))
def gaussian_bump(x1, x2):
    """x1 * exp(-(x1² + x2²)/2)."""
    return x1 * math.exp(-(x1 ** 2 + x2 ** 2) / 2)


@jitad.jit_grad
def two_paths(x):
    """y1 = x + 1, y2 = 2x, loss = (y1 - y2)²: x reaches the loss along two paths."""
    y1 = x + 1
    y2 = 2 * x
    return (y1 - y2) ** 2


@jitad.jit_grad(argnums=(0, 1))
def quadratic(x, y):
    """z = x² + 3xy + y² (the autograd/tangent example)."""
    return x ** 2 + 3 * x * y + y ** 2


def show(title, fun, args, hand):
    value, grad = fun.value_and_grad(*args)
    print(f"=== {title} at {args}")
    print(f"value    {value!r}")
    print(f"gradient {grad!r}")
    print(f"by hand  {hand!r}")
    print(fun.wengert(*args))
    print(fun.source(*args))


def main():
    x1, x2 = 2.0, 5.0
    show("ln(x1) + x1*x2 - sin(x2)", f, (x1, x2), (1 / x1 + x2, x1 - math.cos(x2)))
    x1, x2 = 2.0, 0.5
    e = math.exp(-(x1 ** 2 + x2 ** 2) / 2)
    show("x1 * exp(-(x1² + x2²)/2)", gaussian_bump, (x1, x2), ((1 - x1 ** 2) * e, -x1 * x2 * e))
    x = 3.0
    show("(x + 1 - 2x)²", two_paths, (x,), 2 * (x + 1 - 2 * x) * (1 - 2))
    x, y = 2.0, 1.0
    show("x² + 3xy + y²", quadratic, (x, y), (2 * x + 3 * y, 3 * x + 2 * y))

    @jitad.jit_grad
    def rosenbrock(x):
        return sum(100.0 * (x[i + 1] - x[i] ** 2) ** 2 + (1.0 - x[i]) ** 2
                   for i in range(len(x) - 1))

    x = np.array([-1.2, 1.0, 0.5])
    print("=== Rosenbrock as a Python loop over x[i], n = 3")
    print("gradient", rosenbrock(x))
    print(rosenbrock.source(x))
    derivatives_beyond_the_gradient()


@jitad.jit_grad(argnums=(0, 1))
def df_dx1(x1, x2):
    """Seed 000's "gradient of the gradient": ∂f/∂x1 is itself a traced function."""
    return jitad.grad(f, argnums=0)(x1, x2)


def dual_example(x, y):
    """Seed 003's dual-number example: f = 2y + x², at (2, 3) the dual number 10 + 4ε."""
    return 2 * y + x ** 2


def derivatives_beyond_the_gradient():
    x1, x2 = 2.0, 5.0
    print("=== seed 000: the gradient of ∂f/∂x1 (differentiating the differentiated list)")
    print("d(∂f/∂x1)", df_dx1(x1, x2), " by hand", (-1 / x1 ** 2, 1.0))
    print("Hessian", jitad.hessian(lambda x: f.value(x[0], x[1]))(np.array([x1, x2])),
          " by hand", [[-1 / x1 ** 2, 1.0], [1.0, math.sin(x2)]])
    print(df_dx1.wengert(x1, x2))

    print("=== seed 002: the forward sweep, tangent (1, 0), of x1 * exp(-(x1² + x2²)/2)")
    bump_jvp = jitad.jvp(gaussian_bump, argnums=(0, 1))
    x1, x2 = 2.0, 0.5
    value, tangent = bump_jvp(x1, 1.0, x2, 0.0)
    print(f"value {value!r}, ∂f/∂x1 {tangent!r}, by hand "
          f"{(1 - x1 ** 2) * math.exp(-(x1 ** 2 + x2 ** 2) / 2)!r}")
    print(bump_jvp.wengert(x1, 1.0, x2, 0.0))

    print("=== seed 003: dual numbers a + bε are the value and tangent lists run together")
    dual = jitad.jvp(dual_example)
    print("f(2 + ε, 3) =", "%r + %rε" % dual(2.0, 1.0, 3.0))
    print(dual.wengert(2.0, 1.0, 3.0))


if __name__ == "__main__":
    main()
