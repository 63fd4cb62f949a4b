"""symback: symbolic backpropagation.

Write a network as SymPy expressions; get the closed-form chain-rule
formula of every ∂L/∂parameter, rendered as LaTeX or Markdown, and
compiled into fast NumPy training code.
"""
from .errors import SymbackError
from .functions import (activation, loss_function, get_activation, get_loss, LeakyReLU,
                        identity, sigmoid, tanh, relu, leaky_relu, softplus, swish, gelu, softmax,
                        mse, half_mse, binary_cross_entropy, cross_entropy, logcosh, huber)
from .matrix import BATCH, ones, hadamard, sumsq, layer_norm
from .graph import Graph
from .engine import Derivation, Factor, derive
from .nn import (Attention, Dense, LayerNorm, Residual, Sequential, TransformerBlock, mlp, rnn,
                 Conv2d, MaxPool2d, AvgPool2d, Flatten, BatchNorm)
from .recurrent import GRU, LSTM, gru, lstm
from .parse import parse_expr
from .spec import load_spec
from .compile import Model, compile
from .module import codegen_module
from . import evaluate as _evaluate, render as _render
from .document import display as _display
#: imported for what they register with the engine (Derivation.evaluate, latex, write, display)
_CONSUMERS = (_evaluate, _render, _display)

__version__ = "0.1.0"

__all__ = [
    "SymbackError", "Graph", "compile", "Model", "codegen_module", "Dense", "Residual", "LayerNorm", "Attention", "TransformerBlock",
    "Conv2d", "MaxPool2d", "AvgPool2d", "Flatten", "BatchNorm", "Sequential", "mlp", "rnn", "lstm", "gru", "LSTM", "GRU",
    "Derivation", "Factor", "derive",
    "activation", "loss_function", "get_activation", "get_loss", "LeakyReLU",
    "identity", "sigmoid", "tanh", "relu", "leaky_relu", "softplus", "swish", "gelu", "softmax",
    "mse", "half_mse", "binary_cross_entropy", "cross_entropy", "logcosh", "huber",
    "BATCH", "ones", "hadamard", "sumsq", "layer_norm",
    "load_spec", "parse_expr",
    "__version__",
]
