"""A Program's assignments, lowered to array statements a printer can print.

Every value becomes a symbol that stands for a whole array (or a number).
An assignment becomes either a ``let``, a *scalar* SymPy formula over such
symbols that NumPy broadcasting applies entry by entry (a HadamardProduct
is a product, f(Z) is f of the symbol Z, ``1 b`` is just ``b``), or one of
the few operations that are not element-wise (``matmul``, ``colsum``
(1ᵀ D), ``rowsum``, ``rowmax``, ``sum``, ``mean``, ``trace``,
``transpose``, ``slice``), each a :class:`Stmt` of its own.  Scalar and
matrix graphs lower the same way; only the Program's types differ.

Nothing here states a derivative: FPrime is lowered through the
activation's own SymPy-derived ``output_derivative`` (σ' = A(1 − A), when
the forward pass has A = σ(Z)) or ``derivative``, a loss through its SymPy
definition.
"""
from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import sympy as sp
from sympy.matrices.expressions.applyfunc import ElementwiseApplyFunction

from .engine import BatchMean, BatchSum
from .errors import SymbackError
from .matrix import BATCH, Elementwise, FPrime, RowCost, Softmax
from .vjp import SoftmaxVJP

__all__ = ["Stmt", "Tr", "Lowering", "broadcast", "VIEWS", "EXPR_OPS", "SOFTMAX_VJP", "softmax_vjp_form"]

#: operations whose result is a view of their first operand (never overwritten in place)
VIEWS = ("transpose", "slice", "column", "param", "value")
#: operations whose operand is an element-wise formula rather than symbols
EXPR_OPS = ("let", "sum", "mean", "rowsum")


# ------------------------------------------------------------------ softmax's VJP, closed form
_D, _P = sp.symbols("delta_P P", real=True)
_ROWSUM = sp.Function("rowsum")
#: δ_Z = P ⊙ (δ_P − rowsum(δ_P ⊙ P)) for P = softmax(Z) row by row (FlashAttention's dS),
#: entry by entry; rowsum(f) is Σ_k f over the row.  Proved equal to SoftmaxVJP's
#: definition (SymPy's derivatives of softmax) before its first use: :func:`softmax_vjp_proved`.
SOFTMAX_VJP = _P * (_D - _ROWSUM(_D * _P))


@lru_cache(maxsize=None)
def softmax_vjp_proved(form=SOFTMAX_VJP, widths=(2, 3, 4)) -> bool:
    """SymPy: `form`, read entry by entry, equals :meth:`SoftmaxVJP.entries` (Σ_k δ_k ∂s_k/∂z_j
    of softmax's definition) for rows of each width, exp(z_k) written as positive symbols e_k."""
    for K in widths:
        d = sp.symbols(f"d0:{K}", real=True)
        z = sp.symbols(f"z0:{K}", real=True)
        e = sp.symbols(f"e0:{K}", positive=True)
        s = [ek / sum(e) for ek in e]
        logs = {zk: sp.log(ek) for zk, ek in zip(z, e)}        # exp(2 z_k) becomes e_k² too
        defined = SoftmaxVJP(sp.MatrixSymbol("D", 1, K), sp.MatrixSymbol("Z", 1, K)).entries([d], [z])

        def entry(f, j):
            f = f.replace(lambda x: isinstance(x, _ROWSUM), lambda x: sum(entry(x.args[0], k) for k in range(K)))
            return f.xreplace({_D: d[j], _P: s[j]})
        for j in range(K):
            if sp.cancel(defined[0, j].xreplace(logs) - entry(form, j)) != 0:
                return False
    return True


def softmax_vjp_form(delta, value, rowsum):
    """``SOFTMAX_VJP`` for an adjoint formula `delta` and softmax value `value`; ``rowsum(f)``
    gives the code symbol of f's row sums.  Refuses to run unless the form is proved."""
    if not softmax_vjp_proved():
        raise SymbackError("internal: SymPy does not confirm softmax's closed-form VJP")
    return SOFTMAX_VJP.replace(lambda x: isinstance(x, _ROWSUM), lambda x: rowsum(x.args[0].xreplace(
        {_D: delta, _P: value}))).xreplace({_D: delta, _P: value})


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
        if self.op == "colsum":
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


class Lowering:
    """Turns assignments (symbol, SymPy expression) into :class:`Stmt` lists.

    ``names`` maps each graph symbol (and adjoint) to the code symbol that
    stands for its array; ``shapes`` gives those symbols' shapes.  Call
    :meth:`assign` for each assignment in order; ``stmts`` collects them.
    """

    def __init__(self, names: dict, shapes: dict, fresh):
        self.names, self.shapes, self.fresh = names, dict(shapes), fresh
        self.stmts: list[Stmt] = []
        self._memo: dict = {}
        self.defs: dict = {}         # code symbol -> its element-wise formula (forward values)
        self.log_of: dict = {}       # softmax output -> log-softmax formula (log-sum-exp)
        self.rowsum_of: dict = {}    # per-sample cost column -> the formula it sums per row

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
    def emit(self, op: str, args: tuple, shape: tuple, target=None) -> sp.Symbol:
        """Append a statement (an equal one already emitted is reused) and return its symbol."""
        key = (op, args)
        if target is None and key in self._memo:
            return self._memo[key]
        t = target if target is not None else self.fresh()
        if op == "let":
            shape = self.shape_of(args[0])
        self.shapes[t] = shape
        self.stmts.append(Stmt(t, op, args, shape))
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
        if isinstance(expr, Softmax):
            value = self._softmax(expr, t)
        elif isinstance(expr, RowCost):
            body = self._row_loss(expr)
            self.rowsum_of[t] = body
            self.emit("rowsum", (body,), (expr.shape[0], 1), target=t)
            return t
        else:
            value = self.scalar(expr)
        self.defs[t] = value
        self.emit("let", (value,), (), target=t)
        return t

    # -- expressions ----------------------------------------------------------------
    def scalar(self, e):
        """The element-wise formula of `e`; what is not element-wise becomes a statement."""
        if isinstance(e, (sp.MatrixSymbol, sp.Symbol)) and e in self.names:
            return self.names[e]
        if isinstance(e, sp.OneMatrix):
            return sp.S.One
        if isinstance(e, sp.ZeroMatrix):
            return sp.S.Zero
        if isinstance(e, sp.MatAdd):
            return sp.Add(*[self.scalar(a) for a in e.args])
        if isinstance(e, sp.HadamardProduct):
            return sp.Mul(*[self.scalar(a) for a in e.args])
        if isinstance(e, sp.HadamardPower):
            return self.scalar(e.base) ** self.scalar(e.exp)
        if isinstance(e, sp.MatMul):
            return self._matmul(e)
        if isinstance(e, sp.Transpose):
            inner = e.arg
            if isinstance(inner, sp.MatMul):
                return self.scalar(inner.T.doit(deep=False))
            return self.emit("transpose", (self.materialize(self.scalar(inner)),), (e.shape[0], e.shape[1]))
        if isinstance(e, ElementwiseApplyFunction):
            return e.function(self.scalar(e.expr))
        if isinstance(e, FPrime):
            return self._fprime(e)
        if isinstance(e, Elementwise):
            return e.function(*[self.scalar(o) for o in e.operands])
        if isinstance(e, Softmax):
            return self._softmax(e, None)
        if isinstance(e, RowCost):
            body = self._row_loss(e)
            return self.emit("rowsum", (body,), (e.shape[0], 1))
        if isinstance(e, sp.Trace):
            return self._trace(e.arg)
        if isinstance(e, sp.MatrixSlice):
            parent = self.materialize(self.scalar(e.parent))
            # a slice to the end prints as `a:` (the batch size is not known until run time)
            rows, cols = [(int(s[0]), None if s[1] == n else int(s[1]), int(s[2]))
                          for s, n in zip((e.rowslice, e.colslice), e.parent.shape)]
            return self.emit("slice", (parent, rows, cols), tuple(e.shape))
        if isinstance(e, SoftmaxVJP):
            return self._softmax_vjp(e)
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
        items = [(self._operand(a), a.shape) for a in e.args if isinstance(a, sp.MatrixExpr)]
        value, shape = items[0]
        for right, rshape in items[1:]:
            value, shape = self._product(value, shape, right, rshape), (shape[0], rshape[1])
        return coeff * self._unwrap(value)

    def _operand(self, a):
        # W.T of a named matrix stays a transposed operand (no copy); the rest is a formula
        if isinstance(a, sp.Transpose) and isinstance(a.arg, sp.MatrixSymbol) and a.arg in self.names:
            return Tr(self.names[a.arg])
        return self.scalar(a)

    def _unwrap(self, v):
        return self.emit("transpose", (v.sym,), tuple(reversed(self.shapes[v.sym]))) if isinstance(v, Tr) else v

    def _product(self, left, lshape, right, rshape):
        """left @ right for formulas; ones-matrices become broadcasts and sums."""
        inner = lshape[1]
        lnum = not isinstance(left, Tr) and not self.is_array(left)
        rnum = not isinstance(right, Tr) and not self.is_array(right)
        if lnum and rnum:                       # c 1 @ d 1 = c d n 1
            return left * right * inner
        if lnum:                                # c 1 @ R: a row broadcast, or c times column sums
            r = self._unwrap(right)
            return left * r if inner == 1 else left * self.emit("colsum", (self.materialize(r),), (rshape[1],))
        if rnum:                                # L @ d 1: a column broadcast, or d times row sums
            l_ = self._unwrap(left)
            return l_ * right if inner == 1 else right * self.emit("rowsum", (l_,), (lshape[0], 1))
        a = left if isinstance(left, Tr) else self.materialize(left)
        b = right if isinstance(right, Tr) else self.materialize(right)
        return self.emit("matmul", (a, b), (lshape[0], rshape[1]))

    def _trace(self, m):
        coeff = sp.S.One
        if isinstance(m, sp.MatMul):
            coeff = sp.Mul(*[a for a in m.args if not isinstance(a, sp.MatrixExpr)])
            mats = [a for a in m.args if isinstance(a, sp.MatrixExpr)]
            if len(mats) == 2 and isinstance(mats[0], sp.OneMatrix) and mats[0].shape[0] == 1:
                c = self.scalar(mats[1])                # tr(1ᵀ C): every entry of C, summed
                return coeff * self._sum(self.rowsum_of.get(c, c))
            if len(mats) == 2 and isinstance(mats[0], sp.Transpose) and mats[0].shape == mats[1].T.shape:
                a, b = self.scalar(mats[0].arg), self.scalar(mats[1])   # tr(Aᵀ B) = Σ A ⊙ B
                return coeff * self._sum(a * b)
            m = sp.MatMul(*mats)
        return coeff * self.emit("trace", (self.materialize(self.scalar(m)),), ())

    def _sum(self, formula):
        return self.emit("sum", (formula,), ()) if self.is_array(formula) else formula

    def _fprime(self, e: FPrime):
        z = self.scalar(e.arg)
        act, body = e.activation, e.function.expr
        a = next((s for s, v in self.defs.items() if v == body.func(z, *body.args[1:])), None)
        if a is not None and body.args[1:] == () and act.output_derivative is not None:
            return act.output_derivative(a)         # f'(Z) = g(A): the forward value reused
        w = sp.Dummy("w", real=True)         # f' taken at a variable, then applied to the formula
        return e.scalar(w).xreplace({w: z})

    def _softmax(self, e: Softmax, target):
        """softmax row by row, shifted by the row max; records the log-softmax for losses."""
        z = self.materialize(self.scalar(e.arg))
        rows, cols = e.shape
        zs = self.emit("let", (z - self.emit("rowmax", (z,), (rows, 1)),), ())
        ex = self.emit("let", (sp.exp(zs),), ())
        total = self.emit("rowsum", (ex,), (rows, 1))
        value = ex / total
        key = target if target is not None else self.materialize(value)
        self.log_of[key] = zs - sp.log(total)     # log softmax = (z − max) − log Σ exp(z − max)
        return value if target is not None else key

    def _softmax_vjp(self, e: SoftmaxVJP):
        """δ_Z of S = softmax(Z) by :data:`SOFTMAX_VJP` (proved equal to SoftmaxVJP's definition)."""
        delta = self.scalar(e.args[0])
        value = self.scalar(Softmax(e.args[1]))     # the forward softmax's statements, reused
        rows = e.shape[0]

        def rowsum(formula):
            return self.emit("rowsum", (formula,), (rows, 1))
        return softmax_vjp_form(delta, value, rowsum)

    def _row_loss(self, e: RowCost):
        """ℓ(Ŷ, Y) entry by entry from the loss's definition; log Ŷ of a softmax as log-softmax."""
        lf = e.loss
        yhat, y = self.scalar(e.prediction), self.scalar(e.target)
        body = lf.expr.xreplace({lf.prediction: yhat, lf.target: y})
        if yhat in self.log_of:
            body = body.replace(lambda x: isinstance(x, sp.log) and x.args[0] == yhat,
                                lambda x: self.log_of[yhat])
        return body
