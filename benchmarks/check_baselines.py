"""Self-check of benchmarks/baselines.py: run ``python benchmarks/check_baselines.py``.

For small nets of every activation/output/loss combination:
* the NumPy step's loss equals an independent plain forward pass;
* the NumPy step's gradient (recovered from one SGD step) agrees with central
  finite differences of the loss;
* torch, autograd and JAX (whichever are installed) give the same loss and
  the same updated parameters as the NumPy step, to 1e-10, over 3 steps;
* ReLU'(0) = 1 in the NumPy step.
Asserts, and prints OK at the end.
"""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from baselines import BASELINES, init_params, make_data, numpy_step  # noqa: E402

TOL = 1e-10
COMBOS = [(act, out, loss)
          for act in ("sigmoid", "tanh", "relu")
          for out, loss in (("identity", "mse"), ("sigmoid", "mse"),
                            ("softmax", "mse"), ("softmax", "cross_entropy"))]
SIZES = [[3, 5, 4], [4, 6, 5, 3]]


def plain_loss(sizes, act, out, loss, X, Y, params):
    """Direct, unoptimised forward pass and loss."""
    f = {"sigmoid": lambda z: 1 / (1 + np.exp(-z)), "tanh": np.tanh,
         "relu": lambda z: np.where(z >= 0, z, 0.0)}[act]
    A = X
    L = len(sizes) - 1
    for l in range(1, L):
        A = f(A @ params[f"W{l}"] + params[f"b{l}"])
    Z = A @ params[f"W{L}"] + params[f"b{L}"]
    n = X.shape[0]
    if loss == "cross_entropy":
        m = Z.max(axis=1, keepdims=True)
        logp = Z - m - np.log(np.exp(Z - m).sum(axis=1, keepdims=True))
        return -np.sum(Y * logp) / n
    if out == "sigmoid":
        Z = 1 / (1 + np.exp(-Z))
    elif out == "softmax":
        E = np.exp(Z - Z.max(axis=1, keepdims=True))
        Z = E / E.sum(axis=1, keepdims=True)
    return np.sum((Z - Y) ** 2) / n


def copy(params):
    return {k: v.copy() for k, v in params.items()}


def numpy_grad(step, X, Y, params):
    p = copy(params)
    value = step(X, Y, p, 1.0)
    return value, {k: params[k] - p[k] for k in params}


def check_fd(sizes, combo, seed):
    act, out, loss = combo
    step = numpy_step(sizes, act, out, loss)
    params = init_params(sizes, seed=seed)
    X, Y = make_data(sizes, 7, loss, seed=seed + 100)
    if out == "softmax" and loss == "mse":  # targets that are distributions
        Y = np.random.default_rng(seed).dirichlet(np.ones(sizes[-1]), size=7)
    value, grad = numpy_grad(step, X, Y, params)
    ref = plain_loss(sizes, act, out, loss, X, Y, params)
    assert abs(value - ref) <= TOL * max(1.0, abs(ref)), (combo, value, ref)
    h = 1e-6
    worst = 0.0
    for k, v in params.items():
        fd = np.empty_like(v)
        for idx in np.ndindex(v.shape):
            pp, pm = copy(params), copy(params)
            pp[k][idx] += h
            pm[k][idx] -= h
            fd[idx] = (plain_loss(sizes, act, out, loss, X, Y, pp)
                       - plain_loss(sizes, act, out, loss, X, Y, pm)) / (2 * h)
        err = np.max(np.abs(fd - grad[k])) / max(1.0, np.max(np.abs(fd)))
        worst = max(worst, err)
        assert err < 1e-7, (sizes, combo, k, err)
    # lr = 0 leaves params unchanged and returns the same loss
    p0 = copy(params)
    assert step(X, Y, p0, 0.0) == value and all(np.array_equal(p0[k], params[k]) for k in p0)
    return worst


def check_peers(sizes, combo, seed, available):
    act, out, loss = combo
    params = init_params(sizes, seed=seed)
    X, Y = make_data(sizes, 9, loss, seed=seed + 200)
    results = {}
    for name, factory in available.items():
        b = factory(sizes, act, out, loss)
        state = b.params_in(params)
        Xc, Yc = b.data_in(X, Y)
        values = [b.step(Xc, Yc, state, 0.3) for _ in range(3)]
        results[name] = (values, b.params_out(state))
    ref_values, ref_params = results["numpy"]
    for k in params:
        assert not np.array_equal(ref_params[k], params[k]), ("numpy did not update", k)
    for name, (values, p) in results.items():
        assert np.allclose(values, ref_values, rtol=TOL, atol=TOL), (name, sizes, combo, values, ref_values)
        for k in params:
            diff = np.max(np.abs(p[k] - ref_params[k]))
            assert diff <= TOL, (name, sizes, combo, k, diff)


def check_relu_at_zero():
    # one sample, x = 0 and b1 = 0 make z1 = 0 exactly; ReLU'(0) = 1 means
    # dL/db1 = 2 (yhat - y) * W2 (yhat = b2 since a1 = 0)
    step = numpy_step([1, 1, 1], "relu", "identity", "mse")
    params = {"W1": np.array([[0.7]]), "b1": np.array([0.0]),
              "W2": np.array([[-1.3]]), "b2": np.array([0.4])}
    X, Y = np.array([[0.0]]), np.array([[1.5]])
    _, grad = numpy_grad(step, X, Y, params)
    assert abs(grad["b1"][0] - 2 * (0.4 - 1.5) * (-1.3)) < 1e-14, grad


def main():
    available = {}
    for name, factory in BASELINES.items():
        try:
            factory([2, 2], "tanh", "identity", "mse")
            available[name] = factory
        except ImportError as e:
            print(f"skip {name}: {e}")
    worst = 0.0
    for sizes in SIZES:
        for i, combo in enumerate(COMBOS):
            worst = max(worst, check_fd(sizes, combo, seed=i))
            check_peers(sizes, combo, seed=i, available=available)
    check_relu_at_zero()
    print(f"checked {len(SIZES) * len(COMBOS)} nets against {', '.join(available)}; "
          f"worst finite-difference rel. error {worst:.1e}")
    print("OK")


if __name__ == "__main__":
    main()
