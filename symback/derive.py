"""The chain rule, symbolically: reverse-mode accumulation over a Graph.

The whole algorithm is :func:`backward`: visit the graph in reverse
definition order and give each node its adjoint
δ_node = Σ_children δ_child · ∂child/∂node, where SymPy computes every
local derivative ∂child/∂node.  Everything else in this module reads
that result in the three views a reader wants (chain, recursive,
expanded) or as paths from the loss back to a parameter.
"""
from __future__ import annotations

from typing import NamedTuple

import sympy as sp

from .errors import DefinitionError, SymbackError
from .graph import Graph, check_name

__all__ = ["Derivation", "Factor", "Name", "Adjoint", "derive", "backward", "decompose",
           "BATCH_SIZE", "SAMPLE"]

BATCH_SIZE = sp.Symbol("m", positive=True, integer=True)
SAMPLE = sp.Symbol("i", positive=True, integer=True)
MAX_PATHS = 10_000


class Name(str):
    """A node name that also equals the SymPy symbol of that name."""

    def __eq__(self, other):
        if isinstance(other, sp.Symbol):
            return str.__eq__(self, other.name)
        return str.__eq__(self, other)

    def __ne__(self, other):
        return not self == other

    __hash__ = str.__hash__


class Factor(NamedTuple):
    """One local derivative on a path: ``expr`` = ∂of/∂wrt."""

    of: Name
    wrt: Name
    expr: sp.Expr


class Adjoint(sp.Symbol):
    """The adjoint δ_node = ∂C/∂node, as a symbol in recursive formulas."""

    def __new__(cls, node: str):
        return super().__new__(cls, f"delta_{node}")

    @property
    def node(self) -> str:
        """The name of the node this adjoint belongs to."""
        return self.name[len("delta_"):]

    def _latex(self, printer, exp=None):
        s = r"\delta_{%s}" % printer._print(sp.Symbol(self.node))
        return s if exp is None else r"%s^{%s}" % (s, exp)


def backward(graph: Graph):
    """Reverse-mode accumulation: the one place where the chain rule happens.

    Returns ``(local, adjoint)``: ``local[(child, parent)]`` is SymPy's
    ∂child/∂parent, and ``adjoint[name]`` is δ_name in recursive form,
    Σ over children of δ_child · ∂child/∂name, with δ_loss = 1.  Each edge
    is differentiated once, so the cost is linear in the graph's size.
    """
    local, adjoint = {}, {graph.loss_name: sp.S.One}
    for name in reversed(graph.order):
        if graph.kind(name) not in ("node", "param"):
            continue
        terms = []
        for child in graph.children(name):
            # Kept in SymPy's canonical form, so it compares equal (==) to the
            # same formula typed by a user; printers factor it for display.
            d = real_diff(graph.expr(child), graph.symbol(name))
            local[(child, name)] = d
            terms.append(delta(graph, child) * d)
        adjoint[name] = sp.Add(*terms)
    return local, adjoint


def real_diff(expr: sp.Expr, var: sp.Symbol) -> sp.Expr:
    """SymPy's ∂expr/∂var, taken with every symbol real.

    Network quantities are real numbers; without saying so SymPy writes
    d|u|/du with re(u) and im(u).  The user's own symbols are put back.
    """
    free = [s for s in expr.free_symbols if s.is_real is None]
    if not free or not expr.has(sp.Abs, sp.sign, sp.re, sp.im, sp.arg, sp.conjugate):
        return sp.diff(expr, var)
    real = {s: sp.Dummy(s.name, real=True) for s in free}
    d = sp.diff(expr.xreplace(real), real.get(var, var))
    return d.xreplace({v: k for k, v in real.items()})


def delta(graph: Graph, name: str) -> sp.Expr:
    """The symbol standing for δ_name (1 for the loss itself)."""
    return sp.S.One if name == graph.loss_name else Adjoint(name)


class Derivation:
    """The closed-form gradients of a graph's loss, in every view.

    Built by :func:`derive`.  ``params`` lists the parameters;
    :meth:`gradient` gives ∂C/∂p for one sample, :meth:`chain` the paths
    behind it, :meth:`batch_gradient` the batch reduction.  The outputs
    :meth:`latex`, :meth:`markdown`, :meth:`write` render it and
    ``symback.compile`` turns it into NumPy code.
    """

    kind = "scalar"

    def __init__(self, graph: Graph):
        graph.check_complete()
        self.graph = graph
        self.local, self.adjoint = backward(graph)
        self._chain: dict[str, sp.Expr] = {}

    # -- names ------------------------------------------------------------
    @property
    def params(self) -> list[str]:
        """Parameter names, in order."""
        return list(self.graph.param_names)

    @property
    def loss_name(self) -> str:
        """The name of the per-sample cost node."""
        return self.graph.loss_name

    @property
    def reduction(self) -> str:
        """'mean' (L = 1/m Σ C_i) or 'sum' (L = Σ C_i)."""
        return self.graph.reduction

    def _param(self, p) -> str:
        name = p.name if isinstance(p, sp.Symbol) else p
        if name not in self.graph.param_names:
            raise SymbackError(f"unknown parameter {name!r}; parameters are {', '.join(self.params)}")
        return name

    # -- the three views ----------------------------------------------------
    def gradient(self, p, form: str = "chain") -> sp.Expr:
        """∂C/∂p for one sample.

        ``form="chain"``: products of local derivatives along the paths
        from the loss to p, summed, in terms of named intermediates;
        ``"recursive"``: Σ over p's children of δ_child · ∂child/∂p;
        ``"expanded"``: inputs, targets and parameters only.
        """
        name = self._param(p)
        if form == "chain":
            return self._chain_form(name)
        if form == "recursive":
            return self.adjoint[name]
        if form == "expanded":
            full = self.graph.unrolled()
            subs = {self.graph.symbol(n): e for n, e in full.items()}
            return self._chain_form(name).xreplace(subs)
        raise SymbackError(f"unknown form {form!r}: use 'chain', 'recursive' or 'expanded'")

    def delta(self, name: str, form: str = "recursive") -> sp.Expr:
        """The adjoint δ_name = ∂C/∂name of a node ('recursive' or 'chain' form)."""
        if name not in self.adjoint:
            raise SymbackError(f"no adjoint for {name!r}: not a node or parameter of the graph")
        return self.adjoint[name] if form == "recursive" else self._chain_form(name)

    def _chain_form(self, name: str) -> sp.Expr:
        # δ-symbols replaced by their own chain forms, memoised, so the
        # cost stays linear however many paths share a sub-path.
        if name not in self._chain:
            if name == self.loss_name:
                return sp.S.One
            terms = [self._chain_form(c) * self.local[(c, name)] for c in self.graph.children(name)]
            self._chain[name] = sp.Add(*terms)
        return self._chain[name]

    def chain(self, p) -> list[list[Factor]]:
        """Every path from the loss back to `p`, each a list of Factors.

        Σ over paths of the product of the factors' ``expr`` equals
        ``gradient(p)`` (the chain rule's sum over paths).
        """
        target = self._param(p) if not (isinstance(p, str) and p in self.adjoint) else p
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
        """L, the reduction of the per-sample cost over a batch."""
        return self.reduce(self.graph.expr(self.loss_name))

    def batch_gradient(self, p, form: str = "chain") -> sp.Expr:
        """∂L/∂p = (1/m) Σ_i ∂C_i/∂p (or the plain sum)."""
        return self.reduce(self.gradient(p, form))

    # -- numbers ----------------------------------------------------------------
    def evaluate(self, values: dict) -> dict:
        """Substitute numbers: returns {'forward': {node: value}, 'gradient': {p: value}}.

        ``values`` maps every input, target and parameter name to a number.
        The values are exact SymPy numbers when the inputs are.
        """
        g = self.graph
        needed = g.input_names + g.target_names + g.param_names
        missing = [n for n in needed if n not in values]
        if missing:
            raise SymbackError(f"values missing for {', '.join(missing)}")
        env = {g.symbol(n): sp.sympify(values[n]) for n in needed}
        forward = {}
        for n in g.order:
            if n in g._expr:
                forward[n] = sp.simplify(g.expr(n).xreplace(env)).evalf() \
                    if not g.expr(n).xreplace(env).is_Number else g.expr(n).xreplace(env)
                env[g.symbol(n)] = forward[n]
        grads = {}
        for p in self.params:
            grads[p] = sp.sympify(self._chain_form(p).xreplace(env))
            if not grads[p].is_Number:
                grads[p] = grads[p].evalf()
        return {"forward": forward, "gradient": grads}

    # -- outputs (render.py does the work) ---------------------------------------
    def latex(self, template: str = "article", **options) -> str:
        """A complete LaTeX document (or the named template) for this derivation."""
        from .render import render
        return render(self, template=template, fmt="latex", **options)

    def markdown(self, template: str = "markdown", **options) -> str:
        """The derivation as Markdown with MathJax-compatible math."""
        from .render import render
        return render(self, template=template, fmt="markdown", **options)

    def write(self, path, **options):
        """Write .tex, .md or .pdf (chosen by suffix), whole or not at all."""
        from .render import write
        return write(self, path, **options)

    def _repr_latex_(self):
        from .render import render
        return render(self, template="snippet", fmt="latex", display=True)

    def _repr_markdown_(self):
        return self.markdown()

    def __repr__(self):
        return f"<Derivation of {self.loss_name} w.r.t. {', '.join(self.params)}>"


def decompose(expr: sp.Expr, wrt) -> Graph:
    """Turn a plain SymPy expression into a Graph of named steps.

    Every compound sub-expression that depends on a parameter in `wrt`
    (each function application, power, product and sum) becomes a node
    u_1, u_2, ... (a repeated one is reused), and the whole is the loss C.
    Symbols not in `wrt` become inputs.
    """
    if isinstance(expr, (sp.MatrixBase, sp.MatrixExpr)) or not isinstance(expr, sp.Expr):
        raise DefinitionError(f"derive() needs a scalar SymPy expression, got {type(expr).__name__}")
    if wrt is None:
        raise DefinitionError("derive(expr) needs wrt=[...], the parameters to differentiate by")
    wrt = [sp.Symbol(w) if isinstance(w, str) else w for w in (wrt if isinstance(wrt, (list, tuple)) else [wrt])]
    for w in wrt:
        if not isinstance(w, sp.Symbol):
            raise DefinitionError(f"wrt must hold symbols or names, got {w!r}")
        check_name(w.name)
        if w not in expr.free_symbols:
            raise DefinitionError(f"the expression does not depend on {w.name!r}")
    g = Graph()
    others = sorted((s for s in expr.free_symbols if s not in wrt), key=lambda s: s.name)
    taken = {s.name for s in expr.free_symbols}
    for s in others:
        check_name(s.name)
    if others:
        g._declare([s.name for s in others], "input")
        for s in others:   # keep the user's own symbols (and their assumptions)
            g._symbol[s.name] = s
    g._declare([w.name for w in wrt], "param")
    for w in wrt:
        g._symbol[w.name] = w
    wrtset, names, counter = set(wrt), {}, [0]

    def visit(e):
        if e.is_Atom or not (e.free_symbols & wrtset):
            return e
        rebuilt = e.func(*[visit(a) for a in e.args])
        if rebuilt in names:
            return names[rebuilt]
        if e is expr:
            return rebuilt
        counter[0] += 1
        while f"u_{counter[0]}" in taken:
            counter[0] += 1
        sym = g.node(f"u_{counter[0]}", rebuilt)
        names[rebuilt] = sym
        return sym

    top = visit(expr)
    loss_name = "C" if "C" not in taken else "C_loss"
    g.loss(top, name=loss_name)
    return g


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
