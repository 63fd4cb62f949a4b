"""How one batch of ``fit`` updates the parameters: what differs between the backends.

:func:`symback.train.fit` is the one training loop (batches, shuffling, epochs, history,
flow, progress, a non-finite loss); a Model gives it an *updates* object for one run
(``model._updates(params, optimizer, lr)``) with this small interface:

- ``batch(X, Y)``: a NumPy batch as the arrays the step takes (placed on the devices);
- ``updates(X, Y)``: one optimizer update from the batch; returns the loss before it.
  When ``eager`` (True, or set so), that is a float and the parameters before the update
  are kept, so that ``restore()`` after a non-finite loss puts the user's params back at
  their last finite values; else it is the library's scalar (summed on the device, read
  once per epoch);
- ``current``: the parameters as they are now (for ``flow`` and the validation loss);
- ``mark()`` / ``rewind(mark)``: back to an epoch's start (to rerun it eagerly and find
  where the loss broke);
- ``done()``: the trained values into the user's dict.

:class:`InPlace` is the NumPy Model's (the user's arrays updated in place, the generated
step fusing plain SGD), :class:`Compiled` the JAX and torch Models' (a pure update of
step and optimizer that the backend compiles, the user's dict entries replaced at the end).
"""
from __future__ import annotations

import math

import numpy as np

from .errors import TrainingError
from .optimizers import SGD, is_pure

__all__ = ["InPlace", "Compiled"]


class InPlace:
    """The NumPy Model's updates: the user's arrays changed in place, batch by batch."""

    eager = True

    def __init__(self, model, params: dict, optimizer, lr: float):
        self.model, self.current, self.opt, self.lr = model, params, optimizer, lr
        # the generated step fuses plain SGD's update into the backward pass
        self._fused = type(optimizer) is SGD
        # Two snapshots, taken in turn before each update into buffers allocated once, keep
        # the last finite parameters: the older one is needed when a finite loss came with a
        # non-finite gradient, so that the parameters it left were already bad.
        try:
            self._snapshots = [{k: np.array(params[k], copy=True) for k in model.params} for _ in range(2)]
        except MemoryError:
            raise TrainingError("not enough memory to keep a copy of the parameters while training") from None
        self._t = 0
        # a 1 × k parameter given as (k,) trains as its (1, k) view (written through in place)
        self._rows = model._declared(params)

    def batch(self, X: np.ndarray, Y: np.ndarray):
        """NumPy rows are what the generated code takes."""
        return X, Y

    def __call__(self, X, Y) -> float:
        m, params = self.model, self.current
        snapshot = self._snapshots[self._t % 2]     # the older one's buffers get the copy
        self._t += 1
        for k, buf in snapshot.items():
            np.copyto(buf, params[k])
        rows = self._rows
        if self._fused:
            return float(m._run(m._step, X, Y, rows, self.lr))
        value, grads = m._run(m._grad, X, Y, rows)
        value = float(value)
        if math.isfinite(value):        # a non-finite loss ends the run: no update from it
            self.opt.update(rows, dict(zip(m.params, grads)), self.lr)
        return value

    def restore(self) -> None:
        """The newest all-finite snapshot back into the user's arrays, in place."""
        for snapshot in (self._snapshots[(self._t - 1) % 2], self._snapshots[self._t % 2]):
            if all(np.isfinite(v).all() for v in snapshot.values()):
                for k, v in snapshot.items():
                    if isinstance(self.current[k], np.ndarray) and self.current[k].flags.writeable:
                        np.copyto(self.current[k], v)
                    else:       # a plain number the update rebound: rebind it back
                        self.current[k] = v.copy()
                return

    def mark(self):
        """Nothing: an eager run never reruns an epoch."""

    def done(self) -> None:
        """Nothing: the user's arrays are the trained ones already."""


class Compiled:
    """The JAX and torch Models' updates: one pure function (the generated gradient, then the
    optimizer's :meth:`~symback.optimizers.Optimizer.apply`) that the backend compiles, its
    loss summed on the device; the user's dict gets the result at the end."""

    def __init__(self, model, params: dict, optimizer, lr: float):
        self.model, self.params, self.lr = model, params, lr
        # trained as the library's own arrays in their declared shapes (Model._pure: NumPy arrays and
        # numbers converted, a (k,) row seen as (1, k)), given back in the user's (_given_shapes)
        self._given = _given_shapes(model, params)
        self.current = model._replicate(model._pure({k: params[k] for k in model.params}))
        # symback's optimizers run compiled; any other object's in-place update(params, grads,
        # lr) runs in Python after each batch's gradient, which it reads: eager
        self.eager = not is_pure(optimizer)
        if self.eager:
            self.state, self.rate, self._update = {}, lr, self._python_update(optimizer)
        else:
            self.state = model._replicate(optimizer.init(self.current))
            self.rate, self._update = model._rate(lr), model._compiled_update(optimizer)
        self._kept = (self.current, self.current)

    def batch(self, X: np.ndarray, Y: np.ndarray):
        """A NumPy batch as the library's arrays, on the devices (where the parameters are)."""
        return self.model._place(X, self.current), self.model._place(Y, self.current)

    def __call__(self, X, Y):
        if self.eager:      # the update makes new arrays: remembering the old ones copies nothing
            self._kept = (self.current, self._kept[0])
        value, self.current, self.state = self._update(X, Y, self.current, self.state, self.rate)
        return float(value) if self.eager else value

    def _python_update(self, optimizer):
        grad, names = self.model._ns["_grad"], self.model.params

        def update(X, Y, params, state, lr):
            value, grads = grad(X, Y, params)
            # copies (v * 1: the library's own), so that the kept parameters stay as they were
            params = {k: v * 1 for k, v in params.items()}
            if math.isfinite(float(value)):
                optimizer.update(params, dict(zip(names, grads)), lr)
            return value, params, state

        return update

    def restore(self) -> None:
        """The newest all-finite parameters kept into the user's dict."""
        host = self.model._host
        for kept in self._kept:
            if all(np.isfinite(np.asarray(host(v))).all() for v in kept.values()):
                self.params.update(self._as_given(kept))
                return

    def mark(self):
        """The parameters and optimizer state now (references)."""
        return self.current, self.state

    def rewind(self, mark) -> None:
        """Back to the parameters and state of :meth:`mark`."""
        self.current, self.state = mark
        self._kept = (self.current, self.current)

    def done(self) -> None:
        """The trained parameters into the user's dict (its entries replaced)."""
        self.params.update(self._as_given(self.current))

    def _as_given(self, params: dict) -> dict:
        return {k: v.reshape(self._given[k]) if k in self._given else v for k, v in params.items()}


def _given_shapes(model, params: dict) -> dict:
    """{name: shape} of the parameters given in another shape than declared: a 1 × k row as the
    (k,) the Model accepts.  Their gradients come in the declared shape (1, k), which an update
    in place cannot write into (k,) (and a compiled one would broadcast it to (1, k))."""
    shapes = model._ns["SHAPES"]
    return {k: tuple(np.shape(params[k])) for k in model.params
            if tuple(np.shape(params[k])) != tuple(shapes[k])}
