"""A plain-text printer: formulas a terminal or a Mermaid label can show.

SymPy's ``str`` of symback's expressions is Python (``HadamardProduct(...)``,
``FPrime(Lambda(_w, sigmoid(_w)), Z1)``, ``X.T``, ``delta_Z1``); this
printer writes what a reader writes on a board: ``σ'(Z1)``, ``⊙``,
``δ_Z1``, ``Xᵀ``, ``ŷ``, ``δ ↦ δ W2ᵀ``, ``𝟏𝟏ᵀ`` (ones, as the LaTeX writes them).  :func:`text_report` writes a whole
derivation that way (``symback derive --format text``).
"""
from __future__ import annotations

import re

import sympy as sp
from sympy.printing.precedence import PRECEDENCE
from sympy.printing.str import StrPrinter

from ..functions import Activation
from .latex import _is_scalar, _negative_scalar, _precedence, minus_sign, negated

__all__ = ["TextPrinter", "text", "text_name", "text_number", "text_report"]

_FUNCTION_NAMES = {"sigmoid": "σ", "identity": "", "relu": "ReLU", "leaky_relu": "LReLU"}


def text_name(name: str) -> str:
    """A node name as text: yhat → ŷ, Yhat → Ŷ, delta_Z1 → δ_Z1; others unchanged."""
    name = str(name)
    if name.startswith("delta_"):
        return "δ" + (f"_{text_name(name[len('delta_'):])}" if len(name) > len("delta_") else "")
    m = re.fullmatch(r"([A-Za-z])hat(.*)", name)
    if m:
        return m.group(1) + "\u0302" + m.group(2)
    m = re.fullmatch(r"(alpha|beta|gamma|lambda|mu|sigma|theta|eta)(\d*)", name)   # a norm's gamma2: γ2
    if m:
        return _GREEK[m.group(1)] + m.group(2)
    return name


_GREEK = dict(zip("alpha beta gamma lambda mu sigma theta eta".split(), "αβγλμσθη"))


def _fname(cls) -> str:
    return _FUNCTION_NAMES.get(cls.__name__, cls.__name__)


class TextPrinter(StrPrinter):
    """StrPrinter with symback's expressions written as on a board (one overridden method per type)."""

    _default_settings = {**StrPrinter._default_settings, "applications": ()}

    def _print(self, expr, **kwargs):
        # a node kind prints itself (its _text, beside its definition in symback.kinds); not
        # SymPy's _sympystr hook, which would change str() of every expression holding one
        own = getattr(type(expr), "_text", None)
        if own is not None and not isinstance(expr, type):
            return own(expr, self)
        return super()._print(expr, **kwargs)

    def function_name(self, cls) -> str:
        """An activation's name as text: σ, ReLU, tanh ('' for the identity)."""
        return _fname(cls)

    def _print_Symbol(self, expr):
        return text_name(expr.name)

    def _print_MatrixSymbol(self, expr):
        return text_name(expr.name)

    def _print_AdjointMatrix(self, expr):
        return text_name(expr.name)

    def _print_Transpose(self, expr):
        arg = self._print(expr.arg)
        return (arg if isinstance(expr.arg, sp.MatrixSymbol) else f"({arg})") + "ᵀ"

    def _print_HadamardProduct(self, expr):
        # the flowing δ first, the element-wise factors after, as the LaTeX printer orders them
        args = sorted(expr.args, key=lambda a: getattr(a, "entrywise", False))
        return " ⊙ ".join(self.parenthesize(a, 60) for a in args)

    def _print_Add(self, expr, order=None):
        # ŷ − y, not −y + ŷ: positive terms first
        terms = sorted(self._as_ordered_terms(expr, order=order), key=lambda t: t.could_extract_minus_sign())
        out = ""
        for i, t in enumerate(terms):
            neg = t.could_extract_minus_sign()
            body = self.parenthesize(-t if neg else t, 40)
            out += (" - " if neg and i else "-" if neg else " + " if i else "") + body
        return out

    def parenthesize(self, item, level, strict=False):
        """StrPrinter's rule, a matrix product's precedence read off its coefficient (as LaTeX's)."""
        if not isinstance(item, sp.MatMul):
            return super().parenthesize(item, level, strict)
        prec = _precedence(item)
        return f"({self._print(item)})" if prec < level or (not strict and prec <= level) else self._print(item)

    def _print_MatMul(self, expr):
        # -(A ⊙ P) 𝟏𝟏ᵀ: the sign in front of the whole product, each factor bracketed as a product's
        args = list(expr.args)
        sign = ""
        if _negative_scalar(args[0]):
            sign, args = "-", (args[1:] if args[0] == -1 else [-args[0]] + args[1:])
        out = []
        for i, a in enumerate(args):
            if not _is_scalar(a):
                out.append(self.parenthesize(a, PRECEDENCE["Mul"]))
                continue
            t = self._print(a)
            out.append(f"({t})" if isinstance(a, sp.Add) or ((i or sign) and t.startswith("-")) else t)
        return sign + " ".join(out)

    def _print_MatPow(self, expr):
        return f"{self.parenthesize(expr.base, PRECEDENCE['Pow'])}^{self._print(expr.exp)}"

    def _print_HadamardPower(self, expr):
        return f"{self.parenthesize(expr.base, PRECEDENCE['Pow'])}^∘{self._print(expr.exp)}"

    def _print_OneMatrix(self, expr):
        # as the LaTeX printer writes them: 𝟏 a column of ones, 𝟏ᵀ a row, 𝟏𝟏ᵀ a matrix; a 1×1 one is 1
        if expr.rows == 1 and expr.cols == 1:
            return "1"
        if expr.rows != 1 and expr.cols != 1:
            return "𝟏𝟏ᵀ"
        return "𝟏ᵀ" if expr.rows == 1 else "𝟏"

    def _print_ElementwiseApplyFunction(self, expr):
        f = expr.function
        body = f.expr if isinstance(f, sp.Lambda) else None
        if isinstance(body, Activation):
            name = _fname(type(body))
            return f"{name}({self._print(expr.expr)})" if name else self._print(expr.expr)
        return f"{self._print(f)}∘({self._print(expr.expr)})"

    def _print_Lambda(self, expr):
        # a map's variable is a Dummy (printed _w): as a reader writes it, w ↦ …
        v = expr.variables[0]
        named = {v: sp.Symbol(v.name)} if isinstance(v, sp.Dummy) else {}
        return f"{self._print(expr.variables[0].xreplace(named))} ↦ {self._print(expr.expr.xreplace(named))}"

    def _print_MatAdd(self, expr):
        # 2(Ŷ − Y), not −2 Y + 2 Ŷ: a common whole number in front, positive terms first
        coeffs = [t.as_coeff_mmul()[0] if isinstance(t, sp.MatMul) else sp.S.One for t in expr.args]
        common = sp.gcd_list(coeffs) if all(c.is_Rational for c in coeffs) else sp.S.One
        terms = list(expr.args)
        if common.is_Integer and common not in (0, 1):
            terms = [sp.MatMul(t / common).doit() for t in terms]
        terms.sort(key=minus_sign)
        out = ""
        for i, t in enumerate(terms):
            neg = minus_sign(t)
            body = self.parenthesize(negated(t) if neg else t, PRECEDENCE["Add"])
            if (i or neg) and body.startswith("-"):      # B - (-2y) Q: a second sign in brackets
                body = f"({body})"
            out += ("- " if neg else ("+ " if i else "")) + body + " "
        out = out.strip()
        return f"{self._print(common)}({out})" if common.is_Integer and common not in (0, 1) else out

    def _print_Function(self, expr):
        if isinstance(expr, Activation):
            name = _fname(type(expr))
            arg = self._print(expr.args[0])
            return f"{name}({arg})" if name else arg
        act = getattr(type(expr), "activation", None)      # an unevaluated f'(z)
        if act is not None:
            return f"{_fname(act)}'({self._print(expr.args[0])})"
        return super()._print_Function(expr)

    def _print_Trace(self, expr):
        arg = expr.arg
        if isinstance(arg, sp.MatMul) and len(arg.args) == 2 and isinstance(arg.args[0], sp.OneMatrix):
            return f"Σ_i {self._print(arg.args[1])}_i"
        return f"tr({self._print(arg)})"

    def _print_Mul(self, expr):
        # 2 x1 (ŷ - y), as on a board: a product is written side by side (the factors are printed
        # already, so every * left is this product's own)
        return super()._print_Mul(expr).replace("*", " ")

    def _print_Pow(self, expr, rational=False):
        return super()._print_Pow(expr, rational).replace("**", "^")

    def _print_Float(self, expr):
        return f"{float(expr):.6g}"


def text(expr, applications=()) -> str:
    """`expr` as plain text, activation derivatives written f'(z) (σ(z)(1 − σ(z)) → σ'(z))."""
    from .primes import mark_primes
    if isinstance(expr, sp.Expr) and not expr.is_Matrix and not isinstance(expr, sp.Lambda):
        expr = mark_primes(sp.factor_terms(expr), applications)
    return TextPrinter({"applications": tuple(applications)}).doprint(expr)


def text_report(d, values: dict | None = None, lr=None, steps_taken=None) -> str:
    """The gradients as plain text: chain form, each path's factors, and a worked example.

    Formulas are written as on a board: 2 x1 (ŷ - y), σ'(Z1), ⊙, δ_Z1, Wᵀ; a scalar graph's
    gradient is given once more as SymPy's text ("as SymPy:"), which parses back.
    A graph too deep to document is refused the way documents refuse it (an OutputError):
    the report writes the same chains, and simplifies each gradient on top.
    """
    from ..document.size import check_size
    check_size(d)               # a 300-layer chain ran for more than 300 s before this
    g = d.graph
    apps = list({f: None for n in g.order if n in g._expr for f in g.expr(n).atoms(Activation)})
    lines = [f"Backpropagation: d{d.loss_name}/dp for p = {', '.join(map(text_name, d.params))}", ""]
    for p in d.params:
        if not d.listable(p):       # too many paths, too long a chain form: through the δs
            lines.append(f"d{d.loss_name}/d{text_name(p)} = {text(d.gradient(p, form='recursive'), apps)}")
            lines.append(f"    ({d.path_count(p):,} paths, a chain form of about {d.chain_size(p):,} "
                         "symbols: written through the deltas of the nodes it feeds)")
            continue
        grad = d.gradient(p)
        lines.append(f"d{d.loss_name}/d{text_name(p)} = {text(grad, apps)}")
        if d.layout.worked_in_numbers:        # a gradient in numbers: SymPy text that parses back
            lines.append(f"    as SymPy: {sp.sstr(grad)}")
        simple = d.simplified(p) if d.layout.simplifies else None
        if simple is not None and not simple.has(sp.Piecewise) and text(simple, apps) != text(grad, apps):
            lines.append(f"    simplified: {text(simple, apps)}")
        for path in d.chain(p):
            lines.append("    path: " + " * ".join(f"d{text_name(f.of)}/d{text_name(f.wrt)} [{text(f.expr, apps)}]"
                                                   for f in path))
    if values:
        ev = d.evaluate(values)
        lines += ["", "worked example: " + ", ".join(f"{k} = {text_number(v)}" for k, v in values.items())]
        lines += [f"    {n} = {text_number(v)}" for n, v in ev["forward"].items()]
        lines += [f"    d{d.loss_name}/d{p} = {text_number(v)}" for p, v in ev["gradient"].items()]
        if lr is not None:
            lines += [f"    {p} <- {p} - {text_number(lr)} * d{d.loss_name}/d{p} = "
                      f"{text_number(values[p] - sp.nsimplify(lr) * v)}" for p, v in ev["gradient"].items()]
        if steps_taken:
            from ..document.steps import iterations
            for r in iterations(d, values, lr, steps_taken):
                t, s = r["t"], r["sympy"]
                lines.append(f"    theta^{t + 1} = theta^{t} - {text_number(lr)} * grad L(theta^{t}) = "
                             f"({', '.join(text_number(v) for v in s['next'])}),  "
                             f"L(theta^{t}) = {text_number(s['loss'])}")
    return "\n".join(lines) + "\n"


def text_number(v) -> str:
    """A number as a user reads it: 0.49 rather than 49/100."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return f"{f:.10g}"
