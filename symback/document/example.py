"""The worked example: numbers for every symbol, the forward pass and gradients substituted.

A scalar graph's numbers stay exact (0.1 means 1/10); a matrix graph's are
NumPy arrays.  The computational graph shows each node's value and each
edge's local derivative there, and the highlighted path multiplies them
(seed 002's yellow path, with numbers).
"""
from __future__ import annotations

import math

import numpy as np
import sympy as sp

from ..errors import SymbackError
from ..matrix import is_matrix
from ..targets import check_rows, check_targets, min_rows, target_rules
from ..printing import Chain, Partial, Terms, Tex, latex, number
from . import analysis
from .lines import tex
from .written import written_form, written_latex

__all__ = ["values_of", "exact", "example", "numbers", "path_product"]

MAX_SHOWN = 6              # matrices larger than this are not written out in the example


def values_of(d, values: dict) -> dict:
    """The worked example's values: exact numbers for a scalar graph, float arrays for a matrix graph."""
    g = d.graph
    names = g.input_names + g.target_names + g.param_names
    missing = [n for n in names if n not in values]
    if missing:
        raise SymbackError(f"values missing for {', '.join(missing)}")
    out = {}
    for n in names:
        v = values[n]
        if g.shape(n):
            try:
                out[n] = np.atleast_2d(np.asarray(v, dtype=float))
            except (TypeError, ValueError):
                raise SymbackError(f"values for {n!r} must be numbers or arrays of numbers") from None
            if not np.isfinite(out[n]).all() or np.iscomplexobj(v):
                raise SymbackError(f"values for {n!r} must be finite real numbers")
        else:
            out[n] = exact(n, v)
    if g.target_names and isinstance(out[g.target_names[0]], np.ndarray):
        # the example's numbers meet the rules m.grad's data must (targets.py): softmax +
        # cross-entropy's shown Ŷ − Y holds only for target rows summing to 1, and BatchNorm's
        # statistics need two samples; otherwise the document would be refused as false
        rules = target_rules(d)
        for n in g.target_names:
            check_targets(out[n], rules)
        check_rows(min(len(out[n]) for n in g.input_names), min_rows(d))
    return out


def exact(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float, sp.Number)):
        try:
            value = sp.sympify(value, strict=True)
        except (sp.SympifyError, TypeError, ValueError):
            raise SymbackError(f"value for {name!r} must be a number, got {value!r}") from None
        if not value.is_number:
            raise SymbackError(f"value for {name!r} must be a number, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise SymbackError(f"value for {name!r} must be a finite real number, got {value!r}")
    if isinstance(value, float):
        return sp.Rational(repr(value))     # 0.1 means 1/10: the example stays exact
    value = sp.sympify(value, strict=True)
    if not (value.is_real and value.is_finite):
        raise SymbackError(f"value for {name!r} must be a finite real number, got {value}")
    return value


def numbers(d, values):
    """Every node's value at the worked example (scalar graphs; None for matrices)."""
    if not d.layout.worked_in_numbers:
        return None
    ev = analysis.evaluate(d, values)
    return {**values, **ev["forward"]}


def path_product(d, param, dg):
    """Seed 002's yellow path with numbers: each edge's local derivative there, multiplied."""
    g = d.graph
    lhs = Partial(g.symbol(d.loss_name), g.symbol(param))
    symbols = Terms(*[Chain(*[Partial(g.symbol(f.of), g.symbol(f.wrt)) for f in path]) for path in d.chain(param)])
    dec = lambda v: v if sp.sympify(v, strict=True).is_Integer else sp.Float(sp.N(v, 15), 15)      # noqa: E731 - decimals
    numbers = Terms(*[Chain(*[dec(dg.edge_values[(f.of, f.wrt)]) for f in path]) for path in d.chain(param)])
    value = sp.Add(*[sp.Mul(*[dg.edge_values[(f.of, f.wrt)] for f in path]) for path in d.chain(param)])
    given = {n: dg.values[n] for n in g.input_names + g.target_names + g.param_names}
    return {"lhs": tex(lhs), "symbols": tex(symbols), "numbers": tex(numbers),
            "value": Tex(number(sp.N(value, 15))),
            "sympy": {"numbers": numbers, "value": value, "chain": [lhs, symbols, numbers, value], "at": given}}


def example(d, values: dict, lr, apps) -> dict:
    g = d.graph
    ev = analysis.evaluate(d, values)
    show = _shown
    given_at = {n: values[n] for n in g.input_names + g.target_names + g.param_names}
    given = [{"name": tex(g.symbol(n)), "value": show(values[n])}
             for n in g.input_names + g.target_names + g.param_names]
    known = {n: v for n, v in values.items() if not isinstance(v, np.ndarray)}
    forward = []
    for sym, e in d.program().forward:
        n = sym.name
        terms = written_form(g, n)      # a spec file's order of terms and factors, else SymPy's
        sub = Tex(written_latex(terms, known, apps) if terms else latex(e, values=known, applications=apps)) \
            if known and not is_matrix(e) and not isinstance(ev["forward"][n], np.ndarray) else None
        formula = Tex(written_latex(terms, applications=apps)) if terms else tex(e, applications=apps)
        forward.append({"lhs": tex(sym), "formula": formula, "substituted": sub,
                        "value": show(ev["forward"][n]),
                        # the substituted line is e printed with the numbers: the same expression
                        "sympy": {"chain": [sym, e, _held(ev["forward"][n])], "at": given_at}})
        if not isinstance(ev["forward"][n], np.ndarray):
            known[n] = ev["forward"][n]
    grads = []
    for p in d.params:
        lhs = Partial(g.symbol(d.loss_name), g.symbol(p))
        chains = [Chain(*[f.expr for f in path]) for path in d.chain(p)]
        scalar = not d.layout.param_shape(p)
        grads.append({"lhs": tex(lhs), "value": show(ev["gradient"][p]),
                      "formula": tex(Terms(*chains), applications=apps) if scalar else None,
                      "substituted": Tex(latex(Terms(*chains), values=known, applications=apps)) if scalar else None,
                      "sympy": {"chain": [lhs] + ([Terms(*chains)] if scalar else []) + [_held(ev["gradient"][p])],
                                "at": given_at}})
    updates = []
    if lr is not None:
        eta = exact("lr", lr)
        for p in d.params:
            rule = sp.Symbol(p) - sp.Symbol("eta") * Partial(d.loss_name, p)
            grad, old = ev["gradient"][p], values[p]
            step = sp.Symbol(p) - sp.Symbol("eta") * sp.Symbol("gradient")
            sub = None if isinstance(old, np.ndarray) else Tex(latex(step, values={p: old, "eta": eta, "gradient": grad}))
            new = old - (float(eta) if isinstance(old, np.ndarray) else eta) * grad
            updates.append({"name": tex(g.symbol(p)), "rule": tex(rule), "substituted": sub, "value": show(new),
                            "sympy": {"chain": [rule, _held(new)], "at": given_at,
                                      "means": {sp.Symbol("eta"): eta, sp.Symbol(p): g.symbol(p),
                                                rule.coeff(sp.Symbol("eta")).args[-1]: lhs_of(d, p)}}})
    loss = ev["forward"][d.loss_name]
    return {"sympy": {"chain": [g.symbol(d.loss_name), _held(loss)], "at": given_at}, "given": given, "forward": forward, "loss": show(loss), "gradients": grads, "updates": updates,
            "path": None,
            "lr": Tex(number(exact("lr", lr))) if lr is not None else None,
            "matrices": any(isinstance(v, np.ndarray) for v in values.values())}


def lhs_of(d, p):
    """∂L/∂p with the graph's own symbols (the update rule prints it from the names)."""
    return Partial(d.graph.symbol(d.loss_name), d.graph.symbol(p))


def _held(v):
    """A value as the chain holds it: the number, or the matrix of numbers."""
    if isinstance(v, np.ndarray):
        return sp.ImmutableMatrix(v.tolist())
    return sp.Float(v) if isinstance(v, float) else v


def _shown(v) -> Tex:
    """A number, or a small matrix written out (a large one by its shape)."""
    if not isinstance(v, np.ndarray):
        return Tex(number(v))
    if max(v.shape) > MAX_SHOWN:
        return Tex(rf"\text{{a }} {v.shape[0]} \times {v.shape[1]} \text{{ matrix}}")
    return tex(sp.Matrix(v.tolist()).applyfunc(sp.Float))


