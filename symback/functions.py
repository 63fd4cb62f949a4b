"""Activations and losses: each defined once as a SymPy expression.

An entry in the registry holds only a *definition*.  SymPy derives the
derivative from it, and symback then looks for the compact form a
lecturer writes (σ' = σ(1−σ), tanh' = 1−tanh², softplus' = σ) by asking
SymPy to prove an identity, never by typing the answer in.

Every activation becomes a SymPy ``Function`` subclass, so ``sb.sigmoid(z)``
can be used inside any graph expression, evaluates with ``evalf`` and
rewrites into elementary functions with ``expr.rewrite(sp.exp)``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp
from sympy.core.evalf import prec_to_dps

from .budget import within
from .errors import DefinitionError
from .proofs import proved_equal

__all__ = [
    "Activation", "LossFunction", "activation", "loss_function",
    "get_activation", "get_loss", "ACTIVATIONS", "LOSSES", "parametrised", "LeakyReLU",
    "identity", "sigmoid", "tanh", "relu", "leaky_relu", "softplus", "swish",
    "softmax", "mse", "half_mse", "binary_cross_entropy", "cross_entropy", "logcosh", "huber",
]

from .registry import ACTIVATIONS, LOSSES, TEXT_PARSER  # noqa: E402  (the shared registries)

_z = sp.Symbol("z", real=True)


BUILT_IN: frozenset = frozenset()     # (filled once the built-ins are registered, below)


def _no_text(args, what: str) -> None:
    """DefinitionError for a string argument: user text is parsed (symback.parse), never handed
    to SymPy, whose sympify evaluates it as Python."""
    for a in args:
        if isinstance(a, (str, bytes)):
            raise DefinitionError(f"{what} takes SymPy expressions, got the text {a!r}: build the "
                                  "expression with SymPy symbols, or write it in a spec file")


class Activation(sp.Function):
    """A scalar function known to symback through its SymPy definition.

    Subclasses are made by :func:`activation`; each carries

    * ``definition`` – a ``Lambda`` giving the function in elementary terms;
    * ``derivative`` – a ``Lambda`` for f'(z), SymPy's derivative put in
      compact form (it may call the function itself, as σ(1−σ) does);
    * ``output_derivative`` – a ``Lambda`` g with f'(z) = g(f(z)) when such
      a form exists (lets compiled code reuse the forward value), or None;
    * ``stable`` – an equal expression safe from overflow, used by the
      NumPy printer, proven equal to the definition at registration.
    """

    definition: sp.Lambda
    derivative: sp.Lambda
    output_derivative: sp.Lambda | None = None
    stable: sp.Lambda | None = None
    latex_name: str = ""
    extra_params: tuple = ()
    convention: str = ""

    def __new__(cls, *args, **options):
        _no_text(args, cls.__name__)        # SymPy's Function would sympify (evaluate) a string
        # f(M) for a matrix M is f applied to every entry (sb.tanh(X @ W1)).
        if args and isinstance(args[0], sp.MatrixBase):      # explicit entries: entry by entry
            return args[0].applyfunc(lambda e: cls(e, *args[1:]))
        if args and isinstance(args[0], sp.MatrixExpr):
            from .matrix import ENTRY, elementwise
            return elementwise(sp.Lambda(ENTRY, cls(ENTRY, *args[1:])), args[0])
        return super().__new__(cls, *args, **options)

    @classmethod
    def eval(cls, *args):
        # Numbers evaluate exactly (sigmoid(0) = 1/2) so worked examples
        # can be substituted; symbolic arguments stay unevaluated.
        if all(a.is_Number for a in args):
            return cls.definition(*args)
        return None

    def fdiff(self, argindex=1):
        if argindex != 1:
            var = sp.Dummy("p")
            args = list(self.args)
            args[argindex - 1] = var
            return sp.diff(self.definition(*args), var).subs(var, self.args[argindex - 1])
        return self.derivative(*self.args)

    def _eval_evalf(self, prec):
        if not all(a.is_number for a in self.args):
            return None
        return self.definition(*self.args).evalf(prec_to_dps(prec))

    def _eval_rewrite(self, rule, args, **hints):
        # Any rewrite target (sp.exp, sp.Piecewise, ...) starts from the
        # definition, which is already written in elementary functions.
        return self.definition(*args).rewrite(rule) if rule is not None else self.definition(*args)

    def _eval_is_real(self):
        return self.args[0].is_real

    def _latex(self, printer, exp=None):
        arg = printer._print(self.args[0])
        name = self.latex_name
        s = rf"{name}\left({arg}\right)"
        return s if exp is None else rf"{name}^{{{exp}}}\left({arg}\right)"


#: the time SymPy's simplify may take to shorten an activation's derivative (the built-ins other
#: than GELU take at most 0.06 s)
SIMPLIFY_SECONDS = 0.5


def _compact_derivative(cls, d: sp.Expr, var: sp.Symbol):
    """Put f'(var) = d in the form a lecturer writes; returns (f', g) with g(f) = f' or None."""
    f_of = cls(var, *[sp.Symbol(f"_p{i}") for i in range(len(cls.extra_params))]) \
        if cls.extra_params else cls(var)
    defn = cls.definition(var, *cls.extra_params) if cls.extra_params else cls.definition(var)
    if d.has(sp.Piecewise) or not d.has(var):
        return sp.piecewise_fold(d), None
    # 1. f' as a polynomial of degree <= 2 in f itself (σ' = σ − σ², tanh' = 1 − tanh²,
    #    exp' = exp).  Coefficients from three sample points, then proved.
    pts = (0.3, -0.8, 1.1)
    try:
        rows = [[1.0, float(defn.subs(var, p)), float(defn.subs(var, p)) ** 2] for p in pts]
        rhs = [float(d.subs(var, p)) for p in pts]
        coeffs = [sp.nsimplify(c, rational=True, tolerance=1e-9) for c in _solve3(rows, rhs)]
    except (TypeError, ValueError, ZeroDivisionError):
        coeffs = None
    if coeffs is not None:
        u = sp.Dummy("u")
        c0, c1, c2 = coeffs
        if c0 == 0 and c2 != 0:
            g = u * (c1 + c2 * u)          # σ(1 − σ) rather than σ − σ²
        else:
            g = c0 + c1 * u + c2 * u ** 2
        if g.has(u) or g != 0:
            if proved_equal(g.subs(u, defn), d, var):
                return g.subs(u, f_of), sp.Lambda(u, g)
    # 2. f' equal to another registered activation (softplus' = σ).
    for other in ACTIVATIONS.values():
        if other is cls or other.extra_params:
            continue
        if proved_equal(other.definition(var), d, var):
            return other(var), None
    # 3. SymPy's simplify, within a budget: it only shortens, and has no bound of its own (GELU′:
    #    1.9 s of trigsimp for a form two operations longer, which is then not kept)
    simpler = within(SIMPLIFY_SECONDS, lambda: sp.simplify(d), default=d)
    return (simpler if sp.count_ops(simpler) < sp.count_ops(d) else d), None


def _solve3(a, b):
    """Solve a 3x3 linear system (Cramer); raises ZeroDivisionError if singular."""
    def det(m):
        return (m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
                - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
                + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]))
    d = det(a)
    if abs(d) < 1e-12:
        raise ZeroDivisionError
    out = []
    for j in range(3):
        m = [row[:] for row in a]
        for i in range(3):
            m[i][j] = b[i]
        out.append(det(m) / d)
    return out


class _LazyRule:
    """A class attribute derived by :func:`_derive_rules` on first access."""

    def __init__(self, attr):
        self.attr = attr

    def __get__(self, obj, owner):
        _derive_rules(owner)
        return getattr(owner, self.attr)


def _derive_rules(cls):
    """Set cls.derivative, cls.output_derivative and cls.stable from the definition."""
    lam, pvars, stable, var = cls._rules_from
    w = sp.Dummy("w", real=True)
    defn_w = lam(w, *cls.extra_params)
    if pvars:
        pv = [sp.Dummy(str(p)) for p in pvars]
        derivative = sp.Lambda((w, *pv), sp.piecewise_fold(sp.diff(lam(w, *pv), w)))
        output_derivative = None
    else:
        compact, output_derivative = _compact_derivative(cls, sp.diff(defn_w, w), w)
        derivative = sp.Lambda(w, compact)
    stable_rule = None
    if stable is not None:
        st = stable.subs(var, w)
        if not proved_equal(st, defn_w, w):
            raise DefinitionError(
                f"activation {cls.__name__!r}: the stable form is not equal to the definition")
        stable_rule = sp.Lambda(w, st)
    cls.derivative, cls.output_derivative, cls.stable = derivative, output_derivative, stable_rule


def user_expr(value, names=(), *, where="value"):
    """:func:`symback.parse.user_expr` (registered by the parser, which reads this module's registry)."""
    if isinstance(value, sp.Basic):
        return value
    if not TEXT_PARSER:
        raise DefinitionError(f"{where}: text is parsed by symback.parse (import symback), got {value!r}")
    return TEXT_PARSER[0](value, names, where=where)


def activation(name: str, expr, var: sp.Symbol, *, latex: str | None = None,
               params: dict | None = None, stable=None, lazy: bool = False) -> type:
    """Register a new activation from its SymPy definition alone.

    >>> z = sp.Symbol("z")
    >>> mish = activation("mish", z * sp.tanh(sp.log(1 + sp.exp(z))), var=z)

    The derivative is derived by SymPy.  ``params`` maps extra constant
    symbols (such as leaky ReLU's α) to their defaults; ``stable`` is an
    optional overflow-safe equal expression, checked equal by SymPy.
    ``lazy=True`` defers deriving (and checking) to first use.
    Returns the new SymPy ``Function`` class, usable as ``mish(z)``.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise DefinitionError(f"activation name {name!r} must be an identifier")
    if not isinstance(var, sp.Symbol):
        raise DefinitionError(f"activation {name!r}: var must be a SymPy Symbol, got {var!r}")
    params = dict(params or {})
    expr = user_expr(expr, {var.name: var, **{str(k): k for k in params}}, where=f"activation {name!r}")
    extra = set(expr.free_symbols) - {var} - set(params)
    if extra:
        raise DefinitionError(
            f"activation {name!r}: definition uses unknown symbols {sorted(map(str, extra))}; "
            f"only {var} (and declared params) may appear")
    pvars = tuple(params)
    lam = sp.Lambda((var, *pvars), expr)
    if name in BUILT_IN and name in ACTIVATIONS:
        old = ACTIVATIONS[name].definition
        if len(old.variables) != len(lam.variables) or lam.expr.xreplace(dict(zip(lam.variables, old.variables))) != old.expr:
            raise DefinitionError(f"{name!r} is a built-in activation with another definition; "
                                  "give yours a name of its own")
        return ACTIVATIONS[name]
    cls = type(name, (Activation,), {
        "definition": lam,
        "latex_name": latex or rf"\operatorname{{{_tex_ident(name)}}}",
        "extra_params": tuple(user_expr(v, where=f"activation {name!r}: default of {k}")
                             for k, v in params.items()),
        "nargs": (1, 1 + len(pvars)) if pvars else 1,
    })
    if pvars:
        defaults = cls.extra_params

        def eval_(klass, *args):
            if len(args) == 1:
                return klass(args[0], *defaults)
            return Activation.eval.__func__(klass, *args)
        cls.eval = classmethod(eval_)
    cls._rules_from = (lam, pvars, stable, var)
    if lazy:
        # Built-in entries are proved by the test suite; deriving their rules
        # on first use keeps `import symback` (and every CLI call) fast.
        for attr in ("derivative", "output_derivative", "stable"):
            setattr(cls, attr, _LazyRule(attr))
    else:
        _derive_rules(cls)       # a user's definition is checked at once
    ACTIVATIONS[name] = cls
    return cls


def _tex_ident(name: str) -> str:
    return name.replace("_", r"\_")


def get_activation(spec) -> type:
    """Look up an activation by name, or pass an Activation class through.

    A parametrised activation takes its constants too: ``("leaky_relu", 0.1)``
    or the text ``"leaky_relu:0.1"`` is leaky ReLU with α = 0.1.
    """
    if isinstance(spec, type) and issubclass(spec, Activation):
        return spec
    if isinstance(spec, str) and ":" in spec:
        name, _, rest = spec.partition(":")
        spec = (name, *rest.split(","))
    if isinstance(spec, tuple) and spec and isinstance(spec[0], str):
        return parametrised(get_activation(spec[0]), *spec[1:])
    if spec == "softmax":
        return softmax
    if isinstance(spec, str) and spec in ACTIVATIONS:
        return ACTIVATIONS[spec]
    raise DefinitionError(
        f"unknown activation {spec!r}; known: {', '.join(sorted(ACTIVATIONS) + ['softmax'])}")


_PARAMETRISED: dict = {}


def parametrised(cls, *values) -> type:
    """`cls` with its constants (leaky ReLU's α) set to `values`: same name, rules and printing.

    The constants ride along as the function's extra arguments (LReLU(z, 1/10)),
    so derivatives, code and documents see them; the class is made once per value.
    """
    if not cls.extra_params:
        raise DefinitionError(f"activation {cls.__name__!r} has no parameter to set")
    if len(values) != len(cls.extra_params):
        raise DefinitionError(f"activation {cls.__name__!r} takes {len(cls.extra_params)} parameter(s), "
                              f"got {len(values)}")
    try:
        # text is a number written out ("0.1"), parsed by float(), never evaluated
        vals = tuple(sp.nsimplify(float(v) if isinstance(v, str) else v, rational=True) for v in values)
    except (sp.SympifyError, TypeError, ValueError):
        raise DefinitionError(f"activation {cls.__name__!r}: parameters must be numbers, got {values!r}") from None
    if not all(v.is_number and v.is_real for v in vals):
        raise DefinitionError(f"activation {cls.__name__!r}: parameters must be real numbers, got {values!r}")
    base = getattr(cls, "_base", cls)
    key = (base, vals)
    if key not in _PARAMETRISED:
        def eval_(klass, *args):
            if len(args) == 1:
                return klass(args[0], *vals)
            return Activation.eval.__func__(klass, *args)
        _PARAMETRISED[key] = type(base.__name__, (base,), {"extra_params": vals, "eval": classmethod(eval_),
                                                         "_base": base})
    return _PARAMETRISED[key]


def LeakyReLU(alpha=sp.Rational(1, 100)) -> type:      # noqa: N802 - reads like a layer, as in Keras
    """Leaky ReLU with slope `alpha` below zero: ``sb.mlp(..., activation=sb.LeakyReLU(0.1))``."""
    return parametrised(leaky_relu, alpha)


# ---------------------------------------------------------------- registry
# Each line is a definition; everything else is derived.
identity = activation("identity", _z, var=_z, latex=r"\operatorname{id}", lazy=True)
sigmoid = activation("sigmoid", 1 / (1 + sp.exp(-_z)), var=_z, latex=r"\sigma",
                     stable=(1 + sp.tanh(_z / 2)) / 2, lazy=True)
tanh = activation("tanh", sp.tanh(_z), var=_z, latex=r"\tanh", lazy=True)
relu = activation("relu", sp.Piecewise((0, _z < 0), (_z, True)), var=_z,
                  latex=r"\operatorname{ReLU}", lazy=True)
relu.convention = r"\operatorname{ReLU}'(0) = 1, as in the notes (1 for z \geq 0)"
_alpha = sp.Symbol("alpha", positive=True)
leaky_relu = activation("leaky_relu", sp.Piecewise((_alpha * _z, _z < 0), (_z, True)), var=_z,
                        latex=r"\operatorname{LReLU}", params={_alpha: sp.Rational(1, 100)}, lazy=True)
leaky_relu.convention = r"\operatorname{LReLU}'(0) = 1"
softplus = activation("softplus", sp.log(1 + sp.exp(_z)), var=_z, latex=r"\operatorname{softplus}",
                      stable=sp.Max(_z, 0) + sp.log(1 + sp.exp(-sp.Abs(_z))), lazy=True)
swish = activation("swish", _z * sigmoid(_z), var=_z, latex=r"\operatorname{swish}", lazy=True)
ACTIVATIONS["silu"] = swish
#: GELU in its tanh form (GPT-2's; torch's gelu(approximate="tanh"))
gelu = activation("gelu", _z / 2 * (1 + sp.tanh(sp.sqrt(2 / sp.pi) * (_z + sp.Rational(44715, 10**6) * _z**3))),
                  var=_z, latex=r"\operatorname{GELU}", lazy=True)


class softmax:
    """The softmax output layer: s_k = exp(z_k) / Σ_j exp(z_j), row by row.

    It is a vector function, so it is not an ``Activation``; its partial
    derivatives are derived by SymPy in :func:`softmax_jacobian`.
    """

    __name__ = "softmax"
    latex_name = r"\operatorname{softmax}"

    def __new__(cls, arg, mask=None):
        # sb.softmax(Z) on a matrix: softmax of each row; mask="causal" keeps j <= i
        from .matrix import Softmax
        return Softmax(arg, mask)

    @staticmethod
    def components(zs):
        """The list of softmax outputs for the symbols `zs`, as SymPy expressions."""
        total = sum(sp.exp(z) for z in zs)
        return [sp.exp(z) / total for z in zs]


# ---------------------------------------------------------------- losses
@dataclass(frozen=True)
class LossFunction:
    """A per-output loss ℓ(prediction, target), summed over a sample's outputs.

    ``expr`` is written in ``prediction`` and ``target``; ``outputs`` is
    "elementwise" for an ordinary loss, or "softmax" when it consumes the
    softmax of the logits (cross-entropy).  ``scale`` and ``latex`` are
    only for display.
    """

    name: str
    expr: sp.Expr
    prediction: sp.Symbol
    target: sp.Symbol
    latex: str = ""
    needs: str = "elementwise"
    extra: dict = field(default_factory=dict)
    #: (low, high): the targets the loss is defined for (binary cross-entropy: probabilities),
    #: checked on the data; None: any real target
    target_range: tuple | None = None

    def __call__(self, prediction, target):
        """The loss for one output, as a SymPy expression.

        Called on matrices (rows are samples) it gives the m×1 column of
        per-sample costs, the loss summed over each row's outputs.
        """
        _no_text((prediction, target), self.name)
        if isinstance(prediction, sp.MatrixExpr) or isinstance(target, sp.MatrixExpr):
            from .matrix import RowCost
            return RowCost(self.name, prediction, target)
        return self.expr.xreplace({self.prediction: prediction, self.target: target})


def loss_function(name: str, expr, prediction: sp.Symbol, target: sp.Symbol, *,
                  latex: str | None = None, needs: str = "elementwise",
                  target_range: tuple | None = None) -> LossFunction:
    """Register a new loss from its SymPy definition alone.

    ``target_range=(low, high)`` makes the models refuse targets outside it
    (a DataError), for a loss that means nothing there.

    >>> yh, t = sp.symbols("yhat t")
    >>> logcosh = loss_function("logcosh", sp.log(sp.cosh(yh - t)), prediction=yh, target=t)
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise DefinitionError(f"loss name {name!r} must be an identifier")
    if not isinstance(prediction, sp.Symbol) or not isinstance(target, sp.Symbol):
        raise DefinitionError(f"loss {name!r}: prediction and target must be SymPy Symbols")
    if prediction == target:
        raise DefinitionError(f"loss {name!r}: prediction and target must be two different symbols")
    expr = user_expr(expr, {prediction.name: prediction, target.name: target}, where=f"loss {name!r}")
    extra = set(expr.free_symbols) - {prediction, target}
    if extra:
        raise DefinitionError(
            f"loss {name!r}: definition uses unknown symbols {sorted(map(str, extra))}")
    if not expr.has(prediction):
        raise DefinitionError(f"loss {name!r} does not depend on its prediction {prediction}")
    if name in BUILT_IN and name in LOSSES:     # DESIGN's own logcosh example: the same loss again
        old = LOSSES[name]
        if expr.xreplace({prediction: old.prediction, target: old.target}) != old.expr:
            raise DefinitionError(f"{name!r} is a built-in loss with another definition; "
                                  "give yours a name of its own")
        return old
    lf = LossFunction(name, expr, prediction, target, latex or rf"\operatorname{{{_tex_ident(name)}}}", needs,
                      target_range=target_range)
    LOSSES[name] = lf
    return lf


def get_loss(spec) -> LossFunction:
    """Look up a loss by name, or pass a LossFunction through."""
    if isinstance(spec, LossFunction):
        return spec
    if isinstance(spec, str) and spec in LOSSES:
        return LOSSES[spec]
    raise DefinitionError(f"unknown loss {spec!r}; known: {', '.join(sorted(LOSSES))}")


_p, _t = sp.Symbol("p", real=True), sp.Symbol("t", real=True)
mse = loss_function("mse", (_p - _t) ** 2, _p, _t, latex=r"(\hat y - y)^2")
half_mse = loss_function("half_mse", (_p - _t) ** 2 / 2, _p, _t, latex=r"\tfrac12(\hat y - y)^2")
binary_cross_entropy = loss_function("binary_cross_entropy", -(_t * sp.log(_p) + (1 - _t) * sp.log(1 - _p)), _p, _t,
              latex=r"-\left(y\log\hat y + (1-y)\log(1-\hat y)\right)", target_range=(0, 1))
cross_entropy = loss_function("cross_entropy", -_t * sp.log(_p), _p, _t, latex=r"-\sum_k y_k \log \hat y_k",
              needs="softmax")
logcosh = loss_function("logcosh", sp.log(sp.cosh(_p - _t)), _p, _t)
huber = loss_function("huber", sp.Piecewise(((_p - _t) ** 2 / 2, sp.Abs(_p - _t) <= 1),
                                    (sp.Abs(_p - _t) - sp.Rational(1, 2), True)), _p, _t)

#: the names registered above: a user's definition under one of them must be the same function
BUILT_IN = frozenset(ACTIVATIONS) | frozenset(LOSSES)
