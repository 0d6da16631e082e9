"""Benchmark harness: hand-written Numba gradients vs jitad (and JAX, autograd).

    python benchmarks/run.py [--quick] [--only NAME] [--out DIR]
                             [--call-overhead] [--long-graph] [--timeout SECONDS]

Every measurement runs in a fresh process with a time limit, so first-call
times include compilation, and a failing or hanging case becomes an error row
while the run goes on. The Markdown table goes to stdout and to
``DIR/RESULTS.md``; with matplotlib, a ratio chart goes to ``DIR/ratios.png``.
"""

import argparse
import datetime
import functools
import importlib.metadata
import importlib.util
import math
import multiprocessing
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numba
import numpy as np

import peers
from cases import CASES
from verify import finite_difference_error, relative_error, structure

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))  # benchmark this checkout's jitad

ARGS_SEED = 0
FD_TOLERANCE = 1e-6       # references vs finite differences
CHECK_RTOL = 1e-8         # jitad and peers vs the reference
REFERENCE_TIMEOUT = 150   # s; Numba needs minutes for the 100k-op synthetic case
PEER_TIMEOUTS = {"jax": 120, "autograd": 30}  # s, per optional peer; skipped past it


@dataclass(frozen=True)
class Timing:
    """How steady-state time per call is measured."""

    repeats: int
    min_batch_seconds: float

    def describe(self):
        return (f"minimum over {self.repeats} repeats of the mean time per call "
                f"in a batch of calls sized to last at least "
                f"{self.min_batch_seconds * 1e3:.0f} ms (time.perf_counter)")


FULL = Timing(repeats=7, min_batch_seconds=0.2)
QUICK = Timing(repeats=3, min_batch_seconds=0.02)


@dataclass
class Outcome:
    """A tool's measurement of one case: results, or why there are none."""

    first_call: float = math.nan
    per_call: float = math.nan
    specialized_at: float = math.nan    # jitad: when a first tier answered, its code was in
    value: object = None
    grad: object = None
    error: str | None = None
    check: str = ""


@dataclass
class Row:
    """One line of the table: a case at one size."""

    case: str
    size: str
    reference: Outcome
    fd_error: float = math.nan
    tools: dict[str, Outcome] = field(default_factory=dict)


# --- timing (runs in the worker processes) ---------------------------------

def time_per_call(call, timing):
    """Steady-state seconds per ``call()``, measured as described by ``timing``."""
    batch = 1
    while True:
        start = time.perf_counter()
        for _ in range(batch):
            call()
        elapsed = time.perf_counter() - start
        if elapsed >= timing.min_batch_seconds:
            break
        batch = max(batch * 2, math.ceil(batch * timing.min_batch_seconds / max(elapsed, 1e-9)))
    samples = []
    for _ in range(timing.repeats):
        start = time.perf_counter()
        for _ in range(batch):
            call()
        samples.append((time.perf_counter() - start) / batch)
    return min(samples)     # the batch least disturbed by other work on the machine


def warm_up_numba():
    """Compile a tiny function so Numba's one-time start-up is not timed."""
    @numba.njit
    def tiny(a):
        return np.dot(a, a) + math.sin(a[0])

    tiny(np.ones(2))


def _to_host(tree):
    """Turn peer arrays (e.g. JAX's) into NumPy arrays, keeping tuples, floats, ndarrays."""
    if isinstance(tree, tuple):
        return tuple(_to_host(part) for part in tree)
    if isinstance(tree, (float, np.ndarray)):
        return tree
    if hasattr(tree, "tocsr"):      # a sparse Jacobian: its values in canonical CSR order
        matrix = tree.tocsr()
        matrix.sort_indices()
        return np.concatenate([matrix.indptr, matrix.indices]).astype(float), matrix.data
    return np.asarray(tree)


def _build_reference(case, size, args):
    return case.functions(size)[1], args


def _build_jitad(case, size, args):
    # main() points JITAD_CACHE_DIR at the run's temporary directory; each
    # measurement gets an empty one inside it so no disk cache hides compile time.
    os.environ["JITAD_CACHE_DIR"] = tempfile.mkdtemp(dir=os.environ["JITAD_CACHE_DIR"])
    import jitad

    fun = case.functions(size)[0]
    if case.derivative == "sparse_jacobian":
        compiled = jitad.jacobian(fun, argnums=case.argnums, sparse=True)
        call = compiled
    elif case.derivative != "value_and_grad":       # jitad.jvp, .hvp, .hessian
        compiled = call = getattr(jitad, case.derivative)(fun, argnums=case.argnums)
    else:
        compiled = jitad.jit_grad(fun, argnums=case.argnums)
        call = compiled.value_and_grad
    # Per call is the steady state: after the first call, wait for a specialized compile
    # running in the background (tiered execution) before timing.
    return call, args, getattr(compiled, "wait", None)


def _build_jax(case, size, args):
    import jax

    value_and_grad = peers.jax_value_and_grad(case, size) \
        if case.derivative == "value_and_grad" else peers.jax_derivative(case, size)
    device_args = tuple(jax.device_put(arg) for arg in args)
    return (lambda *a: jax.block_until_ready(value_and_grad(*a))), device_args


def _build_autograd(case, size, args):
    return peers.autograd_value_and_grad(case, size), args


BUILDERS = {"reference": _build_reference, "jitad": _build_jitad,
            "jax": _build_jax, "autograd": _build_autograd}


def measure(tool, case_name, size, timing):
    """Time ``tool``'s value-and-gradient of one case: first call, then steady state."""
    warm_up_numba()
    case = CASES[case_name]
    args = case.make_args(size, np.random.default_rng(ARGS_SEED))
    value_and_grad, args, *settle = BUILDERS[tool](case, size, args)
    start = time.perf_counter()
    value, grad = value_and_grad(*args) if case.derivative == "value_and_grad" else \
        (0.0, value_and_grad(*args))        # an hvp or Hessian row compares the array only
    first_call = time.perf_counter() - start
    specialized_at = math.nan
    if settle and settle[0] is not None:
        tiered = any(row["tier"] != "specialized" for row in getattr(
            settle[0].__self__, "stats", lambda: [])())
        settle[0]()
        if tiered:
            specialized_at = time.perf_counter() - start
    per_call = time_per_call(lambda: value_and_grad(*args), timing)
    return Outcome(first_call, per_call, specialized_at, _to_host(value), _to_host(grad))


def measure_call_overhead(timing):
    """Seconds per call from Python of the seed example, three ways."""
    import reference

    warm_up_numba()
    seed = CASES["seed"].fun
    reference.seed(2.0, 5.0)
    calls = {"plain Python `seed(2.0, 5.0)` (value only)": lambda: seed(2.0, 5.0),
             "hand-written njit `reference.seed(2.0, 5.0)`": lambda: reference.seed(2.0, 5.0)}
    per_call = {label: time_per_call(call, timing) for label, call in calls.items()}
    label = "jitad `f.value_and_grad(2.0, 5.0)`"
    try:
        import jitad

        compiled = jitad.jit_grad(seed, argnums=(0, 1))
        compiled.value_and_grad(2.0, 5.0)
        per_call[label] = time_per_call(lambda: compiled.value_and_grad(2.0, 5.0), timing)
    except Exception as exc:  # reported, not fatal: jitad may be incomplete
        per_call[label] = f"error: {_short(exc)}"
    return per_call


# Cases timed in a new process against a warm disk cache (--new-process).
NEW_PROCESS_CASES = (("seed", None), ("logreg", (1000, 20)), ("rosen_loop", 1000),
                     ("synthetic", 10_000))


def first_result_in_this_process(case_name, size, cache_dir):
    """Seconds from ``jit_grad`` to the first value and gradient in this (fresh) process,
    with ``cache_dir`` as jitad's cache; and how many kernels Numba compiled."""
    os.environ["JITAD_CACHE_DIR"] = cache_dir
    case = CASES[case_name]
    args = case.make_args(size, np.random.default_rng(ARGS_SEED))
    fun = case.functions(size)[0]
    import jitad

    start = time.perf_counter()
    compiled = jitad.jit_grad(fun, argnums=case.argnums)
    compiled.value_and_grad(*args)
    seconds = time.perf_counter() - start
    kernels = [k for entry in compiled._cache.values() for variants in entry.variants.values()
               for v in variants for k in v.kernels.values()]
    return seconds, sum(sum(k.stats.cache_misses.values()) for k in kernels
                        if hasattr(k, "stats"))


def numba_start_up(cache_dir):
    """Seconds to the first result of a cached one-line ``@numba.njit`` function in this
    (fresh) process: what any Numba user pays once per process."""
    module = Path(cache_dir) / "numba_start_up_probe.py"
    module.write_text("import numba\n\n@numba.njit(cache=True)\n"
                      "def probe(a, b):\n    return a * b + 1.0\n")
    sys.path.insert(0, cache_dir)
    start = time.perf_counter()
    import numba_start_up_probe

    numba_start_up_probe.probe(2.0, 3.0)
    return time.perf_counter() - start


def new_process_section(timeout):
    """Markdown: first result in a new process once the disk cache holds the function."""
    lines = ["## A new process with a warm disk cache", "",
             "Each case runs once in a fresh process to fill an empty cache directory, then "
             "again in a second fresh process. Times run from `jit_grad(...)` to the first "
             "value and gradient; imports are excluded, Numba's one-time start-up is not. "
             "For comparison, the same start-up for a cached one-line `@numba.njit` "
             "function, measured the same way twice:", "",
             "| case | size | first process | new process | Numba compiles in the new "
             "process |", "|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory(prefix="jitad-bench-new-process-") as directory:
        status, _ = run_isolated(numba_start_up, directory, timeout=timeout)
        status, probe = run_isolated(numba_start_up, directory, timeout=timeout)
        probe_text = format_seconds(probe) if status == "ok" else probe
        for name, size in NEW_PROCESS_CASES:
            cache_dir = tempfile.mkdtemp(dir=directory)
            runs = [run_isolated(first_result_in_this_process, name, size, cache_dir,
                                 timeout=timeout) for _ in range(2)]
            cells = [format_seconds(result[0]) if status == "ok" else result
                     for status, result in runs]
            compiles = runs[1][1][1] if runs[1][0] == "ok" else "—"
            label = CASES[name].size_label(size)
            lines.append(f"| {name} | {label} | {cells[0]} | {cells[1]} | {compiles} |")
    lines += ["", f"Numba alone, cached one-line function in a new process: {probe_text}."]
    return "\n".join(lines)


# --- the long-trace graph (issue 12) -----------------------------------------

LONG_GRAPH_SIZES = (1_000, 10_000, 100_000)
LONG_GRAPH_QUICK_SIZES = (1_000,)
LONG_GRAPH_CALLS = 10_000
LONG_GRAPH_DERIVATIVE_OPS = 10_000     # hvp and Hessian rows up to this size (100,000: minutes)


def long_graph_run(tool, n_ops, cache_dir, timing):
    """In a fresh process: (first result, total for LONG_GRAPH_CALLS calls including the
    first, per call, value, gradient) of ``tool`` ("interpreter" or "jitad") on the
    long graph of ``n_ops`` operations."""
    import long_graph

    os.environ["JITAD_CACHE_DIR"] = cache_dir
    x, = long_graph.make_args(n_ops, np.random.default_rng(ARGS_SEED))
    fun = long_graph.loss(n_ops)
    if tool == "jitad":
        import jitad

    start = time.perf_counter()
    compiled = None if tool == "interpreter" else jitad.jit_grad(fun)
    call = long_graph.interpreter(n_ops) if tool == "interpreter" else compiled.value_and_grad
    value, grad = call(x)
    first = time.perf_counter() - start
    for _ in range(LONG_GRAPH_CALLS - 1):
        call(x)
    total = time.perf_counter() - start
    if compiled is not None:    # per call: the specialized code, once in (tiers)
        compiled.wait()
    return first, total, time_per_call(lambda: call(x), timing), value, grad


def long_graph_loss_per_call(n_ops, timing):
    """In a fresh process: the per-call time of the interpreter's forward sweep alone (the
    loss without its gradient, `long_graph.loss_only`): a floor for any gradient's."""
    import long_graph

    x, = long_graph.make_args(n_ops, np.random.default_rng(ARGS_SEED))
    call = long_graph.loss_only(n_ops)
    call(x)
    return time_per_call(lambda: call(x), timing)


def long_graph_derivative_run(tool, kind, n_ops, cache_dir, timing):
    """In a fresh process: (first result, per call, result) of the long graph's Hessian-
    vector product ("hvp", along a fixed direction) or dense Hessian ("hessian") by jitad,
    or by central differences of the interpreter's gradient ("interpreter": 2 gradients a
    product) — per call for jitad once its specialized code is in."""
    import long_graph

    os.environ["JITAD_CACHE_DIR"] = cache_dir
    x, = long_graph.make_args(n_ops, np.random.default_rng(ARGS_SEED))
    directions = [np.cos(np.arange(x.size))] if kind == "hvp" else list(np.eye(x.size))
    if tool == "jitad":
        import jitad
    start = time.perf_counter()
    if tool == "jitad":
        fun = long_graph.loss(n_ops)
        compiled = jitad.hvp(fun) if kind == "hvp" else jitad.hessian(fun)
        call = (lambda: compiled(x, directions[0])) if kind == "hvp" else (lambda: compiled(x))
    else:
        gradient = long_graph.interpreter(n_ops)
        step = LONG_GRAPH_FD_STEP

        def call():
            products = [(gradient(x + step * v)[1] - gradient(x - step * v)[1]) / (2 * step)
                        for v in directions]
            return products[0] if kind == "hvp" else np.column_stack(products)
    result = call()
    first = time.perf_counter() - start
    if tool == "jitad":
        compiled.wait()
    return first, time_per_call(call, timing), result


LONG_GRAPH_FD_STEP = 1e-5       # central differences of the interpreter's gradient
LONG_GRAPH_FD_RTOL = 1e-5       # jitad's exact products vs those differences


def long_graph_derivatives(sizes, timing, timeout, directory, warm):
    """Markdown lines: jitad's `hvp` and dense `hessian` of the long graph against central
    differences of the interpreter's gradient, each in a fresh process (caches as above)."""
    lines = ["", "Derivative objects on the same graph: `jitad.hvp` (along a fixed direction) "
             "and the dense `jitad.hessian` (100 × 100), against central differences of the "
             "interpreter's gradient (two gradients a product, step "
             f"{LONG_GRAPH_FD_STEP:g}): *first* in a fresh process as above, *per call* for "
             "jitad once its specialized code is in; check: jitad vs the differences, "
             f"relative error ≤ {LONG_GRAPH_FD_RTOL:g}.", "",
             "| ops | derivative | differences first | jitad first | differences per call "
             "| jitad per call | per-call ratio | check |", "|---|---|---|---|---|---|---|---|"]
    for n_ops in sizes:
        for kind in ("hvp", "hessian"):
            print(f"... long graph {kind} {n_ops:,} ops", file=sys.stderr, flush=True)
            pair = _both_tools(long_graph_derivative_run, (kind, n_ops), directory, warm,
                               timing, timeout)
            (status_i, ref), (status_j, got) = pair
            both = status_i == status_j == "ok"
            cells = [f"{n_ops:,}", f"`{kind}`", *_seconds_cells(pair, 0),
                     *_seconds_cells(pair, 1), format_ratio(got[1] / ref[1]) if both else "—",
                     _check_cell(relative_error(got[2], ref[2]), LONG_GRAPH_FD_RTOL)
                     if both else "—"]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def _both_tools(function, args, directory, warm, timing, timeout):
    """((status, result) of the interpreter, of jitad): `function(tool, *args, cache
    directory, timing)`, each in a fresh process with its own copy of the cache `warm`."""
    return tuple(run_isolated(function, tool, *args, _copy(warm, tempfile.mkdtemp(dir=directory)),
                              timing, timeout=REFERENCE_TIMEOUT if tool == "interpreter"
                              else timeout)
                 for tool in ("interpreter", "jitad"))


def _seconds_cells(pair, k):
    """The `k`-th figure of each tool's result in `pair` (`_both_tools`), or its error."""
    return [format_seconds(result[k]) if status == "ok" else f"**{result}**"
            for status, result in pair]


def _check_cell(error, tolerance):
    return "ok" if error <= tolerance else f"**FAIL: rel. error {error:.1e}**"


# The long graph that warms jitad's cache of its runtime kernels (the reverse tape's
# `run_tape_gradient` and the tape interpreter it calls) in the long-graph section: a size
# no row measures, whose trace (104,000 entries) is long enough for the reverse tape to
# compile its kernel in an empty cache (api.REVERSE_TAPE_COMPILES_FROM_ENTRIES).
LONG_GRAPH_WARM_UP_OPS = 16_000


def long_graph_section(sizes, timing, timeout):
    """Markdown: jitad vs the generic interpreter on the long graph, each tool in a fresh
    process (the interpreter's Numba cache warmed first; jitad's cache holding its runtime
    kernels, warmed by another graph, but nothing of the measured one)."""
    lines = ["## Long traces: the graph of benchmarks/long_graph.py", "",
             "Each tool runs in a fresh process: *first* from `jit_grad(...)` (or building the "
             "interpreter) to the first value and gradient, with the interpreter's Numba cache "
             "warm and jitad's cache holding its runtime kernels (the reverse tape and the tape "
             f"interpreter, from a {LONG_GRAPH_WARM_UP_OPS:,}-op graph) but nothing of the "
             "measured graph; *total*: "
             f"{LONG_GRAPH_CALLS:,} calls including "
             f"the first; *per call*: {timing.describe()}, for jitad once its specialized "
             "code is in; *loss alone*: the interpreter's forward sweep without the adjoint "
             "(`long_graph.loss_only`), per call — each node reads the one before it, so "
             "this chain of dependent operations is a floor for any gradient. Targets: jitad "
             "per call ≤ ⅓ of the interpreter's, total ≤ the interpreter's.", "",
             "| ops | interpreter first | jitad first | interpreter per call | jitad per call | "
             "per-call ratio | loss alone | interpreter total | jitad total | total ratio | "
             "check |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory(prefix="jitad-bench-long-graph-") as directory:
        run_isolated(long_graph_run, "interpreter", 10, directory, QUICK,
                     timeout=REFERENCE_TIMEOUT)             # warms Numba's cache of the kernel
        warm = tempfile.mkdtemp(dir=directory)              # jitad's runtime kernels
        run_isolated(long_graph_run, "jitad", LONG_GRAPH_WARM_UP_OPS, warm, QUICK,
                     timeout=timeout)
        for n_ops in sizes:
            print(f"... long graph {n_ops:,} ops", file=sys.stderr, flush=True)
            pair = _both_tools(long_graph_run, (n_ops,), directory, warm, timing, timeout)
            (status_i, ref), (status_j, got) = pair
            both = status_i == status_j == "ok"
            status, floor = run_isolated(long_graph_loss_per_call, n_ops, timing,
                                         timeout=REFERENCE_TIMEOUT)
            cells = [f"{n_ops:,}", *_seconds_cells(pair, 0), *_seconds_cells(pair, 2),
                     format_ratio(got[2] / ref[2]) if both else "—",
                     format_seconds(floor) if status == "ok" else f"**{floor}**",
                     format_seconds(ref[1]) if status_i == "ok" else "—",
                     format_seconds(got[1]) if status_j == "ok" else "—",
                     format_ratio(got[1] / ref[1]) if both else "—",
                     _check_cell(max(relative_error(got[3], ref[3]),
                                     relative_error(got[4], ref[4])), CHECK_RTOL)
                     if both else "—"]
            lines.append("| " + " | ".join(cells) + " |")
        lines += long_graph_derivatives([n for n in sizes if n <= LONG_GRAPH_DERIVATIVE_OPS],
                                        timing, timeout, directory, warm)
    return "\n".join(lines)


def _copy(source, target):
    """`target`, a copy of the directory `source`."""
    shutil.copytree(source, target, dirs_exist_ok=True)
    return target


# --- process isolation ------------------------------------------------------

def _short(exc):
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:120]


def _child(sender, function, args):
    """Body of the worker process: send back ``function``'s result or error."""
    try:
        sender.send(("ok", function(*args)))
    except Exception as exc:
        traceback.print_exc()
        sender.send(("error", _short(exc)))


def run_isolated(function, *args, timeout):
    """``function(*args)`` in a fresh process; returns ``(status, result or message)``."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(sender, function, args))
    process.start()
    sender.close()
    try:
        if receiver.poll(timeout):
            return receiver.recv()
        return "error", f"timed out after {timeout:.0f} s"
    except EOFError:
        process.join()
        return "error", f"worker died (exit code {process.exitcode})"
    finally:
        process.kill()
        process.join()


def measure_isolated(tool, case, size, timing, timeout):
    """:func:`measure` in a fresh process; failures become an :class:`Outcome` error."""
    status, result = run_isolated(measure, tool, case.name, size, timing, timeout=timeout)
    return result if status == "ok" else Outcome(error=result)


# --- checks (parent process) -----------------------------------------------

@functools.lru_cache(maxsize=1)
def user_inputs(case_name, size):
    """The user function of a case and its arguments (the last pair is kept)."""
    case = CASES[case_name]
    return case.functions(size)[0], case.make_args(size, np.random.default_rng(ARGS_SEED))


def check(outcome, case, size, reference, compare_structure):
    """Check ``outcome`` against the reference (or finite differences): "ok" or "FAIL ..."."""
    if reference.error is None:
        if compare_structure and structure(outcome.grad) != structure(reference.grad):
            return (f"FAIL: gradient structure {structure(outcome.grad)}, "
                    f"expected {structure(reference.grad)}")
        error = max(relative_error(outcome.value, reference.value),
                    relative_error(outcome.grad, reference.grad))
        tolerance, against = CHECK_RTOL, "reference"
    else:
        fun, args = user_inputs(case.name, size)
        error = max(relative_error(outcome.value, fun(*args)),
                    finite_difference_error(fun, args, case.argnums, outcome.grad))
        tolerance, against = FD_TOLERANCE, "finite differences"
    if error <= tolerance:
        return "ok" if against == "reference" else "ok (vs FD)"
    return f"FAIL: rel. error {error:.1e} vs {against}"


def reference_fd_error(case, size, reference):
    """Worst relative error of the reference's value and gradient vs the user function."""
    fun, args = user_inputs(case.name, size)
    return max(relative_error(reference.value, fun(*args)),
               finite_difference_error(fun, args, case.argnums, reference.grad))


def benchmark(case, size, tools, timing, timeout):
    """Measure one case at one size with the reference and each tool."""
    reference = measure_isolated("reference", case, size, timing, REFERENCE_TIMEOUT)
    row = Row(case.name, case.size_label(size), reference)
    if reference.error is None and case.derivative == "value_and_grad":
        row.fd_error = reference_fd_error(case, size, reference)
    for tool in [t for t in tools if case.derivative == "value_and_grad" or t != "autograd"]:
        limit = PEER_TIMEOUTS.get(tool, timeout)
        outcome = measure_isolated(tool, case, size, timing, limit)
        if outcome.error is None:
            outcome.check = check(outcome, case, size, reference,
                                  compare_structure=tool == "jitad")
        row.tools[tool] = outcome
    return row


# --- report -----------------------------------------------------------------

def format_seconds(seconds):
    if math.isnan(seconds):
        return "—"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def ratio(row):
    jitad = row.tools.get("jitad")
    return jitad.per_call / row.reference.per_call if jitad else math.nan


def format_ratio(value):
    if math.isnan(value):
        return "—"
    return f"{value:.2f}" if value < 100 else f"{value:.0f}"


def table(rows, peers):
    """The results as a Markdown table, with columns for jitad and ``peers``."""
    header = ["case", "size", "hand-written first call", "hand-written per call",
              "ref FD err", "jitad first call", "jitad per call", "ratio", "check"]
    for peer in peers:
        header += [f"{peer} first call", f"{peer} per call", f"{peer} check"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        ref = row.reference
        cells = [row.case, row.size]
        if ref.error:
            cells += [f"**{ref.error}**", "—", "—"]
        else:
            fd = f"{row.fd_error:.1e}"
            if math.isnan(row.fd_error):    # hvp and Hessian rows: tested in test_derivatives
                fd = "—"
            elif row.fd_error > FD_TOLERANCE:
                fd = f"**FAIL {fd}**"
            cells += [format_seconds(ref.first_call), format_seconds(ref.per_call), fd]
        for tool in ["jitad", *peers]:
            outcome = row.tools.get(tool)
            if outcome is None:
                cells += ["n/a", "n/a"]
            elif outcome.error:
                cells += [f"**error: {outcome.error}**", "—"]
            else:
                first = format_seconds(outcome.first_call)
                if not math.isnan(outcome.specialized_at):
                    first += f" (compiled at {format_seconds(outcome.specialized_at)})"
                cells += [first, format_seconds(outcome.per_call)]
            if tool == "jitad":
                cells.append(format_ratio(ratio(row)))
            check_cell = outcome.check if outcome else ""
            cells.append(f"**{check_cell}**" if check_cell.startswith("FAIL") else check_cell)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _version(package):
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def header(timing, timeout, jitad_problem, peers):
    """How the figures were obtained."""
    versions = ", ".join(f"{name} {_version(name)}"
                         for name in ("numpy", "scipy", "numba", "llvmlite", *PEER_TIMEOUTS))
    jitad = f"not measured — {jitad_problem}" if jitad_problem else "measured"
    limits = ", ".join(f"{peer} {limit} s" for peer, limit in PEER_TIMEOUTS.items())
    return "\n".join([
        "# jitad benchmarks",
        "",
        f"Produced by `{shlex.join(['python', 'benchmarks/run.py', *sys.argv[1:]])}` "
        f"on {datetime.datetime.now().isoformat(timespec='seconds')}.",
        "",
        f"- Machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs",
        f"- Python {platform.python_version()}; {versions}",
        f"- jitad: {jitad}; peers measured: {', '.join(peers) or 'none'}",
        "- Every measurement runs in a freshly spawned process that first compiles a "
        "tiny Numba function, so one-time Numba start-up is excluded.",
        "- *first call*: wall time of the first value-and-gradient call — Numba "
        "compilation for the hand-written references; tracing, code generation "
        "and compilation for jitad (with `JITAD_CACHE_DIR` set to an empty "
        "temporary directory); `jax.jit` tracing and XLA compilation for JAX.",
        f"- *per call*: {timing.describe()}; calls are made from Python with "
        "the same arguments each time, for jitad after its specialized code is in "
        "(`f.wait()`: a long list's first calls run on the tape tier, array code's on "
        "the NumPy tier; *compiled at* says when the specialized code was in).",
        "- *ratio*: jitad per call / hand-written per call.",
        "- *ref FD err*: relative error of the hand-written value and gradient "
        "against the user function and Richardson-extrapolated central "
        f"differences (must be ≤ {FD_TOLERANCE:g}).",
        f"- *check*: value and gradient vs the hand-written reference (relative "
        f"error ≤ {CHECK_RTOL:g}; for jitad also the gradient's structure), or "
        "vs finite differences where there is no reference.",
        f"- Time limits per measurement: hand-written reference {REFERENCE_TIMEOUT} s "
        f"(Numba needs longer for the 100k-op synthetic case, whose tools are then "
        f"checked against finite differences), jitad {timeout:g} s, {limits}.",
    ])


def overhead_section(overhead):
    lines = ["## Call overhead (seed example, from Python)", "",
             "| call | per call |", "|---|---|"]
    lines += [f"| {label} | {format_seconds(t) if isinstance(t, float) else t} |"
              for label, t in overhead.items()]
    return "\n".join(lines)


def plot_ratios(rows, path):
    """Bar chart of jitad/hand-written per-call ratios; skipped without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [row for row in rows if not math.isnan(ratio(row))]
    if not measured:
        return False
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(measured)), 4.5))
    ax.bar([f"{row.case}\n{row.size}" for row in measured], [ratio(row) for row in measured])
    ax.set_yscale("log")
    ax.axhline(1.0, color="black", linewidth=1)
    ax.axhline(2.0, color="tab:red", linestyle="--", linewidth=1)
    ax.set_ylabel("jitad / hand-written time per call")
    ax.set_title("jitad vs hand-written Numba (lower is better)")
    ax.tick_params(axis="x", labelrotation=60, labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


# --- main -------------------------------------------------------------------

def jitad_problem():
    """Why jitad cannot be measured, or None if ``jitad.jit_grad`` imports."""
    try:
        import jitad

        jitad.jit_grad  # noqa: B018  (a bare namespace package has no jit_grad)
    except Exception as exc:
        return _short(exc)
    return None


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="smaller sizes and fewer repeats (about two minutes "
                             "plus jitad's compile time)")
    parser.add_argument("--only", action="append", choices=sorted(CASES), metavar="NAME",
                        help=f"run only this case (repeatable): {', '.join(CASES)}")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results",
                        help="directory for RESULTS.md and ratios.png")
    parser.add_argument("--call-overhead", action="store_true",
                        help="also time calling the seed gradient from Python")
    parser.add_argument("--new-process", action="store_true",
                        help="also time a new process's first result with a warm disk cache")
    parser.add_argument("--long-graph", action="store_true",
                        help="also run the long-trace graph (1k, 10k, 100k ops; 1k with "
                             "--quick) against its generic interpreter")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds allowed per jitad measurement (default 600)")
    return parser.parse_args()


def main():
    options = parse_args()
    with tempfile.TemporaryDirectory(prefix="jitad-bench-cache-") as cache_dir:
        os.environ["JITAD_CACHE_DIR"] = cache_dir
        run(options)


def run(options):
    """Measure the selected cases, print the report and write it to ``options.out``."""
    timing = QUICK if options.quick else FULL
    problem = jitad_problem()
    peers_found = [peer for peer in PEER_TIMEOUTS if importlib.util.find_spec(peer)]
    tools = ([] if problem else ["jitad"]) + peers_found
    report = [header(timing, options.timeout, problem, peers_found), ""]
    print(report[0] + "\n", flush=True)

    rows = []
    for name in options.only or CASES:
        case = CASES[name]
        for size in case.quick_sizes if options.quick else case.sizes:
            print(f"... {name} {case.size_label(size)}", file=sys.stderr, flush=True)
            rows.append(benchmark(case, size, tools, timing, options.timeout))
    report.append(table(rows, peers_found))
    print(report[-1], flush=True)

    if options.call_overhead:
        status, overhead = run_isolated(measure_call_overhead, timing, timeout=options.timeout)
        section = overhead_section(overhead) if status == "ok" else f"Call overhead: {overhead}"
        report += ["", section]
        print("\n" + section)

    if options.long_graph:
        sizes = LONG_GRAPH_QUICK_SIZES if options.quick else LONG_GRAPH_SIZES
        section = long_graph_section(sizes, timing, options.timeout)
        report += ["", section]
        print("\n" + section)

    if options.new_process:
        section = new_process_section(options.timeout)
        report += ["", section]
        print("\n" + section)

    options.out.mkdir(parents=True, exist_ok=True)
    (options.out / "RESULTS.md").write_text("\n".join(report) + "\n")
    if plot_ratios(rows, options.out / "ratios.png"):
        print(f"\nwrote {options.out / 'RESULTS.md'} and {options.out / 'ratios.png'}")
    else:
        print(f"\nwrote {options.out / 'RESULTS.md'} (no ratio chart: needs matplotlib and jitad)")


if __name__ == "__main__":
    main()
