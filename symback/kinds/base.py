"""What every node kind stands on: the batch size, the shared entry variable, element-wise
application, SymPy's derivative over the reals, and the :class:`Kind` protocol the
consumers dispatch through (see :mod:`symback.kinds` for how to add a kind)."""
from __future__ import annotations

import sympy as sp
from sympy.matrices.expressions.applyfunc import ElementwiseApplyFunction

__all__ = ["BATCH", "ENTRY", "Kind", "is_matrix", "zero_like", "add", "plus", "elementwise", "activation_of",
           "real_diff", "as_str"]

#: The batch size: the number of rows (samples) of every data matrix.
BATCH = sp.Symbol("m", positive=True, integer=True)
#: The variable of every element-wise Lambda, one for all so that equal
#: applications (tanh of the same matrix) are equal expressions.
ENTRY = sp.Dummy("w", real=True)


class Kind:
    """A node kind: a SymPy matrix expression that carries, beside its definition, what each
    consumer needs of it.  Every hook is optional; a consumer asks only for the ones it uses:

    * ``vjp(D, parent, P=None)``: δ_parent for δ_self = D (the engine, :func:`symback.vjp.local_factor`);
      ``P`` is the symbol the forward pass holds the node's value in;
    * ``lower(lowering, target=None)``: its value as statements of a :class:`symback.lowering.Lowering`
      (duck-typed: a kind imports no consumer); ``target`` is the graph symbol when the node's
      whole definition is this kind; a kind that emits the node's statement itself returns its
      code symbol; ``lower_vjp(lowering, e, recorded)`` (class method): a library kernel for a
      Hadamard product that is the kind's closed-form VJP, or None;
    * ``definition()``: the kind as matrix operations (evaluated through them), else
      ``explicit_value(*matrices)`` (exact, SymPy matrices) and ``numeric_value(*arrays,
      entrywise)`` (NumPy; ``entrywise(Lambda)`` is the evaluator's element-wise function);
    * ``_latex(printer)`` (SymPy's hook, the form every document prints) and ``_text(printer)``
      (:class:`symback.printing.text.TextPrinter`);
    * ``entrywise``: printed after the flowing δ in a Hadamard product (f'(Z), a formula);
    * ``node_prefix``: the engine differentiates the kind only as a whole node: a larger
      expression gets it lifted into a node of this prefix (``P_`` for softmax);
    * ``node_form()``: what a node this kind defines holds, when that is not the kind itself
      (a layer norm's norm(H) ⊙ 𝟏γ + 𝟏β, written out once it has a node of its own).
    """

    entrywise = False
    node_prefix = None


def as_str(name) -> sp.core.symbol.Str:
    """A name as a SymPy Str argument (a mask's, a loss's)."""
    return name if isinstance(name, sp.core.symbol.Str) else sp.core.symbol.Str(str(name))


def is_matrix(e) -> bool:
    """Whether `e` is a SymPy matrix expression (a MatrixSymbol, product, ...)."""
    return isinstance(e, sp.MatrixExpr)


def zero_like(e):
    """The zero of `e`'s type: the zero matrix of its shape, or the number 0."""
    return sp.ZeroMatrix(*e.shape) if is_matrix(e) else sp.S.Zero


def add(*terms):
    """The sum of terms of one type, in SymPy's canonical form (a matrix sum evaluated)."""
    if len(terms) == 1:
        return terms[0]
    return sp.MatAdd(*terms).doit() if is_matrix(terms[0]) else sp.Add(*terms)


def plus(a, b):
    """a + b left unevaluated, leaving out a zero (number or matrix) b."""
    if b == 0 or isinstance(b, sp.ZeroMatrix):
        return a
    return sp.MatAdd(a, b) if is_matrix(a) else a + b


def elementwise(fn, arg) -> ElementwiseApplyFunction:
    """fn applied to every entry of the matrix `arg` (a 1×1 one too)."""
    if tuple(arg.shape) == (1, 1):
        # SymPy's constructor applies fn to a 1×1 matrix as a whole and keeps a matrix it gets back;
        # fn(M) of a symback function is elementwise(fn, M) again, so it never returned (the
        # RecursionError of one-sample networks with one output): build the node itself
        return sp.MatrixExpr.__new__(ElementwiseApplyFunction, sp.sympify(fn, strict=True), arg)
    return ElementwiseApplyFunction(fn, arg)


def activation_of(e):
    """(Activation class, its arguments after the first) when e is f(M) element-wise, else None."""
    if isinstance(e, ElementwiseApplyFunction):
        body = e.function.expr
        var = e.function.variables[0]
        if isinstance(body, sp.Function) and body.args and body.args[0] == var:
            return type(body), body.args[1:]
    return None


def real_diff(expr: sp.Expr, var: sp.Symbol) -> sp.Expr:
    """SymPy's ∂expr/∂var, taken with every symbol real.

    Network quantities are real numbers; without saying so SymPy writes
    d|u|/du with re(u) and im(u).  The user's own symbols are put back.
    """
    free = [s for s in expr.free_symbols if s.is_real is None]
    if not free or not expr.has(sp.Abs, sp.sign, sp.re, sp.im, sp.arg, sp.conjugate):
        return sp.diff(expr, var)
    real = {s: sp.Dummy(s.name, real=True) for s in free}
    d = sp.diff(expr.xreplace(real), real.get(var, var))
    return d.xreplace({v: k for k, v in real.items()})
