"""Derived layers inside other models: ``m.vjp``, torch ``m.module()(X)``, JAX ``m.function()``.

Oracles: each network's prediction Ŷ written again here with torch (and
jax.numpy) primitives, differentiated by ``torch.autograd`` (and ``jax.vjp``
/ ``jax.grad``); a plain-torch model with the same weights for the layer
inside ``nn.Sequential``; ``torch.autograd.gradcheck`` (finite differences);
SymPy for the expanded gradient and softmax's closed-form VJP.
"""
from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest
import sympy as sp

import symback as sb
from symback.errors import DataError, SymbackError
from conftest import slow

torch = pytest.importorskip("torch")
jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")

REL = 1e-8
BACKENDS = ("numpy", "jax", "torch")


def close(got, want, rel=REL):
    """max |got − want| ≤ rel · max(1, max |want|), after converting both to float64 NumPy."""
    got = np.asarray(got.detach() if isinstance(got, torch.Tensor) else got, dtype=np.float64)
    want = np.asarray(want.detach() if isinstance(want, torch.Tensor) else want, dtype=np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    scale = max(1.0, float(np.abs(want).max()) if want.size else 1.0)
    assert float(np.abs(got - want).max()) <= rel * scale, float(np.abs(got - want).max())


# ------------------------------------------------------------------ the networks, written again
def _act(name, z, xp):
    rowsum = (lambda a: a.sum(1, keepdim=True)) if xp is torch else (lambda a: a.sum(1, keepdims=True))
    return {"identity": lambda: z, "tanh": lambda: xp.tanh(z), "sigmoid": lambda: 1 / (1 + xp.exp(-z)),
            "relu": lambda: xp.where(z >= 0, z, 0 * z),
            "softmax": lambda: xp.exp(z - z.max()) / rowsum(xp.exp(z - z.max()))}[name]()


def mlp(sizes, hidden, output, loss):
    """sb.mlp and its prediction: A_l = f(A_{l−1} W_l + b_l)."""
    d = sb.derive(sb.mlp(sizes, activation=hidden, output=output, loss=loss))
    layers = len(sizes) - 1

    def predict(p, X, xp):
        A = X
        for l in range(1, layers + 1):
            A = _act(hidden if l < layers else output, A @ p[f"W{l}"] + p[f"b{l}"], xp)
        return A
    return d, predict


def residual():
    """Dense(4, tanh), Residual(Dense(4, tanh)), Dense(3, softmax)."""
    d = sb.derive(sb.Sequential(sb.Dense(4, "tanh"), sb.Residual(sb.Dense(4, "tanh")), sb.Dense(3, "softmax"),
                                inputs=3, loss="cross_entropy"))

    def predict(p, X, xp):
        A = xp.tanh(X @ p["W1"] + p["b1"])
        H = A + xp.tanh(A @ p["W2"] + p["b2"])
        return _act("softmax", H @ p["W3"] + p["b3"], xp)
    return d, predict


def scalar():
    """A scalar graph: a1 = σ(w1 x1 x2), a2 = tanh(w2 x2 + x1), outputs yhat = b + a1 a2 and q = w1 x2²."""
    g = sb.Graph()
    x1, x2 = g.inputs("x1 x2")
    y, t = g.targets("y t")
    w1, w2, b = g.params("w1 w2 b")
    a1 = g.node("a_1", sb.sigmoid(w1 * x1 * x2))
    a2 = g.node("a_2", sb.tanh(w2 * x2 + x1))
    yhat = g.node("yhat", b + a1 * a2)
    q = g.node("q", w1 * x2 ** 2)
    g.loss((yhat - y) ** 2 + (q - t) ** 2)

    def predict(p, X, xp):
        x1, x2 = X[:, 0], X[:, 1]
        a1 = 1 / (1 + xp.exp(-p["w1"] * x1 * x2))
        a2 = xp.tanh(p["w2"] * x2 + x1)
        return xp.stack([p["b"] + a1 * a2, p["w1"] * x2 ** 2], 1)
    return sb.derive(g), predict


def rnn():
    """sb.rnn: 2 inputs × 3 steps, 3 hidden (tanh), 2 outputs (sigmoid)."""
    d = sb.derive(sb.rnn(inputs=2, hidden=3, outputs=2, steps=3, activation="tanh", output="sigmoid",
                         loss="binary_cross_entropy"))

    def predict(p, X, xp):
        h = None
        for s in range(3):
            z = X[:, 2 * s:2 * s + 2] @ p["Wx"] + p["bh"]
            h = xp.tanh(z if h is None else z + h @ p["Wh"])
        return _act("sigmoid", h @ p["Wy"] + p["by"], xp)
    return d, predict


NETS = {
    "mlp-tanh-identity": lambda: mlp([3, 5, 2], "tanh", "identity", "mse"),
    "mlp-sigmoid-sigmoid": lambda: mlp([3, 4, 2], "sigmoid", "sigmoid", "binary_cross_entropy"),
    "mlp-relu-softmax": lambda: mlp([4, 5, 4, 3], "relu", "softmax", "cross_entropy"),
    "residual": residual, "scalar": scalar, "rnn": rnn}
_BUILT = {}


def net(name):
    """(derivation, prediction written here, input width, output width), built once."""
    if name not in _BUILT:
        d, predict = NETS[name]()
        m = sb.compile(d)
        _BUILT[name] = (d, predict, m.n_inputs, m.n_outputs)
    return _BUILT[name]


def point(d, n_in, n_out, n=6, seed=0):
    """Parameters (biases not zero), X and G, all float64 NumPy."""
    rng = np.random.default_rng(seed)
    params = {k: np.asarray(v + rng.normal(scale=0.3, size=np.shape(v)), dtype=np.float64)
              for k, v in sb.compile(d).init(seed).items()}
    return params, rng.normal(size=(n, n_in)), rng.normal(size=(n, n_out))


def torch_vjp(predict, params, X, G):
    """(∂⟨G, Ŷ⟩/∂X, {p: ∂⟨G, Ŷ⟩/∂p}) by torch.autograd on the prediction written here."""
    tp = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in params.items()}
    tX = torch.tensor(X, dtype=torch.float64, requires_grad=True)
    (predict(tp, tX, torch) * torch.tensor(G, dtype=torch.float64)).sum().backward()
    return tX.grad.numpy(), {k: v.grad.numpy() for k, v in tp.items()}


# ------------------------------------------------------------------ m.vjp on every backend
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(NETS))
def test_vjp_equals_torch_autograd(name, backend):
    d, predict, n_in, n_out = net(name)
    params, X, G = point(d, n_in, n_out)
    m = sb.compile(d, backend=backend, dtype="float64")
    native = params if backend == "numpy" else {k: m._ns["_asarray"](v) for k, v in params.items()}
    dX, grads = m.vjp(X, native, G)
    want_X, want = torch_vjp(predict, params, X, G)
    close(dX, want_X)
    assert set(grads) == set(params)
    for k in params:
        close(grads[k], want[k])
    close(m.predict(X, native), predict(params, X, np))


def test_vjp_jax_equals_jax_vjp():
    d, predict, n_in, n_out = net("residual")
    params, X, G = point(d, n_in, n_out, seed=4)
    m = sb.compile(d, backend="jax", dtype="float64")
    jp = {k: jnp.asarray(v) for k, v in params.items()}
    _, pull = jax.vjp(lambda p, x: predict(p, x, jnp), jp, jnp.asarray(X))
    want_p, want_X = pull(jnp.asarray(G))
    dX, grads = m.vjp(X, jp, G)
    close(dX, want_X)
    for k in params:
        close(grads[k], want_p[k])


def test_vjp_bad_input_is_a_clear_error():
    d, _, n_in, n_out = net("mlp-tanh-identity")
    params, X, G = point(d, n_in, n_out)
    m = sb.compile(d)
    with pytest.raises(DataError, match="G has 3 columns but the network has 2 outputs"):
        m.vjp(X, params, np.ones((X.shape[0], 3)))
    with pytest.raises(DataError, match="rows"):
        m.vjp(X, params, G[:2])
    with pytest.raises(DataError, match="no entry 'b1'"):
        m.vjp(X, {"W1": params["W1"]}, G)


def test_graph_without_prediction_has_no_vjp_but_trains():
    g = sb.Graph()
    x = g.inputs("x")
    y = g.targets("y")
    w = g.params("w")
    g.loss((w * x - y) ** 2)            # no node: nothing is a prediction
    m = sb.compile(sb.derive(g))
    with pytest.raises(SymbackError, match="no prediction node"):
        m.vjp(np.ones((2, 1)), {"w": np.array(0.5)}, np.ones((2, 1)))
    with pytest.raises(SymbackError, match="no prediction node"):
        sb.compile(sb.derive(g), backend="jax").function()
    assert m.grad(np.ones((2, 1)), np.zeros((2, 1)), {"w": np.array(0.5)})["w"] == pytest.approx(1.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_exported_module_has_vjp(backend, tmp_path):
    d, predict, n_in, n_out = net("mlp-relu-softmax")
    params, X, G = point(d, n_in, n_out, seed=2)
    path = sb.compile(d, backend=backend, dtype="float64").export(tmp_path / f"net_{backend}.py")
    spec = importlib.util.spec_from_file_location(f"net_{backend}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    dX, grads = mod.vjp(X, {k: mod._asarray(v) for k, v in params.items()}, G)
    want_X, want = torch_vjp(predict, params, X, G)
    close(dX, want_X)
    close(grads["W1"], want["W1"])
    sys.modules.pop(f"net_{backend}", None)


# ------------------------------------------------------------------ softmax's closed-form VJP
def test_softmax_vjp_closed_form_is_the_engines_and_proved():
    from symback.vjp import prove_softmax_vjp, softmax_vjp
    assert prove_softmax_vjp()
    Z = sp.MatrixSymbol("Z", 2, 3)
    D, P = sp.MatrixSymbol("D", 2, 3), sp.MatrixSymbol("P", 2, 3)
    form = softmax_vjp(sb.softmax(Z), D, P)
    # the closed form, entry by entry, against SymPy's derivative of softmax's definition
    z = sp.Matrix(2, 3, lambda i, j: sp.Symbol(f"z{i}{j}", real=True))
    d = sp.Matrix(2, 3, lambda i, j: sp.Symbol(f"d{i}{j}", real=True))
    p = sp.Matrix(2, 3, lambda i, j: sp.exp(z[i, j]) / sum(sp.exp(z[i, k]) for k in range(3)))
    got = sp.Matrix(form.subs({D: d, P: p}).doit())
    for i in range(2):
        for j in range(3):
            want = sum(d[i, k] * sp.diff(p[i, k], z[i, j]) for k in range(3))
            assert sp.simplify(got[i, j] - want) == 0


# ------------------------------------------------------------------ torch: a layer inside a model
def _models(name, seed=0):
    """(nn.Sequential(Linear, symback layer, Linear), the same in plain torch, the symback module)."""
    d, predict, n_in, n_out = net(name)
    params, _, _ = point(d, n_in, n_out, seed=seed)
    m = sb.compile(d, backend="torch")
    torch.manual_seed(seed)
    pre, post = torch.nn.Linear(5, n_in).double(), torch.nn.Linear(n_out, 2).double()
    layer = m.module(params)
    ours = torch.nn.Sequential(pre, layer, post)

    class Plain(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.pre, self.post = torch.nn.Linear(5, n_in).double(), torch.nn.Linear(n_out, 2).double()
            self.pre.load_state_dict(pre.state_dict())
            self.post.load_state_dict(post.state_dict())
            self.p = torch.nn.ParameterDict({k: torch.nn.Parameter(torch.tensor(v)) for k, v in params.items()})

        def forward(self, X):
            return self.post(predict(dict(self.p), self.pre(X), torch))
    return ours, Plain(), layer


def _my_loss(out, T):
    return ((out - T) ** 2).mean() + torch.logsumexp(out, 1).mean()


@pytest.mark.parametrize("name", ["mlp-relu-softmax", "residual", "rnn", "scalar"])
def test_torch_layer_inside_a_model_equals_plain_torch(name):
    ours, plain, layer = _models(name)
    rng = np.random.default_rng(1)
    X, T = torch.tensor(rng.normal(size=(8, 5))), torch.tensor(rng.normal(size=(8, 2)))
    Xa, Xb = X.clone().requires_grad_(True), X.clone().requires_grad_(True)
    la, lb = _my_loss(ours(Xa), T), _my_loss(plain(Xb), T)
    assert la.grad_fn is not None
    close(la, lb)
    la.backward()
    lb.backward()
    close(Xa.grad, Xb.grad)
    for k in layer.params:
        close(layer.params[k].grad, plain.p[k].grad)
    for a, b in ((ours[0], plain.pre), (ours[2], plain.post)):
        close(a.weight.grad, b.weight.grad)
        close(a.bias.grad, b.bias.grad)


def test_torch_layer_sgd_steps_equal_plain_torch():
    ours, plain, layer = _models("mlp-relu-softmax", seed=3)
    rng = np.random.default_rng(2)
    X, T = torch.tensor(rng.normal(size=(8, 5))), torch.tensor(rng.normal(size=(8, 2)))
    opts = [torch.optim.SGD(mod.parameters(), lr=0.2) for mod in (ours, plain)]
    for _ in range(4):
        for mod, opt in zip((ours, plain), opts):
            opt.zero_grad()
            _my_loss(mod(X), T).backward()
            opt.step()
    for k in layer.params:
        close(layer.params[k], plain.p[k])
    close(ours[0].weight, plain.pre.weight)
    close(ours(X), plain(X))


@pytest.mark.parametrize("name", ["mlp-sigmoid-sigmoid", "residual"])
def test_torch_layer_gradcheck(name):
    _, _, layer = _models(name)
    names = list(layer.params)
    X = torch.tensor(np.random.default_rng(5).normal(size=(4, layer.params[names[0]].shape[0])),
                     requires_grad=True)

    def f(X, *ps):
        return torch.func.functional_call(layer, {f"params.{k}": p for k, p in zip(names, ps)}, (X,))
    ps = [layer.params[k].detach().clone().requires_grad_(True) for k in names]
    assert torch.autograd.gradcheck(f, (X, *ps), eps=1e-6, atol=1e-7)


def test_torch_module_loss_unchanged():
    d, _, n_in, n_out = net("mlp-tanh-identity")
    params, X, _ = point(d, n_in, n_out)
    m = sb.compile(d, backend="torch")
    mod = m.module(params)
    Y = np.random.default_rng(0).normal(size=(X.shape[0], n_out))
    L = mod(torch.tensor(X), torch.tensor(Y))
    L.backward()
    want = sb.compile(d).grad(X, Y, params)
    for k in params:
        close(mod.params[k].grad, want[k])


# ------------------------------------------------------------------ JAX: custom_vjp function
# each network once, jitted or not in turn, in a normal run; both ways in slow mode
@pytest.mark.parametrize("name, jit", [("mlp-relu-softmax", False), ("scalar", True), ("rnn", False),
                                       slow("mlp-relu-softmax", True), slow("scalar", False), slow("rnn", True)])
def test_jax_function_grad_equals_plain_jax(name, jit):
    d, predict, n_in, n_out = net(name)
    params, X, G = point(d, n_in, n_out, seed=6)
    f = sb.compile(d, backend="jax", dtype="float64").function()
    jp, jX = {k: jnp.asarray(v) for k, v in params.items()}, jnp.asarray(X)

    def loss_with(fn):
        def loss(p, x):
            out = fn(p, x)
            return jnp.sum(jnp.sin(out) * jnp.asarray(G)) + jnp.sum(out ** 2)
        return loss
    ours = jax.grad(loss_with(f), argnums=(0, 1))
    want = jax.grad(loss_with(lambda p, x: predict(p, x, jnp)), argnums=(0, 1))(jp, jX)
    got = (jax.jit(ours) if jit else ours)(jp, jX)
    close(got[1], want[1])
    for k in params:
        close(got[0][k], want[0][k])


# ------------------------------------------------------------------ pure methods take NumPy params
def test_torch_pure_methods_take_numpy_params():
    d, _, n_in, n_out = net("mlp-relu-softmax")
    params, X, G = point(d, n_in, n_out, seed=7)
    Y = np.eye(n_out)[np.arange(X.shape[0]) % n_out]
    mn, mt = sb.compile(d), sb.compile(d, backend="torch")
    close(mt.predict(X, params), mn.predict(X, params))
    assert mt.loss(X, Y, params) == pytest.approx(mn.loss(X, Y, params), rel=1e-12)
    gt, gn = mt.grad(X, Y, params), mn.grad(X, Y, params)
    for k in params:
        assert isinstance(gt[k], torch.Tensor)
        close(gt[k], gn[k], rel=1e-12)
    (dXt, vt), (dXn, vn) = mt.vjp(X, params, G), mn.vjp(X, params, G)
    close(dXt, dXn, rel=1e-12)
    close(vt["W3"], vn["W3"], rel=1e-12)
    with pytest.raises(DataError, match="in place"):
        mt.step(X, Y, params)
    with pytest.raises(DataError, match="not numeric array data: it holds str values"):
        mt.grad(X, Y, {**params, "W1": "nope"})


# ------------------------------------------------------------------ the expanded gradient
def test_logistic_regression_expanded_gradient_is_the_short_form():
    g = sb.Graph()
    x = g.inputs("x")
    y = g.targets("y")
    w, b = g.params("w b")
    p = g.node("p", sb.sigmoid(w * x + b))
    g.loss(sb.binary_cross_entropy(p, y))
    d = sb.derive(g)
    got = d.gradient("w", form="expanded")
    sigma = 1 / (1 + sp.exp(-(w * x + b)))
    assert sp.simplify(got.rewrite(sp.exp) - x * (sigma - y)) == 0
    assert sp.count_ops(got) <= 6
    # and the expanded form still equals SymPy's derivative of the loss written out here
    cost = -(y * sp.log(sigma) + (1 - y) * sp.log(1 - sigma))
    assert sp.simplify(sp.diff(cost, w) - got.rewrite(sp.exp)) == 0
    assert sp.simplify(sp.diff(cost, b) - d.gradient("b", form="expanded").rewrite(sp.exp)) == 0


# ------------------------------------------------------------------ softmax inside a network
@pytest.mark.parametrize("backend", BACKENDS)
def test_hidden_softmax_compiles_and_equals_torch_autograd(backend):
    g = sb.Graph()
    X = g.inputs("X", shape=(sb.BATCH, 3))
    Y = g.targets("Y", shape=(sb.BATCH, 2))
    W1, W2 = g.params("W1 W2", shape=[(3, 4), (4, 2)])
    A = g.node("A", sb.softmax(X @ W1))
    g.loss(sb.mse(g.node("Yhat", A @ W2), Y))
    m = sb.compile(sb.derive(g), backend=backend, dtype="float64")
    rng = np.random.default_rng(8)
    p = {"W1": rng.normal(size=(3, 4)), "W2": rng.normal(size=(4, 2))}
    Xn, Yn = rng.normal(size=(5, 3)), rng.normal(size=(5, 2))
    got = m.grad(Xn, Yn, {k: m._ns["_asarray"](v) for k, v in p.items()})
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in p.items()}
    A_t = torch.softmax(torch.tensor(Xn) @ tp["W1"], 1)
    ((A_t @ tp["W2"] - torch.tensor(Yn)) ** 2).sum(1).mean().backward()
    for k in p:
        close(got[k], tp[k].grad)


# ------------------------------------------------------------------ the README's example
def _readme_block():
    import re
    from pathlib import Path
    text = (Path(__file__).parent.parent / "README.md").read_text()
    return re.search(r"\*\*A derived layer inside your own model\.\*\*.*?```python\n(.*?)```", text, re.S).group(1)


def test_readme_layer_example_trains_and_its_jax_grad_is_right():
    block = _readme_block()
    runs = {}
    for steps in (0, 100):
        torch.manual_seed(0)
        ns = {"sb": sb}
        exec(block.replace("range(100)", f"range({steps})"), ns)     # the README's own text
        runs[steps] = torch.nn.functional.mse_loss(ns["model"](ns["X"]), ns["T"]).item()
    assert runs[100] < 0.9 * runs[0]
    params = {k: jnp.asarray(v) for k, v in ns["params"].items()}
    _, predict = mlp([8, 16, 4], "tanh", "softmax", "cross_entropy")
    want = jax.grad(lambda p, X: jnp.mean((predict(p, jnp.tanh(X), jnp) - 0.25) ** 2))(params, ns["Xj"])
    assert set(ns["grads"]) == set(want)
    for k in want:
        close(ns["grads"][k], want[k], rel=1e-10)       # float64, the default on every backend


def test_torch_sigmoid_backward_with_equal_but_distinct_symbols():
    """g ⊙ y ⊙ (1 − y) prints as sigmoid_backward(g, y) also when the y in (1 − y) is an equal
    but distinct Symbol object (SymPy's cache had evicted it: after enough other work in one
    process the torch VJP printed sigmoid_backward(Y*Yhat, Yhat), a 4 % wrong gradient)."""
    from sympy.core.cache import clear_cache

    from symback.printing.torch import TorchPrinter
    y1 = sp.Symbol("Yhat")
    clear_cache()
    y2 = sp.Symbol("Yhat")
    assert y1 == y2 and y1 is not y2
    g = sp.Symbol("G")
    printer = TorchPrinter()
    printer.arrays = frozenset({y1, g})
    assert printer.doprint(g * y1 * (1 - y2)) == "torch.ops.aten.sigmoid_backward(G, Yhat)"
