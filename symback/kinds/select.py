"""Column selection: the constant matrix whose columns are unit vectors (a head's columns).

:class:`Select` is a constant, not a graph name: SymPy's matrix calculus carries it like any
matrix (δ of A E is δ Eᵀ, no VJP of its own) and both evaluations write it out.  It is a
factor of a product, never a value of its own, so its lowering is that of a product holding
it (:func:`lower_product`, which the Lowering calls): slices and pads instead of products.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import sympy as sp

from .base import Kind

__all__ = ["Select", "Held", "selection", "lower_product"]


class Select(Kind, sp.MatrixSymbol):
    """The n×w matrix E whose columns are the unit vectors e_{start}, …, e_{start+w−1}:
    A E is the block of A's columns start … start+w−1, A Eᵀ puts w columns back in place
    (zeros elsewhere).  A constant, not a graph name: SymPy's matrix calculus carries it
    like any matrix (δ of A E is δ Eᵀ), and compiled code slices and pads instead of
    multiplying.  Multi-head attention selects each head's columns with it.
    """

    @classmethod
    def of(cls, n: int, start: int, width: int) -> "Select":
        """The selection of columns start … start+width−1 out of n."""
        return cls(f"E_{start}_{start + width}_of_{n}", n, width)

    @property
    def span(self) -> tuple[int, int, int]:
        """(start, stop, n): the columns start … stop−1 of n."""
        rest = self.name[len("E_"):].split("_")
        return int(rest[0]), int(rest[1]), int(rest[3])

    def as_explicit(self):
        start, stop, n = self.span
        return sp.ImmutableMatrix(n, stop - start, lambda i, j: 1 if i == start + j else 0)

    def explicit_value(self):
        """The explicit 0/1 matrix."""
        return self.as_explicit()

    def numeric_value(self, entrywise=None) -> np.ndarray:
        """The 0/1 matrix as a NumPy array."""
        return np.asarray(self.as_explicit(), dtype=float)

    def _latex(self, printer, exp=None):
        start, stop, _ = self.span
        return r"E_{%d:%d}" % (start + 1, stop)

    def _text(self, printer):
        start, stop, _ = self.span
        return f"E_{start + 1}:{stop}"


class Held(NamedTuple):
    """A value already lowered (a formula or symbol) and its shape, among matrices to multiply."""

    value: object
    shape: tuple


def selection(a):
    """("E", (start, stop, n)) for a column selection E, ("Et", ...) for Eᵀ, else None."""
    if isinstance(a, Held):
        return None
    if isinstance(a, Select):
        return ("E", a.span)
    if isinstance(a, sp.Transpose) and isinstance(a.arg, Select):
        return ("Et", a.arg.span)
    return None


def lower_product(lo, mats):
    """A product with column selections E (multi-head attention's heads): A E is a slice of
    A's columns and Eᵀ B of B's rows (views), done first; E B and A Eᵀ put the block back
    in place among zeros (a pad); the rest multiply left to right."""
    items = [(a.value, a.shape) if isinstance(a, Held) else selection(a) or (lo.operand(a), tuple(a.shape))
             for a in mats]
    changed = True
    while changed:
        changed = False
        for i in range(len(items) - 1):
            (a, ash), (b, bsh) = items[i], items[i + 1]
            left = items[i - 1][0] if i else None
            if "head_products" in lo.kernels and b == "E" and not isinstance(a, str) \
                    and left is not None and not isinstance(left, str) and lo.batched(left) \
                    and not lo.batched(a):
                # L W E: (L W) E, the product with the whole shared W, one GEMM that every
                # head's slice reuses (the statement is memoised), not one per head
                items[i - 1:i + 1] = [(lo.product(left, items[i - 1][1], a, ash), (items[i - 1][1][0], ash[1]))]
                changed = True
                break
            if not isinstance(a, str) and b == "E":                    # A E: columns of A
                start, stop, _ = bsh
                items[i:i + 2] = [(_cut(lo, a, ash, None, (start, stop)), (ash[0], stop - start))]
            elif a == "Et" and not isinstance(b, str):                 # Eᵀ B: rows of B
                start, stop, _ = ash
                items[i:i + 2] = [(_cut(lo, b, bsh, (start, stop), None), (stop - start, bsh[1]))]
            else:
                continue
            changed = True
            break
    value, shape = items[0]
    if value == "E":                                                   # E B: rows put back
        (start, stop, n), (value, shape) = shape, items[1]
        value, shape, items = _pad(lo, value, -2, start, n), (n, shape[1]), items[1:]
    for right, rshape in items[1:]:
        if right == "Et":                                              # A Eᵀ: columns put back
            start, stop, n = rshape
            value, shape = _pad(lo, value, -1, start, n), (shape[0], n)
        else:
            value, shape = lo.product(value, shape, right, rshape), (shape[0], rshape[1])
    return lo.unwrap(value)


def _cut(lo, a, shape, rows, cols):
    """The block of a's rows and/or columns (a view)."""
    a = lo.materialize(lo.unwrap(a))
    whole = lambda span, n: (0, None, 1) if span is None else (span[0], span[1], 1)   # noqa: E731
    out = (rows[1] - rows[0] if rows else shape[0], cols[1] - cols[0] if cols else shape[1])
    return lo.emit("slice", (a, whole(rows, shape[0]), whole(cols, shape[1])), out)


def _pad(lo, a, axis, start, n):
    """a put back in place among n rows or columns of zeros (recorded: sums of pads are joined)."""
    a = lo.materialize(lo.unwrap(a))
    shape = list(lo.shapes[a][-2:]) if a in lo.shapes else []
    width = shape[axis] if shape else None
    shape[axis] = n
    t = lo.emit("pad", (a, axis, start, n - start - width), tuple(shape))
    lo.pads[t] = (a, axis, start, n)
    return t
