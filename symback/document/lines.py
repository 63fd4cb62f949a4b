"""Formulas printed for a document's rows: one expression as ``Tex``, long ones broken into
continuation rows of an align environment."""
from __future__ import annotations

import sympy as sp

from ..matrix import is_matrix
from ..printing import Chain, LatexPrinter, Tex, latex, visual_len
from ..printing.latex import minus_sign, negated

__all__ = ["aligned_lines", "chain_lines", "LINE_WIDTH", "Names", "definitions", "tex"]

LINE_WIDTH = 60            # symbols per display row before it is broken (about a page's width)
ROW_INDENT = 6             # a folded row starts after its align column ("∂L/∂W₁ = "): 20 pt past the margin


def tex(expr, **settings) -> Tex:
    """`expr` printed as LaTeX (symback's printer, `settings` passed on), marked as ``Tex``."""
    return Tex(latex(expr, **settings))


def definitions(defs, apps) -> list[dict]:
    """The rows "G₁ = …" that define the names a folded formula uses (each a checked line)."""
    return [{"name": tex(n), "value": Tex(aligned_lines(e, apps)), "sympy": {"chain": [n, e]}} for n, e in defs]


def aligned_lines(expr, apps, width: int = LINE_WIDTH) -> str:
    r"""`expr` printed for an align row, broken into continuation rows (``\\ &\qquad``) when long.

    A long sum breaks between its terms; a product with a long sum breaks inside that sum.
    """
    text = latex(expr, applications=apps)
    if visual_len(text) <= width:
        return text
    if is_matrix(expr):
        return _matrix_lines(expr, apps, width) if isinstance(expr, sp.MatAdd) else text
    e = sp.factor_terms(expr)
    body, prefix, suffix = e, "", ""
    if isinstance(e, sp.Mul):
        adds = [f for f in e.args if isinstance(f, sp.Add)]
        if not adds:
            return text
        body = max(adds, key=lambda f: len(f.args))
        if visual_len(latex(body, applications=apps)) < width // 2:
            return text         # no long sum inside: a break would only split a short factor
        prefix, suffix = latex(e / body, applications=apps) + r" \bigl(", r"\bigr)"
    if not isinstance(body, sp.Add):
        return text
    lines, cur = [], prefix
    for term in _signed_terms(body, apps):
        if cur not in ("", prefix) and visual_len(cur) + visual_len(term) > width:
            lines.append(cur)
            cur = ""
        cur = f"{cur} {term}" if cur not in ("", prefix) else cur + term
    lines.append(cur + suffix)
    return r" \\ &\qquad ".join(lines)


def chain_lines(chain: Chain, apps, width: int = LINE_WIDTH) -> Tex:
    r"""A chain of factors ∂a/∂b · ∂b/∂c · …, broken after a ``\cdot`` into continuation rows when long.

    (A residual network's nine-factor path ran 20 pt past the margin.)
    """
    text = latex(chain, applications=apps)
    if visual_len(text) <= width or len(chain.args) < 2:
        return Tex(text)
    rows, cur = [], []
    for f in chain.args:
        if cur and visual_len(latex(Chain(*cur, f), applications=apps)) > width:
            rows.append(cur)
            cur = []
        cur.append(f)
    rows.append(cur)
    # as many rows as that takes, the factors shared out evenly (not one left alone on the last)
    k, n = len(rows), len(chain.args)
    even = [list(chain.args[i * n // k:(i + 1) * n // k]) for i in range(k)]
    if all(visual_len(latex(Chain(*r), applications=apps)) <= width for r in even):
        rows = even
    return Tex(r" \cdot \\ &\qquad\quad ".join(latex(Chain(*r), applications=apps) for r in rows))


def _matrix_lines(expr, apps, width) -> str:
    """A long sum of matrices, one or more terms per continuation row."""
    printer = LatexPrinter({"applications": tuple(apps)})
    lines, cur = [], ""
    for i, t in enumerate(expr.args):
        neg = minus_sign(t)
        body = printer.doprint(negated(t) if neg else t)
        if (i or neg) and (isinstance(negated(t) if neg else t, sp.MatAdd) or body.lstrip().startswith("-")):
            body = rf"\left({body}\right)"        # − (A + B), + (−x) A: a second sign or a sum in brackets
        term = ("- " if neg else ("+ " if i else "")) + body
        if cur and visual_len(cur) + visual_len(term) > width:
            lines.append(cur)
            cur = ""
        cur = f"{cur} {term}" if cur else term
    lines.append(cur)
    return r" \\ &\qquad ".join(lines)


def _signed_terms(add: sp.Add, apps) -> list[str]:
    """The terms of a sum as the printer shows them, each with its sign (the first without '+')."""
    printer = LatexPrinter({"applications": tuple(apps)})
    out = []
    for i, t in enumerate(printer._as_ordered_terms(add)):
        neg = t.could_extract_minus_sign()
        term = -t if neg else t
        body = printer.doprint(term)
        if isinstance(term, sp.Add):
            body = rf"\left({body}\right)"
        out.append(("- " if neg else ("+ " if i else "")) + body)
    return out


class Names:
    """Sub-expressions named to fold a wide matrix formula: G₁ = …, G₂ = …, numbered per document.

    A formula too wide for a line is never cut short: its widest part that
    fits is given a name, the formula is printed with the name, and the name's
    definition is printed beside it (the certificate reads the definitions too).
    """

    def __init__(self):
        self.defined: dict = {}
        # printed widths, kept: a network's gradients share their deep parts, and printing
        # each part again at every level of every fold took most of a transformer's document
        self._widths: dict = {}
        self._memos: dict = {}      # the printer's texts of sub-expressions, per applications

    def width(self, expr, apps) -> int:
        """The printed width of expr (remembered for the document)."""
        key = (expr, tuple(apps))
        if key not in self._widths:
            memo = self._memos.setdefault(tuple(apps), {})
            self._widths[key] = visual_len(latex(expr, applications=apps, memo=memo))
        return self._widths[key]

    def fold(self, expr, apps, width: int = LINE_WIDTH - ROW_INDENT):
        """(expr with names in it, [(name, definition), ...] introduced for it)."""
        new = []
        while is_matrix(expr) and self.width(expr, apps) > width:
            part = _widest_part(expr, apps, width, self.width)
            if part is None:
                break
            name = next((n for n, e in self.defined.items() if e == part), None)
            if name is None:        # a part named before (an earlier line) keeps its name
                name = sp.MatrixSymbol(f"G{len(self.defined) + 1}", *part.shape)
                self.defined[name] = part
                new.append((name, part))
            expr = expr.xreplace({part: name})
        return expr, new


def _widest_part(expr, apps, width, measure):
    """The widest matrix part of expr that prints within `width`: down the widest argument each time
    (``measure(part, apps)`` is its printed width)."""
    node = expr
    while True:
        parts = [a for a in node.args if is_matrix(a) and not a.is_Atom
                 and not isinstance(a, (sp.MatrixSymbol, sp.OneMatrix))]
        if not parts:
            return None
        sized = [(measure(a, apps), a) for a in parts]
        n, widest = max(sized, key=lambda t: t[0])
        if n <= width:
            return widest
        node = widest
