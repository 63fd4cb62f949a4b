"""The image maps of :mod:`symback.image` as JAX helpers (see :mod:`symback.printing.image`,
whose window reshapes and array helpers they share): XLA's convolution for the convolutions'
products, and max-pooling's maxima with their arg-max indices by one reduction.  Text only.
"""
from __future__ import annotations

from .image import _ARRAY, _COMMON

__all__ = ["JAX"]

JAX = '''
''' + _ARRAY.replace('xp.', 'jnp.') + '''
def _add_slice(out, where, v):
    return out.at[where].add(v)


def _unfold(a, C, H, W, k, s, p):
    """The (n, C*k*k, L) patch matrices, rows (c, i, j): XLA's conv_general_dilated_patches."""
    n, Ho, Wo = a.shape[0], _out(H, k, s, p), _out(W, k, s, p)
    x = a.reshape(n, C, H, W)
    out = jax.lax.conv_general_dilated_patches(x, (k, k), (s, s), ((p, p), (p, p)),
                                               precision=jax.lax.Precision.HIGHEST)
    return out.reshape(n, C * k * k, Ho * Wo)


def _fold(d, C, H, W, k, s, p):
    """unfold's adjoint (col2im): each kernel offset's patch entries added to their pixels."""
    n, Ho, Wo = d.shape[0], _out(H, k, s, p), _out(W, k, s, p)
    d = d.reshape(n, C, k, k, Ho, Wo)
    out = jnp.zeros((n, C, max(H + 2 * p, (Ho - 1) * s + k), max(W + 2 * p, (Wo - 1) * s + k)), dtype=d.dtype)
    for i in range(k):
        for j in range(k):
            out = out.at[:, :, i:i + s * (Ho - 1) + 1:s, j:j + s * (Wo - 1) + 1:s].add(d[:, :, i, j])
    return out[:, :, p:p + H, p:p + W].reshape(n, C, H * W)
''' + _COMMON + '''

def _conv_nchw(x, K, C, k, s, p):
    Co = K.shape[1]
    return jax.lax.conv_general_dilated(x, K.T.reshape(Co, C, k, k), (s, s), ((p, p), (p, p)),
                                        precision=jax.lax.Precision.HIGHEST)


def _conv(a, K, C, H, W, k, s, p):
    """K^T unfold(a) for each sample, by XLA's convolution (K = weight.reshape(C_out, -1).T)."""
    return _conv_nchw(a.reshape(a.shape[0], C, H, W), K, C, k, s, p).reshape(a.shape[0], K.shape[1], -1)


def _conv_wgrad(a, d, C, H, W, k, s, p):
    """The sum over the samples of unfold(a) d^T: the adjoint of the linear map K -> K^T unfold(a)
    applied to d (jax.linear_transpose: XLA's convolution kernels, no differentiation)."""
    x, Co = a.reshape(a.shape[0], C, H, W), d.shape[1]
    K0 = jnp.zeros((C * k * k, Co), dtype=d.dtype)
    adjoint = jax.linear_transpose(lambda K: _conv_nchw(x, K, C, k, s, p), K0)
    return adjoint(d.reshape(d.shape[0], Co, _out(H, k, s, p), _out(W, k, s, p)))[0]


def _max_argmax_last(w):
    """(the maximum along the last axis, its first index) by one reduction, as w.max(-1) and
    w.argmax(-1) (jnp.argmax's comparison: a NaN counts as the largest).  XLA fuses the two
    apart into two passes over w, one of them on a materialised copy of the windows."""
    def pick(a, b):
        (av, ai), (bv, bi) = a, b
        first = (av > bv) | (av != av) | ((av == bv) & (ai < bi))
        return jnp.where(first, av, bv), jnp.where(first, ai, bi)
    idx = jax.lax.broadcasted_iota(jnp.int32, w.shape, w.ndim - 1)
    return jax.lax.reduce((w, idx), (jnp.array(-jnp.inf, w.dtype), jnp.array(0, jnp.int32)), pick, (w.ndim - 1,))


def _maxpool_pair(a, C, H, W, k, s, p):
    """(the maximum of each k-by-k window, what its δ needs: the index of each window's first
    arg-max in it (windows side by side), else the map)."""
    if s != k or p:
        return _maxpool_general(a, C, H, W, k, s, p), a
    out, idx = _max_argmax_last(_windows(a, C, H, W, k))
    return out.reshape(a.shape[0], C, -1), idx


def _maxpool_vjp_idx(d, pair, C, H, W, k, s, p):
    """_maxpool_vjp by the arg-max indices the forward's _maxpool_pair found (no second pass
    over the windows)."""
    if s != k or p:
        return _maxpool_vjp_general(d, pair[1], C, H, W, k, s, p)
    idx = pair[1]
    hit = idx[..., None] == _arange(k * k, idx)
    return _unwindows(hit * d.reshape(idx.shape + (1,)), C, H, W, k)


def _conv_igrad(d, K, C, H, W, k, s, p):
    """fold(K d) for each sample: the adjoint of the linear map a -> K^T unfold(a) applied to d."""
    n, Co = d.shape[0], K.shape[1]
    x0 = jnp.zeros((n, C, H, W), dtype=d.dtype)
    adjoint = jax.linear_transpose(lambda x: _conv_nchw(x, K, C, k, s, p), x0)
    return adjoint(d.reshape(n, Co, _out(H, k, s, p), _out(W, k, s, p)))[0].reshape(n, C, H * W)
'''
