"""A matrix graph's gradient where its point sits on a kink (ReLU's pre-activation exactly 0).

There the central difference averages the two one-sided slopes, which no convention gives, so
it is no oracle: the slope is SymPy's derivative of the loss written out entry by entry, every
activation as its own definition (ReLU = 0 for z < 0, z otherwise: ReLU′(0) = 1), a max-pool's
window as its first arg-max (the engine's routing and PyTorch's: SymPy's Max has no order, and its
derivative at a tie is ½ to each, the two slopes' average again), at the exact binary values of the
point's floats.  This is what :class:`~symback.document.points.NumberPoint`
does for a scalar graph; it never reads the engine's chain of factors.
"""
from __future__ import annotations

import numpy as np
import sympy as sp

from ..evaluate import inert, numpy_forward, value_of
from ..functions import Activation
from ..image import ImageMap, _window
from ..matrix import explicit, is_matrix
from ..printing import Tex, latex, number

__all__ = ["one_sided", "sympy_slope", "entry_differences", "kink_rows"]

KINK_RTOL = 1e-6        # one-sided slopes this far apart (relative): a kink, or curvature (h/10 tells)


def penalty_value(d, values: dict) -> float:
    """A one-sample graph's penalty P at `values` (0 without one; a batch graph's is inside its L)."""
    g = d.graph
    if not getattr(g, "penalty", 0):
        return 0.0
    env = {g.symbol(n): np.atleast_2d(np.asarray(values[n], dtype=float)) for n in g.param_names}
    return float(np.sum(value_of(g.penalty, env, 1)))


def one_sided(d, values: dict, p: str, step: np.ndarray, h: float, here: float | None = None,
              penalty: bool = False) -> tuple[float, float, float, bool]:
    """(left, central, right) differences of the loss along `step` in parameter p, and whether
    the point is on a kink there.

    A smooth loss's one-sided slopes differ by h·L″ (and rounding), which a tenth of h shrinks
    tenfold; a kink's differ by its jump at every h.  The test never reads the gradient under
    check: a gradient that is the two slopes' average (what the central difference gives) fails."""
    base = np.atleast_2d(np.asarray(values[p], dtype=float))

    def loss(t):
        moved = {**values, p: base + t * step}
        return float(np.sum(numpy_forward(d, moved)[d.loss_name])) + (penalty_value(d, moved) if penalty else 0.0)

    here = loss(0.0) if here is None else here      # the point's own loss (the same for every entry)

    def sides(t):
        up, down = loss(t), loss(-t)
        return (here - down) / t, (up - down) / (2 * t), (up - here) / t
    left, central, right = sides(h)
    # rounding moves a one-sided slope by about eps·|L|/h: a large loss's noise is no kink
    noise = 64 * np.finfo(float).eps * max(1.0, abs(here)) / h
    kink = abs(right - left) > max(KINK_RTOL * max(1.0, abs(left), abs(right)), noise)
    if kink:
        # at h/10 a kink's gap stays, curvature's shrinks tenfold and rounding's grows tenfold:
        # a gap about the rounding's size at h (a transformer's loss of 1,334) is no kink
        near_left, _, near_right = sides(h / 10)
        near, gap = abs(near_right - near_left), abs(right - left)
        kink = gap / 2 < near < 2 * gap and near > 10 * noise
    return left, central, right, kink


def sympy_slope(d, values: dict, p: str, step: np.ndarray, rows: int) -> float:
    """d/ds of the loss at θ_p + s·step, s = 0: SymPy's derivative of the written-out loss."""
    g, s = d.graph, sp.Dummy("s", real=True)
    exact = lambda v: sp.Rational(float(v))      # noqa: E731  (the float's exact binary value)
    env = {}
    for n in g.input_names + g.target_names + g.param_names:
        sym, v = g.symbol(n), np.asarray(values[n], dtype=float)
        if not is_matrix(sym):
            env[sym] = exact(v.reshape(-1)[0]) + (s * exact(np.ravel(step)[0]) if n == p else 0)
            continue
        v = np.atleast_2d(v)
        moved = np.atleast_2d(step) if n == p else np.zeros_like(v)
        env[sym] = sp.ImmutableMatrix(v.shape[0], v.shape[1],
                                      lambda i, j: exact(v[i, j]) + s * exact(moved[i, j]))
    for n in g.order:
        if n in g._expr:
            e = g.expr(n)
            pool = isinstance(e, ImageMap) and e.op == "maxpool"
            env[g.symbol(n)] = (_first_max_pool(explicit(inert(e.arg).xreplace(env), rows), e.geometry) if pool
                                else explicit(inert(e).xreplace(env), rows))
    loss = env[g.symbol(d.loss_name)]
    loss = sp.Add(*loss) if isinstance(loss, sp.MatrixBase) else loss
    loss = loss.replace(lambda x: isinstance(x, Activation), lambda x: x.definition(*x.args))
    slope = sp.N(sp.diff(loss, s).subs(s, 0).doit(), 30)
    if not (slope.is_real and slope.is_finite):
        raise ValueError(f"∂L/∂{p} at a kink has no value: {slope}")
    return float(slope)


def _first_max(entries) -> sp.Expr:
    """A window's maximum written as its first arg-max: entry n where it is above every entry
    before it and at least every entry after it (so SymPy's derivative at a tie is that entry's)."""
    *head, last = entries
    return sp.Piecewise(*[(e, sp.And(*[e > f for f in entries[:n]], *[e >= f for f in entries[n + 1:]]))
                          for n, e in enumerate(head)], (last, True))


def _first_max_pool(a, geometry) -> sp.ImmutableMatrix:
    """maxpool(a) entry by entry (channels × windows, row by row), each window by :func:`_first_max`."""
    Ho, Wo = geometry.out
    return sp.ImmutableMatrix([[_first_max([a[c, q] for q in _window(geometry, oy, ox)])
                                for oy in range(Ho) for ox in range(Wo)] for c in range(geometry[0])])


def entry_differences(d, values: dict, p: str, where: list, h: float, penalty: np.ndarray | None = None) -> dict:
    """Central differences of the loss at the entries `where` of parameter p, and the entries on
    a kink among them: {"fd": array, "kinks": [(k, index, left, right, SymPy's slope)]}.

    A kink's central difference is no oracle (the average of two slopes): its entry is reported
    with both one-sided differences, and its gradient checked against SymPy's slope instead.
    `penalty` (a one-sample graph's ∂P/∂p): the loss differenced is then L = C + P, its slope
    at a kink SymPy's slope of C plus that (P is smooth)."""
    base = np.atleast_2d(np.asarray(values[p], dtype=float))
    with_p = penalty is not None
    here = float(np.sum(numpy_forward(d, values)[d.loss_name])) + (penalty_value(d, values) if with_p else 0.0)
    fd, kinks = np.zeros(len(where)), []
    for k, idx in enumerate(where):
        step = np.zeros(base.shape)
        step[idx] = 1.0
        left, fd[k], right, kink = one_sided(d, values, p, step, h, here, with_p)
        if kink:
            slope = sympy_slope(d, values, p, step, _rows(d, values)) + (float(penalty[idx]) if with_p else 0.0)
            kinks.append((k, idx, left, right, slope))
    return {"fd": fd, "kinks": kinks}


def _rows(d, values) -> int:
    """The batch size of the point's values (a one-sample graph's data: 1)."""
    g = d.graph
    return np.atleast_2d(np.asarray(values[g.input_names[0]])).shape[0] if g.input_names else 1


def kink_rows(sym, grad: np.ndarray, kinks: list) -> list[dict]:
    """The verification table's row of each entry on a kink, as a scalar graph's: the formula's
    value next to both one-sided differences; its error is against SymPy's slope there."""
    rows = []
    for k, idx, left, right, slope in kinks:
        err = float(abs(grad[k] - slope) / max(abs(grad[k]), abs(slope), 1.0))
        rows.append({"name": Tex(r"\left(" + latex(sym) + r"\right)_{" + ",".join(str(i + 1) for i in idx) + "}"),
                     "formula": Tex(number(grad[k], 8)), "err": err,
                     "fd": Tex(rf"{number(left, 8)} \text{{ (left)}}, {number(right, 8)} \text{{ (right)}}"),
                     "error": Tex(r"\text{a kink: }" + number(err, 2))})       # the prose: against SymPy's slope
    return rows
