"""Issue 10: the notes' formulas, as the notes write them, in each seed's document.

Each test renders a seed's document and reads both the SymPy expression a
formula was printed from (the context's ``"sympy"`` keys) and the LaTeX
printed from it.  Oracles: ``sympy.diff`` of the seed's own loss, NumPy
written here, finite differences, and the notes' printed formulas.
"""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import sympy as sp

import symback as sb
from conftest import num, seed000_graph, slow, seed001_graph, seed002_graph, seed004_1d_graph, skip_graph
from symback.document import context
from symback.document.analysis import numeric
from symback.document.notation import columns
from symback.document.steps import Equal, TotalPartial, Vanishes
from symback.matrix import FPrime
from symback.printing import Partial

PDFLATEX = shutil.which("pdflatex")
QUICK = {"verify": False, "cost": False, "vanishing": False}


def sig(z):
    return 1 / (1 + np.exp(-z))


def punchline_net():
    """Seed 004's network: two sigmoid layers, an identity output, J = ½(ŷ − y)²."""
    return sb.derive(sb.mlp([3, 4, 4, 1], activation="sigmoid", output="identity", loss="half_mse"))


def gradient_row(ctx, p):
    return next(g for g in ctx["gradients"] if g["sympy"]["lhs"].args[1].name == p)


# ---------------------------------------------------------------- seed 004
def test_seed004_punchline_symbol_for_symbol_in_lecture_notation():
    d = punchline_net()
    ctx = context(d, notation="lecture", **QUICK)
    rows = {r["lhs"]: r for r in ctx["punchline"]}
    err, dot = r"\left(\hat{y} - y\right)", r" \cdot "
    assert rows[r"\frac{\partial J}{\partial W^{(3)}}"]["factors"] == err + dot + "a^{(3)}"
    assert rows[r"\frac{\partial J}{\partial W^{(2)}}"]["factors"] == dot.join(
        [err, "W^{(3)}", r"\sigma'\left(z^{(3)}\right)", "a^{(2)}"])
    assert rows[r"\frac{\partial J}{\partial W^{(1)}}"]["factors"] == dot.join(
        [err, "W^{(3)}", r"\sigma'\left(z^{(3)}\right)", "W^{(2)}", r"\sigma'\left(z^{(2)}\right)", "X"])
    # a^{(1)} = X, z^{(l+1)} = a^{(l)} W^{(l)} + 1 b^{(l)}, a^{(l)} = σ(z^{(l)}), as seed 004 numbers them
    assert ctx["notation"]["input_row"] == "a^{(1)} = X"
    assert [f["lhs"] for f in ctx["forward"]][:4] == ["z^{(2)}", "a^{(2)}", "z^{(3)}", "a^{(3)}"]
    assert ctx["forward"][2]["rhs"] == r"a^{(2)} W^{(2)} + \mathbf{1} b^{(2)}"
    # the shorthand's factors are the derivation's: Ŷ − Y, W3ᵀ, σ'(Z2), W2ᵀ, σ'(Z1), Xᵀ
    g = d.graph
    short = rows[r"\frac{\partial J}{\partial W^{(1)}}"]["sympy"]["factors"].args[0]
    first, w3, s3, w2, s2, x = short.args
    assert sp.MatAdd(first, g.symbol("Y")).doit() == g.symbol("Yhat")
    assert (w3, w2, x) == (g.symbol("W3").T, g.symbol("W2").T, g.symbol("X").T)
    assert isinstance(s3, FPrime) and s3.arg == g.symbol("Z2") and isinstance(s2, FPrime) and s2.arg == g.symbol("Z1")


def test_seed004_punchline_matrix_product_equals_finite_differences():
    """The valid product beside the shorthand is ∂(Σ_i C_i)/∂W, checked against NumPy differences."""
    d = punchline_net()
    ctx = context(d, notation="lecture", **QUICK)
    rng = np.random.default_rng(3)
    v = {"X": rng.normal(size=(5, 3)), "Y": rng.normal(size=(5, 1)), "W1": rng.normal(size=(3, 4)),
         "b1": rng.normal(size=(1, 4)), "W2": rng.normal(size=(4, 4)), "b2": rng.normal(size=(1, 4)),
         "W3": rng.normal(size=(4, 1)), "b3": rng.normal(size=(1, 1))}

    def forward(v):
        z1 = v["X"] @ v["W1"] + v["b1"]; a1 = sig(z1)
        z2 = a1 @ v["W2"] + v["b2"]; a2 = sig(z2)
        yhat = a2 @ v["W3"] + v["b3"]
        return {"Z1": z1, "A1": a1, "Z2": z2, "A2": a2, "Yhat": yhat, "J": ((yhat - v["Y"]) ** 2).sum() / 2}

    values = {**v, **forward(v)}
    env = {d.graph.symbol(n): sp.ImmutableMatrix(values[n]) for n in values if n != "J"}
    for row in ctx["punchline"]:
        p = row["sympy"]["lhs"].args[1].name
        got = numeric(row["sympy"]["product"], env, 5)
        fd = np.zeros_like(v[p])
        for idx in np.ndindex(fd.shape):
            up, down = {**v, p: v[p].copy()}, {**v, p: v[p].copy()}
            up[p][idx] += 1e-6
            down[p][idx] -= 1e-6
            fd[idx] = (forward(up)["J"] - forward(down)["J"]) / 2e-6
        assert np.allclose(got, fd, rtol=1e-6, atol=1e-8), p


def test_matrix_notation_punchline_is_a_valid_product_and_nielsen_has_bp1_to_bp4():
    d = punchline_net()
    mat = context(d, **QUICK)
    [w3] = [r for r in mat["punchline"] if r["lhs"] == r"\frac{\partial C}{\partial W_{3}}"]
    assert w3["factors"] == r"A_{2}^{\top} \left(\hat{Y} - Y\right)"        # Xᵀδ: shapes multiply
    nl = context(d, notation="nielsen", **QUICK)
    assert [f["rhs"] for f in nl["forward"]][:3] == [r"w^{2} x + b^{2}", r"\sigma\left(z^{2}\right)",
                                                     r"w^{3} a^{2} + b^{3}"]
    bp = {(r["label"], r["lhs"]): r["value"] for r in nl["bp"]}
    assert bp[("BP1", r"\delta^{4}")] == r"a^{4} - y"
    assert bp[("BP2", r"\delta^{2}")] == r"\left(\left(w^{3}\right)^{\top} \delta^{3}\right) \odot \sigma'\left(z^{2}\right)"
    # BP3/BP4 are gradients of the loss C (for one sample, m = 1, C is that sample's cost and
    # any penalty): ∂C_x/∂w would leave out a penalty's λw (issue 16)
    assert bp[("BP3", r"\frac{\partial C}{\partial b^{2}}")] == r"\delta^{2}"
    assert bp[("BP4", r"\frac{\partial C}{\partial w^{2}}")] == r"\delta^{2} x^{\top}"
    # the column form is the row-major formula transposed, for one sample: checked with numbers
    g = d.graph
    rng = np.random.default_rng(1)
    env = {g.symbol(n): sp.ImmutableMatrix(rng.normal(size=tuple(1 if k == sb.BATCH else int(k)
                                                                  for k in g.symbol(n).shape)))
           for n in ("X", "W1", "b1", "Z1")}
    row = g.expr("Z1").xreplace({sb.BATCH: 1})
    col = columns(g.expr("Z1"))
    assert np.allclose(numeric(col.xreplace({k.xreplace({sb.BATCH: 1}): v for k, v in env.items()}), {}, 1),
                       numeric(row, {k.xreplace({sb.BATCH: 1}): v for k, v in env.items()}, 1).T)


# ---------------------------------------------------------------- seed 000
def test_seed000_zero_terms_and_batch_reduction():
    g, s = seed000_graph()
    d = sb.derive(g)
    ctx = context(d, steps="full", **QUICK)
    st = gradient_row(ctx, "w1")["steps"]
    # ∂L/∂w1 = ∂L/∂p ∂p/∂w1 + ⏟(∂L/∂y ∂y/∂w1)=0: y does not depend on w1
    terms = st["sympy"]["terms"].args
    [zero] = [t for t in terms if isinstance(t, Vanishes)]
    (Ly, yw), = [zero.args[0].args]
    assert Ly == Partial(s["C"], s["y"]) and yw == TotalPartial(s["y"], s["w1"])   # y through every path
    assert sp.diff(s["y"], s["w1"]) == 0                               # the oracle: it vanishes
    assert r"\underbrace{\frac{\partial C}{\partial y} \cdot \frac{\partial y}{\partial w_{1}}}_{=0}" in st["terms"]
    # ∂c/∂w1 = ∂/∂w1 (x1 w1 + x2 w2 + b): ∂w2x2/∂w1 = ∂b/∂w1 = 0, by the sum rule
    [cw1] = [f for f in st["factors"] if f["partial"] == r"\frac{\partial c}{\partial w_{1}}"]
    assert cw1["rule"] == "sum rule"
    zeros = cw1["sympy"]["zeros"]
    assert isinstance(zeros, Equal) and zeros.args[-1] == 0
    assert {z.args[0] for z in zeros.args[:-1]} == {s["b"], s["w2"] * s["x2"]}
    assert all(sp.diff(of, wrt) == 0 for of, wrt in (z.args for z in zeros.args[:-1]))
    assert cw1["zeros"] == r"\frac{\partial b}{\partial w_{1}} = \frac{\partial w_{2} x_{2}}{\partial w_{1}} = 0"
    assert cw1["sympy"]["lines"][-1] == s["x1"] == sp.diff(g.expr("c"), s["w1"])
    # 1/(2m) Σ 2(p − y) = 1/m Σ (p − y), line by line
    [red] = ctx["reduction_steps"]
    assert red["line"] == (r"\frac{1}{2 m} \sum_{i=1}^{m} 2 \left(p - y\right) = "
                           r"\frac{1}{m} \sum_{i=1}^{m} \left(p - y\right)")
    m, i = sb.BATCH, sb.engine.SAMPLE
    oracle = sp.diff(sp.Sum((s["p"] - s["y"]) ** 2, (i, 1, m)) / (2 * m), s["p"])
    for line in red["sympy"]["lines"]:
        assert sp.simplify(line.doit() - oracle.doit()) == 0


# ---------------------------------------------------------------- seed 001
def test_seed001_inner_derivative_step():
    g, s = seed001_graph()
    d = sb.derive(g)
    ctx = context(d, steps="full", **QUICK)
    st = gradient_row(ctx, "w3")["steps"]
    [ca3] = [f for f in st["factors"] if f["partial"] == r"\frac{\partial C}{\partial a_{3}}"]
    assert ca3["rule"] == "power rule"
    # ∂C/∂a3 = 2(a3 − y) · ∂(a3 − y)/∂a3 = 2(a3 − y) · 1
    assert ca3["line"].startswith(r"2 \left(a_{3} - y\right) \cdot \frac{\partial \left(a_{3} - y\right)}"
                                  r"{\partial a_{3}} = 2 \left(a_{3} - y\right) \cdot 1")
    symbolic, inner = ca3["sympy"]["lines"][:2]
    outer, partial = symbolic.args
    assert partial == Partial(s["a3"] - s["y"], s["a3"]) and sp.diff(*partial.args) == inner.args[1] == 1
    assert sp.expand(outer * inner.args[1] - sp.diff((s["a3"] - s["y"]) ** 2, s["a3"])) == 0


# ---------------------------------------------------------------- seed 003
def two_layer_graph():
    """Seed 003's picture: z1 = w1 x + b1 → a1 = σ(z1) → z2 = w2 a1 + b2 → a2 = σ(z2), C = (a2 − y)²."""
    g = sb.Graph()
    x = g.inputs("x")
    y = g.targets("y")
    w1, b1, w2, b2 = g.params("w1 b1 w2 b2")
    a1 = g.node("a1", sb.sigmoid(g.node("z1", w1 * x + b1)))
    a2 = g.node("a2", sb.sigmoid(g.node("z2", w2 * a1 + b2)))
    g.loss((a2 - y) ** 2, reduction="sum")
    return g


def test_seed003_two_cases_and_iterations_against_numpy(tmp_path):
    d = sb.derive(two_layer_graph())
    values = {"x": 1, "y": 0, "w1": 0.5, "b1": -0.2, "w2": 1.5, "b2": 0.1}
    ctx = context(d, steps="full", values=values, lr=0.5, steps_taken=3, **QUICK)
    cases = {r["node"]: r["case"] for r in ctx["deltas"] if r["case"]}
    assert cases["z2"] == cases["a2"] == "output layer"               # Case 1: from the loss
    assert cases["z1"] == cases["a1"] == "not output layer"           # Case 2: from the layer above
    tex = d.latex(steps="full", values=values, lr=0.5, steps_taken=3, **QUICK)
    assert r"\text{Case 1: output layer}" in tex and r"\text{Case 2: not output layer}" in tex
    # θ⁰ → θ¹ → θ² → θ³ with NumPy by hand
    th = np.array([values[p] for p in d.params], dtype=float)
    for row in ctx["iterations"]:
        w1, b1, w2, b2 = th
        z1 = w1 * 1 + b1; a1 = sig(z1); z2 = w2 * a1 + b2; a2 = sig(z2)
        d2 = 2 * (a2 - 0) * a2 * (1 - a2); d1 = d2 * w2 * a1 * (1 - a1)
        grad = {"w1": d1 * 1, "b1": d1, "w2": d2 * a1, "b2": d2}
        assert float(row["sympy"]["loss"]) == pytest.approx((a2 - 0) ** 2, rel=1e-12)
        assert [float(gv) for gv in row["sympy"]["grad"]] == pytest.approx([grad[p] for p in d.params], rel=1e-12)
        th = th - 0.5 * np.array([grad[p] for p in d.params])
        assert [float(t) for t in row["sympy"]["next"]] == pytest.approx(list(th), rel=1e-12)
    assert r"\theta^{3} = \theta^{2} - \eta \nabla L\left(\theta^{2}\right)" in tex


# ---------------------------------------------------------------- seed 002
def test_seed002_values_on_the_graph_and_the_yellow_path():
    g, _ = seed002_graph()
    d = sb.derive(g)
    values = {"x1": 1, "x2": 2, "y": 3, "w1": 0.5, "w2": -1, "b": 0}
    ctx = context(d, values=values, lr=0.1, param="w1", **QUICK)
    # by hand: ŷ = 0.5·1 − 1·2 + 0 = −1.5; the path's numbers 2(ŷ − y) = −9, 1, x1 = 1
    path = ctx["example"]["path"]
    assert [float(x) for x in path["sympy"]["numbers"].args[0].args] == [-9.0, 1.0, 1.0]
    assert float(path["sympy"]["value"]) == 2 * (-1.5 - 3) * 1
    assert path["numbers"] == r"\left(-9\right) \cdot 1 \cdot 1" and path["value"] == "-9"
    assert "label={[val]below:$-1.5$}" in ctx["figure"]          # ŷ's forward value on its node
    assert r"2 \left(\hat{y} - y\right) = -9" in ctx["figure"]    # the edge's local derivative there


# ---------------------------------------------------------------- nice forms
def test_logistic_regression_simplifies_to_p_minus_y_times_x():
    g = sb.Graph()
    x = g.inputs("x")
    y = g.targets("y")
    w, b = g.params("w b")
    p = g.node("p", sb.sigmoid(g.node("z", w * x + b)))
    g.loss(-(y * sp.log(p) + (1 - y) * sp.log(1 - p)))
    d = sb.derive(g)
    ctx = context(d, **QUICK)
    row = gradient_row(ctx, "w")
    assert sp.simplify(row["sympy"]["simplified"] - (p - y) * x) == 0
    assert row["simplified"] == r"\left(p - y\right) \cdot x"
    # the oracle: sympy.diff of the unrolled loss, at numbers
    zz = w * x + b
    unrolled = -(y * sp.log(1 / (1 + sp.exp(-zz))) + (1 - y) * sp.log(1 - 1 / (1 + sp.exp(-zz))))
    at = {"x": 0.7, "y": 1.0, "w": -0.3, "b": 0.2}
    pv = 1 / (1 + np.exp(-(at["w"] * at["x"] + at["b"])))
    assert num(row["sympy"]["simplified"], {**at, "p": pv}) == pytest.approx(num(sp.diff(unrolled, w), at), rel=1e-12)
    # the local derivative in named nodes: σ'(z) = p(1 − p)
    [pz] = [r for r in ctx["local"] if r["partial"] == r"\frac{\partial p}{\partial z}"]
    assert pz["named"] == r"p \left(1 - p\right)"


# ---------------------------------------------------------------- the noise
def test_identity_is_not_a_function_and_empty_sections_are_gone():
    d = sb.derive(seed004_1d_graph()[0])
    tex = d.latex(values={"x": 3, "w": 0.1, "y": 1}, lr=1)
    assert r"\operatorname{id}" not in tex and "id'" not in tex
    assert r"\hat{y} &= w x" in tex
    assert "Vanishing gradients" not in tex and "activation functions" not in tex.lower()
    big = sb.derive(sb.mlp([8, 16, 16, 2], "sigmoid", "softmax", "cross_entropy")).latex(verify=False)
    assert "skipped" not in big and "What the chain rule saves" not in big


def test_leaky_relu_alpha_is_shown_and_settable():
    for spec in (("leaky_relu", 0.1), "leaky_relu:0.1", sb.LeakyReLU(0.1)):
        d = sb.derive(sb.mlp([2, 3, 1], activation=spec, output="identity", loss="mse"))
        [act] = context(d, **QUICK)["activations"]
        assert act["params"] == r"\alpha = \frac{1}{10}"
        assert r"\alpha z" in act["definition"] and "z/100" not in act["definition"]
    m, rng = sb.compile(d), np.random.default_rng(0)
    params, X, Y = m.init(seed=0), rng.normal(size=(5, 2)), rng.normal(size=(5, 1))

    def loss(p):     # by hand: LReLU with α = 0.1, squared error, mean over samples
        z = X @ p["W1"] + p["b1"]
        return (((np.where(z < 0, 0.1 * z, z) @ p["W2"] + p["b2"]) - Y) ** 2).sum(axis=1).mean()
    up, down = {k: v.copy() for k, v in params.items()}, {k: v.copy() for k, v in params.items()}
    up["W1"][0, 1] += 1e-6
    down["W1"][0, 1] -= 1e-6
    assert m.grad(X, Y, params)["W1"][0, 1] == pytest.approx((loss(up) - loss(down)) / 2e-6, rel=1e-6)


def test_text_and_mermaid_are_readable():
    from symback.printing.text import text_report
    d = sb.derive(sb.mlp([2, 3, 1], "sigmoid", "identity", "mse"))
    out = text_report(d)
    assert "⊙" in out and "σ'(Z1)" in out and "Xᵀ" in out and "δ_Z1" in out
    assert not any(w in out for w in ("HadamardProduct", "FPrime", "Lambda", "<Derivation", ".T"))
    md = d.markdown(**QUICK)
    mer = md[md.index("```mermaid"):]
    mer = mer[:mer.index("```\n", 5)]
    assert "X.T" not in mer and "delta2" not in mer and "Xᵀ δ" in mer
    assert d._repr_markdown_().startswith("# ") and "```mermaid" not in d._repr_markdown_()


# ---------------------------------------------------------------- real pdflatex
CASES = {
    "seed000": (lambda: sb.derive(seed000_graph()[0]), {}),
    "seed001": (lambda: sb.derive(seed001_graph()[0]), {}),
    "seed002": (lambda: sb.derive(seed002_graph()[0]),
                {"values": {"x1": 1, "x2": 2, "y": 3, "w1": 0.5, "w2": -1, "b": 0}, "lr": 0.1, "steps_taken": 2}),
    "seed003": (lambda: sb.derive(two_layer_graph()), {}),
    "seed004": (lambda: sb.derive(seed004_1d_graph()[0]), {"values": {"x": 3, "w": 0.1, "y": 1}, "lr": 1,
                                                           "steps_taken": 2}),
    "mlp": (punchline_net, {}),
    "skip": (lambda: sb.derive(skip_graph()), {}),
}


# a normal run compiles each case in one notation, the two notations in turn; slow mode both
@pytest.mark.parametrize("case, notation", [
    (case, notation) if (i + j) % 2 == 0 else slow(case, notation)
    for i, case in enumerate(sorted(CASES)) for j, notation in enumerate(["lecture", "nielsen"])])
def test_new_options_compile_with_pdflatex(case, notation, tmp_path):
    build, opts = CASES[case]
    d = build()
    for template in ("article", "beamer"):
        tex = d.latex(template=template, notation=notation, steps="full", verify=False, cost=False, **opts)
        (tmp_path / "doc.tex").write_text(tex)
        done = subprocess.run([PDFLATEX, "-halt-on-error", "-interaction=nonstopmode", "-no-shell-escape", "doc.tex"],
                              cwd=tmp_path, capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, [ln for ln in done.stdout.splitlines() if ln.startswith("!")]
    assert d.markdown(notation=notation, steps="full", verify=False, cost=False, **opts).startswith("# ")


def test_the_punchline_says_what_its_products_are_over_a_batch():
    """Audit: the lecture punchline printed ∂J/∂W⁽³⁾ = a⁽³⁾ᵀ(ŷ − y) in a document defining J = 1/m Σ Cᵢ,
    m times the gradient.  The notes' ∂J/∂W holds for one sample (m = 1); the text says the product over
    m rows is Σᵢ ∂Cᵢ/∂W and J's gradient 1/m of it (oracle: NumPy by hand); with a penalty, J ≠ C even
    for one sample, so the line is about C."""
    d = punchline_net()
    ctx = context(d, notation="lecture", **QUICK)
    intro = str(ctx["punchline_intro"])
    assert "$m = 1$, where $J$ is the sample's cost $C$" in intro
    assert r"$\partial J/\partial W$ is $\frac{1}{m}$ times that sum" in intro
    m = sb.compile(d)
    p = m.init(seed=0)
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(5, 3)), rng.normal(size=(5, 1))
    a3 = sig(sig(X @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"])
    yhat = a3 @ p["W3"] + p["b3"]
    np.testing.assert_allclose(m.grad(X, Y, p)["W3"], a3.T @ (yhat - Y) / 5, rtol=1e-12)     # 1/m times
    pen = context(sb.derive(sb.mlp([3, 4, 1], loss="half_mse", l2=0.1)), notation="lecture", **QUICK)
    assert all(r["lhs"].startswith(r"\frac{\partial C}") for r in pen["punchline"])
    assert "plus the penalty's derivative" in str(pen["punchline_intro"])


def test_seed000_batch_gradients_end_each_parameter_as_the_notes_do():
    """Seed 000 ends with ∂L/∂w₁ = 1/m Σᵢ (p − y)·(1 if c ≥ 0, 0)·x₁ (and w₂, b); the document showed
    only the per-sample ∂C/∂w₁.  Oracle: the seed's own formula in NumPy, against the line's SymPy
    expression evaluated sample by sample, a sample at c = 0 included."""
    d = sb.derive(seed000_graph()[0])
    ctx = context(d, **QUICK)
    rows = {r["sympy"]["lhs"].args[1].name: r for r in ctx["gradients"]}
    assert rows["w1"]["batch"] == (r"\frac{\partial L}{\partial w_{1}} = \frac{1}{m} \sum_{i=1}^{m} x_{1} "
                                   r"\left(p - y\right) \operatorname{ReLU}'\left(c\right)")
    X = np.array([[1.0, 2.0], [-1.0, 0.5], [2.0, -2.0]])      # c = 0 at the last sample (w = 1, 1, b = 0)
    y = np.array([0.5, -1.0, 1.0])
    w = {"w1": 1.0, "w2": 1.0, "b": 0.0}
    for p in ("w1", "w2", "b"):
        line = rows[p]["sympy"]["claims"][0]["chain"][1]
        body = line.args[1].function if isinstance(line.args[1], sp.Sum) else line.args[0].function
        f = sp.lambdify(sorted(body.free_symbols, key=str), body.rewrite(sp.Piecewise), "math")
        terms = []
        for (x1, x2), yi in zip(X, y):
            c = x1 * w["w1"] + x2 * w["w2"] + w["b"]
            env = {"x1": x1, "x2": x2, "y": yi, "c": c, "p": max(c, 0.0)}
            terms.append(f(*[env[s.name] for s in sorted(body.free_symbols, key=str)]))
        relu_prime = [1.0 if x1 * w["w1"] + x2 * w["w2"] + w["b"] >= 0 else 0.0 for x1, x2 in X]
        by_hand = np.mean([(max(x1 + x2, 0) - yi) * r * {"w1": x1, "w2": x2, "b": 1.0}[p]
                           for (x1, x2), yi, r in zip(X, y, relu_prime)])
        assert np.mean(terms) == pytest.approx(by_hand, rel=1e-12)
