"""The derivation's vocabulary: node names, path factors, the adjoint symbols δ, and the
:class:`Program` of assignments a derivation is read as.

Records only: the reverse-mode loop that fills them is :func:`symback.engine.backward`
(and everything here stays importable from :mod:`symback.engine`).
"""
from __future__ import annotations

from typing import NamedTuple

import sympy as sp

from .graph import Graph
from .matrix import is_matrix
from .vjp import AdjointMatrix

__all__ = ["Name", "Factor", "Adjoint", "delta", "Program", "BatchMean", "BatchSum", "LocalFactors"]


class Name(str):
    """A node name that also equals the SymPy symbol of that name."""

    def __eq__(self, other):
        if isinstance(other, (sp.Symbol, sp.MatrixSymbol)):
            return str.__eq__(self, other.name)
        return str.__eq__(self, other)

    def __ne__(self, other):
        return not self == other

    __hash__ = str.__hash__


class Factor(NamedTuple):
    """One local factor on a path: ``expr`` = ∂of/∂wrt for scalars; for a
    matrix ``of``, the vector-Jacobian product, linear in δ_of."""

    of: Name
    wrt: Name
    expr: sp.Expr


class Adjoint(sp.Symbol):
    """The adjoint δ_node = ∂C/∂node of a scalar node, as a symbol in recursive formulas."""

    def __new__(cls, node: str):
        return super().__new__(cls, f"delta_{node}")

    @property
    def node(self) -> str:
        """The name of the node this adjoint belongs to."""
        return self.name[len("delta_"):]

    def _latex(self, printer, exp=None):
        s = r"\delta_{%s}" % printer._print(sp.Symbol(self.node))
        return s if exp is None else r"%s^{%s}" % (s, exp)


def delta(graph: Graph, name: str):
    """The symbol standing for δ_name (1 for the loss itself)."""
    if name == graph.loss_name:
        return sp.S.One
    sym = graph.symbol(name)
    return AdjointMatrix(f"delta_{name}", *sym.shape) if is_matrix(sym) else Adjoint(name)


class Program(NamedTuple):
    """A derivation as straight-line assignments: what documents and code generators read.

    ``forward``: (symbol, expr) for every node in definition order, the
    batch loss last; ``backward``: (adjoint symbol, expr) in the order they
    are computed; ``gradients``: parameter name → ∂L/∂p, an expression of
    the backward symbols; ``loss``: the batch loss L; ``outputs``: the
    prediction nodes.  Scalar graphs' symbols hold one value per sample
    (their gradients reduce over the batch with :class:`BatchMean` or
    :class:`BatchSum`); matrix graphs' symbols are whole matrices.
    """

    inputs: tuple
    targets: tuple
    params: tuple
    forward: tuple
    backward: tuple
    gradients: dict
    loss: sp.Expr
    outputs: tuple
    reduction: str


class BatchMean(sp.Function):
    """The mean over a batch's rows of a per-sample value."""


class BatchSum(sp.Function):
    """The sum over a batch's rows of a per-sample value."""


class LocalFactors(dict):
    """The edges' local factors, some derived only when first read.

    An edge whose δ the engine takes from a fused output rule (softmax with
    cross-entropy: δ_Z = Ŷ − Y) does not need its own factor to train, only to
    be shown; its derivation (softmax's closed form and SymPy's proof of it)
    waits for a document to ask, so a network compiles without it.
    """

    def __init__(self):
        super().__init__()
        self._pending = {}
        #: Z -> (A, f, cost node) for each output block Z → A = f(Z) → C whose δ_Z the
        #: engine took from the fused rule (what it fused, for readers not to re-detect)
        self.fused = {}

    def defer(self, key, derive_factor):
        """Hold `key`'s factor as a function that derives it."""
        self._pending[key] = derive_factor

    def _resolve(self):
        while self._pending:
            key, derive_factor = next(iter(self._pending.items()))
            dict.__setitem__(self, key, derive_factor())
            del self._pending[key]

    def __getitem__(self, key):
        if key in self._pending:
            dict.__setitem__(self, key, self._pending.pop(key)())
        return dict.__getitem__(self, key)

    def __contains__(self, key):
        return key in self._pending or dict.__contains__(self, key)

    def get(self, key, default=None):
        """The factor of `key` (derived now if it waited), else `default`."""
        return self[key] if key in self else default

    def __iter__(self):
        self._resolve()
        return dict.__iter__(self)

    def __len__(self):
        return dict.__len__(self) + len(self._pending)

    def keys(self):
        """Every edge (each waiting factor derived first)."""
        self._resolve()
        return dict.keys(self)

    def items(self):
        """(edge, factor) pairs (each waiting factor derived first)."""
        self._resolve()
        return dict.items(self)

    def values(self):
        """The factors (each waiting factor derived first)."""
        self._resolve()
        return dict.values(self)
