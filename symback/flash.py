"""Attention's heads by the library's fused attention kernels, where the derived statements are
exactly that computation.

Autograd's ``scaled_dot_product_attention`` (causal or not) runs torch's fused CPU kernel
``_scaled_dot_product_flash_attention_for_cpu`` and its ``_backward``; symback's derived
statements, grouped over a heads axis (:func:`symback.heads.regroup`), compute the same sums
one product at a time:

* forward: S = c·Q Kᵀ + M (M = 0 on and below the diagonal, −∞ above: ``heads_masked_scores``),
  or S = c·Q Kᵀ without a mask (a product, then c times it: the kernel's ``is_causal=False``),
  P = softmax(S) row by row, O = P V;
* backward from δO: δP = δO Vᵀ, δS = P ⊙ (δP − (δP ⊙ P)𝟏𝟏ᵀ) (``heads_softmax_vjp``), δV = Pᵀ δO,
  and δQ = c·(δS K), δK = c·(δSᵀ Q), each c·(the heads merged) in one formula.

:func:`flash_attention` prints them as the kernel (O and the rows' log-sum-exp, one pair) and
its backward (δQ, δK, δV, one triple), as :mod:`symback.passes`'s ``convolutions`` prints the
derived sums of a convolution as conv2d: the kernels compute the same sums (the exponentials
rescaled by each row's maximum, which cancels).  Only where every statement is that one and
nothing else reads S (nor Q Kᵀ unscaled), P, δP, δS or the unscaled δQ, δK; otherwise the statements are left as
they were.  Nothing is derived here.
"""
from __future__ import annotations

from collections import Counter

import sympy as sp

from .heads import regroup
from .lowering import Stmt, Tr, select

__all__ = ["KINDS", "flash_attention"]


def _sym(a):
    return a.sym if isinstance(a, Tr) else a


def flash_attention(stmts: list[Stmt], fn) -> list[Stmt]:
    """The statements with each multi-head attention's forward (and its backward, where
    the function has it) as the printer's fused kernels; unchanged where none is exactly that.
    A pass of :mod:`symback.passes`, for a printer with ``flash_attention`` in its kernels."""
    kernels = fn.printer.kernels
    if "flash_attention" not in kernels or not any(st.op in ("masked_scores", "heads_masked_scores", "softmax",
                                                                 "heads_softmax") for st in stmts):
        return stmts
    grouped = stmts if "heads" in kernels else regroup(stmts, fn.low)
    body = select(grouped, fn.keep)
    made = {st.target: st for st in body}
    readers: dict = {}
    for st in body:
        for a in st.args:
            s = _sym(a)
            if isinstance(s, sp.Symbol):
                readers.setdefault(s, []).append(st)
            elif isinstance(s, sp.Basic):
                for f in s.free_symbols:
                    readers.setdefault(f, []).append(st)
    found = [m for st in body if st.op == "heads_softmax" and (m := _match(st, made, readers, fn)) is not None]
    if not found:
        return stmts
    replace, place = {}, {}
    for m in found:
        low, shapes = fn.low, fn.low.shapes
        q, k, v, c, causal = m["q"], m["k"], m["v"], m["c"], m["causal"]
        pair = low.fresh()
        shapes[pair] = made[m["O"]].shape      # (a pair, as layer_norm's: never an operand of a formula)
        place[m["O"]] = [Stmt(pair, "flash_attention", (q, k, v, c, causal), shapes[pair])]
        replace[m["O"]] = Stmt(m["O"], "pair_item", (pair, 0), made[m["O"]].shape)
        if "dS" in m:
            grads = low.fresh()
            shapes[grads] = made[m["O"]].shape
            place[m["dP"]] = [Stmt(grads, "flash_attention_vjp", (m["dO"], q, k, v, pair, c, causal), shapes[grads])]
            replace[m["dV"]] = Stmt(m["dV"], "pair_item", (grads, 2), made[m["dV"]].shape)
            for name, i in (("dQ", 0), ("dK", 1)):
                h, scaled = m[name], m[name + "_scaled"]
                replace[h] = Stmt(h, "pair_item", (grads, i), made[h].shape)
                replace[scaled.target] = Stmt(scaled.target, "merge_heads", (h,), scaled.shape)
    out = []
    for st in body:
        out += place.get(st.target, [])
        out.append(replace.get(st.target, st))
    out = select(out, fn.keep)
    # a split read by the kernels stays a view (the kernels take any strides); copied only where
    # two other products read it (symback.heads' reason)
    reads = Counter(_sym(a) for st in out if not st.op.startswith("flash") for a in st.args)
    return [st._replace(args=(*st.args[:2], reads[st.target] > 1)) if st.op == "split_heads" else st
            for st in out]


def _only(sym, readers, op):
    """The one statement that reads `sym`, when it is an `op`, else None."""
    rs = readers.get(sym, [])
    return rs[0] if len(rs) == 1 and rs[0].op == op else None


def _match(softmax: Stmt, made, readers, fn):
    """The parts of one attention whose P is `softmax`'s value, when the statements around it
    are exactly the forward (and backward) stated in the module's docstring, else None."""
    P, S = softmax.target, softmax.args[0]
    found = _scores(made.get(S), made, readers, fn)
    if found is None:
        return None
    q, kt, c, causal = found
    if isinstance(q, Tr) or not isinstance(kt, Tr) or not _split(q, made) \
            or not _split(kt.sym, made) or not isinstance(c, sp.Basic) or c.free_symbols or not c.is_positive:
        return None
    if _only(S, readers, "heads_softmax") is not softmax or fn.low.shapes[q][2] != fn.low.shapes[kt.sym][2]:
        return None
    m = {"q": q, "k": kt.sym, "c": c, "causal": causal}
    prod, vjp, vt = [], [], []
    for st in readers.get(P, []):
        a = st.args
        if st.op == "heads_matmul" and a[0] == P and not isinstance(a[1], Tr) and _split(a[1], made):
            prod.append(st)
        elif st.op == "heads_softmax_vjp" and a[1] == P and a[0] != P:
            vjp.append(st)
        elif st.op == "heads_matmul" and a[0] == Tr(P) and not isinstance(a[1], Tr) and _split(a[1], made):
            vt.append(st)
        else:
            return None
    if len(prod) != 1:
        return None
    m["v"], m["O"] = prod[0].args[1], prod[0].target
    if not vjp and not vt:
        return m
    if len(vjp) != 1 or len(vt) != 1 or fn.low.shapes[m["v"]] != fn.low.shapes[q]:
        return None
    dS, dO = vjp[0].target, vt[0].args[1]
    dP = made.get(vjp[0].args[0])
    if dP is None or dP.op != "heads_matmul" or dP.args != (dO, Tr(m["v"])) \
            or _only(dP.target, readers, "heads_softmax_vjp") is not vjp[0]:
        return None
    m.update(dS=dS, dO=dO, dP=dP.target, dV=vt[0].target)
    rs = readers.get(dS, [])
    if len(rs) != 2:
        return None
    for st in rs:
        if st.op != "heads_matmul":
            return None
        if st.args == (dS, m["k"]):
            name = "dQ"
        elif st.args == (Tr(dS), q):
            name = "dK"
        else:
            return None
        merge = _only(st.target, readers, "merge_heads")
        scaled = merge and _only(merge.target, readers, "let")
        # exactly c·(the merged heads): the kernel's δQ, δK carry the scale
        if not scaled or scaled.args[0].free_symbols != {merge.target} \
                or sp.simplify(scaled.args[0] - c * merge.target) != 0 or merge.target in fn.keep:
            return None
        m[name], m[name + "_scaled"] = st.target, scaled
    return m if "dQ" in m and "dK" in m else None


def _scores(scores, made, readers, fn):
    """(q, kᵀ, c, causal) of attention's scores S = c·q kᵀ (+ the causal mask): a
    ``heads_masked_scores`` statement, or the product c times, read nowhere else; else None."""
    if scores is None:
        return None
    if scores.op == "heads_masked_scores" and len(scores.args) == 4 and scores.args[3] == "causal":
        return (*scores.args[:3], True)
    if scores.op != "let" or scores.target in fn.keep:
        return None
    c, raw = scores.args[0].as_independent(*scores.args[0].free_symbols, as_Add=False)
    product = made.get(raw)
    if product is None or product.op != "heads_matmul" or raw in fn.keep or _only(raw, readers, "let") is not scores:
        return None
    return (*product.args, c, False)


def _split(sym, made) -> bool:
    st = made.get(sym)
    return st is not None and st.op == "split_heads"


def _code(c, st):
    """The printing of one statement this pass made (symback.straightline's KINDS)."""
    a, p = st.args, c.p
    if st.op == "flash_attention":
        return lambda: p.op_flash_attention(*[c.N(x) for x in a[:3]], p._print(a[3]), a[4])
    return lambda: p.op_flash_attention_vjp(*[c.N(x) for x in a[:5]], p._print(a[5]), a[6])


#: statement kind -> its printing, for symback.straightline's KINDS
KINDS = {"flash_attention": _code, "flash_attention_vjp": _code}
