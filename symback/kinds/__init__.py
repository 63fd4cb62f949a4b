"""Node kinds: one record per kind, its definition beside everything the consumers need of it.

A node kind is a SymPy matrix expression (a subclass of :class:`~symback.kinds.base.Kind`
and ``sympy.MatrixExpr``) that the engine differentiates as a whole node.  Each module holds
one family, side by side: the SymPy definition, the vector-Jacobian product (SymPy's
derivative of that definition, or a closed form used only after SymPy has proved it equal),
the lowering to statements, the exact and numeric evaluation, and the printing:

* :mod:`.softmax`: ``Softmax`` (row-wise, optionally masked), ``SoftmaxVJP``, the closed form
  and its proof;
* :mod:`.rownorm`: ``RowNorm`` (a row standardised) and ``layer_norm``;
* :mod:`.rowcost`: ``RowCost``, a registered loss summed over each row;
* :mod:`.elementwise`: ``FPrime`` (f'(Z)) and ``Elementwise`` (a formula entry by entry);
* :mod:`.select`: ``Select``, a constant column selection;
* :mod:`symback.image` (the same protocol): unfold, pooling, flatten and their VJPs.

The consumers dispatch through the kind's methods and never name it: the engine
(:func:`symback.vjp.local_factor` calls ``vjp``), the lowering (``lower``, ``lower_vjp``), the
evaluators (:func:`symback.matrix.explicit` and :func:`symback.evaluate.value_of` call
``definition`` or ``explicit_value``/``numeric_value``), the graph (``node_prefix``) and the
printers (SymPy's ``_latex`` hook, ``_text``, ``entrywise``).  A kind imports only
:mod:`.base`, the errors and the registries, never a consumer.

How to add a node kind: write one module here with a class ``Kind, sp.MatrixExpr`` that
checks its arguments in ``__new__`` and gives its ``shape``; then, as it needs them,
``vjp(D, parent, P=None)`` built from SymPy's derivative of the definition (a closed form
only with a ``prove_…`` function beside it that SymPy runs before first use, never a typed
formula), ``lower(lo, target=None)`` in the operations of :class:`symback.lowering.Lowering`
(``lo.scalar``, ``lo.materialize``, ``lo.emit``), ``definition()`` or
``explicit_value``/``numeric_value``, ``_latex`` and ``_text``, and ``node_prefix`` when the
engine must see it as a node of its own.  Re-export it from :mod:`symback.matrix` when users
build it, and test it: its VJP against SymPy's derivative or finite differences, its compiled
code against JAX or torch autograd.  No consumer changes.  (A new *statement* the printers
print, such as a fused kernel, still needs its line in each backend printer.)
"""
from __future__ import annotations

from .base import BATCH, ENTRY, Kind, activation_of, elementwise, is_matrix, real_diff
from .elementwise import Elementwise, FPrime, to_matrix
from .rowcost import RowCost, cost_derivative
from .rownorm import RowNorm, layer_norm, prove_rownorm_vjp, rownorm_vjp
from .select import Select
from .softmax import MASKS, Softmax, SoftmaxVJP, prove_softmax_vjp, softmax_vjp

__all__ = ["BATCH", "ENTRY", "Kind", "activation_of", "elementwise", "is_matrix", "real_diff",
           "Elementwise", "FPrime", "to_matrix", "RowCost", "cost_derivative", "RowNorm", "layer_norm",
           "prove_rownorm_vjp", "rownorm_vjp", "Select", "MASKS", "Softmax", "SoftmaxVJP",
           "prove_softmax_vjp", "softmax_vjp"]
