"""Graph: a network as named SymPy nodes, checked as it is built."""
from __future__ import annotations

import re

import sympy as sp

from .errors import DefinitionError, UnusedParameterWarning, warn_user
from .kinds.base import BATCH, is_matrix
from .kinds.rowcost import RowCost
from .kinds.select import Select
from .layout import Layout, layout_of
from .split import split

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
    if name.startswith("delta_"):
        # δ_a is the adjoint of a: a node named delta_a would print as, and be read as, one
        raise DefinitionError(f"invalid name {name!r}: names beginning with 'delta_' are kept for "
                              "the adjoints (delta_a is δ_a = ∂L/∂a); choose another name")
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
        self._parents: dict[str, list[str]] = {}    # name -> what it is defined from (memo)
        self.order: list[str] = []
        self.loss_name: str | None = None
        self.cost_name: str | None = None       # a matrix graph's per-sample cost column C
        self.reduction = "mean"
        self.penalty = sp.S.Zero                # a one-sample graph's penalty (not in C)
        self.init_scheme: dict[str, str] = {}    # parameter -> how init() fills it ('ones': a scale)
        #: the nodes a builder names as its states, in order: a recurrent net's h_t, a deep
        #: net's hidden-layer outputs (what ``fit(flow=True)`` measures ‖∂L/∂·‖ of)
        self.states: list[str] = []
        #: node -> the text a spec file wrote for it (documents print its terms in that order)
        self.written_text: dict[str, str] = {}
        self._layout: tuple[int, Layout] | None = None    # (symbols it was read at, the layout)

    # -- building -------------------------------------------------------
    def _declare(self, names, kind, shape=None):
        names = split_names(names)
        shapes = _shapes(names, shape, kind)
        syms = []
        if kind in ("input", "target") and shape is not None:
            self._check_sample_form(names, shapes)
        for name, shp in zip(names, shapes):
            self._claim(name)
            sym = sp.Symbol(name) if shp is None else sp.MatrixSymbol(name, *shp)
            self._kind[name], self._symbol[name] = kind, sym
            self.order.append(name)
            syms.append(sym)
        return syms[0] if len(syms) == 1 else tuple(syms)

    def _check_sample_form(self, names, shapes):
        """Data matrices are all batches (sb.BATCH rows) or all single samples, never mixed."""
        batch = {BATCH in shp for shp in shapes}
        batch |= {BATCH in self.shape(n) for n in self.order if self._kind[n] in ("input", "target")
                  and self.shape(n)}
        if len(batch) > 1:
            raise DefinitionError(f"{', '.join(names)}: data matrices either all have sb.BATCH rows (a batch, "
                                  "rows are samples) or none has (one sample of any shape); this graph mixes them")

    def _claim(self, name):
        if self.loss_name is not None:
            raise DefinitionError(f"cannot add {name!r}: the loss is already defined, it must come last")
        if name in self._kind:
            raise DefinitionError(f"duplicate name {name!r}: already defined as a {self._kind[name]}")

    def inputs(self, names, shape=None):
        """Declare inputs: scalar features (the columns of X, in order), or with
        ``shape=(sb.BATCH, d)`` one data matrix X whose rows are samples."""
        return self._declare(names, "input", shape)

    def targets(self, names, shape=None):
        """Declare targets: scalars (the columns of Y), or one matrix with ``shape=(sb.BATCH, k)``."""
        return self._declare(names, "target", shape)

    def params(self, names, shape=None):
        """Declare trainable parameters: scalars, or matrices with ``shape=(rows, cols)``
        (one shape for all names, or a list with one shape per name)."""
        return self._declare(names, "param", shape)

    def node(self, name: str, expr) -> sp.Symbol:
        """Define an intermediate ``name = expr``; expr may use only earlier names.

        A matrix node that applies an activation or softmax to a compound
        argument keeps that argument as a node of its own, ``Z_<name>``
        (the pre-activation z of the notes), so that its δ can be named.
        """
        check_name(name)
        self._claim(name)
        expr = self._check_expr(name, expr)
        expr = split(self, name, expr)
        return self._add(name, "node", expr)

    def _add(self, name, kind, expr):
        sym = sp.MatrixSymbol(name, *expr.shape) if is_matrix(expr) else sp.Symbol(name)
        self._kind[name], self._symbol[name], self._expr[name] = kind, sym, expr
        self._index_children(name, expr)
        self.order.append(name)
        return sym

    def _fresh(self, wanted: str) -> str:
        name, k = wanted, 2
        while name in self._kind:
            name, k = f"{wanted}{k}", k + 1
        return name

    def loss(self, expr, reduction: str = "mean", name: str = "C", penalty=None) -> sp.Symbol:
        """Define the per-sample cost C = expr and its batch reduction.

        For a scalar graph ``expr`` is a scalar, the cost of one sample.  For
        a matrix graph it is the m×1 column of per-sample costs (a built-in
        loss called on matrices, ``sb.cross_entropy(Yhat, Y)``); the batch
        loss is then the node ``L = (1/m) 1ᵀ C + penalty`` (Σ for
        ``reduction="sum"``), ``penalty`` a scalar expression of parameters
        such as ``λ/2 · sb.sumsq(W1)``.
        """
        if self.loss_name is not None:
            raise DefinitionError(f"a second loss: the graph already has the loss {self.loss_name!r}")
        if reduction not in ("mean", "sum"):
            raise DefinitionError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
        check_name(name)
        if name in self._kind:
            raise DefinitionError(f"duplicate name {name!r}: already defined as a {self._kind[name]}")
        if is_matrix(expr):
            return self._matrix_loss(expr, reduction, name, penalty)
        if hasattr(expr, "shape") and getattr(expr, "shape", ()) not in ((), (1, 1)):
            raise DefinitionError(f"the loss must be a scalar, got a {type(expr).__name__} "
                                  f"of shape {getattr(expr, 'shape', '?')}")
        if penalty is not None and not self.per_sample:
            raise DefinitionError("penalty= is for matrix graphs; in a scalar graph add it to the cost")
        expr = self._check_expr(name, expr)
        if not any(self._kind[s.name] in ("param", "node") for s in _names_in(expr)):
            raise DefinitionError("the loss depends on no parameter or node")
        self.penalty = self._check_penalty(penalty)
        sym = self._add(name, "loss", expr)
        self.loss_name, self.reduction = name, reduction
        return sym

    def _check_penalty(self, penalty):
        if penalty is None:
            return sp.S.Zero
        penalty = self._check_expr("penalty", penalty)
        if is_matrix(penalty) or not (_names_in(penalty) and all(
                self._kind.get(s.name) == "param" for s in _names_in(penalty))):
            raise DefinitionError(f"penalty must be a scalar expression of parameters, got {penalty}")
        return penalty

    def _sample_loss(self, expr, reduction, name, penalty):
        """One sample's cost: the column of a built-in loss (one entry per row of the
        sample) summed, C = 1ᵀ c; the batch loss is then (1/m) Σᵢ Cᵢ + penalty."""
        if expr.shape[1] != 1 or not isinstance(expr, RowCost):
            raise DefinitionError(f"the loss of a one-sample graph must be a scalar (its cost) or a built-in "
                                  f"loss called on matrices (sb.mse(Yhat, Y)); got shape {expr.shape}")
        expr = self._prediction_node(self._check_expr(name, expr))
        rows = self._add(self._fresh("c"), "node", expr)
        return self.loss(sp.Trace(sp.OneMatrix(1, expr.shape[0]) * rows), reduction, name, penalty)

    def _prediction_node(self, cost: RowCost) -> RowCost:
        """The cost with a prediction written inline (sb.mse(tanh(X @ W), Y)) made a node of its
        own, ``Yhat``, split as any node is (its pre-activation, a softmax inside it)."""
        if isinstance(cost.prediction, sp.MatrixSymbol):
            return cost
        name = self._fresh("Yhat")
        return RowCost(cost.args[0], self._add(name, "node", split(self, name, cost.prediction)), cost.target)

    @property
    def per_sample(self) -> bool:
        """Whether this matrix graph describes one sample (no sb.BATCH in its data shapes):
        data then carry the batch on a leading axis, X of shape (n, rows, columns)."""
        return self.layout.one_sample

    @property
    def layout(self) -> Layout:
        """The form of the graph's data (:mod:`symback.layout`): scalars, matrices with sb.BATCH
        rows, or one sample's matrices; what the engine and the compiler ask instead of branching."""
        # a graph only grows: the layout read at the current number of symbols is the graph's
        if self._layout is None or self._layout[0] != len(self.order):
            self._layout = (len(self.order), layout_of(self))
        return self._layout[1]

    def _matrix_loss(self, expr, reduction, name, penalty):
        if self.per_sample:
            return self._sample_loss(expr, reduction, name, penalty)
        if expr.shape[1] != 1 or expr.shape[0] != BATCH:
            raise DefinitionError(f"the loss must be a scalar per-sample cost or, in a matrix graph, the "
                                  f"m×1 column of per-sample costs (sb.mse(Yhat, Y)); got shape {expr.shape}")
        expr = self._check_expr(name, expr)
        if isinstance(expr, RowCost):
            expr = self._prediction_node(expr)
        cost = self._add(name, "node", expr)
        total = sp.Trace(sp.OneMatrix(1, BATCH) * cost)
        total = total / BATCH if reduction == "mean" else total
        if penalty is not None:
            total = total + self._check_penalty(penalty)
        sym = self._add(self._fresh("L"), "loss", total)
        self.loss_name, self.reduction, self.cost_name = sym.name, reduction, name
        return sym

    def ancestors(self, name: str) -> set:
        """Every name that `name` is computed from, directly or not."""
        reach, todo = set(), list(self.parents(name))
        while todo:
            n = todo.pop()
            if n not in reach:
                reach.add(n)
                todo += self.parents(n)
        return reach

    def loss_uses(self) -> set:
        """Every name the batch loss is computed from: the loss's ancestors and, in a one-sample
        graph, the parameters of its penalty (kept apart from the cost, ``self.penalty``)."""
        return self.ancestors(self.loss_name) | {s.name for s in _names_in(self.penalty)}

    def _check_expr(self, name, expr) -> sp.Expr:
        if isinstance(expr, str):
            raise DefinitionError(f"{name!r}: give a SymPy expression, not a string "
                                  "(spec files parse text; see symback.spec)")
        if isinstance(expr, sp.MatrixBase):
            raise DefinitionError(f"{name!r}: an explicit Matrix is not a node: give a scalar expression, "
                                  "or a matrix expression of declared matrix symbols")
        if not is_matrix(expr):
            try:
                expr = sp.sympify(expr, strict=True)
            except (sp.SympifyError, TypeError) as exc:
                raise DefinitionError(f"{name!r}: not a SymPy expression: {expr!r}") from exc
            if not isinstance(expr, sp.Expr):
                raise DefinitionError(f"{name!r}: not a scalar SymPy expression: {expr!r}")
        if expr.has(sp.zoo, sp.nan, sp.oo, -sp.oo):
            # SymPy folds 1/(w − w) to zoo and log(w − w) to zoo: no number could be computed
            raise DefinitionError(f"{name!r} is undefined or infinite for every value: {expr} "
                                  "(a division by zero or log(0) that SymPy folded)")
        nested = [e for e in sp.preorder_traversal(expr) if isinstance(e, RowCost) and e != expr]
        if nested:
            raise DefinitionError(f"{name!r}: {type(nested[0]).__name__.lower()} must be a node's whole "
                                  "definition, not part of a larger expression")
        used = {s.name for s in _names_in(expr)}
        if name in used:
            raise DefinitionError(f"cycle: {name!r} is defined in terms of itself")
        unknown = sorted(used - set(self._kind))
        if unknown:
            raise DefinitionError(
                f"{name!r} uses unknown symbol(s) {', '.join(unknown)}: declare them "
                "(inputs/targets/params) or define them as nodes before use")
        for s in _names_in(expr):
            if self._symbol[s.name] != s:
                raise DefinitionError(
                    f"{name!r} uses a symbol {s.name!r} with other assumptions or shape than the declared one")
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
        # a definition never changes once made: remembered, since scanning the whole order on
        # every call made the document size check quadratic per parameter (300 layers: 11 s)
        if name not in self._parents:
            used = {s.name for s in _names_in(self._expr[name])}
            self._parents[name] = [n for n in self.order if n in used]
        return list(self._parents[name])

    def children(self, name: str) -> list[str]:
        """The nodes (and loss) whose definitions use `name`, in definition order."""
        self._symbol[name]                  # KeyError for an unknown name, as before
        # kept as nodes are added: scanning every node here made backward() quadratic
        return list(self._children.get(name, ()))

    def _index_children(self, name: str, expr: sp.Expr):
        for s in _names_in(expr):
            self._children.setdefault(s.name, []).append(name)

    def unrolled(self) -> dict[str, sp.Expr]:
        """Each node and the loss written in inputs, targets and parameters only."""
        full = {}
        for n in self.order:
            if n in self._expr:
                full[n] = self._expr[n].xreplace({self._symbol[k]: v for k, v in full.items()})
        return full

    def shape(self, name: str):
        """A matrix's (rows, cols), or () for a scalar."""
        s = self._symbol[name]
        return tuple(s.shape) if is_matrix(s) else ()

    @property
    def is_matrix(self) -> bool:
        """Whether the graph's nodes are matrices (rows are samples)."""
        return self.layout.kind == "matrix"

    def check_complete(self, wrt=()):
        """Raise DefinitionError unless the graph has a loss and a parameter it depends on, or
        (`wrt`: the inputs a layer's VJP differentiates) an input of `wrt` it depends on."""
        if self.loss_name is None:
            raise DefinitionError("the graph has no loss: call g.loss(expr)")
        if not self.param_names:
            raise DefinitionError("the graph has no parameters: declare some with g.params(...)")
        used = self.loss_uses()
        if not any(self._kind[n] == "param" or n in wrt for n in used):
            raise DefinitionError(f"the loss {self.loss_name!r} depends on no parameters: nothing to train")
        unused = [p for p in self.param_names if p not in used]
        if unused:
            warn_user(f"parameter(s) {', '.join(unused)} do not affect the loss; "
                      "their gradients are 0", UnusedParameterWarning)

    def __repr__(self):
        lines = [f"Graph(inputs={self.input_names}, targets={self.target_names}, params={self.param_names})"]
        lines += [f"  {n} = {self._expr[n]}" for n in self.order if n in self._expr]
        return "\n".join(lines)


def _names_in(expr) -> set:
    """The graph symbols an expression uses: scalar symbols and MatrixSymbols."""
    out = set(expr.free_symbols)
    if isinstance(expr, sp.Basic) and expr.has(sp.MatrixSymbol):
        out |= expr.atoms(sp.MatrixSymbol)
    # a MatrixSymbol's shape symbols (the batch size m) are not graph names
    return {s for s in out if isinstance(s, (sp.Symbol, sp.MatrixSymbol)) and s != BATCH
            and not isinstance(s, Select)}


def _dim(d, what):
    if d is BATCH or d == BATCH:
        return BATCH
    if isinstance(d, (int, sp.Integer)) and not isinstance(d, bool) and int(d) >= 1:
        return int(d)
    raise DefinitionError(f"{what}: a dimension must be a positive integer or sb.BATCH, got {d!r}")


def _shapes(names, shape, kind):
    """One shape (or None for a scalar) per name, checked."""
    if shape is None:
        return [None] * len(names)
    if isinstance(shape, tuple) and len(shape) == 2 and not isinstance(shape[0], (tuple, list)):
        shape = [shape] * len(names)
    shape = list(shape)
    if len(shape) != len(names) or not all(isinstance(s, (tuple, list)) and len(s) == 2 for s in shape):
        raise DefinitionError(f"shape: give one (rows, cols) for all of {', '.join(names)} "
                              f"or a list with one per name, got {shape!r}")
    out = []
    for n, (r, c) in zip(names, shape):
        r, c = _dim(r, n), _dim(c, n)
        if kind == "param" and BATCH in (r, c):
            raise DefinitionError(f"parameter {n!r} cannot have the batch size in its shape")
        if kind in ("input", "target") and c == BATCH:
            raise DefinitionError(f"{kind} {n!r}: rows are samples, so the shape is (sb.BATCH, columns) "
                                  f"(or, for one sample of any shape, (rows, columns)), got ({r}, {c})")
        out.append((r, c))
    return out
