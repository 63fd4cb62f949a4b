"""The documents' backpropagation through time (issue 19): the section for rnn, lstm and gru.

Oracles: every displayed line goes through the certificate (each δ and gradient against the
engine's values, themselves checked by a central difference of the loss), a planted wrong term
must be caught there, and the measured ‖δ_{h_t}‖ are compared with PyTorch autograd's
``retain_grad`` norms of the same network written here as a plain loop over time.
"""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import symback as sb
from symback.document.bptt import bptt
from symback.document.certificate import CertificateError, certify, lines
from symback.document.context import _apps
from symback.matrix import FPrime

SIZES = dict(inputs=2, hidden=3, outputs=2, steps=3)
BUILDERS = {"rnn": sb.rnn, "lstm": sb.lstm, "gru": sb.gru}


@pytest.fixture(scope="module")
def sections():
    """(derivation, section context, the values it was measured at) per builder."""
    out = {}
    for i, (name, build) in enumerate(BUILDERS.items()):
        d = sb.derive(build(**SIZES))
        values = _values(d, seed=10 + i)
        out[name] = (d, bptt(d, values, _apps(d)), values)
    return out


def _values(d, seed, rows=4):
    rng, g = np.random.default_rng(seed), d.graph
    return {n: rng.normal(scale=0.7, size=tuple(rows if k == sb.BATCH else int(k) for k in g.symbol(n).shape))
            for n in g.input_names + g.target_names + g.param_names}


def test_only_unrolled_recurrent_graphs_get_the_section():
    assert bptt(sb.derive(sb.mlp([2, 3, 1], activation="tanh", loss="mse"))) is None


@pytest.mark.parametrize("name", list(BUILDERS))
def test_section_shape_and_certificate(sections, name):
    d, ctx, _ = sections[name]
    T = SIZES["steps"]
    assert [r["name"] for r in ctx["hidden"]] == [f"h_{{{t}}}" for t in range(T, 0, -1)]
    assert (ctx["cells"] is not None) == (name == "lstm")
    # every shared weight, each with one term per step that uses it (the first step has no U)
    shared = {p for p in d.params if p not in ("Wy", "by", "W_y", "b_y")}
    assert {str(r["sympy"]["chain"][0].args[1]) for r in ctx["weights"]} == shared
    for r in ctx["weights"]:
        p = str(r["sympy"]["chain"][0].args[1])
        assert r["terms"] == (T - 1 if p in ("Wh", "U_i", "U_f", "U_g", "U_o", "U_r", "U_z", "U_n",
                                             "W_f", "b_f", "W_r", "b_r") else T), p
    assert ctx["gates"], "the compact gate derivatives are shown"
    report = certify(d, {"bptt": ctx})
    assert report["lines"] == len(lines({"bptt": ctx})) and report["links"] > 2 * T


def test_compact_forms_are_the_textbook_ones(sections):
    _, ctx, _ = sections["lstm"]
    text = " ".join(ctx["identities"])
    assert r"\sigma'" in text and r"1 - \sigma" in text and r"1 - \tanh^{2}" in text
    # the cell path: δ_{c_{T−1}} gets δ_{c_T} ⊙ f_T, named in the prose
    assert ctx["additive"]["term"] == r"\delta_{c_{3}} \odot f_{3}"
    assert sections["rnn"][1]["additive"] is None
    assert sections["gru"][1]["additive"]["term"] == r"\delta_{h_{3}} \odot z_{3}"


@pytest.mark.parametrize("where", ["hidden", "cells", "weights", "gates"])
def test_a_planted_wrong_term_is_caught(sections, where):
    d, ctx, _ = sections["lstm"]
    row = ctx[where][1 if where != "gates" else 0]
    chain = list(row["sympy"]["chain"])
    g = d.graph
    # swap one gate for another (f_t → i_t), or one f′ for another, in the last link
    last = chain[-1]
    swap = {g.symbol("f3"): g.symbol("i3"), g.symbol("f2"): g.symbol("i2"),
            g.symbol("c2"): g.symbol("h2"), g.symbol("o3"): g.symbol("g3"), g.symbol("i3"): g.symbol("o3")}
    wrong = last.xreplace(swap)
    if wrong == last:
        wrong = last.replace(lambda e: isinstance(e, FPrime), lambda e: e.arg)
    assert wrong != last
    planted = {**row, "sympy": {"chain": chain[:-1] + [wrong]}}
    with pytest.raises(CertificateError):
        certify(d, {"bptt": {where: [planted]}})


def test_a_dropped_term_is_caught(sections):
    d, ctx, _ = sections["rnn"]
    row = ctx["weights"][0]
    chain = list(row["sympy"]["chain"])
    dropped = type(chain[-1])(*chain[-1].args[1:])
    with pytest.raises(CertificateError):
        certify(d, {"bptt": {"weights": [{"sympy": {"chain": chain[:-1] + [dropped]}}]}})


# ------------------------------------------------------------- the same networks in torch
def _torch_states(name, v, T):
    t = {k: torch.tensor(a, dtype=torch.float64, requires_grad=True) for k, a in v.items()}
    X, Y = t["X"], t["Y"]
    d = X.shape[1] // T
    h, c, hs, cs = None, None, [], []
    for s in range(T):
        x = X[:, s * d:(s + 1) * d]

        def pre(q, r=None):
            W, U, b = (t[f"W_{q}"], t[f"U_{q}"], t[f"b_{q}"]) if name != "rnn" else (t["Wx"], t["Wh"], t["bh"])
            r = h if r is None else r
            return x @ W + b + (0 if h is None else r @ U)
        if name == "rnn":
            h = torch.tanh(pre("h"))
        elif name == "lstm":
            i, f, gg, o = torch.sigmoid(pre("i")), torch.sigmoid(pre("f")), torch.tanh(pre("g")), torch.sigmoid(pre("o"))
            c = i * gg if c is None else f * c + i * gg
            c.retain_grad()
            cs.append(c)
            h = o * torch.tanh(c)
        else:
            z = torch.sigmoid(pre("z"))
            r = torch.sigmoid(pre("r")) if h is not None else None
            n = torch.tanh(pre("n", None if h is None else r * h))
            h = (1 - z) * n + (0 if s == 0 else z * h)
        h.retain_grad()
        hs.append(h)
    Wy, by = (t["Wy"], t["by"]) if name == "rnn" else (t["W_y"], t["b_y"])
    loss = ((h @ Wy + by - Y) ** 2).sum(dim=1).mean()
    loss.backward()
    return [float(torch.linalg.norm(a.grad)) for a in hs], [float(torch.linalg.norm(a.grad)) for a in cs]


@pytest.mark.parametrize("name", list(BUILDERS))
def test_measured_norms_are_autograd_norms_and_below_the_bound(sections, name):
    _, ctx, values = sections[name]
    T = SIZES["steps"]
    hs, cs = _torch_states(name, values, T)
    rows = {r["t"]: r["sympy"] for r in ctx["flow"]["rows"]}
    for t in range(1, T + 1):
        assert rows[t]["measured"] == pytest.approx(hs[t - 1], rel=1e-8, abs=1e-12)
        if cs:
            assert rows[t]["cell"] == pytest.approx(cs[t - 1], rel=1e-8, abs=1e-12)
        if t < T:
            assert rows[t]["bound"] >= hs[t - 1]
    assert rows[T]["bound"] is None
    assert ctx["sympy"]["values"] is values


def test_elman_bound_is_sup_times_weight_norm():
    """Elman: ‖δ_{h_{t−1}}‖ ≤ sup|tanh′| ‖W_h‖ ‖δ_{h_t}‖, the ratio measured by autograd below it."""
    d = sb.derive(sb.rnn(inputs=2, hidden=3, outputs=1, steps=4))
    values = _values(d, seed=3)
    values["Wh"] = values["Wh"] * 2.5          # a large recurrent weight: the bound is loose, still ≥
    ctx = bptt(d, values, _apps(d))
    hs, _ = _torch_states("rnn", values, 4)
    factor = 1.0 * np.linalg.norm(values["Wh"])      # sup|tanh′| = 1 (SymPy's maximum)
    for t in range(1, 4):
        assert hs[t - 1] / hs[t] <= factor * (1 + 1e-12)
        row = next(r["sympy"] for r in ctx["flow"]["rows"] if r["t"] == t)
        assert row["bound"] == pytest.approx(factor * hs[t], rel=1e-9)
    assert r"\sup\lvert \tanh'\rvert" in ctx["flow"]["formula"]["lines"]


def test_rendered_markdown_has_the_section():
    d = sb.derive(sb.rnn(inputs=1, hidden=2, outputs=1, steps=2))
    text = d.markdown(figure=False, cost=False, verify=False, vanishing=False)
    assert "## Backpropagation through time" in text
    assert r"\frac{\partial L}{\partial W_{h}}" in text and "| 2 | (output) |" in text


# the textbook suprema of the gates' derivatives (σ′ ≤ 1/4 at 0, tanh′ ≤ 1 at 0)
SUP = {r"\sup\lvert \sigma'\rvert": 0.25, r"\sup\lvert \tanh'\rvert": 1.0}


@pytest.mark.parametrize("name", ["gru", "lstm"])
def test_the_printed_one_step_bound_reads_as_the_tables_number(sections, name):
    """The bound's formula, read back as printed (tests/_formula_reader.py) at the section's point, is the
    table's bound: a sum of bounds inside a product is bracketed, sup|σ′| · (a + b) · ‖U_z‖; the GRU's
    was printed sup|σ′| · a + b · ‖U_z‖ (7.85 read, 5.88 computed)."""
    from _formula_reader import read
    from symback.document.bptt import _At
    from symback.engine import delta
    from symback.printing import latex
    d, ctx, values = sections[name]
    g, at = d.graph, _At(d, values)
    names = dict(SUP)
    for n in g.order:
        for m in (g.symbol(n), delta(g, n)):
            if sb.matrix.is_matrix(m) and (not isinstance(m, sb.vjp.AdjointMatrix) or n in d.adjoint):
                v = np.asarray(at.value(m), dtype=float)
                names[rf"\max\lvert {latex(m)}\rvert"] = np.abs(v).max()
                names[rf"\left\lVert {latex(m)} \right\rVert_F"] = np.linalg.norm(v)
    printed = ctx["flow"]["formula"]["lines"]
    formula = re.sub(r"&\\le |&\\quad ", "", printed).replace("\\\\\n", " ")
    bound = next(r["sympy"]["bound"] for r in ctx["flow"]["rows"] if r["t"] == SIZES["steps"] - 1)
    assert read(formula, names) == pytest.approx(bound, rel=1e-9)
    if name == "gru":
        assert r"\sup\lvert \sigma'\rvert \cdot \left(\max\lvert n_{3}\rvert \cdot" in printed
