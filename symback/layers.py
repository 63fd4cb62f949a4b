"""Layer networks: Dense, Sequential, mlp, and their matrix-form derivation.

Layer ``l`` computes ``Z_l = A_{l-1} W_l + 1 b_l`` and ``A_l = f_l(Z_l)``
element-wise, with ``A_0 = X`` (samples in rows, as in NumPy).  The
derivation has two parts, both done by SymPy:

* the *output block*: δ_L = ∂C/∂Z_L for one sample, from the loss and the
  output function, differentiated and simplified on scalar symbols
  (softmax + cross-entropy and sigmoid + binary cross-entropy come out as
  "prediction − target" this way, not by special-casing);
* the *hidden layers*: reverse-mode over the matrix graph, each local
  vector-Jacobian product obtained by SymPy's matrix calculus as
  ∂ tr(δ_childᵀ · child(node)) / ∂node — which yields δ_{l} W_lᵀ,
  A_{l-1}ᵀ δ_l, 1ᵀ δ_l and f'(Z) ⊙ δ_A without any of them typed in.
"""
from __future__ import annotations

import sympy as sp
from sympy.matrices.expressions.applyfunc import ElementwiseApplyFunction

from .engine import BATCH_SIZE, Derivation, Factor, Name
from .errors import DefinitionError, SymbackError
from .functions import Activation, LossFunction, get_activation, get_loss, softmax

__all__ = ["Dense", "Sequential", "mlp", "LayerDerivation", "FPrime", "Softmax", "AdjointMatrix",
           "Elementwise", "output_delta"]


# ------------------------------------------------------------ matrix pieces
class AdjointMatrix(sp.MatrixSymbol):
    """δ_node = ∂C/∂node for a matrix node, stacked over samples in rows.

    The name is ``delta_<node>``; ``node`` gives the node's name back.
    """

    @property
    def node(self) -> str:
        """The node this adjoint belongs to."""
        return self.name[len("delta_"):]

    def _latex(self, printer, exp=None):
        return r"\delta_{%s}" % printer._print(sp.Symbol(self.node))


class FPrime(sp.MatrixExpr):
    """f'(Z): an activation's derivative applied element-wise to a matrix.

    ``FPrime(Str("sigmoid"), Z)``; ``.function`` is the Activation class,
    ``.as_elementwise()`` the SymPy ``ElementwiseApplyFunction`` it
    stands for (the one SymPy's matrix calculus produced).
    """

    def __new__(cls, name, arg):
        name = name if isinstance(name, sp.core.symbol.Str) else sp.core.symbol.Str(str(name))
        return super().__new__(cls, name, arg)

    @property
    def function(self) -> type:
        """The Activation class whose derivative this is."""
        return get_activation(self.args[0].name)

    @property
    def arg(self):
        """The matrix the derivative is applied to."""
        return self.args[1]

    @property
    def shape(self):
        return self.args[1].shape

    def as_elementwise(self):
        """The equivalent ``ElementwiseApplyFunction`` of f.derivative."""
        w = sp.Dummy("w")
        return ElementwiseApplyFunction(sp.Lambda(w, self.function.derivative(w)), self.arg)

    def _latex(self, printer, exp=None):
        return r"%s'\left(%s\right)" % (self.function.latex_name, printer._print(self.arg))


class Softmax(sp.MatrixExpr):
    """softmax applied to each row of a matrix (the output of a classifier)."""

    def __new__(cls, arg):
        return super().__new__(cls, arg)

    @property
    def arg(self):
        """The logits."""
        return self.args[0]

    @property
    def shape(self):
        return self.args[0].shape

    def _latex(self, printer, exp=None):
        return r"\operatorname{softmax}\left(%s\right)" % printer._print(self.arg)


class Elementwise(sp.MatrixExpr):
    """A scalar formula of several matrices applied element by element.

    ``Elementwise(Lambda((z, a, y), expr), Z, A, Y)``: entry (i, k) is
    expr(Z_ik, A_ik, Y_ik).  Used for output deltas such as Huber's,
    which need more than one matrix; a printer substitutes the matrix
    names for the lambda's variables.
    """

    @property
    def function(self) -> sp.Lambda:
        """The scalar formula."""
        return self.args[0]

    @property
    def operands(self) -> tuple:
        """The matrices, in the order of the formula's variables."""
        return self.args[1:]

    @property
    def shape(self):
        return self.args[1].shape

    def _latex(self, printer, exp=None):
        subs = {v: sp.Symbol(printer._print(m)) for v, m in zip(self.function.variables, self.operands)}
        return r"\left[%s\right]_{\text{elementwise}}" % printer._print(self.function.expr.xreplace(subs))


def _explicit(e):
    """An explicit matrix for Softmax or Elementwise of explicit matrices."""
    if isinstance(e, Softmax):
        z = e.arg
        return sp.ImmutableMatrix(z.rows, z.cols, lambda i, k: sp.exp(z[i, k]) / sum(
            sp.exp(z[i, j]) for j in range(z.cols)))
    ops = [sp.ImmutableMatrix(o) for o in e.operands]
    return sp.ImmutableMatrix(ops[0].rows, ops[0].cols,
                              lambda i, k: e.function(*[o[i, k] for o in ops]))


def _elementwise(fn, arg):
    """f applied element-wise to a matrix expression."""
    return ElementwiseApplyFunction(fn, arg)


# ------------------------------------------------------------ definitions
class Dense:
    """A fully connected layer of `units` outputs and an activation.

    ``activation`` is a registry name ("sigmoid", "relu", ...), an
    Activation class (e.g. from :func:`symback.activation`) or "softmax"
    (output layer only).
    """

    def __init__(self, units: int, activation="identity"):
        if isinstance(units, bool) or not isinstance(units, int) or units < 1:
            raise DefinitionError(f"Dense: units must be a positive integer, got {units!r}")
        self.units = units
        self.activation = get_activation(activation)

    def __repr__(self):
        return f"Dense({self.units}, {self.activation.__name__!r})"


class Sequential:
    """Layers applied in order to inputs of width `inputs`, with a loss.

    ``loss`` is a registry name or a LossFunction; ``reduction`` is
    "mean" (L = 1/m Σ C_i, the default) or "sum".
    """

    def __init__(self, *layers: Dense, inputs: int, loss="mse", reduction: str = "mean"):
        if not layers:
            raise DefinitionError("Sequential needs at least one Dense layer")
        for l in layers:
            if not isinstance(l, Dense):
                raise DefinitionError(f"Sequential takes Dense layers, got {l!r}")
        if isinstance(inputs, bool) or not isinstance(inputs, int) or inputs < 1:
            raise DefinitionError(f"inputs must be a positive integer, got {inputs!r}")
        if reduction not in ("mean", "sum"):
            raise DefinitionError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
        self.layers = list(layers)
        self.inputs = inputs
        self.loss = get_loss(loss)
        self.reduction = reduction
        for l in self.layers[:-1]:
            if l.activation is softmax:
                raise DefinitionError("softmax can only be the output layer's activation")
        out = self.layers[-1].activation
        if (out is softmax) != (self.loss.needs == "softmax"):
            raise DefinitionError(
                f"loss {self.loss.name!r} and output {out.__name__!r} do not go together: "
                "cross_entropy needs a softmax output, and a softmax output needs cross_entropy")

    @property
    def sizes(self) -> list[int]:
        """Widths [d_0, d_1, ..., d_L], inputs first."""
        return [self.inputs] + [l.units for l in self.layers]

    @property
    def activations(self) -> list:
        """The activation of each layer, in order."""
        return [l.activation for l in self.layers]

    def derive(self) -> "LayerDerivation":
        """The matrix-form derivation of this network (same as ``sb.derive(net)``)."""
        return LayerDerivation(self)

    def __repr__(self):
        return f"Sequential({', '.join(map(repr, self.layers))}, inputs={self.inputs}, loss={self.loss.name!r})"


def mlp(sizes, activation="sigmoid", output="identity", loss="mse", reduction="mean") -> Sequential:
    """A multi-layer perceptron: ``mlp([784, 128, 64, 10], "sigmoid", "softmax", "cross_entropy")``.

    ``sizes`` lists the input width and then each layer's width;
    hidden layers use `activation`, the last layer `output`.
    """
    try:
        sizes = list(sizes)
    except TypeError:
        raise DefinitionError(f"sizes must be a list of layer widths, got {sizes!r}") from None
    if len(sizes) < 2:
        raise DefinitionError(f"mlp needs at least two sizes (inputs and outputs), got {sizes!r}")
    get_activation(activation)      # checked even when there is no hidden layer
    layers = [Dense(n, activation) for n in sizes[1:-1]] + [Dense(sizes[-1], output)]
    return Sequential(*layers, inputs=sizes[0], loss=loss, reduction=reduction)


# ------------------------------------------------------------ the output block
def _best(*candidates):
    return min(candidates, key=lambda e: (sp.count_ops(e), len(str(e))))


def output_delta(out, loss: LossFunction, width: int):
    """δ_L = ∂C/∂z for one output, derived by SymPy and simplified.

    Returns ``(expr, symbols)`` where ``expr`` is written in the scalar
    symbols ``symbols = (z, a, y)`` (logit, prediction, target) and holds
    for every output component.  For softmax the derivation runs over all
    `width` components with the targets summing to one (one-hot), and the
    result is checked component by component.
    """
    z, a, y = sp.symbols("z a y", real=True)
    if out is softmax:
        K = max(width, 2)
        zs = sp.symbols(f"z0:{K}", real=True)
        ys = sp.symbols(f"y0:{K}", real=True)
        ss = sp.symbols(f"s0:{K}", positive=True)
        comps = softmax.components(zs)
        total, Ssym = sum(sp.exp(v) for v in zs), sp.Dummy("S", positive=True)
        in_s = {zs[k]: sp.log(ss[k] * Ssym) for k in range(K)}   # exp(z_k) = s_k S
        dl = [sp.diff(loss(a, y), a).xreplace({a: ss[k], y: ys[k]}) for k in range(K)]
        templ = None
        for j in range(K):
            # ∂s_k/∂z_j from the definition, rewritten in the s_k themselves
            jac = [sp.cancel(sp.diff(comps[k], zs[j]).subs(total, Ssym).xreplace(in_s)) for k in range(K)]
            g = sp.collect(sp.expand(sp.cancel(sum(dl[k] * jac[k] for k in range(K)))), ss[j])
            g = g.subs(sp.Add(*ys), 1)          # one-hot targets: Σ_k y_k = 1
            e = g.xreplace({ss[j]: a, ys[j]: y})
            if e.free_symbols - {a, y}:
                raise DefinitionError(f"softmax with loss {loss.name!r} does not reduce to an element-wise δ")
            if templ is None:
                templ = e
            elif sp.expand(e - templ) != 0:
                raise DefinitionError(f"softmax with loss {loss.name!r}: δ differs between outputs")
        return _best(templ, sp.factor_terms(templ)), (z, a, y)
    g = sp.diff(loss(out(z), y), z)
    g = g.subs(out(z), a)                      # name the prediction a = f(z)
    plain = not g.has(sp.Piecewise)
    g = _best(g, sp.factor_terms(sp.cancel(g)), sp.factor_terms(g),
              sp.factor(g) if plain else g, sp.factor_terms(sp.simplify(g)) if plain else g)
    return g, (z, a, y)


def _to_matrix(expr, mapping: dict, shape):
    """Lift an element-wise scalar expression to a matrix expression.

    Symbols become the matrices in `mapping`, products become Hadamard
    products, constants become multiples of the all-ones matrix.
    """
    if expr in mapping:
        return mapping[expr]
    if expr.is_Number:
        return expr * sp.OneMatrix(*shape)
    if expr.is_Add:
        return sp.MatAdd(*[_to_matrix(t, mapping, shape) for t in expr.args]).doit()
    if expr.is_Mul:
        coeff, rest = expr.as_coeff_Mul()
        factors = [_to_matrix(f, mapping, shape) for f in sp.Mul.make_args(rest)]
        body = factors[0] if len(factors) == 1 else sp.HadamardProduct(*factors)
        return body if coeff == 1 else coeff * body
    if expr.is_Pow and expr.exp.is_Integer and expr.exp > 0:
        return sp.HadamardPower(_to_matrix(expr.base, mapping, shape), expr.exp)
    free = sorted((s for s in expr.free_symbols if s in mapping), key=str)
    if len(free) == 1:
        w = sp.Dummy("w")
        return _elementwise(sp.Lambda(w, expr.xreplace({free[0]: w})), mapping[free[0]])
    if free and not (expr.free_symbols - set(free)):
        return Elementwise(sp.Lambda(tuple(free), expr), *[mapping[s] for s in free])
    raise DefinitionError(f"cannot write {expr} element-wise over matrices")


# ------------------------------------------------------------ the derivation
class LayerDerivation(Derivation):
    """Matrix-form backpropagation formulas of a layer network.

    Attributes, all SymPy matrix expressions over the batch size ``m``:

    * ``X``, ``Y``: inputs (m×d_0) and targets (m×d_L);
    * ``W[l]``, ``b[l]``, ``Z[l]``, ``A[l]`` for l = 1..L (``A[0] is X``);
      ``b[l]`` is a 1×d_l row broadcast over the samples;
    * ``forward``: ``[(Z1, X W1 + 1 b1), (A1, f(Z1)), ...]`` in order;
      element-wise activations are ``ElementwiseApplyFunction``; a softmax
      output is :class:`Softmax`;
    * ``output_delta``: (expr, (z, a, y)) — ∂C/∂z for one output element,
      in scalar symbols (see :func:`output_delta`);
    * ``delta[l]``: the :class:`AdjointMatrix` δ_l = ∂C/∂Z_l (rows = samples);
    * ``adjoint``: name -> recursive formula; for ``delta_Z{l}`` it is
      δ_{l+1} W_{l+1}ᵀ ⊙ f'(Z_l) (with :class:`FPrime`), for ``W{l}`` and
      ``b{l}`` the gradients A_{l-1}ᵀ δ_l and 1ᵀ δ_l, summed over samples;
    * ``grad[p]``: a MatrixSymbol ``grad_W1`` etc. naming ∂C/∂p (summed over rows);
    * ``backward``: ``[(delta_Z_L, top), (grad_W_L, A_{L-1}ᵀ δ_L), (grad_b_L, 1ᵀ δ_L),
      (delta_Z_{L-1}, ...), ...]``, the order in which compiled code evaluates them.
      These are per-sample adjoints stacked in rows: for the batch loss
      L multiply by 1/m when the reduction is the mean (once, at δ_L).

    :meth:`gradient` gives per-sample gradients summed over the batch's
    rows (for one sample, m = 1, exactly ∂C/∂p); :meth:`batch_gradient`
    applies the reduction.
    """

    kind = "layers"

    def __init__(self, net: Sequential):
        self.net = net
        self.sizes = net.sizes
        self.activation_list = net.activations
        self.loss_function = net.loss
        self._reduction = net.reduction
        m, L = BATCH_SIZE, len(net.layers)
        self.depth = L
        self.X = sp.MatrixSymbol("X", m, self.sizes[0])
        self.Y = sp.MatrixSymbol("Y", m, self.sizes[-1])
        self.W, self.b, self.Z, self.A = {}, {}, {}, {0: self.X}
        self.delta: dict[int, AdjointMatrix] = {}
        self.forward = []
        for l in range(1, L + 1):
            d_in, d_out = self.sizes[l - 1], self.sizes[l]
            self.W[l] = sp.MatrixSymbol(f"W{l}", d_in, d_out)
            self.b[l] = sp.MatrixSymbol(f"b{l}", 1, d_out)
            self.Z[l] = sp.MatrixSymbol(f"Z{l}", m, d_out)
            self.A[l] = sp.MatrixSymbol(f"A{l}" if l < L else "Yhat", m, d_out)
            self.delta[l] = AdjointMatrix(f"delta_Z{l}", m, d_out)
            self.forward.append((self.Z[l], self.A[l - 1] * self.W[l] + sp.OneMatrix(m, 1) * self.b[l]))
            f = self.activation_list[l - 1]
            self.forward.append((self.A[l], Softmax(self.Z[l]) if f is softmax else _elementwise(f, self.Z[l])))
        self._forward = dict(self.forward)
        self._biases = set(self.b.values())
        self._backward()

    # -- the chain rule over the matrix graph ---------------------------------
    def _vjp(self, child, adj, node):
        """∂ tr(adjᵀ child(node)) / ∂node: SymPy's matrix calculus does the chain-rule step.

        An activation enters as an undefined function f_l, so SymPy returns
        f_l'(Z) ⊙ adj; that f_l' is then named :class:`FPrime`, whose
        scalar derivative SymPy derived from the definition (functions.py).
        """
        expr, names = self._forward[child], {}
        if isinstance(expr, ElementwiseApplyFunction):
            l = next(k for k, Z in self.Z.items() if Z == expr.expr)
            f = sp.Function(f"f_{l}")
            names[f] = self.activation_list[l - 1].__name__
            expr = ElementwiseApplyFunction(f, expr.expr)
        # Differentiate with symbolic widths: SymPy's matrix calculus turns a
        # width-1 dimension into traces of 1x1 matrices, while the formula
        # itself does not depend on the widths, which are put back after.
        width = lambda d: d if d == BATCH_SIZE else sp.Symbol(f"n_{d}", positive=True, integer=True)
        rows = lambda s: s.shape[0] if s in self._biases else width(s.shape[0])   # b_l is one row
        generic = {s: sp.MatrixSymbol(s.name, rows(s), width(s.shape[1]))
                   for s in expr.atoms(sp.MatrixSymbol) | adj.atoms(sp.MatrixSymbol) | {node}}
        r = sp.Trace(adj.xreplace(generic).T * expr.xreplace(generic)).diff(generic[node])

        def name_fprime(e):
            body = e.function.expr
            if isinstance(body, sp.Derivative) and body.expr.func in names:
                return FPrime(names[body.expr.func], e.expr)
            raise SymbackError(f"unexpected element-wise term {e} in a layer derivative")
        r = r.replace(lambda e: isinstance(e, ElementwiseApplyFunction), name_fprime)
        concrete = {g: s for s, g in generic.items()}
        concrete.update({width(d): d for s in generic for d in s.shape if d != BATCH_SIZE and d != 1})
        return r.xreplace(concrete)

    def _backward(self):
        L, m = self.depth, BATCH_SIZE
        g, (z, a, y) = output_delta(self.activation_list[-1], self.loss_function, self.sizes[-1])
        self.output_delta = (g, (z, a, y))
        top = _to_matrix(g, {z: self.Z[L], a: self.A[L], y: self.Y}, (m, self.sizes[-1]))
        self.adjoint = {self.delta[L].name: top}
        self.backward = [(self.delta[L], top)]
        self.local, self.grad = {}, {}
        for l in range(L, 0, -1):
            dZ = self.delta[l]
            for p in (self.W[l], self.b[l]):
                self.adjoint[p.name] = self._vjp(self.Z[l], dZ, p)
                self.grad[p.name] = sp.MatrixSymbol(f"grad_{p.name}", *p.shape)
                self.backward.append((self.grad[p.name], self.adjoint[p.name]))
            self.local[(self.Z[l].name, self.W[l].name)] = self.A[l - 1].T
            if l > 1:
                dA = self._vjp(self.Z[l], dZ, self.A[l - 1])          # δ_l W_lᵀ
                dZprev = self._vjp(self.A[l - 1], dA, self.Z[l - 1])   # ⊙ f'(Z_{l-1})
                self.adjoint[self.delta[l - 1].name] = dZprev
                self.backward.append((self.delta[l - 1], dZprev))
                self.local[(self.Z[l].name, self.A[l - 1].name)] = self.W[l].T
                self.local[(self.A[l - 1].name, self.Z[l - 1].name)] = FPrime(
                    self.activation_list[l - 2].__name__, self.Z[l - 1])

    # -- the Derivation interface ----------------------------------------------
    @property
    def params(self) -> list[str]:
        """['W1', 'b1', 'W2', 'b2', ...]."""
        return [n for l in range(1, self.depth + 1) for n in (f"W{l}", f"b{l}")]

    @property
    def loss_name(self) -> str:
        return "C"

    @property
    def reduction(self) -> str:
        return self._reduction

    def _param(self, p) -> str:
        name = getattr(p, "name", p)
        if name not in self.params:
            raise SymbackError(f"unknown parameter {name!r}; parameters are {', '.join(self.params)}")
        return name

    def _chain_form(self, name):
        expr = self.adjoint[name]
        for _ in range(self.depth):
            expr = expr.xreplace({d: self.adjoint[d.name] for d in self.delta.values()})
        return expr

    def gradient(self, p, form: str = "chain"):
        """Σ over the batch's rows of ∂C_i/∂p, as a matrix formula.

        ``"recursive"``: A_{l-1}ᵀ δ_l (or 1ᵀ δ_l); ``"chain"``: δ unrolled
        to the output, seed 004's punchline; ``"expanded"``: the forward
        values substituted too, leaving X, Y and parameters only.
        """
        name = self._param(p)
        if form == "recursive":
            return self.adjoint[name]
        if form == "chain":
            return self._chain_form(name)
        if form == "expanded":
            expr = self._chain_form(name)
            for node, value in reversed(self.forward):
                expr = expr.xreplace({node: value})
            return expr
        raise SymbackError(f"unknown form {form!r}: use 'chain', 'recursive' or 'expanded'")

    def delta_of(self, l: int, form: str = "recursive"):
        """δ_l = ∂C/∂Z_l, recursive (in δ_{l+1}) or unrolled to the output."""
        return self.adjoint[self.delta[l].name] if form == "recursive" else self._chain_form(self.delta[l].name)

    def batch_gradient(self, p, form: str = "chain"):
        """∂L/∂p: the gradient with the batch reduction (1/m for the mean)."""
        g = self.gradient(p, form)
        return g / BATCH_SIZE if self.reduction == "mean" else g

    def batch_loss(self):
        """L = (1/m) Σ_i Σ_k ℓ(ŷ_ik, y_ik) (or the plain sum), unevaluated."""
        i, k = sp.symbols("i k", integer=True, positive=True)
        yh, yy = sp.Indexed(sp.IndexedBase(r"\hat{y}"), i, k), sp.Indexed(sp.IndexedBase("y"), i, k)
        total = sp.Sum(self.loss_function(yh, yy), (k, 1, self.sizes[-1]), (i, 1, BATCH_SIZE))
        return total / BATCH_SIZE if self.reduction == "mean" else total

    def chain(self, p) -> list[list[Factor]]:
        """The single path from the loss to `p` through the layers.

        Factors: (C, Z_L, δ_L), then per layer (Z_l, A_{l-1}, W_lᵀ) and
        (A_{l-1}, Z_{l-1}, f'(Z_{l-1})), and last (Z_l, W_l, A_{l-1}ᵀ) or
        (Z_l, b_l, 1ᵀ).  Matrix factors multiply as the formulas show:
        W_lᵀ on the right, f' element-wise, A_{l-1}ᵀ on the left.
        """
        name = self._param(p)
        l = int(name[1:])
        L = self.depth
        path = [Factor(Name("C"), Name(self.Z[L].name), self.adjoint[self.delta[L].name])]
        for k in range(L, l, -1):
            path.append(Factor(Name(self.Z[k].name), Name(self.A[k - 1].name), self.W[k].T))
            path.append(Factor(Name(self.A[k - 1].name), Name(self.Z[k - 1].name),
                               FPrime(self.activation_list[k - 2].__name__, self.Z[k - 1])))
        last = self.A[l - 1].T if name.startswith("W") else sp.OneMatrix(1, BATCH_SIZE)
        path.append(Factor(Name(self.Z[l].name), Name(name), last))
        return [path]

    def evaluate(self, values: dict) -> dict:
        """Substitute numbers into the formulas, exactly as SymPy reads them.

        ``values`` maps "X", "Y" and every parameter to arrays (b_l as a
        row).  Returns {'forward': {node: ndarray}, 'gradient': {p: ndarray}}
        with the gradients of the batch loss L (reduction applied).  Slow:
        meant for small networks, worked examples and checking the formulas.
        """
        import numpy as np
        missing = [n for n in ["X", "Y"] + self.params if n not in values]
        if missing:
            raise SymbackError(f"values missing for {', '.join(missing)}")
        arrays = {n: np.atleast_2d(np.asarray(values[n], dtype=float)) for n in ["X", "Y"] + self.params}
        rows = arrays["X"].shape[0]
        env = {}
        for sym in [self.X, self.Y] + [s for l in self.W for s in (self.W[l], self.b[l])]:
            a = arrays[sym.name]
            if sym.shape[1] != a.shape[1] or (sym.shape[0] != BATCH_SIZE and sym.shape[0] != a.shape[0]):
                raise SymbackError(f"{sym.name} has shape {a.shape}, expected {sym.shape}")
            env[sym] = sp.ImmutableMatrix(a)

        def ev(e):
            e = e.xreplace(env).subs(BATCH_SIZE, rows)
            e = e.replace(lambda x: isinstance(x, FPrime), lambda x: x.as_elementwise())
            e = e.replace(lambda x: isinstance(x, (Softmax, Elementwise)), _explicit)
            return sp.ImmutableMatrix(e.doit()).evalf()
        forward = {}
        for node, e in self.forward:
            env[node] = forward[node.name] = ev(e)
        grads = {}
        for target, e in self.backward:
            value = ev(e)
            env[target] = value
            if not isinstance(target, AdjointMatrix):
                p = target.name[len("grad_"):]
                grads[p] = value / rows if self.reduction == "mean" else value
        to_np = lambda m: np.array(m.tolist(), dtype=float)
        return {"forward": {k: to_np(v) for k, v in forward.items()},
                "gradient": {p: to_np(grads[p]) for p in self.params}}

    def __repr__(self):
        return (f"<LayerDerivation {'-'.join(map(str, self.sizes))} "
                f"{'/'.join(f.__name__ for f in self.activation_list)} loss={self.loss_function.name}>")
