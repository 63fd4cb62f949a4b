"""What every array backend shares: the Program rewritten for printing, and a printer mixin.

Minimal versions of pieces the NumPy code generator will own (they are to
be folded into its program → rewrites → cse → text pipeline):

* :func:`plan`: a Derivation's :class:`~symback.engine.Program` with the
  rewrites that make it safe and cheap to print — f'(Z) read off the
  forward value when SymPy found f' = g(f) (tanh' = 1 − A²), activations in
  their overflow-safe forms, log σ and log softmax in stable forms, scalar
  backward passes through :func:`sympy.cse`.  Every rewrite is an identity
  SymPy proves or a substitution of a name for its own definition; no
  derivative is written here.
* :class:`ArrayPrinter`: ``_print_X`` methods for symback's matrix classes
  and SymPy's matrix expressions, mixed into SymPy's JAX and torch
  printers; a backend names its array module and reductions only.
* :func:`function_texts`, :data:`SHARED_SOURCE`: the generated module's pure
  functions, its NumPy initialisation (the same numbers for every backend)
  and its finite-difference self-check;
* :class:`Optimizer`: SGD, momentum and Adam in array arithmetic alone.
"""
from __future__ import annotations

import keyword
from functools import lru_cache
from typing import NamedTuple

import numpy as np
import sympy as sp
from sympy.matrices.expressions.applyfunc import ElementwiseApplyFunction

from ..engine import BATCH_SIZE, Derivation
from ..errors import SymbackError
from ..functions import Activation, _proved_equal, sigmoid, softplus
from ..matrix import Elementwise, FPrime, RowCost, Softmax, activation_of, is_matrix

__all__ = ["Code", "RowSum", "LogSoftmax", "Plan", "plan", "lower", "ArrayPrinter", "identifiers",
           "function_texts", "constants", "SHARED_SOURCE", "Optimizer", "target_kind"]


class Code(sp.Symbol):
    """A piece of already printed code standing inside an expression (printed verbatim)."""

    def __new__(cls, text):
        return super().__new__(cls, text, real=True)


class RowSum(sp.MatrixExpr):
    """The m×1 column of the row sums of a matrix (a per-sample cost from per-entry costs)."""

    @property
    def shape(self):
        return (self.args[0].shape[0], sp.S.One)


class LogSoftmax(sp.MatrixExpr):
    """log softmax(Z) row by row, printed with the library's stable log-softmax."""

    @property
    def shape(self):
        return self.args[0].shape


# ------------------------------------------------------------------ rewrites
#: Activations every array library has as one fused kernel of the same definition
#: (σ, max(z, 0)); printed as the library's function instead of being lowered.
NATIVE = ("sigmoid", "relu")


def lower(expr):
    """Activations replaced by their proven overflow-safe ``stable`` form, else their definition
    (those in :data:`NATIVE`, of one argument, are kept for the printer)."""
    def keep(e):
        return type(e).__name__ in NATIVE and len(e.args) == 1

    def rule(e):
        if keep(e):
            return e
        cls = type(e)
        if cls.stable is not None and len(e.args) == 1:
            return cls.stable(*e.args)
        return cls.definition(*e.args)

    while any(isinstance(a, Activation) and not keep(a) for a in sp.preorder_traversal(expr)):
        expr = expr.replace(lambda e: isinstance(e, Activation) and not keep(e), rule)
    return expr


_u = sp.Symbol("u", real=True)


@lru_cache(maxsize=None)
def _log_sigmoid_rules():
    """log σ(u) = −softplus(−u) and log(1 − σ(u)) = −softplus(u), proved by SymPy on first use."""
    rules = ((sp.log(sigmoid(_u)), -softplus(-_u)), (sp.log(1 - sigmoid(_u)), -softplus(_u)))
    for lhs, rhs in rules:
        if not _proved_equal(lhs, rhs, _u):
            raise SymbackError(f"internal: could not prove {lhs} = {rhs}")
    return rules


def stable_logs(expr, defs: dict):
    """log σ(u) and log(1 − σ(u)) as softplus forms; ``defs`` maps a node to its definition."""
    if not expr.has(sp.log):
        return expr
    _log_sigmoid_rules()

    def sig(e):
        e = defs.get(e, e)
        return e.args[0] if isinstance(e, sigmoid) else None

    def rule(e):
        a = e.args[0]
        if sig(a) is not None:
            return -softplus(-sig(a))
        if sig(sp.expand(1 - a)) is not None:
            return -softplus(sig(sp.expand(1 - a)))
        return e

    return expr.replace(lambda e: isinstance(e, sp.log), rule)


def _elementwise_key(e):
    """(activation Lambda, argument) of A = f(Z) element-wise, to find f(Z) by its argument."""
    return (e.function, e.expr)


def _fprime(fp: FPrime, applied: dict):
    """f'(Z) from SymPy's derivative; as g(A) when f' = g(f) and A = f(Z) is already computed."""
    act = activation_of(ElementwiseApplyFunction(fp.function, fp.arg))
    A = applied.get(_elementwise_key(ElementwiseApplyFunction(fp.function, fp.arg)))
    if A is not None and act is not None and not act[1] and act[0].output_derivative is not None:
        g = act[0].output_derivative
        return ElementwiseApplyFunction(g, A)
    return fp.as_elementwise()


def _row_cost(cost: RowCost, defs: dict):
    """Σ_k ℓ(Ŷ_ik, Y_ik) per row; log softmax and log σ of the logits where ℓ takes a log."""
    p, t = sp.Dummy("p", real=True), sp.Dummy("t", real=True)
    ell = cost.loss(p, t)
    pred = defs.get(cost.prediction)
    if isinstance(pred, Softmax):
        l_ = sp.Dummy("l", real=True)      # ℓ in the log-probabilities l = log ŷ
        in_log = sp.expand_log(ell.xreplace({p: sp.exp(l_)}), force=True)
        if not in_log.has(sp.exp):
            return RowSum(Elementwise(sp.Lambda((l_, t), in_log), LogSoftmax(pred.arg), cost.target))
    act = activation_of(pred) if pred is not None else None
    if act is not None and act[0] is sigmoid and not act[1]:
        z = sp.Dummy("z", real=True)
        stable = stable_logs(ell.xreplace({p: sigmoid(z)}), {})
        if not stable.has(sp.log(sigmoid(z))) and not stable.has(sigmoid(z)):
            return RowSum(Elementwise(sp.Lambda((z, t), stable), pred.expr, cost.target))
    return RowSum(Elementwise(sp.Lambda((p, t), ell), cost.prediction, cost.target))


class Plan(NamedTuple):
    """A Program ready to print: statements are (symbol, expr) pairs, already rewritten.

    ``forward`` ends with the loss node; ``loss`` is the batch loss L;
    ``backward`` holds the adjoints (and CSE temporaries) in order;
    ``gradients`` maps a parameter name to ∂L/∂p.
    """

    kind: str
    inputs: tuple
    targets: tuple
    params: tuple
    shapes: dict
    biases: tuple
    forward: tuple
    backward: tuple
    gradients: dict
    loss: sp.Expr
    outputs: tuple
    reduction: str
    target_kind: str


def plan(derivation) -> Plan:
    """The Derivation's Program, rewritten (see the module docstring) for array printers."""
    if not isinstance(derivation, Derivation) or not hasattr(derivation, "program"):
        raise SymbackError(f"the JAX and torch backends need a Derivation from sb.derive(graph), "
                           f"got {type(derivation).__name__}")
    prog = derivation.program()
    matrix = derivation.kind == "matrix"
    defs = dict(prog.forward)
    applied = {_elementwise_key(e): s for s, e in prog.forward if isinstance(e, ElementwiseApplyFunction)}

    def fix(e):
        if not isinstance(e, sp.Basic):
            return e
        if matrix:
            e = e.replace(lambda x: isinstance(x, FPrime), lambda x: _fprime(x, applied))
            e = e.replace(lambda x: isinstance(x, RowCost), lambda x: _row_cost(x, defs))
        else:
            e = stable_logs(e, defs)
        return lower(e)

    forward = tuple((s, fix(e)) for s, e in prog.forward)
    backward = [(s, e) for s, e in prog.backward]
    if not matrix:
        # A forward value used again in the backward pass (σ(w x) in σ') is read, not recomputed.
        back = {e: s for s, e in prog.forward if not e.is_Atom}
        backward = [(s, e.xreplace(back)) for s, e in backward]
    backward = [(s, fix(e)) for s, e in backward]
    if matrix:
        # δ_C = (1/m)·1 is a number, not an array to allocate: written into its users
        consts = {}
        for i, (s, e) in enumerate(backward):
            e = e.xreplace(consts) if consts else e
            backward[i] = (s, e)
            if _constant_broadcast(e) and s not in prog.gradients.values():
                consts[s] = e
        backward = [(s, e) for s, e in backward if s not in consts]
    if not matrix and backward:
        temps, reduced = sp.cse([e for _, e in backward], symbols=sp.numbered_symbols("_t"), order="none")
        backward = _toposort([(s, e) for s, e in temps] + [(s, e) for (s, _), e in zip(backward, reduced)])
    for s, e in backward:
        if e.has(SoftmaxVJPType()):
            raise SymbackError("softmax feeding a loss other than cross_entropy is not supported by the "
                               "JAX and torch backends yet; use output='softmax' with loss='cross_entropy'")
    g = derivation.graph
    shapes = {p: tuple(int(d) for d in g.symbol(p).shape) if matrix else () for p in g.param_names}
    return Plan(derivation.kind, prog.inputs, prog.targets, prog.params, shapes, _biases(prog),
                forward, tuple(backward), dict(prog.gradients), fix(prog.loss), prog.outputs,
                prog.reduction, target_kind(prog, defs))


def _toposort(statements):
    """Statements reordered so that each comes after those it reads (CSE temporaries
    can read adjoints defined after them in its output); otherwise in the given order."""
    defined = {s.name for s, _ in statements}
    done, out, todo = set(), [], list(statements)
    while todo:
        for i, (s, e) in enumerate(todo):
            if not (_uses(e) & defined) - done:
                out.append(todo.pop(i))
                done.add(s.name)
                break
        else:
            raise SymbackError("internal: the backward statements read each other in a cycle")
    return out


def SoftmaxVJPType():
    from ..vjp import SoftmaxVJP
    return SoftmaxVJP


def _biases(prog) -> tuple:
    """Parameters that enter as 1·b (a row repeated on every sample): initialised at zero."""
    out = set()
    for _, e in prog.forward:
        if isinstance(e, sp.Basic):
            for mm in e.atoms(sp.MatMul):
                a = mm.args
                for i in range(len(a) - 1):
                    if isinstance(a[i], sp.OneMatrix) and isinstance(a[i + 1], sp.MatrixSymbol):
                        out.add(a[i + 1].name)
    return tuple(p.name for p in prog.params if p.name in out)


def target_kind(prog, defs) -> str:
    """'onehot' (softmax output), 'unit' (targets in (0, 1): a log in the cost) or 'real'."""
    if any(isinstance(e, Softmax) for e in defs.values()):
        return "onehot"
    if any(isinstance(e, sp.Basic) and (e.has(sp.log) or any(
            isinstance(c, RowCost) and c.loss.expr.has(sp.log) for c in e.atoms(RowCost)))
           for e in defs.values()):
        return "unit"
    return "real"


# ------------------------------------------------------------------ printer
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


def _split(e):
    """(scalar coefficient, list of matrix factors) of a matrix term, nested products flattened."""
    if isinstance(e, sp.MatMul):
        coeff, mats = sp.S.One, []
        for a in e.args:
            c, m = _split(a) if is_matrix(a) else (a, [])
            coeff, mats = coeff * c, mats + m
        return coeff, mats
    return sp.S.One, [e]


def _constant_broadcast(e) -> bool:
    """Whether a matrix expression is a number repeated (c·1): it is inlined where used."""
    coeff, mats = _split(e)
    return bool(mats) and all(isinstance(m, sp.OneMatrix) for m in mats) and not coeff.free_symbols - {BATCH_SIZE}


def identifiers(plan_: Plan, reserved=()) -> dict:
    """Node name → a Python identifier for it that is no keyword and no name the module uses."""
    taken = set(reserved) | {"np", "DTYPE"}
    out = {}
    every = [*plan_.inputs, *plan_.targets, *plan_.params] + [s for s, _ in plan_.forward + plan_.backward]
    for s in every:
        name = s.name
        ident = name
        while keyword.iskeyword(ident) or ident in taken:
            ident += "_"
        taken.add(ident)
        out[name] = ident
    out[BATCH_SIZE] = "_m"
    return out


# ------------------------------------------------------------------ module text
def _uses(expr) -> set:
    return {getattr(s, "name", None) for s in expr.free_symbols} if isinstance(expr, sp.Basic) else set()


def _closure(statements, wanted: set) -> list:
    """The statements that the names in `wanted` need, in order."""
    need, keep = set(wanted), []
    for s, e in reversed(statements):
        if s.name in need:
            keep.append((s, e))
            need |= _uses(e)
    return keep[::-1]


def function_texts(p: Plan, printer, names: dict) -> dict:
    """The pure array functions of a module, as source text, by name.

    ``_predict(_X, _params)``, ``_loss(_X, _Y, _params)``,
    ``_value_and_grad(_X, _Y, _params)`` → (L, {p: ∂L/∂p}), and the same
    pass split in two for a custom backward: ``_forward(_X, _Y, _params)`` →
    (L, values the backward pass reads) and ``_backward(_X, _Y, _params, _values)``.
    """
    n = lambda s: names.get(s.name, s.name)

    def unpack(statements, extra=(), with_y=True):
        used = set().union(*(_uses(e) for _, e in statements)) | set(extra)
        lines = ["    _m = _X.shape[0]"]
        for data, arg in ((p.inputs, "_X"), (p.targets if with_y else (), "_Y")):
            for i, s in enumerate(data):
                if s.name in used:
                    lines.append(f"    {n(s)} = {arg}" if is_matrix(s) else f"    {n(s)} = {arg}[:, {i}]")
        lines += [f"    {n(s)} = _params[{s.name!r}]" for s in p.params if s.name in used]
        return lines

    def body(statements):
        return [f"    {n(s)} = {printer.doprint(e)}" for s, e in statements]

    def outputs():
        if p.kind == "matrix":
            outs = [n(s) for s in p.outputs]
            return outs[0] if len(outs) == 1 else printer._join_columns(outs)
        return printer._join_columns([printer._fn("broadcast_to", n(s), "(_m,)") + "[:, None]"
                                      for s in p.outputs])

    grads = "{" + ", ".join(f"{k!r}: {printer.doprint(e)}" for k, e in p.gradients.items()) + "}"
    grad_uses = set().union(*(_uses(e) for e in p.gradients.values()))
    loss_text, loss_uses = printer.doprint(p.loss), _uses(p.loss)
    fwd_pred = _closure(p.forward, {s.name for s in p.outputs})
    fwd_loss = _closure(p.forward, loss_uses)
    back = _closure(p.backward, grad_uses)
    back_uses = set().union(grad_uses, *(_uses(e) for _, e in back))
    saved = [s for s, _ in p.forward if s.name in back_uses]
    fwd_all = _closure(p.forward, loss_uses | back_uses)
    out = {
        "_predict": ["def _predict(_X, _params):", '    """The network\'s output for the rows of _X."""',
                     *unpack(fwd_pred, with_y=False), *body(fwd_pred), f"    return {outputs()}"],
        "_loss": ["def _loss(_X, _Y, _params):", f'    """The batch loss L ({p.reduction} over the rows)."""',
                  *unpack(fwd_loss, loss_uses), *body(fwd_loss), f"    return {loss_text}"],
        "_value_and_grad": [
            "def _value_and_grad(_X, _Y, _params):",
            '    """(L, {parameter: dL/dparameter}): the forward pass, then the adjoints in order."""',
            *unpack(fwd_all + back, loss_uses | grad_uses), *body(fwd_all), *body(back),
            f"    return {loss_text}, {grads}"],
        "_forward": [
            "def _forward(_X, _Y, _params):",
            '    """(L, the forward values the backward pass reads)."""',
            *unpack(fwd_all, loss_uses), *body(fwd_all),
            "    return " + loss_text + ", {" + ", ".join(f"{s.name!r}: {n(s)}" for s in saved) + "}"],
        "_backward": [
            "def _backward(_X, _Y, _params, _values):",
            '    """{parameter: dL/dparameter} from the saved forward values."""',
            *unpack(back, grad_uses - {s.name for s in saved}),
            *[f"    {n(s)} = _values[{s.name!r}]" for s in saved], *body(back), f"    return {grads}"],
    }
    return {k: "\n".join(v) for k, v in out.items()}


def constants(p: Plan) -> str:
    """The module's description of the network: names, shapes, what targets look like."""
    return "\n".join([
        f"KIND = {p.kind!r}", f"REDUCTION = {p.reduction!r}",
        f"INPUTS = {tuple(s.name for s in p.inputs)!r}", f"TARGETS = {tuple(s.name for s in p.targets)!r}",
        f"PARAMS = {tuple(s.name for s in p.params)!r}", f"SHAPES = {p.shapes!r}", f"BIASES = {p.biases!r}",
        f"N_INPUTS = {_width(p.inputs)}", f"N_TARGETS = {_width(p.targets)}", f"TARGET_KIND = {p.target_kind!r}"])


def _width(symbols) -> int:
    return int(symbols[0].shape[1]) if symbols and is_matrix(symbols[0]) else len(symbols)


#: The initialisation and the finite-difference self-check every generated module carries.
#: They need only NumPy and the module's ``_asarray``, ``loss`` and ``grad``.
SHARED_SOURCE = '''
def init(seed=0):
    """Glorot-uniform weights, zero biases (parameters entering as 1 b); a scalar graph's
    parameters N(0, 0.5**2).  The same numbers as symback's NumPy and other backends."""
    rng = np.random.default_rng(seed)
    out = {}
    for p in PARAMS:
        shape = SHAPES[p]
        if not shape:
            value = np.array(rng.normal(0.0, 0.5))
        elif p in BIASES:
            value = np.zeros(shape)
        else:
            limit = np.sqrt(6.0 / (shape[0] + shape[1]))
            value = rng.uniform(-limit, limit, size=shape)
        out[p] = _asarray(value)
    return out


def random_data(n=8, seed=0):
    """Random (X, Y) of the network's widths; targets one-hot, in (0, 1) or real as the loss needs."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, N_INPUTS))
    if TARGET_KIND == "onehot":
        Y = np.eye(N_TARGETS)[rng.integers(0, N_TARGETS, n)]
    elif TARGET_KIND == "unit":
        Y = rng.uniform(0.1, 0.9, size=(n, N_TARGETS))
    else:
        Y = rng.normal(size=(n, N_TARGETS))
    return X, Y


def selfcheck(n=8, seed=0, entries=3):
    """Central finite differences of loss() against grad() at a few entries of every parameter."""
    X, Y = random_data(n, seed)
    X, Y = _asarray(X), _asarray(Y)
    params = init(seed)
    grads = {k: np.asarray(v, dtype=np.float64) for k, v in grad(X, Y, params).items()}
    wide = np.dtype(np.float64) == np.dtype(NP_DTYPE)
    h, tol = (1e-6, 1e-5) if wide else (1e-3, 1e-2)
    rng = np.random.default_rng(seed + 1)
    worst = 0.0
    for k in PARAMS:
        base = np.array(params[k], dtype=np.float64)
        for _ in range(entries):
            idx = tuple(int(rng.integers(0, s)) for s in base.shape)
            moved = []
            for sign in (1.0, -1.0):
                trial = base.copy()
                trial[idx] += sign * h
                moved.append(loss(X, Y, {**params, k: _asarray(trial)}))
            fd = (moved[0] - moved[1]) / (2 * h)
            worst = max(worst, abs(fd - grads[k][idx]) / max(1.0, abs(fd), abs(grads[k][idx])))
    ok = worst <= tol
    print(f"finite-difference check of {len(PARAMS)} parameters: max relative error "
          f"{worst:.2e} (tolerance {tol:.0e}): {'OK' if ok else 'FAILED'}")
    return ok


if __name__ == "__main__":
    import sys
    sys.exit(0 if selfcheck() else 1)
'''


def check_dtype(dtype, default: str) -> str:
    """'float32' or 'float64' (`default` for None); anything else is a SymbackError."""
    try:
        name = np.dtype(dtype).name if dtype is not None else default
    except TypeError:
        name = str(dtype)
    if name not in ("float32", "float64"):
        raise SymbackError(f"dtype must be float32 or float64, got {dtype!r}")
    return name


class Optimizer:
    """SGD, momentum or Adam as pure array arithmetic (works on jax and torch arrays alike).

    ``state = opt.init(params)``; ``params, state = opt.update(params, grads, state, lr)``.
    """

    def __init__(self, name="sgd", beta=0.9, beta1=0.9, beta2=0.999, eps=1e-8):
        if name not in ("sgd", "momentum", "adam"):
            raise SymbackError(f"unknown optimizer {name!r}; use 'sgd', 'momentum' or 'adam'")
        self.name, self.beta, self.beta1, self.beta2, self.eps = name, beta, beta1, beta2, eps

    def init(self, params: dict) -> dict:
        """The optimizer's state for these params (velocities, moments, step count)."""
        zeros = {k: v * 0 for k, v in params.items()}
        if self.name == "momentum":
            return {"v": zeros}
        if self.name == "adam":
            return {"m": zeros, "v": {k: v * 0 for k, v in params.items()}, "t": 0}
        return {}

    def update(self, params: dict, grads: dict, state: dict, lr):
        """New (params, state) after one update."""
        if self.name == "sgd":
            return {k: params[k] - lr * grads[k] for k in params}, state
        if self.name == "momentum":
            v = {k: self.beta * state["v"][k] + grads[k] for k in params}
            return {k: params[k] - lr * v[k] for k in params}, {"v": v}
        b1, b2, t = self.beta1, self.beta2, state["t"] + 1
        m = {k: b1 * state["m"][k] + (1 - b1) * grads[k] for k in params}
        v = {k: b2 * state["v"][k] + (1 - b2) * grads[k] * grads[k] for k in params}
        scale = lr * (1 - b2 ** t) ** 0.5 / (1 - b1 ** t)
        return {k: params[k] - scale * m[k] / (v[k] ** 0.5 + self.eps) for k in params}, {"m": m, "v": v, "t": t}
