"""The NumPy printer: symback's formulas as NumPy source text.

:class:`NumpyPrinter` is SymPy's ``NumPyPrinter`` taught symback's
functions and faster idioms; it prints one scalar formula (whose symbols
may stand for whole arrays: NumPy broadcasting does the element-wise part)
and, through its ``op_*`` methods, the few operations that are not
element-wise (matrix product, sums over rows or columns, slices).
:class:`~symback.printing.inplace.InPlace` prints an element-wise formula
as ufunc calls that write into buffers nothing else reads any more.

A JAX or PyTorch printer is a subclass: it sets ``prefix`` (the module
the generated code calls, ``jnp`` or ``torch``), ``inplace = False`` where
arrays are immutable, and overrides the ``op_*`` methods that differ.
"""
from __future__ import annotations

import sympy as sp
from sympy.printing.numpy import NumPyPrinter

from ..functions import Activation, sigmoid
from . import image

__all__ = ["NumpyPrinter", "lower", "relu_arg_of", "mask_of"]


def lower(expr: sp.Expr, keep=()) -> sp.Expr:
    """Replace every activation by its overflow-safe ``stable`` form, else its definition.

    Done before CSE, so that repeated pieces (|z| in softplus) are computed once.
    ``keep``: activation classes left as they are, because the printer has the
    library's own function for them (a printer's ``native``).
    """
    def rule(e):
        cls = type(e)
        if cls.stable is not None and len(e.args) == 1:
            return cls.stable(*e.args)
        return cls.definition(*e.args)

    def lowered(e):
        return isinstance(e, Activation) and type(e) not in keep

    while any(type(a) not in keep for a in expr.atoms(Activation)):
        expr = expr.replace(lowered, rule)
    return expr


#: σ(z) = 1/(1 + e⁻ᶻ) as ufunc steps on one buffer, in order (ufunc, its other operands):
#: the module's ``_sigmoid`` runs them on a fresh buffer, the in-place printer inline on a
#: buffer of its own (no call: a 2-4-1 step's two σ cost 0.7 µs less of 19 µs)
SIGMOID_STEPS = (("negative", ""), ("minimum", ", _EXP_MAX"), ("exp", ""), ("add", ", 1.0"), ("reciprocal", ""))


class NumpyPrinter(NumPyPrinter):
    """SymPy's NumPy printer, taught symback's functions and faster idioms.

    Activations print through their overflow-safe ``stable`` form when they
    have one, else through their definition; a two-branch Piecewise prints
    as ``np.where`` (``np.maximum`` for a ReLU); ``Max`` as ``np.maximum``;
    ``log(1 + x)`` as ``np.log1p``; ``x**-1`` as a division.  Numbers in
    all-constant branches are cast to ``DTYPE`` so float32 code stays float32.
    """

    #: the name the generated module imports its array library as
    prefix = "np"
    #: whether generated code may overwrite buffers (False for immutable arrays)
    inplace = True
    #: the library's name in the generated module's docstring
    library = "NumPy"
    #: the library's array type and how the module makes one of DTYPE from anything
    array_type, convert = "np.ndarray", "np.asarray(a, dtype=DTYPE)"
    #: how the module's glue wraps each printed function (jax.jit, torch.no_grad()); "" leaves it
    wrap = ""
    #: helpers only this library's functions call (NumPy: the cached row of ones)
    extra_helpers = '''

_ONES = {}


def _ones(m):
    """A cached row of m ones: 1^T D sums D over the samples in one BLAS call."""
    ones = _ONES.get(m)
    if ones is None:
        ones = _ONES[m] = np.ones(m, dtype=DTYPE)
    return ones


def _mm(a, b):
    """(m, r, q) @ (q, c) as one (m·r)×q GEMM (NumPy would loop over the m samples)."""
    return (a.reshape(-1, a.shape[-1]) @ b).reshape(a.shape[:-1] + (b.shape[-1],))


#: e^u is finite in DTYPE up to this u (709.782 in float64, 88.722 in float32; rounded down
#: so that it stays below the limit in either dtype)
_EXP_MAX = float(np.floor(1000 * np.log(np.finfo(DTYPE).max)) / 1000)


def _sigmoid(z):
    """σ(z) = 1/(1 + e⁻ᶻ), its definition: exact in both tails (σ(−40) = 4.2e−18), which the
    overflow-free (1 + tanh(z/2))/2 is not (1 + tanh cancels to 0 below z ≈ −37).  The exponent
    is clipped at _EXP_MAX so e⁻ᶻ cannot overflow: below z = −709.782 σ is then 5.6e−309, the
    smallest value 1/(1 + e^u) reaches, where torch and JAX give 0 (the true σ is smaller
    still).  Clipping costs one cheap pass; np.errstate would cost more on small arrays.
    Where σ's argument is a buffer of its own, these steps (SIGMOID_STEPS) are printed inline."""
    t = np.negative(z)
    if not isinstance(t, np.ndarray):       # a number or a 0-d array
        return 1 / (1 + np.exp(np.minimum(t, _EXP_MAX)))
''' + ''.join(
    f"    np.{fn}(t{extra}, out=t)\n" for fn, extra in SIGMOID_STEPS[1:]) + '''    return t
'''
    extra_helpers += image.NUMPY
    #: ``_apply_step(X, Y, params, lr)``: one step that leaves the new values in params
    apply_step = "_apply_step = _step"
    #: activation class -> the library function that computes it (the class is then not
    #: lowered to its definition before CSE; see :func:`lower`): NumPy's σ is the module's
    #: ``_sigmoid`` above, its definition printed to keep σ's tails
    native: dict = {sigmoid: "_sigmoid"}
    #: activation class -> its ufunc steps on one buffer, printed inline by the in-place printer
    steps: dict = {sigmoid: SIGMOID_STEPS}
    #: the fused kernels this library has (names of :data:`symback.kernels.KERNELS`): the
    #: lowering emits them where the derived expression is what they compute
    kernels: frozenset = frozenset()
    #: the symbols that stand for arrays in the function being printed (set by
    #: :func:`symback.straightline.build_function`; the rest are numbers)
    arrays: frozenset = frozenset()
    #: symbol -> the name it is printed under in the function being printed, where that is not
    #: its own (a value computed in the buffer of another: set by build_function)
    names: dict = {}
    #: whether a step updates a parameter in place (``W -= g``; :func:`symback.passes.fuse_updates`)
    updates_in_place = True
    #: whether 1ᵀ D multiplies a cached row of ones (:func:`symback.passes.shared_ones`)
    ones_row = True
    #: a temporary deleted after its last use (symback.straightline's ``frees``): its memory
    #: is reused while the allocator holds it (a transformer block's step: 14,500 → 5,300 minor
    #: page faults, 62 → 40 ms, same process)
    frees = True

    def helpers(self) -> str:
        """The module's helpers: ``_asarray``, ``_is_native`` and the library's own."""
        return f'''

def _asarray(a):
    """a as an array of DTYPE (as it is when it already is one)."""
    return a if isinstance(a, {self.array_type}) and a.dtype == DTYPE else {self.convert}


def _is_native(a):
    """Whether a is already an array of this module's library and DTYPE, samples on axis 0."""
    return isinstance(a, {self.array_type}) and a.ndim == NDIM and a.dtype == DTYPE
''' + self.extra_helpers

    def off_cpu(self):
        """The printer of a function for data off the CPU where this one prints kernels a
        library has for the CPU alone (torch's attention); None: this code runs on any device."""
        return None

    def glue(self) -> str:
        """The text after the printed functions: how the library runs them, and ``_apply_step``."""
        functions = ("_predict", "_loss", "_grad", "_step", "_vjp", "_vjp_forward", "_vjp_backward")
        wrapped = [f"{f} = {self.wrap}({f})" for f in functions] if self.wrap else []
        return "\n" + "\n".join(wrapped + ["", "", self.apply_step] if wrapped else [self.apply_step]) + "\n"

    def imports(self, dtype: str) -> str:
        """The module's imports besides NumPy (which every generated module uses for init and checks)."""
        return ""

    def dtype_code(self, dtype: str) -> str:
        """The module's ``DTYPE`` value for 'float64' or 'float32'."""
        return f"np.{dtype}"

    def __init__(self, settings=None):
        super().__init__({"fully_qualified_modules": True, **(settings or {})})

    def _module_format(self, fqn, register=True):
        s = super()._module_format(fqn, register)
        return f"{self.prefix}." + s[len("numpy."):] if s.startswith("numpy.") else s

    def _print(self, expr, **kwargs):
        # A constant such as sqrt(2)/sqrt(pi) as its double, a Python float: NumPy's own
        # scalars (np.sqrt(2)) are float64 and, since NumPy 2 (NEP 50), turn a float32 array
        # they multiply into a float64 one; a Python float takes the array's dtype (torch's
        # functions, besides, take tensors only)
        if isinstance(expr, sp.Expr) and expr.is_number and not expr.is_Number and expr.is_real \
                and expr.is_finite:
            return repr(float(expr))
        # Dispatch on the base class first: an activation's class name (tanh)
        # can shadow a SymPy printer method of the same name.
        if isinstance(expr, Activation):
            return self._print_Activation(expr)
        return super()._print(expr, **kwargs)

    def _print_Symbol(self, expr):
        name = self.names.get(expr)
        return name if name is not None else super()._print_Symbol(expr)

    def _print_Activation(self, expr):
        # Normally lowered before CSE (see `lower`), unless the library has it (`native`)
        fn = self.native.get(type(expr))
        if fn is not None and len(expr.args) == 1:       # a name, or a call with a {} for the argument
            arg = self._print(expr.args[0])
            return fn.format(arg) if "{}" in fn else f"{fn}({arg})"
        return f"({self._print(lower(expr))})"

    def _print_Piecewise(self, expr):
        pieces = list(expr.args)
        if pieces[-1].cond != sp.true:
            return super()._print_Piecewise(expr)
        relu_arg = relu_arg_of(expr)
        if relu_arg is not None:
            return self.op_maximum(self._print(relu_arg), "0")
        constant = all(p.expr.is_Number for p in pieces)
        val = (lambda v: self.op_const(self._print(v))) if constant else self._print
        out = val(pieces[-1].expr)
        for p in reversed(pieces[:-1]):
            out = f"{self.prefix}.where({self._print(p.cond)}, {val(p.expr)}, {out})"
        return out

    def _print_Relational(self, expr):
        op = {"==": "==", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}.get(expr.rel_op)
        if op is None:
            return super()._print_Relational(expr)
        return f"({self._print(expr.lhs)} {op} {self._print(expr.rhs)})"

    def _print_And(self, expr):
        # nested two at a time: SymPy's `logical_and.reduce((a, b))` is NumPy-only (JAX refuses
        # a tuple, found by the random scalar graphs on JAX: huber of a ReLU's ITE condition)
        return self._nested(f"{self.prefix}.logical_and", expr.args)

    def _print_Or(self, expr):
        return self._nested(f"{self.prefix}.logical_or", expr.args)

    def _print_Max(self, expr):
        return self._nested(f"{self.prefix}.maximum", expr.args)

    def _print_Min(self, expr):
        return self._nested(f"{self.prefix}.minimum", expr.args)

    def _nested(self, fn, args):
        out = self._print(args[0])
        for a in args[1:]:
            out = f"{fn}({out}, {self._print(a)})"
        return out

    def _print_log(self, expr):
        arg = expr.args[0]
        if isinstance(arg, sp.Add) and sp.S.One in arg.args:
            return f"{self.prefix}.log1p({self._print(arg - 1)})"
        return f"{self.prefix}.log({self._print(arg)})"

    def _print_Pow(self, expr, rational=False):
        if expr.exp == -1:
            return f"1/{self.parenthesize(expr.base, sp.printing.precedence.PRECEDENCE['Pow'])}"
        return super()._print_Pow(expr, rational=rational)

    def _print_Mul(self, expr):
        # Immutable arrays: m ⊙ D with m a 0/1 mask (ReLU') is where(c, D, 0), one pass, not two
        if not self.inplace:
            for f in expr.args:
                cond = mask_of(f)
                if cond is not None:
                    other = sp.Mul(*[a for a in expr.args if a is not f])
                    rest = self._print(other)
                    if not other.free_symbols & self.arrays:    # a number: the module's dtype (torch's
                        rest = self.op_const(rest)              # where of two numbers is float32)
                    return f"{self.prefix}.where({self._print(cond)}, {rest}, 0)"
        return super()._print_Mul(expr)

    # -- the operations that are not element-wise; a, b are printed operands ----------
    def op_const(self, c: str) -> str:
        """A number of the module's dtype (a branch of an all-constant ``where``)."""
        return f"DTYPE({c})"

    def op_maximum(self, a: str, c: str) -> str:
        """max(a, c) entry by entry for a number c (ReLU)."""
        return f"{self.prefix}.maximum({a}, {c})"

    def op_update(self, target: str, g: str) -> str:
        """The line of a step that moves a parameter by −g (in place here)."""
        return f"{target} -= {g}"

    def op_matmul(self, a: str, b: str) -> str:
        """The matrix product a b."""
        return f"{a} @ {b}"

    def op_product(self, a: str, b: str, ta: bool = False, tb: bool = False) -> str:
        """The product of a (aᵀ when ta) and b (bᵀ when tb)."""
        return self.op_matmul(self.op_transpose(a) if ta else a, self.op_transpose(b) if tb else b)

    def op_transpose(self, a: str) -> str:
        """aᵀ (a view in NumPy)."""
        return f"{a}.T"

    def op_colsum(self, a: str, ones: str = "") -> str:
        """1ᵀ a: the 1×k row of column sums; a BLAS product with a cached row of ones (``ones``
        when the function fetched it once: :func:`symback.passes.shared_ones`)."""
        return f"{ones or '_ones(m)'} @ {a}"

    def op_ones(self) -> str:
        """The cached row of m ones, fetched once for a function's several 1ᵀ D."""
        return "_ones(m)"

    def op_addmm(self, c: str, pairs: list) -> str:
        """c + Σ aᵢ bᵢ (c "" for none; aᵢ, bᵢ printed operands, transposes applied): a
        library with the fused GEMM (``addmm``) prints it as a chain of them."""
        return " + ".join(([c] if c else []) + [self.op_matmul(a, b) for a, b in pairs])

    def op_baddmm(self, c: str, a: str, w: str) -> str:
        """c + a w for a batch of samples a times a parameter w."""
        return f"{c} + _mm({a}, {w})"

    def op_update_addmm(self, target: str, a: str, b: str) -> str:
        """A step's ``target -= a b``."""
        return self.op_update(target, self.op_matmul(a, b))

    def op_rowsum(self, a: str) -> str:
        """a 1: the m×1 column of row sums."""
        return f"{a}.sum(axis=1, keepdims=True)"

    def op_rowmax(self, a: str) -> str:
        """The m×1 column of row maxima (the shift that keeps exp from overflowing)."""
        return f"{a}.max(axis=1, keepdims=True)"

    def op_sum(self, a: str) -> str:
        """The sum of every entry."""
        return f"{self.prefix}.sum({a})"

    def op_mean(self, a: str) -> str:
        """The mean of every entry (a scalar graph's batch mean)."""
        return f"{self.prefix}.mean({a})"

    def op_vdot(self, a: str, b: str) -> str:
        """Σ a ⊙ b over every entry, as one dot product."""
        return f"{self.prefix}.vdot({a}, {b})"

    def op_trace(self, a: str) -> str:
        """tr(a)."""
        return f"{self.prefix}.trace({a})"

    def op_slice(self, a: str, rows, cols, batch: str = "") -> str:
        """a[rows, cols] for (start, stop, step) triples (after ``batch``, the leading axes'
        indices); a view in NumPy."""
        def one(s):
            start, stop, step = s
            text = f"{'' if start == 0 else start}:{'' if stop is None else stop}"
            return text + (f":{step}" if step != 1 else "")
        return f"{a}[{batch}{one(rows)}, {one(cols)}]"

    def op_column(self, a: str, j: int) -> str:
        """Column j of a (a scalar graph's input or target)."""
        return f"{a}[:, {j}]"

    # -- one sample's graph over a batch: values carry the batch on a leading axis ----------
    def op_bproduct(self, a: str, b: str, ta: bool, tb: bool, ba: bool, bb: bool) -> str:
        """a b per sample (aᵀ, bᵀ when ta, tb); a batch times a shared matrix is one GEMM
        over every sample's rows (the module's ``_mm``)."""
        a = (self.op_btranspose(a) if ba else self.op_transpose(a)) if ta else a
        b = (self.op_btranspose(b) if bb else self.op_transpose(b)) if tb else b
        if ba and not bb:
            return f"_mm({a}, {b})"
        return f"{self.prefix}.matmul({a}, {b})"

    def op_bgemm(self, a: str, b: str, ta: bool, tb: bool, p, r) -> str:
        """Σ over the samples of aᵢ bᵢ (a p×q, b q×r per sample; aᵀ, bᵀ when ta, tb): one
        GEMM that contracts every sample's q rows at once."""
        a2 = f"{a if ta else self.op_btranspose(a)}.reshape(-1, {p})"
        b2 = f"{self.op_btranspose(b) if tb else b}.reshape(-1, {r})"
        return self.op_product(a2, b2, True, False)

    def op_btranspose(self, a: str) -> str:
        """Each sample's aᵀ."""
        return f"{self.prefix}.swapaxes({a}, -1, -2)"

    def op_bsum(self, a: str) -> str:
        """The sum over the samples (the leading axis)."""
        return f"{a}.sum(axis=0)"

    def op_bssum(self, a: str) -> str:
        """Each sample's sum of entries, kept as (m, 1, 1)."""
        return f"{a}.sum(axis=(-2, -1), keepdims=True)"

    def op_browsum(self, a: str) -> str:
        """Each sample's row sums."""
        return f"{a}.sum(axis=-1, keepdims=True)"

    def op_browmax(self, a: str) -> str:
        """Each sample's row maxima."""
        return f"{a}.max(axis=-1, keepdims=True)"

    def op_bcolsum(self, a: str) -> str:
        """Each sample's column sums, kept as (m, 1, k)."""
        return f"{a}.sum(axis=-2, keepdims=True)"

    def op_bsum_all(self, a: str) -> str:
        """The sum of every entry of every sample."""
        return f"{self.prefix}.sum({a})"

    def op_bmean(self, a: str) -> str:
        """The mean over the samples of a per-sample value (m, 1, 1)."""
        return f"{self.prefix}.mean({a})"

    def op_btrace(self, a: str) -> str:
        """Each sample's trace, as (m, 1, 1)."""
        return f"{self.prefix}.einsum('nii->n', {a})[:, None, None]"

    def op_image(self, op: str, args: list, geometry) -> str:
        """An image map of :mod:`symback.image` on a batch of samples: the module's helper."""
        return image.call(op, args, geometry)

    def op_bslice(self, a: str, rows, cols) -> str:
        """Each sample's a[rows, cols]."""
        return self.op_slice(a, rows, cols, batch=":, ")

    def op_pad(self, a: str, axis: int, before: int, after: int) -> str:
        """a with `before` and `after` zeros added along `axis` (−1 columns, −2 rows): a block
        put back in place (the adjoint of a slice)."""
        widths = "((0, 0), (%d, %d))" % (before, after) if axis == -1 else "((%d, %d), (0, 0))" % (before, after)
        return f"{self.prefix}.pad({a}, ((0, 0),) * ({a}.ndim - 2) + {widths})"

    def op_concat(self, parts: list, axis: int) -> str:
        """The blocks joined along `axis` (−1 columns, −2 rows), in order."""
        return f"{self.prefix}.concatenate([{', '.join(parts)}], axis={axis})"

    def op_mask(self, a: str, kind: str, rows, cols) -> str:
        """a with the masked entries (causal: above the diagonal) set to −∞."""
        return f"{self.prefix}.where({self.prefix}.tri({rows}, {cols}, dtype=bool), {a}, -{self.prefix}.inf)"

    def op_full(self, a: str, shape: str) -> str:
        """a broadcast to `shape` as a fresh array (a value that does not depend on the sample)."""
        return f"{self.prefix}.full({shape}, {a}, dtype=DTYPE)"

    def op_hstack(self, parts: list) -> str:
        """The matrices side by side (columns), in order."""
        return f"{self.prefix}.concatenate([{', '.join(parts)}], axis=1)"


def relu_arg_of(pw: sp.Piecewise):
    """z when pw is ReLU(z) written as Piecewise((0, z < 0), (z, True)) (or with ≤)."""
    if len(pw.args) != 2:
        return None
    (e0, c0), (e1, _) = pw.args
    if e0 == 0 and isinstance(c0, (sp.StrictLessThan, sp.LessThan)) and c0.rhs == 0 and c0.lhs == e1:
        return e1
    return None


def mask_of(e):
    """The boolean condition c when e is Piecewise((0, not c), (1, True)) or ((1, c), (0, True))."""
    if not isinstance(e, sp.Piecewise) or len(e.args) != 2 or e.args[1].cond != sp.true:
        return None
    (v0, c0), (v1, _) = e.args
    if (v0, v1) == (0, 1):
        return c0.negated if isinstance(c0, sp.core.relational.Relational) else None
    if (v0, v1) == (1, 0):
        return c0
    return None
