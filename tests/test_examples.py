"""Each example script runs as a user runs it and asserts the numbers it reproduces.

The scripts hold the checks (the seeds' numbers and formulas, hand-written
NumPy, sympy.diff); here they run from a fresh folder, and a failed assertion
inside a script fails the test.  The scripts run as ``__main__`` in this process,
which spares a Python start and SymPy's import each; the transformer example (it sets
BLAS's thread count before NumPy loads) and the README's quick start in a subprocess.
"""
import contextlib
import importlib.util
import io
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SEED_SCRIPTS = sorted(EXAMPLES.glob("seed00*_*.py"))


def run_script(path, cwd, in_process=False):
    """What `python PATH` prints in `cwd`: in a subprocess, or with runpy as __main__ here."""
    if in_process:
        out = io.StringIO()
        with contextlib.chdir(cwd), contextlib.redirect_stdout(out):
            runpy.run_path(str(path), run_name="__main__")
        return out.getvalue()
    r = subprocess.run([sys.executable, str(path)], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_one_script_per_seed():
    assert [p.name[:7] for p in SEED_SCRIPTS] == ["seed000", "seed001", "seed002", "seed003", "seed004"]


# What each script must print beside its own assertions: the notes' numbers and chains.
PRINTS = {
    "seed000": ["dC/dw1 = dC/dp * dp/dc * dc/dw1", "ReLU'(0) = 1"],
    "seed001": ["dC/dw_1 = dC/da_3 * da_3/da_2 * da_2/da_1 * da_1/dw_1"],
    "seed002": ["dLoss/dw1 = dC/dyhat * dyhat/da_1 * da_1/dw1"],
    "seed003": ["case 2: dz/ds = dz/dx * dx/ds + dz/dy * dy/ds"],
    "seed004": ["L = 49/100 = 0.49", "dL/dw1 = -21/5 = -4.2", "w1_new = 43/10 = 4.3", "sup sigma' = 1/4"],
}


@pytest.mark.parametrize("script", SEED_SCRIPTS, ids=lambda p: p.name)
def test_seed_script(script, tmp_path):
    out = run_script(script, tmp_path, in_process=True)
    assert f"{script.name[:4]} {script.name[4:7]} reproduced" in out
    for text in PRINTS[script.name[:7]]:
        assert text in out
    assert list(tmp_path.iterdir()) == []          # examples write nothing unasked


@pytest.mark.skipif(importlib.util.find_spec("sklearn") is None, reason="scikit-learn not installed")
def test_digits_above_95_percent(tmp_path):
    out = run_script(EXAMPLES / "digits.py", tmp_path, in_process=True)
    test_acc = float(out.rsplit("test ", 1)[1].split()[0])
    assert test_acc > 0.95


def test_gradient_flow_elman_decays_lstm_survives(tmp_path):
    out = run_script(EXAMPLES / "gradient_flow.py", tmp_path, in_process=True)       # it asserts the two ratios
    ratios = {line.split(":")[0].strip(): float(line.rsplit("=", 1)[1].split()[0])
              for line in out.splitlines() if "‖∂L/∂h_1‖" in line}
    assert ratios["Elman tanh"] < 0.1 and ratios["LSTM"] > 10 * ratios["Elman tanh"]
    # the README: the Elman network's ratio "falls further as it trains", the LSTM's survives
    after = re.search(r"after 5 epochs: Elman (\S+), LSTM (\S+)", out)
    elman, lstm = float(after.group(1).rstrip(",")), float(after.group(2))
    assert elman < ratios["Elman tanh"] and lstm > 10 * elman


def test_transformer_reverses_held_out_strings(tmp_path):
    # the script asserts ≥ 95 % itself; here its printed held-out accuracy is read back too
    out = run_script(EXAMPLES / "transformer_reverse.py", tmp_path)
    assert "transformer reversal reproduced" in out
    assert float(re.search(r"token accuracy: training \S+, held-out (\S+) ", out).group(1)) >= 0.95


@pytest.mark.skipif(importlib.util.find_spec("sklearn") is None, reason="scikit-learn not installed")
def test_cnn_digits_at_least_98_percent(tmp_path):
    """A CNN (two convolutions, max-pooling) on the 8x8 digits; the script asserts it too."""
    out = run_script(EXAMPLES / "cnn_digits.py", tmp_path, in_process=True)
    test_acc = float(out.rsplit("test ", 1)[1].split()[0])
    assert test_acc >= 0.98
    assert list(tmp_path.iterdir()) == []


README = EXAMPLES.parent / "README.md"


def test_readme_starts_with_the_two_commands():
    first_block = README.read_text().split("```")[1]
    assert first_block.strip().splitlines()[1:] == [
        "pip install . && symback demo",
        'pip install ".[test]" && python3 -m pytest -q',
    ]


def test_readme_quick_start_runs_and_prints_what_it_says(tmp_path):
    block = re.search(r"## Quick start\n\n```python\n(.*?)```", README.read_text(), re.S).group(1)
    assert len(block.splitlines()) <= 10
    r = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    promised = re.search(r"# (x1\*.*)$", block, re.M).group(1)
    assert r.stdout.strip() == promised
    assert (tmp_path / "seed002.tex").read_text().rstrip().endswith("\\end{document}")


def test_readme_commands_are_valid_and_their_files_exist():
    import shlex

    from symback.cli import build_parser
    block = re.search(r"## The command line\n\n```sh\n(.*?)```", README.read_text(), re.S).group(1)
    lines = [l.split("  #")[0].strip() for l in re.sub(r"\\\n\s*", "", block).splitlines()]
    commands = [shlex.split(l)[1:] for l in lines if l.startswith("symback ")]
    assert {c[0] for c in commands} == {"derive", "train", "codegen", "demo"}
    for argv in commands:
        args = build_parser().parse_args(argv)            # a typo in a flag raises SystemExit
        spec = getattr(args, "spec", None) or []
        spec = spec if isinstance(spec, list) else [spec]
        for f in spec + ([args.data] if getattr(args, "data", None) else []):
            assert (EXAMPLES.parent / f).is_file(), argv
