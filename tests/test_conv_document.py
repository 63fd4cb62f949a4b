"""A convolution's backward in a document (symback/document/convolution.py): the index forms
(correlation, full convolution of the dilated δ with the flipped kernel) against PyTorch
autograd of ``F.conv2d`` with stride and padding, the proof's teeth, and the worked grid's
numbers against torch; the section's lines pass the document certificate."""
from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

import symback as sb
from symback.document import convolution as cv
from symback.errors import DefinitionError

torch = pytest.importorskip("torch")
F = torch.nn.functional


@pytest.mark.parametrize("case", [(1, 5, 4, 3, 2, 1, 2), (2, 4, 4, 2, 1, 0, 1)])
def test_index_forms_equal_torch_autograd(case):
    """The index formulas evaluated at random numbers are torch's conv2d gradients."""
    C, H, W, k, s, p, Co = case
    rng = np.random.default_rng(sum(case))
    x, w = rng.normal(size=(1, C, H, W)), rng.normal(size=(Co, C, k, k))
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    z = F.conv2d(xt, wt, stride=s, padding=p)
    g = rng.normal(size=tuple(z.shape))
    (z * torch.tensor(g)).sum().backward()
    X = sp.ImmutableMatrix(x.reshape(C, H * W))
    K = sp.ImmutableMatrix(w.reshape(Co, -1).T)
    D = sp.ImmutableMatrix(g.reshape(Co, -1))
    (eK, fK), (eA, fA) = cv._views((C, H, W, k, s, p), X, K, D)
    for ours, oracle in ((fK, wt.grad.numpy().reshape(Co, -1).T), (fA, xt.grad.numpy().reshape(C, -1)),
                         (eK, wt.grad.numpy().reshape(Co, -1).T)):
        assert np.abs(np.array(ours.tolist(), dtype=float) - oracle).max() < 1e-10


def test_proof_rejects_a_wrong_index_form(monkeypatch):
    """Without the dilation (δ read at a+p−i as if the stride were 1) the proof fails."""
    right = cv.index_formulas

    def undilated(k, stride, padding, Ho, Wo, C_out):
        wgrad, (lhs, igrad) = right(k, stride, padding, Ho, Wo, C_out)
        return wgrad, (lhs, igrad.xreplace({cv._Dt: cv._D}))
    monkeypatch.setattr(cv, "index_formulas", undilated)
    cv.prove_views.cache_clear()
    with pytest.raises((DefinitionError, IndexError)):
        cv.prove_views()
    monkeypatch.undo()
    cv.prove_views.cache_clear()
    assert cv.prove_views()


def test_worked_grid_numbers_equal_torch():
    w = cv.worked_example()
    x = torch.tensor(np.array(cv._X, dtype=float)[None, None], requires_grad=True)
    k = torch.tensor(np.array(cv._KER, dtype=float)[None, None], requires_grad=True)
    (F.conv2d(x, k) * torch.tensor(np.array(cv._DELTA, dtype=float))).sum().backward()
    dK, dX = (np.array(w[n]["sympy"]["chain"][-1].tolist(), dtype=float) for n in ("dK", "dX"))
    assert np.array_equal(dK.reshape(2, 2), k.grad.numpy()[0, 0])
    assert np.array_equal(dX.reshape(4, 4), x.grad.numpy()[0, 0])


def test_cnn_document_shows_the_index_forms_and_they_are_certified():
    from symback.document.certificate import certify, lines
    from symback.document.context import context
    net = sb.Sequential(sb.Conv2d(1, 2, stride=2, padding=1), sb.Flatten(), sb.Dense(1), inputs=(1, 3, 3),
                        loss="mse")
    d = sb.derive(net)
    ctx = context(d)
    assert {w for w, _ in lines(ctx) if w.startswith("convolution")} == {"convolution.worked.dK",
                                                                          "convolution.worked.dX"}
    assert certify(d, ctx)["lines"] >= 2
    assert ctx["convolution"]["layers"][0]["stride"] == 2
    md = d.markdown()
    assert "*full convolution*" in md and r"\tilde{\delta}" in md and "kernel $K_{1}$" in md
    # a network without a convolution has no such section
    assert context(sb.derive(sb.mlp([2, 2, 1])))["convolution"] is None
