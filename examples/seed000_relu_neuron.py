"""Seed 000: one ReLU neuron, two inputs, the cost halved as in the notes.

    c = x1 w1 + x2 w2 + b,   p = ReLU(c),   L = 1/(2m) sum_i (p - y)^2

The notes find, moving backwards,

    dL/dw1 = 1/m sum_i (p - y) * (1 if c >= 0 else 0) * x1     (and x2 for w2, 1 for b).

This script derives that with symback and checks every factor, then checks
the compiled NumPy gradient against the notes' formula typed in NumPy.
Run: python examples/seed000_relu_neuron.py
"""
from pathlib import Path

import numpy as np
import sympy as sp

import symback as sb

HERE = Path(__file__).resolve().parent
g = sb.load_spec(HERE / "seed000.toml")
d = sb.derive(g)
x1, x2, y, p, c = sp.symbols("x1 x2 y p c")

# The path from the loss back to w1: dC/dp, dp/dc, dc/dw1 -- "we are moving backwards".
(path,) = d.chain("w1")
print("dC/dw1 =", " * ".join(f"d{f.of}/d{f.wrt}" for f in path))
assert [(f.of, f.wrt) for f in path] == [("C", "p"), ("p", "c"), ("c", "w1")]
dC_dp, dp_dc, dc_dw1 = (f.expr for f in path)
assert sp.simplify(dC_dp - (p - y)) == 0                       # dL/dp = (p - y), the 1/m comes with the mean
assert dp_dc.subs(c, 2) == 1 and dp_dc.subs(c, 0) == 1 and dp_dc.subs(c, -2) == 0   # 1 if c >= 0, else 0
assert dc_dw1 == x1                                            # d/dw1 (x1 w1 + x2 w2 + b) = x1
assert [f.expr for f in d.chain("w2")[0]][-1] == x2
assert d.chain("b")[0][-1].expr == 1 and sp.simplify(d.gradient("b") - (p - y) * dp_dc) == 0
print("ReLU'(0) =", dp_dc.subs(c, 0), "  (the notes' convention: 1 for c >= 0)")

# The batch: L = 1/m sum_i C_i, so dL/dw1 = 1/m sum_i (p - y) ReLU'(c) x1.
print("dL/dw1 =", d.batch_gradient("w1"))
assert d.reduction == "mean"

# Numbers: the compiled gradient against the notes' formula in plain NumPy.
rng = np.random.default_rng(0)
X = rng.normal(size=(50, 2))
Y = rng.normal(size=(50, 1))
model = sb.compile(d)
params = {"w1": np.array(0.7), "w2": np.array(-0.4), "b": np.array(0.1)}
grads = model.grad(X, Y, params)
cv = X[:, 0] * 0.7 + X[:, 1] * -0.4 + 0.1
pv = np.maximum(cv, 0)
relu_prime = (cv >= 0).astype(float)
notes = {"w1": np.mean((pv - Y[:, 0]) * relu_prime * X[:, 0]),
         "w2": np.mean((pv - Y[:, 0]) * relu_prime * X[:, 1]),
         "b": np.mean((pv - Y[:, 0]) * relu_prime)}
for k in notes:
    assert np.isclose(grads[k], notes[k], rtol=1e-12), k
    print(f"dL/d{k} = {float(grads[k]):+.6f}   (notes' formula: {notes[k]:+.6f})")
print("seed 000 reproduced")
