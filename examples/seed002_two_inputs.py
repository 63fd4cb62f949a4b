"""Seed 002: a two-input problem, no hidden layer, squared-error loss.

    model = b + w1 x1 + w2 x2,   loss = (model - y)^2

The "old-fashioned" way: dloss/db = 2(b + w1 x1 + w2 x2 - y), dloss/dw1 = ... x1, dloss/dw2 = ... x2.
Organised as a graph: a_1 = w1 x1, a_2 = w2 x2, yhat = b + a_1 + a_2, Loss = (yhat - y)^2, and
"start from the loss and travel backwards to the parameter, multiplying the partial derivatives":

    dLoss/dw1 = dLoss/dyhat * dyhat/da_1 * da_1/dw1 = 2(yhat - y) * 1 * x1.

Run: python examples/seed002_two_inputs.py  (symback derive examples/seed002.toml -o seed002.pdf draws it)
"""
from pathlib import Path

import sympy as sp

import symback as sb

HERE = Path(__file__).resolve().parent
g = sb.load_spec(HERE / "seed002.toml")
d = sb.derive(g)
x1, x2, y, w1, w2, b, a_1, a_2, yhat = sp.symbols("x1 x2 y w1 w2 b a_1 a_2 yhat")

# The little derivatives attached to the graph's edges.
local = {(f.of, f.wrt): f.expr for p in d.params for f in d.chain(p)[0]}
assert sp.expand(local[("C", "yhat")] - 2 * (yhat - y)) == 0
assert local[("yhat", "b")] == local[("yhat", "a_1")] == local[("yhat", "a_2")] == 1
assert local[("a_1", "w1")] == x1 and local[("a_2", "w2")] == x2

# Travelling backwards, multiplying as we go.
for p, path in (("b", ["yhat", "b"]), ("w1", ["yhat", "a_1", "w1"]), ("w2", ["yhat", "a_2", "w2"])):
    (chain,) = d.chain(p)
    assert [f.wrt for f in chain] == path
    print(f"dLoss/d{p} = " + " * ".join(f"d{f.of}/d{f.wrt}" for f in chain)
          + " = " + " * ".join(f"({sp.sstr(f.expr)})" for f in chain))

# "You can check this matches the old-fashioned calculation!!"  YES:
old = 2 * (b + w1 * x1 + w2 * x2 - y)
for p, extra in (("b", 1), ("w1", x1), ("w2", x2)):
    assert sp.expand(d.gradient(p, form="expanded") - old * extra) == 0
    assert sp.expand(sp.diff((b + w1 * x1 + w2 * x2 - y) ** 2, sp.Symbol(p)) - old * extra) == 0
print("matches the old-fashioned calculation: seed 002 reproduced")
