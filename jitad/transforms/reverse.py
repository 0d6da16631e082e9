"""Reverse mode: a Wengert list -> a new list computing the value and the adjoints.

The new list is the forward sweep followed by an adjoint sweep made of the same
primitives, built by each primitive's VJP rule. Adjoints accumulate over every
path, `v̄_i = Σ_j v̄_j ∂v_j/∂v_i`; only values that depend on a differentiated
input and reach the output get adjoints (activity analysis).
"""
from .. import collector
from ..primitives import REGISTRY
from ..wengert import Builder, Entry, Literal, Var, WengertList


def active_names(wengert: WengertList, wrt: list) -> set:
    """Names of values that depend differentiably on the inputs `wrt` and reach an output."""
    depends = {wengert.inputs[i].name for i in wrt}
    for e in wengert.entries:
        if not e.prim.nondifferentiable:
            for a in e.ins:
                if type(a) is Var and a.name in depends:
                    depends.add(e.out.name)
                    break
    reaches = {a.name for a in wengert.outputs if isinstance(a, Var)}
    for e in reversed(wengert.entries):
        if e.out.name in reaches:
            for a in e.ins:
                if type(a) is Var:
                    reaches.add(a.name)
    return depends & reaches


@collector.paused
def value_and_grad(wengert: WengertList, wrt: list) -> WengertList:
    """The list computing `(value, grad_1, …)` for the scalar output and the inputs `wrt`
    (outputs after the first are auxiliary: returned after the gradients, not differentiated)."""
    active = active_names(wengert, wrt)
    used = {v.name for v in wengert.inputs} | {e.out.name for e in wengert.entries}
    b = _AdjointBuilder(REGISTRY, used_names=used, prefix="t")
    b.entries = list(wengert.entries)
    b.sweep = "reverse"
    output, *aux = wengert.outputs          # aux outputs (has_aux) are not differentiated
    adjoint: dict = {}
    if isinstance(output, Var) and output.name in active:
        adjoint[output.name] = Literal(1.0)
    entries = b.entries
    for entry in reversed(wengert.entries):
        out = entry.out.name
        g = adjoint.get(out)
        if g is None or out not in active or entry.prim.vjp is None:
            continue
        ins = entry.ins
        b.loc = f"{out} = {entry.prim.name} " + \
            " ".join([a.name if type(a) is Var else repr(a) for a in ins]) + \
            (f"  ({entry.loc})" if entry.loc else "")
        b.hint = f"d{out}"
        start = len(entries)
        contributions = entry.prim.vjp(b, g, entry.out, *ins, **entry.params)
        created = {id(e.out): e for e in entries[start:]}       # Var -> its entry
        for operand, contribution in zip(ins, contributions):
            if type(operand) is Var and contribution is not None and operand.name in active:
                _accumulate(b, adjoint, operand, contribution, out, created)
    b.hint = None
    grads = []
    for i in wrt:
        x = wengert.inputs[i]
        g = adjoint.get(x.name)
        if g is None:
            g = Literal(0.0) if x.shape == () else b.full_like(x, 0.0, name=f"{x.name}_bar")
        grads.append(g)
    return WengertList(f"{wengert.name}_value_and_grad", list(wengert.inputs),
                       keep_masked_zeros(b, b.entries), [output] + grads + aux,
                       loc=wengert.loc, out_tree=len(wrt))


class _AdjointBuilder(Builder):
    """The adjoint sweep's builder: a product with a literal 1 (the cotangent of a sum's
    terms is 1.0, so every term's chain rule starts with one) is its other operand, without
    an entry, as `simplify` would make it (same dtype and shape only)."""

    def bind(self, prim, *operands, name=None, **params):
        if prim is _MUL and len(operands) == 2:
            for one, other in (operands, operands[::-1]):
                if type(one) is Literal and one.value == 1 and type(one.value) is not bool \
                        and (type(other) is Var and other.dtype == "float64"
                             or type(other) is Literal and type(other.value) is float):
                    return other
        return _bind(self, prim, *operands, name=name, **params)


_MUL = REGISTRY["mul"]
_ADD = REGISTRY["add"]
_bind = Builder.bind


def _accumulate(b, adjoint, var, contribution, via, created):
    """Add `contribution` into the adjoint of `var`, naming values after their path."""
    name = f"{var.name}_bar"
    previous = adjoint.get(var.name)
    if type(contribution) is Var and id(contribution) in created:
        sparse = _is_sparse_update(contribution, created)
        if previous is not None and sparse:
            update = created[id(contribution)]
            adjoint[var.name] = _redirect_sparse_update(b, previous, update, name)
            _drop_unread(b, (update, created[id(update.ins[0])]), created)
            return
        if previous is None and sparse:
            b.rename(created[id(contribution)].ins[0], name)   # the zeros it starts from
        b.rename(contribution, name if previous is None else f"{name}_{via}")
    if previous is None:
        adjoint[var.name] = contribution
        return
    b.hint = None
    total = _bind(b, _ADD, previous, contribution, name=name)    # (no product: Builder's bind)
    b.entries[-1].accumulate = True
    adjoint[var.name] = total


def _is_sparse_update(contribution, created) -> bool:
    """Is `contribution` an index_add/scatter_add into zeros made by the same rule?
    (`created`: id of each Var the rule made -> its entry.)"""
    entry = created[id(contribution)]
    if entry.prim.name not in ("index_add", "scatter_add"):
        return False
    base = entry.ins[0]
    return isinstance(base, Var) and id(base) in created and \
        created[id(base)].prim.name == "full_like"


def _redirect_sparse_update(b, accumulator, entry, name):
    """Apply the update `entry` onto the existing adjoint instead of zeros (no dense add)."""
    b.hint = None
    total = b.bind(entry.prim, accumulator, *entry.ins[1:], name=name, **entry.params)
    b.entries[-1].accumulate = True
    return total


def _drop_unread(b, dropped, created) -> None:
    """Remove the entries `dropped` (made by the rule that made `created`: the update of
    zeros a redirected update replaces) if no other entry the rule made reads them. They
    are near the end of the list: each removal moves the few entries after it."""
    names = {e.out.name for e in dropped}
    for e in created.values():
        if e.out.name not in names and any(type(a) is Var and a.name in names for a in e.ins):
            return
    for e in dropped:
        k = len(b.entries) - 1
        while b.entries[k] is not e:
            k -= 1
        del b.entries[k]


def keep_masked_zeros(b, entries) -> list:
    """The adjoint sweep with `mul(select(c, g, 0), d)` as `select(c, mul(g, d), 0)` (also
    `mul(d, …)`, `div(…, d)` and `neg`), so that a cotangent a select zeroes stays 0 where
    the other factor is inf or NaN: the gradient of `np.where(x > 0, np.sqrt(x), 0.0)` at
    x < 0 is 0 (the function is locally constant there), not 0 * inf = NaN. A sum of such
    cotangents stays 0 where every term is zeroed (several selects of one value), and a
    select of a zeroed cotangent keeps both zeros (nested selects, `np.nan_to_num`).
    Forward-sweep entries are left alone (their values are the user's).

    A zeroed cotangent is recorded as (alternatives, cotangent): it is `cotangent` where
    the conditions of one alternative all keep it (each alternative a tuple of
    (condition, position of the zero) pairs), else 0."""
    select = REGISTRY["select"]
    masked: dict = {}       # name -> (alternatives, cotangent)
    out = []
    for e in entries:
        name = e.prim.name
        if e.sweep != "reverse":
            out.append(e)
            continue
        if name == "select":
            for zero in (1, 2):
                if isinstance(e.ins[zero], Literal) and e.ins[zero].value == 0:
                    kept = e.ins[3 - zero]
                    if type(kept) is Var and kept.name in masked and kept.shape == e.out.shape:
                        inner_alternatives, cotangent = masked[kept.name]   # (nested)
                        masked[e.out.name] = (tuple(((e.ins[0], zero),) + both
                                                    for both in inner_alternatives), cotangent)
                    else:
                        masked[e.out.name] = ((((e.ins[0], zero),),), kept)
        if name == "add" and e.out.dtype == "float64" and all(
                type(a) is Var and a.name in masked and a.shape == e.out.shape for a in e.ins):
            out.append(e)       # (a term that is zeroed is 0: the sum is the cotangent)
            alternatives = tuple(dict.fromkeys(masked[e.ins[0].name][0] +
                                               masked[e.ins[1].name][0]))
            single = [repr(both[0][0]) for both in alternatives if len(both) == 1]
            if len(set(single)) == len(single):   # (else c and not c: never zeroed)
                masked[e.out.name] = (alternatives, e.out)
            continue
        if not masked or name not in ("mul", "div", "neg"):
            out.append(e)
            continue
        k = None
        if e.out.dtype == "float64":
            for position in ((0, 1) if name == "mul" else (0,)):
                a = e.ins[position]
                if type(a) is Var and a.name in masked:
                    k = position
                    break
        if k is None:
            out.append(e)
            continue
        alternatives, cotangent = masked[e.ins[k].name]
        ins = e.ins[:k] + (cotangent,) + e.ins[k + 1:]
        dtype, shape = e.prim.shape_rule(*ins, **e.params)
        inner = Var(b.fresh(f"{e.out.name}_kept"), dtype, shape)
        out.append(Entry(inner, e.prim, ins, e.params, e.loc, sweep=e.sweep))
        value = Literal(0.0)            # the innermost select's zero: no term kept
        for i in range(len(alternatives) - 1, -1, -1):
            kept = inner                # kept where every condition of alternative i keeps it
            for j in range(len(alternatives[i]) - 1, -1, -1):
                condition, zero = alternatives[i][j]
                select_ins = (condition, kept, value) if zero == 2 else (condition, value, kept)
                last = i == 0 and j == 0
                target = e.out if last else \
                    Var(b.fresh(f"{e.out.name}_kept"), *select.shape_rule(*select_ins))
                out.append(Entry(target, select, select_ins, {}, e.loc,
                                 e.accumulate and last, e.sweep))
                kept = target
            value = kept
        masked[e.out.name] = (alternatives, inner)
    return out
