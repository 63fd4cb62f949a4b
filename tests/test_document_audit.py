"""A document audit's findings, one test each: every one of them failed before its fix.

Each document here also passes the certificate (render runs it), so a fix that printed
something false would fail too.  Numbers are checked against torch autograd on the same
network written in the test.
"""
from __future__ import annotations

import re

import numpy as np
import pytest
import sympy as sp
import torch

import symback as sb
from symback.document import context

T, D, K = 3, 2, 2


def _one_sample_layer(act) -> sb.Graph:
    """The audit's graph: one (T, D) sample, H = f(X W + 1 b), mse on H."""
    g = sb.Graph()
    X, Y = g.inputs("X", shape=(T, D)), g.targets("Y", shape=(T, K))
    W, b = g.params("W", shape=(D, K)), g.params("b", shape=(1, K))
    g.loss(sb.mse(g.node("H", act(X @ W + sb.ones(T, 1) @ b)), Y))
    return g


def _jacobian_norm(f, x) -> float:
    return float(torch.linalg.norm(torch.autograd.functional.jacobian(f, x)))


@pytest.mark.parametrize("act, sup, name", [(sb.tanh, 1, "tanh"), (sb.sigmoid, sp.Rational(1, 4), "sigmoid")])
def test_one_sample_vanishing_prose_names_the_activation_in_its_bound(act, sup, name):
    """Audit: H = tanh(X W + 1 b) on one sample: the bound showed ‖∂H/∂Z_H‖_F, the text beside it said
    'no activation derivative is a factor on these paths'.  Now δ ↦ δ ⊙ f'(Z) is bounded by sup|f'| as
    in the notes form, and the text names f.  Oracle: torch autograd's gradient and Jacobians, at
    random points, are within the bound as printed (‖1‖·‖∂c/∂H‖·sup|f'|·‖∂Z/∂W‖)."""
    v = context(sb.derive(_one_sample_layer(act)), verify=False, cost=False, figure=False)["vanishing"]
    assert "No activation derivative" not in v["conclusion"] and name in v["conclusion"]
    assert "\\frac{\\partial H}{\\partial Z_{H}}" not in str(v["bound"])
    (path,) = v["sympy"]["bound"].args[1].args        # one path: Terms of one Chain
    factors = path.args
    assert [f for f in factors if f.is_number] == ([] if sup == 1 else [sup])
    f = {"tanh": torch.tanh, "sigmoid": torch.sigmoid}[name]
    rng = np.random.default_rng(0)
    for _ in range(5):
        X, Y, W, b = (torch.tensor(rng.normal(size=s)) for s in [(T, D), (T, K), (D, K), (1, K)])
        W.requires_grad_(True)
        C = ((f(X @ W + b) - Y) ** 2).sum()
        (grad,) = torch.autograd.grad(C, W)
        H = f(X @ W + b).detach()
        bound = (np.sqrt(T) * _jacobian_norm(lambda h: ((h - Y) ** 2).sum(1), H) * float(sup)
                 * _jacobian_norm(lambda w: X @ w + b, W.detach()))
        assert float(torch.linalg.norm(grad)) <= bound


# --------------------------------------------------------------- a max-pool tie at a worked example
# conv 2×2 (K₁ reads the window's top-left pixel), max-pool 2 of the 3×3 map: the window's first two
# pixels are both 1, a tie; Ŷ = 2·max, C = (Ŷ − Y)²
_IMG = np.array([[1.0, 1.0, 0.2, 0.0], [0.3, -0.5, 0.0, 0.1], [0.0] * 4, [0.0] * 4])
TIE = dict(X=_IMG.reshape(1, 16), Y=np.array([[0.5]]), K1=np.array([[1.0], [0.0], [0.0], [0.0]]),
           b1=np.array([[0.0]]), W2=np.array([[2.0]]), b2=np.array([[0.0]]))


def _pool_net():
    return sb.Sequential(sb.Conv2d(1, 2, activation="identity"), sb.MaxPool2d(2), sb.Flatten(),
                         sb.Dense(1, "identity"), inputs=(1, 4, 4), loss="mse")


def _torch_pool_loss(values):
    t = {k: torch.tensor(np.asarray(v, dtype=float), requires_grad=k in ("K1", "b1", "W2", "b2")) for k, v in values.items()}
    Z = torch.nn.functional.conv2d(t["X"].reshape(1, 1, 4, 4), t["K1"].T.reshape(1, 1, 2, 2), t["b1"].reshape(1))
    Yhat = torch.nn.functional.max_pool2d(Z, 2).reshape(1, -1) @ t["W2"] + t["b2"]
    return ((Yhat - t["Y"]) ** 2).sum(), t


def test_torch_routes_a_tied_window_to_its_first_pixel():
    """The oracle's convention is the engine's: torch's max_pool2d gives a tie to the first pixel."""
    x = torch.tensor([[[[0.0, 1.0], [1.0, 1.0]]]], requires_grad=True)
    torch.nn.functional.max_pool2d(x, 2).sum().backward()
    assert x.grad.flatten().tolist() == [0.0, 1.0, 0.0, 0.0]


def test_a_cnn_worked_example_on_a_max_pool_tie_is_written():
    """Audit: the certificate refused it ('the gradient of K1 disagrees with a finite difference:
    11.51 vs 6.79'): at a tie the central difference is the two slopes' average, and SymPy's Max
    (derivative ½ to each) gives the same average.  Now the slope there is SymPy's derivative of the
    window written as its first arg-max; the table shows both one-sided differences."""
    text = sb.derive(_pool_net()).markdown(values=TIE, lr=0.1, cost=False, figure=False, vanishing=False)
    loss, t = _torch_pool_loss(TIE)
    loss.backward()
    line = next(ln for ln in text.splitlines() if ln.startswith(r"\frac{\partial C}{\partial K_{1}} &= \left[\begin{matrix}"))
    body = line.split(r"\begin{matrix}")[1].split(r"\end{matrix}")[0]
    np.testing.assert_allclose([float(x) for x in body.split(r"\\")], t["K1"].grad.flatten().numpy(), rtol=1e-12)
    table = text.split("## Verification")[1].split("\n## ")[0]
    assert "a max-pool window whose maximum is tied" in table
    h = 1e-6
    for idx in (1, 2, 3):          # K₁'s entries 2-4 move the tied pixels apart: a kink each
        row = next(ln for ln in table.splitlines() if rf"\left(K_{{1}}\right)_{{{idx + 1},1}}" in ln)
        shown = [float(x) for x in re.findall(r"(-?[\d.]+) \\text\{ \((?:left|right)\)\}", row)]
        sides = []
        for s in (-h, h):
            moved = {**TIE, "K1": TIE["K1"].copy()}
            moved["K1"][idx, 0] += s
            sides.append(float(_torch_pool_loss(moved)[0].detach()))
        here = float(loss.detach())
        np.testing.assert_allclose(shown, [(here - sides[0]) / h, (sides[1] - here) / h], rtol=1e-5, atol=1e-6)
        assert "a kink: }0" in row and float(row.split("|")[2].strip(" $")) == pytest.approx(float(t["K1"].grad[idx, 0]))


# ------------------------------------------------ a one-sample check of L, the penalty included
def _penalised_graph() -> sb.Graph:
    g = sb.Graph()
    X, Y = g.inputs("X", shape=(T, D)), g.targets("Y", shape=(T, K))
    W, W2 = g.params("W W2", shape=[(D, K), (K, K)])
    g.loss(sb.mse(g.node("H", sb.tanh(X @ W)), Y), penalty=sp.Rational(1, 10) * (sb.sumsq(W) + sb.sumsq(W2)))
    return g


@pytest.mark.parametrize("fmt", ["markdown", "latex"])
def test_one_sample_verification_checks_the_gradient_of_L_with_its_penalty(fmt):
    """Audit: with a penalty, the table differentiated C: the penalty-only W₂'s row read 0 and 0
    while the document's line says ∂L/∂W₂ = W₂/5.  Oracle: torch autograd of L = C + P."""
    rng = np.random.default_rng(3)
    values = {"X": rng.normal(size=(T, D)), "Y": rng.normal(size=(T, K)), "W": rng.normal(size=(D, K)),
              "W2": rng.normal(size=(K, K))}
    text = getattr(sb.derive(_penalised_graph()), fmt)(values=values, cost=False, figure=False, vanishing=False)
    t = {k: torch.tensor(v, requires_grad=k in ("W", "W2")) for k, v in values.items()}
    L = ((torch.tanh(t["X"] @ t["W"]) - t["Y"]) ** 2).sum() + ((t["W"] ** 2).sum() + (t["W2"] ** 2).sum()) / 10
    L.backward()
    table = text.split("Verification")[-1]
    assert "L = C + P" in table
    for name, tex in (("W", "$W$"), ("W2", "$W_{2}$")):
        want = float(torch.linalg.norm(t[name].grad))
        row = next(ln for ln in table.splitlines() if ln.lstrip("| ").startswith(tex))
        formula, fd = (float(x) for x in re.findall(r"\$(-?\d+\.\d+)\$", row)[:2])
        assert formula == pytest.approx(want, rel=1e-7) and fd == pytest.approx(want, rel=1e-6)
    assert want > 0.1          # W₂'s gradient is the penalty's alone, not 0


@pytest.mark.parametrize("net", ["attention", "convolution"])
def test_nielsen_notation_of_a_one_sample_network_is_written(net, tmp_path):
    """Audit: notation="nielsen" on a one-sample network (attention, a CNN) raised SymPy's raw
    TypeError 'Cannot convert expression to float': the loss's row line was written as Nielsen's
    column C_x = Σₖ ℓ(aₖ, yₖ) while the sample is a matrix.  Its rows are now written as in the
    matrix notation and certified row by row; pdflatex compiles the document."""
    layers = {"attention": (sb.Attention(heads=1), sb.Dense(2)),
              "convolution": (sb.Conv2d(2, 2, activation="relu"), sb.MaxPool2d(2), sb.Flatten(), sb.Dense(2))}
    d = sb.derive(sb.Sequential(*layers[net], inputs=(3, 2) if net == "attention" else (1, 4, 4), loss="mse"))
    out = tmp_path / "nielsen.pdf"
    d.write(out, notation="nielsen")
    assert out.stat().st_size > 10_000
    if net == "attention":                     # three rows, each with its cost c_r (the CNN's output is one row)
        assert r"\sum_{r=1}^{3}" in d.latex(notation="nielsen")


def test_an_rnn_forward_pass_prints_its_inputs_columns_as_a_lecture_does(tmp_path):
    """Audit: an RNN's forward pass printed Python's slices, x₂ = X[:, 2:4]; it now prints the
    columns counted from 1, both ends in, x₂ = X_{:, 3:4} (step t reads columns 2t − 1 and 2t of X,
    as DESIGN.md's RNN), and says what the subscript means.  The sentence before it had lost its
    space ('before it(in a matrix'), seen in pdftotext of the PDF."""
    import subprocess
    d = sb.derive(sb.rnn(inputs=2, hidden=3, steps=3, outputs=1))
    text = d.latex()
    for t in (1, 2, 3):
        assert rf"x_{{{t}}} &= X_{{:,\,{2 * t - 1}:{2 * t}}}" in text
    assert "X[" not in text and "is the block of columns" in text
    d.write(tmp_path / "rnn.pdf")
    words = subprocess.run(["pdftotext", str(tmp_path / "rnn.pdf"), "-"], capture_output=True, text=True).stdout
    assert "before it (in a matrix" in " ".join(words.split())
