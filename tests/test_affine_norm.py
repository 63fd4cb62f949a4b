"""A row norm's γ, β and their δ by torch's layer-norm kernels with weight and bias
(symback.affine_norm): ``native_layer_norm(H, γ, β)`` and ``native_layer_norm_backward``'s
(δH, δγ, δβ) where the derived statements are exactly β + γ ⊙ Ĥ and its backward.

Oracles: PyTorch autograd of the transformer block written with ``torch.nn.functional``
(``layer_norm`` with weight and bias), float64, relative 1e-8 — loss, every gradient, a step;
the same network printed without the kernel; the pass on statement lists it must leave alone
(another scale of γ, Ĥ read elsewhere, δĤ not γ ⊙ δN, a partial sum read elsewhere).
"""
from __future__ import annotations

import pytest
import sympy as sp

from symback.affine_norm import affine_norms
from symback.lowering import Stmt, select
from symback.printing.torch import TorchPrinter

torch = pytest.importorskip("torch")
from _torch_block import Low, check_against_autograd, check_vjp, model, net, on_cpu  # noqa: E402  (needs torch)


@pytest.mark.parametrize("T, d, heads, causal", [(5, 4, 1, False), (6, 4, 2, True), (4, 8, 4, False)])
def test_norms_by_the_kernels_equal_torch_autograd(T, d, heads, causal):
    dv, params, X, Y = net(T, d, heads, causal)
    m = model(dv, TorchPrinter())
    step = on_cpu(m._ns["__source__"], "_step")
    assert "gamma1.view(-1), beta1.view(-1)" in step and "(False, True, True))" in step     # δX not needed
    assert "gamma3.view(-1), beta3.view(-1), (True, True, True))" in step and "addcmul" not in step
    plain = TorchPrinter()
    plain.kernels = plain.kernels - {"layer_norm_affine"}
    assert "view(-1)" not in model(dv, plain)._ns["__source__"]
    check_against_autograd(m, params, X, Y, heads, causal)
    check_vjp(m, params, X, heads, causal)      # the layer's VJP: δX from the norm's kernel too


# ------------------------------------------------------------------ the pass on statement lists
M, T, D = sp.Symbol("m"), 3, 4


class _Fn:
    def __init__(self, low, keep):
        self.low, self.printer, self.keep = low, TorchPrinter(), set(keep)


def _stmts(n_scale=1, dh_scale=1, hat_kept=False, partial_kept=False):
    """Ĥ = norm(H), N = β + γ ⊙ Ĥ; from δN: the norm's VJP of γ ⊙ δN, δγ = ΣΣ Ĥ ⊙ δN, δβ = ΣΣ δN."""
    H, G, g, b, P, hat, N, dh, v, pr, s1, dg, b1, db = sp.symbols("H G gamma beta P hat N dh v pr s1 dg b1 db")
    full, row = (M, T, D), (1, D)
    st = [Stmt(g, "param", ("gamma",), row), Stmt(b, "param", ("beta",), row),
          Stmt(P, "layer_norm", (H, sp.Rational(1, 10**5)), full), Stmt(hat, "pair_item", (P, 0), full),
          Stmt(N, "let", (b + n_scale * g * hat,), full), Stmt(dh, "let", (dh_scale * g * G,), full),
          Stmt(v, "layer_norm_vjp", (dh, P, H, sp.Rational(1, 10**5)), full),
          Stmt(pr, "let", (hat * G,), full), Stmt(s1, "bsum", (pr,), (T, D)), Stmt(dg, "bsum", (s1,), (D,)),
          Stmt(b1, "bsum", (G,), (T, D)), Stmt(db, "bsum", (b1,), (D,))]
    shapes = {H: full, G: full, **{s.target: s.shape for s in st}}
    keep = {N, v, dg, db} | ({hat} if hat_kept else set()) | ({s1} if partial_kept else set())
    return st, _Fn(Low(shapes), keep)


def test_pass_reads_the_statements_as_the_kernels():
    stmts, fn = _stmts()
    ops = sorted(st.op for st in select(affine_norms(stmts, fn), fn.keep))
    assert ops == ["layer_norm_affine", "layer_norm_affine_vjp", "pair_item", "pair_item", "pair_item", "pair_item",
                   "param", "param"], ops


@pytest.mark.parametrize("case", [dict(n_scale=2), dict(dh_scale=2), dict(hat_kept=True), dict(partial_kept=True)])
def test_pass_leaves_other_statements_alone(case):
    stmts, fn = _stmts(**case)
    assert affine_norms(stmts, fn) == stmts
