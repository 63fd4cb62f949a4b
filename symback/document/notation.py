"""Notations a reader chooses: one Derivation, printed three ways.

A notation is a renaming and a reordering applied when printing — a
symbol map and a few printer settings (:func:`symback.printing.notation_settings`)
— never a second derivation:

* ``"matrix"`` (the default): the row-major form the engine derives,
  ``Z1 = X W1 + 1 b1``, every product a valid matrix product with its
  transposes shown;
* ``"lecture"``: seed 004's notation — the loss is J, layer indices are
  superscripts numbered as in the notes (a⁽¹⁾ = X, z⁽ˡ⁺¹⁾ = a⁽ˡ⁾W⁽ˡ⁾,
  a⁽ˡ⁾ = σ(z⁽ˡ⁾)), and the punchline lists its factors in the notes'
  order, the matrix layout stated in words;
* ``"nielsen"``: Nielsen's column vectors, z = w a + b for one sample
  (every row-major formula transposed, w = Wᵀ), and the four equations
  BP1–BP4.
"""
from __future__ import annotations

import re
from typing import NamedTuple

import sympy as sp
from sympy.matrices.expressions.applyfunc import ElementwiseApplyFunction

from ..errors import OutputError
from ..matrix import BATCH, FPrime, RowCost, Softmax
from ..printing import Chain, latex
from .factors import GENERIC, coefficient, edge_expr, notes_chain

__all__ = ["NOTATIONS", "Notation", "notation", "columns", "punchline_forms", "layer_names"]

NOTATIONS = ("matrix", "lecture", "nielsen")

_LAYER = re.compile(r"(Z|A|W|K|b)(\d+)")   # K: a convolution's kernel, numbered as W


class Notation(NamedTuple):
    """A notation: its name, the printer settings that realise it, and the loss's letter."""

    name: str
    settings: dict
    loss: str          # the name the batch loss prints as (its key in the symbol map)


def layer_names(d) -> dict:
    """Layer index l of each mlp-style node name (Z1, A1, W1, b1; Yhat is the last layer's output)."""
    out = {}
    for n in d.graph.order:
        m = _LAYER.fullmatch(n)
        if m:
            out[n] = (m.group(1), int(m.group(2)))
    return out


def notation(d, name: str | None) -> Notation:
    """The printer settings of notation `name` for derivation `d` (see the module docstring)."""
    name = name or "matrix"
    if name not in NOTATIONS:
        raise OutputError(f"unknown notation {name!r}; use one of {', '.join(NOTATIONS)}")
    g, layout = d.graph, d.layout
    if name == "matrix":
        return Notation(name, {}, "L")
    layers = layer_names(d)
    # the output layer's index: its W, b or Z, or one past the last hidden A (a tied output layer
    # has no W of its own: counting W's alone named its output a² like the hidden layer's)
    depth = max([l for k, l in layers.values() if k != "A"] + [l + 1 for k, l in layers.values() if k == "A"],
                default=0)
    names, tnames = {}, {}
    if name == "lecture":
        # seed 004: J the loss; W^{(l)} between a^{(l)} and z^{(l+1)}, a^{(1)} = X
        names["L"] = "J"
        if layout.indexed_cost:
            # J is the batch cost; one sample's cost is J^{(i)}, never J as well
            names[d.loss_name] = "J^{(i)}"
        for n, (kind, l) in layers.items():
            letter = {"Z": "z", "A": "a", "W": "W", "K": "K", "b": "b"}[kind]
            idx = l if kind in "WKb" else l + 1
            names[n] = rf"{letter}^{{({idx})}}"
            tnames[n] = rf"{letter}^{{({idx})\top}}"
            if kind == "Z":
                names[f"delta_{n}"] = rf"\delta^{{({idx})}}"
        names["A0"] = r"a^{(1)}"
        names.update(layout.data_letters)
        return Notation(name, {"names": names, "tnames": tnames}, "L")
    # nielsen: input layer 1, w^{l} = W_{l-1}^T, one sample a column
    if not layout.sample_as_column:
        return Notation(name, {"names": {"L": "C"}}, "L")
    last = depth + 1
    # δ^L is ∂C/∂z^L: the output's a^L takes the name only where no z^L precedes it (an identity
    # output); beside a softmax's z^L both were δ^L, and ∂a^L/∂z^L's map read δ^L ↦ … δ^L
    output_z = any(kind == "Z" and l + 1 == last for kind, l in layers.values())
    for n in g.order:
        if not g.shape(n):      # a number (the cost C): no column to name
            continue
        if n in layers:
            kind, l = layers[n]
            letter = {"Z": "z", "A": "a", "W": "w", "K": "k", "b": "b"}[kind]
            col = rf"{letter}^{{{l + 1}}}"
        elif n == "Yhat":
            col = rf"a^{{{last}}}"
        else:
            col = {"X": "x", "Y": "y", "C": "C_x"}.get(n, latex(sp.Symbol(n.lower())))   # avg upright, one word
        tnames[n], names[n], names[f"col_{n}"] = col, _transpose_of(col), col
        if g.kind(n) not in ("input", "target"):
            dl = rf"\delta^{{{layers[n][1] + 1}}}" if n in layers and layers[n][0] == "Z" else (
                rf"\delta^{{{last}}}" if n == "Yhat" and not output_z else rf"\delta_{{{col}}}")
            tnames[f"delta_{n}"], names[f"delta_{n}"] = dl, _transpose_of(dl)
    # the figure's bare δ is a column too: (δ ↦ δ xᵀ) as in the local derivatives, not (δᵀ ↦ δᵀ xᵀ)
    tnames[GENERIC], names[GENERIC] = r"\delta", _transpose_of(r"\delta")
    names["L"] = "C"
    return Notation(name, {"names": names, "tnames": tnames, "columns": columns}, "L")


def _transpose_of(col: str) -> str:
    """xᵀ, or (a^{3})ᵀ when the name already carries a superscript."""
    return rf"\left({col}\right)^{{\top}}" if "^" in col else rf"{col}^{{\top}}"


# ------------------------------------------------------------- column form
def columns(e):
    """A row-major matrix formula for one sample, transposed: each row becomes a column.

    (X W + 1 b)ᵀ = Wᵀ xᵀ + bᵀ with m = 1 (the column of ones is the number 1);
    transposes move onto the symbols, where the notation's map names them.
    """
    return _transposed(_one_sample(e))


def _one_sample(e):
    """e with m = 1 (xreplace would rebuild f(Z) through SymPy's constructor: see _transposed)."""
    if e == BATCH:
        return sp.S.One
    if e.is_Atom or not e.has(BATCH):
        return e
    args = [_one_sample(a) for a in e.args]
    if isinstance(e, ElementwiseApplyFunction):
        return sp.MatrixExpr.__new__(ElementwiseApplyFunction, *args)
    if isinstance(e, sp.MatMul) and args[0] == 1:     # (1/m)·M at m = 1 is M, not "1 (M)"
        return args[1] if len(args) == 2 else sp.MatMul(*args[1:])
    return e.func(*args)


def _transposed(e):
    if isinstance(e, sp.Transpose):
        return e.arg
    if isinstance(e, sp.MatMul):
        coeff, rest = e.as_coeff_mmul()
        factors = [_transposed(a) for a in reversed(rest.args) if not _unit_ones(a)]
        if not factors:         # (1/m)·𝟏 with m = 1: a 1×1 one, printed as the number (∂C/∂C_x = 1, not "1 𝟏")
            return sp.OneMatrix(1, 1) if coeff == 1 else sp.MatMul(coeff, sp.OneMatrix(1, 1))
        body = factors[0] if len(factors) == 1 else sp.MatMul(*factors)
        return body if coeff == 1 else sp.MatMul(coeff, body)
    if isinstance(e, sp.MatAdd):
        return sp.MatAdd(*[_transposed(a) for a in e.args])
    if isinstance(e, sp.HadamardProduct):
        return sp.HadamardProduct(*[_transposed(a) for a in e.args])
    if isinstance(e, FPrime):
        return FPrime(e.function, _transposed(e.arg))
    if isinstance(e, ElementwiseApplyFunction):
        # built directly: SymPy's constructor calls f on a 1×1 argument (one output, one
        # sample), and a symback activation of a matrix builds the same object again, forever
        return sp.MatrixExpr.__new__(ElementwiseApplyFunction, e.function, _transposed(e.expr))
    if isinstance(e, Softmax):
        return Softmax(_transposed(e.arg))
    if isinstance(e, RowCost):
        return e              # one sample's cost is a number; its printer turns its arguments
    if isinstance(e, sp.OneMatrix):
        return sp.OneMatrix(*reversed(e.shape))       # 𝟏ᵀ turned is 𝟏, not (𝟏ᵀ)ᵀ
    if isinstance(e, sp.MatrixExpr):
        return sp.Transpose(e)
    return e


def _unit_ones(a) -> bool:
    return isinstance(a, sp.OneMatrix) and a.shape == (1, 1)


# ------------------------------------------------------------- the punchline
def punchline_forms(d, path):
    """(the notes' shorthand, the valid matrix product) of one path, or None.

    The shorthand lists the start δ (for one sample, δ_C = 1) and each step
    back's coefficient in the notes' order (Ŷ − Y, Wᵀ, σ'(Z), ..., Xᵀ);
    the product applies each coefficient on its own side (δ Wᵀ, δ ⊙ σ'(Z),
    Xᵀ δ), so it is a valid matrix formula equal to the gradient.
    """
    nc = notes_chain(d, path)
    if nc is None:
        return None
    node, first, _ = nc
    start = max(k for k, f in enumerate(path) if f.wrt == node)
    value, short = first, [first]
    for f in path[start + 1:]:
        how, M = coefficient(edge_expr(d, f.of, f.wrt))
        if how == "identity" or (how == "hadamard" and _is_one(M)):
            continue
        value = {"right": lambda: sp.MatMul(value, M), "left": lambda: sp.MatMul(M, value),
                 "hadamard": lambda: sp.HadamardProduct(value, M), "times": lambda: value * M}[how]()
        short.append(M)
    return Chain(*short), value


def _is_one(M) -> bool:
    from .factors import _is_one as one
    return one(M)
