"""How much a document would write, checked before any of it is: a deep graph is refused.

A document writes every parameter's chain of local factors, its forms and its checks; a
chain of L layers has parameters whose chains hold up to 2L factors, so the whole grows as
L² (a 300-layer tanh chain: 90,600 factors; 40 layers, 1,680, took 81 s).
Rather than run for minutes and then print something no one reads, :func:`check_size`
refuses it at once, naming the size and what to do instead.
"""
from __future__ import annotations

from ..errors import OutputError

__all__ = ["MAX_DOCUMENT_FACTORS", "check_size"]

#: the most local factors a document's chain section may write, over all its parameters
#: (a 40-layer scalar chain writes 1,680 and took 81 s; an LSTM of 3 steps, 186)
MAX_DOCUMENT_FACTORS = 2_000


def document_factors(d) -> int:
    """The local factors of every parameter's longest chain, summed over the parameters the
    document writes path by path (the others go through the δs, a line each)."""
    return sum(d.path_count(p, longest=True) for p in d.params if d.listable(p))


def check_size(d) -> None:
    """An :class:`OutputError` naming the size when `d`'s document would be too long to write."""
    total = document_factors(d)
    if total <= MAX_DOCUMENT_FACTORS:
        return
    longest = max(d.path_count(p, longest=True) for p in d.params)
    raise OutputError(
        f"a document of this graph ({len(d.graph.order):,} nodes, {len(d.params):,} parameters) would write "
        f"{total:,} chain-rule factors (its longest chain: {longest:,}), more than the "
        f"{MAX_DOCUMENT_FACTORS:,} a document holds: it would take minutes and hundreds of pages. "
        f"Document a shallower network (fewer layers or steps); the formulas themselves are "
        f"d.gradient(p) at any size, and sb.compile(d) trains it")
