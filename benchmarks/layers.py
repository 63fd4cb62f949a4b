"""A symback-derived layer against PyTorch's and JAX's autodiff of the same network.

    python benchmarks/layers.py            # ~1 min on 2 cores; --rounds N (default 11)

784-128-64-10 (sigmoid hidden, softmax output), batch 128, float64, one thread:

* ``vjp``: symback-torch ``m.vjp(X, params, G)`` ÷ torch eager autograd of the
  network written in torch (forward with grad, ``torch.autograd.grad`` of ⟨G, Ŷ⟩
  w.r.t. X and every parameter); the same for the NumPy backend's ``m.vjp``.
* ``layer``: ``mod(X)`` of ``m.module()`` then ``backward`` of ⟨G, Ŷ⟩ ÷ the plain
  torch module doing the same.
* ``jax``: ``jax.jit(jax.grad)`` of ⟨G, f(params, X)⟩ through ``m.function()`` ÷ the
  same through the network written in jax.numpy.

Timings run in interleaved rounds; a ratio is the median of the per-round ratios
(below 1: symback is faster).  symback's ``_vjp`` recomputes the forward pass.
"""
from __future__ import annotations

import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]

import run  # noqa: E402,F401  (sets the thread variables before numpy, torch and jax load)
import numpy as np  # noqa: E402

import symback as sb  # noqa: E402

SIZES, BATCH = [784, 128, 64, 10], 128


def _timed(fn, reps):
    fn()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start) / reps


def main(rounds=11):
    import jax
    import jax.numpy as jnp
    import torch
    jax.config.update("jax_enable_x64", True)
    torch.set_num_threads(1)
    d = sb.derive(sb.mlp(SIZES, activation="sigmoid", output="softmax", loss="cross_entropy"))
    mn, mt = sb.compile(d), sb.compile(d, backend="torch")
    mj = sb.compile(d, backend="jax", dtype="float64")
    rng = np.random.default_rng(0)
    params = {k: v + rng.normal(scale=0.01, size=v.shape) for k, v in mn.init(0).items()}
    X, G = rng.normal(size=(BATCH, SIZES[0])), rng.normal(size=(BATCH, SIZES[-1]))
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    tX, tG = torch.tensor(X, requires_grad=True), torch.tensor(G)

    def torch_net(p, x):
        a = x
        for l in (1, 2):
            a = torch.sigmoid(a @ p[f"W{l}"] + p[f"b{l}"])
        return torch.softmax(a @ p["W3"] + p["b3"], dim=1)

    def autograd_vjp():
        out = torch_net(tp, tX)
        return torch.autograd.grad((out * tG).sum(), [tX, *tp.values()])

    mod = mt.module(params)

    def layer():
        mod.zero_grad()
        tX.grad = None
        (mod(tX) * tG).sum().backward()

    def plain_layer():
        for v in tp.values():
            v.grad = None
        tX.grad = None
        (torch_net(tp, tX) * tG).sum().backward()

    f = mj.function()
    jp, jX, jG = {k: jnp.asarray(v) for k, v in params.items()}, jnp.asarray(X), jnp.asarray(G)

    def jax_net(p, x):
        a = x
        for l in (1, 2):
            a = jax.nn.sigmoid(a @ p[f"W{l}"] + p[f"b{l}"])
        return jax.nn.softmax(a @ p["W3"] + p["b3"], axis=1)
    ours_j = jax.jit(jax.grad(lambda p, x: jnp.sum(f(p, x) * jG), argnums=(0, 1)))
    plain_j = jax.jit(jax.grad(lambda p, x: jnp.sum(jax_net(p, x) * jG), argnums=(0, 1)))
    pairs = {
        "vjp torch": (lambda: mt.vjp(tX.detach(), tp, tG), autograd_vjp),
        "vjp numpy": (lambda: mn.vjp(X, params, G), autograd_vjp),
        "layer torch": (layer, plain_layer),
        "jax function": (lambda: jax.block_until_ready(ours_j(jp, jX)),
                         lambda: jax.block_until_ready(plain_j(jp, jX))),
    }
    print(f"{'-'.join(map(str, SIZES))} sigmoid/softmax, batch {BATCH}, float64, 1 thread; {rounds} rounds")
    for name, (ours, theirs) in pairs.items():
        ratios, times = [], []
        for r in range(rounds):         # the order alternates between rounds
            if r % 2:
                a, b = _timed(ours, 20), _timed(theirs, 20)
            else:
                b, a = _timed(theirs, 20), _timed(ours, 20)
            ratios.append(a / b)
            times.append((a, b))
        med = sorted(ratios)[len(ratios) // 2]
        a, b = np.median([t[0] for t in times]), np.median([t[1] for t in times])
        print(f"  {name:13s} symback {a * 1e3:7.3f} ms   peer {b * 1e3:7.3f} ms   ratio {med:.2f}")


if __name__ == "__main__":
    main(int(sys.argv[sys.argv.index("--rounds") + 1]) if "--rounds" in sys.argv else 11)
