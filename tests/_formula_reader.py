"""A strict reader of printed matrix formulas, written for the tests (an oracle outside the printers).

It reads the LaTeX printer's matrix subset (``\\odot``, ``^{\\top}``, ``\\left( \\right)``,
``\\frac``, ``\\mathbf{1}``, ``\\cdot``, norms and bounds) and the text printer's
(``⊙``, ``ᵀ``, ``𝟏``, ``1/2``) into NumPy values, the way a reader reads them:
a sum of terms, a term a ``⊙`` of factors, a factor side by side (a product).  Where a
reader could take a line two ways it refuses: a ``⊙`` operand that is a product of
several factors without brackets (``A ⊙ P 𝟏𝟏ᵀ``: A ⊙ (P𝟏𝟏ᵀ) or (A ⊙ P)𝟏𝟏ᵀ?) and a sign
inside a product or a ``⊙`` (``A ⊙ −B``).

``values`` maps each printed name (``A``, ``\\delta_{h_{3}}``, ``\\max\\lvert h_{2}\\rvert``)
to a number or an array; ``n`` is the length of ``𝟏``.  (SymPy's ``parse_latex`` is no help:
it wants antlr4 4.11, not the 4.13 installed here, and knows neither ``\\odot`` nor matrix products.)
"""
from __future__ import annotations

import re

import numpy as np

__all__ = ["read", "Ambiguous"]


class Ambiguous(ValueError):
    """The formula can be read two ways (or not at all)."""


_LATEX = [(r"\\left\(|\(", "("), (r"\\right\)|\)", ")"), (r"\\odot", "odot"), (r"\\cdot", "cdot"),
          (r"\^\{\\top\}|\^\{T\}", "T"), (r"\^\{\\circ \{?[0-9]+\}?\}", "hpow"), (r"\^\{?[0-9]+\}?", "pow"),
          (r"\\mathbf\{1\}\\mathbf\{1\}\^\{\\top\}", "ones"), (r"\\mathbf\{1\}", "one"), (r"\\frac", "frac"),
          # a norm, a largest entry, a supremum: one name each (the bounds of the BPTT section)
          (r"\\left\\lVert .*? \\right\\rVert_F|\\max\\lvert .*?\\rvert|\\sup\\lvert .*?\\rvert", "name"),
          (r"[0-9]+(?:\.[0-9]+)?", "num"), (r"[+-]", "sign"), (r"\{", "{"), (r"\}", "}"),
          (r"(?:\\hat\{[A-Za-z]\}|\\[A-Za-z]+|[A-Za-z])(?:_\{(?:[^{}]|\{[^{}]*\})*\})?'?", "name"),
          (r"\\,|\s+", None)]
_TEXT = [(r"\(", "("), (r"\)", ")"), ("⊙", "odot"), ("·", "cdot"), ("ᵀ", "T"), (r"\^∘[0-9]+", "hpow"),
         (r"\^[0-9]+", "pow"), ("𝟏𝟏ᵀ", "ones"), ("𝟏", "one"), (r"[0-9]+(?:\.[0-9]+)?(?:/[0-9]+)?", "num"),
         ("/", "div"), (r"[+-]", "sign"), ("[A-Za-zδ\u0302]+(?:_[A-Za-z0-9]+)?", "name"), (r"\s+", None)]


def _tokens(s: str, table) -> list:
    out, i = [], 0
    while i < len(s):
        for pat, kind in table:
            m = re.compile(pat).match(s, i)
            if m and m.end() > i:
                if kind:
                    out.append((kind, m.group(0)))
                i = m.end()
                break
        else:
            raise Ambiguous(f"cannot read {s[i:i + 20]!r}")
    return out


class _Reader:
    def __init__(self, tokens, values, n):
        self.t, self.i, self.values, self.n = tokens, 0, values, n

    def peek(self):
        return self.t[self.i][0] if self.i < len(self.t) else None

    def take(self, kind=None):
        if kind and self.peek() != kind:
            raise Ambiguous(f"expected {kind} at {self.t[self.i:self.i + 4]}")
        tok = self.t[self.i]
        self.i += 1
        return tok

    def sum(self):
        sign = 1
        if self.peek() == "sign":
            sign = -1 if self.take()[1] == "-" else 1
        total = sign * self.term()
        while self.peek() == "sign":
            s = -1 if self.take()[1] == "-" else 1
            total = _add(total, s * self.term())
        return total

    def term(self):
        parts = [self.product()]
        while self.peek() == "odot":
            self.take()
            parts.append(self.product())
        if len(parts) == 1:
            return parts[0][0]
        if any(count > 1 for _, count in parts):
            raise Ambiguous("a product beside ⊙ without brackets")
        out = parts[0][0]
        for v, _ in parts[1:]:
            if np.shape(v) != np.shape(out):
                raise Ambiguous(f"⊙ of shapes {np.shape(out)} and {np.shape(v)}")
            out = out * v
        return out

    def product(self):
        """(value, how many factors stood side by side)."""
        out, count = self.factor(), 1
        if self.peek() == "div":
            self.take()
            out = out / self.factor()
        while self.peek() in ("(", "num", "name", "one", "ones", "frac", "cdot"):
            if self.peek() == "cdot":
                self.take()
            v = self.factor()
            if self.peek() == "div":            # x/2: a scalar's division, as the text printer writes it
                self.take()
                v = v / self.factor()
            out = out * v if np.ndim(out) == 0 or np.ndim(v) == 0 else out @ v
            count += 1
        return out, count

    def factor(self):
        kind, text = self.take()
        if kind == "(":
            v = self.sum()
            self.take(")")
        elif kind == "num":
            a, _, b = text.partition("/")
            v = float(a) / float(b or 1)
        elif kind == "frac":
            v = self.group() / self.group()
        elif kind in ("one", "ones"):          # 𝟏𝟏ᵀ is one symbol, the n×n matrix of ones
            v = np.ones((self.n, 1 if kind == "one" else self.n))
        elif kind == "name":
            if text not in self.values:
                raise Ambiguous(f"unknown name {text!r}")
            v = np.asarray(self.values[text], dtype=float)
        else:
            raise Ambiguous(f"a {kind} {text!r} where a factor should stand")
        while self.peek() in ("T", "pow", "hpow"):
            kind, text = self.take()
            k = int(re.sub(r"[^0-9]", "", text) or 1)
            if kind == "T":
                v = np.transpose(v)
            else:       # A^{∘2} entry by entry, A^{2} = A A (a number's power either way)
                v = v ** k if kind == "hpow" or np.ndim(v) == 0 else np.linalg.matrix_power(v, k)
        return v

    def group(self):
        self.take("{")
        v = self.sum()
        self.take("}")
        return v


def _add(a, b):
    if np.shape(a) != np.shape(b):
        raise Ambiguous(f"sum of shapes {np.shape(a)} and {np.shape(b)}")
    return a + b


def read(s: str, values: dict, n: int = 3, syntax: str = "latex"):
    """The value of the printed formula `s` (NumPy), or Ambiguous."""
    r = _Reader(_tokens(s, _LATEX if syntax == "latex" else _TEXT), values, n)
    v = r.sum()
    if r.peek() is not None:
        raise Ambiguous(f"left over: {r.t[r.i:r.i + 4]}")
    return v
