"""One-sample networks with a single output (a 1×1 prediction): an activation of a 1×1 matrix
used to recurse forever (SymPy's ElementwiseApplyFunction applies its function to a 1×1 matrix
as a whole, and a symback function of a matrix builds an ElementwiseApplyFunction again), and
the cost's δ of a 1×1 trace is the 1×1 identity.  Checked against torch autograd of the same
network written here, and the document is certified."""
from __future__ import annotations

import numpy as np
import pytest

import symback as sb

torch = pytest.importorskip("torch")
F = torch.nn.functional


def test_image_network_with_one_sigmoid_output_trains_and_documents():
    net = sb.Sequential(sb.Conv2d(2, 2), sb.Flatten(), sb.Dense(1, "sigmoid"), inputs=(1, 3, 3),
                        loss="binary_cross_entropy")
    d = sb.derive(net)
    m = sb.compile(d)
    p = m.init(seed=0)
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(5, 1, 3, 3)), rng.integers(0, 2, size=(5, 1, 1)).astype(float)
    got = m.grad(X, Y, p)
    t = {k: torch.tensor(v, requires_grad=True) for k, v in p.items()}
    z = F.conv2d(torch.tensor(X), t["K1"].T.reshape(2, 1, 2, 2)) + t["b1"].reshape(1, 2, 1, 1)
    yhat = torch.sigmoid(z.flatten(1) @ t["W2"] + t["b2"])
    F.binary_cross_entropy(yhat, torch.tensor(Y.reshape(5, 1))).backward()
    for k in p:
        assert np.allclose(np.asarray(got[k]), t[k].grad.numpy(), rtol=1e-9, atol=1e-12), k
    tex = d.latex()             # the certificate runs inside render
    assert r"\operatorname{unfold}" in tex


def test_sequence_of_one_position_with_one_output_documents():
    net = sb.Sequential(sb.Dense(3, "tanh"), sb.Dense(1, "sigmoid"), inputs=(1, 2),
                        loss="binary_cross_entropy")
    md = sb.derive(net).markdown()
    assert "Yhat" in md or r"\hat{Y}" in md
