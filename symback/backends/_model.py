"""What the JAX and torch Models add to the NumPy Model: native arrays, and a compiled fit.

:class:`BackendModel` is :class:`symback.model.Model` (the same methods,
checks and dict keys) with the library's arrays passed through instead of
converted to NumPy.  It trains with the one ``fit`` of :mod:`symback.train`; what it
gives that loop (:mod:`symback.updates`) is an update whose whole work (step and
optimizer) is one function the backend compiles (:meth:`_compile`: ``jax.jit``,
``torch.no_grad``), with batches the backend places on its devices (:meth:`_place`).
"""
from __future__ import annotations

import numpy as np

from ..model import Model
from ..data import check_finite, check_rate
from ..errors import DataError

__all__ = ["BackendModel"]

#: what generated code raises on bad parameters or data: Python's errors, torch's RuntimeError
#: (shapes, devices), JAX's TypeError (shapes)
_FAULTS = (KeyError, ValueError, RuntimeError, TypeError)


class BackendModel(Model):
    """A network's generated code for one array library, with the NumPy Model's methods.

    Parameters are a dict name → array of the library; data have samples in
    rows (a 1-D array is one column), given as NumPy or library arrays.
    """

    backend = ""

    def __repr__(self):
        return f"<{self.backend} Model {self.kind} params={list(self.params)} dtype={self.dtype.name}>"

    def _matrix(self, a, width: int, what: str, unit: str, params=None):
        if self._sample.get(what) is not None and not isinstance(a, np.ndarray) and hasattr(a, "reshape"):
            # the library's images (n, C, H, W) or one-row samples (n, k): reshaped by the library
            # where they are (a view), not through a NumPy copy on the host
            shape = tuple(getattr(a, "shape", ()))
            if (want := self._sample_shape(shape, what)) != shape:
                try:
                    b = a.reshape(want)
                except (TypeError, ValueError, RuntimeError):    # not an array of the library:
                    b = None                                     # the host path says what is wrong
                a = b if self._ns["_is_native"](b) else a
        if self._sample.get(what) is not None and self._ns["_is_native"](a):
            if tuple(a.shape[1:]) != tuple(self._sample[what]):
                raise self._shape_error(a.shape, what, a)
            return a
        if self._ns["_is_native"](a):
            if a.shape[1] != width:
                raise DataError(f"{what} has {a.shape[1]} columns but the network has {width} {unit}"
                                + self._labels_hint(a, what))
            return a
        return self._convert(super()._matrix(self._host(a), width, what, unit), params)

    def _convert(self, a: np.ndarray, params=None):
        """A checked NumPy matrix as the library's array, where ``params`` live (if the library
        places arrays: torch); a library array is left where it is."""
        return self._ns["_asarray"](a)

    def _run(self, fn, *args):
        try:
            return fn(*args)
        except _FAULTS as exc:
            data, params = (args[:-2], args[-2]) if fn is self._step else (args[:-1], args[-1])
            self._failed(exc, params, data)

    def _failed(self, exc, params, data=()):
        """The NumPy Model's DataErrors; for the library's own errors (torch's RuntimeError,
        JAX's TypeError) the parameters are checked, then the data's device; else exc stands."""
        if isinstance(exc, (KeyError, ValueError)):
            super()._failed(exc, params)
        self.check_params(params)
        self._misplaced(data, params)
        for k in self.params:       # torch multiplies no float32 by float64 (NumPy and JAX promote)
            dt = getattr(params[k], "dtype", None)
            if dt is not None and str(dt).rpartition(".")[2] != self.dtype.name:
                raise DataError(f"parameter {k!r} holds {dt} values, but this model computes in {self.dtype.name}: "
                                f"convert the parameters to {self.dtype.name} (m.init() makes them so), or compile "
                                f"with dtype={str(dt).rpartition('.')[2]!r}") from exc
        raise exc

    def _misplaced(self, data, params):
        """Raise the DataError for data on another device than params (torch places arrays)."""

    def _shaped(self, grads, params) -> dict:
        # the library's arrays, as they come; a (1, n) parameter given as (n,) gets an (n,) gradient
        out = {}
        for p, g in zip(self.params, grads):
            if not hasattr(g, "shape"):     # a gradient that is one number for every sample (1/3)
                g = self._ns["_asarray"](g)
            given = tuple(np.shape(params[p]))      # (a number given for a scalar parameter: ())
            out[p] = g.reshape(given) if tuple(g.shape) != given else g
        return out

    #: (array type, dtype) of the library arrays the last call accepted: step's fast path
    _accepted = (None, None)
    #: whether the library's arrays are immutable (JAX): then the (X, Y) accepted last
    #: need no second look when they come again, as in full-batch gradient descent
    _immutable = False
    _last = (None, None)

    def step(self, X, Y, params: dict, lr: float = 0.1) -> float:
        """One gradient-descent step p ← p − lr·∂L/∂p, left in params; returns L before it."""
        if not (type(lr) is float and 0.0 <= lr < float("inf")):
            check_rate(lr, zero=True)
        if not (X is self._last[0] and Y is self._last[1]):
            # the tight loop's arrays are the kind accepted last time: checked in one expression
            # (each .shape and .dtype of a JAX array is a Python property: read each once)
            kind, dtype = self._accepted
            if not (type(X) is kind and type(Y) is kind and X.dtype is dtype and Y.dtype is dtype
                    and _fits(X.shape, Y.shape, self.n_inputs, self.n_targets, self._min_rows)):
                X, Y = self._xy(X, Y, params)
                if self._ns["_is_native"](X) and type(X) is type(Y) and X.dtype is Y.dtype:
                    self._accepted = (type(X), X.dtype)
            elif self._target_rules:
                self._check_targets(Y)
            check_finite(X, Y, self._host)
            if self._immutable and type(X) is self._accepted[0]:
                self._last = (X, Y)
        self._check_step_params(params)
        try:
            return float(self._step_rows(X, Y, params, lr) if self._rowed else self._step(X, Y, params, lr))
        except _FAULTS as exc:
            self._failed(exc, params, (X, Y))

    def load(self, path) -> dict:
        """Read params saved by :meth:`save`, checked against this model, as the library's arrays."""
        return {k: self._ns["_asarray"](v) for k, v in super().load(path).items()}

    def _host(self, a):
        """A library array as a NumPy array (anything else as it is)."""
        return a

    def _updates(self, params: dict, optimizer, lr: float):
        """How fit's batches update params here: one compiled update (see :mod:`symback.updates`)."""
        from ..updates import Compiled
        return Compiled(self, params, optimizer, lr)

    def _compiled_update(self, opt):
        """(X, Y, params, state, lr) → (L, params, state), compiled by :meth:`_compile`: the
        generated gradient, then the optimizer's pure update (:meth:`~symback.optimizers.Optimizer.apply`)."""
        vg, names = self._ns["_grad"], self.params

        def update(X, Y, params, state, lr):
            value, grads = vg(X, Y, params)
            params, state = opt.apply(params, dict(zip(names, grads)), state, lr)
            return value, params, state

        return self._compile(update)

    def _compile(self, fn):
        """`fn` as the library runs it best (jax.jit; torch.no_grad)."""
        raise NotImplementedError

    def _place(self, batch: np.ndarray, params: dict):
        """A NumPy batch as an array of the library, on its devices (where ``params`` are)."""
        return self._convert(batch, params)

    def _replicate(self, tree):
        return tree

    def _rate(self, lr):
        """The learning rate as the compiled update takes it best (a Python number here)."""
        return lr


def _fits(xs: tuple, ys: tuple, n_inputs: int, n_targets: int, least: int) -> bool:
    """Shapes (m, n_inputs) and (m, n_targets) with m ≥ least (the network's fewest samples)."""
    return len(xs) == 2 == len(ys) and xs[0] == ys[0] and xs[0] >= least and xs[1] == n_inputs and ys[1] == n_targets
