"""The IR: a Wengert list — inputs, a linear list of primitive applications, outputs.

Step: data shared by every other step. Tracing builds lists, transforms rewrite
them, codegen prints them. Plain data: no NumPy evaluation and no Numba here.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

_SHORT_DTYPE = {"float64": "f64", "float32": "f32", "int64": "i64", "int32": "i32", "bool": "bool"}


def short_type(dtype: str, shape: tuple) -> str:
    """`f64[2,3]`-style type text."""
    return f"{_SHORT_DTYPE.get(dtype, dtype)}[{','.join(map(str, shape))}]"


class Var:
    """A value in a Wengert list: a name, a dtype name and a (trace-time) shape."""

    __slots__ = ("name", "dtype", "shape")

    def __init__(self, name: str, dtype: str, shape: tuple = ()):
        self.name = name
        self.dtype = dtype
        self.shape = shape if type(shape) is tuple else tuple(shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def type_text(self) -> str:
        return short_type(self.dtype, self.shape)

    def __repr__(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True)
class Literal:
    """A Python scalar constant operand (float, int or bool), printed inline."""

    value: object

    @property
    def dtype(self) -> str:
        if isinstance(self.value, bool):
            return "bool"
        return "int64" if isinstance(self.value, int) else "float64"

    shape = ()
    ndim = 0

    def __repr__(self) -> str:
        return repr(self.value)


@dataclass(slots=True)
class Entry:
    """One line of a Wengert list: `out = prim(*ins)[params]`, with the user's source location."""

    out: Var
    prim: object
    ins: tuple
    params: dict = field(default_factory=dict)
    loc: str | None = None
    accumulate: bool = False        # adds a contribution into an adjoint (operand 0)
    sweep: str = "forward"          # "forward" or "reverse": the section codegen prints it in

    def param_text(self) -> str:
        if not self.params:
            return ""
        return "[" + " ".join(f"{k}={v!r}" for k, v in sorted(self.params.items())) + "]"

    def __str__(self) -> str:
        ins = " ".join(map(repr, self.ins))
        return f"{self.out.name}:{self.out.type_text()} = {self.prim.name}{self.param_text()} {ins}".rstrip()


@dataclass
class WengertList:
    """A traced or transformed function.

    `inputs` are the runtime arguments (Vars named after the user's parameters);
    `outputs` are operands (Vars or Literals); `out_tree` tells the API how to
    regroup outputs (see transforms.reverse).
    """

    name: str
    inputs: list
    entries: list
    outputs: list
    loc: str | None = None
    out_tree: object = None

    def __iter__(self):
        return iter(self.entries)

    def returned_text(self, output_texts: list) -> str:
        """What generated code returns, given each output's text: `value, (g1, g2)` for a
        differentiated list (see `out_tree`; `(value, (aux, …)), (g1, g2)` with auxiliary
        outputs after the gradients), else the outputs."""
        if self.out_tree is None:
            return ", ".join(output_texts)
        k = self.out_tree
        grads = ", ".join(output_texts[1:1 + k]) + ("," if k == 1 else "")
        value = output_texts[0]
        if len(output_texts) > 1 + k:       # auxiliary outputs: `(value, (aux, …)), (grads)`
            value = f"({value}, ({', '.join(output_texts[1 + k:])},))"
        return f"{value}, ({grads})"

    def __len__(self) -> int:
        return len(self.entries)

    def __str__(self) -> str:
        header = ", ".join(f"{v.name}: {v.type_text()}" for v in self.inputs)
        lines = [f"# {self.name}, traced for {header}" if self.inputs else f"# {self.name}"]
        lines.append("{ lambda " + " ".join(f"{v.name}:{v.type_text()}" for v in self.inputs) + " .")
        width = max((len(str(e)) for e in self.entries), default=0)
        for i, e in enumerate(self.entries):
            text = ("  let " if i == 0 else "      ") + str(e)
            if e.loc:
                text = text.ljust(width + 8) + f"  # {e.loc}"
            lines.append(text)
        lines.append("  in (" + ", ".join(map(repr, self.outputs)) + ") }")
        return "\n".join(lines)

    def to_dot(self) -> str:
        """Graphviz DOT text: value nodes (ellipses) and op nodes (boxes)."""
        out = [f'digraph "{self.name}" {{', "  rankdir=LR;"]
        for v in self.inputs:
            out.append(f'  "{v.name}" [shape=ellipse, label="{v.name}\\n{v.type_text()}"];')
        for i, e in enumerate(self.entries):
            op = f"op{i}"
            out.append(f'  {op} [shape=box, label="{e.prim.name}{e.param_text()}"];')
            for a in e.ins:
                if isinstance(a, Var):
                    out.append(f'  "{a.name}" -> {op};')
                else:
                    lit = f"lit{i}_{id(a) % 10007}"
                    out.append(f'  {lit} [shape=plaintext, label="{a.value!r}"]; {lit} -> {op};')
            out.append(f'  "{e.out.name}" [shape=ellipse, label="{e.out.name}\\n{e.out.type_text()}"];')
            out.append(f'  {op} -> "{e.out.name}";')
        for k, v in enumerate(self.outputs):
            out.append(f'  out{k} [shape=doublecircle, label="out{k}"]; "{v!r}" -> out{k};')
        out.append("}")
        return "\n".join(out)

    def validate(self) -> None:
        """Check that every operand is defined before use and names are unique."""
        defined = {v.name for v in self.inputs}
        if len(defined) != len(self.inputs):
            raise ValueError(f"{self.name}: duplicate input names")
        for e in self.entries:
            for a in e.ins:
                if isinstance(a, Var) and a.name not in defined:
                    raise ValueError(f"{self.name}: {e} uses {a.name} before it is defined")
            if e.out.name in defined:
                raise ValueError(f"{self.name}: {e.out.name} is defined twice")
            defined.add(e.out.name)
        for a in self.outputs:
            if isinstance(a, Var) and a.name not in defined:
                raise ValueError(f"{self.name}: output {a.name} is not defined")


class Builder:
    """Appends entries to a list under construction; the only way rules create values.

    Primitive rules call `b.bind(prim, *operands, **params)` (or `b.sin(x)`-style
    sugar resolved through the registry) and get a new Var back; they never
    compute numbers.
    """

    def __init__(self, registry: dict, used_names: set | None = None, prefix: str = "v"):
        self.registry = registry
        self.entries: list[Entry] = []
        self.used = used_names if used_names is not None else set()
        self.prefix = prefix
        self.counter = 0
        self.suffixes: dict = {}          # hint -> last suffix tried (keeps fresh() linear)
        self.loc: str | None = None
        self.sweep = "forward"
        self.hint: str | None = None     # names unnamed results `hint`, `hint_2`… when set

    def fresh(self, hint: str | None = None) -> str:
        """A new unique name: `hint` if free, else `hint_2`…, or `v1`, `v2`… without a hint."""
        used = self.used
        if hint is not None:
            if hint not in used:            # (the common case, as below)
                used.add(hint)
                return hint
            name, k = hint, self.suffixes.get(hint, 1)
            while name in used:
                k += 1
                name = f"{hint}_{k}"
            self.suffixes[hint] = k
        else:
            size = len(used)
            while True:
                self.counter += 1
                name = f"{self.prefix}{self.counter}"
                used.add(name)
                if len(used) > size:        # (it was not used: one look-up, not two)
                    return name
        used.add(name)
        return name

    def rename(self, var: Var, name: str) -> None:
        """Give a Var created by this builder a more telling (unique) name."""
        self.used.discard(var.name)
        var.name = self.fresh(name)

    def bind(self, prim, *operands, name: str | None = None, **params):
        for a in operands:
            if type(a) is not Var and type(a) is not Literal:
                operands = tuple(map(as_operand, operands))
                break
        if prim.normalize is not None:
            params = prim.normalize(operands, params)
        dtype, shape = prim.shape_rule(*operands, **params)
        return self.append(prim, operands, params, dtype, shape, name)

    def append(self, prim, operands: tuple, params: dict, dtype: str, shape: tuple,
               name: str | None = None) -> Var:
        """`bind` with the shape rule's result given (operands and params as `bind` makes
        them): a new entry and its Var."""
        if name is None:
            name = self.hint
        if name is None or name in self.used:
            name = self.fresh(name)
        else:                               # (`fresh`'s common case, without the call)
            self.used.add(name)
        out = Var(name, dtype, shape)
        self.entries.append(Entry(out, prim, operands, params, self.loc, False, self.sweep))
        return out

    @classmethod
    def add_shorthands(cls, names) -> None:
        """Make `b.<name>(...)` mean `b.bind(registry[name], ...)` for these primitive names
        (class attributes, not `__getattr__`, which would slow down every attribute read)."""
        for name in names:
            if not hasattr(cls, name):
                setattr(cls, name, _Shorthand(name))


class _Shorthand:
    """`b.sin`: `functools.partial(b.bind, b.registry["sin"])`, made once per builder."""

    def __init__(self, name: str):
        self.name = name

    def __get__(self, builder, owner=None):
        if builder is None:
            return self
        prim = builder.registry.get(self.name)
        if prim is None:
            raise AttributeError(self.name)
        bound = builder.__dict__[self.name] = functools.partial(builder.bind, prim)
        return bound


def as_operand(a):
    """Vars and Literals pass through; Python and NumPy scalars become Literals."""
    if isinstance(a, (Var, Literal)):
        return a
    if type(a) is float:                # (the common case, as below)
        return Literal(a)
    if isinstance(a, (bool, np.bool_)):
        return Literal(bool(a))
    if isinstance(a, (int, np.integer)):
        return Literal(int(a))
    if isinstance(a, (float, np.floating)):
        return Literal(float(a))
    raise TypeError(f"not an operand: {a!r}")
