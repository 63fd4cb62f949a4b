"""Layer networks: the matrix formulas against independent oracles.

Oracles: central finite differences of a hand-written NumPy forward pass,
SymPy's own diff of the scalar loss, and the seeds' punchline equations.
"""
import numpy as np
import pytest
import sympy as sp

import symback as sb
from symback.functions import softmax
from symback.matrix import FPrime, explicit
from symback.vjp import AdjointMatrix, fused_output

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
    Yhat, Y = d.graph.symbol("Yhat"), d.graph.symbol("Y")
    assert d.delta("Z1", form="chain") == (Yhat - Y) / sb.BATCH     # the batch loss's δ at the logits
    g, (z, a, y) = fused_output(softmax, sb.get_loss("cross_entropy"), K)
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
    Yhat, Y = d.graph.symbol("Yhat"), d.graph.symbol("Y")
    assert d.delta("Z2", form="chain") == (Yhat - Y) / sb.BATCH
    g, (z, a, y) = fused_output(sb.sigmoid, sb.get_loss("binary_cross_entropy"), 1)
    assert sp.expand(g - (a - y)) == 0


def test_mse_sigmoid_output_delta_matches_sympy_diff():
    g, (z, a, y) = fused_output(sb.get_activation("sigmoid"), sb.get_loss("mse"), 1)
    zz, yy = sp.symbols("zz yy")
    oracle = sp.diff((1 / (1 + sp.exp(-zz)) - yy) ** 2, zz)
    for zv, yv in [(0.3, 0.1), (-1.2, 0.8), (2.0, 0.5)]:
        got = g.subs({a: 1 / (1 + sp.exp(-sp.Float(zv))), y: yv})
        assert abs(float(got - oracle.subs({zz: zv, yy: yv}))) < 1e-12


def _sigma(name):
    return sp.Lambda(sb.matrix.ENTRY, sb.get_activation(name)(sb.matrix.ENTRY))


def test_delta_recursion_and_weight_gradients_have_textbook_shape():
    d = sb.derive(sb.mlp([4, 5, 3, 2], "sigmoid", "identity", "mse"))
    s = d.graph.symbol
    delta = lambda n: AdjointMatrix(f"delta_{n}", *s(n).shape)
    rec = d.delta("Z2")
    assert isinstance(rec, sp.HadamardProduct)
    assert set(rec.args) == {delta("A2"), FPrime(_sigma("sigmoid"), s("Z2"))}
    assert d.delta("A2") == delta("Yhat") * s("W3").T
    assert d.gradient("W2", form="recursive") == s("A1").T * delta("Z2")
    assert d.gradient("b2", form="recursive") == sp.OneMatrix(1, sb.BATCH) * delta("Z2")


def test_width_one_layers_keep_the_textbook_form():
    d = sb.derive(sb.mlp([2, 1, 1], "tanh", "identity", "mse"))
    s = d.graph.symbol
    assert d.delta("Z1") == sp.HadamardProduct(FPrime(_sigma("tanh"), s("Z1")),
                                               AdjointMatrix("delta_A1", *s("A1").shape))
    assert d.delta("A1") == AdjointMatrix("delta_Yhat", *s("Yhat").shape) * s("W2").T


def _numeric(expr, env, rows):
    return np.array(explicit(expr.xreplace(env), rows).evalf().tolist(), dtype=float)


def test_punchline_path_runs_from_output_back_to_first_layer():
    # seed 004: dJ/dW1 = (ŷ − y) · W3 · σ'(z3) · W2 · σ'(z2) · X
    d = sb.derive(sb.mlp([1, 1, 1, 1], "sigmoid", "identity", "half_mse"))
    (path,) = d.chain("W1")
    assert [(f.of, f.wrt) for f in path] == [("L", "C"), ("C", "Yhat"), ("Yhat", "A2"), ("A2", "Z2"),
                                             ("Z2", "A1"), ("A1", "Z1"), ("Z1", "W1")]
    s = d.graph.symbol
    delta = lambda n: AdjointMatrix(f"delta_{n}", *s(n).shape)
    exprs = [f.expr for f in path]
    assert exprs[2:] == [delta("Yhat") * s("W3").T, sp.HadamardProduct(FPrime(_sigma("sigmoid"), s("Z2")), delta("A2")),
                         delta("Z2") * s("W2").T, sp.HadamardProduct(FPrime(_sigma("sigmoid"), s("Z1")), delta("A1")),
                         s("X").T * delta("Z1")]


@pytest.mark.parametrize("net", [
    lambda: sb.mlp([3, 4, 4, 2], "sigmoid", "identity", "mse"),
    lambda: sb.mlp([2, 3, 3], "tanh", "softmax", "cross_entropy"),
    lambda: sb.Sequential(sb.Dense(3, "tanh"), sb.Residual(sb.Dense(3, "relu")), sb.Dense(1, "sigmoid"),
                          inputs=2, loss="binary_cross_entropy", l2=0.1),
    lambda: sb.Sequential(sb.Dense(2, "tanh"), sb.Dense(3, "identity", tie="W1"), inputs=3, loss="half_mse"),
    lambda: sb.rnn(inputs=2, hidden=2, outputs=1, steps=3),
])
def test_layer_chain_factors_compose_numerically_to_the_gradient(net):
    """Apply each path's factors in order, numerically; the sum over paths is the
    gradient, itself checked against finite differences of the loss's own value."""
    d = sb.derive(net())
    g, rows = d.graph, 4
    rng = np.random.default_rng(3)
    vals = {}
    for n in g.input_names + g.target_names + g.param_names:
        shape = tuple(rows if k == sb.BATCH else int(k) for k in g.symbol(n).shape)
        vals[n] = rng.uniform(0.1, 0.9, size=shape) if n == "Y" else rng.normal(size=shape)
    if g.cost_name and isinstance(g.expr(g.cost_name), sb.matrix.RowCost) and \
            g.expr(g.cost_name).loss.name == "cross_entropy":
        vals["Y"] = np.eye(vals["Y"].shape[1])[rng.integers(0, vals["Y"].shape[1], rows)]
    ev = d.evaluate(vals)
    env = {g.symbol(n): sp.ImmutableMatrix(v) for n, v in vals.items()}
    env.update({g.symbol(n): sp.ImmutableMatrix(np.atleast_2d(v)) for n, v in ev["forward"].items()
                if n != d.loss_name})
    loss = lambda v: float(d.evaluate(v)["forward"][d.loss_name])
    for p in d.params:
        total = sum(_numeric(d.apply_path(path), env, rows) for path in d.chain(p))
        np.testing.assert_allclose(total, ev["gradient"][p], rtol=1e-9, atol=1e-12, err_msg=p)
        idx = tuple(rng.integers(0, k) for k in vals[p].shape)
        up, down = ({**vals, p: vals[p].copy()} for _ in range(2))
        up[p][idx] += 1e-6
        down[p][idx] -= 1e-6
        assert total[idx] == pytest.approx((loss(up) - loss(down)) / 2e-6, rel=1e-5, abs=1e-8)


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
