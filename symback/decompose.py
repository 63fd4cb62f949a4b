"""A plain SymPy expression turned into a Graph of named steps (``derive(expr, wrt=...)``)."""
from __future__ import annotations

import sympy as sp

from .errors import DefinitionError
from .graph import Graph, check_name

__all__ = ["decompose"]


def decompose(expr: sp.Expr, wrt) -> Graph:
    """Turn a plain SymPy expression into a Graph of named steps.

    Every compound sub-expression that depends on a parameter in `wrt`
    (each function application, power, product and sum) becomes a node
    u_1, u_2, ... (a repeated one is reused), and the whole is the loss C.
    Symbols not in `wrt` become inputs.
    """
    if isinstance(expr, (sp.MatrixBase, sp.MatrixExpr)) or not isinstance(expr, sp.Expr):
        raise DefinitionError(f"derive() needs a scalar SymPy expression, got {type(expr).__name__}")
    if wrt is None:
        raise DefinitionError("derive(expr) needs wrt=[...], the parameters to differentiate by")
    wrt = [sp.Symbol(w) if isinstance(w, str) else w for w in (wrt if isinstance(wrt, (list, tuple)) else [wrt])]
    for w in wrt:
        if not isinstance(w, sp.Symbol):
            raise DefinitionError(f"wrt must hold symbols or names, got {w!r}")
        check_name(w.name)
        if w not in expr.free_symbols:
            raise DefinitionError(f"the expression does not depend on {w.name!r}")
    g = Graph()
    others = sorted((s for s in expr.free_symbols if s not in wrt), key=lambda s: s.name)
    taken = {s.name for s in expr.free_symbols}
    for s in others:
        check_name(s.name)
    if others:
        g._declare([s.name for s in others], "input")
        for s in others:   # keep the user's own symbols (and their assumptions)
            g._symbol[s.name] = s
    g._declare([w.name for w in wrt], "param")
    for w in wrt:
        g._symbol[w.name] = w
    wrtset, names, counter = set(wrt), {}, [0]

    def visit(e):
        if e.is_Atom or not (e.free_symbols & wrtset):
            return e
        rebuilt = e.func(*[visit(a) for a in e.args])
        if rebuilt in names:
            return names[rebuilt]
        if e is expr:
            return rebuilt
        counter[0] += 1
        while f"u_{counter[0]}" in taken:
            counter[0] += 1
        sym = g.node(f"u_{counter[0]}", rebuilt)
        names[rebuilt] = sym
        return sym

    top = visit(expr)
    loss_name = "C" if "C" not in taken else "C_loss"
    g.loss(top, name=loss_name)
    return g
