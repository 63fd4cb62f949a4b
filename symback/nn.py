"""Builders of matrix graphs: Sequential (of the layers in :mod:`symback.layers`), mlp, rnn.

Nothing here differentiates.  Each builder writes a network as the nodes
of an ordinary :class:`~symback.graph.Graph` whose symbols are matrices
with samples in rows, and :func:`symback.derive` treats it like any other
graph (micrograd's ``nn.py`` over its ``engine.py``).  Layer ``l`` is

    Z{l} = A{l-1} @ W{l} + ones(m) @ b{l},   A{l} = f(Z{l}),   A0 = X,

the last layer's output is ``Yhat``, its per-sample cost ``C`` and the
batch loss ``L = (1/m) 1ᵀ C + λ/2 Σ_l ‖W{l}‖²_F``.  An identity layer has no
activation node: its output is Z{l} itself.
"""
from __future__ import annotations

import sympy as sp

from .errors import DefinitionError
from .functions import get_activation, get_loss, identity, softmax
from .graph import Graph
from .image import avgpool, flatten, maxpool, out_size, unfold
from .layers import (IMAGE_LAYERS, LAYERS, Attention, AvgPool2d, BatchNorm, Conv2d, Dense, Flatten, LayerNorm,
                     MaxPool2d, Residual, TransformerBlock, _width)
from .matrix import BATCH, RowNorm, Select, layer_norm, ones, sumsq

__all__ = ["Dense", "Residual", "LayerNorm", "Attention", "TransformerBlock", "Conv2d", "MaxPool2d",
           "AvgPool2d", "Flatten", "BatchNorm", "Sequential", "mlp", "rnn"]


def _dense_layers(layers):
    for layer in layers:
        if isinstance(layer, Residual):
            yield from _dense_layers(layer.layers)
        elif isinstance(layer, Dense):
            yield layer


class Sequential(Graph):
    """Layers applied in order to inputs of width `inputs`, with a loss: a matrix Graph.

    ``loss`` is a registry name or a LossFunction; ``reduction`` is "mean"
    (L = 1/m Σ C_i, the default) or "sum"; ``l2 = λ`` adds the penalty
    λ/2 · Σ_l ‖W_l‖²_F (biases are not penalised).
    """

    def __init__(self, *layers, inputs, loss="mse", reduction: str = "mean", l2=0.0):
        super().__init__()
        if not layers:
            raise DefinitionError("Sequential needs at least one Dense layer")
        for layer in layers:
            if not isinstance(layer, LAYERS):
                raise DefinitionError(f"Sequential takes layers (Dense, Residual, LayerNorm, Attention, "
                                      f"TransformerBlock, Conv2d, MaxPool2d, AvgPool2d, Flatten, BatchNorm), "
                                      f"got {layer!r}")
        self.layers = list(layers)
        # inputs=d: rows are samples (X is m×d); inputs=(T, d): one sample is T rows of width d;
        # inputs=(C, H, W): one sample is an image, the C × (H·W) matrix of its channels' rows
        self.image = None
        if isinstance(inputs, tuple) and len(inputs) == 3:
            self.image = tuple(_width(v, "inputs: channels, height, width") for v in inputs)
            inputs = (self.image[0], self.image[1] * self.image[2])
        if isinstance(inputs, tuple):
            if len(inputs) != 2:
                raise DefinitionError(f"inputs=(rows, columns) for a sample of rows, or (C, H, W) for an "
                                      f"image, got {inputs!r}")
            self.sample_rows = _width(inputs[0], "inputs: rows")
            self.inputs_width = _width(inputs[1], "inputs: columns")
        else:
            self.sample_rows, self.inputs_width = None, _width(inputs, "inputs")
        #: one sample of X as an image (C, H, W): data (n, C, H, W) are reshaped to (n, C, H·W)
        self.input_images = {"X": self.image} if self.image else {}

        self.loss_function = get_loss(loss)
        dense = list(_dense_layers(self.layers))
        for layer in dense[:-1]:
            if layer.activation is softmax:
                raise DefinitionError("softmax can only be the output layer's activation")
        if not isinstance(self.layers[-1], Dense):
            raise DefinitionError("the last layer must be a Dense layer (the output)")
        if self.sample_rows is None and any(isinstance(x, (Attention, LayerNorm, TransformerBlock))
                                            for x in _all(self.layers)):
            raise DefinitionError("attention and layer norm act on the rows of one sample: give "
                                  "inputs=(rows, columns), a sequence of rows")
        if self.image is None and any(isinstance(x, IMAGE_LAYERS) for x in _all(self.layers)):
            raise DefinitionError("Conv2d, pooling and Flatten act on images: give inputs=(C, H, W)")
        if self.sample_rows is not None and any(isinstance(x, BatchNorm) for x in _all(self.layers)):
            raise DefinitionError("BatchNorm normalises over the batch: it needs rows that are samples "
                                  "(inputs=d); for one sample's rows use LayerNorm")
        out = dense[-1].activation
        if (out is softmax) != (self.loss_function.needs == "softmax"):
            raise DefinitionError(
                f"loss {self.loss_function.name!r} and output {out.__name__!r} do not go together: "
                "cross_entropy needs a softmax output, and a softmax output needs cross_entropy")
        if out is softmax and dense[-1].units == 1:
            raise DefinitionError("softmax on one output unit is always 1 (its gradient is zero): "
                                  "use output='sigmoid' with loss='binary_cross_entropy'")
        self._build(reduction, _l2(l2))

    @property
    def sizes(self) -> list[int]:
        """Widths [d_0, d_1, ..., d_L] of the Dense layers, inputs first."""
        return [self.inputs_width] + [layer.units for layer in _dense_layers(self.layers)]

    @property
    def activations(self) -> list:
        """The activation of each Dense layer, in order."""
        return [layer.activation for layer in _dense_layers(self.layers)]

    def _build(self, reduction, l2):
        rows = BATCH if self.sample_rows is None else self.sample_rows
        self._tops: list[str] = []
        X = self.inputs("X", shape=(rows, self.inputs_width))
        weights, count = [], [0]
        last = list(_dense_layers(self.layers))[-1]

        def norm(layer, A):
            count[0] += 1
            l = count[0]
            gamma, beta = self.params(f"gamma{l} beta{l}", shape=[(1, A.shape[1])] * 2)
            self.init_scheme[gamma.name] = "ones"
            return self.node(f"N{l}", layer_norm(A, gamma, beta, layer.eps))

        def attention(layer, A):
            count[0] += 1
            l, d, h = count[0], A.shape[1], layer.heads
            if d % h:
                raise DefinitionError(f"Attention: {h} heads do not divide the width {d}")
            Wq, Wk, Wv, Wo = self.params(f"Wq{l} Wk{l} Wv{l} Wo{l}", shape=[(d, d)] * 4)
            weights.extend([Wq, Wk, Wv, Wo])
            Q, K, V = (self.node(f"{n}{l}", A @ W) for n, W in (("Q", Wq), ("K", Wk), ("V", Wv)))
            mask, w = ("causal" if layer.causal else None), d // h
            heads = []
            for j in range(h):
                E = Select.of(d, j * w, w) if h > 1 else None
                tag = f"{l}_{j + 1}" if h > 1 else f"{l}"
                Qh, Kh, Vh = (Q, K, V) if E is None else (Q @ E, K @ E, V @ E)
                P = self.node(f"P{tag}", softmax(Qh @ Kh.T / sp.sqrt(w), mask=mask))
                O = self.node(f"O{tag}", P @ Vh)
                heads.append(O @ Wo if E is None else O @ E.T @ Wo)
            return self.node(f"Att{l}", sp.MatAdd(*heads) if len(heads) > 1 else heads[0])

        def dense(layer, A):
            count[0] += 1
            l = count[0]
            if layer.tie is not None:
                W = self._tied(layer, A)
            else:
                W = self.params(f"W{l}", shape=(A.shape[1], layer.units))
                weights.append(W)
            b = self.params(f"b{l}", shape=(1, layer.units))
            out = layer is last
            pre = A @ W + ones(A.shape[0]) @ b
            if layer.activation is identity:
                return self.node("Yhat" if out else f"Z{l}", pre)
            Z = self.node(f"Z{l}", pre)
            return self.node("Yhat" if out else f"A{l}", layer.activation(Z))

        image = [self.image]        # the current sample's (C, H, W) while it is an image

        def conv(layer, A):
            count[0] += 1
            l, (C, H, W), k = count[0], image[0], layer.kernel
            Ho, Wo = (out_size(n, k, layer.stride, layer.padding) for n in (H, W))
            if min(Ho, Wo) < 1:
                raise DefinitionError(f"Conv2d: a {k}×{k} kernel (padding {layer.padding}) does not fit "
                                      f"in {H}×{W} pixels")
            K = self.params(f"K{l}", shape=(C * k * k, layer.out_channels))
            b = self.params(f"b{l}", shape=(1, layer.out_channels))
            weights.append(K)
            U = self.node(f"U{l}", unfold(A, (C, H, W), k, layer.stride, layer.padding))
            image[0] = (layer.out_channels, Ho, Wo)
            pre = K.T @ U + b.T @ ones(1, Ho * Wo)       # (U K + 𝟏b)ᵀ: channels × positions
            if layer.activation is identity:
                return self.node(f"Z{l}", pre)
            return self.node(f"A{l}", layer.activation(self.node(f"Z{l}", pre)))

        def pool(layer, A):
            C, H, W = image[0]
            k, s, p = layer.kernel, layer.stride, layer.padding
            if min(out_size(n, k, s, p) for n in (H, W)) < 1:
                raise DefinitionError(f"{layer!r}: a {k}×{k} window does not fit in {H}×{W} pixels")
            image[0] = (C, out_size(H, k, s, p), out_size(W, k, s, p))
            if isinstance(layer, MaxPool2d):
                return self.node(self._fresh("Max"), maxpool(A, (C, H, W), k, s, p))
            return self.node(self._fresh("Avg"), avgpool(A, (C, H, W), k, s, p))

        def batchnorm(layer, A):
            count[0] += 1
            l = count[0]
            gamma, beta = self.params(f"gamma{l} beta{l}", shape=[(1, A.shape[1])] * 2)
            self.init_scheme[gamma.name] = "ones"
            # layer norm of the transposed batch: each column's mean and variance over the samples
            T = self.node(f"T{l}", A.T)
            N = self.node(f"Nt{l}", RowNorm(T, layer.eps))
            rows = ones(A.shape[0])
            return self.node(f"N{l}", sp.HadamardProduct(N.T, rows @ gamma) + rows @ beta)

        def run(layers, A, top=True):
            for layer in layers:
                if image[0] is not None and isinstance(layer, (Dense, Residual, LayerNorm, Attention,
                                                               TransformerBlock)):
                    raise DefinitionError(f"{layer!r} after an image layer: put Flatten() first")
                if image[0] is None and isinstance(layer, IMAGE_LAYERS):
                    raise DefinitionError(f"{layer!r} after Flatten(): the sample is no longer an image")
                if isinstance(layer, Conv2d):
                    A = conv(layer, A)
                    continue
                if isinstance(layer, (MaxPool2d, AvgPool2d)):
                    A = pool(layer, A)
                    continue
                if isinstance(layer, Flatten):
                    A = self.node(self._fresh("Flat"), flatten(A, image[0]))
                    image[0] = None
                    continue
                if isinstance(layer, BatchNorm):
                    A = batchnorm(layer, A)
                    continue
                if isinstance(layer, Residual):
                    inner = run(layer.layers, A, False)
                    if inner.shape != A.shape:
                        raise DefinitionError(f"Residual: the layers map width {A.shape[1]} to "
                                              f"{inner.shape[1]}; a skip connection needs equal widths")
                    # H{l} after the last parameter layer l; a residual that ends in another one
                    # (Residual(Residual(...)), Residual(TransformerBlock(...))) has the same l
                    A = self.node(self._fresh(f"H{count[0]}"), A + inner)
                elif isinstance(layer, TransformerBlock):      # at the width it is given
                    A = run(layer.expand(int(A.shape[1])), A, False)
                elif isinstance(layer, LayerNorm):
                    A = norm(layer, A)
                elif isinstance(layer, Attention):
                    A = attention(layer, A)
                else:
                    A = dense(layer, A)
                if top:
                    self._tops.append(A.name)
            return A

        Yhat = run(self.layers, X)
        # each hidden layer's output at the top level, in order (the last one is Ŷ)
        self.states = [n for n in self._tops if n != Yhat.name]
        Y = self.targets("Y", shape=tuple(Yhat.shape))
        penalty = l2 / 2 * sp.Add(*[sumsq(W) for W in weights]) if l2 else None
        self.loss(self.loss_function(Yhat, Y), reduction=reduction, penalty=penalty)

    def _tied(self, layer, A):
        if self._kind.get(layer.tie) != "param" or not layer.tie.startswith("W"):     # a weight, not a bias
            raise DefinitionError(f"tie={layer.tie!r}: no earlier weight of that name "
                                  f"(weights so far: {', '.join(n for n in self.param_names if n[0] == 'W')})")
        W = self.symbol(layer.tie).T
        if W.shape != (A.shape[1], layer.units):
            raise DefinitionError(f"tie={layer.tie!r}: its transpose is {W.shape[0]}×{W.shape[1]} but "
                                  f"this layer maps {A.shape[1]} to {layer.units}")
        return W

    def derive(self):
        """The derivation of this network (same as ``sb.derive(net)``)."""
        from .engine import Derivation
        return Derivation(self)

    def __repr__(self):
        return (f"Sequential({', '.join(map(repr, self.layers))}, inputs={self.inputs_width}, "
                f"loss={self.loss_function.name!r})")


def _all(layers):
    for layer in layers:
        yield layer
        if isinstance(layer, Residual):
            yield from _all(layer.layers)


def _l2(l2):
    try:
        # a float as the decimal it prints as (0.1 -> 1/10), exactly: λ shows as typed
        value = sp.Rational(repr(l2)) if isinstance(l2, float) else sp.sympify(l2, strict=True)
    except (sp.SympifyError, TypeError, ValueError):
        raise DefinitionError(f"l2 must be a non-negative number, got {l2!r}") from None
    if not value.is_number or not value.is_real or value < 0 or not value.is_finite:
        raise DefinitionError(f"l2 must be a non-negative number, got {l2!r}")
    return value


def mlp(sizes, activation="sigmoid", output="identity", loss="mse", reduction="mean", l2=0.0,
        residual: bool = False) -> Sequential:
    """A multi-layer perceptron: ``mlp([784, 128, 64, 10], "sigmoid", "softmax", "cross_entropy")``.

    ``sizes`` lists the input width and then each layer's width; hidden
    layers use `activation`, the last layer `output`; ``l2 = λ`` adds
    λ/2 · Σ_l ‖W_l‖²_F to the loss; ``residual=True`` makes every hidden
    layer after the first a skip connection (``Residual``), which needs
    the hidden widths equal.
    """
    try:
        sizes = list(sizes)
    except TypeError:
        raise DefinitionError(f"sizes must be a list of layer widths, got {sizes!r}") from None
    if len(sizes) < 2:
        raise DefinitionError(f"mlp needs at least two sizes (inputs and outputs), got {sizes!r}")
    get_activation(activation)      # checked even when there is no hidden layer
    for s in sizes:
        _width(s, "a layer width")
    hidden = [Dense(n, activation) for n in sizes[1:-1]]
    if residual:
        if len(set(sizes[1:-1])) > 1:
            raise DefinitionError(f"residual layers need equal hidden widths, got {sizes[1:-1]}")
        hidden = hidden[:1] + [Residual(layer) for layer in hidden[1:]]
    layers = hidden + [Dense(sizes[-1], output)]
    return Sequential(*layers, inputs=sizes[0], loss=loss, reduction=reduction, l2=l2)


class RNN(Graph):
    """An Elman RNN unrolled over `steps` time steps: a matrix Graph with shared weights.

    X is m × (steps·inputs) and x_t = X[:, (t−1)·inputs : t·inputs];
    h_0 = 0, h_t = f(x_t Wx + h_{t−1} Wh + 1 bh), Ŷ = g(h_T Wy + 1 by).
    The gradient of a shared weight is the sum over the steps that use it
    (backpropagation through time), which the engine's sum over children gives.
    """

    def __init__(self, inputs: int, hidden: int, outputs: int, steps: int, activation="tanh",
                 output="identity", loss="mse", reduction="mean", l2=0.0):
        super().__init__()
        f = get_activation(activation)
        if f is softmax:
            raise DefinitionError("softmax can only be the output's activation")
        d, n, k, T, out, lf = recurrent_sizes(self, inputs, hidden, outputs, steps, output, loss)
        X = self.inputs("X", shape=(BATCH, T * d))
        self.cell = "Elman"
        Wx, Wh, bh = self.params("Wx Wh bh", shape=[(d, n), (n, n), (1, n)])
        h = None
        for t in range(1, T + 1):
            x = self.node(f"x{t}", X[:, (t - 1) * d:t * d])
            pre = x @ Wx + ones(BATCH) @ bh if h is None else x @ Wx + h @ Wh + ones(BATCH) @ bh
            h = self.node(f"h{t}", pre if f is identity else f(self.node(f"z{t}", pre)))
            self.states.append(h.name)
        recurrent_readout(self, h, k, out, lf, reduction, l2, [Wx, Wh])


def recurrent_sizes(g: Graph, inputs, hidden, outputs, steps, output, loss):
    """Check a recurrent builder's sizes and its output/loss pair; set ``g.steps`` and
    ``g.loss_function``.  Returns (inputs, hidden, outputs, steps, output activation, loss)."""
    d, n, k, T = (_width(inputs, "inputs"), _width(hidden, "hidden"), _width(outputs, "outputs"),
                  _width(steps, "steps"))
    out, lf = get_activation(output), get_loss(loss)
    if (out is softmax) != (lf.needs == "softmax"):
        raise DefinitionError(f"loss {lf.name!r} and output {out.__name__!r} do not go together")
    if out is softmax and k == 1:
        raise DefinitionError("softmax on one output unit is always 1 (its gradient is zero): "
                              "use output='sigmoid' with loss='binary_cross_entropy'")
    g.steps, g.loss_function = T, lf
    return d, n, k, T, out, lf


def recurrent_readout(g: Graph, h, k, out, lf, reduction, l2, weights):
    """Ŷ = out(h_T W_y + 1 b_y) (parameters named Wy, by, or W_y, b_y when the recurrent
    weights use subscripts), the targets Y, and the loss with λ/2 Σ ‖W‖²_F over `weights`
    and the read-out weight (biases are not penalised)."""
    names = "W_y b_y" if "_" in weights[0].name else "Wy by"
    Wy, by = g.params(names, shape=[(h.shape[1], k), (1, k)])
    pre = h @ Wy + ones(BATCH) @ by
    Yhat = g.node("Yhat", pre if out is identity else out(g.node("Zy", pre)))
    Y = g.targets("Y", shape=(BATCH, k))
    l2 = _l2(l2)
    penalty = l2 / 2 * sum((sumsq(W) for W in [*weights, Wy]), sp.S.Zero) if l2 else None
    g.loss(lf(Yhat, Y), reduction=reduction, penalty=penalty)


def rnn(inputs: int, hidden: int, outputs: int, steps: int, activation="tanh", output="identity",
        loss="mse", reduction="mean", l2=0.0) -> RNN:
    """An Elman RNN unrolled over `steps` steps (see :class:`RNN`); parameters Wx, Wh, bh, Wy, by."""
    return RNN(inputs, hidden, outputs, steps, activation, output, loss, reduction, l2)
