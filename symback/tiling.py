"""A sum's terms that tile one axis, joined (the lowering's :meth:`~symback.lowering.Lowering.scalar`
of a MatAdd calls :func:`tiled`): each head's block of an attention layer's δ, padded with zeros,
becomes one concatenation, and the heads' products with row blocks of one weight one product.
Nothing here is a derivative: the same sums, computed with fewer statements."""
from __future__ import annotations

import sympy as sp

from .stmt import Tr

__all__ = ["tiled"]


def tiled(lo, terms) -> list:
    """The terms of a sum lowered by `lo` (a Lowering), those whose pieces tile one axis
    joined: blocks padded with zeros (c·pad(A_h): each head's δ put back in place) become one
    concatenation of the blocks, and products with row blocks of one matrix (Σ_h A_h W[rows_h]:
    the heads' outputs times Wo) one product of the concatenated A_h with W — one copy and one
    GEMM instead of a zero-filled array, a GEMM and an addition per head.  The other terms are
    kept."""
    groups: dict = {}
    for k, term in enumerate(terms):
        coeff, sym = term.as_coeff_Mul() if isinstance(term, sp.Mul) else (sp.S.One, term)
        if coeff.free_symbols:
            continue
        if sym in lo.pads:
            block, axis, start, n = lo.pads[sym]
            groups.setdefault(("pad", axis, n), []).append((start, coeff, block, k))
        elif _row_block(lo, sym):
            a, w, start = _row_block(lo, sym)
            groups.setdefault(("rows", w), []).append((start, coeff, a, k))
    done, out = set(), []
    for key, group in groups.items():
        group.sort(key=lambda g: g[0])
        axis = key[1] if key[0] == "pad" else -1          # (the blocks' axis that tiles)
        n = key[2] if key[0] == "pad" else lo.shapes[key[1]][-2]
        edges = [g[0] for g in group] + [n]
        widths = [lo.shapes[b][axis] for _, _, b, _ in group]
        if len(group) < 2 or edges[0] != 0 or any(a + w != b for a, w, b in zip(edges, widths, edges[1:])):
            continue                            # overlaps or gaps: leave the terms
        coeffs = {c for _, c, _, _ in group}
        common = coeffs.pop() if len(coeffs) == 1 else sp.S.One
        blocks = [b if c == common else lo.materialize(c * b) for _, c, b, _ in group]
        shape = list(lo.shapes[blocks[0]][-2:])
        shape[axis] = n
        sums = [lo.made.get(b) for b in blocks]
        if axis == -2 and all(st is not None and st.op == "bgemm" and st.args[1] == sums[0].args[1]
                              and isinstance(st.args[0], Tr) for st in sums):
            # rows Σ A_hᵀ B stacked: Σ [A_1 … A_h]ᵀ B, one GEMM (the heads' δWo; the
            # concatenation is the forward pass's own, reused)
            parts = [st.args[0].sym for st in sums]
            a = lo.emit("concat", (-1, *parts), (lo.shapes[parts[0]][-2],
                                                   sum(lo.shapes[x][-1] for x in parts)))
            joined = lo.emit("bgemm", (Tr(a), sums[0].args[1]), tuple(shape))
        else:
            joined = lo.emit("concat", (axis, *blocks), tuple(shape))
        if key[0] == "rows":
            w = key[1]
            joined = lo.emit("matmul", (joined, w), (shape[0], lo.shapes[w][-1]))
        out.append(common * joined)
        done |= {k for _, _, _, k in group}
    return out + [t for k, t in enumerate(terms) if k not in done]

def _row_block(lo, sym):
    """(A, W, start) when `sym` is the product A W[start:stop, :] of a (not transposed)
    A with a block of whole rows of the matrix W, else None."""
    st = lo.made.get(sym)
    if st is None or st.op != "matmul" or isinstance(st.args[0], Tr) or isinstance(st.args[1], Tr):
        return None
    cut = lo.made.get(st.args[1])
    if cut is None or cut.op != "slice" or cut.args[2] != (0, None, 1) or cut.args[1][2] != 1:
        return None
    w = cut.args[0]
    if len(lo.shapes.get(w, ())) != 2 or lo.batched(w):     # a parameter-like matrix
        return None
    return st.args[0], w, cut.args[1][0]

