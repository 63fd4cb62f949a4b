"""Shared fixtures: the seed networks as small builders, and numeric helpers.

Each builder returns ``(graph, s)`` where ``s`` maps every name to its SymPy
symbol, so a test can write the seed's closed forms in the seed's own letters.
The numeric helpers never go through symback: they substitute numbers into
SymPy expressions, or replace symback's functions by definitions written here.
"""
from __future__ import annotations

import os
import random

import autograd.numpy as anp
import mpmath
import numpy as np
import pytest
import sympy as sp

import symback as sb

# ---------------------------------------------------------------- slow mode
# `SYMBACK_SLOW=1 pytest` or `pytest --slow` runs the differential tests with
# SLOW_FACTOR times more hypothesis examples (thousands instead of hundreds), and
# the cases marked `slow` (`slow(...)` below): more sizes, networks and backends
# of a capability whose every oracle a normal run already checks on one case.
SLOW_FACTOR = 20


def slow_mode() -> bool:
    """True under `SYMBACK_SLOW=1` or `pytest --slow`."""
    return os.environ.get("SYMBACK_SLOW") == "1"


def slow(*values, id=None):
    """A parametrize case run in slow mode only (skipped, with the reason, in a normal run)."""
    return pytest.param(*values, id=id, marks=pytest.mark.slow)


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true",
                     help=f"run {SLOW_FACTOR}x more hypothesis examples (same as SYMBACK_SLOW=1)")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: run in slow mode only (SYMBACK_SLOW=1 or --slow)")
    # Set before the test modules are imported, which read it in examples().
    if config.getoption("--slow"):
        os.environ["SYMBACK_SLOW"] = "1"
    # The suite's normal run draws the same random graphs every time (CI is a gate: a graph
    # no run has met must not fail a landing by chance); slow mode explores new ones each run
    from hypothesis import settings
    settings.register_profile("symback-normal", derandomize=True)
    settings.register_profile("symback-slow", derandomize=False)
    settings.load_profile("symback-slow" if os.environ.get("SYMBACK_SLOW") == "1" else "symback-normal")


def pytest_collection_modifyitems(config, items):
    # Skipped rather than deselected: a normal run's summary still counts them.
    if slow_mode():
        return
    skip = pytest.mark.skip(reason="slow mode only (SYMBACK_SLOW=1 or --slow)")
    for item in items:
        if item.get_closest_marker("slow"):
            item.add_marker(skip)


def examples(n: int, slow: int | None = None) -> int:
    """max_examples for a hypothesis test: n normally; in slow mode `slow`, or SLOW_FACTOR·n."""
    return (slow or n * SLOW_FACTOR) if slow_mode() else n


def _symbols(g: sb.Graph) -> dict[str, sp.Symbol]:
    return {n: g.symbol(n) for n in g.order}


def seed002_graph():
    """Seed 002: a1 = w1 x1, a2 = w2 x2, ŷ = b + a1 + a2, Loss = (ŷ − y)²."""
    g = sb.Graph()
    x1, x2 = g.inputs("x1 x2")
    y = g.targets("y")
    w1, w2, b = g.params("w1 w2 b")
    a1 = g.node("a_1", w1 * x1)
    a2 = g.node("a_2", w2 * x2)
    yhat = g.node("yhat", b + a1 + a2)
    g.loss((yhat - y) ** 2)
    return g, _symbols(g)


def seed000_graph():
    """Seed 000: c = x1 w1 + x2 w2 + b, p = ReLU(c), L = 1/(2m) Σ (p − y)²."""
    g = sb.Graph()
    x1, x2 = g.inputs("x1 x2")
    y = g.targets("y")
    w1, w2, b = g.params("w1 w2 b")
    c = g.node("c", x1 * w1 + x2 * w2 + b)
    p = g.node("p", sb.relu(c))
    g.loss((p - y) ** 2 / 2, reduction="mean")   # C/2 averaged: the seed's 1/(2m) Σ
    return g, _symbols(g)


def seed001_graph():
    """Seed 001: a1 = ReLU(i1 w1), a2 = ReLU(a1 w2), a3 = σ(a2 w3), C = (a3 − y)²."""
    g = sb.Graph()
    i1 = g.inputs("i1")
    y = g.targets("y")
    w1, w2, w3 = g.params("w1 w2 w3")
    a1 = g.node("a1", sb.relu(i1 * w1))
    a2 = g.node("a2", sb.relu(a1 * w2))
    a3 = g.node("a3", sb.sigmoid(a2 * w3))
    g.loss((a3 - y) ** 2)
    return g, _symbols(g)


def seed003_case2_graph():
    """Seed 003, chain rule case 2: x = g(s), y = h(s), z = k(x, y); C = z."""
    g = sb.Graph()
    t = g.inputs("t")
    s = g.params("s")
    x = g.node("x", sp.sin(s * t))
    y = g.node("y", sp.exp(s))
    z = g.node("z", x * y + x)
    g.loss(z, reduction="sum")                      # L = Σ_n C^n, as in the seed
    return g, _symbols(g)


def seed004_graph():
    """Seed 004's punchline network, one unit per layer (X W1 ... written as scalars)."""
    g = sb.Graph()
    x = g.inputs("x")
    y = g.targets("y")
    W1, W2, W3 = g.params("W1 W2 W3")
    z2 = g.node("z2", x * W1)
    a2 = g.node("a2", sb.sigmoid(z2))
    z3 = g.node("z3", a2 * W2)
    a3 = g.node("a3", sb.sigmoid(z3))
    yhat = g.node("yhat", a3 * W3)
    g.loss((yhat - y) ** 2 / 2)
    return g, _symbols(g)


def seed004_1d_graph():
    """Seed 004's numbers: ŷ = a(w x) with a the identity, L = (ŷ − y)²."""
    g = sb.Graph()
    x = g.inputs("x")
    y = g.targets("y")
    w = g.params("w")
    yhat = g.node("yhat", sb.identity(w * x))
    g.loss((yhat - y) ** 2)
    return g, _symbols(g)


def skip_graph():
    """A hand-written matrix graph: a tanh layer, a skip connection reusing W1, softmax +
    cross-entropy, and the penalty (1/200)‖W1‖²."""
    m = sb.BATCH
    g = sb.Graph()
    X = g.inputs("X", shape=(m, 3))
    Y = g.targets("Y", shape=(m, 2))
    W1, b1, W2, b2 = g.params("W1 b1 W2 b2", shape=[(3, 4), (1, 4), (4, 2), (1, 2)])
    A1 = g.node("A1", sb.tanh(X @ W1 + sb.ones(m) @ b1))
    H = g.node("H", A1 + sb.relu(A1 @ W1.T @ W1))
    Yhat = g.node("Yhat", sb.softmax(H @ W2 + sb.ones(m) @ b2))
    g.loss(sb.cross_entropy(Yhat, Y), penalty=sp.Rational(1, 200) * sb.sumsq(W1))
    return g


def chain_graph(depth: int, act=None):
    """A deep chain of one-neuron layers: z_l = a_{l-1} w_l + b_l, a_l = act(z_l); C = (a_L − y)²/2."""
    act = act or sb.tanh
    g = sb.Graph()
    a = g.inputs("x")
    y = g.targets("y")
    for l in range(1, depth + 1):
        w, b = g.params(f"w{l} b{l}")
        z = g.node(f"z{l}", a * w + b)
        a = g.node(f"a{l}", act(z))
    g.loss((a - y) ** 2 / 2)
    return g


def scalar_mlp_graph(sizes, act=None):
    """A fully connected net with every weight its own symbol w{l}_{i}_{j}; linear output, C = (ŷ − y)²/2."""
    act = act or sb.tanh
    g = sb.Graph()
    prev = list(np.atleast_1d(g.inputs([f"x{i}" for i in range(1, sizes[0] + 1)])))
    y = g.targets("y")
    for l in range(1, len(sizes)):
        cur = []
        for j in range(1, sizes[l] + 1):
            ws = np.atleast_1d(g.params([f"w{l}_{i}_{j}" for i in range(1, len(prev) + 1)]))
            b = g.params(f"b{l}_{j}")
            z = g.node(f"z{l}_{j}", sp.Add(*[w * a for w, a in zip(ws, prev)]) + b)
            cur.append(z if l == len(sizes) - 1 else g.node(f"a{l}_{j}", act(z)))
        prev = cur
    g.loss(sp.Add(*[(o - y) ** 2 for o in prev]) / 2)
    return g


# ---------------------------------------------------------------- numbers
# The oracle's own definitions of symback's functions, written here.
ORACLE_DEFS = {
    "identity": lambda z: z,
    "sigmoid": lambda z: 1 / (1 + sp.exp(-z)),
    "tanh": sp.tanh,
    "relu": lambda z: sp.Piecewise((z, z >= 0), (0, True)),
    "leaky_relu": lambda z, a=sp.Rational(1, 100): sp.Piecewise((z, z >= 0), (a * z, True)),
    "softplus": lambda z: sp.log(1 + sp.exp(z)),
    "swish": lambda z: z / (1 + sp.exp(-z)),
    "silu": lambda z: z / (1 + sp.exp(-z)),
}


def ag_sigmoid(z):
    """σ in autograd.numpy."""
    return 1 / (1 + anp.exp(-z))


# The same definitions in autograd.numpy, for oracles differentiated by HIPS autograd.
AG_ACT = {
    "identity": lambda z: z,
    "sigmoid": ag_sigmoid,
    "tanh": anp.tanh,
    "relu": lambda z: anp.where(z >= 0, z, 0.0),
    "leaky_relu": lambda z: anp.where(z >= 0, z, 0.01 * z),
    "softplus": lambda z: anp.log(1 + anp.exp(z)),
    "swish": lambda z: z * ag_sigmoid(z),
}
AG_LOSS = {  # per output element; summed over a sample's outputs
    "mse": lambda p, t: (p - t) ** 2,
    "half_mse": lambda p, t: (p - t) ** 2 / 2,
    "binary_cross_entropy": lambda p, t: -(t * anp.log(p) + (1 - t) * anp.log(1 - p)),
    "logcosh": lambda p, t: anp.log(anp.cosh(p - t)),
    "huber": lambda p, t: anp.where(anp.abs(p - t) <= 1, (p - t) ** 2 / 2, anp.abs(p - t) - 0.5),
}


def to_elementary(expr: sp.Expr) -> sp.Expr:
    """Replace every symback function in `expr` by the oracle's own definition.

    A plain bottom-up rebuild: ``Expr.replace`` (simultaneous) leaves
    ``identity(identity(p))`` as ``identity(p)``, since the rebuilt node
    equals its old child and is skipped.
    """
    if not expr.args:
        return expr
    new = expr.func(*[to_elementary(a) for a in expr.args])
    if isinstance(new, sb.functions.Activation) and type(new).__name__ in ORACLE_DEFS:
        return ORACLE_DEFS[type(new).__name__](*new.args)
    return new


def num(expr, values: dict) -> float:
    """Evaluate a SymPy expression at `values` (name or symbol -> number) as a float."""
    subs = {(sp.Symbol(k) if isinstance(k, str) else k): sp.Float(v, 30) for k, v in values.items()}
    out = sp.sympify(expr).xreplace(subs)
    return float(sp.N(out, 20))


class MpOracle:
    """A scalar graph's batch loss and gradient from a SymPy expression of its loss, evaluated by mpmath.

    ``expr`` is the per-sample cost written in the graph's input, target and
    parameter names (any assumptions); the gradient is ``sympy.diff`` of it,
    and ``fd`` central differences of it.  Evaluate inside ``mpmath.workdps``.
    """

    def __init__(self, g, expr):
        self.names = g.input_names + g.target_names + g.param_names
        syms = {s.name: s for s in expr.free_symbols}
        self.args = [syms.get(n, sp.Symbol(n, real=True)) for n in self.names]
        self.params = g.param_names
        self.loss_fn = sp.lambdify(self.args, expr, "mpmath")
        self.grad_fn = {p: sp.lambdify(self.args, sp.diff(expr, syms[p]) if p in syms else sp.S.Zero, "mpmath")
                        for p in self.params}
        self.reduction = g.reduction

    def _reduce(self, fn, X, Y, params, shift=None):
        total = mpmath.mpf(0)
        for xr, yr in zip(X, Y):
            vals = {**dict(zip(self.names, list(xr) + list(yr))), **{p: float(params[p]) for p in self.params}}
            vals = {n: mpmath.mpf(float(v)) for n, v in vals.items()}
            if shift:
                vals[shift[0]] += shift[1]
            total += fn(*[vals[n] for n in self.names])
        return total / len(X) if self.reduction == "mean" else total

    def loss(self, X, Y, params, shift=None) -> mpmath.mpf:
        """The batch loss, optionally with one parameter moved by shift = (name, h)."""
        return self._reduce(self.loss_fn, X, Y, params, shift)

    def grad(self, X, Y, params) -> dict:
        """∂L/∂p from sympy.diff of the loss."""
        return {p: self._reduce(self.grad_fn[p], X, Y, params) for p in self.params}

    def fd(self, X, Y, params, h=mpmath.mpf("1e-25")) -> dict:
        """∂L/∂p by central differences of the oracle loss (exact enough at 80 or more digits)."""
        return {p: (self.loss(X, Y, params, (p, h)) - self.loss(X, Y, params, (p, -h))) / (2 * h)
                for p in self.params}


@pytest.fixture
def seed002():
    return seed002_graph()


@pytest.fixture
def seed000():
    return seed000_graph()


@pytest.fixture
def seed001():
    return seed001_graph()


@pytest.fixture
def seed003_case2():
    return seed003_case2_graph()


@pytest.fixture
def seed004():
    return seed004_graph()


@pytest.fixture
def seed004_1d():
    return seed004_1d_graph()


@pytest.fixture
def rng():
    """A seeded random.Random for reproducible random points."""
    return random.Random(1234)


def pdflatex_problems(tex: str, folder) -> tuple[list, list]:
    """(errors, overfull widths in pt) pdflatex reports for the document `tex`, built in `folder`."""
    import re
    import shutil
    import subprocess
    exe = shutil.which("pdflatex")
    assert exe, "pdflatex is required (TeX Live from Debian, installed by .ci/run)"
    (folder / "doc.tex").write_text(tex, encoding="utf-8")
    subprocess.run([exe, "-interaction=nonstopmode", "-no-shell-escape", "doc.tex"], cwd=folder,
                   capture_output=True, timeout=240)
    log = (folder / "doc.log").read_text(errors="replace")
    return re.findall(r"^! .*", log, re.M), re.findall(r"Overfull \\hbox \(([\d.]+)pt too wide\)", log)

