"""Spec files and expression text: parsed by a whitelist, never evaluated.

Oracles: expressions SymPy builds directly from the same tree, sympy.diff
of the unrolled loss, and the seeds' numbers.
"""
import re
from pathlib import Path

import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings, strategies as st

import symback as sb
from symback.errors import SpecError
from symback.spec import parse_values, read_spec, spec_from_dict

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SPECS = sorted(EXAMPLES.glob("seed*.toml"))


def test_every_seed_spec_is_there():
    assert {p.name for p in SPECS} >= {"seed000.toml", "seed001.toml", "seed002.toml", "seed004.toml"}


# ----------------------------------------------------------------- parse_expr
def test_operators_and_precedence():
    x, y, z = sp.symbols("x y z")
    e = sb.parse_expr("-x + y*z**2/3 - (x - y)**-1", {"x": x, "y": y, "z": z})
    assert sp.simplify(e - (-x + y * z ** 2 / 3 - 1 / (x - y))) == 0


def test_names_may_be_given_as_a_list_a_string_or_a_graph():
    a, b = sp.symbols("a b")
    assert sb.parse_expr("a*b", ["a", "b"]) == a * b
    assert sb.parse_expr("a*b", "a b") == a * b
    g = sb.Graph()
    g.inputs("a")
    g.params("b")
    assert sb.parse_expr("a*b", g) == g.symbol("a") * g.symbol("b")
    with pytest.raises(SpecError, match="unknown name"):
        sb.parse_expr("a*c", g)
    with pytest.raises(SpecError, match="none declared"):
        sb.parse_expr("a", None)


def test_floats_are_exact_decimals():
    e = sb.parse_expr("0.1*x + 2.5", ["x"])
    assert e == sp.Rational(1, 10) * sp.Symbol("x") + sp.Rational(5, 2)


def test_registry_functions_are_symback_functions():
    z = sp.Symbol("z")
    e = sb.parse_expr("sigmoid(z) + tanh(z) + relu(z) + ReLU(z) + softplus(z)", {"z": z})
    assert e == sb.sigmoid(z) + sb.tanh(z) + 2 * sb.relu(z) + sb.softplus(z)
    assert sb.parse_expr("exp(z) + log(z) + sqrt(z) + Max(z, 0) + abs(z)", {"z": z}) == \
        sp.exp(z) + sp.log(z) + sp.sqrt(z) + sp.Max(z, 0) + sp.Abs(z)


def test_user_registered_activation_is_callable():
    z = sp.Symbol("z")
    sb.activation("spec_cube", z ** 3, var=z)
    e = sb.parse_expr("spec_cube(x)", ["x"])
    assert sp.diff(e, sp.Symbol("x")).rewrite(sp.exp) == 3 * sp.Symbol("x") ** 2


ATTACKS = [
    ("__import__('os').system('touch PWNED')", "__import__"),
    ("eval('1')", "eval"),
    ("exec('x=1')", "exec"),
    ("x.__class__", "attribute"),
    ("sigmoid.__globals__", "attribute"),
    ("x[0]", "subscript"),
    ("lambda: 1", "lambda"),
    ("[x for x in y]", "comprehension"),
    ("sigmoid(x=1)", "keyword"),
    ("'text'", "number"),
    ("__builtins__", "dunder"),
    ("open('f')", "open"),
    ("x if y else 1", "conditional"),
    ("x < y", "comparison"),
    ("x and y", "boolean"),
    ("(x := 1)", "assignment"),
    ("x ^ 2", "**"),
    ("9**9**9**9", "exponent"),
    ("unknown + x", "unknown name"),
    ("x +", "cannot parse"),
    ("", "empty"),
    ("x\ny", "one line"),
    ("log(0)", "undefined"),
    ("x / 0", "division by zero"),
    ("True", "number"),
    ("1j", "number"),
    ("sigmoid", "called"),
    ("sigmoid(x, y)", "bad call"),
    ("(x)(y)", "function"),
    ("sigmoid(*x)", "starred"),
    ("x" * 20001, "longer"),
    ("(" * 300 + "x" + ")" * 300, ""),
]


@pytest.mark.parametrize("text,why", ATTACKS, ids=[a[0][:25] for a in ATTACKS])
def test_refused(text, why, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpecError) as info:
        sb.parse_expr(text, ["x", "y"], where="node 'q'")
    msg = str(info.value)
    assert msg.startswith("node 'q'") and why in msg
    assert "\n" not in msg
    assert not (tmp_path / "PWNED").exists()


def test_refusal_names_the_offending_piece_and_column():
    with pytest.raises(SpecError, match=r"'x\.real' \(column 5\)"):
        sb.parse_expr("1 + x.real", ["x"])


# A random expression as text and, built side by side, the SymPy object it must parse to.
_leaves = st.one_of(
    st.sampled_from(["x", "y", "z"]).map(lambda n: (n, sp.Symbol(n))),
    st.integers(0, 50).map(lambda i: (str(i), sp.Integer(i))),
)


def _extend(children):
    binary = st.tuples(children, st.sampled_from(["+", "-", "*", "/"]), children)

    def build(t):
        (ta, ea), op, (tb, eb) = t
        if op == "/" and eb == 0:
            eb, tb = sp.Integer(7), "7"
        return f"({ta} {op} {tb})", {"+": ea + eb, "-": ea - eb, "*": ea * eb, "/": ea / eb}[op]

    funcs = st.tuples(st.sampled_from(["sigmoid", "tanh", "exp", "sin"]), children).map(
        lambda t: (f"{t[0]}({t[1][0]})",
                   {"sigmoid": sb.sigmoid, "tanh": sb.tanh, "exp": sp.exp, "sin": sp.sin}[t[0]](t[1][1])))
    powers = st.tuples(children, st.integers(0, 3)).map(lambda t: (f"({t[0][0]})**{t[1]}", t[0][1] ** t[1]))
    neg = children.map(lambda c: (f"-({c[0]})", -c[1]))
    return st.one_of(binary.map(build), funcs, powers, neg)


@settings(max_examples=60, deadline=None)
@given(st.recursive(_leaves, _extend, max_leaves=8))
def test_random_expressions_parse_to_the_same_sympy_object(pair):
    text, expected = pair
    try:
        got = sb.parse_expr(text, ["x", "y", "z"])
    except SpecError as exc:        # refused only for a piece beyond float64, e.g. exp(exp(7))
        assert "too large for a float64" in str(exc)
        piece = re.search(r"\): '(.*)' \(column", str(exc)).group(1)
        assert piece in text
        from sympy.parsing.sympy_parser import parse_expr as sympy_parse      # the test's own text
        value = sympy_parse(piece, local_dict={"sigmoid": sb.sigmoid, "tanh": sb.tanh})
        assert value.is_number and abs(sp.N(value, 20)) > 1.79e308, (text, str(exc))
        return
    assert sp.simplify(got - expected) == 0


def test_parse_values():
    assert parse_values("x=3, w1=0.1,y=-1") == {"x": 3, "w1": sp.Rational(1, 10), "y": -1}
    for bad in ["x", "x=a", "=3", "x=1+", "", "x=__import__('os')"]:
        with pytest.raises(SpecError):
            parse_values(bad)
    with pytest.raises(SpecError, match="x1 is given twice"):
        parse_values("x1=4,x1=3,y=1")


# ----------------------------------------------------------------- spec files
def test_seed002_spec_builds_the_notes_graph():
    g = sb.load_spec(EXAMPLES / "seed002.toml")
    x1, x2, y, w1, w2, b, a1, a2, yhat = sp.symbols("x1 x2 y w1 w2 b a_1 a_2 yhat")
    assert g.input_names == ["x1", "x2"] and g.target_names == ["y"]
    assert g.param_names == ["w1", "w2", "b"]
    assert g.expr("a_1") == w1 * x1 and g.expr("a_2") == w2 * x2 and g.expr("yhat") == b + a1 + a2
    assert g.expr(g.loss_name) == (yhat - y) ** 2 and g.reduction == "mean"


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_spec_gradients_match_sympy_diff_of_unrolled_loss(path):
    g = sb.load_spec(path)
    d = sb.derive(g)
    loss = g.unrolled()[g.loss_name].rewrite(sp.exp)
    point = {g.symbol(n): sp.Rational(k + 2, 7) * (-1) ** k for k, n in enumerate(g.order)
             if g.kind(n) in ("input", "target", "param")}
    for p in d.params:
        mine = d.gradient(p, form="expanded").rewrite(sp.exp).xreplace(point)
        oracle = sp.diff(loss, g.symbol(p)).xreplace(point)
        assert abs(float(sp.N(mine - oracle))) < 1e-12, p


def test_seed004_spec_carries_its_worked_example():
    spec = read_spec(EXAMPLES / "seed004.toml")
    assert spec.values == {"x": 3, "w1": sp.Rational(1, 10), "y": 1} and spec.lr == 1
    ev = sb.derive(spec.graph).evaluate(spec.values)
    assert ev["forward"]["C"] == sp.Rational(49, 100)
    assert ev["gradient"]["w1"] == sp.Rational(-21, 5)
    assert spec.values["w1"] - spec.lr * ev["gradient"]["w1"] == sp.Rational(43, 10)


def test_seed000_spec_halves_the_cost_as_the_notes_do():
    g = sb.load_spec(EXAMPLES / "seed000.toml")
    d = sb.derive(g)
    p, y, c, x1 = sp.symbols("p y c x1")
    # dC/dw1 = (p - y) * ReLU'(c) * x1, with ReLU'(c) = 1 for c >= 0 (seed 000)
    grad = d.gradient("w1")
    for cv, slope in ((sp.Rational(1, 2), 1), (0, 1), (-sp.Rational(1, 2), 0)):
        assert sp.simplify(grad.subs({c: cv}) - (p - y) * slope * x1) == 0


BAD_SPECS = [
    ("inputs = [x]", "not valid TOML"),
    ('inputs = ["x"]\nparams = ["w"]\nbogus = 1\n[loss]\ncost = "w*x"', "unknown key"),
    ('inputs = ["x"]\n[loss]\ncost = "x"', "no params"),
    ('params = ["w"]\n[nodes]\na = "w*q"\n[loss]\ncost = "a"', "unknown name"),
    ('params = ["w"]\n[nodes]\na = 3\n[loss]\ncost = "w"', "expression text"),
    ('params = ["w"]\n[nodes]\na = "w.__class__"\n[loss]\ncost = "a"', "attribute access"),
    ('params = ["w"]\n[nodes]\na = "w"', "missing [loss]"),
    ('params = ["w"]\n[loss]\ncost = "w**2"\nreduction = "max"', "reduction"),
    ('params = ["w", "w"]\n[loss]\ncost = "w**2"', "duplicate"),
    ('params = ["1w"]\n[loss]\ncost = "w**2"', "invalid name"),
    ('params = "w"\n[nodes]\nw = "2"\n[loss]\ncost = "w**2"', "duplicate"),
    ('params = ["w"]\n[loss]\ncost = "w**2"\n[example]\nvalues = {q = 1}', "not an input"),
    ('params = ["w"]\n[loss]\ncost = "w**2"\n[example]\nlr = "fast"', "lr must be a number"),
    ('params = [1, 2]\n[loss]\ncost = "w**2"', "list of names"),
    ('params = ["lambda"]\n[loss]\ncost = "w**2"', "Python keyword"),
    ('params = ["w"]\n[nodes]\nif = "w"\n[loss]\ncost = "w**2"', "Python keyword"),
    # 16,000 nodes ran for minutes in 4 GB (each parsed against all before it): refused at once
    ('inputs = ["x"]\nparams = ["w"]\n[nodes]\n' + "".join(f'n{i} = "w*x"\n' for i in range(2000))
     + '[loss]\ncost = "n0"', "2,002 names; a spec file holds at most 2,000"),
]


@pytest.mark.parametrize("text,why", BAD_SPECS, ids=[b[1] for b in BAD_SPECS])
def test_bad_spec_files(text, why, tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        sb.load_spec(path)
    assert why in str(info.value) and "bad.toml" in str(info.value)


def test_missing_and_binary_spec_files(tmp_path):
    with pytest.raises(SpecError, match="no such spec file"):
        sb.load_spec(tmp_path / "nope.toml")
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(SpecError, match="UTF-8"):
        sb.load_spec(tmp_path / "bin.toml")
    with pytest.raises(SpecError, match="directory"):
        sb.load_spec(tmp_path)


# ------------------------------------------------------------------ matrix graphs in spec files
def test_matrix_spec_file_matches_autograd():
    """examples/skip_connection.toml: its gradients against autograd of a NumPy forward pass."""
    import autograd.numpy as anp
    from autograd import grad as ag_grad
    from pathlib import Path
    spec = read_spec(Path(__file__).parent.parent / "examples" / "skip_connection.toml")
    d = sb.derive(spec.graph)
    rng = np.random.default_rng(0)
    shapes = {"X": (5, 3), "W1": (3, 4), "b1": (1, 4), "W2": (4, 4), "b2": (1, 4), "W3": (4, 2), "b3": (1, 2)}
    vals = {k: rng.normal(size=s) for k, s in shapes.items()}
    vals["Y"] = np.eye(2)[rng.integers(0, 2, 5)]

    def loss(v):
        A1 = anp.tanh(anp.dot(v["X"], v["W1"]) + v["b1"])
        H = A1 + anp.maximum(anp.dot(A1, v["W2"]) + v["b2"], 0)
        Z = anp.dot(H, v["W3"]) + v["b3"]
        logS = Z - anp.log(anp.sum(anp.exp(Z), axis=1, keepdims=True))
        return -anp.sum(v["Y"] * logS) / 5 + (anp.sum(v["W1"] ** 2) + anp.sum(v["W2"] ** 2)) / 200
    got = d.evaluate(vals)["gradient"]
    for p in d.params:
        want = ag_grad(lambda x, p=p: loss({**vals, p: x}))(vals[p])
        np.testing.assert_allclose(got[p], want, rtol=1e-8, atol=1e-12, err_msg=p)


@pytest.mark.parametrize("shapes,nodes,match", [
    ({"x": ["m", 2]}, {"h": "x @ w"}, "@ multiplies matrices"),
    ({"x": ["m", 2], "w": [3, 1]}, {"h": "x @ w"}, "shapes do not fit"),
    ({"x": ["m", 2], "w": [2, 3]}, {"h": "x @ w + x"}, "terms of shapes m×3, m×2 do not fit together in 'x @ w \\+ x'"),
    ({"x": ["m", 2], "w": [2, 1]}, {"h": "w.T.__class__"}, "attribute"),
    ({"x": ["m", 2], "w": [2, 1]}, {"h": "x.shape"}, "attribute"),
    ({"w": [2, 1]}, {"h": "x.T"}, "transpose"),
    ({"x": ["m", 2], "w": [2, 1], "q": [1, 1]}, {"h": "x @ w"}, "not declared"),
    ({"x": ["m", 0]}, {"h": "x"}, "positive integer"),
    ({"x": "m x 2"}, {"h": "x"}, "rows, cols"),
])
def test_matrix_spec_mistakes_are_one_clear_error(shapes, nodes, match):
    data = {"inputs": ["x"], "targets": ["y"], "params": ["w"], "shapes": shapes, "nodes": nodes,
            "loss": {"cost": "(h - y)**2"}}
    with pytest.raises(SpecError, match=match):
        spec_from_dict(data)
