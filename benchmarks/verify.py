"""Correctness checks: central finite differences and result comparison."""

import numpy as np

FD_STEP = 1e-3          # relative step; Richardson extrapolation makes it O(h^4)
FD_COORDINATES = 16     # probe at most this many coordinates (plus one direction)


def flatten(parts):
    """Concatenate a float, an array, or a tuple of them into one 1-d array."""
    if not isinstance(parts, tuple):
        parts = (parts,)
    return np.concatenate([np.ravel(np.asarray(part, dtype=float)) for part in parts])


def structure(grad):
    """The gradient's structure: ``float``, an array shape, or a tuple of those."""
    if isinstance(grad, tuple):
        return tuple(structure(part) for part in grad)
    if isinstance(grad, np.ndarray):
        return ("ndarray", grad.shape)
    return "float" if isinstance(grad, float) else type(grad).__name__


def relative_error(actual, expected):
    """``|actual - expected| / |expected|`` in the 2-norm of the flattened values."""
    actual, expected = flatten(actual), flatten(expected)
    scale = np.linalg.norm(expected)
    return np.linalg.norm(actual - expected) / (scale if scale > 0.0 else 1.0)


def _with_step(args, argnums, direction, h):
    """``args`` with the differentiated ones moved by ``h * direction``."""
    argnums = argnums if isinstance(argnums, tuple) else (argnums,)
    moved, offset = list(args), 0
    for i in argnums:
        size = np.size(args[i])
        step = h * direction[offset:offset + size]
        if isinstance(args[i], np.ndarray):
            moved[i] = args[i] + step.reshape(args[i].shape)
        else:
            moved[i] = args[i] + float(step[0])
        offset += size
    return moved


def finite_difference_error(fun, args, argnums, grad, seed=0):
    """Relative error of ``grad`` against central differences of ``fun``.

    Probes every coordinate of the differentiated arguments when there are at
    most ``FD_COORDINATES`` of them, otherwise that many random ones, plus one
    random direction; each probe is a Richardson-extrapolated central
    difference (steps h and h/2) compared with the gradient's directional
    derivative.
    """
    argnums_tuple = argnums if isinstance(argnums, tuple) else (argnums,)
    point = flatten(tuple(args[i] for i in argnums_tuple))
    rng = np.random.default_rng(seed)
    n = point.size
    coordinates = (np.arange(n) if n <= FD_COORDINATES
                   else rng.choice(n, FD_COORDINATES, replace=False))
    directions = [np.eye(1, n, k).ravel() for k in coordinates]
    directions.append(rng.standard_normal(n) / np.sqrt(n))
    h = FD_STEP * max(1.0, np.max(np.abs(point)))
    grad = flatten(grad)

    def central(direction, step):
        plus = fun(*_with_step(args, argnums, direction, step))
        minus = fun(*_with_step(args, argnums, direction, -step))
        return (plus - minus) / (2.0 * step)

    numeric = [(4.0 * central(v, h / 2) - central(v, h)) / 3.0 for v in directions]
    analytic = [grad @ v for v in directions]
    return relative_error(np.array(analytic), np.array(numeric))
