"""The loss section's words and checked lines: the loss as a reader names it, and ℓ, Cᵢ, L, P as chains.

The certificate (:mod:`symback.document.claims`) reads each line's kind: ℓ(ŷ, y) holds for every
ŷ, y; Cᵢ = Σₖ ℓ(Ŷᵢₖ, Yᵢₖ) for every row; L = (1/m) Σᵢ Cᵢ over a batch of samples.
"""
from __future__ import annotations

import sympy as sp

from ..matrix import RowCost, is_matrix
from ..printing import Tex, latex, visual_len
from .factors import PENALTY
from .lines import LINE_WIDTH, term_rows

__all__ = ["READER_NAMES", "reader_name", "loss_claims", "penalty_rows"]


#: the built-in losses as a reader names them (a registered one: its name, in words)
READER_NAMES = {"mse": "squared-error", "half_mse": "half squared-error", "cross_entropy": "cross-entropy",
                "binary_cross_entropy": "binary cross-entropy", "logcosh": "log-cosh", "huber": "Huber"}


def reader_name(name: str) -> str:
    """A loss's name in prose: "half squared-error", never the registry's "half_mse"."""
    return READER_NAMES.get(name, name.replace("_", " "))


def loss_claims(d, parts, cost) -> list[dict]:
    """The loss section's equations as checked lines: ℓ by the graph's loss function, Ŷ, Y, C
    by the graph's nodes, L by its reduction of the costs (a batch of samples)."""
    g, out = d.graph, []
    if isinstance(cost, RowCost):
        lf = cost.loss
        ell = {sp.Function("ell"): sp.Lambda((lf.prediction, lf.target), lf.expr)}
        out.append({"chain": [parts["lhs"], parts["rhs"]], "forall": True, "means": ell})
        sample = parts["sample"]
        means = {**ell, sp.Symbol("Yhat"): cost.prediction, sp.Symbol("Y"): cost.target}
        # the line writes the prediction and target in their own names (H_{ik}, T_{ik})
        means.update({sp.Symbol(e.name): e for e in (cost.prediction, cost.target) if hasattr(e, "name")})
        # the costs' column C, or a one-sample graph's row costs c (ℓ summed over each row of its sample)
        means.update({sp.Symbol(n): g.symbol(n) for n in g.node_names if isinstance(g.expr(n), RowCost)})
        means.update({sp.Symbol(f"col_{k.name}"): v for k, v in list(means.items()) if isinstance(k, sp.Symbol)})
        out.append({"chain": [sample.lhs, sample.rhs], "rows": True, "means": means})
    else:
        out.append({"chain": [parts["lhs"], parts["rhs"]]})
    if parts["batch_full"] is not None:         # L over a batch: checked on a batch of samples
        out += [{"chain": [e.lhs, e.rhs], "batch": True}
                for e in (parts["batch"], parts["batch_full"], parts["batch_gradient"])]
        if parts["penalty"] is not None:        # a one-sample graph's P, outside its cost
            out.append({"chain": [parts["penalty"].lhs, parts["penalty"].rhs],
                        "means": {PENALTY: parts["penalty"].rhs}})
        # ∂P/∂W: SymPy's derivative of P, which the point checks against a central difference of P
        out += [{"chain": [e.lhs, e.rhs], "batch": True} for e in parts["penalty_gradients"]]
    else:
        out.append({"chain": [g.symbol(d.loss_name), parts["batch"].rhs]})
        C = g.symbol(g.cost_name)
        if parts["penalty"] is not None and is_matrix(C) and C.shape[1] == 1:
            # P is what L adds to the costs' reduction (the mean or the sum of the column C)
            costs = sp.MatMul(sp.OneMatrix(1, C.shape[0]), C)
            costs = costs / C.shape[0] if d.reduction == "mean" else costs
            out.append({"chain": [parts["penalty"].lhs, parts["penalty"].rhs],
                        "means": {PENALTY: g.symbol(d.loss_name) - sp.Trace(costs)}})
    return out


def penalty_rows(parts) -> dict:
    r"""An article's penalised loss lines, folded when long: ``rows`` (L = …, L written out, and
    "penalty P = …", for an align*) and ``gradients`` (the ∂P/∂W, a few to a gather* row).

    On one gather line each, a seven-weight penalty ran 195 pt past the margin and its seven
    ∂P/∂W 235 pt.  The same expressions as the one-line forms, printed by the same printer.
    """
    rows = []
    for key in ("batch", "batch_full", "penalty"):
        if parts[key] is not None:
            lhs = latex(parts[key].lhs)
            rows.append((r"\text{penalty } " if key == "penalty" else "") + f"{lhs} &= {term_rows(parts[key].rhs, [])}")
    lines, cur = [], []
    for e in (latex(e) for e in parts["penalty_gradients"]):
        if cur and visual_len(r", \qquad ".join(cur + [e])) > LINE_WIDTH:
            lines.append(cur)
            cur = []
        cur.append(e)
    lines += [cur] if cur else []
    return {"rows": Tex(r", \\ ".join(rows) + "."),
            "gradients": Tex(r", \\ ".join(r", \qquad ".join(line) for line in lines) + ".") if lines else None}
