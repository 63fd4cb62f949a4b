"""Signs, coefficients and broadcasting in the generated element-wise code, against torch autograd.

Hypothesis draws a small affine/element-wise matrix expression (products of the data with
weights, biases broadcast down the rows, a column broadcast across them, negative and rational
coefficients, differences, negated differences, a coefficient times a sum, Hadamard products,
σ and tanh, a product with a K × K weight) as a recipe.  The recipe is built twice: once as
SymPy matrix expressions, the graph symback derives and compiles, and once here, directly, as
torch operations on the numbers, whose autograd is the oracle.  Every backend's predict, loss,
grad, vjp and step must agree with it.

The NumPy printer writes such formulas as ufunc calls into buffers (``symback.printing.inplace``):
``-(1/2) X W + 1 b`` once came out as ``t *= 1/2; np.subtract(0.0, t, out=t); t -= b``, the
bias's sign flipped, because a sum whose first term was subtracted had every term subtracted.
"""
from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import symback as sb
from conftest import examples
from symback.errors import DefinitionError

pytestmark = pytest.mark.filterwarnings("ignore::symback.errors.UnusedParameterWarning")

torch.set_default_dtype(torch.float64)

A_IN, K = 2, 3                      # input columns, output columns
N = 3                               # samples in the data
COEFFS = [-1, -2, 3, sp.Rational(-1, 2), sp.Rational(1, 3), sp.Rational(-3, 2), sp.Rational(2, 3)]
LEAVES = ["xw", "xv", "bias", "bias2", "col", "xwv"]
PARAMS = {"W": (A_IN, K), "V": (K, K), "b": (1, K), "c": (1, K), "u": (A_IN, 1), "W2": (A_IN, K)}

recipes = st.recursive(
    st.sampled_from(LEAVES),
    lambda sub: st.one_of(
        st.tuples(st.just("scale"), st.sampled_from(COEFFS), sub),
        st.tuples(st.sampled_from(["add", "sub", "negsub", "had"]), sub, sub),
        st.tuples(st.just("scalesum"), st.sampled_from(COEFFS), sub, sub),
        st.tuples(st.just("neg"), sub),
        st.tuples(st.sampled_from(["sigmoid", "tanh"]), sub),
        st.tuples(st.just("matv"), sub)),
    max_leaves=5)


def build(recipe, leaf, ops):
    """The recipe's value from `leaf` (a leaf's name -> its value) and `ops` (an operation)."""
    if isinstance(recipe, str):
        return leaf(recipe)
    op, *args = recipe
    args = [a if isinstance(a, (int, sp.Rational)) else build(a, leaf, ops) for a in args]
    if op == "matv":                # times the K × K parameter V
        args.append(leaf("V"))
    return ops[op](*args)


SYMPY_OPS = {"scale": lambda c, a: c * a, "add": lambda a, b: a + b, "sub": lambda a, b: a - b,
             "negsub": lambda a, b: -(a - b), "had": sb.hadamard, "scalesum": lambda c, a, b: c * (a + b),
             "neg": lambda a: -a, "sigmoid": sb.sigmoid, "tanh": sb.tanh, "matv": lambda a, v: a @ v}
TORCH_OPS = {"scale": lambda c, a: float(c) * a, "add": lambda a, b: a + b, "sub": lambda a, b: a - b,
             "negsub": lambda a, b: -(a - b), "had": lambda a, b: a * b,
             "scalesum": lambda c, a, b: float(c) * (a + b), "neg": lambda a: -a,
             "sigmoid": torch.sigmoid, "tanh": torch.tanh, "matv": lambda a, v: a @ v}


def graph(recipe, rows):
    """The recipe as a symback graph: Yhat = recipe, squared-error loss."""
    g = sb.Graph()
    R = 3 if rows == "sample" else sb.BATCH
    X = g.inputs("X", shape=(R, A_IN))
    p = dict(zip(PARAMS, g.params(" ".join(PARAMS), shape=list(PARAMS.values()))))
    one = sb.ones(R, 1)
    leaves = {"xw": X @ p["W"], "xv": X @ p["W2"], "bias": one @ p["b"], "bias2": one @ p["c"],
              "col": X @ p["u"] @ sb.ones(1, K), "xwv": X @ p["W"] @ p["V"], "V": p["V"]}
    Yh = g.node("Yhat", build(recipe, leaves.__getitem__, SYMPY_OPS))
    Y = g.targets("Y", shape=(R, K))
    g.loss(sb.mse(Yh, Y))
    return g


def oracle(recipe, Xn, Yn, Gn, P):
    """(Ŷ, L, ∂L/∂p, ∂⟨G, Ŷ⟩/∂X, ∂⟨G, Ŷ⟩/∂p) by torch autograd of the recipe written here."""
    def run(seed_fn):
        X = torch.tensor(Xn, requires_grad=True)
        p = {k: torch.tensor(v, requires_grad=True) for k, v in P.items()}
        one = torch.ones(X.shape[:-1] + (1,))
        leaves = {"xw": X @ p["W"], "xv": X @ p["W2"], "bias": one @ p["b"], "bias2": one @ p["c"],
                  "col": X @ p["u"] @ torch.ones(1, K), "xwv": X @ p["W"] @ p["V"], "V": p["V"]}
        Yh = build(recipe, leaves.__getitem__, TORCH_OPS)
        out = seed_fn(Yh)
        grads = torch.autograd.grad(out, [X] + list(p.values()), allow_unused=True)
        zero = [np.zeros_like(v) for v in [Xn] + list(P.values())]
        grads = [z if gr is None else gr.numpy() for gr, z in zip(grads, zero)]
        return Yh.detach().numpy(), out.item(), grads[0], dict(zip(P, grads[1:]))
    Yh, L, _, dP = run(lambda Yh: ((Yh - torch.tensor(Yn)) ** 2).reshape(len(Xn), -1).sum(1).mean())
    _, _, vX, vP = run(lambda Yh: (Yh * torch.tensor(Gn)).sum())
    return Yh, L, dP, vX, vP


def close(got, want):
    return np.allclose(np.asarray(got, dtype=np.float64), want, rtol=1e-9, atol=1e-11)


def drawn(recipe, rows, seed, backends):
    """check() of a drawn recipe that symback accepts."""
    try:
        sb.derive(graph(recipe, rows))
    except DefinitionError:         # the terms cancel, or SymPy cannot differentiate a factor
        assume(False)
    check(recipe, rows, seed, backends)


def check(recipe, rows, seed, backends):
    d = sb.derive(graph(recipe, rows))
    rng = np.random.default_rng(seed)
    P = {k: 0.7 * rng.standard_normal(s) for k, s in PARAMS.items()}
    shape = (N, 3) if rows == "sample" else (N,)
    Xn = rng.standard_normal(shape + (A_IN,))
    Yn, Gn = rng.standard_normal(shape + (K,)), rng.standard_normal(shape + (K,))
    Yh, L, dP, vX, vP = oracle(recipe, Xn, Yn, Gn, P)
    for be in backends:
        m = sb.compile(d, backend=be)
        where = f"{be}, {rows}, {recipe}"
        assert close(m.predict(Xn, P), Yh), where
        assert np.isclose(m.loss(Xn, Yn, P), L, rtol=1e-9), where
        grads = m.grad(Xn, Yn, P)
        for k in P:
            assert close(grads[k], dP[k]), (where, k)
        dX, dPv = m.vjp(Xn, P, Gn)
        assert close(dX, vX), where
        for k in P:
            assert close(dPv[k], vP[k]), (where, "vjp", k)
        Pb = {k: torch.tensor(v) if be == "torch" else v.copy() for k, v in P.items()}
        assert np.isclose(m.step(Xn, Yn, Pb, lr=0.1), L, rtol=1e-9), where
        for k in P:
            assert close(np.asarray(Pb[k]), P[k] - 0.1 * dP[k]), (where, "step", k)


R = sp.Rational
#: (recipe, rows, backends): expressions that once came out wrong, each with what went wrong
KNOWN = [
    # the fuzzer's -(1/2) X W + 1 b: a sum whose first term is subtracted had every term
    # subtracted (t *= 1/2; np.subtract(0.0, t, out=t); t -= b), the bias's sign flipped
    (("add", ("scale", R(-1, 2), "xw"), "bias"), "sample", ["numpy", "jax", "torch"]),
    (("add", ("scale", R(-1, 2), "xw"), "bias"), "batch", ["numpy", "jax", "torch"]),
    (("scalesum", -2, ("negsub", "xw", "bias"), ("scale", R(-1, 3), "bias2")), "batch", ["numpy"]),
    (("negsub", ("scale", R(2, 3), ("neg", "xwv")), ("scale", -3, "bias")), "sample", ["numpy"]),
    # a sum whose terms are each narrower than it, (R, 1) and (1, K): -b - (c + X u 1ᵀ) was
    # computed in a buffer of X u's shape, the (1, K) terms subtracted from it in place (NumPy refused)
    (("sub", ("neg", "bias"), ("add", "bias2", "col")), "sample", ["numpy"]),
    (("sub", ("neg", "bias"), ("add", "bias2", "col")), "batch", ["numpy"]),
    # a formula took the line before (t = M.sum(...); δ -= t printed as δ -= M.sum(...)), and
    # M was deleted (del M) where the taken line had been, before the line that now read it
    (("add", ("neg", "col"), ("sub", ("neg", "bias"), ("scale", R(-1, 2), (
        "add", "bias2", ("scale", R(3, 2), ("had", ("tanh", "col"), "bias")))))), "sample", ["numpy"]),
    # SymPy's matrix calculus transposed the partner of a broadcast factor of a Hadamard
    # product: ∂tr(Dᵀ(XW ⊙ 1b))/∂W came out Xᵀ(1b ⊙ Dᵀ) (R = K = 3 here, and the batch's m
    # is a symbol: no ShapeError), every backend's δW wrong; (1b ⊙ X u 1ᵀ) did not derive
    (("had", "xw", "bias"), "sample", ["numpy", "jax", "torch"]),
    (("had", "xw", "bias"), "batch", ["numpy", "jax", "torch"]),
    (("had", "bias", ("had", "bias2", "col")), "sample", ["numpy"]),
    (("scale", R(-3, 2), ("had", ("sigmoid", ("sub", "xwv", "bias")), ("neg", "bias2"))), "batch", ["numpy"]),
    # a prediction that reads no data (it cancels, or is a bias): no VJP was printed ("an input's
    # adjoint was folded away"), and a one-sample graph's δ_b counted the samples twice
    (("add", "xw", ("negsub", "xw", "bias")), "sample", ["numpy", "jax", "torch"]),
    ("bias", "sample", ["numpy", "jax", "torch"]),
    ("bias", "batch", ["numpy"]),
    # (… + 1 b) V: 1ᵀ D V, a 1-D row times a matrix (JAX's _a_bt, torch's addmm); NumPy's step
    # updated b in place before δ_V read t = b.T, a view of it (an update waits for b's views)
    (("matv", ("add", ("scale", R(-1, 2), "xw"), "bias")), "sample", ["numpy", "jax", "torch"]),
    (("matv", ("sub", "bias", ("tanh", "xv"))), "batch", ["numpy", "jax", "torch"]),
    # SymPy transposed a broadcast factor that depends on the parameter: ∂tr(Dᵀ(1c ⊙ 1c))/∂c came
    # out 2·1ᵀ(1c ⊙ Dᵀ) (a HadamardPower once SymPy folds 1c ⊙ 1c)
    (("had", "bias2", "bias2"), "batch", ["numpy", "jax", "torch"]),
    (("scalesum", -1, ("add", "xw", "xwv"), ("had", "bias2", "bias2")), "sample", ["numpy"]),
    # products of broadcasts: (1 uᵀXᵀ) δ was declared K × R, held 1 × R, and written in place
    # with K × R values; (cᵀ 1ᵀ) δ multiplied a K × 1 column by an m × K matrix; torch's step
    # accumulated a broadcast row into V with addmm_
    (("matv", ("scalesum", R(2, 3), "xw", "col")), "sample", ["numpy", "jax", "torch"]),
    (("matv", "bias2"), "batch", ["numpy", "jax", "torch"]),
    (("matv", "col"), "batch", ["numpy", "jax", "torch"]),
]


@pytest.mark.parametrize("recipe, rows, backends", KNOWN)
def test_known_expressions(recipe, rows, backends):
    check(recipe, rows, 0, backends)


def test_a_tensor_contraction_is_written_with_matrices():
    """∂(XW ⊙ XWV)/∂W, which SymPy leaves as a tensor contraction, is written back as matrix
    products (``vjp.as_matrix``; the compiler met an ArrayContraction and raised IndexError):
    every backend against torch autograd."""
    drawn(("had", "xw", "xwv"), "sample", 3, ["numpy", "jax", "torch"])


@settings(max_examples=examples(15), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recipe=recipes, rows=st.sampled_from(["sample", "batch"]), seed=st.integers(0, 2 ** 16))
def test_random_affine_expressions_numpy(recipe, rows, seed):
    drawn(recipe, rows, seed, ["numpy"])


@settings(max_examples=examples(4), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recipe=recipes, rows=st.sampled_from(["sample", "batch"]), seed=st.integers(0, 2 ** 16))
def test_random_affine_expressions_all_backends(recipe, rows, seed):
    drawn(recipe, rows, seed, ["numpy", "jax", "torch"])
