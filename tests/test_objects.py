"""What jit_grad accepts and gives back as Python objects: methods, functools.partial,
callable objects; pickling by reference (multiprocessing); several threads first-calling
one object; errors that name the user's line; memory over many calls and objects."""
import copy
import functools
import gc
import math
import multiprocessing
import pickle
import threading
import tracemalloc
import weakref

import numpy as np
import pytest

import jitad

from conftest import assert_close

X = np.array([0.5, -1.0, 2.0])


@jitad.jit_grad
def sum_of_cubes(x):
    return np.sum(x ** 3)


@jitad.jit_grad(argnums=(0, 1))
def product(a, b):
    return a * b


def weighted(w, data, lam):
    return lam * np.sum(data * w)


class Quadratic:
    def __init__(self, scale):
        self.scale = scale

    def __call__(self, x):
        return self.scale * np.sum(x * x)

    @jitad.jit_grad
    def loss(self, w, shift):
        return self.scale * np.sum((w - shift) ** 2)


def test_a_method_differentiates_the_first_argument_after_self():
    model = Quadratic(0.5)
    assert_close(model.loss(X, 1.0), X - 1.0, 1e-12, 0, "d/dw")
    assert model.loss.value(X, 1.0) == pytest.approx(0.5 * np.sum((X - 1.0) ** 2))
    assert model.loss is model.loss, "one jit_grad per instance"
    assert Quadratic.loss.__class__.__name__ == "JitGrad"


class Named(Quadratic):
    """Instances equal (and hashed) by name, whatever their scale."""

    def __init__(self, name, scale):
        super().__init__(scale)
        self.name = name

    def __eq__(self, other):
        return isinstance(other, Named) and self.name == other.name

    def __hash__(self):
        return hash(self.name)


@pytest.mark.parametrize("make", [jitad.jit_grad, jitad.grad, jitad.hessian])
def test_instances_that_compare_equal_get_methods_of_their_own(make):
    class Model(Named):
        @make
        def penalty(self, w):
            return self.scale * np.sum(w ** 3)
    first, second = Model("dense", 1.0), Model("dense", 3.0)
    assert first == second
    for model in (first, second, first):
        want = np.diag(6.0 * X) if make is jitad.hessian else 3.0 * X * X
        assert_close(model.penalty(X), model.scale * want, 1e-12, 0, f"scale {model.scale}")
    assert first.penalty is first.penalty and first.penalty is not second.penalty


class Fitted:
    """A model holding its data, as fitted models do."""

    def __init__(self, scale):
        self.scale = scale
        self.data = np.full(3, scale)

    @jitad.jit_grad
    def loss(self, w):
        return self.scale * np.sum(w * w) + np.sum(self.data * w)

    @jitad.hessian
    def curvature(self, w):
        return self.scale * np.sum(w ** 3)


def test_instances_are_freed_and_copies_and_pickles_get_their_own_methods():
    def gradient(model):
        return 2.0 * model.scale * X + model.data
    models = [Fitted(s) for s in (1.0, 2.0, 3.0)]
    for model in models:
        assert_close(model.loss(X), gradient(model), 1e-12, 0, f"scale {model.scale}")
        assert_close(model.curvature(X), np.diag(6.0 * model.scale * X), 1e-12, 0, "hessian")
        model.loss.wait()
        model.curvature.wait()
    twin = copy.copy(models[0])
    twin.scale, twin.data = 5.0, np.zeros(3)        # (the copy's own attribute values)
    assert_close(twin.loss(X), 10.0 * X, 1e-12, 0, "a shallow copy's method")
    assert twin.loss is not models[0].loss
    clone = pickle.loads(pickle.dumps(models[1]))
    assert_close(clone.loss(X), gradient(models[1]), 1e-12, 0, "an unpickled instance")
    deep = copy.deepcopy(models[2])
    assert_close(deep.loss(X), gradient(models[2]), 1e-12, 0, "a deep copy")
    method = pickle.loads(pickle.dumps(models[2].loss))
    assert_close(method(X), gradient(models[2]), 1e-12, 0, "a pickled method")
    for waiting in (twin.loss, clone.loss, deep.loss, method):   # (background compiles
        waiting.wait()                                            # hold their objects)
    alive = [weakref.ref(model) for model in models + [twin, clone, deep]]
    del models, model, twin, clone, deep, method
    gc.collect()
    assert [ref() for ref in alive] == [None] * len(alive), "instances kept alive by jitad"


def test_partial_with_bound_keyword_and_positional_arguments():
    data = np.arange(6.0).reshape(2, 3)
    f = jitad.jit_grad(functools.partial(weighted, lam=2.0))
    assert_close(f(X, data), 2.0 * data.sum(axis=0), 1e-12, 0, "keyword bound")
    g = jitad.jit_grad(functools.partial(weighted, X))     # differentiates data
    assert_close(g(np.ones((2, 3)), 3.0), 3.0 * np.tile(X, (2, 1)), 1e-12, 0, "positional bound")


def test_a_callable_object():
    f = jitad.jit_grad(Quadratic(3.0))
    assert_close(f(X), 6.0 * X, 1e-12, 0, "gradient")
    assert f.__name__ == "__call__"


def test_objects_and_bound_entries_pickle_by_reference():
    sum_of_cubes(X)
    for obj in (sum_of_cubes, sum_of_cubes.value_and_grad, sum_of_cubes.value):
        assert pickle.loads(pickle.dumps(obj)) is obj
    with multiprocessing.get_context("fork").Pool(2) as pool:
        results = pool.map(sum_of_cubes.value_and_grad, [X, 2.0 * X])
    for (value, grad), x in zip(results, [X, 2.0 * X]):
        assert value == pytest.approx(np.sum(x ** 3), rel=1e-12)
        assert_close(grad, 3.0 * x * x, 1e-12, 0, "gradient from a worker")


def test_threads_first_calling_one_object_trace_and_compile_once():
    f = jitad.jit_grad(lambda x: np.sum(np.sin(x) * x))
    start = threading.Barrier(6)
    results = []

    def call():
        start.wait()
        results.append(f.value_and_grad(X))
    threads = [threading.Thread(target=call) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 6 and f.trace_count == 1 and f.compile_count == 1
    for value, grad in results:
        assert value == pytest.approx(np.sum(np.sin(X) * X), rel=1e-12)
        assert_close(grad, np.sin(X) + X * np.cos(X), 1e-12, 0, "gradient")


def test_a_jit_grad_called_inside_a_trace_is_inlined():
    inner = jitad.jit_grad(lambda x: np.sum(x * x))

    def outer(x):
        return np.sum(inner(x) * x)        # sum(2x * x): gradient 4x
    np.testing.assert_allclose(jitad.jit_grad(outer)(X), 4 * X, rtol=1e-15)
    assert inner.trace_count == 0           # its list was replayed, nothing compiled


@pytest.mark.parametrize("body, what", [
    ("return x * 2.0", r"an array of shape \(3,\)[\s\S]*test_objects\.py:\d+"),
    ("return (np.sum(x), np.sum(x))", r"a tuple of 2 values[\s\S]*at test_objects\.py:\d+"),
    ("return np.sum(x) > 0", r"a bool[\s\S]*at test_objects\.py:\d+"),
    ("pass", r"None \(is a return statement missing\?\)[\s\S]*at test_objects\.py:\d+"),
])
def test_non_scalar_outputs_name_the_users_file(body, what):
    namespace = {"np": np}
    exec(compile(f"def f(x):\n    {body}\n", __file__, "exec"), namespace)
    with pytest.raises(jitad.NonScalarOutputError, match=what):
        jitad.jit_grad(namespace["f"])(X)


def kept_bytes(run, warm: int, first: int, more: int) -> int:
    """Memory still allocated after `run(more)` beyond what `run(first)` left (after
    `run(warm)` outside the measurement): what repeated work keeps."""
    run(warm)
    gc.collect()
    tracemalloc.start()
    try:
        run(first)
        gc.collect()
        before, _ = tracemalloc.get_traced_memory()
        run(more)
        gc.collect()
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return after - before


def test_many_calls_allocate_nothing_that_stays():
    def calls(n):
        for _ in range(n):
            product(1.5, 2.5)
            sum_of_cubes.value_and_grad(X)
    kept = kept_bytes(calls, 1000, 10_000, 100_000)
    assert kept < 20_000, f"{kept} bytes kept over 100,000 more calls"


def test_short_lived_objects_are_freed():
    def run(n):
        for k in range(n):
            f = jitad.jit_grad(lambda x: x * x * 3.0)
            assert f(float(k)) == pytest.approx(6.0 * k)
    kept = kept_bytes(run, 10, 20, 100)
    assert kept < 100 * 2_000, f"{kept} bytes kept by 100 dead objects"


def sine_term(x, k):
    return k * math.sin(x)


class SineModel:
    k = 2.0

    def loss(self, x):
        return self.k * math.sin(x)

    def __call__(self, x):
        return self.k * math.sin(x)


@pytest.mark.parametrize("make", [
    lambda: functools.partial(sine_term, k=2.0),
    lambda: SineModel().loss,
    lambda: SineModel(),
    lambda: (lambda term: lambda x: term(x))(functools.partial(sine_term, k=2.0)),  # in a cell
])
def test_math_is_traced_inside_partials_methods_and_callable_objects(make):
    assert jitad.jit_grad(make())(0.5) == pytest.approx(2.0 * math.cos(0.5), rel=1e-14)


def test_parameters_named_like_builtins_and_entry_locals():
    def f(x, float, tuple, value, grads):
        return np.sum(x * float) + value * grads * (2.0 if tuple[1] is True else 5.0)
    compiled = jitad.jit_grad(f, argnums=(0, 1, 3, 4))
    for _ in range(2):                       # full path, then the generated entry
        value, grads = compiled.value_and_grad(X, 2.0, (1, True), 3.0, 4.0)
        assert value == pytest.approx(2.0 * X.sum() + 24.0, rel=1e-14)
        assert_close(grads[0], np.full(3, 2.0), 1e-14, 0, "d/dx")
        assert grads[1:] == pytest.approx((X.sum(), 8.0, 6.0), rel=1e-14)
