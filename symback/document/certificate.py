"""The certificate: every displayed equation checked, link by link, before it is written.

A displayed equation ``a = b = c`` is held in the document context as the
chain ``[a, b, c]`` of SymPy expressions (under a part's ``"sympy"`` key,
``"chain"``), and the document is printed from exactly these.  The symbols
that only documents use get their meaning here, independently of the text:

* ``∂L/∂θ`` of a scalar graph is a central difference of the loss recomputed
  from the definitions (40 digits); of a matrix graph, the engine's gradient,
  itself checked against a central difference of the loss (NumPy);
* ``∂c/∂v`` along an edge is ``sympy.diff`` of c's definition (scalar), or
  the engine's map δ_c ↦ VJP (matrix);
* ``δ_v`` is the engine's adjoint, evaluated node by node;
* a ``Chain`` multiplies its factors, or applies its maps, in order; ``Terms`` adds.

Every adjacent pair of a chain is then compared at random values (matrices
at their own small sizes, a batch of two).  A link that fails is a bug in
symback, never a user's error: :class:`CertificateError` stops the document
before it is written.  :func:`certify` is generic: it needs only concrete
shapes, so graphs without a batch dimension go through it unchanged.
"""
from __future__ import annotations

import math
import random

import numpy as np
import sympy as sp

from ..engine import Adjoint, delta
from ..matrix import BATCH, is_matrix
from ..printing import Chain, Partial, PerSample, Terms, prime_classes
from .claims import claim_values, real_diff as _real_diff, unprime
from .analysis import numpy_adjoints, numpy_forward, random_values, value_of
from .factors import PENALTY, compose, edge_expr

__all__ = ["CertificateError", "certify", "lines"]

RTOL = 1e-7            # exact links, floating point
FD_RTOL = 1e-4         # a matrix gradient against a central difference
FD_H = 1e-6
ROWS = 2               # the batch size the matrices are checked at


class CertificateError(AssertionError):
    """A displayed equation is false: a bug in symback (never shown to a reader)."""


def lines(ctx, where: str = "") -> list[tuple[str, list]]:
    """Every chain held in the context: (where it is, [a, b, c, ...])."""
    return [(w, list(info["chain"])) for w, info in claims(ctx, where)]


def claims(ctx, where: str = "") -> list[tuple[str, dict]]:
    """Every line held in the context: (where it is, its "sympy" dict with the chain and what it claims).

    A part that shows several equations holds them as a list under its "sympy" dict's "claims".
    """
    found = []
    if isinstance(ctx, dict):
        info = ctx.get("sympy") if isinstance(ctx.get("sympy"), dict) else {}
        if info.get("chain") is not None:
            found.append((where, info))
        found += [(f"{where}.claims[{k}]", c) for k, c in enumerate(info.get("claims") or [])]
        for k, v in ctx.items():
            if k != "sympy":
                found += claims(v, f"{where}.{k}" if where else k)
    elif isinstance(ctx, (list, tuple)):
        for i, v in enumerate(ctx):
            found += claims(v, f"{where}[{i}]")
    return found


#: above this many parameter entries a network is checked at small widths (its formulas do not
#: depend on the widths): random values for a 10⁹-weight layer take minutes and gigabytes
MAX_ENTRIES = 10**6


def certify(d, ctx, seed: int = 0) -> dict:
    """Check every chain of the context; returns {'lines': n, 'links': k}, or raises CertificateError."""
    if _entries(d) > MAX_ENTRIES:
        d, ctx = _narrowed(d, ctx)
    point = _point(d, seed, ctx.get("sympy", {}).get("names", {}))
    found = claims(ctx)
    links = 0
    for where, info in found:
        chain = info["chain"]
        relations = info.get("relations") or ["="] * (len(chain) - 1)
        for values in claim_values(point, where, info):
            for k in range(1, len(values)):
                if not _holds(values[k - 1], values[k], relations[k - 1]):
                    raise CertificateError(
                        f"{where}: link {k} of {len(chain)} is false: {chain[k - 1]} {relations[k - 1]} {chain[k]} "
                        f"({_short(values[k - 1])} vs {_short(values[k])})")
        links += len(chain) - 1
    return {"lines": len(found), "links": links}


def _entries(d) -> int:
    return sum(math.prod(d.layout.param_shape(p)) for p in d.graph.param_names)


def _narrowed(d, ctx):
    """The same graph and context with every width over 6 made 2–6 (widths that were equal stay
    equal, a width of 1 stays 1, the batch stays a symbol), derived again: what the chains
    say holds at any widths, so it is checked where the values fit in memory."""
    from ..engine import Derivation
    from ..graph import Graph
    from ..matrix import Select
    g = d.graph
    if any(g.expr(n).has(sp.MatrixSlice, Select) for n in g._expr):
        raise CertificateError("a network this wide with slices cannot be checked at small widths")

    def width(n):
        return n if not (isinstance(n, (int, sp.Integer)) and int(n) > 6) else sp.Integer(2 + int(n) % 5)

    kinds = (sp.MatrixSymbol, sp.OneMatrix, sp.ZeroMatrix, sp.Identity)

    def rebuilt(x):     # the same symbol (any subclass: δ's too) or constant, narrower
        if isinstance(x, sp.MatrixSymbol):
            return x.func(x.args[0], *map(width, x.shape))
        return type(x)(*map(width, x.shape))

    def narrow(e):
        if not isinstance(e, sp.Basic) or not e.has(*kinds):
            return e
        return e.replace(lambda x: isinstance(x, kinds) and any(width(k) != k for k in x.shape), rebuilt)

    h = Graph()
    for n in g.order:
        kind = g.kind(n)
        if kind in ("input", "target", "param"):
            h._declare([n], kind, tuple(map(width, g.shape(n))) or None)
        else:
            h._add(n, kind, narrow(g.expr(n)))
    h.loss_name, h.reduction, h.cost_name = g.loss_name, g.reduction, g.cost_name
    h.penalty, h.states = narrow(g.penalty), list(g.states)

    def walk(x):
        if isinstance(x, dict):     # the folded names' dict has symbols for keys: narrowed too
            return {narrow(k) if isinstance(k, sp.Basic) else k: walk(v) for k, v in x.items()}
        if isinstance(x, list):
            return [walk(v) for v in x]
        if isinstance(x, tuple):
            return tuple(walk(v) for v in x)
        return narrow(x)
    return Derivation(h), walk(ctx)


def _short(v) -> str:
    return np.array2string(np.asarray(v, dtype=float), precision=6, threshold=8) if np.ndim(v) else f"{v:.9g}"


def _holds(a, b, relation) -> bool:
    """a = b (to RTOL of the larger), a ≤ b (a bound), or a ≈ b (a number printed to 4 digits)."""
    if relation == "<=":
        a, b = float(np.real(np.asarray(a).reshape(()))), float(np.real(np.asarray(b).reshape(())))
        return a <= b + RTOL * max(1.0, abs(b))
    if relation == "~":
        a, b = complex(np.asarray(a).reshape(())), complex(np.asarray(b).reshape(()))
        return abs(a - b) <= 5e-4 * max(abs(a), abs(b))
    return _close(a, b)


def _close(a, b) -> bool:
    a, b = np.asarray(a, dtype=complex), np.asarray(b, dtype=complex)
    if a.size == 1 and b.size == 1:
        a, b = a.reshape(()), b.reshape(())
    if a.shape != b.shape:
        return False
    finite = np.isfinite(a) & np.isfinite(b)
    scale = max(1.0, float(np.max(np.abs(a[finite]), initial=0.0)), float(np.max(np.abs(b[finite]), initial=0.0)))
    # an entry outside the domain (log of a negative random value) is nan on both sides alike
    return bool(np.allclose(a, b, rtol=0.0, atol=RTOL * scale, equal_nan=True))


def _point(d, seed: int, names: dict) -> "_Point":
    """Random values of the graph's form: 40-digit numbers where it is worked in numbers, arrays
    of a matrix graph (one sample's, or a batch of ROWS rows) elsewhere."""
    return (_NumberPoint if d.layout.worked_in_numbers else _ArrayPoint)(d, seed, names)


class _Point:
    """Random values of a graph's inputs, targets and parameters, with every node and δ there
    (what a chain's link means; how it is valued is the subclass's: numbers or arrays)."""

    #: whether the values are arrays (a matrix graph's) rather than numbers
    matrix = False

    def __init__(self, d, seed: int, names: dict, given: dict | None = None):
        self.d, self.g, self.names, self.seed = d, d.graph, names, seed
        self.rows = ROWS
        self._cache = {}
        self._place(seed, given)

    def at(self, given: dict) -> "_Point":
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


class _NumberPoint(_Point):
    """A scalar graph's point: 40-digit numbers, each derivative an independent difference."""

    def _place(self, seed, given=None):
        g, rng, found = self.g, random.Random(seed), None
        for attempt in range(1 if given else 20):      # a point where every node is real and finite (a log's domain)
            low = -1 if attempt < 10 else 0.2     # then positive values only (√x, log x of an input)
            env = {g.symbol(n): sp.Float(rng.uniform(0.1, 0.9) if g.kind(n) == "target" else rng.uniform(low, 1.2), 40)
                   for n in g.input_names + g.target_names + g.param_names}
            env.update({g.symbol(n): sp.N(v, 40) for n, v in (given or {}).items()})
            self.given = dict(env)
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
        where it is computed): a central difference in 40-digit arithmetic, node by node."""
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
        return (value(h) - value(-h)) / (2 * h)

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


class _ArrayPoint(_Point):
    """A matrix graph's point: NumPy arrays, the engine's gradients checked against a difference."""

    matrix = True

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
            loss = lambda w: float(np.sum(numpy_forward(d, {**self.values, p: w})[d.loss_name]))  # noqa: E731
            fd = (loss(base + FD_H * v) - loss(base - FD_H * v)) / (2 * FD_H)
            exact = float(np.sum(grad * v))
            if abs(fd - exact) > FD_RTOL * max(1.0, abs(fd), abs(exact)):
                raise CertificateError(f"the gradient of {p} disagrees with a finite difference: {exact} vs {fd}")

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


class _NotReal(Exception):
    pass


def _shape(sym, rows):
    return tuple(rows if k == BATCH else int(k) for k in sym.shape)

