"""The certificate's coverage (issue 16): every section a document shows is a checked chain.

The loss and its batch reduction, the activations' definitions, derivatives and suprema, the
worked example's numbers, ``steps="full"`` rows, the vanishing-gradient bound and gradient
descent's iterations each hold their equations as chains; the certificate checks them against
oracles outside the engine (SymPy's ``diff`` of each definition, central differences of the loss
recomputed from the definitions, the graph's reduction of the per-sample costs, a dense grid for
a supremum).  Each test plants one wrong line and shows that the certificate refuses it.
"""
from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

import symback as sb
from conftest import seed000_graph, seed004_graph
from symback.document import context
from symback.document.certificate import CertificateError, certify, claims
from symback.printing import Chain, Terms

QUICK = {"verify": False, "cost": False}
LR = sp.Rational(1, 10)


def _scalar_values(g):
    return {n: sp.Rational(k + 1, 3) for k, n in enumerate(g.input_names + g.target_names + g.param_names)}


@pytest.fixture(scope="module")
def seed000():
    d = sb.derive(seed000_graph()[0])
    return d, context(d, values=_scalar_values(d.graph), lr=LR, steps="full", steps_taken=2, **QUICK)


@pytest.fixture(scope="module")
def leaky():
    d = sb.derive(sb.mlp([2, 3, 1], activation="leaky_relu", output="sigmoid",
                         loss="binary_cross_entropy", l2=0.01))
    return d, context(d, **QUICK)


def _planted(d, ctx, edit, match):
    """edit(ctx) plants one wrong line (on a copy of the chains); the certificate must refuse it."""
    bad = _copy_chains(ctx)
    edit(bad)
    with pytest.raises(CertificateError, match=match):
        certify(d, bad)


def _copy_chains(x):
    """A copy of a context in which every "sympy" dict and its chains may be edited freely."""
    if isinstance(x, dict):
        return {k: (_copy_chains(v) if k != "sympy" else _copy_info(v)) for k, v in x.items()}
    if isinstance(x, list):
        return [_copy_chains(v) for v in x]
    return x


def _copy_info(info):
    if not isinstance(info, dict):
        return info
    out = dict(info)
    if out.get("chain") is not None:
        out["chain"] = list(out["chain"])
    if out.get("claims"):
        out["claims"] = [_copy_info(c) for c in out["claims"]]
    return out


def _where(ctx, prefix):
    return [w for w, _ in claims(ctx) if w.startswith(prefix)]


# ---------------------------------------------------------------- every section is covered
def test_every_section_holds_its_equations_as_chains(seed000, leaky):
    d, ctx = seed000
    report = certify(d, ctx)
    for section in ("loss.claims", "activations", "example.forward", "example.gradients", "example.updates",
                    "example.path", "gradients[0].steps.factors", "gradients[0].steps.claims",
                    "reduction_steps", "vanishing", "iterations[1].claims"):
        assert _where(ctx, section), section
    assert report["lines"] == len(claims(ctx)) > 50
    d, ctx = leaky
    certify(d, ctx)
    for section in ("loss.claims[0]", "loss.claims[1]", "loss.claims[2]", "loss.claims[3]",
                    "activations[0].claims[2]", "vanishing"):
        assert _where(ctx, section), section


def test_a_matrix_worked_example_is_checked_number_by_number():
    d = sb.derive(sb.mlp([3, 2, 1], activation="tanh"))
    rng = np.random.default_rng(0)
    values = {"X": rng.normal(size=(2, 3)), "Y": rng.normal(size=(2, 1)), "W1": rng.normal(size=(3, 2)),
              "b1": rng.normal(size=(1, 2)), "W2": rng.normal(size=(2, 1)), "b2": rng.normal(size=(1, 1))}
    ctx = context(d, values=values, lr=LR, **QUICK)
    certify(d, ctx)

    def wrong_gradient(c):
        row = c["example"]["gradients"][0]["sympy"]["chain"]
        row[-1] = row[-1] + sp.ImmutableMatrix(np.eye(3, 2) * 1e-3)
    _planted(d, ctx, wrong_gradient, "example.gradients")

    def wrong_update(c):
        row = c["example"]["updates"][1]["sympy"]["chain"]
        row[-1] = row[-1] * 1.001
    _planted(d, ctx, wrong_update, "example.updates")


# ---------------------------------------------------------------- the loss and its reduction
def test_a_wrong_loss_line_is_caught(seed000, leaky):
    d, ctx = leaky
    ell = ctx["loss"]["sympy"]["claims"][0]["chain"]
    assert ell[0].func == sp.Function("ell")

    def flipped_ell(c):         # −y log ŷ − (1 − y) log(1 − ŷ) with one sign flipped
        chain = c["loss"]["sympy"]["claims"][0]["chain"]
        chain[1] = chain[1].func(*[a if k else -a for k, a in enumerate(chain[1].args)])
    _planted(d, ctx, flipped_ell, r"loss.claims\[0\]")

    def doubled_row(c):         # C_i = 2 ℓ(Ŷ_i1, Y_i1)
        chain = c["loss"]["sympy"]["claims"][1]["chain"]
        chain[1] = 2 * chain[1]
    _planted(d, ctx, doubled_row, r"loss.claims\[1\]")

    def doubled_penalty(c):
        chain = c["loss"]["sympy"]["claims"][3]["chain"]
        chain[1] = 2 * chain[1]
    _planted(d, ctx, doubled_penalty, r"loss.claims\[3\]")

    _batch_reduction_faults_caught(*seed000)


def _batch_reduction_faults_caught(d, ctx):
    """L = (1/m)ΣC_i, L written out, ∂L/∂θ = (1/m)Σ∂C_i/∂θ are held, and a sum written where the
    graph takes the mean, or a halved gradient, is refused."""
    batch = [c for c in ctx["loss"]["sympy"]["claims"] if c.get("batch")]
    assert len(batch) == 3

    def summed_not_mean(c):     # L = Σ C_i where the graph takes the mean
        chain = [x for x in c["loss"]["sympy"]["claims"] if x.get("batch")][0]["chain"]
        chain[1] = chain[1] * sb.BATCH
    _planted(d, ctx, summed_not_mean, "loss.claims")

    def gradient_half(c):
        chain = [x for x in c["loss"]["sympy"]["claims"] if x.get("batch")][2]["chain"]
        chain[1] = chain[1] / 2
    _planted(d, ctx, gradient_half, "loss.claims")


# ---------------------------------------------------------------- activations
def test_a_wrong_activation_line_is_caught(leaky):
    d, ctx = leaky
    row = next(a for a in ctx["activations"] if a["name"] == "leaky_relu")
    assert row["params"] == r"\alpha = \frac{1}{100}"       # the slope is shown beside the definition

    def wrong_slope(c):         # leaky ReLU's definition with slope 2α
        a = next(a for a in c["activations"] if a["name"] == "leaky_relu")
        chain = a["sympy"]["claims"][0]["chain"]
        chain[1] = chain[1].xreplace({sp.Symbol("alpha", positive=True): 2 * sp.Symbol("alpha", positive=True)})
    _planted(d, ctx, wrong_slope, "activations")
    sigmoid = next(a for a in ctx["activations"] if a["name"] == "sigmoid")

    def wrong_derivative(c):    # σ′ = σ(1 + σ)
        a = next(a for a in c["activations"] if a["name"] == "sigmoid")
        chain = a["sympy"]["claims"][1]["chain"]
        s = chain[1].atoms(sb.functions.Activation).pop()
        chain[1] = s * (1 + s)
    _planted(d, ctx, wrong_derivative, "activations")
    assert sigmoid["sympy"]["claims"][2]["chain"][1] == sp.Rational(1, 4)

    def wrong_sup(c):           # sup |σ′| = 1/2
        a = next(a for a in c["activations"] if a["name"] == "sigmoid")
        a["sympy"]["claims"][2]["chain"][1] = sp.Rational(1, 2)
    _planted(d, ctx, wrong_sup, "activations")


# ---------------------------------------------------------------- the worked example, steps, iterations
@pytest.mark.parametrize("part,index", [("forward", 1), ("gradients", 0), ("updates", 2)])
def test_a_wrong_example_number_is_caught(seed000, part, index):
    d, ctx = seed000

    def off(c):
        chain = c["example"][part][index]["sympy"]["chain"]
        chain[-1] = chain[-1] + sp.Rational(1, 1000)
    _planted(d, ctx, off, f"example.{part}")


def test_a_wrong_path_product_and_loss_are_caught(seed000):
    d, ctx = seed000

    def path(c):
        chain = c["example"]["path"]["sympy"]["chain"]
        chain[2] = Terms(*[Chain(*f.args[:-1], 2 * f.args[-1]) for f in chain[2].args])
    _planted(d, ctx, path, "example.path")

    def loss(c):
        c["example"]["sympy"]["chain"][-1] = c["example"]["sympy"]["chain"][-1] * 2
    _planted(d, ctx, loss, "example")


def test_a_wrong_full_step_is_caught(seed000):
    d, ctx = seed000
    factors = [f for g in ctx["gradients"] for f in g["steps"]["factors"]]
    assert any(f["sympy"]["claims"] for f in factors)        # ∂w₂x₂/∂w₁ = ∂b/∂w₁ = 0

    def inner(c):               # an inner derivative doubled
        f = next(f for g in c["gradients"] for f in g["steps"]["factors"] if len(f["sympy"]["chain"]) > 2)
        f["sympy"]["chain"][2] = Chain(sp.Integer(2), f["sympy"]["chain"][2])
    _planted(d, ctx, inner, "steps.factors")

    def nonzero(c):             # a term that does not vanish put among the zeros
        f = next(f for g in c["gradients"] for f in g["steps"]["factors"] if f["sympy"]["claims"])
        chain = f["sympy"]["claims"][0]["chain"]
        g = d.graph
        chain.insert(0, sb.printing.Partial(g.symbol("x1") * g.symbol("w1"), g.symbol("w1")))
    _planted(d, ctx, nonzero, "steps.factors")

    def reduction(c):           # 1/(2m) Σ 2(p − y) = 1/(2m) Σ (p − y)
        chain = c["reduction_steps"][0]["sympy"]["chain"]
        chain[-1] = chain[-1] / 2
    _planted(d, ctx, reduction, "reduction_steps")


def test_a_wrong_iteration_is_caught(seed000):
    d, ctx = seed000
    first = ctx["iterations"][0]["sympy"]
    assert first["theta"] == [_scalar_values(d.graph)[p] for p in d.params]
    assert ctx["iterations"][1]["sympy"]["theta"] == first["next"]      # θ¹ of row 0 starts row 1

    for k, what in ((0, "loss"), (1, "gradient"), (2, "step")):
        def off(c, k=k):
            chain = c["iterations"][1]["sympy"]["claims"][k]["chain"]
            chain[-1] = chain[-1] * 2 if k == 0 else chain[-1] + sp.ImmutableMatrix([[sp.Rational(1, 100), 0, 0]]).T
        _planted(d, ctx, off, r"iterations\[1\]")


# ---------------------------------------------------------------- the vanishing-gradient bound
def test_a_false_bound_is_caught():
    for graph in (seed004_graph()[0], sb.mlp([3, 4, 4, 1], activation="sigmoid")):
        d = sb.derive(graph)
        ctx = context(d, **QUICK)
        certify(d, ctx)
        assert ctx["vanishing"]["sympy"]["relations"][0] == "<="

        def tiny(c):            # a bound a million times too small
            chain = c["vanishing"]["sympy"]["chain"]
            chain[1:] = [Chain(sp.Rational(1, 10**6), x) for x in chain[1:]]
        _planted(d, ctx, tiny, "vanishing")


def test_a_matrix_bound_is_written_with_the_frobenius_norm():
    """|∂L/∂W₁| for a matrix: the norm meant (and checked) is ‖·‖_F (a finding of issue 16)."""
    d = sb.derive(sb.mlp([3, 4, 1], activation="sigmoid"))
    v = context(d, **QUICK)["vanishing"]
    assert r"\rVert_F" in v["bound_lhs"] and r"\left|" not in v["bound_lhs"]
    d = sb.derive(seed004_graph()[0])
    assert r"\left|" in context(d, **QUICK)["vanishing"]["bound_lhs"]      # a number keeps |·|


# ---------------------------------------------------------------- the smaller findings of issue 16
def test_prose_names_the_loss_as_a_reader_does():
    d = sb.derive(sb.mlp([2, 3, 2], activation="tanh", loss="half_mse"))
    tex = d.latex(verify=False, cost=False, vanishing=False, figure=False)
    assert "half squared-error loss" in tex and "half mse" not in tex and "half\\_mse" not in tex
    d = sb.derive(sb.mlp([2, 3, 2], activation="tanh", output="softmax", loss="cross_entropy"))
    assert context(d, **QUICK)["output"]["loss"] == "cross-entropy"


def test_repr_latex_states_the_loss_once():
    d = sb.derive(sb.mlp([2, 3, 1], activation="sigmoid", l2=0.1))
    shown = d._repr_latex_()
    assert shown.count(r"\sum_{i=1}^{m} C_{i}") == 1, shown[:600]
    assert "penalty" in shown                       # P, used by ∂P/∂W, is still defined


def test_unused_parameter_warning_points_at_the_users_line():
    import warnings
    g = sb.Graph()
    x = g.inputs("x")
    y = g.targets("y")
    w, v = g.params("w v")
    g.loss((w * x - y) ** 2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sb.derive(g)                                # this line is the user's
    (warning,) = [c for c in caught if issubclass(c.category, sb.errors.UnusedParameterWarning)]
    assert warning.filename == __file__


def test_the_terminal_writes_math_not_sympy_syntax():
    from symback.printing.text import text_report
    from conftest import seed002_graph
    d = sb.derive(seed002_graph()[0])
    out = text_report(d).splitlines()
    assert "dC/dw1 = 2 x1 (y\u0302 - y)" in out
    assert "    as SymPy: x1*(-2*y + 2*yhat)" in out        # parses back (tests/test_cli.py reads it)
    gradient_lines = [line for line in out if line.startswith("dC/d")]
    assert gradient_lines and not any("*" in line for line in gradient_lines)


def test_one_sample_graphs_batch_reduction_is_checked():
    """A sequence network (one sample a T×d matrix): L = (1/m)ΣCᵢ and ∂L/∂θ = (1/m)Σ∂Cᵢ/∂θ are
    checked on a batch of three drawn samples (the engine's per-sample gradients), and a sum
    written where the graph takes the mean, or a halved gradient, is caught."""
    d = sb.derive(sb.Sequential(sb.Dense(3, "tanh"), sb.Dense(2), inputs=(3, 2), loss="mse"))
    ctx = context(d, figure=False, vanishing=False, verify=False, cost=False)
    certify(d, ctx)
    _batch_reduction_faults_caught(d, ctx)
