"""Straight-line functions from array statements: select, run the passes, print.

One generated function (``predict``, ``loss``, ``grad``, ``step``, ...)
is the list of :class:`~symback.lowering.Stmt` its results need, after the
passes of :mod:`symback.passes` (copy propagation, the library's kernels, CSE,
scheduling, fused updates and products), printed here:

* one printing function per statement kind (:data:`KINDS`; a value with the batch on a
  leading axis by :data:`BATCHED`), each calling the printer's ``op_*`` methods;
* a liveness pass: a buffer the function made is overwritten in place once nothing
  later reads it (never X, Y, a parameter, a given value, a returned one, or a view of
  them);
* names: a value computed in a buffer made for it is printed under the buffer's final name
  (``Z1 = X @ W1; Z1 += b1``, not ``t3 = X @ W1; t3 += b1; Z1 = t3``), and a temporary
  that only copies a value under that value's name.  The lines are kept as parts (text,
  symbols, formulas) until the names are known, then rendered once;
* devices: where the printer's kernels for CPU data alone (:data:`CPU_ONLY`, torch's fused
  attention) changed a function, it is printed twice, ``_f_on_cpu`` with them and
  ``_f_on_device`` by the printer's :meth:`off_cpu` without them, and ``f`` calls one of the
  two by X's device at run time (the printer's :meth:`dispatch`).
"""
from __future__ import annotations

from collections import Counter
from functools import partial

import sympy as sp

from . import affine_norm, convkernels, flash, heads
from .image import IMAGE_OPS
from .lowering import EXPR_OPS, VIEWS, Stmt, Tr
from .passes import PASSES, Function, reads_of, select
from .printing.inplace import InPlace, render
from .printing.numpy import NumpyPrinter

__all__ = ["FunctionSpec", "build_function", "KINDS", "BATCHED"]


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


def build_function(spec: FunctionSpec, stmts: list[Stmt], printer: NumpyPrinter, low, protected: set) -> list[str]:
    """The source lines of one function (def line, docstring, body, return).

    ``low`` is the :class:`~symback.lowering.Lowering` the statements came
    from (their shapes and its supply of fresh names); ``protected`` the
    symbols never overwritten (data, parameters).  Where the printer's CPU-only kernels
    changed the function, the lines of three (see the module docstring).
    """
    lines, cpu_only = _built(spec, stmts, printer, low, protected)
    other = printer.off_cpu() if cpu_only else None
    if other is None:
        return lines
    # the printer's CPU-only kernels changed this function: a version for the CPU, one for any
    # other device (the same statements by the other printer), the public name choosing between
    # them by X's device at run time (nothing is moved between devices)
    cpu, elsewhere = (f"_{spec.name.lstrip('_')}_on_{where}" for where in ("cpu", "device"))
    lines = [f"def {cpu}({spec.args}):"] + lines[1:]
    device, _ = _built(_renamed(spec, elsewhere), stmts, other, low, protected)
    doc = f"{spec.doc} (By {cpu} for X on the CPU, else {elsewhere}.)"
    return lines + ["", ""] + device + ["", ""] + printer.dispatch(spec.name, spec.args, doc, cpu, elsewhere)


#: the kinds of statement that only a printer's CPU kernels print (see build_function)
CPU_ONLY = tuple(flash.KINDS)


def _built(spec, stmts, printer, low, protected) -> tuple[list[str], bool]:
    """(The function's lines by `printer`, whether they call the printer's CPU-only kernels)."""
    fn = Function(spec, low, printer)
    body = select(stmts, fn.keep)
    for run in PASSES:
        body = run(body, fn)
    arrays = {s for s, shp in low.shapes.items() if shp != ()} | {st.target for st in body if st.shape != ()}
    lines = _Printing(fn, arrays, protected | set(spec.inputs) | set(spec.results)).lines(body)
    return lines, any(st.op in CPU_ONLY for st in body)


def _renamed(spec, name):
    """`spec` under another function name."""
    return FunctionSpec(name, spec.args, spec.doc, spec.results, spec.ret, spec.inputs, spec.updates)


#: the statements whose value may be a view of their first operand's buffer
_VIEWS = VIEWS + heads.VIEWS


class _Printing:
    """One function's printing: the statements' lines, buffers reused, names chosen."""

    def __init__(self, fn, arrays, protected):
        self.fn, self.p, self.arrays, self.protected = fn, fn.printer, arrays, protected
        self.shape_of, self.temps = fn.low.shape_of, fn.low.fresh.made
        self.names: dict = {}       # symbol -> its printed name, where that is not its own
        self.same: dict = {}        # symbol -> the set of symbols printed under one name
        self.p.arrays, self.p.names = frozenset(arrays), self.names
        self.ew = InPlace(self.p, fn.low.fresh, arrays, "    ", self.shape_of)
        self.out: list = []         # the body's lines, each a tuple of parts (see render)

    # -- names -------------------------------------------------------------------------
    def N(self, x) -> str:
        """The printed name of an operand (a transposed one's symbol's)."""
        x = x.sym if isinstance(x, Tr) else x
        return (self.names.get(x) or x.name) if isinstance(x, sp.Symbol) else str(x)

    def text(self, part) -> str:
        """One part (a symbol, a formula's printer, text) as text, names as they are now."""
        return render((part,), self.names)

    def group(self, s) -> set:
        """The symbols printed under s's name (s's own, or one it was given)."""
        return self.same.get(s) or {s}

    def rename(self, group, name, into):
        """Every symbol of `group` printed as `name`, the name of `into`'s group, which it joins."""
        joined = self.same.setdefault(into, {into})
        for r in group:
            self.names[r] = name
            joined.add(r)
            self.same[r] = joined

    def assign(self, k, i, t, s):
        """The line k, ``t = s`` (statement i) for a symbol s: kept, or one name for both.  A
        temporary s that nothing after reads takes t's name everywhere (it was computed for
        t); else a temporary t is printed as s from here on."""
        P, name = self.N(s), self.N(t)
        last, results = self.last, self.fn.results
        if P in self.temps and all(last.get(r, -1) <= i and r not in results for r in self.group(s)):
            self.rename(self.group(s), name, t)
        elif name in self.temps and not any(r in results for r in self.group(t)):
            self.rename(self.group(t), P, s)
        else:
            return
        self.out[k] = None

    # -- liveness ----------------------------------------------------------------------
    def lines(self, body) -> list[str]:
        """The function's source lines."""
        spec, ind = self.fn.spec, "    "
        reads = [reads_of(st) for st in body]
        self.last, alias = {}, {}
        for i, st in enumerate(body):
            for r in reads[i]:
                self.last[r] = i
            if st.op in _VIEWS and st.args and isinstance(st.args[0], sp.Symbol):
                alias[st.target] = st.args[0]
        last, arrays, protected = self.last, self.arrays, self.protected
        targets = {st.target for st in body}
        st_of = {st.target: st.op for st in body}

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
                if st_of.get(n) in _VIEWS or n not in arrays:
                    continue
                group = members.get(roots[n], set()) | {n}
                if any(k in protected for k in group) or any(st_of.get(k) in _VIEWS for k in group):
                    continue
                if all(last.get(k, -1) <= i for k in group):
                    out.add(n)
            return out
        # the names that share a buffer, by the name at the end of their alias chain
        # (kept up to date below, so free_at costs no scan of every name)
        members = {}
        for k in set(last) | set(alias) | targets:
            members.setdefault(root(k), set()).add(k)
        count = Counter(r for rs in reads for r in rs)
        offer = pending = None
        moved = {}                  # statement index -> the later one whose line took its formula
        starts = []                 # starts[i]: statement i's first line in self.out
        for i, st in enumerate(body):
            starts.append(len(self.out))
            self.free = free_at(i, reads[i])
            t = st.target
            # the line before computed a value this statement alone reads: it may take it
            self.inline = offer[1:3] if offer and count[offer[1]] == 1 and offer[1] not in self.fn.results else None
            self.took = False
            if st.op == "let":
                ref = self.emit(st.args[0], self.free)
                if isinstance(ref, sp.Symbol) and ref != t and ref in targets:
                    before = root(t)
                    alias[t] = ref
                    if root(t) != before:
                        members.setdefault(root(t), set()).update(members.pop(before, {before}))
            else:
                ref = self.code(st)
            if self.took:
                self.out[offer[0]] = None
                moved[offer[3]] = i
            if pending is not None and self.out[pending[0]] is not None:
                self.assign(*pending)
            offer = pending = None
            if ref is None:
                continue
            if not isinstance(ref, sp.Symbol) or ref != t:
                self.out.append((ind, t, " = ", ref))
                offer = (len(self.out) - 1, t, self.out[-1][3:], i)
                if isinstance(ref, sp.Symbol):      # t = s: one name for both, or this line
                    pending = (len(self.out) - 1, i, t, ref)
        if pending is not None:
            self.assign(*pending)
        frees = self.frees(body, reads, moved)
        text = []
        for i, (start, end) in enumerate(zip(starts, starts[1:] + [len(self.out)])):
            text += [render(parts, self.names) for parts in self.out[start:end] if parts is not None]
            if i in frees:
                text.append(f"{ind}del {', '.join(frees[i])}")
        self.p.names = {}           # (the names were this function's)
        return [f"def {spec.name}({spec.args}):", f'{ind}"""{spec.doc}"""'] + text + [f"{ind}return {spec.ret}"]

    def frees(self, body, reads, moved=None) -> dict:
        """{statement index: the names to delete after its lines}: each temporary array's name
        after the last statement that reads or writes any symbol printed under it, for a printer
        with ``frees`` (NumPy, torch).  The buffer goes back to the allocator while it still
        holds it, to be reused by the next allocation, as autograd frees a saved tensor once its
        backward has run: a step holds fewer arrays at once, and the memory it asks for comes
        less often from fresh pages (see the printers' ``frees``); the values are unchanged.
        ``moved``: statements whose formula a later one's line took (its reads are read there)."""
        if not getattr(self.p, "frees", False):
            return {}
        name = self.N
        bound = {name(parts[1]) for parts in self.out if parts is not None and len(parts) > 2
                 and isinstance(parts[1], sp.Symbol) and parts[2] == " = "}
        kept = {name(s) for s in self.protected if isinstance(s, sp.Symbol)}
        last, arrays = {}, set()
        for i, st in enumerate(body):
            for s in reads[i] | {st.target}:
                last[name(s)] = max(last.get(name(s), -1), (moved or {}).get(i, i))
                if s in self.arrays:
                    arrays.add(name(s))
        out: dict = {}
        for n, i in last.items():
            if n in bound and n in arrays and n not in kept and i < len(body) - 1:
                out.setdefault(i, []).append(n)
        return {i: sorted(ns) for i, ns in out.items()}

    # -- statements --------------------------------------------------------------------
    def emit(self, expr, free):
        """An element-wise formula's lines (added to the body) and its value (see InPlace)."""
        lines, ref = self.ew.emit(expr, free, self.inline)
        self.took |= self.ew.took
        if lines:       # the line before is no longer just before
            self.inline = None
        self.out += lines
        return ref

    def batched(self, x) -> bool:
        """Whether x carries the batch on a leading axis (one-sample graphs: rank 3)."""
        x = x.sym if isinstance(x, Tr) else x
        return isinstance(x, sp.Basic) and len(self.shape_of(x)) == 3

    def code(self, st):
        """The value of a statement other than ``let``: a symbol, a part that prints it, or None
        where the statement printed its own lines."""
        kind = KINDS.get(st.op)
        if st.op not in _ANY_SHAPE and any(self.batched(x) for x in st.args):
            kind = BATCHED.get(st.op, _bop)
        if kind is None:
            raise AssertionError(f"unknown statement {st.op}")
        return kind(self, st)


def _let(c, st):
    return c.emit(st.args[0], c.free)


def _product(c, st):
    a, b = st.args
    return lambda: c.p.op_product(c.N(a), c.N(b), isinstance(a, Tr), isinstance(b, Tr))


def _operand(c, x) -> str:
    """A product's operand as printed, its transpose applied."""
    return c.p.op_transpose(c.N(x)) if isinstance(x, Tr) else c.N(x)


def _addmm(c, st):
    """c + Σ Aᵢ Bᵢ (symback.passes.sum_products); a batch of samples times a parameter: one
    GEMM over its rows."""
    bias, ops = st.args[0], st.args[1:]
    if c.batched(ops[0]):
        return lambda: c.p.op_baddmm(c.N(bias), c.N(ops[0]), c.N(ops[1]))
    return lambda: c.p.op_addmm("" if bias == 0 else c.N(bias),
                                [(_operand(c, a), _operand(c, b)) for a, b in zip(ops[::2], ops[1::2])])


def _update(c, st):
    """p -= g; a fused update prints its producer's value in place of g (one accumulation into
    p per product, for an ``addmm`` producer)."""
    g, name, p = st.args
    # an array is updated through its local name; a number only through the dict
    # (immutable arrays: the local name is rebound, and the step returns it)
    target = c.N(p) if p in c.arrays or not c.p.inplace else f"params[{name!r}]"
    ind = "    "
    if isinstance(g, Stmt) and g.op == "addmm":
        ops = g.args[1:]
        for a, b in zip(ops[::2], ops[1::2]):
            c.out.append((ind, lambda a=a, b=b: c.p.op_update_addmm(target, _operand(c, a), _operand(c, b))))
        if g.args[0] != 0:
            c.out.append((ind, lambda: c.p.op_update(target, c.p._print(g.args[0]))))
        return None
    value = (_let(c, g) if g.op == "let" else c.code(g)) if isinstance(g, Stmt) else g
    # (a 1 × k parameter given as (k,), as the Model accepts, reaches the step as its (1, k) view:
    # Model._step_rows)
    c.out.append((ind, lambda: c.p.op_update(target, c.text(value) if isinstance(g, Stmt) else c.N(value))))
    return None


def _reduction(c, st):
    """Σ (or mean, or row sums) of an element-wise formula; Σ a ⊙ b as one dot product."""
    p, expr = c.p, st.args[0]
    if st.op in ("sum", "mean") and c.shape_of(expr) == ():
        # propagation left one value for every sample (δ_p = 1/3): its mean is itself,
        # its sum over the batch is m times it
        if st.op == "mean":
            return expr if isinstance(expr, sp.Symbol) else partial(p._print, expr)
        return lambda: f"X.shape[0]*{p.parenthesize(expr, 50)}"
    if st.op == "sum":
        coeff, rest = expr.as_coeff_Mul()
        factors = sp.Mul.make_args(rest)
        k = "" if coeff == 1 else ("-" if coeff == -1 else f"{p.parenthesize(coeff, 50)}*")
        if len(factors) == 1 and rest.is_Pow and rest.exp == 2 and c.shape_of(rest.base) != ():
            ref = c.emit(rest.base, c.free)
            return lambda: k + p.op_vdot(c.text(ref), c.text(ref))
        if len(factors) == 2 and c.shape_of(factors[0]) == c.shape_of(factors[1]) != ():
            r1 = c.emit(factors[0], c.free)
            r2 = c.emit(factors[1], c.free - set(factors[0].free_symbols))
            return lambda: k + p.op_vdot(c.text(r1), c.text(r2))
    ref = c.emit(expr, c.free)
    method = getattr(p, f"op_{st.op}")
    if st.op == "rowsum":       # printed as a method call, `(Y*P).sum(...)`, not `Y*P.sum(...)`
        return lambda: method(_bracketed(c.text(ref)))
    return lambda: method(c.text(ref))


def _bracketed(ref: str) -> str:
    return ref if ref.isidentifier() else f"({ref})"


def _breduction(c, st):
    """A reduction of an element-wise formula over values that carry the batch axis."""
    ref = c.emit(st.args[0], c.free)
    method = getattr(c.p, {"sum": "op_bsum_all", "mean": "op_bmean", "rowsum": "op_browsum", "ssum": "op_bssum"}[st.op])
    return lambda: method(_bracketed(c.text(ref)))     # a whole formula (immutable arrays)


def _bproduct(c, st):
    a, b = st.args
    return lambda: c.p.op_bproduct(c.N(a), c.N(b), isinstance(a, Tr), isinstance(b, Tr), c.batched(a), c.batched(b))


def _bgemm(c, st):
    a, b = st.args
    return lambda: c.p.op_bgemm(c.N(a), c.N(b), isinstance(a, Tr), isinstance(b, Tr), st.shape[0], st.shape[1])


def _bop(c, st):
    """Any other operation on one batched operand: the printer's ``op_b<op>``."""
    return lambda: getattr(c.p, f"op_b{st.op}")(c.N(st.args[0]))


def _transpose(c, st):
    """aᵀ; a 1-D row (1ᵀ D, a batch's column sums) as the column (n, 1) it stands for; a 1×n
    row of one sample (a Conv2d's bias bᵀ) by reshape, the same column whether the user gave
    the parameter as (1, n) or as the (n,) the Model accepts for it (``.T`` of that is itself)."""
    a = st.args[0]
    shape = c.fn.low.shapes.get(a, ())
    if len(shape) == 1 and len(st.shape) == 2:
        return lambda: f"{c.N(a)}[:, None]"
    if len(shape) == 2 and shape[0] == 1 and not c.batched(a):
        return lambda: f"{c.N(a)}.reshape(-1, 1)"
    return lambda: c.p.op_transpose(c.N(a))


def _one(method):
    """The printer's `method` of the first operand's name."""
    return lambda c, st: (lambda: getattr(c.p, method)(c.N(st.args[0])))


def _image(c, st, batch=True):
    a = st.args
    if batch:
        return lambda: c.p.op_image(st.op, [c.N(x) for x in a[:-1]], a[-1])
    # one image that is not a batch's: as a batch of one
    return lambda: c.p.op_image(st.op, [f"{c.N(x)}[None]" for x in a[:-1]], a[-1]) + "[0]"


def _masked_scores(c, st):
    a = st.args
    return lambda: c.p.op_masked_scores(*[c.p.op_btranspose(c.N(x)) if isinstance(x, Tr) else c.N(x) for x in a[:2]],
                                        c.p._print(a[2]), *st.shape[-2:])


def _layer_norm(c, st):     # (batched or not: the last axis)
    a = st.args
    return lambda: getattr(c.p, f"op_{st.op}")(*[c.N(x) for x in a[:-1]], c.p._print(a[-1]), st.shape[-1])


def _colsum(c, st):
    return lambda: c.p.op_colsum(*[c.N(x) for x in st.args])


#: statement kind -> its printing: (printing, statement) -> the value (a symbol or a part), or
#: None where it printed its own lines
KINDS = {
    "let": _let, "update": _update, "addmm": _addmm,
    "concat": lambda c, st: lambda: c.p.op_concat([c.N(x) for x in st.args[1:]], st.args[0]),
    "pair_item": lambda c, st: lambda: f"{c.N(st.args[0])}[{st.args[1]}]",
    "layer_norm": _layer_norm, "layer_norm_vjp": _layer_norm, "masked_scores": _masked_scores,
    "maxpool_pair": _image, "maxpool_vjp_idx": _image, "pool_gather": _image,
    "ones": lambda c, st: c.p.op_ones(),
    "sum": _reduction, "mean": _reduction, "rowsum": _reduction,
    "matmul": _product, "colsum": _colsum,
    "rowmax": _one("op_rowmax"), "trace": _one("op_trace"), "transpose": _transpose,
    "softmax": _one("op_softmax"), "log_softmax": _one("op_log_softmax"), "bsum": _one("op_bsum"),
    "slice": lambda c, st: lambda: c.p.op_slice(c.N(st.args[0]), st.args[1], st.args[2]),
    "mask": lambda c, st: lambda: c.p.op_mask(c.N(st.args[0]), st.args[1], *st.shape[-2:]),
    "softmax_vjp": lambda c, st: lambda: c.p.op_softmax_vjp(c.N(st.args[0]), c.N(st.args[1])),
    "pad": lambda c, st: lambda: c.p.op_pad(c.N(st.args[0]), *st.args[1:]),
    "column": lambda c, st: lambda: c.p.op_column(c.N(st.args[0]), st.args[1]),
    "param": lambda c, st: f"params[{st.args[0]!r}]",
    "value": lambda c, st: f"values[{st.args[0]!r}]",
    "batch": lambda c, st: "X.shape[0]",
    **{op: partial(_image, batch=False) for op in IMAGE_OPS},
    **heads.KINDS, **convkernels.KINDS, **flash.KINDS, **affine_norm.KINDS,   # (the passes' statements: symback.passes)
}
#: the kinds printed the same whether or not an operand carries the batch axis
_ANY_SHAPE = ("let", "update", "addmm", "concat", "pair_item", "layer_norm", "layer_norm_vjp", "masked_scores",
              "maxpool_pair", "maxpool_vjp_idx", "pool_gather", "ones") + tuple(heads.KINDS) + tuple(convkernels.KINDS) \
    + tuple(flash.KINDS) + tuple(affine_norm.KINDS)
#: statement kind -> its printing when an operand carries the batch axis (others: ``op_b<op>``)
BATCHED = {
    **{op: _breduction for op in EXPR_OPS if op != "let"},
    "bsum": _one("op_bsum"), "matmul": _bproduct, "bgemm": _bgemm,
    "slice": lambda c, st: lambda: c.p.op_bslice(c.N(st.args[0]), st.args[1], st.args[2]),
    "mask": KINDS["mask"], "pad": KINDS["pad"], "softmax_vjp": KINDS["softmax_vjp"],
    **{op: _image for op in IMAGE_OPS},
}
