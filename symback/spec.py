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

Expression text goes through :func:`parse_expr`: Python's ``ast`` parses
it and a whitelist walk builds SymPy objects directly — numbers, declared
names, the registry's activations and a few elementary functions, the
operators ``+ - * / **``.  Nothing a user writes is ever handed to
``eval``, ``exec`` or ``sympify``.
"""
from __future__ import annotations

import ast
import keyword
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import sympy as sp

from .errors import DefinitionError, SpecError
from .functions import ACTIVATIONS
from .graph import Graph

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["parse_expr", "load_spec", "read_spec", "spec_from_dict", "Spec", "functions", "parse_values"]

# Elementary functions a spec may call, beside every registered activation.
_ELEMENTARY = {
    "exp": sp.exp, "log": sp.log, "sqrt": sp.sqrt, "sin": sp.sin, "cos": sp.cos,
    "tan": sp.tan, "sinh": sp.sinh, "cosh": sp.cosh, "abs": sp.Abs, "Abs": sp.Abs,
    "Max": sp.Max, "Min": sp.Min, "max": sp.Max, "min": sp.Min,
}
_ALIASES = {"ReLU": "relu", "sigma": "sigmoid", "LReLU": "leaky_relu"}
_CONSTANTS = {"pi": sp.pi, "E": sp.E}
_BINARY = {ast.Add: sp.Add, ast.Mult: sp.Mul,
           ast.Sub: lambda a, b: sp.Add(a, -b),
           ast.Div: lambda a, b: sp.Mul(a, sp.Pow(b, -1)),
           ast.Pow: sp.Pow}
_REFUSED = {  # node type -> what to tell the user
    ast.Attribute: "attribute access", ast.Subscript: "subscripts", ast.Lambda: "lambda",
    ast.ListComp: "comprehensions", ast.SetComp: "comprehensions", ast.DictComp: "comprehensions",
    ast.GeneratorExp: "comprehensions", ast.Compare: "comparisons", ast.BoolOp: "boolean operators",
    ast.IfExp: "conditional expressions", ast.NamedExpr: "assignments", ast.Starred: "starred arguments",
    ast.List: "lists", ast.Tuple: "tuples", ast.Dict: "dicts", ast.Set: "sets",
    ast.JoinedStr: "strings", ast.Await: "await", ast.Yield: "yield", ast.YieldFrom: "yield",
}
MAX_TEXT = 10_000      # characters in one expression
MAX_EXPONENT = 1_000   # |n| in a numeric power, so "9**9**9" cannot hang the parser


def functions() -> dict:
    """Name -> callable for every function a spec expression may call (read at call time,
    so activations registered by the user are included)."""
    table = dict(_ELEMENTARY)
    table.update(ACTIVATIONS)
    for alias, name in _ALIASES.items():
        if name in ACTIVATIONS:
            table[alias] = ACTIVATIONS[name]
    return table



def parse_expr(text: str, names: Mapping[str, sp.Expr] | Iterable[str] | Graph | None = (), *,
               where: str = "expression") -> sp.Expr:
    """Parse expression text into a SymPy expression, by a whitelist, without evaluating it.

    ``names`` maps each allowed name to its SymPy object; a list of names
    (or a string "x y") makes plain Symbols; a :class:`Graph` offers
    every name it has so far.  Allowed: numbers, those names, ``pi``
    and ``E``, ``+ - * / **`` and unary ``-``/``+``, and calls of the
    registry's activations (sigmoid, tanh, relu, ...) and of exp, log,
    sqrt, sin, cos, tan, sinh, cosh, abs, Max, Min.  Anything else —
    attribute access, subscripts, strings, keywords, lambda, ``eval``,
    dunder names — raises :class:`SpecError`, which names the offending
    piece and its column; ``where`` says which expression it was in.
    """
    if isinstance(names, Graph):
        names = _known(names)
    elif names is None:
        names = {}
    elif isinstance(names, str):
        names = {n: sp.Symbol(n) for n in names.replace(",", " ").split()}
    elif not isinstance(names, Mapping):
        names = {n: sp.Symbol(n) for n in names}
    if not isinstance(text, str):
        raise SpecError(f"{where}: expected expression text, got {type(text).__name__} {text!r}")
    if len(text) > MAX_TEXT:
        raise SpecError(f"{where}: expression longer than {MAX_TEXT} characters")
    if not text.strip():
        raise SpecError(f"{where}: empty expression")
    if "\n" in text.strip() or "\r" in text:
        raise SpecError(f"{where}: an expression must be on one line")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        col = f" at column {exc.offset}" if exc.offset else ""
        raise SpecError(f"{where}: cannot parse {_short(text.strip())!r}{col}: {exc.msg}") from None
    except (RecursionError, MemoryError, ValueError):
        raise SpecError(f"{where}: expression too deeply nested or malformed") from None
    walker = _Walker(names, functions(), where, text.strip())
    try:
        result = walker.visit(tree.body)
    except RecursionError:
        raise SpecError(f"{where}: expression too deeply nested") from None
    if not isinstance(result, sp.Expr):
        raise SpecError(f"{where}: {_short(text.strip())!r} is not a scalar expression")
    if result.has(sp.zoo, sp.nan, sp.oo, -sp.oo):
        raise SpecError(f"{where}: {_short(text.strip())!r} is undefined or infinite (e.g. log(0))")
    return result


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


class _Walker:
    """Builds SymPy objects from a whitelisted subset of Python's expression syntax."""

    def __init__(self, names, funcs, where, text):
        self.names, self.funcs, self.where, self.text = names, funcs, where, text

    def fail(self, node, what: str):
        piece = _short(ast.get_source_segment(self.text, node) or type(node).__name__)
        col = getattr(node, "col_offset", None)
        at = f" (column {col + 1})" if col is not None else ""
        raise SpecError(f"{self.where}: {what} {piece!r}{at}")

    def visit(self, node):
        if isinstance(node, ast.Constant):
            return self.constant(node)
        if isinstance(node, ast.Name):
            return self.name(node)
        if isinstance(node, ast.BinOp):
            return self.binop(node)
        if isinstance(node, ast.UnaryOp):
            return self.unary(node)
        if isinstance(node, ast.Call):
            return self.call(node)
        what = _REFUSED.get(type(node), f"unsupported syntax ({type(node).__name__})")
        self.fail(node, f"{what} not allowed:")

    def constant(self, node):
        v = node.value
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            self.fail(node, "only numbers are allowed as constants, not")
        if isinstance(v, float):
            if v != v or v in (float("inf"), float("-inf")):
                self.fail(node, "non-finite number")
            # the shortest repr of a float gives the decimal the user wrote: 0.1 -> 1/10, exactly
            return sp.Rational(repr(v))
        return sp.Integer(v)

    def name(self, node):
        n = node.id
        if n.startswith("__"):
            self.fail(node, "dunder names are not allowed:")
        if n in self.names:
            return self.names[n]
        if n in _CONSTANTS:
            return _CONSTANTS[n]
        if n in self.funcs:
            self.fail(node, "a function must be called with an argument:")
        known = ", ".join(sorted(self.names)) or "none declared"
        self.fail(node, f"unknown name (declared names: {known}):")

    def binop(self, node):
        op = _BINARY.get(type(node.op))
        if op is None:
            hint = "; write powers as **" if isinstance(node.op, ast.BitXor) else ""
            self.fail(node, f"operator {type(node.op).__name__} not allowed{hint}:")
        left, right = self.visit(node.left), self.visit(node.right)
        if isinstance(node.op, ast.Pow) and right.is_Number and abs(right) > MAX_EXPONENT:
            self.fail(node, f"exponent larger than {MAX_EXPONENT} in")
        if isinstance(node.op, ast.Div) and right == 0:
            self.fail(node, "division by zero in")
        return op(left, right)

    def unary(self, node):
        if isinstance(node.op, ast.USub):
            return -self.visit(node.operand)
        if isinstance(node.op, ast.UAdd):
            return self.visit(node.operand)
        self.fail(node, f"operator {type(node.op).__name__} not allowed:")

    def call(self, node):
        if not isinstance(node.func, ast.Name):
            self.fail(node.func, "only plain function names may be called, not")
        fname = node.func.id
        if fname.startswith("__") or fname not in self.funcs:
            allowed = ", ".join(sorted(self.funcs))
            self.fail(node.func, f"unknown or forbidden function (allowed: {allowed}):")
        if node.keywords:
            self.fail(node, "keyword arguments are not allowed:")
        if not node.args:
            self.fail(node, "a function needs an argument:")
        args = [self.visit(a) for a in node.args]
        try:
            return self.funcs[fname](*args)
        except (TypeError, ValueError) as exc:
            self.fail(node, f"bad call ({exc}):")


def parse_values(text: str) -> dict:
    """'x=3, w1=0.1, y=1' -> {'x': 3, 'w1': 1/10, 'y': 1} as exact SymPy numbers.

    Each value is a number, optionally signed (parsed, not evaluated).
    """
    out = {}
    for item in (p.strip() for p in str(text).split(",")):
        if not item:
            continue
        name, eq, value = item.partition("=")
        name = name.strip()
        if not eq or not name.isidentifier():
            raise SpecError(f"--values: expected name=number, got {item!r}")
        num = parse_expr(value, {}, where=f"value of {name}")
        if not num.is_Number:
            raise SpecError(f"--values: the value of {name} must be a number, got {value.strip()!r}")
        out[name] = num
    if not out:
        raise SpecError("--values: no values given (expected e.g. 'x=3,w1=0.1,y=1')")
    return out


@dataclass
class Spec:
    """A spec file read: the Graph, and the worked example it carries (if any)."""

    graph: Graph
    path: str = ""
    values: dict = field(default_factory=dict)
    lr: sp.Expr | None = None


_KEYS = {"inputs", "targets", "params", "nodes", "loss", "example"}


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
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not a UTF-8 text file") from None
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path}: not valid TOML: {exc}") from None
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


def spec_from_dict(data: dict, where: str = "spec") -> Spec:
    """Build a :class:`Spec` from the parsed TOML table (see the module docstring)."""
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise SpecError(f"{where}: unknown key(s) {', '.join(unknown)}; "
                        f"expected {', '.join(sorted(_KEYS))}")
    g = Graph()
    try:
        for key, declare in (("inputs", g.inputs), ("targets", g.targets), ("params", g.params)):
            names = _name_list(data, key, where)
            if names:
                declare(names)
        if not g.param_names:
            raise SpecError(f"{where}: no params declared (params = [\"w1\", ...])")
        nodes = data.get("nodes", {})
        if not isinstance(nodes, dict):
            raise SpecError(f"{where}: [nodes] must be a table of name = \"expression\"")
        for name, text in nodes.items():
            if not isinstance(text, str):
                raise SpecError(f"{where}: node {name!r} must be expression text in quotes")
            _usable(name, where)
            g.node(name, parse_expr(text, _known(g), where=f"{where}: node {name!r}"))
        loss = data.get("loss")
        if isinstance(loss, str):
            loss = {"cost": loss}
        if not isinstance(loss, dict) or "cost" not in loss:
            raise SpecError(f"{where}: missing [loss] with cost = \"expression\"")
        extra = sorted(set(loss) - {"cost", "reduction", "name"})
        if extra:
            raise SpecError(f"{where}: unknown key(s) in [loss]: {', '.join(extra)}")
        name = loss.get("name", "C")
        if not isinstance(name, str) or not isinstance(loss.get("reduction", "mean"), str):
            raise SpecError(f"{where}: [loss] name and reduction must be strings")
        cost = parse_expr(loss["cost"], _known(g), where=f"{where}: loss")
        g.loss(cost, reduction=loss.get("reduction", "mean"), name=name)
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
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise SpecError(f"{where}: [example] value of {k!r} must be a number")
        spec.values[k] = sp.Rational(repr(v)) if isinstance(v, float) else sp.Integer(v)
    if "lr" in example:
        lr = example["lr"]
        if isinstance(lr, bool) or not isinstance(lr, (int, float)):
            raise SpecError(f"{where}: [example] lr must be a number")
        spec.lr = sp.Rational(repr(lr)) if isinstance(lr, float) else sp.Integer(lr)
    return spec


def _known(g: Graph) -> dict:
    """Names usable in the next expression: everything declared or defined so far."""
    return {n: g.symbol(n) for n in g.order}
