"""The NumPy tier: first calls of array code answered by NumPy while Numba compiles.

Step: a list -> source printed for NumPy (`codegen.generate(..., vectorized=True)`: one NumPy
statement per array entry, no element loops) -> a `NumpyKernel`, callable like a compiled
kernel. Numba takes seconds to compile array code (type inference and LLVM over every loop
nest); plain Python runs the same statements at once, slower per call. The API serves first
calls with it while the specialized kernel compiles in the background (see api.py), as the
tape does for long scalar lists.

It never answers what the compiled code would answer otherwise: arguments must have the
dtypes and ranks of the signature it was made for (else TypeError, as a sealed Numba
dispatcher); floats run as NumPy scalars under `np.errstate(all="ignore")`, as Numba's NumPy
error model; and a call that raises anything but jitad's own errors, or returns other
dtypes or ranks than the list's outputs, is run again on the specialized kernel (waiting
for it). Results agree with the specialized kernel's to rounding (NumPy sums pairwise and
multiplies matrices through BLAS; the compiled loops accumulate in order).
"""
from __future__ import annotations

import numpy as np

from .errors import JitadError


def _same_everywhere(error) -> bool:
    """Does the compiled code raise `error` the same way? jitad's own errors (checks of
    shapes, indices, guards) yes; anything else (ZeroDivisionError of Python floats, math's
    domain errors, ...) may differ from compiled code, which then answers."""
    return type(error).__module__.startswith("jitad.")


class NumpyKernel:
    """`kernel(*runtime_args) -> results` by the generated source run as plain Python.

    `calls` counts the calls it served; once `successor` (the specialized kernel of the same
    list) is set, calls go to it. `specialized` (set by the API) waits for the specialized
    kernel and returns a callable running it, or None if its compile failed.
    """

    tier = "numpy"           # (the `tier` of f.stats())
    successor = None
    specialized = None

    def __init__(self, source: str, fn_name: str, filename: str, example_args, outputs,
                 returned_text, expected=None, helpers=None):
        namespace: dict = {"__name__": f"jitad_numpy_tier.{fn_name}", **(helpers or {})}
        exec(compile(source, filename, "exec"), namespace)
        self.function = namespace[fn_name]
        self.arguments = [(a.dtype, a.ndim) if isinstance(a, np.ndarray) else type(a)
                          for a in example_args]
        # The outputs' (dtype, rank) in the structure the function returns (`expected` where
        # it returns something else than a list's outputs: a derivative object's loop).
        self.expected = expected or eval(
            returned_text([f"_outputs[{i}]" for i in range(len(outputs))]),
            {"_outputs": [(np.dtype(a.dtype), a.ndim) for a in outputs]})
        self.calls = 0

    def __call__(self, *args):
        if self.successor is not None:
            return self.successor(*args)
        if len(args) != len(self.arguments):
            raise TypeError(f"{self.function.__name__}: {len(args)} arguments for "
                            f"{len(self.arguments)}")
        values = [self._argument(a, kind) for a, kind in zip(args, self.arguments)]
        self.calls += 1
        try:
            with np.errstate(all="ignore"):
                result = self.function(*values)
            checked = _checked(result, self.expected)
        except Exception as error:
            if _same_everywhere(error):
                raise
            return self._compiled_or_raise(args, error)
        if checked is None:         # another dtype or rank than compiled code returns
            return self._compiled_or_raise(args, None)
        return checked

    def _argument(self, a, kind):
        """`a` checked against its kind, floats as NumPy's (IEEE results, never Python's
        ZeroDivisionError or complex powers)."""
        if type(kind) is tuple:
            if not (isinstance(a, np.ndarray) and a.dtype == kind[0] and a.ndim == kind[1]):
                raise TypeError(f"{self.function.__name__}: an argument of another dtype or "
                                f"rank than {kind[0]}[{kind[1]}-d] (the NumPy tier's "
                                "signature)")
            return a
        return np.float64(a) if isinstance(a, (float, np.floating)) else a

    def _compiled_or_raise(self, args, error):
        kernel = self.specialized() if self.specialized is not None else None
        if kernel is None:
            if error is not None:
                raise error
            raise JitadError(f"{self.function.__name__}: the NumPy tier returned values of "
                             "other types than the list's and the specialized code did not "
                             "compile")
        return kernel(*args)


def _checked(result, expected):
    """`result` with NumPy scalars as Python ones, if its leaves have the dtypes and ranks
    of `expected` (same structure); else None."""
    if isinstance(expected[0], np.dtype):
        dtype, ndim = expected
        if ndim:
            ok = isinstance(result, np.ndarray) and result.dtype == dtype and result.ndim == ndim
            return result if ok else None
        value = result.item() if isinstance(result, (np.generic, np.ndarray)) and \
            np.ndim(result) == 0 else result
        if dtype.kind == "b":
            return value if type(value) is bool else None
        if dtype.kind == "i":
            return value if type(value) is int else None
        return float(value) if dtype.kind == "f" and type(value) in (float, int) else None
    if not isinstance(result, tuple) or len(result) != len(expected):
        return None
    leaves = tuple(_checked(r, e) for r, e in zip(result, expected))
    return None if any(leaf is None for leaf in leaves) else leaves
