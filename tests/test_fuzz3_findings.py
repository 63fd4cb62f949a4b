"""Hand-written graphs a third differential fuzz found wrong or refused, checked on every backend
against torch autograd of the same network written in torch.

Each case is a symback graph (Ŷ one node, mean squared error) and the same network by hand in
torch; the compiled model's prediction, loss, ∂L/∂p, VJP (∂⟨G, Ŷ⟩/∂X, ∂⟨G, Ŷ⟩/∂p) and one
step p − lr ∂L/∂p are compared with autograd, and on torch the ``module()`` backward too.
The findings:

* GELU of a product of X with itself in a one-sample graph (``gelu(X Xᵀ) W``): the torch
  backend's VJP refused (its printer reached GELU's derivative kernel marker alone, outside a
  product, and SymPy's dispatch never found the marker's print method);
* the Hadamard square of a sum of products inside a sum (``A ⊙ A + X`` with A = X W1 + X W2,
  which SymPy writes as A∘² + X): refused at derivation ("Mix of Matrix and Scalar symbols");
* the same square below the top of a product (``(A ⊙ A) 1 W8 W9``, ``(B ⊙ B)(B ⊙ B)ᵀ``), and a
  Hadamard product of squares there (``(N ⊙ N ⊙ W ⊙ W) V``): refused ("Mix of Matrix and Scalar
  symbols", "index is larger than expression shape", IndexError);
* a row sum of a row summed over the samples (δw of ``(X 1 w)(X 1 w)ᵀ V``, one sample: Σᵢ 1ᵀ(Xᵢᵀ Dᵢ Vᵀ Xᵢ)1 w):
  a row sum along axis 1 of a 1-D array, the gradient raised on every backend;
* a layer norm under a column sum in a one-sample graph (``1 1ᵀ layer_norm(X W1) W5``): on torch
  δ_N is one broadcast row per sample, (n, 1, d), which ``native_layer_norm_backward`` read as
  (n, T, d), past its end: δ_X off by 2.3 (by 10¹⁷³ on other data), ∂L/∂W1 by 2.9; the same
  broadcast δ into a softmax (``softmax(X W1) 1 W7``): torch's softmax backward refused it;
* a softmax of a column sum (``softmax(1 1ᵀ X W) Wᵀ``, one sample): lowered as T rows while its
  argument is one broadcast row, so the prediction came out one row per sample, (n, 1, k), and
  ∂L/∂p crashed, on every backend;
* a bias row read through row sums (``(X W1 + 1 b) 1 W5``, ``layer_norm(X W1, γ, β) 1 W5``): ∂L/∂b
  is one sum, the same in every column, computed as a 1-D row of length 1 and reshaped to
  (1, n): the gradient raised ("cannot reshape array of size 1 into shape (1,2)").
"""
from __future__ import annotations

import numpy as np
import pytest

import symback as sb
from test_fuzz_findings import _autograd, _close, check_grads_and_vjp, derive_case

torch = pytest.importorskip("torch")
pytest.importorskip("jax")

BACKENDS = ("numpy", "jax", "torch")
F = torch.nn.functional


def _t(a):
    return a.transpose(-1, -2)


def _sum(X, P):
    return X @ P["W1"] + X @ P["W2"]


def _causal(S):
    return torch.softmax(S.masked_fill(torch.ones(S.shape[-2:]).triu(1).bool(), float("-inf")), -1)


def _ln(A, P):
    return F.layer_norm(A, (A.shape[-1],), P["g"].reshape(-1), P["b"].reshape(-1), eps=1e-5)


#: id -> (rows of X, columns of X, parameter shapes, Ŷ in symback (X, P), Ŷ in torch (X, P))
CASES = {
    "gelu(X X.T) W": (2, 2, {"W": (2, 3)},
                      lambda X, P: sb.gelu(X @ X.T) @ P["W"],
                      lambda X, P: F.gelu(X @ _t(X), approximate="tanh") @ P["W"]),
    "W gelu(X.T X)": (3, 2, {"W": (4, 2)},
                      lambda X, P: P["W"] @ sb.gelu(X.T @ X),
                      lambda X, P: P["W"] @ F.gelu(_t(X) @ X, approximate="tanh")),
    "batch: A * A + X, A = X W1 + X W2": (sb.BATCH, 3, {"W1": (3, 3), "W2": (3, 3)},
                                          lambda X, P: sb.hadamard(_sum(X, P), _sum(X, P)) + X,
                                          lambda X, P: _sum(X, P) * _sum(X, P) + X),
    "batch: A * A + X W1 + 1 b": (sb.BATCH, 2, {"W1": (2, 2), "W2": (2, 2), "b": (1, 2)},
                                  lambda X, P: (sb.hadamard(_sum(X, P), _sum(X, P)) + X @ P["W1"]
                                                + sb.ones(sb.BATCH, 1) @ P["b"]),
                                  lambda X, P: _sum(X, P) * _sum(X, P) + X @ P["W1"] + P["b"]),
    "-1/2 A * A * A + X, one sample": (3, 2, {"W1": (2, 2), "W2": (2, 2)},
                                       lambda X, P: sb.hadamard(_sum(X, P), _sum(X, P), _sum(X, P)) * -0.5 + X,
                                       lambda X, P: -0.5 * _sum(X, P) ** 3 + X),
    "1 1.T ln(X W1) W5": (2, 2, {"W1": (2, 2), "g": (1, 2), "b": (1, 2), "W5": (2, 2)},
                          lambda X, P: sb.ones(2, 2) @ sb.layer_norm(X @ P["W1"], P["g"], P["b"]) @ P["W5"],
                          lambda X, P: torch.ones(2, 2) @ _ln(X @ P["W1"], P) @ P["W5"]),
    "1 1.T ln(X), T = 3": (3, 2, {"g": (1, 2), "b": (1, 2)},
                           lambda X, P: sb.ones(3, 3) @ sb.layer_norm(X, P["g"], P["b"]),
                           lambda X, P: torch.ones(3, 3) @ _ln(X, P)),
    "batch: softmax(X W1) 1 W7": (sb.BATCH, 2, {"W1": (2, 3), "W7": (1, 2)},
                                  lambda X, P: sb.softmax(X @ P["W1"]) @ sb.ones(3, 1) @ P["W7"],
                                  lambda X, P: torch.softmax(X @ P["W1"], -1).sum(-1, keepdim=True) @ P["W7"]),
    "1 1.T softmax_causal(X X.T) X W": (3, 2, {"W": (2, 2)},
                                        lambda X, P: sb.ones(3, 3) @ sb.softmax(X @ X.T, mask="causal") @ X @ P["W"],
                                        lambda X, P: torch.ones(3, 3) @ _causal(X @ _t(X)) @ X @ P["W"]),
    "softmax(1 1.T X W) W.T": (4, 2, {"W": (2, 3)},
                               lambda X, P: sb.softmax(sb.ones(4, 4) @ X @ P["W"]) @ P["W"].T,
                               lambda X, P: torch.softmax(torch.ones(4, 4) @ X @ P["W"], -1) @ _t(P["W"])),
    "softmax(1 1.T (W3 X + X)) W4.T": (4, 2, {"W3": (4, 4), "W4": (3, 2)},
                                       lambda X, P: sb.softmax(sb.ones(4, 4) @ (P["W3"] @ X + X)) @ P["W4"].T,
                                       lambda X, P: torch.softmax(torch.ones(4, 4) @ (P["W3"] @ X + X), -1) @ _t(P["W4"])),
    "batch: (X W1 + 1 b) 1 W5": (sb.BATCH, 2, {"W1": (2, 2), "b": (1, 2), "W5": (1, 3)},
                                 lambda X, P: (X @ P["W1"] + sb.ones(sb.BATCH, 1) @ P["b"]) @ sb.ones(2, 1) @ P["W5"],
                                 lambda X, P: (X @ P["W1"] + P["b"]).sum(-1, keepdim=True) @ P["W5"]),
    "batch: ln(X W1) 1 W5": (sb.BATCH, 2, {"W1": (2, 2), "g": (1, 2), "b": (1, 2), "W5": (1, 3)},
                             lambda X, P: sb.layer_norm(X @ P["W1"], P["g"], P["b"]) @ sb.ones(2, 1) @ P["W5"],
                             lambda X, P: _ln(X @ P["W1"], P).sum(-1, keepdim=True) @ P["W5"]),
    "(ln(X W1) + X) 1 W5, one sample": (3, 2, {"W1": (2, 2), "g": (1, 2), "b": (1, 2), "W5": (1, 3)},
                                        lambda X, P: (sb.layer_norm(X @ P["W1"], P["g"], P["b"]) + X) @ sb.ones(2, 1) @ P["W5"],
                                        lambda X, P: (_ln(X @ P["W1"], P) + X).sum(-1, keepdim=True) @ P["W5"]),
    "batch: (A * A) 1 W8 W9, A = X W1 + X W2": (sb.BATCH, 2, {"W1": (2, 2), "W2": (2, 2), "W8": (1, 3), "W9": (3, 2)},
                                                lambda X, P: sb.hadamard(_sum(X, P), _sum(X, P)) @ sb.ones(2, 1) @ P["W8"] @ P["W9"],
                                                lambda X, P: (_sum(X, P) ** 2).sum(-1, keepdim=True) @ P["W8"] @ P["W9"]),
    "(B * B) (B * B).T, B = X W1 W2 W2": (3, 2, {"W1": (2, 2), "W2": (2, 2)},
                                          lambda X, P: (sb.hadamard(X @ P["W1"] @ P["W2"] ** 2, X @ P["W1"] @ P["W2"] ** 2)
                                                        @ sb.hadamard(X @ P["W1"] @ P["W2"] ** 2, X @ P["W1"] @ P["W2"] ** 2).T),
                                          lambda X, P: (X @ P["W1"] @ P["W2"] @ P["W2"]) ** 2 @ _t((X @ P["W1"] @ P["W2"] @ P["W2"]) ** 2)),
    "(X 1 w)(X 1 w).T V": (2, 2, {"w": (1, 3), "V": (2, 2)},
                           lambda X, P: (X @ sb.ones(2, 1) @ P["w"]) @ (X @ sb.ones(2, 1) @ P["w"]).T @ P["V"],
                           lambda X, P: (X.sum(-1, keepdim=True) @ P["w"]) @ _t(X.sum(-1, keepdim=True) @ P["w"]) @ P["V"]),
    "(N * N * W * W) V, N = tanh(X)": (2, 2, {"W": (2, 2), "V": (2, 3)},
                                       lambda X, P: sb.hadamard(sb.hadamard(sb.tanh(X), sb.tanh(X)),
                                                                sb.hadamard(P["W"], P["W"])) @ P["V"],
                                       lambda X, P: (torch.tanh(X) ** 2 * P["W"] ** 2) @ P["V"]),
}


def _model(case, backend):
    rows, cols, shapes, build, _ = CASES[case]
    return sb.compile(derive_case(rows, cols, shapes, lambda g, X, P: build(X, P)), backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(CASES))
def test_fuzz3_cases_match_autograd(case, backend):
    torch.set_default_dtype(torch.float64)
    rows, cols, shapes, _, ref = CASES[case]
    rng = np.random.default_rng(list(CASES).index(case))
    P = {k: rng.standard_normal(s) for k, s in shapes.items()}
    X = rng.standard_normal((5, cols) if rows == sb.BATCH else (4, rows, cols))
    Yhat_want = _autograd(ref, X, P, lambda o: 0 * o)[0]
    Y, G = rng.standard_normal(Yhat_want.shape), rng.standard_normal(Yhat_want.shape)
    n = X.shape[0]
    _, _, grads = _autograd(ref, X, P, lambda o: (2 * (o - torch.tensor(Y)) / n).detach())
    _, dX_want, dP_want = _autograd(ref, X, P, lambda o: torch.tensor(G))
    m = _model(case, backend)
    _close(m.predict(X, P), Yhat_want, "prediction")
    value, got = m.value_and_grad(X, Y, P)
    _close(value, ((Yhat_want - Y) ** 2).sum() / n, "loss")
    check_grads_and_vjp(m, got, grads, X, P, G, dX_want, dP_want)
    stepped = {k: torch.tensor(v) if backend == "torch" else np.array(v) for k, v in P.items()}
    m.step(X, Y, stepped, lr=0.05)
    for k in P:
        _close(stepped[k], P[k] - 0.05 * grads[k], f"step {k}")
    if backend == "torch":
        mod = m.module({k: np.array(v) for k, v in P.items()})
        x = torch.tensor(X, requires_grad=True)
        (mod(x) * torch.tensor(G)).sum().backward()
        _close(x.grad, dX_want, "module dX")
        for k in P:
            _close(mod.params[k].grad, dP_want[k], f"module d{k}")
