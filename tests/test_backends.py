"""JAX and PyTorch backends against oracles independent of symback.

Oracles: HIPS autograd on forward passes written again in
``_backend_nets.py`` (the gradients of the generated JAX and torch code,
for every builder), ``torch.autograd`` on the same networks written in
plain PyTorch (the gradients of ``m.module()``), finite differences (the
self-check of the standalone modules), and the same training run on one
device or process (data parallelism).  The NumPy backend's gradients are
compared too: one code generator, three printers, one answer.
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import socket
import subprocess
import sys

import autograd.numpy as anp
import numpy as np
import pytest
from autograd import grad as ag_grad

import symback as sb
from symback.backends import backend_module_source
from symback.errors import DataError, SymbackError
from _backend_nets import BUILDERS, HEADS, HIDDEN, data, mlp_net
from _command import main_run

jax = pytest.importorskip("jax")
torch = pytest.importorskip("torch")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMBOS = [(h, o, l) for h in HIDDEN for o, l in HEADS]
#: float32 on a covering subset: every activation and every head at least once
F32 = {c for i, c in enumerate(COMBOS) if i % (len(HEADS) + 1) == 0} | {("tanh", o, l) for o, l in HEADS}
NETS = [("mlp-" + "-".join(c), c) for c in COMBOS] + [(name, name) for name in BUILDERS]
TOL = {"float64": 1e-5, "float32": 1e-3}


def assert_close(got, want, tol):
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    scale = max(np.max(np.abs(want)), 1e-12)
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * scale)


def eager(backend):
    """jax.disable_jit() for JAX: a test of the printed formulas gains nothing from an XLA
    compile per network (jit is exercised by the step, fit, module and data-parallel tests)."""
    return jax.disable_jit() if backend == "jax" else contextlib.nullcontext()


_NETS: dict = {}


def net(key):
    """(derivation, oracle, (inputs, outputs, target kind)) of an mlp combo or a builder, made once."""
    if key not in _NETS:
        _NETS[key] = mlp_net(*key) if isinstance(key, tuple) else BUILDERS[key]()
    return _NETS[key]


def start_params(d, seed=1):
    """Parameters from the NumPy Model's init, biases moved off 0 so that their terms show."""
    params = sb.compile(d).init(seed=seed)
    return {k: np.asarray(v + 0.1 if k.startswith("b") and v.ndim else v, dtype=np.float64)
            for k, v in params.items()}


# ------------------------------------------------------------------ gradients
# torch on every net; JAX on every builder and the float32 subset (each activation, each head) in
# a normal run, on every net in slow mode
@pytest.mark.parametrize("key, backend", [
    pytest.param(key, backend, id=f"{name}-{backend}",
                 marks=[pytest.mark.slow] if backend == "jax" and isinstance(key, tuple) and key not in F32 else [])
    for name, key in NETS for backend in ("jax", "torch")])
def test_gradients_match_autograd_and_the_numpy_backend(key, backend):
    d, oracle, (n_in, n_out, target) = net(key)
    X, Y = data(n_in, n_out, target)
    p64 = start_params(d)
    want_value = oracle(p64, X, Y, anp)
    want = ag_grad(lambda p: oracle(p, X, Y, anp))(p64)
    numpy_value, numpy_grads = sb.compile(d).value_and_grad(X, Y, p64)
    assert_close(numpy_value, want_value, 1e-10)
    for dtype in ("float64", "float32") if key in F32 or not isinstance(key, tuple) else ("float64",):
        m = sb.compile(d, backend=backend, dtype=dtype)
        params = {k: m._ns["_asarray"](v) for k, v in p64.items()}
        with eager(backend):
            value, grads = m.value_and_grad(X, Y, params)
        assert list(grads) == list(m.params) and set(grads) == set(want)
        assert_close(value, want_value, TOL[dtype])
        for k in want:
            assert str(grads[k].dtype).endswith(dtype) and tuple(grads[k].shape) == np.shape(p64[k])
            assert_close(grads[k], want[k], TOL[dtype])
            assert_close(grads[k], numpy_grads[k], TOL[dtype])


@pytest.mark.parametrize("key", [k for _, k in NETS], ids=[n for n, _ in NETS])
def test_module_backward_matches_torch_autograd(key):
    d, oracle, (n_in, n_out, target) = net(key)
    X, Y = (torch.tensor(a) for a in data(n_in, n_out, target, seed=5))
    m = sb.compile(d, backend="torch")
    module = m.module(params={k: torch.tensor(v) for k, v in start_params(d, seed=2).items()})
    L = module(X, Y)
    L.backward()
    plain = {k: v.detach().clone().requires_grad_(True) for k, v in module.params.items()}
    ref = oracle(plain, X, Y, torch)
    ref.backward()
    assert_close(L.detach(), ref.detach(), 1e-12)
    for k, p in plain.items():
        assert_close(module.params[k].grad, p.grad, 1e-10)
    assert_close(module(X).detach(), m.predict(X, {k: v.detach() for k, v in module.params.items()}), 1e-14)


@pytest.mark.parametrize("hidden,kernel", [("relu", "threshold_backward"), ("sigmoid", "sigmoid_backward"),
                                           ("tanh", "tanh_backward")])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_torch_fused_kernels_keep_the_formulas(hidden, kernel, dtype):
    """The torch printer's one-pass kernels (σ by torch.sigmoid, g⊙[z ≥ 0], g⊙y⊙(1−y), g⊙(1−y²),
    W -= Aᵀ D as addmm_) compute the NumPy backend's formulas, ReLU'(0) = 1 included: rows of
    X that are 0 with zero biases give pre-activations that are exactly 0."""
    d = sb.derive(sb.mlp([3, 4, 4, 2], activation=hidden, output="softmax", loss="cross_entropy"))
    m, numpy_model = sb.compile(d, dtype, backend="torch"), sb.compile(d, dtype)
    step = m.source[m.source.index("def _step"):]
    assert f"torch.ops.aten.{kernel}(" in step and ".addmm_(" in step
    assert ("torch.sigmoid(" in step) == (hidden == "sigmoid") and "torch.where" not in step
    X, Y = data(3, 2, "softmax", n=9)
    X[:3] = 0.0
    X, Y = X.astype(dtype), Y.astype(dtype)
    params = {k: (np.zeros_like(v) if k.startswith("b") else v) for k, v in numpy_model.init(seed=1).items()}
    want = numpy_model.grad(X, Y, params)
    if hidden == "relu":      # the zero rows count: with ReLU'(0) = 0 they would add nothing to b1's
        assert not np.allclose(want["b1"], sb.compile(d, dtype).grad(X[3:], Y[3:], params)["b1"] * 6 / 9)
    got = m.grad(X, Y, {k: torch.tensor(v) for k, v in params.items()})
    tol = TOL[dtype] / 100
    for k in want:
        assert_close(got[k], want[k], tol)
    theirs, ours = {k: v.copy() for k, v in params.items()}, {k: torch.tensor(v) for k, v in params.items()}
    assert m.step(X, Y, ours, lr=0.3) == pytest.approx(numpy_model.step(X, Y, theirs, lr=0.3), rel=tol)
    for k in theirs:
        assert_close(ours[k], theirs[k], tol)


# ------------------------------------------------------------------ the Model API
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_model_api_step_and_fit(backend):
    d = net(("tanh", "softmax", "cross_entropy"))[0]
    m = sb.compile(d, backend=backend)
    numpy_model = sb.compile(d)
    assert m.dtype == np.dtype("float64")        # float64 on every backend unless asked otherwise
    public = lambda model: {k for k in dir(model) if not k.startswith("_")} - {"backend", "module",  # noqa: E731
                                                                                  "function"}
    assert public(m) == public(numpy_model)       # the same methods (torch adds module(), JAX function())
    X, Y = data(3, 2, "softmax", n=40)
    params = m.init(seed=0)
    assert list(params) == ["W1", "b1", "W2", "b2"]
    assert np.all(np.asarray(params["b1"]) == 0)
    np.testing.assert_allclose(np.asarray(params["W1"]), numpy_model.init(seed=0)["W1"], rtol=1e-6)
    before = m.loss(X, Y, params)
    assert m.step(X, Y, params, lr=0.5) == pytest.approx(before, rel=1e-6)
    assert m.loss(X, Y, params) < before
    hist = m.fit(X, Y, params, epochs=5, lr=0.5, batch_size=8, seed=0, optimizer="momentum")
    assert len(hist) == 5 and hist[-1] < hist[0]
    with pytest.raises(SymbackError, match="columns"):
        m.loss(X[:, :2], Y, params)


def test_step_is_the_numpy_backends_step():
    d = net("residual")[0]
    X, Y = data(3, 2, "softmax", n=12)
    after = {}
    for backend in ("numpy", "jax", "torch"):
        m = sb.compile(d, backend=backend, dtype="float64")
        params = m.init(seed=3)
        with eager(backend):
            for _ in range(3):
                m.step(X, Y, params, lr=0.3)
        after[backend] = {k: np.asarray(v) for k, v in params.items()}
    for backend in ("jax", "torch"):
        for k in after["numpy"]:
            np.testing.assert_allclose(after[backend][k], after["numpy"][k], rtol=1e-10, atol=1e-13)


def test_numpy_style_fit_is_the_same_run_in_jax_and_torch():
    d = net(("sigmoid", "identity", "mse"))[0]
    X, Y = data(3, 2, "identity", n=30)
    runs = []
    for backend in ("jax", "torch"):
        m = sb.compile(d, backend=backend, dtype="float64")
        params = m.init(seed=4)
        runs.append((m.fit(X, Y, params, epochs=3, lr=0.1, batch_size=7, seed=1, optimizer="adam"),
                     {k: np.asarray(v) for k, v in params.items()}))
    np.testing.assert_allclose(runs[0][0], runs[1][0], rtol=1e-10)
    for k in runs[0][1]:
        np.testing.assert_allclose(runs[0][1][k], runs[1][1][k], rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------ devices and bad input
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_bad_params_are_data_errors_and_change_nothing(backend):
    d = net(("tanh", "softmax", "cross_entropy"))[0]
    m = sb.compile(d, backend=backend, dtype="float64")
    X, Y = data(3, 2, "softmax", n=8)
    params = m.init(seed=0)
    wrong = {**params, "W1": m._ns["_asarray"](np.zeros((4, 4)))}
    for call in (m.loss, m.grad, m.step):
        with pytest.raises(DataError, match=r"parameter 'W1' has shape \(4, 4\), expected \(3, "):
            call(X, Y, wrong)
    with pytest.raises(DataError, match="params has no entry 'b2'"):
        m.step(X, Y, {k: v for k, v in params.items() if k != "b2"})
    np.testing.assert_array_equal(np.asarray(wrong["b1"]), np.asarray(params["b1"]))


def test_torch_tensor_on_another_device_is_a_data_error():
    """A tensor on another device than the parameters is one DataError naming both ('meta'
    stands in for a GPU), the parameters untouched; NumPy data go beside the parameters."""
    m = sb.compile(net(("relu", "softmax", "cross_entropy"))[0], backend="torch")
    X, Y = data(3, 2, "softmax", n=8)
    params = m.init(seed=0)
    before = {k: v.clone() for k, v in params.items()}
    Xm, Ym = torch.tensor(X).to("meta"), torch.tensor(Y).to("meta")
    for call in (lambda: m.grad(Xm, Y, params), lambda: m.step(Xm, Ym, params), lambda: m.predict(Xm, params)):
        with pytest.raises(DataError, match=r"X is on meta but the parameters are on cpu: move it with X.to\('cpu'\)"):
            call()
    with pytest.raises(DataError, match="Y is on meta"):
        m.loss(torch.tensor(X), Ym, params)
    # a pure call converts NumPy parameters (issue 20); step updates in place, so it needs tensors
    with pytest.raises(DataError, match="parameter 'W1' is a ndarray, not a torch.Tensor: step updates"):
        m.step(X, Y, {k: v.numpy() for k, v in params.items()})
    for k in params:
        assert torch.equal(params[k], before[k])


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here (run on a GPU machine)")


@CUDA
def test_torch_model_and_module_on_cuda():
    """On a GPU: NumPy data follow the parameters there, grad and fit equal the CPU's, the
    module's backward equals torch.autograd's, and a CPU tensor is a DataError."""
    d, oracle, _ = net(("relu", "softmax", "cross_entropy"))
    m, numpy_model = sb.compile(d, backend="torch"), sb.compile(d)
    X, Y = data(3, 2, "softmax", n=64)
    p64 = start_params(d)
    gpu = {k: torch.tensor(v, device="cuda") for k, v in p64.items()}
    want = numpy_model.grad(X, Y, p64)
    for k, g in m.grad(X, Y, gpu).items():
        assert g.device.type == "cuda"
        assert_close(g.cpu(), want[k], 1e-10)
    cpu = {k: torch.tensor(v) for k, v in p64.items()}
    runs = [m.fit(X, Y, p, epochs=3, lr=0.3, batch_size=16, seed=2, optimizer="adam") for p in (cpu, gpu)]
    np.testing.assert_allclose(runs[1], runs[0], rtol=1e-10)
    for k in cpu:
        assert gpu[k].device.type == "cuda"
        assert_close(gpu[k].cpu(), cpu[k], 1e-10)
    module = m.module(params=p64).to("cuda")
    Xc, Yc = torch.tensor(X, device="cuda"), torch.tensor(Y, device="cuda")
    module(Xc, Yc).backward()
    plain = {k: v.detach().clone().requires_grad_(True) for k, v in module.params.items()}
    oracle(plain, Xc, Yc, torch).backward()
    for k, p in plain.items():
        assert module.params[k].grad.device.type == "cuda"
        assert_close(module.params[k].grad.cpu(), p.grad.cpu(), 1e-10)
    with pytest.raises(DataError, match="X is on cpu but the parameters are on cuda"):
        m.grad(torch.tensor(X), torch.tensor(Y), gpu)


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="JAX has no GPU here (run on a GPU machine)")
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_jax_model_on_the_gpu(dtype):
    """On a GPU, jitted: the gradients and a fit equal the NumPy backend's formulas."""
    d, oracle, _ = net(("sigmoid", "softmax", "cross_entropy"))
    m, numpy_model = sb.compile(d, dtype, backend="jax"), sb.compile(d)
    X, Y = data(3, 2, "softmax", n=64)
    p64 = start_params(d)
    params = {k: m._ns["_asarray"](v) for k, v in p64.items()}
    value, grads = m.value_and_grad(X, Y, params)
    want_value, want = numpy_model.value_and_grad(X, Y, p64)
    assert_close(value, want_value, TOL[dtype])
    for k in want:
        assert grads[k].devices().pop().platform == "gpu"
        assert_close(grads[k], want[k], TOL[dtype])
    ours, theirs = dict(params), {k: v.copy() for k, v in p64.items()}
    np.testing.assert_allclose(m.fit(X, Y, ours, epochs=3, lr=0.3, batch_size=16, seed=2),
                               numpy_model.fit(X, Y, theirs, epochs=3, lr=0.3, batch_size=16, seed=2),
                               rtol=TOL[dtype])


# ------------------------------------------------------------------ data parallel, really run
JAX_SCRIPT = """
import json, sys
import numpy as np, jax
sys.path.insert(0, {tests!r})
import symback as sb
from _backend_nets import mlp_net, data
m = sb.compile(mlp_net("tanh", "softmax", "cross_entropy")[0], "float64", backend="jax")
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


@pytest.fixture(scope="module")
def four_devices():
    """The JSON lines of JAX_SCRIPT and GLOBAL_MESH_SCRIPT, run one after the other in one process
    of 4 simulated devices (one start, one import of JAX and symback, for the two tests)."""
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=4"
    tests = os.path.join(ROOT, "tests")
    lines = _run(JAX_SCRIPT.format(tests=tests) + GLOBAL_MESH_SCRIPT.format(tests=tests),
                 {"XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}).splitlines()
    return {"fit": json.loads(lines[-2]), "global mesh": json.loads(lines[-1])}


def test_jax_fit_on_4_devices_equals_1_device(four_devices):
    four = four_devices["fit"]
    assert (four["devices"], four["shards"]) == (4, 4)     # every batch split over 4 devices
    assert len(jax.devices()) == 1                          # this process: one device
    m = sb.compile(net(("tanh", "softmax", "cross_entropy"))[0], "float64", backend="jax")
    X, Y = data(3, 2, "softmax", n=64)
    params = m.init(seed=0)
    one = m.fit(X, Y, params, epochs=3, lr=0.3, batch_size=16, seed=2)
    np.testing.assert_allclose(four["history"], one, rtol=1e-12)
    for k in params:
        np.testing.assert_allclose(four["params"][k], np.asarray(params[k]), rtol=1e-10, atol=1e-13)


# The README's several-hosts recipe, on one host: a mesh over every device, each
# batch given as this process's rows, a jitted SGD step over the public m.grad.
GLOBAL_MESH_SCRIPT = """
import json, sys
import numpy as np, jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
sys.path.insert(0, {tests!r})
import symback as sb
from _backend_nets import mlp_net, data
m = sb.compile(mlp_net("tanh", "softmax", "cross_entropy")[0], "float64", backend="jax")
mesh = Mesh(np.array(jax.devices()), ("data",))
rows, replicated = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())

@jax.jit
def sgd(X, Y, params, lr):
    grads = m.grad(X, Y, params)
    return {{k: params[k] - lr * grads[k] for k in params}}

X, Y = data(3, 2, "softmax", n=64)
params = jax.device_put(m.init(seed=0), replicated)
for start in range(0, 64, 16):
    Xb, Yb = (jax.make_array_from_process_local_data(rows, a[start:start + 16]) for a in (X, Y))
    params = sgd(Xb, Yb, params, 0.3)
print(json.dumps({{"devices": len(jax.devices()), "shards": len(Xb.sharding.device_set),
                  "params": {{k: np.asarray(v).tolist() for k, v in params.items()}}}}))
"""


def test_readme_global_mesh_loop_equals_one_device_steps(four_devices):
    four = four_devices["global mesh"]
    assert (four["devices"], four["shards"]) == (4, 4)
    m = sb.compile(net(("tanh", "softmax", "cross_entropy"))[0], "float64", backend="jax")
    X, Y = data(3, 2, "softmax", n=64)
    params = m.init(seed=0)
    for start in range(0, 64, 16):        # the same batches, in order, stepped on one device
        m.step(X[start:start + 16], Y[start:start + 16], params, lr=0.3)
    for k in params:
        np.testing.assert_allclose(four["params"][k], np.asarray(params[k]), rtol=1e-10, atol=1e-13)


DDP_SCRIPT = """
import os, sys
import numpy as np, torch, torch.distributed as dist
sys.path.insert(0, {tests!r})
import symback as sb
from _backend_nets import mlp_net, data

rank, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
torch.set_num_threads(1)
m = sb.compile(mlp_net("relu", "softmax", "cross_entropy")[0], backend="torch")
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
    m = sb.compile(net(("relu", "softmax", "cross_entropy"))[0], backend="torch")
    module = m.module(seed=0)
    opt = torch.optim.SGD(module.parameters(), lr=0.2)
    X, Y = (torch.tensor(a) for a in data(3, 2, "softmax", n=32))
    for _ in range(4):
        opt.zero_grad()
        module.loss(X, Y).backward()
        opt.step()
    with np.load(out) as ddp:
        for k, v in module.params.items():
            np.testing.assert_allclose(ddp[k], v.detach().numpy(), rtol=1e-10, atol=1e-13)
        assert not np.allclose(ddp["W1"], m.init(seed=0)["W1"].numpy())     # it trained


# ------------------------------------------------------------------ modules, imports, errors
@pytest.mark.parametrize("backend", ["numpy", "jax", "torch"])
def test_standalone_module_is_the_model(backend, tmp_path):
    d = net("rnn")[0]                                  # one output: a 1-D target must do
    m = sb.compile(d, backend=backend)
    src = backend_module_source(d, backend)
    assert src == m.source
    imports = {line.split()[1] for line in src.splitlines() if line.startswith(("import ", "from "))}
    assert imports == {"numpy", backend} | ({"jax.numpy"} if backend == "jax" else set())
    path = m.export(tmp_path / f"net_{backend}.py")
    res = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "OK" in res.stdout, res.stdout + res.stderr[-2000:]
    spec = importlib.util.spec_from_file_location(f"net_{backend}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    X, Y = data(6, 1, "identity", n=9)
    params = mod.init(seed=2)
    grads = mod.grad(X, Y[:, 0], params)                # a dict, as Model.grad, from a 1-D target
    want = m.grad(X, Y, params)
    tol = 1e-12 if m.dtype == np.float64 else 1e-5
    assert list(grads) == list(want) == list(m.params)
    for k in want:
        assert_close(grads[k], want[k], tol)
    assert mod.loss(X, Y[:, 0], params) == pytest.approx(m.loss(X, Y, params), rel=tol)
    before = {k: np.array(np.asarray(v)) for k, v in params.items()}
    mod.step(X, Y[:, 0], params, 0.1)
    for k in want:
        assert_close(np.asarray(params[k]), before[k] - 0.1 * np.asarray(want[k]), tol)


def test_cli_codegen_and_train_with_a_backend(tmp_path):
    def cli(*args):         # in this process (tests/test_cli.py starts the command itself)
        res = main_run(*args, cwd=tmp_path)
        assert res.returncode == 0, res.stderr[-2000:]
        return res
    cli("codegen", "--layers", "3,4,1", "--activation", "tanh", "--backend", "torch", "-o", "net.py")
    assert "import torch" in (tmp_path / "net.py").read_text()
    # its finite-difference self-check, called here (test_standalone_module_is_the_model runs
    # torch modules as scripts)
    spec = importlib.util.spec_from_file_location("net_from_codegen", tmp_path / "net.py")
    written = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(written)
    assert written.selfcheck()
    spec, points = os.path.join(ROOT, "examples", "seed002.toml"), os.path.join(ROOT, "examples", "seed002_points.csv")
    for backend in ("numpy", "torch"):
        cli("train", spec, "--data", points, "--epochs", "20", "--backend", backend, "--out", f"{backend}.npz",
            "--no-progress")
    with np.load(tmp_path / "numpy.npz") as a, np.load(tmp_path / "torch.npz") as b:
        for k in a:
            np.testing.assert_allclose(b[k], a[k], rtol=1e-10)


def test_import_symback_imports_neither_jax_nor_torch():
    out = _run("import sys, symback, symback.backends, symback.printing.jax, symback.printing.torch; "
               "print('jax' in sys.modules, 'torch' in sys.modules)")
    assert out.split() == ["False", "False"]


@pytest.mark.parametrize("backend,extra", [("jax", "symback[jax]"), ("torch", "symback[torch]")])
def test_missing_library_is_one_clear_error(backend, extra, monkeypatch):
    monkeypatch.setitem(sys.modules, backend, None)       # import jax / torch now fails
    with pytest.raises(SymbackError, match=rf"pip install {extra.replace('[', '.').replace(']', '.')}"):
        sb.compile(net(("tanh", "identity", "mse"))[0], backend=backend)


def test_unknown_backend_and_dtype():
    with pytest.raises(SymbackError, match="unknown backend 'tf'"):
        sb.compile(net(("tanh", "identity", "mse"))[0], backend="tf")
    with pytest.raises(SymbackError, match="int8.*float64.*float32"):
        sb.compile(net(("tanh", "identity", "mse"))[0], "int8", backend="torch")
