"""A document audit's findings, one test each: every one of them failed before its fix.

Each document here also passes the certificate (render runs it), so a fix that printed
something false would fail too.  Numbers are checked against torch autograd on the same
network written in the test.
"""
from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
import torch

import symback as sb
from symback.document import context

T, D, K = 3, 2, 2


def _one_sample_layer(act) -> sb.Graph:
    """The audit's graph: one (T, D) sample, H = f(X W + 1 b), mse on H."""
    g = sb.Graph()
    X, Y = g.inputs("X", shape=(T, D)), g.targets("Y", shape=(T, K))
    W, b = g.params("W", shape=(D, K)), g.params("b", shape=(1, K))
    g.loss(sb.mse(g.node("H", act(X @ W + sb.ones(T, 1) @ b)), Y))
    return g


def _jacobian_norm(f, x) -> float:
    return float(torch.linalg.norm(torch.autograd.functional.jacobian(f, x)))


@pytest.mark.parametrize("act, sup, name", [(sb.tanh, 1, "tanh"), (sb.sigmoid, sp.Rational(1, 4), "sigmoid")])
def test_one_sample_vanishing_prose_names_the_activation_in_its_bound(act, sup, name):
    """Audit: H = tanh(X W + 1 b) on one sample: the bound showed ‖∂H/∂Z_H‖_F, the text beside it said
    'no activation derivative is a factor on these paths'.  Now δ ↦ δ ⊙ f'(Z) is bounded by sup|f'| as
    in the notes form, and the text names f.  Oracle: torch autograd's gradient and Jacobians, at
    random points, are within the bound as printed (‖1‖·‖∂c/∂H‖·sup|f'|·‖∂Z/∂W‖)."""
    v = context(sb.derive(_one_sample_layer(act)), verify=False, cost=False, figure=False)["vanishing"]
    assert "No activation derivative" not in v["conclusion"] and name in v["conclusion"]
    assert "\\frac{\\partial H}{\\partial Z_{H}}" not in str(v["bound"])
    (path,) = v["sympy"]["bound"].args[1].args        # one path: Terms of one Chain
    factors = path.args
    assert [f for f in factors if f.is_number] == ([] if sup == 1 else [sup])
    f = {"tanh": torch.tanh, "sigmoid": torch.sigmoid}[name]
    rng = np.random.default_rng(0)
    for _ in range(5):
        X, Y, W, b = (torch.tensor(rng.normal(size=s)) for s in [(T, D), (T, K), (D, K), (1, K)])
        W.requires_grad_(True)
        C = ((f(X @ W + b) - Y) ** 2).sum()
        (grad,) = torch.autograd.grad(C, W)
        H = f(X @ W + b).detach()
        bound = (np.sqrt(T) * _jacobian_norm(lambda h: ((h - Y) ** 2).sum(1), H) * float(sup)
                 * _jacobian_norm(lambda w: X @ w + b, W.detach()))
        assert float(torch.linalg.norm(grad)) <= bound
