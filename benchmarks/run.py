"""Benchmark symback's compiled training step against hand-written NumPy and autodiff peers.

    python benchmarks/run.py [--quick] [--only NAME] [--markdown FILE] [--threads N]

Section 1, *training step*: for each network, every available implementation
(numpy, torch, autograd, jax, symback) starts from the same parameters and data
and is timed in ONE process with interleaved rounds: in each round every
implementation runs a block of N steps (N calibrated so a block takes ~30 ms),
the order rotating from round to round. The table gives the median per-step
time and, for each pair, the median over rounds of the per-round time ratio.
Before timing, each implementation's first loss is compared with numpy's.

Section 2, *time to a ready model*: wall time of ``sb.mlp``, ``sb.derive``,
``sb.compile`` and the first ``m.step`` (one cold run each, every measurement
in a fresh Python process so no cache -- SymPy's included -- carries over),
for the same networks and for tanh nets of width 32 and growing depth (up to the
100 hidden layers of issue 9's target).

Threads: by default every library runs single-threaded (``--threads 1``: the
OpenMP/BLAS thread variables, ``torch.set_num_threads`` and, for JAX,
``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false`` are set before anything
loads). On a small shared machine, multi-threaded pools of different
libraries spin against each other and against other processes, and timings
become erratic; ``--threads 0`` keeps the libraries' defaults. JAX's
asynchronous dispatch still hands work between threads, so its times are
the most sensitive to other load on the machine.

A missing library, or a symback that cannot yet build a network, shows as
"n/a" with the reason in the notes; the rest still runs. The Markdown report
goes to stdout (progress to stderr); ``--markdown FILE`` also writes it to FILE
(atomically).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import importlib.metadata as _md
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

# Thread pools must be sized before numpy, torch or jax load them. On a small
# machine, libraries' pools spinning against each other (and against other
# processes) distort timings badly, so the default is one thread per library.
DEFAULT_THREADS = 1
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")
ORIGINAL_ENV = {k: os.environ.get(k) for k in
                ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "XLA_FLAGS") + THREAD_VARS}


def _early_threads(argv):
    """--threads N from argv (before argparse runs); None if malformed."""
    value = None
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            value = argv[i + 1]
        elif a.startswith("--threads="):
            value = a.split("=", 1)[1]
    if value is None:
        return DEFAULT_THREADS
    try:
        return int(value)
    except ValueError:
        return None


def _limit_threads(n):
    if not n or n < 0:
        return
    for k in THREAD_VARS:
        os.environ[k] = str(n)
    if n == 1:  # XLA has no thread-count flag; this one makes its CPU matmuls serial
        os.environ["XLA_FLAGS"] = " ".join(
            filter(None, [os.environ.get("XLA_FLAGS", ""), "--xla_cpu_multi_thread_eigen=false"]))


THREADS = _early_threads(sys.argv[1:])
_limit_threads(THREADS)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _p in (HERE, ROOT):  # baselines.py, and symback from a plain checkout
    if _p not in sys.path:
        sys.path.insert(0, _p)

import numpy as np  # noqa: E402

from baselines import BASELINES, Baseline, init_params, make_data  # noqa: E402

# key, label, sizes, hidden activation, output, loss, batch
NETWORKS = [
    ("2-4-1", "2-4-1 sigmoid/MSE batch 32", [2, 4, 1], "sigmoid", "sigmoid", "mse", 32),
    ("2-16-16-1", "2-16-16-1 tanh/MSE batch 64", [2, 16, 16, 1], "tanh", "identity", "mse", 64),
    ("64-128-128-10", "64-128-128-10 relu/softmax-CE batch 256", [64, 128, 128, 10],
     "relu", "softmax", "cross_entropy", 256),
    ("784-128-64-10", "784-128-64-10 sigmoid/softmax-CE batch 128", [784, 128, 64, 10],
     "sigmoid", "softmax", "cross_entropy", 128),
    ("20x32", "20x32 tanh batch 64", [32] + [32] * 20 + [1], "tanh", "identity", "mse", 64),
]
DEPTHS = [2, 8, 32, 100]
QUICK_DEPTHS = [2, 100]
IMPLS = ["numpy", "torch", "autograd", "jax", "symback"]
LR = 0.01


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def short_error(exc):
    text = f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
    return text if len(text) <= 160 else text[:157] + "..."


# ---------------------------------------------------------------------------
# symback as one more implementation (public API of DESIGN.md only)
# ---------------------------------------------------------------------------

def build_net(sizes, activation, output, loss):
    """The network: ``sb.mlp`` builds it as a matrix graph (Z_l = A_{l-1} W_l + 1 b_l, A_l = f(Z_l))."""
    import symback as sb
    return sb.mlp(list(sizes), activation=activation, output=output, loss=loss)


def symback_step(sizes, activation, output, loss):
    import symback as sb

    net = build_net(sizes, activation, output, loss)
    m = sb.compile(sb.derive(net))
    shapes = {k: np.shape(v) for k, v in m.init(seed=0).items()}
    expected = {k for l in range(1, len(sizes)) for k in (f"W{l}", f"b{l}")}
    if set(shapes) != expected:
        raise ValueError(f"symback parameters {sorted(shapes)} != {sorted(expected)}")

    def params_in(params):
        # the baselines' initial values, in symback's own shapes
        return {k: np.array(params[k], dtype=np.float64).reshape(shapes[k]) for k in shapes}

    def data_in(X, Y):
        return np.ascontiguousarray(X, dtype=np.float64), np.ascontiguousarray(Y, dtype=np.float64)

    step = m.step       # (X, Y, params, lr) -> the loss as a float, as the baselines' steps

    def params_out(state):
        return {k: np.array(v, dtype=np.float64) for k, v in state.items()}

    return Baseline("symback", params_in, data_in, step, params_out)


FACTORIES = dict(BASELINES, symback=symback_step)


# ---------------------------------------------------------------------------
# machine information
# ---------------------------------------------------------------------------

def _version(dist):
    try:
        return _md.version(dist)
    except _md.PackageNotFoundError:
        return None


def machine_info():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        ncpu = len(os.sched_getaffinity(0))
    except AttributeError:
        ncpu = os.cpu_count()
    blas = []
    try:
        import threadpoolctl

        for lib in threadpoolctl.threadpool_info():
            blas.append(f"{lib.get('internal_api')} {lib.get('version') or ''} "
                        f"({lib.get('user_api')}, {lib.get('num_threads')} threads, "
                        f"{lib.get('architecture') or '-'}, {os.path.basename(lib.get('filepath', ''))})")
    except Exception:
        pass
    if not blas:
        try:
            cfg = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
            blas.append(f"{cfg.get('name')} {cfg.get('version')}")
        except Exception:
            blas.append("unknown")
    try:
        commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:
        commit = ""
    versions = ", ".join(f"{d} {v}" for d in ("numpy", "sympy", "torch", "jax", "jaxlib", "autograd",
                                               "symback")
                         if (v := _version(d)))
    env = ", ".join(f"{k}={'unset' if v is None else v}" for k, v in ORIGINAL_ENV.items()
                    if v is not None or k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"))
    if THREADS and THREADS > 0:
        threads = (f"{THREADS} per library (--threads {THREADS}: "
                   + "/".join(k.split("_")[0] for k in THREAD_VARS)
                   + f" thread variables set to {THREADS}, torch.set_num_threads"
                   + (", XLA_FLAGS=--xla_cpu_multi_thread_eigen=false)" if THREADS == 1 else ")"))
    else:
        threads = "library defaults (--threads 0)"
    lines = [
        f"- date: {_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}"
        + (f", repo commit {commit}" if commit else ""),
        f"- CPU: {cpu}, {ncpu} usable cores; {platform.system()} {platform.release()}",
        f"- Python {platform.python_version()}; {versions}",
        "- BLAS: " + "; ".join(blas),
        f"- threads: {threads}",
        f"- environment as given: {env}",
    ]
    try:
        import torch

        lines.append(f"- torch threads: {torch.get_num_threads()}")
    except Exception:
        pass
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# section 1: training step
# ---------------------------------------------------------------------------

def _block(step, X, Y, state, lr, n):
    gc.collect()
    was = gc.isenabled()
    gc.disable()
    try:
        t0 = time.perf_counter()
        for _ in range(n):
            step(X, Y, state, lr)
        return time.perf_counter() - t0
    finally:
        if was:
            gc.enable()


def interleaved(rs, lr, rounds, block_s, probe=3):
    """Per-step times of each runner in ``rs`` (name → (step, X, Y, state)), in interleaved rounds.

    Each runner's block is sized to about ``block_s`` seconds from a probe of ``probe`` steps;
    the order rotates every round, so load that comes and goes falls on every runner alike.
    Returns name → list of per-step seconds, one per round.
    """
    reps = {}
    for k, (step, X, Y, state) in rs.items():
        t = _block(step, X, Y, state, lr, probe)
        reps[k] = max(probe, int(block_s / max(t / probe, 1e-7)))
    names = list(rs)
    times = {k: [] for k in names}
    for r in range(rounds):
        for k in names[r % len(names):] + names[:r % len(names)]:
            step, X, Y, state = rs[k]
            times[k].append(_block(step, X, Y, state, lr, reps[k]) / reps[k])
    return times


def paired(times, libs):
    """(median per-step seconds of each runner, lib → median per-round ratio symback-lib / lib)."""
    import numpy as np
    med = {k: float(np.median(v)) for k, v in times.items()}
    ratio = {lib: float(np.median([a / b for a, b in zip(times["symback-" + lib], times[lib])]))
             for lib in libs}
    return med, ratio


def bench_network(net, impls, rounds, block_s, notes):
    key, label, sizes, act, out, loss, batch = net
    params = init_params(sizes, seed=0)
    X, Y = make_data(sizes, batch, loss, seed=1)
    runners = {}
    first_loss = {}
    for name in impls:
        try:
            b = FACTORIES[name](sizes, act, out, loss)
            Xc, Yc = b.data_in(X, Y)
            first_loss[name] = b.step(Xc, Yc, b.params_in(params), LR)  # also warms up / jit
            state = b.params_in(params)
            for _ in range(2):
                b.step(Xc, Yc, state, LR)
            # calibrate the block size
            n = 1
            t = _block(b.step, Xc, Yc, state, LR, n)
            while t < 0.2 * block_s:
                n *= 2
                t = _block(b.step, Xc, Yc, state, LR, n)
            # the best of three blocks, so a burst of load does not shrink the block
            per = min(t, _block(b.step, Xc, Yc, state, LR, n),
                      _block(b.step, Xc, Yc, state, LR, n)) / n
            runners[name] = (b.step, Xc, Yc, state, max(1, round(block_s / per)))
        except Exception as e:  # missing library or a symback that cannot do this yet
            notes.append(f"{key}: {name} n/a ({short_error(e)})")
            if os.environ.get("SYMBACK_BENCH_DEBUG"):
                traceback.print_exc()
    ref = first_loss.get("numpy")
    mismatch = set()
    for name, value in first_loss.items():
        if ref is not None and not abs(value - ref) <= 1e-8 * max(1.0, abs(ref)):
            mismatch.add(name)
            notes.append(f"{key}: {name}'s first loss {value!r} differs from numpy's {ref!r}")
    names = list(runners)
    times = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)] if names else []
        for name in order:
            step, Xc, Yc, state, n = runners[name]
            times[name].append(_block(step, Xc, Yc, state, LR, n) / n)
    blocks = {name: runners[name][4] for name in names}
    return times, blocks, mismatch


def ratio(times, a, b):
    if a not in times or b not in times or not times[a] or not times[b]:
        return None
    return statistics.median(x / y for x, y in zip(times[a], times[b]))


def fmt_us(t):
    if t is None:
        return "n/a"
    us = t * 1e6
    if us >= 1000:
        return f"{us:,.0f}"
    if us >= 100:
        return f"{us:.0f}"
    if us >= 10:
        return f"{us:.1f}"
    return f"{us:.2f}"


def fmt_ratio(r):
    return "n/a" if r is None else f"{r:.2f}"


RATIOS = [("symback", "numpy-guarded"), ("torch", "numpy"), ("autograd", "numpy"), ("jax", "numpy"),
          ("symback", "numpy"), ("symback", "torch"), ("symback", "autograd"), ("symback", "jax")]


def step_table(results, impls):
    ratios = [(a, b) for a, b in RATIOS if a in impls and b in impls]
    head = (["network"] + [f"{i} µs" for i in impls] + [f"{a}/{b}" for a, b in ratios])
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for label, (times, blocks, mismatch) in results:
        cells = [label]
        for i in impls:
            t = statistics.median(times[i]) if times.get(i) else None
            cells.append(fmt_us(t) + (" (!)" if i in mismatch else ""))
        cells += [fmt_ratio(ratio(times, a, b)) for a, b in ratios]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# section 2: time to a ready model (each measurement in a fresh process)
# ---------------------------------------------------------------------------

def ready_child(spec):
    """Run in a subprocess (same thread settings): build, derive, compile, step once; print JSON."""
    sizes, act, out, loss, batch = spec
    res = {}
    stage = "import symback"
    try:
        t0 = time.perf_counter()
        import symback as sb

        t1 = time.perf_counter()
        res["import"] = t1 - t0
        stage = "sb.mlp"
        net = build_net(sizes, act, out, loss)
        t2 = time.perf_counter()
        res["mlp"] = t2 - t1
        stage = "sb.derive"
        d = sb.derive(net)
        t3 = time.perf_counter()
        res["derive"] = t3 - t2
        stage = "sb.compile"
        m = sb.compile(d)
        t4 = time.perf_counter()
        res["compile"] = t4 - t3
        stage = "first m.step"
        params = m.init(seed=0)
        X, Y = make_data(sizes, batch, loss, seed=1)
        t5 = time.perf_counter()
        m.step(X, Y, params, lr=LR)
        t6 = time.perf_counter()
        res["first_step"] = t6 - t5
        res["total"] = (t4 - t1) + (t6 - t5)
    except BaseException as e:  # noqa: BLE001 -- report anything, including SystemExit
        res["error"] = f"{stage}: {short_error(e)}"
    print(json.dumps(res))


def ready_measure(spec, timeout):
    cmd = [sys.executable, os.path.abspath(__file__), "--threads", str(THREADS),
           "--_ready-child", json.dumps(spec)]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:g} s"}
    for line in reversed(p.stdout.strip().splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    err = (p.stderr.strip().splitlines() or ["no output"])[-1]
    return {"error": f"child exited {p.returncode}: {err[:160]}"}


def fmt_s(t):
    if t is None:
        return "n/a"
    if t >= 10:
        return f"{t:.1f}"
    if t >= 0.01:
        return f"{t:.2f}"
    return f"{t * 1000:.2f} ms"


def ready_table(rows, notes):
    head = ["network", "import symback s", "mlp s", "derive s", "compile s", "first step s",
            "total s (mlp..first step)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * 6) + "|"]
    for label, res in rows:
        if "error" in res:
            notes.append(f"ready model, {label}: n/a ({res['error']})")
        cells = [label] + [fmt_s(res.get(k)) for k in
                           ("import", "mlp", "derive", "compile", "first_step", "total")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------

def atomic_write(path, text):
    path = os.path.abspath(path)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-", suffix=".md")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def select(only):
    if not only:
        return NETWORKS
    q = only.lower()
    exact = [n for n in NETWORKS if n[0].lower() == q]
    chosen = exact or [n for n in NETWORKS if q in n[0].lower() or q in n[1].lower()]
    if not chosen:
        keys = ", ".join(n[0] for n in NETWORKS)
        raise SystemExit(f"run.py: no network matches {only!r}; choose one of: {keys}")
    return chosen


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="5 rounds of ~15 ms blocks, depths 2 and 100 only")
    ap.add_argument("--only", metavar="NAME",
                    help="one network, by key (" + ", ".join(n[0] for n in NETWORKS)
                    + ") or a substring of its label; skips the depth-scaling rows")
    ap.add_argument("--markdown", metavar="FILE", help="also write the report to FILE")
    ap.add_argument("--rounds", type=int, help="interleaved rounds (default 15, quick 5)")
    ap.add_argument("--block-ms", type=float, help="target block duration (default 30, quick 15)")
    ap.add_argument("--impls", default=",".join(IMPLS),
                    help="comma-separated implementations (default: all)")
    ap.add_argument("--skip-steps", action="store_true", help="skip the training-step section")
    ap.add_argument("--skip-ready", action="store_true", help="skip the ready-model section")
    ap.add_argument("--ready-timeout", type=float, default=600.0,
                    help="seconds allowed per ready-model measurement (default 600)")
    ap.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                    help="threads per library, set before they load (default 1; "
                    "0 = the libraries' own defaults)")
    ap.add_argument("--_ready-child", dest="ready_child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.ready_child:
        ready_child(json.loads(args.ready_child))
        return 0

    if args.threads > 0:
        try:
            import torch

            torch.set_num_threads(args.threads)
        except Exception:
            pass
    impls = [i.strip() for i in args.impls.split(",") if i.strip()]
    unknown = [i for i in impls if i not in FACTORIES]
    if unknown:
        raise SystemExit(f"run.py: unknown implementation(s) {unknown}; known: {list(FACTORIES)}")
    rounds = args.rounds or (5 if args.quick else 15)
    block_s = (args.block_ms or (15.0 if args.quick else 30.0)) / 1000.0
    nets = select(args.only)
    notes = []

    out = ["# symback benchmarks", "", machine_info(), ""]

    if not args.skip_steps:
        results = []
        for net in nets:
            log(f"training step: {net[1]} ...")
            results.append((net[1], bench_network(net, impls, rounds, block_s, notes)))
        blocks = "; ".join(f"{label.split(' ')[0]}: " + ", ".join(f"{k} {v}" for k, v in r[1].items())
                           for label, r in results)
        out += ["## Training step (forward + backward + SGD update)", "",
                f"Median per-step time over {rounds} interleaved rounds; a ratio is the median of "
                f"per-round ratios (lower is faster for the first named). float64, lr={LR}. "
                "(!) marks a first loss that differs from numpy's.", "",
                step_table(results, impls), "",
                f"Steps per block: {blocks}.", ""]

    if not args.skip_ready:
        rows = []
        specs = [(net[1], (net[2], net[3], net[4], net[5], net[6])) for net in nets]
        if not args.only:
            for depth in (QUICK_DEPTHS if args.quick else DEPTHS):
                specs.append((f"tanh width 32, {depth} hidden layers",
                              ([32] + [32] * depth + [1], "tanh", "identity", "mse", 64)))
        for label, spec in specs:
            log(f"ready model: {label} ...")
            rows.append((label, ready_measure(spec, args.ready_timeout)))
        out += ["## Time to a ready model", "",
                "Wall time, one cold run each, every row in a fresh Python process "
                "(no SymPy or symback cache carried over). Total = mlp + derive + compile "
                "+ first step (import excluded).", "",
                ready_table(rows, notes), ""]

    if notes:
        out += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    text = "\n".join(out).rstrip("\n") + "\n"
    sys.stdout.write(text)
    sys.stdout.flush()
    if args.markdown:
        atomic_write(args.markdown, text)
        log(f"wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
