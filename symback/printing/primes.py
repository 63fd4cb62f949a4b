"""σ'(z) notation: an activation's derivative printed as f'(z), found wherever SymPy wrote it out.

SymPy derives σ'(z) = σ(z)(1 − σ(z)); a reader wants to see σ'(z).
:func:`mark_primes` finds each activation's derivative inside an
expression (by comparison with the derivative SymPy derives, also as a
sub-product of a longer product) and puts an unevaluated :func:`prime`
in its place, which the printers show as f'(z).
"""
from __future__ import annotations

import functools
from collections import Counter
from typing import Iterable

import sympy as sp

from ..functions import Activation
from ..matrix import FPrime

__all__ = ["prime", "prime_classes", "mark_primes", "split_primes"]


_PRIME_CLASSES: dict[type, type] = {}


def prime(act: type, args) -> sp.Expr:
    """An unevaluated ``f'(z)``, printed as such (``\\sigma'(z)``)."""
    if act not in _PRIME_CLASSES:
        def _latex(self, printer, exp=None, _name=act.latex_name):
            s = rf"{_name}'\left({printer._print(self.args[0])}\right)"
            return s if exp is None else rf"\left({s}\right)^{{{exp}}}"
        _PRIME_CLASSES[act] = type(f"{act.__name__}_prime", (sp.Function,), {
            "_latex": _latex, "nargs": len(args), "activation": act})
    return _PRIME_CLASSES[act](*args)


def prime_classes() -> tuple[type, ...]:
    """The classes of the f'(z) that :func:`prime` has made so far (to find them in an expression).

    A checker that gives each f'(z) its meaning replaces the instances of
    these; one made later cannot be in an expression built before it.
    """
    return tuple(_PRIME_CLASSES.values())


def _derivative_of(f: sp.Expr) -> sp.Expr:
    """cls.derivative at the arguments of the application `f` (SymPy-derived)."""
    return type(f).derivative(*f.args)


def _applications(exprs: Iterable[sp.Expr]) -> list[sp.Expr]:
    seen: dict = {}
    for e in exprs:
        for f in sp.sympify(e, strict=True).atoms(Activation):
            seen.setdefault(f, None)
    return list(seen)


@functools.lru_cache(maxsize=256)
def _prime_table(apps: tuple) -> dict:
    """f'(z) as SymPy derives it -> the unevaluated prime, for each application f(z)."""
    table = {}
    for f in apps:
        d = _derivative_of(f)
        if not d.is_number:          # identity' = 1 stays 1
            table[d] = prime(type(f), f.args)
    return table


def mark_primes(expr: sp.Expr, applications: Iterable[sp.Expr] = ()) -> sp.Expr:
    """Replace every activation derivative f'(z) inside `expr` by the unevaluated ``prime``.

    `applications` are extra f(z) to look for (those whose derivative,
    like ReLU's step, no longer mentions f itself); the applications
    found in `expr` are always looked for.  A derivative that is a
    product (σ(z)(1−σ(z))) is also found inside a longer product.
    """
    if not isinstance(expr, sp.Basic) or isinstance(expr, (sp.MatrixBase,)):
        return expr
    apps = _applications([expr]) + [a for a in applications if isinstance(a, Activation)]
    table = _prime_table(tuple(dict.fromkeys(apps)))
    if not table:
        return expr

    def visit(e):
        if e in table:
            return table[e]
        if e.is_Atom:
            return e
        if isinstance(e, FPrime):
            # FPrime holds f's definition, not a derivative: softplus' = σ must not
            # turn the σ of a sigmoid layer's σ'(Z) into softplus'
            return FPrime(e.function, visit(e.arg))
        args = [visit(a) for a in e.args]
        if isinstance(e, sp.Mul):
            # the derivative may be a sub-product of a longer product
            have = Counter(args)
            for d, p in table.items():
                if not isinstance(d, sp.Mul):
                    continue
                # σ(1 − σ), or −σ' written as σ(σ − 1) after a sign was pulled out of a sum
                for sign, factors in [(1, d.args)] + [
                        (-1, [-f if j == i else f for j, f in enumerate(d.args)])
                        for i, a in enumerate(d.args) if isinstance(a, sp.Add)]:
                    need = Counter(factors)
                    if all(have[k] >= n for k, n in need.items()):
                        have -= need
                        have[p] += 1
                        if sign == -1:
                            have[sp.S.NegativeOne] += 1
                        break
            if have == Counter(e.args):
                return e
            # unevaluated, so 2(ŷ − y) is not distributed into 2ŷ − 2y; the number first
            elems = list(have.elements())
            coeff = sp.Mul(*[a for a in elems if a.is_Number])
            rest = [a for a in elems if not a.is_Number]
            return sp.Mul(*([coeff] if coeff != 1 else []), *rest, evaluate=False)
        return e if args == list(e.args) else e.func(*args)

    return visit(expr)


def split_primes(expr: sp.Expr, applications: Iterable[sp.Expr] = ()) -> tuple[list, sp.Expr]:
    """(the activations whose derivative f'(z) is a factor of `expr`, the remaining factor).

    ``x·σ'(w x)`` gives ``([sigmoid], x)``; recognised by :func:`mark_primes`,
    i.e. by comparison with ``cls.derivative(z)``.
    """
    marked = mark_primes(sp.factor_terms(expr), applications)
    acts, rest = [], []
    for f in sp.Mul.make_args(marked):
        act = getattr(type(f), "activation", None)
        (acts.append(act) if act is not None else rest.append(f))
    return acts, sp.Mul(*rest)
