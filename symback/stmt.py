"""The statements a :class:`~symback.lowering.Lowering` emits: ``target = op(*args)``
(:class:`Stmt`), and a transposed operand of a product (:class:`Tr`)."""
from __future__ import annotations

from typing import NamedTuple

import sympy as sp

from .kinds.base import BATCH

__all__ = ["Stmt", "Tr", "WIDTH_PRINTED"]

#: the kinds whose printing passes their last axis' length (a batch norm's columns: m, which
#: the ``batch`` statement defines, so the function must keep it)
WIDTH_PRINTED = ("layer_norm", "layer_norm_vjp", "layer_norm_affine", "layer_norm_affine_vjp")


class Tr(NamedTuple):
    """A transposed operand of a matrix product (printed ``W.T``, no copy)."""

    sym: sp.Symbol


class Stmt(NamedTuple):
    """``target = op(*args)``; ``shape`` is the value's shape, () for a number."""

    target: sp.Symbol
    op: str
    args: tuple
    shape: tuple

    def reads(self) -> set:
        """The symbols this statement reads."""
        out = set()
        for a in self.args:
            if isinstance(a, Tr):
                out.add(a.sym)
            elif isinstance(a, sp.Basic):
                out |= a.free_symbols
        if self.op == "colsum" or (self.op in WIDTH_PRINTED and BATCH in getattr(self.shape[-1], "free_symbols", ())):
            out.add(BATCH)
        return out
