"""Code generation: a derivation's Program printed as a straight-line NumPy module.

Nothing here knows a derivative.  The pipeline reads one
:class:`~symback.engine.Program`, for scalar and matrix graphs alike:

1. **program**: forward assignments, adjoints, gradients, loss;
2. **lowering** (:mod:`symback.lowering`): array statements, element-wise
   formulas apart from matrix products and sums;
3. **rewrites** (here): into numerically safe, equal forms, each proved by
   SymPy (``STABLE_IDENTITIES``), forward values reused by name, activations
   through their overflow-safe forms;
4. **passes** (:mod:`symback.passes`): per function, the statements it needs, copy
   propagation, the library's kernels, :func:`sympy.cse`, scheduling, fused updates and
   products, each over the statement list;
5. **text** (:mod:`symback.straightline`): in-place buffers, each statement printed by a
   :class:`~symback.printing.numpy.NumpyPrinter` (another printer and module prefix give
   another array library), nothing rewritten after.

The result is the text of a standalone module that imports NumPy only:
``predict``, ``forward``, ``backward``, ``loss``, ``grad``, ``step`` and
``init``.  :func:`symback.module.codegen_module` returns it; ``symback.compile`` loads it.
"""
from __future__ import annotations

import builtins
import keyword
from itertools import count

import sympy as sp

from .engine import Adjoint, AdjointMatrix, Derivation
from .errors import SymbackError
from .functions import sigmoid, softplus
from .proofs import proved_equal
from .lowering import EXPR_OPS, Lowering, Stmt
from .matrix import BATCH, activation_of
from .printing.numpy import NumpyPrinter, lower
from .straightline import FunctionSpec, build_function

__all__ = ["NumpyPrinter", "Namer", "check_dtype", "stabilize", "realify", "scale_seed",
           "STABLE_IDENTITIES", "STABLE_QUOTIENTS"]

DTYPES = ("float64", "float32")

# ------------------------------------------------------------------ stable rewrites
_u = sp.Symbol("u", real=True)
#: log cosh u, written so that nothing overflows: cosh itself does past |u| ≈ 710.
_LOGCOSH = sp.Abs(_u) + sp.log(1 + sp.exp(-2 * sp.Abs(_u))) - sp.log(2)
#: Equal forms used in place of ones that overflow, each proved by SymPy below.
STABLE_IDENTITIES = (
    (sp.log(sigmoid(_u)), -softplus(-_u)),          # log σ(u)       = −softplus(−u)
    (sp.log(1 - sigmoid(_u)), -softplus(_u)),       # log(1 − σ(u))  = −softplus(u)
    (sp.log(1 + sp.exp(_u)), softplus(_u)),         # log(1 + eᵘ)    = softplus(u)
    (sp.log(sp.cosh(_u)), _LOGCOSH),                # log cosh u     = |u| + log(1 + e^(−2|u|)) − log 2
)
#: Quotients num(u)/den(u) that are ∞/∞ for large u, as (num, den, equal bounded form).
#: They are the derivatives of the functions above, so they appear in backward passes.
STABLE_QUOTIENTS = (
    (sp.exp(_u), 1 + sp.exp(_u), sigmoid(_u)),     # eᵘ/(1 + eᵘ)  = σ(u)     (log(1 + eᵘ))'
    (sp.sinh(_u), sp.cosh(_u), sp.tanh(_u)),       # sinh u/cosh u = tanh u  (log cosh u)'
)
for _lhs, _rhs in STABLE_IDENTITIES + tuple((n / d, q) for n, d, q in STABLE_QUOTIENTS):
    if not proved_equal(_lhs, _rhs, _u):   # proved once, at import: never trusted
        raise SymbackError(f"internal: could not prove the stable rewrite {_lhs} = {_rhs}")
_W = sp.Wild("w")


def _sigmoid_arg(e: sp.Expr, defs: dict):
    """u when e is σ(u), directly or as a node symbol defined as σ(u); else None."""
    e = defs.get(e, e)
    return e.args[0] if isinstance(e, sigmoid) else None


def stabilize(expr: sp.Expr, defs: dict | None = None) -> sp.Expr:
    """Rewrite log σ(u), log(1 − σ(u)), log(1 + eᵘ), log cosh u, eᵘ/(1 + eᵘ) and sinh/cosh.

    ``defs`` maps node symbols to their definitions, so that ``log(ŷ)`` with
    ŷ = σ(z) is recognised too.  Each rewrite is one of ``STABLE_IDENTITIES``
    or ``STABLE_QUOTIENTS``.
    """
    defs = defs or {}

    def rule(e):
        arg = e.args[0]
        u = _sigmoid_arg(arg, defs)
        if u is not None:
            return -softplus(-u)
        u = _sigmoid_arg(sp.expand(1 - arg), defs)
        if u is not None:
            return -softplus(u)
        rest = arg - 1
        if isinstance(rest, sp.exp) and not rest.args[0].is_extended_nonpositive:
            return softplus(rest.args[0])     # (when u <= 0, log(1 + eᵘ) is already safe)
        if isinstance(arg, sp.cosh):
            return _LOGCOSH.xreplace({_u: arg.args[0]})
        return e

    expr = expr.replace(lambda e: isinstance(e, sp.log), rule)
    return expr.replace(lambda e: e.is_Mul, _stable_quotient)


def _stable_quotient(mul: sp.Mul) -> sp.Mul:
    """mul with each pair of factors num(u), den(u)⁻¹ of ``STABLE_QUOTIENTS`` replaced by its form."""
    factors = list(mul.args)
    for f in factors:
        if not (f.is_Pow and f.exp == -1):
            continue
        for num, den, form in STABLE_QUOTIENTS:
            m = f.base.match(den.xreplace({_u: _W}))
            if not m or _W not in m or den.xreplace({_u: m[_W]}) != f.base:
                continue
            n = num.xreplace({_u: m[_W]})
            if n in factors:
                factors.remove(f)
                factors.remove(n)
                return _stable_quotient(sp.Mul(*factors, form.xreplace({_u: m[_W]})))
    return mul


def realify(expr: sp.Expr) -> sp.Expr:
    """Drop re()/im() that SymPy adds when differentiating |x| of a symbol not known real.

    Every quantity in a network is real, so re(x) = x and im(x) = 0.
    """
    if not expr.has(sp.re, sp.im):
        return expr
    expr = expr.replace(lambda e: isinstance(e, sp.re), lambda e: e.args[0])
    expr = expr.replace(lambda e: isinstance(e, sp.im), lambda e: sp.S.Zero)
    return expr.doit()


def _risky(expr: sp.Expr, values: set) -> set:
    """The computed factors expr divides by (it can blow up at saturation), signs dropped."""
    if not expr.has(sp.Pow):
        return set()
    _, den = sp.fraction(sp.together(expr))
    out = set()
    for f in sp.Mul.make_args(den):
        base = f.base if f.is_Pow else f
        if base.free_symbols & values:
            out.add(min(base, -base, key=sp.default_sort_key))   # 1 − ŷ and ŷ − 1 alike
    return out


def _safe(expr: sp.Expr, defs: dict | None = None, keep=()) -> sp.Expr:
    """stabilize + lower until nothing changes (lowering can expose log(1 + eᵘ)); the
    activations in ``keep`` stay (the printer has the library's function for them)."""
    for _ in range(4):
        new = lower(stabilize(expr, defs), keep)
        if new == expr:
            break
        expr = new
    return expr


def rewrite(stmts: list[Stmt], defs: dict, adjoints: set, keep=()) -> list[Stmt]:
    """The equal, safe forms of every formula: re/im dropped, forward values reused by
    name, risky adjoints merged into their users, log σ and softplus stabilised,
    activations lowered to their stable definitions (except those in ``keep``)."""
    # Nodes with equal definitions hold one value: name it by the first of them everywhere,
    # else δ of one (dividing by 1 − ŷ) cannot cancel against σ' written with the other.
    known, same, out = {}, {}, []
    for st in stmts:
        args = tuple(realify(a).xreplace(same).xreplace(known) if st.op in EXPR_OPS and isinstance(a, sp.Basic)
                     else a for a in st.args)
        out.append(st._replace(args=args))
        if st.op == "let" and st.target in defs and not args[0].is_Atom:
            if args[0] in known and not isinstance(st.target, sp.MatrixSymbol):
                same[st.target] = known[args[0]]
            else:
                known[args[0]] = st.target
    _fuse_risky(out, adjoints)
    # 2(Ŷ − Y) rather than 2Ŷ − 2Y: the common factor is what CSE shares with the loss
    return [st._replace(args=tuple(_factor(_safe(a, defs, keep)) if st.op in EXPR_OPS and isinstance(a, sp.Basic)
                                   else a for a in st.args)) for st in out]


def _factor(expr: sp.Expr) -> sp.Expr:
    return sp.factor_terms(expr) if expr.has(sp.Add) else expr


#: formulas of more tree nodes are not fused: cancel(together(...)) grows exponentially with
#: nested denominators (a_d = Π_j (a_{d−1} + j)/(1 + a_{d−1}²): minutes at depth 4), while the
#: output blocks the fusion is for are small (binary cross-entropy's δ_ŷ: 20 nodes)
FUSE_LIMIT = 300


def _smaller_than(expr, limit: int) -> bool:
    """Whether expr has fewer than `limit` nodes (counted only up to the limit)."""
    for n, _ in enumerate(sp.preorder_traversal(expr)):
        if n >= limit:
            return False
    return True


def _fuse_risky(stmts: list[Stmt], adjoints: set) -> None:
    """Merge an adjoint that divides by a computed value into its users when that cancels.

    δ_ŷ = −y/ŷ + (1−y)/(1−ŷ) overflows when ŷ = σ(z) saturates, but
    δ_z = δ_ŷ·ŷ(1−ŷ) cancels to ŷ − y.  Replacing δ_ŷ in δ_z and letting
    SymPy cancel the fraction gives that equal, safe form.  It is kept when
    none of δ_ŷ's denominators is left (the user's own divisions, such as
    z = u/v, may stay); otherwise the formula is kept as it was.
    """
    values = {st.target for st in stmts}
    for i, st in enumerate(stmts):
        small = st.op == "let" and st.target in adjoints and _smaller_than(st.args[0], FUSE_LIMIT)
        risky = _risky(st.args[0], values) if small else set()
        if not risky:
            continue
        for k in range(i + 1, len(stmts)):
            other = stmts[k]
            if other.op == "let" and st.target in other.args[0].free_symbols:
                merged = other.args[0].xreplace({st.target: st.args[0]})
                if not _smaller_than(merged, FUSE_LIMIT):
                    continue
                try:
                    fused = sp.cancel(sp.together(merged))
                except (sp.PolynomialError, TypeError, ValueError):
                    continue
                if not _risky(fused, values) & risky:
                    stmts[k] = other._replace(args=(sp.factor_terms(fused),))


def scale_seed(expr, seed):
    """δ with the loss's own adjoint δ_L = seed instead of 1.

    Every adjoint is linear in δ_L: the terms that hold no other adjoint
    are the ones δ_L enters directly (δ_C = 1/m, a penalty's λW), so scaling
    those scales everything.  With seed = lr the step's gradients come out
    already multiplied by the step size (lr/m folded into the output delta).
    """
    if seed == 1:
        return expr
    free = lambda t: not t.atoms(Adjoint, AdjointMatrix)   # noqa: E731
    if isinstance(expr, (sp.MatAdd, sp.Add)):
        return expr.func(*[seed * t if free(t) else t for t in expr.args])
    return seed * expr if free(expr) else expr


# ------------------------------------------------------------------ names
_RESERVED = set(keyword.kwlist) | set(dir(builtins)) | {
    "np", "X", "Y", "params", "lr", "m", "DTYPE", "PARAMS", "INPUTS", "TARGETS", "OUTPUTS", "SHAPES",
    "INIT", "KIND", "REDUCTION", "N_INPUTS", "N_TARGETS", "forward", "backward", "predict", "loss",
    "grad", "step", "init", "values", "grads", "name", "g", "_ones", "_ONES", "ones",
    # the module's other names, and the libraries other backends import
    "_predict", "_loss", "_grad", "_step", "_apply_step", "_data", "_asarray", "_is_native",
    "value_and_grad", "random_data", "selfcheck", "NP_DTYPE", "TARGET_KIND", "jax", "jnp", "torch", "sys",
    "_vjp", "_vjp_forward", "_vjp_backward", "vjp", "N_OUTPUTS", "VJP_ERROR", "VJP_LAZY",
    "X_SAMPLE", "Y_SAMPLE", "X_IMAGE", "ROW_OUTPUT", "NDIM", "LOSS", "_as_given", "_as_samples", "_rows_out",
    "_xy", "_WANT"} | {
    # a function printed once per device (symback.straightline.build_function)
    f"_{f}_on_{where}" for f in ("predict", "forward", "backward", "loss", "grad", "step", "vjp", "vjp_forward",
                                 "vjp_backward", "adjoints") for where in ("cpu", "device")}


class Namer:
    """Hands out unique Python identifiers, keeping the user's names where possible."""

    def __init__(self, reserved=()):
        self.used = set(_RESERVED) | set(reserved)

    def take(self, wanted: str) -> str:
        """`wanted` if free, else `wanted_`, `wanted_2`, ...; marked as used."""
        name = wanted if wanted.isidentifier() else "v_" + "".join(c if c.isalnum() else "_" for c in wanted)
        if name in self.used:
            name = name + "_"
            k = 2
            while name in self.used:
                name, k = f"{wanted}_{k}", k + 1
        self.used.add(name)
        return name

    def symbols(self, prefix: str):
        """An endless supply of fresh symbols prefix0, prefix1, ... for sympy.cse."""
        for i in count():
            name = f"{prefix}{i}"
            if name not in self.used:
                self.used.add(name)
                yield sp.Symbol(name, real=True)


def check_dtype(dtype) -> str:
    """The dtype's name, 'float64' or 'float32'; SymbackError for any other."""
    import numpy as np
    try:
        name = np.dtype(dtype).name
    except TypeError as exc:
        raise SymbackError(f"unknown dtype {dtype!r}: use 'float64' or 'float32'") from exc
    if name not in DTYPES:
        raise SymbackError(f"dtype {name!r} is not supported: use 'float64' or 'float32'")
    return name


def lower_program(d: Derivation, namer: Namer, seed, keep=(), kernels=()):
    """The Program of `d` as array statements, with ``seed`` as δ_L (1, or lr for a step);
    the activation classes in ``keep`` are not lowered (the printer's ``native`` ones), and
    ``kernels`` are the printer's fused kernels (:mod:`symback.kernels`).

    Returns (lowering, forward targets, adjoint targets, names, gradients
    (param name -> code symbol), loss symbol, output symbols).
    """
    P, layout = d.program(), d.layout
    names, shapes = {}, {BATCH: ()}
    fresh = _fresh_factory(namer)
    low = Lowering(names, shapes, fresh, layout.one_sample, kernels=kernels)
    layout.bind_data(low, names, namer, P)
    low.emit("batch", (), (), target=BATCH)
    for s in P.params:
        names[s] = sp.Symbol(namer.take(s.name), real=True)
        low.emit("param", (s.name,), layout.param_shape(s.name), target=names[s])
    for s, _ in P.forward:
        names[s] = sp.Symbol(namer.take(s.name), real=True)
    for s, _ in P.backward:
        names[s] = sp.Symbol(namer.take(s.name), real=True)
    low.shared = layout.shared(names, P.backward, d.sample_nodes)
    forward = [low.assign(s, e) for s, e in P.forward]
    adjoints = [low.assign(s, scale_seed(e, layout.loss_seed(seed, d.reduction))) for s, e in P.backward]
    grads, penalty_seed = {}, layout.gradient_seed(seed, d.reduction)
    for p, e in P.gradients.items():
        e = scale_seed(e, penalty_seed)     # δ_p (seeded already) + seed·∂penalty/∂p, where there is one
        grads[p] = low.materialize(low.scalar(e)) if not (isinstance(e, sp.Basic) and e in names) else names[e]
    loss = low.materialize(low.scalar(P.loss))
    outputs = [names[o] for o in P.outputs]
    low.stmts = rewrite(low.stmts, {t: low.defs[t] for t in forward if t in low.defs}, set(adjoints), keep)
    return low, forward, adjoints, names, grads, loss, outputs, fresh


def _fresh_factory(namer: Namer):
    gen = namer.symbols("t")
    made = set()

    def fresh():
        s = next(gen)
        made.add(s.name)
        return s
    fresh.made = made
    return fresh


def init_rows(d: Derivation) -> tuple:
    """(name, shape, scheme) per parameter: 'zeros' for biases, 'he' for weights that
    feed a ReLU-like activation, 'glorot' for other weights, 'normal' for scalars."""
    g = d.graph
    rows = d.layout.init_rows()
    if rows is not None:        # a scalar graph's numbers: one rule for all
        return rows
    rows = []
    # (node, definition, its symbols) once: a parameter's uses are read off the symbol sets
    forward = [(g.symbol(n), g.expr(n), g.expr(n).free_symbols) for n in g.order if n in g._expr]
    relu_args = {e.expr for _, e, _ in forward
                 if activation_of(e) is not None and activation_of(e)[0].__name__ in ("relu", "leaky_relu")}
    for p in g.param_names:
        W = g.symbol(p)
        shape = tuple(int(x) for x in W.shape)
        if p in getattr(g, "init_scheme", {}):
            rows.append((p, shape, g.init_scheme[p]))
            continue
        uses = [e for _, e, syms in forward if W in syms]
        as_bias = all(_only_broadcast(e, W) for e in uses)
        if (p.startswith("b") and shape[0] == 1) or (uses and as_bias):
            rows.append((p, shape, "zeros"))
            continue
        fed = {s for s, _, syms in forward if W in syms}
        rows.append((p, shape, "he" if relu_args & fed else "glorot"))
    return tuple(rows)


def _only_broadcast(e, b) -> bool:
    """Whether every occurrence of b in e is ``1 b`` (a bias repeated on each row)."""
    hidden = e.replace(lambda x: isinstance(x, sp.MatMul) and len(x.args) == 2 and
                       isinstance(x.args[0], sp.OneMatrix) and x.args[1] == b, lambda x: sp.ZeroMatrix(*x.shape))
    return not hidden.has(b)


__all__ += ["lower_program", "init_rows", "rewrite", "FunctionSpec", "build_function"]
