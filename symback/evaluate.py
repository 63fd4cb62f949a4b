"""Numbers from a derivation's formulas: the one interpreter, exact or numeric.

Two ways to evaluate the same expressions, each node kind's meaning read from
its definition:

- **exact** (:func:`evaluate`, which is ``Derivation.evaluate``; :func:`numeric`): SymPy's
  own evaluation, a scalar graph's numbers exact when the inputs are, a matrix graph's
  matrices written out entry by entry (:func:`symback.matrix.explicit`) and rounded to
  floats at the end.  For worked examples and the checks that must not share NumPy's
  rounding.  ``explicit`` stays in :mod:`symback.matrix`: it turns an expression into an
  explicit SymPy matrix (also of symbols, for counting operations), which is not an
  evaluation to numbers.
- **numeric** (:func:`value_of`, :func:`numpy_forward`, :func:`numpy_adjoints`,
  :func:`numpy_gradients`): NumPy arrays (products, Hadamard products, activations from
  their SymPy definitions): fast enough for the document's certificate and finite
  differences at any width.

Each node kind (softmax, row norms, the per-sample cost, f'(Z), the image maps) brings its
own evaluation (:mod:`symback.kinds`): ``definition()`` as matrix operations, or
``explicit_value`` and ``numeric_value``, to which this module hands its element-wise
functions (:func:`_scalar_fn`).
"""
from __future__ import annotations

import functools

import numpy as np
import sympy as sp
from sympy.matrices.expressions.applyfunc import ElementwiseApplyFunction

from .budget import within
from .engine import CONSUMERS, SIMPLIFY_SECONDS, delta
from .errors import DefinitionError, SymbackError
from .functions import Activation
from .kinds.base import BATCH, Kind, is_matrix
from .kinds.elementwise import Elementwise
from .matrix import explicit
from .parse import user_expr

__all__ = ["evaluate", "numeric", "inert", "value_of", "numpy_forward", "numpy_adjoints", "numpy_gradients"]


# ------------------------------------------------------------------ exact
def evaluate(d, values: dict) -> dict:
    """Substitute numbers: returns {'forward': {node: value}, 'gradient': {p: value}}.

    ``values`` maps every input, target and parameter name to a number
    (an array for a matrix graph's matrices, samples in rows).  A scalar
    graph's values are exact SymPy numbers when the inputs are, and its
    gradients are per sample (∂C/∂p); a matrix graph's are NumPy arrays,
    the gradients of the batch loss L, computed exactly by SymPy and then
    rounded.  Slow: for checking and examples.
    """
    g = d.graph
    needed = g.input_names + g.target_names + g.param_names
    missing = [n for n in needed if n not in values]
    if missing:
        raise SymbackError(f"values missing for {', '.join(missing)}")
    # a matrix graph's numbers are arrays (NumPy), a scalar graph's exact SymPy numbers
    return {"matrix": _evaluate_matrix, "scalar": _evaluate_scalar}[d.layout.kind](d, values)


def _evaluate_scalar(d, values):
    """A scalar graph's nodes and per-sample gradients, exact when the values are."""
    g = d.graph
    needed = g.input_names + g.target_names + g.param_names
    env = {g.symbol(n): user_expr(values[n], where=f"value of {n}") for n in needed}
    bad = [n for n in needed if not env[g.symbol(n)].is_number]
    if bad:
        raise SymbackError(f"the value of {bad[0]} must be a number, got {values[bad[0]]!r}")
    forward = {}
    for n in g.order:
        if n in g._expr:
            forward[n] = _number(g.expr(n).xreplace(env))
            env[g.symbol(n)] = forward[n]
    grads = {}
    for p in d.params:
        grads[p] = sp.sympify(d.gradient(p).xreplace(env), strict=True)
        if not grads[p].is_Number:
            grads[p] = grads[p].evalf()
    return {"forward": forward, "gradient": grads}


def _number(e):
    """A node's value: exact when SymPy's arithmetic made it a number, else simplified and rounded.

    simplify is bounded (:data:`~symback.engine.SIMPLIFY_SECONDS`): on an example's large
    numbers (σ(10⁸) holds e^(−10⁸)) its nsimplify ran for minutes, or overflowed mpmath
    ("too many digits in integer") at 10³⁰; evalf alone rounds the same value.
    """
    if e.is_Number:
        return e
    try:
        e = within(SIMPLIFY_SECONDS, lambda: sp.simplify(e), default=e)
    except OverflowError:
        pass
    return e.evalf()


def _evaluate_matrix(d, values):
    """A matrix graph's nodes and the derivation's program backward, each through :func:`numeric`."""
    g = d.graph
    names = g.input_names + g.target_names + g.param_names
    arrays = {n: np.atleast_2d(np.asarray(values[n], dtype=float)) for n in names}
    rows = arrays[g.input_names[0]].shape[0] if g.input_names else 1
    env = {}
    for n in names:
        sym, a = g.symbol(n), arrays[n]
        want = tuple(rows if k == BATCH else int(k) for k in sym.shape)
        if a.shape != want:
            raise SymbackError(f"{n} has shape {a.shape}, expected {want}")
        env[sym] = sp.ImmutableMatrix(a)
    as_sympy = lambda v: sp.ImmutableMatrix(v) if np.ndim(v) else sp.Float(v)     # noqa: E731
    forward, grads = {}, {}
    for n in g.order:
        if n in g._expr:
            forward[n] = numeric(g.expr(n), env, rows)
            env[g.symbol(n)] = as_sympy(forward[n])
    for sym, e in d.program().backward:
        value = numeric(e, env, rows)
        env[sym] = as_sympy(value)
        grads[sym.name[len("delta_"):]] = value
    return {"forward": forward, "gradient": {p: grads[p] for p in d.params}}


def inert(e):
    """f(M) entry by entry as symback's Elementwise, which stays unevaluated when M is replaced.

    SymPy's ElementwiseApplyFunction calls f on a 1×1 matrix put in its place,
    and a symback activation called on a matrix builds an ElementwiseApplyFunction
    again, without end; Elementwise means the same and is written out by ``explicit``.
    """
    return e.replace(lambda x: isinstance(x, ElementwiseApplyFunction),
                     lambda x: Elementwise(x.function, x.expr)) if isinstance(e, sp.Basic) else e


def numeric(expr, values: dict, rows: int):
    """A matrix expression of a graph's symbols (and δs, f'(Z), a softmax's VJP) evaluated exactly, as floats."""
    e = inert(expr).xreplace(values)
    r = explicit(e, rows)
    r = r.evalf() if hasattr(r, "evalf") else r
    return np.array(r.tolist(), dtype=float) if hasattr(r, "tolist") else float(r)


# ------------------------------------------------------------------ numeric (NumPy)
def numpy_forward(d, values: dict) -> dict:
    """Every node of a matrix graph computed with NumPy from the definitions alone (no derivative)."""
    g = d.graph
    rows = np.atleast_2d(values[g.input_names[0]]).shape[0]
    env = {g.symbol(n): np.atleast_2d(np.asarray(values[n], dtype=float))
           for n in g.input_names + g.target_names + g.param_names}
    out = {}
    for n in g.order:
        if n in g._expr:
            env[g.symbol(n)] = out[n] = value_of(g.expr(n), env, rows)
    return out


def numpy_adjoints(d, env: dict, rows: int, skip=lambda n: None) -> dict:
    """δ of every node from the engine's recursive forms, evaluated with NumPy ({δ symbol: value}).

    ``env`` holds the forward values; ``skip(n)`` gives a node's δ instead of computing it
    (a value, or None to compute it).
    """
    g, out = d.graph, {}
    for n in reversed(g.order):
        if n in d.adjoint:
            given = skip(n)
            out[delta(g, n)] = given if given is not None else value_of(d.adjoint[n], {**env, **out}, rows)
    return out


def numpy_gradients(d, values: dict) -> dict:
    """Each parameter's gradient, the formulas evaluated with NumPy at `values`."""
    g = d.graph
    rows = np.atleast_2d(values[g.input_names[0]]).shape[0]
    env = {g.symbol(n): np.atleast_2d(np.asarray(values[n], dtype=float))
           for n in g.input_names + g.target_names + g.param_names}
    env.update({g.symbol(n): v for n, v in numpy_forward(d, values).items()})
    adj = numpy_adjoints(d, env, rows)
    return {p: np.asarray(adj[delta(g, p)], dtype=float) for p in d.params}


def value_of(e, env, rows):
    """A NumPy value for a (matrix or scalar) expression of the graph's symbols.

    ``env`` maps symbols (inputs, nodes, δs) to arrays or floats; ``rows`` is
    the batch size.  Element-wise functions are evaluated from their SymPy
    definitions (lambdified once per function and kept).
    """
    if e in env:
        return env[e]
    if e == BATCH:
        return float(rows)
    shape = lambda m: tuple(rows if k == BATCH else int(k) for k in m.shape)    # noqa: E731
    if isinstance(e, sp.ImmutableMatrix) and not e.free_symbols:    # numbers written out (a worked grid)
        return np.array(e.tolist(), dtype=float)
    if isinstance(e, sp.OneMatrix):
        return np.ones(shape(e))
    if isinstance(e, sp.ZeroMatrix):
        return np.zeros(shape(e))
    if isinstance(e, sp.Identity):
        return np.eye(shape(e)[0])
    if isinstance(e, sp.Number):
        return float(e)
    if isinstance(e, sp.Transpose):
        return value_of(e.arg, env, rows).T
    if isinstance(e, sp.Trace):
        return float(np.trace(value_of(e.arg, env, rows)))
    if isinstance(e, sp.MatrixSlice):        # x_t = X[:, (t−1)k : tk] of an unrolled RNN
        cut = lambda s: slice(*(int(sp.sympify(v, strict=True).subs(BATCH, rows)) for v in s))   # noqa: E731
        return value_of(e.parent, env, rows)[cut(e.rowslice), cut(e.colslice)]
    if isinstance(e, (sp.MatMul, sp.Mul)):
        val = 1.0
        for a in e.args:
            v = value_of(a, env, rows)
            val = val @ v if np.ndim(val) == 2 and np.ndim(v) == 2 else val * v
        return val
    if isinstance(e, (sp.MatAdd, sp.Add)):
        return sum(value_of(a, env, rows) for a in e.args)
    if isinstance(e, (sp.Pow, sp.HadamardPower)):
        return value_of(e.base, env, rows) ** value_of(e.exp, env, rows)
    if isinstance(e, sp.HadamardProduct):
        out = 1.0
        for a in e.args:                # (an n×1 column broadcasts over the columns)
            out = out * value_of(a, env, rows)
        return out
    if isinstance(e, ElementwiseApplyFunction):
        return _scalar_fn(e.function)(value_of(e.expr, env, rows))
    if isinstance(e, sp.MatPow) and e.exp.is_Integer and e.exp > 0:
        return np.linalg.matrix_power(value_of(e.base, env, rows), int(e.exp))
    if isinstance(e, Kind) and hasattr(e, "definition"):    # a node kind written as matrix operations
        return value_of(e.definition(), env, rows)
    if hasattr(e, "numeric_value"):     # a node kind defined entry by entry (symback.kinds), on floats
        return e.numeric_value(*[np.atleast_2d(np.asarray(value_of(a, env, rows), dtype=float))
                                 for a in e.args if isinstance(a, sp.MatrixExpr)], entrywise=_scalar_fn)
    if hasattr(e, "explicit_value"):
        args = [sp.ImmutableMatrix(value_of(a, env, rows)) for a in e.args if isinstance(a, sp.MatrixExpr)]
        return np.array(e.explicit_value(*args).tolist(), dtype=float)
    if isinstance(e, sp.Expr) and not is_matrix(e) and e.args:
        # any other scalar function (exp, log, Abs, an activation): SymPy evaluates it at numbers
        args = [value_of(a, env, rows) for a in e.args]
        if all(np.ndim(a) == 0 for a in args):
            return float(sp.N(e.func(*[sp.Float(float(a), 20) for a in args])))
    if isinstance(e, sp.Expr) and e.is_number and e.is_real:
        return float(e)     # a constant: π and √(2/π) of GELU, E, EulerGamma
    raise TypeError(f"cannot evaluate {type(e).__name__} numerically: {e}")


@functools.lru_cache(maxsize=512)
def _scalar_fn(function: sp.Lambda):
    """f applied entry by entry, from its definition (an Activation written out).

    NumPy's functions where they evaluate it (fast), else mpmath entry by entry.
    """
    body = function.expr.replace(lambda x: isinstance(x, Activation), lambda x: type(x).definition(*x.args))
    exact = sp.lambdify(function.variables, body, "mpmath")

    def real(*args):
        v = exact(*args)
        if getattr(v, "imag", 0) != 0:      # log(−0.4): a value outside the function's domain
            raise DefinitionError(
                f"{sp.sstr(function.expr)} is not a real number at "
                f"{', '.join(f'{x} = {float(a):.4g}' for x, a in zip(function.variables, args))} "
                "(a logarithm or root of a negative number): the network's values leave its domain, "
                "as a cross-entropy's prediction outside (0, 1) does without a sigmoid or softmax output")
        return float(getattr(v, "real", v))
    slow = np.vectorize(real, otypes=[float])
    n = len(function.variables)
    # the fast form is compared with the exact one at a few points: anywhere on the line, else
    # inside (0, 1), where a cross-entropy is defined (its log has no real value at −1.3)
    probes = ([np.array([[-1.3, 0.0, 0.7]]) + k for k in range(n)],
              [np.array([[0.2, 0.5, 0.7]]) + 0.05 * k for k in range(n)])
    try:
        fast = sp.lambdify(function.variables, body, "numpy")
    except Exception:       # noqa: BLE001 - no NumPy form: the exact one is used
        return slow
    for probe in probes:
        try:
            with np.errstate(all="ignore"):
                agree = np.allclose(np.asarray(fast(*probe), dtype=float) * np.ones((1, 3)), slow(*probe),
                                    equal_nan=True)
        except Exception:   # noqa: BLE001 - outside the function's domain, or the fast form failed
            continue
        return _checked_fast(fast, slow) if agree else slow
    return slow


def _checked_fast(fast, slow):
    """fast entry by entry; an entry it cannot give (NaN: log of a negative) from `slow`.

    `slow` then raises the clear domain error, or gives the value exactly.
    """
    def both(*args):
        shape = np.broadcast(*args).shape
        with np.errstate(all="ignore"):
            out = np.asarray(fast(*args), dtype=float)
        out = out * np.ones(shape) if out.shape != shape else out
        bad = np.isnan(out)
        if bad.any():
            out = out.copy()
            out[bad] = slow(*[np.broadcast_to(a, shape)[bad] for a in args])
        return out
    return both


CONSUMERS["evaluate"] = evaluate            # what Derivation.evaluate calls
