"""The chain rule, symbolically: reverse-mode accumulation over a Graph.

The whole algorithm is :func:`backward`: visit the graph in reverse
definition order and give each node its adjoint δ_node, the sum over its
children of what flows back along each edge — δ_child · ∂child/∂node for
scalars, the vector-Jacobian product for matrices.  SymPy computes every
local derivative (:mod:`symback.vjp`).  Scalar graphs and matrix graphs
(layer networks) go through this one loop; everything else in this module
reads its result in the views a reader wants (chain, recursive, expanded),
as paths from the loss back to a parameter, or as a :class:`Program` of
assignments that documents and code generators print.  The records it fills
(names, factors, the δ symbols, the Program) are in :mod:`symback.adjoints`, the
output blocks it fuses in :mod:`symback.fusion`.  What differs between the forms of a
graph's data (scalars, sb.BATCH rows, one sample) is asked of ``graph.layout``
(:mod:`symback.layout`), never branched on here.
"""
from __future__ import annotations

import sympy as sp

from .budget import within
from .errors import DefinitionError, SymbackError
from .decompose import decompose
from .graph import Graph
from .kinds.base import add, is_matrix, zero_like
from .matrix import BATCH, simplify_ones
from .proofs import shorter_equal
from .vjp import AdjointMatrix, edge_factor, local_factor, real_diff
# the records and the fused output blocks live beside the engine; their names stay importable here
from .adjoints import Adjoint, BatchMean, BatchSum, Factor, LocalFactors, Name, Program, delta
from .fusion import fused_delta, output_block

__all__ = ["Derivation", "Factor", "Name", "Adjoint", "AdjointMatrix", "Program", "derive",
           "backward", "decompose", "BATCH_SIZE", "SAMPLE", "real_diff", "delta", "output_block"]

BATCH_SIZE = BATCH
SAMPLE = sp.Symbol("i", positive=True, integer=True)
MAX_PATHS = 10_000
# past either (residual and transformer blocks multiply both), documents write a gradient through
# the δs: path by path it would fill pages no reader follows, and take minutes to print
MAX_LISTED_PATHS, MAX_CHAIN_NODES = 64, 10_000
#: the largest chain form (SymPy operations) that the expanded form tries to simplify
MAX_SIMPLIFY_OPS = 60
SIMPLIFY_SECONDS = 1.0      # simplify() has no time limit of its own: it gets this much, no more


def backward(graph: Graph, wrt=()):
    """Reverse-mode accumulation: the one place where the chain rule happens.

    Returns ``(local, adjoint)``: ``local[(child, parent)]`` is the edge's
    local factor from SymPy (:func:`symback.vjp.local_factor`), and
    ``adjoint[name]`` is δ_name in recursive form: the sum over the
    children of what flows back along each edge, with δ_loss = 1.  Each
    edge is differentiated once, so the cost is linear in the graph's size.
    ``wrt`` names inputs (or nodes) that get an adjoint as parameters do
    (a layer's ∂/∂X, :mod:`symback.layer`).
    """
    local, adjoint, layout = LocalFactors(), {graph.loss_name: sp.S.One}, graph.layout
    trainable = set(graph.param_names) | set(wrt)   # nodes computed from data alone need no δ
    for name in graph.order:
        if any(p in trainable for p in graph.parents(name)):
            trainable.add(name)
    for name in reversed(graph.order):
        if (graph.kind(name) not in ("node", "param") and name not in wrt) or name not in trainable:
            continue
        terms = []
        for child in graph.children(name):
            expr, d = graph.expr(child), delta(graph, child)
            # Kept in SymPy's canonical form, so it compares equal (==) to the
            # same formula typed by a user; printers factor it for display.
            fused = fused_delta(graph, child, name)
            if fused is not None:       # the δ does not need it: derived when a document asks
                local.fused[name] = (child, *output_block(graph, child))
                local.defer((child, name), lambda c=child, n=name, d=d: _local_factor(graph, c, n, d))
                terms.append(fused)
                continue
            local[(child, name)] = _local_factor(graph, child, name, d)
            terms.append(layout.contribution(local[(child, name)], d, expr))
        # an unused parameter's gradient is zero
        adjoint[name] = add(*terms) if terms else zero_like(graph.symbol(name))
    return local, adjoint


def _local_factor(graph, child, name, d):
    """The edge child ← name's local factor (a SymPy failure named by the node)."""
    return edge_factor(graph.expr(child), d, graph.symbol(name), graph.symbol(child), (child, name))


#: terms a multinomial expansion may make before simplified() gives up: cancel() and
#: simplify() expand powers of sums, and (w1 x1 + w2 x2 + b)^999 has 500,500 terms
EXPANSION_LIMIT = 2_000


def _cancels_quickly(expr) -> bool:
    """Whether expanding every integer power of a sum in expr stays under EXPANSION_LIMIT terms."""
    from math import comb
    for e in expr.atoms(sp.Pow):
        if e.base.is_Add and e.exp.is_Integer and abs(e.exp) > 1:
            n, k = abs(int(e.exp)), len(e.base.args)
            if comb(n + k - 1, k - 1) > EXPANSION_LIMIT:
                return False
    return True


class Derivation:
    """The closed-form gradients of a graph's loss, in every view.

    Built by :func:`derive` (``Derivation(graph, wrt=[...])`` also differentiates
    the named inputs, as a layer's VJP needs).  ``params`` lists the parameters;
    :meth:`gradient` gives ∂C/∂p for one sample of a scalar graph (∂L/∂p,
    the batch loss's gradient, for a matrix graph), :meth:`chain` the paths
    behind it, :meth:`batch_gradient` the batch reduction, :meth:`program`
    the assignments code is printed from.  :meth:`latex`, :meth:`markdown`
    and :meth:`write` render it; ``symback.compile`` turns it into code.
    """

    def __init__(self, graph: Graph, wrt=()):
        graph.check_complete(wrt)
        self.graph = graph
        #: the form of the graph's data (scalars, batch rows, one sample): what asks "scalar or matrix?"
        self.layout = graph.layout
        #: inputs (or nodes) differentiated besides the parameters: δ_X of a layer's VJP
        self.wrt = tuple(wrt)
        self.local, self.adjoint = backward(graph, self.wrt)
        #: Z -> (A, f, cost node): the output blocks whose δ_Z came from a fused rule
        self.fused = self.local.fused
        self._chain: dict[str, sp.Expr] = {}
        self._nice: dict[str, sp.Expr] = {}
        self._sizes: dict[str, int] = {}

    @property
    def kind(self) -> str:
        """'matrix' when the nodes are matrices (rows are samples), else 'scalar'."""
        return self.layout.kind

    # -- names ------------------------------------------------------------
    @property
    def params(self) -> list[str]:
        """Parameter names, in order."""
        return list(self.graph.param_names)

    @property
    def loss_name(self) -> str:
        """The name of the loss node (the per-sample cost C, or a matrix graph's batch loss L)."""
        return self.graph.loss_name

    @property
    def reduction(self) -> str:
        """'mean' (L = 1/m Σ C_i) or 'sum' (L = Σ C_i)."""
        return self.graph.reduction

    def _param(self, p) -> str:
        name = p.name if isinstance(p, (sp.Symbol, sp.MatrixSymbol)) else p
        if name not in self.graph.param_names:
            raise SymbackError(f"unknown parameter {name!r}; parameters are {', '.join(self.params)}")
        return name

    # -- the three views ----------------------------------------------------
    def gradient(self, p, form: str = "chain") -> sp.Expr:
        """∂C/∂p for one sample (a matrix graph: ∂L/∂p, shaped like p).

        ``form="chain"``: what flows back along every path from the loss to
        p, summed, in terms of named intermediates; ``"recursive"``: in terms
        of the adjoints δ of p's children; ``"expanded"``: inputs, targets
        and parameters only.
        """
        name = self._param(p)
        if form == "chain":
            return self._chain_form(name)
        if form == "recursive":
            return self.adjoint[name]
        if form == "expanded":
            return self._expanded(name)
        raise SymbackError(f"unknown form {form!r}: use 'chain', 'recursive' or 'expanded'")

    def _expanded(self, name: str):
        """The expanded form; for a small scalar graph the expansion of :meth:`simplified`'s
        proved-equal form when that is shorter (logistic regression's x(σ(wx + b) − y))."""
        if name not in self._nice:
            full = self._expand(self._chain_form(name))
            short = self.simplified(name) if self.layout.simplifies else None
            if short is not None:
                short = self._expand(short)
            self._nice[name] = short if short is not None and sp.count_ops(short) < sp.count_ops(full) else full
        return self._nice[name]

    def _expand(self, expr):
        return self.layout.expand(expr)

    def named(self, expr):
        """`expr` with every node's definition replaced by the node's name.

        σ(z)(1 − σ(z)) becomes p(1 − p) when p = σ(z) is a node: the local
        derivatives in the notes' own letters.  Equal by definition.
        """
        g = self.graph
        defs = {g.expr(n): g.symbol(n) for n in g.node_names
                if not is_matrix(g.expr(n)) and not g.expr(n).is_Atom}
        return expr.xreplace(defs) if defs and isinstance(expr, sp.Basic) else expr

    def simplified(self, p, form: str = "chain"):
        """A shorter equal form of ∂C/∂p, or None when SymPy finds none.

        Written in named nodes (:meth:`named`), then cancelled, factored or
        simplified by SymPy; the shortest candidate is kept only when its
        difference from the chain form simplifies to 0 — proved, not assumed.
        Logistic regression's chain x(1−p)p((1−y)/(1−p) − y/p) gives x(p − y).
        SymPy's simplify() has no time limit of its own: a form of more than
        MAX_SIMPLIFY_OPS operations is not handed to it, and the search gets
        SIMPLIFY_SECONDS (None past either: the shorter form is optional).
        """
        chain = self.named(self.gradient(p, form))
        if is_matrix(chain) or sp.count_ops(chain) > MAX_SIMPLIFY_OPS or not _cancels_quickly(chain):
            return None
        return within(SIMPLIFY_SECONDS, lambda: shorter_equal(chain))

    def delta(self, name: str, form: str = "recursive") -> sp.Expr:
        """The adjoint δ_name of a node ('recursive' or 'chain' form)."""
        if name not in self.adjoint:
            raise SymbackError(f"no adjoint for {name!r}: not a node or parameter of the graph")
        return self.adjoint[name] if form == "recursive" else self._chain_form(name)

    def _chain_form(self, name: str) -> sp.Expr:
        # δ-symbols replaced by their own chain forms, memoised, so the cost stays linear however
        # many paths share a sub-path; past MAX_CHAIN_NODES the products are not canonicalised.
        # An explicit stack, not recursion: a chain of 300 scalar layers passed Python's limit.
        if name == self.loss_name:
            return sp.S.One
        stack = [name]
        while stack:
            rec = self.adjoint[stack[-1]]
            adjoints = _adjoints_in(rec)
            todo = [s.node for s in adjoints if s.node != self.loss_name and s.node not in self._chain]
            if todo:                                            # its δs' chain forms first
                stack.extend(todo)
                continue
            top = stack.pop()
            if top not in self._chain:                          # not already done via another path
                subs = {s: sp.S.One if s.node == self.loss_name else self._chain[s.node] for s in adjoints}
                self._chain[top] = (simplify_ones(rec.xreplace(subs), self.chain_size(top) <= MAX_CHAIN_NODES)
                                    if subs else rec)
        return self._chain[name]

    def chain(self, p) -> list[list[Factor]]:
        """Every path from the loss back to `p`, each a list of Factors.

        Applying the factors in order (:func:`apply_path`) and summing over
        the paths gives ``gradient(p)`` (the chain rule's sum over paths).
        """
        target = self._node(p)
        reaches = self._descendants(target)
        paths: list[list[Factor]] = []

        def walk(node, prefix):
            if node == target:
                paths.append(prefix)
                if len(paths) > MAX_PATHS:
                    raise SymbackError(f"more than {MAX_PATHS} paths to {target!r}; "
                                       "use gradient(p, form='recursive')")
                return
            for parent in self.graph.parents(node):
                if parent in reaches:
                    walk(parent, prefix + [Factor(Name(node), Name(parent), self.local[(node, parent)])])

        walk(self.loss_name, [])
        return paths

    def _node(self, p) -> str:
        """A parameter's name, or a node's that has an adjoint (a path may end at either)."""
        return p if isinstance(p, str) and p in self.adjoint else self._param(p)

    def path_count(self, p, longest: bool = False) -> int:
        """How many paths lead from the loss back to `p` (the terms :meth:`chain` lists), or with
        ``longest=True`` the most factors one of them has (0: none), counted over the graph
        without listing them."""
        target = self._node(p)
        reaches, memo = self._descendants(target), {}
        for n in self.graph.order:          # parents first: no recursion, however deep the graph
            if n == target:
                memo[n] = 0 if longest else 1
            elif n in reaches:
                below = [memo[q] for q in self.graph.parents(n) if q in memo]
                memo[n] = max((1 + b for b in below if b >= 0), default=-1) if longest else sum(below)
        return max(memo.get(self.loss_name, 0), 0)

    def listable(self, p) -> bool:
        """Whether `p`'s gradient is small enough to write out path by path (MAX_LISTED_PATHS,
        MAX_CHAIN_NODES); documents and the text report write a larger one through the δs."""
        return self.path_count(p) <= MAX_LISTED_PATHS and self.chain_size(p) <= MAX_CHAIN_NODES

    def chain_size(self, p) -> int:
        """The SymPy nodes of `p`'s chain form written out as a tree (a part several paths share
        counted each time): the printed formula's size, counted without building it."""
        def count(e):               # a δ stands for its own chain form
            if isinstance(e, (Adjoint, AdjointMatrix)):
                return self._sizes[e.node]
            return 1 + sum(count(a) for a in e.args) if isinstance(e, sp.Basic) else 1
        if not self._sizes:         # children first: each δ's size is known before it is used
            self._sizes[self.loss_name] = 1
            for n in reversed(self.graph.order):
                if n in self.adjoint and n != self.loss_name:
                    self._sizes[n] = count(self.adjoint[n])
        return self._sizes[self._node(p)]

    def apply_path(self, path) -> sp.Expr:
        """What flows from the loss to the end of `path`: its factors applied in order."""
        value = sp.S.One
        for f in path:
            value = self.layout.contribution(f.expr, value, self.graph.expr(f.of), delta(self.graph, f.of))
        return simplify_ones(value)

    def _descendants(self, name) -> set[str]:
        seen, todo = {name}, [name]
        while todo:
            for c in self.graph.children(todo.pop()):
                if c not in seen:
                    seen.add(c)
                    todo.append(c)
        return seen

    # -- batch reduction ------------------------------------------------------
    def reduce(self, expr: sp.Expr) -> sp.Expr:
        """Σ_i expr (sum) or 1/m Σ_i expr (mean) over the samples of a batch, unevaluated."""
        total = sp.Sum(expr, (SAMPLE, 1, BATCH_SIZE))
        return total / BATCH_SIZE if self.reduction == "mean" else total

    def batch_loss(self) -> sp.Expr:
        """L: the reduction of the per-sample cost over a batch (plus a matrix graph's penalty)."""
        return self.layout.batch_loss(self)

    def batch_gradient(self, p, form: str = "chain") -> sp.Expr:
        """∂L/∂p = (1/m) Σ_i ∂C_i/∂p (or the plain sum), plus a one-sample graph's ∂penalty/∂p;
        a batch-rows matrix graph's gradient already is ∂L/∂p."""
        return self.layout.batch_gradient(self, p, form)

    # -- the program ---------------------------------------------------------------
    def program(self) -> Program:
        """The derivation as assignments (forward, then backward), for printers."""
        g = self.graph
        forward = tuple((g.symbol(n), g.expr(n)) for n in g.order if n in g._expr)
        needed = self._needed()
        backward, constant = [], {}
        for n in reversed(g.order):
            if n in needed:
                e = simplify_ones(self.adjoint[n].xreplace(constant)) if constant else self.adjoint[n]
                if e.has(sp.ZeroMatrix) and is_matrix(e):   # δ of a node off the loss's path: 0·W is 0
                    e = e.doit()
                if is_matrix(e) and not _adjoints_in(e) and not (e.free_symbols - {BATCH}) \
                        and not (g.kind(n) == "param" and e.is_ZeroMatrix):
                    constant[delta(g, n)] = e      # δ_C = (1/m)·1: folded into its users
                    # (a parameter's own zero gradient stays a statement: gradients name it)
                else:
                    backward.append((delta(g, n), e))
        backward = tuple(backward)
        red = BatchMean if self.reduction == "mean" else BatchSum
        grads = {p: self.layout.program_gradient(self, p, delta(g, p), red) for p in g.param_names}
        loss = self.layout.program_loss(g.symbol(self.loss_name), g.penalty, red)
        return Program(tuple(g.symbol(n) for n in g.input_names), tuple(g.symbol(n) for n in g.target_names),
                       tuple(g.symbol(n) for n in g.param_names), forward, backward, grads, loss,
                       tuple(g.symbol(n) for n in self.outputs), self.reduction)

    def penalty_gradient(self, p):
        """∂penalty/∂p of a one-sample graph's penalty (0 when there is none): SymPy's."""
        name = self._param(p)
        sym, pen = self.graph.symbol(name), self.graph.penalty
        if not pen.has(sym):
            return zero_like(sym)
        return local_factor(pen, sp.S.One, sym)

    @property
    def sample_nodes(self) -> set:
        """The names whose values differ from sample to sample: the data and what is computed
        from them (the rest, parameters and what they alone give, every sample shares)."""
        g = self.graph
        out = set(g.input_names) | set(g.target_names)
        for n in g.order:
            if any(q in out for q in g.parents(n)):
                out.add(n)
        return out

    def _needed(self) -> set:
        """The nodes and parameters whose adjoints the parameter gradients use."""
        needed, todo = set(), list(self.params) + list(self.wrt)
        while todo:
            n = todo.pop()
            if n not in needed:
                needed.add(n)
                todo += [s.node for s in _adjoints_in(self.adjoint[n])]
        return needed

    @property
    def outputs(self) -> list[str]:
        """The prediction nodes: the loss's inputs that are computed without the targets."""
        g = self.graph
        uses_target = set(g.target_names)
        for n in g.order:
            if any(p in uses_target for p in g.parents(n)):
                uses_target.add(n)
        cost = self.layout.outputs_of(self, self.layout.cost_node())
        return [n for n in g.parents(cost) if g.kind(n) == "node" and n not in uses_target]

    # -- numbers ----------------------------------------------------------------
    def evaluate(self, values: dict) -> dict:
        """Substitute numbers: returns {'forward': {node: value}, 'gradient': {p: value}}.

        ``values`` maps every input, target and parameter name to a number
        (an array for a matrix graph's matrices, samples in rows).  A scalar
        graph's values are exact SymPy numbers when the inputs are, and its
        gradients are per sample (∂C/∂p); a matrix graph's are NumPy arrays,
        the gradients of the batch loss L.  Slow: for checking and examples.
        """
        return _consumer("evaluate")(self, values)

    # -- outputs (symback.render does the work; see CONSUMERS) --------------------------
    def latex(self, template: str = "article", **options) -> str:
        """A complete LaTeX document (or the named template) for this derivation."""
        return _consumer("render")(self, template=template, fmt="latex", **options)

    def markdown(self, template: str = "markdown", **options) -> str:
        """The derivation as Markdown with MathJax-compatible math."""
        return _consumer("render")(self, template=template, fmt="markdown", **options)

    def write(self, path, **options):
        """Write .tex, .md or .pdf (chosen by suffix), whole or not at all; the call asks for
        `path`, so a file there is replaced (``symback derive -o`` refuses without --overwrite)."""
        return _consumer("write")(self, path, **options)

    def _repr_latex_(self):
        """Jupyter's LaTeX display: the formulas, compactly (see :mod:`symback.document.display`)."""
        return _consumer("repr_latex")(self)

    def _repr_markdown_(self):
        """Jupyter's Markdown display: a title and the formulas, compactly."""
        return _consumer("repr_markdown")(self)

    def __repr__(self):
        return f"<Derivation of {self.loss_name} w.r.t. {', '.join(self.params)}>"


#: The functions that read a Derivation into numbers and documents, by name ('evaluate',
#: 'render', 'write', 'repr_latex', 'repr_markdown'): each consumer module registers its own
#: when imported (``import symback`` imports them all), so the engine imports no consumer.
CONSUMERS: dict = {}


def _consumer(name: str):
    try:
        return CONSUMERS[name]
    except KeyError:
        raise SymbackError(f"nothing provides {name!r}: import symback (it loads the documents "
                           "and the evaluator)") from None


def _adjoints_in(expr) -> set:
    """The adjoint symbols (scalar and matrix) an expression uses."""
    if not isinstance(expr, sp.Basic):
        return set()
    return {s for s in expr.atoms(Adjoint, AdjointMatrix)}


def derive(model, wrt=None) -> Derivation:
    """Apply the chain rule symbolically.

    ``model`` is a :class:`Graph`, a layer network (``sb.mlp``,
    ``sb.Sequential``), or a plain SymPy expression with ``wrt`` naming
    the parameters.  Returns a :class:`Derivation`.
    """
    if isinstance(model, Graph):
        return Derivation(model)
    if hasattr(model, "derive"):
        return model.derive()
    if isinstance(model, sp.Basic) or isinstance(model, (sp.MatrixBase,)):
        return Derivation(decompose(model, wrt))
    raise DefinitionError(f"cannot derive a {type(model).__name__}: give a Graph, a layer "
                          "network or a SymPy expression")
