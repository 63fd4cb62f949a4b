"""Layer networks: the matrix formulas against independent oracles.

Oracles: central finite differences of a hand-written NumPy forward pass,
SymPy's own diff of the scalar loss, and the seeds' punchline equations.
"""
import numpy as np
import pytest
import sympy as sp

import symback as sb
from symback.layers import FPrime, output_delta

ACT = {"sigmoid": lambda z: 1 / (1 + np.exp(-z)), "tanh": np.tanh,
       "relu": lambda z: np.maximum(z, 0), "identity": lambda z: z,
       "softplus": lambda z: np.log1p(np.exp(z))}


def numpy_loss(vals, sizes, act, out, loss):
    """A plain NumPy forward pass, written independently of symback."""
    A, L = vals["X"], len(sizes) - 1
    for l in range(1, L + 1):
        Z = A @ vals[f"W{l}"] + vals[f"b{l}"]
        if l < L:
            A = ACT[act](Z)
        elif out == "softmax":
            E = np.exp(Z - Z.max(1, keepdims=True))
            A = E / E.sum(1, keepdims=True)
        else:
            A = ACT[out](Z)
    Y, n = vals["Y"], len(vals["Y"])
    return {"cross_entropy": lambda: -(Y * np.log(A)).sum() / n,
            "mse": lambda: ((A - Y) ** 2).sum() / n,
            "half_mse": lambda: ((A - Y) ** 2).sum() / (2 * n),
            "binary_cross_entropy": lambda: -(Y * np.log(A) + (1 - Y) * np.log(1 - A)).sum() / n,
            }[loss]()


def random_values(sizes, softmax_out, seed=1, n=5):
    rng = np.random.default_rng(seed)
    K = sizes[-1]
    vals = {"X": rng.normal(size=(n, sizes[0])),
            "Y": np.eye(K)[rng.integers(0, K, n)] if softmax_out else rng.uniform(0.1, 0.9, size=(n, K))}
    for l in range(1, len(sizes)):
        vals[f"W{l}"] = rng.normal(size=(sizes[l - 1], sizes[l]))
        vals[f"b{l}"] = rng.normal(size=(1, sizes[l]))
    return vals


@pytest.mark.parametrize("sizes,act,out,loss", [
    ([2, 3, 2], "sigmoid", "softmax", "cross_entropy"),
    ([3, 4, 3, 1], "tanh", "sigmoid", "mse"),
    ([2, 3, 1], "relu", "sigmoid", "binary_cross_entropy"),
    ([2, 2, 2], "softplus", "identity", "half_mse"),
    ([2, 1, 1], "tanh", "identity", "mse"),          # width-1 layers: no 1x1 traces
    ([1, 1, 1, 1], "sigmoid", "identity", "half_mse"),
])
def test_matrix_formulas_match_finite_differences(sizes, act, out, loss):
    d = sb.derive(sb.mlp(sizes, act, out, loss))
    vals = random_values(sizes, out == "softmax")
    grads = d.evaluate(vals)["gradient"]
    h = 1e-6
    for p in d.params:
        num = np.zeros_like(vals[p])
        for idx in np.ndindex(vals[p].shape):
            v = dict(vals)
            v[p] = vals[p].copy()
            v[p][idx] += h
            up = numpy_loss(v, sizes, act, out, loss)
            v[p][idx] -= 2 * h
            num[idx] = (up - numpy_loss(v, sizes, act, out, loss)) / (2 * h)
        np.testing.assert_allclose(grads[p], num, rtol=1e-6, atol=1e-8, err_msg=p)


@pytest.mark.parametrize("K", [2, 3, 4, 5])
def test_softmax_cross_entropy_delta_is_prediction_minus_target(K):
    d = sb.derive(sb.mlp([3, K], "tanh", "softmax", "cross_entropy"))
    g, (z, a, y) = d.output_delta
    assert sp.expand(g - (a - y)) == 0
    # Oracle: SymPy's diff of -Σ y_k log softmax_k at random one-hot targets.
    zs = sp.symbols(f"z0:{K}")
    s = [sp.exp(v) / sum(sp.exp(u) for u in zs) for v in zs]
    rng = np.random.default_rng(K)
    point = {v: sp.Float(x) for v, x in zip(zs, rng.normal(size=K))}
    hot = rng.integers(K)
    C = -sp.log(s[hot])
    for j in range(K):
        expected = sp.diff(C, zs[j]).subs(point)
        got = g.subs({a: s[j].subs(point), y: int(j == hot)})
        assert abs(float(expected - got)) < 1e-12


def test_sigmoid_binary_cross_entropy_delta_is_prediction_minus_target():
    d = sb.derive(sb.mlp([2, 3, 1], "relu", "sigmoid", "binary_cross_entropy"))
    g, (z, a, y) = d.output_delta
    assert sp.expand(g - (a - y)) == 0


def test_mse_sigmoid_output_delta_matches_sympy_diff():
    g, (z, a, y) = output_delta(sb.get_activation("sigmoid"), sb.get_loss("mse"), 1)
    zz, yy = sp.symbols("zz yy")
    oracle = sp.diff((1 / (1 + sp.exp(-zz)) - yy) ** 2, zz)
    for zv, yv in [(0.3, 0.1), (-1.2, 0.8), (2.0, 0.5)]:
        got = g.subs({a: 1 / (1 + sp.exp(-sp.Float(zv))), y: yv})
        assert abs(float(got - oracle.subs({zz: zv, yy: yv}))) < 1e-12


def test_delta_recursion_and_weight_gradients_have_textbook_shape():
    d = sb.derive(sb.mlp([4, 5, 3, 2], "sigmoid", "identity", "mse"))
    dZ2, W3, Z2 = d.delta[2], d.W[3], d.Z[2]
    rec = d.delta_of(2)
    assert isinstance(rec, sp.HadamardProduct)
    assert set(rec.args) == {d.delta[3] * W3.T, FPrime("sigmoid", Z2)}
    assert d.gradient("W2", form="recursive") == d.A[1].T * dZ2
    assert d.gradient("b2", form="recursive") == sp.OneMatrix(1, d.X.shape[0]) * dZ2


def test_width_one_layers_keep_the_textbook_form():
    d = sb.derive(sb.mlp([2, 1, 1], "tanh", "identity", "mse"))
    assert d.delta_of(1) == sp.HadamardProduct(d.delta[2] * d.W[2].T, FPrime("tanh", d.Z[1]))


def test_punchline_path_runs_from_output_back_to_first_layer():
    # seed 004: dJ/dW1 = (ŷ − y) · W3 · σ'(z3) · W2 · σ'(z2) · X
    d = sb.derive(sb.mlp([1, 1, 1, 1], "sigmoid", "identity", "half_mse"))
    (path,) = d.chain("W1")
    assert [(f.of, f.wrt) for f in path] == [("C", "Z3"), ("Z3", "A2"), ("A2", "Z2"),
                                             ("Z2", "A1"), ("A1", "Z1"), ("Z1", "W1")]
    exprs = [f.expr for f in path]
    assert exprs[0] == d.A[3] - d.Y
    assert exprs[1:] == [d.W[3].T, FPrime("sigmoid", d.Z[2]), d.W[2].T, FPrime("sigmoid", d.Z[1]), d.X.T]


@pytest.mark.parametrize("bad,match", [
    (lambda: sb.mlp([3]), "at least two"),
    (lambda: sb.mlp([3, 0, 1]), "positive integer"),
    (lambda: sb.mlp([3, 2], activation="nope"), "unknown activation"),
    (lambda: sb.mlp([3, 2], loss="nope"), "unknown loss"),
    (lambda: sb.mlp([3, 2], output="softmax", loss="mse"), "do not go together"),
    (lambda: sb.mlp([3, 2, 2], activation="softmax", output="softmax", loss="cross_entropy"), "output layer"),
    (lambda: sb.derive(sb.mlp([3, 2])).gradient("W9"), "unknown parameter"),
])
def test_malformed_layer_networks_raise(bad, match):
    with pytest.raises(sb.SymbackError, match=match):
        bad()
