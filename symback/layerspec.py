"""Spec files of layer networks: a ``Sequential`` from builder layers, written as TOML.

The other spec form (:mod:`symback.spec`) writes every node by hand; this one lists the
layers the way Python code calls the builders, so the command line reaches CNNs and
transformers::

    inputs = [1, 8, 8]          # an image (C, H, W); [T, d] a sequence; 64 rows of width 64
    loss = "cross_entropy"
    l2 = 0.0001                 # optional: λ/2 Σ ‖W‖²
    reduction = "mean"          # optional

    [[layer]]
    kind = "Conv2d"
    out_channels = 4
    kernel = 3
    padding = 1
    activation = "relu"

    [[layer]]
    kind = "MaxPool2d"
    kernel = 2

    [[layer]]
    kind = "Flatten"

    [[layer]]
    kind = "Dense"
    units = 10
    activation = "softmax"

A ``Residual`` layer holds its own ``[[layer.layers]]`` tables.  Each layer's keys are the
builder's keyword arguments (:data:`LAYER_KEYS`); every value is checked for its type here
(numbers are TOML numbers, names are registry names) and then by the builder itself.
Nothing is evaluated.

A recurrent network is one ``[[layer]]`` of kind ``"RNN"``, ``"LSTM"`` or ``"GRU"`` that is
the whole network, with the keywords of ``sb.rnn`` / ``sb.lstm`` / ``sb.gru``
(:data:`RECURRENT_KEYS`); ``inputs`` is then the width of one step's x_t::

    inputs = 2
    loss = "mse"

    [[layer]]
    kind = "LSTM"
    hidden = 3
    outputs = 1
    steps = 4
    output = "identity"     # optional
"""
from __future__ import annotations

import math

import sympy as sp

from . import nn, recurrent
from .errors import DefinitionError, SpecError
from .graph import Graph

__all__ = ["LAYER_KEYS", "RECURRENT_KEYS", "is_layer_spec", "sequential_from_dict"]

#: each layer kind: its keys, (type, required) each; "int" is a positive integer unless noted
LAYER_KEYS = {
    "Dense": {"units": ("int", True), "activation": ("name", False), "tie": ("name", False)},
    "Conv2d": {"out_channels": ("int", True), "kernel": ("int", True), "stride": ("int", False),
               "padding": ("count", False), "activation": ("name", False)},
    "MaxPool2d": {"kernel": ("int", True), "stride": ("int", False), "padding": ("count", False)},
    "AvgPool2d": {"kernel": ("int", True), "stride": ("int", False), "padding": ("count", False)},
    "Flatten": {},
    "LayerNorm": {"eps": ("number", False)},
    "BatchNorm": {"eps": ("number", False)},
    "Attention": {"heads": ("int", False), "causal": ("bool", False)},
    "TransformerBlock": {"heads": ("int", False), "hidden": ("int", False), "causal": ("bool", False)},
    "Residual": {"layers": ("layers", True)},
}
_UNROLLED = {"hidden": ("int", True), "outputs": ("int", True), "steps": ("int", True),
             "output": ("name", False)}
#: the recurrent kinds, each the whole network: the keywords of sb.rnn, sb.lstm, sb.gru
RECURRENT_KEYS = {"RNN": {**_UNROLLED, "activation": ("name", False)}, "LSTM": _UNROLLED, "GRU": _UNROLLED}
_BUILDERS = {"RNN": nn.rnn, "LSTM": recurrent.lstm, "GRU": recurrent.gru}
#: the most steps a recurrent spec unrolls: each is a dozen nodes built and derived (an LSTM
#: of 200 steps takes 3 s to build), so more is a typing mistake, not a network
MAX_STEPS = 1000
#: the largest size a spec may give (a width, a kernel): larger ones are typing mistakes
MAX_SIZE = 10 ** 6
#: the top-level keys of a layer spec
TOP_KEYS = {"inputs", "layer", "loss", "l2", "reduction"}


def is_layer_spec(data: dict) -> bool:
    """Whether a parsed TOML table is a layer spec (it has ``[[layer]]`` tables)."""
    return "layer" in data


def sequential_from_dict(data: dict, where: str = "spec") -> Graph:
    """The :class:`~symback.nn.Sequential` a layer spec describes, or the RNN/LSTM/GRU of a
    recurrent one (see the module docstring); any bad key or value is a :class:`SpecError`
    that names it."""
    unknown = sorted(set(data) - TOP_KEYS)
    if unknown:
        raise SpecError(f"{where}: unknown key(s) {', '.join(unknown)} in a layer spec; "
                        f"expected {', '.join(sorted(TOP_KEYS))}")
    tables = data["layer"]
    if isinstance(tables, list) and any(_kind(t) in RECURRENT_KEYS for t in tables):
        return _recurrent(data, tables, where)
    inputs = _inputs(data.get("inputs"), where)
    layers = _layers(tables, where, "layer")
    loss, reduction, l2 = _training(data, where)
    try:
        return nn.Sequential(*layers, inputs=inputs, loss=loss, reduction=reduction, l2=l2)
    except DefinitionError as exc:
        raise SpecError(f"{where}: {exc}") from None


def _recurrent(data: dict, tables: list, where: str) -> Graph:
    """The one recurrent [[layer]] built by sb.rnn / sb.lstm / sb.gru."""
    kind = next(_kind(t) for t in tables if _kind(t) in RECURRENT_KEYS)
    if len(tables) != 1:
        raise SpecError(f"{where}: the {kind} layer is the whole network (it is unrolled over its "
                        f"steps and ends in its own read-out), so it must be the only [[layer]]; "
                        f"got {len(tables)} layers")
    inputs = data.get("inputs")
    if not (_is_int(inputs) and 1 <= inputs <= MAX_SIZE):
        raise SpecError(f"{where}: inputs must be a positive integer for the {kind} layer "
                        f"(the width of one step's x_t), got {inputs!r}")
    kwargs = _keywords(tables[0], kind, RECURRENT_KEYS[kind], f"{where}: layer 1 ({kind})")
    if kwargs["steps"] > MAX_STEPS:
        raise SpecError(f"{where}: layer 1 ({kind}): steps must be at most {MAX_STEPS}, got {kwargs['steps']}")
    loss, reduction, l2 = _training(data, where)
    try:
        return _BUILDERS[kind](inputs, loss=loss, reduction=reduction, l2=l2, **kwargs)
    except DefinitionError as exc:
        raise SpecError(f"{where}: layer 1 ({kind}): {exc}") from None


def _training(data: dict, where: str):
    """The top-level loss, reduction and l2 of a layer spec, checked."""
    loss = data.get("loss", "mse")
    if not isinstance(loss, str):
        raise SpecError(f"{where}: loss must be a loss name in quotes (e.g. loss = \"cross_entropy\"), "
                        f"got {loss!r}")
    reduction = data.get("reduction", "mean")
    if reduction not in ("mean", "sum"):
        raise SpecError(f"{where}: reduction must be \"mean\" or \"sum\", got {reduction!r}")
    l2 = _number(data.get("l2", 0), f"{where}: l2") if "l2" in data else 0.0
    return loss, reduction, l2


def _inputs(value, where):
    """inputs = d, [T, d] or [C, H, W] as the builder takes them (an int or a tuple)."""
    if _is_int(value) and 1 <= value <= MAX_SIZE:
        return value
    if isinstance(value, list) and len(value) in (2, 3) and all(_is_int(v) and 1 <= v <= MAX_SIZE for v in value):
        return tuple(value)
    raise SpecError(f"{where}: inputs must be a positive integer (the width of a row), [rows, columns] "
                    f"(a sequence) or [channels, height, width] (an image), got {value!r}")


def _layers(tables, where, key):
    if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
        raise SpecError(f"{where}: {key} must be one or more [[{key}]] tables, each with kind = \"...\"")
    return [_layer(t, f"{where}: {key} {n}") for n, t in enumerate(tables, start=1)]


def _kind(table) -> str | None:
    """A layer table's kind when it is a name in quotes; None for anything else (a list or a
    table as the kind is not hashable, so it cannot be looked up in the kinds)."""
    kind = table.get("kind") if isinstance(table, dict) else None
    return kind if isinstance(kind, str) else None


def _layer(table: dict, where: str):
    kind = _kind(table)
    if kind in RECURRENT_KEYS:
        # only reached inside a Residual: a recurrent kind is a whole network, never a piece
        raise SpecError(f"{where}: {kind} is a whole network (a layer of its own), so it cannot sit inside a "
                        f"Residual; the kinds a Residual holds are {', '.join(LAYER_KEYS)}")
    if kind not in LAYER_KEYS:
        raise SpecError(f"{where}: kind must be one of {', '.join([*LAYER_KEYS, *RECURRENT_KEYS])}, "
                        f"got {table.get('kind')!r}")
    where = f"{where} ({kind})"
    kwargs = _keywords(table, kind, LAYER_KEYS[kind], where)
    try:
        if kind == "Residual":
            return nn.Residual(*kwargs["layers"])
        if kind == "Dense":
            return nn.Dense(kwargs.pop("units"), **kwargs)
        if kind == "Conv2d":
            return nn.Conv2d(kwargs.pop("out_channels"), kwargs.pop("kernel"), **kwargs)
        if kind in ("MaxPool2d", "AvgPool2d"):
            return getattr(nn, kind)(kwargs.pop("kernel"), **kwargs)
        return getattr(nn, kind)(**kwargs)
    except DefinitionError as exc:
        raise SpecError(f"{where}: {exc}") from None


def _keywords(table: dict, kind: str, keys: dict, where: str) -> dict:
    """A layer table's keys checked against `keys` (none unknown, none missing), each value
    checked for its type: the builder's keyword arguments."""
    unknown = sorted(set(table) - set(keys) - {"kind"})
    if unknown:
        raise SpecError(f"{where}: unknown key(s) {', '.join(unknown)}; "
                        f"{kind} takes {', '.join(keys) or 'no keys but kind'}")
    missing = [k for k, (_, required) in keys.items() if required and k not in table]
    if missing:
        raise SpecError(f"{where}: missing {', '.join(missing)}")
    return {k: _value(table[k], kind_of, f"{where}: {k}") for k, (kind_of, _) in keys.items() if k in table}


def _value(value, kind_of: str, what: str):
    """One layer key's value checked for its type (the builder checks its range)."""
    if kind_of == "layers":
        return _layers(value, what.rsplit(": ", 1)[0], "layers")
    if kind_of == "int" and _is_int(value) and 1 <= value <= MAX_SIZE:
        return value
    if kind_of == "count" and _is_int(value) and 0 <= value <= MAX_SIZE:
        return value
    if kind_of == "bool" and isinstance(value, bool):
        return value
    if kind_of == "name" and isinstance(value, str):
        return value
    if kind_of == "number":
        number = _number(value, what)
        if number == 0:
            raise SpecError(f"{what} must be positive (it is added to a variance), got {value!r}")
        return number
    want = {"int": f"an integer from 1 to {MAX_SIZE}", "count": f"an integer from 0 to {MAX_SIZE}", "bool": "true or false",
            "name": "a name in quotes"}[kind_of]
    raise SpecError(f"{what} must be {want}, got {value!r}")


def _number(value, what: str) -> sp.Rational:
    """A TOML number as the exact rational it is written as (0.1 -> 1/10), finite and >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise SpecError(f"{what} must be a finite number >= 0, got {value!r}")
    return sp.Rational(repr(value)) if isinstance(value, float) else sp.Integer(value)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
