"""The output blocks the engine fuses: Z → A = f(Z) → C = loss(A, Y) gives δ_Z from δ_C at once.

:func:`output_block` recognises the block (an activation or softmax feeding only the
per-sample cost, as its prediction); :func:`fused_delta` is its δ_Z, the fused rule that
SymPy derives and simplifies (:func:`symback.vjp.fused_output`).
"""
from __future__ import annotations

import sympy as sp

from .adjoints import delta
from .graph import Graph
from .matrix import RowCost, Softmax, activation_of
from .vjp import fused_output, to_matrix

__all__ = ["output_block", "fused_delta"]


def output_block(graph: Graph, child: str):
    """(f, cost node) when node `child` is A = f(Z) for an activation or softmax f and feeds
    only the per-sample cost, as its prediction: the block the engine fuses; else None."""
    a_expr = graph.expr(child) if child in graph._expr else None
    if isinstance(a_expr, Softmax) and a_expr.mask is None:
        from .functions import softmax
        out = softmax
    elif isinstance(a_expr, Softmax):       # a masked softmax: its own closed-form VJP
        return None
    elif a_expr is not None and activation_of(a_expr) is not None and not activation_of(a_expr)[1]:
        out = activation_of(a_expr)[0]
    else:
        return None
    users = graph.children(child)
    if len(users) != 1 or not isinstance(graph.expr(users[0]), RowCost):
        return None
    cost = graph.expr(users[0])
    if cost.prediction != graph.symbol(child):
        return None
    return out, users[0]


def fused_delta(graph: Graph, child: str, name: str):
    """δ_Z straight from δ_C when Z → A = f(Z) → C = loss(A, Y) is an output block.

    The fused rule (softmax + cross-entropy → Ŷ − Y, sigmoid + binary
    cross-entropy → Ŷ − Y, ...) is derived and simplified by SymPy
    (:func:`symback.vjp.fused_output`); it replaces δ_A ⊙ f'(Z), whose
    division by Ŷ overflows when the output saturates.
    """
    block = output_block(graph, child)
    if block is None:
        return None
    out, user = block
    cost = graph.expr(user)
    g, (z, a, y) = fused_output(out, cost.loss, cost.prediction.shape[1])
    Z, A, Y = graph.symbol(name), graph.symbol(child), cost.target
    spread = delta(graph, user) * sp.OneMatrix(1, A.shape[1])
    return sp.HadamardProduct(spread, to_matrix(g, {z: Z, a: A, y: Y}, A.shape)).doit()
