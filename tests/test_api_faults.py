"""Bad input to the Python API, found by a probe of every public call: each is a DataError or a
DefinitionError that says what is wrong (it was a raw error from NumPy, torch or JAX, or a wrong
result), and a failed step leaves every parameter as it was."""
from __future__ import annotations

import numpy as np
import pytest

import symback as sb
from symback.errors import DataError, DefinitionError

torch = pytest.importorskip("torch")
BACKENDS = ("numpy", "jax", "torch")
X = np.array([[0.5, -1.0], [0.0, 2.0], [1.0, 1.0]])
Y = np.eye(2)[[0, 1, 0]]


def _snapshot(v):
    """A copy of a parameter as NumPy holds it (None as None)."""
    return None if v is None else np.array(v.numpy() if isinstance(v, torch.Tensor) else v)


@pytest.fixture(scope="module")
def d():
    return sb.derive(sb.mlp([2, 3, 2], activation="tanh", output="softmax", loss="cross_entropy"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_data_that_are_not_real_numbers_are_refused(d, backend):
    """Complex data lost their imaginary part, strings were read as numbers."""
    m = sb.compile(d, backend=backend)
    p = m.init(seed=0)
    for bad, kind in ((X + 5j, "complex128"), (X.astype(str), "<U32"), (X.astype(object), "object")):
        with pytest.raises(DataError, match=f"X is not numeric array data: it holds {kind} values"):
            m.loss(bad, Y, p)
    assert m.loss(X.tolist(), Y, p) == pytest.approx(sb.compile(d).loss(X, Y, sb.compile(d).init(seed=0)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_failed_step_changes_no_parameter(d, backend):
    """A bias given as a number was never updated (numpy) or made NaN (torch); an integer weight
    failed after the other parameters had been updated.  Now each is refused before the step."""
    m = sb.compile(d, backend=backend)
    good = {k: np.asarray(v) for k, v in m.init(seed=0).items()}
    for change, why in ((dict(b1=0.0), r"'b1' has shape \(\), expected \(1, 3\)"),
                        (dict(W1=np.zeros((2, 3), dtype=int)), "'W1' is not numeric array data: it holds int64"),
                        (dict(b1=None), "'b1' is not numeric array data: it holds NoneType"),
                        (dict(b1=np.zeros((1, 3)) + 0j), "'b1' is not numeric array data: it holds complex128")):
        params = {k: (torch.tensor(v) if backend == "torch" else v.copy()) for k, v in good.items()} | change
        before = {k: _snapshot(v) for k, v in params.items()}
        for call in (lambda: m.step(X, Y, params, lr=0.5), lambda: m.grad(X, Y, params), lambda: m.predict(X, params)):
            with pytest.raises(DataError, match=why):
                call()
        for k, v in params.items():
            np.testing.assert_array_equal(_snapshot(v), before[k])


def test_another_librarys_arrays_are_named(d):
    p = sb.compile(d).init(seed=0)
    with pytest.raises(DataError, match="'W1' is a torch.Tensor; this model computes with numpy"):
        sb.compile(d).grad(X, Y, {k: torch.tensor(v) for k, v in p.items()})
    with pytest.raises(DataError, match="'W1' is a torch.Tensor; this model computes with jax"):
        sb.compile(d, backend="jax").predict(X, {k: torch.tensor(v) for k, v in p.items()})


@pytest.mark.parametrize("seed", [-1, "a", 1.5, True])
def test_seeds_are_whole_numbers(d, seed):
    m = sb.compile(d)
    with pytest.raises(DataError, match="seed must be a whole number >= 0"):
        m.init(seed)
    with pytest.raises(DataError, match="seed must be a whole number >= 0"):
        m.fit(X, Y, m.init(0), epochs=1, seed=seed)


def test_causal_is_true_or_false():
    """causal="no" was truthy: a causal mask nobody asked for."""
    for layer in (sb.Attention, sb.TransformerBlock):
        with pytest.raises(DefinitionError, match="causal must be True or False, got 'no'"):
            layer(causal="no")
    assert sb.Attention(causal=np.bool_(False)).causal is False


def test_the_layer_forms_check_x_before_the_library_does():
    """A wrong image size reached torch's and XLA's kernels (their own errors); the messages name
    every shape the network takes, images (n, C, H, W) first."""
    jax = pytest.importorskip("jax")
    net = sb.Sequential(sb.Conv2d(2, 3, padding=1, activation="relu"), sb.MaxPool2d(2), sb.Flatten(),
                        sb.Dense(2, "softmax"), inputs=(1, 4, 4), loss="cross_entropy")
    d = sb.derive(net)
    why = r"X has shape \(2, 1, 5, 5\), but one sample of the network is an image \(1, 4, 4\): " \
          r"give X of shape \(n, 1, 4, 4\) or \(n, 16\) or \(n, 1, 16\)"
    for backend in BACKENDS:
        m = sb.compile(d, backend=backend)
        with pytest.raises(DataError, match=why):
            m.predict(np.zeros((2, 1, 5, 5)), m.init(0))
    with pytest.raises(DataError, match=why):
        sb.compile(d, backend="torch").module()(torch.zeros(2, 1, 5, 5, dtype=torch.float64))
    mj = sb.compile(d, backend="jax")
    f, p = mj.function(), mj.init(0)
    with pytest.raises(DataError, match=why):
        jax.jit(jax.grad(lambda q: f(q, jax.numpy.zeros((2, 1, 5, 5))).sum()))(p)
