"""Specialization keys: static values that Python calls equal but that differ in type are
different keys; ndarray subclasses with their own semantics are rejected."""
import numpy as np
import pytest

import jitad

X = np.array([0.5, -1.0, 2.0])


def by_type(x, flag):
    """A slope that depends on the types inside `flag` (as a user's code may)."""
    kinds = tuple(type(f).__name__ for f in flag) if isinstance(flag, tuple) else type(flag)
    return x * (2.0 if kinds in (("int", "bool"), bool, ("tuple",)) else 5.0)


@pytest.mark.parametrize("first, second, slopes", [
    ((1, True), (1, 1), (2.0, 5.0)),
    ((1, 1), (1, True), (5.0, 2.0)),
    (True, 1, (2.0, 5.0)),
    (1, True, (5.0, 2.0)),
    (np.int64(1), 1, (5.0, 5.0)),
    (((1,),), ((True,),), (2.0, 2.0)),       # a nested tuple: the same slope, two keys
])
def test_equal_statics_of_other_types_are_other_specializations(first, second, slopes):
    f = jitad.jit_grad(by_type)
    for _ in range(2):                       # full path, then the generated entry
        assert f(1.0, first) == slopes[0]
        assert f(1.0, second) == slopes[1]
    assert f.trace_count == 2


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")
@pytest.mark.parametrize("make", [
    lambda: np.matrix([[1.0, 2.0], [3.0, 4.0]]),
    lambda: np.ma.array([1.0, 2.0, 3.0], mask=[False, True, False]),
    lambda: np.rec.array(np.ones(3)),
])
def test_ndarray_subclasses_are_rejected_naming_the_argument(make):
    f = jitad.jit_grad(lambda x: np.sum(x * x))
    f(np.ones((2, 2)) if make().ndim == 2 else np.ones(3))   # a compiled entry exists first
    with pytest.raises(jitad.ArgumentError, match=r"argument 'x' is a numpy\..*np\.asarray\(x\)"):
        f(make())


def test_a_memmap_is_a_plain_array(tmp_path):
    data = np.memmap(tmp_path / "x.dat", dtype=np.float64, mode="w+", shape=(3,))
    data[:] = X
    f = jitad.jit_grad(lambda x: np.sum(x * x))
    np.testing.assert_allclose(f(data), 2.0 * X, rtol=1e-14)
