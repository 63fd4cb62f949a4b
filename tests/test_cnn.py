"""Convolutional layers and batch norm (contract 0.3): Conv2d, MaxPool2d, AvgPool2d, Flatten,
BatchNorm, checked against PyTorch autograd of the same network written here with
``torch.nn.functional`` (``conv2d`` with stride and padding, ``max_pool2d``, ``avg_pool2d``,
``batch_norm(training=True)``) at random sizes, channels, strides and paddings, on every
backend, in float64; the image maps' definitions against ``F.unfold`` and the pools; the
adjoint proofs against a wrong adjoint.
"""
from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

import symback as sb
from symback import image
from symback.errors import DefinitionError
from conftest import slow

torch = pytest.importorskip("torch")
F = torch.nn.functional
BACKENDS = ("numpy", "jax", "torch")


def _close(a, b, rtol=1e-8):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    assert float(np.abs(a - b).max()) <= rtol * max(1.0, float(np.abs(b).max()))


def _as(backend, a):
    """a as the backend's array (a step updates the library's arrays)."""
    if backend == "torch":
        return torch.tensor(a)
    if backend == "jax":
        import jax.numpy as jnp
        return jnp.asarray(a)
    return a


def check_backends(d, x, y, params, t, loss, lr=None):
    """On every backend the gradients equal autograd's (`t`'s .grad) and the loss `loss`; with
    `lr`, one step (in place on NumPy and torch) lands on params − lr·∂L/∂p."""
    for backend in BACKENDS:
        m = sb.compile(d, backend=backend, dtype="float64")
        grads = m.grad(x, y, params)
        for p in d.params:
            _close(grads[p], t[p].grad.numpy())
        _close(m.loss(x, y, params), loss)
        if lr is not None:
            moved = {p: _as(backend, np.array(v)) for p, v in params.items()}
            m.step(x, y, moved, lr=lr)
            for p in d.params:
                _close(np.asarray(moved[p]), params[p] - lr * t[p].grad.numpy())


def _config(rng, pool, kernels):
    """A random small CNN with these two kernel sizes that fits: (input (C, H, W),
    [(kind, options)], classes)."""
    while True:
        C, H, W = int(rng.integers(1, 4)), int(rng.integers(6, 12)), int(rng.integers(6, 12))
        convs = [(int(rng.integers(1, 4)), k, int(rng.integers(1, 3)), int(rng.integers(0, 3)))
                 for k in kernels]                                  # (C_out, k, stride, padding)
        size = [H, W]
        for (_, k, s, p), div in zip(convs, (2, 1)):
            size = [image.out_size(v, k, s, p) // div for v in size]
        if min(size) >= 1 and 2 <= min(image.out_size(v, *convs[0][1:]) for v in (H, W)):
            break
    layers = [("conv", *convs[0], "relu"), (pool, 2), ("conv", *convs[1], "tanh")]
    return (C, H, W), layers, int(rng.integers(2, 5))


def _build(shape, layers, classes):
    blocks = []
    for kind, *o in layers:
        if kind == "conv":
            blocks.append(sb.Conv2d(o[0], o[1], stride=o[2], padding=o[3], activation=o[4]))
        else:
            blocks.append((sb.MaxPool2d if kind == "max" else sb.AvgPool2d)(o[0]))
    return sb.Sequential(*blocks, sb.Flatten(), sb.Dense(classes, "softmax"), inputs=shape,
                         loss="cross_entropy")


def _torch_loss(layers, x, y, t):
    """The same network in torch.nn.functional; K is the torch weight reshaped (C_out, -1).T."""
    a, l = x, 0
    for kind, *o in layers:
        if kind == "conv":
            l += 1
            out, k, s, p, act = o
            weight = t[f"K{l}"].T.reshape(out, a.shape[1], k, k)
            a = F.conv2d(a, weight, t[f"b{l}"][0], stride=s, padding=p)
            a = F.relu(a) if act == "relu" else torch.tanh(a)
        else:
            a = (F.max_pool2d if kind == "max" else F.avg_pool2d)(a, o[0])
    z = a.flatten(1) @ t[f"W{l + 1}"] + t[f"b{l + 1}"]
    return F.cross_entropy(z, y.argmax(1)), torch.softmax(z, 1)


# one random CNN per pooling in a normal run, two in slow mode
@pytest.mark.parametrize("seed, pool, kernels", [(0, "max", (3, 2)), (1, "avg", (2, 3)), slow(2, "max", (2, 2)),
                                                slow(3, "avg", (3, 3))])
def test_cnn_gradients_equal_torch_autograd(seed, pool, kernels):
    rng = np.random.default_rng(seed)
    shape, layers, classes = _config(rng, pool, kernels)
    net = _build(shape, layers, classes)
    d = sb.derive(net)
    n = int(rng.integers(2, 6))
    x = rng.normal(size=(n, *shape))
    y = np.eye(classes)[rng.integers(0, classes, n)]
    params = {p: rng.normal(size=tuple(int(v) for v in net.symbol(p).shape)) / 2 for p in d.params}
    t = {p: torch.tensor(v, requires_grad=True) for p, v in params.items()}
    loss, probs = _torch_loss(layers, torch.tensor(x), torch.tensor(y), t)
    loss.backward()
    for backend in BACKENDS:
        m = sb.compile(d, backend=backend, dtype="float64")
        grads = m.grad(x, y, params)            # X as PyTorch's (n, C, H, W)
        for p in d.params:
            _close(grads[p], t[p].grad.numpy())
        _close(m.loss(x, y, params), loss.item())
        _close(np.asarray(m.predict(x, params)).reshape(n, classes), probs.detach().numpy())
        # (n, C, H·W), the one-sample matrices themselves, gives the same
        _close(m.loss(x.reshape(n, shape[0], -1), y, params), loss.item())
        # a step (in place on NumPy and torch, where views of flattened images share buffers)
        # lands on params − lr·∂L/∂p, torch's gradients
        moved = {p: _as(backend, np.array(v)) for p, v in params.items()}
        m.step(x, y, moved, lr=0.5)
        for p in d.params:
            _close(moved[p], params[p] - 0.5 * t[p].grad.numpy())


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_patch_matrix_helpers_without_convolution_kernels(backend, monkeypatch):
    """torch and JAX print a convolution's products as their convolution kernels; their own
    unfold/fold helpers (strides that leave pixels unread, padding) are checked here with
    that rewrite switched off."""
    from symback.backends import printer
    monkeypatch.setattr(type(printer(backend)), "conv_kernels", False)
    shape, layers = (2, 9, 8), [("conv", 2, 3, 2, 1, "relu"), ("avg", 2), ("conv", 3, 2, 2, 2, "tanh")]
    net = _build(shape, layers, 3)
    d = sb.derive(net)
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(4, *shape)), np.eye(3)[[0, 1, 2, 1]]
    params = {p: rng.normal(size=tuple(int(v) for v in net.symbol(p).shape)) / 2 for p in d.params}
    t = {p: torch.tensor(v, requires_grad=True) for p, v in params.items()}
    loss, _ = _torch_loss(layers, torch.tensor(x), torch.tensor(y), t)
    loss.backward()
    m = sb.compile(d, backend=backend, dtype="float64")
    assert "= _fold(" in m.source and "= _conv(" not in m.source      # calls, not the helpers
    grads = m.grad(x, y, params)
    for p in d.params:
        _close(grads[p], t[p].grad.numpy())


def test_batchnorm_gradients_equal_torch_batch_norm():
    rng = np.random.default_rng(3)
    net = sb.Sequential(sb.Dense(6), sb.BatchNorm(), sb.Dense(5, "relu"), sb.BatchNorm(),
                        sb.Dense(3, "tanh"), inputs=4, loss="mse")
    d = sb.derive(net)
    assert net.init_scheme["gamma2"] == "ones"
    n = 9
    x, y = rng.normal(size=(n, 4)), rng.normal(size=(n, 3))
    params = {p: rng.normal(size=tuple(int(v) for v in net.symbol(p).shape)) for p in d.params}
    t = {p: torch.tensor(v, requires_grad=True) for p, v in params.items()}
    bn = lambda z, l: F.batch_norm(z, None, None, t[f"gamma{l}"][0], t[f"beta{l}"][0],   # noqa: E731
                                   training=True, eps=1e-5)
    a = bn(torch.tensor(x) @ t["W1"] + t["b1"], 2)
    a = bn(F.relu(a @ t["W3"] + t["b3"]), 4)
    out = torch.tanh(a @ t["W5"] + t["b5"])
    loss = ((out - torch.tensor(y)) ** 2).sum(1).mean()
    loss.backward()
    for backend in BACKENDS:
        m = sb.compile(d, backend=backend, dtype="float64")
        grads = m.grad(x, y, params)
        for p in d.params:
            _close(grads[p], t[p].grad.numpy())
        _close(m.loss(x, y, params), loss.item())
        # the prediction alone (its functions read the batch size too: torch's once lost it)
        _close(m.predict(x, params), out.detach().numpy())
    mod = sb.compile(d, backend="torch").module(params={p: torch.tensor(v) for p, v in params.items()})
    X = torch.tensor(x, requires_grad=True)
    _close(mod(X).detach().numpy(), out.detach().numpy())
    g = torch.tensor(rng.normal(size=(n, 3)))
    mod(X).backward(g)
    X0 = torch.tensor(x, requires_grad=True)
    a = bn(F.relu(bn(X0 @ t["W1"] + t["b1"], 2) @ t["W3"] + t["b3"]), 4)
    (torch.tanh(a @ t["W5"] + t["b5"]) * g).sum().backward()
    _close(X.grad.numpy(), X0.grad.numpy())


@pytest.mark.parametrize("geometry", [(2, 5, 4, 3, 2, 1), (1, 4, 6, 2, 1, 0), (3, 5, 5, 3, 3, 2),
                                      (2, 7, 6, 2, 3, 1), (1, 6, 5, 3, 1, 1)])
def test_image_map_definitions_equal_torch(geometry):
    """Each map's entry-by-entry SymPy definition (what the engine differentiates) is torch's."""
    C, H, W, k, s, p = geometry
    rng = np.random.default_rng(sum(geometry))
    x = rng.normal(size=(C, H, W))
    X = sp.ImmutableMatrix(x.reshape(C, H * W))
    xt = torch.tensor(x)[None]
    ev = lambda e: np.array(sp.ImmutableMatrix(e), dtype=np.float64)      # noqa: E731
    _close(ev(image.unfold(X, (C, H, W), k, s, p).apply(X)), F.unfold(xt, k, padding=p, stride=s)[0])
    q = min(p, k // 2)         # a pool's padding is at most half its window (as torch's)
    for k_, s_, q_ in ((2, 2, 0), (k, s, q)):     # side by side, and overlapping/padded windows
        _close(ev(image.maxpool(X, (C, H, W), k_, s_, q_).apply(X)), F.max_pool2d(xt, k_, s_, q_)[0].reshape(C, -1))
        _close(ev(image.avgpool(X, (C, H, W), k_, s_, q_).apply(X)), F.avg_pool2d(xt, k_, s_, q_)[0].reshape(C, -1))
    _close(ev(image.flatten(X, (C, H, W)).apply(X)), torch.flatten(xt, 1))
    # fold, the adjoint the engine uses for unfold's VJP, is torch's fold (col2im) where that applies
    Ho, Wo = image.Geometry(*geometry).out
    if (H + 2 * p - k) % s == 0 and (W + 2 * p - k) % s == 0:
        dcol = rng.normal(size=(C * k * k, Ho * Wo))
        folded = image.ImageMap(sp.ImmutableMatrix(dcol), "fold", geometry).apply(sp.ImmutableMatrix(dcol))
        _close(ev(folded), F.fold(torch.tensor(dcol)[None], (H, W), k, padding=p, stride=s)[0].reshape(C, -1))


def test_adjoint_proof_rejects_a_wrong_adjoint(monkeypatch):
    """The proof has teeth: a fold that misses one patch entry, an arg-max routing that doubles
    δ, are refused."""
    right = image._DEFINITIONS["fold"]

    def wrong(d, g):
        out = right(d, g)
        out[0][0] = out[0][0] - d[0, 0]
        return out
    monkeypatch.setitem(image._DEFINITIONS, "fold", wrong)
    image.prove_adjoint.cache_clear()
    with pytest.raises(DefinitionError, match="adjoint"):
        image.prove_adjoint("unfold")
    monkeypatch.setitem(image._DEFINITIONS, "fold", right)
    image.prove_adjoint.cache_clear()
    assert image.prove_adjoint("unfold")
    route = image.MaxPoolVJP.apply
    monkeypatch.setattr(image.MaxPoolVJP, "apply", lambda self, d, a: 2 * route(self, d, a))
    image.prove_maxpool_vjp.cache_clear()
    with pytest.raises(DefinitionError, match="arg-max"):
        image.prove_maxpool_vjp()
    monkeypatch.undo()
    image.prove_maxpool_vjp.cache_clear()
    assert image.prove_maxpool_vjp()


def test_engine_uses_the_proved_adjoint():
    """δ of a convolution's input is fold(K δ_Z): the adjoint node, not a typed formula."""
    net = sb.Sequential(sb.Conv2d(2, 2, activation="tanh"), sb.Conv2d(2, 2), sb.Flatten(), sb.Dense(1),
                        inputs=(1, 4, 4), loss="mse")
    d = sb.derive(net)
    delta = d.adjoint["A1"]
    assert isinstance(delta, image.ImageMap) and delta.op == "fold"
    assert d.gradient("K2").shape == (2 * 2 * 2, 2)


def test_cnn_definition_errors():
    with pytest.raises(DefinitionError, match="Flatten"):
        sb.Sequential(sb.Conv2d(2, 3), sb.Dense(2), inputs=(1, 5, 5))
    with pytest.raises(DefinitionError, match="images"):
        sb.Sequential(sb.Conv2d(2, 3), sb.Flatten(), sb.Dense(2), inputs=4)
    with pytest.raises(DefinitionError, match="does not fit"):
        sb.Sequential(sb.Conv2d(2, 7), sb.Flatten(), sb.Dense(2), inputs=(1, 5, 5))
    with pytest.raises(DefinitionError, match="rows that are samples"):
        sb.Sequential(sb.BatchNorm(), sb.Dense(2), inputs=(3, 4))
    net = sb.Sequential(sb.Conv2d(2, 3), sb.Flatten(), sb.Dense(2), inputs=(1, 5, 5))
    m = sb.compile(sb.derive(net))
    with pytest.raises(sb.SymbackError, match="one sample"):
        m.predict(np.zeros((3, 1, 4, 6)), m.init(0))


def test_cnn_document_renders_and_evaluates_exactly():
    """The derivation document of a small CNN is written (every line certified numerically), and
    the exact SymPy evaluation of one sample's gradient equals the compiled code's."""
    net = sb.Sequential(sb.Conv2d(2, 2, padding=1, activation="relu"), sb.MaxPool2d(2), sb.Flatten(),
                        sb.Dense(2), inputs=(1, 3, 3), loss="mse")
    d = sb.derive(net)
    tex = d.latex()
    assert r"\operatorname{unfold}_{2\times2,p=1}" in tex
    assert r"\operatorname{route}_{\arg\max}" in tex
    rng = np.random.default_rng(5)
    values = {"X": rng.normal(size=(1, 9)), "Y": rng.normal(size=(1, 2))}
    values.update({p: rng.normal(size=tuple(int(v) for v in net.symbol(p).shape)) for p in d.params})
    exact = d.evaluate(values)["gradient"]
    grads = sb.compile(d, dtype="float64").grad(values["X"].reshape(1, 1, 3, 3), values["Y"],
                                                {p: values[p] for p in d.params})
    for p in d.params:
        _close(grads[p], exact[p])



@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_library_images_are_reshaped_by_the_library(backend):
    """A batch of the library's images (n, C, H, W) is reshaped where it is, not read back
    into NumPy on the host and converted again (on JAX: two copies a step); the step's loss
    is the NumPy arrays' one."""
    net = sb.Sequential(sb.Conv2d(2, 3, activation="relu"), sb.MaxPool2d(2), sb.Flatten(),
                        sb.Dense(3, "softmax"), inputs=(1, 6, 6), loss="cross_entropy")
    d = sb.derive(net)
    m = sb.compile(d, backend=backend, dtype="float64")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(5, 1, 6, 6)), np.eye(3)[[0, 1, 2, 1, 0]]
    X, Y = _as(backend, x), _as(backend, y)
    hosted, host = [], m._host
    m._host = lambda a: hosted.append(a) or host(a)
    got_x, got_y = m._xy(X, Y)
    assert tuple(got_x.shape) == (5, 1, 36) and tuple(got_y.shape) == (5, 1, 3)
    assert not any(a is X for a in hosted)          # (Y is read once: its targets are checked)
    params = {p: np.asarray(v) for p, v in m.init(seed=1).items()}
    expected = sb.compile(d, dtype="float64").loss(x, y, params)
    assert m.step(X, Y, {p: _as(backend, v) for p, v in params.items()}, lr=0.1) == pytest.approx(expected, rel=1e-12)
