"""The registries of activations and losses, by name: filled by :mod:`symback.functions`,
read by the node kinds (a per-sample cost names its loss) and the parser.  A module of its
own so that definitions and node kinds can both read it without importing each other."""
from __future__ import annotations

__all__ = ["ACTIVATIONS", "LOSSES", "TEXT_PARSER"]

#: activation name -> its Activation class
ACTIVATIONS: dict = {}
#: loss name -> its LossFunction
LOSSES: dict = {}
#: how definitions given as text are parsed: set by :mod:`symback.parse` when it is imported
#: (the parser reads the registries above; the definitions never import the parser)
TEXT_PARSER: list = []
