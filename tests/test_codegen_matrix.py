"""Compiled matrix graphs against oracles independent of symback.

Each network is written twice: as a symback matrix Graph, and as a forward
pass in autograd.numpy here.  The compiled loss must equal the forward
pass, and the compiled gradients HIPS autograd's and central finite
differences of that forward pass.
"""
from __future__ import annotations

import autograd.numpy as anp
import numpy as np
import pytest
import sympy as sp
from autograd import grad as ag_grad
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import symback as sb
from symback.errors import SymbackError
from test_compile import ACT, LOSS     # each function's definition, written again for autograd

RTOL = 1e-7
m = sb.BATCH


HIDDEN = ["identity", "sigmoid", "tanh", "relu", "leaky_relu", "softplus", "swish"]
HEADS = [("identity", "mse"), ("identity", "half_mse"), ("sigmoid", "binary_cross_entropy"),
         ("softmax", "cross_entropy"), ("identity", "logcosh"), ("identity", "huber"), ("sigmoid", "mse")]


def matrix_mlp(sizes, act, out, loss, l2=0, reduction="mean"):
    """Z_l = A_{l-1} W_l + 1 b_l, A_l = f(Z_l), as a symback matrix graph (what sb.mlp will build)."""
    g = sb.Graph()
    A = g.inputs("X", shape=(m, sizes[0]))
    Y = g.targets("Y", shape=(m, sizes[-1]))
    Ws = []
    for l, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]), 1):
        W, bias = g.params(f"W{l} b{l}", shape=[(a, b), (1, b)])
        Ws.append(W)
        f = sb.get_activation(out if l == len(sizes) - 1 else act)
        A = g.node("Yhat" if l == len(sizes) - 1 else f"A{l}", f(A @ W + sb.ones(m) @ bias))
    penalty = sp.Rational(l2) / 2 * sum(sb.sumsq(W) for W in Ws) if l2 else None
    g.loss(sb.get_loss(loss)(A, Y), reduction=reduction, penalty=penalty)
    return g


def head(Z, Y, out, loss):
    """Σ over rows and outputs of the loss, from the logits Z."""
    if loss == "cross_entropy":
        return -anp.sum(Y * (Z - anp.log(anp.sum(anp.exp(Z), axis=1, keepdims=True))))
    return anp.sum(LOSS[loss](ACT[out](Z), Y))


def mlp_forward(sizes, act, out, loss, l2=0.0):
    def f(p, X, Y):
        A, L = X, len(sizes) - 1
        for l in range(1, L + 1):
            Z = anp.dot(A, p[f"W{l}"]) + p[f"b{l}"]
            A = ACT[act](Z) if l < L else Z
        pen = l2 / 2 * sum(anp.sum(p[f"W{l}"] ** 2) for l in range(1, L + 1))
        return head(A, Y, out, loss) / X.shape[0] + pen
    return f


def data(d, k, loss, n=6, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    if loss == "cross_entropy":
        Y = np.eye(k)[rng.integers(0, k, n)]
    elif loss == "binary_cross_entropy":
        Y = rng.uniform(0.05, 0.95, size=(n, k))
    else:
        Y = rng.normal(scale=1.5, size=(n, k))
    return X, Y


def central_fd(f, p, h=1e-6):
    out = {}
    for k, v in p.items():
        g = np.zeros_like(v)
        for i in np.ndindex(v.shape):
            up, dn = dict(p), dict(p)
            up[k], dn[k] = v.copy(), v.copy()
            up[k][i] += h
            dn[k][i] -= h
            g[i] = (f(up) - f(dn)) / (2 * h)
        out[k] = g
    return out


def rel_err(a: dict, b: dict):
    va = np.concatenate([np.ravel(a[k]) for k in sorted(b)])
    vb = np.concatenate([np.ravel(b[k]) for k in sorted(b)])
    return np.linalg.norm(va - vb) / max(np.linalg.norm(vb), 1e-12)


def check(g, f, X, Y, seed=0):
    """Compiled value and gradients of graph g against autograd and FD of the forward pass f."""
    model = sb.compile(sb.derive(g))
    params = model.init(seed=seed)
    rng = np.random.default_rng(seed + 7)
    for k in params:       # non-zero biases, so that b matters
        params[k] = params[k] + rng.normal(scale=0.3, size=params[k].shape)
    value, grads = model.value_and_grad(X, Y, params)
    assert value == pytest.approx(float(f(params, X, Y)), rel=1e-10)
    assert model.loss(X, Y, params) == pytest.approx(value, rel=1e-14)
    assert rel_err(grads, ag_grad(f)(params, X, Y)) < RTOL
    assert rel_err(grads, central_fd(lambda p: f(p, X, Y), params)) < RTOL
    return model, params


# ------------------------------------------------------------------ every activation × head
@pytest.mark.parametrize("out,loss", HEADS)
@pytest.mark.parametrize("act", HIDDEN)
def test_mlp_gradients_match_autograd_and_fd(act, out, loss):
    sizes = [3, 4, 5, 3]
    X, Y = data(3, 3, loss)
    check(matrix_mlp(sizes, act, out, loss), mlp_forward(sizes, act, out, loss), X, Y)


@pytest.mark.parametrize("act,out,loss", [("tanh", "softmax", "cross_entropy"),
                                          ("relu", "sigmoid", "binary_cross_entropy")])
def test_l2_penalty_and_sum_reduction(act, out, loss):
    sizes = [2, 5, 3]
    X, Y = data(2, 3, loss, seed=2)
    check(matrix_mlp(sizes, act, out, loss, l2=sp.Rational(1, 10)),
          mlp_forward(sizes, act, out, loss, l2=0.1), X, Y)
    f = mlp_forward(sizes, act, out, loss)
    check(matrix_mlp(sizes, act, out, loss, reduction="sum"),
          lambda p, X, Y: f(p, X, Y) * X.shape[0], X, Y)


def test_skip_connection():
    g = sb.Graph()
    X = g.inputs("X", shape=(m, 3))
    Y = g.targets("Y", shape=(m, 2))
    W1, b1, W2, b2, W3, b3 = g.params("W1 b1 W2 b2 W3 b3",
                                      shape=[(3, 4), (1, 4), (4, 4), (1, 4), (4, 2), (1, 2)])
    A1 = g.node("A1", sb.tanh(X @ W1 + sb.ones(m) @ b1))
    H = g.node("H", A1 + sb.relu(A1 @ W2 + sb.ones(m) @ b2))
    Yhat = g.node("Yhat", sb.softmax(H @ W3 + sb.ones(m) @ b3))
    g.loss(sb.cross_entropy(Yhat, Y), penalty=sp.Rational(1, 200) * (sb.sumsq(W1) + sb.sumsq(W2)))

    def f(p, X, Y):
        A = anp.tanh(anp.dot(X, p["W1"]) + p["b1"])
        H = A + ACT["relu"](anp.dot(A, p["W2"]) + p["b2"])
        pen = (anp.sum(p["W1"] ** 2) + anp.sum(p["W2"] ** 2)) / 200
        return head(anp.dot(H, p["W3"]) + p["b3"], Y, "softmax", "cross_entropy") / X.shape[0] + pen
    X, Y = data(3, 2, "cross_entropy", n=7, seed=3)
    check(g, f, X, Y)


def test_tied_weights():
    g = sb.Graph()
    X = g.inputs("X", shape=(m, 4))
    Y = g.targets("Y", shape=(m, 4))
    W1, b1, b2 = g.params("W1 b1 b2", shape=[(4, 2), (1, 2), (1, 4)])
    A1 = g.node("A1", sb.tanh(X @ W1 + sb.ones(m) @ b1))
    Yhat = g.node("Yhat", sb.identity(A1 @ W1.T + sb.ones(m) @ b2))
    g.loss(sb.mse(Yhat, Y))

    def f(p, X, Y):
        A = anp.tanh(anp.dot(X, p["W1"]) + p["b1"])
        return anp.sum((anp.dot(A, p["W1"].T) + p["b2"] - Y) ** 2) / X.shape[0]
    X, Y = data(4, 4, "mse", seed=4)
    check(g, f, X, Y)


def test_unrolled_rnn_with_column_slices():
    T, d, h = 3, 2, 3
    g = sb.Graph()
    X = g.inputs("X", shape=(m, T * d))
    Y = g.targets("Y", shape=(m, 1))
    Wx, Wh, bh, Wy, by = g.params("Wx Wh bh Wy by", shape=[(d, h), (h, h), (1, h), (h, 1), (1, 1)])
    H = g.node("H1", sb.tanh(X[:, 0:d] @ Wx + sb.ones(m) @ bh))
    for t in range(2, T + 1):
        H = g.node(f"H{t}", sb.tanh(X[:, (t - 1) * d:t * d] @ Wx + H @ Wh + sb.ones(m) @ bh))
    Yhat = g.node("Yhat", sb.identity(H @ Wy + sb.ones(m) @ by))
    g.loss(sb.mse(Yhat, Y))

    def f(p, X, Y):
        H = anp.tanh(anp.dot(X[:, 0:d], p["Wx"]) + p["bh"])
        for t in range(2, T + 1):
            H = anp.tanh(anp.dot(X[:, (t - 1) * d:t * d], p["Wx"]) + anp.dot(H, p["Wh"]) + p["bh"])
        return anp.sum((anp.dot(H, p["Wy"]) + p["by"] - Y) ** 2) / X.shape[0]
    X, Y = data(T * d, 1, "mse", seed=5)
    check(g, f, X, Y)


def test_column_slices_print_as_numpy_slices():
    from symback.lowering import Lowering
    X = sp.MatrixSymbol("X", m, 6)
    names = {X: sp.Symbol("X", real=True)}
    low = Lowering(names, {names[X]: (m, 6)}, iter(sp.numbered_symbols("t")).__next__)
    s = low.scalar(X[:, 2:4])
    st = low.stmts[-1]
    assert st.target == s and st.op == "slice" and st.shape == (m, 2)
    assert sb.codegen.NumpyPrinter().op_slice("X", *st.args[1:]) == "X[:, 2:4]"


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(widths=st.lists(st.integers(1, 5), min_size=3, max_size=4),
       act=st.sampled_from(["sigmoid", "tanh", "relu", "softplus"]),
       h=st.sampled_from(HEADS), n=st.integers(1, 7))
def test_random_widths(widths, act, h, n):
    out, loss = h
    if out == "softmax" and widths[-1] == 1:
        widths = widths[:-1] + [2]
    X, Y = data(widths[0], widths[-1], loss, n=n, seed=sum(widths))
    check(matrix_mlp(widths, act, out, loss), mlp_forward(widths, act, out, loss), X, Y)


# ------------------------------------------------------------------ the Model around it
def test_step_is_sgd_in_place_and_accepts_1d_biases():
    g = matrix_mlp([4, 6, 3], "sigmoid", "softmax", "cross_entropy")
    model = sb.compile(sb.derive(g))
    params = model.init(seed=1)
    assert params["b1"].shape == (1, 6) and np.all(params["b1"] == 0)
    params["b1"] = np.full(6, 0.1)           # an (n,) array for a (1, n) parameter
    X, Y = data(4, 3, "cross_entropy", n=9, seed=4)
    before = {k: v.copy() for k, v in params.items()}
    ids = {k: id(v) for k, v in params.items()}
    value, grads = model.value_and_grad(X, Y, params)
    assert grads["b1"].shape == (6,) and grads["b2"].shape == (1, 3)
    assert model.step(X, Y, params, lr=0.3) == pytest.approx(value, rel=1e-14)
    for k in params:
        assert id(params[k]) == ids[k] and params[k].shape == before[k].shape
        np.testing.assert_allclose(params[k], before[k] - 0.3 * grads[k], rtol=1e-13, atol=1e-15)
    assert model.predict(X, params).shape == (9, 3)
    np.testing.assert_allclose(model.predict(X, params).sum(axis=1), 1.0)


def test_float32_and_init_schemes():
    g = matrix_mlp([50, 40, 3], "relu", "softmax", "cross_entropy")
    d = sb.derive(g)
    m32, m64 = sb.compile(d, dtype="float32"), sb.compile(d)
    p = m64.init(seed=0)
    assert np.std(p["W1"]) == pytest.approx(np.sqrt(2 / 50), rel=0.1)          # He before ReLU
    assert np.max(np.abs(p["W2"])) <= np.sqrt(6 / 43)                          # Glorot before softmax
    p32 = m32.init(seed=0)
    X, Y = data(50, 3, "cross_entropy", n=5)
    g32, g64 = m32.grad(X, Y, p32), m64.grad(X, Y, {k: v.astype(np.float64) for k, v in p32.items()})
    for k in g32:
        assert g32[k].dtype == np.float32
        np.testing.assert_allclose(g32[k], g64[k], rtol=1e-3, atol=1e-5)
    m32.step(X, Y, p32, lr=0.1)
    assert all(v.dtype == np.float32 for v in p32.values())


def test_source_reads_like_hand_written_numpy():
    src = sb.compile(sb.derive(matrix_mlp([784, 128, 64, 10], "sigmoid", "softmax", "cross_entropy"))).source
    step = src[src.index("def _step("):]
    for line in ["Z1 = X @ W1" if "Z1 = X @ W1" in step else "= X @ W1", "+= b1",
                 "W1 -= X.T @ delta_", "b1 -= ones @ delta_", "W1 = params['W1']",
                 "np.subtract(1.0, A1)", ".max(axis=1, keepdims=True)", "_EXP_MAX, out="]:
        assert line in step, line
    assert "exp(-" not in step          # σ through the module's _sigmoid, which cannot overflow
    assert step.index("@ W2.T") < step.index("W2 -=")       # δ W2ᵀ before W2 changes
    relu = sb.compile(sb.derive(matrix_mlp([3, 4, 2], "relu", "identity", "mse"))).source
    assert "np.maximum(" in relu and ">= 0)" in relu


def test_extreme_inputs_stay_finite():
    for act, out, loss in [("sigmoid", "softmax", "cross_entropy"), ("tanh", "sigmoid", "binary_cross_entropy")]:
        model = sb.compile(sb.derive(matrix_mlp([2, 4, 3], act, out, loss)))
        params = model.init(seed=0)
        params["W1"] *= 50
        params["W2"] *= 50
        X = np.array([[1000.0, -1000.0], [-1000.0, 1000.0], [1000.0, 1000.0], [-1000.0, -1000.0]])
        Y = np.eye(3)[[0, 1, 2, 0]]
        with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
            value, grads = model.value_and_grad(X, Y, params)
            assert np.isfinite(value) and all(np.all(np.isfinite(v)) for v in grads.values())
            model.step(X, Y, params, lr=0.1)


def test_forward_and_backward_leave_the_values_unchanged():
    model = sb.compile(sb.derive(matrix_mlp([3, 4, 2], "relu", "softmax", "cross_entropy")))
    params = model.init(seed=0)
    X, Y = data(3, 2, "cross_entropy")
    values = model._ns["forward"](X, Y, params)
    copies = {k: v.copy() for k, v in values.items()}
    value, grads = model._ns["backward"](X, Y, params, values)
    assert all(np.array_equal(values[k], copies[k]) for k in values)
    ref_value, ref = model.value_and_grad(X, Y, params)
    assert value == pytest.approx(ref_value, rel=1e-14)
    for p, gr in zip(model.params, grads):
        np.testing.assert_allclose(np.reshape(gr, ref[p].shape), ref[p], rtol=1e-13, atol=1e-16)


def test_unfused_softmax_and_several_inputs_are_clear_errors():
    g = matrix_mlp([3, 4, 2], "tanh", "softmax", "mse")       # softmax Jacobian not fused with MSE
    with pytest.raises(SymbackError, match="softmax"):
        sb.compile(sb.derive(g))
    g = sb.Graph()
    X1, X2 = g.inputs("X1 X2", shape=[(m, 2), (m, 2)])
    Y = g.targets("Y", shape=(m, 1))
    W = g.params("W", shape=(2, 1))
    g.node("Yhat", sb.identity(X1 @ W + X2 @ W))
    g.loss(sb.mse(g.symbol("Yhat"), Y))
    with pytest.raises(SymbackError, match="one input matrix"):
        sb.compile(sb.derive(g))


def test_a_column_times_a_matrix_broadcasts_without_writing_into_the_column():
    g = sb.Graph()
    X = g.inputs("X", shape=(m, 3))
    Y = g.targets("Y", shape=(m, 2))
    W1, b1, w, W2 = g.params("W1 b1 w W2", shape=[(3, 2), (1, 2), (3, 1), (2, 2)])
    s = g.node("s", sb.tanh(X @ w))                          # an m×1 column
    A = g.node("A", sb.tanh(X @ W1 + sb.ones(m) @ b1))       # m×2
    g.node("H", sb.hadamard(s @ sb.ones(1, 2), A) + A @ W2)
    g.loss(sb.mse(g.symbol("H"), Y))

    def f(p, X, Y):
        s = anp.tanh(anp.dot(X, p["w"]))
        A = anp.tanh(anp.dot(X, p["W1"]) + p["b1"])
        return anp.sum((s * A + anp.dot(A, p["W2"]) - Y) ** 2) / X.shape[0]
    X, Y = data(3, 2, "mse", n=5, seed=8)
    check(g, f, X, Y)
