"""Numbers as a reader writes them, for every printer: 0.49, -4.2, 3, 1.5 × 10⁻⁷."""
from __future__ import annotations

import sympy as sp

__all__ = ["number"]


def number(value, digits: int = 6) -> str:
    """A number as a reader writes it: 0.49, -4.2, 3, 1.5 \\times 10^{-7}.

    Exact integers stay integers; everything else is shown with at most
    `digits` significant digits and no trailing zeros.
    """
    v = sp.sympify(value, strict=True)
    if v is sp.nan:
        return r"\mathrm{NaN}"
    if v.is_infinite:
        return r"\infty" if v is sp.oo else (r"-\infty" if v is -sp.oo else r"\tilde{\infty}")
    if v.is_Integer:
        return str(int(v))
    if not v.is_number:
        raise TypeError(f"not a number: {value!r}")
    if not v.is_real:
        re, im = v.as_real_imag()
        return rf"{number(re, digits)} {'-' if im < 0 else '+'} {number(abs(im), digits)}\,i"
    f = float(v)
    if f == 0:
        return "0"
    text = f"{f:.{digits}g}"
    if "e" in text:
        mant, exp = text.split("e")
        exp = int(exp)
        return rf"{mant} \times 10^{{{exp}}}" if mant not in ("1", "-1") else \
            rf"{'-' if mant == '-1' else ''}10^{{{exp}}}"
    return text
