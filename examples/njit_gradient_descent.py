"""A whole optimizer loop in Numba's nopython mode, calling jitad's compiled gradient.

`f.njit_value_and_grad(*example_args)` hands out the Numba dispatcher; it takes the
runtime arguments in order and returns `(value, (grad, ...))`.
"""
import numba
import numpy as np

import jitad


@jitad.jit_grad
def rosenbrock(x):
    return np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


@numba.njit
def gradient_descent(value_and_grad, x, learning_rate, steps):
    for _ in range(steps):
        value, (grad,) = value_and_grad(x)
        x = x - learning_rate * grad
    return x, value


def main():
    x0 = np.full(10, 0.5)
    kernel = rosenbrock.njit_value_and_grad(x0)
    x, value = gradient_descent(kernel, x0, 1e-3, 20_000)
    print(f"after 20,000 nopython steps: f = {value:.3e}, x[:3] = {x[:3]}")


if __name__ == "__main__":
    main()
