"""The activation and loss registry: definitions, derived derivatives, compact forms.

Oracles: SymPy's diff of each definition, definitions written out here by
hand (conftest.ORACLE_DEFS), and Python's math module.
"""
import math

import pytest
import sympy as sp

import symback as sb
from conftest import ORACLE_DEFS, num, to_elementary
from symback.functions import ACTIVATIONS, LOSSES, Activation

z = sp.Symbol("z", real=True)
BUILTIN = ["identity", "sigmoid", "tanh", "relu", "leaky_relu", "softplus", "swish", "silu"]
# both sides of 0, close to it, and 0 itself (the piecewise ones' convention point)
POINTS = [-4.0, -1.3, -0.2, -1e-6, 0.0, 1e-6, 0.3, 1.7, 5.0]


def test_registry_has_the_documented_names():
    assert set(BUILTIN) <= set(ACTIVATIONS)
    assert {"mse", "half_mse", "binary_cross_entropy", "cross_entropy", "logcosh", "huber"} <= set(LOSSES)
    for name in BUILTIN:
        assert sb.get_activation(name) is ACTIVATIONS[name]
    assert sb.get_activation("softmax") is sb.softmax


@pytest.mark.parametrize("name", BUILTIN)
def test_derivative_equals_diff_of_definition(name):
    f = ACTIVATIONS[name]
    derived = sp.diff(f(z), z)                                      # goes through fdiff
    assert not derived.has(sp.Derivative)
    raw = sp.diff(f.definition(z, *f.extra_params), z)              # SymPy on the definition
    oracle = sp.diff(ORACLE_DEFS[name](z), z)                       # SymPy on our own definition
    for v in POINTS:   # at 0 too: the oracle's ReLU' is 1 at 0, the convention of seed 000
        assert num(derived, {z: v}) == pytest.approx(num(raw, {z: v}), rel=1e-12, abs=1e-14), v
        assert num(derived, {z: v}) == pytest.approx(num(oracle, {z: v}), rel=1e-12, abs=1e-14), v


def test_leaky_relu_alpha_is_a_parameter():
    alpha = sp.Rational(1, 5)
    d = sp.diff(sb.leaky_relu(z, alpha), z)
    assert [num(d, {z: v}) for v in (-2.0, -1e-9, 0.0, 3.0)] == [0.2, 0.2, 1.0, 1.0]
    assert sb.leaky_relu(-2, alpha) == sp.Rational(-2, 5)
    assert sb.leaky_relu(z) == sb.leaky_relu(z, sb.leaky_relu.extra_params[0])   # a default α


def test_relu_derivative_is_a_step_with_one_at_zero():
    d = sp.diff(sb.relu(z), z)
    assert d.has(sp.Piecewise) and not d.has(sb.relu)
    assert [d.subs(z, v) for v in (-3, 0, 2)] == [0, 1, 1]           # seed 000: 1 for c ≥ 0
    assert "0" in sb.relu.convention and "1" in sb.relu.convention     # the derivation states it


def test_compact_forms():
    s = sb.sigmoid(z)
    ds = sp.diff(s, z)
    assert not ds.has(sp.exp)
    assert sp.expand(ds - s * (1 - s)) == 0                          # σ' = σ(1 − σ)
    assert sp.expand(sp.diff(sb.tanh(z), z) - (1 - sb.tanh(z) ** 2)) == 0   # tanh' = 1 − tanh²
    assert sp.diff(sb.softplus(z), z) == sb.sigmoid(z)               # softplus' = σ
    u = sp.Symbol("u")
    assert sp.expand(sb.sigmoid.output_derivative(u) - u * (1 - u)) == 0
    assert sp.expand(sb.tanh.output_derivative(u) - (1 - u ** 2)) == 0


@pytest.mark.parametrize("name", BUILTIN)
def test_evalf_and_rewrite(name):
    f = ACTIVATIONS[name]
    for arg in (sp.sqrt(2), -sp.pi / 3, sp.Rational(7, 5)):
        expected = float(sp.N(ORACLE_DEFS[name](arg), 30))
        assert float(f(arg).evalf()) == pytest.approx(expected, rel=1e-13)
        assert float(sp.N(f(arg), 30)) == pytest.approx(expected, rel=1e-13)
    r = f(z).rewrite(sp.exp)
    assert not r.atoms(Activation)                                   # elementary functions only
    for v in POINTS:
        assert num(r, {z: v}) == pytest.approx(num(to_elementary(f(z)), {z: v}), rel=1e-12, abs=1e-14)


def test_sigmoid_numbers_are_exact():
    assert sb.sigmoid(0) == sp.Rational(1, 2)
    assert sb.relu(-3) == 0 and sb.relu(sp.Rational(5, 2)) == sp.Rational(5, 2)
    assert float(sb.sigmoid(sp.Float(2.0))) == pytest.approx(1 / (1 + math.exp(-2)))


@pytest.mark.parametrize("name", [n for n in BUILTIN if ACTIVATIONS[n].stable is not None])
def test_stable_forms_equal_the_definition(name):
    f = ACTIVATIONS[name]
    for v in POINTS:
        assert num(f.stable(z), {z: v}) == pytest.approx(num(to_elementary(f(z)), {z: v}), rel=1e-12)


@pytest.fixture
def mish():
    """mish registered from its definition alone; the registry is restored afterwards."""
    w = sp.Symbol("w")
    yield sb.activation("mish", w * sp.tanh(sp.log(1 + sp.exp(w))), var=w)
    ACTIVATIONS.pop("mish", None)


def mish_def(u):
    return u * sp.tanh(sp.log(1 + sp.exp(u)))


def test_custom_activation_from_definition_alone(mish):
    assert sb.get_activation("mish") is mish
    d = sp.diff(mish(z), z)
    oracle = sp.diff(mish_def(z), z)
    for v in POINTS:
        assert num(d, {z: v}) == pytest.approx(num(oracle, {z: v}), rel=1e-12, abs=1e-14)
    assert float(mish(sp.sqrt(3)).evalf()) == pytest.approx(float(sp.N(mish_def(sp.sqrt(3)))), rel=1e-13)
    assert not mish(z).rewrite(sp.exp).atoms(Activation)


def test_custom_activation_inside_a_graph(mish, rng):
    g = sb.Graph()
    x = g.inputs("x")
    y = g.targets("y")
    w, b = g.params("w b")
    a = g.node("a", mish(w * x + b))
    g.loss((a - y) ** 2)
    d = sb.derive(g)
    C = (mish_def(w * x + b) - y) ** 2
    for _ in range(4):
        at = {"x": rng.uniform(-2, 2), "y": rng.uniform(-1, 1), "w": rng.uniform(-2, 2), "b": rng.uniform(-1, 1)}
        for p in (w, b):
            got = d.gradient(p.name, form="expanded").replace(lambda e: isinstance(e, mish),
                                                               lambda e: mish_def(e.args[0]))
            assert num(got, at) == pytest.approx(num(sp.diff(C, p), at), rel=1e-10)


@pytest.fixture
def logcosh(monkeypatch):
    """The design's custom loss, registered the way a user would; the registry is restored afterwards."""
    monkeypatch.setitem(LOSSES, "logcosh", LOSSES["logcosh"])
    yh, t = sp.symbols("yhat t")
    return sb.loss_function("logcosh", sp.log(sp.cosh(yh - t)), prediction=yh, target=t)


def test_custom_loss_from_definition_alone(logcosh, rng):
    assert sb.get_loss("logcosh") is logcosh
    g = sb.Graph()
    x = g.inputs("x")
    y = g.targets("y")
    w = g.params("w")
    yhat = g.node("yhat", sb.tanh(w * x))
    g.loss(logcosh(yhat, y))
    d = sb.derive(g)
    (path,) = d.chain("w")
    assert sp.simplify(path[0].expr - sp.tanh(yhat - y)) == 0       # d/dŷ log cosh(ŷ − y) = tanh(ŷ − y)
    C = sp.log(sp.cosh(sp.tanh(w * x) - y))
    for _ in range(4):
        at = {"x": rng.uniform(-2, 2), "y": rng.uniform(-1, 1), "w": rng.uniform(-2, 2)}
        assert num(to_elementary(d.gradient("w", form="expanded")), at) == pytest.approx(
            num(sp.diff(C, w), at), rel=1e-10)


@pytest.mark.parametrize("name", ["mse", "half_mse", "binary_cross_entropy", "logcosh", "huber"])
def test_builtin_losses_are_their_definitions(name):
    p, t = sp.symbols("p t", real=True)
    oracle = {
        "mse": (p - t) ** 2,
        "half_mse": (p - t) ** 2 / 2,
        "binary_cross_entropy": -(t * sp.log(p) + (1 - t) * sp.log(1 - p)),
        "logcosh": sp.log(sp.cosh(p - t)),
        "huber": sp.Piecewise(((p - t) ** 2 / 2, abs(p - t) <= 1), (abs(p - t) - sp.Rational(1, 2), True)),
    }[name]
    lf = sb.get_loss(name)
    for pv, tv in [(0.3, 0.0), (0.7, 1.0), (0.2, 0.9), (0.95, 0.05)]:
        assert num(lf(p, t), {p: pv, t: tv}) == pytest.approx(num(oracle, {p: pv, t: tv}), rel=1e-12)


@pytest.mark.parametrize("bad", ["nope", "Sigmoid", "", 3])
def test_unknown_activation_and_loss_names(bad):
    with pytest.raises(sb.SymbackError, match="unknown activation") as err:
        sb.get_activation(bad)
    assert repr(bad) in str(err.value)
    with pytest.raises(sb.SymbackError, match="unknown loss") as err:
        sb.get_loss(bad)
    assert repr(bad) in str(err.value)


def test_bad_registrations():
    with pytest.raises(sb.SymbackError, match="unknown symbols"):
        sb.activation("bad_act", z * sp.Symbol("k"), var=z)
    with pytest.raises(sb.SymbackError, match="identifier"):
        sb.activation("bad name", z, var=z)
    p, t = sp.symbols("p t")
    with pytest.raises(sb.SymbackError, match="prediction"):
        sb.loss_function("bad_loss", t ** 2, prediction=p, target=t)
    with pytest.raises(sb.SymbackError, match="stable"):
        sb.activation("bad_stable", sp.exp(z), var=z, stable=sp.exp(2 * z))
    assert "bad_act" not in ACTIVATIONS and "bad_stable" not in ACTIVATIONS and "bad_loss" not in LOSSES


def test_a_built_in_name_keeps_its_function():
    """Registering a built-in name again with another definition replaced it for the whole process
    (sigmoid as z², every network's loss changed); now refused, while the same function again
    (DESIGN's logcosh example) is the built-in.  A loss whose prediction is its target is refused."""
    before = sb.compile(sb.derive(sb.mlp([2, 3, 1], "sigmoid", "identity", "mse")))
    X, Y = [[0.5, -1.0], [0.0, 2.0]], [[0.3], [0.1]]
    want = before.loss(X, Y, before.init(seed=0))
    with pytest.raises(sb.SymbackError, match="'sigmoid' is a built-in activation with another definition"):
        sb.activation("sigmoid", z ** 2, var=z)
    yh, t = sp.symbols("yhat t")
    with pytest.raises(sb.SymbackError, match="'mse' is a built-in loss with another definition"):
        sb.loss_function("mse", (yh - t) ** 4, prediction=yh, target=t)
    assert sb.loss_function("logcosh", sp.log(sp.cosh(yh - t)), prediction=yh, target=t) is LOSSES["logcosh"]
    assert sb.activation("tanh", sp.tanh(z), var=z) is ACTIVATIONS["tanh"]
    with pytest.raises(sb.SymbackError, match="two different symbols"):
        sb.loss_function("own_sq", yh ** 2, prediction=yh, target=yh)
    after = sb.compile(sb.derive(sb.mlp([2, 3, 1], "sigmoid", "identity", "mse")))
    assert after.loss(X, Y, after.init(seed=0)) == want


def test_text_is_never_handed_to_sympify(tmp_path):
    """sb.sigmoid("…") went through SymPy's Function, whose sympify evaluates a string as Python:
    the shell command in it ran.  Every function and loss now refuses text before SymPy sees it."""
    evil = f"__import__('os').system('touch {tmp_path / 'PWNED'}')"
    for name in ACTIVATIONS:
        with pytest.raises(sb.SymbackError, match="takes SymPy expressions, got the text"):
            ACTIVATIONS[name](evil)
    for name in LOSSES:
        with pytest.raises(sb.SymbackError, match="takes SymPy expressions, got the text"):
            LOSSES[name](evil, z)
    with pytest.raises(sb.SymbackError, match="layer_norm takes a matrix"):
        sb.layer_norm(evil, evil, evil)
    assert not (tmp_path / "PWNED").exists()
