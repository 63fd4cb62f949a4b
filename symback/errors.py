"""The one exception family symback raises for bad input."""
import os
import signal
import sys


class SymbackError(Exception):
    """Base class of every error symback raises on purpose.

    Catch this one class to handle any mistake in a network definition,
    a spec file, data, or a request for output.
    """


class DefinitionError(SymbackError, ValueError):
    """A graph, layer or function definition is malformed."""


class SpecError(SymbackError, ValueError):
    """A spec file or expression text cannot be parsed or uses an unknown name."""


class DataError(SymbackError, ValueError):
    """Training data has the wrong shape or contains non-finite values."""


class TrainingError(SymbackError, FloatingPointError):
    """Training produced a non-finite loss."""


class OutputError(SymbackError, OSError):
    """A document or file cannot be produced (missing TeX engine, bad suffix...)."""


class CertificateError(SymbackError, AssertionError):
    """A line of a document fails its check before the document is written: a bug in symback's
    own formulas (never a user's mistake), to be reported; nothing is written."""


class UnusedParameterWarning(UserWarning):
    """A parameter does not affect the loss (its gradient is always 0)."""


def warn_user(message: str, category=UserWarning) -> None:
    """warnings.warn, attributed to the first caller outside symback: the user's own line."""
    import warnings
    here = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(here):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level + 1)


# ---------------------------------------------------------------- Ctrl-C while the command starts
# `symback ...` and `python -m symback ...` spend about a second importing SymPy
# and NumPy before cli.main() can catch anything, and an uncaught Ctrl-C there
# prints a traceback.  This module is the first one `import symback` runs, so
# when this process is that command it answers Ctrl-C with the same one line and
# exit status as main() until main() takes over (restore_interrupt).  A program
# that merely imports symback keeps Python's own KeyboardInterrupt.
def _interrupted_at_startup(signum, frame):   # pragma: no cover - exercised in a subprocess
    try:
        os.write(2, b"symback: error: interrupted\n")
    finally:
        os._exit(130)   # nothing has been written yet, so there is nothing to clean up


def _started_as_command() -> bool:
    argv = getattr(sys, "argv", None) or [""]
    if os.path.basename(argv[0]) in ("symback", "symback.exe"):
        return True
    # python -m symback: while runpy imports the package, argv[0] is "-m"
    orig = getattr(sys, "orig_argv", [])
    return argv[0] == "-m" and ("-msymback" in orig
                                or any(a == "-m" and b == "symback" for a, b in zip(orig, orig[1:])))


def restore_interrupt() -> None:
    """Give Ctrl-C back to Python (a KeyboardInterrupt) once cli.main() can handle it."""
    if signal.getsignal(signal.SIGINT) is _interrupted_at_startup:
        signal.signal(signal.SIGINT, signal.default_int_handler)


if _started_as_command() and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
    try:
        signal.signal(signal.SIGINT, _interrupted_at_startup)
    except ValueError:   # pragma: no cover - not the main thread
        pass
