"""The GMM's per-call and compile-time work (issue 13), counted, never timed.

* Per call: compiled array code frees its temporaries at the end of each call; glibc used
  to hand them back to the kernel and fault every page in again on the next call, and
  still maps blocks over 32 MiB (the GMM at d = 64, K = 100: 51 MB) afresh per call unless
  told never to map (`jitad.memory`). Counted with the process's minor page faults.
* Loop over components: the constants jitad builds for `np.diag` and friends are one hidden
  input per distinct value, so a loop's iterations read the same input and re-roll
  (`numpy_functions._internal`): the number of constant inputs and the straight lines of
  the forward sweep do not grow with the trip count.
"""
import sys
from pathlib import Path

import numpy as np
import pytest

import jitad
from jitad import memory

from conftest import check_grads_python, traced

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
import gmm  # noqa: E402


def wide_temporaries(x, y):
    """Temporaries of 1,000 x 250 floats (2 MB, 488 pages each), forward and adjoint."""
    z = np.exp(np.sin(x[:, None] * y[None, :]))
    w = np.cos(x[:, None] - y[None, :])
    return np.sum(np.log1p(z * z) * w) + np.sum(z * w * w)


def _faults() -> int:
    resource = pytest.importorskip("resource")          # (POSIX)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _faults_per_call(f, *args, calls=5) -> float:
    """Minor page faults per call of `f.value_and_grad` once it runs compiled code."""
    for _ in range(3):
        f.value_and_grad(*args)
    f.wait()
    f.value_and_grad(*args)
    if not memory.keep_freed_memory():
        pytest.skip("malloc options left to the user (MALLOC_* or GLIBC_TUNABLES set)")
    before = _faults()
    for _ in range(calls):
        f.value_and_grad(*args)
    return (_faults() - before) / calls


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc only")
def test_array_code_does_not_fault_its_temporaries_in_per_call():
    f = jitad.jit_grad(wide_temporaries, argnums=(0, 1), code_shape="loops")
    x, y = np.linspace(-1.0, 1.0, 1000), np.linspace(0.5, 1.5, 250)
    pages_per_temporary = x.size * y.size * 8 // 4096
    # (glibc's defaults: ~3,400 faults per call, every temporary's pages)
    assert _faults_per_call(f, x, y) < pages_per_temporary / 4


def large_temporaries(a, b):
    """A product and its adjoint of 4,500 x 1,000 floats (36 MB each): over the 32 MiB up
    to which `mallopt` can keep glibc from mapping a block of its own."""
    return np.sum(np.tanh(a @ b) ** 2)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc only")
def test_temporaries_over_32_mib_are_not_faulted_in_per_call():
    f = jitad.jit_grad(large_temporaries, argnums=(0, 1), code_shape="loops")
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((4500, 4)), rng.standard_normal((4, 1000))
    pages_per_temporary = a.shape[0] * b.shape[1] * 8 // 4096
    assert pages_per_temporary * 4096 > 32 * 2 ** 20
    # (mmap threshold at 32 MiB only: ~8,800 faults per temporary per call)
    assert _faults_per_call(f, a, b) < pages_per_temporary / 8


def test_malloc_left_alone_when_the_user_says_so(monkeypatch):
    monkeypatch.setattr(memory, "applied", None)
    monkeypatch.setenv("JITAD_KEEP_FREED_MEMORY", "0")
    assert memory.keep_freed_memory() is False
    monkeypatch.setattr(memory, "applied", None)
    monkeypatch.delenv("JITAD_KEEP_FREED_MEMORY")
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    assert memory.keep_freed_memory() is False


def diag_in_a_loop(a, x):
    """`np.diag` of each row (a gather with a built index array and an appended zero)."""
    total = 0.0
    for k in range(a.shape[0]):
        total = total + np.sum(np.tanh(x @ np.diag(np.exp(a[k]))) ** 2)
    return total


def _constant_inputs(f, args) -> int:
    return len(traced(f, args)[0].trace.consts)


def test_loop_iterations_share_the_constants_jitad_builds():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 3))
    counts = {}
    for iterations in (5, 10):
        a = rng.uniform(-0.5, 0.5, (iterations, 3))
        f = jitad.jit_grad(diag_in_a_loop, argnums=(0, 1))
        counts[iterations] = _constant_inputs(f, (a, x))
    assert counts[5] == counts[10] == 2       # the diagonal's positions and the zero


def test_loop_with_diag_gradients():
    rng = np.random.default_rng(1)
    args = (rng.uniform(-0.5, 0.5, (5, 3)), rng.standard_normal((4, 3)))
    check_grads_python(diag_in_a_loop, args, argnums=(0, 1))


def test_user_arrays_stay_one_input_per_object():
    """Two equal arrays of the user's are two inputs: either may be updated in place later."""
    first, second = np.ones(3), np.ones(3)

    def f(x):
        return np.sum(x * first) + np.sum(x * x * second)

    g = jitad.jit_grad(f)
    x = np.arange(3.0)
    assert _constant_inputs(g, (x,)) == 2
    value, _ = g.value_and_grad(x)
    second[:] = 2.0
    value2, grad2 = g.value_and_grad(x)
    assert value2 == pytest.approx(np.sum(x) + 2 * np.sum(x * x))
    np.testing.assert_allclose(grad2, 1.0 + 4.0 * x)


def _forward_straight_lines(source: str) -> int:
    forward = source.split("# reverse sweep")[0]
    return sum(1 for line in forward.splitlines() if line.startswith("    ") and
               not line.startswith("     "))


def test_gmm_loop_forward_sweep_does_not_grow_per_component():
    """Per extra component, the forward sweep gains the one line that reads its column
    (np.stack's operands), not a copy of the loop body."""
    lines = {}
    for K in (6, 12):
        args = gmm.make_data(20, 2, K, np.random.default_rng(0))
        source = jitad.jit_grad(gmm.gmm_objective_loop, argnums=(0, 1, 2)).source(*args)
        assert "re-rolled from the trace" in source
        lines[K] = _forward_straight_lines(source)
    assert lines[12] - lines[6] <= 6 * 2
