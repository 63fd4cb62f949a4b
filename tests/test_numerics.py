"""Numerics at the edges: inputs and predictions at ±1000 (float64) and ±100 (float32).

Every registered activation × loss, as a scalar graph, as an ``sb.mlp``
network and, for log(1 + eᶻ) and log cosh written by hand, as a spec file.
The compiled loss and gradient must be finite without a floating-point
warning (``np.errstate`` raises on overflow, invalid and divide) and must
equal a high-precision oracle, mpmath: for scalar graphs SymPy's expression
and ``sympy.diff`` at 600 digits (so that e^−1000 ≈ 10^−435 does not vanish
against 1); for networks a forward pass written here and central
differences, at 60 digits plus what a cross-entropy's logits need.
"""
from __future__ import annotations

import mpmath
import numpy as np
import pytest
import sympy as sp

import symback as sb
from conftest import MpOracle, slow, to_elementary

EDGE = {"float64": 1000.0, "float32": 100.0}       # |u| where exp/cosh overflow in that dtype
TOL = {"float64": 1e-9, "float32": 2e-5}            # relative to the largest oracle value
DPS = 600                                          # e^−1000 ≈ 10^−435 against 1
ACTS = ["identity", "sigmoid", "tanh", "relu", "leaky_relu", "softplus", "swish"]
HEADS = [(a, l) for a in ACTS for l in ("mse", "half_mse", "logcosh", "huber")] + [
    ("sigmoid", "binary_cross_entropy")]
RAISE = dict(over="raise", invalid="raise", divide="raise", under="ignore")   # underflow to 0 is right

# Each loss's definition, written here for the oracle (per output, summed over outputs).
LOSS = {
    "mse": lambda p, t: (p - t) ** 2,
    "half_mse": lambda p, t: (p - t) ** 2 / 2,
    "logcosh": lambda p, t: sp.log(sp.cosh(p - t)),
    "huber": lambda p, t: sp.Piecewise(((p - t) ** 2 / 2, sp.Abs(p - t) <= 1), (sp.Abs(p - t) - sp.S.Half, True)),
    "binary_cross_entropy": lambda p, t: -(t * sp.log(p) + (1 - t) * sp.log(1 - p)),
}


def edge_rows(e):
    """Inputs: rows at ±e and ±e/2, and one ordinary row (0.5), so that the gradient
    has a part of ordinary size: the derivative of a saturated σ or tanh, computed
    as σ(1 − σ) or 1 − tanh² from the forward value, is exactly 0 below eps."""
    return np.array([[e], [-e], [e / 2], [-e / 2], [0.5]])


def targets(loss, e):
    """Targets for edge_rows(e): maximally wrong at the edges, within (0, 1) for a cross-entropy."""
    if loss == "binary_cross_entropy":
        return np.array([[0.25], [0.75], [0.75], [0.25], [0.4]])
    return np.array([[-e], [e], [e], [-e], [0.3]])


def assert_close(got, want, scale, dtype, what):
    """|got − want| ≤ TOL·(|want| + scale), want an mpmath number, got finite."""
    assert np.isfinite(got), what
    err = abs(mpmath.mpf(float(got)) - want)
    assert err <= TOL[dtype] * (abs(want) + scale), (what, float(got), want)


# ---------------------------------------------------------------- scalar graphs
def edge_graph(act, loss):
    """ŷ = act(w x + b), C = loss(ŷ, y); and C written with the oracle's definitions."""
    g = sb.Graph()
    x = g.inputs("x")
    y = g.targets("y")
    w, b = g.params("w b")
    z = g.node("z", w * x + b)
    yhat = g.node("yhat", sb.get_activation(act)(z))
    g.loss(sb.get_loss(loss)(yhat, y))
    real = {s: sp.Symbol(s.name, real=True) for s in (x, y, w, b)}
    oracle = LOSS[loss](to_elementary(sb.get_activation(act)(w * x + b)), y).xreplace(real)
    return g, oracle


def check_scalar_edge(g, oracle_expr, dtype, X, Y, params):
    """Compiled loss and gradient: finite, no warning, equal to the mpmath oracle."""
    m = sb.compile(sb.derive(g), dtype=dtype)
    params = {p: np.array(v, dtype=dtype) for p, v in params.items()}
    with np.errstate(**RAISE):
        value, grads = m.value_and_grad(X, Y, params)
        for p, v in grads.items():
            assert v.dtype == np.dtype(dtype) and np.all(np.isfinite(v)), p
    with mpmath.workdps(DPS):
        oracle = MpOracle(g, oracle_expr)
        Xd, Yd = np.asarray(X, dtype=dtype), np.asarray(Y, dtype=dtype)
        want_loss = oracle.loss(Xd, Yd, params)
        want = oracle.grad(Xd, Yd, params)
        scale = max(abs(v) for v in want.values())
        assert_close(value, want_loss, 0, dtype, "loss")
        for p in g.param_names:
            assert_close(grads[p], want[p], scale, dtype, p)


@pytest.mark.parametrize("dtype", sorted(EDGE))
@pytest.mark.parametrize("act,loss", HEADS)
def test_scalar_graph_at_the_edges(act, loss, dtype):
    """ŷ = act(w x + b) at x = ±edge: every registered activation × loss, float64 and float32."""
    e = EDGE[dtype]
    g, oracle = edge_graph(act, loss)
    check_scalar_edge(g, oracle, dtype, edge_rows(e), targets(loss, e), {"w": 1.0, "b": 0.5})


SPEC = """
inputs  = ["x"]
targets = ["y"]
params  = ["w", "b"]

[nodes]
z = "w*x + b"

[loss]
cost = "log(1 + exp(z)) + log(1 + exp(-y*z)) + log(cosh(z - y))"
"""


@pytest.mark.parametrize("dtype", sorted(EDGE))
def test_hand_written_softplus_and_logcosh_in_a_spec(tmp_path, dtype):
    """log(1 + eᶻ) and log cosh written by a user: forward and backward stable at ±edge.

    The derivative exp(z)/(1 + exp(z)) is ∞/∞ past z ≈ 710 (88 in float32),
    sinh/cosh likewise, unless rewritten to σ(z) and tanh.
    """
    path = tmp_path / "user.toml"
    path.write_text(SPEC)
    g = sb.load_spec(path)
    x, y, w, b = (sp.Symbol(n, real=True) for n in "xywb")
    z = w * x + b
    oracle = sp.log(1 + sp.exp(z)) + sp.log(1 + sp.exp(-y * z)) + sp.log(sp.cosh(z - y))
    e = EDGE[dtype]
    X = np.array([[e], [-e], [e], [-e], [0.5]])
    Y = np.array([[-1.0], [1.0], [1.0], [-1.0], [0.3]])
    check_scalar_edge(g, oracle, dtype, X, Y, {"w": 1.0, "b": 0.5})


# ---------------------------------------------------------------- layer networks
MP_ACT = {   # each activation's definition, for mpmath
    "identity": lambda z: z,
    "sigmoid": lambda z: 1 / (1 + mpmath.exp(-z)),
    "tanh": mpmath.tanh,
    "relu": lambda z: z if z >= 0 else 0 * z,
    "leaky_relu": lambda z: z if z >= 0 else z / 100,
    "softplus": lambda z: mpmath.log(1 + mpmath.exp(z)),
    "swish": lambda z: z / (1 + mpmath.exp(-z)),
}
MP_LOSS = {name: sp.lambdify(sp.symbols("p t"), f(*sp.symbols("p t", real=True)), "mpmath")
           for name, f in LOSS.items()}


def mpf(v):
    """v as an mpmath number (exactly: a float32 or float64 is a binary fraction)."""
    return v if isinstance(v, mpmath.mpf) else mpmath.mpf(float(v))


def mp_loss(params, names, X, Y, act, out, loss):
    """The batch loss (mean) of an MLP at mpmath precision, forward pass written here."""
    A = [[mpf(v) for v in row] for row in X]
    L = len(names) // 2
    for l in range(1, L + 1):
        W, b = params[f"W{l}"], np.reshape(params[f"b{l}"], (1, -1))[0]
        Z = [[sum(a[i] * mpf(W[i, j]) for i in range(len(a))) + mpf(b[j])
              for j in range(W.shape[1])] for a in A]
        A = [[MP_ACT[act](v) for v in row] for row in Z] if l < L else Z
    total = mpmath.mpf(0)
    for zrow, yrow in zip(A, Y):
        yrow = [mpf(v) for v in yrow]
        if loss == "cross_entropy":
            lse = mpmath.log(sum(mpmath.exp(v) for v in zrow))
            total -= sum(t * (v - lse) for v, t in zip(zrow, yrow))
        else:
            total += sum(MP_LOSS[loss](MP_ACT[out](v), t) for v, t in zip(zrow, yrow))
    return total / len(X)


def mp_grad(params, names, X, Y, act, out, loss, h=mpmath.mpf("1e-20")):
    """∂L/∂p for every entry by central differences at mpmath precision."""
    grads = {}
    for p in names:
        g = np.empty(np.shape(params[p]), dtype=object)
        for i in np.ndindex(g.shape):
            vals = []
            for step in (h, -h):
                moved = {k: np.array(v, dtype=object) for k, v in params.items()}
                moved[p][i] = mpf(params[p][i]) + step
                vals.append(mp_loss(moved, names, X, Y, act, out, loss))
            g[i] = (vals[0] - vals[1]) / (2 * h)
        grads[p] = g
    return grads


#: every activation × head; float64 on all of them, float32 in a normal run on every third pair
#: of each activation's six (each activation twice, each kind of head at least twice), all in slow mode
EDGE_CASES = [(a, h) for a in ACTS for h in HEADS + [("softmax", "cross_entropy")]
              if h[0] == a or "cross_entropy" in h[1]]


@pytest.mark.parametrize("act, head, dtype", [
    (pytest.param if dtype == "float64" or i % 6 % 3 == ACTS.index(act) % 3 else slow)(
        act, head, dtype, id=f"{act}-head{i}-{dtype}")
    for i, (act, head) in enumerate(EDGE_CASES) for dtype in sorted(EDGE)])
def test_mlp_at_the_edges(act, head, dtype):
    """A 2-3-K network at inputs ±edge: its logits are of order ±edge after an unbounded
    hidden activation (identity, ReLU, softplus, ...), saturated after σ or tanh."""
    out, loss = head
    K = 1 if loss == "binary_cross_entropy" else 2
    m = sb.compile(sb.derive(sb.mlp([2, 3, K], activation=act, output=out, loss=loss)), dtype=dtype)
    e = EDGE[dtype]
    rng = np.random.default_rng(3)
    params = {k: v + rng.normal(scale=0.5, size=np.shape(v))       # biases off 0: no symmetry
              for k, v in m.init(seed=3).items()}
    X = np.array([[e, -e], [-e, e], [e, e], [-e, -e], [0.5, -0.25]])     # and an ordinary row
    hidden = np.vectorize(lambda v: float(MP_ACT[act](mpf(v))))(
        X @ params["W1"] + np.reshape(params["b1"], (1, -1)))
    if act not in ("sigmoid", "tanh"):    # the largest logit at ±edge exactly
        params["W2"] *= e / np.max(np.abs(hidden @ params["W2"]))
    params = {k: v.astype(dtype) for k, v in params.items()}
    Y = (np.eye(K)[[0, 1, 1, 0, 1]] if loss == "cross_entropy"
         else np.array([[0.25], [0.75], [0.75], [0.25], [0.4]]) if loss == "binary_cross_entropy"
         else np.array([[e, -e], [-e, e], [e, e], [-e, -e], [0.3, -0.2]]))
    with np.errstate(**RAISE):
        value, grads = m.value_and_grad(X, Y, params)
        assert np.all(np.isfinite(m.predict(X, params)))
    Xd, Yd = X.astype(dtype), Y.astype(dtype)
    # 60 digits, and for a cross-entropy enough more that 1 − σ(z) = σ(−z) does not vanish
    dps = 60 + (int(np.max(np.abs(hidden @ params["W2"])) / np.log(10)) if loss == "binary_cross_entropy" else 0)
    with mpmath.workdps(dps):
        want_loss = mp_loss(params, m.params, Xd, Yd, act, out, loss)
        want = mp_grad(params, m.params, Xd, Yd, act, out, loss)
        scale = max(abs(v) for g in want.values() for v in g.flat)
        assert_close(value, want_loss, 0, dtype, "loss")
        for p in m.params:
            assert grads[p].dtype == np.dtype(dtype)
            for i in np.ndindex(grads[p].shape):
                assert_close(grads[p][i], want[p][i], scale, dtype, (p, i))


# ---------------------------------------------------------------- σ's tails
TAIL_Z = np.array([[-40.0], [-25.0], [-3.0], [0.0], [3.0], [40.0]])


@pytest.mark.parametrize("backend", ["numpy", "jax", "torch"])
def test_sigmoid_tails_to_the_last_digits(backend):
    """σ(z) and x·σ′(wx), sample by sample, relative 1e-13 to mpmath, out to z = ±40: σ(−40) =
    4.2e−18 is not 0 (issue 20: NumPy once printed σ as (1 + tanh(z/2))/2, whose 1 + tanh cancels)."""
    if backend != "numpy":
        pytest.importorskip(backend)
    g = sb.Graph()
    x, y = g.inputs("x"), g.targets("y")
    w = g.params("w")
    yhat = g.node("yhat", sb.sigmoid(w * x))
    g.loss(yhat * y)
    m = sb.compile(sb.derive(g), backend=backend, dtype="float64")
    params = {"w": np.array(1.0)}
    with np.errstate(**RAISE), mpmath.workdps(50):
        pred = np.asarray(m.predict(TAIL_Z, params), dtype=float).ravel()
        for z, got in zip(TAIL_Z.ravel(), pred):
            s = 1 / (1 + mpmath.exp(-mpmath.mpf(z)))
            assert abs(got - s) <= 1e-13 * s, (z, got, s)
            _, grads = m.value_and_grad(np.array([[z]]), np.ones((1, 1)), params)   # one sample: x σ′(x)
            got, want = float(np.asarray(grads["w"])), z * s * (1 - s)
            # σ′ = σ(1 − σ) from σ's value, as torch and JAX compute it: relative where σ is
            # small, absolute (to eps) where 1 − σ rounds to 0 (z = 40)
            assert abs(got - want) <= 1e-13 * abs(want) + (1e-16 * abs(z) if z > 30 else 0), (z, got, want)
