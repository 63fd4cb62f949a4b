"""Networks a fuzzer found wrong or refused, each checked on every backend against torch autograd.

Each case is written twice: as a symback graph (Ŷ one node, mean squared error) and by hand in
torch; the loss, ∂L/∂p, the prediction and the VJP (∂⟨G, Ŷ⟩/∂X and ∂⟨G, Ŷ⟩/∂p) of the compiled
model are compared with torch autograd of the hand-written network.  The findings:

* an element-wise function below the top of a product (``W @ tanh(X W1)``, ``P @ relu(X W1)``):
  SymPy's matrix calculus transposed f's argument and not the δ beside it, a wrong ∂/∂W1 when
  X W1 is square and a refusal when not;
* a square intermediate times itself (``B @ B``, SymPy's ``B**2``): refused;
* an all-ones matrix wider than one column inside a product (``X @ ones(d, d) @ W``,
  ``ones(T, T) @ X @ W``): a crash, a prediction of one row, a δ of the wrong sign;
* ``X @ ones(d, 1) @ W``: the VJP's ∂/∂X one column wide; a gate 1 − σ(X) in a network with
  (2B) B and causal attention: the VJP refused (a matmul of mismatched shapes);
* a prediction that is one row repeated (``ones(m, 1) @ b``): δ_Ŷ = Ŷ − Y printed as −Y − Ŷ.
"""
from __future__ import annotations

import numpy as np
import pytest

import symback as sb
from conftest import slow

torch = pytest.importorskip("torch")
pytest.importorskip("jax")

BACKENDS = ("numpy", "jax", "torch")
T, D = 3, 2
ones = torch.ones


def _t(a):
    return a.transpose(-1, -2)


def _leaky(z):
    return torch.where(z >= 0, z, 0.01 * z)


def _relu(z):
    return torch.where(z >= 0, z, 0 * z)


def _gated(g, X, P, lib):
    """A = (1 − σ(X)) ⊙ X + σ(X) ⊙ X, B = A W1 + 1 b2, Ŷ = softmax_causal(A W5 (A W6)ᵀ/2) (2B) B,
    in symback (lib = sb, g the graph) or in torch (lib = torch)."""
    if lib is sb:
        A = sb.hadamard(sb.ones(2, 2) - sb.sigmoid(X), X) + sb.hadamard(sb.sigmoid(X), X)
        B = A @ P["W1"] + sb.ones(2, 1) @ P["b2"]
        return g.node("S", sb.softmax(A @ P["W5"] @ (A @ P["W6"]).T / 2, mask="causal")) @ g.node("N", (2 * B) @ B)
    A = (1 - torch.sigmoid(X)) * X + torch.sigmoid(X) * X
    B = A @ P["W1"] + P["b2"]
    scores = (A @ P["W5"] @ _t(A @ P["W6"]) / 2).masked_fill(torch.ones(2, 2).triu(1).bool(), float("-inf"))
    return torch.softmax(scores, -1) @ ((2 * B) @ B)


#: id -> (rows of X, columns of X, parameter shapes, Ŷ in symback (g, X, P), Ŷ in torch (X, P))
CASES = {
    # an element-wise function as the right factor of a product (square X W1: wrong numbers)
    "W9 tanh(X W1)": (T, D, {"W1": (D, T), "W9": (2, T)},
                      lambda g, X, P: P["W9"] @ sb.tanh(X @ P["W1"]),
                      lambda X, P: P["W9"] @ torch.tanh(X @ P["W1"])),
    "W9 tanh(X W1) wide": (T, D, {"W1": (D, 4), "W9": (2, T)},
                           lambda g, X, P: P["W9"] @ sb.tanh(X @ P["W1"]),
                           lambda X, P: P["W9"] @ torch.tanh(X @ P["W1"])),
    "W9 relu(X W1)": (T, D, {"W1": (D, T), "W9": (2, T)},
                      lambda g, X, P: P["W9"] @ sb.relu(X @ P["W1"]),
                      lambda X, P: P["W9"] @ _relu(X @ P["W1"])),
    "W9 leaky_relu(X W1)": (T, D, {"W1": (D, T), "W9": (2, T)},
                            lambda g, X, P: P["W9"] @ sb.leaky_relu(X @ P["W1"]),
                            lambda X, P: P["W9"] @ _leaky(X @ P["W1"])),
    "P tanh(X W1), P a softmax node": (T, D, {"W1": (D, T)},
                                       lambda g, X, P: g.node("P", sb.softmax(X @ X.T)) @ sb.tanh(X @ P["W1"]),
                                       lambda X, P: torch.softmax(X @ _t(X), -1) @ torch.tanh(X @ P["W1"])),
    "X.T tanh(X W1)": (T, D, {"W1": (D, 4)},
                       lambda g, X, P: X.T @ sb.tanh(X @ P["W1"]),
                       lambda X, P: _t(X) @ torch.tanh(X @ P["W1"])),
    "tanh(X W1) tanh(X W1).T": (T, D, {"W1": (D, 4)},
                                lambda g, X, P: sb.tanh(X @ P["W1"]) @ sb.tanh(X @ P["W1"]).T,
                                lambda X, P: torch.tanh(X @ P["W1"]) @ _t(torch.tanh(X @ P["W1"]))),
    "tanh(W9 tanh(X W1))": (T, D, {"W1": (D, 4), "W9": (2, T)},
                            lambda g, X, P: sb.tanh(P["W9"] @ sb.tanh(X @ P["W1"])),
                            lambda X, P: torch.tanh(P["W9"] @ torch.tanh(X @ P["W1"]))),
    "W9 (tanh(X W1) + X W1)": (T, D, {"W1": (D, 4), "W9": (2, T)},
                               lambda g, X, P: P["W9"] @ (sb.tanh(X @ P["W1"]) + X @ P["W1"]),
                               lambda X, P: P["W9"] @ (torch.tanh(X @ P["W1"]) + X @ P["W1"])),
    # a square intermediate times itself: SymPy's B**2
    "B B": (2, 2, {"W1": (2, 2), "b2": (1, 2)},
            lambda g, X, P: (X @ P["W1"] + sb.ones(2, 1) @ P["b2"]) @ (X @ P["W1"] + sb.ones(2, 1) @ P["b2"]),
            lambda X, P: (X @ P["W1"] + P["b2"]) @ (X @ P["W1"] + P["b2"])),
    "(2B) B": (2, 2, {"W1": (2, 2), "b2": (1, 2)},
               lambda g, X, P: (2 * (X @ P["W1"] + sb.ones(2, 1) @ P["b2"])) @ (X @ P["W1"] + sb.ones(2, 1) @ P["b2"]),
               lambda X, P: (2 * (X @ P["W1"] + P["b2"])) @ (X @ P["W1"] + P["b2"])),
    "tanh(X W1) tanh(X W1)": (2, 2, {"W1": (2, 2)},
                              lambda g, X, P: sb.tanh(X @ P["W1"]) @ sb.tanh(X @ P["W1"]),
                              lambda X, P: torch.tanh(X @ P["W1"]) @ torch.tanh(X @ P["W1"])),
    "softmax(X W1 X.T X.T) X": (2, 2, {"W1": (2, 2)},
                                lambda g, X, P: g.node("S", sb.softmax(X @ P["W1"] @ X.T @ X.T)) @ X,
                                lambda X, P: torch.softmax(X @ P["W1"] @ _t(X) @ _t(X), -1) @ X),
    # all-ones matrices wider than one column inside a product
    "X.T 1(T,T) W": (4, D, {"W": (4, 3)},
                     lambda g, X, P: X.T @ sb.ones(4, 4) @ P["W"],
                     lambda X, P: _t(X) @ ones(4, 4) @ P["W"]),
    "X 1(d,d) W": (4, D, {"W": (D, 3)},
                   lambda g, X, P: X @ sb.ones(D, D) @ P["W"],
                   lambda X, P: X @ ones(D, D) @ P["W"]),
    "1(T,T) X W": (4, D, {"W": (D, 3)},
                   lambda g, X, P: sb.ones(4, 4) @ X @ P["W"],
                   lambda X, P: ones(4, 4) @ X @ P["W"]),
    "1(T,T) tanh(X W)": (4, D, {"W": (D, 3)},
                         lambda g, X, P: sb.ones(4, 4) @ sb.tanh(X @ P["W"]),
                         lambda X, P: ones(4, 4) @ torch.tanh(X @ P["W"])),
    "X W 1(3,5)": (4, D, {"W": (D, 3)},
                   lambda g, X, P: X @ P["W"] @ sb.ones(3, 5),
                   lambda X, P: X @ P["W"] @ ones(3, 5)),
    "W 1(d,T) X": (4, D, {"W": (D, D)},
                   lambda g, X, P: P["W"] @ sb.ones(D, 4) @ X,
                   lambda X, P: P["W"] @ ones(D, 4) @ X),
    "W.T Z, Z = 1(T,T) X a node": (4, D, {"W": (4, 3)},
                                   lambda g, X, P: P["W"].T @ g.node("Z", sb.ones(4, 4) @ X),
                                   lambda X, P: _t(P["W"]) @ (ones(4, 4) @ X)),
    "X 1(d,1) W": (4, D, {"W": (1, 3)},
                   lambda g, X, P: X @ sb.ones(D, 1) @ P["W"],
                   lambda X, P: X @ ones(D, 1) @ P["W"]),
    "gate, (2B) B, causal attention": (2, 2, {"W1": (2, 2), "W5": (2, 2), "W6": (2, 2), "b2": (1, 2)},
                                       lambda g, X, P: _gated(g, X, P, sb), lambda X, P: _gated(None, X, P, torch)),
    # the same with sb.BATCH rows (X is n × 3)
    "batch: X 1(d,d) W": (sb.BATCH, 3, {"W": (3, 2)},
                          lambda g, X, P: X @ sb.ones(3, 3) @ P["W"],
                          lambda X, P: X @ ones(3, 3) @ P["W"]),
    "batch: tanh(X W) 1(2,4) + X W2": (sb.BATCH, 3, {"W": (3, 2), "W2": (3, 4)},
                                       lambda g, X, P: sb.tanh(X @ P["W"]) @ sb.ones(2, 4) + X @ P["W2"],
                                       lambda X, P: torch.tanh(X @ P["W"]) @ ones(2, 4) + X @ P["W2"]),
    "batch: tanh(tanh(Z) U) U + Z, Z = σ(X U) a node": (
        sb.BATCH, 3, {"U": (3, 3)},
        lambda g, X, P: sb.tanh(sb.tanh(g.node("Z", sb.sigmoid(X @ P["U"]))) @ P["U"]) @ P["U"] + g.symbol("Z"),
        lambda X, P: torch.tanh(torch.tanh(torch.sigmoid(X @ P["U"])) @ P["U"]) @ P["U"] + torch.sigmoid(X @ P["U"])),
    "batch: X tanh(W9 W1)": (sb.BATCH, 3, {"W1": (3, 4), "W9": (3, 3)},
                             lambda g, X, P: X @ sb.tanh(P["W9"] @ P["W1"]),
                             lambda X, P: X @ torch.tanh(P["W9"] @ P["W1"])),
}

_DERIVED: dict = {}


def derive_case(rows, cols, shapes, build):
    """The derivation of Ŷ = build(g, X, P) (X rows × cols, P the parameters of `shapes`) under
    the mean squared error."""
    g = sb.Graph()
    X = g.inputs("X", shape=(rows, cols))
    names = list(shapes)
    made = g.params(" ".join(names), shape=[shapes[k] for k in names])
    P = dict(zip(names, made if isinstance(made, (list, tuple)) else [made]))
    Yhat = g.node("Yhat", build(g, X, P))
    g.loss(sb.mse(Yhat, g.targets("Y", shape=Yhat.shape)))
    return sb.derive(g)


def _derived(case):
    """A case's derivation, derived once."""
    if case not in _DERIVED:
        rows, cols, shapes, build, _ = CASES[case]
        _DERIVED[case] = derive_case(rows, cols, shapes, build)
    return _DERIVED[case]


def _close(got, want, what, rel=1e-9):
    got = np.asarray(got.detach() if isinstance(got, torch.Tensor) else got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    scale = max(1.0, float(np.abs(want).max()))
    assert float(np.abs(got - want).max()) <= rel * scale, (what, float(np.abs(got - want).max()))


def _autograd(ref, X, P, weight):
    """(Ŷ, Σ weight ⊙ Ŷ's ∂/∂X, its ∂/∂p) by torch autograd of the network written by hand."""
    x = torch.tensor(X, requires_grad=True)
    p = {k: torch.tensor(v, requires_grad=True) for k, v in P.items()}
    out = ref(x, p)
    out = out.expand(x.shape[:1] + out.shape[-2:]) if out.dim() == 2 and x.dim() == 3 else out
    (out * weight(out)).sum().backward()
    return out.detach().numpy(), x.grad.numpy(), {k: v.grad.numpy() for k, v in p.items()}


# every case on NumPy and torch; on JAX (its traces the slowest to build, printed by the same
# lowering) every third case in a normal run, every case in slow mode
@pytest.mark.parametrize("case, backend", [
    (case, backend) if backend != "jax" or i % 3 == 0 else slow(case, backend)
    for i, case in enumerate(CASES) for backend in BACKENDS])
def test_loss_gradient_prediction_and_vjp_match_autograd(case, backend):
    torch.set_default_dtype(torch.float64)
    rows, cols, shapes, _, ref = CASES[case]
    d = _derived(case)
    rng = np.random.default_rng(sorted(CASES).index(case))
    n = 3
    P = {k: rng.standard_normal(s) for k, s in shapes.items()}
    X = rng.standard_normal((5, cols) if rows == sb.BATCH else (n, rows, cols))
    Yhat_want = _autograd(ref, X, P, lambda o: 0 * o)[0]
    Y, G = rng.standard_normal(Yhat_want.shape), rng.standard_normal(Yhat_want.shape)
    # L = (1/n) Σ ‖Ŷ − Y‖²: its gradient is that of ⟨2(Ŷ − Y)/n, Ŷ⟩ with the weight held fixed
    samples = X.shape[0]
    _, _, grads = _autograd(ref, X, P, lambda o: (2 * (o - torch.tensor(Y)) / samples).detach())
    _, dX_want, dP_want = _autograd(ref, X, P, lambda o: torch.tensor(G))
    m = sb.compile(d, backend=backend)
    _close(m.predict(X, P), Yhat_want, "prediction")
    _close(m.loss(X, Y, P), ((Yhat_want - Y) ** 2).sum() / samples, "loss")
    check_grads_and_vjp(m, m.grad(X, Y, P), grads, X, P, G, dX_want, dP_want)


def check_grads_and_vjp(m, got, grads, X, P, G, dX_want, dP_want):
    """The gradients `got` equal `grads`, and m's VJP for G equals (dX_want, dP_want)."""
    for k in P:
        _close(got[k], grads[k], f"dL/d{k}")
    dX, dP = m.vjp(X, P, G)
    _close(dX, dX_want, "vjp dX")
    for k in P:
        _close(dP[k], dP_want[k], f"vjp d{k}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_prediction_of_one_repeated_row_has_its_loss_and_gradient(backend):
    """Ŷ = 1 b (every sample predicted the same row): δ_Ŷ = Ŷ − Y with Ŷ one broadcast row was
    printed in place as −Y − Ŷ (NumPy: the loss and ∂L/∂b wrong)."""
    torch.set_default_dtype(torch.float64)
    g = sb.Graph()
    g.inputs("X", shape=(sb.BATCH, 2))
    b = g.params("b", shape=(1, 3))
    Yhat = g.node("Yhat", sb.ones(sb.BATCH, 1) @ b)
    g.loss(sb.half_mse(Yhat, g.targets("Y", shape=(sb.BATCH, 3))))
    rng = np.random.default_rng(0)
    P, X, Y = {"b": rng.standard_normal((1, 3))}, rng.standard_normal((5, 2)), rng.standard_normal((5, 3))
    bt = torch.tensor(P["b"], requires_grad=True)
    L = ((bt.expand(5, 3) - torch.tensor(Y)) ** 2).sum() / 2 / 5
    L.backward()
    m = sb.compile(sb.derive(g), backend=backend)
    _close(m.predict(X, P), np.broadcast_to(P["b"], (5, 3)), "prediction")
    _close(m.loss(X, Y, P), L.item(), "loss")
    _close(m.grad(X, Y, P)["b"], bt.grad.numpy(), "dL/db")
