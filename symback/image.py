"""Images as matrices: the patch matrix (unfold), pooling and flattening as node kinds.

One image sample of C channels and H×W pixels is the C × (H·W) matrix whose row c is
channel c read row by row (PyTorch's (C, H, W) memory order, so data of shape
(n, C, H, W) are the batch of these matrices after a reshape, a view).  Every map here
is defined once, entry by entry (:meth:`ImageMap.apply`), on explicit matrices:

* ``unfold``: the (C·k·k) × L patch matrix of torch.nn.functional.unfold (row (c, i, j),
  column the output position, L = H'·W'), with stride and zero padding; a convolution
  is then Kᵀ unfold(A) + bᵀ𝟏ᵀ (cross-correlation, as PyTorch);
* ``avgpool``: the mean of each k×k window (any stride, zero padding counted in the
  mean, as torch's avg_pool2d);
* ``flatten``: C × (H·W) → 1 × (C·H·W), ordered (c, i, j) as torch.flatten;
* ``maxpool``: the maximum of each k×k window's pixels (any stride; padding never wins,
  as torch's max_pool2d), not linear.

The first three are linear: each one's vector-Jacobian product is its adjoint (``fold``,
``avgpool_T``, ``unflatten``), whose own entry-by-entry definition is used only after
SymPy has proved it equal to Σᵢ yᵢ ∂(M x)ᵢ/∂xⱼ of the map's definition on small
geometries (:func:`prove_adjoint`).  Max-pooling's δ is routed to each window's arg-max
(:class:`MaxPoolVJP`), proved equal at random points to SymPy's derivative of Max, a
Heaviside step (:func:`prove_maxpool_vjp`).  Compiled code never forms these matrices:
each kind lowers itself (:meth:`ImageMap.lower`) to one statement that the printers print
with the library's own unfold/fold or reshapes.  Both classes follow the node-kind protocol of
:mod:`symback.kinds`.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import sympy as sp

from .errors import DefinitionError
from .kinds.base import Kind, is_matrix

__all__ = ["ImageMap", "MaxPoolVJP", "Geometry", "unfold", "avgpool", "maxpool", "flatten",
           "LINEAR", "IMAGE_OPS", "prove_adjoint", "prove_maxpool_vjp", "out_size"]

#: each linear map's adjoint (its vector-Jacobian product), both ways
LINEAR = {"unfold": "fold", "fold": "unfold", "avgpool": "avgpool_T", "avgpool_T": "avgpool",
          "flatten": "unflatten", "unflatten": "flatten"}
#: every kind a compiled function may hold (the lowering's operation names)
IMAGE_OPS = tuple(LINEAR) + ("maxpool", "maxpool_vjp", "conv", "conv_wgrad", "conv_igrad")


def out_size(n: int, k: int, stride: int, padding: int) -> int:
    """Output positions along one axis of n pixels: ⌊(n + 2p − k)/s⌋ + 1 (PyTorch's rule)."""
    return (n + 2 * padding - k) // stride + 1


class Geometry(tuple):
    """(C, H, W, k, stride, padding) of the image a map reads (the map's input image)."""

    def __new__(cls, C, H, W, k=1, stride=1, padding=0):
        return super().__new__(cls, (int(C), int(H), int(W), int(k), int(stride), int(padding)))

    @property
    def out(self) -> tuple[int, int]:
        """(H', W'): the output positions."""
        C, H, W, k, s, p = self
        return out_size(H, k, s, p), out_size(W, k, s, p)


def _shapes(op: str, g: Geometry):
    """(input shape, output shape) of one sample for the map `op` on geometry g."""
    C, H, W, k, _, _ = g
    Ho, Wo = g.out
    image, pooled = (C, H * W), (C, Ho * Wo)
    table = {"unfold": (image, (C * k * k, Ho * Wo)), "avgpool": (image, pooled), "maxpool": (image, pooled),
             "flatten": (image, (1, C * H * W))}
    if op in table:
        return table[op]
    inp, out = table[LINEAR[op]]
    return out, inp


class ImageMap(Kind, sp.MatrixExpr):
    """``ImageMap(A, op, geometry)``: one of the image maps (`op` in :data:`IMAGE_OPS` but
    ``maxpool_vjp``) applied to one sample A, whose shape the geometry fixes."""

    node_prefix = "U_"

    def __new__(cls, arg, op, geometry):
        op = op if isinstance(op, sp.core.symbol.Str) else sp.core.symbol.Str(str(op))
        if op.name not in LINEAR and op.name != "maxpool":
            raise DefinitionError(f"unknown image map {op.name!r}")
        geometry = sp.Tuple(*Geometry(*geometry))
        if not is_matrix(arg):
            raise DefinitionError(f"{op.name} takes a matrix (one image: channels × pixels), got {arg!r}")
        g = Geometry(*geometry)
        want = _shapes(op.name, g)[0]
        if tuple(arg.shape) != want:
            raise DefinitionError(f"{op.name}: an image of {g[0]} channels and {g[1]}×{g[2]} pixels is a "
                                  f"{want[0]}×{want[1]} matrix, got {arg} of shape {tuple(arg.shape)}")
        if min(g.out) < 1:
            raise DefinitionError(f"{op.name}: a {g[3]}×{g[3]} window (padding {g[5]}) does not fit in "
                                  f"{g[1]}×{g[2]} pixels")
        return super().__new__(cls, arg, op, geometry)

    @property
    def arg(self):
        """The sample the map reads."""
        return self.args[0]

    @property
    def op(self) -> str:
        """The map's name."""
        return self.args[1].name

    @property
    def geometry(self) -> Geometry:
        """(C, H, W, k, stride, padding) of the image (the input image of unfold, the pools,
        flatten; the image fold, avgpool_T and unflatten give back)."""
        return Geometry(*self.args[2])

    @property
    def shape(self):
        return tuple(sp.Integer(d) for d in _shapes(self.op, self.geometry)[1])

    def adjoint(self, D):
        """The adjoint map applied to D (a linear map's vector-Jacobian product), after SymPy's proof."""
        prove_adjoint(self.op)
        return ImageMap(D, LINEAR[self.op], self.geometry)

    def apply(self, x) -> sp.ImmutableMatrix:
        """The map applied to an explicit matrix x, from its definition entry by entry."""
        return sp.ImmutableMatrix(_DEFINITIONS[self.op](x, self.geometry))

    explicit_value = apply      # how symback.matrix.explicit writes this kind out

    def vjp(self, D, parent, P=None):
        """δ_A for δ = D: :func:`vjp` (an adjoint, or max-pooling's arg-max routing)."""
        if self.arg != parent:
            raise DefinitionError(f"internal: {self.op} of {self.arg} differentiated by {parent}")
        return vjp(self, D, parent)

    def lower(self, lo, target=None):
        """One statement named for the map (unfold, the pools, flatten: the library's own kernels)."""
        a = lo.materialize(lo.scalar(self.arg))
        return lo.emit(self.op, (a, tuple(self.geometry)), tuple(self.shape))

    def numeric_value(self, x, entrywise=None) -> np.ndarray:
        """The map applied to a NumPy array, from the same definition, in floating point (the
        documents' numbers: a CNN's are evaluated thousands of times, SymPy's Max took minutes)."""
        if self.op == "maxpool":        # each window's largest pixel, the windows as one index table
            table = _window_table(self.geometry)
            return np.concatenate([x, np.full((x.shape[0], 1), -np.inf)], axis=1)[:, table].max(axis=2)
        if self.op in _GATHERS:         # the definition's reads, recorded once: 0 reads padding
            return np.concatenate([[0.0], np.ravel(x)])[_gather_table(self.op, self.geometry)]
        return np.array(_DEFINITIONS[self.op](x, self.geometry), dtype=float)

    def _latex(self, printer, exp=None):
        C, H, W, k, s, p = self.geometry
        extra = "".join(f",{n}={v}" for n, v in (("s", s), ("p", p)) if (n, v) not in (("s", 1), ("p", 0)))
        # a pool's stride is k unless said otherwise
        pool = str(k) + "".join(f",{n}={v}" for n, v in (("s", s), ("p", p)) if (n, v) not in (("s", k), ("p", 0)))
        name = {"unfold": r"\operatorname{unfold}_{%d\times%d%s}" % (k, k, extra),
                "fold": r"\operatorname{fold}_{%d\times%d%s}" % (k, k, extra),
                "avgpool": r"\operatorname{avgpool}_{%s}" % pool, "avgpool_T": r"\operatorname{avgpool}_{%s}^{\top}" % pool,
                "maxpool": r"\operatorname{maxpool}_{%s}" % pool,
                "flatten": r"\operatorname{flatten}", "unflatten": r"\operatorname{flatten}^{-1}"}[self.op]
        return r"%s\left(%s\right)" % (name, printer._print(self.arg))

    def _text(self, printer):
        C, H, W, k, s, p = self.geometry
        conv = f"{k}×{k}" + "".join(f",{n}={v}" for n, v in (("s", s), ("p", p)) if (n, v) not in (("s", 1), ("p", 0)))
        pool = str(k) + "".join(f",{n}={v}" for n, v in (("s", s), ("p", p)) if (n, v) not in (("s", k), ("p", 0)))
        name = {"unfold": f"unfold_{conv}", "fold": f"fold_{conv}", "avgpool": f"avgpool_{pool}",
                "avgpool_T": f"avgpool_{pool}ᵀ", "maxpool": f"maxpool_{pool}", "flatten": "flatten",
                "unflatten": "flatten⁻¹"}[self.op]
        return f"{name}({printer._print(self.arg)})"


class MaxPoolVJP(Kind, sp.MatrixExpr):
    """``MaxPoolVJP(D, A, geometry)``: δ_A for P = maxpool(A) and δ_P = D: each window's δ goes to
    the window's first arg-max (row by row, as PyTorch), every other pixel gets 0.  Used
    only after SymPy has proved it equal to the derivative of Max (:func:`prove_maxpool_vjp`)."""

    def __new__(cls, D, A, geometry):
        return super().__new__(cls, D, A, sp.Tuple(*Geometry(*geometry)))

    @property
    def geometry(self) -> Geometry:
        """The pooled image's (C, H, W, k, stride, padding)."""
        return Geometry(*self.args[2])

    @property
    def shape(self):
        return self.args[1].shape

    def apply(self, d, a) -> sp.ImmutableMatrix:
        """The closed form on explicit δ and A: pixel q of a window gets the window's δ times
        [q is the first arg-max] = Π_{r before q} [a_q > a_r] · Π_{r after q} [a_q ≥ a_r]
        (a number for numbers; a Piecewise of the comparisons for symbols)."""
        return sp.ImmutableMatrix(self._routed(d, a, lambda first: sp.Piecewise((1, sp.And(*first)), (0, True))))

    def numeric_value(self, d, a, entrywise=None) -> np.ndarray:
        """The same closed form on NumPy arrays (the comparisons decided in floating point)."""
        return np.array(self._routed(d, a, lambda first: float(all(first))), dtype=float)

    def lower(self, lo, target=None):
        """One ``maxpool_vjp`` statement (the library's routing of δ to each window's arg-max)."""
        d, a = (lo.materialize(lo.scalar(x)) for x in self.args[:2])
        return lo.emit("maxpool_vjp", (d, a, tuple(self.geometry)), tuple(self.shape))

    def _routed(self, d, a, indicator) -> list:
        """δ_A's rows, [q is its window's first arg-max] written by `indicator` of the comparisons."""
        g = self.geometry
        C, H, W = g[:3]
        Ho, Wo = g.out
        out = [[0] * (H * W) for _ in range(C)]
        for c in range(C):
            for oy in range(Ho):
                for ox in range(Wo):
                    cells = _window(g, oy, ox)
                    for n, q in enumerate(cells):
                        first = [a[c, q] > a[c, r] for r in cells[:n]] + [a[c, q] >= a[c, r] for r in cells[n + 1:]]
                        # overlapping windows (stride < k): a pixel sums every window it wins
                        out[c][q] += d[c, oy * Wo + ox] * indicator(first)
        return out

    explicit_value = apply      # how symback.matrix.explicit writes this kind out

    def _latex(self, printer, exp=None):
        return r"\operatorname{route}_{\arg\max}\left(%s, %s\right)" % (
            printer._print(self.args[0]), printer._print(self.args[1]))

    def _text(self, printer):
        return f"route_argmax({printer._print(self.args[0])}, {printer._print(self.args[1])})"


# ---------------------------------------------------------------- definitions, entry by entry
def _unfold(x, g):
    C, H, W, k, s, p = g
    Ho, Wo = g.out

    def pixel(c, y, z):
        return x[c, y * W + z] if 0 <= y < H and 0 <= z < W else 0
    return [[pixel(c, oy * s + i - p, ox * s + j - p) for oy in range(Ho) for ox in range(Wo)]
            for c in range(C) for i in range(k) for j in range(k)]


def _fold(d, g):
    """col2im: each pixel sums the patch entries that read it (written from the pixel's side)."""
    C, H, W, k, s, p = g
    Ho, Wo = g.out

    def pixel(c, y, z):
        total = 0           # (a Python 0: the same definition adds floats without SymPy)
        for i in range(k):
            for j in range(k):
                ny, nz = y + p - i, z + p - j          # = oy·s, ox·s when (y, z) is in patch (oy, ox)
                if ny % s == 0 and nz % s == 0 and 0 <= ny // s < Ho and 0 <= nz // s < Wo:
                    total += d[(c * k + i) * k + j, (ny // s) * Wo + nz // s]
        return total
    return [[pixel(c, y, z) for y in range(H) for z in range(W)] for c in range(C)]


@lru_cache(maxsize=4096)
def _window(g, oy, ox) -> tuple:
    """The flat indices (row-major) of the pixels in window (oy, ox); padding holds none.
    (Kept: a document's finite differences evaluate every window thousands of times.)"""
    _, H, W, k, s, p = g
    return tuple(y * W + z for y, z in ((oy * s + i - p, ox * s + j - p) for i in range(k) for j in range(k))
                 if 0 <= y < H and 0 <= z < W)


#: the maps whose every entry is one input entry (or a padding 0)
_GATHERS = ("unfold", "flatten", "unflatten")


@lru_cache(maxsize=256)
def _gather_table(op: str, g) -> np.ndarray:
    """Which input entry (1 + its flat index; 0 for padding) each output entry of `op` reads: the
    definition applied once to the matrix of those numbers."""
    r, c = _shapes(op, g)[0]
    return np.array(_DEFINITIONS[op](np.arange(1, r * c + 1).reshape(r, c), g), dtype=np.intp)


@lru_cache(maxsize=256)
def _window_table(g) -> np.ndarray:
    """(H'·W') × k² flat pixel indices of every window (row by row), H·W where a window is padding."""
    _, H, W, k = g[:4]
    Ho, Wo = g.out
    return np.array([(list(_window(g, oy, ox)) + [H * W] * k * k)[:k * k] for oy in range(Ho) for ox in range(Wo)])


def _avgpool(x, g):
    """Each window's pixel sum over k² (padding counts as zeros, as torch's count_include_pad)."""
    C, k = g[0], g[3]
    Ho, Wo = g.out
    return [[sum(x[c, q] for q in _window(g, oy, ox)) / k ** 2 for oy in range(Ho) for ox in range(Wo)]
            for c in range(C)]


def _avgpool_t(d, g):
    """avgpool's adjoint, written from the pixel's side: d/k² of every window holding the pixel."""
    C, H, W, k, _, _ = g
    Ho, Wo = g.out
    holds = [[] for _ in range(H * W)]
    for oy in range(Ho):
        for ox in range(Wo):
            for q in _window(g, oy, ox):
                holds[q].append(oy * Wo + ox)
    return [[sum(d[c, o] for o in holds[q]) / k ** 2 if holds[q] else 0 for q in range(H * W)] for c in range(C)]


def _maxpool(x, g):
    C = g[0]
    Ho, Wo = g.out
    return [[sp.Max(*[x[c, q] for q in _window(g, oy, ox)]) for oy in range(Ho) for ox in range(Wo)]
            for c in range(C)]


def _flatten(x, g):
    C, H, W = g[:3]
    return [[x[c, q] for c in range(C) for q in range(H * W)]]


def _unflatten(d, g):
    C, H, W = g[:3]
    return [[d[0, c * H * W + q] for q in range(H * W)] for c in range(C)]


_DEFINITIONS = {"unfold": _unfold, "fold": _fold, "avgpool": _avgpool, "avgpool_T": _avgpool_t,
                "maxpool": _maxpool, "flatten": _flatten, "unflatten": _unflatten}

#: the small geometries (C, H, W, k, stride, padding) each adjoint is proved on
_CASES = {"unfold": [(1, 3, 3, 2, 1, 0), (2, 4, 3, 2, 2, 1), (1, 5, 4, 3, 2, 1), (1, 3, 4, 2, 3, 2),
                     (2, 3, 3, 3, 1, 2)],
          "avgpool": [(1, 4, 4, 2, 2, 0), (2, 5, 4, 2, 2, 0), (1, 6, 7, 3, 3, 0), (1, 5, 5, 3, 2, 1),
                      (2, 4, 5, 2, 1, 1)],
          "flatten": [(1, 2, 2), (2, 2, 3), (3, 1, 2)]}


@lru_cache(maxsize=None)
def prove_adjoint(op: str) -> bool:
    """Prove on small geometries that the adjoint's definition is the vector-Jacobian product
    of the map's: (adjoint y)ⱼ = Σᵢ yᵢ ∂(M x)ᵢ/∂xⱼ, SymPy's derivative, for symbolic x and y
    (so ⟨M x, y⟩ = ⟨x, adjoint y⟩).  Raises if it does not hold."""
    forward = op if op in _CASES else LINEAR[op]
    for case in _CASES[forward]:
        g = Geometry(*case)
        (r, c), (ro, co) = _shapes(forward, g)
        x = sp.Matrix(r, c, lambda i, j: sp.Symbol(f"x_{i}_{j}", real=True))
        y = sp.Matrix(ro, co, lambda i, j: sp.Symbol(f"y_{i}_{j}", real=True))
        mx = sp.Matrix(_DEFINITIONS[forward](x, g))
        vjp = sp.Matrix(r, c, lambda i, j: sum(y[a] * sp.diff(mx[a], x[i, j]) for a in range(ro * co)))
        adj = sp.Matrix(_DEFINITIONS[LINEAR[forward]](y, g))
        if (vjp - adj).expand() != sp.zeros(r, c):
            raise DefinitionError(f"internal: {LINEAR[forward]} is not the adjoint of {forward} at {case}")
        # both ways: the forward map is the adjoint's adjoint (fold's VJP is unfold)
        vjp2 = sp.Matrix(ro, co, lambda i, j: sum(x[a] * sp.diff(adj[a], y[i, j]) for a in range(r * c)))
        if (vjp2 - mx).expand() != sp.zeros(ro, co):
            raise DefinitionError(f"internal: {forward} is not the adjoint of {LINEAR[forward]} at {case}")
    return True


@lru_cache(maxsize=None)
def prove_maxpool_vjp(points: int = 3) -> bool:
    """Check :class:`MaxPoolVJP`'s arg-max routing against SymPy's derivative of Max (a Heaviside
    step of the entry minus the window's other entries) at random points with distinct entries,
    on small geometries (windows 2×2 and 3×3, a cropped edge).  Raises if they differ."""
    import random
    rng = random.Random(0)
    for case in [(1, 4, 4, 2, 2, 0), (2, 5, 4, 2, 2, 0), (1, 3, 3, 3, 3, 0), (1, 5, 5, 3, 2, 1), (1, 4, 3, 2, 1, 1)]:
        g = Geometry(*case)
        (r, c), (ro, co) = _shapes("maxpool", g)
        x = sp.Matrix(r, c, lambda i, j: sp.Symbol(f"x_{i}_{j}", real=True))
        y = sp.Matrix(ro, co, lambda i, j: sp.Symbol(f"y_{i}_{j}", real=True))
        mx = sp.Matrix(_maxpool(x, g))
        vjp = sp.Matrix(r, c, lambda i, j: sum(y[a] * sp.diff(mx[a], x[i, j]) for a in range(ro * co)))
        for _ in range(points):
            values = rng.sample(range(-50, 50), r * c)
            at = {x[i]: sp.Rational(v, 7) for i, v in enumerate(values)}
            closed = MaxPoolVJP(sp.MatrixSymbol("D", ro, co), sp.MatrixSymbol("A", r, c), g).apply(
                y, x.xreplace(at))
            if (vjp.xreplace(at).doit() - closed).expand() != sp.zeros(r, c):
                raise DefinitionError(f"internal: max-pooling's arg-max VJP is not SymPy's at {case}")
    return True


def vjp(child: "ImageMap", D, parent):
    """The vector-Jacobian product of an image node: the adjoint of a linear map, the arg-max
    routing of max-pooling; each proved before it is used."""
    if child.op == "maxpool":
        prove_maxpool_vjp()
        return MaxPoolVJP(D, parent, child.geometry)
    return child.adjoint(D)


def unfold(A, image, k: int, stride: int = 1, padding: int = 0) -> ImageMap:
    """The (C·k·k) × L patch matrix of the image A (C × H·W; ``image`` = (C, H, W))."""
    return ImageMap(A, "unfold", (*image, k, stride, padding))


def pool_geometry(image, k: int, stride=None, padding: int = 0) -> Geometry:
    """(C, H, W, k, stride, padding) of a k×k pool (stride k unless given), checked as
    torch checks it: padding at most k/2 (so every window holds a pixel), and a window fits."""
    s = k if stride is None else stride
    g = Geometry(*image, k, s, padding)
    if 2 * padding > k:
        raise DefinitionError(f"pooling: padding {padding} is more than half the {k}×{k} window "
                              f"(a window would hold only padding)")
    if min(g.out) < 1:
        raise DefinitionError(f"pooling: a {k}×{k} window (padding {padding}) does not fit in "
                              f"{g[1]}×{g[2]} pixels")
    return g


def avgpool(A, image, k: int, stride=None, padding: int = 0) -> ImageMap:
    """The mean of each k×k window (stride k unless given; zero padding counts) of the image A."""
    return ImageMap(A, "avgpool", pool_geometry(image, k, stride, padding))


def maxpool(A, image, k: int, stride=None, padding: int = 0) -> ImageMap:
    """The maximum of each k×k window (stride k unless given) of the image A's pixels."""
    return ImageMap(A, "maxpool", pool_geometry(image, k, stride, padding))


def flatten(A, image) -> ImageMap:
    """The image A as one row, ordered (c, i, j) as torch.flatten."""
    return ImageMap(A, "flatten", tuple(image))


__all__ += ["vjp", "pool_geometry"]
