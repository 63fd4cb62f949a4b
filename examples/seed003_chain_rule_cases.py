"""Seed 003: the chain rule's two cases, and the loss as a sum over samples.

Case 1: y = g(x), z = h(y):             dz/dx = dz/dy dy/dx                   (one path)
Case 2: x = g(s), y = h(s), z = k(x, y): dz/ds = dz/dx dx/ds + dz/dy dy/ds    (two paths, summed)
Backpropagation: L(theta) = sum_n C^n(theta), so dL/dw = sum_n dC^n/dw; and dC/dw = dz/dw dC/dz,
with dz/dw the value of the input connected by the weight (forward pass) and dC/dz from
the layers above (backward pass).  Run: python examples/seed003_chain_rule_cases.py
"""
import numpy as np
import sympy as sp

import symback as sb
from symback.engine import Adjoint

# Case 1: a chain, one path.
g1 = sb.Graph()
x = g1.params("x")
yy = g1.node("y", sp.sin(x))
g1.loss(sp.exp(yy), name="z")
d1 = sb.derive(g1)
(path,) = d1.chain("x")
assert [(f.of, f.wrt) for f in path] == [("z", "y"), ("y", "x")]
assert sp.simplify(d1.gradient("x", form="expanded") - sp.diff(sp.exp(sp.sin(x)), x)) == 0
print("case 1: dz/dx =", " * ".join(f"d{f.of}/d{f.wrt}" for f in path))

# Case 2: two paths from s to z, summed.
g2 = sb.Graph()
s = g2.params("s")
xs = g2.node("x", s ** 2)
ys = g2.node("y", sb.sigmoid(s))
g2.loss(xs * ys, name="z")
d2 = sb.derive(g2)
paths = d2.chain("s")
assert sorted([f.wrt for f in p] for p in paths) == [["x", "s"], ["y", "s"]]
by_paths = sp.Add(*[sp.Mul(*[f.expr for f in p]) for p in paths])
assert sp.simplify(by_paths - d2.gradient("s")) == 0
oracle = sp.diff(s ** 2 * (1 / (1 + sp.exp(-s))), s)
assert sp.simplify(d2.gradient("s", form="expanded").rewrite(sp.exp) - oracle) == 0
print("case 2: dz/ds =", " + ".join(" * ".join(f"d{f.of}/d{f.wrt}" for f in p) for p in paths))

# One neuron z = x1 w1 + x2 w2 + b, C = (sigma(z) - y)^2; the loss is the SUM over samples.
g = sb.Graph()
x1, x2 = g.inputs("x1 x2")
y = g.targets("y")
w1, w2, b = g.params("w1 w2 b")
z = g.node("z", x1 * w1 + x2 * w2 + b)
a = g.node("a", sb.sigmoid(z))
g.loss((a - y) ** 2, reduction="sum")
d = sb.derive(g)
assert d.local[("z", "w1")] == x1 and d.local[("z", "w2")] == x2      # the input connected by the weight
assert d.gradient("w1", form="recursive") == Adjoint("z") * x1      # dC/dw = dz/dw * dC/dz
print("dC/dw1 =", d.gradient("w1", form="recursive"), " (forward pass: x1; backward pass: delta_z)")

rng = np.random.default_rng(0)
X, Y = rng.normal(size=(20, 2)), rng.uniform(size=(20, 1))
model = sb.compile(d)
params = {"w1": np.array(0.3), "w2": np.array(-0.8), "b": np.array(0.2)}
grads = model.grad(X, Y, params)
per_sample = [model.grad(X[n:n + 1], Y[n:n + 1], params) for n in range(len(X))]
for k in ("w1", "w2", "b"):
    total = sum(float(gs[k]) for gs in per_sample)          # dL/dw = sum_n dC^n/dw
    assert np.isclose(float(grads[k]), total, rtol=1e-12), k
    print(f"dL/d{k} = {float(grads[k]):+.6f} = sum over {len(X)} samples of dC^n/d{k}")
print("seed 003 reproduced")
