"""Row standardisation (layer norm before its scale and shift) and its vector-Jacobian product.

:class:`RowNorm` is defined as matrix operations (:meth:`RowNorm.definition`), which the
exact and numeric evaluations and compiled code without the library's kernel use; its VJP is
the closed form of :func:`rownorm_vjp`, used only after :func:`prove_rownorm_vjp` has proved
it equal to SymPy's derivative of the definition; with the printer's ``layer_norm`` kernel it
lowers to one statement forward and one backward.
"""
from __future__ import annotations

import functools

import sympy as sp

from ..errors import DefinitionError
from .base import ENTRY, Kind, elementwise, is_matrix

__all__ = ["RowNorm", "LayerNorm", "layer_norm", "rownorm_vjp", "prove_rownorm_vjp"]


class RowNorm(Kind, sp.MatrixExpr):
    """Each row of H standardised: Ĥ_ij = (H_ij − μ_i)/σ_i, with the row's mean μ_i and
    σ_i = √(var_i + ε) (the biased variance), layer norm before its scale and shift.

    ``RowNorm(H, eps)``; :meth:`definition` writes it as matrix operations, which the
    compiled code and the exact evaluation use; its VJP is the closed form of
    :func:`rownorm_vjp`, proved equal to the derivative of this definition.
    """

    node_prefix = "Hhat_"

    def __new__(cls, arg, eps=sp.Rational(1, 10**5)):
        if not is_matrix(arg):
            raise DefinitionError(f"layer_norm takes a matrix (a row per position), got {arg!r}")
        eps = sp.nsimplify(eps) if not isinstance(eps, sp.Basic) else eps
        if not (eps.is_number and eps.is_nonnegative):
            raise DefinitionError(f"layer_norm: eps must be a number >= 0, got {eps}")
        return super().__new__(cls, arg, eps)

    @property
    def arg(self):
        """H."""
        return self.args[0]

    @property
    def eps(self):
        """ε, added to the variance."""
        return self.args[1]

    @property
    def shape(self):
        return self.args[0].shape

    def rstd(self):
        """The T×1 column 1/σ = 1/√(var + ε), as matrix operations on H."""
        H, d = self.arg, self.shape[1]
        one = sp.OneMatrix(d, 1)
        centred = sp.MatAdd(H, -sp.MatMul(H, one, one.T) / d)
        var = sp.MatMul(sp.HadamardProduct(centred, centred), one) / d
        # the one shared entry variable: equal definitions are equal expressions (shared code)
        return elementwise(sp.Lambda(ENTRY, 1 / sp.sqrt(ENTRY + self.eps)), var), centred

    def definition(self):
        """Ĥ = (H − μ𝟏ᵀ) ⊙ (σ⁻¹ 𝟏ᵀ), as matrix operations."""
        return _rownorm_definition(self)

    def vjp(self, D, parent, P=None):
        """δ_H for δ_Ĥ = D: :func:`rownorm_vjp`."""
        return rownorm_vjp(self, D, P)

    def lower(self, lo, target=None):
        """Ĥ = norm(H) by the library's layer-norm kernel: a ``layer_norm`` statement (Ĥ with
        each row's mean and 1/σ, which the backward kernel reads) and Ĥ, its item 0; without
        the kernel, the definition's matrix operations."""
        if "layer_norm" not in lo.kernels:
            return lo.scalar(self.definition())
        h = lo.materialize(lo.scalar(self.arg))
        pair = lo.emit("layer_norm", (h, self.eps), tuple(self.shape))
        value = lo.emit("pair_item", (pair, 0), tuple(self.shape))
        if target is not None:          # its closed-form VJP reads the statement's mean and 1/σ
            lo.recorded.setdefault(RowNorm, {})[target] = (self, pair)
        return value

    @classmethod
    def lower_vjp(cls, lo, e, recorded):
        """The ``layer_norm_vjp`` kernel when `e` is exactly the closed form :func:`rownorm_vjp`
        derives for a RowNorm node of this graph and some δ_Ĥ = D (rebuilt from each term of
        `e`'s sum and compared), else None."""
        inner = next((a for a in e.args if isinstance(a, sp.MatAdd)), None)
        if "layer_norm" not in lo.kernels or len(e.args) != 2 or inner is None:
            return None
        for p, (n, pair) in recorded.items():
            if p not in e.free_symbols:
                continue
            for d in inner.args:
                closed = rownorm_vjp(n, d, p)
                if e == closed or e == closed.doit():      # (the engine's sums are doit()-ed)
                    h = lo.made[pair].args[0]
                    return lo.emit("layer_norm_vjp", (lo.materialize(lo.scalar(d)), pair, h, n.eps),
                                   tuple(e.shape))
        return None

    def _latex(self, printer, exp=None):
        return r"\operatorname{norm}\left(%s\right)" % printer._print(self.arg)


@functools.lru_cache(maxsize=256)
def _rownorm_definition(N: RowNorm):
    # built once per node: every numeric evaluation of the forward pass asks for it
    r, centred = N.rstd()
    return sp.HadamardProduct(centred, sp.MatMul(r, sp.OneMatrix(1, N.shape[1])))


def layer_norm(H, gamma, beta, eps=sp.Rational(1, 10**5)):
    """Layer normalisation of each row of H: norm(H) ⊙ 𝟏γ + 𝟏β with norm(H)'s rows standardised
    (mean 0, biased variance 1, ε added to the variance); γ, β are 1×d rows.  A
    :class:`LayerNorm`: the graph gives it a node of its own wherever it is written."""
    if not is_matrix(H):
        raise DefinitionError(f"layer_norm takes a matrix (a row per position), got {H!r}")
    if H.shape[1] == 1:     # one column minus its own mean: 0 whatever the input, no gradient
        raise DefinitionError("layer_norm of rows of width 1 is 0 for every input: normalise rows of width 2 or more")
    for what, v in (("gamma", gamma), ("beta", beta)):
        if not is_matrix(v) or tuple(v.shape) != (1, H.shape[1]):
            raise DefinitionError(f"layer_norm: {what} must be a 1×{H.shape[1]} matrix, got {v!r}")
    return LayerNorm(RowNorm(H, eps), gamma, beta)


class LayerNorm(Kind, sp.MatrixExpr):
    """``layer_norm(H, γ, β)`` as written: norm(H) ⊙ 𝟏γ + 𝟏β, held whole until the graph
    gives it a node (``N_<name>`` inside a larger expression, or the node it defines), where
    :meth:`node_form` writes it out.  SymPy's matrix calculus cannot take the γ ⊙ … + β form
    inside a product or a function (a ShapeError, an IndexError): as a node of its own it can.
    """

    node_prefix = "N_"

    @property
    def shape(self):
        return self.args[0].shape

    def node_form(self):
        """norm(H) ⊙ 𝟏γ + 𝟏β: what a node defined by this layer norm holds."""
        norm, gamma, beta = self.args
        rows = sp.OneMatrix(norm.shape[0], 1)
        return sp.MatAdd(sp.HadamardProduct(norm, sp.MatMul(rows, gamma)), sp.MatMul(rows, beta))

    def definition(self):
        """The same, for an evaluator that meets it before the graph has."""
        return self.node_form()

    def _latex(self, printer, exp=None):
        norm, gamma, beta = self.args
        return r"\operatorname{LN}\left(%s\right)" % ", ".join(printer._print(a) for a in (norm.arg, gamma, beta))


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


@functools.lru_cache(maxsize=None)
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
