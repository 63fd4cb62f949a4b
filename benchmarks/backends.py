"""symback's JAX and torch backends against the hand-written step of the same library.

    python benchmarks/backends.py              # ~3 min on 2 cores; --quick for a smoke run
    python benchmarks/backends.py --large --device cuda    # adds 784-4096-4096-10, batch 4096
    python benchmarks/backends.py --large --device cuda --dtype float32

One training step (forward, backward, SGD update, loss as a float), float64,
one thread per library on CPU, on the five networks of ``run.py``, each
built by ``sb.mlp`` and compiled with ``sb.compile(d, backend=...)``:

* symback-JAX ``m.step`` ÷ ``jax.jit`` of ``jax.value_and_grad`` plus the
  update (``baselines.jax_step``);
* symback-torch ``m.step`` ÷ PyTorch eager autograd plus the update under
  ``no_grad`` (``baselines.torch_step``).

Steps run in interleaved rounds (the order rotates); a ratio is the median
of the per-round ratios.  ``--device cuda`` puts the torch tensors (both
implementations) on the GPU; JAX runs on its default device (a GPU when
jaxlib has one).  ``--large`` adds a 4096-wide network at batch 4096.
``--dtype float32`` runs every implementation in float32 (float64 by default);
``--rounds N`` sets the rounds (11).  The column "XLA kernels" counts the
instructions of the two compiled JAX programs' entry computations (fusions,
dots, copies; parameters and constants left out): equal counts mean XLA
runs the same kernels for both.
"""
from __future__ import annotations

import os
import re
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]

import run  # noqa: E402  (sets the thread variables before numpy, torch and jax load)

import symback as sb  # noqa: E402
from baselines import init_params, jax_step, make_data, torch_step  # noqa: E402

LR = 0.01
#: the configuration for a GPU: two 4096-wide hidden layers, batch 4096
LARGE = ("784-4096-4096-10", "784-4096-4096-10 relu/softmax-CE batch 4096", [784, 4096, 4096, 10],
         "relu", "softmax", "cross_entropy", 4096)
DEVICE = "cpu"
DTYPE = "float64"


def runners(net):
    """name → (step, X, Y, state) for the four implementations, all from the same parameters."""
    _, _, sizes, act, out, loss, batch = net
    params = init_params(sizes, seed=0)
    X, Y = make_data(sizes, batch, loss, seed=1)
    d = sb.derive(sb.mlp(sizes, activation=act, output=out, loss=loss))
    ours = {k: (v.reshape(1, -1) if k.startswith("b") else v) for k, v in params.items()}
    out_ = {}
    for name, factory in (("jax", jax_step), ("torch", torch_step)):
        b = factory(sizes, act, out, loss, DTYPE)
        m = sb.compile(d, DTYPE, backend=name)
        conv = m._ns["_asarray"]
        if name == "torch":      # both torch implementations on the chosen device
            move = lambda t: t.detach().to(DEVICE)   # noqa: E731
            out_[name] = (b.step, *map(move, b.data_in(X, Y)),
                          [move(t).requires_grad_(True) for t in b.params_in(params)])
            conv = lambda a, c=conv: move(c(a))     # noqa: E731
        else:
            out_[name] = (b.step, *b.data_in(X, Y), b.params_in(params))
        out_["symback-" + name] = (m.step, conv(X), conv(Y), {k: conv(v) for k, v in ours.items()})
    return out_


def bench(net, rounds, block_s):
    rs = runners(net)
    first = {k: step(X, Y, state, LR) for k, (step, X, Y, state) in rs.items()}   # warm-up, jit
    tol = 1e-9 if DTYPE == "float64" else 1e-3     # float32 matrix products may run in TF32
    for lib in ("jax", "torch"):
        if abs(first["symback-" + lib] - first[lib]) > tol * abs(first[lib]):
            raise SystemExit(f"{net[1]}: first losses differ: {first['symback-' + lib]} vs {first[lib]}")
    med, ratio = run.paired(run.interleaved(rs, LR, rounds, block_s), ("jax", "torch"))
    kernels = _kernel_pair(rs)
    return med, ratio, kernels


def _kernel_pair(rs):
    """(symback's, the hand-written) number of kernels in the compiled JAX step."""
    step, X, Y, params = rs["symback-jax"]
    ns = step.__self__._ns
    ours = ns["_flat_step"].lower(X, Y, tuple(params[p] for p in ns["PARAMS"]), LR).compile()
    base, Xb, Yb, holder = rs["jax"]
    theirs = base.jitted.lower(holder[0], Xb, Yb, LR).compile()
    return _kernels(ours.as_text()), _kernels(theirs.as_text())


def _kernels(hlo: str) -> int:
    """Instructions of the ENTRY computation that run work (not parameters, constants, tuples)."""
    entry = hlo[hlo.index("\nENTRY"):]
    entry = entry[:entry.index("\n}")]
    ops = re.findall(r"^\s+(?:ROOT )?%\S+ = \S+ ([\w-]+)\(", entry, re.M)
    return sum(op not in ("parameter", "constant", "tuple", "get-tuple-element", "bitcast") for op in ops)


def main(argv=None):
    global DEVICE, DTYPE
    argv = sys.argv[1:] if argv is None else argv
    quick = "--quick" in argv
    if "--device" in argv:
        DEVICE = argv[argv.index("--device") + 1]
    if "--dtype" in argv:
        DTYPE = argv[argv.index("--dtype") + 1]
    networks = run.NETWORKS + ([LARGE] if "--large" in argv else [])
    import torch
    if DEVICE == "cpu":
        torch.set_num_threads(1)
    rounds, block_s = (3, 0.05) if quick else (11, 0.25)
    if "--rounds" in argv:
        rounds = int(argv[argv.index("--rounds") + 1])
    rows = ["| network | jax µs | symback-JAX µs | symback-JAX / jax | XLA kernels symback / jax "
            "| torch µs | symback-torch µs | symback-torch / torch |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for net in networks:
        med, ratio, kernels = bench(net, rounds, block_s)
        us = {k: f"{v * 1e6:,.1f}" if v < 1e-3 else f"{v * 1e6:,.0f}" for k, v in med.items()}
        rows.append(f"| {net[1]} | {us['jax']} | {us['symback-jax']} | {ratio['jax']:.2f} | {kernels[0]} / {kernels[1]} "
                    f"| {us['torch']} | {us['symback-torch']} | {ratio['torch']:.2f} |")
        print(rows[-1], flush=True)
    print("\n".join(["", f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
                     f"{rounds} rounds, {DTYPE}, lr={LR}, torch on {DEVICE}, JAX on {_jax_device()}"
                     + (", 1 thread per library" if DEVICE == "cpu" else ""), "", *rows]))


def _jax_device() -> str:
    import jax
    return str(jax.devices()[0].platform)


if __name__ == "__main__":
    main()
