"""A row norm's γ, β and their δ by torch's layer-norm kernels with weight and bias
(symback.affine_norm): ``native_layer_norm(H, γ, β)`` and ``native_layer_norm_backward``'s
(δH, δγ, δβ) where the derived statements are exactly β + γ ⊙ Ĥ and its backward.

Oracles: PyTorch autograd of the transformer block written with ``torch.nn.functional``
(``layer_norm`` with weight and bias), float64, relative 1e-8 — loss, every gradient, a step;
the same network printed without the kernel; the pass on statement lists it must leave alone
(another scale of γ, Ĥ read elsewhere, δĤ not γ ⊙ δN, a partial sum read elsewhere).
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import sympy as sp

import symback as sb
from symback.affine_norm import affine_norms
from symback.compile import _load, model_class
from symback.lowering import Stmt, select
from symback.module import codegen_module
from symback.printing.torch import TorchPrinter

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _close(a, b, rtol=1e-8):
    a = np.asarray(a.detach() if isinstance(a, torch.Tensor) else a, dtype=np.float64)
    b = np.asarray(b.detach() if isinstance(b, torch.Tensor) else b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    assert float(np.abs(a - b).max()) <= rtol * max(1.0, float(np.abs(b).max()))


def _model(dv, printer):
    return model_class("torch")(dv, "float64", _load(codegen_module(dv, "float64", printer, vjp=True)))


def _predict(x, t, heads, causal):
    n, T, d = x.shape
    split = lambda z: z.reshape(n, T, heads, d // heads).transpose(1, 2)       # noqa: E731
    a = F.layer_norm(x, (d,), t["gamma1"][0], t["beta1"][0], eps=1e-5)
    o = F.scaled_dot_product_attention(split(a @ t["Wq2"]), split(a @ t["Wk2"]), split(a @ t["Wv2"]), is_causal=causal)
    h = x + o.transpose(1, 2).reshape(n, T, d) @ t["Wo2"]
    a = F.layer_norm(h, (d,), t["gamma3"][0], t["beta3"][0], eps=1e-5)
    h = h + F.gelu(a @ t["W4"] + t["b4"], approximate="tanh") @ t["W5"] + t["b5"]
    return h @ t["W6"] + t["b6"]


@pytest.mark.parametrize("T, d, heads, causal", [(5, 4, 1, False), (6, 4, 2, True), (4, 8, 4, False)])
def test_norms_by_the_kernels_equal_torch_autograd(T, d, heads, causal):
    net = sb.Sequential(sb.TransformerBlock(heads=heads, hidden=2 * d, causal=causal), sb.Dense(d),
                        inputs=(T, d), loss="mse")
    dv = sb.derive(net)
    rng = np.random.default_rng(7 * T + d)
    params = {p: np.asarray(v) + 0.2 * rng.normal(size=np.shape(v)) for p, v in sb.compile(dv).init(seed=1).items()}
    X, Y = rng.normal(size=(3, T, d)), rng.normal(size=(3, T, d))
    m = _model(dv, TorchPrinter())
    src = m._ns["__source__"]
    step = src[src.index("def _step("):src.index("\ndef ", src.index("def _step(") + 1)]
    assert "gamma1.view(-1), beta1.view(-1)" in step and "(False, True, True))" in step     # δX not needed
    assert "gamma3.view(-1), beta3.view(-1), (True, True, True))" in step and "addcmul" not in step
    plain = TorchPrinter()
    plain.kernels = plain.kernels - {"layer_norm_affine"}
    assert "view(-1)" not in _model(dv, plain)._ns["__source__"]
    t = {p: torch.tensor(v, requires_grad=True) for p, v in params.items()}
    L = ((_predict(torch.tensor(X), t, heads, causal) - torch.tensor(Y)) ** 2).sum(dim=(1, 2)).mean()
    L.backward()
    value, grads = m.value_and_grad(X, Y, params)
    assert value == pytest.approx(L.item(), rel=1e-8)
    for p in params:
        _close(grads[p], t[p].grad)
    moved = {p: torch.tensor(v) for p, v in params.items()}
    m.step(X, Y, moved, lr=0.1)
    for p in params:
        _close(moved[p], params[p] - 0.1 * t[p].grad.numpy())
    x = torch.tensor(X, requires_grad=True)
    t = {p: torch.tensor(v, requires_grad=True) for p, v in params.items()}
    Yhat = _predict(x, t, heads, causal)
    G = rng.normal(size=tuple(Yhat.shape))
    (Yhat * torch.tensor(G)).sum().backward()
    dX, vgrads = m.vjp(X, params, G)
    _close(dX, x.grad)
    for p in params:
        _close(vgrads[p], t[p].grad)


# ------------------------------------------------------------------ the pass on statement lists
M, T, D = sp.Symbol("m"), 3, 4


class _Low:
    def __init__(self, shapes):
        self.shapes, self.count = dict(shapes), itertools.count()

    def fresh(self):
        return sp.Symbol(f"u{next(self.count)}")


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
    return st, _Fn(_Low(shapes), keep)


def test_pass_reads_the_statements_as_the_kernels():
    stmts, fn = _stmts()
    ops = sorted(st.op for st in select(affine_norms(stmts, fn), fn.keep))
    assert ops == ["layer_norm_affine", "layer_norm_affine_vjp", "pair_item", "pair_item", "pair_item", "pair_item",
                   "param", "param"], ops


@pytest.mark.parametrize("case", [dict(n_scale=2), dict(dh_scale=2), dict(hat_kept=True), dict(partial_kept=True)])
def test_pass_leaves_other_statements_alone(case):
    stmts, fn = _stmts(**case)
    assert affine_norms(stmts, fn) == stmts
