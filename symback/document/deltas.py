"""The δ recursion's rows, δ_n = Σ_c δ_c ∂c/∂n = value, and Nielsen's four equations read off them."""
from __future__ import annotations

import sympy as sp

from ..engine import Adjoint, delta
from ..matrix import activation_of, is_matrix
from ..kinds.base import zero_like
from ..printing import Chain, Partial, Terms, Tex, latex, visual_len
from . import steps
from .factors import closed_softmax, edge_partial
from .lines import LINE_WIDTH, ROW_INDENT, aligned_lines, tex
from .notation import layer_names

__all__ = ["deltas", "bp"]


def deltas(d, apps, full=False, names=None) -> list[dict]:
    """The rows δ_n = Σ_c δ_c ∂c/∂n = value, δ_L = 1 first (with steps="full", each δ's case).

    A row too wide for the page goes on: the value (and the recursive form) on a row of
    its own, itself broken when still too wide; `names` puts in the names given before
    any fold (a normalisation's σ⁻¹).
    """
    g = d.graph
    # the output A_l = f(Z_l) of a matrix layer passes δ straight on: shown inlined, as in the notes
    inline = {}
    for n in g.order:
        if n in d.adjoint and g.shape(n) and activation_of(g.expr(n) if n in g._expr else None) \
                and len(g.children(n)) == 1 and n != d.loss_name:
            inline[delta(g, n)] = d.adjoint[n]
    C = g.symbol(d.loss_name)
    rows = [{"case": None, "node": d.loss_name, "name": tex(C), "lhs": tex(Adjoint(d.loss_name)), "symbolic": tex(Partial(C, C)),
             "value": Tex("1"), "param": False, "recursive": None, "recursive_row": False, "value_row": False,
             "sympy": {"lhs": Adjoint(d.loss_name), "symbolic": Partial(C, C), "value": sp.S.One,
                       "chain": [Adjoint(d.loss_name), Partial(C, C), sp.S.One]}}]
    backward = d.program().backward
    shown = {sym.name[len("delta_"):] for sym, _ in backward} | {d.loss_name}
    for sym, e in backward:
        n, e = sym.name[len("delta_"):], closed_softmax(d, e)
        e = names.abbreviate(e) if names is not None else e
        symbolic = _delta_symbolic(d, n, shown)
        value = e.xreplace(inline).doit() if is_matrix(e) and e.has(*inline) else e
        lhs = sym
        laid = _laid_out([lhs, symbolic] + ([e] if value != e else []) + [value], apps)
        # nothing uses n (a parameter only a penalty reads): δ_n = 0 once, not "0 = 0"
        said = symbolic != value
        rows.append({"case": steps.delta_case(d, n) if full else None, "node": n,
                     "name": tex(g.symbol(n)), "lhs": tex(lhs), "symbolic": tex(symbolic) if said else None,
                     "value": laid[-1][0], "value_row": laid[-1][1], "param": g.kind(n) == "param",
                     "recursive": laid[2][0] if value != e else None,
                     "recursive_row": laid[2][1] if value != e else False,
                     "sympy": {"lhs": lhs, "symbolic": symbolic, "value": value,
                               "chain": [lhs, symbolic] + ([e] if value != e else []) + [value]}})
    return rows


def _laid_out(chain, apps) -> list[tuple[Tex, bool]]:
    """(text, starts a row of its own) for each part of a row lhs = a = b = …: a part goes
    on the row while the row fits the page, else on a row of its own, broken if still too wide."""
    out, used = [], 0
    for k, part in enumerate(chain):
        text = latex(part, applications=apps)
        own = k > 1 and used + visual_len(text) > LINE_WIDTH
        if own:
            text = aligned_lines(part, apps, LINE_WIDTH - ROW_INDENT)
        used = (0 if own else used) + visual_len(text.split(r"\\")[-1])
        out.append((Tex(text), own))
    return out


def _delta_symbolic(d, n, shown):
    """δ_n = Σ_c δ_c ∂c/∂n, each δ_c that has no row of its own written out in turn.

    (δ_Ŷ of a folded or inlined node is never left undefined: δ⁽³⁾ = δ_L ∂L/∂C ∂C/∂Ŷ ∂Ŷ/∂Z₃.)
    """
    g, parts = d.graph, []
    for c in g.children(n):
        if c == d.loss_name:
            parts.append(edge_partial(d, c, n))
            continue
        step = Partial(g.symbol(c), g.symbol(n))
        if c in shown:
            parts.append(Chain(delta(g, c), step))
            continue
        inner = _delta_symbolic(d, c, shown)
        terms = inner.args if isinstance(inner, Terms) else (inner,)
        parts += [Chain(*(t.args if isinstance(t, Chain) else (t,)), step) for t in terms]
    if not parts:           # nothing uses n: δ_n = 0
        return zero_like(g.symbol(n))
    return parts[0] if len(parts) == 1 else Terms(*parts)


def bp(d, deltas) -> list[dict]:
    """Nielsen's four equations, read off the δ rows (printed as columns by the notation).

    BP1 the output layer's δ, BP2 each hidden layer's δ from the next one's,
    BP3 ∂C/∂b = δ, BP4 ∂C/∂w = δ aᵀ.
    """
    layers = layer_names(d)
    # the output ŷ is BP1's δ^L only without a z^L of its own (see notation: δ^L = ∂C/∂z^L)
    output_z = any(kind == "Z" and l == max(i for _, i in layers.values()) for kind, l in layers.values())
    out = []
    for r in deltas[1:]:
        n = r["node"]
        kind = layers.get(n, (None,))[0] if n in layers else ("Yhat" if n == "Yhat" and not output_z else None)
        if kind in ("Z", "Yhat") and d.graph.kind(n) == "node":
            label = "BP2" if kind == "Z" and steps.delta_case(d, n) == "not output layer" else "BP1"
        elif kind in ("W", "b"):
            label = "BP4" if kind == "W" else "BP3"
        else:
            continue
        lhs = r["sympy"]["lhs"] if label in ("BP1", "BP2") else Partial(d.graph.symbol(d.loss_name), d.graph.symbol(n))
        out.append({"label": label, "lhs": tex(lhs), "value": r["value"],
                    "sympy": {"chain": [lhs, r["sympy"]["value"]]}})
    return sorted(out, key=lambda r: r["label"])
