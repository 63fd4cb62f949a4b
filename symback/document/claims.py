"""The lines the certificate checks beyond one random point of the graph.

A chain's ``"sympy"`` dict may say what kind of claim it is:

* ``"forall"``: a definition that holds for every value of its letters (σ′(z) = σ(z)(1 − σ(z)),
  ℓ(ŷ, y) = (ŷ − y)²): checked at several random values, each σ′ read as SymPy's derivative of
  σ's definition and ℓ as the graph's own loss function (``"means"``);
* ``"batch"``: a line over a batch of m samples (L = (1/m) Σᵢ Cᵢ, ∂L/∂θ = (1/m) Σᵢ ∂Cᵢ/∂θ):
  checked on a batch of samples, L read as the graph's reduction of the costs, ∂L/∂v as a
  central difference of that, θ as each parameter in turn;
* ``"rows"``: a line about one sample i of a matrix graph (Cᵢ = Σₖ ℓ(Ŷᵢₖ, Yᵢₖ)), checked
  for every row, Ŷ and Y read as the graph's prediction and target;
* ``"at"``: a worked example's line, evaluated at the example's values (or an iterate θᵗ),
  every number printed compared with the graph recomputed from its definitions there;
* ``"sup"``: sup |f′| over the real line, against a dense grid refined by golden sections;
* ``"relations"``: ``"<="`` between two links makes that link an inequality (the vanishing bound,
  each ‖·‖ the Frobenius norm of what it holds, a map's the operator norm).

``"means"`` maps a letter that only the line uses to what it stands for (η to the learning rate,
θᵗ to the iterate's parameters).
"""
from __future__ import annotations

import random

import numpy as np
import sympy as sp

from ..engine import BATCH_SIZE, SAMPLE
from ..functions import Activation
from ..printing import SAMPLE_LETTERS, Norm, Partial, PerSample
from .analysis import value_of
from .factors import PENALTY
from .steps import GradL, LossAt, TotalPartial, Vanishes

__all__ = ["claim_values", "unprime", "real_diff", "RELATIONS"]

#: how an adjacent pair of a chain is compared: equal, at most, about (4 digits printed)
RELATIONS = ("=", "<=", "~")
FORALL_POINTS = 3       # random values a "for every z" line is checked at
GRID = np.linspace(-40.0, 40.0, 160_001)


def claim_values(point, where: str, info: dict) -> list[list]:
    """The values of the chain's members, one list per instance checked (several points, rows, θ's)."""
    chain, kind, means = list(info["chain"]), _kind(info), info.get("means", {})
    if kind == "forall":
        return [[_forall_value(point, e, means, vals) for e in chain] for vals in _random_letters(chain, means)]
    if kind == "sup":
        return [[_sup(chain[0].xreplace(means))] + [complex(sp.N(e)) for e in chain[1:]]]
    if kind == "batch":
        return _batch_values(point, chain, means)
    if kind == "rows":
        # every row of the prediction: the batch's samples, or the rows of a one-sample graph's sample
        rows = np.atleast_2d(value_of(means[sp.Symbol("Yhat")], point.env, point.rows)).shape[0] \
            if sp.Symbol("Yhat") in means else point.rows
        return [[_row_value(point, e, means, r) for e in chain] for r in range(rows)]
    here = point.at(info["at"]) if kind == "at" else point
    at = here.map_argument(chain[0])
    # a line's left side ∂L/∂θ is the total derivative; inside a chain (and in the table of local
    # derivatives, or a steps="full" factor) ∂c/∂v is an edge's
    edge = where.startswith("local") or info.get("edge")
    if info.get("edge") or info.get("every_partial"):
        # a rule's inner ∂u/∂v (steps="full") is SymPy's partial derivative of the expression u,
        # every other node held fixed: ∂(n₁ + p₃)/∂p₃ = ∂n₁/∂p₃ + ∂p₃/∂p₃ = 0 + 1
        inner = lambda e: e.replace(lambda x: isinstance(x, Partial), lambda x: real_diff(*x.args))  # noqa: E731
        first = 0 if info.get("every_partial") else 1        # the zeros' line: every member is such a ∂
        chain = chain[:first] + [inner(e) if isinstance(e, sp.Basic) else e for e in chain[first:]]
    return [[_value(here, e, where, at, means, kind == "at" or (k == 0 and not edge)) for k, e in enumerate(chain)]]


def _kind(info):
    for k in ("forall", "sup", "batch", "rows", "at"):
        if info.get(k) is not None and info.get(k) is not False:
            return k
    return None


def unprime(f):
    """f′(u, …) as SymPy's derivative of f's definition at u (independent of symback's compact form)."""
    act, (u, *rest) = type(f).activation, f.args
    w = sp.Dummy("w", real=True)
    return sp.diff(act.definition(w, *rest), w).xreplace({w: u})


def real_diff(expr, wrt):
    """sympy.diff with every symbol real (|u|' = sign(u), not derivatives of re and im)."""
    real = {s: sp.Dummy(s.name, real=True) for s in expr.free_symbols | {wrt}}
    return sp.diff(expr.xreplace(real), real[wrt]).xreplace({v: k for k, v in real.items()})


# ------------------------------------------------------------------ one point, numbers and norms
def _value(point, e, where, at, means, total):
    """A member of a chain at the point: Norm, sums and products of them, columns of numbers too."""
    g = point.g
    if isinstance(e, Norm):
        return _norm(point, e.args[0], where, at, means)
    if isinstance(e, Vanishes):        # its own line (the term = 0) says that it is zero
        return _value(point, e.args[0], where, at, means, total)
    if isinstance(e, LossAt):
        return point.value(g.symbol(point.d.loss_name), where)
    if isinstance(e, GradL):            # ∇L(θᵗ): the column of ∂L/∂p at the iterate
        return np.array([[point.value(Partial(g.symbol(point.d.loss_name), g.symbol(p)), where, total=True)]
                         for p in point.d.params])
    if e in means and means[e] != e:
        return _value(point, means[e], where, at, means, total)
    if isinstance(e, sp.MatrixBase) and all(x.is_number for x in e):
        return np.array(e.tolist(), dtype=complex)
    if isinstance(e, sp.Transpose) and isinstance(e.arg, sp.MatrixBase):
        return _value(point, e.arg, where, at, means, total).T
    if isinstance(e, TotalPartial):     # ∂q/∂p through every path (the loss's terms, steps="full")
        return point.value(Partial(*e.args), where, at, total=True)
    special = tuple(means) + (Norm, LossAt, GradL, Vanishes, TotalPartial, sp.MatrixBase)
    if isinstance(e, (sp.Add, sp.Mul)) and e.has(*special):
        parts = [_value(point, a, where, at, means, total) for a in e.args]
        out = parts[0]
        for v in parts[1:]:
            out = out + v if isinstance(e, sp.Add) else out * v
        return out
    if isinstance(e, sp.Pow) and e.has(*special):
        return _value(point, e.base, where, at, means, total) ** _value(point, e.exp, where, at, means, total)
    if type(e).__name__ in ("Chain", "Terms") and e.has(*special):
        parts = [_value(point, a, where, at, means, total) for a in e.args]
        return np.prod(parts, axis=0) if type(e).__name__ == "Chain" else np.sum(parts, axis=0)
    return point.value(e, where, at, total=total and isinstance(e, Partial))


def _norm(point, x, where, at, means):
    """‖x‖: |x| for a number, the Frobenius norm for a matrix, the operator norm for a map δ ↦ …"""
    m = point.meaning(x) if isinstance(x, Partial) and not _is_total(point, x) else None
    if isinstance(m, sp.Lambda):       # the map's matrix at these sizes, column by column of basis δ's
        (var,), shape = m.variables, None
        shape = tuple(point.rows if k == BATCH_SIZE else int(k) for k in var.shape)
        cols = []
        for j in range(int(np.prod(shape))):
            basis = np.zeros(shape)
            basis.flat[j] = 1.0
            env = {**point.env, var: basis}
            cols.append(np.ravel(value_of(m.expr, env, point.rows)))
        return np.linalg.norm(np.array(cols).T, 2)
    v = _value(point, x, where, at, means, total=_is_total(point, x))
    return float(np.linalg.norm(np.asarray(v, dtype=complex)))


def _is_total(point, x):
    """∂L/∂p of the loss is the gradient; any other ∂c/∂v is an edge's."""
    return isinstance(x, Partial) and x.args[0] == point.g.symbol(point.d.loss_name)


# ------------------------------------------------------------------ for every value of its letters
def _random_letters(chain, means):
    letters = set()
    for e in chain:
        if isinstance(e, sp.Basic):
            letters |= {s for s in e.free_symbols if s not in means}
    rng = random.Random(7)
    # in (0.1, 0.9): inside every loss's domain (a BCE target, log ŷ), either side of no kink
    # an activation's z on both sides of 0 (a kink's two branches): −, +, −
    return [{s: sp.Float(rng.uniform(0.1, 0.9) * ((-1) ** (j + 1) if s.name == "z" else 1), 30)
             for s in sorted(letters, key=str)} for j in range(FORALL_POINTS)]


def _forall_value(point, e, means, vals):
    for k, v in means.items():          # ℓ the graph's loss function, α leaky ReLU's slope
        e = e.replace(k, v) if isinstance(k, sp.core.function.FunctionClass) else e.xreplace({k: v})
    e = point.meaning(e)
    return complex(sp.N(e.xreplace(vals).doit(), 30))


def _sup(e):
    """sup over real z of |f′(z)| (e = sup(|f′(z)|)): the best of a dense grid, refined by golden sections."""
    inner = e.args[0].args[0]
    z = inner.args[0]
    body = unprime(inner)
    body = body.replace(lambda x: isinstance(x, Activation), lambda x: type(x).definition(*x.args))
    f = sp.lambdify(z, sp.Abs(body), "mpmath")
    fast = sp.lambdify(z, sp.Abs(body.replace(lambda x: isinstance(x, sp.DiracDelta), lambda x: sp.S.Zero)), "numpy")
    with np.errstate(all="ignore"):
        y = np.asarray(fast(GRID), dtype=float) * np.ones_like(GRID)
    k = int(np.nanargmax(y))
    lo, hi = GRID[max(k - 1, 0)], GRID[min(k + 1, len(GRID) - 1)]
    ratio = (np.sqrt(5) - 1) / 2
    for _ in range(80):
        a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        if float(f(a)) < float(f(b)):
            lo = a
        else:
            hi = b
    return complex(max(float(f((lo + hi) / 2)), float(y[k])))


# ------------------------------------------------------------------ a batch of samples
def _batch_values(point, chain, means):
    """Each member over a batch of samples, for every parameter standing in for θ."""
    d, g = point.d, point.g
    samples = [point.at(point.draw_sample(k)) for k in range(3)]
    theta = sp.Symbol("theta")
    uses_theta = any(isinstance(e, sp.Basic) and e.has(theta) for e in chain)
    out = []
    for p in (d.params if uses_theta else [None]):
        sub = {BATCH_SIZE: sp.Integer(len(samples))}
        if p is not None:
            sub[theta] = g.symbol(p)
        out.append([_batch_value(point, samples, e.xreplace(sub) if isinstance(e, sp.Basic) else e, means)
                    for e in chain])
    return out


def _batch_value(point, samples, e, means):
    d = point.d
    mean = (lambda xs: sum(xs) / len(xs)) if d.reduction == "mean" else sum    # noqa: E731 - the reduction
    L = sp.Symbol("L")
    if isinstance(e, sp.Sum):
        (i, lo, hi), = e.limits
        body = e.function.replace(lambda x: isinstance(x, PerSample), lambda x: x.args[0])
        C = point.g.symbol(d.loss_name)

        # ∂Cᵢ/∂θ is the sample's whole gradient (every path), not one edge of it
        return sum(s.sample_slope(body, C) for s in samples[int(lo) - 1:int(hi)])
    # a one-sample graph's penalty P is not in its cost C: L = reduction of the Cᵢ + P
    penalty = point.g.penalty
    if e == PENALTY:
        return point.value(penalty, "batch")
    if isinstance(e, Partial) and e.args[0] == PENALTY:      # ∂P/∂θ, the penalty's own derivative
        return point.value(d.penalty_gradient(e.args[1].name), "batch")
    if e == L:                      # the graph's reduction of the samples' costs
        costs = mean([s.value(s.g.symbol(d.loss_name), "batch") for s in samples])
        return costs + point.value(penalty, "batch") if penalty != 0 else costs
    if isinstance(e, Partial) and e.args[0] == L:
        # ∂L/∂v: the samples' ∂Cᵢ/∂v reduced as L reduces the Cᵢ
        # (a parameter: the whole gradient; a node q: the edge ∂C/∂q, the cost's own dependence on q)
        name = e.args[1].name
        if name in d.params:
            C = point.g.symbol(d.loss_name)
            costs = mean([s.cost_gradient(name, C) for s in samples])
            return costs + point.value(d.penalty_gradient(name), "batch") if penalty != 0 else costs
        partial = real_diff(point.g.expr(d.loss_name), e.args[1])
        return mean([s.value(partial, "batch") for s in samples])
    if isinstance(e, (sp.Add, sp.Mul, sp.Pow)) and e.has(sp.Sum, L, PerSample, PENALTY):
        parts = [_batch_value(point, samples, a, means) for a in e.args]
        if isinstance(e, sp.Pow):
            return parts[0] ** parts[1]
        out = parts[0]
        for v in parts[1:]:
            out = out + v if isinstance(e, sp.Add) else out * v
        return out
    if e == SAMPLE:
        raise ValueError("a sample index outside a sum")
    return point.value(e, "batch")


# ------------------------------------------------------------------ one sample's row of a matrix graph
def _row_value(point, e, means, r):
    """A line about row r + 1: sample i (or j: printing.sample_index) of a batch (Ŷ_{ik}, Y_{ik}, C_i) or row r of a one-sample
    graph's sample (c_r), read off the graph's values there."""
    e = e.xreplace({sp.Symbol(n, positive=True, integer=True): sp.Integer(r + 1) for n in (*SAMPLE_LETTERS, "r")})
    # a network certified at small widths (certificate._narrowed): Σₖ runs over its outputs as they are
    widths = {np.atleast_2d(value_of(v, point.env, point.rows)).shape[1]
              for k, v in means.items() if isinstance(k, sp.Symbol) and k.name in ("Yhat", "Y")}
    if len(widths) == 1:
        e = e.replace(lambda x: isinstance(x, sp.Sum), lambda x: sp.Sum(
            x.function, (x.limits[0][0], x.limits[0][1], min(int(x.limits[0][2]), max(widths)))))
    e = e.doit()
    for k, v in means.items():
        if isinstance(k, sp.core.function.FunctionClass):
            e = e.replace(k, v)

    def array(name):
        return np.atleast_2d(value_of(means[name], point.env, point.rows))

    def entry(x):
        arr, idx = array(x.base.label), [int(j) - 1 for j in x.indices]
        if len(idx) == 2:                           # Ŷ_{ik}
            return sp.Float(arr[idx[0], idx[1]], 30)
        # one index: output k of Nielsen's column for this sample, or C_i of the cost column
        return sp.Float(arr[r, idx[0]] if x.base.label.name.startswith("col_") else arr[idx[0], 0], 30)
    e = e.replace(lambda x: isinstance(x, sp.Indexed), entry)
    e = e.xreplace({s: sp.Float(array(s)[r, 0], 30) for s in e.free_symbols if s in means})   # Nielsen's C_x
    return complex(sp.N(e, 30))
