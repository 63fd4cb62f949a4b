"""The same formulas beyond one CPU: one code generator, a printer per array library.

``sb.compile(d, backend="numpy" | "jax" | "torch")`` gives a Model with the NumPy
Model's methods and dict keys, whose arrays are the library's own (the Model classes
are in :mod:`symback.backends.jax` and :mod:`symback.backends.torch`);
``backend_module_source`` gives the standalone module behind it.  Both
read the one pipeline of :mod:`symback.codegen` (program → lowering →
proved rewrites → straight-line functions), printed by
:class:`~symback.printing.jax.JaxPrinter` or
:class:`~symback.printing.torch.TorchPrinter`.  Importing this package
imports neither JAX nor PyTorch; a missing library is one SymbackError
naming the extra to install.
"""
from __future__ import annotations

import importlib

from ..errors import SymbackError

__all__ = ["BACKENDS", "DEFAULT_DTYPES", "backend_module_source", "require", "printer"]

BACKENDS = ("numpy", "jax", "torch")
#: float64 everywhere, as the contract says (for JAX that flips its process-wide x64 switch;
#: dtype="float32" keeps JAX's own default).
DEFAULT_DTYPES = {"numpy": "float64", "jax": "float64", "torch": "float64"}
_EXTRA = {"jax": "JAX", "torch": "PyTorch"}


def require(backend: str):
    """The backend's library, imported now; SymbackError when the backend is unknown or missing."""
    if backend not in BACKENDS:
        raise SymbackError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    try:
        return importlib.import_module(backend)
    except ImportError:
        raise SymbackError(f"the {backend} backend needs {_EXTRA[backend]}: "
                           f"pip install symback[{backend}]") from None


def printer(backend: str):
    """The printer of a backend's code (text only: imports neither JAX nor PyTorch)."""
    if backend == "jax":
        from ..printing.jax import JaxPrinter
        return JaxPrinter()
    if backend == "torch":
        from ..printing.torch import TorchPrinter
        return TorchPrinter()
    from ..printing.numpy import NumpyPrinter
    return NumpyPrinter()


def backend_module_source(derivation, backend: str = "numpy", dtype=None, vjp: bool = True) -> str:
    """The standalone module text for one backend (what ``symback codegen --backend`` writes):
    that library and NumPy only; ``python module.py`` checks grad() by finite differences.
    ``vjp=False``: the VJP functions are left to be added on first use (``sb.compile``)."""
    from ..module import codegen_module
    require(backend)        # a missing library is reported now, not when the file is run
    dtype = DEFAULT_DTYPES[backend] if dtype is None else dtype
    return codegen_module(derivation, dtype, printer(backend), vjp)
