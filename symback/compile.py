"""compile(): a Derivation turned into a trainable model on one backend.

The model's numbers come only from code generated out of the derivation's formulas
(:mod:`symback.module`); this module generates that code once per derivation, backend
and dtype, loads it, and wraps it in the backend's :class:`~symback.model.Model`.
"""
from __future__ import annotations

import hashlib
import weakref

from .codegen import check_dtype
from .engine import Derivation
from .errors import SymbackError
from .model import Model, load_params, run_generated, save_params
from .module import codegen_module

__all__ = ["compile", "Model", "save_params", "load_params"]

_CACHE: "weakref.WeakKeyDictionary[Derivation, dict]" = weakref.WeakKeyDictionary()
_LOADED: dict[str, dict] = {}   # source digest -> namespace; identical code is loaded once


def compile(derivation: Derivation, dtype=None, backend: str = "numpy") -> "Model":
    """Generate, load and wrap the training code of `derivation` for one backend.

    ``backend`` is ``"numpy"`` (default), ``"jax"`` or ``"torch"``: every
    backend's Model has the same methods and dict keys, with the library's
    own arrays.  ``dtype`` is ``"float64"`` or ``"float32"`` (None: float64
    on every backend; on JAX that sets its process-wide ``jax_enable_x64``).  The code is generated and compiled once per
    derivation, backend and dtype, then cached.
    """
    if not isinstance(derivation, Derivation):
        raise SymbackError(f"compile() needs a Derivation from sb.derive(...), got {type(derivation).__name__}")
    from .backends import DEFAULT_DTYPES, backend_module_source, require
    require(backend)
    dtype = check_dtype(DEFAULT_DTYPES[backend] if dtype is None else dtype)
    per = _CACHE.setdefault(derivation, {})
    key = dtype if backend == "numpy" else (backend, dtype)
    if key not in per:
        # the VJP functions are generated when first needed (Model._layer_ns): training alone
        # does not pay for a second derivation
        source = codegen_module(derivation, dtype, vjp=False) if backend == "numpy" else \
            backend_module_source(derivation, backend, dtype, vjp=False)
        per[key] = _load(source)
    return model_class(backend)(derivation, dtype, per[key])


def _load(source: str) -> dict:
    """Execute generated (never user-written) source as a fresh module namespace."""
    digest = hashlib.sha1(source.encode()).hexdigest()[:16]
    if digest not in _LOADED:
        ns = {"__name__": f"symback_generated_{digest}", "__source__": source}
        run_generated(source, digest, ns)
        _LOADED[digest] = ns
    return _LOADED[digest]



def model_class(backend: str):
    """The Model class of a backend (NumPy's own, or the library's subclass of it)."""
    if backend == "jax":
        from .backends.jax import Model as BackendModel
        return BackendModel
    if backend == "torch":
        from .backends.torch import Model as BackendModel
        return BackendModel
    return Model
