"""Local derivatives: one vector-Jacobian product per kind of step, all from SymPy.

:func:`local_factor` answers the one question the engine asks of an edge
child ← parent: how does the child's adjoint flow back to the parent?

* scalar child, scalar parent: SymPy's ∂child/∂parent (``sympy.diff``);
* matrix child: SymPy's matrix calculus, ∂ tr(δᵀ · child) / ∂parent, where δ
  is the child's adjoint; an activation f enters as an undefined function,
  so SymPy's answer holds f'(·), which is named :class:`~symback.matrix.FPrime`;
* scalar child of matrices (the batch loss, a penalty): ∂child/∂parent, term by term;
* a per-sample cost ``RowCost(ℓ, Ŷ, Y)``: entry by entry, SymPy's ∂ℓ/∂ŷ.

Matrix results are derived once per *kind* of step: the child's expression
is put in a canonical form (its matrices renamed in order of appearance,
widths made symbols, functions made undefined) and the answer cached under
that form.  Every layer ``A W + 1 b`` of a deep network is one kind, so
depth costs a substitution, not a derivation.
"""
from __future__ import annotations

from functools import lru_cache

import sympy as sp
from sympy.matrices.expressions.applyfunc import ElementwiseApplyFunction

from . import image
from .errors import DefinitionError
from .matrix import (BATCH, ENTRY, Elementwise, FPrime, RowCost, RowNorm, Softmax, SoftmaxVJP, activation_of,
                     elementwise, is_matrix)

__all__ = ["local_factor", "real_diff", "AdjointMatrix", "cost_derivative", "SoftmaxVJP",
           "fused_output", "softmax_vjp", "prove_softmax_vjp",
           "rownorm_vjp", "prove_rownorm_vjp"]


class AdjointMatrix(sp.MatrixSymbol):
    """δ_node = ∂L/∂node for a matrix node (same shape as the node).

    The name is ``delta_<node>``; ``node`` gives the node's name back.
    """

    @property
    def node(self) -> str:
        """The node this adjoint belongs to."""
        return self.name[len("delta_"):]

    def _latex(self, printer, exp=None):
        return r"\delta_{%s}" % printer._print(sp.Symbol(self.node))


def real_diff(expr: sp.Expr, var: sp.Symbol) -> sp.Expr:
    """SymPy's ∂expr/∂var, taken with every symbol real.

    Network quantities are real numbers; without saying so SymPy writes
    d|u|/du with re(u) and im(u).  The user's own symbols are put back.
    """
    free = [s for s in expr.free_symbols if s.is_real is None]
    if not free or not expr.has(sp.Abs, sp.sign, sp.re, sp.im, sp.arg, sp.conjugate):
        return sp.diff(expr, var)
    real = {s: sp.Dummy(s.name, real=True) for s in free}
    d = sp.diff(expr.xreplace(real), real.get(var, var))
    return d.xreplace({v: k for k, v in real.items()})


def local_factor(child_expr, child_adjoint, parent, child=None):
    """The local factor of the edge child ← parent.

    For a scalar child it is ∂child/∂parent (a matrix when the parent is
    one), and δ_child times it is the edge's contribution to δ_parent.  For
    a matrix child it is the vector-Jacobian product itself, linear in the
    symbol ``child_adjoint`` that stands for δ_child.  ``child`` is the child's own
    symbol, in which a closed form may be written (softmax's P).
    """
    if not is_matrix(child_expr):
        if not is_matrix(parent):
            return real_diff(child_expr, parent)
        # SymPy differentiates a sum of traces plus a constant to 0 (a bug in
        # its matrix derivative of Add), so each term is differentiated alone.
        terms = [t.diff(parent) for t in sp.Add.make_args(sp.expand(child_expr)) if t.has(parent)]
        return sp.MatAdd(*terms).doit() if len(terms) > 1 else terms[0]
    if isinstance(child_expr, RowCost):
        if parent != child_expr.prediction:
            raise DefinitionError(f"the loss {child_expr.loss.name!r} is differentiated by its prediction only")
        k = child_expr.prediction.shape[1]
        spread = child_adjoint * sp.OneMatrix(1, k)          # δ_C repeated on each output
        return sp.HadamardProduct(spread, cost_derivative(child_expr)).doit()
    if isinstance(child_expr, Softmax):
        return softmax_vjp(child_expr, child_adjoint, child)
    if isinstance(child_expr, RowNorm):
        return rownorm_vjp(child_expr, child_adjoint, child)
    if isinstance(child_expr, image.ImageMap):     # an adjoint, or max-pooling's arg-max routing
        if child_expr.arg != parent:
            raise DefinitionError(f"internal: {child_expr.op} of {child_expr.arg} differentiated by {parent}")
        return image.vjp(child_expr, child_adjoint, parent)
    return _matrix_vjp(child_expr, child_adjoint, parent)


def softmax_vjp(S: Softmax, D, P=None):
    """δ_Z for P = softmax(Z) (row by row, masked or not) and δ_P = D, in closed form:
    P ⊙ (D − (D ⊙ P) 𝟏 𝟏ᵀ), FlashAttention's dS.

    The closed form is used only after SymPy has proved it equal, entry by
    entry, to Σ_k D_ik ∂P_ik/∂Z_ij taken of softmax's definition
    (:func:`prove_softmax_vjp`); a masked entry has P_ij = 0, so its δ is 0.
    ``P`` is the symbol the forward pass holds softmax(Z) in (else S itself).
    """
    prove_softmax_vjp()
    P = S if P is None else P
    k = S.shape[1]
    rows = sp.MatMul(sp.HadamardProduct(D, P), sp.OneMatrix(k, 1), sp.OneMatrix(1, k))
    return sp.HadamardProduct(P, sp.MatAdd(D, -rows))


def rownorm_vjp(N: RowNorm, D, P=None):
    """δ_H for Ĥ = norm(H) (each row standardised) and δ_Ĥ = D, in the closed form of the
    layer-norm backward: (σ⁻¹𝟏ᵀ) ⊙ (D − mean(D) − Ĥ ⊙ mean(D ⊙ Ĥ)), means over each row.

    Used only after SymPy has proved it equal to Σ_k D_ik ∂Ĥ_ik/∂H_ij of the definition
    (:func:`prove_rownorm_vjp`).  ``P`` is the symbol the forward pass holds Ĥ in.
    """
    prove_rownorm_vjp()
    P = N if P is None else P
    d = N.shape[1]
    r, _ = N.rstd()
    one = sp.OneMatrix(d, 1)
    mean = lambda A: sp.MatMul(A, one, one.T) / d                      # noqa: E731 (row means, spread)
    inner = sp.MatAdd(D, -mean(D), -sp.HadamardProduct(P, mean(sp.HadamardProduct(D, P))))
    return sp.HadamardProduct(sp.MatMul(r, one.T), inner)


@lru_cache(maxsize=None)
def prove_rownorm_vjp(widths: int = 3) -> bool:
    """Prove, for rows of 1..`widths` entries and any ε > 0, that :func:`rownorm_vjp`'s closed
    form equals the vector-Jacobian product of the row standardisation's definition.

    The derivative is SymPy's, of Ĥ_k = (h_k − μ)/√(var + ε); then σ = √(var + ε) is named S,
    the difference times S³ expanded and S² replaced by var + ε: it must vanish identically.
    """
    eps, S = sp.Symbol("epsilon", positive=True), sp.Symbol("S", positive=True)
    for d in range(1, widths + 1):
        h, g = sp.symbols(f"h0:{d}", real=True), sp.symbols(f"g0:{d}", real=True)
        mu = sum(h) / d
        var = sp.expand(sum((x - mu) ** 2 for x in h) / d)
        s = sp.sqrt(var + eps)
        hat = [(x - mu) / s for x in h]
        hat_s = [(x - mu) / S for x in h]
        mean_g = sum(g) / d
        mean_gh = sum(a * b for a, b in zip(g, hat_s)) / d
        for j in range(d):
            vjp = sum(g[k] * sp.diff(hat[k], h[j]) for k in range(d))
            closed = (g[j] - mean_g - hat_s[j] * mean_gh) / S
            gap = sp.expand(sp.expand((vjp.subs(s, S) - closed) * S ** 3).subs(S ** 2, var + eps))
            if gap != 0:
                raise DefinitionError(f"internal: layer norm's closed-form VJP is not proved (width {d})")
    return True


@lru_cache(maxsize=None)
def prove_softmax_vjp(widths: int = 3) -> bool:
    """Prove, for rows of 1..`widths` entries of which a leading part is kept (the causal
    mask's rows; all kept is the plain softmax), that the closed form of :func:`softmax_vjp`
    equals the vector-Jacobian product of softmax's definition.  Raises if it does not."""
    for k in range(1, widths + 1):
        z, d = sp.symbols(f"z0:{k}", real=True), sp.symbols(f"d0:{k}", real=True)
        for kept in range(1, k + 1):
            total = sum(sp.exp(z[j]) for j in range(kept))
            s = [sp.exp(z[j]) / total if j < kept else sp.S.Zero for j in range(k)]
            dot = sum(d[i] * s[i] for i in range(k))
            for j in range(k):
                vjp = sum(d[i] * sp.diff(s[i], z[j]) for i in range(k))
                if sp.cancel(sp.together(vjp - s[j] * (d[j] - dot))) != 0:
                    raise DefinitionError(f"internal: softmax's closed-form VJP is not proved "
                                          f"(width {k}, {kept} kept, entry {j})")
    return True


def cost_derivative(cost: RowCost) -> sp.MatrixExpr:
    """∂ℓ(Ŷ, Y)/∂Ŷ entry by entry: SymPy's derivative of the loss's definition."""
    lf = cost.loss
    p, t = sp.Dummy("p", real=True), sp.Dummy("t", real=True)
    d = real_diff(lf(p, t), p)
    return to_matrix(d, {p: cost.prediction, t: cost.target}, cost.prediction.shape)


# ---------------------------------------------------------------- matrix calculus, cached by kind
def _matrix_vjp(child_expr, adj, parent):
    canon, back, fns = _canonical(child_expr, adj, parent)
    result = _derive_canonical(*canon)
    # undefined functions back to the activations, f' to FPrime
    def restore(e):
        body = e.function.expr
        if isinstance(body, sp.Derivative) and body.expr.func in fns:
            return FPrime(fns[body.expr.func], e.expr)
        if isinstance(body, sp.core.function.AppliedUndef) and body.func in fns:
            return elementwise(fns[body.func], e.expr)
        raise DefinitionError(f"internal: unexpected element-wise term {e} in a derivative")
    result = result.xreplace(back["symbols"])
    result = result.replace(lambda e: isinstance(e, ElementwiseApplyFunction), restore)
    result = result.xreplace(back["dims"])
    return result.doit() if result.has(sp.Trace) else result


@lru_cache(maxsize=None)
def _derive_canonical(expr, adj, parent):
    """∂ tr(adjᵀ expr)/∂parent for a canonical step (cached: one derivation per kind)."""
    return sp.Trace(adj.T * expr).diff(parent)


def _canonical(expr, adj, parent):
    """expr, adj and parent with matrices renamed _P0, _P1, ... (in order of appearance),
    widths replaced by symbols, activations by undefined functions _F0, _F1, ...

    Returns ((expr, adj, parent) canonical, {'symbols': ..., 'dims': ...} to go
    back, {undefined function: original Lambda}).
    """
    dims: dict = {}

    def dim(d):
        if d == BATCH:
            return d
        if d not in dims:
            dims[d] = sp.Symbol(f"_d{len(dims)}", positive=True, integer=True)
        return dims[d]

    order = []
    for e in sp.preorder_traversal(expr):
        if isinstance(e, (sp.MatrixSymbol, sp.MatrixSlice)) and e not in order:
            if isinstance(e, sp.MatrixSlice) and e.has(parent):
                raise DefinitionError(f"cannot differentiate through the slice {e}: slice a node "
                                      "that needs no gradient (data), or make the slice a node")
            order.append(e)
    if parent not in order:
        order.append(parent)
    sym = {s: sp.MatrixSymbol(f"_P{i}", dim(s.shape[0]), dim(s.shape[1])) for i, s in enumerate(order)}
    sym[adj] = sp.MatrixSymbol("_A", dim(adj.shape[0]), dim(adj.shape[1]))
    ones = {o: sp.OneMatrix(dim(o.shape[0]), dim(o.shape[1])) for o in expr.atoms(sp.OneMatrix)}
    fns: dict = {}
    lams: dict = {}

    def undefined(e):
        lam = e.function
        if lam not in lams:
            f = sp.Function(f"_F{len(lams)}")
            lams[lam] = f
            fns[f] = lam
        # a Lambda of the one shared variable: SymPy would wrap a bare function
        # in a Lambda of a fresh Dummy, and no two steps would share a cache entry
        return elementwise(sp.Lambda(ENTRY, lams[lam](ENTRY)), e.expr)

    # a slice of data (X[:, 0:2]) is one more matrix to the calculus: it needs no gradient
    canon = expr.xreplace({**sym, **ones})
    canon = canon.replace(lambda e: isinstance(e, ElementwiseApplyFunction), undefined)
    if canon.has(Elementwise, FPrime, Softmax, RowCost, image.ImageMap):
        raise DefinitionError(f"cannot differentiate {expr}: write softmax and losses as whole nodes")
    # an irrational coefficient (1/√8 of attention's scores) becomes a symbol: SymPy's matrix
    # calculus takes a power of a number for a power of a matrix and fails on √2
    consts = {c: sp.Symbol(f"_c{i}", positive=True) for i, c in enumerate(sorted(
        {a for m in canon.atoms(sp.MatMul, sp.MatAdd) for a in m.args
         if not isinstance(a, sp.MatrixExpr) and a.is_number and not a.is_Rational}, key=sp.default_sort_key))}
    canon = canon.xreplace(consts) if consts else canon
    back = {"symbols": {**{v: k for k, v in sym.items()}, **{v: k for k, v in consts.items()}},
            "dims": {v: k for k, v in dims.items()}}
    return (canon, sym[adj], sym[parent]), back, fns


# ---------------------------------------------------------------- fused output rules
def _best(*candidates):
    return min(candidates, key=lambda e: (sp.count_ops(e), len(str(e))))


_FUSED: dict = {}


def fused_output(out, loss, width: int):
    """δ_z = ∂C/∂z for an output activation `out` feeding the loss, for one output entry.

    Derived by SymPy and simplified; returns ``(expr, (z, a, y))`` with expr
    in the logit z, the prediction a = out(z) and the target y.  For softmax
    the derivation runs over all `width` components with one-hot targets
    (Σ_k y_k = 1), and is checked component by component.  This is how
    softmax + cross-entropy and sigmoid + binary cross-entropy become
    a − y: SymPy's simplification, not a special case.
    """
    return _fused_entry(out, loss, width)[:2]


def fused_assumes_distribution(out, loss, width: int) -> bool:
    """Whether :func:`fused_output`'s rule holds only for target rows that sum to 1
    (softmax + cross-entropy's Ŷ − Y): then the models check that on the data."""
    return _fused_entry(out, loss, width)[2]


def _fused_entry(out, loss, width):
    key = (out, loss.name, loss.expr, width)
    if key not in _FUSED:
        _FUSED[key] = _fused_output(out, loss, width)
    return _FUSED[key]


def _fused_output(out, loss, width):
    from .functions import softmax
    z, a, y = sp.symbols("z a y", real=True)
    if out is softmax:
        K = max(width, 2)
        zs = sp.symbols(f"z0:{K}", real=True)
        ys = sp.symbols(f"y0:{K}", real=True)
        ss = sp.symbols(f"s0:{K}", positive=True)
        comps = softmax.components(zs)
        total, Ssym = sum(sp.exp(v) for v in zs), sp.Dummy("S", positive=True)
        in_s = {zs[k]: sp.log(ss[k] * Ssym) for k in range(K)}   # exp(z_k) = s_k S
        dl = [sp.diff(loss(a, y), a).xreplace({a: ss[k], y: ys[k]}) for k in range(K)]
        # Softmax and Σ_k ℓ(s_k, y_k) are unchanged when the components are
        # permuted, so δ_z for component 0 gives every component's.
        jac = [sp.cancel(sp.diff(comps[k], zs[0]).subs(total, Ssym).xreplace(in_s)) for k in range(K)]
        g = sp.collect(sp.expand(sp.cancel(sum(dl[k] * jac[k] for k in range(K)))), ss[0])
        # one-hot targets, Σ_k y_k = 1, solved for the last one (so a scaled sum, 2Σ_k y_k, reduces too)
        exact, g = g, sp.expand(g.subs(ys[-1], 1 - sp.Add(*ys[:-1])))
        templ = g.xreplace({ss[0]: a, ys[0]: y})
        if templ.free_symbols - {a, y}:
            raise DefinitionError(f"softmax with loss {loss.name!r} does not reduce to an element-wise δ")
        return _best(templ, sp.factor_terms(templ)), (z, a, y), g != exact
    g = sp.diff(loss(out(z), y), z)
    g = g.subs(out(z), a)                      # name the prediction a = f(z)
    plain = not g.has(sp.Piecewise)
    g = _best(g, sp.factor_terms(sp.cancel(g)), sp.factor_terms(g),
              sp.factor(g) if plain else g, sp.factor_terms(sp.simplify(g)) if plain else g)
    return g, (z, a, y), False


def to_matrix(expr, mapping: dict, shape):
    """Lift an element-wise scalar expression to a matrix expression.

    Symbols become the matrices in `mapping`, sums matrix sums, products
    Hadamard products, constants multiples of the all-ones matrix; what
    cannot be lifted stays an :class:`~symback.matrix.Elementwise`.
    """
    if expr in mapping:
        return mapping[expr]
    if expr.is_number:          # √(2/π) as well as 2: a constant times the ones matrix
        return expr * sp.OneMatrix(*shape)
    if expr.is_Add:
        return sp.MatAdd(*[to_matrix(t, mapping, shape) for t in expr.args]).doit()
    if expr.is_Mul:
        coeff, rest = expr.as_coeff_Mul()
        factors = [to_matrix(f, mapping, shape) for f in sp.Mul.make_args(rest)]
        body = factors[0] if len(factors) == 1 else sp.HadamardProduct(*factors)
        return body if coeff == 1 else coeff * body
    free = [s for s in mapping if s in expr.free_symbols]
    return Elementwise(sp.Lambda(tuple(free), expr), *[mapping[s] for s in free])


def is_activation_node(expr) -> bool:
    """Whether a node is f(Z) element-wise or softmax(Z) of one named matrix Z."""
    return (activation_of(expr) is not None and isinstance(expr.expr, sp.MatrixSymbol)) or \
        isinstance(expr, Softmax)


__all__ += ["is_activation_node", "ENTRY"]
