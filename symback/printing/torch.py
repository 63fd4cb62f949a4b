"""The PyTorch printer: the NumPy printer's formulas as ``torch`` tensor calls.

Element-wise formulas print as whole expressions (``inplace = False``;
torch's ``out=`` functions do not take the Python numbers the NumPy
printer's in-place forms pass them), while a step still updates the
parameter tensors in place (``W -= g``, under ``torch.no_grad``).  Torch
spells a few reductions differently (``dim``, ``keepdim``, ``amax``) and
its ``maximum``/``where`` want tensors, so numbers become ``clamp`` bounds
and typed scalars.  Printing needs no PyTorch: this module is text only.
"""
from __future__ import annotations

import copy

import sympy as sp
from sympy.printing.precedence import precedence

from ..functions import gelu, sigmoid
from ..kernels import KERNELS, KernelPrime
from . import image
from .numpy import NumpyPrinter, mask_of

__all__ = ["TorchPrinter"]


class TorchPrinter(NumpyPrinter):
    """:class:`~symback.printing.numpy.NumpyPrinter` for ``torch`` tensors."""

    prefix = "torch"
    inplace = False
    library = "PyTorch"
    array_type, convert = "torch.Tensor", "torch.as_tensor(a, dtype=DTYPE)"
    #: the derived formulas are the backward pass: torch's autograd records nothing
    wrap = "torch.no_grad()"
    extra_helpers = '''

#: the largest number of DTYPE below 0: z > _BELOW_ZERO is z >= 0 (a mask's threshold)
_BELOW_ZERO = torch.nextafter(torch.zeros((), dtype=DTYPE), -torch.ones((), dtype=DTYPE)).item()
'''
    extra_helpers += image.TORCH
    #: convolutions' derived products by torch's convolution kernels (see straightline.convolutions)
    conv_kernels = True
    #: a convolution's bias added by the convolution kernel, its δ one reduction (symback.convkernels)
    conv_bias = True
    #: a convolution's two backward products of one δ by one kernel call (symback.convkernels)
    conv_grads = True
    #: max-pooling's δ routed by the indices of the forward's pooling kernel, and ReLU's mask
    #: read at them (symback.poolkernels)
    pool_indices = pool_masks = True
    #: σ by torch's own kernel: one pass (the NumPy printer's overflow-safe (1 + tanh(z/2))/2
    #: is four, and torch's float64 tanh is slow); torch.sigmoid does not overflow either
    native = {sigmoid: "torch.sigmoid", gelu: "torch.nn.functional.gelu({}, approximate='tanh')"}
    #: torch's fused kernels for derived expressions (symback.kernels): GELU's derivative as
    #: ``gelu_backward``, softmax rows as ``torch.softmax`` and their closed-form VJP as
    #: ``_softmax_backward_data``, attention's scaled and masked scores as ``baddbmm``, sums of
    #: products as ``addmm``; autograd runs the same kernels.  Not ``heads`` (attention's heads
    #: at once, symback.heads) unless asked: on a CPU its (n, heads, T, T) scores cost more
    #: than the head-by-head calls they save (a T = 64, 4-head block's step 1.27–1.38× torch
    #: autograd's grouped, 1.09–1.22× head by head, float64 and float32, one thread): each is
    #: a fresh allocation past the cache, where one head's scores stay in it.  Multi-head
    #: attention's forward and backward (causal or not) by the fused attention kernels
    #: (``flash_attention``, symback.flash, heads grouped for them alone), with γ, β in the
    #: layer-norm kernels (``layer_norm_affine``, symback.affine_norm): the T = 64, 4-head
    #: block's step 0.98× (float64 and float32) this printer's with ``flash=False``, one thread,
    #: same-process interleaved, 0.94 / 0.95× torch autograd (0.69–0.95× before temporaries
    #: were freed after their last use: benchmarks/README.md).  Torch has the attention kernel
    #: for the CPU alone, so it was opt-in (its call sent Q, K, V to the CPU and back on another
    #: device); it is on by default
    #: now that a function it changes is printed twice (see :meth:`off_cpu`), with the kernel
    #: for data on the CPU and head by head for any other device (where that code stays on the
    #: device), the public name choosing by X's device at run time (:meth:`dispatch`): nothing
    #: is ever copied to the CPU.  ``flash=False`` prints the head-by-head code alone
    kernels = frozenset(KERNELS) - {"heads"}
    #: 1ᵀ D is torch's column sum (no cached row of ones)
    ones_row = False
    #: a temporary deleted after its last use (symback.straightline's ``frees``), as autograd
    #: frees a saved tensor once its backward has run (a transformer block's step 0.81–0.92×,
    #: LeNet's 0.91–0.93× of the code without, same process)
    frees = True
    #: an activation's derivative marker -> its kernel, called with (g, z): g ⊙ f'(z)
    prime_kernels = {gelu: "torch.ops.aten.gelu_backward({}, {}, approximate='tanh')"}
    apply_step = '''def _apply_step(X, Y, params, lr):
    """One step; the parameter tensors are updated in place."""
    return _step(X, Y, params, lr)[0]'''

    def __init__(self, settings=None, kernels: bool = True, heads: bool = False, flash: bool = True):
        """``kernels=False``: no fused kernel (symback.kernels), every derived expression
        printed as its own element-wise formula (what the kernels are tested against);
        ``heads=True``: attention's heads computed all at once (symback.heads);
        ``flash=False``: causal multi-head attention head by head on every device, never by
        torch's fused CPU attention kernels (symback.flash), which by default compute it
        where the data are on the CPU (:meth:`off_cpu`)."""
        super().__init__(settings)
        if heads and kernels:
            self.kernels = self.kernels | {"heads"}
        if not flash:
            self.kernels = self.kernels - {"flash_attention"}
        if not kernels:     # (products summed by addmm stay: they are no element-wise formula)
            self.kernels = frozenset({"addmm"})
            self.native = {k: v for k, v in self.native.items() if k not in self.prime_kernels}

    def off_cpu(self):
        """The printer of a function for data on another device than the CPU, where this one
        prints the fused attention kernels (torch has them for the CPU alone): a copy of this
        printer without them (every other choice of its kernels kept).  None when this printer's
        code runs on every device."""
        if "flash_attention" not in self.kernels:
            return None
        other = copy.copy(self)         # (printing sets only whole attributes: nothing is shared in place)
        other.kernels = self.kernels - {"flash_attention"}
        return other

    def dispatch(self, name: str, args: str, doc: str, cpu: str, other: str) -> list[str]:
        """The lines of ``name(args)``, which calls `cpu` when X is on the CPU, else `other`
        (the same computation without CPU-only kernels): chosen at run time, X never moved."""
        return [f"def {name}({args}):", f'    """{doc}"""',
                f"    return ({cpu} if X.is_cpu else {other})({args})"]

    def imports(self, dtype: str) -> str:
        """``torch``."""
        return "import torch"

    def dtype_code(self, dtype: str) -> str:
        """``torch.float32`` or ``torch.float64``."""
        return f"torch.{dtype}"

    def _print_Mul(self, expr):
        fused = self._fused(expr)
        if fused is not None:
            return fused
        # the numbers of a product with a tensor multiplied first (2*lr/m, Python floats):
        # `2*lr*D/m` is two passes over D, `(2*lr/m)*D` one
        numbers = [f for f in expr.args if not f.free_symbols & self.arrays]
        if len(numbers) > 1 and len(numbers) < len(expr.args) and not sp.Mul(*numbers).is_Number:
            tensors = sp.Mul(*[f for f in expr.args if f not in numbers])
            return f"({self._print(sp.Mul(*numbers))})*{self.parenthesize(tensors, precedence(expr))}"
        return super()._print_Mul(expr)

    def _fused(self, expr: sp.Mul) -> str | None:
        """A product as one of torch's one-pass element-wise kernels, or None.

        Eager torch pays a pass over memory (and a fresh tensor) per
        operation, and its ``where`` on a boolean mask is slow, so three
        shapes of product print as the fused kernels that compute exactly
        them (the Core ATen operators autograd itself runs):

        * g ⊙ [z > c], g ⊙ [z ≥ 0], g ⊙ [z < c], g ⊙ [z ≤ 0] (a 0/1 mask, ReLU'):
          ``threshold_backward(g, z, c)``, which is g where z > c, else 0;
          z ≥ 0 is z > the largest number below 0 (``_BELOW_ZERO``), z < c is −z > −c;
        * g ⊙ y ⊙ (1 − y) (σ' from σ's value): ``sigmoid_backward(g, y)``;
        * g ⊙ (1 − y²) (tanh' from tanh's value): ``tanh_backward(g, y)``;
        * g ⊙ f'(z) where the lowering put the marker of :mod:`symback.kernels` for f'
          (GELU's derivative): that activation's backward kernel (``gelu_backward(g, z)``).

        Only when g and y (or z) are tensors (they involve an array symbol).
        This is printing: the product is whatever formula the derivation
        gave; nothing here knows where it came from.  Two differences from
        ``where(z >= 0, g, 0)``, both off the real numbers: a NaN z passes g
        through (NaN is already everywhere by then), and under
        ``torch.set_flush_denormal(True)`` the threshold below 0 reads as 0,
        so a z of exactly 0 gets 0 (torch's own ReLU'(0)).
        """
        args = list(expr.args)
        tensor = lambda e: bool(e.free_symbols & self.arrays)     # noqa: E731

        def without(*drop):     # the other factors, by position: an equal expression SymPy built
            kept = list(args)   # anew (1 − (1 − y)) need not be the same object as y in args
            for e in drop:
                kept.remove(e)
            return sp.Mul(*kept)
        for f in args:
            rest = without(f)
            if not tensor(rest):
                continue
            if isinstance(f, KernelPrime):          # g ⊙ f'(z) (the lowering's marker)
                return self.prime_kernels[f.activation].format(self._print(rest), self._print(f.args[0]))
            cond = mask_of(f)
            if cond is not None:
                found = _threshold(cond)
                if found is not None and tensor(found[0]):
                    z, th = found
                    return (f"torch.ops.aten.threshold_backward({self._print(rest)}, {self._print(z)}, "
                            f"{th if isinstance(th, str) else self._print(th)})")
                continue
            if not f.is_Add:
                continue
            y = 1 - f
            if y.is_Symbol and y in self.arrays and y in args:
                g = without(f, y)
                if tensor(g):
                    return f"torch.ops.aten.sigmoid_backward({self._print(g)}, {self._print(y)})"
            if y.is_Pow and y.exp == 2 and y.base.is_Symbol and y.base in self.arrays:
                return f"torch.ops.aten.tanh_backward({self._print(rest)}, {self._print(y.base)})"
        return None

    def _print_Add(self, expr):
        """b + g ⊙ x of three tensors (layer norm's Ĥ ⊙ γ + β) as ``torch.addcmul``: one pass."""
        args = expr.args
        if len(args) == 2:
            for b, gx in (args, args[::-1]):
                if b in self.arrays and gx.is_Mul and len(gx.args) == 2 and all(f in self.arrays for f in gx.args):
                    return f"torch.addcmul({self._print(b)}, {self._print(gx.args[0])}, {self._print(gx.args[1])})"
        return super()._print_Add(expr)

    def _print(self, expr, **kwargs):
        # SymPy's dispatch skips a Function subclass's bases whose names differ from the
        # class's own (gelu_prime is no KernelPrime to it): the marker alone (a one-sample
        # graph's ∂/∂X of gelu(X Xᵀ)) reached _print_Function and was refused
        if isinstance(expr, KernelPrime):
            return self._print_KernelPrime(expr)
        return super()._print(expr, **kwargs)

    def _print_KernelPrime(self, expr):
        """f'(z) alone (not times a tensor): the kernel with g = 1."""
        z = self._print(expr.args[0])
        return self.prime_kernels[expr.activation].format(f"torch.ones_like({z})", z)

    def op_const(self, c: str) -> str:
        """A 0-d tensor of X's dtype and device (torch.where of two Python numbers is float32)."""
        return f"X.new_tensor({c})"

    def op_maximum(self, a: str, c: str) -> str:
        """max(a, c) for a number c: a clamp (torch.maximum takes tensors only); max(a, 0) is
        ``torch.relu``, the same values by a kernel several times faster than clamp's on CPU."""
        return f"torch.relu({a})" if c == "0" else f"torch.clamp({a}, min={c})"

    def _nested(self, fn, args):
        numbers = [a for a in args if a.is_number]       # 2, and constants such as sqrt(2) or E
        others = [a for a in args if not a.is_number]
        if numbers and others:      # the numbers become one clamp bound (torch.maximum takes tensors)
            out = super()._nested(fn, others) if len(others) > 1 else self._print(others[0])
            is_max = fn.endswith("maximum")
            bound = (sp.Max if is_max else sp.Min)(*numbers)
            return f"torch.clamp({out}, {'min' if is_max else 'max'}={self._print(bound)})"
        return super()._nested(fn, args)

    def op_colsum(self, a: str) -> str:
        """1ᵀ a: the column sums."""
        return f"{a}.sum(dim=0)"

    def op_rowsum(self, a: str) -> str:
        """a 1: the m×1 column of row sums."""
        return f"{a}.sum(dim=1, keepdim=True)"

    def op_rowmax(self, a: str) -> str:
        """The m×1 column of row maxima."""
        return f"{a}.amax(dim=1, keepdim=True)"

    def op_vdot(self, a: str, b: str) -> str:
        """Σ a ⊙ b (torch.vdot takes 1-D tensors only)."""
        return f"torch.sum(torch.mul({a}, {b}))"     # a and b may be formulas: no precedence to mind

    def op_bproduct(self, a: str, b: str, ta: bool, tb: bool, ba: bool, bb: bool) -> str:
        """Each sample's a b: ``torch.matmul`` (it folds a batch times a shared matrix into one
        GEMM)."""
        a = (self.op_btranspose(a) if ba else self.op_transpose(a)) if ta else a
        b = (self.op_btranspose(b) if bb else self.op_transpose(b)) if tb else b
        return f"torch.matmul({a}, {b})"

    def op_btranspose(self, a: str) -> str:
        """Each sample's aᵀ (a view)."""
        return f"{a}.transpose(-1, -2)"

    def op_bsum(self, a: str) -> str:
        """The sum over the samples."""
        return f"{a}.sum(dim=0)"

    def op_bssum(self, a: str) -> str:
        """Each sample's sum of entries, as (m, 1, 1)."""
        return f"{a}.sum(dim=(-2, -1), keepdim=True)"

    def op_browsum(self, a: str) -> str:
        """Each sample's row sums."""
        return f"{a}.sum(dim=-1, keepdim=True)"

    def op_browmax(self, a: str) -> str:
        """Each sample's row maxima."""
        return f"{a}.amax(dim=-1, keepdim=True)"

    def op_bcolsum(self, a: str) -> str:
        """Each sample's column sums, as (m, 1, k)."""
        return f"{a}.sum(dim=-2, keepdim=True)"

    def op_pad(self, a: str, axis: int, before: int, after: int) -> str:
        """a with zeros added along its last (−1) or second-last (−2) axis."""
        widths = (before, after) if axis == -1 else (0, 0, before, after)
        return f"torch.nn.functional.pad({a}, {widths})"

    def op_concat(self, parts: list, axis: int) -> str:
        """The blocks joined along `axis` (−1 columns, −2 rows), in order."""
        return f"torch.cat([{', '.join(parts)}], dim={axis})"

    def op_mask(self, a: str, kind: str, rows, cols) -> str:
        """a with the entries above the diagonal set to −∞ (the causal mask)."""
        return (f"{a}.masked_fill(torch.ones({rows}, {cols}, dtype=torch.bool, device={a}.device)"
                f".triu(1), float('-inf'))")

    def op_softmax(self, a: str) -> str:
        """softmax of each row (of each sample): torch's kernel (a masked entry is −∞: 0)."""
        return f"torch.softmax({a}, dim=-1)"

    op_bsoftmax = op_softmax

    def op_log_softmax(self, a: str) -> str:
        """log-softmax of each row (of each sample): torch's kernel."""
        return f"torch.log_softmax({a}, dim=-1)"

    op_blog_softmax = op_log_softmax

    def op_softmax_vjp(self, d: str, p: str) -> str:
        """P ⊙ (D − (D ⊙ P)𝟏𝟏ᵀ) row by row (each sample's): torch's softmax backward kernel."""
        # δ and P broadcast to one shape: either may be kept as one broadcast row (see _full)
        return f"torch._softmax_backward_data(*torch.broadcast_tensors({d}, {p}), -1, {p}.dtype)"

    def op_layer_norm(self, h: str, eps: str, d) -> str:
        """(Ĥ, each row's mean, each row's 1/σ) for Ĥ = (H − μ)/√(var + ε) row by row (no γ, β:
        the graph applies them): torch's ``native_layer_norm``."""
        return f"torch.native_layer_norm({h}, ({d},), None, None, {eps})"

    def op_layer_norm_vjp(self, g: str, pair: str, h: str, eps: str, d) -> str:
        """(1/σ)(G − mean(G) − Ĥ ⊙ mean(G ⊙ Ĥ)) row by row for Ĥ = norm(H), from the forward's
        mean and 1/σ: torch's ``native_layer_norm_backward`` (no γ, β; only the input's δ)."""
        return (f"torch.ops.aten.native_layer_norm_backward({_full(g, h)}, {h}, ({d},), {pair}[1], {pair}[2], "
                f"None, None, (True, False, False))[0]")

    def op_layer_norm_affine(self, h: str, g: str, b: str, eps: str, d) -> str:
        """(β + γ ⊙ Ĥ, each row's mean, each row's 1/σ) for Ĥ = norm(H) row by row, γ and β (1, d)
        rows (symback.affine_norm): torch's ``native_layer_norm`` with weight and bias."""
        return f"torch.native_layer_norm({h}, ({d},), {g}.view(-1), {b}.view(-1), {eps})"

    def op_layer_norm_affine_vjp(self, dn: str, pair: str, h: str, g: str, b: str, eps: str, d, dh: bool) -> str:
        """(δH or None, δγ, δβ) of op_layer_norm_affine's value `pair` from δN: torch's
        ``native_layer_norm_backward`` with weight and bias (δH only where asked)."""
        return (f"torch.ops.aten.native_layer_norm_backward({_full(dn, h)}, {h}, ({d},), {pair}[1], {pair}[2], "
                f"{g}.view(-1), {b}.view(-1), ({dh}, True, True))")

    def op_masked_scores(self, a: str, b: str, c: str, rows, cols) -> str:
        """M + c·(a b) for each sample, M the causal mask (0, and −∞ above the diagonal):
        one ``baddbmm``."""
        return (f"torch.baddbmm(torch.full(({rows}, {cols}), float('-inf'), dtype={a}.dtype, "
                f"device={a}.device).triu(1), {a}, {b}, alpha={c})")

    def op_conv_bias(self, a: str, K: str, b: str, geometry) -> str:
        """Kᵀ unfold(a) + bᵀ for each sample: torch's convolution with the bias row b (as
        ``_conv``, K = weight.reshape(C_out, −1).T)."""
        C, H, W, k, s, p = geometry
        return (f"torch.nn.functional.conv2d({a}.reshape({a}.shape[0], {C}, {H}, {W}), {K}.T.reshape(-1, {C}, {k}, {k}), "
                f"{b}.reshape(-1), stride={s}, padding={p}).flatten(2)")

    def op_conv_grads(self, a: str, d: str, K: str, geometry) -> str:
        """(fold(K d) for each sample, Σ over the samples of unfold(a) dᵀ): both backward products
        of one convolution (symback.convkernels), one kernel call."""
        return image.call("conv_grads", [a, d, K], geometry)

    def op_bias_sum(self, d: str) -> str:
        """Σ over the samples and the positions (the last axis) of d: one value per channel."""
        return f"{d}.sum(dim=(0, 2))"

    def op_split_heads(self, a: str, heads: int, w: int, copy: bool) -> str:
        """Each sample's (T, heads·w) value as (heads, T, w): head h is columns h·w … (h+1)·w
        (symback.heads); a view, or with ``copy`` a contiguous copy (one, where each batched
        product would otherwise copy the view)."""
        return f"{a}.unflatten(-1, ({heads}, {w})).transpose(1, 2)" + (".contiguous()" if copy else "")

    def op_head(self, a: str, h: int) -> str:
        """Head h of an (n, heads, T, w) value (a view)."""
        return f"{a}[:, {h}]"

    def op_merge_heads(self, a: str) -> str:
        """An (n, heads, T, w) value's heads side by side again, (n, T, heads·w)."""
        return f"{a}.transpose(1, 2).flatten(-2)"

    def op_heads_masked_scores(self, a: str, b: str, c: str, heads, rows, cols) -> str:
        """M + c·(a b) for each sample and head (op_masked_scores over the heads axis too):
        one ``baddbmm`` over n·heads."""
        return (f"torch.baddbmm(torch.full(({rows}, {cols}), float('-inf'), dtype={a}.dtype, "
                f"device={a}.device).triu(1), {a}.flatten(0, 1), {b}.flatten(0, 1), alpha={c})"
                f".unflatten(0, (-1, {heads}))")

    def op_flash_attention(self, q: str, k: str, v: str, c: str, causal: bool) -> str:
        """(softmax(c·q kᵀ + M) v, each row's log-sum-exp) for each sample and head, M the causal
        mask where `causal` (else none) (symback.flash): torch's fused CPU attention kernel, the
        one autograd's ``scaled_dot_product_attention`` runs on a CPU.  CPU tensors only: the
        function that calls it is the CPU one of a :meth:`dispatch`."""
        return f"torch.ops.aten._scaled_dot_product_flash_attention_for_cpu({q}, {k}, {v}, 0.0, {causal}, scale={c})"

    def op_flash_attention_vjp(self, d: str, q: str, k: str, v: str, pair: str, c: str, causal: bool) -> str:
        """(δq, δk, δv) of op_flash_attention's value `pair` from δ of its output: the kernel's
        backward (symback.flash; CPU tensors only, as op_flash_attention)."""
        return (f"torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward({d}, {q}, {k}, {v}, "
                f"{pair}[0], {pair}[1], 0.0, {causal}, scale={c})")

    def op_full(self, a: str, shape: str) -> str:
        """a broadcast to `shape` as a fresh tensor on X's device."""
        return f"X.new_zeros({shape}) + {a}"

    def op_hstack(self, parts: list) -> str:
        """The matrices side by side (columns), in order."""
        return f"torch.cat([{', '.join(parts)}], dim=1)"

    def op_addmm(self, c: str, pairs: list) -> str:
        """c + Σ aᵢ bᵢ as a chain of ``torch.addmm`` (each GEMM starts from the sum so far: one
        pass and one tensor fewer per product; eager torch pays per operation); c "" for none."""
        (a, b), rest = pairs[0], pairs[1:]
        if not c:
            out = self.op_matmul(a, b)
        else:
            out, rest = c, pairs
        for a, b in rest:
            out = f"torch.addmm({out}, {a}, {b})"
        return out

    def op_baddmm(self, c: str, a: str, w: str) -> str:
        """c + a w for a batch of samples a times a parameter w: one ``addmm`` over every
        sample's rows."""
        return f"torch.addmm({c}, {a}.reshape(-1, {a}.shape[-1]), {w}).view(*{a}.shape[:-1], -1)"

    def op_update_addmm(self, target: str, a: str, b: str) -> str:
        """A step's ``target -= a b`` as the product accumulated into the parameter tensor
        (``addmm_``, no temporary)."""
        return f"{target}.addmm_({a}, {b}, alpha=-1)"


def _threshold(cond):
    """(z, t) with [cond] = [z > t] (t a number, or the name ``_BELOW_ZERO``), or None."""
    if not isinstance(cond, sp.core.relational.Relational):
        return None
    if cond.lhs.is_Number and not cond.rhs.is_Number:
        cond = cond.reversed
    z, c, op = cond.lhs, cond.rhs, cond.rel_op
    if not c.is_Number or not c.is_real:
        return None
    if op in ("<", "<="):                    # [z < c] = [−z > −c]
        z, c, op = -z, -c, {"<": ">", "<=": ">="}[op]
    if op == ">":
        return z, c
    if op == ">=" and c == 0:
        return z, "_BELOW_ZERO"
    return None


def _full(g: str, h: str) -> str:
    """δ as a view of the full shape of `h` (the kernel's input or output): a δ the lowering keeps
    broadcast (δ of 1 1ᵀ N, one row per sample, (n, 1, d) for an (n, T, d) N; δ of P 1 w, one
    column, (n, 1) for an (n, k) P) read past its end in native_layer_norm_backward, which takes
    the shapes equal and does not broadcast (δH off by up to 10¹⁷³); _softmax_backward_data
    refuses unequal shapes."""
    return f"({g}).expand_as({h})"
