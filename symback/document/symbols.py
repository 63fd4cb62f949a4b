"""What the forward pass's own symbols mean: the sentences printed under it.

A student meets softmax_causal, X_{:,a:b}, E_{a:b} and norm(·) first in the forward pass;
each is defined there, in one sentence, when the pass uses it (before, E_{1:2} and norm
were defined only in an appendix, or nowhere).
"""
from __future__ import annotations

import sympy as sp

from ..image import ImageMap
from ..kinds.rownorm import RowNorm
from ..kinds.select import Select
from ..kinds.softmax import Softmax
from ..printing import latex

__all__ = ["forward_note"]


def forward_note(exprs) -> str | None:
    """The sentences (LaTeX text) defining the special symbols among the forward pass's
    expressions `exprs`, or None when it uses none."""
    parts = [x for e in exprs for x in sp.preorder_traversal(e)]
    notes = []
    # a masked softmax's subscript says which mask; the sentence says what the mask does
    if any(isinstance(x, Softmax) and x.mask == "causal" for x in parts):
        notes.append(r"Here $\operatorname{softmax}_{\mathrm{causal}}$ is the row-wise softmax with the entries "
                     r"above the diagonal ($j > i$) left out: their $P_{ij}$ are 0, and each row's others sum to 1.")
    if any(isinstance(e, sp.Basic) and e.has(sp.MatrixSlice) for e in exprs):
        notes.append(r"$X_{:,\,a:b}$ is the block of columns $a$ to $b$ of $X$, all its rows (counted from 1).")
    if any(isinstance(x, Select) for x in parts):
        notes.append(r"$E_{a:b}$ is the matrix whose columns are the unit vectors $e_a, \ldots, e_b$: "
                     r"$A E_{a:b}$ is the block of columns $a$ to $b$ of $A$ (a head's columns, counted from 1), "
                     r"and $B E_{a:b}^{\top}$ puts $B$'s columns back in those places, zeros elsewhere.")
    eps = sorted({x.eps for x in parts if isinstance(x, RowNorm)}, key=float)
    if eps:
        which = ", ".join(latex(e) for e in eps)
        notes.append(r"$\operatorname{norm}(H)$ standardises each row of $H$: it subtracts the row's mean "
                     r"and divides by $\sqrt{v + \varepsilon}$, with $v$ the row's variance (the mean of the "
                     rf"squared deviations) and $\varepsilon = {which}$; the $\sigma^{{-1}}$ defined beside "
                     r"it holds these $1/\sqrt{v + \varepsilon}$, one for each row of $H$.")
    images = [x for x in parts if isinstance(x, ImageMap)]
    if images:
        notes.append(_images(images))
    return " ".join(notes) or None


def _images(maps) -> str:
    """What a CNN's image maps read and give: an image is a matrix, a row per channel."""
    seen = {}
    for m in maps:
        C, H, W = (int(v) for v in m.geometry[:3])
        seen.setdefault(latex(m.arg), f"{C} channel{'s' if C > 1 else ''} of ${H}\\times{W}$")
    ops = {m.op for m in maps}
    said = ["An image is a matrix with a row per channel, its pixels read row by row ("
            + "; ".join(f"${a}$: {what}" for a, what in seen.items()) + ")"]
    if "unfold" in ops:
        said.append(r"$\operatorname{unfold}$ gives a column per output position, holding the entries under "
                    r"the window its subscript sizes, channel by channel (stride $s$ and zero padding $p$ where "
                    r"shown, else 1 and 0)")
    pools = sorted(op for op in ops if op in ("avgpool", "maxpool"))
    if pools:       # (k is the documents' column index: the window is named by its subscript)
        said.append(" and ".join(rf"$\operatorname{{{op}}}$" for op in pools) + " take"
                    + ("s" if len(pools) == 1 else "") + " the "
                    + " and the ".join({"avgpool": "mean", "maxpool": "maximum"}[op] for op in pools)
                    + r" of each window, as wide as the subscript and that far apart unless a stride $s$ is "
                    r"shown (padding $p$ where shown)")
    if "flatten" in ops:
        said.append(r"$\operatorname{flatten}$ puts the rows one after another in one row")
    return "; ".join(said) + "."
