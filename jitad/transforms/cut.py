"""Cutting a list at the gathers that read the differentiated inputs: Wengert list -> list.

Residuals written with gathers (`cams[obs[:, 0]]`, `X[obs[:, 1]]`) read every parameter in
many rows. Cut there, the gathered values become inputs of a *local* list: its Jacobian wrt
those values (and the inputs read directly) has, per row, only the row's own gathered
elements, so its rows fall into few colours. `reverse_products` is the list computing one
vector-Jacobian product of the local list per call; `sparse.SparseJacobian` maps the
gathered columns back to the inputs' columns (the index values route them).

A gather is cut when its base is a *selection* of the inputs' elements (slices, reshapes,
transposes, broadcasts, concatenations, other gathers): then each gathered element is one
input element (or a constant), with derivative 1, and the routing is exact.
"""
import numpy as np

from ..primitives import REGISTRY
from ..wengert import Builder, Var, WengertList
from .reverse import value_and_grad
from .simplify import simplify

# Every output element is one element of operand 0 (for concatenate: of one operand).
_SELECTIONS = {"getitem", "gather", "reshape", "reshape_like", "expand_dims", "transpose",
               "broadcast_like", "concatenate"}


def gathers_to_cut(wengert: WengertList, wrt: list) -> list:
    """The `gather` entries whose base is a selection of elements of the inputs `wrt`."""
    depends = {wengert.inputs[i].name for i in wrt}        # differentiably
    selected = set(depends)
    found = []
    for e in wengert.entries:
        if e.prim.nondifferentiable:
            continue
        read = [k for k, a in enumerate(e.ins) if isinstance(a, Var) and a.name in depends]
        if not read:
            continue
        depends.add(e.out.name)
        if e.prim.name in _SELECTIONS and all(e.ins[k].name in selected for k in read) and \
                (e.prim.name == "concatenate" or read == [0]):
            selected.add(e.out.name)
            if e.prim.name == "gather":
                found.append(e)
    return found


def local_list(wengert: WengertList, wrt: list, cuts: list) -> tuple:
    """(the list with each cut gather's result an input after the others, the differentiated
    inputs: `wrt` then the cut results). Every other entry is kept, unused ones included."""
    cut = {id(e) for e in cuts}
    inputs = list(wengert.inputs) + [e.out for e in cuts]
    local = WengertList(wengert.name, inputs, [e for e in wengert.entries if id(e) not in cut],
                        list(wengert.outputs), wengert.loc)
    return local, list(wrt) + list(range(len(wengert.inputs), len(inputs)))


def output_parts(wengert: WengertList) -> list:
    """(value, first raveled output element) of each operand of the output when it is a
    concatenation along axis 0 (each operand's elements are then one stretch of the
    output's), else of the output itself."""
    (out,) = wengert.outputs
    entry = next((e for e in reversed(wengert.entries) if e.out is out), None)
    if entry is None or entry.prim.name != "concatenate" or entry.params["axis"] != 0 or \
            not all(isinstance(a, Var) for a in entry.ins):
        return [(out, 0)]
    starts = np.cumsum([0] + [int(np.prod(a.shape)) for a in entry.ins])
    return list(zip(entry.ins, starts.tolist()))


def reverse_products(wengert: WengertList, wrt: list, cuts: list, seeded: list,
                     name: str) -> WengertList:
    """The list `(inputs…, cotangents…) -> sum_k cotangent_k^T J_local[part k]`, one output
    per local input: the gathers run as traced, then the local list's reverse sweep (which
    stops at them) from the values `seeded` (output parts, see `output_parts`), one
    cotangent input each; parts not seeded cost nothing."""
    local, local_wrt = local_list(wengert, wrt, cuts)
    used = {v.name for v in local.inputs} | {e.out.name for e in local.entries}
    b = Builder(REGISTRY, used_names=used, prefix="t")
    b.entries = list(local.entries)
    cotangents, total = [], None
    for v in seeded:
        cotangents.append(Var(b.fresh(f"{v.name}_ct"), "float64", v.shape))
        term = b.mul(v, cotangents[-1])
        if v.shape != ():
            term = b.sum(term, axis=None, keepdims=False)
        total = term if total is None else b.add(total, term)
    products = value_and_grad(WengertList(name, local.inputs, b.entries, [total]), local_wrt)
    assert products.entries[:len(local.entries)] == local.entries
    return simplify(WengertList(name, list(wengert.inputs) + cotangents,
                                list(wengert.entries) + products.entries[len(local.entries):],
                                products.outputs[1:1 + len(local_wrt)], loc=wengert.loc))
