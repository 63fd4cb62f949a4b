"""The punchline: each weight's gradient for one sample, from the last layer back.

Lecture notation writes the notes' shorthand beside the valid matrix product;
matrix and Nielsen notation the product itself.  Parameters the punchline
leaves out are named, with the reason (:func:`punchline_note`).
"""
from __future__ import annotations

import re

import sympy as sp

from ..layout import BatchRows
from ..matrix import simplify_ones
from ..printing import Chain, Partial, Terms, Tex, latex
from .factors import compose, edge_expr, notes_start
from .lines import definitions, tex
from .notation import layer_names, punchline_forms

__all__ = ["punchline", "punchline_intro", "punchline_note"]


def punchline(d, nt, names=None, apps=()):
    """Each weight's gradient for one sample, from the last layer back.

    Lecture notation: the notes' shorthand, (ŷ − y) · W⁽³⁾ · σ'(z⁽³⁾) · … · X,
    with the valid matrix product beside it; matrix and Nielsen notation: the
    valid product itself (transposes shown; Nielsen's transposed).  A path the
    shorthand cannot write (a tied weight's transposed use) is shown as its
    matrix product; every path through the costs is shown, none dropped.  A
    parameter whose last factor sums over the rows (a bias) is left out, as in
    the notes, and the document says so (:func:`punchline_note`).  A product too
    wide for a line is folded with the document's `names` (G₁ = …, defined beside it).
    """
    g, rows = d.graph, []
    cost = getattr(g, "cost_name", None)
    lecture = nt.name == "lecture"
    for p in reversed(d.params):
        if not d.listable(p):
            continue            # written through the δs in the chain-rule section (punchline_note)
        paths = [path for path in d.chain(p) if path[0].wrt == cost]
        forms = [punchline_forms(d, path) or _sample_product(d, path) for path in paths]
        if not forms or any(f is None or _sums_rows(f[0].args[-1]) for f in forms):
            continue
        # one sample's cost C, as the section says (the notes' J is that cost, m = 1: the batch
        # loss J is 1/m times the sum a product over m rows gives, and holds the penalty)
        lhs = Partial(sp.Symbol(nt.loss) if _notes_j(d, nt) else g.symbol(cost), g.symbol(p))
        short = Terms(*[f[0] for f in forms])
        product = forms[0][1] if len(forms) == 1 else sp.MatAdd(*[f[1] for f in forms])
        # one line per path (an unrolled RNN's sum over time steps is wider than a page),
        # each folded when still too wide (a skip connection's softmax ran 13 cm past the margin)
        folded, where = [], []
        for f in forms:
            shown, defs = names.fold(f[1], apps) if names is not None else (f[1], [])
            folded.append(shown)
            where += definitions(defs, apps)
        terms = [{"factors": tex(f[0], transposes=False) if lecture else tex(shown),
                  "product": tex(shown) if lecture else None} for f, shown in zip(forms, folded)]
        chain = [lhs, product] + ([sp.MatAdd(*folded) if len(folded) > 1 else folded[0]] if where else [])
        rows.append({"lhs": tex(lhs), "param": p,
                     "factors": tex(short, transposes=False) if lecture else tex(product),
                     "product": tex(product) if lecture else None,
                     "terms": terms, "where": where,
                     "sympy": {"lhs": lhs, "factors": short, "product": product, "chain": chain}})
    return rows or None


def _sample_product(d, path):
    """(product, product) of a path from the costs for one sample (δ_C = 1), when no shorthand exists.

    It starts where the notes' form would (a fused output's δ = Ŷ − Y, not the
    softmax's and the cross-entropy's maps composed and never simplified).
    """
    st = notes_start(d, path)
    if st is not None:
        k, _, first = st
        labels = [first] + [edge_expr(d, f.of, f.wrt) for f in path[k + 1:]]
    else:
        labels = [edge_expr(d, f.of, f.wrt) for f in path[1:]]
        if not labels or not isinstance(labels[0], sp.Lambda):
            return None
        labels = [sp.OneMatrix(*labels[0].variables[0].shape)] + labels
    value = simplify_ones(compose(labels))
    return Chain(value), value


def punchline_intro(d, nt, rows) -> Tex | None:
    """What the punchline's lines mean: one sample's ∂C/∂W, and how the batch loss's gradient
    follows from them (a product over m rows adds up the m samples' gradients)."""
    if not rows:
        return None
    lecture = nt.name == "lecture"
    g = d.graph
    J, C = tex(sp.Symbol(nt.loss)), tex(g.symbol(g.cost_name))
    how = ("as the notes write it: start at the output error and, at each step back, a weight and an "
           "activation derivative, from the last layer to the first. As matrices each weight enters "
           "transposed, each $\\sigma'$ multiplies entry by entry ($\\odot$) and the layer's input, "
           "transposed, multiplies from the left; the second line of each gradient is that product"
           if lecture else
           "start at the output error and, at each step back, multiply by a transposed weight or, entry by "
           "entry ($\\odot$), by an activation derivative")
    scale = "$\\frac{1}{m}$ times that sum" if g.reduction == "mean" else "that sum"
    penalty = " plus the penalty's derivative" if _penalized(g) else ""
    if not isinstance(d.layout, BatchRows) or nt.name == "nielsen":    # no rows of samples to add up
        batch = (f"Over a batch, ${J}$ is the {g.reduction} of the samples' costs, so "
                 f"$\\partial {J}/\\partial \\theta$ is the {g.reduction} of these{penalty}.")
    else:
        i = nt.settings.get("sample", "i")      # the batch's letter (an LSTM's is j: its gate is i_t)
        batch = ("With the samples in the rows of the matrices, each product adds up the samples' gradients, "
                 f"$\\sum_{i} \\partial {C}_{i}/\\partial W$, and $\\partial {J}/\\partial W$ is {scale}{penalty}.")
    sample = f"($m = 1$, where ${J}$ is the sample's cost ${C}$)" if _notes_j(d, nt) else f"(${C}$ its cost)"
    return Tex(f"For one sample {sample}, {how}. {batch}")


def _penalized(g) -> bool:
    """Whether the loss has a penalty: a term of a matrix graph's loss node, or a one-sample graph's own."""
    return g.penalty != 0 or bool({s.name for s in g.expr(g.loss_name).free_symbols} & set(g.param_names))


def _notes_j(d, nt) -> bool:
    """Whether the punchline writes the notes' ∂J/∂W: lecture notation, and J is one sample's cost
    when m = 1 (no penalty in J)."""
    return nt.name == "lecture" and not _penalized(d.graph)


def punchline_note(d, rows) -> Tex | None:
    """Which parameters the punchline leaves out, and why (None when it shows them all)."""
    if not rows:
        return None
    shown = {r["param"] for r in rows}
    left = [p for p in d.params if p not in shown]
    if not left:
        return None
    def listed(ps):
        return ", ".join(f"${latex(d.graph.symbol(p))}$" for p in ps)
    unused = [p for p in left if not d.chain(p)]     # no path at all: not even the penalty's
    many = [p for p in left if p not in unused and not d.listable(p)]
    # only the reasons that hold here: seed 004 (biases, no penalty) read "… or reaches the loss
    # only through the penalty", and "a norm's scale and shift" with no norm in the network
    penalised = [p for p in left if p not in many + unused and all(len(path) == 1 and path[0].of == d.loss_name
                                                                   for path in d.chain(p))]
    summed = [p for p in left if p not in many + unused + penalised]
    kinds = {_kind(d, p) for p in summed}
    kinds = "a bias" if kinds == {"bias"} else "a norm's scale and shift" if kinds == {"norm"} \
        else "a bias, a norm's scale and shift"
    why = [f"{listed(summed)}; each ends in a sum over the samples ({kinds})"] if summed else []
    why += [f"{listed(penalised)}, which reach{'es' if len(penalised) == 1 else ''} the loss only through the penalty"] \
        if penalised else []
    why += [f"{listed(unused)}, which do{'es' if len(unused) == 1 else ''} not reach the loss (gradient 0)"] \
        if unused else []
    why += [f"{listed(many)}, whose chain forms are too large to write out here"] if many else []
    theirs = "Its gradient is" if len(left) == 1 else "Their gradients are"
    return Tex(f"Not shown here: {'; and '.join(why)}. {theirs} in the chain-rule section above.")


def _kind(d, p) -> str:
    """"bias" (b1, an RNN's bh, an LSTM's b_i), "norm" (gamma1, beta1) or "other", for the note's words."""
    if re.fullmatch(r"(gamma|beta)\d*", p):
        return "norm"
    if layer_names(d).get(p, ("",))[0] == "b" or re.fullmatch(r"b(_?[a-z])?\d*", p):
        return "bias"
    return "other"


def _sums_rows(last) -> bool:
    """Whether the notes' last factor (or a whole product's leftmost, 𝟏ᵀ(…)) sums over the rows."""
    if isinstance(last, sp.MatMul):
        last = last.args[0]
    return isinstance(last, sp.OneMatrix) or (isinstance(last, sp.Transpose) and isinstance(last.arg, sp.OneMatrix))
