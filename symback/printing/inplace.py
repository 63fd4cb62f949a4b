"""Element-wise formulas over arrays as ufunc calls that write into buffers nothing reads any more.

:class:`InPlace` is the element-wise emitter the code generator uses with every printer: with
NumPy (``inplace``) a formula becomes ufunc calls into buffers, ``dA * A*(1 - A)`` as ``dA *=
A; t = 1 - A; dA *= t``; with an immutable-array library it is one expression.

Its lines are tuples of parts, rendered once the function's names are known (:func:`render`):
a string, a symbol (an array or a buffer made here, printed under the name the printing
loop gives it: a buffer takes the name of the value it ends as), or a callable that prints a
formula then.
"""
from __future__ import annotations

from functools import partial

import sympy as sp

from .numpy import NumpyPrinter, mask_of, relu_arg_of

__all__ = ["InPlace", "render"]

_POW = sp.printing.precedence.PRECEDENCE["Pow"]


def render(parts, names: dict) -> str:
    """One line's text: strings as they are, a symbol under its name in `names` (else its own),
    a callable called (a formula, printed with the printer's ``names``)."""
    out = []
    for p in parts:
        if isinstance(p, str):
            out.append(p)
        elif isinstance(p, sp.Symbol):
            out.append(names.get(p) or p.name)
        else:
            out.append(p())
    return "".join(out)


class InPlace:
    """Prints an element-wise formula over arrays as ufunc calls, in place where allowed.

    Symbols stand for whole arrays (broadcasting does the element-wise
    part).  A buffer is overwritten only if it was made for this formula
    or the caller lists its name in ``overwritable`` and the formula uses
    it once: ``dA * A*(1 - A)`` becomes ``dA *= A; t = 1 - A; dA *= t``.
    With a printer whose ``inplace`` is False the formula prints as one
    expression.  ``fresh()`` makes the symbol of a new buffer.
    """

    _UFUNC = {sp.exp: "exp", sp.tanh: "tanh", sp.Abs: "abs", sp.sign: "sign",
              sp.cosh: "cosh", sp.sinh: "sinh", sp.sin: "sin", sp.cos: "cos", sp.atan: "arctan"}

    def __init__(self, printer: NumpyPrinter, fresh, arrays: set, indent="    ", shape_of=None):
        self.printer, self.fresh, self.arrays, self.indent = printer, fresh, arrays, indent
        self.np = printer.prefix
        # a buffer is written in place only with a value of its own shape (D *= S needs D ⊇ S)
        self.shape_of = shape_of or (lambda e: None)

    def _fits(self, part, whole) -> bool:
        return self.shape_of(part) == self.shape_of(whole)

    def is_array(self, e) -> bool:
        """Whether e involves an array (else it is a number or a scalar value)."""
        return bool(e.free_symbols & self.arrays)

    def emit(self, expr: sp.Expr, overwritable=(), inline=None) -> tuple[list, object]:
        """(lines, the value): a symbol (an array's, or a buffer's made here), or a callable
        that prints the formula.

        ``inline``: (symbol, its value's parts) where the line just before these computed
        that symbol for this formula alone: subtracted first, it is subtracted as that value
        (``P -= P.max(...)``, no buffer; ``took`` then says the caller drops that line)."""
        self.lines, self.made, self.took = [], {}, False
        if expr.is_Symbol:
            return [], expr
        if not self.printer.inplace or not self.is_array(expr):
            return [], partial(self.printer.doprint, expr)
        counts = {}
        for a in sp.preorder_traversal(expr):
            if a.is_Symbol:
                counts[a] = counts.get(a, 0) + 1
        self.free = {s for s in overwritable if counts.get(s, 0) == 1}
        self.inline = inline if inline is not None and counts.get(inline[0]) == 1 else None
        ref, _ = self.ev(expr)
        return self.lines, ref

    def _new(self, *code) -> sp.Symbol:
        name = self.fresh()
        self.made[name] = len(self.lines)
        self.lines.append((self.indent, name, " = ", *code))
        return name

    def _subtract(self, ref, r):
        """ref -= r; r's own formula in its place where the line just before computed r for
        this alone (a buffer made by one line, or the caller's ``inline``)."""
        if r in self.made and self.made[r] == len(self.lines) - 1:
            code = self.lines.pop()[3:]
        elif not self.lines and self.inline is not None and r == self.inline[0]:
            code, self.took = self.inline[1], True
        else:
            code = (r,)
        self._line(ref, " -= ", *code)

    def _line(self, *parts):
        self.lines.append((self.indent, *parts))

    def ev(self, e) -> tuple[object, bool]:
        """(symbol or printed part, owned): owned means a buffer this formula may overwrite."""
        p = self.printer
        if not self.is_array(e):
            # bracketed unless atomic: callers splice it into `a**b`, `a*b` (a scalar base
            # under an array power, (p**2 + 1)**tanh(x), found by the differential suite)
            return partial(p.parenthesize, e, _POW), False
        if e.is_Symbol:
            return e, e in self.free
        if e.is_Add:
            return self._add(e)
        if e.is_Mul:
            return self._mul(e)
        if e.is_Pow:
            return self._pow(e)
        if isinstance(e, sp.Piecewise) and relu_arg_of(e) is not None:
            return self._unary("maximum", relu_arg_of(e), ", 0")
        if isinstance(e, sp.Max) and len(e.args) == 2 and not self.is_array(e.args[0]):
            return self._unary("maximum", e.args[1], ", ", partial(p.doprint, e.args[0]))
        if isinstance(e, sp.log):
            arg = e.args[0]
            if arg.is_Add and sp.S.One in arg.args:
                return self._unary("log1p", arg - 1)
            return self._unary("log", arg)
        if type(e) in self._UFUNC:
            return self._unary(self._UFUNC[type(e)], e.args[0])
        steps = p.steps.get(type(e))
        if steps:       # an activation as the printer's ufunc steps on one buffer (NumPy's σ)
            (fn, extra), rest = steps[0], steps[1:]
            ref, _ = self._unary(fn, e.args[0], extra)
            for fn, extra in rest:
                self._line(f"{self.np}.{fn}(", ref, extra, ", out=", ref, ")")
            return ref, True
        return self._new(partial(p.doprint, e)), True

    def _unary(self, fn, arg, *extra):
        ref, owned = self.ev(arg)
        if owned:
            self._line(f"{self.np}.{fn}(", ref, *extra, ", out=", ref, ")")
            return ref, True
        return self._new(f"{self.np}.{fn}(", ref, *extra, ")"), True

    def _number(self, c):
        """A number's printing beside an array: an integer as a float literal (NumPy converts
        a Python int operand more slowly than a float: 0.70 against 0.55 µs for ``t += 1`` on
        a 32×4 array; the same value in every dtype, both operands being weak scalars)."""
        if isinstance(c, sp.Integer):
            return f"{int(c)}.0"
        return partial(self.printer.doprint, c)

    def _add(self, e):
        scalar = sp.Add(*[t for t in e.args if not self.is_array(t)])
        signed = []
        for t in (t for t in e.args if self.is_array(t)):
            c, _ = t.as_coeff_Mul()
            signed.append((-1, -t) if c.is_negative else (1, t))
        signed.sort(key=lambda st: (not self._fits(st[1], e), st[0] < 0,
                                    st[1].is_Symbol and st[1] not in self.free))
        (sign, first), rest = signed[0], signed[1:]
        ref, owned = self.ev(first)
        owned = owned and self._fits(first, e)
        if sign < 0:        # s - first: the scalar goes in with it
            if owned:
                self._line(f"{self.np}.subtract(", self._number(scalar), ", ", ref, ", out=", ref, ")")
            else:
                ref = self._new(f"{self.np}.subtract(", self._number(scalar), ", ", ref, ")")
            scalar = sp.S.Zero
        elif not owned:
            if rest:
                (s2, t2), rest = rest[0], rest[1:]
                r2, _ = self.ev(t2)
                ref = self._new(ref, f" {'+' if s2 > 0 else '-'} ", r2)
                first = first + t2
            elif scalar != 0:
                ref = self._new(ref, " + ", self._number(scalar))
                scalar = sp.S.Zero
            else:
                return ref, False
        held = first        # the terms in the buffer so far (their shape is the buffer's)
        for s, t in rest:   # each term added or subtracted with its own sign
            r, _ = self.ev(t)
            if not self._fits(held + t, held):      # it broadcasts wider: a new buffer
                ref = self._new(ref, f" {'+' if s > 0 else '-'} ", r)
            elif s > 0:
                self._line(ref, " += ", r)
            else:
                self._subtract(ref, r)
            held = held + t
        if scalar != 0:
            self._line(ref, " += ", self._number(scalar))
        return ref, True

    def _mul(self, e):
        p = self.printer
        coeff = sp.Mul(*[f for f in e.args if not self.is_array(f)])
        factors = [f for f in e.args if self.is_array(f)]
        masks = [f for f in factors if mask_of(f) is not None]
        factors = [f for f in factors if mask_of(f) is None]
        divs = [f.base for f in factors if f.is_Pow and f.exp == -1]
        factors = [f for f in factors if not (f.is_Pow and f.exp == -1)]
        # a buffer we may overwrite goes first, so the product builds in it
        factors.sort(key=lambda f: (not self._fits(f, e),
                                    0 if (f.is_Symbol and f in self.free) or not f.is_Symbol else 1))
        if not factors and not masks:
            r = self.ev(divs[0])[0]
            ref, owned = self._new(partial(p.parenthesize, coeff, 50), "/", r), True
            coeff, divs = sp.S.One, divs[1:]
        elif not factors:       # only masks: turn the first into numbers
            ref, owned = self._new(partial(p.doprint, mask_of(masks[0])), ".astype(DTYPE)"), True
            masks = masks[1:]
        else:
            ref, owned = self.ev(factors[0])
            owned = owned and self._fits(factors[0], e)
            factors = factors[1:]
            if not owned:
                if factors:
                    r2, _ = self.ev(factors[0])
                    ref = self._new(ref, "*", r2)
                    factors = factors[1:]
                elif masks:
                    ref = self._new(ref, "*", partial(p.doprint, mask_of(masks[0])))
                    masks = masks[1:]
                elif coeff != 1:
                    ref = self._new(self._number(coeff) if coeff.is_Integer else partial(p.parenthesize, coeff, 50),
                                    "*", ref)
                    coeff = sp.S.One
                elif divs:
                    r2, _ = self.ev(divs[0])
                    ref = self._new(ref, "/", r2)
                    divs = divs[1:]
                else:
                    return ref, False
        # the factors in the buffer so far (their shape is the buffer's)
        held = sp.Mul(*[f for f in e.args if self.is_array(f) and f not in factors and f not in masks
                        and not (f.is_Pow and f.exp == -1 and f.base in divs)])
        for op, f, code in ([("*", f, None) for f in factors] + [("*", m, mask_of(m)) for m in masks]
                            + [("/", dv, None) for dv in divs]):
            r = partial(p.doprint, code) if code is not None else self.ev(f)[0]
            if self._fits(held * f, held):
                self._line(ref, f" {op}= ", r)
            else:                   # it broadcasts wider: a new buffer
                ref = self._new(ref, op, r)
            held = held * f
        if coeff != 1:
            self._line(ref, " *= ", self._number(coeff))
        return ref, True

    def _pow(self, e):
        base, ex = e.args
        if ex == -1:
            return self._unary("reciprocal", base)
        if ex == 2:
            ref, owned = self.ev(base)
            if owned:
                self._line(f"{self.np}.multiply(", ref, ", ", ref, ", out=", ref, ")")
                return ref, True
            return self._new(ref, "*", ref), True
        if ex == sp.S.Half:
            return self._unary("sqrt", base)
        ref, _ = self.ev(base)
        return self._new(ref, "**", partial(self.printer.parenthesize, ex, 60)), True
