"""JAX and PyTorch backends against oracles independent of symback.

Oracles: HIPS autograd on forward passes written here (the gradients of the
generated JAX and torch code), ``torch.autograd`` on the same networks
written in plain PyTorch (the gradients of ``m.module()``), finite
differences (the self-check of the standalone modules), and the same
training run on one device or process (data parallelism).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import autograd.numpy as anp
import numpy as np
import pytest
import sympy as sp
from autograd import grad as ag_grad

import symback as sb
from symback.backends import backend_module_source, compile_backend
from symback.errors import SymbackError
from _backend_nets import data, matrix_graph

jax = pytest.importorskip("jax")
torch = pytest.importorskip("torch")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HIDDEN = ("tanh", "sigmoid", "relu", "softplus", "leaky_relu")
HEADS = (("identity", "mse"), ("identity", "half_mse"), ("sigmoid", "binary_cross_entropy"),
         ("identity", "logcosh"), ("identity", "huber"), ("softmax", "cross_entropy"))
COMBOS = [(h, o, l) for h in HIDDEN for o, l in HEADS]
TOL = {"float64": 1e-5, "float32": 1e-3}


# ------------------------------------------------------------------ networks and their oracles
def _sig(z, xp):
    return 1 / (1 + xp.exp(-z))


def act(name, z, xp):
    """Each activation's definition, written again for the oracle's library `xp`."""
    return {"identity": lambda: z, "sigmoid": lambda: _sig(z, xp), "tanh": lambda: xp.tanh(z),
            "relu": lambda: xp.where(z >= 0, z, 0 * z), "leaky_relu": lambda: xp.where(z >= 0, z, 0.01 * z),
            "softplus": lambda: xp.log(1 + xp.exp(z))}[name]()


def cost(name, p, t, xp):
    """Each loss's definition per output entry (summed over outputs, mean over samples)."""
    return {"mse": lambda: (p - t) ** 2, "half_mse": lambda: (p - t) ** 2 / 2,
            "binary_cross_entropy": lambda: -(t * xp.log(p) + (1 - t) * xp.log(1 - p)),
            "logcosh": lambda: xp.log(xp.cosh(p - t)),
            "huber": lambda: xp.where(xp.abs(p - t) <= 1, (p - t) ** 2 / 2, xp.abs(p - t) - 0.5),
            "cross_entropy": lambda: -t * xp.log(p)}[name]()


def oracle_loss(hidden, output, loss, params, X, Y, xp):
    """The batch loss written out in autograd.numpy or torch."""
    A = act(hidden, X @ params["W1"] + params["b1"], xp)
    Z = A @ params["W2"] + params["b2"]
    if output == "softmax":
        E = xp.exp(Z)
        P = E / E.sum(1, keepdims=True) if xp is anp else E / E.sum(1, keepdim=True)
    else:
        P = act(output, Z, xp)
    return cost(loss, P, Y, xp).sum() / X.shape[0] + (params["W1"] ** 2).sum() / 200


def assert_close(got, want, tol):
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    scale = max(np.max(np.abs(want)), 1e-12)
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * scale)


def eager(backend):
    """jax.disable_jit() for JAX (jit is exercised by the step, fit and module tests)."""
    import contextlib
    return jax.disable_jit() if backend == "jax" else contextlib.nullcontext()


_DERIVED: dict = {}


def derived(combo):
    if combo not in _DERIVED:
        _DERIVED[combo] = matrix_graph(*combo)
    return _DERIVED[combo]


# ------------------------------------------------------------------ gradients
@pytest.mark.parametrize("backend", ["jax", "torch"])
@pytest.mark.parametrize("combo", COMBOS, ids=["-".join(c) for c in COMBOS])
def test_matrix_gradients_match_autograd(combo, backend):
    d = derived(combo)
    X, Y = data(3, 2, combo[1])
    params64 = {k: np.asarray(v, dtype=np.float64)
                for k, v in compile_backend(d, "torch").init(seed=1).items()}
    params64["b1"] = params64["b1"] + 0.1    # biases away from 0, so that their terms show
    want_value = oracle_loss(*combo, params64, X, Y, anp)
    want = ag_grad(lambda p: oracle_loss(*combo, p, X, Y, anp))(params64)
    for dtype in ("float64", "float32"):
        m = compile_backend(d, backend, dtype)
        params = {k: m._ns["_asarray"](v) for k, v in params64.items()}
        with eager(backend):        # the printed code op by op: no XLA compile per network
            value, grads = m.value_and_grad(X, Y, params)
        assert set(grads) == set(m.params) == set(want)
        assert_close(value, want_value, TOL[dtype])
        for k in want:
            assert str(grads[k].dtype).endswith(dtype)
            assert_close(grads[k], want[k], TOL[dtype])


@pytest.mark.parametrize("combo", COMBOS, ids=["-".join(c) for c in COMBOS])
def test_module_backward_matches_torch_autograd(combo):
    d = derived(combo)
    X, Y = (torch.tensor(a) for a in data(3, 2, combo[1], seed=5))
    m = compile_backend(d, "torch")
    net = m.module(seed=2)
    L = net(X, Y)
    L.backward()
    plain = {k: v.detach().clone().requires_grad_(True) for k, v in net.params.items()}
    ref = oracle_loss(*combo, plain, X, Y, torch)
    ref.backward()
    assert_close(L.detach(), ref.detach(), 1e-12)
    for k, p in plain.items():
        assert_close(net.params[k].grad, p.grad, 1e-10)
    assert_close(net(X).detach(), m.predict(X, {k: v.detach() for k, v in net.params.items()}), 1e-14)


def scalar_graph():
    """a1 = σ(w1 x1), a2 = ReLU(w2 x2), ŷ = σ(b + a1 + a2), binary cross-entropy summed."""
    g = sb.Graph()
    x1, x2 = g.inputs("x1 x2")
    y = g.targets("y")
    w1, w2, b = g.params("w1 w2 b")
    a1 = g.node("a_1", sb.sigmoid(w1 * x1))
    a2 = g.node("a_2", sb.relu(w2 * x2))
    yhat = g.node("yhat", sb.sigmoid(b + a1 + a2))
    g.loss(-(y * sp.log(yhat) + (1 - y) * sp.log(1 - yhat)), reduction="sum")
    return sb.derive(g)


def scalar_oracle(p, X, Y):
    a1 = _sig(p["w1"] * X[:, 0], anp)
    a2 = anp.where(p["w2"] * X[:, 1] >= 0, p["w2"] * X[:, 1], 0.0)
    yh = _sig(p["b"] + a1 + a2, anp)
    return anp.sum(-(Y[:, 0] * anp.log(yh) + (1 - Y[:, 0]) * anp.log(1 - yh)))


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_scalar_graph_gradients_match_autograd(backend):
    d = scalar_graph()
    X, Y = data(2, 1, "sigmoid", n=9)
    p64 = {"w1": np.array(0.7), "w2": np.array(-0.4), "b": np.array(0.2)}
    want = ag_grad(lambda p: scalar_oracle(p, X, Y))(p64)
    for dtype in ("float64", "float32"):
        m = compile_backend(d, backend, dtype)
        params = {k: m._ns["_asarray"](v) for k, v in p64.items()}
        grads = m.grad(X, Y, params)
        assert_close(m.loss(X, Y, params), scalar_oracle(p64, X, Y), TOL[dtype])
        for k in want:
            assert tuple(grads[k].shape) == ()
            assert_close(grads[k], want[k], TOL[dtype])
        assert tuple(m.predict(X, params).shape) == (9, 1)


# ------------------------------------------------------------------ the Model API
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_model_api_step_and_fit(backend):
    d = derived(("tanh", "softmax", "cross_entropy"))
    m = compile_backend(d, backend)
    assert m.dtype == np.dtype("float32" if backend == "jax" else "float64")
    X, Y = data(3, 2, "softmax", n=40)
    params = m.init(seed=0)
    assert list(params) == ["W1", "b1", "W2", "b2"]
    assert np.all(np.asarray(params["b1"]) == 0)
    before = m.loss(X, Y, params)
    assert m.step(X, Y, params, lr=0.5) == pytest.approx(before, rel=1e-6)
    assert m.loss(X, Y, params) < before
    hist = m.fit(X, Y, params, epochs=5, lr=0.5, batch_size=8, seed=0, optimizer="momentum")
    assert len(hist) == 5 and hist[-1] < hist[0]
    with pytest.raises(SymbackError, match="columns"):
        m.loss(X[:, :2], Y, params)


def test_numpy_style_fit_is_the_same_run_in_jax_and_torch():
    d = derived(("sigmoid", "identity", "mse"))
    X, Y = data(3, 2, "identity", n=30)
    runs = []
    for backend in ("jax", "torch"):
        m = compile_backend(d, backend, "float64")
        params = m.init(seed=4)
        runs.append((m.fit(X, Y, params, epochs=3, lr=0.1, batch_size=7, seed=1, optimizer="adam"),
                     {k: np.asarray(v) for k, v in params.items()}))
    np.testing.assert_allclose(runs[0][0], runs[1][0], rtol=1e-10)
    for k in runs[0][1]:
        np.testing.assert_allclose(runs[0][1][k], runs[1][1][k], rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------ data parallel, really run
JAX_SCRIPT = """
import json, sys
import numpy as np, jax
sys.path.insert(0, {tests!r})
from _backend_nets import matrix_graph, data
from symback.backends import compile_backend
m = compile_backend(matrix_graph("tanh", "softmax", "cross_entropy"), "jax", "float64")
X, Y = data(3, 2, "softmax", n=64)
params = m.init(seed=0)
hist = m.fit(X, Y, params, epochs=3, lr=0.3, batch_size=16, seed=2)
shards = len(m._place(X[:16]).sharding.device_set)
print(json.dumps({{"devices": len(jax.devices()), "shards": shards, "history": list(hist),
                  "params": {{k: np.asarray(v).tolist() for k, v in params.items()}}}}))
"""


def _run(script, env_extra=None, timeout=120):
    env = {**os.environ, "PYTHONPATH": ROOT, **(env_extra or {})}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                         timeout=timeout, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_jax_fit_on_4_devices_equals_1_device():
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=4"
    four = json.loads(_run(JAX_SCRIPT.format(tests=os.path.join(ROOT, "tests")), {"XLA_FLAGS": flags})
                      .splitlines()[-1])
    assert (four["devices"], four["shards"]) == (4, 4)     # every batch split over 4 devices
    assert len(jax.devices()) == 1                          # this process: one CPU device
    m = compile_backend(matrix_graph("tanh", "softmax", "cross_entropy"), "jax", "float64")
    X, Y = data(3, 2, "softmax", n=64)
    params = m.init(seed=0)
    one = m.fit(X, Y, params, epochs=3, lr=0.3, batch_size=16, seed=2)
    np.testing.assert_allclose(four["history"], one, rtol=1e-12)
    for k in params:
        np.testing.assert_allclose(four["params"][k], np.asarray(params[k]), rtol=1e-10, atol=1e-13)


DDP_SCRIPT = """
import os, sys
import numpy as np, torch, torch.distributed as dist
sys.path.insert(0, {tests!r})
from _backend_nets import matrix_graph, data
from symback.backends import compile_backend

rank, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
torch.set_num_threads(1)
m = compile_backend(matrix_graph("relu", "softmax", "cross_entropy"), "torch")
dist.init_process_group("gloo", rank=rank, world_size=2)
net = torch.nn.parallel.DistributedDataParallel(m.module(seed=0))
opt = torch.optim.SGD(net.parameters(), lr=0.2)
X, Y = (torch.tensor(a) for a in data(3, 2, "softmax", n=32))
half = slice(16 * rank, 16 * (rank + 1))
for _ in range(4):
    opt.zero_grad()
    net(X[half], Y[half]).backward()
    opt.step()
if rank == 0:
    np.savez(out, **{{k: v.detach().numpy() for k, v in net.module.params.items()}})
dist.destroy_process_group()
sys.stdout.flush()
os._exit(0)     # a process that used gloo can take seconds to exit normally
"""


def test_torch_module_under_ddp_equals_one_process(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT.format(tests=os.path.join(ROOT, "tests")))
    out = tmp_path / "ddp.npz"
    env = {**os.environ, "PYTHONPATH": ROOT}
    ranks = [subprocess.Popen([sys.executable, str(script), str(r), str(port), str(out)], env=env, cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    for proc in ranks:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-3000:]
    m = compile_backend(derived(("relu", "softmax", "cross_entropy")), "torch")
    net = m.module(seed=0)
    opt = torch.optim.SGD(net.parameters(), lr=0.2)
    X, Y = (torch.tensor(a) for a in data(3, 2, "softmax", n=32))
    for _ in range(4):
        opt.zero_grad()
        net.loss(X, Y).backward()
        opt.step()
    with np.load(out) as ddp:
        for k, v in net.params.items():
            np.testing.assert_allclose(ddp[k], v.detach().numpy(), rtol=1e-10, atol=1e-13)
        assert not np.allclose(ddp["W1"], m.init(seed=0)["W1"].numpy())     # it trained


# ------------------------------------------------------------------ modules, imports, errors
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_standalone_module_runs_its_finite_difference_check(backend, tmp_path):
    src = backend_module_source(derived(("softplus", "sigmoid", "binary_cross_entropy")), backend)
    other = "torch" if backend == "jax" else "jax"
    assert f"import {other}" not in src and "import symback" not in src and "from symback" not in src
    path = tmp_path / "net.py"
    compile_backend(derived(("softplus", "sigmoid", "binary_cross_entropy")), backend).export(path)
    assert path.read_text() == src
    res = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "OK" in res.stdout, res.stdout + res.stderr[-2000:]


def test_import_symback_imports_neither_jax_nor_torch():
    out = _run("import sys, symback, symback.backends; print('jax' in sys.modules, 'torch' in sys.modules)")
    assert out.split() == ["False", "False"]


@pytest.mark.parametrize("backend,extra", [("jax", "symback[jax]"), ("torch", "symback[torch]")])
def test_missing_library_is_one_clear_error(backend, extra, monkeypatch):
    monkeypatch.setitem(sys.modules, backend, None)       # import jax / torch now fails
    with pytest.raises(SymbackError, match=rf"pip install {extra.replace('[', '.').replace(']', '.')}"):
        compile_backend(derived(("tanh", "identity", "mse")), backend)


def test_unknown_backend_and_dtype():
    with pytest.raises(SymbackError, match="unknown backend 'tf'"):
        compile_backend(derived(("tanh", "identity", "mse")), "tf")
    with pytest.raises(SymbackError, match="int8.*float64.*float32"):
        compile_backend(derived(("tanh", "identity", "mse")), "torch", "int8")
