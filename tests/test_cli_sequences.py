"""Transformer pieces from the command line: spec files whose sample is a sequence (shapes
without "m"), with ``softmax(S, mask="causal")``, ``layer_norm(H, gamma, beta)`` and ``gelu``.

Oracle: PyTorch autograd of the same networks written here with ``torch.nn.functional``
(``scaled_dot_product_attention(is_causal=True)``, ``layer_norm``, ``gelu(approximate="tanh")``).
"""
import importlib.util

import numpy as np
import pytest

import symback as sb
from symback.errors import SpecError
from test_cli import EXAMPLES, ok, run

torch = pytest.importorskip("torch")
F = torch.nn.functional

BLOCK = """
inputs = ["X"]
targets = ["Y"]
params = ["gamma", "beta", "Wq", "Wk", "Wv", "Wo", "W1", "b1", "W2", "b2"]
[shapes]
X = [5, 4]
Y = [5, 4]
gamma = [1, 4]
beta = [1, 4]
Wq = [4, 4]
Wk = [4, 4]
Wv = [4, 4]
Wo = [4, 4]
W1 = [4, 6]
b1 = [1, 6]
W2 = [6, 4]
b2 = [1, 4]
[nodes]
N = "layer_norm(X, gamma, beta, eps=0.001)"
P = "softmax((N @ Wq) @ (N @ Wk).T / 2, mask=\\"causal\\")"
H = "X + P @ (N @ Wv) @ Wo"
A = "gelu(H @ W1 + ones @ b1)"
O = "H + A @ W2 + ones @ b2"
[loss]
cost = "mse(O, Y)"
"""


def torch_attention(x, y, t):
    h = x + F.scaled_dot_product_attention(x @ t["Wq"], x @ t["Wk"], x @ t["Wv"], is_causal=True) @ t["Wo"]
    return ((h - y) ** 2).sum(dim=(1, 2)).mean()


def torch_block(x, y, t):
    n = F.layer_norm(x, (4,), t["gamma"][0], t["beta"][0], eps=1e-3)
    h = x + F.scaled_dot_product_attention(n @ t["Wq"], n @ t["Wk"], n @ t["Wv"], is_causal=True) @ t["Wo"]
    o = h + F.gelu(h @ t["W1"] + t["b1"], approximate="tanh") @ t["W2"] + t["b2"]
    return ((o - y) ** 2).sum(dim=(1, 2)).mean()


def torch_grads(loss, X, Y, params):
    t = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    L = loss(torch.tensor(X), torch.tensor(Y), t)
    L.backward()
    return L.item(), {k: v.grad.numpy() for k, v in t.items()}


def load_module(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def data(shape_x, shape_y, n=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, *shape_x)), rng.normal(size=(n, *shape_y))


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_block_spec_codegen_equals_torch(tmp_path, backend):
    (tmp_path / "block.toml").write_text(BLOCK)
    ok(run("codegen", "block.toml", "--backend", backend, "-o", "block_step.py", cwd=tmp_path))
    mod = load_module(tmp_path / "block_step.py")
    X, Y = data((5, 4), (5, 4))
    rng = np.random.default_rng(1)
    params = {k: np.asarray(v) + 0.3 * rng.normal(size=np.shape(v)) for k, v in mod.init(0).items()}
    value, oracle = torch_grads(torch_block, X, Y, params)
    given = {k: torch.tensor(v) for k, v in params.items()} if backend == "torch" else params
    assert float(mod.loss(X, Y, given)) == pytest.approx(value, rel=1e-10)
    grads = mod.grad(X, Y, given)
    for k in params:
        g = np.asarray(grads[k], dtype=float)
        assert np.abs(g - oracle[k]).max() <= 1e-9 * max(1.0, np.abs(oracle[k]).max()), k


def test_attention_example_derives_as_text(tmp_path):
    r = ok(run("derive", EXAMPLES / "attention.toml", "--format", "text", cwd=tmp_path))
    for p in ("Wq", "Wk", "Wv", "Wo"):
        assert f"dC/d{p} = " in r.stdout
    # the printed softmax VJP is the closed form P ⊙ (δ_P − (δ_P ⊙ P) 𝟏𝟏ᵀ), the ones a matrix (not 1)
    assert "P ⊙ (δ_P - (δ_P ⊙ P) 𝟏𝟏ᵀ)" in r.stdout


def test_attention_example_trains_one_full_batch_sgd_step_like_torch(tmp_path):
    """symback train on an .npz of sequences: one epoch, one full batch, saves init − lr·∇L."""
    X, Y = data((6, 8), (6, 8), n=10)
    np.savez(tmp_path / "seq.npz", X=X, Y=Y)
    r = ok(run("train", EXAMPLES / "attention.toml", "seq.npz", "--epochs", "1", "--batch-size", "10",
               "--lr", "0.05", "--out", "trained.npz", "--no-progress", cwd=tmp_path))
    assert "10 samples" in r.stdout
    init = sb.compile(sb.derive(sb.load_spec(EXAMPLES / "attention.toml"))).init(seed=0)
    _, oracle = torch_grads(torch_attention, X, Y, {k: np.asarray(v) for k, v in init.items()})
    with np.load(tmp_path / "trained.npz", allow_pickle=False) as saved:
        for k in ("Wq", "Wk", "Wv", "Wo"):
            np.testing.assert_allclose(saved[k], init[k] - 0.05 * oracle[k], rtol=1e-9, atol=1e-12)


def test_sequence_data_must_be_npz_of_the_sample_shape(tmp_path):
    np.savez(tmp_path / "flat.npz", X=np.zeros((4, 48)), Y=np.zeros((4, 48)))
    r = run("train", EXAMPLES / "attention.toml", "flat.npz", cwd=tmp_path)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "X must have shape (n, 6, 8)" in r.stderr
    (tmp_path / "t.csv").write_text("a,b\n1,2\n")
    r = run("train", EXAMPLES / "attention.toml", "t.csv", cwd=tmp_path)
    assert r.returncode != 0 and "not a CSV table" in r.stderr


@pytest.mark.parametrize("text,message", [
    ('softmax(S, mask="upper")', "mask= takes one of 'causal'"),
    ("softmax(S, mask=causal)", "mask= takes one of 'causal'"),
    ("tanh(S, mask='causal')", "tanh takes no such keyword"),
    ("softmax(S, axis=1)", "softmax takes no such keyword argument (it takes mask=)"),
    ("layer_norm(S, g, b, eps=-1)", "eps= takes a positive number"),
    ("softmax(S, **k)", "softmax takes no such keyword"),
])
def test_keyword_arguments_are_a_whitelist(text, message):
    import sympy as sp
    names = {"S": sp.MatrixSymbol("S", 3, 3), "g": sp.MatrixSymbol("g", 1, 3),
             "b": sp.MatrixSymbol("b", 1, 3), "k": sp.Symbol("k")}
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        sb.parse_expr(text, names)
