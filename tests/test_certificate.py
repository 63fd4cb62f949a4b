"""The certificate (issue 16): every displayed equation is a chain checked equal before writing.

Oracles outside the engine: ``sympy.diff`` of the unrolled loss (scalar graphs) and a
central difference of a loss computed from the definitions alone (matrix graphs), both
inside :func:`symback.document.certificate.certify`; here, every builder, notation and
template goes through it, and wrong lines planted into a context are caught.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import sympy as sp

import symback as sb
import symback.render as render_module
from conftest import seed000_graph, seed003_case2_graph, seed004_graph, slow
from symback.document import context
from symback.document.certificate import CertificateError, certify, claims, lines
from symback.printing import Chain, Terms

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
QUICK = {"verify": False, "cost": False, "vanishing": False}


def _builders():
    return {
        "mlp": lambda: sb.mlp([3, 4, 4, 1], activation="sigmoid"),
        "residual": lambda: sb.mlp([2, 8, 8, 1], activation="tanh", output="sigmoid",
                                   loss="binary_cross_entropy", residual=True, l2=0.001),
        "Residual": lambda: sb.Sequential(sb.Dense(3, "softplus"), sb.Residual(sb.Dense(3, "sigmoid")),
                                          sb.Dense(1), inputs=2, loss="mse"),
        "skip": lambda: sb.load_spec(EXAMPLES / "skip_connection.toml"),
        "tied": lambda: sb.Sequential(sb.Dense(2, "tanh"), sb.Dense(4, "identity", tie="W1"),
                                      inputs=4, loss="mse"),
        "rnn": lambda: sb.rnn(inputs=2, hidden=3, outputs=1, steps=4),
    }


# parts of a context that display equations: every one of their rows must carry a chain
SHOWN = ("forward", "local", "gradients", "deltas", "punchline", "bp")


def _expected_lines(ctx) -> int:
    """The chains the certificate must find: one per row of SHOWN, plus every other claim held
    (the loss, activations, example, steps, bound: tests/test_certificate_coverage.py)."""
    n = sum(len(ctx[k] or []) for k in SHOWN)
    n += sum(len(g["where"]) for g in ctx["gradients"]) + sum(len(r["where"]) for r in ctx["punchline"] or [])
    row = re.compile(rf"({'|'.join(SHOWN)})\[\d+\](\.where\[\d+\])?|output")
    n += len([w for w, _ in claims(ctx) if not row.fullmatch(w)])
    return n + (1 if ctx["output"] else 0)


# a normal run certifies each builder in one notation, the three in turn; slow mode all of them
@pytest.mark.parametrize("builder, notation", [
    (builder, notation) if (i - j) % 3 == 0 else slow(builder, notation)
    for i, builder in enumerate(sorted(_builders())) for j, notation in enumerate(["matrix", "lecture", "nielsen"])])
def test_every_builder_and_notation_passes_the_certificate(builder, notation):
    d = sb.derive(_builders()[builder]())
    ctx = context(d, notation=notation, **QUICK)
    for k in SHOWN:
        for row in ctx[k] or []:
            assert row["sympy"]["chain"], (k, row)
    report = certify(d, ctx)
    assert report["lines"] == _expected_lines(ctx) > 0
    assert report["links"] >= report["lines"]


@pytest.fixture
def certified(monkeypatch):
    """Records what render's certificate checked (it is the real certify, wrapped)."""
    seen = []

    def spy(d, ctx, seed=0):
        report = certify(d, ctx, seed)
        seen.append((report, _expected_lines(ctx)))
        return report
    monkeypatch.setattr(render_module, "certify", spy)
    return seen


@pytest.mark.parametrize("template,fmt", [("article", "latex"), ("snippet", "latex"),
                                          ("beamer", "latex"), ("markdown", "markdown")])
def test_every_template_renders_through_the_certificate(template, fmt, certified):
    for build in ("residual", "tied"):
        render_module.render(sb.derive(_builders()[build]()), template, fmt=fmt, **QUICK)
    render_module.render(sb.derive(seed003_case2_graph()[0]), template, fmt=fmt, steps="full", **QUICK)
    assert len(certified) == 3
    for report, expected in certified:
        assert report["lines"] == expected > 0


@pytest.mark.parametrize("graph", [seed000_graph, seed004_graph])
def test_steps_full_and_values_pass_the_certificate(graph, certified):
    d = sb.derive(graph()[0])
    g = d.graph
    values = {n: sp.Rational(k + 1, 3) for k, n in enumerate(g.input_names + g.target_names + g.param_names)}
    text = render_module.render(d, steps="full", values=values, lr=sp.Rational(1, 10))
    assert r"\begin{align*}" in text
    (report, expected), = certified
    assert report["lines"] == expected > 0


# ------------------------------------------------------------- planted errors
def _gradient_chain(ctx, param):
    g = next(g for g in ctx["gradients"] if g["sympy"]["chain"][0].args[1].name == param)
    return g["sympy"]["chain"]


def test_a_dropped_path_is_caught():
    d = sb.derive(_builders()["residual"]())
    ctx = context(d, **QUICK)
    chain = _gradient_chain(ctx, "W1")
    factors = chain[2]
    assert isinstance(factors, Terms) and len(factors.args) == 3      # three paths to W1
    chain[2] = Terms(*factors.args[:2])                               # the last one left out
    with pytest.raises(CertificateError, match="gradients"):
        certify(d, ctx)


def test_a_flipped_sign_is_caught_scalar_and_matrix():
    d = sb.derive(seed003_case2_graph()[0])
    ctx = context(d, **QUICK)
    chain = ctx["deltas"][-1]["sympy"]["chain"]
    chain[-1] = -chain[-1]
    with pytest.raises(CertificateError, match="deltas"):
        certify(d, ctx)
    d = sb.derive(_builders()["mlp"]())
    ctx = context(d, **QUICK)
    row = ctx["punchline"][0]["sympy"]["chain"]
    row[1] = -row[1]
    with pytest.raises(CertificateError, match="punchline"):
        certify(d, ctx)


def test_a_wrong_local_derivative_is_caught():
    d = sb.derive(seed000_graph()[0])
    ctx = context(d, **QUICK)
    row = next(r for r in ctx["local"] if not r["maps"])
    row["sympy"]["chain"][1] = row["sympy"]["chain"][1] * 2
    with pytest.raises(CertificateError, match="local"):
        certify(d, ctx)


def test_render_refuses_a_false_document(monkeypatch):
    """A context with a false line never becomes text: render raises instead."""
    import symback.render as r
    real = r.context

    def planted(*args, **kwargs):
        ctx = real(*args, **kwargs)
        chain = ctx["gradients"][0]["sympy"]["chain"]
        chain.append(2 * chain[-1])
        return ctx
    monkeypatch.setattr(r, "context", planted)
    with pytest.raises(CertificateError):
        r.render(sb.derive(seed004_graph()[0]), **QUICK)


# ------------------------------------------------------------- findings of issue 16
def test_no_path_of_a_gradient_is_dropped_for_width():
    for build, param, n in (("residual", "W1", 3), ("residual", "b1", 2), ("rnn", "Wx", 4)):
        d = sb.derive(_builders()[build]())
        ctx = context(d, **QUICK)
        g = next(g for g in ctx["gradients"] if g["sympy"]["chain"][0].args[1].name == param)
        assert len(g["paths"]) == n
        assert all(p["factors"] for p in g["paths"]), build
        shown = g["sympy"]["chain"][2]
        assert len(shown.args if isinstance(shown, Terms) else [shown]) == n


def test_tied_weight_punchline_has_the_decoder_term():
    d = sb.derive(_builders()["tied"]())
    ctx = context(d, **QUICK)
    row = next(r for r in ctx["punchline"] if r["param"] == "W1")
    assert len(row["terms"]) == 2                      # encoder and decoder use of W1
    certify(d, ctx)


def test_penalty_lines_are_not_circular():
    for build in ("residual", "skip"):
        d = sb.derive(_builders()[build]())
        ctx = context(d, **QUICK)
        for g in ctx["gradients"]:
            lhs, symbols = g["sympy"]["chain"][0], g["sympy"]["chain"][1]
            assert lhs not in sp.preorder_traversal(symbols), g["lhs"]
        params = {d.graph.symbol(p) for p in d.params}
        for r in ctx["deltas"][1:]:
            # δ_W = … + ∂L/∂W would define ∂L/∂W by itself; the penalty's edge is ∂P/∂W
            partials = [a for a in sp.preorder_traversal(r["sympy"]["symbolic"]) if type(a).__name__ == "Partial"]
            assert not [a for a in partials if a.args[0] == sp.Symbol("L") and a.args[1] in params], r["lhs"]
        assert ctx["loss"]["penalty"] is not None


def test_punchline_says_which_parameters_it_leaves_out():
    d = sb.derive(_builders()["skip"]())
    ctx = context(d, **QUICK)
    shown = {r["param"] for r in ctx["punchline"]}
    left = [p for p in d.params if p not in shown]
    assert left
    assert ctx["punchline_note"] and all(sp.latex(sp.Symbol(p)).split("_")[0] in ctx["punchline_note"] for p in left)


def test_certificate_lines_are_found_everywhere_in_a_context():
    found = lines({"a": [{"sympy": {"chain": [1, 1]}}], "b": {"sympy": {"chain": [Chain(1), 1]}}})
    assert [w for w, _ in found] == ["a[0]", "b"]


# ------------------------------------------------------------- the project's fuzzer
from hypothesis import HealthCheck, given, settings  # noqa: E402
from conftest import examples  # noqa: E402
from test_differential import scalar_graphs  # noqa: E402


@settings(max_examples=examples(5, slow=200), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
@given(scalar_graphs())
def test_random_scalar_graphs_render_in_every_notation_and_format(case):
    """The differential fuzzer's graphs render in every notation and format through the certificate."""
    d = sb.derive(case[0])
    for notation in ("matrix", "lecture", "nielsen"):
        render_module.render(d, notation=notation, **QUICK)
    render_module.render(d, "markdown", fmt="markdown", steps="full", **QUICK)


def test_a_wide_network_is_certified_at_small_widths_and_a_planted_error_is_caught():
    """Above MAX_ENTRIES parameter entries the chains are checked on the same graph at widths
    2–6 (what they say holds at any widths): a wrong sign still fails."""
    from symback.document import certificate as C
    from symback.document.context import context
    d = sb.derive(sb.mlp([3000, 400, 10], activation="sigmoid", output="softmax", loss="cross_entropy"))
    assert C._entries(d) > C.MAX_ENTRIES
    ctx = context(d)
    assert C.certify(d, ctx)["links"] > 10
    where, chain = next((w, c) for w, c in C.lines(ctx) if w.startswith("gradients") and len(c) >= 2)

    def plant(x):
        if isinstance(x, dict):
            if isinstance(x.get("sympy"), dict) and list(x["sympy"].get("chain") or []) == chain:
                x["sympy"]["chain"] = list(chain[:-1]) + [-chain[-1]]
                return True
            return any(plant(v) for v in x.values())
        return isinstance(x, (list, tuple)) and any(plant(v) for v in x)
    assert plant(ctx)
    with pytest.raises(C.CertificateError, match="false"):
        C.certify(d, ctx)
