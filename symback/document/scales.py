"""Each normalisation's 1/σ, named: σ⁻¹ in the lines that use it, defined in the forward pass.

A layer norm Ĥ = norm(H) (and the row norm inside a batch norm) divides by σ = √(var + ε),
and the engine's VJP holds 1/σ as the map (w ↦ 1/√(w + ε)) applied to the variance column,
about 40 symbols wide, in every line of its backward.  The textbook names it instead:
δ_H = (1/σ)(δ_Ĥ − mean(δ_Ĥ) − Ĥ ⊙ mean(δ_Ĥ ⊙ Ĥ)).  :func:`inverse_sigmas` gives each
normalisation node its σ⁻¹ (a matrix symbol), its definition (a forward-pass row, checked
like every row) and the forms it stands for; :class:`~.lines.Names` puts the symbol in.
"""
from __future__ import annotations

import re
from typing import NamedTuple

import sympy as sp

from ..matrix import RowNorm
from ..printing import latex
from .batchnorm import layers as batchnorm_layers, rstd_symbol

__all__ = ["InverseSigma", "inverse_sigmas"]


class InverseSigma(NamedTuple):
    """σ⁻¹ of the normalisation node `node`: the symbol, what it is, and {form in the
    engine's expressions: what replaces it} (the column 1/σ, and its transpose)."""
    node: str
    symbol: sp.MatrixSymbol
    definition: sp.MatrixExpr
    forms: dict


def inverse_sigmas(g) -> list[InverseSigma]:
    """σ⁻¹ of every row normalisation of the graph, in graph order.

    A layer norm's is the column of its rows' 1/σ, σ_{N2}⁻¹ for Ĥ_{N2}; a batch norm's the
    row of its columns' 1/σ, σ₂⁻¹ for N₂, the symbol its own section uses (the engine
    normalises the transposed batch, so the column it holds is that row transposed).
    """
    batch = {nt: n for _, _, nt, n in batchnorm_layers(g)}
    out, used = [], set()
    for n in g.node_names:
        e = g.expr(n)
        if not isinstance(e, RowNorm):
            continue
        r, _ = e.rstd()
        rt = sp.Transpose(r).doit()         # how 1/σ reads once a chain transposed it
        if n in batch:
            sym = rstd_symbol("".join(ch for ch in batch[n] if ch.isdigit()), r.shape[0])
            definition, forms = rt, {r: sym.T, rt: sym}
        else:
            sym = sp.MatrixSymbol(_name(g, n, used), *r.shape)
            definition, forms = r, {r: sym, rt: sym.T}
        if sym.name in used:
            continue                        # (two batch norms numbered alike: left as they are)
        used.add(sym.name)
        out.append(InverseSigma(n, sym, definition, forms))
    return out


def _name(g, n, used) -> str:
    r"""σ_{N2}^{-1} for Ĥ_{N2}; for a node printed otherwise, σ with that name as subscript."""
    printed = latex(g.symbol(n))
    m = re.fullmatch(r"\\hat\{H\}_\{(.+)\}", printed)
    name = r"\sigma_{%s}^{-1}" % (m.group(1) if m else printed)
    return name if name not in used else r"\sigma_{%s}^{-1}" % printed
