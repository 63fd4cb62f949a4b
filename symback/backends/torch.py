"""The PyTorch Model, and ``Model.module()``: a ``torch.nn.Module`` whose backward is symback's.

The generated module (printed by :class:`~symback.printing.torch.TorchPrinter`)
computes the forward assignments and then the derivation's adjoints with
plain tensor operations under ``torch.no_grad``; torch's autograd records
nothing.  :meth:`Model.module` wraps its ``forward``/``backward`` pair in a
``torch.autograd.Function``, and its prediction with the generated ``_vjp`` in
another (a layer inside any model), so ordinary PyTorch code — optimizers, LR
schedulers, ``DistributedDataParallel`` — trains the network on symback's
derived formulas.  float64 by default, as the NumPy backend.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..errors import DataError, SymbackError
from ._model import BackendModel

__all__ = ["Model"]


def _function_class():
    """The torch.autograd.Function whose backward is the derivation's backward assignments."""
    import torch

    class SymbackLoss(torch.autograd.Function):
        """L(X, Y, params) forward; backward: symback's ∂L/∂p times the incoming gradient."""

        @staticmethod
        def forward(ctx, ns, X, Y, *params):
            names = ns["PARAMS"]
            values = ns["forward"](X, Y, dict(zip(names, params)))
            tensors = {k: v for k, v in values.items() if isinstance(v, torch.Tensor)}
            ctx.ns, ctx.keys = ns, list(tensors)
            ctx.others = {k: v for k, v in values.items() if k not in tensors}
            ctx.save_for_backward(X, Y, *params, *tensors.values())
            return values[ns["LOSS"]]

        @staticmethod
        def backward(ctx, upstream):
            X, Y, *rest = ctx.saved_tensors
            names = ctx.ns["PARAMS"]
            n = len(names)
            values = {**dict(zip(ctx.keys, rest[n:])), **ctx.others}
            _, grads = ctx.ns["backward"](X, Y, dict(zip(names, rest[:n])), values)
            return (None, None, None, *[upstream * g for g in grads])

    return SymbackLoss


@lru_cache(maxsize=None)
def _layer_class():
    """The torch.autograd.Function of the network as a layer: forward the generated prediction,
    backward the generated ``_vjp`` (the derivation of ⟨G, Ŷ⟩ w.r.t. X and every parameter)."""
    import torch

    class SymbackLayer(torch.autograd.Function):
        """Ŷ = predict(X, params); backward: symback's ∂⟨G, Ŷ⟩/∂X and ∂⟨G, Ŷ⟩/∂p for the incoming G."""

        @staticmethod
        def forward(ctx, ns, rows, X, *params):
            prediction, values = ns["_vjp_forward"](X, dict(zip(ns["PARAMS"], params)))
            tensors = {k: v for k, v in values.items() if isinstance(v, torch.Tensor)}
            ctx.ns, ctx.keys, ctx.rows = ns, list(tensors), rows
            ctx.others = {k: v for k, v in values.items() if k not in tensors}
            ctx.save_for_backward(X, *params, *tensors.values())
            # rows: one row a sample, returned as (n, K) (the generated _as_given)
            return prediction.reshape(prediction.shape[0], -1) if rows else prediction

        @staticmethod
        def backward(ctx, G):
            X, *rest = ctx.saved_tensors
            n = len(ctx.ns["PARAMS"])
            params, values = rest[:n], {**dict(zip(ctx.keys, rest[n:])), **ctx.others}
            G = G.reshape(G.shape[0], 1, -1) if ctx.rows else G.contiguous()
            dX, grads = ctx.ns["_vjp_backward"](X, G, dict(zip(ctx.ns["PARAMS"], params)), values)
            # a 1 × n parameter held as an (n,) tensor gets its gradient in that shape, and
            # images (n, C, H, W) theirs as images (the code holds each as (n, C, H·W))
            return (None, None, dX.reshape(X.shape), *[g.reshape(p.shape) for g, p in zip(grads, params)])

    return SymbackLayer


class Model(BackendModel):
    """symback's generated PyTorch code for one network (see the module docstring)."""

    backend = "torch"

    def _host(self, a):
        import torch
        return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else a

    def _compile(self, fn):
        import torch
        return torch.no_grad()(fn)

    def _convert(self, a, params=None):
        # NumPy data go where the parameters are (a GPU, say); tensors stay where they are given
        t = self._ns["_asarray"](a)
        device = _device(params)
        return t if device is None or t.device == device else t.to(device)

    def _pure(self, params, X=None):
        # NumPy parameters are converted for a pure call (predict, loss, grad, vjp), placed where
        # X is or where the other parameters are; step updates tensors in place (fit: symback.updates)
        import torch
        self.check_params(params)
        if not isinstance(params, dict) or all(isinstance(v, torch.Tensor) for v in params.values()):
            return self._declared(params)
        device = _device(params) or (X.device if isinstance(X, torch.Tensor) else None)
        out = {}
        for k, v in params.items():
            if not isinstance(v, torch.Tensor):
                try:
                    v = torch.as_tensor(np.asarray(v, dtype=self.dtype), device=device)
                except (TypeError, ValueError) as exc:
                    raise DataError(f"parameter {k!r} is not numeric array data: {exc}") from None
            out[k] = v
        return self._declared(out)

    def _check_updatable(self, params):
        # a number was left as it was: its step ran on a converted copy, and no error said so
        import torch
        for k in self.params:
            if not isinstance(params[k], torch.Tensor):
                raise DataError(f"parameter {k!r} is a {type(params[k]).__name__}, not a torch.Tensor: "
                                f"step updates the parameters in place, so it needs tensors: start from "
                                f"m.init(), or convert with torch.as_tensor (fit converts them for you)")

    def _misplaced(self, data, params):
        self._check_updatable(params)
        device = _device(params)
        for what, a in zip(("X", "Y"), data):
            where = getattr(a, "device", None)
            if device is not None and where is not None and where != device:
                raise DataError(f"{what} is on {where} but the parameters are on {device}: "
                                f"move it with {what}.to({str(device)!r}) (NumPy data are moved for you)")

    def module(self, params: dict | None = None, seed: int = 0):
        """A ``torch.nn.Module`` holding the parameters (``params``, else ``init(seed)``).

        ``module(X)`` is the prediction as a differentiable layer: its backward
        is the derived vector-Jacobian product (:meth:`vjp`), so the module sits
        between other modules under any loss; ``module(X, Y)`` and
        ``module.loss(X, Y)`` are the batch loss L whose backward is symback's
        derived formulas.  Parameters live in
        ``module.params`` (a ParameterDict keyed by symback's names).
        """
        import torch
        ns, names, fn, model = self._ns, self.params, _function_class(), self
        check_targets = self._check_targets
        start = self.init(seed) if params is None else params
        self.check_params(start)

        class SymbackModule(torch.nn.Module):
            """The network; its loss's backward runs symback's derived formulas."""

            def __init__(self):
                super().__init__()
                self.params = torch.nn.ParameterDict(
                    {k: torch.nn.Parameter(torch.as_tensor(start[k], dtype=ns["DTYPE"]).clone()) for k in names})

            def forward(self, X, Y=None):
                """The prediction for X, a differentiable layer (its backward is symback's derived
                VJP w.r.t. X and every parameter); with targets Y, the batch loss L."""
                if Y is not None:
                    return self.loss(X, Y)
                model.check_input(X)
                given, X = X, ns["_data"](X, ns["N_INPUTS"], ns["X_SAMPLE"])
                why = model._layer_ns()["VJP_ERROR"]
                if why:             # no VJP for this graph: the prediction only where nothing is differentiated
                    if torch.is_grad_enabled() and (X.requires_grad or any(p.requires_grad for p in self.parameters())):
                        raise SymbackError(f"this network cannot be used as a layer: {why} (its prediction "
                                           "has no backward; under torch.no_grad() module(X) predicts)")
                    return ns["_as_given"](ns["_predict"](X, dict(self.params)), given)
                # one row a sample for X given as images or rows: (n, K), as _as_given says
                rows = ns["_rows_out"](np.shape(given))
                return _layer_class().apply(ns, rows, X, *[self.params[k] for k in names])

            def loss(self, X, Y):
                """The batch loss L; ``L.backward()`` fills each parameter's ``.grad``."""
                model.check_input(X)        # shapes torch would fail on deep in the formulas
                model._check_form(Y, "Y")
                # images, one-row samples as rows (a CNN's Y as (n, K)), as m.loss takes them
                given = Y
                X, Y = ns["_data"](X, ns["N_INPUTS"], ns["X_SAMPLE"]), ns["_data"](Y, ns["N_TARGETS"], ns["Y_SAMPLE"])
                if X.shape[0] != Y.shape[0]:
                    raise model._rows_error(X, Y, given)
                check_targets(Y)        # the targets its derived backward holds for
                return fn.apply(ns, X, Y, *[self.params[k] for k in names])

        return SymbackModule()


def _device(params):
    """The device of the first tensor in params (None for no tensor)."""
    import torch
    for v in (params or {}).values():
        if isinstance(v, torch.Tensor):
            return v.device
    return None
