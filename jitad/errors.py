"""Error classes. Every message says what failed, what was observed, where, and how to fix it."""
import numpy as np


class JitadError(Exception):
    """Base class of every error jitad raises on purpose."""


class TraceError(JitadError, TypeError):
    """The user's function did something that cannot be traced (reported with the user's line)."""


class ShapeError(JitadError, ValueError):
    """Operand shapes or dtypes do not fit a primitive's rule (reported with the user's line)."""


class LinAlgShapeError(ShapeError, np.linalg.LinAlgError):
    """A linear-algebra function got an operand it does not take (not a square matrix): a
    `np.linalg.LinAlgError`, as NumPy's."""


class ArgumentError(JitadError, TypeError):
    """An argument of the compiled function has an unsupported kind or the wrong count."""


class NonScalarOutputError(JitadError, TypeError):
    """The differentiated function returned something other than a scalar."""


class GuardLimitError(JitadError):
    """A branch on traced values keeps changing outcome: too many specializations."""


class RetraceWarning(UserWarning):
    """A function keeps being traced again: globals or closure values it reads are rebound
    between calls (pass such values as arguments instead), or it reads sizes and is called
    with many argument shapes (each compiles its own code)."""


class GuardFailed(Exception):
    """Raised by compiled code when a recorded guard does not hold for the new arguments.

    Not a user-facing error: the compiled function catches it and retraces.
    """


class CacheWarning(UserWarning):
    """The disk cache cannot be trusted or written (unsafe directory, disk error): jitad
    runs from memory. Issued once per directory and process."""
