"""The per-sample cost column of a registered loss, and its derivative by the prediction.

:class:`RowCost` is defined entry by entry from the loss's SymPy definition ℓ(ŷ, y);
its VJP is SymPy's ∂ℓ/∂ŷ of that definition (:func:`cost_derivative`), spread over the
outputs; it lowers to the row sums of ℓ's formula (log Ŷ of a softmax as log-softmax).
"""
from __future__ import annotations

import sympy as sp

from ..errors import DefinitionError
from ..registry import LOSSES
from .base import Kind, as_str, is_matrix, real_diff
from .elementwise import to_matrix

__all__ = ["RowCost", "cost_derivative"]


class RowCost(Kind, sp.MatrixExpr):
    """The per-sample cost column: C_i = Σ_k ℓ(Ŷ_ik, Y_ik) for a registered loss ℓ.

    ``RowCost(Str(loss name), Yhat, Y)`` has shape m × 1.
    """

    def __new__(cls, name, prediction, target):
        name = as_str(name)
        for what, e in (("prediction", prediction), ("target", target)):
            if not is_matrix(e):
                raise DefinitionError(f"loss {name.name!r}: the {what} must be a matrix "
                                      f"(rows are samples), got {e!r}")
        if prediction.shape != target.shape:
            raise DefinitionError(f"loss {name.name!r}: prediction {prediction} has shape "
                                  f"{prediction.shape} but target {target} has {target.shape}")
        return super().__new__(cls, name, prediction, target)

    @property
    def loss(self):
        """The LossFunction."""
        return LOSSES[self.args[0].name]

    @property
    def prediction(self):
        """Ŷ."""
        return self.args[1]

    @property
    def target(self):
        """Y."""
        return self.args[2]

    @property
    def shape(self):
        return (self.args[1].shape[0], sp.S.One)

    def explicit_value(self, a, y):
        """Each row's Σ_k ℓ(a_ik, y_ik), from the loss's definition."""
        return sp.ImmutableMatrix(a.rows, 1, lambda i, _: sum(self.loss(a[i, k], y[i, k]) for k in range(a.cols)))

    def numeric_value(self, a, y, entrywise):
        """The same on NumPy arrays."""
        lf = self.loss
        return entrywise(sp.Lambda((lf.prediction, lf.target), lf.expr))(a, y).sum(axis=1, keepdims=True)

    def vjp(self, D, parent, P=None):
        """δ_Ŷ for δ_C = D: δ_C repeated on each output, times ∂ℓ/∂Ŷ entry by entry."""
        if parent != self.prediction:
            raise DefinitionError(f"the loss {self.loss.name!r} is differentiated by its prediction only")
        k = self.prediction.shape[1]
        spread = D * sp.OneMatrix(1, k)          # δ_C repeated on each output
        return sp.HadamardProduct(spread, cost_derivative(self)).doit()

    def lower(self, lo, target=None):
        """The row sums of ℓ(Ŷ, Y) entry by entry, from the loss's definition (log Ŷ of a softmax
        as its log-softmax); a node's cost column records the formula it sums (for 1ᵀ C)."""
        lf = self.loss
        yhat, y = lo.scalar(self.prediction), lo.scalar(self.target)
        body = lf.expr.xreplace({lf.prediction: yhat, lf.target: y})
        if yhat in lo.log_of:
            body = body.replace(lambda x: isinstance(x, sp.log) and x.args[0] == yhat, lambda x: lo.log_of[yhat])
        if target is None:
            return lo.emit("rowsum", (body,), (self.shape[0], 1))
        t = lo.names[target]
        lo.rowsum_of[t] = body
        return lo.emit("rowsum", (body,), (self.shape[0], 1), target=t)

    def _latex(self, printer, exp=None):
        pred, target = self.prediction, self.target
        columns = printer._settings.get("columns")
        if columns:     # one sample's cost of its columns
            pred, target = columns(pred), columns(target)
        return rf"\ell\left({printer._print(pred)}, {printer._print(target)}\right)"

    def _text(self, printer):
        return f"ℓ({printer._print(self.prediction)}, {printer._print(self.target)})"


def cost_derivative(cost: RowCost) -> sp.MatrixExpr:
    """∂ℓ(Ŷ, Y)/∂Ŷ entry by entry: SymPy's derivative of the loss's definition."""
    lf = cost.loss
    p, t = sp.Dummy("p", real=True), sp.Dummy("t", real=True)
    d = real_diff(lf(p, t), p)
    return to_matrix(d, {p: cost.prediction, t: cost.target}, cost.prediction.shape)
