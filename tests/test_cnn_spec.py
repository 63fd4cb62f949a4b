"""CNNs from the command line: spec files of ``[[layer]]`` tables (symback.layerspec).

Oracle: PyTorch autograd of the same network written here with ``torch.nn.functional``
(``conv2d``, overlapping ``max_pool2d``, ``cross_entropy``); bad specs are refused with a
SpecError that names the key or value.
"""
import re

import numpy as np
import pytest

import symback as sb
from symback.errors import SpecError
from symback.spec import spec_from_dict
from symback.cli import main
from test_cli import EXAMPLES
from test_cli_sequences import load_module

torch = pytest.importorskip("torch")
F = torch.nn.functional

TINY = """
inputs = [1, 5, 5]
loss = "cross_entropy"
[[layer]]
kind = "Conv2d"
out_channels = 2
kernel = 2
padding = 1
activation = "tanh"
[[layer]]
kind = "MaxPool2d"
kernel = 3
stride = 2
padding = 1
[[layer]]
kind = "Flatten"
[[layer]]
kind = "Dense"
units = 3
activation = "softmax"
"""


def torch_tiny(x, labels, t):
    a = torch.tanh(F.conv2d(x, t["K1"].T.reshape(2, 1, 2, 2), t["b1"][0], padding=1))
    a = F.max_pool2d(a, 3, 2, 1)
    return F.cross_entropy(a.flatten(1) @ t["W2"] + t["b2"], labels)


def _oracle(x, labels, params):
    t = {k: torch.tensor(np.asarray(v, dtype=float), requires_grad=True) for k, v in params.items()}
    loss = torch_tiny(torch.tensor(x), torch.tensor(labels), t)
    loss.backward()
    return loss.item(), {k: v.grad.numpy() for k, v in t.items()}


def cli(capsys, monkeypatch, cwd, *args):
    """symback ARGS in this process (no interpreter start-up): (exit status, stdout, stderr)."""
    monkeypatch.chdir(cwd)
    status = main([str(a) for a in args])
    out = capsys.readouterr()
    return status, out.out, out.err


def _data(n=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 1, 5, 5)), rng.integers(0, 3, n)


def test_layer_spec_codegen_equals_torch(tmp_path, capsys, monkeypatch):
    (tmp_path / "tiny.toml").write_text(TINY)
    assert cli(capsys, monkeypatch, tmp_path, "codegen", "tiny.toml", "-o", "tiny_step.py")[0] == 0
    mod = load_module(tmp_path / "tiny_step.py")
    x, labels = _data()
    rng = np.random.default_rng(1)
    params = {k: np.asarray(v) + 0.3 * rng.normal(size=np.shape(v)) for k, v in mod.init(0).items()}
    assert sorted(params) == ["K1", "W2", "b1", "b2"]
    value, oracle = _oracle(x, labels, params)
    Y = np.eye(3)[labels][:, None]        # one sample's target: a 1×3 row
    assert float(mod.loss(x, Y, params)) == pytest.approx(value, rel=1e-10)
    grads = mod.grad(x, Y, params)
    for k in params:
        assert np.abs(np.asarray(grads[k]) - oracle[k]).max() <= 1e-9 * max(1.0, np.abs(oracle[k]).max()), k


def test_layer_spec_trains_on_images_with_labels(tmp_path, capsys, monkeypatch):
    """(n, C, H, W) images and (n,) labels in an .npz: one full-batch SGD step is init − lr·∇L,
    and the accuracy printed is the share of arg-max predictions that hit the labels."""
    (tmp_path / "tiny.toml").write_text(TINY)
    x, labels = _data(8, 2)
    np.savez(tmp_path / "img.npz", X=x, Y=labels)
    status, stdout, _ = cli(capsys, monkeypatch, tmp_path, "train", "tiny.toml", "img.npz", "--epochs", "1",
                            "--batch-size", "8", "--lr", "0.1", "--out", "trained.npz", "--no-progress")
    assert status == 0
    init = sb.compile(sb.derive(sb.load_spec(tmp_path / "tiny.toml"))).init(seed=0)
    _, oracle = _oracle(x, labels, init)
    with np.load(tmp_path / "trained.npz", allow_pickle=False) as saved:
        trained = {k: saved[k] for k in init}
    for k in init:
        np.testing.assert_allclose(trained[k], init[k] - 0.1 * oracle[k], rtol=1e-9, atol=1e-12)
    t = {k: torch.tensor(v) for k, v in trained.items()}
    a = F.max_pool2d(torch.tanh(F.conv2d(torch.tensor(x), t["K1"].T.reshape(2, 1, 2, 2), t["b1"][0], padding=1)),
                     3, 2, 1)
    hits = ((a.flatten(1) @ t["W2"] + t["b2"]).argmax(1).numpy() == labels).mean()
    assert f"training accuracy: {hits:.4f}" in stdout


def test_cnn_example_spec_builds_the_readme_network():
    net = sb.load_spec(EXAMPLES / "cnn.toml")
    assert net.image == (1, 8, 8)
    # 8 channels of 3×3 kernels, overlapping 3×3 stride-2 pooling of 8×8 maps: 4×4 each
    assert net.symbol("K1").shape == (9, 8) and net.symbol("W2").shape == (8 * 4 * 4, 10)


def test_transformer_layers_from_a_spec():
    spec = {"inputs": [4, 6], "loss": "mse", "layer": [
        {"kind": "TransformerBlock", "heads": 2, "hidden": 8, "causal": True},
        {"kind": "Residual", "layers": [{"kind": "LayerNorm", "eps": 0.001}, {"kind": "Dense", "units": 6}]},
        {"kind": "Dense", "units": 6}]}
    g = spec_from_dict(spec).graph
    # DESIGN.md's numbering: gamma1 beta1, Wq2…Wo2, gamma3 beta3, W4 b4, W5 b5, then the Residual
    assert g.param_names[:8] == ["gamma1", "beta1", "Wq2", "Wk2", "Wv2", "Wo2", "gamma3", "beta3"]
    assert g.symbol("W4").shape == (6, 8)


@pytest.mark.parametrize("change, message", [
    ({"inputs": [1, 5]}, "cnn.toml: Conv2d, pooling and Flatten act on images"),
    ({"inputs": "1,5,5"}, "inputs must be"),
    ({"extra": 1}, "unknown key(s) extra"),
    ({"loss": 3}, "loss must be a loss name"),
    ({"loss": "hinge"}, "unknown loss 'hinge'"),
    ({"reduction": "max"}, "reduction must be"),
    ({"l2": -1}, "l2 must be a finite number"),
    ({"layer": []}, "one or more [[layer]] tables"),
    ({"layer": [{"kind": "Conv3d"}]}, "layer 1: kind must be one of"),
    ({"layer": [{"kind": "MaxPool2d", "kernel": 2, "strid": 2}]}, "layer 1 (MaxPool2d): unknown key(s) strid"),
    ({"layer": [{"kind": "Conv2d", "kernel": 2}]}, "layer 1 (Conv2d): missing out_channels"),
    ({"layer": [{"kind": "Conv2d", "out_channels": 2, "kernel": "3"}]}, "kernel must be an integer"),
    ({"layer": [{"kind": "Conv2d", "out_channels": True, "kernel": 3}]}, "out_channels must be an integer"),
    ({"layer": [{"kind": "Conv2d", "out_channels": 2, "kernel": 3, "activation": "__import__('os')"}]},
     "unknown activation"),
    ({"layer": [{"kind": "AvgPool2d", "kernel": 2, "padding": 2}]}, "padding must be an integer from 0 to kernel/2"),
    ({"layer": [{"kind": "LayerNorm", "eps": 0}]}, "eps must be positive"),
    ({"layer": [{"kind": "Attention", "causal": "yes"}]}, "causal must be true or false"),
    ({"layer": [{"kind": "Residual", "layers": [{"kind": "Dense"}]}]}, "layers 1 (Dense): missing units"),
])
def test_bad_layer_specs_name_the_problem(change, message):
    spec = {"inputs": [1, 5, 5], "loss": "mse",
            "layer": [{"kind": "Conv2d", "out_channels": 2, "kernel": 3}, {"kind": "Flatten"},
                      {"kind": "Dense", "units": 2}]}
    if "layer" in change:
        change = {**change, "layer": change["layer"] + spec["layer"][1:] if change["layer"] else []}
    with pytest.raises(SpecError, match=re.escape(message)):
        spec_from_dict({**spec, **change}, "cnn.toml")


def test_bad_layer_spec_on_the_command_line(tmp_path, capsys, monkeypatch):
    (tmp_path / "bad.toml").write_text(TINY.replace("stride = 2", "stride = -2"))
    status, _, err = cli(capsys, monkeypatch, tmp_path, "derive", "bad.toml", "--format", "text")
    assert status != 0 and "Traceback" not in err
    assert "layer 2 (MaxPool2d): stride must be an integer from 1" in err


def test_image_data_in_each_layout_model_takes_and_a_clear_error_otherwise(tmp_path, capsys, monkeypatch):
    """`symback train` reads an image network's X as Model does: (n, C, H, W), or each image
    flattened to one row (n, C·H·W) when C = 1 (the same parameters after a step); any other
    shape is one line naming the layouts it takes, the parameters file not written."""
    (tmp_path / "tiny.toml").write_text(TINY)
    x, labels = _data(8, 2)
    saved = {}
    for name, X in (("img", x), ("flat", x.reshape(8, 25))):
        np.savez(tmp_path / f"{name}.npz", X=X, Y=labels)
        status, _, err = cli(capsys, monkeypatch, tmp_path, "train", "tiny.toml", f"{name}.npz", "--epochs", "1",
                             "--batch-size", "8", "--out", f"{name}_p.npz", "--no-progress")
        assert status == 0, err
        with np.load(tmp_path / f"{name}_p.npz", allow_pickle=False) as f:
            saved[name] = {k: f[k] for k in f.files}
    for k in saved["img"]:
        np.testing.assert_array_equal(saved["flat"][k], saved["img"][k])
    np.savez(tmp_path / "bad.npz", X=x[:, :, :4], Y=labels)
    status, _, err = cli(capsys, monkeypatch, tmp_path, "train", "tiny.toml", "bad.npz", "--out", "bad_p.npz")
    assert status != 0 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "X must have shape (n, 1, 5, 5) (images, channels first, as in PyTorch), (n, 25) or (n, 1, 25), " \
           "got (8, 1, 4, 5)" in err
    assert not (tmp_path / "bad_p.npz").exists()
    # a CSV table: the same forms, the image named (it said "a 1×25 matrix", X (n, 1, 25), Y (n, 1, 3))
    (tmp_path / "t.csv").write_text(",".join(f"p{i}" for i in range(27)) + "\n" + ",".join(["0"] * 27) + "\n")
    status, _, err = cli(capsys, monkeypatch, tmp_path, "train", "tiny.toml", "t.csv", "--out", "bad_p.npz")
    assert status != 0 and len(err.strip().splitlines()) == 1
    assert "this network's sample is an image (1, 5, 5); its data are an .npz file with arrays X of shape " \
           "(n, 1, 5, 5) (images, channels first, as in PyTorch), (n, 25) or (n, 1, 25) and Y of shape " \
           "(n, 3) or (n, 1, 3), not a CSV table" in err
