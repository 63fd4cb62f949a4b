"""Softmax, row by row (optionally masked), and its vector-Jacobian product.

:class:`Softmax` holds its definition (:meth:`Softmax.explicit_value`), its VJP (the closed form
P ⊙ (D − (D ⊙ P)𝟏𝟏ᵀ), used only after :func:`prove_softmax_vjp` has proved it equal to
SymPy's derivative of the definition), its lowering (row max, exponentials, row sums; or the
printer's ``softmax`` kernel) and its printing.  :class:`SoftmaxVJP` is the same product
written as SymPy's own partial derivatives, entry by entry (the documents' older form).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import sympy as sp

from ..errors import DefinitionError, SymbackError
from .base import Kind, as_str, is_matrix

__all__ = ["MASKS", "Softmax", "SoftmaxVJP", "softmax_vjp", "prove_softmax_vjp"]

#: the masks softmax knows: name -> whether entry (i, j) is kept
MASKS = {"causal": lambda i, j: j <= i}


class Softmax(Kind, sp.MatrixExpr):
    """softmax applied to each row of a matrix: S_ik = exp(Z_ik) / Σ_j exp(Z_ij).

    ``Softmax(Z, "causal")`` masks the entries above the diagonal (j > i)
    first: they are left out of the row's sum and their S_ij is 0.
    """

    node_prefix = "P_"

    def __new__(cls, arg, mask=None):
        if not is_matrix(arg):
            raise DefinitionError(f"softmax takes a matrix (rows are samples), got {arg!r}")
        if mask is None:
            return super().__new__(cls, arg)
        mask = as_str(mask)
        if mask.name not in MASKS:
            raise DefinitionError(f"softmax: unknown mask {mask.name!r}; masks are {', '.join(MASKS)}")
        return super().__new__(cls, arg, mask)

    @property
    def arg(self):
        """The logits."""
        return self.args[0]

    @property
    def mask(self):
        """The mask's name ('causal'), or None."""
        return self.args[1].name if len(self.args) > 1 else None

    def kept(self, i: int, j: int) -> bool:
        """Whether entry (i, j) takes part (is not masked)."""
        return self.mask is None or MASKS[self.mask](i, j)

    @property
    def shape(self):
        return self.args[0].shape

    # -- definition and evaluation ------------------------------------------------
    def explicit_value(self, z) -> "sp.ImmutableMatrix":
        """The explicit softmax of an explicit matrix z, from the definition (masked entries 0).
        (Not named ``rows``: that is MatrixExpr's number of rows, which a product reads.)"""
        def entry(i, k):
            if not self.kept(i, k):
                return sp.S.Zero
            return sp.exp(z[i, k]) / sum(sp.exp(z[i, j]) for j in range(z.cols) if self.kept(i, j))
        return sp.ImmutableMatrix(z.rows, z.cols, entry)

    def numeric_value(self, z, entrywise=None) -> np.ndarray:
        """The same on a NumPy array, each row shifted by its max (masked entries −∞ first)."""
        if self.mask is not None:
            keep = np.array([[self.kept(i, j) for j in range(z.shape[1])] for i in range(z.shape[0])])
            z = np.where(keep, z, -np.inf)
        ez = np.exp(z - z.max(axis=1, keepdims=True))
        return ez / ez.sum(axis=1, keepdims=True)

    # -- derivative -----------------------------------------------------------------
    def vjp(self, D, parent, P=None):
        """δ_Z for δ_S = D: :func:`softmax_vjp`."""
        return softmax_vjp(self, D, P)

    # -- lowering -------------------------------------------------------------------
    def lower(self, lo, target=None):
        """softmax row by row, shifted by the row max; records the log-softmax for losses.
        A masked entry is −∞ before the shift, so its exponential is 0.  With the printer's
        ``softmax`` kernel: one statement each for softmax and log-softmax of the masked rows."""
        t = None
        if target is not None:
            lo.recorded.setdefault(Softmax, {})[target] = self      # the P of its closed-form VJP
            t = lo.names[target]
        z = lo.materialize(lo.scalar(self.arg))
        rows, cols = self.shape
        if self.mask is None and lo.shape_of(z)[-2:-1] == (1,):
            # a row the lowering keeps broadcast (1 1ᵀ X): its softmax is that one row too; taken
            # as (rows, cols), the prediction came out one row per sample and ∂L/∂p crashed
            rows = 1
        if self.mask is not None:
            z = lo.emit("mask", (z, self.mask), (rows, cols))
        if "softmax" in lo.kernels:      # (the log-softmax statement goes unless a loss reads it)
            value = lo.emit("softmax", (z,), (rows, cols))
            lo.log_of[t if t is not None else value] = lo.emit("log_softmax", (z,), (rows, cols))
            return value
        zs = lo.emit("let", (z - lo.emit("rowmax", (z,), (rows, 1)),), ())
        ex = lo.emit("let", (sp.exp(zs),), ())
        total = lo.emit("rowsum", (ex,), (rows, 1))
        value = ex / total
        key = t if t is not None else lo.materialize(value)
        lo.log_of[key] = zs - sp.log(total)     # log softmax = (z − max) − log Σ exp(z − max)
        return value if t is not None else key

    @classmethod
    def lower_vjp(cls, lo, e, recorded):
        """The printer's ``softmax_vjp`` kernel when `e` is P ⊙ (D − (D ⊙ P)𝟏𝟏ᵀ) with P a
        Softmax node's symbol — the closed form :func:`softmax_vjp` derives, read off its
        structure — else None."""
        found = _closed_form(e, recorded) if "softmax_vjp" in lo.kernels else None
        if found is None:
            return None
        d, p = found
        return lo.emit("softmax_vjp", (lo.materialize(lo.scalar(d)), lo.names[p]), tuple(e.shape))

    # -- printing -------------------------------------------------------------------
    def _latex(self, printer, exp=None):
        # a masked softmax says so: softmax_causal(S) is not softmax(S)
        mask = rf"_{{\mathrm{{{self.mask}}}}}" if self.mask else ""
        return rf"\operatorname{{softmax}}{mask}\left({printer._print(self.arg)}\right)"

    def _text(self, printer):
        return f"softmax({printer._print(self.arg)})"


def _closed_form(e, softmaxes):
    """(D, P) when `e` is P ⊙ (D − (D ⊙ P)𝟏𝟏ᵀ) with P in `softmaxes`, else None."""
    if not isinstance(e, sp.HadamardProduct) or len(e.args) != 2:
        return None
    for p, rest in (e.args, e.args[::-1]):
        if p not in softmaxes or not isinstance(rest, sp.MatAdd) or len(rest.args) != 2:
            continue
        for d, m in (rest.args, rest.args[::-1]):
            if not isinstance(m, sp.MatMul):    # a MatrixSymbol's args hold its name, a Str: no Mul of it
                continue
            coeff = sp.Mul(*[a for a in m.args if not isinstance(a, sp.MatrixExpr)])
            mats = [a for a in m.args if isinstance(a, sp.MatrixExpr)]
            if coeff != -1 or len(mats) < 2 \
                    or not isinstance(mats[0], sp.HadamardProduct) or sorted(mats[0].args, key=str) != \
                    sorted((d, p), key=str) or not all(isinstance(o, sp.OneMatrix) for o in mats[1:]) \
                    or sp.MatMul(*mats[1:]).shape != (p.shape[1], p.shape[1]):
                continue
            return d, p
    return None


class SoftmaxVJP(Kind, sp.MatrixExpr):
    """δ_Z for S = softmax(Z) row by row: entry (i, j) = Σ_k δ_ik ∂S_ik/∂Z_ij.

    ``SoftmaxVJP(δ_S, Z)``; the partial derivatives are SymPy's, taken of
    softmax's definition entry by entry (see :meth:`entries`).  Compiled
    code never needs it: softmax feeding cross-entropy is fused (Ŷ − Y).
    """

    @property
    def shape(self):
        return self.args[1].shape

    def entries(self, delta_rows, z_rows):
        """The explicit matrix for explicit δ and Z (lists of rows)."""
        out = []
        for d, z in zip(delta_rows, z_rows):
            zs = sp.symbols(f"z0:{len(z)}", real=True)
            s = [sp.exp(v) / sum(sp.exp(u) for u in zs) for v in zs]
            at = dict(zip(zs, z))
            out.append([sum(d[k] * sp.diff(s[k], zs[j]).xreplace(at) for k in range(len(z)))
                        for j in range(len(z))])
        return sp.ImmutableMatrix(out)

    def explicit_value(self, d, z):
        """The explicit matrix for explicit matrices δ and Z."""
        return self.entries(d.tolist(), z.tolist())

    def numeric_value(self, d, z, entrywise=None) -> np.ndarray:
        """SymPy's own partial derivatives at NumPy's numbers, entry by entry."""
        return np.array(self.entries(d.tolist(), z.tolist()).tolist(), dtype=float)

    def lower(self, lo, target=None):
        """Not compiled: the engine gives softmax's VJP in closed form."""
        raise SymbackError("cannot compile the derivative of a softmax that does not feed "
                           "cross-entropy directly (its Jacobian-vector product is not fused); "
                           "use softmax with sb.cross_entropy, or another output activation")

    precedence = 50         # δ J(Z) is a product: bracketed as one among other products' factors and ⊙'s operands

    def _latex(self, printer, exp=None):
        return rf"{printer.parenthesize(self.args[0], 60)} \, J_{{\operatorname{{softmax}}}}\left({printer._print(self.args[1])}\right)"

    def _text(self, printer):
        return f"({printer._print(self.args[0])}) J_softmax({printer._print(self.args[1])})"


def softmax_vjp(S: Softmax, D, P=None):
    """δ_Z for P = softmax(Z) (row by row, masked or not) and δ_P = D, in closed form:
    P ⊙ (D − (D ⊙ P) 𝟏 𝟏ᵀ), FlashAttention's dS.

    The closed form is used only after SymPy has proved it equal, entry by
    entry, to Σ_k D_ik ∂P_ik/∂Z_ij taken of softmax's definition
    (:func:`prove_softmax_vjp`); a masked entry has P_ij = 0, so its δ is 0.
    ``P`` is the symbol the forward pass holds softmax(Z) in (else S itself).
    """
    prove_softmax_vjp()
    P = S if P is None else P
    k = S.shape[1]
    rows = sp.MatMul(sp.HadamardProduct(D, P), sp.OneMatrix(k, 1), sp.OneMatrix(1, k))
    return sp.HadamardProduct(P, sp.MatAdd(D, -rows))


@lru_cache(maxsize=None)
def prove_softmax_vjp(widths: int = 3) -> bool:
    """Prove, for rows of 1..`widths` entries of which a leading part is kept (the causal
    mask's rows; all kept is the plain softmax), that the closed form of :func:`softmax_vjp`
    equals the vector-Jacobian product of softmax's definition.  Raises if it does not."""
    for k in range(1, widths + 1):
        z, d = sp.symbols(f"z0:{k}", real=True), sp.symbols(f"d0:{k}", real=True)
        for kept in range(1, k + 1):
            total = sum(sp.exp(z[j]) for j in range(kept))
            s = [sp.exp(z[j]) / total if j < kept else sp.S.Zero for j in range(k)]
            dot = sum(d[i] * s[i] for i in range(k))
            for j in range(k):
                vjp = sum(d[i] * sp.diff(s[i], z[j]) for i in range(k))
                if sp.cancel(sp.together(vjp - s[j] * (d[j] - dot))) != 0:
                    raise DefinitionError(f"internal: softmax's closed-form VJP is not proved "
                                          f"(width {k}, {kept} kept, entry {j})")
    return True
