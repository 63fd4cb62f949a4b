"""The torch backend's fused kernels (symback.kernels): GELU by ``gelu``/``gelu_backward``,
softmax rows by ``torch.softmax``/``log_softmax`` and their derived closed-form VJP by
``_softmax_backward_data``.  The generated step, with the kernels and without them, is checked
against PyTorch autograd of the same network written here with ``torch.nn.functional``
(loss and every gradient, float64, relative 1e-8), and the kernels' names must appear in
the source (a silent fallback to the element-wise formulas fails)."""
from __future__ import annotations

import re

import numpy as np
import pytest
import sympy as sp

import symback as sb
from symback.compile import _load, model_class
from symback.kernels import LIBRARY_FORMS, prime
from symback.module import codegen_module
from symback.printing.torch import TorchPrinter

torch = pytest.importorskip("torch")
F = torch.nn.functional

KERNEL_CALLS = ("torch.nn.functional.gelu(", "torch.ops.aten.gelu_backward(", "torch.softmax(",
                "torch.native_layer_norm(", "torch.ops.aten.native_layer_norm_backward(",
                "torch._softmax_backward_data(")


def _close(a, b, rtol=1e-8):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape
    assert float(np.abs(a - b).max()) <= rtol * max(1.0, float(np.abs(b).max()))


def _models(d):
    """The torch Model with the kernels (sb.compile) and one printed without them."""
    plain = _load(codegen_module(d, "float64", TorchPrinter(kernels=False), vjp=True))
    return sb.compile(d, backend="torch", dtype="float64"), model_class("torch")(d, "float64", plain)


def _block(x, t, heads, causal):
    """Pre-LN block then a Dense, as sb.TransformerBlock + sb.Dense number their parameters."""
    n, T, d = x.shape
    w = d // heads
    split = lambda z: z.reshape(n, T, heads, w).transpose(1, 2)         # noqa: E731
    a = F.layer_norm(x, (d,), t["gamma1"][0], t["beta1"][0], eps=1e-5)
    o = F.scaled_dot_product_attention(split(a @ t["Wq2"]), split(a @ t["Wk2"]), split(a @ t["Wv2"]),
                                       is_causal=causal)
    h = x + o.transpose(1, 2).reshape(n, T, d) @ t["Wo2"]
    a = F.layer_norm(h, (d,), t["gamma3"][0], t["beta3"][0], eps=1e-5)
    h = h + F.gelu(a @ t["W4"] + t["b4"], approximate="tanh") @ t["W5"] + t["b5"]
    return h @ t["W6"] + t["b6"]


def _check(d, params, X, Y, torch_loss, calls):
    t = {p: torch.tensor(v, requires_grad=True) for p, v in params.items()}
    L = torch_loss(torch.tensor(X), torch.tensor(Y), t)
    L.backward()
    fused, plain = _models(d)
    for call in calls:
        assert call in fused.source, call                   # the kernel is printed ...
        assert call not in plain.source, call    # ... and only with the kernels
    for m in (fused, plain):
        value, grads = m.value_and_grad(X, Y, {p: torch.tensor(v) for p, v in params.items()})
        assert value == pytest.approx(L.item(), rel=1e-8)
        for p in params:
            _close(grads[p], t[p].grad.numpy())
    return fused


@pytest.mark.parametrize("T, d, heads, causal", [(5, 4, 2, True), (4, 6, 3, False)])
def test_transformer_block_kernels_equal_torch_autograd(T, d, heads, causal):
    net = sb.Sequential(sb.TransformerBlock(heads=heads, hidden=7, causal=causal), sb.Dense(d),
                        inputs=(T, d), loss="mse")
    dv = sb.derive(net)
    rng = np.random.default_rng(T * 10 + d)
    X, Y = rng.normal(size=(3, T, d)), rng.normal(size=(3, T, d))
    params = {p: np.asarray(v) + 0.1 * rng.normal(size=np.shape(v))
              for p, v in sb.compile(dv).init(seed=1).items()}

    def loss(x, y, t):
        return ((_block(x, t, heads, causal) - y) ** 2).sum(dim=(1, 2)).mean()
    fused = _check(dv, params, X, Y, loss, KERNEL_CALLS + (("torch.baddbmm(",) if causal else ()))
    # the step moves the parameters by lr times those gradients, kernels and all
    moved = {p: torch.tensor(v) for p, v in params.items()}
    fused.step(X, Y, moved, lr=0.1)
    grads = fused.grad(X, Y, params)
    for p in params:
        _close(moved[p].numpy(), params[p] - 0.1 * np.asarray(grads[p]))


def test_cnn_softmax_cross_entropy_kernels_equal_torch_autograd():
    net = sb.Sequential(sb.Conv2d(3, 3, padding=1, activation="relu"), sb.MaxPool2d(2),
                        sb.Conv2d(4, 3, activation="relu"), sb.MaxPool2d(2), sb.Flatten(),
                        sb.Dense(5, "softmax"), inputs=(2, 10, 10), loss="cross_entropy")
    dv = sb.derive(net)
    rng = np.random.default_rng(3)
    X, Y = rng.normal(size=(4, 2, 10, 10)), np.eye(5)[[0, 3, 4, 1]]
    params = {p: rng.normal(size=tuple(int(v) for v in net.symbol(p).shape)) / 2 for p in dv.params}

    def loss(x, y, t):
        a = x
        for l, (C, Co, pad) in enumerate(((2, 3, 1), (3, 4, 0)), start=1):
            a = F.max_pool2d(F.relu(F.conv2d(a, t[f"K{l}"].T.reshape(Co, C, 3, 3), t[f"b{l}"][0],
                                             padding=pad)), 2)
        return F.cross_entropy(a.flatten(1) @ t["W3"] + t["b3"], y.argmax(1))
    fused = _check(dv, params, X, Y, loss, ("torch.softmax(", "torch.log_softmax("))
    # each convolution's bias added by the convolution kernel, its δ one reduction (symback.convkernels)
    step = fused.source[fused.source.index("def _step"):]
    assert "conv2d(X.reshape(X.shape[0], 2, 10, 10), K1.T.reshape(-1, 2, 3, 3), b1.reshape(-1)" in step and "b2 -= delta_Z2.sum(dim=(0, 2))" in step, step
    # the second convolution's two backward products by one kernel call, the first's (whose
    # input X needs no δ) by the weight-gradient alone; the numbers are _check's (autograd)
    step = step[:step.index("\n\n\n")]
    assert step.count("_conv_grads(") == 1 and step.count("_conv_wgrad(") == 1 and "_conv_igrad(" not in step, step
    vjp = fused.source[fused.source.index("def _vjp("):]      # (X's δ too: both by one call each)
    assert vjp[:vjp.index("\n\n\n")].count("_conv_grads(") == 2


def test_gelu_kernel_is_proved_to_be_the_registered_definition(monkeypatch):
    """The marker is made only after SymPy proves the library's formula equal to the
    activation's definition; a different formula is refused."""
    gelu = type(sb.gelu(sp.Symbol("z")))
    assert prime(gelu)(sp.Symbol("z")).activation is gelu
    x = sp.Symbol("x", real=True)
    prime.cache_clear()
    monkeypatch.setitem(LIBRARY_FORMS, gelu, ("gelu_prime", x / 2 * (1 + sp.erf(x / sp.sqrt(2)))))
    with pytest.raises(sb.SymbackError):
        prime(gelu)
    prime.cache_clear()


def test_numpy_and_jax_modules_have_no_kernels():
    net = sb.Sequential(sb.TransformerBlock(heads=2, hidden=5, causal=True), sb.Dense(4),
                        inputs=(3, 4), loss="mse")
    src = sb.compile(sb.derive(net)).source
    assert "softmax_backward" not in src and "gelu" not in src


@pytest.mark.parametrize("k, H, W", [(2, 6, 8), (2, 7, 5), (3, 9, 7), (1, 3, 4)])
def test_max_pool_on_cpu_routes_ties_as_torch_autograd(k, H, W):
    """On CPU data, side-by-side windows are pooled by the maxima of their offsets' slices for a
    prediction, and by torch's kernel on the channels-last map when δ is wanted: with many ties
    (integer pixels, two levels) and cropped edges, the pooled values, the arg-max indices and
    δ equal autograd's F.max_pool2d, forward and backward in one function (the indices pair)
    or apart."""
    net = sb.Sequential(sb.MaxPool2d(2), sb.Flatten(), sb.Dense(2), inputs=(3, 6, 6), loss="mse")
    ns = sb.compile(sb.derive(net), backend="torch", dtype="float64")._ns
    rng = np.random.default_rng(k * 100 + H * 10 + W)
    n, C = 4, 3
    x = torch.tensor(rng.integers(0, 2, size=(n, C, H, W)).astype(float), requires_grad=True)
    out, idx = F.max_pool2d(x, k, return_indices=True)
    d = torch.tensor(rng.normal(size=out.shape))
    out.backward(d)
    a, flat = x.detach().reshape(n, C, H * W), d.reshape(n, C, -1)
    geometry = (C, H, W, k, k, 0)
    assert torch.equal(ns["_maxpool"](a, *geometry), out.detach().reshape(n, C, -1))
    pair = ns["_maxpool_pair"](a, *geometry)
    assert torch.equal(pair[1], idx) and torch.equal(pair[0], out.detach().reshape(n, C, -1))
    # laid out as autograd's (NCHW): a channels-last maxima would carry its layout into the
    # next convolution and every kernel after it
    assert pair[0].stride() == out.detach().reshape(n, C, -1).stride()
    for got in (ns["_maxpool_vjp_idx"](flat, pair, *geometry), ns["_maxpool_vjp"](flat, a, *geometry)):
        assert torch.equal(got, x.grad.reshape(n, C, H * W))


@pytest.mark.parametrize("pool, H", [((2, 2, 0), 8), ((2, 2, 0), 7), ((3, 2, 1), 8)])
def test_relu_mask_moved_onto_the_pooled_delta_equals_autograd(pool, H):
    """conv → ReLU → max-pooling: the step and the gradients read ReLU's mask at each window's
    arg-max on the pooled δ (``_pool_gather``, no full-size mask after the pooling's δ, and
    neither the ReLU's map nor its input held past the forward), and equal autograd of the network written here with ReLU as where(z ≥ 0, z, 0) (ReLU'(0) = 1,
    symback's convention).  Integer pixels and kernels make many z exactly 0 and many windows
    all zero (ties: the first pixel is the arg-max, whatever its z), side-by-side, cropped, and
    overlapping padded windows."""
    k, s, p = pool
    net = sb.Sequential(sb.Conv2d(3, 3, padding=1, activation="relu"), sb.MaxPool2d(k, stride=s, padding=p),
                        sb.Flatten(), sb.Dense(3, "softmax"), inputs=(2, H, H), loss="cross_entropy")
    d = sb.derive(net)
    m = sb.compile(d, backend="torch", dtype="float64")
    step = m.source[m.source.index("def _step("):]
    step = step[:step.index("\ndef ")]
    assert "_pool_gather(Z1" in step and "threshold_backward" in step
    assert "threshold_backward(t" not in step.split("_maxpool_vjp_idx(")[1]      # the full-size mask is gone
    # neither the map nor its pre-activation is held past the forward's pooling and gathering
    after = step.split("_pool_gather(Z1")[1].splitlines()[1:]
    assert not [line for line in after if re.search(r"\b(A1|Z1)\b", line) and not line.strip().startswith("del ")]
    rng = np.random.default_rng(H + k)
    n = 6
    x = rng.integers(0, 2, size=(n, 2, H, H)).astype(float)
    y = np.eye(3)[rng.integers(0, 3, n)]
    params = {q: rng.integers(-1, 2, size=tuple(int(v) for v in net.symbol(q).shape)).astype(float) for q in d.params}
    params["b1"] -= 1.0

    def autograd(relu):
        t = {q: torch.tensor(v, requires_grad=True) for q, v in params.items()}
        z = F.conv2d(torch.tensor(x), t["K1"].T.reshape(3, 2, 3, 3), t["b1"][0], padding=1)
        a, idx = F.max_pool2d(relu(z), k, s, p, return_indices=True)
        loss = F.cross_entropy(a.flatten(1) @ t["W2"] + t["b2"], torch.tensor(y).argmax(1))
        loss.backward()
        return loss.item(), {q: v.grad.numpy() for q, v in t.items()}, z.detach().flatten(2).gather(2, idx.flatten(2))
    loss, want, at_max = autograd(lambda z: torch.where(z >= 0, z, torch.zeros_like(z)))
    assert (at_max == 0).any() and (at_max < 0).any()         # ReLU'(0) and the all-zero windows matter
    got = m.grad(x, y, params)
    for q in d.params:
        _close(got[q], want[q], rtol=1e-12)
    moved = {q: torch.tensor(v) for q, v in params.items()}
    _close(m.step(x, y, moved, lr=0.5), loss, rtol=1e-12)
    for q in d.params:
        _close(moved[q], params[q] - 0.5 * want[q], rtol=1e-12)
    # the test tells the conventions apart: torch's ReLU'(0) = 0 gives other kernels' gradients
    other = autograd(torch.relu)[1]
    assert not np.allclose(other["K1"], want["K1"])
