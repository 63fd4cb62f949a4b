"""The activation functions' section: each definition, its derivative and its supremum |f'|.

SymPy derives every derivative from the definition; the supremum comes from
:func:`symback.document.analysis.derivative_sup`.  Every row carries its
claims for the certificate (for all z, and the supremum's "=" or "≈").
"""
from __future__ import annotations

from functools import lru_cache

import sympy as sp

from ..functions import Activation
from ..printing import Tex, latex, number, prime, visual_len
from ..proofs import proved_equal
from . import analysis
from .lines import LINE_WIDTH, ROW_INDENT, aligned_lines, tex

__all__ = ["activations", "upper_digits"]


# ------------------------------------------------------------- activations
def activations(classes, sups: dict) -> list[dict]:
    """One row per activation class: definition, derivative, sup |f'| (recorded in `sups` too)."""
    out = []
    for cls in sorted(classes, key=lambda c: c.__name__):
        if cls.__name__ == "identity":
            sups[cls] = sp.S.One
            continue          # ŷ = w x needs no activation section
        z = sp.Symbol("z", real=True)
        # a parameter such as leaky ReLU's α is shown as a letter, its value stated beside it
        greek = [sp.Symbol(str(v), positive=True) for v in cls._rules_from[1]]
        app = cls(z, *greek) if greek else cls(z)
        params = [sp.Eq(a, v, evaluate=False) for a, v in zip(greek, cls.extra_params)]
        values = dict(zip(greek, cls.extra_params))
        sup, exact = analysis.derivative_sup(cls)
        sups[cls] = sup
        defn = sp.Eq(app, _definition(cls, app), evaluate=False)
        deriv = sp.Eq(prime(cls, app.args), sp.factor_terms(cls.derivative(*app.args)), evaluate=False)
        inner = _through_inner(cls) if not greek else None
        if inner is not None:       # GELU′ in u = √(2/π)(z + 0.044715 z³) and u′, not expanded
            deriv = sp.Eq(deriv.lhs, inner[0], evaluate=False)
            values.update({e.lhs: e.rhs for e in inner[1]})
        where = inner[1] if inner is not None else []
        sup_line = sp.Eq(sp.Function("sup")(sp.Abs(prime(cls, app.args))), sup, evaluate=False) if exact else None
        checked = [{"chain": [defn.lhs, defn.rhs], "forall": True, "means": values},
                   {"chain": [deriv.lhs, deriv.rhs], "forall": True, "means": values},
                   {"chain": [sp.Function("sup")(sp.Abs(prime(cls, app.args))), sup if exact else upper_digits(sup)],
                    "sup": True, "means": values, "relations": ["=" if exact else "~"]}]
        derivative = latex(deriv.rhs, primes=False, sums_last=True)
        # side by side while both fit a line (GELU's ran 387 pt past the margin): else a row each,
        # the derivative broken inside its sum
        stacked = visual_len(latex(defn)) + visual_len(derivative) + visual_len(latex(deriv.lhs)) > LINE_WIDTH
        out.append({
            "name": cls.__name__,
            "definition": tex(defn),
            "derivative": Tex(latex(deriv.lhs) + " = " + derivative),
            "stacked": {"definition": tex(defn.lhs), "value": tex(defn.rhs), "derivative": tex(deriv.lhs),
                        "rows": Tex(aligned_lines(deriv.rhs, (), LINE_WIDTH - ROW_INDENT, primes=False,
                                                  sums_last=True))} if stacked else None,
            "sup_text": Tex(rf"\sup_{{z}} \left|{latex(prime(cls, app.args))}\right| "
                            + (f"= {latex(sup)}" if exact else rf"\approx {number(upper_digits(sup), 4)}")),
            "kinks": analysis.kinks(cls),
            "params": Tex(", ".join(latex(e) for e in params)) if params else None,
            # the letters the derivative is written in (u, u′), each defined
            "where": Tex(r", \quad ".join(latex(e) for e in where)) if where else None,
            "sympy": {"params": params, "where": where, "definition": defn, "derivative": deriv, "sup": sup, "exact": exact, "cls": cls,
                      "sup_line": sup_line, "claims": checked}})
    return out


def upper_digits(x):
    """A number as it is printed to 4 significant digits (what the "≈" line claims)."""
    return sp.Float(sp.N(x, 4), 4)


def _definition(cls, app):
    """The definition, in exponentials when it is just a SymPy function (tanh(z) = ...)."""
    e = cls.definition(*app.args)
    if isinstance(e, sp.Function) and not isinstance(e, Activation) and e.args == app.args[:1]:
        e = e.rewrite(sp.exp)
    return e


@lru_cache(maxsize=None)
def _through_inner(cls):
    """f′ written through f's one inner argument u(z) (GELU's u = √(2/π)(z + 0.044715 z³)):
    (SymPy's derivative of f with u kept a function, [u = …, u′ = …]), or None when f has no
    single such argument or the form is no shorter than f′ expanded.  Kept only when SymPy
    proves it equal to the derivative of the definition (:func:`~symback.proofs.proved_equal`)."""
    z = sp.Symbol("z", real=True)
    body = cls.definition(z)
    inner = {a.args[0] for a in body.atoms(sp.Function) if len(a.args) == 1 and a.args[0] != z
             and a.args[0].has(z)}
    if len(inner) != 1:
        return None
    inside = inner.pop()
    U, u, du = sp.Function("u"), sp.Symbol("u"), sp.Symbol("u'")
    # the chain rule is SymPy's: f differentiated with u(z) left unknown, then u and u′ named
    form = sp.factor_terms(sp.diff(body.xreplace({inside: U(z)}), z).subs(sp.Derivative(U(z), z), du)
                           .subs(U(z), u))
    defs = [sp.Eq(u, inside, evaluate=False), sp.Eq(du, sp.diff(inside, z), evaluate=False)]
    expanded = sp.factor_terms(cls.derivative(z))
    if visual_len(latex(form, primes=False)) + sum(visual_len(latex(e)) for e in defs) \
            >= visual_len(latex(expanded, primes=False)):
        return None
    if not proved_equal(form.xreplace({u: inside, du: defs[1].rhs}), cls.derivative(z), z):
        return None
    return form, defs
