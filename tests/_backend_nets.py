"""Networks and data shared by test_backends.py and the processes it starts.

Imports only NumPy, SymPy and symback, so that a worker process starts fast.
"""
from __future__ import annotations

import numpy as np
import sympy as sp

import symback as sb


def matrix_graph(hidden, output, loss, widths=(3, 4, 2)):
    """X W1 + 1 b1 → hidden → · W2 + 1 b2 → output → loss, plus (1/200)‖W1‖²."""
    m, (d, h, k) = sb.BATCH, widths
    g = sb.Graph()
    X = g.inputs("X", shape=(m, d))
    Y = g.targets("Y", shape=(m, k))
    W1, b1, W2, b2 = g.params("W1 b1 W2 b2", shape=[(d, h), (1, h), (h, k), (1, k)])
    A1 = g.node("A1", getattr(sb, hidden)(X @ W1 + sb.ones(m) @ b1))
    Yhat = g.node("Yhat", getattr(sb, output)(A1 @ W2 + sb.ones(m) @ b2))
    g.loss(getattr(sb, loss)(Yhat, Y), penalty=sp.Rational(1, 200) * sb.sumsq(W1))
    return sb.derive(g)


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
