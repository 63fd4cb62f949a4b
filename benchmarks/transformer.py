"""One training step of a transformer block: symback on each backend against the same library by hand.

    python benchmarks/transformer.py                 # float64 and float32, ~3 min on 2 cores
    python benchmarks/transformer.py --quick         # a smoke run
    python benchmarks/transformer.py --dtype float32 --rounds 21
    python benchmarks/transformer.py --device cuda --large   # on a GPU: T = d = 512, batch 64

The network is ``sb.Sequential(sb.TransformerBlock(heads=4, hidden=256, causal=True),
sb.Dense(64), inputs=(64, 64), loss="mse")`` (pre-LN block, causal 4-head attention,
GELU MLP, a Dense output), batch 32; a step is forward, backward, SGD update and the
loss as a float, one thread per library:

* symback-NumPy ``m.step`` ÷ the hand-written NumPy step of ``transformer_numpy.py``
  (checked against torch autograd to 1e-8 here, before any timing);
* symback-torch ``m.step`` ÷ PyTorch eager autograd of the network written with
  ``torch.nn.functional`` (``layer_norm``, ``scaled_dot_product_attention(is_causal=True)``,
  ``gelu(approximate="tanh")``) plus the update under ``no_grad``;
* symback-JAX ``m.step`` ÷ ``jax.jit`` of ``jax.value_and_grad`` of the same network in JAX
  plus the update.

Interleaved rounds (the order rotates), medians per step, a ratio is the median of the
per-round ratios (``backends.py``'s method).  ``--dtype`` picks one dtype (both by default),
``--rounds N`` the rounds (9; 3 with ``--quick``).  ``--device cuda`` puts both torch
implementations' tensors on the GPU and leaves out the NumPy pair (JAX runs on its default
device); ``--large`` is issue 17's device size, T = 512, d = 512, batch 64 (heads and hidden
as above).
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
import transformer_numpy as hand  # noqa: E402

T, D, HEADS, HIDDEN, BATCH, LR = 64, 64, 4, 256, 32, 1e-3
LIBS = ("numpy", "torch", "jax")
DEVICE = "cpu"          # torch's device (--device)


def network():
    """The benchmarked network, as symback builds it."""
    return sb.Sequential(sb.TransformerBlock(heads=HEADS, hidden=HIDDEN, causal=True), sb.Dense(D),
                         inputs=(T, D), loss="mse")


def torch_peer(dtype):
    """(params_in, step) of PyTorch eager autograd on the torch.nn.functional network."""
    import torch
    import torch.nn.functional as F

    def params_in(params):
        return [torch.tensor(np.asarray(params[k], dtype=dtype), device=DEVICE).requires_grad_(True)
                for k in hand.NAMES]

    def step(X, Y, state, lr):
        value = hand.torch_loss(F, X, Y, state, HEADS)
        grads = torch.autograd.grad(value, state)
        with torch.no_grad():
            torch._foreach_add_(state, grads, alpha=-lr)
        return value.item()
    return params_in, step, lambda a: torch.tensor(np.asarray(a, dtype=dtype), device=DEVICE)


def jax_peer(dtype):
    """(params_in, step) of jax.jit(value_and_grad) of the network in JAX plus the update."""
    import jax
    import jax.numpy as jnp
    jax.config.update("jax_enable_x64", True)

    def layer_norm(x, g, b):
        mu = x.mean(axis=-1, keepdims=True)
        var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
        return (x - mu) * jax.lax.rsqrt(var + hand.EPS) * g + b

    def objective(p, x, y):
        g1, b1, Wq, Wk, Wv, Wo, g3, b3, W4, b4, W5, b5, W6, b6 = p
        n = x.shape[0]
        split = lambda z: z.reshape(n, T, HEADS, D // HEADS)     # noqa: E731  (B, T, N, H)
        a = layer_norm(x, g1, b1)
        o = jax.nn.dot_product_attention(split(a @ Wq), split(a @ Wk), split(a @ Wv), is_causal=True)
        h = x + o.reshape(n, T, D) @ Wo
        a = layer_norm(h, g3, b3)
        h = h + jax.nn.gelu(a @ W4 + b4, approximate=True) @ W5 + b5
        e = h @ W6 + b6 - y
        return jnp.sum(e * e) / n

    @jax.jit
    def update(p, x, y, lr):
        value, grads = jax.value_and_grad(objective)(p, x, y)
        return [a - lr * g for a, g in zip(p, grads)], value

    def params_in(params):
        return [[jnp.asarray(np.asarray(params[k], dtype=dtype)) for k in hand.NAMES]]

    def step(X, Y, holder, lr):
        holder[0], value = update(holder[0], X, Y, lr)
        return float(value)
    return params_in, step, lambda a: jnp.asarray(np.asarray(a, dtype=dtype))


def numpy_peer(dtype):
    """(params_in, step) of the hand-written NumPy block."""
    block = hand.Block(T, D, HEADS, dtype=dtype)
    return block.params_in, block.step, lambda a: np.asarray(a, dtype=dtype)


PEERS = {"numpy": numpy_peer, "torch": torch_peer, "jax": jax_peer}


def runners(dtype):
    """name → (step, X, Y, state) for the six implementations, all from the same parameters."""
    d = sb.derive(network())
    rng = np.random.default_rng(1)
    X, Y = rng.normal(size=(BATCH, T, D)), rng.normal(size=(BATCH, T, D))
    params = {k: np.asarray(v) for k, v in sb.compile(d).init(seed=0).items()}
    out = {}
    for lib in LIBS:
        params_in, step, conv = PEERS[lib](dtype)
        out[lib] = (step, conv(X), conv(Y), params_in(params))
        m = sb.compile(d, dtype, backend=lib)
        c = m._ns["_asarray"]
        if lib == "torch":          # symback-torch on the same device as its peer
            c = lambda a, c=c: c(a).to(DEVICE)     # noqa: E731
        out["symback-" + lib] = (m.step, c(X), c(Y), {k: c(v.copy()) for k, v in params.items()})   # own copies: updated in place
    return out


def bench(dtype, rounds, block_s):
    """(median seconds per step, symback ÷ peer ratios) of the six runners at one dtype."""
    rs = runners(dtype)
    first = {k: step(X, Y, state, LR) for k, (step, X, Y, state) in rs.items()}   # warm-up, jit
    # float32 on a GPU: matrix products may round their inputs to TF32's 10 bits
    tol = 1e-9 if dtype == "float64" else 1e-4 if DEVICE == "cpu" else 1e-2
    for lib in LIBS:
        a, b = first["symback-" + lib], first[lib]
        if abs(a - b) > tol * abs(b):
            raise SystemExit(f"{dtype} {lib}: first losses differ: {a} vs {b}")
    med, ratio = run.paired(run.interleaved(rs, LR, rounds, block_s, probe=2), LIBS)
    return med, ratio


def main(argv=None):
    """Check the hand-written block, time the six steps per dtype, print the table."""
    global DEVICE, LIBS, T, D, BATCH
    argv = sys.argv[1:] if argv is None else argv
    import torch
    torch.set_num_threads(1)
    if "--device" in argv:
        DEVICE = argv[argv.index("--device") + 1]
    if "--large" in argv:
        T, D, BATCH = 512, 512, 64
    if DEVICE != "cpu":             # NumPy has no device: only torch and JAX are compared
        LIBS = ("torch", "jax")
    else:
        print("hand-written NumPy block equals torch autograd (1e-8):", hand.check_against_torch(), flush=True)
    rounds, block_s = (3, 0.2) if "--quick" in argv else (9, 0.5)
    if "--rounds" in argv:
        rounds = int(argv[argv.index("--rounds") + 1])
    dtypes = [argv[argv.index("--dtype") + 1]] if "--dtype" in argv else ["float64", "float32"]
    rows = ["| dtype | library | by hand ms | symback ms | symback / by hand |", "|---|---|---:|---:|---:|"]
    for dtype in dtypes:
        med, ratio = bench(dtype, rounds, block_s)
        for lib in LIBS:
            rows.append(f"| {dtype} | {lib} | {med[lib] * 1e3:.2f} | {med['symback-' + lib] * 1e3:.2f} "
                        f"| {ratio[lib]:.2f} |")
            print(rows[-1], flush=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print("\n".join(["", f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {rounds} rounds, "
                     f"T={T} d={D} heads={HEADS} hidden={HIDDEN} batch={BATCH}, torch on {_device_name()}, "
                     f"1 thread per library, "
                     f"load average {load:.1f}", "", *rows]))


def _device_name():
    """torch's device, with the GPU's name on a GPU."""
    import torch
    return DEVICE if DEVICE == "cpu" else f"{DEVICE} ({torch.cuda.get_device_name(torch.device(DEVICE))})"


if __name__ == "__main__":
    main()
