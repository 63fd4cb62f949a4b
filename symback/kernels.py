"""Fused library kernels that compute exactly a derived expression, for the lowering to use.

Eager PyTorch pays one pass over memory and one fresh tensor per operation, where its
autograd calls one fused kernel per layer (``gelu``/``gelu_backward``, ``softmax``/
``_softmax_backward_data``).  A printer that has such kernels names them in its
``kernels``; the lowering then emits one statement (or one marker) where it would
otherwise emit the kernel's formula in several passes.  Each kernel stands for a formula
stated here in SymPy, and is used only where the derived expression *is* that formula:

* ``softmax``: softmax(Z) row by row (masked or not) — the node's own definition;
* ``softmax_vjp``: P ⊙ (D − (D ⊙ P)𝟏𝟏ᵀ) with P = softmax(Z): the closed form the engine
  derives for a Softmax node (:func:`symback.vjp.softmax_vjp`, proved there), recognised
  by its structure in the lowering;
* ``masked_scores``: c·(A B) with the causal mask, M + c·A B for M = 0 on and below the
  diagonal and −∞ above (one batched GEMM, :func:`symback.passes.masked_scores`);
* ``layer_norm``: norm(H) row by row (``native_layer_norm``) and the closed form of its VJP
  (:func:`symback.vjp.rownorm_vjp`, recognised by rebuilding it for the node and comparing);
* ``head_products``: not a kernel but a choice of the same kind: L W E_h (a head's columns of
  a product with a shared W) as (L W) E_h, one GEMM all heads slice, for a library that pays
  per call;
* ``heads``: not a kernel either: attention's per-head statements (the column blocks of Q,
  K, V) done once over a heads axis, (n, heads, T, d/heads) (:func:`symback.heads.group_heads`);
  a printer's choice (the torch printer's only when asked: ``TorchPrinter(heads=True)``);
* ``flash_attention``: causal multi-head attention's forward softmax(c·Q Kᵀ + M) V and its
  derived backward as the library's fused attention kernel and its backward, where the grouped
  statements are exactly those (:func:`symback.flash.flash_attention`); torch has it for the
  CPU alone, so a function it changes is printed a second time without it, for data on other
  devices (:func:`symback.straightline.build_function`);
* ``layer_norm_affine``: β + γ ⊙ norm(H) and the derived δH, δγ, δβ by the layer-norm kernels
  with weight and bias, where the statements are exactly those
  (:func:`symback.affine_norm.affine_norms`);
* ``addmm``: c + Σ Aᵢ Bᵢ, products summed by the GEMM that accumulates (and a step's
  W − A B into W itself), where each product is read only by its sum
  (:func:`symback.passes.sum_products`);
* ``gelu_prime``: the derivative of GELU's tanh form, GELU being torch's
  ``gelu(approximate="tanh")`` — :data:`LIBRARY_FORMS` holds that formula as the library
  documents it, and :func:`prime` proves it equal to the registered activation's definition
  before the marker is used; the derivative itself is SymPy's, taken of that definition.

Nothing here differentiates or states a derivative; the markers only say "this derived
value is computed by the printer's kernel".
"""
from __future__ import annotations

from functools import lru_cache

import sympy as sp

from .errors import SymbackError
from .functions import gelu
from .proofs import proved_equal

__all__ = ["KERNELS", "LIBRARY_FORMS", "KernelPrime", "prime"]

#: the kernels a printer may name in its ``kernels``
KERNELS = ("softmax", "softmax_vjp", "gelu_prime", "masked_scores", "layer_norm", "head_products", "addmm", "heads",
           "flash_attention", "layer_norm_affine")

_x = sp.Symbol("x", real=True)
#: activation -> (the kernel of its derivative, what the library's forward kernel computes,
#: written as its documentation writes it): torch.nn.functional.gelu(x, approximate="tanh")
#: is 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))
LIBRARY_FORMS = {
    gelu: ("gelu_prime", sp.Rational(1, 2) * _x * (1 + sp.tanh(sp.sqrt(2 / sp.pi)
                                                                 * (_x + sp.Rational(44715, 10**6) * _x**3)))),
}


class KernelPrime(sp.Function):
    """f'(z) of an activation whose derivative the printer's library computes in one kernel
    (``gelu_backward``); made by :func:`prime`, one subclass per activation (``activation``)."""

    activation = None

    def _sympystr(self, printer):
        return f"{self.activation.__name__}_prime({printer._print(self.args[0])})"


@lru_cache(maxsize=None)
def prime(activation) -> type:
    """The marker class of `activation`'s derivative, after SymPy has proved the activation's
    definition equal to the formula the library's kernel computes (:data:`LIBRARY_FORMS`)."""
    _, form = LIBRARY_FORMS[activation]
    if not proved_equal(activation.definition(_x), form, _x):
        raise SymbackError(f"internal: {activation.__name__} is not the library's kernel's function")
    return type(f"{activation.__name__}_prime", (KernelPrime,), {"activation": activation, "nargs": 1})


def primes(kernels) -> dict:
    """activation -> marker class, for the activations whose derivative kernel is in `kernels`."""
    return {act: prime(act) for act, (name, _) in LIBRARY_FORMS.items() if name in kernels}


__all__ += ["primes"]
