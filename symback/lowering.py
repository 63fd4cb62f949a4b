"""A Program's assignments, lowered to array statements a printer can print.

Every value becomes a symbol that stands for a whole array (or a number).
An assignment becomes either a ``let``, a *scalar* SymPy formula over such
symbols that NumPy broadcasting applies entry by entry (a HadamardProduct
is a product, f(Z) is f of the symbol Z, ``1 b`` is just ``b``), or one of
the few operations that are not element-wise (``matmul``, ``colsum``
(1ᵀ D), ``rowsum``, ``rowmax``, ``sum``, ``mean``, ``trace``,
``transpose``, ``slice``, ``pad``, ``concat``), each a :class:`Stmt` of its own.  Scalar and
matrix graphs lower the same way; only the Program's types differ.

Nothing here states a derivative: FPrime is lowered through the
activation's own SymPy-derived ``output_derivative`` (σ' = A(1 − A), when
the forward pass has A = σ(Z)) or ``derivative``, a loss through its SymPy
definition.
"""
from __future__ import annotations

from typing import NamedTuple

import sympy as sp
from sympy.matrices.expressions.applyfunc import ElementwiseApplyFunction

from .engine import BatchMean, BatchSum
from .errors import SymbackError
from .image import IMAGE_OPS, ImageMap, MaxPoolVJP
from .kernels import primes
from .matrix import BATCH, Elementwise, FPrime, RowCost, RowNorm, Softmax, is_matrix
from .vjp import SoftmaxVJP, rownorm_vjp

__all__ = ["Stmt", "Tr", "Lowering", "broadcast", "VIEWS", "EXPR_OPS", "BATCHED_OPS"]

#: operations whose result is a view of their first operand (never overwritten in place)
VIEWS = ("transpose", "slice", "column", "param", "value", "flatten", "unflatten", "pair_item")
#: operations whose operand is an element-wise formula rather than symbols
EXPR_OPS = ("let", "sum", "mean", "rowsum", "ssum")
#: operations whose value carries the batch axis when an operand does (one-sample graphs)
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
        if self.op == "colsum":
            out.add(BATCH)
        return out


class _Held(NamedTuple):
    """A value already lowered (a formula or symbol) and its shape, among matrices to multiply."""

    value: object
    shape: tuple


def _selection(a):
    """("E", (start, stop, n)) for a column selection E, ("Et", ...) for Eᵀ, else None."""
    from .matrix import Select
    if isinstance(a, _Held):
        return None
    if isinstance(a, Select):
        return ("E", a.span)
    if isinstance(a, sp.Transpose) and isinstance(a.arg, Select):
        return ("Et", a.arg.span)
    return None


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

    def __init__(self, names: dict, shapes: dict, fresh, sample: bool = False, shared=(), kernels=()):
        self.names, self.shapes, self.fresh = names, dict(shapes), fresh
        # the printer's fused kernels (symback.kernels): softmax rows and their closed-form VJP
        # as one statement each, an activation's derivative as a marker its kernel prints
        self.kernels = frozenset(kernels)
        self.primes = primes(self.kernels)
        # one-sample graphs: a value that depends on the data carries the batch on a leading
        # axis, its shape (m, rows, cols); ``shared`` targets (a parameter's δ) sum over it
        self.sample, self.shared = sample, set(shared)
        self.stmts: list[Stmt] = []
        self._memo: dict = {}
        self.defs: dict = {}         # code symbol -> its element-wise formula (forward values)
        self.log_of: dict = {}       # softmax output -> log-softmax formula (log-sum-exp)
        self.rowsum_of: dict = {}    # per-sample cost column -> the formula it sums per row
        self.pads: dict = {}         # pad statement's symbol -> (block, axis, start, n)
        self.made: dict = {}         # statement's symbol -> the statement (what a sum's terms are)
        self.softmaxes: set = set()  # graph symbols defined as a Softmax (their VJP's P)
        self.rownorms: dict = {}     # graph symbol defined as a RowNorm -> (it, its layer_norm statement)

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
        if isinstance(expr, Softmax):
            self.softmaxes.add(target)
            value = self._softmax(expr, t)
        elif isinstance(expr, RowNorm) and "layer_norm" in self.kernels:
            value = self._layer_norm(expr)
            self.rownorms[target] = (expr, self.made[value].args[0])
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
            return BATCH * value
        return self.emit("bsum", (self.materialize(value),), tuple(e.shape) if is_matrix(e) else ())

    def _reduced_product(self, e):
        """Σᵢ L Mᵢ R = L (Σᵢ Mᵢ) R for shared L, R; Σᵢ Aᵢ Bᵢ of two batched halves is one GEMM."""
        coeff = sp.Mul(*[a for a in e.args if not isinstance(a, sp.MatrixExpr)])
        mats = [a for a in e.args if isinstance(a, sp.MatrixExpr)]
        sels = [_selection(f) for f in mats]
        ops = [sel or self._operand(f) for f, sel in zip(mats, sels)]
        hit = [k for k, o in enumerate(ops) if not sels[k] and self.batched(o)]
        if not hit:
            return BATCH * self.scalar(e)
        lo, hi = hit[0], hit[-1]
        core = mats[lo:hi + 1]
        shape = (core[0].shape[0], core[-1].shape[1])
        if any(sels[lo:hi + 1]):        # a head's selection between two batched factors
            value = self.emit("bsum", (self.materialize(self.scalar(sp.MatMul(*core))),), shape)
        elif len(core) == 1:
            value = self.emit("bsum", (self.materialize(self._unwrap(ops[lo])),), shape)
        else:
            right = core[1] if len(core) == 2 else sp.MatMul(*core[1:])
            a, b = ops[lo], self._operand(right)
            a = a if isinstance(a, Tr) else self.materialize(a)
            b = b if isinstance(b, Tr) else self.materialize(b)
            value = self.emit("bgemm", (a, b), shape)
        for f, o in zip(reversed(mats[:lo]), reversed(ops[:lo])):
            if _selection(f):
                value = self._selected([f, _Held(value, shape)])
            else:
                value = self._product(o, f.shape, value, shape)
            shape = (f.shape[0], shape[1])
        for f, o in zip(mats[hi + 1:], ops[hi + 1:]):
            if _selection(f):
                value = self._selected([_Held(value, shape), f])
            else:
                value = self._product(value, shape, o, f.shape)
            shape = (shape[0], f.shape[1])
        return coeff * self._unwrap(value)

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
            found = self._softmax_vjp(e) if "softmax_vjp" in self.kernels else None
            if found is not None:       # P ⊙ (D − (D ⊙ P)𝟏𝟏ᵀ): the softmax's backward kernel
                d, p = found
                return self.emit("softmax_vjp", (self.materialize(self.scalar(d)), self.names[p]), tuple(e.shape))
            found = self._rownorm_vjp(e) if "layer_norm" in self.kernels else None
            if found is not None:       # (σ⁻¹𝟏ᵀ) ⊙ (D − mean(D) − Ĥ ⊙ mean(D ⊙ Ĥ)): layer norm's backward kernel
                d, (n, pair) = found
                h = self.made[pair].args[0]
                return self.emit("layer_norm_vjp", (self.materialize(self.scalar(d)), pair, h, n.eps), tuple(e.shape))
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
        if isinstance(e, FPrime):
            return self._fprime(e)
        if isinstance(e, Elementwise):
            return e.function(*[self.scalar(o) for o in e.operands])
        if isinstance(e, Softmax):
            return self._softmax(e, None)
        if isinstance(e, RowNorm):
            return self._layer_norm(e) if "layer_norm" in self.kernels else self.scalar(e.definition())
        if isinstance(e, ImageMap):     # (unfold, pools, flatten: the library's own kernels)
            a = self.materialize(self.scalar(e.arg))
            return self.emit(e.op, (a, tuple(e.geometry)), tuple(e.shape))
        if isinstance(e, MaxPoolVJP):
            d, a = (self.materialize(self.scalar(x)) for x in e.args[:2])
            return self.emit("maxpool_vjp", (d, a, tuple(e.geometry)), tuple(e.shape))
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
        if isinstance(e, SoftmaxVJP):   # (documents' older form; the engine gives the closed form)
            raise SymbackError("cannot compile the derivative of a softmax that does not feed "
                               "cross-entropy directly (its Jacobian-vector product is not fused); "
                               "use softmax with sb.cross_entropy, or another output activation")
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
        if any(_selection(a) for a in mats):
            return coeff * self._selected(mats)
        items = [(self._operand(a), a.shape) for a in mats]
        value, shape = items[0]
        for right, rshape in items[1:]:
            value, shape = self._product(value, shape, right, rshape), (shape[0], rshape[1])
        return coeff * self._unwrap(value)

    def _selected(self, mats):
        """A product with column selections E (multi-head attention's heads): A E is a slice of
        A's columns and Eᵀ B of B's rows (views), done first; E B and A Eᵀ put the block back
        in place among zeros (a pad); the rest multiply left to right."""
        items = [(a.value, a.shape) if isinstance(a, _Held) else _selection(a) or (self._operand(a), tuple(a.shape))
                 for a in mats]
        changed = True
        while changed:
            changed = False
            for i in range(len(items) - 1):
                (a, ash), (b, bsh) = items[i], items[i + 1]
                left = items[i - 1][0] if i else None
                if "head_products" in self.kernels and b == "E" and not isinstance(a, str) \
                        and left is not None and not isinstance(left, str) and self.batched(left) \
                        and not self.batched(a):
                    # L W E: (L W) E, the product with the whole shared W, one GEMM that every
                    # head's slice reuses (the statement is memoised), not one per head
                    items[i - 1:i + 1] = [(self._product(left, items[i - 1][1], a, ash), (items[i - 1][1][0], ash[1]))]
                    changed = True
                    break
                if not isinstance(a, str) and b == "E":                    # A E: columns of A
                    start, stop, _ = bsh
                    items[i:i + 2] = [(self._cut(a, ash, None, (start, stop)), (ash[0], stop - start))]
                elif a == "Et" and not isinstance(b, str):                 # Eᵀ B: rows of B
                    start, stop, _ = ash
                    items[i:i + 2] = [(self._cut(b, bsh, (start, stop), None), (stop - start, bsh[1]))]
                else:
                    continue
                changed = True
                break
        value, shape = items[0]
        if value == "E":                                                   # E B: rows put back
            (start, stop, n), (value, shape) = shape, items[1]
            value, shape, items = self._pad(value, -2, start, n), (n, shape[1]), items[1:]
        for right, rshape in items[1:]:
            if right == "Et":                                              # A Eᵀ: columns put back
                start, stop, n = rshape
                value, shape = self._pad(value, -1, start, n), (shape[0], n)
            else:
                value, shape = self._product(value, shape, right, rshape), (shape[0], rshape[1])
        return self._unwrap(value)

    def _cut(self, a, shape, rows, cols):
        a = self.materialize(self._unwrap(a))
        whole = lambda span, n: (0, None, 1) if span is None else (span[0], span[1], 1)   # noqa: E731
        out = (rows[1] - rows[0] if rows else shape[0], cols[1] - cols[0] if cols else shape[1])
        return self.emit("slice", (a, whole(rows, shape[0]), whole(cols, shape[1])), out)

    def _pad(self, a, axis, start, n):
        a = self.materialize(self._unwrap(a))
        shape = list(self.shapes[a][-2:]) if a in self.shapes else []
        width = shape[axis] if shape else None
        shape[axis] = n
        t = self.emit("pad", (a, axis, start, n - start - width), tuple(shape))
        self.pads[t] = (a, axis, start, n)
        return t

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

    def _operand(self, a):
        # W.T of a named matrix stays a transposed operand (no copy); the rest is a formula
        if isinstance(a, sp.Transpose) and isinstance(a.arg, sp.MatrixSymbol) and a.arg in self.names \
                and self.shapes.get(self.names[a.arg], ()) != ():
            return Tr(self.names[a.arg])
        return self.scalar(a)

    def _unwrap(self, v):
        # (one sample's shape: emit adds the batch axis back)
        return self.emit("transpose", (v.sym,), tuple(reversed(self.shapes[v.sym][-2:]))) if isinstance(v, Tr) else v

    def _product(self, left, lshape, right, rshape):
        """left @ right for formulas; ones-matrices become broadcasts and sums."""
        inner = lshape[1]
        lnum = not isinstance(left, Tr) and not self.is_array(left)
        rnum = not isinstance(right, Tr) and not self.is_array(right)
        if lnum and rnum:                       # c 1 @ d 1 = c d n 1
            return left * right * inner
        if lnum:                                # c 1 @ R: a row broadcast, or c times column sums
            r = self._unwrap(right)
            if inner == 1:
                return left * r
            if self.sample:     # a sample's rows, not the batch: summed over their own axis
                r = self.materialize(r)
                return left * (self.emit("colsum", (r,), (1, rshape[1])) if self.batched(r)
                               else self.emit("bsum", (r,), (rshape[1],)))
            return left * self.emit("colsum", (self.materialize(r),), (rshape[1],))
        if rnum:                                # L @ d 1: a column broadcast, or d times row sums
            l_ = self._unwrap(left)
            return l_ * right if inner == 1 else right * self.emit("rowsum", (l_,), (lshape[0], 1))
        a = left if isinstance(left, Tr) else self.materialize(left)
        b = right if isinstance(right, Tr) else self.materialize(right)
        return self.emit("matmul", (a, b), (lshape[0], rshape[1]))

    def _trace(self, m):
        if self.sample:
            return self._sample_trace(m)
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

    def _sample_trace(self, m):
        """tr of a one-sample matrix: 1ᵀ c (a cost column) and tr(Aᵀ B) as sums of entries."""
        coeff = sp.S.One
        if isinstance(m, sp.MatMul):
            coeff = sp.Mul(*[a for a in m.args if not isinstance(a, sp.MatrixExpr)])
            mats = [a for a in m.args if isinstance(a, sp.MatrixExpr)]
            if len(mats) == 2 and isinstance(mats[0], sp.OneMatrix) and mats[0].shape[0] == 1:
                c = self.scalar(mats[1])
                return coeff * self._sample_sum(self.rowsum_of.get(c, c))
            if len(mats) == 2 and isinstance(mats[0], sp.Transpose) and mats[0].shape == mats[1].T.shape:
                return coeff * self._sample_sum(self.scalar(mats[0].arg) * self.scalar(mats[1]))
            m = sp.MatMul(*mats)
        return coeff * self.emit("trace", (self.materialize(self.scalar(m)),), ())

    def _sample_sum(self, formula):
        """Σ of one sample's entries: per sample (m, 1, 1) when batched, else one number."""
        if self.batched(formula):
            return self.emit("ssum", (formula,), (1, 1))
        return self._sum(formula)

    def _sum(self, formula):
        return self.emit("sum", (formula,), ()) if self.is_array(formula) else formula

    def _fprime(self, e: FPrime):
        z = self.scalar(e.arg)
        act, body = e.activation, e.function.expr
        a = next((s for s, v in self.defs.items() if v == body.func(z, *body.args[1:])), None)
        if a is not None and body.args[1:] == () and act.output_derivative is not None:
            return act.output_derivative(a)         # f'(Z) = g(A): the forward value reused
        if act in self.primes and body.args[1:] == ():
            return self.primes[act](z)              # f'(Z) by the library's one-pass kernel
        w = sp.Dummy("w", real=True)         # f' taken at a variable, then applied to the formula
        return e.scalar(w).xreplace({w: z})

    def _softmax_vjp(self, e: sp.HadamardProduct):
        """(D, P) when `e` is P ⊙ (D − (D ⊙ P)𝟏𝟏ᵀ) with P a Softmax node's symbol — the
        closed form :func:`symback.vjp.softmax_vjp` derives, read off its structure — else None."""
        if len(e.args) != 2:
            return None
        for p, rest in (e.args, e.args[::-1]):
            if p not in self.softmaxes or not isinstance(rest, sp.MatAdd) or len(rest.args) != 2:
                continue
            for d, m in (rest.args, rest.args[::-1]):
                coeff = sp.Mul(*[a for a in getattr(m, "args", ()) if not isinstance(a, sp.MatrixExpr)])
                mats = [a for a in getattr(m, "args", ()) if isinstance(a, sp.MatrixExpr)]
                if not isinstance(m, sp.MatMul) or coeff != -1 or len(mats) < 2 \
                        or not isinstance(mats[0], sp.HadamardProduct) or sorted(mats[0].args, key=str) != \
                        sorted((d, p), key=str) or not all(isinstance(o, sp.OneMatrix) for o in mats[1:]) \
                        or sp.MatMul(*mats[1:]).shape != (p.shape[1], p.shape[1]):
                    continue
                return d, p
        return None

    def _layer_norm(self, e: RowNorm):
        """Ĥ = norm(H) by the library's layer-norm kernel: a ``layer_norm`` statement (Ĥ with
        each row's mean and 1/σ, which the backward kernel reads) and Ĥ, its item 0."""
        h = self.materialize(self.scalar(e.arg))
        pair = self.emit("layer_norm", (h, e.eps), tuple(e.shape))
        return self.emit("pair_item", (pair, 0), tuple(e.shape))

    def _rownorm_vjp(self, e: sp.HadamardProduct):
        """(D, (the RowNorm, its layer_norm statement)) when `e` is exactly the closed form
        :func:`symback.vjp.rownorm_vjp` derives for a RowNorm node of this graph and some δ_Ĥ = D
        (rebuilt from each term of `e`'s sum and compared), else None."""
        inner = next((a for a in e.args if isinstance(a, sp.MatAdd)), None)
        if len(e.args) != 2 or inner is None:
            return None
        for p, (n, pair) in self.rownorms.items():
            if p not in e.free_symbols:
                continue
            for d in inner.args:
                closed = rownorm_vjp(n, d, p)
                if e == closed or e == closed.doit():      # (the engine's sums are doit()-ed)
                    return d, (n, pair)
        return None

    def _softmax(self, e: Softmax, target):
        """softmax row by row, shifted by the row max; records the log-softmax for losses.
        A masked entry is −∞ before the shift, so its exponential is 0.  With the printer's
        ``softmax`` kernel: one statement each for softmax and log-softmax of the masked rows."""
        z = self.materialize(self.scalar(e.arg))
        rows, cols = e.shape
        if e.mask is not None:
            z = self.emit("mask", (z, e.mask), (rows, cols))
        if "softmax" in self.kernels:      # (the log-softmax statement goes unless a loss reads it)
            value = self.emit("softmax", (z,), (rows, cols))
            self.log_of[target if target is not None else value] = self.emit("log_softmax", (z,), (rows, cols))
            return value
        zs = self.emit("let", (z - self.emit("rowmax", (z,), (rows, 1)),), ())
        ex = self.emit("let", (sp.exp(zs),), ())
        total = self.emit("rowsum", (ex,), (rows, 1))
        value = ex / total
        key = target if target is not None else self.materialize(value)
        self.log_of[key] = zs - sp.log(total)     # log softmax = (z − max) − log Σ exp(z − max)
        return value if target is not None else key

    def _row_loss(self, e: RowCost):
        """ℓ(Ŷ, Y) entry by entry from the loss's definition; log Ŷ of a softmax as log-softmax."""
        lf = e.loss
        yhat, y = self.scalar(e.prediction), self.scalar(e.target)
        body = lf.expr.xreplace({lf.prediction: yhat, lf.target: y})
        if yhat in self.log_of:
            body = body.replace(lambda x: isinstance(x, sp.log) and x.args[0] == yhat,
                                lambda x: self.log_of[yhat])
        return body
