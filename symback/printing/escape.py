"""User text made inert: escaped for LaTeX or for Markdown, and the Tex marker of prepared output."""
from __future__ import annotations

import html
import re
import unicodedata

__all__ = ["Tex", "latex_escape", "markdown_escape"]


class Tex(str):
    """Text that is already valid output (printed formulas, escaped user text)."""


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "%": r"\%", "#": r"\#", "&": r"\&",
    "$": r"\$", "_": r"\_", "^": r"\textasciicircum{}", "~": r"\textasciitilde{}",
    "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}", '"': r"\textquotedbl{}",
}


def _plain(text) -> str:
    # one line, no control characters: a newline pair would end a paragraph inside \title
    return re.sub(r"\s+", " ", "".join(c for c in str(text) if unicodedata.category(c)[0] != "C"
                                       or c.isspace())).strip()


def latex_escape(text) -> Tex:
    """User text made inert for LaTeX: specials escaped, characters pdflatex lacks replaced.

    Greek letters become ``$\\alpha$`` and so on; any other character
    outside Latin-1 becomes ``?`` (pdflatex would stop on it).
    """
    out = []
    for c in _plain(text):
        if c in _LATEX_SPECIAL:
            out.append(_LATEX_SPECIAL[c])
        elif ord(c) < 128 or 0xA0 <= ord(c) < 0x100 and c.isalpha():
            out.append(c)
        else:
            name = unicodedata.name(c, "")
            greek = re.fullmatch(r"GREEK (SMALL|CAPITAL) LETTER ([A-Z]+)", name)
            if greek:
                letter = greek.group(2).lower()
                out.append(rf"$\{letter.capitalize() if greek.group(1) == 'CAPITAL' else letter}$")
            else:
                out.append("?")
    return Tex("".join(out))


def markdown_escape(text) -> Tex:
    """User text made inert for Markdown with MathJax: HTML and Markdown punctuation escaped.

    Brackets become HTML entities and parentheses stay as they are: ``\\[`` and
    ``\\(`` are MathJax's math delimiters in Jupyter and many viewers, and without
    brackets no link can form.
    """
    text = re.sub(r"([\\`*_{}#+\-.!|~$])", r"\\\1", _plain(text))
    # entities last, so that their own & and # are not escaped again
    return Tex(html.escape(text, quote=True).replace("[", "&#91;").replace("]", "&#93;"))
