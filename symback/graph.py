"""Graph: a network as named SymPy nodes, checked as it is built."""
from __future__ import annotations

import re

import sympy as sp

from .errors import DefinitionError

__all__ = ["Graph", "split_names", "check_name"]

KINDS = ("input", "target", "param", "node", "loss")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def check_name(name) -> str:
    """Return `name` if it is a usable node name, else raise DefinitionError.

    Names are identifiers; LaTeX-style subscripts are written with an
    underscore (``a_1``).  Anything TeX could act on (``\\``, ``%``, ``#``,
    ``&``, braces) is refused here, so no user name can inject TeX.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise DefinitionError(
            f"invalid name {name!r}: names start with a letter and use only letters, "
            "digits and '_' (write a subscript as a_1)")
    return name


def split_names(names) -> list[str]:
    """'x1 x2', 'x1, x2' or ['x1', 'x2'] -> ['x1', 'x2']."""
    if isinstance(names, str):
        parts = [p for p in re.split(r"[\s,]+", names) if p]
    else:
        parts = [str(p) for p in names]
    if not parts:
        raise DefinitionError("no names given")
    return [check_name(p) for p in parts]


class Graph:
    """A network written as named SymPy nodes, in definition order.

    Each call adds symbols of one kind: ``inputs`` (the columns of X),
    ``targets`` (the columns of Y), ``params`` (trainable), ``node`` (an
    intermediate defined by an expression of earlier symbols), and finally
    one scalar ``loss``: the per-sample cost C, reduced over a batch by its
    mean (default) or sum.
    """

    def __init__(self):
        self._kind: dict[str, str] = {}
        self._symbol: dict[str, sp.Symbol] = {}
        self._expr: dict[str, sp.Expr] = {}
        self._children: dict[str, list[str]] = {}   # name -> users, in definition order
        self.order: list[str] = []
        self.loss_name: str | None = None
        self.reduction = "mean"

    # -- building -------------------------------------------------------
    def _declare(self, names, kind):
        syms = []
        for name in split_names(names):
            self._claim(name)
            sym = sp.Symbol(name)
            self._kind[name], self._symbol[name] = kind, sym
            self.order.append(name)
            syms.append(sym)
        return syms[0] if len(syms) == 1 else tuple(syms)

    def _claim(self, name):
        if self.loss_name is not None:
            raise DefinitionError(f"cannot add {name!r}: the loss is already defined, it must come last")
        if name in self._kind:
            raise DefinitionError(f"duplicate name {name!r}: already defined as a {self._kind[name]}")

    def inputs(self, names):
        """Declare input features (the columns of X, in this order)."""
        return self._declare(names, "input")

    def targets(self, names):
        """Declare targets (the columns of Y, in this order)."""
        return self._declare(names, "target")

    def params(self, names):
        """Declare trainable scalar parameters."""
        return self._declare(names, "param")

    def node(self, name: str, expr) -> sp.Symbol:
        """Define an intermediate ``name = expr``; expr may use only earlier names."""
        check_name(name)
        self._claim(name)
        expr = self._check_expr(name, expr)
        sym = sp.Symbol(name)
        self._kind[name], self._symbol[name], self._expr[name] = "node", sym, expr
        self._index_children(name, expr)
        self.order.append(name)
        return sym

    def loss(self, expr, reduction: str = "mean", name: str = "C") -> sp.Symbol:
        """Define the per-sample cost C = expr (a scalar) and its batch reduction."""
        if self.loss_name is not None:
            raise DefinitionError(f"a second loss: the graph already has the loss {self.loss_name!r}")
        if reduction not in ("mean", "sum"):
            raise DefinitionError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
        if isinstance(expr, (sp.MatrixBase, sp.MatrixExpr)) or (
                hasattr(expr, "shape") and getattr(expr, "shape", ()) not in ((), (1, 1))):
            raise DefinitionError(f"the loss must be a scalar, got a {type(expr).__name__} "
                                  f"of shape {getattr(expr, 'shape', '?')}")
        check_name(name)
        if name in self._kind:
            raise DefinitionError(f"duplicate name {name!r}: already defined as a {self._kind[name]}")
        expr = self._check_expr(name, expr)
        if not any(self._kind[s.name] in ("param", "node") for s in expr.free_symbols):
            raise DefinitionError("the loss depends on no parameter or node")
        sym = sp.Symbol(name)
        self._kind[name], self._symbol[name], self._expr[name] = "loss", sym, expr
        self._index_children(name, expr)
        self.order.append(name)
        self.loss_name, self.reduction = name, reduction
        return sym

    def _check_expr(self, name, expr) -> sp.Expr:
        if isinstance(expr, str):
            raise DefinitionError(f"{name!r}: give a SymPy expression, not a string "
                                  "(spec files parse text; see symback.spec)")
        if isinstance(expr, (sp.MatrixBase, sp.MatrixExpr)):
            raise DefinitionError(f"{name!r} must be a scalar expression, got a matrix")
        try:
            expr = sp.sympify(expr, strict=True)
        except (sp.SympifyError, TypeError) as exc:
            raise DefinitionError(f"{name!r}: not a SymPy expression: {expr!r}") from exc
        if not isinstance(expr, sp.Expr):
            raise DefinitionError(f"{name!r}: not a scalar SymPy expression: {expr!r}")
        used = {s.name for s in expr.free_symbols}
        if name in used:
            raise DefinitionError(f"cycle: {name!r} is defined in terms of itself")
        unknown = sorted(used - set(self._kind))
        if unknown:
            raise DefinitionError(
                f"{name!r} uses unknown symbol(s) {', '.join(unknown)}: declare them "
                "(inputs/targets/params) or define them as nodes before use")
        for s in expr.free_symbols:
            if self._symbol[s.name] != s:
                raise DefinitionError(
                    f"{name!r} uses a symbol {s.name!r} with other assumptions than the declared one")
        return expr

    # -- reading --------------------------------------------------------
    def kind(self, name: str) -> str:
        """'input', 'target', 'param', 'node' or 'loss'."""
        return self._kind[name]

    def symbol(self, name: str) -> sp.Symbol:
        """The SymPy symbol standing for `name`."""
        return self._symbol[name]

    def expr(self, name: str) -> sp.Expr:
        """The defining expression of a node or of the loss."""
        return self._expr[name]

    def names(self, kind: str) -> list[str]:
        """The names of one kind, in definition order."""
        return [n for n in self.order if self._kind[n] == kind]

    @property
    def input_names(self):
        """Input names, the columns of X."""
        return self.names("input")

    @property
    def target_names(self):
        """Target names, the columns of Y."""
        return self.names("target")

    @property
    def param_names(self):
        """Parameter names, in declaration order."""
        return self.names("param")

    @property
    def node_names(self):
        """Intermediate node names, in definition order."""
        return self.names("node")

    def parents(self, name: str) -> list[str]:
        """The names `name` is defined from, in definition order."""
        if name not in self._expr:
            return []
        used = {s.name for s in self._expr[name].free_symbols}
        return [n for n in self.order if n in used]

    def children(self, name: str) -> list[str]:
        """The nodes (and loss) whose definitions use `name`, in definition order."""
        self._symbol[name]                  # KeyError for an unknown name, as before
        # kept as nodes are added: scanning every node here made backward() quadratic
        return list(self._children.get(name, ()))

    def _index_children(self, name: str, expr: sp.Expr):
        for s in expr.free_symbols:
            self._children.setdefault(s.name, []).append(name)

    def unrolled(self) -> dict[str, sp.Expr]:
        """Each node and the loss written in inputs, targets and parameters only."""
        full = {}
        for n in self.order:
            if n in self._expr:
                full[n] = self._expr[n].xreplace({self._symbol[k]: v for k, v in full.items()})
        return full

    def check_complete(self):
        """Raise DefinitionError unless the graph has a loss and a parameter."""
        if self.loss_name is None:
            raise DefinitionError("the graph has no loss: call g.loss(expr)")
        if not self.param_names:
            raise DefinitionError("the graph has no parameters: declare some with g.params(...)")

    def __repr__(self):
        lines = [f"Graph(inputs={self.input_names}, targets={self.target_names}, params={self.param_names})"]
        lines += [f"  {n} = {self._expr[n]}" for n in self.order if n in self._expr]
        return "\n".join(lines)
