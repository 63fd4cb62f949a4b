"""Code generation: symback's formulas printed as straight-line NumPy source.

Nothing here knows a derivative.  The forward values and the adjoints come
from a :class:`~symback.derive.Derivation`; this module only rewrites them
into numerically safe, equal forms (each rewrite proved by SymPy), removes
common subexpressions with :func:`sympy.cse`, and prints them with
:class:`NumpyPrinter`, a subclass of SymPy's ``NumPyPrinter``.

The result is the text of a standalone module that imports NumPy only:
``forward``, ``backward``, ``predict``, ``loss``, ``grad`` and ``step``.
:func:`codegen_module` returns it; ``symback.compile`` loads it.
"""
from __future__ import annotations

import builtins
import keyword
import re
from itertools import count

import sympy as sp
from sympy.printing.numpy import NumPyPrinter

from .derive import BATCH_SIZE, Adjoint, Derivation
from .errors import SymbackError
from .functions import Activation, _proved_equal, sigmoid, softplus

__all__ = ["NumpyPrinter", "Namer", "codegen_module", "stabilize", "realify", "straight_line",
           "STABLE_IDENTITIES", "STABLE_QUOTIENTS"]

DTYPES = ("float64", "float32")

# ------------------------------------------------------------------ stable rewrites
_u = sp.Symbol("u", real=True)
#: log cosh u, written so that nothing overflows: cosh itself does past |u| ≈ 710.
_LOGCOSH = sp.Abs(_u) + sp.log(1 + sp.exp(-2 * sp.Abs(_u))) - sp.log(2)
#: Equal forms used in place of ones that overflow, each proved by SymPy below.
STABLE_IDENTITIES = (
    (sp.log(sigmoid(_u)), -softplus(-_u)),          # log σ(u)       = −softplus(−u)
    (sp.log(1 - sigmoid(_u)), -softplus(_u)),       # log(1 − σ(u))  = −softplus(u)
    (sp.log(1 + sp.exp(_u)), softplus(_u)),         # log(1 + eᵘ)    = softplus(u)
    (sp.log(sp.cosh(_u)), _LOGCOSH),                # log cosh u     = |u| + log(1 + e^(−2|u|)) − log 2
)
#: Quotients num(u)/den(u) that are ∞/∞ for large u, as (num, den, equal bounded form).
#: They are the derivatives of the functions above, so they appear in backward passes.
STABLE_QUOTIENTS = (
    (sp.exp(_u), 1 + sp.exp(_u), sigmoid(_u)),     # eᵘ/(1 + eᵘ)  = σ(u)     (log(1 + eᵘ))'
    (sp.sinh(_u), sp.cosh(_u), sp.tanh(_u)),       # sinh u/cosh u = tanh u  (log cosh u)'
)
for _lhs, _rhs in STABLE_IDENTITIES + tuple((n / d, q) for n, d, q in STABLE_QUOTIENTS):
    if not _proved_equal(_lhs, _rhs, _u):   # proved once, at import: never trusted
        raise SymbackError(f"internal: could not prove the stable rewrite {_lhs} = {_rhs}")
_W = sp.Wild("w")


def _sigmoid_arg(e: sp.Expr, defs: dict):
    """u when e is σ(u), directly or as a node symbol defined as σ(u); else None."""
    e = defs.get(e, e)
    return e.args[0] if isinstance(e, sigmoid) else None


def stabilize(expr: sp.Expr, defs: dict | None = None) -> sp.Expr:
    """Rewrite log σ(u), log(1 − σ(u)), log(1 + eᵘ), log cosh u, eᵘ/(1 + eᵘ) and sinh/cosh.

    ``defs`` maps node symbols to their definitions, so that ``log(ŷ)`` with
    ŷ = σ(z) is recognised too.  Each rewrite is one of ``STABLE_IDENTITIES``
    or ``STABLE_QUOTIENTS``.
    """
    defs = defs or {}

    def rule(e):
        arg = e.args[0]
        u = _sigmoid_arg(arg, defs)
        if u is not None:
            return -softplus(-u)
        u = _sigmoid_arg(sp.expand(1 - arg), defs)
        if u is not None:
            return -softplus(u)
        rest = arg - 1
        if isinstance(rest, sp.exp) and not rest.args[0].is_extended_nonpositive:
            return softplus(rest.args[0])     # (when u <= 0, log(1 + eᵘ) is already safe)
        if isinstance(arg, sp.cosh):
            return _LOGCOSH.xreplace({_u: arg.args[0]})
        return e

    expr = expr.replace(lambda e: isinstance(e, sp.log), rule)
    return expr.replace(lambda e: e.is_Mul, _stable_quotient)


def _stable_quotient(mul: sp.Mul) -> sp.Mul:
    """mul with each pair of factors num(u), den(u)⁻¹ of ``STABLE_QUOTIENTS`` replaced by its form."""
    factors = list(mul.args)
    for f in factors:
        if not (f.is_Pow and f.exp == -1):
            continue
        for num, den, form in STABLE_QUOTIENTS:
            m = f.base.match(den.xreplace({_u: _W}))
            if not m or _W not in m or den.xreplace({_u: m[_W]}) != f.base:
                continue
            n = num.xreplace({_u: m[_W]})
            if n in factors:
                factors.remove(f)
                factors.remove(n)
                return _stable_quotient(sp.Mul(*factors, form.xreplace({_u: m[_W]})))
    return mul


def lower(expr: sp.Expr) -> sp.Expr:
    """Replace every activation by its overflow-safe ``stable`` form, else its definition.

    Done before CSE, so that repeated pieces (|z| in softplus) are computed once.
    """
    def rule(e):
        cls = type(e)
        if cls.stable is not None and len(e.args) == 1:
            return cls.stable(*e.args)
        return cls.definition(*e.args)

    while expr.has(Activation):
        expr = expr.replace(lambda e: isinstance(e, Activation), rule)
    return expr


def realify(expr: sp.Expr) -> sp.Expr:
    """Drop re()/im() that SymPy adds when differentiating |x| of a symbol not known real.

    Every quantity in a network is real, so re(x) = x and im(x) = 0.
    """
    if not expr.has(sp.re, sp.im):
        return expr
    expr = expr.replace(lambda e: isinstance(e, sp.re), lambda e: e.args[0])
    expr = expr.replace(lambda e: isinstance(e, sp.im), lambda e: sp.S.Zero)
    return expr.doit()


def _risky(expr: sp.Expr, values: set) -> set:
    """The computed factors expr divides by (it can blow up at saturation), signs dropped."""
    if not expr.has(sp.Pow):
        return set()
    _, den = sp.fraction(sp.together(expr))
    out = set()
    for f in sp.Mul.make_args(den):
        base = f.base if f.is_Pow else f
        if base.free_symbols & values:
            out.add(min(base, -base, key=sp.default_sort_key))   # 1 − ŷ and ŷ − 1 alike
    return out


# ------------------------------------------------------------------ printer
class NumpyPrinter(NumPyPrinter):
    """SymPy's NumPy printer, taught symback's functions and faster idioms.

    Activations print through their overflow-safe ``stable`` form when they
    have one, else through their definition; a two-branch Piecewise prints
    as ``np.where`` (``np.maximum`` for a ReLU); ``Max`` as ``np.maximum``;
    ``log(1 + x)`` as ``np.log1p``; ``x**-1`` as a division.  Numbers in
    all-constant branches are cast to ``DTYPE`` so float32 code stays float32.
    """

    def __init__(self, settings=None):
        super().__init__({"fully_qualified_modules": True, **(settings or {})})

    def _module_format(self, fqn, register=True):
        s = super()._module_format(fqn, register)
        return "np." + s[len("numpy."):] if s.startswith("numpy.") else s

    def _print(self, expr, **kwargs):
        # Dispatch on the base class first: an activation's class name (tanh)
        # can shadow a SymPy printer method of the same name.
        if isinstance(expr, Activation):
            return self._print_Activation(expr)
        return super()._print(expr, **kwargs)

    def _print_Activation(self, expr):
        # Normally lowered before CSE (see `lower`); kept for direct printing.
        return f"({self._print(lower(expr))})"

    def _print_Piecewise(self, expr):
        pieces = list(expr.args)
        if pieces[-1].cond != sp.true:
            return super()._print_Piecewise(expr)
        relu_arg = _relu_arg(expr)
        if relu_arg is not None:
            return f"np.maximum({self._print(relu_arg)}, 0)"
        constant = all(p.expr.is_Number for p in pieces)
        val = (lambda v: f"DTYPE({self._print(v)})") if constant else self._print
        out = val(pieces[-1].expr)
        for p in reversed(pieces[:-1]):
            out = f"np.where({self._print(p.cond)}, {val(p.expr)}, {out})"
        return out

    def _print_Relational(self, expr):
        op = {"==": "==", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}.get(expr.rel_op)
        if op is None:
            return super()._print_Relational(expr)
        return f"({self._print(expr.lhs)} {op} {self._print(expr.rhs)})"

    def _print_Max(self, expr):
        return self._nested("np.maximum", expr.args)

    def _print_Min(self, expr):
        return self._nested("np.minimum", expr.args)

    def _nested(self, fn, args):
        out = self._print(args[0])
        for a in args[1:]:
            out = f"{fn}({out}, {self._print(a)})"
        return out

    def _print_log(self, expr):
        arg = expr.args[0]
        if isinstance(arg, sp.Add) and sp.S.One in arg.args:
            return f"np.log1p({self._print(arg - 1)})"
        return f"np.log({self._print(arg)})"

    def _print_Pow(self, expr, rational=False):
        if expr.exp == -1:
            return f"1/{self.parenthesize(expr.base, sp.printing.precedence.PRECEDENCE['Pow'])}"
        return super()._print_Pow(expr, rational=rational)


def _relu_arg(pw: sp.Piecewise):
    """z when pw is ReLU(z) written as Piecewise((0, z < 0), (z, True)) (or with ≤)."""
    if len(pw.args) != 2:
        return None
    (e0, c0), (e1, _) = pw.args
    if e0 == 0 and isinstance(c0, (sp.StrictLessThan, sp.LessThan)) and c0.rhs == 0 and c0.lhs == e1:
        return e1
    return None


class BatchMean(sp.Function):
    """The mean of a per-sample value over the rows of a batch (prints as np.mean)."""

    def _numpycode(self, printer):
        return f"np.mean({printer._print(self.args[0])})"


class BatchSum(sp.Function):
    """The sum of a per-sample value over the rows of a batch (prints as np.sum)."""

    def _numpycode(self, printer):
        return f"np.sum({printer._print(self.args[0])})"


# ------------------------------------------------------------------ straight-line code
_RESERVED = set(keyword.kwlist) | set(dir(builtins)) | {
    "np", "X", "Y", "params", "lr", "m", "DTYPE", "PARAMS", "INPUTS", "TARGETS", "OUTPUTS",
    "forward", "backward", "predict", "loss", "grad", "step", "values", "grads", "name", "g"}


class Namer:
    """Hands out unique Python identifiers, keeping the user's names where possible."""

    def __init__(self, reserved=()):
        self.used = set(_RESERVED) | set(reserved)

    def take(self, wanted: str) -> str:
        """`wanted` if free, else `wanted_`, `wanted_2`, ...; marked as used."""
        name = wanted if wanted.isidentifier() else "v_" + "".join(c if c.isalnum() else "_" for c in wanted)
        if name in self.used:
            name = name + "_"
            k = 2
            while name in self.used:
                name, k = f"{wanted}_{k}", k + 1
        self.used.add(name)
        return name

    def symbols(self, prefix: str):
        """An endless supply of fresh symbols prefix0, prefix1, ... for sympy.cse."""
        for i in count():
            name = f"{prefix}{i}"
            if name not in self.used:
                self.used.add(name)
                yield sp.Symbol(name)


def straight_line(assignments, printer: NumpyPrinter, namer: Namer, indent: str = "    ") -> list[str]:
    """Lines ``name = expr`` after common-subexpression elimination.

    ``assignments`` is an ordered list of (identifier, expr); each expr may
    use the identifiers assigned before it.  Every temporary from
    ``sympy.cse`` is placed just before its first use, which is always
    after everything it depends on.
    """
    if not assignments:
        return []
    names = [n for n, _ in assignments]
    reps, reduced = sp.cse([e for _, e in assignments], symbols=namer.symbols("t"))
    temps = dict(reps)
    lines, done = [], set()

    def need(expr):
        for s in sorted(expr.free_symbols & temps.keys(), key=str):
            if s not in done:
                need(temps[s])
                done.add(s)
                lines.append(f"{indent}{s} = {printer.doprint(temps[s])}")

    for name, expr in zip(names, reduced):
        need(expr)
        lines.append(f"{indent}{name} = {printer.doprint(expr)}")
    return lines


# ------------------------------------------------------------------ scalar graphs
def _scalar_module(d: Derivation, dtype: str) -> str:
    g = d.graph
    namer, printer = Namer(), NumpyPrinter()
    sym = {g.symbol(n): sp.Symbol(namer.take(n)) for n in g.order}
    loss = g.loss_name
    nodes = g.node_names
    defs = {g.symbol(n): g.expr(n) for n in nodes}

    # forward: every node, then the per-sample cost, in definition order
    fwd = [(n, lower(realify(stabilize(g.expr(n), defs)))) for n in nodes + [loss]]

    # backward: adjoints in reverse order, with forward values reused by name
    # Nodes with equal definitions hold one value: name it by the first of them everywhere,
    # else δ of one (dividing by 1 − ŷ) cannot cancel against σ' written with the other.
    same, known = {}, {}
    for n in nodes:
        e = g.expr(n).xreplace(same)
        if e.is_Atom:
            continue
        if e in known:
            same[g.symbol(n)] = known[e]
        else:
            known[e] = g.symbol(n)
    adj = {n: stabilize(realify(d.adjoint[n]).xreplace(same).xreplace(known), defs)
           for n in reversed(g.order) if g.kind(n) in ("node", "param")}
    _fuse_risky(adj, g)
    for n in list(adj):    # δ_b = δ_z: use δ_z itself rather than a copy
        if adj[n].is_Atom:
            alias = {Adjoint(n): adj[n]}
            adj = {k: (v if k == n else v.xreplace(alias)) for k, v in adj.items()}
    adj = {n: lower(e) for n, e in adj.items()}

    # keep only the adjoints the parameter gradients need
    needed, todo = set(), [adj[p] for p in g.param_names]
    while todo:
        for s in todo.pop().free_symbols:
            if isinstance(s, Adjoint) and s.node not in needed:
                needed.add(s.node)
                todo.append(adj[s.node])
    for n in list(adj):
        if n in needed:
            sym[Adjoint(n)] = sp.Symbol(namer.take(f"delta_{n}"))
    gsym = {p: sp.Symbol(namer.take(f"grad_{p}")) for p in g.param_names}

    per_sample = set(g.symbol(n) for n in g.input_names + g.target_names)
    for n in nodes + [loss]:
        if g.expr(n).free_symbols & per_sample:
            per_sample.add(g.symbol(n))
    for n in reversed(g.order):
        if n in needed and adj[n].free_symbols & per_sample:
            per_sample.add(Adjoint(n))

    def reduce_expr(e):
        if e.free_symbols & per_sample:
            return (BatchMean if d.reduction == "mean" else BatchSum)(e)
        return e if d.reduction == "mean" else BATCH_SIZE * e     # prints as m = X.shape[0]

    bwd = [(sym[Adjoint(n)].name, adj[n]) for n in reversed(g.order) if n in needed]
    bwd += [(gsym[p].name, reduce_expr(adj[p])) for p in g.param_names]

    fwd_lines = straight_line([(sym[g.symbol(n)].name, e.xreplace(sym)) for n, e in fwd], printer, namer)
    bwd_lines = straight_line([(name, e.xreplace(sym)) for name, e in bwd], printer, namer)

    # The predictions: the loss's node parents that do not use a target,
    # found by walking the definitions forward (unrolling would recurse deeply).
    uses_target = set(g.target_names)
    for n in g.order:
        if any(p in uses_target for p in g.parents(n)):
            uses_target.add(n)
    outputs = [n for n in g.parents(loss) if g.kind(n) == "node" and n not in uses_target]
    pred_needed = _closure(g, outputs)
    pred_lines = straight_line([(sym[g.symbol(n)].name, e.xreplace(sym)) for n, e in fwd
                                if n in pred_needed], printer, namer)

    fwd_names = [sym[g.symbol(n)].name for n in nodes + [loss]]
    values = ", ".join(fwd_names)

    def preamble(lines, with_targets=True):
        text = "\n".join(lines)
        out = []
        for j, n in enumerate(g.input_names):
            if _uses(text, sym[g.symbol(n)].name):
                out.append(f"    {sym[g.symbol(n)]} = X[:, {j}]")
        if with_targets:
            for j, n in enumerate(g.target_names):
                if _uses(text, sym[g.symbol(n)].name):
                    out.append(f"    {sym[g.symbol(n)]} = Y[:, {j}]")
        for n in g.param_names:
            if _uses(text, sym[g.symbol(n)].name):
                out.append(f"    {sym[g.symbol(n)]} = params[{n!r}]")
        if _uses(text, "m"):
            out.append("    m = X.shape[0]")
        return out

    red = "np.mean" if d.reduction == "mean" else "np.sum"
    cost = fwd_names[-1]
    if outputs:
        cols = ", ".join(f"np.broadcast_to({sym[g.symbol(n)]}, X.shape[:1])" for n in outputs)
        pred_body = preamble(pred_lines, with_targets=False) + pred_lines + [
            f"    return np.stack([{cols}], axis=1)"]
    else:
        pred_body = ["    raise ValueError('this graph has no prediction node: the loss uses no node')"]
    cost_is_sample = g.symbol(loss) in per_sample
    loss_value = f"{red}({cost})" if cost_is_sample else (
        cost if d.reduction == "mean" else f"X.shape[0]*{cost}")
    src = [
        f'"""Training code generated by symback for the scalar graph of {loss}',
        f"w.r.t. {', '.join(g.param_names)}: forward values, then the adjoints",
        'in reverse order, then the gradients reduced over the batch.  NumPy only."""',
        "import numpy as np",
        "",
        f"DTYPE = np.{dtype}",
        f"KIND = 'scalar'",
        f"REDUCTION = {d.reduction!r}",
        f"INPUTS = {tuple(g.input_names)!r}",
        f"TARGETS = {tuple(g.target_names)!r}",
        f"PARAMS = {tuple(g.param_names)!r}",
        f"OUTPUTS = {tuple(outputs)!r}",
        f"N_INPUTS = {len(g.input_names)}",
        f"N_TARGETS = {len(g.target_names)}",
        f"SHAPES = {dict((p, ()) for p in g.param_names)!r}",
        "",
        "",
        "def init(seed=0):",
        '    """Small random values N(0, 0.5**2), one 0-d array per parameter."""',
        "    rng = np.random.default_rng(seed)",
        "    return {name: np.array(rng.normal(0.0, 0.5), dtype=DTYPE) for name in PARAMS}",
        "",
        "",
        "def predict(X, params):",
        '    """The output node(s) for the rows of X, one column each."""',
        *pred_body,
        "",
        "",
        "def forward(X, Y, params):",
        f'    """Every node and the per-sample cost {loss}, in definition order."""',
        *preamble(fwd_lines), *fwd_lines,
        f"    return {values}{',' if len(fwd_names) == 1 else ''}",
        "",
        "",
        f"def backward(X, Y, params, {values}):",
        f'    """The adjoints (delta = d{loss}/d node), then the batch gradients."""',
        *preamble(bwd_lines), *bwd_lines,
        f"    return {', '.join(gsym[p].name for p in g.param_names)}"
        f"{',' if len(g.param_names) == 1 else ''}",
        "",
        "",
        "def loss(X, Y, params):",
        f'    """The batch loss: {d.reduction} of {loss} over the rows."""',
        f"    {values}{',' if len(fwd_names) == 1 else ''} = forward(X, Y, params)",
        f"    return {loss_value}",
        "",
        "",
        "def grad(X, Y, params):",
        '    """(loss, gradients in PARAMS order); the backward pass reuses the forward values."""',
        "    values = forward(X, Y, params)",
        f"    {cost} = values[-1]",
        f"    return {loss_value}, backward(X, Y, params, *values)",
        "",
        "",
        "def step(X, Y, params, lr):",
        '    """One gradient-descent step on params, in place; returns the loss before it."""',
        "    value, grads = grad(X, Y, params)",
        "    for name, g in zip(PARAMS, grads):",
        "        params[name] -= lr * g",
        "    return value",
        "",
    ]
    return "\n".join(src)


def _uses(text: str, ident: str) -> bool:
    """Whether the identifier occurs in the code text (not as an attribute or in a string)."""
    return re.search(rf"(?<![\w.'\"]){re.escape(ident)}(?![\w'\"])", text) is not None


def _closure(g, names) -> set:
    """names and every node they are computed from."""
    out, todo = set(), list(names)
    while todo:
        n = todo.pop()
        if n not in out:
            out.add(n)
            todo += [p for p in g.parents(n) if g.kind(p) == "node"]
    return out


def _fuse_risky(adj: dict, g) -> None:
    """Merge an adjoint that divides by a computed value into its users when that cancels.

    δ_ŷ = −y/ŷ + (1−y)/(1−ŷ) overflows when ŷ = σ(z) saturates, but
    δ_z = δ_ŷ·ŷ(1−ŷ) cancels to ŷ − y.  Replacing δ_ŷ in δ_z and letting
    SymPy cancel the fraction gives that equal, safe form.  It is kept when
    none of δ_ŷ's denominators is left (the user's own divisions, such as
    z = u/v, may stay); otherwise the formula is kept as it was.
    """
    values = {g.symbol(n) for n in g.order if g.kind(n) in ("node", "param")}
    for n in list(adj):
        risky = _risky(adj[n], values)
        if not risky:
            continue
        a = Adjoint(n)
        for other, e in adj.items():
            if a in e.free_symbols:
                try:
                    fused = sp.cancel(sp.together(e.xreplace({a: adj[n]})))
                except (sp.PolynomialError, TypeError, ValueError):
                    continue
                if not _risky(fused, values) & risky:
                    adj[other] = sp.factor_terms(fused)


# ------------------------------------------------------------------ entry point
def codegen_module(derivation: Derivation, dtype: str = "float64") -> str:
    """The source of a standalone NumPy module that trains `derivation`'s network.

    It defines ``predict(X, params)``, ``forward``, ``backward``,
    ``loss(X, Y, params)``, ``grad(X, Y, params) -> (loss, grads)`` and
    ``step(X, Y, params, lr)`` (in place), plus ``PARAMS`` and ``DTYPE``.
    """
    if not isinstance(derivation, Derivation):
        raise SymbackError(f"codegen needs a Derivation (from sb.derive), got {type(derivation).__name__}")
    dtype = _check_dtype(dtype)
    if getattr(derivation, "kind", "scalar") == "layers":
        return _layer_module(derivation, dtype)
    return _scalar_module(derivation, dtype)


def _check_dtype(dtype) -> str:
    import numpy as np
    try:
        name = np.dtype(dtype).name
    except TypeError as exc:
        raise SymbackError(f"unknown dtype {dtype!r}: use 'float64' or 'float32'") from exc
    if name not in DTYPES:
        raise SymbackError(f"dtype {name!r} is not supported: use 'float64' or 'float32'")
    return name


# ------------------------------------------------------------------ layer networks
def _fixpoint_lower(expr: sp.Expr, defs: dict | None = None) -> sp.Expr:
    """stabilize + lower until nothing changes (lowering can expose log(1 + eᵘ))."""
    for _ in range(4):
        new = lower(stabilize(expr, defs))
        if new == expr:
            break
        expr = new
    return expr


class InPlace:
    """Prints an element-wise formula over arrays as NumPy ufunc calls, in place where allowed.

    Symbols stand for whole arrays (broadcasting does the element-wise
    part).  A buffer is overwritten only if it was made for this formula
    or the caller lists its name in ``overwritable`` and the formula uses
    it once: ``dA * A*(1 - A)`` becomes ``dA *= A; t = 1 - A; dA *= t``.
    """

    _UFUNC = {sp.exp: "np.exp", sp.tanh: "np.tanh", sp.Abs: "np.abs", sp.sign: "np.sign",
              sp.cosh: "np.cosh", sp.sinh: "np.sinh", sp.sin: "np.sin", sp.cos: "np.cos",
              sp.atan: "np.arctan"}

    def __init__(self, printer: NumpyPrinter, namer: Namer, arrays: set, indent="    "):
        self.printer, self.namer, self.arrays, self.indent = printer, namer, arrays, indent

    def is_array(self, e) -> bool:
        return bool(e.free_symbols & self.arrays)

    def emit(self, expr: sp.Expr, overwritable=()) -> tuple[list[str], str]:
        """(lines, name of the array holding the value) for `expr`."""
        self.lines = []
        counts = {}
        for a in sp.preorder_traversal(expr):
            if a.is_Symbol:
                counts[a] = counts.get(a, 0) + 1
        self.free = {s for s in overwritable if counts.get(s, 0) == 1}
        ref, _ = self.ev(expr)
        return self.lines, ref

    # -- helpers --
    def _new(self, code: str) -> str:
        name = next(self.namer.symbols("t")).name
        self.lines.append(f"{self.indent}{name} = {code}")
        return name

    def ev(self, e) -> tuple[str, bool]:
        """(code or name, owned): owned means a buffer this formula may overwrite."""
        p = self.printer
        if not self.is_array(e):
            return p.doprint(e), False
        if e.is_Symbol:
            return e.name, e in self.free
        if e.is_Add:
            return self._add(e)
        if e.is_Mul:
            return self._mul(e)
        if e.is_Pow:
            return self._pow(e)
        if isinstance(e, sp.Piecewise) and _relu_arg(e) is not None:
            return self._unary("np.maximum", _relu_arg(e), extra=", 0")
        if isinstance(e, sp.Max) and len(e.args) == 2 and not self.is_array(e.args[0]):
            return self._unary("np.maximum", e.args[1], extra=f", {p.doprint(e.args[0])}")
        if isinstance(e, sp.log):
            arg = e.args[0]
            if arg.is_Add and sp.S.One in arg.args:
                return self._unary("np.log1p", arg - 1)
            return self._unary("np.log", arg)
        if type(e) in self._UFUNC:
            return self._unary(self._UFUNC[type(e)], e.args[0])
        return self._new(p.doprint(e)), True

    def _unary(self, fn, arg, extra=""):
        ref, owned = self.ev(arg)
        if owned:
            self.lines.append(f"{self.indent}{fn}({ref}{extra}, out={ref})")
            return ref, True
        return self._new(f"{fn}({ref}{extra})"), True

    def _add(self, e):
        scalar = sp.Add(*[t for t in e.args if not self.is_array(t)])
        terms = [t for t in e.args if self.is_array(t)]
        signed = []
        for t in terms:
            c, rest = t.as_coeff_Mul()
            signed.append((-1, -t) if c.is_negative else (1, t))
        signed.sort(key=lambda st: (st[0] < 0, st[1].is_Symbol and st[1] not in self.free))
        sign, first = signed[0]
        if sign > 0:
            ref, owned = self.ev(first)
            rest = signed[1:]
            if not owned:
                if rest:
                    s2, t2 = rest[0]
                    r2, _ = self.ev(t2)
                    ref = self._new(f"{ref} {'+' if s2 > 0 else '-'} {r2}")
                    rest = rest[1:]
                elif scalar != 0:
                    ref = self._new(f"{ref} + {self.printer.doprint(scalar)}")
                    scalar = sp.S.Zero
                else:
                    return ref, False
            for s, t in rest:
                r, _ = self.ev(t)
                self.lines.append(f"{self.indent}{ref} {'+' if s > 0 else '-'}= {r}")
            if scalar != 0:
                self.lines.append(f"{self.indent}{ref} += {self.printer.doprint(scalar)}")
            return ref, True
        # every array term is subtracted: s - t1 - t2 ...
        ref, owned = self.ev(first)
        s_code = self.printer.doprint(scalar)
        if owned:
            self.lines.append(f"{self.indent}np.subtract({s_code}, {ref}, out={ref})")
        else:
            ref = self._new(f"np.subtract({s_code}, {ref})")
        for _, t in signed[1:]:
            r, _ = self.ev(t)
            self.lines.append(f"{self.indent}{ref} -= {r}")
        return ref, True

    def _mul(self, e):
        coeff = sp.Mul(*[f for f in e.args if not self.is_array(f)])
        factors = [f for f in e.args if self.is_array(f)]
        masks = [f for f in factors if _mask(f) is not None]
        factors = [f for f in factors if _mask(f) is None]
        divs = [f.base for f in factors if f.is_Pow and f.exp == -1]
        factors = [f for f in factors if not (f.is_Pow and f.exp == -1)]
        if not factors:
            factors = [sp.S.One] if not masks else []
        # a buffer we may overwrite goes first, so the product builds in it
        factors.sort(key=lambda f: 0 if (f.is_Symbol and f in self.free) or not f.is_Symbol else 1)
        if not factors:       # only masks: turn the first into numbers
            ref = self._new(f"{self.printer.doprint(_mask(masks[0]))}.astype(DTYPE)")
            masks = masks[1:]
            owned = True
        else:
            ref, owned = self.ev(factors[0]) if factors[0] != 1 else ("1", False)
            factors = factors[1:]
            if not owned:
                if factors:
                    r2, _ = self.ev(factors[0])
                    ref = self._new(f"{ref}*{r2}")
                    factors = factors[1:]
                elif masks:
                    ref = self._new(f"{ref}*{self.printer.doprint(_mask(masks[0]))}")
                    masks = masks[1:]
                elif coeff != 1:
                    ref = self._new(f"{self.printer.parenthesize(coeff, 50)}*{ref}")
                    coeff = sp.S.One
                elif divs:
                    r2, _ = self.ev(divs[0])
                    ref = self._new(f"{ref}/{r2}")
                    divs = divs[1:]
                else:
                    return ref, False
        for f in factors:
            r, _ = self.ev(f)
            self.lines.append(f"{self.indent}{ref} *= {r}")
        for m in masks:
            self.lines.append(f"{self.indent}{ref} *= {self.printer.doprint(_mask(m))}")
        for dv in divs:
            r, _ = self.ev(dv)
            self.lines.append(f"{self.indent}{ref} /= {r}")
        if coeff != 1:
            self.lines.append(f"{self.indent}{ref} *= {self.printer.doprint(coeff)}")
        return ref, True

    def _pow(self, e):
        base, ex = e.args
        if ex == -1:
            return self._unary("np.reciprocal", base)
        if ex == 2:
            ref, owned = self.ev(base)
            if owned:
                self.lines.append(f"{self.indent}np.multiply({ref}, {ref}, out={ref})")
                return ref, True
            return self._new(f"{ref}*{ref}"), True
        if ex == sp.S.Half:
            return self._unary("np.sqrt", base)
        ref, _ = self.ev(base)
        return self._new(f"{ref}**{self.printer.parenthesize(ex, 60)}"), True


def _mask(e):
    """The boolean condition c when e is Piecewise((0, not c), (1, True)) or ((1, c), (0, True))."""
    if not isinstance(e, sp.Piecewise) or len(e.args) != 2 or e.args[1].cond != sp.true:
        return None
    (v0, c0), (v1, _) = e.args
    if (v0, v1) == (0, 1):
        return c0.negated if isinstance(c0, sp.core.relational.Relational) else None
    if (v0, v1) == (1, 0):
        return c0
    return None


class _LayerPlan:
    """The steps of a layer network's training code, read off its LayerDerivation.

    Forward: ``affine`` (Z = A W + 1 b), ``ew`` (an element-wise formula),
    ``softmax``.  Then ``loss``, the output delta and, layer by layer,
    ``matmul`` (δ Wᵀ), ``grad`` (Aᵀ δ and 1ᵀ δ) and the hidden δ.
    """

    def __init__(self, d, namer: Namer):
        from sympy.matrices.expressions.applyfunc import ElementwiseApplyFunction
        from .layers import Elementwise, FPrime, Softmax
        self.d, self.namer = d, namer
        self._EAF, self._Elementwise, self._FPrime, self._Softmax = (
            ElementwiseApplyFunction, Elementwise, FPrime, Softmax)
        self.sym: dict[str, sp.Symbol] = {}
        self.arrays: set = set()
        self.params = list(d.params)
        self.forward, self.backward = [], []
        self.act_of: dict[str, str] = {}      # Z name -> A name
        self.c = sp.Symbol(namer.take("c"))   # lr/m or 1/m: folded into the output delta
        for n in ["X", "Y"] + self.params:
            self.s(n)
        self._build()

    def s(self, name: str) -> sp.Symbol:
        """The array symbol (and code identifier) for a matrix name."""
        if name not in self.sym:
            short = name.replace("delta_Z", "D") if name.startswith("delta_Z") else name
            self.sym[name] = sp.Symbol(name if name in ("X", "Y") else self.namer.take(short))
            self.arrays.add(self.sym[name])
        return self.sym[name]

    def _fail(self, what, e):
        raise SymbackError(f"cannot compile the layer formula {what} = {e}: unexpected form")

    # -- forward --
    def _build(self):
        d = self.d
        L = d.depth
        for node, e in d.forward:
            if isinstance(e, self._Softmax):
                self.forward.append(("softmax", self.s(node.name), self.s(e.arg.name)))
            elif isinstance(e, self._EAF):
                self.act_of[e.expr.name] = node.name
                z = self.s(e.expr.name)
                self.forward.append(("ew", self.s(node.name), _fixpoint_lower(e.function(z))))
            else:
                terms = e.args if isinstance(e, sp.MatAdd) else (e,)
                mm, bias = None, None
                for t in terms:
                    if isinstance(t, sp.MatMul) and isinstance(t.args[0], sp.OneMatrix) and len(t.args) == 2:
                        bias = self.s(t.args[1].name)
                    elif isinstance(t, sp.MatMul) and len(t.args) == 2 and all(
                            isinstance(a, sp.MatrixSymbol) for a in t.args):
                        mm = (self.s(t.args[0].name), self.s(t.args[1].name))
                    else:
                        self._fail(node.name, e)
                if mm is None:
                    self._fail(node.name, e)
                self.forward.append(("affine", self.s(node.name), mm, bias))
        # loss: Σ_k ℓ(ŷ, y), with log σ(z), log softmax(z) in their stable forms
        zL, yhat, Y = self.s(d.Z[L].name), self.s(d.A[L].name), self.s("Y")
        out = d.activation_list[-1]
        lf = d.loss_function
        ell = lf.expr.xreplace({lf.prediction: yhat, lf.target: Y})
        if isinstance(d.forward[-1][1], self._Softmax):
            self.zs, self.lse = self.s(f"{zL}s"), self.s("lse")
            ell = ell.replace(lambda e: isinstance(e, sp.log) and e.args[0] == yhat,
                              lambda e: self.zs - self.lse)
            ell = _fixpoint_lower(ell)
        else:
            self.zs = self.lse = None
            ell = _fixpoint_lower(ell, {yhat: out(zL)})
        self.loss_expr = realify(ell)
        # backward, in the derivation's order, matmuls of a layer before its updates
        for target, e in d.backward:
            if target.name.startswith("grad_"):
                p = target.name[len("grad_"):]
                if not (isinstance(e, sp.MatMul) and len(e.args) == 2):
                    self._fail(target.name, e)
                left, right = e.args
                if isinstance(left, sp.OneMatrix):
                    self.backward.append(("grad_b", self.s(p), self.s(right.name)))
                elif isinstance(left, sp.Transpose):
                    self.backward.append(("grad_W", self.s(p), self.s(left.arg.name), self.s(right.name)))
                else:
                    self._fail(target.name, e)
            else:
                pending = []
                try:
                    scalar = realify(self._scalar(e, pending))
                except SymbackError:
                    # SymPy's matrix calculus returns traces and contractions when
                    # a layer is one unit wide; the derivation's local factors
                    # (δ Wᵀ, then ⊙ f'(Z)) state the same δ in the usual form.
                    pending = []
                    scalar = realify(self._scalar(self._from_locals(target), pending))
                if target.name == d.delta[L].name:
                    scalar = self.c * scalar
                # the δ Wᵀ product needs W before the update of its layer
                first_grad = next((i for i, st in enumerate(self.backward)
                                   if st[0].startswith("grad") and any(
                                       st[1] == mmst[3] for mmst in pending)), len(self.backward))
                self.backward[first_grad:first_grad] = pending
                self.backward.append(("ew", self.s(target.name), sp.factor_terms(_fixpoint_lower(scalar))))

    def _from_locals(self, target):
        """δ_{k} = (δ_{k+1} · ∂Z_{k+1}/∂A_k) ⊙ ∂A_k/∂Z_k, from the derivation's local factors."""
        d = self.d
        k = next((l for l, D in d.delta.items() if D.name == target.name), None)
        if k is None or k == d.depth:
            self._fail(target.name, d.adjoint.get(target.name))
        z_next, a_k, z_k = d.Z[k + 1].name, d.A[k].name, d.Z[k].name
        return sp.HadamardProduct(d.delta[k + 1] * d.local[(z_next, a_k)], d.local[(a_k, z_k)])

    def _scalar(self, e, pending) -> sp.Expr:
        """A matrix formula that is element-wise, as a scalar formula over array symbols."""
        if isinstance(e, sp.MatrixSymbol):
            return self.s(e.name)
        if isinstance(e, sp.OneMatrix):
            return sp.S.One
        if isinstance(e, sp.MatAdd):
            return sp.Add(*[self._scalar(a, pending) for a in e.args])
        if isinstance(e, sp.HadamardProduct):
            return sp.Mul(*[self._scalar(a, pending) for a in e.args])
        if isinstance(e, sp.HadamardPower):
            return self._scalar(e.base, pending) ** e.exp
        if isinstance(e, self._EAF):
            return e.function(self._scalar(e.expr, pending))
        if isinstance(e, self._Elementwise):
            return e.function(*[self._scalar(a, pending) for a in e.operands])
        if isinstance(e, self._FPrime):
            f, z = e.function, e.arg
            a_name = self.act_of.get(z.name)
            if f.output_derivative is not None and a_name is not None:
                return f.output_derivative(self.s(a_name))     # f'(Z) = g(A): reuse A
            w = sp.Dummy("w", real=True)
            return sp.diff(f(w), w).xreplace({w: self.s(z.name)})
        if isinstance(e, sp.MatMul):
            coeff = sp.Mul(*[a for a in e.args if not isinstance(a, sp.MatrixExpr)])
            mats = [a for a in e.args if isinstance(a, sp.MatrixExpr)]
            if len(mats) == 1:
                return coeff * self._scalar(mats[0], pending)
            if len(mats) == 2 and isinstance(mats[0], sp.MatrixSymbol) and isinstance(mats[1], sp.Transpose):
                # δ Wᵀ: a matrix product, computed by its own step
                d_, w_ = self.s(mats[0].name), self.s(mats[1].arg.name)
                a_name = self.act_of.get(f"Z{int(mats[1].arg.name[1:]) - 1}", "A")
                out = self.s(f"d{a_name}")
                pending.append(("matmul", out, d_, w_))
                return coeff * out
        if e.is_Number:
            return e
        self._fail("δ", e)


def _layer_function(plan: _LayerPlan, mode: str, printer: NumpyPrinter) -> list[str]:
    """The body of one generated function: 'predict', 'forward', 'loss', 'backward', 'grad' or 'step'.

    'backward' starts from the values 'forward' returned (only a softmax's
    shifted logits are recomputed); 'grad' and 'step' run both passes in one
    function, so that buffers can be reused across them.

    Buffers are reused in place once nothing later reads them (a liveness
    pass over the steps); X, Y and the values a function returns are never
    overwritten, and parameters only by their own update in 'step'.
    """
    namer = Namer(plan.namer.used)
    ind = "    "
    ew = InPlace(printer, namer, plan.arrays, ind)
    given = [st[1] for st in plan.forward] if mode == "backward" else []
    steps = [st for st in plan.forward if mode != "backward" or st[0] == "softmax"]
    if mode in ("loss", "backward", "grad", "step"):
        steps.append(("loss", None, plan.loss_expr))
    if mode in ("backward", "grad", "step"):
        steps += plan.backward
    if mode in ("loss", "backward", "grad", "step"):
        # the loss and the output delta share their subexpressions ((Yhat - Y) for MSE)
        i_loss = next(i for i, st in enumerate(steps) if st[0] == "loss")
        if mode != "loss":
            i_top = i_loss + 1
            reps, (lexpr, dexpr) = sp.cse([steps[i_loss][2], steps[i_top][2]], symbols=namer.symbols("e"))
            for r, _ in reps:
                plan.arrays.add(r)
            pre = [("ew", r, v) for r, v in reps if v.free_symbols & plan.arrays]
            scal = [("scalar", r, v) for r, v in reps if not (v.free_symbols & plan.arrays)]
            steps[i_loss:i_top + 1] = scal + pre + [("loss", None, lexpr), ("ew", steps[i_top][1], dexpr)]

    def reads(st) -> set:
        kind = st[0]
        if kind in ("ew", "loss", "scalar"):
            out = set(st[2].free_symbols)
        elif kind == "affine":
            out = {st[2][0], st[2][1], st[3]}
        elif kind == "softmax":
            out = {st[2]}
        elif kind == "matmul":
            out = {st[2], st[3]}
        elif kind == "grad_W":
            out = {st[2], st[3]}
        else:
            out = {st[2]}
        return out & plan.arrays

    # outputs each function returns, never overwritten
    if mode == "predict":
        keep = {plan.forward[-1][1]}
    elif mode == "forward":
        keep = {st[1] for st in plan.forward}
    else:
        keep = set()
    softmax_needs_lse = plan.lse is not None and mode != "predict" and mode != "forward"
    protected = {plan.sym["X"], plan.sym["Y"]} | {plan.sym[p] for p in plan.params} | keep | set(given)
    last = {}
    for i, st in enumerate(steps):
        for r in reads(st):
            last[r] = i
    alias: dict = {}

    def root(n):
        while n in alias:
            n = alias[n]
        return n

    def free_at(i, names) -> set:
        out = set()
        for n in names:
            group = [k for k in set(last) | set(alias) | {n} if root(k) == root(n)]
            if any(k in protected for k in group):
                continue
            if all(last.get(k, -1) <= i for k in group):
                out.add(n)
        return out

    lines = []
    c = plan.c.name
    if mode in ("loss", "backward", "grad", "step"):
        lines.append(f"{ind}m = X.shape[0]")
    if mode in ("backward", "grad", "step"):
        lines.append(f"{ind}ones = _ones(m)")
        scale = ("lr / m" if mode == "step" else "1 / m") if plan.d.reduction == "mean" else \
            ("lr" if mode == "step" else "1")
        lines.append(f"{ind}{c} = {scale}       # the batch reduction{' and the step size' if mode == 'step' else ''}, "
                     "folded into the output delta")
    for p in plan.params:
        lines.append(f"{ind}{plan.sym[p]} = params[{p!r}]")
    used = set().union(*(reads(st) for st in steps))
    written = {st[1] for st in steps if st[0] == "softmax"}
    for v in given:
        if v in used and v not in written:
            lines.append(f"{ind}{v} = values[{v.name!r}]")
    grads = {}
    for i, st in enumerate(steps):
        kind = st[0]
        if kind == "affine":
            z, (a, w), b = st[1], st[2], st[3]
            lines.append(f"{ind}{z} = {a} @ {w}")
            if b is not None:
                lines.append(f"{ind}{z} += {b}")
        elif kind == "ew" or kind == "scalar":
            if kind == "scalar":
                lines.append(f"{ind}{st[1]} = {printer.doprint(st[2])}")
                continue
            body, ref = ew.emit(st[2], free_at(i, reads(st)))
            lines += body
            if ref != st[1].name:
                lines.append(f"{ind}{st[1]} = {ref}")
                if ref.isidentifier() and sp.Symbol(ref) in plan.arrays and not body:
                    alias[st[1]] = sp.Symbol(ref)
        elif kind == "softmax":
            yhat, z = st[1], st[2]
            zs = plan.zs if plan.zs is not None else z
            if z in free_at(i, {z}) and zs not in protected:
                lines.append(f"{ind}{z} -= {z}.max(axis=1, keepdims=True)   # shifted: exp cannot overflow")
                if zs != z:
                    lines.append(f"{ind}{zs} = {z}")
            else:
                lines.append(f"{ind}{zs} = {z} - {z}.max(axis=1, keepdims=True)   # shifted: exp cannot overflow")
            e = next(namer.symbols("E"))
            ssum = next(namer.symbols("S"))
            lines.append(f"{ind}{e} = np.exp({zs})")
            lines.append(f"{ind}{ssum} = {e}.sum(axis=1, keepdims=True)")
            lines.append(f"{ind}{e} /= {ssum}")
            lines.append(f"{ind}{yhat} = {e}")
            if softmax_needs_lse:
                lines.append(f"{ind}{plan.lse} = np.log({ssum})   # log-sum-exp of the shifted logits")
        elif kind == "loss":
            code = _reduce_sum(st[2], ew, free_at(i, reads(st)), lines, plan, printer)
            div = " / m" if plan.d.reduction == "mean" else ""
            lines.append(f"{ind}value = {code}{div}")
        elif kind == "matmul":
            lines.append(f"{ind}{st[1]} = {st[2]} @ {st[3]}.T")
        elif kind in ("grad_W", "grad_b"):
            p = st[1]
            prod = f"{st[2]}.T @ {st[3]}" if kind == "grad_W" else f"ones @ {st[2]}"
            if mode == "step":
                lines.append(f"{ind}{p} -= {prod}")
            else:
                g = namer.take(f"grad_{p}")
                grads[p] = g
                lines.append(f"{ind}{g} = {prod}")
    if mode == "predict":
        lines.append(f"{ind}return {plan.forward[-1][1]}")
    elif mode == "forward":
        lines.append(f"{ind}return {{{', '.join(f'{st[1].name!r}: {st[1]}' for st in plan.forward)}}}")
    elif mode == "loss":
        lines.append(f"{ind}return value")
    elif mode in ("grad", "backward"):
        lines.append(f"{ind}return value, ({', '.join(grads[plan.sym[p]] for p in plan.params)},)")
    else:
        lines.append(f"{ind}return value")
    return lines


def _reduce_sum(expr, ew: InPlace, free, lines, plan, printer) -> str:
    """Code for Σ over all entries of an element-wise formula; a dot product where it can be."""
    coeff, rest = expr.as_coeff_Mul()
    factors = [f for f in sp.Mul.make_args(rest)]
    full = [f for f in factors if ew.is_array(f) and not (plan.lse is not None and f.free_symbols <= {plan.lse})]
    k = "" if coeff == 1 else ("-" if coeff == -1 else f"{printer.parenthesize(coeff, 50)}*")
    if len(factors) == 1 and rest.is_Pow and rest.exp == 2:
        body, ref = ew.emit(rest.base, free)
        lines += body
        return f"{k}np.vdot({ref}, {ref})"
    if len(factors) == 2 and len(full) == 2:
        body1, r1 = ew.emit(factors[0], free)
        lines += body1
        body2, r2 = ew.emit(factors[1], free - set(factors[0].free_symbols))
        lines += body2
        return f"{k}np.vdot({r1}, {r2})"
    body, ref = ew.emit(expr, free)
    lines += body
    return f"np.sum({ref})"


_INIT_SCHEME = {"relu": "he", "leaky_relu": "he"}


def _layer_module(d, dtype: str) -> str:
    namer, printer = Namer(), NumpyPrinter()
    plan = _LayerPlan(d, namer)
    sizes = d.sizes
    acts = [f.__name__ for f in d.activation_list]
    init_rows = [(f"W{l}", f"b{l}", sizes[l - 1], sizes[l], _INIT_SCHEME.get(acts[l - 1], "glorot"))
                 for l in range(1, d.depth + 1)]
    shapes = {}
    for w, b, fi, fo, _ in init_rows:
        shapes[w], shapes[b] = (fi, fo), (fo,)
    arch = "-".join(map(str, sizes))
    doc = {
        "predict": "The network's output for the rows of X.",
        "forward": "Every Z and A of the forward pass, by name (nothing overwritten).",
        "loss": f"The batch loss L ({d.reduction} over the rows of the per-sample cost).",
        "backward": "(L, gradients in PARAMS order) from the values forward() returned.",
        "grad": "(L, gradients): forward() and backward() in one function, buffers reused.",
        "step": "One gradient-descent step on params, in place; returns L before it.",
    }
    args = {"predict": "X, params", "forward": "X, params", "loss": "X, Y, params",
            "backward": "X, Y, params, values", "grad": "X, Y, params", "step": "X, Y, params, lr"}
    src = [
        f'"""Training code generated by symback for the {arch} network '
        f"({'/'.join(acts)}, loss {d.loss_function.name}).",
        "",
        "Z = A W + b, A = f(Z) forward; the output delta, then delta W^T * f'(Z) backward,",
        'from the derivation\'s formulas after common-subexpression elimination.  NumPy only."""',
        "import numpy as np",
        "",
        f"DTYPE = np.{dtype}",
        "KIND = 'layers'",
        f"REDUCTION = {d.reduction!r}",
        f"SIZES = {tuple(sizes)!r}",
        f"ACTIVATIONS = {tuple(acts)!r}",
        f"PARAMS = {tuple(d.params)!r}",
        f"N_INPUTS = {sizes[0]}",
        f"N_TARGETS = {sizes[-1]}",
        f"SHAPES = {shapes!r}",
        f"INIT = {tuple(init_rows)!r}",
        "_ONES = {}",
        "",
        "",
        "def _ones(m):",
        '    """A cached row of m ones: 1^T delta sums a delta over the samples (one BLAS call)."""',
        "    ones = _ONES.get(m)",
        "    if ones is None:",
        "        ones = _ONES[m] = np.ones(m, dtype=DTYPE)",
        "    return ones",
        "",
        "",
        "def init(seed=0):",
        '    """Glorot-uniform weights (He-normal before ReLU-like activations), zero biases."""',
        "    rng = np.random.default_rng(seed)",
        "    params = {}",
        "    for w, b, fan_in, fan_out, scheme in INIT:",
        "        if scheme == 'he':",
        "            W = rng.normal(0.0, np.sqrt(2.0 / fan_in), size=(fan_in, fan_out))",
        "        else:",
        "            limit = np.sqrt(6.0 / (fan_in + fan_out))",
        "            W = rng.uniform(-limit, limit, size=(fan_in, fan_out))",
        "        params[w] = W.astype(DTYPE)",
        "        params[b] = np.zeros(fan_out, dtype=DTYPE)",
        "    return params",
        "",
    ]
    for mode in ("predict", "forward", "loss", "backward", "grad", "step"):
        src += ["", f"def {mode}({args[mode]}):", f'    """{doc[mode]}"""']
        src += _layer_function(plan, mode, printer)
        src.append("")
    return "\n".join(src)
