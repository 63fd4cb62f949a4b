"""Expressions that exist only in documents: ∂of/∂wrt, C⁽ⁱ⁾, norms, ordered chains.

They are SymPy objects so that a formula stays one expression from which
it is printed (and which tests check); :class:`~symback.printing.LatexPrinter`
prints each by a ``_print_<Class>`` method.
"""
from __future__ import annotations

import sympy as sp

__all__ = ["Partial", "PerSample", "Norm", "Chain", "Terms", "Bound"]


class Partial(sp.Expr):
    """∂of/∂wrt as a symbol in a formula (unevaluated; ``Partial(C, w1)``)."""

    is_commutative = True

    def __new__(cls, of, wrt):
        return super().__new__(cls, _as_symbol(of), _as_symbol(wrt))


class PerSample(sp.Expr):
    """The value of a per-sample quantity for sample i, printed C^{(i)}."""

    is_commutative = True

    def __new__(cls, of):
        return super().__new__(cls, _as_symbol(of))


class Norm(sp.Expr):
    """|x| for a scalar, ‖x‖_F for a matrix (or a ∂/∂ of a matrix)."""

    is_commutative = True


class Chain(sp.Basic):
    """An ordered product that is never reordered: the factors of one path, in path order."""

    @property
    def factors(self) -> tuple:
        """The factors, in order."""
        return self.args


class Terms(sp.Basic):
    """A sum of chains, kept in order: one term per path."""


class Bound(sp.Basic):
    """``lhs ≤ rhs_1 = rhs_2 = …``: an inequality with its right side simplified step by step."""


def _as_symbol(x):
    return sp.Symbol(x) if isinstance(x, str) else x


def _is_matrixy(e) -> bool:
    if isinstance(e, Partial):
        return any(isinstance(a, sp.MatrixSymbol) for a in e.args)
    return bool(getattr(e, "is_Matrix", False))


