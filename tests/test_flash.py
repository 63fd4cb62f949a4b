"""Causal multi-head attention by torch's fused attention kernels (symback.flash): the derived
statements of the forward and backward printed as ``_scaled_dot_product_flash_attention_for_cpu``
and its backward where they are exactly that computation.

Oracles: PyTorch autograd of the transformer block written with ``torch.nn.functional``
(``scaled_dot_product_attention(is_causal=True)``) at several head counts and sizes, float64,
relative 1e-8 — the loss, every gradient, a step; the source must show the kernels used, and
must not where the statements are something else (no mask, one head, P read elsewhere, a δQ
not scaled by the scores' scale, the kernel not in the printer's).
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import sympy as sp

import symback as sb
from symback.compile import _load, model_class
from symback.flash import flash_attention
from symback.lowering import Stmt, Tr
from symback.module import codegen_module
from symback.passes import select
from symback.printing.torch import TorchPrinter

torch = pytest.importorskip("torch")
F = torch.nn.functional
KERNEL = "_scaled_dot_product_flash_attention_for_cpu("
BACKWARD = "_scaled_dot_product_flash_attention_for_cpu_backward("


def _close(a, b, rtol=1e-8):
    a = np.asarray(a.detach() if isinstance(a, torch.Tensor) else a, dtype=np.float64)
    b = np.asarray(b.detach() if isinstance(b, torch.Tensor) else b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    assert float(np.abs(a - b).max()) <= rtol * max(1.0, float(np.abs(b).max()))


def _predict(x, t, heads, causal):
    """Pre-LN block (every head in one scaled_dot_product_attention call) then a Dense."""
    n, T, d = x.shape
    split = lambda z: z.reshape(n, T, heads, d // heads).transpose(1, 2)       # noqa: E731
    a = F.layer_norm(x, (d,), t["gamma1"][0], t["beta1"][0], eps=1e-5)
    o = F.scaled_dot_product_attention(split(a @ t["Wq2"]), split(a @ t["Wk2"]), split(a @ t["Wv2"]), is_causal=causal)
    h = x + o.transpose(1, 2).reshape(n, T, d) @ t["Wo2"]
    a = F.layer_norm(h, (d,), t["gamma3"][0], t["beta3"][0], eps=1e-5)
    h = h + F.gelu(a @ t["W4"] + t["b4"], approximate="tanh") @ t["W5"] + t["b5"]
    return h @ t["W6"] + t["b6"]


def _net(T, d, heads, causal):
    net = sb.Sequential(sb.TransformerBlock(heads=heads, hidden=2 * d, causal=causal), sb.Dense(d),
                        inputs=(T, d), loss="mse")
    dv = sb.derive(net)
    rng = np.random.default_rng(100 * heads + 10 * T + d)
    params = {p: np.asarray(v) + 0.2 * rng.normal(size=np.shape(v)) for p, v in sb.compile(dv).init(seed=1).items()}
    return dv, params, rng.normal(size=(3, T, d)), rng.normal(size=(3, T, d))


def _function(src, name):
    start = src.index(f"def {name}(")
    return src[start:src.index("\ndef ", start + 1)]


def _model(dv, printer):
    return model_class("torch")(dv, "float64", _load(codegen_module(dv, "float64", printer, vjp=True)))


CASES = [(T, d, heads, causal, grouped) for (T, d, heads), causal, grouped in
         itertools.product([(5, 4, 1), (6, 4, 2), (4, 8, 4), (7, 12, 4), (3, 6, 2)], (True, False), (False, True))]


@pytest.mark.parametrize("T, d, heads, causal, grouped", CASES)
def test_attention_by_the_fused_kernels_equals_torch_autograd(T, d, heads, causal, grouped):
    """The default torch printer (and the one that groups the heads): the kernels in the step and
    the gradient exactly for causal multi-head attention; loss, gradients, a step = autograd's."""
    dv, params, X, Y = _net(T, d, heads, causal)
    m = _model(dv, TorchPrinter(heads=grouped))
    src = m._ns["__source__"]
    used = causal and heads > 1
    for name in ("_step", "_grad"):
        body = _function(src, name)
        assert (KERNEL in body and BACKWARD in body) == used, body
        assert ("torch.softmax(" in body) != used and ("_softmax_backward_data(" in body) != used
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
    assert float(m.loss(X, Y, params)) == pytest.approx(L.item(), rel=1e-8)


def test_not_without_the_kernel_nor_where_p_is_exported():
    """A printer without the kernel prints the head-by-head statements (same values); forward(),
    which returns each head's P, keeps its softmax."""
    dv, params, X, Y = _net(6, 4, 2, True)
    plain = TorchPrinter()
    plain.kernels = plain.kernels - {"flash_attention"}
    a, b = _model(dv, plain), _model(dv, TorchPrinter())
    assert KERNEL not in a._ns["__source__"] and KERNEL not in _function(b._ns["__source__"], "forward")
    va, ga = a.value_and_grad(X, Y, params)
    vb, gb = b.value_and_grad(X, Y, params)
    assert vb == pytest.approx(va, rel=1e-10)
    for p in params:
        _close(gb[p], ga[p], rtol=1e-10)


# ------------------------------------------------------------------ the pass on statement lists
M, T, H, W = sp.Symbol("m"), 3, 2, 2
C = 1 / sp.sqrt(W)


class _Low:
    def __init__(self, shapes):
        self.shapes, self.count = dict(shapes), itertools.count()

    def fresh(self):
        return sp.Symbol(f"u{next(self.count)}")


class _Fn:
    """What the pass reads of a passes.Function (the heads already grouped: heads=True)."""

    def __init__(self, low, keep):
        self.low, self.printer, self.keep = low, TorchPrinter(heads=True), set(keep)


def _stmts(mask="causal", scale=C, extra_reader=False, dp_from_q=False):
    """The grouped statements of one attention's forward and backward (symback.heads' layout)."""
    Q, K, V, D = sp.symbols("Q K V D")
    qs, ks, vs, ds, S, P, O, Om, dP, dS, dV, dVm, dKh, dKm, dK, dQh, dQm, dQ, X = sp.symbols(
        "qs ks vs ds S P O Om dP dS dV dVm dKh dKm dK dQh dQm dQ X")
    full, heads, sq = (M, T, H * W), (M, H, T, W), (M, H, T, T)
    shapes = {Q: full, K: full, V: full, D: full}
    st = [Stmt(qs, "split_heads", (Q, H, False), heads), Stmt(ks, "split_heads", (K, H, False), heads),
          Stmt(vs, "split_heads", (V, H, False), heads), Stmt(ds, "split_heads", (D, H, False), heads),
          Stmt(S, "heads_masked_scores", (qs, Tr(ks), C, mask), sq), Stmt(P, "heads_softmax", (S,), sq),
          Stmt(O, "heads_matmul", (P, vs), heads), Stmt(Om, "merge_heads", (O,), full),
          Stmt(dP, "heads_matmul", (ds, Tr(qs if dp_from_q else vs)), sq), Stmt(dS, "heads_softmax_vjp", (dP, P), sq),
          Stmt(dV, "heads_matmul", (Tr(P), ds), heads), Stmt(dVm, "merge_heads", (dV,), full),
          Stmt(dKh, "heads_matmul", (Tr(dS), qs), heads), Stmt(dKm, "merge_heads", (dKh,), full),
          Stmt(dK, "let", (scale * dKm,), full),
          Stmt(dQh, "heads_matmul", (dS, ks), heads), Stmt(dQm, "merge_heads", (dQh,), full),
          Stmt(dQ, "let", (C * dQm,), full)]
    keep = {Om, dVm, dK, dQ}
    if extra_reader:
        st.append(Stmt(X, "let", (2 * P,), sq))
        keep.add(X)
    for s in st:
        shapes[s.target] = s.shape
    return st, _Fn(_Low(shapes), keep)


def test_pass_reads_the_statements_as_the_kernels():
    stmts, fn = _stmts()
    out = flash_attention(stmts, fn)
    ops = sorted(st.op for st in select(out, fn.keep))
    assert ops.count("flash_attention") == 1 and ops.count("flash_attention_vjp") == 1
    assert not any(op in ("heads_softmax", "heads_softmax_vjp", "heads_masked_scores", "let") for op in ops)


@pytest.mark.parametrize("case", [dict(mask=None), dict(scale=2 * C), dict(extra_reader=True), dict(dp_from_q=True)])
def test_pass_leaves_other_statements_alone(case):
    """No causal mask, δK scaled by another number, P read by something else, δP from another
    matrix than V: not the kernels' computation, the statements stay."""
    stmts, fn = _stmts(**case)
    assert flash_attention(stmts, fn) == stmts
