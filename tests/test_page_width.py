"""Every line of a document fits the page: the real pdflatex reports no overfull line.

An audit compiled documents and found terms cut off at the right margin (pdflatex's
"Overfull \\hbox", widths before the fix): a layer norm's local map ∂Ĥ/∂H (209 pt in a
Dense–LayerNorm net, 214 pt in a transformer block) and its δ row (225 pt, 177 pt), a batch
norm's ∂Nt/∂T (162 pt) and δ_T (176 pt), all holding 1/σ as the raw map (w ↦ 1/√(w + ε))∘(…);
GELU′ beside GELU (387 pt); the vanishing-gradient bound path by path (380 pt in the
transformer, 128 pt in a GRU, 41 pt in an LSTM); a convolution section's paragraph of
formulas (7 pt).  DESIGN: a term is never dropped from a line for width: a long line is
folded, or a sub-expression is named and defined.  Each document here also passes the
certificate (render runs it), so a fold that printed something false would fail too.
"""
from __future__ import annotations

import functools
import re

import pytest

import symback as sb
from symback.document import context
from conftest import pdflatex_problems, slow

SLACK_PT = 3            # TeX's own rounding; the audit's lines ran 7 to 387 pt past
LIGHT = {"verify": False, "cost": False, "figure": False}    # sections that never ran wide

PAGES = {
    "transformer block": lambda: sb.Sequential(sb.TransformerBlock(heads=2, hidden=8, causal=True), sb.Dense(4),
                                               inputs=(4, 4), loss="mse"),
    "one-head block": lambda: sb.Sequential(sb.TransformerBlock(heads=1, hidden=8, causal=False), sb.Dense(4),
                                            inputs=(4, 4), loss="mse"),
    "layer norm": lambda: sb.Sequential(sb.Dense(4), sb.LayerNorm(), sb.Dense(2, "softmax"), inputs=(3, 4),
                                        loss="cross_entropy"),
    "batch norm": lambda: sb.Sequential(sb.Dense(4), sb.BatchNorm(), sb.Dense(1, "sigmoid"), inputs=3,
                                        loss="binary_cross_entropy"),
    "gru": lambda: sb.gru(inputs=2, hidden=3, outputs=1, steps=3, output="identity", loss="mse"),
    "lstm": lambda: sb.lstm(inputs=2, hidden=3, outputs=1, steps=3, output="identity", loss="mse"),
    "convolution": lambda: sb.Sequential(sb.Conv2d(3, 3, stride=2, padding=1, activation="relu"), sb.Flatten(),
                                         sb.Dense(2, "softmax"), inputs=(2, 6, 6), loss="cross_entropy"),
}


def _overfull(tex: str, tmp_path) -> list[float]:
    """The widths (pt) of the overfull lines pdflatex reports for `tex`."""
    errors, widths = pdflatex_problems(tex, tmp_path)
    assert not errors, errors
    return [float(w) for w in widths]


@functools.lru_cache(maxsize=None)
def _document(name: str) -> str:
    return sb.derive(PAGES[name]()).latex(**LIGHT)


# the GRU's document in slow mode only: its rows are the LSTM's kind (gates, ⊙, σ′ and tanh′)
@pytest.mark.parametrize("name", [slow(n) if n == "gru" else n for n in sorted(PAGES)])
def test_every_line_fits_the_page(name, tmp_path):
    wide = [w for w in _overfull(_document(name), tmp_path) if w > SLACK_PT]
    assert not wide, f"{name}: lines {wide} pt past the margin"


def test_a_normalisations_inverse_sigma_is_named_and_defined_once():
    """1/σ is σ⁻¹ in every backward line and written out once, as a forward-pass row (checked
    like every row); a batch norm's is the symbol its own section uses."""
    tex = _document("layer norm")
    assert tex.count(r"w \mapsto \frac{1}{\sqrt{w") == 1
    assert r"\sigma_{N2}^{-1} &= {\left( w \mapsto" in tex
    assert r"\odot \left(\sigma_{N2}^{-1} \mathbf{1}^{\top}\right) \right) \\" in tex     # ∂Ĥ/∂Z₁'s map
    ctx = context(sb.derive(PAGES["layer norm"]()), **LIGHT)
    assert [str(s) for s in ctx["sympy"]["names"] if "sigma" in str(s)] == [r"\sigma_{N2}^{-1}"]
    bn = context(sb.derive(PAGES["batch norm"]()), **LIGHT)
    assert [str(s) for s in bn["sympy"]["names"] if "sigma" in str(s)] == [r"\sigma_{2}^{-1}"]
    assert any(str(r["lhs"]) == r"\sigma_{2}^{-1}" for r in bn["forward"])
    assert _document("batch norm").count(r"w \mapsto \frac{1}{\sqrt{w") == 1


def test_wide_rows_go_on_rows_of_their_own():
    """A δ row's value and a vanishing path each broken onto continuation rows, not cut; GELU′
    (broken onto rows while SymPy's expansion was printed) is written through u and fits its row,
    u and u′ defined on the next."""
    tex = _document("one-head block")
    deltas = tex[tex.index(r"\section{Backpropagation: the $\delta$ recursion}"):]
    assert re.search(r"^\\delta_\{H_\{2\}\} &= .* \\\\ & = ", deltas, re.M)
    assert re.search(r"\\operatorname\{GELU\}'\\left\(z\\right\) &= \\frac\{1\}\{2\} \\left\(u' z .*, \\\\\n&\\quad \\text\{where \} u = ", tex)
    vanishing = tex[tex.index(r"\section{Vanishing gradients}"):]
    assert r"\cdot \\ &\qquad\quad" in vanishing


def test_the_width_estimate_reads_nested_fractions():
    """∂Z_{P_{2,1}}/∂Q₂ was counted as numerator and denominator both (its braces nest): the
    transformer's vanishing bound was broken at half the page."""
    from symback.printing import visual_len
    assert visual_len(r"\frac{\partial Z_{P_{2,1}}}{\partial Q_{2}}") == visual_len(r"\partial Z_{P_{2,1}}")
    assert visual_len(r"\frac{1}{2}") == 1 and visual_len(r"\hat{Y}") == 1
