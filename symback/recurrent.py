"""Gated recurrent builders: LSTM and GRU, unrolled over time as matrix Graphs.

Like :class:`~symback.nn.RNN` they only write nodes; the engine derives every
gate's vector-Jacobian product.  Each gate is a node of its own (its
pre-activation too), so every step the engine differentiates is a product,
a sum, a Hadamard product of named matrices or f(named matrix): the forms
SymPy's matrix calculus takes reliably, and derives once per kind.
h_0 = c_0 = 0, so the first step has no U terms (and the LSTM no forget gate
there, the GRU no reset gate: they would multiply zero).
"""
from __future__ import annotations

from .functions import sigmoid, tanh
from .graph import Graph
from .matrix import BATCH, hadamard, ones
from .nn import recurrent_readout, recurrent_sizes

__all__ = ["LSTM", "GRU", "lstm", "gru"]


class _Gated(Graph):
    """Shared frame of the gated builders: sizes, the input X and its per-step slices."""

    def __init__(self, inputs, hidden, outputs, steps, output, loss):
        super().__init__()
        d, self.hidden, self.outputs, T, self.out, self.lf = recurrent_sizes(
            self, inputs, hidden, outputs, steps, output, loss)
        X = self.inputs("X", shape=(BATCH, T * d))
        self._x = [X[:, t * d:(t + 1) * d] for t in range(T)]
        self._d = d

    def _weights(self, gates: str):
        """W_q (inputs×hidden), U_q (hidden×hidden), b_q (1×hidden) for each gate letter q."""
        d, n = self._d, self.hidden
        names = " ".join(f"{k}_{q}" for q in gates for k in "WUb")
        syms = self.params(names, shape=[(d, n), (n, n), (1, n)] * len(gates))
        return {q: syms[3 * j:3 * j + 3] for j, q in enumerate(gates)}

    def _gate(self, name, f, x, h, weights, recurrent=None):
        """Node ``name`` = f(x W + r U + 1 b), r = h (or `recurrent`), its argument the node
        ``z<name>``; at the first step (h None) there is no U term."""
        W, U, b = weights
        r = h if recurrent is None else recurrent
        pre = x @ W + ones(BATCH) @ b if h is None else x @ W + r @ U + ones(BATCH) @ b
        return self.node(name, f(self.node(f"z{name}", pre)))

    def _finish(self, h, weights, reduction, l2):
        recurrent_readout(self, h, self.outputs, self.out, self.lf, reduction, l2,
                          [w for W, U, _ in weights.values() for w in (W, U)])


class LSTM(_Gated):
    """A long short-term memory network unrolled over `steps` steps (DESIGN.md, contract 0.3).

    X is m × (steps·inputs), x_t its t-th block of `inputs` columns; h_0 = c_0 = 0 and
    i_t = σ(x_t W_i + h_{t−1} U_i + 1 b_i), f_t, o_t likewise with σ, g_t with tanh,
    c_t = f_t ⊙ c_{t−1} + i_t ⊙ g_t, h_t = o_t ⊙ tanh(c_t), Ŷ = out(h_T W_y + 1 b_y).
    Nodes per step: x{t}, i{t}, f{t} (from t = 2), g{t}, o{t} (each with its z…), c{t},
    tc{t} = tanh(c{t}), h{t}.  l2 = λ adds λ/2 Σ ‖W‖²_F over every W_*, U_* and W_y.
    """

    def __init__(self, inputs: int, hidden: int, outputs: int, steps: int, output="identity",
                 loss="mse", reduction="mean", l2=0.0):
        super().__init__(inputs, hidden, outputs, steps, output, loss)
        w = self._weights("ifgo")
        self.cell, self.cells = "LSTM", []       # the cell states c_t: the documents' BPTT keeps their δs
        h = c = None
        for t, xs in enumerate(self._x, start=1):
            x = self.node(f"x{t}", xs)
            i = self._gate(f"i{t}", sigmoid, x, h, w["i"])
            g = self._gate(f"g{t}", tanh, x, h, w["g"])
            o = self._gate(f"o{t}", sigmoid, x, h, w["o"])
            if c is None:
                c = self.node(f"c{t}", hadamard(i, g))
            else:
                f = self._gate(f"f{t}", sigmoid, x, h, w["f"])
                c = self.node(f"c{t}", hadamard(f, c) + hadamard(i, g))
            h = self.node(f"h{t}", hadamard(o, self.node(f"tc{t}", tanh(c))))
            self.states.append(h.name)
            self.cells.append(c.name)
        self._finish(h, w, reduction, l2)


class GRU(_Gated):
    """A gated recurrent unit network unrolled over `steps` steps (DESIGN.md, contract 0.3).

    h_0 = 0; r_t = σ(x_t W_r + h_{t−1} U_r + 1 b_r), z_t = σ(x_t W_z + h_{t−1} U_z + 1 b_z),
    n_t = tanh(x_t W_n + (r_t ⊙ h_{t−1}) U_n + 1 b_n), h_t = (1 − z_t) ⊙ n_t + z_t ⊙ h_{t−1},
    Ŷ = out(h_T W_y + 1 b_y).  Nodes per step: x{t}, r{t} and rh{t} = r_t ⊙ h_{t−1} (from
    t = 2), z{t}, n{t} (each gate with its z…), zc{t} = 1 − z_t, h{t}.
    """

    def __init__(self, inputs: int, hidden: int, outputs: int, steps: int, output="identity",
                 loss="mse", reduction="mean", l2=0.0):
        super().__init__(inputs, hidden, outputs, steps, output, loss)
        w = self._weights("rzn")
        self.cell = "GRU"
        h = None
        for t, xs in enumerate(self._x, start=1):
            x = self.node(f"x{t}", xs)
            z = self._gate(f"z{t}", sigmoid, x, h, w["z"])
            rh = None if h is None else self.node(
                f"rh{t}", hadamard(self._gate(f"r{t}", sigmoid, x, h, w["r"]), h))
            n = self._gate(f"n{t}", tanh, x, h, w["n"], recurrent=rh)
            zc = self.node(f"zc{t}", ones(BATCH, self.hidden) - z)
            h = self.node(f"h{t}", hadamard(zc, n) if h is None else hadamard(zc, n) + hadamard(z, h))
            self.states.append(h.name)
        self._finish(h, w, reduction, l2)


def lstm(inputs: int, hidden: int, outputs: int, steps: int, output="identity", loss="mse",
         reduction="mean", l2=0.0) -> LSTM:
    """An LSTM unrolled over `steps` steps (see :class:`LSTM`); parameters W_i U_i b_i W_f U_f b_f
    W_g U_g b_g W_o U_o b_o W_y b_y."""
    return LSTM(inputs, hidden, outputs, steps, output, loss, reduction, l2)


def gru(inputs: int, hidden: int, outputs: int, steps: int, output="identity", loss="mse",
        reduction="mean", l2=0.0) -> GRU:
    """A GRU unrolled over `steps` steps (see :class:`GRU`); parameters W_r U_r b_r W_z U_z b_z
    W_n U_n b_n W_y b_y."""
    return GRU(inputs, hidden, outputs, steps, output, loss, reduction, l2)
