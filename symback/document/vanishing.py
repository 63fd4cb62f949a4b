"""The vanishing-gradient bound of a document: ‖∂L/∂θ‖ path by path, each activation derivative
by its supremum, every other factor by its norm, and the sentence that says what the bound shows."""
from __future__ import annotations

import math

import sympy as sp

from ..engine import delta
from ..matrix import FPrime, is_matrix
from ..printing import Bound, Chain, Norm, Partial, Terms, Tex, latex, split_primes, visual_len
from .factors import edge_expr, notes_chain
from .lines import LINE_WIDTH, ROW_INDENT, chain_lines

__all__ = ["upper", "vanishing"]


def upper(bound: sp.Expr) -> sp.Expr:
    """An exact bound as it is; a numeric one rounded up (to 4 digits), so it stays a bound."""
    if bound.is_Rational or not bound.is_finite:
        return bound
    scale = 10 ** (3 - math.floor(math.log10(abs(float(bound))))) if bound else 1
    return sp.Rational(math.ceil(float(bound) * scale), scale)


def vanishing(d, param: str, sups: dict, apps) -> dict:
    """Bound ‖∂/∂param‖ path by path: every activation derivative by its supremum, the rest by norms.

    A scalar path's factors multiply (|ab| = |a||b|); a matrix path in the
    notes' form uses ‖AB‖_F ≤ ‖A‖_F‖B‖_F and ‖A ⊙ f'(Z)‖_F ≤ sup|f'| ‖A‖_F,
    starting from the δ the engine computed at the output block; a factor
    with no such form is bounded by its own norm.
    """
    terms, collapsed, counts, seen = [], [], [], []
    for path in d.chain(param):
        notes = notes_chain(d, path)
        if notes is not None:
            node, _, coeffs = notes
            items = [Norm(delta(d.graph, node))] + coeffs
        else:
            items = [_edge_item(d, f) for f in path]
        parts, found = [], []
        for it in items:
            acts, rest = _activation_factors(it, apps)
            for act in acts:
                found.append(act)
                if sups.get(act, sp.oo) != 1:       # a factor 1 bounds nothing: not printed
                    parts.append(upper(sups.get(act, sp.oo)))
            if rest != 1:
                parts.append(rest if isinstance(rest, Norm) else Norm(rest))
        counts.append(sum(a in sups for a in found))
        seen += found
        terms.append(Chain(*parts))
        nums = [p for p in parts if p.is_number]
        collapsed.append(Chain(sp.Mul(*nums), *[p for p in parts if not p.is_number]) if len(nums) > 1 else None)
    rhs = [Terms(*terms)]
    if len(terms) == 1 and collapsed[0] is not None:
        rhs.append(collapsed[0])
    # ∂L/∂W of the graph's own symbols: a matrix parameter's norm is ‖·‖_F, a number's |·|
    lhs = Norm(Partial(d.graph.symbol(d.loss_name), d.graph.symbol(param)))
    expr = Bound(lhs, *rhs)
    small = [a for a in dict.fromkeys(seen) if a in sups and sups[a].is_number and sups[a] < 1]
    shrinking = [a.__name__ for a in small]
    # is every activation factor below one? (seed 001: one sigmoid′ among two ReLU′ is not "every")
    every = all(a in small for a in seen if a in sups)
    # several paths: one line per path (an unrolled RNN's bound is wider than a page), a long
    # path broken after a factor (a GRU's ran 128 pt past the margin, a transformer's 380 pt)
    lines = [chain_lines(t, apps, LINE_WIDTH - ROW_INDENT) for t in terms] if len(terms) > 1 else None
    bound = Tex(latex(expr, applications=apps))
    # one wide path: "≤ …" and "= …" on rows of their own (on one line it ran past the margin)
    rows = [chain_lines(r.args[0] if isinstance(r, Terms) else r, apps, LINE_WIDTH - ROW_INDENT)
            for r in rhs] if len(rhs) > 1 and visual_len(bound) > LINE_WIDTH else None
    on_chain = [a.__name__ for a in dict.fromkeys(seen) if a in sups]
    return {"param": Tex(latex(d.graph.symbol(param))), "bound": bound, "bound_rows": rows,
            "conclusion": _conclusion(shrinking, every, counts, on_chain),
            "bound_lhs": Tex(latex(lhs, applications=apps)), "bound_lines": lines,
            "factors": max(counts, default=0), "shrinking": shrinking, "every": every, "any": any(a.__name__ != "identity" for a in sups),
            "matrix_note": bool(d.layout.param_shape(param)),
            "sympy": {"bound": expr, "chain": [lhs, *rhs], "relations": ["<="] + ["="] * (len(rhs) - 1)}}


def _conclusion(shrinking, every, counts, on_chain) -> str:
    """What the bound says about depth, no more: each factor below one shrinks the bound of the
    path it is on; paths with fewer such factors (a gated cell's additive path) shrink less."""
    if not shrinking:
        if not on_chain:
            return ("No activation derivative is a factor on these paths (the output activation enters "
                    "through the output error), so the activations do not shrink this gradient with depth.")
        return (f"The activation derivatives on these paths ({', '.join(on_chain)}) are not bounded below one, "
                "so they do not shrink the gradient with depth (though zero regions, as ReLU has, can stop it).")
    most, fewest = max(counts), min(counts)
    many = f"{fewest} to {most}" if fewest != most else f"{most}"
    which = f"with {', '.join(shrinking)} every one of them is" if every else f"those of {', '.join(shrinking)} are"
    text = (f"Each path passes through {many} activation derivative{'s' if most != 1 else ''}; {which} below "
            "one, so the bound of a path shrinks geometrically with the number of such factors on it: the "
            "vanishing gradient problem, where every layer or step adds one.")
    if fewest < most:
        text += f" The paths differ: the bound of one with {fewest} shrinks far less than that of one with {most}."
    return text


def _edge_item(d, f):
    """A path's factor for the bound: a scalar edge as it is; a matrix map δ ↦ δ ⊙ f'(Z) as f'(Z),
    whose diagonal Jacobian has operator norm at most sup|f'| (so the activation derivative is
    bounded, and said to be on the path, like the notes form's); any other map by ‖∂of/∂wrt‖_F."""
    e = edge_expr(d, f.of, f.wrt)
    if not isinstance(e, sp.Lambda):
        return e
    body, var = e.expr, e.variables[0]
    if isinstance(body, sp.HadamardProduct) and len(body.args) == 2 and var in body.args:
        other = body.args[1] if body.args[0] == var else body.args[0]
        if isinstance(other, FPrime):
            return other
    return Norm(Partial(d.graph.symbol(f.of), d.graph.symbol(f.wrt)))


def _activation_factors(e, apps):
    """(activation classes whose f' is a factor of e, the rest): σ'(Z) in a matrix, or inside a product."""
    if isinstance(e, FPrime):
        w = sp.Dummy("w", real=True)
        return ([], sp.S.One) if e.scalar(w).is_number else ([e.activation], sp.S.One)
    if isinstance(e, Norm) or is_matrix(e) or not isinstance(e, sp.Expr):
        return [], e
    acts, rest = split_primes(e, apps)
    return acts, rest
