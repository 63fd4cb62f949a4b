"""Findings of the spec-file fuzzer: random valid and invalid TOML specs through the command line.

Oracle: the command-line contract (DESIGN.md): bad input exits non-zero with exactly one line
on stderr starting ``symback: error:``, never the internal-error line of a bug, and writes no
file; for valid specs, PyTorch autograd of the same network written in the test with torch ops.
"""
import pytest

from _command import main_run


def _refused(tmp_path, text, *words):
    """`symback derive` and `codegen` of the spec `text`: exit 2 (bad input), one error line
    holding `words`, no module written."""
    (tmp_path / "s.toml").write_text(text, encoding="utf-8")
    for verb in (["derive", "s.toml", "--format", "text"], ["codegen", "s.toml", "-o", "m.py"]):
        r = main_run(*verb, cwd=tmp_path)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2, r.stderr
        assert len(lines) == 1 and lines[0].startswith("symback: error: "), r.stderr
        assert "internal error" not in r.stderr and "Traceback" not in r.stderr
        for word in words:
            assert word in lines[0], (word, lines[0])
        assert not (tmp_path / "m.py").exists()


@pytest.mark.parametrize("kind", ['["Dense"]', '{ name = "Dense" }'])
def test_a_layer_kind_that_is_a_list_or_a_table_is_bad_input_not_a_bug(tmp_path, kind):
    # was: "internal error, a bug in symback (TypeError: unhashable type: 'list')", exit 1,
    # from `kind in LAYER_KEYS` on the unhashable value
    _refused(tmp_path, f"inputs = 4\n[[layer]]\nkind = {kind}\nunits = 1\n", "layer 1", "kind must be")


def test_a_recurrent_kind_inside_a_residual_says_why_it_is_refused(tmp_path):
    # was: "kind must be one of ..., RNN, LSTM, GRU, got 'LSTM'": the list named the kind it refused
    text = ('inputs = 4\n[[layer]]\nkind = "Residual"\n[[layer.layers]]\nkind = "LSTM"\n'
            'hidden = 2\noutputs = 1\nsteps = 2\n[[layer]]\nkind = "Dense"\nunits = 1\n')
    _refused(tmp_path, text, "LSTM is a whole network", "Residual")


def test_training_a_spec_whose_loss_uses_no_node_finishes_and_reports(tmp_path):
    # was: the parameters saved, then "symback: error: ... this graph has no prediction node"
    # with exit 2 (the accuracy line asked predict() before looking at the output function):
    # a failing exit that had written its --out file
    import numpy as np
    (tmp_path / "s.toml").write_text('inputs = ["x1"]\ntargets = ["y"]\nparams = ["w"]\n'
                                     '[loss]\ncost = "(w*x1 - y)**2"\n', encoding="utf-8")
    (tmp_path / "data.csv").write_text("x1,y\n1,2\n3,4\n", encoding="utf-8")
    np.savez(tmp_path / "start.npz", w=np.array(0.3))
    r = main_run("train", "s.toml", "data.csv", "--epochs", "1", "--lr", "0.1", "--resume", "start.npz",
                 "--out", "p.npz", cwd=tmp_path)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    # oracle: one full-batch SGD step by hand, w - lr · mean 2(w x - y) x
    x, y, w = np.array([1.0, 3.0]), np.array([2.0, 4.0]), 0.3
    want = w - 0.1 * np.mean(2 * (w * x - y) * x)
    assert abs(float(np.load(tmp_path / "p.npz")["w"]) - want) < 1e-12


def test_a_worked_example_with_a_huge_input_is_evaluated_not_an_internal_error(tmp_path):
    # was: "internal error, a bug in symback (OverflowError: too many digits in integer)", exit 1:
    # sp.simplify of the substituted node (σ(10³⁰)) reached nsimplify and mpmath's exp overflowed;
    # at x = 10⁸ the same simplify ran for minutes (killed at 100 s)
    import math
    (tmp_path / "s.toml").write_text(
        'inputs = ["x"]\ntargets = ["y"]\nparams = ["w1", "b1"]\n[nodes]\na1 = "sigmoid(w1*x + b1)"\n'
        '[loss]\ncost = "(a1 - y)**2"\n[example]\nvalues = { x = 1000000000000000000000000000000, '
        'w1 = 1, b1 = 0, y = 2 }\n', encoding="utf-8")
    r = main_run("derive", "s.toml", "--format", "text", cwd=tmp_path)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    shown = dict(line.strip().split(" = ") for line in r.stdout.split("worked example:")[1].splitlines()[1:]
                 if " = " in line)
    # oracle: the float formulas, σ(z) = 1/(1 + e^(−z)), C = (a1 − y)², ∂C/∂w1 = 2(a1 − y) σ(1 − σ) x
    a1 = 1 / (1 + math.exp(-1e30))
    assert float(shown["a1"]) == pytest.approx(a1, rel=1e-9)
    assert float(shown["C"]) == pytest.approx((a1 - 2) ** 2, rel=1e-9)
    assert float(shown["dC/dw1"]) == pytest.approx(2 * (a1 - 2) * a1 * (1 - a1) * 1e30, abs=1e-9)
