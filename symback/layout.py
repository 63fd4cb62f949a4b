"""The form of a graph's data, in one place: which of the three forms a network is written in,
and every answer that depends on it.

* :class:`Scalars` — a scalar graph: each symbol holds one sample's number; data are columns
  (X is n × inputs, one column per input), the loss is the per-sample cost C reduced over a
  batch by :class:`symback.adjoints.BatchMean` (or ``BatchSum``);
* :class:`BatchRows` — a matrix graph whose data have ``sb.BATCH`` rows (contract 0.2): every
  matrix holds the whole batch, samples in rows, and the loss node already is the batch loss L;
* :class:`OneSample` — a matrix graph whose data shapes do not mention ``sb.BATCH`` (contract
  0.3, ``Graph.per_sample``): each matrix is one sample, data carry the batch on a leading axis
  (X of shape (n, rows, columns)), the loss is the per-sample cost reduced over the batch, plus
  a penalty of the parameters.

``graph.layout`` gives the graph's one; the engine, the compiler, the layer's VJP, the
module text and the documents (what they work out in numbers, which node is the cost, how a
notation writes a sample) ask it instead of asking "scalar or matrix?".  A question about an *expression*
(a matrix expression or a number inside a formula) is not about the form: that is
:func:`symback.kinds.base.zero_like` / :func:`~symback.kinds.base.add`.  This module imports
nothing of the engine or its consumers: what it is handed (a graph, a derivation, a lowering,
a graph under construction) it reads by duck typing.
"""
from __future__ import annotations

import sympy as sp

from .errors import SymbackError
from .kinds.base import BATCH, is_matrix, plus
from .kinds.rowcost import RowCost

__all__ = ["Layout", "Scalars", "BatchRows", "OneSample", "layout_of"]


class Layout:
    """What a graph's form decides, asked by the engine and the consumers (one subclass per form).

    ``kind`` is the form as the Derivation and a compiled module report it ('scalar' or
    'matrix'); ``ndim`` the rank of the data arrays X and Y; ``one_sample`` whether compiled
    code maps one sample's matrices over a leading batch axis.
    """

    kind = "scalar"
    ndim = 2
    one_sample = False
    #: whether the expanded form of a gradient is worth handing to SymPy's simplify()
    simplifies = False

    # -- what a document writes -------------------------------------------------------------
    #: whether every quantity is one sample's number, so a document works the derivation out in
    #: numbers and plain SymPy expressions (the worked example at every node, a gradient step by
    #: step, the reduction's steps, SymPy's text of a gradient, gradient descent's iterations, the
    #: operation counts); a matrix graph's quantities are matrix expressions, checked as arrays
    worked_in_numbers = False
    #: whether Nielsen's notation writes one sample as a column (a matrix graph's rows, turned;
    #: a scalar graph's sample is a few numbers, so the notation only renames L)
    sample_as_column = True
    #: whether the lecture notes write the loss node as one sample's cost J⁽ⁱ⁾ beside the batch
    #: cost J (a scalar graph's symbols are one sample's; a matrix is written without the index)
    indexed_cost = False
    #: the lower-case letters the lecture notes give the prediction and target matrices (none
    #: for a scalar graph, whose symbols keep the spec's names)
    data_letters: dict = {}

    def __init__(self, graph):
        self.graph = graph

    def __repr__(self):
        return f"<{type(self).__name__} layout>"

    # -- the chain rule -------------------------------------------------------------------
    def contribution(self, factor, child_adjoint, child_expr, written_in=None):
        """What flows back along one edge for δ_child = child_adjoint: δ_child · factor, or the
        VJP itself for a matrix child (`factor` written in the symbol `written_in`, when given)."""
        return child_adjoint * factor

    def expand(self, expr):
        """`expr` written in inputs, targets and parameters only (every node's definition put in)."""
        g = self.graph
        for n in reversed(g.order):
            if n in g._expr:
                expr = expr.xreplace({g.symbol(n): g.expr(n)})
        return expr

    # -- the batch loss -----------------------------------------------------------------------
    def batch_loss(self, d):
        """L of derivation `d`: the reduction of the per-sample cost over a batch (+ penalty)."""
        return plus(d.reduce(d.graph.expr(d.loss_name)), d.graph.penalty)

    def batch_gradient(self, d, p, form):
        """∂L/∂p of derivation `d` (form: 'chain', 'recursive' or 'expanded')."""
        return d.reduce(d.gradient(p, form))

    def program_gradient(self, d, p, delta_p, red):
        """A parameter's gradient as the Program states it, ``red`` the batch reduction."""
        return red(delta_p)

    def program_loss(self, loss, penalty, red):
        """The batch loss as the Program states it, from the loss node's symbol."""
        return red(loss)

    def cost_node(self) -> str:
        """The node of the per-sample cost: the m×1 column C of a matrix loss given on sb.BATCH
        rows (the loss node then is L, its reduction + penalty), else the loss node itself."""
        return getattr(self.graph, "cost_name", None) or self.graph.loss_name

    @property
    def loss_is_cost(self) -> bool:
        """Whether the loss node is the per-sample cost C that the batch loss L reduces (a
        penalty beside it); False where it is L itself, so that its own edge to a parameter
        is the penalty's."""
        return self.cost_node() == self.graph.loss_name

    def outputs_of(self, d, cost):
        """The node whose parents are the prediction nodes: the cost node itself (a one-sample
        graph's C = 1ᵀ c reads them through its cost column c)."""
        return cost

    # -- data ------------------------------------------------------------------------------------
    def param_shape(self, name) -> tuple:
        """A parameter's declared shape, () for a number."""
        return ()

    def width(self, names) -> int:
        """The columns of the data array the names fill (X's for the inputs, Y's for the targets)."""
        return len(names)

    def sample_shape(self, names):
        """One sample's (rows, columns) of the data matrix `names` fill, or None where a sample
        is a row of X (the batch is not a separate axis)."""
        return None

    def image_shape(self):
        """(C, H, W) when the graph's one input is an image, else None."""
        return None

    def output_width(self, outputs) -> int:
        """The columns of the prediction Ŷ (what an upstream gradient G must have)."""
        return len(outputs)

    def ones_rows(self):
        """The rows of the column of ones a spec's ``ones`` stands for, or None (no ``ones``)."""
        return None

    def init_rows(self):
        """(name, shape, scheme) per parameter, or None for the per-matrix rules of a layer net."""
        return tuple((p, (), "normal") for p in self.graph.param_names)

    def plotted_norms(self, params) -> list:
        """The parameters whose gradient norms a training plot draws: every one of a scalar graph."""
        return list(params)

    # -- compiling ------------------------------------------------------------------------------
    def bind_data(self, low, names, namer, P):
        """Give the Program's inputs and targets their code symbols (and shapes) in lowering `low`."""
        for kind, syms in (("X", P.inputs), ("Y", P.targets)):
            for j, s in enumerate(syms):
                names[s] = sp.Symbol(namer.take(s.name), real=True)
                low.shapes[sp.Symbol(kind, real=True)] = (BATCH, sp.Integer(len(syms)))
                low.emit("column", (sp.Symbol(kind, real=True), j), (BATCH,), target=names[s])

    def loss_seed(self, seed, reduction):
        """δ of the loss node in compiled code, for a step of size ``seed`` (1 for a gradient)."""
        return seed

    def gradient_seed(self, seed, reduction):
        """What a Program gradient's adjoint-free terms (a penalty's) are scaled by: 1 where the
        gradient is an adjoint alone (seeded with the loss already)."""
        return sp.S.One

    def shared(self, names, backward, sample_nodes) -> set:
        """The adjoints compiled code sums over the batch axis (a parameter's δ of a one-sample graph)."""
        return set()

    def full(self, code, s, have, printer) -> str:
        """The code of a value at its full array shape (a matrix graph's broadcasts): here `code`."""
        return code

    def stack(self, syms, prefix) -> str:
        """The code of per-sample values side by side, n × len(syms) (numbers broadcast)."""
        return f"{prefix}.column_stack([{', '.join(f'{prefix}.broadcast_to({s}, X.shape[:1])' for s in syms)}])"

    # -- a layer's VJP -------------------------------------------------------------------------------
    def data_matrix(self):
        """The input matrix X whose slices a layer's VJP differentiates, or None (a scalar graph)."""
        return None

    def vjp_blocks(self, slices):
        """Which columns of X each differentiated name stands for: ``[(name, start, stop)]``."""
        return [(x, j, j + 1) for j, x in enumerate(self.graph.input_names)]

    def vjp_cost(self, h, outputs):
        """⟨G, Ŷ⟩ of one sample over the prediction nodes `outputs`, G declared as targets of
        the graph `h` under construction."""
        g = self.graph
        gs = [h.targets(h._fresh(f"g_{o}")) for o in outputs]
        return sp.Add(*[gk * g.symbol(o) for gk, o in zip(gs, outputs)])


class Scalars(Layout):
    """A scalar graph: one sample's numbers, data in columns, the per-sample cost reduced."""

    simplifies = True
    worked_in_numbers = True
    sample_as_column = False
    indexed_cost = True

    def expand(self, expr):
        """`expr` in inputs, targets and parameters: the unrolled definitions put in at once."""
        g = self.graph
        return expr.xreplace({g.symbol(n): e for n, e in g.unrolled().items()})


class _Matrices(Layout):
    """What both matrix forms share: declared shapes, one data matrix X and one Y."""

    kind = "matrix"
    data_letters = {"Yhat": r"\hat{y}", "Y": "y"}

    def contribution(self, factor, child_adjoint, child_expr, written_in=None):
        """A matrix child's VJP is what flows back (a scalar child, the loss: δ · factor)."""
        if not is_matrix(child_expr):
            return child_adjoint * factor
        return factor if written_in is None else factor.xreplace({written_in: child_adjoint})

    def param_shape(self, name) -> tuple:
        """A parameter's declared (rows, columns)."""
        return tuple(int(x) for x in self.graph.symbol(name).shape)

    def width(self, names) -> int:
        """The columns of the one data matrix `names` holds (0 when there is none)."""
        return int(self.graph.symbol(names[0]).shape[1]) if names else 0

    def output_width(self, outputs) -> int:
        """The columns of the prediction matrices, side by side."""
        return sum(int(self.graph.symbol(o).shape[1]) for o in outputs)

    def ones_rows(self):
        """The batch's m rows: ``ones`` is the m×1 column that repeats a row on every sample."""
        return BATCH

    def init_rows(self):
        """None: a matrix graph's parameters get the per-matrix rules (symback.codegen.init_rows)."""
        return None

    def plotted_norms(self, params) -> list:
        """One line per weight matrix (the W… parameters)."""
        return [p for p in params if p.startswith("W")]

    def bind_data(self, low, names, namer, P):
        """X and Y are the data matrices themselves, of their declared shape."""
        if len(P.inputs) > 1 or len(P.targets) > 1:
            raise SymbackError("a matrix graph compiles with one input matrix X and one target matrix Y; "
                               f"this one has inputs {[s.name for s in P.inputs]} and targets "
                               f"{[s.name for s in P.targets]}")
        for kind, syms in (("X", P.inputs), ("Y", P.targets)):
            for s in syms:
                names[s] = sp.Symbol(kind, real=True)
                low.shapes[names[s]] = self.data_shape(s)

    def data_shape(self, s) -> tuple:
        """The shape of the array a data matrix's symbol stands for in compiled code."""
        return tuple(s.shape)

    def full(self, code, s, have, printer) -> str:
        """The code of the graph symbol `s`'s value at its full array shape, where its array (of
        shape `have`) is a broadcast of it: a ones product's sums, one row for T equal ones."""
        want = self.data_shape(s)
        if tuple(have) == want:
            return code
        dims = ", ".join("X.shape[0]" if d == BATCH else str(d) for d in want)
        return f"({printer.op_full('0', f'({dims},)')} + {code})"

    def stack(self, syms, prefix) -> str:
        """One prediction matrix as it is; several side by side, their columns after the rows."""
        if len(syms) == 1:
            return str(syms[0])
        cols = ", ".join(f"{prefix}.broadcast_to({o}, (X.shape[0],) + {o}.shape[1:])" for o in syms)
        return f"{prefix}.column_stack([{cols}])"

    def data_matrix(self):
        """The one input matrix X."""
        return self.graph.symbol(self.graph.input_names[0])

    def vjp_blocks(self, slices):
        """All of X, or the column slices the graph reads (sorted, refused when they overlap)."""
        if not slices:
            X = self.data_matrix()
            return [(X.name, 0, int(X.shape[1]))]
        blocks = sorted(((name, int(s.colslice[0]), int(s.colslice[1])) for s, name in slices.items()),
                        key=lambda b: b[1])
        if any(a[2] > b[1] for a, b in zip(blocks, blocks[1:])):
            raise SymbackError("a layer's VJP through overlapping slices of X is not supported")
        return blocks


class BatchRows(_Matrices):
    """A matrix graph with sb.BATCH rows: the loss node is the batch loss L already."""

    def batch_loss(self, d):
        """The loss node's definition: L = (1/m) 1ᵀ C (+ penalty)."""
        return d.graph.expr(d.loss_name)

    def batch_gradient(self, d, p, form):
        """The gradient itself: it already is ∂L/∂p."""
        return d.gradient(p, form)

    def program_gradient(self, d, p, delta_p, red):
        """δ_p: the batch loss's gradient."""
        return delta_p

    def program_loss(self, loss, penalty, red):
        """The loss node: the batch loss."""
        return loss

    def vjp_cost(self, h, outputs):
        """Row i of ⟨G, Ŷ⟩: Σ_k G_ik Ŷ_ik, G an m × width target."""
        G = h.targets(h._fresh("G"), shape=(BATCH, self.output_width(outputs)))
        return sp.HadamardProduct(self.graph.symbol(outputs[0]), G) * sp.OneMatrix(self.output_width(outputs), 1)


class OneSample(_Matrices):
    """A matrix graph of one sample (no sb.BATCH): data (n, rows, columns), the cost reduced
    over the leading batch axis, plus the penalty."""

    ndim = 3
    one_sample = True

    def batch_gradient(self, d, p, form):
        """(1/m) Σ_i ∂C_i/∂p (or the sum) + ∂penalty/∂p."""
        return plus(d.reduce(d.gradient(p, form)), d.penalty_gradient(p))

    def program_gradient(self, d, p, delta_p, red):
        """δ_p (the samples' sum, seeded with 1/m for the mean) + ∂penalty/∂p."""
        return plus(delta_p, d.penalty_gradient(p))

    def program_loss(self, loss, penalty, red):
        """The reduced per-sample cost + the penalty."""
        return red(loss) + penalty

    def outputs_of(self, d, cost):
        """C = 1ᵀ c: the prediction feeds the cost column c (when there is one)."""
        g = d.graph
        rows = [n for n in g.parents(cost) if g.kind(n) == "node" and isinstance(g.expr(n), RowCost)]
        return rows[0] if len(rows) == 1 else cost

    def sample_shape(self, names):
        """One sample's (rows, columns) of the data matrix."""
        return tuple(int(x) for x in self.graph.symbol(names[0]).shape) if names else None

    def image_shape(self):
        """(C, H, W) of the one input when it is an image (``inputs=(C, H, W)``)."""
        g = self.graph
        return getattr(g, "input_images", {}).get(g.input_names[0]) if len(g.input_names) == 1 else None

    def ones_rows(self):
        """One sample's T rows, when every input has T of them (else the batch's m)."""
        rows = {self.graph.shape(n)[0] for n in self.graph.input_names if self.graph.shape(n)}
        return rows.pop() if len(rows) == 1 else BATCH

    def data_shape(self, s) -> tuple:
        """The batch on a leading axis: (m, rows, columns)."""
        return (BATCH,) + tuple(s.shape)

    def loss_seed(self, seed, reduction):
        """δ_C = seed/m: each sample's cost enters the batch mean with weight 1/m."""
        return seed / BATCH if reduction == "mean" else seed

    def gradient_seed(self, seed, reduction):
        """The penalty's gradient is scaled by the step alone (δ_p carries the seed already)."""
        return seed

    def shared(self, names, backward, sample_nodes) -> set:
        """The δ of what every sample shares (a parameter): summed over the batch axis."""
        return {names[s] for s, _ in backward if s.node not in sample_nodes}

    def vjp_cost(self, h, outputs):
        """One sample's ⟨G, Ŷ⟩ = 1ᵀ (G ⊙ Ŷ) 1, summed over the batch by the loss's reduction."""
        Yhat = self.graph.symbol(outputs[0])
        G = h.targets(h._fresh("G"), shape=tuple(Yhat.shape))
        if 1 in Yhat.shape:
            # the same ⟨G, Ŷ⟩ as tr(Gᵀ Ŷ) when Ŷ is one row (a CNN's class scores) or one
            # column: a 1×1 𝟏 vanishes from SymPy's product, and its matrix calculus then
            # fails on tr((G ⊙ Ŷ) 𝟏) (IndexError) or returns an unusable array for 𝟏ᵀ(G ⊙ Ŷ)
            return sp.Trace(G.T * Yhat)
        rows = sp.OneMatrix(1, Yhat.shape[0])
        return sp.Trace(rows * sp.HadamardProduct(Yhat, G) * sp.OneMatrix(self.output_width(outputs), 1))


def layout_of(graph) -> Layout:
    """The layout of `graph`'s form, read off its symbols: scalars, batch rows or one sample."""
    symbols = [graph.symbol(n) for n in graph.order]
    if not any(is_matrix(s) for s in symbols):
        return Scalars(graph)
    data = [s for n, s in zip(graph.order, symbols) if graph.kind(n) in ("input", "target")]
    return OneSample(graph) if not any(BATCH in tuple(s.shape) for s in data if is_matrix(s)) \
        else BatchRows(graph)
