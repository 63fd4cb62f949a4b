"""One training step of a LeNet-like CNN: symback on each backend against the same library by hand.

    python benchmarks/cnn.py               # ~40 s on 2 cores; --rounds N (default 15), --batch N,
                                           # --dtype float32
    python benchmarks/cnn.py --device cuda --batch 512     # on a GPU: torch and JAX only

28×28 inputs, batch 64, float64 (or --dtype float32), one thread: Conv2d(6, 5, padding 2, ReLU) → MaxPool2d(2) →
Conv2d(16, 5, ReLU) → MaxPool2d(2) → Flatten → Dense(120, ReLU) → Dense(84, ReLU) →
Dense(10, softmax), cross-entropy, plain SGD.

* ``symback-numpy / numpy``: ``m.step`` of the NumPy backend ÷ the hand-written NumPy im2col
  step below (strided-view unfold, one GEMM per layer over every sample's positions, fold by
  kernel offsets, max-pooling by strided window offsets);
* ``symback-torch / torch``: ``m.step`` of the torch backend ÷ torch eager autograd of the same
  network in ``torch.nn.functional`` (forward, ``backward``, in-place SGD);
* ``symback-jax / jax``: ``m.step`` of the JAX backend ÷ ``jax.jit(jax.value_and_grad)`` of the
  network in ``jax.lax.conv_general_dilated`` plus the SGD update, jitted.

Every implementation starts from the same parameters and data; the first step's loss and
gradients are checked equal before timing.  Rounds are interleaved, in a fresh random order
each round (seeded); a ratio is the median of the per-round ratios (below 1: symback is
faster), and the ratio of the two implementations' best rounds.  ``--device cuda`` puts both
torch implementations' tensors on the GPU and leaves out the NumPy pair; JAX runs on its
default device (the GPU where jaxlib has CUDA); every step returns its loss as a float, so a
timed step ends when the device has finished it.  Minor page faults a step
are printed beside each time: in float64, glibc hands one step or another fresh pages for its
2-10 MB arrays (which one moves from process to process), several ms of a 12 ms step; the
best rounds are steps without them.  On CPU the process's CPU time a step is printed too, and
the median of its per-round ratios: on a shared machine the wall time also holds the time
other processes had the cores, this does not.
"""
from __future__ import annotations

import argparse
from functools import partial
import os
import resource
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]

import run  # noqa: E402,F401  (sets the thread variables before numpy, torch and jax load)
import numpy as np  # noqa: E402
from numpy.lib.stride_tricks import sliding_window_view  # noqa: E402

import symback as sb  # noqa: E402

LR = 0.01
CONVS = [(1, 6, 5, 2), (6, 16, 5, 0)]          # (C_in, C_out, k, padding), stride 1


def network():
    """The LeNet-like network as a symback Sequential."""
    return sb.Sequential(sb.Conv2d(6, 5, padding=2, activation="relu"), sb.MaxPool2d(2),
                         sb.Conv2d(16, 5, activation="relu"), sb.MaxPool2d(2), sb.Flatten(),
                         sb.Dense(120, "relu"), sb.Dense(84, "relu"), sb.Dense(10, "softmax"),
                         inputs=(1, 28, 28), loss="cross_entropy")


# ---------------------------------------------------------------- hand-written NumPy im2col
def _unfold(x, k, p):
    n, C, H, W = x.shape
    if p:
        x = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    v = sliding_window_view(x, (k, k), axis=(2, 3))          # (n, C, Ho, Wo, k, k)
    Ho, Wo = v.shape[2], v.shape[3]
    return v.transpose(0, 2, 3, 1, 4, 5).reshape(n * Ho * Wo, C * k * k), Ho, Wo


def _fold(cols, shape, k, p, Ho, Wo):
    n, C, H, W = shape
    cols = cols.reshape(n, Ho, Wo, C, k, k)
    out = np.zeros((n, C, H + 2 * p, W + 2 * p), dtype=cols.dtype)
    for i in range(k):
        for j in range(k):
            out[:, :, i:i + Ho, j:j + Wo] += cols[:, :, :, :, i, j].transpose(0, 3, 1, 2)
    return out[:, :, p:p + H, p:p + W]


def _pool(a):
    """2x2 max-pooling by the four strided window offsets (no copy of a); the arg-max index."""
    best, idx = a[:, :, 0::2, 0::2].copy(), np.zeros(a[:, :, 0::2, 0::2].shape, dtype=np.int8)
    for q, (i, j) in enumerate(((0, 1), (1, 0), (1, 1)), start=1):
        v = a[:, :, i::2, j::2]
        up = v > best
        np.copyto(best, v, where=up)
        np.copyto(idx, q, where=up)
    return best, idx


def _unpool(d, idx, shape):
    out = np.zeros(shape, dtype=d.dtype)
    for q, (i, j) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        np.multiply(d, idx == q, out=out[:, :, i::2, j::2])
    return out


def numpy_step(X, Y, p, lr=LR, grads=False):
    """One SGD step by hand: im2col convolutions, max-pooling by reshape, softmax + CE."""
    n = X.shape[0]
    a, saved = X, []
    for l, (C, Co, k, pad) in enumerate(CONVS, start=1):
        cols, Ho, Wo = _unfold(a, k, pad)
        z = cols @ p[f"K{l}"] + p[f"b{l}"]                     # (n·Ho·Wo, Co)
        r = np.maximum(z, 0).reshape(n, Ho, Wo, Co).transpose(0, 3, 1, 2)
        pooled, idx = _pool(r)
        saved.append((a.shape, cols, z, idx, r.shape, Ho, Wo))
        a = pooled
    f = a.reshape(n, -1)
    h1 = np.maximum(f @ p["W3"] + p["b3"], 0)
    h2 = np.maximum(h1 @ p["W4"] + p["b4"], 0)
    z = h2 @ p["W5"] + p["b5"]
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    s = e.sum(1, keepdims=True)
    loss = float(np.mean(np.log(s)[:, 0] - (z * Y).sum(1)))
    d = (e / s - Y) / n
    g = {"W5": h2.T @ d, "b5": d.sum(0, keepdims=True)}
    d = (d @ p["W5"].T) * (h2 > 0)
    g["W4"], g["b4"] = h1.T @ d, d.sum(0, keepdims=True)
    d = (d @ p["W4"].T) * (h1 > 0)
    g["W3"], g["b3"] = f.T @ d, d.sum(0, keepdims=True)
    d = (d @ p["W3"].T).reshape(a.shape)
    for l in (2, 1):
        C, Co, k, pad = CONVS[l - 1]
        shape, cols, z, idx, rshape, Ho, Wo = saved[l - 1]
        dr = _unpool(d, idx, rshape)
        dz = dr.transpose(0, 2, 3, 1).reshape(-1, Co) * (z > 0)
        g[f"K{l}"], g[f"b{l}"] = cols.T @ dz, dz.sum(0, keepdims=True)
        if l > 1:
            d = _fold(dz @ p[f"K{l}"].T, shape, k, pad, Ho, Wo)
    if grads:
        return loss, g
    for name, v in g.items():
        p[name] -= lr * v
    return loss


# ---------------------------------------------------------------- torch and JAX by hand
def torch_step_fn(tp):
    import torch
    F = torch.nn.functional

    def forward(X, Y):
        a = X
        for l, (C, Co, k, pad) in enumerate(CONVS, start=1):
            a = F.max_pool2d(F.relu(F.conv2d(a, tp[f"K{l}"].T.reshape(Co, C, k, k), tp[f"b{l}"][0],
                                             padding=pad)), 2)
        a = a.flatten(1)
        a = F.relu(a @ tp["W3"] + tp["b3"])
        a = F.relu(a @ tp["W4"] + tp["b4"])
        return F.cross_entropy(a @ tp["W5"] + tp["b5"], Y.argmax(1))

    def step(X, Y):
        for v in tp.values():
            v.grad = None
        loss = forward(X, Y)
        loss.backward()
        with torch.no_grad():
            for v in tp.values():
                v -= LR * v.grad
        return loss.item()      # a float, as m.step returns: on a GPU, the step has finished
    return step


def jax_step_fn():
    import jax
    import jax.numpy as jnp

    def loss_fn(p, X, Y):
        a = X
        for l, (C, Co, k, pad) in enumerate(CONVS, start=1):
            w = p[f"K{l}"].T.reshape(Co, C, k, k)
            a = jax.lax.conv_general_dilated(a, w, (1, 1), ((pad, pad), (pad, pad))) + p[f"b{l}"][0][:, None, None]
            a = jax.lax.reduce_window(jax.nn.relu(a), -jnp.inf, jax.lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")
        a = a.reshape(a.shape[0], -1)
        a = jax.nn.relu(a @ p["W3"] + p["b3"])
        a = jax.nn.relu(a @ p["W4"] + p["b4"])
        z = a @ p["W5"] + p["b5"]
        return jnp.mean(jax.nn.logsumexp(z, axis=1) - (z * Y).sum(1))

    @jax.jit
    def step(p, X, Y):
        loss, g = jax.value_and_grad(loss_fn)(p, X, Y)
        return loss, jax.tree_util.tree_map(lambda a, b: a - LR * b, p, g)
    return step, jax.jit(jax.grad(loss_fn))


def _host(a):
    """a (a NumPy, JAX or torch array on any device) as a float64 NumPy array."""
    return np.asarray(a.detach().cpu() if hasattr(a, "detach") else a, dtype=np.float64)


def _close(a, b, what, tol=1e-8):
    a, b = _host(a), _host(b).reshape(np.shape(a))
    err = float(np.abs(a - b).max()) / max(1.0, float(np.abs(b).max()))
    assert err < tol, f"{what}: relative difference {err:.2e}"


def main(rounds=15, batch=64, reps=5, dtype="float64", device="cpu"):
    import jax
    import torch
    jax.config.update("jax_enable_x64", True)
    torch.set_num_threads(1)
    net = network()
    t0 = time.perf_counter()
    d = sb.derive(net)
    models = {b: sb.compile(d, backend=b, dtype=dtype) for b in ("numpy", "torch", "jax")}
    print(f"derive + compile (three backends): {time.perf_counter() - t0:.1f} s")
    rng = np.random.default_rng(0)
    X = rng.random((batch, 1, 28, 28)).astype(dtype)
    Y = np.eye(10, dtype=dtype)[rng.integers(0, 10, batch)]
    base = {k: v.astype(dtype) for k, v in models["numpy"].init(seed=0).items()}
    # every implementation agrees to rounding: float32's relative 1e-4 (on a GPU, 1e-2: its
    # float32 convolutions and matrix products may round their inputs to TF32's 10 bits)
    close = partial(_close, tol=1e-8 if dtype == "float64" else 1e-4 if device == "cpu" else 1e-2)

    # the same first loss and gradients everywhere before timing
    loss, g = numpy_step(X, Y, {k: v.copy() for k, v in base.items()}, grads=True)
    for b, m in models.items():
        close(m.loss(X, Y, base), loss, f"symback-{b} loss")
        mg = m.grad(X, Y, base)
        for k in g:
            close(mg[k], g[k], f"symback-{b} {k}")
    tp = {k: torch.tensor(v, device=device, requires_grad=True) for k, v in base.items()}
    tstep = torch_step_fn(tp)
    tX, tY = torch.tensor(X, device=device), torch.tensor(Y, device=device)
    on_device = {k: torch.tensor(v, device=device) for k, v in base.items()}
    tg = models["torch"].grad(tX, tY, on_device)         # symback-torch on the device too
    for k in g:
        close(tg[k], g[k], f"symback-torch on {device} {k}")
    close(tstep(tX, tY), loss, "torch loss")
    jstep, jgrad = jax_step_fn()
    jX, jY = jax.numpy.asarray(X), jax.numpy.asarray(Y)
    jp = {k: jax.numpy.asarray(v) for k, v in base.items()}
    jg = jgrad(jp, jX, jY)
    for k in g:
        close(jg[k], g[k], f"jax {k}")

    params = {b: {k: v.copy() for k, v in base.items()} for b in ("numpy", "hand")}
    params["torch"] = on_device
    params["jax"] = {k: jax.numpy.asarray(v) for k, v in base.items()}
    data = {"numpy": (X, Y), "torch": (tX, tY), "jax": (jX, jY)}
    state = {"jp": jp}

    def jax_hand():
        loss_, state["jp"] = jstep(state["jp"], jX, jY)
        loss_.block_until_ready()

    def sym(b):
        return lambda: models[b].step(*data[b], params[b], lr=LR)
    timed = {"symback-numpy": sym("numpy"), "numpy": lambda: numpy_step(X, Y, params["hand"]),
             "symback-torch": sym("torch"), "torch": lambda: tstep(tX, tY),
             "symback-jax": sym("jax"), "jax": jax_hand}
    if device != "cpu":                 # NumPy has no device: only torch and JAX are compared
        del timed["symback-numpy"], timed["numpy"]
    times = {k: [] for k in timed}
    # the process's CPU time a step beside the wall time: on a shared machine, the time other
    # processes hold the cores is in the wall time and not in this (page faults are in both)
    cpu = {k: [] for k in timed}
    faults = {k: [] for k in timed}     # minor page faults a step: fresh pages for large arrays
    names = list(timed)
    for fn in timed.values():           # warm-up (JAX compiles here)
        fn()
    order = np.random.default_rng(1)
    for r in range(rounds):
        # a fresh order each round: the step before one leaves the caches and the allocator as
        # it left them (a rotation would put each implementation always after the same one)
        for k in order.permutation(names):
            fn = timed[k]
            f0, start, c0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter(), time.process_time()
            for _ in range(reps):
                fn()
            times[k].append((time.perf_counter() - start) / reps)
            cpu[k].append((time.process_time() - c0) / reps)
            faults[k].append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / reps)
    where = "one CPU thread" if device == "cpu" else \
        f"torch on {torch.cuda.get_device_name(torch.device(device))}, JAX on {jax.devices()[0].device_kind}"
    print(f"\nLeNet-like 28x28, batch {batch}, {dtype}, {where}, {rounds} rounds x {reps} steps")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    print("| implementation | median ms | median CPU ms | page faults a step (median, max) |")
    print("|---|---:|---:|---:|")
    for k in names:
        print(f"| {k} | {1e3 * np.median(times[k]):.2f} | {1e3 * np.median(cpu[k]):.2f} | "
              f"{np.median(faults[k]):.0f}, {max(faults[k]):.0f} |")
    # the best rounds: each step's time without the rounds where the allocator handed it fresh
    # pages (which step that happens to moves from one process to the next)
    print("\n| ratio | median of per-round ratios | best round ÷ best round | CPU time: median of per-round ratios |")
    print("|---|---:|---:|---:|")
    for b in ("numpy", "torch", "jax") if device == "cpu" else ("torch", "jax"):
        ratio = np.median(np.array(times[f"symback-{b}"]) / np.array(times[b]))
        best = min(times[f"symback-{b}"]) / min(times[b])
        cpu_ratio = np.median(np.array(cpu[f"symback-{b}"]) / np.array(cpu[b])) if device == "cpu" else np.nan
        print(f"| symback-{b} / {b} | {ratio:.2f} | {best:.2f} | {cpu_ratio:.2f} |")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--dtype", default="float64", choices=("float64", "float32"))
    ap.add_argument("--device", default="cpu", help="torch's device, e.g. cuda (default cpu)")
    a = ap.parse_args()
    main(a.rounds, a.batch, a.reps, a.dtype, a.device)
