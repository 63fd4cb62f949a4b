"""Audit findings on matrix graphs' documents: a worked example exactly on ReLU's kink, and a
parameter that only the penalty reads in a one-sample graph's chain-rule section.

Oracles: torch autograd with ReLU′(0) = 1 written as ``torch.where(Z >= 0, Z, 0)`` (torch's own
``relu`` takes ReLU′(0) = 0, shown to differ here), one-sided differences of a NumPy loss written
in the test, and pdflatex's log of the compiled document.
"""
from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest

import symback as sb
from symback.document.certificate import CertificateError
from symback.document import points
from symback.document.points import ArrayPoint
from symback.engine import delta

torch = pytest.importorskip("torch")

# Z₁ = X W₁ + 𝟏b₁: row 1, column 2 is 1·(−1) + 0·1 + 1 = 0, on ReLU's kink, and that row's
# residual Ŷ − Y = 1 − 0 is not 0, so the convention changes ∂L/∂W₁ and ∂L/∂b₁
KINK = dict(X=[[1.0, 0.0], [0.0, 1.0]], W1=[[1.0, -1.0], [0.5, 1.0]], b1=[[0.0, 1.0]],
            W2=[[1.0], [2.0]], b2=[[0.0]], Y=[[0.0], [2.0]])
QUICK = {"cost": False, "vanishing": False, "figure": False}


def _torch_grads(relu_at_zero_is_one=True):
    t = {k: torch.tensor(v, dtype=torch.float64, requires_grad=k in ("W1", "b1", "W2", "b2")) for k, v in KINK.items()}
    Z = t["X"] @ t["W1"] + t["b1"]
    A = torch.where(Z >= 0, Z, torch.zeros_like(Z)) if relu_at_zero_is_one else torch.relu(Z)
    loss = torch.mean(torch.sum((A @ t["W2"] + t["b2"] - t["Y"]) ** 2, dim=1))      # mse, mean over rows
    loss.backward()
    return {k: t[k].grad.numpy() for k in ("W1", "b1", "W2", "b2")}


def _numpy_loss(values):
    Z = np.array(values["X"]) @ np.array(values["W1"]) + np.array(values["b1"])
    Yhat = np.maximum(Z, 0) @ np.array(values["W2"]) + np.array(values["b2"])
    return float(np.mean(np.sum((Yhat - np.array(values["Y"])) ** 2, axis=1)))


def _printed_matrix(text, lhs):
    """The matrix a line `lhs &= [[…]]` of the worked example shows, read as numbers."""
    line = next(ln for ln in text.splitlines() if ln.startswith(lhs + r" &= \left[\begin{matrix}"))
    body = re.search(r"\\begin\{matrix\}(.*?)\\end\{matrix\}", line).group(1)
    return np.array([[float(x) for x in row.split("&")] for row in body.split(r"\\")])


def test_the_point_is_on_the_kink_where_torch_and_the_convention_differ():
    ones, torch_zero = _torch_grads(), _torch_grads(relu_at_zero_is_one=False)
    assert not np.allclose(ones["W1"], torch_zero["W1"])          # torch's relu′(0) = 0 is another number
    np.testing.assert_allclose(ones["W1"], [[1, 2], [2.5, 5]])      # by hand: Xᵀ((Ŷ − Y)W₂ᵀ ⊙ [Z ≥ 0])
    np.testing.assert_allclose(ones["b1"], [[3.5, 7]])


@pytest.mark.parametrize("fmt", ["latex", "markdown"])
def test_a_matrix_worked_example_on_relus_kink_is_written(fmt):
    """The certificate's central difference (the two slopes' average, ∂L/∂W₁ 1 instead of 2)
    refused it: 'the gradient of W1 disagrees with a finite difference: -3.70 vs -4.52'."""
    d = sb.derive(sb.mlp([2, 2, 1], activation="relu"))
    text = getattr(d, fmt)(values={k: np.array(v) for k, v in KINK.items()}, lr=0.1, **QUICK)
    grads = _torch_grads()
    for p, tex in (("W1", "W_{1}"), ("b1", "b_{1}"), ("W2", "W_{2}"), ("b2", "b_{2}")):
        np.testing.assert_allclose(_printed_matrix(text, rf"\frac{{\partial L}}{{\partial {tex}}}"), grads[p], rtol=1e-6)
    # the verification table: the kink's entries, each with both one-sided differences
    table = text.split("Verification")[-1]
    h = 1e-6
    for p, idx, tex in (("W1", (0, 1), r"\left(W_{1}\right)_{1,2}"), ("b1", (0, 1), r"\left(b_{1}\right)_{1,2}")):
        row = next(ln for ln in table.splitlines() if tex in ln)
        at = {k: np.array(v) for k, v in KINK.items()}
        up, down = {**at, p: at[p].copy()}, {**at, p: at[p].copy()}
        up[p][idx] += h
        down[p][idx] -= h
        left = (_numpy_loss(at) - _numpy_loss(down)) / h
        right = (_numpy_loss(up) - _numpy_loss(at)) / h
        shown = [float(x) for x in re.findall(r"(-?[\d.]+) \\text\{ \((?:left|right)\)\}", row)]
        np.testing.assert_allclose(shown, [left, right], rtol=1e-6)
        assert grads[p][idx] == pytest.approx(right, rel=1e-5)              # the formula takes the right-hand slope
        assert "a kink" in row
    assert not re.search(r"\$0\.1[0-9]\$", table)                   # no norm's "error" of 0.17 any more


def test_the_array_point_still_catches_the_average_at_the_kink(monkeypatch):
    """The kink is told by the one-sided differences alone: a gradient that is their average
    (∂L/∂(W₁)₁₂ = 1, what the central difference says) is refused, the convention's 2 accepted."""
    d = sb.derive(sb.mlp([2, 2, 1], activation="relu"))
    values = {k: np.array(v) for k, v in KINK.items()}
    ArrayPoint(d, 0, {}, given=values)
    original = points.numpy_adjoints

    def averaged(*args, **kwargs):
        out = original(*args, **kwargs)
        out[delta(d.graph, "W1")] = out[delta(d.graph, "W1")] - np.array([[0.0, 1.0], [0.0, 0.0]])
        return out
    monkeypatch.setattr(points, "numpy_adjoints", averaged)
    with pytest.raises(CertificateError, match="gradient of W1"):
        ArrayPoint(d, 0, {}, given=values)


@pytest.mark.skipif(not shutil.which("pdflatex"), reason="pdflatex not installed")
def test_the_kink_document_compiles_without_overfull_lines(tmp_path):
    d = sb.derive(sb.mlp([2, 2, 1], activation="relu"))
    (tmp_path / "doc.tex").write_text(d.latex(values={k: np.array(v) for k, v in KINK.items()}, lr=0.1),
                                      encoding="utf-8")
    subprocess.run(["pdflatex", "-interaction=nonstopmode", "-no-shell-escape", "doc.tex"], cwd=tmp_path,
                   capture_output=True, timeout=240)
    log = (tmp_path / "doc.log").read_text(errors="replace")
    assert (tmp_path / "doc.pdf").exists()
    assert not re.findall(r"^! .*", log, re.M)
    assert not re.findall(r"Overfull \\hbox \(([\d.]+)pt too wide\)", log)


def _penalty_only_graph():
    """One sample X (3×2); W₂ is read by the penalty only, never by the cost."""
    import sympy as sp
    g = sb.Graph()
    X = g.inputs("X", shape=(3, 2))
    Y = g.targets("Y", shape=(3, 2))
    W1 = g.params("W1", shape=(2, 2))
    W2 = g.params("W2", shape=(2, 2))
    H = g.node("H", sb.tanh(X @ W1))
    g.loss(sb.mse(H, Y), penalty=sp.Rational(1, 10) * (sb.sumsq(W1) + sb.sumsq(W2)))
    return g


def test_a_parameter_only_the_penalty_reads_gets_its_gradient_in_the_chain_rule_section():
    """The section said ∂C/∂W₂ = 0 and stopped (the penalty's (1/5)W₂ only in the loss section);
    its δ row read 'δ_{W₂} = 0 = 0'."""
    from symback.document import context
    from symback.document.certificate import certify
    d = sb.derive(_penalty_only_graph())
    text = d.markdown(**QUICK)
    line = (r"\frac{\partial L}{\partial W_{2}} = \frac{\partial P}{\partial W_{2}} = \frac{1}{5} W_{2}")
    assert line in text and "only the penalty" in text
    assert r"\delta_{W_{2}} &= 0 \\" in text and "= 0 = 0" not in text
    # the oracle: torch autograd of L = (1/m) Σᵢ Cᵢ + P over a batch, at W₂ drawn at random
    rng = np.random.default_rng(3)
    X, Y = (torch.tensor(rng.normal(size=(4, 3, 2))) for _ in range(2))
    W1, W2 = (torch.tensor(rng.normal(size=(2, 2)), requires_grad=True) for _ in range(2))
    L = torch.mean(torch.sum((torch.tanh(X @ W1) - Y) ** 2, dim=(1, 2))) + ((W1 ** 2).sum() + (W2 ** 2).sum()) / 10
    L.backward()
    np.testing.assert_allclose(W2.grad.numpy(), W2.detach().numpy() / 5, rtol=1e-12)     # the printed (1/5) W₂
    # the line is certified: a wrong coefficient is refused
    ctx = context(d, **QUICK)
    certify(d, ctx)
    gr = next(x for x in ctx["gradients"] if x["name"] == "W_{2}")
    claim = next(c for c in gr["sympy"]["claims"] if c.get("batch") and len(c["chain"]) == 3)
    claim["chain"][-1] = 2 * claim["chain"][-1]
    with pytest.raises(CertificateError):
        certify(d, ctx)


@pytest.mark.skipif(not shutil.which("pdflatex"), reason="pdflatex not installed")
@pytest.mark.parametrize("template", ["article", "beamer", "snippet"])
def test_the_penalty_only_document_compiles(tmp_path, template):
    text = sb.derive(_penalty_only_graph()).latex(template=template, **QUICK)
    if template == "snippet":
        text = "\\documentclass{article}\\usepackage{amsmath,amssymb}\\begin{document}\n" + text + "\n\\end{document}\n"
    (tmp_path / "doc.tex").write_text(text, encoding="utf-8")
    subprocess.run(["pdflatex", "-interaction=nonstopmode", "-no-shell-escape", "doc.tex"], cwd=tmp_path,
                   capture_output=True, timeout=240)
    log = (tmp_path / "doc.log").read_text(errors="replace")
    assert not re.findall(r"^! .*", log, re.M)
    assert r"\frac{\partial P}{\partial W_{2}}" in text


def test_the_punchline_note_gives_only_the_reasons_that_hold():
    """Seed 004's network (biases, no norm, no penalty) read 'each ends in a sum over the samples
    (a bias, a norm's scale and shift) or reaches the loss only through the penalty'."""
    import sympy as sp
    from symback.document import context
    note = context(sb.derive(sb.mlp([3, 4, 4, 1], activation="sigmoid", loss="half_mse")), notation="lecture",
                   **QUICK)["punchline_note"]
    assert "(a bias)" in note and "penalty" not in note and "norm" not in note
    g = sb.Graph()
    X, Y = g.inputs("X", shape=(sb.BATCH, 2)), g.targets("Y", shape=(sb.BATCH, 1))
    W1, W2, W3 = g.params("W1 W2 W3", shape=[(2, 3), (3, 1), (2, 2)])
    g.loss(sb.mse(g.node("Yhat", g.node("A", sb.tanh(X @ W1)) @ W2), Y), penalty=sp.Rational(1, 10) * sb.sumsq(W3))
    note = context(sb.derive(g), **QUICK)["punchline_note"]
    assert "$W_{3}$, which reaches the loss only through the penalty" in note and "sum over the samples" not in note
    assert "Its gradient is" in note


def _defined_twice(text):
    """The left sides of the forward pass's rows that are defined more than once."""
    forward = text.split("## The loss")[0]
    lhs = [ln.split("&=")[0].strip() for ln in forward.splitlines() if "&=" in ln]
    return {x for x in lhs if lhs.count(x) > 1}


def test_nielsens_tied_output_layer_is_a3_not_the_hidden_a2():
    """A tied output layer (no W of its own) was named a² like the hidden layer: 'a² = (w²)ᵀ a² + b³',
    '∂a²/∂a²', and its δ δ² like the hidden layer's."""
    d = sb.derive(sb.Sequential(sb.Dense(2, "tanh"), sb.Dense(4, "identity", tie="W1"), inputs=4, loss="mse"))
    text = d.markdown(notation="nielsen", **QUICK)
    assert not _defined_twice(text)
    assert r"a^{3} &= \left(w^{2}\right)^{\top} a^{2} + b^{3}" in text
    assert r"\frac{\partial a^{3}}{\partial w^{2}} &: \left( \delta^{3} \mapsto a^{2} \left(\delta^{3}\right)^{\top} \right)" in text
    # the transposed ones of a one-sample column are 𝟏, not (𝟏ᵀ)ᵀ; (1/m)·M at m = 1 is M, not 1 (M)
    assert r"\left(\mathbf{1}^{\top}\right)^{\top}" not in text and r"\left(1 \left(" not in text
    assert r"\delta^{2} x^{\top} + a^{2} \left(\delta^{3}\right)^{\top}" in text       # BP4 for tied weights


@pytest.mark.parametrize("which", ["one sample", "batch"])
def test_the_loss_line_names_the_graphs_own_prediction(which):
    """A graph whose prediction is a node H wrote its row cost as Σₖ ℓ(Ŷᵢₖ, Yᵢₖ), Ŷ defined nowhere."""
    import sympy as sp
    from symback.document import context
    from symback.document.certificate import certify
    m = 4 if which == "one sample" else sb.BATCH
    g = sb.Graph()
    X, T = g.inputs("X", shape=(m, 3)), g.targets("T", shape=(m, 2))
    W = g.params("W", shape=(3, 2))
    g.loss(sb.mse(g.node("H", sb.tanh(X @ W)), T))
    d = sb.derive(g)
    text = d.markdown(**QUICK)
    row = "r" if which == "one sample" else "i"     # a sample's rows r, a batch's samples i
    assert rf"\ell{{\left({{H}}_{{{row},k}},{{T}}_{{{row},k}} \right)}}" in text and r"\hat{Y}" not in text
    ctx = context(d, **QUICK)
    certify(d, ctx)                       # the line is checked row by row with H and T read as the nodes
    claim = next(c for c in ctx["loss"]["sympy"]["claims"] if c.get("rows"))
    claim["chain"][-1] = claim["chain"][-1].xreplace({sp.Symbol("H"): sp.Symbol("T"), sp.Symbol("T"): sp.Symbol("H")}) * 2
    with pytest.raises(CertificateError):
        certify(d, ctx)


@pytest.mark.parametrize("notation, first", [("matrix", r"\delta^{(1)}"), ("lecture", r"\delta^{(2)}"),
                                             ("nielsen", r"\delta^{2}")])
def test_a_layers_delta_is_said_before_the_maps_use_it(notation, first):
    """The local derivatives' maps (δ⁽¹⁾ ↦ Xᵀ δ⁽¹⁾) used a layer's δ pages before the δ section said
    what it is; the section's opening sentence now names each: δ⁽¹⁾ = ∂L/∂Z₁."""
    d = sb.derive(sb.mlp([3, 4, 2], activation="tanh", output="softmax", loss="cross_entropy"))
    for text in (d.markdown(notation=notation, **QUICK), d.latex(notation=notation, **QUICK)):
        at = text.index(first)
        assert "the notes' name" in text[max(0, at - 400):at]


# ---------------------------------------------------------------- rounding is no kink
@pytest.mark.parametrize("jump, is_kink", [(0.0, False), (0.3, True)])
def test_one_sided_slopes_tell_rounding_from_a_kink(monkeypatch, jump, is_kink):
    """A smooth loss of about 1,334 (a transformer's, 4×6 one-sample, the verification table's
    point) had one-sided slopes 1.9e-5 apart at h = 1e-6, the size of its rounding, which grows
    tenfold at h/10: read as a kink, SymPy then expanded the whole transformer for its slope
    (minutes).  Oracle: the loss is written here, smooth plus rounding-sized high-frequency
    noise, or plus jump·|w| (a kink of that jump, known by construction)."""
    from types import SimpleNamespace

    from symback.document import kinkslope

    def loss(w):
        w = float(np.asarray(w).ravel()[0])
        noise = 2e-11 * np.sin(7.3e9 * w + 1.5)       # rounding's size: 2.0e-5 apart at h = 1e-6
        return 1333.5 - 1.31 * w + noise + jump * abs(w)
    monkeypatch.setattr(kinkslope, "numpy_forward", lambda d, values: {"L": loss(values["w"])})
    d = SimpleNamespace(loss_name="L")
    left, _, right, kink = kinkslope.one_sided(d, {"w": np.zeros((1, 1))}, "w", np.ones((1, 1)), 1e-6)
    assert bool(kink) == is_kink
    if is_kink:       # both slopes, each side's
        assert left == pytest.approx(-1.31 - jump, abs=1e-3) and right == pytest.approx(-1.31 + jump, abs=1e-3)
