"""A Program's assignments, lowered to array statements a printer can print.

Every value becomes a symbol that stands for a whole array (or a number).  An assignment
becomes either a ``let``, a *scalar* SymPy formula over such symbols that NumPy broadcasting
applies entry by entry (a HadamardProduct is a product, f(Z) is f of the symbol Z, ``1 b`` is
just ``b``), or one of the few operations that are not element-wise (``matmul``, ``colsum``
(1ᵀ D), ``rowsum``, ``rowmax``, ``sum``, ``mean``, ``trace``, ``transpose``, ``slice``,
``pad``, ``concat``), each a :class:`Stmt` of its own.  Scalar and matrix graphs lower the
same way; only the Program's types differ.

Each node kind lowers itself (its ``lower`` method in :mod:`symback.kinds`, called with
this Lowering; its closed-form VJP's kernel through ``lower_vjp``), so nothing here names a
kind or states a derivative: f'(Z) is lowered through the activation's own SymPy-derived
forms, a loss through its SymPy definition.
"""
from __future__ import annotations

import sympy as sp
from sympy.matrices.expressions.applyfunc import ElementwiseApplyFunction

from .engine import BatchMean, BatchSum
from .errors import SymbackError
from .image import IMAGE_OPS
from .kernels import primes
from .kinds.base import BATCH, Kind, is_matrix
from .kinds.select import Held, lower_product, selection
from .stmt import Stmt, Tr
from .tiling import tiled

__all__ = ["Stmt", "Tr", "Lowering", "broadcast", "select", "VIEWS", "EXPR_OPS", "BATCHED_OPS"]

#: operations whose result is a view of their first operand (never overwritten in place)
VIEWS = ("transpose", "slice", "column", "param", "value", "flatten", "unflatten", "pair_item")
#: operations whose operand is an element-wise formula rather than symbols
EXPR_OPS = ("let", "sum", "mean", "rowsum", "ssum")
#: operations whose value carries the batch axis when an operand does (one-sample graphs)
BATCHED_OPS = ("matmul", "transpose", "slice", "colsum", "rowsum", "rowmax", "trace", "ssum", "mask", "pad",
               "concat", "softmax", "log_softmax", "softmax_vjp", "layer_norm", "layer_norm_vjp", "pair_item") + IMAGE_OPS


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
            return sp.Add(*tiled(self, [self.reduced(a) for a in e.args]))
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
            one = self.materialize(self.unwrap(ops[lo]))
            value = self.emit("bsum", (one,), self._dims(one))
        else:
            right = core[1] if len(core) == 2 else sp.MatMul(*core[1:])
            a, b, n = ops[lo], self.operand(right), core[0].shape[1]
            if n != 1 and self._spread(a, -1):          # Σᵢ (vᵢ 1ᵀ) Rᵢ = Σᵢ vᵢ (1ᵀ Rᵢ)
                a, b = self.unwrap(a), self._colsums(b, n)
            elif n != 1 and self._spread(b, -2):        # Σᵢ Lᵢ (1 uᵢ) = Σᵢ (Lᵢ 1) uᵢ
                a, b = self._rowsums(a, n), self.unwrap(b)
            a = a if isinstance(a, Tr) else self.materialize(a)
            b = b if isinstance(b, Tr) else self.materialize(b)
            value = self.emit("bgemm", (a, b), (self._dims(a)[0], self._dims(b)[1]))
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
            return sp.Add(*tiled(self, [self.scalar(a) for a in e.args]))
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
            # a broadcast (1 b, one row long as computed) stays one long: (1b)ᵀ is bᵀ, a column
            v = self.materialize(value)
            return self.emit("transpose", (v,), tuple(reversed(self._dims(v))))
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

    def operand(self, a):
        """A product's operand: W.T of a named matrix stays a transposed operand (no copy), the
        rest is a formula."""
        if isinstance(a, sp.Transpose) and isinstance(a.arg, sp.MatrixSymbol) and a.arg in self.names \
                and len(self.shapes.get(self.names[a.arg], ())) > 1:     # (a 1-D row's is a column)
            return Tr(self.names[a.arg])
        return self.scalar(a)

    def unwrap(self, v):
        """A formula for an operand: a transposed one becomes a transpose statement."""
        # (one sample's shape: emit adds the batch axis back)
        return self.emit("transpose", (v.sym,), tuple(reversed(self.shapes[v.sym][-2:]))) if isinstance(v, Tr) else v

    def product(self, left, lshape, right, rshape):
        """left @ right for formulas; ones-matrices become broadcasts and sums.  A value that such
        a broadcast left one row or column long (1 X: X's column sums, on every row) is spread
        along the product's inner axis, and the product is an outer one: (v 1ᵀ) R = v (1ᵀ R)."""
        inner = lshape[1]
        lnum = not isinstance(left, Tr) and not self.is_array(left)
        rnum = not isinstance(right, Tr) and not self.is_array(right)
        if lnum and rnum:                       # c 1 @ d 1 = c d n 1
            return left * right * inner
        if lnum:                                # c 1 @ R: a row broadcast, or c times column sums
            return left * self._colsums(right, inner)
        if rnum:                                # L @ d 1: a column broadcast, or d times row sums
            return right * self._rowsums(left, inner)
        if inner != 1 and self._spread(left, -1):       # (v 1ᵀ) R = v (1ᵀ R)
            return self.unwrap(left) * self._colsums(right, inner)
        if inner != 1 and self._spread(right, -2):      # L (1 u) = (L 1) u
            return self._rowsums(left, inner) * self.unwrap(right)
        a = left if isinstance(left, Tr) else self.materialize(left)
        b = right if isinstance(right, Tr) else self.materialize(right)
        if self._flat(b) and inner == 1:                # a column times a 1-D row: their outer product
            return self.unwrap(a) * b
        if self._flat(a) and self.batched(b):           # u R, u a 1-D row (1ᵀ W) and R batched: as
            # ((Rᵀ ⊙ u) 1)ᵀ, one row a sample (a product with u would drop the sample's row axis)
            cols = self._dims(b)[1]
            rt = b.sym if isinstance(b, Tr) else self.emit("transpose", (b,), (cols, self._dims(b)[0]))
            return self.emit("transpose", (self.emit("rowsum", (rt * a,), (cols, 1)),), (1, cols))
        if self._flat(a):                               # 1ᵀ D times a shared matrix: a 1-D row, as the sums
            return self.emit("matmul", (a, b), (self._dims(b)[1],))
        return self.emit("matmul", (a, b), (self._dims(a)[0], self._dims(b)[1]))

    def _flat(self, operand) -> bool:
        """Whether an operand's value is a 1-D array (a row of column sums)."""
        return not isinstance(operand, Tr) and len(self.shape_of(operand)) == 1

    def _dims(self, operand) -> tuple:
        """(rows, columns) of an operand's value as computed: 1 along an axis a ones product left as
        a broadcast; a 1-D value is one row, a number one entry."""
        shape = tuple(reversed(self.shapes[operand.sym][-2:])) if isinstance(operand, Tr) else self.shape_of(operand)
        return ((1, 1) + tuple(shape))[-2:]

    def _spread(self, operand, axis) -> bool:
        """Whether an operand's value is one long along `axis` (-2 rows, -1 columns)."""
        return self._dims(operand)[axis] == 1

    def _colsums(self, right, inner):
        """1ᵀ R over R's `inner` rows: R itself for one row, inner·R for one standing for equal ones."""
        r = self.unwrap(right)
        if inner == 1:
            return r
        if self._spread(right, -2):
            return inner * r
        if self.sample:     # a sample's rows, not the batch: summed over their own axis
            r = self.materialize(r)
            cols = self._dims(r)[1]
            return self.emit("colsum", (r,), (1, cols)) if self.batched(r) else self.emit("bsum", (r,), (cols,))
        r = self.materialize(r)
        rows, cols = self._dims(r)
        # 1ᵀ D over the batch's rows (a BLAS product with a row of m ones); other rows (1ᵀ W,
        # 1ᵀ Xᵀ) summed along their own axis
        return self.emit("colsum" if rows == BATCH else "bsum", (r,), (cols,))

    def _rowsums(self, left, inner):
        """L 1 over L's `inner` columns, as :meth:`_colsums`."""
        l_ = self.unwrap(left)
        if inner == 1:
            return l_
        if self._spread(left, -1):
            return inner * l_
        if self._flat(l_):      # a 1-D row (1ᵀ D summed over the samples) times 1: its total
            return self._sum(l_)    # (its rowsum, axis 1 of a 1-D array, raised: 1ᵀXᵀD Vᵀ X 1 w)
        return self.emit("rowsum", (l_,), (self._dims(l_)[0], 1))

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
