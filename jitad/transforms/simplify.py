"""Simplification passes: Wengert list -> an equivalent, shorter Wengert list.

Constant folding, identity removal (`x*1`, `x+0`, `x**1`, `--x`, `x[:, :]`, a fill's shape
read from another fill), common-subexpression elimination and dead-code elimination. Run on
traced and on differentiated lists.
"""
from .. import collector
from ..primitives import REGISTRY
from ..wengert import Literal, Var, WengertList


@collector.paused
def simplify(wengert: WengertList) -> WengertList:
    """All passes, in order; returns a new list (entries are reused, not mutated)."""
    return eliminate_dead_code(fold_and_share(wengert))


def _is(a, value) -> bool:
    return isinstance(a, Literal) and not isinstance(a.value, bool) and a.value == value


_IDENTITIES = ("add", "sub", "mul", "div", "integer_pow")     # prims `_identity` may reduce


def _identity(e):
    """The operand an entry reduces to (`x*1 -> x`), or None."""
    name, ins = e.prim.name, e.ins
    same_shape = lambda a: a.shape == e.out.shape and a.dtype == e.out.dtype  # noqa: E731
    if name == "add":
        for a, b in ((ins[0], ins[1]), (ins[1], ins[0])):
            if _is(b, 0) and same_shape(a):
                return a
    elif name == "sub" and _is(ins[1], 0) and same_shape(ins[0]):
        return ins[0]
    elif name == "mul":
        for a, b in ((ins[0], ins[1]), (ins[1], ins[0])):
            if _is(b, 1) and same_shape(a):
                return a
    elif name == "div" and _is(ins[1], 1) and same_shape(ins[0]):
        return ins[0]
    elif name == "integer_pow" and e.params["n"] == 1:
        return ins[0]
    return None


def _negation(e):
    """`x * -1` and `-1 * x` become `neg x`."""
    if e.prim.name == "mul":
        for a, b in ((e.ins[0], e.ins[1]), (e.ins[1], e.ins[0])):
            if _is(b, -1) and a.shape == e.out.shape and a.dtype == e.out.dtype:
                return type(e)(e.out, REGISTRY["neg"], (a,), {}, e.loc, e.accumulate, e.sweep)
    return e


def _fold(e):
    """A Literal for an entry whose operands are all literals and whose result is a scalar."""
    if e.prim.effect or e.out.shape != ():
        return None
    for a in e.ins:
        if not isinstance(a, Literal):
            return None
    value = e.prim.impl(*(a.value for a in e.ins), **e.params)
    value = value.item() if hasattr(value, "item") else value
    if e.out.dtype == "float64":
        value = float(value)
    return Literal(value)


def _whole_view(e):
    """The array `x[:, :]` (full slices only, as `x[:, None]` traces) is a view of: `x`
    (the same memory, so in-place updates alias it as before), or None."""
    x = e.ins[0]
    if type(x) is Var and x.shape == e.out.shape and x.dtype == e.out.dtype and all(
            item == ("slice", None, None, None) for item in e.params["index"]):
        return x
    return None


def fold_and_share(wengert: WengertList) -> WengertList:
    """Constant folding, identity removal and CSE in one forward walk."""
    replace: dict = {}          # name -> operand that now stands for it
    seen: dict = {}             # (prim, operands, params) -> Var
    negations: dict = {}        # name of neg(x) -> x
    shape_roots: dict = {}      # name of full_like(b, v) -> b (what its shape comes from)
    entries = []
    for e in wengert.entries:
        ins = e.ins
        if replace:
            for a in ins:
                if type(a) is Var and a.name in replace:
                    ins = tuple([replace.get(a.name, a) if type(a) is Var else a for a in ins])
                    e = type(e)(e.out, e.prim, ins, e.params, e.loc, e.accumulate, e.sweep)
                    break
        name = e.prim.name
        if name == "neg" and type(ins[0]) is Var and ins[0].name in negations:
            replace[e.out.name] = negations[ins[0].name]
            continue
        if name == "mul" and (type(ins[0]) is Literal or type(ins[1]) is Literal):
            e = _negation(e)
            name = e.prim.name
        elif name == "full_like" and type(ins[0]) is Var:
            if ins[0].name in shape_roots:      # full_like(full_like(b, u), v) = full_like(b, v)
                ins = (shape_roots[ins[0].name],) + ins[1:]
                e = type(e)(e.out, e.prim, ins, e.params, e.loc, e.accumulate, e.sweep)
            shape_roots[e.out.name] = ins[0]
        literal = not ins           # (identities need a literal operand, folding only those)
        for a in ins:
            if type(a) is Literal:
                literal = True
                break
        substitute = None
        if (literal or name == "integer_pow") and name in _IDENTITIES and not e.prim.effect:
            substitute = _identity(e)
        if substitute is None and literal:
            substitute = _fold(e)
        if substitute is None and name == "getitem":
            substitute = _whole_view(e)
        if substitute is not None:
            replace[e.out.name] = substitute
            continue
        if not e.prim.effect:
            key = (name, tuple([a.name if type(a) is Var else ("lit", repr(a.value))
                                for a in ins]), _freeze(e.params) if e.params else ())
            known = seen.get(key)
            if known is not None:
                replace[e.out.name] = known
                continue
            seen[key] = e.out
        if name == "neg" and type(ins[0]) is Var:
            negations[e.out.name] = ins[0]
        entries.append(e)
    outputs = [replace.get(a.name, a) if isinstance(a, Var) else a for a in wengert.outputs]
    return _with(wengert, entries, outputs)


def _freeze(params: dict):
    return tuple(sorted(params.items()))


def eliminate_dead_code(wengert: WengertList) -> WengertList:
    """Drop entries whose results no output (and no guard) needs."""
    live = {a.name for a in wengert.outputs if isinstance(a, Var)}
    kept = []
    for e in reversed(wengert.entries):
        if e.out.name in live or e.prim.effect:
            kept.append(e)
            for a in e.ins:
                if type(a) is Var:
                    live.add(a.name)
    kept.reverse()
    return _with(wengert, kept, list(wengert.outputs))


def _with(wengert, entries, outputs):
    return WengertList(wengert.name, wengert.inputs, entries, outputs, wengert.loc,
                       wengert.out_tree)
