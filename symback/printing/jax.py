"""The JAX printer: the NumPy printer's formulas as ``jax.numpy`` calls, functional.

JAX arrays are immutable, so nothing is printed in place (``inplace =
False``): a step returns the new parameters, and XLA fuses the element-wise
work that the NumPy printer schedules into buffers by hand.  The printed
functions are wrapped in ``jax.jit`` by the module's glue.  Printing needs
no JAX: this module is text only.
"""
from __future__ import annotations

from ..functions import sigmoid
from .image_jax import JAX as IMAGE_HELPERS
from .numpy import NumpyPrinter

__all__ = ["JaxPrinter"]


class JaxPrinter(NumpyPrinter):
    """:class:`~symback.printing.numpy.NumpyPrinter` for ``jax.numpy`` (``jnp.``), no in-place writes."""

    prefix = "jnp"
    inplace = False
    library = "JAX"
    array_type, convert = "jax.Array", "jnp.asarray(a, dtype=DTYPE)"
    #: one compiled XLA program per function and batch shape (forward/backward stay plain:
    #: jit them, or call them inside a function you jit)
    wrap = "jax.jit"
    extra_helpers = '''

def _at_b(a, b):
    """aᵀ b as XLA's dot over the rows (no transposed copy of a)."""
    return jax.lax.dot_general(a, b, (((0,), (0,)), ((), ())))


def _a_bt(a, b):
    """a bᵀ as XLA's dot over the columns (no transposed copy of b); a may be a 1-D row."""
    return jax.lax.dot_general(a, b, (((a.ndim - 1,), (1,)), ((), ())))
'''
    extra_helpers += IMAGE_HELPERS
    #: convolutions' derived products by XLA's convolution (see straightline.convolutions)
    conv_kernels = True
    #: max-pooling's δ routed by the arg-max indices its forward found: the maxima and their
    #: indices by one reduction over the windows (LeNet's step: 0.96x the two apart, symback.poolkernels)
    pool_indices = True
    #: a step binds each parameter's new value to its name (``W = W - g``), returned
    updates_in_place = False
    #: 1ᵀ D is a reduction XLA fuses (no cached row of ones)
    ones_row = False
    #: no ``del``: a jitted function's values live in XLA's buffers, not in Python names
    frees = False
    #: σ as XLA's logistic op (overflow-safe, one fused op) rather than (1 + tanh(z/2))/2
    native = {sigmoid: "jax.nn.sigmoid"}
    apply_step = '''def _flat_step(X, Y, flat, lr):
    """_step on the parameters as a tuple in PARAMS order (a tuple crosses jit's boundary
    faster than a dict, whose keys are sorted on every call)."""
    value, new = _step.__wrapped__(X, Y, dict(zip(PARAMS, flat)), lr)
    return value, tuple(new[p] for p in PARAMS)


_flat_step = jax.jit(_flat_step)


_RATE = {}


def _rate(lr):
    """lr as a DTYPE array on the device, made once per value: a Python number given to a
    jitted function is copied to the device on every call (a fifth of a 2-4-1 step)."""
    if type(lr) is not float:
        return jnp.asarray(lr, dtype=DTYPE)
    rate = _RATE.get(lr)
    if rate is None:
        _RATE.clear()
        rate = _RATE[lr] = jnp.asarray(lr, dtype=DTYPE)
    return rate


def _apply_step(X, Y, params, lr):
    """One compiled step, its loss as a float; JAX arrays are immutable, so the dict's
    entries are replaced.  (map, not a generator: on a 2-4-1 network's 28 µs step the
    generator costs 1-2 µs.)"""
    value, new = _flat_step(X, Y, tuple(map(params.__getitem__, PARAMS)), _rate(lr))
    params.update(zip(PARAMS, new))
    return value.item()'''

    def imports(self, dtype: str) -> str:
        """``jax`` and ``jax.numpy``; float64 needs JAX's process-wide x64 switch."""
        x64 = '\njax.config.update("jax_enable_x64", True)     # float64 in JAX is a global switch' \
            if dtype == "float64" else ""
        return "import jax\nimport jax.numpy as jnp" + x64

    def dtype_code(self, dtype: str) -> str:
        """``jnp.float32`` or ``jnp.float64``."""
        return f"jnp.{dtype}"

    def op_product(self, a: str, b: str, ta: bool = False, tb: bool = False) -> str:
        """aᵀ b and a bᵀ by the module's ``_at_b``/``_a_bt``: one ``jax.lax.dot_general``
        contracting the shared dimension, the HLO JAX's autodiff emits.  A transpose op
        before the dot can make XLA copy the transpose out (39 copies in a 20-layer
        network, a step 19% slower on CPU)."""
        if ta == tb:
            return super().op_product(a, b, ta, tb)
        return f"_at_b({a}, {b})" if ta else f"_a_bt({a}, {b})"

    def op_bproduct(self, a: str, b: str, ta: bool, tb: bool, ba: bool, bb: bool) -> str:
        """Each sample's a b: ``jnp.matmul`` (a batch times a shared matrix is one dot over
        every sample's rows in XLA)."""
        a = (self.op_btranspose(a) if ba else self.op_transpose(a)) if ta else a
        b = (self.op_btranspose(b) if bb else self.op_transpose(b)) if tb else b
        return f"jnp.matmul({a}, {b})"

    def op_colsum(self, a: str) -> str:
        """1ᵀ a: the column sums (XLA fuses the reduction; no cached row of ones)."""
        return f"jnp.sum({a}, axis=0)"

    def op_update(self, target: str, g: str) -> str:
        """The parameter's new value, bound to its local name (returned by the step)."""
        return f"{target} = {target} - {g}"
