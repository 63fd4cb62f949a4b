"""Nodes every sample shares (they read parameters only) in a one-sample graph, against torch autograd.

A one-sample graph's data carry the batch on a leading axis; a node that reads no data is one
value for all samples, and its δ is summed over the batch once, when it is computed.  The δ of
the parameters under it must not count the samples again: with H = tanh(1 b) feeding
Ŷ = X W + H, ∂L/∂b came out m times too large (δ_b = m · 1ᵀ(δ_H ⊙ tanh′), δ_H already Σ over
the samples), on every backend; as with Ŷ = 1 b, a prediction that reads no data at all.
"""
from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

import symback as sb

torch = pytest.importorskip("torch")
BACKENDS = ("numpy", "jax", "torch")


def _graph(case, rows):
    g = sb.Graph()
    R = 3 if rows == "sample" else sb.BATCH
    X = g.inputs("X", shape=(R, 2))
    W, b = g.params("W b", shape=[(2, 3), (1, 3)])
    one = sb.ones(R, 1)
    if case == "tanh_bias":
        H = g.node("H", sb.tanh(one @ b))
        Yh = g.node("Yhat", X @ W + H)
    elif case == "chain":
        H = g.node("H", sb.sigmoid(one @ b))
        H2 = g.node("H2", sb.hadamard(H, sb.tanh(H)))
        Yh = g.node("Yhat", sb.tanh(X @ W - sp.Rational(1, 2) * H2))
    else:                               # "bias_only": Ŷ reads no data
        Yh = g.node("Yhat", one @ b)
    g.loss(sb.mse(Yh, g.targets("Y", shape=(R, 3))))
    return g


def _torch(case, X, p):
    if case == "tanh_bias":
        return X @ p["W"] + torch.tanh(p["b"])
    if case == "chain":
        h = torch.sigmoid(p["b"])
        return torch.tanh(X @ p["W"] - 0.5 * h * torch.tanh(h))
    return p["b"].expand(X.shape[:-1] + (3,))


@pytest.mark.filterwarnings("ignore::symback.errors.UnusedParameterWarning")
@pytest.mark.parametrize("rows", ["sample", "batch"])
@pytest.mark.parametrize("case", ["tanh_bias", "chain", "bias_only"])
def test_shared_node_gradients_equal_torch_autograd(case, rows):
    d = sb.derive(_graph(case, rows))
    rng = np.random.default_rng(3)
    params = {"W": rng.normal(size=(2, 3)), "b": rng.normal(size=(1, 3))}
    shape = (4, 3) if rows == "sample" else (4,)
    x, y = rng.normal(size=shape + (2,)), rng.normal(size=shape + (3,))
    t = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    loss = ((_torch(case, torch.tensor(x), t) - torch.tensor(y)) ** 2).reshape(4, -1).sum(1).mean()
    loss.backward()
    want = {k: np.zeros_like(v) if t[k].grad is None else t[k].grad.numpy() for k, v in params.items()}
    for backend in BACKENDS:
        m = sb.compile(d, backend=backend)
        assert np.isclose(m.loss(x, y, params), loss.item(), rtol=1e-10)
        grads = m.grad(x, y, params)
        for k in params:
            assert np.allclose(np.asarray(grads[k]), want[k], rtol=1e-9, atol=1e-12), (backend, k)
        moved = {k: torch.tensor(v) if backend == "torch" else v.copy() for k, v in params.items()}
        m.step(x, y, moved, lr=0.1)
        for k in params:
            assert np.allclose(np.asarray(moved[k]), params[k] - 0.1 * want[k], rtol=1e-9, atol=1e-12), (backend, k)
