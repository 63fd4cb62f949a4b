"""Matrix graphs and the builders, through the one engine.

Oracles: HIPS autograd and central finite differences of forward passes
written here in NumPy; SymPy's own evaluation for the exact numbers.
Nothing here compares symback with itself.
"""
import autograd.numpy as anp
import numpy as np
import pytest
import sympy as sp
from autograd import grad as ag_grad
from hypothesis import given, settings, strategies as st

import symback as sb
from symback.errors import DefinitionError
from symback.vjp import AdjointMatrix

m = sb.BATCH
ACT = {"tanh": anp.tanh, "sigmoid": lambda z: 1 / (1 + anp.exp(-z)), "relu": lambda z: anp.maximum(z, 0),
       "softplus": lambda z: anp.log1p(anp.exp(z)), "identity": lambda z: z}


def softmax(Z):
    E = anp.exp(Z - anp.max(Z, axis=1, keepdims=True))
    return E / anp.sum(E, axis=1, keepdims=True)


def random_values(g, rows=5, seed=0, one_hot=False):
    rng = np.random.default_rng(seed)
    vals = {}
    for n in g.input_names + g.target_names + g.param_names:
        shape = tuple(rows if k == m else int(k) for k in g.symbol(n).shape)
        vals[n] = rng.uniform(0.1, 0.9, size=shape) if n in g.target_names else rng.normal(size=shape)
    if one_hot:
        for n in g.target_names:
            vals[n] = np.eye(vals[n].shape[1])[rng.integers(0, vals[n].shape[1], rows)]
    return vals


def check_gradients(d, loss, vals, rtol=1e-7):
    """d.evaluate's ∂L/∂p against autograd of `loss` and central differences."""
    got = d.evaluate(vals)["gradient"]
    params = d.params
    for p in params:
        auto = ag_grad(lambda v, p=p: loss({**vals, p: v}))(vals[p])
        np.testing.assert_allclose(got[p], auto, rtol=rtol, atol=1e-10, err_msg=p)
        idx = tuple(0 for _ in vals[p].shape)
        up, down = vals[p].copy(), vals[p].copy()
        up[idx] += 1e-6
        down[idx] -= 1e-6
        fd = (loss({**vals, p: up}) - loss({**vals, p: down})) / 2e-6
        assert got[p][idx] == pytest.approx(fd, rel=1e-5, abs=1e-8), p


def design_graph():
    """The hand-written matrix graph of DESIGN.md: skip connection, softmax, penalty."""
    g = sb.Graph()
    X = g.inputs("X", shape=(m, 3))
    Y = g.targets("Y", shape=(m, 2))
    W1 = g.params("W1", shape=(3, 4)); b1 = g.params("b1", shape=(1, 4))
    W2 = g.params("W2", shape=(4, 4)); b2 = g.params("b2", shape=(1, 4))
    W3 = g.params("W3", shape=(4, 2)); b3 = g.params("b3", shape=(1, 2))
    one = sb.ones(m)
    A1 = g.node("A1", sb.tanh(X @ W1 + one @ b1))
    H = g.node("H", A1 + sb.relu(A1 @ W2 + one @ b2))
    Yhat = g.node("Yhat", sb.softmax(H @ W3 + one @ b3))
    g.loss(sb.cross_entropy(Yhat, Y), penalty=sp.Rational(1, 200) * (sb.sumsq(W1) + sb.sumsq(W2)))
    return g


def test_design_graph_gradients_match_autograd_and_differences():
    g = design_graph()
    d = sb.derive(g)
    vals = random_values(g, one_hot=True)

    def loss(v):
        A1 = anp.tanh(anp.dot(v["X"], v["W1"]) + v["b1"])
        H = A1 + anp.maximum(anp.dot(A1, v["W2"]) + v["b2"], 0)
        S = softmax(anp.dot(H, v["W3"]) + v["b3"])
        return (-anp.sum(v["Y"] * anp.log(S)) / len(v["X"])
                + (anp.sum(v["W1"] ** 2) + anp.sum(v["W2"] ** 2)) / 200)
    check_gradients(d, loss, vals)
    assert d.kind == "matrix" and d.params == ["W1", "b1", "W2", "b2", "W3", "b3"]
    assert float(d.evaluate(vals)["forward"]["L"]) == pytest.approx(loss(vals), rel=1e-12)


def test_gradient_is_shaped_like_its_parameter_and_penalty_gives_lambda_w():
    d = sb.derive(design_graph())
    W1 = d.graph.symbol("W1")
    for p in d.params:
        assert d.gradient(p).shape == d.graph.symbol(p).shape
    rec = d.gradient("W1", form="recursive")
    # λ/2·‖W1‖² with λ = 1/100 contributes λ W1; the rest flows from the data
    assert sp.Rational(1, 100) * W1 in sp.MatAdd.make_args(rec)


def test_residual_adjoint_sums_the_two_paths():
    net = sb.Sequential(sb.Dense(3, "tanh"), sb.Residual(sb.Dense(3, "tanh")), sb.Dense(1, "identity"),
                        inputs=2, loss="mse")
    d = sb.derive(net)
    s = d.graph.symbol
    # H2 = A1 + A2: δ_A1 receives δ_H2 directly and through Z2 (seed 003's case 2, in matrices)
    terms = sp.MatAdd.make_args(d.delta("A1"))
    assert AdjointMatrix("delta_H2", *s("H2").shape) in terms and len(terms) == 2
    vals = random_values(net)

    def loss(v):
        A1 = anp.tanh(anp.dot(v["X"], v["W1"]) + v["b1"])
        H = A1 + anp.tanh(anp.dot(A1, v["W2"]) + v["b2"])
        return anp.sum((anp.dot(H, v["W3"]) + v["b3"] - v["Y"]) ** 2) / len(v["X"])
    check_gradients(d, loss, vals)


def test_tied_weight_gradient_is_the_sum_of_its_uses():
    net = sb.Sequential(sb.Dense(2, "tanh"), sb.Dense(4, "identity", tie="W1"), inputs=4, loss="mse")
    assert net.param_names == ["W1", "b1", "b2"]
    d = sb.derive(net)
    assert len(sp.MatAdd.make_args(d.gradient("W1", form="recursive"))) == 2
    vals = random_values(net)

    def loss(v):
        A = anp.tanh(anp.dot(v["X"], v["W1"]) + v["b1"])
        return anp.sum((anp.dot(A, v["W1"].T) + v["b2"] - v["Y"]) ** 2) / len(v["X"])
    check_gradients(d, loss, vals)


def test_rnn_gradient_sums_over_time_steps():
    net = sb.rnn(inputs=2, hidden=3, outputs=1, steps=4, activation="tanh", output="identity", loss="mse")
    assert net.param_names == ["Wx", "Wh", "bh", "Wy", "by"]
    d = sb.derive(net)
    s = d.graph.symbol
    # ∂L/∂Wh = Σ_t h_{t−1}ᵀ δ_t, t = 2..T (h_0 = 0)
    expected = sp.MatAdd(*[s(f"h{t - 1}").T * AdjointMatrix(f"delta_z{t}", m, 3) for t in range(2, 5)])
    assert d.gradient("Wh", form="recursive") == expected
    vals = random_values(net)

    def loss(v):
        h = anp.zeros((len(v["X"]), 3))
        for t in range(4):
            h = anp.tanh(anp.dot(v["X"][:, 2 * t:2 * t + 2], v["Wx"]) + anp.dot(h, v["Wh"]) + v["bh"])
        return anp.sum((anp.dot(h, v["Wy"]) + v["by"] - v["Y"]) ** 2) / len(v["X"])
    check_gradients(d, loss, vals)


@settings(max_examples=12, deadline=None)
@given(st.lists(st.integers(1, 3), min_size=2, max_size=3), st.sampled_from(list(ACT)),
       st.sampled_from([("identity", "mse"), ("identity", "half_mse"), ("sigmoid", "binary_cross_entropy"),
                        ("softmax", "cross_entropy"), ("tanh", "mse")]),
       st.floats(0, 1), st.sampled_from(["mean", "sum"]), st.integers(0, 2 ** 16))
def test_random_mlps_match_autograd(sizes, act, head, l2, reduction, seed):
    out, lossname = head
    if out == "softmax" and sizes[-1] == 1:
        sizes = sizes[:-1] + [2]
    net = sb.mlp(sizes, act, out, lossname, reduction=reduction, l2=l2)
    d = sb.derive(net)
    vals = random_values(net, rows=3, seed=seed, one_hot=out == "softmax")
    lam = l2

    def loss(v):
        A = v["X"]
        for l in range(1, len(sizes)):
            Z = anp.dot(A, v[f"W{l}"]) + v[f"b{l}"]
            A = (softmax(Z) if out == "softmax" else ACT[out](Z)) if l == len(sizes) - 1 else ACT[act](Z)
        Y = v["Y"]
        per = {"mse": lambda: (A - Y) ** 2, "half_mse": lambda: (A - Y) ** 2 / 2,
               "cross_entropy": lambda: -Y * anp.log(A),
               "binary_cross_entropy": lambda: -(Y * anp.log(A) + (1 - Y) * anp.log(1 - A))}[lossname]()
        total = anp.sum(per) / (len(Y) if reduction == "mean" else 1)
        return total + lam / 2 * sum(anp.sum(v[f"W{l}"] ** 2) for l in range(1, len(sizes)))
    check_gradients(d, loss, vals, rtol=1e-6)


@pytest.mark.parametrize("build,match", [
    (lambda g, X, W: g.node("Z", X @ W), "aligned|shape"),
    (lambda g, X, W: g.params("V", shape=(m, 2)), "batch size"),
    (lambda g, X, W: g.inputs("U", shape=(2, 3)), "rows are samples"),
    (lambda g, X, W: g.params("V", shape=(0, 2)), "positive integer"),
    (lambda g, X, W: g.params("U V", shape=[(1, 2)]), "one per name"),
    (lambda g, X, W: g.loss(X), "column"),
    (lambda g, X, W: g.loss(sb.mse(X, X), penalty=X), "penalty"),
    (lambda g, X, W: sb.mse(X, W), "shape"),
    (lambda g, X, W: sb.hadamard(X, W), "shape"),
    (lambda g, X, W: sb.sumsq(sp.Symbol("x")), "matrix"),
])
def test_malformed_matrix_graphs_raise(build, match):
    g = sb.Graph()
    X = g.inputs("X", shape=(m, 3))
    W = g.params("W", shape=(4, 2))
    with pytest.raises((sb.SymbackError, ValueError), match=match):
        build(g, X, W)


@pytest.mark.parametrize("bad,match", [
    (lambda: sb.mlp([3, 1], output="softmax", loss="cross_entropy"), "one output unit"),
    (lambda: sb.Sequential(sb.Dense(2, "tanh"), sb.Residual(sb.Dense(3, "tanh")), sb.Dense(1), inputs=2),
     "equal widths"),
    (lambda: sb.Sequential(sb.Dense(2, "tanh"), sb.Dense(4, tie="W7"), inputs=4), "no earlier weight"),
    (lambda: sb.Sequential(sb.Dense(2, "tanh"), sb.Dense(3, tie="W1"), inputs=4), "transpose"),
    (lambda: sb.mlp([3, 2], l2=-1), "non-negative"),
    (lambda: sb.rnn(inputs=2, hidden=0, outputs=1, steps=3), "positive integer"),
    (lambda: sb.Sequential(sb.Dense(2, "tanh"), sb.Dense(2, tie="b1"), inputs=2), "no earlier weight"),
    (lambda: sb.Sequential(sb.LayerNorm(), sb.Dense(2), inputs=(3, 1), loss="mse"), "rows of width 1 is 0"),
])
def test_malformed_builders_raise(bad, match):
    with pytest.raises(sb.SymbackError, match=match):
        bad()


def test_ones_is_r_by_c_as_design_says():
    """sb.ones(r, c=1): the r×c matrix of ones; bad sizes are a DefinitionError, not SymPy's."""
    assert sb.ones(m).shape == (m, 1) and sb.ones(3, c=2).shape == (3, 2)
    np.testing.assert_array_equal(np.array(sb.ones(2, c=3).as_explicit(), dtype=float), np.ones((2, 3)))
    assert sb.ones(np.int64(4), 2).shape == (4, 2)
    for bad in (-1, 0, 2.5, "3", True):
        with pytest.raises(DefinitionError, match="positive integer or sb.BATCH"):
            sb.ones(bad)
        with pytest.raises(DefinitionError, match="columns"):
            sb.ones(2, c=bad)


def test_unused_parameter_warns_and_gets_zero_gradient():
    g = sb.Graph()
    X = g.inputs("X", shape=(m, 2)); Y = g.targets("Y", shape=(m, 1))
    W, V = g.params("W V", shape=[(2, 1), (2, 1)])
    g.loss(sb.mse(g.node("Yhat", X @ W), Y))
    with pytest.warns(sb.errors.UnusedParameterWarning, match="V"):
        d = sb.derive(g)
    assert d.gradient("V") == sp.ZeroMatrix(2, 1)


def test_deep_networks_derive_once_per_kind_of_step():
    from symback.vjp import _derive_canonical
    sb.derive(sb.mlp([3, 8, 8, 1], "tanh"))
    before = _derive_canonical.cache_info().misses
    d = sb.derive(sb.mlp([3] + [8] * 60 + [1], "tanh"))
    assert _derive_canonical.cache_info().misses - before <= 2      # depth costs no new derivation
    assert len(d.params) == 122


def test_one_sample_one_output_evaluates():
    """A 1×1 activation node: SymPy hands the explicit matrix to the activation itself."""
    d = sb.derive(sb.mlp([2, 1], "tanh", "sigmoid", "binary_cross_entropy"))
    X, W = np.array([[1.0, 2.0]]), np.array([[0.5], [-0.25]])
    ev = d.evaluate({"X": X, "Y": np.array([[1.0]]), "W1": W, "b1": np.zeros((1, 1))})
    p = 1 / (1 + np.exp(-(X @ W)))
    assert float(ev["forward"]["L"]) == pytest.approx(float(-np.log(p[0, 0])), rel=1e-12)
    np.testing.assert_allclose(ev["gradient"]["W1"], X.T * (p - 1), rtol=1e-12)


def test_softmax_inside_a_larger_expression_gets_a_node_of_its_own():
    # contract 0.3: softmax anywhere; the engine knows its derivative as a whole node
    from symback.matrix import Softmax
    g = sb.Graph()
    X = g.inputs("X", shape=(m, 3))
    S = g.node("S", sb.softmax(X) + X)
    assert g.kind("P_S") == "node" and isinstance(g.expr("P_S"), Softmax)
    assert set(g.expr("S").args) == {g.symbol("P_S"), X} and S.shape == X.shape
