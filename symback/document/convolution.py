"""A convolution's backward, in the textbook's index form, proved equal to the engine's.

For a network with a convolution Z = Kᵀ unfold(A) + bᵀ𝟏ᵀ the engine derives
∂L/∂K = unfold(A) δ_Zᵀ and δ_A = fold(K δ_Z) (fold: unfold's proved adjoint).  The
textbook says the same thing with indices:

* ∂L/∂K is the **correlation** of the input with δ:
  (∂L/∂K)_{(c,i,j),o} = Σ_{y,x} A_{c, s·y+i−p, s·x+j−p} δ_{o,y,x};
* ∂L/∂A is the **full convolution** of δ, dilated by the stride (s−1 zeros between its
  entries: δ̃), with the flipped kernel, cropped by the padding:
  (∂L/∂A)_{c,a,b} = Σ_{o,i,j} K_{(c,i,j),o} δ̃_{o, a+p−i, b+p−j}.

Both formulas are SymPy expressions (``Sum`` of ``Indexed``); :func:`prove_views`
instantiates them on small concrete geometries (one channel, 4×4 input, 2×2 kernel; stride 2
with padding 1; two channels in and out) with symbolic entries and has SymPy check them
equal, entry by entry, to the engine's derivation of a graph holding one convolution.
:func:`worked_example` evaluates the same formulas on a 4×4 image and a 2×2 kernel, and its
displayed lines are chains [the engine's formula at these numbers, the index formula's
numbers] that the document certificate checks.
"""
from __future__ import annotations

from functools import lru_cache

import sympy as sp

from ..errors import DefinitionError
from ..image import ImageMap, unfold
from ..matrix import explicit
from ..printing import Tex, latex

__all__ = ["convolution", "prove_views", "index_formulas", "worked_example"]

_i, _j, _y, _x, _a, _b, _c, _o = sp.symbols("i j y x a b c o", integer=True, nonnegative=True)
_A, _K, _D, _Dt, _GK, _GA = (sp.IndexedBase(n) for n in ("A", "K", r"\delta", r"\tilde{\delta}",
                                                          r"\left(\frac{\partial L}{\partial K}\right)",
                                                          r"\left(\frac{\partial L}{\partial A}\right)"))


def index_formulas(k, stride, padding, Ho, Wo, C_out):
    """(∂L/∂K entry, its correlation sum), (∂L/∂A entry, its full-convolution sum): SymPy
    equations in the indices (any of the arguments may be a symbol)."""
    s, p = stride, padding
    wgrad = sp.Sum(_A[_c, s * _y + _i - p, s * _x + _j - p] * _D[_o, _y, _x], (_y, 0, Ho - 1), (_x, 0, Wo - 1))
    igrad = sp.Sum(_K[(_c, _i, _j), _o] * _Dt[_o, _a + p - _i, _b + p - _j],
                   (_o, 0, C_out - 1), (_i, 0, k - 1), (_j, 0, k - 1))
    return (_GK[(_c, _i, _j), _o], wgrad), (_GA[_c, _a, _b], igrad)


def _evaluate(formula, at: dict, X, K, D, g):
    """The index formula with concrete indices and geometry g = (C, H, W, k, s, p), its terms'
    entries read from the explicit matrices X (C×H·W), K (C·k·k×C_out), D (C_out×H'·W');
    entries outside an image (padding, δ̃ between or beyond δ's entries) are 0."""
    C, H, W, k, s, p = g
    Ho, Wo = (H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1

    def entry(e):
        base, idx = e.base, [int(v) for v in _flat(e.indices)]
        if base == _A:
            c, r, q = idx
            return X[c, r * W + q] if 0 <= r < H and 0 <= q < W else sp.S.Zero
        if base == _D:
            o, y, x = idx
            return D[o, y * Wo + x]
        if base == _Dt:             # δ dilated by the stride: δ's entries at multiples of s
            o, u, v = idx
            if u % s or v % s or not (0 <= u // s < Ho and 0 <= v // s < Wo):
                return sp.S.Zero
            return D[o, (u // s) * Wo + v // s]
        (c, i, j), o = idx[:3], idx[3]
        return K[(c * k + i) * k + j, o]
    e = formula.xreplace(at).doit()
    return e.replace(lambda t: isinstance(t, sp.Indexed), entry)


def _flat(indices):
    for v in indices:
        if isinstance(v, sp.Tuple):
            yield from v
        else:
            yield v


def _engine(g, X, K, D):
    """The engine's ∂L/∂K and ∂L/∂A for L = tr(Dᵀ Kᵀ unfold(A)) (δ_Z = D), written out for
    the explicit matrices X, K, D."""
    from ..engine import derive
    from ..graph import Graph
    C, H, W, k, s, p = g
    net = Graph()
    A = net.params("A", shape=(C, H * W))
    Ks = net.params("K", shape=tuple(K.shape))
    Ds = net.targets("D", shape=tuple(D.shape))
    U = net.node("U", unfold(A, (C, H, W), k, s, p))
    net.node("Z", Ks.T @ U)
    net.loss(sp.Trace(Ds.T @ net.symbol("Z")))
    d = derive(net)
    at = {A: X, Ks: K, Ds: D, net.symbol("U"): ImageMap(X, "unfold", g).apply(X)}
    return [explicit(d.gradient(n).xreplace(at), 1) for n in ("K", "A")]


def _views(g, X, K, D):
    """(engine's ∂L/∂K, formula's), (engine's ∂L/∂A, formula's) as explicit matrices."""
    C, H, W, k, s, p = g
    Co = K.shape[1]
    Ho, Wo = (H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1
    (_, wgrad), (_, igrad) = index_formulas(k, s, p, Ho, Wo, Co)
    eK, eA = _engine(g, X, K, D)
    fK = sp.ImmutableMatrix(C * k * k, Co, lambda r, o: _evaluate(
        wgrad, {_c: r // (k * k), _i: r // k % k, _j: r % k, _o: o}, X, K, D, g))
    fA = sp.ImmutableMatrix(C, H * W, lambda c, q: _evaluate(
        igrad, {_c: c, _a: q // W, _b: q % W}, X, K, D, g))
    return (eK, fK), (eA, fA)


#: the geometries (C, H, W, k, stride, padding, C_out) the index forms are proved on
CASES = [(1, 4, 4, 2, 1, 0, 1), (1, 4, 4, 2, 2, 1, 1), (2, 4, 3, 2, 2, 1, 2)]


@lru_cache(maxsize=None)
def prove_views() -> bool:
    """SymPy's check, with symbolic entries, that the correlation and full-convolution index
    forms equal the engine's ∂L/∂K and ∂L/∂A on each of :data:`CASES`.  Raises if not."""
    for case in CASES:
        C, H, W, k, s, p, Co = case
        g = (C, H, W, k, s, p)
        Ho, Wo = (H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1
        X = sp.ImmutableMatrix(C, H * W, lambda r, q: sp.Symbol(f"x_{r}_{q}", real=True))
        K = sp.ImmutableMatrix(C * k * k, Co, lambda r, q: sp.Symbol(f"k_{r}_{q}", real=True))
        D = sp.ImmutableMatrix(Co, Ho * Wo, lambda r, q: sp.Symbol(f"d_{r}_{q}", real=True))
        for engine, formula in _views(g, X, K, D):
            if (engine - formula).expand() != sp.zeros(*engine.shape):
                raise DefinitionError(f"internal: a convolution's index form is not the engine's at {case}")
    return True


# a 4×4 image, a 2×2 kernel, δ of the 3×3 output: small integers, so every number is exact
_X = [[1, 2, 0, 1], [0, 1, 3, 1], [2, 0, 1, 2], [1, 1, 0, 3]]
_KER = [[1, -1], [2, 0]]
_DELTA = [[1, 0, -1], [2, 1, 0], [0, -1, 1]]


def worked_example() -> dict:
    """The 4×4 image, the 2×2 kernel and δ as grids, with ∂L/∂K and ∂L/∂X from the index
    formulas; each result's chain is [the engine's formula at these numbers, the index form's]."""
    g = (1, 4, 4, 2, 1, 0)
    X = sp.ImmutableMatrix([sum(_X, [])])
    K = sp.ImmutableMatrix(4, 1, sum(_KER, []))
    D = sp.ImmutableMatrix([sum(_DELTA, [])])
    U = ImageMap(X, "unfold", g)
    (_, fK), (_, fA) = _views(g, X, K, D)
    # the engine's forms (U δᵀ and fold(K δ)) on these numbers, unevaluated: the certificate
    # evaluates them from the image maps' definitions and compares with the index forms
    engine_K, engine_A = U.apply(X) * D.T, ImageMap(K * D, "fold", g)
    grid = lambda m, r, c: Tex(latex(sp.ImmutableMatrix(r, c, list(m))))     # noqa: E731
    return {"X": grid(X, 4, 4), "K": grid(K, 2, 2), "delta": grid(D, 3, 3),
            "dK": {"value": grid(fK, 2, 2), "sympy": {"chain": [engine_K, fK]}},
            "dX": {"value": grid(fA, 4, 4), "sympy": {"chain": [engine_A, fA]}}}


def convolution(d) -> dict | None:
    """The document's convolution section for a derivation with a convolution, else None."""
    g = d.graph
    convs = [n for n in g.node_names if isinstance(g.expr(n), ImageMap) and g.expr(n).op == "unfold"]
    if not convs:
        return None
    prove_views()
    s, p, Ho, Wo, k, Co = sp.symbols("s p H' W' k C_{out}", integer=True, positive=True)
    (lk, wgrad), (la, igrad) = index_formulas(k, s, p, Ho, Wo, Co)
    geometry = [tuple(g.expr(n).geometry) for n in convs]
    # each convolution named by its kernel (the parameter beside the patch matrix in Kᵀ U + …)
    kernels = [next((p for p in g.param_names if p in {str(a) for c in g.children(n) for a in g.expr(c).atoms(
        sp.MatrixSymbol)}), n) for n in convs]
    return {"layers": [{"name": Tex(latex(g.symbol(kn))), "k": geo[3], "stride": geo[4], "padding": geo[5]}
                       for kn, geo in zip(kernels, geometry)],
            "wgrad": Tex(latex(sp.Eq(lk, wgrad, evaluate=False))),
            "igrad": Tex(latex(sp.Eq(la, igrad, evaluate=False))),
            "cases": [Tex(r"C_{in}=%d,\ %d\times%d,\ k=%d,\ s=%d,\ p=%d,\ C_{out}=%d" % c) for c in CASES],
            "worked": worked_example()}
