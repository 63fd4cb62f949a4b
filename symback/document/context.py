"""The keys the templates read, for any Derivation, scalar or matrix.

:func:`context` walks the one Derivation (its graph, local factors,
chains, adjoints and program) and prints every formula from one SymPy
expression.  Each part is plain data (``Tex`` strings, numbers, lists,
dicts); the expressions the formulas were printed from ride along under
``"sympy"`` keys, for tests to check against oracles, and :func:`plain`
removes them before a template sees the context.
"""
from __future__ import annotations

import sympy as sp

from ..engine import delta
from ..errors import OutputError
from ..functions import Activation
from ..matrix import BATCH, RowCost, is_matrix, simplify_ones
from ..kinds.base import zero_like
from ..printing import (Chain, Partial, PerSample, Terms, Tex, latex, latex_escape,
                        markdown_escape, notation_settings, sample_index, visual_len)
from . import analysis, attention_proof, steps
from .factors import PENALTY, as_derivation, closed_softmax, compose, edge_expr, edge_partial
from .batchnorm import batchnorm
from .convolution import convolution
from .pooling import pooling
from .figure import diagram, figure_note, mermaid, tikz
from .example import exact, example, numbers, path_product, values_of
from .bptt import bptt
from .symbols import forward_note
from .size import check_size
from .lines import LINE_WIDTH, ROW_INDENT, Names, aligned_lines, chain_lines, definitions, term_rows, tex
from .scales import inverse_sigmas
from .losses import loss_claims, penalty_rows, reader_name
from .notation import layer_names, notation
from .written import written_form, written_latex
from .activations import activations
from .deltas import bp, deltas
from .punchline import punchline, punchline_intro, punchline_note

__all__ = ["context", "plain"]

MAX_EXPANDED_OPS = 80      # longer expanded forms are left out of the document
MAX_EXPANDED_NODES = 16    # ... and so are those of graphs with more nodes
MAX_SIMPLIFY_OPS = 24      # a longer chain form is not handed to sp.simplify (it can run for minutes)
OPTIONS = {"title", "author", "param", "values", "lr", "seed", "figure", "example", "vanishing",
           "verify", "cost", "display", "date", "notation", "steps", "steps_taken"}


def context(derivation, fmt: str = "latex", **options) -> dict:
    """Everything a template needs, every formula printed (see :func:`symback.render.render`).

    Formulas are ``Tex``; beside them, each part's ``"sympy"`` dict holds
    the expressions they were printed from.  ``plain(context(...))`` is
    what templates get.
    """
    unknown = sorted(set(options) - OPTIONS)
    if unknown:
        raise OutputError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(OPTIONS))}")
    d = as_derivation(derivation)
    check_size(d)               # a graph too deep to document is refused before any work
    nt = notation(d, options.get("notation"))
    # the batch's sample index: i, unless the graph's own names use it (an LSTM's gate i_t)
    nt = nt._replace(settings={**nt.settings, "sample": sample_index(d.graph.order)})
    if options.get("steps", "brief") not in ("brief", "full"):
        raise OutputError(f"unknown steps {options['steps']!r}: use 'brief' or 'full'")
    with notation_settings(nt.settings):
        return _context(d, fmt, nt, options)


def _context(d, fmt, nt, options) -> dict:
    g = d.graph
    escape = latex_escape if fmt == "latex" else markdown_escape
    param = d._param(options["param"]) if options.get("param") is not None else _deepest_param(d)
    values = values_of(d, options.get("values")) if options.get("values") else None
    lr, apps = options.get("lr"), _apps(d)
    if lr is not None:
        exact("lr", lr)                 # a finite real number (NaN, inf, complex, text: refused)
    ctx = {"fmt": fmt, "title": escape(options.get("title") or "Backpropagation, step by step"),
           "author": escape(options.get("author") or ""), "date": escape(options.get("date") or ""),
           "display": bool(options.get("display", False)), "matrix": d.layout.kind == "matrix",
           "one_sample": g.per_sample, "param": Tex(latex(g.symbol(param))), "param_name": escape(param)}
    names = Names(inverse_sigmas(g))        # each normalisation's σ⁻¹, defined in the forward pass
    ctx.update(_network(d, apps, nt, names))
    ctx["loss"] = _loss(d, nt)
    ctx["output"] = _output(d)
    ctx["local"] = _local(d, apps, names)
    widest = max((len(r["value"]) + len(r["written_out"] or "") for r in ctx["local"]), default=0)
    ctx["local_cols"] = 2 if widest < 60 else 1
    # a layer's δ^{(l)} (Nielsen's δ^l) appears in the maps before the δ section defines it: said here
    layer_deltas = [n for n in g.order if n in d.adjoint and g.kind(n) == "node"
                    and not latex(delta(g, n)).startswith(r"\delta_")]
    ctx["delta_names"] = Tex(", ".join(latex(sp.Eq(delta(g, n), Partial(g.symbol(d.loss_name), g.symbol(n)),
                                                   evaluate=False)) for n in layer_deltas)) if layer_deltas else None
    full = options.get("steps", "brief") == "full"
    ctx["steps"] = "full" if full else "brief"
    ctx["gradients"] = [_gradient(d, p, apps, names, full) for p in d.params]
    ctx["reduction_steps"] = steps.reduction_steps(d) if full else None
    ctx["punchline"] = punchline(d, nt, names, apps)
    ctx["punchline_note"] = punchline_note(d, ctx["punchline"])
    ctx["punchline_intro"] = punchline_intro(d, nt, ctx["punchline"])
    ctx["notation"] = _notation_keys(d, nt)
    ctx["deltas"] = deltas(d, apps, full, names)
    ctx["bptt"] = bptt(d, values, apps, options.get("seed", 0))     # None unless rnn/lstm/gru
    ctx["bp"] = bp(d, ctx["deltas"]) if nt.name == "nielsen" and d.layout.sample_as_column else None
    sups = {}
    ctx["activations"] = activations({type(f) for f in apps}, sups)
    at = numbers(d, values) if values is not None and options.get("example", True) else None
    dg = diagram(d, param, apps, at)
    draw = options.get("figure", True)
    ctx["figure"] = analysis_or_none(draw and fmt == "latex", lambda: tikz(dg))
    ctx["mermaid"] = analysis_or_none(draw and fmt == "markdown", lambda: mermaid(dg))
    ctx["figure_note"] = figure_note(dg)
    ctx["example"] = analysis_or_none(values is not None and options.get("example", True),
                                      lambda: example(d, values, lr, apps))
    if ctx["example"] is not None and at:
        ctx["example"]["path"] = path_product(d, param, dg)
    taken = options.get("steps_taken")
    if taken:
        if values is None or lr is None or not d.layout.worked_in_numbers:
            raise OutputError("steps_taken needs a scalar graph's values and a learning rate (values=, lr=)")
    ctx["iterations"] = steps.iterations(d, values, lr, taken) if taken else None
    # bounded path by path: left out where the paths are too many to list (Derivation.listable)
    ctx["vanishing"] = analysis_or_none(options.get("vanishing", True) and d.listable(param),
                                        lambda: analysis.vanishing(d, param, sups, apps))
    ctx["verify"] = analysis_or_none(options.get("verify", True),
                                     lambda: analysis.verify(d, values, options.get("seed", 0)))
    ctx["cost"] = analysis_or_none(options.get("cost", True), lambda: analysis.cost(d))
    if ctx["cost"] is not None and ctx["cost"]["chain"] is None:
        ctx["cost"] = None        # not counted for a network this large: the section is left out
    ctx["convolution"] = convolution(d)       # a CNN's backward in index form (None without one)
    ctx["pooling"] = pooling(d)               # max-pooling's δ to the arg-max (None without a max-pool)
    ctx["batchnorm"] = batchnorm(d, names.defined)    # batch norm's three-term backward (or None)
    ctx["attention"] = attention_proof.section(d, names.defined, apps)    # the heads' meanings join the names
    ctx["sympy"] = {"edges": dg.exprs, "labels": dg.labels, "derivation": d, "param": param,
                    "names": names.defined}
    return ctx


def analysis_or_none(wanted, build):
    """build() when the section is wanted, else None (the template leaves it out)."""
    return build() if wanted else None


def plain(ctx):
    """The context without its ``"sympy"`` keys: only strings, numbers, lists and dicts."""
    if isinstance(ctx, dict):
        return {k: plain(v) for k, v in ctx.items() if k != "sympy"}
    if isinstance(ctx, (list, tuple)):
        return [plain(v) for v in ctx]
    return ctx


def _apps(d) -> list:
    """The activation applications f(z) of the graph (to print their derivatives as f'(z))."""
    found: dict = {}
    for n in d.graph.order:
        if n in d.graph._expr:
            for f in d.graph.expr(n).atoms(Activation):
                found.setdefault(f, None)
    return list(found)


def _deepest_param(d) -> str:
    """The parameter farthest from the loss (the notes' first-layer weight)."""
    # an unused parameter has no path (its gradient is 0): length 0, never the deepest
    return max(d.params, key=lambda p: (d.path_count(p, longest=True), -d.params.index(p)))


# ------------------------------------------------------------- the network
def _network(d, apps, nt, names) -> dict:
    g = d.graph
    column = nt.name == "nielsen"

    def declared(kind):
        syms = [g.symbol(n) for n in g.names(kind)]
        # a matrix is shown with its shape: X ∈ R^{m×3}; in Nielsen's columns, one sample: x ∈ R^{3×1}
        shown = [sp.Contains(s, _space(s, column), evaluate=False) if is_matrix(s) else s for s in syms]
        return Tex(", ".join(latex(s) for s in shown))
    forward, sigmas = [], {a.node: a for a in names.given}
    for sym, e in d.program().forward:
        terms = written_form(g, sym.name)     # a spec file's order: b + a₁ + a₂, not SymPy's a₁ + a₂ + b
        # a long sum folds (a seven-weight penalty in L's line ran 37 pt past the margin)
        rhs = Tex(written_latex(terms, applications=apps)) if terms else Tex(term_rows(e, apps))
        forward.append({"lhs": tex(sym), "rhs": rhs, "sympy": {"lhs": sym, "rhs": e, "chain": [sym, e]}})
        if sym.name in sigmas:
            s, r = sigmas[sym.name].symbol, sigmas[sym.name].definition     # 1/σ, named for the backward
            forward.append({"lhs": tex(s), "rhs": tex(r, applications=apps), "sympy": {"lhs": s, "rhs": r, "chain": [s, r]}})
    note = forward_note([e for _, e in d.program().forward])
    note = Tex(note) if note else None
    return {"inputs": declared("input"), "targets": declared("target"), "params": declared("param"),
            "n_params": len(d.params), "forward": forward, "forward_note": note}


def _space(s, column=False):
    """ℝ^{rows×cols}; for Nielsen's column form the shape of one sample's column, (cols, rows) with m = 1."""
    from sympy.matrices.expressions.sets import MatrixSet
    rows, cols = s.shape
    if column:
        rows, cols = cols, (1 if rows == BATCH else rows)
    return MatrixSet(rows, cols, sp.S.Reals)


def _loss(d, nt) -> dict:
    """The per-sample cost as defined (a matrix graph: the loss ℓ(ŷ, y) summed over a row) and L."""
    g = d.graph
    cost_name = d.layout.cost_node()
    cost, C = g.expr(cost_name), g.symbol(cost_name)
    row_cost = C           # the node whose rows hold ℓ summed over a row: C itself, or a one-sample graph's c
    if not isinstance(cost, RowCost):   # a one-sample graph: C = Σₖ cₖ, and c = ℓ(Ŷ, Y) row by row
        row = next((n for n in g.node_names if isinstance(g.expr(n), RowCost)), None)
        if row is not None:
            cost, row_cost = g.expr(row), g.symbol(row)
    i = sp.Symbol(nt.settings["sample"], positive=True, integer=True)
    if isinstance(cost, RowCost):
        lf, width = cost.loss, cost.prediction.shape[1]
        yh, y = sp.Symbol("yhat"), sp.Symbol("y")
        lhs, rhs = sp.Function("ell")(yh, y), lf.expr.xreplace({lf.prediction: yh, lf.target: y})
        k = sp.Symbol("k", positive=True, integer=True)
        # one row: a batch's sample, or a one-sample graph whose sample is one row (a CNN's)
        if nt.name == "nielsen" and (row_cost is C or cost.prediction.shape[0] == 1):
            # one sample, a column (a one-sample graph's sample is a matrix: its rows as below): C_x = Σ_k ℓ(a_k, y_k) in the notation's column names
            col = lambda n: sp.Symbol(f"col_{n}")     # noqa: E731 - the notation names col_<node>
            yk, tk = sp.Indexed(sp.IndexedBase(col(cost.prediction.name)), k), sp.Indexed(sp.IndexedBase(col(cost.target.name)), k)
            row = sp.Function("ell")(yk, tk)
            sample = sp.Eq(col(row_cost.name), sp.Sum(row, (k, 1, width)) if width != 1 else row.xreplace({k: 1}),
                           evaluate=False)
        else:
            # row i: a sample; row r of a one-sample graph's sample (its cost c_r; i is the sample's
            # index in L = (1/m) Σᵢ …), in the graph's own names: H_{rk}, not an undefined Ŷ_{rk}
            r = i if row_cost is C else sp.Symbol("r", positive=True, integer=True)
            yk, tk = (sp.Indexed(sp.IndexedBase(sp.Symbol(getattr(e, "name", n))), r, k)
                      for e, n in ((cost.prediction, "Yhat"), (cost.target, "Y")))
            row = sp.Function("ell")(yk, tk)
            sample = sp.Eq(sp.Indexed(sp.IndexedBase(sp.Symbol(row_cost.name)), r),
                           sp.Sum(row, (k, 1, width)) if width != 1 else row.xreplace({k: 1}), evaluate=False)
    else:
        lhs, rhs, sample = C, cost, None
    penalty, slope_p = None, []
    L = sp.Symbol("L" if d.layout.loss_is_cost else d.loss_name)
    if d.layout.loss_is_cost:         # the loss is the per-sample cost: L reduces it
        theta = sp.Symbol("theta")
        costs, slopes = d.reduce(PerSample(C)), d.reduce(Partial(PerSample(C), theta))
        if g.penalty != 0:
            # a one-sample graph's penalty P is not in its cost: L = (1/m) Σ Cᵢ + P
            penalty = sp.Eq(PENALTY, g.penalty, evaluate=False)
            costs, slopes = sp.Add(costs, PENALTY), sp.Add(slopes, Partial(PENALTY, theta))
            # ∂P/∂W of each parameter P uses: the part of ∂L/∂W that no path through C gives
            slope_p = [sp.Eq(Partial(PENALTY, g.symbol(p)), d.penalty_gradient(p), evaluate=False)
                       for p in d.params if g.penalty.has(g.symbol(p))]
        batch = sp.Eq(L, costs, evaluate=False)
        full = sp.Eq(L, d.batch_loss(), evaluate=False)
        gradient = sp.Eq(Partial(L, theta), slopes, evaluate=False)
    else:                             # a matrix graph's loss node is L itself
        expr, C_sym = g.expr(d.loss_name), g.symbol(cost_name)
        rest = [t for t in sp.Add.make_args(expr) if not t.has(C_sym)]
        # the penalty gets its letter P: the document's ∂P/∂W is its derivative
        batch = sp.Eq(L, expr, evaluate=False)
        penalty = sp.Eq(PENALTY, sp.Add(*rest), evaluate=False) if rest else None
        full, gradient = None, None
    parts = {"rhs": rhs, "lhs": lhs, "sample": sample, "batch": batch, "batch_full": full,
             "batch_gradient": gradient, "penalty": penalty, "penalty_gradients": slope_p}
    parts["claims"] = loss_claims(d, parts, cost)
    out = {k: (tex(v) if v is not None else None) for k, v in parts.items()}
    out["penalty_gradients"] = Tex(r", \qquad ".join(latex(e) for e in slope_p)) if slope_p else None
    out["penalty_rows"] = penalty_rows(parts) if penalty is not None else None    # an article's, folded
    out["sample"] = Tex(rf"{latex(sample.lhs)} &= {latex(sample.rhs)}") if sample is not None else None
    out.update({"cost": tex(C), "of": tex(g.symbol(d.loss_name)), "reduction": d.reduction, "per_sample": d.layout.loss_is_cost,
                "name": getattr(cost, "loss", None) and reader_name(cost.loss.name),    # words, not an identifier
                "sympy": parts})
    return out


def _output(d):
    """The output block the engine fused (softmax + cross-entropy, sigmoid + BCE, ...), if any,
    as the derivation records it (:attr:`~symback.engine.Derivation.fused`): δ_Z from SymPy's
    simplified rule, not through δ_A."""
    from ..vjp import fused_output
    g = d.graph
    for n in [n for n in g.node_names if n in d.fused]:
        _, out, user = d.fused[n]
        cost = g.expr(user)
        rule, (z, a, y) = fused_output(out, cost.loss, cost.prediction.shape[1])
        zk, ak, yk = sp.symbols("z_k yhat_k y_k")
        # (a one-sample graph has no cost column: its loss is the per-sample cost itself)
        scalar = sp.Eq(Partial(sp.Symbol(g.cost_name or g.loss_name), zk), rule.xreplace({z: zk, a: ak, y: yk}), evaluate=False)
        matrix = sp.Eq(delta(g, n), d.adjoint[n], evaluate=False)
        return {"scalar": tex(scalar), "matrix": tex(matrix), "function": out.__name__,
                "loss": reader_name(cost.loss.name), "sympy": {"scalar": scalar, "matrix": matrix,
                                                  "chain": [matrix.lhs, matrix.rhs]}}
    return None


# ------------------------------------------------------ local factors, chains
def _local(d, apps, names) -> list[dict]:
    g = d.graph
    rows = []
    for child in g.order:
        for parent in g.parents(child):
            if (child, parent) not in d.local:
                continue
            e = names.abbreviate(edge_expr(d, child, parent))
            short, full = latex(e, applications=apps), latex(e, primes=False)
            lhs = edge_partial(d, child, parent)
            named = d.named(e) if not isinstance(e, sp.Lambda) else e
            named_text = latex(named, primes=False, sums_last=True) if named != e else None
            named_text = named_text if named_text and named_text not in (short, full) else None
            written = full if full != short else None
            # too wide for the page: the map broken inside its body, each other form on a row of its own
            own = sum(visual_len(t or "") for t in (short, written, named_text)) > LINE_WIDTH - ROW_INDENT
            shown = aligned_lines(e, apps, LINE_WIDTH - ROW_INDENT) if own else short
            rows.append({"named": Tex(named_text) if named_text else None, "own_rows": own,
                         "of": tex(g.symbol(child)), "wrt": tex(g.symbol(parent)), "partial": tex(lhs),
                         "value": Tex(shown), "inline": Tex(rf"\partial {latex(g.symbol(child))} / "
                                                            rf"\partial {latex(g.symbol(parent))}"),
                         "written_out": Tex(written) if written else None,
                         "maps": isinstance(e, sp.Lambda),
                         "sympy": {"partial": lhs, "value": e,
                                   "chain": [lhs, e] + ([named] if named_text else [])}})
    return rows


def _gradient(d, p, apps, names, full=False) -> dict:
    """One parameter's chain rule: the paths' symbols, their factors, the closed forms, one chain."""
    g = d.graph
    lhs = Partial(g.symbol(d.loss_name), g.symbol(p))
    if not d.listable(p):
        return _through_deltas(d, p, lhs, apps)
    paths, shown_factors = [], []
    for path in d.chain(p):
        labels = [edge_expr(d, f.of, f.wrt) for f in path]
        symbols = Chain(*[edge_partial(d, f.of, f.wrt) for f in path])
        # derivatives multiply in path order; maps into matrices are applied in turn
        # (1/m 1) ⊙ (Ŷ − Y) reads (1/m)(Ŷ − Y): a column of ones times δ is δ
        factors = simplify_ones(compose(labels)) if any(isinstance(x, sp.Lambda) for x in labels) else Chain(*labels)
        # a wide term is folded (a part named and defined), never left out
        shown, defs = names.fold(factors, apps)
        shown_factors.append(shown)
        paths.append({"symbols": chain_lines(symbols, apps), "length": len(path),
                      "factors": Tex(latex(shown, applications=apps)), "where": definitions(defs, apps),
                      "sympy": {"symbols": symbols, "factors": factors, "labels": labels}})
    closed = names.abbreviate(closed_softmax(d, d.gradient(p)))
    recursive = names.abbreviate(closed_softmax(d, d.gradient(p, form="recursive")))
    closed_shown, closed_defs = names.fold(closed, apps)
    closed_text = latex(closed_shown, applications=apps)
    expanded = d.gradient(p, form="expanded") if len(g.order) <= MAX_EXPANDED_NODES and not d.layout.param_shape(
        p) else None
    show_expanded = (expanded is not None and sp.count_ops(expanded) <= MAX_EXPANDED_OPS
                     and expanded != closed and visual_len(latex(expanded, applications=apps)) <= LINE_WIDTH)
    simple = _simplified(d, p) if not is_matrix(closed) else None
    if simple is not None and (latex(simple, applications=apps) == closed_text or simple.has(sp.Piecewise)):
        simple = None       # the printer already shows the chain this way
    simple_chain = _error_first(simple, {g.symbol(t) for t in g.target_names}) if simple is not None else None
    if len(paths) == 1 and paths[0]["factors"] == closed_text:
        closed_text = None          # the path's factors already read as the closed form
    # no path at all (a parameter the loss does not use): the gradient is 0, and says so
    zero = zero_like(g.symbol(p))
    sum_of = lambda terms: zero if not terms else terms[0] if len(terms) == 1 else Terms(*terms)    # noqa: E731
    chain = [lhs] + ([sum_of([x["sympy"]["symbols"] for x in paths]), sum_of(shown_factors)] if paths else [])
    chain += [closed_shown] if closed_text else []
    chain += [simple_chain] if simple is not None else []
    chain += [expanded] if show_expanded else []
    chain += [recursive] if recursive != closed else []
    # a scalar graph's batch gradient, as seed 000 ends: ∂L/∂w₁ = 1/m Σᵢ (p − y)·ReLU′(c)·x₁
    batch = sp.Eq(Partial(sp.Symbol("L"), g.symbol(p)), d.batch_gradient(p), evaluate=False) \
        if d.layout.worked_in_numbers else None
    # a one-sample graph's parameter only the penalty reads: no path from C, ∂L/∂W = ∂P/∂W
    alone = [Partial(sp.Symbol("L"), g.symbol(p)), Partial(PENALTY, g.symbol(p)), d.penalty_gradient(p)] \
        if d.layout.loss_is_cost and not paths and g.penalty.has(g.symbol(p)) else None
    return {"name": tex(g.symbol(p)), "lhs": tex(lhs), "paths": paths, "summary": None,
            "penalty_only": Tex(" = ".join(latex(x, applications=apps) for x in alone)) if alone else None,
            "batch": tex(batch, applications=apps) if batch is not None else None,
            "simplified": tex(simple_chain, applications=apps) if simple is not None else None,
            "steps": _gradient_steps(d, p, apps) if full and d.layout.worked_in_numbers else None,
            "closed": Tex(closed_text) if closed_text else None,
            "closed_aligned": Tex(aligned_lines(closed_shown, apps)) if closed_text else None,
            "where": [w for x in paths for w in x.pop("where")] + (definitions(closed_defs, apps) if closed_text else []),
            "expanded": tex(expanded, applications=apps) if show_expanded else None,
            "recursive": Tex(aligned_lines(recursive, apps)) if recursive != closed else None,
            "sympy": {"lhs": lhs, "closed": closed, "recursive": recursive, "simplified": simple,
                      "expanded": expanded if show_expanded else None, "chain": chain,
                      "claims": ([{"chain": [batch.lhs, batch.rhs], "batch": True}] if batch is not None else [])
                      + ([{"chain": alone, "batch": True}] if alone else [])}}


def _through_deltas(d, p, lhs, apps) -> dict:
    """A gradient too large to list path by path: its recursive form, through the δs of the
    nodes p feeds (each a row of the δ section), and a sentence saying why."""
    g = d.graph
    recursive = closed_softmax(d, d.gradient(p, form="recursive"))
    n, size = d.path_count(p), d.chain_size(p)
    name = latex(g.symbol(p))
    why = (f"There are {n:,} paths to ${name}$; written out, their sum would be a formula of about "
           f"{size:,} symbols, so it is written through the $\\delta$s of the nodes ${name}$ feeds "
           f"(each a line of the section on the $\\delta$s):")
    return {"name": tex(g.symbol(p)), "lhs": tex(lhs), "paths": [], "simplified": None, "steps": None, "batch": None,
            "penalty_only": None,
            "closed": None, "closed_aligned": None, "where": [], "expanded": None,
            "recursive": Tex(aligned_lines(recursive, apps)), "summary": Tex(why),
            "sympy": {"lhs": lhs, "closed": None, "recursive": recursive, "simplified": None,
                      "expanded": None, "chain": [lhs, recursive]}}


def _simplified(d, p):
    """d.simplified(p) within a size and a time budget (None past either: the form is optional)."""
    if sp.count_ops(d.named(d.gradient(p))) > MAX_SIMPLIFY_OPS:
        return None
    return d.simplified(p)          # (within the engine's time budget)


def _error_first(expr, targets) -> Chain:
    """A product as the notes write it: the error factor first, (p − y) · x, signs inside the sums.

    (a₃ − 1)(y − a₃) becomes (1 − a₃)(a₃ − y); a number joins the error factor, 2(a₃ − y).
    """
    coeff, factors = expr.as_coeff_mul()
    fixed = []
    for f in factors:
        if isinstance(f, sp.Add):
            t = next(iter(f.free_symbols & targets), None)
            number = sp.Add(*[a for a in f.args if a.is_number])     # S.Zero, not int 0, when none
            # the target subtracted (p − y), the constant in front positive (1 − a)
            if (t is not None and f.coeff(t).is_positive) or (t is None and number.is_negative):
                f, coeff = -f, -coeff
        fixed.append(f)
    errors = [f for f in fixed if isinstance(f, sp.Add) and f.free_symbols & targets]
    rest = sorted((f for f in fixed if f not in errors), key=lambda f: isinstance(f, sp.Add))
    if errors and coeff != 1:
        errors[0], coeff = sp.Mul(coeff, errors[0], evaluate=False), sp.S.One
    return Chain(*([coeff] if coeff != 1 else []), *errors, *rest)


def _gradient_steps(d, p, apps) -> dict:
    """steps="full": the loss's terms (vanishing ones braced), then each local factor by its rule."""
    g, seen, factors = d.graph, set(), []
    terms = steps.loss_terms(d, p, None)
    for path in d.chain(p):
        for f in path:
            if (f.of, f.wrt) in seen:
                continue
            seen.add((f.of, f.wrt))
            st = steps.local_steps(g.expr(f.of), g.symbol(f.wrt))
            if st is None:
                continue
            lhs = Partial(g.symbol(f.of), g.symbol(f.wrt))
            zeros = [{"chain": list(st["zeros"].args), "every_partial": True}] if st["zeros"] is not None else []
            factors.append({"partial": tex(lhs), "rule": st["rule"],
                            "line": Tex(" = ".join(latex(x, applications=apps) for x in st["lines"])),
                            "zeros": tex(st["zeros"]) if st["zeros"] is not None else None,
                            # ∂c/∂v here is the edge's derivative; each inner ∂u/∂v is SymPy's diff of u
                            "sympy": {**st, "chain": [lhs, *st["lines"]], "edge": True, "claims": zeros}})
    lhs = Partial(g.symbol(d.loss_name), g.symbol(p))
    return {"terms": tex(terms) if terms is not None else None, "lhs": tex(lhs), "factors": factors,
            "cases": "several paths: add them (case 2)" if len(d.chain(p)) > 1 else None,
            "sympy": {"terms": terms, "claims": [] if terms is None else [{"chain": [lhs, terms]}] + [
                {"chain": [t.args[0], sp.S.Zero]} for t in terms.args if isinstance(t, steps.Vanishes)]}}


def _notation_keys(d, nt) -> dict:
    """What a template says about the notation: its name, and the notes' a^{(1)} = X."""
    g, input_row = d.graph, None
    X = d.layout.data_matrix() if g.input_names else None
    if nt.name == "lecture" and layer_names(d) and X is not None:
        input_row = tex(sp.Eq(sp.MatrixSymbol("A0", *X.shape), X, evaluate=False))
    return {"name": nt.name, "input_row": input_row}
