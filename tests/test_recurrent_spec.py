"""Recurrent networks from spec files: one ``[[layer]]`` of kind RNN, LSTM or GRU.

Oracle: PyTorch autograd of the LSTM and GRU equations written as a plain loop over time
with torch ops (tests/test_recurrent.py's oracle), the network built in Python with
``sb.lstm``/``sb.gru`` for the parameters' names and shapes, and the certificate's
numeric check of every displayed line of the document ``symback derive`` writes.
"""
import re

import numpy as np
import pytest

import symback as sb
from symback.cli import main
from symback.document.certificate import certify
from symback.document.context import context
from symback.errors import SpecError
from symback.spec import spec_from_dict
from test_recurrent import _oracle, _random_params, _rel

LSTM = """
inputs = 2
loss = "mse"
l2 = 0.01

[[layer]]
kind = "LSTM"
hidden = 3
outputs = 1
steps = 3
"""


@pytest.mark.parametrize("cell, builder", [("lstm", sb.lstm), ("gru", sb.gru)])
def test_a_recurrent_spec_is_the_builders_network_and_its_gradient_is_autograds(cell, builder):
    spec = {"inputs": 2, "loss": "mse", "l2": 0.01,
            "layer": [{"kind": cell.upper(), "hidden": 3, "outputs": 1, "steps": 3, "output": "identity"}]}
    g = spec_from_dict(spec, "r.toml").graph
    built = builder(inputs=2, hidden=3, outputs=1, steps=3, output="identity", loss="mse", l2=0.01)
    assert g.param_names == built.param_names
    assert [g.symbol(p).shape for p in g.param_names] == [built.symbol(p).shape for p in built.param_names]
    d = sb.derive(g)
    rng = np.random.default_rng(3)
    params = _random_params(d, rng)
    X, Y = rng.normal(size=(5, 3 * 2)), rng.normal(size=(5, 1))
    want_loss, want = _oracle(cell, params, X, Y, 3, 2, 0.01)
    m = sb.compile(d, backend="numpy", dtype="float64")
    assert _rel(m.loss(X, Y, params), want_loss) < 1e-8
    grads = m.grad(X, Y, params)
    for name in d.params:
        assert _rel(grads[name], want[name]) < 1e-8, name


def test_an_elman_rnn_spec_takes_its_activation():
    spec = {"inputs": 2, "layer": [{"kind": "RNN", "hidden": 2, "outputs": 1, "steps": 2, "activation": "relu"}]}
    g = spec_from_dict(spec).graph
    assert g.param_names == ["Wx", "Wh", "bh", "Wy", "by"] and g.steps == 2
    assert "relu" in str(g.expr("h2")).lower()


def test_derive_of_an_lstm_spec_writes_a_certified_document(tmp_path, capsys, monkeypatch):
    (tmp_path / "lstm.toml").write_text(LSTM)
    monkeypatch.chdir(tmp_path)
    assert main(["derive", "lstm.toml", "-o", "lstm.md"]) == 0
    text = (tmp_path / "lstm.md").read_text()
    assert r"c_{3} &= c_{2} \odot f_{3} + g_{3} \odot i_{3}" in text
    assert "## Backpropagation through time" in text
    d = sb.derive(sb.load_spec(tmp_path / "lstm.toml"))
    assert certify(d, context(d, cost=False, verify=False, figure=False))["lines"] > 10


@pytest.mark.parametrize("change, message", [
    ({"layer": [{"kind": "LSTM", "hidden": 3, "outputs": 1, "steps": 2}, {"kind": "Dense", "units": 1}]},
     "the LSTM layer is the whole network"),
    ({"inputs": [2, 2]}, "inputs must be a positive integer for the GRU layer"),
    ({"layer": [{"kind": "GRU", "hidden": 3, "outputs": 1}]}, "layer 1 (GRU): missing steps"),
    ({"layer": [{"kind": "LSTM", "hidden": 3, "outputs": 1, "steps": 2, "activation": "relu"}]},
     "layer 1 (LSTM): unknown key(s) activation"),
    ({"layer": [{"kind": "GRU", "hidden": 3, "outputs": 1, "steps": 10 ** 5}]}, "steps must be at most 1000"),
    ({"layer": [{"kind": "GRU", "hidden": 0, "outputs": 1, "steps": 2}]}, "hidden must be an integer"),
    ({"layer": [{"kind": "LSTM", "hidden": 3, "outputs": 1, "steps": 2, "output": "softmax"}]},
     "layer 1 (LSTM): loss 'mse' and output 'softmax' do not go together"),
    ({"layer": [{"kind": "RNN", "hidden": 3, "outputs": 1, "steps": 2, "activation": "nope"}]},
     "layer 1 (RNN): unknown activation"),
    ({"layer": [{"kind": "lstm"}]}, "kind must be one of Dense"),
])
def test_bad_recurrent_specs_name_the_problem(change, message):
    spec = {"inputs": 2, "loss": "mse", "layer": [{"kind": "GRU", "hidden": 3, "outputs": 1, "steps": 2}]}
    with pytest.raises(SpecError, match=re.escape(message)):
        spec_from_dict({**spec, **change}, "r.toml")


def test_a_bad_recurrent_spec_is_one_line_on_the_command_line(tmp_path, capsys, monkeypatch):
    (tmp_path / "bad.toml").write_text(LSTM.replace("steps = 3", "steps = 0"))
    monkeypatch.chdir(tmp_path)
    assert main(["derive", "bad.toml", "--format", "text"]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.toml: layer 1 (LSTM): steps must be an integer" in err
