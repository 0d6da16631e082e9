"""Linear algebra: `matmul` (np.dot / @ for 1-D and 2-D operands, BLAS in Numba) and `outer`."""
import numpy as np

from ..errors import LinAlgShapeError, ShapeError
from .core import Primitive, result_dtype


def _matmul_rule(a, b):
    if a.ndim not in (1, 2) or b.ndim not in (1, 2):
        raise ShapeError(f"matmul supports 1-D and 2-D operands, got shapes {a.shape} and {b.shape}")
    if a.shape[-1] != b.shape[0]:
        raise ShapeError(f"matmul: inner dimensions differ: shapes {a.shape} and {b.shape} "
                         f"({a.shape[-1]} != {b.shape[0]})")
    return result_dtype(a, b, floating=True), a.shape[:-1] + b.shape[1:]


def _matmul_vjp(b, g, out, x, y):
    # out = x @ y.  x_bar = g @ y.T and y_bar = x.T @ g, with 1-D operands as vectors.
    if x.ndim == 1 and y.ndim == 1:
        return b.mul(y, g), b.mul(x, g)
    if y.ndim == 1:                                   # (m,n) @ (n,) -> (m,)
        return b.outer(g, y), b.matmul(b.transpose(x, axes=(1, 0)), g)
    if x.ndim == 1:                                   # (n,) @ (n,k) -> (k,)
        return b.matmul(y, g), b.outer(x, g)
    return (b.matmul(g, b.transpose(y, axes=(1, 0))),
            b.matmul(b.transpose(x, axes=(1, 0)), g))


def _bilinear_jvp(name):
    """d(x*y) = dx*y + x*dy for a primitive bilinear in its two operands."""
    def jvp(b, out, operands, tangents):
        (x, y), (dx, dy) = operands, tangents
        prim = b.registry[name]
        terms = [b.bind(prim, dx, y) if dx is not None else None,
                 b.bind(prim, x, dy) if dy is not None else None]
        terms = [t for t in terms if t is not None]
        return terms[0] if len(terms) == 1 else b.add(*terms)
    return jvp


def _outer_rule(a, b):
    if a.ndim != 1 or b.ndim != 1:
        raise ShapeError(f"outer takes 1-D operands, got shapes {a.shape} and {b.shape}")
    return result_dtype(a, b, floating=True), (a.shape[0], b.shape[0])


def _outer_vjp(b, g, out, x, y):
    return b.matmul(g, y), b.matmul(b.transpose(g, axes=(1, 0)), x)


# ---------------------------------------------------------------- matrix functions
#
# Adjoints after Giles, "An extended collection of matrix derivative results for forward
# and reverse mode AD" (2008), and Murray, "Differentiation of the Cholesky decomposition"
# (2016). `cholesky`, `eigh` and `eigvalsh` read the lower triangle only (as NumPy's do):
# their adjoints are the derivatives with respect to each element actually read.

def _square(name):
    def check(a):
        if a.ndim != 2 or a.shape[0] != a.shape[1]:       # (NumPy's LinAlgError)
            raise LinAlgShapeError(f"{name} takes a square 2-D matrix, got shape {a.shape}")
    return check


def _T(b, x):
    return b.transpose(x, axes=(1, 0))


def _solve_rule(a, rhs, **params):
    _square("solve")(a)
    if rhs.ndim not in (1, 2) or rhs.shape[0] != a.shape[0]:
        raise ShapeError(f"solve: right-hand side of shape {rhs.shape} does not match a "
                         f"matrix of shape {a.shape}")
    return "float64", rhs.shape


def _matrix_rule(name):
    def rule(a, **params):
        _square(name)(a)
        return "float64", a.shape
    return rule


def _scalar_rule(name):
    def rule(a):
        _square(name)(a)
        return "float64", ()
    return rule


def _vector_rule(name):
    def rule(a):
        _square(name)(a)
        return "float64", a.shape[:1]
    return rule


def _outer_or_matmul(b, x, y):
    """x @ y.T for 2-D operands, outer(x, y) for 1-D ones."""
    return b.outer(x, y) if x.ndim == 1 else b.matmul(x, _T(b, y))


def _solve_vjp(b, g, out, a, rhs):
    rhs_bar = b.solve(_T(b, a), g)
    return b.neg(_outer_or_matmul(b, rhs_bar, out)), rhs_bar


def _solve_jvp(b, out, operands, tangents):
    a, (da, drhs) = operands[0], tangents
    total = drhs
    if da is not None:
        term = b.matmul(da, out)
        total = b.neg(term) if total is None else b.sub(total, term)
    return b.solve(a, total)


def _inv_vjp(b, g, out, a):
    outT = _T(b, out)
    return (b.neg(b.matmul(b.matmul(outT, g), outT)),)


def _inv_jvp(b, out, operands, tangents):
    return b.neg(b.matmul(b.matmul(out, tangents[0]), out))


def _det_vjp(b, g, out, a):
    return (b.mul(g, b.cofactor(a)),)


def _det_jvp(b, out, operands, tangents):
    return b.sum(b.mul(b.cofactor(operands[0]), tangents[0]), axis=None)


def _cofactor_vjp(b, g, out, a):
    # out = det(a) inv(a).T: a_bar = <g, out> inv(a).T - inv(a).T g.T out.
    inv_t = _T(b, b.inv(a))
    return (b.sub(b.mul(b.sum(b.mul(g, out), axis=None), inv_t),
                  b.matmul(b.matmul(inv_t, _T(b, g)), out)),)


def _cofactor_jvp(b, out, operands, tangents):
    # d out = tr(inv(a) da) out - out da.T inv(a).T.
    inv_t, da = _T(b, b.inv(operands[0])), tangents[0]
    return b.sub(b.mul(b.sum(b.mul(inv_t, da), axis=None), out),
                 b.matmul(b.matmul(out, _T(b, da)), inv_t))


def _logabsdet_vjp(b, g, out, a):     # (inv(a).T; at a singular a, infinite where it is)
    return (b.mul(b.div(b.cofactor(a), b.det(a)), g),)


def _logabsdet_jvp(b, out, operands, tangents):
    return b.sum(b.mul(b.div(b.cofactor(operands[0]), b.det(operands[0])), tangents[0]),
                 axis=None)


def _triangle(b, x, lower, k=0):
    return b.tril(x, k=k) if lower else b.triu(x, k=-k)


def _solve_triangular_vjp(b, g, out, a, rhs, lower):
    rhs_bar = b.solve_triangular(_T(b, a), g, lower=not lower)
    return b.neg(_triangle(b, _outer_or_matmul(b, rhs_bar, out), lower)), rhs_bar


def _solve_triangular_jvp(b, out, operands, tangents, lower):
    a, (da, drhs) = operands[0], tangents
    total = drhs
    if da is not None:
        term = b.matmul(_triangle(b, da, lower), out)
        total = b.neg(term) if total is None else b.sub(total, term)
    return b.solve_triangular(a, total, lower=lower)


def _lower_read(b, s):
    """The cotangent of a matrix of which only the lower triangle is read, given `s` with
    `<s, dA>` the derivative for symmetric `dA`: tril(s + s.T) with the diagonal halved."""
    eye = b.eye_like(s)
    return b.mul(b.tril(b.add(s, _T(b, s)), k=0), b.sub(1.0, b.mul(eye, 0.5)))


def _symmetric_tangent(b, da):
    """The symmetric matrix a function reading the lower triangle of `a + da` sees."""
    return b.add(b.tril(da, k=0), _T(b, b.tril(da, k=-1)))


def _phi(b, x):
    """The lower triangle of `x` with its diagonal halved."""
    return b.sub(b.tril(x, k=0), b.mul(b.mul(b.eye_like(x), x), 0.5))


def _cholesky_vjp(b, g, out, a):
    # S = L^-T phi(L^T g) L^-1 (Murray 2016, eq. 10), then the lower-triangle read.
    upper = _T(b, out)
    m = b.solve_triangular(upper, _phi(b, b.matmul(upper, g)), lower=False)
    s = _T(b, b.solve_triangular(upper, _T(b, m), lower=False))
    return (_lower_read(b, s),)


def _cholesky_jvp(b, out, operands, tangents):
    # dL = L phi(L^-1 dA L^-T)
    da = _symmetric_tangent(b, tangents[0])
    y = b.solve_triangular(out, da, lower=True)
    x = _T(b, b.solve_triangular(out, _T(b, y), lower=True))
    return b.matmul(out, _phi(b, x))


def _gaps(b, a):
    """F[i, j] = 1 / (w[j] - w[i]) off the diagonal, 0 on it (w: eigenvalues of a)."""
    w = b.eigvalsh(a)
    eye = b.eye_like(a)
    diff = b.sub(b.expand_dims(w, axis=0), b.expand_dims(w, axis=1))
    return b.div(b.sub(1.0, eye), b.add(diff, eye))


def _eigvalsh_vjp(b, g, out, a):
    v = b.eigh_vectors(a)
    return (_lower_read(b, b.matmul(b.mul(v, b.expand_dims(g, axis=0)), _T(b, v))),)


def _eigvalsh_jvp(b, out, operands, tangents):
    v = b.eigh_vectors(operands[0])
    da = _symmetric_tangent(b, tangents[0])
    return b.sum(b.mul(v, b.matmul(da, v)), axis=0)


def _eigh_vectors_vjp(b, g, out, a):
    inner = b.mul(_gaps(b, a), b.matmul(_T(b, out), g))
    return (_lower_read(b, b.matmul(b.matmul(out, inner), _T(b, out))),)


def _eigh_vectors_jvp(b, out, operands, tangents):
    da = _symmetric_tangent(b, tangents[0])
    inner = b.mul(_gaps(b, operands[0]), b.matmul(_T(b, out), b.matmul(da, out)))
    return b.matmul(out, inner)


def _triangle_rule(x, k):
    if x.ndim != 2:
        raise ShapeError(f"tril/triu take a 2-D matrix, got shape {x.shape}")
    return x.dtype, x.shape


def _linear_in_first(name):
    def jvp(b, out, operands, tangents, **params):
        return None if tangents[0] is None else b.bind(b.registry[name], tangents[0], **params)
    return jvp


def _floating(template: str):
    """`template` with integer and bool array operands converted to float64 first, as NumPy
    converts them (Numba's np.dot and np.linalg take float arrays only)."""
    def source(texts, operands, params):
        texts = [f"{t}.astype(np.float64)" if getattr(a, "dtype", "float64") != "float64"
                 and getattr(a, "ndim", 0) else t for t, a in zip(texts, operands)]
        return template.format(*texts, **params)
    return source


# Primitives whose NumPy and Numba code raise np.linalg.LinAlgError (a singular matrix, one
# not positive definite; Numba's also for entries that are inf or NaN).
RAISE_LINALG_ERRORS = frozenset({"solve", "inv", "det", "cofactor", "logabsdet",
                                 "slogdet_sign", "cholesky", "eigvalsh", "eigh_vectors"})

# Matrices the registry-wide tests sample: shifted towards well-conditioned ones.
_MATRIX = ((0.5, 1.5),)


def build():
    """The linear-algebra records (called once by the registry)."""
    return [
        Primitive("matmul", _floating("np.dot({0}, {1})"), _matmul_rule, _matmul_vjp, _bilinear_jvp("matmul"),
                  traces=(np.matmul,), domain=((-2.0, 2.0), (-2.0, 2.0))),
        Primitive("outer", "np.outer({0}, {1})", _outer_rule, _outer_vjp, _bilinear_jvp("outer"),
                  domain=((-2.0, 2.0), (-2.0, 2.0))),
        Primitive("solve", _floating("np.linalg.solve({0}, {1})"), _solve_rule, _solve_vjp, _solve_jvp,
                  domain=_MATRIX + ((-2.0, 2.0),)),
        Primitive("solve_triangular", _floating("solve_triangular({0}, {1}, {lower})"), _solve_rule,
                  _solve_triangular_vjp, _solve_triangular_jvp, domain=_MATRIX + ((-2.0, 2.0),),
                  test_params=({"lower": True}, {"lower": False})),
        Primitive("inv", _floating("np.linalg.inv({0})"), _matrix_rule("inv"), _inv_vjp, _inv_jvp,
                  domain=_MATRIX),
        Primitive("det", _floating("np.linalg.det({0})"), _scalar_rule("det"), _det_vjp, _det_jvp,
                  domain=_MATRIX),
        Primitive("cofactor", _floating("cofactor({0})"), _matrix_rule("det"), _cofactor_vjp,
                  _cofactor_jvp, domain=_MATRIX),
        Primitive("logabsdet", _floating("np.linalg.slogdet({0})[1]"), _scalar_rule("slogdet"),
                  _logabsdet_vjp, _logabsdet_jvp, domain=_MATRIX),
        Primitive("slogdet_sign", _floating("np.linalg.slogdet({0})[0]"), _scalar_rule("slogdet"),
                  nondifferentiable=True, domain=_MATRIX),
        Primitive("cholesky", _floating("np.linalg.cholesky({0})"), _matrix_rule("cholesky"),
                  _cholesky_vjp, _cholesky_jvp, domain=_MATRIX),
        Primitive("eigvalsh", _floating("np.linalg.eigh({0})[0]"), _vector_rule("eigh"), _eigvalsh_vjp,
                  _eigvalsh_jvp, domain=_MATRIX),
        Primitive("eigh_vectors", _floating("np.linalg.eigh({0})[1]"), _matrix_rule("eigh"),
                  _eigh_vectors_vjp, _eigh_vectors_jvp, domain=_MATRIX),
        Primitive("tril", "np.tril({0}, {k})", _triangle_rule,
                  lambda b, g, out, x, k: (b.tril(g, k=k),), _linear_in_first("tril"),
                  linear=True, domain=((-2.0, 2.0),), test_params=({"k": 0}, {"k": -1})),
        Primitive("triu", "np.triu({0}, {k})", _triangle_rule,
                  lambda b, g, out, x, k: (b.triu(g, k=k),), _linear_in_first("triu"),
                  linear=True, domain=((-2.0, 2.0),), test_params=({"k": 0}, {"k": 1})),
        Primitive("eye_like", "np.eye({0}.shape[0])", _matrix_rule("eye"),
                  nondifferentiable=True, domain=((-2.0, 2.0),)),
    ]
