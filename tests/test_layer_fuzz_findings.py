"""The layer-family fuzzer's findings (random ``Sequential`` stacks of the 0.3 layers against
the same network written by hand with ``torch.nn.functional``, float64, relative 1e-8).

Each network here is written twice: with symback's builders, and in the test with torch
primitives (``layer_norm``, ``scaled_dot_product_attention``, ``batch_norm``,
``gelu(approximate="tanh")``); torch's autograd of the hand-written one is the oracle.
"""
import warnings

import numpy as np
import pytest

import symback as sb

torch = pytest.importorskip("torch")
F = torch.nn.functional

RTOL = 1e-8
BACKENDS = ["numpy", "torch"]


def _close(got, want, what):
    got = np.asarray(got.detach() if hasattr(got, "detach") else got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, want {want.shape}"
    scale = max(float(np.abs(want).max(initial=0.0)), 1e-3)
    err = float(np.abs(got - want).max(initial=0.0)) / scale
    assert err <= RTOL, f"{what}: relative error {err:.3g}"


def _tensors(params):
    return {k: torch.tensor(np.asarray(v), dtype=torch.float64, requires_grad=True) for k, v in params.items()}


def _random_params(model, rng):
    return {k: rng.normal(size=np.shape(v)) * 0.7 + (1.0 if k.startswith("gamma") else 0.0)
            for k, v in model.init(0).items()}


def _ln(A, P, l):
    return F.layer_norm(A, (A.shape[-1],), P[f"gamma{l}"].reshape(-1), P[f"beta{l}"].reshape(-1), eps=1e-5)


def _attention(A, P, l, causal):
    Q, K, V = (A @ P[f"W{c}{l}"] for c in "qkv")
    return F.scaled_dot_product_attention(Q, K, V, is_causal=causal) @ P[f"Wo{l}"]


def _dense(A, P, l, act=None):
    Z = A @ P[f"W{l}"] + P[f"b{l}"].reshape(-1)
    return Z if act is None else act(Z)


def _block(A, P, l, causal):
    """A pre-LN transformer block, one head, its parameters numbered l … l + 4."""
    H = A + _attention(_ln(A, P, l), P, l + 1, causal)
    return H + _dense(_dense(_ln(H, P, l + 2), P, l + 3, lambda z: F.gelu(z, approximate="tanh")), P, l + 4)


def _bn(A, P, l):
    return F.batch_norm(A, None, None, P[f"gamma{l}"].reshape(-1), P[f"beta{l}"].reshape(-1),
                        training=True, eps=1e-5)


# (builder, X's shape, forward written with torch: X, P -> Ŷ); the output layer is identity + mse
NESTED = {
    "residual of a residual": (
        lambda: sb.Sequential(sb.Residual(sb.Residual(sb.Dense(3, "tanh"))), sb.Dense(2),
                              inputs=(2, 3), loss="mse"),
        (3, 2, 3),
        lambda X, P: _dense((lambda H: H + (H + torch.tanh(_dense(H, P, 1))))(X), P, 2)),
    "residual of a transformer block": (
        lambda: sb.Sequential(sb.Residual(sb.TransformerBlock(heads=1, hidden=2, causal=True)), sb.Dense(2),
                              inputs=(3, 2), loss="mse"),
        (2, 3, 2),
        lambda X, P: _dense(X + _block(X, P, 1, True), P, 6)),
    "residual of residuals with batch norm": (
        lambda: sb.Sequential(sb.Residual(sb.Residual(sb.Dense(2, "sigmoid")), sb.Residual(sb.BatchNorm())),
                              sb.Dense(1), inputs=2, loss="mse"),
        (4, 2),
        lambda X, P: _dense(X + (lambda H: H + _bn(H, P, 2))(X + torch.sigmoid(_dense(X, P, 1))), P, 3)),
}


@pytest.mark.parametrize("case", list(NESTED))
def test_a_residual_ending_in_a_residual_builds_and_matches_torch(case):
    """A Residual whose last layer is itself a Residual (``Residual(Residual(Dense))``, or a
    ``TransformerBlock``, whose last part is one) named its sum H{l} after the last parameter
    layer l, as the inner one had: the valid network was refused with "duplicate name 'H1':
    already defined as a node".  Now the outer sum gets a fresh name; loss, every gradient and
    the VJP agree with torch's autograd of the same network written by hand."""
    build, shape, forward = NESTED[case]
    net = build()
    d = sb.derive(net)
    rng = np.random.default_rng(7)
    X = rng.normal(size=shape)
    model = sb.compile(d)
    params = _random_params(model, rng)
    P, Xt = _tensors(params), torch.tensor(X, requires_grad=True)
    Yhat = forward(Xt, P)
    Y = rng.normal(size=tuple(Yhat.shape))
    G = rng.normal(size=tuple(Yhat.shape))
    L = ((Yhat - torch.tensor(Y)) ** 2).sum() / shape[0]
    names = list(model.params)
    assert sorted(names) == sorted(P)
    gL = torch.autograd.grad(L, [P[k] for k in names], retain_graph=True)
    gV = torch.autograd.grad((Yhat * torch.tensor(G)).sum(), [Xt] + [P[k] for k in names])
    for backend in BACKENDS:
        m = model if backend == "numpy" else sb.compile(d, backend=backend)
        _close(m.loss(X, Y, params), L.item(), f"{backend} loss")
        grads = m.grad(X, Y, params)
        for k, g in zip(names, gL):
            _close(grads[k], g, f"{backend} ∂L/∂{k}")
        dX, dP = m.vjp(X, params, G)
        _close(dX, gV[0], f"{backend} vjp X")
        for k, g in zip(names, gV[1:]):
            _close(dP[k], g, f"{backend} vjp {k}")


def test_attention_layer_compiles_for_torch_without_a_deprecated_sympy_product():
    """Lowering a softmax's VJP for the torch (and JAX) printers looked for its closed form
    P ⊙ (D − (D ⊙ P)𝟏𝟏ᵀ) by multiplying the non-matrix args of every candidate term, also of a
    MatrixSymbol, whose args hold its name (a ``Str``): SymPy's "non-Expr arguments in Mul"
    deprecation (an error in a coming SymPy).  With that warning made an error, compiling
    ``Residual(LayerNorm(), Attention())`` on a one-row sample failed; now it compiles, and
    its VJP and gradients agree with torch's autograd."""
    from sympy.utilities.exceptions import SymPyDeprecationWarning
    net = sb.Sequential(sb.Residual(sb.LayerNorm(), sb.Attention(heads=1)), sb.Dense(2, "swish"),
                        inputs=(1, 3), loss="mse")
    d = sb.derive(net)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SymPyDeprecationWarning)
        m = sb.compile(d, backend="torch")
    rng = np.random.default_rng(3)
    params = _random_params(m, rng)
    X, G, Y = rng.normal(size=(2, 1, 3)), rng.normal(size=(2, 1, 2)), rng.normal(size=(2, 1, 2))
    P, Xt = _tensors(params), torch.tensor(X, requires_grad=True)
    Yhat = F.silu(_dense(Xt + _attention(_ln(Xt, P, 1), P, 2, False), P, 3))
    names = list(m.params)
    gV = torch.autograd.grad((Yhat * torch.tensor(G)).sum(), [Xt] + [P[k] for k in names], retain_graph=True)
    gL = torch.autograd.grad(((Yhat - torch.tensor(Y)) ** 2).sum() / 2, [P[k] for k in names])
    dX, dP = m.vjp(X, params, G)
    _close(dX, gV[0], "vjp X")
    grads = m.grad(X, Y, params)
    for k, gv, gl in zip(names, gV[1:], gL):
        _close(dP[k], gv, f"vjp {k}")
        _close(grads[k], gl, f"∂L/∂{k}")
