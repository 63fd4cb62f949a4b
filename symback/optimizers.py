"""The optimizers every backend's ``fit`` uses: SGD, momentum and Adam, each written once.

An optimizer's arithmetic is one pure function, :meth:`Optimizer.moves`: from the
gradients and its state (velocities, moments, step count) to how far each parameter
moves, and the new state.  It is plain array arithmetic, so the same lines run on
NumPy, JAX and torch arrays, inside ``jax.jit`` too.  Two ways to apply it:

- :meth:`Optimizer.apply` — pure, ``(params, state) -> (params, state)``: what a
  backend compiles into its step (``jax.jit``);
- :meth:`Optimizer.update` — in place, ``update(params, grads, lr)`` keeping the state
  in the optimizer: the protocol ``fit`` accepts from any object, and what the NumPy
  backend runs (no new arrays for the parameters themselves).
"""
from __future__ import annotations

import inspect

import math

import numpy as np

from .errors import TrainingError

__all__ = ["Optimizer", "SGD", "Momentum", "Adam", "OPTIMIZERS", "get_optimizer", "is_pure"]


class Optimizer:
    """One optimizer's update rule (see the module docstring); subclasses define :meth:`moves`."""

    name = ""

    def init(self, params: dict) -> dict:
        """The state for these params before the first update (velocities, moments: zeros)."""
        return {}

    def moves(self, grads: dict, state: dict, lr) -> tuple[dict, dict]:
        """({name: how far the parameter moves down}, the new state): pure arithmetic."""
        raise NotImplementedError

    def apply(self, params: dict, grads: dict, state: dict, lr) -> tuple[dict, dict]:
        """New (params, state) after one update, nothing changed in place."""
        moves, state = self.moves(grads, state, lr)
        return {k: params[k] - moves[k] for k in params}, state

    def update(self, params: dict, grads: dict, lr: float) -> None:
        """Apply one update to params in place (the state is kept in the optimizer)."""
        state = getattr(self, "_state", None)
        if state is None:
            state = self.init({k: params[k] for k in grads})
        moves, self._state = self.moves(grads, state, lr)
        for k, move in moves.items():
            params[k] -= move


# _fresh: the optimizers' arithmetic updates with += and /= only arrays it has just made
# (b1 * m, never m itself): nothing given to ``moves`` changes, so it stays pure on every
# library (a JAX array rebinds, a NumPy or torch array is written in place), and NumPy's
# in-place fit makes as few temporaries per step as hand-written in-place code.


def _zeros(params: dict) -> dict:
    # v * 0 is a zero of v's own library, dtype, shape and device (the params are finite)
    return {k: v * 0 for k, v in params.items()}


class SGD(Optimizer):
    """Plain gradient descent: p ← p − lr·g."""

    name = "sgd"

    def moves(self, grads, state, lr):
        """lr·g for every parameter."""
        return {k: lr * g for k, g in grads.items()}, state


class Momentum(Optimizer):
    """Gradient descent with (heavy-ball) momentum: v ← βv + g, p ← p − lr·v."""

    name = "momentum"

    def __init__(self, beta: float = 0.9):
        if not 0.0 <= beta < 1.0:
            raise TrainingError(f"momentum beta must be in [0, 1), got {beta}")
        self.beta = beta

    def init(self, params):
        """Zero velocities."""
        return {"v": _zeros(params)}

    def moves(self, grads, state, lr):
        """lr·v with the new velocity v = βv + g."""
        beta, v, moves = self.beta, {}, {}
        for k, g in grads.items():      # (see _fresh)
            vk = beta * state["v"][k]
            vk += g
            v[k], moves[k] = vk, lr * vk
        return moves, {"v": v}


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015), with bias-corrected first and second moments."""

    name = "adam"

    def __init__(self, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8):
        if not (0.0 <= beta1 < 1.0 and 0.0 <= beta2 < 1.0) or eps <= 0:
            raise TrainingError(f"Adam needs 0 <= beta1, beta2 < 1 and eps > 0, got {beta1}, {beta2}, {eps}")
        self.beta1, self.beta2, self.eps = beta1, beta2, eps

    def init(self, params):
        """Zero moments, no step taken."""
        return {"m": _zeros(params), "v": _zeros(params), "t": 0}

    def moves(self, grads, state, lr):
        """lr·m̂ / (√v̂ + ε) with the new moments m, v and their bias corrections m̂ = m/(1−β₁ᵗ),
        v̂ = v/(1−β₂ᵗ) (the paper's Algorithm 1, as torch.optim.Adam and optax.adam), computed
        as lr·c/(1−β₁ᵗ) · m / (√v + ε c) with c = √(1−β₂ᵗ): the same, with no pass over v̂."""
        b1, b2, t = self.beta1, self.beta2, state["t"] + 1
        # t is a Python int on NumPy and torch, a traced one under jax.jit: math.sqrt where it can
        decay = 1 - b2 ** t
        c = math.sqrt(decay) if isinstance(decay, float) else decay ** 0.5
        # ε beside √v̂, not √v: ε c beside √v (ε beside √v made each early move smaller than
        # torch's by up to 3e-7 relative)
        scale, eps = lr * c / (1 - b1 ** t), self.eps * c
        m, v, moves = {}, {}, {}
        for k, g in grads.items():      # one pass, few temporaries: see _fresh
            mk = b1 * state["m"][k]
            mk += (1 - b1) * g
            vk = b2 * state["v"][k]
            vk += (1 - b2) * (g * g)
            root = _sqrt(vk)
            root += eps
            move = scale * mk
            move /= root
            m[k], v[k], moves[k] = mk, vk, move      # after the updates: a JAX array's += rebinds
        return moves, {"m": m, "v": v, "t": t}


def _sqrt(a):
    # x ** 0.5 is the library's sqrt for arrays (NumPy, torch, JAX), but for a NumPy scalar (a
    # scalar graph's moment) it is C's pow, 1 ulp off sqrt now and then: np.sqrt keeps those exact
    return np.sqrt(a) if isinstance(a, (np.ndarray, np.generic)) else a ** 0.5


OPTIMIZERS = {"sgd": SGD, "momentum": Momentum, "adam": Adam}


def get_optimizer(spec="sgd", **options):
    """An optimizer from its name ('sgd', 'momentum', 'adam') and options, or one passed through."""
    if hasattr(spec, "update") and not isinstance(spec, str):
        if options:
            raise TrainingError(f"options {', '.join(map(repr, options))} are for a named optimizer, "
                                f"not for the optimizer object given")
        return spec
    if not isinstance(spec, str) or spec not in OPTIMIZERS:
        raise TrainingError(f"unknown optimizer {spec!r}; use one of {', '.join(OPTIMIZERS)}")
    takes = list(inspect.signature(OPTIMIZERS[spec]).parameters)
    unknown = [k for k in options if k not in takes]
    if unknown:     # a misspelt option (momentumm=0.9) named, with the ones this optimizer takes
        raise TrainingError(f"unknown option {', '.join(map(repr, unknown))} for optimizer {spec!r}; it takes "
                            + (", ".join(takes) if takes else "no options") + " (fit's own: epochs, lr, "
                            "batch_size, seed, optimizer, validation, progress, shuffle, flow)")
    try:
        return OPTIMIZERS[spec](**options)
    except TypeError as exc:
        raise TrainingError(f"bad options for optimizer {spec!r}: {exc}") from None


def is_pure(opt) -> bool:
    """Whether ``opt`` updates by its pure :meth:`Optimizer.apply` (a backend may compile it):
    one of symback's optimizers whose in-place ``update`` was not replaced by a subclass."""
    return isinstance(opt, Optimizer) and type(opt).update is Optimizer.update
