"""Seed 004: the worked example, the punchline of a three-layer network, and vanishing gradients.

Worked example: x = 3, w1 = 0.1, identity activation, y = 1, L = (yhat - y)^2, eta = 1:
    L = (1 - 0.3)^2 = 0.49,   dL/dw1 = 2 (yhat - y) x = -4.2,   w1 <- 0.1 + 4.2 = 4.3
Punchline (sigmoid hidden layers, the notes' J = 1/2 (yhat - y)^2):
    dJ/dW3 = (yhat - y) a3
    dJ/dW2 = (yhat - y) W3 sigma'(z3) a2
    dJ/dW1 = (yhat - y) W3 sigma'(z3) W2 sigma'(z2) X,     sigma' = sigma (1 - sigma) <= 1/4
(the notes number the layers' inputs z2, z3; symback's Z1, Z2 are the same matrices).
Run: python examples/seed004_worked_example.py
"""
from pathlib import Path

import numpy as np
import sympy as sp
from sympy.calculus.util import maximum

import symback as sb
from symback.spec import read_spec

HERE = Path(__file__).resolve().parent

# ---- the worked example, exactly (SymPy) and in floating point (compiled NumPy)
spec = read_spec(HERE / "seed004.toml")
d = sb.derive(spec.graph)
ev = d.evaluate(spec.values)
L, grad = ev["forward"]["C"], ev["gradient"]["w1"]
w_new = spec.values["w1"] - spec.lr * grad
print(f"L = {L} = {float(L)},  dL/dw1 = {grad} = {float(grad)},  w1_new = {w_new} = {float(w_new)}")
assert (L, grad, w_new) == (sp.Rational(49, 100), sp.Rational(-21, 5), sp.Rational(43, 10))

model = sb.compile(d)
params = {"w1": np.array(0.1)}
loss = model.step(np.array([[3.0]]), np.array([[1.0]]), params, lr=1.0)
assert np.isclose(loss, 0.49) and np.isclose(params["w1"], 4.3)
print(f"compiled step: loss {loss:.2f}, w1 -> {float(params['w1']):.1f}")

# ---- the punchline, in chain order
net = sb.mlp([3, 4, 4, 1], activation="sigmoid", output="identity", loss="half_mse")
dn = sb.derive(net)
(path,) = dn.chain("W1")
print("dJ/dW1 =", " . ".join(sp.sstr(f.expr) for f in path))
# from the loss back: L -> C -> Yhat -> A2 -> Z2 -> A1 -> Z1 -> W1, each edge's factor
# the vector-Jacobian product SymPy derived: delta_Yhat W3^T, sigma'(Z2) * delta_A2, ...
assert [f.wrt for f in path] == ["C", "Yhat", "A2", "Z2", "A1", "Z1", "W1"]
Yhat, Y = dn.graph.symbol("Yhat"), dn.graph.symbol("Y")
assert dn.delta("Yhat", form="chain") == (Yhat - Y) / sb.BATCH     # (yhat - y), averaged over the batch

# ...and its numbers: the compiled gradient against the punchline typed in NumPy.
rng = np.random.default_rng(0)
Xv, Yv = rng.normal(size=(8, 3)), rng.normal(size=(8, 1))
m = sb.compile(dn)
p = m.init(seed=1)
grads = m.grad(Xv, Yv, p)
sig = lambda z: 1 / (1 + np.exp(-z))
z2 = Xv @ p["W1"] + p["b1"]; a2 = sig(z2)
z3 = a2 @ p["W2"] + p["b2"]; a3 = sig(z3)
yhat = a3 @ p["W3"] + p["b3"]
e = (yhat - Yv) / len(Xv)                                  # J averaged over the batch
hand = {"W3": a3.T @ e,
        "W2": a2.T @ ((e @ p["W3"].T) * sig(z3) * (1 - sig(z3))),
        "W1": Xv.T @ ((((e @ p["W3"].T) * sig(z3) * (1 - sig(z3))) @ p["W2"].T) * sig(z2) * (1 - sig(z2)))}
for k, v in hand.items():
    np.testing.assert_allclose(grads[k], v, rtol=1e-10)
print("compiled dJ/dW1, dJ/dW2, dJ/dW3 equal the punchline formulas in NumPy")

# ---- "nice" derivatives and the vanishing gradient: sigma' = sigma(1 - sigma) <= 1/4
z = sp.Symbol("z", real=True)
assert sb.sigmoid.derivative(z) == (1 - sb.sigmoid(z)) * sb.sigmoid(z)
assert sb.tanh.derivative(z) == 1 - sb.tanh(z) ** 2
bound = maximum(sp.diff(sb.sigmoid.definition(z), z), z, sp.S.Reals)
assert bound == sp.Rational(1, 4)
print(f"sup sigma' = {bound}: two sigmoid layers scale dJ/dW1 by at most {bound**2}")
assert sb.tanh(0) == 0 and sp.limit(sb.tanh.definition(z), z, sp.oo) == 1
assert sb.relu(0) == 0 and sb.relu(5) == 5 and sb.relu(-5) == 0
assert sb.leaky_relu(-5) == -sp.Rational(5, 100) and sb.leaky_relu(5) == 5
print("seed 004 reproduced")
