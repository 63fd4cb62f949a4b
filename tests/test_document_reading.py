"""The layer families' documents read as a student reads them (LSTM, GRU, CNN, batch norm,
attention, transformer): every symbol defined where it is first met, names that read as one
symbol, help text that says what an option does, and a clear answer where a document
cannot be written (too deep a graph, a snippet as a PDF).

Oracles: the text checked for each defect; torch's layer norm and NumPy column slices for
what the forward pass's sentences claim; the chain's factor count from its structure.
"""
from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
import sympy as sp

import symback as sb
from symback.errors import OutputError

QUICK = {"figure": False, "verify": False, "vanishing": False, "cost": False}


def forward_section(md: str) -> str:
    """A Markdown document's first section, the forward pass (with the sentences under it)."""
    return md.split("## The network and its forward pass", 1)[1].split("\n## ", 1)[0]


def tanh_chain(n: int) -> sb.Graph:
    """x → z_l = w_l a_{l−1}, a_l = tanh(z_l), l = 1..n → (a_n − y)²: 3n + 3 nodes."""
    g = sb.Graph()
    a, y = g.inputs("x"), g.targets("y")
    for layer in range(1, n + 1):
        w = g.params(f"w{layer}")
        a = g.node(f"a{layer}", sb.tanh(g.node(f"z{layer}", w * a)))
    g.loss((a - y) ** 2)
    return g


# ------------------------------------------------------------------ a document too deep
def test_a_deep_chain_document_is_refused_at_once_naming_its_size(monkeypatch):
    """45 tanh layers: w_l's chain is ∂L/∂C, ∂C/∂a_n, two factors a layer down to l + 1, then
    ∂a_l/∂z_l, ∂z_l/∂w_l: 2(n − l) + 3 factors, n(n + 2) = 2,115 in all, over the limit.
    The document is refused before any line is derived or checked (it ran for minutes)."""
    import symback.render as render

    def never(*args, **kwargs):
        raise AssertionError("the document was worked on before it was refused")
    monkeypatch.setattr(render, "certify", never)
    n = 45
    d = sb.derive(tanh_chain(n))
    with pytest.raises(OutputError) as err:
        d.markdown()
    text = str(err.value)
    assert f"{n * (n + 2):,} chain-rule factors" in text and f"{n} parameters" in text
    assert f"longest chain: {2 * (n - 1) + 3}" in text
    assert "fewer layers" in text and "d.gradient(p)" in text
    with pytest.raises(OutputError):
        d.latex()


def test_a_chain_under_the_limit_is_not_refused():
    """40 layers: 40 · 42 = 1,680 factors, under the limit: the size check lets it through."""
    from symback.document.size import MAX_DOCUMENT_FACTORS, check_size, document_factors
    d = sb.derive(tanh_chain(40))
    assert document_factors(d) == 40 * 42 <= MAX_DOCUMENT_FACTORS
    check_size(d)


def test_the_command_line_refuses_a_deep_spec_in_one_line(tmp_path):
    """The same refusal from `symback derive SPEC -o out.md`: one line, exit status non-zero."""
    n = 45
    nodes = "\n".join(f'z{k} = "w{k}*{"x" if k == 1 else f"a{k - 1}"}"\na{k} = "tanh(z{k})"'
                      for k in range(1, n + 1))
    spec = (f'inputs = ["x"]\ntargets = ["y"]\nparams = [{", ".join(f"{chr(34)}w{k}{chr(34)}" for k in range(1, n + 1))}]\n'
            f'[nodes]\n{nodes}\n[loss]\ncost = "(a{n} - y)**2"\n')
    (tmp_path / "deep.toml").write_text(spec)
    r = subprocess.run([sys.executable, "-m", "symback", "derive", "deep.toml", "-o", "deep.md"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and f"{n * (n + 2):,} chain-rule factors" in r.stderr
    assert not (tmp_path / "deep.md").exists()


def test_the_text_report_of_a_deep_chain_is_refused_the_same_way(tmp_path, capsys, monkeypatch):
    """`symback derive --format text` of a 300-layer tanh chain ran for more than 300 s: the size
    limit covered documents only, and the text report writes the same chains (and simplifies
    each gradient).  It is now refused at once, in the library and on the command line."""
    import time
    from symback.cli import main
    from symback.engine import Derivation
    from symback.printing.text import text_report

    def never(*args, **kwargs):
        raise AssertionError("the report was worked on before it was refused")
    monkeypatch.setattr(Derivation, "simplified", never)
    monkeypatch.setattr(Derivation, "chain", never)
    n = 300
    d = sb.derive(tanh_chain(n))
    start = time.perf_counter()
    with pytest.raises(OutputError, match=f"{n * (n + 2):,} chain-rule factors"):
        text_report(d)
    assert time.perf_counter() - start < 10
    nodes = "\n".join(f'z{k} = "w{k}*{"x" if k == 1 else f"a{k - 1}"}"\na{k} = "tanh(z{k})"' for k in range(1, 46))
    (tmp_path / "deep.toml").write_text(f'inputs = ["x"]\ntargets = ["y"]\nparams = [{", ".join(f"{chr(34)}w{k}{chr(34)}" for k in range(1, 46))}]\n'
                                        f'[nodes]\n{nodes}\n[loss]\ncost = "(a45 - y)**2"\n')
    monkeypatch.chdir(tmp_path)
    assert main(["derive", "deep.toml", "--format", "text"]) != 0
    out = capsys.readouterr()
    assert out.out == "" and out.err.count("\n") == 1 and "2,115 chain-rule factors" in out.err


def test_an_lstm_document_indexes_its_samples_by_a_letter_its_gates_leave_free():
    """The LSTM's input gate is i_t (W_i, z_{i,t}: DESIGN's names), and the loss section summed
    L = (1/m) Σᵢ Cᵢ over samples i too: one letter, two meanings.  The gate keeps DESIGN's
    name and the samples take j there (every line still certified, the row line C_j = ℓ(Ŷ_{j,1},
    Y_{j,1}) evaluated at sample rows); graphs whose names leave i free keep i."""
    from symback.document.certificate import certify
    from symback.document.context import context
    d = sb.derive(sb.lstm(inputs=2, hidden=2, outputs=1, steps=2))
    md = d.markdown(**QUICK)
    assert r"L &= \frac{1}{m} \sum_{j=1}^{m} C_{j}" in md
    assert r"{C}_{j} &= \ell{\left({\hat{Y}}_{j,1},{Y}_{j,1} \right)}" in md
    assert r"\sum_{i=1}" not in md and not re.search(r"(C|Y\}+)_\{i", md)
    # the punchline's prose too: it summed the samples' gradients as Σ_i ∂C_i/∂W
    assert r"\sum_j \partial C_j/\partial W" in md and not re.search(r"(C|sum)_i\b", md)
    assert r"z_{i,1} &= x_{1} W_{i} + \mathbf{1} b_{i}" in md          # the gate keeps its name
    assert certify(d, context(d, **QUICK))["lines"] > 0
    for other in (sb.gru(inputs=2, hidden=2, outputs=1, steps=2), sb.mlp([2, 2, 1])):
        assert r"\sum_{i=1}^{m} C_{i}" in sb.derive(other).markdown(**QUICK)


def test_gelus_derivative_is_written_through_u_and_proved_equal(monkeypatch):
    """GELU′ printed as SymPy's expansion, (1/200000) z√2 … (26829z² + 200000): now the chain
    rule through u = √(2/π)(z + 0.044715 z³), with u and u′ defined beside it.  Oracles: torch
    autograd of F.gelu(approximate="tanh") at several z; the certificate catches a wrong form."""
    torch = pytest.importorskip("torch")
    from symback.document import activations as act
    from symback.document.certificate import CertificateError
    from symback.functions import gelu
    md = sb.derive(sb.mlp([2, 2, 1], activation="gelu")).markdown(**QUICK)
    line = next(t for t in md.splitlines() if t.startswith("- gelu"))
    shown = line.split(r"\operatorname{GELU}'\left(z\right) = ", 1)[1]
    assert shown.startswith(r"\frac{1}{2} \left(u' z \left(1 - \tanh^{2}{\left(u \right)}\right) + \tanh{\left(u \right)} + 1\right)$")
    assert "where $u = " in shown and r"u' = " in shown
    form, (u_def, du_def) = act._through_inner(type(gelu(sp.Symbol("t"))))
    z = sp.Symbol("z", real=True)
    f = sp.lambdify(z, form.xreplace({u_def.lhs: u_def.rhs, du_def.lhs: du_def.rhs}), "math")
    x = torch.tensor([-3.1, -0.8, 0.0, 0.45, 2.2], dtype=torch.float64, requires_grad=True)
    torch.nn.functional.gelu(x, approximate="tanh").sum().backward()
    assert np.allclose([f(float(v)) for v in x.detach()], x.grad.numpy(), rtol=1e-12, atol=1e-14)
    wrong = form.xreplace({du_def.lhs: 1})          # the inner derivative dropped
    monkeypatch.setattr(act, "_through_inner", lambda cls: (wrong, [u_def, du_def]) if cls.__name__ == "gelu" else None)
    with pytest.raises(CertificateError):
        sb.derive(sb.mlp([2, 2, 1], activation="gelu")).markdown(**QUICK)


def test_a_one_row_samples_cost_reads_as_one_sum_not_a_trace():
    """A CNN's sample is an image, its cost c a 1×1 matrix: the forward pass ended C = tr(c) and
    Nielsen's loss line read {c^⊤}_r = Σ_k ℓ((a³)^⊤_{r,k}, y^⊤_{r,k}) for its one row.  Now
    C = c and c = Σ_k ℓ(a³_k, y_k), as Nielsen writes one sample's cost; the certificate checks
    the line against the graph's costs.  A sequence's T rows keep C = Σ_r c_r."""
    from symback.document.certificate import certify
    from symback.document.context import context
    net = sb.Sequential(sb.Conv2d(2, 2), sb.Flatten(), sb.Dense(3, activation="softmax"),
                        inputs=(1, 3, 3), loss="cross_entropy")
    d = sb.derive(net)
    nielsen = d.markdown(notation="nielsen", **QUICK)
    assert "\nC &= c\n" in nielsen and r"\operatorname{tr}" not in nielsen
    assert r"c &= \sum_{k=1}^{3} \ell{\left({a^{3}}_{k},{y}_{k} \right)}" in nielsen
    assert certify(d, context(d, notation="nielsen", **QUICK))["lines"] > 0
    assert "\nC &= c\n" in d.markdown(**QUICK)
    seq = sb.derive(sb.Sequential(sb.Dense(2), inputs=(3, 2), loss="mse")).markdown(**QUICK)
    assert r"C &= \sum_{r=1}^{3} c_{r}" in seq


# ------------------------------------------------------------------ --steps full, matrix graphs
def test_steps_full_of_a_matrix_graph_labels_the_delta_cases_and_the_help_says_so():
    """A matrix graph's full document is the brief one with each δ line's case label, nothing
    more; the help text promised every step named by its rule, which holds for scalar graphs."""
    d = sb.derive(sb.mlp([2, 3, 1], activation="sigmoid"))
    brief, full = d.markdown(**QUICK), d.markdown(steps="full", **QUICK)
    assert full != brief and "Case 2: not output layer" in full
    assert re.sub(r" &&\\text\{Case [^}]*\}", "", full) == brief
    r = subprocess.run([sys.executable, "-m", "symback", "derive", "--help"], capture_output=True, text=True,
                       timeout=120, stdin=subprocess.DEVNULL)
    help_text = " ".join(r.stdout.split())
    assert "a matrix graph's (--layers, builder layers) delta recursion with each line labelled by its case" \
        in help_text


# ------------------------------------------------------------------ names that read as one symbol
@pytest.mark.parametrize("builder, lines", [
    (sb.lstm, [r"z_{i,1} &= x_{1} W_{i} + \mathbf{1} b_{i}", r"\mathrm{tc}_{1} &= \tanh\left(c_{1}\right)",
               r"h_{1} &= o_{1} \odot \mathrm{tc}_{1}", r"f_{2} &= \sigma\left(z_{f,2}\right)"]),
    (sb.gru, [r"z_{z,2} &= h_{1} U_{z} + x_{2} W_{z} + \mathbf{1} b_{z}", r"z_{2} &= \sigma\left(z_{z,2}\right)",
              r"\mathrm{zc}_{1} &= \mathbf{1}\mathbf{1}^{\top} - z_{1}", r"\mathrm{rh}_{2} &= r_{2} \odot h_{1}"]),
])
def test_recurrent_names_read_as_one_symbol(builder, lines):
    """tc_1 (the LSTM's tanh(c_1)) was printed as t·c_1, beside the cell state c_1; GRU's zz_2
    as z·z_2, so that z_2 = σ(z z_2) read as circular; zi_1 as z·i_1, with i_1 a gate."""
    md = sb.derive(builder(inputs=2, hidden=3, outputs=1, steps=3)).markdown(**QUICK)
    forward = forward_section(md)
    for line in lines:
        assert line in forward
    # no name of two italic letters anywhere (ab_{1} reads as a times b_1)
    assert not re.findall(r"(?<![\\A-Za-z{])[A-Za-z]{2}_\{", md)


def test_layer_names_of_several_letters_are_upright():
    """Avg, Flat (a CNN's pooled and flattened nodes), Att_1, Nt_2 print as one word each."""
    from symback.printing import latex
    for name, shown in (("Avg", r"\mathrm{Avg}"), ("Att1", r"\mathrm{Att}_{1}"), ("Nt2", r"\mathrm{Nt}_{2}"),
                        ("x", "x"), ("Yhat", r"\hat{Y}"), ("alpha1", r"\alpha_{1}"), ("Wq2", r"W_{q,2}")):
        assert latex(sp.Symbol(name)) == shown


# ------------------------------------------------------------------ the forward pass's symbols
def test_attention_forward_pass_defines_its_column_selections():
    """E_{1:2} appeared in the forward pass and was defined only (as E_h) in an appendix."""
    d = sb.derive(sb.Sequential(sb.Attention(heads=2, causal=True), sb.Dense(4), inputs=(3, 4), loss="mse"))
    forward = forward_section(d.markdown(**QUICK))
    assert "E_{1:2}" in forward and r"$E_{a:b}$ is the matrix whose columns are the unit vectors" in forward
    assert r"softmax}_{\mathrm{causal}}$ is the row-wise softmax" in forward
    # what the sentence says, checked: A E_{a:b} is A's columns a..b, B E_{a:b}ᵀ puts them back
    from symback.kinds.select import Select
    A = np.arange(12.0).reshape(3, 4)
    E = Select.of(4, 2, 2).numeric_value()           # columns 3 to 4, counted from 1
    assert np.array_equal(A @ E, A[:, 2:4])
    back = np.zeros((3, 4))
    back[:, 2:4] = A[:, :2]
    assert np.array_equal(A[:, :2] @ E.T, back)


@pytest.mark.parametrize("net", [
    lambda: sb.Sequential(sb.Dense(4, "tanh"), sb.LayerNorm(), sb.Dense(1), inputs=(3, 2), loss="mse"),
    lambda: sb.Sequential(sb.Dense(3, "tanh"), sb.BatchNorm(), sb.Dense(1), inputs=2, loss="mse"),
])
def test_norm_is_defined_where_the_forward_pass_uses_it(net):
    """norm(·) of layer and batch norm was used in the forward pass and defined nowhere there."""
    forward = forward_section(sb.derive(net()).markdown(**QUICK))
    assert r"\operatorname{norm}\left(" in forward
    assert r"$\operatorname{norm}(H)$ standardises each row of $H$: it subtracts the row's mean" in forward
    assert r"\varepsilon = \frac{1}{100000}" in forward


def test_the_norm_sentence_is_torch_layer_norm():
    """What the sentence says norm(H) is (row mean, biased variance, ε) is the engine's norm, and
    torch's layer_norm without scale and shift."""
    torch = pytest.importorskip("torch")
    from symback.kinds.rownorm import RowNorm
    rng = np.random.default_rng(3)
    H = rng.normal(size=(3, 4))
    Hs = sp.MatrixSymbol("H", 3, 4)
    ours = np.array(RowNorm(Hs).definition().subs(Hs, sp.ImmutableMatrix(H)).doit().evalf(), dtype=float)
    said = (H - H.mean(axis=1, keepdims=True)) / np.sqrt(H.var(axis=1, keepdims=True) + 1e-5)
    oracle = torch.nn.functional.layer_norm(torch.tensor(H), (4,), eps=1e-5).numpy()
    assert np.abs(ours - oracle).max() < 1e-12 and np.abs(said - oracle).max() < 1e-12


def test_beamer_shows_the_forward_pass_symbols():
    """The slides used softmax_causal, E_{1:2} and X_{:,a:b} without the sentences defining them."""
    d = sb.derive(sb.Sequential(sb.Attention(heads=2, causal=True), sb.Dense(4), inputs=(3, 4), loss="mse"))
    deck = d.latex(template="beamer", **QUICK)
    assert r"\begin{frame}{The forward pass's symbols}" in deck and "is the matrix whose columns" in deck


@pytest.mark.slow
def test_beamer_with_the_symbols_frame_compiles(tmp_path):
    """The deck with its new frame through the real pdflatex (slow mode, as the other compiles)."""
    import shutil
    if not shutil.which("pdflatex"):
        pytest.skip("no pdflatex")
    d = sb.derive(sb.Sequential(sb.Attention(heads=2, causal=True), sb.Dense(4), inputs=(3, 4), loss="mse"))
    d.write(tmp_path / "deck.pdf", template="beamer", **QUICK)
    assert (tmp_path / "deck.pdf").read_bytes().startswith(b"%PDF")


# ------------------------------------------------------------------ a snippet is not a PDF
def test_a_snippet_asked_for_as_a_pdf_is_refused_clearly(tmp_path):
    """`--template snippet -o x.pdf` failed in latexmk ("Environment align* undefined")."""
    d = sb.derive(sb.mlp([2, 2, 1]))
    with pytest.raises(OutputError, match=r"write it as \.tex"):
        d.write(tmp_path / "x.pdf", template="snippet", **QUICK)
    assert not (tmp_path / "x.pdf").exists()


# ------------------------------------------------------------------ the convolution's indices
def test_the_convolution_section_defines_every_index_before_its_formulas():
    """H', W', C_out and the kernel place (i, j) were used undefined; C (the cost) also named
    the input channels ("C = 1, 4×4, ...")."""
    net = sb.Sequential(sb.Conv2d(4, 3, stride=2, padding=1), sb.AvgPool2d(2), sb.Flatten(),
                        sb.Dense(2, "softmax"), inputs=(1, 8, 8), loss="cross_entropy")
    md = sb.derive(net).markdown(**QUICK)
    section = md.split("## The convolution's backward, index by index", 1)[1]
    prose = section.split("$$", 1)[0]
    for defined in ("$C_{in}$ input channels", "$C_{out}$ output channels", r"$H'\times W'$ output positions",
                    r"$(i, j)$ a place in the $k\times k$ kernel", "counted from 0",
                    r"$\operatorname{unfold}(A)$ has a column per output position"):
        assert defined in " ".join(prose.split())
    assert "C_{in}=1" in section and not re.search(r"\$C=\d", section)


# ------------------------------------------------------------------ Nielsen's and the lecture's names
def test_nielsen_names_one_delta_per_quantity_beside_a_softmax_output():
    """δ³ named both ∂C/∂z³ and ∂C/∂a³ (softmax output), and ∂a³/∂z³'s map read δ³ ↦ …δ³ while
    the δ section set δ³ = a³ − y, which is ∂C/∂z³: each name now means one thing."""
    d = sb.derive(sb.mlp([2, 3, 2], output="softmax", loss="cross_entropy"))
    md = d.markdown(notation="nielsen", **QUICK)
    said = re.findall(r"(\\delta\^\{\d\}) = \\frac\{\\partial C\}\{\\partial ([az])\^\{(\d)\}\}", md)
    assert sorted(said) == [(r"\delta^{2}", "z", "2"), (r"\delta^{3}", "z", "3")]
    softmax_map = next(line for line in md.splitlines() if line.startswith(r"\frac{\partial a^{3}}{\partial z^{3}}"))
    assert r"\delta_{a^{3}} \mapsto" in softmax_map and r"\delta^{3}" not in softmax_map
    assert r"&\text{BP1:} & \delta^{3} &= a^{3} - y" in md
    # an identity output has no z³ of its own: there ŷ = a³ keeps δ³, as BP1
    md = sb.derive(sb.mlp([2, 3, 1])).markdown(notation="nielsen", **QUICK)
    assert r"\delta^{3} = \frac{\partial C}{\partial a^{3}}" in md and r"&\text{BP1:} & \delta^{3} &=" in md


@pytest.mark.parametrize("notation, kernel, bias", [("nielsen", "k^{2}", "b^{2}"), ("lecture", "K^{(1)}", "b^{(1)}")])
def test_a_kernel_is_numbered_with_its_bias(notation, kernel, bias):
    """A CNN's kernel K1 stayed k_1 while its bias b1 became b² (Nielsen's layer 2)."""
    net = sb.Sequential(sb.Conv2d(2, 3, padding=1), sb.Flatten(), sb.Dense(2, "softmax"), inputs=(1, 4, 4),
                        loss="cross_entropy")
    md = sb.derive(net).markdown(notation=notation, **QUICK)
    params = md.split("parameters ", 1)[1].split("\n", 1)[0]
    assert params.startswith(f"${kernel} \\in") and f", {bias} \\in" in params
    assert "k_{1}" not in md and "K_{1}" not in md


def test_the_layer_norm_section_counts_rows_with_r():
    """Rows are r (the cost's c_r), samples i: the layer-norm section named its rows i."""
    net = sb.Sequential(sb.Attention(heads=1), sb.LayerNorm(), sb.Dense(2), inputs=(3, 2), loss="mse")
    md = sb.derive(net).markdown(**QUICK)
    section = md.split("### Layer norm", 1)[1].split("\n## ", 1)[0]
    assert r"\sigma_{r}^{-1}" in section and r"\delta_{\hat{h}_{r}}" in section and "Row $r$" in section
    assert not re.search(r"_\{?i\}?[^a-z]", section.replace(r"\mathrm{", ""))


def test_a_cnn_forward_pass_says_how_an_image_is_a_matrix():
    """X ∈ ℝ^{1×64} and unfold_{3×3,s=2,p=1}(X) with nothing saying X is one channel of 8×8
    pixels read row by row, or what unfold, avgpool and flatten give."""
    net = sb.Sequential(sb.Conv2d(4, 3, stride=2, padding=1), sb.AvgPool2d(2), sb.Flatten(),
                        sb.Dense(2, "softmax"), inputs=(1, 8, 8), loss="cross_entropy")
    forward = forward_section(sb.derive(net).markdown(**QUICK))
    for said in (r"An image is a matrix with a row per channel, its pixels read row by row ($X$: 1 channel of "
                 r"$8\times8$; $Z_{1}$: 4 channels of $4\times4$",
                 r"$\operatorname{unfold}$ gives a column per output position", r"$\operatorname{avgpool}$ takes the mean",
                 r"$\operatorname{flatten}$ puts the rows one after another in one row"):
        assert said in forward
    # what it says, against torch: a row per channel read row by row, unfold's columns, flatten's order
    torch = pytest.importorskip("torch")
    from symback.image import ImageMap
    x = np.random.default_rng(0).normal(size=(2, 5, 5))
    X = sp.MatrixSymbol("X", 2, 25)
    rows = sp.ImmutableMatrix(x.reshape(2, 25))                 # row c: channel c's pixels, row by row
    unfold = np.array(ImageMap(X, "unfold", (2, 5, 5, 3, 2, 1)).apply(rows), dtype=float)
    oracle = torch.nn.functional.unfold(torch.tensor(x)[None], 3, stride=2, padding=1)[0].numpy()
    assert np.abs(unfold - oracle).max() < 1e-12
    flat = np.array(ImageMap(X, "flatten", (2, 5, 5, 1, 1, 0)).apply(rows), dtype=float)
    assert np.array_equal(flat.ravel(), torch.flatten(torch.tensor(x)).numpy())
