"""The command line, run as a user runs it, in a fresh folder: through cli.main in this process
(the same lines and exit status as a subprocess, without a Python start and SymPy's import each
time), and the entry points themselves (the console script, `python -m symback`) in subprocesses.

Oracles: least squares (NumPy) for a trained linear model, hand-written
NumPy gradients and central finite differences for generated modules,
the seed 004 numbers.
"""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from _command import main_run
from conftest import slow

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SCRIPT = shutil.which("symback")
PDFLATEX = shutil.which("pdflatex")


def run(*args, cwd, script=False, process=False, timeout=300):
    """`symback ARGS` in `cwd`: through cli.main in this process, or as the `symback` console
    script (`script`) or `python -m symback` (`process`) in a subprocess."""
    if not (script or process):
        return main_run(*args, cwd=cwd)
    cmd = [SCRIPT] if script and SCRIPT else [sys.executable, "-m", "symback"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    return subprocess.run(cmd + [str(a) for a in args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env, stdin=subprocess.DEVNULL)


def ok(r):
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    return r


def write_csv(path, header, table):
    np.savetxt(path, table, delimiter=",", header=",".join(header), comments="", fmt="%.10g")


@pytest.fixture()
def linear_csv(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 2))
    y = 1.5 * X[:, 0] - 0.5 * X[:, 1] + 0.25 + 0.01 * rng.normal(size=200)
    write_csv(tmp_path / "lin.csv", ["x1", "x2", "y"], np.column_stack([X, y]))
    return tmp_path / "lin.csv", X, y


@pytest.fixture()
def moons_csv(tmp_path):
    from symback.datasets import two_moons
    X, Y = two_moons(n=300, seed=3)
    write_csv(tmp_path / "moons.csv", ["u", "v", "label"], np.column_stack([X, Y]))
    return tmp_path / "moons.csv"


# ------------------------------------------------------------------ basics
def test_version_and_help(tmp_path, capsys):
    import symback
    from symback.cli import main
    assert SCRIPT, "the `symback` console script is not installed: pip install -e ."
    r = ok(run("--version", cwd=tmp_path, script=True))
    assert r.stdout.strip() == f"symback {symback.__version__}"
    assert "one-hot" in ok(run("train", "--help", cwd=tmp_path, process=True)).stdout
    for cmd in ("derive", "train", "codegen", "demo"):
        assert main([cmd, "--help"]) == 0
        assert capsys.readouterr().out.startswith(f"usage: symback {cmd}")
    assert list(tmp_path.iterdir()) == []


def test_demo_in_an_empty_folder(tmp_path):
    r = ok(run("demo", cwd=tmp_path))
    out = r.stdout
    assert "C = 0.49" in out and "dC/dw1 = -4.2" in out and "= 4.3" in out
    test_acc = float(re.search(r"held-out (\d\.\d+)", out).group(1))
    assert test_acc >= 0.9
    names = {p.name for p in tmp_path.iterdir()}
    assert {"seed004.tex", "mlp.tex"} <= names
    if PDFLATEX:
        assert {"seed004.pdf", "mlp.pdf"} <= names
        assert (tmp_path / "seed004.pdf").read_bytes().startswith(b"%PDF")
    assert not [n for n in names if n.startswith(".")]      # no temp files left
    assert r"\documentclass" in (tmp_path / "seed004.tex").read_text()


# ------------------------------------------------------------------ derive
def test_derive_layers_from_flags(tmp_path):
    r = ok(run("derive", "--layers", "3,2,2", "--activation", "tanh", "--output", "softmax",
               "--loss", "cross_entropy", "-o", "mlp.tex", cwd=tmp_path))
    assert "mlp.tex" in r.stdout
    tex = (tmp_path / "mlp.tex").read_text()
    assert tex.startswith("\\documentclass") or "\\documentclass" in tex[:500]
    assert tex.rstrip().endswith("\\end{document}")
    ok(run("derive", "--layers", "3,2,1", "-o", "mlp.md", cwd=tmp_path))
    assert "$$" in (tmp_path / "mlp.md").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlp.md", "mlp.tex"]


@pytest.mark.parametrize("spec", sorted(EXAMPLES.glob("seed*.toml")), ids=lambda p: p.name)
def test_derive_each_example_spec(spec, tmp_path):
    import sympy as sp
    import symback as sb
    r = ok(run("derive", spec, "--format", "text", cwd=tmp_path))
    g = sb.load_spec(spec)
    loss = g.unrolled()[g.loss_name]
    for p in g.param_names:
        out = r.stdout.splitlines()
        k = next(k for k, l in enumerate(out) if l.startswith(f"d{g.loss_name}/d{p} = "))
        # the gradient as read (no SymPy syntax), then as SymPy's text, which parses back
        assert "*" not in out[k] and out[k + 1].startswith("    as SymPy: ")
        line = out[k + 1].replace("    as SymPy: ", "= ")
        # every value below is positive, so each ReLU' branch (0 if arg < 0, else 1) is 1
        text = re.sub(r"Piecewise\(\(0, [^()]* < 0\), \(1, True\)\)", "1", line.split("= ", 1)[1])
        printed = sb.parse_expr(text, {n: g.symbol(n) for n in g.order})
        full = {g.symbol(n): e for n, e in g.unrolled().items()}
        point = {g.symbol(n): sp.Rational(k + 3, 5) for k, n in enumerate(g.order)
                 if g.kind(n) in ("input", "target", "param")}
        mine = printed.xreplace(full).xreplace(point)
        oracle = sp.diff(loss.rewrite(sp.exp), g.symbol(p)).xreplace(point)
        assert abs(float(sp.N(mine - oracle))) < 1e-12, (p, line)
    ok(run("derive", spec, "-o", "doc.tex", cwd=tmp_path))
    assert "\\end{document}" in (tmp_path / "doc.tex").read_text()


def test_matrix_spec_derives_and_trains(tmp_path):
    """examples/skip_connection.toml from the command line: a document, and training whose
    saved parameters give, in a NumPy forward pass written here, the accuracy it printed."""
    import numpy as np
    ok(run("derive", EXAMPLES / "skip_connection.toml", "-o", "skip.tex", cwd=tmp_path))
    assert "\\end{document}" in (tmp_path / "skip.tex").read_text()
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    label = (X[:, 0] + X[:, 1] * X[:, 2] > 0).astype(int)
    np.savetxt(tmp_path / "d.csv", np.column_stack([X, label]), delimiter=",",
               header="a,b,c,label", comments="", fmt=["%.17g"] * 3 + ["%d"])
    r = ok(run("train", EXAMPLES / "skip_connection.toml", "d.csv", "--epochs", "5", "--lr", "0.1",
               "--out", "p.npz", cwd=tmp_path))
    with np.load(tmp_path / "p.npz", allow_pickle=False) as f:
        p = {k: f[k] for k in f.files}
    A1 = np.tanh(X @ p["W1"] + p["b1"])
    H = A1 + np.maximum(A1 @ p["W2"] + p["b2"], 0)
    Z = H @ p["W3"] + p["b3"]
    logS = Z - Z.max(1, keepdims=True)
    logS -= np.log(np.exp(logS).sum(1, keepdims=True))
    acc = np.mean(logS.argmax(1) == label)
    assert f"training accuracy: {acc:.4f}" in r.stdout, (acc, r.stdout)
    assert "<Derivation" not in r.stdout


def test_derive_seed004_worked_example(tmp_path):
    r = ok(run("derive", EXAMPLES / "seed004.toml", "--format", "text", cwd=tmp_path))
    assert "C = 0.49" in r.stdout and "dC/dw1 = -4.2" in r.stdout and "= 4.3" in r.stdout
    r = ok(run("derive", EXAMPLES / "seed002.toml", "--values", "x1=1,x2=2,y=3,w1=0.5,w2=-1,b=0",
               "--lr", "0.1", "--format", "text", cwd=tmp_path))
    # yhat = 0.5 - 2 = -1.5; dC/dw2 = 2(yhat - y) x2 = 2(-4.5)(2) = -18; w2 <- -1 + 1.8 = 0.8
    assert "dC/dw2 = -18" in r.stdout and "= 0.8" in r.stdout
    tex = ok(run("derive", EXAMPLES / "seed004.toml", cwd=tmp_path)).stdout
    assert "0.49" in tex and "4.2" in tex and "4.3" in tex and "\\documentclass" in tex
    md = ok(run("derive", EXAMPLES / "seed004.toml", "--format", "markdown", cwd=tmp_path)).stdout
    assert "0.49" in md and "4.3" in md and "$$" in md


@pytest.mark.skipif(not PDFLATEX, reason="pdflatex not installed")
def test_derive_pdf(tmp_path):
    ok(run("derive", EXAMPLES / "seed002.toml", "-o", "seed002.pdf", "--param", "w1", cwd=tmp_path))
    assert (tmp_path / "seed002.pdf").read_bytes().startswith(b"%PDF")


# ------------------------------------------------------------------ train
def test_train_spec_on_csv_matches_least_squares(linear_csv, tmp_path):
    path, X, y = linear_csv
    r = ok(run("train", EXAMPLES / "seed002.toml", "--data", path, "--epochs", "300", "--lr", "0.1",
               "--batch-size", "200", "--out", "p.npz", "--plot", "loss.png", "--no-progress", cwd=tmp_path))
    assert "parameters saved to p.npz" in r.stdout
    with np.load(tmp_path / "p.npz", allow_pickle=False) as z:
        got = np.array([z["w1"], z["w2"], z["b"]])
    oracle = np.linalg.lstsq(np.column_stack([X, np.ones(len(X))]), y, rcond=None)[0]
    np.testing.assert_allclose(got, oracle, atol=1e-8)     # full-batch descent converges to it
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_train_layers_with_one_hot_labels_and_resume(moons_csv, tmp_path):
    args = ["train", "--layers", "2,16,2", "--activation", "tanh", "--output", "softmax",
            "--data", moons_csv, "--optimizer", "adam", "--lr", "0.02", "--epochs", "40",
            "--batch-size", "16", "--out", "net.npz"]
    r = ok(run(*args, cwd=tmp_path))
    acc = float(re.search(r"training accuracy: ([\d.]+)", r.stdout).group(1))
    assert acc > 0.9
    final = float(re.search(r"final ([\d.e+-]+)", r.stdout).group(1))
    with np.load(tmp_path / "net.npz", allow_pickle=False) as z:
        assert z["W1"].shape == (2, 16) and z["W2"].shape == (16, 2)
    positional = [a for a in args[:-2] if a not in ("--data", moons_csv)] + [moons_csv]   # DATA.csv positional
    r = ok(run(*positional, "--resume", "net.npz", "--out", "net2.npz", "--epochs", "1", cwd=tmp_path))
    first = float(re.search(r"first epoch ([\d.e+-]+)", r.stdout).group(1))
    assert first < 1.5 * final + 0.05      # it starts where the first run ended, not from scratch


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_train_npz_data(tmp_path, backend):
    """Every backend trains through the one fit: the progress bar and the plot's gradient norms too."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 3))
    Y = X @ np.array([[1.0], [-2.0], [0.5]])
    np.savez(tmp_path / "d.npz", X=X, Y=Y)
    r = ok(run("train", "--layers", "3,1", "--output", "identity", "--data", "d.npz", "--epochs", "80",
               "--optimizer", "momentum", "--lr", "0.05", "--progress", "--backend", backend,
               "--plot", "loss.png", cwd=tmp_path))
    assert "loss=" in r.stderr and "80/80" in r.stderr        # tqdm's bar, with the running loss
    with np.load(tmp_path / "params.npz", allow_pickle=False) as z:
        np.testing.assert_allclose(z["W1"].ravel(), [1.0, -2.0, 0.5], atol=1e-3)
    assert "final" in r.stdout
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------ codegen
# Run a generated module with SymPy and symback made unimportable.
ISOLATED = """
import sys, importlib.util, json
for name in ("sympy", "symback", "mpmath"):
    sys.modules[name] = None
spec = importlib.util.spec_from_file_location("gen", sys.argv[1])
gen = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gen)
import numpy as np
rng = np.random.default_rng(0)
X = rng.normal(size=(7, gen.N_INPUTS if hasattr(gen, "N_INPUTS") else int(sys.argv[2])))
Y = rng.uniform(0.1, 0.9, size=(7, int(sys.argv[3])))
params = gen.init(0)
value, grads = gen.value_and_grad(X, Y, params)      # (L, dict), as Model.value_and_grad
grads = [grads[k] for k in gen.PARAMS]
fd = []
for name in gen.PARAMS:
    p = params[name]
    g = np.zeros(np.shape(p))
    for idx in np.ndindex(np.shape(p)):
        old = p[idx]
        p[idx] = old + 1e-6; up = gen.loss(X, Y, params)
        p[idx] = old - 1e-6; down = gen.loss(X, Y, params)
        p[idx] = old
        g[idx] = (up - down) / 2e-6
    fd.append(g.tolist())
print(json.dumps({"loss": float(value), "grads": [np.asarray(g).tolist() for g in grads], "fd": fd,
                  "X": X.tolist(), "Y": Y.tolist(),
                  "params": {k: np.asarray(v).tolist() for k, v in params.items()},
                  "sympy_loaded": any(m.startswith("sympy") and sys.modules[m] is not None
                                      for m in sys.modules)}))
"""


def run_isolated(module: Path, n_in: int, n_out: int, cwd):
    import json
    r = subprocess.run([sys.executable, "-I", "-c", ISOLATED, str(module), str(n_in), str(n_out)],
                       cwd=cwd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_codegen_scalar_module_runs_without_sympy(tmp_path):
    ok(run("codegen", EXAMPLES / "seed002.toml", "-o", "seed002_net.py", cwd=tmp_path))
    src = (tmp_path / "seed002_net.py").read_text()
    assert not re.search(r"^\s*(import|from)\s+(sympy|symback)", src, re.M)
    res = run_isolated(tmp_path / "seed002_net.py", 2, 1, tmp_path)
    assert not res["sympy_loaded"]
    X, Y, p = np.array(res["X"]), np.array(res["Y"])[:, 0], res["params"]
    yhat = p["b"] + p["w1"] * X[:, 0] + p["w2"] * X[:, 1]
    hand = [np.mean(2 * (yhat - Y) * X[:, 0]), np.mean(2 * (yhat - Y) * X[:, 1]), np.mean(2 * (yhat - Y))]
    np.testing.assert_allclose(res["grads"], hand, rtol=1e-10)
    np.testing.assert_allclose(res["grads"], res["fd"], rtol=1e-6, atol=1e-9)


def test_codegen_layer_module_runs_without_sympy(tmp_path):
    ok(run("codegen", "--layers", "3,5,2", "--activation", "tanh", "--output", "sigmoid",
           "--loss", "binary_cross_entropy", "-o", "net.py", cwd=tmp_path))
    res = run_isolated(tmp_path / "net.py", 3, 2, tmp_path)
    assert not res["sympy_loaded"]
    for g, f in zip(res["grads"], res["fd"]):
        np.testing.assert_allclose(g, f, rtol=1e-5, atol=1e-8)


# ------------------------------------------------------------------ bad input
BAD_SPEC = {
    "syntax.toml": 'params = ["w"]\n[nodes]\na = "w +* 2"\n[loss]\ncost = "a**2"\n',
    "unknown.toml": 'params = ["w"]\n[nodes]\na = "w*q"\n[loss]\ncost = "a**2"\n',
    "attack.toml": 'params = ["w"]\n[nodes]\na = "__import__(\'os\').system(\'touch PWNED\')"\n'
                   '[loss]\ncost = "a**2"\n',
    "eval.toml": 'params = ["w"]\n[loss]\ncost = "eval(\'w\')"\n',
    "attr.toml": 'params = ["w"]\n[loss]\ncost = "w.__class__"\n',
    "broken.toml": 'params = ["w"\n',
    "deep.toml": "inputs = " + "[" * 3000 + "]" * 3000 + "\n",        # tomllib recurses
    # an unused parameter warns on the way to an error: the error alone is the one line
    "warns.toml": 'inputs = ["X"]\ntargets = ["Y"]\nparams = ["W1", "b1"]\n[shapes]\nX = ["m", 2]\nY = ["m", 1]\n'
                  'W1 = [2, 1]\nb1 = [1, 1]\n[nodes]\nYhat = "1/X @ W1"\n[loss]\ncost = "sumsq(Yhat - Y)"\n',
}
BAD_CSV = {
    "nan.csv": "x1,x2,y\n1,2,3\n4,nan,6\n",
    "text.csv": "x1,x2,y\n1,2,3\n4,abc,6\n",
    "ragged.csv": "x1,x2,y\n1,2,3\n4,5\n",
    "noheader.csv": "1,2,3\n4,5,6\n",
    "wide.csv": "a,b,c,y\n1,2,3,4\n",
    "empty.csv": "",
    "labels.csv": "a,b,y\n1,2,0.5\n",
}

BAD = [
    ("derive", "--layers", "784,,10"),
    ("derive", "--layers", "a,b"),
    ("derive", "--layers", "10"),
    ("derive", "--layers", "2,0,1"),
    ("derive", "--layers", "2,3,1", "--activation", "sigmoidd"),
    ("derive", "--layers", "2,3,1", "--loss", "nope"),
    ("derive", "--layers", "2,3,2", "--output", "softmax", "--loss", "mse"),
    ("derive",),
    ("derive", "missing.toml"),
    ("derive", "syntax.toml"),
    ("derive", "unknown.toml"),
    ("derive", "attack.toml"),
    ("derive", "eval.toml"),
    ("derive", "attr.toml"),
    ("derive", "broken.toml"),
    ("derive", "deep.toml"),
    ("derive", "warns.toml"),
    ("derive", "good.toml", "--template", "markdown"),
    ("derive", "good.toml", "--values", "x1=1,x2=2,y=1,w1=1,w2=1,b=0", "--lr", "0.1", "--steps-taken", "100000"),
    (),
    ("derive", "good.toml", "--layers", "2,1"),
    ("derive", "good.toml", "--activation", "tanh"),
    ("derive", "good.toml", "-o", "out.docx"),
    ("derive", "good.toml", "-o", "nodir/out.tex"),
    ("derive", "good.toml", "-o", "out.tex", "--format", "markdown"),
    ("derive", "good.toml", "-o", "out.tex", "--template", "no_such_template"),
    ("derive", "good.toml", "-o", "out.tex", "--param", "w9"),
    ("derive", "good.toml", "-o", "out.tex", "--values", "x1=1,x2=2"),
    ("derive", "good.toml", "--values", "x1=1,x2=2,y=1,w1=1,w2=1,b=__import__"),
    ("derive", "--layers", "2,3,1", "--values", "x=1"),
    ("derive", "good.toml", "--lr", "0.5"),
    ("derive", "--nonsense"),
    ("frobnicate",),
    ("train", "good.toml"),
    ("train", "good.toml", "good.toml", "good.csv"),
    ("train", "good.csv", "--data", "good.csv"),
    ("train", "good.toml", "--data", "missing.csv"),
    ("train", "good.toml", "--data", "nan.csv"),
    ("train", "good.toml", "--data", "text.csv"),
    ("train", "good.toml", "--data", "ragged.csv"),
    ("train", "good.toml", "--data", "noheader.csv"),
    ("train", "good.toml", "--data", "empty.csv"),
    ("train", "good.toml", "--data", "good.toml"),
    ("train", "--layers", "2,3,1", "--data", "wide.csv"),
    ("train", "--layers", "3,3,1", "--data", "wide.csv", "--targets", "zz"),
    ("train", "--layers", "2,3,2", "--output", "softmax", "--data", "labels.csv"),
    ("train", "good.toml", "--data", "good.csv", "--epochs", "0"),
    ("train", "good.toml", "--data", "good.csv", "--lr", "-1"),
    ("train", "good.toml", "--data", "good.csv", "--lr", "nan"),
    ("train", "good.toml", "--data", "good.csv", "--out", "p.txt"),
    ("train", "good.toml", "--data", "good.csv", "--resume", "missing.npz"),
    ("train", "good.toml", "--data", "good.csv", "--resume", "wrong.npz"),
    ("train", "good.toml", "--data", "good.csv", "--resume", "good.csv"),
    ("train", "good.toml", "--data", "good.csv", "--resume", "bool.npz"),
    ("train", "good.toml", "--data", "longcell.csv"),
    ("train", "good.toml", "--data", "good.csv", "--lr", "1e6", "--epochs", "50"),
    ("codegen", "good.toml", "-o", "out.txt"),
    ("codegen", "good.toml"),
    ("codegen", "broken.toml", "-o", "out.py"),
    ("demo", "--outdir", "good.csv"),
    # an empty path (an unset shell variable) is refused, not read as "." or as "print it"
    ("derive", "good.toml", "-o", ""),
    ("derive", ""),
    ("codegen", "good.toml", "-o", ""),
    ("train", "good.toml", "--data", "good.csv", "--out", ""),
    ("train", "good.toml", "good.csv", "--plot", ""),
    ("train", "good.toml", ""),
]


@pytest.fixture()
def bad_inputs(tmp_path):
    for name, text in {**BAD_SPEC, **BAD_CSV}.items():
        (tmp_path / name).write_text(text)
    shutil.copy(EXAMPLES / "seed002.toml", tmp_path / "good.toml")
    write_csv(tmp_path / "good.csv", ["x1", "x2", "y"], np.arange(12.0).reshape(4, 3))
    np.savez(tmp_path / "wrong.npz", w1=np.zeros(2), w2=np.zeros(()), b=np.zeros(()))
    np.savez(tmp_path / "bool.npz", w1=np.array(True), w2=np.zeros(()), b=np.zeros(()))
    (tmp_path / "longcell.csv").write_text("x1,x2,y\n1,2," + "9" * 200_000 + "\n")   # past csv's field limit
    return tmp_path


def check_one_line_error(code, stdout, stderr, folder, before):
    assert code in (1, 2), (code, stdout, stderr)
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("symback: error: ") and len(lines[0]) > len("symback: error: ") + 10
    assert "Traceback" not in stderr + stdout
    assert sorted(p.name for p in folder.iterdir()) == before
    assert not (folder / "PWNED").exists()


# One of each kind of mistake through a real subprocess and the console script (the rest of
# them that way in slow mode)...
AS_A_USER = [
    ("derive", "--layers", "784,,10"),
    ("derive", "--layers", "a,b"),
    ("derive", "--layers", "10"),
    ("derive", "--layers", "2,3,1", "--activation", "sigmoidd"),
    ("derive", "missing.toml"),
    ("derive", "unknown.toml"),
    ("derive", "attack.toml"),
    ("derive", "good.toml", "-o", "out.docx"),
    ("frobnicate",),
    ("train", "good.toml", "--data", "nan.csv"),
    ("train", "good.toml", "--data", "text.csv"),
    ("train", "--layers", "2,3,1", "--data", "wide.csv"),
    ("train", "good.toml", "--data", "good.csv", "--lr", "1e6", "--epochs", "50"),
]
assert set(AS_A_USER) <= set(BAD)


# a usage error (argparse, exit 2), a spec whose text would run code, an output refused (exit 1),
# training that fails on the way
ONE_OF_EACH = {("frobnicate",), ("derive", "attack.toml"), ("derive", "good.toml", "-o", "out.docx"),
               ("train", "good.toml", "--data", "good.csv", "--lr", "1e6", "--epochs", "50")}


@pytest.mark.parametrize("args", [a if a in ONE_OF_EACH else slow(a) for a in AS_A_USER],
                         ids=[" ".join(a) for a in AS_A_USER])
def test_bad_input_is_one_line_and_leaves_no_file(args, bad_inputs):
    before = sorted(p.name for p in bad_inputs.iterdir())
    r = run(*args, cwd=bad_inputs, script=True)
    check_one_line_error(r.returncode, r.stdout, r.stderr, bad_inputs, before)


# ...and every one of them through main() in this process, which is quicker.
@pytest.mark.parametrize("args", BAD, ids=[" ".join(a) for a in BAD])
def test_every_bad_input_through_main(args, bad_inputs, monkeypatch, capsys):
    from symback.cli import main
    monkeypatch.chdir(bad_inputs)
    before = sorted(p.name for p in bad_inputs.iterdir())
    code = main(list(args))
    out = capsys.readouterr()
    check_one_line_error(code, out.out, out.err, bad_inputs, before)


def test_a_failed_run_leaves_the_parameters_file_as_it_was(moons_csv, tmp_path, monkeypatch, capsys):
    """--resume F --out F (in place): a plot that cannot be written, or a last update that makes the
    parameters non-finite (their loss, read before the update, was finite), used to replace F
    anyway; now F keeps its bytes.  And torch resumes (its check of the file raised a TypeError)."""
    from symback.cli import main
    monkeypatch.chdir(tmp_path)
    base = ["train", "--layers", "2,4,1", "--activation", "tanh", "--data", str(moons_csv), "--epochs", "1"]
    assert main(base + ["--out", "p.npz"]) == 0
    saved = (tmp_path / "p.npz").read_bytes()
    assert main(base + ["--backend", "torch", "--resume", "p.npz", "--out", "q.npz"]) == 0
    capsys.readouterr()
    for extra, why in ((["--plot", "/proc/loss.png"], "cannot write /proc/loss.png"),
                       (["--batch-size", "1000", "--lr", "1e308"], "the last update made the parameters non-finite")):
        assert main(base + ["--resume", "p.npz", "--out", "p.npz", *extra]) in (1, 2)
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and why in err, err
        assert (tmp_path / "p.npz").read_bytes() == saved
    assert main(base + ["--resume", ".", "--out", "r.npz"]) == 2
    assert "is a directory, not a parameter file" in capsys.readouterr().err


def test_a_batch_norm_spec_trains(tmp_path, monkeypatch, capsys):
    """The memory estimate read a batch norm's (d, m) node as d × m with m a symbol: TypeError."""
    from symback.cli import main
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bn.toml").write_text('inputs = 3\nloss = "mse"\n[[layer]]\nkind = "Dense"\nunits = 2\n'
                                      '[[layer]]\nkind = "BatchNorm"\n[[layer]]\nkind = "Dense"\nunits = 1\n')
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", X=rng.normal(size=(10, 3)), Y=rng.normal(size=(10, 1)))
    assert main(["train", "bn.toml", "d.npz", "--epochs", "2", "--out", "o.npz"]) == 0, capsys.readouterr().err
    with np.load(tmp_path / "o.npz", allow_pickle=False) as z:
        assert z["gamma2"].shape == (1, 2)


def test_targets_with_image_data_is_an_error(tmp_path, monkeypatch, capsys):
    """--targets chooses CSV columns; an image network's .npz has none: it was silently ignored."""
    from symback.cli import main
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", X=rng.random((6, 1, 8, 8)), Y=np.eye(10)[rng.integers(0, 10, 6)])
    assert main(["train", str(EXAMPLES / "cnn.toml"), "d.npz", "--targets", "y", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == ["symback: error: --targets names CSV columns; a network of images or sequences "
                                "reads the arrays X and Y of an .npz file"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npz"]


@pytest.mark.parametrize("text, expected", [
    # a headerless file whose first row repeats a number: the row (64 cells of it in the report) is not printed
    ("0.5," * 40 + "0,0\n1,2\n", "the first row must name the columns (a header row), got numbers"),
    ("x1,x1,y\n1,2,3\n", "the header row names a column more than once: 'x1'"),
    ("x1,,y\n1,2,3\n", "the header row has an empty name (column 2)"),
])
def test_a_bad_header_row_is_named_in_a_short_line(text, expected, tmp_path):
    from symback.data import load_data
    from symback.errors import DataError
    (tmp_path / "d.csv").write_text(text)
    with pytest.raises(DataError) as info:
        load_data(tmp_path / "d.csv")
    assert str(info.value) == f"{tmp_path / 'd.csv'}: {expected}"


def test_an_internal_error_is_one_line_and_its_traceback_on_request(tmp_path, monkeypatch, capsys):
    """A bug outside symback's error family (a TypeError deep in a library) printed a traceback; now one
    line naming it as symback's bug, exit 1, and SYMBACK_TRACEBACK=1 re-raises it for the report."""
    import symback.cli as cli
    monkeypatch.chdir(tmp_path)

    def broken(args):
        raise TypeError("cannot evaluate Pi numerically")
    monkeypatch.setattr(cli, "cmd_derive", broken)
    monkeypatch.delenv("SYMBACK_TRACEBACK", raising=False)
    assert cli.main(["derive", "--layers", "2,1"]) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == ["symback: error: internal error, a bug in symback (TypeError: cannot evaluate Pi "
                                "numerically); please report it with the command that gave it "
                                "(SYMBACK_TRACEBACK=1 shows where it happened)"]
    monkeypatch.setenv("SYMBACK_TRACEBACK", "1")
    with pytest.raises(TypeError, match="Pi"):
        cli.main(["derive", "--layers", "2,1"])
    assert list(tmp_path.iterdir()) == []
