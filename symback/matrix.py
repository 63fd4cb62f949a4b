"""Matrix building blocks for graphs whose nodes are matrices.

Rows are samples: an input ``X`` is ``BATCH × d``.  Everything here is a
SymPy matrix expression, so SymPy's matrix calculus can differentiate it:

* ``ones(m)``: the m×1 column of ones (``ones(m) @ b`` broadcasts a bias row);
* ``hadamard(A, B)``: the element-wise product;
* ``sumsq(W)``: ‖W‖²_F, written as tr(Wᵀ W) so that SymPy knows its gradient;
* :class:`Softmax`: softmax applied to each row;
* :class:`RowCost`: a registered loss applied element by element and summed
  over each row, giving the m×1 column of per-sample costs;
* :class:`FPrime`: an activation's derivative applied element-wise, the form
  in which the engine names f'(Z);
* :class:`Elementwise`: a scalar formula of several matrices, entry by entry.

Nothing here states a derivative: FPrime and Elementwise only *hold* what
the engine obtained from SymPy.
"""
from __future__ import annotations

import functools

import sympy as sp
from sympy.matrices.expressions.applyfunc import ElementwiseApplyFunction

from .errors import DefinitionError
from .registry import LOSSES

__all__ = ["BATCH", "ENTRY", "ones", "hadamard", "sumsq", "Softmax", "RowNorm", "Select", "layer_norm", "MASKS", "SoftmaxVJP", "RowCost", "FPrime", "Elementwise",
           "elementwise", "is_matrix", "simplify_ones", "activation_of", "explicit"]

#: The batch size: the number of rows (samples) of every data matrix.
BATCH = sp.Symbol("m", positive=True, integer=True)
#: The variable of every element-wise Lambda, one for all so that equal
#: applications (tanh of the same matrix) are equal expressions.
ENTRY = sp.Dummy("w", real=True)


def is_matrix(e) -> bool:
    """Whether `e` is a SymPy matrix expression (a MatrixSymbol, product, ...)."""
    return isinstance(e, sp.MatrixExpr)


def ones(rows=BATCH, cols=1) -> sp.OneMatrix:
    """The rows×cols matrix of ones; ``ones(m) @ b`` repeats the row b on every sample."""
    return sp.OneMatrix(rows, cols)


def hadamard(*factors) -> sp.MatrixExpr:
    """The element-wise (Hadamard) product A ⊙ B of matrices of one shape."""
    numbers = [f for f in factors if not is_matrix(f)]
    if numbers:
        raise DefinitionError(f"hadamard takes matrices, got {numbers[0]!r}: "
                              "for numbers (a scalar graph) write the product a*b")
    shapes = {f.shape for f in factors}
    if len(shapes) != 1:
        raise DefinitionError(f"hadamard: the factors have different shapes {sorted(map(str, shapes))}")
    return sp.HadamardProduct(*factors)


def sumsq(W) -> sp.Expr:
    """‖W‖²_F, the sum of the squared entries of W (a weight-decay penalty)."""
    if not is_matrix(W):
        raise DefinitionError(f"sumsq takes a matrix, got {W!r}")
    return sp.Trace(W.T * W)


def elementwise(fn, arg) -> ElementwiseApplyFunction:
    """fn applied to every entry of the matrix `arg` (a 1×1 one too)."""
    if tuple(arg.shape) == (1, 1):
        # SymPy's constructor applies fn to a 1×1 matrix as a whole and keeps a matrix it gets back;
        # fn(M) of a symback function is elementwise(fn, M) again, so it never returned (the
        # RecursionError of one-sample networks with one output): build the node itself
        return sp.MatrixExpr.__new__(ElementwiseApplyFunction, sp.sympify(fn, strict=True), arg)
    return ElementwiseApplyFunction(fn, arg)


def activation_of(e):
    """(Activation class, its arguments after the first) when e is f(M) element-wise, else None."""
    if isinstance(e, ElementwiseApplyFunction):
        body = e.function.expr
        var = e.function.variables[0]
        if isinstance(body, sp.Function) and body.args and body.args[0] == var:
            return type(body), body.args[1:]
    return None


#: the masks softmax knows: name -> whether entry (i, j) is kept
MASKS = {"causal": lambda i, j: j <= i}


class Softmax(sp.MatrixExpr):
    """softmax applied to each row of a matrix: S_ik = exp(Z_ik) / Σ_j exp(Z_ij).

    ``Softmax(Z, "causal")`` masks the entries above the diagonal (j > i)
    first: they are left out of the row's sum and their S_ij is 0.
    """

    def __new__(cls, arg, mask=None):
        if not is_matrix(arg):
            raise DefinitionError(f"softmax takes a matrix (rows are samples), got {arg!r}")
        if mask is None:
            return super().__new__(cls, arg)
        mask = mask if isinstance(mask, sp.core.symbol.Str) else sp.core.symbol.Str(str(mask))
        if mask.name not in MASKS:
            raise DefinitionError(f"softmax: unknown mask {mask.name!r}; masks are {', '.join(MASKS)}")
        return super().__new__(cls, arg, mask)

    @property
    def arg(self):
        """The logits."""
        return self.args[0]

    @property
    def mask(self):
        """The mask's name ('causal'), or None."""
        return self.args[1].name if len(self.args) > 1 else None

    def kept(self, i: int, j: int) -> bool:
        """Whether entry (i, j) takes part (is not masked)."""
        return self.mask is None or MASKS[self.mask](i, j)

    @property
    def shape(self):
        return self.args[0].shape

    def rows(self, z) -> "sp.ImmutableMatrix":
        """The explicit softmax of an explicit matrix z, from the definition (masked entries 0)."""
        def entry(i, k):
            if not self.kept(i, k):
                return sp.S.Zero
            return sp.exp(z[i, k]) / sum(sp.exp(z[i, j]) for j in range(z.cols) if self.kept(i, j))
        return sp.ImmutableMatrix(z.rows, z.cols, entry)

    def _latex(self, printer, exp=None):
        name = r"\operatorname{softmax}" if self.mask is None else r"\operatorname{softmax}_{\text{%s}}" % self.mask
        return r"%s\left(%s\right)" % (name, printer._print(self.arg))


class RowCost(sp.MatrixExpr):
    """The per-sample cost column: C_i = Σ_k ℓ(Ŷ_ik, Y_ik) for a registered loss ℓ.

    ``RowCost(Str(loss name), Yhat, Y)`` has shape m × 1.
    """

    def __new__(cls, name, prediction, target):
        name = name if isinstance(name, sp.core.symbol.Str) else sp.core.symbol.Str(str(name))
        for what, e in (("prediction", prediction), ("target", target)):
            if not is_matrix(e):
                raise DefinitionError(f"loss {name.name!r}: the {what} must be a matrix "
                                      f"(rows are samples), got {e!r}")
        if prediction.shape != target.shape:
            raise DefinitionError(f"loss {name.name!r}: prediction {prediction} has shape "
                                  f"{prediction.shape} but target {target} has {target.shape}")
        return super().__new__(cls, name, prediction, target)

    @property
    def loss(self):
        """The LossFunction."""
        return LOSSES[self.args[0].name]

    @property
    def prediction(self):
        """Ŷ."""
        return self.args[1]

    @property
    def target(self):
        """Y."""
        return self.args[2]

    @property
    def shape(self):
        return (self.args[1].shape[0], sp.S.One)

    def _latex(self, printer, exp=None):
        return r"\operatorname{%s}\left(%s, %s\right)" % (
            self.args[0].name.replace("_", r"\_"), printer._print(self.prediction), printer._print(self.target))


class Select(sp.MatrixSymbol):
    """The n×w matrix E whose columns are the unit vectors e_{start}, …, e_{start+w−1}:
    A E is the block of A's columns start … start+w−1, A Eᵀ puts w columns back in place
    (zeros elsewhere).  A constant, not a graph name: SymPy's matrix calculus carries it
    like any matrix (δ of A E is δ Eᵀ), and compiled code slices and pads instead of
    multiplying.  Multi-head attention selects each head's columns with it.
    """

    @classmethod
    def of(cls, n: int, start: int, width: int) -> "Select":
        """The selection of columns start … start+width−1 out of n."""
        return cls(f"E_{start}_{start + width}_of_{n}", n, width)

    @property
    def span(self) -> tuple[int, int, int]:
        """(start, stop, n): the columns start … stop−1 of n."""
        rest = self.name[len("E_"):].split("_")
        return int(rest[0]), int(rest[1]), int(rest[3])

    def as_explicit(self):
        start, stop, n = self.span
        return sp.ImmutableMatrix(n, stop - start, lambda i, j: 1 if i == start + j else 0)

    def _latex(self, printer, exp=None):
        start, stop, _ = self.span
        return r"E_{%d:%d}" % (start + 1, stop)


class RowNorm(sp.MatrixExpr):
    """Each row of H standardised: Ĥ_ij = (H_ij − μ_i)/σ_i, with the row's mean μ_i and
    σ_i = √(var_i + ε) (the biased variance), layer norm before its scale and shift.

    ``RowNorm(H, eps)``; :meth:`definition` writes it as matrix operations, which the
    compiled code and the exact evaluation use; its VJP is the closed form of
    :func:`symback.vjp.rownorm_vjp`, proved equal to the derivative of this definition.
    """

    def __new__(cls, arg, eps=sp.Rational(1, 10**5)):
        if not is_matrix(arg):
            raise DefinitionError(f"layer_norm takes a matrix (a row per position), got {arg!r}")
        eps = sp.nsimplify(eps) if not isinstance(eps, sp.Basic) else eps
        if not (eps.is_number and eps.is_nonnegative):
            raise DefinitionError(f"layer_norm: eps must be a number >= 0, got {eps}")
        return super().__new__(cls, arg, eps)

    @property
    def arg(self):
        """H."""
        return self.args[0]

    @property
    def eps(self):
        """ε, added to the variance."""
        return self.args[1]

    @property
    def shape(self):
        return self.args[0].shape

    def rstd(self):
        """The T×1 column 1/σ = 1/√(var + ε), as matrix operations on H."""
        H, d = self.arg, self.shape[1]
        one = sp.OneMatrix(d, 1)
        centred = sp.MatAdd(H, -sp.MatMul(H, one, one.T) / d)
        var = sp.MatMul(sp.HadamardProduct(centred, centred), one) / d
        # the one shared entry variable: equal definitions are equal expressions (shared code)
        return elementwise(sp.Lambda(ENTRY, 1 / sp.sqrt(ENTRY + self.eps)), var), centred

    def definition(self):
        """Ĥ = (H − μ𝟏ᵀ) ⊙ (σ⁻¹ 𝟏ᵀ), as matrix operations."""
        return _rownorm_definition(self)

    def _latex(self, printer, exp=None):
        return r"\operatorname{norm}\left(%s\right)" % printer._print(self.arg)


@functools.lru_cache(maxsize=256)
def _rownorm_definition(N: RowNorm):
    # built once per node: every numeric evaluation of the forward pass asks for it
    r, centred = N.rstd()
    return sp.HadamardProduct(centred, sp.MatMul(r, sp.OneMatrix(1, N.shape[1])))


def layer_norm(H, gamma, beta, eps=sp.Rational(1, 10**5)):
    """Layer normalisation of each row of H: norm(H) ⊙ 𝟏γ + 𝟏β with norm(H)'s rows standardised
    (mean 0, biased variance 1, ε added to the variance); γ, β are 1×d rows."""
    for what, v in (("gamma", gamma), ("beta", beta)):
        if not is_matrix(v) or tuple(v.shape) != (1, H.shape[1]):
            raise DefinitionError(f"layer_norm: {what} must be a 1×{H.shape[1]} matrix, got {v!r}")
    rows = sp.OneMatrix(H.shape[0], 1)
    return sp.MatAdd(sp.HadamardProduct(RowNorm(H, eps), sp.MatMul(rows, gamma)), sp.MatMul(rows, beta))


class SoftmaxVJP(sp.MatrixExpr):
    """δ_Z for S = softmax(Z) row by row: entry (i, j) = Σ_k δ_ik ∂S_ik/∂Z_ij.

    ``SoftmaxVJP(δ_S, Z)``; the partial derivatives are SymPy's, taken of
    softmax's definition entry by entry (see :meth:`explicit_rows`).  Compiled
    code never needs it: softmax feeding cross-entropy is fused (Ŷ − Y).
    """

    @property
    def shape(self):
        return self.args[1].shape

    def entries(self, delta_rows, z_rows):
        """The explicit matrix for explicit δ and Z (lists of rows)."""
        out = []
        for d, z in zip(delta_rows, z_rows):
            zs = sp.symbols(f"z0:{len(z)}", real=True)
            s = [sp.exp(v) / sum(sp.exp(u) for u in zs) for v in zs]
            at = dict(zip(zs, z))
            out.append([sum(d[k] * sp.diff(s[k], zs[j]).xreplace(at) for k in range(len(z)))
                        for j in range(len(z))])
        return sp.ImmutableMatrix(out)

    def _latex(self, printer, exp=None):
        return r"\left(%s\right) J_{\operatorname{softmax}}(%s)" % (
            printer._print(self.args[0]), printer._print(self.args[1]))


class FPrime(sp.MatrixExpr):
    """f'(Z): the derivative of an activation applied element-wise to a matrix.

    ``FPrime(Lambda(w, f(w, ...)), Z)`` holds the activation as it was
    applied; :meth:`as_elementwise` gives the derivative SymPy derives.
    """

    def __new__(cls, function, arg):
        return super().__new__(cls, function, arg)

    @property
    def function(self) -> sp.Lambda:
        """The activation as a Lambda of one variable."""
        return self.args[0]

    @property
    def activation(self):
        """The Activation class."""
        return type(self.args[0].expr)

    @property
    def arg(self):
        """The matrix the derivative is applied to."""
        return self.args[1]

    @property
    def shape(self):
        return self.args[1].shape

    def scalar(self, z) -> sp.Expr:
        """f'(z) for a scalar z, as SymPy derives it (compact form)."""
        return sp.diff(self.function(z), z) if not isinstance(z, sp.Symbol) else \
            sp.diff(self.function.expr, self.function.variables[0]).xreplace({self.function.variables[0]: z})

    def as_elementwise(self) -> ElementwiseApplyFunction:
        """The equivalent element-wise application of f'."""
        w = sp.Dummy("w", real=True)
        return elementwise(sp.Lambda(w, self.scalar(w)), self.arg)

    def _latex(self, printer, exp=None):
        return r"%s'\left(%s\right)" % (self.activation.latex_name, printer._print(self.arg))


class Elementwise(sp.MatrixExpr):
    """A scalar formula of several matrices applied entry by entry.

    ``Elementwise(Lambda((a, y), expr), A, Y)``: entry (i, k) is
    expr(A_ik, Y_ik).  All operands have one shape.
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
        return r"\left[%s\right]_{\odot}" % printer._print(self.function.expr.xreplace(subs))


def _ones_coeff(e):
    """(c, True) when e is c times a matrix of ones, else (None, False)."""
    if isinstance(e, sp.OneMatrix):
        return sp.S.One, True
    if isinstance(e, sp.MatMul):
        coeff, mats = e.as_coeff_matrices()
        if len(mats) == 1 and isinstance(mats[0], sp.OneMatrix):
            return coeff, True
    return None, False


def simplify_ones(expr):
    """Fold products of all-ones matrices: 1ₘₓₙ 1ₙₓₖ = n·1ₘₓₖ and (c·1) ⊙ A = c·A.

    The batch loss's adjoint δ_C = (1/m)·1 spreads over the outputs as such
    products; folding them leaves the formula a reader (and NumPy) expects.
    """
    def matmul(e):
        e = e.doit(deep=False)          # flatten nested products, pull the scalars out
        if not isinstance(e, sp.MatMul):
            return e
        coeff, mats = e.as_coeff_matrices()
        out = []
        for M in mats:
            if out and isinstance(M, sp.OneMatrix) and isinstance(out[-1], sp.OneMatrix):
                coeff *= M.shape[0]
                out[-1] = sp.OneMatrix(out[-1].shape[0], M.shape[1])
            else:
                out.append(M)
        return coeff * (out[0] if len(out) == 1 else sp.MatMul(*out)) if coeff != 1 else (
            out[0] if len(out) == 1 else sp.MatMul(*out))

    def hadamard(e):
        coeff, rest = sp.S.One, []
        for a in e.args:
            c, is_ones = _ones_coeff(a)
            if is_ones:
                coeff *= c
            else:
                rest.append(a)
        if not rest:
            return coeff * sp.OneMatrix(*e.shape)
        body = rest[0] if len(rest) == 1 else sp.HadamardProduct(*rest)
        return body if coeff == 1 else coeff * body

    if not isinstance(expr, sp.Basic) or not expr.has(sp.OneMatrix):
        return expr
    expr = expr.replace(lambda e: isinstance(e, sp.MatMul), matmul)
    return expr.replace(lambda e: isinstance(e, sp.HadamardProduct), hadamard)


def explicit(e, rows: int):
    """An explicit ImmutableMatrix for a matrix expression of explicit matrices.

    Substitutes ``rows`` for the batch size and writes out symback's own
    matrix classes entry by entry (for exact evaluation and checking).
    """
    e = e.subs(BATCH, rows) if e.has(BATCH) else e
    # SymPy leaves 1·M unevaluated when 1 is a OneMatrix: write the constants out
    e = e.replace(lambda x: isinstance(x, (sp.OneMatrix, sp.ZeroMatrix, sp.Identity, Select))
                  and all(d.is_Integer for d in x.shape), lambda x: x.as_explicit())

    def out(x):
        if isinstance(x, Softmax):
            return x.rows(sp.ImmutableMatrix(x.arg.doit()))
        if isinstance(x, RowCost):
            a, y = sp.ImmutableMatrix(x.prediction.doit()), sp.ImmutableMatrix(x.target.doit())
            return sp.ImmutableMatrix(a.rows, 1, lambda i, _: sum(x.loss(a[i, k], y[i, k]) for k in range(a.cols)))
        if isinstance(x, FPrime):      # entry by entry (a 1×1 f'(Z) would apply f' to the matrix itself)
            w = sp.Dummy("w", real=True)
            fw = x.scalar(w)
            return sp.ImmutableMatrix(x.arg.doit()).applyfunc(lambda v: fw.xreplace({w: v}))
        if isinstance(x, RowNorm):
            return explicit(x.definition(), rows)
        if isinstance(x, SoftmaxVJP):
            return x.entries(sp.ImmutableMatrix(x.args[0]).tolist(), sp.ImmutableMatrix(x.args[1]).tolist())
        if hasattr(x, "explicit_value"):    # a kind defined entry by entry (symback.image)
            return x.explicit_value(*[sp.ImmutableMatrix(a.doit()) for a in x.args if is_matrix(a)])
        if isinstance(x, Elementwise):
            ops = [sp.ImmutableMatrix(o.doit()) for o in x.operands]
            return sp.ImmutableMatrix(ops[0].rows, ops[0].cols, lambda i, k: x.function(*[o[i, k] for o in ops]))
        return None

    e = e.replace(lambda x: isinstance(x, (Softmax, RowCost, FPrime, Elementwise, SoftmaxVJP, RowNorm))
                  or hasattr(x, "explicit_value"),
                  lambda x: out(x.func(*[explicit(a, rows) if is_matrix(a) else a for a in x.args])))
    r = e.doit()
    return sp.ImmutableMatrix(r) if is_matrix(r) or isinstance(r, sp.MatrixBase) else r
