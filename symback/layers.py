"""The layers a :class:`~symback.nn.Sequential` is written with: Dense, Residual, LayerNorm,
Attention, TransformerBlock, Conv2d, MaxPool2d, AvgPool2d, Flatten, BatchNorm.

Each is a description only (its widths, activation, options, checked here); the nodes it
stands for are written by :class:`~symback.nn.Sequential`, and nothing here differentiates.
"""
from __future__ import annotations

import numpy as np
import sympy as sp

from .errors import DefinitionError
from .functions import get_activation, softmax

__all__ = ["Dense", "Residual", "LayerNorm", "Attention", "TransformerBlock", "Conv2d", "MaxPool2d",
           "AvgPool2d", "Flatten", "BatchNorm", "LAYERS", "IMAGE_LAYERS"]


def _width(value, what) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DefinitionError(f"{what} must be a positive integer, got {value!r}")
    return value


def _flag(value, what) -> bool:
    # a string such as "no" would be truthy: only True or False (NumPy's too) is a yes or a no
    if not isinstance(value, (bool, np.bool_)):
        raise DefinitionError(f"{what} must be True or False, got {value!r}")
    return bool(value)


class Dense:
    """A fully connected layer of `units` outputs and an activation.

    ``activation`` is a registry name ("sigmoid", "relu", ...), an
    Activation class (e.g. from :func:`symback.activation`) or "softmax"
    (output layer only).  ``tie="W1"`` reuses that earlier weight,
    transposed, instead of a new one (the layer keeps its own bias).
    """

    def __init__(self, units: int, activation="identity", tie: str | None = None):
        self.units = _width(units, "Dense: units")
        self.activation = get_activation(activation)
        if tie is not None and not isinstance(tie, str):
            raise DefinitionError(f"Dense: tie names an earlier weight such as 'W1', got {tie!r}")
        self.tie = tie

    def __repr__(self):
        tie = f", tie={self.tie!r}" if self.tie else ""
        return f"Dense({self.units}, {self.activation.__name__!r}{tie})"


class Residual:
    """A skip connection: output = input + layers(input); the widths must match."""

    def __init__(self, *layers):
        if not layers:
            raise DefinitionError("Residual needs at least one layer")
        for layer in layers:
            if not isinstance(layer, LAYERS):
                raise DefinitionError(f"Residual takes layers (Dense, Residual, LayerNorm, Attention, "
                                      f"TransformerBlock), got {layer!r}")
        self.layers = list(layers)

    def __repr__(self):
        return f"Residual({', '.join(map(repr, self.layers))})"


class LayerNorm:
    """Layer normalisation of each row (position): γ ⊙ norm(A) + β, with parameters
    ``gamma{l}`` (1×d, initialised to 1) and ``beta{l}`` (1×d, initialised to 0)."""

    def __init__(self, eps=sp.Rational(1, 10**5)):
        self.eps = eps

    def __repr__(self):
        return "LayerNorm()"


class Attention:
    """Multi-head self-attention over the rows of a (T, d) sample, no biases.

    Parameters ``Wq{l} Wk{l} Wv{l} Wo{l}``, each d×d.  Head h uses the columns
    h·d/heads … (h+1)·d/heads − 1 of Q = A Wq, K = A Wk, V = A Wv; its scores are
    Q_h K_hᵀ/√(d/heads), softmax row by row (``causal=True`` masks j > i); the heads'
    outputs are concatenated in head order, then multiplied by Wo.
    """

    def __init__(self, heads: int = 1, causal: bool = False):
        self.heads = _width(heads, "Attention: heads")
        self.causal = _flag(causal, "Attention: causal")

    def __repr__(self):
        return f"Attention(heads={self.heads}, causal={self.causal})"


class TransformerBlock:
    """A pre-LN transformer block: H = X + Attention(LayerNorm(X)), then
    out = H + Dense(d)(Dense(hidden, "gelu")(LayerNorm(H))), that is
    ``Residual(LayerNorm(), Attention(heads, causal))``,
    ``Residual(LayerNorm(), Dense(hidden, "gelu"), Dense(d))``.
    """

    def __init__(self, heads: int = 1, hidden: int | None = None, causal: bool = False):
        self.heads, self.causal = _width(heads, "TransformerBlock: heads"), _flag(causal, "TransformerBlock: causal")
        self.hidden = None if hidden is None else _width(hidden, "TransformerBlock: hidden")

    def expand(self, d: int) -> list:
        """The block as the layers it stands for, for inputs of width d."""
        return [Residual(LayerNorm(), Attention(self.heads, self.causal)),
                Residual(LayerNorm(), Dense(self.hidden or 4 * d, "gelu"), Dense(d))]

    def __repr__(self):
        return f"TransformerBlock(heads={self.heads}, hidden={self.hidden}, causal={self.causal})"


class Conv2d:
    """A 2-D convolution (cross-correlation, as PyTorch) of `out_channels` k×k kernels, then an
    activation.  Parameters ``K{l}`` ((C_in·k·k) × out_channels, rows ordered (c, i, j) as
    torch.nn.functional.unfold's, so K = torch_weight.reshape(out_channels, −1).T) and
    ``b{l}`` (1 × out_channels).  On one image A (C_in × H·W) it is
    Z = Kᵀ unfold(A) + bᵀ𝟏ᵀ, out_channels × H'·W' (H' = ⌊(H + 2p − k)/s⌋ + 1).
    """

    def __init__(self, out_channels: int, kernel: int, stride: int = 1, padding: int = 0,
                 activation="identity"):
        self.out_channels = _width(out_channels, "Conv2d: out_channels")
        self.kernel, self.stride = _width(kernel, "Conv2d: kernel"), _width(stride, "Conv2d: stride")
        if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
            raise DefinitionError(f"Conv2d: padding must be an integer >= 0, got {padding!r}")
        self.padding = padding
        self.activation = get_activation(activation)
        if self.activation is softmax:
            raise DefinitionError("Conv2d: softmax is for the output (Dense) layer")

    def __repr__(self):
        return (f"Conv2d({self.out_channels}, {self.kernel}, stride={self.stride}, padding={self.padding}, "
                f"activation={self.activation.__name__!r})")


class _Pool:
    """A k×k pooling window moved by `stride` (k unless given: windows side by side) over the
    image padded by `padding` (at most k/2), as torch's pools; edges that do not fill a window
    are dropped; no parameters."""

    def __init__(self, kernel: int, stride: int | None = None, padding: int = 0):
        name = type(self).__name__
        self.kernel = _width(kernel, f"{name}: kernel")
        self.stride = self.kernel if stride is None else _width(stride, f"{name}: stride")
        if isinstance(padding, bool) or not isinstance(padding, int) or not 0 <= 2 * padding <= self.kernel:
            raise DefinitionError(f"{name}: padding must be an integer from 0 to kernel/2, got {padding!r}")
        self.padding = padding

    def __repr__(self):
        extra = (f", stride={self.stride}" if self.stride != self.kernel else "") + \
            (f", padding={self.padding}" if self.padding else "")
        return f"{type(self).__name__}({self.kernel}{extra})"


class MaxPool2d(_Pool):
    """The maximum of each k×k window (padding never wins, as torch's max_pool2d)."""


class AvgPool2d(_Pool):
    """The mean of each k×k window (zero padding counted in the k², as torch's avg_pool2d)."""


class Flatten:
    """An image (C × H·W) as one row 1 × C·H·W, ordered (c, i, j) as torch.flatten; Dense
    layers act on that row."""

    def __repr__(self):
        return "Flatten()"


class BatchNorm:
    """Batch normalisation for graphs whose rows are samples (``inputs=d``): each column
    standardised with the batch's mean and biased variance (training mode, ε added to the
    variance), then ⊙γ + β; parameters ``gamma{l}`` (1×d, initialised to 1) and ``beta{l}``
    (1×d, 0).  It is layer norm of the transposed batch: (norm(Zᵀ))ᵀ ⊙ 𝟏γ + 𝟏β."""

    def __init__(self, eps=sp.Rational(1, 10**5)):
        self.eps = eps

    def __repr__(self):
        return "BatchNorm()"


IMAGE_LAYERS = (Conv2d, MaxPool2d, AvgPool2d, Flatten)
LAYERS = (Dense, Residual, LayerNorm, Attention, TransformerBlock, BatchNorm) + IMAGE_LAYERS
