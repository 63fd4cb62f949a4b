"""The content of a derivation document, built from the one Derivation.

:func:`context` gives the templates their keys, every formula printed
from one SymPy expression; :mod:`.figure` draws the computational graph,
:mod:`.analysis` computes suprema, bounds, checks and counts, and
:mod:`.factors` says what an edge carries and how edges compose.
"""
from .analysis import derivative_sup
from .context import context, plain

__all__ = ["context", "plain", "derivative_sup"]
