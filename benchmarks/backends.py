"""symback's JAX and torch backends against the hand-written step of the same library.

    python benchmarks/backends.py            # ~3 min on 2 cores; --quick for a smoke run

One training step (forward, backward, SGD update, loss as a float), float64,
one thread per library, on the five networks of ``run.py``:

* symback-JAX ``m.step`` ÷ ``jax.jit`` of ``jax.value_and_grad`` plus the
  update (``baselines.jax_step``);
* symback-torch ``m.step`` ÷ PyTorch eager autograd plus the update under
  ``no_grad`` (``baselines.torch_step``).

Each symback network is a hand-written matrix graph (``X W1 + 1 b1``, ...)
until ``sb.mlp`` builds matrix graphs.  Steps run in interleaved rounds (the
order rotates); a ratio is the median of the per-round ratios.  CPU only.
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
from baselines import init_params, jax_step, make_data, torch_step  # noqa: E402
from symback.backends import compile_backend  # noqa: E402

LR = 0.01


def matrix_net(sizes, hidden, output, loss):
    """The network as a matrix graph: Z_l = A_{l-1} W_l + 1 b_l, A_l = f(Z_l)."""
    m, g = sb.BATCH, sb.Graph()
    A = g.inputs("X", shape=(m, sizes[0]))
    Y = g.targets("Y", shape=(m, sizes[-1]))
    for l, (fi, fo) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        W, b = g.params(f"W{l} b{l}", shape=[(fi, fo), (1, fo)])
        f = getattr(sb, output if l == len(sizes) - 1 else hidden)
        A = g.node("Yhat" if l == len(sizes) - 1 else f"A{l}", f(A @ W + sb.ones(m) @ b))
    g.loss(getattr(sb, loss)(A, Y))
    return sb.derive(g)


def runners(net):
    """name → (step, X, Y, state) for the four implementations, all from the same parameters."""
    _, _, sizes, act, out, loss, batch = net
    params = init_params(sizes, seed=0)
    X, Y = make_data(sizes, batch, loss, seed=1)
    d = matrix_net(sizes, act, out, loss)
    ours = {k: (v.reshape(1, -1) if k.startswith("b") else v) for k, v in params.items()}
    out_ = {}
    for name, factory in (("jax", jax_step), ("torch", torch_step)):
        b = factory(sizes, act, out, loss)
        out_[name] = (b.step, *b.data_in(X, Y), b.params_in(params))
        m = compile_backend(d, name, "float64")
        conv = m._ns["_asarray"]
        out_["symback-" + name] = (m.step, conv(X), conv(Y), {k: conv(v) for k, v in ours.items()})
    return out_


def bench(net, rounds, block_s):
    rs = runners(net)
    first = {k: step(X, Y, state, LR) for k, (step, X, Y, state) in rs.items()}   # warm-up, jit
    for lib in ("jax", "torch"):
        if abs(first["symback-" + lib] - first[lib]) > 1e-9 * abs(first[lib]):
            raise SystemExit(f"{net[1]}: first losses differ: {first['symback-' + lib]} vs {first[lib]}")
    reps = {}
    for k, (step, X, Y, state) in rs.items():
        t = run._block(step, X, Y, state, LR, 3)
        reps[k] = max(3, int(block_s / max(t / 3, 1e-7)))
    names = list(rs)
    times = {k: [] for k in names}
    for r in range(rounds):
        for k in names[r % len(names):] + names[:r % len(names)]:
            step, X, Y, state = rs[k]
            times[k].append(run._block(step, X, Y, state, LR, reps[k]) / reps[k])
    med = {k: float(np.median(v)) for k, v in times.items()}
    ratio = {lib: float(np.median([a / b for a, b in zip(times["symback-" + lib], times[lib])]))
             for lib in ("jax", "torch")}
    return med, ratio


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    quick = "--quick" in argv
    import torch
    torch.set_num_threads(1)
    rounds, block_s = (3, 0.05) if quick else (11, 0.25)
    rows = ["| network | jax µs | symback-JAX µs | symback-JAX / jax | torch µs | symback-torch µs "
            "| symback-torch / torch |", "|---|---:|---:|---:|---:|---:|---:|"]
    for net in run.NETWORKS:
        med, ratio = bench(net, rounds, block_s)
        us = {k: f"{v * 1e6:,.1f}" if v < 1e-3 else f"{v * 1e6:,.0f}" for k, v in med.items()}
        rows.append(f"| {net[1]} | {us['jax']} | {us['symback-jax']} | {ratio['jax']:.2f} | {us['torch']} "
                    f"| {us['symback-torch']} | {ratio['torch']:.2f} |")
        print(rows[-1], flush=True)
    print("\n".join(["", f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
                     f"{rounds} rounds, float64, lr={LR}, 1 thread per library", "", *rows]))


if __name__ == "__main__":
    main()
