"""What a new user passes to the Python API, found by using it as the README shows and then
slightly wrong: each was a raw error from NumPy, torch or JAX, a misleading message, or input
silently ignored.  Where symback now computes, the oracle is torch autograd of the same network
written with torch.nn.functional in this file; where it refuses, the error names the problem
and what to do, and a refused step changes no parameter."""
from __future__ import annotations

import numpy as np
import pytest

import symback as sb
from symback.errors import DataError

torch = pytest.importorskip("torch")
F = torch.nn.functional
BACKENDS = ("numpy", "jax", "torch")
RNG = np.random.default_rng(7)
X = RNG.normal(size=(5, 3))
LABELS = np.array([0, 1, 1, 0, 1])
Y = np.eye(2)[LABELS]
XC = RNG.normal(size=(3, 2, 6, 6))                 # three 2-channel 6×6 images, three classes
YC = np.eye(3)[[2, 0, 1]]


@pytest.fixture(scope="module")
def mlp():
    return sb.derive(sb.mlp([3, 4, 2], activation="tanh", output="softmax", loss="cross_entropy"))


@pytest.fixture(scope="module")
def cnn():
    return sb.derive(sb.Sequential(sb.Conv2d(2, 3, padding=1, activation="relu"), sb.MaxPool2d(2), sb.Flatten(),
                                   sb.Dense(3, "softmax"), inputs=(2, 6, 6), loss="cross_entropy"))


def _native(backend, v):
    if backend == "torch":
        return torch.tensor(np.asarray(v))
    if backend == "jax":
        import jax.numpy as jnp
        return jnp.asarray(v)
    return np.array(v)


def _mlp_torch(x, y, p):
    """The 3-4-2 tanh/softmax network in torch: (cross-entropy loss, parameters as leaves)."""
    t = {k: torch.tensor(np.asarray(v), requires_grad=True) for k, v in p.items()}
    z = torch.tanh(torch.tensor(x) @ t["W1"] + t["b1"]) @ t["W2"] + t["b2"]
    return F.cross_entropy(z, torch.tensor(y).argmax(1)), t


def _cnn_torch(x, p):
    """The CNN in torch.nn.functional on images x (n, 2, 6, 6): (softmax scores, leaves)."""
    t = {k: torch.tensor(np.asarray(v), requires_grad=True) for k, v in p.items()}
    a = F.relu(F.conv2d(x, t["K1"].T.reshape(2, 2, 3, 3), t["b1"][0], padding=1))
    return torch.softmax(F.max_pool2d(a, 2).flatten(1) @ t["W2"] + t["b2"], 1), t


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_params_entry_the_model_lacks_is_refused(mlp, backend):
    """{**params, "W3": ...} or a stale key was used for nothing, silently (torch's
    load_state_dict(strict=True) refuses it); also when added to the dict a step loop reuses."""
    m = sb.compile(mlp, backend=backend)
    p = m.init(seed=0)
    why = r"params has entries the model does not have: 'W3'; the model's parameters are W1, b1, W2, b2"
    for call in (lambda q: m.predict(X, q), lambda q: m.grad(X, Y, q), lambda q: m.step(X, Y, q)):
        with pytest.raises(DataError, match=why):
            call({**p, "W3": np.zeros((2, 2))})
    q = {k: _native(backend, v) for k, v in p.items()}
    m.step(X, Y, q, lr=0.5)                       # accepted, then remembered by the step's fast check
    q["W3"] = q["W2"]
    before = {k: np.asarray(v).copy() for k, v in q.items()}
    with pytest.raises(DataError, match=why):
        m.step(X, Y, q, lr=0.5)
    for k, v in q.items():
        np.testing.assert_array_equal(np.asarray(v), before[k])


@pytest.mark.parametrize("backend", BACKENDS)
def test_class_labels_for_a_softmax_output_say_how_to_encode_them(mlp, cnn, backend):
    """Labels (n,) were read as one sample of n values: 'Y has 5 columns but the network has 2
    targets'.  The message now says how to give them, and the way it says is right: the gradient
    with Y = np.eye(K)[labels] is torch's cross_entropy(z, labels)."""
    m = sb.compile(mlp, backend=backend)
    p = m.init(seed=0)
    hint = r"class labels\? one-hot encode them: Y = np.eye\(2\)\[labels\], shape \(n, 2\)"
    for labels in (LABELS, LABELS[:, None], LABELS.astype(float)):
        with pytest.raises(DataError, match=hint):
            m.grad(X, labels, p)
    with pytest.raises(DataError, match=r"Y has shape \(5,\), read as one sample of 5 values"):
        m.fit(X, LABELS, p, epochs=1)
    loss, t = _mlp_torch(X, np.eye(2)[LABELS], p)
    loss.backward()
    grads = m.grad(X, np.eye(2)[LABELS], p)
    for k in p:
        np.testing.assert_allclose(np.asarray(grads[k]), t[k].grad.numpy(), rtol=1e-10, atol=1e-13)
    with pytest.raises(DataError, match=r"X has 2 columns"):     # no hint where none applies
        m.grad(X[:, :2], Y, p)
    mc = sb.compile(cnn, backend=backend)
    with pytest.raises(DataError, match=r"Y has shape \(2,\), but one sample.*Y = np.eye\(3\)\[labels\]"):
        mc.grad(XC[:2], np.array([2, 0]), mc.init(0))
    with pytest.raises(DataError, match=r"X has 3 rows but Y has 1 \(class labels\? .*np.eye\(3\)"):
        mc.grad(XC, np.array([2, 0, 1]), mc.init(0))     # three labels of three classes: one sample


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_image_without_its_batch_axis(cnn, backend, tmp_path):
    """An image (C, H, W) was refused with a contradiction: 'X has shape (1, 6, 6), but one sample
    of the network is an image (1, 6, 6)', while one row or one sequence is taken as one sample.
    Now it is one sample: scores (1, K) and δ_X (1, C, H, W) as torch's for the batch of one, in
    the Model, torch's module, JAX's function and the exported module."""
    m = sb.compile(cnn, backend=backend)
    p = {k: np.asarray(v) for k, v in m.init(seed=1).items()}
    x = torch.tensor(XC[:1], requires_grad=True)
    scores, t = _cnn_torch(x, p)
    G = RNG.normal(size=(1, 3))
    (scores * torch.tensor(G)).sum().backward()
    out = m.predict(XC[0], p)
    assert tuple(out.shape) == (1, 3)
    np.testing.assert_allclose(np.asarray(out), scores.detach().numpy(), rtol=1e-10)
    dX, grads = m.vjp(XC[0], p, G)
    assert tuple(dX.shape) == (1, 2, 6, 6)
    np.testing.assert_allclose(np.asarray(dX), x.grad.numpy(), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(np.asarray(grads["K1"]), t["K1"].grad.numpy(), rtol=1e-10, atol=1e-14)
    # with its target row given alone too (K,), as a one-row sample's X may be (k,)
    loss, t = _cnn_torch(torch.tensor(XC[:1]), p)
    torch.log(loss[0, 2]).neg().backward()
    g = m.grad(XC[0], YC[0], p)
    for k in p:
        np.testing.assert_allclose(np.asarray(g[k]), t[k].grad.numpy(), rtol=1e-10, atol=1e-14)
    alone = {"torch": lambda: m.module(params=p)(torch.tensor(XC[0])).detach(),
             "jax": lambda: m.function()(p, XC[0]), "numpy": lambda: _exported(m, tmp_path).predict(XC[0], p)}
    np.testing.assert_allclose(np.asarray(alone[backend]()), scores.detach().numpy(), rtol=1e-10)


def _exported(m, folder):
    """The module m.export writes, imported from its file."""
    import importlib.util
    folder.mkdir(exist_ok=True)
    spec = importlib.util.spec_from_file_location("ux_net", m.export(folder / "ux_net.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sequences_for_an_rnn_say_how_to_lay_them_out():
    """X (n, T, d) for sb.rnn (whose X is n × T·d, x_t its t-th block) got 'X must be a 2-D array',
    and nothing on what to give."""
    m = sb.compile(sb.derive(sb.rnn(inputs=2, hidden=3, outputs=1, steps=4)))
    with pytest.raises(DataError, match=r"got shape \(5, 4, 2\): give X of shape \(n, 8\) \(its axes after the "
                                        r"first in a row: .reshape\(len\(X\), -1\)\)"):
        m.predict(np.zeros((5, 4, 2)), m.init(0))


def test_float32_tensors_into_a_float64_torch_model(mlp):
    """torch's RuntimeError 'mat1 and mat2 must have the same dtype' reached the user (NumPy and
    JAX promote); now a DataError that names the parameter and both ways out, and no change."""
    m = sb.compile(mlp, backend="torch")
    p = {k: v.float() for k, v in m.init(seed=0).items()}
    before = {k: v.clone() for k, v in p.items()}
    why = r"parameter 'W1' holds torch.float32 values, but this model computes in float64: .*dtype='float32'"
    for call in (lambda: m.grad(X, Y, p), lambda: m.step(X, Y, p)):
        with pytest.raises(DataError, match=why):
            call()
    for k in p:
        assert torch.equal(p[k], before[k])
    loss, t = _mlp_torch(X, Y, {k: v.double() for k, v in p.items()})
    loss.backward()
    grads = sb.compile(mlp, backend="torch", dtype="float32").grad(X, Y, p)     # the way out it names
    np.testing.assert_allclose(grads["W1"].numpy(), t["W1"].grad.numpy(), rtol=1e-5, atol=1e-7)


def test_torch_module_loss_refuses_labels(cnn):
    """module(X, labels) failed with NumPy's 'cannot reshape array of size 1 into shape (3,newaxis)'."""
    mod = sb.compile(cnn, backend="torch").module(seed=0)
    with pytest.raises(DataError, match=r"Y has shape \(2,\), but one sample of the network is \(1, 3\)"):
        mod(torch.tensor(XC[:2]), torch.tensor([2, 0]))
    with pytest.raises(DataError, match=r"X has 3 rows but Y has 1 \(class labels\?"):
        mod(torch.tensor(XC), torch.tensor([2, 0, 1]))
    assert mod(torch.tensor(XC), torch.tensor(YC)).item() > 0


def test_jax_function_takes_float32_images(cnn):
    """m.function()(params, X) with float32 images into a float64 CNN was XLA's TypeError
    'lax.conv_general_dilated requires arguments to have the same dtypes'; m.predict converts
    X, and so does the function now, its cotangent for X in X's dtype, as JAX requires."""
    jax = pytest.importorskip("jax")
    m = sb.compile(cnn, backend="jax")
    p = {k: np.asarray(v) for k, v in m.init(seed=2).items()}
    f = m.function()
    x32 = XC.astype(np.float32)
    G = RNG.normal(size=(3, 3))
    dX = jax.grad(lambda x: (f(p, x) * G).sum())(jax.numpy.asarray(x32))
    assert dX.dtype == np.float32
    x = torch.tensor(x32.astype(np.float64), requires_grad=True)
    scores, _ = _cnn_torch(x, p)
    (scores * torch.tensor(G)).sum().backward()
    np.testing.assert_allclose(np.asarray(f(p, x32)), scores.detach().numpy(), rtol=1e-10)
    np.testing.assert_allclose(np.asarray(dX), x.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_the_exported_module_checks_its_data(mlp, tmp_path):
    """`symback codegen`'s module (NumPy alone) broadcast a lone target row over the batch: the
    loss of X (5 rows) against Y (1 row) was a number; labels for a softmax output were NumPy's
    'cannot reshape array of size 10 into shape (5,)'.  Each is a ValueError that says what to
    give, and the module's gradient for the data it takes is torch autograd's."""
    net = _exported(sb.compile(sb.derive(sb.mlp([3, 4, 1], activation="tanh", loss="mse"))), tmp_path)
    p = net.init(0)
    with pytest.raises(ValueError, match="X has 5 samples but Y has 1"):
        net.loss(X, np.ones((1, 1)), p)
    clf = _exported(sb.compile(mlp), tmp_path / "clf")
    q = clf.init(0)
    with pytest.raises(ValueError, match=r"Y has shape \(5,\); the network takes Y of shape \(n, 2\) "
                                         r"\(class labels\? one-hot encode them: np.eye\(K\)\[labels\]\)"):
        clf.step(X, LABELS, q)
    loss, t = _mlp_torch(X, Y, q)
    loss.backward()
    value, grads = clf.value_and_grad(X, Y, q)
    assert value == pytest.approx(loss.item(), rel=1e-12)
    for k in q:
        np.testing.assert_allclose(grads[k], t[k].grad.numpy(), rtol=1e-10, atol=1e-13)


def test_torch_step_refuses_numbers_it_cannot_update():
    """On torch, m.step(X, Y, {"w1": 0.5, ...}) of a scalar graph returned the loss and left every
    parameter as it was (the step ran on converted copies); NumPy and JAX replace the numbers in the
    dict.  Now a DataError; fit, which converts the dict's numbers to tensors first, still trains,
    to the parameters of plain gradient descent by hand on the same least-squares loss."""
    g = sb.Graph()
    x1, x2 = g.inputs("x1 x2")
    y = g.targets("y")
    w1, w2, b = g.params("w1 w2 b")
    g.loss((g.node("yhat", w1 * x1 + w2 * x2 + b) - y) ** 2)
    m = sb.compile(sb.derive(g), backend="torch")
    p = {"w1": 0.5, "w2": 1.0, "b": 0.0}
    with pytest.raises(DataError, match=r"parameter 'w1' is a float, not a torch.Tensor: step updates"):
        m.step(X[:, :2], X[:, 2], p, lr=0.1)
    assert p == {"w1": 0.5, "w2": 1.0, "b": 0.0}
    m.fit(X[:, :2], X[:, 2], p, epochs=3, lr=0.1, batch_size=None)
    w = np.array([0.5, 1.0, 0.0])
    A = np.column_stack([X[:, :2], np.ones(len(X))])
    for _ in range(3):
        w -= 0.1 * 2 * A.T @ (A @ w - X[:, 2]) / len(X)
    np.testing.assert_allclose([float(p[k]) for k in ("w1", "w2", "b")], w, rtol=1e-12)


@pytest.mark.parametrize("options, named", [({"momentumm": 0.9}, "'momentumm'"),
                                            ({"optimizer": "adam", "beta3": 0.9}, "'beta3'")])
def test_a_misspelt_optimizer_option_is_named(options, named):
    """fit(..., momentumm=0.9) said "SGD() takes no arguments", naming neither the option nor
    the ones there are; nothing trains (the parameters stay as they were)."""
    m = sb.compile(sb.derive(sb.mlp([2, 3, 1])))
    p = m.init(seed=0)
    before = {k: v.copy() for k, v in p.items()}
    with pytest.raises(sb.SymbackError) as info:
        m.fit(np.zeros((4, 2)), np.zeros((4, 1)), p, epochs=1, **options)
    assert named in str(info.value) and "it takes" in str(info.value)
    assert all(np.array_equal(p[k], before[k]) for k in p)


def test_a_json_spec_is_told_specs_are_toml(tmp_path):
    """A spec written as JSON got only "not valid TOML: Invalid statement (at line 1, column 1)"."""
    from symback.spec import read_spec
    f = tmp_path / "net.json"
    f.write_text('{"inputs": ["x"], "params": ["w"]}')
    with pytest.raises(sb.SymbackError, match=r"spec files are TOML"):
        read_spec(f)
