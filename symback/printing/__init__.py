"""Printers: one SymPy expression in, LaTeX, plain text or array code out.

- :mod:`.latex`: :class:`LatexPrinter`, formulas the way a lecturer writes
  them, and the helpers documents use (:func:`latex`, :func:`number`,
  :func:`chain_symbols`, :func:`chain_values`, ...);
- :mod:`.primes`: an activation's derivative shown as f'(z);
- :mod:`.expressions`: the display-only expressions (∂of/∂wrt, chains, norms);
- :mod:`.escape`: user text made safe for LaTeX and Markdown;
- :mod:`.text`: plain text for a terminal or a Mermaid label;
- :mod:`.numpy`, :mod:`.jax`, :mod:`.torch`: the code printers of the backends.

The names below are re-exported here, where documents import them from
(``symback.printing.latex`` is therefore the function, as in SymPy; the
module's own names are imported with ``from symback.printing.latex import ...``).
"""
from .escape import Tex, latex_escape, markdown_escape
from .expressions import Bound, Chain, Norm, Partial, PerSample, Terms
from .latex import (SAMPLE_LETTERS, LatexPrinter, chain_symbols, chain_values, factor_latex, latex, name_latex,
                    notation_settings, number, partial, sample_index, visual_len)
from .primes import mark_primes, prime, prime_classes, split_primes

__all__ = ["Tex", "latex_escape", "markdown_escape", "LatexPrinter", "latex", "number", "partial", "chain_symbols", "chain_values",
           "factor_latex", "split_primes", "mark_primes", "prime", "prime_classes", "name_latex",
           "Chain", "Partial", "PerSample", "Norm", "Bound", "Terms", "visual_len",
           "notation_settings", "sample_index", "SAMPLE_LETTERS"]
