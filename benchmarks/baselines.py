"""Reference implementations of one MLP training step, to benchmark symback against.

One *training step* is: forward pass, backward pass, plain SGD update of the
parameters in place, and the loss (of the parameters before the update)
returned as a Python float.

Conventions (the same as symback's, see DESIGN.md)
--------------------------------------------------
* samples in rows: ``X`` is ``(n, d)``, ``Y`` is ``(n, K)``, float64;
* layer ``l`` (1-based) computes ``Z_l = A_{l-1} @ W_l + b_l`` with ``A_0 = X``,
  ``W_l`` of shape ``(d_{l-1}, d_l)`` and ``b_l`` of shape ``(d_l,)``;
  parameters are a dict ``{"W1": ..., "b1": ..., "W2": ..., ...}``;
* hidden activation: ``"sigmoid"``, ``"tanh"`` or ``"relu"`` (ReLU'(0) = 1,
  i.e. the derivative is 1 for ``z >= 0``);
* output: ``"identity"``, ``"sigmoid"`` or ``"softmax"``;
* loss ``"mse"``: ``L = mean_i sum_k (A_L - Y)_ik ** 2`` (squared error summed
  over outputs, mean over samples);
  loss ``"cross_entropy"`` (output must be ``"softmax"``):
  ``L = -mean_i sum_k Y_ik log softmax(Z_L)_ik``, computed stably from the
  logits. The gradient uses the usual ``delta = (S - Y) / n``, so each row of
  ``Y`` must sum to 1 (one-hot labels or probability distributions).

Interfaces
----------
``numpy_step(sizes, activation, output, loss)`` returns
``step(X, Y, params, lr) -> float`` working directly on a dict of float64
NumPy arrays (updated in place). It is the hand-written, vectorised
backpropagation an expert would write -- the bar symback must meet.

Every implementation (NumPy included) is also available through a factory
with the same signature returning a :class:`Baseline`, whose members make
timing easy (convert everything once, then call ``step`` in a loop):

* ``params_in(params: dict[str, ndarray]) -> state``  library-native copy
  of the parameters (the NumPy arrays given are never modified);
* ``data_in(X, Y) -> (Xc, Yc)``  library-native copies of the data;
* ``step(Xc, Yc, state, lr) -> float``  one training step; ``state`` is
  updated in place (for JAX, the holder's contents are replaced); the float
  conversion of the loss forces the computation to finish;
* ``params_out(state) -> dict[str, ndarray]``  float64 NumPy copies.

Factories: :func:`numpy_baseline`, :func:`torch_step` (PyTorch CPU eager,
autograd, float64, manual SGD under ``no_grad``), :func:`autograd_step`
(HIPS autograd ``value_and_grad``), :func:`jax_step` (``jax.jit`` of
``value_and_grad`` plus the update, with ``jax_enable_x64``). ``BASELINES``
maps a short name to each factory. A factory raises ``ImportError`` when its
library is not installed, so a benchmark can skip it.

Notes: the autodiff libraries use their native ReLU, whose derivative at
exactly ``z = 0`` is 0 (torch, JAX) or 1/2 (autograd's ``maximum``) instead of
1; this only matters for a pre-activation that is exactly 0.0, which random
float data never produce. :func:`init_params` gives reproducible parameters
for all of them.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import numpy as np

HIDDEN_ACTIVATIONS = ("sigmoid", "tanh", "relu")
OUTPUTS = ("identity", "sigmoid", "softmax")
LOSSES = ("mse", "cross_entropy")

__all__ = [
    "Baseline",
    "BASELINES",
    "init_params",
    "make_data",
    "numpy_step",
    "numpy_baseline",
    "torch_step",
    "autograd_step",
    "jax_step",
]


class Baseline(NamedTuple):
    name: str
    params_in: Callable[[dict], Any]
    data_in: Callable[[np.ndarray, np.ndarray], tuple]
    step: Callable[[Any, Any, Any, float], float]
    params_out: Callable[[Any], dict]


def _check(sizes, activation, output, loss):
    sizes = [int(s) for s in sizes]
    if len(sizes) < 2 or min(sizes) < 1:
        raise ValueError(f"sizes must list at least two positive widths, got {sizes}")
    if activation not in HIDDEN_ACTIVATIONS:
        raise ValueError(f"unknown hidden activation {activation!r}; one of {HIDDEN_ACTIVATIONS}")
    if output not in OUTPUTS:
        raise ValueError(f"unknown output {output!r}; one of {OUTPUTS}")
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; one of {LOSSES}")
    if loss == "cross_entropy" and output != "softmax":
        raise ValueError("loss 'cross_entropy' is softmax cross-entropy: output must be 'softmax'")
    return sizes


def init_params(sizes, seed=0):
    """Glorot-uniform weights, small random biases (so b matters in checks), float64."""
    rng = np.random.default_rng(seed)
    params = {}
    for l, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        lim = np.sqrt(6.0 / (fan_in + fan_out))
        params[f"W{l}"] = rng.uniform(-lim, lim, size=(fan_in, fan_out))
        params[f"b{l}"] = rng.uniform(-0.1, 0.1, size=fan_out)
    return params


def make_data(sizes, n, loss, seed=1):
    """Random X (n, d) and targets Y (n, K): one-hot for cross-entropy, else uniform."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, sizes[0]))
    K = sizes[-1]
    if loss == "cross_entropy":
        Y = np.zeros((n, K))
        Y[np.arange(n), rng.integers(0, K, size=n)] = 1.0
    else:
        Y = rng.uniform(0.0, 1.0, size=(n, K))
    return X, Y


def _copy_params(params):
    return {k: np.array(v, dtype=np.float64, copy=True, order="C") for k, v in params.items()}


# ---------------------------------------------------------------------------
# NumPy: hand-written backpropagation
# ---------------------------------------------------------------------------

#: e^u is finite in float64 up to this u: the guarded baseline clips σ's exponent here
EXP_MAX = 709.782


def numpy_step(sizes, activation, output, loss, guard=False):
    """Return ``step(X, Y, params, lr) -> float`` (params updated in place).

    ``guard``: σ's exponent clipped at EXP_MAX first (one more ufunc call per σ), so e⁻ᶻ never
    overflows (no RuntimeWarning below z = −709.78), as symback's generated σ does.

    Speed choices: activations evaluated in place on the fresh Z buffer;
    derivatives reuse the activations (sigmoid' = A(1-A), tanh' = 1-A^2);
    the factor lr/n (and 2 for MSE) is folded into the output delta once, so
    every dW, db comes out already scaled and is subtracted in place; bias
    gradients as ``ones @ dZ`` (one BLAS call, faster than ``sum(axis=0)``).
    """
    sizes = _check(sizes, activation, output, loss)
    L = len(sizes) - 1
    wkeys = [f"W{l}" for l in range(1, L + 1)]
    bkeys = [f"b{l}" for l in range(1, L + 1)]
    hidden_sigmoid = activation == "sigmoid"
    hidden_tanh = activation == "tanh"
    ones_cache = {}

    mul, sub, add, exp, neg, recip = (np.multiply, np.subtract, np.add, np.exp,
                                      np.negative, np.reciprocal)
    tanh, maximum, vdot, log, greater_equal = (np.tanh, np.maximum, np.vdot, np.log,
                                               np.greater_equal)
    minimum = np.minimum

    def step(X, Y, params, lr):
        n = X.shape[0]
        ones = ones_cache.get(n)
        if ones is None:
            ones = ones_cache[n] = np.ones(n)
        Ws = [params[k] for k in wkeys]
        bs = [params[k] for k in bkeys]

        # ---- forward: As[l] = A_l, Zs kept only for ReLU's mask
        As = [X]
        Zs = []
        A = X
        for l in range(L - 1):
            Z = A @ Ws[l]
            Z += bs[l]
            if hidden_sigmoid:
                neg(Z, out=Z)
                if guard:
                    minimum(Z, EXP_MAX, out=Z)
                exp(Z, out=Z)
                add(Z, 1.0, out=Z)
                recip(Z, out=Z)
                A = Z
            elif hidden_tanh:
                A = tanh(Z, out=Z)
            else:
                Zs.append(Z)
                A = maximum(Z, 0.0)
            As.append(A)
        Z = A @ Ws[-1]
        Z += bs[-1]

        # ---- loss and output delta, pre-scaled by lr (and 1/n, 2 for MSE)
        c = lr / n
        if loss == "cross_entropy":
            Z -= Z.max(axis=1, keepdims=True)          # shifted logits
            E = exp(Z)
            s = E.sum(axis=1, keepdims=True)
            value = (log(s).sum() - vdot(Y, Z)) / n   # rows of Y sum to 1
            E /= s                                     # softmax S
            E -= Y
            E *= c                                     # dZ = lr (S - Y) / n
            dZ = E
        else:
            if output == "identity":
                A = Z
            elif output == "sigmoid":
                neg(Z, out=Z)
                if guard:
                    minimum(Z, EXP_MAX, out=Z)
                exp(Z, out=Z)
                add(Z, 1.0, out=Z)
                A = recip(Z, out=Z)
            else:  # softmax output under MSE
                Z -= Z.max(axis=1, keepdims=True)
                A = exp(Z, out=Z)
                A /= A.sum(axis=1, keepdims=True)
            D = A - Y
            value = vdot(D, D) / n
            D *= 2.0 * c                               # dA = lr * 2 (A - Y) / n
            if output == "identity":
                dZ = D
            elif output == "sigmoid":
                t = sub(1.0, A)
                t *= A
                D *= t
                dZ = D
            else:  # softmax Jacobian: S * (dA - sum(dA * S))
                t = mul(D, A)
                D -= t.sum(axis=1, keepdims=True)
                D *= A
                dZ = D

        # ---- backward, updating each layer right after using its weights
        for l in range(L - 1, -1, -1):
            W = Ws[l]
            if l:
                dA = dZ @ W.T
            W -= As[l].T @ dZ
            bs[l] -= ones @ dZ
            if l:
                A = As[l]
                if hidden_sigmoid:
                    t = sub(1.0, A)
                    t *= A
                    dA *= t
                elif hidden_tanh:
                    t = mul(A, A)
                    sub(1.0, t, out=t)
                    dA *= t
                else:
                    mul(dA, greater_equal(Zs[l - 1], 0.0), out=dA)
                dZ = dA
        return float(value)

    return step


def numpy_baseline(sizes, activation, output, loss, guard=False):
    step = numpy_step(sizes, activation, output, loss, guard)
    return Baseline(
        name="numpy-guarded" if guard else "numpy",
        params_in=_copy_params,
        data_in=lambda X, Y: (np.ascontiguousarray(X, dtype=np.float64),
                              np.ascontiguousarray(Y, dtype=np.float64)),
        step=step,
        params_out=_copy_params,
    )


# ---------------------------------------------------------------------------
# PyTorch (CPU, eager, float64)
# ---------------------------------------------------------------------------

def torch_step(sizes, activation, output, loss, dtype="float64"):
    """PyTorch eager autograd; ``dtype`` "float32" for the GPU tables (float64 elsewhere)."""
    import torch
    import torch.nn.functional as F

    sizes = _check(sizes, activation, output, loss)
    L = len(sizes) - 1
    names = [f"{p}{l}" for l in range(1, L + 1) for p in ("W", "b")]
    act = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu}[activation]

    def params_in(params):
        return [torch.tensor(np.asarray(params[k], dtype=dtype)).requires_grad_(True)
                for k in names]

    def data_in(X, Y):
        return (torch.tensor(np.asarray(X, dtype=dtype)),
                torch.tensor(np.asarray(Y, dtype=dtype)))

    def step(X, Y, state, lr):
        A = X
        for l in range(L - 1):
            A = act(torch.addmm(state[2 * l + 1], A, state[2 * l]))
        Z = torch.addmm(state[-1], A, state[-2])
        if loss == "cross_entropy":
            value = F.cross_entropy(Z, Y)              # probability targets, mean
        else:
            if output == "sigmoid":
                Z = torch.sigmoid(Z)
            elif output == "softmax":
                Z = torch.softmax(Z, dim=1)
            value = F.mse_loss(Z, Y, reduction="sum") / X.shape[0]
        grads = torch.autograd.grad(value, state)
        with torch.no_grad():
            torch._foreach_add_(state, grads, alpha=-lr)
        return value.item()

    def params_out(state):
        return {k: t.detach().numpy().copy() for k, t in zip(names, state)}

    return Baseline("torch", params_in, data_in, step, params_out)


# ---------------------------------------------------------------------------
# HIPS autograd
# ---------------------------------------------------------------------------

def autograd_step(sizes, activation, output, loss):
    import autograd.numpy as anp
    from autograd import value_and_grad

    try:
        from autograd.scipy.special import logsumexp
    except ImportError:  # scipy missing
        def logsumexp(Z, axis, keepdims):
            m = anp.max(Z, axis=axis, keepdims=True)
            return m + anp.log(anp.sum(anp.exp(Z - m), axis=axis, keepdims=True))

    sizes = _check(sizes, activation, output, loss)
    L = len(sizes) - 1
    names = [f"{p}{l}" for l in range(1, L + 1) for p in ("W", "b")]

    def sigmoid(z):
        return 0.5 * (anp.tanh(0.5 * z) + 1.0)

    act = {"sigmoid": sigmoid, "tanh": anp.tanh,
           "relu": lambda z: anp.maximum(z, 0.0)}[activation]

    def objective(state, X, Y):
        A = X
        for l in range(L - 1):
            A = act(anp.dot(A, state[2 * l]) + state[2 * l + 1])
        Z = anp.dot(A, state[-2]) + state[-1]
        n = X.shape[0]
        if loss == "cross_entropy":
            return -anp.sum(Y * (Z - logsumexp(Z, axis=1, keepdims=True))) / n
        if output == "sigmoid":
            Z = sigmoid(Z)
        elif output == "softmax":
            Z = anp.exp(Z - logsumexp(Z, axis=1, keepdims=True))
        D = Z - Y
        return anp.sum(D * D) / n

    vg = value_and_grad(objective)

    def params_in(params):
        return [np.array(params[k], dtype=np.float64, copy=True) for k in names]

    def step(X, Y, state, lr):
        value, grads = vg(state, X, Y)
        for p, g in zip(state, grads):
            p -= lr * g
        return float(value)

    def params_out(state):
        return {k: p.copy() for k, p in zip(names, state)}

    return Baseline("autograd", params_in, numpy_baseline(sizes, activation, output, loss).data_in,
                    step, params_out)


# ---------------------------------------------------------------------------
# JAX (CPU, jit, float64)
# ---------------------------------------------------------------------------

def jax_step(sizes, activation, output, loss, dtype="float64"):
    """``jax.jit`` of ``jax.value_and_grad`` plus the update; ``dtype`` as :func:`torch_step`."""
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    sizes = _check(sizes, activation, output, loss)
    L = len(sizes) - 1
    names = [f"{p}{l}" for l in range(1, L + 1) for p in ("W", "b")]
    act = {"sigmoid": jax.nn.sigmoid, "tanh": jnp.tanh, "relu": jax.nn.relu}[activation]

    def objective(state, X, Y):
        A = X
        for l in range(L - 1):
            A = act(A @ state[2 * l] + state[2 * l + 1])
        Z = A @ state[-2] + state[-1]
        n = X.shape[0]
        if loss == "cross_entropy":
            return -jnp.sum(Y * jax.nn.log_softmax(Z, axis=1)) / n
        if output == "sigmoid":
            Z = jax.nn.sigmoid(Z)
        elif output == "softmax":
            Z = jax.nn.softmax(Z, axis=1)
        D = Z - Y
        return jnp.sum(D * D) / n

    @jax.jit
    def update(state, X, Y, lr):
        value, grads = jax.value_and_grad(objective)(state, X, Y)
        return [p - lr * g for p, g in zip(state, grads)], value

    def params_in(params):
        # the holder is a one-element list, so step can replace its contents
        return [[jnp.asarray(np.asarray(params[k], dtype=dtype)) for k in names]]

    def data_in(X, Y):
        return (jnp.asarray(np.asarray(X, dtype=dtype)),
                jnp.asarray(np.asarray(Y, dtype=dtype)))

    def step(X, Y, holder, lr):
        holder[0], value = update(holder[0], X, Y, lr)
        return float(value)

    step.jitted = update        # for a look at the XLA program (benchmarks/backends.py)

    def params_out(holder):
        return {k: np.array(p, dtype=np.float64) for k, p in zip(names, holder[0])}

    return Baseline("jax", params_in, data_in, step, params_out)


BASELINES = {
    "numpy": numpy_baseline,
    # the same, with symback's overflow guard on σ (what the 2-4-1 ratio's remainder is)
    "numpy-guarded": lambda *net: numpy_baseline(*net, guard=True),
    "torch": torch_step,
    "autograd": autograd_step,
    "jax": jax_step,
}
