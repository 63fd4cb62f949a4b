"""Derivation documents: the printer, the templates, the files, and real pdflatex runs.

Oracles: the seeds' own formulas and numbers (chain order, 0.49 / −4.2 / 4.3,
σ' ≤ 1/4), a NumPy grid for suprema, pdflatex with -halt-on-error for every
template, and pdftotext for what a reader actually sees.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

import symback as sb
from symback.document import context, derivative_sup
from symback.errors import DefinitionError, OutputError, SymbackError
from symback.printing import chain_symbols, chain_values, latex, name_latex, number
from symback.render import compile_pdf, latex_escape, markdown_escape, render, template_names

from conftest import (seed000_graph, seed001_graph, seed002_graph, seed003_case2_graph, seed004_1d_graph,
                      seed004_graph, chain_graph, skip_graph, slow_mode)

PDFLATEX = shutil.which("pdflatex")
SEED004_VALUES = {"x": 3, "w": 0.1, "y": 1}


def _mish():
    z = sp.Symbol("z")
    return sb.activation("mish_doc", z * sp.tanh(sp.log(1 + sp.exp(z))), var=z)


def _custom_graph():
    mish = _mish()
    g = sb.Graph()
    x = g.inputs("x")
    y = g.targets("y")
    w, b = g.params("w b")
    h = g.node("h", mish(w * x + b))
    g.loss((h - y) ** 2)
    return g


def _plain_expression():
    x, w, b, t = sp.symbols("x w b t")
    return sb.derive((sp.tanh(w * x + b) - t) ** 2 + w ** 2 / 10, wrt=[w, b])


def _punchline_net():
    """Seed 004's punchline network in matrix form: three sigmoid/identity layers, ½‖ŷ − y‖²."""
    return sb.mlp([2, 3, 3, 1], activation="sigmoid", output="identity", loss="half_mse")


NETWORKS = {
    "seed000": lambda: sb.derive(seed000_graph()[0]),
    "seed001": lambda: sb.derive(seed001_graph()[0]),
    "seed002": lambda: sb.derive(seed002_graph()[0]),
    "seed003": lambda: sb.derive(seed003_case2_graph()[0]),
    "seed004_scalar": lambda: sb.derive(seed004_graph()[0]),
    "seed004_numbers": lambda: sb.derive(seed004_1d_graph()[0]),
    "plain_expression": _plain_expression,
    "custom_activation": lambda: sb.derive(_custom_graph()),
    "mlp_sigmoid_mse": lambda: sb.derive(sb.mlp([2, 3, 3, 1], "sigmoid", "identity", "mse")),
    "mlp_relu_softmax_ce": lambda: sb.derive(sb.mlp([3, 4, 3], "relu", "softmax", "cross_entropy")),
    "mlp_sigmoid_bce": lambda: sb.derive(sb.mlp([2, 3, 1], "sigmoid", "sigmoid", "binary_cross_entropy")),
    "skip_penalty_softmax_ce": lambda: sb.derive(skip_graph()),
    "residual_l2": lambda: sb.derive(sb.Sequential(sb.Dense(3, "tanh"), sb.Residual(sb.Dense(3, "relu")),
                                                   sb.Dense(1, "sigmoid"), inputs=2,
                                                   loss="binary_cross_entropy", l2=0.1)),
    "tied": lambda: sb.derive(sb.Sequential(sb.Dense(2, "tanh"), sb.Dense(3, "identity", tie="W1"),
                                            inputs=3, loss="half_mse")),
    "rnn": lambda: sb.derive(sb.rnn(inputs=2, hidden=2, outputs=1, steps=3)),
}


def _pdflatex(tex: str, tmp_path: Path, name: str = "doc") -> Path:
    """Compile with the real pdflatex, -halt-on-error; fail the test with the TeX error."""
    assert PDFLATEX, "pdflatex is required (TeX Live from Debian, installed by .ci/run)"
    src = tmp_path / f"{name}.tex"
    src.write_text(tex, encoding="utf-8")
    done = subprocess.run([PDFLATEX, "-halt-on-error", "-interaction=nonstopmode", "-no-shell-escape",
                           src.name], cwd=tmp_path, capture_output=True, text=True, timeout=240)
    errors = [ln for ln in done.stdout.splitlines() if ln.startswith("!") or ln.startswith("l.")]
    assert done.returncode == 0, f"pdflatex failed on {name}: {errors or done.stdout[-2000:]}"
    return tmp_path / f"{name}.pdf"


def _pdftext(pdf: Path) -> str:
    exe = shutil.which("pdftotext")
    assert exe, "pdftotext (poppler-utils) is required"
    return subprocess.run([exe, "-layout", str(pdf), "-"], capture_output=True, text=True, check=True).stdout


SNIPPET_WRAPPER = r"""\documentclass{article}
\usepackage{amsmath,amssymb}
\begin{document}
\input{snippet}
\end{document}
"""


# ------------------------------------------------------------------ compile everything
#: pdflatex in slow mode only: scalar seeds and MLP heads like those a normal run compiles
#: (seed001's scalar graph, seed004's numbers, the softmax MLP); their text is checked in both
LIKE_OTHERS = {"seed000", "seed002", "seed003", "seed004_scalar", "mlp_sigmoid_mse", "mlp_sigmoid_bce"}


@pytest.mark.parametrize("network", sorted(NETWORKS))
def test_every_template_compiles_with_pdflatex(network, tmp_path):
    d = NETWORKS[network]()
    opts = {"values": SEED004_VALUES, "lr": 1} if network == "seed004_numbers" else {}
    article = d.latex(**opts)
    beamer = d.latex(template="beamer", **opts)
    snippet = d.latex(template="snippet")
    for text in (article, beamer, snippet):
        assert r"\VAR{" not in text and r"\BLOCK{" not in text
    md = d.markdown()
    assert md.startswith("# ") and "$$" in md and r"\BLOCK{" not in md
    # every parameter gets its chain in every output
    for p in d.params:
        assert name_latex(p) in article and name_latex(p) in md
    if network in LIKE_OTHERS and not slow_mode():
        pytest.skip("its text checked; pdflatex in slow mode only (SYMBACK_SLOW=1)")
    assert _pdflatex(article, tmp_path, "article").stat().st_size > 10_000
    assert _pdflatex(beamer, tmp_path, "beamer").stat().st_size > 10_000
    (tmp_path / "snippet.tex").write_text(snippet)
    assert _pdflatex(SNIPPET_WRAPPER, tmp_path, "main").stat().st_size > 1_000


# ------------------------------------------------------------------ the seeds' content
def test_seed004_worked_example_numbers(tmp_path):
    d = sb.derive(seed004_1d_graph()[0])
    tex = d.latex(values=SEED004_VALUES, lr=1)
    assert "= 0.49" in tex                       # L = (1 − 0.3)² = 0.49
    assert "= -4.2" in tex                       # ∂L/∂w = 2(−0.7)·3
    assert "= 4.3" in tex                        # w ← 0.1 − 1·(−4.2)
    assert "0.4900" not in tex and "4.20000" not in tex
    text = _pdftext(_pdflatex(tex, tmp_path))
    for n in ("0.49", "4.2", "4.3"):
        assert n in text
    md = d.markdown(values=SEED004_VALUES, lr=1)
    assert "= 0.49" in md and "= -4.2" in md and "= 4.3" in md


def test_seed004_punchline_in_chain_order():
    """∂J/∂W3 = (ŷ − y)·a, ∂J/∂W2 = (ŷ − y)·W3·σ'·a, ∂J/∂W1 = (ŷ − y)·W3·σ'·W2·σ'·X (seed 004)."""
    d = sb.derive(_punchline_net())
    tex = d.latex()
    # issue 10: the default (matrix) notation shows each punchline as a valid matrix product in
    # chain order (the notes' shorthand moved to notation="lecture", tested in test_lecture.py)
    err = r"\left(\hat{Y} - Y\right)"
    d3 = rf"\left(\left({err} W_{{3}}^{{\top}}\right) \odot \sigma'\left(Z_{{2}}\right)\right)"
    w3 = r"A_{2}^{\top} " + err
    w2 = r"A_{1}^{\top} " + d3
    w1 = rf"X^{{\top}} \left(\left({d3} W_{{2}}^{{\top}}\right) \odot \sigma'\left(Z_{{1}}\right)\right)"
    punch = tex[tex.index(r"\section{The punchline}"):]
    punch = punch[:punch.index(r"\end{align*}")]
    lines = [ln for ln in punch.splitlines() if "&=" in ln]
    assert [ln.split("&=")[1].strip().rstrip("\\").strip() for ln in lines] == [w3, w2, w1]
    assert lines[0].startswith(r"\frac{\partial C}{\partial W_{3}}")
    assert lines[2].startswith(r"\frac{\partial C}{\partial W_{1}}")
    # the δ recursion and the matrix forms: ⊙ and ᵀ
    # (one engine: δ^{(2)} goes through δ_{A_2}, shown inlined; a matrix graph's gradients are ∂L/∂W)
    [row] = [ln for ln in tex.splitlines() if ln.startswith(r"\delta^{(2)} &= ")]
    # (an identity output layer has no Z_3 of its own: its δ is δ_Ŷ)
    assert row.endswith(r"= \left(\delta_{\hat{Y}} W_{3}^{\top}\right) \odot \sigma'\left(Z_{2}\right) \\")
    assert r"\delta_{W_{1}} &= \delta^{(1)} \cdot \frac{\partial Z_{1}}{\partial W_{1}} = X^{\top} \delta^{(1)}" in tex
    assert r"\frac{\partial L}{\partial W_{1}} &= " in tex and r"&= X^{\top} \delta^{(1)}" in tex
    # compact derivative as in the notes
    assert r"\sigma'\left(z\right) = \sigma\left(z\right) \left(1 - \sigma\left(z\right)\right)" in tex


def test_seed002_chain_as_in_the_notes():
    d = sb.derive(seed002_graph()[0])
    [path] = d.chain("w1")
    assert chain_symbols(path) == (r"\frac{\partial C}{\partial \hat{y}} \cdot \frac{\partial \hat{y}}"
                                   r"{\partial a_{1}} \cdot \frac{\partial a_{1}}{\partial w_{1}}")
    assert chain_values(path) == r"2 \left(\hat{y} - y\right) \cdot 1 \cdot x_{1}"
    tex = d.latex()
    assert chain_symbols(path) + r" \\" in tex and "&= " + chain_values(path) + r" \\" in tex
    # b's path is shorter: ∂C/∂ŷ · ∂ŷ/∂b = 2(ŷ − y) · 1
    assert chain_values(d.chain("b")[0]) == r"2 \left(\hat{y} - y\right) \cdot 1"


def test_seed000_relu_convention_and_batch_reduction():
    d = sb.derive(seed000_graph()[0])
    tex = d.latex()
    assert r"\operatorname{ReLU}'\left(c\right)" in tex          # the factor ∂p/∂c, named
    assert r"\operatorname{ReLU}'\left(0\right) = 1" in tex       # 1 for c ≥ 0, as in seed 000
    assert "right-hand value" in tex
    assert r"L = \frac{1}{m} \sum_{i=1}^{m} C^{(i)}" in tex


def test_seed003_two_paths_summed():
    d = sb.derive(seed003_case2_graph()[0])
    ctx = context(d)
    [g] = ctx["gradients"]
    assert len(g["paths"]) == 2                # seed 003 case 2: via x and via y, summed
    assert [p["symbols"].split(r" \cdot ")[1:] for p in g["paths"]] == [
        [r"\frac{\partial z}{\partial x}", r"\frac{\partial x}{\partial s}"],
        [r"\frac{\partial z}{\partial y}", r"\frac{\partial y}{\partial s}"]]
    assert r"&\quad + " + g["paths"][1]["symbols"] in sb.derive(seed003_case2_graph()[0]).latex()
    assert ctx["loss"]["reduction"] == "sum" and r"\frac{1}{m}" not in ctx["loss"]["batch"]


# ------------------------------------------------------------------ printer
def test_printer_names_and_notation():
    assert name_latex("a_1") == "a_{1}"
    assert name_latex("yhat") == r"\hat{y}"
    assert name_latex("W1") == "W_{1}"
    z, x = sp.symbols("z x")
    s = sb.sigmoid(z)
    assert latex(s * (1 - s)) == r"\sigma'\left(z\right)"
    assert latex(3 * x * s * (1 - s)) == r"3 x \sigma'\left(z\right)"
    assert latex(1 - sb.tanh(z) ** 2) == r"\tanh'\left(z\right)"
    assert latex(sb.relu.derivative(z), applications=[sb.relu(z)]) == r"\operatorname{ReLU}'\left(z\right)"
    assert latex(s * (1 - s), primes=False) == r"\left(1 - \sigma\left(z\right)\right) \sigma\left(z\right)"
    A, B = sp.MatrixSymbol("A", 2, 2), sp.MatrixSymbol("B", 2, 2)
    assert latex(sp.HadamardProduct(A, B.T)) == r"A \odot B^{\top}"
    assert latex(sp.Transpose(A * B)) == r"\left(A B\right)^{\top}"


@pytest.mark.parametrize("value,text", [
    (sp.Rational(49, 100), "0.49"), (-4.2, "-4.2"), (sp.Float("4.30000000000000"), "4.3"),
    (0.1 + 0.2, "0.3"), (3, "3"), (sp.Integer(-7), "-7"), (1.5e-12, r"1.5 \times 10^{-12}"),
    (2.5e9, r"2.5 \times 10^{9}"), (0.0, "0")])
def test_numbers_are_short(value, text):
    assert number(value) == text


def test_substituted_formula_brackets_negative_numbers():
    y, yh, x = sp.symbols("y yhat x")
    assert latex(2 * (yh - y) * x, values={"yhat": 0.3, "y": 1, "x": -3}) == \
        r"2 \cdot \left(-3\right) \cdot \left(0.3 - 1\right)"


# ------------------------------------------------------------------ extras
@pytest.mark.parametrize("name,exact", [("sigmoid", sp.Rational(1, 4)), ("tanh", 1), ("relu", 1),
                                        ("identity", 1), ("softplus", 1), ("leaky_relu", 1)])
def test_derivative_sup_exact(name, exact):
    sup, is_exact = derivative_sup(sb.get_activation(name))
    assert is_exact and sup == exact


def test_derivative_sup_numeric_matches_grid():
    sup, is_exact = derivative_sup(sb.get_activation("swish"))
    zs = np.linspace(-30, 30, 600_001)
    s = 1 / (1 + np.exp(-zs))
    grid = np.abs(s + zs * s * (1 - s)).max()          # d/dz z σ(z), written here
    assert not is_exact and abs(float(sup) - grid) < 1e-8


def test_vanishing_bound_sigmoid_chain():
    d = sb.derive(seed004_graph()[0])
    ctx = context(d)
    v = ctx["vanishing"]
    assert v["factors"] == 2 and v["shrinking"] == ["sigmoid"]
    assert v["bound"].count(r"\frac{1}{4}") == 2
    layers = context(sb.derive(_punchline_net()))["vanishing"]
    assert r"\frac{1}{16}" in layers["bound"] and layers["factors"] == 2


def test_verification_table_agrees_with_finite_differences():
    d = sb.derive(seed001_graph()[0])
    rows = context(d, seed=3)["verify"]["rows"]
    assert len(rows) == 3 and all(r["err"] < 1e-20 for r in rows)
    rows = context(sb.derive(_punchline_net()), cost=False)["verify"]["rows"]
    assert len(rows) == 6 and all(r["err"] < 1e-6 for r in rows)


def test_verification_of_a_wide_network_samples_entries_and_agrees():
    """Above 2,000 entries the formulas run as their NumPy code and 12 entries per parameter are
    differenced (SymPy's explicit 784×128 matrices took minutes: `symback derive --layers 784,...`)."""
    from symback.document import analysis
    d = sb.derive(sb.mlp([60, 40, 10], activation="sigmoid", output="softmax", loss="cross_entropy"))
    v = analysis.verify(d, None, 0)
    assert v["sampled"] == analysis.VERIFY_SAMPLES and len(v["rows"]) == 4
    assert all(r["err"] < 1e-6 for r in v["rows"]), [r["err"] for r in v["rows"]]
    small = analysis.verify(sb.derive(_punchline_net()), None, 0)
    assert small["sampled"] is None


def test_rnn_document_sums_over_time_steps_and_verifies():
    """The δ recursion's row for Wh is Σ_t h_{t−1}ᵀ δ_{z_t} (h_0 = 0), and the document's
    verification, through the input slices x_t = X[:, ...], agrees with finite differences."""
    from symback.matrix import BATCH
    from symback.vjp import AdjointMatrix
    d = sb.derive(sb.rnn(inputs=2, hidden=3, outputs=1, steps=4))
    ctx = context(d, cost=False, vanishing=False, figure=False)
    rows = {r["sympy"]["lhs"].name: r["sympy"]["value"] for r in ctx["deltas"]}
    s = d.graph.symbol
    assert rows["delta_Wh"] == sp.MatAdd(*[s(f"h{t - 1}").T * AdjointMatrix(f"delta_z{t}", BATCH, 3)
                                          for t in range(2, 5)])
    assert all(r["err"] < 1e-6 for r in ctx["verify"]["rows"]) and len(ctx["verify"]["rows"]) == 5
    # the punchline prints one line per path (the sum over time steps fits the page)
    wh = next(r for r in ctx["punchline"] if r["sympy"]["lhs"].args[1] == s("Wh"))
    assert len(wh["terms"]) == len(d.chain("Wh")) == 3
    # and so does the vanishing-gradient bound: one line per path to Wx, each a product of norms
    v = context(d, cost=False, verify=False, figure=False)["vanishing"]
    assert v["param"] == "W_{x}" and len(v["bound_lines"]) == len(d.chain("Wx")) == 4
    assert len(v["sympy"]["bound"].args[1].args) == 4


def test_cost_section_shows_expression_swell():
    d = sb.derive(chain_graph(5, sb.sigmoid))
    cost = context(d)["cost"]
    naive_oracle = sum(sp.count_ops(sp.diff(d.graph.unrolled()[d.loss_name], d.graph.symbol(p)))
                       for p in d.params) + sp.count_ops(d.graph.unrolled()[d.loss_name])
    assert cost["naive"] == naive_oracle
    assert cost["naive"] > 5 * cost["cse"] and cost["saves"]


def test_figure_highlights_the_chosen_path():
    d = sb.derive(seed002_graph()[0])
    fig = context(d, param="w2")["figure"]
    highlighted = [ln for ln in fig.splitlines() if ln.startswith(r"\draw[hledge]")]
    assert len(highlighted) == 3            # w2 -> a_2 -> ŷ -> C
    assert any("$x_{2}$" in ln for ln in highlighted)
    assert r"{$w_{2}$}" in fig and "param,hl" in fig


# ------------------------------------------------------------------ escaping
EVIL = r"50% #1 a_b & c \input{/etc/passwd} \write18{touch pwned} {x} ~^ $\alpha$ σ"


def test_user_text_cannot_run_tex(tmp_path):
    d = sb.derive(seed002_graph()[0])
    tex = d.latex(title=EVIL, author="A & B")
    assert r"\input{/etc" not in tex and r"\write18{" not in tex
    pdf = _pdflatex(tex, tmp_path)
    assert not (tmp_path / "pwned").exists()
    text = _pdftext(pdf)
    assert "50% #1 a_b & c" in text and "input{/etc/passwd}" in text and "write18" in text
    assert "root:" not in text


def test_escape_functions():
    assert latex_escape("a_b%c") == r"a\_b\%c"
    assert latex_escape("\\input") == r"\textbackslash{}input"
    assert latex_escape("α") == r"$\alpha$"
    assert "\n" not in latex_escape("two\n\nparagraphs")
    md = markdown_escape("<script>*x*</script> $y$")
    assert "<script>" not in md and r"\*x\*" in md and r"\$y\$" in md
    # no \( or \[ (MathJax's math delimiters); brackets as entities, so no link can form
    assert markdown_escape("(seed 0) [a](b)") == "(seed 0) &#91;a&#93;(b)"
    assert markdown_escape("it's") == "it&#x27;s"          # an entity is not escaped again


def test_names_with_tex_specials_are_refused():
    g = sb.Graph()
    for bad in ["a%", "a#1", r"a\input", "a{b}", "a&b", "a_{1}"]:
        with pytest.raises(DefinitionError):
            g.inputs(bad)
    with pytest.raises(SymbackError):
        sb.derive(sp.Symbol("x") * sp.Symbol("w"), wrt=[sp.Symbol("w%")])


def test_markdown_title_escaped():
    md = sb.derive(seed002_graph()[0]).markdown(title="<img src=x onerror=alert(1)> *bold*")
    assert "<img" not in md and r"\*bold\*" in md


# ------------------------------------------------------------------ templates and files
def test_builtin_templates_found():
    assert {"article", "beamer", "snippet", "markdown"} <= set(template_names())


def test_user_template_file_and_folder(tmp_path):
    d = sb.derive(seed002_graph()[0])
    (tmp_path / "mine.tex.j2").write_text(
        "%# a user's template\n\\VAR{title}: \\BLOCK{for g in gradients}$\\VAR{g.closed}$ \\BLOCK{endfor}\n")
    out = render(d, template=str(tmp_path / "mine.tex.j2"), title="T_1 & co")
    assert out.startswith(r"T\_1 \& co: $2 x_{1} \left(\hat{y} - y\right)$")
    out2 = d.latex(template="mine", template_dir=tmp_path, title="x")
    assert out2.startswith("x: $")
    # a user template may include the built-in pieces
    (tmp_path / "wrap.tex.j2").write_text("\\BLOCK{include \"snippet.tex.j2\"}")
    assert r"\begin{align*}" in d.latex(template="wrap", template_dir=tmp_path)


def test_template_errors_are_clear(tmp_path):
    d = sb.derive(seed002_graph()[0])
    with pytest.raises(OutputError, match="no latex template 'nosuch'"):
        d.latex(template="nosuch")
    with pytest.raises(OutputError, match="not found"):
        d.latex(template=str(tmp_path / "missing.tex.j2"))
    with pytest.raises(OutputError, match="not found; built-in ones"):
        d.latex(template="missing.tex.j2")
    # a built-in template by its file name is the template by its name
    assert d.latex(template="snippet.tex.j2") == d.latex(template="snippet")
    with pytest.raises(OutputError, match="unknown option"):
        d.latex(colour="red")
    with pytest.raises(SymbackError, match="unknown parameter"):
        d.latex(param="nope")
    (tmp_path / "bad.tex.j2").write_text("\\BLOCK{for x in}")
    with pytest.raises(OutputError, match="bad.tex.j2"):
        d.latex(template=str(tmp_path / "bad.tex.j2"))
    with pytest.raises(SymbackError, match="values missing"):
        sb.derive(seed004_1d_graph()[0]).latex(values={"x": 1})
    # NaN, inf and complex numbers reached mpmath (its TypeError); now refused by name
    good = {"x1": 1, "x2": 2, "y": 1, "w1": 0.1, "w2": 0.2, "b": 0}
    for name, bad in (("x1", float("nan")), ("w2", float("inf")), ("b", 1 + 2j)):
        with pytest.raises(SymbackError, match=f"value for '{name}' must be a finite real number"):
            d.markdown(values={**good, name: bad})
    with pytest.raises(SymbackError, match="value for 'lr' must be a finite real number"):
        d.markdown(values=good, lr=float("nan"))


def test_write_tex_md_pdf(tmp_path):
    d = sb.derive(seed004_1d_graph()[0])
    tex = d.write(tmp_path / "out" / "d.tex", values=SEED004_VALUES, lr=1)
    assert tex.read_text().startswith("\\documentclass[11pt]{article}")
    md = d.write(tmp_path / "d.md")
    assert md.read_text().startswith("# Backpropagation")
    pdf = d.write(tmp_path / "d.pdf", values=SEED004_VALUES, lr=1)
    assert pdf.read_bytes()[:5] == b"%PDF-"
    assert "0.49" in _pdftext(pdf)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.md", "d.pdf", "out"]   # no temp files left
    with pytest.raises(OutputError, match=r"\.tex, \.md or \.pdf"):
        d.write(tmp_path / "d.docx")


def test_failed_pdf_leaves_no_file(tmp_path):
    d = sb.derive(seed002_graph()[0])
    (tmp_path / "broken.tex.j2").write_text("\\documentclass{article}\\begin{document}\\undefinedmacro\\end{document}")
    target = tmp_path / "d.pdf"
    target.write_bytes(b"old")
    with pytest.raises(OutputError, match="Undefined control sequence"):
        d.write(target, template=str(tmp_path / "broken.tex.j2"))
    assert target.read_bytes() == b"old"                          # untouched: whole or not at all
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.tex.j2", "d.pdf"]


def test_pdf_without_tex_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(OutputError, match="pdflatex"):
        compile_pdf("\\documentclass{article}\\begin{document}x\\end{document}")


def test_shell_escape_is_off(tmp_path):
    tex = ("\\documentclass{article}\\begin{document}\\immediate\\write18{touch " + str(tmp_path / "pwned")
           + "}ok\\end{document}")
    pdf = compile_pdf(tex)
    assert pdf[:5] == b"%PDF-" and not (tmp_path / "pwned").exists()


def test_notebook_reprs():
    d = sb.derive(seed002_graph()[0])
    rl = d._repr_latex_()
    assert rl.strip().startswith("$$\\begin{aligned}") and rl.strip().endswith("\\end{aligned}$$")
    assert r"\begin{align*}" not in rl
    assert d._repr_markdown_().startswith("# ")


def test_wheel_contains_templates(tmp_path):
    """The built-in templates ship in the wheel as package data of symback.templates."""
    root = Path(__file__).resolve().parent.parent
    src = tmp_path / "src"          # a copy, so the build leaves nothing in the checkout
    for part in ("symback", "templates"):
        shutil.copytree(root / part, src / part, ignore=shutil.ignore_patterns("__pycache__"))
    for part in ("pyproject.toml", "README.md"):
        if (root / part).exists():
            shutil.copy(root / part, src / part)
    done = subprocess.run(["python3", "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
                           "-q", "-w", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    import zipfile
    [wheel] = list(tmp_path.glob("symback-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for t in ("article.tex.j2", "beamer.tex.j2", "snippet.tex.j2", "markdown.md.j2", "_preamble.tex.j2"):
        assert f"symback/templates/{t}" in names


def test_layer_worked_example_against_hand_numpy(tmp_path):
    d = sb.derive(sb.mlp([2, 2, 1], "sigmoid", "identity", "mse"))
    v = {"X": [[1.0, 2.0]], "Y": [[1.0]], "W1": [[0.1, 0.2], [0.3, 0.4]], "b1": [[0.0, 0.1]],
         "W2": [[0.5], [-0.5]], "b2": [[0.2]]}
    tex = d.latex(values=v, lr=0.5)
    # the same step by hand
    X, Y, W1, b1, W2, b2 = (np.array(v[k]) for k in ("X", "Y", "W1", "b1", "W2", "b2"))
    a1 = 1 / (1 + np.exp(-(X @ W1 + b1)))
    yhat = a1 @ W2 + b2
    err = 2 * (yhat - Y)
    dW2 = a1.T @ err
    dW1 = X.T @ ((err @ W2.T) * a1 * (1 - a1))
    assert f"L = {float(((yhat - Y) ** 2).sum()):.6g}" in tex
    for value in list((W2 - 0.5 * dW2).ravel()) + list((W1 - 0.5 * dW1).ravel()):
        assert f"{value:.6g}" in tex
    _pdflatex(tex, tmp_path)


def test_random_user_text_always_compiles(tmp_path):
    """200 random strings over TeX's specials, control characters and non-Latin letters, typeset verbatim."""
    import random
    rng = random.Random(7)
    pool = list("\\{}%#&$_^~<>|\"'` \t\n abcXYZ019.,;:!?-") + ["α", "Ω", "é", "ß", "€", "😀", "\x00", "\x07", "中"]
    texts = ["".join(rng.choice(pool) for _ in range(rng.randint(1, 40))) for _ in range(200)]
    body = "\n\n".join(f"{i}: " + latex_escape(t) for i, t in enumerate(texts))
    assert not re.search(r"(?<!\\)[%#&_^~]", body.replace(r"\textasciicircum{}", "").replace(
        r"\textasciitilde{}", ""))
    tex = "\\documentclass{article}\\usepackage[T1]{fontenc}\\begin{document}\n" + body + "\n\\end{document}\n"
    text = _pdftext(_pdflatex(tex, tmp_path))
    assert "199: " in text
    # and through a document title, where a stray brace or paragraph would break \title
    d = sb.derive(seed004_1d_graph()[0])
    _pdflatex(d.latex(title=" ".join(texts[:20]), verify=False, cost=False), tmp_path, "titled")
