"""DESIGN.md's public API taken at its word, found by an audit of every documented call: ``m.step``
refuses a learning rate or data that would wreck the parameters (lr=nan made every parameter NaN,
lr="0.1" was a TypeError, a NaN in X went into the parameters), as ``m.fit`` does; and the example
``symback codegen --help`` gives runs on the module it writes.  Oracle: torch autograd."""
from __future__ import annotations

import re

import numpy as np
import pytest

import symback as sb
from symback.cli import build_parser, main
from symback.errors import DataError, TrainingError

torch = pytest.importorskip("torch")
BACKENDS = ("numpy", "jax", "torch")
X = np.array([[0.5, -1.0], [0.0, 2.0], [1.0, 1.0], [-0.3, 0.7]])
Y = np.eye(2)[[0, 1, 0, 1]]


@pytest.fixture(scope="module")
def d():
    return sb.derive(sb.mlp([2, 3, 2], activation="tanh", output="softmax", loss="cross_entropy"))


def _numpy(params) -> dict:
    return {k: np.array(v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in params.items()}


def _torch_grads(params: dict, X, Y) -> tuple[float, dict]:
    """Loss and gradients of the same network, written in torch (float64) and differentiated by autograd."""
    w = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in params.items()}
    z = torch.tanh(torch.tensor(X) @ w["W1"] + w["b1"]) @ w["W2"] + w["b2"]
    loss = torch.nn.functional.cross_entropy(z, torch.tensor(Y).argmax(1))
    loss.backward()
    return loss.item(), {k: v.grad.numpy() for k, v in w.items()}


@pytest.mark.parametrize("backend", BACKENDS)
def test_step_refuses_a_bad_rate_before_any_parameter_changes(d, backend):
    m = sb.compile(d, backend=backend)
    params = m.init(seed=0)
    before = _numpy(params)
    for lr in (float("nan"), float("inf"), -0.1, "0.1", None, True):
        with pytest.raises(TrainingError, match="lr must be a non-negative finite number"):
            m.step(X, Y, params, lr=lr)
        for k, v in _numpy(params).items():
            np.testing.assert_array_equal(v, before[k])
    m.step(X, Y, params, lr=0)          # a rate of 0 is a step that changes nothing (torch's SGD allows it)
    for k, v in _numpy(params).items():
        np.testing.assert_array_equal(v, before[k])
    # a good rate still steps: p - lr·∂L/∂p with torch's gradient
    loss, grads = _torch_grads(before, X, Y)
    assert m.step(X, Y, params, lr=np.float64(0.5)) == pytest.approx(loss, rel=1e-12)
    for k, v in _numpy(params).items():
        np.testing.assert_allclose(v, before[k] - 0.5 * grads[k], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("backend", BACKENDS)
def test_step_refuses_non_finite_data_before_any_parameter_changes(d, backend):
    m = sb.compile(d, backend=backend)
    params = m.init(seed=0)
    before = _numpy(params)
    Xn, Yi = X.copy(), Y.copy()
    Xn[2, 1], Yi[3, 0] = np.nan, np.inf
    for args, what in (((Xn, Y), r"X holds NaN or infinite values \(1 of them, the first in sample 2\)"),
                       ((X, Yi), r"^Y(: row 3 sums to inf| holds NaN or infinite values)")):  # a target rule may see it first
        if backend == "torch":
            args = tuple(map(torch.tensor, args))
        with pytest.raises(DataError, match=what):
            m.step(*args, params, lr=0.1)
        for k, v in _numpy(params).items():
            np.testing.assert_array_equal(v, before[k])
    # finite data whose sum overflows to infinity are still finite data
    big = np.full_like(X, 1e308)
    with np.errstate(over="ignore"):
        assert np.isfinite(m.step(big if backend != "torch" else torch.tensor(big), Y, params, lr=0.1))


def test_the_codegen_example_in_the_help_runs(tmp_path, monkeypatch):
    """`symback codegen --help` said ``loss, grads = net.grad(X, Y, params)``: grad returns a dict, so
    that line unpacked its parameter names (or failed).  The example now runs as written."""
    epilog = build_parser()._subparsers._group_actions[0].choices["codegen"].epilog
    statement = re.search(r"then:\s*(.+?)\s*(?:\(a dict|$)", " ".join(epilog.split())).group(1)
    example = re.search(r"symback codegen (.+?) -o net\.py", epilog).group(1).split()
    assert main(["codegen", *example, "-o", str(tmp_path / "net.py")]) == 0
    monkeypatch.syspath_prepend(str(tmp_path))
    rng = np.random.default_rng(0)
    Xd, Yd = rng.normal(size=(6, 2)), rng.normal(size=(6, 1))
    import net  # noqa: F401 - the written module, imported the way the example does
    ns = {"X": Xd, "Y": Yd, "params": net.init(0)}
    exec(statement, ns)            # the help's own example text, as a user would type it
    w = {k: torch.tensor(np.asarray(v), requires_grad=True) for k, v in ns["params"].items()}
    loss = ((torch.tanh(torch.tensor(Xd) @ w["W1"] + w["b1"]) @ w["W2"] + w["b2"] - torch.tensor(Yd)) ** 2).sum(1).mean()
    loss.backward()
    assert set(ns["grads"]) == set(w)
    for k in w:
        np.testing.assert_allclose(ns["grads"][k], w[k].grad.numpy(), rtol=1e-10, atol=1e-12)
