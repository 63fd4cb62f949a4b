"""Generated data sets for the demo and the tests: two moons and noisy XOR (NumPy only)."""
from __future__ import annotations

import numpy as np

__all__ = ["two_moons", "xor"]


def two_moons(n: int = 400, noise: float = 0.15, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaving half circles, generated with NumPy: X (n×2), Y (n×1) of 0/1."""
    rng = np.random.default_rng(seed)
    half = n // 2
    t = rng.uniform(0, np.pi, n)
    X = np.where(np.arange(n)[:, None] < half,
                 np.column_stack([np.cos(t), np.sin(t)]),
                 np.column_stack([1 - np.cos(t), 0.5 - np.sin(t)]))
    X = X + rng.normal(scale=noise, size=X.shape)
    Y = (np.arange(n) >= half).astype(float)[:, None]
    p = rng.permutation(n)
    return X[p], Y[p]


def xor(n: int = 400, noise: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Noisy XOR: points near the four corners of the unit square, label x1 XOR x2."""
    rng = np.random.default_rng(seed)
    corners = rng.integers(0, 2, size=(n, 2))
    X = corners + rng.normal(scale=noise, size=(n, 2))
    Y = (corners[:, 0] ^ corners[:, 1]).astype(float)[:, None]
    return X, Y
