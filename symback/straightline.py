"""Straight-line functions from array statements: select, CSE, schedule, print.

One generated function (``predict``, ``loss``, ``grad``, ``step``, ...)
is the list of :class:`~symback.lowering.Stmt` its results need, after

1. *selection*: only the statements the results depend on;
2. *copy propagation*: ``δ_b = δ_z`` and constants like ``δ_C = 1/m`` are
   substituted into their users instead of being stored;
3. *CSE*: :func:`sympy.cse` over every element-wise formula of the function;
4. *scheduling* (``step``): a parameter's update ``p -= δ_p`` goes right
   after the last statement that reads p, its matrix product just before it;
5. *printing* with a liveness pass: a buffer the function made is
   overwritten in place once nothing later reads it (never X, Y, a
   parameter, a given value, a returned one, or a view of them).
"""
from __future__ import annotations

import re
from collections import Counter, defaultdict

import sympy as sp

from .convbias import BIAS_OPS, bias_code, conv_biases
from .heads import HEAD_OPS, group_heads, head_code
from .image import IMAGE_OPS
from .lowering import EXPR_OPS, VIEWS, Stmt, Tr
from .printing.numpy import InPlace, NumpyPrinter

__all__ = ["FunctionSpec", "build_function"]


class FunctionSpec:
    """What one generated function computes.

    ``results``: the symbols it returns (in ``ret``, a format string of
    their printed names); ``inputs``: symbols its arguments provide;
    ``updates``: parameter name -> (parameter symbol, gradient symbol) to
    apply in place (``step``).
    """

    def __init__(self, name, args, doc, results, ret, inputs=(), updates=None):
        self.name, self.args, self.doc = name, args, doc
        self.results, self.ret, self.inputs = list(results), ret, set(inputs)
        self.updates = updates or {}


def select(stmts: list[Stmt], wanted: set) -> list[Stmt]:
    """The statements `wanted` depends on, in order."""
    need, out = set(wanted), []
    for st in reversed(stmts):
        if st.target in need:
            out.append(st)
            need |= st.reads()
    return out[::-1]


def propagate(stmts: list[Stmt], keep: set, shape_of) -> list[Stmt]:
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


def coalesce(stmts: list[Stmt], keep: set) -> list[Stmt]:
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


def cse(stmts: list[Stmt], fresh, low) -> list[Stmt]:
    """Common subexpressions of all element-wise formulas, each computed once."""
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


def schedule(stmts: list[Stmt], updates: dict) -> list[Stmt]:
    """Insert each in-place update after the last read of its parameter.

    Statements are ordered by keys (tuples) rather than moved in a list, and
    who reads or writes each symbol is indexed, so each update costs the size
    of its parameter's readers, not of the function (a 1,000-node chain has
    2,000 updates in 20,000 statements).  An update of ``p`` goes right after
    ``S``, the last statement that reads p or writes its gradient g: key(S) +
    (−c, 1) for the c-th update, so a later update after the same S comes
    first; g's own product, when the update is its only reader, moves to
    key(S) + (−c, 0), just before the update, and prints as ``p -= A.T @ D``.
    """
    stmts = list(stmts)
    key = {i: (i,) for i in range(len(stmts))}
    readers, writers = defaultdict(set), defaultdict(set)

    def index(i):
        for sym in stmts[i].reads():
            readers[sym].add(i)
        writers[stmts[i].target].add(i)

    for i in range(len(stmts)):
        index(i)
    for c, (name, (p, g)) in enumerate(updates.items(), start=1):
        last = readers[p] | writers[g]
        after = key[max(last, key=key.__getitem__)] if last else (-1,)
        u = len(stmts)
        stmts.append(Stmt(p, "update", (g, name, p), ()))
        key[u] = after + (-c, 1)
        index(u)
        k = min(writers[g], key=key.__getitem__) if writers[g] else None
        if k is not None and len(readers[g]) == 1 and stmts[k].op in ("matmul", "colsum"):
            key[k] = after + (-c, 0)
    return [stmts[i] for i in sorted(key, key=key.__getitem__)]


def convolutions(stmts: list[Stmt], shapes: dict) -> list[Stmt]:
    """The derived products of a convolution as the library's convolution kernels (exactly
    the same sums, read off the statements): Kᵀ unfold(A) is ``conv``, Σᵢ unfold(Aᵢ) δᵢᵀ (the
    kernel's δ) is ``conv_wgrad``, fold(K δ) (the input's δ) is ``conv_igrad``.  The patch
    matrix then goes unread and the next selection drops it."""
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


def masked_scores(stmts: list[Stmt], shapes: dict, keep: set) -> list[Stmt]:
    """c·(A B) then the causal mask (attention's scores), each product and scaled value read
    only there, as one ``masked_scores`` statement: the mask added to c·A B by one batched
    GEMM (``baddbmm``: M + c·A B with M = 0 on and below the diagonal, −∞ above), three
    passes and two arrays fewer.  The same entries: x + 0 = x, and x + (−∞) = −∞ as the
    masked entry of ``mask``."""
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


def pool_indices(stmts: list[Stmt], low) -> list[Stmt]:
    """Max-pooling's δ routed by the arg-max indices its forward kernel found: where a
    function has both ``maxpool(A)`` and ``maxpool_vjp(D, A)`` of one geometry, the forward
    becomes ``maxpool_pair`` (the pooled values and their indices, one kernel call) read by
    ``pair_item`` 0, and the δ ``maxpool_vjp_idx`` reads item 1 instead of pooling A again.
    The same values: the indices are the ones the routing recomputed (first arg-max)."""
    vjps = {(st.args[1], st.args[2]) for st in stmts if st.op == "maxpool_vjp"}
    pairs, out = {}, []
    for st in stmts:
        key = (st.args[0], st.args[1]) if st.op == "maxpool" else (st.args[1], st.args[2]) \
            if st.op == "maxpool_vjp" else None
        if st.op == "maxpool" and key in vjps:
            pair = low.fresh()
            low.shapes[pair] = st.shape
            pairs[key] = pair
            out += [Stmt(pair, "maxpool_pair", st.args, st.shape), Stmt(st.target, "pair_item", (pair, 0), st.shape)]
            continue
        if st.op == "maxpool_vjp" and key in pairs:
            st = st._replace(op="maxpool_vjp_idx", args=(st.args[0], st.args[1], pairs[key], st.args[2]))
        out.append(st)
    return out


def build_function(spec: FunctionSpec, stmts: list[Stmt], printer: NumpyPrinter, low, protected: set) -> list[str]:
    """The source lines of one function (def line, docstring, body, return).

    ``low`` is the :class:`~symback.lowering.Lowering` the statements came
    from (their shapes and its supply of fresh names); ``protected`` the
    symbols never overwritten (data, parameters).
    """
    fresh, shape_of, temps = low.fresh, low.shape_of, low.fresh.made
    keep = set(spec.results) | {s for pg in spec.updates.values() for s in pg}
    # an update p -= g reads p: its load stays even when nothing else reads p (δ_p folded to 0)
    wanted = set(spec.results) | {s for pg in spec.updates.values() for s in pg}
    body = select(stmts, wanted)
    body = coalesce(propagate(body, keep, shape_of), keep)
    if getattr(printer, "conv_kernels", False):
        body = convolutions(body, low.shapes)
        body = conv_biases(body, low.shapes, keep) if getattr(printer, "conv_bias", False) else body
    if getattr(printer, "pool_indices", False):
        body = pool_indices(body, low)
    if "masked_scores" in printer.kernels:
        body = masked_scores(body, low.shapes, keep)
    body = group_heads(body, low) if "heads" in printer.kernels else body
    body = select(body, wanted)     # what propagation left unread goes
    body = cse(body, fresh, low)
    if spec.updates:
        body = schedule(body, spec.updates)
    arrays = {s for s, shp in low.shapes.items() if shp != ()}
    return _print(body, spec, printer, fresh, shape_of, arrays | {st.target for st in body if st.shape != ()},
                  protected | set(spec.inputs) | set(spec.results), temps)


def _print(body, spec, printer, fresh, shape_of, arrays, protected, temps) -> list[str]:
    ind = "    "
    printer.arrays = frozenset(arrays)      # which symbols are arrays, for printers that care
    ew = InPlace(printer, lambda: fresh().name, arrays, ind, shape_of)
    last, alias = {}, {}
    for i, st in enumerate(body):
        for r in st.reads():
            last[r] = i
        if st.op in VIEWS and st.args and isinstance(st.args[0], sp.Symbol):
            alias[st.target] = st.args[0]
    names = {str(st.target): st.target for st in body}

    def root(n):
        path = []
        while n in alias:
            path.append(n)
            n = alias[n]
        for k in path[:-1]:         # path compression: a chain of lets is walked once
            alias[k] = n
        return n

    def free_at(i, syms) -> set:
        out = set()
        roots = {n: root(n) for n in syms}
        count = Counter(roots.values())
        for n in syms:
            if count[roots[n]] > 1:          # two names of one buffer in one formula: keep it
                continue
            if st_of.get(n) in VIEWS or n not in arrays:
                continue
            group = members.get(roots[n], set()) | {n}
            if any(k in protected for k in group) or any(st_of.get(k) in VIEWS for k in group):
                continue
            if all(last.get(k, -1) <= i for k in group):
                out.add(n)
        return out
    st_of = {st.target: st.op for st in body}
    # the names that share a buffer, by the name at the end of their alias chain
    # (kept up to date below, so free_at costs no scan of every name)
    members = {}
    for k in set(last) | set(alias) | set(names.values()):
        members.setdefault(root(k), set()).add(k)
    lines = [f"def {spec.name}({spec.args}):", f'{ind}"""{spec.doc}"""']

    def batched(x):     # a value with the batch on a leading axis (one-sample graphs: rank 3)
        x = x.sym if isinstance(x, Tr) else x
        return isinstance(x, sp.Basic) and len(shape_of(x)) == 3
    for i, st in enumerate(body):
        free = free_at(i, st.reads())
        t, a = st.target, st.args
        if st.op == "let":
            out, ref = ew.emit(a[0], free)
            if ref != t.name and ref in names:
                before = root(t)
                alias[t] = names[ref]
                if root(t) != before:
                    members.setdefault(root(t), set()).update(members.pop(before, {before}))
            out.append(f"{ind}{t} = {ref}")
            lines += out
            continue
        if st.op == "concat":      # (batched or not: the axis counts from the end)
            code = printer.op_concat([str(x) for x in a[1:]], a[0])
        elif st.op == "pair_item":
            code = f"{a[0]}[{a[1]}]"
        elif st.op in ("layer_norm", "layer_norm_vjp"):       # (batched or not: the last axis)
            code = getattr(printer, f"op_{st.op}")(*[str(x) for x in a[:-1]], printer._print(a[-1]), st.shape[-1])
        elif st.op == "masked_scores":
            names_ = [printer.op_btranspose(str(x.sym)) if isinstance(x, Tr) else str(x) for x in a[:2]]
            code = printer.op_masked_scores(*names_, printer._print(a[2]), *st.shape[-2:])
        elif st.op in ("maxpool_pair", "maxpool_vjp_idx"):
            code = printer.op_image(st.op, [str(x) for x in a[:-1]], a[-1])
        elif st.op in HEAD_OPS:     # (attention's heads at once: symback.heads)
            code = head_code(st, printer)
        elif st.op in BIAS_OPS:     # (a convolution's bias in its kernel: symback.convbias)
            code = bias_code(st, printer)
        elif any(batched(x) for x in a):
            code = _batched(st, ew, free, lines, printer, batched)
        elif st.op in ("sum", "mean", "rowsum"):
            code = _reduction(st, ew, free, lines, printer, shape_of)
        elif st.op == "matmul":
            code = printer.op_product(*[str(x.sym) if isinstance(x, Tr) else str(x) for x in a],
                                      *[isinstance(x, Tr) for x in a])
        elif st.op in ("colsum", "rowmax", "trace", "transpose", "softmax", "log_softmax"):
            code = getattr(printer, f"op_{st.op}")(str(a[0]))
        elif st.op == "slice":
            code = printer.op_slice(str(a[0]), a[1], a[2])
        elif st.op == "mask":
            code = printer.op_mask(str(a[0]), a[1], *st.shape[-2:])
        elif st.op == "softmax_vjp":
            code = printer.op_softmax_vjp(str(a[0]), str(a[1]))
        elif st.op in ("layer_norm", "layer_norm_vjp"):
            code = getattr(printer, f"op_{st.op}")(*[str(x) for x in a[:-1]], printer._print(a[-1]), st.shape[-1])
        elif st.op == "pad":
            code = printer.op_pad(str(a[0]), *a[1:])
        elif st.op in IMAGE_OPS:    # one image that is not a batch's: as a batch of one
            code = printer.op_image(st.op, [f"{x}[None]" for x in a[:-1]], a[-1]) + "[0]"
        elif st.op == "bsum":       # (the rows of one shared matrix: its column sums)
            code = printer.op_bsum(str(a[0]))
        elif st.op == "column":
            code = printer.op_column(str(a[0]), a[1])
        elif st.op == "param":
            code = f"params[{a[0]!r}]"
        elif st.op == "value":
            code = f"values[{a[0]!r}]"
        elif st.op == "batch":
            code = "X.shape[0]"
        elif st.op == "update":
            # an array is updated through its local name; a number only through the dict
            # (immutable arrays: the local name is rebound, and the step returns it)
            target = str(a[2]) if a[2] in arrays or not printer.inplace else f"params[{a[1]!r}]"
            lines.append(f"{ind}{printer.op_update(target, str(a[0]))}")
            continue
        else:
            raise AssertionError(f"unknown statement {st.op}")
        lines.append(f"{ind}{t} = {code}")
    lines.append(f"{ind}return {spec.ret}")
    return printer.finish(_fuse_updates(lines, ind, temps), ind)


def _reduction(st, ew, free, lines, printer, shape_of) -> str:
    """Σ (or mean, or row sums) of an element-wise formula; Σ a ⊙ b as one dot product."""
    expr = st.args[0]
    if st.op in ("sum", "mean") and shape_of(expr) == ():
        # propagation left one value for every sample (δ_p = 1/3): its mean is itself,
        # its sum over the batch is m times it
        value = printer._print(expr)
        return value if st.op == "mean" else f"X.shape[0]*{printer.parenthesize(expr, 50)}"
    if st.op == "sum":
        coeff, rest = expr.as_coeff_Mul()
        factors = sp.Mul.make_args(rest)
        k = "" if coeff == 1 else ("-" if coeff == -1 else f"{printer.parenthesize(coeff, 50)}*")
        if len(factors) == 1 and rest.is_Pow and rest.exp == 2 and shape_of(rest.base) != ():
            body, ref = ew.emit(rest.base, free)
            lines += body
            return f"{k}{printer.op_vdot(ref, ref)}"
        if len(factors) == 2 and shape_of(factors[0]) == shape_of(factors[1]) != ():
            body1, r1 = ew.emit(factors[0], free)
            lines += body1
            body2, r2 = ew.emit(factors[1], free - set(factors[0].free_symbols))
            lines += body2
            return f"{k}{printer.op_vdot(r1, r2)}"
    body, ref = ew.emit(expr, free)
    lines += body
    if st.op == "rowsum" and not ref.isidentifier():
        ref = f"({ref})"        # printed as a method call, `(Y*P).sum(...)`, not `Y*P.sum(...)`
    return getattr(printer, f"op_{st.op}")(ref)


def _batched(st, ew, free, lines, printer, batched) -> str:
    """An operation on values that carry the batch axis (one sample's graph over a batch)."""
    a, op = st.args, st.op
    if op in EXPR_OPS:
        body, ref = ew.emit(a[0], free)
        lines += body
        ref = ref if ref.isidentifier() else f"({ref})"     # a whole formula (immutable arrays)
        return getattr(printer, {"sum": "op_bsum_all", "mean": "op_bmean", "rowsum": "op_browsum",
                                 "ssum": "op_bssum"}[op])(ref)
    if op == "bsum":
        return printer.op_bsum(str(a[0]))
    if op in IMAGE_OPS:
        return printer.op_image(op, [str(x) for x in a[:-1]], a[-1])
    names = [str(x.sym) if isinstance(x, Tr) else str(x) for x in a[:2]]
    if op == "matmul":
        return printer.op_bproduct(*names, *[isinstance(x, Tr) for x in a], *[batched(x) for x in a])
    if op == "bgemm":
        return printer.op_bgemm(*names, *[isinstance(x, Tr) for x in a], st.shape[0], st.shape[1])
    if op == "slice":
        return printer.op_bslice(names[0], a[1], a[2])
    if op == "mask":
        return printer.op_mask(names[0], a[1], *st.shape[-2:])
    if op == "pad":
        return printer.op_pad(names[0], *a[1:])
    if op == "softmax_vjp":
        return printer.op_softmax_vjp(*names)
    return getattr(printer, f"op_b{op}")(names[0])


_ALIAS = re.compile(r"^(\s*)(\w+) = (\w+)$")


def _fuse_updates(lines: list[str], ind: str, temps: set) -> list[str]:
    """``g = A.T @ D`` then ``W -= g`` (g used nowhere else) as ``W -= A.T @ D``, and
    ``t = X @ W; ...; Z = t`` with t used nowhere else as ``Z = X @ W; ...``."""
    out = []
    in_lines = Counter(w for line in lines for w in set(_WORD.findall(line)))   # name -> lines using it
    update = re.compile(rf"^{ind}(params\['\w+'\]|\w+) -= (\w+)$")
    for line in lines:
        m = update.match(line)
        if m and out:
            prev = _ALIAS_ASSIGN.match(out[-1])
            if prev and prev.group(1) == m.group(2) and in_lines[m.group(2)] <= 2:
                out[-1] = f"{ind}{m.group(1)} -= {prev.group(2)}"
                continue
        out.append(line)
    return _rename_aliases(out, temps)


_ALIAS_ASSIGN = re.compile(r"^\s*(\w+) = (.+)$")
_WORD = re.compile(r"\w+")


def _rename_aliases(lines: list[str], temps: set) -> list[str]:
    """A fresh temporary renamed to the name it is finally given (``Z1 = X @ W1; Z1 += b1``).

    Linear in the lines: which lines use a name is kept in an index (``occ``)
    rather than found by scanning (a 1,000-node chain has 10⁴ lines).
    """
    lines = list(lines)
    alive = [True] * len(lines)
    occ = defaultdict(set)              # name -> the live lines that use it
    for k, line in enumerate(lines):
        for w in set(_WORD.findall(line)):
            occ[w].add(k)

    def forget(k):
        for w in set(_WORD.findall(lines[k])):
            occ[w].discard(k)

    def rename(ids, old, new):
        word = re.compile(rf"\b{old}\b")
        for k in sorted(ids):
            forget(k)
            lines[k] = word.sub(new, lines[k])
            for w in set(_WORD.findall(lines[k])):
                occ[w].add(k)

    for i in range(len(lines)):
        m = _ALIAS.match(lines[i])
        if not m:
            continue
        name, value = m.group(2), m.group(3)
        if value in temps and not any(k < i for k in occ[name]) and not any(k > i for k in occ[value]):
            alive[i] = False            # `Z1 = t3`: the earlier lines write Z1 itself
            forget(i)
            rename(set(occ[value]), value, name)
            continue
        if name in temps:               # `t4 = Z3`: the later lines read Z3 itself
            alive[i] = False
            forget(i)
            rename({k for k in occ[name] if k > i}, name, value)
    return [line for line, keep in zip(lines, alive) if keep]
