"""Sparse Jacobians in reverse mode, the list cut at the gathers of differentiated inputs
(jitad/transforms/cut.py, `sparse.cut_pattern` / `reverse_plan`).

Oracles: central differences of the plain functions (dense), at several index patterns on
one compiled object (repeated indices, an element read twice by one row, gathered
constants); hand-known cuts; a deliberately wrong routing of the gathered columns must
fail the difference check.
"""
import os
import sys

import numpy as np
import pytest

import jitad
import jitad.sparse
from jitad.sparse import REVERSE_MODE, sparse_jacobian
from jitad.transforms import simplify
from jitad.transforms.cut import gathers_to_cut, output_parts

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))
import bundle_adjustment  # noqa: E402


def fd_jacobian(fun, args, argnums=(0,), eps=1e-6):
    """Dense central differences wrt the raveled arguments `argnums`, one after another."""
    blocks = []
    for k in argnums:
        columns = []
        for j in range(args[k].size):
            moved = [list(args), list(args)]
            for sign, a in zip((1, -1), moved):
                a[k] = args[k].copy()
                a[k].flat[j] += sign * eps
            columns.append((np.ravel(fun(*moved[0])) - np.ravel(fun(*moved[1]))) / (2 * eps))
        blocks.append(np.stack(columns, axis=1))
    return np.concatenate(blocks, axis=1)


def packed(n_cams, n_points, obs, rng):
    cams, X, w, _, feats = bundle_adjustment.make_data(n_cams, n_points, len(obs), rng)
    return (np.concatenate([cams.ravel(), X.ravel(), w]), obs, feats, n_cams, n_points)


def observations(rng, n_cams, n_points, n_obs, cams=None):
    """Random observations (every camera and point seen), or all of camera `cams`."""
    obs = np.stack([rng.integers(0, n_cams, n_obs), rng.integers(0, n_points, n_obs)], axis=1)
    obs[:n_cams, 0] = np.arange(n_cams)
    obs[:n_points, 1] = np.arange(n_points)
    if cams is not None:
        obs[:, 0] = cams
    return obs


def twice(x, i, j):
    """Row k reads x[i[k]] and x[j[k]]: the same element twice where i[k] == j[k]."""
    return np.sin(x[i]) * x[j] + x[i] ** 2


def partly_constant(x, idx):
    """Gathers from a base whose last elements are constants."""
    base = np.concatenate((x, np.full(3, 2.0)))
    return np.concatenate((base[idx] * x[1:idx.size + 1], np.exp(x[:2])))


def not_a_selection(x, idx):
    """The gathered base is a function of x, not a selection: nothing is cut."""
    return np.exp(x)[idx] * np.cos(x[:idx.size])


BA = sparse_jacobian(bundle_adjustment.packed_residuals)


@pytest.fixture
def reverse_always(monkeypatch):
    """Plans made under it take reverse mode wherever it applies."""
    monkeypatch.setattr(jitad.sparse, "REVERSE_COST", 0.0)


def _plan(jac):
    """The plan of the last call (plans are kept per index values)."""
    return list(jac._plans.values())[-1]


# ---------------------------------------------------------------- lists

def _traced(fun, args):
    jac = sparse_jacobian(fun)
    jac.plan(*args)
    variant = next(iter(jac._variants.values()))
    return simplify(variant.trace.wengert), list(variant.wrt)


def test_the_gathers_of_selections_are_cut():
    rng = np.random.default_rng(0)
    args = packed(3, 4, observations(rng, 3, 4, 8), rng)
    wengert, wrt = _traced(bundle_adjustment.packed_residuals, args)
    cuts = gathers_to_cut(wengert, wrt)
    assert [e.out.shape for e in cuts] == [(8, 11), (8, 3)]      # cams[obs[:, 0]], X[obs[:, 1]]
    assert [start for _, start in output_parts(wengert)] == [0, 16]     # residuals, weights
    x = rng.uniform(0.5, 1.5, 6)
    assert gathers_to_cut(*_traced(not_a_selection, (x, np.array([1, 2])))) == []
    assert len(gathers_to_cut(*_traced(partly_constant, (x, np.array([0, 7, 2]))))) == 1


# ---------------------------------------------------------------- values

@pytest.mark.parametrize("case", ["random", "one camera", "one point each"])
def test_bundle_adjustment_jacobian_equals_differences_for_new_index_values(case):
    """One compiled object, index patterns changing between calls (a camera seen by every
    observation included): each Jacobian equals central differences; nothing is traced
    or compiled again."""
    rng = np.random.default_rng(len(case))
    obs = {"random": observations(rng, 3, 5, 12),
           "one camera": observations(rng, 3, 5, 12, cams=1),
           "one point each": np.stack([np.arange(12) % 3, np.arange(12) % 5], axis=1)}[case]
    args = packed(3, 5, obs, rng)
    J = BA(*args)
    assert _plan(BA)["mode"] == REVERSE_MODE and len(_plan(BA)["seeds"]) == 3
    dense = fd_jacobian(bundle_adjustment.packed_residuals, args)
    np.testing.assert_allclose(J.toarray(), dense, rtol=1e-6, atol=1e-6)
    assert sorted(zip(*J.nonzero())) == sorted(zip(*np.nonzero(dense)))
    assert BA._inner.trace_count == 1
    variant = next(iter(BA._variants.values()))
    assert sorted(variant.kernels) == ["sparse_jacobian_rev_0", "sparse_jacobian_rev_1"]


@pytest.mark.parametrize("fun,args", [
    (twice, (np.linspace(0.5, 1.5, 7), np.array([0, 3, 3, 6, 2]), np.array([0, 1, 3, 5, 2]))),
    (partly_constant, (np.linspace(0.5, 1.5, 7), np.array([8, 0, 7, 3]))),
    (not_a_selection, (np.linspace(0.5, 1.5, 7), np.array([4, 4, 0, 6]))),
], ids=["an element read twice", "gathered constants", "nothing cut"])
def test_reverse_jacobian_equals_differences(fun, args, reverse_always):
    jac = sparse_jacobian(fun)
    J = jac(*args)
    plan = _plan(jac)
    assert plan["mode"] == REVERSE_MODE
    assert ("sum_at" in plan["layout"]) == (fun is twice)     # x[i] * x[j] with i == j: summed
    np.testing.assert_allclose(J.toarray(), fd_jacobian(fun, args), rtol=1e-6, atol=1e-7)


def test_tuple_argnums_give_blocks_equal_to_differences(reverse_always):
    rng = np.random.default_rng(4)
    cams, X, w, _, feats = bundle_adjustment.make_data(2, 4, 9, rng)
    obs = observations(rng, 2, 4, 9)
    args = (cams, X, w, obs, feats)
    blocks = jitad.jacobian(bundle_adjustment.ba_residuals, argnums=(0, 1, 2), sparse=True)(*args)
    assert [b.shape for b in blocks] == [(27, 22), (27, 12), (27, 9)]
    np.testing.assert_allclose(np.hstack([b.toarray() for b in blocks]),
                               fd_jacobian(bundle_adjustment.ba_residuals, args, (0, 1, 2)),
                               rtol=1e-6, atol=1e-6)


def test_a_wrong_routing_of_the_gathered_columns_fails(monkeypatch):
    """Routing each gathered camera element to the next camera's column gives a Jacobian
    the difference check rejects."""
    rng = np.random.default_rng(9)
    args = packed(3, 5, observations(rng, 3, 5, 12), rng)
    real = jitad.sparse._cut_sources

    def shifted(wengert, wrt, cuts, values):
        sources = real(wengert, wrt, cuts, values)
        n = args[0].size
        cams = slice(n, n + 12 * 11)           # the first cut: cams[obs[:, 0]]
        sources[cams] = (sources[cams] + 11) % 33
        return sources
    monkeypatch.setattr(jitad.sparse, "_cut_sources", shifted)
    wrong = sparse_jacobian(bundle_adjustment.packed_residuals)(*args)
    assert not np.allclose(wrong.toarray(), fd_jacobian(bundle_adjustment.packed_residuals, args),
                           rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------- choices

def test_forward_mode_stays_where_rows_share_columns():
    """Residuals chained along x (each row shares columns with both neighbours) colour
    into 2 columns: forward mode; the bundle's rows colour into 3 through the cut."""
    x = np.linspace(0.5, 1.5, 12)
    chain = sparse_jacobian(lambda v: np.concatenate((v[1:] * v[:-1] - 1.0, np.exp(v[:2]))))
    chain(x)
    assert "mode" not in _plan(chain)
    rng = np.random.default_rng(2)
    BA(*packed(3, 5, observations(rng, 3, 5, 12), rng))
    assert _plan(BA)["mode"] == REVERSE_MODE


def test_source_prints_each_reverse_product():
    rng = np.random.default_rng(3)
    text = BA.source(*packed(3, 5, observations(rng, 3, 5, 12), rng))
    assert text.count("Vector-Jacobian product") == 2      # residual rows; weight rows
    assert "def packed_residuals_sparse_jacobian_rev_0(params, obs, feats, v71_ct)" in text
