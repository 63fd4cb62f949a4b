"""One-sample graphs whose output is one row (a CNN's class scores) or one column, used as layers.

⟨G, Ŷ⟩ written 1ᵀ (G ⊙ Ŷ) 1 loses its 1×1 𝟏 in SymPy's product when Ŷ has one row or one
column, and SymPy then could not differentiate it: ``m.vjp`` raised, and a torch
``m.module()(X)`` gave a prediction no gradient flowed through.  Oracle: each network written
again here with ``torch.nn.functional`` and differentiated by ``torch.autograd`` (float64,
relative 1e-8): ``m.vjp(X, params, G)`` on every backend, and the torch module's backward
(X's and every parameter's ``.grad``) under a loss that is not symback's.
"""
from __future__ import annotations

import numpy as np
import pytest

import symback as sb

torch = pytest.importorskip("torch")
F = torch.nn.functional

BACKENDS = ("numpy", "jax", "torch")


def close(got, want, rel=1e-8):
    got = np.asarray(got.detach() if isinstance(got, torch.Tensor) else got, dtype=np.float64)
    want = np.asarray(want.detach() if isinstance(want, torch.Tensor) else want, dtype=np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    assert float(np.abs(got - want).max()) <= rel * max(1.0, float(np.abs(want).max()))


def cnn():
    """Conv2d(4, 3, padding 1, ReLU), MaxPool2d(2), Flatten, Dense(3, softmax) on 1×8×8 images."""
    net = sb.Sequential(sb.Conv2d(4, 3, padding=1, activation="relu"), sb.MaxPool2d(2), sb.Flatten(),
                        sb.Dense(3, "softmax"), inputs=(1, 8, 8), loss="cross_entropy")

    def predict(X, t):      # the kernel stored as (C·k·k, C_out): weight = Kᵀ reshaped
        a = F.max_pool2d(F.relu(F.conv2d(X, t["K1"].T.reshape(4, 1, 3, 3), t["b1"][0], padding=1)), 2)
        return torch.softmax(a.flatten(1) @ t["W2"] + t["b2"], dim=-1)      # (n, 3), as torch gives
    return net, (5, 1, 8, 8), predict


def one_row_attention():
    """Attention(2 heads) then Dense(2, tanh) on one-row samples (T = 1): Ŷ is 1 × 2."""
    net = sb.Sequential(sb.Attention(heads=2), sb.Dense(2, "tanh"), inputs=(1, 4), loss="mse")

    def predict(X, t):
        n, T, d = X.shape
        split = lambda z: z.reshape(n, T, 2, d // 2).transpose(1, 2)      # noqa: E731
        o = F.scaled_dot_product_attention(split(X @ t["Wq1"]), split(X @ t["Wk1"]), split(X @ t["Wv1"]))
        return torch.tanh(o.transpose(1, 2).reshape(n, T, d) @ t["Wo1"] @ t["W2"] + t["b2"])
    return net, (6, 1, 4), predict


def one_column_dense():
    """Dense(3, tanh), Dense(1) on 3 × 4 samples: Ŷ is one column (3 × 1)."""
    net = sb.Sequential(sb.Dense(3, "tanh"), sb.Dense(1), inputs=(3, 4), loss="mse")

    def predict(X, t):
        return torch.tanh(X @ t["W1"] + t["b1"]) @ t["W2"] + t["b2"]
    return net, (4, 3, 4), predict


NETS = {"cnn": cnn, "one_row_attention": one_row_attention, "one_column_dense": one_column_dense}


def _setup(make, seed=0):
    net, xshape, predict = make()
    d = sb.derive(net)
    rng = np.random.default_rng(seed)
    params = {p: np.asarray(v) + 0.3 * rng.normal(size=np.shape(v)) for p, v in sb.compile(d).init(seed=1).items()}
    X = rng.normal(size=xshape)
    t = {p: torch.tensor(v, requires_grad=True) for p, v in params.items()}
    Xt = torch.tensor(X, requires_grad=True)
    Yhat = predict(Xt, t)
    G = rng.normal(size=tuple(Yhat.shape))
    (Yhat * torch.tensor(G)).sum().backward()
    return d, params, X, G, Xt.grad, {p: t[p].grad for p in params}, Yhat.detach()


@pytest.mark.parametrize("name", NETS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_vjp_equals_torch_autograd(name, backend):
    if backend == "jax":
        pytest.importorskip("jax")
    d, params, X, G, dX, grads, Yhat = _setup(NETS[name])
    m = sb.compile(d, backend=backend, dtype="float64")
    assert m._layer_ns()["VJP_ERROR"] is None
    close(m.predict(X, params), Yhat)
    got_dX, got = m.vjp(X, params, G)
    close(got_dX, dX)                   # shaped like X: images as (n, C, H, W)
    for p in params:
        close(got[p], grads[p])


@pytest.mark.parametrize("name", NETS)
def test_torch_module_backward_equals_torch_autograd(name):
    """The module as a layer: its output's backward under an outside loss (Σ G ⊙ Ŷ) fills X's
    and every parameter's .grad with symback's derived VJP."""
    d, params, X, G, dX, grads, Yhat = _setup(NETS[name], seed=2)
    mod = sb.compile(d, backend="torch", dtype="float64").module({p: torch.tensor(v) for p, v in params.items()})
    Xt = torch.tensor(X, requires_grad=True)
    out = mod(Xt)
    assert out.grad_fn is not None and type(out.grad_fn).__name__ == "SymbackLayerBackward"
    close(out, Yhat)
    (out * torch.tensor(G)).sum().backward()
    close(Xt.grad, dX)
    for p in params:
        close(mod.params[p].grad, grads[p])


@pytest.mark.parametrize("name", NETS)
def test_jax_function_vjp_equals_torch_autograd(name):
    """``m.function()``, a jax.custom_vjp function: jax.vjp of it gives the same cotangents (X's
    shaped like X, images too)."""
    jax = pytest.importorskip("jax")
    jnp = pytest.importorskip("jax.numpy")
    d, params, X, G, dX, grads, Yhat = _setup(NETS[name], seed=3)
    m = sb.compile(d, backend="jax", dtype="float64")
    p = {k: jnp.asarray(v) for k, v in params.items()}
    out, pull = jax.vjp(m.function(), p, jnp.asarray(X))
    close(out, Yhat)
    got, got_dX = pull(jnp.asarray(G))
    close(got_dX, dX)
    for k in params:
        close(got[k], grads[k])


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_one_row_prediction_comes_back_in_the_form_x_came_in(backend):
    """Images (n, C, H, W) or rows (n, k) in: (n, K) out, as torch's models give (argmax(1) works);
    X as (n, 1, k) samples: (n, 1, K). The module and JAX function the same, and their backward."""
    if backend == "jax":
        pytest.importorskip("jax")
    for make, X_forms in ((cnn, [(5, 1, 8, 8)]), (one_row_attention, [(6, 4), (6, 1, 4)])):
        d, params, X, G, dX, grads, Yhat = _setup(make)
        m = sb.compile(d, backend=backend, dtype="float64")
        for shape in X_forms:
            want = Yhat.reshape(shape[0], -1) if len(shape) != 3 else Yhat
            close(m.predict(X.reshape(shape), params), want)
            if backend == "torch":
                mod = m.module({p: torch.tensor(v) for p, v in params.items()})
                Xt = torch.tensor(X.reshape(shape), requires_grad=True)
                out = mod(Xt)
                close(out, want)
                (out * torch.tensor(G).reshape(out.shape)).sum().backward()
                close(Xt.grad, dX.reshape(shape))
            if backend == "jax":
                import jax
                import jax.numpy as jnp
                out, pull = jax.vjp(m.function(), {k: jnp.asarray(v) for k, v in params.items()},
                                    jnp.asarray(X.reshape(shape)))
                close(out, want)
                close(pull(jnp.asarray(G).reshape(out.shape))[1], dX.reshape(shape))


@pytest.mark.parametrize("backend", BACKENDS)
def test_exported_cnn_module_predicts_and_differentiates_as_torch(backend, tmp_path):
    """The standalone module (m.export, symback codegen) of a CNN: predict gives (n, K) and vjp
    X's gradient as images (n, C, H, W), as the Model does, equal to torch autograd."""
    import importlib.util
    import sys
    if backend == "jax":
        pytest.importorskip("jax")
    d, params, X, G, dX, grads, Yhat = _setup(cnn, seed=4)
    path = sb.compile(d, backend=backend, dtype="float64").export(tmp_path / f"cnn_{backend}.py")
    spec = importlib.util.spec_from_file_location(f"cnn_{backend}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    p = {k: mod._asarray(v) for k, v in params.items()}
    close(mod.predict(X, p), Yhat)
    got_dX, got = mod.vjp(X, p, G)
    close(got_dX, dX)
    for k in params:
        close(got[k], grads[k])
    sys.modules.pop(f"cnn_{backend}", None)
