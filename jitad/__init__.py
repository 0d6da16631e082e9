"""jitad: reverse-mode automatic differentiation of NumPy/math code, compiled with Numba.

    @jitad.jit_grad
    def loss(w, X, y): ...
    g = loss(w, X, y)                     # gradient wrt w
    v, g = loss.value_and_grad(w, X, y)
    print(loss.wengert(w, X, y)); print(loss.source(w, X, y))
"""
__version__ = "0.1.0"

from .api import JitGrad, jit_grad  # noqa: E402
from .errors import (ArgumentError, CacheWarning, GuardLimitError, JitadError,  # noqa: E402
                     NonScalarOutputError, RetraceWarning, ShapeError, TraceError)
from .tracing import where  # noqa: E402
from .custom import custom_jvp, custom_vjp, primitive, stop_gradient  # noqa: E402
from .derivatives import grad, hessian, hvp, jacobian, jvp  # noqa: E402

__all__ = ["ArgumentError", "CacheWarning", "GuardLimitError", "JitGrad", "JitadError",
           "NonScalarOutputError", "RetraceWarning", "ShapeError", "TraceError", "custom_jvp",
           "custom_vjp", "grad", "hessian", "hvp", "jacobian", "jit_grad", "jvp", "primitive",
           "stop_gradient", "where"]
