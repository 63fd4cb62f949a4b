"""Matrix expressions that only the attention section of a document writes.

:class:`Concat` is the heads' blocks side by side, [O₁ ⋯ O_H]; :class:`RowMean` is
the mean of a row's entries (a 1×1 matrix).  Both are defined entry by entry, so the
certificate's evaluation (``explicit_value``) and SymPy's ``as_explicit`` read them
without knowing them.
"""
from __future__ import annotations

import sympy as sp

__all__ = ["Concat", "ConcatT", "RowMean"]


class Concat(sp.MatrixExpr):
    """The blocks (each with the same rows) placed side by side: [B₁ B₂ ⋯ B_H]."""

    def __new__(cls, *blocks):
        return super().__new__(cls, *blocks)

    @property
    def shape(self):
        return self.args[0].shape[0], sp.Add(*[b.shape[1] for b in self.args])

    def _entry(self, i, j, **kwargs):
        for b in self.args:
            if j < b.shape[1]:
                return b[i, j]
            j -= b.shape[1]
        raise IndexError(j)

    def explicit_value(self, *blocks):
        """The explicit matrix, from each block's explicit value."""
        return sp.Matrix.hstack(*blocks)

    def _latex(self, printer, exp=None):
        parts = [printer._print(b) for b in self.args]
        if len(parts) > 3:      # [B₁ ⋯ B_H]: the first and the last
            parts = [parts[0], r"\cdots", parts[-1]]
        return r"\begin{bmatrix} %s \end{bmatrix}" % " & ".join(parts)


class ConcatT(Concat):
    """[B₁ B₂ ⋯ B_H]ᵀ, printed as the bracket transposed (no parentheses around it)."""

    @property
    def shape(self):
        return tuple(reversed(super().shape))

    def _entry(self, i, j, **kwargs):
        return super()._entry(j, i, **kwargs)

    def explicit_value(self, *blocks):
        """The explicit matrix, from each block's explicit value."""
        return super().explicit_value(*blocks).T

    def _latex(self, printer, exp=None):
        return super()._latex(printer) + r"^{\top}"


class RowMean(sp.MatrixExpr):
    """mean(x) of a 1×d row x: the 1×1 matrix (1/d) x 𝟏."""

    def __new__(cls, row):
        return super().__new__(cls, row)

    @property
    def shape(self):
        return sp.S.One, sp.S.One

    def _entry(self, i, j, **kwargs):
        x = self.args[0]
        return sp.Add(*[x[0, k] for k in range(x.shape[1])]) / x.shape[1]

    def explicit_value(self, row):
        """The explicit 1×1 matrix, from the row's explicit value."""
        return sp.ImmutableMatrix([[sum(row) / row.cols]])

    def _latex(self, printer, exp=None):
        return r"\operatorname{mean}\left(%s\right)" % printer._print(self.args[0])
