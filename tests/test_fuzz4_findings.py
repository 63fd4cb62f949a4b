"""Layer networks and training calls a fourth differential fuzz (recurrent, CNN, BatchNorm and
transformer stacks, in training) found wrong, checked against torch.

The findings:

* BatchNorm on a batch of one sample: each column minus its own mean is 0, so the output is β
  whatever the input and every gradient above it is 0; symback trained on (loss 0, gradients 0
  on every backend, and ``fit`` with a last batch of one row, n = 5 in batches of 2, took that
  step silently) where torch's ``batch_norm(training=True)`` refuses ("Expected more than 1
  value per channel when training"): now a DataError naming the rows, from every entry point
  (predict, loss, grad, vjp, step, fit, torch's module, JAX's function);
* ``fit`` on the torch backend with NumPy parameters raised torch's TypeError from ``addmm``
  (numbers were converted, arrays not): now converted too, as fit gives the trained parameters
  back into the dict anyway; ``step``, which updates in place, says it needs tensors;
* JAX's ``function()`` given a lone sample (T, d): with two attention heads it raised IndexError,
  with one it returned (T, K) where predict and torch's module give a batch of one, (1, T, K);
* a CNN's biases given as the (k,) vectors the Model accepts for 1 × k parameters: grad raised
  "the data do not fit the network" (the Conv2d bias's bᵀ, of a 1-D array, is itself); step
  raised on NumPy and torch (the (1, k) sum over the samples written into (k,)) and made the
  bias (1, k) on JAX; fit with Adam raised on NumPy and torch, and JAX and torch gave the biases
  back as (1, k) (in any network: ``sb.mlp`` fit with momentum or Adam raised NumPy's ValueError).
"""
from __future__ import annotations

import numpy as np
import pytest

import symback as sb
from symback.errors import DataError

torch = pytest.importorskip("torch")
pytest.importorskip("jax")

BACKENDS = ("numpy", "jax", "torch")
F = torch.nn.functional


def _bn_net():
    return sb.Sequential(sb.Dense(2, "tanh"), sb.BatchNorm(), sb.Dense(3), inputs=2, loss="mse")


def _torch_refuses_one_row():
    with pytest.raises(ValueError, match="more than 1 value"):
        F.batch_norm(torch.ones(1, 2), None, None, training=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_batchnorm_on_one_sample_is_refused_as_torch_refuses_it(backend):
    _torch_refuses_one_row()
    m = sb.compile(sb.derive(_bn_net()), backend=backend)
    p = m.init(seed=0)
    X, Y = np.array([[0.3, -0.7]]), np.zeros((1, 3))
    for call, args in (("predict", (X, p)), ("loss", (X, Y, p)), ("grad", (X, Y, p)),
                       ("vjp", (X, p, Y)), ("step", (X, Y, p))):
        with pytest.raises(DataError, match="1 row.*BatchNorm"):
            getattr(m, call)(*args)


def _array(backend, a):
    """`a` as the backend's own array (step's fast path takes those)."""
    if backend == "jax":
        import jax.numpy as jnp
        return jnp.asarray(a)
    return torch.as_tensor(a) if backend == "torch" else a


@pytest.mark.parametrize("backend", BACKENDS)
def test_step_after_a_two_row_step_still_refuses_one_row(backend):
    # step's fast path (arrays of the kind it accepted last time) checks the rows too
    m = sb.compile(sb.derive(_bn_net()), backend=backend)
    p = m.init(seed=0)
    X, Y = _array(backend, np.array([[0.3, -0.7], [1.0, 0.5]])), _array(backend, np.zeros((2, 3)))
    m.step(X, Y, p, lr=0.1)
    with pytest.raises(DataError, match="1 row"):
        m.step(X[:1], Y[:1], p, lr=0.1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_fit_refuses_a_last_batch_of_one_sample_and_trains_otherwise_as_torch(backend):
    m = sb.compile(sb.derive(_bn_net()), backend=backend)
    rng = np.random.default_rng(3)
    X, Y = rng.normal(size=(5, 2)), rng.normal(size=(5, 3))
    p = m.init(seed=0)
    with pytest.raises(DataError, match="last batch.*5 samples in batches of 2"):
        m.fit(X, Y, p, epochs=1, batch_size=2)
    # batches of 3 and 2: the same two SGD updates as torch on the same minibatch order
    start = {k: np.array(np.asarray(v), dtype=np.float64) for k, v in p.items()}
    t = {k: torch.tensor(v, requires_grad=True) for k, v in start.items()}
    opt = torch.optim.SGD(t.values(), lr=0.1)
    for idx in np.array_split(np.random.default_rng(0).permutation(5), [3]):
        opt.zero_grad()
        A = torch.tanh(torch.tensor(X[idx]) @ t["W1"] + t["b1"])
        A = F.batch_norm(A, None, None, t["gamma2"][0], t["beta2"][0], training=True, eps=1e-5)
        ((A @ t["W3"] + t["b3"] - torch.tensor(Y[idx])) ** 2).sum(1).mean().backward()
        opt.step()
    m.fit(X, Y, p, epochs=1, batch_size=3, lr=0.1, seed=0)
    for k in p:
        np.testing.assert_allclose(np.asarray(p[k]), t[k].detach().numpy(), rtol=1e-9, atol=1e-12)


def test_the_layer_forms_refuse_batchnorm_on_one_sample_too():
    X = np.array([[0.3, -0.7]])
    mt = sb.compile(sb.derive(_bn_net()), backend="torch")
    with pytest.raises(DataError, match="1 row"):
        mt.module()(torch.tensor(X))
    mj = sb.compile(sb.derive(_bn_net()), backend="jax")
    with pytest.raises(DataError, match="1 row"):
        mj.function()(mj.init(seed=0), X)


def test_networks_without_batch_statistics_still_take_one_sample():
    m = sb.compile(sb.derive(sb.mlp([2, 2, 3], activation="tanh")))
    X, Y = np.array([[0.3, -0.7]]), np.zeros((1, 3))
    p = m.init(seed=0)
    t = {k: torch.tensor(v) for k, v in p.items()}
    A = torch.tanh(torch.tensor(X) @ t["W1"] + t["b1"])
    assert m.loss(X, Y, p) == pytest.approx(float(((A @ t["W2"] + t["b2"]) ** 2).sum()), rel=1e-12)


def test_torch_fit_with_numpy_parameters_trains_like_torch():
    """fit converts NumPy parameters (it gives the trained ones back into the dict); step, which
    updates in place, refuses them.  Oracle: three full-batch SGD steps of torch autograd."""
    m = sb.compile(sb.derive(sb.mlp([2, 3, 1])), backend="torch", dtype="float64")
    p = {k: np.asarray(v, dtype=np.float64) for k, v in m.init(seed=0).items()}
    X = np.random.default_rng(0).normal(size=(4, 2))
    Y = X[:, :1] - X[:, 1:]
    with pytest.raises(DataError, match="not a torch.Tensor"):
        m.step(X, Y, dict(p))
    t = {k: torch.tensor(v, requires_grad=True) for k, v in p.items()}
    for _ in range(3):
        Yhat = torch.sigmoid(torch.tensor(X) @ t["W1"] + t["b1"]) @ t["W2"] + t["b2"]     # mlp: sigmoid, identity
        loss = ((Yhat - torch.tensor(Y)) ** 2).sum(1).mean()
        grads = torch.autograd.grad(loss, list(t.values()))
        with torch.no_grad():
            for v, g in zip(t.values(), grads):
                v -= 0.1 * g
    m.fit(X, Y, p, epochs=3, lr=0.1, batch_size=None)
    for k in t:
        assert isinstance(p[k], torch.Tensor)
        np.testing.assert_allclose(p[k].numpy(), t[k].detach().numpy(), rtol=1e-12, atol=1e-15)


def _heads_oracle(X, t, heads):
    """Attention(heads) then Dense(2) by hand in torch, X (n, T, d)."""
    n, T, d = X.shape
    w = d // heads
    Q, K, V = X @ t["Wq1"], X @ t["Wk1"], X @ t["Wv1"]
    outs = [torch.softmax(Q[..., j * w:(j + 1) * w] @ K[..., j * w:(j + 1) * w].transpose(-1, -2) / w ** 0.5, -1)
            @ V[..., j * w:(j + 1) * w] for j in range(heads)]
    return torch.cat(outs, -1) @ t["Wo1"] @ t["W2"] + t["b2"]


@pytest.mark.parametrize("heads", [1, 2])
def test_jax_function_takes_a_lone_sample_as_a_batch_of_one(heads):
    """JAX's function() given one sample (T, d) of a two-head attention raised IndexError (the
    generated code indexes the batch axis); predict and torch's module take it as a batch of
    one, (1, T, K): so does the function now, and jax.grad through it is autograd's."""
    import jax
    import jax.numpy as jnp
    d = sb.derive(sb.Sequential(sb.Attention(heads=heads), sb.Dense(2), inputs=(3, 2), loss="mse"))
    mj = sb.compile(d, backend="jax")
    rng = np.random.default_rng(heads)
    p = {k: np.asarray(v) + 0.3 * rng.normal(size=np.shape(v)) for k, v in mj.init(seed=0).items()}
    X, G = rng.normal(size=(3, 2)), rng.normal(size=(1, 3, 2))
    f = mj.function()
    out = f({k: jnp.asarray(v) for k, v in p.items()}, jnp.asarray(X))
    assert out.shape == tuple(sb.compile(d, backend="torch").module(p)(torch.tensor(X)).shape) == (1, 3, 2)
    t = {k: torch.tensor(v, requires_grad=True) for k, v in p.items()}
    x = torch.tensor(X, requires_grad=True)
    want = _heads_oracle(x[None], t, heads)
    np.testing.assert_allclose(np.asarray(out), want.detach().numpy(), rtol=1e-10, atol=1e-12)
    (want * torch.tensor(G)).sum().backward()
    gp, gx = jax.jit(jax.grad(lambda q, a: jnp.sum(f(q, a) * G), argnums=(0, 1)))(
        {k: jnp.asarray(v) for k, v in p.items()}, jnp.asarray(X))
    np.testing.assert_allclose(np.asarray(gx), x.grad.numpy(), rtol=1e-9, atol=1e-12)
    for k in p:
        np.testing.assert_allclose(np.asarray(gp[k]), t[k].grad.numpy(), rtol=1e-9, atol=1e-12)


def _cnn():
    """(derivation, torch forward) of Conv2d(2, 2, stride 2, padding 1, tanh), Flatten, Dense(3)."""
    net = sb.Sequential(sb.Conv2d(2, 2, stride=2, padding=1, activation="tanh"), sb.Flatten(), sb.Dense(3),
                        inputs=(1, 5, 4), loss="mse")

    def forward(X, t):
        A = torch.tanh(F.conv2d(X, t["K1"].T.reshape(2, 1, 2, 2), t["b1"].reshape(-1), stride=2, padding=1))
        return A.flatten(1) @ t["W2"] + t["b2"].reshape(-1)
    return sb.derive(net), forward


def _rows_as_vectors(params):
    """The 1 × k parameters (biases) as the (k,) arrays the Model accepts for them."""
    return {k: v.reshape(-1) if v.shape[0] == 1 else v for k, v in params.items()}


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_cnn_takes_its_biases_as_vectors_in_grad_and_step(backend):
    """A Conv2d's bias b (1 × C) given as the (C,) the Model accepts: grad raised 'the data do not
    fit the network' (bᵀ of a 1-D array is itself); step with the Dense bias as (k,) raised on
    NumPy and torch (the (1, k) sum over the samples written into (k,)) and made it (1, k) on JAX."""
    d, forward = _cnn()
    rng = np.random.default_rng(4)
    X, Y = rng.normal(size=(5, 1, 5, 4)), rng.normal(size=(5, 3))
    start = _rows_as_vectors({k: np.asarray(v) + 0.2 * rng.normal(size=np.shape(v))
                              for k, v in sb.compile(d).init(seed=0).items()})
    t = {k: torch.tensor(v, requires_grad=True) for k, v in start.items()}
    L = ((forward(torch.tensor(X), t) - torch.tensor(Y)) ** 2).sum(1).mean()
    L.backward()
    m = sb.compile(d, backend=backend)
    p = {k: _array(backend, v.copy()) for k, v in start.items()}
    grads = m.grad(X, Y, p)
    for k in p:
        assert tuple(np.shape(grads[k])) == start[k].shape
        np.testing.assert_allclose(np.asarray(grads[k]), t[k].grad.numpy(), rtol=1e-9, atol=1e-12)
    assert m.step(_array(backend, X), _array(backend, Y), p, lr=0.1) == pytest.approx(L.item(), rel=1e-10)
    for k in p:
        assert tuple(np.shape(p[k])) == start[k].shape
        np.testing.assert_allclose(np.asarray(p[k]), start[k] - 0.1 * t[k].grad.numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_fit_keeps_biases_given_as_vectors_and_trains_as_torch(backend, optimizer):
    """fit with (k,) biases: Adam raised on NumPy and torch (its move, (1, k), written into (k,));
    JAX and torch gave them back as (1, k)."""
    d, forward = _cnn()
    rng = np.random.default_rng(5)
    X, Y = rng.normal(size=(6, 1, 5, 4)), rng.normal(size=(6, 3))
    start = _rows_as_vectors({k: np.asarray(v) for k, v in sb.compile(d).init(seed=0).items()})
    t = {k: torch.tensor(v, requires_grad=True) for k, v in start.items()}
    opt = (torch.optim.SGD(t.values(), lr=0.05) if optimizer == "sgd"
           else torch.optim.Adam(t.values(), lr=0.05, eps=1e-30))
    order = np.random.default_rng(0)
    for _ in range(2):
        for idx in np.array_split(order.permutation(6), [4]):
            opt.zero_grad()
            ((forward(torch.tensor(X[idx]), t) - torch.tensor(Y[idx])) ** 2).sum(1).mean().backward()
            opt.step()
    m = sb.compile(d, backend=backend)
    p = {k: _array(backend, v.copy()) for k, v in start.items()}
    # (ε where it does not matter: torch adds it to √v̂, symback to √v)
    m.fit(X, Y, p, epochs=2, lr=0.05, batch_size=4, seed=0, optimizer=optimizer,
          **({"eps": 1e-30} if optimizer == "adam" else {}))
    for k in p:
        assert tuple(np.shape(p[k])) == start[k].shape
        np.testing.assert_allclose(np.asarray(p[k]), t[k].detach().numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_mlp_fit_with_momentum_keeps_vector_biases_and_trains_as_torch(backend):
    """The same in any network: ``sb.mlp`` fit with momentum and (k,) biases raised NumPy's
    ValueError (torch's RuntimeError) or gave the biases back as (1, k)."""
    d = sb.derive(sb.mlp([4, 3, 2], activation="tanh"))
    rng = np.random.default_rng(6)
    X, Y = rng.normal(size=(6, 4)), rng.normal(size=(6, 2))
    start = _rows_as_vectors({k: np.asarray(v) for k, v in sb.compile(d).init(seed=0).items()})
    t = {k: torch.tensor(v, requires_grad=True) for k, v in start.items()}
    opt = torch.optim.SGD(t.values(), lr=0.1, momentum=0.9)
    for _ in range(3):
        opt.zero_grad()
        A = torch.tanh(torch.tensor(X) @ t["W1"] + t["b1"])
        ((A @ t["W2"] + t["b2"] - torch.tensor(Y)) ** 2).sum(1).mean().backward()
        opt.step()
    m = sb.compile(d, backend=backend)      # (first: JAX's float64 is on before the arrays are made)
    p = {k: _array(backend, v.copy()) for k, v in start.items()}
    m.fit(X, Y, p, epochs=3, lr=0.1, batch_size=None, optimizer="momentum")
    for k in p:
        assert tuple(np.shape(p[k])) == start[k].shape
        np.testing.assert_allclose(np.asarray(p[k]), t[k].detach().numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("backend", ["numpy", "jax", "torch"])
def test_a_one_row_weight_given_as_a_vector(backend):
    """The Model accepts an (n,) array for a 1 × n parameter; for a weight (inputs=1's W1, which
    meets a matrix product) predict raised NumPy's DataError, XLA's TypeError or torch's
    RuntimeError.  Oracle: torch autograd of the same mlp with W1 as the 1 × 2 row."""
    m = sb.compile(sb.derive(sb.mlp([1, 2, 1], activation="tanh")), backend=backend, dtype="float64")
    p = {k: np.asarray(v, dtype=np.float64) for k, v in m.init(seed=0).items()}
    p["W1"] = p["W1"].reshape(-1)
    X, Y = np.array([[0.5], [-1.0], [2.0]]), np.array([[0.1], [0.2], [-0.3]])
    t = {k: torch.tensor(v.reshape(1, -1) if k == "W1" else v, requires_grad=True) for k, v in p.items()}
    out = torch.tanh(torch.tensor(X) @ t["W1"] + t["b1"]) @ t["W2"] + t["b2"]
    loss = ((out - torch.tensor(Y)) ** 2).sum(1).mean()
    loss.backward()
    np.testing.assert_allclose(np.asarray(m.predict(X, p)), out.detach().numpy(), rtol=1e-12)
    grads = m.grad(X, Y, p)
    for k in t:
        np.testing.assert_allclose(np.asarray(grads[k]).reshape(t[k].shape), t[k].grad.numpy(), rtol=1e-12)
    given = {k: (torch.tensor(v) if backend == "torch" else v.copy()) for k, v in p.items()}
    m.step(X, Y, given, lr=0.1)
    for k in t:
        assert tuple(np.shape(given[k])) == np.shape(p[k])
        np.testing.assert_allclose(np.asarray(given[k]).reshape(t[k].shape),
                                   (t[k] - 0.1 * t[k].grad).detach().numpy(), rtol=1e-12)
