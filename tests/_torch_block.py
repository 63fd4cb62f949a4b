"""The transformer block written with torch.nn.functional (autograd's oracle), its symback
networks and the check of a torch Model against autograd, shared by test_flash.py and
test_affine_norm.py (the passes that print its derived statements as torch's kernels)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import sympy as sp
import torch

import symback as sb
from symback.compile import _load, model_class
from symback.module import codegen_module

F = torch.nn.functional


def close(a, b, rtol=1e-8):
    """a equals b to `rtol` relative to b's largest entry (at least 1)."""
    a = np.asarray(a.detach() if isinstance(a, torch.Tensor) else a, dtype=np.float64)
    b = np.asarray(b.detach() if isinstance(b, torch.Tensor) else b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    assert float(np.abs(a - b).max()) <= rtol * max(1.0, float(np.abs(b).max()))


def predict(x, t, heads, causal):
    """Pre-LN block (every head in one scaled_dot_product_attention call) then a Dense."""
    n, T, d = x.shape
    split = lambda z: z.reshape(n, T, heads, d // heads).transpose(1, 2)       # noqa: E731
    a = F.layer_norm(x, (d,), t["gamma1"][0], t["beta1"][0], eps=1e-5)
    o = F.scaled_dot_product_attention(split(a @ t["Wq2"]), split(a @ t["Wk2"]), split(a @ t["Wv2"]), is_causal=causal)
    h = x + o.transpose(1, 2).reshape(n, T, d) @ t["Wo2"]
    a = F.layer_norm(h, (d,), t["gamma3"][0], t["beta3"][0], eps=1e-5)
    h = h + F.gelu(a @ t["W4"] + t["b4"], approximate="tanh") @ t["W5"] + t["b5"]
    return h @ t["W6"] + t["b6"]


def net(T, d, heads, causal):
    """(derivation, parameters, X, Y) of sb.TransformerBlock + sb.Dense with mse."""
    dv = sb.derive(sb.Sequential(sb.TransformerBlock(heads=heads, hidden=2 * d, causal=causal), sb.Dense(d),
                                 inputs=(T, d), loss="mse"))
    rng = np.random.default_rng(100 * heads + 10 * T + d)
    params = {p: np.asarray(v) + 0.2 * rng.normal(size=np.shape(v)) for p, v in sb.compile(dv).init(seed=1).items()}
    return dv, params, rng.normal(size=(3, T, d)), rng.normal(size=(3, T, d))


def model(dv, printer):
    """The float64 torch Model of `dv` printed by `printer`."""
    return model_class("torch")(dv, "float64", _load(codegen_module(dv, "float64", printer, vjp=True)))


def function(src, name):
    """The source of one generated function."""
    start = src.index(f"def {name}(")
    return src[start:src.index("\ndef ", start + 1)]


def on_cpu(src, name):
    """The source of the function `name` runs on CPU data: its ``_on_cpu`` version where it is
    printed once per device (symback.straightline.build_function), else itself."""
    cpu = f"_{name.lstrip('_')}_on_cpu"
    return function(src, cpu if f"def {cpu}(" in src else name)


def check_against_autograd(m, params, X, Y, heads, causal):
    """m's loss, gradients and step equal autograd's of :func:`predict` (relative 1e-8); the loss."""
    t = {p: torch.tensor(v, requires_grad=True) for p, v in params.items()}
    L = ((predict(torch.tensor(X), t, heads, causal) - torch.tensor(Y)) ** 2).sum(dim=(1, 2)).mean()
    L.backward()
    value, grads = m.value_and_grad(X, Y, params)
    assert value == pytest.approx(L.item(), rel=1e-8)
    for p in params:
        close(grads[p], t[p].grad)
    moved = {p: torch.tensor(v) for p, v in params.items()}
    m.step(X, Y, moved, lr=0.1)
    for p in params:
        close(moved[p], params[p] - 0.1 * t[p].grad.numpy())
    return L.item()


def check_vjp(m, params, X, heads, causal):
    """m.vjp (the network as a layer) equals autograd's VJP of :func:`predict` (relative 1e-8)."""
    t = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    x = torch.tensor(X, requires_grad=True)
    Yhat = predict(x, t, heads, causal)
    G = np.random.default_rng(5).normal(size=tuple(Yhat.shape))
    (Yhat * torch.tensor(G)).sum().backward()
    dX, grads = m.vjp(X, params, G)
    close(dX, x.grad)
    for k in params:
        close(grads[k], t[k].grad)


class Low:
    """What a pass reads of a Lowering: the shapes and a supply of fresh symbols."""

    def __init__(self, shapes):
        self.shapes, self.count = dict(shapes), itertools.count()

    def fresh(self):
        return sp.Symbol(f"u{next(self.count)}")
