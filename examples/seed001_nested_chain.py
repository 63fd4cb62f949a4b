"""Seed 001: a nested function, three one-weight neurons, ReLU, ReLU, sigmoid.

    a_1 = ReLU(i_1 w_1),  a_2 = ReLU(a_1 w_2),  a_3 = sigma(a_2 w_3),  C = (a_3 - y)^2

The notes: "w_3 not directly accessible -- chain rule":

    dC/dw_3 = dC/da_3 * da_3/dw_3
    dC/dw_1 = da_1/dw_1 * da_2/da_1 * da_3/da_2 * dC/da_3,   with dC/da_3 = 2(a_3 - y),

and the update rule w^{t+1} = w^t - alpha dC/dw.  Run: python examples/seed001_nested_chain.py
"""
from pathlib import Path

import numpy as np
import sympy as sp

import symback as sb

HERE = Path(__file__).resolve().parent
g = sb.load_spec(HERE / "seed001.toml")
d = sb.derive(g)
a_3, y = sp.symbols("a_3 y")

for w, expected in (("w_3", ["a_3", "w_3"]), ("w_2", ["a_3", "a_2", "w_2"]), ("w_1", ["a_3", "a_2", "a_1", "w_1"])):
    (path,) = d.chain(w)
    print(f"dC/d{w} = " + " * ".join(f"d{f.of}/d{f.wrt}" for f in path))
    assert [f.wrt for f in path] == expected            # nested: one factor per layer, backwards
    assert path[0].of == "C" and sp.expand(path[0].expr - 2 * (a_3 - y)) == 0   # dC/da_3 = 2(a_3 - y)

# Check the formula at a point against SymPy's own diff of the fully nested
# y_p = sigma(ReLU(ReLU(i_1 w_1) w_2) w_3), then one update step.
point = {"i_1": 1.5, "y": 1.0, "w_1": 0.8, "w_2": 1.2, "w_3": -0.5}
ev = d.evaluate(point)
unrolled = g.unrolled()[g.loss_name].rewrite(sp.exp)
subs = {g.symbol(k): v for k, v in point.items()}
for w in ("w_1", "w_2", "w_3"):
    oracle = float(sp.diff(unrolled, g.symbol(w)).subs(subs))
    assert abs(float(ev["gradient"][w]) - oracle) < 1e-12, w
    print(f"dC/d{w} = {float(ev['gradient'][w]):+.6f}")

alpha = 0.5
model = sb.compile(d)
params = {k: np.array(point[k]) for k in ("w_1", "w_2", "w_3")}
X, Y = np.array([[point["i_1"]]]), np.array([[point["y"]]])
before = model.loss(X, Y, params)
model.step(X, Y, params, lr=alpha)                       # w <- w - alpha dC/dw, in place
for w in ("w_1", "w_2", "w_3"):
    assert np.isclose(params[w], point[w] - alpha * float(ev["gradient"][w]), rtol=1e-12)
after = model.loss(X, Y, params)
print(f"C before {before:.6f}, after one step {after:.6f}")
assert after < before
print("seed 001 reproduced")
