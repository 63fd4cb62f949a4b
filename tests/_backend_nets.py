"""Networks, their oracles and data, shared by test_backends.py and the processes it starts.

Each network is built by one of symback's builders (or by hand, as a
matrix graph) and written again here, independently of symback, as a
forward pass in a library ``xp`` (autograd.numpy or torch) whose autodiff
is the oracle.  Imports only NumPy, SymPy and symback, so that a worker
process starts fast.
"""
from __future__ import annotations

import numpy as np
import sympy as sp

import symback as sb

HIDDEN = ("tanh", "sigmoid", "relu", "softplus", "leaky_relu")
HEADS = (("identity", "mse"), ("identity", "half_mse"), ("sigmoid", "binary_cross_entropy"),
         ("identity", "logcosh"), ("identity", "huber"), ("softmax", "cross_entropy"))
L2 = 0.01


# ------------------------------------------------------------------ definitions, written again
def act(name, z, xp):
    """Each activation's definition for the oracle's library `xp`."""
    return {"identity": lambda: z, "sigmoid": lambda: 1 / (1 + xp.exp(-z)), "tanh": lambda: xp.tanh(z),
            "relu": lambda: xp.where(z >= 0, z, 0 * z), "leaky_relu": lambda: xp.where(z >= 0, z, 0.01 * z),
            "softplus": lambda: xp.log(1 + xp.exp(z)),
            "softmax": lambda: xp.exp(z) / _rowsum(xp.exp(z), xp)}[name]()


def _rowsum(a, xp):
    return a.sum(1, keepdims=True) if xp.__name__.startswith("autograd") else a.sum(1, keepdim=True)


def cost(name, p, t, xp):
    """Each loss's definition per output entry (summed over outputs, mean over samples)."""
    return {"mse": lambda: (p - t) ** 2, "half_mse": lambda: (p - t) ** 2 / 2,
            "binary_cross_entropy": lambda: -(t * xp.log(p) + (1 - t) * xp.log(1 - p)),
            "logcosh": lambda: xp.log(xp.cosh(p - t)),
            "huber": lambda: xp.where(xp.abs(p - t) <= 1, (p - t) ** 2 / 2, xp.abs(p - t) - 0.5),
            "cross_entropy": lambda: -t * xp.log(p)}[name]()


def _mean_cost(loss, P, Y, xp):
    return cost(loss, P, Y, xp).sum() / Y.shape[0]


# ------------------------------------------------------------------ networks: (derivation, oracle, widths)
def mlp_net(hidden, output, loss):
    """sb.mlp([3, 4, 2]) with l2: L = mean cost + (λ/2)(‖W1‖² + ‖W2‖²)."""
    d = sb.derive(sb.mlp([3, 4, 2], activation=hidden, output=output, loss=loss, l2=L2))

    def oracle(p, X, Y, xp):
        A = act(hidden, X @ p["W1"] + p["b1"], xp)
        P = act(output, A @ p["W2"] + p["b2"], xp)
        return _mean_cost(loss, P, Y, xp) + L2 / 2 * ((p["W1"] ** 2).sum() + (p["W2"] ** 2).sum())
    return d, oracle, (3, 2, output)


def residual_net():
    """Sequential(Dense(4, tanh), Residual(Dense(4, tanh)), Dense(2, softmax)), cross-entropy."""
    d = sb.derive(sb.Sequential(sb.Dense(4, "tanh"), sb.Residual(sb.Dense(4, "tanh")), sb.Dense(2, "softmax"),
                                inputs=3, loss="cross_entropy"))

    def oracle(p, X, Y, xp):
        A = xp.tanh(X @ p["W1"] + p["b1"])
        H = A + xp.tanh(A @ p["W2"] + p["b2"])
        return _mean_cost("cross_entropy", act("softmax", H @ p["W3"] + p["b3"], xp), Y, xp)
    return d, oracle, (3, 2, "softmax")


def tied_net():
    """An autoencoder whose decoder weight is W1ᵀ: Dense(2, tanh), Dense(4, identity, tie="W1")."""
    d = sb.derive(sb.Sequential(sb.Dense(2, "tanh"), sb.Dense(4, "identity", tie="W1"), inputs=4, loss="mse"))

    def oracle(p, X, Y, xp):
        A = xp.tanh(X @ p["W1"] + p["b1"])
        return _mean_cost("mse", A @ p["W1"].T + p["b2"], Y, xp)
    return d, oracle, (4, 4, "identity")


def rnn_net():
    """Elman RNN, 2 inputs × 3 steps, 3 hidden, 1 output: h_t = tanh(x_t Wx + h_{t−1} Wh + bh)."""
    d = sb.derive(sb.rnn(inputs=2, hidden=3, outputs=1, steps=3, activation="tanh", output="identity", loss="mse"))

    def oracle(p, X, Y, xp):
        h = None                        # h_0 = 0: the first step has no h_0 Wh term
        for t in range(3):
            z = X[:, 2 * t:2 * t + 2] @ p["Wx"] + p["bh"]
            h = xp.tanh(z if h is None else z + h @ p["Wh"])
        return _mean_cost("mse", h @ p["Wy"] + p["by"], Y, xp)
    return d, oracle, (6, 1, "identity")


def skip_net():
    """DESIGN.md's hand-written matrix graph: a skip connection into H, softmax, and a penalty."""
    m = sb.BATCH
    g = sb.Graph()
    X = g.inputs("X", shape=(m, 3))
    Y = g.targets("Y", shape=(m, 2))
    W1, b1, W2, b2, W3, b3 = g.params("W1 b1 W2 b2 W3 b3", shape=[(3, 4), (1, 4), (4, 4), (1, 4), (4, 2), (1, 2)])
    one = sb.ones(m)
    A1 = g.node("A1", sb.tanh(X @ W1 + one @ b1))
    H = g.node("H", A1 + sb.relu(A1 @ W2 + one @ b2))
    Yhat = g.node("Yhat", sb.softmax(H @ W3 + one @ b3))
    g.loss(sb.cross_entropy(Yhat, Y), penalty=sp.Rational(1, 200) * (sb.sumsq(W1) + sb.sumsq(W2)))
    d = sb.derive(g)

    def oracle(p, X, Y, xp):
        A = xp.tanh(X @ p["W1"] + p["b1"])
        H = A + act("relu", A @ p["W2"] + p["b2"], xp)
        P = act("softmax", H @ p["W3"] + p["b3"], xp)
        return _mean_cost("cross_entropy", P, Y, xp) + ((p["W1"] ** 2).sum() + (p["W2"] ** 2).sum()) / 200
    return d, oracle, (3, 2, "softmax")


def scalar_net():
    """A scalar graph: a1 = σ(w1 x1), a2 = ReLU(w2 x2), ŷ = σ(b + a1 + a2), cross-entropy summed."""
    g = sb.Graph()
    x1, x2 = g.inputs("x1 x2")
    y = g.targets("y")
    w1, w2, b = g.params("w1 w2 b")
    a1 = g.node("a_1", sb.sigmoid(w1 * x1))
    a2 = g.node("a_2", sb.relu(w2 * x2))
    yhat = g.node("yhat", sb.sigmoid(b + a1 + a2))
    g.loss(-(y * sp.log(yhat) + (1 - y) * sp.log(1 - yhat)), reduction="sum")
    d = sb.derive(g)

    def oracle(p, X, Y, xp):
        a1 = act("sigmoid", p["w1"] * X[:, 0], xp)
        a2 = act("relu", p["w2"] * X[:, 1], xp)
        yh = act("sigmoid", p["b"] + a1 + a2, xp)
        return (-(Y[:, 0] * xp.log(yh) + (1 - Y[:, 0]) * xp.log(1 - yh))).sum()
    return d, oracle, (2, 1, "sigmoid")


BUILDERS = {"residual": residual_net, "tied": tied_net, "rnn": rnn_net, "skip": skip_net, "scalar": scalar_net}


def data(d, k, target, n=7, seed=3):
    """Random (X, Y): targets one-hot for softmax, in (0, 1) for sigmoid, else real."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    if target == "softmax":
        Y = np.eye(k)[rng.integers(0, k, n)]
    elif target == "sigmoid":
        Y = rng.uniform(0.1, 0.9, size=(n, k))
    else:
        Y = rng.normal(size=(n, k))
    return X, Y
