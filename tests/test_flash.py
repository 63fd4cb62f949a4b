"""Multi-head attention by torch's fused attention kernels (symback.flash): the derived
statements of the forward and backward printed as ``_scaled_dot_product_flash_attention_for_cpu``
and its backward where they are exactly that computation — by default, in the version of each
function that runs on CPU data; the version for any other device (head by head) is printed
beside it, the public name choosing by X's device (symback.straightline.build_function).

Oracles: PyTorch autograd of the transformer block written with ``torch.nn.functional``
(``scaled_dot_product_attention(is_causal=...)``, ``layer_norm``, ``gelu(approximate="tanh")``)
at several and at random head counts and sizes, float64, relative 1e-8 — the prediction, the
loss, every gradient, a step, the VJP — for the CPU versions and for the other device's
versions called on CPU tensors (the code a GPU runs, tested without one); through
``m.module()`` inside a ``torch.nn.Module`` and through ``symback codegen``.  The source must
show the kernels used (causal or not), never a copy to the CPU, and no kernel where the
statements are something else (another mask, one head, the unscaled scores read elsewhere, P read elsewhere, a δQ not scaled by the scores' scale,
the kernel not in the printer's).
"""
from __future__ import annotations

import itertools
import re

import numpy as np
import pytest
import sympy as sp

import symback as sb
from symback.flash import flash_attention
from symback.lowering import Stmt, Tr, select
from symback.printing.torch import TorchPrinter

torch = pytest.importorskip("torch")
from conftest import slow  # noqa: E402
from _torch_block import (Low, check_against_autograd, check_vjp, close, function, model, net,  # noqa: E402
                          predict)
KERNEL = "_scaled_dot_product_flash_attention_for_cpu("
BACKWARD = "_scaled_dot_product_flash_attention_for_cpu_backward("
#: the functions the kernels change in a block's module (forward, backward and the layer's
#: _vjp_forward/_vjp_backward exchange each head's P by name: nothing there to fuse)
DISPATCHED = ("_predict", "_loss", "_grad", "_step", "_vjp")


#: every size × causal × grouped; a normal run takes each size once, the four (causal, grouped)
#: pairs in turn (every pair and every size checked), slow mode all twenty
CASES = [case if (i // 4 - i) % 4 == 0 else slow(*case)
         for i, case in enumerate((T, d, heads, causal, grouped) for (T, d, heads), causal, grouped in
                                  itertools.product([(5, 4, 1), (6, 4, 2), (4, 8, 4), (7, 12, 4), (3, 6, 2)],
                                                    (True, False), (False, True)))]


def _random_cases(k=3, seed=17):
    """k (T, d, heads) drawn at random: 2–9 positions, 2–4 heads of width 2–4 (a width-1 head's
    scale 1/√1 = 1 leaves no scaled scores for the masked_scores pass: no kernel there)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(k):
        heads = int(rng.integers(2, 5))
        out.append((int(rng.integers(2, 10)), heads * int(rng.integers(2, 5)), heads))
    return out


def dispatched(src) -> list:
    """The functions of `src` printed once per device: name → (its CPU version, its other one)."""
    return sorted(set(re.findall(r"^def _(\w+)_on_cpu\(", src, re.M)))


def _device_code(m):
    """m with every dispatched function sent to its other device's version: that code, run on
    CPU tensors (the public names look the versions up when called)."""
    ns = m._ns
    for f in dispatched(ns["__source__"]):
        ns[f"_{f}_on_cpu"] = ns[f"_{f}_on_device"]
    return m


def _check_prediction(m, params, X, heads, causal):
    t = {p: torch.tensor(v) for p, v in params.items()}
    close(m.predict(X, params), predict(torch.tensor(X), t, heads, causal))


@pytest.mark.parametrize("T, d, heads, causal, grouped", CASES)
def test_attention_by_the_fused_kernels_equals_torch_autograd(T, d, heads, causal, grouped):
    """The default torch printer (heads grouped or not): the kernels in the CPU versions of the
    step and the gradient exactly for multi-head attention (causal or not), a head-by-head version for
    other devices beside them; loss, gradients, a step = autograd's by both versions."""
    dv, params, X, Y = net(T, d, heads, causal)
    m = model(dv, TorchPrinter(heads=grouped))
    src = m._ns["__source__"]
    used = heads > 1
    assert ".cpu()" not in src and ".to(" not in src
    assert dispatched(src) == (sorted(f.lstrip("_") for f in DISPATCHED) if used else [])
    for name in ("_step", "_grad"):
        cpu, device = (function(src, f"{name}_on_{w}") if used else function(src, name) for w in ("cpu", "device"))
        assert (KERNEL in cpu and BACKWARD in cpu) == used, cpu
        assert (f"0.0, {causal}, scale=" in cpu) == used       # the kernel's is_causal
        assert ("torch.softmax(" in cpu) != used and ("_softmax_backward_data(" in cpu) != used
        assert KERNEL not in device and "torch.softmax(" in device and "_softmax_backward_data(" in device
    for f in ("forward", "backward", "_vjp_forward", "_vjp_backward"):
        assert KERNEL not in function(src, f) and BACKWARD not in function(src, f)
    for run in (m, _device_code(model(dv, TorchPrinter(heads=grouped)))):
        L = check_against_autograd(run, params, X, Y, heads, causal)
        assert float(run.loss(X, Y, params)) == pytest.approx(L, rel=1e-8)      # the forward-only kernel
        _check_prediction(run, params, X, heads, causal)
        check_vjp(run, params, X, heads, causal)


@pytest.mark.parametrize("T, d, heads, causal", [(*c, causal) for c, causal in zip(_random_cases(), (True, False, True))])
def test_random_sizes_both_versions_equal_torch_autograd(T, d, heads, causal):
    """Random sizes and head counts: each dispatched function's two versions, called directly
    on CPU tensors, give autograd's loss and gradients (and the dispatch takes the kernels)."""
    dv, params, X, Y = net(T, d, heads, causal)
    m = model(dv, TorchPrinter())
    ns, p = m._ns, {k: torch.tensor(v) for k, v in params.items()}
    assert dispatched(ns["__source__"]) == sorted(f.lstrip("_") for f in DISPATCHED)
    t = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    L = ((predict(torch.tensor(X), t, heads, causal) - torch.tensor(Y)) ** 2).sum(dim=(1, 2)).mean()
    L.backward()
    x, y = torch.tensor(X), torch.tensor(Y)
    for where in ("cpu", "device"):
        with torch.no_grad():
            value, grads = ns[f"_grad_on_{where}"](x, y, p)
            loss = ns[f"_loss_on_{where}"](x, y, p)
        assert float(value) == pytest.approx(L.item(), rel=1e-8) and float(loss) == pytest.approx(L.item(), rel=1e-8)
        for k, g in zip(ns["PARAMS"], grads):
            close(g.reshape(t[k].shape), t[k].grad)
    check_against_autograd(m, params, X, Y, heads, causal)


def test_flash_false_prints_head_by_head_everywhere():
    """``flash=False``: no kernel and no dispatch, the same values; forward(), which returns
    each head's P, keeps its softmax either way."""
    dv, params, X, Y = net(6, 4, 2, True)
    a, b = model(dv, TorchPrinter(flash=False)), model(dv, TorchPrinter())     # (the default: the kernel on CPU)
    assert KERNEL not in a._ns["__source__"] and not dispatched(a._ns["__source__"])
    assert KERNEL in b._ns["__source__"] and KERNEL not in function(b._ns["__source__"], "forward")
    va, ga = a.value_and_grad(X, Y, params)
    vb, gb = b.value_and_grad(X, Y, params)
    assert vb == pytest.approx(va, rel=1e-10)
    for p in params:
        close(gb[p], ga[p], rtol=1e-10)


def test_public_names_choose_by_the_device_of_x():
    """Each dispatched name calls its CPU version for CPU data and the other one for data
    anywhere else (X stands here for a tensor on another device: only ``is_cpu`` is read)."""
    dv, params, X, Y = net(4, 8, 2, True)
    ns = model(dv, TorchPrinter())._ns

    class Elsewhere:
        is_cpu = False
    for f in DISPATCHED:
        ns[f"_{f.lstrip('_')}_on_device"] = lambda *args: ("device", args)
        ns[f"_{f.lstrip('_')}_on_cpu"] = lambda *args: ("cpu", args)
        x = Elsewhere()
        args = (x, "params") if f == "_predict" else (x, "Y", "params", 0.1) if f == "_step" else (x, "Y", "params")
        assert ns[f](*args) == ("device", args)
        assert ns[f](torch.zeros(1), *args[1:])[0] == "cpu"


def test_module_inside_a_torch_model_equals_autograd():
    """``m.module()`` (sb.compile's default torch printer) as a layer of a torch.nn.Module,
    a Linear after it: the gradients of X and of every parameter = autograd's."""
    dv, params, X, _ = net(6, 8, 2, True)
    m = sb.compile(dv, "float64", backend="torch")
    assert KERNEL in m.source

    class Outer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.block, self.head = m.module(params), torch.nn.Linear(8, 3, dtype=torch.float64)

        def forward(self, x):
            return self.head(self.block(x))
    outer = Outer()
    x = torch.tensor(X, requires_grad=True)
    G = torch.tensor(np.random.default_rng(3).normal(size=(3, 6, 3)))
    (outer(x) * G).sum().backward()
    t = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    x2 = torch.tensor(X, requires_grad=True)
    (outer.head(predict(x2, t, 2, True)) * G).sum().backward()
    close(x.grad, x2.grad)
    for k in params:
        close(outer.block.params[k].grad, t[k].grad)


def test_codegen_module_dispatches_and_equals_torch(tmp_path):
    """``symback codegen --backend torch`` of a layer spec (a 2-head causal block): the written
    module has the two versions and its loss and gradients by either = autograd's."""
    from test_cli import ok, run
    from test_cli_sequences import load_module
    (tmp_path / "block.toml").write_text('inputs = [5, 4]\nloss = "mse"\n\n[[layer]]\nkind = "TransformerBlock"\n'
                                         'heads = 2\nhidden = 8\ncausal = true\n\n[[layer]]\nkind = "Dense"\n'
                                         'units = 4\n')
    ok(run("codegen", "block.toml", "--backend", "torch", "-o", "block_step.py", cwd=tmp_path))
    src = (tmp_path / "block_step.py").read_text()
    assert ".cpu()" not in src and dispatched(src) == sorted(f.lstrip("_") for f in DISPATCHED)
    dv, params, X, Y = net(5, 4, 2, True)
    t = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    L = ((predict(torch.tensor(X), t, 2, True) - torch.tensor(Y)) ** 2).sum(dim=(1, 2)).mean()
    L.backward()
    for where in ("cpu", "device"):
        mod = load_module(tmp_path / "block_step.py")
        for f in dispatched(src):       # (each load its own namespace)
            setattr(mod, f"_{f}_on_cpu", getattr(mod, f"_{f}_on_{where}"))
        given = {k: torch.tensor(v) for k, v in params.items()}
        assert mod.loss(X, Y, given) == pytest.approx(L.item(), rel=1e-8)
        grads = mod.grad(X, Y, given)
        for k in params:
            close(grads[k], t[k].grad)


# ------------------------------------------------------------------ the pass on statement lists
M, T, H, W = sp.Symbol("m"), 3, 2, 2
C = 1 / sp.sqrt(W)


class _Fn:
    """What the pass reads of a passes.Function (the heads already grouped: heads=True)."""

    def __init__(self, low, keep):
        self.low, self.printer, self.keep = low, TorchPrinter(heads=True), set(keep)


def _stmts(mask="causal", scale=C, extra_reader=False, dp_from_q=False, raw_read=False):
    """The grouped statements of one attention's forward and backward (symback.heads' layout);
    ``mask=None``: no mask, the scores a product then c times it (the non-causal lowering)."""
    Q, K, V, D = sp.symbols("Q K V D")
    qs, ks, vs, ds, S, P, O, Om, dP, dS, dV, dVm, dKh, dKm, dK, dQh, dQm, dQ, X, R = sp.symbols(
        "qs ks vs ds S P O Om dP dS dV dVm dKh dKm dK dQh dQm dQ X R")
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
    if mask is None:        # S = c·R, R = Q Kᵀ
        st[4:5] = [Stmt(R, "heads_matmul", (qs, Tr(ks)), sq), Stmt(S, "let", (C * R,), sq)]
    if raw_read:
        st.append(Stmt(X, "let", (2 * R,), sq))
        keep.add(X)
    if extra_reader:
        st.append(Stmt(X, "let", (2 * P,), sq))
        keep.add(X)
    for s in st:
        shapes[s.target] = s.shape
    return st, _Fn(Low(shapes), keep)


@pytest.mark.parametrize("mask", ["causal", None])
def test_pass_reads_the_statements_as_the_kernels(mask):
    stmts, fn = _stmts(mask)
    out = select(flash_attention(stmts, fn), fn.keep)
    ops = sorted(st.op for st in out)
    assert ops.count("flash_attention") == 1 and ops.count("flash_attention_vjp") == 1
    assert not any(op in ("heads_softmax", "heads_softmax_vjp", "heads_masked_scores", "heads_matmul", "let")
                   for op in ops)
    assert {st.args[-1] for st in out if st.op.startswith("flash")} == {mask == "causal"}     # is_causal


@pytest.mark.parametrize("case", [dict(mask="window"), dict(scale=2 * C), dict(extra_reader=True), dict(dp_from_q=True),
                                  dict(mask=None, raw_read=True), dict(mask=None, scale=2 * C)])
def test_pass_leaves_other_statements_alone(case):
    """Another mask, δK scaled by another number, P read by something else, δP from another
    matrix than V, the unscaled scores Q Kᵀ read by something else: not the kernels'
    computation, the statements stay."""
    stmts, fn = _stmts(**case)
    assert flash_attention(stmts, fn) == stmts


def test_pass_needs_the_kernel_in_the_printer():
    """``flash=False`` (and the off-CPU printer of the default one): the statements stay."""
    stmts, fn = _stmts()
    for printer in (TorchPrinter(heads=True, flash=False), TorchPrinter(heads=True).off_cpu()):
        fn.printer = printer
        assert flash_attention(stmts, fn) == stmts
    assert TorchPrinter(flash=False).off_cpu() is None
