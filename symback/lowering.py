"""A Program's assignments, lowered to array statements a printer can print.

Every value becomes a symbol that stands for a whole array (or a number).
An assignment becomes either a ``let``, a *scalar* SymPy formula over such
symbols that NumPy broadcasting applies entry by entry (a HadamardProduct
is a product, f(Z) is f of the symbol Z, ``1 b`` is just ``b``), or one of
the few operations that are not element-wise (``matmul``, ``colsum``
(1ᵀ D), ``rowsum``, ``rowmax``, ``sum``, ``mean``, ``trace``,
``transpose``, ``slice``, ``pad``, ``concat``), each a :class:`Stmt` of its own.  Scalar and
matrix graphs lower the same way; only the Program's types differ.

Each node kind lowers itself (its ``lower`` method in :mod:`symback.kinds`, called with
this Lowering; its closed-form VJP's kernel through ``lower_vjp``), so nothing here names a
kind or states a derivative: f'(Z) is lowered through the activation's own SymPy-derived
forms, a loss through its SymPy definition.
"""
from __future__ import annotations

from typing import NamedTuple

import sympy as sp
from sympy.matrices.expressions.applyfunc import ElementwiseApplyFunction

from .engine import BatchMean, BatchSum
from .errors import SymbackError
from .image import IMAGE_OPS
from .kernels import primes
from .kinds.base import BATCH, Kind, is_matrix
from .kinds.select import Held, lower_product, selection

__all__ = ["Stmt", "Tr", "Lowering", "broadcast", "select", "VIEWS", "EXPR_OPS", "BATCHED_OPS"]

#: operations whose result is a view of their first operand (never overwritten in place)
VIEWS = ("transpose", "slice", "column", "param", "value", "flatten", "unflatten", "pair_item")
#: operations whose operand is an element-wise formula rather than symbols
EXPR_OPS = ("let", "sum", "mean", "rowsum", "ssum")
#: operations whose value carries the batch axis when an operand does (one-sample graphs)
#: the kinds whose printing passes their last axis' length (a batch norm's columns: m, which
#: the ``batch`` statement defines, so the function must keep it)
WIDTH_PRINTED = ("layer_norm", "layer_norm_vjp", "layer_norm_affine", "layer_norm_affine_vjp")
BATCHED_OPS = ("matmul", "transpose", "slice", "colsum", "rowsum", "rowmax", "trace", "ssum", "mask", "pad",
               "concat", "softmax", "log_softmax", "softmax_vjp", "layer_norm", "layer_norm_vjp", "pair_item") + IMAGE_OPS


class Tr(NamedTuple):
    """A transposed operand of a matrix product (printed ``W.T``, no copy)."""

    sym: sp.Symbol


class Stmt(NamedTuple):
    """``target = op(*args)``; ``shape`` is the value's shape, () for a number."""

    target: sp.Symbol
    op: str
    args: tuple
    shape: tuple

    def reads(self) -> set:
        """The symbols this statement reads."""
        out = set()
        for a in self.args:
            if isinstance(a, Tr):
                out.add(a.sym)
            elif isinstance(a, sp.Basic):
                out |= a.free_symbols
        if self.op == "colsum" or (self.op in WIDTH_PRINTED and BATCH in getattr(self.shape[-1], "free_symbols", ())):
            out.add(BATCH)
        return out


def broadcast(*shapes) -> tuple:
    """NumPy's broadcast of shapes whose entries may be symbols (a 1 stretches)."""
    rank = max((len(s) for s in shapes), default=0)
    out = []
    for i in range(rank):
        dims = {s[len(s) - rank + i] for s in shapes if len(s) - rank + i >= 0} - {1, sp.S.One}
        out.append(dims.pop() if dims else sp.S.One)
    return tuple(out)


def select(stmts: list[Stmt], wanted: set) -> list[Stmt]:
    """The statements `wanted` depends on, in order."""
    need, out = set(wanted), []
    for st in reversed(stmts):
        if st.target in need:
            out.append(st)
            need |= st.reads()
    return out[::-1]


class Lowering:
    """Turns assignments (symbol, SymPy expression) into :class:`Stmt` lists.

    ``names`` maps each graph symbol (and adjoint) to the code symbol that
    stands for its array; ``shapes`` gives those symbols' shapes.  Call
    :meth:`assign` for each assignment in order; ``stmts`` collects them.
    """

    def __init__(self, names: dict, shapes: dict, fresh, sample: bool = False, shared=(), kernels=()):
        self.names, self.shapes, self.fresh = names, dict(shapes), fresh
        # the printer's fused kernels (symback.kernels): softmax rows and their closed-form VJP
        # as one statement each, an activation's derivative as a marker its kernel prints
        self.kernels = frozenset(kernels)
        self.primes = primes(self.kernels)
        # one-sample graphs: a value that depends on the data carries the batch on a leading
        # axis, its shape (m, rows, cols); ``shared`` targets (a parameter's δ) sum over it
        self.sample, self.shared = sample, set(shared)
        # the values already summed over the batch: the shared targets and what reads them
        # (a shared node's δ from its parent's: Σ over the samples once, not m times again)
        self.summed: set = set()
        self.stmts: list[Stmt] = []
        self._memo: dict = {}
        self.defs: dict = {}         # code symbol -> its element-wise formula (forward values)
        self.log_of: dict = {}       # a value -> a stabler formula of its log (softmax: log-sum-exp)
        self.rowsum_of: dict = {}    # per-sample cost column -> the formula it sums per row
        self.pads: dict = {}         # pad statement's symbol -> (block, axis, start, n)
        self.made: dict = {}         # statement's symbol -> the statement (what a sum's terms are)
        # node kind -> {graph symbol: what its lowering recorded}: the nodes whose closed-form
        # VJP the kind's kernel computes (softmax's P, a row norm's layer_norm statement)
        self.recorded: dict = {}

    # -- shapes -----------------------------------------------------------------
    def shape_of(self, formula) -> tuple:
        """The shape of an element-wise formula's value (the broadcast of its arrays)."""
        if not isinstance(formula, sp.Basic):
            return ()
        return broadcast(*[self.shapes.get(s, ()) for s in formula.free_symbols])

    def is_array(self, formula) -> bool:
        """Whether the formula's value is an array (else a number)."""
        return self.shape_of(formula) != ()

    # -- statements ---------------------------------------------------------------
    def batched(self, value) -> bool:
        """Whether a formula's or operand's value carries the batch axis (one-sample graphs)."""
        if isinstance(value, Tr):
            value = value.sym
        return self.sample and len(self.shape_of(value)) == 3

    def emit(self, op: str, args: tuple, shape: tuple, target=None) -> sp.Symbol:
        """Append a statement (an equal one already emitted is reused) and return its symbol.

        ``shape`` is one sample's; an operation on batched operands gets the batch axis.
        """
        key = (op, args)
        if target is None and key in self._memo:
            return self._memo[key]
        t = target if target is not None else self.fresh()
        if op == "let":
            shape = self.shape_of(args[0])
        elif op in BATCHED_OPS and any(self.batched(a) for a in args if isinstance(a, (sp.Basic, Tr))):
            shape = (BATCH,) + tuple(shape)
        self.shapes[t] = shape
        self.stmts.append(Stmt(t, op, args, shape))
        if t in self.shared or self.stmts[-1].reads() & self.summed:
            self.summed.add(t)
        self.made[t] = self.stmts[-1]
        if target is None:
            self._memo[key] = t
        return t

    def materialize(self, formula) -> sp.Symbol:
        """A symbol holding the formula's value (the formula itself when it is one)."""
        if isinstance(formula, sp.Symbol):
            return formula
        return self.emit("let", (formula,), ())

    def assign(self, target, expr):
        """Lower ``target = expr``; ``target`` is a graph symbol (or adjoint)."""
        t = self.names[target]
        if t in self.shared:
            value = self.reduced(expr)
            self.emit("let", (value,), (), target=t)
            return t
        value = expr.lower(self, target) if isinstance(expr, Kind) and hasattr(expr, "lower") else self.scalar(expr)
        if value is t:          # the kind emitted the node's statement itself (a cost column's row sums)
            return t
        self.defs[t] = value
        self.emit("let", (value,), (), target=t)
        return t

    def reduced(self, e):
        """Σ over the batch of a one-sample formula (a parameter's δ is the sum of each sample's):
        a product of two batched factors is one GEMM over every sample's rows, a value that is
        the same for every sample counts m times."""
        if isinstance(e, sp.MatAdd):
            return sp.Add(*self._tiled([self.reduced(a) for a in e.args]))
        if isinstance(e, sp.MatMul):
            return self._reduced_product(e)
        value = self.scalar(e)
        if not self.batched(value):
            return value if self._summed(value) else BATCH * value
        return self.emit("bsum", (self.materialize(value),), tuple(e.shape) if is_matrix(e) else ())

    def _summed(self, value) -> bool:
        """Whether a formula the same for every sample reads a sum over the batch already."""
        return isinstance(value, sp.Basic) and bool(value.free_symbols & self.summed)

    def _reduced_product(self, e):
        """Σᵢ L Mᵢ R = L (Σᵢ Mᵢ) R for shared L, R; Σᵢ Aᵢ Bᵢ of two batched halves is one GEMM."""
        coeff = sp.Mul(*[a for a in e.args if not isinstance(a, sp.MatrixExpr)])
        mats = [a for a in e.args if isinstance(a, sp.MatrixExpr)]
        sels = [selection(f) for f in mats]
        ops = [sel or self.operand(f) for f, sel in zip(mats, sels)]
        hit = [k for k, o in enumerate(ops) if not sels[k] and self.batched(o)]
        if not hit:
            value = self.scalar(e)
            return value if self._summed(value) else BATCH * value
        lo, hi = hit[0], hit[-1]
        core = mats[lo:hi + 1]
        shape = (core[0].shape[0], core[-1].shape[1])
        if any(sels[lo:hi + 1]):        # a head's selection between two batched factors
            value = self.emit("bsum", (self.materialize(self.scalar(sp.MatMul(*core))),), shape)
        elif len(core) == 1:
            value = self.emit("bsum", (self.materialize(self.unwrap(ops[lo])),), shape)
        else:
            right = core[1] if len(core) == 2 else sp.MatMul(*core[1:])
            a, b = ops[lo], self.operand(right)
            a = a if isinstance(a, Tr) else self.materialize(a)
            b = b if isinstance(b, Tr) else self.materialize(b)
            value = self.emit("bgemm", (a, b), shape)
        for f, o in zip(reversed(mats[:lo]), reversed(ops[:lo])):
            if selection(f):
                value = lower_product(self, [f, Held(value, shape)])
            else:
                value = self.product(o, f.shape, value, shape)
            shape = (f.shape[0], shape[1])
        for f, o in zip(mats[hi + 1:], ops[hi + 1:]):
            if selection(f):
                value = lower_product(self, [Held(value, shape), f])
            else:
                value = self.product(value, shape, o, f.shape)
            shape = (shape[0], f.shape[1])
        return coeff * self.unwrap(value)

    # -- expressions ----------------------------------------------------------------
    def scalar(self, e):
        """The element-wise formula of `e`; what is not element-wise becomes a statement."""
        if isinstance(e, (sp.MatrixSymbol, sp.Symbol)) and e in self.names:
            return self.names[e]
        if isinstance(e, sp.OneMatrix):
            return sp.S.One
        if isinstance(e, sp.ZeroMatrix):
            return sp.S.Zero
        if isinstance(e, sp.Identity) and e.shape == (1, 1):    # δ_c = ∂tr(c)/∂c of a 1×1 cost c
            return sp.S.One
        if isinstance(e, sp.MatAdd):
            return sp.Add(*self._tiled([self.scalar(a) for a in e.args]))
        if isinstance(e, sp.HadamardProduct):
            for kind, nodes in self.recorded.items():   # a kind's closed-form VJP, by its own kernel
                found = kind.lower_vjp(self, e, nodes)
                if found is not None:
                    return found
            return sp.Mul(*[self.scalar(a) for a in e.args])
        if isinstance(e, sp.HadamardPower):
            return self.scalar(e.base) ** self.scalar(e.exp)
        if isinstance(e, sp.MatMul):
            return self._matmul(e)
        if isinstance(e, sp.MatPow) and e.exp.is_Integer and e.exp >= 1:    # A A (SymPy folds it)
            return self._matmul(sp.MatMul(*[e.base] * int(e.exp), evaluate=False))
        if isinstance(e, sp.Transpose):
            inner = e.arg
            if isinstance(inner, sp.MatMul):
                return self.scalar(inner.T.doit(deep=False))
            value = self.scalar(inner)
            if not self.is_array(value):    # c·1 (a node that folded to a constant): c·1ᵀ is c too
                return value
            return self.emit("transpose", (self.materialize(value),), (e.shape[0], e.shape[1]))
        if isinstance(e, ElementwiseApplyFunction):
            return e.function(self.scalar(e.expr))
        if isinstance(e, Kind) and hasattr(e, "lower"):    # a node kind lowers itself (symback.kinds)
            return e.lower(self)
        if isinstance(e, sp.Trace):
            return self._trace(e.arg)
        if isinstance(e, sp.MatrixSlice):
            parent = self.materialize(self.scalar(e.parent))
            # a slice to the end prints as `a:` (the batch size is not known until run time)
            rows, cols = [(int(s[0]), None if s[1] == n else int(s[1]), int(s[2]))
                          for s, n in zip((e.rowslice, e.colslice), e.parent.shape)]
            return self.emit("slice", (parent, rows, cols), tuple(e.shape))
        if isinstance(e, (BatchMean, BatchSum)):
            inner = self.scalar(e.args[0])
            if not self.is_array(inner):       # the same value for every sample
                return inner if isinstance(e, BatchMean) else BATCH * inner
            return self.emit("mean" if isinstance(e, BatchMean) else "sum", (inner,), ())
        if isinstance(e, sp.MatrixExpr):
            raise SymbackError(f"cannot compile the matrix expression {e} ({type(e).__name__})")
        if not isinstance(e, sp.Basic) or e.is_Atom:
            return e
        return e.func(*[self.scalar(a) for a in e.args])

    def _matmul(self, e):
        coeff = sp.Mul(*[a for a in e.args if not isinstance(a, sp.MatrixExpr)])
        mats = [a for a in e.args if isinstance(a, sp.MatrixExpr)]
        if any(selection(a) for a in mats):
            return coeff * lower_product(self, mats)
        items = [(self.operand(a), a.shape) for a in mats]
        value, shape = items[0]
        for right, rshape in items[1:]:
            value, shape = self.product(value, shape, right, rshape), (shape[0], rshape[1])
        return coeff * self.unwrap(value)

    def _tiled(self, terms):
        """Terms of a sum whose pieces tile one axis, joined: blocks padded with zeros
        (c·pad(A_h): each head's δ put back in place) become one concatenation of the blocks,
        and products with row blocks of one matrix (Σ_h A_h W[rows_h]: the heads' outputs times
        Wo) one product of the concatenated A_h with W — one copy and one GEMM instead of a
        zero-filled array, a GEMM and an addition per head.  The other terms are kept."""
        groups: dict = {}
        for k, term in enumerate(terms):
            coeff, sym = term.as_coeff_Mul() if isinstance(term, sp.Mul) else (sp.S.One, term)
            if coeff.free_symbols:
                continue
            if sym in self.pads:
                block, axis, start, n = self.pads[sym]
                groups.setdefault(("pad", axis, n), []).append((start, coeff, block, k))
            elif self._row_block(sym):
                a, w, start = self._row_block(sym)
                groups.setdefault(("rows", w), []).append((start, coeff, a, k))
        done, out = set(), []
        for key, group in groups.items():
            group.sort(key=lambda g: g[0])
            axis = key[1] if key[0] == "pad" else -1          # (the blocks' axis that tiles)
            n = key[2] if key[0] == "pad" else self.shapes[key[1]][-2]
            edges = [g[0] for g in group] + [n]
            widths = [self.shapes[b][axis] for _, _, b, _ in group]
            if len(group) < 2 or edges[0] != 0 or any(a + w != b for a, w, b in zip(edges, widths, edges[1:])):
                continue                            # overlaps or gaps: leave the terms
            coeffs = {c for _, c, _, _ in group}
            common = coeffs.pop() if len(coeffs) == 1 else sp.S.One
            blocks = [b if c == common else self.materialize(c * b) for _, c, b, _ in group]
            shape = list(self.shapes[blocks[0]][-2:])
            shape[axis] = n
            sums = [self.made.get(b) for b in blocks]
            if axis == -2 and all(st is not None and st.op == "bgemm" and st.args[1] == sums[0].args[1]
                                  and isinstance(st.args[0], Tr) for st in sums):
                # rows Σ A_hᵀ B stacked: Σ [A_1 … A_h]ᵀ B, one GEMM (the heads' δWo; the
                # concatenation is the forward pass's own, reused)
                parts = [st.args[0].sym for st in sums]
                a = self.emit("concat", (-1, *parts), (self.shapes[parts[0]][-2],
                                                       sum(self.shapes[x][-1] for x in parts)))
                joined = self.emit("bgemm", (Tr(a), sums[0].args[1]), tuple(shape))
            else:
                joined = self.emit("concat", (axis, *blocks), tuple(shape))
            if key[0] == "rows":
                w = key[1]
                joined = self.emit("matmul", (joined, w), (shape[0], self.shapes[w][-1]))
            out.append(common * joined)
            done |= {k for _, _, _, k in group}
        return out + [t for k, t in enumerate(terms) if k not in done]

    def _row_block(self, sym):
        """(A, W, start) when `sym` is the product A W[start:stop, :] of a (not transposed)
        A with a block of whole rows of the matrix W, else None."""
        st = self.made.get(sym)
        if st is None or st.op != "matmul" or isinstance(st.args[0], Tr) or isinstance(st.args[1], Tr):
            return None
        cut = self.made.get(st.args[1])
        if cut is None or cut.op != "slice" or cut.args[2] != (0, None, 1) or cut.args[1][2] != 1:
            return None
        w = cut.args[0]
        if len(self.shapes.get(w, ())) != 2 or self.batched(w):     # a parameter-like matrix
            return None
        return st.args[0], w, cut.args[1][0]

    def operand(self, a):
        """A product's operand: W.T of a named matrix stays a transposed operand (no copy), the
        rest is a formula."""
        if isinstance(a, sp.Transpose) and isinstance(a.arg, sp.MatrixSymbol) and a.arg in self.names \
                and self.shapes.get(self.names[a.arg], ()) != ():
            return Tr(self.names[a.arg])
        return self.scalar(a)

    def unwrap(self, v):
        """A formula for an operand: a transposed one becomes a transpose statement."""
        # (one sample's shape: emit adds the batch axis back)
        return self.emit("transpose", (v.sym,), tuple(reversed(self.shapes[v.sym][-2:]))) if isinstance(v, Tr) else v

    def product(self, left, lshape, right, rshape):
        """left @ right for formulas; ones-matrices become broadcasts and sums."""
        inner = lshape[1]
        lnum = not isinstance(left, Tr) and not self.is_array(left)
        rnum = not isinstance(right, Tr) and not self.is_array(right)
        if lnum and rnum:                       # c 1 @ d 1 = c d n 1
            return left * right * inner
        if lnum:                                # c 1 @ R: a row broadcast, or c times column sums
            r = self.unwrap(right)
            if inner == 1:
                return left * r
            if self.sample:     # a sample's rows, not the batch: summed over their own axis
                r = self.materialize(r)
                return left * (self.emit("colsum", (r,), (1, rshape[1])) if self.batched(r)
                               else self.emit("bsum", (r,), (rshape[1],)))
            return left * self.emit("colsum", (self.materialize(r),), (rshape[1],))
        if rnum:                                # L @ d 1: a column broadcast, or d times row sums
            l_ = self.unwrap(left)
            return l_ * right if inner == 1 else right * self.emit("rowsum", (l_,), (lshape[0], 1))
        a = left if isinstance(left, Tr) else self.materialize(left)
        b = right if isinstance(right, Tr) else self.materialize(right)
        if isinstance(a, sp.Symbol) and len(self.shapes.get(a, ())) == 1 and not self.batched(b):
            # 1ᵀ D is a 1-D row (column sums, their batch sum): so is its product, 1-D too
            return self.emit("matmul", (a, b), (rshape[1],))
        if self._stored(a)[1] == 1 != inner:        # (v 1ᵀ) B = v (1ᵀ B): v's column held alone
            return self.unwrap(a) * self.product(sp.S.One, (1, inner), b, rshape)
        if self._stored(b)[0] == 1 != inner:        # A (1 r) = (A 1) r
            return self.product(a, lshape, sp.S.One, (inner, 1)) * self.unwrap(b)
        # a broadcast row (1 r: one row stands for equal rows) times B is the broadcast row r B;
        # A times a broadcast column likewise (declared at its full size, it was written in place
        # with values of the full size: NumPy refused)
        rows = 1 if self._stored(a)[0] == 1 else lshape[0]
        cols = 1 if self._stored(b)[-1] == 1 else rshape[1]
        return self.emit("matmul", (a, b), (rows, cols))

    def _stored(self, x) -> tuple:
        """One sample's (rows, columns) of an operand as its array holds them (a broadcast row
        holds one row), or (None, None) where unknown or not a matrix."""
        shape = tuple(self.shapes.get(x.sym if isinstance(x, Tr) else x, ()))[-2:]
        return (tuple(reversed(shape)) if isinstance(x, Tr) else shape) if len(shape) == 2 else (None, None)

    def _trace(self, m):
        """tr of a matrix: 1ᵀ C (a cost column) and tr(Aᵀ B) as sums of entries (each sample's
        own sum in a one-sample graph)."""
        total = self._sample_sum if self.sample else self._sum
        coeff = sp.S.One
        if isinstance(m, sp.MatMul):
            coeff = sp.Mul(*[a for a in m.args if not isinstance(a, sp.MatrixExpr)])
            mats = [a for a in m.args if isinstance(a, sp.MatrixExpr)]
            if len(mats) == 2 and isinstance(mats[0], sp.OneMatrix) and mats[0].shape[0] == 1:
                c = self.scalar(mats[1])                # tr(1ᵀ C): every entry of C, summed
                return coeff * total(self.rowsum_of.get(c, c))
            if len(mats) == 2 and isinstance(mats[0], sp.Transpose) and mats[0].shape == mats[1].T.shape:
                a, b = self.scalar(mats[0].arg), self.scalar(mats[1])   # tr(Aᵀ B) = Σ A ⊙ B
                return coeff * total(a * b)
            m = sp.MatMul(*mats)
        return coeff * self.emit("trace", (self.materialize(self.scalar(m)),), ())

    def _sample_sum(self, formula):
        """Σ of one sample's entries: per sample (m, 1, 1) when batched, else one number."""
        if self.batched(formula):
            return self.emit("ssum", (formula,), (1, 1))
        return self._sum(formula)

    def _sum(self, formula):
        return self.emit("sum", (formula,), ()) if self.is_array(formula) else formula
