"""Where the computational graph's nodes and edge labels go: a layered layout, in Python.

Nodes sit in columns by depth (leaves just left of their first use) and in
rows by their children's height.  Every node and every label is a box whose
size is estimated from its formula (:func:`~symback.printing.visual_len`), so
the layout can be checked without TeX: each label sits beside its edge, on
the side and at the point along it where its box meets no node and no other
label; a gap too narrow for its labels is widened until they fit.  The TikZ
picture centres each label on exactly the box computed here, so the boxes
the tests check are the ones drawn (up to the size estimates).
"""
from __future__ import annotations

import math
from typing import NamedTuple

from ..printing import visual_len

__all__ = ["Layout", "Box", "layout", "bounds", "label_size", "overlaps", "ROW", "MIN_GAP"]

ROW = 1.5             # cm between the rows of one column
MIN_GAP = 1.6         # cm between two columns' centres, at least
NODE = 0.4            # a node's radius when its name is short (minimum size 8mm)
CHAR = 0.19           # cm per symbol of a \footnotesize label (an upper estimate)
NODE_CHAR = 0.21      # cm per symbol of a \small node name
VAL_CHAR = 0.15       # cm per symbol of a \scriptsize value under a node
PAD = 0.08            # a label's inner sep, both sides, and the gap it keeps from its edge
CLEAR = 0.1           # cm a label keeps from the other edges, where it can
TRIES = 12            # rounds of widening before a label takes its least-bad place
ALONG = (0.5, 0.4, 0.6, 0.3, 0.7, 0.22, 0.78)    # where along an edge a label may sit
BENDS = (0.8, -0.8, 1.3, -1.3, 1.9, -1.9, 2.6, -2.6, 3.4, -3.4, 4.5, -4.5)   # cm, a long edge's bow


class Box(NamedTuple):
    """An axis-parallel rectangle, (x0, y0) lower left, (x1, y1) upper right, in cm."""

    x0: float
    y0: float
    x1: float
    y1: float


class Label(NamedTuple):
    """An edge label: its centre (where TikZ puts it) and the box it fills."""

    at: tuple
    box: Box


class Layout(NamedTuple):
    """Node centres and radii, the node boxes (circle and value below), each long edge's
    control point (None: a straight edge), and each label's place."""

    pos: dict           # name -> (x, y)
    radius: dict        # name -> r
    boxes: dict         # name -> [Box] (the circle's square, its value's box)
    control: dict       # (child, parent) -> (x, y) or None
    labels: dict        # (child, parent) -> Label


def overlaps(a: Box, b: Box, slack: float = 0.0) -> bool:
    """Whether two boxes share more than a `slack`-wide strip."""
    return a.x0 < b.x1 - slack and b.x0 < a.x1 - slack and a.y0 < b.y1 - slack and b.y0 < a.y1 - slack


def label_size(tex: str) -> tuple[float, float]:
    """(width, height) in cm of a label's box: a fraction stands twice as tall as a line."""
    tall = 0.78 if r"\frac" in tex else (0.5 if "^" in tex or r"\hat" in tex else 0.42)
    return CHAR * visual_len(tex) + 2 * PAD, tall


def _radius(name_tex: str) -> float:
    w = NODE_CHAR * visual_len(name_tex)
    return max(NODE, math.hypot(w, 0.4) / 2 + 0.04)


def _columns(order, parents) -> dict:
    """Depth of each node: one more than its deepest parent; a leaf just left of its first use."""
    children = {n: [c for c in order if n in parents[c]] for n in order}
    col: dict[str, int] = {}
    for n in order:
        if parents[n]:
            col[n] = 1 + max((col.get(p, 0) for p in parents[n]), default=0)
    for n in order:
        if not parents[n]:
            col[n] = min((col[k] for k in children[n]), default=1) - 1
    low = min(col.values(), default=0)
    return {n: c - low for n, c in col.items()}, children


def _rows(order, col, children, row) -> dict:
    """Each column's nodes in the order of their children's heights, `row` apart, centred there."""
    y: dict[str, float] = {}
    for c in sorted(set(col.values()), reverse=True):
        members = [n for n in order if col[n] == c]

        def key(n):
            ys = [y[k] for k in children[n] if k in y]
            return sum(ys) / len(ys) if ys else 0.0
        members.sort(key=key, reverse=True)
        center = sum(key(n) for n in members) / len(members)
        for i, n in enumerate(members):
            y[n] = center + row * ((len(members) - 1) / 2 - i)
    return y


def _bezier(p, c, q, t):
    """The point and direction at t of TikZ's `p .. controls (c) and (c) .. q`."""
    s = 1 - t
    pt = tuple(s ** 3 * p[i] + 3 * s * t * c[i] + t ** 3 * q[i] for i in (0, 1))
    dv = tuple(3 * s * s * (c[i] - p[i]) + 3 * t * t * (q[i] - c[i]) for i in (0, 1))
    return pt, dv


def _border(p, toward, r):
    dx, dy = toward[0] - p[0], toward[1] - p[1]
    n = math.hypot(dx, dy) or 1.0
    return p[0] + r * dx / n, p[1] + r * dy / n


def _steps(a, b) -> int:
    return max(20, int(math.hypot(b[0] - a[0], b[1] - a[1]) / 0.15))


def _curve(p, q, rp, rq, c):
    """The drawn curve (border to border) as (point, direction), sampled every ~1.5 mm."""
    a, b = _border(p, c, rp), _border(q, c, rq)
    n = _steps(a, b)
    return [_bezier(a, c, b, t / n) for t in range(n + 1)], (a, b)


def _segment(p, q, rp, rq):
    a, b = _border(p, q, rp), _border(q, p, rq)
    d, n = (b[0] - a[0], b[1] - a[1]), _steps(a, b)
    return [((a[0] + d[0] * t / n, a[1] + d[1] * t / n), d) for t in range(n + 1)]


def _extent(points) -> Box:
    xs, ys = [q[0][0] for q in points], [q[0][1] for q in points]
    return Box(min(xs), min(ys), max(xs), max(ys))


def _hits(points, box: Box, extent: Box | None = None) -> bool:
    if extent is not None and not overlaps(extent, box):     # far apart: no point to test
        return False
    return any(box.x0 < x < box.x1 and box.y0 < y < box.y1 for (x, y), _ in points)


def _control(p, q, rp, rq, blockers):
    """A control point bowing the long edge p → q around every node box in `blockers`."""
    mx, my = (p[0] + q[0]) / 2, (p[1] + q[1]) / 2
    dx, dy = q[0] - p[0], q[1] - p[1]
    n = math.hypot(dx, dy) or 1.0
    for h in BENDS:
        c = (mx - h * dy / n, my + h * dx / n)
        pts, _ = _curve(p, q, rp, rq, c)
        if not any(_hits(pts, b) for b in blockers):
            return c
    return (mx - BENDS[-2] * dy / n, my + BENDS[-2] * dx / n)


def _label_box(at, direction, side, size) -> Box:
    """The box of a label of `size` beside the edge at point `at` (side +1 above, −1 below),
    its corner on the edge's free side (TikZ's `auto` placement), `PAD` off the line."""
    w, h = size
    dx, dy = direction
    y = at[1] + side * PAD
    y0 = y if side > 0 else y - h
    if abs(dx) < 1e-9:                            # a vertical stretch: the label beside it
        x0 = at[0] + PAD if side > 0 else at[0] - PAD - w
        return Box(x0, at[1] - h / 2, x0 + w, at[1] + h / 2)
    if abs(dy) < 1e-9 * abs(dx):                  # level: the label centred over (under) it
        return Box(at[0] - w / 2, y0, at[0] + w / 2, y0 + h)
    # rising edge: above it the box extends to the left; falling: to the right
    left = (dy * dx > 0) == (side > 0)
    x0 = at[0] - w if left else at[0]
    return Box(x0, y0, x0 + w, y0 + h)


def layout(order, parents, names, labels, values=None, page=(16.6, 21.0)) -> Layout:
    """Place `order`'s nodes and the `labels` ((child, parent) -> LaTeX) of their edges.

    The layers run left to right, or top to bottom when that fits a `page`
    (width, height in cm) at a larger scale: a long chain with wide labels
    reads better down the page, its labels beside near-vertical edges.
    """
    across = _layered(order, parents, names, labels, values or {}, False)
    down = _layered(order, parents, names, labels, values or {}, True)
    # across is what a reader expects (and what a wide beamer frame holds): down only when
    # across would print much smaller
    wide = _scale(across, page)
    return across if wide >= 0.75 or wide >= _scale(down, page) else down


def _scale(lay: Layout, page) -> float:
    """How much a picture must shrink (≤ 1) to fit `page`."""
    x0, y0, x1, y1 = bounds(lay)
    return min(1.0, page[0] / max(x1 - x0, 1e-9), page[1] / max(y1 - y0, 1e-9))


def bounds(lay: Layout) -> Box:
    """The box around every node, value and label of `lay`."""
    every = [b for bs in lay.boxes.values() for b in bs] + [q.box for q in lay.labels.values()]
    return Box(min(b.x0 for b in every), min(b.y0 for b in every),
               max(b.x1 for b in every), max(b.y1 for b in every))


def _layered(order, parents, names, labels, values, vertical) -> Layout:
    """The layout computed in a frame whose layers run along x; `vertical` turns it a quarter
    (frame (u, v) is page (v, −u)), so label and value sizes are swapped into that frame."""
    col, children = _columns(order, parents)
    radius = {n: _radius(names[n]) for n in order}
    edges = [(c, p) for c in order for p in parents[c]]
    sizes = {e: label_size(labels[e]) for e in edges if labels.get(e)}
    if vertical:
        sizes = {e: (h, w) for e, (w, h) in sizes.items()}
    ncol = max(col.values(), default=0) + 1
    gap = [MIN_GAP] * max(ncol - 1, 0)
    for (c, p), (w, _) in sizes.items():          # a straight edge's label fits between its ends
        if col[c] - col[p] == 1:
            gap[col[p]] = max(gap[col[p]], w + radius[c] + radius[p] + 0.4)
    row = ROW
    for attempt in range(TRIES + 1):
        xs = [0.0]
        for g_ in gap:
            xs.append(xs[-1] + g_)
        ys = _rows(order, col, children, row)
        pos = {n: (xs[col[n]], ys[n]) for n in order}
        boxes = {n: _node_boxes(pos[n], radius[n], values.get(n), vertical) for n in order}
        # early rounds also widen for a label that another edge runs through; later ones only
        # for a label over a node or a label (the rule), so the figure does not grow without end
        placed, failed, control = _place(order, edges, pos, radius, boxes, sizes, col,
                                         final=attempt == TRIES, strict=attempt < TRIES // 2)
        if not failed:
            break
        for k in {k for (c, p) in failed for k in range(col[p], col[c])}:
            gap[k] += 0.15 if vertical else 0.35    # widen each gap a failing edge crosses, once
        if vertical or attempt % 3 == 2:          # down the page, labels stand between the rows
            row += 0.25
    lay = Layout(pos, radius, boxes, control, placed)
    return _turn(lay) if vertical else lay


def _turn(lay: Layout) -> Layout:
    """Frame (u, v) → page (v, −u)."""
    pt = lambda p: None if p is None else (p[1], -p[0])         # noqa: E731
    box = lambda b: Box(b.y0, -b.x1, b.y1, -b.x0)              # noqa: E731
    return Layout({n: pt(p) for n, p in lay.pos.items()}, lay.radius,
                  {n: [box(b) for b in bs] for n, bs in lay.boxes.items()},
                  {e: pt(c) for e, c in lay.control.items()},
                  {e: Label(pt(q.at), box(q.box)) for e, q in lay.labels.items()})


def _node_boxes(p, r, value, vertical=False):
    """A node's circle as its square, and its value's box below it on the page."""
    out = [Box(p[0] - r, p[1] - r, p[0] + r, p[1] + r)]
    if value is not None:
        w, h = VAL_CHAR * visual_len(value) + 0.1, 0.36
        out.append(Box(p[0] + r, p[1] - w / 2, p[0] + r + h, p[1] + w / 2) if vertical
                   else Box(p[0] - w / 2, p[1] - r - h, p[0] + w / 2, p[1] - r))
    return out


def _place(order, edges, pos, radius, boxes, sizes, col, final=False, strict=False):
    """Route every edge and put each label at its first free place; returns (labels, failed, control)."""
    every = [b for n in order for b in boxes[n]]
    control, curves = {}, {}
    for (c, p) in edges:
        far = abs(col[c] - col[p]) > 1
        if far:
            blockers = [b for n in order if n not in (c, p) for b in boxes[n]]
            control[(c, p)] = _control(pos[p], pos[c], radius[p], radius[c], blockers)
            curves[(c, p)] = _curve(pos[p], pos[c], radius[p], radius[c], control[(c, p)])[0]
        else:
            control[(c, p)] = None
            curves[(c, p)] = _segment(pos[p], pos[c], radius[p], radius[c])
    extent = {e: _extent(pts) for e, pts in curves.items()}
    placed, failed = {}, []
    # the widest labels first: they have the fewest places to go
    for e in sorted(sizes, key=lambda e: -sizes[e][0]):
        pts = curves[e]
        best, best_cost = None, None
        for t in ALONG:
            at, direction = pts[round(t * (len(pts) - 1))]
            for side in (1, -1):
                box = _label_box(at, direction, side, sizes[e])
                clash = sum(overlaps(box, b) for b in every) + sum(overlaps(box, q.box) for q in placed.values())
                near = Box(box.x0 - CLEAR, box.y0 - CLEAR, box.x1 + CLEAR, box.y1 + CLEAR)
                crossings = sum(_hits(curves[f], near, extent[f]) for f in curves if f != e)
                cost = (clash, crossings, abs(t - 0.5))
                if best_cost is None or cost < best_cost:
                    best, best_cost = Label(((box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2), box), cost
        if best_cost[0] or (strict and best_cost[1]):
            failed.append(e)
            if not final:
                continue
        placed[e] = best
    return placed, failed, control
