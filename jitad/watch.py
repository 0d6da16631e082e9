"""Arrays a trace reads through globals, closure cells, defaults, user modules, attributes
and dicts, watched while it runs: which of them it read values of besides using them with
traced values.

Step: beside tracing. Traced code sees such an array as a `Watched` view of the same memory
(`Watch.wrap`; arrays held by objects' attributes, dicts and lists hold one while the
trace runs, `Watch.swap`). Operations with traced values unwrap it (`plain`): the compiled
code is passed the array and reads its current contents at each call. Any other read of its
values (NumPy ufuncs and functions, element reads, iteration, conversions, ndarray methods,
copies, a Numba or library function called with it: `Compiled`) records it in `Watch.read`:
the trace froze what it computed from them, so each call compares the array's contents
(`Reads.with_arrays`). Views of it stay watched. A write into it is refused (it would
happen once, while tracing); views that outlive the trace act as plain arrays
(`Watch.close`). Reads that bypass Python (the buffer protocol, other compiled
extensions) are not seen.
"""
from __future__ import annotations

import numpy as np

from .reads import bound_value


class Watch:
    """The watched arrays of one trace; `read`: the ids of those whose values it read."""

    def __init__(self, traced_type, refuse_write):
        self.traced_type = traced_type      # the tracer class: values that are traced
        self.refuse_write = refuse_write    # raises the error for a write into a watched array
        self.read: set = set()
        self.views: dict = {}               # id(array) -> its Watched view (one per array)
        self.open = True                    # (views stored away by traced code outlive it)

    def close(self) -> None:
        """End the watch: views that outlive the trace act as plain arrays."""
        self.open = False

    def wrap(self, array: np.ndarray) -> Watched:
        view = self.views.get(id(array))
        if view is None:
            view = self.views[id(array)] = _watched_view(array, (self, array))
        return view

    def swap(self, held) -> list:
        """Put watched views into the dicts holding arrays (an object's attributes, a dict's
        items) for the trace; `restore` puts the arrays back."""
        swapped = []
        for container, key in held:
            array = bound_value(container, key)
            if type(array) is np.ndarray:
                container[key] = self.wrap(array)
                swapped.append((container, key, array))
        return swapped

    def restore(self, swapped) -> None:
        for container, key, array in swapped:
            if bound_value(container, key) is self.views[id(array)]:    # (unless rebound)
                container[key] = array


class Watched(np.ndarray):
    """A watched array as traced code sees it (`_jitad_source`: its Watch and the array)."""

    def __array_finalize__(self, obj):      # views and copies NumPy makes of a watched array
        source = _open(obj) if isinstance(obj, Watched) else None
        if source is not None:      # (a plain view for the check: no dispatch, no caching)
            if np.may_share_memory(np.ndarray.view(self, np.ndarray), source[1]):
                self._jitad_source = source
            else:
                source[0].read.add(id(source[1]))

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        return call(getattr(ufunc, method), inputs, kwargs)

    def __array_function__(self, func, types, args, kwargs):
        return call(func, args, kwargs)

    def __getitem__(self, index):
        if type(index) is int:          # (an element loop's reads: the short way)
            result = plain(self)[index]
            if type(result) is not np.ndarray:
                mark_read(self)
                return result
        return call(np.ndarray.__getitem__, (self, index), {})

    def __setitem__(self, index, value):
        _check_write(self, "an assignment to its elements")
        np.ndarray.__setitem__(plain(self), plain_all(index), plain_all(value))

    def view(self, *args, **kwargs):
        """`a.view(np.ndarray)` (asked for a plain view) stays watched; views as another
        subclass read the values."""
        result = np.ndarray.view(self, *args, **kwargs)
        source = _open(self)
        if source is None or isinstance(result, Watched):
            return result
        if type(result) is np.ndarray:
            return _watched_view(result, source)
        mark_read(self)
        return result

    def __iter__(self):
        mark_read(self)
        return iter(plain(self))

    @property
    def flat(self):
        mark_read(self)
        return plain(self).flat


class _TypeCheck(type):
    """`isinstance(c, Type)` and `issubclass(m, Type)` answer as for the builtin `type`."""

    def __instancecheck__(cls, value):
        return isinstance(value, type)

    def __subclasscheck__(cls, subclass):
        return issubclass(subclass, type)


class Type(type, metaclass=_TypeCheck):
    """The builtin `type` as traced code sees it: a watched array's type is np.ndarray."""

    def __new__(cls, *args, **kwargs):
        if len(args) == 1 and not kwargs:
            return type(plain(args[0]))
        return type(*args, **kwargs)


def _watched_view(array: np.ndarray, source) -> Watched:
    """A watched view of the plain `array` (which `plain` gives back), standing for the
    array `source` ((its Watch, the array)) watches."""
    view = np.ndarray.view(array, Watched)
    view._jitad_source, view._jitad_plain = source, array
    return view


def plain(value):
    """The array a watched one stands for: the array itself for the view traced code was
    given, a plain view of its memory for views of that (any other value unchanged)."""
    if not isinstance(value, Watched):
        return value
    found = value.__dict__.get("_jitad_plain")
    if found is None:
        found = value._jitad_plain = np.ndarray.view(value, np.ndarray)
    return found


def plain_all(value):
    """`value` with `plain` applied inside tuples, lists and dicts."""
    kind = type(value)
    if kind is Watched:
        return plain(value)
    if kind is tuple or kind is list:
        return kind(plain_all(v) for v in value)
    if kind is dict:
        return {k: plain_all(v) for k, v in value.items()}
    return value


def _leaves(value, found: list) -> list:
    """The values nested in tuples, lists and dicts (`found`, extended)."""
    kind = type(value)
    if kind is tuple or kind is list:
        for v in value:
            _leaves(v, found)
    elif kind is dict:
        for v in value.values():
            _leaves(v, found)
    else:
        found.append(value)
    return found


def _open(view):
    """(The Watch, the array) a watched view stands for while its trace runs, else None."""
    source = view.__dict__.get("_jitad_source")
    return source if source is not None and source[0].open else None


def mark_read(*views) -> None:
    """Record that the trace read the values of the arrays these watched views stand for."""
    for view in views:
        source = _open(view)
        if source is not None:
            source[0].read.add(id(source[1]))


def _check_write(view, what: str) -> None:
    """Refuse a write into a watched array while its trace runs (the traced function's side
    effect would run once, while tracing, and never at compiled calls): the trace's error."""
    source = _open(view)
    if source is not None:
        source[0].refuse_write(what)


def call(func, args, kwargs):
    """`func(*args, **kwargs)` on the plain arrays of any watched ones. With traced values
    among the arguments the tracer binds it; otherwise its result is a view of a watched
    array (watched too), or the watched arrays' values were read."""
    leaves = _leaves(kwargs, _leaves(args, [])) if kwargs else _leaves(args, [])
    watched = [v for v in leaves if type(v) is Watched]
    written = [v for v in _leaves(kwargs.get("out"), []) if type(v) is Watched]
    if args and type(args[0]) is Watched and func in _WRITERS:
        written.append(args[0])
    if written:
        owner = getattr(func, "__self__", None)     # (a ufunc's method: its ufunc)
        name = getattr(owner if isinstance(owner, np.ufunc) else func, "__name__", repr(func))
        for view in written:
            _check_write(view, f"{_OPERATORS.get(name, name)} into it")
    result = func(*plain_all(args), **plain_all(kwargs)) if kwargs else \
        func(*plain_all(args))
    sources = [s for s in map(_open, watched) if s is not None]
    if not sources:
        return result
    traced_type = sources[0][0].traced_type
    if any(isinstance(v, traced_type) for v in leaves):
        return result
    if type(result) is np.ndarray:
        for source in sources:
            if np.may_share_memory(result, source[1]):
                return _watched_view(result, source)
    mark_read(*watched)
    return result


class Compiled:
    """A function jitad does not trace (a Numba dispatcher, a library function) as traced
    code sees it: the watched arrays passed to it are read (its code reads their memory, or
    converts them to plain arrays first)."""

    def __init__(self, fun):
        self._jitad_fun = fun

    def __call__(self, *args, **kwargs):
        return call(self._jitad_fun, args, kwargs)

    def __getattr__(self, name):
        return getattr(self._jitad_fun, name)


# The in-place operators (`G += 1`), by method name.
_OPERATORS = {f"__i{op}__": f"{symbol}=" for op, symbol in (
    ("add", "+"), ("sub", "-"), ("mul", "*"), ("truediv", "/"), ("floordiv", "//"), ("mod", "%"),
    ("pow", "**"), ("matmul", "@"), ("and", "&"), ("or", "|"), ("xor", "^"), ("lshift", "<<"),
    ("rshift", ">>"))}
# Functions and methods that write into their first argument.
_WRITERS = {np.copyto, np.put, np.place, np.putmask, np.fill_diagonal,
            *(getattr(np.ndarray, name) for name in (
                "fill", "sort", "put", "partition", "resize", "setfield", "itemset", *_OPERATORS)
              if hasattr(np.ndarray, name))}


def _reading(name):
    method = getattr(np.ndarray, name)

    def read(self, *args, **kwargs):
        return call(method, (self, *args), kwargs)
    read.__name__ = name
    return read


# Every other ndarray method: views stay watched, anything else reads the values.
for _name in dir(np.ndarray):
    if _name not in Watched.__dict__ and _name not in (
            "__array_finalize__", "__new__", "__init__", "__getattribute__",
            "__setattr__", "__delattr__", "__class__", "__init_subclass__", "__subclasshook__",
            "__sizeof__", "__len__", "__array_priority__", "__hash__", "__doc__", "__dir__",
            "__array_wrap__", "__array_prepare__", "__class_getitem__", "__dlpack_device__") \
            and callable(getattr(np.ndarray, _name)):
        setattr(Watched, _name, _reading(_name))
for _name in ("data", "ctypes", "base", "__array_interface__", "__array_struct__"):
    setattr(Watched, _name, property(lambda self, _name=_name: (
        mark_read(self), getattr(plain(self), _name))[1]))
del _name
