"""Writing files: whole or not at all, and never over the command's own input.

:func:`atomic_write` writes a temporary file beside the target and renames
it into place, so a failure leaves nothing behind; :func:`check_output` and
:func:`refuse_overwrite` refuse an output path before any work is done.
Every failure is an :class:`~symback.errors.OutputError` (or a
:class:`~symback.errors.SymbackError` for a path that is an input) naming
the user's path.
"""
from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from .errors import OutputError, SymbackError

__all__ = ["atomic_write", "os_reason", "check_output", "refuse_overwrite", "same_file"]


def atomic_write(path: Path, data: bytes):
    """Write `data` to `path` whole or not at all: a temporary file beside it, then a rename.

    Any failure is an OutputError naming `path` (never the temporary file)
    and why: "cannot write out.tex: permission denied".
    """
    path = Path(path)
    tmp = None
    made = [d for d in reversed(path.parent.parents) if not d.exists()] + \
        ([path.parent] if not path.parent.exists() else [])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        umask = os.umask(0)    # mkstemp makes 0600 files; give the usual 0666 & ~umask
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        for d in reversed(made):     # folders made for this file go too: nothing left behind
            try:
                d.rmdir()
            except OSError:
                pass
        if isinstance(exc, OSError):
            raise OutputError(f"cannot write {path}: {os_reason(exc, path)}") from None
        raise


def os_reason(exc: OSError, path: Path | None = None) -> str:
    """The plain reason of an OSError, about the user's path rather than a temporary file."""
    if path is not None and isinstance(exc, IsADirectoryError):
        return "it is a directory"
    if path is not None and not path.parent.is_dir():
        for d in (path.parent, *path.parent.parents):
            if d.exists() and not d.is_dir():
                return f"{d} is not a directory"
        return f"no such directory {path.parent}"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    text = exc.strerror or str(exc) or type(exc).__name__
    return text[:1].lower() + text[1:]


def check_output(path: Path, suffixes, flag: str):
    """Refuse an output path before any work: wrong suffix or missing folder."""
    if path.suffix.lower() not in suffixes:
        raise OutputError(f"{flag} {path}: the file name must end in {' or '.join(suffixes)}")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"{flag} {path}: the folder {parent} does not exist")
    if path.is_dir():
        raise OutputError(f"{flag} {path}: is a directory")


def refuse_overwrite(out: Path, flag: str, **inputs) -> None:
    """Refuse an output path that is one of the command's input files (same file, any spelling)."""
    for what, given in inputs.items():
        if given and same_file(out, Path(given)):
            raise SymbackError(f"{flag} {out} is the {what} file {given}: writing it would destroy "
                               "the input; choose another output name")


def refuse_existing(path: Path, flag: str, overwrite: bool) -> None:
    """Refuse to replace an existing file unless the user asked to (``--overwrite``)."""
    if not overwrite and os.path.lexists(path):
        raise OutputError(f"{flag} {path} already exists; use --overwrite to replace it")


def same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)     # hard links and symlinks too
        return a.resolve() == b.resolve()
    except OSError:
        return False
