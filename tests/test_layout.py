"""The layout (symback.layout): one object per graph that knows its form — scalars, matrices
with sb.BATCH rows, one sample's matrices — and answers what the engine and the compiler used
to branch on.  Oracles: the batch loss and every gradient against the same network written in
NumPy here (loss) and central finite differences of it (gradients), for each form and both
reductions, with and without a penalty; a step against params − lr·gradient; the declared
shapes read back from the graph's own symbols; the expression helpers against NumPy on
explicit matrices; the printed stacking evaluated by NumPy.
"""
from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

import symback as sb
from symback.kinds.base import BATCH, add, plus, zero_like
from symback.layout import BatchRows, OneSample, Scalars

LAM = sp.Rational(1, 10)


# ---------------------------------------------------------------- one network per form
def scalar_graph(reduction="mean"):
    g = sb.Graph()
    x1, x2 = g.inputs("x1 x2"); y = g.targets("y")
    w1, w2, b = g.params("w1 w2 b")
    z = g.node("z", w1 * x1 + w2 * x2 + b)
    p = g.node("p", sp.tanh(z))
    g.loss((p - y) ** 2, reduction=reduction)
    return g


def scalar_numpy(X, Y, P, reduction):
    p = np.tanh(P["w1"] * X[:, 0] + P["w2"] * X[:, 1] + P["b"])
    c = (p - Y[:, 0]) ** 2
    return c.mean() if reduction == "mean" else c.sum()


def rows_graph(reduction="mean", penalty=False):
    g = sb.Graph()
    X = g.inputs("X", shape=(BATCH, 3)); Y = g.targets("Y", shape=(BATCH, 2))
    W, b = g.params("W b", shape=[(3, 2), (1, 2)])
    H = g.node("H", sb.tanh(X @ W + sb.ones(BATCH) @ b))
    g.loss(sb.mse(H, Y), reduction=reduction, penalty=LAM * sb.sumsq(W) if penalty else None)
    return g


def rows_numpy(X, Y, P, reduction, penalty):
    c = ((np.tanh(X @ P["W"] + P["b"]) - Y) ** 2).sum(axis=1)
    L = c.mean() if reduction == "mean" else c.sum()
    return L + (0.1 * (P["W"] ** 2).sum() if penalty else 0.0)


def sample_graph(reduction="mean", penalty=False, T=4, d=3, k=2):
    g = sb.Graph()
    X = g.inputs("X", shape=(T, d)); Y = g.targets("Y", shape=(T, k))
    W = g.params("W", shape=(d, k))
    H = g.node("H", sb.tanh(X @ W))
    g.loss(sb.mse(H, Y), reduction=reduction, penalty=LAM * sb.sumsq(W) if penalty else None)
    return g


def sample_numpy(X, Y, P, reduction, penalty):
    c = ((np.tanh(X @ P["W"]) - Y) ** 2).sum(axis=(1, 2))        # one cost per sample
    L = c.mean() if reduction == "mean" else c.sum()
    return L + (0.1 * (P["W"] ** 2).sum() if penalty else 0.0)


def data(form, rng, n=5):
    if form == "scalar":
        return rng.normal(size=(n, 2)), rng.normal(size=(n, 1))
    if form == "rows":
        return rng.normal(size=(n, 3)), rng.normal(size=(n, 2))
    return rng.normal(size=(n, 4, 3)), rng.normal(size=(n, 4, 2))


CASES = [("scalar", "mean", False), ("scalar", "sum", False),
         ("rows", "mean", False), ("rows", "sum", True),
         ("sample", "mean", False), ("sample", "mean", True), ("sample", "sum", True)]


def build(form, reduction, penalty):
    if form == "scalar":
        return scalar_graph(reduction), lambda X, Y, P: scalar_numpy(X, Y, P, reduction)
    if form == "rows":
        return rows_graph(reduction, penalty), lambda X, Y, P: rows_numpy(X, Y, P, reduction, penalty)
    return sample_graph(reduction, penalty), lambda X, Y, P: sample_numpy(X, Y, P, reduction, penalty)


def finite_differences(f, P, h=1e-6):
    out = {}
    for k, v in P.items():
        v = np.asarray(v, dtype=float)
        g = np.zeros_like(v)
        for idx in np.ndindex(v.shape):
            up, down = {**P, k: v.copy()}, {**P, k: v.copy()}
            up[k][idx] += h
            down[k][idx] -= h
            g[idx] = (f(up) - f(down)) / (2 * h)
        out[k] = g
    return out


# ---------------------------------------------------------------- which form, read once
def test_each_form_has_its_layout_and_the_graph_reads_its_form_from_it():
    for g, cls, kind, ndim in ((scalar_graph(), Scalars, "scalar", 2), (rows_graph(), BatchRows, "matrix", 2),
                               (sample_graph(), OneSample, "matrix", 3)):
        lay = g.layout
        assert type(lay) is cls and lay.kind == kind and lay.ndim == ndim
        # the oracle: the declared symbols themselves
        matrices = [g.symbol(n) for n in g.order if isinstance(g.symbol(n), sp.MatrixExpr)]
        batch = any(BATCH in g.symbol(n).shape for n in g.input_names + g.target_names if g.shape(n))
        assert g.is_matrix == bool(matrices)
        assert g.per_sample == lay.one_sample == (bool(matrices) and not batch)
        assert sb.derive(g).kind == kind and sb.derive(g).layout is lay


def test_the_layout_follows_the_graph_as_it_grows():
    g = sb.Graph()
    g.params("W", shape=(3, 2))
    assert type(g.layout) is OneSample          # no data yet: nothing says batch rows
    g.inputs("X", shape=(BATCH, 3))
    assert type(g.layout) is BatchRows
    h = sb.Graph()
    h.inputs("x")
    assert type(h.layout) is Scalars


@pytest.mark.parametrize("form,reduction,penalty", CASES)
def test_declared_shapes_widths_and_sample_shapes(form, reduction, penalty):
    g, _ = build(form, reduction, penalty)
    lay = g.layout
    for p in g.param_names:
        s = g.symbol(p)
        assert lay.param_shape(p) == (tuple(int(k) for k in s.shape) if isinstance(s, sp.MatrixExpr) else ())
    X, Y = data(form, np.random.default_rng(0))
    assert lay.width(g.input_names) == X.shape[-1] and lay.width(g.target_names) == Y.shape[-1]
    assert lay.ndim == X.ndim == Y.ndim
    assert lay.sample_shape(g.input_names) == (X.shape[1:] if X.ndim == 3 else None)
    assert lay.sample_shape(g.target_names) == (Y.shape[1:] if Y.ndim == 3 else None)
    assert lay.ones_rows() == {"scalar": None, "rows": BATCH, "sample": 4}[form]


# ---------------------------------------------------------------- what the documents ask
@pytest.mark.parametrize("form,reduction,penalty", CASES)
def test_what_the_documents_ask_agrees_with_the_graph_and_is_what_they_print(form, reduction, penalty):
    from symback.document.factors import PENALTY, edge_partial
    from symback.document.notation import notation
    g, _ = build(form, reduction, penalty)
    d, lay = sb.derive(g), g.layout
    matrices = any(isinstance(g.symbol(n), sp.MatrixExpr) for n in g.order)
    assert lay.worked_in_numbers == lay.indexed_cost == (not matrices)
    assert lay.sample_as_column == matrices and bool(lay.data_letters) == matrices
    # the loss node is the per-sample cost exactly where the batch loss reduces it rather than is it
    assert lay.loss_is_cost == (d.batch_loss() != g.expr(g.loss_name))
    assert lay.loss_is_cost or g.shape(lay.cost_node()) == (BATCH, 1)
    # an edge from the loss node to a parameter is the penalty's exactly where the loss node is L
    edges = [p for p in g.param_names if (g.loss_name, p) in d.local]
    assert bool(edges) == (penalty and not lay.loss_is_cost)
    assert all(edge_partial(d, g.loss_name, p).args[0] == PENALTY for p in edges)
    # what the lecture notation prints: J⁽ⁱ⁾ for one sample's cost, y for a target matrix
    names = notation(d, "lecture").settings["names"]
    assert (names.get(g.loss_name) == "J^{(i)}") == lay.indexed_cost
    assert all(names.get(n) == "y" for n in g.target_names if n == "Y") and ("Y" in names) == matrices
    # a training plot draws every parameter of a scalar graph, a matrix graph's weights W…
    assert lay.plotted_norms(g.param_names) == (g.param_names if not matrices else ["W"])


# ---------------------------------------------------------------- numbers: the batch loss and its gradient
@pytest.mark.parametrize("form,reduction,penalty", CASES)
def test_batch_loss_and_gradients_equal_numpy(form, reduction, penalty):
    g, oracle = build(form, reduction, penalty)
    d = sb.derive(g)
    m = sb.compile(d, backend="numpy", dtype="float64")
    rng = np.random.default_rng(7)
    X, Y = data(form, rng)
    P = {k: np.asarray(v, dtype=float) + 0.3 * rng.normal(size=np.shape(v)) for k, v in m.init(seed=1).items()}
    L = m.loss(X, Y, {k: v.copy() for k, v in P.items()})
    assert abs(L - oracle(X, Y, P)) <= 1e-10 * max(1.0, abs(L))
    grads = m.grad(X, Y, {k: v.copy() for k, v in P.items()})
    fd = finite_differences(lambda Q: oracle(X, Y, Q), P)
    for k in P:
        assert np.shape(grads[k]) == np.shape(P[k])
        assert np.allclose(grads[k], fd[k], rtol=1e-6, atol=1e-7), k


@pytest.mark.parametrize("form,reduction,penalty", [c for c in CASES if c[2]])
def test_a_step_moves_by_lr_times_the_gradient_penalty_included(form, reduction, penalty):
    g, oracle = build(form, reduction, penalty)
    m = sb.compile(sb.derive(g), backend="numpy", dtype="float64")
    rng = np.random.default_rng(11)
    X, Y = data(form, rng)
    P = {k: np.asarray(v, dtype=float) + 0.3 * rng.normal(size=np.shape(v)) for k, v in m.init(seed=2).items()}
    fd = finite_differences(lambda Q: oracle(X, Y, Q), P)
    stepped = {k: v.copy() for k, v in P.items()}
    before = m.step(X, Y, stepped, lr=0.05)
    assert abs(before - oracle(X, Y, P)) <= 1e-10 * max(1.0, abs(before))
    for k in P:
        assert np.allclose(stepped[k], P[k] - 0.05 * fd[k], rtol=1e-6, atol=1e-7), k


def test_the_batch_loss_expression_of_each_form():
    """The Derivation's batch loss is the layout's: a batch-rows graph's loss node itself; the
    reduced per-sample cost (+ penalty) otherwise.  Rows: the loss node evaluated exactly, against NumPy."""
    d = sb.derive(rows_graph(penalty=True))
    rng = np.random.default_rng(3)
    X, Y = data("rows", rng, n=3)
    P = {"W": rng.normal(size=(3, 2)), "b": rng.normal(size=(1, 2))}
    g = d.graph
    assert d.batch_loss() == g.expr(d.loss_name)
    forward = d.evaluate({"X": X, "Y": Y, **P})["forward"]
    assert abs(float(forward[d.loss_name]) - rows_numpy(X, Y, P, "mean", True)) < 1e-10
    for g2 in (scalar_graph(), sample_graph(penalty=True)):
        d2 = sb.derive(g2)
        C = g2.expr(d2.loss_name)
        want = d2.reduce(C) + g2.penalty if g2.penalty != 0 else d2.reduce(C)
        assert d2.batch_loss() == want


# ---------------------------------------------------------------- what flows back, and the expression helpers
def test_contribution_is_the_vjp_for_a_matrix_child_and_a_product_for_a_scalar_one():
    D, V, W = sp.MatrixSymbol("D", 2, 3), sp.MatrixSymbol("V", 2, 3), sp.MatrixSymbol("W", 4, 3)
    child = sp.MatrixSymbol("A", 2, 4) * W
    lay = rows_graph().layout
    assert lay.contribution(D * W.T, V, child, D) == V * W.T          # δ_child put in
    assert lay.contribution(D * W.T, D, child) == D * W.T
    a, f = sp.Symbol("a"), sp.Symbol("f")
    assert lay.contribution(f, a, sp.Symbol("c")) == a * f               # the loss: a scalar child
    assert scalar_graph().layout.contribution(f, a, sp.Symbol("c")) == a * f


def test_zero_like_add_and_plus_against_numpy():
    rng = np.random.default_rng(5)
    A, B, C = (sp.MatrixSymbol(n, 2, 3) for n in "ABC")
    nums = {s: rng.normal(size=(2, 3)) for s in (A, B, C)}

    def value(e):
        return np.array(e.xreplace({s: sp.ImmutableMatrix(v) for s, v in nums.items()}).doit(), dtype=float)

    assert zero_like(A) == sp.ZeroMatrix(2, 3) and zero_like(sp.Symbol("w")) == 0
    assert np.allclose(value(add(A, B, C)), nums[A] + nums[B] + nums[C])
    assert add(A) is A and add(sp.Symbol("u"), sp.Symbol("v")) == sp.Symbol("u") + sp.Symbol("v")
    assert np.allclose(value(plus(A, 2 * B)), nums[A] + 2 * nums[B])
    assert plus(A, sp.ZeroMatrix(2, 3)) is A and plus(sp.Symbol("u"), 0) == sp.Symbol("u")


def test_stacked_outputs_print_code_numpy_reads_as_columns():
    rng = np.random.default_rng(9)
    X, a, M = rng.normal(size=(4, 2)), rng.normal(size=4), rng.normal(size=(4, 3))
    text = scalar_graph().layout.stack(["a", "b"], "np")
    got = eval(text, {"np": np, "X": X, "a": a, "b": 2.5})      # noqa: S307 -- the printed code itself
    assert np.array_equal(got, np.column_stack([a, np.full(4, 2.5)]))
    rows = rows_graph().layout
    assert rows.stack(["M"], "np") == "M"
    got = eval(rows.stack(["M", "r"], "np"), {"np": np, "X": X, "M": M, "r": np.ones((1, 2))})  # noqa: S307
    assert np.array_equal(got, np.column_stack([M, np.ones((4, 2))]))
