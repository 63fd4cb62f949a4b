"""Max-pooling's backward in a document: δ routed to each window's arg-max, on a worked grid.

For P = maxpool(A) the engine derives δ_A = route_argmax(δ_P, A) (symbolic.image.MaxPoolVJP,
proved there equal to SymPy's derivative of Max).  The textbook says: each window's δ goes to
the pixel that won the window, every other pixel gets 0 (a pixel in several windows, when they
overlap, sums what it wins).  :func:`worked_example` shows this on a 4×4 image pooled 2×2:
the numbers of δ_A are the engine's derivation for a graph holding one max-pool, evaluated at
the grid; its displayed line is the chain [the engine's δ_A at these numbers, δ_P placed at
each window's arg-max], which the document certificate checks.
"""
from __future__ import annotations

import sympy as sp

from ..image import Geometry, ImageMap, _window
from ..printing import Tex, latex

__all__ = ["pooling", "worked_example", "engine_vjp", "routed"]

# a 4×4 image (each window's maximum unique, so the arg-max is plain) and δ of the 2×2 pooled map
_X = [[1, 2, 0, 1], [0, 1, 3, 1], [2, 0, 1, 2], [1, 1, 0, 3]]
_DELTA = [[2, -1], [1, 3]]
_GEOMETRY = Geometry(1, 4, 4, 2, 2, 0)


def engine_vjp(X, D, g):
    """δ_A as the engine derives it for L = tr(Dᵀ maxpool(A)) (so δ_P = D), at the explicit
    image X (C × H·W) and δ D (C × H'·W'), left unevaluated (the certificate evaluates it)."""
    from ..engine import derive
    from ..graph import Graph
    net = Graph()
    A = net.params("A", shape=tuple(X.shape))
    Ds = net.targets("D", shape=tuple(D.shape))
    net.node("P", ImageMap(A, "maxpool", g))
    net.loss(sp.Trace(Ds.T @ net.symbol("P")))
    return derive(net).gradient("A").xreplace({A: X, Ds: D})


def _winners(X, g) -> list[tuple[int, int, int]]:
    """(channel, window, pixel) for each window of each channel: its first largest pixel."""
    C = g[0]
    Ho, Wo = g.out
    return [(c, oy * Wo + ox, max(_window(g, oy, ox), key=lambda q: (X[c, q], -q)))
            for c in range(C) for oy in range(Ho) for ox in range(Wo)]


def routed(X, D, g) -> sp.ImmutableMatrix:
    """The textbook's statement at numbers: each window's δ placed at its arg-max, 0 elsewhere."""
    out = sp.zeros(g[0], g[1] * g[2])
    for c, w, q in _winners(X, g):
        out[c, q] += D[c, w]
    return sp.ImmutableMatrix(out)


def _grid(M, rows, cols, boxed=()) -> Tex:
    """M's entries as a rows×cols grid, the flat indices in `boxed` framed."""
    cell = lambda q: (r"\boxed{%s}" if q in boxed else "%s") % latex(M[q])     # noqa: E731
    body = r"\\".join(" & ".join(cell(r * cols + c) for c in range(cols)) for r in range(rows))
    return Tex(r"\left[\begin{matrix}%s\end{matrix}\right]" % body)


def worked_example() -> dict:
    """The image (arg-maxes framed), the pooled map, δ_P, and δ_A with its certified chain."""
    g = _GEOMETRY
    X = sp.ImmutableMatrix([sum(_X, [])])
    D = sp.ImmutableMatrix([sum(_DELTA, [])])
    engine = engine_vjp(X, D, g)
    value = engine.apply(*engine.args[:2])          # the engine's formula, evaluated at the grid
    wins = {q for _, _, q in _winners(X, g)}
    return {"X": _grid(X, 4, 4, wins), "P": _grid(ImageMap(X, "maxpool", g).apply(X), 2, 2),
            "delta": _grid(D, 2, 2),
            "dX": {"value": _grid(value, 4, 4, wins), "sympy": {"chain": [engine, routed(X, D, g)]}}}


def pooling(d) -> dict | None:
    """The document's max-pooling section for a derivation with a max-pool, else None."""
    g = d.graph
    pools = [g.expr(n) for n in g.node_names if isinstance(g.expr(n), ImageMap) and g.expr(n).op == "maxpool"]
    if not pools:
        return None
    return {"layers": [{"k": p.geometry[3], "stride": p.geometry[4], "padding": p.geometry[5]} for p in pools],
            "worked": worked_example()}
