"""Regressions for four faults a graph fuzzer found (stop 29), each network also written by hand
in PyTorch here: torch autograd of that is the oracle (a penalty's gradient in a document is
checked against a central difference of the penalty).

1. A parameter that only a one-sample graph's penalty uses got gradient 0 (and "does not affect
   the loss"): the penalty is kept apart from the cost (``g.penalty``), and what reads "the
   parameters the loss uses" did not look there.
2. An inline softmax or layer_norm inside another expression (tanh(softmax(S) X), softmax(S)
   layer_norm(X)) raised SymPy's SympifyError (``Softmax.rows`` hid MatrixExpr's row count) or
   "write softmax and losses as whole nodes": the graph now gives each its node (``P_``, ``N_``).
3. The VJP of ŷ = (W₁XW₂) ⊙ (W₁XW₃) failed (SymPy's derivative by X was an array expression),
   and torch ``module(X)`` then returned a prediction with no grad_fn, silently.
4. The VJP of tanh(5/2·leaky_relu(swish(X))) W₁ + 1b failed (SymPy fails on f(c·g(X)) inside a
   product, and on f(A ⊙ B ·…) there): the nested argument gets its node (``Z_``).
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import sympy as sp

import symback as sb
from symback.errors import UnusedParameterWarning
from symback.printing import Partial

torch = pytest.importorskip("torch")
jax = pytest.importorskip("jax")
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402

BACKENDS = ("numpy", "jax", "torch")
RTOL = 1e-9
F64 = torch.float64


def _close(a, b, rtol=RTOL):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    scale = max(1.0, float(np.abs(b).max(initial=0.0)))
    assert float(np.abs(a - b).max(initial=0.0)) <= rtol * scale, float(np.abs(a - b).max() / scale)


def _t(a, grad=False):
    return torch.tensor(np.asarray(a, dtype=np.float64), dtype=F64, requires_grad=grad)


# ---------------------------------------------------------------- 1. a parameter only the penalty uses
def penalty_graph():
    g = sb.Graph()
    X = g.inputs("X", shape=(2, 2)); Y = g.targets("Y", shape=(2, 2))
    W1, W2 = g.params("W1 W2", shape=[(2, 2), (2, 2)])
    g.node("Yhat", X @ W1)
    g.loss(sb.mse(g.symbol("Yhat"), Y), penalty=sp.Rational(3, 2) * sb.sumsq(W2))
    return g


@pytest.fixture(scope="module")
def penalized():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedParameterWarning)     # (the next test's)
        d = sb.derive(penalty_graph())
    rng = np.random.default_rng(0)
    params = {"W1": rng.normal(size=(2, 2)), "W2": rng.normal(size=(2, 2))}
    X, Y, G = (rng.normal(size=(4, 2, 2)) for _ in range(3))
    return d, params, X, Y, G


def test_a_parameter_only_the_penalty_uses_affects_the_loss():
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnusedParameterWarning)
        sb.derive(penalty_graph())


def _torch_penalized(params, X, Y):
    t = {k: _t(v, True) for k, v in params.items()}
    L = ((_t(X) @ t["W1"] - _t(Y)) ** 2).sum(dim=(1, 2)).mean() + 1.5 * (t["W2"] ** 2).sum()
    L.backward()
    return L.item(), {k: v.grad.numpy() for k, v in t.items()}


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_parameter_only_the_penalty_uses_gets_its_gradient(penalized, backend):
    d, params, X, Y, _ = penalized
    L_t, G_t = _torch_penalized(params, X, Y)
    m = sb.compile(d, backend=backend, dtype="float64")
    value, grads = m.value_and_grad(X, Y, params)
    assert value == pytest.approx(L_t, rel=RTOL)
    assert m.loss(X, Y, params) == pytest.approx(L_t, rel=RTOL)
    for k in params:
        _close(grads[k], G_t[k])
    assert np.abs(np.asarray(grads["W2"])).max() > 0.1          # 3·W2, not the 0 it was


def test_the_penalty_only_parameter_is_trained(penalized):
    d, params, X, Y, _ = penalized
    _, G_t = _torch_penalized(params, X, Y)
    m = sb.compile(d, backend="numpy", dtype="float64")
    moved = {k: v.copy() for k, v in params.items()}
    m.step(X, Y, moved, lr=0.1)
    for k in params:
        _close(moved[k], params[k] - 0.1 * G_t[k])
    layer = sb.compile(d, backend="torch", dtype="float64").module(params)
    layer(torch.as_tensor(X), torch.as_tensor(Y)).backward()       # the module's batch loss
    for k in params:
        _close(layer.params[k].grad.numpy(), G_t[k])


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_layer_vjp_of_a_penalized_graph_has_no_penalty(penalized, backend):
    d, params, X, _, G = penalized
    t = {k: _t(v, True) for k, v in params.items()}
    x = _t(X, True)
    ((x @ t["W1"]) * _t(G)).sum().backward()
    dX, grads = sb.compile(d, backend=backend, dtype="float64").vjp(X, params, G)
    _close(dX, x.grad.numpy())
    _close(grads["W1"], t["W1"].grad.numpy())
    _close(grads["W2"], np.zeros((2, 2)))       # ⟨G, Ŷ⟩ does not hold the penalty


def test_the_document_shows_and_certifies_the_penalty_gradient(penalized):
    d = penalized[0]
    tex = d.latex(verify=False, cost=False)     # written only after the certificate passed
    assert r"\frac{\partial P}{\partial W_{2}} = 3 W_{2}" in tex
    assert r"\frac{\partial P}{\partial W_{2}} = 3 W_{2}" in d.markdown(verify=False, cost=False)


def test_a_wrong_penalty_gradient_is_refused(monkeypatch):
    from symback.document import context
    from symback.document.certificate import CertificateError, certify
    from symback.engine import Derivation
    d = sb.derive(penalty_graph())
    # planted on the line: ∂P/∂W2 = 2 W2
    ctx = context(d, verify=False, cost=False)
    for info in ctx["loss"]["sympy"]["claims"]:
        if info["chain"][0] == Partial(sp.Symbol("P"), d.graph.symbol("W2")):
            info["chain"] = [info["chain"][0], 2 * d.graph.symbol("W2")]
            break
    else:
        raise AssertionError("the document holds no line ∂P/∂W2")
    with pytest.raises(CertificateError):
        certify(d, ctx)
    # planted in SymPy's derivative itself (the line then agrees with it): the central
    # difference of P refuses it
    monkeypatch.setattr(Derivation, "penalty_gradient", lambda self, p: 2 * self.graph.symbol(p)
                        if p == "W2" else sp.ZeroMatrix(*self.graph.symbol(p).shape))
    with pytest.raises(CertificateError, match="penalty's gradient of W2"):
        certify(d, context(d, verify=False, cost=False))


# ---------------------------------------------------------------- 2. softmax and layer_norm anywhere
T, D = 3, 2


def _ln(x, g, b):
    mu = x.mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(((x - mu) ** 2).mean(-1, keepdim=True) + 1e-5) * g + b


def _sm(s):
    return torch.softmax(s, -1)


def _tT(a):
    return a.transpose(-1, -2)


LN = sb.layer_norm
INLINE = {
    "tanh(softmax(S) X)": (lambda X, W, g, b: sb.tanh(sb.softmax(X @ W @ X.T) @ X),
                           lambda X, W, g, b: torch.tanh(_sm(X @ W @ _tT(X)) @ X)),
    "softmax(S) LN(X)": (lambda X, W, g, b: sb.softmax(X @ W @ X.T) @ LN(X, g, b),
                         lambda X, W, g, b: _sm(X @ W @ _tT(X)) @ _ln(X, g, b)),
    "softmax(X LN(X)^T) LN(X)": (lambda X, W, g, b: sb.softmax(X @ LN(X, g, b).T) @ LN(X, g, b),
                                 lambda X, W, g, b: _sm(X @ _tT(_ln(X, g, b))) @ _ln(X, g, b)),
    "softplus(LN(X) W)": (lambda X, W, g, b: sb.softplus(LN(X, g, b) @ W),
                          lambda X, W, g, b: torch.nn.functional.softplus(_ln(X, g, b) @ W)),
    "(X + LN(X)) W": (lambda X, W, g, b: (X + LN(X, g, b)) @ W,
                      lambda X, W, g, b: (X + _ln(X, g, b)) @ W),
    "LN(LN(X) W)": (lambda X, W, g, b: LN(LN(X, g, b) @ W, g, b),
                    lambda X, W, g, b: _ln(_ln(X, g, b) @ W, g, b)),
    "softmax(softmax(S) X X^T) X": (lambda X, W, g, b: sb.softmax(sb.softmax(X @ W @ X.T) @ X @ X.T) @ X,
                                    lambda X, W, g, b: _sm(_sm(X @ W @ _tT(X)) @ X @ _tT(X)) @ X),
    "tanh(2 softmax_causal(S) X + X)": (lambda X, W, g, b: sb.tanh(2 * sb.softmax(X @ W @ X.T, mask="causal") @ X + X),
                                        lambda X, W, g, b: torch.tanh(2 * _sm((X @ W @ _tT(X)).masked_fill(
                                            torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf"))) @ X + X)),
}


def _inline_values():
    rng = np.random.default_rng(5)
    params = {"W": rng.normal(size=(D, D)), "g": 1 + 0.3 * rng.normal(size=(1, D)), "b": rng.normal(size=(1, D))}
    return params, rng.normal(size=(4, T, D)), rng.normal(size=(4, T, D)), rng.normal(size=(4, T, D))


def _inline_graph(build, in_loss=False):
    g = sb.Graph()
    X = g.inputs("X", shape=(T, D)); Y = g.targets("Y", shape=(T, D))
    W = g.params("W", shape=(D, D)); gm, bt = g.params("g b", shape=[(1, D), (1, D)])
    H = build(X, W, gm, bt)
    g.loss(sb.mse(H if in_loss else g.node("H", H), Y))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedParameterWarning)      # W, or γ and β, in some cases
        return sb.derive(g)


def _torch_inline(build, params, X, Y, G):
    t = {k: _t(v, True) for k, v in params.items()}
    x = _t(X, True)
    out = build(x, t["W"], t["g"], t["b"])
    L = ((out - _t(Y)) ** 2).sum(dim=(1, 2)).mean()
    grads = torch.autograd.grad(L, list(t.values()), retain_graph=True, allow_unused=True)
    vjp = torch.autograd.grad((out * _t(G)).sum(), [x, *t.values()], allow_unused=True)
    zero = lambda v, k: v.numpy() if v is not None else np.zeros_like(params[k])  # noqa: E731
    return L.item(), {k: zero(v, k) for k, v in zip(t, grads)}, vjp[0].numpy(), \
        {k: zero(v, k) for k, v in zip(t, vjp[1:])}


def test_softmax_keeps_matrix_rows():
    """``Softmax.rows`` was a method: a product's shape read it as its row count (SympifyError)."""
    X = sb.Graph().inputs("X", shape=(T, D))
    assert (sb.softmax(X @ X.T) @ X).shape == (T, D)
    assert sb.softmax(X @ X.T).rows == T


@pytest.mark.parametrize("case", sorted(INLINE))
def test_inline_softmax_and_layer_norm_equal_torch(case):
    build, oracle = INLINE[case]
    d = _inline_graph(build)
    params, X, Y, G = _inline_values()
    L_t, grads_t, dX_t, vjp_t = _torch_inline(oracle, params, X, Y, G)
    for backend in BACKENDS:
        m = sb.compile(d, backend=backend, dtype="float64")
        value, grads = m.value_and_grad(X, Y, params)
        assert value == pytest.approx(L_t, rel=RTOL), backend
        dX, vjp = m.vjp(X, params, G)
        _close(dX, dX_t)
        for k in params:
            _close(grads[k], grads_t[k])
            _close(vjp[k], vjp_t[k])


@pytest.mark.parametrize("case", ["softmax(S) LN(X)", "softplus(LN(X) W)"])
def test_inline_pieces_in_the_loss_prediction(case):
    """sb.mse(<an expression with softmax or layer_norm>, Y): the prediction node is split too."""
    build, oracle = INLINE[case]
    d = _inline_graph(build, in_loss=True)
    params, X, Y, G = _inline_values()
    L_t, grads_t, _, _ = _torch_inline(oracle, params, X, Y, G)
    value, grads = sb.compile(d, backend="numpy").value_and_grad(X, Y, params)
    assert value == pytest.approx(L_t, rel=RTOL)
    for k in params:
        _close(grads[k], grads_t[k])


def test_a_named_layer_norm_is_written_out_as_before():
    """A node defined by layer_norm holds norm(H) ⊙ 𝟏γ + 𝟏β itself (no N_ node in between)."""
    g = sb.Graph()
    X = g.inputs("X", shape=(T, D)); gm, bt = g.params("g b", shape=[(1, D), (1, D)])
    N = g.node("N", sb.layer_norm(X, gm, bt))
    assert g.node_names == ["Hhat_N", "N"]
    assert isinstance(g.expr("N"), sp.MatAdd) and g.expr("N").has(g.symbol("Hhat_N"))
    g.node("H", 2 * sb.layer_norm(N, gm, bt))
    assert g.node_names == ["Hhat_N", "N", "Hhat_H", "N_H", "H"]


# ---------------------------------------------------------------- 3. (W1 X W2) ⊙ (W1 X W3) as a layer
def hadamard_graph():
    g = sb.Graph()
    X = g.inputs("X", shape=(3, 2))
    W1, W2, W3 = g.params("W1 W2 W3", shape=[(4, 3), (2, 2), (2, 2)])
    g.node("Yhat", sb.hadamard(W1 @ X @ W2, W1 @ X @ W3))
    g.loss(sb.half_mse(g.symbol("Yhat"), g.targets("Y", shape=(4, 2))))
    return sb.derive(g)


def _hadamard_values():
    rng = np.random.default_rng(0)
    params = {"W1": rng.normal(size=(4, 3)), "W2": rng.normal(size=(2, 2)), "W3": rng.normal(size=(2, 2))}
    return params, rng.normal(size=(2, 3, 2)), rng.normal(size=(2, 4, 2))


def _torch_hadamard(t, x):
    return (t["W1"] @ x @ t["W2"]) * (t["W1"] @ x @ t["W3"])


def _torch_hadamard_vjp(params, X, G):
    t = {k: _t(v, True) for k, v in params.items()}
    x = _t(X, True)
    (_torch_hadamard(t, x) * _t(G)).sum().backward()
    return x.grad.numpy(), {k: v.grad.numpy() for k, v in t.items()}


@pytest.mark.parametrize("backend", BACKENDS)
def test_hadamard_of_products_vjp_equals_torch(backend):
    params, X, G = _hadamard_values()
    dX_t, grads_t = _torch_hadamard_vjp(params, X, G)
    dX, grads = sb.compile(hadamard_graph(), backend=backend, dtype="float64").vjp(X, params, G)
    _close(dX, dX_t)
    for k in params:
        _close(grads[k], grads_t[k])


def test_hadamard_of_products_as_torch_module_and_jax_function():
    d = hadamard_graph()
    params, X, G = _hadamard_values()
    dX_t, grads_t = _torch_hadamard_vjp(params, X, G)
    layer = sb.compile(d, backend="torch", dtype="float64").module(params)
    x = _t(X, True)
    out = layer(x)
    assert out.grad_fn is not None          # symback's backward, not a detached prediction
    (out * _t(G)).sum().backward()
    _close(x.grad.numpy(), dX_t)
    for k in params:
        _close(layer.params[k].grad.numpy(), grads_t[k])
    f = sb.compile(d, backend="jax", dtype="float64").function()
    gp, gx = jax.grad(lambda p, x: jnp.sum(f(p, x) * G), argnums=(0, 1))(
        {k: jnp.asarray(v) for k, v in params.items()}, jnp.asarray(X))
    _close(gx, dX_t)
    for k in params:
        _close(gp[k], grads_t[k])


def test_sympy_array_derivative_is_written_as_matrices():
    """SymPy's ∂ tr(Aᵀ((W₁XW₂) ⊙ (W₁XW₃)))/∂X is an ArrayAdd; as_matrix gives the matrix product,
    checked here against explicit entries."""
    from symback.vjp import as_matrix
    W1, X, W2, W3, A = (sp.MatrixSymbol(n, *s) for n, s in
                        (("W1", (2, 3)), ("X", (3, 2)), ("W2", (2, 2)), ("W3", (2, 2)), ("A", (2, 2))))
    e = sp.Trace(A.T * sp.HadamardProduct(W1 * X * W2, W1 * X * W3))
    raw = e.diff(X)
    assert not isinstance(raw, sp.MatrixExpr)
    got = as_matrix(raw, X)
    rng = np.random.default_rng(1)
    at = {s: sp.ImmutableMatrix(rng.normal(size=s.shape)) for s in (W1, X, W2, W3, A)}
    xs = sp.ImmutableMatrix(3, 2, lambda i, j: sp.Symbol(f"x{i}{j}"))
    value = e.xreplace({**{k: v for k, v in at.items() if k != X}, X: xs}).doit()
    want = xs.applyfunc(lambda x: sp.diff(value, x)).xreplace(dict(zip(xs, at[X])))
    _close(np.array(got.xreplace(at).doit().tolist(), dtype=float), np.array(want.tolist(), dtype=float))


def test_a_module_without_vjp_refuses_to_be_differentiated():
    """Where the graph has no VJP, module(X) under autograd raises; it predicts under no_grad."""
    g = sb.Graph()
    X = g.inputs("X", shape=(sb.BATCH, 2)); W = g.params("W", shape=(1, 2))
    g.node("A", X[:, 0:1] @ W + X)           # X used whole and sliced: no layer VJP
    g.loss(sb.mse(g.symbol("A"), g.targets("Y", shape=(sb.BATCH, 2))))
    m = sb.compile(sb.derive(g), backend="torch", dtype="float64")
    assert m._layer_ns()["VJP_ERROR"]
    layer = m.module({"W": np.ones((1, 2))})
    X = np.random.default_rng(0).normal(size=(3, 2))
    with pytest.raises(sb.SymbackError, match="cannot be used as a layer"):
        layer(_t(X))
    with torch.no_grad():
        _close(layer(_t(X)).numpy(), X[:, :1] @ np.ones((1, 2)) + X)


# ---------------------------------------------------------------- 4. nested activations with a scalar
NESTED = {
    "tanh(5/2 leaky_relu(swish(X))) W1 + 1 b": (
        lambda X, W1, V, b: sb.tanh(sp.Rational(5, 2) * sb.leaky_relu(sb.swish(X))) @ W1 + sb.ones(sb.BATCH) @ b,
        lambda x, W1, V, b: torch.tanh(2.5 * torch.nn.functional.leaky_relu(x * torch.sigmoid(x), 0.01)) @ W1 + b),
    "tanh(tanh(X V) V) W1 + 1 b": (
        lambda X, W1, V, b: sb.tanh(sb.tanh(X @ V) @ V) @ W1 + sb.ones(sb.BATCH) @ b,
        lambda x, W1, V, b: torch.tanh(torch.tanh(x @ V) @ V) @ W1 + b),
    "tanh((X ⊙ X) V) W1 + 1 b": (
        lambda X, W1, V, b: sb.tanh(sb.hadamard(X, X) @ V) @ W1 + sb.ones(sb.BATCH) @ b,
        lambda x, W1, V, b: torch.tanh((x * x) @ V) @ W1 + b),
    "tanh(swish(X) V) W1 + 1 b": (
        lambda X, W1, V, b: sb.tanh(sb.swish(X) @ V) @ W1 + sb.ones(sb.BATCH) @ b,
        lambda x, W1, V, b: torch.tanh((x * torch.sigmoid(x)) @ V) @ W1 + b),
}


@pytest.mark.parametrize("case", sorted(NESTED))
def test_nested_activations_vjp_equals_torch(case):
    build, oracle = NESTED[case]
    g = sb.Graph()
    X = g.inputs("X", shape=(sb.BATCH, 2))
    W1, V, b = g.params("W1 V b", shape=[(2, 3), (2, 2), (1, 3)])
    g.node("Yhat", build(X, W1, V, b))
    g.loss(sb.mse(g.symbol("Yhat"), g.targets("Y", shape=(sb.BATCH, 3))))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedParameterWarning)      # V, in the first case
        d = sb.derive(g)
    rng = np.random.default_rng(0)
    params = {"W1": rng.normal(size=(2, 3)), "V": rng.normal(size=(2, 2)), "b": rng.normal(size=(1, 3))}
    X, Y, G = rng.normal(size=(4, 2)), rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    t = {k: _t(v, True) for k, v in params.items()}
    x = _t(X, True)
    out = oracle(x, t["W1"], t["V"], t["b"])
    L = ((out - _t(Y)) ** 2).sum(dim=1).mean()
    grads_t = torch.autograd.grad(L, list(t.values()), retain_graph=True, allow_unused=True)
    vjp_t = torch.autograd.grad((out * _t(G)).sum(), [x, *t.values()], allow_unused=True)
    zero = lambda v, k: v.numpy() if v is not None else np.zeros_like(params[k])  # noqa: E731
    for backend in BACKENDS:
        m = sb.compile(d, backend=backend, dtype="float64")
        value, grads = m.value_and_grad(X, Y, params)
        assert value == pytest.approx(L.item(), rel=RTOL), backend
        dX, vjp = m.vjp(X, params, G)
        _close(dX, vjp_t[0].numpy())
        for i, k in enumerate(params):
            _close(grads[k], zero(grads_t[i], k))
            _close(vjp[k], zero(vjp_t[i + 1], k))
