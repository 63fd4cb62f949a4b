"""The node kinds (symback.kinds): each kind's two evaluations agree, it prints one way,
consumers never name it, and a kind written in a test file alone (definition, VJP from
SymPy, lowering, printing) derives, compiles and trains with no consumer changed."""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

import symback as sb
from symback.evaluate import value_of
from symback.image import ImageMap
from symback.kinds import Elementwise, FPrime, RowCost, RowNorm, Select, Softmax, SoftmaxVJP
from symback.kinds.base import Kind
from symback.matrix import ENTRY, explicit
from symback.printing.latex import latex

PACKAGE = Path(__file__).resolve().parent.parent / "symback"

A, B = sp.MatrixSymbol("A", 3, 4), sp.MatrixSymbol("B", 3, 4)
S = sp.MatrixSymbol("S", 4, 4)


def _kinds():
    tanh = sp.Lambda(ENTRY, sb.get_activation("tanh")(ENTRY))
    a, y = sp.symbols("a y", real=True)
    return {
        "softmax": Softmax(A),
        "softmax causal": Softmax(S, "causal"),
        "rownorm": RowNorm(A),
        "rowcost": RowCost("mse", A, B),
        "fprime": FPrime(tanh, A),
        "elementwise": Elementwise(sp.Lambda((a, y), a * sp.exp(-y)), A, B),
        "softmax vjp": SoftmaxVJP(B, A),
        "select": Select.of(4, 1, 2),
        "avgpool": ImageMap(sp.MatrixSymbol("I", 2, 16), "avgpool", (2, 4, 4, 2, 2, 0)),
    }


@pytest.mark.parametrize("name", list(_kinds()))
def test_numeric_evaluation_is_the_exact_one(name):
    """NumPy's value (the kind's numeric_value or definition) equals SymPy's exact value written
    out entry by entry (explicit_value), two paths that share no arithmetic."""
    kind = _kinds()[name]
    rng = np.random.default_rng(0)
    env = {m: rng.normal(size=tuple(int(d) for d in m.shape)) for m in kind.atoms(sp.MatrixSymbol)
           if not isinstance(m, Select)}
    exact = explicit(kind.xreplace({m: sp.ImmutableMatrix(v) for m, v in env.items()}), 3)
    numeric = value_of(kind, env, 3)
    assert np.asarray(numeric).shape == exact.shape
    assert np.allclose(np.asarray(exact.evalf(), dtype=float), numeric, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", list(_kinds()))
def test_one_latex_path(name):
    """SymPy's own printer and symback's print a kind alike: the kind's _latex is the only form."""
    kind = _kinds()[name]
    assert sp.latex(kind) == latex(kind)


def test_latex_keeps_what_the_documents_print():
    assert latex(Softmax(S, "causal")) == r"\operatorname{softmax}_{\mathrm{causal}}\left(S\right)"
    assert latex(RowCost("mse", A, B)) == r"\ell\left(A, B\right)"


def _names(path: Path, function: str | None = None) -> set:
    tree = ast.parse(path.read_text())
    if function:
        tree = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == function)
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | \
        {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}


@pytest.mark.parametrize("module, function", [("vjp.py", "local_factor"), ("lowering.py", None),
                                              ("evaluate.py", "value_of"), ("evaluate.py", "numeric"), ("graph.py", None),
                                              ("printing/latex.py", None), ("printing/text.py", None)])
def test_consumers_dispatch_without_naming_the_kind(module, function):
    """The engine, the lowering, the evaluator, the graph and the printers ask the kind
    (vjp, lower, numeric_value, node_prefix, _latex) and never test which kind it is.
    (vjp.py names FPrime where its matrix calculus writes SymPy's f' as one, evaluate.py
    Elementwise where it builds one.)"""
    kinds = {"Softmax", "SoftmaxVJP", "RowNorm", "FPrime", "Elementwise", "ImageMap", "MaxPoolVJP"}
    assert not kinds & _names(PACKAGE / module, function)


def test_a_kind_module_imports_no_consumer():
    for path in (PACKAGE / "kinds").glob("*.py"):
        tree = ast.parse(path.read_text())
        mods = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not {m for m in mods if m.split(".")[-1] in
                    ("lowering", "evaluate", "printing", "document", "engine", "graph", "matrix", "vjp")}, path


# ------------------------------------------------------------------ a kind added in one place
class Cube(Kind, sp.MatrixExpr):
    """Z ⊙ Z ⊙ Z: a kind written here only, to show that adding one touches no consumer."""

    node_prefix = "K_"

    def __new__(cls, arg):
        return super().__new__(cls, arg)

    @property
    def arg(self):
        """Z."""
        return self.args[0]

    @property
    def shape(self):
        return self.args[0].shape

    def definition(self):
        """The kind as matrix operations."""
        return sp.HadamardProduct(self.arg, self.arg, self.arg)

    def vjp(self, D, parent, P=None):
        """SymPy's matrix calculus of the definition: ∂ tr(Dᵀ Z⊙Z⊙Z)/∂Z (not typed here)."""
        return sp.Trace(D.T * self.definition()).diff(parent)

    def lower(self, lo, target=None):
        """The definition's element-wise formula."""
        return lo.scalar(self.definition())

    def _latex(self, printer, exp=None):
        return r"\operatorname{cube}\left(%s\right)" % printer._print(self.arg)


def _cube_graph():
    g = sb.Graph()
    X, Y = g.inputs("X", shape=(sb.BATCH, 2)), g.targets("Y", shape=(sb.BATCH, 1))
    W, V = g.params("W V", shape=[(2, 3), (3, 1)])
    g.node("H", Cube(X @ W) @ V)        # inside a larger expression: lifted into a node K_H
    g.loss(sb.mse(g.symbol("H"), Y))
    return g


def test_a_new_kind_derives_compiles_and_matches_finite_differences():
    g = _cube_graph()
    assert isinstance(g.expr("K_H"), Cube) and g.expr("K_H").arg == g.symbol("Z_K_H")
    d = sb.derive(g)
    m = sb.compile(d)
    rng = np.random.default_rng(1)
    X, Y = rng.normal(size=(5, 2)), rng.normal(size=(5, 1))
    params = {"W": rng.normal(size=(2, 3)) * 0.5, "V": rng.normal(size=(3, 1))}

    def loss(p):            # the network written out in NumPy, no symback in it
        return np.mean(np.sum(((X @ p["W"]) ** 3 @ p["V"] - Y) ** 2, axis=1))

    assert np.isclose(m.loss(X, Y, params), loss(params), rtol=1e-12)
    grads, h = m.grad(X, Y, params), 1e-6
    for name, value in params.items():
        fd = np.zeros_like(value)
        for i in np.ndindex(value.shape):
            up, down = {**params, name: value.copy()}, {**params, name: value.copy()}
            up[name][i] += h
            down[name][i] -= h
            fd[i] = (loss(up) - loss(down)) / (2 * h)
        assert np.allclose(grads[name], fd, rtol=1e-6, atol=1e-8), name
    assert r"\operatorname{cube}" in d.markdown()
