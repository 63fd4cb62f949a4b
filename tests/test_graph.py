"""Graph definitions: what is accepted, and every malformed definition's error."""
import re

import pytest
import sympy as sp

import symback as sb


def small_graph():
    g = sb.Graph()
    x = g.inputs("x")
    y = g.targets("y")
    w, b = g.params("w, b")
    z = g.node("z_1", w * x + b)
    a = g.node("a_1", sb.sigmoid(z))
    return g, x, y, w, b, z, a


def raises_naming(culprit: str, *words: str):
    """pytest.raises for a SymbackError whose message names `culprit` and each of `words`."""
    pattern = "".join(f"(?=.*{re.escape(w)})" for w in (culprit, *words))
    return pytest.raises(sb.SymbackError, match=re.compile(pattern, re.S | re.I))


def test_declaration_order_and_kinds():
    g, x, y, w, b, z, a = small_graph()
    g.loss((a - y) ** 2)
    assert g.input_names == ["x"] and g.target_names == ["y"] and g.param_names == ["w", "b"]
    assert g.node_names == ["z_1", "a_1"]
    assert [g.kind(n) for n in g.order] == ["input", "target", "param", "param", "node", "node", "loss"]
    assert g.parents("z_1") == ["x", "w", "b"] and g.children("z_1") == ["a_1"]
    assert g.children("w") == ["z_1"] and g.parents("x") == []
    # the unrolled loss, written here by hand
    assert sp.simplify(g.unrolled()[g.loss_name] - (sb.sigmoid(w * x + b) - y) ** 2) == 0
    assert g.reduction == "mean"


def test_names_accept_comma_space_and_lists():
    g = sb.Graph()
    assert g.inputs(["x1", "x2"]) == sp.symbols("x1 x2")
    assert g.params("w1, w2  w3") == sp.symbols("w1 w2 w3")
    assert g.targets("y_1") == sp.Symbol("y_1")


def test_second_loss():
    g, x, y, w, b, z, a = small_graph()
    g.loss((a - y) ** 2)
    with raises_naming("second loss"):
        g.loss(a)


def test_nothing_after_the_loss():
    g, x, y, w, b, z, a = small_graph()
    g.loss((a - y) ** 2)
    with raises_naming("late", "loss"):
        g.node("late", a + 1)


def test_cycle_node_uses_itself():
    g, x, y, w, b, z, a = small_graph()
    h = sp.Symbol("h")
    with raises_naming("'h'", "cycle"):
        g.node("h", h * w + x)


def test_cycle_through_a_later_node_is_an_unknown_symbol():
    g, x, y, w, b, z, a = small_graph()
    later = sp.Symbol("later")
    with raises_naming("later", "unknown"):
        g.node("early", later + a)


def test_unknown_symbol():
    g, x, y, w, b, z, a = small_graph()
    with raises_naming("q", "unknown"):
        g.node("h", a * sp.Symbol("q"))
    with raises_naming("q", "unknown"):
        g.loss((a - sp.Symbol("q")) ** 2)


@pytest.mark.parametrize("kind", ["inputs", "targets", "params", "node"])
def test_duplicate_name(kind):
    g, x, y, w, b, z, a = small_graph()
    with raises_naming("'a_1'", "duplicate"):
        if kind == "node":
            g.node("a_1", w + 1)
        else:
            getattr(g, kind)("a_1")
    with raises_naming("'w'", "duplicate"):
        g.inputs("w")


def test_duplicate_inside_one_declaration():
    g = sb.Graph()
    with raises_naming("'x'", "duplicate"):
        g.inputs("x x")


@pytest.mark.parametrize("loss", [sp.Matrix([[1, 2]]), "matrix_symbol", "matrix_of_nodes"])
def test_non_scalar_loss(loss):
    g, x, y, w, b, z, a = small_graph()
    if loss == "matrix_symbol":
        loss = sp.MatrixSymbol("M", 2, 2)
    elif loss == "matrix_of_nodes":
        loss = sp.Matrix([a - y, a + y])
    with raises_naming("scalar"):
        g.loss(loss)
    with raises_naming("scalar"):
        g.node("v", sp.Matrix([a, a]))


@pytest.mark.parametrize("bad", ["a\\b", "x%", "a#1", "a&b", "a{1}", "a}", "a^2", "$x", "x~", "1x", "_x",
                                 "a-b", "a b", ""])
def test_bad_names_with_latex_specials(bad):
    g, x, y, w, b, z, a = small_graph()
    with raises_naming(repr(bad)):
        g.node(bad, a + 1)
    if bad.strip() and " " not in bad:       # a declaration splits on spaces
        with raises_naming(repr(bad)):
            g.params(bad)


def test_string_expression_is_refused():
    g, x, y, w, b, z, a = small_graph()
    with raises_naming("'h'", "string"):
        g.node("h", "w*x")


def test_loss_that_depends_on_no_parameter():
    g = sb.Graph()
    x = g.inputs("x")
    y = g.targets("y")
    g.params("w")
    with raises_naming("loss", "parameter"):
        g.loss((x - y) ** 2)


def test_symbol_with_other_assumptions():
    g, x, y, w, b, z, a = small_graph()
    with raises_naming("'w'", "assumptions"):
        g.node("h", sp.Symbol("w", positive=True) * a)


def test_bad_reduction():
    g, x, y, w, b, z, a = small_graph()
    with raises_naming("median", "reduction"):
        g.loss((a - y) ** 2, reduction="median")


def test_incomplete_graphs_do_not_derive():
    g, x, y, w, b, z, a = small_graph()
    with raises_naming("no loss"):
        sb.derive(g)
    g2 = sb.Graph()
    x2 = g2.inputs("x")
    g2.loss(g2.node("h", x2 ** 2))
    with raises_naming("no parameters"):
        sb.derive(g2)
