"""Batch normalisation's backward in a document, in its compact three-term form.

``sb.BatchNorm()`` standardises each column of the batch H (m × d, rows are samples) with the
batch's mean μ and biased variance, Ĥ = (H − 𝟏μ) ⊙ 𝟏σ⁻¹ (σ = √(var + ε), rows 1 × d), then
N = Ĥ ⊙ 𝟏γ + 𝟏β.  Every sample's δ depends on the whole batch; the textbook writes it

    δ_Ĥ = δ_N ⊙ 𝟏γ,
    δ_H = 𝟏σ⁻¹ ⊙ (δ_Ĥ − (1/m) 𝟏𝟏ᵀ δ_Ĥ − Ĥ ⊙ (1/m) 𝟏𝟏ᵀ (δ_Ĥ ⊙ Ĥ)),

the means taken down each column.  :func:`prove` has SymPy check this equal, entry by entry
with symbolic entries on a batch of 3 and 2 columns, to what the engine derives for a graph
holding one batch norm (the engine sees a layer norm of the transposed batch); the section's
two lines are chains [the engine's δ, the closed form] that the document certificate checks.
"""
from __future__ import annotations

from functools import lru_cache

import sympy as sp

from ..engine import delta
from ..errors import DefinitionError
from ..matrix import BATCH, RowNorm, explicit
from ..printing import Tex, latex

__all__ = ["batchnorm", "closed_form", "textbook", "prove", "layers", "rstd_symbol"]


def rstd_symbol(l: str, width) -> sp.MatrixSymbol:
    """σ_l⁻¹, the 1 × width row of batch norm l's 1/σ (its section and every other line use it)."""
    return sp.MatrixSymbol(r"\sigma_{%s}^{-1}" % l, 1, width)


def closed_form(D, Hhat, rstd, m):
    """δ_H from δ_Ĥ = D, Ĥ and the row σ⁻¹ (1 × d), as matrix operations: the three terms."""
    ones = sp.OneMatrix(m, 1)
    mean = lambda A: sp.MatMul(ones, ones.T, A) / m          # noqa: E731 (column means, spread)
    return sp.HadamardProduct(sp.MatMul(ones, rstd), sp.MatAdd(D, -mean(D), -sp.HadamardProduct(
        Hhat, mean(sp.HadamardProduct(D, Hhat)))))


def _closed_tex(D, Hhat, rstd, m) -> str:
    """The closed form printed term by term in the textbook's order (SymPy's printer sorts the
    terms of a sum and the factors of ⊙), from the very sub-expressions of :func:`closed_form`."""
    ones = sp.OneMatrix(m, 1)
    mean = lambda A: latex(sp.MatMul(ones, ones.T, A) / m)          # noqa: E731
    return r"\left(%s\right) \odot \left(%s - %s - %s \odot %s\right)" % (
        latex(sp.MatMul(ones, rstd)), latex(D), mean(D), latex(Hhat), mean(sp.HadamardProduct(D, Hhat)))


def textbook(H, D, gamma, eps) -> sp.ImmutableMatrix:
    """The closed form on explicit H (m × d), δ_N = D and γ (1 × d), entry by entry."""
    m, d = H.shape
    mu = [sum(H[i, j] for i in range(m)) / m for j in range(d)]
    sigma = [sp.sqrt(sum((H[i, j] - mu[j]) ** 2 for i in range(m)) / m + eps) for j in range(d)]
    hat = sp.Matrix(m, d, lambda i, j: (H[i, j] - mu[j]) / sigma[j])
    dhat = sp.Matrix(m, d, lambda i, j: D[i, j] * gamma[0, j])
    colmean = lambda A, j: sum(A[i, j] for i in range(m)) / m          # noqa: E731
    return sp.ImmutableMatrix(m, d, lambda i, j: (dhat[i, j] - colmean(dhat, j) - hat[i, j] * colmean(
        dhat.multiply_elementwise(hat), j)) / sigma[j])


def _engine(H, D, gamma, eps) -> sp.ImmutableMatrix:
    """The engine's δ_H for L = tr(Dᵀ N), N the batch norm of H (built as symback.nn builds it),
    written out for the explicit matrices."""
    from ..engine import derive
    from ..graph import Graph
    m, d = H.shape
    net = Graph()
    Hs = net.params("H", shape=(m, d))
    gs, bs = net.params("gamma beta", shape=[(1, d)] * 2)
    Ds = net.targets("D", shape=(m, d))
    T = net.node("T", Hs.T)
    Nt = net.node("Nt", RowNorm(T, eps))
    rows = sp.OneMatrix(m, 1)
    net.node("N", sp.HadamardProduct(Nt.T, rows @ gs) + rows @ bs)
    net.loss(sp.Trace(Ds.T @ net.symbol("N")))
    dv = derive(net)
    at = {Hs: H, Ds: D, gs: gamma, bs: sp.ImmutableMatrix(1, d, [0] * d)}
    for n in ("T", "Nt"):
        at[net.symbol(n)] = explicit(net.expr(n).xreplace(at), m)
    return explicit(dv.gradient("H").xreplace(at), m)


@lru_cache(maxsize=None)
def prove(m: int = 3, d: int = 2) -> bool:
    """SymPy's check, with symbolic entries, that the three-term form is the engine's δ_H.
    σ_j = √(var_j + ε) is named S_j on both sides; the difference must vanish identically."""
    eps = sp.Rational(1, 10 ** 5)
    H = sp.ImmutableMatrix(m, d, lambda i, j: sp.Symbol(f"h_{i}_{j}", real=True))
    D = sp.ImmutableMatrix(m, d, lambda i, j: sp.Symbol(f"d_{i}_{j}", real=True))
    gamma = sp.ImmutableMatrix(1, d, lambda _, j: sp.Symbol(f"g_{j}", real=True))
    mu = [sum(H[:, j]) / m for j in range(d)]
    var = [sp.expand(sum((H[i, j] - mu[j]) ** 2 for i in range(m)) / m + eps) for j in range(d)]
    S = sp.symbols(f"S0:{d}", positive=True)

    def named(e):           # each (var_j + ε)^(k/2) as S_j^k, whichever way the variance was written
        def swap(p):
            j = next((j for j in range(d) if sp.expand(p.base) == var[j]), None)
            if j is None:
                raise DefinitionError(f"internal: an unexpected radical {p} in batch norm's backward")
            return S[j] ** (2 * p.exp)
        return e.replace(lambda x: x.is_Pow and x.exp.is_Rational and x.exp.q == 2, swap)
    diff = (_engine(H, D, gamma, eps) - textbook(H, D, gamma, eps)).applyfunc(named)
    if diff.applyfunc(lambda e: sp.expand(e)) != sp.zeros(m, d):
        raise DefinitionError("internal: batch norm's three-term backward is not the engine's")
    return True


def layers(g) -> list[tuple[str, str, str, str]]:
    """(H, T, Nt, N) node names of each batch norm N = norm(Tᵀ)ᵀ ⊙ 𝟏γ + 𝟏β, T = Hᵀ, H's rows the batch."""
    found = []
    for n in g.node_names:
        e = g.expr(n)
        if not (isinstance(e, RowNorm) and e.arg in (g.symbol(t) for t in g.node_names)):
            continue
        t = str(e.arg.name)
        te = g.expr(t)
        if not (isinstance(te, sp.Transpose) and te.arg.shape[0] == BATCH and g.children(n)):
            continue
        h = next((p for p in g.parents(t) if g.symbol(p) == te.arg), None)
        if h is not None and g.children(h) == [t] and len(g.children(n)) == 1:
            found.append((h, t, n, g.children(n)[0]))
    return found


def batchnorm(d, names: dict) -> dict | None:
    """The document's batch-norm section (None without a batch norm).  The named symbols
    δ_Ĥ, Ĥ and σ⁻¹ it prints are added to ``names`` (the certificate reads their meanings)."""
    g = d.graph
    found = layers(g)
    if not found:
        return None
    prove()
    out = []
    for h, t, nt, n in found:
        if h not in d.adjoint or nt not in d.adjoint:
            continue        # a batch norm of the data: no δ flows back through it, nothing to show
        l = "".join(ch for ch in n if ch.isdigit())
        H = g.symbol(h)
        m, w = H.shape
        gamma, beta = (next(s for s in g.expr(n).atoms(sp.MatrixSymbol) if str(s.name).startswith(p))
                       for p in ("gamma", "beta"))
        dhat = sp.MatrixSymbol(r"\delta_{\hat{H}_{%s}}" % l, m, w)
        hat = sp.MatrixSymbol(r"\hat{H}_{%s}" % l, m, w)
        rstd = rstd_symbol(l, w)
        r, _ = g.expr(nt).rstd()
        names.update({dhat: sp.HadamardProduct(delta(g, n), sp.MatMul(sp.OneMatrix(m, 1), gamma)),
                      hat: g.symbol(nt).T, rstd: r.T})
        dhat_line = [dhat, names[dhat], delta(g, nt).T]
        dh_line = [delta(g, h), closed_form(dhat, hat, rstd, m)]
        out.append({"layer": l, "H": Tex(latex(H)), "N": Tex(latex(g.symbol(n))), "gamma": Tex(latex(gamma)),
                    "beta": Tex(latex(beta)), "Nt": Tex(latex(g.symbol(nt))), "delta_H": Tex(latex(dh_line[0])),
                    "dhat": {"tex": Tex(" = ".join(latex(e) for e in dhat_line)), "sympy": {"chain": dhat_line}},
                    "dH": {"tex": Tex(latex(dh_line[0]) + " = " + _closed_tex(dhat, hat, rstd, m)),
                           "sympy": {"chain": dh_line}}})
    return {"layers": out} if out else None
