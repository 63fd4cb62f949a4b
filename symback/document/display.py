"""What a notebook shows for a Derivation: its formulas, compactly.

Jupyter calls ``_repr_markdown_`` / ``_repr_latex_``, methods of
:class:`~symback.engine.Derivation` that call the functions here.  The
whole article (figure, verification table, operation counts) is too much
for an output cell, and Mermaid diagrams render only in some front ends,
so the display is the forward pass, each gradient's chain and the δ
recursion, in one ``$$`` block (MathJax renders it everywhere).  The
sections that need computing (verification, counts, bounds, figure) are
not built at all.
"""
from __future__ import annotations
from ..engine import CONSUMERS

__all__ = ["repr_markdown", "repr_latex"]

_COMPACT = {"display": True, "verify": False, "cost": False, "vanishing": False, "figure": False}


def repr_markdown(d) -> str:
    """A title and the derivation's formulas, as Markdown with MathJax."""
    from ..render import render
    return render(d, template="markdown", fmt="markdown", **_COMPACT)


def repr_latex(d) -> str:
    """The derivation's formulas as one ``$$\\begin{aligned}...\\end{aligned}$$`` block."""
    from ..render import render
    return render(d, template="snippet", fmt="latex", **_COMPACT)

CONSUMERS.update(repr_latex=repr_latex, repr_markdown=repr_markdown)   # Jupyter's display
