"""fit() and its optimizers: training works, and each update is the textbook one."""
from __future__ import annotations

import numpy as np
import pytest

import symback as sb
from conftest import seed002_graph
from symback.errors import DataError, TrainingError
from symback.train import Adam, History, Momentum, get_optimizer


def regression_data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    Y = np.stack([np.sin(X[:, 0]) + 0.5 * X[:, 1], X[:, 2] * X[:, 0]], axis=1)
    return X, Y


@pytest.fixture(scope="module")
def model():
    return sb.compile(sb.derive(sb.mlp([3, 8, 2], "tanh", "identity", "mse")))


@pytest.mark.parametrize("optimizer,lr", [("sgd", 0.05), ("momentum", 0.02), ("adam", 0.01)])
def test_fit_reduces_the_loss(model, optimizer, lr):
    X, Y = regression_data()
    params = model.init(seed=0)
    start = model.loss(X, Y, params)
    history = model.fit(X, Y, params, epochs=15, lr=lr, batch_size=16, seed=0, optimizer=optimizer)
    assert isinstance(history, History) and len(history) == 15
    assert history[-1] < 0.7 * history[0]
    assert model.loss(X, Y, params) < 0.6 * start          # params were trained in place


def test_fit_is_reproducible_and_shuffles(model):
    X, Y = regression_data()
    runs = []
    for seed in (0, 0, 1):
        p = model.init(seed=0)
        model.fit(X, Y, p, epochs=2, lr=0.05, batch_size=8, seed=seed)
        runs.append(p)
    assert all(np.array_equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert not all(np.array_equal(runs[0][k], runs[2][k]) for k in runs[0])   # another order


def test_full_batch_sgd_equals_repeated_steps(model):
    X, Y = regression_data(n=20)
    a, b = model.init(seed=4), model.init(seed=4)
    history = model.fit(X, Y, a, epochs=3, lr=0.1, batch_size=None, shuffle=False)
    losses = [model.step(X, Y, b, lr=0.1) for _ in range(3)]
    assert list(history) == pytest.approx(losses, rel=1e-12)
    assert all(np.allclose(a[k], b[k], rtol=1e-12, atol=1e-14) for k in a)


def test_validation_history(model):
    X, Y = regression_data(n=80)
    params = model.init(seed=0)
    h = model.fit(X[:60], Y[:60], params, epochs=4, lr=0.05, validation=(X[60:], Y[60:]))
    assert len(h.val_loss) == 4 and h["val_loss"] is h.val_loss
    assert h["loss"] == h.loss == list(h)
    assert h.val_loss[-1] == pytest.approx(model.loss(X[60:], Y[60:], params))
    with pytest.raises(DataError):
        model.fit(X, Y, params, epochs=1, validation=X)


def test_progress_bar(model, capsys):
    pytest.importorskip("tqdm")
    X, Y = regression_data(n=16)
    model.fit(X, Y, model.init(), epochs=3, lr=0.05, progress=True)
    assert "3/3" in capsys.readouterr().err


def test_non_finite_loss_stops_with_a_clear_error(model):
    X, Y = regression_data(n=32)
    params = model.init(seed=0)
    with pytest.raises(TrainingError, match=r"epoch \d+, batch \d+"), np.errstate(all="ignore"):
        model.fit(X * 1e3, Y * 1e6, params, epochs=50, lr=10.0, batch_size=8)
    Xn = X.copy()
    Xn[3, 1] = np.nan
    p, before = model.init(), model.init()
    # bad data are named before any step, and the parameters stay as they were
    with pytest.raises(DataError, match=r"X holds NaN or infinite values \(1 of them, the first in sample 3\)"):
        model.fit(Xn, Y, p, epochs=1, lr=0.01, batch_size=None)
    Yn = Y.copy()
    Yn[5, 0] = np.inf
    with pytest.raises(DataError, match="Y holds NaN or infinite.*sample 5"):
        model.fit(X, Yn, p, epochs=1, lr=0.01)
    with pytest.raises(DataError, match="Y holds NaN"):
        model.fit(X, Y, p, epochs=1, lr=0.01, validation=(X, Yn))
    for k in p:
        np.testing.assert_array_equal(p[k], before[k])


def test_bad_arguments(model):
    X, Y = regression_data(n=8)
    p = model.init()
    with pytest.raises(TrainingError, match="optimizer"):
        model.fit(X, Y, p, epochs=1, optimizer="lbfgs")
    with pytest.raises(TrainingError, match="lr"):
        model.fit(X, Y, p, epochs=1, lr=-1.0)
    with pytest.raises(TrainingError, match="batch_size"):
        model.fit(X, Y, p, epochs=1, batch_size=0)
    with pytest.raises(TrainingError, match="epochs"):
        model.fit(X, Y, p, epochs=-2)
    with pytest.raises(TrainingError):
        get_optimizer("adam", beta1=1.5)


def test_momentum_and_adam_follow_the_textbook():
    """Each update against the formulas written out here for a fixed gradient sequence."""
    g_seq = [np.array([0.5, -1.0]), np.array([0.25, 2.0]), np.array([-1.0, 0.1])]
    lr = 0.1
    p_m, p_a = {"w": np.zeros(2)}, {"w": np.zeros(2)}
    mom, adam = Momentum(beta=0.9), Adam(beta1=0.9, beta2=0.999, eps=1e-8)
    v = np.zeros(2)
    m1, m2 = np.zeros(2), np.zeros(2)
    w_m, w_a = np.zeros(2), np.zeros(2)
    for t, g in enumerate(g_seq, start=1):
        mom.update(p_m, {"w": g}, lr)
        adam.update(p_a, {"w": g}, lr)
        v = 0.9 * v + g
        w_m = w_m - lr * v
        m1 = 0.9 * m1 + 0.1 * g
        m2 = 0.999 * m2 + 0.001 * g * g
        mhat, vhat = m1 / (1 - 0.9 ** t), m2 / (1 - 0.999 ** t)
        w_a = w_a - lr * mhat / (np.sqrt(vhat) + 1e-8)
        np.testing.assert_allclose(p_m["w"], w_m, rtol=1e-13)
        np.testing.assert_allclose(p_a["w"], w_a, rtol=1e-13)


@pytest.mark.parametrize("backend", ["numpy", "jax", "torch"])
def test_fit_with_adam_equals_torch_optim_adam(backend):
    """fit(optimizer="adam") with the default ε against torch.optim.Adam on the same network
    and batches (one batch an epoch, so no order to replicate): symback put ε beside √v, not
    the bias-corrected √v̂, and its parameters were 2e-7 off torch's after a few steps."""
    torch = pytest.importorskip("torch")
    if backend == "jax":
        pytest.importorskip("jax")
    m = sb.compile(sb.derive(sb.mlp([3, 4, 2], activation="tanh", output="identity", loss="mse")),
                   backend=backend, dtype="float64")
    rng = np.random.default_rng(1)
    X, Y = rng.normal(size=(8, 3)), rng.normal(size=(8, 2))
    start = {k: np.asarray(v, dtype=np.float64) for k, v in m.init(seed=0).items()}
    t = {k: torch.tensor(v, requires_grad=True) for k, v in start.items()}
    opt = torch.optim.Adam(t.values(), lr=0.05)
    for _ in range(6):
        opt.zero_grad()
        h = torch.tanh(torch.tensor(X) @ t["W1"] + t["b1"])
        loss = ((h @ t["W2"] + t["b2"] - torch.tensor(Y)) ** 2).sum(1).mean()
        loss.backward()
        opt.step()
    params = {k: (torch.tensor(v) if backend == "torch" else v.copy()) for k, v in start.items()}
    m.fit(X, Y, params, epochs=6, lr=0.05, batch_size=None, optimizer="adam", shuffle=False)
    for k in start:
        np.testing.assert_allclose(np.asarray(params[k]), t[k].detach().numpy(), rtol=1e-12, atol=1e-14)


def test_scalar_graph_fit_updates_zero_d_params():
    g, _ = seed002_graph()          # ŷ = b + w1 x1 + w2 x2, squared error
    m = sb.compile(sb.derive(g))
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 2))
    Y = X @ np.array([[2.0], [-1.0]]) + 0.5
    params = m.init(seed=0)
    objs = {k: id(v) for k, v in params.items()}
    m.fit(X, Y, params, epochs=60, lr=0.1, batch_size=10, optimizer="adam")
    assert {k: id(v) for k, v in params.items()} == objs
    assert float(params["w1"]) == pytest.approx(2.0, abs=0.05)
    assert float(params["w2"]) == pytest.approx(-1.0, abs=0.05)
    assert float(params["b"]) == pytest.approx(0.5, abs=0.05)


def test_digits_above_95_percent():
    datasets = pytest.importorskip("sklearn.datasets")
    from sklearn.model_selection import train_test_split
    X, y = datasets.load_digits(return_X_y=True)
    X = X / 16.0
    Y = np.eye(10)[y]
    Xtr, Xte, Ytr, Yte = train_test_split(X, Y, test_size=0.25, random_state=0, stratify=y)
    m = sb.compile(sb.derive(sb.mlp([64, 32, 10], "tanh", "softmax", "cross_entropy")))
    params = m.init(seed=0)
    history = m.fit(Xtr, Ytr, params, epochs=20, lr=0.1, batch_size=32, seed=0, validation=(Xte, Yte))
    accuracy = np.mean(m.predict(Xte, params).argmax(axis=1) == Yte.argmax(axis=1))
    assert accuracy > 0.95
    assert history[-1] < history[0] / 5



# ------------------------------------------------------------------ one loop, every backend
BACKENDS = ["numpy", "jax", "torch"]


@pytest.fixture(scope="module")
def derivation():
    return sb.derive(sb.mlp([3, 8, 2], "tanh", "identity", "mse"))


def host(params):
    return {k: np.asarray(v) for k, v in params.items()}


@pytest.mark.parametrize("backend", BACKENDS)
def test_full_batch_momentum_equals_the_textbook_by_hand(derivation, backend):
    """Every backend's fit (its own update path: in place on NumPy, compiled on JAX and torch)
    against momentum written out here over the model's gradients, unshuffled full batches."""
    m = sb.compile(derivation, backend=backend, dtype="float64")
    X, Y = regression_data(n=20)
    params, by_hand = m.init(seed=4), host(m.init(seed=4))
    history = m.fit(X, Y, params, epochs=3, lr=0.1, batch_size=None, shuffle=False, optimizer="momentum")
    v, losses = {k: 0.0 for k in by_hand}, []
    for _ in range(3):
        value, grads = m.value_and_grad(X, Y, by_hand)
        losses.append(value)
        for k, g in grads.items():
            v[k] = 0.9 * v[k] + np.asarray(g)
            by_hand[k] = by_hand[k] - 0.1 * v[k]
    assert list(history) == pytest.approx(losses, rel=1e-12)
    for k in by_hand:
        np.testing.assert_allclose(np.asarray(params[k]), by_hand[k], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_validation_progress_and_any_optimizer_object_on_every_backend(derivation, backend, capsys):
    """What the NumPy fit offered, now the one loop's, on JAX and torch: validation losses, a
    progress bar, and an optimizer object with update(params, grads, lr) (run eagerly)."""
    pytest.importorskip("tqdm")
    m = sb.compile(derivation, backend=backend, dtype="float64")
    X, Y = regression_data(n=40)
    params = m.init(seed=0)
    h = m.fit(X[:30], Y[:30], params, epochs=3, lr=0.05, batch_size=8, validation=(X[30:], Y[30:]),
              progress=True)
    assert "3/3" in capsys.readouterr().err
    assert len(h.val_loss) == 3 and h.val_loss[-1] == pytest.approx(m.loss(X[30:], Y[30:], params), rel=1e-12)

    class PlainSGD:                       # the in-place protocol, written out
        def update(self, params, grads, lr):
            for k, g in grads.items():
                params[k] = params[k] - lr * g

    runs = []
    for optimizer in ("sgd", PlainSGD()):
        p = m.init(seed=1)
        runs.append((m.fit(X, Y, p, epochs=2, lr=0.05, batch_size=8, seed=3, optimizer=optimizer), host(p)))
    np.testing.assert_allclose(runs[0][0], runs[1][0], rtol=1e-12)
    for k in runs[0][1]:
        np.testing.assert_allclose(runs[0][1][k], runs[1][1][k], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_a_diverging_fit_stops_where_numpy_stops_on_every_backend(backend):
    """Mini-batches, summed on the device: the epoch that broke is rerun batch by batch, so the
    error names the same epoch and batch as NumPy's (whose parameters test_faults checks by
    hand) and the parameters are the same last finite ones."""
    g = sb.load_spec(sb.__path__[0] + "/../examples/seed002.toml")
    d = sb.derive(g)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(8, 2))
    Y = X @ [1.0, -2.0] + 0.5
    runs = []
    for b in ("numpy", backend):
        m = sb.compile(d, backend=b, dtype="float64")
        params = m.init(seed=0)
        with np.errstate(all="ignore"), pytest.raises(TrainingError, match="last finite values") as info:
            m.fit(X, Y, params, epochs=500, lr=2.0, batch_size=3, optimizer="momentum")
        runs.append((str(info.value).split(":")[0], host(params)))
    assert runs[0][0] == runs[1][0] and ", batch " in runs[0][0]
    for k in runs[0][1]:
        assert np.isfinite(runs[1][1][k])
        np.testing.assert_allclose(runs[1][1][k], runs[0][1][k], rtol=1e-9)


def test_gradient_norms_are_recorded_on_every_backend(derivation):
    """fit_recorded's gradient norms (the --plot panel) on torch equal NumPy's."""
    from symback.train import fit_recorded
    X, Y = regression_data(n=24)
    got = []
    for backend in ("numpy", "torch"):
        m = sb.compile(derivation, backend=backend)
        got.append(fit_recorded(m, X, Y, m.init(seed=2), norms=True, epochs=2, lr=0.05, batch_size=8,
                                optimizer="adam"))
    np.testing.assert_allclose(got[1][0], got[0][0], rtol=1e-12)
    for k in got[0][1]:
        assert len(got[0][1][k]) == 2
        np.testing.assert_allclose(got[1][1][k], got[0][1][k], rtol=1e-10)
