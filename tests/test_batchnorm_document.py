"""Batch normalisation's backward in a document (symback/document/batchnorm.py): the three-term
form against torch's ``F.batch_norm(training=True)`` gradients, the proof's teeth, and the
section's lines certified (a dropped term is caught)."""
from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

import symback as sb
from symback.document import batchnorm as bn
from symback.errors import DefinitionError

torch = pytest.importorskip("torch")
F = torch.nn.functional
EPS = sp.Rational(1, 10 ** 5)


def test_three_term_form_and_engine_equal_torch_batch_norm():
    rng = np.random.default_rng(3)
    h, dn, gamma = rng.normal(size=(4, 2)), rng.normal(size=(4, 2)), rng.normal(size=(1, 2))
    ht, gt = torch.tensor(h, requires_grad=True), torch.tensor(gamma[0], requires_grad=True)
    out = F.batch_norm(ht, None, None, weight=gt, bias=torch.zeros(2, dtype=torch.float64), training=True,
                       eps=1e-5)
    (out * torch.tensor(dn)).sum().backward()
    H, D, G = (sp.ImmutableMatrix(a) for a in (h, dn, gamma))
    for ours in (bn.textbook(H, D, G, EPS), bn._engine(H, D, G, EPS)):
        assert np.abs(np.array(ours.evalf(20).tolist(), dtype=float) - ht.grad.numpy()).max() < 1e-10


def _two_terms(H, D, gamma, eps):
    """The backward with the part along Ĥ left out: (δ_Ĥ − mean(δ_Ĥ)) / σ, per column."""
    m, d = H.shape
    mu = [sum(H[:, j]) / m for j in range(d)]
    sig = [sp.sqrt(sum((H[i, j] - mu[j]) ** 2 for i in range(m)) / m + eps) for j in range(d)]
    dh = sp.Matrix(m, d, lambda i, j: D[i, j] * gamma[0, j])
    return sp.ImmutableMatrix(m, d, lambda i, j: (dh[i, j] - sum(dh[:, j]) / m) / sig[j])


def test_proof_rejects_a_dropped_term(monkeypatch):
    monkeypatch.setattr(bn, "textbook", _two_terms)
    bn.prove.cache_clear()
    with pytest.raises(DefinitionError):
        bn.prove()
    monkeypatch.undo()
    bn.prove.cache_clear()
    assert bn.prove()


def test_document_shows_the_three_terms_and_certifies_them(monkeypatch):
    from symback.document.certificate import CertificateError, certify, lines
    from symback.document.context import context
    d = sb.derive(sb.Sequential(sb.Dense(3), sb.BatchNorm(), sb.Dense(1), inputs=2, loss="mse"))
    ctx = context(d, cost=False, verify=False, figure=False)
    assert {w for w, _ in lines(ctx) if w.startswith("batchnorm")} == {"batchnorm.layers[0].dhat",
                                                                       "batchnorm.layers[0].dH"}
    assert certify(d, ctx)["lines"] >= 2
    md = d.markdown(cost=False, verify=False, figure=False)
    assert r"\odot \left(\delta_{\hat{H}_{2}} - " in md
    # teeth: the closed form without its third term is caught by the certificate
    right = bn.closed_form
    monkeypatch.setattr(bn, "closed_form", lambda D, Hh, r, m: right(D, 0 * Hh, r, m))
    with pytest.raises(CertificateError):
        certify(d, context(d, cost=False, verify=False, figure=False))
    assert context(sb.derive(sb.mlp([2, 2, 1])))["batchnorm"] is None


def test_a_batch_norm_of_the_data_has_no_backward_to_show():
    """sb.BatchNorm() as the first layer normalises X, whose δ no one needs: the engine derives no
    δ_X, and the section's lines about it could not be checked (the document raised a TypeError).
    The section now covers the batch norms a δ flows back through, and is left out without one."""
    first = sb.derive(sb.Sequential(sb.BatchNorm(), sb.Dense(2), inputs=2, loss="mse"))
    assert "X" not in first.adjoint
    assert r"\section{Batch normalisation's backward}" not in first.latex(figure=False)
    second = sb.derive(sb.Sequential(sb.BatchNorm(), sb.BatchNorm(), sb.Dense(2), inputs=2, loss="mse"))
    text = second.latex(figure=False)           # certified: the second one's δ lines are checked
    assert text.count(r"\section{Batch normalisation's backward}") == 1
