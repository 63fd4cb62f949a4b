"""Every formula a document shows, checked against an oracle outside symback.

The document context (``symback.document.context``) carries, beside each
printed formula, the SymPy expression it was printed from.  Oracles here:
losses and forward passes written in NumPy in this file, ``sympy.diff`` of
the unrolled loss, central finite differences, and a small reader that
turns the printer's LaTeX back into SymPy (so a printed line is checked,
not only the expression behind it).  Matrix formulas, random ones and the
audit's, are read back by a strict reader of the printed LaTeX and text
(``tests/_formula_reader.py``) and compared with their expressions' values.
"""
from __future__ import annotations

import random
import re

import numpy as np
import pytest
import sympy as sp
from sympy.parsing.sympy_parser import (function_exponentiation, implicit_application,
                                        implicit_multiplication, parse_expr, standard_transformations)

import symback as sb
from conftest import (ORACLE_DEFS, chain_graph, num, seed000_graph, seed001_graph, seed002_graph, seed003_case2_graph,
                      seed004_graph, skip_graph, to_elementary)
from symback.document import context
from symback.document.analysis import numeric
from symback.document.factors import as_derivation, compose

SCALAR = {"seed000": seed000_graph, "seed001": seed001_graph, "seed002": seed002_graph,
          "seed003": seed003_case2_graph, "seed004": seed004_graph}
H = 1e-6


# ------------------------------------------------------------- hand-written networks
def sig(z):
    return 1 / (1 + np.exp(-z))


def skip_forward(v):
    """The skip graph's nodes, written here in NumPy."""
    z1 = v["X"] @ v["W1"] + v["b1"]
    a1 = np.tanh(z1)
    h = a1 + np.maximum(a1 @ v["W1"].T @ v["W1"], 0)
    z = h @ v["W2"] + v["b2"]
    e = np.exp(z - z.max(axis=1, keepdims=True))
    yhat = e / e.sum(axis=1, keepdims=True)
    c = -(v["Y"] * np.log(yhat)).sum(axis=1, keepdims=True)
    return {"Z_A1": z1, "A1": a1, "H": h, "Z_Yhat": z, "Yhat": yhat, "C": c,
            "L": c.mean() + (v["W1"] ** 2).sum() / 200}


def bce_net():
    """The layer network of the users' report: a sigmoid output and binary cross-entropy."""
    return sb.mlp([2, 3, 1], activation="sigmoid", output="sigmoid", loss="binary_cross_entropy")


def bce_forward(v):
    z1 = v["X"] @ v["W1"] + v["b1"]
    a1 = sig(z1)
    z2 = a1 @ v["W2"] + v["b2"]
    yhat = sig(z2)
    y = v["Y"]
    c = -(y * np.log(yhat) + (1 - y) * np.log(1 - yhat)).sum(axis=1, keepdims=True)
    return {"Z1": z1, "A1": a1, "Z2": z2, "Yhat": yhat, "C": c, "L": c.mean()}


MATRIX = {"skip": (lambda: sb.derive(skip_graph()), skip_forward),
          "bce": (lambda: as_derivation(sb.derive(bce_net())), bce_forward)}


def random_point(d, seed, rows=4):
    rng, g = np.random.default_rng(seed), d.graph
    v = {}
    for n in g.input_names + g.target_names + g.param_names:
        shape = tuple(rows if k == sb.BATCH else int(k) for k in g.symbol(n).shape)
        v[n] = rng.normal(scale=0.7, size=shape)
    y = g.target_names[0]
    v[y] = (np.eye(v[y].shape[1])[rng.integers(0, v[y].shape[1], size=rows)] if v[y].shape[1] > 1
            else rng.uniform(0.05, 0.95, size=v[y].shape))
    return v


def finite_difference(forward, v, p):
    fd = np.zeros_like(v[p])
    for idx in np.ndindex(fd.shape):
        up, down = {**v, p: v[p].copy()}, {**v, p: v[p].copy()}
        up[p][idx] += H
        down[p][idx] -= H
        fd[idx] = (forward(up)["L"] - forward(down)["L"]) / (2 * H)
    return fd


def matrix_env(d, v, forward):
    """Every graph symbol bound to its value from the hand-written forward pass."""
    values = {**v, **forward(v)}
    return {d.graph.symbol(n): (sp.ImmutableMatrix(np.atleast_2d(values[n])) if sb.matrix.is_matrix(
        d.graph.symbol(n)) else sp.Float(values[n])) for n in d.graph.order}


# ------------------------------------------------------------- a reader for the printer's LaTeX
def read_tex(tex: str) -> sp.Expr:
    """The printer's LaTeX for scalar formulas back into SymPy (its own subset only).

    f'(z) is read as the derivative of the oracle's own definition of f (conftest).
    """
    s = tex
    for pat, rep in [(r"\\sigma'", "dsigmoid"), (r"\\operatorname\{ReLU\}'", "drelu"), (r"\\tanh'", "dtanh"),
                     (r"\\left\(", "("), (r"\\right\)", ")"), (r"\\log\{", "log{"),
                     (r"\\hat\{(\w)\}", r"\1hat"), (r"\\operatorname\{ReLU\}", "relu"),
                     (r"\\sigma", "sigmoid"), (r"\\tanh", "tanh"), (r"\\sin", "sin"), (r"\\cos", "cos"), (r"\\exp", "exp"),
                     (r"(?<![A-Za-z_])e\^", "E^"),
                     (r"\\cdot", "*"), (r"(\w)_\{(\w+)\}", r"\1_\2"), (r"\^\{([^{}]*)\}", r"**(\1)")]:
        s = re.sub(pat, rep, s)
    while r"\frac" in s:
        s = re.sub(r"\\frac\{([^{}]*)\}\{([^{}]*)\}", r"((\1)/(\2))", s)
    s = s.replace("{", "(").replace("}", ")").replace("\\", "")
    z = sp.Symbol("z")
    local = {}
    for name in ("sigmoid", "relu", "tanh"):
        f = ORACLE_DEFS[name]
        local[name] = sp.Lambda(z, f(z))
        local["d" + name] = sp.Lambda(z, sp.diff(f(z), z) if name != "relu" else
                                      sp.Piecewise((1, z >= 0), (0, True)))   # the notes' ReLU'(0) = 1
    local.update({"log": sp.log, "sin": sp.sin, "cos": sp.cos, "exp": sp.exp, "E": sp.E})
    return parse_expr(s, local_dict=local,
                      transformations=standard_transformations + (
                          implicit_multiplication, implicit_application, function_exponentiation))


def names_to_symbols(expr, g):
    """The reader's symbols (yhat, x_1) as the graph's symbols (yhat, x1), matched through their printed names."""
    table = {}
    for n in g.order:
        if not sb.matrix.is_matrix(g.symbol(n)):
            table[read_tex(sb.printing.latex(g.symbol(n)))] = g.symbol(n)
    return expr.xreplace(table)


# ------------------------------------------------------------- the loss line
@pytest.mark.parametrize("name", sorted(MATRIX))
def test_loss_line_is_the_loss_trained_on(name):
    """ℓ(ŷ, y) as printed, summed over a row and averaged, equals the hand-written loss and the engine's L."""
    build, forward = MATRIX[name]
    d = build()
    loss = context(d, verify=False, cost=False, vanishing=False)["loss"]
    ell = sp.lambdify(sp.symbols("yhat y"), loss["sympy"]["rhs"], "numpy")
    for seed in range(3):
        v = random_point(d, seed)
        f = forward(v)
        printed = ell(f["Yhat"], v["Y"]).sum(axis=1).mean()
        if "W1" in v and name == "skip":
            printed += (v["W1"] ** 2).sum() / 200          # the penalty line, L = ... + (1/200)‖W1‖²
        engine = float(sb.document.analysis.evaluate(d, v)["forward"][d.loss_name])
        assert printed == pytest.approx(f["L"], rel=1e-10)
        assert engine == pytest.approx(f["L"], rel=1e-10)


def test_bce_document_prints_the_bracketed_loss_and_reads_back():
    """The users' report: −y log ŷ + (1 − y) log(1 − ŷ) lost its bracket. The printed line, read back, is BCE."""
    d = sb.derive(bce_net())
    tex = d.latex(verify=False, cost=False)
    [line] = [ln for ln in tex.splitlines() if ln.startswith(r"\ell{\left(\hat{y},y \right)} &= ")]
    rhs = read_tex(line.split("&= ")[1].rstrip("\\ "))
    yh, y = sp.symbols("yhat y")
    rng = random.Random(3)
    for _ in range(10):
        a, t = rng.uniform(0.01, 0.99), rng.uniform(0, 1)
        bce = -(t * np.log(a) + (1 - t) * np.log(1 - a))              # the loss, written here
        assert float(rhs.subs({yh: a, y: t})) == pytest.approx(bce, rel=1e-12)
    # the forward line for C and the batch line are the RowCost and its mean
    assert r"C &= \ell\left(\hat{Y}, Y\right)" in tex
    assert r"L &= \frac{1}{m} \sum_{i=1}^{m} C_{i}" in tex


def test_penalty_and_sum_print_from_the_loss_node():
    ctx = context(sb.derive(skip_graph()), verify=False, cost=False, vanishing=False)
    assert ctx["loss"]["batch"] == r"L = \frac{1}{200} \lVert W_{1} \rVert_F^{2} + \frac{1}{m} \sum_{i=1}^{m} C_{i}"


@pytest.mark.parametrize("name", sorted(SCALAR))
def test_scalar_loss_and_forward_lines_read_back(name):
    """Each forward line and the cost line, read back from the printed LaTeX, equal the graph's expressions."""
    g, s = SCALAR[name]()
    d = sb.derive(g)
    ctx = context(d, verify=False, cost=False, vanishing=False, figure=False)
    rng = random.Random(1)
    at = {k: rng.uniform(0.2, 1.5) for k in s}
    for row in ctx["forward"]:
        back = names_to_symbols(read_tex(row["rhs"]), g)
        assert num(to_elementary(back), at) == pytest.approx(num(to_elementary(row["sympy"]["rhs"]), at), rel=1e-12)
        assert row["sympy"]["rhs"] == g.expr(row["sympy"]["lhs"].name)
    assert ctx["loss"]["sympy"]["rhs"] == g.expr(d.loss_name)


# ------------------------------------------------------------- chains
@pytest.mark.parametrize("name", sorted(SCALAR))
def test_scalar_chains_multiply_to_sympy_diff(name):
    """Σ over paths of the product of the printed factors = sympy.diff of the unrolled loss; also read back."""
    g, s = SCALAR[name]()
    d = sb.derive(g)
    ctx = context(d, verify=False, cost=False, vanishing=False, figure=False)
    full = g.unrolled()
    loss = to_elementary(full[d.loss_name])
    rng = random.Random(7)
    for p, row in zip(d.params, ctx["gradients"]):
        total = sp.Add(*[sp.Mul(*path["sympy"]["factors"].factors) for path in row["paths"]])
        back = sp.Add(*[names_to_symbols(read_tex(path["factors"]), g) for path in row["paths"]])
        for _ in range(3):
            at = {n: rng.uniform(0.2, 1.5) for n in g.input_names + g.target_names + g.param_names}
            at.update({n: num(to_elementary(full[n]), at) for n in g.order if n in full})
            want = num(sp.diff(loss, g.symbol(p)), at)
            assert num(to_elementary(total), at) == pytest.approx(want, rel=1e-10, abs=1e-12)
            assert num(to_elementary(back), at) == pytest.approx(want, rel=1e-10, abs=1e-12)
            assert num(to_elementary(row["sympy"]["closed"]), at) == pytest.approx(want, rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("name", sorted(MATRIX))
def test_matrix_chains_compose_to_finite_differences(name):
    """Each path's VJPs applied in turn, summed over paths, = central differences of the NumPy loss."""
    build, forward = MATRIX[name]
    d = build()
    ctx = context(d, verify=False, cost=False, vanishing=False, figure=False)
    v = random_point(d, 5, rows=3)
    env = matrix_env(d, v, forward)
    for p, row in zip(d.params, ctx["gradients"]):
        value = sum(numeric(compose(path["sympy"]["labels"]), env, 3) for path in row["paths"])
        assert np.allclose(value, finite_difference(forward, v, p), rtol=1e-5, atol=1e-8), p
        recursive = numeric(d.gradient(p, form="chain"), env, 3)
        assert np.allclose(recursive, value, rtol=1e-9, atol=1e-12), p


# ------------------------------------------------------------- the figure's edge labels
@pytest.mark.parametrize("name", ["seed002", "seed003", "seed004", "chain3"])
def test_scalar_edge_labels_multiply_to_the_gradient(name):
    g = chain_graph(3, sb.sigmoid) if name == "chain3" else SCALAR[name]()[0]
    d = sb.derive(g)
    ctx = context(d, verify=False, cost=False, vanishing=False)
    edges, labels = ctx["sympy"]["edges"], ctx["sympy"]["labels"]
    full = g.unrolled()
    loss = to_elementary(full[d.loss_name])
    rng = random.Random(11)
    at = {n: rng.uniform(0.2, 1.5) for n in g.input_names + g.target_names + g.param_names}
    at.update({n: num(to_elementary(full[n]), at) for n in g.order if n in full})
    for p in d.params:
        total = sp.Add(*[sp.Mul(*[edges[(f.of, f.wrt)] for f in path]) for path in d.chain(p)])
        assert num(to_elementary(total), at) == pytest.approx(num(sp.diff(loss, g.symbol(p)), at), rel=1e-10)
    for key, e in edges.items():       # what is drawn is that expression (or ∂child/∂parent standing for it)
        drawn = labels[key]
        assert drawn == sb.printing.latex(e, applications=list(to_apps(d))) or drawn.startswith(r"\frac{\partial")
        if not drawn.startswith(r"\frac{\partial"):
            assert f"{{${drawn}$}}" in ctx["figure"]


def to_apps(d):
    return {f for n in d.graph.order if n in d.graph._expr for f in d.graph.expr(n).atoms(sb.functions.Activation)}


@pytest.mark.parametrize("name", sorted(MATRIX))
def test_matrix_edge_labels_compose_to_the_gradient(name):
    """The figure's labels (δ ↦ VJP(δ) into a matrix node) applied along each path give ∂L/∂p."""
    build, forward = MATRIX[name]
    d = build()
    ctx = context(d, verify=False, cost=False, vanishing=False)
    edges = ctx["sympy"]["edges"]
    v = random_point(d, 8, rows=3)
    env = matrix_env(d, v, forward)
    for p in d.params:
        value = sum(numeric(compose([edges[(f.of, f.wrt)] for f in path]), env, 3) for path in d.chain(p))
        assert np.allclose(value, finite_difference(forward, v, p), rtol=1e-5, atol=1e-8), p
    # no edge carries the output error twice: the edge into Ŷ is σ' (as a map), the edge into C is ℓ'
    if name == "bce":
        assert "sigma'" in sb.printing.latex(edges[("Yhat", "Z2")]).replace("\\", "")
        assert "sigma" not in sb.printing.latex(edges[("C", "Yhat")])


# ------------------------------------------------------------- the rest of the document
def test_punchline_and_output_block_for_bce():
    """The fused output block reads ∂C/∂z = ŷ − y, and the punchline starts from it (σ' counted once)."""
    d = sb.derive(bce_net())
    ctx = context(d, verify=False, cost=False, vanishing=False)
    out = ctx["output"]["sympy"]["scalar"]
    zk, ak, yk = sp.symbols("z_k yhat_k y_k")
    assert sp.simplify(out.rhs - (ak - yk)) == 0
    [w2, w1] = ctx["punchline"]
    # issue 10: the default notation prints the valid matrix product (the shorthand is notation="lecture")
    assert w2["factors"] == r"A_{1}^{\top} \left(\hat{Y} - Y\right)"
    assert w1["factors"].count(r"\sigma'") == 1          # σ'(Z1) only: the output's σ' is in Ŷ − Y


def test_every_document_formula_is_plain_data_for_templates():
    from symback.document import plain
    for d in (sb.derive(seed002_graph()[0]), sb.derive(bce_net())):
        ctx = plain(context(d, verify=False, cost=False))

        def walk(x):
            if isinstance(x, dict):
                return all(isinstance(k, str) and walk(v) for k, v in x.items())
            if isinstance(x, list):
                return all(walk(v) for v in x)
            return x is None or isinstance(x, (str, int, float, bool))
        assert walk(ctx)


def test_delta_rows_evaluate_like_the_engine():
    """Each δ row's value (activation outputs inlined) equals the engine's adjoint, numerically."""
    d = sb.derive(skip_graph())
    ctx = context(d, verify=False, cost=False, vanishing=False, figure=False)
    v = random_point(d, 2, rows=3)
    env = matrix_env(d, v, skip_forward)
    from symback.engine import delta
    # δ_C = (1/m)·1 is folded into its users (it has no row of its own)
    env[delta(d.graph, "C")] = sp.ImmutableMatrix(np.atleast_2d(numeric(d.adjoint["C"], env, 3)))
    for row in ctx["deltas"][1:]:
        sym, value = row["sympy"]["lhs"], row["sympy"]["value"]
        env[sym] = sp.ImmutableMatrix(np.atleast_2d(numeric(d.adjoint[sym.name[len("delta_"):]], env, 3)))
        assert np.allclose(numeric(value, env, 3), np.array(env[sym].tolist(), dtype=float))


# ------------------------------------------------------------- matrix formulas, printed and read back
_N = 3
_MATS = [sp.MatrixSymbol(c, _N, _N) for c in "ABPQ"]
_SCALARS = sp.symbols("x y")
_COEFFS = [-1, 2, -2, sp.Rational(1, 2), sp.Rational(-1, 2), sp.Rational(-3, 4), sp.Float(0.5), sp.Float(-0.25)]


def random_matrix_expr(rng, depth):
    """Products (with negative, fractional, −x coefficients), ⊙, sums, transposes and 𝟏𝟏ᵀ, nested,
    SymPy's evaluated forms and unevaluated ones alike."""
    if depth == 0 or rng.random() < 0.2:
        r = rng.random()
        return (sp.OneMatrix(_N, _N) if r < 0.1 else sp.MatMul(sp.OneMatrix(_N, 1), sp.OneMatrix(1, _N)) if r < 0.15
                else rng.choice(_MATS))
    sub, ev = (lambda: random_matrix_expr(rng, depth - 1)), rng.random() < 0.5
    kind = rng.choice(["matmul", "matmul", "hadamard", "hadamard", "add", "transpose", "coeff", "neg"])
    if kind == "matmul":
        head = [rng.choice(_COEFFS)] if rng.random() < 0.6 else []
        head += [rng.choice(_SCALARS) * rng.choice([1, -1])] if rng.random() < 0.3 else []
        return sp.MatMul(*head, *[sub() for _ in range(rng.choice([1, 2, 2, 3]))], evaluate=ev)
    if kind == "hadamard":
        return sp.HadamardProduct(*[sub() for _ in range(rng.choice([2, 2, 3]))], evaluate=ev)
    if kind == "add":
        signs = [lambda t: t, lambda t: -t, lambda t: sp.MatMul(-1, t)]
        return sp.MatAdd(*[rng.choice(signs)(sub()) for _ in range(rng.choice([2, 2, 3]))], evaluate=ev)
    return sp.Transpose(sub()) if kind == "transpose" else rng.choice(_COEFFS) * sub() if kind == "coeff" else -sub()


def matrix_value(e, env):
    """The expression's value from its own tree (NumPy), never through a printer."""
    if e in env:
        return env[e]
    if isinstance(e, sp.OneMatrix):
        return np.ones(tuple(int(k) for k in e.shape))
    if isinstance(e, sp.MatMul):
        out = 1.0
        for v in (matrix_value(a, env) for a in e.args):
            out = out * v if np.ndim(out) == 0 or np.ndim(v) == 0 else out @ v
        return out
    if isinstance(e, sp.HadamardProduct):
        return np.prod([matrix_value(a, env) for a in e.args], axis=0)
    if isinstance(e, sp.HadamardPower):
        return matrix_value(e.base, env) ** int(e.exp)
    if isinstance(e, sp.MatPow):
        return np.linalg.matrix_power(matrix_value(e.base, env), int(e.exp))
    if isinstance(e, sp.MatAdd):
        return sum(matrix_value(a, env) for a in e.args)
    if isinstance(e, sp.Transpose):
        return matrix_value(e.arg, env).T
    return float(e.xreplace({k: v for k, v in env.items() if not k.is_Matrix}))


def _env(seed):
    rng = np.random.default_rng(seed)
    return {**{m: rng.normal(size=(_N, _N)) for m in _MATS}, **{s: float(rng.normal()) for s in _SCALARS}}


@pytest.mark.parametrize("syntax", ["latex", "text"])
def test_printed_matrix_formulas_read_back_as_the_expression(syntax):
    """Random matrix formulas printed (LaTeX, or the text of Mermaid labels and --format text) and read
    back by a strict reader of our own (tests/_formula_reader.py: a product beside ⊙ without brackets,
    or a sign inside a product, is refused as readable two ways) have the expression's value."""
    from _formula_reader import read
    from symback.printing.text import text
    printer = sb.printing.latex if syntax == "latex" else text
    env, rng, checked = _env(29), random.Random(29), 0
    names = {printer(k): v for k, v in env.items()}
    for _ in range(250):
        e = random_matrix_expr(rng, 3)
        if not isinstance(e, sp.MatrixExpr) or e.has(sp.ZeroMatrix):
            continue
        printed = printer(e)
        assert np.allclose(read(printed, names, _N, syntax), matrix_value(e, env), rtol=1e-9), (printed, sp.srepr(e))
        checked += 1
    assert checked > 200


_A, _B, _P = _MATS[:3]
_H, _ONES, _X, _Y = sp.HadamardProduct(_A, _P), sp.OneMatrix(_N, _N), *_SCALARS
BRACKETED = [      # (expression, LaTeX, text): the audit's cases, and the signs found by the random formulas
    (sp.MatMul(-1, _H, _ONES), r"- \left(A \odot P\right) \mathbf{1}\mathbf{1}^{\top}", "-(A ⊙ P) 𝟏𝟏ᵀ"),
    (sp.MatMul(_H, _ONES), r"\left(A \odot P\right) \mathbf{1}\mathbf{1}^{\top}", "(A ⊙ P) 𝟏𝟏ᵀ"),
    (sp.MatMul(-2, _H, _ONES), r"-2 \left(\left(A \odot P\right) \mathbf{1}\mathbf{1}^{\top}\right)", "-2 (A ⊙ P) 𝟏𝟏ᵀ"),
    (sp.MatMul(sp.Rational(-1, 2), _H, _ONES),
     r"- \frac{1}{2} \left(\left(A \odot P\right) \mathbf{1}\mathbf{1}^{\top}\right)", "-1/2 (A ⊙ P) 𝟏𝟏ᵀ"),
    (sp.MatMul(-1, _A + _B, _ONES), r"- \left(A + B\right) \mathbf{1}\mathbf{1}^{\top}", "-(A + B) 𝟏𝟏ᵀ"),
    (sp.MatMul(-1, sp.Transpose(_H), _ONES), r"- \left(A \odot P\right)^{\top} \mathbf{1}\mathbf{1}^{\top}",
     "-(A ⊙ P)ᵀ 𝟏𝟏ᵀ"),
    (sp.MatMul(sp.Float(0.5), -_X, _P, _A), r"0.5 \left(- x\right) P A", "0.5 (-x) P A"),     # was 0.5 − x P A
    (sp.MatAdd(_A.T, sp.MatMul(-1, sp.MatMul(-2 * _Y, _P, _B)), evaluate=False),
     r"A^{\top} - \left(- 2 y P B\right)", "Aᵀ - (-2 y P B)"),                                 # was Aᵀ − − 2y P B
    (sp.MatAdd(_B, sp.MatMul(-_X, _A)), r"B - x A", "B - x A"),                                 # was B + -x A
    (sp.HadamardProduct(_A, sp.MatMul(-1, _B, _P)), r"A \odot \left(- B P\right)", "A ⊙ (-B P)"),
]


@pytest.mark.parametrize("expr, tex, plain", BRACKETED, ids=[f"case{i}" for i in range(len(BRACKETED))])
def test_a_signed_product_keeps_its_factors_brackets(expr, tex, plain):
    """−(A ⊙ P)𝟏𝟏ᵀ was printed − A ⊙ P 𝟏𝟏ᵀ, which reads A ⊙ (P𝟏𝟏ᵀ): each case by its exact
    text, and read back to the expression's value."""
    from _formula_reader import read
    from symback.printing.text import text
    env = _env(3)
    for syntax, printed, want in (("latex", sb.printing.latex(expr), tex), ("text", text(expr), plain)):
        assert printed == want
        names = {(sb.printing.latex if syntax == "latex" else text)(k): v for k, v in env.items()}
        assert np.allclose(read(printed, names, _N, syntax), matrix_value(expr, env))


def test_a_long_sums_rows_bracket_a_negated_sum():
    """A row of a long matrix sum (document.lines): B − (A + P), not B − A + P."""
    from symback.document.lines import _matrix_lines
    expr = sp.MatAdd(_B, sp.MatMul(-1, sp.MatAdd(_A, _P), evaluate=False), evaluate=False)
    assert _matrix_lines(expr, (), 200) == r"B - \left(A + P\right)"


def test_a_transpose_printed_without_its_sign_binds_as_its_argument():
    """The notes' layout in words (transposes=False) prints (A ⊙ P)ᵀ as A ⊙ P: still bracketed in a product."""
    expr = sp.MatMul(sp.Transpose(_H), _ONES)
    assert sb.printing.latex(expr, transposes=False) == r"\left(A \odot P\right) \mathbf{1}\mathbf{1}^{\top}"


def test_a_softmax_vjp_is_a_product_among_factors():
    """δ J_softmax(Z) inside Xᵀ(·) and beside ⊙ is bracketed, as any product is."""
    from symback.matrix import SoftmaxVJP
    vjp = SoftmaxVJP(_B, _P)
    assert sb.printing.latex(sp.MatMul(_A.T, vjp)) == \
        r"A^{\top} \left(B \, J_{\operatorname{softmax}}\left(P\right)\right)"
    assert sb.printing.latex(sp.HadamardProduct(_A, vjp)) == \
        r"A \odot \left(B \, J_{\operatorname{softmax}}\left(P\right)\right)"


def test_text_writes_ones_as_the_latex_does():
    """𝟏𝟏ᵀ, 𝟏, 𝟏ᵀ in plain text (Mermaid labels, --format text), as \\mathbf{1}\\mathbf{1}^{\\top} in LaTeX:
    the matrix of ones was printed 1, so P ⊙ (δ − (δ ⊙ P) 1) read as P ⊙ (δ − δ ⊙ P)."""
    from symback.document.figure import diagram, mermaid
    from symback.printing.text import text
    assert [text(sp.OneMatrix(*s)) for s in ((3, 3), (3, 1), (1, 3), (1, 1))] == ["𝟏𝟏ᵀ", "𝟏", "𝟏ᵀ", "1"]
    assert text(sp.MatMul(sp.OneMatrix(1, _N), _A, sp.OneMatrix(_N, 1))) == "𝟏ᵀ A 𝟏"
    d = sb.derive(sb.Sequential(sb.Attention(heads=1), sb.Dense(3), inputs=(3, 3), loss="mse"))
    chart = mermaid(diagram(d, d.params[0]))
    assert "δ ↦ P1 ⊙ (δ - (δ ⊙ P1) 𝟏𝟏ᵀ)" in chart and ") 1)" not in chart
