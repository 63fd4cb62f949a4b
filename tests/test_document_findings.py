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
from conftest import pdflatex_problems
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


# ---------------------------------------------------------------- what remained of the issue
def test_a_spec_files_terms_print_in_the_written_order():
    """ŷ = a₁ + a₂ + b (SymPy's order) where seed 002 and its notes write b + a₁ + a₂; seed 000's
    c = x₁w₁ + x₂w₂ + b; the worked example substitutes in the same order (and stays certified)."""
    d2 = sb.derive(sb.load_spec(ROOT / "examples" / "seed002.toml"))
    forward = {r["lhs"]: r["rhs"] for r in context(d2, **QUICK)["forward"]}
    assert forward[r"\hat{y}"] == "b + a_{1} + a_{2}"
    d0 = sb.derive(sb.load_spec(ROOT / "examples" / "seed000.toml"))
    assert context(d0, **QUICK)["forward"][0]["rhs"] == "x_{1} w_{1} + x_{2} w_{2} + b"
    d3 = sb.load_spec(ROOT / "examples" / "seed003.toml")
    spec = sb.spec.read_spec(ROOT / "examples" / "seed003.toml")
    ex = context(sb.derive(d3), values=spec.values, lr=spec.lr, **QUICK)["example"]["forward"]
    assert ex[0]["formula"] == "w_{1} x + b_{1}" and ex[0]["substituted"].startswith(r"0.5 \cdot 1 + ")
    assert "b + a_{1} + a_{2}" in render(d2)          # rendered through the certificate


def test_a_written_order_that_is_not_the_nodes_formula_is_not_used():
    """A graph built in Python has no text: SymPy's order; a text is only used when its terms
    add up to the node (a minus sign and a product of a function are kept right)."""
    from symback.document.written import written_form, written_latex
    g = sb.spec.spec_from_dict({"inputs": ["x"], "targets": ["y"], "params": ["w", "b"],
                                "nodes": {"z": "-3*w*x + b - tanh(x)*w"}, "loss": {"cost": "(z - y)**2"}}).graph
    terms = written_form(g, "z")
    assert written_latex(terms) == r"- 3 w x + b - w \tanh\left(x\right)"
    assert sp.expand(sum(s * sp.Mul(*f) for s, f in terms) - g.expr("z")) == 0
    g.written_text["z"] = "b + w*x"                  # not the node's formula: never printed
    g.__dict__.pop("_written_terms")
    assert written_form(g, "z") is None
    assert written_form(_tiny(1), "h1") is None


def test_identity_edges_read_delta_to_delta():
    """A residual's H = A₁ + A₂ edges were labelled (x ↦ x): SymPy's Lambda(δ, δ) is its identity
    function, with a dummy x."""
    d = sb.derive(sb.mlp([2, 3, 3, 1], activation="tanh", residual=True))
    ctx = context(d, **QUICK)
    passes = [r["value"] for r in ctx["local"] if r["maps"] and r["partial"].startswith(r"\frac{\partial H_{2}}")]
    assert passes == [r"\left( \delta_{H_{2}} \mapsto \delta_{H_{2}} \right)"] * 2
    labels = list(ctx["sympy"]["labels"].values()) if isinstance(ctx["sympy"]["labels"], dict) else ctx["sympy"]["labels"]
    assert r"\left( \delta \mapsto \delta \right)" in labels and not any("x \\mapsto x" in str(l) for l in labels)


def test_layer_and_head_names_print_as_the_attention_section_writes_them():
    from symback.document.attention import Named
    from symback.printing import latex
    for name, shown in (("O2_1", "O_{2,1}"), ("P2_1", "P_{2,1}"), ("Wq2", "W_{q,2}"), ("Wo2", "W_{o,2}"),
                        ("Z_P2_1", "Z_{P_{2,1}}"), ("Wx", "W_{x}"), ("W1", "W_{1}"), ("a_1", "a_{1}")):
        assert latex(sp.Symbol(name)) == latex(sp.MatrixSymbol(name, 2, 2)) == shown
    assert latex(sp.MatrixSymbol("O2_1", 2, 2)) == latex(Named("O_{2,1}", 2, 2))


def test_cross_entropy_is_evaluated_with_numpy_inside_its_domain():
    """The probe at −1.3 was outside log's domain: every BCE document evaluated its loss through
    mpmath entry by entry.  Inside (0, 1) NumPy agrees; outside, the clear error still comes."""
    from symback.evaluate import _scalar_fn
    lf = sb.get_loss("binary_cross_entropy")
    p, t = sp.symbols("p t")
    f = _scalar_fn(sp.Lambda((p, t), lf(p, t)))
    a, b = np.random.default_rng(0).uniform(0.05, 0.95, (2, 20000, 1))
    exact = np.vectorize(lambda u, v: float(sp.N(lf(p, t).subs({p: u, t: v}))))(a[:5], b[:5])
    assert np.allclose(f(a[:5], b[:5]), exact)
    # NumPy's form for every entry, not mpmath's entry by entry (about half a second here)
    assert not isinstance(f, np.vectorize)
    assert np.allclose(f(a, b), -(b * np.log(a) + (1 - b) * np.log(1 - a)))
    with pytest.raises(DefinitionError, match="not a real number"):
        f(np.array([[-0.5]]), np.array([[1.0]]))


def test_the_cost_is_printed_once_and_the_penalty_on_its_own_line():
    d0 = sb.derive(sb.load_spec(ROOT / "examples" / "seed000.toml"))
    tex = render(d0, **QUICK)
    assert tex.count(r"C &= \frac{\left(p - y\right)^{2}}{2}") == 1
    assert "a matrix graph entry by entry" not in render(d0, verify=False, vanishing=False)
    assert "a matrix graph entry by entry" in render(sb.derive(sb.mlp([2, 3, 1])), verify=False, vanishing=False)
    res = render(sb.derive(sb.mlp([2, 3, 3, 1], activation="tanh", residual=True, l2=0.001)), **QUICK)
    assert r"\\ \text{penalty } P" in res and r"\qquad \text{penalty}" not in res
    assert r"\begin{figure}[htbp]" in res and r"Figure~\ref{fig:graph}" in res
    nielsen = render(sb.derive(sb.mlp([3, 4, 1])), notation="nielsen", **QUICK)
    assert "each row is a" not in nielsen and "one\nsample, a column" in nielsen


def test_prime_classes_are_public():
    from symback.printing import prime, prime_classes
    f = prime(sb.functions.sigmoid, (sp.Symbol("z"),))
    assert type(f) in prime_classes()
    assert "_PRIME_CLASSES" not in (ROOT / "symback" / "document" / "certificate.py").read_text()


PAGE_DOCUMENTS = {
    "residual": (lambda: sb.mlp([2, 8, 8, 1], activation="tanh", output="sigmoid", loss="binary_cross_entropy",
                                residual=True, l2=0.001), {}),
    "nielsen": (lambda: sb.mlp([3, 4, 4, 1]), {"notation": "nielsen"}),
    "rnn": (lambda: sb.rnn(inputs=2, hidden=3, outputs=1, steps=4), {}),
    "skip connection": (lambda: sb.load_spec(ROOT / "examples" / "skip_connection.toml"), {}),
}


@pytest.mark.parametrize("name", sorted(PAGE_DOCUMENTS))
def test_no_line_runs_past_the_margin(name, tmp_path):
    """Looked at as pages: the penalty beside L (53 pt into the margin), a nine-factor path and a
    folded part's 'where G₁ = …' (20 pt), an RNN's punchline (49 pt), a skip connection's softmax
    punchline (378 pt), Nielsen's escaped vanishing bound.  pdflatex reports every overfull line."""
    build, options = PAGE_DOCUMENTS[name]
    tex = sb.derive(build()).latex(**options)
    assert "textbackslash" not in tex
    assert pdflatex_problems(tex, tmp_path) == ([], [])


def test_nielsens_figure_labels_are_columns_like_its_text():
    """The local derivatives read (δ² ↦ δ² xᵀ), the figure (δᵀ ↦ δᵀ xᵀ): the bare δ was printed as a row."""
    ctx = context(sb.derive(sb.mlp([3, 4, 4, 1])), notation="nielsen", **QUICK)
    labels = list(ctx["sympy"]["labels"].values())
    assert r"\left( \delta \mapsto \delta x^{\top} \right)" in labels
    assert not any(r"\delta^{\top}" in str(label) for label in labels)


def test_a_skip_connections_punchline_starts_from_the_fused_output():
    """Paths with no shorthand composed softmax's and cross-entropy's maps: ((−(−Y ⊙ [1/Ŷ]) ⊙ Ŷ 𝟏𝟏ᵀ − …),
    378 pt past the margin, and its biases 𝟏ᵀ(…) were shown where the others are left out."""
    d = sb.derive(sb.load_spec(ROOT / "examples" / "skip_connection.toml"))
    ctx = context(d, **QUICK)
    rows = {r["param"]: r for r in ctx["punchline"]}
    assert set(rows) == {"W1", "W2", "W3"}
    assert all(r"\left[\frac{1}{\hat{Y}}\right]" not in t["factors"] for r in rows.values() for t in r["terms"])
    assert r"\left(\hat{Y} - Y\right) W_{3}^{\top}" in rows["W2"]["terms"][0]["factors"]
    assert "$b_{1}$, $b_{2}$, $b_{3}$" in ctx["punchline_note"]


def test_the_beamer_worked_example_is_at_the_frames_type_size(tmp_path):
    """Seed 003's deck: the worked example's gradients were shrunk to one frame, about 5 pt; each
    word's height on those frames, read back from the PDF, is that of the other frames' text."""
    import shutil
    import statistics
    import subprocess
    if not (shutil.which("pdflatex") and shutil.which("pdftotext")):
        pytest.skip("pdflatex and pdftotext are needed to measure a page")
    spec = sb.spec.read_spec(ROOT / "examples" / "seed003.toml")
    (tmp_path / "deck.tex").write_text(sb.derive(spec.graph).latex(template="beamer", values=spec.values,
                                                                   lr=spec.lr), encoding="utf-8")
    subprocess.run(["pdflatex", "-interaction=nonstopmode", "-no-shell-escape", "deck.tex"], cwd=tmp_path,
                   capture_output=True, timeout=240)
    boxes = subprocess.run(["pdftotext", "-bbox", "deck.pdf", "-"], cwd=tmp_path, capture_output=True,
                           text=True).stdout
    heights = {}
    for page in boxes.split("<page")[1:]:
        words = re.findall(r'yMin="([\d.]+)" xMax="[\d.]+" yMax="([\d.]+)">([^<]*)<', page)
        if words:
            heights[" ".join(w for _, _, w in words[:3])] = statistics.median(float(b) - float(a) for a, b, _ in words)
    example = [h for title, h in heights.items() if title.startswith("Worked example")]
    text = statistics.median(heights.values())
    assert example and all(h >= 0.9 * text for h in example), (example, text)


def test_a_one_sample_graphs_penalty_is_in_its_batch_lines():
    """A one-sample graph keeps its penalty out of the cost C, so L = (1/m) Σ Cᵢ + P: the document
    printed L = (1/m) Σ Cᵢ (false, and refused by the certificate); now it names P and ∂P/∂θ,
    and the certificate checks both against the batch loss the model trains on."""
    g = sb.Graph()
    X = g.inputs("X", shape=(3, 2))
    Y = g.targets("Y", shape=(3, 2))
    W = g.params("W", shape=(2, 2))
    H = g.node("H", sb.tanh(X @ W))
    g.loss(sb.mse(H, Y), penalty=sp.Rational(1, 10) * sb.sumsq(W))
    text = sb.derive(g).markdown()
    assert r"L = P + \frac{1}{m} \sum_{i=1}^{m} C^{(i)}" in text
    assert r"\frac{\partial L}{\partial \theta} = \frac{\partial P}{\partial \theta} + " in text
    assert r"P = \frac{1}{10} \lVert W \rVert_F^{2}" in text


def test_one_sample_documents_do_not_call_rows_samples():
    """A one-sample graph's rows are a sequence's positions or an image's channels: its
    document says every matrix is one sample's, not that each row is a sample."""
    net = sb.Sequential(sb.Dense(3, "tanh"), sb.Dense(2), inputs=(4, 3), loss="mse")
    text = render(sb.derive(net), **QUICK)
    assert "each row is a" not in text and "every matrix is\none sample's" in text
    ce = sb.Sequential(sb.Dense(3, "tanh"), sb.Dense(2, "softmax"), inputs=(4, 3), loss="cross_entropy")
    assert "Stacked over outputs and the sample's rows" in render(sb.derive(ce), **QUICK)
    # its worked example is one sample: m = 1 (the loss shown is that sample's cost)
    d = sb.derive(net)
    rng = np.random.default_rng(0)
    values = {"X": rng.normal(size=(4, 3)), "Y": rng.normal(size=(4, 2))}
    values.update({p: rng.normal(size=tuple(int(v) for v in net.symbol(p).shape)) for p in d.params})
    text = render(d, values=values, **QUICK)
    assert "each row of $X$ is a sample" not in text and "($X$ and $Y$ are one sample, so $m = 1$)" in text
    loss = sb.compile(d, dtype="float64").loss(values["X"][None], values["Y"][None], {p: values[p] for p in d.params})
    assert f"So the loss is $L = {loss:.6g}$" in text


def test_a_gradient_with_too_many_paths_is_written_through_the_deltas(monkeypatch):
    """Seven residual blocks give W1 128 paths, and two stacked transformer blocks chain forms of
    hundreds of thousands of symbols: written out path by path, the document took minutes (over
    ten for the two blocks) and pages no reader follows.  Past 64 paths, or 10,000 symbols, a
    gradient is written through the δs (its recursive form, certified like every line) with the
    count said; the counts, taken over the graph, equal chain()'s list and the written-out form.
    (The document part runs with the limit at 4 paths, on three blocks, to stay quick.)"""
    from symback.engine import _adjoints_in
    net = sb.Sequential(sb.Dense(1, "tanh"), *[sb.Residual(sb.Dense(1, "tanh")) for _ in range(7)],
                        sb.Dense(1), inputs=1, loss="mse")
    d = sb.derive(net)
    for p in ("W1", "W5", "b9"):
        paths = d.chain(p)
        assert d.path_count(p) == len(paths) and d.path_count(p, longest=True) == max(map(len, paths))
    assert d.path_count("W1") == 128
    from symback.document.figure import _on_paths      # the figure's highlighted edges, not listed
    assert _on_paths(d, "W1") == {(f.of, f.wrt) for path in d.chain("W1") for f in path}

    def written_out(name):          # the chain form's tree, δs replaced by theirs, no folding
        rec = d.adjoint[name]
        return rec.xreplace({s: written_out(s.node) for s in _adjoints_in(rec)}) if name != d.loss_name else sp.S.One
    assert d.chain_size("W5") == sum(1 for _ in sp.preorder_traversal(written_out("W5")))
    monkeypatch.setattr("symback.engine.MAX_LISTED_PATHS", 4)
    net = sb.Sequential(sb.Dense(1, "tanh"), *[sb.Residual(sb.Dense(1, "tanh")) for _ in range(3)],
                        sb.Dense(1), inputs=1, loss="mse")
    d = sb.derive(net)
    ctx = context(d, figure=False, **QUICK)
    grads = {g["sympy"]["lhs"].args[1]: g for g in ctx["gradients"]}
    many, few = grads[d.graph.symbol("W1")], grads[d.graph.symbol("W2")]
    assert d.path_count("W1") == 8 and "There are 8 paths" in many["summary"] and many["paths"] == []
    assert many["sympy"]["chain"] == [many["sympy"]["lhs"], d.gradient("W1", form="recursive")]
    assert few["summary"] is None and len(few["paths"]) == d.path_count("W2") == 4
    text = d.markdown(figure=False, **QUICK)              # certified before it is returned
    assert r"There are 8 paths to $W_{1}$" in text and r"\frac{\partial L}{\partial W_{1}} &= X^{\top}" in text
    assert "$W_{1}$, $b_{1}$, whose chain forms are too large to write out here" in text   # not in the punchline


def test_counting_operations_has_a_time_budget(monkeypatch):
    """A transformer block of width 2 (few enough parameter entries to count) written out entry by
    entry kept "What the chain rule saves" counting for minutes; the count now has a budget
    (COST_SECONDS), past which that optional section is left out and the rest is written."""
    d = sb.derive(_tiny(1))
    options = dict(verify=False, vanishing=False, figure=False)
    assert r"\section{What the chain rule saves}" in render(d, **options)
    monkeypatch.setattr("symback.document.analysis.COST_SECONDS", 1e-6)
    d = sb.derive(_tiny(1))             # a new derivation: counts are kept per derivation
    text = render(d, **options)
    assert r"\section{What the chain rule saves}" not in text and r"\section{The chain rule" in text


def test_path_and_size_counts_have_no_recursion_limit():
    """The counts walk the graph in order, not recursively: a chain of 1,200 tanh nodes (deeper
    than Python's recursion limit) has one path of 1,201 factors, and its chain form is too
    large to write out path by path."""
    g = sb.Graph()
    x, y = g.inputs("x"), g.targets("y")
    h = x
    for i, w in enumerate(g.params(" ".join(f"w{i}" for i in range(1200)))):
        h = g.node(f"h{i}", sb.tanh(w * h))
    g.loss((h - y) ** 2)
    d = sb.derive(g)
    assert (d.path_count("w0"), d.path_count("w0", longest=True)) == (1, 1201)
    assert d.path_count("w1199", longest=True) == 2 and d.listable("w1199") and not d.listable("w0")


def test_vanishing_prose_counts_the_factors_of_each_path():
    """Audit: an LSTM's document said 'the gradient of the early parameters shrinks geometrically with
    depth', where its own bound has paths with two σ′ factors and paths with six; a batch-norm network's
    said 'no activation has a derivative bounded below one' under sup|σ′| = 1/4 (σ is the output, inside
    the output error).  Oracle: the bound's own terms, counted here."""
    d = sb.derive(sb.lstm(inputs=2, hidden=2, outputs=1, steps=3, output="identity", loss="mse"))
    v = context(d, verify=False, cost=False)["vanishing"]
    terms = v["sympy"]["bound"].args[1].args            # the bound's paths: Terms of Chains
    quarters = [sum(1 for f in t.args if f == sp.Rational(1, 4)) for t in terms]
    assert min(quarters) < max(quarters)
    assert "The paths differ" in v["conclusion"] and "early parameters shrinks" not in v["conclusion"]
    bn = sb.derive(sb.Sequential(sb.Dense(3), sb.BatchNorm(), sb.Dense(1, "sigmoid"), inputs=2, loss="binary_cross_entropy"))
    text = render(bn, verify=False, cost=False, figure=False)
    # σ′ is a factor of its own on this graph's path (∂Ŷ/∂Z₃ = δ ↦ δ ⊙ σ′(Z₃)): bounded by 1/4 and named
    assert "bounded below one" not in text and "with sigmoid every one of them is below one" in text
    assert "\\frac{1}{4}" in text


def test_a_one_sample_networks_check_says_one_sample():
    """Audit: 'random values (seed 0, 3 samples)' over an attention network checked at one (T, d) sample."""
    net = sb.Sequential(sb.Attention(heads=1), sb.Dense(2), inputs=(3, 2), loss="mse")
    assert "random values (seed 0, one sample)" in render(sb.derive(net), cost=False, vanishing=False)
    assert "random values (seed 0, 3 samples)" in render(sb.derive(sb.mlp([2, 2, 1])), cost=False, vanishing=False)


def test_a_one_sample_networks_loss_defines_ell_and_is_certified_row_by_row():
    """Audit: 'c = ℓ(Ŷ, Y)' in a one-sample network's forward pass, ℓ never defined.  The loss section
    now defines ℓ and cᵢ = Σₖ ℓ(Ŷᵢₖ, Yᵢₖ), checked at every row of the sample (a wrong line is caught)."""
    from symback.document.certificate import certify
    from symback.document.points import CertificateError
    d = sb.derive(sb.Sequential(sb.Attention(heads=1), sb.Dense(2), inputs=(3, 2), loss="mse"))
    text = d.latex()
    assert r"\ell{\left(\hat{y},y \right)} &= \left(\hat{y} - y\right)^{2}" in text
    # r: the sample's rows; i stays the samples' index in L = (1/m) Σᵢ …
    assert r"{c}_{r} &= \sum_{k=1}^{2} \ell{\left({\hat{Y}}_{r,k},{Y}_{r,k} \right)}" in text
    assert r"C &= \sum_{r=1}^{3} c_{r}" in text
    assert "enough to differentiate the cost $C$ of one sample" in text
    ctx = context(d, verify=False, cost=False, vanishing=False)
    line = next(c for c in ctx["loss"]["sympy"]["claims"] if c.get("rows"))
    lhs, rhs = line["chain"]
    line["chain"] = [lhs, rhs.function.xreplace({rhs.limits[0][0]: 1})]     # one output of two
    with pytest.raises(CertificateError, match="loss.claims"):
        certify(d, ctx)


def test_layer_norm_closed_form_is_shown_without_attention():
    """Audit: layer norm's row-wise δ (DESIGN's (1/σ)(δ_Ĥ − mean(δ_Ĥ) − Ĥ ⊙ mean(δ_Ĥ ⊙ Ĥ))) and the meaning
    of norm(·) appeared only in networks with attention.  Now a Dense → LayerNorm network has the section,
    its line checked row by row (a wrong line is caught)."""
    from symback.document.certificate import certify
    from symback.document.points import CertificateError
    d = sb.derive(sb.Sequential(sb.Dense(4), sb.LayerNorm(), sb.Dense(2, "softmax"), inputs=(3, 4),
                                loss="cross_entropy"))
    light = {"verify": False, "cost": False, "vanishing": False, "figure": False}
    for text in (d.latex(**light), d.markdown(**light)):
        assert "Layer norm, row by row" in text and "Attention, head by head" not in text
        assert r"Here $\operatorname{norm}$ subtracts from each row" in text
    ctx = context(d, verify=False, cost=False, vanishing=False)
    rows = ctx["attention"]["norms"][0]["row"]["instances"]
    assert len(rows) == 3                                   # one checked line per row of the sample
    lhs, rhs = rows[1]["sympy"]["chain"]
    rows[1]["sympy"]["chain"] = [lhs, 2 * rhs]
    with pytest.raises(CertificateError):
        certify(d, ctx)


def test_a_causal_softmax_is_explained_where_the_forward_pass_uses_it():
    """Audit: DESIGN's hand-written attention graph printed softmax_causal(Z_P) and never said what it is."""
    g = sb.Graph()
    X = g.inputs("X", shape=(3, 2))
    Y = g.targets("Y", shape=(3, 2))
    Wq, Wk = g.params("Wq Wk", shape=[(2, 2)] * 2)
    P = g.node("P", sb.softmax((X @ Wq) @ (X @ Wk).T, mask="causal"))
    g.loss(sb.mse(P @ X, Y))
    for text in (sb.derive(g).latex(), sb.derive(g).markdown()):
        assert r"\operatorname{softmax}_{\mathrm{causal}}" in text
        assert "is the row-wise softmax with the entries above the diagonal ($j > i$) left out" in text
    assert "above the diagonal" not in sb.derive(sb.mlp([2, 3, 2], output="softmax", loss="cross_entropy")).latex()


def test_text_and_mermaid_name_no_internal_class():
    """Audit: --format text and Markdown's graph labels printed SymPy internals: MaxPoolVJP(δ, A1, (2, 4, …)),
    ImageMap(δ, unflatten, …), Elementwise(_p ↦ 1/_p, Ŷ), E_0_2_of_4, gamma2."""
    from symback.printing.text import text_report
    nets = [sb.Sequential(sb.Conv2d(2, 3, padding=1, activation="relu"), sb.MaxPool2d(2), sb.AvgPool2d(2),
                          sb.Flatten(), sb.Dense(3, "softmax"), inputs=(1, 4, 4), loss="cross_entropy"),
            sb.Sequential(sb.Attention(heads=2), sb.LayerNorm(), sb.Dense(2), inputs=(3, 4), loss="mse")]
    reports = []
    for net in nets:
        d = sb.derive(net)
        reports.append(text_report(d))
        for shown in (reports[-1], d.markdown(verify=False, cost=False, vanishing=False)):
            for internal in ("MaxPoolVJP", "ImageMap", "Elementwise(", "_of_", "↦ 1/_", "_w ↦"):
                assert internal not in shown, internal
            assert not re.search(r"(?<!\\)gamma\d", shown)
    report = reports[0]         # the CNN's, read again below for what it does name
    assert "route_argmax(" in report and "flatten⁻¹(" in report and "[1/Y\u0302]_⊙" in report
