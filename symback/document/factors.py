"""The local factors of a derivation as a document shows them, and how they compose.

An edge child ← parent carries what the engine computed for it
(:attr:`Derivation.local`): for a scalar child the derivative
∂child/∂parent, which multiplies along a path; for a matrix child the
vector-Jacobian product, linear in δ_child, shown as the map
``δ ↦ VJP(δ)``, which composes along a path.  :func:`compose` is that
rule, so a path's labels give its contribution to the gradient, and the
tests check it against finite differences.  :func:`coefficient` reads
the lecture notes' shorthand off a VJP (δ W^T → W^T, A^T δ → A^T,
δ ⊙ f'(Z) → f'(Z)) for the punchline and the bound.
"""
from __future__ import annotations


import functools

import sympy as sp

from ..engine import Derivation, delta
from ..matrix import Softmax, SoftmaxVJP, is_matrix
from ..printing import Partial
from ..vjp import AdjointMatrix

__all__ = ["as_derivation", "edge_expr", "compose", "coefficient", "cost_adjoint", "notes_chain",
           "GENERIC", "PENALTY", "edge_partial", "softmax_rule", "closed_softmax", "notes_start"]

#: The placeholder δ of a figure's edge labels (printed as a bare δ).
GENERIC = "delta_"


def as_derivation(d) -> Derivation:
    """The Derivation a document is built from (checked: nothing else renders)."""
    if not isinstance(d, Derivation):
        from ..errors import SymbackError
        raise SymbackError(f"a document needs a Derivation from sb.derive(...), got {type(d).__name__}")
    return d


MAX_PROVED_WIDTH = 12      # softmax's closed VJP is proved symbolically up to this row width


@functools.lru_cache(maxsize=None)
def softmax_rule(width: int) -> bool:
    """SymPy's proof, for rows of `width` entries, of the closed form a document prints for softmax's VJP.

    Entry j of δ_Z for S = softmax(z) is Σᵢ gᵢ ∂sᵢ/∂z_j (SymPy differentiates the
    definition); the document writes it s_j (g_j − Σᵢ gᵢ sᵢ), i.e. P ⊙ (G − (G ⊙ P)𝟏𝟏ᵀ).
    With eᵢ = exp(zᵢ) both are rational functions: their difference cancels to 0.
    """
    z = sp.symbols(f"z0:{width}", real=True)
    g = sp.symbols(f"g0:{width}", real=True)
    e = sp.symbols(f"e0:{width}", positive=True)
    total = sum(sp.exp(v) for v in z)
    s = [sp.exp(v) / total for v in z]
    back = {v: sp.log(ev) for v, ev in zip(z, e)}          # exp(zᵢ) = eᵢ, products of them too
    for j in range(width):
        derived = sum(g[i] * sp.diff(s[i], z[j]) for i in range(width))
        closed = s[j] * (g[j] - sum(g[i] * s[i] for i in range(width)))
        if sp.cancel(sp.expand_power_exp((derived - closed).subs(back))) != 0:
            return False
    return True


def closed_softmax(d: Derivation, expr):
    """expr with each softmax VJP written in closed form, P ⊙ (G − (G ⊙ P)𝟏𝟏ᵀ), P the softmax's node.

    The form is proved by :func:`softmax_rule` for the row width at hand (a failed
    proof is a bug: the document is not written); the certificate checks the result.
    """
    if not isinstance(expr, sp.Basic) or not expr.has(SoftmaxVJP):
        return expr
    g = d.graph
    nodes = {g.expr(n): g.symbol(n) for n in g.node_names if isinstance(g.expr(n), Softmax)}

    def closed(x):
        G, Z = x.args
        k = Z.shape[1]
        # proved at the width itself up to MAX_PROVED_WIDTH (the certificate checks every width numerically)
        if not softmax_rule(min(int(k), MAX_PROVED_WIDTH)):
            raise AssertionError(f"softmax's closed VJP is not proved for width {k}")
        P = nodes.get(Softmax(Z), Softmax(Z))
        rows = sp.MatMul(sp.HadamardProduct(G, P), sp.OneMatrix(k, 1), sp.OneMatrix(1, k))
        return sp.HadamardProduct(P, sp.MatAdd(G, -rows))
    return expr.replace(lambda x: isinstance(x, SoftmaxVJP), closed)


def edge_expr(d: Derivation, child: str, parent: str, generic: bool = False):
    """The label of the edge child ← parent: ∂child/∂parent, or the map δ_child ↦ VJP.

    With ``generic`` the map's variable is a bare δ (short figure labels).
    """
    e = closed_softmax(d, d.local[(child, parent)])
    if not d.graph.shape(child):
        return e
    adj = delta(d.graph, child)
    if generic:
        g = AdjointMatrix(GENERIC, *adj.shape)
        e, adj = e.xreplace({adj: g}), g
    return PassOn(adj, e) if e == adj else sp.Lambda(adj, e)


class PassOn(sp.Lambda):
    """δ ↦ δ: an edge that passes its node's adjoint on unchanged, the variable kept.

    SymPy makes ``Lambda(δ, δ)`` its ``IdentityFunction``, whose variable is a
    dummy x: the edge printed "(x ↦ x)" where every other edge reads "(δ ↦ …)".
    """

    def __new__(cls, signature, expr):
        sig = sp.Tuple(*signature) if isinstance(signature, (tuple, sp.Tuple)) else sp.Tuple(signature)
        return sp.Expr.__new__(cls, sig, sp.sympify(expr, strict=True))     # a SymPy δ, never text


PENALTY = sp.Symbol("P")


def edge_partial(d: Derivation, child: str, parent: str) -> Partial:
    """The symbol ∂child/∂parent of an edge; a penalty's edge from the loss to a weight is ∂P/∂W.

    L = (1/m)ΣCᵢ + P reaches W also directly, through the penalty P: writing that
    edge ∂L/∂W would make ∂L/∂W = ∂L/∂W + … read as circular.
    """
    g = d.graph
    if child == d.loss_name and not d.layout.loss_is_cost and g.kind(parent) == "param":
        return Partial(PENALTY, g.symbol(parent))
    return Partial(g.symbol(child), g.symbol(parent))


def compose(labels) -> sp.Expr:
    """What flows from the loss along a path whose edge labels are `labels` (in path order).

    A derivative multiplies what has arrived; a map δ ↦ VJP(δ) is applied to it.
    """
    labels = tuple(labels)
    # paths from the loss share their first edges (every weight of a block is reached through
    # the same later layers): each shared start is composed once, and kept
    k = len(labels)
    while k and labels[:k] not in _COMPOSED:
        k -= 1
    value = _COMPOSED[labels[:k]] if k else sp.S.One
    if len(_COMPOSED) > MAX_COMPOSED:
        _COMPOSED.clear()
    for i in range(k, len(labels)):
        value = _apply(value, labels[i])
        _COMPOSED[labels[:i + 1]] = value
    return value


_COMPOSED: dict = {}
MAX_COMPOSED = 20_000       # composed path starts kept (a long-running process renders many documents)


def _apply(value, lab):
    """One edge: a map applied to what has arrived, or a derivative multiplied."""
    if isinstance(lab, sp.Lambda):
        value = lab.expr.xreplace({lab.variables[0]: value})
    else:
        value = value * lab
    if is_matrix(value):
        value = value.doit() if value.has(sp.MatMul, sp.MatAdd) else value
    return value


def coefficient(lab):
    """The notes' shorthand of a map δ ↦ VJP(δ): (how, M) for δ M, M δ, δ ⊙ M or δ itself; else None."""
    if not isinstance(lab, sp.Lambda):
        return ("times", lab)
    dv, e = lab.variables[0], lab.expr
    if e == dv:
        return ("identity", sp.S.One)
    if isinstance(e, sp.MatMul):
        args = list(e.args)
        if args.count(dv) == 1 and not any(a.has(dv) for a in args if a != dv):
            rest = [a for a in args if a != dv]
            coeff = rest[0] if len(rest) == 1 else sp.MatMul(*rest)
            if args[0] == dv:
                return ("right", coeff)
            if args[-1] == dv:
                return ("left", coeff)
    if isinstance(e, sp.HadamardProduct) and dv in e.args and e.args.count(dv) == 1:
        rest = [a for a in e.args if a != dv]
        if not any(a.has(dv) for a in rest):
            return ("hadamard", rest[0] if len(rest) == 1 else sp.HadamardProduct(*rest))
    return None


def cost_adjoint(d: Derivation):
    """δ_C of a matrix graph's per-sample cost column (None for a scalar graph)."""
    name = getattr(d.graph, "cost_name", None)
    return delta(d.graph, name) if name and d.graph.shape(name) else None


def notes_chain(d: Derivation, path):
    """A path in the notes' form: (start node, δ at the start for one sample, coefficients), or None.

    The start is :func:`notes_start`'s; every factor after it must be a plain
    product, a transpose or an element-wise f'(Z).  For one sample δ_C is 1, so
    the start reads as in the notes.
    """
    st = notes_start(d, path)
    if st is None:
        return None
    k, node, first = st
    coeffs = []
    for f in path[k + 1:]:
        c = coefficient(edge_expr(d, f.of, f.wrt))
        if c is None:
            return None
        if c[0] != "identity" and not (c[0] == "hadamard" and _is_one(c[1])):
            coeffs.append(c[1])
    return node, first, coeffs


def notes_start(d: Derivation, path):
    """(index on the path, node, its δ for one sample) where a path from the costs starts, or None.

    The last node on the path whose adjoint the engine did not take from its
    predecessor's (an output block the engine fused, like softmax with
    cross-entropy, δ = Ŷ − Y); without one, the prediction (δ_Ŷ = ℓ'(Ŷ, Y)).
    """
    start = None
    for k, f in enumerate(path):
        node = f.wrt
        if node in d.adjoint and d.graph.shape(node) and \
                delta(d.graph, f.of) not in d.adjoint[node].atoms(AdjointMatrix) and f.of != d.loss_name:
            start = k
    dc = cost_adjoint(d)
    if start is None and dc is not None:
        # no fused block (an identity output): δ starts at the prediction, δ_Ŷ = ℓ'(Ŷ, Y)
        start = next((k for k, f in enumerate(path) if delta(d.graph, f.of) == dc), None)
    if start is None or dc is None:
        return None
    node = path[start].wrt
    return start, node, d.adjoint[node].xreplace({dc: sp.OneMatrix(*dc.shape)}).doit()


def _is_one(e) -> bool:
    from ..matrix import FPrime
    if isinstance(e, FPrime):
        w = sp.Dummy("w", real=True)
        return e.scalar(w) == 1
    return isinstance(e, sp.OneMatrix)
