"""Matrix building blocks for graphs whose nodes are matrices.

Rows are samples: an input ``X`` is ``BATCH × d``.  Everything here is a
SymPy matrix expression, so SymPy's matrix calculus can differentiate it:

* ``ones(m)``: the m×1 column of ones (``ones(m) @ b`` broadcasts a bias row);
* ``hadamard(A, B)``: the element-wise product;
* ``sumsq(W)``: ‖W‖²_F, written as tr(Wᵀ W) so that SymPy knows its gradient;
* :func:`explicit`: an expression of explicit matrices written out entry by entry.

The node kinds (softmax, layer norm, the per-sample cost, f'(Z), an element-wise
formula, a column selection) each live in one module of :mod:`symback.kinds` with
their VJP, lowering, evaluation and printing; they are re-exported here, where users
and older code import them (new code imports them from their kind's module).
"""
from __future__ import annotations

import operator

import sympy as sp

from .errors import DefinitionError
from .kinds.base import BATCH, ENTRY, Kind, activation_of, elementwise, is_matrix
from .kinds.elementwise import Elementwise, FPrime
from .kinds.rowcost import RowCost
from .kinds.rownorm import RowNorm, layer_norm
from .kinds.select import Select
from .kinds.softmax import MASKS, Softmax, SoftmaxVJP

__all__ = ["BATCH", "ENTRY", "ones", "hadamard", "sumsq", "Softmax", "RowNorm", "Select", "layer_norm", "MASKS", "SoftmaxVJP", "RowCost", "FPrime", "Elementwise",
           "elementwise", "is_matrix", "simplify_ones", "activation_of", "explicit"]


def ones(r=BATCH, c=1) -> sp.OneMatrix:
    """The r×c matrix of ones; ``ones(m) @ b`` repeats the row b on every sample, and
    ``ones(m, 3) - Z`` is a gate's 1 − z."""
    return sp.OneMatrix(_size(r, "rows"), _size(c, "columns"))


def _size(n, what: str):
    """n as a matrix dimension: sb.BATCH or a positive integer (NumPy's and SymPy's too)."""
    if isinstance(n, sp.Symbol) and n == BATCH:
        return n
    try:
        k = operator.index(n)
    except TypeError:
        k = None
    if k is None or isinstance(n, bool) or k < 1:
        raise DefinitionError(f"ones: the number of {what} must be a positive integer or sb.BATCH, got {n!r}")
    return k


def hadamard(*factors) -> sp.MatrixExpr:
    """The element-wise (Hadamard) product A ⊙ B of matrices of one shape."""
    numbers = [f for f in factors if not is_matrix(f)]
    if numbers:
        raise DefinitionError(f"hadamard takes matrices, got {numbers[0]!r}: "
                              "for numbers (a scalar graph) write the product a*b")
    shapes = {f.shape for f in factors}
    if len(shapes) != 1:
        raise DefinitionError(f"hadamard: the factors have different shapes {sorted(map(str, shapes))}")
    return sp.HadamardProduct(*factors)


def sumsq(W) -> sp.Expr:
    """‖W‖²_F, the sum of the squared entries of W (a weight-decay penalty)."""
    if not is_matrix(W):
        raise DefinitionError(f"sumsq takes a matrix, got {W!r}")
    return sp.Trace(W.T * W)


def _ones_coeff(e):
    """(c, True) when e is c times a matrix of ones, else (None, False)."""
    if isinstance(e, sp.OneMatrix):
        return sp.S.One, True
    if isinstance(e, sp.MatMul):
        coeff, mats = e.as_coeff_matrices()
        if len(mats) == 1 and isinstance(mats[0], sp.OneMatrix):
            return coeff, True
    return None, False


def simplify_ones(expr, canonical: bool = True):
    """Fold products of all-ones matrices: 1ₘₓₙ 1ₙₓₖ = n·1ₘₓₖ and (c·1) ⊙ A = c·A.

    The batch loss's adjoint δ_C = (1/m)·1 spreads over the outputs as such
    products; folding them leaves the formula a reader (and NumPy) expects.
    ``canonical=False`` puts a folded scalar in front of its product one level
    deep instead of through SymPy's ``c * A`` (which canonicalises all of A,
    again at every level): the same value, terms in the order they came, in
    seconds instead of minutes for a formula of 100,000 nodes.
    """
    def scaled(coeff, body):
        if coeff == 1:
            return body
        return coeff * body if canonical else sp.MatMul(coeff, body).doit(deep=False)

    def matmul(e):
        e = e.doit(deep=False)          # flatten nested products, pull the scalars out
        if not isinstance(e, sp.MatMul):
            return e
        coeff, mats = e.as_coeff_matrices()
        out = []
        for M in mats:
            if out and isinstance(M, sp.OneMatrix) and isinstance(out[-1], sp.OneMatrix):
                coeff *= M.shape[0]
                out[-1] = sp.OneMatrix(out[-1].shape[0], M.shape[1])
            else:
                out.append(M)
        return scaled(coeff, out[0] if len(out) == 1 else sp.MatMul(*out))

    def hadamard(e):
        coeff, rest = sp.S.One, []
        for a in e.args:
            c, is_ones = _ones_coeff(a)
            if is_ones:
                coeff *= c
            else:
                rest.append(a)
        if not rest:
            return scaled(coeff, sp.OneMatrix(*e.shape))
        return scaled(coeff, rest[0] if len(rest) == 1 else sp.HadamardProduct(*rest))

    if not isinstance(expr, sp.Basic) or not expr.has(sp.OneMatrix):
        return expr
    expr = expr.replace(lambda e: isinstance(e, sp.MatMul), matmul)
    return expr.replace(lambda e: isinstance(e, sp.HadamardProduct), hadamard)


def explicit(e, rows: int):
    """An explicit ImmutableMatrix for a matrix expression of explicit matrices.

    Substitutes ``rows`` for the batch size and writes out the node kinds entry by
    entry (for exact evaluation and checking): a kind defined as matrix operations
    through its ``definition()``, any other through its ``explicit_value``.
    """
    e = e.subs(BATCH, rows) if e.has(BATCH) else e
    # SymPy leaves 1·M unevaluated when 1 is a OneMatrix: write the constants out
    e = e.replace(lambda x: isinstance(x, (sp.OneMatrix, sp.ZeroMatrix, sp.Identity))
                  and all(d.is_Integer for d in x.shape), lambda x: x.as_explicit())

    def out(x):
        if hasattr(x, "definition"):
            return explicit(x.definition(), rows)
        return x.explicit_value(*[sp.ImmutableMatrix(a.doit()) for a in x.args if is_matrix(a)])

    e = e.replace(lambda x: isinstance(x, Kind) or hasattr(x, "explicit_value"),
                  lambda x: out(x.func(*[explicit(a, rows) if is_matrix(a) else a for a in x.args])))
    r = e.doit()
    return sp.ImmutableMatrix(r) if is_matrix(r) or isinstance(r, sp.MatrixBase) else r
