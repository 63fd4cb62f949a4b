"""The LaTeX printer: formulas the way a lecturer writes them.

:class:`LatexPrinter` is SymPy's LaTeX printer with a few small,
type-named overrides: positive terms before negative ones
(``\\hat{y} - y``, not SymPy's ``- y + \\hat{y}``), short decimals for
floats, ``⊙`` and ``^{\\top}`` in matrix formulas, ``σ'(z)`` where an
expression is an activation's derivative (:mod:`.primes`), and an optional table of
numbers to print in place of symbols (the worked example).  Chain order
is kept by never handing a product of path factors to SymPy: the
functions :func:`chain_symbols` and :func:`chain_values` print each
factor by itself and join them with ``\\cdot`` in path order.

The same LaTeX serves Markdown (MathJax understands all of it).
"""
from __future__ import annotations

import contextlib
import contextvars
import re
from typing import Iterable

import sympy as sp
from sympy.printing.latex import LatexPrinter as _SympyLatexPrinter
from sympy.printing.precedence import PRECEDENCE

from ..functions import Activation
from .expressions import PerSample, Terms, _is_matrixy
from .numbers import number
from .width import visual_len
from .primes import mark_primes

__all__ = ["LatexPrinter", "latex", "number", "partial", "chain_symbols", "chain_values", "factor_latex",
           "name_latex", "visual_len", "notation_settings", "sample_index", "SAMPLE_LETTERS"]


# ----------------------------------------------------------------- printer
class LatexPrinter(_SympyLatexPrinter):
    """SymPy's LaTeX printer, adjusted to read like lecture notes.

    Extra settings: ``values`` maps symbol names to numbers printed in
    their place (parenthesised when negative), for substituted formulas;
    ``applications`` lists activation applications f(z) whose derivative
    should print as f'(z); ``primes=False`` prints derivatives written out;
    ``memo`` (a dict) keeps each sub-expression's text for every later print with the
    same settings (a document's wide formulas share their deep parts).
    """

    _default_settings = {**_SympyLatexPrinter._default_settings, "values": None,
                         "applications": (), "primes": True, "sums_last": False,
                         "names": None, "tnames": None, "transposes": True, "columns": None,
                         "memo": None, "sample": "i"}

    def __init__(self, settings=None):
        # a document's notation (symbol map, transposes, column form) applies to every formula in it
        super().__init__({**_NOTATION.get(), **(settings or {})})
        self._in_columns = False

    def doprint(self, expr):
        """Print `expr`, first marking activation derivatives as f'(z) (unless primes=False)."""
        # (not around matrices: factor_terms turns (1/100)·W inside a norm into a scalar W/100)
        if isinstance(expr, sp.Expr) and not expr.is_Matrix and not expr.is_Atom and not expr.has(sp.Sum) \
                and not expr.has(sp.MatrixSymbol):
            # SymPy keeps derivatives expanded (2ŷ − 2y); a reader wants 2(ŷ − y)
            expr = sp.factor_terms(expr)
        if self._settings["primes"]:
            expr = mark_primes(expr, self._settings["applications"])
        return super().doprint(expr)

    def _as_ordered_terms(self, expr, order=None):
        terms = super()._as_ordered_terms(expr, order=order)
        if isinstance(expr, sp.Add):
            # ŷ − y, not −y + ŷ: positive terms first, each group in SymPy's order
            terms = sorted(terms, key=minus_sign)
        return terms

    def _print_Add(self, expr, order=None):
        if isinstance(expr, sp.MatrixExpr):
            return self._print_matrix_sum(expr, order)
        text = super()._print_Add(expr, order=order)
        # a negative number standing first in a sum needs no brackets: −1.25 − 3
        return re.sub(r"^\\left\((-[0-9.]+)\\right\)", r"\1", text)

    def _print_matrix_sum(self, expr, order=None):
        """SymPy's _print_Add for a sum of matrices, each term's sign read off its coefficient."""
        tex = ""
        for i, term in enumerate(self._as_ordered_terms(expr, order=order)):
            if i:
                neg = minus_sign(term)
                tex += " - " if neg else " + "
                term = negated(term) if neg else term
            text = self._print(term)
            # B − (−2y) Q or B + (A + C) (an unevaluated −(−2yQ) or sum): a second sign in brackets
            tex += rf"\left({text}\right)" if self._needs_add_brackets(term) or \
                (i and text.lstrip().startswith("-")) else text
        return tex

    def _print_Symbol(self, expr, style="plain"):
        values = self._settings["values"]
        if values and expr.name in values:
            text = number(values[expr.name])
            return rf"\left({text}\right)" if text.startswith("-") else text
        names = self._settings["names"]
        if names and expr.name in names:
            return names[expr.name]
        return _subscripted(expr.name) or _upright(super()._print_Symbol(expr, style=style))

    def _print_Float(self, expr):
        text = number(expr)
        return rf"\left({text}\right)" if "times" in text else text

    # the node kinds print themselves (SymPy's _latex hook, beside their definitions in
    # symback.kinds); the adjoints' own _latex knows no notation, so SymPy's preference for
    # _latex over a _print_ method is overridden for them here.
    _OWN = ("AdjointMatrix",)

    def _print(self, expr, **kwargs):
        name = type(expr).__name__
        columns = self._settings["columns"]
        if columns and not self._in_columns and getattr(expr, "is_Matrix", False) \
                and isinstance(expr, sp.MatrixExpr):
            # Nielsen's form: the row-major expression transposed, one sample a column
            self._in_columns = True
            try:
                return self._print(columns(expr))
            finally:
                self._in_columns = False
        if isinstance(expr, Activation) and type(expr).__name__ == "identity":
            return self._print(expr.args[0])      # the identity is not a function worth naming
        memo = self._settings["memo"]
        if memo is not None and not kwargs and not columns and isinstance(expr, sp.Basic):
            if expr not in memo:
                memo[expr] = self._print_once(expr, name)
            return memo[expr]
        return self._print_once(expr, name, **kwargs)

    def _print_once(self, expr, name, **kwargs):
        if name in self._OWN:
            return getattr(self, f"_print_{name}")(expr)
        return super()._print(expr, **kwargs)

    def _print_AdjointMatrix(self, expr):
        # the notes' δ^{(l)} for a layer's pre-activation Z_l; δ_v for any other node
        names = self._settings["names"]
        if names and expr.name in names:
            return names[expr.name]
        layer = re.fullmatch(r"Z(\d+)", expr.node)
        if layer:
            return rf"\delta^{{({layer.group(1)})}}"
        return r"\delta_{%s}" % self._print(sp.Symbol(expr.node)) if expr.node else r"\delta"

    def _print_MatrixSlice(self, expr):
        # a lecture's columns 3 to 4 of X, X_{:, 3:4} (from 1, both ends in), not Python's X[:, 2:4]
        def part(sl, n):
            a, b, step = sl
            if step != 1:
                return None
            if a == 0 and sp.simplify(b - n) == 0:
                return ":"
            return self._print(a + 1) if b - a == 1 else f"{self._print(a + 1)}:{self._print(b)}"
        rows, cols = (part(sl, n) for sl, n in zip((expr.rowslice, expr.colslice), expr.parent.shape))
        if rows is None or cols is None:
            return super()._print_MatrixSlice(expr)
        parent = self._print(expr.parent)
        parent = f"{{{parent}}}" if re.search(r"[_^]", parent) else parent     # no double subscript
        return rf"{parent}_{{{rows},\,{cols}}}"

    def _print_Trace(self, expr):
        # tr(1ᵀ C) is the sum of the per-sample costs; tr(Wᵀ W) the squared Frobenius norm
        arg = expr.arg
        if isinstance(arg, sp.MatMul) and len(arg.args) == 2:
            a, b = arg.args
            if isinstance(a, sp.OneMatrix) and a.rows == 1:
                body = self._print(b)
                body = f"{{{body}}}" if re.search(r"[_^]", body) else body     # C_{x}: no double subscript
                # rows of a batch are samples (i, as in L = (1/m) Σᵢ Cᵢ); the rows of one
                # sample's matrix (a sequence's positions) are not: r, so the two never share i
                # (and k stays the columns' index of the row cost c_r = Σ_k ℓ(·_{rk}, ·_{rk}))
                # (the batch's letter is the document's: see sample_index)
                k = self._settings["sample"] if not a.cols.is_Integer else "r"
                return rf"\sum_{{{k}=1}}^{{{self._print(a.cols)}}} {body}_{{{k}}}"
            if isinstance(a, sp.Transpose) and a.arg == b:
                return rf"\lVert {self._print(b)} \rVert_F^{{2}}"
        if isinstance(arg, sp.MatrixSymbol) and arg.shape == (1, 1):
            return self._print(arg)     # C = c for a one-row sample's 1×1 cost, not tr(c)
        return super()._print_Trace(expr)

    def _print_Mul(self, expr):
        if not isinstance(expr, sp.Mul):          # SymPy prints 1/x through here too
            return super()._print_Mul(expr)
        if self._settings["sums_last"] and any(isinstance(f, sp.Add) for f in expr.args):
            # σ(z) (1 − σ(z)): the function values first, the sums after, as the notes write it
            coeff, rest = expr.as_coeff_Mul()
            factors = sorted(sp.Mul.make_args(rest), key=lambda f: isinstance(f, sp.Add))
            head = "" if coeff == 1 else ("- " if coeff == -1 else self._print(coeff) + " ")
            return head + " ".join(rf"\left({self._print(f)}\right)" if isinstance(f, sp.Add)
                                   else self.parenthesize(f, 50) for f in factors)
        # (1/m) Σ_i C_i and (1/200) ‖W‖²: a sum or norm keeps its coefficient in front
        coeff, rest = expr.as_coeff_Mul()
        num, den = sp.fraction(sp.Mul(*[f for f in sp.Mul.make_args(rest) if not _is_reduction(f)]) * coeff)
        body = [f for f in sp.Mul.make_args(rest) if _is_reduction(f)]
        if len(body) == 1 and not num.has(sp.Sum, sp.Trace) and not den.has(sp.Sum, sp.Trace):
            sign = "- " if num.could_extract_minus_sign() else ""
            num = -num if sign else num
            front = "" if num == 1 and den == 1 else (
                self._print(num) + " " if den == 1 else rf"\frac{{{self._print(num)}}}{{{self._print(den)}}} ")
            return sign + front + self._print(body[0])
        return super()._print_Mul(expr)

    def _print_MatMul(self, expr):
        # (1/100) W: a rational coefficient in front as a fraction, not in brackets
        coeff, rest = expr.as_coeff_mmul()
        if coeff.is_Rational and coeff not in (1, -1) and rest.args:
            body = rest.args[0] if len(rest.args) == 1 else sp.MatMul(*rest.args)
            return rf"{self._print(coeff)} {self.parenthesize(body, 60)}"
        # SymPy's own asks could_extract_minus_sign(), which builds and canonicalises −expr at
        # every level of a nested product (seconds for a deep network): the sign is the coefficient's
        args, sign = [a for a in expr.args if not (isinstance(a, sp.OneMatrix) and a.shape == (1, 1))] or [expr.args[0]], ""
        if _negative_scalar(args[0]):
            sign, args = "- ", (args[1:] if args[0] == -1 else [-args[0]] + args[1:])
        # each factor binds as a product's whatever the sign (the whole product's): −(A ⊙ P) 𝟏𝟏ᵀ, not −A ⊙ P 𝟏𝟏ᵀ
        return sign + " ".join(self._scalar_factor(a, i or sign) if _is_scalar(a)
                               else self.parenthesize(a, PRECEDENCE["Mul"], False) for i, a in enumerate(args))

    def _scalar_factor(self, a, inside) -> str:
        """A number or scalar formula among a product's factors: a sum, or a sign not in front, in brackets."""
        text = self._print(a)
        return self._add_parens(text) if isinstance(a, sp.Add) or (inside and text.lstrip().startswith("-")) else text

    def parenthesize(self, item, level, is_neg=False, strict=False) -> str:
        """SymPy's rule, with a matrix product's precedence read off its coefficient (fast)."""
        if isinstance(item, sp.Transpose) and not self._settings["transposes"]:
            item = item.arg         # printed without its ᵀ, a transpose binds as what it transposes
        if not isinstance(item, sp.MatMul):
            return super().parenthesize(item, level, is_neg, strict)
        prec = _precedence(item)
        if (is_neg and strict) or prec < level or (not strict and prec <= level):
            return self._add_parens(self._print(item))
        return self._print(item)

    def _print_HadamardProduct(self, expr):
        # δ ⊙ f'(Z): the flowing adjoint first, the element-wise factors after (as the notes write it)
        args = sorted(expr.args, key=lambda a: (getattr(a, "entrywise", False),
                                               not a.has(sp.MatrixSymbol) or not _has_adjoint(a)))
        return r" \odot ".join(self.parenthesize(a, 50) for a in args)

    def _print_MatrixSymbol(self, expr):
        names = self._settings["names"]
        if names and expr.name in names:
            return names[expr.name]
        if expr.name.startswith("grad_"):      # the layers' names for ∂C/∂W_l
            return partial("C", expr.name[len("grad_"):])
        return _subscripted(expr.name) or super()._print_MatrixSymbol(expr)

    def _print_OneMatrix(self, expr):
        # 1 b (a column of ones), 1ᵀ δ (summing rows), and 𝟏𝟏ᵀ (a matrix of ones: sums spread back)
        if expr.rows == 1 and expr.cols == 1:
            return "1"              # a 1×1 matrix of ones is the number 1 (one sample, one output)
        if expr.rows != 1 and expr.cols != 1:
            return r"\mathbf{1}\mathbf{1}^{\top}"
        return r"\mathbf{1}^{\top}" if expr.rows == 1 and expr.cols != 1 else r"\mathbf{1}"

    def _print_ElementwiseApplyFunction(self, expr):
        f = expr.function
        if isinstance(f, type) and issubclass(f, Activation):
            return rf"{f.latex_name}\left({self._print(expr.expr)}\right)"
        if isinstance(f, sp.Lambda) and len(f.variables) == 1:
            body = f.expr
            if isinstance(body, Activation) and type(body).__name__ == "identity":
                return self._print(expr.expr)
            if isinstance(body, Activation) and body.args[0] == f.variables[0]:
                return rf"{type(body).latex_name}\left({self._print(expr.expr)}\right)"
        return super()._print_ElementwiseApplyFunction(expr)

    def _print_MatAdd(self, expr):
        # 2Ŷ − 2Y reads better as 2(Ŷ − Y): pull out a common number
        coeffs = [t.as_coeff_mmul()[0] if isinstance(t, sp.MatMul) else sp.S.One for t in expr.args]
        common = sp.gcd_list(coeffs) if all(c.is_Rational for c in coeffs) else sp.S.One
        # only a whole number: pulling 1/100 out of λW + Xᵀδ would put 100 in front of every other term
        if common.is_Integer and common not in (0, 1) and len(expr.args) > 1:
            inner = sp.MatAdd(*[t / common for t in expr.args]).doit()
            return rf"{self._print(common)} \left({self._print_Add(inner)}\right)"
        return self._print_Add(expr)

    def _print_Transpose(self, expr):
        if not self._settings["transposes"]:
            return self._print(expr.arg)      # the notes' shorthand: layout stated in words
        tnames = self._settings["tnames"]
        if tnames and isinstance(expr.arg, sp.MatrixSymbol) and expr.arg.name in tnames:
            return tnames[expr.arg.name]
        text = super()._print_Transpose(expr)
        return text[:-len("^{T}")] + r"^{\top}" if text.endswith("^{T}") else text

    def _print_Partial(self, expr):
        of, wrt = expr.args
        if isinstance(of, (sp.Symbol, sp.MatrixSymbol, PerSample)):
            return rf"\frac{{\partial {self._print(of)}}}{{\partial {self._print(wrt)}}}"
        body = self._print(of)
        if visual_len(body) <= 10:       # short: ∂(a_3 − y)/∂a_3, as the notes write it
            body = rf"\left({body}\right)" if isinstance(of, sp.Add) else body
            return rf"\frac{{\partial {body}}}{{\partial {self._print(wrt)}}}"
        return rf"\frac{{\partial}}{{\partial {self._print(wrt)}}} \left({self._print(of)}\right)"

    def _print_PerSample(self, expr):
        base = self._print(expr.args[0])
        return base if base.endswith("^{(i)}") else rf"{base}^{{(i)}}"    # a notation's J^{(i)} already is

    def _print_Norm(self, expr):
        body = self._print(expr.args[0])
        return rf"\left\lVert {body} \right\rVert_F" if _is_matrixy(expr.args[0]) else rf"\left|{body}\right|"

    def _print_Chain(self, expr):
        # each factor printed alone and bracketed when it is a sum or starts with a sign
        out = []
        for f in expr.args:
            if isinstance(f, sp.Expr) and not f.is_Matrix and not f.is_Atom and not f.has(sp.Sum, sp.MatrixSymbol):
                f = sp.factor_terms(f)
            if self._settings["primes"]:
                f = mark_primes(f, self._settings["applications"])
            text = self._print(f)
            # a sum of bounds or paths (Terms) times the other factors: (a + b) · c, not a + b · c
            if isinstance(f, (sp.Add, sp.MatAdd)) or (isinstance(f, Terms) and len(f.args) > 1) \
                    or text.lstrip().startswith("-"):
                text = rf"\left({text}\right)"
            out.append(text)
        return r" \cdot ".join(out) or "1"

    def _print_Terms(self, expr):
        return " + ".join(self._print(a) for a in expr.args) or "0"

    def _print_MatrixSet(self, expr):
        return rf"\mathbb{{R}}^{{{self._print(expr.args[0])} \times {self._print(expr.args[1])}}}"

    def _print_Bound(self, expr):
        return rf"{self._print(expr.args[0])} \le " + " = ".join(self._print(a) for a in expr.args[1:])


# an RNN's Wx, Wh, bh, Wy, by: a weight letter and the one-letter name of what it acts on
_PARAM_SUFFIX = re.compile(r"([WUb])([a-z])(\d*)")
# a recurrent gate's pre-activation: zi3 (the LSTM's input gate at step 3) is z_{i,3}, not z·i_3
_GATE_INPUT = re.compile(r"z([ifgozrn])(\d+)")
# a name of several plain letters, before any subscript: tc_{3}, Att_{1}, Avg
_WORD = re.compile(r"([A-Za-z]{2,})((?:_\{[^{}]*\})?)")
_LAYER_HEAD = re.compile(r"([A-Za-z]+(?:_[A-Za-z]+)?)(\d+)_(\d+)")


def _subscripted(name: str) -> str | None:
    """Wx as W_{x} (not W times x), Wq2 as W_{q,2}, layer 2's head 1 O2_1 as O_{2,1}; else None.

    The attention section writes its heads' indices so (O_{2,1}); SymPy's own
    reading of O2_1 is O_{2 1}, and of Wq2 Wq_{2}.
    """
    m = _PARAM_SUFFIX.fullmatch(name)
    if m:
        return rf"{m[1]}_{{{m[2]},{m[3]}}}" if m[3] else rf"{m[1]}_{{{m[2]}}}"
    m = _GATE_INPUT.fullmatch(name)
    if m:
        return rf"z_{{{m[1]},{m[2]}}}"
    m = _LAYER_HEAD.fullmatch(name)
    if m:
        head, sub = m[1].split("_", 1) if "_" in m[1] else (m[1], None)
        index = f"{m[2]},{m[3]}"
        return rf"{head}_{{{sub}_{{{index}}}}}" if sub else rf"{head}_{{{index}}}"    # Z_P2_1: Z_{P_{2,1}}
    return None


def _upright(text: str) -> str:
    """A name of several letters set upright, one word: tc_{3} read as t times c_3 (and c_3 is
    the LSTM's cell state, tc_3 its tanh), \\mathrm{tc}_{3} as the name it is."""
    m = _WORD.fullmatch(text)
    return rf"\mathrm{{{m[1]}}}{m[2]}" if m else text


def minus_sign(term) -> bool:
    """term.could_extract_minus_sign(), without building −term for a matrix product.

    SymPy's answer for a MatMul canonicalises the whole negated product (seconds for an
    unrolled network's nested δ forms); a matrix product's sign is its number coefficient's.
    """
    if isinstance(term, sp.MatMul):
        return _negative_scalar(term.args[0])
    if isinstance(term, sp.MatrixExpr) and not isinstance(term, (sp.MatAdd, sp.Transpose)):
        return False
    return term.could_extract_minus_sign()


def negated(term):
    """−term; a matrix product's coefficient negated in place (no canonicalisation)."""
    if isinstance(term, sp.MatMul) and _is_scalar(term.args[0]):
        rest = term.args[1:]
        c = -term.args[0]
        if c == 1:
            return rest[0] if len(rest) == 1 else sp.MatMul(*rest)
        return sp.MatMul(c, *rest)
    return -term


def _precedence(e) -> int:
    """A matrix product binds as a product, as a sum when it starts with a minus sign."""
    return PRECEDENCE["Add"] if e.args and _negative_scalar(e.args[0]) else PRECEDENCE["Mul"]


def _is_scalar(e) -> bool:
    return isinstance(e, sp.Expr) and not getattr(e, "is_Matrix", False)


def _negative_scalar(e) -> bool:
    """A product's scalar factor printed with a minus sign in front (−2, −x, −x/2): the product's sign."""
    return _is_scalar(e) and (bool(e.is_negative) if e.is_Number else
                              isinstance(e, sp.Mul) and e.could_extract_minus_sign())


def _is_reduction(e) -> bool:
    return isinstance(e, (sp.Sum, sp.Trace))


def _has_adjoint(e) -> bool:
    return any(type(s).__name__ == "AdjointMatrix" for s in e.atoms(sp.MatrixSymbol))


_NOTATION: contextvars.ContextVar = contextvars.ContextVar("symback_notation", default={})


@contextlib.contextmanager
def notation_settings(settings: dict):
    """Every formula printed inside the block uses these printer settings (a notation)."""
    token = _NOTATION.set(dict(settings))
    try:
        yield
    finally:
        _NOTATION.reset(token)


def latex(expr, values: dict | None = None, applications: Iterable = (), **settings) -> str:
    """Print `expr` with :class:`LatexPrinter`.

    With ``values`` (name -> number) the numbers stand in for the symbols
    and products use ``\\cdot``, for the substituted lines of a worked example.
    """
    if values:
        settings.setdefault("mul_symbol", "dot")
    return LatexPrinter(dict(settings, values=values, applications=tuple(applications))).doprint(expr)


#: the letters a batch's sample index may take, in order: i, as in L = (1/m) Σᵢ Cᵢ, or the
#: next one a graph's own names leave free (an LSTM's input gate is i_t, with W_i, z_{i,t})
SAMPLE_LETTERS = ("i", "j", "s")


def sample_index(names) -> str:
    """The sample index's letter in a document of a graph with these names: the first of
    :data:`SAMPLE_LETTERS` that no name prints as a letter of its own (W_{i}, i_{1}, z_{i,1})."""
    printed = " ".join(name_latex(n) for n in names)
    free = (c for c in SAMPLE_LETTERS if not re.search(rf"(?<![A-Za-z\\]){c}(?![A-Za-z])", printed))
    return next(free, SAMPLE_LETTERS[-1])


def name_latex(name: str) -> str:
    """A node name as the user wrote it: ``a_1`` -> a_{1}, ``yhat`` -> \\hat{y}, ``W1`` -> W_{1}."""
    return latex(sp.Symbol(str(name)))


def partial(of: str, wrt: str, straight: bool = False) -> str:
    """∂of/∂wrt as a fraction (``d`` instead of ∂ when `straight`)."""
    d = "d" if straight else r"\partial"
    return rf"\frac{{{d} {name_latex(of)}}}{{{d} {name_latex(wrt)}}}"


def factor_latex(expr, values: dict | None = None, applications: Iterable = ()) -> str:
    """One factor of a product, bracketed when it is a sum or starts with a sign."""
    text = latex(expr, values=values, applications=applications)
    if isinstance(expr, sp.Expr) and not expr.is_Matrix:
        expr = mark_primes(sp.factor_terms(expr), applications)    # as the printer shows it
    if isinstance(expr, sp.Add) or text.lstrip().startswith("-"):
        return rf"\left({text}\right)"
    return text


def chain_symbols(path) -> str:
    """A path's factors as partial derivatives, in path order: ∂C/∂ŷ · ∂ŷ/∂a_1 · ∂a_1/∂w_1."""
    return r" \cdot ".join(partial(f.of, f.wrt) for f in path)


def chain_values(path, values: dict | None = None, applications: Iterable = ()) -> str:
    """A path's factors as expressions, in path order, joined by ``\\cdot`` (never reordered)."""
    return r" \cdot ".join(factor_latex(f.expr, values, applications) for f in path)
