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
from .factors import edge_expr

__all__ = ["Diagram", "diagram", "tikz", "mermaid", "MAX_FIGURE_NODES"]

MAX_FIGURE_NODES = 30      # a bigger graph is unreadable as a figure
MAX_LABEL = 12             # symbols on one edge
COLUMN = 3.2               # cm between the columns of the computational graph


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
    on_path = {(f.of, f.wrt) for path in d.chain(param) for f in path}
    return Diagram(list(g.order), {n: g.kind(n) for n in g.order},
                   {n: g.parents(n) for n in g.order}, labels, plain, on_path,
                   {n: latex(g.symbol(n)) for n in g.order}, exprs, values, edge_values)


def _plain_number(v) -> str:
    v = sp.sympify(v, strict=True)
    return text_label(v if v.is_Integer else sp.Float(sp.N(v, 15), 6))


def _layout(dg: Diagram) -> dict[str, tuple[float, float]]:
    """Columns by depth (leaves just left of their first use), rows by the children's height."""
    children = {n: [c for c in dg.order if n in dg.parents[c]] for n in dg.order}
    col: dict[str, int] = {}
    for n in dg.order:
        if dg.parents[n]:
            col[n] = 1 + max((col.get(p, 0) for p in dg.parents[n]), default=0)
    for n in dg.order:
        if not dg.parents[n]:
            col[n] = min((col[k] for k in children[n]), default=1) - 1
    pos: dict[str, tuple[float, float]] = {}
    for c in sorted(set(col.values()), reverse=True):
        members = [n for n in dg.order if col[n] == c]

        def key(n):
            ys = [pos[k][1] for k in children[n] if k in pos]
            return sum(ys) / len(ys) if ys else 0.0
        members.sort(key=key, reverse=True)
        center = sum(key(n) for n in members) / len(members)
        for i, n in enumerate(members):
            pos[n] = (c * COLUMN, center + 1.5 * ((len(members) - 1) / 2 - i))
    return pos


def tikz(dg: Diagram):
    """TikZ commands drawing `dg`: local derivatives on the edges, the path highlighted."""
    if len(dg.order) > MAX_FIGURE_NODES:
        return None
    pos, ids = _layout(dg), {n: f"n{i}" for i, n in enumerate(dg.order)}
    path_nodes = {n for e in dg.on_path for n in e}
    style = {"input": "data", "target": "data", "param": "param", "node": "inner", "loss": "loss"}
    lines = []
    for n in dg.order:
        x, y = pos[n]
        hl = ",hl" if n in path_nodes else ""
        val = rf",label={{[val]below:${number(dg.values[n])}$}}" if n in dg.values else ""
        lines.append(rf"\node[{style[dg.kind[n]]}{hl}{val}] ({ids[n]}) at ({x:.2f},{y:.2f}) {{${dg.names[n]}$}};")
    for child in dg.order:
        for parent in dg.parents[child]:
            edge = "hledge" if (child, parent) in dg.on_path else "edge"
            label = dg.labels.get((child, parent))
            mid = rf" node[lbl] {{${label}$}}" if label else ""
            # an edge that skips columns bends, so it does not run through the nodes between
            skips = abs(pos[child][0] - pos[parent][0]) > COLUMN + 0.01
            link = " to[bend left=18]" if skips else " --"
            lines.append(rf"\draw[{edge}] ({ids[parent]}){link}{mid} ({ids[child]});")
    return Tex("\n".join(lines))


def mermaid(dg: Diagram):
    """The graph as a Mermaid flowchart (GitHub renders it), the path drawn thick."""
    if len(dg.order) > MAX_FIGURE_NODES:
        return None
    ids = {n: f"n{i}" for i, n in enumerate(dg.order)}
    lines, thick, k = ["flowchart LR"], [], 0
    for n in dg.order:
        name = text_name(n)
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


