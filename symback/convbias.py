"""A convolution's bias inside the library's convolution kernels: a pass over the statements.

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
"""
from __future__ import annotations

from collections import Counter

import sympy as sp

from .lowering import Stmt

__all__ = ["BIAS_OPS", "KINDS", "conv_biases"]

#: the statements this pass makes
BIAS_OPS = ("conv_bias", "bias_sum")


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


def _code(c, st):
    """The printing of one statement this pass made (symback.straightline's KINDS)."""
    if st.op == "conv_bias":
        return lambda: c.p.op_conv_bias(*[c.N(a) for a in st.args[:3]], st.args[3])
    return lambda: c.p.op_bias_sum(c.N(st.args[0]))


#: statement kind -> its printing, for symback.straightline's KINDS
KINDS = {op: _code for op in BIAS_OPS}
