"""Random CNNs on every backend against PyTorch autograd (differential, hypothesis).

hypothesis builds a small image network through the public API: one to three layers, each a
Conv2d (kernel 1-3, stride 1-2, padding up to half the kernel, ReLU, tanh, sigmoid or none)
or a max- or average-pooling (windows 1-3, any stride up to the window, so windows overlap or
leave pixels out, padding up to half the window), then Flatten and a Dense output, with
cross-entropy (softmax) or squared error.  The same network written in ``torch.nn.functional``
is the oracle: every parameter's gradient, the loss and one SGD step on NumPy, JAX and torch,
in float64, relative 1e-8.  Two deeper fixed examples and two of hypothesis's normally,
forty under ``SYMBACK_SLOW=1``.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import symback as sb
from conftest import examples
from test_cnn import check_backends
from symback import image

torch = pytest.importorskip("torch")
F = torch.nn.functional
ACTIVATIONS = {"relu": F.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid, "identity": lambda a: a}


@st.composite
def cnns(draw):
    """((C, H, W), layers, classes, loss): every layer leaves at least one pixel."""
    C, H, W = draw(st.integers(1, 3)), draw(st.integers(4, 10)), draw(st.integers(4, 10))
    layers, h, w = [], H, W
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["conv", "max", "avg"]))
        k = draw(st.integers(1, 3))
        s = draw(st.integers(1, 2 if kind == "conv" else k))
        p = draw(st.integers(0, k // 2))
        ho, wo = image.out_size(h, k, s, p), image.out_size(w, k, s, p)
        if min(ho, wo) < 1:
            continue
        if kind == "conv":
            layers.append(("conv", draw(st.integers(1, 3)), k, s, p, draw(st.sampled_from(sorted(ACTIVATIONS)))))
        else:
            layers.append((kind, k, s, p))
        h, w = ho, wo
    if not layers:
        layers.append(("conv", 2, 1, 1, 0, "tanh"))
    return (C, H, W), layers, draw(st.integers(2, 4)), draw(st.sampled_from(["cross_entropy", "mse"]))


def _network(shape, layers, classes, loss):
    blocks = [sb.Conv2d(o[0], o[1], stride=o[2], padding=o[3], activation=o[4]) if kind == "conv"
              else (sb.MaxPool2d if kind == "max" else sb.AvgPool2d)(o[0], stride=o[1], padding=o[2])
              for kind, *o in layers]
    return sb.Sequential(*blocks, sb.Flatten(), sb.Dense(classes, "softmax" if loss == "cross_entropy" else "identity"),
                         inputs=shape, loss=loss)


def _torch_loss(layers, x, y, t, loss):
    z = _torch_out(layers, x, t)
    return F.cross_entropy(z, y.argmax(1)) if loss == "cross_entropy" else ((z - y) ** 2).sum(1).mean()


def _torch_out(layers, x, t, head=lambda z: z):
    """The network's output (the Dense layer's activation `head` of its z) for the images x."""
    a, l = x, 0
    for kind, *o in layers:
        if kind == "conv":
            l += 1
            out, k, s, p, act = o
            a = ACTIVATIONS[act](F.conv2d(a, t[f"K{l}"].T.reshape(out, a.shape[1], k, k), t[f"b{l}"][0],
                                          stride=s, padding=p))
        else:
            a = (F.max_pool2d if kind == "max" else F.avg_pool2d)(a, *o)
    return head(a.flatten(1) @ t[f"W{l + 1}"] + t[f"b{l + 1}"])


@settings(max_examples=examples(2), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(cnns(), st.integers(0, 2 ** 32 - 1))
# two deeper ones every run (hypothesis's fixed examples start small): overlapping and padded
# windows, strides that leave pixels out, each activation
@example(((2, 9, 8), [("conv", 3, 3, 2, 1, "relu"), ("max", 3, 2, 1), ("conv", 2, 2, 1, 0, "tanh")], 3,
          "cross_entropy"), 7)
@example(((1, 7, 7), [("avg", 2, 1, 1), ("conv", 2, 3, 1, 1, "sigmoid"), ("max", 2, 2, 0)], 2, "mse"), 11)
def test_random_cnn_equals_torch_autograd_on_every_backend(cnn, seed):
    shape, layers, classes, loss = cnn
    net = _network(shape, layers, classes, loss)
    d = sb.derive(net)
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 5))
    x = rng.normal(size=(n, *shape))
    y = np.eye(classes)[rng.integers(0, classes, n)] if loss == "cross_entropy" else rng.normal(size=(n, classes))
    params = {p: rng.normal(size=tuple(int(v) for v in net.symbol(p).shape)) / 2 for p in d.params}
    t = {p: torch.tensor(v, requires_grad=True) for p, v in params.items()}
    want = _torch_loss(layers, torch.tensor(x), torch.tensor(y), t, loss)
    want.backward()
    check_backends(d, x, y, params, t, want.item(), lr=0.3)


# A layer's VJP (m.vjp) of conv stacks with strides, padding, 1x1 kernels and odd sizes, every
# backend, against autograd of ⟨G, out⟩.  NumPy's _unfold of a 1x1 kernel was a view of its
# input (the reshape of strided windows needs no copy when a side is 1); the VJP then squared
# that input in place (tanh's derivative) before the kernel's δ read the patches: K3 wrong.
VJP_NETS = [
    ((2, 4, 5), [("conv", 2, 1, 2, 0, "sigmoid"), ("conv", 2, 1, 1, 0, "tanh"), ("conv", 1, 1, 2, 0, "tanh")]),
    ((1, 5, 7), [("conv", 2, 1, 1, 0, "tanh"), ("conv", 3, 1, 2, 1, "sigmoid")]),
    ((3, 7, 5), [("conv", 2, 3, 2, 1, "tanh"), ("conv", 2, 1, 1, 0, "relu"), ("avg", 2, 1, 0)]),
    ((2, 9, 6), [("conv", 3, 2, 2, 0, "sigmoid"), ("max", 2, 2, 0), ("conv", 1, 1, 1, 0, "tanh")]),
    ((1, 6, 6), [("conv", 2, 3, 1, 1, "identity"), ("conv", 1, 1, 2, 0, "tanh")]),
]


@pytest.mark.parametrize("shape, layers", VJP_NETS)
def test_vjp_of_strided_convolutions_equals_torch_autograd(shape, layers):
    net = sb.Sequential(*[sb.Conv2d(o[0], o[1], stride=o[2], padding=o[3], activation=o[4]) if kind == "conv"
                          else (sb.MaxPool2d if kind == "max" else sb.AvgPool2d)(o[0], stride=o[1], padding=o[2])
                          for kind, *o in layers], sb.Flatten(), sb.Dense(2, "leaky_relu"),
                        inputs=shape, loss="logcosh")
    d = sb.derive(net)
    rng = np.random.default_rng(len(layers))
    x, g = rng.normal(size=(3, *shape)), rng.normal(size=(3, 2))
    params = {p: 0.6 * rng.normal(size=tuple(int(v) for v in net.symbol(p).shape)) for p in d.params}
    t = {p: torch.tensor(v, requires_grad=True) for p, v in params.items()}
    xt = torch.tensor(x, requires_grad=True)
    out = _torch_out(layers, xt, t, lambda z: torch.where(z < 0, 0.01 * z, z))
    (out * torch.tensor(g)).sum().backward()
    for backend in ("numpy", "jax", "torch"):
        m = sb.compile(d, backend=backend)
        dx, dp = m.vjp(x, params, g)
        assert np.allclose(np.asarray(dx), xt.grad.numpy(), rtol=1e-8, atol=1e-12), backend
        for p in d.params:
            assert np.allclose(np.asarray(dp[p]), t[p].grad.numpy(), rtol=1e-8, atol=1e-12), (backend, p)
