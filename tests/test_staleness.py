"""No stale answers: a compiled call retraces when a global, closure cell, default or
attribute its trace read has been rebound; the disk store never serves a trace of code
that reads the outside world (files, the environment, clocks, random numbers).

Every expectation is the hand-derived gradient for the current bindings.
"""
import functools
import math
import os
import sys
import time
import types
import warnings

import numba
import numpy as np
import pytest
import scipy.linalg
import scipy.stats
from numpy import asarray_chkfinite

import jitad

from conftest import assert_close

X = np.array([0.5, -1.0, 2.0])
SCALE = 2.0
OFFSET = np.array([1.0, 2.0, 3.0])


def scaled(x):
    return SCALE * np.sum(x * x)


def square(x):
    return x * x


def via_helper(x):
    return np.sum(square(x))


def power_of(x, p=2):
    return x ** p


def via_default(x):
    return np.sum(power_of(x))


def shifted(x):
    return np.sum((x - OFFSET) ** 2)


@pytest.fixture
def restore(monkeypatch):
    """Rebind module globals for one test (restored afterwards)."""
    module = sys.modules[__name__]
    return lambda name, value: monkeypatch.setattr(module, name, value)


def test_a_rebound_global_retraces_on_the_fast_path(restore):
    f = jitad.jit_grad(scaled)
    for _ in range(2):                   # the second call runs the generated entry
        assert_close(f(X), 4.0 * X, 1e-12, 0, "SCALE = 2")
    restore("SCALE", 3.0)
    for _ in range(2):
        assert_close(f(X), 6.0 * X, 1e-12, 0, "SCALE = 3")
        assert f.value(X) == pytest.approx(3.0 * np.sum(X * X), rel=1e-12)
    assert f.trace_count == 2


def test_a_reference_taken_before_rebinding_sees_the_new_value(restore):
    f = jitad.jit_grad(scaled)
    value_and_grad = f.value_and_grad
    value_and_grad(X)
    restore("SCALE", -1.0)
    value, grad = value_and_grad(X)
    assert value == pytest.approx(-np.sum(X * X), rel=1e-12)
    assert_close(grad, -2.0 * X, 1e-12, 0, "gradient")


def test_a_rebound_helper_function_retraces(restore):
    f = jitad.jit_grad(via_helper)
    assert_close(f(X), 2.0 * X, 1e-12, 0, "x * x")
    restore("square", lambda x: x * x * x)
    assert_close(f(X), 3.0 * X * X, 1e-12, 0, "x * x * x")


def scaled_power(x, p):
    return SCALE * np.sum(x ** p)


cubed = functools.partial(scaled_power, p=3.0)


def via_partial(x):
    return cubed(x)


def test_a_rebound_global_of_a_helper_behind_a_partial_retraces(restore):
    # (a partial's __module__ is 'functools': it was taken as a trusted library's object)
    f = jitad.jit_grad(via_partial)
    for _ in range(2):
        assert_close(f(X), 6.0 * X * X, 1e-12, 0, "SCALE = 2")
    restore("SCALE", 5.0)
    for _ in range(2):
        assert_close(f(X), 15.0 * X * X, 1e-12, 0, "SCALE = 5")
    restore("cubed", functools.partial(scaled_power, p=2.0))
    assert_close(f(X), 10.0 * X, 1e-12, 0, "p = 2")


def test_a_rebound_default_of_a_helper_retraces(monkeypatch):
    f = jitad.jit_grad(via_default)
    assert_close(f(X), 2.0 * X, 1e-12, 0, "p = 2")
    monkeypatch.setattr(power_of, "__defaults__", (3,))
    assert_close(f(X), 3.0 * X * X, 1e-12, 0, "p = 3")


def test_a_rebound_closure_cell_retraces():
    scale = 2.0

    def inner(x):
        return scale * np.sum(x * x)
    f = jitad.jit_grad(inner)
    f(X)
    assert_close(f(X), 4.0 * X, 1e-12, 0, "scale = 2")
    scale = 5.0                          # noqa: F841 (read through the cell)
    assert_close(f(X), 10.0 * X, 1e-12, 0, "scale = 5")


def test_a_rebound_attribute_of_a_user_module_retraces():
    config = types.ModuleType("user_config")
    config.SCALE = 2.0
    namespace = {"np": np, "config": config}
    exec("def loss(x):\n    return config.SCALE * np.sum(x * x)\n", namespace)
    f = jitad.jit_grad(namespace["loss"])
    f(X)
    config.SCALE = 7.0
    assert_close(f(X), 14.0 * X, 1e-12, 0, "config.SCALE = 7")


def test_a_rebound_instance_attribute_of_a_method_retraces():
    class Model:
        def __init__(self, lam):
            self.lam = lam

        @jitad.jit_grad
        def loss(self, w):
            return self.lam * np.sum(w * w)
    model = Model(0.5)
    assert_close(model.loss(X), X, 1e-12, 0, "lam = 0.5")
    model.lam = 2.0
    assert_close(model.loss(X), 4.0 * X, 1e-12, 0, "lam = 2")
    assert_close(Model(1.0).loss(X), 2.0 * X, 1e-12, 0, "another instance")


class Layer:
    """A user object another one holds: its attributes and methods are read through it."""
    OFFSET = 0.0                                    # a class attribute an instance may hide

    def __init__(self):
        self.weights, self.scale = np.array([1.0, 2.0, 3.0]), 2.0

    def scaled(self, x):                            # reads self.scale: a helper method
        return self.scale * x

    @property
    def total(self):
        return np.sum(self.weights)                 # frozen: no traced values

    def __mul__(self, x):                           # an operator: called implicitly
        return self.weights * x


class Net:
    def __init__(self):
        self.layer = Layer()

    @jitad.jit_grad
    def helper_method(self, x):
        return np.sum(self.layer.scaled(x) ** 2)

    @jitad.jit_grad
    def passed(self, x):
        return np.sum(self.layer.weights * x + self.layer.OFFSET * x)

    @jitad.jit_grad
    def frozen(self, x):
        return self.layer.total * np.sum(x * x)

    @jitad.jit_grad
    def operator(self, x):
        return np.sum(self.layer * x)


@pytest.mark.parametrize("change", ["rebind", "in place"])
def test_attributes_of_objects_reached_through_attributes_and_methods_retrace(change):
    """`self.layer.weights`, an attribute read by a method (`self.layer.scaled`), a property
    or an operator of a held object, and a class attribute, all seen at each call."""
    net, layer = Net(), None
    expected = {
        "helper_method": lambda x: 2.0 * layer.scale ** 2 * x,
        "passed": lambda x: layer.weights + layer.OFFSET,
        "frozen": lambda x: 2.0 * np.sum(layer.weights) * x,
        "operator": lambda x: layer.weights,
    }
    layer = net.layer
    for name, gradient in expected.items():
        for _ in range(2):                          # the second call: the generated entry
            assert_close(getattr(net, name)(X), gradient(X), 1e-12, 0, name)
    if change == "rebind":
        layer.weights, layer.scale = np.array([-1.0, 4.0, 0.5]), 3.0
        layer.OFFSET = 10.0                         # hides the class attribute
    else:
        layer.weights[:] = [-1.0, 4.0, 0.5]
        Layer.OFFSET = 10.0
    try:
        for name, gradient in expected.items():
            for _ in range(2):
                assert_close(getattr(net, name)(X), gradient(X), 1e-12, 0, f"{name} changed")
    finally:
        Layer.OFFSET = 0.0


class Settings:
    __slots__ = ("scale",)

    def __init__(self, scale):
        self.scale = scale


CONFIG = types.SimpleNamespace(power=2.0, settings=Settings(3.0))


def configured(x):
    return CONFIG.settings.scale * np.sum(x ** CONFIG.power)


def test_attributes_of_global_objects_and_slots_retrace():
    f = jitad.jit_grad(configured)
    for _ in range(2):
        assert_close(f(X), 6.0 * X, 1e-12, 0, "first")
    CONFIG.settings.scale = 5.0                     # a __slots__ attribute, two objects deep
    for _ in range(2):
        assert_close(f(X), 10.0 * X, 1e-12, 0, "scale = 5")
    CONFIG.power = 3.0
    try:
        for _ in range(2):
            assert_close(f(X), 15.0 * X ** 2, 1e-12, 0, "power = 3")
    finally:
        CONFIG.power, CONFIG.settings.scale = 2.0, 3.0
    assert f.trace_count == 3


TABLE = {"scale": 2.0, "offsets": {"b": np.array([1.0, 2.0, 3.0]), "c": np.ones(2)}}


def tabled(x):
    return TABLE["scale"] * np.sum((x - TABLE["offsets"]["b"]) ** 2) + np.sum(
        TABLE["offsets"]["c"]) * x[0]


def test_dict_items_the_code_names_are_seen_when_changed_in_place():
    """Items under keys the code names (`TABLE["scale"]`), nested: rebound or changed in
    place, they retrace."""
    def gradient(x):
        b, c = TABLE["offsets"]["b"], TABLE["offsets"]["c"]
        return 2.0 * TABLE["scale"] * (x - b) + np.array([np.sum(c), 0.0, 0.0])
    f = jitad.jit_grad(tabled)
    try:
        for change in ("first", "scale", "array rebound", "arrays in place"):
            if change == "scale":
                TABLE["scale"] = 5.0
            elif change == "array rebound":
                TABLE["offsets"]["b"] = np.array([0.0, -1.0, 4.0])
            elif change == "arrays in place":
                TABLE["offsets"]["b"][0] = 7.0      # passed to the compiled code
                TABLE["offsets"]["c"][1] = 3.0      # frozen into the trace
            for _ in range(2):
                assert_close(f(X), gradient(X), 1e-12, 0, change)
    finally:
        TABLE.update(scale=2.0, offsets={"b": np.array([1.0, 2.0, 3.0]), "c": np.ones(2)})
    assert f.trace_count == 4


LAYERS = [np.array([1.0, 2.0, 3.0]), np.array([0.5])]
FACTORS = [1.0, 2.0]
GRID = [[1.0, 2.0], [3.0]]
PAIR = (np.array([2.0, 1.0, 1.0]), 3.0)


def listed(x):
    """Arrays and numbers read from lists and tuples: with traced values and without."""
    total = np.sum(LAYERS[0] * x) / np.sum(LAYERS[0]) + LAYERS[1][0] * np.sum(x * x)
    for factor in FACTORS:
        total = total + factor * x[0]
    return total + GRID[0][1] * x[1] + np.sum(PAIR[0]) * x[2]


@pytest.mark.filterwarnings("ignore::jitad.RetraceWarning")      # (9 changes, 9 traces)
def test_items_of_short_lists_and_arrays_in_tuples_are_seen_when_changed():
    """Rebound, changed in place, appended to or shortened, they retrace (lists of up to
    LIST_ITEMS items; the arrays in tuples for their contents)."""
    def gradient(x):
        w = LAYERS[0] / np.sum(LAYERS[0]) + 2.0 * LAYERS[1][0] * x
        w[0] += sum(FACTORS)
        w[1] += GRID[0][1]
        w[2] += np.sum(PAIR[0])
        return w
    f = jitad.jit_grad(listed)
    changes = {"first": lambda: None,
               "array in place (both ways)": lambda: LAYERS[0].__setitem__(0, 4.0),
               "array in place (frozen)": lambda: LAYERS[1].__setitem__(0, 2.0),
               "item rebound": lambda: LAYERS.__setitem__(0, np.array([1.0, 1.0, 2.0])),
               "number in place": lambda: FACTORS.__setitem__(0, 5.0),
               "appended": lambda: FACTORS.append(3.0),
               "shortened": lambda: FACTORS.pop(0),
               "nested list": lambda: GRID[0].__setitem__(1, 7.0),
               "array in a tuple": lambda: PAIR[0].__setitem__(1, 4.0)}
    saved = [LAYERS[:], [a.copy() for a in LAYERS], FACTORS[:], GRID[0][:], PAIR[0].copy()]
    try:
        for change, make in changes.items():
            make()
            for _ in range(2):
                assert_close(f(X), gradient(X), 1e-12, 0, change)
    finally:
        LAYERS[:] = saved[0]
        for array, values in zip(LAYERS, saved[1]):
            array[:] = values
        FACTORS[:], GRID[0][:], PAIR[0][:] = saved[2], saved[3], saved[4]
    assert f.trace_count == len(changes)


def test_a_global_defined_later_that_hides_a_builtin_retraces():
    namespace = {"np": np}
    exec("def loss(x):\n    return np.sum(abs(x) * x)\n", namespace)
    f = jitad.jit_grad(namespace["loss"])
    for _ in range(2):
        assert_close(f(X), 2.0 * np.abs(X), 1e-12, 0, "the builtin abs")
    exec("def abs(x):\n    return x * x\n", namespace)      # a notebook cell defines abs
    for _ in range(2):
        assert_close(f(X), 3.0 * X * X, 1e-12, 0, "the global abs")


def test_arrays_are_read_at_each_call(restore):
    f = jitad.jit_grad(shifted)
    assert_close(f(X), 2.0 * (X - OFFSET), 1e-12, 0, "first offset")
    OFFSET[:] = [3.0, 2.0, 1.0]          # mutated in place: the kernel reads it at each call
    try:
        assert_close(f(X), 2.0 * (X - OFFSET), 1e-12, 0, "mutated offset")
        restore("OFFSET", np.array([0.0, 0.0, 1.0]))                # rebound
        assert_close(f(X), 2.0 * (X - OFFSET), 1e-12, 0, "rebound offset")
    finally:
        sys.modules[__name__].OFFSET = np.array([1.0, 2.0, 3.0])
    assert f.trace_count == 2


WEIGHTS = np.array([1.0, 2.0, 3.0])


def frozen_sum(x):
    return np.sum(WEIGHTS) * np.sum(x * x)        # np.sum(WEIGHTS): NumPy's, while tracing


def frozen_elements(x):
    total = 0.0
    for i in range(WEIGHTS.shape[0]):             # WEIGHTS[i]: a number, while tracing
        total = total + WEIGHTS[i] * x[i] ** 3
    return total


@pytest.mark.parametrize("fun, gradient", [
    (frozen_sum, lambda x, w: 2.0 * np.sum(w) * x),
    (frozen_elements, lambda x, w: 3.0 * w * x ** 2),
], ids=["sum", "elements"])
def test_an_array_whose_values_the_trace_froze_retraces_when_changed_in_place(
        monkeypatch, fun, gradient):
    """What a trace computes from a global array without traced values is frozen into it:
    the array's contents are checked at each call (fast path and full path alike)."""
    monkeypatch.setattr(sys.modules[__name__], "WEIGHTS", np.array([1.0, 2.0, 3.0]))
    f = jitad.jit_grad(fun)
    for _ in range(2):                   # the second call runs the generated entry
        assert_close(f(X), gradient(X, WEIGHTS), 1e-12, 0, "first weights")
    WEIGHTS[1] = -5.0                    # in place: the same object
    for _ in range(2):
        assert_close(f(X), gradient(X, WEIGHTS), 1e-12, 0, "changed weights")
    assert f.trace_count == 2
    assert_close(f.value(X), fun(X), 1e-12, 0)


WATCHED = np.array([1.0, 2.0, 3.0])
NUMBA_TOTAL = numba.njit(lambda a: a.sum())
# Reads of WATCHED's values without traced values, by a function that also passes WATCHED
# to the compiled code (np.sum(WATCHED * x)): each is frozen into the trace.
FROZEN_READS = {
    "np.sum": lambda: np.sum(WATCHED),
    "method": lambda: WATCHED.max(),
    "element": lambda: WATCHED[1],
    "float": lambda: float(WATCHED[2]),
    "iteration": lambda: sum(v * v for v in WATCHED),
    "sum of a view": lambda: np.sum(WATCHED[1:]),
    "matmul of views": lambda: WATCHED.T @ WATCHED[::-1],
    "tolist": lambda: WATCHED.tolist()[0],
    "np.linalg.norm": lambda: np.linalg.norm(WATCHED),
    "copy": lambda: np.sum(WATCHED.copy() ** 2),
    "comparison": lambda: float(np.count_nonzero(WATCHED > 1.5)),
    "np.array": lambda: np.sum(np.array(WATCHED)),
    "np.asarray": lambda: np.asarray(WATCHED)[0],
    "a Numba function": lambda: NUMBA_TOTAL(WATCHED),
    "scipy.linalg": lambda: scipy.linalg.norm(WATCHED),          # (np.asarray inside)
    "scipy.stats": lambda: np.sum(scipy.stats.zscore(WATCHED) ** 3),
    "a library function by name": lambda: float(np.sum(asarray_chkfinite(WATCHED) ** 2)),
}


def passed_and_read(read):
    return lambda x: np.sum(WATCHED * x) + read() * x[0]


@pytest.mark.parametrize("name", sorted(FROZEN_READS))
def test_an_array_passed_and_also_read_without_traced_values_retraces_when_changed(
        monkeypatch, name):
    monkeypatch.setattr(sys.modules[__name__], "WATCHED", np.array([1.0, 2.0, 3.0]))
    read = FROZEN_READS[name]
    f = jitad.jit_grad(passed_and_read(read))
    for change in ("first", "in place"):
        if change == "in place":
            WATCHED[:] = [4.0, -1.0, 0.5]      # (every read above changes)
        for _ in range(2):                  # the second call runs the generated entry
            assert_close(f(X), WATCHED + np.array([read(), 0.0, 0.0]), 1e-12, 0, change)
    assert f.trace_count == 2


def test_arrays_only_passed_to_the_compiled_code_do_not_retrace_when_changed():
    """Used only with traced values (also through a closure and a default), an array's
    current contents are read by the compiled code: changing it needs no new trace."""
    closed = np.array([1.0, 1.0, 2.0])

    def helper(x, d=np.array([0.5, 0.0, 1.0])):
        return np.sum(d * x)
    f = jitad.jit_grad(lambda x: np.sum(WATCHED * x ** 2) + np.dot(closed, x) + helper(x))
    d = helper.__defaults__[0]
    for change in ("first", "in place"):
        if change == "in place":
            WATCHED[0], closed[1], d[2] = 3.0, -2.0, 4.0
        for _ in range(2):
            assert_close(f(X), 2.0 * WATCHED * X + closed + d, 1e-12, 0, change)
    WATCHED[0] = 1.0
    assert f.trace_count == 1


class Holder:
    def __init__(self):
        self.weights = np.array([1.0, 2.0, 3.0])
        self.inner = types.SimpleNamespace(weights=np.array([1.0, 2.0, 3.0]))
        self.table = {"weights": np.array([1.0, 2.0, 3.0])}

    @jitad.jit_grad
    def attribute(self, x):
        return np.sum(self.weights * x) / np.sum(self.weights)

    @jitad.jit_grad
    def nested(self, x):
        return np.sum(self.inner.weights * x) / np.sum(self.inner.weights)

    @jitad.jit_grad
    def item(self, x):
        return np.sum(self.table["weights"] * x) / np.sum(self.table["weights"])

    def broken(self, x):
        return np.sum(self.weights * x) + "not a number"


@pytest.mark.parametrize("name, held", [
    ("attribute", lambda h: h.weights),
    ("nested", lambda h: h.inner.weights),
    ("item", lambda h: h.table["weights"]),
])
def test_an_attribute_or_item_array_read_both_ways_retraces_when_changed(name, held):
    """Attributes and dict items hold watched views only while the trace runs."""
    holder = Holder()
    f = getattr(holder, name)
    for change in ("first", "in place"):
        if change == "in place":
            held(holder)[:] = [2.0, 2.0, 5.0]
        for _ in range(2):
            assert_close(f(X), held(holder) / np.sum(held(holder)), 1e-12, 0, change)
    assert type(held(holder)) is np.ndarray
    with pytest.raises(TypeError):
        jitad.jit_grad(holder.broken)(X)
    assert type(holder.weights) is np.ndarray


def normalized_square(y):
    return np.sum(WATCHED * y * y) / np.sum(WATCHED)


def test_an_array_a_nested_derivative_reads_both_ways_retraces_when_changed(monkeypatch):
    """The inner derivative is traced inside the outer trace: what it read counts there."""
    monkeypatch.setattr(sys.modules[__name__], "WATCHED", np.array([1.0, 2.0, 3.0]))
    inner = jitad.grad(normalized_square)
    f = jitad.jit_grad(lambda x: inner(x) @ x)
    for change in ("first", "in place"):
        if change == "in place":
            WATCHED[:] = [2.0, 2.0, 5.0]        # the same sum would hide a stale np.sum
        for _ in range(2):
            assert_close(f(X), 4.0 * WATCHED * X / np.sum(WATCHED), 1e-12, 0, change)


def as_vector(a):
    return a if type(a) is np.ndarray else np.array([a, a, a])


def test_watched_arrays_behave_as_ndarrays_in_traced_code():
    """Traced code sees WATCHED as a watched view: `type` still says np.ndarray, and a
    Numba function or NumPy's own conversions take it as the array."""
    numba = pytest.importorskip("numba")
    total = numba.njit(lambda a: a.sum())

    def f(x):
        assert isinstance(int, type) and type("Made", (), {}).__name__ == "Made"
        return np.sum(as_vector(WATCHED) * x) * total(WATCHED) + np.sum(np.asarray(WATCHED))
    g = jitad.jit_grad(f)
    for _ in range(2):
        assert_close(g(X), WATCHED * np.sum(WATCHED), 1e-12, 0)


SQUARE = np.array([[1.0, 2.0, 0.5], [-1.0, 0.0, 3.0], [0.25, -2.0, 1.0]])


@pytest.mark.parametrize("view", [
    lambda a: a.T, lambda a: a.transpose(), lambda a: np.swapaxes(a, 0, 1),
    lambda a: a[::-1].T[::-1], lambda a: a.reshape(9)[[0, 3, 6, 1, 4, 7, 2, 5, 8]].reshape(3, 3),
], ids=["T", "transpose", "swapaxes", "reversed T", "gathered"])
def test_views_numpy_makes_of_a_watched_array_are_those_views(view):
    """A view made in C (`.T`) starts as a copy of its source's attributes: it must stand
    for itself, not for the array it views (a square matrix hid a transposed one)."""
    f = jitad.jit_grad(lambda x: np.sum(np.sin(view(SQUARE) @ x)))
    matrix = view(SQUARE)
    for _ in range(2):
        assert_close(f(X), matrix.T @ np.cos(matrix @ X), 1e-12, 0)


@pytest.mark.parametrize("write", [
    lambda: WATCHED.__setitem__(1, 2.5), lambda: WATCHED.__iadd__(1.0),
    lambda: np.multiply(WATCHED, 2.0, out=WATCHED), lambda: WATCHED[::-1].sort(),
    lambda: np.copyto(WATCHED, 1.0), lambda: WATCHED.T.fill(0.0),
], ids=["item", "+=", "out=", "sort of a view", "copyto", "fill"])
def test_writing_into_a_watched_array_is_a_trace_error(write, monkeypatch):
    """The write would run once, while tracing, and never at compiled calls."""
    monkeypatch.setattr(sys.modules[__name__], "WATCHED", np.array([1.0, 2.0, 3.0]))

    def f(x):
        write()
        return np.sum(WATCHED * x)
    with pytest.raises(jitad.TraceError, match="writing into an array the function reads"):
        jitad.jit_grad(f)(X)
    assert_close(WATCHED, np.array([1.0, 2.0, 3.0]), 0, 0)


def test_watched_views_traced_code_stores_away_are_plain_arrays_after_the_trace():
    """A view stored into user state while tracing outlives the trace: writing through it
    later is the user's own write, not the traced function's."""
    weights = np.array([1.0, 2.0, 3.0])

    class Model:
        def __init__(self):
            self.weights, self.kept, self.log = weights, None, []

        @jitad.jit_grad
        def loss(self, x):
            self.kept = self.weights            # (while tracing: a watched view)
            self.log.append(self.weights[1:])
            return np.sum(self.weights * x) * np.sum(self.weights)

    model = Model()
    assert_close(model.loss(X), 6.0 * weights, 0, 0, "first call")
    model.kept[0] = 5.0                         # writes `weights`, as a plain view would
    model.log[0] += 1.0
    model.kept.fill(model.kept[0])
    assert_close(weights, [5.0, 5.0, 5.0], 0, 0, "written through the stored views")
    assert_close(model.loss(X), 15.0 * weights, 0, 0, "after the writes (retraced)")


def test_arrays_returned_as_aux_are_plain_ndarrays():
    f = jitad.jit_grad(lambda x: (np.sum(WATCHED * x), (WATCHED, WATCHED[1:])), has_aux=True)
    for _ in range(2):
        (_, (whole, part)), _ = f.value_and_grad(X)
        assert type(whole) is np.ndarray and type(part) is np.ndarray
        assert_close(part, WATCHED[1:], 0, 0)


def test_closure_variables_assigned_while_tracing_reach_the_user_s_cells():
    """Traced code runs on copies of the closure cells holding functions and arrays (so
    that they are traced and watched): what it assigns is copied back, as for globals."""
    scale, activation = np.array([2.0]), math.sin

    def f(x):
        nonlocal scale, activation
        scale, activation = np.array([3.0]), math.cos
        return scale[0] * activation(x)
    assert jitad.jit_grad(f)(0.5) == pytest.approx(-3.0 * math.sin(0.5))
    assert activation is math.cos and scale[0] == 3.0


def test_closure_and_attribute_arrays_the_trace_froze_retrace_when_changed():
    w = np.array([1.0, 2.0])
    f = jitad.jit_grad(lambda x: np.sum(w) * x ** 2)

    class Model:
        def __init__(self):
            self.scales = np.ones(3)

        @jitad.jit_grad
        def loss(self, x):
            return np.sum(self.scales ** 2) * x ** 2
    model = Model()
    assert f(2.0) == pytest.approx(12.0) and model.loss(1.0) == pytest.approx(6.0)
    w[0], model.scales[:] = 5.0, 2.0
    assert f(2.0) == pytest.approx(28.0) and model.loss(1.0) == pytest.approx(24.0)


def test_an_array_reshaped_in_place_retraces(monkeypatch):
    """The same object with another shape: WEIGHTS[1] was 2.0, it is now the row [4, 5, 6]."""
    monkeypatch.setattr(sys.modules[__name__], "WEIGHTS", np.arange(1.0, 7.0))
    f = jitad.jit_grad(lambda x: np.sum(WEIGHTS[1] * x))
    x = np.array([0.5, 1.0, 2.0])
    assert_close(f(x), np.full(3, 2.0), 1e-12, 0)
    WEIGHTS.shape = (2, 3)
    assert_close(f(x), np.array([4.0, 5.0, 6.0]), 1e-12, 0)
    assert f.trace_count == 2


def test_values_rebound_at_every_call_stay_right_and_warn(restore):
    f = jitad.jit_grad(scaled)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for k in range(9):
            restore("SCALE", float(k))
            assert_close(f(X), 2.0 * k * X, 1e-12, 0, f"SCALE = {k}")
    messages = [str(w.message) for w in caught if issubclass(w.category, jitad.RetraceWarning)]
    assert len(messages) == 1 and "SCALE" in messages[0] and "as arguments" in messages[0]


# ---------------------------------------------------------------- the disk store

def traces_of(f, capsys):
    """How often the user's function ran (it prints while traced) for a new jit_grad (whose
    background job, which stores the trace, is waited for)."""
    capsys.readouterr()
    g = jitad.jit_grad(f)
    g(X)
    g.wait()
    return capsys.readouterr().out.count("tracing")


def random_noise(x):
    print("tracing random_noise")
    return np.sum(x * np.random.default_rng().normal(size=3))


def reads_environment(x):
    print("tracing reads_environment")
    return float(os.environ.get("JITAD_TEST_SCALE", "1")) * np.sum(x * x)


def reads_clock(x):
    print("tracing reads_clock")
    return (time.time() > 0) * np.sum(x * x)


def reads_a_file(x):
    print("tracing reads_a_file")
    with open(__file__) as handle:
        scale = len(handle.readline())
    return scale * np.sum(x * x)


def keyword_helper(x, *, p=2):
    return x ** p


def via_keyword_default(x):
    print("tracing via_keyword_default")
    return np.sum(keyword_helper(x))


@pytest.mark.parametrize("impure", [random_noise, reads_environment, reads_clock, reads_a_file])
def test_traces_of_impure_code_are_never_stored(impure, capsys):
    assert traces_of(impure, capsys) == 1
    assert traces_of(impure, capsys) == 1, "a second jit_grad was served a stored trace"


def test_keyword_only_defaults_of_helpers_are_part_of_the_store_key(capsys, monkeypatch):
    assert traces_of(via_keyword_default, capsys) == 1
    assert traces_of(via_keyword_default, capsys) == 0           # stored
    monkeypatch.setattr(keyword_helper, "__kwdefaults__", {"p": 3})
    assert traces_of(via_keyword_default, capsys) == 1
    assert_close(jitad.jit_grad(via_keyword_default)(X), 3.0 * X * X, 1e-12, 0, "p = 3")


def summed_default(x, d=np.array([1.0, 2.0, 3.0])):
    return np.sum(d) * np.sum(x * x)            # np.sum(d): NumPy's, while tracing


def summed_keyword_default(x, *, d=np.array([1.0, 2.0, 3.0])):
    return np.sum(d) * np.sum(x * x)


@pytest.mark.parametrize("helper, held", [
    (summed_default, lambda: summed_default.__defaults__[0]),
    (summed_keyword_default, lambda: summed_keyword_default.__kwdefaults__["d"]),
], ids=["positional", "keyword-only"])
def test_a_default_array_the_trace_froze_retraces_when_changed_in_place(helper, held):
    """The defaults tuple (dict) is the same object after an in-place change of an array in
    it: the array's contents are checked as a global array's are."""
    f = jitad.jit_grad(lambda x: helper(x))
    try:
        for change in ("first", "in place"):
            if change == "in place":
                held()[:] = [5.0, 5.0, 5.0]
            for _ in range(2):
                assert_close(f(X), 2.0 * np.sum(held()) * X, 1e-12, 0, change)
        assert f.trace_count == 2
    finally:
        held()[:] = [1.0, 2.0, 3.0]


def test_a_plain_view_of_a_watched_array_stays_watched(monkeypatch):
    """`WATCHED.view(np.ndarray)` asks for a plain view: its reads are WATCHED's reads."""
    monkeypatch.setattr(sys.modules[__name__], "WATCHED", np.array([1.0, 2.0, 3.0]))
    f = jitad.jit_grad(lambda x: np.sum(WATCHED * x) + np.sum(WATCHED.view(np.ndarray)) * x[0])
    for change in ("first", "in place"):
        if change == "in place":
            WATCHED[:] = [4.0, -1.0, 0.5]
        for _ in range(2):
            assert_close(f(X), WATCHED + np.array([np.sum(WATCHED), 0.0, 0.0]), 1e-12, 0, change)
    assert f.trace_count == 2


def test_a_watched_array_passed_alone_to_a_nested_jitad_object_is_read(monkeypatch):
    """`inner.value(WATCHED)` runs inner's compiled code while tracing: a number frozen into
    the outer trace, computed from WATCHED's values."""
    monkeypatch.setattr(sys.modules[__name__], "WATCHED", np.array([1.0, 2.0, 3.0]))
    inner = jitad.jit_grad(lambda w: np.sum(w * w))
    assert inner.value(np.ones(3)) == 3.0       # (compiled before: the outer trace calls it)
    f = jitad.jit_grad(lambda x: np.sum(WATCHED * x) + inner.value(WATCHED) * x[0])
    for change in ("first", "in place"):
        if change == "in place":
            WATCHED[:] = [4.0, -1.0, 0.5]
        for _ in range(2):
            expected = WATCHED + np.array([np.sum(WATCHED ** 2), 0.0, 0.0])
            assert_close(f(X), expected, 1e-12, 0, change)
