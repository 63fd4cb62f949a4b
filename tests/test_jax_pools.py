"""The JAX backend's max-pooling pair: the maxima and each window's first arg-max by one
reduction (``_maxpool_pair``), the δ routed by those indices (``_maxpool_vjp_idx``).  Checked
against PyTorch autograd's ``F.max_pool2d`` (values, indices and δ) with many ties, cropped
edges and overlapping padded windows, and a conv → ReLU → max-pooling step against autograd
of the same network written here."""
from __future__ import annotations

import numpy as np
import pytest

import symback as sb

torch = pytest.importorskip("torch")
jax = pytest.importorskip("jax")
F = torch.nn.functional


@pytest.mark.parametrize("k, s, p, H, W", [(2, 2, 0, 6, 8), (2, 2, 0, 7, 5), (3, 3, 0, 9, 7), (1, 1, 0, 3, 4),
                                           (3, 2, 1, 8, 7)])
def test_jax_pool_pair_equals_torch_autograd(k, s, p, H, W):
    """Integer pixels of two levels (most windows tie): the pair's maxima equal autograd's, its
    indices pick autograd's arg-max in each window, and its δ equals autograd's (exactly where
    windows lie side by side), beside the unpaired δ of the same module."""
    import jax.numpy as jnp
    net = sb.Sequential(sb.MaxPool2d(k, stride=s, padding=p), sb.Flatten(), sb.Dense(2),
                        inputs=(3, H, W), loss="mse")
    ns = sb.compile(sb.derive(net), backend="jax", dtype="float64")._ns
    rng = np.random.default_rng(k * 100 + H * 10 + W)
    n, C = 4, 3
    x = torch.tensor(rng.integers(0, 2, size=(n, C, H, W)).astype(float), requires_grad=True)
    out, idx = F.max_pool2d(x, k, s, p, return_indices=True)
    d = torch.tensor(rng.normal(size=out.shape))
    out.backward(d)
    a, flat = jnp.asarray(x.detach().reshape(n, C, H * W).numpy()), jnp.asarray(d.reshape(n, C, -1).numpy())
    geometry = (C, H, W, k, s, p)
    pair = ns["_maxpool_pair"](a, *geometry)
    np.testing.assert_array_equal(np.asarray(pair[0]), out.detach().reshape(n, C, -1).numpy())
    if s == k and not p:        # the index in each window, row-major: autograd's flat pixel index
        Ho, Wo = H // k, W // k
        i, j = np.divmod(np.asarray(pair[1]), k)
        rows = np.arange(Ho)[:, None] * k + i
        cols = np.arange(Wo)[None, :] * k + j
        np.testing.assert_array_equal(rows * W + cols, idx.numpy())
    want = x.grad.reshape(n, C, H * W).numpy()
    # (overlapping windows add their δ on a pixel in another order than autograd: rounding)
    tol = 0 if s == k else 1e-15 * np.abs(want).max()
    for got in (ns["_maxpool_vjp_idx"](flat, pair, *geometry), ns["_maxpool_vjp"](flat, a, *geometry)):
        np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=tol)


def test_jax_step_pools_once_and_equals_torch_autograd():
    """conv → ReLU → max-pooling: the JAX step pools each map once (the pair) and routes δ by
    its indices, and its loss and new parameters equal autograd's SGD step on the network
    written here (ReLU'(0) = 1, symback's convention; integer kernels make many z exactly 0)."""
    net = sb.Sequential(sb.Conv2d(3, 3, padding=1, activation="relu"), sb.MaxPool2d(2), sb.Flatten(),
                        sb.Dense(3, "softmax"), inputs=(2, 8, 8), loss="cross_entropy")
    d = sb.derive(net)
    m = sb.compile(d, backend="jax", dtype="float64")
    step = m.source[m.source.index("def _step("):]
    step = step[:step.index("\ndef ")]
    assert "_maxpool_pair(A1" in step and "_maxpool_vjp_idx(" in step and "_maxpool(" not in step
    rng = np.random.default_rng(3)
    n, lr = 6, 0.1
    x = rng.integers(0, 2, size=(n, 2, 8, 8)).astype(float)
    y = np.eye(3)[rng.integers(0, 3, n)]
    params = {q: rng.integers(-1, 2, size=tuple(int(v) for v in net.symbol(q).shape)).astype(float) for q in d.params}
    t = {q: torch.tensor(v, requires_grad=True) for q, v in params.items()}
    z = F.conv2d(torch.tensor(x), t["K1"].T.reshape(3, 2, 3, 3), t["b1"][0], padding=1)
    a = F.max_pool2d(torch.where(z >= 0, z, torch.zeros_like(z)), 2)
    loss = F.cross_entropy(a.flatten(1) @ t["W2"] + t["b2"], torch.tensor(y).argmax(1))
    loss.backward()
    got = dict(params)
    value = m.step(x, y, got, lr=lr)
    assert abs(value - loss.item()) <= 1e-12 * max(1.0, abs(loss.item()))
    for q, v in t.items():
        np.testing.assert_allclose(np.asarray(got[q]), (v - lr * v.grad).detach().numpy(), rtol=1e-10, atol=1e-12)
