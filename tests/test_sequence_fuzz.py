"""Random stacks of the sequence layers on every backend against PyTorch autograd (differential,
hypothesis).

hypothesis stacks one to three builders on one-sample sequences (T × d) through the public API:
``Dense`` (any width, identity, tanh, ReLU, sigmoid or GELU), ``LayerNorm``, ``Attention`` (one
or two heads, causal or not), ``Residual(Dense)`` and ``TransformerBlock`` (one or two heads,
hidden 2-3, causal or not), then a ``Dense`` output with cross-entropy (softmax) or squared
error.  The oracle is the same stack written here with ``torch.nn.functional``
(``scaled_dot_product_attention``, ``layer_norm``, ``gelu(approximate="tanh")``) and
differentiated by ``torch.autograd``: the loss and every parameter's gradient on NumPy, JAX and
torch, float64, relative 1e-8.  Widths and head counts change from layer to layer, which the
fixed-architecture tests do not reach (two attention layers of different head widths made a
document false).  One fixed deep example and two of hypothesis's normally, forty under
``SYMBACK_SLOW=1``.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import symback as sb
from conftest import examples

torch = pytest.importorskip("torch")
F = torch.nn.functional
ACT = {"identity": lambda z: z, "tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid,
       "gelu": lambda z: F.gelu(z, approximate="tanh")}


@st.composite
def stacks(draw):
    """(T, d, layers, classes or None): attention layers only where the width splits into heads."""
    T, d = draw(st.integers(2, 4)), draw(st.sampled_from([2, 4]))
    layers, width = [], d
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["dense", "ln", "att", "res", "block"]))
        heads = draw(st.sampled_from([1, 2]))
        if kind == "dense":
            width = draw(st.integers(1, 4))
            layers.append(("dense", width, draw(st.sampled_from(sorted(ACT)))))
        elif kind == "res":
            layers.append(("res", width, draw(st.sampled_from(sorted(ACT)))))
        elif kind == "ln":
            layers.append(("ln",))
        elif width % heads == 0:
            causal = draw(st.booleans())
            layers.append(("att", heads, causal) if kind == "att" else ("block", heads, draw(st.integers(2, 3)), causal))
    classes = draw(st.sampled_from([None, 2, 3]))
    return T, d, layers, classes


def _network(T, d, layers, classes):
    blocks = {"dense": lambda w, a: sb.Dense(w, a), "ln": sb.LayerNorm, "res": lambda w, a: sb.Residual(sb.Dense(w, a)),
              "att": lambda h, c: sb.Attention(heads=h, causal=c),
              "block": lambda h, k, c: sb.TransformerBlock(heads=h, hidden=k, causal=c)}
    out = sb.Dense(classes, "softmax") if classes else sb.Dense(2)
    return sb.Sequential(*[blocks[kind](*o) for kind, *o in layers], out, inputs=(T, d),
                         loss="cross_entropy" if classes else "mse")


def _attention(x, t, l, heads, causal):
    n, T, d = x.shape
    split = lambda z: z.reshape(n, T, heads, d // heads).transpose(1, 2)       # noqa: E731
    o = F.scaled_dot_product_attention(split(x @ t[f"Wq{l}"]), split(x @ t[f"Wk{l}"]), split(x @ t[f"Wv{l}"]),
                                       is_causal=causal)
    return o.transpose(1, 2).reshape(n, T, d) @ t[f"Wo{l}"]


def _norm(x, t, l):
    return F.layer_norm(x, (x.shape[-1],), t[f"gamma{l}"][0], t[f"beta{l}"][0], eps=1e-5)


def _torch_output(x, t, layers):
    """The stack in torch.nn.functional, parameters numbered as DESIGN.md says (depth first)."""
    l = 0
    for kind, *o in layers:
        l += 1
        if kind == "dense":
            x = ACT[o[1]](x @ t[f"W{l}"] + t[f"b{l}"])
        elif kind == "res":
            x = x + ACT[o[1]](x @ t[f"W{l}"] + t[f"b{l}"])
        elif kind == "ln":
            x = _norm(x, t, l)
        elif kind == "att":
            x = _attention(x, t, l, *o)
        else:                       # pre-LN block: LayerNorm, Attention, LayerNorm, Dense(gelu), Dense
            x = x + _attention(_norm(x, t, l), t, l + 1, o[0], o[2])
            h = ACT["gelu"](_norm(x, t, l + 2) @ t[f"W{l + 3}"] + t[f"b{l + 3}"])
            x = x + h @ t[f"W{l + 4}"] + t[f"b{l + 4}"]
            l += 4
    return x @ t[f"W{l + 1}"] + t[f"b{l + 1}"]


@settings(max_examples=examples(2), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
# one deep example every run: two blocks of different head widths around a residual layer
@example(stack=(3, 4, [("block", 1, 2, False), ("res", 4, "gelu"), ("block", 2, 3, True)], 3), seed=5)
@given(stack=stacks(), seed=st.integers(0, 2**16))
def test_random_sequence_stack_equals_torch_autograd_on_every_backend(stack, seed):
    T, d, layers, classes = stack
    dv = sb.derive(_network(*stack))
    rng = np.random.default_rng(seed)
    params = {k: np.asarray(v) + 0.3 * rng.normal(size=np.shape(v)) for k, v in sb.compile(dv).init(seed=1).items()}
    n, k = 3, classes or 2
    X = rng.normal(size=(n, T, d))
    Y = np.eye(k)[rng.integers(0, k, (n, T))] if classes else rng.normal(size=(n, T, k))
    t = {p: torch.tensor(v, requires_grad=True) for p, v in params.items()}
    z = _torch_output(torch.tensor(X), t, layers)
    L = (-(torch.tensor(Y) * torch.log_softmax(z, -1)).sum() if classes else ((z - torch.tensor(Y)) ** 2).sum()) / n
    L.backward()
    for backend in ("numpy", "jax", "torch"):
        value, grads = sb.compile(dv, backend=backend, dtype="float64").value_and_grad(X, Y, params)
        assert value == pytest.approx(L.item(), rel=1e-8), backend
        for p in params:
            want = t[p].grad.numpy()
            got = np.asarray(grads[p], dtype=np.float64)
            assert float(np.abs(got - want).max()) <= 1e-8 * max(1.0, float(np.abs(want).max())), (backend, p)
