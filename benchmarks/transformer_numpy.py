"""A hand-written NumPy training step of one pre-LN transformer block and a Dense output layer.

The peer of symback-NumPy in ``benchmarks/transformer.py``: the network of
``sb.Sequential(sb.TransformerBlock(heads, hidden, causal=True), sb.Dense(d_out),
inputs=(T, d), loss="mse")``, forward and backward typed by hand the way an expert
writes them for speed:

* Q, K and V from one GEMM with the three weights side by side ([Wq Wk Wv], d × 3d),
  and their gradients from one GEMM back;
* the heads as a (n, heads, T, d/heads) view (one batched matmul for all heads);
  the concatenated head outputs times Wo as one (n·T) × d GEMM;
* products with a parameter as (n·T) × q GEMMs, the causal mask an additive −∞ matrix
  made once, the softmax and layer-norm backward in their closed forms;
* the learning rate and 1/n folded into the output δ, arrays updated in place.

Benchmark code only: symback derives its own backward (no derivative is typed in
``symback/``); this file is an independent implementation to time it against, and
``check_against_torch`` tests it against PyTorch autograd before any timing.
"""
from __future__ import annotations

import numpy as np

EPS = 1e-5
#: √(2/π) and the cubic coefficient of GELU's tanh form (torch's approximate="tanh")
GELU_C, GELU_A = float(np.sqrt(2.0 / np.pi)), 0.044715
#: parameter names in symback's order for this network
NAMES = ("gamma1", "beta1", "Wq2", "Wk2", "Wv2", "Wo2", "gamma3", "beta3",
         "W4", "b4", "W5", "b5", "W6", "b6")


def _mm(a, w):
    """(n, T, q) @ (q, c) as one (n·T) × q GEMM."""
    return (a.reshape(-1, a.shape[-1]) @ w).reshape(a.shape[:-1] + (w.shape[-1],))


def _wt(a, b):
    """Σ over samples and rows of aᵀ b: the gradient of a weight, one GEMM."""
    return a.reshape(-1, a.shape[-1]).T @ b.reshape(-1, b.shape[-1])


def _layer_norm(x, gamma, beta):
    """Row-wise layer norm; returns the output, x̂ and 1/σ (kept for the backward)."""
    xc = x - x.mean(axis=-1, keepdims=True)
    rstd = 1.0 / np.sqrt(np.einsum("ntd,ntd->nt", xc, xc)[..., None] / x.shape[-1] + EPS)
    xc *= rstd
    return xc * gamma + beta, xc, rstd


def _layer_norm_back(dy, xhat, rstd, gamma):
    """(dx, dγ, dβ) of the row-wise layer norm: (1/σ)(δ̂ − mean δ̂ − x̂ ⊙ mean(δ̂ ⊙ x̂))."""
    dgamma = np.einsum("ntd,ntd->d", dy, xhat)[None]
    dbeta = dy.sum(axis=(0, 1))[None]
    g = dy * gamma
    d = g.shape[-1]
    dx = g - g.sum(axis=-1, keepdims=True) / d
    dx -= xhat * (np.einsum("ntd,ntd->nt", g, xhat)[..., None] / d)
    dx *= rstd
    return dx, dgamma, dbeta


class Block:
    """The hand-written step; ``step(X, Y, params, lr)`` updates params in place, returns L."""

    def __init__(self, T, d, heads, causal=True, dtype="float64"):
        self.T, self.d, self.heads, self.w = T, d, heads, d // heads
        self.dtype = np.dtype(dtype)
        mask = np.triu(np.ones((T, T), dtype=bool), 1) if causal else np.zeros((T, T), dtype=bool)
        self.mask = np.where(mask, -np.inf, 0.0).astype(self.dtype)   # added to the scores
        self.scale = 1.0 / np.sqrt(self.w)

    def params_in(self, params):
        """symback-named parameters → this step's state (Wq, Wk, Wv as one d × 3d matrix)."""
        s = {k: np.array(params[k], dtype=self.dtype) for k in NAMES}
        s["Wqkv"] = np.concatenate([s.pop("Wq2"), s.pop("Wk2"), s.pop("Wv2")], axis=1)
        return s

    def params_out(self, s):
        """The state back under symback's names."""
        out = {k: v.copy() for k, v in s.items() if k != "Wqkv"}
        out["Wq2"], out["Wk2"], out["Wv2"] = np.split(s["Wqkv"], 3, axis=1)
        return out

    def _heads(self, a):
        """(n, T, d) → (n, heads, T, d/heads) view."""
        n = a.shape[0]
        return a.reshape(n, self.T, self.heads, self.w).transpose(0, 2, 1, 3)

    def value_and_grad(self, X, Y, s, lr=1.0):
        """L and {name: lr · ∂L/∂name} (lr folded into the output δ)."""
        n, T, d = X.shape
        # ---- forward
        N1, xh1, rs1 = _layer_norm(X, s["gamma1"], s["beta1"])
        QKV = _mm(N1, s["Wqkv"])
        Q, K, V = (self._heads(QKV[..., i * d:(i + 1) * d]) for i in range(3))
        P = Q @ K.transpose(0, 1, 3, 2)
        P *= self.scale
        P += self.mask
        P -= P.max(axis=-1, keepdims=True)
        np.exp(P, out=P)
        P /= P.sum(axis=-1, keepdims=True)
        O = (P @ V).transpose(0, 2, 1, 3).reshape(n, T, d)       # heads concatenated
        H2 = _mm(O, s["Wo2"])
        H2 += X
        N3, xh3, rs3 = _layer_norm(H2, s["gamma3"], s["beta3"])
        Z4 = _mm(N3, s["W4"])
        Z4 += s["b4"]
        Z2 = Z4 * Z4
        th = np.tanh(GELU_C * Z4 * (1.0 + GELU_A * Z2))
        A4 = 0.5 * Z4 * (1.0 + th)
        H5 = _mm(A4, s["W5"])
        H5 += s["b5"]
        H5 += H2
        E = _mm(H5, s["W6"])
        E += s["b6"]
        E -= Y
        value = float(np.einsum("ntd,ntd->", E, E)) / n
        # ---- backward (δ of the output: 2(Ŷ − Y)/n, times lr)
        E *= 2.0 * lr / n
        g = {"b6": E.sum(axis=(0, 1))[None], "W6": _wt(H5, E)}
        dH5 = _mm(E, s["W6"].T)
        g["b5"], g["W5"] = dH5.sum(axis=(0, 1))[None], _wt(A4, dH5)
        dZ4 = _mm(dH5, s["W5"].T)
        dZ4 *= 0.5 * (1.0 + th) + 0.5 * Z4 * (1.0 - th * th) * GELU_C * (1.0 + 3 * GELU_A * Z2)
        g["b4"], g["W4"] = dZ4.sum(axis=(0, 1))[None], _wt(N3, dZ4)
        dH2, g["gamma3"], g["beta3"] = _layer_norm_back(_mm(dZ4, s["W4"].T), xh3, rs3, s["gamma3"])
        dH2 += dH5                                              # the residual path
        g["Wo2"] = _wt(O, dH2)
        dO = self._heads(_mm(dH2, s["Wo2"].T))
        dV = P.transpose(0, 1, 3, 2) @ dO
        dP = dO @ V.transpose(0, 1, 3, 2)
        dP -= np.einsum("nhij,nhij->nhi", dP, P)[..., None]   # softmax: P ⊙ (δP − rowsum(δP ⊙ P))
        dP *= P
        dP *= self.scale
        dQKV = np.empty((n, T, 3 * d), dtype=X.dtype)
        for i, part in enumerate((dP @ K, dP.transpose(0, 1, 3, 2) @ Q, dV)):
            dQKV[..., i * d:(i + 1) * d] = part.transpose(0, 2, 1, 3).reshape(n, T, d)
        g["Wqkv"] = _wt(N1, dQKV)
        dX, g["gamma1"], g["beta1"] = _layer_norm_back(_mm(dQKV, s["Wqkv"].T), xh1, rs1, s["gamma1"])
        return value, g

    def step(self, X, Y, s, lr):
        """One SGD step in place; returns the loss before it."""
        value, g = self.value_and_grad(X, Y, s, lr)
        for k, v in g.items():
            s[k] -= v
        return value


def torch_value_and_grad(X, Y, params, heads, causal=True):
    """L and {name: ∂L/∂name} by PyTorch autograd of the same network (the oracle)."""
    import torch
    import torch.nn.functional as F
    t = {k: torch.tensor(np.asarray(v, dtype=np.float64), requires_grad=True) for k, v in params.items()}
    L = torch_loss(F, torch.tensor(X, dtype=torch.float64), torch.tensor(Y, dtype=torch.float64),
                   [t[k] for k in NAMES], heads, causal)
    L.backward()
    return L.item(), {k: v.grad.numpy() for k, v in t.items()}


def torch_loss(F, x, y, p, heads, causal=True):
    """The network's batch loss in torch.nn.functional, parameters p in NAMES order."""
    g1, b1, Wq, Wk, Wv, Wo, g3, b3, W4, b4, W5, b5, W6, b6 = p
    n, T, d = x.shape
    split = lambda z: z.view(n, T, heads, d // heads).transpose(1, 2)    # noqa: E731
    a = F.layer_norm(x, (d,), g1[0], b1[0], eps=EPS)
    o = F.scaled_dot_product_attention(split(a @ Wq), split(a @ Wk), split(a @ Wv), is_causal=causal)
    h = x + o.transpose(1, 2).reshape(n, T, d) @ Wo
    a = F.layer_norm(h, (d,), g3[0], b3[0], eps=EPS)
    h = h + F.gelu(a @ W4 + b4, approximate="tanh") @ W5 + b5
    e = h @ W6 + b6 - y
    return (e * e).sum() / n


def check_against_torch(T=8, d=8, heads=2, hidden=12, d_out=5, n=3, seed=0, rtol=1e-8):
    """Assert the hand-written loss and gradients equal torch autograd's (float64, relative rtol)."""
    rng = np.random.default_rng(seed)
    shapes = {"gamma1": (1, d), "beta1": (1, d), "Wq2": (d, d), "Wk2": (d, d), "Wv2": (d, d),
              "Wo2": (d, d), "gamma3": (1, d), "beta3": (1, d), "W4": (d, hidden), "b4": (1, hidden),
              "W5": (hidden, d), "b5": (1, d), "W6": (d, d_out), "b6": (1, d_out)}
    params = {k: rng.normal(size=v) * 0.5 + (k.startswith("gamma")) for k, v in shapes.items()}
    X, Y = rng.normal(size=(n, T, d)), rng.normal(size=(n, T, d_out))
    block = Block(T, d, heads)
    value, g = block.value_and_grad(X, Y, block.params_in(params))
    ref_value, ref = torch_value_and_grad(X, Y, params, heads)
    g["Wq2"], g["Wk2"], g["Wv2"] = np.split(g.pop("Wqkv"), 3, axis=1)
    assert abs(value - ref_value) <= rtol * abs(ref_value), (value, ref_value)
    for k in NAMES:
        err = float(np.abs(g[k] - ref[k]).max()) / max(1.0, float(np.abs(ref[k]).max()))
        assert err <= rtol, (k, err)
    return True


if __name__ == "__main__":
    print("hand-written NumPy block equals torch autograd:", check_against_torch())
