"""Kinds applied entry by entry: an activation's derivative f'(Z) and a scalar formula of
several matrices.  Neither states a derivative: each only *holds* what the engine obtained
from SymPy (f' is SymPy's derivative of the activation's definition, taken when asked)."""
from __future__ import annotations

from functools import lru_cache

import sympy as sp
from sympy.matrices.expressions.applyfunc import ElementwiseApplyFunction

from .base import Kind, elementwise

__all__ = ["FPrime", "Elementwise", "to_matrix"]


@lru_cache(maxsize=256)
def derivative(function: sp.Lambda) -> sp.Lambda:
    """f' of an element-wise function of one variable, as SymPy derives it (kept: printing and
    evaluation ask for it often)."""
    w = function.variables[0]
    return sp.Lambda(w, sp.diff(function.expr, w))


class FPrime(Kind, sp.MatrixExpr):
    """f'(Z): the derivative of an activation applied element-wise to a matrix.

    ``FPrime(Lambda(w, f(w, ...)), Z)`` holds the activation as it was
    applied; :meth:`as_elementwise` gives the derivative SymPy derives.
    """

    entrywise = True

    def __new__(cls, function, arg):
        return super().__new__(cls, function, arg)

    @property
    def function(self) -> sp.Lambda:
        """The activation as a Lambda of one variable."""
        return self.args[0]

    @property
    def activation(self):
        """The Activation class."""
        return type(self.args[0].expr)

    @property
    def arg(self):
        """The matrix the derivative is applied to."""
        return self.args[1]

    @property
    def shape(self):
        return self.args[1].shape

    def scalar(self, z) -> sp.Expr:
        """f'(z) for a scalar z, as SymPy derives it (compact form)."""
        return sp.diff(self.function(z), z) if not isinstance(z, sp.Symbol) else \
            sp.diff(self.function.expr, self.function.variables[0]).xreplace({self.function.variables[0]: z})

    def as_elementwise(self) -> ElementwiseApplyFunction:
        """The equivalent element-wise application of f'."""
        w = sp.Dummy("w", real=True)
        return elementwise(sp.Lambda(w, self.scalar(w)), self.arg)

    def explicit_value(self, z):
        """f' of each entry of the explicit matrix z (a 1×1 f'(Z) would apply f' to the matrix itself)."""
        w = sp.Dummy("w", real=True)
        fw = self.scalar(w)
        return z.applyfunc(lambda v: fw.xreplace({w: v}))

    def numeric_value(self, z, entrywise):
        """f' of each entry of a NumPy array, f' SymPy's derivative of the definition."""
        return entrywise(derivative(self.function))(z)

    def lower(self, lo, target=None):
        """f'(Z) as a formula: g(A) when the forward pass holds A = f(Z) and the activation has
        an output form (σ' = A(1 − A)), the printer's one-pass kernel, else f' of the formula.
        Each is the activation's own SymPy-derived form."""
        z = lo.scalar(self.arg)
        act, body = self.activation, self.function.expr
        a = next((s for s, v in lo.defs.items() if v == body.func(z, *body.args[1:])), None)
        if a is not None and body.args[1:] == () and act.output_derivative is not None:
            return act.output_derivative(a)         # f'(Z) = g(A): the forward value reused
        if act in lo.primes and body.args[1:] == ():
            return lo.primes[act](z)                # f'(Z) by the library's one-pass kernel
        w = sp.Dummy("w", real=True)         # f' taken at a variable, then applied to the formula
        return self.scalar(w).xreplace({w: z})

    def _latex(self, printer, exp=None):
        # f' applied entry by entry; a constant derivative (the identity's) is that constant
        d = derivative(self.function).expr
        if d.is_number:
            return printer._print(d) if d != 1 else r"\mathbf{1}"
        return rf"{self.activation.latex_name}'\left({printer._print(self.arg)}\right)"

    def _text(self, printer):
        return f"{printer.function_name(self.activation)}'({printer._print(self.arg)})"


class Elementwise(Kind, sp.MatrixExpr):
    """A scalar formula of several matrices applied entry by entry.

    ``Elementwise(Lambda((a, y), expr), A, Y)``: entry (i, k) is
    expr(A_ik, Y_ik).  All operands have one shape.
    """

    entrywise = True

    @property
    def function(self) -> sp.Lambda:
        """The scalar formula."""
        return self.args[0]

    @property
    def operands(self) -> tuple:
        """The matrices, in the order of the formula's variables."""
        return self.args[1:]

    @property
    def shape(self):
        return self.args[1].shape

    def explicit_value(self, *ops):
        """The formula at each entry of the explicit operands."""
        return sp.ImmutableMatrix(ops[0].rows, ops[0].cols, lambda i, k: self.function(*[o[i, k] for o in ops]))

    def numeric_value(self, *arrays, entrywise):
        """The formula on NumPy arrays, entry by entry."""
        return entrywise(self.function)(*arrays)

    def lower(self, lo, target=None):
        """The formula of the operands' formulas (NumPy broadcasting applies it entry by entry)."""
        return self.function(*[lo.scalar(o) for o in self.operands])

    def _latex(self, printer, exp=None):
        # the scalar formula with the matrices' own names, marked as taken entry by entry
        names = {v: sp.Symbol(m.name) if isinstance(m, sp.MatrixSymbol) else sp.Symbol(printer._print(m))
                 for v, m in zip(self.function.variables, self.operands)}
        return r"\left[%s\right]_{\odot}" % printer._print(self.function.expr.xreplace(names))

    def _text(self, printer):
        names = {v: sp.Symbol(printer._print(m)) for v, m in zip(self.function.variables, self.operands)}
        return f"[{printer._print(self.function.expr.xreplace(names))}]_⊙"


def to_matrix(expr, mapping: dict, shape):
    """Lift an element-wise scalar expression to a matrix expression.

    Symbols become the matrices in `mapping`, sums matrix sums, products
    Hadamard products, constants multiples of the all-ones matrix; what
    cannot be lifted stays an :class:`Elementwise`.
    """
    if expr in mapping:
        return mapping[expr]
    if expr.is_number:          # √(2/π) as well as 2: a constant times the ones matrix
        return expr * sp.OneMatrix(*shape)
    if expr.is_Add:
        return sp.MatAdd(*[to_matrix(t, mapping, shape) for t in expr.args]).doit()
    if expr.is_Mul:
        coeff, rest = expr.as_coeff_Mul()
        factors = [to_matrix(f, mapping, shape) for f in sp.Mul.make_args(rest)]
        body = factors[0] if len(factors) == 1 else sp.HadamardProduct(*factors)
        return body if coeff == 1 else coeff * body
    free = [s for s in mapping if s in expr.free_symbols]
    return Elementwise(sp.Lambda(tuple(free), expr), *[mapping[s] for s in free])
