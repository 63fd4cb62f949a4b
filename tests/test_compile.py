"""compile(): generated NumPy code against oracles independent of symback.

Oracles: HIPS autograd over forward passes written here by hand in
autograd.numpy, central finite differences of those forward passes, the
numbers of seed 004, and SymPy proofs of the stable rewrites.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import autograd.numpy as anp
import numpy as np
import pytest
import sympy as sp
from autograd import grad as ag_grad

import symback as sb
from conftest import AG_ACT, AG_LOSS, ag_sigmoid, seed004_1d_graph
from symback.errors import DataError, SymbackError
from symback.functions import ACTIVATIONS, LOSSES

RTOL = 1e-7


# ------------------------------------------------------------------ hand-written oracles
_sig = ag_sigmoid
ACT = {**AG_ACT, "mish": lambda z: z * anp.tanh(anp.log(1 + anp.exp(z)))}    # definitions, for autograd
LOSS = {**AG_LOSS, "logcosh2": lambda p, t: anp.log(anp.cosh(2 * (p - t))) / 2}   # per output element
OUTPUT_FOR = {"binary_cross_entropy": "sigmoid"}


@pytest.fixture
def custom():
    """mish and logcosh2, registered from their SymPy definitions alone, removed afterwards."""
    z = sp.Symbol("z")
    p, t = sp.symbols("p t")
    mish = sb.activation("mish", z * sp.tanh(sp.log(1 + sp.exp(z))), var=z)
    lc2 = sb.loss_function("logcosh2", sp.log(sp.cosh(2 * (p - t))) / 2, prediction=p, target=t)
    yield mish, lc2
    ACTIVATIONS.pop("mish", None)
    LOSSES.pop("logcosh2", None)


def mlp_forward(sizes, act, out, loss):
    """loss(flat_params, X, Y) for an MLP, in autograd.numpy, written here."""
    shapes = [s for a, b in zip(sizes[:-1], sizes[1:]) for s in ((a, b), (b,))]

    def unflat(theta):
        ps, k = [], 0
        for s in shapes:
            n = int(np.prod(s))
            ps.append(anp.reshape(theta[k:k + n], s))
            k += n
        return ps

    def f(theta, X, Y):
        ps = unflat(theta)
        A = X
        L = len(ps) // 2
        for l in range(L):
            Z = anp.dot(A, ps[2 * l]) + ps[2 * l + 1]
            if l < L - 1:
                A = ACT[act](Z)
        if loss == "cross_entropy":
            logp = Z - anp.log(anp.sum(anp.exp(Z), axis=1, keepdims=True))
            return -anp.sum(Y * logp) / X.shape[0]
        return anp.sum(LOSS[loss](ACT[out](Z), Y)) / X.shape[0]
    return f


def flat(params, names):
    return np.concatenate([np.ravel(params[n]) for n in names])


def unflat_like(vec, params, names):
    out, k = {}, 0
    for n in names:
        size = np.size(params[n])
        out[n] = vec[k:k + size].reshape(np.shape(params[n]))
        k += size
    return out


def central_fd(f, theta, h=1e-6):
    g = np.zeros_like(theta)
    for i in range(theta.size):
        e = np.zeros_like(theta)
        e[i] = h
        g[i] = (f(theta + e) - f(theta - e)) / (2 * h)
    return g


def rel_err(a, b):
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12)


def layer_data(sizes, loss, seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(6, sizes[0]))
    K = sizes[-1]
    if loss == "cross_entropy":
        Y = np.eye(K)[rng.integers(0, K, 6)]
    elif loss == "binary_cross_entropy":
        Y = rng.uniform(0.05, 0.95, size=(6, K))
    else:
        Y = rng.normal(scale=1.5, size=(6, K))
    return X, Y


def check_layers(net, act, out, loss, seed=0):
    d = sb.derive(net)
    m = sb.compile(d)
    params = m.init(seed=seed)
    rng = np.random.default_rng(seed + 7)
    for k in params:       # non-zero biases, so that b matters
        params[k] = params[k] + rng.normal(scale=0.2, size=params[k].shape)
    X, Y = layer_data(net.sizes, loss, seed)
    f = mlp_forward(net.sizes, act, out, loss)
    theta = flat(params, m.params)
    value, grads = m.value_and_grad(X, Y, params)
    assert value == pytest.approx(float(f(theta, X, Y)), rel=1e-12)
    mine = flat(grads, m.params)
    assert rel_err(mine, ag_grad(f)(theta, X, Y)) < RTOL
    assert rel_err(mine, central_fd(lambda t: f(t, X, Y), theta)) < RTOL
    return m


# ------------------------------------------------------------------ seed 004
def test_seed004_one_step_through_compile():
    g, _ = seed004_1d_graph()
    m = sb.compile(sb.derive(g))
    params = {"w": np.array(0.1)}
    X, Y = np.array([[3.0]]), np.array([[1.0]])
    assert m.loss(X, Y, params) == pytest.approx(0.49, abs=1e-12)
    assert m.grad(X, Y, params)["w"] == pytest.approx(-4.2, abs=1e-12)
    assert m.predict(X, params)[0, 0] == pytest.approx(0.3, abs=1e-12)
    w = params["w"]
    assert m.step(X, Y, params, lr=1.0) == pytest.approx(0.49, abs=1e-12)
    assert params["w"] is w                      # updated in place
    assert float(params["w"]) == pytest.approx(4.3, abs=1e-12)


# ------------------------------------------------------------------ scalar graphs
def scalar_net(act, loss):
    """z = w1 x1 + w2 x2 + b, h = act(z), yhat = out(v h + c), C = loss(yhat, y)."""
    g = sb.Graph()
    x1, x2 = g.inputs("x1 x2")
    y = g.targets("y")
    w1, w2, b, v, c = g.params("w1 w2 b v c")
    z = g.node("z", w1 * x1 + w2 * x2 + b)
    h = g.node("h", sb.get_activation(act)(z))
    out = sb.get_activation(OUTPUT_FOR.get(loss, "identity"))
    yhat = g.node("yhat", out(v * h + c))
    g.loss(sb.get_loss(loss)(yhat, y))
    return g


def scalar_oracle(act, loss):
    def f(theta, X, Y):
        w1, w2, b, v, c = theta[0], theta[1], theta[2], theta[3], theta[4]
        h = ACT[act](w1 * X[:, 0] + w2 * X[:, 1] + b)
        yhat = ACT[OUTPUT_FOR.get(loss, "identity")](v * h + c)
        return anp.mean(LOSS[loss](yhat, Y[:, 0]))
    return f


SCALAR_ACTS = ["identity", "sigmoid", "tanh", "relu", "leaky_relu", "softplus", "swish"]
SCALAR_LOSSES = ["mse", "half_mse", "binary_cross_entropy", "logcosh", "huber"]


@pytest.mark.parametrize("loss", SCALAR_LOSSES)
@pytest.mark.parametrize("act", SCALAR_ACTS)
def test_scalar_graph_gradients_match_autograd_and_fd(act, loss):
    m = sb.compile(sb.derive(scalar_net(act, loss)))
    rng = np.random.default_rng(3)
    X = rng.normal(size=(9, 2))
    Y = rng.uniform(0.1, 0.9, size=(9, 1)) if loss == "binary_cross_entropy" else rng.normal(size=(9, 1))
    theta = np.array([0.7, -0.4, 0.3, 1.3, -0.2])
    params = {k: np.array(v) for k, v in zip(["w1", "w2", "b", "v", "c"], theta)}
    f = scalar_oracle(act, loss)
    value, grads = m.value_and_grad(X, Y, params)
    assert value == pytest.approx(float(f(theta, X, Y)), rel=1e-12)
    mine = np.array([grads[k] for k in m.params])
    assert rel_err(mine, ag_grad(f)(theta, X, Y)) < RTOL
    assert rel_err(mine, central_fd(lambda t: f(t, X, Y), theta)) < RTOL


def test_scalar_softmax_cross_entropy_and_custom_functions(custom):
    mish, lc2 = custom
    g = sb.Graph()
    x = g.inputs("x")
    y1, y2 = g.targets("y1 y2")
    w, u, b = g.params("w u b")
    h = g.node("h", mish(w * x + b))
    z1 = g.node("z1", u * h)
    z2 = g.node("z2", -u * h + b)
    p1 = g.node("p1", sp.exp(z1) / (sp.exp(z1) + sp.exp(z2)))
    p2 = g.node("p2", sp.exp(z2) / (sp.exp(z1) + sp.exp(z2)))
    ce = sb.get_loss("cross_entropy")
    g.loss(ce(p1, y1) + ce(p2, y2) + lc2(p1, y1))
    m = sb.compile(sb.derive(g))

    def f(theta, X, Y):
        w, u, b = theta[0], theta[1], theta[2]
        hh = ACT["mish"](w * X[:, 0] + b)
        a1, a2 = u * hh, -u * hh + b
        q1 = anp.exp(a1) / (anp.exp(a1) + anp.exp(a2))
        q2 = anp.exp(a2) / (anp.exp(a1) + anp.exp(a2))
        return anp.mean(-Y[:, 0] * anp.log(q1) - Y[:, 1] * anp.log(q2) + LOSS["logcosh2"](q1, Y[:, 0]))
    rng = np.random.default_rng(5)
    X = rng.normal(size=(8, 1))
    Y = np.eye(2)[rng.integers(0, 2, 8)]
    theta = np.array([0.8, 1.1, -0.3])
    params = dict(zip(["w", "u", "b"], map(np.array, theta)))
    mine = np.array([m.grad(X, Y, params)[k] for k in m.params])
    assert rel_err(mine, ag_grad(f)(theta, X, Y)) < RTOL
    assert rel_err(mine, central_fd(lambda t: f(t, X, Y), theta)) < RTOL


def test_scalar_graph_sum_reduction_and_parameter_only_terms():
    g = sb.Graph()
    x = g.inputs("x")
    y = g.targets("y")
    w, k = g.params("w k")
    yhat = g.node("yhat", w * x)
    g.loss((yhat - y) ** 2 + k ** 2, reduction="sum")    # k's term does not depend on the sample
    m = sb.compile(sb.derive(g))
    X, Y = np.array([[1.0], [2.0], [3.0]]), np.array([[1.0], [0.0], [2.0]])
    params = {"w": np.array(0.5), "k": np.array(0.25)}
    grads = m.grad(X, Y, params)
    assert grads["w"] == pytest.approx(sum(2 * (0.5 * xi - yi) * xi for xi, yi in zip([1, 2, 3], [1, 0, 2])))
    assert grads["k"] == pytest.approx(3 * 2 * 0.25)     # Σ over 3 samples of 2k
    assert m.loss(X, Y, params) == pytest.approx(0.25 + 1 + 0.25 + 3 * 0.0625)


def test_derive_expression_then_compile():
    w, b, x, t = sp.symbols("w b x t")
    expr = (sb.sigmoid(w * x + b) - t) ** 2
    m = sb.compile(sb.derive(expr, wrt=[w, b]))
    assert m.params == ("w", "b")
    # the inputs are the other symbols, in name order: t, x

    def f(theta, X):
        return anp.mean((_sig(theta[0] * X[:, 1] + theta[1]) - X[:, 0]) ** 2)
    X = np.random.default_rng(0).normal(size=(5, 2))
    theta = np.array([0.3, -0.6])
    params = {"w": np.array(0.3), "b": np.array(-0.6)}
    g = m.grad(X, np.zeros((5, 0)), params)
    assert rel_err(np.array([g["w"], g["b"]]), ag_grad(f)(theta, X)) < RTOL


# ------------------------------------------------------------------ layer networks
HIDDEN = ["identity", "sigmoid", "tanh", "relu", "leaky_relu", "softplus", "swish"]
HEADS = [("identity", "mse"), ("identity", "half_mse"), ("sigmoid", "binary_cross_entropy"),
         ("softmax", "cross_entropy"), ("identity", "logcosh"), ("identity", "huber"), ("sigmoid", "mse")]


@pytest.mark.parametrize("out,loss", HEADS)
@pytest.mark.parametrize("act", HIDDEN)
def test_layer_gradients_match_autograd_and_fd(act, out, loss):
    check_layers(sb.mlp([3, 4, 5, 3], act, out, loss), act, out, loss)


def test_layer_custom_activation_and_loss(custom):
    mish, lc2 = custom
    net = sb.mlp([3, 5, 2], activation=mish, output="identity", loss=lc2)
    check_layers(net, "mish", "identity", "logcosh2")
    net = sb.Sequential(sb.Dense(4, "mish"), sb.Dense(3, "tanh"), sb.Dense(2, "identity"),
                        inputs=3, loss="logcosh2")
    m = sb.compile(sb.derive(net))
    params = m.init(seed=2)
    X, Y = layer_data([3, 4, 3, 2], "mse", 2)

    def f(theta, X, Y):
        p = unflat_like(theta, params, m.params)
        A = ACT["mish"](anp.dot(X, p["W1"]) + p["b1"])
        A = anp.tanh(anp.dot(A, p["W2"]) + p["b2"])
        return anp.sum(LOSS["logcosh2"](anp.dot(A, p["W3"]) + p["b3"], Y)) / X.shape[0]
    theta = flat(params, m.params)
    assert rel_err(flat(m.grad(X, Y, params), m.params), ag_grad(f)(theta, X, Y)) < RTOL


def test_layer_sum_reduction():
    net = sb.mlp([2, 3, 1], "tanh", "identity", "mse", reduction="sum")
    m = sb.compile(sb.derive(net))
    params = m.init(seed=0)
    X, Y = layer_data([2, 3, 1], "mse", 1)
    f = mlp_forward([2, 3, 1], "tanh", "identity", "mse")
    theta = flat(params, m.params)
    n = X.shape[0]
    assert m.loss(X, Y, params) == pytest.approx(float(f(theta, X, Y)) * n, rel=1e-12)
    assert rel_err(flat(m.grad(X, Y, params), m.params), n * ag_grad(f)(theta, X, Y)) < RTOL


def test_step_is_sgd_with_the_gradient_in_place():
    m = sb.compile(sb.derive(sb.mlp([4, 6, 3], "sigmoid", "softmax", "cross_entropy")))
    params = m.init(seed=1)
    X, Y = layer_data([4, 6, 3], "cross_entropy", 4)
    before = {k: v.copy() for k, v in params.items()}
    ids = {k: id(v) for k, v in params.items()}
    value, grads = m.value_and_grad(X, Y, params)
    assert m.step(X, Y, params, lr=0.3) == pytest.approx(value, rel=1e-14)
    for k in params:
        assert id(params[k]) == ids[k]
        np.testing.assert_allclose(params[k], before[k] - 0.3 * grads[k], rtol=1e-13, atol=1e-15)


def test_float32_model():
    d = sb.derive(sb.mlp([3, 5, 2], "tanh", "softmax", "cross_entropy"))
    m32, m64 = sb.compile(d, dtype="float32"), sb.compile(d)
    p32, p64 = m32.init(seed=0), m64.init(seed=0)
    assert all(v.dtype == np.float32 for v in p32.values())
    assert all(v.dtype == np.float64 for v in p64.values())
    X, Y = layer_data([3, 5, 2], "cross_entropy", 0)
    g32 = m32.grad(X, Y, p32)
    g64 = m64.grad(X, Y, {k: v.astype(np.float64) for k, v in p32.items()})
    for k in g32:
        assert g32[k].dtype == np.float32
        np.testing.assert_allclose(g32[k], g64[k], rtol=1e-4, atol=1e-5)
    m32.step(X, Y, p32, lr=0.1)
    assert all(v.dtype == np.float32 for v in p32.values())
    assert m32.predict(X, p32).dtype == np.float32
    # scalar graph in float32 too
    g = scalar_net("relu", "mse")
    ms = sb.compile(sb.derive(g), dtype=np.float32)
    ps = ms.init(seed=1)
    ms.step(np.ones((4, 2)), np.zeros((4, 1)), ps, lr=0.1)
    assert all(v.dtype == np.float32 and v.shape == () for v in ps.values())


# ------------------------------------------------------------------ numerical safety
@pytest.mark.parametrize("act,out,loss", [
    ("sigmoid", "softmax", "cross_entropy"), ("tanh", "softmax", "cross_entropy"),
    ("sigmoid", "sigmoid", "binary_cross_entropy"), ("tanh", "sigmoid", "mse"),
    ("sigmoid", "identity", "mse"), ("softplus", "softmax", "cross_entropy")])
def test_extreme_inputs_stay_finite_without_warnings(act, out, loss):
    m = sb.compile(sb.derive(sb.mlp([2, 4, 3], act, out, loss)))
    params = m.init(seed=0)
    params["W1"] *= 50
    params["W2"] *= 50
    X = np.array([[1000.0, -1000.0], [-1000.0, 1000.0], [1000.0, 1000.0], [-1000.0, -1000.0]])
    Y = np.eye(3)[[0, 1, 2, 0]]
    with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
        value, grads = m.value_and_grad(X, Y, params)
        assert np.isfinite(value)
        assert all(np.all(np.isfinite(g)) for g in grads.values())
        assert np.all(np.isfinite(m.predict(X, params)))
        m.step(X, Y, params, lr=0.1)


def test_extreme_inputs_scalar_sigmoid_bce():
    m = sb.compile(sb.derive(scalar_net("tanh", "binary_cross_entropy")))
    params = {k: np.array(v) for k, v in zip(["w1", "w2", "b", "v", "c"], [1.0, 1.0, 0.0, 1000.0, 0.0])}
    X = np.array([[1000.0, -3.0], [-1000.0, 2.0]])
    Y = np.array([[0.0], [1.0]])        # maximally wrong: the loss is about 1000
    with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
        value, grads = m.value_and_grad(X, Y, params)
    assert value == pytest.approx(1000.0, rel=1e-6)
    assert all(np.isfinite(g) for g in grads.values())


def test_stable_rewrites_are_identities():
    """log σ(u) = −softplus(−u), log(1−σ(u)) = −softplus(u), log cosh, eᵘ/(1+eᵘ) = σ(u), sinh/cosh = tanh,
    log softmax = z − max − log Σ exp(z − max)."""
    from symback.codegen import STABLE_IDENTITIES, STABLE_QUOTIENTS
    u = sp.Symbol("u", real=True)
    pos = sp.Symbol("p", positive=True)
    for lhs, rhs in list(STABLE_IDENTITIES) + [(n / d, q) for n, d, q in STABLE_QUOTIENTS]:
        for branch in (pos, -pos):                       # on each side of 0, |u| is ±u
            diff = sp.expand_log((lhs - rhs).subs(u, branch).rewrite(sp.exp), force=True)
            assert sp.simplify(diff) == 0 or sp.simplify(sp.logcombine(diff, force=True)) == 0
        for val in (-100, -30, -1, sp.Rational(1, 2), 12, 100):     # and numerically, at 100 digits
            assert abs(sp.N((lhs - rhs).subs(u, val), 100)) < 1e-60
    z = sp.symbols("z0:3", real=True)
    mx = sp.Symbol("M", real=True)
    log_softmax = sp.log(sp.exp(z[0]) / sum(sp.exp(v) for v in z))
    shifted = (z[0] - mx) - sp.log(sum(sp.exp(v - mx) for v in z))
    assert sp.simplify(sp.expand_log(log_softmax - shifted, force=True)) == 0


# ------------------------------------------------------------------ generated code
def test_source_reads_like_hand_written_numpy():
    m = sb.compile(sb.derive(sb.mlp([784, 128, 64, 10], "sigmoid", "softmax", "cross_entropy")))
    src = m.source
    step = src[src.index("def _step("):]
    for line in ["Z1 = X @ W1", "Z1 += b1", "W3 -= A2.T @ delta_Z3", "b1 -= ones @ delta_Z1", "W1 -= X.T @ delta_Z1",
                 "np.subtract(1.0, A1)", ".max(axis=1, keepdims=True)"]:
        assert line in step, line
    assert "params[" in step and "exp(-" not in step     # sigmoid via tanh: no overflow
    compile(src, "<generated>", "exec")                    # valid Python
    r = sb.compile(sb.derive(sb.mlp([3, 4, 2], "relu", "identity", "mse"))).source
    assert "np.maximum(Z1, 0)" in r and "(Z1 >= 0)" in r


def test_scalar_source_uses_cse_and_node_names():
    g = scalar_net("sigmoid", "binary_cross_entropy")
    src = sb.compile(sb.derive(g)).source
    assert "def forward(" in src and "def backward(" in src
    assert "yhat = " in src and "delta_" in src
    assert "t0 = " in src                       # common subexpressions named once
    assert "np.log1p(" in src and "np.log(yhat" not in src   # BCE through softplus: no log(0)


def test_compiled_code_is_cached_per_derivation():
    d = sb.derive(sb.mlp([2, 3, 1], "tanh", "identity", "mse"))
    a, b = sb.compile(d), sb.compile(d)
    assert a._step is b._step and a.source is b.source
    assert sb.compile(d, dtype="float32")._step is not a._step


def test_codegen_module_and_export_run_without_sympy_or_symback(tmp_path):
    d = sb.derive(sb.mlp([3, 4, 2], "tanh", "softmax", "cross_entropy"))
    m = sb.compile(d)
    assert sb.codegen_module(d) == m.source
    assert m.export(tmp_path / "net_mod.py") == tmp_path / "net_mod.py"
    params = m.init(seed=3)
    X, Y = layer_data([3, 4, 2], "cross_entropy", 3)
    m.save(params, tmp_path / "p.npz")
    np.savez(tmp_path / "data.npz", X=X, Y=Y)
    expected_loss = m.loss(X, Y, params)
    expected = m.grad(X, Y, params)
    after = {k: v.copy() for k, v in params.items()}
    m.step(X, Y, after, lr=0.5)
    script = textwrap.dedent(f"""
        import sys
        for name in ("sympy", "symback", "mpmath", "jinja2"):
            sys.modules[name] = None          # any import of these now fails
        sys.path.insert(0, {str(tmp_path)!r})
        import numpy as np
        import net_mod
        p = dict(np.load({str(tmp_path / 'p.npz')!r}, allow_pickle=False))
        data = np.load({str(tmp_path / 'data.npz')!r}, allow_pickle=False)
        value, grads = net_mod.value_and_grad(data["X"], data["Y"], p)
        assert set(net_mod.grad(data["X"], data["Y"][:, 0] if data["Y"].shape[1] == 1 else data["Y"], p)) \
            == set(net_mod.PARAMS)                    # grad is a dict, as Model.grad
        np.savez({str(tmp_path / 'out.npz')!r}, value=value, **grads)
        net_mod.step(data["X"], data["Y"], p, 0.5)
        np.savez({str(tmp_path / 'after.npz')!r}, **p)
        assert "sympy" not in [m for m in sys.modules if sys.modules[m] is not None]
    """)
    res = subprocess.run([sys.executable, "-I", "-c", script], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    out = np.load(tmp_path / "out.npz")
    assert float(out["value"]) == expected_loss
    for k in m.params:
        np.testing.assert_array_equal(out[k], expected[k])
    got = np.load(tmp_path / "after.npz")
    for k in m.params:
        np.testing.assert_array_equal(got[k], after[k])


# ------------------------------------------------------------------ init, save, load, errors
def test_init_glorot_and_he():
    m = sb.compile(sb.derive(sb.mlp([50, 40, 30, 2], "relu", "identity", "mse")))
    p = m.init(seed=0)
    assert set(p) == {"W1", "b1", "W2", "b2", "W3", "b3"}
    assert p["W1"].shape == (50, 40) and p["b1"].shape == (1, 40)     # a bias is a 1×n row
    assert np.all(p["b1"] == 0)
    assert np.std(p["W1"]) == pytest.approx(np.sqrt(2 / 50), rel=0.1)        # He before ReLU
    lim = np.sqrt(6 / (30 + 2))
    assert np.max(np.abs(p["W3"])) <= lim                                       # Glorot, identity output
    np.testing.assert_array_equal(m.init(seed=0)["W2"], p["W2"])
    assert not np.array_equal(m.init(seed=1)["W2"], p["W2"])
    ms = sb.compile(sb.derive(scalar_net("tanh", "mse")))
    ps = ms.init(seed=0)
    assert all(isinstance(v, np.ndarray) and v.shape == () for v in ps.values())
    assert len({float(v) for v in ps.values()}) == len(ps)


def test_save_and_load_params(tmp_path):
    m = sb.compile(sb.derive(sb.mlp([3, 4, 2], "tanh", "identity", "mse")))
    p = m.init(seed=0)
    path = m.save(p, tmp_path / "params.npz")
    q = m.load(path)
    assert set(q) == set(p) and all(np.array_equal(p[k], q[k]) for k in p)
    assert [f for f in os.listdir(tmp_path)] == ["params.npz"]     # no temp file left behind
    with pytest.raises(SymbackError):
        m.save(p, tmp_path / "params.pkl")
    bad = dict(p)
    bad["W1"] = np.zeros((2, 2))
    np.savez(tmp_path / "bad.npz", **bad)
    with pytest.raises(DataError, match="W1"):
        m.load(tmp_path / "bad.npz")
    with pytest.raises(DataError):
        m.load(tmp_path / "missing.npz")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object))
    os.replace(tmp_path / "obj.npy", tmp_path / "obj.npz")
    with pytest.raises(DataError):
        m.load(tmp_path / "obj.npz")


def test_errors_name_the_problem():
    m = sb.compile(sb.derive(sb.mlp([3, 4, 2], "tanh", "identity", "mse")))
    p = m.init(seed=0)
    with pytest.raises(DataError, match="columns"):
        m.loss(np.zeros((5, 4)), np.zeros((5, 2)), p)
    with pytest.raises(DataError, match="rows"):
        m.loss(np.zeros((5, 3)), np.zeros((4, 2)), p)
    with pytest.raises(DataError, match="W2"):
        m.loss(np.zeros((5, 3)), np.zeros((5, 2)), {k: v for k, v in p.items() if k != "W2"})
    with pytest.raises(DataError, match="shape"):
        m.loss(np.zeros((5, 3)), np.zeros((5, 2)), {**p, "W1": np.zeros((3, 7))})
    with pytest.raises(DataError, match="numeric"):
        m.predict([["a", "b", "c"]], p)
    with pytest.raises(SymbackError, match="dtype"):
        sb.compile(sb.derive(sb.mlp([3, 4, 2])), dtype="int32")
    with pytest.raises(SymbackError, match="Derivation"):
        sb.compile(sb.mlp([3, 4, 2]))
    with pytest.raises(SymbackError, match=r"\.py"):
        m.export("model.txt")


def test_relu_derivative_at_zero_is_one_as_in_seed_000():
    """ReLU'(0) = 1: with z = 0 exactly the gradient still flows (seed 000's convention)."""
    g = sb.Graph()
    x = g.inputs("x")
    y = g.targets("y")
    w, b = g.params("w b")
    p = g.node("p", sb.relu(w * x + b))
    g.loss((p - y) ** 2)
    m = sb.compile(sb.derive(g))
    grads = m.grad([[0.0]], [[1.0]], {"w": np.array(0.5), "b": np.array(0.0)})
    assert float(grads["b"]) == 2 * (0.0 - 1.0) * 1.0
    net = sb.compile(sb.derive(sb.mlp([1, 2, 1], "relu", "identity", "mse")))
    params = {"W1": np.array([[0.7, 0.2]]), "b1": np.zeros(2), "W2": np.array([[-1.3], [0.5]]),
              "b2": np.array([0.4])}
    g2 = net.grad([[0.0]], [[1.5]], params)          # x = 0: both pre-activations are exactly 0
    np.testing.assert_allclose(g2["b1"], [2 * (0.4 - 1.5) * (-1.3), 2 * (0.4 - 1.5) * 0.5], atol=1e-15)


@pytest.mark.parametrize("act,out,loss", [("relu", "softmax", "cross_entropy"), ("sigmoid", "identity", "mse"),
                                          ("tanh", "sigmoid", "binary_cross_entropy")])
def test_generated_backward_reuses_forward_values_unchanged(act, out, loss):
    m = sb.compile(sb.derive(sb.mlp([3, 4, 5, 2], act, out, loss)))
    ns = m._ns
    params = m.init(seed=0)
    X, Y = layer_data([3, 4, 5, 2], loss, 1)
    values = ns["forward"](X, Y, params)
    # every node by name (an identity output layer's Yhat is its own pre-activation)
    assert {"Z1", "A1", "Z2", "A2", "Yhat", "C", "L"} <= set(values)
    assert ("Z3" in values) == (out != "identity")
    np.testing.assert_allclose(values["Yhat"], m.predict(X, params), rtol=1e-15)
    copies = {k: v.copy() for k, v in values.items()}
    value, grads = ns["backward"](X, Y, params, values)
    assert all(np.array_equal(values[k], copies[k]) for k in values)     # nothing overwritten
    ref_value, ref = m.value_and_grad(X, Y, params)
    assert value == pytest.approx(ref_value, rel=1e-14)
    for p, g in zip(m.params, grads):
        np.testing.assert_allclose(g, ref[p], rtol=1e-13, atol=1e-16)


@pytest.mark.parametrize("sizes", [[1, 1, 1], [2, 1, 3, 1, 2]])
def test_one_unit_wide_layers(sizes):
    """Width-1 layers (where SymPy's matrix calculus writes δ with traces) compile correctly."""
    check_layers(sb.mlp(sizes, "tanh", "identity", "mse"), "tanh", "identity", "mse")


def test_deep_scalar_chain_compiles_and_matches_finite_differences():
    # 400 nested nodes: prediction detection must not unroll the graph recursively.
    g = sb.Graph()
    x = g.inputs("x")
    y = g.targets("y")
    prev = x
    for l in range(200):
        w = g.params(f"w{l}")
        prev = g.node(f"a{l}", sb.tanh(g.node(f"z{l}", w * prev)))
    g.loss((prev - y) ** 2)
    m = sb.compile(sb.derive(g))
    rng = np.random.default_rng(0)
    params = {p: np.asarray(1.0 + 0.1 * rng.normal()) for p in m.init(seed=0)}
    X, Y = np.array([[0.7], [-0.3]]), np.array([[0.2], [0.1]])

    def numpy_loss(ps):      # hand-written forward pass
        a = X[:, 0]
        for l in range(200):
            a = np.tanh(float(ps[f"w{l}"]) * a)
        return np.mean((a - Y[:, 0]) ** 2)
    grads = m.grad(X, Y, params)
    for p in ("w0", "w100", "w199"):
        h = 1e-6
        up, dn = dict(params), dict(params)
        up[p], dn[p] = params[p] + h, params[p] - h
        fd = (numpy_loss(up) - numpy_loss(dn)) / (2 * h)
        assert abs(float(grads[p]) - fd) <= 1e-5 * abs(fd) + 1e-10


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_the_exported_selfcheck_fails_a_wrong_gradient_and_allows_for_rounding(dtype, capsys):
    """`python module.py` compares grad() with central differences of loss().  A gradient off by
    0.1 fails it; the float32 attention example (a loss near 75, where each difference quotient
    is only good to about eps·|L|/h: it failed) passes: the check allows for that rounding."""
    import tomllib
    from pathlib import Path
    from symback.spec import spec_from_dict
    root = Path(__file__).parent.parent / "examples"
    for d in (sb.derive(sb.mlp([3, 4, 2], "tanh", "softmax", "cross_entropy")),
              sb.derive(spec_from_dict(tomllib.loads((root / "attention.toml").read_text())).graph)):
        ns = {"__name__": "exported"}
        exec(compile(sb.compile(d, dtype=dtype, backend="jax").source, "exported", "exec"), ns)
        assert ns["selfcheck"]()
        right = ns["grad"]
        ns["grad"] = lambda X, Y, p: {k: v + 0.1 for k, v in right(X, Y, p).items()}
        assert not ns["selfcheck"]()
    assert "FAILED" in capsys.readouterr().out
