"""The command line's help texts, taken at their word (a README audit's findings).

Oracles: the activation registry of a fresh process (every built-in activation the
parser accepts must be named in ``--activation``'s help), the ``templates/`` folder (every
built-in template must be named in ``--template``'s help), and argparse's own option list
(every option that takes a value says what it does or its default).
"""
import functools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from symback.cli import build_parser
from _command import main_run

ROOT = Path(__file__).resolve().parent.parent


def _subparsers():
    parser = build_parser()
    action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return action.choices


def _help(command: str, option: str) -> str:
    sub = _subparsers()[command]
    action = next(a for a in sub._actions if option in a.option_strings)
    return " ".join((action.help or "").split())


@functools.lru_cache(maxsize=None)
def _builtin_activations() -> tuple:
    # a fresh process (one for the three commands' tests): other tests register activations
    # (mish, ...) in this one's registry
    code = "import json, symback.functions as f; print(json.dumps(sorted(f.ACTIVATIONS)))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    return tuple(json.loads(r.stdout))


@pytest.mark.parametrize("command", ["derive", "train", "codegen"])
def test_activation_help_names_every_builtin_activation(command):
    """It named seven of nine: gelu and silu were accepted by --activation but not listed."""
    text = _help(command, "--activation")
    names = _builtin_activations()
    assert {"gelu", "silu", "leaky_relu"} <= set(names)
    missing = [n for n in names if n not in text.replace(",", " ").split()]
    assert missing == [], (missing, text)
    assert "leaky_relu:" in text          # the slope syntax the README uses (leaky_relu:0.1)


def test_template_help_names_every_builtin_template():
    """It listed markdown beside the LaTeX templates, so `--template markdown` (printing LaTeX)
    failed with 'no latex template'; the help now says which templates go with which format."""
    text = _help("derive", "--template")
    builtin = sorted({p.name.split(".")[0] for p in (ROOT / "templates").glob("[!_]*.j2")})
    assert builtin == ["article", "beamer", "markdown", "snippet"]
    for name in builtin:
        assert name in text, (name, text)
    assert "LaTeX" in text and "Markdown" in text


@pytest.mark.parametrize("command", ["derive", "train", "codegen", "demo"])
def test_every_option_that_takes_a_value_has_help(command):
    """--optimizer, --dtype and demo's --dataset had no help text (their defaults unsaid)."""
    sub = _subparsers()[command]
    bare = [a.option_strings for a in sub._actions
            if a.option_strings and a.nargs != 0 and not a.help]
    assert bare == []


def test_codegen_description_says_which_library_its_module_needs(tmp_path):
    """It said 'needs NumPy only' for every --backend; a torch module imports torch."""
    sub = _subparsers()["codegen"]
    out = tmp_path / "net_torch.py"
    r = main_run("codegen", "--layers", "2,3,1", "--backend", "torch", "-o", out, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    imports = {line.split()[1] for line in out.read_text().splitlines()
               if line.startswith("import ")}
    assert "torch" in imports
    assert "NumPy only" not in sub.description and "--backend" in sub.description


def test_chain_form_of_a_deep_scalar_chain_has_no_recursion_limit():
    """README: 'a chain of 1,000 scalar nodes derives'; d.gradient(p) (the chain form) raised
    RecursionError from 300 tanh layers (600 nodes) up, its δs substituted recursively.  Oracle:
    torch autograd of the same chain, the chain form evaluated at torch's forward values."""
    import numpy as np
    import sympy as sp
    import torch

    import symback as sb
    depth = 300
    g = sb.Graph()
    x, y = g.inputs("x"), g.targets("y")
    a = x
    for l in range(1, depth + 1):
        w, b = g.params(f"w{l} b{l}")
        a = g.node(f"a{l}", sb.tanh(g.node(f"z{l}", a * w + b)))
    g.loss((a - y) ** 2 / 2)
    d = sb.derive(g)
    rng = np.random.default_rng(0)
    values = {f"{k}{l}": float(v) for l in range(1, depth + 1)
              for k, v in zip("wb", (1.0 + 0.1 * rng.normal(), 0.1 * rng.normal()))}
    t = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in values.items()}
    nodes, h = {"x": 0.7, "y": -0.2}, torch.tensor(0.7, dtype=torch.float64)
    for l in range(1, depth + 1):
        z = h * t[f"w{l}"] + t[f"b{l}"]
        h = torch.tanh(z)
        nodes[f"z{l}"], nodes[f"a{l}"] = z.item(), h.item()
    ((h - nodes["y"]) ** 2 / 2).backward()
    at = {**values, **nodes}
    for p in ("w1", "b1", f"w{depth}"):
        expr = d.gradient(p)
        number = float(expr.xreplace({s: sp.Float(at[s.name]) for s in expr.free_symbols}).doit().evalf())
        assert number == pytest.approx(t[p].grad.item(), rel=1e-9, abs=1e-300), p
