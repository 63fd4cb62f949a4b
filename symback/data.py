"""Reading data and parameter files: CSV with a header row, and .npz without pickle.

:func:`training_arrays` turns such a file into the X and Y a derivation
trains on: columns matched by name (a spec file) or split into inputs and
targets (a layer network), class labels one-hot encoded for a softmax.

Every way a file can be wrong — missing, not what its suffix says,
truncated, corrupt, declaring arrays larger than it holds or than this
machine could hold, non-numeric or non-finite values — ends in one
:class:`~symback.errors.DataError` that names the user's path and the
problem.  Nothing here allocates more than a file really contains.
"""
from __future__ import annotations

import csv
import io
import math
import os
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from .errors import DataError, SymbackError, TrainingError
from .layout import BatchRows, OneSample, Scalars

__all__ = ["load_data", "read_npz", "available_memory", "format_bytes", "training_arrays",
           "output_function", "check_rate", "check_finite", "check_seed", "sample_shape"]

# Headers written by np.save are a few hundred bytes; a larger one is not a real array.
_MAX_HEADER = 10_000


def available_memory() -> int | None:
    """Bytes of memory this machine can still give a process (Linux MemAvailable), or None."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:    # other Unix: physical memory, an upper bound
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def format_bytes(n: float) -> str:
    """1.6e12 -> '1.6 TB' (decimal units, as disks and `free -h --si` count)."""
    for unit in ("bytes", "kB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000


def read_npz(path, what: str = "data") -> dict[str, np.ndarray]:
    """The arrays of an .npz file (``np.savez``), read without pickle.

    Each array's header is read and checked against the bytes the archive
    really holds (and against this machine's memory) before anything is
    allocated, so a corrupt or hostile file is a DataError, never a
    MemoryError or a process killed for memory.  ``what`` ("data",
    "parameters") goes into the messages.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            return {info.filename[:-4]: _read_member(path, archive, info)
                    for info in archive.infolist() if info.filename.endswith(".npy")}
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{path}: no such {what} file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, not a {what} file") from None
    except PermissionError:
        raise DataError(f"cannot read {path}: permission denied") from None
    except zipfile.BadZipFile as exc:
        if _starts_with(path, b"\x93NUMPY"):
            reason = "it is a single .npy array, not an .npz archive (write one with np.savez)"
        elif _starts_with(path, b"PK"):
            detail = "its zip directory is missing" if "not a zip file" in str(exc) else str(exc)
            reason = f"a damaged .npz file, truncated or corrupt ({detail})"
        else:
            reason = "not an .npz file (a zip archive written by np.savez)"
        raise DataError(f"{path}: {reason}") from None
    except MemoryError:
        raise DataError(f"{path}: not enough memory to read the {what}") from None
    except (EOFError, ValueError, TypeError, OSError, RuntimeError, NotImplementedError,
            zlib.error, struct.error, OverflowError) as exc:
        # truncated or corrupt members, unsupported compression, encrypted entries...
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise DataError(f"{path}: a damaged .npz file of {what}, truncated or corrupt ({reason})") from None


def _read_member(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    name = info.filename[:-4]
    with archive.open(info) as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh, max_header_size=_MAX_HEADER)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh, max_header_size=_MAX_HEADER)
        else:
            raise DataError(f"{path}: array {name!r} uses .npy format {version}, which symback does not read")
        if dtype.hasobject:
            raise DataError(f"{path}: array {name!r} holds Python objects, which would need pickle; "
                            "symback loads numbers only")
        count = 1
        for n in shape:
            count *= n
        nbytes = count * dtype.itemsize          # Python ints: a hostile shape cannot overflow
        held = info.file_size - fh.tell()
        if nbytes > held:
            raise DataError(f"{path}: array {name!r} declares shape {shape} ({format_bytes(nbytes)}) "
                            f"but the file holds {format_bytes(max(held, 0))} of it: truncated or corrupt")
        free = available_memory()
        if free is not None and nbytes > free:
            raise DataError(f"{path}: array {name!r} of shape {shape} needs {format_bytes(nbytes)}; "
                            f"this machine has {format_bytes(free)} available")
        raw = fh.read(nbytes)
    if len(raw) != nbytes:
        raise DataError(f"{path}: array {name!r} is truncated ({len(raw)} of {nbytes} bytes)")
    flat = np.frombuffer(raw, dtype=dtype, count=count)
    return flat.reshape(shape, order="F" if fortran else "C").copy()   # copy: a writable array


def _starts_with(path: Path, prefix: bytes) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(len(prefix)) == prefix
    except OSError:
        return False


def load_data(path) -> tuple[list[str] | None, dict]:
    """Read training data: a CSV file with a header row, or an .npz file.

    Returns ``(columns, arrays)``: for a CSV the column names and
    ``{"table": n×k array}``; for an .npz ``(None, {name: array})``.
    Non-numeric cells, ragged rows, NaN or infinite values raise DataError.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such data file")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not a data file")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        arrays = read_npz(path, "data")
        for k, a in arrays.items():
            if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
                raise DataError(f"{path}: array {k!r} is not real numbers (dtype {a.dtype})")
            if not np.all(np.isfinite(a)):
                raise DataError(f"{path}: array {k!r} contains NaN or infinite values")
        return None, arrays
    if suffix not in (".csv", ".txt"):
        what = f"{path.suffix} is not a data format symback reads" if path.suffix else "no suffix"
        raise DataError(f"{path}: {what}; data must be a .csv file with a header row or an .npz file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text file") from None
    except PermissionError:
        raise DataError(f"cannot read {path}: permission denied") from None
    try:
        rows = [r for r in csv.reader(io.StringIO(text)) if r and any(c.strip() for c in r)]
    except csv.Error as exc:        # a cell over the csv module's field limit, a NUL byte, ...
        raise DataError(f"{path}: not a readable CSV file ({exc})") from None
    if not rows:
        raise DataError(f"{path}: empty file")
    header = [h.strip() for h in rows[0]]
    # a file without a header is the likelier mistake, and its first row can be long: name
    # what is wrong, not the whole row
    if all(_is_number(h) for h in header if h):
        raise DataError(f"{path}: the first row must name the columns (a header row), got numbers")
    if any(not h for h in header):
        raise DataError(f"{path}: the header row has an empty name (column {header.index('') + 1})")
    repeated = sorted({h for h in header if header.count(h) > 1})
    if repeated:
        raise DataError(f"{path}: the header row names a column more than once: "
                        f"{', '.join(map(repr, repeated[:5]))}{', ...' if len(repeated) > 5 else ''}")
    if len(rows) < 2:
        raise DataError(f"{path}: no data rows after the header")
    try:        # NumPy's C reader first; the loop below only runs to name a bad cell
        table = np.loadtxt(io.StringIO(text), delimiter=",", skiprows=1, ndmin=2, dtype=float)
        if table.shape != (len(rows) - 1, len(header)):
            raise ValueError("shape")
    except ValueError:
        table = _parse_cells(path, header, rows[1:])
    bad = ~np.isfinite(table)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise DataError(f"{path}: column {header[j]!r} has NaN or infinite values (first at row {i + 2})")
    return header, {"table": table}


def _parse_cells(path, header, rows) -> np.ndarray:
    """Cell by cell, so that the error names the row and column of a bad value."""
    table = np.empty((len(rows), len(header)))
    for i, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise DataError(f"{path}: row {i} has {len(row)} values, the header has {len(header)} columns")
        for j, cell in enumerate(row):
            try:
                table[i - 2, j] = float(cell)
            except ValueError:
                raise DataError(f"{path}: row {i}, column {header[j]!r}: {cell.strip()!r} is not a number") from None
    return table


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


# ---------------------------------------------------------------- training data
def training_arrays(d, path, targets: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """X and Y for derivation `d` from the data file at `path` (see ``symback train --help``)."""
    columns, arrays = load_data(path)
    # one reader per form of the graph's data (symback.layout): columns, rows, or one sample each
    return READERS[type(d.layout)](d, path, columns, arrays, targets)


def _column_arrays(d, path, columns, arrays, targets):
    """X and Y of a scalar graph: one column per input and per target, matched by name."""
    if targets:
        raise SymbackError("--targets is for layer networks; a spec file names its inputs "
                           "and targets, and the data's columns are matched by those names")
    g = d.graph
    if columns is None and "X" in arrays and not set(g.input_names) <= set(arrays):
        X, Y = _xy_arrays(path, arrays)
    else:
        X = _select(path, columns, arrays, g.input_names, "inputs")
        Y = _select(path, columns, arrays, g.target_names, "targets") if g.target_names \
            else np.zeros((len(X), 0))
    _check_width(path, X, len(g.input_names), "input columns", "the spec's inputs")
    _check_width(path, Y, len(g.target_names), "target columns", "the spec's targets")
    return X, Y


def _data_shapes(d):
    """The declared shapes of a matrix graph's one input and one target matrix."""
    g = d.graph
    if len(g.input_names) != 1 or len(g.target_names) != 1:
        raise SymbackError("training data fill one input matrix X and one target matrix Y; "
                           f"this graph has inputs {g.input_names} and targets {g.target_names}")
    return tuple(g.shape(g.input_names[0])), tuple(g.shape(g.target_names[0]))


def _one_sample_arrays(d, path, columns, arrays, targets):
    """X and Y of a graph whose one sample is a matrix (contract 0.3): (n, rows, columns)."""
    if targets:         # its data are the arrays X and Y: there are no columns to choose from
        raise SymbackError("--targets names CSV columns; a network of images or sequences reads "
                           "the arrays X and Y of an .npz file")
    x_shape, y_shape = _data_shapes(d)
    image = getattr(d.graph, "input_images", {}).get("X")
    return _sample_arrays(path, columns, _as_samples(path, d, arrays), x_shape, y_shape, image)


def _row_arrays(d, path, columns, arrays, targets):
    """X and Y of a matrix graph with sb.BATCH rows: samples in rows (a CSV table or an .npz)."""
    from .functions import softmax
    x_shape, y_shape = _data_shapes(d)
    n_in, K = x_shape[1], y_shape[1]
    if columns is None:
        if targets:
            raise SymbackError("--targets names CSV columns; an .npz file holds arrays X and Y")
        X, Y = _xy_arrays(path, arrays)
    else:
        names = [t.strip() for t in targets.split(",")] if targets else [columns[-1]]
        if any(not n for n in names):
            raise SymbackError(f"malformed --targets {targets!r}")
        Y = _select(path, columns, arrays, names, "targets")
        X = arrays["table"][:, [j for j, c in enumerate(columns) if c not in names]]
    _check_width(path, X, n_in, "input columns", f"the network takes {n_in} inputs")
    if Y.shape[1] == 1 and K > 1 and output_function(d) is softmax:
        Y = _one_hot(path, Y[:, 0], K)
    _check_width(path, Y, K, "target columns", f"the output layer has {K} units")
    return X, Y


READERS = {Scalars: _column_arrays, BatchRows: _row_arrays, OneSample: _one_sample_arrays}


def _sample_arrays(path, columns, arrays, x_shape, y_shape, image=None):
    """X (n, *x_shape) and Y (n, *y_shape) of a one-sample graph: .npz arrays, the batch first
    (`image`: X's sample as (C, H, W) where the network reads images, named in the errors)."""
    if columns is not None:
        sample = f"an image {tuple(image)}" if image else f"a {x_shape[0]}×{x_shape[1]} matrix"
        raise DataError(f"{path}: this network's sample is {sample}; its data are an .npz file with arrays "
                        f"X of shape {_npz_forms('X', x_shape, image)} and Y of shape "
                        f"{_npz_forms('Y', y_shape)}, not a CSV table")
    if "X" not in arrays or "Y" not in arrays:
        raise DataError(f"{path}: an .npz file needs arrays named X and Y; it has {', '.join(arrays) or 'none'}")
    X, Y = arrays["X"], arrays["Y"]
    for name, a, shape in (("X", X, x_shape), ("Y", Y, y_shape)):
        want = tuple(int(k) for k in shape)
        if a.ndim != 3 or a.shape[1:] != want:
            raise DataError(f"{path}: {name} must have shape {_npz_forms(name, want, image)}, got {a.shape}")
    if len(X) != len(Y):
        raise DataError(f"{path}: X holds {len(X)} samples but Y {len(Y)}")
    if len(X) == 0:
        raise DataError(f"{path}: no samples")
    return X.astype(float), Y.astype(float)


def _npz_forms(name: str, shape, image=None) -> str:
    """The shapes an .npz array `name` may have for samples of `shape`, for an error message:
    images (n, C, H, W), one-row samples as (n, k), or (n, rows, columns)."""
    want = tuple(int(k) for k in shape)
    forms = ([f"(n, {', '.join(map(str, image))}) (images, channels first, as in PyTorch)"]
             if name == "X" and image else []) + ([f"(n, {want[1]})"] if want[0] == 1 else [])
    last = f"(n, {want[0]}, {want[1]})"
    if forms:
        return f"{', '.join(forms)} or {last}"
    return f"{last} (one {want[0]}×{want[1]} sample per entry of the first axis)" if name == "X" else last


def check_rate(lr, zero=False) -> None:
    """TrainingError unless the learning rate `lr` is a positive, finite number (fit); `zero`: or 0
    (a step of rate 0 leaves the parameters as they are, as torch.optim.SGD(lr=0) does)."""
    if not (isinstance(lr, (int, float, np.floating)) and not isinstance(lr, bool) and math.isfinite(lr)
            and (lr > 0 or (zero and lr == 0))):
        raise TrainingError(f"lr must be a {'non-negative' if zero else 'positive'} finite number, got {lr!r}")


def check_finite(X, Y, host=np.asarray) -> None:
    """DataError, saying how many and where, unless the data X and Y are all finite.

    One sum first, as the library computes it: NaN and infinity survive a sum, so finite data
    cost one pass and no mask in step's loop (a sum that overflows takes the exact look, and
    passes it).  Arrays whose values cannot be read (a torch meta tensor) are left to the call.
    """
    try:
        if math.isfinite(float(X.sum() + Y.sum())):
            return
        masks = [~np.isfinite(np.asarray(host(a))) for a in (X, Y)]
    except (RuntimeError, NotImplementedError, TypeError):
        return
    for what, bad in zip("XY", masks):
        if bad.any():
            row = int(np.argwhere(bad)[0][0])
            raise DataError(f"{what} holds NaN or infinite values ({int(bad.sum())} of them, the first "
                            f"in sample {row}); training cannot use them")


def check_seed(seed) -> None:
    """DataError unless `seed` is a whole number ≥ 0 (what NumPy's generators take)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DataError(f"seed must be a whole number >= 0, got {seed!r}")


def sample_shape(shape: tuple, want: tuple, image=None) -> tuple:
    """The shape (n, rows, columns) that data of `shape` take as samples of shape `want` (a
    reshape, a view): one sample, images (n, C, H, W) as in PyTorch when `image` is (C, H, W),
    or one-row samples as (n, k); `shape` itself where no form applies.  The one rule for the
    Models and the command line's reader."""
    if shape == want or (image is not None and shape == tuple(image)):     # one sample, one image
        return (1, *want)
    if image is not None and shape[1:] == tuple(image):             # PyTorch's (n, C, H, W)
        return (shape[0], *want)
    if len(shape) == 2 and want[0] == 1 and shape[1] == want[1]:    # one-row samples as (n, k)
        return (shape[0], 1, want[1])
    if shape == want[1:] and want[0] == 1:                          # one one-row sample as (k,)
        return (1, *want)
    return shape


def _as_samples(path, d, arrays) -> dict:
    """An image network's data as its one-sample matrices: X (n, C, H, W), PyTorch's layout, is
    (n, C, H·W); a one-row sample's X (n, k) is (n, 1, k), and a one-row output's Y (n, K), or
    class labels (n,) for a softmax output, is (n, 1, K), as :class:`symback.model.Model` takes
    them.  Other arrays pass unchanged (the shape check names what is expected)."""
    from .functions import softmax
    g, out = d.graph, dict(arrays)
    image = getattr(g, "input_images", {}).get("X")
    X, Y = arrays.get("X"), arrays.get("Y")
    want = tuple(int(v) for v in g.shape(g.input_names[0]))
    # images, or one row each, as Model takes them (a lone rows×columns sample is not data here)
    if X is not None and X.ndim > 1 and (X.shape != want or want[0] == 1):
        out["X"] = X.reshape(sample_shape(X.shape, want, image))
    rows, K = (int(v) for v in g.shape(g.target_names[0]))
    if Y is not None and rows == 1:
        if Y.ndim == 1 and len(Y) and K > 1 and output_function(d) is softmax:
            Y = _one_hot(path, Y, K)
        if Y.ndim == 2:
            out["Y"] = Y.reshape(len(Y), 1, Y.shape[1])
    return out


def _select(path, columns, arrays, names: list[str], what: str) -> np.ndarray:
    if columns is not None:
        missing = [n for n in names if n not in columns]
        if missing:
            raise DataError(f"{path}: no column {', '.join(map(repr, missing))} for the {what}; "
                            f"columns are {', '.join(columns)}")
        return arrays["table"][:, [columns.index(n) for n in names]]
    missing = [n for n in names if n not in arrays]
    if missing:
        raise DataError(f"{path}: no array {', '.join(map(repr, missing))} for the {what}; "
                        f"arrays are {', '.join(arrays)}")
    cols = []
    for n in names:
        a = arrays[n]
        if a.ndim != 1 and not (a.ndim == 2 and a.shape[1] == 1):
            raise DataError(f"{path}: array {n!r} must be one column, got shape {a.shape}")
        cols.append(a.reshape(-1))
    if len({len(c) for c in cols}) != 1:
        raise DataError(f"{path}: the arrays {', '.join(names)} have different lengths")
    return np.column_stack(cols)


def _xy_arrays(path, arrays):
    if "X" not in arrays or "Y" not in arrays:
        raise DataError(f"{path}: an .npz file needs arrays named X and Y; it has {', '.join(arrays) or 'none'}")
    X, Y = arrays["X"], arrays["Y"]
    X = X.reshape(-1, 1) if X.ndim == 1 else X
    Y = Y.reshape(-1, 1) if Y.ndim == 1 else Y
    if X.ndim != 2 or Y.ndim != 2:
        raise DataError(f"{path}: X and Y must be 2-D (samples in rows), got {X.shape} and {Y.shape}")
    if len(X) != len(Y):
        raise DataError(f"{path}: X has {len(X)} rows but Y has {len(Y)}")
    return X.astype(float), Y.astype(float)


def _check_width(path, A, width, what, why):
    if A.shape[1] != width:
        raise DataError(f"{path}: {A.shape[1]} {what}, but {why} (expected {width})")
    if len(A) == 0:
        raise DataError(f"{path}: no samples")


def _one_hot(path, labels, K) -> np.ndarray:
    ints = labels.astype(int)
    if not np.array_equal(ints, labels) or ints.min() < 0 or ints.max() >= K:
        raise DataError(f"{path}: for a softmax output of {K} classes the target column must hold "
                        f"integer labels 0..{K - 1} (or give {K} one-hot target columns)")
    Y = np.zeros((len(ints), K))
    Y[np.arange(len(ints)), ints] = 1.0
    return Y


def output_function(d):
    """The function the prediction node applies (softmax, sigmoid, ...), or None."""
    from .functions import softmax
    from .matrix import Softmax, activation_of
    if len(d.outputs) != 1:
        return None
    e = d.graph.expr(d.outputs[0])
    if isinstance(e, Softmax):
        return softmax
    act = activation_of(e)
    return act[0] if act else None
