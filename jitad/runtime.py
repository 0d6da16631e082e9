"""Helpers that generated source calls where NumPy (as Numba supports it) has no direct form.

Plain Python and NumPy in the subset Numba compiles: generated code runs as plain
Python with these, and the compile step hands Numba compiled versions of them.
The `check*` helpers are the run-time checks of what a specialization assumed
(shapes it does not fix, index bounds); they raise NumPy's exception classes.
"""
import numpy as np

from .errors import GuardFailed

__all__ = ["check_broadcast", "check_sizes", "check_slice", "checked_index", "cofactor",
           "checked_indices", "max_rows", "min_rows", "prod_rows", "scatter_add",
           "scatter_set", "solve_triangular"]


def _shape_text(shape) -> str:
    return "(" + ",".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


# Raised from compiled code with the numbers only: Numba builds the exception (and its
# message) when it reaches Python, so the helpers compile no string formatting.
class BroadcastError(ValueError):
    """NumPy's ValueError for operands whose shapes do not broadcast."""

    def __init__(self, shape, other):
        super().__init__("operands could not be broadcast together with shapes "
                         f"{_shape_text(shape)} {_shape_text(other)}")


class SizeClassError(ValueError):
    """A slice whose size is in another class (0, 1, more) than when it was traced."""

    def __init__(self, axis, size, traced):
        super().__init__(f"a slice has size {size} on axis {axis} where this specialization "
                         f"was traced with size {traced}")


class IndexOutOfBounds(IndexError):
    """NumPy's IndexError for an index outside an axis."""

    def __init__(self, index, size, axis=0):
        super().__init__(f"index {index} is out of bounds for axis {axis} with size {size}")


def check_broadcast(shape, other) -> None:
    """Raise NumPy's ValueError unless an operand shaped `other` broadcasts to `shape`.

    Generated loops take their bounds from one operand and index the others with the
    same loop indices: sizes the specialization does not fix must be checked per call.
    """
    lead = len(shape) - len(other)
    for k in range(len(other)):
        if other[k] != 1 and other[k] != shape[lead + k]:
            raise BroadcastError(shape, other)


class ShapeChanged(ValueError):
    """An argument whose shape differs from the exact one its specialization was traced for
    (`shape` None: raised from compiled code, with constants only)."""

    def __init__(self, name, shape, traced):
        has = "another shape" if shape is None else f"shape {_shape_text(shape)}"
        super().__init__(f"{name} has {has}, but this specialization reads its elements at "
                         f"positions traced for shape {_shape_text(traced)}")


def shape_check_lines(name: str, array: str, traced: tuple) -> list:
    """Generated lines raising ShapeChanged unless the argument `name` (printed `array`) has
    exactly the `traced` shape: inline, with constant arguments, which Numba compiles in
    no time (a helper function took it about half a second in a new cache)."""
    return [f"if {array}.shape != {traced!r}:", f"    raise ShapeChanged({name!r}, None, {traced!r})"]


def check_sizes(shape, traced) -> None:
    """Raise ValueError unless every size of `shape` is in the class (0, 1, more) of the
    traced one: a slice's length is not fixed by the arguments' size classes, and the
    trace decided broadcasting (size-1 axes) from it. (The API then retraces.)"""
    for k in range(len(shape)):
        if min(shape[k], 2) != min(traced[k], 2):
            raise SizeClassError(k, shape[k], traced[k])


def check_slice(size, start, stop, length) -> None:
    """Raise NumPy's ValueError unless `[start:stop]` of an axis of `size` has `length`."""
    first = min(max(start + size if start < 0 else start, 0), size)
    last = min(max(stop + size if stop < 0 else stop, 0), size)
    if max(last - first, 0) != length:
        raise BroadcastError((max(last - first, 0),), (length,))


def checked_index(i, size, axis=0):
    """`i` wrapped like a NumPy index into `axis`, of `size`; IndexError when out of bounds."""
    if i < -size or i >= size:
        raise IndexOutOfBounds(i, size, axis)
    return i + size if i < 0 else i


def checked_indices(index, size, axis=0):
    """`index` (an integer array) after checking every entry like `checked_index`
    (negative entries wrap when the array is used; Numba does not bounds-check).
    (Compiled: `checked_indices_loops`.)"""
    outside = np.flatnonzero((index < -size) | (index >= size))
    if outside.size:
        raise IndexOutOfBounds(int(index.flat[outside[0]]), size, axis)
    return index


def checked_indices_loops(index, size, axis=0):
    """`checked_indices` as Numba compiles it: one pass, no temporaries."""
    for i in index.flat:
        if i < -size or i >= size:
            raise IndexOutOfBounds(i, size, axis)
    return index


def max_rows(x):
    """Maximum of each row of a 2-D array (compiled: `max_rows_loops`)."""
    out = np.empty(x.shape[0])
    for i in range(x.shape[0]):
        out[i] = np.max(x[i])
    return out


def min_rows(x):
    """Minimum of each row of a 2-D array (compiled: `min_rows_loops`)."""
    out = np.empty(x.shape[0])
    for i in range(x.shape[0]):
        out[i] = np.min(x[i])
    return out


def max_rows_loops(x):
    """`max_rows` as loops, as np.max (NaN wins; ValueError for empty rows): Numba compiles
    np.max in seconds, this in a fraction of one."""
    out = np.empty(x.shape[0])
    if x.shape[0] > 0 and x.shape[1] == 0:
        raise ValueError("zero-size array to reduction operation maximum which has no identity")
    for i in range(x.shape[0]):
        best = x[i, 0]
        for j in range(1, x.shape[1]):
            v = x[i, j]
            if (v > best or v != v) and best == best:   # once NaN, the result stays NaN
                best = v
        out[i] = best
    return out


def min_rows_loops(x):
    """`min_rows` as loops (see max_rows_loops)."""
    out = np.empty(x.shape[0])
    if x.shape[0] > 0 and x.shape[1] == 0:
        raise ValueError("zero-size array to reduction operation minimum which has no identity")
    for i in range(x.shape[0]):
        best = x[i, 0]
        for j in range(1, x.shape[1]):
            v = x[i, j]
            if (v < best or v != v) and best == best:
                best = v
        out[i] = best
    return out


def prod_rows(x):
    """Product of each row of a 2-D array."""
    out = np.empty(x.shape[0])
    for i in range(x.shape[0]):
        out[i] = np.prod(x[i])
    return out


def scatter_add(acc, index, values):
    """`acc[index[k]] += values[k]` for every k in order, repeated indices accumulating and
    negative ones wrapping; IndexError when one is out of bounds. Returns `acc`."""
    np.add.at(acc, checked_indices(index, acc.shape[0]), values)
    return acc


def scatter_add_loops(acc, index, values):
    """`scatter_add` as Numba compiles it: rows of rank 1 and 2 added element by element
    (a broadcasting row assignment costs Numba ~15 s to compile, for its error message),
    after checking that `values` has one row shaped like `acc`'s per index."""
    size = acc.shape[0]
    if values.shape[0] != index.shape[0]:
        raise BroadcastError((index.shape[0],), (values.shape[0],))
    for d in range(1, acc.ndim):
        if values.shape[d] != acc.shape[d]:
            raise BroadcastError(acc.shape, values.shape)
    for k in range(index.shape[0]):
        i = index[k]
        if i < -size or i >= size:
            raise IndexOutOfBounds(i, size)
        if i < 0:
            i += size
        if acc.ndim == 1:       # (Numba prunes the branches of other ranks)
            acc[i] += values[k]
        elif acc.ndim == 2:
            for j in range(acc.shape[1]):
                acc[i, j] += values[k, j]
        elif acc.ndim == 3:
            for j in range(acc.shape[1]):
                for m in range(acc.shape[2]):
                    acc[i, j, m] += values[k, j, m]
        else:
            acc[i] += values[k]
    return acc


class DuplicateIndex(ValueError):
    """An in-place update `r[idx] = v` whose index array repeats an entry."""

    def __init__(self, index):
        super().__init__(f"an in-place update r[idx] = v repeats index {index}: jitad needs "
                         "distinct indices there (NumPy keeps the last write); use "
                         "np.add.at-style accumulation (r = r + ...) or distinct indices")


def scatter_set(acc, index, values):
    """`acc[index[k]] = values[k]` for every k (negative indices wrap); IndexError when one is
    out of bounds, ValueError when one repeats or `values` has not one row shaped like
    `acc`'s per index (Numba would read past its end). Returns `acc`."""
    size = acc.shape[0]
    if values.shape[0] != index.shape[0]:
        raise BroadcastError((index.shape[0],) + acc.shape[1:], values.shape)
    for d in range(1, acc.ndim):
        if values.shape[d] != acc.shape[d]:
            raise BroadcastError(acc.shape, values.shape)
    for k in range(index.shape[0]):     # (every bound first: NumPy's IndexError wins)
        i = index[k]
        if i < -size or i >= size:
            raise IndexOutOfBounds(i, size)
    seen = np.zeros(size, np.bool_)
    for k in range(index.shape[0]):
        i = index[k]
        if i < 0:
            i += size
        if seen[i]:
            raise DuplicateIndex(i)
        seen[i] = True
        acc[i] = values[k]
    return acc


def solve_triangular(a, b, lower):
    """`x` with `a @ x = b` for the lower (or upper) triangle of a square `a`, by substitution;
    `b` is 1-D or 2-D. The other triangle of `a` is not read."""
    n = a.shape[0]
    x = b.copy()
    if n == 0:
        return x
    x2 = x.reshape((n, x.size // n))
    for step in range(n):
        i = step if lower else n - 1 - step
        for c in range(x2.shape[1]):
            s = x2[i, c]
            if lower:
                for j in range(i):
                    s -= a[i, j] * x2[j, c]
            else:
                for j in range(i + 1, n):
                    s -= a[i, j] * x2[j, c]
            x2[i, c] = s / a[i, i]
    return x


def cofactor(a):
    """The cofactor matrix of a square `a`, adj(a).T, the derivative of det(a), also where
    `a` is singular: det(a) inv(a).T where det(a) is not 0, else from the SVD
    a = u diag(s) vt as det(u) det(vt) u diag(c) vt, c[i] the product of the other s."""
    n = a.shape[0]
    if not np.all(np.isfinite(a)):
        return np.full((n, n), np.nan)
    det = np.linalg.det(a)
    if det != 0.0:
        return det * np.linalg.inv(a).T
    u, s, vt = np.linalg.svd(a)
    others = np.ones(n)
    for i in range(n):
        for j in range(n):
            if j != i:
                others[i] *= s[j]
    return (np.linalg.det(u) * np.linalg.det(vt)) * np.dot(u * others, vt)


# Opcodes of the tape interpreter (see jitad/tape.py, which encodes lists into them).
TAPE_OPCODES = ("add", "sub", "mul", "div", "neg", "integer_pow", "pow", "abs", "exp", "log",
                "log1p", "expm1", "sqrt", "square", "reciprocal", "sin", "cos", "tan", "tanh",
                "sinh", "cosh", "arcsin", "arccos", "arctan", "arctan2", "hypot", "maximum",
                "minimum", "logaddexp", "sign", "lt", "gt", "le", "ge", "eq", "ne", "select",
                "load", "store_add", "guard")


def number_slots(code, literal, first, kept, select):
    """`(rows, slot count, slot of)` for rows `code` of (opcode, out, a, b, c) over numbered
    values, unused operands -1 (see jitad/tape.py): `literal` values take the first slots;
    the others take a slot at their write (the `first` ones before the first row) that is
    free again after their last read, unless `kept` (read after the run); c is an operand
    only in `select` rows."""
    n = literal.shape[0]
    last = np.full(n, -1, np.int64)         # each value's last reading row
    for t in range(code.shape[0]):
        for k in range(2, 5):
            s = code[t, k]
            if s >= 0 and (k < 4 or code[t, 0] == select):
                last[s] = t
    slot_of = np.full(n, -1, np.int64)
    count = 0
    for s in range(n):
        if literal[s]:
            slot_of[s] = count
            count += 1
    free = np.empty(n, np.int64)
    top = 0
    rows = np.zeros_like(code)
    for t in range(-first.shape[0], code.shape[0]):     # (t < 0: the `first` values)
        if t < 0:
            s = first[t + first.shape[0]]
        else:
            op = code[t, 0]
            rows[t, 0], rows[t, 4] = op, code[t, 4]
            for k in range(2, 5):
                s = code[t, k]
                if s >= 0 and (k < 4 or op == select):
                    rows[t, k] = slot_of[s]
                    if last[s] == t and not (literal[s] or kept[s]):
                        free[top] = slot_of[s]      # read for the last time (once: the
                        top += 1                    # same operand twice frees one slot)
                        last[s] = -2
            s = code[t, 1]
        if s >= 0:                                  # written after the operands are read
            if top:
                top -= 1
                slot_of[s] = free[top]
            else:
                slot_of[s] = count
                count += 1
            if t >= 0:
                rows[t, 1] = slot_of[s]
            if last[s] == -1 and not kept[s]:       # never read
                free[top] = slot_of[s]
                top += 1
    return rows, count, slot_of


def run_tape(code, slots, inputs, outputs):
    """Run an encoded Wengert list: `code` rows are (opcode, out, a, b, c) over `slots`.

    `load` reads `inputs[c]` into a slot, `store_add` adds a slot into `outputs[c]`,
    `guard` raises GuardFailed(c) when slot a is not b (1.0 or 0.0).
    """
    for t in range(code.shape[0]):
        op, o, a, b, c = code[t, 0], code[t, 1], code[t, 2], code[t, 3], code[t, 4]
        if op < 20:
            if op == 0:
                slots[o] = slots[a] + slots[b]
            elif op == 1:
                slots[o] = slots[a] - slots[b]
            elif op == 2:
                slots[o] = slots[a] * slots[b]
            elif op == 3:
                slots[o] = slots[a] / slots[b]
            elif op == 4:
                slots[o] = -slots[a]
            elif op == 5:       # (Numba's x ** c raises ZeroDivisionError at 0 for c < 0)
                slots[o] = slots[a] ** c if c >= 0 else 1.0 / slots[a] ** -c
            elif op == 6:
                slots[o] = slots[a] ** slots[b]
            elif op == 7:
                slots[o] = abs(slots[a])
            elif op == 8:
                slots[o] = np.exp(slots[a])
            elif op == 9:
                slots[o] = np.log(slots[a])
            elif op == 10:
                slots[o] = np.log1p(slots[a])
            elif op == 11:
                slots[o] = np.expm1(slots[a])
            elif op == 12:
                slots[o] = np.sqrt(slots[a])
            elif op == 13:
                slots[o] = slots[a] * slots[a]
            elif op == 14:
                slots[o] = 1.0 / slots[a]
            elif op == 15:
                slots[o] = np.sin(slots[a])
            elif op == 16:
                slots[o] = np.cos(slots[a])
            elif op == 17:
                slots[o] = np.tan(slots[a])
            elif op == 18:
                slots[o] = np.tanh(slots[a])
            else:
                slots[o] = np.sinh(slots[a])
        elif op < 30:
            if op == 20:
                slots[o] = np.cosh(slots[a])
            elif op == 21:
                slots[o] = np.arcsin(slots[a])
            elif op == 22:
                slots[o] = np.arccos(slots[a])
            elif op == 23:
                slots[o] = np.arctan(slots[a])
            elif op == 24:
                slots[o] = np.arctan2(slots[a], slots[b])
            elif op == 25:
                slots[o] = np.hypot(slots[a], slots[b])
            elif op == 26:
                slots[o] = np.maximum(slots[a], slots[b])
            elif op == 27:
                slots[o] = np.minimum(slots[a], slots[b])
            elif op == 28:
                slots[o] = np.logaddexp(slots[a], slots[b])
            else:
                slots[o] = np.sign(slots[a])
        elif op < 36:
            x, y = slots[a], slots[b]
            if op == 30:
                r = x < y
            elif op == 31:
                r = x > y
            elif op == 32:
                r = x <= y
            elif op == 33:
                r = x >= y
            elif op == 34:
                r = x == y
            else:
                r = x != y
            slots[o] = 1.0 if r else 0.0
        elif op == 36:
            slots[o] = slots[b] if slots[a] != 0.0 else slots[c]
        elif op == 37:
            slots[o] = inputs[c]
        elif op == 38:
            outputs[c] += slots[a]
        elif slots[a] != slots[b]:
            raise GuardFailed(c)
    return slots


# ---------------------------------------------------------------- scans, sorting, batches,
# special functions (jitad/primitives/numeric.py prints calls to these)

__all__ += ["batch_matmul", "cumprod_rows", "cumsum_rows", "polygamma", "sort_permutation"]


def cumsum_rows(x):
    """Running sums along each row of a contiguous 2-D array."""
    out = np.empty(x.shape)
    for i in range(x.shape[0]):
        total = 0.0
        for j in range(x.shape[1]):
            total += x[i, j]
            out[i, j] = total
    return out


def cumprod_rows(x):
    """Running products along each row of a contiguous 2-D array."""
    out = np.empty(x.shape)
    for i in range(x.shape[0]):
        total = 1.0
        for j in range(x.shape[1]):
            total *= x[i, j]
            out[i, j] = total
    return out


def sort_permutation(x):
    """For each row of a contiguous 2-D array, the flat positions (into `x.ravel()`) of
    its elements in ascending order (a stable sort, NaNs last, as np.sort)."""
    out = np.empty(x.shape, dtype=np.int64)
    for i in range(x.shape[0]):
        out[i] = np.argsort(x[i], kind="mergesort") + i * x.shape[1]
    return out


def batch_matmul(a, b):
    """`a[k] @ b[k]` for each k of two 3-D arrays, one BLAS product per k (NumPy's stacked
    matmul does not call BLAS: ~20 times slower at 100 × (64, 64) @ (64, 1000)); the
    plain-Python path, compiled code runs `batch_matmul_loops`."""
    out = np.empty((a.shape[0], a.shape[1], b.shape[2]), np.result_type(a, b))
    for k in range(a.shape[0]):
        np.matmul(a[k], b[k], out=out[k])
    return out


def batch_matmul_loops(a, b):
    """`batch_matmul` as loops (Numba compiles them in a fraction of a second, np.dot takes
    ~15 s; as fast at the sizes of stacked small matrices): rows of `b` contiguous, the
    innermost loop runs along them."""
    c = np.ascontiguousarray(b)
    out = np.zeros((a.shape[0], a.shape[1], c.shape[2]))
    for k in range(a.shape[0]):
        for i in range(a.shape[1]):
            for j in range(a.shape[2]):
                s = a[k, i, j]
                for m in range(c.shape[2]):
                    out[k, i, m] += s * c[k, j, m]
    return out


# Runtime helpers whose compiled version differs from the plain-Python one (which stays
# fast while tracing evaluates printed lines): name -> the function Numba compiles.
COMPILED = {"batch_matmul": batch_matmul_loops, "max_rows": max_rows_loops,
            "min_rows": min_rows_loops, "scatter_add": scatter_add_loops,
            "checked_indices": checked_indices_loops}


# Bernoulli numbers B2, B4, ..., B14 for the asymptotic series of the polygamma functions.
_BERNOULLI = (1.0 / 6.0, -1.0 / 30.0, 1.0 / 42.0, -1.0 / 30.0, 5.0 / 66.0, -691.0 / 2730.0,
              7.0 / 6.0)


def polygamma(n, x):
    """The n-th derivative of the digamma function at a float x (digamma for n = 0).

    x > 0: the recurrence psi_n(x) = psi_n(x + 1) - (-1)**n n! / x**(n+1) up to x >= 10,
    then the asymptotic series; x < 0: the reflection formula for n = 0 and 1 (NaN at the
    negative integers and for n >= 2); at ±0 SciPy's ±inf.
    """
    if x == 0.0:            # the pole at 0: ±inf as SciPy's (digamma: -inf at 0, inf at -0)
        if n == 0:
            return np.inf if np.signbit(x) else -np.inf
        return np.inf if n % 2 == 1 else -np.inf
    reflect = x <= 0.0
    if reflect and (x == np.floor(x) or n > 1):
        return np.nan
    y = 1.0 - x if reflect else x
    factorial = 1.0
    for k in range(2, n + 1):
        factorial *= k
    sign = 1.0 if n % 2 == 0 else -1.0            # (-1)**n
    shift = 0.0
    while y < 10.0:
        shift -= sign * factorial / y ** (n + 1)
        y += 1.0
    if n == 0:
        r = 1.0 / (y * y)
        value = np.log(y) - 0.5 / y - r * (1.0 / 12.0 - r * (1.0 / 120.0 - r * (
            1.0 / 252.0 - r * (1.0 / 240.0 - r / 132.0)))) + shift
    else:
        # (-1)**(n+1) [(n-1)!/y^n + n!/(2 y^(n+1)) + sum_k B2k (2k+n-1)! / ((2k)! y^(2k+n))]
        total = factorial / n / y ** n + factorial / (2.0 * y ** (n + 1))
        ratio = factorial / n             # (2k+n-1)! / (2k)!, updated as k grows
        for k in range(1, len(_BERNOULLI) + 1):
            ratio *= (2 * k + n - 2) * (2 * k + n - 1) / ((2 * k - 1) * (2 * k))
            total += _BERNOULLI[k - 1] * ratio / y ** (2 * k + n)
        value = -sign * total + shift
    if not reflect:
        return value
    if n == 0:              # psi(x) = psi(1 - x) - pi / tan(pi x)
        return value - np.pi / np.tan(np.pi * x)
    s = np.sin(np.pi * x)   # psi_1(x) = pi^2 / sin^2(pi x) - psi_1(1 - x)
    return np.pi * np.pi / (s * s) - value


# ---------------------------------------------------------------- transposes as strided views
# (NumPy's np.transpose with an axes tuple costs Numba ~20 s to compile per array type; a
# strided view of the same memory costs ~1 s, once per disk cache as a runtime helper)

__all__ += ["transpose3", "transpose4"]


def transpose3(x, a0, a1, a2):
    """`np.transpose(x, (a0, a1, a2))` of a 3-D array: a view with permuted shape and strides."""
    shape, strides = x.shape, x.strides
    return np.lib.stride_tricks.as_strided(x, (shape[a0], shape[a1], shape[a2]),
                                           (strides[a0], strides[a1], strides[a2]))


def transpose4(x, a0, a1, a2, a3):
    """`np.transpose(x, (a0, a1, a2, a3))` of a 4-D array, as a view (see transpose3)."""
    shape, strides = x.shape, x.strides
    return np.lib.stride_tricks.as_strided(x, (shape[a0], shape[a1], shape[a2], shape[a3]),
                                           (strides[a0], strides[a1], strides[a2], strides[a3]))
