"""Issue 16's findings, one test each: every one of them failed before the fix.

Each document here also passes the certificate (render runs it), so a fix that
printed something false would fail too.
"""
from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

import symback as sb
from symback.document import context
from symback.errors import DefinitionError
from symback.document.analysis import value_of
from symback.render import render

ROOT = Path(__file__).resolve().parent.parent
QUICK = {"verify": False, "cost": False, "vanishing": False}


def _tiny(layers: int) -> sb.Graph:
    """The issue's scalar graph: z = w x, h = σ(v z + tanh(z) w), C = (h − y)², `layers` times."""
    g = sb.Graph()
    x, y = g.inputs("x"), g.targets("y")
    w, v = g.params("w v")
    h = g.node("z", w * x)
    for k in range(layers):
        h = g.node(f"h{k + 1}", sb.sigmoid(v * h + sp.tanh(h) * w))
    g.loss((h - y) ** 2)
    return g


def test_tiny_scalar_graph_renders():
    """sum() of nothing was the int 0 in _error_first: AttributeError 'is_negative'."""
    text = render(sb.derive(_tiny(1)), **QUICK)
    assert r"\frac{\partial C}{\partial w}" in text


def test_two_tiny_layers_do_not_hang_in_simplify():
    start = time.perf_counter()
    render(sb.derive(_tiny(2)), **QUICK)
    assert time.perf_counter() - start < 30          # was minutes inside sp.simplify


def _scalar(cost, node=None):
    g = sb.Graph()
    x, y, w = g.inputs("x"), g.targets("y"), g.params("w")
    yhat = g.node("yhat", node(w * x) if node else sb.tanh(w * x))
    g.loss(cost(yhat, y))
    return g


def _product_in_cost():
    g = sb.Graph()
    x, y, w = g.inputs("x"), g.targets("y"), g.params("w")
    g.loss((w * x * sp.tanh(w * x) - y) ** 2)
    return g


_z = sp.Symbol("z", real=True)
SOFTSIGN = sb.activation("softsign_issue16", _z / (1 + sp.Abs(_z)), var=_z)
RANDOM_GRAPHS = {
    "product in the cost": (_product_in_cost, {}),
    "1-1-1 relu": (lambda: sb.mlp([1, 1, 1], activation="relu"), {}),
    "softplus then a residual sigmoid": (lambda: sb.Sequential(
        sb.Dense(3, "softplus"), sb.Residual(sb.Dense(3, "sigmoid")), sb.Dense(1), inputs=2, loss="mse"), {}),
    "softsign (Abs)": (lambda: _scalar(lambda p, t: (p - t) ** 2, SOFTSIGN), {}),
    "abs cost, steps full": (lambda: _scalar(lambda p, t: sp.Abs(p - t)), {"steps": "full"}),
    "huber, steps full": (lambda: _scalar(lambda p, t: sb.get_loss("huber")(p, t)), {"steps": "full"}),
    "nielsen, tanh output": (lambda: sb.mlp([2, 3, 1], activation="tanh", output="tanh"), {"notation": "nielsen"}),
}


@pytest.mark.parametrize("name", sorted(RANDOM_GRAPHS))
def test_random_graphs_of_the_issue_render(name):
    build, options = RANDOM_GRAPHS[name]
    d = sb.derive(build())
    for template, fmt in (("article", "latex"), ("markdown", "markdown")):
        text = render(d, template, fmt=fmt, **options)
        assert "Backpropagation" in text


def test_hadamard_power_evaluates_numerically():
    """A hand-written layer norm's (X − μ)^∘2 stopped d.write('ln.pdf'): no HadamardPower in the evaluator."""
    X = sp.MatrixSymbol("X", 2, 3)
    a = np.arange(6.0).reshape(2, 3) - 2
    got = value_of(sp.HadamardPower(X, 2) + sp.HadamardPower(X, sp.Rational(1, 1)), {X: a}, 2)
    assert np.allclose(got, a ** 2 + a)


def test_verification_reports_no_error_for_an_exact_zero():
    """At p = y the formula gives exactly 0, the 40-digit difference about 1e-41: the error was reported as 1."""
    g = sb.Graph()
    x, y = g.inputs("x"), g.targets("y")
    w, b = g.params("w b")
    p = g.node("p", sb.relu(w * x + b))
    g.loss((p - y) ** 2)
    ctx = context(sb.derive(g), values={"x": 3, "w": sp.Rational(1, 3), "b": 0, "y": 1})
    rows = ctx["verify"]["rows"]
    assert [r["formula"] for r in rows] == ["0", "0"] and all(r["fd"] != "0" for r in rows)
    assert all(r["err"] < 1e-20 for r in rows)


def test_readme_steps_taken_example_moves_the_parameters():
    """The README's --steps-taken 3 example had p = y: every gradient 0, θ⁰ = θ¹ = θ² = θ³."""
    line = next(l for l in (ROOT / "README.md").read_text().splitlines() if "--steps-taken" in l and "symback derive" in l)
    values = dict(kv.split("=") for kv in re.search(r"--values (\S+)", line).group(1).split(","))
    d = sb.derive(sb.load_spec(ROOT / line.split()[2]))
    grads = d.evaluate({k: sp.Rational(v) for k, v in values.items()})["gradient"]
    assert any(grads[p] != 0 for p in d.params)


@pytest.mark.parametrize("notation", ["matrix", "lecture"])
def test_every_delta_used_is_defined(notation):
    """δ_Ŷ and δ_C were used in the δ recursion (demo mlp.pdf p. 5, the lecture document) with no row."""
    from symback.engine import Adjoint
    from symback.vjp import AdjointMatrix
    for net in (sb.mlp([3, 4, 4, 1], activation="sigmoid"),
                sb.mlp([2, 8, 8, 1], activation="tanh", output="sigmoid", loss="binary_cross_entropy",
                       residual=True, l2=0.001)):
        ctx = context(sb.derive(net), notation=notation, **QUICK)
        defined = {r["sympy"]["lhs"] for r in ctx["deltas"]}
        for r in ctx["deltas"]:
            used = set()
            for e in r["sympy"]["chain"]:
                used |= {a for a in sp.preorder_traversal(e) if isinstance(a, (Adjoint, AdjointMatrix))}
            assert used <= defined, (r["lhs"], used - defined)


def test_lecture_notation_uses_j_for_the_batch_cost_only():
    """'J is the cost of one sample' and 'J = (1/m) Σ J⁽ⁱ⁾' in one document (seed004.toml --notation lecture)."""
    d = sb.derive(sb.load_spec(ROOT / "examples" / "seed004.toml"))
    ctx = context(d, notation="lecture", **QUICK)
    assert ctx["loss"]["lhs"] == "J^{(i)}"
    assert ctx["loss"]["batch"].startswith("J = ")
    local = {r["partial"] for r in ctx["local"]}
    assert r"\frac{\partial J^{(i)}}{\partial \hat{y}}" in local


def _hidden_softmax():
    m = sb.BATCH
    g = sb.Graph()
    X, Y = g.inputs("X", shape=(m, 3)), g.targets("Y", shape=(m, 1))
    W1, W2 = g.params("W1 W2", shape=[(3, 4), (4, 1)])
    Z = g.node("Z_A", X @ W1)
    A = g.node("A", sb.softmax(Z))
    g.node("Yhat", A @ W2)
    g.loss(sb.get_loss("mse")(g.symbol("Yhat"), Y))
    return g


def test_hidden_softmax_prints_its_closed_form_not_an_undefined_jacobian():
    """J_softmax(Z) was printed and never defined; the closed form is P ⊙ (G − (G ⊙ P)𝟏𝟏ᵀ), P = A."""
    from symback.document.factors import softmax_rule
    assert all(softmax_rule(k) for k in (1, 2, 3, 5))
    text = render(sb.derive(_hidden_softmax()), **QUICK)      # the certificate checks it against SymPy's entries
    assert r"J_{\operatorname{softmax}}" not in text
    assert r"\mathbf{1}\mathbf{1}^{\top}" in text and r"\odot A" in text


def test_steps_full_names_an_activations_derivative_and_repeats_no_line():
    """'∂p/∂c = ReLU′(c)  chain rule' (no inner derivative) and seed 003's '∂L/∂a₂ = Σ2(a₂−y) = Σ2(a₂−y)'."""
    d0 = sb.derive(sb.load_spec(ROOT / "examples" / "seed000.toml"))
    g0 = context(d0, steps="full", **QUICK)["gradients"][0]["steps"]
    relu = next(f for f in g0["factors"] if "ReLU" in f["line"])
    assert relu["rule"] == "the activation's derivative"
    d3 = sb.derive(sb.load_spec(ROOT / "examples" / "seed003.toml"))
    for row in context(d3, steps="full", **QUICK)["reduction_steps"]:
        parts = row["line"].split(" = ")
        assert len(parts) == len(set(parts)), row["line"]
        assert not row["scaled"]            # no constant factor to talk about


def test_nielsen_notation_declares_column_shapes_and_prints_one_sample():
    """x ∈ ℝ^{m×3}, w² ∈ ℝ^{3×4} before z² = w²x + b²; '∂C/∂C_x = 1 𝟏'; 'C^⊤_{x i} = ℓ((a⁴)^⊤_{i,1}, …)'."""
    d = sb.derive(sb.mlp([3, 4, 4, 1], activation="sigmoid"))
    ctx = context(d, notation="nielsen", **QUICK)
    assert ctx["inputs"] == r"x \in \mathbb{R}^{3 \times 1}"
    assert r"w^{2} \in \mathbb{R}^{4 \times 3}" in ctx["params"] and r"b^{2} \in \mathbb{R}^{4 \times 1}" in ctx["params"]
    assert ctx["loss"]["sample"].startswith("C_x &= ") and r"\top" not in ctx["loss"]["sample"]
    edge = next(r for r in ctx["local"] if r["partial"] == r"\frac{\partial C}{\partial C_x}")
    assert edge["value"] == "1"


def test_vanishing_prose_does_not_call_every_factor_small_when_some_are_relu():
    """Seed 001: 'with sigmoid every such factor is below one' where two of three factors are ReLU′."""
    d = sb.derive(sb.load_spec(ROOT / "examples" / "seed001.toml"))
    ctx = context(d, verify=False, cost=False)
    assert ctx["vanishing"]["shrinking"] == ["sigmoid"] and not ctx["vanishing"]["every"]
    text = render(d, verify=False, cost=False)
    assert "every one of them is below one" not in text and "derivative(s)" not in text


def test_rnn_parameters_are_subscripted():
    """$Wx$ read as W times x; the RNN's parameters are W_x, W_h, b_h, W_y, b_y."""
    ctx = context(sb.derive(sb.rnn(inputs=2, hidden=3, outputs=1, steps=2)), **QUICK)
    for name in ("W_{x}", "W_{h}", "b_{h}", "W_{y}", "b_{y}"):
        assert name + r" \in" in ctx["params"]


def test_scalar_documents_have_no_matrix_boilerplate():
    scalar = render(sb.derive(sb.load_spec(ROOT / "examples" / "seed002.toml")), **QUICK)
    matrix = render(sb.derive(sb.mlp([2, 3, 1])), **QUICK)
    for phrase in ("in a matrix, each row is a", "Into a matrix node", "apply the maps, for matrices"):
        assert phrase not in scalar and phrase in matrix


@pytest.mark.parametrize("net", ["rows", "one sample"])
def test_cross_entropy_outside_its_domain_is_a_clear_error(net):
    """Binary cross-entropy on an identity output: the document's random predictions leave (0, 1)
    and log(p) is complex — a DefinitionError naming the loss and the value, not a TypeError
    ('float() argument must be ... not mpc') from deep inside NumPy."""
    g = (sb.mlp([2, 1], activation="tanh", output="identity", loss="binary_cross_entropy") if net == "rows"
         else sb.Sequential(sb.Dense(2), inputs=(3, 2), loss="binary_cross_entropy"))
    with pytest.raises(DefinitionError, match=r"log\(p\).* is not a real number at p = -"):
        sb.derive(g).latex()
