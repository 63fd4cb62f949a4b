"""Formulas printed for a document's rows: one expression as ``Tex``, long ones broken into
continuation rows of an align environment."""
from __future__ import annotations

import sympy as sp

from ..matrix import is_matrix
from ..printing import Chain, LatexPrinter, Tex, latex, visual_len
from ..printing.latex import minus_sign, negated

__all__ = ["aligned_lines", "term_rows", "chain_lines", "LINE_WIDTH", "Names", "definitions", "tex"]

LINE_WIDTH = 60            # symbols per display row before it is broken (about a page's width)
ROW_INDENT = 6             # a folded row starts after its align column ("∂L/∂W₁ = "): 20 pt past the margin


def tex(expr, **settings) -> Tex:
    """`expr` printed as LaTeX (symback's printer, `settings` passed on), marked as ``Tex``."""
    return Tex(latex(expr, **settings))


def definitions(defs, apps) -> list[dict]:
    """The rows "G₁ = …" that define the names a folded formula uses (each a checked line)."""
    return [{"name": tex(n), "value": Tex(aligned_lines(e, apps)), "sympy": {"chain": [n, e]}} for n, e in defs]


def aligned_lines(expr, apps, width: int = LINE_WIDTH, **settings) -> str:
    r"""`expr` printed for an align row, broken into continuation rows (``\\ &\qquad``) when long.

    A long sum breaks between its terms; a product with a long sum breaks inside that sum
    (each row's bracket sized to that row: ``\left( … \right.`` then ``\left. … \right)``, as a
    ``\left(`` cannot close on another row); a map δ ↦ … inside its body.  `settings` go to
    the printer.
    """
    text = latex(expr, applications=apps, **settings)
    if visual_len(text) <= width:
        return text
    if isinstance(expr, sp.Lambda) and len(expr.variables) == 1:
        head = rf"\Bigl( {latex(expr.variables[0], applications=apps, **settings)} \mapsto "
        body = aligned_lines(expr.expr, apps, width, **settings)
        return head + body + r" \Bigr)" if r"\\" in body else text
    if is_matrix(expr):
        if isinstance(expr, sp.MatAdd):
            return _matrix_lines(expr, apps, width, settings)
        return _product_lines(expr, apps, width, settings) or text
    e = sp.factor_terms(expr)
    body, prefix, suffix = e, "", ""
    if isinstance(e, sp.Mul):
        adds = [f for f in e.args if isinstance(f, sp.Add)]
        if not adds:
            return text
        body = max(adds, key=lambda f: len(f.args))
        if visual_len(latex(body, applications=apps, **settings)) < width // 2:
            return text         # no long sum inside: a break would only split a short factor
        prefix, suffix = latex(e / body, applications=apps, **settings) + " ", ""
    if not isinstance(body, sp.Add):
        return text
    return _rows(_signed_terms(body, apps, settings), width, prefix, suffix, bracket=bool(prefix))


def _rows(terms, width, prefix="", suffix="", bracket=False) -> str:
    """Signed terms filled into rows of at most `width` symbols (a term never split), after
    `prefix` and before `suffix`; with `bracket`, the terms in brackets sized row by row."""
    open_, close = (r"\left(", r"\right)") if bracket else ("", "")
    lines, cur = [], ""
    for term in terms:
        if cur and visual_len(prefix if not lines else "") + visual_len(cur) + visual_len(term) > width:
            lines.append(cur)
            cur = ""
        cur = f"{cur} {term}" if cur else term
    lines.append(cur)
    if bracket and len(lines) > 1:      # \left( … \right. on the first row, \left. … \right) on the last
        lines = [("" if i == 0 else r"\left. ") + row + ("" if i == len(lines) - 1 else r" \right.")
                 for i, row in enumerate(lines)]
    # one at a time: on one row, lines[0] is lines[-1] (a tuple assignment kept only the second,
    # dropping the common factor the prefix holds: λ/2 of a seven-weight penalty, and its "\left(")
    lines[0] = prefix + open_ + lines[0]
    lines[-1] = lines[-1] + close + suffix
    return r" \\ &\qquad ".join(lines)


def term_rows(expr, apps, width: int = LINE_WIDTH) -> str:
    r"""`expr` for an align row: a long sum's terms as printed, filled into continuation rows,
    nothing factored out (:func:`aligned_lines` factors; a sum over the samples of a constant
    then read (Σᵢ 1) …)."""
    text = latex(expr, applications=apps)
    if visual_len(text) <= width or not isinstance(expr, sp.Add):
        return text
    return _rows(_signed_terms(expr, apps), width)


def chain_lines(chain: Chain, apps, width: int = LINE_WIDTH) -> Tex:
    r"""A chain of factors ∂a/∂b · ∂b/∂c · …, broken after a ``\cdot`` into continuation rows when long.

    (A residual network's nine-factor path ran 20 pt past the margin.)  Each factor is printed
    once: a chain prints as its factors, each alone, joined by ``\cdot``.
    """
    text = latex(chain, applications=apps)
    if visual_len(text) <= width or len(chain.args) < 2:
        return Tex(text)
    parts = [latex(Chain(f), applications=apps) for f in chain.args]
    sizes = [visual_len(p) for p in parts]

    def size(lo, hi):           # the printed width of factors lo..hi-1 joined by \cdot
        return sum(sizes[lo:hi]) + (hi - lo - 1)
    cuts, start = [], 0
    for k in range(1, len(parts)):
        if size(start, k + 1) > width:
            cuts.append(k)
            start = k
    bounds = [0] + cuts + [len(parts)]
    # as many rows as that takes, the factors shared out evenly (not one left alone on the last)
    rows, n = len(bounds) - 1, len(parts)
    even = [i * n // rows for i in range(rows + 1)]
    if all(size(even[i], even[i + 1]) <= width for i in range(rows)):
        bounds = even
    return Tex(r" \cdot \\ &\qquad\quad ".join(r" \cdot ".join(parts[bounds[i]:bounds[i + 1]])
                                                 for i in range(rows)))


def _matrix_lines(expr, apps, width, settings=None, prefix="", suffix="", bracket=False) -> str:
    """A long sum of matrices, one or more terms per continuation row."""
    printer = LatexPrinter({**(settings or {}), "applications": tuple(apps)})
    terms = []
    for i, t in enumerate(printer._as_ordered_terms(expr)):     # the order the one-row form has
        neg = minus_sign(t)
        t = negated(t) if neg else t
        body = printer.doprint(t)
        # − (A + B), + (−x) A: a second sign or a sum in brackets
        if printer._needs_add_brackets(t) or ((i or neg) and (isinstance(t, sp.MatAdd) or body.lstrip().startswith("-"))):
            body = rf"\left({body}\right)"
        terms.append(("- " if neg else ("+ " if i else "")) + body)
    return _rows(terms, width, prefix, suffix, bracket)


def _product_lines(expr, apps, width, settings) -> str | None:
    r"""A product (⊙ or matrix) with a long sum among its factors, broken inside that sum:
    A (S₁ + S₂ … ) B, or (S₁ + … ) ⊙ B (None: no long sum inside)."""
    if not isinstance(expr, (sp.MatMul, sp.HadamardProduct)):
        return None
    def show(e):
        return latex(e, applications=apps, **settings)
    adds = [a for a in expr.args if isinstance(a, sp.MatAdd)]
    if not adds:
        return None
    body = max(adds, key=lambda a: visual_len(show(a)))
    if visual_len(show(body)) < width // 2:
        return None
    k = expr.args.index(body)
    if isinstance(expr, sp.HadamardProduct):     # ⊙ commutes: the sum first, the rest after
        rest = [a for i, a in enumerate(expr.args) if i != k]
        after = " ".join(r"\odot " + (rf"\left({show(a)}\right)" if not _atomic(a) else show(a)) for a in rest)
        return _matrix_lines(body, apps, width, settings, "", " " + after, bracket=True)
    before, after = expr.args[:k], expr.args[k + 1:]
    head = (show(before[0]) if len(before) == 1 else show(sp.MatMul(*before))) if before else ""
    head = "- " if head == "-1" else head
    tail = (show(after[0]) if len(after) == 1 else show(sp.MatMul(*after))) if after else ""
    return _matrix_lines(body, apps, width, settings, f"{head} ".lstrip(), f" {tail}".rstrip(), bracket=True)


def _atomic(e) -> bool:
    """Whether e prints without brackets beside ⊙ (a symbol, a transpose of one, f'(Z))."""
    return isinstance(e, (sp.MatrixSymbol, sp.OneMatrix)) or getattr(e, "entrywise", False) or (
        isinstance(e, sp.Transpose) and isinstance(e.arg, sp.MatrixSymbol))


def _signed_terms(add: sp.Add, apps, settings=None) -> list[str]:
    """The terms of a sum as the printer shows them, each with its sign (the first without '+')."""
    printer = LatexPrinter({**(settings or {}), "applications": tuple(apps)})
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

    def __init__(self, abbreviations=()):
        # names given before any fold (a normalisation's σ⁻¹, :mod:`.scales`): each has its
        # definition, and the forms it stands for are replaced wherever a line holds them
        self.given = tuple(abbreviations)
        self.defined: dict = {a.symbol: a.definition for a in self.given}
        self.short: dict = {f: v for a in abbreviations for f, v in a.forms.items()}
        self._folds = 0
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

    def abbreviate(self, expr):
        """expr with the names given before any fold put in (σ⁻¹ for its map)."""
        if self.short and isinstance(expr, sp.Basic) and expr.has(*self.short):
            return expr.xreplace(self.short)
        return expr

    def fold(self, expr, apps, width: int = LINE_WIDTH - ROW_INDENT):
        """(expr with names in it, [(name, definition), ...] introduced for it)."""
        new, expr = [], self.abbreviate(expr)
        while is_matrix(expr) and self.width(expr, apps) > width:
            part = _widest_part(expr, apps, width, self.width)
            if part is None:
                break
            name = next((n for n, e in self.defined.items() if e == part), None)
            if name is None:        # a part named before (an earlier line) keeps its name
                self._folds += 1
                name = sp.MatrixSymbol(f"G{self._folds}", *part.shape)
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
