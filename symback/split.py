"""A node's definition split into the nodes the engine can differentiate.

SymPy's matrix calculus takes products, sums and element-wise functions of named matrices;
it fails (a raw IndexError, ValueError, ShapeError) on some nests of them, and a node kind
(softmax, a row norm, a layer norm, an image map) is differentiated only as a whole node.
:func:`split` gives each such part a node of its own, named after the node it came from:
``Z_<name>`` (the compound argument of an f, the notes' pre-activation z), the kind's
``node_prefix`` (``P_``, ``Hhat_``, ``N_``, ``U_``) and ``F_<name>`` (a compound factor of a
Hadamard product).  The graph (:class:`symback.graph.Graph`) calls it on every definition; it
adds the parts through the graph's ``_add`` and ``_fresh``.  Nothing here is a derivative.
"""
from __future__ import annotations

import sympy as sp
from sympy.matrices.expressions.applyfunc import ElementwiseApplyFunction

from .kinds.base import Kind, activation_of, elementwise, is_matrix

__all__ = ["split"]


def split(g, name, expr):
    """`expr` with its parts given nodes of graph `g`: the compound argument of a top-level
    f(·) or of a whole-node kind, each such kind inside a larger expression, the argument of
    an f nested in another, and the compound factors of Hadamard products."""
    if hasattr(expr, "node_form"):      # a layer norm as the node's whole definition
        expr = expr.node_form()
    if activation_of(expr) is not None and not isinstance(expr.expr, sp.MatrixSymbol):
        return elementwise(expr.function, _part(g, f"Z_{name}", expr.expr))
    if _whole(expr):
        if isinstance(expr.arg, sp.MatrixSymbol):
            return expr
        return expr.func(_part(g, f"Z_{name}", expr.arg), *expr.args[1:])
    if is_matrix(expr):
        # innermost first, looked for again after each: a lifted part changes those around it
        while (sub := next((e for e in sp.postorder_traversal(expr) if _whole(e)), None)) is not None:
            expr = expr.xreplace({sub: _part(g, sub.node_prefix + name, sub)})
        expr = _factors(g, name, _arguments(g, name, expr))
    return expr


def _part(g, wanted, expr):
    """A node of `g` for `expr` (itself split), under a fresh name from `wanted`; its symbol."""
    name = g._fresh(wanted)
    return g._add(name, "node", split(g, name, expr))


def _arguments(g, name, expr):
    """The argument of an f(·) inside a larger expression as a node, ``Z_<name>``, where it
    holds another f or a Hadamard product (tanh(5/2·swish(X)) W, tanh(swish(X) V) W,
    tanh((Z ⊙ Z) U) U): SymPy's matrix calculus fails on such a nest (an IndexError, a
    ValueError, a NotImplementedError) and takes f(Z) of a named Z."""
    inner = (ElementwiseApplyFunction, sp.HadamardProduct, sp.HadamardPower)

    def nested(e):
        return isinstance(e, ElementwiseApplyFunction) and e is not expr and any(
            isinstance(a, inner) for a in sp.preorder_traversal(e.expr))
    while (f := next((e for e in sp.postorder_traversal(expr) if nested(e)), None)) is not None:
        expr = expr.xreplace({f: elementwise(f.function, _part(g, f"Z_{name}", f.expr))})
    return expr


def _factors(g, name, expr):
    """Each compound factor of a Hadamard product that holds a sum, an activation or another
    Hadamard product (a gate's 1 − z, σ(x U)) as a node, ``F_<name>``: SymPy's matrix calculus
    fails on such a factor (a raw TypeError or ValueError), and takes the product of named
    matrices that the split leaves."""
    for had in [e for e in sp.preorder_traversal(expr) if isinstance(e, sp.HadamardProduct)]:
        if not expr.has(had):
            continue
        factors = [_part(g, f"F_{name}", f) if _gate_factor(f) else f for f in had.args]
        expr = expr.xreplace({had: sp.HadamardProduct(*factors)})
    return expr


def _whole(e) -> bool:
    """Whether `e` is a node kind that the engine differentiates only as a whole node."""
    return isinstance(e, Kind) and e.node_prefix is not None


def _gate_factor(factor) -> bool:
    """Whether a Hadamard factor is compound in a way SymPy's matrix calculus cannot take
    inside the product: it holds a sum, an element-wise function or a Hadamard product."""
    kinds = (sp.MatAdd, sp.HadamardProduct, ElementwiseApplyFunction)
    return not isinstance(factor, sp.MatrixSymbol) and any(
        isinstance(e, kinds) for e in sp.preorder_traversal(factor))
