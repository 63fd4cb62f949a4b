"""SymPy's proof that the attention section's closed forms are what the engine derived.

A small network (a Dense layer, a layer norm, two-head attention, a Dense output;
T = 3 positions, width 4) is derived by the engine; the section's lines are built for it
by the same code that builds them for any document; then every link of every backward
line is compared exactly, entry by entry, with all matrices written out in symbols:
the section's symbols replaced by their meanings (the engine's nodes and δs), each δ
replaced by the engine's own recursive formula until only δ_Att (the layer's output δ)
and δ_Ĥ (the layer norm's) are left, O_h by its definition P_h V_h, and the forward values (P_h, Q, K, V, Ĥ, 1/σ)
left as free symbols.  The difference must expand to zero.

What this proves is algebra at these widths; the formulas are written the same way at
any width, and the certificate checks every document's own lines numerically.
"""
from __future__ import annotations

import functools

import sympy as sp

from ..errors import DefinitionError
from ..printing import Partial
from ..vjp import AdjointMatrix
from .attention import attention_layers, build, mask_of, norm_layers

__all__ = ["prove_attention", "section", "small_section", "check"]


def section(d, names: dict, apps=()) -> dict | None:
    """The document's attention and layer-norm section (None when the network has neither),
    built after the proof.  ``names`` is the document's dict of names, which the
    certificate reads: the meanings of the section's symbols are added to it.
    """
    g = d.graph
    layers = attention_layers(g)
    if not layers and not norm_layers(g):
        return None
    # the proof's small network has a layer norm too: a network of layer norms alone uses it
    for causal in sorted({mask_of(g, l, h) == "causal" for l, h in layers}) or [False]:
        prove_attention(causal)
    return build(d, names, apps)


@functools.lru_cache(maxsize=None)
def prove_attention(causal: bool = True) -> bool:
    """Prove the section's backward lines for a two-head attention layer (and a layer norm);
    raises DefinitionError naming the first line that is not proved."""
    check(*small_section(causal))
    return True


def small_section(causal: bool):
    """(derivation, names, section) of the small network the proof is made on."""
    from .. import nn
    from ..engine import derive
    net = nn.Sequential(nn.Dense(4), nn.LayerNorm(), nn.Attention(heads=2, causal=causal), nn.Dense(2),
                        inputs=(3, 2), loss="mse")
    d = derive(net)
    names: dict = {}
    return d, names, build(d, names)


def check(d, names: dict, part: dict) -> None:
    """Every backward line of the section `part` (built for `d`) proved exactly, or DefinitionError."""
    # δ_Att and δ_Ĥ stay free: each line is about what flows back from there
    keep = {f"Att{l['layer']}" for l in part["layers"]} | set(norm_layers(d.graph))
    exact = _Exact(d, names, keep)
    for where, chain in _chains(part):
        values = [exact(e) for e in chain]
        for k in range(1, len(values)):
            gap = (values[k - 1] - values[k]).applyfunc(lambda v: sp.expand(v))
            if any(v != 0 for v in gap):
                raise DefinitionError(f"internal: the attention section's line {where} is not proved "
                                      f"(link {k}: {chain[k - 1]} = {chain[k]})")


def _chains(part):
    """(where, chain) of every backward line: each instance of a generic line, and the rest."""
    for layer in part["layers"]:
        for key in ("backward", "gathered", "grads"):
            for i, row in enumerate(layer[key]):
                for c in row.get("instances") or [row]:
                    yield f"attention {layer['layer']} {key}[{i}]", c["sympy"]["chain"]
    for norm in part["norms"]:
        for c in norm["row"]["instances"]:
            yield "layer norm row", c["sympy"]["chain"]


class _Exact:
    """An expression of the section written out as an explicit matrix of symbols."""

    def __init__(self, d, names, keep):
        self.d, self.g, self.names, self.keep = d, d.graph, names, keep
        self.rstd = {}
        for n in self.g.node_names:
            e = self.g.expr(n)
            if hasattr(e, "rstd"):     # 1/σ of a layer norm: a free column of symbols
                self.rstd[e.rstd()[0]] = sp.MatrixSymbol(f"r_{n}", e.shape[0], 1)

    def __call__(self, e):
        d, g = self.d, self.g
        if isinstance(e, Partial):
            names = {g.symbol(n): n for n in g.order}
            e = _delta_of(g, names[e.args[1]])
        e = e.xreplace(self.names)
        for _ in range(len(g.order) + 1):       # δs by the engine's formulas, back to δ_Att
            adj = [a for a in e.atoms(AdjointMatrix) if a.node not in self.keep and a.node in d.adjoint]
            outs = [s for s in e.atoms(sp.MatrixSymbol) if s.name.startswith("O") and s.name in g._expr]
            if not adj and not outs:
                break
            e = e.xreplace({**{a: d.adjoint[a.node] for a in adj}, **{o: g.expr(o.name) for o in outs}})
        return _explicit(e.xreplace(self.rstd))


def _explicit(e):
    """An explicit matrix (or number) for an expression of matrix symbols, written out directly
    (SymPy's own as_explicit of a product goes through symbolic sums, entry by entry)."""
    if isinstance(e, (sp.MatrixSymbol, sp.OneMatrix, sp.ZeroMatrix, sp.Identity)):
        return sp.ImmutableMatrix(e.as_explicit())
    if not isinstance(e, sp.MatrixExpr):
        return e
    args = [_explicit(a) for a in e.args]
    if isinstance(e, sp.MatMul):
        out = args[0]
        for a in args[1:]:
            out = out * a
        return out
    if isinstance(e, sp.MatAdd):
        return sum(args[1:], args[0])
    if isinstance(e, sp.HadamardProduct):
        out = args[0]
        for a in args[1:]:
            out = out.multiply_elementwise(a)
        return out
    if isinstance(e, sp.Transpose):
        return args[0].T
    if isinstance(e, sp.MatrixSlice):
        (r0, r1, _), (c0, c1, _) = e.rowslice, e.colslice
        return args[0][int(r0):int(r1), int(c0):int(c1)]
    if hasattr(e, "explicit_value"):
        return e.explicit_value(*[a for a in args if isinstance(a, sp.MatrixBase)])
    raise DefinitionError(f"internal: cannot write {type(e).__name__} out in the attention proof")


def _delta_of(g, n):
    from ..engine import delta
    return delta(g, n)
