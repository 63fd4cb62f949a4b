"""Training: optimizers and the mini-batch loop behind ``Model.fit``, and what a run reports.

Every gradient comes from the model's generated code; this module only
shuffles, batches and applies updates.  Updates are in place, so the
caller's parameter dict is the trained one.  Around a run (``symback
train``, ``symback demo``): a memory check before it, gradient norms
recorded during it, and after it the per-epoch losses, the accuracy and
a plot of the loss curve.
"""
from __future__ import annotations

import io
import math
import warnings
from pathlib import Path

import numpy as np

from .data import available_memory, format_bytes, output_function
from .errors import DataError, SymbackError, TrainingError

__all__ = ["SGD", "Momentum", "Adam", "OPTIMIZERS", "get_optimizer", "History", "fit", "flow_nodes", "check_memory",
           "NormRecorder", "epoch_losses", "fit_recorded", "accuracy", "resume_params", "plot_history"]


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
        #: node -> ‖∂L/∂node‖ at each epoch's first batch, before its update (``fit(flow=...)``)
        self.flow: dict[str, list[float]] = {}

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


def flow_nodes(model, flow) -> list[str]:
    """The nodes ``fit(flow=...)`` records: True for the graph's states (a recurrent net's h_t,
    a deep net's hidden-layer outputs), or the names given; [] for None or False."""
    if flow is None or flow is False:
        return []
    nodes = list(model.derivation.graph.states) if flow is True else (
        [flow] if isinstance(flow, str) else list(flow))
    if not nodes:
        raise TrainingError("flow=True records the states a builder names (rnn, lstm, gru, mlp, "
                            "Sequential); this graph has none: give the node names, flow=['h1', ...]")
    return nodes


def fit(model, X, Y, params: dict, epochs: int = 20, lr: float = 0.1, batch_size: int | None = 32,
        seed: int = 0, optimizer="sgd", validation=None, progress: bool = False,
        shuffle: bool = True, flow=None, **options) -> History:
    """Train ``params`` in place with shuffled mini-batches; returns the :class:`History`.

    Each epoch visits the rows of X in a fresh random order (from ``seed``)
    in batches of ``batch_size`` (None: the whole set), one optimizer update
    per batch.  ``optimizer`` is "sgd", "momentum" (option ``beta``) or
    "adam" (``beta1``, ``beta2``, ``eps``), or an object with
    ``update(params, grads, lr)``.  ``validation=(Xv, Yv)`` records the
    validation loss after every epoch; ``progress=True`` shows a tqdm bar.
    ``flow=True`` (or a list of node names) records ‖∂L/∂node‖ of the graph's states at each
    epoch's first batch in ``history.flow``: the gradient's flow through time or depth.
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
    nodes = flow_nodes(model, flow)
    history.flow = {k: [] for k in nodes}
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
            if nodes and b == 0:
                for k, v in model.adjoint_norms(xb, yb, params, nodes).items():
                    history.flow[k].append(v)
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


# ---------------------------------------------------------------- what a run reports
def check_memory(d, optimizer: str, batch: int, itemsize: int, what: str = "the network") -> None:
    """Refuse a matrix network whose training cannot fit in this machine's memory, before
    anything is allocated (the OS would otherwise kill the process minutes later)."""
    g = d.graph
    size = lambda n: int(g.shape(n)[0]) * int(g.shape(n)[1])     # noqa: E731
    count = sum(size(p) for p in g.param_names)
    # parameters, gradients, fit's two snapshots, and the optimizer's state per parameter
    copies = 4 + {"momentum": 1, "adam": 2}.get(optimizer, 0)
    # every node's value for the batch, and its adjoint on the way back
    activations = 2 * batch * sum(int(g.shape(n)[1]) for n in g.node_names if g.shape(n))
    need = (count * copies + activations) * itemsize
    free = available_memory()
    if free is not None and need > free:
        raise SymbackError(f"{what}: training would need about "
                           f"{format_bytes(need)} ({count:.3g} parameters); this machine has "
                           f"{format_bytes(free)} available")


class NormRecorder:
    """An optimizer wrapper for fit that records each parameter's gradient norm per epoch."""

    def __init__(self, name: str, params: list[str], batches_per_epoch: int):
        self.inner = get_optimizer(name)
        self.params, self.batches = list(params), batches_per_epoch
        self.norms: dict[str, list[float]] = {p: [] for p in self.params}

    def update(self, params: dict, grads: dict, lr: float) -> None:
        """Record ||grad|| for every parameter, then let the real optimizer step."""
        for p in self.params:
            self.norms[p].append(float(np.linalg.norm(grads[p])))
        self.inner.update(params, grads, lr)

    def per_epoch(self) -> dict[str, list[float]]:
        """Mean gradient norm over each epoch's batches, per parameter."""
        out = {}
        for p, series in self.norms.items():
            a = np.asarray(series)
            n = len(a) // self.batches
            out[p] = list(a[:n * self.batches].reshape(n, self.batches).mean(axis=1)) if n else []
        return out


def epoch_losses(history) -> list[float]:
    """Per-epoch losses from fit's History (a list of floats)."""
    return [float(v) for v in history]


def fit_recorded(model, X, Y, params: dict, *, norms: bool = False, **options) -> tuple[list, dict, dict]:
    """``model.fit`` for a report: (the per-epoch losses, each parameter's gradient norms, the
    gradient's flow ‖∂L/∂state‖ per epoch).

    With ``norms`` the optimizer is wrapped in a :class:`NormRecorder` (the second item is its
    mean gradient norm per epoch, per parameter) and, when the graph names states (a deep or
    recurrent builder's), ``fit(flow=True)`` records the third (else both are {}).
    NumPy's warnings are silenced: a diverging run ends in one TrainingError.
    """
    optimizer = options.pop("optimizer", "sgd")
    if norms:
        optimizer = NormRecorder(optimizer, model.params, -(-len(X) // (options.get("batch_size") or len(X))))
        if model.derivation.graph.states:
            options["flow"] = True
    with np.errstate(all="ignore"):
        history = model.fit(X, Y, params, optimizer=optimizer, **options)
    return epoch_losses(history), (optimizer.per_epoch() if norms else {}), history.flow


def accuracy(d, model, X, Y, params) -> float | None:
    """Classification accuracy for softmax (argmax) or one-sigmoid-output networks, else None."""
    from .functions import sigmoid, softmax
    out = output_function(d)
    P = np.asarray(model.predict(X, params))
    if out is softmax:
        # one class per row of the output: (n, K), or (n, T, K) for one-sample matrices
        # (an image network's (n, 1, K)); the last axis holds the classes
        return float(np.mean(P.reshape(-1, P.shape[-1]).argmax(axis=1) == Y.reshape(-1, Y.shape[-1]).argmax(axis=1)))
    if out is sigmoid and Y.shape[1] == 1 and np.isin(Y, (0.0, 1.0)).all():
        return float(np.mean((P[:, 0] > 0.5) == (Y[:, 0] > 0.5)))
    return None


def resume_params(model, path) -> dict:
    """Parameters saved by ``symback train`` (no pickle), checked against the model and finite."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such parameter file")
    params = model.load(path)
    for k, v in params.items():
        if not np.all(np.isfinite(v)):
            raise DataError(f"{path}: parameter {k} contains NaN or infinite values")
    return params


def plot_history(losses: list[float], norms: dict | None = None, flow: dict | None = None) -> bytes:
    """PNG bytes: the loss per epoch, each parameter's gradient norm per epoch if given, and the
    gradient's flow ‖∂L/∂state‖ through the layers (or time steps) at the first and last epoch."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    norms = {k: v for k, v in (norms or {}).items() if len(v) and min(v) > 0}
    flow = {k: v for k, v in (flow or {}).items() if len(v) and min(v) > 0}
    panels = 1 + bool(norms) + bool(flow)
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels + 0.5, 4), squeeze=False)
    ax = axes[0][0]
    ax.plot(range(1, len(losses) + 1), losses, marker="o" if len(losses) < 30 else None)
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss")
    if min(losses) > 0 and max(losses) > 20 * min(losses):
        ax.set_yscale("log")
    ax.set_title("loss")
    if norms:
        ax2 = axes[0][1]
        for name, series in norms.items():
            ax2.plot(range(1, len(series) + 1), series, label=name)
        ax2.set_xlabel("epoch")
        ax2.set_ylabel("gradient norm")
        ax2.set_yscale("log")
        ax2.legend(fontsize="small")
        ax2.set_title("gradient norm (mean over each epoch's batches)")
    if flow:
        ax3 = axes[0][panels - 1]
        names = list(flow)
        for epoch, style in ((0, "o-"), (-1, "s--")):
            ax3.plot(range(1, len(names) + 1), [flow[k][epoch] for k in names], style,
                     label="first epoch" if epoch == 0 else "last epoch")
        ax3.set_xticks(range(1, len(names) + 1), names, fontsize="small")
        ax3.set_yscale("log")
        ax3.set_ylabel("‖∂L/∂A‖ (first batch)")
        ax3.legend(fontsize="small")
        ax3.set_title("gradient flow through the layers")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()
