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
* :class:`Optimizer`: SGD, momentum and Adam in array arithmetic alone.

The printer mixin is in :mod:`._printer`, the module text in :mod:`._source`.
"""
from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np
import sympy as sp
from sympy.matrices.expressions.applyfunc import ElementwiseApplyFunction

from ..engine import BATCH_SIZE, Derivation
from ..errors import SymbackError
from ..functions import Activation, _proved_equal, sigmoid, softplus
from ..matrix import Elementwise, FPrime, RowCost, Softmax, activation_of, is_matrix

__all__ = ["Code", "RowSum", "LogSoftmax", "NATIVE", "Plan", "plan", "lower", "check_dtype", "Optimizer",
           "target_kind"]


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
        if e.has(_softmax_vjp_class()):
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


def _softmax_vjp_class():
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


def _uses(expr) -> set:
    return {getattr(s, "name", None) for s in expr.free_symbols} if isinstance(expr, sp.Basic) else set()


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
