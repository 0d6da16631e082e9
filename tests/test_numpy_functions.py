"""NumPy (and math, scipy.special) functions as users call them: each against central
differences through the plain-Python path, shape groups, broadcasting, axis/keepdims
variants; a few compiled bundles; wrong rules must fail; clear errors for the rest."""
import math
import warnings

import numpy as np
import pytest
import scipy.special
from scipy.special import logsumexp

import jitad
from jitad.errors import TraceError
from jitad.primitives import REGISTRY
from jitad.testing import check_grads
from conftest import (assert_close, check_grads_python, prim_names, python_jvp,
                      python_value_and_grad, rng_for, sample)

C23 = np.array([[0.3, -1.2, 0.7], [1.1, 0.4, -0.6]])


def _ints(*values):
    return np.array(values, dtype=np.int64)


def W(shape, seed=0):
    """A fixed weight array, so that sum(f(x) * W) has a gradient that sees every element."""
    return np.random.default_rng(seed).uniform(0.5, 1.5, size=shape)


def weighted(f, shape=None):
    return lambda *a: np.sum(f(*a) * (W(shape) if shape else 1.0))


# (id, function, argument specs (shape, or (shape, low, high), or a fixed array), argnums)
CASES = [
    # statistics
    ("var", lambda x: np.var(x), [(5,)], 0),
    ("var axis=0", weighted(lambda x: np.var(x, axis=0), (3,)), [(4, 3)], 0),
    ("var axis=1 keepdims", weighted(lambda x: np.var(x, axis=1, keepdims=True), (4, 1)),
     [(4, 3)], 0),
    ("var ddof=1", lambda x: np.var(x, ddof=1), [(2, 3)], 0),
    ("std", lambda x: np.std(x), [(5,)], 0),
    ("std axis=-1 ddof", weighted(lambda x: np.std(x, axis=-1, ddof=1), (2,)), [(2, 4)], 0),
    ("x.std()", lambda x: x.std(axis=0).sum(), [(3, 2)], 0),
    # products
    ("cross 3", weighted(np.cross, (3,)), [(3,), (3,)], (0, 1)),
    ("cross rows", weighted(np.cross, (4, 3)), [(4, 3), (4, 3)], (0, 1)),
    ("cross broadcast", weighted(np.cross, (4, 3)), [(4, 3), (3,)], (0, 1)),
    ("cross 2", lambda a, b: np.cross(a, b), [(2,), (2,)], (0, 1)),
    ("cross axis=0", weighted(lambda a, b: np.cross(a, b, axis=0), (3, 2)), [(3, 2), (3, 2)],
     (0, 1)),
    ("kron 1-D", weighted(np.kron, (6,)), [(2,), (3,)], (0, 1)),
    ("kron 2-D", weighted(np.kron, (4, 6)), [(2, 3), (2, 2)], (0, 1)),
    ("einsum ij,jk->ik", weighted(lambda a, b: np.einsum("ij,jk->ik", a, b), (2, 4)),
     [(2, 3), (3, 4)], (0, 1)),
    ("einsum i,i", lambda a, b: np.einsum("i,i", a, b), [(3,), (3,)], (0, 1)),
    ("einsum ii (trace)", lambda a: np.einsum("ii", a), [(3, 3)], 0),
    ("einsum ii->i", weighted(lambda a: np.einsum("ii->i", a), (3,)), [(3, 3)], 0),
    ("einsum batch bij,bjk->bik", weighted(lambda a, b: np.einsum("bij,bjk->bik", a, b),
                                           (2, 3, 2)), [(2, 3, 4), (2, 4, 2)], (0, 1)),
    ("einsum ij->ji", weighted(lambda a: np.einsum("ij->ji", a), (3, 2)), [(2, 3)], 0),
    ("einsum ij->", lambda a: np.einsum("ij->", a), [(2, 3)], 0),
    ("einsum implicit ij,j", weighted(lambda a, b: np.einsum("ij,j", a, b), (2,)),
     [(2, 3), (3,)], (0, 1)),
    ("einsum three ij,jk,k->i", weighted(lambda a, b, c: np.einsum("ij,jk,k->i", a, b, c), (2,)),
     [(2, 3), (3, 4), (4,)], (0, 1, 2)),
    ("einsum outer i,j->ij", weighted(lambda a, b: np.einsum("i,j->ij", a, b), (2, 3)),
     [(2,), (3,)], (0, 1)),
    ("tensordot 2", lambda a, b: np.tensordot(a, b), [(2, 3), (2, 3)], (0, 1)),
    ("tensordot axes=1", weighted(lambda a, b: np.tensordot(a, b, axes=1), (2, 4)),
     [(2, 3), (3, 4)], (0, 1)),
    ("tensordot pairs", weighted(lambda a, b: np.tensordot(a, b, axes=([0], [1])), (3, 4)),
     [(2, 3), (4, 2)], (0, 1)),
    ("inner 1-D", lambda a, b: np.inner(a, b), [(3,), (3,)], (0, 1)),
    ("inner 2-D", weighted(np.inner, (2, 4)), [(2, 3), (4, 3)], (0, 1)),
    ("vdot", lambda a, b: np.vdot(a, b), [(2, 3), (2, 3)], (0, 1)),
    ("trace", lambda a: np.trace(a), [(3, 3)], 0),
    ("trace offset", lambda a: np.trace(a, offset=1), [(3, 4)], 0),
    ("matmul 3-D", weighted(lambda a, b: a @ b, (2, 3, 2)), [(2, 3, 4), (2, 4, 2)], (0, 1)),
    ("matmul 3-D @ 2-D", weighted(np.matmul, (2, 3, 2)), [(2, 3, 4), (4, 2)], (0, 1)),
    ("matmul 4-D broadcast", weighted(lambda a, b: a @ b, (2, 3, 2, 2)),
     [(2, 1, 2, 3), (3, 3, 2)], (0, 1)),
    ("matmul 3-D @ 1-D", weighted(lambda a, b: a @ b, (2, 3)), [(2, 3, 4), (4,)], (0, 1)),
    ("np.dot 3-D", weighted(np.dot, (2, 3, 2)), [(2, 3), (3, 3, 2)], (0, 1)),
    # (np.dot of a scalar multiplies, np.outer ravels: both were ShapeErrors)
    ("np.dot scalar", weighted(np.dot, (3,)), [(), (3,)], (0, 1)),
    ("np.dot 0-d scalars", lambda a, b: np.dot(a, b), [(), ()], (0, 1)),
    ("outer 2-D operands", weighted(np.outer, (6, 2)), [(2, 3), (2, 1)], (0, 1)),
    ("outer 0-d", weighted(np.outer, (1, 3)), [(), (3,)], (0, 1)),
    # differences
    ("diff", weighted(np.diff, (4,)), [(5,)], 0),
    ("diff n=2 axis=0", weighted(lambda x: np.diff(x, n=2, axis=0), (2, 3)), [(4, 3)], 0),
    ("diff prepend", weighted(lambda x: np.diff(x, prepend=0.0), (4,)), [(4,)], 0),
    ("gradient", weighted(np.gradient, (5,)), [(5,)], 0),
    ("gradient spacing", weighted(lambda x: np.gradient(x, 0.5), (4,)), [(4,)], 0),
    ("gradient 2-D", lambda x: np.sum(np.gradient(x)[0] * W((3, 4))) + np.sum(np.gradient(x)[1]),
     [(3, 4)], 0),
    ("gradient axis=1", weighted(lambda x: np.gradient(x, axis=1), (3, 4)), [(3, 4)], 0),
    ("linspace traced ends", weighted(lambda a, b: np.linspace(a, b, 5), (5,)), [(), ()], (0, 1)),
    ("linspace endpoint=False", weighted(lambda a, b: np.linspace(a, b, 4, endpoint=False), (4,)),
     [(), ()], (0, 1)),
    ("linspace array ends", weighted(lambda a, b: np.linspace(a, b, 3), (3, 2)), [(2,), (2,)],
     (0, 1)),
    # element moves (one gather)
    ("repeat", weighted(lambda x: np.repeat(x, 2), (6,)), [(3,)], 0),
    ("repeat axis=1", weighted(lambda x: np.repeat(x, [1, 2, 0], axis=1), (2, 3)), [(2, 3)], 0),
    ("x.repeat", weighted(lambda x: x.repeat(3), (6,)), [(2,)], 0),
    ("tile", weighted(lambda x: np.tile(x, (2, 2)), (4, 6)), [(2, 3)], 0),
    ("roll", weighted(lambda x: np.roll(x, 2), (5,)), [(5,)], 0),
    ("roll axis", weighted(lambda x: np.roll(x, -1, axis=1), (2, 3)), [(2, 3)], 0),
    ("flip", weighted(np.flip, (2, 3)), [(2, 3)], 0),
    ("flip axis", weighted(lambda x: np.flip(x, axis=1), (2, 3)), [(2, 3)], 0),
    ("fliplr", weighted(np.fliplr, (2, 3)), [(2, 3)], 0),
    ("flipud", weighted(np.flipud, (2, 3)), [(2, 3)], 0),
    ("rot90", weighted(np.rot90, (3, 2)), [(2, 3)], 0),
    ("rot90 k=3", weighted(lambda x: np.rot90(x, 3), (3, 2)), [(2, 3)], 0),
    ("diag of vector", weighted(np.diag, (3, 3)), [(3,)], 0),
    ("diag k=1", weighted(lambda x: np.diag(x, 1), (4, 4)), [(3,)], 0),
    ("diag of matrix", weighted(np.diag, (2,)), [(2, 3)], 0),
    ("diagonal", weighted(np.diagonal, (3,)), [(3, 4)], 0),
    ("triu", weighted(np.triu, (3, 3)), [(3, 3)], 0),
    ("tril k=-1", weighted(lambda x: np.tril(x, -1), (3, 4)), [(3, 4)], 0),
    ("pad constant", weighted(lambda x: np.pad(x, 1), (5,)), [(3,)], 0),
    ("pad 2-D value", weighted(lambda x: np.pad(x, ((1, 0), (0, 2)), constant_values=2.0),
                               (3, 5)), [(2, 3)], 0),
    ("pad edge", weighted(lambda x: np.pad(x, 2, mode="edge"), (7,)), [(3,)], 0),
    ("pad reflect", weighted(lambda x: np.pad(x, 2, mode="reflect"), (8,)), [(4,)], 0),
    ("pad wrap", weighted(lambda x: np.pad(x, 1, mode="wrap"), (5,)), [(3,)], 0),
    ("take", weighted(lambda x: np.take(x, [2, 0, 2]), (3,)), [(4,)], 0),
    ("take axis=1", weighted(lambda x: np.take(x, [1, 1], axis=1), (2, 2)), [(2, 3)], 0),
    ("take traced axis=1", lambda x, i: np.sum(np.take(x, i, axis=1) ** 3), [(2, 3), _ints(2, 0)], 0),
    ("take traced flat", lambda x, i: np.sum(np.take(x, i) ** 3), [(2, 3), _ints(5, 0, 5)], 0),
    # shapes
    ("swapaxes", weighted(lambda x: np.swapaxes(x, 0, 2), (4, 3, 2)), [(2, 3, 4)], 0),
    ("x.swapaxes", weighted(lambda x: x.swapaxes(0, 1), (3, 2)), [(2, 3)], 0),
    ("moveaxis", weighted(lambda x: np.moveaxis(x, 0, -1), (3, 4, 2)), [(2, 3, 4)], 0),
    ("rollaxis", weighted(lambda x: np.rollaxis(x, 2), (4, 2, 3)), [(2, 3, 4)], 0),
    ("split", lambda x: sum(np.sum(p * (k + 1.0)) for k, p in enumerate(np.split(x, 3))),
     [(6,)], 0),
    ("split indices axis=1", lambda x: sum(np.sum(np.sin(p) * (k + 1.0)) for k, p in
                                           enumerate(np.split(x, [1, 3], axis=1))), [(2, 4)], 0),
    ("array_split", lambda x: sum(np.sum(p ** 2 * (k + 1.0)) for k, p in
                                  enumerate(np.array_split(x, 3))), [(5,)], 0),
    ("hsplit", lambda x: np.sum(np.hsplit(x, 2)[1] ** 2), [(2, 4)], 0),
    ("vsplit", lambda x: np.sum(np.vsplit(x, 2)[0] ** 3), [(4, 2)], 0),
    ("dsplit", lambda x: np.sum(np.dsplit(x, 2)[1] ** 3), [(1, 2, 4)], 0),
    ("atleast_1d", lambda x: np.sum(np.atleast_1d(x) ** 2), [()], 0),
    ("atleast_2d", lambda x: np.sum(np.atleast_2d(x) @ np.ones((3, 1))), [(3,)], 0),
    ("atleast_3d", lambda x: np.sum(np.atleast_3d(x)[:, :, 0] * C23), [(2, 3)], 0),
    ("vstack", weighted(lambda x, y: np.vstack([x, y]), (2, 3)), [(3,), (3,)], (0, 1)),
    ("hstack", weighted(lambda x, y: np.hstack((x, y)), (5,)), [(2,), (3,)], (0, 1)),
    ("hstack 2-D", weighted(lambda x, y: np.hstack((x, y)), (2, 4)), [(2, 1), (2, 3)], (0, 1)),
    ("dstack", weighted(lambda x, y: np.dstack((x, y)), (1, 3, 2)), [(3,), (3,)], (0, 1)),
    ("column_stack", weighted(lambda x, y: np.column_stack((x, y)), (3, 3)), [(3,), (3, 2)],
     (0, 1)),
    ("append", weighted(lambda x, y: np.append(x, y), (5,)), [(2,), (3,)], (0, 1)),
    ("append axis=0", weighted(lambda x, y: np.append(x, y, axis=0), (3, 2)),
     [(1, 2), (2, 2)], (0, 1)),
    # scans and sorting
    ("cumsum", weighted(np.cumsum, (4,)), [(4,)], 0),
    ("cumsum axis=0", weighted(lambda x: np.cumsum(x, axis=0), (3, 2)), [(3, 2)], 0),
    ("cumsum axis=1 3-D", weighted(lambda x: np.cumsum(x, axis=1), (2, 3, 2)), [(2, 3, 2)], 0),
    ("cumsum flat", weighted(np.cumsum, (6,)), [(2, 3)], 0),
    ("x.cumsum", weighted(lambda x: x.cumsum(axis=-1), (2, 3)), [(2, 3)], 0),
    ("cumprod", weighted(np.cumprod, (4,)), [((4,), 0.4, 1.6)], 0),
    ("cumprod axis=0", weighted(lambda x: np.cumprod(x, axis=0), (3, 2)), [((3, 2), 0.4, 1.6)],
     0),
    ("sort", weighted(np.sort, (5,)), [(5,)], 0),
    ("sort axis=0", weighted(lambda x: np.sort(x, axis=0), (3, 2)), [(3, 2)], 0),
    ("sort axis=None", weighted(lambda x: np.sort(x, axis=None), (6,)), [(2, 3)], 0),
    ("partition kth element", lambda x: np.partition(x, 2)[2], [(5,)], 0),
    # rounding: zero derivative
    ("floor", lambda x: np.sum(np.floor(x) * x), [(5,)], 0),
    ("ceil", lambda x: np.sum(np.ceil(x) * x ** 2), [(5,)], 0),
    ("round", lambda x: np.sum(np.round(x) * x), [(5,)], 0),
    ("round decimals", lambda x: np.sum(np.round(x, 1) * x), [(5,)], 0),
    ("trunc", lambda x: np.sum(np.trunc(x) * x), [(5,)], 0),
    ("rint", lambda x: np.sum(np.rint(x) * x), [(5,)], 0),
    ("//", lambda x: np.sum((x // 0.7) * x), [(5,)], 0),
    ("math.floor", lambda x: math.floor(x) * x + math.ceil(x), [()], 0),
    # more ufuncs and operators
    ("fabs", lambda x: np.sum(np.fabs(x) * x), [(5,)], 0),
    ("deg2rad", lambda x: np.sum(np.sin(np.deg2rad(x * 90.0))), [(3,)], 0),
    ("rad2deg", lambda x: np.sum(np.rad2deg(x) ** 2), [(3,)], 0),
    ("radians/degrees", lambda x: np.sum(np.radians(x) * np.degrees(x)), [(3,)], 0),
    ("% literal", lambda x: np.sum((x % 0.7) ** 2), [(5,)], 0),
    ("% traced", lambda x, y: np.sum((x % y) ** 2), [(4,), ((4,), 0.3, 0.8)], (0, 1)),
    ("literal % traced", lambda y: np.sum((2.5 % y) ** 2), [((3,), 0.3, 0.8)], 0),
    ("np.mod", lambda x, y: np.sum(np.mod(x, y) ** 2), [(4,), ((4,), 0.3, 0.8)], (0, 1)),
    ("math.fmod", lambda x: math.fmod(x, 0.4) ** 2, [()], 0),
    ("fmax broadcast", weighted(np.fmax, (2, 3)), [(2, 3), (3,)], (0, 1)),
    ("fmin", weighted(np.fmin, (3,)), [(3,), (3,)], (0, 1)),
    ("nan_to_num", lambda x: np.sum(np.nan_to_num(x) ** 2), [(4,)], 0),
    ("nan_to_num of inf", lambda x: np.sum(np.nan_to_num(np.log(x - 1.0), neginf=-5.0) * x),
     [((3,), 1.2, 2.0)], 0),
    ("sinc", weighted(np.sinc, (5,)), [(5,)], 0),
    ("cbrt negative", weighted(np.cbrt, (3,)), [((3,), -2.0, -0.3)], 0),
    ("math.log2/log10", lambda x: math.log2(x) * math.log10(x), [((), 0.5, 2.0)], 0),
    ("math.asinh/acosh/atanh", lambda x: math.asinh(x) + math.acosh(x + 1.5) + math.atanh(x / 2),
     [((), 0.1, 0.9)], 0),
    ("math.erf/erfc", lambda x: math.erf(x) * math.erfc(x / 2), [()], 0),
    ("math.lgamma/gamma", lambda x: math.lgamma(x) + math.gamma(x), [((), 0.4, 3.0)], 0),
    ("math.lgamma negative", lambda x: math.lgamma(x), [((), -0.9, -0.1)], 0),
    # scipy.special
    ("scipy logsumexp", lambda x: scipy.special.logsumexp(x), [(4,)], 0),
    ("scipy logsumexp axis", weighted(lambda x: scipy.special.logsumexp(x, axis=1), (2,)),
     [(2, 3)], 0),
    ("scipy logsumexp keepdims b", weighted(lambda x: scipy.special.logsumexp(
        x, axis=0, b=np.array([[1.0], [2.0]]), keepdims=True), (1, 3)), [(2, 3)], 0),
    ("logsumexp imported by name", lambda x: logsumexp(x * x), [(2, 3)], 0),
    ("scipy softmax", weighted(lambda x: scipy.special.softmax(x), (4,)), [(4,)], 0),
    ("scipy softmax axis", weighted(lambda x: scipy.special.softmax(x, axis=1), (2, 3)),
     [(2, 3)], 0),
    ("scipy log_softmax", weighted(lambda x: scipy.special.log_softmax(x, axis=0), (2, 3)),
     [(2, 3)], 0),
    ("scipy expit", weighted(scipy.special.expit, (4,)), [(4,)], 0),
    ("scipy erf/erfc", weighted(lambda x: scipy.special.erf(x) + scipy.special.erfc(x), (3,)),
     [(3,)], 0),
    ("scipy gammaln", weighted(scipy.special.gammaln, (3,)), [((3,), 0.3, 4.0)], 0),
    ("scipy gamma", weighted(scipy.special.gamma, (3,)), [((3,), 0.3, 3.0)], 0),
    ("scipy digamma", weighted(scipy.special.digamma, (3,)), [((3,), 0.3, 4.0)], 0),
    ("scipy psi", lambda x: scipy.special.psi(x), [((), 0.3, 4.0)], 0),
    ("scipy xlogy", weighted(scipy.special.xlogy, (3,)), [(3,), ((3,), 0.3, 2.0)], (0, 1)),
    ("scipy xlog1py", weighted(scipy.special.xlog1py, (3,)), [(3,), ((3,), 0.3, 2.0)], (0, 1)),
    ("scipy logit", weighted(scipy.special.logit, (3,)), [((3,), 0.1, 0.9)], 0),
    # advanced indexing
    ("A[:, idx]", weighted(lambda A: A[:, [2, 0, 2]], (2, 3)), [(2, 3)], 0),
    ("A[:, traced idx]", lambda A, i: np.sum(A[:, i] ** 2 * W((3, 4))), [(3, 2), _ints(1, 0, 1, 1)],
     0),
    ("A[:, :, traced idx]", lambda A, i: np.sum(np.sin(A[:, :, i])), [(2, 2, 3), _ints(2, 0)], 0),
    ("A[i, j] traced", lambda A, i, j: np.sum(A[i, j] ** 2 * W((3,))),
     [(3, 4), _ints(0, 2, -1), _ints(3, 1, 0)], 0),
    ("A[i, 0] traced and int", lambda A, i: np.sum(A[i, -1] ** 2 * W((3,))),
     [(3, 4), _ints(0, 2, 2)], 0),
    ("A[i, j] constant", weighted(lambda A: A[[0, 1, 1], [2, 0, 0]], (3,)), [(2, 3)], 0),
    ("A[mask] constant", lambda A: np.sum(A[np.array([[True, False, True], [False, True, True]])]
                                          ** 3), [(2, 3)], 0),
    ("A[..., 1]", weighted(lambda A: A[..., 1], (2, 2)), [(2, 2, 3)], 0),
    ("A[1:, [0, 2]]", weighted(lambda A: A[1:, [0, 2]], (2, 2)), [(3, 3)], 0),
    # building arrays of traced values
    ("np.array([x, y])", lambda x, y: np.sum(np.array([x, y * x, 1.0]) ** 2), [(), ()], (0, 1)),
    ("np.array nested", lambda x, y: np.sum(np.sin(np.array([[x, y], [y, 2.0]])) * C23[:, :2]),
     [(), ()], (0, 1)),
    ("np.asarray of rows", lambda x: np.sum(np.asarray([x, x ** 2]) * C23), [(3,)], 0),
    ("np.array(tracer)", lambda x: np.sum(np.array(x) ** 2), [(3,)], 0),
]

IDS = [c[0] for c in CASES]


def _args(specs, rng):
    args = []
    for spec in specs:
        if isinstance(spec, np.ndarray):
            args.append(spec)
        elif len(spec) == 3 and isinstance(spec[0], tuple):
            args.append(sample(rng, *spec))
        else:
            args.append(sample(rng, spec, -1.5, 1.5))
    return tuple(args)


@pytest.mark.parametrize("case_id, fun, specs, argnums", CASES, ids=IDS)
def test_numpy_function_gradient_matches_central_differences(case_id, fun, specs, argnums):
    args = _args(specs, rng_for(case_id))
    check_grads_python(fun, args, argnums=argnums, context=case_id)


SECOND_ORDER = ["var", "std", "cross rows", "kron 2-D", "einsum ij,jk->ik", "einsum batch bij,bjk->bik",
                "tensordot pairs", "matmul 4-D broadcast", "cumsum axis=0", "cumprod axis=0",
                "sort axis=0", "scipy logsumexp axis", "scipy softmax axis", "math.lgamma/gamma",
                "scipy digamma", "A[i, j] traced", "pad reflect", "repeat axis=1", "sinc",
                "np.array nested", "gradient 2-D", "linspace array ends"]


@pytest.mark.parametrize("case_id", SECOND_ORDER)
def test_numpy_function_hessian_vector_products(case_id):
    _, fun, specs, argnums = CASES[IDS.index(case_id)]
    args = _args(specs, rng_for(case_id, 2))
    check_grads_python(fun, args, argnums=argnums, order=2, context=case_id)


# ---------------------------------------------------------------- new elementwise primitives

UNARY = {"log2": (np.log2, 0.2, 3.0), "log10": (np.log10, 0.2, 3.0), "exp2": (np.exp2, -2, 2),
         "cbrt": (np.cbrt, 0.2, 3.0), "arcsinh": (np.arcsinh, -2, 2),
         "arccosh": (np.arccosh, 1.2, 3.0), "arctanh": (np.arctanh, -0.9, 0.9),
         "sinc": (np.sinc, -2, 2), "expit": (scipy.special.expit, -3, 3),
         "erf": (scipy.special.erf, -2, 2), "erfc": (scipy.special.erfc, -2, 2),
         "lgamma": (scipy.special.gammaln, 0.3, 4.0), "gamma": (scipy.special.gamma, 0.3, 3.0),
         "polygamma": (scipy.special.digamma, 0.3, 4.0)}
BINARY = {"fmax": np.fmax, "fmin": np.fmin, "logaddexp2": np.logaddexp2,
          "remainder": np.remainder, "fmod": np.fmod}


@pytest.mark.parametrize("shape", [(), (3,), (2, 3)], ids=str)
@pytest.mark.parametrize("name", sorted(UNARY))
def test_new_unary_primitive_over_shapes(name, shape):
    fn, low, high = UNARY[name]
    rng = rng_for(name, shape)
    x, c = sample(rng, shape, low, high), sample(rng, shape, 0.5, 1.5)
    f = check_grads_python(lambda x, c: np.sum(fn(x) * c), (x, c), order=2, context=name)
    assert name in prim_names(f.wengert(x, c))


@pytest.mark.parametrize("xshape, yshape", [((), ()), ((3,), (3,)), ((2, 3), (3,)),
                                            ((2, 1), (1, 3)), ((), (2, 3))], ids=str)
@pytest.mark.parametrize("name", sorted(BINARY))
def test_new_binary_primitive_with_broadcasting(name, xshape, yshape):
    rng = rng_for(name, xshape, yshape)
    low, high = REGISTRY[name].domain[1]
    x, y = sample(rng, xshape, -2.0, 2.0), sample(rng, yshape, low, high)
    c = sample(rng, np.broadcast_shapes(xshape, yshape), 0.5, 1.5)
    f = check_grads_python(lambda x, y, c: np.sum(BINARY[name](x, y) * c), (x, y, c),
                           argnums=(0, 1), order=2, context=name)
    assert name in prim_names(f.wengert(x, y, c))


def test_hand_formulas():
    x = np.array([0.5, 1.5, 3.0])
    want = {
        "log2": 1 / (x * np.log(2)), "exp2": np.exp2(x) * np.log(2), "cbrt": x ** (-2 / 3) / 3,
        "arcsinh": 1 / np.sqrt(x * x + 1), "digamma": scipy.special.polygamma(1, x),
        "gammaln": scipy.special.digamma(x), "erf": 2 / np.sqrt(np.pi) * np.exp(-x * x),
    }
    fns = {"log2": np.log2, "exp2": np.exp2, "cbrt": np.cbrt, "arcsinh": np.arcsinh,
           "digamma": scipy.special.digamma, "gammaln": scipy.special.gammaln,
           "erf": scipy.special.erf}
    for name, fn in fns.items():
        _, (g,) = python_value_and_grad(jitad.jit_grad(lambda x: np.sum(fn(x))), (x,))
        assert_close(g, want[name], 1e-12, 1e-14, name)
    _, (gx, gy) = python_value_and_grad(jitad.jit_grad(lambda x, y: np.sum(x % y), argnums=(0, 1)),
                                        (np.array([2.5, -1.0]), np.array([0.7, 0.7])))
    assert_close(gx, [1.0, 1.0], 0, 0)
    assert_close(gy, -np.floor(np.array([2.5, -1.0]) / 0.7), 0, 0)


def test_rounding_has_zero_derivative_and_sinc_is_smooth_at_zero():
    f = jitad.jit_grad(lambda x: np.sum(np.floor(x) + np.ceil(x) + np.round(x) + np.trunc(x)))
    assert_close(python_value_and_grad(f, (np.array([0.3, -1.7]),))[1][0], [0.0, 0.0], 0, 0)
    g = jitad.jit_grad(lambda x: np.sum(np.sinc(x)))
    assert_close(python_value_and_grad(g, (np.array([0.0, 0.5]),))[1][0],
                 [0.0, (np.cos(np.pi / 2) - np.sinc(0.5)) / 0.5], 1e-12, 1e-15)


def test_polygamma_helper_matches_scipy():
    from jitad.runtime import polygamma
    for n in range(4):
        for x in (0.3, 1.0, 2.5, 7.0, 15.0):
            assert polygamma(n, x) == pytest.approx(scipy.special.polygamma(n, x), rel=1e-12)
    for x in (-0.4, -1.7):
        for n in (0, 1):
            assert polygamma(n, x) == pytest.approx(scipy.special.polygamma(n, x), rel=1e-10)
    assert np.isnan(polygamma(0, -2.0)) and np.isnan(polygamma(2, -0.5))
    for n in range(4):                      # the pole at 0 (digamma: NaN before)
        for x in (0.0, -0.0):
            assert polygamma(n, x) == scipy.special.polygamma(n, x) == \
                (scipy.special.digamma(x) if n == 0 else scipy.special.polygamma(n, x))


def test_sort_ties_and_partition_kth_value():
    x = np.array([2.0, -1.0, 2.0, 0.5])
    _, (g,) = python_value_and_grad(jitad.jit_grad(lambda x: np.sort(x)[-1]), (x,))
    assert g.sum() == 1.0 and set(np.flatnonzero(g)) <= {0, 2}
    _, (g,) = python_value_and_grad(jitad.jit_grad(lambda x: np.partition(x, 1)[1]), (x,))
    assert_close(g, [0, 0, 0, 1.0], 0, 0)



def test_var_and_std_with_ddof_at_least_the_count_divide_by_zero_as_numpy():
    # NumPy divides by max(n - ddof, 0): inf or NaN, never by a negative count
    cases = [(lambda x: np.var(x, ddof=3), np.array([1.0, 2.0])),
             (lambda x: np.std(x, ddof=1), np.zeros(0)),
             (lambda x: np.var(x, ddof=1), np.zeros(0)),
             (lambda x: np.sum(np.var(x, axis=1, ddof=2)), np.array([[1.0], [2.0]]))]
    for f, x in cases:         # (compiled: Python floats raise ZeroDivisionError)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            want = f(x)
        value, g = jitad.jit_grad(f).value_and_grad(x)
        assert_close(value, want, 0, 0)
        assert g.shape == x.shape


def test_logsumexp_of_infinite_entries_is_infinite_as_scipys():
    # SciPy shifts by 0 where the maximum is not finite: inf - inf is not formed
    for x in (np.array([1.0, np.inf]), np.array([-np.inf, -np.inf]), np.array([-np.inf, 0.5])):
        value, _ = python_value_and_grad(jitad.jit_grad(lambda x: logsumexp(x)), (x,))
        assert_close(value, logsumexp(x), 1e-15, 0)
    X = np.array([[-np.inf, -np.inf], [0.0, 1.0]])
    f = jitad.jit_grad(lambda X: np.sum(logsumexp(X, axis=1) * np.array([1.0, 2.0])))
    assert_close(python_value_and_grad(f, (X,))[0], -np.inf, 0, 0)
    _, (g,) = python_value_and_grad(f, (X[1:],))       # (one row: weighted 1 + 2)
    assert_close(g, 3.0 * np.exp(X[1:] - logsumexp(X[1:])), 1e-15, 0)
    for x, axis in ((np.zeros(0), None), (np.zeros((0, 3)), 0), (np.zeros((2, 0)), 1)):
        g = jitad.jit_grad(lambda x: np.sum(logsumexp(x, axis=axis)) + np.sum(x))
        with np.errstate(divide="ignore"):
            assert_close(python_value_and_grad(g, (x,))[0], np.sum(logsumexp(x, axis=axis)), 0, 0)


@pytest.mark.parametrize("fun, shape", [
    (lambda x: np.sum(np.prod(x, axis=0) * np.arange(1.0, 4.0)), (0, 3)),
    (lambda x: np.sum(np.prod(x, axis=1)), (2, 0, 3)),
    (lambda x: np.sum(np.cumsum(x, axis=0)) + np.sum(x), (0, 3)),
    (lambda x: np.sum(np.cumprod(x, axis=1)) + np.sum(x), (2, 0, 3)),
    (lambda x: np.sum(np.sort(x)) + np.sum(x), (0,)),
    (lambda x: np.sum(np.sort(x, axis=0)) + np.sum(x), (0, 3)),
    (lambda x: np.sum(np.sort(x)) + np.sum(x), (3, 0)),
])
def test_scans_sorts_and_products_along_an_axis_of_length_zero(fun, shape):
    x = np.zeros(shape)
    value, (g,) = python_value_and_grad(jitad.jit_grad(fun), (x,))
    assert_close(value, fun(x), 0, 0)
    assert g.shape == shape


def test_gamma_functions_at_their_poles_trace_as_compiled_code_computes():
    # math.lgamma(0.0) raises in Python; SciPy and the compiled code give inf: so does the
    # first call (its trace), and the gradient has its argument's shape
    x = np.array([0.5, 0.0, 3.0])
    for fn in (scipy.special.gammaln, scipy.special.gamma):
        f = jitad.jit_grad(lambda x: np.sum(fn(x)), tiers=False)
        value, g = f.value_and_grad(x)
        assert value == np.inf and g.shape == (3,)
        assert f.value_and_grad(x)[0] == np.inf


def test_xlogy_derivative_in_x_at_zero_is_log_y():
    # x * log(y) is linear in x: d/dx = log(y) also at x = 0 (JAX's rule; central
    # differences agree); d/dy = x / y is 0 there (xlogy(0, y) = 0 for every y)
    x, y = np.array([0.0, 0.5, 0.0]), np.array([2.0, 3.0, 0.5])
    zero = jitad.jit_grad(lambda x, y: scipy.special.xlogy(x, y) * 1.0, argnums=1)
    assert python_value_and_grad(zero, (0.0, 0.0)) == (0.0, (0.0,))   # (0 / 0 not formed)
    for fn, log, shift in ((scipy.special.xlogy, np.log, 0.0),
                           (scipy.special.xlog1py, np.log1p, 1.0)):
        f = jitad.jit_grad(lambda x, y: np.sum(fn(x, y)), argnums=(0, 1))
        value, (gx, gy) = python_value_and_grad(f, (x, y))
        assert_close(value, np.sum(fn(x, y)), 1e-15, 0)
        assert_close(gx, log(y), 1e-15, 0)
        assert_close(gy, [0.0, 0.5 / (3.0 + shift), 0.0], 1e-15, 0)
        _, forward = python_jvp(f, (x, y), (np.array([1.0, 0.0, 1.0]), np.zeros(3)))
        assert_close(forward, log(2.0) + log(0.5), 1e-15, 0)
        check_grads_python(lambda x, y: np.sum(fn(x, y) * y), (x, y), argnums=(0, 1), order=2)


def test_logit_derivative_at_the_ends_of_its_domain_is_inf_in_both_modes():
    # d/dx log(x / (1 - x)) = 1 / (x (1 - x)): inf at 0 and 1 (through the division, reverse
    # mode gave NaN there and forward mode inf)
    x = np.array([0.0, 0.25, 1.0])
    f = jitad.jit_grad(lambda x: np.sum(scipy.special.logit(x)))
    with np.errstate(all="ignore"):
        _, (g,) = python_value_and_grad(f, (x,))
        _, forward = python_jvp(f, (x[:2],), (np.array([1.0, 0.0]),))
    assert_close(g, [np.inf, 1.0 / (0.25 * 0.75), np.inf], 1e-15, 0)
    assert forward == np.inf


def _powers_of_integer_exponents(x, k, n):
    return np.sum(x ** k) + x[0] ** n + np.sum(x[1:] ** k[1:] * x[1])


def test_integer_exponents_of_zero_give_inf_as_numpy():
    # NumPy computes float ** int as float ** float: 0.0 ** -1 is inf (Numba's float ** int
    # raised ZeroDivisionError from the compiled code); the gradient follows the formula
    x, k, n = np.array([0.0, 2.0, 0.5]), _ints(-1, 2, -2), np.array(-1)
    value, g = jitad.jit_grad(_powers_of_integer_exponents).value_and_grad(x, k, n)
    assert value == np.inf
    # by hand: d/dx1 = 2 x1 + 3 x1² + x2**-2 = 20; d/dx2 = -2 x2**-3 (1 + x1) = -48
    assert_close(g, [-np.inf, 20.0, -48.0], 1e-15, 0)


def test_numpys_other_spellings_of_supported_arguments():
    # np.var/np.std's correction= (NumPy 2's ddof) and np.take's mode= with constant indices
    x = np.array([0.3, -1.2, 2.5, 0.7])
    for f in (lambda x: np.var(x, correction=1), lambda x: np.std(x, correction=1.5),
              lambda x: np.sum(np.take(x, [5, -7, 1], mode="clip") * np.array([1.0, 2.0, 3.0])),
              lambda x: np.sum(np.take(x, [5, -7, 1], mode="wrap") * np.array([1.0, 2.0, 3.0])),
              lambda x: np.sum(np.clip(x, min=-1.0, max=1.0) * x)):      # (NumPy 2.1's names)
        value, _ = python_value_and_grad(jitad.jit_grad(f), (x,))
        assert_close(value, f(x), 1e-15, 0)
        check_grads_python(f, (x,))

def test_gather_based_functions_read_sizes():
    f = jitad.jit_grad(lambda x: np.sum(np.roll(x, 1) * x))
    f(np.arange(3.0))
    f(np.arange(4.0))
    assert f.trace_count == 2


# ---------------------------------------------------------------- compiled bundles (Numba)

def _bundle(x, M, A):
    stats = np.var(x) + np.std(M, axis=0).sum() + np.sum(np.cumsum(x) * x) + \
        np.sum(np.cumprod(M, axis=1)) + np.sum(np.sort(x) * np.arange(4.0))
    products = np.sum(np.cross(M, x[:3])) + np.sum(np.kron(x[:2], M)) + \
        np.einsum("ij,jk->", M, M.T) + np.sum(np.tensordot(A, M, axes=([2], [1]))) + \
        np.sum(np.sin(A @ A.transpose(0, 2, 1)))
    moved = np.sum(np.roll(x, 1) * x) + np.sum(np.triu(M @ M.T)) + np.trace(M @ M.T) + \
        np.sum(np.pad(x, 1) ** 2) + np.sum(np.diff(x) ** 2) + np.sum(np.gradient(x) * x)
    ufuncs = np.sum(np.log2(M * M + 1.0) + np.cbrt(M * M + 1.0) + np.arcsinh(M) + (M % 0.7) ** 2
                    + np.sinc(M) + np.fmax(M, 0.1) + np.logaddexp2(M, 0.3) + np.floor(M) * M)
    special = math.erf(x[0]) + math.lgamma(x[1] + 2.0) + np.sum(scipy.special.gammaln(M * M + 1))
    return stats + products + moved + ufuncs + special + np.sum(np.array([x[0], x[1] * x[2]]) ** 2)


def test_compiled_numpy_functions_bundle():
    rng = rng_for("numpy bundle")
    x, M, A = sample(rng, (4,), 0.3, 1.5), sample(rng, (2, 3), 0.3, 1.5), sample(rng, (2, 2, 3),
                                                                                -1, 1)
    check_grads(_bundle, (x, M, A), argnums=(0, 1, 2), context="numpy functions bundle")


def _indexing_bundle(A, x, i, j):
    picked = np.sum(A[i, j] ** 2) + np.sum(np.sin(A[:, i])) + np.sum(A[[0, 1], [2, 0]] ** 3)
    built = np.sum(np.array([[x[0], x[1]], [x[1] * x[2], 1.0]]) ** 2)
    special = scipy.special.logsumexp(A, axis=1).sum() + np.sum(scipy.special.softmax(x) * x)
    return picked + built + special + np.sum(scipy.special.xlogy(x, x * x + 1.0))


def test_compiled_indexing_and_special_bundle():
    rng = rng_for("indexing and special bundle")
    A, x = sample(rng, (2, 3), -1, 1), sample(rng, (3,), -1, 1)
    check_grads(_indexing_bundle, (A, x, _ints(1, 0, -1), _ints(2, 2, 0)), argnums=(0, 1),
                context="indexing and special bundle")


# ---------------------------------------------------------------- test the tester

def test_a_wrong_cumsum_rule_fails(monkeypatch):
    monkeypatch.setattr(REGISTRY["cumsum"], "vjp", lambda b, g, out, x, axis: (b.cumsum(g, axis=axis),))
    with pytest.raises(AssertionError, match="central differences"):
        check_grads_python(lambda x: np.sum(np.cumsum(x) * np.arange(3.0)), (np.ones(3),))


def test_a_wrong_batch_matmul_jvp_fails(monkeypatch):
    monkeypatch.setattr(REGISTRY["batch_matmul"], "jvp",
                        lambda b, out, ops, tans: b.batch_matmul(tans[0], ops[1]))
    A = sample(rng_for("bm"), (2, 2, 2))
    with pytest.raises(AssertionError, match="forward mode vs reverse mode"):
        check_grads_python(lambda a, b: np.sum(a @ b), (A, A + 1.0), argnums=(0, 1))


def test_a_wrong_polygamma_rule_fails_the_second_order_check(monkeypatch):
    monkeypatch.setattr(REGISTRY["polygamma"], "vjp",
                        lambda b, g, out, x, n: (b.mul(g, b.polygamma(x, n=n)),))
    check_grads_python(lambda x: math.lgamma(x), (1.3,))          # first order: fine
    with pytest.raises(AssertionError, match="central differences|Hessian"):
        check_grads_python(lambda x: math.lgamma(x), (1.3,), order=2)


# ---------------------------------------------------------------- what stays unsupported

@pytest.mark.parametrize("fun, args, match", [
    (lambda x: np.median(x), (np.array([1.0, 2.0]),), "np.median"),
    (lambda x: np.einsum("...i,i", x, x), (np.array([1.0, 2.0]),), "without '...'"),
    (lambda x: scipy.special.logsumexp(x, return_sign=True)[0], (np.array([1.0]),), "return_sign"),
    (lambda x: np.array([x, x], dtype=int), (1.0,), "dtype int64"),
    # arguments jitad would otherwise ignore (a silently different result)
    (lambda x: np.sum(np.pad(x, 2, mode="mean")), (np.array([1.0, 2.0]),), r"mode='mean'"),
    (lambda x: np.sum(np.pad(x, 1, mode="linear_ramp")), (np.array([1.0, 2.0]),), "linear_ramp"),
    (lambda x: np.sum(np.pad(x, 1, mode="reflect", reflect_type="odd")), (np.array([1.0, 2.0]),),
     "reflect_type"),
    (lambda x: np.var(x, where=x > 0), (np.array([1.0, -2.0, 3.0]),), r"np.var: .*'where'"),
    (lambda x: np.std(x, mean=np.zeros(1)), (np.array([1.0, 2.0]),), r"np.std: .*'mean'"),
    (lambda x: np.sum(np.cumsum(x, dtype=np.int64)), (np.array([0.5, 0.7]),), "'dtype'"),
    (lambda x, i: np.sum(np.take(x, i, mode="clip")), (np.array([0.5, 0.7]), _ints(3)), "clip"),
    (lambda x: np.sum(np.linspace(x[0], x[1], 5, dtype=int)), (np.array([0.3, 7.9]),), "dtype"),
    (lambda x: np.sum(np.clip(x, 0.0, 1.0, out=np.zeros(2))), (np.array([0.3, 7.9]),), "'out'"),
], ids=["median", "einsum ellipsis", "logsumexp sign", "np.array int", "pad mean",
        "pad linear_ramp", "pad odd", "var where", "std mean", "cumsum dtype", "take clip",
        "linspace dtype", "clip out"])
def test_unsupported_calls_raise_naming_the_function_and_the_line(fun, args, match):
    with pytest.raises(TraceError, match=match) as info:
        jitad.jit_grad(fun)(*args)
    assert "test_numpy_functions.py" in str(info.value)


# ---------------------------------------------------------------- the issue's list, measured

# Every function, operator and indexing form the issue lists -> the tests above that check it.
ISSUE_LIST = {
    "np.cross": ["cross 3"], "np.remainder": ["remainder"], "%": ["% traced"],
    "np.kron": ["kron 2-D"], "np.einsum": ["einsum ij,jk->ik"], "np.tensordot": ["tensordot 2"],
    "np.var": ["var"], "np.std": ["std"], "np.logaddexp2": ["logaddexp2"],
    "np.repeat": ["repeat"], "np.gradient": ["gradient"], "np.inner": ["inner 1-D"],
    "np.fmin": ["fmin"], "np.fmax": ["fmax"], "np.trace": ["trace"], "np.diff": ["diff"],
    "np.swapaxes": ["swapaxes"], "np.moveaxis": ["moveaxis"], "np.rollaxis": ["rollaxis"],
    "np.linspace": ["linspace traced ends"], "np.split": ["split"],
    "np.array_split": ["array_split"], "np.hsplit": ["hsplit"], "np.vsplit": ["vsplit"],
    "np.dsplit": ["dsplit"], "np.triu": ["triu"], "np.tril": ["tril k=-1"],
    "np.pad": ["pad constant"], "np.diag": ["diag of vector"], "np.atleast_1d": ["atleast_1d"],
    "np.atleast_2d": ["atleast_2d"], "np.atleast_3d": ["atleast_3d"], "np.tile": ["tile"],
    "np.vstack": ["vstack"], "np.hstack": ["hstack"], "np.column_stack": ["column_stack"],
    "np.append": ["append"], "np.cumsum": ["cumsum"], "np.cumprod": ["cumprod"],
    "np.sort": ["sort"], "np.partition": ["partition kth element"], "np.roll": ["roll"],
    "np.flip": ["flip"], "np.fliplr": ["fliplr"], "np.flipud": ["flipud"], "np.rot90": ["rot90"],
    "np.floor": ["floor"], "np.ceil": ["ceil"], "np.round": ["round"], "np.log2": ["log2"],
    "np.log10": ["log10"], "np.exp2": ["exp2"], "np.cbrt": ["cbrt"], "np.sinc": ["sinc"],
    "np.arcsinh": ["arcsinh"], "np.arccosh": ["arccosh"], "np.arctanh": ["arctanh"],
    "np.deg2rad": ["deg2rad"], "np.rad2deg": ["rad2deg"], "np.fabs": ["fabs"],
    "np.nan_to_num": ["nan_to_num"], "math.erf": ["math.erf/erfc"], "math.erfc": ["math.erf/erfc"],
    "math.lgamma": ["math.lgamma/gamma"], "math.floor": ["math.floor"],
    "matmul 3-D+": ["matmul 3-D", "matmul 4-D broadcast"], "A[:, idx]": ["A[:, idx]",
                                                                      "A[:, traced idx]"],
    "A[i, j] index arrays": ["A[i, j] traced", "A[i, j] constant"],
    "boolean masks (constant)": ["A[mask] constant"], "np.array([x, y])": ["np.array([x, y])"],
    "np.asarray": ["np.asarray of rows"], "scipy.special.logsumexp": ["scipy logsumexp"],
    "scipy.special.expit": ["expit"], "scipy.special.softmax": ["scipy softmax"],
    "scipy.special.log_softmax": ["scipy log_softmax"], "scipy.special.gammaln": ["lgamma"],
    "scipy.special.digamma": ["scipy digamma"], "scipy.special.erf": ["erf"],
    "scipy.special.xlogy": ["scipy xlogy"],
}


def test_every_function_of_the_issue_list_has_gradient_checks():
    known = set(IDS) | set(UNARY) | set(BINARY)
    missing = {name: tests for name, tests in ISSUE_LIST.items() if not set(tests) <= known}
    assert not missing, f"functions of the issue list without gradient checks: {missing}"
    assert len(ISSUE_LIST) == 79


def test_a_traced_index_out_of_its_axis_raises_instead_of_reading_another_row():
    f = jitad.jit_grad(lambda A, i, j: np.sum(A[i, j]))
    A = np.arange(6.0).reshape(2, 3)
    assert_close(f(A, _ints(1, -1), _ints(0, 2)), [[0, 0, 0], [1, 0, 1]], 0, 0)   # A[1, 0], A[1, 2]
    with pytest.raises(IndexError, match="out of bounds"):
        f(A, _ints(0), _ints(3))          # flat index 3 would be A[1, 0]


def test_the_readme_table_is_the_generated_one():
    """README.md's supported-functions table is `python -m jitad supported`, not a copy
    kept by hand (regenerate it when the registry or the adapters change)."""
    from pathlib import Path

    from jitad.supported import table
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert table() in readme, "regenerate README.md's table: python -m jitad supported"


def weights(shape):
    return np.arange(1.0, 1.0 + np.prod(shape)).reshape(shape) ** 1.5


@pytest.mark.parametrize("fun", [
    lambda x: np.sum(x.reshape(2, 3).ravel("F") * weights(6)),
    lambda x: np.sum(np.ravel(x.reshape(2, 3), order="F") ** 2 * weights(6)),
    lambda x: np.sum(x.reshape(2, 3).flatten("F") ** 3 * weights(6)),
    lambda x: np.sum(x.reshape(2, 3).reshape(3, 2, order="F") * weights((3, 2))),
    lambda x: np.sum(np.reshape(x.reshape(1, 2, 3), (3, -1), "F") * weights((3, 2))),
    lambda x: np.sum(x.ravel("K") * x.ravel("A") * weights(6)),       # one axis: any order
], ids=["ravel", "np.ravel", "flatten", "reshape", "np.reshape", "one axis"])
def test_fortran_order_reshapes_match_numpy(fun):
    check_grads_python(fun, (np.linspace(0.5, 1.5, 6),))


def test_layout_dependent_orders_are_a_located_trace_error():
    f = jitad.jit_grad(lambda x: np.sum(x.reshape(2, 3).ravel("K")))
    with pytest.raises(TraceError, match=r"order='K' depends on the memory layout.*\n.*"
                                         r"test_numpy_functions.py"):
        f(np.ones(6))


@pytest.mark.parametrize("x, axis", [
    (np.array([1.7]), None),                        # one element: std is constant
    (np.array([[1.0], [2.0]]), 1),                  # one element per row
    (np.array([2.0, 2.0, 2.0]), None),              # equal elements: a kink, as abs'(0) = 0
])
def test_std_where_it_is_zero_has_gradient_zero_not_nan(x, axis):
    f = jitad.jit_grad(lambda x: np.sum(np.std(x, axis=axis)))
    value, gradient = f.value_and_grad(x)
    assert value == 0.0
    assert_close(gradient, np.zeros_like(x), 0, 0)
    _, tangent = jitad.jvp(lambda x: np.sum(np.std(x, axis=axis)))(x, np.ones_like(x))
    assert tangent == 0.0


# ---------------------------------------------------------------- shapes (found by helper shapes)

@pytest.mark.parametrize("fun, shapes", [
    (lambda a, b: np.sum(np.tensordot(a, b, axes=([0, 1], [0, 2])) * W((2, 3))),
     [(1, 0, 2), (1, 3, 0)]),                                    # summed axes of size 0
    (lambda a, b: np.sum(np.tensordot(a, b, axes=1) + 1.0), [(2, 0), (0, 3)]),
    (lambda a, b: np.sum(np.inner(a, b)) + 1.0, [(0,), (0,)]),
    (lambda a, b: np.sum(np.tensordot(a, b, axes=([0], [1])) * W((3, 0))), [(2, 3), (0, 2)]),
], ids=["pair axes", "int axes", "inner", "free axis of size 0"])
def test_contractions_over_size_0_axes(fun, shapes):
    """tensordot/inner reshaped with -1 beside a 0, which NumPy cannot resolve."""
    rng = rng_for("size 0")
    check_grads_python(fun, [rng.uniform(-1, 1, s) for s in shapes], argnums=(0, 1))


@pytest.mark.parametrize("kw", [{"prepend": 2.0}, {"append": np.array([1.0, 3.0])},
                                {"prepend": 1.0, "append": 4.0}])
def test_diff_of_order_0_is_the_array_without_prepend_or_append(kw):
    """NumPy's np.diff(x, n=0) returns x as it is (prepend and append are not added)."""
    fun = lambda x: np.sum(np.diff(x, n=0, **kw) * np.array([1.0, 2.0]))
    x = np.array([0.3, -0.7])
    assert jitad.jit_grad(fun).value(x) == pytest.approx(fun(x))
    check_grads_python(fun, (x,))


def test_concatenate_with_axis_none_flattens_each_array():
    fun = lambda a, b: np.sum(np.concatenate([a, b, np.ones(2)], axis=None) * W(11))
    check_grads_python(fun, (C23, np.linspace(-1, 1, 3)), argnums=(0, 1))


def test_splits_at_numpy_and_python_integer_positions_in_one_process():
    """np.array_split(x, 8) slices at NumPy integers (constants of the trace-time evaluator
    of x[0:1]), np.split(x, [2, 3]) at Python ints (slots k0, k1 of x[k0:k1], equal to
    np.int64(0), np.int64(1)): the first's evaluator was found for the second and called
    with its slots (TypeError: impl() takes 1 positional argument but 3 were given)."""
    x = np.linspace(0.5, 1.5, 8).reshape(1, 1, 1, 8)      # (a rank no other test slices)
    first = lambda x: np.sum(np.array_split(x, 8, axis=3)[0] ** 2)
    second = lambda x: np.sum(np.split(x, [2, 3], axis=3)[2] ** 3)
    check_grads_python(first, (x,))
    check_grads_python(second, (x,))


@pytest.mark.parametrize("fun", [
    lambda x: np.concatenate([x, x], axis=2), lambda x: np.concatenate([x, x], axis=-3),
    lambda x: np.stack([x, x], axis=3), lambda x: np.split(x, 1, axis=2)[0],
    lambda x: np.array_split(x, 2, axis=-3)[0], lambda x: np.tensordot(x, x, ([2], [0])),
    lambda x: np.diff(x, axis=2), lambda x: np.cumsum(x, axis=2), lambda x: x.cumprod(-3),
    lambda x: np.expand_dims(x, 3), lambda x: np.rollaxis(x, 2),
    lambda x: np.rollaxis(x, 0, 4), lambda x: np.transpose(x, (-3, 0)),
    lambda x: np.swapaxes(x, 0, 2), lambda x: x.swapaxes(-3, 1),
], ids=["concatenate", "concatenate -3", "stack", "split", "array_split", "tensordot", "diff",
        "cumsum", "x.cumprod", "expand_dims", "rollaxis", "rollaxis start", "transpose",
        "swapaxes", "x.swapaxes"])
def test_axes_out_of_range_raise_as_numpy_instead_of_wrapping(fun):
    x = np.ones((2, 3))
    with pytest.raises(Exception) as numpy_error:
        fun(x)
    with pytest.raises(type(numpy_error.value), match=r"out of bounds[^\n]*\n.*"
                                                      r"test_numpy_functions.py"):
        jitad.jit_grad(lambda x: np.sum(fun(x)))(x)


@pytest.mark.parametrize("fun", [
    lambda x: np.diff(x, n=-1), lambda x: np.diff(x[0, 0]),
    lambda x: np.array_split(x, 0, axis=1)[0], lambda x: np.expand_dims(x, (0, 0)),
], ids=["diff n<0", "diff 0-d", "array_split 0", "expand_dims repeated"])
def test_invalid_shape_arguments_raise_numpys_value_error(fun):
    x = np.ones((2, 3))
    with pytest.raises(ValueError):
        fun(x)
    with pytest.raises(ValueError, match="test_numpy_functions.py"):
        jitad.jit_grad(lambda x: np.sum(fun(x)))(x)
