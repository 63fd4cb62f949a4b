"""Local derivatives: one vector-Jacobian product per kind of step, all from SymPy.

:func:`local_factor` answers the one question the engine asks of an edge
child ← parent: how does the child's adjoint flow back to the parent?

* scalar child, scalar parent: SymPy's ∂child/∂parent (``sympy.diff``);
* matrix child: SymPy's matrix calculus, ∂ tr(δᵀ · child) / ∂parent, where δ
  is the child's adjoint; an activation f enters as an undefined function,
  so SymPy's answer holds f'(·), which is named :class:`~symback.matrix.FPrime`;
* scalar child of matrices (the batch loss, a penalty): ∂child/∂parent, term by term;
* a node kind (softmax, layer norm, a per-sample cost, an image map): the kind's own
  ``vjp``, derived beside its definition in :mod:`symback.kinds` (the softmax, row-norm
  and per-sample-cost VJPs are re-exported here).

Matrix results are derived once per *kind* of step: the child's expression
is put in a canonical form (its matrices renamed in order of appearance,
widths made symbols, functions made undefined) and the answer cached under
that form.  Every layer ``A W + 1 b`` of a deep network is one kind, so
depth costs a substitution, not a derivation.
"""
from __future__ import annotations

from functools import lru_cache
from itertools import count

import sympy as sp
from sympy.matrices.expressions.applyfunc import ElementwiseApplyFunction
from sympy.tensor.array.expressions import ArrayAdd, ArrayContraction, ArrayDiagonal, ArrayTensorProduct, PermuteDims

from .errors import DefinitionError, SymbackError
from .kinds.base import BATCH, ENTRY, Kind, activation_of, elementwise, is_matrix, real_diff
from .kinds.elementwise import FPrime, to_matrix
from .kinds.rowcost import cost_derivative
from .kinds.rownorm import prove_rownorm_vjp, rownorm_vjp
from .kinds.softmax import Softmax, SoftmaxVJP, prove_softmax_vjp, softmax_vjp

__all__ = ["local_factor", "edge_factor", "real_diff", "AdjointMatrix", "cost_derivative", "SoftmaxVJP", "to_matrix",
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
    if hasattr(child_expr, "vjp"):     # a node kind: its own VJP, derived beside its definition
        return child_expr.vjp(child_adjoint, parent, child)
    return _matrix_vjp(child_expr, child_adjoint, parent)


# ---------------------------------------------------------------- matrix calculus, cached by kind

def edge_factor(child_expr, child_adjoint, parent, child, names):
    """:func:`local_factor` for the edge ``names = (child, parent)`` of a graph: SymPy's own
    failure on a node becomes one DefinitionError naming that node (its matrix calculus
    raises bare TypeError, ValueError, ...)."""
    try:
        return local_factor(child_expr, child_adjoint, parent, child)
    except SymbackError:
        raise
    except (TypeError, ValueError, NotImplementedError, IndexError, AttributeError) as exc:
        raise DefinitionError(
            f"node {names[0]!r}: SymPy cannot differentiate {child_expr} with respect to {names[1]!r} "
            f"({type(exc).__name__}: {exc or 'not implemented'}); define its compound parts "
            "(a function of a product, a factor of a Hadamard product) as nodes of their own") from exc

def _matrix_vjp(child_expr, adj, parent):
    parts = _inner_parts(child_expr)
    if parts:
        return _through_parts(child_expr, adj, parent, parts)
    split = _hadamard_terms(child_expr, adj, parent)
    if split is not None:
        return split
    canon, back, fns = _canonical(child_expr, adj, parent)
    result = _derive_canonical(*canon)
    if result.has(ArrayAdd, ArrayContraction, ArrayDiagonal, ArrayTensorProduct, PermuteDims):
        # (∂ of XW ⊙ XWV by W): no code is printed from a tensor contraction
        raise NotImplementedError("SymPy's matrix calculus left a tensor contraction it cannot write with matrices")
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


def _inner_parts(expr) -> list:
    """The outermost parts of `expr` that SymPy's matrix calculus cannot take inside a larger
    expression: an element-wise f(·) below the top (in W f(X V) it transposes f's argument
    and not the δ it multiplies, a wrong VJP when f(X V) is square, a ShapeError when not),
    the compound base of a matrix power ((X W + 1 b)², SymPy's form of B @ B), a Hadamard power
    of a compound base below the top (SymPy's form of A ⊙ A), and a Hadamard
    product with a broadcast factor below the top (in X W (1b ⊙ 1b) V SymPy's δ_b was wrong,
    in (X W ⊙ (1b)∘²) V it raised a ValueError; at the top :func:`_hadamard_terms` takes it)."""
    parts: list = []

    def visit(e, top):
        if isinstance(e, ElementwiseApplyFunction) and not top:
            parts.append(e)
        elif isinstance(e, sp.MatPow) and not isinstance(e.base, sp.MatrixSymbol):
            parts.append(e.base)
        elif not top and _hadamard_part(e):
            parts.append(e)
        else:
            for a in e.args:
                if is_matrix(a):
                    visit(a, False)
    visit(expr, True)
    return list(dict.fromkeys(parts))


def _hadamard_part(e) -> bool:
    """Whether the Hadamard product or power `e`, below the top, is held as a part: one with a
    broadcast factor, a power of a compound base ((X W + X V)∘² 1 w U: "Mix of Matrix and Scalar
    symbols" in SymPy), or a product with a power among its factors ((N∘² ⊙ W∘²) V: an IndexError)."""
    if isinstance(e, sp.HadamardPower):
        return e.has(sp.OneMatrix) or not isinstance(e.base, sp.MatrixSymbol)
    return isinstance(e, sp.HadamardProduct) and (
        e.has(sp.OneMatrix) or any(isinstance(f, sp.HadamardPower) for f in e.args))


_PART_NAMES = count()    # fresh names for the parts held as symbols


def _through_parts(expr, adj, parent, parts):
    """The chain rule through `parts`, each a matrix of its own: SymPy's VJP of `expr` with the
    parts held as symbols U_k, for `parent` directly and for each U_k, then each part's own
    VJP (:func:`_matrix_vjp`) applied to its δ_U_k.  Every factor is SymPy's."""
    held = {q: sp.MatrixSymbol(f"_U{next(_PART_NAMES)}", *q.shape) for q in parts}
    outer = expr.xreplace(held)
    terms = [_matrix_vjp(outer, adj, parent)] if outer.has(parent) else []
    for q, u in held.items():
        if q.has(parent):
            flow = sp.MatrixSymbol(f"_V{next(_PART_NAMES)}", *q.shape)
            terms.append(_matrix_vjp(q, flow, parent).xreplace({flow: _matrix_vjp(outer, adj, u)}))
    if not terms:
        return sp.ZeroMatrix(*parent.shape)
    total = sp.MatAdd(*terms).doit() if len(terms) > 1 else terms[0]
    return total.xreplace({u: q for q, u in held.items()})


def _hadamard_terms(expr, adj, parent):
    """The VJP of a sum (times a number) that holds c (F₁ ⊙ F₂ ⊙ ...), a factor Fᵢ depending on
    parent and broadcasting a row (1 c), or three factors or more (:func:`_splits`), else None:
    term by term, and such a product by the product rule, Σᵢ the VJP of Fᵢ for the adjoint
    c δ ⊙ Πⱼ≠ᵢ Fⱼ.  SymPy's own derivative transposed the broadcast factor (∂tr(Dᵀ(1c ⊙ 1c))/∂c
    came out 2·1ᵀ(1c ⊙ Dᵀ)), and failed on the others."""
    if not _splits(expr, parent):
        return None
    stand_in = sp.MatrixSymbol("_Ahad", *adj.shape)
    if isinstance(expr, sp.MatMul):         # c M: M's VJP for c δ
        coeff = sp.Mul(*[a for a in expr.args if not isinstance(a, sp.MatrixExpr)])
        m = next(a for a in expr.args if isinstance(a, sp.MatrixExpr))
        return _matrix_vjp(m, stand_in, parent).xreplace({stand_in: coeff * adj})
    if isinstance(expr, sp.MatAdd):
        terms = [_matrix_vjp(t, adj, parent) for t in expr.args if t.has(parent)]
    elif isinstance(expr, sp.HadamardPower):   # F∘ⁿ: F's VJP for δ ⊙ n F∘⁽ⁿ⁻¹⁾
        f, n = expr.args
        held = sp.HadamardProduct(adj, n * sp.HadamardPower(f, n - 1)) if n != 2 else sp.HadamardProduct(adj, 2 * f)
        terms = [local_factor(f, stand_in, parent, None).xreplace({stand_in: held})]
    else:
        terms = []
        for i, f in enumerate(expr.args):
            if f.has(parent):
                others = expr.args[:i] + expr.args[i + 1:]
                held = sp.HadamardProduct(adj, *others) if others else adj
                terms.append(local_factor(f, stand_in, parent, None).xreplace({stand_in: held}))
    return terms[0] if len(terms) == 1 else sp.MatAdd(*terms)


def _splits(expr, parent) -> bool:
    """Whether expr is, or sums (times a number), a Hadamard product that _hadamard_terms takes."""
    if isinstance(expr, sp.HadamardProduct):
        dependent = [f for f in expr.args if f.has(parent)]
        # SymPy's matrix calculus raises a ValueError ("index is larger than expression shape")
        # on three or more factors, or a power, where one that depends on parent is compound
        # (X W ⊙ X W ⊙ X U, 1b ⊙ (X W)∘²)
        return any(f.has(sp.OneMatrix) for f in dependent) or any(
            not isinstance(f, sp.MatrixSymbol) for f in dependent) and (
            len(expr.args) > 2 or any(isinstance(f, sp.HadamardPower) for f in dependent))
    if isinstance(expr, sp.HadamardPower):
        # a compound base (SymPy writes (X W + X V) ⊙ (X W + X V) + X as (X W + X V)∘² + X):
        # its matrix calculus raised "Mix of Matrix and Scalar symbols" on the power in a sum
        base = expr.args[0]
        return base.has(parent) and expr.args[1].is_number and (
            base.has(sp.OneMatrix) or not isinstance(base, sp.MatrixSymbol))
    if isinstance(expr, sp.MatAdd):
        return any(_splits(t, parent) for t in expr.args)
    if isinstance(expr, sp.MatMul):
        mats = [a for a in expr.args if isinstance(a, sp.MatrixExpr)]
        return len(mats) == 1 and _splits(mats[0], parent)
    return False


@lru_cache(maxsize=None)
def _derive_canonical(expr, adj, parent):
    """∂ tr(adjᵀ expr)/∂parent for a canonical step (cached: one derivation per kind)."""
    return as_matrix(sp.Trace(adj.T * expr).diff(parent), parent)


def as_matrix(result, parent):
    """SymPy's derivative by the matrix `parent` as a matrix expression: its matrix calculus
    answers in array expressions (ArrayAdd of ArrayContractions) where the parent sits inside
    a product inside a Hadamard product (X in (W₁XW₂) ⊙ (W₁XW₃)); SymPy's own conversion
    writes those back as matrix products, and anything it cannot is refused, not printed."""
    if isinstance(result, sp.MatrixExpr) or not isinstance(result, sp.Basic) or result.is_number:
        return result
    from sympy.tensor.array.expressions.from_array_to_matrix import convert_array_to_matrix
    converted = convert_array_to_matrix(result)
    if not isinstance(converted, sp.MatrixExpr) or tuple(converted.shape) != tuple(parent.shape):
        raise DefinitionError(f"SymPy's derivative by {parent} is an array expression that is no matrix "
                              f"product ({type(result).__name__}); define the factors around it as nodes")
    return converted


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
    # constant matrices take the symbolic widths too (a 1×1 ones SymPy turned into Identity(1)
    # beside the symbolic-width NᵀN: "mismatching shapes in addition")
    ones = {o: type(o)(*map(dim, o.shape)) if not isinstance(o, sp.Identity) else sp.Identity(dim(o.shape[0]))
            for o in expr.atoms(sp.OneMatrix, sp.Identity, sp.ZeroMatrix)}
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
    if any(isinstance(e, Kind) for e in sp.preorder_traversal(canon)):
        raise DefinitionError(f"cannot differentiate {expr}: write softmax and losses as whole nodes")
    # an irrational coefficient (1/√8 of attention's scores) becomes a symbol: SymPy's matrix
    # calculus takes a power of a number for a power of a matrix and fails on √2
    consts = {c: sp.Symbol(f"_c{i}", positive=True) for i, c in enumerate(sorted(
        {a for m in canon.atoms(sp.MatMul, sp.MatAdd) for a in m.args
         if not isinstance(a, sp.MatrixExpr) and a.is_number and not a.is_Rational}, key=sp.default_sort_key))}
    canon = canon.xreplace(consts) if consts else canon
    symbols = {**{v: k for k, v in sym.items()}, **{v: k for k, v in consts.items()}}
    canon, held = _opaque_factors(canon, sym[parent])
    symbols.update({h: f.xreplace(symbols) for h, f in held.items()})
    back = {"symbols": symbols, "dims": {v: k for k, v in dims.items()}}
    return (canon, sym[adj], sym[parent]), back, fns


def _opaque_factors(canon, parent):
    """canon with each compound factor of a Hadamard product that does not depend on parent
    (a bias broadcast down the rows, 1 b) as a matrix symbol of its own: {symbol: factor}.

    SymPy's matrix calculus transposes such a factor's partner: ∂tr(Dᵀ (XW ⊙ 1b))/∂W came
    out Xᵀ(1b ⊙ Dᵀ), not Xᵀ(1b ⊙ D) (wrong numbers where the shapes happen to agree, a
    ShapeError where not); of a plain symbol B in its place it is right, Xᵀ(B ⊙ D)."""
    held: dict = {}

    def opaque(h):
        args = []
        for a in h.args:
            if not isinstance(a, sp.MatrixSymbol) and not a.has(parent):
                h = next((k for k, v in held.items() if v == a), None)
                if h is None:
                    h = sp.MatrixSymbol(f"_H{len(held)}", *a.shape)
                    held[h] = a
                a = h
            args.append(a)
        return sp.HadamardProduct(*args)
    if not canon.has(sp.HadamardProduct):
        return canon, held
    canon = canon.replace(lambda e: isinstance(e, sp.HadamardProduct), opaque)
    return canon, held


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


def is_activation_node(expr) -> bool:
    """Whether a node is f(Z) element-wise or softmax(Z) of one named matrix Z."""
    return (activation_of(expr) is not None and isinstance(expr.expr, sp.MatrixSymbol)) or \
        isinstance(expr, Softmax)


__all__ += ["is_activation_node", "ENTRY"]
