"""What each specialization cost and how it runs: the `jitad` logger, `f.stats()`, progress.

Not a pipeline step: the API opens a `Record` per compiled specialization and makes it
current (`recording`) while its steps run; any step times itself with
`stage("trace")`, `stage("analysis")`, `stage("codegen")` or `stage("compile")`, which adds
the seconds to the current record (no record: only the time is measured). Each finished
specialization is logged at INFO on the `jitad` logger; the switch from a first tier (tape
or NumPy) to the specialized code, and background compiles that fail, too. First calls that take longer
than PROGRESS_AFTER_S print a progress line on stderr when it is a terminal
(JITAD_PROGRESS=0 turns it off).
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from dataclasses import asdict, dataclass, field

logger = logging.getLogger("jitad")

STAGES = ("trace", "analysis", "codegen", "compile")
PROGRESS_AFTER_S = 2.0
_current: dict = {}          # thread ident -> the record its stages go to


@dataclass
class Record:
    """One specialization (a traced variant and a mode): its signature, code shape, the
    tier serving its calls ("specialized", "tape" or "numpy") and the seconds of each
    stage."""

    function: str
    signature: str
    mode: str
    shape: str | None = None
    tier: str | None = None
    trace_s: float = 0.0
    analysis_s: float = 0.0
    codegen_s: float = 0.0
    compile_s: float = 0.0
    tier_calls: int = 0             # calls the first tier served (specialized calls: uncounted)
    background: str | None = None   # None, "compiling", "done" or "failed"
    stage: str | None = field(default=None, repr=False)   # the stage now running

    def as_dict(self) -> dict:
        row = asdict(self)
        del row["stage"]
        return row

    def figures(self) -> str:
        """`trace 0.12 s, analysis 0.40 s, ...` for the stages that took any time."""
        return ", ".join(f"{s} {getattr(self, s + '_s'):.2f} s" for s in STAGES
                         if getattr(self, s + "_s"))


def current(thread: int | None = None) -> Record | None:
    """The record this thread's (or the thread `thread`'s) stages go to, if any."""
    return _current.get(threading.get_ident() if thread is None else thread)


@contextlib.contextmanager
def recording(record: Record | None):
    """Make `record` current for this thread while the block runs."""
    ident = threading.get_ident()
    previous = _current.get(ident)
    _current[ident] = record
    try:
        yield record
    finally:
        if previous is None:
            _current.pop(ident, None)
        else:
            _current[ident] = previous


class Timer:
    """The seconds a `stage` block took (`.seconds`, set when it ends)."""

    seconds = 0.0


@contextlib.contextmanager
def stage(name: str):
    """Time the block and add its seconds to the current record's `<name>_s`."""
    record, timer = current(), Timer()
    if record is not None:
        record.stage = name
    start = time.perf_counter()
    try:
        yield timer
    finally:
        timer.seconds = time.perf_counter() - start
        if record is not None:
            setattr(record, f"{name}_s", getattr(record, f"{name}_s") + timer.seconds)
            record.stage = None


def finished(record: Record) -> None:
    """Log a specialization that is ready to serve calls."""
    if record.tier in ("tape", "numpy") and record.background:
        logger.info("%s(%s) %s: %s tier while the specialized code compiles in the "
                    "background (%s)", record.function, record.signature, record.mode,
                    record.tier, record.figures())
    else:
        logger.info("%s(%s) %s: %s code, %s tier (%s)", record.function, record.signature,
                    record.mode, record.shape, record.tier, record.figures() or "from the cache")


def switched(record: Record, first_tier: str) -> None:
    logger.info("%s(%s) %s: the specialized %s code took over from the %s tier after %d "
                "call(s) (%s)", record.function, record.signature, record.mode, record.shape,
                first_tier, record.tier_calls, record.figures())


def failed(record: Record, error: BaseException) -> None:
    logger.warning("%s(%s) %s: compiling the specialized code failed; calls stay on the %s "
                   "tier (%s: %s)", record.function, record.signature, record.mode, record.tier,
                   type(error).__name__, error)


def progress_enabled(stream=None) -> bool:
    stream = sys.stderr if stream is None else stream
    if os.environ.get("JITAD_PROGRESS", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


_calls: dict = {}           # thread ident -> [what, start, shown] of calls running now
_ticker_lock = threading.Lock()
_ticker_running = [False]   # the thread writing progress lines runs while calls run


@contextlib.contextmanager
def progress(what: str, stream=None):
    """While the block runs (a call on the full path, which may trace and compile): once
    it has run PROGRESS_AFTER_S, a line on `stream` (stderr) saying what runs, which stage
    and for how long, rewritten each second and closed at the end. Nothing unless the
    stream is a terminal and JITAD_PROGRESS is not 0. One shared thread writes the lines."""
    if not progress_enabled(stream):
        yield
        return
    stream = sys.stderr if stream is None else stream
    ident = threading.get_ident()
    if ident in _calls:         # nested (a call inside a trace): the outer line covers it
        yield
        return
    call = [what, time.perf_counter(), False, stream]
    with _ticker_lock:
        _calls[ident] = call
        if not _ticker_running[0]:
            _ticker_running[0] = True
            threading.Thread(target=_tick, name="jitad-progress", daemon=True).start()
    try:
        yield
    finally:
        with _ticker_lock:
            del _calls[ident]
        if call[2]:
            _show(ident, call, final=True)


def _show(ident: int, call: list, final: bool = False) -> None:
    what, start, _, stream = call
    record = current(ident)
    step = "done" if final else (record.stage if record is not None and record.stage
                                 else "working")
    try:
        stream.write(f"\rjitad: {what}: {step} ({time.perf_counter() - start:.0f} s)\x1b[K"
                     + ("\n" if final else ""))
        stream.flush()
    except (OSError, ValueError):
        pass
    call[2] = True


def _tick() -> None:
    while True:
        time.sleep(0.5)
        with _ticker_lock:
            if not _calls:
                _ticker_running[0] = False
                return
        now = time.perf_counter()
        for ident, call in list(_calls.items()):
            if now - call[1] >= PROGRESS_AFTER_S:
                _show(ident, call)


def _after_fork_in_child() -> None:
    global _ticker_lock
    _ticker_lock = threading.Lock()
    _ticker_running[0] = False
    _calls.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
