"""The certificate: every displayed equation checked, link by link, before it is written.

A displayed equation ``a = b = c`` is held in the document context as the
chain ``[a, b, c]`` of SymPy expressions (under a part's ``"sympy"`` key,
``"chain"``), and the document is printed from exactly these.  The symbols
that only documents use get their meaning here, independently of the text:

* ``∂L/∂θ`` of a scalar graph is a central difference of the loss recomputed
  from the definitions (40 digits), or on a kink (the one-sided differences
  disagree: ReLU at 0) SymPy's derivative of that loss written out, each
  function's convention its definition's; of a matrix graph, the engine's gradient,
  itself checked against a central difference of the loss (NumPy);
* ``∂c/∂v`` along an edge is ``sympy.diff`` of c's definition (scalar), or
  the engine's map δ_c ↦ VJP (matrix);
* ``δ_v`` is the engine's adjoint, evaluated node by node;
* a ``Chain`` multiplies its factors, or applies its maps, in order; ``Terms`` adds.

Every adjacent pair of a chain is then compared at random values (matrices
at their own small sizes, a batch of two).  A link that fails is a bug in
symback, never a user's error: :class:`CertificateError` stops the document
before it is written.  :func:`certify` is generic: it needs only concrete
shapes, so graphs without a batch dimension go through it unchanged.
"""
from __future__ import annotations

import math

import numpy as np
import sympy as sp

from .claims import claim_values
from .points import CertificateError, point_at

__all__ = ["CertificateError", "certify", "lines"]

RTOL = 1e-7            # exact links, floating point


def lines(ctx, where: str = "") -> list[tuple[str, list]]:
    """Every chain held in the context: (where it is, [a, b, c, ...])."""
    return [(w, list(info["chain"])) for w, info in claims(ctx, where)]


def claims(ctx, where: str = "") -> list[tuple[str, dict]]:
    """Every line held in the context: (where it is, its "sympy" dict with the chain and what it claims).

    A part that shows several equations holds them as a list under its "sympy" dict's "claims".
    """
    found = []
    if isinstance(ctx, dict):
        info = ctx.get("sympy") if isinstance(ctx.get("sympy"), dict) else {}
        if info.get("chain") is not None:
            found.append((where, info))
        found += [(f"{where}.claims[{k}]", c) for k, c in enumerate(info.get("claims") or [])]
        for k, v in ctx.items():
            if k != "sympy":
                found += claims(v, f"{where}.{k}" if where else k)
    elif isinstance(ctx, (list, tuple)):
        for i, v in enumerate(ctx):
            found += claims(v, f"{where}[{i}]")
    return found


#: above this many parameter entries a network is checked at small widths (its formulas do not
#: depend on the widths): random values for a 10⁹-weight layer take minutes and gigabytes
MAX_ENTRIES = 10**6


def certify(d, ctx, seed: int = 0) -> dict:
    """Check every chain of the context; returns {'lines': n, 'links': k}, or raises CertificateError."""
    if _entries(d) > MAX_ENTRIES:
        d, ctx = _narrowed(d, ctx)
    point = point_at(d, seed, ctx.get("sympy", {}).get("names", {}))
    found = claims(ctx)
    links = 0
    for where, info in found:
        chain = info["chain"]
        relations = info.get("relations") or ["="] * (len(chain) - 1)
        for values in claim_values(point, where, info):
            for k in range(1, len(values)):
                if not _holds(values[k - 1], values[k], relations[k - 1]):
                    raise CertificateError(
                        f"{where}: link {k} of {len(chain)} is false: {chain[k - 1]} {relations[k - 1]} {chain[k]} "
                        f"({_short(values[k - 1])} vs {_short(values[k])})")
        links += len(chain) - 1
    return {"lines": len(found), "links": links}


def _entries(d) -> int:
    return sum(math.prod(d.layout.param_shape(p)) for p in d.graph.param_names)


def _narrowed(d, ctx):
    """The same graph and context with every width over 6 made 2–6 (widths that were equal stay
    equal, a width of 1 stays 1, the batch stays a symbol), derived again: what the chains
    say holds at any widths, so it is checked where the values fit in memory."""
    from ..engine import Derivation
    from ..graph import Graph
    from ..matrix import Select
    g = d.graph
    if any(g.expr(n).has(sp.MatrixSlice, Select) for n in g._expr):
        raise CertificateError("a network this wide with slices cannot be checked at small widths")

    def width(n):
        return n if not (isinstance(n, (int, sp.Integer)) and int(n) > 6) else sp.Integer(2 + int(n) % 5)

    kinds = (sp.MatrixSymbol, sp.OneMatrix, sp.ZeroMatrix, sp.Identity)

    def rebuilt(x):     # the same symbol (any subclass: δ's too) or constant, narrower
        if isinstance(x, sp.MatrixSymbol):
            return x.func(x.args[0], *map(width, x.shape))
        return type(x)(*map(width, x.shape))

    def narrow(e):
        if not isinstance(e, sp.Basic) or not e.has(*kinds):
            return e
        return e.replace(lambda x: isinstance(x, kinds) and any(width(k) != k for k in x.shape), rebuilt)

    h = Graph()
    for n in g.order:
        kind = g.kind(n)
        if kind in ("input", "target", "param"):
            h._declare([n], kind, tuple(map(width, g.shape(n))) or None)
        else:
            h._add(n, kind, narrow(g.expr(n)))
    h.loss_name, h.reduction, h.cost_name = g.loss_name, g.reduction, g.cost_name
    h.penalty, h.states = narrow(g.penalty), list(g.states)

    def walk(x):
        if isinstance(x, dict):     # the folded names' dict has symbols for keys: narrowed too
            return {narrow(k) if isinstance(k, sp.Basic) else k: walk(v) for k, v in x.items()}
        if isinstance(x, list):
            return [walk(v) for v in x]
        if isinstance(x, tuple):
            return tuple(walk(v) for v in x)
        return narrow(x)
    return Derivation(h), walk(ctx)


def _short(v) -> str:
    a = np.asarray(v)
    if np.iscomplexobj(a) and not np.any(a.imag):      # SymPy's N gives complex; shown real only if it is
        a = a.real
    return np.array2string(a, precision=6, threshold=8) if a.ndim else f"{a.item():.9g}"


def _holds(a, b, relation) -> bool:
    """a = b (to RTOL of the larger), a ≤ b (a bound), or a ≈ b (a number printed to 4 digits)."""
    if relation == "<=":
        a, b = float(np.real(np.asarray(a).reshape(()))), float(np.real(np.asarray(b).reshape(())))
        return a <= b + RTOL * max(1.0, abs(b))
    if relation == "~":
        a, b = complex(np.asarray(a).reshape(())), complex(np.asarray(b).reshape(()))
        return abs(a - b) <= 5e-4 * max(abs(a), abs(b))
    return _close(a, b)


def _close(a, b) -> bool:
    a, b = np.asarray(a, dtype=complex), np.asarray(b, dtype=complex)
    if a.size == 1 and b.size == 1:
        a, b = a.reshape(()), b.reshape(())
    if a.shape != b.shape:
        return False
    finite = np.isfinite(a) & np.isfinite(b)
    scale = max(1.0, float(np.max(np.abs(a[finite]), initial=0.0)), float(np.max(np.abs(b[finite]), initial=0.0)))
    # an entry outside the domain (log of a negative random value) is nan on both sides alike
    return bool(np.allclose(a, b, rtol=0.0, atol=RTOL * scale, equal_nan=True))
