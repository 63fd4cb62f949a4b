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

import pytest
import sympy as sp

from symback.flash import flash_attention
from symback.lowering import Stmt, Tr, select
from symback.printing.torch import TorchPrinter

torch = pytest.importorskip("torch")
from _torch_block import Low, check_against_autograd, close, function, model, net  # noqa: E402  (needs torch)
KERNEL = "_scaled_dot_product_flash_attention_for_cpu("
BACKWARD = "_scaled_dot_product_flash_attention_for_cpu_backward("


CASES = [(T, d, heads, causal, grouped) for (T, d, heads), causal, grouped in
         itertools.product([(5, 4, 1), (6, 4, 2), (4, 8, 4), (7, 12, 4), (3, 6, 2)], (True, False), (False, True))]


@pytest.mark.parametrize("T, d, heads, causal, grouped", CASES)
def test_attention_by_the_fused_kernels_equals_torch_autograd(T, d, heads, causal, grouped):
    """The torch printer with ``flash=True`` (and heads grouped or not): the kernels in the step and
    the gradient exactly for causal multi-head attention; loss, gradients, a step = autograd's."""
    dv, params, X, Y = net(T, d, heads, causal)
    m = model(dv, TorchPrinter(heads=grouped, flash=True))
    src = m._ns["__source__"]
    used = causal and heads > 1
    for name in ("_step", "_grad"):
        body = function(src, name)
        assert (KERNEL in body and BACKWARD in body) == used, body
        assert ("torch.softmax(" in body) != used and ("_softmax_backward_data(" in body) != used
    L = check_against_autograd(m, params, X, Y, heads, causal)
    assert float(m.loss(X, Y, params)) == pytest.approx(L, rel=1e-8)      # the forward-only kernel


def test_not_without_the_kernel_nor_where_p_is_exported():
    """A printer without the kernel prints the head-by-head statements (same values); forward(),
    which returns each head's P, keeps its softmax."""
    dv, params, X, Y = net(6, 4, 2, True)
    a, b = model(dv, TorchPrinter()), model(dv, TorchPrinter(flash=True))     # (the default: no kernel)
    assert KERNEL not in a._ns["__source__"] and KERNEL not in function(b._ns["__source__"], "forward")
    va, ga = a.value_and_grad(X, Y, params)
    vb, gb = b.value_and_grad(X, Y, params)
    assert vb == pytest.approx(va, rel=1e-10)
    for p in params:
        close(gb[p], ga[p], rtol=1e-10)


# ------------------------------------------------------------------ the pass on statement lists
M, T, H, W = sp.Symbol("m"), 3, 2, 2
C = 1 / sp.sqrt(W)


class _Fn:
    """What the pass reads of a passes.Function (the heads already grouped: heads=True)."""

    def __init__(self, low, keep):
        self.low, self.printer, self.keep = low, TorchPrinter(heads=True, flash=True), set(keep)


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
    return st, _Fn(Low(shapes), keep)


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
