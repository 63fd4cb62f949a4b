"""A node's formula in the order its user wrote it: ``b + a_1 + a_2``, ``x_1 w_1``, not SymPy's.

SymPy keeps a sum's terms and a product's factors in its own canonical
order, so ``yhat = "b + a_1 + a_2"`` would print as ŷ = a₁ + a₂ + b where
the lecture notes (and the spec file) write b + a₁ + a₂.  A spec file keeps
its text (``Graph.written_text``, set by :mod:`symback.spec`); :func:`written_latex` prints a node's formula
term by term and factor by factor in that text's order.  A graph built in
Python has no text (SymPy's order is all there is): its formulas print as
SymPy orders them.
"""
from __future__ import annotations

import ast

import sympy as sp

from ..errors import SymbackError
from ..matrix import is_matrix
from ..parse import known_names, parse_expr
from ..printing import latex

__all__ = ["written_form", "written_latex"]


def written_form(g, name: str):
    """Node `name`'s terms as its spec file wrote them: ((sign, (factor, ...)), ...), or None.

    None without a text (a graph built in Python), for a single factor (no order
    to lose), and unless the terms add up to the node's expression: a printed
    line never says anything but the node's formula.
    """
    text = g.written_text.get(name)
    if text is None:
        return None
    cache = g.__dict__.setdefault("_written_terms", {})
    if name not in cache:
        cache[name] = _parsed(g, name, text.strip())
    return cache[name]


def _parsed(g, name, text):
    try:
        tree = ast.parse(text, mode="eval").body
        names = known_names(g)
        terms = tuple((sign, tuple(parse_expr(ast.get_source_segment(text, f), names) for f in _factors(node)))
                      for sign, node in _terms(tree, 1))
    except (SyntaxError, SymbackError):
        return None
    if len(terms) == 1 and len(terms[0][1]) == 1 or any(is_matrix(f) for _, fs in terms for f in fs):
        return None         # nothing whose order could be lost (a matrix formula: SymPy's order)
    total = sp.Add(*[sign * sp.Mul(*fs) for sign, fs in terms])
    return terms if sp.expand(total - g.expr(name)) == 0 else None


def _terms(node, sign):
    """(sign, ast node) of each term of a sum as written, left to right."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub)):
        yield from _terms(node.left, sign)
        yield from _terms(node.right, sign if isinstance(node.op, ast.Add) else -sign)
    else:
        yield sign, node


def _factors(node):
    """The factors of a product of names and numbers as written (any other term is one factor)."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
        return _factors(node.left) + _factors(node.right)
    return [node]


def written_latex(terms, values: dict | None = None, applications=()) -> str:
    """The terms printed in their written order (products of plain factors in theirs).

    With ``values`` numbers stand in for the symbols, products joined by ``\\cdot``.
    """
    out = []
    for i, (sign, factors) in enumerate(terms):
        plain = all(f.is_Atom for f in factors)
        if plain:
            # x_1 w_1: each factor alone, in the written order; a negative number is bracketed
            parts = [_factor(f, values) for f in factors]
            body = (r" \cdot " if values else " ").join(parts)
        else:
            body = latex(sp.Mul(*factors), values=values, applications=applications)
            if isinstance(sp.Mul(*factors), sp.Add):
                body = rf"\left({body}\right)"
        if body.startswith("-"):            # a term written with its own sign: −3x
            sign, body = -sign, body[1:].lstrip()
        if sign < 0:
            out.append(("- " if i == 0 else " - ") + body)
        else:
            out.append(body if i == 0 else " + " + body)
    return "".join(out)


def _factor(f, values) -> str:
    text = latex(f, values=values)
    return rf"\left({text}\right)" if text.startswith("-") and values else text
