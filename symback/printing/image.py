"""The image maps of :mod:`symback.image` as each library's own kernels (module helpers).

Every helper takes a batch of one-sample matrices, (n, C, H·W) for an image, and the
geometry C, H, W, k, s (stride), p (padding); it returns a fresh array (flatten and
unflatten: a reshape, which the code generator treats as a view).  No helper loops over
samples or channels: unfold is a strided view (NumPy), ``F.unfold`` (torch) or
``conv_general_dilated_patches`` (JAX); fold adds the k·k kernel offsets' slices; the
pools are reshapes or the k·k window offsets' strided slices.  What they compute is fixed by
the definitions in :mod:`symback.image` (tests compare them with ``torch.nn.functional``).
JAX's are in :mod:`symback.printing.image_jax`.  Text only: printing needs no library.
"""
from __future__ import annotations

__all__ = ["NUMPY", "TORCH", "call"]


def call(op: str, args: list, geometry) -> str:
    """The helper call for the image map `op` on the printed arguments."""
    return f"_{op}({', '.join(args)}, {', '.join(map(str, geometry))})"


# shared by every library: window reshapes, written with the array's own methods
_COMMON = '''

def _out(n, k, s, p):
    """Output positions along one axis: floor((n + 2p - k)/s) + 1, as PyTorch."""
    return (n + 2 * p - k) // s + 1


def _windows(a, C, H, W, k):
    """(n, C, H', W', k*k): each k-by-k window (stride k) of the images, cropped as PyTorch."""
    n, Ho, Wo = a.shape[0], H // k, W // k
    x = a.reshape(n, C, H, W)[:, :, :Ho * k, :Wo * k].reshape(n, C, Ho, k, Wo, k)
    return _perm(x, (0, 1, 2, 4, 3, 5)).reshape(n, C, Ho, Wo, k * k)


def _unwindows(g, C, H, W, k):
    """The inverse of _windows: (n, C, H', W', k*k) back to (n, C, H*W), zeros where cropped."""
    n, Ho, Wo = g.shape[0], H // k, W // k
    g = _perm(g.reshape(n, C, Ho, Wo, k, k), (0, 1, 2, 4, 3, 5)).reshape(n, C, Ho * k, Wo * k)
    if Ho * k != H or Wo * k != W:
        g = _pad2(g, 0, H - Ho * k, 0, W - Wo * k)
    return g.reshape(n, C, H * W)


def _avgpool(a, C, H, W, k, s, p):
    """The mean of each k-by-k window: a reshape and a sum over the window's two axes (windows
    side by side; overlapping or padded ones by _avgpool_general)."""
    if s != k or p:
        return _avgpool_general(a, C, H, W, k, s, p)
    n, Ho, Wo = a.shape[0], H // k, W // k
    x = a.reshape(n, C, H, W)[:, :, :Ho * k, :Wo * k].reshape(n, C, Ho, k, Wo, k)
    return x.sum((3, 5)).reshape(n, C, Ho * Wo) / (k * k)


def _avgpool_T(d, C, H, W, k, s, p):
    """avgpool's adjoint: each window's entry, divided by k*k, on each of its pixels."""
    if s != k or p:
        return _avgpool_T_general(d, C, H, W, k, s, p)
    w = d.reshape(d.shape[0], C, H // k, W // k, 1) / (k * k) + _zeros_like_windows(d, k)
    return _unwindows(w, C, H, W, k)


def _maxpool(a, C, H, W, k, s, p):
    """The maximum of each k-by-k window."""
    if s != k or p:
        return _maxpool_general(a, C, H, W, k, s, p)
    return _max_last(_windows(a, C, H, W, k)).reshape(a.shape[0], C, -1)


def _maxpool_vjp(d, a, C, H, W, k, s, p):
    """delta of each window to its first arg-max (row-major), 0 elsewhere."""
    if s != k or p:
        return _maxpool_vjp_general(d, a, C, H, W, k, s, p)
    w = _windows(a, C, H, W, k)
    hit = _argmax_last(w)[..., None] == _arange(k * k, w)
    return _unwindows(hit * d.reshape(w.shape[:-1] + (1,)), C, H, W, k)


def _flatten(a, C, H, W, k, s, p):
    """Each image as one row, ordered (c, i, j)."""
    return a.reshape(a.shape[0], 1, C * H * W)


def _unflatten(d, C, H, W, k, s, p):
    """Each row back to an image."""
    return d.reshape(d.shape[0], C, H * W)
'''

# the array helpers NumPy and JAX share (xp: the library's module)
_ARRAY = '''
def _perm(x, axes):
    return x.transpose(axes)


def _pad2(x, top, bottom, left, right):
    """Zeros around the last two axes."""
    return xp.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))


def _zeros_like_windows(d, k):
    return xp.zeros((1, 1, 1, 1, k * k), dtype=d.dtype)


def _max_last(w):
    return w.max(axis=-1)


def _argmax_last(w):
    return w.argmax(axis=-1)


def _arange(n, like):
    return xp.arange(n)


def _offset(x, i, j, s, Ho, Wo):
    """The (n, C, H', W') pixels at offset (i, j) of every window of the (padded) images x."""
    return x[:, :, i:i + s * (Ho - 1) + 1:s, j:j + s * (Wo - 1) + 1:s]


def _padded(a, C, H, W, p, value):
    x = a.reshape(a.shape[0], C, H, W)
    return xp.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=value) if p else x


def _avgpool_general(a, C, H, W, k, s, p):
    """Overlapping or padded windows: the k*k offsets' slices summed, over k*k (zeros counted)."""
    Ho, Wo = _out(H, k, s, p), _out(W, k, s, p)
    x = _padded(a, C, H, W, p, 0)
    total = sum(_offset(x, i, j, s, Ho, Wo) for i in range(k) for j in range(k))
    return total.reshape(a.shape[0], C, Ho * Wo) / (k * k)


def _maxpool_general(a, C, H, W, k, s, p):
    """Overlapping or padded windows: the maximum over the k*k offsets' slices (padding -inf)."""
    Ho, Wo = _out(H, k, s, p), _out(W, k, s, p)
    x = _padded(a, C, H, W, p, -xp.inf)
    out = _offset(x, 0, 0, s, Ho, Wo)
    for i in range(k):
        for j in range(k):
            out = xp.maximum(out, _offset(x, i, j, s, Ho, Wo))
    return out.reshape(a.shape[0], C, Ho * Wo)


def _scatter_offsets(parts, n, C, H, W, k, s, p, dtype):
    """The adjoint of reading the k*k offsets' slices: each part added back where it was read
    (windows overlap when s < k), the padding cropped."""
    Ho, Wo = _out(H, k, s, p), _out(W, k, s, p)
    out = xp.zeros((n, C, H + 2 * p, W + 2 * p), dtype=dtype)
    for (i, j), v in zip([(i, j) for i in range(k) for j in range(k)], parts):
        out = _add_slice(out, (slice(None), slice(None), slice(i, i + s * (Ho - 1) + 1, s),
                               slice(j, j + s * (Wo - 1) + 1, s)), v)
    return out[:, :, p:p + H, p:p + W].reshape(n, C, H * W)


def _avgpool_T_general(d, C, H, W, k, s, p):
    """avgpool's adjoint for overlapping or padded windows."""
    v = d.reshape(d.shape[0], C, _out(H, k, s, p), _out(W, k, s, p)) / (k * k)
    return _scatter_offsets([v] * (k * k), d.shape[0], C, H, W, k, s, p, d.dtype)


def _maxpool_vjp_general(d, a, C, H, W, k, s, p):
    """delta of each window to its first arg-max (row-major; padding never wins), summed over
    the windows a pixel belongs to."""
    Ho, Wo = _out(H, k, s, p), _out(W, k, s, p)
    x = _padded(a, C, H, W, p, -xp.inf)
    best, idx = _offset(x, 0, 0, s, Ho, Wo), 0
    for q in range(1, k * k):
        v = _offset(x, q // k, q % k, s, Ho, Wo)
        up = v > best               # strictly greater: the first of equal maxima keeps it
        best, idx = xp.where(up, v, best), xp.where(up, q, idx)
    d = d.reshape(best.shape)
    return _scatter_offsets([d * (idx == q) for q in range(k * k)], d.shape[0], C, H, W, k, s, p, d.dtype)


'''

NUMPY = '''
''' + _ARRAY.replace('xp.', 'np.') + '''
def _add_slice(out, where, v):
    out[where] += v
    return out


def _unfold(a, C, H, W, k, s, p):
    """The (n, C*k*k, L) patch matrices, rows (c, i, j) as torch.nn.functional.unfold: a
    strided view of every k-by-k window, then one copy into that order."""
    n, Ho, Wo = a.shape[0], _out(H, k, s, p), _out(W, k, s, p)
    x = a.reshape(n, C, H, W)
    if p:
        x = _pad2(x, p, p, p, p)
    v = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::s, ::s][:, :, :Ho, :Wo]
    out = v.transpose(0, 1, 4, 5, 2, 3).reshape(n, C * k * k, Ho * Wo)
    # a 1x1 kernel's patches are pixels of a: the reshape can be a view of it, which the code
    # would see change when it overwrites a in place after its last read (an activation's
    # derivative): the patches are always an array of their own
    return out.copy() if np.may_share_memory(out, a) else out


def _fold(d, C, H, W, k, s, p):
    """unfold's adjoint (col2im): each patch entry added to the pixel it was read from, one
    strided slice per kernel offset (i, j)."""
    n, Ho, Wo = d.shape[0], _out(H, k, s, p), _out(W, k, s, p)
    d = d.reshape(n, C, k, k, Ho, Wo)
    out = np.zeros((n, C, max(H + 2 * p, (Ho - 1) * s + k), max(W + 2 * p, (Wo - 1) * s + k)), dtype=d.dtype)
    for i in range(k):
        for j in range(k):
            out[:, :, i:i + s * (Ho - 1) + 1:s, j:j + s * (Wo - 1) + 1:s] += d[:, :, i, j]
    return np.ascontiguousarray(out[:, :, p:p + H, p:p + W]).reshape(n, C, H * W)
''' + _COMMON + '''

def _maxpool(a, C, H, W, k, s, p):
    """The maximum of each k-by-k window: np.maximum over the k*k strided slices of the window
    offsets (NumPy's max over two strided axes is several times slower)."""
    if s != k or p:
        return _maxpool_general(a, C, H, W, k, s, p)
    n, Ho, Wo = a.shape[0], H // k, W // k
    x = a.reshape(n, C, H, W)
    out = x[:, :, :Ho * k:k, :Wo * k:k].copy()
    for i in range(k):
        for j in range(k):
            if i or j:
                np.maximum(out, x[:, :, i:Ho * k:k, j:Wo * k:k], out=out)
    return out.reshape(n, C, Ho * Wo)


def _maxpool_vjp(d, a, C, H, W, k, s, p):
    """delta of each window to its first arg-max (row-major): the running arg-max and the
    scatter each take one strided slice per window offset (k*k of them), no copy of A."""
    if s != k or p:
        return _maxpool_vjp_general(d, a, C, H, W, k, s, p)
    n, Ho, Wo = a.shape[0], H // k, W // k
    x, d = a.reshape(n, C, H, W), d.reshape(n, C, Ho, Wo)
    offsets = [(i, j) for i in range(k) for j in range(k)]
    best = x[:, :, :Ho * k:k, :Wo * k:k].copy()
    idx = np.zeros(best.shape, dtype=np.int8 if k * k < 128 else np.intp)
    for q, (i, j) in enumerate(offsets[1:], start=1):
        v = x[:, :, i:Ho * k:k, j:Wo * k:k]
        up = v > best               # strictly greater: the first of equal maxima keeps it
        np.copyto(best, v, where=up)
        np.copyto(idx, q, where=up)
    out = np.zeros((n, C, H, W), dtype=d.dtype)
    for q, (i, j) in enumerate(offsets):
        np.multiply(d, idx == q, out=out[:, :, i:Ho * k:k, j:Wo * k:k])
    return out.reshape(n, C, H * W)
'''

TORCH = '''

def _perm(x, axes):
    return x.permute(axes)


def _pad2(x, top, bottom, left, right):
    """Zeros around the last two axes."""
    return torch.nn.functional.pad(x, (left, right, top, bottom))


def _zeros_like_windows(d, k):
    return d.new_zeros((1, 1, 1, 1, k * k))


def _max_last(w):
    return w.amax(dim=-1)


def _argmax_last(w):
    return w.argmax(dim=-1)


def _arange(n, like):
    return torch.arange(n, device=like.device)


def _unfold(a, C, H, W, k, s, p):
    """The (n, C*k*k, L) patch matrices: torch.nn.functional.unfold."""
    return torch.nn.functional.unfold(a.reshape(a.shape[0], C, H, W), k, padding=p, stride=s)


def _fold(d, C, H, W, k, s, p):
    """unfold's adjoint (col2im): torch.nn.functional.fold."""
    Ho, Wo = _out(H, k, s, p), _out(W, k, s, p)
    if (Ho - 1) * s + k > H + 2 * p or (Wo - 1) * s + k > W + 2 * p or (H + 2 * p - k) % s or (W + 2 * p - k) % s:
        Hf, Wf = (Ho - 1) * s + k - 2 * p, (Wo - 1) * s + k - 2 * p      # the pixels the patches read
        out = torch.nn.functional.fold(d, (Hf, Wf), k, padding=p, stride=s)
        return _pad2(out, 0, H - Hf, 0, W - Wf).reshape(d.shape[0], C, H * W)
    return torch.nn.functional.fold(d, (H, W), k, padding=p, stride=s).reshape(d.shape[0], C, H * W)
''' + _COMMON + '''

def _conv(a, K, C, H, W, k, s, p):
    """K^T unfold(a) for each sample, by torch's convolution (K = weight.reshape(C_out, -1).T)."""
    Co = K.shape[1]
    z = torch.nn.functional.conv2d(a.reshape(a.shape[0], C, H, W), K.T.reshape(Co, C, k, k), stride=s, padding=p)
    return z.reshape(a.shape[0], Co, -1)


def _conv_wgrad(a, d, C, H, W, k, s, p):
    """The sum over the samples of unfold(a) d^T, by torch's convolution weight-gradient kernel."""
    # the kernel reads only the weight's shape and layout; torch.nn.grad.conv2d_weight's
    # zero-stride placeholder sends it down a slower path (the 28x28 LeNet's first layer:
    # 2.3-2.9 ms against 1.6-1.7 ms with a dense weight, as autograd passes)
    Co = d.shape[1]
    return _conv_backward(a, d, d.new_empty((Co, C, k, k)), C, H, W, k, s, p, (False, True))[1]


def _conv_igrad(d, K, C, H, W, k, s, p):
    """fold(K d) for each sample, by torch's convolution input-gradient kernel."""
    n, Co = d.shape[0], K.shape[1]
    g = torch.nn.grad.conv2d_input((n, C, H, W), K.T.reshape(Co, C, k, k),
                                   d.reshape(n, Co, _out(H, k, s, p), _out(W, k, s, p)), stride=s, padding=p)
    return g.reshape(n, C, H * W)


def _conv_grads(a, d, K, C, H, W, k, s, p):
    """(_conv_igrad(d, K, ...), _conv_wgrad(a, d, ...)) by one call of torch's convolution
    backward kernel, as autograd calls it."""
    return _conv_backward(a, d, K.T.reshape(K.shape[1], C, k, k), C, H, W, k, s, p, (True, True))


def _conv_backward(a, d, w, C, H, W, k, s, p, wanted):
    """(a's δ as (n, C, H*W), the kernel's as K's (C*k*k, C_out)) of the convolution of a with
    the weight w (C_out, C, k, k), from its output's δ d: torch's convolution backward kernel,
    computing the ones `wanted` says (None for the others)."""
    n, Co = a.shape[0], d.shape[1]
    gi, gw, _ = torch.ops.aten.convolution_backward(
        d.reshape(n, Co, _out(H, k, s, p), _out(W, k, s, p)), a.reshape(n, C, H, W), w,
        None, [s, s], [p, p], [1, 1], False, [0, 0], 1, (*wanted, False))
    return (gi.reshape(n, C, H * W) if wanted[0] else None), (gw.reshape(Co, -1).T if wanted[1] else None)


def _by_slices(x, k, s, p):
    """Whether x's pooling windows lie side by side (stride k, no padding) on CPU data: there
    the maxima of the k*k window offsets' strided slices are the fastest forward when no δ
    follows (a LeNet's 64x6x28x28 float64 maps: 0.4 ms, against 0.9 ms for torch's kernel
    on a channels-last copy)."""
    return s == k and not p and x.is_cpu


def _offsets(x, k):
    """The (n, C, H', W') views of each window offset (i, j), row-major, windows side by side."""
    Ho, Wo = x.shape[2] // k, x.shape[3] // k
    return [x[:, :, i:Ho * k:k, j:Wo * k:k] for i in range(k) for j in range(k)]


def _max_offsets(x, k):
    """The maximum of each k-by-k window (side by side): the maxima of the offsets' slices."""
    parts = _offsets(x, k)
    out = torch.maximum(parts[0], parts[1]) if k > 1 else parts[0].clone()
    for v in parts[2:]:
        torch.maximum(out, v, out=out)
    return out


def _maxpool(a, C, H, W, k, s, p):
    """The maximum of each k-by-k window: torch's max_pool2d (on CPU data with windows side by
    side, _max_offsets)."""
    x = a.reshape(a.shape[0], C, H, W)
    if _by_slices(x, k, s, p):
        return _max_offsets(x, k).reshape(a.shape[0], C, -1)
    return torch.nn.functional.max_pool2d(x, k, s, p).reshape(a.shape[0], C, -1)


def _maxpool_pair(a, C, H, W, k, s, p):
    """(the maximum of each k-by-k window, the flat index of its first arg-max): torch's kernel,
    on CPU data reading the map in channels-last layout."""
    x = a.reshape(a.shape[0], C, H, W)
    if x.is_cpu:
        # torch's CPU kernel runs along the channels, vectorised, on a channels-last map, and
        # pixel by pixel on NCHW (a LeNet's 64x6x28x28 float64 maps, forward and δ: 1.1 ms
        # with the copy, 1.9 ms NCHW; the offsets' slices and a δ routed by masks 1.8 ms)
        x = x.contiguous(memory_format=torch.channels_last)
    out, idx = torch.nn.functional.max_pool2d(x, k, s, p, return_indices=True)
    # back to NCHW (a channels-last out reshapes to a strided view, and every kernel after it,
    # the next convolution's included, would copy or run on that layout)
    return out.contiguous().reshape(a.shape[0], C, -1), idx


def _maxpool_vjp_idx(d, pair, C, H, W, k, s, p):
    """_maxpool_vjp with the maxima and arg-max indices the forward's _maxpool_pair found (no
    second pool, and no map: the kernel reads only its input's shape)."""
    n, idx = d.shape[0], pair[1]
    # a stand-in for the pooled map, so that the map itself can go after the forward (a LeNet
    # step: one 2.4 MB array fewer held to the end); the CPU kernel never reads it, and a
    # GPU one copies its input contiguous, so there it is an empty tensor, not a broadcast
    x = d.new_empty(()).expand(n, C, H, W) if d.is_cpu else d.new_empty((n, C, H, W))
    g = torch.ops.aten.max_pool2d_with_indices_backward(d.reshape(idx.shape), x, [k, k], [s, s], [p, p],
                                                        [1, 1], False, idx)
    return g.reshape(n, C, H * W)


def _pool_gather(z, pair, C, H, W, k, s, p):
    """z (n, C, H*W) at each window's first arg-max, the indices _maxpool_pair found: the pooled
    map's shape (a mask read there moves onto the pooled δ, symback.poolkernels)."""
    idx = pair[1]
    # (a channels-last map's indices flatten their two last axes as a view)
    return torch.gather(z.reshape(z.shape[0], C, H * W), 2, idx.reshape(idx.shape[0], C, -1))


def _maxpool_vjp(d, a, C, H, W, k, s, p):
    """delta of each window to its first arg-max: torch's max-pooling backward kernel, with the
    arg-max indices of its forward kernel (_maxpool_pair)."""
    return _maxpool_vjp_idx(d, _maxpool_pair(a, C, H, W, k, s, p), C, H, W, k, s, p)


def _avgpool_general(a, C, H, W, k, s, p):
    """Overlapping or padded windows: torch's avg_pool2d (zeros counted)."""
    x = a.reshape(a.shape[0], C, H, W)
    return torch.nn.functional.avg_pool2d(x, k, s, p).reshape(a.shape[0], C, -1)


def _avgpool_T_general(d, C, H, W, k, s, p):
    """avgpool's adjoint for overlapping or padded windows: torch's average-pooling backward kernel."""
    n = d.shape[0]
    g = torch.ops.aten.avg_pool2d_backward(d.reshape(n, C, _out(H, k, s, p), _out(W, k, s, p)),
                                           d.new_zeros((n, C, H, W)), [k, k], [s, s], [p, p], False, True, None)
    return g.reshape(n, C, H * W)
'''
