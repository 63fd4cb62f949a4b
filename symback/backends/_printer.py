"""ArrayPrinter: ``_print_X`` methods for matrix expressions and symback's classes.

Mixed in front of SymPy's JaxPrinter or TorchPrinter; a backend names its
array module, reductions and softmax only.
"""
from __future__ import annotations

import sympy as sp
from sympy.matrices.expressions.applyfunc import ElementwiseApplyFunction

from ..engine import BATCH_SIZE
from ..errors import SymbackError
from ..functions import Activation
from ._common import NATIVE, Code, _row_cost, _split, lower

__all__ = ["ArrayPrinter"]


class ArrayPrinter:
    """``_print_X`` methods for matrix expressions and symback's classes, for array libraries.

    Mixed in front of SymPy's JaxPrinter or TorchPrinter.  A subclass sets
    ``lib`` (the module prefix in the generated text) and
    :meth:`_reduce`, :meth:`_softmax`; ``names`` maps symbols to the
    generated identifiers.  Rows are samples: ``1 b`` (a column of ones
    times a row) prints as ``b`` broadcast, ``1ᵀ D`` as a column sum.
    """

    lib = "xp"

    def __init__(self, names: dict, settings=None):
        super().__init__(settings or {})
        self.names = names

    def _print(self, expr, **kwargs):
        if isinstance(expr, Activation):         # its class name (tanh) could shadow a method
            if type(expr).__name__ in NATIVE and len(expr.args) == 1:
                return self._native(type(expr).__name__, self._print(expr.args[0]))
            return self._print(lower(expr))
        return super()._print(expr, **kwargs)

    # -- names and numbers --------------------------------------------------
    def _print_Code(self, expr):
        return expr.name

    def _print_Symbol(self, expr):
        return self.names.get(expr, None) or self.names.get(expr.name, expr.name)

    _print_Dummy = _print_Symbol

    def _print_Adjoint(self, expr):
        # symback's δ symbol, not SymPy's conjugate transpose of the same class name
        if isinstance(expr, sp.Symbol):
            return self._print_Symbol(expr)
        return super()._print_Adjoint(expr)

    def _print_MatrixSymbol(self, expr):
        return self.names.get(expr.name, expr.name)

    def _dim(self, d):
        return "_m" if d == BATCH_SIZE else self._print(d)

    def _shape(self, shape):
        return "(" + ", ".join(self._dim(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"

    def _full(self, value, shape):
        return f"{self.lib}.full({self._shape(shape)}, {value}, dtype=DTYPE)"

    # -- elementary functions -------------------------------------------------
    def _fn(self, name, *args):
        return f"{self.lib}.{name}({', '.join(args)})"

    def _print_log(self, expr):
        a = expr.args[0]
        if isinstance(a, sp.Add) and sp.S.One in a.args:
            return self._fn("log1p", self._print(a - 1))
        return self._fn("log", self._print(a))

    def _print_Pow(self, expr, rational=False):
        b, e = expr.args
        pb = self.parenthesize(b, sp.printing.precedence.PRECEDENCE["Pow"])
        if e == -1:
            return f"1/{pb}"
        if e == 2:
            return f"{pb}*{pb}"
        if e == sp.S.Half:
            return self._fn("sqrt", self._print(b))
        return f"{pb}**{self.parenthesize(e, sp.printing.precedence.PRECEDENCE['Pow'])}"

    def _print_Piecewise(self, expr):
        pieces = list(expr.args)
        if pieces[-1].cond != sp.true:
            raise SymbackError(f"a Piecewise without an otherwise-branch cannot be printed: {expr}")
        val = lambda v: f"{float(v)!r}" if v.is_Number else self._print(v)
        constant = all(p.expr.is_Number for p in pieces)
        out = self._typed(float(pieces[-1].expr)) if constant else val(pieces[-1].expr)
        for p in reversed(pieces[:-1]):
            out = self._fn("where", self._print(p.cond), val(p.expr), out)
        return out

    def _print_Relational(self, expr):
        return f"({self._print(expr.lhs)} {expr.rel_op} {self._print(expr.rhs)})"

    def _print_Max(self, expr):
        return self._nested("maximum", expr.args)

    def _print_Min(self, expr):
        return self._nested("minimum", expr.args)

    def _nested(self, fn, args):
        consts = [a for a in args if a.is_Number]
        rest = [a for a in args if not a.is_Number]
        out = self._print(rest[0])
        for a in rest[1:]:
            out = self._fn(fn, out, self._print(a))
        for c in consts:
            out = self._clip(fn, out, float(c))
        return out

    def _typed(self, c: float) -> str:
        """A number in the model's dtype, where a library would otherwise pick its default."""
        return repr(c)

    def _clip(self, fn, code, c):
        return self._fn(fn, code, repr(c))

    # -- batch reductions of scalar graphs ---------------------------------------
    def _print_BatchMean(self, expr):
        a = expr.args[0]
        return self._full(float(a), ()) if a.is_Number else self._reduce("mean", self._print(a))

    def _print_BatchSum(self, expr):
        a = expr.args[0]
        if a.is_Number:
            return self._full(f"_m*{float(a)!r}", ())
        return self._reduce("sum", f"{self.lib}.broadcast_to({self._print(a)}, (_m,))")

    # -- matrices -------------------------------------------------------------------
    def _compact(self, e):
        """The printed row, column or scalar that `e` repeats, when e is such a broadcast; else None."""
        coeff, mats = _split(e)
        c = self._coeff(coeff)
        if mats and all(isinstance(m, sp.OneMatrix) for m in mats):
            return self._print(coeff)
        if len(mats) == 2 and isinstance(mats[0], sp.OneMatrix) and mats[0].shape[1] == 1:
            return c + self._atom(mats[1])            # 1 b: the row b on every sample
        if len(mats) == 2 and isinstance(mats[1], sp.OneMatrix) and mats[1].shape[0] == 1:
            return c + self._atom(mats[0])            # c 1ᵀ: the column c in every column
        if isinstance(e, ElementwiseApplyFunction) and not lower(e.function.expr).has(e.function.variables[0]):
            return self._print(lower(e.function.expr))
        return None

    def _coeff(self, coeff):
        """The printed 'c*' before a matrix ('' for 1, '-' for -1)."""
        return "" if coeff == 1 else "-" if coeff == -1 else f"{self.parenthesize(coeff, 50)}*"

    def _atom(self, e):
        s = self._print(e)
        return s if isinstance(e, (sp.MatrixSymbol, sp.Symbol)) else f"({s})"

    def _join(self, terms, op, shape):
        compact = [self._compact(t) for t in terms]
        if all(c is not None for c in compact):
            return f"{self.lib}.broadcast_to({op.join(compact)}, {self._shape(shape)})"
        return op.join(c if c is not None else self._atom(t) if op == " * " else self._print(t)
                       for c, t in zip(compact, terms))

    def _print_MatAdd(self, expr):
        # positive terms first, so that −Y + Ŷ prints as Ŷ - Y (one operation, not two)
        neg = [t for t in expr.args if _split(t)[0].could_extract_minus_sign()]
        pos = [t for t in expr.args if t not in neg]
        if not pos or not neg:
            return self._join(expr.args, " + ", expr.shape)
        text = self._join(pos, " + ", expr.shape) if len(pos) > 1 else self._print_term(pos[0])
        for t in neg:
            text += " - " + self._print_term(-t if not isinstance(t, sp.MatMul) else sp.MatMul(*(
                [-_split(t)[0]] + _split(t)[1])), paren=True)
        return text

    def _print_term(self, t, paren=False):
        c = self._compact(t)
        if c is not None:
            return c
        s = self._print(t)
        return f"({s})" if paren and isinstance(t, (sp.MatAdd,)) else s

    def _print_HadamardProduct(self, expr):
        # m ⊙ D with m a 0/1 mask (ReLU'): where(cond, 0, D), one pass instead of three
        for i, f in enumerate(expr.args):
            body = lower(f.function.expr) if isinstance(f, ElementwiseApplyFunction) else None
            if isinstance(body, sp.Piecewise) and {p.expr for p in body.args} <= {sp.S.Zero, sp.S.One} \
                    and len(expr.args) == 2:
                other = self._atom(expr.args[1 - i])
                arg = Code(self._atom(f.expr))
                out = other if body.args[-1].expr == 1 else "0.0"
                for p in reversed(body.args[:-1]):
                    cond = self._print(p.cond.xreplace({f.function.variables[0]: arg}))
                    out = self._fn("where", cond, other if p.expr == 1 else "0.0", out)
                return out
        return self._join(expr.args, " * ", expr.shape)

    def _print_MatMul(self, expr):
        compact = self._compact(expr)
        if compact is not None and _split(expr)[1] and not all(isinstance(m, sp.OneMatrix) for m in _split(expr)[1]):
            return f"{self.lib}.broadcast_to({compact}, {self._shape(expr.shape)})"
        coeff, mats = _split(expr)
        parts, i = [], 0
        while i < len(mats):
            a = mats[i]
            if isinstance(a, sp.OneMatrix) and a.shape[0] == 1 and i + 1 < len(mats):
                parts.append(self._reduce("sum", self._print(mats[i + 1]), axis=0))     # 1ᵀ D
                i += 2
                continue
            parts.append(self._atom(a) if not isinstance(a, sp.OneMatrix) else
                         self._print(a))
            i += 1
        body = " @ ".join(parts)
        return body if coeff == 1 else self._coeff(coeff) + (body if len(parts) == 1 else f"({body})")

    def _print_OneMatrix(self, expr):
        return self._full("1.0", expr.shape)

    def _print_ZeroMatrix(self, expr):
        return self._full("0.0", expr.shape)

    def _print_Transpose(self, expr):
        return f"{self._atom(expr.arg)}.T"

    def _print_Trace(self, expr):
        a = expr.arg
        if isinstance(a, sp.MatMul):
            coeff, mats = _split(a)
            c = self._coeff(coeff)
            if len(mats) == 2 and isinstance(mats[0], sp.Transpose) and mats[0].arg.shape == mats[1].shape:
                return c + self._reduce("sum", f"{self._atom(mats[0].arg)} * {self._atom(mats[1])}")
            if a.shape == (1, 1) and isinstance(mats[0], sp.OneMatrix):
                return c + self._reduce("sum", self._print(sp.MatMul(*mats[1:])))
        if a.shape == (1, 1):
            return self._reduce("sum", self._print(a))
        return self._fn("trace", self._print(a))

    def _apply(self, lam, operands):
        """A scalar Lambda applied entry by entry to printed operands (arrays broadcast)."""
        body = lower(lam.expr).xreplace({v: Code(self._atom(o)) for v, o in zip(lam.variables, operands)})
        return self._print(body)

    def _print_ElementwiseApplyFunction(self, expr):
        c = self._compact(expr)
        if c is not None:
            return self._full(c, expr.shape)
        return self._apply(expr.function, [expr.expr])

    def _print_Elementwise(self, expr):
        return self._apply(expr.function, expr.operands)

    def _print_FPrime(self, expr):
        return self._print(expr.as_elementwise())

    def _print_RowCost(self, expr):
        return self._print(_row_cost(expr, {}))

    def _print_RowSum(self, expr):
        return self._reduce("sum", self._print(expr.args[0]), axis=1)

    def _print_Softmax(self, expr):
        return self._softmax("softmax", self._print(expr.arg))

    def _print_LogSoftmax(self, expr):
        return self._softmax("log_softmax", self._print(expr.args[0]))

    # -- hooks -----------------------------------------------------------------------
    def _reduce(self, fn, code, axis=None):
        raise NotImplementedError

    def _softmax(self, fn, code):
        raise NotImplementedError

    def _join_columns(self, codes):
        raise NotImplementedError

    def _native(self, name, code):
        """The library's own kernel for an activation in :data:`NATIVE`."""
        raise NotImplementedError
