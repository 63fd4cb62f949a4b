"""Audit findings on the certificate: a worked example at ReLU's kink, a failed check on the
command line, and numeric constants (GELU's √(2/π)) in a hand-written graph's document.

Oracles: torch autograd (with ReLU′(0) = 1 written as ``torch.where(c >= 0, c, 0)``, since
torch's own ``relu`` takes ReLU′(0) = 0), the seed's numbers worked by hand, and
``torch.nn.functional.gelu(approximate="tanh")``.
"""
from __future__ import annotations

import re

import pytest
import sympy as sp

import symback as sb
import symback.render as render_module
from conftest import seed000_graph
from symback.document import context
from symback.document.certificate import CertificateError, certify
from symback.document.points import NumberPoint

torch = pytest.importorskip("torch")

# Seed 000 at c = x1 w1 + x2 w2 + b = 2 − 2 + 0 = 0: on ReLU's kink
KINK = dict(x1=2, x2=2, y=1, w1=1, w2=-1, b=0)
QUICK = {"cost": False, "vanishing": False, "figure": False}


def _torch_at_kink():
    """∂C/∂(w1, w2, b) by torch autograd, ReLU′(0) = 1 as the seed says (1 if c ≥ 0)."""
    x1, x2, y = (torch.tensor(float(KINK[n]), dtype=torch.float64) for n in ("x1", "x2", "y"))
    w = {n: torch.tensor(float(KINK[n]), dtype=torch.float64, requires_grad=True) for n in ("w1", "w2", "b")}
    c = x1 * w["w1"] + x2 * w["w2"] + w["b"]
    p = torch.where(c >= 0, c, torch.zeros_like(c))
    ((p - y) ** 2 / 2).backward()
    return {n: float(t.grad) for n, t in w.items()}


def _line(text, start):
    return next(ln for ln in text.splitlines() if ln.startswith(start))


@pytest.mark.parametrize("fmt", ["markdown", "latex"])
def test_a_worked_example_on_relus_kink_is_written(fmt):
    grads = _torch_at_kink()
    assert grads == {"w1": -2.0, "w2": -2.0, "b": -1.0}          # by hand: (0 − 1)·1·2, (0 − 1)·1·2, (0 − 1)·1
    d = sb.derive(seed000_graph()[0])
    text = getattr(d, fmt)(values=KINK, lr=2)
    line = _line(text, r"\frac{\partial C}{\partial w_{1}} &= \left(p - y\right)")
    assert line.endswith(r"\left(0 - 1\right) \cdot \operatorname{ReLU}'\left(0\right) \cdot 2 = -2 \\")
    for p, tex in (("w1", "w_{1}"), ("w2", "w_{2}"), ("b", "b")):      # θ ← θ − 2 ∂C/∂θ: 5, 3, 2
        new = KINK[p] - 2 * grads[p]
        assert _line(text, rf"{tex} &\leftarrow").rstrip(" \\").endswith(f"= {new:g}")
    # the verification table shows the one-sided differences at the kink, not an "error" of 0.5
    assert r"0 \text{ (left)}, -2 \text{ (right)}" in text and "0.5" not in text.split("Verification")[-1]


def test_the_certificate_takes_the_convention_at_the_kink_and_still_catches_the_average():
    d = sb.derive(seed000_graph()[0])
    point = NumberPoint(d, 0, {}, given={k: sp.Integer(v) for k, v in KINK.items()})
    assert {p: float(point._difference(p)) for p in d.params} == _torch_at_kink()
    assert float(point._difference("c")) == -1.0                 # ∂C/∂c at c = 0: (p − y)·ReLU′(0)
    ctx = context(d, values=KINK, lr=2, **QUICK)
    certify(d, ctx)
    chain = ctx["example"]["gradients"][0]["sympy"]["chain"]
    chain[-1] = sp.Integer(-1)                                   # the central difference's average
    with pytest.raises(CertificateError, match="example.gradients"):
        certify(d, ctx)


def test_steps_full_on_the_kink_passes_the_certificate():
    text = render_module.render(sb.derive(seed000_graph()[0]), steps="full", values=KINK, lr=2, **QUICK)
    assert r"\begin{align*}" in text


def test_the_cli_writes_the_kink_example(tmp_path, monkeypatch, capsys):
    from symback.cli import main
    spec = (sb.__file__.rsplit("/", 2)[0] + "/examples/seed000.toml")
    with open(spec) as f:
        text = f.read()
    (tmp_path / "kink.toml").write_text(text + "\n[example]\nvalues = { x1 = 2, x2 = 2, y = 1, w1 = 1, w2 = -1, b = 0 }\nlr = 2\n")
    monkeypatch.chdir(tmp_path)
    assert main(["derive", "kink.toml", "--format", "markdown", "-o", "a.md"]) == 0
    assert main(["derive", spec, "--values", "x1=2,x2=2,y=1,w1=1,w2=-1,b=0", "--lr", "2",
                 "--format", "markdown", "-o", "b.md"]) == 0
    assert "Traceback" not in capsys.readouterr().err
    a = (tmp_path / "a.md").read_text()
    assert a == (tmp_path / "b.md").read_text()
    assert r"w_{1} &\leftarrow w_{1} - \eta \frac{\partial C}{\partial w_{1}} = 1 - 2 \cdot \left(-2\right) = 5" in a


# ------------------------------------------------------------- a failed check on the command line
def test_a_failed_check_is_one_line_on_the_command_line(tmp_path, monkeypatch, capsys):
    """Fault injection: every link of the certificate made to fail.  The CLI says in one line that
    the document was not written because a check of symback's own formulas failed (a bug to
    report), naming the line; no traceback, exit 1, no file."""
    from symback.cli import main
    from symback.document import certificate
    from symback.errors import SymbackError
    assert issubclass(CertificateError, SymbackError) and issubclass(CertificateError, AssertionError)
    monkeypatch.setattr(certificate, "_holds", lambda a, b, relation: False)
    monkeypatch.chdir(tmp_path)
    code = main(["derive", "--layers", "2,3,1", "--format", "markdown", "-o", "out.md"])
    out = capsys.readouterr()
    assert code == 1 and out.out == "" and "Traceback" not in out.err
    line, = out.err.splitlines()
    assert line.startswith("symback: error: the document was not written: a check of symback's own formulas failed")
    assert "a bug in symback" in line and "report" in line
    assert re.search(r": \w[\w.\[\]]*: link 1 of \d+ is false: ", line), line      # the line that failed, by place
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------- GELU's constants in a hand-written graph
def _gelu_graph(rows):
    g = sb.Graph()
    X = g.inputs("X", shape=(rows, 4))
    Y = g.targets("Y", shape=(rows, 2))
    W = g.params("W", shape=(4, 2))
    H = g.node("H", sb.gelu(X @ W))
    g.loss(sb.mse(H, Y))
    return g


@pytest.mark.parametrize("rows", [3, sb.BATCH], ids=["3 rows", "BATCH rows"])
def test_a_hand_written_gelu_graph_is_documented_and_certified(rows, monkeypatch):
    """√(2/π) of GELU's tanh form sits in the δ's as a number of its own: π evaluates."""
    seen = []
    monkeypatch.setattr(render_module, "certify", lambda d, ctx, seed=0: seen.append(certify(d, ctx, seed)) or seen[-1])
    d = sb.derive(_gelu_graph(rows))
    for fmt in ("latex", "markdown"):
        text = getattr(d, fmt)()
        assert r"\operatorname{GELU}" in text or "GELU" in text
    assert len(seen) == 2 and all(r["links"] > 0 for r in seen)


@pytest.mark.parametrize("rows", [3, sb.BATCH], ids=["3 rows", "BATCH rows"])
def test_a_hand_written_gelu_graph_matches_torch(rows):
    import numpy as np
    import torch.nn.functional as F
    from symback.evaluate import numpy_gradients, value_of
    assert value_of(sp.sqrt(2 / sp.pi), {}, 1) == pytest.approx(0.7978845608028654, rel=1e-15)
    d = sb.derive(_gelu_graph(rows))
    rng = np.random.default_rng(0)
    x, y, w = rng.normal(size=(3, 4)), rng.normal(size=(3, 2)), rng.normal(size=(4, 2))
    tw = torch.tensor(w, requires_grad=True)
    # fixed rows: one sample whose cost sums its entries; BATCH rows: the mean over the 3 samples
    loss = ((F.gelu(torch.tensor(x) @ tw, approximate="tanh") - torch.tensor(y)) ** 2).sum() / (1 if rows == 3 else 3)
    loss.backward()
    expected = tw.grad.numpy()
    # the document's own evaluation of the formulas (what the certificate and verification use)...
    np.testing.assert_allclose(numpy_gradients(d, {"X": x, "Y": y, "W": w})["W"], expected, rtol=1e-10)
    # ...and the compiled model's
    m = sb.compile(d)
    assert m.loss(x, y, {"W": w}) == pytest.approx(float(loss.detach()), rel=1e-12)
    np.testing.assert_allclose(m.grad(x, y, {"W": w})["W"], expected, rtol=1e-10)


def test_a_gelu_spec_on_the_command_line(tmp_path, monkeypatch, capsys):
    from symback.cli import main
    (tmp_path / "gelu.toml").write_text('inputs = ["X"]\ntargets = ["Y"]\nparams = ["W"]\n\n[shapes]\n'
                                        'X = ["m", 4]\nY = ["m", 2]\nW = [4, 2]\n\n[nodes]\nH = "gelu(X @ W)"\n\n'
                                        '[loss]\ncost = "mse(H, Y)"\n')
    monkeypatch.chdir(tmp_path)
    for out in ("gelu.md", "gelu.tex"):
        assert main(["derive", "gelu.toml", "-o", out]) == 0
        assert "GELU" in (tmp_path / out).read_text()
    assert "Traceback" not in capsys.readouterr().err
