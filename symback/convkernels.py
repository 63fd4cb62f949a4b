"""A convolution's bias and backward products inside the library's convolution kernels: two
passes over the statements.

A Conv2d layer's pre-activation is Z = Kᵀ unfold(A) + bᵀ𝟏ᵀ (:mod:`symback.layers`), and its
bias's δ is Σ over the samples and the output positions of δ_Z.  The lowering writes them as a
``conv`` statement then an addition of ``bᵀ`` (a second pass over Z and a second array), and as
a transpose summed over the samples then over the positions (two reductions).  PyTorch's own
convolution takes the bias (its kernel starts each output from it), and one reduction over
both axes gives the bias's δ.  :func:`conv_biases` rewrites exactly these statements:

* ``Z = conv(A, K) + bᵀ``, the convolution read only there, b a 1 × C_out row: ``conv_bias``;
* ``Σ_samples Σ_samples-of-(Dᵀ)`` — ``bsum(bsum(transpose(D)))`` with D (n, C_out, positions),
  each read only there: ``bias_sum`` (D summed over axes 0 and 2).

The same sums: each entry is what the statements computed (the order of one sum's terms
aside).  Used by printers that name the ops (``printer.conv_bias``): torch.

:func:`conv_grads` gives one convolution's two backward products of one δ, the input's
fold(K δ) (``conv_igrad``) and the kernel's Σᵢ unfold(Aᵢ) δᵢᵀ (``conv_wgrad``), as one
``conv_grads`` statement: the library's convolution backward computes both in one call, as
autograd calls it (``printer.conv_grads``: torch).
"""
from __future__ import annotations

from collections import Counter

import sympy as sp

from .lowering import Stmt

__all__ = ["CONV_OPS", "KINDS", "conv_biases", "conv_grads"]

#: the statements these passes make
CONV_OPS = ("conv_bias", "bias_sum", "conv_grads")


def conv_biases(stmts: list[Stmt], fn) -> list[Stmt]:
    """The statements with each convolution's bias added by the convolution kernel and each
    bias's δ one reduction (see the module's docstring); the statements these replace go
    unread, and the next selection drops them.  A pass of :mod:`symback.passes`, for a
    printer with ``conv_bias``."""
    if not getattr(fn.printer, "conv_bias", False):
        return stmts
    shapes, keep = fn.low.shapes, fn.keep
    made = {st.target: st for st in stmts}
    reads = Counter(s for st in stmts for s in st.reads())

    def only(sym, op):          # the statement that made sym, when it is `op` read once
        st = made.get(sym)
        return st if st is not None and st.op == op and reads[sym] == 1 and sym not in keep else None
    out = []
    for st in stmts:
        if st.op == "let" and isinstance(st.args[0], sp.Add) and len(st.args[0].args) == 2:
            for t, bt in (st.args[0].args, st.args[0].args[::-1]):
                conv, row = only(t, "conv"), made.get(bt)
                if conv is not None and row is not None and row.op == "transpose" \
                        and tuple(shapes.get(row.args[0], ())) == (1, shapes[t][-2]):
                    st = Stmt(st.target, "conv_bias", (conv.args[0], conv.args[1], row.args[0], conv.args[2]),
                              st.shape)
                    break
        elif st.op == "bsum" and len(st.shape) == 1:
            inner = only(st.args[0], "bsum")
            flip = only(inner.args[0], "transpose") if inner is not None else None
            d = flip.args[0] if flip is not None else None
            if d is not None and len(shapes.get(d, ())) == 3 and shapes[d][-2] == st.shape[0]:
                st = Stmt(st.target, "bias_sum", (d,), st.shape)
        out.append(st)
    return out


def conv_grads(stmts: list[Stmt], fn) -> list[Stmt]:
    """The statements with each convolution's ``conv_igrad`` and ``conv_wgrad`` of one δ (the
    same geometry) as one ``conv_grads`` statement, where the first of them was, and the two
    values its items; unchanged where a convolution has only one of them (a first layer's
    input needs no δ).  In LeNet's torch step (same process) 0.97–0.99× the two calls.  A pass
    of :mod:`symback.passes`, for a printer with ``conv_grads``."""
    if not getattr(fn.printer, "conv_grads", False):
        return stmts
    wgrads = {_grads_of(st): st for st in stmts if st.op == "conv_wgrad"}
    igrads = {_grads_of(st): st for st in stmts if st.op == "conv_igrad"}
    both, pairs, out = wgrads.keys() & igrads.keys(), {}, []
    for st in stmts:
        key = _grads_of(st)
        if key not in both:
            out.append(st)
            continue
        if key not in pairs:    # the first of the two: its operands (the image, δ, K) are made by now
            pairs[key] = pair = fn.low.fresh()
            fn.low.shapes[pair] = st.shape         # (a pair: never an operand of a formula)
            out.append(Stmt(pair, "conv_grads", (wgrads[key].args[0], key[0], igrads[key].args[1], key[1]),
                            st.shape))
        out.append(Stmt(st.target, "pair_item", (pairs[key], 0 if st.op == "conv_igrad" else 1), st.shape))
    return out


def _grads_of(st: Stmt):
    """(δ, geometry) of a convolution's backward product, else None."""
    if st.op == "conv_wgrad":
        return st.args[1], st.args[2]
    return (st.args[0], st.args[2]) if st.op == "conv_igrad" else None


def _code(c, st):
    """The printing of one statement these passes made (symback.straightline's KINDS)."""
    if st.op == "conv_bias":
        return lambda: c.p.op_conv_bias(*[c.N(a) for a in st.args[:3]], st.args[3])
    if st.op == "conv_grads":
        return lambda: c.p.op_conv_grads(*[c.N(a) for a in st.args[:3]], st.args[3])
    return lambda: c.p.op_bias_sum(c.N(st.args[0]))


#: statement kind -> its printing, for symback.straightline's KINDS
KINDS = {op: _code for op in CONV_OPS}
