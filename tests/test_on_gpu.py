"""The new layer families on a GPU: what runs there differs from what the CPU runs.

On CPU data the torch printer takes max-pooling's side-by-side windows by strided slices and
attention by the CPU's fused kernel; on any other device, torch's pooling kernels and
attention head by head (``test_flash.py`` runs those versions on CPU tensors by swapping
them in).  Here they run where they are meant to: a CNN (strided, padded convolutions, max-
and average-pooling), a causal transformer block and an LSTM, with data and parameters on the
device; ``grad``, one ``step`` and the ``m.module()`` layer's backward (X's ``.grad`` too) must
equal torch autograd of the same network written here with ``torch.nn.functional``, on the
CPU, float64, relative 1e-8; the JAX backend likewise where JAX has a GPU.

Skipped without one (``SYMBACK_TEST_DEVICE`` names another torch device: ``cpu`` runs these
checks here, through the CPU versions).
"""
from __future__ import annotations

import os

import numpy as np
import pytest

import symback as sb

torch = pytest.importorskip("torch")
F = torch.nn.functional
DEVICE = os.environ.get("SYMBACK_TEST_DEVICE") or "cuda"

from _torch_block import predict as block_predict  # noqa: E402  (needs torch)

pytestmark = pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(),
                                reason="no CUDA device here (run on a GPU machine)")


def _close(a, b, rtol=1e-8):
    a = np.asarray(a.detach().cpu() if isinstance(a, torch.Tensor) else a, dtype=np.float64)
    b = np.asarray(b.detach().cpu() if isinstance(b, torch.Tensor) else b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    assert float(np.abs(a - b).max()) <= rtol * max(1.0, float(np.abs(b).max()))


def cnn():
    """Conv(3@3×3, stride 2, pad 1, ReLU), MaxPool(2) side by side, Conv(4@2×2, pad 1, tanh),
    AvgPool(2, stride 1) overlapping, MaxPool(3, stride 2, pad 1), Flatten, Dense(3, softmax)."""
    net = sb.Sequential(sb.Conv2d(3, 3, stride=2, padding=1, activation="relu"), sb.MaxPool2d(2),
                        sb.Conv2d(4, 2, padding=1, activation="tanh"), sb.AvgPool2d(2, stride=1),
                        sb.MaxPool2d(3, stride=2, padding=1), sb.Flatten(), sb.Dense(3, "softmax"),
                        inputs=(2, 17, 15), loss="cross_entropy")

    def predict(X, t):
        a = F.max_pool2d(F.relu(F.conv2d(X, t["K1"].T.reshape(3, 2, 3, 3), t["b1"][0], stride=2, padding=1)), 2)
        a = torch.tanh(F.conv2d(a, t["K2"].T.reshape(4, 3, 2, 2), t["b2"][0], padding=1))
        a = F.max_pool2d(F.avg_pool2d(a, 2, stride=1), 3, stride=2, padding=1)
        return torch.softmax(a.flatten(1) @ t["W3"] + t["b3"], dim=-1)[:, None, :]

    def loss(Yhat, Y):
        return -(Y * torch.log(Yhat)).sum() / Y.shape[0]
    return net, (6, 2, 17, 15), (6, 1, 3), loss, predict


def block():
    """A causal two-head pre-LN transformer block, then Dense(4), squared error."""
    T, d = 5, 4
    net = sb.Sequential(sb.TransformerBlock(heads=2, hidden=6, causal=True), sb.Dense(d),
                        inputs=(T, d), loss="mse")
    return (net, (3, T, d), (3, T, d), lambda Yhat, Y: ((Yhat - Y) ** 2).sum() / Y.shape[0],
            lambda X, t: block_predict(X, t, heads=2, causal=True))


def lstm():
    """sb.lstm over 3 steps of 2 inputs, hidden 3, one output, squared error."""
    net = sb.lstm(inputs=2, hidden=3, outputs=1, steps=3, loss="mse")

    def predict(X, t):
        h = c = torch.zeros(X.shape[0], 3, dtype=X.dtype, device=X.device)
        for s in range(3):
            x = X[:, 2 * s:2 * s + 2]
            pre = lambda q: x @ t[f"W_{q}"] + h @ t[f"U_{q}"] + t[f"b_{q}"]     # noqa: E731
            c = torch.sigmoid(pre("f")) * c + torch.sigmoid(pre("i")) * torch.tanh(pre("g"))
            h = torch.sigmoid(pre("o")) * torch.tanh(c)
        return h @ t["W_y"] + t["b_y"]
    return net, (7, 6), (7, 1), lambda Yhat, Y: ((Yhat - Y) ** 2).sum() / Y.shape[0], predict


NETS = {"cnn": cnn, "transformer_block": block, "lstm": lstm}


def _case(make, seed=0):
    """(derivation, NumPy parameters, X, Y, G, autograd's loss gradients, autograd's prediction
    and ⟨G, Ŷ⟩-gradients) for one network, all on the CPU."""
    net, xshape, yshape, loss, predict = make()
    d = sb.derive(net)
    rng = np.random.default_rng(seed)
    params = {p: np.asarray(v) + 0.3 * rng.normal(size=np.shape(v)) for p, v in sb.compile(d).init(seed=1).items()}
    X = rng.normal(size=xshape)
    Y = np.eye(yshape[-1])[rng.integers(0, yshape[-1], yshape[:-1])] if make is cnn else rng.normal(size=yshape)
    t = {p: torch.tensor(v, requires_grad=True) for p, v in params.items()}
    loss(predict(torch.tensor(X), t), torch.tensor(Y)).backward()
    grads = {p: v.grad.clone() for p, v in t.items()}
    t = {p: torch.tensor(v, requires_grad=True) for p, v in params.items()}
    Xt = torch.tensor(X, requires_grad=True)
    Yhat = predict(Xt, t)
    G = rng.normal(size=tuple(Yhat.shape))
    (Yhat * torch.tensor(G)).sum().backward()
    return d, params, X, Y, G, grads, Yhat.detach(), Xt.grad, {p: v.grad for p, v in t.items()}


@pytest.mark.parametrize("name", NETS)
def test_torch_on_the_device_equals_autograd_on_the_cpu(name):
    d, params, X, Y, G, grads, Yhat, dX, dparams = _case(NETS[name])
    m = sb.compile(d, backend="torch")
    on = {p: torch.tensor(v, device=DEVICE) for p, v in params.items()}
    Xd, Yd = torch.tensor(X, device=DEVICE), torch.tensor(Y, device=DEVICE)
    got = m.grad(Xd, Yd, on)
    for p in d.params:
        assert got[p].device.type == torch.device(DEVICE).type
        _close(got[p], grads[p])
    m.step(Xd, Yd, on, lr=0.5)                         # in place, on the device
    for p in d.params:
        assert on[p].device.type == torch.device(DEVICE).type
        _close(on[p], params[p] - 0.5 * grads[p].numpy())
    # the layer: prediction and backward through X and every parameter under another loss
    mod = m.module(params=params).to(DEVICE)
    Xg = torch.tensor(X, device=DEVICE, requires_grad=True)
    out = mod(Xg)
    _close(out.reshape(Yhat.shape), Yhat)
    (out * torch.tensor(G, device=DEVICE).reshape(out.shape)).sum().backward()
    _close(Xg.grad, dX)
    for p in d.params:
        _close(mod.params[p].grad, dparams[p])


@pytest.mark.parametrize("name", NETS)
def test_jax_on_its_gpu_equals_autograd(name):
    jax = pytest.importorskip("jax")
    if DEVICE == "cuda" and jax.default_backend() != "gpu":
        pytest.skip("JAX has no GPU here")
    d, params, X, Y, G, grads, Yhat, dX, dparams = _case(NETS[name], seed=1)
    m = sb.compile(d, backend="jax", dtype="float64")
    on = {p: m._ns["_asarray"](v) for p, v in params.items()}
    got = m.grad(X, Y, on)
    for p in d.params:
        _close(got[p], grads[p])
    gx, gp = m.vjp(X, params, G.reshape(np.shape(Yhat)))
    _close(np.asarray(gx).reshape(dX.shape), dX)
    for p in d.params:
        _close(gp[p], dparams[p])
