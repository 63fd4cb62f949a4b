"""What a network's targets must satisfy for its loss and derived gradients to hold.

Softmax + cross-entropy's gradient Ŷ − Y is derived by SymPy assuming each
target row sums to 1 (:func:`symback.vjp.fused_assumes_distribution`); a
loss may declare the targets it is defined for (binary cross-entropy's
probabilities, ``LossFunction.target_range``).  :func:`target_rules` reads
both off a derivation and :func:`check_targets` checks data against them,
so every backend refuses targets its formulas would get wrong.  A network that
normalises over the batch (BatchNorm) needs two samples at least in every batch:
:func:`min_rows`.
"""
from __future__ import annotations

import numpy as np

from .errors import DataError

__all__ = ["target_rules", "check_targets", "min_rows"]

#: |row sum − 1| allowed: float32 one-hot and probability rows pass
_SUM_TOLERANCE = 1e-4


def target_rules(d) -> tuple:
    """(("sum", why) | ("range", (low, high), why), ...) for the data's targets Y."""
    from .engine import output_block
    from .matrix import RowCost
    from .vjp import fused_assumes_distribution
    g = d.graph
    rules = []
    for name in g.order:
        cost = g.expr(name) if name in g._expr else None
        if not isinstance(cost, RowCost):
            continue
        loss = cost.loss
        if loss.target_range is not None:
            rules.append(("range", tuple(loss.target_range), f"the loss {loss.name}"))
        pred = getattr(cost.prediction, "name", None)
        block = output_block(g, pred) if pred in g._expr else None
        if block and fused_assumes_distribution(block[0], loss, cost.prediction.shape[1]):
            rules.append(("sum", None, f"softmax + {loss.name}'s gradient Ŷ − Y"))
    return tuple(dict.fromkeys(rules))


def check_targets(Y, rules) -> None:
    """Raise DataError unless the targets Y (NumPy, samples first) satisfy every rule."""
    for kind, arg, why in rules:
        if kind == "range":
            low, high = arg
            bad = np.flatnonzero(((Y < low) | (Y > high)).reshape(len(Y), -1).any(axis=1))
            if bad.size:
                raise DataError(f"Y: row {bad[0]} has a target outside [{low}, {high}], "
                                f"which {why} is defined for (labels or probabilities)")
        else:
            sums = Y.sum(axis=-1).reshape(len(Y), -1)
            bad = np.flatnonzero((np.abs(sums - 1) > _SUM_TOLERANCE).any(axis=1))
            if bad.size:
                raise DataError(f"Y: row {bad[0]} sums to {float(sums[bad[0]].flat[0]):g}; {why} "
                                "needs every target row to sum to 1 (one-hot labels or probabilities)")


def min_rows(d) -> int:
    """The fewest samples a batch of `d`'s network may hold: 2 where it standardises over the
    samples (BatchNorm: a column of one sample minus its own mean is 0 whatever the input, so
    its gradient is 0; torch refuses it: "Expected more than 1 value per channel"), else 1."""
    from .matrix import BATCH, RowNorm
    g = d.graph
    for name in g.order:
        if name in g._expr and any(N.shape[1] == BATCH for N in g.expr(name).atoms(RowNorm)):
            return 2
    return 1


def check_rows(n: int, least: int, what: str = "X") -> None:
    """Raise DataError if `n` samples are fewer than the network's :func:`min_rows`."""
    if n < least:
        raise DataError(f"{what} has {n} row{'s' * (n != 1)}, but the network normalises over the batch "
                        f"(BatchNorm), which needs {least} samples at least: the batch statistics of one "
                        f"sample make its output the same for every input and its gradients 0")
