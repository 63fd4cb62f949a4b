"""The compiler's passes over statements (symback.passes) and the printing after them.

Each pass is run on a few statements written here and its conditions are checked both
ways (the rewrite made, and refused where it would change a value); the numbers of the
code they give are checked against autograd by test_differential, test_backends and the
other compile tests.  The compile path reads no generated text back: none of its modules
imports ``re``."""
from __future__ import annotations

import ast
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import sympy as sp

import symback as sb
from symback.lowering import Stmt, Tr
from symback.module import codegen_module
from symback.passes import Function, fuse_updates, shared_ones, sum_products
from symback.printing.jax import JaxPrinter
from symback.printing.numpy import NumpyPrinter
from symback.printing.torch import TorchPrinter
from symback.straightline import FunctionSpec

A, W, b, t, Z, g, D, m = sp.symbols("A W b t Z g D m", real=True)
SHAPES = {A: (5, 3), W: (3, 4), b: (1, 4), t: (5, 4), Z: (5, 4), g: (3, 4), D: (5, 4)}


def _fn(printer, results=(Z,), updates=None):
    low = SimpleNamespace(shapes=dict(SHAPES), shape_of=lambda e: ())
    return Function(FunctionSpec("f", "X", "", results, "", updates=updates), low, printer)


def _bias_sum(between=()):
    return [Stmt(W, "param", ("W",), (3, 4)), Stmt(b, "param", ("b",), (1, 4)),
            Stmt(t, "matmul", (A, W), (5, 4)), *between, Stmt(Z, "let", (t + b,), (5, 4))]


def test_a_product_read_only_by_its_bias_sum_becomes_one_addmm():
    out = sum_products(_bias_sum(), _fn(TorchPrinter()))
    assert [st.op for st in out] == ["param", "param", "addmm"]
    assert out[-1] == Stmt(Z, "addmm", (b, A, W), (5, 4))


def test_a_product_does_not_move_past_an_update_or_to_a_second_reader():
    updates = {"A": (A, g)}
    moved = _bias_sum(between=[Stmt(A, "update", (g, "A", A), ())])
    assert "addmm" not in [st.op for st in sum_products(moved, _fn(TorchPrinter(), updates=updates))]
    twice = _bias_sum() + [Stmt(D, "let", (2 * t,), (5, 4))]
    assert "addmm" not in [st.op for st in sum_products(twice, _fn(TorchPrinter(), results=(Z, D)))]
    # a library without the kernel keeps the product and the sum
    assert [st.op for st in sum_products(_bias_sum(), _fn(NumpyPrinter()))] == ["param", "param", "matmul", "let"]


def test_an_update_carries_the_product_computed_just_before_it():
    body = [Stmt(g, "matmul", (Tr(A), D), (3, 4)), Stmt(W, "update", (g, "W", W), ())]
    fused = fuse_updates(body, _fn(NumpyPrinter(), results=(), updates={"W": (W, g)}))
    assert fused == [Stmt(W, "update", (body[0], "W", W), ())]
    # on torch the product is accumulated into W (addmm_)
    torch_body = sum_products(fused, _fn(TorchPrinter(), results=(), updates={"W": (W, g)}))
    assert torch_body[0].args[0].op == "addmm"
    # g returned, or a JAX step (which binds W's new value to its name): two statements
    assert fuse_updates(body, _fn(NumpyPrinter(), results=(g,), updates={"W": (W, g)})) == body
    assert fuse_updates(body, _fn(JaxPrinter(), results=(), updates={"W": (W, g)})) == body


def test_the_row_of_ones_is_fetched_once_where_two_column_sums_read_it():
    body = [Stmt(m, "batch", (), ()), Stmt(t, "colsum", (D,), (1, 4)), Stmt(Z, "colsum", (t,), (1, 4))]
    out = shared_ones(body, _fn(NumpyPrinter(), results=(Z,)))
    assert [st.op for st in out] == ["batch", "ones", "colsum", "colsum"]
    assert all(st.args[1] == out[1].target for st in out[2:])
    assert shared_ones(body[:2], _fn(NumpyPrinter(), results=(t,))) == body[:2]
    assert shared_ones(body, _fn(TorchPrinter(), results=(Z,))) == body


def test_generated_numpy_step_fetches_ones_once_and_names_buffers_for_their_values():
    src = codegen_module(sb.derive(sb.mlp([3, 5, 4, 2])), "float64", NumpyPrinter(), vjp=False)
    step = src[src.index("def _step"):src.index("\n\n\n", src.index("def _step"))]
    assert step.count("_ones(m)") == 1 and "b1 -= ones @ delta_Z1" in step
    assert "Z1 = X @ W1\n    Z1 += b1\n" in step           # no temporary copied into Z1
    ns = {}
    exec(compile(src, "<mlp>", "exec"), ns)
    X, Y = np.random.default_rng(0).normal(size=(7, 3)), np.random.default_rng(1).normal(size=(7, 2))
    params = ns["init"](0)
    before = {k: v.copy() for k, v in params.items()}
    _, grads = ns["_grad"](X, Y, params)
    ns["_step"](X, Y, params, 0.1)
    for (k, v), gk in zip(before.items(), grads):
        assert np.allclose(params[k], v - 0.1 * gk)


def test_the_compile_path_reads_no_generated_text_back():
    root = Path(sb.__file__).parent
    for name in ("straightline.py", "passes.py", "printing/numpy.py", "printing/jax.py", "printing/torch.py",
                 "printing/inplace.py"):
        tree = ast.parse((root / name).read_text())
        imported = {a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
        imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        assert "re" not in imported, name


def _frees_checked(source: str) -> int:
    """The number of names the functions of `source` delete, each checked: a name deleted is
    bound earlier, read nowhere after (nor returned) and no argument of its function."""
    deleted = 0
    for fn in (n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef)):
        args = {a.arg for a in fn.args.args}
        bound = set()
        for k, s in enumerate(fn.body):
            if isinstance(s, ast.Delete):
                later = {n.id for s2 in fn.body[k + 1:] for n in ast.walk(s2) if isinstance(n, ast.Name)}
                for t in s.targets:
                    assert t.id in bound and t.id not in args and t.id not in later, (fn.name, t.id)
                    deleted += 1
            elif isinstance(s, ast.Assign) and isinstance(s.targets[0], ast.Name):
                bound.add(s.targets[0].id)
    return deleted


def test_numpy_and_torch_functions_delete_each_temporary_after_its_last_use():
    # a freed buffer goes back to the allocator while it holds it (autograd frees a saved
    # tensor once its backward ran); the values are the differential tests' business
    nets = [sb.Sequential(sb.TransformerBlock(heads=2, hidden=8, causal=True), sb.Dense(4), inputs=(3, 4), loss="mse"),
            sb.Sequential(sb.Conv2d(2, 3, padding=1, activation="relu"), sb.MaxPool2d(2), sb.Flatten(),
                          sb.Dense(3, "softmax"), inputs=(1, 4, 4), loss="cross_entropy"),
            sb.mlp([3, 5, 2], activation="tanh", loss="mse")]
    for net in nets:
        d = sb.derive(net)
        for printer in (TorchPrinter(), NumpyPrinter()):
            assert _frees_checked(codegen_module(d, printer=printer)) > 0
        # (a jitted function's values are XLA's buffers, not Python names)
        assert "del " not in codegen_module(d, printer=JaxPrinter())
