"""The long-trace graph of the long-traces issue, and a generic Numba interpreter for it.

``loss(n_ops)`` is a user function that walks a scalar graph of ``n_ops`` operations over
``N_INPUTS`` inputs, cycling through softplus (``log1p(exp(a))``), the mean of four earlier
nodes, the product of a node and an input, and the first output of a 4-way softmax made
stable with ``np.maximum``; each operation reads nodes a fixed distance back
(``DISTANCES``), and the loss is the sum of all nodes. Traced, it is a list that is nearly
periodic with shifting offsets — what long unrolled loops look like.

``interpreter(n_ops)`` is the reference for both axes (first result and per call): the
same graph encoded as index arrays and run, forward and adjoint, by one small
``@numba.njit`` kernel that is compiled once (and cached on disk), whatever ``n_ops`` is.
``loss_only(n_ops)`` runs its forward sweep alone: the loss without the gradient.
"""

import math

import numba
import numpy as np

N_INPUTS = 100
DISTANCES = (1, 3, 7, 20)      # operand k of an operation reads the node DISTANCES[k] back
SOFTPLUS, MEAN4, PRODUCT, SOFTMAX = range(4)


def encode(n_ops):
    """``(kind, operands, input_index)``: per operation its kind, the node numbers it reads
    (nodes 0..N_INPUTS-1 are the inputs) and, for products, the input it multiplies by."""
    kinds = np.arange(n_ops, dtype=np.int64) % 4
    node = N_INPUTS + np.arange(n_ops, dtype=np.int64)
    operands = node[:, None] - np.array(DISTANCES, dtype=np.int64)[None, :]
    input_index = (np.arange(n_ops, dtype=np.int64) // 4) % N_INPUTS
    return kinds, operands, input_index


def loss(n_ops):
    """The user function for ``n_ops`` operations: ``f(x)`` with ``x`` of length N_INPUTS."""
    kinds, operands, input_index = (a.tolist() for a in encode(n_ops))

    def graph_loss(x):
        nodes = [x[i] for i in range(N_INPUTS)]
        for kind, (i, j, k, m), c in zip(kinds, operands, input_index):
            a, b, c2, d = nodes[i], nodes[j], nodes[k], nodes[m]
            if kind == SOFTPLUS:
                v = math.log1p(math.exp(a))
            elif kind == MEAN4:
                v = (a + b + c2 + d) * 0.25
            elif kind == PRODUCT:
                v = a * x[c]
            else:
                top = np.maximum(np.maximum(a, b), np.maximum(c2, d))
                ea, eb, ec, ed = (math.exp(t - top) for t in (a, b, c2, d))
                v = ea / (ea + eb + ec + ed)
            nodes.append(v)
        return sum(nodes[N_INPUTS:])

    graph_loss.__name__ = f"graph_loss_{n_ops}"
    return graph_loss


@numba.njit(cache=True)
def _forward_sweep(kinds, operands, input_index, x, v):
    """Fill ``v`` (inputs, then nodes) and return the loss, the sum of the nodes."""
    n_in, n_ops = x.shape[0], kinds.shape[0]
    v[:n_in] = x
    total = 0.0
    for t in range(n_ops):
        a, b, c, d = (v[operands[t, 0]], v[operands[t, 1]], v[operands[t, 2]],
                      v[operands[t, 3]])
        kind = kinds[t]
        if kind == 0:
            r = math.log1p(math.exp(a))
        elif kind == 1:
            r = (a + b + c + d) * 0.25
        elif kind == 2:
            r = a * x[input_index[t]]
        else:
            top = max(max(a, b), max(c, d))
            r = math.exp(a - top) / (math.exp(a - top) + math.exp(b - top)
                                     + math.exp(c - top) + math.exp(d - top))
        v[n_in + t] = r
        total += r
    return total


@numba.njit(cache=True)
def _loss(kinds, operands, input_index, x):
    """The forward sweep alone: the loss without its gradient."""
    return _forward_sweep(kinds, operands, input_index, x,
                          np.empty(x.shape[0] + kinds.shape[0]))


@numba.njit(cache=True)
def _run(kinds, operands, input_index, x):
    """Forward sweep over the encoded graph, then the adjoint sweep: (loss, gradient)."""
    n_in, n_ops = x.shape[0], kinds.shape[0]
    v = np.empty(n_in + n_ops)
    total = _forward_sweep(kinds, operands, input_index, x, v)
    bar = np.zeros(n_in + n_ops)
    bar[n_in:] = 1.0
    for t in range(n_ops - 1, -1, -1):
        g = bar[n_in + t]
        i, j, k, m = operands[t, 0], operands[t, 1], operands[t, 2], operands[t, 3]
        kind = kinds[t]
        if kind == 0:
            bar[i] += g / (1.0 + math.exp(-v[i]))
        elif kind == 1:
            bar[i] += 0.25 * g
            bar[j] += 0.25 * g
            bar[k] += 0.25 * g
            bar[m] += 0.25 * g
        elif kind == 2:
            bar[i] += g * x[input_index[t]]
            bar[input_index[t]] += g * v[i]
        else:
            s = v[n_in + t]             # softmax_0; d s / d a_0 = s (1 - s), d s / d a_j = -s s_j
            top = max(max(v[i], v[j]), max(v[k], v[m]))
            norm = (math.exp(v[i] - top) + math.exp(v[j] - top) + math.exp(v[k] - top)
                    + math.exp(v[m] - top))
            bar[i] += g * s * (1.0 - s)
            bar[j] -= g * s * math.exp(v[j] - top) / norm
            bar[k] -= g * s * math.exp(v[k] - top) / norm
            bar[m] -= g * s * math.exp(v[m] - top) / norm
    return total, bar[:n_in].copy()


def interpreter(n_ops):
    """The hand-written reference: ``x -> (loss, gradient)`` by the generic kernel."""
    kinds, operands, input_index = encode(n_ops)
    return lambda x: _run(kinds, operands, input_index, x)


def loss_only(n_ops):
    """``x -> loss`` by the interpreter's forward sweep alone: a floor for any gradient.
    Each node reads the one before it, so the sweep is one chain of dependent operations
    (``exp`` into ``log1p``, the softmax's ``exp`` into a division) whose latency bounds
    any implementation, compiled or interpreted."""
    kinds, operands, input_index = encode(n_ops)
    return lambda x: _loss(kinds, operands, input_index, x)


def make_args(n_ops, rng):
    return (rng.uniform(-1.0, 1.0, N_INPUTS),)
