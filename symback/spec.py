"""Spec files: a scalar network written as TOML, its expressions parsed, never evaluated.

A spec file declares names and defines nodes by expression text::

    inputs  = ["x1", "x2"]
    targets = ["y"]
    params  = ["w1", "w2", "b"]

    [nodes]                  # in order; each may use the names above it
    a_1  = "w1*x1"
    yhat = "b + a_1"

    [loss]
    cost      = "(yhat - y)**2"
    reduction = "mean"       # or "sum"; optional
    name      = "C"          # optional

    [example]                # optional: a worked numeric example
    values = { x1 = 3, w1 = 0.1, b = 0, y = 1 }
    lr     = 1

A matrix graph gives a ``[shapes]`` table, ``name = ["m", 3]`` (``"m"``
is the batch: rows are samples), and writes products with ``@``, the
transpose as ``W.T``, the m×1 column of ones as ``ones``, and calls
``softmax``, ``hadamard``, ``sumsq`` and the losses (``cross_entropy(Yhat, Y)``)::

    inputs = ["X"]
    targets = ["Y"]
    params = ["W1", "b1", "W2", "b2"]
    [shapes]
    X = ["m", 3]
    Y = ["m", 2]
    W1 = [3, 4]
    b1 = [1, 4]
    W2 = [4, 2]
    b2 = [1, 2]
    [nodes]
    A1 = "tanh(X @ W1 + ones @ b1)"
    Yhat = "softmax(A1 @ W2 + ones @ b2)"
    [loss]
    cost = "cross_entropy(Yhat, Y)"
    penalty = "sumsq(W1) / 200"           # optional

A spec whose shapes do not mention ``"m"`` describes one sample that is itself a
matrix (a sequence of T rows, contract 0.3); its data are an .npz file with X and Y
of shape (n, rows, cols), ``ones`` is then the T×1 column, and transformer pieces are
called as in Python: ``softmax(S, mask="causal")`` (the one string expression text may
hold, as the value of ``mask=``), ``layer_norm(H, gamma, beta)`` (optionally ``eps=``),
``gelu(Z)`` (see ``examples/attention.toml``).

A layer network (a ``Sequential`` of builder layers: Conv2d, pools, Dense, attention, …)
is written as ``[[layer]]`` tables instead: :mod:`symback.layerspec`, ``examples/cnn.toml``.

Expression text goes through :func:`symback.parse.parse_expr`: parsed by a
whitelist, never evaluated.
"""
from __future__ import annotations

import keyword
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import sympy as sp

from .errors import DefinitionError, SpecError
from .graph import Graph
from .layerspec import is_layer_spec, sequential_from_dict
from .matrix import BATCH
from .parse import MAX_BITS, functions, known_names, number_problem, parse_expr, parse_values

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

# parse_expr, functions and parse_values live in symback.parse; spec re-exports them as before
__all__ = ["parse_expr", "load_spec", "read_spec", "spec_from_dict", "Spec", "functions", "parse_values"]


@dataclass
class Spec:
    """A spec file read: the Graph, and the worked example it carries (if any)."""

    graph: Graph
    path: str = ""
    values: dict = field(default_factory=dict)
    lr: sp.Expr | None = None


_KEYS = {"inputs", "targets", "params", "shapes", "nodes", "loss", "example"}


def read_spec(path) -> Spec:
    """Read a TOML spec file into a :class:`Spec` (graph + worked example)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except IsADirectoryError:
        raise SpecError(f"{path}: is a directory, not a spec file") from None
    except FileNotFoundError:
        raise SpecError(f"{path}: no such spec file") from None
    try:
        # utf-8-sig: editors on Windows start UTF-8 files with a byte-order mark
        data = tomllib.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not a UTF-8 text file") from None
    except tomllib.TOMLDecodeError as exc:
        # a JSON or YAML file is the likely mistake: say that specs are TOML, and where to look
        hint = "" if path.suffix.lower() == ".toml" else " (spec files are TOML, as examples/*.toml)"
        raise SpecError(f"{path}: not valid TOML: {exc}{hint}") from None
    except RecursionError:              # tomllib reads nested arrays and tables recursively
        raise SpecError(f"{path}: its TOML is nested too deeply to read") from None
    return spec_from_dict(data, str(path))


def load_spec(path) -> Graph:
    """Read a TOML spec file (format in DESIGN.md) into a :class:`Graph`."""
    return read_spec(path).graph


def _name_list(data, key, where) -> list[str]:
    value = data.get(key, [])
    if isinstance(value, str):
        value = value.replace(",", " ").split()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SpecError(f"{where}: {key!r} must be a list of names, e.g. {key} = [\"a\", \"b\"]")
    for v in value:
        _usable(v, where)
    return value


def _usable(name: str, where: str) -> None:
    """Refuse a name that expression text could never refer to (a Python keyword)."""
    if keyword.iskeyword(name):
        raise SpecError(f"{where}: {name!r} is a Python keyword, so expressions cannot use it; rename it")


#: the most names (inputs, targets, params, nodes) a spec file may declare: each node's
#: expression is parsed against every name before it, so the work grows with the square
MAX_NAMES = 2000


def spec_from_dict(data: dict, where: str = "spec") -> Spec:
    """Build a :class:`Spec` from the parsed TOML table (see the module docstring)."""
    if is_layer_spec(data):     # [[layer]] tables: a Sequential of builder layers
        return Spec(sequential_from_dict(data, where), where)
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise SpecError(f"{where}: unknown key(s) {', '.join(unknown)}; "
                        f"expected {', '.join(sorted(_KEYS))}")
    g = Graph()
    shapes = _shapes(data.get("shapes", {}), where)
    try:
        for key, declare in (("inputs", g.inputs), ("targets", g.targets), ("params", g.params)):
            for name in _name_list(data, key, where):
                declare([name], shape=shapes.pop(name, None))   # a list: the name is used as written
        if shapes:
            raise SpecError(f"{where}: [shapes] names {', '.join(sorted(shapes))}, which "
                            "are not declared inputs, targets or params")
        if not g.param_names:
            raise SpecError(f"{where}: no params declared (params = [\"w1\", ...])")
        nodes = data.get("nodes", {})
        if not isinstance(nodes, dict):
            raise SpecError(f"{where}: [nodes] must be a table of name = \"expression\"")
        if len(nodes) + len(g.order) > MAX_NAMES:
            raise SpecError(f"{where}: {len(nodes) + len(g.order):,} names; a spec file holds at most "
                            f"{MAX_NAMES:,} (for a larger network, build it in Python with sb.Graph)")
        for name, text in nodes.items():
            if not isinstance(text, str):
                raise SpecError(f"{where}: node {name!r} must be expression text in quotes")
            _usable(name, where)
            g.node(name, parse_expr(text, known_names(g), where=f"{where}: node {name!r}"))
            g.written_text[name] = text
        loss = data.get("loss")
        if isinstance(loss, str):
            loss = {"cost": loss}
        if not isinstance(loss, dict) or "cost" not in loss:
            raise SpecError(f"{where}: missing [loss] with cost = \"expression\"")
        extra = sorted(set(loss) - {"cost", "reduction", "name", "penalty"})
        if extra:
            raise SpecError(f"{where}: unknown key(s) in [loss]: {', '.join(extra)}")
        name = loss.get("name", "C")
        if not isinstance(name, str) or not isinstance(loss.get("reduction", "mean"), str):
            raise SpecError(f"{where}: [loss] name and reduction must be strings")
        cost = parse_expr(loss["cost"], known_names(g), where=f"{where}: loss")
        penalty = parse_expr(loss["penalty"], known_names(g), where=f"{where}: penalty") if "penalty" in loss else None
        g.loss(cost, reduction=loss.get("reduction", "mean"), name=name, penalty=penalty)
    except DefinitionError as exc:
        raise SpecError(f"{where}: {exc}") from None
    spec = Spec(g, where)
    example = data.get("example", {})
    if not isinstance(example, dict) or set(example) - {"values", "lr"}:
        raise SpecError(f"{where}: [example] holds only values = {{...}} and lr = number")
    values = example.get("values", {})
    if not isinstance(values, dict):
        raise SpecError(f"{where}: [example] values must be a table name = number")
    for k, v in values.items():
        if k not in g.order or g.kind(k) not in ("input", "target", "param"):
            raise SpecError(f"{where}: [example] value for {k!r}, which is not an input, target or param")
        spec.values[k] = _example_number(v, f"{where}: [example] value of {k!r}")
    if "lr" in example:
        spec.lr = _example_number(example["lr"], f"{where}: [example] lr")
        if spec.lr <= 0:
            raise SpecError(f"{where}: [example] lr must be positive, got {example['lr']}")
    return spec


def _example_number(v, what: str) -> sp.Rational:
    """A TOML number as the exact SymPy number the user wrote; nan, inf and huge ones refused."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise SpecError(f"{what} must be a number, got {v!r}")
    if isinstance(v, float) and not math.isfinite(v):
        raise SpecError(f"{what} must be a finite number, got {v}")
    if isinstance(v, int) and v.bit_length() > MAX_BITS:
        raise SpecError(f"{what} has more than {MAX_BITS} bits")
    num = sp.Rational(repr(v)) if isinstance(v, float) else sp.Integer(v)
    problem = number_problem(num)
    if problem:
        raise SpecError(f"{what} {problem}")
    return num


def _shapes(table, where) -> dict:
    """[shapes] name = [rows, cols], "m" for the batch -> {name: (rows, cols)}."""
    if not isinstance(table, dict):
        raise SpecError(f"{where}: [shapes] must be a table name = [rows, cols]")
    out = {}
    for name, shape in table.items():
        if not (isinstance(shape, list) and len(shape) == 2):
            raise SpecError(f"{where}: shape of {name!r} must be [rows, cols], got {shape!r}")
        dims = []
        for d in shape:
            if d == "m":
                dims.append(BATCH)
            elif isinstance(d, int) and not isinstance(d, bool) and 1 <= d <= 10 ** 9:
                dims.append(d)
            else:
                raise SpecError(f"{where}: shape of {name!r}: a dimension is a positive "
                                f"integer or \"m\" (the batch), got {d!r}")
        out[name] = tuple(dims)
    return out
