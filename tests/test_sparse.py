"""Sparse Jacobians and Hessians (jitad.sparse): patterns, colourings, decompression.

Oracles: hand-known patterns; the nonzeros of dense central-difference Jacobians (of the
plain function) and Hessians (of the gradient, run as plain Python from the generated
source) at random points, for functions whose structural and numerical zeros coincide
there; and the values of those dense differences.
"""
import math

import numba
import numpy as np
import pytest

import jitad
import jitad.sparse
from jitad import codegen
from jitad.api import JitGrad, build_source
from jitad.compile import load_python
from jitad.sparse import (column_colouring, decompress, hessian_pattern, hessian_sources,
                          jacobian_pattern, jacobian_sources, layout, product_list,
                          sparse_hessian, sparse_jacobian, star_colouring)
from jitad.transforms import simplify, value_and_grad

N = 9


# ---------------------------------------------------------------- test functions

def rosen_loop(x):
    s = 0.0
    for i in range(len(x) - 1):
        s += 100.0 * (x[i + 1] - x[i] ** 2) ** 2 + (1.0 - x[i]) ** 2
    return s


def rosen_vec(x):
    return np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def banded(x):          # pentadiagonal: sin couples each triple
    return np.sum(np.sin(x[:-2] * x[1:-1] * x[2:])) + np.sum(x ** 3)


def arrowhead(x):
    return np.sum(x ** 4) + x[0] * np.sum(x[1:] ** 2)


def gathered(x, idx):   # couples x[i] with x[idx[i]]
    return np.sum(np.exp(x * x[idx]))


def linear_part(x):     # a linear term and a product of two disjoint halves
    return np.sum(3.0 * x) + np.dot(x[:4], x[4:8])


def _hand(n, pairs):
    rows, cols = zip(*sorted({(i, j) for i, j in pairs if 0 <= i < n and 0 <= j < n}))
    return np.array(rows), np.array(cols)


HAND_HESSIAN = {
    rosen_loop: _hand(N, [(i, j) for i in range(N) for j in range(N) if abs(i - j) <= 1]),
    rosen_vec: _hand(N, [(i, j) for i in range(N) for j in range(N) if abs(i - j) <= 1]),
    banded: _hand(N, [(i, j) for i in range(N) for j in range(N) if abs(i - j) <= 2]),
    arrowhead: _hand(N, [(i, i) for i in range(N)] + [(0, j) for j in range(N)]
                     + [(j, 0) for j in range(N)]),
    linear_part: _hand(N, [(i, 4 + i) for i in range(4)] + [(4 + i, i) for i in range(4)]),
}


def bundle(params, cam_idx, pt_idx, obs, n_cams):
    """Bundle-adjustment-like residuals: each observation touches one camera (3 parameters)
    and one point (2 parameters)."""
    cams = params[:3 * n_cams].reshape((n_cams, 3))
    pts = params[3 * n_cams:].reshape((-1, 2))
    c = cams[cam_idx]
    p = pts[pt_idx]
    u = c[:, 0] * p[:, 0] + c[:, 2] - obs[:, 0]
    v = c[:, 1] * np.sin(p[:, 1]) - c[:, 0] - obs[:, 1]
    return np.concatenate((u, v))


def chain_residuals(x):
    return np.concatenate((x[1:] * x[:-1] - 1.0, np.exp(x[:2])))


def bundle_args(rng, n_cams=3, n_pts=5, n_obs=11):
    cam_idx = rng.integers(0, n_cams, n_obs)
    pt_idx = rng.integers(0, n_pts, n_obs)
    cam_idx[:n_cams] = np.arange(n_cams)
    pt_idx[:n_pts] = np.arange(n_pts)
    params = rng.uniform(0.5, 1.5, 3 * n_cams + 2 * n_pts)
    return params, cam_idx, pt_idx, rng.standard_normal((n_obs, 2)), n_cams


# ---------------------------------------------------------------- dense references

def fd_jacobian(fun, args, eps=1e-6):
    x = args[0]
    columns = []
    for j in range(x.size):
        e = np.zeros_like(x)
        e.flat[j] = eps
        columns.append((np.ravel(fun(x + e, *args[1:])) - np.ravel(fun(x - e, *args[1:])))
                       / (2 * eps))
    return np.stack(columns, axis=1)


def fd_hessian(fun, args, eps=1e-5):
    """Central differences of the gradient, run as plain Python from the generated source."""
    f = JitGrad(fun)
    variant, runtime = f._variant(args, {})
    source, name, _ = build_source(variant, "value_and_grad", variant.wrt, f.__name__)
    grad = load_python(source, name)
    k = variant.wrt[0]

    def g(y):
        moved = list(runtime)
        moved[k] = y
        return np.ravel(grad(*moved)[1][0])
    x = args[0]
    columns = []
    for j in range(x.size):
        e = np.zeros_like(x)
        e.flat[j] = eps
        columns.append((g(x + e) - g(x - e)) / (2 * eps))
    return np.stack(columns, axis=1)


def nonzeros(dense, tol):
    rows, cols = np.nonzero(np.abs(dense) > tol)
    return rows, cols


def assert_pattern(got, want):
    got = sorted(zip(*map(list, got)))
    want = sorted(zip(*map(list, want)))
    assert got == want, f"pattern differs:\n  extra {sorted(set(got) - set(want))}" \
                        f"\n  missing {sorted(set(want) - set(got))}"


RNG = np.random.default_rng(7)
X = RNG.uniform(0.5, 1.5, N)
IDX = np.array([3, 0, 8, 1, 1, 6, 2, 7, 5])
HESSIAN_CASES = [(f, (X,)) for f in HAND_HESSIAN] + [(gathered, (X, IDX))]
JACOBIAN_CASES = [(bundle, bundle_args(np.random.default_rng(3))), (chain_residuals, (X,))]
HESSIANS = {f: sparse_hessian(f) for f, _ in HESSIAN_CASES}
JACOBIANS = {f: sparse_jacobian(f) for f, _ in JACOBIAN_CASES}


def _traced(fun, args):
    f = JitGrad(fun)
    variant, runtime = f._variant(args, {})
    return simplify(variant.trace.wengert), variant.wrt[0], runtime


# ---------------------------------------------------------------- patterns

@pytest.mark.parametrize("fun", list(HAND_HESSIAN), ids=lambda f: f.__name__)
def test_hessian_pattern_is_the_hand_known_one(fun):
    wengert, wrt, runtime = _traced(fun, (X,))
    assert_pattern(hessian_pattern(wengert, wrt, runtime), HAND_HESSIAN[fun])


@pytest.mark.parametrize("fun,args", HESSIAN_CASES, ids=lambda a: getattr(a, "__name__", ""))
def test_hessian_pattern_is_the_nonzeros_of_differences(fun, args):
    wengert, wrt, runtime = _traced(fun, args)
    assert_pattern(hessian_pattern(wengert, wrt, runtime), nonzeros(fd_hessian(fun, args), 1e-4))


def test_gather_hessian_pattern_reads_the_index_values():
    wengert, wrt, runtime = _traced(gathered, (X, IDX))
    want = _hand(N, [(i, i) for i in range(N)] + [(i, IDX[i]) for i in range(N)]
                 + [(IDX[i], i) for i in range(N)])
    assert_pattern(hessian_pattern(wengert, wrt, runtime), want)


@pytest.mark.parametrize("fun,args", JACOBIAN_CASES, ids=lambda a: getattr(a, "__name__", ""))
def test_jacobian_pattern_is_the_nonzeros_of_differences(fun, args):
    wengert, wrt, runtime = _traced_jacobian(fun, args)
    assert_pattern(jacobian_pattern(wengert, wrt, runtime), nonzeros(fd_jacobian(fun, args), 1e-7))


def _traced_jacobian(fun, args):
    j = sparse_jacobian(fun)
    rows, cols, _ = j.plan(*args)
    variant = next(iter(j._variants.values()))
    return simplify(variant.trace.wengert), variant.wrt[0], \
        [a for a in args if not isinstance(a, int)] + variant.trace.consts


def test_bundle_jacobian_pattern_is_one_camera_and_one_point_per_residual():
    params, cam_idx, pt_idx, obs, n_cams = args = JACOBIAN_CASES[0][1]
    rows, cols, _ = JACOBIANS[bundle].plan(*args)
    m = len(obs)
    want = []
    for k in range(m):
        c, p = 3 * cam_idx[k], 3 * n_cams + 2 * pt_idx[k]
        want += [(k, c), (k, p), (k, c + 2)]
        want += [(m + k, c + 1), (m + k, p + 1), (m + k, c)]
    assert_pattern((rows, cols), tuple(map(np.array, zip(*sorted(set(want))))))


# ---------------------------------------------------------------- colourings

def star_violations(rows, cols, colours):
    """Adjacent vertices of one colour, and 4-vertex paths with two colours."""
    adj = {v: set() for v in range(len(colours))}
    for i, j in zip(rows, cols):
        if i != j:
            adj[i].add(j)
            adj[j].add(i)
    bad = [(v, w) for v in adj for w in adj[v] if colours[v] == colours[w]]
    for v in adj:
        for w in adj[v]:
            for x in adj[w] - {v}:
                for y in adj[x] - {w, v}:
                    if colours[v] == colours[x] and colours[w] == colours[y]:
                        bad.append((v, w, x, y))
    return bad


def column_violations(rows, cols, colours):
    seen = {}
    bad = []
    for i, j in zip(rows, cols):
        other = seen.setdefault((i, colours[j]), j)
        if other != j:
            bad.append((i, other, j))
    return bad


@pytest.mark.parametrize("fun", list(HAND_HESSIAN), ids=lambda f: f.__name__)
def test_star_colouring_is_valid(fun):
    rows, cols = HAND_HESSIAN[fun]
    colours = star_colouring(rows, cols, N)
    assert star_violations(rows, cols, colours) == []


def test_colour_counts():
    tri = HAND_HESSIAN[rosen_vec]
    assert star_colouring(*tri, N).max() + 1 == 3
    # The arrowhead's column intersection graph is complete (n colours for distance-2):
    # a star colouring needs only two.
    assert star_colouring(*HAND_HESSIAN[arrowhead], N).max() + 1 == 2
    assert column_colouring(*HAND_HESSIAN[arrowhead], (N, N)).max() + 1 == N


def test_star_checker_and_decompression_reject_a_distance_one_colouring():
    rows, cols = _hand(4, [(i, j) for i in range(4) for j in range(4) if abs(i - j) <= 1])
    alternating = np.array([0, 1, 0, 1])        # distance-1 valid, path 0-1-2-3 bichromatic
    assert star_violations(rows, cols, alternating)
    with pytest.raises(ValueError, match="cannot recover"):
        hessian_sources(rows, cols, alternating)


@pytest.mark.parametrize("fun,args", JACOBIAN_CASES, ids=lambda a: getattr(a, "__name__", ""))
def test_column_colouring_is_valid(fun, args):
    rows, cols, colours = JACOBIANS[fun].plan(*args)
    plan = next(iter(JACOBIANS[fun]._plans.values()))
    if plan.get("mode") == jitad.sparse.REVERSE_MODE:   # rows of the cut list are coloured
        cols, rows = plan["local"]
    assert column_violations(rows, cols, colours) == []
    assert column_violations(rows, cols, np.zeros_like(colours))     # the checker bites


def test_bundle_needs_few_colours():
    rng = np.random.default_rng(5)
    args = bundle_args(rng, n_cams=4, n_pts=30, n_obs=80)
    wengert, wrt, runtime = _traced_jacobian(bundle, args)
    rows, cols = jacobian_pattern(wengert, wrt, runtime)
    colours = column_colouring(rows, cols, (160, args[0].size))
    assert column_violations(rows, cols, colours) == []
    assert colours.max() + 1 < args[0].size // 2


# ---------------------------------------------------------------- values

@pytest.mark.parametrize("fun,args", HESSIAN_CASES, ids=lambda a: getattr(a, "__name__", ""))
def test_sparse_hessian_equals_dense_differences(fun, args):
    h = HESSIANS[fun](*args)
    assert h.format == "csr" and h.shape == (N, N)
    dense = fd_hessian(fun, args)
    np.testing.assert_allclose(h.toarray(), dense, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(h.toarray(), h.toarray().T)
    assert_pattern(h.nonzero(), nonzeros(dense, 1e-4))


@pytest.mark.parametrize("fun,args", JACOBIAN_CASES, ids=lambda a: getattr(a, "__name__", ""))
def test_sparse_jacobian_equals_dense_differences(fun, args):
    j = JACOBIANS[fun](*args)
    dense = fd_jacobian(fun, args)
    assert j.format == "csr" and j.shape == dense.shape
    np.testing.assert_allclose(j.toarray(), dense, rtol=1e-6, atol=1e-7)


def test_new_values_reuse_the_plan_and_kernel():
    h = HESSIANS[rosen_vec]
    y = np.random.default_rng(11).uniform(-1, 1, N)
    first = h._inner.trace_count
    np.testing.assert_allclose(h(y).toarray(), fd_hessian(rosen_vec, (y,)), rtol=1e-5, atol=1e-5)
    assert h._inner.trace_count == first


def test_new_index_values_give_a_new_pattern():
    other = np.roll(IDX, 1)
    h = HESSIANS[gathered](X, other)
    np.testing.assert_allclose(h.toarray(), fd_hessian(gathered, (X, other)), rtol=1e-5,
                               atol=1e-5)



def element_cubed(x, k):       # x[k] with k a 0-d integer array: a gather at k's value
    return np.sum(x ** 2) + x[k] ** 3 * x[(k + 1) % x.size]


def element_scaled(x, k):
    return x * x[k]


def test_a_zero_dimensional_index_argument_gives_its_own_pattern():
    """A 0-d integer array reaches the compiled code as an integer scalar: its value, like
    an index array's, decides the pattern (the plan made at k = 3 missed H[10, 10])."""
    x = np.random.default_rng(12).uniform(-1, 1, N)
    h, jac = sparse_hessian(element_cubed), sparse_jacobian(element_scaled)
    for k in (3, 6, 3):
        want = 2 * np.eye(N)
        j = (k + 1) % N
        want[k, k] += 6 * x[k] * x[j]
        want[k, j] += 3 * x[k] ** 2
        want[j, k] += 3 * x[k] ** 2
        np.testing.assert_allclose(h(x, np.array(k)).toarray(), want, rtol=1e-14)
        want = np.diag(np.full(N, x[k]))
        want[:, k] += x
        np.testing.assert_allclose(jac(x, np.array(k)).toarray(), want, rtol=1e-14)

def hvps(fun, args, colours):
    """Hessian-vector products with each colour's seed, from the generated source run as
    plain Python (the list the compiled sweep prints)."""
    wengert, wrt, runtime = _traced(fun, args)
    base = simplify(value_and_grad(wengert, [wrt]))
    kernel = load_python(codegen.generate(product_list(base, [wrt], [1], "hvp"), "hvp", "test"),
                         "hvp")
    return np.stack([kernel(*runtime, (colours == c).astype(float))
                     for c in range(colours.max() + 1)])


def test_a_wrong_pattern_or_decompression_gives_wrong_values():
    """The value tests catch a pattern that misses entries and a misrouted decompression."""
    rows, cols = HAND_HESSIAN[banded]
    dense = fd_hessian(banded, (X,))
    tri_rows, tri_cols = HAND_HESSIAN[rosen_vec]            # too narrow for pentadiagonal
    colours = star_colouring(tri_rows, tri_cols, N)
    wrong = decompress(hvps(banded, (X,), colours),
                       layout(tri_rows, tri_cols, hessian_sources(tri_rows, tri_cols, colours),
                              (N, N))).toarray()
    assert not np.allclose(wrong, dense, rtol=1e-5, atol=1e-5)
    colours = star_colouring(rows, cols, N)
    products = hvps(banded, (X,), colours)
    right = decompress(products, layout(rows, cols, hessian_sources(rows, cols, colours), (N, N)))
    np.testing.assert_allclose(right.toarray(), dense, rtol=1e-5, atol=1e-5)
    shifted = (colours + 1) % (colours.max() + 1)       # reads another colour's column
    misrouted = decompress(products, layout(rows, cols, jacobian_sources(rows, cols, shifted),
                                            (N, N)))
    assert not np.allclose(misrouted.toarray(), dense, rtol=1e-5, atol=1e-5)


def test_argnums_must_not_repeat():
    from jitad.errors import ArgumentError
    with pytest.raises(ArgumentError, match="repeated"):
        sparse_hessian(rosen_vec, argnums=(0, 0))


def test_pairs_are_exhaustive_for_the_star_checker():
    # A 4-cycle coloured 0,1,0,1 has a bichromatic path; 0,1,2,1 has none.
    rows, cols = _hand(4, [(i, (i + 1) % 4) for i in range(4)] + [((i + 1) % 4, i)
                                                                for i in range(4)])
    assert star_violations(rows, cols, [0, 1, 0, 1])
    assert not star_violations(rows, cols, [0, 1, 2, 1])


def scalar_mix(x):
    return x[0] / x[1] + x[2] ** x[3] + np.maximum(x[4], x[5]) * x[6] + math.atan2(x[7], x[8])


def test_scalar_rules_pattern():
    """div couples a with b and b with itself; pow and atan2 couple everything; maximum is
    piecewise linear and keeps both branches (a structural pattern holds for either)."""
    wengert, wrt, runtime = _traced(scalar_mix, (X,))
    want = _hand(N, [(0, 1), (1, 0), (1, 1), (2, 2), (2, 3), (3, 2), (3, 3), (4, 6), (6, 4),
                     (5, 6), (6, 5), (7, 7), (7, 8), (8, 7), (8, 8)])
    assert_pattern(hessian_pattern(wengert, wrt, runtime), want)
    h = sparse_hessian(scalar_mix)(X).toarray()
    np.testing.assert_allclose(h, fd_hessian(scalar_mix, (X,)), rtol=1e-5, atol=1e-5)


def mixed_vector(x):    # scalars read from a vector, combined, and broadcast back
    a = x[0] * x[1]
    return np.sum(np.exp(x[2:5] * a)) + np.sum(np.outer(x[5:7], x[7:9]) ** 2)


def test_scalars_and_arrays_mix():
    wengert, wrt, runtime = _traced(mixed_vector, (X,))
    block = [0, 1, 2, 3, 4]
    want = [(i, j) for i in block for j in block if not (i >= 2 and j >= 2 and i != j)]
    want += [(i, j) for i in (5, 6, 7, 8) for j in (5, 6, 7, 8)
             if (i < 7) != (j < 7) or i == j]
    assert_pattern(hessian_pattern(wengert, wrt, runtime), _hand(N, want))
    assert_pattern(hessian_pattern(wengert, wrt, runtime),
                   nonzeros(fd_hessian(mixed_vector, (X,)), 1e-4))


def test_other_sizes_get_their_own_pattern():
    h = sparse_hessian(rosen_vec)
    for n in (5, 12, 5):
        y = np.random.default_rng(n).uniform(-1, 1, n)
        got = h(y)
        assert got.shape == (n, n) and got.nnz == 3 * n - 2
        np.testing.assert_allclose(got.toarray(), fd_hessian(rosen_vec, (y,)), rtol=1e-5,
                                   atol=1e-5)
    assert h._inner.trace_count == 2


def test_zero_dimensional_argument_and_constant_output():
    h = sparse_hessian(lambda x: np.sin(x) * x)
    x = np.array(0.7)
    want = 2 * np.cos(0.7) - 0.7 * np.sin(0.7)
    np.testing.assert_allclose(h(x).toarray(), [[want]], rtol=1e-12)
    zero = sparse_hessian(lambda x: np.sum(3.0 * x))(X)
    assert zero.shape == (N, N) and zero.nnz == 0


def test_source_is_the_product_per_seed():
    text = HESSIANS[rosen_vec].source(X)
    assert "def rosen_vec_sparse_hessian(x, x_dot)" in text and "Hessian-vector product" in text


def branchy(x):
    if x[0] > 0:
        return np.sum(x[:-1] * x[1:])
    return np.sum(x ** 3)


def test_each_branch_gets_its_pattern():
    h = sparse_hessian(branchy)
    negative = -X
    for point in (X, negative, X):
        got = h(point)
        np.testing.assert_allclose(got.toarray(), fd_hessian(branchy, (point,)), atol=1e-5)
        assert got.nnz == (2 * N - 2 if point[0] > 0 else N)
    assert h._inner.trace_count == 2


@pytest.mark.parametrize("seed", range(6))
def test_star_colouring_of_random_graphs(seed):
    rng = np.random.default_rng(seed)
    n = 40
    dense = rng.random((n, n)) < rng.choice([0.03, 0.08, 0.2])
    dense[0, :] |= rng.random(n) < 0.5         # a partial hub
    dense = dense | dense.T | np.eye(n, dtype=bool)
    rows, cols = np.nonzero(dense)
    colours = star_colouring(rows, cols, n)
    assert star_violations(rows, cols, colours) == []
    hessian_sources(rows, cols, colours)        # every entry recoverable


def test_the_public_api_gives_the_sparse_objects():
    x = np.linspace(-1.0, 1.0, 12)

    def chained(v):
        return np.sum(100.0 * (v[1:] - v[:-1] ** 2) ** 2 + (1.0 - v[:-1]) ** 2)
    direct = jitad.sparse.sparse_hessian(chained)(x)
    public = jitad.hessian(chained, sparse=True)(x)
    decorated = jitad.hessian(sparse=True)(chained)(x)
    for h in (public, decorated):
        assert (h != direct).nnz == 0 and h.nnz == direct.nnz
    jac = jitad.jacobian(lambda v: v[1:] * v[:-1], sparse=True)(x)
    assert jac.shape == (11, 12) and jac.nnz == 22


def two_vectors(x, y, c):
    return np.sum(x[1:] * y[:-1] ** 2) + c * np.sum(np.sin(x)) + 0.5 * np.sum(y ** 3)


def two_vectors_grad_by_hand(x, y, c):
    gx, gy = c * np.cos(x), 1.5 * y ** 2
    gx[1:] += y[:-1] ** 2
    gy[:-1] += 2 * x[1:] * y[:-1]
    return np.concatenate([gx, gy])


def test_tuple_argnums_give_blocks_equal_to_differences_with_exact_patterns():
    rng = np.random.default_rng(3)
    x, y, c, n = rng.uniform(-1, 1, N), rng.uniform(-1, 1, N), 1.7, N
    H = jitad.hessian(two_vectors, argnums=(0, 1), sparse=True)(x, y, c)
    grad = lambda z: two_vectors_grad_by_hand(z[:n], z[n:], c)      # noqa: E731
    z = np.concatenate([x, y])
    dense = np.column_stack([(grad(z + 1e-6 * e) - grad(z - 1e-6 * e)) / 2e-6
                             for e in np.eye(2 * n)])
    hand_nnz = [[n, n - 1], [n - 1, n]]     # diagonals; x[i+1] with y[i]
    for i in range(2):
        for j in range(2):
            block = H[i][j]
            assert isinstance(block, jitad.sparse.sp.csr_matrix) and block.shape == (n, n)
            want = dense[i * n:(i + 1) * n, j * n:(j + 1) * n]
            np.testing.assert_allclose(block.toarray(), want, rtol=1e-6, atol=1e-6)
            assert block.nnz == hand_nnz[i][j] == np.count_nonzero(np.abs(want) > 1e-8)
    J = jitad.jacobian(lambda x, y: x[1:] * y[:-1] - np.cos(x[:-1]), argnums=(0, 1),
                       sparse=True)(x, y)
    np.testing.assert_allclose(J[0].toarray(), np.diag(np.sin(x[:-1]), 0)[:, :n - 1] @
                               np.eye(n - 1, n) + np.eye(n - 1, n, 1) * y[:-1, None],
                               rtol=1e-14)
    np.testing.assert_allclose(J[1].toarray(), np.eye(n - 1, n) * x[1:, None], rtol=1e-14)
    assert (J[0].nnz, J[1].nnz) == (2 * (n - 1), n - 1)


# ---------------------------------------------------------------- dense Hessians by colours

def _dense_hessian(fun, monkeypatch, argnums=0):
    """`jitad.hessian(fun)`, using a colouring from the smallest sizes on."""
    monkeypatch.setattr(jitad.derivatives, "COLOURED_FROM", 0)
    return jitad.hessian(fun, argnums=argnums)


@pytest.mark.parametrize("fun,args", HESSIAN_CASES, ids=lambda a: getattr(a, "__name__", ""))
def test_dense_hessian_from_colours_equals_differences(fun, args, monkeypatch):
    h = _dense_hessian(fun, monkeypatch)
    H = h(*args)
    np.testing.assert_allclose(H, fd_hessian(fun, args), rtol=1e-5, atol=1e-5)
    assert H.shape == (N, N) and H.flags.c_contiguous
    colours = HESSIANS[fun].plan(*args)[2].max() + 1
    # Gathers by argument index arrays: the pattern depends on their values, never baked in.
    coloured = fun is not gathered and 2 * colours <= N
    assert ("COLOUR_out" in h.source(*args)) == coloured
    if coloured:            # both triangles are read from the same products
        np.testing.assert_array_equal(H, H.T)


def test_dense_hessian_of_gathers_is_right_for_new_index_values(monkeypatch):
    h = _dense_hessian(gathered, monkeypatch)
    for idx in (IDX, np.roll(IDX, 3), np.zeros(N, dtype=np.int64)):
        np.testing.assert_allclose(h(X, idx), fd_hessian(gathered, (X, idx)), rtol=1e-5,
                                   atol=1e-5)


def coupled_blocks(a, b):      # a (3, 4) matrix and a vector: a[i, j] meets b[j]
    return np.sum(np.sin(a) * b) + np.sum(a ** 3) + np.sum(b[1:] * b[:-1] ** 2)


def test_dense_hessian_blocks_from_colours_of_matrix_arguments(monkeypatch):
    rng = np.random.default_rng(4)
    a, b = rng.uniform(-1, 1, (3, 4)), rng.uniform(-1, 1, 4)
    h = _dense_hessian(coupled_blocks, monkeypatch, argnums=(0, 1))
    blocks = h(a, b)
    assert "COLOUR_out" in h.source(a, b)
    grad = jitad.jit_grad(lambda y: coupled_blocks(y[:12].reshape(3, 4), y[12:]))
    y = np.concatenate([a.ravel(), b])
    fd = np.stack([(grad(y + 1e-6 * e) - grad(y - 1e-6 * e)) / 2e-6 for e in np.eye(16)])
    ends = (0, 12, 16)
    for i in range(2):
        for j in range(2):
            want = fd[ends[i]:ends[i + 1], ends[j]:ends[j + 1]]
            want = want.reshape((a.shape, b.shape)[i] + (a.shape, b.shape)[j])
            assert blocks[i][j].shape == want.shape and blocks[i][j].flags.c_contiguous
            np.testing.assert_allclose(blocks[i][j], want, rtol=1e-6, atol=1e-6)
    single = _dense_hessian(coupled_blocks, monkeypatch)(a, b)
    np.testing.assert_allclose(single, fd[:12, :12].reshape(3, 4, 3, 4), rtol=1e-6, atol=1e-6)


def test_a_dense_hessian_runs_one_product_per_colour():
    """At the default threshold a loop-form Rosenbrock of 64 unknowns costs 3 Hessian-vector
    products per Hessian, not 64."""
    x = np.random.default_rng(2).uniform(-1.2, 1.2, 64)
    h = jitad.hessian(rosen_loop)
    H = h(x)
    variant = next(v for entry in h._cache.values() for vs in entry.variants.values()
                   for v in vs)
    driver = variant.kernels["hessian"]
    name = "rosen_loop_hvp"
    kernel, calls = driver.__globals__[name], []
    driver.__globals__[name] = lambda *args: calls.append(1) or kernel(*args)
    try:
        np.testing.assert_array_equal(h(x), H)
    finally:
        driver.__globals__[name] = kernel
    assert len(calls) == 3
    by_hand = np.zeros((64, 64))
    for i in range(63):         # 100 (x[i+1] - x[i]^2)^2 + (1 - x[i])^2
        by_hand[i, i] += 1200 * x[i] ** 2 - 400 * x[i + 1] + 2
        by_hand[i + 1, i + 1] += 200
        by_hand[i, i + 1] = by_hand[i + 1, i] = -400 * x[i]
    np.testing.assert_allclose(H, by_hand, rtol=1e-12, atol=1e-12)


def test_a_dense_pattern_stops_the_analysis_early_and_loops_over_columns(monkeypatch):
    def dense(x):
        return np.sum(x) ** 2 + np.sum(np.sin(x))
    x = np.linspace(0.1, 1.0, N)
    wengert, wrt, _ = _traced(dense, (x,))
    analysis = jitad.sparse._Analysis(wengert, wrt, {}, True, max_pairs=20)
    with pytest.raises(jitad.sparse.TooDense):
        analysis.run(wengert.entries)
    assert analysis.scalar_pairs == [] and analysis.pairs_rows == []   # none were built
    h = _dense_hessian(dense, monkeypatch)
    assert "COLOUR_out" not in h.source(x)
    np.testing.assert_allclose(h(x), 2.0 - np.diag(np.sin(x)), rtol=1e-14)


def test_a_wrong_colouring_gives_a_wrong_dense_hessian(monkeypatch):
    """The checks above bite: one colour for every column (not a star colouring) mixes
    neighbours' entries."""
    monkeypatch.setattr(jitad.sparse, "star_colouring", lambda rows, cols, n:
                        np.zeros(n, dtype=np.int64))
    monkeypatch.setattr(jitad.sparse, "hessian_sources", lambda rows, cols, colours:
                        (rows, colours[cols]))

    def tridiagonal(x):     # (its own function: no stored build of a right colouring)
        return np.sum((x[1:] - x[:-1] ** 2) ** 2)
    H = _dense_hessian(tridiagonal, monkeypatch)(X)
    assert not np.allclose(H, fd_hessian(tridiagonal, (X,)), rtol=1e-5, atol=1e-5)


def filled(x):          # an array made in the function, filled in place (issue 11's pattern)
    r = np.zeros(len(x) + 1)
    for i in range(len(x) - 1):
        r[i] = x[i + 1] ** 2 - x[i]
    r[1] = x[3]         # overwrites r[1]: x[1] and x[2] no longer reach it
    r[-2:] = x[0] * x[-2:]
    return r


def test_jacobian_pattern_of_updates_is_exact():
    wengert, wrt, runtime = _traced_jacobian(filled, (X,))
    rows, cols = jacobian_pattern(wengert, wrt, runtime)
    assert_pattern((rows, cols), nonzeros(fd_jacobian(filled, (X,)), 1e-7))
    assert (1, 3) in set(zip(rows.tolist(), cols.tolist()))
    assert (1, 1) not in set(zip(rows.tolist(), cols.tolist()))


@pytest.mark.parametrize("fun", [chain_residuals, filled], ids=lambda f: f.__name__)
def test_dense_forward_jacobian_from_colours_equals_differences(fun, monkeypatch):
    monkeypatch.setattr(jitad.derivatives, "COLOURED_FROM", 0)
    x = np.random.default_rng(6).uniform(0.5, 1.5, 12)
    f = jitad.jacobian(fun, mode="fwd")
    J = f(x)
    assert "COLOUR_out" in f.source(x) and J.flags.c_contiguous
    np.testing.assert_allclose(J, fd_jacobian(fun, (x,)), rtol=1e-6, atol=1e-7)
    rows, cols, colours = jitad.sparse.sparse_jacobian(fun).plan(x)
    assert column_violations(rows, cols, colours) == [] and colours.max() + 1 <= 6


def sheets(a, b):       # a (4, 5) matrix and a vector; output (2, 20 + 4)
    out = np.concatenate(((np.sin(a) * b).ravel(), b[1:] * b[:-1]))
    return np.stack([out, out ** 2])


def test_a_coloured_dense_hessian_is_callable_from_numba_code():
    x = np.random.default_rng(9).uniform(-1.2, 1.2, 64)
    h = jitad.hessian(rosen_loop)
    assert "COLOUR_out" in h.source(x)
    kernel = h.njit_kernel(x)

    @numba.njit
    def newton_direction(x, g):
        return np.linalg.solve(kernel(x), g)
    g = jitad.jit_grad(rosen_loop)(x)
    np.testing.assert_allclose(newton_direction(x, g), np.linalg.solve(h(x), g), rtol=1e-10)


def constraints(a, b):      # 2 x 6 outputs, each reading one row of a and one b
    return np.stack([np.sum(a * a, axis=1) + b ** 3, np.sum(np.sin(a), axis=1) * b])


@pytest.mark.parametrize("fun,mode,shapes,colouring", [
    (sheets, "fwd", ((4, 5), (5,)), "columns take"),
    (constraints, "rev", ((6, 5), (6,)), "rows take 2 colours")], ids=["fwd", "rev"])
def test_dense_jacobian_blocks_from_colours_of_matrix_arguments(fun, mode, shapes, colouring,
                                                                 monkeypatch):
    monkeypatch.setattr(jitad.derivatives, "COLOURED_FROM", 0)
    rng = np.random.default_rng(10)
    a, b = (rng.uniform(-1, 1, shape) for shape in shapes)
    f = jitad.jacobian(fun, argnums=(0, 1), mode=mode)
    Ja, Jb = f(a, b)
    assert "COLOUR_out" in f.source(a, b) and colouring in f.source(a, b)
    y = np.concatenate([a.ravel(), b])
    fd = fd_jacobian(lambda y: fun(y[:a.size].reshape(a.shape), y[a.size:]), (y,))
    out = fun(a, b).shape
    assert Ja.shape == out + a.shape and Jb.shape == out + b.shape and Ja.flags.c_contiguous
    np.testing.assert_allclose(Ja.reshape(-1, a.size), fd[:, :a.size], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(Jb.reshape(-1, b.size), fd[:, a.size:], rtol=1e-6, atol=1e-7)


def test_dense_reverse_jacobian_of_a_vector_from_row_colours(monkeypatch):
    monkeypatch.setattr(jitad.derivatives, "COLOURED_FROM", 0)
    rng = np.random.default_rng(10)
    x = rng.uniform(0.5, 1.5, 12)
    g = jitad.jacobian(lambda x: x[:6] * x[6:] - np.sin(x[:6]), mode="rev")
    assert "COLOUR_out" in g.source(x)
    np.testing.assert_allclose(g(x), fd_jacobian(lambda x: x[:6] * x[6:] - np.sin(x[:6]),
                                                 (x,)), rtol=1e-6, atol=1e-7)
