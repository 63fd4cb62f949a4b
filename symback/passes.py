"""Passes over one function's statements, between selection and printing.

A generated function (``_predict``, ``_grad``, ``_step``, ...) is a list of
:class:`~symback.lowering.Stmt`; each pass here takes that list and the
:class:`Function` it belongs to and returns a new list, in the order of
:data:`PASSES`:

1. ``copies``: aliases (x = y) and numbers (x = lr/m) substituted into their users, and
   ``t = X.T @ D; δ_W = t`` written ``δ_W = X.T @ D``;
2. ``convolutions``, ``conv_biases``, ``conv_grads``, ``pool_indices``, ``pool_masks``, ``masked_scores``,
   ``group_heads``: derived products read as the library's kernels, where the printer has them
   (:mod:`symback.convkernels`, :mod:`symback.poolkernels`, attention's heads at once:
   :mod:`symback.heads`);
   ``flash_attention``: causal multi-head attention, forward and backward, as the library's
   fused attention kernels where the grouped statements are exactly that (:mod:`symback.flash`);
   ``affine_norms``: a row norm's γ, β and their δ by the layer-norm kernels (:mod:`symback.affine_norm`);
3. ``cse``: :func:`sympy.cse` over every element-wise formula of the function;
4. ``schedule`` (``step``): a parameter's update right after the last statement that reads
   the parameter, its product just before it;
5. ``fuse_updates``: ``g = A.T @ D; W -= g`` as one update carrying its producer;
6. ``sum_products``: bias + A W, and sums of such products, as one ``addmm`` statement, for
   a printer that has the kernel (torch: ``addmm``, ``addmm_``);
7. ``shared_ones``: the row of ones that 1ᵀ D multiplies, fetched once (NumPy).

Printing (:mod:`symback.straightline`) only prints what is left.  A new pass is a function
``(body, fn) -> body`` added to :data:`PASSES`.
"""
from __future__ import annotations

from collections import Counter, defaultdict

import sympy as sp

from .convkernels import conv_biases, conv_grads
from .affine_norm import affine_norms
from .flash import flash_attention
from .heads import group_heads
from .poolkernels import pool_indices, pool_masks
from .lowering import EXPR_OPS, VIEWS, Stmt, Tr, select
from .matrix import BATCH

__all__ = ["Function", "PASSES", "select", "reads_of", "copies", "convolutions", "pool_indices", "pool_masks",
           "masked_scores", "reselect", "cse", "schedule", "fuse_updates", "sum_products", "shared_ones"]


class Function:
    """What the passes of one function share: its ``spec`` (a FunctionSpec), the lowering
    ``low`` its statements came from (shapes, fresh names), the ``printer``, and the symbols
    it must keep (its results and the updates' parameters and gradients)."""

    def __init__(self, spec, low, printer):
        self.spec, self.low, self.printer = spec, low, printer
        self.results = set(spec.results)
        # an update p -= g reads p: its load stays even when nothing else reads p (δ_p folded to 0)
        self.keep = self.results | {s for pg in spec.updates.values() for s in pg}


def reads_of(st: Stmt) -> set:
    """The symbols a statement reads, a fused update's producer's included."""
    if st.op == "update" and isinstance(st.args[0], Stmt):
        return st.reads() | reads_of(st.args[0])
    return st.reads()


def _read_counts(stmts) -> Counter:
    return Counter(s for st in stmts for s in reads_of(st))


def _propagate(stmts: list[Stmt], keep: set, shape_of) -> list[Stmt]:
    """Substitute aliases (x = y) and numbers (x = lr/m) into their users."""
    subs, out = {}, []
    expr_only = {}
    for st in stmts:
        for s in st.reads():
            if st.op not in EXPR_OPS:
                expr_only[s] = False
    for st in stmts:
        args = tuple(_sub(a, subs) for a in st.args)
        st = st._replace(args=args)
        if st.op == "let" and st.target not in keep:
            e = args[0]
            if isinstance(e, sp.Symbol) or (shape_of(e) == () and expr_only.get(st.target, True)):
                subs[st.target] = e
                continue
        out.append(st)
    return out


def _coalesce(stmts: list[Stmt], keep: set) -> list[Stmt]:
    """``t = X.T @ D; delta_W = t`` (t read nowhere else) as ``delta_W = X.T @ D``."""
    reads = {}
    for st in stmts:
        for s in st.reads():
            reads[s] = reads.get(s, 0) + 1
    index = {st.target: i for i, st in enumerate(stmts)}
    out = list(stmts)
    for i, st in enumerate(stmts):
        src = st.args[0] if st.op == "let" else None
        if isinstance(src, sp.Symbol) and src in index and reads.get(src) == 1 and src not in keep \
                and st.target in keep and out[index[src]] is not None:
            out[index[src]] = out[index[src]]._replace(target=st.target)
            out[i] = None
    return [st for st in out if st is not None]


def _sub(a, subs):
    if isinstance(a, Tr):
        return Tr(subs.get(a.sym, a.sym))
    if isinstance(a, sp.Basic) and subs and a.free_symbols & subs.keys():
        return a.xreplace(subs)
    return a


def cse(stmts: list[Stmt], fn) -> list[Stmt]:
    """Common subexpressions of all element-wise formulas, each computed once."""
    low = fn.low
    fresh = low.fresh
    where = [(i, j) for i, st in enumerate(stmts) if st.op in EXPR_OPS for j in range(len(st.args))
             if isinstance(st.args[j], sp.Basic)]
    exprs = [stmts[i].args[j] for i, j in where]
    if not exprs:
        return stmts
    # Conditions stay inside their Piecewise, where the printer reads a ReLU or a mask.
    rels = {}
    for e in exprs:
        for r in e.atoms(sp.core.relational.Relational):
            rels.setdefault(r, sp.Dummy())
    hidden = [e.xreplace(rels) for e in exprs]
    back = {v: k for k, v in rels.items()}
    reps, reduced = sp.cse(hidden, symbols=_symbols(fresh), order="none")
    temps, const = {}, {}
    for s, v in reps:           # in dependency order
        v = v.xreplace(back).xreplace(const)
        # a constant (log 3) stays in its formula, where the printer writes its value: as a
        # name it would reach a library function as a Python float (torch.sin(t) fails)
        if v.is_number:
            const[s] = v
        else:
            temps[s] = v
    reduced = [e.xreplace(back).xreplace(const) for e in reduced]
    new_args = {}
    for (i, j), e in zip(where, reduced):
        new_args.setdefault(i, list(stmts[i].args))[j] = e
    out, done = [], set()

    def need(expr):
        for s in sorted(expr.free_symbols & temps.keys(), key=str):
            if s not in done:
                need(temps[s])
                done.add(s)
                low.shapes[s] = low.shape_of(temps[s])
                out.append(Stmt(s, "let", (temps[s],), low.shapes[s]))
    for i, st in enumerate(stmts):
        if i in new_args:
            st = st._replace(args=tuple(new_args[i]))
            for a in st.args:
                if isinstance(a, sp.Basic):
                    need(a)
        out.append(st)
    return out


def _symbols(fresh):
    while True:
        yield fresh()


def _views(stmts) -> dict:
    """A view's symbol -> the array it shows (``t = b.T``, an alias ``t = b``): reading t reads b."""
    view_of: dict = {}
    for st in stmts:
        if (st.op in VIEWS or st.op == "let") and st.args and isinstance(st.args[0], sp.Symbol):
            view_of[st.target] = view_of.get(st.args[0], st.args[0])
    return view_of


def schedule(stmts: list[Stmt], fn) -> list[Stmt]:
    """Insert each in-place update after the last read of its parameter.

    Statements are ordered by keys (tuples) rather than moved in a list, and
    who reads or writes each symbol is indexed, so each update costs the size
    of its parameter's readers, not of the function (a 1,000-node chain has
    2,000 updates in 20,000 statements).  An update of ``p`` goes right after
    ``S``, the last statement that reads p or writes its gradient g: key(S) +
    (−c, 1) for the c-th update, so a later update after the same S comes
    first; g's own product, when the update is its only reader, moves to
    key(S) + (−c, 0), just before the update (where :func:`fuse_updates` joins them).
    A statement that reads a view of p (``t = b.T``, read after the update would have run)
    reads p.  g's product does not move past an update of a parameter it reads.
    """
    updates = fn.spec.updates
    if not updates:
        return stmts
    stmts = list(stmts)
    key = {i: (i,) for i in range(len(stmts))}
    readers, writers = defaultdict(set), defaultdict(set)
    view_of = _views(stmts)

    def index(i):
        st = stmts[i]
        for sym in st.reads():
            readers[sym].add(i)
            if sym in view_of:
                readers[view_of[sym]].add(i)
        writers[st.target].add(i)

    for i in range(len(stmts)):
        index(i)
    placed: dict = {}           # a parameter -> its update's index
    for c, (name, (p, g)) in enumerate(updates.items(), start=1):
        last = readers[p] | writers[g]
        after = key[max(last, key=key.__getitem__)] if last else (-1,)
        u = len(stmts)
        stmts.append(Stmt(p, "update", (g, name, p), ()))
        key[u] = after + (-c, 1)
        index(u)
        placed[p] = u
        k = min(writers[g], key=key.__getitem__) if writers[g] else None
        if k is not None and len(readers[g]) == 1 and stmts[k].op in ("matmul", "colsum"):
            # not past an update of what the product reads (c -= t b.T after b -= ...: c's step
            # from the updated b); a later update waits for the product where it moved to
            ahead = [placed[q] for q in {view_of.get(x, x) for x in stmts[k].reads()} if q in placed]
            if not any(key[k] < key[v] < after + (-c, 0) for v in ahead):
                key[k] = after + (-c, 0)
    return [stmts[i] for i in sorted(key, key=key.__getitem__)]


def convolutions(stmts: list[Stmt], fn) -> list[Stmt]:
    """The derived products of a convolution as the library's convolution kernels (exactly
    the same sums, read off the statements): Kᵀ unfold(A) is ``conv``, Σᵢ unfold(Aᵢ) δᵢᵀ (the
    kernel's δ) is ``conv_wgrad``, fold(K δ) (the input's δ) is ``conv_igrad``.  The patch
    matrix then goes unread and the next selection drops it.  For a printer with
    ``conv_kernels``."""
    if not getattr(fn.printer, "conv_kernels", False):
        return stmts
    shapes = fn.low.shapes
    made = {st.target: st for st in stmts}

    def source(sym, op):
        st = made.get(sym)
        return st if st is not None and st.op == op else None

    def shared(x):          # a parameter-like matrix, the same for every sample
        return len(shapes.get(x, ())) == 2

    def batched(x):         # a value with the batch on its leading axis
        return len(shapes.get(x, ())) == 3
    out = []
    for st in stmts:
        a = st.args
        if st.op == "matmul" and len(a) == 2 and isinstance(a[0], Tr) and shared(a[0].sym) \
                and isinstance(a[1], sp.Symbol) and batched(a[1]) and source(a[1], "unfold"):
            u = made[a[1]]
            st = st._replace(op="conv", args=(u.args[0], a[0].sym, u.args[1]))
        elif st.op == "bgemm" and isinstance(a[0], sp.Symbol) and isinstance(a[1], Tr) \
                and batched(a[0]) and source(a[0], "unfold"):
            u = made[a[0]]
            st = st._replace(op="conv_wgrad", args=(u.args[0], a[1].sym, u.args[1]))
        elif st.op == "fold" and isinstance(a[0], sp.Symbol) and source(a[0], "matmul"):
            k, d = made[a[0]].args
            if isinstance(k, sp.Symbol) and shared(k) and isinstance(d, sp.Symbol) and batched(d):
                st = st._replace(op="conv_igrad", args=(d, k, a[1]))
        out.append(st)
    return out


def masked_scores(stmts: list[Stmt], fn) -> list[Stmt]:
    """c·(A B) then the causal mask (attention's scores), each product and scaled value read
    only there, as one ``masked_scores`` statement: the mask added to c·A B by one batched
    GEMM (``baddbmm``: M + c·A B with M = 0 on and below the diagonal, −∞ above), three
    passes and two arrays fewer.  The same entries: x + 0 = x, and x + (−∞) = −∞ as the
    masked entry of ``mask``.  For a printer with the ``masked_scores`` kernel."""
    if "masked_scores" not in fn.printer.kernels:
        return stmts
    shapes, keep = fn.low.shapes, fn.keep
    made = {st.target: st for st in stmts}
    reads = Counter(s for st in stmts for s in st.reads())

    def batched(x):
        return len(shapes.get(x.sym if isinstance(x, Tr) else x, ())) == 3
    out, drop = [], set()
    for st in stmts:
        z = st.args[0] if st.op == "mask" and st.args[1] == "causal" else None
        scaled = made.get(z)
        if scaled is not None and scaled.op == "let" and reads[z] == 1 and z not in keep:
            coeff, t = scaled.args[0].as_independent(*scaled.args[0].free_symbols, as_Add=False)
            mm = made.get(t) if coeff.is_number else None      # (c may be irrational: 1/√2)
            if mm is not None and mm.op == "matmul" and reads[t] == 1 and t not in keep \
                    and all(batched(x) for x in mm.args):
                st = st._replace(op="masked_scores", args=(*mm.args, coeff, st.args[1]))
                drop |= {z, t}
        out.append(st)
    return [st for st in out if st.target not in drop]


def copies(stmts: list[Stmt], fn) -> list[Stmt]:
    """Aliases and numbers substituted into their users, then a product written straight into
    the kept name that only copies it."""
    return _coalesce(_propagate(stmts, fn.keep, fn.low.shape_of), fn.keep)


def reselect(stmts: list[Stmt], fn) -> list[Stmt]:
    """What the passes before left unread goes."""
    return select(stmts, fn.keep)


def fuse_updates(stmts: list[Stmt], fn) -> list[Stmt]:
    """``g = A.T @ D`` then ``W -= g`` (g read nowhere else, not returned) as one update that
    carries g's producer as its first operand, printed ``W -= A.T @ D``: no buffer for g.

    Only where the producer is the statement just before (its operands hold the same values
    there), and for a printer whose updates are in place (``updates_in_place``: a JAX step
    binds each new value to the parameter's name instead)."""
    if not fn.spec.updates or not fn.printer.updates_in_place:
        return stmts
    reads = _read_counts(stmts)
    out: list[Stmt] = []
    for st in stmts:
        g = st.args[0] if st.op == "update" else None
        if isinstance(g, sp.Symbol) and out and out[-1].target == g and out[-1].op != "update" \
                and reads[g] == 1 and g not in fn.results:
            out[-1] = st._replace(args=(out[-1],) + st.args[1:])
            continue
        out.append(st)
    return out


def sum_products(stmts: list[Stmt], fn) -> list[Stmt]:
    """Products summed by the GEMM that accumulates (``addmm``), for a printer that has it.

    ``t = A @ W`` read only by ``Z = t + b`` (b a parameter) becomes ``Z = addmm(b, A, W)``
    (for a batch of samples times a parameter W too: one GEMM over the batch's rows); a sum
    ``Z = t1 + t2 [+ b]`` of such products a chain of them; a step's ``W -= A.T @ D`` and
    ``W -= t1 + t2`` one accumulation into W per product.  A recurrent network's gates and
    shared weights are such sums, one term per step, and eager torch pays per operation.

    The statement is ``addmm`` with operands (c, A1, B1, A2, B2, ...): c + Σ Aᵢ Bᵢ, c a
    symbol or 0 (in an update, the sum of the terms that are not products).  A product moves
    to its reader only when it is read there alone and no update writes a tensor in place in
    between (its operands then hold the same values there)."""
    if "addmm" not in fn.printer.kernels:
        return stmts
    body: list = list(stmts)
    params = {st.target for st in body if st.op == "param"}
    reads, shapes = _read_counts(body), fn.low.shapes
    rank = lambda x: len(shapes.get(x.sym if isinstance(x, Tr) else x, ()))    # noqa: E731
    where = {st.target: i for i, st in enumerate(body) if st.op == "matmul"}
    view_of = _views(body)

    def reads_own(st, k):
        """Whether `st` reads the parameter that update k writes (W -= A W: torch's W.addmm_(A, W)
        would read W while writing it, and a second product the updated W)."""
        return body[k].op == "update" and any(view_of.get(x, x) == body[k].target for x in st.reads())
    updates, n = [], 0             # updates[i]: how many updates come before statement i
    for st in body:
        updates.append(n)
        n += st.op == "update"

    def product(t, k, batched=False):
        """The index of t's product when it may move to statement k, else None."""
        i = where.get(t)
        if i is None or body[i] is None or i > k or reads[t] != 1 or t in fn.results \
                or updates[k] != updates[i + 1] or reads_own(body[i], k):
            return None
        a, b = body[i].args
        into = shapes.get(body[k].target, ()) if body[k].op == "update" else body[k].shape
        if tuple(body[i].shape) != tuple(into):
            return None         # a broadcast row (1 r) B: the accumulation is of the full size
        flat = rank(a) == 2 and rank(b) == 2        # (torch.addmm: matrices, not a 1-D row 1ᵀ D)
        if flat or (batched and isinstance(a, sp.Symbol) and b in params and rank(a) == 3):
            return i
        return None

    def terms(e):           # a sum of symbols' terms, else None
        return e.args if isinstance(e, sp.Add) and all(isinstance(x, sp.Symbol) for x in e.args) else None

    def moves(e, ts, k, batched=False):
        """(the products that move into statement k, in the order the printer writes the sum's
        terms, and the other terms)."""
        moved = [t for t in ts if product(t, k, batched) is not None]
        if len(moved) > 1:
            moved = [t for t in fn.printer._as_ordered_terms(e) if t in moved]
        return moved, [t for t in ts if t not in moved]

    def addmm(c, moved, target=None, shape=()):
        """c + the moved products, which leave their places."""
        pairs = tuple(x for t in moved for x in body[where[t]].args)
        for t in moved:
            body[where[t]] = None
        return Stmt(target, "addmm", (c, *pairs), shape)

    for k, st in enumerate(body):
        g = st.args[0] if st.op in ("let", "update") else None
        if st.op == "let" and terms(g):
            bias = len(g.args) == 2 and (g.args[0] in params or g.args[1] in params)   # b + A W (A maybe a batch)
            moved, rest = moves(g, g.args, k, bias)
            if moved and len(rest) <= 1 and (not rest or rest[0] in params):
                body[k] = addmm(rest[0] if rest else sp.S.Zero, moved, st.target, st.shape)
        elif st.op != "update":
            continue
        elif isinstance(g, Stmt) and g.op == "matmul" and all(rank(x) == 2 for x in g.args) \
                and tuple(g.shape) == tuple(shapes.get(st.target, ())) and not reads_own(g, k):
            body[k] = st._replace(args=(g._replace(op="addmm", args=(sp.S.Zero, *g.args)),) + st.args[1:])
        elif isinstance(g, sp.Symbol) or isinstance(g, Stmt) and g.op == "let" and terms(g.args[0]):
            moved, rest = moves(g.args[0], terms(g.args[0]), k) if isinstance(g, Stmt) else moves(g, (g,), k)
            if moved:
                body[k] = st._replace(args=(addmm(sp.Add(*rest), moved),) + st.args[1:])
    return [st for st in body if st is not None]


def shared_ones(stmts: list[Stmt], fn) -> list[Stmt]:
    """1ᵀ D printed with the module's cached row of ones (NumPy's ``_ones(m) @ D``, one BLAS
    call): where a function has two or more, the row is fetched once, right after the batch
    size, as ``ones``, and each 1ᵀ D reads it (a second operand).  For a printer with
    ``ones_row``."""
    if not getattr(fn.printer, "ones_row", False):
        return stmts
    shapes = fn.low.shapes

    def flat_colsum(st):
        st = st.args[0] if st.op == "update" and isinstance(st.args[0], Stmt) else st
        return st.op == "colsum" and len(shapes.get(st.args[0], ())) != 3
    if sum(map(flat_colsum, stmts)) < 2:
        return stmts
    ones = sp.Symbol("ones")

    def reading(st):
        return st._replace(args=(st.args[0], ones)) if st.op == "colsum" else st
    out = []
    for st in stmts:
        if flat_colsum(st):
            st = reading(st) if st.op == "colsum" else st._replace(args=(reading(st.args[0]),) + st.args[1:])
        out.append(st)
        if st.op == "batch":
            out.append(Stmt(ones, "ones", (BATCH,), (BATCH,)))
    return out


#: the passes between selection and printing, in order: each ``(body, fn) -> body``, each
#: deciding from ``fn.printer`` whether it applies
PASSES = (copies, convolutions, conv_biases, conv_grads, pool_indices, pool_masks, masked_scores, group_heads,
          flash_attention, affine_norms, reselect, cse, schedule, fuse_updates, sum_products, shared_ones)
