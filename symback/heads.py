"""Attention's heads computed all at once: the per-head statements regrouped over a heads axis.

Multi-head attention's head h uses columns h·w … (h+1)·w of Q, K and V (DESIGN.md), so the
lowering computes each head with its own statements: a column slice, the scores, a softmax,
a product with V, and as many in the backward pass.  Eager PyTorch pays per call, and
autograd's ``scaled_dot_product_attention`` takes all heads at once in an (n, heads, T, w)
layout.  :func:`group_heads` regroups the statements into that layout, as a pass over the
statements (:class:`~symback.lowering.Stmt`):

* a batched matrix M whose column blocks of one width w are sliced (Q_h = M[:, :, h·w:(h+1)·w],
  or row blocks of Mᵀ) is *split*: S = M viewed as (n, T, H, w), heads moved to axis 1 (a
  view); block h is S[:, h] (transposed for Mᵀ's rows);
* H statements that apply the same operation (a product, the masked scores, a softmax and
  its VJP, a mask, one element-wise formula) to block h of the same split values, one per
  head h = 0 … H−1, become one statement over the heads axis; each head's value is then a
  view of its result (read only where something else still reads one head);
* the heads' results joined as columns again (a ``concat`` of the H blocks in order, or
  the sum of the H blocks each padded with zeros into its columns) become one *merge*:
  the (n, H, T, w) value back as (n, T, H·w).

Nothing new is computed: every entry of a grouped statement is the entry the per-head
statement computed (the same sums), the views are the same blocks, and a grouping is made
only when the statements are the same operation on the blocks of the same matrices for
every head.  Only printers without in-place formulas use it (the views alias their source).
"""
from __future__ import annotations

from collections import Counter, defaultdict

import sympy as sp

from .lowering import Stmt, Tr

__all__ = ["HEAD_OPS", "KINDS", "VIEWS", "group_heads", "regroup"]

#: the operations over a heads axis, element-wise formulas aside (those stay ``let``)
GROUPED = ("matmul", "masked_scores", "softmax", "softmax_vjp", "mask")
#: the statements this pass makes, for the printer (:func:`head_code`)
HEAD_OPS = ("split_heads", "head", "merge_heads") + tuple(f"heads_{op}" for op in GROUPED)
#: the statements of this pass whose value may share its operand's memory (a split that is not
#: copied, a head, a merge of heads laid out side by side already): the printing's liveness
#: must not reuse the operand's buffer while the view is read
VIEWS = ("split_heads", "head", "merge_heads")


def _batched(shapes, x) -> bool:
    return len(shapes.get(x, ())) == 3


def _splits(stmts, low):
    """Column blocks of one width of a batched matrix M (and row blocks of Mᵀ): the split of
    M into heads (one ``split_heads`` statement per (M, w), placed before the first block)
    and each block's (split, head, transposed)."""
    shapes, made = low.shapes, {st.target: st for st in stmts}
    member, split, before = {}, {}, defaultdict(list)
    for i, st in enumerate(stmts):
        if st.op != "slice" or not _batched(shapes, st.args[0]):
            continue
        parent, rows, cols = st.args
        if rows == (0, None, 1) and cols[1] is not None and cols[2] == 1:
            m, span, tr = parent, cols, False                           # M[:, h·w:(h+1)·w]
        elif cols == (0, None, 1) and rows[1] is not None and rows[2] == 1 \
                and parent in made and made[parent].op == "transpose" and _batched(shapes, made[parent].args[0]):
            m, span, tr = made[parent].args[0], rows, True              # Mᵀ[h·w:(h+1)·w, :]
        else:
            continue
        start, stop, _ = span
        w, d = stop - start, shapes[m][-1]
        if not isinstance(d, (int, sp.Integer)) or w <= 0 or d % w or start % w or d == w:
            continue
        if (m, w) not in split:
            s = low.fresh()
            d = int(d)
            shapes[s] = (shapes[m][0], d // w, shapes[m][1], w)
            split[(m, w)] = s
            before[i].append(Stmt(s, "split_heads", (m, d // w), shapes[s]))
        member[st.target] = (split[(m, w)], start // w, tr)
    return member, before


def _signature(st, member, shapes):
    """(head, key) when `st` is an operation on blocks of split values, else None: the key is
    the same for the statements that are the same operation on the same splits' blocks."""
    if st.op == "let":
        expr = st.args[0]
        syms = expr.free_symbols if isinstance(expr, sp.Basic) else set()
        found = [member.get(s) for s in syms]
        if not syms or None in found or any(tr for _, _, tr in found) or len({h for _, h, _ in found}) != 1 \
                or len({shapes[g][1] for g, _, _ in found}) != 1:
            return None
        grouped = expr.xreplace({s: g for s, (g, _, _) in zip(syms, found)})
        return found[0][1], ("let", grouped)
    if st.op not in GROUPED:
        return None
    heads, key = set(), [st.op]
    for a in st.args:
        sym, flip = (a.sym, True) if isinstance(a, Tr) else (a, False)
        if isinstance(sym, sp.Symbol):
            if sym not in member:
                return None
            g, h, tr = member[sym]
            heads.add(h)
            key.append(Tr(g) if tr != flip else g)
        elif isinstance(sym, sp.Basic) and sym.free_symbols:
            return None
        else:
            key.append(a)                     # a number (the scores' scale), the mask's kind
    if len(heads) != 1 or len({shapes[k.sym if isinstance(k, Tr) else k][1] for k in key[1:]
                                   if isinstance(k, (Tr, sp.Symbol))}) != 1:
        return None
    return heads.pop(), tuple(key)


def _merged(blocks, shapes):
    """The split whose H blocks, heads 0 … H−1 in order, `blocks` are, else None."""
    if None in blocks or any(tr for _, _, tr in blocks) or len({g for g, _, _ in blocks}) != 1:
        return None
    g = blocks[0][0]
    return g if [h for _, h, _ in blocks] == list(range(shapes[g][1])) else None


def _padded_sums(stmts, member, shapes):
    """Sums p_0 + … + p_{H−1} in a formula where p_h is block h of one split padded with
    zeros into columns h·w … (h+1)·w of the whole width (the heads' δ put back in place):
    {sum: its split}; the sum is then the split merged back."""
    padded = {}
    for st in stmts:
        if st.op == "pad" and st.args[0] in member and st.args[1] == -1:
            g, h, tr = member[st.args[0]]
            _, H, _, w = shapes[g]
            if not tr and st.args[2] == h * w and st.args[3] == (H - h - 1) * w:
                padded[st.target] = (g, h, tr)
    out = {}
    for st in stmts:
        if st.op == "let" and isinstance(st.args[0], sp.Basic):
            for add in st.args[0].atoms(sp.Add):
                g = _merged(sorted((padded.get(t) for t in add.args), key=lambda b: b and b[1]), shapes) \
                    if all(t in padded for t in add.args) else None
                if g is not None:
                    out[add] = g
    return out


def group_heads(stmts: list[Stmt], fn) -> list[Stmt]:
    """The statements with each head-by-head operation of attention done once over a heads
    axis (see the module's docstring); unchanged where no column blocks are sliced.  The
    per-head statements left unread (slices, views, pads) go at the next selection.  A pass
    of :mod:`symback.passes`, for a printer with ``heads`` in its kernels."""
    if "heads" not in fn.printer.kernels:
        return stmts
    return regroup(stmts, fn.low)


def regroup(stmts: list[Stmt], low) -> list[Stmt]:
    """:func:`group_heads`'s regrouping, whatever the printer (:mod:`symback.flash` reads the
    grouped statements); `low` gives the shapes and fresh names."""
    member, before = _splits(stmts, low)
    if not member:
        return stmts
    shapes, stmts = low.shapes, list(stmts)
    changed = True
    while changed:                  # a head's softmax reads its scores: one layer per round
        changed = False
        found = defaultdict(dict)                       # key -> {head: [statement indices]}
        for i, st in enumerate(stmts):
            if st.target not in member:
                sig = _signature(st, member, shapes)
                if sig is not None:
                    found[sig[1]].setdefault(sig[0], []).append(i)
        for key, heads in found.items():
            H = _heads(key, shapes)
            if sorted(heads) != list(range(H)) or any(len(ix) != 1 for ix in heads.values()):
                continue
            first = min(ix[0] for ix in heads.values())
            one = stmts[heads[0][0]]
            g = low.fresh()
            shapes[g] = (one.shape[0], H, *one.shape[1:])
            op, args = ("let", key[1:]) if key[0] == "let" else (f"heads_{key[0]}", key[1:])
            before[first].append(Stmt(g, op, tuple(args), shapes[g]))
            for h, (i,) in heads.items():
                st = stmts[i]
                stmts[i] = Stmt(st.target, "head", (g, h), st.shape)
                member[st.target] = (g, h, False)
            changed = True
    merges = _padded_sums(stmts, member, shapes)
    _copied_splits(before, stmts)
    out = []
    for i, st in enumerate(stmts):
        out += before.get(i, [])
        if st.op == "concat" and st.args[0] == -1 \
                and (g := _merged([member.get(x) for x in st.args[1:]], shapes)) is not None:
            st = Stmt(st.target, "merge_heads", (g,), st.shape)
        elif st.op == "let" and merges:
            subs = {}
            for add, g in merges.items():
                if st.args[0].has(add):
                    u = low.fresh()
                    shapes[u] = st.shape
                    out.append(Stmt(u, "merge_heads", (g,), st.shape))
                    subs[add] = u
            if subs:
                st = st._replace(args=(st.args[0].xreplace(subs),))
        out.append(st)
    return out


def _copied_splits(before, stmts):
    """A split read by more than one statement is copied once into its (n, H, T, w) layout:
    a batched product needs each operand's heads and samples on one strided axis, so a
    split that stays a view is copied by every product that reads it."""
    made = [st for group in before.values() for st in group] + stmts
    reads = Counter(s for st in made for a in st.args for s in ([a.sym] if isinstance(a, Tr) else [a])
                    if isinstance(s, sp.Symbol))
    for group in before.values():
        for k, st in enumerate(group):
            if st.op == "split_heads":
                group[k] = st._replace(args=(*st.args, reads[st.target] > 1))


def _heads(key, shapes) -> int:
    """The number of heads of the splits a grouping key reads."""
    syms = key[1].free_symbols if key[0] == "let" else [k.sym if isinstance(k, Tr) else k for k in key[1:]
                                                       if isinstance(k, (Tr, sp.Symbol))]
    return shapes[next(iter(syms))][1]


def _code(c, st):
    """The printing of one statement this pass made (symback.straightline's KINDS): the
    printer's ``op_`` methods of the operands' printed names."""
    a, p = st.args, c.p
    name = lambda x: p.op_btranspose(c.N(x.sym)) if isinstance(x, Tr) else c.N(x)    # noqa: E731
    if st.op == "split_heads":
        return lambda: p.op_split_heads(c.N(a[0]), a[1], st.shape[-1], a[2])
    if st.op == "head":
        return lambda: p.op_head(c.N(a[0]), a[1])
    if st.op == "merge_heads":
        return lambda: p.op_merge_heads(c.N(a[0]))
    if st.op == "heads_matmul":
        return lambda: p.op_bproduct(*[c.N(x.sym) if isinstance(x, Tr) else c.N(x) for x in a],
                                     *[isinstance(x, Tr) for x in a], True, True)
    if st.op == "heads_masked_scores":
        return lambda: p.op_heads_masked_scores(name(a[0]), name(a[1]), p._print(a[2]), *st.shape[-3:])
    if st.op == "heads_mask":
        return lambda: p.op_mask(name(a[0]), a[1], *st.shape[-2:])
    if st.op == "heads_softmax":
        return lambda: p.op_softmax(name(a[0]))
    return lambda: p.op_softmax_vjp(name(a[0]), name(a[1]))


#: statement kind -> its printing, for symback.straightline's KINDS
KINDS = {op: _code for op in HEAD_OPS}
