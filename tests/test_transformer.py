"""Transformer layers (contract 0.3): gelu, layer_norm, Attention, TransformerBlock, checked
against PyTorch autograd of the same network written here with ``torch.nn.functional``
(``scaled_dot_product_attention`` with ``is_causal``, ``layer_norm``, ``gelu(approximate="tanh")``)
at random sizes, heads and masks, on every backend, in float64.
"""
from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import symback as sb
from conftest import examples

torch = pytest.importorskip("torch")
F = torch.nn.functional
BACKENDS = ("numpy", "jax", "torch")


def _close(a, b, rtol=1e-13):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape
    assert float(np.abs(a - b).max()) <= rtol * max(1.0, float(np.abs(b).max()))


def torch_layers(layers, x, t, heads_causal):
    """The Sequential's layers in plain torch; t maps parameter names to leaf tensors."""
    n, T, d = x.shape
    l = 0

    def run(layers, a):
        nonlocal l
        for kind in layers:
            if isinstance(kind, list):                     # a residual: a + inner(a)
                a = a + run(kind, a)
                continue
            l += 1
            if kind == "ln":
                a = F.layer_norm(a, (a.shape[-1],), t[f"gamma{l}"][0], t[f"beta{l}"][0], eps=1e-5)
            elif kind == "att":
                h, causal = heads_causal
                w = a.shape[-1] // h
                split = lambda z: z.reshape(n, T, h, w).transpose(1, 2)    # noqa: E731
                o = F.scaled_dot_product_attention(split(a @ t[f"Wq{l}"]), split(a @ t[f"Wk{l}"]),
                                                   split(a @ t[f"Wv{l}"]), is_causal=causal)
                a = o.transpose(1, 2).reshape(n, T, a.shape[-1]) @ t[f"Wo{l}"]
            else:                                          # ("dense", activation)
                a = a @ t[f"W{l}"] + t[f"b{l}"]
                a = F.gelu(a, approximate="tanh") if kind[1] == "gelu" else a
        return a
    return run(layers, x)


def check(net, plain, heads_causal, n=3, seed=0, classes=False):
    d = sb.derive(net)
    T, width = (int(s) for s in net.symbol("X").shape)
    k = int(net.symbol("Y").shape[1])
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, T, width))
    Y = np.eye(k)[rng.integers(0, k, (n, T))] if classes else rng.normal(size=(n, T, k))
    m0 = sb.compile(d)
    params = {p: np.asarray(v) + 0.1 * rng.normal(size=np.shape(v)) for p, v in m0.init(seed).items()}
    t = {p: torch.tensor(v, requires_grad=True) for p, v in params.items()}
    out = torch_layers(plain, torch.tensor(X), t, heads_causal)
    if classes:
        L = -(torch.tensor(Y) * torch.log_softmax(out, dim=-1)).sum(dim=(1, 2)).mean()
    else:
        L = ((out - torch.tensor(Y)) ** 2).sum(dim=(1, 2)).mean()
    L.backward()
    for backend in BACKENDS:
        m = sb.compile(d, backend=backend, dtype="float64")
        given = {p: torch.tensor(v) for p, v in params.items()} if backend == "torch" else params
        value, grads = m.value_and_grad(X, Y, given)
        assert value == pytest.approx(L.item(), rel=1e-13), backend
        for p in params:
            _close(grads[p], t[p].grad.numpy())


def test_layer_norm_alone():
    net = sb.Sequential(sb.LayerNorm(), sb.Dense(2), inputs=(4, 5), loss="mse")
    assert net.param_names == ["gamma1", "beta1", "W2", "b2"]
    check(net, ["ln", ("dense", "identity")], (1, False))
    assert np.all(sb.compile(sb.derive(net)).init()["gamma1"] == 1)


@pytest.mark.parametrize("heads,causal", [(1, False), (2, True), (4, False)])
def test_attention_alone(heads, causal):
    net = sb.Sequential(sb.Attention(heads=heads, causal=causal), sb.Dense(3), inputs=(5, 8), loss="mse")
    assert net.param_names == ["Wq1", "Wk1", "Wv1", "Wo1", "W2", "b2"]
    assert all(net.symbol(p).shape == (8, 8) for p in ("Wq1", "Wk1", "Wv1", "Wo1"))
    check(net, ["att", ("dense", "identity")], (heads, causal))


@settings(max_examples=examples(3), deadline=None, suppress_health_check=list(HealthCheck))
@given(T=st.integers(2, 5), heads=st.sampled_from([1, 2]), per_head=st.integers(2, 3),
       hidden=st.integers(2, 6), causal=st.booleans(), seed=st.integers(0, 1000))
def test_transformer_block_equals_torch(T, heads, per_head, hidden, causal, seed):
    d = heads * per_head
    net = sb.Sequential(sb.TransformerBlock(heads=heads, hidden=hidden, causal=causal), sb.Dense(3),
                        inputs=(T, d), loss="mse")
    plain = [["ln", "att"], ["ln", ("dense", "gelu"), ("dense", "identity")], ("dense", "identity")]
    check(net, plain, (heads, causal), seed=seed)


def test_transformer_language_model_with_softmax_cross_entropy():
    V, T = 4, 5
    net = sb.Sequential(sb.Dense(8), sb.TransformerBlock(heads=2, hidden=8, causal=True), sb.LayerNorm(),
                        sb.Dense(V, "softmax"), inputs=(T, V), loss="cross_entropy")
    assert [p for p in net.param_names if p.startswith(("W", "gamma"))][:6] == [
        "W1", "gamma2", "Wq3", "Wk3", "Wv3", "Wo3"]
    plain = [("dense", "identity"), ["ln", "att"], ["ln", ("dense", "gelu"), ("dense", "identity")],
             "ln", ("dense", "identity")]
    check(net, plain, (2, True), classes=True)


def test_gelu_is_the_tanh_form_and_its_derivative_sympys():
    z = sp.Symbol("z", real=True)
    x = torch.linspace(-4, 4, 17, dtype=torch.float64, requires_grad=True)
    f = sp.lambdify(z, sb.gelu(z).rewrite(sp.exp) if False else type(sb.gelu(z)).definition(z), "math")
    df = sp.lambdify(z, sp.diff(type(sb.gelu(z)).definition(z), z), "math")
    y = F.gelu(x, approximate="tanh")
    y.sum().backward()
    for xi, yi, gi in zip(x.tolist(), y.tolist(), x.grad.tolist()):
        assert f(xi) == pytest.approx(yi, rel=1e-12, abs=1e-15)
        assert df(xi) == pytest.approx(gi, rel=1e-12, abs=1e-15)


def test_closed_forms_are_proved():
    from symback.vjp import prove_rownorm_vjp, prove_softmax_vjp
    assert prove_softmax_vjp() and prove_rownorm_vjp()
