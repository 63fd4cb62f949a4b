"""The points a document's lines are checked at: random values of a graph's inputs, targets and
parameters, with every node and δ there.

:class:`NumberPoint` (a graph worked in numbers: 40-digit values, ∂'s as differences) and
:class:`ArrayPoint` (a matrix graph: arrays at small sizes, the engine's δ checked against a
central difference first) answer the same questions, so the certificate and its claims
(:mod:`symback.document.claims`) never ask which form a graph has.
"""
from __future__ import annotations

import random

import numpy as np
import sympy as sp

from ..engine import Adjoint, delta
from ..errors import CertificateError
from ..functions import Activation
from ..matrix import BATCH, is_matrix
from ..printing import Chain, Partial, PerSample, Terms, prime_classes
from .claims import real_diff as _real_diff, unprime
from .analysis import numpy_adjoints, numpy_forward, random_values, value_of
from .factors import PENALTY, compose, edge_expr
from .kinkslope import one_sided, sympy_slope

__all__ = ["CertificateError", "Point", "NumberPoint", "ArrayPoint", "point_at", "ROWS"]


KINK = 1e-9            # one-sided differences this far apart (relative): a kink, not curvature
FD_RTOL = 1e-4         # a matrix gradient against a central difference
FD_H = 1e-6
ROWS = 2               # the batch size the matrices are checked at


def point_at(d, seed: int, names: dict) -> "Point":
    """Random values of the graph's form: 40-digit numbers where it is worked in numbers, arrays
    of a matrix graph (one sample's, or a batch of ROWS rows) elsewhere."""
    return (NumberPoint if d.layout.worked_in_numbers else ArrayPoint)(d, seed, names)


class Point:
    """Random values of a graph's inputs, targets and parameters, with every node and δ there
    (what a chain's link means; how it is valued is the subclass's: numbers or arrays)."""

    def __init__(self, d, seed: int, names: dict, given: dict | None = None):
        self.d, self.g, self.names, self.seed = d, d.graph, names, seed
        self.rows = ROWS
        self._cache = {}
        self._place(seed, given)

    def at(self, given: dict) -> "Point":
        """The same graph at given values (the worked example's, an iterate θᵗ), kept once made."""
        key = ("at", tuple(sorted((k, str(v)) for k, v in given.items())))
        if key not in self._cache:
            self._cache[key] = type(self)(self.d, self.seed, self.names, given)
        return self._cache[key]

    # ----------------------------------------------------------------- meanings
    def meaning(self, e, sample: bool = False):
        """e with every document-only symbol (∂, δ, chains) replaced by what it stands for."""
        if isinstance(e, Chain):
            parts = [self.meaning(f, sample) for f in e.args]
            return compose(parts) if any(isinstance(p, sp.Lambda) for p in parts) else sp.Mul(*parts)
        if isinstance(e, Terms):
            parts = [self.meaning(f, sample) for f in e.args]
            return sp.MatAdd(*parts) if is_matrix(parts[0]) else sp.Add(*parts)
        if isinstance(e, PerSample):
            return e.args[0]
        if isinstance(e, Partial):
            return self._partial(*e.args, sample=sample)
        if isinstance(e, sp.Lambda):
            return sp.Lambda(e.variables, self.meaning(e.expr, sample))
        if isinstance(e, sp.MatrixBase):
            return e.applyfunc(lambda x: self.meaning(x, sample))
        primes = prime_classes()
        if primes and isinstance(e, sp.Basic) and e.has(*primes):
            # σ′(u) printed as a prime means SymPy's derivative of σ's definition at u
            return self.meaning(e.replace(lambda x: isinstance(x, primes), unprime), sample)
        if self.names and isinstance(e, sp.Basic) and e.has(*self.names):
            # a folded formula's names G₁, G₂, … stand for the parts they were given for
            return self.meaning(e.xreplace(self.names), sample)
        if isinstance(e, sp.Basic) and e.has(Partial, Chain, Terms, PerSample):
            return e.func(*[self.meaning(a, sample) for a in e.args])
        return e

    def _partial(self, of, wrt, sample=False, total=False):
        key = ("partial", of, wrt, sample, total)
        if key not in self._cache:          # an edge appears in many chains: differentiated once
            self._cache[key] = self._partial_uncached(of, wrt, sample, total)
        return self._cache[key]

    def _partial_uncached(self, of, wrt, sample, total):
        d, g = self.d, self.g
        names = {g.symbol(n): n for n in g.order}
        loss = g.symbol(d.loss_name)
        if of == wrt:
            return sp.S.One
        if of == PENALTY and (d.loss_name, names.get(wrt)) in d.local:
            return d.local[(d.loss_name, names[wrt])]      # the penalty's own derivative, λW
        o, w = names.get(of), names.get(wrt)
        if not total and o is not None and w is not None and (o, w) in d.local:
            return self._edge(o, w, wrt)
        if of == loss or (o is None and of.name in ("L", "J", "C")) or (sample and o == getattr(g, "cost_name", None)):
            found = self._loss_partial(w)
            if found is not None:
                return found
        found = self._node_partial(o, w) if o is not None and w is not None else None
        if found is not None:
            return found
        raise CertificateError(f"no meaning known for ∂{of}/∂{wrt}")

    def _loss_partial(self, w):
        """∂loss/∂w: the engine's δ_w (None: no meaning known)."""
        return delta(self.g, w) if w in self.d.adjoint else None

    def _node_partial(self, o, w):
        """A node's total derivative ∂o/∂w, where the point can take one (None)."""
        return None

    # ----------------------------------------------------------------- numbers
    def map_argument(self, first):
        """For a line about an edge map ∂c/∂v: δ ↦ …, the δ it is checked at (None: no map)."""
        return None

    def value(self, e, where="", at=None, total=False):
        """The number (scalar graph) or array (matrix graph) an expression of the chain stands for."""
        sample = where.startswith("punchline")
        m = self._partial(*e.args, sample=sample, total=True) if total and isinstance(e, Partial) \
            else self.meaning(e, sample)
        if isinstance(m, sp.Lambda):        # a map δ ↦ VJP(δ): applied to the δ the line is about
            if at is None:
                raise CertificateError(f"{where}: a map {e} with nothing to apply it to")
            m = m(at)
        return self._evaluate(m, e, where, sample)


class NumberPoint(Point):
    """A scalar graph's point: 40-digit numbers, each derivative an independent difference."""

    def _place(self, seed, given=None):
        g, rng, found = self.g, random.Random(seed), None
        for attempt in range(1 if given else 20):      # a point where every node is real and finite (a log's domain)
            low = -1 if attempt < 10 else 0.2     # then positive values only (√x, log x of an input)
            env = {g.symbol(n): sp.Float(rng.uniform(0.1, 0.9) if g.kind(n) == "target" else rng.uniform(low, 1.2), 40)
                   for n in g.input_names + g.target_names + g.param_names}
            env.update({g.symbol(n): sp.N(v, 40) for n, v in (given or {}).items()})
            self.given = dict(env)
            self.exact = {g.symbol(n): sp.sympify(v, strict=True) for n, v in (given or {}).items()}   # 1/10, not 0.1
            try:
                for n in g.order:
                    if n in g._expr:
                        env[g.symbol(n)] = self._number(g.expr(n).xreplace(env))
                for n in reversed(g.order):
                    if n in self.d.adjoint:
                        env[delta(g, n)] = self._number(self.d.adjoint[n].xreplace(env))
            except (_NotReal, ValueError, TypeError):    # Min of a complex number: not a real point
                continue
            env[Adjoint(self.d.loss_name)] = sp.S.One
            # a point where a gradient is 0 (ReLU's flat side) checks little: a few more tries
            if given or all(env[delta(g, p)] != 0 for p in self.d.params if p in self.d.adjoint):
                self.env = env
                return
            found = found or (dict(self.given), env)
            if attempt >= 5:
                break
        if found:
            self.given, self.env = found
            return
        raise CertificateError("no real point found to check the document at")

    def _difference(self, p, of=None):
        """∂of/∂p at the point (of: the loss by default; p any input, parameter or node, shifted
        where it is computed): a central difference in 40-digit arithmetic, node by node.

        Where the two one-sided differences disagree the point sits on a kink (ReLU at 0), where
        the central difference is their average, which no convention gives: there ∂of/∂p is
        SymPy's derivative of the unrolled expression (:meth:`_kink_slope`)."""
        g, h = self.g, sp.Float("1e-15", 40)
        of = of or self.d.loss_name

        def value(shift):
            env = {s: v for s, v in self.given.items()}
            if p in self.given_names:
                env[g.symbol(p)] = env[g.symbol(p)] + shift
            for n in g.order:
                if n in g._expr:
                    env[g.symbol(n)] = sp.N(g.expr(n).xreplace(env), 40) + (shift if n == p else 0)
            return env[g.symbol(of)]
        up, here, down = value(h), self.env[g.symbol(of)], value(-h)     # here: the point's own value
        right, left = (up - here) / h, (here - down) / h
        if abs(right - left) > KINK * max(1, abs(right), abs(left)):
            return self._kink_slope(p, of)
        return (up - down) / (2 * h)

    def _kink_slope(self, p, of):
        """∂of/∂p where `of` has a kink: the definitions substituted node by node (a shift s added
        to p), every activation written as its own definition, SymPy's d/ds at s = 0 and the
        point's exact values.  A function's convention at its kink is its definition's
        (ReLU = 0 for z < 0, z otherwise: ReLU′(0) = 1), never the engine's chain of factors."""
        g, s = self.g, sp.Dummy("s", real=True)
        real = {g.symbol(n): sp.Dummy(n, real=True) for n in self.given_names}
        env = {k: v + (s if k == g.symbol(p) else 0) for k, v in real.items()}
        for n in g.order:
            if n in g._expr:
                env[g.symbol(n)] = g.expr(n).xreplace(env) + (s if n == p else 0)
        e = env[g.symbol(of)].replace(lambda x: isinstance(x, Activation), lambda x: x.definition(*x.args))
        exact = {v: self.exact.get(k, self.given[k]) for k, v in real.items()}
        slope = sp.diff(e, s).xreplace({s: 0}).xreplace(exact).doit()
        v = sp.N(slope, 40)
        if not (v.is_real and v.is_finite):
            raise CertificateError(f"∂{of}/∂{p} at a kink has no value: {slope}")
        return v

    @property
    def given_names(self):
        return {n for n in self.g.order if self.g.symbol(n) in self.given}

    @staticmethod
    def _number(e):
        try:
            v = sp.N(e, 40)
        except (TypeError, ValueError, KeyError):     # e.g. ReLU of a complex number: not a real point
            raise _NotReal from None
        if not (v.is_real and v.is_finite):
            raise _NotReal
        return v

    def _partial_uncached(self, of, wrt, sample, total):
        names = {self.g.symbol(n) for n in self.g.order}
        if of != wrt and of not in names and not (isinstance(of, sp.Symbol) and of.name in ("L", "J", "C")):
            return _real_diff(of, wrt)      # a part of a definition (steps="full"'s inner derivatives)
        return super()._partial_uncached(of, wrt, sample, total)

    def _edge(self, o, w, wrt):
        return _real_diff(self.g.expr(o), wrt)                # independent of the engine's factor

    def _loss_partial(self, w):
        if w in self.d.params:
            return self._difference(w)      # the oracle: the loss itself, recomputed from the definitions
        return super()._loss_partial(w)

    def _node_partial(self, o, w):
        return self._difference(w, of=o)       # a node's total derivative (steps="full": ∂p/∂w₁)

    def _evaluate(self, m, e, where, sample):
        env = self.env
        m = sp.sympify(m, strict=True)
        # a derivative SymPy left unevaluated (of a kink's function) is taken before the numbers go in
        m = m.doit() if m.has(sp.Derivative) else m
        v = sp.N(m.subs(env) if m.has(sp.Derivative) else m.xreplace(env).doit(), 30)
        if isinstance(v, sp.MatrixBase):            # a column of numbers (∇L(θᵗ) of an iterate)
            return np.array(v.tolist(), dtype=complex)
        if not v.is_number:
            raise CertificateError(f"{where}: {e} does not evaluate to a number (left: {v.free_symbols})")
        return complex(v)

    def draw_sample(self, k: int) -> dict:
        """Sample k of a batch (k = 0: this point's): its own inputs and targets, 40-digit
        numbers, the point's parameters."""
        g, rng = self.g, random.Random(1000 + k)
        given = {n: self.env[g.symbol(n)] for n in g.param_names}
        for n in g.input_names + g.target_names:
            given[n] = self.env[g.symbol(n)] if k == 0 else sp.Float(
                rng.uniform(0.1, 0.9) if g.kind(n) == "target" else rng.uniform(-1, 1.2), 40)
        return given

    def sample_slope(self, body, cost):
        """A sum's term at this sample, each ∂C/∂θ in it the whole gradient: a difference."""
        return self.value(body.replace(lambda x: isinstance(x, Partial) and x.args[0] == cost,
                                       lambda x: sp.Float(self._difference(x.args[1].name), 30)), "batch")

    def cost_gradient(self, name: str, cost):
        """∂C/∂p at this sample for a parameter p, every path: a central difference."""
        return complex(self._difference(name))


class ArrayPoint(Point):
    """A matrix graph's point: NumPy arrays, the engine's gradients checked against a difference."""

    def _place(self, seed, given=None):
        d, g = self.d, self.g
        values = given or random_values(d, seed, rows=ROWS)
        self.rows = np.atleast_2d(values[g.input_names[0]]).shape[0] if g.input_names else ROWS
        env = {g.symbol(n): np.atleast_2d(np.asarray(v, dtype=float)) for n, v in values.items()}
        self.values = values
        for n, v in numpy_forward(d, values).items():
            env[g.symbol(n)] = v
        self.env = env
        self.env.update(self._adjoints(env))
        self.env[Adjoint(d.loss_name)] = 1.0          # δ_L = ∂L/∂L, as the first δ row says
        self._check_gradients()

    def _adjoints(self, env, start=None):
        """δ of every node; `start` = (node, δ value): the δs of that node's sub-loss alone."""
        d, g = self.d, self.g
        if start is None:
            return numpy_adjoints(d, env, self.rows)
        keep = self._ancestors(start[0]) | {start[0]}
        zero = lambda n: np.zeros(_shape(g.symbol(n), self.rows)) if g.shape(n) else 0.0  # noqa: E731
        out = numpy_adjoints(d, env, self.rows, lambda n: start[1] if n == start[0] else (None if n in keep else zero(n)))
        for n in keep:
            if (d.loss_name, n) in d.local:
                # the loss's own edge (a penalty, δ_L = 1) is not part of C = Σᵢ Cᵢ (it reaches parameters only)
                out[delta(g, n)] = out[delta(g, n)] - value_of(d.local[(d.loss_name, n)], {**env, **out}, self.rows)
        return out

    def _ancestors(self, name) -> set:
        seen, todo = set(), list(self.g.parents(name))
        while todo:
            n = todo.pop()
            if n not in seen:
                seen.add(n)
                todo += self.g.parents(n)
        return seen

    def _check_gradients(self):
        """Each matrix gradient of the engine against a central difference of the loss (one direction)."""
        d, g = self.d, self.g
        rng = np.random.default_rng(1)
        for p in d.params:
            grad = np.asarray(self.env[delta(g, p)], dtype=float)
            base = np.atleast_2d(np.asarray(self.values[p], dtype=float))
            v = rng.normal(size=base.shape)
            left, fd, right, kink = one_sided(d, self.values, p, v, FD_H)
            exact = float(np.sum(grad * v))
            if kink:
                # on a kink (ReLU at 0) the central difference is the two slopes' average: the
                # oracle is SymPy's derivative of the written-out loss (ReLU′(0) = 1, its definition's)
                fd = sympy_slope(d, self.values, p, v, self.rows)
            if abs(fd - exact) > FD_RTOL * max(1.0, abs(fd), abs(exact)):
                raise CertificateError(f"the gradient of {p} disagrees with a finite difference: {exact} vs {fd}")
        self._check_penalty(rng)

    def _check_penalty(self, rng):
        """A one-sample graph's ∂P/∂W (SymPy's, outside the cost) against a central difference of P."""
        d, g = self.d, self.g
        for p in [p for p in d.params if g.penalty.has(g.symbol(p))]:
            sym, base = g.symbol(p), self.env[g.symbol(p)]
            v = rng.normal(size=base.shape)
            P = lambda w: float(np.sum(value_of(g.penalty, {**self.env, sym: w}, self.rows)))  # noqa: E731
            fd = (P(base + FD_H * v) - P(base - FD_H * v)) / (2 * FD_H)
            exact = float(np.sum(np.asarray(value_of(d.penalty_gradient(p), self.env, self.rows), dtype=float) * v))
            if abs(fd - exact) > FD_RTOL * max(1.0, abs(fd), abs(exact)):
                raise CertificateError(f"the penalty's gradient of {p} disagrees with a finite difference: {exact} vs {fd}")

    def cost_adjoints(self):
        """The δs of C = Σᵢ Cᵢ (δ_C = 1, no penalty): what the punchline's ∂C/∂W means."""
        if "cost_adjoints" not in self._cache:
            g = self.g
            cost = g.cost_name
            ones = np.ones(_shape(g.symbol(cost), self.rows))
            self._cache["cost_adjoints"] = {**self.env, **self._adjoints(self.env, (cost, ones))}
        return self._cache["cost_adjoints"]

    def _edge(self, o, w, wrt):
        return edge_expr(self.d, o, w)

    def map_argument(self, first):
        """For a line about an edge map ∂c/∂v: δ ↦ …, the δ it is checked at (c's own δ)."""
        if isinstance(first, Partial):
            names = {self.g.symbol(n): n for n in self.g.order}
            if names.get(first.args[0]) in self.d.adjoint:
                return delta(self.g, names[first.args[0]])
        return None

    def _evaluate(self, m, e, where, sample):
        return value_of(m, self.cost_adjoints() if sample else self.env, self.rows)

    def draw_sample(self, k: int) -> dict:
        """Sample k of a batch (k = 0: this point's): one sample of a matrix graph (a sequence,
        an image) drawn as the point's own, the point's parameters."""
        g, given = self.g, dict(self.values)
        if k:
            fresh = random_values(self.d, 1000 + k, rows=self.rows)
            given.update({n: fresh[n] for n in g.input_names + g.target_names})
        return given

    def sample_slope(self, body, cost):
        """A sum's term at this sample: the engine's gradient, which the point checked against a
        difference (a ∂ in it is the whole gradient, every path)."""
        return self.value(body, "batch", total=isinstance(body, Partial))

    def cost_gradient(self, name: str, cost):
        """∂C/∂p at this sample for a parameter p: the engine's gradient (checked)."""
        return self.value(Partial(cost, self.g.symbol(name)), "batch", total=True)


class _NotReal(Exception):
    pass


def _shape(sym, rows):
    return tuple(rows if k == BATCH else int(k) for k in sym.shape)

