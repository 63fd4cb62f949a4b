"""The Model every array backend shares: data checks, the API of the NumPy Model, fit.

A backend gives a namespace loaded from its generated module (``init``,
``predict``, ``loss``, ``grad``, ``value_and_grad``, ``step``, ``_asarray``,
the pure ``_value_and_grad``) and two methods: :meth:`BackendModel._compile`
(how a training update runs: ``jax.jit``, ``torch.no_grad``) and
:meth:`BackendModel._place` (a host batch onto the backend's devices).
"""
from __future__ import annotations

import builtins
import hashlib
import linecache
import math
from pathlib import Path

import numpy as np

from ..errors import DataError, SymbackError, TrainingError
from ..render import _atomic_write
from ._common import Optimizer

__all__ = ["BackendModel", "load_source"]


def load_source(source: str, tag: str) -> dict:
    """Execute generated (never user-written) source as a fresh namespace.

    The text is printed from SymPy formulas; the only user text in it is
    names, which ``graph.check_name`` limits to identifiers.  linecache makes
    tracebacks and ``inspect.getsource`` show the generated lines.
    """
    digest = hashlib.sha1(source.encode()).hexdigest()[:16]
    filename = f"<symback-{tag}-{digest}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    ns = {"__name__": f"symback_{tag}_{digest}", "__source__": source}
    exec(builtins.compile(source, filename, "exec"), ns)
    return ns


class BackendModel:
    """A network's generated code for one array library, with the NumPy Model's methods.

    Parameters are a dict name → array of the library; data have samples in
    rows (a 1-D array is one column), given as NumPy or library arrays.
    """

    backend = ""

    def __init__(self, derivation, dtype: str, namespace: dict):
        self.derivation = derivation
        self.dtype = np.dtype(dtype)
        self._ns = namespace
        self.kind: str = namespace["KIND"]
        self.reduction: str = namespace["REDUCTION"]
        self.params: tuple = namespace["PARAMS"]
        self.n_inputs: int = namespace["N_INPUTS"]
        self.n_targets: int = namespace["N_TARGETS"]

    @property
    def source(self) -> str:
        """The generated module's source (this library and NumPy only)."""
        return self._ns["__source__"]

    def __repr__(self):
        return f"<{self.backend} Model {self.kind} params={list(self.params)} dtype={self.dtype.name}>"

    # -- data ------------------------------------------------------------------
    def _matrix(self, a, width: int, what: str, unit: str):
        if self._ns["_is_native"](a):
            shape = a.shape
        else:
            try:
                a = np.asarray(a, dtype=self.dtype)
            except (TypeError, ValueError) as exc:
                raise DataError(f"{what} is not numeric array data: {exc}") from None
            if a.ndim == 1:
                a = a.reshape(-1, 1) if width == 1 else a.reshape(1, -1)
            if a.ndim != 2:
                raise DataError(f"{what} must be a 2-D array (samples in rows), got shape {a.shape}")
            shape = a.shape
            a = self._ns["_asarray"](a)
        if shape[1] != width:
            raise DataError(f"{what} has {shape[1]} columns but the network has {width} {unit}")
        if shape[0] == 0:
            raise DataError(f"{what} has no rows")
        return a

    def _xy(self, X, Y):
        X = self._matrix(X, self.n_inputs, "X", "inputs")
        Y = self._matrix(Y, self.n_targets, "Y", "targets")
        if Y.shape[0] != X.shape[0]:
            raise DataError(f"X has {X.shape[0]} rows but Y has {Y.shape[0]}")
        return X, Y

    def check_params(self, params: dict) -> None:
        """Raise DataError unless params holds every parameter with the expected shape."""
        if not isinstance(params, dict):
            raise DataError(f"params must be a dict name -> array, got {type(params).__name__}")
        for p in self.params:
            if p not in params:
                raise DataError(f"params has no entry {p!r}; the model's parameters are {', '.join(self.params)}")
            if tuple(np.shape(params[p]) if not hasattr(params[p], "shape") else params[p].shape) \
                    != tuple(self._ns["SHAPES"][p]):
                raise DataError(f"parameter {p!r} has shape {tuple(params[p].shape)}, "
                                f"expected {self._ns['SHAPES'][p]}")

    # -- the model ----------------------------------------------------------------
    def init(self, seed: int = 0) -> dict:
        """Fresh parameters (the same numbers as every other backend's, in this dtype)."""
        return self._ns["init"](seed)

    def predict(self, X, params: dict):
        """The network's output for the rows of X (n × outputs), an array of the library."""
        self.check_params(params)
        return self._ns["predict"](self._matrix(X, self.n_inputs, "X", "inputs"), params)

    def loss(self, X, Y, params: dict) -> float:
        """The batch loss L (mean, or sum, of the per-sample cost over the rows)."""
        self.check_params(params)
        return float(self._ns["loss"](*self._xy(X, Y), params))

    def grad(self, X, Y, params: dict) -> dict:
        """∂L/∂p for every parameter, as a dict shaped like ``params``."""
        self.check_params(params)
        return self._ns["grad"](*self._xy(X, Y), params)

    def value_and_grad(self, X, Y, params: dict):
        """(L, grads) from one forward and one backward pass."""
        self.check_params(params)
        value, grads = self._ns["value_and_grad"](*self._xy(X, Y), params)
        return float(value), grads

    def step(self, X, Y, params: dict, lr: float = 0.1) -> float:
        """One gradient-descent step p ← p − lr·∂L/∂p; updates the dict's entries, returns L before it."""
        return float(self._ns["step"](*self._xy(X, Y), params, lr))

    def fit(self, X, Y, params: dict, epochs: int = 20, lr: float = 0.1, batch_size: int | None = 32,
            seed: int = 0, optimizer: str = "sgd", **options):
        """Train ``params`` (their dict entries replaced) with shuffled mini-batches.

        The same batches as the NumPy Model's fit (rows shuffled by
        ``np.random.default_rng(seed)``); ``optimizer`` is "sgd", "momentum"
        (``beta``) or "adam" (``beta1``, ``beta2``, ``eps``).  Returns the
        History: the per-epoch mean losses.
        """
        from ..train import History
        if not isinstance(epochs, (int, np.integer)) or epochs < 0:
            raise TrainingError(f"epochs must be a non-negative integer, got {epochs!r}")
        if not (isinstance(lr, (int, float, np.floating)) and math.isfinite(lr) and lr > 0):
            raise TrainingError(f"lr must be a positive finite number, got {lr!r}")
        self.check_params(params)
        X, Y = (np.asarray(self._ns["_to_numpy"](a), dtype=self.dtype) for a in self._xy(X, Y))
        n = X.shape[0]
        batch_size = n if batch_size is None else batch_size
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise TrainingError(f"batch_size must be a positive integer or None, got {batch_size!r}")
        opt = Optimizer(optimizer, **options)
        update = self._compiled_update(opt)
        current = self._replicate({k: params[k] for k in self.params})
        state = self._replicate(opt.init(current))
        rng = np.random.default_rng(seed)
        history = History()
        for epoch in range(int(epochs)):
            order = rng.permutation(n)
            total = 0.0
            for start in range(0, n, batch_size):
                idx = order[start:start + batch_size]
                value, current, state = update(self._place(X[idx]), self._place(Y[idx]), current, state, lr)
                # summed on the device: one synchronisation per epoch, not per batch
                total = total + (value * len(idx) if self.reduction == "mean" else value)
            loss = float(total) / n if self.reduction == "mean" else float(total)
            if not math.isfinite(loss):
                raise TrainingError(f"the loss became {loss} in epoch {epoch + 1}: training stopped "
                                    f"(lr={lr} may be too large, or the data hold non-finite values)")
            history.append(loss)
        params.update(current)
        return history

    # -- backend hooks --------------------------------------------------------------
    def _compiled_update(self, opt: Optimizer):
        """(X, Y, params, state, lr) → (L, params, state), compiled by :meth:`_compile`."""
        vg = self._ns["_value_and_grad"]

        def update(X, Y, params, state, lr):
            value, grads = vg(X, Y, params)
            params, state = opt.update(params, grads, state, lr)
            return value, params, state

        return self._compile(update)

    def _compile(self, fn):
        """`fn` as the library runs it best (jax.jit; torch.no_grad)."""
        raise NotImplementedError

    def _place(self, batch: np.ndarray):
        """A NumPy batch as an array of the library, on its devices."""
        return self._ns["_asarray"](batch)

    def _replicate(self, tree):
        return tree

    # -- files ---------------------------------------------------------------------
    def export(self, path) -> Path:
        """Write the generated module (this library and NumPy only); ``python it.py`` self-checks."""
        path = Path(path)
        if path.suffix != ".py":
            raise SymbackError(f"export writes a Python module: give a .py path, got {str(path)!r}")
        _atomic_write(path, self.source.encode())
        return path
