"""One-sample graphs (contract 0.3): a sample is a matrix (a sequence of T rows), the batch a
leading axis of the data.  Oracles: PyTorch autograd (``scaled_dot_product_attention`` with
``is_causal``) and ``jax.grad`` of the same network written here, and random networks built
from one recipe twice: once as a symback graph, once as torch code in this file.
"""
from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest
import sympy as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import symback as sb
from conftest import examples

torch = pytest.importorskip("torch")
jax = pytest.importorskip("jax")
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402

BACKENDS = ("numpy", "jax", "torch")
RTOL = 1e-8


def _close(a, b, rtol=RTOL):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    scale = max(1.0, float(np.abs(b).max(initial=0.0)))
    assert float(np.abs(a - b).max(initial=0.0)) <= rtol * scale, float(np.abs(a - b).max() / scale)


# ---------------------------------------------------------------- DESIGN.md's example
def attention_graph(T=6, d=8, k=4, penalty=False):
    g = sb.Graph()
    X = g.inputs("X", shape=(T, d)); Y = g.targets("Y", shape=(T, d))
    Wq, Wk, Wv = g.params("Wq Wk Wv", shape=[(d, k)] * 3); Wo = g.params("Wo", shape=(k, d))
    P = g.node("P", sb.softmax((X @ Wq) @ (X @ Wk).T / sp.sqrt(k), mask="causal"))
    g.node("H", X + P @ (X @ Wv) @ Wo)
    g.loss(sb.mse(g.symbol("H"), Y), penalty=sp.Rational(1, 10) * sb.sumsq(Wq) if penalty else None)
    return g


def torch_attention(X, Y, params, penalty=False):
    t = {k: torch.tensor(np.asarray(v), requires_grad=True) for k, v in params.items()}
    x, y = torch.tensor(X), torch.tensor(Y)
    att = torch.nn.functional.scaled_dot_product_attention(x @ t["Wq"], x @ t["Wk"], x @ t["Wv"], is_causal=True)
    h = x + att @ t["Wo"]
    L = ((h - y) ** 2).sum(dim=(1, 2)).mean() + (0.1 * (t["Wq"] ** 2).sum() if penalty else 0)
    L.backward()
    return L.item(), {k: v.grad.numpy() for k, v in t.items()}


def jax_attention(X, Y, params):
    def loss(p):
        q, k, v = X @ p["Wq"], X @ p["Wk"], X @ p["Wv"]
        s = q @ jnp.swapaxes(k, -1, -2) / jnp.sqrt(q.shape[-1])
        T = s.shape[-1]
        s = jnp.where(jnp.tril(jnp.ones((T, T), bool)), s, -jnp.inf)
        h = X + jax.nn.softmax(s, axis=-1) @ v @ p["Wo"]
        return jnp.mean(jnp.sum((h - Y) ** 2, axis=(1, 2)))
    value, grads = jax.value_and_grad(loss)({k: jnp.asarray(np.asarray(v)) for k, v in params.items()})
    return float(value), {k: np.asarray(v) for k, v in grads.items()}


@pytest.fixture(scope="module")
def attention():
    return sb.derive(attention_graph()), sb.derive(attention_graph(penalty=True))


@pytest.mark.parametrize("backend", BACKENDS)
def test_design_attention_example_equals_torch_and_jax(attention, backend):
    d, _ = attention
    rng = np.random.default_rng(3)
    X, Y = rng.normal(size=(5, 6, 8)), rng.normal(size=(5, 6, 8))
    m = sb.compile(d, backend=backend, dtype="float64")
    params = m.init(seed=2)
    host = {k: np.asarray(v) for k, v in params.items()}
    L_t, G_t = torch_attention(X, Y, host)
    L_j, G_j = jax_attention(X, Y, host)
    value, grads = m.value_and_grad(X, Y, params)
    assert value == pytest.approx(L_t, rel=RTOL) and value == pytest.approx(L_j, rel=RTOL)
    for k in d.params:
        _close(grads[k], G_t[k])
        _close(grads[k], G_j[k])


@pytest.mark.parametrize("backend", BACKENDS)
def test_penalty_is_added_once_not_per_sample(attention, backend):
    _, d = attention
    rng = np.random.default_rng(4)
    X, Y = rng.normal(size=(7, 6, 8)), rng.normal(size=(7, 6, 8))
    m = sb.compile(d, backend=backend, dtype="float64")
    params = m.init(seed=5)
    host = {k: np.asarray(v) for k, v in params.items()}
    L_t, G_t = torch_attention(X, Y, host, penalty=True)
    assert m.loss(X, Y, params) == pytest.approx(L_t, rel=RTOL)
    grads = m.grad(X, Y, params)
    for k in d.params:
        _close(grads[k], G_t[k])
    # a step is p − lr·∂L/∂p
    before = {k: np.array(v) for k, v in host.items()}
    m.step(X, Y, params, lr=0.05)
    for k in d.params:
        _close(np.asarray(params[k]), before[k] - 0.05 * G_t[k])


def test_compiled_code_maps_the_batch_without_a_python_loop(attention):
    d, _ = attention
    src = sb.compile(d).source
    body = src[src.index("def _grad"):src.index("def _step")]
    assert "for " not in body and "while " not in body
    assert "_mm(X, " in body                                  # X Wq as one (n·T)×d GEMM
    assert ".reshape(-1, 8).T @ " in body                     # Σᵢ Xᵢᵀ δᵢ as one GEMM


def test_one_sample_data_checks(attention):
    d, _ = attention
    m = sb.compile(d)
    params = m.init()
    with pytest.raises(sb.SymbackError, match=r"one sample of the network is \(6, 8\)"):
        m.loss(np.zeros((3, 6, 7)), np.zeros((3, 6, 8)), params)
    one = np.random.default_rng(0).normal(size=(6, 8))       # a single sample gets its batch axis
    assert m.loss(one, one, params) == pytest.approx(m.loss(one[None], one[None], params))
    assert m.predict(np.zeros((4, 6, 8)), params).shape == (4, 6, 8)


def test_export_and_fit(tmp_path, attention):
    d, _ = attention
    m = sb.compile(d)
    path = m.export(tmp_path / "att.py")
    spec = importlib.util.spec_from_file_location("att", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.selfcheck()                         # finite differences of the module's own loss
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 6, 8))
    Y = np.roll(X, 1, axis=1)
    params = m.init(seed=0)
    history = m.fit(X, Y, params, epochs=15, lr=0.01, batch_size=16, optimizer="adam")
    assert history[-1] < history[0]


def test_gradient_is_per_sample_and_batch_gradient_adds_penalty(attention):
    _, d = attention
    Wq = d.graph.symbol("Wq")
    assert d.gradient("Wq").shape == Wq.shape
    assert d.penalty_gradient("Wq") == sp.Rational(1, 5) * Wq
    assert d.graph.per_sample and not sb.derive(sb.mlp([2, 3, 1])).graph.per_sample


# ---------------------------------------------------------------- random one-sample networks
ACTS = {"tanh": (sb.tanh, torch.tanh), "sigmoid": (sb.sigmoid, torch.sigmoid),
        "softplus": (sb.softplus, torch.nn.functional.softplus),
        "swish": (sb.swish, torch.nn.functional.silu)}


@st.composite
def recipes(draw):
    """A random network of one (T, d) sample: a list of steps, each naming earlier values."""
    T, d = draw(st.integers(2, 4)), draw(st.integers(1, 4))
    shapes = {"X": (T, d)}
    steps = []
    for i in range(draw(st.integers(1, 5))):
        name = f"N{i}"
        kinds = ["linear", "act", "gram", "add", "hadamard", "transpose"]
        square = [v for v, s in shapes.items() if s[0] == s[1] == T]
        if square:
            kinds += ["softmax", "mix"]
        kind = draw(st.sampled_from(kinds))
        src = draw(st.sampled_from(sorted(shapes)))
        r, c = shapes[src]
        if kind == "linear":
            w = draw(st.integers(1, 4))
            steps.append((name, kind, src, w)); shapes[name] = (r, w)
        elif kind == "act":
            steps.append((name, kind, src, draw(st.sampled_from(sorted(ACTS))))); shapes[name] = (r, c)
        elif kind == "gram":
            other = draw(st.sampled_from(sorted(v for v, s in shapes.items() if s[1] == c)))
            steps.append((name, kind, src, other)); shapes[name] = (r, shapes[other][0])
        elif kind in ("add", "hadamard"):
            other = draw(st.sampled_from(sorted(v for v, s in shapes.items() if s == (r, c))))
            steps.append((name, kind, src, other)); shapes[name] = (r, c)
        elif kind == "transpose":
            steps.append((name, kind, src, None)); shapes[name] = (c, r)
        elif kind == "softmax":
            src = draw(st.sampled_from(square))
            steps.append((name, kind, src, draw(st.sampled_from([None, "causal"])))); shapes[name] = (T, T)
        else:   # mix: P @ H for a T×T P
            p = draw(st.sampled_from(square))
            other = draw(st.sampled_from(sorted(v for v, s in shapes.items() if s[0] == T)))
            steps.append((name, kind, p, other)); shapes[name] = (T, shapes[other][1])
    last = f"N{len(steps) - 1}"
    return T, d, steps, shapes, last, draw(st.sampled_from(["mse", "half_mse", "sumsq"]))


def build_symback(recipe):
    T, d, steps, shapes, last, loss = recipe
    g = sb.Graph()
    sym = {"X": g.inputs("X", shape=(T, d))}
    params = {}
    for name, kind, a, b in steps:
        A = sym[a]
        if kind == "linear":
            W = g.params(f"W{name}", shape=(A.shape[1], b)); params[W.name] = W.shape
            e = A @ W
        elif kind == "act":
            e = ACTS[b][0](A)
        elif kind == "gram":
            e = A @ sym[b].T
        elif kind == "add":
            e = A + sym[b]
        elif kind == "hadamard":
            e = sb.hadamard(A, sym[b])
        elif kind == "transpose":
            e = A.T
        elif kind == "softmax":
            e = sb.softmax(A, mask=b)
        else:
            e = A @ sym[b]
        sym[name] = g.node(name, e)
    out = sym[last]
    Wout = g.params("Wout", shape=(out.shape[1], 2)); params["Wout"] = Wout.shape
    Yhat = g.node("Yhat", out @ Wout)
    Yt = g.targets("Y", shape=Yhat.shape)
    if loss == "sumsq":
        g.loss(sb.sumsq(Yhat - Yt))
    else:
        g.loss(getattr(sb, loss)(Yhat, Yt))
    return g, params


def torch_recipe(recipe, X, Y, params):
    T, d, steps, shapes, last, loss = recipe
    t = {k: torch.tensor(np.asarray(v), requires_grad=True) for k, v in params.items()}
    val = {"X": torch.tensor(X)}
    for name, kind, a, b in steps:
        A = val[a]
        if kind == "linear":
            e = A @ t[f"W{name}"]
        elif kind == "act":
            e = ACTS[b][1](A)
        elif kind == "gram":
            e = A @ val[b].transpose(-1, -2)
        elif kind == "add":
            e = A + val[b]
        elif kind == "hadamard":
            e = A * val[b]
        elif kind == "transpose":
            e = A.transpose(-1, -2)
        elif kind == "softmax":
            if b == "causal":
                A = A.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
            e = torch.softmax(A, dim=-1)
        else:
            e = A @ val[b]
        val[name] = e
    yhat = val[last] @ t["Wout"]
    sq = ((yhat - torch.tensor(Y)) ** 2).sum(dim=(1, 2))
    L = (sq / 2 if loss == "half_mse" else sq).mean()
    L.backward()
    return L.item(), {k: np.zeros(v.shape) if v.grad is None else v.grad.numpy() for k, v in t.items()}


@settings(max_examples=examples(15), deadline=None, suppress_health_check=list(HealthCheck))
@given(recipe=recipes(), seed=st.integers(0, 2**16))
def test_random_one_sample_networks_equal_torch_autograd(recipe, seed):
    g, shapes = build_symback(recipe)
    d = sb.derive(g)
    rng = np.random.default_rng(seed)
    n = 3
    X = rng.normal(size=(n,) + tuple(int(s) for s in g.symbol("X").shape))
    Y = rng.normal(size=(n,) + tuple(int(s) for s in g.symbol("Y").shape))
    params = {k: rng.normal(scale=0.7, size=tuple(int(s) for s in shp)) for k, shp in shapes.items()}
    L_t, G_t = torch_recipe(recipe, X, Y, params)
    for backend in BACKENDS if os.environ.get("SYMBACK_SLOW") == "1" or seed % 2 else ("numpy", "torch"):
        m = sb.compile(d, backend=backend, dtype="float64")
        native = {k: torch.as_tensor(v) for k, v in params.items()} if backend == "torch" else params
        value, grads = m.value_and_grad(X, Y, native)
        assert value == pytest.approx(L_t, rel=RTOL, abs=1e-12), backend
        for k in params:
            _close(grads[k], G_t[k])


# ---------------------------------------------------------------- a one-sample graph as a layer
@pytest.mark.parametrize("backend", BACKENDS)
def test_attention_vjp_equals_torch(attention, backend):
    d, _ = attention
    rng = np.random.default_rng(9)
    X, G = rng.normal(size=(3, 6, 8)), rng.normal(size=(3, 6, 8))
    m = sb.compile(d, backend=backend, dtype="float64")
    params = m.init(seed=4)
    dX, grads = m.vjp(X, params, G)
    t = {k: torch.tensor(np.asarray(v), requires_grad=True) for k, v in params.items()}
    x = torch.tensor(X, requires_grad=True)
    att = torch.nn.functional.scaled_dot_product_attention(x @ t["Wq"], x @ t["Wk"], x @ t["Wv"], is_causal=True)
    ((x + att @ t["Wo"]) * torch.tensor(G)).sum().backward()
    _close(dX, x.grad.numpy())
    for k in d.params:
        _close(grads[k], t[k].grad.numpy())


def test_attention_module_inside_a_torch_model(attention):
    d, _ = attention
    m = sb.compile(d, backend="torch", dtype="float64")
    layer = m.module(seed=4)
    pre = torch.nn.Linear(8, 8, dtype=torch.float64)
    X = torch.tensor(np.random.default_rng(2).normal(size=(3, 6, 8)))
    out = layer(pre(X))
    loss = (out ** 2).mean()
    loss.backward()
    # the same model in plain torch, from the same parameter values
    t = {k: v.detach().clone().requires_grad_(True) for k, v in layer.params.items()}
    pre2 = torch.nn.Linear(8, 8, dtype=torch.float64)
    pre2.load_state_dict(pre.state_dict())
    x = pre2(X)
    att = torch.nn.functional.scaled_dot_product_attention(x @ t["Wq"], x @ t["Wk"], x @ t["Wv"], is_causal=True)
    ((x + att @ t["Wo"]) ** 2).mean().backward()
    _close(pre.weight.grad.numpy(), pre2.weight.grad.numpy())
    for k in d.params:
        _close(layer.params[k].grad.numpy(), t[k].grad.numpy())
