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

import re

import sympy as sp

from ..functions import sigmoid
from .numpy import NumpyPrinter

__all__ = ["TorchPrinter"]


class TorchPrinter(NumpyPrinter):
    """:class:`~symback.printing.numpy.NumpyPrinter` for ``torch`` tensors."""

    prefix = "torch"
    inplace = False
    library = "PyTorch"
    array_type, convert = "torch.Tensor", "torch.as_tensor(a, dtype=DTYPE)"
    #: the derived formulas are the backward pass: torch's autograd records nothing
    wrap = "torch.no_grad()"
    extra_helpers = ""
    #: σ by torch's own kernel: one pass (the NumPy printer's overflow-safe (1 + tanh(z/2))/2
    #: is four, and torch's float64 tanh is slow); torch.sigmoid does not overflow either
    native = {sigmoid: "torch.sigmoid"}
    apply_step = '''def _apply_step(X, Y, params, lr):
    """One step; the parameter tensors are updated in place."""
    return _step(X, Y, params, lr)[0]'''

    def imports(self, dtype: str) -> str:
        """``torch``."""
        return "import torch"

    def dtype_code(self, dtype: str) -> str:
        """``torch.float32`` or ``torch.float64``."""
        return f"torch.{dtype}"

    def _print(self, expr, **kwargs):
        # a constant such as log(2) as its double: torch's functions take tensors only
        if isinstance(expr, sp.Expr) and expr.is_number and not expr.is_Number and expr.is_real:
            return repr(float(expr))
        return super()._print(expr, **kwargs)

    def op_const(self, c: str) -> str:
        """A 0-d tensor of X's dtype and device (torch.where of two Python numbers is float32)."""
        return f"X.new_tensor({c})"

    def op_maximum(self, a: str, c: str) -> str:
        """max(a, c) for a number c: a clamp (torch.maximum takes tensors only)."""
        return f"torch.clamp({a}, min={c})"

    def _nested(self, fn, args):
        numbers = [a for a in args if a.is_Number]
        if len(numbers) == 1 and len(args) == 2:
            other = self._print(next(a for a in args if not a.is_Number))
            bound = "min" if fn.endswith("maximum") else "max"
            return f"torch.clamp({other}, {bound}={self._print(numbers[0])})"
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

    def op_full(self, a: str, shape: str) -> str:
        """a broadcast to `shape` as a fresh tensor on X's device."""
        return f"X.new_zeros({shape}) + {a}"

    def finish(self, lines: list[str], indent: str = "    ") -> list[str]:
        """The body lines, ``t = A @ W`` then ``Z = b + t`` (t read nowhere else, b a parameter)
        fused into ``Z = torch.addmm(b, A, W)``: eager torch pays per operation and per pass."""
        params = {m.group(1) for line in lines if (m := _PARAM.match(line))}
        out = list(lines)
        for i, line in enumerate(lines):
            mm = _MATMUL.match(line)
            if not mm:
                continue
            t, a, w = mm.groups()
            uses = [k for k, other in enumerate(lines) if k != i and re.search(rf"\b{t}\b", other)]
            if len(uses) != 1:
                continue
            add = _ADD.match(lines[uses[0]])
            if add and t in add.group(2, 3) and ({add.group(2), add.group(3)} - {t}) <= params:
                bias = add.group(3) if add.group(2) == t else add.group(2)
                out[uses[0]] = f"{indent}{add.group(1)} = torch.addmm({bias}, {a}, {w})"
                out[i] = None
        return [line for line in out if line is not None]


_PARAM = re.compile(r"^\s*(\w+) = params\['\w+'\]$")
_MATMUL = re.compile(r"^\s*(\w+) = ([\w.]+) @ ([\w.]+)$")
_ADD = re.compile(r"^\s*(\w+) = (\w+) \+ (\w+)$")
