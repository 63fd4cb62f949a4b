"""The computational graph as a figure: TikZ for LaTeX, Mermaid for Markdown.

Each edge child ← parent is labelled with its local factor exactly as
:func:`~symback.document.factors.edge_expr` gives it (∂child/∂parent,
or the map δ ↦ VJP(δ) into a matrix node), printed by the printer, so
multiplying or composing the labels along a path gives that path's part
of the gradient.  A label too long to read on an edge is written as the
∂child/∂parent it stands for.
"""
from __future__ import annotations

from typing import NamedTuple

import sympy as sp

from ..printing import Partial, Tex, latex, number, visual_len
from ..printing.text import text as text_label, text_name
from .abbreviate import ELIDED, abbreviate
from .factors import edge_expr
from .layout import layout

__all__ = ["Diagram", "diagram", "drawn", "figure_note", "tikz", "mermaid", "MAX_FIGURE_NODES"]

MAX_FIGURE_NODES = 40      # a bigger graph (after abbreviation) is unreadable as a figure
MAX_LABEL = 12             # symbols on one edge


class Diagram(NamedTuple):
    """A computational graph ready to draw: nodes in order, edges with their labels."""

    order: list                # node names
    kind: dict                 # name -> input/target/param/node/loss
    parents: dict              # name -> list of names it is computed from
    labels: dict               # (child, parent) -> LaTeX of the local factor
    plain: dict                # (child, parent) -> plain-text label (Mermaid)
    on_path: set               # (child, parent) edges on the highlighted paths
    names: dict                # name -> LaTeX of the node's label
    exprs: dict                # (child, parent) -> the SymPy expression the label prints
    values: dict = {}          # name -> LaTeX of the node's forward value (a worked example)
    edge_values: dict = {}     # (child, parent) -> the local derivative's value there
    states: list = []          # the builder's states in order (h_t, hidden outputs): see abbreviate
    recurrent: bool = False    # the graph is a net unrolled over time steps
    param: str = ""            # the parameter whose paths are highlighted


def diagram(d, param: str, apps=(), numbers: dict | None = None) -> Diagram:
    """The derivation's graph with every edge labelled by its local factor, `param`'s paths marked.

    With `numbers` (every node's value at a worked example, scalar graphs) each
    node shows its forward value and each edge its local derivative's value:
    micrograd's picture, and seed 002's path with the numbers to multiply.
    """
    g = d.graph
    labels, plain, exprs = {}, {}, {}
    values, edge_values = {}, {}
    if numbers:
        env = {g.symbol(n): v for n, v in numbers.items()}
        values = dict(numbers)          # the numbers themselves: each output prints its own
        edge_values = {e: sp.sympify(f, strict=True).xreplace(env) for e, f in d.local.items()}
    for (child, parent) in d.local:
        e = edge_expr(d, child, parent, generic=True)
        text = latex(e, applications=apps)
        labels[(child, parent)] = text if visual_len(text) <= MAX_LABEL else latex(
            Partial(g.symbol(child), g.symbol(parent)))
        exprs[(child, parent)] = e
        plain[(child, parent)] = text_label(e, apps)
        if (child, parent) in edge_values and not sp.sympify(e, strict=True).is_number:     # not "1 = 1"
            labels[(child, parent)] += rf" = {number(edge_values[(child, parent)])}"
            plain[(child, parent)] += f" = {_plain_number(edge_values[(child, parent)])}"
    on_path = _on_paths(d, param)
    return Diagram(list(g.order), {n: g.kind(n) for n in g.order},
                   {n: g.parents(n) for n in g.order}, labels, plain, on_path,
                   {n: latex(g.symbol(n)) for n in g.order}, exprs, values, edge_values,
                   list(g.states), getattr(g, "steps", None) is not None, param)


def _on_paths(d, param) -> set:
    """The edges (child, parent) on some path from the loss back to `param`, found over the graph
    (listing the paths takes as long as there are paths: 2^k for k residual blocks): both ends
    lie downstream of param, and the child upstream of the loss."""
    g, down = d.graph, d._descendants(param)
    up, todo = {d.loss_name}, [d.loss_name]
    while todo:
        for q in g.parents(todo.pop()):
            if q not in up:
                up.add(q)
                todo.append(q)
    return {(c, q) for (c, q) in d.local if c in down and q in down and c in up}


def _plain_number(v) -> str:
    v = sp.sympify(v, strict=True)
    return text_label(v if v.is_Integer else sp.Float(sp.N(v, 15), 6))


def tikz(dg: Diagram):
    """TikZ commands drawing `dg`: local derivatives beside the edges, the path highlighted.

    Every node and label is placed where :func:`~.layout.layout` put it: a label's corner
    at its computed point, so no label covers a node or another label.
    """
    dg = drawn(dg)
    if dg is None:
        return None
    values = {n: number(v) for n, v in dg.values.items()}
    lay = layout(dg.order, dg.parents, dg.names, dg.labels, values)
    ids = {n: f"n{i}" for i, n in enumerate(dg.order)}
    path_nodes = {n for e in dg.on_path for n in e}
    style = {"input": "data", "target": "data", "param": "param", "node": "inner", "loss": "loss",
             ELIDED: "elided"}
    lines = []
    for n in dg.order:
        (x, y), size = lay.pos[n], 2 * lay.radius[n]
        hl = ",hl" if n in path_nodes else ""
        val = rf",label={{[val]below:${values[n]}$}}" if n in values else ""
        lines.append(rf"\node[{style[dg.kind[n]]}{hl}{val},minimum size={size:.2f}cm] ({ids[n]}) "
                     rf"at ({x:.2f},{y:.2f}) {{${dg.names[n]}$}};")
    for child in dg.order:
        for parent in dg.parents[child]:
            edge = "hledge" if (child, parent) in dg.on_path else "edge"
            if ELIDED in (dg.kind[child], dg.kind[parent]):
                edge += ",dashed"          # stands for the many edges of the steps not drawn
            place = lay.labels.get((child, parent))
            mid = ""
            if place:
                mid = (rf" node[lbl,at={{({place.at[0]:.2f},{place.at[1]:.2f})}}] (l{ids[child][1:]}-{ids[parent][1:]})"
                       rf" {{${dg.labels[(child, parent)]}$}}")
            c = lay.control[(child, parent)]
            # an edge that skips columns bows around the nodes between, as the layout routed it
            link = f" .. controls ({c[0]:.2f},{c[1]:.2f}) and ({c[0]:.2f},{c[1]:.2f}) .." if c else " --"
            lines.append(rf"\draw[{edge}] ({ids[parent]}){link} ({ids[child]}){mid};")
    return Tex("\n".join(lines))


def drawn(dg: Diagram):
    """What the figure draws: `dg`, abbreviated for a long recurrent or deep graph, or None
    when even that has more than MAX_FIGURE_NODES nodes."""
    dg = abbreviate(dg, dg.recurrent, dg.param)
    return dg if len(dg.order) <= MAX_FIGURE_NODES else None


def figure_note(dg: Diagram):
    """The sentence standing in for a figure too big to draw (None when it is drawn)."""
    shown = drawn(dg)
    if shown is not None:
        return None
    return Tex(f"The graph has {len(dg.order)} nodes, too many to draw legibly; "
               "the table of local derivatives lists its edges.")


def mermaid(dg: Diagram):
    """The graph as a Mermaid flowchart (GitHub renders it), the path drawn thick."""
    dg = drawn(dg)
    if dg is None:
        return None
    ids = {n: f"n{i}" for i, n in enumerate(dg.order)}
    lines, thick, k = ["flowchart LR"], [], 0
    for n in dg.order:
        name = "⋯" if dg.kind[n] == ELIDED else text_name(n)
        shown = f"{name} = {_plain_number(dg.values[n])}" if n in dg.values else name
        lines.append(f'  {ids[n]}(["{shown}"])')
    for child in dg.order:
        for parent in dg.parents[child]:
            label = dg.plain.get((child, parent), "").replace('"', "'")
            arrow = f'-- "{label}" -->' if label else "-->"
            lines.append(f"  {ids[parent]} {arrow} {ids[child]}")
            if (child, parent) in dg.on_path:
                thick.append(str(k))
            k += 1
    if thick:
        lines.append(f"  linkStyle {','.join(thick)} stroke:#e69500,stroke-width:4px")
    return Tex("\n".join(lines))


