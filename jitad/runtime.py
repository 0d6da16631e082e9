"""Helpers that generated source calls where NumPy (as Numba supports it) has no direct form.

Plain Python and NumPy in the subset Numba compiles: generated code runs as plain
Python with these, and the compile step hands Numba compiled versions of them.
"""
import numpy as np

__all__ = ["max_rows", "min_rows", "prod_rows", "scatter_add"]


def max_rows(x):
    """Maximum of each row of a contiguous 2-D array."""
    out = np.empty(x.shape[0])
    for i in range(x.shape[0]):
        out[i] = np.max(x[i])
    return out


def min_rows(x):
    """Minimum of each row of a contiguous 2-D array."""
    out = np.empty(x.shape[0])
    for i in range(x.shape[0]):
        out[i] = np.min(x[i])
    return out


def prod_rows(x):
    """Product of each row of a contiguous 2-D array."""
    out = np.empty(x.shape[0])
    for i in range(x.shape[0]):
        out[i] = np.prod(x[i])
    return out


def scatter_add(acc, index, values):
    """`acc[index[k]] += values[k]` for every k, repeated indices accumulating; returns `acc`."""
    for k in range(index.shape[0]):
        acc[index[k]] += values[k]
    return acc
