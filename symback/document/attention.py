"""The attention and layer-norm section of a document: multi-head attention head by head.

For each ``sb.Attention`` layer the section writes head h's forward pass and its
backward pass in textbook closed form (δ_V = Pᵀδ_O, δ_P = δ_O Vᵀ, softmax's
δ_S = P ⊙ (δ_P − (δ_P ⊙ P)𝟏𝟏ᵀ) and FlashAttention's P ⊙ (δ_P − rowsum(δ_O ⊙ O)𝟏ᵀ),
δ_Q, δ_K), then the concatenation and the weights' gradients; for each layer norm the
δ of one row, (1/σ_r)(δ_ĥ − mean(δ_ĥ)𝟏ᵀ − mean(δ_ĥ ⊙ ĥ) ĥ).

Every line is a chain of SymPy expressions in symbols of its own (Q_h, S_h, δ_{S_h},
...), whose meanings — the engine's nodes and δs, a head's columns Q E_h — go to the
document's names, so the certificate checks each line.  A line about head h is shown
once, generically; the certificate checks it for every head (and a row-i line for every
row), each instance built by the same code with h (or i) concrete.  Before any of it
is shown, :func:`symback.document.attention_proof.prove_attention` has proved the
closed forms equal to what the engine derives, symbolically, at small widths
(:func:`symback.document.attention_proof.section` proves, then builds).
"""
from __future__ import annotations

import re

import sympy as sp

from ..matrix import RowNorm, Select, Softmax
from ..printing import Partial, Tex, latex
from .heads import Concat, ConcatT, RowMean

__all__ = ["Named", "attention_layers", "build", "norm_layers", "mask_of"]


class Named(sp.MatrixSymbol):
    """A matrix symbol of the section (Q_{2,h}, δ_{S_{2,1}}, ...) whose name is its LaTeX."""

    def _latex(self, printer, exp=None):
        return self.name


def attention_layers(g) -> list[tuple[int, int]]:
    """(layer number, heads) of every attention layer of a graph built by ``sb.Attention``."""
    found = []
    for p in g.param_names:
        m = re.fullmatch(r"Wq(\d+)", p)
        if not m:
            continue
        l = m.group(1)
        heads = sum(1 for n in g.node_names if re.fullmatch(rf"P{l}_\d+", n)) or 1
        tags = [f"{l}"] if heads == 1 else [f"{l}_{k}" for k in range(1, heads + 1)]
        # a graph written by hand that only borrows the names is not shown head by head
        needed = [f"{n}{l}" for n in ("Q", "K", "V", "Att")] + [f"{n}{t}" for t in tags for n in ("Z_P", "P", "O")]
        if all(n in g._expr for n in needed) and isinstance(g.expr(f"P{tags[0]}"), Softmax):
            found.append((int(l), heads))
    return found


def norm_layers(g) -> list[str]:
    """The nodes Ĥ = norm(H) whose row-wise δ the section writes (those the backward pass reaches):
    layer norms, whose rows are a sample's; a batch norm's rows are columns over the batch (a
    symbolic count), and its own section writes them."""
    return [n for n in g.node_names if isinstance(g.expr(n), RowNorm)
            and all(k.is_Integer for k in g.expr(n).shape)]


class _Head:
    """The symbols of head `k` (a number, or "h" for the generic head) of attention layer `l`."""

    def __init__(self, d, l: int, k, heads: int):
        g = d.graph
        self.g, self.l, self.k, self.heads = g, l, k, heads
        Q = g.symbol(f"Q{l}")
        T, width = Q.shape
        self.w = width // heads
        tag = f"{l}" if heads == 1 else f"{l},{k}"
        node = f"{l}" if heads == 1 else f"{l}_{k}"
        shape = {"Q": (T, self.w), "K": (T, self.w), "V": (T, self.w), "S": (T, T), "P": (T, T), "O": (T, self.w)}
        self.sym = {n: Named(f"{n}_{{{tag}}}", *s) for n, s in shape.items()}
        self.delta = {n: Named(rf"\delta_{{{n}_{{{tag}}}}}", *s) for n, s in shape.items()}
        generic = k == "h"
        if heads == 1:
            self.E = None
        elif generic:
            self.E = Named("E_{h}", width, self.w)
        else:
            self.E = Select.of(int(width), (k - 1) * self.w, self.w)
        self.meanings = {}
        if not generic:
            cols = (lambda M: M) if self.E is None else (lambda M: sp.MatMul(M, self.E))   # noqa: E731
            for n in "QKV":
                self.meanings[self.sym[n]] = cols(g.symbol(f"{n}{l}"))
                self.meanings[self.delta[n]] = cols(_delta(d, f"{n}{l}"))
            for n, graph_name in (("S", f"Z_P{node}"), ("P", f"P{node}"), ("O", f"O{node}")):
                self.meanings[self.sym[n]] = g.symbol(graph_name)
                self.meanings[self.delta[n]] = _delta(d, graph_name)

    def cols(self, M):
        """M's block of this head's columns (M itself for one head)."""
        if self.E is None:
            return M
        return sp.MatMul(*(M.args if isinstance(M, sp.MatMul) else (M,)), self.E)


def _delta(d, n):
    from ..engine import delta
    return delta(d.graph, n)


DK = sp.Symbol("d_k", positive=True)


def _width_symbol(l: int, widths: set) -> sp.Symbol:
    """The head width's symbol in layer l's lines: d_k where every attention layer's heads have
    one width, else d_{k,l} (the document's names give a symbol one value)."""
    return DK if len(widths) == 1 else sp.Symbol(f"d_{{k,{l}}}", positive=True)


def _head_rows(d, l, hd: _Head, mask, dk) -> dict:
    """Head h's lines: {"forward": [chain, ...], "backward": [chain, ...]}; dk: the width's symbol."""
    g = d.graph
    s, dl = hd.sym, hd.delta
    scale = 1 / sp.sqrt(dk)
    T = s["P"].shape[0]
    one_w, one_T = sp.OneMatrix(hd.w, 1), sp.OneMatrix(1, T)
    forward = []
    if hd.E is not None:
        forward += [[s[n], hd.cols(g.symbol(f"{n}{l}"))] for n in "QKV"]
    forward += [[s["S"], sp.MatMul(scale, s["Q"], s["K"].T)],
                [s["P"], Softmax(s["S"], mask)],
                [s["O"], sp.MatMul(s["P"], s["V"])]]
    Wo = g.symbol(f"Wo{l}")
    d_att = _delta(d, f"Att{l}")
    softmax_form = sp.HadamardProduct(s["P"], sp.MatAdd(dl["P"], -sp.MatMul(
        sp.HadamardProduct(dl["P"], s["P"]), sp.OneMatrix(T, 1), one_T)))
    flash_form = sp.HadamardProduct(s["P"], sp.MatAdd(dl["P"], -sp.MatMul(
        sp.HadamardProduct(dl["O"], s["O"]), one_w, one_T)))
    backward = [[dl["O"], hd.cols(sp.MatMul(d_att, Wo.T))],
                [dl["V"], sp.MatMul(s["P"].T, dl["O"])],
                [dl["P"], sp.MatMul(dl["O"], s["V"].T)],
                [dl["S"], softmax_form, flash_form],
                [dl["Q"], sp.MatMul(scale, dl["S"], s["K"])],
                [dl["K"], sp.MatMul(scale, dl["S"].T, s["Q"])]]
    return {"forward": forward, "backward": backward}


def _layer(d, l: int, heads: int, names: dict, apps, widths: set) -> dict:
    """One attention layer's part of the section (widths: every attention layer's head width)."""
    g = d.graph
    mask = mask_of(g, l, heads)
    generic = _Head(d, l, "h", heads)
    concrete = [_Head(d, l, k, heads) for k in range(1, heads + 1)]
    for hd in concrete:
        names.update(hd.meanings)
    dk = _width_symbol(l, widths)
    names[dk] = sp.Integer(generic.w)
    shown = _head_rows(d, l, generic, mask, dk)
    checked = [_head_rows(d, l, hd, mask, dk) for hd in concrete]

    def rows(part):
        return [_generic_row(chain, [c[part][i] for c in checked], apps)
                for i, chain in enumerate(shown[part])]
    A = next(g.symbol(p) for p in g.parents(f"Q{l}") if p != f"Wq{l}")
    att, L = g.symbol(f"Att{l}"), g.symbol(d.loss_name)
    d_att = _delta(d, f"Att{l}")
    outputs = [hd.sym["O"] for hd in concrete]
    # the graph's own definition, its O nodes written as the section writes them
    own = g.expr(f"Att{l}").xreplace({hd.meanings[hd.sym["O"]]: hd.sym["O"] for hd in concrete})
    joined = [_row([att, sp.MatMul(Concat(*outputs), g.symbol(f"Wo{l}")), own], apps)] if heads > 1 else []
    gathered = [_row([_delta(d, f"{n}{l}"), Concat(*[hd.delta[n] for hd in concrete])], apps)
                for n in "QKV"] if heads > 1 else []
    grads = [_row([Partial(L, g.symbol(f"W{n.lower()}{l}")), sp.MatMul(A.T, _delta(d, f"{n}{l}"))], apps)
             for n in "QKV"]
    grads.append(_row([Partial(L, g.symbol(f"Wo{l}")), sp.MatMul(
        ConcatT(*outputs) if heads > 1 else outputs[0].T, d_att)], apps))
    return {"layer": l, "heads": heads, "width": generic.w, "dk": Tex(latex(dk)), "causal": mask == "causal",
            "input": Tex(latex(A)), "forward": rows("forward"), "joined": joined,
            "backward": rows("backward"), "gathered": gathered, "grads": grads}


def _row(chain, apps) -> dict:
    return {"lhs": Tex(latex(chain[0], applications=apps)),
            "rhs": Tex(" = ".join(latex(e, applications=apps) for e in chain[1:])),
            "sympy": {"chain": chain}}


def _generic_row(chain, instances, apps) -> dict:
    """A line shown for the generic head (or row); the certificate checks each instance."""
    row = _row(chain, apps)
    row["sympy"] = {"generic": chain}
    row["instances"] = [{"sympy": {"chain": c}} for c in instances]
    return row


def _norm_rows(d, n, names: dict, apps) -> dict | None:
    """Layer norm Ĥ = norm(H): δ_Ĥ from δ_N, and row r of what δ_H receives through the norm."""
    g = d.graph
    H = g.expr(n).arg
    parent = next((p for p in g.parents(n) if g.symbol(p) == H), None)
    if parent is None or (n, parent) not in d.local:
        return None
    hat, T, width = g.symbol(n), int(H.shape[0]), int(H.shape[1])
    vjp = d.local[(n, parent)]
    r, _ = g.expr(n).rstd()

    def line(i):
        generic = i == "r"          # row r, as the cost's rows are (c_r): i counts samples
        row = (lambda M: Named(M, 1, width)) if generic else None   # noqa: E731
        if generic:
            lhs = Named(rf"\left(\delta_{{{latex(hat)}}} \, \partial {latex(hat)} / \partial {latex(H)}\right)_{{r}}",
                        1, width)
            dh, h, inv = row(r"\delta_{\hat{h}_{r}}"), row(r"\hat{h}_{r}"), Named(r"\sigma_{r}^{-1}", 1, 1)
        else:
            lhs, dh = _slice(vjp, i, width), _slice(_delta(d, n), i, width)
            h, inv = _slice(hat, i, width), _slice(r, i, 1)
        closed = sp.MatMul(inv, sp.MatAdd(dh, -sp.MatMul(RowMean(dh), sp.OneMatrix(1, width)),
                                          -sp.MatMul(RowMean(sp.HadamardProduct(dh, h)), h)))
        return [lhs, closed]
    row = _generic_row(line("r"), [line(i) for i in range(T)], apps)
    return {"node": Tex(latex(hat)), "input": Tex(latex(H)), "rows": T, "row": row}


def _slice(M, i, width):
    return sp.MatrixSlice(M, (i, i + 1, 1), (0, width, 1))


def mask_of(g, l, heads):
    """The mask ('causal' or None) of attention layer l's softmax."""
    return g.expr(f"P{l}" if heads == 1 else f"P{l}_1").mask


def build(d, names: dict, apps=()) -> dict:
    """The section's keys for a network with attention layers, without the proof."""
    g = d.graph
    layers = attention_layers(g)
    norms = [r for r in (_norm_rows(d, n, names, apps) for n in norm_layers(g)) if r is not None]
    widths = {int(g.symbol(f"Q{l}").shape[1]) // h for l, h in layers}
    return {"layers": [_layer(d, l, h, names, apps, widths) for l, h in layers], "norms": norms}
