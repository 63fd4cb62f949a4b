"""A network as a layer: its vector-Jacobian product, derived by the same engine.

A layer inside another model needs, for an upstream gradient G (shaped
like the prediction Ŷ), ∂⟨G, Ŷ⟩/∂X and ∂⟨G, Ŷ⟩/∂p with ⟨G, Ŷ⟩ = Σ G ⊙ Ŷ.
That is an ordinary derivation of another graph: the prediction part of the
network, with G as its target and the loss ⟨G, Ŷ⟩ summed over the samples,
derived with X differentiable (:func:`symback.engine.backward`'s ``wrt``).
Nothing here states a derivative: :func:`vjp_derivation` builds that graph,
the engine derives it, and :func:`vjp_function` prints it through the code
generator as the module's ``_vjp(X, Y, params)`` (Y holds G), and as the pair
``_vjp_forward``/``_vjp_backward`` that a layer's forward and backward call.

Slices of X (an RNN's x_t = X[:, a:b]) become nodes of their own, each
differentiated by the engine; δ_X is their adjoints put back in their
columns (zeros where no slice reads), which :func:`_placement_proved`
checks against SymPy's derivative of a slice at import.
"""
from __future__ import annotations

import warnings
import weakref

import sympy as sp

from .codegen import Namer, lower_program
from .engine import Derivation, delta
from .errors import SymbackError, UnusedParameterWarning
from .graph import Graph
from .lowering import Stmt
from .straightline import FunctionSpec, build_function

__all__ = ["vjp_derivation", "vjp_function", "output_width"]

_CACHE: "weakref.WeakKeyDictionary[Derivation, tuple]" = weakref.WeakKeyDictionary()


def output_width(d: Derivation) -> int:
    """The number of columns of the prediction Ŷ (what G must have)."""
    return d.layout.output_width(d.outputs)


def vjp_derivation(d: Derivation):
    """(Derivation of ⟨G, Ŷ⟩, wrt names, column blocks) for the prediction part of `d`'s graph.

    The blocks are ``[(name, start, stop)]``: which columns of X each
    differentiated name stands for (all of X, one scalar input, or a slice).
    Cached per derivation.
    """
    if d not in _CACHE:
        _CACHE[d] = _build(d)
    return _CACHE[d]


def _build(d: Derivation):
    g, layout = d.graph, d.layout
    outs = d.outputs
    if not outs:
        raise SymbackError("this graph has no prediction node (the loss uses no node): it has no VJP")
    if layout.data_matrix() is not None and len(outs) > 1:
        raise SymbackError(f"a layer's VJP needs one prediction matrix; this graph has {', '.join(outs)}")
    needed = set(outs)
    for o in outs:
        needed |= g.ancestors(o)
    h = Graph()
    for n in g.order:                       # the user's own symbols (and their assumptions) kept
        kind = g.kind(n)
        if kind in ("input", "param"):
            h._declare([n], kind, g.shape(n) or None)
            h._symbol[n] = g.symbol(n)
    # X: the input matrix whose column slices (an RNN's x_t) are differentiated (None: scalars)
    slices, X = {}, layout.data_matrix()
    for n in g.order:
        if g.kind(n) != "node" or n not in needed:
            continue
        expr = g.expr(n)
        if X is not None and isinstance(expr, sp.MatrixSlice) and expr.parent == X and expr not in slices:
            _check_slice(expr)
            slices[expr] = n                # the node is the slice itself (an RNN's x_t)
        else:
            expr = expr.xreplace({s: _slice_node(h, s, slices) for s in _slices_of(expr, X)})
        h.node(n, expr)
    if slices and any(X in h.expr(n).atoms(sp.MatrixSymbol) for n in h.node_names if n not in slices.values()):
        raise SymbackError("a layer's VJP through X used both whole and sliced is not supported")
    blocks = layout.vjp_blocks(slices)
    h.loss(layout.vjp_cost(h, outs), reduction="sum", name=h._fresh("C"))
    with warnings.catch_warnings():     # a parameter only the penalty uses was reported at derive()
        warnings.simplefilter("ignore", UnusedParameterWarning)
        return Derivation(h, wrt=[b[0] for b in blocks]), blocks


def _slices_of(expr, X) -> list:
    return [s for s in expr.atoms(sp.MatrixSlice) if s.parent == X] if X is not None else []


def _check_slice(s: sp.MatrixSlice):
    if s.rowslice[0] != 0 or s.rowslice[1] != s.parent.shape[0] or s.rowslice[2] != 1 or s.colslice[2] != 1:
        raise SymbackError(f"a layer's VJP needs slices of whole columns of X, got {s}")


def _slice_node(h: Graph, s: sp.MatrixSlice, made: dict):
    """The node standing for the slice s of X (one per distinct slice)."""
    _check_slice(s)
    if s not in made:
        made[s] = h.node(h._fresh(f"X_{int(s.colslice[0])}_{int(s.colslice[1])}"), s).name
    return h.symbol(made[s])


def vjp_function(d: Derivation, printer, keep, returned) -> str:
    """The text of ``_vjp(X, Y, params)`` -> (∂⟨Y, Ŷ⟩/∂X, gradients in PARAMS order), and of the
    pair a layer's forward and backward call: ``_vjp_forward(X, params)`` -> (Ŷ, the forward
    values) and ``_vjp_backward(X, Y, params, values)`` (the same result as ``_vjp``, the
    forward values read, not recomputed).

    ``returned(grads, low)`` prints the gradients' tuple as the module's
    ``_grad`` does (a 1×n parameter's gradient reshaped); ``keep`` are the
    printer's native activations.
    """
    d2, blocks = vjp_derivation(d)
    g, h = d.graph, d2.graph
    low, _, _, names, grads, _, _, _ = lower_program(d2, Namer(), sp.S.One, keep, printer.kernels)
    found = [names.get(delta(h, name)) for name, _, _ in blocks]
    # an input the prediction does not read (its terms cancel: X W + (1 b − X W)) has δ 0, an
    # array of zeros: a scalar graph's δ_x = 0 is the number 0, which torch and JAX cannot stack
    parts = [_zero(b, d.layout, printer) if s is None or low.defs.get(s) == 0 else s
             for b, s in zip(blocks, found)]
    if [b[0] for b in blocks] == g.input_names:     # each input whole: X's columns, or X itself
        dX = d.layout.stack([d.layout.full(s, g.symbol(x), low.shapes.get(s, ()), printer)
                             for s, x in zip(parts, g.input_names)], printer.prefix)
    else:
        dX = _placed(blocks, parts, d.layout.width(g.input_names), printer)
    X, Y = sp.Symbol("X", real=True), sp.Symbol("Y", real=True)
    protected = {X, Y} | {names[g.symbol(p)] for p in g.param_names}
    results = [s for s in found if s is not None] + [grads[p] for p in g.param_names]
    ret = f"{dX}, {returned(grads, low)}"
    # the prediction part's values: every node of the VJP graph that G does not reach
    fnames = [n for n in h.order if h.kind(n) == "node" and n != h.cost_name]
    fsyms = [names[h.symbol(n)] for n in fnames]
    outs = [names[h.symbol(o)] for o in d.outputs]
    prediction = d.layout.stack([d.layout.full(s, g.symbol(o), low.shapes.get(s, ()), printer)
                                 for s, o in zip(outs, d.outputs)], printer.prefix)
    values = "{" + ", ".join(f"{n!r}: {s}" for n, s in zip(fnames, fsyms)) + "}"
    given = set(fsyms)
    loaders = [Stmt(s, "value", (n,), low.shapes.get(s, ())) for n, s in zip(fnames, fsyms)]
    data = ("param", "batch", "column")
    reread = [st for st in low.stmts if st.op in data] + loaders + \
        [st for st in low.stmts if st.target not in given and st.op not in data]
    doc = ("(∂⟨Y, Ŷ⟩/∂X, gradients ∂⟨Y, Ŷ⟩/∂p in PARAMS order) for Ŷ = _predict(X, params): the derived "
           "vector-Jacobian product (Y holds the upstream gradient G)")
    funcs = [(FunctionSpec("_vjp", "X, Y, params", doc + ".", results, ret), low.stmts),
             (FunctionSpec("_vjp_forward", "X, params", "(Ŷ, the forward values _vjp_backward reads).",
                           fsyms, f"{prediction}, {values}"), low.stmts),
             (FunctionSpec("_vjp_backward", "X, Y, params, values", doc + ", from _vjp_forward's values.",
                           results, ret, inputs=given), reread)]
    return "\n\n\n".join("\n".join(build_function(spec, stmts, printer, low, protected)) for spec, stmts in funcs) + "\n"


def _zero(block, layout, printer) -> str:
    """The code of a zero δ for the columns `block` of X: all of X, one column (a scalar
    graph's input), or a slice."""
    _, start, stop = block
    if layout.data_matrix() is None:
        part = f"X[:, {start}]"
    elif (start, stop) == (0, layout.width(layout.graph.input_names)):
        part = "X"
    else:
        part = f"X[..., {start}:{stop}]"
    return f"{printer.prefix}.zeros_like({part})"


def _placed(blocks, parts, width, printer) -> str:
    """δ_X from the adjoints of its column blocks: each in its columns, zeros in between."""
    pieces, at = [], 0
    for (_, start, stop), s in zip(blocks, parts):
        if start > at:
            pieces.append(f"X[:, {at}:{start}] * 0")
        pieces.append(str(s))
        at = stop
    if at < width:
        pieces.append(f"X[:, {at}:] * 0")
    return printer.op_hstack(pieces)


def _placement_proved(rows: int = 2, cols: int = 5, start: int = 1, stop: int = 3) -> bool:
    """SymPy: ∂ tr(Aᵀ X[:, a:b])/∂X is A in columns a:b and 0 elsewhere (explicit entries)."""
    X = sp.Matrix(rows, cols, lambda i, j: sp.Symbol(f"x{i}_{j}"))
    A = sp.Matrix(rows, stop - start, lambda i, j: sp.Symbol(f"a{i}_{j}"))
    value = (A.T * X[:, start:stop]).trace()
    derived = X.applyfunc(lambda x: sp.diff(value, x))
    placed = sp.zeros(rows, cols)
    placed[:, start:stop] = A
    return derived == placed


if not _placement_proved():     # proved once, at import: the placement is never trusted
    raise SymbackError("internal: SymPy does not confirm that a slice's VJP places δ in its columns")
