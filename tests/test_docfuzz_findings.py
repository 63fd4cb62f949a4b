"""The layer-network document fuzzer's findings (random small ``Sequential``/rnn/lstm/gru
networks, every template and notation, with and without a worked example).

Oracles: torch autograd of the same network written in the test with ``torch`` primitives
(what the true gradient is), and the certificate's own numeric check inside ``render``.
"""
import numpy as np
import pytest

import symback as sb
from conftest import pdflatex_problems

torch = pytest.importorskip("torch")

QUICK = {"verify": False, "cost": False, "vanishing": False}


def _softmax_example(Y):
    rng = np.random.default_rng(0)
    return {"X": rng.normal(size=(2, 2)), "Y": np.asarray(Y, dtype=float),
            "W1": rng.normal(size=(2, 2)), "b1": rng.normal(size=(1, 2))}


def _torch_grad_W1(v):
    """∂L/∂W1 of L = mean_i −Σ_k Y_ik log softmax(X W1 + b1)_ik, by torch autograd."""
    W = torch.tensor(v["W1"], requires_grad=True)
    P = torch.softmax(torch.tensor(v["X"]) @ W + torch.tensor(v["b1"]), dim=1)
    (-(torch.tensor(v["Y"]) * torch.log(P)).sum(1).mean()).backward()
    return W.grad.numpy(), P.detach().numpy()


def test_softmax_example_refuses_targets_whose_rows_do_not_sum_to_one():
    # Found: a worked example with softmax + cross-entropy and target rows not summing to 1
    # raised CertificateError ("the gradient of W1 disagrees with a finite difference"): the
    # document's Ŷ − Y holds only for rows summing to 1, as m.grad's DataError already says.
    d = sb.derive(sb.Sequential(sb.Dense(2, "softmax"), inputs=2, loss="cross_entropy"))
    bad = _softmax_example([[0.3, 0.4], [0.5, 0.9]])
    grad, P = _torch_grad_W1(bad)
    shown = bad["X"].T @ (P - bad["Y"]) / 2          # what the document's Ŷ − Y would say
    assert np.abs(grad - shown).max() > 1e-3         # the refusal is needed: the form is false there
    for fmt in ("latex", "markdown"):
        with pytest.raises(sb.SymbackError, match="sum to 1") as info:
            getattr(d, fmt)(values=bad, lr=0.1, **QUICK)
        assert type(info.value).__name__ == "DataError"
    good = _softmax_example([[0.3, 0.7], [1.0, 0.0]])
    grad, P = _torch_grad_W1(good)
    assert np.allclose(grad, good["X"].T @ (P - good["Y"]) / 2, rtol=1e-10, atol=1e-12)
    assert r"\end{document}" in d.latex(values=good, lr=0.1, **QUICK)    # certified


def test_example_targets_and_rows_meet_what_compiled_models_require():
    # Found with the above: a worked example accepted data m.grad refuses — a BatchNorm
    # network's single sample (its batch statistics make every gradient but b's 0) and a
    # binary cross-entropy target outside [0, 1]; the document now refuses them the same way.
    rng = np.random.default_rng(1)
    d = sb.derive(sb.Sequential(sb.BatchNorm(), sb.Dense(1), inputs=2, loss="mse"))
    one = {"X": rng.normal(size=(1, 2)), "Y": rng.normal(size=(1, 1)), "gamma1": np.ones((1, 2)),
           "beta1": np.zeros((1, 2)), "W2": rng.normal(size=(2, 1)), "b2": np.zeros((1, 1))}
    X = torch.tensor(one["X"], requires_grad=True)
    mean, var = X.mean(0), X.var(0, unbiased=False)    # torch's batch_norm refuses one sample
    out = ((X - mean) / torch.sqrt(var + 1e-5)) @ torch.tensor(one["W2"])
    out.sum().backward()
    assert float(X.grad.abs().max()) == 0.0          # one sample: nothing flows back to X
    with pytest.raises(sb.SymbackError, match="2 samples"):
        d.markdown(values=one, lr=0.1, **QUICK)
    m = sb.compile(d)
    with pytest.raises(sb.SymbackError, match="2 samples"):
        m.grad(one["X"], one["Y"], {k: v for k, v in one.items() if k not in "XY"})
    d = sb.derive(sb.Sequential(sb.Dense(1, "sigmoid"), inputs=2, loss="binary_cross_entropy"))
    v = {"X": rng.normal(size=(2, 2)), "Y": np.array([[1.5], [0.2]]),
         "W1": rng.normal(size=(2, 1)), "b1": np.zeros((1, 1))}
    with pytest.raises(sb.SymbackError, match=r"outside \[0, 1\]"):
        d.latex(values=v, lr=0.1, **QUICK)


def _lstm_one_step_grads(l2):
    """Every parameter's ∂L/∂p of a one-step LSTM (h₀ = c₀ = 0), written here, by torch autograd."""
    gen = torch.Generator().manual_seed(0)
    names = [f"{k}_{gate}" for gate in "ifgo" for k in "WUb"] + ["W_y", "b_y"]
    p = {n: torch.randn(1, 1, generator=gen, dtype=torch.float64, requires_grad=True) for n in names}
    X, Y = torch.randn(3, 1, generator=gen, dtype=torch.float64), torch.randn(3, 1, generator=gen, dtype=torch.float64)
    h0 = torch.zeros(3, 1, dtype=torch.float64)
    gate = {k: X @ p[f"W_{k}"] + h0 @ p[f"U_{k}"] + p[f"b_{k}"] for k in "ifgo"}
    c = torch.sigmoid(gate["f"]) * h0 + torch.sigmoid(gate["i"]) * torch.tanh(gate["g"])
    h = torch.sigmoid(gate["o"]) * torch.tanh(c)
    loss = ((h @ p["W_y"] + p["b_y"] - Y) ** 2).sum(1).mean()
    loss = loss + l2 / 2 * sum((p[n] ** 2).sum() for n in names if n[0] in "WU")
    loss.backward()
    return {n: float(t.grad.abs().max()) for n, t in p.items()}, {n: float(t.detach().abs().max()) for n, t in p.items()}


@pytest.mark.parametrize("l2", [0.0, 0.01])
def test_punchline_note_says_which_parameters_do_not_reach_the_loss(l2):
    # Found: a one-step LSTM's note said U_i, W_f, U_f, b_f, U_g, U_o "reach the loss only
    # through the penalty" with no penalty at all (l2 = 0), and listed the unpenalised bias b_f
    # so with one; and called the biases "a bias, a norm's scale and shift" with no norm.
    grads, size = _lstm_one_step_grads(l2)
    unused = sorted(n for n, v in grads.items() if v == 0.0)
    penalty_only = sorted(n for n, v in grads.items() if v and abs(v - l2 * size[n]) < 1e-15)
    assert unused == (["U_f", "U_g", "U_i", "U_o", "W_f", "b_f"] if not l2 else ["b_f"])
    assert penalty_only == ([] if not l2 else ["U_f", "U_g", "U_i", "U_o", "W_f"])
    kw = {"l2": l2} if l2 else {}
    d = sb.derive(sb.lstm(inputs=1, hidden=1, outputs=1, steps=1, output="identity", loss="mse", **kw))
    note = next(line for line in d.markdown(**QUICK).splitlines() if line.startswith("Not shown here"))

    def named(names):
        return ", ".join(f"${n[0]}_{{{n[2]}}}$" for n in names)
    order = [n for n in d.params]
    assert named([n for n in order if n in unused]) + ", which do" in note
    assert ("penalty" in note) == bool(l2)
    if l2:
        assert named([n for n in order if n in penalty_only]) + ", which reach the loss only through the penalty" in note
    assert "norm" not in note


def _penalty_terms():
    """A seven-weight network's penalty λ/2 Σ‖W_l‖² (λ = 0.01), as the loss node holds it."""
    import sympy as sp
    d = sb.derive(sb.mlp([2] * 8, activation="tanh", l2=0.01))
    g = d.graph
    cost = g.symbol(d.layout.cost_node())
    return sp.Add(*[t for t in sp.Add.make_args(g.expr(d.loss_name)) if not t.has(cost)]), g, d


def test_a_folded_sum_keeps_its_common_factor_when_its_terms_fit_one_row():
    # Found: aligned_lines factored λ/2 = 1/200 out of the penalty (69 symbols, past the 60 of a
    # row) and its seven terms then fitted one row: the tuple assignment that decorates the first
    # and last rows kept only the last's, so "‖W₁‖² + … + ‖W₇‖²\right)" was printed, the factor
    # 1/200 and the \left( gone (pdflatex: "Missing } inserted").
    import sympy as sp
    from symback.document.lines import aligned_lines
    P, g, _ = _penalty_terms()
    text = aligned_lines(P, [])
    assert text.count(r"\left(") == text.count(r"\right)") == 1
    # oracle: SymPy's own value of the penalty, against the printed factor times the printed norms
    Ws = {g.symbol(f"W{k}"): sp.Matrix(2, 2, lambda i, j: (k + i + 2 * j) % 5 - 2) for k in range(1, 8)}
    want = sum(float(m.norm() ** 2) for m in Ws.values()) / 200
    assert float(P.subs(Ws).doit()) == pytest.approx(want, rel=1e-12)
    factor, body = text.split(r" \left(")
    assert factor == r"\frac{1}{200}" and body.count(r"\rVert_F^{2}") == 7


def test_the_penalised_loss_lines_stay_inside_the_margin(tmp_path):
    # Found: a penalised network's "L = …, penalty P = …" and its "∂P/∂W = λW" each sat on one
    # display line (a TransformerBlock with l2: 195 pt and 235 pt past an article's margin); now
    # folded rows of an align* and of a gather*.  pdflatex reports every overfull line.
    import shutil
    if not shutil.which("pdflatex"):
        pytest.skip("pdflatex is needed to measure a page")
    _, _, d = _penalty_terms()
    tex = d.latex(**QUICK)
    assert pdflatex_problems(tex, tmp_path) == ([], [])
    assert r"\text{penalty } P &= \frac{1}{200} \lVert W_{1} \rVert_F^{2}" in tex
