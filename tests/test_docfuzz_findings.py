"""The layer-network document fuzzer's findings (random small ``Sequential``/rnn/lstm/gru
networks, every template and notation, with and without a worked example).

Oracles: torch autograd of the same network written in the test with ``torch`` primitives
(what the true gradient is), and the certificate's own numeric check inside ``render``.
"""
import numpy as np
import pytest

import symback as sb

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
