"""How wide a printed formula is, roughly: the estimate that decides where a document's lines break."""
from __future__ import annotations

import re

__all__ = ["visual_len"]


def visual_len(tex: str) -> int:
    """Roughly how many symbols a formula shows (LaTeX commands count as one, a function's name
    as its letters, markup and accents as none, a fraction as the wider of its numerator and
    denominator, cases as the widest)."""
    tex = re.sub(r"\\(left|right|[bB]igl|[bB]igr|operatorname|mathrm|mathbf|hat|bar|tilde)\b|\\[,;:!]", "", tex)
    # cases stand one above the other: as wide as the brace and the widest (ReLU's were added up)
    tex = re.sub(r"\\begin\{cases\}(.*?)\\end\{cases\}", lambda m: "x " + max(m[1].split(r"\\"), key=_shown),
                 tex, flags=re.S)
    return _shown(tex)


def _shown(tex: str) -> int:
    # \frac{∂ Z_{P_{2,1}}}{∂ Q_{2}} is as wide as its wider part, braces nested or not (counted
    # as both, a path of such factors was broken at half the page)
    total, i = 0, 0
    while (j := tex.find(r"\frac{", i)) >= 0:
        num = _closing(tex, j + 5)
        den = _closing(tex, num + 1) if 0 <= num < len(tex) - 1 and tex[num + 1] == "{" else -1
        if den < 0:
            break
        total += _plain(tex[i:j]) + max(_shown(tex[j + 6:num]), _shown(tex[num + 2:den]))
        i = den + 1
    return total + _plain(tex[i:])


def _closing(tex: str, at: int) -> int:
    """The index of the brace closing the one at `at` (-1: none)."""
    depth = 0
    for k in range(at, len(tex)):
        depth += {"{": 1, "}": -1}.get(tex[k], 0)
        if depth == 0:
            return k
    return -1


def _plain(tex: str) -> int:
    # a function's name is a word (tanh, log), any other command one symbol
    return len(re.sub(r"[{}\s^_]", "", re.sub(r"\\([A-Za-z]+)", lambda m: m[1] if m[1] in _WORDS else "x", tex)))


_WORDS = {"tanh", "sinh", "cosh", "sin", "cos", "tan", "log", "exp", "ln", "max", "min", "sup", "inf", "det", "tr"}
