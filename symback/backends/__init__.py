"""The same formulas beyond one CPU: a backend per array library.

``compile_backend(d, "numpy" | "jax" | "torch", dtype)`` gives a Model with
the NumPy Model's methods and dict keys, whose arrays are the library's
own; ``backend_module_source`` gives the standalone module behind it
(that library and NumPy only; ``python module.py`` checks its gradient
against finite differences).  Importing this package imports neither JAX
nor PyTorch: each backend imports its library when first used, and a
missing library is one SymbackError naming the extra to install.
"""
from __future__ import annotations

from ..errors import SymbackError

__all__ = ["BACKENDS", "compile_backend", "backend_module_source"]

BACKENDS = ("numpy", "jax", "torch")


def _backend(name: str):
    if name not in BACKENDS:
        raise SymbackError(f"unknown backend {name!r}; use one of {', '.join(BACKENDS)}")
    if name == "jax":
        from . import jax as module
    elif name == "torch":
        from . import torch as module
    else:
        return None
    return module


def compile_backend(derivation, backend: str = "numpy", dtype=None):
    """The trainable Model of `derivation` for one backend.

    ``dtype`` None means the backend's default: float64 for NumPy and
    PyTorch, float32 for JAX (whose float64 is a process-wide switch).
    """
    module = _backend(backend)
    if module is None:
        from ..compile import compile
        return compile(derivation, dtype="float64" if dtype is None else dtype)
    return module.compile(derivation) if dtype is None else module.compile(derivation, dtype)


def backend_module_source(derivation, backend: str = "numpy", dtype=None) -> str:
    """The standalone module text for one backend (what ``symback codegen --backend`` writes)."""
    module = _backend(backend)
    if module is None:
        from ..codegen import codegen_module
        return codegen_module(derivation, "float64" if dtype is None else dtype)
    if backend == "jax":
        module._jax()       # a missing library is reported now, not when the file is run
    else:
        module._torch()
    return module.module_source(derivation) if dtype is None else module.module_source(derivation, dtype)
