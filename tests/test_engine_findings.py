"""Engine and code-generation faults, each network also written by hand in PyTorch here: torch
autograd of that (float64) is the oracle for the loss, ∂L/∂p, ``m.vjp`` and one ``m.step`` on
NumPy, JAX and torch.

1. A broadcast Hadamard factor inside a matrix product, X W₁ (1b ⊙ 1b) W₄: SymPy's matrix
   calculus gave δ_b wrong (max error 69) and refused (X W₁ ⊙ (1b)∘²) W₄ (a ValueError); the
   product is now held as a part, its VJP the product rule.  The transpose of such a broadcast,
   (1b ⊙ 1b)ᵀ in δ_W₁, was then declared the full h × h it stands for, not the column it is.
2. ``m.vjp`` of a scalar graph with an input the prediction does not read: δ of that input is
   the number 0, which JAX's and torch's ``broadcast_to`` refused.
3. torch ``m.step`` where a parameter's gradient is a product that reads the parameter itself
   (X W W, X bᵀ b): ``W.addmm_(A, W)`` read W while writing it (and a second product read the
   updated W), the step wrong by up to 0.25.
4. ``m.step`` on every backend where a gradient is a product with another parameter (δ_c of
   X W c b V is (…) bᵀ): the product moved to just before c's update, past b's, and read the
   updated b (the step wrong by 0.044).
5. A Hadamard product of three factors or more, or with a power, one of them compound and
   depending on the parameter (X W ⊙ X W ⊙ X U, 1b ⊙ X W ⊙ X W): SymPy raised a ValueError
   ("index is larger than expression shape"); the product rule takes them.
6. A batch graph's node of column sums, S = 1ᵀ X W (a 1-D row in compiled code), transposed or
   multiplied on (1 S V, X W Sᵀ b, tanh(1 S) V): Sᵀ was printed ``S.T`` (a 1-D row still) or
   taken as a transposed operand, and the products failed with shape errors on every backend;
   it is the column ``S[:, None]`` now.
A broadcast row node used as a matrix, σ(1 b) V, is checked beside them.
"""
from __future__ import annotations

import warnings

import numpy as np
import sympy as sp
import pytest

import symback as sb

torch = pytest.importorskip("torch")
pytest.importorskip("jax")

BACKENDS = ("numpy", "jax", "torch")
RTOL = 1e-8
T, H = 4, 3
F64 = torch.float64


def _graph(rows, shapes, nodes):
    """A graph with input X (rows × 2), parameters `shapes`, nodes [(name, build(env))]; the last
    is Ŷ, under the mse loss."""
    g = sb.Graph()
    env = {"X": g.inputs("X", shape=(rows, 2)), "R": rows}
    params = g.params(" ".join(shapes), shape=list(shapes.values()))
    env.update(zip(shapes, params if isinstance(params, (list, tuple)) else [params]))
    for name, build in nodes:
        env[name] = g.node(name, build(env))
    g.loss(sb.mse(env[nodes[-1][0]], g.targets("Y", shape=tuple(env[nodes[-1][0]].shape))))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sb.derive(g)


def _close(got, want):
    got = np.asarray(got, dtype=np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    scale = max(1.0, float(np.abs(want).max(initial=0.0)))
    assert float(np.abs(got - want).max(initial=0.0)) <= RTOL * scale, float(np.abs(got - want).max())


def _check(d, shapes, oracle, batch=False, n=3, seed=0):
    """The loss, ∂L/∂p, m.vjp and one m.step of `d` on every backend against torch autograd of
    `oracle(X, params)` (one sample's, or the batch's prediction)."""
    rows = d.graph.shape("X")[0]
    rng = np.random.default_rng(seed)
    params = {k: rng.normal(size=s) for k, s in shapes.items()}
    x = rng.normal(size=(n, 2) if batch else (n, rows, 2))
    t = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    xt = torch.tensor(x, requires_grad=True)
    out = oracle(xt, t)
    out = out.expand((n,) + tuple(out.shape[-2 + batch:]))      # a prediction that reads no X
    y, g = rng.normal(size=tuple(out.shape)), rng.normal(size=tuple(out.shape))
    loss = ((out - torch.tensor(y)) ** 2).reshape(n, -1).sum(1).mean()
    zeros = lambda a, like: np.zeros(np.shape(like)) if a is None else a.numpy()    # noqa: E731
    want = [zeros(a, params[k]) for k, a in
            zip(t, torch.autograd.grad(loss, list(t.values()), retain_graph=True, allow_unused=True))]
    vjp = torch.autograd.grad((out * torch.tensor(g)).sum(), [xt, *t.values()], allow_unused=True)
    want_x, want_v = zeros(vjp[0], x), [zeros(a, params[k]) for k, a in zip(t, vjp[1:])]
    for backend in BACKENDS:
        m = sb.compile(d, backend=backend, dtype="float64")
        value, grads = m.value_and_grad(x, y, params)
        assert abs(value - loss.item()) <= RTOL * max(1.0, abs(loss.item())), backend
        for k, w in zip(params, want):
            _close(grads[k], w)
        dx, dp = m.vjp(x, params, g)
        _close(dx, want_x)
        for k, w in zip(params, want_v):
            _close(dp[k], w)
        moved = {k: (torch.tensor(v) if backend == "torch" else v.copy()) for k, v in params.items()}
        assert abs(m.step(x, y, moved, lr=0.1) - loss.item()) <= RTOL * max(1.0, abs(loss.item()))
        for k, w in zip(params, want):
            _close(moved[k], params[k] - 0.1 * w)


def _ones(r, c):
    return torch.ones(r, c, dtype=F64)


# ---------------------------------------------------------------- 1. a broadcast Hadamard factor in a product
BROADCAST_PRODUCTS = {
    "L (1b ⊙ 1b) R": (lambda e: e["X"] @ e["W1"] @ sb.hadamard(sb.ones(H, 1) @ e["b"], sb.ones(H, 1) @ e["b"]) @ e["W4"],
                      lambda x, p: x @ p["W1"] @ (_ones(H, 1) @ p["b"]) ** 2 @ p["W4"]),
    "(X W ⊙ 1b ⊙ 1b) R": (lambda e: sb.hadamard(e["X"] @ e["W1"], sb.hadamard(sb.ones(e["R"], 1) @ e["b"],
                                                                               sb.ones(e["R"], 1) @ e["b"])) @ e["W4"],
                          lambda x, p: (x @ p["W1"] * p["b"] * p["b"]) @ p["W4"]),
    "2 L (1b ⊙ X W) R": (lambda e: 2 * e["X"].T @ sb.hadamard(sb.ones(e["R"], 1) @ e["b"], e["X"] @ e["W1"]) @ e["W4"],
                         lambda x, p: 2 * x.mT @ (p["b"] * (x @ p["W1"])) @ p["W4"]),
    "L (1b ⊙ 1b)ᵀ R": (lambda e: e["X"] @ e["W1"] @ sb.hadamard(sb.ones(H, 1) @ e["b"], sb.ones(H, 1) @ e["b"]).T @ e["W4"],
                       lambda x, p: x @ p["W1"] @ ((_ones(H, 1) @ p["b"]) ** 2).mT @ p["W4"]),
}
SHAPES1 = {"W1": (2, H), "b": (1, H), "W4": (H, 3)}


@pytest.mark.parametrize("case", list(BROADCAST_PRODUCTS))
def test_broadcast_hadamard_factor_inside_a_product_equals_torch(case):
    build, oracle = BROADCAST_PRODUCTS[case]
    _check(_graph(T, SHAPES1, [("Yhat", build)]), SHAPES1, oracle)


# ---------------------------------------------------------------- 2. a scalar graph's vjp, an input unused
def test_scalar_graph_vjp_of_an_unused_input_is_zero():
    g = sb.Graph()
    x1, x2, _ = g.inputs("x1 x2 x3")
    w1, w2, b = g.params("w1 w2 b")
    g.node("yhat", b + g.node("a_1", w1 * x1) * g.node("a_2", w2 * x2))
    g.loss((g.symbol("yhat") - g.targets("y")) ** 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = sb.derive(g)
    rng = np.random.default_rng(1)
    X, G = rng.normal(size=(5, 3)), rng.normal(size=(5, 1))
    p = {k: np.array(rng.normal()) for k in ("w1", "w2", "b")}
    t = {k: torch.tensor(float(v), dtype=F64, requires_grad=True) for k, v in p.items()}
    xt = torch.tensor(X, requires_grad=True)
    out = t["b"] + (t["w1"] * xt[:, 0]) * (t["w2"] * xt[:, 1])
    want = torch.autograd.grad((out * torch.tensor(G[:, 0])).sum(), [xt, *t.values()])
    for backend in BACKENDS:
        dx, dp = sb.compile(d, backend=backend, dtype="float64").vjp(X, p, G)
        _close(dx, want[0].numpy())
        assert not np.asarray(dx)[:, 2].any()
        for k, w in zip(p, want[1:]):
            _close(np.reshape(np.asarray(dp[k]), ()), w.numpy())


# ---------------------------------------------------------------- 3. a gradient that reads its own parameter
TIED = {
    "X W W": (lambda e: e["X"] @ e["W"] @ e["W"], lambda x, p: x @ p["W"] @ p["W"]),
    "X W Wᵀ": (lambda e: e["X"] @ e["W"] @ e["W"].T, lambda x, p: x @ p["W"] @ p["W"].mT),
    "X W²": (lambda e: e["X"] @ e["W"] ** 2, lambda x, p: x @ p["W"] @ p["W"]),
    "X bᵀ b": (lambda e: e["X"] @ e["b"].T @ e["b"], lambda x, p: x @ p["b"].mT @ p["b"]),
    "(X + 1b) bᵀ b": (lambda e: (e["X"] + sb.ones(e["R"], 1) @ e["b"]) @ e["b"].T @ e["b"],
                      lambda x, p: (x + p["b"]) @ p["b"].mT @ p["b"]),
}
SHAPES3 = {"W": (2, 2), "b": (1, 2)}


@pytest.mark.parametrize("rows", [1, T, sb.BATCH], ids=["one-row", "sample", "batch"])
@pytest.mark.parametrize("case", list(TIED))
def test_a_gradient_reading_its_own_parameter_steps_like_torch(case, rows):
    build, oracle = TIED[case]
    _check(_graph(rows, SHAPES3, [("Yhat", build)]), SHAPES3, oracle, batch=rows is sb.BATCH, n=5)


# ---------------------------------------------------------------- 4. a gradient that reads another parameter
CHAINS = {
    "X W c b V": (lambda e: e["X"] @ e["W"] @ e["c"] @ e["b"] @ e["V"], lambda x, p: x @ p["W"] @ p["c"] @ p["b"] @ p["V"]),
    "X W (c b)ᵀ V": (lambda e: e["X"] @ e["W"] @ (e["c"] @ e["b"]).T @ e["V"],
                      lambda x, p: x @ p["W"] @ (p["c"] @ p["b"]).mT @ p["V"]),
}
SHAPES5 = {"W": (2, 3), "b": (1, 3), "V": (3, 2), "c": (3, 1)}


@pytest.mark.parametrize("rows", [T, sb.BATCH], ids=["sample", "batch"])
@pytest.mark.parametrize("case", list(CHAINS))
def test_a_gradient_reading_another_parameter_steps_like_torch(case, rows):
    build, oracle = CHAINS[case]
    _check(_graph(rows, SHAPES5, [("Yhat", build)]), SHAPES5, oracle, batch=rows is sb.BATCH, n=5)


# ---------------------------------------------------------------- 5. Hadamard products of three factors
THREE = {
    "X W ⊙ X W ⊙ X U": (lambda e: sb.hadamard(e["X"] @ e["W"], e["X"] @ e["W"], e["X"] @ e["U"]),
                        lambda x, p: (x @ p["W"]) ** 2 * (x @ p["U"])),
    "1b ⊙ X W ⊙ X W": (lambda e: sb.hadamard(sb.ones(e["R"], 1) @ e["b"], e["X"] @ e["W"], e["X"] @ e["W"]),
                       lambda x, p: p["b"] * (x @ p["W"]) ** 2),
    "(1b ⊙ X W ⊙ X W) V": (lambda e: sb.hadamard(sb.ones(e["R"], 1) @ e["b"], e["X"] @ e["W"], e["X"] @ e["W"]) @ e["V"],
                           lambda x, p: (p["b"] * (x @ p["W"]) ** 2) @ p["V"]),
}
SHAPES6 = {"W": (2, 3), "U": (2, 3), "b": (1, 3), "V": (3, 2)}


@pytest.mark.parametrize("case", list(THREE))
def test_hadamard_products_of_three_factors_equal_torch(case):
    build, oracle = THREE[case]
    _check(_graph(T, SHAPES6, [("Yhat", build)]), SHAPES6, oracle)


# ---------------------------------------------------------------- 6. a node of a batch's column sums
SUMS = {
    "1 S V": (lambda e: sb.ones(e["R"], 1) @ e["S"] @ e["V"], lambda x, p, s: _ones(x.shape[-2], 1) @ s @ p["V"]),
    "X W Sᵀ b": (lambda e: e["X"] @ e["W"] @ e["S"].T @ e["b"], lambda x, p, s: x @ p["W"] @ s.mT @ p["b"]),
    "tanh(1 S) V": (lambda e: sb.tanh(sb.ones(e["R"], 1) @ e["S"]) @ e["V"],
                    lambda x, p, s: torch.tanh(_ones(x.shape[-2], 1) @ s) @ p["V"]),
    "(1 S ⊙ X W) V": (lambda e: sb.hadamard(sb.ones(e["R"], 1) @ e["S"], e["X"] @ e["W"]) @ e["V"],
                      lambda x, p, s: ((_ones(x.shape[-2], 1) @ s) * (x @ p["W"])) @ p["V"]),
}
SHAPES7 = {"W": (2, 3), "b": (1, 3), "V": (3, 2)}


@pytest.mark.parametrize("rows", [T, sb.BATCH], ids=["sample", "batch"])
@pytest.mark.parametrize("case", list(SUMS))
def test_a_node_of_column_sums_equals_torch(case, rows):
    node = ("S", lambda e: sb.ones(1, e["R"]) @ e["X"] @ e["W"])
    d = _graph(rows, SHAPES7, [node, ("Yhat", SUMS[case][0])])
    _check(d, SHAPES7, lambda x, p: SUMS[case][1](x, p, _ones(1, x.shape[-2]) @ x @ p["W"]),
           batch=rows is sb.BATCH, n=5)


# ---------------------------------------------------------------- a broadcast-row node used as a matrix
ROW_NODES = {
    "H V": lambda e: e["H"] @ e["V"],
    "X W + H V": lambda e: e["X"] @ e["W"] + e["H"] @ e["V"],
    "(X Vᵀ + H) V": lambda e: (e["X"] @ e["V"].T + e["H"]) @ e["V"],
    "tanh(H V) ⊙ X W": lambda e: sb.hadamard(sb.tanh(e["H"] @ e["V"]), e["X"] @ e["W"]),
}
TORCH_ROW_NODES = {
    "H V": lambda x, p, h: h @ p["V"],
    "X W + H V": lambda x, p, h: x @ p["W"] + h @ p["V"],
    "(X Vᵀ + H) V": lambda x, p, h: (x @ p["V"].mT + h) @ p["V"],
    "tanh(H V) ⊙ X W": lambda x, p, h: torch.tanh(h @ p["V"]) * (x @ p["W"]),
}
SHAPES4 = {"W": (2, 2), "b": (1, H), "V": (H, 2)}


@pytest.mark.parametrize("rows", [1, T, sb.BATCH], ids=["one-row", "sample", "batch"])
@pytest.mark.parametrize("case", list(ROW_NODES))
def test_a_broadcast_row_node_used_as_a_matrix_equals_torch(case, rows):
    node = ("H", lambda e: sb.sigmoid(sb.ones(e["R"], 1) @ e["b"]))
    d = _graph(rows, SHAPES4, [node, ("Yhat", ROW_NODES[case])])
    _check(d, SHAPES4, lambda x, p: TORCH_ROW_NODES[case](x, p, torch.sigmoid(_ones(x.shape[-2], 1) @ p["b"])),
           batch=rows is sb.BATCH, n=5)


@pytest.mark.parametrize("backend", ["numpy", "jax", "torch"])
def test_vjp_of_a_prediction_that_reads_no_parameter_equals_torch(backend):
    """Fuzz round 3: Ŷ = tanh(X) with a penalty ½‖W‖² trains (predict, value_and_grad, step),
    but its vjp was refused, 'the loss depends on no parameters': the VJP's cost ⟨G, Ŷ⟩ reads X,
    which it differentiates.  δ_X is torch's; W's VJP gradient is 0 (the penalty is no part of Ŷ)."""
    g = sb.Graph()
    X = g.inputs("X", shape=(sb.BATCH, 2))
    W = g.params("W", shape=(2, 2))
    g.loss(sb.mse(g.node("Yhat", sb.tanh(X)), g.targets("Y", shape=(sb.BATCH, 2))),
           penalty=sp.Rational(1, 2) * sb.sumsq(W))
    m = sb.compile(sb.derive(g), backend=backend, dtype="float64")
    rng = np.random.default_rng(0)
    x, G = rng.normal(size=(3, 2)), rng.normal(size=(3, 2))
    dX, grads = m.vjp(x, {"W": np.ones((2, 2))}, G)
    xt = torch.tensor(x, requires_grad=True)
    (torch.tanh(xt) * torch.tensor(G)).sum().backward()
    np.testing.assert_allclose(np.asarray(dX), xt.grad.numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(np.asarray(grads["W"]), np.zeros((2, 2)))
    with pytest.raises(sb.SymbackError, match="depends on no parameters"):
        h = sb.Graph()                  # training such a loss is still refused: nothing to train
        Xh = h.inputs("X", shape=(sb.BATCH, 2))
        h.params("W", shape=(2, 2))
        h.loss(sb.mse(h.node("Yhat", sb.tanh(Xh)), h.targets("Y", shape=(sb.BATCH, 2))))
        sb.derive(h)


# ---------------------------------------------------------------- 1×1 ones beside a product of symbolic width
def test_one_by_one_ones_minus_a_product_equals_torch():
    """`ones(1, 1) - Nᵀ N`: SymPy writes the 1×1 ones as Identity(1), whose width stayed 1 in the
    engine's symbolic-width calculus beside Nᵀ N's symbol ("mismatching shapes in addition")."""
    d = _graph(T, {"w": (2, 1)}, [("N", lambda e: e["X"] @ e["w"]),
                                  ("Yhat", lambda e: sb.ones(1, 1) - e["N"].T @ e["N"])])
    _check(d, {"w": (2, 1)}, lambda x, p: 1 - (x @ p["w"]).mT @ (x @ p["w"]))
