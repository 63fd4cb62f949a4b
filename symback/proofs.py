"""SymPy's proof that two expressions of one real variable are equal.

Every rule symback derives and then shows in a shorter form (an activation's
compact derivative σ′ = σ(1 − σ), a fused kernel's formula, NumPy's overflow-safe
σ) is used only after :func:`proved_equal` holds: a numeric pre-check at a few
points, then SymPy's simplification of the difference to zero, branch by branch.
"""
from __future__ import annotations

import sympy as sp

__all__ = ["proved_equal", "numeric_equal", "is_zero", "shorter_equal"]


def numeric_equal(a: sp.Expr, b: sp.Expr, var: sp.Symbol, points=(-2.3, -0.7, 0.4, 1.9, 3.1)) -> bool:
    """Cheap necessary check that two expressions of `var` agree."""
    for p in points:
        try:
            va = complex(sp.N(a.subs(var, p)))
            vb = complex(sp.N(b.subs(var, p)))
        except (TypeError, ValueError):
            return False
        if abs(va - vb) > 1e-9 * (1 + abs(va)):
            return False
    return True


def proved_equal(a: sp.Expr, b: sp.Expr, var: sp.Symbol) -> bool:
    """True when SymPy shows a == b for every real `var` (after a numeric pre-check).

    Expressions with branches (Piecewise, Max, Abs) are proved on each
    side of zero separately, where the branches disappear, and at zero.
    """
    if not numeric_equal(a, b, var):
        return False
    diff = a - b
    if not diff.has(sp.Piecewise, sp.Max, sp.Min, sp.Abs, sp.Heaviside):
        return is_zero(diff)
    pos = sp.Symbol("_pos", positive=True)
    return all(is_zero(sp.piecewise_fold(diff.subs(var, v))) for v in (pos, -pos, sp.S.Zero))


def is_zero(diff: sp.Expr) -> bool:
    """True when SymPy simplifies `diff` to 0, or, for a difference of logarithms, exp(diff) to 1.

    simplify() leaves sums of logarithms alone (log cosh u − |u| − ...); their
    exponential is a rational function of eᵘ, which it does cancel.  exp(d) = 1
    means d ∈ 2πiℤ, and a d continuous on each side of zero (logarithms of
    positive quantities) that is 0 at the numeric check's points there is 0
    throughout.
    """
    diff = diff.rewrite(sp.exp)
    if sp.simplify(diff) == 0:
        return True
    return diff.has(sp.log) and sp.simplify(sp.exp(diff)) == 1


def shorter_equal(expr: sp.Expr):
    """The shortest of SymPy's cancel, factor and simplify of `expr` when it has fewer operations
    than `expr` and is proved equal to it (their difference simplifies to 0), else None.
    (No time limit of its own: :meth:`symback.engine.Derivation.simplified` gives it one.)"""
    candidates = []
    for fn in (sp.cancel, sp.factor, sp.simplify):
        try:
            candidates.append(fn(expr))
        except (sp.PolynomialError, TypeError, ValueError):
            continue
    best = min(candidates, key=sp.count_ops, default=None)
    if best is None or sp.count_ops(best) >= sp.count_ops(expr) or sp.simplify(sp.cancel(best - expr)) != 0:
        return None
    return best
