"""Forward mode: a Wengert list -> a list computing the value and one directional derivative.

Each input `x` in `wrt` gets a tangent input `x_dot`; each primitive's JVP rule
emits the tangent of its output from its operands' tangents.
"""
from ..primitives import REGISTRY
from ..wengert import Builder, Literal, Var, WengertList


def jvp(wengert: WengertList, wrt: list, tangent_inputs: list | None = None) -> WengertList:
    """The list `(inputs…, tangents of wrt…) -> (outputs…, tangents of the outputs…)`.

    With `tangent_inputs` (one input index per `wrt`), those inputs of the list already are
    the tangents (no inputs are added). Applied to a differentiated list it gives
    Hessian-vector products (forward over reverse).
    """
    used = {v.name for v in wengert.inputs} | {e.out.name for e in wengert.entries}
    b = Builder(REGISTRY, used_names=used, prefix="t")
    given, tangent_inputs = tangent_inputs, []
    tangent: dict = {}
    for k, i in enumerate(wrt):
        x = wengert.inputs[i]
        if given is not None:
            tangent[x.name] = wengert.inputs[given[k]]
            continue
        dot = Var(b.fresh(f"{x.name}_dot"), x.dtype, x.shape)
        tangent_inputs.append(dot)
        tangent[x.name] = dot
    for entry in wengert.entries:
        b.entries.append(entry)
        if entry.prim.nondifferentiable or entry.prim.jvp is None:
            continue
        dots = [tangent.get(a.name) if isinstance(a, Var) else None for a in entry.ins]
        if all(d is None for d in dots):
            continue
        b.loc = entry.loc
        b.hint = f"{entry.out.name}_dot_t"
        start = len(b.entries)
        result = entry.prim.jvp(b, entry.out, entry.ins, dots, **entry.params)
        _keep_reaching(b.entries, start, result)
        if result is not None:
            if isinstance(result, Var) and result.name.startswith(b.hint):
                b.rename(result, f"{entry.out.name}_dot")
            tangent[entry.out.name] = result
    out_dots = []
    for output in wengert.outputs:
        out_dot = tangent.get(output.name) if isinstance(output, Var) else None
        if out_dot is None:
            out_dot = Literal(0.0) if output.shape == () else b.full_like(output, 0.0)
        out_dots.append(out_dot)
    return WengertList(f"{wengert.name}_jvp", list(wengert.inputs) + tangent_inputs, b.entries,
                       list(wengert.outputs) + out_dots, loc=wengert.loc)


def _keep_reaching(entries: list, start: int, result) -> None:
    """Drop the entries a rule appended after `start` that do not reach its `result` (rules
    written with a chain rule per operand compute every operand's term for each tangent)."""
    added = len(entries) - start
    if added == 0 or added == 1 and entries[-1].out is result:
        return
    needed = {result.name} if isinstance(result, Var) else set()
    kept = []
    for e in reversed(entries[start:]):
        if e.out.name in needed:
            kept.append(e)
            needed.update(a.name for a in e.ins if isinstance(a, Var))
    if len(kept) < len(entries) - start:
        entries[start:] = kept[::-1]
