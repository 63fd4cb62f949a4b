"""Attention's heads at once in the torch code (symback.heads, ``TorchPrinter(heads=True)``): the
per-head statements regrouped over an (n, heads, T, d/heads) layout.

Oracles: PyTorch autograd of the same network written here with ``torch.nn.functional``
(``scaled_dot_product_attention`` with ``is_causal``, all heads in one call) at several head
counts and sizes, float64, relative 1e-8 — the loss, every gradient, a step, the forward
values and the VJP of the network as a layer; the same code printed without the grouping.
The source must show the grouping used (the per-head slices gone), and the pass is checked on
statement lists it must leave alone (blocks of different matrices, a missing head, blocks
that do not tile the columns).
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import sympy as sp

import symback as sb
from symback.compile import _load, model_class
from symback.heads import group_heads
from symback.lowering import Stmt, Tr
from symback.module import codegen_module
from symback.printing.torch import TorchPrinter
from symback.passes import select

torch = pytest.importorskip("torch")
from conftest import slow  # noqa: E402
from _torch_block import check_against_autograd, check_vjp, close as _close  # noqa: E402  (needs torch)


def _grouped(dv):
    """The torch Model of `dv` printed with the heads grouped (the grouped statements themselves:
    not read as the fused attention kernels, which test_flash.py tests)."""
    printer = TorchPrinter(heads=True)
    printer.kernels = printer.kernels - {"flash_attention"}
    return model_class("torch")(dv, "float64", _load(codegen_module(dv, "float64", printer, vjp=True)))


def _net(T, d, heads, causal):
    net = sb.Sequential(sb.TransformerBlock(heads=heads, hidden=2 * d, causal=causal), sb.Dense(d),
                        inputs=(T, d), loss="mse")
    dv = sb.derive(net)
    rng = np.random.default_rng(100 * heads + 10 * T + d)
    params = {p: np.asarray(v) + 0.2 * rng.normal(size=np.shape(v)) for p, v in sb.compile(dv).init(seed=1).items()}
    return dv, params, rng.normal(size=(3, T, d)), rng.normal(size=(3, T, d))


#: every size causal and not; a normal run takes each size once, causal and not in turn
CASES = [case if i % 4 in (0, 3) else slow(*case) for i, case in enumerate(
    (T, d, heads, causal) for (T, d, heads), causal in
    itertools.product([(5, 4, 1), (6, 4, 2), (4, 8, 4), (7, 12, 4), (3, 6, 2)], (True, False)))]


@pytest.mark.parametrize("T, d, heads, causal", CASES)
def test_grouped_heads_equal_torch_autograd(T, d, heads, causal):
    dv, params, X, Y = _net(T, d, heads, causal)
    m = _grouped(dv)
    src = m._ns["__source__"]
    w = d // heads
    if heads > 1:       # used: the heads split once, no head's column slice left in the step
        assert f".unflatten(-1, ({heads}, {w})).transpose(1, 2)" in src
        step = src[src.index("def _step"):src.index("\ndef ", src.index("def _step") + 1)]
        assert f"[:, :, :{w}]" not in step and f"[:, :{w}, :]" not in step, step
        assert step.count("torch.softmax(") == 1 and step.count("torch._softmax_backward_data(") == 1
    else:               # one head: no blocks, nothing to group
        assert ".unflatten(-1" not in src
    check_against_autograd(m, params, X, Y, heads, causal)    # loss, gradients, a step


@pytest.mark.parametrize("T, d, heads, causal", [(6, 4, 2, True), (4, 8, 4, False)])
def test_grouped_forward_values_and_layer_vjp(T, d, heads, causal):
    """forward()'s per-head values (views of the grouped arrays) are each head's own, and the
    VJP of the network as a layer (partly grouped: its P_h are given values) is autograd's."""
    dv, params, X, Y = _net(T, d, heads, causal)
    m, plain = _grouped(dv), sb.compile(dv, backend="torch", dtype="float64")
    fwd = lambda src: src[src.index("def forward"):src.index("\ndef ", src.index("def forward") + 1)]  # noqa: E731
    assert ".unflatten(-1" not in fwd(plain.source) and ".unflatten(-1" in fwd(m.source)   # (not by default)
    tp = {k: torch.tensor(v) for k, v in params.items()}
    got, want = m._ns["forward"](torch.tensor(X), torch.tensor(Y), tp), plain._ns["forward"](
        torch.tensor(X), torch.tensor(Y), tp)
    assert got.keys() == want.keys() and any(k.startswith("P2_") for k in got)
    for k in want:
        _close(got[k], want[k], rtol=1e-12)
    check_vjp(m, params, X, heads, causal)


# ------------------------------------------------------------------ the pass on statement lists
class _Low:
    """What group_heads reads of a Lowering: the shapes and a supply of fresh symbols."""

    def __init__(self, shapes):
        self.shapes, self.count = dict(shapes), itertools.count()

    def fresh(self):
        return sp.Symbol(f"u{next(self.count)}")


class _Fn:
    """What group_heads reads of a passes.Function: the lowering and a printer that groups."""

    def __init__(self, low):
        self.low, self.printer, self.keep = low, TorchPrinter(heads=True), set()


M = sp.Symbol("m")


def _attention_stmts(heads=2, w=2, T=3, other=None, drop=None, starts=None):
    """Q, K (n, T, heads·w); per head h: Q_h = Q[:, :, cols], Kᵀ_h = Kᵀ[rows, :], S_h = Q_h Kᵀ_h,
    P_h = softmax(S_h); the P_h joined as columns.  ``other``: head 1 takes its Kᵀ block
    from another matrix R; ``drop``: a head left out; ``starts``: the blocks' first columns."""
    d = heads * w
    Q, K, R, Kt, Rt, out = sp.symbols("Q K R Kt Rt out")
    shapes = {Q: (M, T, d), K: (M, T, d), R: (M, T, d), Kt: (M, d, T), Rt: (M, d, T), out: (M, T, heads * T)}
    stmts = [Stmt(Kt, "transpose", (K,), (M, d, T)), Stmt(Rt, "transpose", (R,), (M, d, T))]
    ps = []
    for h in range(heads):
        if h == drop:
            continue
        s = (starts or list(range(0, d, w)))[h]
        q, k, sc, p = sp.symbols(f"q{h} k{h} s{h} p{h}")
        shapes.update({q: (M, T, w), k: (M, w, T), sc: (M, T, T), p: (M, T, T)})
        stmts += [Stmt(q, "slice", (Q, (0, None, 1), (s, s + w, 1)), (M, T, w)),
                  Stmt(k, "slice", (Rt if h == other else Kt, (s, s + w, 1), (0, None, 1)), (M, w, T)),
                  Stmt(sc, "matmul", (q, k), (M, T, T)), Stmt(p, "softmax", (sc,), (M, T, T))]
        ps.append(p)
    stmts.append(Stmt(out, "concat", (-1, *ps), (M, T, len(ps) * T)))
    return stmts, _Low(shapes), out


def _ops(stmts, out):
    return sorted(st.op for st in select(stmts, {out}))


def test_pass_groups_the_same_operation_on_every_head():
    stmts, low, out = _attention_stmts(heads=3)
    grouped = group_heads(stmts, _Fn(low))
    # one product, one softmax, their P_h side by side as one merge; Kᵀ's blocks read K's split
    assert _ops(grouped, out) == ["heads_matmul", "heads_softmax", "merge_heads", "split_heads", "split_heads"]
    mm = next(st for st in grouped if st.op == "heads_matmul")
    assert isinstance(mm.args[1], Tr)       # Kᵀ's row blocks: K's split, transposed
    assert low.shapes[mm.target] == (M, 3, 3, 3)


@pytest.mark.parametrize("case", [dict(other=1), dict(drop=1), dict(starts=[0, 1, 4])])
def test_pass_leaves_heads_alone_unless_they_are_one_operation_on_blocks_of_one_matrix(case):
    """Head 1's scores from another matrix's block, a head missing, or blocks that overlap and
    leave a gap: the per-head statements stay (no grouped statement is left to compute)."""
    stmts, low, out = _attention_stmts(heads=3, **case)
    grouped = group_heads(stmts, _Fn(low))
    assert not any(op.startswith("heads_") for op in _ops(grouped, out)), _ops(grouped, out)
    assert _ops(grouped, out) == _ops(stmts, out)
