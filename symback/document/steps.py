"""Every step of a derivation shown, each named by the rule that produced it.

``steps="full"`` documents read these: for each local derivative, the rule
the child node's SymPy operation calls for (an ``Add`` → sum rule, a
``Mul`` → product rule, a ``Pow`` → power rule, a function application →
chain rule), the inner derivatives it needs and the terms that vanish
(seed 000's ∂w₂/∂w₁ = ∂b/∂w₁ = 0, seed 001's ∂(a₃ − y)/∂a₃ = 1); the
terms of the loss that do not reach a parameter (∂L/∂y · ∂y/∂w₁ = 0);
the batch reduction line by line (1/(2m) Σ 2(p − y) = 1/m Σ (p − y));
seed 003's two cases of the backward pass; and gradient descent's
iterations θ⁰ → θ¹ → θ².  Every line is a SymPy expression, printed.
"""
from __future__ import annotations

import sympy as sp
from sympy.matrices.expressions.applyfunc import ElementwiseApplyFunction

from ..engine import BATCH_SIZE, SAMPLE
from ..errors import OutputError
from ..functions import Activation
from ..matrix import RowCost, Softmax, is_matrix
from ..printing import Chain, LatexPrinter, Partial, Terms, Tex, latex, prime

__all__ = ["rule_name", "local_steps", "loss_terms", "reduction_steps", "delta_case", "iterations",
           "Vanishes", "Equal"]


class Vanishes(sp.Basic):
    """A term that is zero, printed under a brace: the notes' ⏟=0."""

    def _latex(self, printer, exp=None):
        return r"\underbrace{%s}_{=0}" % printer._print(self.args[0])


class TotalPartial(Partial):
    """∂q/∂p through every path from p to q, printed as ∂q/∂p: the inner factor of the chain rule
    over the loss's inputs (∂L/∂p = Σ_q ∂L/∂q · ∂q/∂p, each ∂L/∂q the loss's own dependence)."""


class Equal(sp.Basic):
    """a = b = … = c: several expressions stated equal (seed 000's ∂w₂/∂w₁ = ∂b/∂w₁ = 0)."""

    def _latex(self, printer, exp=None):
        return " = ".join(printer._print(a) for a in self.args)


def rule_name(expr) -> str:
    """The differentiation rule a node's SymPy operation calls for."""
    if isinstance(expr, sp.Mul):
        coeff, rest = expr.as_coeff_Mul()
        if coeff != 1 and not isinstance(rest, sp.Mul):
            return rule_name(rest)          # a constant factor stays in front: the rule of the rest
    if isinstance(expr, (sp.Add, sp.MatAdd, sp.Trace)):
        return "sum rule"
    if isinstance(expr, (sp.Mul, sp.MatMul, sp.HadamardProduct)):
        return "product rule"
    if isinstance(expr, sp.Pow):
        return "power rule"
    if isinstance(expr, (sp.Function, ElementwiseApplyFunction, Softmax, RowCost)):
        return "chain rule"
    return "definition"


def _outer(f):
    """f'(u) of a function application, unevaluated (σ'(u)), or SymPy's derivative for sin, exp, …"""
    if isinstance(f, Activation):
        return prime(type(f), f.args)
    u = sp.Dummy("u", real=True)        # |u|' = sign(u) for a real u, not re/im derivatives
    return sp.diff(f.func(u), u).xreplace({u: f.args[0]})


def local_steps(expr, v) -> dict | None:
    """∂expr/∂v step by step: the rule, the line with the inner derivatives, their values, the result.

    Returns {"rule", "lines": [SymPy], "zeros": Equal or None}, or None
    when the rule has nothing to show (expr is v itself, or a matrix).
    """
    if is_matrix(expr) or expr == v or not isinstance(expr, sp.Expr):
        return None
    coeff, rest = expr.as_coeff_Mul() if isinstance(expr, sp.Mul) else (sp.S.One, expr)
    if isinstance(rest, sp.Mul) and coeff != 1:
        coeff, rest = sp.S.One, expr
    lead = [coeff] if coeff != 1 else []
    rule, zeros = rule_name(rest), None
    if isinstance(rest, sp.Add):
        terms = LatexPrinter()._as_ordered_terms(rest)       # in the order the definition prints
        symbolic = Terms(*[Partial(t, v) for t in terms])
        inner = Terms(*[_diff_real(t, v) for t in terms])
        vanish = [Partial(t, v) for t in terms if not t.has(v)]
        zeros = Equal(*vanish, sp.S.Zero) if vanish else None
    elif isinstance(rest, sp.Mul):
        factors = list(rest.args)
        symbolic = Terms(*[Chain(*[f for j, f in enumerate(factors) if j != i], Partial(fi, v))
                           for i, fi in enumerate(factors)])
        inner = Terms(*[Chain(*[f for j, f in enumerate(factors) if j != i], _diff_real(fi, v))
                        for i, fi in enumerate(factors)])
    elif isinstance(rest, sp.Pow) and rest.exp.is_number:
        u, n = rest.base, rest.exp
        outer = n * u ** (n - 1)
        symbolic, inner = Chain(outer, Partial(u, v)), Chain(outer, _diff_real(u, v))
    elif isinstance(rest, sp.Function) and len(rest.args) == 1 and rest.args[0].has(v):
        u = rest.args[0]
        if u == v:
            # f(v) itself: no inner derivative, so no chain rule; the line is f's own derivative
            what = "the activation's derivative" if isinstance(rest, Activation) else f"derivative of {type(rest).__name__}"
            return {"rule": what, "lines": [_lead(lead, _outer(rest))], "zeros": None}
        symbolic, inner = Chain(_outer(rest), Partial(u, v)), Chain(_outer(rest), _diff_real(u, v))
    else:
        return None
    result = _diff_real(expr, v)
    lines = [_lead(lead, symbolic), _lead(lead, inner)]
    return {"rule": rule, "lines": lines + ([result] if result != lines[-1] else []), "zeros": zeros}


def _lead(lead, body):
    return Chain(*lead, body) if lead else body


def loss_terms(d, p, first_node) -> sp.Basic | None:
    """The loss's total derivative by p, one term per input of the loss, vanishing ones braced.

    Seed 000: ∂L/∂w₁ = ∂L/∂p · ∂p/∂w₁ + ⏟(∂L/∂y · ∂y/∂w₁)=0 — y does not depend on w₁.
    None when every input of the loss reaches p (nothing vanishes).
    """
    g, loss = d.graph, d.loss_name
    reach = d._descendants(p)
    parents = g.parents(loss)
    if all(q in reach for q in parents):
        return None
    L, P = g.symbol(loss), g.symbol(p)
    terms = []
    for q in sorted(parents, key=lambda q: q not in reach):      # the vanishing terms last
        term = Chain(Partial(L, g.symbol(q)), TotalPartial(g.symbol(q), P))
        terms.append(term if q in reach else Vanishes(term))
    return Terms(*terms)


def reduction_steps(d) -> list[dict]:
    """∂L/∂ŷ over a batch, line by line: the cost's constant in front of the sum, then simplified.

    Seed 000 (C = (p − y)²/2, mean): ∂L/∂p = 1/(2m) Σ 2(p − y) = 1/m Σ (p − y).
    """
    g = d.graph
    if not d.layout.worked_in_numbers:
        return []
    cost = g.expr(d.loss_name)
    coeff, rest = cost.as_coeff_Mul()
    scale = coeff / BATCH_SIZE if d.reduction == "mean" else coeff
    rows = []
    L = sp.Symbol("L")
    for q in g.parents(d.loss_name):
        if g.kind(q) != "node":
            continue
        s = g.symbol(q)
        first = sp.Mul(scale, sp.Sum(sp.factor_terms(_diff_real(rest, s)), (SAMPLE, 1, BATCH_SIZE)), evaluate=False)
        last = d.reduce(sp.factor_terms(_diff_real(cost, s)))
        lhs = Partial(L, s)
        lines = [first] + ([last] if sp.simplify(first.doit() - last.doit()) == 0
                           and latex(first) != latex(last) else [])     # never "= Σ2(a − y) = Σ2(a − y)"
        rows.append({"lhs": Tex(latex(lhs)), "line": Tex(" = ".join(latex(x) for x in lines)),
                     "scaled": len(lines) > 1,
                     "sympy": {"lhs": lhs, "lines": lines, "cost": cost, "node": s,
                               "chain": [lhs, *lines], "batch": True}})
    return rows


def _diff_real(expr, v):
    """sympy.diff with every symbol real: |u|′ = sign(u), never re(u) and im(u) derivatives."""
    real = {x: sp.Dummy(x.name, real=True) for x in expr.free_symbols | {v}}
    return sp.diff(expr.xreplace(real), real[v]).xreplace({r: x for x, r in real.items()})


def delta_case(d, name: str) -> str | None:
    """Seed 003's two cases for δ of a node: 'output layer' or 'not output layer'.

    A node is in the output layer when no weight stands between it and the
    loss: no node after it (before the loss) is computed from a parameter,
    so its δ comes from the loss through activations alone.
    """
    g = d.graph
    if g.kind(name) != "node" or name == d.loss_name or name not in d.adjoint:
        return None
    last = {d.loss_name, getattr(g, "cost_name", None)}
    later = d._descendants(name) - {name} - last
    weighted = any(g.kind(q) == "param" for n in later for q in g.parents(n))
    return "not output layer" if weighted else "output layer"


class GradL(sp.Expr):
    """∇L(θᵗ), the gradient of the batch loss at an iterate (printed, never evaluated)."""

    def _latex(self, printer, exp=None):
        return r"\nabla L\left(%s\right)" % printer._print(self.args[0])


class LossAt(sp.Expr):
    """L(θᵗ), the loss at an iterate."""

    def _latex(self, printer, exp=None):
        return r"L\left(%s\right)" % printer._print(self.args[0])


#: the most gradient-descent steps a worked example iterates
MAX_STEPS = 20
#: an iterate's numerator and denominator stay exact up to this many bits (about 30 digits)
EXACT_BITS = 100


def iterations(d, values: dict, lr, count: int) -> list[dict]:
    """Gradient descent from the example's values: θ⁰ → θ¹ → … → θ^count (seed 003).

    Each step evaluates the loss and gradient at θᵗ with :meth:`Derivation.evaluate`
    (exact numbers, one sample) and sets θᵗ⁺¹ = θᵗ − η ∇L(θᵗ).
    """
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_STEPS:
        raise OutputError(f"steps_taken must be a whole number from 1 to {MAX_STEPS}, got {count!r}")
    params = d.params
    eta, eta_sym = sp.nsimplify(lr), sp.Symbol("eta")
    theta = {p: sp.nsimplify(values[p]) for p in params}
    rows = []
    for t in range(count):
        ev = d.evaluate({**values, **theta})
        at_theta = {**{n: values[n] for n in d.graph.input_names + d.graph.target_names}, **theta}
        grad = [ev["gradient"][p] for p in params]
        # exact while the numbers are rational; 30 digits once exp() appears (σ of a number)
        new = {p: _settle(theta[p] - eta * gp) for p, gp in zip(params, grad)}
        now, nxt = sp.Symbol(f"theta^{t}"), sp.Symbol(f"theta^{t + 1}")
        rule = Equal(nxt, sp.Add(now, sp.Mul(-1, eta_sym, GradL(now), evaluate=False), evaluate=False),
                     _vec([new[p] for p in params]))
        at = Equal(GradL(now), _vec(grad))
        loss = Equal(LossAt(now), _shown(ev["forward"][d.loss_name]))
        start = Equal(now, _vec([theta[p] for p in params]))
        rows.append({"t": t, "start": Tex(latex(start)), "rule": Tex(latex(rule)), "gradient": Tex(latex(at)),
                     "loss": Tex(latex(loss)),
                     "sympy": {"theta": [theta[p] for p in params], "grad": grad,
                               "next": [new[p] for p in params], "loss": ev["forward"][d.loss_name],
                               # each line at this iterate θᵗ (the example's inputs and targets)
                               "claims": [{"chain": list(c.args[1:] if c is rule else c.args), "at": at_theta,
                                           "means": {now: sp.ImmutableMatrix([d.graph.symbol(p) for p in params]),
                                                     eta_sym: eta}}
                                          for c in (loss, at, rule)]}})
        theta = new
    return rows


def _settle(x):
    # exact while the fractions stay short: a cubic's iterates grow ~5× in digits a step
    x = sp.sympify(x, strict=True)      # a number or an expression the engine made, never text
    exact = x.is_Rational and max(abs(x.p), x.q).bit_length() <= EXACT_BITS
    return x if exact else sp.N(x, 30)


def _shown(x):
    x = sp.sympify(x, strict=True)      # a number or an expression the engine made, never text
    return x if x.is_Integer else sp.Float(sp.N(x, 15), 15)


def _vec(xs):
    """A column of numbers written as a transposed row (compact), decimals as in the example."""
    return sp.Transpose(sp.ImmutableMatrix([[_shown(x) for x in xs]]))
