"""The document's attention section (multi-head attention head by head, layer norm row by row):
it appears, the certificate checks every head's instance of each line and catches a planted
false one, and the closed forms it prints, evaluated in turn from δ_Att alone, give the
gradients PyTorch autograd gives for ``F.scaled_dot_product_attention(..., is_causal=True)``
and ``F.layer_norm`` of the same network written here.
"""
from __future__ import annotations

import re

import numpy as np
import pytest
import sympy as sp

import symback as sb
from symback.document import context
from symback.document.analysis import value_of
from symback.document.certificate import CertificateError, certify
from symback.engine import delta
from symback.printing import Partial

torch = pytest.importorskip("torch")
F = torch.nn.functional
T, D, HEADS = 3, 4, 2


@pytest.fixture(scope="module")
def doc():
    net = sb.Sequential(sb.Dense(D), sb.LayerNorm(), sb.Attention(heads=HEADS, causal=True), sb.Dense(2),
                        inputs=(T, 2), loss="mse")
    d = sb.derive(net)
    return d, context(d, figure=False, vanishing=False, verify=False, cost=False)


def test_the_per_head_section_appears_and_is_certified(doc):
    d, ctx = doc
    text = d.latex(figure=False, vanishing=False, verify=False, cost=False)
    assert r"\section{Attention, head by head}" in text
    for line in (r"\delta_{S_{3,h}} &= P_{3,h} \odot", r"\delta_{V_{3,h}} &= P_{3,h}^{\top} \delta_{O_{3,h}}",
                 r"\operatorname{softmax}_{\mathrm{causal}}\left(S_{3,h}\right)", r"\operatorname{mean}",
                 # −(… ⊙ P_{3,1}) 𝟏𝟏ᵀ: was printed −(…) ⊙ P_{3,1} 𝟏𝟏ᵀ, read as (…) ⊙ (P_{3,1} 𝟏𝟏ᵀ)
                 r"\odot P_{3,1}\right) \mathbf{1}\mathbf{1}^{\top}"):
        assert line in text
    assert not re.search(r"\\odot [^\s()]+ \\mathbf\{1\}", text), "a ⊙ operand beside 𝟏 without brackets"
    layer = ctx["attention"]["layers"][0]
    # each generic line stands for one checked instance per head, none left out
    assert all(len(r["instances"]) == HEADS for r in layer["forward"] + layer["backward"])
    assert len(ctx["attention"]["norms"][0]["row"]["instances"]) == T
    report = certify(d, ctx)
    assert report["lines"] >= HEADS * (len(layer["forward"]) + len(layer["backward"])) + T


def test_one_head_without_mask_and_markdown():
    net = sb.Sequential(sb.Attention(heads=1), sb.Dense(3), inputs=(3, 3), loss="mse")
    text = sb.derive(net).markdown(figure=False, vanishing=False, verify=False, cost=False)
    assert "## Attention, head by head" in text and "1 head\n" in text
    assert r"P_{1} &= \operatorname{softmax}\left(S_{1}\right)" in text     # no mask, no head index
    assert r"\delta_{Q_{1}} &= \frac{1}{\sqrt{d_{k}}} \delta_{S_{1}} K_{1}" in text


def test_a_planted_false_line_is_caught(doc):
    d, ctx = doc
    row = ctx["attention"]["layers"][0]["backward"][3]              # δ_S, head 2's instance
    chain = row["instances"][1]["sympy"]["chain"]
    P, dP = chain[1].args[0], chain[1].args[1].args[0]
    kept = list(chain)
    try:
        chain[2] = sp.HadamardProduct(P, dP)                        # the rowsum term dropped
        with pytest.raises(CertificateError, match=r"backward\[3\]\.instances\[1\]"):
            certify(d, ctx)
    finally:
        chain[:] = kept
    norm = ctx["attention"]["norms"][0]["row"]["instances"][2]["sympy"]["chain"]
    kept = list(norm)
    try:
        norm[1] = norm[1].args[0] * norm[1].args[1].args[0]         # σ⁻¹ δ_ĥ: the means dropped
        with pytest.raises(CertificateError):
            certify(d, ctx)
    finally:
        norm[:] = kept


def _evaluate_rows(rows, env):
    """Each row's first right side evaluated at env, its value stored under the row's left side."""
    for r in rows:
        for c in r.get("instances") or [r]:
            lhs, rhs = c["sympy"]["chain"][0], c["sympy"]["chain"][1]
            # a gradient ∂L/∂W is kept apart from W's own value
            env[("grad", lhs.args[1]) if isinstance(lhs, Partial) else lhs] = value_of(rhs, env, 1)


def test_the_closed_forms_give_torch_autograd_gradients(doc):
    d, ctx = doc
    g, rng = d.graph, np.random.default_rng(3)
    A, Wq, Wk, Wv, Wo, G = (rng.normal(size=s) for s in [(T, D)] + [(D, D)] * 4 + [(T, D)])
    t = {k: torch.tensor(v, requires_grad=True) for k, v in dict(A=A, Wq=Wq, Wk=Wk, Wv=Wv, Wo=Wo).items()}
    split = lambda z: z.reshape(T, HEADS, D // HEADS).transpose(0, 1)       # noqa: E731 - heads first
    out = F.scaled_dot_product_attention(split(t["A"] @ t["Wq"]), split(t["A"] @ t["Wk"]),
                                         split(t["A"] @ t["Wv"]), is_causal=True)
    att = out.transpose(0, 1).reshape(T, D) @ t["Wo"]
    (att * torch.tensor(G)).sum().backward()
    layer = ctx["attention"]["layers"][0]
    l = layer["layer"]
    env = {g.symbol(n): v for n, v in ((f"N{l - 1}", A), (f"Wq{l}", Wq), (f"Wk{l}", Wk), (f"Wv{l}", Wv),
                                         (f"Wo{l}", Wo), (f"Q{l}", A @ Wq), (f"K{l}", A @ Wk), (f"V{l}", A @ Wv))}
    env[delta(g, f"Att{l}")] = G
    env.update({k: float(v) for k, v in ctx["sympy"]["names"].items() if isinstance(k, sp.Symbol)})   # d_k
    _evaluate_rows(layer["forward"] + layer["joined"], env)
    assert np.abs(env[g.symbol(f"Att{l}")] - att.detach().numpy()).max() < 1e-12
    _evaluate_rows(layer["backward"] + layer["gathered"] + layer["grads"], env)
    for name, key in (("Wq", "Wq"), ("Wk", "Wk"), ("Wv", "Wv"), ("Wo", "Wo")):
        got, want = env[("grad", g.symbol(f"{name}{l}"))], t[key].grad.numpy()
        assert np.abs(got - want).max() <= 1e-12 * max(1.0, np.abs(want).max()), name


def test_the_layer_norm_row_gives_torch_autograd_gradient(doc):
    d, ctx = doc
    g, rng = d.graph, np.random.default_rng(4)
    norm = ctx["attention"]["norms"][0]
    H, gamma, beta, G = rng.normal(size=(T, D)), rng.normal(size=(1, D)), rng.normal(size=(1, D)), rng.normal(size=(T, D))
    h = torch.tensor(H, requires_grad=True)
    (F.layer_norm(h, (D,), torch.tensor(gamma[0]), torch.tensor(beta[0]), eps=1e-5) * torch.tensor(G)).sum().backward()
    hat_name = next(n for n in g.node_names if n.startswith("Hhat"))
    hat = (H - H.mean(1, keepdims=True)) / np.sqrt(H.var(1, keepdims=True) + 1e-5)
    env = {g.symbol(hat_name): hat, g.expr(hat_name).arg: H, delta(g, hat_name): G * gamma}
    rows = np.vstack([value_of(c["sympy"]["chain"][1], env, 1) for c in norm["row"]["instances"]])
    assert np.abs(rows - h.grad.numpy()).max() <= 1e-12 * max(1.0, np.abs(h.grad.numpy()).max())


@pytest.mark.parametrize("causal", [True, False])
def test_the_closed_forms_are_proved_equal_to_the_engine(causal):
    from symback.document.attention_proof import prove_attention
    assert prove_attention(causal)


def test_the_proof_rejects_a_false_closed_form():
    from symback.document.attention_proof import check, small_section
    from symback.errors import DefinitionError
    d, names, part = small_section(True)
    chain = part["layers"][0]["backward"][4]["instances"][0]["sympy"]["chain"]      # δ_Q of head 1
    chain[1] = chain[1].args[1] * chain[1].args[2]                  # the 1/√d_k dropped
    with pytest.raises(DefinitionError, match=r"backward\[4\]"):
        check(d, names, part)


def test_attention_layers_of_different_head_widths_each_have_their_own_d_k():
    """Two attention layers whose heads differ in width (4, then 2 in each of two heads): with one
    d_k for the whole document, bound to the last layer's width, the first layer's scores line
    was false; the certificate caught it and the document raised instead of being written.  Each
    layer's lines now use its own d_{k,l}, and the scores line evaluates to Q Kᵀ/√4 here."""
    net = sb.Sequential(sb.Attention(heads=1), sb.Attention(heads=2), sb.Dense(2), inputs=(3, 4), loss="mse")
    d = sb.derive(net)
    options = dict(figure=False, vanishing=False, verify=False, cost=False)
    text = d.latex(**options)                                   # certified before it is returned
    assert r"One head, of width $d_{k,1} = 4$." in text
    assert r"its own $d_{k,2} = 2$ columns" in text
    assert r"\frac{1}{\sqrt{d_{k,1}}}" in text and r"\frac{1}{\sqrt{d_{k,2}}}" in text
    assert "## Attention, head by head" in d.markdown(**options)
    ctx = context(d, **options)
    names = ctx["sympy"]["names"]
    assert names[sp.Symbol("d_{k,1}", positive=True)] == 4 and names[sp.Symbol("d_{k,2}", positive=True)] == 2
    g, rng = d.graph, np.random.default_rng(5)
    X, Wq, Wk = rng.normal(size=(3, 4)), rng.normal(size=(4, 4)), rng.normal(size=(4, 4))
    env = {g.symbol("Q1"): X @ Wq, g.symbol("K1"): X @ Wk, sp.Symbol("d_{k,1}", positive=True): 4.0}
    scores = ctx["attention"]["layers"][0]["forward"][0]["instances"][0]["sympy"]["chain"]
    env.update({scores[1].args[1]: X @ Wq, scores[1].args[2].arg: X @ Wk})   # Q_1, K_1 of the line
    assert np.allclose(value_of(scores[1], env, 1), (X @ Wq) @ (X @ Wk).T / 2.0, rtol=1e-12)
