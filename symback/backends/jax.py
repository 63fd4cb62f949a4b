"""The JAX Model: the generated module's jitted functions, and a data-parallel fit.

The module (printed by :class:`~symback.printing.jax.JaxPrinter`) holds
pure functions of ``(X, Y, params)`` — the forward assignments, then the
derivation's adjoints, nothing differentiated by JAX — under ``jax.jit``.
:meth:`Model.fit` shards every batch over all local devices (data
parallel, parameters replicated); XLA turns that into per-device passes
and an all-reduce of the gradient sums.

float64 is the default, as on every backend.  float64 needs JAX's *global* switch
``jax_enable_x64``: loading a float64 model flips it for the whole process
(``dtype="float32"`` leaves it alone).
"""
from __future__ import annotations

import numpy as np

from ._model import BackendModel

__all__ = ["Model"]


class Model(BackendModel):
    """symback's generated JAX code for one network (see the module docstring)."""

    backend = "jax"
    _immutable = True

    def function(self):
        """``f(params, X) -> Ŷ``, a ``jax.custom_vjp`` function: forward the generated prediction,
        backward the generated ``_vjp`` (symback's derived ∂⟨G, Ŷ⟩/∂X and ∂⟨G, Ŷ⟩/∂p).

        ``jax.grad`` of any loss through it, under ``jax.jit`` or not, runs symback's
        formulas for this network; ``params`` is a dict with exactly the model's names.
        """
        import jax
        from ..errors import SymbackError
        ns, names, dtype = self._layer_ns(), self.params, self.dtype
        if ns["VJP_ERROR"]:
            raise SymbackError(f"this network cannot be used as a layer: {ns['VJP_ERROR']}")

        as_given, as_samples = ns["_as_given"], ns["_as_samples"]

        def samples(X):     # one-row samples given as rows (n, k), a lone sample: as predict takes them
            return as_samples(X, ns["X_SAMPLE"])

        def checked(params, X):     # shapes are known when traced: a DataError, not XLA's
            self.check_input(X)
            self.check_params(params)
            return cast(samples(X))

        def cast(a):    # float32 data into a float64 model, as predict converts them (a convolution
            return a.astype(dtype) if a.dtype != dtype else a   # of the two dtypes is an XLA TypeError)

        @jax.custom_vjp
        def f(params, X):   # one row a sample, X images or rows: Ŷ as (n, K) (_as_given)
            return as_given(ns["_predict"](checked(params, X), params), X)

        def fwd(params, X):
            prediction, values = ns["_vjp_forward"](checked(params, X), params)
            return as_given(prediction, X), (params, X, values)

        def bwd(saved, G):
            params, X, values = saved        # the forward values: not computed a second time
            G = G.reshape(G.shape[0], 1, -1) if ns["ROW_OUTPUT"] and G.ndim == 2 else G
            dX, grads = ns["_vjp_backward"](cast(samples(X)), G, params, values)
            # the cotangent of params has params' structure: a (n,) bias gets an (n,) gradient
            return ({k: g.reshape(params[k].shape) for k, g in zip(names, grads)},
                    dX.reshape(X.shape).astype(X.dtype))

        f.defvjp(fwd, bwd)
        return f

    def _host(self, a):
        import jax
        return np.asarray(a) if isinstance(a, jax.Array) else a

    def _compile(self, fn):
        import jax
        return jax.jit(fn)

    def _mesh(self):
        if not hasattr(self, "_shardings"):
            import jax
            from jax.sharding import Mesh, NamedSharding, PartitionSpec
            devices = jax.local_devices()
            mesh = Mesh(np.array(devices), ("data",))
            self._shardings = (len(devices), NamedSharding(mesh, PartitionSpec("data")),
                               NamedSharding(mesh, PartitionSpec()))
        return self._shardings

    def _place(self, batch, params=None):
        # rows split over the devices when they divide evenly, else the batch is replicated
        import jax
        count, rows, replicated = self._mesh()
        sharding = rows if count > 1 and batch.shape[0] % count == 0 else replicated
        return jax.device_put(self._ns["_asarray"](batch), sharding)

    def _replicate(self, tree):
        import jax
        return jax.device_put(tree, self._mesh()[2])

    def _rate(self, lr):
        # on the devices once per fit, not copied there with every batch
        return self._replicate(self._ns["_rate"](float(lr)))
