"""The `symback` command run in this process: its exit status, stdout and stderr, as a subprocess gives them.

A subprocess costs a Python start and the imports of SymPy (and of torch or JAX) again, one to
three seconds of the suite's each time; ``symback.cli.main`` in this process prints the same
lines and returns the same status.  The tests that are about the process itself (the console
script, ``python -m symback``, Ctrl-C, the startup guard, a module run without SymPy) still
start one.
"""
from __future__ import annotations

import contextlib
import io
import subprocess
import warnings


def _fresh_process_filters() -> None:
    """The warning filters a fresh Python has (pytest's own turn DeprecationWarning on)."""
    warnings.resetwarnings()
    warnings.simplefilter("default")
    for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
        warnings.filterwarnings("ignore", category=category)


def main_run(*args, cwd) -> subprocess.CompletedProcess:
    """`symback ARGS` in the folder `cwd`, through ``symback.cli.main`` in this process."""
    from symback.cli import main
    argv = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.chdir(cwd), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
            warnings.catch_warnings():
        _fresh_process_filters()
        code = main(argv)
    return subprocess.CompletedProcess(["symback", *argv], code, out.getvalue(), err.getvalue())
