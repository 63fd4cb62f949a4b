"""Faults found by fuzzing the command line and the API (issue 8, item 4).

Each fault is run as a user runs it — ``symback ...`` in a fresh folder, through
``cli.main`` in this process, or ``python -m symback ...`` in a subprocess where the
process is the point (a hang's timeout, Ctrl-C, Python's options) — and must end in
one line on stderr, no traceback, the documented exit status, and no file written or
changed (every file compared byte for byte).  Library-level faults are checked through the API as well.
"""
import contextlib
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

import symback as sb
from symback.errors import DataError, DefinitionError, OutputError, SpecError, TrainingError
from _command import main_run

ROOT = Path(__file__).resolve().parent.parent
SEED002 = (ROOT / "examples" / "seed002.toml").read_text()


def command(*args):
    return [sys.executable, "-m", "symback", *map(str, args)]


def environment():
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def run(*args, cwd, timeout=None, python=()):
    """`symback ARGS` in `cwd`: through cli.main in this process (the same lines and status, a
    second or two quicker); given a timeout (a request that once hung) or Python options, as
    `python [python options] -m symback ARGS` in a subprocess."""
    if timeout is None and not python:
        return main_run(*args, cwd=cwd)
    cmd = command(*args)
    cmd[1:1] = list(python)
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout or 120,
                          env=environment(), stdin=subprocess.DEVNULL)


def files(folder: Path) -> dict:
    """Every file below `folder` and its bytes: compared before and after a failed run."""
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None
            for p in sorted(folder.rglob("*")) if not p.is_symlink() or p.exists()}


def refused(r, before, folder, code, *words):
    """The run failed with `code`, one line naming `words`, and left `folder` as it was."""
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("symback: error: ")
    assert "Traceback" not in r.stderr + r.stdout
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert files(folder) == before
    return lines[0]


def spec_text(**nodes) -> str:
    body = "\n".join(f'{k} = "{v}"' for k, v in nodes.items())
    return f'inputs = ["x"]\ntargets = ["y"]\nparams = ["w"]\n[nodes]\n{body}\n[loss]\ncost = "(yhat - y)**2"\n'


@pytest.fixture()
def folder(tmp_path):
    """A user's folder: a spec, CSV and .npz data, and saved parameters."""
    (tmp_path / "good.toml").write_text(SEED002)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 2))
    y = X @ [1.0, -2.0] + 0.5
    np.savetxt(tmp_path / "good.csv", np.column_stack([X, y]), delimiter=",", header="x1,x2,y", comments="")
    np.savez(tmp_path / "data.npz", X=X, Y=y[:, None])
    np.savez(tmp_path / "p.npz", w1=np.array(0.1), w2=np.array(0.2), b=np.array(0.3))
    return tmp_path


# ------------------------------------------------------------------ spec expressions
@pytest.mark.parametrize("text,words", [
    ("(((9**999)**999)**999)", ("too large for a float64", "9**999")),
    ("1e308*1e308*x", ("too large for a float64", "1e308*1e308")),
    ("log(-1)*x", ("not a real number", "log(-1)")),
])
def test_exploding_and_non_real_constants_refused_at_parse_time(text, words, folder):
    (folder / "bad.toml").write_text(spec_text(yhat=text))
    before = files(folder)
    start = time.perf_counter()
    r = run("derive", "bad.toml", cwd=folder, timeout=20)      # hung for ever before the fix
    seconds = time.perf_counter() - start
    refused(r, before, folder, 2, "bad.toml", *words)
    print(f"{text}: refused in {seconds:.2f} s (process start included)")


BOUNDED = [
    ("(((9**999)**999)**999)", "too large"),
    ("(x*9**300)**999", "too large"),
    ("1e308*1e308", "too large"),
    ("10**400", "too large"),
    ("10**-400", "too small"),
    ("exp(1000)", "too large"),
    ("pi*1e308", "too large"),
    ("exp(exp(exp(700)))", "too large"),
    ("sqrt(-1)", "not a real number"),
    ("log(-1)", "not a real number"),
    ("(-8)**(1/3)", "not a real number"),
    ("tan(pi/2)", "undefined or infinite"),
    ("0**-1", "division by zero"),
    ("-" * 150 + "x", "nested more than"),
    ("x**" * 150 + "x", "nested more than"),
]
PARSE_EACH = """
import sys, time, symback as sb
for text in sys.stdin.read().split("\\n"):
    start = time.perf_counter()
    try:
        sb.parse_expr(text, ["x"])
        print("parsed", text)
    except sb.SymbackError as exc:
        print(f"{time.perf_counter() - start:.4f}", exc)
"""


def test_parse_expr_bounds_every_number(tmp_path):
    # In a subprocess with a timeout: before the fix the first of these never finished.
    r = subprocess.run([sys.executable, "-c", PARSE_EACH], input="\n".join(t for t, _ in BOUNDED),
                       capture_output=True, text=True, timeout=60, env=environment(), cwd=tmp_path)
    lines = r.stdout.splitlines()
    assert r.returncode == 0 and len(lines) == len(BOUNDED), r.stderr
    for (text, why), line in zip(BOUNDED, lines):
        seconds, message = line.split(" ", 1)
        assert why in message and message.startswith("expression: "), (text, line)
        assert float(seconds) < 5      # generous: each takes milliseconds


def test_large_but_representable_numbers_still_parse():
    x = sp.Symbol("x")
    assert sb.parse_expr("1e308*x", ["x"]) == sp.Integer(10) ** 308 * x
    assert sb.parse_expr("2**1000 + (1/3)**600 + sqrt(2)", []) == \
        sp.Integer(2) ** 1000 + sp.Rational(1, 3) ** 600 + sp.sqrt(2)
    assert sb.parse_expr("exp(700)*x", ["x"]) == sp.exp(700) * x
    assert sb.parse_expr("sqrt(x**2 - 1)", ["x"]) == sp.sqrt(x ** 2 - 1)


def test_long_flat_sums_and_products_parse(folder):
    terms = " + ".join(f"{k}*x" for k in range(1, 501))
    (folder / "flat.toml").write_text(spec_text(yhat=f"w*({terms})"))
    r = run("derive", "flat.toml", "--format", "text", cwd=folder)
    assert r.returncode == 0, r.stderr
    assert "125250" in r.stdout and r.stderr == ""          # 1 + 2 + ... + 500
    x = sp.Symbol("x")
    assert sb.parse_expr("+".join(["x"] * 4000), ["x"]) == 4000 * x
    assert sb.parse_expr("*".join(["x"] * 3000), ["x"]) == x ** 3000
    assert sb.parse_expr("x - " + " - ".join(["1"] * 2000), ["x"]) == x - 2000


@pytest.mark.parametrize("text", ["1 is 1", r"'\d' + x"])
def test_parser_warnings_do_not_leak(text, folder):
    (folder / "warn.toml").write_text(spec_text(yhat=text.replace("\\", "\\\\")))
    before = files(folder)
    r = run("derive", "warn.toml", cwd=folder, python=("-W", "always"))   # warnings on: still none
    refused(r, before, folder, 2, "warn.toml")


# ------------------------------------------------------------------ spec files
@pytest.mark.parametrize("example,words", [
    ("values = { x = nan, w = 0.1, y = 1 }", ("value of 'x'", "finite", "nan")),
    ("values = { x = 3, w = 0.1, y = 1 }\nlr = -1", ("lr must be positive", "-1")),
])
def test_bad_worked_example_in_a_spec(example, words, folder):
    (folder / "ex.toml").write_text(spec_text(yhat="w*x") + f"[example]\n{example}\n")
    before = files(folder)
    refused(run("derive", "ex.toml", cwd=folder), before, folder, 2, "ex.toml", *words)


def test_worked_example_numbers_checked_in_the_api():
    from symback.spec import spec_from_dict
    base = {"inputs": ["x"], "targets": ["y"], "params": ["w"], "nodes": {"yhat": "w*x"},
            "loss": {"cost": "(yhat - y)**2"}}
    for example, why in [({"values": {"x": float("inf")}}, "finite"),
                         ({"values": {"x": 10 ** 400}}, "too large"),
                         ({"lr": 0}, "positive"), ({"lr": float("nan")}, "finite")]:
        with pytest.raises(SpecError, match=why):
            spec_from_dict({**base, "example": example})


def test_spec_and_csv_with_a_byte_order_mark_are_read(folder):
    bom = b"\xef\xbb\xbf"
    (folder / "bom.toml").write_bytes(bom + SEED002.encode())
    (folder / "bom.csv").write_bytes(bom + (folder / "good.csv").read_bytes())
    r = run("train", "bom.toml", "bom.csv", "--epochs", "2", "--out", "bom.npz", cwd=folder)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert (folder / "bom.npz").is_file()
    assert sb.load_spec(folder / "bom.toml").param_names == ["w1", "w2", "b"]


def test_names_with_a_trailing_newline_are_refused(folder):
    with pytest.raises(DefinitionError, match="invalid name"):
        sb.Graph().inputs(["x\n"])
    g = sb.Graph()
    g.inputs("x")
    w = g.params("w")
    with pytest.raises(DefinitionError, match="invalid name"):
        g.node("a\n", w * g.symbol("x"))
    (folder / "nl.toml").write_text('inputs = ["x"]\nparams = ["w\\n"]\n[loss]\ncost = "x**2"\n')
    before = files(folder)
    refused(run("derive", "nl.toml", cwd=folder), before, folder, 2, "nl.toml", "invalid name")


# ------------------------------------------------------------------ data files
def _huge_header_npz(path):
    """An .npz whose X declares 10^11 rows but holds 64 bytes."""
    import io
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False,
                                                  "shape": (10 ** 11, 2)})
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("X.npy", header.getvalue() + bytes(64))
        z.writestr("Y.npy", header.getvalue())


@pytest.mark.parametrize("name,make,words", [
    ("trunc.npz", lambda f: f.write_bytes((f.parent / "data.npz").read_bytes()[:300]),
     ("trunc.npz", "truncated or corrupt")),
    ("huge.npz", _huge_header_npz, ("huge.npz", "(100000000000, 2)", "holds 64 bytes")),
    ("text.npz", lambda f: f.write_text("x1,x2,y\n1,2,3\n"), ("text.npz", "not an .npz file")),
    ("data", lambda f: f.write_text("x1,x2,y\n1,2,3\n"), ("data: no suffix", ".csv")),
])
def test_bad_data_files_name_the_path_and_the_problem(name, make, words, folder):
    make(folder / name)
    before = files(folder)
    r = run("train", "--layers", "2,3,1", name, cwd=folder)
    refused(r, before, folder, 2, *words)


def test_read_npz_bounds_and_reports_in_the_api(folder):
    from symback.compile import load_params
    from symback.data import read_npz
    _huge_header_npz(folder / "huge.npz")
    with pytest.raises(DataError, match="huge.npz.*declares shape"):
        read_npz(folder / "huge.npz")
    raw = bytearray((folder / "p.npz").read_bytes())
    raw[len(raw) // 3] ^= 0xFF          # a flipped byte: the CRC check finds it
    (folder / "flip.npz").write_bytes(bytes(raw))
    with pytest.raises(DataError, match="flip.npz.*corrupt"):
        load_params(folder / "flip.npz")
    np.save(folder / "one.npy", np.ones(3))
    os.replace(folder / "one.npy", folder / "one.npz")
    with pytest.raises(DataError, match="single .npy array"):
        load_params(folder / "one.npz")
    arrays = read_npz(folder / "data.npz")      # and a good file reads as np.load reads it
    with np.load(folder / "data.npz") as z:
        assert set(arrays) == set(z.files) and all(np.array_equal(arrays[k], z[k]) for k in z.files)


# ------------------------------------------------------------------ outputs
def test_output_that_is_the_data_file_is_refused(folder):
    os.symlink("data.npz", folder / "alias.npz")
    before = files(folder)
    r = run("train", "--layers", "2,3,1", "--data", "data.npz", "--out", "data.npz", cwd=folder)
    refused(r, before, folder, 2, "--out data.npz", "data file")
    r = run("train", "--layers", "2,3,1", "--data", "alias.npz", "--out", "data.npz", cwd=folder)
    refused(r, before, folder, 2, "--out data.npz", "alias.npz")


def test_output_that_cannot_be_written_names_the_path(folder, monkeypatch):
    if not Path("/sys").is_dir() or os.access("/sys", os.W_OK) and os.getuid() != 0:
        pytest.skip("needs an unwritable /sys")
    before = files(folder)
    r = run("derive", "good.toml", "-o", "/sys/out.tex", cwd=folder)
    refused(r, before, folder, 1, "cannot write /sys/out.tex", "permission denied")
    # in the API, a failing rename names the user's file, not the temporary one, and cleans up
    from symback import render

    def deny(src, dst):
        raise PermissionError(13, "Permission denied", src)
    monkeypatch.setattr(render.os, "replace", deny)
    d = sb.derive(sb.load_spec(folder / "good.toml"))
    with pytest.raises(OutputError, match=r"cannot write .*out\.md: permission denied$"):
        d.write(folder / "out.md")
    with pytest.raises(OutputError, match="new/dir/out.md"):
        d.write(folder / "new" / "dir" / "out.md")
    assert files(folder) == before           # no temporary file, no folder made for it


# ------------------------------------------------------------------ sizes and training
def test_width_that_cannot_fit_in_memory_is_refused(folder):
    before = files(folder)
    r = run("train", "--layers", "2,100000000000,1", "good.csv", cwd=folder, timeout=60)
    refused(r, before, folder, 2, "--layers 2,100000000000,1", "would need", "TB", "available")
    m = sb.compile(sb.derive(sb.mlp([2, 100_000_000_000, 1])))
    with pytest.raises(DefinitionError, match="parameters would need .* available"):
        m.init()


def test_diverging_training_leaves_the_parameters_file_alone(folder):
    before = files(folder)
    r = run("train", "good.toml", "good.csv", "--resume", "p.npz", "--out", "p.npz",
            "--lr", "1e6", "--epochs", "50", cwd=folder)
    refused(r, before, folder, 2, "loss became", "last finite values")


@pytest.mark.parametrize("optimizer", ["sgd", "momentum"])
def test_fit_that_diverges_keeps_the_last_finite_parameters(optimizer):
    g = sb.load_spec(ROOT / "examples" / "seed002.toml")
    m = sb.compile(sb.derive(g))
    rng = np.random.default_rng(0)
    X = rng.normal(size=(8, 2))
    Y = X @ [1.0, -2.0] + 0.5
    params = m.init(seed=0)
    start = {k: v.copy() for k, v in params.items()}
    with np.errstate(all="ignore"), pytest.raises(TrainingError, match="last finite values") as info:
        m.fit(X, Y, params, epochs=500, lr=50.0, batch_size=None, optimizer=optimizer)
    failed_at = int(str(info.value).split("epoch ")[1].split(",")[0])
    # Oracle: replay the same full-batch updates by hand with NumPy; the parameters must be
    # those at which the loss was last computed, i.e. after failed_at - 1 updates.
    w = np.array([float(start["w1"]), float(start["w2"])])
    b, v = float(start["b"]), np.zeros(3)
    with np.errstate(all="ignore"):
        for _ in range(failed_at - 1):
            r = X @ w + b - Y
            g_ = np.array([*(2 * X.T @ r / len(X)), 2 * r.mean()])
            v = (0.9 * v + g_) if optimizer == "momentum" else g_
            w, b = w - 50.0 * v[:2], b - 50.0 * v[2]
    got = np.array([params["w1"], params["w2"], params["b"]], dtype=float)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, [*w, b], rtol=1e-9)


def test_fit_restores_parameters_after_a_non_finite_gradient():
    # C = sqrt(w) at w = 0: the loss is 0, the gradient infinite, so the first update
    # makes w = -inf and only the next loss shows it; w must come back as 0.
    g = sb.Graph()
    g.inputs("x")
    w = g.params("w")
    g.loss(sp.sqrt(w) + 0 * g.symbol("x"))
    m = sb.compile(sb.derive(g))
    params = {"w": np.array(0.0)}
    with np.errstate(all="ignore"), pytest.raises(TrainingError):
        m.fit(np.ones((4, 1)), np.zeros((4, 0)), params, epochs=3, lr=0.1, batch_size=None)
    assert float(params["w"]) == 0.0
    with pytest.raises(DataError, match="NaN or infinite"):
        m.fit(np.ones((4, 1)), np.zeros((4, 0)), {"w": np.array(np.nan)}, epochs=1)


# ------------------------------------------------------------------ templates
def test_template_gets_plain_data_not_the_derivation(folder):
    (folder / "evil.tex.j2").write_text("\\VAR{derivation.write('pwned.tex')}\n")
    before = files(folder)
    r = run("derive", "good.toml", "--template", "evil.tex.j2", "-o", "out.tex", cwd=folder)
    refused(r, before, folder, 1, "template 'evil.tex.j2'", "'derivation' is undefined")


@pytest.mark.parametrize("body,why", [
    ("\\VAR{'x' * 10**10}", "repetition"),
    ("\\VAR{'x'|center(10**10)}", "more than"),
    ("\\VAR{'x'.ljust(10**10)}", "more than"),
    ("\\VAR{lipsum(10**9)}", "more than"),
    ("\\VAR{9**99999999}", "power"),
    ("\\BLOCK{set ns = namespace(s='xxxxxxxx')}\\BLOCK{for i in range(60)}"
     "\\BLOCK{set ns.s = ns.s ~ ns.s}\\BLOCK{endfor}\\VAR{ns.s|length}", "longer than"),
    ("\\BLOCK{for i in range(100000)}\\BLOCK{for j in range(1000)}xxxxxxxxxx"
     "\\BLOCK{endfor}\\BLOCK{endfor}", "output is longer"),
    ("\\BLOCK{macro f(n)}\\VAR{f(n+1)}\\BLOCK{endmacro}\\VAR{f(0)}", "recurses"),
    ("\\VAR{gradients[0].__class__}", "unsafe"),
    ("\\VAR{1/0}", "ZeroDivisionError"),
    ("\\VAR{title.zfill(10**10)}", "more than"),
])
def test_template_errors_and_bombs_are_output_errors(body, why, tmp_path):
    (tmp_path / "t.tex.j2").write_text(body + "\n")
    d = sb.derive(sb.load_spec(ROOT / "examples" / "seed002.toml"))
    with pytest.raises(OutputError, match=why) as info:
        d.latex(template=str(tmp_path / "t.tex.j2"))
    assert "t.tex.j2" in str(info.value)


def test_template_context_is_plain_data():
    from symback.document import context
    from symback.render import _plain

    def leaves(v):
        if isinstance(v, dict):
            for x in v.values():
                yield from leaves(x)
        elif isinstance(v, list):
            for x in v:
                yield from leaves(x)
        else:
            yield v
    for d in (sb.derive(sb.load_spec(ROOT / "examples" / "seed002.toml")), sb.derive(sb.mlp([2, 3, 1]))):
        ctx = _plain(context(d))
        assert {type(v) for v in leaves(ctx)} <= {str, int, float, bool, type(None),
                                                  type(sb.printing.Tex(""))}


# ------------------------------------------------------------------ numbers on the command line
@pytest.mark.parametrize("args,words", [
    (("derive", "good.toml", "--values", "x1=nan,x2=1,y=1,w1=1,w2=1,b=1"), ("x1", "finite")),
    (("derive", "good.toml", "--values", "x1=1e999,x2=1,y=1,w1=1,w2=1,b=1"), ("x1", "non-finite")),
    (("derive", "good.toml", "--values", "x1=10**400,x2=1,y=1,w1=1,w2=1,b=1"), ("x1", "too large")),
    (("train", "good.toml", "good.csv", "--batch-size", "0"), ("--batch-size", "positive")),
    (("train", "good.toml", "good.csv", "--batch-size", "nan"), ("--batch-size", "whole number")),
    (("train", "good.toml", "good.csv", "--epochs", "-3"), ("--epochs", "positive")),
    (("train", "good.toml", "good.csv", "--epochs", "1.5"), ("--epochs", "whole number")),
    (("train", "good.toml", "good.csv", "--lr", "inf"), ("--lr", "finite")),
    (("train", "good.toml", "good.csv", "--lr", "0"), ("--lr", "positive")),
    (("derive", "--layers", "2,\u00b2,1"), ("--layers", "whole number")),
    (("derive", "--layers", "2," + "9" * 5000 + ",1"), ("--layers", "too large")),
])
def test_nonsense_numbers_on_the_command_line(args, words, folder, monkeypatch, capsys):
    from symback.cli import main
    monkeypatch.chdir(folder)
    before = files(folder)
    code = main(list(args))
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert all(w in err for w in words), err
    assert files(folder) == before


def test_nonsense_values_as_a_user_types_them(folder):
    before = files(folder)
    r = run("derive", "good.toml", "--values", "x1=inf,x2=1,y=1,w1=1,w2=1,b=1", cwd=folder)
    refused(r, before, folder, 2, "--values", "x1", "finite")


# ------------------------------------------------------------------ Ctrl-C
@contextlib.contextmanager
def _sigint_for_children():
    """Children get SIGINT as a terminal gives it.  A test run started in the background
    (`pytest &`) has SIGINT ignored, which children inherit (and Python then leaves it
    ignored); a handled signal is reset to its default by exec.  (No preexec_fn: forking
    a process that runs JAX's threads and then running Python code in the child can deadlock.)"""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


@pytest.mark.parametrize("delay", [0.15, 0.4])
def test_ctrl_c_while_starting_is_one_line(delay, folder):
    """SIGINT while Python is still importing SymPy (about the first second)."""
    before = files(folder)
    for _ in range(4):
        with _sigint_for_children():
            p = subprocess.Popen(command("derive", "good.toml", "-o", "out.tex"), cwd=folder, env=environment(),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 stdin=subprocess.DEVNULL)
        time.sleep(delay)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
        # on a loaded machine the signal can land while Python itself starts, before any of
        # symback's code ("Fatal Python error: init_import_site"): not this test's subject, again later
        if "Fatal Python error" not in err:
            break
        delay *= 2
    assert p.returncode == 130, (p.returncode, err)
    assert err == "symback: error: interrupted\n" and "Traceback" not in out
    assert files(folder) == before


def test_startup_guard_only_in_the_command(tmp_path):
    probe = ("import sys; sys.argv[0] = {argv0!r}; import signal, symback; "
             "print(signal.getsignal(signal.SIGINT).__name__)")
    out = {}
    for argv0 in ("/usr/local/bin/symback", "myscript.py"):
        with _sigint_for_children():
            r = subprocess.run([sys.executable, "-c", probe.format(argv0=argv0)], capture_output=True,
                               text=True, env=environment(), cwd=tmp_path, timeout=60)
        assert r.returncode == 0, r.stderr
        out[argv0] = r.stdout.strip()
    assert out == {"/usr/local/bin/symback": "_interrupted_at_startup",
                   "myscript.py": "default_int_handler"}


# ------------------------------------------------------------------ issue 20: user text is never run
PAYLOAD = "__import__('os').system('touch PWNED') or {}"


def _scalar_graph():
    g = sb.Graph()
    x, y, w = g.inputs("x"), g.targets("y"), g.params("w")
    g.loss((w * x - y) ** 2)
    return g


def test_values_given_as_text_are_parsed_not_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    d = sb.derive(_scalar_graph())
    with pytest.raises(SpecError, match="value of x"):
        d.evaluate({"x": PAYLOAD.format(1), "y": 1, "w": 2})
    assert not (tmp_path / "PWNED").exists()
    # text that is a number still works, exactly: C = (2·1/2 − 1)² = 0, dC/dw = 0
    assert d.evaluate({"x": "1/2", "y": 1, "w": 2})["forward"]["C"] == 0


def test_functions_defined_as_text_are_parsed_not_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p, t, z = sp.symbols("p t z")
    with pytest.raises(SpecError, match="loss 'evil'"):
        sb.loss_function("evil", PAYLOAD.format("p"), p, t)
    with pytest.raises(SpecError, match="activation 'evil'"):
        sb.activation("evil", PAYLOAD.format("z"), var=z)
    assert not (tmp_path / "PWNED").exists()
    lc = sb.loss_function("logcosh_text", "log(cosh(p - t))", p, t)
    assert sp.simplify(lc.expr - sp.log(sp.cosh(p - t))) == 0


# ------------------------------------------------------------------ issue 20: targets the formulas assume
BAD_ROWS = np.array([[1, 1, 0], [0, 0, 0], [.5, .5, .5], [2, 0, 0]], dtype=float)


def _central_differences(f, params, h=1e-6):
    out = {}
    for k, v in params.items():
        g = np.zeros_like(v)
        for idx in np.ndindex(v.shape):
            for sign in (1, -1):
                trial = {**params, k: v.copy()}
                trial[k][idx] += sign * h
                g[idx] += sign * f(trial) / (2 * h)
        out[k] = g
    return out


@pytest.mark.parametrize("backend", ["numpy", "jax", "torch"])
def test_softmax_cross_entropy_refuses_targets_whose_rows_do_not_sum_to_1(backend):
    pytest.importorskip(backend)
    d = sb.derive(sb.mlp([2, 3, 3], activation="tanh", output="softmax", loss="cross_entropy"))
    m = sb.compile(d, backend=backend, dtype="float64")
    X = np.random.default_rng(0).normal(size=(4, 2))
    params = m.init(seed=0)
    for call in (lambda: m.grad(X, BAD_ROWS, params), lambda: m.loss(X, BAD_ROWS, params),
                 lambda: m.step(X, BAD_ROWS, params, lr=0.1),
                 lambda: m.fit(X, BAD_ROWS, params, epochs=1)):
        with pytest.raises(DataError, match="row 0 sums to 2"):
            call()
    # the fast path of step() (arrays of the kind accepted before) checks them too
    good = np.array([[1, 0, 0], [0, 1, 0], [.2, .3, .5], [0, 0, 1]], dtype=float)
    m.step(X, good, params, lr=0.0)
    with pytest.raises(DataError, match="sum to 1"):
        m.step(X, BAD_ROWS, params, lr=0.1)
    if backend == "torch":      # the module's loss, whose backward is the same formulas
        import torch
        with pytest.raises(DataError, match="sum to 1"):
            m.module(params)(torch.as_tensor(X), torch.as_tensor(BAD_ROWS))
    # targets it accepts: the gradient is the loss's, by central differences
    host = {k: np.array(np.asarray(v.detach() if hasattr(v, "detach") else v), dtype=float)
            for k, v in params.items()}
    fd = _central_differences(lambda p: float(m.loss(X, good, {k: m._ns["_asarray"](v) for k, v in p.items()})),
                              host)
    got = m.grad(X, good, params)
    for k in fd:
        np.testing.assert_allclose(np.asarray(got[k]), fd[k], rtol=1e-6, atol=1e-8)


def test_binary_cross_entropy_refuses_labels_outside_0_1():
    m = sb.compile(sb.derive(sb.mlp([2, 3, 1], output="sigmoid", loss="binary_cross_entropy")))
    X, params = np.ones((3, 2)), m.init(seed=0)
    with pytest.raises(DataError, match=r"row 1 has a target outside \[0, 1\]"):
        m.grad(X, np.array([[1.0], [2.0], [0.0]]), params)
    m.grad(X, np.array([[1.0], [0.25], [0.0]]), params)


def test_cli_refuses_multi_label_targets_for_softmax(folder):
    rng = np.random.default_rng(0)
    np.savetxt(folder / "ml.csv", np.column_stack([rng.normal(size=(6, 2)), np.ones((6, 2))]), delimiter=",",
               header="x1,x2,a,b", comments="")
    before = files(folder)
    r = run("train", "ml.csv", "--layers", "2,3,2", "--output", "softmax", "--loss", "cross_entropy",
            "--targets", "a,b", "--out", "clf.npz", cwd=folder)
    refused(r, before, folder, 2, "sums to 2", "sum to 1")


# ------------------------------------------------------------------ issue 20: no file replaced unless asked
def test_train_does_not_replace_saved_parameters_unless_asked(folder):
    train = ("train", "good.toml", "--data", "good.csv", "--epochs", "1")
    assert run(*train, cwd=folder).returncode == 0           # writes params.npz, the default --out
    before = files(folder)
    refused(run(*train, "--seed", "1", cwd=folder), before, folder, 1,
            "--out params.npz already exists", "use --overwrite")
    refused(run(*train, "--out", "p.npz", cwd=folder), before, folder, 1, "p.npz already exists")
    # asked: --resume F --out F continues F in place; --overwrite replaces
    assert run(*train, "--resume", "p.npz", "--out", "p.npz", cwd=folder).returncode == 0
    assert (folder / "p.npz").read_bytes() != before["p.npz"]
    assert run(*train, "--seed", "1", "--overwrite", cwd=folder).returncode == 0
    assert (folder / "params.npz").read_bytes() != before["params.npz"]


@pytest.mark.parametrize("args,name", [
    (("codegen", "--layers", "2,3,1", "-o", "mine.py"), "mine.py"),
    (("derive", "good.toml", "-o", "mine.tex"), "mine.tex"),
])
def test_codegen_and_derive_do_not_replace_a_file_unless_asked(args, name, folder):
    (folder / name).write_text("# the user's own file\n")
    before = files(folder)
    refused(run(*args, cwd=folder), before, folder, 1, f"{name} already exists", "use --overwrite")
    assert run(*args, "--overwrite", cwd=folder).returncode == 0
    assert (folder / name).read_text() != "# the user's own file\n"


def test_demo_does_not_replace_its_files_unless_asked(folder):
    (folder / "mlp.tex").write_text("mine\n")
    before = files(folder)
    refused(run("demo", "--no-pdf", cwd=folder), before, folder, 1, "mlp.tex already exists", "--overwrite")


# ------------------------------------------------------------------ issue 20: unused and constant nodes
def _numeric_grad_matches(d, loss_of, X, Y, backends=("numpy", "jax", "torch")):
    """grad() and step() of every backend against central differences of `loss_of`, the same
    network written in NumPy here."""
    for backend in backends:
        pytest.importorskip(backend)
        m = sb.compile(d, backend=backend, dtype="float64")
        params = m.init(seed=1)
        host = {k: np.array(np.asarray(v), dtype=float) for k, v in params.items()}
        fd = _central_differences(lambda p: loss_of(X, Y, p), host)
        got = m.grad(X, Y, params)
        for k in fd:
            np.testing.assert_allclose(np.asarray(got[k]), fd[k], rtol=1e-6, atol=1e-8, err_msg=(backend, k))
        assert np.isclose(m.step(X, Y, params, lr=0.1), loss_of(X, Y, host))
        for k in fd:        # the step moved every parameter by −lr·gradient (unused ones not at all)
            np.testing.assert_allclose(np.asarray(params[k]), host[k] - 0.1 * fd[k], rtol=1e-6, atol=1e-8)


def _matrix_graph(body):
    g = sb.Graph()
    X, Y = g.inputs("X", shape=(sb.BATCH, 2)), g.targets("Y", shape=(sb.BATCH, 2))
    W1, b1, W2 = g.params("W1 b1 W2", shape=[(2, 2), (1, 2), (2, 2)])
    penalty = body(g, X, W1, b1, W2)
    g.loss(sb.mse(g.symbol("Yhat"), Y), penalty=penalty)
    return sb.derive(g)


def test_a_matrix_node_nothing_uses():
    def body(g, X, W1, b1, W2):
        g.node("U", sb.tanh(X @ W1 + sb.ones(sb.BATCH) @ b1))      # used by nothing
        g.node("Yhat", X @ W2)
        return sb.sumsq(W1)
    with pytest.warns(sb.errors.UnusedParameterWarning):
        d = _matrix_graph(body)
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(5, 2)), rng.normal(size=(5, 2))
    _numeric_grad_matches(d, lambda X, Y, p: ((X @ p["W2"] - Y) ** 2).sum(1).mean() + (p["W1"] ** 2).sum(), X, Y)


def test_a_node_that_folds_to_a_zero_matrix():
    def body(g, X, W1, b1, W2):
        A = g.node("A", X @ W1 + sb.ones(sb.BATCH) @ b1)
        Z = g.node("Z", A - A)
        g.node("Yhat", Z @ W2 + A)
    d = _matrix_graph(body)
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(5, 2)), rng.normal(size=(5, 2))
    _numeric_grad_matches(d, lambda X, Y, p: ((X @ p["W1"] + p["b1"] - Y) ** 2).sum(1).mean(), X, Y)


def test_rnn_of_one_step():
    with pytest.warns(sb.errors.UnusedParameterWarning, match="Wh"):      # h_0 = 0: Wh meets only zeros
        d = sb.derive(sb.rnn(inputs=2, hidden=3, outputs=1, steps=1, activation="tanh"))
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(5, 2)), rng.normal(size=(5, 1))

    def loss(X, Y, p):      # h_1 = tanh(x_1 Wx + h_0 Wh + bh) with h_0 = 0
        return ((np.tanh(X @ p["Wx"] + p["bh"]) @ p["Wy"] + p["by"] - Y) ** 2).sum(1).mean()
    _numeric_grad_matches(d, loss, X, Y)


def test_scalar_graph_with_an_unused_parameter_and_a_constant_node():
    g = sb.Graph()
    x, y = g.inputs("x"), g.targets("y")
    w1, w2, w3 = g.params("w1 w2 w3")
    a = g.node("a", w1 - w1)
    g.node("yhat", a + w2 * x)
    with pytest.warns(sb.errors.UnusedParameterWarning):
        g.loss((g.symbol("yhat") - y) ** 2)
        d = sb.derive(g)
    assert d.latex().rstrip().endswith(r"\end{document}")
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(5, 1)), rng.normal(size=(5, 1))
    _numeric_grad_matches(d, lambda X, Y, p: ((p["w2"] * X - Y) ** 2).mean(), X, Y)


# ------------------------------------------------------------------ issue 20: constants in torch code
@pytest.mark.parametrize("case", ["max_sqrt2", "min_e", "sin_cos_log3"])
def test_torch_code_with_constants_matches_autograd(case):
    torch = pytest.importorskip("torch")
    g = sb.Graph()
    x, y, w = g.inputs("x"), g.targets("y"), g.params("w")
    body = {"max_sqrt2": sp.Max(w * x, sp.sqrt(2)), "min_e": sp.Min(w * x, sp.E),
            "sin_cos_log3": w * x + sp.sin(sp.log(3)) + sp.cos(sp.log(3))}[case]
    g.node("yhat", body)
    g.loss((g.symbol("yhat") - y) ** 2)
    m = sb.compile(sb.derive(g), backend="torch", dtype="float64")
    X = torch.tensor([[0.5], [1.0], [2.0], [3.0]], dtype=torch.float64)
    Y = torch.tensor([[1.0], [0.0], [2.0], [-1.0]], dtype=torch.float64)
    params = {"w": torch.tensor(0.9, dtype=torch.float64)}
    wt = params["w"].clone().requires_grad_(True)
    z = wt * X[:, 0]
    yhat = {"max_sqrt2": torch.clamp(z, min=2 ** 0.5), "min_e": torch.clamp(z, max=np.e),
            "sin_cos_log3": z + np.sin(np.log(3)) + np.cos(np.log(3))}[case]
    loss = ((yhat - Y[:, 0]) ** 2).mean()
    loss.backward()
    assert np.isclose(m.loss(X, Y, params), loss.item(), rtol=1e-12)
    assert np.isclose(float(m.grad(X, Y, params)["w"]), wt.grad.item(), rtol=1e-10)
    assert np.isclose(m.step(X, Y, params, lr=0.1), loss.item(), rtol=1e-12)


# ------------------------------------------------------------------ issue 20: definitions no number can satisfy
@pytest.mark.parametrize("make", [lambda w: 1 / (w - w), lambda w: sp.log(w - w), lambda w: sp.nan * w])
def test_a_node_that_folds_to_zoo_or_nan_is_a_definition_error(make):
    g = sb.Graph()
    w = g.params("w")
    with pytest.raises(DefinitionError, match="'bad' is undefined or infinite"):
        g.node("bad", make(w))


def test_hadamard_of_numbers_is_a_definition_error(folder):
    g = sb.Graph()
    x, w = g.inputs("x1"), g.params("w1")
    with pytest.raises(DefinitionError, match="hadamard takes matrices"):
        sb.hadamard(w, x)
    (folder / "h.toml").write_text(spec_text(yhat="hadamard(w, x)"))
    before = files(folder)
    refused(run("derive", "h.toml", cwd=folder), before, folder, 2, "hadamard takes matrices")


# ------------------------------------------------------------------ issue 20: nodes in denominators
def test_nodes_in_denominators_compile_and_match_sympy_diff():
    """a_d = Π_j (a_{d−1} + j)/(1 + a_{d−1}²): the output-block fusion's cancel(together()) took
    ~70 s at depth 4 (it grows exponentially); formulas that big are now left unfused."""
    g = sb.Graph()
    x, y, w = g.inputs("x"), g.targets("y"), g.params("w")
    a = g.node("a0", w * x)
    ws, xs, ys = sp.symbols("w x y", real=True)
    unrolled = ws * xs
    for depth in range(1, 5):
        a = g.node(f"a{depth}", sp.Mul(*[(a + j) / (1 + a ** 2) for j in (1, 2, 3)]))
        unrolled = sp.Mul(*[(unrolled + j) / (1 + unrolled ** 2) for j in (1, 2, 3)])
    g.loss((a - y) ** 2)
    m = sb.compile(sb.derive(g))
    X, Y = np.array([[0.3], [-0.7]]), np.array([[0.5], [1.0]])
    params = {"w": np.array(0.8)}
    cost = (unrolled - ys) ** 2
    f, df = (sp.lambdify((ws, xs, ys), e, "math") for e in (cost, sp.diff(cost, ws)))
    at = [(0.8, float(X[i, 0]), float(Y[i, 0])) for i in range(2)]
    assert np.isclose(m.loss(X, Y, params), np.mean([f(*v) for v in at]), rtol=1e-10)
    assert np.isclose(float(m.grad(X, Y, params)["w"]), np.mean([df(*v) for v in at]), rtol=1e-8)


# ------------------------------------------------------------------ issue 20: requests that hung
CUBE = 'inputs = ["x1"]\ntargets = ["y"]\nparams = ["w1"]\n[nodes]\nyhat = "w1**3*x1"\n[loss]\ncost = "(yhat - y)**2"\n'


def test_twelve_steps_of_a_cubic_worked_example(folder):
    """Exact iterates of w³x grew ~5× in digits a step (> 300 s for 12); past 100 bits they are
    30-digit floats.  The iterates against gradient descent in Python floats."""
    (folder / "cube.toml").write_text(CUBE)
    r = run("derive", "cube.toml", "--values", "x1=1,y=1,w1=0.5", "--lr", "0.1", "--steps-taken", "12",
            "--format", "text", cwd=folder, timeout=120)
    assert r.returncode == 0, r.stderr
    w = 0.5
    for _ in range(12):
        w -= 0.1 * 2 * (w ** 3 - 1) * 3 * w ** 2
    last = [line for line in r.stdout.splitlines() if "theta^12 =" in line][0]
    assert np.isclose(float(last.split("= (")[1].split(")")[0]), w, rtol=1e-9)


def test_steps_taken_is_bounded_for_text_too(folder):
    before = files(folder)
    r = run("derive", "good.toml", "--values", "x1=1,x2=2,y=3,w1=0.5,w2=-1,b=0", "--lr", "0.1",
            "--format", "text", "--steps-taken", "100000000", cwd=folder, timeout=60)
    refused(r, before, folder, 2, "--steps-taken is at most 20")      # bad input: exit 2


def test_a_power_999_prints_as_text(folder):
    (folder / "p.toml").write_text('inputs = ["x1", "x2"]\ntargets = ["y"]\nparams = ["w1", "w2", "b"]\n'
                                   '[nodes]\nyhat = "(w1*x1 + w2*x2 + b)**999"\n[loss]\ncost = "(yhat - y)**2"\n')
    r = run("derive", "p.toml", "--format", "text", cwd=folder, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "dC/dw1 = 1998 x1 (y\u0302 - y) (b + w1 x1 + w2 x2)^998" in r.stdout
    assert "    as SymPy: 999*x1*(-2*y + 2*yhat)*(b + w1*x1 + w2*x2)**998" in r.stdout


def test_a_billion_weight_layer_is_derived_without_its_numeric_check(folder):
    r = run("derive", "--layers", "1000000000,1", "-o", "o.tex", cwd=folder, timeout=120)
    assert r.returncode == 0, r.stderr
    assert (folder / "o.tex").read_text().rstrip().endswith(r"\end{document}")


# ------------------------------------------------------------------ issue 20: user templates
@pytest.mark.parametrize("body,why", [
    ("\\BLOCK{for i in range(100000)}\\BLOCK{for j in range(100000)}\\BLOCK{endfor}\\BLOCK{endfor}",
     "loops ran more than"),
    ("\\VAR{'%0999999999d'|format(1)}", "format string"),
    ("\\VAR{'{:0999999999d}'.format(1)}", "format string"),
    ("\\BLOCK{set a = 'xxxxxxxxxxxxxxxx'}" + "\\BLOCK{set a = a + a}" * 40 + "\\VAR{a|length}", "longer than"),
    ("\\BLOCK{set ns = namespace(a=7)}\\BLOCK{for i in range(40)}\\BLOCK{set ns.a = ns.a * ns.a}"
     "\\BLOCK{endfor}\\VAR{ns.a > 0}", "product too large"),
])
def test_template_loops_formats_and_growth_are_bounded(body, why, tmp_path):
    (tmp_path / "t.tex.j2").write_text(body + "\n")
    d = sb.derive(sb.load_spec(ROOT / "examples" / "seed002.toml"))
    with pytest.raises(OutputError, match=why):
        d.latex(template=str(tmp_path / "t.tex.j2"))


def test_template_includes_only_templates_inside_its_folder(tmp_path):
    d = sb.derive(sb.load_spec(ROOT / "examples" / "seed002.toml"))
    (tmp_path / "t").mkdir()
    (tmp_path / "secret.txt").write_text("SECRET\n")
    (tmp_path / "t" / "notes.txt").write_text("SECRET\n")
    (tmp_path / "t" / "part.tex.j2").write_text("part\n")
    (tmp_path / "t" / "link.tex.j2").symlink_to(tmp_path / "secret.txt")
    for name in ("notes.txt", "link.tex.j2"):
        (tmp_path / "t" / "main.tex.j2").write_text(f"\\BLOCK{{include '{name}'}}\n")
        with pytest.raises(OutputError) as info:
            d.latex(template=str(tmp_path / "t" / "main.tex.j2"))
        assert "SECRET" not in str(info.value)
    (tmp_path / "t" / "main.tex.j2").write_text("\\BLOCK{include 'part.tex.j2'} and \\VAR{title}\n")
    assert d.latex(template=str(tmp_path / "t" / "main.tex.j2")).startswith("part")


# ------------------------------------------------------------------ issue 20: small things a user meets
def test_a_value_that_underflows_is_refused_like_its_power_form():
    from symback.parse import parse_values
    for text in ("1e-400", "10**-400"):
        with pytest.raises(SpecError, match="too small for a float64"):
            parse_values(f"x1={text}")
    assert parse_values("x1=1e-300")["x1"] == sp.Rational(1, 10 ** 300)


def test_a_negative_seed_names_the_flag(folder):
    before = files(folder)
    for cmd in (("train", "good.toml", "--data", "good.csv"), ("demo", "--no-pdf")):
        refused(run(*cmd, "--seed", "-5", cwd=folder), before, folder, 2, "argument --seed", "'-5'")


def test_unused_parameter_warning_points_at_the_users_line(folder):
    script = folder / "mine.py"
    script.write_text("import symback as sb\ng = sb.Graph()\nx, y = g.inputs('x'), g.targets('y')\n"
                      "w, v = g.params('w v')\ng.loss((w * x - y) ** 2)\nd = sb.derive(g)\n")
    r = subprocess.run([sys.executable, str(script)], cwd=folder, capture_output=True, text=True,
                       env=environment(), timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"{script}:6: UnusedParameterWarning: parameter(s) v do not affect the loss" in r.stderr
    (folder / "u.toml").write_text('inputs = ["x"]\ntargets = ["y"]\nparams = ["w", "v"]\n[nodes]\n'
                                   'yhat = "w*x"\n[loss]\ncost = "(yhat - y)**2"\n')
    r = run("derive", "u.toml", "--format", "text", cwd=folder)
    assert r.returncode == 0
    assert r.stderr == "symback: warning: parameter(s) v do not affect the loss; their gradients are 0\n"


def test_names_beginning_with_delta_are_refused():
    g = sb.Graph()
    with pytest.raises(DefinitionError, match="kept for the adjoints"):
        g.inputs("delta_a")
    w = g.params("w")
    with pytest.raises(DefinitionError, match="'delta_z'"):
        g.node("delta_z", 2 * w)


def test_a_scaled_cross_entropy_derives_and_matches_autograd():
    torch = pytest.importorskip("torch")
    p, t = sp.symbols("p t", real=True)
    ce2 = sb.loss_function("ce_twice", -2 * t * sp.log(p), p, t, needs="softmax")
    d = sb.derive(sb.mlp([2, 3, 3], activation="tanh", output="softmax", loss=ce2))
    m = sb.compile(d)
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(4, 2)), np.eye(3)[[0, 2, 1, 1]]
    params = m.init(seed=0)
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    H = torch.tanh(torch.tensor(X) @ tp["W1"] + tp["b1"])
    logp = torch.log_softmax(H @ tp["W2"] + tp["b2"], dim=1)
    loss = (-2 * torch.tensor(Y) * logp).sum(1).mean()
    loss.backward()
    assert np.isclose(m.loss(X, Y, params), loss.item(), rtol=1e-12)
    for k, v in m.grad(X, Y, params).items():
        np.testing.assert_allclose(v, tp[k].grad.numpy(), rtol=1e-10, atol=1e-12)
