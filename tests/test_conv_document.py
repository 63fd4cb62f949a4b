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


# ---------------------------------------------------------------- max-pooling: δ to the arg-max
def _torch_maxpool_grad(x, delta, k, s, p):
    xt = torch.tensor(x, requires_grad=True)
    (F.max_pool2d(xt, k, s, p) * torch.tensor(delta)).sum().backward()
    return xt.grad.numpy()


def test_maxpool_worked_grid_is_torch_autograd():
    """The grid's δ_A (the engine's derivation at the numbers, and the arg-max statement) is
    torch's gradient of max_pool2d."""
    from symback.document import pooling as pl
    from symback.document.analysis import value_of
    w = pl.worked_example()
    oracle = _torch_maxpool_grad(np.array(pl._X, dtype=float)[None, None],
                                 np.array(pl._DELTA, dtype=float)[None, None], 2, 2, 0)[0, 0]
    for side in w["dX"]["sympy"]["chain"]:
        assert np.array_equal(value_of(side, {}, 2).reshape(4, 4), oracle)
    assert r"\boxed{3}" in w["X"] and w["dX"]["value"].count(r"\boxed") == 4


@pytest.mark.parametrize("case", [(2, 5, 4, 3, 2, 1), (1, 4, 5, 2, 1, 0)])
def test_maxpool_engine_vjp_equals_torch_at_random_points(case):
    """Overlapping and padded windows: the engine's derived δ_A, and δ placed at the arg-maxes."""
    from symback.document import pooling as pl
    from symback.document.analysis import value_of
    from symback.image import Geometry
    C, H, W, k, s, p = case
    g = Geometry(*case)
    rng = np.random.default_rng(sum(case))
    x, delta = rng.normal(size=(1, C, H, W)), rng.normal(size=(1, C, *g.out))
    X, D = sp.ImmutableMatrix(x.reshape(C, -1)), sp.ImmutableMatrix(delta.reshape(C, -1))
    oracle = _torch_maxpool_grad(x, delta, k, s, p).reshape(C, -1)
    assert np.abs(value_of(pl.engine_vjp(X, D, g), {}, 2) - oracle).max() < 1e-12
    assert np.abs(np.array(pl.routed(X, D, g).tolist(), dtype=float) - oracle).max() < 1e-12


def test_cnn_document_routes_maxpool_delta_and_certifies_it(monkeypatch):
    from symback.document import pooling as pl
    from symback.document.certificate import CertificateError, certify, lines
    from symback.document.context import context
    net = sb.Sequential(sb.MaxPool2d(2), sb.Flatten(), sb.Dense(1), inputs=(1, 4, 4), loss="mse")
    d = sb.derive(net)
    ctx = context(d, cost=False, verify=False)
    assert "pooling.worked.dX" in {w for w, _ in lines(ctx)}
    assert certify(d, ctx)["lines"] >= 1
    assert ctx["pooling"]["layers"] == [{"k": 2, "stride": 2, "padding": 0}]
    md = d.markdown()
    assert "goes to the arg-max" in md and r"\boxed" in md
    # teeth: δ placed at each window's arg-min instead of its arg-max is caught
    right = pl.routed
    monkeypatch.setattr(pl, "routed", lambda X, D, g: right(-X, D, g))
    with pytest.raises(CertificateError):
        certify(d, context(d, cost=False, verify=False))
    assert context(sb.derive(sb.mlp([2, 2, 1])))["pooling"] is None
