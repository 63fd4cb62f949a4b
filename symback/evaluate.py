"""Numbers from a derivation's formulas, exactly as SymPy reads them.

For checking and worked examples: every value is SymPy's own evaluation of
the forward definitions and of the adjoints, with symback's matrix classes
written out entry by entry (:func:`symback.matrix.explicit`).
"""
from __future__ import annotations

import numpy as np
import sympy as sp

from .errors import SymbackError
from .matrix import BATCH, explicit
from .parse import user_expr
from .engine import CONSUMERS

__all__ = ["evaluate"]


def evaluate(d, values: dict) -> dict:
    """Substitute numbers: returns {'forward': {node: value}, 'gradient': {p: value}}.

    ``values`` maps every input, target and parameter name to a number
    (an array for a matrix graph's matrices, samples in rows).  A scalar
    graph's values are exact SymPy numbers when the inputs are, and its
    gradients are per sample (∂C/∂p); a matrix graph's are NumPy arrays,
    the gradients of the batch loss L.  Slow: for checking and examples.
    """
    g = d.graph
    needed = g.input_names + g.target_names + g.param_names
    missing = [n for n in needed if n not in values]
    if missing:
        raise SymbackError(f"values missing for {', '.join(missing)}")
    if g.is_matrix:
        return _evaluate_matrix(d, values)
    env = {g.symbol(n): user_expr(values[n], where=f"value of {n}") for n in needed}
    bad = [n for n in needed if not env[g.symbol(n)].is_number]
    if bad:
        raise SymbackError(f"the value of {bad[0]} must be a number, got {values[bad[0]]!r}")
    forward = {}
    for n in g.order:
        if n in g._expr:
            forward[n] = sp.simplify(g.expr(n).xreplace(env)).evalf() \
                if not g.expr(n).xreplace(env).is_Number else g.expr(n).xreplace(env)
            env[g.symbol(n)] = forward[n]
    grads = {}
    for p in d.params:
        grads[p] = sp.sympify(d.gradient(p).xreplace(env), strict=True)
        if not grads[p].is_Number:
            grads[p] = grads[p].evalf()
    return {"forward": forward, "gradient": grads}


def _evaluate_matrix(d, values):
    from .engine import delta
    g = d.graph
    names = g.input_names + g.target_names + g.param_names
    arrays = {n: np.atleast_2d(np.asarray(values[n], dtype=float)) for n in names}
    rows = arrays[g.input_names[0]].shape[0] if g.input_names else 1
    env = {}
    for n in names:
        sym, a = g.symbol(n), arrays[n]
        want = tuple(rows if k == BATCH else int(k) for k in sym.shape)
        if a.shape != want:
            raise SymbackError(f"{n} has shape {a.shape}, expected {want}")
        env[sym] = sp.ImmutableMatrix(a)

    def ev(e):
        r = explicit(e.xreplace(env), rows)
        return r.evalf() if hasattr(r, "evalf") else r

    forward = {}
    for n in g.order:
        if n in g._expr:
            env[g.symbol(n)] = forward[n] = ev(g.expr(n))
    adj = {}
    for n in reversed(g.order):
        if n in d.adjoint and n != d.loss_name and g.kind(n) in ("node", "param"):
            env[delta(g, n)] = adj[n] = ev(d.adjoint[n])
    to_np = lambda m: np.array(m.tolist(), dtype=float) if hasattr(m, "tolist") else float(m)
    return {"forward": {k: to_np(v) for k, v in forward.items()},
            "gradient": {p: to_np(adj[p]) for p in d.params}}

CONSUMERS["evaluate"] = evaluate            # what Derivation.evaluate calls
