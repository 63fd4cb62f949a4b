"""Overlapping and padded pooling (a window moved by a stride other than its size, padding as
PyTorch's; the entry-by-entry definitions are checked in test_cnn.py): a CNN's gradients on every backend against torch autograd of the same network written here
(float64, relative 1e-8)."""
from __future__ import annotations

import os

import numpy as np
import pytest

import symback as sb
from symback.errors import DefinitionError
from test_cnn import check_backends

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _net(pool, k, s, p):
    layers = [sb.Conv2d(2, 2, padding=1, activation="tanh"), pool(k, stride=s, padding=p),
              sb.Conv2d(2, 2, activation="relu"), sb.Flatten(), sb.Dense(3, "softmax")]
    return sb.Sequential(*layers, inputs=(2, 7, 6), loss="cross_entropy")


def _torch_loss(kind, k, s, p, x, y, t):
    a = torch.tanh(F.conv2d(x, t["K1"].T.reshape(2, 2, 2, 2), t["b1"][0], padding=1))
    a = (F.max_pool2d if kind == "max" else F.avg_pool2d)(a, k, s, p)
    a = F.relu(F.conv2d(a, t["K2"].T.reshape(2, 2, 2, 2), t["b2"][0]))
    z = a.flatten(1) @ t["W3"] + t["b3"]
    return F.cross_entropy(z, y.argmax(1))


# two cases in normal mode (each compiles on three backends); all four under SYMBACK_SLOW=1
CASES = [("max", 3, 2, 1), ("avg", 2, 1, 1)] + (
    [("avg", 3, 2, 1), ("max", 2, 1, 0)] if os.environ.get("SYMBACK_SLOW") == "1" else [])


@pytest.mark.parametrize("kind, k, s, p", CASES)
def test_overlapping_pool_gradients_equal_torch_autograd(kind, k, s, p):
    net = _net(sb.MaxPool2d if kind == "max" else sb.AvgPool2d, k, s, p)
    d = sb.derive(net)
    rng = np.random.default_rng(k * 10 + s + p)
    x, y = rng.normal(size=(3, 2, 7, 6)), np.eye(3)[[0, 2, 1]]
    params = {q: rng.normal(size=tuple(int(v) for v in net.symbol(q).shape)) / 2 for q in d.params}
    t = {q: torch.tensor(v, requires_grad=True) for q, v in params.items()}
    loss = _torch_loss(kind, k, s, p, torch.tensor(x), torch.tensor(y), t)
    loss.backward()
    check_backends(d, x, y, params, t, loss.item())


def test_overlapping_pool_shapes_and_errors():
    net = sb.Sequential(sb.MaxPool2d(3, stride=2, padding=1), sb.Flatten(), sb.Dense(1), inputs=(1, 7, 7))
    assert net.symbol("W1").shape == (16, 1)         # ⌊(7 + 2 − 3)/2⌋ + 1 = 4
    assert repr(sb.AvgPool2d(3, stride=2, padding=1)) == "AvgPool2d(3, stride=2, padding=1)"
    assert repr(sb.MaxPool2d(2)) == "MaxPool2d(2)"
    with pytest.raises(DefinitionError, match="padding"):
        sb.MaxPool2d(2, padding=2)
    with pytest.raises(DefinitionError, match="stride"):
        sb.AvgPool2d(2, stride=0)
    with pytest.raises(DefinitionError, match="does not fit"):
        sb.Sequential(sb.MaxPool2d(3, stride=1), sb.Flatten(), sb.Dense(1), inputs=(1, 2, 5))
