"""The numbers a document reports: activation suprema and kinks, the
vanishing-gradient bound (:mod:`.vanishing`), the finite-difference check and operation counts.

Every function reads the one :class:`~symback.engine.Derivation`; what
differs between a scalar and a matrix graph is only how an expression is
evaluated (exact SymPy numbers, or NumPy arrays computed from the
definitions), decided by the expressions themselves and done by the one
evaluator, :mod:`symback.evaluate` (its functions are importable from here too).
"""
from __future__ import annotations

import functools
import math
import random
import weakref

import numpy as np
import sympy as sp
from sympy.calculus.util import maximum, minimum

# the one evaluator (exact | NumPy); its names stay importable from here, where documents find them
from ..evaluate import evaluate, inert, numeric, numpy_adjoints, numpy_forward, numpy_gradients, value_of
from ..matrix import BATCH, RowCost, explicit, is_matrix
from ..printing import Tex, latex, number, prime
from ..budget import within
from .kinkslope import entry_differences, kink_rows
from .vanishing import upper, vanishing    # the bound's own module; both stay importable from here

__all__ = ["derivative_sup", "kinks", "vanishing", "verify", "cost", "numpy_forward", "numeric",
           "random_values", "upper", "evaluate", "inert", "value_of",
           "numpy_adjoints", "numpy_gradients"]

MAX_EXACT_SUP_OPS = 14     # longer derivatives get their supremum numerically (nsolve on f'' = 0)
MAX_NAIVE_OPS = 4000       # the naive derivative is skipped above this loss size
MAX_NAIVE_WORK = 30_000    # ... or when the loss's size times the number of parameter entries is above this
MAX_COUNTED_ENTRIES = 60   # matrix graphs: operations are counted entry by entry up to this size
COST_SECONDS = 10          # ... and for this long: a transformer block's loss written out entry by
                           # entry (softmax, layer norm) can take SymPy minutes, for one optional section
VERIFY_DIGITS, VERIFY_H = 40, sp.Rational(1, 10 ** 12)
MATRIX_H = 1e-6
EXACT_VERIFY_ENTRIES = 2000  # matrix graphs: formulas evaluated exactly by SymPy up to this many entries
VERIFY_SAMPLES = 12          # ... above it, this many entries of each parameter are differenced
VERIFY_MAX_ENTRIES = 10**7   # ... and above this many (80 MB of float64) the check is left out:
                             # random values for a 10⁹-weight layer take minutes and gigabytes
SUP_SECONDS = 2.0            # sp.solve's time for an activation's critical points


# ------------------------------------------------------------ activations
@functools.lru_cache(maxsize=None)
def derivative_sup(cls) -> tuple[sp.Expr, bool]:
    """(sup over real z of |f'(z)|, exact?) computed by SymPy for an activation class.

    Each branch of a piecewise derivative is maximised and minimised on
    its own interval (``sympy.calculus.util.maximum``); when SymPy cannot
    find the critical points in closed form they are found numerically
    from f'' = 0 (``nsolve``) and the limits at ±∞.
    """
    z = sp.Symbol("z", real=True)
    app = cls(z)
    d = cls.derivative(*app.args).rewrite(sp.exp)
    pieces = d.as_expr_set_pairs(sp.S.Reals) if isinstance(d, sp.Piecewise) else [(d, sp.S.Reals)]
    best, exact = sp.S.Zero, True
    for e, dom in pieces:
        if dom is sp.S.EmptySet:
            continue
        if not e.has(z):
            best = sp.Max(best, sp.Abs(e))
            continue
        try:
            if sp.count_ops(e) > MAX_EXACT_SUP_OPS:
                # SymPy's critical-point search can run for minutes on long expressions
                raise NotImplementedError
            hi, lo = _critical_extremes(e, z, dom) or (maximum(e, z, dom), minimum(e, z, dom))
        except (NotImplementedError, ValueError, TypeError):
            hi, lo = _numeric_extremes(e, z, dom)
            exact = False
        best = sp.Max(best, sp.Abs(hi), sp.Abs(lo))
    return sp.nsimplify(best) if exact else best, exact


def _critical_extremes(e, z, dom):
    """(max, min) of e on the real line from its critical points (sp.solve) and limits, or None.

    Several times faster than SymPy's function_range; kept only when a dense grid
    of values agrees (sp.solve may miss a root), else None and function_range decides.
    """
    if dom != sp.S.Reals:
        return None
    try:
        crit = within(SUP_SECONDS, lambda: sp.solve(sp.diff(e, z), z), default=None)
        if crit is None:
            return None
        vals = [e.subs(z, c) for c in crit if c.is_real] + _limits_at_infinity(e, z)
        if not all(v.is_real and v.is_finite for v in vals):
            return None
        grid = np.linspace(-40, 40, 8001)
        with np.errstate(all="ignore"):
            y = np.asarray(sp.lambdify(z, e, "numpy")(grid), dtype=float) * np.ones_like(grid)
    except (NotImplementedError, ValueError, TypeError, NameError):
        return None
    hi, lo = sp.Max(*vals), sp.Min(*vals)
    y = y[np.isfinite(y)]
    if y.size and (y.max() > float(hi) + 1e-9 or y.min() < float(lo) - 1e-9):
        return None
    return hi, lo


def _limits_at_infinity(e, z) -> list:
    """[lim e at +∞, lim e at −∞]; with z = log u when that makes e rational in u (σ′, tanh′,
    softplus′ written with exponentials): the limits at u → ∞, 0⁺ of a rational function are
    immediate, where SymPy's gruntz takes most of a second for each (once per process)."""
    u = sp.Dummy("u", positive=True)
    eu = e.subs(z, sp.log(u))
    if eu.is_rational_function(u):
        eu = sp.cancel(eu)
        return [sp.limit(eu, u, sp.oo), sp.limit(eu, u, 0, "+")]
    return [sp.limit(e, z, sp.oo), sp.limit(e, z, -sp.oo)]


def _numeric_extremes(e, z, dom):
    # a kink's DiracDelta is zero at every grid point: only the function's values count
    e = e.replace(lambda x: isinstance(x, sp.DiracDelta), lambda x: sp.S.Zero)
    f = sp.lambdify(z, e, "mpmath")
    lo_end = dom.inf if dom.inf.is_finite else -40
    hi_end = dom.sup if dom.sup.is_finite else 40
    grid = [lo_end + (hi_end - lo_end) * k / 400 for k in range(401)]
    vals = [sp.Float(f(sp.Float(x))) for x in grid]
    cands = list(vals) + [sp.limit(e, z, dom.inf, "+"), sp.limit(e, z, dom.sup, "-")]
    de = sp.diff(e, z).replace(lambda x: isinstance(x, sp.DiracDelta), lambda x: sp.S.Zero)
    for k in (max(range(len(vals)), key=vals.__getitem__), min(range(len(vals)), key=vals.__getitem__)):
        try:
            root = sp.nsolve(de, z, grid[k])
            if dom.contains(root) is sp.true:
                cands.append(e.subs(z, root).evalf())
        except (ValueError, ZeroDivisionError, TypeError, NameError):
            pass        # no stationary point found from there: the grid's values stand
    cands = [c for c in cands if c.is_real]
    return max(cands), min(cands)


def kinks(cls) -> list[dict]:
    """Points where a piecewise derivative jumps, with the value symback uses there."""
    z = sp.Symbol("z", real=True)
    app = cls(z)
    d = cls.derivative(*app.args)
    if not isinstance(d, sp.Piecewise):
        return []
    points = set()
    for _, cond in d.args:
        for rel in cond.atoms(sp.core.relational.Relational):
            points |= set(sp.solve(sp.Eq(rel.lhs, rel.rhs), z))
    out = []
    for b in sorted(points):
        # one-sided values: pick the branch at b ∓ ε, then let ε → 0 (SymPy's limit of a
        # Piecewise does not always take the side into account)
        eps = sp.Symbol("epsilon", positive=True)
        left, right = (sp.limit(d.subs(z, b + s * eps), eps, 0, "+") for s in (-1, 1))
        at = d.subs(z, b)
        if left != right:
            side = "right-hand" if at == right else ("left-hand" if at == left else "chosen")
            eq = sp.Eq(prime(cls, (b, *app.args[1:])), at, evaluate=False)
            out.append({"at": Tex(latex(b)), "equation": Tex(latex(eq)),
                        "left": Tex(latex(left)), "right": Tex(latex(right)), "side": side})
    return out


def param_entries(d) -> int:
    """How many numbers a matrix graph's parameters hold (Python ints: no overflow)."""
    total = 0
    for p in d.params:
        size = 1
        for k in d.graph.symbol(p).shape:
            size *= int(k) if k != BATCH else 1
        total += size
    return total


def random_values(d, seed: int, rows: int = 3) -> dict:
    """Random inputs, targets and parameters for a matrix graph (targets fit the loss: one-hot, in (0, 1))."""
    rng, g = np.random.default_rng(seed), d.graph
    cost = g.expr(g.cost_name) if getattr(g, "cost_name", None) else None
    if cost is None:            # a one-sample graph: its row costs are a node of their own
        cost = next((g.expr(n) for n in g.node_names if isinstance(g.expr(n), RowCost)), None)
    out = {}
    for n in g.input_names + g.target_names + g.param_names:
        shape = tuple(rows if k == BATCH else int(k) for k in g.symbol(n).shape)
        if g.kind(n) == "target" and isinstance(cost, RowCost) and cost.loss.name == "cross_entropy":
            out[n] = np.eye(shape[1])[rng.integers(0, shape[1], size=shape[0])]
        elif g.kind(n) == "target" and isinstance(cost, RowCost) and cost.loss.name == "binary_cross_entropy":
            out[n] = rng.uniform(0.05, 0.95, size=shape)
        else:
            out[n] = rng.normal(scale=0.8 if g.kind(n) != "target" else 1.0, size=shape)
    return out


# ----------------------------------------------------------- verification
def verify(d, values, seed) -> dict:
    """Each gradient from the formulas next to a central finite difference of the loss."""
    if not d.layout.worked_in_numbers:
        return _verify_matrix(d, values, seed)
    g = d.graph
    names = g.input_names + g.target_names + g.param_names
    if values:
        point, source = {n: values[n] for n in names}, "the values of the worked example"
        rows = _verify_rows(d, point)
    else:
        rng = random.Random(seed)
        for _ in range(20):     # a point where some gradient is nonzero (ReLU can switch all off)
            point = {n: sp.Rational(round(rng.uniform(0.05, 0.95) if g.kind(n) == "target"
                                          else rng.uniform(-1, 1), 3)).limit_denominator(1000)
                     for n in names}
            rows = _verify_rows(d, point)
            if any(r.get("value") for r in rows):
                break
        source = f"random values (seed {seed})"
    for r in rows:
        r.pop("value", None)
    point_tex = [{"name": Tex(latex(g.symbol(n))), "value": Tex(number(point[n]))} for n in names]
    worst = max((r["err"] for r in rows if "err" in r), default=None)
    return {"rows": rows, "point": point_tex, "source": source, "digits": VERIFY_DIGITS,
            "h": Tex(number(VERIFY_H)), "worst": Tex(number(worst, 2)) if worst is not None else None,
            "matrices": False, "kinks": False, "penalty": False}   # a scalar graph's L is its own node


def _verify_rows(d, point) -> list[dict]:
    g, digits, h = d.graph, VERIFY_DIGITS, VERIFY_H
    env = {g.symbol(n): sp.Float(v, digits) for n, v in point.items()}
    loss = g.unrolled()[d.loss_name]
    rows = []
    for p in d.params:
        sym = g.symbol(p)
        formula = sp.N(d.gradient(p, form="expanded").xreplace(env), digits)
        plus = sp.N(loss.xreplace({**env, sym: env[sym] + h}), digits)
        minus = sp.N(loss.xreplace({**env, sym: env[sym] - h}), digits)
        fd = (plus - minus) / (2 * h)
        if not (formula.is_real and fd.is_real):
            rows.append({"name": Tex(latex(sym)), "formula": Tex(r"\text{--}"),
                         "fd": Tex(r"\text{--}"), "error": Tex(r"\text{not real here}")})
            continue
        here = sp.N(loss.xreplace(env), digits)
        left, right = (here - minus) / h, (plus - here) / h
        if abs(right - left) > 1e-6 * max(1, abs(left), abs(right)):
            # a kink (ReLU at 0): the central difference averages two slopes; the formula takes the
            # function's convention there (ReLU′(0) = 1), so the one-sided differences are shown
            rows.append({"name": Tex(latex(sym)), "formula": Tex(number(formula, 10)),
                         "fd": Tex(rf"{number(left, 10)} \text{{ (left)}}, {number(right, 10)} \text{{ (right)}}"),
                         "error": Tex(r"\text{a kink: one-sided}"), "value": formula})
            continue
        # relative to the larger value, absolute below 1: a zero gradient next to a
        # difference of 1e-41 is exact, not a relative error of 1
        err = float(abs(formula - fd) / max(abs(formula), abs(fd), 1))
        rows.append({"name": Tex(latex(sym)), "formula": Tex(number(formula, 10)),
                     "fd": Tex(number(fd, 10)), "error": Tex(number(err, 2)), "err": err,
                     "value": formula})
    return rows


def _verify_matrix(d, values, seed) -> dict:
    """The formulas' gradients against central differences of a NumPy loss from the definitions.

    Up to EXACT_VERIFY_ENTRIES parameter entries the formulas themselves are
    evaluated with NumPy (:func:`numpy_gradients`) and every entry is
    differenced; above, the formulas are evaluated by the NumPy code printed
    from them and VERIFY_SAMPLES entries of each parameter, drawn with the
    seed, are differenced.
    """
    if values is None:
        if param_entries(d) > VERIFY_MAX_ENTRIES:
            return None         # the document leaves the section out, as for the cost count
        values = random_values(d, seed)
        # a one-sample graph's data are one sample (a sequence, an image), whatever the rows
        rows = "3 samples" if any(BATCH in d.graph.shape(n) for n in d.graph.input_names) else "one sample"
        source = f"random values (seed {seed}, {rows})"
    else:
        source = "the values of the worked example"
    g = d.graph
    entries = sum(np.asarray(values[p]).size for p in d.params)
    sampled = entries > EXACT_VERIFY_ENTRIES
    if sampled:
        from ..compile import compile as compile_model
        model = compile_model(d, "float64")
        arrays = {p: np.array(values[p], dtype=float) for p in d.params}
        X = np.hstack([np.atleast_2d(values[n]) for n in g.input_names])
        Y = np.hstack([np.atleast_2d(values[n]) for n in g.target_names])
        grads = {p: np.atleast_2d(v) for p, v in model.grad(X, Y, arrays).items()}
    else:
        grads = numpy_gradients(d, values)
    # a one-sample graph's formulas give ∂C/∂θ; the document states ∂L/∂θ = ∂C/∂θ + ∂P/∂θ at one
    # sample (a penalty-only W's row read 0 and 0 beside ∂L/∂W = W/5): the table checks L's
    penalised = bool(getattr(g, "penalty", 0))
    env = {g.symbol(n): np.atleast_2d(np.asarray(values[n], dtype=float)) for n in g.param_names}
    extra = {p: np.atleast_2d(np.asarray(value_of(d.penalty_gradient(p), env, 1), dtype=float)) * np.ones_like(env[g.symbol(p)])
             for p in d.params} if penalised else {}
    rng = np.random.default_rng(seed)
    rows, worst = [], 0.0
    for p in d.params:
        base = np.atleast_2d(np.asarray(values[p], dtype=float))
        where = list(np.ndindex(base.shape))
        if sampled and len(where) > VERIFY_SAMPLES:
            where = [where[i] for i in sorted(rng.choice(len(where), VERIFY_SAMPLES, replace=False))]
        # (the compiled model's grad, when sampled, is ∂L/∂θ already)
        full = np.atleast_2d(np.asarray(grads[p], dtype=float)) + extra[p] if penalised and not sampled \
            else np.asarray(grads[p])
        gp = np.array([full[idx] for idx in where])
        diffs = entry_differences(d, values, p, where, MATRIX_H, extra.get(p))
        rows += kink_rows(g.symbol(p), gp, diffs["kinks"])       # an entry on a kink: a row of its own
        smooth = [k for k in range(len(where)) if k not in {kink[0] for kink in diffs["kinks"]}]
        gp, fd = gp[smooth], diffs["fd"][smooth]
        err = float(np.linalg.norm(gp - fd) / max(np.linalg.norm(fd), np.linalg.norm(gp), 1.0))
        worst = max(worst, err)
        rows.append({"name": Tex(latex(g.symbol(p))), "formula": Tex(number(np.linalg.norm(gp), 8)),
                     "fd": Tex(number(np.linalg.norm(fd), 8)), "error": Tex(number(err, 2)), "err": err})
    return {"rows": rows, "point": [], "source": source, "digits": 16, "h": Tex(number(MATRIX_H)),
            "worst": Tex(number(worst, 2)), "matrices": True, "kinks": len(rows) > len(d.params),
            # a max-pool's tie is a kink too: the prose says which convention the slope there takes
            "pool": any(getattr(d.graph.expr(n), "op", None) == "maxpool" for n in d.graph.node_names),
            "sampled": VERIFY_SAMPLES if sampled else None, "penalty": penalised}


# ------------------------------------------------------------------- cost
_COST: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def cost(d) -> dict:
    """Operation counts, computed once: the loss differentiated naively vs the chain program (and after cse)."""
    if d not in _COST:
        stopped = {"naive": None, "chain": None, "cse": None, "ratio": None, "saves": False, "loss_ops": None,
                   "note": None}     # chain None: the section is left out
        _COST[d] = within(COST_SECONDS, lambda: _cost(d), default=stopped)
    return _COST[d]


def _cost(d) -> dict:
    g = d.graph
    leaves = g.input_names + g.target_names + g.param_names
    if not d.layout.worked_in_numbers:
        entries = sum(math.prod(d.layout.param_shape(p)) for p in g.param_names)
        if entries > MAX_COUNTED_ENTRIES:
            return {"naive": None, "chain": None, "cse": None, "ratio": None, "saves": False, "loss_ops": None,
                    "note": Tex(f"The network has {entries} parameter entries; counting operations entry "
                                "by entry was skipped (it is shown for small networks).")}
    env = {g.symbol(n): _entries(g.symbol(n), n) for n in leaves}
    flat = lambda e: list(e) if isinstance(e, sp.MatrixBase) else [e]   # noqa: E731
    # the chain program: each node and adjoint in terms of the previous named ones
    named, program = dict(env), []
    prog = d.program()
    for sym, e in list(prog.forward) + list(prog.backward):
        program += flat(_explicit(e, named))
        named[sym] = _entries(sym, f"v{len(named)}")
    chain_ops = sum(sp.count_ops(e) for e in program)
    reps, reduced = sp.cse(program)
    cse_ops = sum(sp.count_ops(e) for _, e in reps) + sum(sp.count_ops(e) for e in reduced)
    full = dict(env)
    for sym, e in prog.forward:
        full[sym] = _explicit(e, full)
    loss = full[g.symbol(d.loss_name)]
    naive, note = None, None
    n_entries = sum(len(flat(env[g.symbol(p)])) for p in g.param_names)
    # differentiating the written-out loss once per entry is what is slow: bound that work
    if sp.count_ops(loss) > MAX_NAIVE_OPS or sp.count_ops(loss) * n_entries > MAX_NAIVE_WORK:
        pass        # too large to differentiate written out: the naive row is left out
    else:
        naive = sp.count_ops(loss) + sum(sp.count_ops(sp.diff(loss, s))
                                         for p in g.param_names for s in flat(env[g.symbol(p)]))
    return {"naive": naive, "chain": chain_ops, "cse": cse_ops, "note": note,
            "loss_ops": sp.count_ops(loss) if naive is not None else None,
            "ratio": Tex(number(sp.Rational(naive, cse_ops), 3)) if naive and cse_ops else None,
            "saves": bool(naive and cse_ops and naive > cse_ops)}


def _entries(sym, name):
    """A scalar stays itself; a matrix becomes explicit symbols (one sample: the batch size is 1)."""
    if not is_matrix(sym):
        return sym if isinstance(name, str) and sym.name == name else sp.Symbol(name)
    r, c = (1 if k == BATCH else int(k) for k in sym.shape)
    return sp.ImmutableMatrix(r, c, lambda i, j: sp.Symbol(f"{name}_{i}_{j}"))


def _explicit(e, table):
    e = inert(e).xreplace(table)
    if isinstance(e, sp.MatrixBase) or is_matrix(e) or e.has(sp.Trace, sp.MatrixSymbol, sp.OneMatrix):
        r = explicit(e, 1)
        return r.subs(BATCH, 1) if hasattr(r, "subs") else r
    return e
