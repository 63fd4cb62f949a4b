"""Every worked example of the lecture notes (seeds/), through the public API.

Oracles: the closed forms printed in the seeds, SymPy's diff of the unrolled
loss (written out here by hand), the seeds' numbers, and central finite
differences of hand-written NumPy.
"""
import numpy as np
import pytest
import sympy as sp

import symback as sb
from conftest import num, seed004_1d_graph, to_elementary
from symback.engine import BATCH_SIZE, SAMPLE


def path_names(path):
    return [(str(f.of), str(f.wrt)) for f in path]


def prod(exprs):
    return sp.Mul(*exprs)


# ---------------------------------------------------------------- seed 002
def test_seed002_gradients_match_old_fashioned_diff(seed002):
    g, s = seed002
    x1, x2, y, w1, w2, b = (s[n] for n in "x1 x2 y w1 w2 b".split())
    loss = (b + w1 * x1 + w2 * x2 - y) ** 2                 # the seed's unrolled loss
    d = sb.derive(g)
    assert d.params == ["w1", "w2", "b"]
    for p in (w1, w2, b):
        assert sp.expand(d.gradient(p.name, form="expanded") - sp.diff(loss, p)) == 0


def test_seed002_closed_forms(seed002):
    g, s = seed002
    d = sb.derive(g)
    yhat, y, x1, x2 = s["yhat"], s["y"], s["x1"], s["x2"]
    # ∂Loss/∂b = 2(ŷ − y)·1, ∂Loss/∂w1 = 2(ŷ − y)·1·x1, ∂Loss/∂w2 = 2(ŷ − y)·1·x2
    assert sp.expand(d.gradient("b") - 2 * (yhat - y)) == 0
    assert sp.expand(d.gradient("w1") - 2 * (yhat - y) * x1) == 0
    assert sp.expand(d.gradient("w2") - 2 * (yhat - y) * x2) == 0
    # the chain form keeps the named intermediate ŷ: no parameter of the forward pass appears
    assert d.gradient("w1").free_symbols == {yhat, y, x1}


def test_seed002_single_path_yhat_a1_w1(seed002):
    g, s = seed002
    d = sb.derive(g)
    paths = d.chain("w1")
    assert len(paths) == 1
    path = paths[0]
    assert path_names(path) == [(d.loss_name, "yhat"), ("yhat", "a_1"), ("a_1", "w1")]
    exprs = [f.expr for f in path]
    assert sp.expand(exprs[0] - 2 * (s["yhat"] - s["y"])) == 0     # ∂Loss/∂ŷ = 2(ŷ − y)
    assert exprs[1] == 1                                             # ∂ŷ/∂a1 = 1
    assert exprs[2] == s["x1"]                                       # ∂a1/∂w1 = x1
    # ∂ŷ/∂b = 1: b's path is one step shorter
    (bpath,) = d.chain("b")
    assert path_names(bpath) == [(d.loss_name, "yhat"), ("yhat", "b")]
    assert bpath[1].expr == 1


def test_seed002_plain_expression_is_decomposed():
    x1, x2, y, w1, w2, b = sp.symbols("x1 x2 y w1 w2 b")
    loss = (b + w1 * x1 + w2 * x2 - y) ** 2
    d = sb.derive(loss, wrt=[b, w1, w2])
    assert d.params == ["b", "w1", "w2"]
    for p in (b, w1, w2):
        assert sp.expand(d.gradient(p, form="expanded") - sp.diff(loss, p)) == 0
        # symback made intermediate steps: every path has more than one factor
        assert all(len(path) >= 2 for path in d.chain(p))


# ---------------------------------------------------------------- seed 000
def relu_step(c):
    """The seed's ∂ReLU/∂c: 1 if c ≥ 0, else 0."""
    return 1.0 if c >= 0 else 0.0


@pytest.mark.parametrize("c_value", [1.3, -0.4, 0.0])
def test_seed000_three_formulas_per_sample(seed000, c_value):
    g, s = seed000
    d = sb.derive(g)
    x1, x2, y, p, c = 0.7, -1.1, 0.25, max(c_value, 0.0), c_value
    at = {"x1": x1, "x2": x2, "y": y, "p": p, "c": c}
    # ⇒ ∂/∂w1 = (p − y)·(1 if c ≥ 0, 0)·x1, ∂/∂w2 = ...·x2, ∂/∂b = (p − y)·(1 if c ≥ 0, 0)
    expect = {"w1": (p - y) * relu_step(c) * x1, "w2": (p - y) * relu_step(c) * x2,
              "b": (p - y) * relu_step(c)}
    for name, value in expect.items():
        assert num(d.gradient(name), at) == pytest.approx(value, abs=1e-12)


def test_seed000_chain_is_p_relu_c_w1(seed000):
    g, s = seed000
    d = sb.derive(g)
    (path,) = d.chain("w1")
    assert path_names(path) == [(d.loss_name, "p"), ("p", "c"), ("c", "w1")]
    assert sp.expand(path[0].expr - (s["p"] - s["y"])) == 0          # ∂C/∂p for C = (p − y)²/2
    relu_prime = path[1].expr
    assert [num(relu_prime, {"c": v}) for v in (-2.0, -1e-9, 0.0, 1e-9, 3.0)] == [0, 0, 1, 1, 1]
    assert path[2].expr == s["x1"]                                   # ∂c/∂w1 = x1


def test_seed000_batch_reduction_is_one_over_2m_sum(seed000):
    g, s = seed000
    d = sb.derive(g)
    assert d.reduction == "mean"
    bg = d.batch_gradient("w1")
    (total,) = bg.atoms(sp.Sum)
    assert total.limits == ((SAMPLE, 1, BATCH_SIZE),)
    assert sp.simplify(bg / total) == 1 / BATCH_SIZE                 # 1/m Σ_i
    assert sp.expand(total.function - d.gradient("w1")) == 0


def test_seed000_batch_gradient_matches_finite_differences(seed000):
    g, _ = seed000
    d = sb.derive(g)
    rs = np.random.default_rng(0)
    X, Y = rs.normal(size=(6, 2)), rs.normal(size=6)
    theta = {"w1": 0.8, "w2": -0.5, "b": 0.1}

    def L(t):   # L = 1/(2m) Σ (ReLU(x1 w1 + x2 w2 + b) − y)², by hand
        c = X[:, 0] * t["w1"] + X[:, 1] * t["w2"] + t["b"]
        return np.mean((np.maximum(c, 0) - Y) ** 2) / 2

    for name in theta:
        per_sample = []
        for (x1, x2), y in zip(X, Y):
            c = x1 * theta["w1"] + x2 * theta["w2"] + theta["b"]
            per_sample.append(num(d.gradient(name), {"x1": x1, "x2": x2, "y": y, "c": c,
                                                     "p": max(c, 0.0)}))
        h = 1e-6
        up, down = dict(theta), dict(theta)
        up[name] += h
        down[name] -= h
        assert np.mean(per_sample) == pytest.approx((L(up) - L(down)) / (2 * h), rel=1e-6, abs=1e-9)


# ---------------------------------------------------------------- seed 001
def test_seed001_update_rule_factor_order(seed001):
    g, s = seed001
    d = sb.derive(g)
    (path,) = d.chain("w1")
    # the seed writes ∂a1/∂w1 · ∂a2/∂a1 · ∂a3/∂a2 · ∂C/∂a3: the path from the loss, reversed
    assert path_names(path)[::-1] == [("a1", "w1"), ("a2", "a1"), ("a3", "a2"), (d.loss_name, "a3")]
    assert sp.expand(path[0].expr - 2 * (s["a3"] - s["y"])) == 0      # ∂C/∂a3 = 2(a3 − y)·1
    assert [path_names(p)[::-1][0] for p in (d.chain("w2")[0], d.chain("w3")[0])] == [
        ("a2", "w2"), ("a3", "w3")]
    assert len(d.chain("w3")[0]) == 2                                 # ∂C/∂a3 · ∂a3/∂w3


def test_seed001_gradient_matches_unrolled_diff(seed001, rng):
    g, s = seed001
    i1, y, w1, w2, w3 = (s[n] for n in "i1 y w1 w2 w3".split())
    relu = lambda u: sp.Piecewise((u, u >= 0), (0, True))          # noqa: E731
    sig = lambda u: 1 / (1 + sp.exp(-u))                           # noqa: E731
    C = (sig(relu(relu(i1 * w1) * w2) * w3) - y) ** 2              # σ(ReLU(ReLU(i1 w1)...)) unrolled
    d = sb.derive(g)
    for _ in range(5):
        at = {"i1": rng.uniform(0.2, 2), "y": rng.uniform(0, 1), "w1": rng.uniform(0.1, 2),
              "w2": rng.uniform(0.1, 2), "w3": rng.uniform(-2, 2)}
        for p in (w1, w2, w3):
            assert num(d.gradient(p.name, form="expanded"), at) == pytest.approx(
                num(sp.diff(C, p), at), rel=1e-10)
        # one gradient-descent step w ← w − α ∂C/∂w lowers C for a small α
        alpha = 1e-3
        new = dict(at, **{p.name: at[p.name] - alpha * num(d.gradient(p.name, form="expanded"), at)
                          for p in (w1, w2, w3)})
        assert num(C, new) <= num(C, at) + 1e-15


# ---------------------------------------------------------------- seed 003
def test_seed003_case2_two_paths_sum_to_gradient(seed003_case2, rng):
    g, s = seed003_case2
    d = sb.derive(g)
    paths = d.chain("s")
    assert sorted(path_names(p)[1][1] for p in paths) == ["x", "y"]  # z ← x ← s and z ← y ← s
    # dz/ds = ∂z/∂x ∂x/∂s + ∂z/∂y ∂y/∂s, against SymPy's diff of the unrolled z
    sv, tv = sp.symbols("s t")
    z = sp.sin(sv * tv) * sp.exp(sv) + sp.sin(sv * tv)
    for _ in range(5):
        at = {"s": rng.uniform(-2, 2), "t": rng.uniform(-2, 2)}
        at.update(x=np.sin(at["s"] * at["t"]), y=np.exp(at["s"]), z=0.0)
        total = sum(num(prod(f.expr for f in p), at) for p in paths)
        assert total == pytest.approx(num(sp.diff(z, sv), at), rel=1e-10)
        assert num(d.gradient("s"), at) == pytest.approx(total, rel=1e-12)


def test_seed003_sum_reduction_has_no_one_over_m(seed003_case2):
    g, _ = seed003_case2
    d = sb.derive(g)
    bg = d.batch_gradient("s")
    (total,) = bg.atoms(sp.Sum)
    assert bg == total and total.limits == ((SAMPLE, 1, BATCH_SIZE),)


# ---------------------------------------------------------------- seed 004
def test_seed004_punchline_path_and_factors(seed004):
    g, s = seed004
    d = sb.derive(g)
    (path,) = d.chain("W1")
    assert [str(f.wrt) for f in path] == ["yhat", "a3", "z3", "a2", "z2", "W1"]
    assert [str(f.of) for f in path] == [d.loss_name, "yhat", "a3", "z3", "a2", "z2"]
    sig3, sig2 = sb.sigmoid(s["z3"]), sb.sigmoid(s["z2"])
    # (ŷ − y) · W3 · σ'(z3) · W2 · σ'(z2) · X, with σ' = σ(1 − σ) kept compact
    expected = [s["yhat"] - s["y"], s["W3"], sig3 * (1 - sig3), s["W2"], sig2 * (1 - sig2), s["x"]]
    for f, e in zip(path, expected):
        assert sp.expand(f.expr - e) == 0, (f, e)
    assert not any(f.expr.has(sp.exp) for f in path)
    # the other two punchlines: (ŷ − y)·a3 and (ŷ − y)·W3·σ'(z3)·a2
    assert sp.expand(d.gradient("W3") - (s["yhat"] - s["y"]) * s["a3"]) == 0
    assert sp.expand(d.gradient("W2") - (s["yhat"] - s["y"]) * s["W3"] * sig3 * (1 - sig3) * s["a2"]) == 0


def test_seed004_punchline_equals_unrolled_diff(seed004, rng):
    g, s = seed004
    x, y, W1, W2, W3 = (s[n] for n in "x y W1 W2 W3".split())
    sig = lambda u: 1 / (1 + sp.exp(-u))                           # noqa: E731
    J = (sig(sig(x * W1) * W2) * W3 - y) ** 2 / 2
    d = sb.derive(g)
    for _ in range(5):
        at = {n: rng.uniform(-2, 2) for n in "x y W1 W2 W3".split()}
        for p in (W1, W2, W3):
            assert num(to_elementary(d.gradient(p.name, form="expanded")), at) == pytest.approx(
                num(sp.diff(J, p), at), rel=1e-10)


@pytest.mark.parametrize("w", [0.1, sp.Rational(1, 10)])
def test_seed004_one_dimensional_numbers(w):
    g, s = seed004_1d_graph()
    d = sb.derive(g)
    out = d.evaluate({"x": 3, "w": w, "y": 1})
    assert float(out["forward"]["yhat"]) == pytest.approx(0.3)
    assert float(out["forward"][d.loss_name]) == pytest.approx(0.49)        # L = (1 − 0.3)²
    assert float(out["gradient"]["w"]) == pytest.approx(-4.2)               # 2(−0.7)·3
    # the same number by substituting into the symbolic gradient 2(ŷ − y)x
    grad = d.gradient("w").subs({s["yhat"]: 0.3, s["y"]: 1, s["x"]: 3})
    assert float(grad) == pytest.approx(-4.2)
    assert float(d.gradient("w", form="expanded").subs({s["w"]: w, s["x"]: 3, s["y"]: 1})) == \
        pytest.approx(-4.2)
    # one step with η = 1: w_new = 0.1 + 4.2 = 4.3
    assert float(w - 1 * out["gradient"]["w"]) == pytest.approx(4.3)


def test_seed004_exact_numbers_stay_exact():
    g, _ = seed004_1d_graph()
    d = sb.derive(g)
    out = d.evaluate({"x": 3, "w": sp.Rational(1, 10), "y": 1})
    assert out["forward"][d.loss_name] == sp.Rational(49, 100)
    assert out["gradient"]["w"] == sp.Rational(-21, 5)
