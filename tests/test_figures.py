"""The computational-graph figure reads well: labels beside their edges, never over a node or
another label, and long recurrent or deep graphs drawn one step with ⋯ for the rest.

The geometric tests check the layout's boxes in Python; one test asks TeX itself where it put
every node and label of a real figure (pdflatex, TikZ anchors) and checks those boxes, so the
size estimates are checked too.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from itertools import combinations
from pathlib import Path

import pytest

import symback as sb
from symback.document.context import _apps
from symback.document.example import numbers
from symback.document.figure import MAX_FIGURE_NODES, diagram, drawn, tikz
from symback.document.layout import Box, layout, overlaps
from symback.printing import number
from symback.spec import read_spec

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def _seed(k):
    s = read_spec(EXAMPLES / f"seed00{k}.toml")
    return sb.derive(s.graph), dict(s.values) if s.values else None


BUILDERS = {
    **{f"seed00{k}": (lambda k=k: _seed(k)) for k in range(5)},
    "skip": lambda: (sb.derive(read_spec(EXAMPLES / "skip_connection.toml").graph), None),
    "residual": lambda: (sb.derive(sb.mlp([2, 8, 8, 1], activation="tanh", output="sigmoid",
                                          loss="binary_cross_entropy", l2=0.001, residual=True)), None),
    "tied": lambda: (sb.derive(sb.Sequential(sb.Dense(2, "tanh"), sb.Dense(4, "identity", tie="W1"),
                                             inputs=4, loss="mse")), None),
    "rnn": lambda: (sb.derive(sb.rnn(inputs=2, hidden=3, outputs=1, steps=4)), None),
}


def _diagram(d, values, param=None):
    return diagram(d, param or d.params[0], _apps(d), numbers(d, values) if values else None)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_no_label_covers_a_node_or_another_label(name):
    d, values = BUILDERS[name]()
    dg = drawn(_diagram(d, values))
    lay = layout(dg.order, dg.parents, dg.names, dg.labels, {n: number(v) for n, v in dg.values.items()})
    edges = [(c, p) for c in dg.order for p in dg.parents[c]]
    assert set(lay.labels) == {e for e in edges if e in dg.labels}       # every label is placed
    nodes = [(n, b) for n in dg.order for b in lay.boxes[n]]
    for e, lab in lay.labels.items():
        hit = [n for n, b in nodes if overlaps(lab.box, b)]
        assert not hit, f"{name}: the label of {e} covers {hit}"
    for (e, a), (f, b) in combinations(lay.labels.items(), 2):
        assert not overlaps(a.box, b.box), f"{name}: the labels of {e} and {f} overlap"
    for m, n in combinations(dg.order, 2):                 # and no two nodes overlap
        assert not any(overlaps(a, b) for a in lay.boxes[m] for b in lay.boxes[n]), (m, n)


def test_a_label_sits_beside_its_own_edge():
    """Near its edge (its box touches the line's neighbourhood) but not on a node: seed 003."""
    d, values = _seed(3)
    dg = _diagram(d, values)
    lay = layout(dg.order, dg.parents, dg.names, dg.labels)
    for (c, p), lab in lay.labels.items():
        (x0, y0), (x1, y1) = lay.pos[p], lay.pos[c]
        # the distance from the label's box to the segment between the two centres
        pts = [(x0 + (x1 - x0) * t / 50, y0 + (y1 - y0) * t / 50) for t in range(51)]
        gap = min(max(lab.box.x0 - x, x - lab.box.x1, lab.box.y0 - y, y - lab.box.y1, 0.0) for x, y in pts)
        assert gap < 0.25, (c, p, gap)


def _names(dg):
    return {n for n in dg.order if dg.kind[n] != "elided"}


def test_rnn_is_drawn_one_step_with_dots_before_and_after():
    d = sb.derive(sb.rnn(inputs=2, hidden=3, outputs=1, steps=6))
    full = _diagram(d, None, "Wx")
    dg = drawn(full)
    dots = [n for n in dg.order if dg.kind[n] == "elided"]
    assert len(dots) == 2 and len(dg.order) < len(full.order)
    assert {"X", "Wx", "Wh", "bh", "x2", "z2", "h1", "h2", "h6", "Yhat", "C", "L"} <= _names(dg)
    assert not {"x1", "z1", "x3", "z3", "h3", "h5", "z6"} & _names(dg)
    # ⋯ → h1 → z2 → h2 → ⋯ → h6: the dots stand in the recurrent chain, before and after the step
    before, after = sorted(dots, key=dg.order.index)
    assert dg.parents["h1"] == [before] and after in dg.parents["h6"] and dg.parents[after] == ["h2"]
    # a drawn edge between real nodes keeps its true local factor; edges at a ⋯ carry none
    for e, label in dg.labels.items():
        assert label == full.labels[e] and dg.exprs[e] == full.exprs[e]
    assert not [e for e in dg.labels if set(e) & set(dots)]
    assert all(e in full.labels for e in dg.labels)
    # the path to Wx runs through both dots (every step uses Wx) and through Wx's edge at step 2
    assert ("z2", "Wx") in dg.on_path and ("h6", after) in dg.on_path and ("h1", before) in dg.on_path
    fig = tikz(full)
    assert fig.count(r"{$\cdots$}") == 2 and "dashed" in fig


def test_deep_mlp_keeps_the_first_the_last_and_the_highlighted_layer():
    d = sb.derive(sb.mlp([3, 4, 4, 4, 4, 4, 2], activation="sigmoid"))
    dg = drawn(_diagram(d, None, "W1"))
    assert [dg.kind[n] for n in dg.order].count("elided") == 1
    assert {"W1", "b1", "Z1", "A1", "A5", "W6", "b6", "Yhat"} <= _names(dg)
    assert not {"W3", "Z3", "A3"} & _names(dg)
    mid = drawn(_diagram(d, None, "W3"))         # W3's layer drawn too, ⋯ on either side
    assert {"W3", "Z3", "A3", "A2"} <= _names(mid)
    assert [mid.kind[n] for n in mid.order].count("elided") == 2
    assert ("Z3", "W3") in mid.on_path and ("Z3", "W3") in mid.labels
    assert drawn(_diagram(sb.derive(sb.mlp([2, 3, 3, 1])), None)).order == \
        _diagram(sb.derive(sb.mlp([2, 3, 3, 1])), None).order       # a short net is drawn whole
    assert len(dg.order) <= MAX_FIGURE_NODES


# ------------------------------------------------------------- TeX's own boxes
PDFLATEX = shutil.which("pdflatex")

MEASURE = r"""
\makeatletter
\newdimen\sbxa \newdimen\sbxb \newdimen\sbya
\def\sbbox#1{\pgfpointanchor{#1}{west}\sbxa=\pgf@x \pgfpointanchor{#1}{east}\sbxb=\pgf@x
  \pgfpointanchor{#1}{south}\sbya=\pgf@y \pgfpointanchor{#1}{north}%
  \typeout{SBBOX #1 \the\sbxa\space\the\sbya\space\the\sbxb\space\the\pgf@y}}
\makeatother
"""


@pytest.mark.skipif(PDFLATEX is None, reason="pdflatex not installed")
def test_tex_puts_no_label_over_a_node_or_a_label(tmp_path):
    """The figure as TeX typesets it (seed 003 with its numbers, the RNN): TikZ reports every
    node's, value's and label's box, and none overlaps another by more than a hairline."""
    pictures = []
    for d, values in (_seed(3), BUILDERS["rnn"]()):
        fig = str(tikz(_diagram(d, values)))
        k = len(pictures)
        # name each value label (the figure leaves them anonymous) so TikZ can report its box
        fig = re.sub(r"\[val\](below:.*?\$\}) \((n\d+)\)", lambda m: f"[val,name=v{k}{m.group(2)}]{m.group(1)} ({m.group(2)})", fig)
        fig = re.sub(r"\((n\d+)\)", rf"(p{k}\1)", fig)
        fig = re.sub(r"\] \((l\d+-\d+)\)", rf"] (p{k}\1)", fig)
        names = re.findall(r"\((p\d+[nl][\d-]+)\)", fig) + re.findall(r"name=(v\d+n\d+)", fig)
        pictures.append(r"\begin{tikzpicture}[symback, x=1cm, y=1cm]" + "\n" + fig + "\n"
                        + "".join(rf"\sbbox{{{n}}}" for n in dict.fromkeys(names)) + r"\end{tikzpicture}")
    pre = "\n".join(ln for ln in (TEMPLATES / "_preamble.tex.j2").read_text().splitlines()
                    if not ln.startswith("%#"))
    tex = (r"\documentclass[11pt]{article}" + pre + MEASURE + r"\begin{document}" + "\n"
           + "\n\n".join(pictures) + r"\end{document}")
    (tmp_path / "f.tex").write_text(tex)
    done = subprocess.run([PDFLATEX, "-halt-on-error", "-interaction=nonstopmode", "f.tex"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-1500:]
    boxes = {}
    for m in re.finditer(r"SBBOX (\S+) ([-\d.]+)pt ([-\d.]+)pt ([-\d.]+)pt ([-\d.]+)pt", done.stdout):
        boxes[m.group(1)] = Box(*map(float, m.groups()[1:]))
    assert len(boxes) > 30
    slack = 0.8          # pt: a box's border line may touch its neighbour's
    labels = [n for n in boxes if "l" in n]
    for a, b in combinations(boxes, 2):
        if a[1] != b[1] or (a not in labels and b not in labels):
            continue            # different pictures, or two node boxes (a node touches its value)
        assert not overlaps(boxes[a], boxes[b], slack), (a, b, boxes[a], boxes[b])
