"""An inline biased projection A = X W + 1 b multiplied on: 1ᵀ D times a matrix, against torch autograd.

δ_b of such an A is a row of column sums times a matrix, (1ᵀ D) W4ᵀ.  The column sums are a
1-D row in the compiled code, and so is their product; the lowering declared the product a
1 × n matrix, so JAX's ``_a_bt`` contracted axis 1 of a 1-D array (TypeError), torch's step
fused it into ``b.addmm_(row, W4.T)`` (a 1-D mat1) and torch's module returned b's gradient
1-D, not 1 × n.  The fuzzer's graph (A inside causal softmax scores and in the value path) and
plain ones, on every backend: grad, step, vjp, and the torch module's loss backward.
"""
from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

import symback as sb
from conftest import slow

torch = pytest.importorskip("torch")
BACKENDS = ("numpy", "jax", "torch")
T = 4


def _graph(case, h):
    g = sb.Graph()
    R = T if case != "batch" else sb.BATCH
    X = g.inputs("X", shape=(R, 2))
    W1, b2, W4 = g.params("W1 b2 W4", shape=[(2, h), (1, h), (h, 3)])
    A = X @ W1 + sb.ones(R, 1) @ b2
    if case == "scores":        # the fuzzer's: A in causal softmax scores and in the value path
        N1 = g.node("N1", sb.softmax(sp.Rational(3, 2) * A @ A.T, mask="causal"))
        Yh = g.node("Yhat", sb.sigmoid(g.node("N2", N1 @ A @ W4)))
    else:
        Yh = g.node("Yhat", sb.sigmoid(A @ W4))
    g.loss(sb.binary_cross_entropy(Yh, g.targets("Y", shape=(R, 3))))
    return g


def _torch(case, X, p):
    A = X @ p["W1"] + p["b2"]
    if case == "scores":
        S = (1.5 * A @ A.transpose(-1, -2)).masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
        return torch.sigmoid(torch.softmax(S, -1) @ A @ p["W4"])
    return torch.sigmoid(A @ p["W4"])


# each case at one height in a normal run, at both in slow mode
@pytest.mark.parametrize("case, h", [("scores", 1), slow("scores", 2), slow("sample", 1), ("sample", 3), ("batch", 1),
                                     slow("batch", 3)])
def test_row_of_sums_times_a_matrix_equals_torch_autograd(case, h):
    d = sb.derive(_graph(case, h))
    rng = np.random.default_rng(h)
    params = {"W1": rng.normal(size=(2, h)), "b2": rng.normal(size=(1, h)), "W4": rng.normal(size=(h, 3))}
    shape = (3,) if case == "batch" else (3, T)
    x, y, g = rng.normal(size=shape + (2,)), rng.random(shape + (3,)), rng.normal(size=shape + (3,))
    t = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    xt = torch.tensor(x, requires_grad=True)
    p, yt = _torch(case, xt, t), torch.tensor(y)
    loss = (-(yt * torch.log(p) + (1 - yt) * torch.log(1 - p))).reshape(3, -1).sum(1).mean()
    want = dict(zip(params, torch.autograd.grad(loss, list(t.values()), retain_graph=True)))
    vjp = torch.autograd.grad((p * torch.tensor(g)).sum(), [xt] + list(t.values()))

    def close(a, b):
        a = np.asarray(a.detach() if isinstance(a, torch.Tensor) else a)
        return a.shape == tuple(b.shape) and np.allclose(a, np.asarray(b), rtol=1e-9, atol=1e-12)
    for backend in BACKENDS:
        m = sb.compile(d, backend=backend)
        grads = m.grad(x, y, params)
        assert all(close(grads[k], want[k]) for k in params), backend
        moved = {k: torch.tensor(v) if backend == "torch" else v.copy() for k, v in params.items()}
        m.step(x, y, moved, lr=0.1)
        assert all(close(moved[k], params[k] - 0.1 * want[k].numpy()) for k in params), backend
        dx, dp = m.vjp(x, params, g)
        assert close(dx, vjp[0]) and all(close(dp[k], v) for k, v in zip(params, vjp[1:])), backend
    module = sb.compile(d, backend="torch").module(params)
    module(torch.tensor(x), torch.tensor(y)).backward()
    assert all(close(module.params[k].grad, want[k]) for k in params)
