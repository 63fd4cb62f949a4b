"""Training: optimizers and the mini-batch loop behind ``Model.fit``.

Every gradient comes from the model's generated code; this module only
shuffles, batches and applies updates.  Updates are in place, so the
caller's parameter dict is the trained one.
"""
from __future__ import annotations

import math
import warnings

import numpy as np

from .errors import DataError, TrainingError

__all__ = ["SGD", "Momentum", "Adam", "OPTIMIZERS", "get_optimizer", "History", "fit"]


class SGD:
    """Plain gradient descent: p ← p − lr·g."""

    name = "sgd"

    def update(self, params: dict, grads: dict, lr: float) -> None:
        """Apply one update to params in place."""
        for k, g in grads.items():
            params[k] -= lr * g


class Momentum:
    """Gradient descent with (heavy-ball) momentum: v ← βv + g, p ← p − lr·v."""

    name = "momentum"

    def __init__(self, beta: float = 0.9):
        if not 0.0 <= beta < 1.0:
            raise TrainingError(f"momentum beta must be in [0, 1), got {beta}")
        self.beta = beta
        self.velocity: dict = {}

    def update(self, params: dict, grads: dict, lr: float) -> None:
        """Apply one update to params in place."""
        for k, g in grads.items():
            v = self.velocity.get(k)
            if v is None:
                v = self.velocity[k] = np.zeros_like(g)
            v *= self.beta
            v += g
            params[k] -= lr * v


class Adam:
    """Adam (Kingma & Ba, 2015), with bias-corrected first and second moments."""

    name = "adam"

    def __init__(self, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8):
        if not (0.0 <= beta1 < 1.0 and 0.0 <= beta2 < 1.0) or eps <= 0:
            raise TrainingError(f"Adam needs 0 <= beta1, beta2 < 1 and eps > 0, got {beta1}, {beta2}, {eps}")
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.t = 0
        self.m: dict = {}
        self.v: dict = {}

    def update(self, params: dict, grads: dict, lr: float) -> None:
        """Apply one update to params in place."""
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        scale = lr * math.sqrt(1 - b2 ** self.t) / (1 - b1 ** self.t)
        for k, g in grads.items():
            if k not in self.m:
                self.m[k], self.v[k] = np.zeros_like(g), np.zeros_like(g)
            m, v = self.m[k], self.v[k]
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * (g * g)
            params[k] -= scale * m / (np.sqrt(v) + self.eps)


OPTIMIZERS = {"sgd": SGD, "momentum": Momentum, "adam": Adam}


def get_optimizer(spec="sgd", **options):
    """An optimizer from its name ('sgd', 'momentum', 'adam') and options, or one passed through."""
    if hasattr(spec, "update") and not isinstance(spec, str):
        return spec
    if spec not in OPTIMIZERS:
        raise TrainingError(f"unknown optimizer {spec!r}; use one of {', '.join(OPTIMIZERS)}")
    try:
        return OPTIMIZERS[spec](**options)
    except TypeError as exc:
        raise TrainingError(f"bad options for optimizer {spec!r}: {exc}") from None


class History(list):
    """Per-epoch mean training losses (the list itself), with validation losses.

    ``history[-1]`` is the last epoch's loss; ``history.loss`` and
    ``history["loss"]`` are the same list; ``history.val_loss`` (also
    ``history["val_loss"]``) holds the validation losses when a validation
    set was given, else is empty.
    """

    def __init__(self):
        super().__init__()
        self.val_loss: list[float] = []

    @property
    def loss(self) -> list[float]:
        """The per-epoch training losses."""
        return list(self)

    def __getitem__(self, key):
        if isinstance(key, str):
            if key == "loss":
                return list(self)
            if key == "val_loss":
                return self.val_loss
            raise KeyError(f"History has 'loss' and 'val_loss', not {key!r}")
        return super().__getitem__(key)

    def __repr__(self):
        return f"History(loss={list(self)!r}, val_loss={self.val_loss!r})"


def _progress_bar(epochs: int, progress: bool):
    if not progress:
        return range(epochs), None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        warnings.warn("progress=True needs tqdm (pip install tqdm); training without a progress bar",
                      stacklevel=3)
        return range(epochs), None
    bar = tqdm(range(epochs), desc="fit", unit="epoch")
    return bar, bar


def _snapshot_buffers(params: dict, names) -> list[dict]:
    """Two copies of params, for the snapshots fit() takes before updates."""
    try:
        return [{k: np.array(params[k], copy=True) for k in names} for _ in range(2)]
    except MemoryError:
        raise TrainingError("not enough memory to keep a copy of the parameters while training") from None


def _restore(params: dict, newest: dict, older: dict) -> None:
    """Put the newest all-finite snapshot back into params, in place."""
    for snapshot in (newest, older):
        if all(np.isfinite(v).all() for v in snapshot.values()):
            for k, v in snapshot.items():
                if isinstance(params[k], np.ndarray) and params[k].flags.writeable:
                    np.copyto(params[k], v)
                else:       # a plain number the update rebound: rebind it back
                    params[k] = v.copy()
            return


def fit(model, X, Y, params: dict, epochs: int = 20, lr: float = 0.1, batch_size: int | None = 32,
        seed: int = 0, optimizer="sgd", validation=None, progress: bool = False,
        shuffle: bool = True, **options) -> History:
    """Train ``params`` in place with shuffled mini-batches; returns the :class:`History`.

    Each epoch visits the rows of X in a fresh random order (from ``seed``)
    in batches of ``batch_size`` (None: the whole set), one optimizer update
    per batch.  ``optimizer`` is "sgd", "momentum" (option ``beta``) or
    "adam" (``beta1``, ``beta2``, ``eps``), or an object with
    ``update(params, grads, lr)``.  ``validation=(Xv, Yv)`` records the
    validation loss after every epoch; ``progress=True`` shows a tqdm bar.
    A non-finite loss stops training with a TrainingError, and ``params``
    are left as they were before the update that led there (their last
    finite values), not at what that update made of them.
    """
    if not isinstance(epochs, (int, np.integer)) or epochs < 0:
        raise TrainingError(f"epochs must be a non-negative integer, got {epochs!r}")
    if not (isinstance(lr, (int, float, np.floating)) and math.isfinite(lr) and lr > 0):
        raise TrainingError(f"lr must be a positive finite number, got {lr!r}")
    X, Y = model._xy(X, Y)
    model.check_params(params)
    bad = [k for k in model.params if not np.all(np.isfinite(params[k]))]
    if bad:
        raise DataError(f"parameter {bad[0]} holds NaN or infinite values; training cannot start from it")
    n = X.shape[0]
    if batch_size is None:
        batch_size = n
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise TrainingError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    if validation is not None:
        try:
            Xv, Yv = validation
        except (TypeError, ValueError):
            raise DataError("validation must be a pair (X_val, Y_val)") from None
        Xv, Yv = model._xy(Xv, Yv)
    opt = get_optimizer(optimizer, **options)
    fast_sgd = isinstance(opt, SGD) and type(opt) is SGD   # the generated step fuses the update
    rng = np.random.default_rng(seed)
    history = History()
    epochs_iter, bar = _progress_bar(int(epochs), progress)
    step, grad = model._step, model._grad
    # The loss a step reports is the one *before* its update, so a non-finite loss is
    # seen only after the update it produced has been applied.  Two snapshots, taken
    # in turn before each update into buffers allocated once, keep the last finite
    # parameters: the older one is needed when a finite loss came with a non-finite
    # gradient, so that the parameters it left were already bad.
    snapshots = _snapshot_buffers(params, model.params)
    t = 0      # updates so far: the snapshot slot alternates with it, across epochs too
    for epoch in epochs_iter:
        order = rng.permutation(n) if shuffle else np.arange(n)
        total = 0.0
        for b, start in enumerate(range(0, n, batch_size)):
            idx = order[start:start + batch_size]
            xb, yb = X[idx], Y[idx]
            snapshot, older = snapshots[t % 2], snapshots[(t + 1) % 2]
            t += 1
            for k, buf in snapshot.items():
                np.copyto(buf, params[k])
            if fast_sgd:
                value = float(model._run(step, xb, yb, params, lr))
            else:
                value, grads = model._run(grad, xb, yb, params)
                value = float(value)
                if math.isfinite(value):
                    opt.update(params, dict(zip(model.params, grads)), lr)
            if not math.isfinite(value):
                if bar is not None:
                    bar.close()
                _restore(params, snapshot, older)
                raise TrainingError(
                    f"the loss became {value} at epoch {epoch + 1}, batch {b + 1}: training stopped "
                    f"and the parameters were left at their last finite values "
                    f"(lr={lr} may be too large, or the data hold non-finite values)")
            total += value * len(idx) if model.reduction == "mean" else value
        history.append(total / n if model.reduction == "mean" else total)
        if validation is not None:
            history.val_loss.append(model.loss(Xv, Yv, params))
        if bar is not None:
            bar.set_postfix(loss=f"{history[-1]:.4g}",
                            **({"val_loss": f"{history.val_loss[-1]:.4g}"} if validation is not None else {}))
    return history
