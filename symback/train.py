"""Training: the one mini-batch loop behind every backend's ``Model.fit``, and what a run reports.

Every gradient comes from the model's generated code; this loop only shuffles,
batches, records and stops.  The optimizers are :mod:`symback.optimizers` (re-exported
here); how one batch updates the parameters on a backend is :mod:`symback.updates`
(in place on NumPy, so the caller's parameter dict is the trained one).  Around a run (``symback
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

from .data import available_memory, check_finite, check_rate, check_seed, format_bytes, output_function
from .errors import DataError, SymbackError, TrainingError
from .optimizers import OPTIMIZERS, SGD, Adam, Momentum, get_optimizer
from .targets import check_rows

__all__ = ["SGD", "Momentum", "Adam", "OPTIMIZERS", "get_optimizer", "History", "fit", "flow_nodes", "check_memory",
           "NormRecorder", "epoch_losses", "fit_recorded", "accuracy", "resume_params", "plot_history"]


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
    """Train ``params`` with shuffled mini-batches; returns the :class:`History`.

    The one training loop of every backend.  Each epoch visits the rows of X in a fresh
    random order (from ``seed``) in batches of ``batch_size`` (None: the whole set), one
    optimizer update per batch.  ``optimizer`` is "sgd", "momentum" (option ``beta``) or
    "adam" (``beta1``, ``beta2``, ``eps``), or an object with ``update(params, grads, lr)``.
    ``validation=(Xv, Yv)`` records the validation loss after every epoch; ``progress=True``
    shows a tqdm bar.  ``flow=True`` (or a list of node names) records ‖∂L/∂node‖ of the
    graph's states at each epoch's first batch in ``history.flow``: the gradient's flow
    through time or depth.  The NumPy Model updates the arrays of ``params`` in place; the
    JAX and torch Models replace its entries when the run ends.  A non-finite loss stops
    training with a TrainingError, and ``params`` are left as they were before the update
    that led there (their last finite values), not at what that update made of them.
    """
    if not isinstance(epochs, (int, np.integer)) or epochs < 0:
        raise TrainingError(f"epochs must be a non-negative integer, got {epochs!r}")
    check_rate(lr)
    check_seed(seed)
    X, Y = _host_data(model, X, Y)
    model.check_params(params)
    bad = [k for k in model.params if not np.all(np.isfinite(np.asarray(model._host(params[k]))))]
    if bad:
        raise DataError(f"parameter {bad[0]} holds NaN or infinite values; training cannot start from it")
    n = X.shape[0]
    if batch_size is None:
        batch_size = n
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise TrainingError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    # the smallest batch an epoch makes (the last one holds what is left)
    check_rows(min(batch_size, n - (n - 1) // batch_size * batch_size), model._min_rows,
               f"the last batch (of {n} samples in batches of {batch_size})")
    if validation is not None:
        try:
            Xv, Yv = validation
        except (TypeError, ValueError):
            raise DataError("validation must be a pair (X_val, Y_val)") from None
        Xv, Yv = _host_data(model, Xv, Yv)
    updates = model._updates(params, get_optimizer(optimizer, **options), lr)
    rng = np.random.default_rng(seed)
    history = History()
    nodes = flow_nodes(model, flow)
    history.flow = {k: [] for k in nodes}
    epochs_iter, bar = _progress_bar(int(epochs), progress)
    run = _Run(model, updates, X, Y, lr, bar)
    for epoch in epochs_iter:
        order = rng.permutation(n) if shuffle else np.arange(n)
        batches = [order[start:start + batch_size] for start in range(0, n, batch_size)]
        start = updates.mark()
        total = run.epoch(epoch, batches, history.flow)
        loss = float(total) / n if model.reduction == "mean" else float(total)
        if not (updates.eager or math.isfinite(loss)):
            # summed on the device, the loss is seen once per epoch: the epoch again, each
            # batch's loss read at once, finds the update that broke it and the parameters before it
            updates.rewind(start)
            updates.eager = True
            run.epoch(epoch, batches, {})
            updates.rewind(start)       # (a device summing in another order stayed finite)
            run.stop(loss, epoch, None)
        history.append(loss)
        if validation is not None:
            history.val_loss.append(model.loss(Xv, Yv, updates.current))
        if bar is not None:
            bar.set_postfix(loss=f"{history[-1]:.4g}",
                            **({"val_loss": f"{history.val_loss[-1]:.4g}"} if validation is not None else {}))
    # each loss is read before its update: the last update's parameters are checked here
    if epochs and not all(np.isfinite(np.asarray(model._host(v))).all() for v in updates.current.values()):
        if not updates.eager:
            updates.rewind(start)       # (summed on the device: the last epoch's start is kept)
        run.stop(None, int(epochs) - 1, None)
    updates.done()
    return history


def _host_data(model, X, Y):
    """X and Y checked by the model, as NumPy arrays: the rows are shuffled and sliced on the
    host, and each batch goes to the devices on its own (NumPy's arrays: as they are).  Data
    with NaN or infinite values are a DataError that says where, before any step (not a
    TrainingError about the loss several steps later)."""
    out = [np.asarray(model._host(a), dtype=model.dtype) for a in model._xy(X, Y)]
    check_finite(*out)
    return out


class _Run:
    """One fit's epochs: the batches through the model's updates, and how a run stops."""

    def __init__(self, model, updates, X, Y, lr, bar):
        self.model, self.updates, self.X, self.Y, self.lr, self.bar = model, updates, X, Y, lr, bar

    def epoch(self, epoch: int, batches: list, flow: dict):
        """The epoch's summed loss (a float, or the library's scalar when the updates are not
        eager); eager updates' losses are read at once, the run stopped at the first non-finite one."""
        model, updates, mean, eager = self.model, self.updates, self.model.reduction == "mean", self.updates.eager
        X, Y, total = self.X, self.Y, 0.0
        for b, idx in enumerate(batches):
            if flow and b == 0:
                for k, v in model.adjoint_norms(X[idx], Y[idx], updates.current, list(flow)).items():
                    flow[k].append(v)
            value = updates(*updates.batch(X[idx], Y[idx]))
            if eager and not math.isfinite(value):
                self.stop(value, epoch, b)
            total = total + (value * len(idx) if mean else value)
        return total

    def stop(self, value, epoch: int, batch):
        """The user's params back at their last finite values, and the TrainingError (value None:
        the loss was finite, the parameters the last update made are not)."""
        if self.bar is not None:
            self.bar.close()
        self.updates.restore()
        where = f"epoch {epoch + 1}" + ("" if batch is None else f", batch {batch + 1}")
        what = f"the loss became {value}" if value is not None else "the last update made the parameters non-finite"
        raise TrainingError(f"{what} at {where}: training stopped "
                            f"and the parameters were left at their last finite values "
                            f"(lr={self.lr} may be too large, or the data hold non-finite values)")


# ---------------------------------------------------------------- what a run reports
def check_memory(d, optimizer: str, batch: int, itemsize: int, what: str = "the network") -> None:
    """Refuse a network whose training cannot fit in this machine's memory, before anything
    is allocated (the OS would otherwise kill the process minutes later)."""
    g = d.graph
    count = sum(math.prod(d.layout.param_shape(p)) for p in g.param_names)
    # parameters, gradients, fit's two snapshots, and the optimizer's state per parameter
    copies = 4 + {"momentum": 1, "adam": 2}.get(optimizer, 0)
    # every node's value for the batch, and its adjoint on the way back: a sample's entries of
    # each (the batch's own axis m, wherever it stands, a batch norm's (d, m) too, left out)
    activations = 2 * batch * sum(math.prod(int(x) for x in g.shape(n) if not getattr(x, "free_symbols", ()))
                                  for n in g.node_names if g.shape(n))
    need = (count * copies + activations) * itemsize
    free = available_memory()
    if free is not None and need > free:
        raise SymbackError(f"{what}: training would need about "
                           f"{format_bytes(need)} ({count:.3g} parameters); this machine has "
                           f"{format_bytes(free)} available")


class NormRecorder:
    """An optimizer wrapper for fit that records each parameter's gradient norm per epoch."""

    def __init__(self, name: str, params: list[str], batches_per_epoch: int, **options):
        self.inner = get_optimizer(name, **options)
        self.params, self.batches = list(params), batches_per_epoch
        self.norms: dict[str, list[float]] = {p: [] for p in self.params}

    def update(self, params: dict, grads: dict, lr: float) -> None:
        """Record ||grad|| for every parameter, then let the real optimizer step."""
        for p in self.params:
            self.norms[p].append(_norm(grads[p]))
        self.inner.update(params, grads, lr)

    def per_epoch(self) -> dict[str, list[float]]:
        """Mean gradient norm over each epoch's batches, per parameter."""
        out = {}
        for p, series in self.norms.items():
            a = np.asarray(series)
            n = len(a) // self.batches
            out[p] = list(a[:n * self.batches].reshape(n, self.batches).mean(axis=1)) if n else []
        return out


def _norm(g) -> float:
    # NumPy's norm for NumPy arrays; a JAX or torch array's own arithmetic, read back as one
    # number from wherever it lives (a GPU's array has no NumPy view)
    return float(np.linalg.norm(g)) if isinstance(g, (np.ndarray, np.generic, float)) else float((g * g).sum()) ** 0.5


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
        named = {k: options.pop(k) for k in ("beta", "beta1", "beta2", "eps") if k in options}
        optimizer = NormRecorder(optimizer, model.params, -(-len(X) // (options.get("batch_size") or len(X))),
                                 **named)
        if model.derivation.graph.states:
            options["flow"] = True
    with np.errstate(all="ignore"):
        history = model.fit(X, Y, params, optimizer=optimizer, **options)
    return epoch_losses(history), (optimizer.per_epoch() if norms else {}), history.flow


def accuracy(d, model, X, Y, params) -> float | None:
    """Classification accuracy for softmax (argmax) or one-sigmoid-output networks, else None."""
    from .functions import sigmoid, softmax
    out = output_function(d)
    if out is not softmax and out is not sigmoid:
        # first: a scalar spec whose loss uses no node has no prediction to take (predict raises)
        return None
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
        raise DataError(f"{path}: " + ("is a directory, not a parameter file" if path.is_dir() else "no such parameter file"))
    params = model.load(path)
    for k, v in params.items():
        if not np.all(np.isfinite(np.asarray(model._host(v)))):      # (a library's array too)
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
