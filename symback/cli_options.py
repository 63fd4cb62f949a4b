"""The ``symback`` command line's option types and shared options.

Each type turns one option's text into a value or a one-line error
(argparse's ``ArgumentTypeError``); :class:`Parser` prints a usage mistake
as the same single line as any other error (:func:`fail`).
"""
from __future__ import annotations

import argparse
import sys

__all__ = ["Parser", "fail", "parse_layers", "positive", "non_negative", "seed_number",
           "backend_option", "network_options", "overwrite_option"]


class Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is the same single line as any other error."""

    def error(self, message):
        fail(f"{message} (see '{self.prog} --help')")
        raise SystemExit(2)


def fail(message: str):
    """Print `message` as the command's one error line on stderr."""
    text = " ".join(str(message).split())
    print(f"symback: error: {text}", file=sys.stderr)


def parse_layers(text: str) -> list[int]:
    """'784,128,64,10' -> [784, 128, 64, 10]; a clear error for anything else."""
    parts = [p.strip() for p in str(text).split(",")]
    if any(p == "" for p in parts):
        raise argparse.ArgumentTypeError(f"{text!r} is malformed: an empty width between commas")
    sizes = []
    for p in parts:
        if not (p.isascii() and p.isdigit()):      # "²".isdigit() is True, int("²") fails
            raise argparse.ArgumentTypeError(
                f"{text!r} is malformed: {p!r} is not a positive whole number")
        if len(p.lstrip("0")) > 12:
            raise argparse.ArgumentTypeError(f"{text!r}: the width {p} is far too large")
        sizes.append(int(p))
    if len(sizes) < 2:
        raise argparse.ArgumentTypeError(
            f"{text!r} is malformed: give at least the input and output widths, e.g. 2,8,1")
    if min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is malformed: widths must be at least 1")
    return sizes


def _number_type(kind, ok, requirement: str, name: str, doc: str):
    """An argparse type: text read as `kind`, accepted when ok(value), else one clear line."""
    noun = "whole number" if kind is int else "number"

    def convert(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {noun}") from None
        if not ok(value):           # NaN fails every comparison: refused too
            raise argparse.ArgumentTypeError(f"{text!r} must be {requirement}")
        return value
    convert.__name__, convert.__doc__ = name, doc
    return convert


def positive(kind):
    """An argparse type: a positive, finite `kind` (int or float), with a clear message otherwise."""
    return _number_type(kind, lambda v: 0 < v < float("inf"), "positive and finite", f"positive {kind.__name__}",
                        f"A positive, finite {kind.__name__}.")


non_negative = _number_type(float, lambda v: 0 <= v < float("inf"), "zero or positive and finite",
                            "non_negative", "An argparse type: a finite number ≥ 0 (``--l2``).")
seed_number = _number_type(int, lambda v: v >= 0, "zero or positive", "seed_number",
                           "A random seed: a whole number ≥ 0 (NumPy's generators refuse negative ones).")


def file_name(text: str) -> str:
    """An argparse type for a path: '' (an unset shell variable, say) is refused, not read as '.'."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty file name")
    return text


def backend_option(p: argparse.ArgumentParser, verb: str):
    """Add ``--backend`` (numpy, jax, torch) to the subcommand `p`."""
    p.add_argument("--backend", choices=("numpy", "jax", "torch"), default="numpy",
                   help=f"the array library to {verb} (default numpy; jax and torch need "
                        "pip install symback[jax] or symback[torch])")


def network_options(p: argparse.ArgumentParser, with_data: bool = False):
    """Add the network's options: a spec file, or --layers and the layer flags (train: also data)."""
    g = p.add_argument_group("the network: a TOML spec file, or a layer network from flags")
    if with_data:   # train: the spec and the data file may both be positional, in either order
        g.add_argument("spec", nargs="*", type=file_name, metavar="SPEC.toml|DATA.csv",
                       help="a TOML spec file (a graph, or builder layers: see examples/*.toml) "
                            "and/or the data file (.csv or .npz)")
    else:
        g.add_argument("spec", nargs="?", type=file_name, metavar="SPEC.toml",
                       help="a network written as a TOML spec file: a graph of named nodes, or "
                            "builder layers (see examples/*.toml)")
    g.add_argument("--layers", type=parse_layers, metavar="N0,N1,...",
                   help="layer widths, inputs first, e.g. 784,128,64,10")
    g.add_argument("--activation", metavar="NAME",
                   help="hidden-layer activation (default sigmoid): identity, sigmoid, tanh, relu, "
                        "leaky_relu (leaky_relu:0.1 sets the slope), softplus, swish, silu, gelu")
    g.add_argument("--output", metavar="NAME",
                   help="output-layer activation (default identity); softmax for classes")
    g.add_argument("--loss", metavar="NAME",
                   help="mse, half_mse, binary_cross_entropy, cross_entropy, logcosh, huber "
                        "(default mse, or cross_entropy with --output softmax)")
    g.add_argument("--reduction", choices=("mean", "sum"),
                   help="batch reduction of a layer network's loss (default mean)")
    g.add_argument("--l2", type=non_negative, metavar="LAMBDA",
                   help="weight decay: adds LAMBDA/2 times the sum of the squared weights to the loss")
    g.add_argument("--residual", action="store_true", default=None,
                   help="every hidden layer after the first as a skip connection (equal widths)")


def overwrite_option(parser, what: str) -> None:
    """Add ``--overwrite`` (replace `what` if present) to the subcommand `parser`."""
    parser.add_argument("--overwrite", action="store_true",
                        help=f"replace {what} if present (otherwise an existing file is an error)")
