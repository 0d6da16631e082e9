"""Codegen: Wengert list -> Python source text (one primitive per line).

The text is plain Python + NumPy (no Numba, no data): it runs as ordinary Python
and the compile step hands it to Numba. Array buffers that are owned and dead
afterwards are updated in place (`x_bar += …`, `x_bar[3] += …`) instead of
copied; scalar adjoint accumulations reuse their name (`x_bar = x_bar + x_bar_v2`).
"""
from __future__ import annotations

import keyword

from . import runtime
from .primitives.core import operand_text
from .wengert import Var, WengertList

RESERVED = {"np", "math", "GuardFailed", *runtime.__all__}
COMMENT_COLUMN = 44


def identifier(name: str) -> str:
    """A name usable in generated source (user names that clash get a trailing `_`)."""
    name = "".join(c if c.isalnum() or c == "_" else "_" for c in name) or "f"
    if name[0].isdigit() or keyword.iskeyword(name) or name in RESERVED:
        name += "_"
    return name


class _Storage:
    """Liveness and buffer ownership, to decide which updates may happen in place."""

    def __init__(self, wengert: WengertList):
        n = len(wengert.entries)
        self.last_use: dict = {}
        for i, e in enumerate(wengert.entries):
            for a in e.ins:
                if isinstance(a, Var):
                    self.last_use[a.name] = i
        for a in wengert.outputs:
            if isinstance(a, Var):
                self.last_use[a.name] = n
        self.root: dict = {v.name: v.name for v in wengert.inputs}
        self.owned: dict = {v.name: False for v in wengert.inputs}
        self.members: dict = {v.name: [v.name] for v in wengert.inputs}
        self.views: set = set()

    def record(self, entry, in_place: bool) -> None:
        out, first = entry.out.name, entry.ins[0] if entry.ins else None
        if (in_place or entry.prim.view) and isinstance(first, Var):
            root = self.root[first.name]
            if not in_place:
                self.views.add(out)
        else:
            root = out
            self.owned[root] = entry.out.ndim > 0
            self.members[root] = []
        self.root[out] = root
        self.members[root].append(out)

    def may_update_in_place(self, entry, index: int) -> bool:
        target = entry.ins[0] if entry.ins else None
        if entry.prim.inplace is None or not isinstance(target, Var) or target.ndim == 0:
            return False
        if target.shape != entry.out.shape or target.dtype != entry.out.dtype:
            return False
        root = self.root[target.name]
        if not self.owned.get(root) or target.name in self.views:
            return False
        others = [a for a in entry.ins[1:] if isinstance(a, Var) and self.root.get(a.name) == root]
        return not others and all(self.last_use.get(m, -1) <= index for m in self.members[root])

    def owns(self, name: str) -> bool:
        return self.owned.get(self.root.get(name), False) and name not in self.views


def _comment(line: str, text: str | None) -> str:
    return f"{line.ljust(COMMENT_COLUMN)}  # {text}" if text else line


def straight_line(wengert: WengertList, fn_name: str, docstring: str) -> str:
    """Print the list as one straight-line function (the default code shape)."""
    storage = _Storage(wengert)
    printed = {v.name: identifier(v.name) for v in wengert.inputs}

    def text(a):
        return printed[a.name] if isinstance(a, Var) else operand_text(a)

    body, sweep, adjoint_names = [], None, set()
    for i, e in enumerate(wengert.entries):
        if e.sweep != sweep and any(x.sweep == "reverse" for x in wengert.entries):
            body.append(f"# {e.sweep} sweep")
            sweep = e.sweep
        in_place = storage.may_update_in_place(e, i)
        storage.record(e, in_place)
        target = e.ins[0] if e.ins else None
        reuse = in_place or (e.accumulate and isinstance(target, Var) and e.out.ndim == 0
                             and target.name in adjoint_names
                             and storage.last_use.get(target.name, -1) <= i)
        if e.sweep == "reverse":
            adjoint_names.add(e.out.name)
        out_name = printed[target.name] if reuse else identifier(e.out.name)
        printed[e.out.name] = out_name
        operands = [Var(text(a), a.dtype, a.shape) if isinstance(a, Var) else a for a in e.ins]
        lines = e.prim.lines(out_name, operands, e.params, in_place=in_place)
        body.append(_comment(lines[0], e.loc))
        body.extend(lines[1:])
    results = []
    for a in wengert.outputs:
        if isinstance(a, Var) and a.ndim > 0 and not storage.owns(a.name):
            body.append(f"{text(a)}_out = np.copy({text(a)})")    # never return a view or input
            printed[a.name] = f"{text(a)}_out"
        results.append(text(a))
    if wengert.out_tree is not None:
        k = wengert.out_tree
        returned = f"{results[0]}, ({', '.join(results[1:1 + k])}{',' if k == 1 else ''})"
    else:
        returned = ", ".join(results)
    body.append(f"return {returned}")
    params = ", ".join(printed[v.name] for v in wengert.inputs)
    lines = [f"def {fn_name}({params}):", f'    """{docstring}"""']
    lines += ["    " + line.replace("\n", "\n    ") for line in body]
    return "\n".join(lines) + "\n"


CODE_SHAPES = {"straight": straight_line}


def generate(wengert: WengertList, fn_name: str, docstring: str, shape: str = "straight") -> str:
    """Module source for `wengert`: imports (only those used) and the function."""
    function = CODE_SHAPES[shape](wengert, fn_name, docstring)
    imports = []
    if "np." in function:
        imports.append("import numpy as np")
    helpers = [h for h in runtime.__all__ if f"{h}(" in function]
    if helpers:
        imports.append(f"from jitad.runtime import {', '.join(helpers)}")
    if "GuardFailed" in function:
        imports.append("from jitad.errors import GuardFailed")
    header = '"""Generated by jitad: edits are overwritten."""\n'
    return header + "\n".join(imports) + ("\n\n\n" if imports else "\n\n") + function
