"""One LSTM training step: symback's JAX and torch backends against the same loop by hand.

    python benchmarks/recurrent.py                  # ~3 min on 2 cores; --quick for a smoke run
    python benchmarks/recurrent.py --hidden 512 --device cuda      # on a GPU

The network is ``sb.lstm(32, 64, 1, steps=20)`` (DESIGN.md's equations, MSE loss) at
batch 64, compiled with ``sb.compile(d, dtype, backend=...)``.  Its peers run the
same equations as a plain loop over time, written here:

* torch: eager autograd of the loop plus the SGD update under ``no_grad``;
* jax: ``jax.jit`` of ``jax.value_and_grad`` of the loop plus the update.

One step is forward, backward, SGD update and the loss as a float.  Steps run in
interleaved rounds (the order rotates), one thread per library on CPU; a ratio is
the median of the per-round ratios.  float64 and float32 (``--dtype`` picks one).
"""
from __future__ import annotations

import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]

import run  # noqa: E402  (sets the thread variables before numpy, torch and jax load)
import numpy as np  # noqa: E402

import symback as sb  # noqa: E402

LR = 0.01
INPUTS, HIDDEN, OUTPUTS, STEPS, BATCH = 32, 64, 1, 20, 64
GATES = (("i", "sigmoid"), ("f", "sigmoid"), ("g", "tanh"), ("o", "sigmoid"))
DEVICE = "cpu"


def lstm_loss(p, X, Y, act):
    """The LSTM of DESIGN.md as a loop over time, in any library whose arrays have @ and the
    activations `act` (name -> function); h_0 = c_0 = 0.  Mean over samples of Σ (ŷ − y)²."""
    h = c = None
    for t in range(STEPS):
        x = X[:, t * INPUTS:(t + 1) * INPUTS]
        gate = {}
        for q, f in GATES:
            if q == "f" and c is None:
                continue
            z = x @ p[f"W_{q}"] + p[f"b_{q}"]
            gate[q] = act[f](z if h is None else z + h @ p[f"U_{q}"])
        c = gate["i"] * gate["g"] if c is None else gate["f"] * c + gate["i"] * gate["g"]
        h = gate["o"] * act["tanh"](c)
    D = h @ p["W_y"] + p["b_y"] - Y
    return (D * D).sum() / X.shape[0]


def torch_step(dtype):
    """(step, convert) of eager torch autograd; step(X, Y, params, lr) updates params in place."""
    import torch
    act = {"sigmoid": torch.sigmoid, "tanh": torch.tanh}

    def step(X, Y, state, lr):
        value = lstm_loss(state, X, Y, act)
        grads = torch.autograd.grad(value, list(state.values()))
        with torch.no_grad():
            torch._foreach_add_(list(state.values()), grads, alpha=-lr)
        return value.item()

    def convert(a, grad=False):
        t = torch.tensor(np.asarray(a, dtype=dtype), device=DEVICE)
        return t.requires_grad_(True) if grad else t
    return step, convert


def jax_step(dtype):
    """(step, convert) of ``jax.jit(value_and_grad)``; the state is a one-entry holder."""
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    act = {"sigmoid": jax.nn.sigmoid, "tanh": jnp.tanh}

    @jax.jit
    def update(state, X, Y, lr):
        value, grads = jax.value_and_grad(lstm_loss)(state, X, Y, act)
        return {k: state[k] - lr * grads[k] for k in state}, value

    def step(X, Y, holder, lr):
        holder[0], value = update(holder[0], X, Y, lr)
        return float(value)

    def convert(a, grad=False):
        return jnp.asarray(np.asarray(a, dtype=dtype))
    return step, convert


def runners(d, dtype):
    """name → (step, X, Y, state): the four implementations from the same parameters and data."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(BATCH, STEPS * INPUTS))
    Y = rng.normal(size=(BATCH, OUTPUTS))
    out = {}
    for name, factory in (("jax", jax_step), ("torch", torch_step)):
        m = sb.compile(d, dtype, backend=name)
        params = m.init(seed=0)
        params = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
        step, conv = factory(dtype)
        state = {k: conv(v, grad=True) for k, v in params.items()}
        out[name] = (step, conv(X), conv(Y), [state] if name == "jax" else state)
        mine = m._ns["_asarray"]
        if name == "torch":
            mine = lambda a, c=conv: c(a)   # noqa: E731  (on the chosen device)
        out["symback-" + name] = (m.step, mine(X), mine(Y), {k: mine(v) for k, v in params.items()})
    return out


def bench(d, dtype, rounds, block_s):
    rs = runners(d, dtype)
    first = {k: step(X, Y, state, LR) for k, (step, X, Y, state) in rs.items()}   # warm-up, jit
    tol = 1e-9 if dtype == "float64" else 1e-3
    for lib in ("jax", "torch"):
        if abs(first["symback-" + lib] - first[lib]) > tol * abs(first[lib]):
            raise SystemExit(f"{dtype}: first losses differ: {first['symback-' + lib]} vs {first[lib]}")
    return run.paired(run.interleaved(rs, LR, rounds, block_s), ("jax", "torch"))


def main(argv=None):
    global DEVICE, HIDDEN
    argv = sys.argv[1:] if argv is None else argv
    if "--device" in argv:
        DEVICE = argv[argv.index("--device") + 1]
    if "--hidden" in argv:
        HIDDEN = int(argv[argv.index("--hidden") + 1])
    dtypes = [argv[argv.index("--dtype") + 1]] if "--dtype" in argv else ["float64", "float32"]
    rounds, block_s = (3, 0.05) if "--quick" in argv else (11, 0.25)
    if "--rounds" in argv:
        rounds = int(argv[argv.index("--rounds") + 1])
    import torch
    if DEVICE == "cpu":
        torch.set_num_threads(1)
    t0 = time.perf_counter()
    d = sb.derive(sb.lstm(INPUTS, HIDDEN, OUTPUTS, STEPS))
    derive_s = time.perf_counter() - t0
    label = f"LSTM {INPUTS}-{HIDDEN}-{OUTPUTS}, {STEPS} steps, batch {BATCH}"
    rows = ["| network | dtype | jax µs | symback-JAX µs | symback-JAX / jax "
            "| torch µs | symback-torch µs | symback-torch / torch |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for dtype in dtypes:
        med, ratio = bench(d, dtype, rounds, block_s)
        us = {k: f"{v * 1e6:,.0f}" for k, v in med.items()}
        rows.append(f"| {label} | {dtype} | {us['jax']} | {us['symback-jax']} | {ratio['jax']:.2f} "
                    f"| {us['torch']} | {us['symback-torch']} | {ratio['torch']:.2f} |")
        print(rows[-1], flush=True)
    print("\n".join(["", f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {rounds} rounds, "
                     f"lr={LR}, torch on {DEVICE}, derive {derive_s:.1f} s"
                     + (", 1 thread per library" if DEVICE == "cpu" else ""), "", *rows]))


if __name__ == "__main__":
    main()
