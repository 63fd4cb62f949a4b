"""Backpropagation through time: the documents' view of an unrolled recurrent network.

For a graph built by ``rnn``, ``lstm`` or ``gru`` (it records its hidden states
``graph.states``, one per step, and an LSTM its cell states ``graph.cells``),
the engine's adjoints are regrouped by time step.  Nothing here differentiates:

* each state's δ is the engine's own adjoint (the next step's terms, and at
  t = T the output's), then with every δ inside a step replaced by its own
  adjoint until only the states' δs of the next step are left, then with each
  gate derivative in its compact form f′(Z) = g(f(Z)) (proved by SymPy);
* each shared weight's gradient is the engine's sum over the steps that use it,
  one term a step, each written with the states' δs;
* the per-step bound ‖δ_{h_{t−1}}‖ ≤ … is read off that recursion by the norm
  rules ‖AB‖ ≤ ‖A‖‖B‖, ‖f′(Z) ⊙ A‖ ≤ sup|f′| ‖A‖, ‖B ⊙ A‖ ≤ max|B| ‖A‖, and
  printed beside the norms measured at the document's example.

Every displayed equation is a chain under a ``"sympy"`` key: the certificate
checks it with the rest of the document.
"""
from __future__ import annotations

import functools

import numpy as np
import sympy as sp

from ..engine import delta
from ..errors import SymbackError
from ..matrix import Elementwise, FPrime
from ..printing import Chain, Norm, Partial, Terms, Tex, latex, number, prime, visual_len
from ..vjp import AdjointMatrix
from . import analysis
from .lines import LINE_WIDTH

__all__ = ["bptt", "recurrent"]

ROWS = 3            # the batch of the random example, when the document has no values


def recurrent(d) -> bool:
    """True for a graph that records one hidden state per unrolled step (rnn, lstm, gru)."""
    g = d.graph
    steps = getattr(g, "steps", None)
    return bool(d.layout.kind == "matrix" and steps and len(g.states) == steps
                and all(n in d.adjoint for n in g.states))


def bptt(d, values=None, apps=(), seed: int = 0) -> dict | None:
    """The section's context (None for a graph that is not an unrolled recurrent network)."""
    if not recurrent(d):
        return None
    g = d.graph
    states, cells = list(g.states), [c for c in getattr(g, "cells", []) if c in d.adjoint]
    rec = _Recurrence(d, states + cells, apps)
    hidden = [rec.delta_row(n) for n in reversed(states)]
    cell_rows = [rec.delta_row(n) for n in reversed(cells)]
    weights = [rec.weight_row(p) for p in _shared(d, states[-1])]
    point, source = _point(d, values, seed)
    return {"cell": getattr(g, "cell", "recurrent"), "steps": len(states),
            "hidden": hidden, "cells": cell_rows or None, "weights": weights,
            "gates": rec.gate_rows(), "identities": _identities(rec),
            "additive": _additive(rec, cells or states),
            "flow": _flow(d, rec, point, states, cells, apps), "source": source,
            "sympy": {"values": point.values}}


# ------------------------------------------------------------- the recursion
class _Recurrence:
    """The engine's adjoints with every δ inside a step written out (the states' δs kept)."""

    def __init__(self, d, kept, apps):
        self.d, self.g, self.apps = d, d.graph, apps
        inside = self.g.ancestors(kept[:len(self.g.states)][-1]) - set(kept)
        self.inner = {delta(self.g, n): d.adjoint[n] for n in inside
                      if n in d.adjoint and self.g.kind(n) == "node"}
        self.compact = _compact_forms(self.g)

    def written_out(self, e):
        """e with the δ of every node inside a step replaced by its adjoint, until none is left."""
        for _ in range(len(self.inner) + 1):
            if not e.has(*self.inner):
                return e
            e = _flat(e.xreplace(self.inner))
        raise SymbackError("the recurrence's adjoints do not end")     # a cycle: never for a DAG

    def with_compact(self, e):
        """e with each f′(Z) whose f(Z) is a node N written g(N): σ′ = σ(1 − σ), tanh′ = 1 − tanh²."""
        return _flat(e.xreplace(self.compact)) if self.compact else e

    def links(self, lhs, e):
        """[lhs, engine form, written out, compact]: the distinct forms, in order."""
        out = [lhs, e]
        for f in (self.written_out, self.with_compact):
            nxt = _ordered(f(out[-1]))
            if nxt != out[-1]:
                out.append(nxt)
        return out

    def delta_row(self, n):
        g = self.g
        chain = self.links(delta(g, n), _ordered(self.d.adjoint[n]))
        return {"name": Tex(latex(g.symbol(n))), "lhs": Tex(latex(chain[0])),
                "lines": Tex(_aligned(chain[1:], self.apps)), "sympy": {"chain": chain}}

    def weight_row(self, p):
        g = self.g
        engine = _ordered(self.d.adjoint[p], self.g)
        terms = _terms_of(engine)
        chain = [Partial(g.symbol(self.d.loss_name), g.symbol(p)), engine]
        out = [self.written_out(t) for t in terms]
        if out != list(terms):
            chain.append(Terms(*out) if len(out) > 1 else out[0])
        return {"name": Tex(latex(g.symbol(p))), "lhs": Tex(latex(chain[0])), "terms": len(terms),
                "lines": Tex(_aligned(chain[1:], self.apps)), "sympy": {"chain": chain}}

    def gate_rows(self):
        """One line per activation at the last step: f′(Z) = [g(f(Z))]_⊙ = [g(N)]_⊙."""
        rows, seen = [], set()
        last = self.g.ancestors(self.g.states[-1]) | {self.g.states[-1]}
        for fp, node_form in self.compact.items():
            node = self.g.symbol(next(iter(node_form.operands)).name)
            key = (fp.activation, node.name)
            if node.name not in last or key in seen or not _last_step(self.g, node.name):
                continue
            seen.add(key)
            u = node_form.function.variables[0]
            g_of_f = Elementwise(sp.Lambda(u, node_form.function.expr.xreplace({u: fp.function(u)})),
                                 fp.arg)
            chain = [fp, g_of_f, node_form]
            # the middle link written out: printed without turning 1 − tanh² back into tanh′
            rows.append({"line": Tex(" = ".join(latex(e, applications=self.apps, primes=k != 1, sums_last=True)
                                                for k, e in enumerate(chain))),
                         "sympy": {"chain": chain}})
        return rows


def _identities(rec) -> list:
    """f′(z) = g(f(z)) for each activation of the gates, as SymPy proved it (for the prose)."""
    z, out = sp.Symbol("z"), []
    for act in dict.fromkeys(p.activation for p in rec.compact):
        form = _proved(act)
        out.append(Tex(latex(prime(act, (z,))) + " = "
                       + latex(form(act(z)), primes=False, sums_last=True)))
    return out


def _last_step(g, n) -> bool:
    """n lies in the last step: after the state before it."""
    return len(g.states) < 2 or n not in g.ancestors(g.states[-2]) and n != g.states[-2]


@functools.lru_cache(maxsize=64)
def _proved(activation) -> sp.Lambda | None:
    """The activation's compact form u ↦ g(u) with f′(z) = g(f(z)), once SymPy proves it."""
    g = getattr(activation, "output_derivative", None)
    if g is None:
        return None
    z = sp.Symbol("z", real=True)
    f = activation.definition(z)
    if sp.simplify((sp.diff(f, z) - g(f)).rewrite(sp.exp)) != 0:
        return None     # not proved: the document keeps f′ as it is
    return g


def _compact_forms(g) -> dict:
    """{f′(Z): [g(N)]_⊙} for every node N = f(Z) of an activation with a proved compact form."""
    out = {}
    for n in g.node_names:
        e = g.expr(n)
        if not isinstance(e, sp.matrices.expressions.applyfunc.ElementwiseApplyFunction):
            continue
        fn = e.function
        if not isinstance(fn, sp.Lambda):
            continue
        prime = FPrime(fn, e.expr)
        form = _proved(prime.activation)
        if form is not None:
            out[prime] = Elementwise(form, g.symbol(n))
    return out


def _flat(e):
    """(A ⊙ B) ⊙ C as A ⊙ B ⊙ C: nested Hadamard products, as substitution leaves them, flattened."""
    if not isinstance(e, sp.Basic) or not e.args or isinstance(e, (sp.MatrixSymbol, sp.Lambda)):
        return e
    args = [_flat(a) for a in e.args]
    if isinstance(e, sp.HadamardProduct):
        args = [b for a in args for b in (a.args if isinstance(a, sp.HadamardProduct) else (a,))]
    return e.func(*args) if args != list(e.args) else e


def _shared(d, last_state) -> list[str]:
    """The parameters the steps share (every one that reaches the last state), in order."""
    up = d.graph.ancestors(last_state)
    return [p for p in d.params if p in up]


def _terms_of(e) -> tuple:
    return e.args if isinstance(e, Terms) else (e,)


def _ordered(e, g=None):
    """A sum of matrices as Terms in time order (the step of the latest δ or node in each term)."""
    if not isinstance(e, sp.MatAdd):
        return e
    if g is None:
        return Terms(*e.args)
    rank = {g.symbol(n): i for i, n in enumerate(g.order)}
    rank.update({delta(g, n): i for i, n in enumerate(g.order)})

    def when(t):
        return max((rank[s] for s in t.atoms(sp.MatrixSymbol) if s in rank), default=-1)
    return Terms(*sorted(e.args, key=when))


def _aligned(links, apps, relation="=") -> str:
    r"""Links of a chain for an align row, ``= a \\ &= b``; a sum one term a row when it is long."""
    rows = []
    for link in links:
        parts = [latex(t, applications=apps) for t in _terms_of(link)]
        whole = " + ".join(parts)
        if len(parts) == 1 or visual_len(whole) <= LINE_WIDTH:
            rows.append(f"&{relation} " + whole)
        else:
            rows.append(f"&{relation} " + parts[0])
            rows += [r"&\quad + " + p for p in parts[1:]]
    return " \\\\\n".join(rows)


def _additive(rec, carried):
    """The term of δ_{s_{T−1}} that is δ_{s_T} times gates alone (no f′, no weight), for the carried
    state s (an LSTM's cell c_t, a GRU's h_t): the additive path back through time, or None (Elman)."""
    if len(carried) < 2:
        return None
    g, prev, last = rec.g, carried[-2], carried[-1]
    for t in _terms_of(_ordered(rec.written_out(rec.d.adjoint[prev]))):
        if t.has(delta(g, last)) and not t.has(FPrime, sp.MatMul, sp.Transpose):
            return {"term": Tex(latex(t, applications=rec.apps)),
                    "lhs": Tex(latex(delta(g, prev))), "next": Tex(latex(delta(g, last)))}
    return None


# ------------------------------------------------------------- the measured flow
class _At:
    """A worked example's values with every node and δ there (NumPy, from the definitions)."""

    def __init__(self, d, values):
        g = d.graph
        self.values = values
        self.rows = np.atleast_2d(values[g.input_names[0]]).shape[0]
        env = {g.symbol(n): np.atleast_2d(np.asarray(v, dtype=float)) for n, v in values.items()}
        env.update({g.symbol(n): v for n, v in analysis.numpy_forward(d, values).items()})
        env.update(analysis.numpy_adjoints(d, env, self.rows))
        self.env = env

    def value(self, e):
        return analysis.value_of(e, self.env, self.rows)


def _point(d, values, seed):
    if values is not None:
        return _At(d, values), "the worked example's values"
    return _At(d, analysis.random_values(d, seed, rows=ROWS)), f"random values (seed {seed}, {ROWS} samples)"


def _flow(d, rec, at, states, cells, apps) -> dict:
    """The one-step bound on each ‖δ_{h_{t−1}}‖ from step t's δs, beside the measured norms."""
    g = d.graph
    norm = lambda n: float(np.linalg.norm(at.value(delta(g, n))))      # noqa: E731
    rows, formula = [], None
    for k in range(len(states) - 1, -1, -1):
        measured = norm(states[k])
        row = {"t": k + 1, "measured": measured, "bound": None,
               "cell": norm(cells[k]) if cells else None}
        if k + 1 < len(states):
            e = rec.written_out(_ordered(d.adjoint[states[k]]))
            symbolic, value = _bound(e, at, apps)
            if value < measured * (1 - 1e-9):
                raise SymbackError(f"the bound on δ of {states[k]} is below its norm: a bug in symback")
            row["bound"] = value
            if formula is None:
                formula = {"lhs": Tex(latex(Norm(delta(g, states[k])))),
                           "lines": Tex(_aligned([symbolic], apps, r"\le"))}
        rows.append(row)
    return {"formula": formula, "cells": bool(cells),
            "rows": [{"t": r["t"], "measured": Tex(number(r["measured"], 4)),
                      "bound": Tex(number(r["bound"], 4)) if r["bound"] is not None else None,
                      "cell": Tex(number(r["cell"], 4)) if r["cell"] is not None else None,
                      "sympy": {"measured": r["measured"], "bound": r["bound"], "cell": r["cell"]}}
                     for r in rows]}


def _bound(e, at, apps):
    """(symbolic bound, its value) of ‖e‖_F by the rules of the module docstring."""
    if isinstance(e, Terms) or isinstance(e, sp.MatAdd):
        parts = [_bound(t, at, apps) for t in e.args]
        return Terms(*[p[0] for p in parts]), sum(p[1] for p in parts)
    if isinstance(e, sp.MatMul):
        coeff, mats = e.as_coeff_matrices()
        parts = [_bound(m, at, apps) for m in mats]
        return (Chain(*([abs(coeff)] if coeff not in (1, -1) else []), *_factors(parts)),
                float(abs(coeff)) * float(np.prod([p[1] for p in parts])))
    if isinstance(e, sp.HadamardProduct):
        flowing = [a for a in e.args if a.has(AdjointMatrix)]
        if len(flowing) != 1:
            return _norm(e, at)
        parts = [_bound(flowing[0], at, apps)]
        for a in e.args:
            if a is flowing[0]:
                continue
            if isinstance(a, FPrime):
                sup, _ = analysis.derivative_sup(a.activation)
                parts.insert(0, (SupPrime(sp.Symbol(a.activation.__name__)), float(sup)))
            else:
                parts.insert(0, (MaxAbs(a), float(np.max(np.abs(at.value(a))))))
        return Chain(*_factors(parts)), float(np.prod([p[1] for p in parts]))
    return _norm(e, at)


def _norm(e, at):
    # ‖Wᵀ‖_F = ‖W‖_F: the weight is named as it is
    return Norm(e.arg if isinstance(e, sp.Transpose) else e), float(np.linalg.norm(at.value(e)))


def _factors(parts) -> list:
    """The symbolic factors of a product of bounds, nested products flattened."""
    return [f for p in parts for f in (p[0].args if isinstance(p[0], Chain) else (p[0],))]


class SupPrime(sp.Expr):
    """sup_z |f′(z)| of the activation named by the argument (a Symbol), printed sup|f′|."""

    is_commutative = True

    def _latex(self, printer, exp=None):
        from ..functions import Activation
        name = self.args[0].name
        cls = next((c for c in _subclasses(Activation) if c.__name__ == name), None)
        return rf"\sup\lvert {cls.latex_name if cls else name}'\rvert"


class MaxAbs(sp.Expr):
    """The largest |entry| of a matrix, printed max|A|."""

    is_commutative = True

    def _latex(self, printer, exp=None):
        return rf"\max\lvert {printer._print(self.args[0])}\rvert"


def _subclasses(cls):
    for c in cls.__subclasses__():
        yield c
        yield from _subclasses(c)

